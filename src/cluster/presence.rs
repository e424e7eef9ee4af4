//! Presence in Redis: every node writes its share (how many connections each user has in each room on that
//! node) as absolute numbers, and scripts keep the cluster-wide view — the users of a room in id order for
//! pages, their devices on all nodes, their join time, the room's connections — and the announcements a change
//! causes, coalesced per room in Redis and sent once a flush by one node.
//!
//! Keys, under `{prefix}:presence:` (`R` is a room key, `N` a node id):
//! - `nodes` (set): the nodes whose share is in Redis; `sweeping` (set): dead nodes whose share is being removed;
//! - `node:N` (set): the rooms where N has users;
//! - `r:R:users` (sorted set, all scores 0, read by lexical range), `r:R:devices` and `r:R:joined` (hashes by
//!   user), `r:R:conns` (the room's connections), `r:R:n:N` (hash: N's connections by user), `r:R:events`
//!   (present when the room announces), `r:R:changes` (hash: user → `1` joined / `0` left since the last
//!   flush), `r:R:flush` (the node that flushes them, expiring after [`FLUSH_CLAIM_MS`]).
//!
//! A node's share is written as "N has D connections of U in R", so a write can be repeated or replayed
//! without counting twice. A node whose registry entry expired is swept by any live node: its numbers are set
//! to zero room by room. A node finding itself missing from `nodes` (swept while it was alive, or Redis lost
//! its data) writes its whole share again.

use std::sync::Arc;

use redis::Script;

use super::keys::Keys;
use super::Redis;
use crate::hub::RoomKey;

/// How long a node's claim to flush a room's announcements holds; past it another node may claim them.
pub const FLUSH_CLAIM_MS: u64 = 3000;

/// Rooms swept per script call.
const SWEEP_ROOMS: usize = 16;

