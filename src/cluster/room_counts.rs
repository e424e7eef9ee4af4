//! Cluster-wide room member counts for `GET /v1/rooms` and `/v1/rooms/{room}`: every node writes its local
//! counts to a Redis hash of its own every [`HEARTBEAT_INTERVAL`] (only what changed), expiring with its
//! registry entry; a listing adds up the hashes of the live nodes, with this node's own counts read live.
//!
//! Key: `{prefix}:node:{id}:rooms`, field `<namespace>\0<room>`, value the member count. Counts of other nodes
//! are at most one heartbeat old; a dead node's hash expires with its entry.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};

use super::keys::Keys;
use super::registry::{Registry, RegistryError, ENTRY_TTL, HEARTBEAT_INTERVAL};
use super::Redis;
use crate::hub::{Hub, RoomKey};

/// One room's members: everywhere, and on this node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoomCount {
    /// Members on every live node.
    pub members: usize,
    /// Members on this node.
    pub local: usize,
}

/// Starts writing this node's room counts for the namespaces `namespaces` every heartbeat; the task ends when
/// the hub is dropped.
pub fn spawn_publisher(
    redis: Arc<Redis>,
    keys: Keys,
    node: String,
    hub: &Arc<Hub>,
    namespaces: Vec<String>,
) {
    let hub = Arc::downgrade(hub);
    tokio::spawn(async move {
        let mut publisher = Publisher {
            redis,
            key: keys.node_rooms(&node),
            sent: HashMap::new(),
            full: true,
        };
        let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(counts) = local_counts(&hub, &namespaces) else {
                return;
            };
            if let Err(error) = publisher.write(counts).await {
                tracing::debug!(%error, "cannot write this node's room counts");
            }
        }
    });
}

/// Every room of `namespaces` on this node with its members, by room key; `None` once the hub is gone.
fn local_counts(hub: &Weak<Hub>, namespaces: &[String]) -> Option<HashMap<String, usize>> {
    let hub = hub.upgrade()?;
    let mut counts = HashMap::new();
    for nsp in namespaces {
        for (room, members) in hub.list(nsp) {
            counts.insert(RoomKey::new(nsp, &room).as_str().to_owned(), members);
        }
    }
    Some(counts)
}

/// Writes the counts that changed since the last successful write, or all of them after a failure or when the
/// hash had expired.
struct Publisher {
    redis: Arc<Redis>,
    key: String,
    sent: HashMap<String, usize>,
    full: bool,
}

impl Publisher {
    async fn write(&mut self, counts: HashMap<String, usize>) -> Result<(), redis::RedisError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        if self.full {
            pipe.cmd("DEL").arg(&self.key).ignore();
        }
        let changed: Vec<(&String, &usize)> = counts
            .iter()
            .filter(|(room, n)| self.full || self.sent.get(*room) != Some(n))
            .collect();
        if !changed.is_empty() {
            pipe.cmd("HSET").arg(&self.key).arg(changed).ignore();
        }
        let gone: Vec<&String> = self
            .sent
            .keys()
            .filter(|room| !self.full && !counts.contains_key(*room))
            .collect();
        if !gone.is_empty() {
            pipe.cmd("HDEL").arg(&self.key).arg(gone).ignore();
        }
        let ttl_ms = u64::try_from(ENTRY_TTL.as_millis()).unwrap_or(u64::MAX);
        pipe.cmd("PEXPIRE").arg(&self.key).arg(ttl_ms);
        let mut conn = self.redis.conn().await?;
        let result = pipe.query_async::<(i64,)>(&mut conn).await;
        match self.redis.observe(result).await {
            Ok((kept,)) => {
                // 0: no hash (no rooms, or it expired while writes failed): write everything next time.
                self.full = kept == 0;
                self.sent = counts;
                Ok(())
            }
            Err(error) => {
                self.full = true;
                Err(error)
            }
        }
    }
}

/// Every room of `nsp` on any live node with its members there and here, sorted by name.
pub async fn list(
    registry: &Registry,
    hub: &Hub,
    nsp: &str,
) -> Result<Vec<(String, RoomCount)>, RegistryError> {
    let mut rooms: BTreeMap<String, RoomCount> = BTreeMap::new();
    let prefix = RoomKey::new(nsp, "");
    for (node, counts) in other_nodes(registry, |key, pipe| {
        pipe.cmd("HGETALL").arg(key);
    })
    .await?
    .into_iter()
    .map(|(node, value)| {
        (
            node,
            redis::from_redis_value::<HashMap<String, usize>>(&value),
        )
    }) {
        let counts = counts.map_err(|error| {
            tracing::debug!(%node, %error, "unreadable room counts");
            error
        })?;
        for (key, members) in counts {
            if let Some(room) = key.strip_prefix(prefix.as_str()) {
                rooms.entry(room.to_owned()).or_default().members += members;
            }
        }
    }
    for (room, members) in hub.list(nsp) {
        let count = rooms.entry(room).or_default();
        count.members += members;
        count.local = members;
    }
    rooms.retain(|_, count| count.members > 0);
    Ok(rooms.into_iter().collect())
}

/// One room's members on every live node and here.
pub async fn show(
    registry: &Registry,
    hub: &Hub,
    room: &RoomKey,
) -> Result<RoomCount, RegistryError> {
    let field = room.as_str().to_owned();
    let mut members = 0;
    for (_, value) in other_nodes(registry, |key, pipe| {
        pipe.cmd("HGET").arg(key).arg(&field);
    })
    .await?
    {
        members += redis::from_redis_value::<Option<usize>>(&value)?.unwrap_or(0);
    }
    let local = hub.member_count(room);
    Ok(RoomCount {
        members: members + local,
        local,
    })
}

/// Runs one command per live node other than this one (`command` adds it for the node's hash key) in one
/// pipeline; the replies by node id.
async fn other_nodes(
    registry: &Registry,
    command: impl Fn(&str, &mut redis::Pipeline),
) -> Result<Vec<(String, redis::Value)>, RegistryError> {
    let me = registry.me().id.as_str().to_owned();
    let nodes: Vec<String> = registry
        .live_nodes()
        .await?
        .into_iter()
        .map(|n| n.id)
        .filter(|id| *id != me)
        .collect();
    if nodes.is_empty() {
        return Ok(Vec::new());
    }
    let keys = registry.keys();
    let mut pipe = redis::pipe();
    for node in &nodes {
        command(&keys.node_rooms(node), &mut pipe);
    }
    let values: Vec<redis::Value> = registry.run_query(&pipe).await?;
    Ok(nodes.into_iter().zip(values).collect())
}
