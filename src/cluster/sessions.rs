//! Recoverable sessions in Redis, saved whenever they change (connect, join, leave, disconnect) so that a
//! client whose node died can resume on any other node.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::keys::Keys;
use super::Redis;
use crate::engineio::session::Sid;
use crate::recovery::{Membership, SessionRecord};

/// Writes a record unless another node owns the key now (it resumed the session meanwhile).
///
/// KEYS: the record. ARGV: the record JSON, this node's owner marker, TTL in ms.
const SAVE_LUA: &str = r#"
local current = redis.call('GET', KEYS[1])
if current and not string.find(current, ARGV[2], 1, true) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
"#;

/// A session record as stored.
#[derive(Serialize, Deserialize)]
struct Stored {
    /// Node that wrote it last: only that node may overwrite it.
    node: String,
    sid: String,
    nsp: String,
    sub: String,
    /// `[room, epoch, joined_seq]` per room.
    rooms: Vec<(String, String, u64)>,
}

/// Session records in Redis.
pub struct ClusterSessions {
    redis: Arc<Redis>,
    keys: Keys,
    node: String,
    save: redis::Script,
}

impl ClusterSessions {
    /// Records under the cluster's keys, written by node `node`.
    pub fn new(redis: Arc<Redis>, keys: Keys, node: String) -> ClusterSessions {
        ClusterSessions {
            redis,
            keys,
            node,
            save: redis::Script::new(SAVE_LUA),
        }
    }

    /// Writes a record that expires after `ttl` unless written or refreshed again.
    pub async fn save(
        &self,
        record: &SessionRecord,
        ttl: Duration,
    ) -> Result<(), redis::RedisError> {
        let stored = Stored {
            node: self.node.clone(),
            sid: record.sid.to_string(),
            nsp: record.nsp.to_string(),
            sub: record.sub.clone(),
            rooms: record
                .rooms
                .iter()
                .map(|m| (m.room.to_string(), m.epoch.to_string(), m.joined_seq))
                .collect(),
        };
        let json = serde_json::to_string(&stored).unwrap_or_default();
        let mut invocation = self.save.prepare_invoke();
        invocation
            .key(self.keys.session(&record.pid))
            .arg(json)
            .arg(format!(r#""node":"{}""#, self.node))
            .arg(ttl.as_millis().max(1) as u64);
        let written: i64 = self.redis.run_script(&invocation).await?;
        if written == 0 {
            tracing::debug!(pid = %record.pid, "session resumed elsewhere; not overwriting its record");
        }
        Ok(())
    }

    /// Removes and returns a record (once: two nodes cannot both resume a session).
    pub async fn take(
        &self,
        pid: &Sid,
        ttl: Duration,
    ) -> Result<Option<SessionRecord>, redis::RedisError> {
        let mut cmd = redis::cmd("GETDEL");
        cmd.arg(self.keys.session(pid));
        let json: Option<String> = self.redis.run(&cmd).await?;
        let Some(stored) = json.and_then(|j| serde_json::from_str::<Stored>(&j).ok()) else {
            return Ok(None);
        };
        let Some(sid) = Sid::parse(&stored.sid) else {
            return Ok(None);
        };
        Ok(Some(SessionRecord {
            pid: *pid,
            sid,
            nsp: stored.nsp.into(),
            sub: stored.sub,
            rooms: stored
                .rooms
                .into_iter()
                .map(|(room, epoch, joined_seq)| Membership {
                    room: room.into(),
                    epoch: epoch.parse().unwrap_or(0),
                    joined_seq,
                })
                .collect(),
            expires_at: Instant::now() + ttl,
        }))
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
