//! The ingest loop of one `[[kafka.ingest]]` entry on one node: read what the consumer has (up to
//! [`MAX_BATCH`] records), turn each record into a publish body or a direct message, publish them in their
//! order through the same checks as `POST /v1/publish` / `POST /v1/users/{to}/messages`, each once, and only
//! then let their offsets be committed. Records reach a room (or a user) in partition order.
//!
//! Runs of publishes go to the event log together (one Redis script call in a cluster, each record behind its
//! claim, taken in that same step; an embedded node remembers its claims in memory); runs of direct messages go
//! to the message store with one write, deduplicated by their idempotency key. A bad record is counted (`tidings_kafka_records_total{result="rejected"}`), logged
//! (one line a second at most, with how many were held back), copied to the dead-letter topic when there is
//! one, and skipped: it never stops its partition. When the store is unavailable the records from the first
//! that failed on are tried again with backoff, and no offset is committed meanwhile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::record::{to_ingest, Ingest, Record};
use super::source::RecordSource;
use crate::app::direct::request::{check_message, DmError, SendFields};
use crate::app::{IngestError, Tidings};
use crate::auth::refusals::RefusalLog;
use crate::messages::{NewMessage, StoreError};

/// Most records handled together.
pub const MAX_BATCH: usize = 512;
/// How long a record's claim is kept: far longer than a record can wait for its offset commit.
pub const CLAIM_TTL_MS: u64 = 10 * 60 * 1000;
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
    event_header: String,
) {
    let mut backoff = Backoff::default();
    loop {
        let records = match source.next_batch(MAX_BATCH).await {
            Ok(records) => records,
            Err(error) => {
                backoff.wait("consume", &error).await;
                continue;
            }
        };
        backoff = Backoff::default();
        let Some(app) = app.upgrade() else {
            return;
        };
        let ingest = Ingester {
            app: &app,
            source: &*source,
        };
        ingest.batch(&records, &event_header).await;
        if let Err(error) = source.done(&records) {
            metrics::counter!("tidings_kafka_errors_total", "where" => "commit").increment(1);
            tracing::warn!(%error, records = records.len(),
                "kafka ingest: cannot store offsets; the records may come again (and are then deduplicated)");
        }
    }
}

/// A record with what it means.
type Planned<'r> = (&'r Record, Ingest);

/// One batch's work.
struct Ingester<'a> {
    app: &'a Tidings,
    source: &'a dyn RecordSource,
}

