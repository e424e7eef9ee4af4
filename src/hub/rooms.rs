//! Room membership, sharded by room so joins and fan-outs of different rooms rarely share a lock.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::engineio::session::Sid;
use crate::engineio::Session;

const SHARDS: usize = 64;

/// How many members ahead the fan-out prefetches an outbox: enough to cover a memory load while the members
/// in between are queued.
const PREFETCH_AHEAD: usize = 8;

/// A room name within its namespace.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct RoomKey(std::sync::Arc<str>);

impl RoomKey {
    /// The key of `room` in namespace `nsp`.
    pub fn new(nsp: &str, room: &str) -> RoomKey {
        let mut key = String::with_capacity(nsp.len() + 1 + room.len());
        key.push_str(nsp);
        key.push('\0');
        key.push_str(room);
        RoomKey(key.into())
    }

    /// The key of [`RoomKey::as_str`]'s form back; `None` without the NUL.
    pub fn parse(key: &str) -> Option<RoomKey> {
        let (nsp, room) = key.split_once('\0')?;
        Some(RoomKey::new(nsp, room))
    }

    /// The key as one string: namespace, NUL, room.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The namespace part.
    pub fn nsp(&self) -> &str {
        self.0.split_once('\0').map(|(nsp, _)| nsp).unwrap_or("")
    }

    /// The room name part.
    pub fn room(&self) -> &str {
        self.0.split_once('\0').map(|(_, room)| room).unwrap_or("")
    }
}

#[derive(Default)]
struct Room {
    members: HashMap<Sid, Arc<Session>>,
}

/// All rooms of a node.
pub(crate) struct Rooms {
    shards: Box<[Mutex<HashMap<RoomKey, Room>>]>,
}

impl Rooms {
    pub(crate) fn new() -> Rooms {
        Rooms {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, key: &RoomKey) -> &Mutex<HashMap<RoomKey, Room>> {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        &self.shards[hasher.finish() as usize % SHARDS]
    }

    pub(crate) fn join(&self, key: &RoomKey, socket: Sid, session: &Arc<Session>) -> bool {
        let mut shard = self.shard(key).lock();
        let room = shard.entry(key.clone()).or_default();
        room.members.insert(socket, session.clone()).is_none()
    }

    pub(crate) fn leave(&self, key: &RoomKey, socket: Sid) -> bool {
        let mut shard = self.shard(key).lock();
        let Some(room) = shard.get_mut(key) else {
            return false;
        };
        let removed = room.members.remove(&socket).is_some();
        if room.members.is_empty() {
            shard.remove(key);
        }
        removed
    }

    pub(crate) fn is_member(&self, key: &RoomKey, socket: Sid) -> bool {
        self.shard(key)
            .lock()
            .get(key)
            .is_some_and(|room| room.members.contains_key(&socket))
    }

    pub(crate) fn member_count(&self, key: &RoomKey) -> usize {
        self.shard(key)
            .lock()
            .get(key)
            .map_or(0, |room| room.members.len())
    }

    pub(crate) fn list(&self, nsp: &str) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            out.extend(
                shard
                    .iter()
                    .filter(|(key, _)| key.nsp() == nsp)
                    .map(|(key, room)| (key.room().to_owned(), room.members.len())),
            );
        }
        out
    }

    /// Calls `f` for every member session of a room, with the room's member count, while holding that room's
    /// shard lock. The outbox of the member [`PREFETCH_AHEAD`] places ahead is prefetched meanwhile.
    pub(crate) fn for_each_member(&self, key: &RoomKey, mut f: impl FnMut(&Arc<Session>, usize)) {
        let shard = self.shard(key).lock();
        if let Some(room) = shard.get(key) {
            let count = room.members.len();
            let mut ahead = room.members.values();
            ahead
                .by_ref()
                .take(PREFETCH_AHEAD)
                .for_each(|session| session.outbox.prefetch());
            for session in room.members.values() {
                if let Some(next) = ahead.next() {
                    next.outbox.prefetch();
                }
                f(session, count);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engineio::session::TransportKind;
    use crate::engineio::OutboxLimits;

    fn session() -> Arc<Session> {
        Session::new(
            TransportKind::WebSocket,
            OutboxLimits {
                max_messages: 16,
                max_bytes: 1024,
            },
            10,
        )
    }

    #[test]
    fn room_key_splits() {
        let key = RoomKey::new("/chat", "team:a");
        assert_eq!(key.nsp(), "/chat");
        assert_eq!(key.room(), "team:a");
        assert_ne!(RoomKey::new("/", "a"), RoomKey::new("/chat", "a"));
    }

    #[test]
    fn join_leave_and_cleanup() {
        let rooms = Rooms::new();
        let key = RoomKey::new("/", "news");
        let (s1, s2) = (session(), session());
        assert!(rooms.join(&key, s1.sid(), &s1));
        assert!(!rooms.join(&key, s1.sid(), &s1));
        assert!(rooms.join(&key, s2.sid(), &s2));
        assert_eq!(rooms.member_count(&key), 2);
        assert!(rooms.leave(&key, s1.sid()));
        assert!(!rooms.leave(&key, s1.sid()));
        assert!(rooms.leave(&key, s2.sid()));
        assert_eq!(rooms.list("/"), vec![]);
    }

    #[test]
    fn every_member_is_visited_once_whatever_the_room_size() {
        let rooms = Rooms::new();
        let key = RoomKey::new("/", "sized");
        let mut members = Vec::new();
        for size in [
            0,
            1,
            PREFETCH_AHEAD - 1,
            PREFETCH_AHEAD,
            PREFETCH_AHEAD + 1,
            100,
        ] {
            while members.len() < size {
                let s = session();
                rooms.join(&key, s.sid(), &s);
                members.push(s);
            }
            let mut seen = Vec::new();
            rooms.for_each_member(&key, |s, count| {
                assert_eq!(count, size);
                seen.push(s.sid());
            });
            assert_eq!(seen.len(), size, "room of {size}: one call per member");
            let seen: std::collections::HashSet<Sid> = seen.into_iter().collect();
            assert_eq!(seen.len(), size, "room of {size}: each member once");
            assert!(members.iter().all(|s| seen.contains(&s.sid())));
        }
    }
}
