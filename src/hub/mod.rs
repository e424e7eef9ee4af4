//! The hub: room membership and fan-out on this node.
//!
//! A published event is encoded once into shared `Bytes` and the same packet is queued on every member's
//! outbox; publishers never wait for a client. Events get a sequence number from one counter per node,
//! assigned together with the fan-out under one ordering lock, so every session sees events in sequence order
//! (needed for the single offset a Socket.IO client keeps for connection state recovery) and an event addressed
//! to several rooms reaches a member of more than one of them once.

mod encode;
mod ephemeral;
mod rooms;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

pub use encode::{encode_room_event, encode_room_event_at};
pub use ephemeral::{Conflate, MAX_KEYS_PER_ROOM};
pub use rooms::RoomKey;
use rooms::Rooms;

use crate::engineio::session::Sid;
use crate::engineio::{Outgoing, PushError, Session};
use crate::history::HistoryStore;

/// Room every socket of a namespace joins, used for broadcasts; not a valid user room name.
pub const BROADCAST_ROOM: &str = "";

/// Rooms of at most this many local members get an event written to their idle websockets by the publisher
/// itself (see [`Outbox::push_shared_event`](crate::engineio::Outbox::push_shared_event)); larger fan-outs wake
/// each member's writer so the writes spread over every worker thread.
pub const WRITE_NOW_MAX_MEMBERS: usize = 64;

/// What one room's fan-out did.
#[derive(Default)]
struct Fanout {
    recipients: usize,
    dropped: usize,
}

/// An event to publish.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    /// Namespace of the rooms.
    pub nsp: &'a str,
    /// Target rooms.
    pub rooms: &'a [String],
    /// Event name.
    pub name: &'a str,
    /// Raw JSON of the event data.
    pub data: &'a [u8],
    /// Binary attachments (the data then holds placeholders).
    pub attachments: &'a [Bytes],
    /// Add the offset tag for connection state recovery.
    pub with_offset: bool,
}

/// What a publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Sequence (offset) of the event on this node.
    pub seq: u64,
    /// Sessions the event was queued for.
    pub recipients: usize,
    /// Members skipped because their outbox was full or closing.
    pub dropped: usize,
}

/// Rooms and fan-out of one node.
pub struct Hub {
    rooms: Arc<Rooms>,
    conflator: Arc<ephemeral::Conflator>,
    history: Arc<dyn HistoryStore>,
    order: Mutex<()>,
    seq: AtomicU64,
}

impl Hub {
    /// An empty hub recording events in `history`, numbering them after the history's
    /// [`HistoryStore::resume_seq`].
    pub fn new(history: Arc<dyn HistoryStore>) -> Hub {
        let resume = history.resume_seq();
        let rooms = Arc::new(Rooms::new());
        Hub {
            conflator: ephemeral::Conflator::new(&rooms),
            rooms,
            history,
            order: Mutex::new(()),
            seq: AtomicU64::new(resume),
        }
    }

    /// The room history behind the hub.
    pub fn history(&self) -> &Arc<dyn HistoryStore> {
        &self.history
    }

    /// Drops expired history and streams of rooms nobody uses any more.
    pub fn sweep(&self) {
        self.history
            .sweep(&|room| self.rooms.member_count(room) > 0);
        let stats = self.history.stats();
        metrics::gauge!("tidings_history_events").set(stats.events as f64);
        metrics::gauge!("tidings_history_bytes").set(stats.bytes as f64);
        metrics::gauge!("tidings_history_rooms").set(stats.rooms as f64);
    }

    /// Adds a socket to a room: the room's own key (shared with everything else that holds the room, so a
    /// membership keeping it costs no allocation), `None` if it was already a member.
    pub fn join(&self, key: &RoomKey, socket: Sid, session: &Arc<Session>) -> Option<RoomKey> {
        self.rooms.join(key, socket, session)
    }

    /// Removes a socket from a room; false if it was not a member.
    pub fn leave(&self, key: &RoomKey, socket: Sid) -> bool {
        self.rooms.leave(key, socket)
    }

    /// True when the socket is in the room.
    pub fn is_member(&self, key: &RoomKey, socket: Sid) -> bool {
        self.rooms.is_member(key, socket)
    }

    /// Member count of a room (0 when it does not exist).
    pub fn member_count(&self, key: &RoomKey) -> usize {
        self.rooms.member_count(key)
    }

