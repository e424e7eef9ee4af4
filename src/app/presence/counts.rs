//! This node's share of presence: per room, its users by id with their connections here and the time the
//! first one joined. An embedded node answers from it directly; a cluster node writes it to Redis.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use super::{PresencePage, PresenceStats, PresentUser, MAX_PAGE};
use crate::auth::personal_room_owner;
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

/// A user in its own personal room (`user:<sub>`), the only user that room can hold: 16 bytes beside its key,
/// where a general room entry with its one-user list and the user's id again took about 150 per connection.
#[derive(Clone, Copy)]
struct Personal {
    devices: u32,
    /// Whether the room announces joins and leaves (as its last join said).
    announce: bool,
    joined_at: u64,
}

/// Users and their connections per room, on this node.
#[derive(Default)]
pub struct Counts {
    rooms: HashMap<RoomKey, Room>,
    /// Personal rooms with their owner present, kept apart (see [`Personal`]).
    personal: HashMap<RoomKey, Personal>,
}

/// The owner of `room` when it is a personal room: `user:<sub>` names its only possible user.
fn owner(room: &RoomKey) -> Option<&str> {
    personal_room_owner(room.room())
}

impl Counts {
    /// A connection of `user` joined `room` (which announces joins and leaves when `announce`); returns the
    /// user's connections in it now.
    pub fn join(&mut self, room: &RoomKey, user: &str, announce: bool) -> usize {
        if owner(room) == Some(user) {
            let entry = self
                .personal
                .entry(room.clone())
                .or_insert_with(|| Personal {
                    devices: 0,
                    announce,
                    joined_at: crate::messages::now_ms(),
                });
            entry.devices = entry.devices.saturating_add(1);
            entry.announce = announce;
            return entry.devices as usize;
        }
        let entry = self.rooms.entry(room.clone()).or_default();
        entry.connections += 1;
        entry.announce = announce;
        let present = entry.users.entry(user, crate::messages::now_ms);
        present.devices += 1;
        present.devices
    }

    /// A connection of `user` left `room`; returns the user's connections in it now, `None` when it had none.
    pub fn leave(&mut self, room: &RoomKey, user: &str) -> Option<usize> {
        if owner(room) == Some(user) {
            let entry = self.personal.get_mut(room)?;
            entry.devices -= 1;
            let left = entry.devices as usize;
            if left == 0 {
                self.personal.remove(room);
            }
            return Some(left);
        }
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
        if owner(room) == Some(user) {
            return self.personal.get(room).map_or(0, |p| p.devices as usize);
        }
        self.rooms
            .get(room)
            .and_then(|entry| entry.users.get(user))
            .map_or(0, |present| present.devices)
    }

    /// Every (room, user) present, with whether the room announces.
    pub fn entries(&self) -> Vec<(RoomKey, String, bool)> {
        let personal = self.personal.iter().filter_map(|(room, entry)| {
            owner(room).map(|user| (room.clone(), user.to_owned(), entry.announce))
        });
        self.rooms
            .iter()
            .flat_map(|(room, entry)| {
                entry
                    .users
                    .after(None)
                    .map(|(user, _)| (room.clone(), user.to_owned(), entry.announce))
            })
            .chain(personal)
            .collect()
    }

