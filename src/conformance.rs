//! The behaviour the official Socket.IO and Engine.IO protocol test-suites expect of a server: echo
//! handlers on `/` and `/custom` and a bare Engine.IO echo endpoint; and, for WebSocket conformance
//! (the Autobahn test-suite), a raw WebSocket echo endpoint. Runs on the same engine, frame codec and
//! connection code as `tidings serve` (`tidings serve --conformance`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use http::{Request, Response};

use crate::engineio::{
    websocket, CloseReason, EngineConfig, EngineHandler, Message, OpenRequest, OutboxLimits,
    Outgoing, Session, SessionHandler,
};
use crate::socketio::{Application, ClientEvent, ConnectRequest, Connecting, Socket};

/// Socket.IO echo application.
pub struct EchoApp;

impl Application for EchoApp {
    fn connect(&self, request: ConnectRequest<'_>) -> Connecting {
        Connecting::Ready(echo_connect(&request))
    }

    fn on_event(&self, socket: &Arc<Socket>, event: ClientEvent) {
        let args: Vec<&[u8]> = event.args.iter().map(|a| &a[..]).collect();
        let binary = !event.attachments.is_empty();
        let _ = match (event.name.as_str(), event.ack) {
            ("message", _) if binary => {
                socket.emit_binary("message-back", &args, &event.attachments)
            }
            ("message", _) => socket.emit("message-back", &args),
            ("message-with-ack", Some(id)) if binary => {
                socket.ack_binary(id, &args, &event.attachments)
            }
            ("message-with-ack", Some(id)) => socket.ack(id, &args),
            _ => Ok(()),
        };
    }

    fn on_disconnect(&self, _socket: &Arc<Socket>, _session_closed: bool) {}
}

fn echo_connect(request: &ConnectRequest<'_>) -> Result<Arc<Socket>, String> {
    if request.nsp != "/" && request.nsp != "/custom" {
        return Err("Invalid namespace".into());
    }
    let socket = Socket::new(request.session.clone(), request.nsp, None, None, None);
    socket.send_connect_reply().map_err(|e| e.to_string())?;
    let auth: &[u8] = request.auth.map_or(b"{}".as_slice(), |a| &a[..]);
    socket.emit("auth", &[auth]).map_err(|e| e.to_string())?;
    Ok(socket)
}

/// Bare Engine.IO echo: every message comes back unchanged.
pub struct EngineEcho;

impl EngineHandler for EngineEcho {
    fn open(&self, _request: &OpenRequest) -> Arc<dyn SessionHandler> {
        Arc::new(EngineEcho)
    }
}

impl SessionHandler for EngineEcho {
    fn on_message(&self, session: &Arc<Session>, message: Message) -> Result<(), CloseReason> {
        let packet = match message {
            Message::Text(text) => Outgoing::message_bytes(&text),
            Message::Binary(data) => Outgoing::Binary(data),
        };
        session
            .outbox
            .push(packet)
            .map_err(|_| CloseReason::SlowConsumer)
    }

    fn on_close(&self, _session: &Arc<Session>, _reason: &CloseReason) {}
}

/// Largest message of the raw WebSocket echo: the Autobahn test-suite's limit cases send 16 MiB.
pub const RAW_ECHO_MAX_MESSAGE: usize = 16 << 20;

/// Engine settings of the raw WebSocket echo endpoint, from the node's: no heartbeat is run (see
/// [`websocket::Framing::Raw`]), messages up to [`RAW_ECHO_MAX_MESSAGE`], and an outbox and message rate
/// that let a test client send its largest messages and bursts back to back.
pub fn raw_echo_config(mut config: EngineConfig) -> EngineConfig {
    config.max_payload = RAW_ECHO_MAX_MESSAGE;
    config.outbox = OutboxLimits {
        max_messages: 100_000,
        max_bytes: 4 * RAW_ECHO_MAX_MESSAGE,
    };
    config.max_messages_per_sec = 1_000_000;
    config.write_interval = std::time::Duration::ZERO;
    config.write_interval_max = std::time::Duration::ZERO;
    config
}

/// Raw WebSocket echo: every text or binary message comes back as the same kind of message, unchanged.
pub struct RawEcho;

impl EngineHandler for RawEcho {
    fn open(&self, _request: &OpenRequest) -> Arc<dyn SessionHandler> {
        Arc::new(RawEcho)
    }
}

impl SessionHandler for RawEcho {
    fn on_message(&self, session: &Arc<Session>, message: Message) -> Result<(), CloseReason> {
        let packet = match message {
            Message::Text(text) => Outgoing::Text(text),
            Message::Binary(data) => Outgoing::Binary(data),
        };
        session
            .outbox
            .push(packet)
            .map_err(|_| CloseReason::SlowConsumer)
    }

    fn on_close(&self, _session: &Arc<Session>, _reason: &CloseReason) {}
}

/// Answers a request to the raw echo path: a websocket upgrade, or 400 for anything else.
pub fn raw_echo_upgrade(
    engine: Arc<crate::engineio::Engine>,
    req: Request<Body>,
    remote: Option<SocketAddr>,
) -> Response<Body> {
    let open = OpenRequest {
        query: Vec::new(),
        remote,
    };
    websocket::upgrade_raw(engine, req, open).unwrap_or_else(|error| error.into_response())
}
