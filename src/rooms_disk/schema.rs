//! The on-disk layout of `rooms.db`: room streams with their epochs, the events they hold, recovery sessions
//! and the marker of a clean close, with the versioned migrations that bring an older file up to date.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

/// The layout this release writes, in SQLite's `user_version`; a file from a newer release is refused.
pub const SCHEMA_VERSION: u32 = 1;

/// Migration `i` takes a file from version `i` to `i + 1`; each runs in its own transaction.
const MIGRATIONS: &[&str] = &[
    // 0 → 1: streams, events, sessions, the close marker.
    "
    CREATE TABLE streams (
        id              INTEGER PRIMARY KEY,
        room            TEXT NOT NULL UNIQUE,   -- namespace, NUL, room name
        epoch           INTEGER NOT NULL,
        evicted_through INTEGER NOT NULL        -- highest sequence evicted from the stream (0 = none)
    );

    -- An event's packets, once however many streams hold it.
    CREATE TABLE events (
        seq     INTEGER PRIMARY KEY,
        at_ms   INTEGER NOT NULL,
        packets BLOB NOT NULL
    );

    -- Which stream holds which event.
    CREATE TABLE slots (
        stream INTEGER NOT NULL,
        seq    INTEGER NOT NULL,
        PRIMARY KEY (stream, seq)
    ) WITHOUT ROWID;
    CREATE INDEX slots_seq ON slots (seq);

    CREATE TABLE sessions (
        pid        TEXT PRIMARY KEY,
        sid        TEXT NOT NULL,
        nsp        TEXT NOT NULL,
        sub        TEXT NOT NULL,
        rooms      TEXT NOT NULL,       -- JSON [[room, epoch, joined_seq], ...]
        live       INTEGER NOT NULL,    -- 1 while its socket is connected
        expires_ms INTEGER NOT NULL     -- parked: when it can no longer be recovered (ms since the Unix epoch)
    ) WITHOUT ROWID;

    -- One row: the highest sequence appended, and that same value when the store was closed cleanly after it.
    CREATE TABLE progress (
        id            INTEGER PRIMARY KEY CHECK (id = 1),
        last_seq      INTEGER NOT NULL,
        clean_through INTEGER
    );
    INSERT INTO progress (id, last_seq, clean_through) VALUES (1, 0, 0);
    ",
];

/// How long a connection waits for another one's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the database could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// SQLite refused.
    #[error("rooms database: {0}")]
    Database(#[from] rusqlite::Error),
    /// The file system refused the write-ahead log (the journal mode SQLite fell back to).
    #[error("rooms database cannot use a write-ahead log here (journal mode {0})")]
    NoWal(String),
    /// The file was written by a newer release.
    #[error(
        "rooms database is at schema version {found}; this release knows up to {SCHEMA_VERSION}"
    )]
    TooNew {
        /// The file's version.
        found: u32,
    },
}

/// Opens the writing connection (see [`crate::sqlite::open_durable`]: WAL, `synchronous = FULL`), schema up to
/// date.
pub fn open_writer(path: &Path) -> Result<Connection, SchemaError> {
    crate::sqlite::open_durable(path, BUSY_TIMEOUT, 32, MIGRATIONS, "rooms").map_err(|error| {
        match error {
            crate::sqlite::SetupError::Database(error) => SchemaError::Database(error),
            crate::sqlite::SetupError::NoWal(mode) => SchemaError::NoWal(mode),
            crate::sqlite::SetupError::TooNew(found) => SchemaError::TooNew { found },
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_version_has_its_migration() {
        assert_eq!(MIGRATIONS.len(), SCHEMA_VERSION as usize);
    }
}