    /// Every room of a namespace with its member count (the broadcast room excluded).
    pub fn list(&self, nsp: &str) -> Vec<(String, usize)> {
        let mut rooms = self.rooms.list(nsp);
        rooms.retain(|(name, _)| name != BROADCAST_ROOM);
        rooms.sort();
        rooms
    }

    /// Highest sequence assigned so far.
    pub fn last_seq(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// Encodes the event once and queues it for every member of its rooms.
    pub fn publish(&self, event: &Event<'_>) -> Published {
        let _order = self.order.lock();
        let seq = self.seq.load(Ordering::Relaxed) + 1;
        self.seq.store(seq, Ordering::Release);
        let packets = encode_room_event(event, seq);
        let mut published = Published {
            seq,
            recipients: 0,
            dropped: 0,
        };
        for room in event.rooms {
            let key = RoomKey::new(event.nsp, room);
            self.history.append(&key, seq, &packets);
            let fanout = self.fan_out(&key, seq, &packets, &HashSet::new());
            published.recipients += fanout.recipients;
            published.dropped += fanout.dropped;
        }
        metrics::counter!("tidings_events_published_total").increment(1);
        metrics::counter!("tidings_deliveries_total").increment(published.recipients as u64);
        crate::load::count_published(1);
        crate::load::count_delivered(published.recipients as u64);
        published
    }

    /// Queues an event sequenced elsewhere (by the cluster) for the local members of one room. Call it inside
    /// [`Hub::with_order`], in sequence order.
    pub fn deliver_ordered(&self, key: &RoomKey, seq: u64, packets: &EventPackets) -> usize {
        self.deliver_ordered_except(key, seq, packets, &[])
    }

    /// [`Hub::deliver_ordered`] for the members of `key` that are in none of the rooms of `except` (they get
    /// the event through one of those).
    pub fn deliver_ordered_except(
        &self,
        key: &RoomKey,
        seq: u64,
        packets: &EventPackets,
        except: &[RoomKey],
    ) -> usize {
        let mut skip = HashSet::new();
        for room in except {
            self.rooms.for_each_member(room, |session, _| {
                skip.insert(Arc::as_ptr(session));
            });
        }
        let recipients = self.fan_out(key, seq, packets, &skip).recipients;
        self.seq.fetch_max(seq, Ordering::AcqRel);
        metrics::counter!("tidings_deliveries_total").increment(recipients as u64);
        crate::load::count_delivered(recipients as u64);
        recipients
    }

    /// Hands an ephemeral event (no sequence, no history; see [`ephemeral`]) to the members of one room on this
    /// node: at once, or at the end of the room's conflation interval when `conflate` says so (call it from a
    /// Tokio runtime then). Returns the members it was queued for now.
    pub fn deliver_ephemeral(
        &self,
        key: &RoomKey,
        packets: EventPackets,
        conflate: Option<Conflate>,
    ) -> usize {
        if let Some(conflate) = conflate {
            if self.conflator.offer(key, conflate, packets.clone()) {
                return 0;
            }
        }
        ephemeral::fan_out(&self.rooms, key, &packets)
    }

    /// Queues (or, for a small room, writes) one event for every local member of a room but those in `skip`.
    fn fan_out(
        &self,
        key: &RoomKey,
        seq: u64,
        packets: &EventPackets,
        skip: &HashSet<*const Session>,
    ) -> Fanout {
        let mut fanout = Fanout::default();
        self.rooms.for_each_member(key, |session, members| {
            if !skip.is_empty() && skip.contains(&Arc::as_ptr(session)) {
                return;
            }
            let write_now = members <= WRITE_NOW_MAX_MEMBERS;
            match session.outbox.push_shared_event(seq, packets, write_now) {
                Ok(true) => fanout.recipients += 1,
                Ok(false) => {}
                Err(PushError::Full) => {
                    metrics::counter!("tidings_slow_consumer_disconnects_total").increment(1);
                    fanout.dropped += 1;
                }
                Err(PushError::Closed) => fanout.dropped += 1,
            }
        });
        fanout
    }

    /// Runs `f` with publishing paused, given the last assigned sequence: joins and replays done inside see
    /// a fixed point of the stream, so nothing published meanwhile is lost or duplicated at the seam.
    pub fn with_order<R>(&self, f: impl FnOnce(u64) -> R) -> R {
        let _order = self.order.lock();
        f(self.seq.load(Ordering::Acquire))
    }
}

/// Outgoing packets of one event, shared by all its recipients.
pub type EventPackets = Arc<[Outgoing]>;
