//! The node registry in Redis: every node advertises its id (the tag at the start of its session ids), URL and
//! load under a key that a heartbeat keeps alive, so the live nodes can be listed, the least-loaded one picked
//! for a new client, and a session's owner found from its session id.
//!
//! Keys: `{prefix}:nodes` (set of ids) and `{prefix}:node:{id}` (JSON [`NodeEntry`], expiring after about
//! three missed beats). A dead node needs no cleanup: its entry expires, and readers drop its id from the set.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::keys::Keys;
use super::Redis;
use crate::engineio::session::NodeTag;
use crate::load::{LoadMeter, NodeLoad};

/// Time between two heartbeats.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// Lifetime of a node's entry without a new beat: about three missed heartbeats.
pub const ENTRY_TTL: Duration = Duration::from_millis(6500);
/// How long owner URLs read from Redis are trusted without asking again.
const URL_CACHE_TTL: Duration = Duration::from_secs(2);
/// Least time between two reads caused by cache misses, so requests naming a dead node do not hammer Redis.
const MIN_REFRESH_GAP: Duration = Duration::from_millis(250);
/// First retry delay after a failed heartbeat; it doubles up to [`HEARTBEAT_INTERVAL`].
const FIRST_RETRY: Duration = Duration::from_millis(250);
/// Least time between two warnings about a failing heartbeat.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// Drops from the node set the ids whose entry is gone, checking each again inside Redis so a node that beat
/// since the read is left alone. KEYS[1] = node set, KEYS[2..] = entry keys; ARGV = the matching ids.
const FORGET_EXPIRED: &str = r"
for i, id in ipairs(ARGV) do
  if redis.call('EXISTS', KEYS[i + 1]) == 0 then
    redis.call('SREM', KEYS[1], id)
  end
end
return 0";

/// This node's current number of connections.
pub type ConnectionCount = Arc<dyn Fn() -> usize + Send + Sync>;

/// Why the registry could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Redis refused the command or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// An entry could not be encoded.
    #[error("cannot encode node entry: {0}")]
    Encode(#[from] serde_json::Error),
}

/// What a node advertises about itself, fixed for its lifetime.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// The tag at the start of this node's session ids.
    pub id: NodeTag,
    /// Base URL at which other nodes (and new clients) reach this node directly.
    pub url: String,
    /// Connections this node accepts (`limits.max_connections`).
    pub max_connections: usize,
    /// Start time, milliseconds since the Unix epoch.
    pub started_at: u64,
}

impl NodeInfo {
    /// A node starting now.
    pub fn new(id: NodeTag, url: impl Into<String>, max_connections: usize) -> NodeInfo {
        NodeInfo {
            id,
            url: url.into(),
            max_connections,
            started_at: unix_millis(),
        }
    }

    /// This node's entry with `connections` open, beating now.
    pub fn entry(&self, connections: usize) -> NodeEntry {
        NodeEntry {
            id: self.id.as_str().to_owned(),
            url: self.url.clone(),
            connections,
            max_connections: self.max_connections,
            started_at: self.started_at,
            last_beat: unix_millis(),
            draining: false,
            load: NodeLoad::default(),
        }
    }
}

/// One live node as the registry holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeEntry {
    /// Node id (its session-id tag).
    pub id: String,
    /// Base URL of the node.
    pub url: String,
    /// Connections open at the last beat.
    pub connections: usize,
    /// Connections the node accepts.
    pub max_connections: usize,
    /// Start time, milliseconds since the Unix epoch.
    pub started_at: u64,
    /// Time of the last beat, milliseconds since the Unix epoch.
    pub last_beat: u64,
    /// The node drains (SIGTERM): it serves its clients until they are moved but takes no new ones.
    #[serde(default)]
    pub draining: bool,
    /// Events, deliveries, CPU and memory over the last beat's interval.
    #[serde(default)]
    pub load: NodeLoad,
}

impl NodeEntry {
    /// Whether the node still takes new connections.
    pub fn has_room(&self) -> bool {
        !self.draining && self.connections < self.max_connections
    }
}

/// The node a new client should use: fewest connections; on a tie, the lowest share of its maximum, then the
/// smallest id. Nodes at their maximum and draining nodes are skipped.
pub fn least_loaded(nodes: &[NodeEntry]) -> Option<&NodeEntry> {
    nodes.iter().filter(|n| n.has_room()).min_by(|a, b| {
        // a.connections / a.max < b.connections / b.max, without floats.
        let share_a = a.connections as u128 * b.max_connections as u128;
        let share_b = b.connections as u128 * a.max_connections as u128;
        a.connections
            .cmp(&b.connections)
            .then(share_a.cmp(&share_b))
            .then_with(|| a.id.cmp(&b.id))
    })
}

