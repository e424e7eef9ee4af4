//! The on-disk layout of the message store: the connection settings, the tables and their indexes, and the
//! versioned migrations that bring an older file up to date.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// The layout this release writes. Stored in SQLite's `user_version`; a file at a lower version is migrated on
/// open, a file at a higher one (written by a newer release) is refused rather than misread.
pub const SCHEMA_VERSION: u32 = 1;

/// Migration `i` takes a file from version `i` to `i + 1`; each runs in its own transaction.
const MIGRATIONS: &[&str] = &[
    // 0 → 1: messages, receipts, inboxes.
    "
    CREATE TABLE inboxes (
        user     TEXT PRIMARY KEY,
        last_seq INTEGER NOT NULL,  -- last sequence given out
        entries  INTEGER NOT NULL,  -- messages in the inbox now
        records  INTEGER NOT NULL   -- records of this inbox still kept, in the inbox or not
    ) WITHOUT ROWID;

    CREATE TABLE messages (
        id           TEXT PRIMARY KEY,
        recipient    TEXT NOT NULL,
        seq          INTEGER NOT NULL,
        sender       TEXT,
        event        TEXT NOT NULL,
        data         TEXT NOT NULL,
        key          TEXT,
        accepted_at  INTEGER NOT NULL,
        expires_at   INTEGER NOT NULL,
        status       INTEGER NOT NULL,
        sent_at      INTEGER,
        delivered_at INTEGER,
        read_at      INTEGER,
        expired_at   INTEGER,
        forget_at    INTEGER        -- NULL while in the inbox; then when the record is forgotten
    );
    CREATE UNIQUE INDEX messages_inbox ON messages (recipient, seq) WHERE forget_at IS NULL;
    CREATE INDEX messages_expiry ON messages (expires_at, id) WHERE forget_at IS NULL;
    CREATE INDEX messages_forget ON messages (forget_at, id) WHERE forget_at IS NOT NULL;
    CREATE UNIQUE INDEX messages_key ON messages (ifnull(sender, ''), key) WHERE key IS NOT NULL;

    CREATE TABLE receipts (
        message      TEXT NOT NULL,
        device       TEXT NOT NULL,
        delivered_at INTEGER NOT NULL,
        UNIQUE (message, device)
    );
    ",
];

/// How long a connection waits for another one's lock (only the checkpoint and a second process contend).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The directory could not be created or the lock file could not be opened.
    #[error("data directory {path}: {source}")]
    Directory {
        /// The directory.
        path: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// Another process has the store open.
    #[error("data directory {0} is in use by another process")]
    InUse(String),
    /// The database could not be opened, set up or migrated.
    #[error("message database: {0}")]
    Database(#[from] rusqlite::Error),
    /// The file system refused the write-ahead log (the journal mode SQLite fell back to).
    #[error("message database cannot use a write-ahead log here (journal mode {0})")]
    NoWal(String),
    /// The file was written by a newer release.
    #[error(
        "message database is at schema version {found}; this release knows up to {SCHEMA_VERSION}"
    )]
    TooNew {
        /// The file's version.
        found: u32,
    },
}

/// Opens the writing connection: WAL journal, every commit synced to disk before it returns, schema up to date
/// (see [`crate::sqlite::open_durable`]).
///
/// `synchronous = FULL` in WAL mode syncs the log on every commit, so a commit that returned survives a power
/// loss or kernel crash, not only the death of this process. `NORMAL` would skip that sync (the log is synced
/// only at checkpoints): still safe against `kill -9`, since the written pages sit in the kernel's cache, but
/// the last commits could vanish with the machine — acknowledging them would claim durability that did not
/// happen. Group commit is what keeps `FULL` affordable.
pub fn open_writer(path: &Path) -> Result<Connection, OpenError> {
    crate::sqlite::open_durable(path, BUSY_TIMEOUT, 64, MIGRATIONS, "messages").map_err(|error| {
        match error {
            crate::sqlite::SetupError::Database(error) => OpenError::Database(error),
            crate::sqlite::SetupError::NoWal(mode) => OpenError::NoWal(mode),
            crate::sqlite::SetupError::TooNew(found) => OpenError::TooNew { found },
        }
    })
}

/// Opens a connection that only reads, beside the writer (WAL lets readers and one writer work at once).
pub fn open_reader(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_version_has_its_migration() {
        assert_eq!(MIGRATIONS.len(), SCHEMA_VERSION as usize);
    }

    #[test]
    fn a_newer_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("tidings-schema-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("messages.db");
        let _ = std::fs::remove_file(&path);
        drop(open_writer(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);
        assert!(matches!(
            open_writer(&path),
            Err(OpenError::TooNew { found }) if found == SCHEMA_VERSION + 1
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
