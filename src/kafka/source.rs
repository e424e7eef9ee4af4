//! Where ingested records come from, as a capability ([`RecordSource`]), and its implementation on librdkafka
//! (the `rdkafka` crate): a member of the entry's consumer group whose offsets are stored only for records
//! tidings is done with, and committed from there every second — the group's committed offsets are what
//! Kafka's own tooling shows and where a restarted or rebalanced consumer resumes.

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use super::record::Record;
use crate::config::KafkaIngestConfig;

/// How often stored offsets are committed to the group.
const COMMIT_INTERVAL_MS: &str = "1000";

/// What the Kafka client reported.
#[derive(Debug, thiserror::Error)]
#[error("kafka: {0}")]
pub struct SourceError(String);

impl From<rdkafka::error::KafkaError> for SourceError {
    fn from(error: rdkafka::error::KafkaError) -> Self {
        SourceError(error.to_string())
    }
}

/// Records of one `[[kafka.ingest]]` entry, for one node.
pub trait RecordSource: Send + Sync + 'static {
    /// The next record, in partition order (waits for one). `Err` reports a client error; the client goes on
    /// reconnecting by itself.
    fn next(&self) -> BoxFuture<'_, Result<Record, SourceError>>;
    /// Tidings is done with `record` (published, or skipped for good): its offset may be committed.
    fn done(&self, record: &Record) -> Result<(), SourceError>;
    /// Copies `record` to the dead-letter topic, if there is one, with the reason in a `tidings-error` header.
    fn dead_letter<'a>(
        &'a self,
        record: &'a Record,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), SourceError>>;
}

/// A consumer-group member on librdkafka.
pub struct KafkaSource {
    consumer: StreamConsumer,
    dead_letters: Option<(FutureProducer, String)>,
}

impl KafkaSource {
    /// Joins the entry's group and subscribes to its topics (brokers are reached lazily and retried: a broker
    /// that is down at start does not stop the node). `client_id` names this node to the brokers.
    pub fn new(entry: &KafkaIngestConfig, client_id: &str) -> Result<KafkaSource, SourceError> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &entry.brokers)
            .set("group.id", &entry.group)
            .set("client.id", client_id)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", COMMIT_INTERVAL_MS)
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set("reconnect.backoff.max.ms", "2000")
            .create()?;
        let topics: Vec<&str> = entry.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        let dead_letters = if entry.dead_letter_topic.is_empty() {
            None
        } else {
            let producer: FutureProducer = ClientConfig::new()
                .set("bootstrap.servers", &entry.brokers)
                .set("client.id", client_id)
                .set("message.timeout.ms", "30000")
                .create()?;
            Some((producer, entry.dead_letter_topic.clone()))
        };
        Ok(KafkaSource {
            consumer,
            dead_letters,
        })
    }
}

impl RecordSource for KafkaSource {
    fn next(&self) -> BoxFuture<'_, Result<Record, SourceError>> {
        async move {
            let message = self.consumer.recv().await?;
            let headers = message
                .headers()
                .map(|headers| {
                    headers
                        .iter()
                        .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                        .collect()
                })
                .unwrap_or_default();
            Ok(Record {
                topic: message.topic().to_owned(),
                partition: message.partition(),
                offset: message.offset(),
                key: message.key().map(<[u8]>::to_vec),
                headers,
                value: message.payload().map(<[u8]>::to_vec),
            })
        }
        .boxed()
    }

    fn done(&self, record: &Record) -> Result<(), SourceError> {
        let mut offsets = TopicPartitionList::new();
        // The committed offset is the next record to read.
        offsets.add_partition_offset(
            &record.topic,
            record.partition,
            Offset::Offset(record.offset + 1),
        )?;
        self.consumer.store_offsets(&offsets)?;
        Ok(())
    }

    fn dead_letter<'a>(
        &'a self,
        record: &'a Record,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), SourceError>> {
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
                .map_err(|(error, _)| SourceError::from(error))
        }
        .boxed()
    }
}
