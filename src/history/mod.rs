//! Room history: a bounded stream of recent events per room, read back to replay what a client missed.
//!
//! Every event of a room is stored under its sequence (the offset clients see), in publish order. A stream
//! has an epoch that changes when the stream is lost and recreated, so a stale position is detected rather
//! than misread. [`HistoryStore`] is the capability; [`MemoryHistory`] is the embedded implementation, and
//! [`crate::rooms_disk::DiskHistory`] keeps it on disk too.

mod memory;

pub use memory::{Evictions, MemoryHistory};

use futures_util::future::BoxFuture;

use crate::hub::{EventPackets, RoomKey};
use crate::recovery::Membership;

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

/// Why events could not be made durable: the journal of a disk-backed history failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("history journal unavailable: {0}")]
pub struct JournalError(pub String);

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

/// How much one read may return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimit {
    /// Most events.
    pub events: usize,
    /// Most reply bytes (see [`reply_size`]); the first event is returned whatever its size, so a reader
    /// paging on always moves forward.
    pub bytes: usize,
}

impl ReadLimit {
    /// At most `events` events, whatever their size.
    pub fn events(events: usize) -> ReadLimit {
        ReadLimit {
            events,
            bytes: usize::MAX,
        }
    }
}

/// Events read from a stream.
#[derive(Debug, Clone, Default)]
pub struct Slice {
    /// Epoch of the stream (0 when the room has none).
    pub epoch: u64,
    /// Events, oldest first.
    pub events: Vec<StoredEvent>,
    /// More events follow the last one returned.
    pub more: bool,
    /// The byte budget ended the read before the event limit did.
    pub cut: bool,
}

/// A room history backend.
pub trait HistoryStore: Send + Sync + 'static {
    /// The epoch of a room's stream (a store may make the stream only at its first event); also marks the room
    /// as recently used.
    fn epoch(&self, room: &RoomKey) -> u64;
    /// Appends an event; called in sequence order under the hub's ordering lock. An event published to
    /// several rooms is appended to each under one sequence with the same (shared) packets.
    fn append(&self, room: &RoomKey, seq: u64, packets: &EventPackets);
    /// Events with a sequence greater than `after`, oldest first, within `limit`; the byte budget is checked
    /// before each event is taken. With `epoch`, fails when the stream is not that epoch any more; fails when
    /// events after `after` were evicted.
    fn read_within(
        &self,
        room: &RoomKey,
        epoch: Option<u64>,
        after: u64,
        limit: ReadLimit,
    ) -> Result<Slice, HistoryError>;
    /// [`HistoryStore::read_within`] with a count limit alone: the epoch and the events.
    fn read_after(
        &self,
        room: &RoomKey,
        epoch: Option<u64>,
        after: u64,
        limit: usize,
    ) -> Result<(u64, Vec<StoredEvent>), HistoryError> {
        self.read_within(room, epoch, after, ReadLimit::events(limit))
            .map(|slice| (slice.epoch, slice.events))
    }
    /// What a recovering member of `room` missed: events after `after`, at most `limit`. Fails when the stream
    /// is not the one the member joined (or one made after it joined) or when events after `after` were evicted.
    fn read_missed(
        &self,
        room: &RoomKey,
        membership: &Membership,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, HistoryError> {
        self.read_after(room, Some(membership.epoch), after, limit)
            .map(|(_, events)| events)
    }
    /// Highest sequence evicted from the room's stream (0 = none): a read after it is always covered.
    fn evicted_through(&self, room: &RoomKey) -> u64;
    /// Drops events past their age and idle empty streams (those for which `in_use` is false).
    fn sweep(&self, in_use: &dyn Fn(&RoomKey) -> bool);
    /// Current totals.
    fn stats(&self) -> HistoryStats;
    /// Resolves once every event up to `seq` is durable in this store (at once for a memory store); fails when
    /// the store can no longer make it durable.
    fn durable(&self, _seq: u64) -> BoxFuture<'static, Result<(), JournalError>> {
        Box::pin(std::future::ready(Ok(())))
    }
    /// The sequence numbering continues after (0 for a fresh store): a reopened disk store starts past
    /// everything it handed out before.
    fn resume_seq(&self) -> u64 {
        0
    }
}

/// A page of history as the API and the `history` client event return it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HistoryPage {
    /// Epoch of the room's stream (as a string: it does not fit a JSON number exactly).
    pub epoch: String,
    /// False when events after `since` were evicted or the epoch changed: the page starts later.
    pub complete: bool,
    /// More events follow this page (it ended at `limit` or at the byte budget): read on with `since` set to
    /// the last event's offset.
    pub more: bool,
    /// The byte budget (`history.max_reply_bytes`) ended this page before `limit` events.
    pub truncated: bool,
    /// Events, oldest first.
    pub events: Vec<serde_json::Value>,
}

impl HistoryPage {
    /// Counts a page the byte budget cut.
    pub fn count_truncated(&self, surface: &'static str) {
        if self.truncated {
            metrics::counter!("tidings_history_replies_truncated_total", "surface" => surface)
                .increment(1);
        }
    }
}

/// Most events in one page.
pub const MAX_PAGE: usize = 1000;

/// Reply bytes of an event besides its encoded packet: the `{offset, at, event, data}` keys, the 13-digit
/// time and separators of its JSON view.
pub const VIEW_OVERHEAD: usize = 64;

/// What an event adds to a history reply, known before the reply is built: its encoded text, binary
/// attachments as base64, and [`VIEW_OVERHEAD`].
pub fn reply_size(packets: &EventPackets) -> usize {
    use crate::engineio::Outgoing;
    packets
        .iter()
        .map(|packet| match packet {
            Outgoing::Binary(data) => data.len().div_ceil(3) * 4,
            text => text.len(),
        })
        .sum::<usize>()
        + VIEW_OVERHEAD
}

/// Reads events after `since` (0 = from the start) as a page within `limit` (at most [`MAX_PAGE`] events),
/// falling back to what is still held when the position is no longer covered.
pub fn read_page(
    store: &dyn HistoryStore,
    room: &RoomKey,
    epoch: Option<u64>,
    since: u64,
    limit: ReadLimit,
) -> HistoryPage {
    let limit = ReadLimit {
        events: limit.events.clamp(1, MAX_PAGE),
        ..limit
    };
    let (complete, slice) = match store.read_within(room, epoch, since, limit) {
        Ok(found) => (true, found),
        Err(_) => (
            false,
            store
                .read_within(room, None, store.evicted_through(room), limit)
                .unwrap_or_default(),
        ),
    };
    HistoryPage {
        epoch: slice.epoch.to_string(),
        complete,
        more: slice.more,
        truncated: slice.cut,
        events: slice.events.iter().map(describe).collect(),
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
