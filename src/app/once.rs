//! Publishing records once each, in their order, in batches (the Kafka ingest): a run of records whose rooms
//! are all durable goes to the event log in one step (one Redis script call in a cluster), each behind its
//! claim; a record with an ephemeral room goes on its own between runs, so records still reach every room in
//! the order they were given.

use super::{request::CheckedPublish, IngestError, PublishError, Receipt, Tidings};
use crate::hub::Event;

/// A checked record waiting in a run: its place in the batch, the checked body, its durable rooms, its claim.
type Waiting<'r> = (usize, CheckedPublish<'r>, Vec<String>, &'r str);

/// One answer per record of a batch; see [`Tidings::publish_json_batch_once`].
pub type BatchAnswers = Vec<Result<Option<Receipt>, IngestError>>;

impl Tidings {
    /// Publishes `records` (publish bodies, each with its claim id, claims kept `ttl` ms) in their order, each
    /// once. One answer per record, up to and including the first one the event log could not take
    /// (`Err(Unavailable)`); the records after it were not tried. `Ok(None)` for a record published before.
    pub async fn publish_json_batch_once(
        &self,
        records: &[(&[u8], &str)],
        ttl: u64,
    ) -> BatchAnswers {
        let mut answers: Vec<Option<Result<Option<Receipt>, IngestError>>> =
            (0..records.len()).map(|_| None).collect();
        let mut run: Vec<Waiting<'_>> = Vec::new();
        for (i, (raw, id)) in records.iter().enumerate() {
            let checked = match self.check_ingest(raw) {
                Ok(checked) => checked,
                Err(error) => {
                    answers[i] = Some(Err(IngestError::Refused(error)));
                    continue;
                }
            };
            let (ephemeral, durable) = self.split_rooms(&checked);
            if ephemeral.is_empty() {
                run.push((i, checked, durable, id));
                continue;
            }
            if !self.publish_run(&mut run, ttl, &mut answers).await {
                return settled(answers);
            }
            let done = self
                .publish_checked_once(&checked, Some((id, ttl)))
                .await
                .map(|done| done.map(|receipt| receipt.unwrap_or(NO_RECEIPT)))
                .map_err(IngestError::Unavailable);
            let failed = done.is_err();
            answers[i] = Some(done);
            if failed {
                return settled(answers);
            }
        }
        self.publish_run(&mut run, ttl, &mut answers).await;
        settled(answers)
    }

    /// Publishes a run of durable-only records with one call to the event log; false when it failed (every
    /// record of the run is then answered `Unavailable`).
    async fn publish_run(
        &self,
        run: &mut Vec<Waiting<'_>>,
        ttl: u64,
        answers: &mut [Option<Result<Option<Receipt>, IngestError>>],
    ) -> bool {
        if run.is_empty() {
            return true;
        }
        let events: Vec<(Event<'_>, &str)> = run
            .iter()
            .map(|(_, checked, rooms, id)| {
                let event = Event {
                    nsp: &checked.nsp,
                    rooms,
                    name: &checked.event,
                    data: checked.data,
                    attachments: &[],
                    with_offset: self.namespace(&checked.nsp).is_some_and(|ns| ns.recovery),
                };
                (event, *id)
            })
            .collect();
        let published = self.backend.log.publish_batch_once(&events, ttl).await;
        drop(events);
        match published {
            Ok(receipts) => {
                for ((i, ..), receipt) in run.drain(..).zip(receipts) {
                    answers[i] = Some(Ok(receipt));
                }
                true
            }
            Err(error) => {
                let PublishError::Unavailable(detail) = error;
                for (i, ..) in run.drain(..) {
                    answers[i] = Some(Err(IngestError::Unavailable(PublishError::Unavailable(
                        detail.clone(),
                    ))));
                }
                false
            }
        }
    }
}

/// The receipt of a record whose rooms were all ephemeral.
const NO_RECEIPT: Receipt = Receipt {
    seq: 0,
    recipients: 0,
};

/// The answers up to the first record not tried, or through the first `Unavailable` one.
fn settled(answers: Vec<Option<Result<Option<Receipt>, IngestError>>>) -> BatchAnswers {
    let mut out = Vec::with_capacity(answers.len());
    for answer in answers {
        let Some(answer) = answer else { break };
        let stop = matches!(answer, Err(IngestError::Unavailable(_)));
        out.push(answer);
        if stop {
            break;
        }
    }
    out
}
