//! The Engine.IO endpoint: routes requests to a transport, owns the session table and closes sessions.

use super::recent_closes::RecentCloses;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use http::{Method, Request, Response};
use parking_lot::Mutex;

use super::address_limits::{AddressSlot, AddressTable};
use super::close_log::CloseLog;
use super::handshake::{EngineError, Query, TransportParam};
use super::heartbeat::Heartbeats;
use super::packet::Packet;
use super::session::{Flag, Session, Sid, TransportKind};
use super::write_cadence::WriteCadence;
use super::{
    CloseReason, EngineConfig, EngineHandler, Message, OpenRequest, Outgoing, SessionRouter,
};

const SHARDS: usize = 32;

/// One shard of the session table.
type SessionShard = Mutex<HashMap<Sid, Arc<Session>>>;

/// Where [`Engine::handle`] sent a request.
///
/// The large answers are boxed: a parked GET's future holds this value for as long as it waits, so its size
/// is paid by every idle polling client.
enum Routed {
    /// Answered at once.
    Done(Box<Result<Response<Body>, EngineError>>),
    /// A polling GET: waits until packets are queued.
    Get(Arc<Session>),
    /// A polling POST: its body is read and applied.
    Post(Arc<Session>, Box<Request<Body>>),
    /// A session of another node: the owner answers.
    Forwarded(Pin<Box<dyn Future<Output = Response<Body>> + Send>>),
}

impl Routed {
    fn done(answer: Result<Response<Body>, EngineError>) -> Routed {
        Routed::Done(Box::new(answer))
    }
}

/// One Engine.IO endpoint (e.g. `/socket.io/`) and all its sessions.
pub struct Engine {
    config: EngineConfig,
    write_cadence: WriteCadence,
    close_log: CloseLog,
    recent_closes: RecentCloses,
    handler: Arc<dyn EngineHandler>,
    shards: Box<[SessionShard]>,
    count: AtomicUsize,
    /// Sessions and handshakes per client address; `None` when both limits are off.
    addresses: Option<Arc<AddressTable>>,
    shutting_down: AtomicBool,
    self_ref: std::sync::OnceLock<std::sync::Weak<Engine>>,
    router: std::sync::OnceLock<Arc<dyn SessionRouter>>,
    /// Every session's heartbeat, run by one task.
    heartbeats: Arc<Heartbeats>,
    /// The runtime the endpoint was made in, for wakes from threads outside it.
    runtime: Option<tokio::runtime::Handle>,
}

impl Engine {
    /// A new endpoint whose sessions are handed to `handler`.
    pub fn new(config: EngineConfig, handler: Arc<dyn EngineHandler>) -> Arc<Engine> {
        let addresses = (!config.address_limits.is_off())
            .then(|| AddressTable::new(config.address_limits, config.max_sessions));
        let engine = Arc::new(Engine {
            write_cadence: WriteCadence::new(config.write_interval, config.write_interval_max),
            close_log: CloseLog::new(config.misbehaviour_log_interval),
            recent_closes: RecentCloses::default(),
            config,
            handler,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            count: AtomicUsize::new(0),
            addresses,
            shutting_down: AtomicBool::new(false),
            self_ref: std::sync::OnceLock::new(),
            router: std::sync::OnceLock::new(),
            heartbeats: Arc::default(),
            runtime: tokio::runtime::Handle::try_current().ok(),
        });
        let _ = engine.self_ref.set(Arc::downgrade(&engine));
        engine
    }

    /// Installs the router for sessions of other nodes (cluster mode).
    pub fn set_router(&self, router: Arc<dyn SessionRouter>) {
        let _ = self.router.set(router);
    }

    /// True when requests for other nodes' sessions are forwarded (cluster mode).
    pub fn forwards(&self) -> bool {
        self.router.get().is_some()
    }

    /// The endpoint's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The interval busy websockets are paced at, and how it follows the writers' lag.
    pub fn write_cadence(&self) -> &WriteCadence {
        &self.write_cadence
    }

