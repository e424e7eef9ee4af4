//! Coalescing store writes of one device: the first id queued starts a flush, and ids queued while that flush
//! waits for the store go together in the next one. At a low rate every receipt is written on its own, as soon
//! as it comes; under load one write carries many, so the store does a few large writes instead of one per
//! message (each a transaction on disk, a script in Redis).

use once_cell::race::OnceBox;
use parking_lot::Mutex;

/// Most ids in one flush (one store call).
pub const MAX_FLUSH: usize = 256;

/// Ids waiting for a store write, and whether a flush is under way.
pub struct Batch<T> {
    /// Made, lock included, at the first push: every connected device has two batches and most never get a
    /// message, so an unused one is a single pointer.
    state: OnceBox<Mutex<State<T>>>,
}

impl<T> Default for Batch<T> {
    fn default() -> Self {
        Batch {
            state: OnceBox::new(),
        }
    }
}

struct State<T> {
    waiting: Vec<T>,
    flushing: bool,
    /// Items taken since the start: the position in the stream of pushed items the next take starts at.
    taken: u64,
}

impl<T> Default for State<T> {
    fn default() -> Self {
        State {
            waiting: Vec::new(),
            flushing: false,
            taken: 0,
        }
    }
}

impl<T> Batch<T> {
    /// Queues `items`; true when no flush is under way and the caller must start one (with [`Batch::take`]).
    pub fn push(&self, items: impl IntoIterator<Item = T>) -> bool {
        self.push_counted(items).0
    }

    /// [`Batch::push`], also giving the position just past the last item queued in the stream of everything
    /// ever pushed: once takes reach it ([`Batch::take_counted`]), these items were taken.
    pub fn push_counted(&self, items: impl IntoIterator<Item = T>) -> (bool, u64) {
        let mut state = self.state.get_or_init(Box::default).lock();
        state.waiting.extend(items);
        let end = state.taken + state.waiting.len() as u64;
        if state.flushing || state.waiting.is_empty() {
            return (false, end);
        }
        state.flushing = true;
        (true, end)
    }

    /// The next ids to write (at most [`MAX_FLUSH`]), or `None` — and the flush is over — when none wait.
    #[cfg(test)]
    pub fn take(&self) -> Option<Vec<T>> {
        self.take_counted().map(|(items, _)| items)
    }

    /// The next ids to write (at most [`MAX_FLUSH`]), or `None` — and the flush is over — when none wait;
    /// with the position just past the last item taken (see [`Batch::push_counted`]).
    pub fn take_counted(&self) -> Option<(Vec<T>, u64)> {
        let mut state = self.state.get()?.lock();
        if state.waiting.is_empty() {
            state.flushing = false;
            return None;
        }
        let cut = state.waiting.len().min(MAX_FLUSH);
        let rest = state.waiting.split_off(cut);
        state.taken += cut as u64;
        Some((std::mem::replace(&mut state.waiting, rest), state.taken))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_flush_at_a_time_takes_everything_queued_meanwhile() {
        let batch = Batch::default();
        assert!(batch.push([1]), "the first id starts a flush");
        assert_eq!(batch.take(), Some(vec![1]));
        assert!(!batch.push([2, 3]), "a flush is under way");
        assert!(!batch.push([4]));
        assert_eq!(batch.take(), Some(vec![2, 3, 4]));
        assert_eq!(batch.take(), None, "nothing left: the flush ends");
        assert!(batch.push([5]), "the next id starts a new flush");
        assert!(!batch.push(std::iter::empty()));
    }

    #[test]
    fn a_flush_carries_at_most_max_flush_ids() {
        let batch = Batch::default();
        assert!(batch.push(0..MAX_FLUSH + 10));
        assert_eq!(batch.take().map(|ids| ids.len()), Some(MAX_FLUSH));
        assert_eq!(batch.take(), Some((MAX_FLUSH..MAX_FLUSH + 10).collect()));
        assert_eq!(batch.take(), None);
    }

    #[test]
    fn positions_say_when_pushed_items_were_taken() {
        let batch = Batch::default();
        assert_eq!(batch.push_counted([1, 2]), (true, 2));
        assert_eq!(batch.push_counted([3]), (false, 3));
        assert_eq!(batch.take_counted(), Some((vec![1, 2, 3], 3)));
        assert_eq!(
            batch.push_counted(0..MAX_FLUSH as u64 + 1),
            (false, MAX_FLUSH as u64 + 4)
        );
        assert_eq!(
            batch.take_counted().map(|(_, end)| end),
            Some(MAX_FLUSH as u64 + 3)
        );
        assert_eq!(
            batch.take_counted().map(|(_, end)| end),
            Some(MAX_FLUSH as u64 + 4)
        );
        assert_eq!(batch.take_counted(), None);
    }

    #[test]
    fn nothing_queued_starts_nothing() {
        let batch: Batch<u8> = Batch::default();
        assert!(!batch.push(std::iter::empty()));
        assert_eq!(batch.take(), None);
    }
}
