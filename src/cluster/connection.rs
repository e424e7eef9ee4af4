//! Connections to Redis: a plain server (`redis://…`), a master found through Sentinel
//! (`redis+sentinel://host:port[,host:port…]/master-name`), or the Redis Cluster master that serves one hash slot
//! (`redis+cluster://host:port[,host:port…]`, asked with `CLUSTER SLOTS` at every connect). Command connections are shared and re-made (and
//! the master re-resolved) after any connection-level error, so a Sentinel failover is followed.

use std::time::Duration;

use redis::aio::{MultiplexedConnection, PubSub};
use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::{AsyncConnectionConfig, Client, RedisError};

/// Time allowed for one Redis command before it counts as failed.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
/// Time allowed to open a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a Redis URL is not usable.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The URL could not be parsed.
    #[error("invalid redis url '{url}': {detail}")]
    Invalid {
        /// The URL as given (without password).
        url: String,
        /// What is wrong.
        detail: String,
    },
}

/// Where the Redis master is.
#[derive(Clone)]
pub enum RedisTarget {
    /// One server.
    Direct(Client),
    /// A master monitored by Sentinels.
    Sentinel {
        /// `redis://host:port` of each Sentinel.
        sentinels: Vec<String>,
        /// The monitored master's name.
        master: String,
    },
    /// The master of one hash slot of a Redis Cluster.
    ClusterSlot {
        /// `redis://host:port` of the cluster nodes asked where the slot is.
        seeds: Vec<String>,
        /// The hash slot (every key this connection is used for hashes there: see [`slot_of`]).
        slot: u16,
    },
}

/// Hash slots of a Redis Cluster.
const SLOTS: u16 = 16_384;

/// The Redis Cluster hash slot of `key`: CRC16 (XMODEM) of its hash tag (the text between the first `{` and the
/// next `}`, when not empty) or of the whole key, modulo 16384.
pub fn slot_of(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|b| *b == b'{').and_then(|open| {
        let close = bytes[open + 1..].iter().position(|b| *b == b'}')?;
        (close > 0).then(|| &bytes[open + 1..open + 1 + close])
    });
    crc16(tagged.unwrap_or(bytes)) % SLOTS
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for byte in bytes {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisTarget::Direct(client) => write!(f, "redis {}", client.get_connection_info().addr),
            RedisTarget::Sentinel { sentinels, master } => {
                write!(f, "sentinel {sentinels:?} master {master}")
            }
            RedisTarget::ClusterSlot { seeds, slot } => {
                write!(f, "cluster {seeds:?} slot {slot}")
            }
        }
    }
}

impl RedisTarget {
    /// Whether `url` names a Redis Cluster (`redis+cluster://…`).
    pub fn is_cluster_url(url: &str) -> bool {
        url.starts_with("redis+cluster://")
    }

    /// The master serving the slot of hash tag `tag` in the Redis Cluster of `url` (`redis+cluster://h1:p1,…`).
    pub fn cluster_slot(url: &str, tag: &str) -> Result<RedisTarget, TargetError> {
        let invalid = |detail: &str| TargetError::Invalid {
            url: url.split('@').next_back().unwrap_or(url).to_owned(),
            detail: detail.to_owned(),
        };
        let hosts = url
            .strip_prefix("redis+cluster://")
            .map(|rest| rest.trim_end_matches('/'))
            .filter(|hosts| !hosts.is_empty() && !hosts.contains('/'))
            .ok_or_else(|| invalid("expected redis+cluster://host:port[,host:port]"))?;
        Ok(RedisTarget::ClusterSlot {
            seeds: hosts.split(',').map(|h| format!("redis://{h}")).collect(),
            slot: slot_of(&format!("{{{tag}}}")),
        })
    }

