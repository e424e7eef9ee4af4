//! The events a client may send: `subscribe`, `unsubscribe` and `publish`. Anything else is refused with
//! an error ack and counted, never forwarded.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Tidings, RESERVED_EVENTS};
use crate::auth::validate_room_name;
use crate::hub::{Event, RoomKey};
use crate::socketio::{ClientEvent, Socket};

const OK: &[u8] = br#"{"ok":true}"#;

/// Handles one client event.
pub(super) fn handle(app: &Tidings, socket: &Arc<Socket>, event: ClientEvent) {
    let outcome = match event.name.as_str() {
        "subscribe" => subscribe(app, socket, &event),
        "unsubscribe" => unsubscribe(app, socket, &event),
        "publish" => publish(app, socket, &event),
        "history" => history(app, socket, &event),
        _ => Err(Refusal::UnknownEvent),
    };
    let reply = match outcome {
        Ok(reply) => reply,
        Err(refusal) => {
            metrics::counter!("tidings_client_events_refused_total", "reason" => refusal.label())
                .increment(1);
            tracing::debug!(socket = %socket.id(), event = %event.name, reason = %refusal, "client event refused");
            serde_json::json!({ "ok": false, "error": refusal.to_string() })
                .to_string()
                .into_bytes()
        }
    };
    if let Some(id) = event.ack {
        let _ = socket.ack(id, &[&reply]);
    }
}

/// Why a client event was refused; the text goes back in the ack.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    /// Not one of the reserved client events.
    #[error("unknown event")]
    UnknownEvent,
    /// The token (or room policy) does not allow it.
    #[error("forbidden")]
    Forbidden,
    /// Malformed arguments; the text says which.
    #[error("{0}")]
    BadRequest(String),
}

impl Refusal {
    fn label(&self) -> &'static str {
        match self {
            Refusal::UnknownEvent => "unknown_event",
            Refusal::Forbidden => "forbidden",
            Refusal::BadRequest(_) => "bad_request",
        }
    }
}

fn room_arg(event: &ClientEvent) -> Result<String, Refusal> {
    let first = event
        .args
        .first()
        .ok_or_else(|| Refusal::BadRequest("room name required".into()))?;
    let room: String = serde_json::from_slice(first)
        .map_err(|_| Refusal::BadRequest("room name must be a string".into()))?;
    validate_room_name(&room).map_err(|e| Refusal::BadRequest(e.to_string()))?;
    Ok(room)
}

fn subscribe(app: &Tidings, socket: &Arc<Socket>, event: &ClientEvent) -> Result<Vec<u8>, Refusal> {
    let room = room_arg(event)?;
    let user = socket.user().ok_or(Refusal::Forbidden)?;
    if !user.may_join(&room) {
        return Err(Refusal::Forbidden);
    }
    app.join(socket, &room);
    Ok(OK.to_vec())
}

fn unsubscribe(
    app: &Tidings,
    socket: &Arc<Socket>,
    event: &ClientEvent,
) -> Result<Vec<u8>, Refusal> {
    let room = room_arg(event)?;
    app.leave(socket, &room);
    Ok(OK.to_vec())
}

#[derive(Deserialize)]
struct PublishArgs<'a> {
    room: String,
    event: String,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

/// Checks an event name a publisher chose.
pub fn validate_event_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 {
        return Err("event name must be 1 to 128 bytes".into());
    }
    if RESERVED_EVENTS.contains(&name) {
        return Err(format!("event name '{name}' is reserved"));
    }
    if name.chars().any(char::is_control) {
        return Err("event name must not contain control characters".into());
    }
    Ok(())
}

fn publish(app: &Tidings, socket: &Arc<Socket>, event: &ClientEvent) -> Result<Vec<u8>, Refusal> {
    let first = event
        .args
        .first()
        .ok_or_else(|| Refusal::BadRequest("publish needs {room, event, data}".into()))?;
    let args: PublishArgs<'_> = serde_json::from_slice(first)
        .map_err(|e| Refusal::BadRequest(format!("publish needs {{room, event, data}}: {e}")))?;
    validate_room_name(&args.room).map_err(|e| Refusal::BadRequest(e.to_string()))?;
    validate_event_name(&args.event).map_err(Refusal::BadRequest)?;
    let user = socket.user().ok_or(Refusal::Forbidden)?;
    let key = RoomKey::new(socket.nsp(), &args.room);
    let by_claim = user.may_publish(&args.room);
    let by_policy = app.policy_allows_publish(&args.room) && app.hub.is_member(&key, socket.id());
    if !by_claim && !by_policy {
        return Err(Refusal::Forbidden);
    }
    let with_offset = app.namespace(socket.nsp()).is_some_and(|ns| ns.recovery);
    let rooms = [args.room];
    let published = app.hub.publish(&Event {
        nsp: socket.nsp(),
        rooms: &rooms,
        name: &args.event,
        data: args.data.map_or(b"null".as_slice(), |d| d.get().as_bytes()),
        attachments: &event.attachments,
        with_offset,
    });
    Ok(
        serde_json::json!({ "ok": true, "offset": published.seq.to_string() })
            .to_string()
            .into_bytes(),
    )
}

#[derive(Deserialize)]
struct HistoryArgs {
    room: String,
    since: Option<String>,
    limit: Option<usize>,
    epoch: Option<String>,
}

/// `history` `{room, since?, limit?, epoch?}`: a page of the room's history, for clients that keep their own
/// offsets. Allowed for rooms the client may join.
fn history(app: &Tidings, socket: &Arc<Socket>, event: &ClientEvent) -> Result<Vec<u8>, Refusal> {
    let first = event
        .args
        .first()
        .ok_or_else(|| Refusal::BadRequest("history needs {room, since?, limit?}".into()))?;
    let args: HistoryArgs = serde_json::from_slice(first)
        .map_err(|e| Refusal::BadRequest(format!("history needs {{room, since?, limit?}}: {e}")))?;
    validate_room_name(&args.room).map_err(|e| Refusal::BadRequest(e.to_string()))?;
    let user = socket.user().ok_or(Refusal::Forbidden)?;
    let key = RoomKey::new(socket.nsp(), &args.room);
    if !user.may_join(&args.room) && !app.hub.is_member(&key, socket.id()) {
        return Err(Refusal::Forbidden);
    }
    let number = |text: Option<String>, what: &str| -> Result<Option<u64>, Refusal> {
        text.map(|t| {
            t.parse::<u64>()
                .map_err(|_| Refusal::BadRequest(format!("{what} must be a decimal string")))
        })
        .transpose()
    };
    let since = number(args.since, "since")?.unwrap_or(0);
    let epoch = number(args.epoch, "epoch")?;
    let page = crate::history::read_page(
        app.hub.history().as_ref(),
        &key,
        epoch,
        since,
        args.limit.unwrap_or(100),
    );
    let mut reply = serde_json::to_value(page).unwrap_or_default();
    reply["ok"] = true.into();
    Ok(reply.to_string().into_bytes())
}
