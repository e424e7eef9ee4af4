//! Socket.IO v5 on top of Engine.IO: namespaces, CONNECT/DISCONNECT, events, acks and binary attachments.
//!
//! What a connected socket may do is decided by an [`Application`]: the tidings rules (auth, rooms,
//! publish policy) in production, or the echo behaviour the official conformance suite expects.

pub mod client;
pub mod packet;
pub mod socket;

use std::sync::Arc;

use bytes::Bytes;

use crate::engineio::{EngineHandler, OpenRequest, Session, SessionHandler};
pub use client::{Client, ClientLimits, Endpoint};
pub use socket::Socket;

/// A CONNECT request for one namespace.
pub struct ConnectRequest<'a> {
    /// The namespace, e.g. `/` or `/chat`.
    pub nsp: &'a str,
    /// The raw JSON of the CONNECT payload, if any.
    pub auth: Option<&'a Bytes>,
    /// The `token` query parameter of the Engine.IO handshake, if any.
    pub query_token: Option<&'a str>,
    /// The Engine.IO session the socket lives on.
    pub session: &'a Arc<Session>,
}

/// An EVENT (or BINARY_EVENT) from a client.
pub struct ClientEvent {
    /// Event name.
    pub name: String,
    /// Raw JSON of each argument after the name (binary parts appear as placeholders).
    pub args: Vec<Bytes>,
    /// Binary attachments, in order.
    pub attachments: Vec<Bytes>,
    /// Ack id when the client waits for an answer.
    pub ack: Option<u64>,
}

/// The outcome of a CONNECT: decided at once, or after some I/O (cluster lookups).
pub enum Connecting {
    /// Decided: the socket, or the CONNECT_ERROR message.
    Ready(Result<Arc<Socket>, String>),
    /// Decided later; the client sends nothing on the namespace until the reply, so nothing is lost.
    Pending(
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Arc<Socket>, String>> + Send>>,
    ),
}

/// The behaviour behind the protocol.
pub trait Application: Send + Sync + 'static {
    /// Authorises a CONNECT and creates the socket, queueing its CONNECT reply (see
    /// [`Socket::send_connect_reply`]) and anything that must follow it. An error becomes a CONNECT_ERROR
    /// with that message.
    fn connect(&self, request: ConnectRequest<'_>) -> Connecting;
    /// An event from a connected socket.
    fn on_event(&self, socket: &Arc<Socket>, event: ClientEvent);
    /// The socket left (client DISCONNECT or end of the session).
    fn on_disconnect(&self, socket: &Arc<Socket>, session_closed: bool);
}

/// The Engine.IO handler that runs Socket.IO over each session.
pub struct SocketIo {
    endpoint: Arc<Endpoint>,
}

impl SocketIo {
    /// Socket.IO for the given application, each session bounded by `limits` (sessions without a CONNECT
    /// within `limits.connect_timeout` are closed).
    pub fn new(app: Arc<dyn Application>, limits: ClientLimits) -> Arc<SocketIo> {
        Arc::new(SocketIo {
            endpoint: Arc::new(Endpoint { app, limits }),
        })
    }
}

impl EngineHandler for SocketIo {
    fn open(&self, request: &OpenRequest) -> Arc<dyn SessionHandler> {
        Client::new(self.endpoint.clone(), request.query_param("token"))
    }
}
