//! Gentle growth for the node-wide lists that hold one entry per connection (the heartbeat schedule, the token
//! deadlines). A `Vec` doubles when full, so a list of n entries holds up to 2n slots, 1.6n on average: at
//! 10,000 connections, 16,384 slots. Growing by a quarter keeps the spare to about an eighth on average, and the
//! copies stay amortized constant per push.

use std::collections::BinaryHeap;

/// Smallest buffer a heap grown here gets.
const MIN_CAPACITY: usize = 16;

/// Makes room in `heap` for `more` entries, growing its buffer by a quarter (or to what is needed) when full.
pub fn reserve<T: Ord>(heap: &mut BinaryHeap<T>, more: usize) {
    let needed = heap.len().saturating_add(more);
    if needed > heap.capacity() {
        let target = needed
            .max(heap.capacity() + heap.capacity() / 4)
            .max(MIN_CAPACITY);
        heap.reserve_exact(target - heap.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_by_a_quarter_not_double() {
        let mut heap = BinaryHeap::new();
        for n in 0..10_000u32 {
            reserve(&mut heap, 1);
            heap.push(n);
            assert!(heap.capacity() >= heap.len());
        }
        // Doubling would hold 16,384 slots; a quarter's growth at most 10,000 × 1.25 plus the minimum.
        assert!(
            heap.capacity() <= 12_500 + MIN_CAPACITY,
            "{}",
            heap.capacity()
        );
        reserve(&mut heap, 5_000);
        assert!(heap.capacity() >= 15_000);
        assert_eq!(heap.len(), 10_000);
    }
}