impl Ingester<'_> {
    /// Handles `records` in their order; returns when each is published, known as a duplicate, or rejected.
    async fn batch(&self, records: &[Record], event_header: &str) {
        let limit = self.app.publish_limits().max_ingest_bytes;
        // Consecutive records of one kind go together.
        let mut run: Vec<Planned<'_>> = Vec::new();
        for record in records {
            let ingest = match to_ingest(record, event_header, limit) {
                Ok(ingest) => ingest,
                Err(error) => {
                    self.flush(&mut run).await;
                    self.reject(record, error.label(), &error.to_string()).await;
                    continue;
                }
            };
            if run
                .first()
                .is_some_and(|(_, first)| first.direct != ingest.direct)
            {
                self.flush(&mut run).await;
            }
            run.push((record, ingest));
        }
        self.flush(&mut run).await;
    }

    /// Publishes a run of records of one kind.
    async fn flush(&self, run: &mut Vec<Planned<'_>>) {
        match run.first() {
            None => {}
            Some((_, first)) if first.direct => self.messages(run).await,
            Some(_) => self.publish_run(run).await,
        }
        run.clear();
    }

    /// A run of publishes: in batches to the event log, each record behind its claim (in Redis in a cluster, in
    /// memory on an embedded node).
    async fn publish_run(&self, run: &[Planned<'_>]) {
        let mut start = 0;
        let mut backoff = Backoff::default();
        'tries: while start < run.len() {
            let bodies: Vec<(&[u8], &str)> = run[start..]
                .iter()
                .map(|(_, ingest)| (ingest.body.as_slice(), ingest.id.as_str()))
                .collect();
            let answers = self
                .app
                .publish_json_batch_once(&bodies, CLAIM_TTL_MS)
                .await;
            for (k, answer) in answers.into_iter().enumerate() {
                let (record, _) = &run[start + k];
                match answer {
                    Ok(Some(_)) => counted("published"),
                    Ok(None) => counted("duplicate"),
                    Err(IngestError::Refused(error)) => {
                        self.reject(record, error.code(), &error.to_string()).await;
                    }
                    Err(IngestError::Unavailable(error)) => {
                        start += k;
                        backoff.wait("publish", &error).await;
                        continue 'tries;
                    }
                }
            }
            return;
        }
    }

    /// A run of direct messages: checked like the message API's, stored with one write, deduplicated by their
    /// idempotency keys.
    async fn messages(&self, run: &[Planned<'_>]) {
        let direct = self.app.direct();
        let mut accepted: Vec<(&Record, NewMessage)> = Vec::with_capacity(run.len());
        for (record, ingest) in run {
            match message_of(self.app, ingest) {
                Ok(message) => accepted.push((record, message)),
                Err(error) => self.reject(record, error.code(), &error.to_string()).await,
            }
        }
        let mut start = 0;
        let mut backoff = Backoff::default();
        'tries: while start < accepted.len() {
            let messages = accepted[start..].iter().map(|(_, m)| m.clone()).collect();
            let answers = direct.send_batch(messages).await;
            for (k, answer) in answers.into_iter().enumerate() {
                let (record, _) = &accepted[start + k];
                match answer {
                    Ok(done) if done.fresh => counted("published"),
                    Ok(_) => counted("duplicate"),
                    Err(StoreError::Unavailable(error)) => {
                        start += k;
                        backoff.wait("store", &error).await;
                        continue 'tries;
                    }
                    Err(error) => {
                        let error = DmError::from(error);
                        self.reject(record, error.code(), &error.to_string()).await;
                    }
                }
            }
            return;
        }
    }

    /// Counts, logs and dead-letters a record that will never be published.
    async fn reject(&self, record: &Record, reason: &'static str, message: &str) {
        metrics::counter!("tidings_kafka_records_total", "result" => "rejected", "reason" => reason)
            .increment(1);
        if let Some(held) = REJECTED_LOG.note(reason, Instant::now()) {
            tracing::warn!(reason, %message, topic = %record.topic, partition = record.partition,
                offset = record.offset, held_back = %held, "kafka ingest: record rejected");
        }
        if let Err(error) = self.source.dead_letter(record, message).await {
            metrics::counter!("tidings_kafka_errors_total", "where" => "dead_letter").increment(1);
            tracing::warn!(%error, "kafka ingest: cannot copy a rejected record to the dead-letter topic");
        }
    }
}

/// The direct message a record carries, checked as `POST /v1/users/{to}/messages` checks one.
fn message_of(app: &Tidings, ingest: &Ingest) -> Result<NewMessage, DmError> {
    let fields: SendFields<'_> =
        serde_json::from_slice(&ingest.body).map_err(|e| DmError::Invalid(e.to_string()))?;
    let to = fields.to.clone().unwrap_or_default();
    check_message(
        fields.from.clone(),
        &to,
        &fields,
        app.direct().limits(),
        app.publish_limits(),
    )
}

fn counted(result: &'static str) {
    metrics::counter!("tidings_kafka_records_total", "result" => result).increment(1);
}

/// Waits between tries, longer each time up to [`MAX_BACKOFF`].
struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(FIRST_BACKOFF)
    }
}

impl Backoff {
    /// Counts and logs that `what` failed, then waits.
    async fn wait(&mut self, what: &'static str, error: &(dyn std::fmt::Display + Sync)) {
        metrics::counter!("tidings_kafka_errors_total", "where" => what).increment(1);
        if let Some(held) = ERROR_LOG.note(what, Instant::now()) {
            tracing::warn!(%error, held_back = %held, "kafka ingest: {what} failed; trying again");
        }
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
    }
}
