//! The ingest loop of one `[[kafka.ingest]]` entry on one node: read a record, turn it into a publish body,
//! claim its id, publish it through the same checks as `POST /v1/publish`, and only then let its offset be
//! committed. Records of a partition are handled one after the other, so they reach a room in partition order.
//! A bad record is counted (`tidings_kafka_records_total{result="rejected"}`), logged (one line a second at
//! most, with how many were held back), copied to the dead-letter topic when there is one, and skipped: it
//! never stops its partition. When the event store is unavailable the record is tried again with backoff and
//! its offset is not committed meanwhile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::dedup::{Claims, CLAIM_TTL_MS};
use super::record::{to_ingest, Record};
use super::source::RecordSource;
use crate::app::{IngestError, Tidings};
use crate::auth::refusals::RefusalLog;

/// First wait after a failure; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

static REJECTED_LOG: RefusalLog = RefusalLog::new(Duration::from_secs(1));
static ERROR_LOG: RefusalLog = RefusalLog::new(Duration::from_secs(10));

/// Reads and publishes records of `source` until the app is gone.
pub async fn run(
    app: std::sync::Weak<Tidings>,
    source: Arc<dyn RecordSource>,
    claims: Arc<dyn Claims>,
    event_header: String,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let record = match source.next().await {
            Ok(record) => record,
            Err(error) => {
                metrics::counter!("tidings_kafka_errors_total", "where" => "consume").increment(1);
                if let Some(held) = ERROR_LOG.note("consume", Instant::now()) {
                    tracing::warn!(%error, held_back = %held, "kafka ingest: cannot read records; retrying");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = FIRST_BACKOFF;
        let Some(app) = app.upgrade() else {
            return;
        };
        handle(&app, &*source, &*claims, &event_header, &record).await;
        if let Err(error) = source.done(&record) {
            metrics::counter!("tidings_kafka_errors_total", "where" => "commit").increment(1);
            tracing::warn!(%error, topic = %record.topic, partition = record.partition, offset = record.offset,
                "kafka ingest: cannot store the offset; the record may come again (and is then deduplicated)");
        }
    }
}

/// Publishes one record once, or rejects it; returns when it is done with.
async fn handle(
    app: &Tidings,
    source: &dyn RecordSource,
    claims: &dyn Claims,
    event_header: &str,
    record: &Record,
) {
    let ingest = match to_ingest(record, event_header, app.publish_limits().max_ingest_bytes) {
        Ok(ingest) => ingest,
        Err(error) => return reject(source, record, error.label(), &error.to_string()).await,
    };
    let mut backoff = FIRST_BACKOFF;
    loop {
        let outcome = if claims.shared() {
            // The claim is taken in the same step as the publish: a node killed in between loses nothing.
            app.publish_json_once(&ingest.body, Some((&ingest.id, CLAIM_TTL_MS)))
                .await
        } else {
            match claims.claim(&ingest.id).await {
                Ok(true) => app.publish_json(&ingest.body).await.map(Some),
                Ok(false) => Ok(None),
                Err(error) => {
                    unavailable("claim", &error, &mut backoff).await;
                    continue;
                }
            }
        };
        match outcome {
            Ok(Some(_)) => {
                metrics::counter!("tidings_kafka_records_total", "result" => "published")
                    .increment(1);
                return;
            }
            Ok(None) => {
                metrics::counter!("tidings_kafka_records_total", "result" => "duplicate")
                    .increment(1);
                return;
            }
            Err(IngestError::Refused(error)) => {
                return reject(source, record, error.code(), &error.to_string()).await;
            }
            Err(IngestError::Unavailable(error)) => {
                if !claims.shared() {
                    if let Err(error) = claims.release(&ingest.id).await {
                        tracing::debug!(%error, "kafka ingest: cannot release a claim");
                    }
                }
                unavailable("publish", &error, &mut backoff).await;
            }
        }
    }
}

/// Counts, logs and dead-letters a record that will never be published.
async fn reject(source: &dyn RecordSource, record: &Record, reason: &'static str, message: &str) {
    metrics::counter!("tidings_kafka_records_total", "result" => "rejected", "reason" => reason)
        .increment(1);
    if let Some(held) = REJECTED_LOG.note(reason, Instant::now()) {
        tracing::warn!(reason, %message, topic = %record.topic, partition = record.partition,
            offset = record.offset, held_back = %held, "kafka ingest: record rejected");
    }
    if let Err(error) = source.dead_letter(record, message).await {
        metrics::counter!("tidings_kafka_errors_total", "where" => "dead_letter").increment(1);
        tracing::warn!(%error, "kafka ingest: cannot copy a rejected record to the dead-letter topic");
    }
}

/// Waits before trying a record again after `what` failed.
async fn unavailable(
    what: &'static str,
    error: &(dyn std::fmt::Display + Sync),
    backoff: &mut Duration,
) {
    metrics::counter!("tidings_kafka_errors_total", "where" => what).increment(1);
    if let Some(held) = ERROR_LOG.note(what, Instant::now()) {
        tracing::warn!(%error, held_back = %held, "kafka ingest: {what} failed; retrying the record");
    }
    tokio::time::sleep(*backoff).await;
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
}
