//! Names of everything tidings keeps in Redis, under one configurable prefix (one cluster per prefix).

use crate::engineio::session::Sid;
use crate::hub::RoomKey;

/// Key and channel names for one cluster.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Names under `prefix` (e.g. `tidings`).
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The cluster-wide event sequence.
    pub fn seq(&self) -> String {
        format!("{}:seq", self.prefix)
    }

    /// The dataset epoch: changes when Redis lost its data.
    pub fn epoch(&self) -> String {
        format!("{}:epoch", self.prefix)
    }

    /// A room's history stream (entry ids `0-<seq>`).
    pub fn stream(&self, room: &RoomKey) -> String {
        format!("{}:stream:{}", self.prefix, room.as_str())
    }

    /// A room's pub/sub channel.
    pub fn channel(&self, room: &RoomKey) -> String {
        format!("{}:room:{}", self.prefix, room.as_str())
    }

    /// The room of a channel name.
    pub fn room_of_channel(&self, channel: &str) -> Option<RoomKey> {
        let rest = channel.strip_prefix(&self.prefix)?.strip_prefix(":room:")?;
        let (nsp, room) = rest.split_once('\0')?;
        Some(RoomKey::new(nsp, room))
    }

    /// A recoverable session's record.
    pub fn session(&self, pid: &Sid) -> String {
        format!("{}:session:{}", self.prefix, pid)
    }

    /// The channel backends may publish events on instead of calling the HTTP API.
    pub fn ingest(&self) -> String {
        format!("{}:publish", self.prefix)
    }

    /// The set of registered node ids.
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// One node's registry entry (expires unless its heartbeat renews it).
    pub fn node(&self, id: &str) -> String {
        format!("{}:node:{id}", self.prefix)
    }

    /// The member counts of a node's rooms (hash: `<nsp>\0<room>` → members), written with its heartbeat.
    pub fn node_rooms(&self, id: &str) -> String {
        format!("{}:node:{id}:rooms", self.prefix)
    }

    /// Where a user's devices are: a hash of node id → devices on that node.
    pub fn direct_user(&self, user: &str) -> String {
        format!("{}:dm:user:{user}", self.prefix)
    }

    /// The channel on which a node takes direct messages and status changes for its users.
    pub fn direct_channel(&self, node: &str) -> String {
        format!("{}:dm:node:{node}", self.prefix)
    }

    /// Deduplication marker of one ingested message.
    pub fn ingest_seen(&self, id: &str) -> String {
        format!("{}:ingested:{}", self.prefix, id)
    }

    /// The root of every key of the Redis message store, `<prefix>:dm:store:` (apart from the routing keys
    /// above). The message scripts build the per-user and per-message names below from it (`msg:`, `seq:`,
    /// `inbox:`, `acked:`, `key:`), so the two must agree.
    pub fn dm_root(&self) -> String {
        format!("{}:dm:store:", self.prefix)
    }

    /// A direct message's record: a hash of its fields, status, timestamps and per-device receipts.
    pub fn dm_message(&self, id: &str) -> String {
        format!("{}msg:{id}", self.dm_root())
    }

    /// A user's inbox counters: a hash of `seq` (last sequence given) and `n` (records of the inbox still
    /// kept).
    pub fn dm_counters(&self, user: &str) -> String {
        format!("{}seq:{user}", self.dm_root())
    }

    /// A user's inbox: a sorted set of message ids scored by their sequence.
    pub fn dm_inbox(&self, user: &str) -> String {
        format!("{}inbox:{user}", self.dm_root())
    }

    /// The delivered messages still in a user's inbox (the ones a full inbox may let go), scored by sequence.
    pub fn dm_acked(&self, user: &str) -> String {
        format!("{}acked:{user}", self.dm_root())
    }

    /// A sender's idempotency key: the id of the message it was first used for (`from` empty for a backend).
    pub fn dm_idempotency(&self, from: &str, key: &str) -> String {
        format!("{}key:{from}\0{key}", self.dm_root())
    }

    /// Inbox messages of every user, scored by the time their ttl passes.
    pub fn dm_expiry(&self) -> String {
        format!("{}expiry", self.dm_root())
    }

    /// Message records out of their inbox, scored by the time they are forgotten.
    pub fn dm_forget(&self) -> String {
        format!("{}forget", self.dm_root())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_round_trip() {
        let keys = Keys::new("t1");
        let room = RoomKey::new("/chat", "team:a");
        let channel = keys.channel(&room);
        assert_eq!(keys.room_of_channel(&channel), Some(room));
        assert_eq!(keys.room_of_channel("other:room:x"), None);
    }

    #[test]
    fn message_keys_share_one_root() {
        let keys = Keys::new("t1");
        let root = keys.dm_root();
        assert_eq!(root, "t1:dm:store:");
        assert_eq!(keys.dm_message("m1"), format!("{root}msg:m1"));
        assert_eq!(keys.dm_inbox("bob"), format!("{root}inbox:bob"));
        assert_eq!(keys.dm_acked("bob"), format!("{root}acked:bob"));
        assert_eq!(keys.dm_counters("bob"), format!("{root}seq:bob"));
        // Apart from the routing keys of direct messages.
        assert!(!keys.direct_user("bob").starts_with(&root));
        assert!(!keys.direct_channel("n1").starts_with(&root));
        assert_eq!(keys.dm_idempotency("", "k"), format!("{root}key:\0k"));
    }
}