    /// Parses `redis://…`, `rediss://…`, `unix://…` or `redis+sentinel://h1:p1,h2:p2/master`.
    pub fn parse(url: &str) -> Result<RedisTarget, TargetError> {
        let invalid = |detail: &str| TargetError::Invalid {
            url: url.split('@').next_back().unwrap_or(url).to_owned(),
            detail: detail.to_owned(),
        };
        if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            let (hosts, master) = rest.split_once('/').ok_or_else(|| {
                invalid("expected redis+sentinel://host:port[,host:port]/master-name")
            })?;
            let master = master.trim_end_matches('/');
            if master.is_empty() || hosts.is_empty() {
                return Err(invalid(
                    "expected redis+sentinel://host:port[,host:port]/master-name",
                ));
            }
            let sentinels = hosts.split(',').map(|h| format!("redis://{h}")).collect();
            return Ok(RedisTarget::Sentinel {
                sentinels,
                master: master.to_owned(),
            });
        }
        Client::open(url)
            .map(RedisTarget::Direct)
            .map_err(|e| invalid(&e.to_string()))
    }

    /// A client for the current master (asks the Sentinels each time).
    pub async fn client(&self) -> Result<Client, RedisError> {
        match self {
            RedisTarget::Direct(client) => Ok(client.clone()),
            RedisTarget::Sentinel { sentinels, master } => {
                let mut sentinel = SentinelClient::build(
                    sentinels.clone(),
                    master.clone(),
                    None,
                    SentinelServerType::Master,
                )?;
                sentinel.async_get_client().await
            }
            RedisTarget::ClusterSlot { seeds, slot } => slot_master(seeds, *slot).await,
        }
    }

    /// A new multiplexed command connection to the current master.
    pub async fn connect(&self) -> Result<MultiplexedConnection, RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT);
        let client = self.client().await?;
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        ensure_master(&mut conn).await?;
        Ok(conn)
    }

    /// A new pub/sub connection to the current master.
    pub async fn pubsub(&self) -> Result<PubSub, RedisError> {
        let client = self.client().await?;
        tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub())
            .await
            .map_err(|_| RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))?
    }
}

/// A client for the master serving `slot`, asking each seed in turn.
async fn slot_master(seeds: &[String], slot: u16) -> Result<Client, RedisError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(CONNECT_TIMEOUT)
        .set_response_timeout(RESPONSE_TIMEOUT);
    let mut last = RedisError::from((redis::ErrorKind::ClientError, "no cluster seed"));
    for seed in seeds {
        let answer = async {
            let mut conn = Client::open(seed.as_str())?
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            let ranges: Vec<(u16, u16, (String, u16))> = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async::<Vec<redis::Value>>(&mut conn)
                .await?
                .iter()
                .filter_map(slot_range)
                .collect();
            ranges
                .into_iter()
                .find(|(first, last, _)| (*first..=*last).contains(&slot))
                .map(|(_, _, (host, port))| Client::open(format!("redis://{host}:{port}")))
                .unwrap_or_else(|| {
                    Err(RedisError::from((
                        redis::ErrorKind::ClusterDown,
                        "no master serves the slot",
                    )))
                })
        };
        match answer.await {
            Ok(client) => return Ok(client),
            Err(error) => last = error,
        }
    }
    Err(last)
}

/// One `CLUSTER SLOTS` entry: first slot, last slot, and the master's host and port.
fn slot_range(entry: &redis::Value) -> Option<(u16, u16, (String, u16))> {
    let redis::Value::Array(fields) = entry else {
        return None;
    };
    let first: u16 = redis::from_redis_value(fields.first()?).ok()?;
    let last: u16 = redis::from_redis_value(fields.get(1)?).ok()?;
    let redis::Value::Array(master) = fields.get(2)? else {
        return None;
    };
    let host: String = redis::from_redis_value(master.first()?).ok()?;
    let port: u16 = redis::from_redis_value(master.get(1)?).ok()?;
    Some((first, last, (host, port)))
}

/// Refuses a server that is not a master (a demoted master right after a failover).
async fn ensure_master(conn: &mut MultiplexedConnection) -> Result<(), RedisError> {
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(conn).await?;
    match role.first() {
        Some(redis::Value::BulkString(kind)) if kind.as_slice() == b"master" => Ok(()),
        _ => Err(RedisError::from((
            redis::ErrorKind::ReadOnly,
            "not a master",
        ))),
    }
}

/// A shared command connection, re-made after connection errors.
pub struct Redis {
    target: RedisTarget,
    current: tokio::sync::Mutex<Option<MultiplexedConnection>>,
}

