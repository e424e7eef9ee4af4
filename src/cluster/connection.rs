//! Connections to Redis: a plain server (`redis://…`) or a master found through Sentinel
//! (`redis+sentinel://host:port[,host:port…]/master-name`). Command connections are shared and re-made (and
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
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisTarget::Direct(client) => write!(f, "redis {}", client.get_connection_info().addr),
            RedisTarget::Sentinel { sentinels, master } => {
                write!(f, "sentinel {sentinels:?} master {master}")
            }
        }
    }
}

impl RedisTarget {
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
