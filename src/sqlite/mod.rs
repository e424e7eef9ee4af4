//! SQLite plumbing shared by the stores kept in the data directory (`--data-dir`): the group-commit writer
//! thread ([`commit`]), the lock that keeps a second process off a store ([`lock_directory`]), and the set-up
//! of a store's writing connection: WAL, synced commits, migrations ([`open_durable`]).

pub mod commit;

use std::fs::File;
use std::path::Path;

/// Why a data directory's lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The directory could not be created or the lock file could not be opened.
    #[error("data directory {path}: {source}")]
    Directory {
        /// The directory.
        path: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// Another process holds the lock.
    #[error("data directory {0} is in use by another process")]
    InUse(String),
}

/// Creates `dir` when missing and takes an exclusive `flock` on `dir/<name>`, so two processes never write the
/// same store. The lock goes with the returned file: when it is closed, or with the process however it ends.
pub fn lock_directory(dir: &Path, name: &str) -> Result<File, LockError> {
    use std::os::fd::AsRawFd;
    let directory = |source| LockError::Directory {
        path: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(directory)?;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(name))
        .map_err(directory)?;
    // SAFETY: flock only reads the descriptor, which `file` keeps open for the call.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked != 0 {
        return Err(LockError::InUse(dir.display().to_string()));
    }
    Ok(file)
}

/// Why a store's writing connection could not be set up (see [`open_durable`]).
#[derive(Debug)]
pub enum SetupError {
    /// SQLite refused.
    Database(rusqlite::Error),
    /// The file system refused the write-ahead log (the journal mode SQLite fell back to).
    NoWal(String),
    /// The file is at a schema version newer than this release knows.
    TooNew(u32),
}

impl From<rusqlite::Error> for SetupError {
    fn from(error: rusqlite::Error) -> SetupError {
        SetupError::Database(error)
    }
}

/// Opens a store's writing connection: WAL journal, every commit synced before it returns
/// (`synchronous = FULL`: a commit survives a power loss or kernel crash, not only the death of the process;
/// group commit keeps that affordable), the log truncated back to 64 MiB after a checkpoint so a burst does
/// not leave a large file behind, `cache` prepared statements, and the schema brought up to date:
/// `migrations[n]` takes `user_version` n to n + 1. `store` names the database in logs.
pub fn open_durable(
    path: &Path,
    busy_timeout: std::time::Duration,
    cache: usize,
    migrations: &[&str],
    store: &'static str,
) -> Result<rusqlite::Connection, SetupError> {
    let mut conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(busy_timeout)?;
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(SetupError::NoWal(mode));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    conn.set_prepared_statement_cache_capacity(cache);
    let latest = migrations.len() as u32;
    loop {
        let version: u32 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version > latest {
            return Err(SetupError::TooNew(version));
        }
        if version == latest {
            return Ok(conn);
        }
        let tx = conn.transaction()?;
        tx.execute_batch(migrations[version as usize])?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
        tracing::info!(store, from = version, to = version + 1, "database migrated");
    }
}
