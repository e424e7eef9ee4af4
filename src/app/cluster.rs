//! The Redis side of a cluster node ([`ClusterBackend`]: connection, keys, broker, subscriber, session records,
//! dataset epoch) and the ingest channel backends publish on.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;

use super::Tidings;
use crate::cluster::broker::Broker;
use crate::cluster::keys::Keys;
use crate::cluster::sessions::ClusterSessions;
use crate::cluster::subscriber::Subscriber;
use crate::cluster::Redis;
use crate::hub::Hub;

/// The Redis side of a cluster node.
pub struct ClusterBackend {
    /// Shared command connection.
    pub redis: Arc<Redis>,
    /// Key names.
    pub keys: Keys,
    /// Publishing.
    pub broker: Broker,
    /// Publishing ephemeral events, in order.
    pub ephemeral: crate::cluster::ephemeral::EphemeralPublisher,
    /// This node's room subscriptions.
    pub subscriber: Arc<Subscriber>,
    /// Session records.
    pub sessions: ClusterSessions,
    epoch: parking_lot::Mutex<Option<u64>>,
}

impl ClusterBackend {
    /// Connects the cluster pieces (connections are made lazily and retried); `node` names this node.
    pub fn new(
        redis: Arc<Redis>,
        keys: Keys,
        hub: Arc<Hub>,
        node: &str,
        max_events: usize,
        stream_ttl: Duration,
    ) -> Arc<ClusterBackend> {
        Arc::new(ClusterBackend {
            broker: Broker::new(redis.clone(), keys.clone(), max_events, stream_ttl),
            ephemeral: crate::cluster::ephemeral::EphemeralPublisher::start(redis.clone()),
            subscriber: Subscriber::start(redis.clone(), keys.clone(), hub),
            sessions: ClusterSessions::new(redis.clone(), keys.clone(), node.to_owned()),
            redis,
            keys,
            epoch: parking_lot::Mutex::new(None),
        })
    }

    /// The dataset epoch: created once per Redis dataset; a different value means Redis lost its data.
    pub async fn epoch(&self) -> Result<u64, redis::RedisError> {
        if let Some(epoch) = *self.epoch.lock() {
            return Ok(epoch);
        }
        let fresh: u64 = rand::thread_rng().gen_range(1..u64::MAX >> 11);
        let mut set = redis::cmd("SET");
        set.arg(self.keys.epoch()).arg(fresh).arg("NX");
        self.redis.run::<Option<String>>(&set).await?;
        let stored: Option<String> = self
            .redis
            .run(redis::cmd("GET").arg(self.keys.epoch()))
            .await?;
        let epoch = stored.and_then(|s| s.parse().ok()).unwrap_or(fresh);
        *self.epoch.lock() = Some(epoch);
        Ok(epoch)
    }

    /// Forgets the cached epoch (after Redis lost its data).
    pub fn forget_epoch(&self) {
        self.epoch.lock().take();
    }
}

/// Publishes an ingest-channel message (`{room|rooms, event, data, namespace?, id?}`), once per
/// cluster: the first node to claim its id (or content hash) publishes it.
pub async fn ingest(app: Arc<Tidings>, cluster: Arc<ClusterBackend>, raw: Bytes) {
    // Checked before anything else: an oversize message is not even hashed for its claim.
    if raw.len() > app.publish_limits().max_ingest_bytes {
        let error = super::RequestError::TooLarge(app.publish_limits().max_ingest_bytes);
        refuse_ingest(error.code(), &error);
        return;
    }
    let id = ingest_id(&raw);
    let mut claim = redis::cmd("SET");
    claim
        .arg(cluster.keys.ingest_seen(&id))
        .arg(1)
        .arg("NX")
        .arg("PX")
        .arg(60_000);
    match cluster.redis.run::<Option<String>>(&claim).await {
        Ok(Some(_)) => {}
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(%error, "ingest claim failed; message dropped");
            return;
        }
    }
    if let Err(error) = app.publish_json(&raw).await {
        refuse_ingest(error.label(), &error);
    }
}

/// Counts and logs an ingest message that was not published, with why.
fn refuse_ingest(reason: &'static str, error: &dyn std::fmt::Display) {
    metrics::counter!("tidings_ingest_rejected_total", "reason" => reason).increment(1);
    tracing::warn!(reason, %error, "ingest message rejected");
}

/// The id of an ingest message: its `id` field, else a hash of its bytes.
fn ingest_id(raw: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct WithId {
        id: Option<String>,
    }
    if let Some(id) = serde_json::from_slice::<WithId>(raw)
        .ok()
        .and_then(|w| w.id)
    {
        return format!("id:{id}");
    }
    use sha1::Digest;
    let digest = sha1::Sha1::digest(raw);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
