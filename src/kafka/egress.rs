//! Egress on Kafka (`[kafka.egress]`): client publishes go to `publishes_topic` keyed by room, direct-message
//! status changes to `statuses_topic` keyed by the sender, so a consumer of a partition sees a room's (a
//! user's) records in the order the node produced them — the producer is idempotent, so retries neither
//! reorder nor repeat them.
//!
//! Records wait in librdkafka's queue while Kafka is slow or away, at most `max_queued` of them and at most
//! `delivery_timeout_ms` each; past either they are dropped and counted
//! (`tidings_kafka_egress_total{topic, result="dropped", reason}`), delivered ones are counted with
//! `result="produced"`, and `tidings_kafka_queued{client="egress"}` is the queue's length. A publish to an
//! `ack_rooms` room goes through [`Egress::publish_acked`]: the caller waits for Kafka's acknowledgement (at most
//! `ack_timeout_ms`) before it publishes to the room and answers the client.
//!
//! Publish record value: `{id, namespace, room, event, data, from, at}` with an `event` header (the shape the
//! ingest reads back); `id` is unique per record (`<node>-<n>`), for consumers that deduplicate. Status record
//! value: `{id, status, from, to, device?, at}`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::oneshot;

use super::context::{Context, Link, STATS_INTERVAL_MS};
use super::source::{client_config, ClientError};
use crate::app::egress::{Egress, EgressError, OutPublish, Route};
use crate::auth::RoomPatterns;
use crate::config::KafkaEgressConfig;
use crate::messages::Change;

/// What a record is, for the metrics.
#[derive(Clone, Copy)]
enum Kind {
    Publish,
    Status,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Publish => "publishes",
            Kind::Status => "statuses",
        }
    }
}

/// What comes back with a record's delivery report.
pub struct Delivery {
    kind: Kind,
    ack: Option<oneshot::Sender<Result<(), EgressError>>>,
}

/// The producer's context: the client's [`Context`], and delivery reports counted and answered.
pub struct EgressContext(Context);

impl ClientContext for EgressContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.0.log(level, facility, message);
    }

    fn stats(&self, statistics: Statistics) {
        self.0.stats(statistics);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.0.error(error, reason);
    }
}

impl ProducerContext for EgressContext {
    type DeliveryOpaque = Box<Delivery>;

    fn delivery(&self, result: &DeliveryResult<'_>, delivery: Box<Delivery>) {
        let outcome = match result {
            Ok(_) => {
                metrics::counter!("tidings_kafka_egress_total", "topic" => delivery.kind.label(),
                    "result" => "produced")
                .increment(1);
                Ok(())
            }
            Err((error, _)) => {
                let reason = match error.rdkafka_error_code() {
                    Some(RDKafkaErrorCode::MessageTimedOut) => "timeout",
                    _ => "refused",
                };
                metrics::counter!("tidings_kafka_egress_total", "topic" => delivery.kind.label(),
                    "result" => "dropped", "reason" => reason)
                .increment(1);
                tracing::debug!(%error, "kafka egress: a record was not delivered");
                Err(EgressError::Failed(error.to_string()))
            }
        };
        if let Some(ack) = delivery.ack {
            let _ = ack.send(outcome);
        }
    }
}

/// An idempotent producer of `config` whose records are dropped after `timeout_ms`.
fn new_producer(
    config: &KafkaEgressConfig,
    client_id: &str,
    timeout_ms: u64,
    link: Arc<Link>,
) -> Result<ThreadedProducer<EgressContext>, ClientError> {
    let max_queued = config.max_queued.to_string();
    let timeout = timeout_ms.to_string();
    let defaults = [
        ("client.id", client_id),
        ("linger.ms", "5"),
        ("statistics.interval.ms", STATS_INTERVAL_MS),
        ("reconnect.backoff.max.ms", "2000"),
    ];
    Ok(client_config(&defaults, &config.properties)
        .set("bootstrap.servers", &config.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("queue.buffering.max.messages", &max_queued)
        .set("message.timeout.ms", &timeout)
        .create_with_context(EgressContext(Context::new(link)))?)
}

/// Queues one record, or counts it dropped.
fn send(
    producer: &ThreadedProducer<EgressContext>,
    topic: &str,
    key: &str,
    value: &[u8],
    headers: Option<OwnedHeaders>,
    delivery: Delivery,
) -> Result<(), EgressError> {
    let kind = delivery.kind;
    let mut record = BaseRecord::with_opaque_to(topic, Box::new(delivery))
        .key(key)
        .payload(value);
    if let Some(headers) = headers {
        record = record.headers(headers);
    }
    match producer.send(record) {
        Ok(()) => Ok(()),
        Err((error, _)) => {
            let full = matches!(
                error.rdkafka_error_code(),
                Some(RDKafkaErrorCode::QueueFull)
            );
            let reason = if full { "queue_full" } else { "refused" };
            metrics::counter!("tidings_kafka_egress_total", "topic" => kind.label(),
                "result" => "dropped", "reason" => reason)
            .increment(1);
            Err(if full {
                EgressError::Full
            } else {
                EgressError::Failed(error.to_string())
            })
        }
    }
}

/// A client publish as its record's value.
#[derive(Serialize)]
struct PublishRecord<'a> {
    id: &'a str,
    namespace: &'a str,
    room: &'a str,
    event: &'a str,
    data: &'a RawValue,
    from: &'a str,
    at: u64,
}