impl Redis {
    /// A handle that connects on first use.
    pub fn new(target: RedisTarget) -> Redis {
        Redis {
            target,
            current: tokio::sync::Mutex::new(None),
        }
    }

    /// Where it connects.
    pub fn target(&self) -> &RedisTarget {
        &self.target
    }

    /// The shared connection, connecting if needed.
    pub async fn conn(&self) -> Result<MultiplexedConnection, RedisError> {
        let mut current = self.current.lock().await;
        if let Some(conn) = current.as_ref() {
            return Ok(conn.clone());
        }
        let conn = self.target.connect().await?;
        *current = Some(conn.clone());
        Ok(conn)
    }

    /// Drops the shared connection after an error that may mean it is broken or points at a replica.
    pub async fn invalidate(&self, error: &RedisError) {
        if error.is_io_error()
            || error.is_timeout()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
            || error.kind() == redis::ErrorKind::ReadOnly
        {
            self.current.lock().await.take();
        }
    }

    /// Runs a command once, invalidating the connection on failure.
    pub async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, RedisError> {
        let mut conn = self.conn().await?;
        let started = std::time::Instant::now();
        let result = cmd.query_async(&mut conn).await;
        metrics::histogram!("tidings_redis_command_seconds", "kind" => "command")
            .record(started.elapsed().as_secs_f64());
        self.observe(result).await
    }

    /// Runs a script once, invalidating the connection on failure.
    pub async fn run_script<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, RedisError> {
        let mut conn = self.conn().await?;
        let started = std::time::Instant::now();
        let result = invocation.invoke_async(&mut conn).await;
        metrics::histogram!("tidings_redis_command_seconds", "kind" => "script")
            .record(started.elapsed().as_secs_f64());
        self.observe(result).await
    }

    /// Passes a result through, dropping the shared connection first if the error says it is unusable.
    pub async fn observe<T>(&self, result: Result<T, RedisError>) -> Result<T, RedisError> {
        if let Err(error) = &result {
            metrics::counter!("tidings_redis_errors_total", "kind" => error_kind(error))
                .increment(1);
            self.invalidate(error).await;
        }
        result
    }
}

/// A short label for a Redis error, for `tidings_redis_errors_total{kind}`.
fn error_kind(error: &RedisError) -> &'static str {
    if error.is_timeout() {
        "timeout"
    } else if error.is_connection_refusal() || error.is_connection_dropped() || error.is_io_error()
    {
        "connection"
    } else if error.kind() == redis::ErrorKind::ReadOnly {
        "read_only"
    } else {
        "reply"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_slots_follow_redis_cluster() {
        // Values CLUSTER KEYSLOT gives.
        assert_eq!(slot_of("foo"), 12182);
        assert_eq!(slot_of("123456789"), 12739);
        assert_eq!(
            slot_of("{user1000}.following"),
            slot_of("{user1000}.followers")
        );
        assert_eq!(slot_of("{tidings}:session:x"), slot_of("tidings"));
        // An empty tag hashes the whole key.
        assert_eq!(slot_of("{}x"), crc16(b"{}x") % SLOTS);
        match RedisTarget::cluster_slot(
            "redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
            "tidings:p2",
        )
        .unwrap()
        {
            RedisTarget::ClusterSlot { seeds, slot } => {
                assert_eq!(seeds, ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]);
                assert_eq!(slot, slot_of("tidings:p2"));
            }
            other => panic!("{other:?}"),
        }
        assert!(RedisTarget::cluster_slot("redis+cluster://", "t").is_err());
        assert!(RedisTarget::cluster_slot("redis+cluster://h:1/x", "t").is_err());
    }

    #[test]
    fn parses_urls() {
        assert!(matches!(
            RedisTarget::parse("redis://127.0.0.1:6379"),
            Ok(RedisTarget::Direct(_))
        ));
        match RedisTarget::parse("redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster")
            .unwrap()
        {
            RedisTarget::Sentinel { sentinels, master } => {
                assert_eq!(
                    sentinels,
                    vec!["redis://127.0.0.1:26379", "redis://127.0.0.1:26380"]
                );
                assert_eq!(master, "mymaster");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(RedisTarget::parse("redis+sentinel://127.0.0.1:26379").is_err());
        assert!(RedisTarget::parse("nonsense").is_err());
    }
}
