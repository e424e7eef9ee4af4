//! Partitions: rooms spread over several independent Redis groups, each numbering its own rooms' events.
//!
//! Inside a node an event's position is one `u64` that packs its partition (top 8 bits) and the partition's
//! sequence (the low 56 bits), so one partition's positions compare like plain sequences and a single Redis
//! (partition 0) keeps today's numbers. A client's offset names, for every partition, the node's position at the
//! moment the node encoded the event: each partition's stream is processed in order and events are queued into
//! FIFO outboxes under the hub's ordering lock, so every event of that partition up to that position (in the
//! recipient's rooms, after it joined them) was queued before the event carrying the offset, and none after it.
//! See docs/ARCHITECTURE.md, "Partitions and offsets".

use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;

use crate::hub::RoomKey;

/// Most partitions a cluster can have (the packed position keeps 8 bits for the partition).
pub const MAX_PARTITIONS: usize = 256;
/// Bits of a packed position that hold the partition's sequence.
const SEQ_BITS: u32 = 56;
/// The sequence part of a packed position.
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;
/// First character of a partitioned offset (a single Redis hands out plain decimal offsets).
const VECTOR_TAG: char = 'v';

/// Packs `partition` and its sequence `seq` into one position.
pub fn pack(partition: usize, seq: u64) -> u64 {
    ((partition as u64) << SEQ_BITS) | (seq & SEQ_MASK)
}

/// The partition and sequence of a packed position.
pub fn unpack(position: u64) -> (usize, u64) {
    ((position >> SEQ_BITS) as usize, position & SEQ_MASK)
}

/// The partition of `room` among `partitions` (jump consistent hash of the room's key: growing from n to n+1
/// partitions moves only about 1/(n+1) of the rooms).
pub fn partition_of(room: &RoomKey, partitions: usize) -> usize {
    if partitions <= 1 {
        return 0;
    }
    jump_hash(fnv1a(room.as_str().as_bytes()), partitions)
}

/// FNV-1a, 64 bits: stable across builds and platforms (the std hasher is not), which the room → partition map
/// must be, since every node computes it.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Lamping and Veach's jump consistent hash.
fn jump_hash(mut key: u64, buckets: usize) -> usize {
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < buckets as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as usize
}

/// Why an offset was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed offset")]
pub struct BadOffset;

/// A client's offset read back: the last position it has, per partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetVector(Vec<u64>);

impl OffsetVector {
    /// Reads an offset handed out by a cluster of `partitions` partitions: a decimal sequence for one, a
    /// vector (`v` + base64url of one LEB128 varint per partition) for several.
    pub fn parse(text: &str, partitions: usize) -> Result<OffsetVector, BadOffset> {
        if partitions <= 1 {
            return text
                .parse()
                .map(|seq| OffsetVector(vec![seq]))
                .map_err(|_| BadOffset);
        }
        let body = text.strip_prefix(VECTOR_TAG).ok_or(BadOffset)?;
        // A vector of n partitions takes at most 10 bytes each: refuse anything longer before decoding it.
        if body.len() > (partitions * 10 * 4).div_ceil(3) {
            return Err(BadOffset);
        }
        let out = positions_of(text).ok_or(BadOffset)?;
        if out.len() != partitions || out.iter().any(|p| *p > SEQ_MASK) {
            return Err(BadOffset);
        }
        Ok(OffsetVector(out))
    }

    /// The position in `partition` (0 when the vector does not name it).
    pub fn get(&self, partition: usize) -> u64 {
        self.0.get(partition).copied().unwrap_or(0)
    }

    /// Every partition's position, in partition order.
    pub fn positions(&self) -> &[u64] {
        &self.0
    }
}

/// The positions of a partitioned offset, however many partitions it names (`None` when it is not one).
pub fn positions_of(text: &str) -> Option<Vec<u64>> {
    let body = text.strip_prefix(VECTOR_TAG)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body)
        .ok()?;
    let mut out = Vec::new();
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        let (value, used) = read_varint(rest)?;
        out.push(value);
        rest = &rest[used..];
    }
    Some(out)
}

