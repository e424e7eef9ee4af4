//! Room history and recovery sessions kept in the data directory (`--data-dir`), so that a restarted node
//! still replays what its clients missed and resumes their sessions.
//!
//! One SQLite database, `rooms.db` (WAL journal, every commit synced), written by one thread with group
//! commit ([`crate::sqlite::commit`]) and guarded by `rooms.lock`. Reads never touch it: [`DiskHistory`]
//! serves them from a [`MemoryHistory`] with the usual limits and journals every change of it (appends,
//! evictions, streams created and dropped), so the file holds what memory holds; [`DiskSessions`] does the
//! same for sessions. Appends run under the hub's ordering lock, so journaling never blocks: changes go to
//! the writer over an unbounded queue, and [`HistoryStore::durable`] is how a publisher waits for its event
//! to be committed before acknowledging it.
//!
//! On open the file is read back into memory ([`load`]): streams with their epochs (clients' positions stay
//! valid), events in sequence order under the configured limits, sessions. The hub resumes its sequence from
//! [`HistoryStore::resume_seq`]: the last committed sequence after a clean [`DiskHistory::close`], that plus
//! [`CRASH_GAP`] after a crash, since events may have been delivered live but not committed then, and a
//! client holding such an offset must never be handed a different event under the same number.

mod codec;
mod history;
mod journal;
mod load;
mod schema;
mod sessions;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::Connection;

pub use history::DiskHistory;
pub use journal::MAX_BATCH;
pub use load::{Loaded, CRASH_GAP};
pub use schema::{SchemaError, SCHEMA_VERSION};
pub use sessions::DiskSessions;

use crate::history::MemoryHistory;
use crate::recovery::MemorySessionStore;
use crate::sqlite::{commit, LockError};
use journal::{Journal, Writer};

/// The database's file name inside the data directory.
pub const FILE_NAME: &str = "rooms.db";

/// The lock file's name inside the data directory.
pub const LOCK_NAME: &str = "rooms.lock";

/// The bounds of the history and sessions kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Events per room at most (0: history off).
    pub max_events: usize,
    /// Events older than this are dropped.
    pub max_age: Duration,
    /// Bytes held in all at most (as [`MemoryHistory`] counts them).
    pub max_bytes: usize,
    /// Empty streams are kept this long after their last use.
    pub keep_idle: Duration,
    /// How long a session whose socket was connected when the process ended stays resumable after open.
    pub max_disconnection: Duration,
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The directory or its lock.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The database could not be opened, set up or migrated.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// The database could not be read back.
    #[error("rooms database: {0}")]
    Database(#[from] rusqlite::Error),
    /// The writer thread could not be started.
    #[error("rooms database writer: {0}")]
    Thread(std::io::Error),
}

/// Opens (creating when missing) the rooms database in `dir` and reads it back: the history and session
/// stores to hand to the hub and the app.
pub fn open(
    dir: &Path,
    limits: Limits,
) -> Result<(Arc<DiskHistory>, Arc<DiskSessions>), OpenError> {
    open_tuned(dir, limits, |_| Ok(()))
}

/// [`open`] with `tune` applied to every writing connection (tests shrink the file to make writes fail).
fn open_tuned(
    dir: &Path,
    limits: Limits,
    tune: fn(&Connection) -> rusqlite::Result<()>,
) -> Result<(Arc<DiskHistory>, Arc<DiskSessions>), OpenError> {
    let lock = crate::sqlite::lock_directory(dir, LOCK_NAME)?;
    let path: PathBuf = dir.join(FILE_NAME);
    let conn = schema::open_writer(&path)?;
    tune(&conn)?;
    let (journal, jobs) = Journal::new();
    let journal = Arc::new(journal);
    let memory = MemoryHistory::new(
        limits.max_events,
        limits.max_age,
        limits.max_bytes,
        limits.keep_idle,
    )
    .observed_by(journal.clone());
    let sessions = MemorySessionStore::new();
    let loaded = load::load(&conn, &memory, &sessions, limits.max_disconnection)?;
    // Events past their age when the node was down go now, journaled like any eviction.
    crate::history::HistoryStore::sweep(&memory, &|_| true);
    let running = commit::spawn(conn, lock, path.clone(), Writer::new(tune), jobs, MAX_BATCH)
        .map_err(OpenError::Thread)?;
    tracing::info!(
        path = %path.display(),
        clean = loaded.clean,
        resume_seq = loaded.resume_seq,
        streams = loaded.streams,
        events = loaded.events,
        sessions = loaded.sessions,
        "rooms store open"
    );
    let history = DiskHistory::new(memory, journal.clone(), loaded, running);
    let sessions = DiskSessions::new(sessions, journal);
    Ok((Arc::new(history), Arc::new(sessions)))
}

/// Milliseconds since the Unix epoch.
fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
