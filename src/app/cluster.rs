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
use crate::cluster::subscriber::{Lane, Subscriber};
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
        ClusterBackend::with_lane(redis, keys, hub, node, max_events, stream_ttl, None)
    }

    /// [`ClusterBackend::new`] for one partition (`lane`) of a partitioned cluster, or the single Redis.
    pub fn with_lane(
        redis: Arc<Redis>,
        keys: Keys,
        hub: Arc<Hub>,
        node: &str,
        max_events: usize,
        stream_ttl: Duration,
        lane: Option<Lane>,
    ) -> Arc<ClusterBackend> {
        Arc::new(ClusterBackend {
            broker: Broker::new(redis.clone(), keys.clone(), max_events, stream_ttl),
            ephemeral: crate::cluster::ephemeral::EphemeralPublisher::start(redis.clone()),
            subscriber: Subscriber::start_lane(redis.clone(), keys.clone(), hub, lane),
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

/// Ingest-channel messages waiting on one node; beyond this they are dropped here (every node receives every
/// message and the first to take its claim publishes it, so another node still can).
pub const INGEST_QUEUE: usize = 65_536;
/// Most messages handed to the event log in one step.
const INGEST_BATCH: usize = 256;
/// How long a message's id is remembered against repeats, in milliseconds.
const INGEST_CLAIM_TTL_MS: u64 = 60_000;

/// The queue in front of this node's ingest worker; see [`spawn_ingest`].
#[derive(Clone)]
pub struct IngestQueue(tokio::sync::mpsc::Sender<Bytes>);

impl IngestQueue {
    /// Queues a message of the ingest channel; a full queue drops it (counted, `reason="queue_full"`).
    pub fn offer(&self, raw: Bytes) {
        if self.0.try_send(raw).is_err() {
            metrics::counter!("tidings_ingest_rejected_total", "reason" => "queue_full")
                .increment(1);
        }
    }
}

/// Starts the worker publishing this node's ingest-channel messages (`{room|rooms, event, data, namespace?,
/// id?}`) in the order they arrived, each once per cluster: the claim on its id (or content hash) is taken in
/// the same step as the publish, and one worker per node goes through the messages in order, so a message is
/// always sequenced after the ones sent before it on the channel, whichever nodes publish them.
pub fn spawn_ingest(app: &Arc<Tidings>) -> IngestQueue {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(INGEST_QUEUE);
    let app = Arc::downgrade(app);
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(INGEST_BATCH);
        while rx.recv_many(&mut batch, INGEST_BATCH).await > 0 {
            let Some(app) = app.upgrade() else {
                return;
            };
            ingest_batch(&app, &batch).await;
            batch.clear();
        }
    });
    IngestQueue(tx)
}

/// Publishes one batch of ingest messages, in order, each once.
async fn ingest_batch(app: &Tidings, batch: &[Bytes]) {
    let max = app.publish_limits().max_ingest_bytes;
    let mut ids = Vec::with_capacity(batch.len());
    let mut bodies = Vec::with_capacity(batch.len());
    for raw in batch {
        // Checked before anything else: an oversize message is not even hashed for its claim.
        if raw.len() > max {
            let error = super::RequestError::TooLarge(max);
            refuse_ingest(error.code(), &error);
            continue;
        }
        ids.push(format!("ingest-{}", ingest_id(raw)));
        bodies.push(raw.as_ref());
    }
    let records: Vec<(&[u8], &str)> = bodies
        .iter()
        .zip(&ids)
        .map(|(raw, id)| (*raw, id.as_str()))
        .collect();
    let answers = app
        .publish_json_batch_once(&records, INGEST_CLAIM_TTL_MS)
        .await;
    let tried = answers.len();
    for answer in answers {
        if let Err(error) = answer {
            refuse_ingest(error.label(), &error);
        }
    }
    if tried < records.len() {
        // The event log failed on one: the ones after it are not tried (another node may publish them).
        let error = "event log unavailable; message dropped on this node";
        for _ in tried..records.len() {
            refuse_ingest("unavailable", &error);
        }
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
