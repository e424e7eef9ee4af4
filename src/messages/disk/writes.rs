//! The changes the writer applies, each inside the batch's open transaction: accept, sent, delivered, read
//! and the sweep. They follow the memory store rule for rule; a logical refusal (inbox full, unknown message)
//! is an `Ok(Err(..))` that writes nothing, a database error aborts the whole batch. Statuses are written as
//! the numbers of [`rows::status_code`].

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};

use super::rows::{self, int, message_columns};
use crate::messages::model::{
    Accepted, Change, InboxLimits, Message, MessageId, NewMessage, Status,
};
use crate::messages::StoreError;

/// What a change returns: the database's verdict outside, the store's answer inside.
pub type Outcome<T> = rusqlite::Result<Result<T, StoreError>>;

const DELIVERED: i64 = rows::status_code(Status::Delivered);

/// The message stored under a sender's idempotency key (the expression index `messages_key`).
pub const BY_KEY: &str = concat!(
    "SELECT ",
    message_columns!(),
    ", status FROM messages WHERE ifnull(sender, '') = ?1 AND key = ?2 AND key IS NOT NULL"
);

/// The oldest delivered message still in an inbox.
pub const OLDEST_DELIVERED: &str = "SELECT id FROM messages \
     WHERE recipient = ?1 AND forget_at IS NULL AND status >= ?2 ORDER BY seq LIMIT 1";

/// Marks a message sent if it was only accepted.
pub const SENT: &str = "UPDATE messages SET status = 1, sent_at = ?3 \
     WHERE id = ?1 AND recipient = ?2 AND status = 0 RETURNING sender";

/// Inbox messages from one sender up to a sequence that are not read yet.
pub const READ_UP_TO: &str = "SELECT id FROM messages WHERE recipient = ?1 AND forget_at IS NULL \
     AND seq <= ?2 AND sender = ?3 AND status < 3 ORDER BY seq";

/// Inbox messages whose ttl passed, by due time.
pub const EXPIRY_DUE: &str = "SELECT id, recipient, sender, status, expires_at FROM messages \
     WHERE forget_at IS NULL AND expires_at <= ?1 ORDER BY expires_at, id";

/// Records out of the inbox past their retention.
pub const FORGET_DUE: &str =
    "SELECT id, recipient FROM messages WHERE forget_at IS NOT NULL AND forget_at <= ?1";

/// A forgotten message's receipts.
pub const FORGET_RECEIPTS: &str = "DELETE FROM receipts WHERE message = ?1";

fn change(id: &MessageId, from: Option<String>, to: &str, status: Status, at: u64) -> Change {
    Change {
        id: id.clone(),
        from,
        to: to.to_owned(),
        status,
        device: None,
        at,
    }
}