/// Owner URLs by node tag, as last read from Redis.
#[derive(Default)]
struct UrlCache {
    urls: HashMap<NodeTag, String>,
    /// When `urls` was last read successfully.
    fetched: Option<Instant>,
    /// When a read was last tried (successful or not).
    attempted: Option<Instant>,
}

/// This node's view of the cluster's nodes, and its own heartbeat.
pub struct Registry {
    redis: Arc<Redis>,
    keys: Keys,
    me: NodeInfo,
    connections: OnceLock<ConnectionCount>,
    heartbeat: Mutex<Option<tokio::task::JoinHandle<()>>>,
    cache: Mutex<UrlCache>,
    /// Held while reading the nodes after a cache miss, so concurrent misses cause one read.
    refresh: tokio::sync::Mutex<()>,
    /// Set by [`Registry::mark_draining`].
    draining: std::sync::atomic::AtomicBool,
    /// This node's load between two beats.
    meter: LoadMeter,
    /// The load the last beat advertised.
    last_load: Mutex<NodeLoad>,
}

impl Registry {
    /// A registry under `{prefix}:` for the node `me`; nothing is written until [`Registry::spawn_heartbeat`].
    pub fn new(redis: Arc<Redis>, prefix: String, me: NodeInfo) -> Registry {
        Registry {
            redis,
            keys: Keys::new(&prefix),
            me,
            connections: OnceLock::new(),
            heartbeat: Mutex::new(None),
            cache: Mutex::new(UrlCache::default()),
            refresh: tokio::sync::Mutex::new(()),
            draining: std::sync::atomic::AtomicBool::new(false),
            meter: LoadMeter::default(),
            last_load: Mutex::new(NodeLoad::default()),
        }
    }

    /// This node's entry with `connections` open, its draining state and the load it last measured.
    fn my_entry(&self, connections: usize) -> NodeEntry {
        NodeEntry {
            draining: self.draining.load(std::sync::atomic::Ordering::Acquire),
            load: *self.last_load.lock(),
            ..self.me.entry(connections)
        }
    }

    /// Advertises this node as draining at once (it stays listed, so requests for its sessions still find it,
    /// but [`least_loaded`] skips it); [`Registry::deregister`] removes it when it is empty.
    pub async fn mark_draining(&self) -> Result<(), RegistryError> {
        self.draining
            .store(true, std::sync::atomic::Ordering::Release);
        let connections = self.connections.get().map_or(0, |count| count());
        self.beat(connections).await
    }

    /// This node.
    pub fn me(&self) -> &NodeInfo {
        &self.me
    }

    /// Starts advertising this node every [`HEARTBEAT_INTERVAL`] with the count `connections` gives. Redis
    /// failures are logged and retried; the task ends with the registry or [`Registry::stop_heartbeat`].
    pub fn spawn_heartbeat(self: &Arc<Self>, connections: ConnectionCount) {
        let _ = self.connections.set(connections.clone());
        let task = tokio::spawn(heartbeat_loop(Arc::downgrade(self), connections));
        if let Some(old) = self.heartbeat.lock().replace(task) {
            old.abort();
        }
    }

    /// Stops the heartbeat without removing the entry, which then expires after [`ENTRY_TTL`] as if the node had
    /// crashed. [`Registry::deregister`] is the graceful way out.
    pub fn stop_heartbeat(&self) {
        if let Some(task) = self.heartbeat.lock().take() {
            task.abort();
        }
    }

    fn heartbeating(&self) -> bool {
        self.heartbeat
            .lock()
            .as_ref()
            .is_some_and(|task| !task.is_finished())
    }

    /// Stops the heartbeat and removes this node's entry at once (graceful shutdown).
    pub async fn deregister(&self) -> Result<(), RegistryError> {
        self.stop_heartbeat();
        let id = self.me.id.as_str();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("DEL")
            .arg(self.keys.node(id))
            .ignore()
            .cmd("SREM")
            .arg(self.keys.nodes())
            .arg(id)
            .ignore();
        self.run_pipe(&pipe).await?;
        tracing::info!(node = %self.me.id, "left the node registry");
        Ok(())
    }

