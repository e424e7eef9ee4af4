//! This node's share of presence: per room, its users by id with their connections here and the time the
//! first one joined. An embedded node answers from it directly; a cluster node writes it to Redis.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use super::{PresencePage, PresenceStats, PresentUser, MAX_PAGE};
use crate::hub::RoomKey;

#[derive(Default)]
struct Room {
    /// User → (connections, joined at ms).
    users: BTreeMap<String, (usize, u64)>,
    connections: usize,
    /// Whether the room announces joins and leaves (as its last join said).
    announce: bool,
}

/// Users and their connections per room, on this node.
#[derive(Default)]
pub struct Counts {
    rooms: HashMap<RoomKey, Room>,
}

impl Counts {
    /// A connection of `user` joined `room` (which announces joins and leaves when `announce`); returns the
    /// user's connections in it now.
    pub fn join(&mut self, room: &RoomKey, user: &str, announce: bool) -> usize {
        let entry = self.rooms.entry(room.clone()).or_default();
        entry.connections += 1;
        entry.announce = announce;
        let present = entry
            .users
            .entry(user.to_owned())
            .or_insert((0, crate::messages::now_ms()));
        present.0 += 1;
        present.0
    }

    /// A connection of `user` left `room`; returns the user's connections in it now, `None` when it had none.
    pub fn leave(&mut self, room: &RoomKey, user: &str) -> Option<usize> {
        let entry = self.rooms.get_mut(room)?;
        let present = entry.users.get_mut(user)?;
        entry.connections = entry.connections.saturating_sub(1);
        present.0 -= 1;
        let left = present.0;
        if left == 0 {
            entry.users.remove(user);
        }
        if entry.users.is_empty() {
            self.rooms.remove(room);
        }
        Some(left)
    }

    /// The connections of `user` in `room`.
    pub fn devices(&self, room: &RoomKey, user: &str) -> usize {
        self.rooms
            .get(room)
            .and_then(|entry| entry.users.get(user))
            .map_or(0, |present| present.0)
    }

    /// Every (room, user) present, with whether the room announces.
    pub fn entries(&self) -> Vec<(RoomKey, String, bool)> {
        self.rooms
            .iter()
            .flat_map(|(room, entry)| {
                entry
                    .users
                    .keys()
                    .map(|user| (room.clone(), user.clone(), entry.announce))
            })
            .collect()
    }

    /// Whether nobody is present anywhere.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// The users of `room` after `cursor`, by id, at most `limit` (clamped to 1..=[`MAX_PAGE`]).
    pub fn page(&self, room: &RoomKey, cursor: Option<&str>, limit: usize) -> PresencePage {
        let limit = limit.clamp(1, MAX_PAGE);
        let mut users = Vec::new();
        let mut more = false;
        if let Some(entry) = self.rooms.get(room) {
            let after = cursor.map_or(Bound::Unbounded, |c| Bound::Excluded(c.to_owned()));
            for (user, (devices, joined_at)) in entry.users.range((after, Bound::Unbounded)) {
                if users.len() == limit {
                    more = true;
                    break;
                }
                users.push(PresentUser {
                    user: user.clone(),
                    devices: *devices,
                    joined_at: *joined_at,
                });
            }
        }
        let cursor = more.then(|| users.last().map(|u| u.user.clone())).flatten();
        PresencePage { users, cursor }
    }

    /// The counts of `room`.
    pub fn stats(&self, room: &RoomKey) -> PresenceStats {
        self.rooms.get(room).map_or(
            PresenceStats {
                users: 0,
                connections: 0,
            },
            |entry| PresenceStats {
                users: entry.users.len(),
                connections: entry.connections,
            },
        )
    }
}