/// Stores `new` at the end of its recipient's inbox, or returns the message stored earlier under the same
/// sender and key.
pub fn accept(conn: &Connection, limits: &InboxLimits, new: NewMessage) -> Outcome<Accepted> {
    if let Some(key) = &new.key {
        let sender = new.from.as_deref().unwrap_or("");
        let earlier = conn
            .prepare_cached(BY_KEY)?
            .query_row(params![sender, key], |row| {
                Ok((rows::message(row)?, rows::status_at(row, 9)?))
            })
            .optional()?;
        if let Some((message, status)) = earlier {
            return Ok(Ok(Accepted {
                message,
                status,
                fresh: false,
            }));
        }
    }
    let (last_seq, mut entries): (u64, u64) = conn
        .prepare_cached("SELECT last_seq, entries FROM inboxes WHERE user = ?1")?
        .query_row([&new.to], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?
        .unwrap_or((0, 0));
    if entries >= limits.max_messages as u64 {
        // Make room by letting the oldest delivered message leave; undelivered ones are never pushed out.
        let oldest: Option<String> = conn
            .prepare_cached(OLDEST_DELIVERED)?
            .query_row(params![new.to, DELIVERED], |row| row.get(0))
            .optional()?;
        let Some(oldest) = oldest else {
            return Ok(Err(StoreError::InboxFull));
        };
        conn.prepare_cached("UPDATE messages SET forget_at = ?2 WHERE id = ?1")?
            .execute(params![
                oldest,
                int(new.at_ms.saturating_add(limits.retention_ms))
            ])?;
        entries -= 1;
    }
    let seq = last_seq + 1;
    let id = MessageId::generate(new.at_ms);
    let mut message = Message::from_new(new, id, seq);
    message.expires_at = message.expires_at.min(i64::MAX as u64);
    conn.prepare_cached(
        "INSERT INTO messages (id, recipient, seq, sender, event, data, key, accepted_at, expires_at, status) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0)",
    )?
    .execute(params![
        message.id.as_str(),
        message.to,
        seq,
        message.from,
        message.event,
        message.data.as_ref(),
        message.key,
        int(message.accepted_at),
        int(message.expires_at),
    ])?;
    conn.prepare_cached(
        "INSERT INTO inboxes (user, last_seq, entries, records) VALUES (?1, ?2, ?3, 1) \
         ON CONFLICT (user) DO UPDATE SET last_seq = excluded.last_seq, entries = excluded.entries, \
         records = records + 1",
    )?
    .execute(params![message.to, seq, entries + 1])?;
    Ok(Ok(Accepted {
        message,
        status: Status::Accepted,
        fresh: true,
    }))
}

/// Marks `user`'s messages among `ids` that were only accepted as sent.
pub fn mark_sent(
    conn: &Connection,
    user: &str,
    ids: &[MessageId],
    at_ms: u64,
) -> Outcome<Vec<Change>> {
    let mut statement = conn.prepare_cached(SENT)?;
    let mut changes = Vec::new();
    for id in ids {
        let sender: Option<Option<String>> = statement
            .query_row(params![id.as_str(), user, int(at_ms)], |row| row.get(0))
            .optional()?;
        if let Some(from) = sender {
            changes.push(change(id, from, user, Status::Sent, at_ms));
        }
    }
    Ok(Ok(changes))
}

/// Records `device`'s receipts for `user`'s messages among `ids` and moves them to delivered.
pub fn mark_delivered(
    conn: &Connection,
    user: &str,
    device: &str,
    ids: &[MessageId],
    at_ms: u64,
) -> Outcome<Vec<Change>> {
    let mut find = conn
        .prepare_cached("SELECT sender, status FROM messages WHERE id = ?1 AND recipient = ?2")?;
    let mut receipt = conn.prepare_cached(
        "INSERT INTO receipts (message, device, delivered_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (message, device) DO NOTHING",
    )?;
    let mut deliver = conn.prepare_cached(
        "UPDATE messages SET status = 2, sent_at = ifnull(sent_at, ?2), \
         delivered_at = ifnull(delivered_at, ?2) WHERE id = ?1",
    )?;
    let mut changes = Vec::new();
    for id in ids {
        let found = find
            .query_row(params![id.as_str(), user], |row| {
                Ok((row.get::<_, Option<String>>(0)?, rows::status_at(row, 1)?))
            })
            .optional()?;
        let Some((from, status)) = found else {
            continue;
        };
        if status == Status::Expired
            || receipt.execute(params![id.as_str(), device, int(at_ms)])? == 0
        {
            continue;
        }
        if status == Status::Read {
            // A late receipt: kept, but the status does not move back.
            continue;
        }
        deliver.execute(params![id.as_str(), int(at_ms)])?;
        changes.push(Change {
            device: Some(device.to_owned()),
            ..change(id, from, user, Status::Delivered, at_ms)
        });
    }
    Ok(Ok(changes))
}

/// Marks read every inbox message from `from` to `user` up to `up_to`; they leave the inbox.
pub fn mark_read(
    conn: &Connection,
    limits: &InboxLimits,
    user: &str,
    from: &str,
    up_to: &MessageId,
    at_ms: u64,
) -> Outcome<Vec<Change>> {
    let up_to_seq: Option<u64> = conn
        .prepare_cached("SELECT seq FROM messages WHERE id = ?1 AND recipient = ?2")?
        .query_row(params![up_to.as_str(), user], |row| row.get(0))
        .optional()?;
    let Some(up_to_seq) = up_to_seq else {
        return Ok(Err(StoreError::UnknownMessage));
    };
    let ids = conn
        .prepare_cached(READ_UP_TO)?
        .query_map(params![user, up_to_seq, from], |row| rows::id_at(row, 0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut read = conn.prepare_cached(
        "UPDATE messages SET status = 3, read_at = ?2, forget_at = ?3 WHERE id = ?1",
    )?;
    let mut changes = Vec::with_capacity(ids.len());
    for id in &ids {
        read.execute(params![
            id.as_str(),
            int(at_ms),
            int(at_ms.saturating_add(limits.retention_ms))
        ])?;
        changes.push(change(id, Some(from.to_owned()), user, Status::Read, at_ms));
    }
    if !ids.is_empty() {
        conn.prepare_cached("UPDATE inboxes SET entries = entries - ?2 WHERE user = ?1")?
            .execute(params![user, ids.len()])?;
    }
    Ok(Ok(changes))
}

/// Expires inbox messages whose ttl passed by `now_ms` and forgets records past their retention, both found
/// through their indexes.
pub fn sweep(conn: &Connection, limits: &InboxLimits, now_ms: u64) -> Outcome<Vec<Change>> {
    let changes = expire(conn, limits, now_ms)?;
    forget(conn, now_ms)?;
    Ok(Ok(changes))
}

fn expire(conn: &Connection, limits: &InboxLimits, now_ms: u64) -> rusqlite::Result<Vec<Change>> {
    let due = conn
        .prepare_cached(EXPIRY_DUE)?
        .query_map([int(now_ms)], |row| {
            Ok((
                rows::id_at(row, 0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Option<String>>(2)?,
                rows::status_at(row, 3)?,
                row.get::<_, u64>(4)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut leave = conn.prepare_cached("UPDATE messages SET forget_at = ?2 WHERE id = ?1")?;
    let mut expire = conn.prepare_cached(
        "UPDATE messages SET forget_at = ?2, status = 4, expired_at = ?3 WHERE id = ?1",
    )?;
    let mut changes = Vec::new();
    let mut left: HashMap<String, u64> = HashMap::new();
    for (id, to, from, status, expires_at) in due {
        let forget_at = int(expires_at.saturating_add(limits.retention_ms));
        if status < Status::Delivered {
            expire.execute(params![id.as_str(), forget_at, int(now_ms)])?;
            changes.push(change(&id, from, &to, Status::Expired, now_ms));
        } else {
            leave.execute(params![id.as_str(), forget_at])?;
        }
        *left.entry(to).or_default() += 1;
    }
    let mut shrink =
        conn.prepare_cached("UPDATE inboxes SET entries = entries - ?2 WHERE user = ?1")?;
    for (user, count) in left {
        shrink.execute(params![user, count])?;
    }
    Ok(changes)
}

fn forget(conn: &Connection, now_ms: u64) -> rusqlite::Result<()> {
    let due = conn
        .prepare_cached(FORGET_DUE)?
        .query_map([int(now_ms)], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut receipts = conn.prepare_cached(FORGET_RECEIPTS)?;
    let mut record = conn.prepare_cached("DELETE FROM messages WHERE id = ?1")?;
    let mut gone: HashMap<String, u64> = HashMap::new();
    for (id, to) in due {
        receipts.execute([&id])?;
        record.execute([&id])?;
        *gone.entry(to).or_default() += 1;
    }
    let mut shrink =
        conn.prepare_cached("UPDATE inboxes SET records = records - ?2 WHERE user = ?1")?;
    // Forgotten only once none of its records is left, so a sequence is never reused while a message that had
    // it can still be read.
    let mut drop_empty = conn
        .prepare_cached("DELETE FROM inboxes WHERE user = ?1 AND records <= 0 AND entries <= 0")?;
    for (user, count) in gone {
        shrink.execute(params![user, count])?;
        drop_empty.execute([&user])?;
    }
    Ok(())
}