/// The node's producers and what goes where.
pub struct KafkaEgress {
    producer: ThreadedProducer<EgressContext>,
    /// For `ack_rooms`: its records time out after `ack_timeout_ms`, so a client answered `unavailable` is not
    /// followed by its record reaching Kafka later (unless it was already on the wire).
    ack_producer: Option<ThreadedProducer<EgressContext>>,
    publishes: String,
    publish_rooms: RoomPatterns,
    ack_rooms: RoomPatterns,
    statuses: String,
    ack_timeout: Duration,
    node: String,
    next_id: AtomicU64,
}

impl KafkaEgress {
    /// The producer of `config` (brokers are reached lazily and retried), named `client_id` to the brokers,
    /// its broker state in `link`; `node` prefixes record ids.
    pub fn new(
        config: &KafkaEgressConfig,
        client_id: &str,
        node: &str,
        link: Arc<Link>,
        ack_link: impl FnOnce() -> Arc<Link>,
    ) -> Result<KafkaEgress, ClientError> {
        let producer = new_producer(config, client_id, config.delivery_timeout_ms, link)?;
        let ack_producer = if config.ack_rooms.is_empty() || config.publishes_topic.is_empty() {
            None
        } else {
            let client_id = format!("{client_id}-ack");
            Some(new_producer(
                config,
                &client_id,
                config.ack_timeout_ms,
                ack_link(),
            )?)
        };
        let patterns = |list: &[String]| {
            RoomPatterns::parse(list.iter()).map_err(|e| ClientError::config(e.to_string()))
        };
        Ok(KafkaEgress {
            producer,
            ack_producer,
            publishes: config.publishes_topic.clone(),
            publish_rooms: patterns(&config.publish_rooms)?,
            ack_rooms: patterns(&config.ack_rooms)?,
            statuses: config.statuses_topic.clone(),
            ack_timeout: Duration::from_millis(config.ack_timeout_ms),
            node: node.to_owned(),
            next_id: AtomicU64::new(1),
        })
    }

    /// Queues a publish record; `ack` hears of its delivery.
    fn send_publish(
        &self,
        out: &OutPublish<'_>,
        ack: Option<oneshot::Sender<Result<(), EgressError>>>,
    ) -> Result<(), EgressError> {
        let id = format!(
            "{}-{}",
            self.node,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let data = serde_json::from_str::<&RawValue>(out.data)
            .map_err(|e| EgressError::Failed(format!("data: {e}")))?;
        let value = serde_json::to_vec(&PublishRecord {
            id: &id,
            namespace: out.nsp,
            room: out.room,
            event: out.event,
            data,
            from: out.from,
            at: crate::cluster::broker::now_ms(),
        })
        .map_err(|e| EgressError::Failed(e.to_string()))?;
        let headers = OwnedHeaders::new().insert(Header {
            key: "event",
            value: Some(out.event),
        });
        let producer = match (&ack, &self.ack_producer) {
            (Some(_), Some(acked)) => acked,
            _ => &self.producer,
        };
        send(
            producer,
            &self.publishes,
            out.room,
            &value,
            Some(headers),
            Delivery {
                kind: Kind::Publish,
                ack,
            },
        )
    }

    /// Waits up to `timeout` for what is queued to be delivered (at shutdown).
    pub fn flush(&self, timeout: Duration) {
        use rdkafka::producer::Producer;
        for producer in std::iter::once(&self.producer).chain(&self.ack_producer) {
            if let Err(error) = producer.flush(timeout) {
                tracing::warn!(%error, "kafka egress: records still queued at shutdown were not delivered");
            }
        }
    }
}

impl Egress for KafkaEgress {
    fn route(&self, room: &str) -> Route {
        if self.publishes.is_empty() {
            Route::Skip
        } else if self.ack_rooms.matches(room) {
            Route::Ack
        } else if self.publish_rooms.matches(room) {
            Route::Queue
        } else {
            Route::Skip
        }
    }

    fn publish(&self, out: &OutPublish<'_>) -> Result<(), EgressError> {
        self.send_publish(out, None)
    }

    fn publish_acked(&self, out: &OutPublish<'_>) -> BoxFuture<'static, Result<(), EgressError>> {
        let (tx, rx) = oneshot::channel();
        let queued = self.send_publish(out, Some(tx));
        let timeout = self.ack_timeout;
        async move {
            queued?;
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(_)) => Err(EgressError::Failed("the producer is gone".into())),
                Err(_) => Err(EgressError::Failed(format!(
                    "no acknowledgement within {} ms",
                    timeout.as_millis()
                ))),
            }
        }
        .boxed()
    }

    fn status(&self, change: &Change) {
        if self.statuses.is_empty() {
            return;
        }
        let mut value = change.to_json();
        value["from"] = change.from.clone().into();
        let key = change.from.as_deref().unwrap_or(&change.to);
        let value = value.to_string();
        let _ = send(
            &self.producer,
            &self.statuses,
            key,
            value.as_bytes(),
            None,
            Delivery {
                kind: Kind::Status,
                ack: None,
            },
        );
    }
}
