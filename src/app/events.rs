//! The events a client may send: `subscribe`, `unsubscribe`, `publish`, `history` and `refresh` (and the direct
//! message events of [`super::direct::client`]). Anything else is refused with an error ack and counted, never
//! forwarded.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::backend::Ephemeral;
use super::egress::{OutPublish, Route};
use super::recover::still_allowed;
use super::{check_data, Tidings, RESERVED_EVENTS};
use crate::auth::validate_room_name;
use crate::hub::{Conflate, Event, RoomKey};
use crate::socketio::{ClientEvent, Socket};

const OK: &[u8] = br#"{"ok":true}"#;

/// A reply now, or one that needs cluster I/O first.
enum Outcome {
    Now(Result<Vec<u8>, Refusal>),
    /// Handed to a queue that answers the ack itself.
    Queued,
    Later(std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<u8>, Refusal>> + Send>>),
}

/// Handles one client event.
pub(super) fn handle(app: &Tidings, socket: &Arc<Socket>, event: ClientEvent) {
    if super::direct::client::handle(app.direct(), socket, &event, app.publish_limits()) {
        return;
    }
    let outcome = match event.name.as_str() {
        "subscribe" => subscribe(app, socket, &event),
        "unsubscribe" => Outcome::Now(unsubscribe(app, socket, &event)),
        "publish" => publish(app, socket, &event),
        "history" => history(app, socket, &event),
        "presence" => presence(app, socket, &event),
        "refresh" => Outcome::Now(refresh(app, socket, &event)),
        _ => Outcome::Now(Err(Refusal::UnknownEvent)),
    };
    match outcome {
        Outcome::Now(result) => reply(socket, &event.name, event.ack, result),
        Outcome::Queued => {}
        Outcome::Later(pending) => {
            let socket = socket.clone();
            tokio::spawn(async move {
                let result = pending.await;
                reply(&socket, &event.name, event.ack, result);
            });
        }
    }
}