/// The shared part of the scripts: `apply(room, node, user, devices, announce, now, flusher)` sets N's
/// connections of `user` in `room` and returns true when `flusher` must flush the room's announcements.
/// `announce` is `1` (the room announces), `0` (it does not) or `?` (as recorded for the room).
const APPLY_LUA: &str = r#"
local root = ARGV[1]
local function apply(room, node, user, devices, announce, now, flusher)
  local r = root .. 'r:' .. room .. ':'
  local mine = r .. 'n:' .. node
  local old = tonumber(redis.call('HGET', mine, user) or '0')
  local d = devices - old
  if d == 0 then return false end
  local announces = announce == '1' or (announce == '?' and redis.call('EXISTS', r .. 'events') == 1)
  if devices == 0 then
    redis.call('HDEL', mine, user)
    if redis.call('EXISTS', mine) == 0 then redis.call('SREM', root .. 'node:' .. node, room) end
  else
    redis.call('HSET', mine, user, devices)
    if old == 0 then redis.call('SADD', root .. 'node:' .. node, room) end
    if announce == '1' then redis.call('SET', r .. 'events', '1') end
  end
  local total = redis.call('HINCRBY', r .. 'devices', user, d)
  local before = total - d
  local conns = redis.call('INCRBY', r .. 'conns', d)
  local change = nil
  if before <= 0 and total > 0 then
    redis.call('ZADD', r .. 'users', 0, user)
    redis.call('HSET', r .. 'joined', user, now)
    change = '1'
  elseif before > 0 and total <= 0 then
    redis.call('ZREM', r .. 'users', user)
    redis.call('HDEL', r .. 'devices', user)
    redis.call('HDEL', r .. 'joined', user)
    change = '0'
  end
  if conns <= 0 then
    redis.call('DEL', r .. 'users', r .. 'devices', r .. 'joined', r .. 'conns', r .. 'events')
  end
  if change == nil or not announces then return false end
  local changes = r .. 'changes'
  local pending = redis.call('HGET', changes, user)
  if pending and pending ~= change then
    redis.call('HDEL', changes, user)
  else
    redis.call('HSET', changes, user, change)
  end
  if redis.call('EXISTS', changes) == 0 then return false end
  return redis.call('SET', r .. 'flush', flusher, 'NX', 'PX', ARGV[#ARGV]) ~= false
end
"#;

/// ARGV: root, node, now, then (room, user, devices, announce) × n, then the flush claim ms. Returns
/// `{fresh, rooms to flush}`: fresh is 1 when the node was not in `nodes` (it must write its whole share).
const WRITE_LUA: &str = r#"
local node, now = ARGV[2], ARGV[3]
local fresh = redis.call('SADD', root .. 'nodes', node)
local flush = {}
for i = 4, #ARGV - 1, 4 do
  if apply(ARGV[i], node, ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3], now, node) then
    flush[#flush + 1] = ARGV[i]
  end
end
return {fresh, flush}
"#;

/// ARGV: root, dead node, its registry entry key, now, this node, rooms per call, flush claim ms. Returns
/// `{more, rooms to flush}`; stops (more = 0) as soon as the node's entry is back.
const SWEEP_LUA: &str = r#"
local dead, entry, now, me, count = ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
if redis.call('EXISTS', entry) == 1 then
  redis.call('SREM', root .. 'sweeping', dead)
  return {0, {}}
end
redis.call('SREM', root .. 'nodes', dead)
redis.call('SADD', root .. 'sweeping', dead)
local flush = {}
for _, room in ipairs(redis.call('SPOP', root .. 'node:' .. dead, count)) do
  local users = redis.call('HKEYS', root .. 'r:' .. room .. ':n:' .. dead)
  local announce = false
  for _, user in ipairs(users) do
    if apply(room, dead, user, 0, '?', now, me) then announce = true end
  end
  if announce then flush[#flush + 1] = room end
end
if redis.call('SCARD', root .. 'node:' .. dead) == 0 then
  redis.call('SREM', root .. 'sweeping', dead)
  return {0, flush}
end
return {1, flush}
"#;

/// ARGV: root, this node, max changes named per room, then (room, channel, room name) × n. Publishes each
/// room's pending changes on its channel as ephemeral events (one `presence:reset` past the max) when this
/// node holds the room's flush claim. Returns `{events, resets}`.
const FLUSH_LUA: &str = r#"
local root, me, max = ARGV[1], ARGV[2], tonumber(ARGV[3])
local events, resets = 0, 0
local function send(channel, name, data)
  redis.call('PUBLISH', channel, 'e ' .. cjson.encode({v = {e = name, d = data}}))
end
for i = 4, #ARGV, 3 do
  local r = root .. 'r:' .. ARGV[i] .. ':'
  if redis.call('GET', r .. 'flush') == me then
    local changes = redis.call('HGETALL', r .. 'changes')
    redis.call('DEL', r .. 'changes', r .. 'flush')
    local n = #changes / 2
    if n > max then
      send(ARGV[i + 1], 'presence:reset', {room = ARGV[i + 2], changed = n})
      resets = resets + 1
    else
      for j = 1, #changes, 2 do
        local name = changes[j + 1] == '1' and 'presence:join' or 'presence:leave'
        send(ARGV[i + 1], name, {room = ARGV[i + 2], user = changes[j]})
        events = events + 1
      end
    end
  end
end
return {events, resets}
"#;

/// ARGV: root, room, cursor (empty: from the start), limit. Returns `{users, devices, joined}` of up to
/// limit + 1 users after the cursor.
const PAGE_LUA: &str = r#"
local r = ARGV[1] .. 'r:' .. ARGV[2] .. ':'
local min = ARGV[3] == '' and '-' or ('(' .. ARGV[3])
local users = redis.call('ZRANGEBYLEX', r .. 'users', min, '+', 'LIMIT', 0, tonumber(ARGV[4]) + 1)
if #users == 0 then return {{}, {}, {}} end
return {users, redis.call('HMGET', r .. 'devices', unpack(users)), redis.call('HMGET', r .. 'joined', unpack(users))}
"#;

/// One node's share of a room: `user` has `devices` connections in `room` here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// The room.
    pub room: RoomKey,
    /// The user.
    pub user: String,
    /// Their connections in the room on this node (0: none any more).
    pub devices: usize,
    /// Whether the room announces joins and leaves.
    pub announce: bool,
}

/// What a write of shares asks of the writer.
#[derive(Debug, Default)]
pub struct Written {
    /// This node was not listed (first write, swept, or Redis lost its data): write the whole share again.
    pub fresh: bool,
    /// Rooms whose announcements this node flushes.
    pub flush: Vec<RoomKey>,
}

/// A room's users in Redis, as read for a page: (user, devices, joined at ms).
pub type PageRows = Vec<(String, usize, u64)>;

/// Presence keys and scripts of one cluster, for one node.
pub struct PresenceStore {
    redis: Arc<Redis>,
    keys: Keys,
    root: String,
    node: String,
    write: Script,
    sweep: Script,
    flush: Script,
    page: Script,
}

impl PresenceStore {
    /// The store of the cluster `keys` name, written by node `node`.
    pub fn new(redis: Arc<Redis>, keys: Keys, node: &str) -> PresenceStore {
        PresenceStore {
            redis,
            root: format!("{}:presence:", keys.prefix()),
            keys,
            node: node.to_owned(),
            write: Script::new(&format!("{APPLY_LUA}{WRITE_LUA}")),
            sweep: Script::new(&format!("{APPLY_LUA}{SWEEP_LUA}")),
            flush: Script::new(FLUSH_LUA),
            page: Script::new(PAGE_LUA),
        }
    }

    /// Writes this node's `shares` (absolute numbers: a repeated write changes nothing).
    pub async fn write(&self, shares: &[Share]) -> Result<Written, redis::RedisError> {
        let mut invocation = self.write.prepare_invoke();
        invocation
            .arg(&self.root)
            .arg(&self.node)
            .arg(crate::messages::now_ms());
        for share in shares {
            invocation
                .arg(share.room.as_str())
                .arg(&share.user)
                .arg(share.devices)
                .arg(if share.announce { "1" } else { "0" });
        }
        invocation.arg(FLUSH_CLAIM_MS);
        let (fresh, rooms): (i64, Vec<String>) = self.redis.run_script(&invocation).await?;
        Ok(Written {
            fresh: fresh == 1,
            flush: rooms.iter().filter_map(|r| RoomKey::parse(r)).collect(),
        })
    }

    /// Whether this node is listed as having its share in Redis.
    pub async fn listed(&self) -> Result<bool, redis::RedisError> {
        self.redis
            .run(
                redis::cmd("SISMEMBER")
                    .arg(format!("{}nodes", self.root))
                    .arg(&self.node),
            )
            .await
    }

    /// The other nodes listed, or being swept.
    pub async fn other_nodes(&self) -> Result<Vec<String>, redis::RedisError> {
        let mut nodes: Vec<String> = self
            .redis
            .run(
                redis::cmd("SUNION")
                    .arg(format!("{}nodes", self.root))
                    .arg(format!("{}sweeping", self.root)),
            )
            .await?;
        nodes.retain(|n| *n != self.node);
        Ok(nodes)
    }

    /// Which of `nodes` have no registry entry any more.
    pub async fn dead(&self, nodes: &[String]) -> Result<Vec<String>, redis::RedisError> {
        if nodes.is_empty() {
            return Ok(Vec::new());
        }
        let entries: Vec<String> = nodes.iter().map(|n| self.keys.node(n)).collect();
        let exists: Vec<Option<redis::Value>> =
            self.redis.run(redis::cmd("MGET").arg(&entries)).await?;
        Ok(nodes
            .iter()
            .zip(exists)
            .filter(|(_, value)| value.is_none())
            .map(|(node, _)| node.clone())
            .collect())
    }

    /// Removes part of a dead node's share (a few rooms); returns whether more is left, and the rooms whose
    /// announcements this node flushes.
    pub async fn sweep(&self, dead: &str) -> Result<(bool, Vec<RoomKey>), redis::RedisError> {
        let mut invocation = self.sweep.prepare_invoke();
        invocation
            .arg(&self.root)
            .arg(dead)
            .arg(self.keys.node(dead))
            .arg(crate::messages::now_ms())
            .arg(&self.node)
            .arg(SWEEP_ROOMS)
            .arg(FLUSH_CLAIM_MS);
        let (more, rooms): (i64, Vec<String>) = self.redis.run_script(&invocation).await?;
        Ok((
            more == 1,
            rooms.iter().filter_map(|r| RoomKey::parse(r)).collect(),
        ))
    }

    /// Publishes the pending announcements of `rooms` this node flushes; returns (events, resets) sent.
    pub async fn flush(
        &self,
        rooms: &[RoomKey],
        max_changes: usize,
    ) -> Result<(u64, u64), redis::RedisError> {
        let mut invocation = self.flush.prepare_invoke();
        invocation.arg(&self.root).arg(&self.node).arg(max_changes);
        for room in rooms {
            invocation
                .arg(room.as_str())
                .arg(self.keys.channel(room))
                .arg(room.room());
        }
        self.redis.run_script(&invocation).await
    }

    /// Up to `limit` + 1 users of `room` after `cursor`, by id.
    pub async fn page(
        &self,
        room: &RoomKey,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<PageRows, redis::RedisError> {
        let mut invocation = self.page.prepare_invoke();
        invocation
            .arg(&self.root)
            .arg(room.as_str())
            .arg(cursor.unwrap_or(""))
            .arg(limit);
        let (users, devices, joined): (Vec<String>, Vec<Option<u64>>, Vec<Option<u64>>) =
            self.redis.run_script(&invocation).await?;
        Ok(users
            .into_iter()
            .zip(devices.into_iter().zip(joined))
            .map(|(user, (devices, joined))| {
                let devices = usize::try_from(devices.unwrap_or(0)).unwrap_or(usize::MAX);
                (user, devices, joined.unwrap_or(0))
            })
            .collect())
    }

    /// A room's (users, connections).
    pub async fn stats(&self, room: &RoomKey) -> Result<(usize, usize), redis::RedisError> {
        let r = format!("{}r:{}:", self.root, room.as_str());
        let mut pipe = redis::pipe();
        pipe.cmd("ZCARD")
            .arg(format!("{r}users"))
            .cmd("GET")
            .arg(format!("{r}conns"));
        let mut conn = self.redis.conn().await?;
        let result = pipe.query_async::<(usize, Option<i64>)>(&mut conn).await;
        let (users, conns) = self.redis.observe(result).await?;
        Ok((
            users,
            usize::try_from(conns.unwrap_or(0).max(0)).unwrap_or(0),
        ))
    }
}