fn read_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn write_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Encodes positions as a client offset (see [`OffsetVector::parse`]).
pub fn encode_offset(positions: &[u64]) -> String {
    let mut bytes = Vec::with_capacity(positions.len() * 4);
    for position in positions {
        write_varint(*position, &mut bytes);
    }
    let mut text = String::with_capacity(1 + bytes.len().div_ceil(3) * 4);
    text.push(VECTOR_TAG);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(&bytes, &mut text);
    text
}

/// This node's position in every partition: the newest sequence it queued for local members. Written only
/// under the hub's ordering lock, together with the fan-out, so a vector read there is exact.
pub struct NodePositions {
    positions: Box<[AtomicU64]>,
}

impl NodePositions {
    /// Positions of `partitions` partitions, all 0.
    pub fn new(partitions: usize) -> NodePositions {
        NodePositions {
            positions: (0..partitions.clamp(1, MAX_PARTITIONS))
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    /// How many partitions.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// True when there is none (never: at least one).
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// Moves `partition` to `seq` (never backwards); call under the hub's ordering lock.
    pub fn advance(&self, partition: usize, seq: u64) {
        if let Some(position) = self.positions.get(partition) {
            position.fetch_max(seq, Ordering::AcqRel);
        }
    }

    /// Starts `partition` over (its Redis lost its data and numbers from scratch); call under the hub's
    /// ordering lock.
    pub fn reset(&self, partition: usize) {
        if let Some(position) = self.positions.get(partition) {
            position.store(0, Ordering::Release);
        }
    }

    /// The offset an event encoded now carries; call under the hub's ordering lock.
    pub fn offset(&self) -> String {
        let now: Vec<u64> = self
            .positions
            .iter()
            .map(|p| p.load(Ordering::Acquire))
            .collect();
        encode_offset(&now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_keeps_partition_zero_as_plain_sequences() {
        assert_eq!(pack(0, 42), 42);
        assert_eq!(unpack(pack(3, 99)), (3, 99));
        assert!(pack(1, 1) > pack(0, SEQ_MASK));
        assert_eq!(unpack(pack(255, SEQ_MASK)), (255, SEQ_MASK));
    }

    #[test]
    fn offsets_round_trip_and_stay_short() {
        let positions = [0, 1, 127, 128, 5_000_000, SEQ_MASK];
        let text = encode_offset(&positions);
        assert!(text.starts_with('v'));
        assert_eq!(
            OffsetVector::parse(&text, positions.len())
                .unwrap()
                .positions(),
            &positions
        );
        // Three partitions a million events in: 3 × 3 varint bytes → 12 base64 characters and the tag.
        assert_eq!(encode_offset(&[1_000_000, 1_200_000, 900_000]).len(), 13);
    }

    #[test]
    fn malformed_offsets_are_refused() {
        for bad in ["", "v", "12", "v!!", "vgICAgICAgICAgIA", "x0"] {
            assert_eq!(OffsetVector::parse(bad, 3), Err(BadOffset), "{bad}");
        }
        // The wrong number of partitions.
        assert_eq!(
            OffsetVector::parse(&encode_offset(&[1, 2]), 3),
            Err(BadOffset)
        );
        // A single Redis takes decimal offsets only.
        assert_eq!(OffsetVector::parse("17", 1).unwrap().get(0), 17);
        assert_eq!(OffsetVector::parse("v AA", 1), Err(BadOffset));
        // Oversized input is refused before it is decoded.
        assert_eq!(
            OffsetVector::parse(&format!("v{}", "A".repeat(10_000)), 3),
            Err(BadOffset)
        );
    }

    #[test]
    fn rooms_spread_over_partitions_and_stay_put() {
        let mut counts = [0usize; 3];
        for i in 0..3000 {
            let room = RoomKey::new("/", &format!("room-{i}"));
            let p = partition_of(&room, 3);
            assert_eq!(p, partition_of(&room, 3));
            counts[p] += 1;
        }
        assert!(counts.iter().all(|c| *c > 800), "{counts:?}");
        // Growing to 4 moves about a quarter of the rooms, all to the new partition.
        let moved = (0..3000)
            .map(|i| RoomKey::new("/", &format!("room-{i}")))
            .filter(|room| partition_of(room, 3) != partition_of(room, 4))
            .inspect(|room| assert_eq!(partition_of(room, 4), 3))
            .count();
        assert!((500..1000).contains(&moved), "{moved}");
        assert_eq!(partition_of(&RoomKey::new("/", "x"), 1), 0);
    }
}