    /// Whether nobody is present anywhere.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty() && self.personal.is_empty()
    }

    /// The users of `room` after `cursor`, by id, at most `limit` (clamped to 1..=[`MAX_PAGE`]).
    pub fn page(&self, room: &RoomKey, cursor: Option<&str>, limit: usize) -> PresencePage {
        let limit = limit.clamp(1, MAX_PAGE);
        let after = |user: &str| cursor.is_none_or(|cursor| cursor < user);
        // The owner of a personal room is kept apart; anyone else a backend put in it is in `rooms`.
        let mut owner_entry = owner(room)
            .filter(|user| after(user))
            .and_then(|user| Some((user, self.personal.get(room)?)))
            .map(|(user, entry)| PresentUser {
                user: user.to_owned(),
                devices: entry.devices as usize,
                joined_at: entry.joined_at,
            });
        let mut users = Vec::new();
        let mut more = false;
        let general = self.rooms.get(room).into_iter();
        for (user, present) in general.flat_map(|entry| entry.users.after(cursor)) {
            if owner_entry.as_ref().is_some_and(|o| o.user.as_str() < user) {
                if users.len() == limit {
                    more = true;
                    break;
                }
                users.extend(owner_entry.take());
            }
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
        if let Some(entry) = owner_entry {
            if users.len() == limit {
                more = true;
            } else {
                users.push(entry);
            }
        }
        let cursor = more.then(|| users.last().map(|u| u.user.clone())).flatten();
        PresencePage { users, cursor }
    }

    /// The counts of `room`.
    pub fn stats(&self, room: &RoomKey) -> PresenceStats {
        let mut stats = self.rooms.get(room).map_or(
            PresenceStats {
                users: 0,
                connections: 0,
            },
            |entry| PresenceStats {
                users: entry.users.len(),
                connections: entry.connections,
            },
        );
        if let Some(entry) = self.personal.get(room) {
            stats.users += 1;
            stats.connections += entry.devices as usize;
        }
        stats
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

    /// The owner of a personal room is counted apart, answered like any user, and merged in id order with
    /// anyone else a backend put in the room.
    #[test]
    fn personal_rooms_hold_their_owner_apart() {
        let room = RoomKey::new("/", "user:bob");
        let mut counts = Counts::default();
        assert_eq!(counts.join(&room, "bob", false), 1);
        assert_eq!(counts.join(&room, "bob", true), 2);
        assert!(counts.rooms.is_empty(), "the owner makes no general entry");
        assert_eq!(counts.devices(&room, "bob"), 2);
        let stats = counts.stats(&room);
        assert_eq!((stats.users, stats.connections), (1, 2));
        assert_eq!(ids(&counts.page(&room, None, 10)), ["bob"]);
        assert_eq!(counts.page(&room, None, 10).users[0].devices, 2);
        assert!(counts.page(&room, Some("bob"), 10).users.is_empty());
        assert_eq!(
            counts.entries(),
            vec![(room.clone(), "bob".to_owned(), true)]
        );
        // Others in the same room (put there by a backend) sort around the owner, pages included.
        counts.join(&room, "alice", false);
        counts.join(&room, "carol", false);
        let stats = counts.stats(&room);
        assert_eq!((stats.users, stats.connections), (3, 4));
        assert_eq!(
            ids(&counts.page(&room, None, 10)),
            ["alice", "bob", "carol"]
        );
        let first = counts.page(&room, None, 1);
        assert_eq!(
            (ids(&first), first.cursor.as_deref()),
            (vec!["alice".to_owned()], Some("alice"))
        );
        let second = counts.page(&room, Some("alice"), 1);
        assert_eq!(
            (ids(&second), second.cursor.as_deref()),
            (vec!["bob".to_owned()], Some("bob"))
        );
        let third = counts.page(&room, Some("bob"), 1);
        assert_eq!(
            (ids(&third), third.cursor),
            (vec!["carol".to_owned()], None)
        );
        let two = counts.page(&room, None, 2);
        assert_eq!(
            (ids(&two), two.cursor.as_deref()),
            (vec!["alice".to_owned(), "bob".to_owned()], Some("bob"))
        );
        // Another user's personal room never counts bob.
        let other = RoomKey::new("/", "user:dave");
        assert_eq!(counts.devices(&other, "bob"), 0);
        assert_eq!(counts.leave(&room, "bob"), Some(1));
        assert_eq!(counts.leave(&room, "bob"), Some(0));
        assert_eq!(counts.leave(&room, "bob"), None);
        assert_eq!(ids(&counts.page(&room, None, 10)), ["alice", "carol"]);
        counts.leave(&room, "alice");
        counts.leave(&room, "carol");
        assert!(counts.is_empty());
    }
}
