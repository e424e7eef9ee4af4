//! The Kafka bridge: `[[kafka.ingest]]` consumers publish their topics' records to rooms (see [`record`] for
//! the format), once per cluster, in partition order, committing a record's offset only once its event was
//! accepted.
//!
//! Data path: [`source`] (a [`source::RecordSource`] on librdkafka) → [`record`] (the publish body and dedup id)
//! → [`ingest`] (publish once, each record behind its claim in the event log, then commit).

pub mod context;
pub mod egress;
pub mod ingest;
pub mod record;
pub mod source;

use std::sync::Arc;

pub use source::ClientError;

use crate::app::Tidings;
use crate::config::KafkaIngestConfig;

/// Starts one ingest loop per entry of `entries` (call from a Tokio runtime); `node` names this node's
/// consumers to the brokers, whose states go to `links` (as `ingest[i]`). An entry whose client cannot be
/// created is an error (a broker that cannot be reached is not: the client keeps trying).
pub fn spawn_ingest(
    app: &Arc<Tidings>,
    entries: &[KafkaIngestConfig],
    node: &str,
    links: &context::Links,
) -> Result<(), ClientError> {
    for (i, entry) in entries.iter().enumerate() {
        let link = links.add(&format!("ingest[{i}]"));
        let source = source::KafkaSource::new(entry, &format!("tidings-{node}-{i}"), link)?;
        tracing::info!(brokers = %entry.brokers, topics = ?entry.topics, group = %entry.group,
            "kafka ingest: consuming");
        tokio::spawn(ingest::run(
            Arc::downgrade(app),
            Arc::new(source),
            entry.event_header.clone(),
        ));
    }
    Ok(())
}
