//! Room history: a bounded stream of recent events per room, read back to replay what a client missed.
//!
//! Every event of a room is stored under its sequence (the offset clients see), in publish order. A stream
//! has an epoch that changes when the stream is lost and recreated, so a stale position is detected rather
//! than misread. [`HistoryStore`] is the capability; [`MemoryHistory`] is the embedded implementation.

mod memory;

pub use memory::MemoryHistory;

use crate::hub::{EventPackets, RoomKey};

/// One stored event.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    /// Sequence (offset) of the event.
    pub seq: u64,
    /// Publish time, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The encoded packets, exactly as sent live (offset tag included).
    pub packets: EventPackets,
}

/// Why a stream cannot be read from the requested position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// The stream was lost and recreated since the position was taken.
    #[error("history epoch changed")]
    EpochChanged,
    /// Events after the position were already evicted (count, age or memory limit).
    #[error("history no longer covers the requested offset")]
    Evicted,
}

/// Totals for metrics and the API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryStats {
    /// Streams held.
    pub rooms: usize,
    /// Events held.
    pub events: usize,
    /// Bytes accounted (payloads plus per-event overhead).
    pub bytes: usize,
}

/// A room history backend.
pub trait HistoryStore: Send + Sync + 'static {
    /// The epoch of a room's stream, creating the stream if needed; also marks the room as recently used.
    fn epoch(&self, room: &RoomKey) -> u64;
    /// Appends an event; called in sequence order under the hub's ordering lock.
    fn append(&self, room: &RoomKey, seq: u64, packets: &EventPackets);
    /// Events with a sequence greater than `after`, oldest first, at most `limit`. With `epoch`, fails when
    /// the stream is not that epoch any more; fails when events after `after` were evicted.
    fn read_after(
        &self,
        room: &RoomKey,
        epoch: Option<u64>,
        after: u64,
        limit: usize,
    ) -> Result<(u64, Vec<StoredEvent>), HistoryError>;
    /// Drops events past their age and idle empty streams (those for which `in_use` is false).
    fn sweep(&self, in_use: &dyn Fn(&RoomKey) -> bool);
    /// Current totals.
    fn stats(&self) -> HistoryStats;
}