    /// Number of open sessions.
    pub fn session_count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    fn shard(&self, sid: &Sid) -> &SessionShard {
        let hash = sid
            .as_bytes()
            .iter()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(*b as usize));
        &self.shards[hash % SHARDS]
    }

    /// The open session with this id.
    pub fn find(&self, sid: &Sid) -> Option<Arc<Session>> {
        self.shard(sid).lock().get(sid).cloned()
    }

    /// Handles one HTTP request to the endpoint path.
    ///
    /// The request is routed at once; the future then holds only what the answer still needs (for a long-poll
    /// GET: the session and the wait, not the request), since a polling client keeps one parked for up to a
    /// ping interval.
    pub fn handle(
        self: Arc<Self>,
        req: Request<Body>,
        remote: Option<SocketAddr>,
    ) -> impl Future<Output = Response<Body>> + Send + 'static {
        let origin = req
            .headers()
            .get(http::header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let routed = self.route(req, remote);
        async move {
            let response = match routed {
                Routed::Done(response) => *response,
                Routed::Get(session) => super::polling::get(&self, &session).await,
                Routed::Post(session, req) => {
                    Box::pin(super::polling::post(&self, &session, *req)).await
                }
                Routed::Forwarded(forwarded) => Ok(forwarded.await),
            };
            let response = response.unwrap_or_else(|error| error.into_response());
            self.config.cors.apply(response, origin.as_deref())
        }
    }

    fn route(self: &Arc<Self>, req: Request<Body>, remote: Option<SocketAddr>) -> Routed {
        if req.method() == Method::OPTIONS {
            return Routed::done(Ok(super::cors::preflight()));
        }
        let query = match Query::parse(req.uri().query().unwrap_or("")) {
            Ok(query) => query,
            Err(error) => return Routed::done(Err(error)),
        };
        if let Some(owner) = query
            .sid
            .as_deref()
            .and_then(Sid::parse)
            .map(|sid| sid.node_tag())
            .filter(|tag| *tag != self.config.node_tag)
        {
            // Another node's session: no sticky sessions needed in front of the cluster. A draining node takes
            // no new websocket for it (503 before any upgrade: the balancer tries another node).
            if query.transport == TransportParam::WebSocket && self.is_refusing() {
                return Routed::done(Err(refused_draining()));
            }
            return match self
                .router
                .get()
                .and_then(|router| router.forward(owner, req))
            {
                Some(forwarded) => Routed::Forwarded(forwarded),
                None => Routed::done(Err(EngineError::UnknownSid)),
            };
        }
        match (query.transport, query.sid.as_deref()) {
            (TransportParam::WebSocket, sid) => {
                let sid = match sid
                    .map(|s| Sid::parse(s).ok_or(EngineError::UnknownSid))
                    .transpose()
                {
                    Ok(sid) => sid,
                    Err(error) => return Routed::done(Err(error)),
                };
                // Only a new session is admitted; an upgrade belongs to one that already was.
                let (remote, slot) = match sid {
                    Some(_) => (remote, None),
                    // Refused before the upgrade, so a balancer can try another node (`503`).
                    None if self.is_refusing() => return Routed::done(Err(refused_draining())),
                    None => {
                        let client = self.client_addr(remote, req.headers());
                        match self.admit_address(client) {
                            Ok(slot) => (client, slot),
                            Err(error) => return Routed::done(Err(error)),
                        }
                    }
                };
                Routed::done(super::websocket::upgrade(
                    self.clone(),
                    req,
                    sid,
                    query.into_open_request(remote),
                    slot,
                ))
            }
            (TransportParam::Polling, None) => {
                if req.method() != Method::GET {
                    return Routed::done(Err(EngineError::BadHandshakeMethod));
                }
                let client = self.client_addr(remote, req.headers());
                let opened = self.admit_address(client).and_then(|slot| {
                    self.open_session(
                        TransportKind::Polling,
                        &query.into_open_request(client),
                        slot,
                    )
                });
                let session = match opened {
                    Ok(session) => session,
                    Err(error) => return Routed::done(Err(error)),
                };
                self.start_heartbeat(&session);
                // Between two GETs no task watches the session: the heartbeat task finishes it if its
                // outbox closes then.
                self.heartbeats.watch_close(&session);
                Routed::done(Ok(super::polling::open_response(
                    &self.open_packet(&session, true),
                )))
            }
            (TransportParam::Polling, Some(sid)) => {
                let Some(session) = Sid::parse(sid).and_then(|sid| self.find(&sid)) else {
                    return Routed::done(Err(EngineError::UnknownSid));
                };
                if session.is_closed() {
                    return Routed::done(self.closed_session_reply(&session));
                }
                if session.pong_overdue() {
                    self.close_session(&session, CloseReason::PingTimeout);
                    return Routed::done(Err(EngineError::UnknownSid));
                }
                match *req.method() {
                    Method::GET => Routed::Get(session),
                    Method::POST => Routed::Post(session, Box::new(req)),
                    _ => Routed::done(Err(EngineError::BadRequest("method not allowed"))),
                }
            }
        }
    }

    /// The client behind a request from `remote`: the peer, or the client a trusted proxy names (then with
    /// port 0).
    fn client_addr(
        &self,
        remote: Option<SocketAddr>,
        headers: &http::HeaderMap,
    ) -> Option<SocketAddr> {
        let remote = remote?;
        let proxies = &self.config.trusted_proxies;
        if proxies.is_empty() {
            return Some(remote);
        }
        let client = proxies.client(remote.ip(), headers);
        Some(if client == remote.ip() {
            remote
        } else {
            SocketAddr::new(client, 0)
        })
    }

    /// Admits one more session from `client` under the per-address limits (a request without a peer address,
    /// which only in-process callers make, is not counted).
    pub(crate) fn admit_address(
        &self,
        client: Option<SocketAddr>,
    ) -> Result<Option<AddressSlot>, EngineError> {
        let (Some(table), Some(client)) = (&self.addresses, client) else {
            return Ok(None);
        };
        match table.admit(client.ip()) {
            Ok(slot) => Ok(Some(slot)),
            Err(refusal) => {
                metrics::counter!("tidings_connections_refused_total", "reason" => refusal.label())
                    .increment(1);
                tracing::debug!(client = %client.ip(), %refusal, "handshake refused");
                Err(EngineError::TooManyRequests(refusal))
            }
        }
    }

    /// Creates and registers a session and lets the layer above attach to it. The session holds `slot` (its
    /// place in its address's count) until it leaves the table.
    pub(crate) fn open_session(
        self: &Arc<Self>,
        transport: TransportKind,
        request: &OpenRequest,
        slot: Option<AddressSlot>,
    ) -> Result<Arc<Session>, EngineError> {
        if self.is_refusing() {
            return Err(refused_draining());
        }
        if self.count.fetch_add(1, Ordering::AcqRel) >= self.config.max_sessions {
            self.count.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!("tidings_connections_refused_total", "reason" => "max_connections")
                .increment(1);
            return Err(EngineError::Full);
        }
        let handler = self.handler.open(request);
        let session = Session::with_handler(
            Sid::random_tagged(&self.config.node_tag),
            transport,
            self.config.outbox,
            self.config.max_messages_per_sec.saturating_mul(2),
            Some(handler.clone()),
        );
        session.hold_address(slot);
        self.shard(&session.sid())
            .lock()
            .insert(session.sid(), session.clone());
        handler.opened(&session);
        metrics::gauge!("tidings_sessions").increment(1.0);
        metrics::counter!("tidings_sessions_opened_total", "transport" => transport_label(transport)).increment(1);
        Ok(session)
    }

    /// Starts the session's heartbeat (pings, and the close of a session whose pong is overdue).
    pub(crate) fn start_heartbeat(self: &Arc<Self>, session: &Arc<Session>) {
        self.heartbeats.start(self, session);
    }

    /// The runtime the endpoint was made in (`None` when made outside one).
    pub(crate) fn runtime(&self) -> Option<tokio::runtime::Handle> {
        self.runtime.clone()
    }

    /// Number of sessions the heartbeat task looks after (closed ones not yet swept included).
    pub fn heartbeat_len(&self) -> usize {
        self.heartbeats.len()
    }

    /// The open packet for a session: `0{"sid":…,"upgrades":[…],"pingInterval":…,"pingTimeout":…,"maxPayload":…}`.
    pub(crate) fn open_packet(&self, session: &Session, can_upgrade: bool) -> Outgoing {
        let json = format!(
            r#"{{"sid":"{}","upgrades":[{}],"pingInterval":{},"pingTimeout":{},"maxPayload":{}}}"#,
            session.sid(),
            if can_upgrade { r#""websocket""# } else { "" },
            self.config.ping_interval.as_millis(),
            self.config.ping_timeout.as_millis(),
            self.config.max_payload
        );
        Outgoing::open(&json)
    }

    /// Ends a session once: removes it, tells the layer above, and lets its transport send what is queued and close.
    pub fn close_session(&self, session: &Arc<Session>, reason: CloseReason) {
        if !session.mark_closed() {
            return;
        }
        self.heartbeats.note_closed();
        let linger = reason == CloseReason::ClientClose
            && session.transport() == TransportKind::Polling
            && !session.flag(Flag::PollActive);
        if linger {
            // A GET racing the client's close packet still gets its noop; the entry goes after that GET or
            // after one ping interval.
            session.swap_flag(Flag::ClosedByClient, true);
            let sid = session.sid();
            let delay = self.config.ping_interval;
            let engine = self.self_ref.get().and_then(std::sync::Weak::upgrade);
            if let Some(engine) = engine {
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    engine.forget(&sid);
                });
            }
        } else {
            self.forget(&session.sid());
        }
        self.close_log.log(&session.sid(), &reason);
        metrics::gauge!("tidings_sessions").decrement(1.0);
        self.recent_closes.record(&reason, session.transport());
        metrics::counter!("tidings_sessions_closed_total", "reason" => reason.label()).increment(1);
        if let Some(handler) = session.handler() {
            handler.on_close(session, &reason);
        }
        session.outbox.close(reason);
    }

    /// Drops a session from the table.
    fn forget(&self, sid: &Sid) {
        let removed = self.shard(sid).lock().remove(sid);
        if let Some(session) = removed {
            self.count.fetch_sub(1, Ordering::AcqRel);
            if let (Some(key), Some(table)) = (session.take_address(), &self.addresses) {
                table.release(key);
            }
        }
    }

    /// Answers a GET for a session already closed: a noop for the first GET after a client close, else 400.
    pub(crate) fn closed_session_reply(
        &self,
        session: &Session,
    ) -> Result<Response<Body>, EngineError> {
        self.forget(&session.sid());
        if session.swap_flag(Flag::ClosedByClient, false) {
            Ok(super::polling::noop_response())
        } else {
            Err(EngineError::UnknownSid)
        }
    }

    /// Applies one packet received from the client on any transport. Every packet but a close takes a token of
    /// the session's rate limit, the heartbeat's pongs and noops included.
    pub(crate) fn on_packet(
        &self,
        session: &Arc<Session>,
        packet: Packet,
    ) -> Result<(), CloseReason> {
        if !matches!(packet, Packet::Close) {
            self.admit_packet(session)?;
        }
        match packet {
            Packet::Message(text) => self.deliver(session, Message::Text(text)),
            Packet::Binary(data) => self.deliver(session, Message::Binary(data)),
            Packet::Pong(_) => {
                session.on_pong();
                Ok(())
            }
            Packet::Ping(data) => session
                .outbox
                .push(Outgoing::pong(data))
                .map_err(|_| CloseReason::SlowConsumer),
            Packet::Close => Err(CloseReason::ClientClose),
            Packet::Noop => Ok(()),
            Packet::Open(_) | Packet::Upgrade => {
                Err(CloseReason::ProtocolError("unexpected packet type".into()))
            }
        }
    }

    /// Applies one message of a raw endpoint (no Engine.IO packet around it), under the same flood limit.
    pub(crate) fn on_message(
        &self,
        session: &Arc<Session>,
        message: Message,
    ) -> Result<(), CloseReason> {
        self.admit_packet(session)?;
        self.deliver(session, message)
    }

    /// Takes a token of the session's rate limit for one thing the client sent (a packet, or a websocket
    /// ping or pong frame); past the limit the session is closed as a flood.
    pub(crate) fn admit_packet(&self, session: &Session) -> Result<(), CloseReason> {
        if session.admit_message(self.config.max_messages_per_sec) {
            return Ok(());
        }
        metrics::counter!("tidings_flood_disconnects_total").increment(1);
        Err(CloseReason::Flood)
    }

    fn deliver(&self, session: &Arc<Session>, message: Message) -> Result<(), CloseReason> {
        match session.handler() {
            Some(handler) => handler.on_message(session, message),
            None => Ok(()),
        }
    }

    /// Refuses new sessions and closes every open one (graceful shutdown).
    pub fn close_all(&self, reason: CloseReason) {
        self.refuse_new_sessions();
        self.close_every_session(reason);
    }

    /// From now on new sessions are refused with `503` (a draining node); open ones carry on.
    pub fn refuse_new_sessions(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// True once [`Engine::refuse_new_sessions`] was called.
    pub fn is_refusing(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Sets `tidings_connections{transport}` from the open sessions (read when `/metrics` is scraped: exact,
    /// whatever upgrades and closes raced); when `outbox` is set, also records each session's queued messages
    /// in the `tidings_outbox_depth` histogram.
    pub fn sample_metrics(&self, outbox: bool) {
        let (mut polling, mut websocket) = (0u64, 0u64);
        // Read outside the shard locks: an outbox is never locked while a shard lock is held.
        for session in self.sessions() {
            match session.transport() {
                TransportKind::WebSocket => websocket += 1,
                TransportKind::Polling | TransportKind::Upgrading => polling += 1,
            }
            if outbox {
                metrics::histogram!("tidings_outbox_depth").record(session.outbox.len() as f64);
            }
        }
        metrics::gauge!("tidings_connections", "transport" => "polling").set(polling as f64);
        metrics::gauge!("tidings_connections", "transport" => "websocket").set(websocket as f64);
    }

    /// The most recent session closes and the count of each reason since start (for the dashboard).
    pub fn recent_closes(&self) -> &RecentCloses {
        &self.recent_closes
    }

    /// Every open session, in no particular order.
    pub fn sessions(&self) -> Vec<Arc<Session>> {
        self.shards
            .iter()
            .flat_map(|shard| shard.lock().values().cloned().collect::<Vec<_>>())
            .collect()
    }

    /// Closes every open session (clients reconnect); new sessions are still accepted.
    pub fn close_every_session(&self, reason: CloseReason) {
        for session in self.sessions() {
            self.close_session(&session, reason.clone());
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.heartbeats.stop();
    }
}

/// Counts a handshake refused because the node drains.
fn refused_draining() -> EngineError {
    metrics::counter!("tidings_connections_refused_total", "reason" => "draining").increment(1);
    EngineError::ShuttingDown
}

pub(crate) fn transport_label(kind: TransportKind) -> &'static str {
    match kind {
        TransportKind::Polling | TransportKind::Upgrading => "polling",
        TransportKind::WebSocket => "websocket",
    }
}
