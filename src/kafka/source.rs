//! Where ingested records come from, as a capability ([`RecordSource`]), and its implementation on librdkafka
//! (the `rdkafka` crate): a member of the entry's consumer group whose offsets are stored only for records
//! tidings is done with, and committed from there every second — the group's committed offsets are what
//! Kafka's own tooling shows and where a restarted or rebalanced consumer resumes.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use super::context::{Context, Link, STATS_INTERVAL_MS};
use super::record::Record;
use crate::config::KafkaIngestConfig;

/// A client configuration: tidings' `defaults`, then the entry's own librdkafka `properties` over them (the
/// caller sets the reserved ones last).
pub fn client_config(
    defaults: &[(&str, &str)],
    properties: &std::collections::BTreeMap<String, String>,
) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (key, value) in defaults {
        config.set(*key, *value);
    }
    for (key, value) in properties {
        config.set(key, value);
    }
    config
}

/// A record as tidings keeps it (owned: the client's buffer goes back at once).
fn to_record(message: &rdkafka::message::BorrowedMessage<'_>) -> Record {
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default();
    Record {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        headers,
        value: message.payload().map(<[u8]>::to_vec),
    }
}

/// Longest a fetch waits at the broker for new records: the added latency of an idle partition.
const FETCH_WAIT_MS: &str = "10";

/// How often stored offsets are committed to the group.
const COMMIT_INTERVAL_MS: &str = "1000";

/// What the Kafka client reported, or a setting it could not take.
#[derive(Debug, thiserror::Error)]
#[error("kafka: {0}")]
pub struct ClientError(String);

impl ClientError {
    /// A setting of the entry that cannot be used.
    pub fn config(detail: String) -> ClientError {
        ClientError(detail)
    }
}

impl From<rdkafka::error::KafkaError> for ClientError {
    fn from(error: rdkafka::error::KafkaError) -> Self {
        ClientError(error.to_string())
    }
}

/// Records of one `[[kafka.ingest]]` entry, for one node.
pub trait RecordSource: Send + Sync + 'static {
    /// The next records, in partition order: waits for one, then takes what else is already there, up to
    /// `max`. `Err` reports a client error; the client goes on reconnecting by itself.
    fn next_batch(&self, max: usize) -> BoxFuture<'_, Result<Vec<Record>, ClientError>>;
    /// Tidings is done with `records` (published, or skipped for good): their offsets may be committed.
    fn done(&self, records: &[Record]) -> Result<(), ClientError>;
    /// Copies `record` to the dead-letter topic, if there is one, with the reason in a `tidings-error` header.
    fn dead_letter<'a>(
        &'a self,
        record: &'a Record,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), ClientError>>;
}

/// A consumer-group member on librdkafka.
pub struct KafkaSource {
    consumer: StreamConsumer<Context>,
    dead_letters: Option<(FutureProducer<Context>, String)>,
}

impl KafkaSource {
    /// Joins the entry's group and subscribes to its topics (brokers are reached lazily and retried: a broker
    /// that is down at start does not stop the node). `client_id` names this node to the brokers; the
    /// consumer's broker state goes to `link`.
    pub fn new(
        entry: &KafkaIngestConfig,
        client_id: &str,
        link: Arc<Link>,
    ) -> Result<KafkaSource, ClientError> {
        let defaults = [
            ("client.id", client_id),
            ("auto.offset.reset", "earliest"),
            ("auto.commit.interval.ms", COMMIT_INTERVAL_MS),
            ("fetch.wait.max.ms", FETCH_WAIT_MS),
            ("session.timeout.ms", "10000"),
            ("heartbeat.interval.ms", "1000"),
            ("reconnect.backoff.max.ms", "2000"),
            ("statistics.interval.ms", STATS_INTERVAL_MS),
        ];
        let consumer: StreamConsumer<Context> = client_config(&defaults, &entry.properties)
            .set("bootstrap.servers", &entry.brokers)
            .set("group.id", &entry.group)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .create_with_context(Context::new(link.clone()))?;
        let topics: Vec<&str> = entry.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        let dead_letters = if entry.dead_letter_topic.is_empty() {
            None
        } else {
            let defaults = [("client.id", client_id), ("message.timeout.ms", "30000")];
            let producer: FutureProducer<Context> = client_config(&defaults, &entry.properties)
                .set("bootstrap.servers", &entry.brokers)
                .create_with_context(Context::new(link))?;
            Some((producer, entry.dead_letter_topic.clone()))
        };
        Ok(KafkaSource {
            consumer,
            dead_letters,
        })
    }
}

impl RecordSource for KafkaSource {
    fn next_batch(&self, max: usize) -> BoxFuture<'_, Result<Vec<Record>, ClientError>> {
        async move {
            let first = self.consumer.recv().await?;
            let mut records = vec![to_record(&first)];
            drop(first);
            // `recv` is cancellation safe: a record not ready now stays for the next batch.
            while records.len() < max {
                match self.consumer.recv().now_or_never() {
                    Some(Ok(message)) => records.push(to_record(&message)),
                    Some(Err(error)) => {
                        tracing::debug!(%error, "kafka ingest: error behind a batch");
                        break;
                    }
                    None => break,
                }
            }
            Ok(records)
        }
        .boxed()
    }

    fn done(&self, records: &[Record]) -> Result<(), ClientError> {
        // The committed offset is the next record to read: one past the last of each partition.
        let mut last: Vec<(&str, i32, i64)> = Vec::new();
        for record in records {
            match last.iter_mut().find(|(topic, partition, _)| {
                *topic == record.topic && *partition == record.partition
            }) {
                Some(entry) => entry.2 = entry.2.max(record.offset),
                None => last.push((&record.topic, record.partition, record.offset)),
            }
        }
        let mut offsets = TopicPartitionList::new();
        for (topic, partition, offset) in last {
            offsets.add_partition_offset(topic, partition, Offset::Offset(offset + 1))?;
        }
        self.consumer.store_offsets(&offsets)?;
        Ok(())
    }

    fn dead_letter<'a>(
        &'a self,
        record: &'a Record,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), ClientError>> {
        async move {
            let Some((producer, topic)) = &self.dead_letters else {
                return Ok(());
            };
            let mut headers = OwnedHeaders::new();
            for (key, value) in &record.headers {
                headers = headers.insert(Header {
                    key,
                    value: Some(value),
                });
            }
            let origin = format!("{}:{}:{}", record.topic, record.partition, record.offset);
            headers = headers
                .insert(Header {
                    key: "tidings-error",
                    value: Some(reason),
                })
                .insert(Header {
                    key: "tidings-origin",
                    value: Some(&origin),
                });
            let mut out = FutureRecord::<[u8], [u8]>::to(topic).headers(headers);
            if let Some(key) = &record.key {
                out = out.key(key.as_slice());
            }
            if let Some(value) = &record.value {
                out = out.payload(value.as_slice());
            }
            producer
                .send(out, std::time::Duration::from_secs(30))
                .await
                .map(|_| ())
                .map_err(|(error, _)| ClientError::from(error))
        }
        .boxed()
    }
}
