//! The behaviour the official Socket.IO and Engine.IO protocol test-suites expect of a server: echo
//! handlers on `/` and `/custom` and a bare Engine.IO echo endpoint. Runs on the same engine and protocol code
//! as `tidings serve` (`tidings serve --conformance`).

use std::sync::Arc;

use crate::engineio::{
    CloseReason, EngineHandler, Message, OpenRequest, Outgoing, Session, SessionHandler,
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
    fn open(&self, _session: &Arc<Session>, _request: &OpenRequest) -> Arc<dyn SessionHandler> {
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
