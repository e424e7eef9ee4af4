//! Reads beside the writer: a small pool of read-only connections used from blocking threads, so a read
//! never waits behind a commit's sync (WAL lets readers see the last commit while the next one is written).

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};

use super::rows::{self, int, message_columns, state_columns};
use super::schema;
use crate::messages::model::{MessageState, Pending};
use crate::messages::StoreError;

/// Idle read connections kept for the next reads; more may be open while many reads run at once.
const MAX_IDLE: usize = 8;

/// Read-only connections to the store's file.
pub struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    /// Readers of the file at `path` (opened when first needed).
    pub fn new(path: PathBuf) -> Arc<Readers> {
        Arc::new(Readers {
            path,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Runs `read` on a read connection, in one read transaction (one snapshot), off the async threads.
    pub async fn run<T, F>(self: &Arc<Self>, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let readers = Arc::clone(self);
        tokio::task::spawn_blocking(move || readers.run_here(read))
            .await
            .map_err(|_| StoreError::Unavailable("read task failed".into()))?
            .map_err(|error| {
                tracing::warn!(%error, "message store read failed");
                StoreError::Unavailable(error.to_string())
            })
    }

    fn run_here<T>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let idle = self.idle.lock().pop();
        let conn = match idle {
            Some(conn) => conn,
            None => schema::open_reader(&self.path)?,
        };
        let result = snapshot(&conn, read);
        // A connection that failed is dropped rather than handed to the next read.
        if result.is_ok() {
            let mut idle = self.idle.lock();
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
        }
        result
    }
}

fn snapshot<T>(
    conn: &Connection,
    read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.execute_batch("BEGIN")?;
    let result = read(conn);
    let end = conn.execute_batch("COMMIT");
    let value = result?;
    end.map(|()| value)
}

/// An inbox's last sequence.
pub const LAST_SEQ: &str = "SELECT last_seq FROM inboxes WHERE user = ?1";

/// A device's unacknowledged inbox messages after a sequence.
pub const PENDING: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages m WHERE recipient = ?1 AND forget_at IS NULL AND seq > ?2 \
     AND NOT EXISTS (SELECT 1 FROM receipts r WHERE r.message = m.id AND r.device = ?3) \
     ORDER BY seq LIMIT ?4"
);

/// Inbox messages after a sequence, with their status.
pub const INBOX: &str = concat!(
    "SELECT ",
    state_columns!(),
    " FROM messages WHERE recipient = ?1 AND forget_at IS NULL AND seq > ?2 ORDER BY seq LIMIT ?3"
);

/// Inbox messages of `user` after `after` that `device` has not acknowledged, with the inbox's last sequence.
pub fn pending(
    conn: &Connection,
    user: &str,
    device: &str,
    after: u64,
    limit: usize,
) -> rusqlite::Result<Pending> {
    let last_seq: u64 = conn
        .prepare_cached(LAST_SEQ)?
        .query_row([user], |row| row.get(0))
        .optional()?
        .unwrap_or(0);
    let messages = conn
        .prepare_cached(PENDING)?
        .query_map(
            params![user, int(after), device, int(limit as u64)],
            rows::message,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Pending { messages, last_seq })
}

/// Inbox messages of `user` after `since`, with their status and receipts.
pub fn inbox(
    conn: &Connection,
    user: &str,
    since: u64,
    limit: usize,
) -> rusqlite::Result<Vec<MessageState>> {
    let states = conn
        .prepare_cached(INBOX)?
        .query_map(params![user, int(since), int(limit as u64)], rows::state)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    states
        .into_iter()
        .map(|state| rows::with_receipts(conn, state))
        .collect()
}
