//! The values the message layer passes around: ids, messages, statuses, receipts and changes.

use std::fmt;
use std::sync::Arc;

use rand::Rng;
use serde::Serialize;

/// Longest message id accepted from a client or a URL.
const MAX_ID_BYTES: usize = 64;

/// A message id: assigned by the server when a message is accepted, unique across the store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(Arc<str>);

impl Serialize for MessageId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl MessageId {
    /// A fresh id: the acceptance time in milliseconds (hex) then 64 random bits, so ids sort roughly by time.
    pub fn generate(at_ms: u64) -> MessageId {
        let random: u64 = rand::thread_rng().gen();
        MessageId(format!("{at_ms:011x}{random:016x}").into())
    }

    /// An id read from outside (a client event, a URL): 1 to 64 ASCII letters, digits, `-` or `_`.
    pub fn parse(text: &str) -> Option<MessageId> {
        let valid = !text.is_empty()
            && text.len() <= MAX_ID_BYTES
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        valid.then(|| MessageId(text.into()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Durable in the store.
    Accepted,
    /// Written to at least one of the recipient's connections.
    Sent,
    /// Acknowledged by at least one of the recipient's devices.
    Delivered,
    /// Covered by the recipient's read marker.
    Read,
    /// Its ttl passed before any device acknowledged it.
    Expired,
}

impl Status {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Accepted => "accepted",
            Status::Sent => "sent",
            Status::Delivered => "delivered",
            Status::Read => "read",
            Status::Expired => "expired",
        }
    }

    /// The status named `text`.
    pub fn parse(text: &str) -> Option<Status> {
        Some(match text {
            "accepted" => Status::Accepted,
            "sent" => Status::Sent,
            "delivered" => Status::Delivered,
            "read" => Status::Read,
            "expired" => Status::Expired,
            _ => return None,
        })
    }

    /// True once nothing can change the status any more.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Read | Status::Expired)
    }
}

/// A message as a sender hands it over, checked by the caller.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Sending user; `None` for a backend that sends on nobody's behalf.
    pub from: Option<String>,
    /// Recipient user.
    pub to: String,
    /// Event name the recipient's devices receive it under.
    pub event: String,
    /// The event's data, as JSON text.
    pub data: Arc<str>,
    /// The sender's idempotency key.
    pub key: Option<String>,
    /// Acceptance time, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// How long it stays in the inbox, in milliseconds.
    pub ttl_ms: u64,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its id.
    pub id: MessageId,
    /// Its place in the recipient's inbox: 1, 2, 3... per recipient.
    pub seq: u64,
    /// Sending user, if any.
    pub from: Option<String>,
    /// Recipient user.
    pub to: String,
    /// Event name.
    pub event: String,
    /// Data, as JSON text.
    pub data: Arc<str>,
    /// The sender's idempotency key.
    pub key: Option<String>,
    /// Acceptance time (ms since the Unix epoch).
    pub accepted_at: u64,
    /// When it leaves the inbox if not read before (ms since the Unix epoch).
    pub expires_at: u64,
}

impl Message {
    /// The message built from `new` with its id and inbox sequence.
    pub fn from_new(new: NewMessage, id: MessageId, seq: u64) -> Message {
        Message {
            id,
            seq,
            expires_at: new.at_ms.saturating_add(new.ttl_ms),
            accepted_at: new.at_ms,
            from: new.from,
            to: new.to,
            event: new.event,
            data: new.data,
            key: new.key,
        }
    }

    /// The `meta` argument a device receives after the data: `{id, from, at, seq}`.
    pub fn meta_json(&self) -> String {
        serde_json::json!({
            "id": self.id,
            "from": self.from,
            "at": self.accepted_at,
            "seq": self.seq,
        })
        .to_string()
    }
}

/// One device's acknowledgement of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceReceipt {
    /// The device.
    pub device: String,
    /// When it acknowledged (ms since the Unix epoch).
    pub delivered_at: u64,
}

/// A message with where it is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageState {
    /// The message.
    pub message: Message,
    /// Current status.
    pub status: Status,
    /// When it was first written to a connection.
    pub sent_at: Option<u64>,
    /// When a device first acknowledged it.
    pub delivered_at: Option<u64>,
    /// When the read marker covered it.
    pub read_at: Option<u64>,
    /// When it expired.
    pub expired_at: Option<u64>,
    /// Per-device receipts, in the order they came.
    pub devices: Vec<DeviceReceipt>,
}

