//! Reading stored messages back: the column lists, row → [`Message`] / [`MessageState`] mapping and the
//! status codes the tables hold.

use std::sync::Arc;

use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row};

use crate::messages::model::{DeviceReceipt, Message, MessageId, MessageState, Status};

/// Columns of a [`Message`], in the order [`message`] reads them (a macro, so statements can be `concat!`ed
/// constants).
macro_rules! message_columns {
    () => {
        "id, recipient, seq, sender, event, data, key, accepted_at, expires_at"
    };
}

/// Columns of a [`MessageState`] (the message, then its status and timestamps), in the order [`state`] reads
/// them.
macro_rules! state_columns {
    () => {
        concat!(
            message_columns!(),
            ", status, sent_at, delivered_at, read_at, expired_at"
        )
    };
}

pub(super) use {message_columns, state_columns};

/// The message with its status, by id.
pub const GET: &str = concat!("SELECT ", state_columns!(), " FROM messages WHERE id = ?1");

/// The receipts of a message, in the order they came.
pub const RECEIPTS: &str =
    "SELECT device, delivered_at FROM receipts WHERE message = ?1 ORDER BY rowid";

/// The number a status is stored as; the order of statuses is kept, so `status < 2` means "not delivered".
/// The statements in `writes` spell these numbers out (0 accepted, 1 sent, 2 delivered, 3 read, 4 expired).
pub const fn status_code(status: Status) -> i64 {
    match status {
        Status::Accepted => 0,
        Status::Sent => 1,
        Status::Delivered => 2,
        Status::Read => 3,
        Status::Expired => 4,
    }
}

/// The status stored as `code`.
pub fn status_from_code(code: i64) -> Option<Status> {
    Some(match code {
        0 => Status::Accepted,
        1 => Status::Sent,
        2 => Status::Delivered,
        3 => Status::Read,
        4 => Status::Expired,
        _ => return None,
    })
}

/// `value` as SQLite stores it: integers are signed 64-bit, so a time or count past `i64::MAX` (only ever an
/// absurd ttl or limit) is clamped to it instead of failing the batch it is in.
pub fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A message id read from column `index`.
pub fn id_at(row: &Row<'_>, index: usize) -> rusqlite::Result<MessageId> {
    let text: String = row.get(index)?;
    MessageId::parse(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(index, Type::Text, "invalid message id".into())
    })
}

/// The status read from column `index`.
pub fn status_at(row: &Row<'_>, index: usize) -> rusqlite::Result<Status> {
    let code: i64 = row.get(index)?;
    status_from_code(code).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(index, Type::Integer, "invalid status".into())
    })
}

/// The message in a row selected with `message_columns!()` (or `state_columns!()`).
pub fn message(row: &Row<'_>) -> rusqlite::Result<Message> {
    let data: String = row.get(5)?;
    Ok(Message {
        id: id_at(row, 0)?,
        to: row.get(1)?,
        seq: row.get(2)?,
        from: row.get(3)?,
        event: row.get(4)?,
        data: Arc::from(data),
        key: row.get(6)?,
        accepted_at: row.get(7)?,
        expires_at: row.get(8)?,
    })
}

/// The message and status in a row selected with `state_columns!()`, without its receipts (see [`receipts`]).
pub fn state(row: &Row<'_>) -> rusqlite::Result<MessageState> {
    Ok(MessageState {
        message: message(row)?,
        status: status_at(row, 9)?,
        sent_at: row.get(10)?,
        delivered_at: row.get(11)?,
        read_at: row.get(12)?,
        expired_at: row.get(13)?,
        devices: Vec::new(),
    })
}

/// The receipts of a message, in the order they came.
pub fn receipts(conn: &Connection, id: &MessageId) -> rusqlite::Result<Vec<DeviceReceipt>> {
    let mut statement = conn.prepare_cached(RECEIPTS)?;
    let rows = statement.query_map([id.as_str()], |row| {
        Ok(DeviceReceipt {
            device: row.get(0)?,
            delivered_at: row.get(1)?,
        })
    })?;
    rows.collect()
}

/// A message with its status and receipts.
pub fn get(conn: &Connection, id: &MessageId) -> rusqlite::Result<Option<MessageState>> {
    let found = conn
        .prepare_cached(GET)?
        .query_row([id.as_str()], state)
        .optional()?;
    found.map(|state| with_receipts(conn, state)).transpose()
}

/// `state` with its receipts filled in.
pub fn with_receipts(conn: &Connection, mut state: MessageState) -> rusqlite::Result<MessageState> {
    state.devices = receipts(conn, &state.message.id)?;
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_round_trip_in_order() {
        let all = [
            Status::Accepted,
            Status::Sent,
            Status::Delivered,
            Status::Read,
            Status::Expired,
        ];
        for pair in all.windows(2) {
            assert!(status_code(pair[0]) < status_code(pair[1]));
        }
        for status in all {
            assert_eq!(status_from_code(status_code(status)), Some(status));
        }
        assert_eq!(status_from_code(5), None);
        // The numbers the statements in `writes` are written with.
        assert_eq!(status_code(Status::Accepted), 0);
        assert_eq!(status_code(Status::Expired), 4);
    }
}
