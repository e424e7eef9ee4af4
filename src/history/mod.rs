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

/// A page of history as the API and the `history` client event return it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HistoryPage {
    /// Epoch of the room's stream (as a string: it does not fit a JSON number exactly).
    pub epoch: String,
    /// False when events after `since` were evicted or the epoch changed: the page starts later.
    pub complete: bool,
    /// Events, oldest first.
    pub events: Vec<serde_json::Value>,
}

/// Most events in one page.
pub const MAX_PAGE: usize = 1000;

/// Reads events after `since` (0 = from the start) as a page, falling back to what is still held when the
/// position is no longer covered.
pub fn read_page(
    store: &dyn HistoryStore,
    room: &RoomKey,
    epoch: Option<u64>,
    since: u64,
    limit: usize,
) -> HistoryPage {
    let limit = limit.clamp(1, MAX_PAGE);
    let (complete, result) = match store.read_after(room, epoch, since, limit) {
        Ok(found) => (true, found),
        Err(_) => (
            false,
            store.read_after(room, None, 0, limit).unwrap_or_default(),
        ),
    };
    let (epoch, events) = result;
    HistoryPage {
        epoch: epoch.to_string(),
        complete,
        events: events.iter().map(describe).collect(),
    }
}

/// The JSON view of a stored event: `{offset, at, event, data}` (binary parts as base64 `attachments`).
pub fn describe(event: &StoredEvent) -> serde_json::Value {
    use crate::engineio::Outgoing;
    use base64::Engine as _;
    let mut view = serde_json::json!({ "offset": event.seq.to_string(), "at": event.at_ms });
    let mut attachments = Vec::new();
    for packet in event.packets.iter() {
        match packet {
            Outgoing::Text(text) => {
                if let Some((name, data)) = decode_event_text(text) {
                    view["event"] = name.into();
                    view["data"] = data;
                }
            }
            Outgoing::Binary(data) => {
                attachments.push(base64::engine::general_purpose::STANDARD.encode(data));
            }
            Outgoing::WsPong(_) => {}
        }
    }
    if !attachments.is_empty() {
        view["attachments"] = attachments.into();
    }
    view
}

/// Event name and data from an encoded `42…` / `45N-…` Engine.IO message.
fn decode_event_text(text: &bytes::Bytes) -> Option<(String, serde_json::Value)> {
    let packet = crate::socketio::packet::Packet::decode(text.slice(1..)).ok()?;
    let (name, args) = crate::socketio::packet::event_args(packet.data.as_ref()?).ok()?;
    let data = args
        .first()
        .and_then(|raw| serde_json::from_slice(raw).ok())
        .unwrap_or(serde_json::Value::Null);
    Some((name, data))
}
