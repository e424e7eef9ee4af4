//! The checks a direct message goes through before it is stored, whichever way it came in (a client's `dm`
//! event, `POST /v1/users/{user}/messages`), and the errors both entry paths answer with.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{DirectLimits, STATUS_EVENT};
use crate::app::{check_data, validate_event_name, PublishLimits};
use crate::auth::{user_room, validate_room_name};
use crate::messages::{now_ms, MessageId, NewMessage, StoreError};

/// Why a direct message (or an `ack` / `read`) was refused. [`DmError::code`] is the `error` of the reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DmError {
    /// The sender's token does not name the recipient in its `dm` claim.
    #[error("forbidden")]
    Forbidden,
    /// A malformed request; the text says what.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The recipient's inbox is full of undelivered messages.
    #[error("the recipient's inbox is full")]
    InboxFull,
    /// No such message (or not one of this user's).
    #[error("unknown message")]
    UnknownMessage,
    /// The store could not make it durable now; nothing was stored.
    #[error("unavailable")]
    Unavailable,
    /// The connection has too many messages waiting for the store; nothing was stored.
    #[error("busy: too many messages from this connection wait for the store")]
    Busy,
    /// `ack` or `read` from a connection that is not on the messages namespace.
    #[error("not a device: messages are on namespace {0}")]
    NotADevice(String),
}

impl DmError {
    /// The `error` code of the reply: `forbidden`, `invalid`, `inbox_full`, `unknown_message`, `unavailable`,
    /// `busy`, `not_a_device`.
    pub fn code(&self) -> &'static str {
        match self {
            DmError::Forbidden => "forbidden",
            DmError::Invalid(_) => "invalid",
            DmError::InboxFull => "inbox_full",
            DmError::UnknownMessage => "unknown_message",
            DmError::Unavailable => "unavailable",
            DmError::Busy => "busy",
            DmError::NotADevice(_) => "not_a_device",
        }
    }

    /// `{ok: false, error, detail}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "ok": false, "error": self.code(), "detail": self.to_string() })
    }
}

impl From<StoreError> for DmError {
    fn from(error: StoreError) -> DmError {
        match error {
            StoreError::InboxFull => DmError::InboxFull,
            StoreError::UnknownMessage => DmError::UnknownMessage,
            StoreError::Unavailable(detail) => {
                tracing::warn!(%detail, "message store unavailable");
                DmError::Unavailable
            }
        }
    }
}

/// The fields of a message as a sender gives them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendFields<'a> {
    /// Recipient (the client event only; the HTTP API has it in the path).
    #[serde(default)]
    pub to: Option<String>,
    /// Event name the recipient's devices get it under.
    pub event: String,
    /// Data, any JSON; `null` when absent.
    #[serde(borrow, default)]
    pub data: Option<&'a RawValue>,
    /// The sender's idempotency key.
    #[serde(default)]
    pub id: Option<String>,
    /// Seconds the message stays in the inbox.
    #[serde(default)]
    pub ttl: Option<u64>,
    /// Sender, for a backend sending on a user's behalf (the HTTP API only).
    #[serde(default)]
    pub from: Option<String>,
}

/// Checks a user id named in a request (recipient or sender): the rules of a token's `sub`.
pub fn check_user(user: &str, what: &str) -> Result<(), DmError> {
    if user.is_empty() {
        return Err(DmError::Invalid(format!("{what} is empty")));
    }
    validate_room_name(&user_room(user))
        .map_err(|e| DmError::Invalid(format!("{what} is not a valid user id: {e}")))
}

/// Checks `fields` for a message from `from` to `to` and builds it.
pub fn check_message(
    from: Option<String>,
    to: &str,
    fields: &SendFields<'_>,
    limits: &DirectLimits,
    publish: &PublishLimits,
) -> Result<NewMessage, DmError> {
    check_user(to, "to")?;
    if let Some(from) = &from {
        check_user(from, "from")?;
    }
    validate_event_name(&fields.event).map_err(DmError::Invalid)?;
    if fields.event == STATUS_EVENT {
        return Err(DmError::Invalid(format!(
            "event name '{STATUS_EVENT}' is reserved"
        )));
    }
    let data = fields.data.map_or("null", |d| d.get());
    check_data(data.as_bytes(), 0, publish).map_err(|e| DmError::Invalid(e.to_string()))?;
    let key = match &fields.id {
        Some(id) => Some(
            MessageId::parse(id)
                .ok_or_else(|| {
                    DmError::Invalid("id must be 1 to 64 ASCII letters, digits, '-' or '_'".into())
                })?
                .as_str()
                .to_owned(),
        ),
        None => None,
    };
    let max_ttl = limits.max_ttl.as_secs();
    let ttl = match fields.ttl {
        Some(ttl) if ttl == 0 || ttl > max_ttl => {
            return Err(DmError::Invalid(format!(
                "ttl must be 1 to {max_ttl} seconds"
            )))
        }
        Some(ttl) => ttl,
        None => limits.default_ttl.as_secs(),
    };
    Ok(NewMessage {
        from,
        to: to.to_owned(),
        event: fields.event.clone(),
        data: Arc::from(data),
        key,
        at_ms: now_ms(),
        ttl_ms: ttl.saturating_mul(1000),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(json: &str) -> SendFields<'_> {
        serde_json::from_str(json).unwrap()
    }

    fn check(json: &str) -> Result<NewMessage, DmError> {
        check_message(
            Some("alice".into()),
            "bob",
            &fields(json),
            &DirectLimits::default(),
            &PublishLimits::default(),
        )
    }

    #[test]
    fn accepts_a_plain_message() {
        let m = check(r#"{"event":"chat","data":{"text":"hi"},"id":"c-17","ttl":60}"#).unwrap();
        assert_eq!((m.to.as_str(), m.event.as_str()), ("bob", "chat"));
        assert_eq!(&*m.data, r#"{"text":"hi"}"#);
        assert_eq!((m.key.as_deref(), m.ttl_ms), (Some("c-17"), 60_000));
        let m = check(r#"{"event":"chat"}"#).unwrap();
        assert_eq!(
            (&*m.data, m.key, m.ttl_ms),
            ("null", None, 7 * 24 * 3600 * 1000)
        );
    }

    #[test]
    fn refuses_bad_fields() {
        for (json, detail) in [
            (r#"{"event":""}"#, "event name"),
            (r#"{"event":"connect"}"#, "reserved"),
            (r#"{"event":"message:status"}"#, "reserved"),
            (r#"{"event":"chat","id":"a b"}"#, "id must be"),
            (r#"{"event":"chat","ttl":0}"#, "ttl must be"),
            (r#"{"event":"chat","ttl":99999999}"#, "ttl must be"),
        ] {
            let error = check(json).unwrap_err();
            assert_eq!(error.code(), "invalid");
            assert!(error.to_string().contains(detail), "{json}: {error}");
        }
        let deep = format!(
            "{{\"event\":\"chat\",\"data\":{}1{}}}",
            "[".repeat(70),
            "]".repeat(70)
        );
        assert_eq!(check(&deep).unwrap_err().code(), "invalid");
        let bad_to = check_message(
            None,
            "a b",
            &fields(r#"{"event":"chat"}"#),
            &DirectLimits::default(),
            &PublishLimits::default(),
        );
        assert_eq!(bad_to.unwrap_err().code(), "invalid");
        assert!(serde_json::from_str::<SendFields<'_>>(r#"{"event":"e","x":1}"#).is_err());
    }
}
