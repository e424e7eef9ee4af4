//! Group commit: one thread owns a store's writing connection, takes every job waiting in its queue, applies
//! them all in one transaction and commits once (one sync of the log), then settles them. N callers waiting
//! together cost about one sync, and none hears back before its change is on disk.
//!
//! What a job is, how it is applied and how its caller learns the outcome belong to the store ([`Work`]);
//! where jobs wait belongs to the store too ([`Intake`]: a bounded queue for callers that can wait, an
//! unbounded one for callers that must never block).

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use rusqlite::Connection;
use tokio::sync::mpsc;

/// What a writer thread does with its jobs.
pub trait Work: Send + 'static {
    /// A change waiting for the writer.
    type Job: Send + 'static;
    /// Names the store in logs and metrics (`store` label).
    const STORE: &'static str;
    /// Opens the writing connection again after a failed batch.
    fn reopen(&mut self, path: &std::path::Path) -> Result<Connection, String>;
    /// False when the batch changes nothing (it only waits for earlier jobs, all settled by now): it is then
    /// settled as committed without a transaction or a sync.
    fn writes(&self, batch: &[Self::Job]) -> bool {
        let _ = batch;
        true
    }
    /// Applies a batch inside its open transaction; an error aborts (rolls back) the whole batch.
    fn apply(&mut self, conn: &Connection, batch: &mut [Self::Job]) -> rusqlite::Result<()>;
    /// Learns the batch's fate (`None`: committed, durable) and empties it; returns false to end the thread.
    fn settle(&mut self, batch: &mut Vec<Self::Job>, failure: Option<&str>) -> bool;
}

/// Where jobs wait for the writer thread.
pub trait Intake: Send + 'static {
    /// The job type.
    type Job;
    /// Blocks until a job comes; `None` once every sender is gone and the queue is empty.
    fn wait(&mut self) -> Option<Self::Job>;
    /// A job already waiting, without blocking.
    fn ready(&mut self) -> Option<Self::Job>;
}

impl<J: Send + 'static> Intake for mpsc::Receiver<J> {
    type Job = J;
    fn wait(&mut self) -> Option<J> {
        self.blocking_recv()
    }
    fn ready(&mut self) -> Option<J> {
        self.try_recv().ok()
    }
}

impl<J: Send + 'static> Intake for mpsc::UnboundedReceiver<J> {
    type Job = J;
    fn wait(&mut self) -> Option<J> {
        self.blocking_recv()
    }
    fn ready(&mut self) -> Option<J> {
        self.try_recv().ok()
    }
}

/// A running writer thread.
pub struct Running {
    /// The thread; it ends when its intake is empty and closed, or when [`Work::settle`] says so.
    pub thread: JoinHandle<()>,
    /// Transactions committed since the start.
    pub commits: Arc<AtomicU64>,
}

/// Starts a writer thread on an open connection, holding the store's `lock` until it has closed the
/// connection; it applies at most `max_batch` jobs per transaction, so one commit's latency stays bounded
/// under a flood.
pub fn spawn<W, I>(
    conn: Connection,
    lock: File,
    path: PathBuf,
    work: W,
    intake: I,
    max_batch: usize,
) -> std::io::Result<Running>
where
    W: Work,
    I: Intake<Job = W::Job>,
{
    let commits = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&commits);
    let thread = std::thread::Builder::new()
        .name(format!("tidings-{}", W::STORE))
        .spawn(move || {
            Committer {
                conn: Some(conn),
                _lock: lock,
                path,
                work,
                commits: counted,
            }
            .run(intake, max_batch)
        })?;
    Ok(Running { thread, commits })
}

/// The writer thread's state.
struct Committer<W> {
    /// `None` after a failed batch until it is opened again.
    conn: Option<Connection>,
    /// The store's lock, released when the thread ends, after the connection closed.
    _lock: File,
    path: PathBuf,
    work: W,
    commits: Arc<AtomicU64>,
}

impl<W: Work> Committer<W> {
    fn run(mut self, mut intake: impl Intake<Job = W::Job>, max_batch: usize) {
        let mut batch = Vec::with_capacity(max_batch);
        while let Some(first) = intake.wait() {
            batch.push(first);
            while batch.len() < max_batch {
                match intake.ready() {
                    Some(job) => batch.push(job),
                    None => break,
                }
            }
            if !self.work.writes(&batch) {
                if !self.work.settle(&mut batch, None) {
                    break;
                }
                batch.clear();
                continue;
            }
            let started = Instant::now();
            let size = batch.len();
            let failure = self.commit(&mut batch).err();
            metrics::histogram!("tidings_store_commit_seconds", "store" => W::STORE)
                .record(started.elapsed().as_secs_f64());
            metrics::histogram!("tidings_store_batch_size", "store" => W::STORE)
                .record(size as f64);
            if failure.is_some() {
                metrics::counter!("tidings_store_commit_failures_total", "store" => W::STORE)
                    .increment(1);
            } else {
                metrics::counter!("tidings_store_commits_total", "store" => W::STORE).increment(1);
                self.commits.fetch_add(1, Ordering::Relaxed);
            }
            if !self.work.settle(&mut batch, failure.as_deref()) {
                break;
            }
            batch.clear();
        }
        drop(self.conn.take());
        tracing::debug!(path = %self.path.display(), store = W::STORE, "store writer closed");
    }

    /// Applies the batch in one transaction and commits it. On any error the transaction is rolled back and
    /// the connection dropped: after a failed sync the kernel may have dropped the dirty pages it could not
    /// write, so the next batch starts from a fresh connection that reads the file as it really is.
    fn commit(&mut self, batch: &mut [W::Job]) -> Result<(), String> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => self
                .work
                .reopen(&self.path)
                .map_err(|error| self.fail(error))?,
        };
        let applied = conn
            .execute_batch("BEGIN IMMEDIATE")
            .and_then(|()| self.work.apply(&conn, batch))
            .and_then(|()| conn.execute_batch("COMMIT"));
        match applied {
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

    fn fail(&self, error: String) -> String {
        tracing::error!(path = %self.path.display(), store = W::STORE, %error, "store write failed");
        error
    }
}