impl MessageState {
    /// A message just accepted.
    pub fn new(message: Message) -> MessageState {
        MessageState {
            message,
            status: Status::Accepted,
            sent_at: None,
            delivered_at: None,
            read_at: None,
            expired_at: None,
            devices: Vec::new(),
        }
    }

    /// The API's view: `{id, seq, from, to, event, data, status, accepted_at, sent_at?, delivered_at?,
    /// read_at?, expired_at?, expires_at, devices: [{device, delivered_at}]}`.
    pub fn to_json(&self) -> serde_json::Value {
        let m = &self.message;
        let data: serde_json::Value =
            serde_json::from_str(&m.data).unwrap_or(serde_json::Value::Null);
        let mut out = serde_json::json!({
            "id": m.id,
            "seq": m.seq,
            "from": m.from,
            "to": m.to,
            "event": m.event,
            "data": data,
            "status": self.status,
            "accepted_at": m.accepted_at,
            "expires_at": m.expires_at,
            "devices": self.devices,
        });
        for (name, value) in [
            ("sent_at", self.sent_at),
            ("delivered_at", self.delivered_at),
            ("read_at", self.read_at),
            ("expired_at", self.expired_at),
        ] {
            if let Some(value) = value {
                out[name] = value.into();
            }
        }
        if let Some(key) = &m.key {
            out["key"] = key.as_str().into();
        }
        out
    }
}

/// What [`super::MessageStore::accept`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The stored message (the earlier one for a repeated idempotency key).
    pub message: Message,
    /// Its current status.
    pub status: Status,
    /// False when the key had been used: nothing new was stored.
    pub fresh: bool,
}

/// A status change, for the sender's devices and the webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The message.
    pub id: MessageId,
    /// Its sender, if any.
    pub from: Option<String>,
    /// Its recipient.
    pub to: String,
    /// The new status (`delivered` once per device receipt).
    pub status: Status,
    /// The device, for a receipt.
    pub device: Option<String>,
    /// When (ms since the Unix epoch).
    pub at: u64,
}

impl Change {
    /// The `message:status` payload: `{id, status, to, device?, at}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut out = serde_json::json!({
            "id": self.id,
            "status": self.status,
            "to": self.to,
            "at": self.at,
        });
        if let Some(device) = &self.device {
            out["device"] = device.as_str().into();
        }
        out
    }
}

/// A page of a device's unacknowledged messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pending {
    /// Messages, oldest first.
    pub messages: Vec<Message>,
    /// The inbox's last sequence when the page was read: every later message is newer than this read.
    pub last_seq: u64,
}

/// Bounds every store applies to inboxes and records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxLimits {
    /// Most messages one inbox holds; past it the oldest delivered one leaves, and with none delivered a new
    /// message is refused.
    pub max_messages: usize,
    /// How long a message's record (status, receipts) is kept after it leaves the inbox, in milliseconds.
    pub retention_ms: u64,
    /// Most message records held at once (the in-memory store; the disk and Redis stores are bounded by
    /// their disk and memory); past it new messages are refused.
    pub max_records: usize,
}

impl Default for InboxLimits {
    fn default() -> Self {
        InboxLimits {
            max_messages: 1000,
            retention_ms: 24 * 3600 * 1000,
            max_records: 1_000_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_and_generate() {
        let id = MessageId::generate(1_700_000_000_000);
        assert_eq!(MessageId::parse(id.as_str()), Some(id.clone()));
        assert_eq!(id.as_str().len(), 27);
        assert!(MessageId::parse("").is_none());
        assert!(MessageId::parse("a b").is_none());
        assert!(MessageId::parse(&"a".repeat(65)).is_none());
        assert!(MessageId::parse("c-17_x").is_some());
    }

    #[test]
    fn statuses_order_and_names() {
        assert!(Status::Accepted < Status::Sent && Status::Sent < Status::Delivered);
        assert!(Status::Delivered < Status::Read);
        for status in [
            Status::Accepted,
            Status::Sent,
            Status::Delivered,
            Status::Read,
            Status::Expired,
        ] {
            assert_eq!(Status::parse(status.as_str()), Some(status));
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::Value::from(status.as_str())
            );
        }
    }
}

/// One device's marks in a [`super::MessageStore::mark_batch`]: with a `device`, receipts as
/// [`super::MessageStore::mark_delivered`] stores them; without, sent marks as
/// [`super::MessageStore::mark_sent`] does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marks {
    /// The recipient whose messages these are.
    pub user: String,
    /// The device that acknowledged them, or `None` for messages written to one of the user's connections.
    pub device: Option<String>,
    /// The messages.
    pub ids: Vec<MessageId>,
    /// When.
    pub at_ms: u64,
}
