//! Presence of an embedded node: per room, a map of users by id (pages are ranges of it), with announcements
//! coalesced per room and flushed once a [`super::FLUSH_EVERY`] to the room's members on this node.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use futures_util::future::{ready, BoxFuture, FutureExt};
use parking_lot::Mutex;

use super::counts::Counts;
use super::{PresencePage, PresenceStats, FLUSH_EVERY, MAX_CHANGES_PER_FLUSH};
use crate::app::backend::Unavailable;
use crate::hub::{encode_room_event, Hub, RoomKey};

/// Users whose presence changed since the room's last flush: true for joined, false for left.
type Changes = HashMap<RoomKey, HashMap<String, bool>>;

/// Presence kept in this process.
pub struct LocalPresence {
    counts: Mutex<Counts>,
    changes: Arc<Mutex<Changes>>,
}

impl LocalPresence {
    /// Presence whose announcements go to the members of `hub`'s rooms; flushes while the hub lives (call
    /// from a Tokio runtime).
    pub fn new(hub: &Arc<Hub>) -> Arc<LocalPresence> {
        let changes = Arc::new(Mutex::new(Changes::new()));
        tokio::spawn(flush_loop(Arc::downgrade(hub), Arc::downgrade(&changes)));
        Arc::new(LocalPresence {
            counts: Mutex::new(Counts::default()),
            changes,
        })
    }

    fn announce(&self, room: &RoomKey, user: &str, joined: bool) {
        let mut changes = self.changes.lock();
        let room = changes.entry(room.clone()).or_default();
        match room.get(user) {
            // Left and came back (or the other way round) within one flush: nothing to say.
            Some(&before) if before != joined => {
                room.remove(user);
            }
            _ => {
                room.insert(user.to_owned(), joined);
            }
        }
    }
}

impl super::Presence for LocalPresence {
    fn joined(&self, room: &RoomKey, user: &str, announce: bool) {
        let first = self.counts.lock().join(room, user, announce) == 1;
        if first && announce {
            self.announce(room, user, true);
        }
    }

    fn left(&self, room: &RoomKey, user: &str, announce: bool) {
        let gone = self.counts.lock().leave(room, user) == Some(0);
        if gone && announce {
            self.announce(room, user, false);
        }
    }

    fn page<'a>(
        &'a self,
        room: &'a RoomKey,
        cursor: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<PresencePage, Unavailable>> {
        ready(Ok(self.counts.lock().page(room, cursor, limit))).boxed()
    }

    fn stats<'a>(&'a self, room: &'a RoomKey) -> BoxFuture<'a, Result<PresenceStats, Unavailable>> {
        ready(Ok(self.counts.lock().stats(room))).boxed()
    }
}

/// Sends each room's coalesced changes once a flush interval.
async fn flush_loop(hub: Weak<Hub>, changes: Weak<Mutex<Changes>>) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (Some(hub), Some(changes)) = (hub.upgrade(), changes.upgrade()) else {
            return;
        };
        let pending = std::mem::take(&mut *changes.lock());
        for (room, users) in pending {
            if users.is_empty() {
                continue;
            }
            let name = room.room().to_owned();
            if users.len() > MAX_CHANGES_PER_FLUSH {
                metrics::counter!("tidings_presence_resets_total").increment(1);
                let data = serde_json::json!({ "room": name, "changed": users.len() }).to_string();
                send(&hub, &room, super::RESET_EVENT, &data);
                continue;
            }
            for (user, joined) in users {
                let event = if joined {
                    "presence:join"
                } else {
                    "presence:leave"
                };
                let data = serde_json::json!({ "room": name, "user": user }).to_string();
                send(&hub, &room, event, &data);
            }
        }
    }
}

fn send(hub: &Hub, room: &RoomKey, name: &str, data: &str) {
    let event = crate::app::backend::Ephemeral {
        name,
        data: data.as_bytes(),
        attachments: &[],
        conflate: None,
    };
    hub.deliver_ephemeral(room, encode_room_event(&event.as_event(room), 0), None);
    metrics::counter!("tidings_presence_events_total").increment(1);
}
