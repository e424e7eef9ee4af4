//! The checks every publish goes through before it is sequenced, whichever way it came in (HTTP API, the Redis
//! ingest channel, a client's `publish` event): namespace, rooms, event name, and the shape of `data`.
//!
//! One place for them means a limit raised or tightened applies to every entry path at once.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{validate_event_name, Tidings};
use crate::auth::validate_room_name;
use crate::socketio::packet::{check_placeholders, nesting_depth};

/// Bounds on what one publish may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishLimits {
    /// Most rooms one event may target.
    pub max_rooms: usize,
    /// Deepest nesting of arrays and objects accepted in `data`.
    pub max_json_depth: usize,
    /// Largest raw message accepted on the Redis ingest channel (the HTTP API has its own body limit).
    pub max_ingest_bytes: usize,
}

impl Default for PublishLimits {
    fn default() -> Self {
        PublishLimits {
            max_rooms: 1000,
            max_json_depth: 64,
            max_ingest_bytes: 1024 * 1024,
        }
    }
}

/// The fields of a publish request, as parsed by the entry path.
pub struct PublishFields<'a> {
    /// `namespace`; `/` when absent.
    pub namespace: Option<String>,
    /// `room`.
    pub room: Option<String>,
    /// `rooms`.
    pub rooms: Option<Vec<String>>,
    /// `event`.
    pub event: String,
    /// `data`, raw; `null` when absent.
    pub data: Option<&'a RawValue>,
    /// `ephemeral`: no offset, history or replay for this event in any of its rooms.
    pub ephemeral: bool,
}

/// A publish that passed every check, ready for [`Tidings::publish`].
#[derive(Debug)]
pub struct CheckedPublish<'a> {
    /// The namespace.
    pub nsp: String,
    /// Sorted, without duplicates.
    pub rooms: Vec<String>,
    /// The event name.
    pub event: String,
    /// The JSON data.
    pub data: &'a [u8],
    /// Ephemeral in every room, whatever the rooms' policies say.
    pub ephemeral: bool,
}

/// Why a publish request was refused; [`RequestError::code`] is the API error code and the metric label.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    /// The body is not the expected JSON object.
    #[error("invalid request body: {0}")]
    InvalidJson(String),
    /// A message larger than the configured limit.
    #[error("message is larger than {0} bytes")]
    TooLarge(usize),
    /// The namespace is not configured.
    #[error("namespace '{0}' is not configured")]
    UnknownNamespace(String),
    /// Neither `room` nor `rooms`.
    #[error("give `room` or `rooms`")]
    MissingRoom,
    /// More rooms than allowed.
    #[error("at most {0} rooms per event")]
    TooManyRooms(usize),
    /// A room name that is not allowed.
    #[error("{0}")]
    InvalidRoom(String),
    /// An event name that is not allowed.
    #[error("{0}")]
    InvalidEvent(String),
    /// `data` nests deeper than allowed.
    #[error("data nests deeper than {0} levels")]
    TooDeep(usize),
    /// `data` contains an object shaped like a binary placeholder, which clients would try to resolve.
    #[error("data must not contain binary placeholders")]
    Placeholder,
}

impl RequestError {
    /// A stable short code for API errors and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            RequestError::InvalidJson(_) => "invalid_json",
            RequestError::TooLarge(_) => "payload_too_large",
            RequestError::UnknownNamespace(_) => "unknown_namespace",
            RequestError::MissingRoom => "missing_room",
            RequestError::TooManyRooms(_) => "too_many_rooms",
            RequestError::InvalidRoom(_) => "invalid_room",
            RequestError::InvalidEvent(_) => "invalid_event",
            RequestError::TooDeep(_) => "too_deep",
            RequestError::Placeholder => "invalid_data",
        }
    }
}

/// Checks `data` (raw JSON, attachments already counted) against the depth limit and the placeholder rule.
pub fn check_data(
    data: &[u8],
    attachments: usize,
    limits: &PublishLimits,
) -> Result<(), RequestError> {
    if nesting_depth(data) > limits.max_json_depth {
        return Err(RequestError::TooDeep(limits.max_json_depth));
    }
    check_placeholders(data, attachments).map_err(|_| RequestError::Placeholder)
}

impl Tidings {
    /// The publish limits of this node.
    pub fn publish_limits(&self) -> &PublishLimits {
        &self.publish_limits
    }

    /// Checks a publish request's fields against the node's namespaces and limits.
    pub fn check_publish<'a>(
        &self,
        fields: PublishFields<'a>,
    ) -> Result<CheckedPublish<'a>, RequestError> {
        let nsp = fields.namespace.unwrap_or_else(|| "/".to_owned());
        if self.namespace(&nsp).is_none() {
            return Err(RequestError::UnknownNamespace(nsp));
        }
        let mut rooms = fields.rooms.unwrap_or_default();
        rooms.extend(fields.room);
        if rooms.is_empty() {
            return Err(RequestError::MissingRoom);
        }
        if rooms.len() > self.publish_limits.max_rooms {
            return Err(RequestError::TooManyRooms(self.publish_limits.max_rooms));
        }
        for room in &rooms {
            validate_room_name(room).map_err(|e| RequestError::InvalidRoom(e.to_string()))?;
        }
        rooms.sort();
        rooms.dedup();
        validate_event_name(&fields.event).map_err(RequestError::InvalidEvent)?;
        let data = fields
            .data
            .map_or(b"null".as_slice(), |d| d.get().as_bytes());
        check_data(data, 0, &self.publish_limits)?;
        Ok(CheckedPublish {
            nsp,
            rooms,
            event: fields.event,
            data,
            ephemeral: fields.ephemeral,
        })
    }

    /// Parses and checks a message of the Redis ingest channel:
    /// `{room|rooms, event, data?, namespace?, id?}`.
    pub fn check_ingest<'a>(&self, raw: &'a [u8]) -> Result<CheckedPublish<'a>, RequestError> {
        // Unknown fields (such as the dedup `id`) are ignored, as they always were on this channel.
        #[derive(Deserialize)]
        struct Ingest<'a> {
            room: Option<String>,
            rooms: Option<Vec<String>>,
            event: String,
            #[serde(borrow)]
            data: Option<&'a RawValue>,
            namespace: Option<String>,
            #[serde(default)]
            ephemeral: bool,
        }
        if raw.len() > self.publish_limits.max_ingest_bytes {
            return Err(RequestError::TooLarge(self.publish_limits.max_ingest_bytes));
        }
        let message: Ingest<'a> =
            serde_json::from_slice(raw).map_err(|e| RequestError::InvalidJson(e.to_string()))?;
        self.check_publish(PublishFields {
            namespace: message.namespace,
            room: message.room,
            rooms: message.rooms,
            event: message.event,
            data: message.data,
            ephemeral: message.ephemeral,
        })
    }
}
