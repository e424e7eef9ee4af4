//! Ephemeral events and their conflation.
//!
//! An ephemeral event (a position, a typing indicator, a cursor) has no sequence, no history and no replay: it
//! goes to the room's members on this node as it comes, and a member whose outbox is already half full drops
//! it instead of being disconnected (see [`crate::engineio::Outbox::push_ephemeral`]).
//!
//! A room can conflate them: per conflation key (a field of the event data, e.g. `worker_id`), only the latest
//! event of each key in an interval goes out, all of them together at the end of the interval, in the order the
//! keys were last updated. A manager watching 500 workers that send 2 positions a second gets at most 500 events
//! per 1 s interval, never a backlog. Conflation is per room and node: every member on the node gets the same
//! flush, encoded once.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;

use super::rooms::{RoomKey, Rooms};
use super::{EventPackets, WRITE_NOW_MAX_MEMBERS};
use crate::engineio::PushError;

/// Most distinct keys one room holds in an interval; past it new keys wait for the next interval's flush by
/// replacing nothing: the event is delivered without conflation, so nothing is lost and memory stays bounded.
pub const MAX_KEYS_PER_ROOM: usize = 100_000;

/// How an ephemeral event is conflated: its room's interval and the event's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflate {
    /// The room's interval, in milliseconds.
    pub interval_ms: u64,
    /// The event's conflation key (the value of the room's key field in its data).
    pub key: String,
}

/// Queues an ephemeral event for every member of a room on this node; returns the members it was queued for.
pub(super) fn fan_out(rooms: &Rooms, key: &RoomKey, packets: &EventPackets) -> usize {
    let mut recipients = 0;
    let mut dropped = 0;
    rooms.for_each_member(key, |session, members| {
        match session
            .outbox
            .push_ephemeral(packets, members <= WRITE_NOW_MAX_MEMBERS)
        {
            Ok(true) => recipients += 1,
            Ok(false) => dropped += 1,
            Err(PushError::Closed | PushError::Full) => {}
        }
    });
    if dropped > 0 {
        metrics::counter!("tidings_ephemeral_dropped_total").increment(dropped);
    }
    metrics::counter!("tidings_deliveries_total").increment(recipients as u64);
    crate::load::count_delivered(recipients as u64);
    recipients
}

/// The latest events per key of one room, waiting for the end of the interval.
struct Pending {
    interval_ms: u64,
    /// Key → (order of its last update, its latest event).
    events: HashMap<String, (u64, EventPackets)>,
    next: u64,
}

/// Conflation state of every conflated room of the node.
pub(super) struct Conflator {
    rooms: Weak<Rooms>,
    pending: Mutex<HashMap<RoomKey, Pending>>,
}

impl Conflator {
    pub(super) fn new(rooms: &Arc<Rooms>) -> Arc<Conflator> {
        Arc::new(Conflator {
            rooms: Arc::downgrade(rooms),
            pending: Mutex::new(HashMap::new()),
        })
    }

    /// Keeps `packets` as the latest event of `conflate.key` in `room`; the first event of an idle room starts
    /// the room's flush timer. Returns false when the event was delivered at once instead (the room holds
    /// [`MAX_KEYS_PER_ROOM`] keys).
    pub(super) fn offer(
        self: &Arc<Self>,
        room: &RoomKey,
        conflate: Conflate,
        packets: EventPackets,
    ) -> bool {
        let start = {
            let mut pending = self.pending.lock();
            let start = !pending.contains_key(room);
            let entry = pending.entry(room.clone()).or_insert_with(|| Pending {
                interval_ms: conflate.interval_ms.max(1),
                events: HashMap::new(),
                next: 0,
            });
            if entry.events.len() >= MAX_KEYS_PER_ROOM && !entry.events.contains_key(&conflate.key)
            {
                return false;
            }
            entry.next += 1;
            let order = entry.next;
            if entry
                .events
                .insert(conflate.key, (order, packets))
                .is_some()
            {
                metrics::counter!("tidings_conflated_events_total").increment(1);
            }
            start.then_some(entry.interval_ms)
        };
        if let Some(interval_ms) = start {
            tokio::spawn(flush_loop(
                Arc::downgrade(self),
                room.clone(),
                Duration::from_millis(interval_ms),
            ));
        }
        true
    }

    /// Takes a room's waiting events in the order their keys were last updated; `None` (and the room's state
    /// is dropped) when none came in the interval.
    fn take(&self, room: &RoomKey) -> Option<Vec<EventPackets>> {
        let mut pending = self.pending.lock();
        let entry = pending.get_mut(room)?;
        if entry.events.is_empty() {
            pending.remove(room);
            return None;
        }
        let mut events: Vec<(u64, EventPackets)> = entry.events.drain().map(|(_, e)| e).collect();
        events.sort_unstable_by_key(|(order, _)| *order);
        Some(events.into_iter().map(|(_, packets)| packets).collect())
    }
}

/// Flushes a room at the end of every interval until an interval passes with nothing to send.
async fn flush_loop(conflator: Weak<Conflator>, room: RoomKey, interval: Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(conflator) = conflator.upgrade() else {
            return;
        };
        let Some(events) = conflator.take(&room) else {
            return;
        };
        let Some(rooms) = conflator.rooms.upgrade() else {
            return;
        };
        for packets in &events {
            fan_out(&rooms, &room, packets);
        }
        metrics::counter!("tidings_conflation_flushes_total").increment(1);
    }
}
