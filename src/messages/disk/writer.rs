//! The message store's side of group commit ([`crate::sqlite::commit`]): callers queue a change and wait for
//! its answer, which comes once the transaction holding it has committed (or failed). The queue is bounded:
//! a caller past it waits for room.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::schema;
use crate::messages::model::InboxLimits;
use crate::messages::StoreError;
use crate::sqlite::commit::{self, Work};

/// Changes waiting for the writer at most. A caller past it waits for room (the queue's bound is memory, not
/// a refusal): callers are already bounded by the connections and API requests that make them.
pub const QUEUE_CAPACITY: usize = 4096;

/// Changes applied in one transaction at most, so one commit's latency stays bounded under a flood.
pub const MAX_BATCH: usize = 1024;

/// A change waiting for the writer.
pub trait Job: Send {
    /// Applies the change inside the batch's open transaction; an error aborts the whole batch.
    fn apply(&mut self, conn: &Connection, limits: &InboxLimits) -> rusqlite::Result<()>;
    /// Answers the caller once the batch's fate is known: `None` when it committed (is durable).
    fn answer(self: Box<Self>, failure: Option<StoreError>);
}

/// A change computed by `op`, answered through a oneshot channel.
struct Op<T, F> {
    op: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for Op<T, F>
where
    T: Send,
    F: FnOnce(&Connection, &InboxLimits) -> rusqlite::Result<Result<T, StoreError>> + Send,
{
    fn apply(&mut self, conn: &Connection, limits: &InboxLimits) -> rusqlite::Result<()> {
        if let Some(op) = self.op.take() {
            self.result = Some(op(conn, limits)?);
        }
        Ok(())
    }

    fn answer(self: Box<Self>, failure: Option<StoreError>) {
        let answer = match (failure, self.result) {
            (Some(failure), _) => Err(failure),
            (None, Some(result)) => result,
            (None, None) => Err(StoreError::Unavailable("change not applied".into())),
        };
        // The caller may have gone away; its change is durable all the same.
        let _ = self.reply.send(answer);
    }
}

/// The handle callers use to reach the writer thread.
pub struct Writer {
    queue: Option<mpsc::Sender<Box<dyn Job>>>,
    commits: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread on an open connection, holding the directory's `lock` until it closes the
    /// connection; `tune` is applied again whenever the connection is reopened after a failed batch.
    pub fn start(
        conn: Connection,
        lock: File,
        path: PathBuf,
        limits: InboxLimits,
        tune: fn(&Connection) -> rusqlite::Result<()>,
    ) -> std::io::Result<Writer> {
        let (queue, jobs) = mpsc::channel(QUEUE_CAPACITY);
        let running = commit::spawn(conn, lock, path, Messages { limits, tune }, jobs, MAX_BATCH)?;
        Ok(Writer {
            queue: Some(queue),
            commits: running.commits,
            thread: Some(running.thread),
        })
    }

    /// Queues `op` and waits until it is durable (or failed).
    pub async fn submit<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &InboxLimits) -> rusqlite::Result<Result<T, StoreError>>
            + Send
            + 'static,
    {
        let closed = || StoreError::Unavailable("message store closed".into());
        let queue = self.queue.as_ref().ok_or_else(closed)?;
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(Op {
            op: Some(op),
            result: None,
            reply,
        });
        queue.send(job).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// Transactions committed since the start.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Lets the writer finish what is queued, then waits for it to close the database.
    pub fn close(&mut self) {
        self.queue = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // The thread drains the queue and closes the file on its own; nobody waits for it here.
        self.queue = None;
    }
}

/// How the writer thread applies message jobs.
struct Messages {
    limits: InboxLimits,
    tune: fn(&Connection) -> rusqlite::Result<()>,
}

impl Work for Messages {
    type Job = Box<dyn Job>;
    const STORE: &'static str = "messages";

    fn reopen(&mut self, path: &Path) -> Result<Connection, String> {
        let conn = schema::open_writer(path).map_err(|e| e.to_string())?;
        (self.tune)(&conn).map_err(|e| e.to_string())?;
        Ok(conn)
    }

    fn apply(&mut self, conn: &Connection, batch: &mut [Box<dyn Job>]) -> rusqlite::Result<()> {
        for job in batch.iter_mut() {
            job.apply(conn, &self.limits)?;
        }
        Ok(())
    }

    fn settle(&mut self, batch: &mut Vec<Box<dyn Job>>, failure: Option<&str>) -> bool {
        let failure = failure.map(|error| StoreError::Unavailable(error.to_owned()));
        for job in batch.drain(..) {
            job.answer(failure.clone());
        }
        true
    }
}
