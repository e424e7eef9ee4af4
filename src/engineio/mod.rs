//! Engine.IO v4: sessions over websocket and HTTP long-polling, upgrade, heartbeat and bounded outboxes.
//!
//! The layer above (Socket.IO, or the bare echo used for conformance) plugs in through [`EngineHandler`]
//! and [`SessionHandler`]; this module knows nothing about namespaces, rooms or auth.

pub mod address_limits;
pub mod client_addr;
pub mod close_log;
pub mod cors;
pub mod engine;
pub mod handshake;
pub mod heartbeat;
pub mod outbox;
pub mod packet;
pub mod payload;
pub mod polling;
pub mod polling_conn;
pub mod recent_closes;
pub mod session;
pub mod websocket;
pub mod write_cadence;
pub mod write_pacer;
pub mod ws_frame;
pub mod ws_writer;

use std::time::Duration;

use bytes::Bytes;

pub use engine::Engine;
pub use outbox::{Outbox, OutboxLimits, PushError, Signal};
pub use packet::Outgoing;
pub use session::{Session, Sid};

/// Why a session ended. Shown in logs and counted in metrics by [`CloseReason::label`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed the connection or the transport failed.
    TransportClose,
    /// The client sent an Engine.IO close packet.
    ClientClose,
    /// No pong arrived within the ping timeout.
    PingTimeout,
    /// The outbound queue passed its limit: the client cannot keep up.
    SlowConsumer,
    /// The client sent more packets per second than allowed.
    Flood,
    /// A frame or packet was larger than `maxPayload`.
    PayloadTooLarge,
    /// A malformed packet or a protocol violation; the text says which.
    ProtocolError(String),
    /// Text that is not valid UTF-8; the text says where.
    InvalidData(String),
    /// The server is shutting down.
    ServerShutdown,
    /// The application closed the session (e.g. no Socket.IO connect in time).
    ServerClose(String),
}

impl CloseReason {
    /// Short stable name for metrics labels.
    pub fn label(&self) -> &'static str {
        match self {
            CloseReason::TransportClose => "transport_close",
            CloseReason::ClientClose => "client_close",
            CloseReason::PingTimeout => "ping_timeout",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::Flood => "flood",
            CloseReason::PayloadTooLarge => "payload_too_large",
            CloseReason::ProtocolError(_) => "protocol_error",
            CloseReason::InvalidData(_) => "invalid_data",
            CloseReason::ServerShutdown => "server_shutdown",
            CloseReason::ServerClose(_) => "server_close",
        }
    }

    /// The websocket close code sent for this reason.
    pub fn ws_code(&self) -> u16 {
        match self {
            CloseReason::ProtocolError(_) => 1002,
            CloseReason::InvalidData(_) => 1007,
            CloseReason::PayloadTooLarge => 1009,
            CloseReason::ServerShutdown => 1001,
            CloseReason::SlowConsumer | CloseReason::Flood => 1008,
            _ => 1000,
        }
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::ProtocolError(detail) => write!(f, "protocol error: {detail}"),
            CloseReason::InvalidData(detail) => write!(f, "invalid data: {detail}"),
            CloseReason::ServerClose(detail) => write!(f, "closed by server: {detail}"),
            other => f.write_str(other.label()),
        }
    }
}

/// One message from the client, as the layer above sees it.
#[derive(Debug, Clone)]
pub enum Message {
    /// A text message (Engine.IO packet type 4, without the digit).
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
}

/// What the opening request carried, for the layer above (e.g. a `token` query parameter).
#[derive(Debug, Clone, Default)]
pub struct OpenRequest {
    /// Query parameters of the handshake request.
    pub query: Vec<(String, String)>,
    /// The client's address when known: the peer, or the client a trusted proxy named (port 0 then).
    pub remote: Option<std::net::SocketAddr>,
}

impl OpenRequest {
    /// The first value of a query parameter.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Routes requests for sessions owned by another node of the cluster.
pub trait SessionRouter: Send + Sync + 'static {
    /// Handles a request whose session id carries another node's tag; None when that node is unknown (the
    /// request is then answered as for an unknown session).
    fn forward(
        &self,
        owner: session::NodeTag,
        request: http::Request<axum::body::Body>,
    ) -> Option<
        std::pin::Pin<
            Box<dyn std::future::Future<Output = http::Response<axum::body::Body>> + Send>,
        >,
    >;
}

/// Creates the per-session handler of the layer above when a session opens.
pub trait EngineHandler: Send + Sync + 'static {
    /// Called once per new session, before the session is made: the handler it will have.
    fn open(&self, request: &OpenRequest) -> std::sync::Arc<dyn SessionHandler>;
}

/// Receives one session's messages and its end.
pub trait SessionHandler: Send + Sync + 'static {
    /// The session was made with this handler and registered, before its open packet is sent.
    fn opened(&self, _session: &std::sync::Arc<Session>) {}
    /// A message arrived; an error closes the session with that reason.
    fn on_message(
        &self,
        session: &std::sync::Arc<Session>,
        message: Message,
    ) -> Result<(), CloseReason>;
    /// The session ended (called exactly once).
    fn on_close(&self, session: &std::sync::Arc<Session>, reason: &CloseReason);
}

/// Engine.IO settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Interval between server pings.
    pub ping_interval: Duration,
    /// Time the client has to answer a ping.
    pub ping_timeout: Duration,
    /// Largest accepted message or HTTP body, in bytes.
    pub max_payload: usize,
    /// Limits of each session's outbound queue.
    pub outbox: OutboxLimits,
    /// Sustained incoming messages per second per session; bursts of twice that pass.
    pub max_messages_per_sec: u32,
    /// Most concurrent sessions; new ones are refused past it.
    pub max_sessions: usize,
    /// Which browser origins may call the endpoint, and with credentials or not.
    pub cors: cors::CorsPolicy,
    /// At most one warning per this interval about sessions closed for misbehaving (see [`close_log`]).
    pub misbehaviour_log_interval: Duration,
    /// This node's tag, put at the start of every session id.
    pub node_tag: session::NodeTag,
    /// Sessions and handshakes allowed per client address.
    pub address_limits: address_limits::AddressLimits,
    /// Proxies whose `X-Forwarded-For` / `Forwarded` headers name the client address.
    pub trusted_proxies: client_addr::TrustedProxies,
    /// Shortest time between two writes to a busy websocket (see [`write_pacer`]); zero writes at once.
    pub write_interval: Duration,
    /// Longest the write interval grows to while the node's writers run late (see [`write_cadence`]); not
    /// above `write_interval`: a fixed interval.
    pub write_interval_max: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
            max_payload: 1_000_000,
            outbox: OutboxLimits {
                max_messages: 4096,
                max_bytes: 8 << 20,
            },
            max_messages_per_sec: 50,
            max_sessions: 100_000,
            cors: cors::CorsPolicy::any_origin(),
            misbehaviour_log_interval: Duration::from_secs(10),
            node_tag: session::NodeTag::random(),
            address_limits: address_limits::AddressLimits {
                max_sessions: 1000,
                handshakes_per_sec: 50,
                handshake_burst: 200,
            },
            trusted_proxies: client_addr::TrustedProxies::default(),
            write_interval: Duration::from_millis(20),
            write_interval_max: Duration::ZERO,
        }
    }
}
