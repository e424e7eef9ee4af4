//! Recoverable sessions in Redis, saved whenever they change (connect, join, leave, disconnect) so that a
//! client whose node died can resume on any other node.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::keys::Keys;
use super::Redis;
use crate::engineio::session::Sid;
use crate::hub::RoomKey;
use crate::recovery::{Membership, SessionRecord};

// A record is a hash: `node` (the node that owns it: only that node may write it), `meta` (JSON
// `{sid, nsp, sub}`) and one `r:<room>` field per room, `<epoch>:<joined_seq>`. A subscribe or unsubscribe
// touches one field, not the whole record.

/// Writes a whole record unless another node owns the key now (it resumed the session meanwhile).
///
/// Every write carries the socket's write version (`v`): the writes of one socket are spawned in order but
/// may reach Redis out of order, and an older one must not undo a newer one.
///
/// KEYS: the record. ARGV: this node, meta JSON, TTL in ms, version, then field/value pairs of the rooms.
const SAVE_LUA: &str = r#"
local owner = redis.call('HGET', KEYS[1], 'node')
if owner and owner ~= ARGV[1] then
  return 0
end
if tonumber(redis.call('HGET', KEYS[1], 'v') or '0') >= tonumber(ARGV[4]) then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'node', ARGV[1], 'meta', ARGV[2], 'v', ARGV[4])
for i = 5, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"#;

/// Adds (ARGV[4] given) or removes one room of a record this node owns. 0 when the record is gone or owned
/// by another node (-1 when this write is older than the record).
///
/// KEYS: the record. ARGV: this node, version, the room field, its value (absent to remove).
const ROOM_LUA: &str = r#"
if redis.call('HGET', KEYS[1], 'node') ~= ARGV[1] then
  return 0
end
if tonumber(redis.call('HGET', KEYS[1], 'v') or '0') >= tonumber(ARGV[2]) then
  return -1
end
redis.call('HSET', KEYS[1], 'v', ARGV[2])
if ARGV[4] then
  redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
else
  redis.call('HDEL', KEYS[1], ARGV[3])
end
return 1
"#;

/// Removes and returns a record, only if it belongs to the given namespace and user; a record of anyone else
/// is left as it is and answered with `mismatch`.
///
/// KEYS: the record. ARGV: namespace, user.
const TAKE_LUA: &str = r#"
local meta = redis.call('HGET', KEYS[1], 'meta')
if not meta then
  return false
end
local ok, decoded = pcall(cjson.decode, meta)
if not ok or decoded.nsp ~= ARGV[1] or decoded.sub ~= ARGV[2] then
  return 'mismatch'
end
local fields = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return fields
"#;

/// The `meta` field of a record.
#[derive(Serialize, Deserialize)]
struct Meta {
    sid: String,
    nsp: String,
    sub: String,
}

/// Field name of a room in a record.
fn room_field(room: &str) -> String {
    format!("r:{room}")
}

/// Field value of a room in a record.
fn room_value(membership: &Membership) -> String {
    format!("{}:{}", membership.epoch, membership.joined_seq)
}

/// Why a record could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum TakeError {
    /// No such record (never existed, expired, or already taken).
    #[error("unknown session")]
    Unknown,
    /// The record belongs to another namespace or user; it was left in place.
    #[error("session belongs to another namespace or user")]
    Mismatch,
    /// Redis could not be asked.
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

/// A record read back from its hash fields; None when it is not one this code wrote.
fn record_from_fields(
    pid: Sid,
    fields: Vec<(String, String)>,
    ttl: Duration,
) -> Option<SessionRecord> {
    let mut meta = None;
    let mut rooms = Vec::new();
    for (field, value) in &fields {
        if field == "meta" {
            meta = serde_json::from_str::<Meta>(value).ok();
        }
    }
    let meta = meta?;
    for (field, value) in &fields {
        if let Some(room) = field.strip_prefix("r:") {
            let (epoch, joined_seq) = value.split_once(':')?;
            rooms.push(Membership {
                key: RoomKey::new(&meta.nsp, room),
                epoch: epoch.parse().ok()?,
                joined_seq: joined_seq.parse().ok()?,
            });
        }
    }
    Some(SessionRecord {
        pid,
        sid: Sid::parse(&meta.sid)?,
        nsp: meta.nsp.into(),
        sub: meta.sub,
        rooms,
        expires_at: Instant::now() + ttl,
    })
}