    /// Writes this node's entry with a fresh expiry and makes sure its id is in the node set.
    async fn beat(&self, connections: usize) -> Result<(), RegistryError> {
        let id = self.me.id.as_str();
        *self.last_load.lock() = self.meter.sample();
        let entry = serde_json::to_string(&self.my_entry(connections))?;
        let ttl_ms = u64::try_from(ENTRY_TTL.as_millis()).unwrap_or(u64::MAX);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(self.keys.node(id))
            .arg(entry)
            .arg("PX")
            .arg(ttl_ms)
            .ignore()
            .cmd("SADD")
            .arg(self.keys.nodes())
            .arg(id)
            .ignore();
        self.run_pipe(&pipe).await?;
        Ok(())
    }

    /// The cluster's key names.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Runs `pipe` on the registry's Redis connection and reads its replies.
    pub async fn run_query<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, RegistryError> {
        let mut conn = self.redis.conn().await?;
        let result = pipe.query_async::<T>(&mut conn).await;
        Ok(self.redis.observe(result).await?)
    }

    async fn run_pipe(&self, pipe: &redis::Pipeline) -> Result<(), redis::RedisError> {
        let mut conn = self.redis.conn().await?;
        let result = pipe.query_async::<()>(&mut conn).await;
        self.redis.observe(result).await
    }

    /// The live nodes, sorted by id. While this node's heartbeat runs it is always listed, with its current
    /// connection count (it is alive: it is answering).
    pub async fn live_nodes(&self) -> Result<Vec<NodeEntry>, RegistryError> {
        let mut nodes = self.read_nodes().await?;
        if let Some(count) = self.connections.get().filter(|_| self.heartbeating()) {
            let me = self.my_entry(count());
            nodes.retain(|n| n.id != me.id);
            nodes.push(me);
            nodes.sort_by(|a, b| a.id.cmp(&b.id));
        }
        Ok(nodes)
    }

    /// The least-loaded live node with room for a new connection (see [`least_loaded`]).
    pub async fn pick(&self) -> Result<Option<NodeEntry>, RegistryError> {
        Ok(least_loaded(&self.live_nodes().await?).cloned())
    }

    /// The nodes whose entry is in Redis, sorted by id; refreshes the URL cache and forgets expired ids.
    async fn read_nodes(&self) -> Result<Vec<NodeEntry>, RegistryError> {
        let ids: Vec<String> = self
            .redis
            .run(redis::cmd("SMEMBERS").arg(self.keys.nodes()))
            .await?;
        let mut nodes = Vec::with_capacity(ids.len());
        if !ids.is_empty() {
            let keys: Vec<String> = ids.iter().map(|id| self.keys.node(id)).collect();
            let values: Vec<Option<String>> = self.redis.run(redis::cmd("MGET").arg(&keys)).await?;
            let mut expired = Vec::new();
            for (id, value) in ids.into_iter().zip(values) {
                match value.map(|json| serde_json::from_str::<NodeEntry>(&json)) {
                    Some(Ok(entry)) => nodes.push(entry),
                    Some(Err(error)) => {
                        tracing::warn!(node = %id, %error, "unreadable node registry entry")
                    }
                    None => expired.push(id),
                }
            }
            self.forget_expired(&expired).await;
        }
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        let urls = nodes
            .iter()
            .filter_map(|n| Some((NodeTag::parse(&n.id)?, n.url.clone())))
            .collect();
        let mut cache = self.cache.lock();
        cache.urls = urls;
        cache.fetched = Some(Instant::now());
        Ok(nodes)
    }

    async fn forget_expired(&self, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        let script = redis::Script::new(FORGET_EXPIRED);
        let mut invocation = script.key(self.keys.nodes());
        for id in ids {
            invocation.key(self.keys.node(id)).arg(id);
        }
        match self.redis.run_script::<i64>(&invocation).await {
            Ok(_) => tracing::debug!(nodes = ?ids, "dropped expired nodes from the registry"),
            Err(error) => tracing::debug!(%error, "could not drop expired nodes from the registry"),
        }
    }

    /// The URL of the live node with this tag. Answers from a cache of at most a couple of seconds; a miss or a
    /// stale cache reads Redis again (at most one read at a time, and not more often than every 250 ms). When
    /// Redis cannot be read, the last known URL is used.
    pub async fn url_of(&self, tag: NodeTag) -> Option<String> {
        if let Some(url) = self.cached_url(tag, URL_CACHE_TTL) {
            return Some(url);
        }
        let _reading = self.refresh.lock().await;
        {
            let cache = self.cache.lock();
            let fresh = cache.fetched.is_some_and(|at| at.elapsed() < URL_CACHE_TTL);
            let recently_tried = cache
                .attempted
                .is_some_and(|at| at.elapsed() < MIN_REFRESH_GAP);
            if (fresh && cache.urls.contains_key(&tag)) || recently_tried {
                return cache.urls.get(&tag).cloned();
            }
        }
        self.cache.lock().attempted = Some(Instant::now());
        if let Err(error) = self.read_nodes().await {
            tracing::warn!(%error, owner = %tag, "cannot read the node registry; using the last known nodes");
        }
        self.cache.lock().urls.get(&tag).cloned()
    }

