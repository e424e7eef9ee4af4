//! This node's share of presence: per room, its users by id with their connections here and the time the
//! first one joined. An embedded node answers from it directly; a cluster node writes it to Redis.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use super::{PresencePage, PresenceStats, PresentUser, MAX_PAGE};
use crate::hub::RoomKey;

/// Users a room keeps in a sorted list before it switches to a B-tree.
const SMALL_ROOM: usize = 32;

/// A user's connections in a room and when the first one joined (ms since the Unix epoch).
#[derive(Clone, Copy)]
struct Present {
    devices: usize,
    joined_at: u64,
}

/// A room's users by id. Most rooms are small (every connection's personal room holds one user), so a room
/// starts as a sorted list, one allocation of 32 bytes per user, and becomes a B-tree (whose first node alone
/// is 456 bytes) only past [`SMALL_ROOM`] users, where inserting into a list would start to cost.
enum Users {
    Small(Vec<(Box<str>, Present)>),
    Large(BTreeMap<Box<str>, Present>),
}

impl Default for Users {
    fn default() -> Users {
        Users::Small(Vec::new())
    }
}

impl Users {
    fn get(&self, user: &str) -> Option<&Present> {
        match self {
            Users::Small(list) => list
                .binary_search_by(|(u, _)| (**u).cmp(user))
                .ok()
                .map(|at| &list[at].1),
            Users::Large(tree) => tree.get(user),
        }
    }

    fn get_mut(&mut self, user: &str) -> Option<&mut Present> {
        match self {
            Users::Small(list) => list
                .binary_search_by(|(u, _)| (**u).cmp(user))
                .ok()
                .map(|at| &mut list[at].1),
            Users::Large(tree) => tree.get_mut(user),
        }
    }

    /// The entry of `user`, made with `joined_at` when missing.
    fn entry(&mut self, user: &str, joined_at: impl FnOnce() -> u64) -> &mut Present {
        if let Users::Small(list) = self {
            if list.len() >= SMALL_ROOM && list.binary_search_by(|(u, _)| (**u).cmp(user)).is_err()
            {
                *self = Users::Large(std::mem::take(list).into_iter().collect());
            }
        }
        let fresh = || Present {
            devices: 0,
            joined_at: joined_at(),
        };
        match self {
            Users::Small(list) => {
                let at = match list.binary_search_by(|(u, _)| (**u).cmp(user)) {
                    Ok(at) => at,
                    Err(at) => {
                        list.reserve_exact(1);
                        list.insert(at, (user.into(), fresh()));
                        at
                    }
                };
                &mut list[at].1
            }
            Users::Large(tree) => tree.entry(user.into()).or_insert_with(fresh),
        }
    }

    fn remove(&mut self, user: &str) {
        match self {
            Users::Small(list) => {
                if let Ok(at) = list.binary_search_by(|(u, _)| (**u).cmp(user)) {
                    list.remove(at);
                    list.shrink_to_fit();
                }
            }
            Users::Large(tree) => {
                tree.remove(user);
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Users::Small(list) => list.len(),
            Users::Large(tree) => tree.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The users after `cursor` (all when `None`), by id.
    fn after<'a>(
        &'a self,
        cursor: Option<&str>,
    ) -> Box<dyn Iterator<Item = (&'a str, &'a Present)> + 'a> {
        match self {
            Users::Small(list) => {
                let from = cursor.map_or(0, |c| list.partition_point(|(u, _)| &**u <= c));
                Box::new(list[from..].iter().map(|(u, p)| (&**u, p)))
            }
            Users::Large(tree) => {
                let after = cursor.map_or(Bound::Unbounded, Bound::Excluded);
                Box::new(
                    tree.range::<str, _>((after, Bound::Unbounded))
                        .map(|(u, p)| (&**u, p)),
                )
            }
        }
    }
}

#[derive(Default)]
struct Room {
    users: Users,
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
        let present = entry.users.entry(user, crate::messages::now_ms);
        present.devices += 1;
        present.devices
    }

    /// A connection of `user` left `room`; returns the user's connections in it now, `None` when it had none.
    pub fn leave(&mut self, room: &RoomKey, user: &str) -> Option<usize> {
        let entry = self.rooms.get_mut(room)?;
        let present = entry.users.get_mut(user)?;
        entry.connections = entry.connections.saturating_sub(1);
        present.devices -= 1;
        let left = present.devices;
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
            .map_or(0, |present| present.devices)
    }

    /// Every (room, user) present, with whether the room announces.
    pub fn entries(&self) -> Vec<(RoomKey, String, bool)> {
        self.rooms
            .iter()
            .flat_map(|(room, entry)| {
                entry
                    .users
                    .after(None)
                    .map(|(user, _)| (room.clone(), user.to_owned(), entry.announce))
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
            for (user, present) in entry.users.after(cursor) {
                if users.len() == limit {
                    more = true;
                    break;
                }
                users.push(PresentUser {
                    user: user.to_owned(),
                    devices: present.devices,
                    joined_at: present.joined_at,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(page: &PresencePage) -> Vec<String> {
        page.users.iter().map(|u| u.user.clone()).collect()
    }

    /// Pages walk the users in id order with cursors, on a small room and on one past [`SMALL_ROOM`].
    #[test]
    fn pages_follow_ids_in_small_and_large_rooms() {
        for users in [5usize, SMALL_ROOM + 20] {
            let room = RoomKey::new("/", "r");
            let mut counts = Counts::default();
            // Joined in reverse order, each user twice.
            for j in (0..users).rev() {
                counts.join(&room, &format!("u{j:03}"), false);
                assert_eq!(counts.join(&room, &format!("u{j:03}"), false), 2);
            }
            let stats = counts.stats(&room);
            assert_eq!((stats.users, stats.connections), (users, 2 * users));
            let mut seen = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let page = counts.page(&room, cursor.as_deref(), 7);
                assert!(page.users.iter().all(|u| u.devices == 2));
                seen.extend(ids(&page));
                match page.cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            let expected: Vec<String> = (0..users).map(|j| format!("u{j:03}")).collect();
            assert_eq!(seen, expected);
            assert_eq!(counts.entries().len(), users);
        }
    }

    /// Leaving counts down per user, removes a user at zero and the room with its last user.
    #[test]
    fn leaves_count_down_and_empty_rooms_go() {
        let room = RoomKey::new("/", "r");
        let mut counts = Counts::default();
        for j in 0..SMALL_ROOM + 5 {
            counts.join(&room, &format!("u{j}"), true);
        }
        counts.join(&room, "u1", true);
        assert_eq!(counts.devices(&room, "u1"), 2);
        assert_eq!(counts.leave(&room, "u1"), Some(1));
        assert_eq!(counts.leave(&room, "nobody"), None);
        for j in 0..SMALL_ROOM + 5 {
            assert_eq!(counts.leave(&room, &format!("u{j}")), Some(0));
        }
        assert_eq!(counts.leave(&room, "u1"), None);
        assert!(counts.is_empty());
        assert_eq!(counts.stats(&room).users, 0);
    }
}
