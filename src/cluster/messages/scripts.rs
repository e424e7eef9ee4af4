//! The Lua scripts behind the Redis message store: each state transition is one script, so it is atomic
//! against every other node's.
//!
//! A message is a hash `<root>msg:<id>` with the fields `id`, `seq`, `to`, `from` (absent for a backend),
//! `ev`, `data`, `key` (absent without one), `at` (accepted), `exp` (expires), `st` (status name), the
//! timestamps `sent`, `dlv`, `read`, `xp` once they happened, `nd` (receipts so far) and one `d:<device>` per
//! receipt, `<n>:<at>` (n orders the receipts). The scripts name keys from `<root>` (see
//! [`crate::cluster::keys::Keys::dm_root`]) for the records and inboxes they reach through an id.
//!
//! Every script's work is bounded: by the ids of one call (the store sends at most
//! [`super::MAX_IDS_PER_CALL`]), by one inbox (at most `inbox_max_messages` entries) or by one sweep batch.

/// Fields of a record `PENDING_LUA` reads (it is given them after its other arguments), in this order.
pub const MESSAGE_FIELDS: [&str; 9] = ["id", "seq", "to", "from", "ev", "data", "key", "at", "exp"];

/// Stores new messages in the given order, each one at the end of its recipient's inbox, or answers the one
/// stored under the same sender and idempotency key.
///
/// Replies one entry per message tried: `{0, <record fields>}` for a repeated key, `{-1}` when the inbox is
/// full of undelivered messages, `{1, seq}` when stored, and `{-2}` when the message's new id is taken — then
/// it stops, so the caller tries that message and the ones after it again under other ids and the order holds.
/// A full inbox lets its oldest delivered message go first (its record is kept for the retention).
///
/// ARGV: root, max messages, retention ms, then per message: recipient, has key (`1`/`0`), idempotency key
/// name (read only with a key), id, accepted at, expires at, the number of record field/value arguments, and
/// those pairs. The keys are named from the root (see the module doc).
pub const ACCEPT_LUA: &str = r#"
local root, max, retention = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])

local function accept(user, has_key, idem, id, at, expires, first, last)
  if has_key == '1' then
    local existing = redis.call('GET', idem)
    if existing then
      local fields = redis.call('HGETALL', root .. 'msg:' .. existing)
      if #fields > 0 then
        return {0, fields}
      end
    end
  end
  local record = root .. 'msg:' .. id
  if redis.call('EXISTS', record) == 1 then
    return {-2}
  end
  local inbox, acked = root .. 'inbox:' .. user, root .. 'acked:' .. user
  if redis.call('ZCARD', inbox) >= max then
    local oldest = redis.call('ZRANGE', acked, 0, 0)
    if #oldest == 0 then
      return {-1}
    end
    local gone = oldest[1]
    redis.call('ZREM', inbox, gone)
    redis.call('ZREM', acked, gone)
    redis.call('ZREM', root .. 'expiry', gone)
    redis.call('ZADD', root .. 'forget', tonumber(at) + retention, gone)
  end
  local counters = root .. 'seq:' .. user
  local seq = redis.call('HINCRBY', counters, 'seq', 1)
  redis.call('HINCRBY', counters, 'n', 1)
  redis.call('HSET', record, 'seq', seq, unpack(ARGV, first, last))
  redis.call('ZADD', inbox, seq, id)
  redis.call('ZADD', root .. 'expiry', expires, id)
  if has_key == '1' then
    redis.call('SET', idem, id)
  end
  return {1, seq}
end

