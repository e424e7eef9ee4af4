//! The durable message store of the embedded mode (`--data-dir`): messages, statuses, receipts and inboxes in
//! one SQLite database (`messages.db` in the data directory, WAL journal, synced on every commit).
//!
//! Writes go through one writer thread that commits everything waiting in one transaction ([`writer`]), so
//! every method returns only once its change is on disk, and concurrent callers share the cost of a sync.
//! Reads use their own read-only connections ([`reads`]). Expiry and forgetting walk indexes on the due time,
//! never the whole table. A file lock keeps a second process off the same directory.

mod reads;
mod rows;
mod schema;
mod writer;
mod writes;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::future::{BoxFuture, FutureExt};
use rusqlite::Connection;

pub use schema::{OpenError, SCHEMA_VERSION};
pub use writer::{MAX_BATCH, QUEUE_CAPACITY};

use crate::sqlite::LockError;

use super::model::{
    Accepted, Change, InboxLimits, Marks, MessageId, MessageState, NewMessage, Pending,
};
use super::{MessageStore, StoreError};
use reads::Readers;
use writer::Writer;

/// The database's file name inside the data directory.
pub const FILE_NAME: &str = "messages.db";

/// Messages kept on disk, in a data directory.
pub struct DiskMessages {
    writer: Writer,
    readers: Arc<Readers>,
    path: PathBuf,
}

impl DiskMessages {
    /// Opens (creating the directory and the database when missing, migrating an older layout) the store in
    /// `dir`, with the inbox bounds and record retention of `limits` (`max_records` does not apply: the disk is
    /// the bound).
    pub fn open(dir: &Path, limits: InboxLimits) -> Result<DiskMessages, OpenError> {
        Self::open_tuned(dir, limits, |_| Ok(()))
    }

    fn open_tuned(
        dir: &Path,
        limits: InboxLimits,
        tune: fn(&Connection) -> rusqlite::Result<()>,
    ) -> Result<DiskMessages, OpenError> {
        let directory = |source| OpenError::Directory {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(directory)?;
        let lock = lock_directory(dir)?;
        let path = dir.join(FILE_NAME);
        let conn = schema::open_writer(&path)?;
        tune(&conn)?;
        let writer = Writer::start(conn, lock, path.clone(), limits, tune).map_err(directory)?;
        tracing::info!(path = %path.display(), "message store open");
        Ok(DiskMessages {
            writer,
            readers: Readers::new(path.clone()),
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Transactions committed since the store was opened (each one sync of the log).
    pub fn commits(&self) -> u64 {
        self.writer.commits()
    }

    /// Finishes the changes already queued, closes the database and releases the directory.
    pub async fn close(mut self) {
        let writer = tokio::task::spawn_blocking(move || {
            self.writer.close();
            self
        });
        drop(writer.await);
    }
}

/// Takes the lock on `dir/messages.lock`, so two processes never write one store.
fn lock_directory(dir: &Path) -> Result<File, OpenError> {
    crate::sqlite::lock_directory(dir, "messages.lock").map_err(|error| match error {
        LockError::Directory { path, source } => OpenError::Directory { path, source },
        LockError::InUse(path) => OpenError::InUse(path),
    })
}

impl MessageStore for DiskMessages {
    fn accept(&self, message: NewMessage) -> BoxFuture<'_, Result<Accepted, StoreError>> {
        self.writer
            .submit(move |conn, limits| writes::accept(conn, limits, message))
            .boxed()
    }

    fn accept_batch(
        &self,
        messages: Vec<NewMessage>,
    ) -> BoxFuture<'_, Vec<Result<Accepted, StoreError>>> {
        let count = messages.len();
        async move {
            let stored = self
                .writer
                .submit(move |conn, limits| {
                    let mut out = Vec::with_capacity(messages.len());
                    for message in messages {
                        out.push(writes::accept(conn, limits, message)?);
                    }
                    Ok(Ok(out))
                })
                .await;
            stored.unwrap_or_else(|error| vec![Err(error); count])
        }
        .boxed()
    }

    fn mark_batch(&self, marks: Vec<Marks>) -> BoxFuture<'_, (Vec<Change>, Option<StoreError>)> {
        async move {
            let applied = self
                .writer
                .submit(move |conn, _| {
                    let mut changes = Vec::new();
                    for mark in &marks {
                        let more = match &mark.device {
                            None => writes::mark_sent(conn, &mark.user, &mark.ids, mark.at_ms)?,
                            Some(device) => writes::mark_delivered(
                                conn, &mark.user, device, &mark.ids, mark.at_ms,
                            )?,
                        };
                        changes.extend(more.unwrap_or_default());
                    }
                    Ok(Ok(changes))
                })
                .await;
            match applied {
                Ok(changes) => (changes, None),
                Err(error) => (Vec::new(), Some(error)),
            }
        }
        .boxed()
    }

    fn mark_sent<'a>(
        &'a self,
        user: &'a str,
        ids: &'a [MessageId],
        at_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<Change>, StoreError>> {
        let (user, ids) = (user.to_owned(), ids.to_vec());
        self.writer
            .submit(move |conn, _| writes::mark_sent(conn, &user, &ids, at_ms))
            .boxed()
    }

    fn mark_delivered<'a>(
        &'a self,
        user: &'a str,
        device: &'a str,
        ids: &'a [MessageId],
        at_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<Change>, StoreError>> {
        let (user, device, ids) = (user.to_owned(), device.to_owned(), ids.to_vec());
        self.writer
            .submit(move |conn, _| writes::mark_delivered(conn, &user, &device, &ids, at_ms))
            .boxed()
    }

    fn mark_read<'a>(
        &'a self,
        user: &'a str,
        from: &'a str,
        up_to: &'a MessageId,
        at_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<Change>, StoreError>> {
        let (user, from, up_to) = (user.to_owned(), from.to_owned(), up_to.clone());
        self.writer
            .submit(move |conn, limits| {
                writes::mark_read(conn, limits, &user, &from, &up_to, at_ms)
            })
            .boxed()
    }

    fn pending<'a>(
        &'a self,
        user: &'a str,
        device: &'a str,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Pending, StoreError>> {
        let (user, device) = (user.to_owned(), device.to_owned());
        self.readers
            .run(move |conn| reads::pending(conn, &user, &device, after, limit))
            .boxed()
    }

    fn inbox<'a>(
        &'a self,
        user: &'a str,
        since: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<MessageState>, StoreError>> {
        let user = user.to_owned();
        self.readers
            .run(move |conn| reads::inbox(conn, &user, since, limit))
            .boxed()
    }

    fn get<'a>(
        &'a self,
        id: &'a MessageId,
    ) -> BoxFuture<'a, Result<Option<MessageState>, StoreError>> {
        let id = id.clone();
        self.readers.run(move |conn| rows::get(conn, &id)).boxed()
    }

    fn sweep(&self, now_ms: u64) -> BoxFuture<'_, Result<Vec<Change>, StoreError>> {
        self.writer
            .submit(move |conn, limits| writes::sweep(conn, limits, now_ms))
            .boxed()
    }
}

#[cfg(test)]
mod tests;
