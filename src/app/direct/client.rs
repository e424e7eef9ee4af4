//! The reserved client events of direct messages:
//!
//! - `dm` `{to, event, data?, id?, ttl?}` → ack `{ok: true, id, status, seq}` once the message is durable, or
//!   `{ok: false, error, detail}`;
//! - `ack` `{ids: [...]}` → the device acknowledges messages (as the ack callback of each message does);
//! - `read` `{from, up_to}` → every message from `from` up to `up_to` is read.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Deserialize;

use super::request::{check_message, check_user, DmError, SendFields};
use super::{Direct, QueuedSend};
use crate::app::PublishLimits;
use crate::messages::{Accepted, MessageId, NewMessage};
use crate::socketio::{ClientEvent, Socket};

/// A reply to come: the JSON text of the ack.
type Reply = Pin<Box<dyn Future<Output = Vec<u8>> + Send>>;

/// Most ids in one `ack` event.
const MAX_ACK_IDS: usize = 1000;

/// Handles `dm`, `ack` or `read` (true), answering its ack when it is done; false for any other event name.
/// A connection's `dm` events are stored in the order they came (see [`Direct::enqueue`]).
pub fn handle(
    direct: &Arc<Direct>,
    socket: &Arc<Socket>,
    event: &ClientEvent,
    publish: &PublishLimits,
) -> bool {
    let result = match event.name.as_str() {
        "dm" => {
            let send = QueuedSend {
                message: dm(direct, socket, event, publish),
                ack: event.ack,
            };
            if socket.is_connected() && !direct.enqueue(socket, send) {
                answer_send(socket, event.ack, Err(DmError::Busy));
            }
            // A connection gone meanwhile keeps no queue.
            return true;
        }
        "ack" => ack(direct, socket, event),
        "read" => read(direct, socket, event),
        _ => return false,
    };
    let reply = answer(&event.name, result);
    let (sock, ack) = (socket.clone(), event.ack);
    tokio::spawn(async move {
        let reply = reply.await;
        if let Some(id) = ack {
            let _ = sock.ack(id, &[&reply]);
        }
    });
    true
}

/// Answers a `dm` (to its ack, when it asked for one): `{ok: true, id, status, seq}` or the refusal, counted.
pub fn answer_send(socket: &Socket, ack: Option<u64>, answer: Result<Accepted, DmError>) {
    let reply = match answer {
        Ok(accepted) => serde_json::json!({
            "ok": true,
            "id": accepted.message.id,
            "status": accepted.status,
            "seq": accepted.message.seq,
        }),
        Err(error) => {
            metrics::counter!("tidings_message_requests_refused_total", "event" => "dm", "reason" => error.code())
                .increment(1);
            error.to_json()
        }
    };
    if let Some(id) = ack {
        let _ = socket.ack(id, &[reply.to_string().as_bytes()]);
    }
}

fn answer(name: &str, result: Result<Pending, DmError>) -> Reply {
    let name = name.to_owned();
    Box::pin(async move {
        let reply = match result {
            Ok(pending) => pending.await,
            Err(error) => Err(error),
        };
        match reply {
            Ok(json) => json.to_string().into_bytes(),
            Err(error) => {
                metrics::counter!("tidings_message_requests_refused_total", "event" => event_label(&name), "reason" => error.code())
                    .increment(1);
                error.to_json().to_string().into_bytes()
            }
        }
    })
}

fn event_label(name: &str) -> &'static str {
    match name {
        "dm" => "dm",
        "ack" => "ack",
        _ => "read",
    }
}

type Pending = Pin<Box<dyn Future<Output = Result<serde_json::Value, DmError>> + Send>>;

fn first_arg(event: &ClientEvent, usage: &str) -> Result<bytes::Bytes, DmError> {
    if !event.attachments.is_empty() {
        return Err(DmError::Invalid(format!("{usage} takes no binary data")));
    }
    event
        .args
        .first()
        .cloned()
        .ok_or_else(|| DmError::Invalid(format!("{usage} needs an argument")))
}

fn dm(
    direct: &Arc<Direct>,
    socket: &Arc<Socket>,
    event: &ClientEvent,
    publish: &PublishLimits,
) -> Result<NewMessage, DmError> {
    const USAGE: &str = "dm {to, event, data?, id?, ttl?}";
    let raw = first_arg(event, USAGE)?;
    let fields: SendFields<'_> =
        serde_json::from_slice(&raw).map_err(|e| DmError::Invalid(format!("{USAGE}: {e}")))?;
    if fields.from.is_some() {
        return Err(DmError::Invalid("from is set by the server".into()));
    }
    let to = fields
        .to
        .clone()
        .ok_or_else(|| DmError::Invalid(format!("{USAGE}: to is missing")))?;
    let user = socket.user().ok_or(DmError::Forbidden)?;
    check_user(&to, "to")?;
    if !user.may_dm(&to) {
        return Err(DmError::Forbidden);
    }
    check_message(
        Some(user.sub().to_owned()),
        &to,
        &fields,
        direct.limits(),
        publish,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckArgs {
    ids: Vec<String>,
}

fn ack(
    direct: &Arc<Direct>,
    socket: &Arc<Socket>,
    event: &ClientEvent,
) -> Result<Pending, DmError> {
    const USAGE: &str = "ack {ids: [...]}";
    let raw = first_arg(event, USAGE)?;
    let args: AckArgs =
        serde_json::from_slice(&raw).map_err(|e| DmError::Invalid(format!("{USAGE}: {e}")))?;
    if args.ids.is_empty() || args.ids.len() > MAX_ACK_IDS {
        return Err(DmError::Invalid(format!("{USAGE}: 1 to {MAX_ACK_IDS} ids")));
    }
    let ids = args
        .ids
        .iter()
        .map(|id| MessageId::parse(id).ok_or_else(|| DmError::Invalid(format!("bad id {id:?}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let user = socket.user().ok_or(DmError::Forbidden)?;
    let device = direct
        .device_of(socket, user.sub())
        .ok_or_else(|| DmError::NotADevice(direct.namespace().to_owned()))?;
    let direct = direct.clone();
    Ok(Box::pin(async move {
        let stored = direct.acknowledge(&device, ids).await?;
        Ok(serde_json::json!({ "ok": true, "delivered": stored }))
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadArgs {
    from: String,
    up_to: String,
}

fn read(
    direct: &Arc<Direct>,
    socket: &Arc<Socket>,
    event: &ClientEvent,
) -> Result<Pending, DmError> {
    const USAGE: &str = "read {from, up_to}";
    let raw = first_arg(event, USAGE)?;
    let args: ReadArgs =
        serde_json::from_slice(&raw).map_err(|e| DmError::Invalid(format!("{USAGE}: {e}")))?;
    check_user(&args.from, "from")?;
    let up_to = MessageId::parse(&args.up_to)
        .ok_or_else(|| DmError::Invalid(format!("{USAGE}: bad up_to")))?;
    let user = socket.user().ok_or(DmError::Forbidden)?;
    let direct = direct.clone();
    Ok(Box::pin(async move {
        let read = direct.read(user.sub(), &args.from, &up_to).await?;
        Ok(serde_json::json!({ "ok": true, "read": read }))
    }))
}