local out = {}
local i = 4
while i <= #ARGV do
  local count = tonumber(ARGV[i + 6])
  local first = i + 7
  local last = first + count - 1
  local answer = accept(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], first, last)
  out[#out + 1] = answer
  if answer[1] == -2 then
    break
  end
  i = last + 1
end
return out
"#;

/// Marks messages sent, for one or more users; replies one change `{id, from, to, status, device, at}` per
/// message that was only accepted.
///
/// ARGV: root, then per user: the user, at, the number of ids, the ids.
pub const MARK_SENT_LUA: &str = r#"
local out = {}
local i = 2
while i <= #ARGV do
  local user, at, last = ARGV[i], ARGV[i + 1], i + 2 + tonumber(ARGV[i + 2])
  for j = i + 3, last do
    local key = ARGV[1] .. 'msg:' .. ARGV[j]
    local r = redis.call('HMGET', key, 'to', 'st', 'from')
    if r[1] == user and r[2] == 'accepted' then
      redis.call('HSET', key, 'st', 'sent', 'sent', at)
      out[#out + 1] = {ARGV[j], r[3], r[1], 'sent', false, at}
    end
  end
  i = last + 1
end
return out
"#;

/// Records devices' receipts, for one or more (user, device) pairs; replies one change per new receipt that
/// moved or kept the message at `delivered` (a receipt for a read message is kept without a change; expired
/// messages take none). A message still accepted or sent is in its inbox (only delivered ones are pushed
/// out; expiry and reading change the status), so it joins the user's acked set under its own `seq`.
///
/// ARGV: root, then per device: the user, the device, at, the number of ids, the ids.
pub const MARK_DELIVERED_LUA: &str = r#"
local out = {}
local i = 2
while i <= #ARGV do
  local user, device, at = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local last = i + 3 + tonumber(ARGV[i + 3])
  local field = 'd:' .. device
  for j = i + 4, last do
    local id = ARGV[j]
    local key = ARGV[1] .. 'msg:' .. id
    local r = redis.call('HMGET', key, 'to', 'st', 'from', field, 'nd', 'sent', 'seq')
    if r[1] == user and r[2] ~= 'expired' and not r[4] then
      local n = (tonumber(r[5]) or 0) + 1
      if r[2] == 'accepted' or r[2] == 'sent' then
        redis.call('HSET', key, field, n .. ':' .. at, 'nd', n, 'st', 'delivered', 'dlv', at, 'sent', r[6] or at)
        redis.call('ZADD', ARGV[1] .. 'acked:' .. user, r[7], id)
      else
        redis.call('HSET', key, field, n .. ':' .. at, 'nd', n)
      end
      if r[2] ~= 'read' then
        out[#out + 1] = {id, r[3], r[1], 'delivered', device, at}
      end
    end
  end
  i = last + 1
end
return out
"#;

/// Marks read every inbox message from one sender up to a message (by sequence) that is not read or expired;
/// they leave the inbox and are forgotten after the retention. Replies nil when the marker is not a message
/// of this user, else the changes.
///
/// KEYS: inbox, acked, expiry index, forget index. ARGV: root, user, sender, marker id, at, retention ms.
pub const MARK_READ_LUA: &str = r#"
local target = redis.call('HMGET', ARGV[1] .. 'msg:' .. ARGV[4], 'to', 'seq')
if target[1] ~= ARGV[2] then
  return false
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', target[2])
local forget_at = tonumber(ARGV[5]) + tonumber(ARGV[6])
local out = {}
for _, id in ipairs(ids) do
  local key = ARGV[1] .. 'msg:' .. id
  local r = redis.call('HMGET', key, 'from', 'st')
  if r[1] == ARGV[3] and r[2] ~= 'read' and r[2] ~= 'expired' then
    redis.call('HSET', key, 'st', 'read', 'read', ARGV[5])
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
    redis.call('ZADD', KEYS[4], forget_at, id)
    out[#out + 1] = {id, r[1], ARGV[2], 'read', false, ARGV[5]}
  end
end
return out
"#;

/// A device's unacknowledged inbox messages after a sequence, with the inbox's last sequence read in the same
/// step. Replies `{last_seq, {fields...}...}`, each message as the values of [`MESSAGE_FIELDS`].
///
/// KEYS: user counters, inbox. ARGV: root, device, after, limit, then [`MESSAGE_FIELDS`].
pub const PENDING_LUA: &str = r#"
local field = 'd:' .. ARGV[2]
local limit = tonumber(ARGV[4])
local last = redis.call('HGET', KEYS[1], 'seq') or '0'
local out = {}
if limit > 0 then
  local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[3], '+inf')
  for _, id in ipairs(ids) do
    local key = ARGV[1] .. 'msg:' .. id
    if redis.call('HEXISTS', key, field) == 0 then
      local values = redis.call('HMGET', key, unpack(ARGV, 5))
      if values[1] then
        out[#out + 1] = values
        if #out >= limit then
          break
        end
      end
    end
  end
end
return {last, out}
"#;

/// Inbox messages after a sequence with their whole records, oldest first. Replies one field/value list per
/// message.
///
/// KEYS: inbox. ARGV: root, since, limit.
pub const INBOX_LUA: &str = r#"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[2], '+inf', 'LIMIT', 0, ARGV[3])
local out = {}
for _, id in ipairs(ids) do
  local fields = redis.call('HGETALL', ARGV[1] .. 'msg:' .. id)
  if #fields > 0 then
    out[#out + 1] = fields
  end
end
return out
"#;

/// One batch of the sweep: inbox messages whose ttl passed leave their inbox (undelivered ones become
/// `expired`, a change), then records past their retention are deleted with their idempotency key, and a
/// user's counters once none of its records is left (so a sequence is never reused while a message that had
/// it can still be read). Replies `{entries handled, {changes...}}`.
///
/// KEYS: expiry index, forget index. ARGV: root, now, retention ms, batch size.
pub const SWEEP_LUA: &str = r#"
local root = ARGV[1]
local changes = {}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, ARGV[4])
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  local key = root .. 'msg:' .. id
  local r = redis.call('HMGET', key, 'to', 'st', 'from', 'exp')
  if r[1] then
    redis.call('ZREM', root .. 'inbox:' .. r[1], id)
    redis.call('ZREM', root .. 'acked:' .. r[1], id)
    if r[2] == 'accepted' or r[2] == 'sent' then
      redis.call('HSET', key, 'st', 'expired', 'xp', ARGV[2])
      changes[#changes + 1] = {id, r[3], r[1], 'expired', false, ARGV[2]}
    end
    redis.call('ZADD', KEYS[2], tonumber(r[4]) + tonumber(ARGV[3]), id)
  end
end
local forgotten = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[2], 'LIMIT', 0, ARGV[4])
for _, id in ipairs(forgotten) do
  redis.call('ZREM', KEYS[2], id)
  local key = root .. 'msg:' .. id
  local r = redis.call('HMGET', key, 'to', 'from', 'key')
  if r[1] then
    redis.call('DEL', key)
    if r[3] then
      local idem = root .. 'key:' .. (r[2] or '') .. '\0' .. r[3]
      if redis.call('GET', idem) == id then
        redis.call('DEL', idem)
      end
    end
    local user = root .. 'seq:' .. r[1]
    if redis.call('HINCRBY', user, 'n', -1) <= 0 and redis.call('ZCARD', root .. 'inbox:' .. r[1]) == 0 then
      redis.call('DEL', user)
    end
  end
end
return {#due + #forgotten, changes}
"#;