fn reply(socket: &Socket, name: &str, ack: Option<u64>, result: Result<Vec<u8>, Refusal>) {
    let reply = match result {
        Ok(reply) => reply,
        Err(refusal) => {
            metrics::counter!("tidings_client_events_refused_total", "reason" => refusal.label())
                .increment(1);
            tracing::debug!(socket = %socket.id(), event = %name, reason = %refusal, "client event refused");
            serde_json::json!({ "ok": false, "error": refusal.to_string() })
                .to_string()
                .into_bytes()
        }
    };
    if let Some(id) = ack {
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
    /// The cluster could not do it now; nothing was done.
    #[error("unavailable")]
    Unavailable,
    /// A token that does not verify; the text is what a CONNECT would have been told.
    #[error("{0}")]
    Unauthorized(String),
    /// The socket is in as many rooms as it may be.
    #[error("too many rooms (at most {0} per connection)")]
    TooManyRooms(usize),
    /// The room policy's publish rate for this connection is used up.
    #[error("rate_limited")]
    RateLimited,
    /// The room's publishes go to the event bus first, and the bus did not take this one; nothing was
    /// published.
    #[error("unavailable: {0}")]
    BusUnavailable(String),
}

impl Refusal {
    fn label(&self) -> &'static str {
        match self {
            Refusal::UnknownEvent => "unknown_event",
            Refusal::Forbidden => "forbidden",
            Refusal::BadRequest(_) => "bad_request",
            Refusal::Unavailable => "unavailable",
            Refusal::TooManyRooms(_) => "too_many_rooms",
            Refusal::Unauthorized(_) => "unauthorized",
            Refusal::RateLimited => "rate_limited",
            Refusal::BusUnavailable(_) => "bus_unavailable",
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

fn subscribe(app: &Tidings, socket: &Arc<Socket>, event: &ClientEvent) -> Outcome {
    let room = match room_arg(event) {
        Ok(room) => room,
        Err(refusal) => return Outcome::Now(Err(refusal)),
    };
    if !socket.user().is_some_and(|user| user.may_join(&room)) {
        return Outcome::Now(Err(Refusal::Forbidden));
    }
    if let Err(refusal) = room_cap(app, socket, &room) {
        return Outcome::Now(Err(refusal));
    }
    let (Some(app), socket) = (app.arc(), socket.clone()) else {
        return Outcome::Now(Err(Refusal::Unavailable));
    };
    let mut joining = Box::pin(async move {
        app.join_rooms(&socket, std::slice::from_ref(&room))
            .await
            .map_err(|_| Refusal::Unavailable)?;
        app.save_room_joined(&socket, &room);
        Ok(OK.to_vec())
    });
    // An embedded node joins at once, so the client's next event already finds it in the room.
    match futures_util::FutureExt::now_or_never(&mut joining) {
        Some(joined) => Outcome::Now(joined),
        None => Outcome::Later(joining),
    }
}

/// Refuses a join that would put the socket in more rooms than `limits.max_rooms_per_socket`.
fn room_cap(app: &Tidings, socket: &Socket, room: &str) -> Result<(), Refusal> {
    let rooms = socket.rooms.lock();
    if rooms.len() >= app.max_rooms_per_socket && !rooms.iter().any(|m| m.room() == room) {
        return Err(Refusal::TooManyRooms(app.max_rooms_per_socket));
    }
    Ok(())
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
    /// Ephemeral for this event even where the room's policy does not say so.
    #[serde(default)]
    ephemeral: bool,
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

fn publish(app: &Tidings, socket: &Arc<Socket>, event: &ClientEvent) -> Outcome {
    let args = match publish_args(app, socket, event) {
        Ok(args) => args,
        Err(refusal) => return Outcome::Now(Err(refusal)),
    };
    let route = app.egress().route(&args.room);
    if args.ephemeral && route != Route::Ack {
        return Outcome::Now(
            broadcast(app, socket.nsp(), &args, &event.attachments).map(|()| {
                if route == Route::Queue {
                    to_bus(app, socket, &args);
                }
                OK.to_vec()
            }),
        );
    }
    let queue_app = app;
    let Some(app) = app.arc() else {
        return Outcome::Now(Err(Refusal::Unavailable));
    };
    let nsp = socket.nsp().to_owned();
    let attachments = event.attachments.clone();
    let with_offset = app.namespace(&nsp).is_some_and(|ns| ns.recovery);
    let publisher = socket.clone();
    let publish = async move {
        if route == Route::Ack {
            // Nothing reaches the room that the bus did not take.
            let from = publisher
                .user()
                .map(|u| u.sub().to_owned())
                .unwrap_or_default();
            let out = out_publish(&nsp, &from, &args);
            let acked = app.egress().publish_acked(&out);
            acked
                .await
                .map_err(|e| Refusal::BusUnavailable(e.to_string()))?;
            if args.ephemeral {
                broadcast(&app, &nsp, &args, &attachments)?;
                return Ok(OK.to_vec());
            }
        }
        let rooms = [args.room.clone()];
        let event = Event {
            nsp: &nsp,
            rooms: &rooms,
            name: &args.event,
            data: args.data.as_bytes(),
            attachments: &attachments,
            with_offset,
        };
        let receipt = app
            .publish(&event)
            .await
            .map_err(|_| Refusal::Unavailable)?;
        if route == Route::Queue {
            to_bus(&app, &publisher, &args);
        }
        Ok(
            serde_json::json!({ "ok": true, "offset": receipt.seq.to_string() })
                .to_string()
                .into_bytes(),
        )
    };
    // One connection's durable publishes are sequenced in the order it sent them: each waits for the one before.
    let (sock, name, ack) = (socket.clone(), event.name.clone(), event.ack);
    let job = Box::pin(async move {
        let result = publish.await;
        reply(&sock, &name, ack, result);
    });
    if queue_app.enqueue_publish(socket, job) {
        Outcome::Queued
    } else {
        Outcome::Now(Err(Refusal::Unavailable))
    }
}

/// Hands an ephemeral publish to its room (conflated where the room says so).
fn broadcast(
    app: &Tidings,
    nsp: &str,
    args: &OwnedPublish,
    attachments: &[bytes::Bytes],
) -> Result<(), Refusal> {
    let key = RoomKey::new(nsp, &args.room);
    let sent = app.backend().log.broadcast(
        &key,
        Ephemeral {
            name: &args.event,
            data: args.data.as_bytes(),
            attachments,
            conflate: args.conflate.clone(),
        },
    );
    if sent {
        Ok(())
    } else {
        Err(Refusal::Unavailable)
    }
}

/// A client publish as the event bus gets it.
fn out_publish<'a>(nsp: &'a str, from: &'a str, args: &'a OwnedPublish) -> OutPublish<'a> {
    OutPublish {
        nsp,
        room: &args.room,
        event: &args.event,
        data: &args.data,
        from,
    }
}

/// Queues a published event for the event bus (a full queue drops it there, counted: the publish stands).
fn to_bus(app: &Tidings, socket: &Socket, args: &OwnedPublish) {
    let from = socket
        .user()
        .map(|u| u.sub().to_owned())
        .unwrap_or_default();
    if let Err(error) = app
        .egress()
        .publish(&out_publish(socket.nsp(), &from, args))
    {
        tracing::debug!(%error, room = %args.room, "client publish not queued for the event bus");
    }
}

/// The conflation key of an event: the value of `field` at the top of its data (a string as it is, anything
/// else as its JSON text); `None` when the data is not an object or lacks the field.
pub fn conflation_key(data: &RawValue, field: &str) -> Option<String> {
    let object: std::collections::HashMap<String, &RawValue> =
        serde_json::from_str(data.get()).ok()?;
    let value = object.get(field)?;
    Some(match serde_json::from_str::<String>(value.get()) {
        Ok(text) => text,
        Err(_) => value.get().to_owned(),
    })
}

/// `presence` `{room, cursor?, limit?}` (members of the room only): a page of its users,
/// `{ok:true, users:[{user, devices, joined_at}], cursor?}`; `cursor` (a user id) reads on.
fn presence(app: &Tidings, socket: &Arc<Socket>, event: &ClientEvent) -> Outcome {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct PresenceArgs {
        room: String,
        cursor: Option<String>,
        limit: Option<usize>,
    }
    let args = match event
        .args
        .first()
        .ok_or_else(|| "presence needs {room, cursor?, limit?}".to_owned())
        .and_then(|first| {
            serde_json::from_slice::<PresenceArgs>(first)
                .map_err(|e| format!("presence needs {{room, cursor?, limit?}}: {e}"))
        }) {
        Ok(args) => args,
        Err(error) => return Outcome::Now(Err(Refusal::BadRequest(error))),
    };
    if let Err(error) = validate_room_name(&args.room) {
        return Outcome::Now(Err(Refusal::BadRequest(error.to_string())));
    }
    let key = RoomKey::new(socket.nsp(), &args.room);
    if !app.hub.is_member(&key, socket.id()) {
        return Outcome::Now(Err(Refusal::Forbidden));
    }
    let Some(app) = app.arc() else {
        return Outcome::Now(Err(Refusal::Unavailable));
    };
    let limit = args.limit.unwrap_or(100);
    Outcome::Later(Box::pin(async move {
        let page = app
            .backend()
            .presence
            .page(&key, args.cursor.as_deref(), limit)
            .await
            .map_err(|_| Refusal::Unavailable)?;
        let mut reply = serde_json::to_value(page).map_err(|_| Refusal::Unavailable)?;
        reply["ok"] = true.into();
        Ok(reply.to_string().into_bytes())
    }))
}

/// A checked client publish.
struct OwnedPublish {
    room: String,
    event: String,
    data: String,
    /// No offset, history or replay (the room's policy or the publish says so).
    ephemeral: bool,
    /// The room's conflation with this event's key.
    conflate: Option<Conflate>,
}

fn publish_args(
    app: &Tidings,
    socket: &Arc<Socket>,
    event: &ClientEvent,
) -> Result<OwnedPublish, Refusal> {
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
    // The attachments go out with `data`, so `data` must hold every one of their placeholders.
    let data = args.data.map_or(b"null".as_slice(), |d| d.get().as_bytes());
    check_data(data, event.attachments.len(), app.publish_limits())
        .map_err(|e| Refusal::BadRequest(e.to_string()))?;
    let policy = app.room_policy(&args.room);
    if let Some((index, policy)) = policy {
        let (per_sec, burst) = policy.publish_rate;
        if per_sec > 0 && !socket.take_publish_token(index, per_sec, burst) {
            return Err(Refusal::RateLimited);
        }
    }
    let conflate = policy.and_then(|(_, policy)| policy.conflate_for(args.data?));
    Ok(OwnedPublish {
        data: args
            .data
            .map_or_else(|| "null".to_owned(), |d| d.get().to_owned()),
        ephemeral: args.ephemeral || policy.is_some_and(|(_, p)| p.is_ephemeral()),
        conflate,
        room: args.room,
        event: args.event,
    })
}

/// `refresh` `{token}`: swaps the socket's claims for a fresh token's (same `sub` only), leaves the rooms the
/// new token no longer allows, and moves the expiry deadlines. Ack `{ok:true, exp}`.
fn refresh(app: &Tidings, socket: &Arc<Socket>, event: &ClientEvent) -> Result<Vec<u8>, Refusal> {
    #[derive(Deserialize)]
    struct RefreshArgs {
        token: String,
    }
    let first = event
        .args
        .first()
        .ok_or_else(|| Refusal::BadRequest("refresh needs {token}".into()))?;
    let args: RefreshArgs = serde_json::from_slice(first)
        .map_err(|e| Refusal::BadRequest(format!("refresh needs {{token}}: {e}")))?;
    let claims = app.auth.verify(&args.token).map_err(|error| {
        crate::auth::refusals::token_refused(&error);
        Refusal::Unauthorized(error.to_string())
    })?;
    let current = socket.user().ok_or(Refusal::Forbidden)?;
    if claims.sub() != current.sub() {
        return Err(Refusal::Forbidden);
    }
    let claims = Arc::new(claims);
    socket.set_user(claims.clone());
    let stale: Vec<String> = socket
        .rooms
        .lock()
        .iter()
        .filter(|m| !still_allowed(&claims, m.room()))
        .map(|m| m.room().to_owned())
        .collect();
    for room in &stale {
        app.leave(socket, room);
    }
    app.watch_expiry(socket);
    metrics::counter!("tidings_tokens_refreshed_total").increment(1);
    Ok(
        serde_json::json!({ "ok": true, "exp": claims.expires_at(), "left": stale })
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
fn history(app: &Tidings, socket: &Arc<Socket>, event: &ClientEvent) -> Outcome {
    let (key, since, limit) = match history_args(app, socket, event) {
        Ok(args) => args,
        Err(refusal) => return Outcome::Now(Err(refusal)),
    };
    let with_ok = |page: crate::history::HistoryPage| {
        page.count_truncated("client");
        let mut reply = serde_json::to_value(page).unwrap_or_default();
        reply["ok"] = true.into();
        reply.to_string().into_bytes()
    };
    let limit = crate::history::ReadLimit {
        events: limit,
        bytes: app.history_reply_bytes(),
    };
    let mut reading = app.backend().log.page(key, since.1, since.0, limit);
    match futures_util::FutureExt::now_or_never(&mut reading) {
        Some(page) => Outcome::Now(page.map(with_ok).map_err(|_| Refusal::Unavailable)),
        None => Outcome::Later(Box::pin(async move {
            let page = reading.await.map_err(|_| Refusal::Unavailable)?;
            Ok(with_ok(page))
        })),
    }
}

/// Position to read history after (and the stream epoch it was taken in, if the client knows it).
struct Since(u64, Option<u64>);

fn history_args(
    app: &Tidings,
    socket: &Arc<Socket>,
    event: &ClientEvent,
) -> Result<(RoomKey, Since, usize), Refusal> {
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
    Ok((key, Since(since, epoch), args.limit.unwrap_or(100)))
}
