//! Direct-message helpers over the websocket client: devices, the events the server emits with an ack id,
//! statuses.

use std::time::Duration;

use serde_json::{json, Value};
use tidings::auth::{mint_claims, Claims};

use super::{Frame, WsClient, SECRET, WAIT};

/// A token for `sub` allowed to message the users matching `dm`.
pub fn dm_token(sub: &str, dm: &[&str]) -> String {
    let claims = Claims {
        sub: sub.into(),
        dm: dm.iter().map(|s| (*s).to_owned()).collect(),
        ..Claims::default()
    };
    mint_claims(SECRET, claims, 3600).unwrap()
}

/// A device connected as `sub` named `device`.
pub async fn device(addr: std::net::SocketAddr, sub: &str, dm: &[&str], device: &str) -> WsClient {
    let mut client = WsClient::handshake(addr).await;
    let auth = json!({ "token": dm_token(sub, dm), "device": device });
    client.socketio_connect(&format!("40{auth}")).await;
    client
}

/// An event the server emitted asking for an ack: `42<ack>["name", args...]`.
#[derive(Debug, Clone)]
pub struct Emitted {
    /// Ack id, when the server asks for one.
    pub ack: Option<u64>,
    /// Event name.
    pub name: String,
    /// Arguments after the name.
    pub args: Vec<Value>,
}

pub fn parse_emitted(frame: &Frame) -> Option<Emitted> {
    let text = frame.text()?.strip_prefix("42")?;
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let ack = (digits > 0).then(|| text[..digits].parse().unwrap());
    let items: Vec<Value> = serde_json::from_str(&text[digits..]).ok()?;
    let name = items.first()?.as_str()?.to_owned();
    Some(Emitted {
        ack,
        name,
        args: items[1..].to_vec(),
    })
}

/// The next emitted event named `name`.
pub async fn next_named(client: &mut WsClient, name: &str, timeout: Duration) -> Emitted {
    let frame = client
        .recv_until(
            |f| parse_emitted(f).is_some_and(|e| e.name == name),
            timeout,
        )
        .await;
    parse_emitted(&frame).unwrap()
}

/// A `message:status` with `status` (and `device`, when given) — already received or the next one to come.
pub async fn next_status(client: &mut WsClient, status: &str) -> Value {
    status_from(client, status, None).await
}

/// Like [`next_status`], for a receipt of `device`.
pub async fn next_status_from(client: &mut WsClient, status: &str, device: &str) -> Value {
    status_from(client, status, Some(device)).await
}

async fn status_from(client: &mut WsClient, status: &str, device: Option<&str>) -> Value {
    let matches = |f: &Frame| {
        parse_emitted(f).is_some_and(|e| {
            e.name == "message:status"
                && e.args[0]["status"] == status
                && device.is_none_or(|d| e.args[0]["device"] == d)
        })
    };
    // Statuses may overtake the ack of the send that caused them, which a wait for the ack skips past.
    let frame = match client.log.iter().find(|f| matches(f)).cloned() {
        Some(frame) => frame,
        None => client.recv_until(matches, WAIT).await,
    };
    parse_emitted(&frame).unwrap().args[0].clone()
}

/// Answers the ack of an emitted event.
pub fn ack(client: &WsClient, emitted: &Emitted) {
    client.send_text(&format!("43{}[]", emitted.ack.expect("asks for an ack")));
}

/// No event named `name` within `wait`.
pub async fn assert_none(client: &mut WsClient, name: &str, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return;
        }
        if let Some(frame) = client.next_frame(left).await {
            if let Some(e) = parse_emitted(&frame) {
                assert_ne!(e.name, name, "unexpected {e:?}");
            }
        }
    }
}