    fn cached_url(&self, tag: NodeTag, max_age: Duration) -> Option<String> {
        let cache = self.cache.lock();
        cache
            .fetched
            .filter(|at| at.elapsed() < max_age)
            .and_then(|_| cache.urls.get(&tag).cloned())
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("prefix", &self.keys.prefix())
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

/// Beats until the registry is dropped or the task aborted; never gives up on Redis errors.
async fn heartbeat_loop(registry: Weak<Registry>, connections: ConnectionCount) {
    let mut failures: u32 = 0;
    let mut last_warning: Option<Instant> = None;
    loop {
        let Some(strong) = registry.upgrade() else {
            return;
        };
        let result = strong.beat(connections()).await;
        let node = strong.me.id;
        drop(strong);
        let delay = match result {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(%node, failures, "node registry heartbeat recovered");
                }
                failures = 0;
                HEARTBEAT_INTERVAL
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                if last_warning.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    tracing::warn!(%node, %error, failures, "node registry heartbeat failed; retrying");
                    last_warning = Some(Instant::now());
                }
                retry_delay(failures)
            }
        };
        tokio::time::sleep(delay).await;
    }
}

/// Delay before the next beat after `failures` failed ones in a row: 250 ms, 500 ms, 1 s, then 2 s.
fn retry_delay(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(8);
    (FIRST_RETRY * 2u32.pow(exponent)).min(HEARTBEAT_INTERVAL)
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, connections: usize, max_connections: usize) -> NodeEntry {
        NodeEntry {
            id: id.into(),
            url: format!("http://{id}"),
            connections,
            max_connections,
            started_at: 0,
            last_beat: 0,
            draining: false,
            load: NodeLoad::default(),
        }
    }

    #[test]
    fn skips_draining_nodes() {
        let draining = NodeEntry {
            draining: true,
            ..node("a", 0, 10)
        };
        let nodes = [draining.clone(), node("b", 9, 10)];
        assert_eq!(least_loaded(&nodes).unwrap().id, "b");
        assert_eq!(least_loaded(&[draining]), None);
    }

    #[test]
    fn entries_of_older_nodes_still_read() {
        let old = r#"{"id":"a","url":"http://x","connections":1,"max_connections":2,"started_at":1,"last_beat":2}"#;
        let entry: NodeEntry = serde_json::from_str(old).unwrap();
        assert!(!entry.draining);
        assert_eq!(entry.load, NodeLoad::default());
    }

    #[test]
    fn picks_fewest_connections_then_lowest_share_then_id() {
        let nodes = [node("a", 5, 10), node("b", 3, 10), node("c", 4, 10)];
        assert_eq!(least_loaded(&nodes).unwrap().id, "b");
        let nodes = [node("a", 3, 10), node("b", 3, 100)];
        assert_eq!(least_loaded(&nodes).unwrap().id, "b");
        let nodes = [node("b", 3, 10), node("a", 3, 10)];
        assert_eq!(least_loaded(&nodes).unwrap().id, "a");
    }

    #[test]
    fn skips_full_nodes() {
        let nodes = [node("a", 2, 2), node("b", 9, 10)];
        assert_eq!(least_loaded(&nodes).unwrap().id, "b");
        assert_eq!(least_loaded(&[node("a", 2, 2)]), None);
        assert_eq!(least_loaded(&[]), None);
    }

    #[test]
    fn retries_back_off_to_the_beat_interval() {
        assert_eq!(retry_delay(1), Duration::from_millis(250));
        assert_eq!(retry_delay(2), Duration::from_millis(500));
        assert_eq!(retry_delay(3), Duration::from_secs(1));
        assert_eq!(retry_delay(4), HEARTBEAT_INTERVAL);
        assert_eq!(retry_delay(u32::MAX), HEARTBEAT_INTERVAL);
    }

    #[test]
    fn entries_round_trip_as_json() {
        let me = NodeInfo::new(NodeTag::random(), "http://127.0.0.1:3000", 10);
        let entry = me.entry(3);
        let json = serde_json::to_string(&entry).unwrap();
        assert_eq!(serde_json::from_str::<NodeEntry>(&json).unwrap(), entry);
        assert_eq!(entry.id, me.id.as_str());
        assert!(entry.last_beat >= entry.started_at);
    }
}
