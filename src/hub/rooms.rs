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

/// A room name within its namespace. One pointer (the length lives in the shared block): every membership, hub
/// room and presence entry holds one.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct RoomKey(arcstr::ArcStr);

impl RoomKey {
    /// The key of `room` in namespace `nsp`.
    pub fn new(nsp: &str, room: &str) -> RoomKey {
        // Written straight into the shared block: one allocation, no string made first and copied.
        let key = arcstr::ArcStr::init_with(nsp.len() + 1 + room.len(), |buf| {
            let (head, tail) = buf.split_at_mut(nsp.len());
            head.copy_from_slice(nsp.as_bytes());
            tail[0] = 0;
            tail[1..].copy_from_slice(room.as_bytes());
        })
        .expect("two strings joined by a NUL are UTF-8");
        RoomKey(key)
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

    /// Which of `buckets` buckets the key falls in (the same for every process of the same build).
    pub fn bucket(&self, buckets: usize) -> usize {
        let mut hasher = DefaultHasher::new();
        self.hash(&mut hasher);
        hasher.finish() as usize % buckets
    }
}

/// A room's members. Every connection's personal room has one member, so the first one is kept inline: a
/// table for it would be a 148-byte allocation per connection. The table comes with the second member.
enum Room {
    One(Sid, Arc<Session>),
    #[allow(clippy::box_collection)] // Boxed so that `One` sets the size: 32 bytes inline, not 48.
    Many(Box<HashMap<Sid, Arc<Session>>>),
}

impl Room {
    fn len(&self) -> usize {
        match self {
            Room::One(..) => 1,
            Room::Many(members) => members.len(),
        }
    }

    fn contains(&self, socket: &Sid) -> bool {
        match self {
            Room::One(sid, _) => sid == socket,
            Room::Many(members) => members.contains_key(socket),
        }
    }

    /// Adds a member (or replaces its session); true when it was not a member.
    fn insert(&mut self, socket: Sid, session: &Arc<Session>) -> bool {
        match self {
            Room::One(sid, held) if *sid == socket => {
                *held = session.clone();
                false
            }
            Room::One(sid, held) => {
                let mut members = HashMap::with_capacity(2);
                members.insert(*sid, held.clone());
                members.insert(socket, session.clone());
                *self = Room::Many(Box::new(members));
                true
            }
            Room::Many(members) => members.insert(socket, session.clone()).is_none(),
        }
    }

    /// Removes a member of a room of several; true when it was one. A table down to one member goes back
    /// inline. (A room of one is dropped by the caller when its member leaves.)
    fn remove(&mut self, socket: &Sid) -> bool {
        let Room::Many(members) = self else {
            return false;
        };
        let removed = members.remove(socket).is_some();
        if members.len() == 1 {
            let last = members.drain().next();
            if let Some((sid, session)) = last {
                *self = Room::One(sid, session);
            }
        }
        removed
    }

    fn sessions(&self) -> impl Iterator<Item = &Arc<Session>> {
        let (one, many) = match self {
            Room::One(_, session) => (Some(session), None),
            Room::Many(members) => (None, Some(members.values())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
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
        &self.shards[key.bucket(SHARDS)]
    }

    /// Adds a member; the room's own key (shared by everyone who holds it) when it was not one yet.
    pub(crate) fn join(
        &self,
        key: &RoomKey,
        socket: Sid,
        session: &Arc<Session>,
    ) -> Option<RoomKey> {
        let mut shard = self.shard(key).lock();
        match shard.entry(key.clone()) {
            std::collections::hash_map::Entry::Occupied(mut room) => {
                let added = room.get_mut().insert(socket, session);
                added.then(|| room.key().clone())
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                let key = slot.key().clone();
                slot.insert(Room::One(socket, session.clone()));
                Some(key)
            }
        }
    }

    pub(crate) fn leave(&self, key: &RoomKey, socket: Sid) -> bool {
        let mut shard = self.shard(key).lock();
        let Some(room) = shard.get_mut(key) else {
            return false;
        };
        if let Room::One(sid, _) = room {
            // The last member leaves: the room goes.
            let last = *sid == socket;
            if last {
                shard.remove(key);
            }
            return last;
        }
        room.remove(&socket)
    }

    pub(crate) fn is_member(&self, key: &RoomKey, socket: Sid) -> bool {
        self.shard(key)
            .lock()
            .get(key)
            .is_some_and(|room| room.contains(&socket))
    }

    pub(crate) fn member_count(&self, key: &RoomKey) -> usize {
        self.shard(key).lock().get(key).map_or(0, Room::len)
    }

    pub(crate) fn list(&self, nsp: &str) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            out.extend(
                shard
                    .iter()
                    .filter(|(key, _)| key.nsp() == nsp)
                    .map(|(key, room)| (key.room().to_owned(), room.len())),
            );
        }
        out
    }

    /// Calls `f` for every member session of a room, with the room's member count, while holding that room's
    /// shard lock. The outbox of the member [`PREFETCH_AHEAD`] places ahead is prefetched meanwhile.
    pub(crate) fn for_each_member(&self, key: &RoomKey, mut f: impl FnMut(&Arc<Session>, usize)) {
        let shard = self.shard(key).lock();
        if let Some(room) = shard.get(key) {
            let count = room.len();
            let mut ahead = room.sessions();
            ahead
                .by_ref()
                .take(PREFETCH_AHEAD)
                .for_each(|session| session.outbox.prefetch());
            for session in room.sessions() {
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
        assert_eq!(RoomKey::new("/é", "ü:ß").as_str(), "/é\0ü:ß");
        assert_eq!(RoomKey::new("", "").as_str(), "\0");
        assert_eq!(std::mem::size_of::<RoomKey>(), 8);
        // Hashes and buckets follow the text alone, whatever holds it.
        let mut hasher = DefaultHasher::new();
        "/chat\0team:a".hash(&mut hasher);
        assert_eq!(key.bucket(64), hasher.finish() as usize % 64);
    }

    #[test]
    fn join_leave_and_cleanup() {
        let rooms = Rooms::new();
        let key = RoomKey::new("/", "news");
        let (s1, s2) = (session(), session());
        assert!(rooms.join(&key, s1.sid(), &s1).is_some());
        assert!(rooms.join(&key, s1.sid(), &s1).is_none());
        assert!(rooms.join(&key, s2.sid(), &s2).is_some());
        assert_eq!(rooms.member_count(&key), 2);
        assert!(rooms.leave(&key, s1.sid()));
        assert!(!rooms.leave(&key, s1.sid()));
        // Down to one member (kept inline again): still found, still visited, a new member still counted.
        assert!(rooms.is_member(&key, s2.sid()) && !rooms.is_member(&key, s1.sid()));
        let mut seen = Vec::new();
        rooms.for_each_member(&key, |s, count| seen.push((s.sid(), count)));
        assert_eq!(seen, vec![(s2.sid(), 1)]);
        assert!(rooms.join(&key, s2.sid(), &s2).is_none());
        assert!(rooms.join(&key, s1.sid(), &s1).is_some());
        assert_eq!(rooms.member_count(&key), 2);
        assert!(rooms.leave(&key, s1.sid()));
        assert!(!rooms.leave(&key, s1.sid()));
        assert!(rooms.leave(&key, s2.sid()));
        assert!(!rooms.leave(&key, s2.sid()));
        assert!(!rooms.is_member(&key, s2.sid()));
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
