//! Group commit: one thread owns the writing connection, takes every change waiting in its queue, applies them
//! all in one transaction and commits once (one sync of the log), then answers each caller. N callers waiting
//! together cost about one sync, and no caller hears back before its change is on disk.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::schema;
use crate::messages::model::InboxLimits;
use crate::messages::StoreError;

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
        let commits = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&commits);
        let thread = std::thread::Builder::new()
            .name("tidings-store".into())
            .spawn(move || {
                Committer {
                    conn: Some(conn),
                    _lock: lock,
                    path,
                    limits,
                    tune,
                    commits: counted,
                }
                .run(jobs)
            })?;
        Ok(Writer {
            queue: Some(queue),
            commits,
            thread: Some(thread),
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

/// The writer thread's state.
struct Committer {
    /// `None` after a failed batch until it is opened again.
    conn: Option<Connection>,
    /// The data directory's lock, released when the thread ends, after the connection closed.
    _lock: File,
    path: PathBuf,
    limits: InboxLimits,
    tune: fn(&Connection) -> rusqlite::Result<()>,
    commits: Arc<AtomicU64>,
}

impl Committer {
    fn run(mut self, mut jobs: mpsc::Receiver<Box<dyn Job>>) {
        let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = jobs.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let started = Instant::now();
            let failure = self.commit(&mut batch).err();
            metrics::histogram!("tidings_store_commit_seconds")
                .record(started.elapsed().as_secs_f64());
            metrics::histogram!("tidings_store_batch_size").record(batch.len() as f64);
            if failure.is_some() {
                metrics::counter!("tidings_store_commit_failures_total").increment(1);
            } else {
                metrics::counter!("tidings_store_commits_total").increment(1);
                self.commits.fetch_add(1, Ordering::Relaxed);
            }
            for job in batch.drain(..) {
                job.answer(failure.clone());
            }
        }
        tracing::debug!(path = %self.path.display(), "message store writer closed");
    }

    /// Applies every job in one transaction and commits it. On any error the transaction is rolled back and
    /// the connection dropped: after a failed sync the kernel may have dropped the dirty pages it could not
    /// write, so the next batch starts from a fresh connection that reads the file as it really is.
    fn commit(&mut self, batch: &mut [Box<dyn Job>]) -> Result<(), StoreError> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => schema::open_writer(&self.path)
                .map_err(|e| self.fail(e.to_string()))
                .and_then(|conn| {
                    (self.tune)(&conn).map_err(|e| self.fail(e.to_string()))?;
                    Ok(conn)
                })?,
        };
        match apply(&conn, &self.limits, batch) {
            Ok(()) => {
                self.conn = Some(conn);
                Ok(())
            }
            Err(error) => {
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                Err(self.fail(error.to_string()))
            }
        }
    }

    fn fail(&self, error: String) -> StoreError {
        tracing::error!(path = %self.path.display(), %error, "message store write failed");
        StoreError::Unavailable(error)
    }
}

fn apply(
    conn: &Connection,
    limits: &InboxLimits,
    batch: &mut [Box<dyn Job>],
) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    for job in batch.iter_mut() {
        job.apply(conn, limits)?;
    }
    conn.execute_batch("COMMIT")
}
