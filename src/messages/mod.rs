//! Direct messages: one user to another, with a persisted delivery status, per-device receipts and an offline
//! inbox.
//!
//! A message is accepted into its recipient's inbox (durable in the configured store before anyone is told it
//! was accepted) under the next sequence number of that inbox, so every device sees a user's messages in one
//! order, and messages from one sender arrive in the order they were accepted. Its status only moves forward:
//!
//! ```text
//! accepted ──▶ sent ──▶ delivered ──▶ read
//!     │          │
//!     └──────────┴──▶ expired   (ttl passed before any device acknowledged it)
//! ```
//!
//! The inbox holds a message until it is read or its ttl passes; a device that connects is given every inbox
//! message it has not acknowledged yet. [`MessageStore`] is the capability; [`MemoryMessages`] keeps everything
//! in this process, [`DiskMessages`] in a data directory.

pub mod contract;
pub mod disk;
mod memory;
mod model;

pub use disk::{DiskMessages, OpenError};
pub use memory::MemoryMessages;
pub use model::{
    Accepted, Change, DeviceReceipt, InboxLimits, Marks, Message, MessageId, MessageState,
    NewMessage, Pending, Status,
};

use futures_util::future::BoxFuture;

/// Most messages one [`MessageStore::accept_batch`] call takes.
pub const MAX_ACCEPT_BATCH: usize = 64;

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The recipient's inbox holds its maximum of messages none of which was delivered yet.
    #[error("the recipient's inbox is full")]
    InboxFull,
    /// No such message, or not one of this user's.
    #[error("unknown message")]
    UnknownMessage,
    /// The store could not be reached or could not make the change durable; nothing was changed.
    #[error("message store unavailable: {0}")]
    Unavailable(String),
}

/// Where messages, their statuses and the inboxes live.
///
/// Every method returns once its change is durable in the store (for stores that persist anything), so a
/// caller may acknowledge it. Methods that take a `user` act only on messages addressed to that user: a client
/// cannot acknowledge or mark read anyone else's messages.
pub trait MessageStore: Send + Sync + 'static {
    /// Stores a new message at the end of its recipient's inbox. A second message with the same sender and
    /// `key` is not stored again: the first one is returned, with `fresh` false.
    fn accept(&self, message: NewMessage) -> BoxFuture<'_, Result<Accepted, StoreError>>;

    /// Accepts `messages` (at most [`MAX_ACCEPT_BATCH`]) in the given order, each as [`MessageStore::accept`]
    /// would, with one answer per message in the same order. A refusal of one (a full inbox) does not stop the
    /// others; once the store fails (`Unavailable`), that message and every later one are answered
    /// `Unavailable` and none of them was stored, so what was stored keeps the order it was given in. Stores
    /// make a whole batch durable with one write (one transaction, one script call): that is what lets one
    /// connection send faster than one round trip to the store per message, its messages still in order.
    fn accept_batch(
        &self,
        messages: Vec<NewMessage>,
    ) -> BoxFuture<'_, Vec<Result<Accepted, StoreError>>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(messages.len());
            let mut failed = None;
            for message in messages {
                if let Some(error) = &failed {
                    out.push(Err(StoreError::Unavailable(String::clone(error))));
                    continue;
                }
                let answer = self.accept(message).await;
                if let Err(StoreError::Unavailable(error)) = &answer {
                    failed = Some(error.clone());
                }
                out.push(answer);
            }
            out
        })
    }

    /// Marks messages of `user` sent (written to one of the user's connections) at `at_ms`; returns the
    /// changes (messages that were only accepted until now).
    fn mark_sent<'a>(
        &'a self,
        user: &'a str,
        ids: &'a [MessageId],
        at_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<Change>, StoreError>>;

    /// Records that `device` of `user` acknowledged messages at `at_ms`: a receipt per message and device (the
    /// first one counts), and status `delivered` for messages not delivered yet. Returns one change per new
    /// receipt; ids of other users' messages, unknown or expired ones are skipped.
    fn mark_delivered<'a>(
        &'a self,
        user: &'a str,
        device: &'a str,
        ids: &'a [MessageId],
        at_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<Change>, StoreError>>;

    /// Applies the sent marks and receipts of several devices, in one write where the store can (one
    /// transaction, a script call per kind), and returns their changes. On a failure the changes already made
    /// are returned with the error; marks are idempotent, so the caller may simply give the failed ones again.
    fn mark_batch(&self, marks: Vec<Marks>) -> BoxFuture<'_, (Vec<Change>, Option<StoreError>)> {
        Box::pin(async move {
            let mut changes = Vec::new();
            for mark in &marks {
                let done = match &mark.device {
                    None => self.mark_sent(&mark.user, &mark.ids, mark.at_ms).await,
                    Some(device) => {
                        self.mark_delivered(&mark.user, device, &mark.ids, mark.at_ms)
                            .await
                    }
                };
                match done {
                    Ok(more) => changes.extend(more),
                    Err(error) => return (changes, Some(error)),
                }
            }
            (changes, None)
        })
    }

    /// Marks read every message from `from` to `user` up to and including `up_to` (in inbox order) that is not
    /// read or expired yet; read messages leave the inbox.
    fn mark_read<'a>(
        &'a self,
        user: &'a str,
        from: &'a str,
        up_to: &'a MessageId,
        at_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<Change>, StoreError>>;

    /// Inbox messages of `user` after sequence `after` that `device` has not acknowledged, oldest first, at
    /// most `limit`; with the inbox's last sequence, read in the same step.
    fn pending<'a>(
        &'a self,
        user: &'a str,
        device: &'a str,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Pending, StoreError>>;

    /// Inbox messages of `user` after sequence `since`, oldest first, at most `limit`, with their status.
    fn inbox<'a>(
        &'a self,
        user: &'a str,
        since: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<MessageState>, StoreError>>;

    /// A message with its status, timestamps and receipts, while the store keeps it.
    fn get<'a>(
        &'a self,
        id: &'a MessageId,
    ) -> BoxFuture<'a, Result<Option<MessageState>, StoreError>>;

    /// Expires messages whose ttl passed by `now_ms` (undelivered ones change to `expired`; delivered ones just
    /// leave the inbox) and forgets records past their retention. Returns the changes.
    fn sweep(&self, now_ms: u64) -> BoxFuture<'_, Result<Vec<Change>, StoreError>>;
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