/// Session records in Redis.
pub struct ClusterSessions {
    redis: Arc<Redis>,
    keys: Keys,
    node: String,
    save: redis::Script,
    room: redis::Script,
    take: redis::Script,
}

impl ClusterSessions {
    /// Records under the cluster's keys, written by node `node`.
    pub fn new(redis: Arc<Redis>, keys: Keys, node: String) -> ClusterSessions {
        ClusterSessions {
            redis,
            keys,
            node,
            save: redis::Script::new(SAVE_LUA),
            room: redis::Script::new(ROOM_LUA),
            take: redis::Script::new(TAKE_LUA),
        }
    }

    /// Writes a record that expires after `ttl` unless written or refreshed again.
    pub async fn save(
        &self,
        record: &SessionRecord,
        version: u64,
        ttl: Duration,
    ) -> Result<(), redis::RedisError> {
        let meta = Meta {
            sid: record.sid.to_string(),
            nsp: record.nsp.to_string(),
            sub: record.sub.clone(),
        };
        let mut invocation = self.save.prepare_invoke();
        invocation
            .key(self.keys.session(&record.pid))
            .arg(&self.node)
            .arg(serde_json::to_string(&meta).unwrap_or_default())
            .arg(ttl.as_millis().max(1) as u64)
            .arg(version);
        for membership in &record.rooms {
            invocation
                .arg(room_field(membership.room()))
                .arg(room_value(membership));
        }
        let written: i64 = self.redis.run_script(&invocation).await?;
        if written == 0 {
            tracing::debug!(pid = %record.pid, "session resumed elsewhere or saved newer; not overwriting its record");
        }
        Ok(())
    }

    /// Adds one room to the record of a session this node owns; false when there is no such record (the
    /// caller then writes it whole). `version` orders this write among the socket's others.
    pub async fn add_room(
        &self,
        pid: &Sid,
        version: u64,
        membership: &Membership,
    ) -> Result<bool, redis::RedisError> {
        let mut invocation = self.room.prepare_invoke();
        invocation
            .key(self.keys.session(pid))
            .arg(&self.node)
            .arg(version)
            .arg(room_field(membership.room()))
            .arg(room_value(membership));
        Ok(self.redis.run_script::<i64>(&invocation).await? != 0)
    }

    /// Removes one room from the record of a session this node owns.
    pub async fn remove_room(
        &self,
        pid: &Sid,
        version: u64,
        room: &str,
    ) -> Result<(), redis::RedisError> {
        let mut invocation = self.room.prepare_invoke();
        invocation
            .key(self.keys.session(pid))
            .arg(&self.node)
            .arg(version)
            .arg(room_field(room));
        self.redis.run_script::<i64>(&invocation).await.map(drop)
    }

    /// Removes and returns the record of `pid` (once: two nodes cannot both resume a session), but only
    /// when it belongs to namespace `nsp` and user `sub`: anyone else's record is left untouched.
    pub async fn take(
        &self,
        pid: &Sid,
        nsp: &str,
        sub: &str,
        ttl: Duration,
    ) -> Result<SessionRecord, TakeError> {
        let mut invocation = self.take.prepare_invoke();
        invocation.key(self.keys.session(pid)).arg(nsp).arg(sub);
        let reply: redis::Value = self.redis.run_script(&invocation).await?;
        let fields: Vec<(String, String)> = match reply {
            redis::Value::Nil => return Err(TakeError::Unknown),
            redis::Value::SimpleString(_) | redis::Value::BulkString(_) => {
                return Err(TakeError::Mismatch)
            }
            other => redis::from_redis_value(&other)?,
        };
        record_from_fields(*pid, fields, ttl).ok_or(TakeError::Unknown)
    }

    /// Deletes a record (a deliberate disconnect).
    pub async fn remove(&self, pid: &Sid) -> Result<(), redis::RedisError> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.keys.session(pid));
        self.redis.run::<()>(&cmd).await
    }

    /// Extends the records of sessions still connected here.
    pub async fn refresh(&self, pids: &[Sid], ttl: Duration) -> Result<(), redis::RedisError> {
        for chunk in pids.chunks(500) {
            let mut pipe = redis::pipe();
            for pid in chunk {
                pipe.cmd("PEXPIRE")
                    .arg(self.keys.session(pid))
                    .arg(ttl.as_millis().max(1) as u64)
                    .ignore();
            }
            let mut conn = self.redis.conn().await?;
            let result = pipe.query_async::<()>(&mut conn).await;
            self.redis.observe(result).await?;
        }
        Ok(())
    }
}
