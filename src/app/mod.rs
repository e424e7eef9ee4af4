//! The tidings rules on top of Socket.IO: JWT-authenticated connects, rooms the token allows, listen-only
//! clients, and publishing only where a claim or a room policy says so.

pub mod backend;
mod cluster;
mod connect;
pub mod direct;
pub mod egress;
mod events;
pub mod expiry;
mod once;
pub mod presence;
mod queues;
mod recover;
mod request;

pub use backend::Backend;
pub use cluster::{spawn_ingest, ClusterBackend, IngestQueue};
pub use events::validate_event_name;
pub use once::BatchAnswers;
pub use request::{check_data, CheckedPublish, PublishFields, PublishLimits, RequestError};

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::auth::{Authenticator, RoomPattern};
use crate::engineio::session::Sid;
use crate::hub::{Hub, RoomKey};
use crate::recovery::{Membership, Owner, SessionRecord, TakeRefused};
use crate::socketio::{Application, ClientEvent, ConnectRequest, Connecting, Socket};

/// Per-namespace settings.
#[derive(Debug, Clone)]
pub struct NamespacePolicy {
    /// Tag events with offsets and hand out recovery ids.
    pub recovery: bool,
}

/// A room policy from config.
#[derive(Debug, Clone)]
pub struct RoomPolicy {
    /// Rooms it applies to.
    pub pattern: RoomPattern,
    /// Members may publish to matching rooms.
    pub client_publish: bool,
    /// Events are ephemeral (no offset, history or replay).
    pub ephemeral: bool,
    /// Conflation interval and key field, when the rooms conflate (they are then ephemeral too).
    pub conflate: Option<(u64, String)>,
    /// Client publishes per second and burst per connection into matching rooms (0: no limit of its own).
    pub publish_rate: (u32, u32),
    /// Members hear `presence:join` / `presence:leave`.
    pub presence_events: bool,
}

impl RoomPolicy {
    /// A policy that only sets who may publish.
    pub fn publishing(pattern: RoomPattern, client_publish: bool) -> RoomPolicy {
        RoomPolicy {
            pattern,
            client_publish,
            ephemeral: false,
            conflate: None,
            publish_rate: (0, 0),
            presence_events: false,
        }
    }

    /// How an event with `data` is conflated in these rooms: `None` when they do not conflate or the data has
    /// no key field (see [`events::conflation_key`]).
    pub fn conflate_for(&self, data: &serde_json::value::RawValue) -> Option<crate::hub::Conflate> {
        let (interval_ms, field) = self.conflate.as_ref()?;
        Some(crate::hub::Conflate {
            interval_ms: *interval_ms,
            key: events::conflation_key(data, field)?,
        })
    }

    /// Events of these rooms skip history and replay.
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral || self.conflate.is_some()
    }
}

/// The first policy whose pattern matches `room` (config order), the one that decides for it.
pub fn first_matching<'a>(policies: &'a [RoomPolicy], room: &str) -> Option<&'a RoomPolicy> {
    first_matching_at(policies, room).map(|(_, policy)| policy)
}

/// [`first_matching`] with the policy's index in config order.
pub fn first_matching_at<'a>(
    policies: &'a [RoomPolicy],
    room: &str,
) -> Option<(usize, &'a RoomPolicy)> {
    policies
        .iter()
        .enumerate()
        .find(|(_, policy)| policy.pattern.matches(room))
}

/// Event names no publisher may use: the client library reserves some for its own life-cycle, and the server
/// sends the others itself (a publisher must not be able to forge a status change or a presence change).
pub const RESERVED_EVENTS: &[&str] = &[
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
    expiry::EXPIRING_EVENT,
    expiry::EXPIRED_EVENT,
    direct::STATUS_EVENT,
    presence::JOIN_EVENT,
    presence::LEAVE_EVENT,
    presence::RESET_EVENT,
];

/// What a publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// Offset (sequence) of the event.
    pub seq: u64,
    /// Local sessions it was queued for (embedded mode), or nodes it reached (cluster mode).
    pub recipients: u64,
}

/// Why a publish was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The cluster could not make the event durable; nothing was published.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
}

/// Why an ingest message was not published.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The message broke a rule; it will never be published.
    #[error("{0}")]
    Refused(RequestError),
    /// The event store could not take it now.
    #[error("{0}")]
    Unavailable(PublishError),
}

impl IngestError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            IngestError::Refused(error) => error.code(),
            IngestError::Unavailable(_) => "unavailable",
        }
    }
}

/// The tidings application.
pub struct Tidings {
    auth: Authenticator,
    hub: Arc<Hub>,
    backend: Backend,
    namespaces: HashMap<String, NamespacePolicy>,
    room_policies: Vec<RoomPolicy>,
    max_disconnection: std::time::Duration,
    /// Most events replayed to one recovering socket; a longer gap gets a fresh session instead.
    max_replay: usize,
    /// Bounds on what one publish may carry.
    publish_limits: PublishLimits,
    /// Most rooms one socket may be in (its personal and broadcast rooms included).
    max_rooms_per_socket: usize,
    /// Byte budget of one history reply.
    history_reply_bytes: usize,
    /// Token deadlines of connected sockets.
    expiry: expiry::ExpiryClock,
    /// Connected sockets with a recovery id, so a client whose old connection is not known dead yet can
    /// still take its session over.
    live: parking_lot::Mutex<HashMap<Sid, std::sync::Weak<Socket>>>,
    /// Per connection, the queue its durable `publish` events go through one after the other, so they are
    /// sequenced in the order the client sent them (on this node and across the cluster).
    publish_queues: queues::ConnectionQueues<PublishJob>,
    /// Direct messages.
    direct: Arc<direct::Direct>,
    /// The event bus client publishes go to; none until [`Tidings::set_egress`].
    egress: std::sync::OnceLock<Arc<dyn egress::Egress>>,
    self_ref: std::sync::OnceLock<std::sync::Weak<Tidings>>,
}

/// A connection's durable publish with its ack, waiting for the ones before it.
type PublishJob = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Durable `publish` events of one connection waiting for the event log at most; past it a publish is refused
/// as unavailable (the connection's packet rate bounds how fast it can get there).
pub const MAX_QUEUED_PUBLISHES: usize = 256;

/// Everything the application is built from.
pub struct TidingsParts {
    /// Token verification.
    pub auth: Authenticator,
    /// Rooms and fan-out.
    pub hub: Arc<Hub>,
    /// Sequencing, history, room subscriptions and session records.
    pub backend: Backend,
    /// `/` plus the configured namespaces.
    pub namespaces: HashMap<String, NamespacePolicy>,
    /// Room policies from config.
    pub room_policies: Vec<RoomPolicy>,
    /// How long a disconnected session stays recoverable.
    pub max_disconnection: std::time::Duration,
    /// Most events one recovery may replay (it must fit the socket's outbox).
    pub max_replay: usize,
    /// Bounds on what one publish may carry.
    pub publish_limits: PublishLimits,
    /// Most rooms one socket may be in.
    pub max_rooms_per_socket: usize,
    /// Byte budget of one history reply (`history.max_reply_bytes`).
    pub history_reply_bytes: usize,
    /// How long before `exp` a socket hears `token:expiring`.
    pub expiry_notice: std::time::Duration,
    /// Clock skew tolerated on `exp`: a socket is disconnected this long after it.
    pub expiry_leeway: std::time::Duration,
    /// Direct messages.
    pub direct: Arc<direct::Direct>,
}

impl Tidings {
    /// The application built from its parts.
    pub fn new(parts: TidingsParts) -> Arc<Tidings> {
        let app = Arc::new(Tidings {
            auth: parts.auth,
            hub: parts.hub,
            backend: parts.backend,
            namespaces: parts.namespaces,
            room_policies: parts.room_policies,
            max_disconnection: parts.max_disconnection,
            max_replay: parts.max_replay,
            publish_limits: parts.publish_limits,
            max_rooms_per_socket: parts.max_rooms_per_socket,
            history_reply_bytes: parts.history_reply_bytes,
            expiry: expiry::ExpiryClock::new(parts.expiry_notice, parts.expiry_leeway),
            live: parking_lot::Mutex::new(HashMap::new()),
            publish_queues: queues::ConnectionQueues::new(MAX_QUEUED_PUBLISHES),
            direct: parts.direct,
            egress: std::sync::OnceLock::new(),
            self_ref: std::sync::OnceLock::new(),
        });
        let _ = app.self_ref.set(Arc::downgrade(&app));
        tokio::spawn(expiry_loop(Arc::downgrade(&app)));
        app.spawn_record_refresh();
        app
    }

    /// This application as an `Arc`, for work that outlives a borrowed call.
    fn arc(&self) -> Option<Arc<Tidings>> {
        self.self_ref.get().and_then(std::sync::Weak::upgrade)
    }

    /// The direct message layer.
    pub fn direct(&self) -> &Arc<direct::Direct> {
        &self.direct
    }

    /// Sends client publishes and direct-message status changes to `egress` from now on (set once, at start).
    pub fn set_egress(&self, egress: Arc<dyn egress::Egress>) {
        self.direct.set_egress(egress.clone());
        let _ = self.egress.set(egress);
    }

    /// The event bus client publishes go to ([`egress::NoEgress`] when none was set).
    pub fn egress(&self) -> &dyn egress::Egress {
        match self.egress.get() {
            Some(egress) => &**egress,
            None => &egress::NoEgress,
        }
    }

    /// Sequencing, history, room subscriptions and session records.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Byte budget of one history reply (`history.max_reply_bytes`).
    pub fn history_reply_bytes(&self) -> usize {
        self.history_reply_bytes
    }

    /// Publishes an event: sequenced, stored in history and queued for every member (embedded mode), or made
    /// durable in Redis and published to the nodes serving its rooms (cluster mode). Returns once that is done,
    /// and the event is durable where the configuration keeps history.
    pub async fn publish(&self, event: &crate::hub::Event<'_>) -> Result<Receipt, PublishError> {
        self.backend.log.publish(event).await
    }

    /// Publishes a checked event (HTTP API, ingest): to the rooms whose policy makes them ephemeral — all of
    /// them when the request said `ephemeral` — as an ephemeral event (conflated where the room says so), to
    /// the others through the event log. The log's receipt when any room got the event durably; `None` when all
    /// were ephemeral.
    pub async fn publish_checked(
        &self,
        checked: &request::CheckedPublish<'_>,
    ) -> Result<Option<Receipt>, PublishError> {
        self.publish_checked_once(checked, None)
            .await
            .map(|done| done.and_then(|receipt| receipt))
    }

    /// [`Tidings::publish_checked`], once per `claim` (a record id, kept `ttl` ms) when given: the durable
    /// publish takes the claim in the same step (cluster mode), or the claim is taken first when all rooms
    /// are ephemeral. `None` when the claim was taken before (nothing published).
    pub async fn publish_checked_once(
        &self,
        checked: &request::CheckedPublish<'_>,
        claim: Option<(&str, u64)>,
    ) -> Result<Option<Option<Receipt>>, PublishError> {
        let (ephemeral, durable) = self.split_rooms(checked);
        if claim.is_none() {
            // Without a claim the ephemeral rooms go first: a full queue refuses the whole publish before
            // anything durable happened.
            self.broadcast_ephemeral(checked, &ephemeral)?;
        }
        let mut receipt = None;
        if !durable.is_empty() {
            let with_offset = self.namespace(&checked.nsp).is_some_and(|ns| ns.recovery);
            let event = crate::hub::Event {
                nsp: &checked.nsp,
                rooms: &durable,
                name: &checked.event,
                data: checked.data,
                attachments: &[],
                with_offset,
            };
            receipt = match claim {
                None => Some(self.publish(&event).await?),
                Some((id, ttl)) => match self.backend.log.publish_once(&event, id, ttl).await? {
                    Some(receipt) => Some(receipt),
                    None => return Ok(None),
                },
            };
        } else if let Some((id, ttl)) = claim {
            if !self.backend.log.claim(id, ttl).await? {
                return Ok(None);
            }
        }
        if claim.is_some() {
            // With a claim they wait for it: a copy of the record delivered again must not reach them twice.
            self.broadcast_ephemeral(checked, &ephemeral)?;
        }
        Ok(Some(receipt))
    }

    /// The rooms of `checked` that take it as an ephemeral event, and the others.
    fn split_rooms(&self, checked: &request::CheckedPublish<'_>) -> (Vec<String>, Vec<String>) {
        checked.rooms.iter().cloned().partition(|room| {
            checked.ephemeral
                || first_matching(&self.room_policies, room).is_some_and(RoomPolicy::is_ephemeral)
        })
    }

    /// Hands `checked` to its ephemeral `rooms` (conflated where the room says so).
    fn broadcast_ephemeral(
        &self,
        checked: &request::CheckedPublish<'_>,
        rooms: &[String],
    ) -> Result<(), PublishError> {
        if rooms.is_empty() {
            return Ok(());
        }
        // Parsed once for every room that conflates (the checks already proved it is JSON).
        let data = serde_json::from_slice::<&serde_json::value::RawValue>(checked.data).ok();
        for room in rooms {
            let policy = first_matching(&self.room_policies, room);
            let conflate = policy
                .zip(data)
                .and_then(|(policy, data)| policy.conflate_for(data));
            let sent = self.backend.log.broadcast(
                &RoomKey::new(&checked.nsp, room),
                backend::Ephemeral {
                    name: &checked.event,
                    data: checked.data,
                    attachments: &[],
                    conflate,
                },
            );
            if !sent {
                return Err(PublishError::Unavailable(
                    "ephemeral publish queue full".into(),
                ));
            }
        }
        Ok(())
    }

    /// Publishes a message of the Redis ingest channel (`{room|rooms, event, data, namespace?}`) after the
    /// same checks as an HTTP publish.
    pub async fn publish_json(&self, raw: &[u8]) -> Result<Receipt, IngestError> {
        let receipt = self.publish_json_once(raw, None).await?;
        Ok(receipt.unwrap_or(Receipt {
            seq: 0,
            recipients: 0,
        }))
    }

    /// [`Tidings::publish_json`] once per `claim` (a record id, kept `ttl` ms), taken in the same step as the
    /// publish where the event log shares claims (cluster mode): `Ok(None)` when it was published before.
    pub async fn publish_json_once(
        &self,
        raw: &[u8],
        claim: Option<(&str, u64)>,
    ) -> Result<Option<Receipt>, IngestError> {
        let checked = self.check_ingest(raw).map_err(IngestError::Refused)?;
        let done = self
            .publish_checked_once(&checked, claim)
            .await
            .map_err(IngestError::Unavailable)?;
        Ok(done.map(|receipt| {
            receipt.unwrap_or(Receipt {
                seq: 0,
                recipients: 0,
            })
        }))
    }

    /// A snapshot of a socket's recoverable state.
    fn record_of(&self, socket: &Arc<Socket>) -> Option<SessionRecord> {
        let rooms = socket.rooms.lock().to_vec();
        self.record_with(socket, rooms)
    }

    /// The recoverable state of a socket with the given rooms (None without recovery id or user).
    fn record_with(&self, socket: &Arc<Socket>, rooms: Vec<Membership>) -> Option<SessionRecord> {
        let (pid, user) = (socket.pid()?, socket.user()?);
        Some(SessionRecord {
            pid,
            sid: socket.id(),
            nsp: socket.nsp().into(),
            sub: user.sub().to_owned(),
            rooms,
            expires_at: std::time::Instant::now() + self.max_disconnection,
        })
    }

    /// The namespace's policy, if it exists.
    pub fn namespace(&self, nsp: &str) -> Option<&NamespacePolicy> {
        self.namespaces.get(nsp)
    }

    /// The hub behind the application.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The `[[rooms]]` policy deciding for `room`, with its index.
    pub fn room_policy(&self, room: &str) -> Option<(usize, &RoomPolicy)> {
        first_matching_at(&self.room_policies, room)
    }

    /// True when the first `[[rooms]]` policy matching `room` lets members publish: the first match wins, so a
    /// read-only entry listed before a broad chat rule keeps its rooms read-only.
    fn policy_allows_publish(&self, room: &str) -> bool {
        first_matching(&self.room_policies, room).is_some_and(|policy| policy.client_publish)
    }

    /// Runs `job` (a connection's durable publish and its ack) after the ones the connection queued before it;
    /// false when [`MAX_QUEUED_PUBLISHES`] wait already.
    fn enqueue_publish(&self, socket: &Socket, job: PublishJob) -> bool {
        self.publish_queues
            .push(socket.id(), job, |mut jobs| async move {
                while let Some(job) = jobs.recv().await {
                    job.await;
                }
            })
    }

    /// A connection of the socket's user is in the room of `key` now (presence). `key` is the room's key in
    /// the hub: presence keeps a clone of it rather than a copy of the name.
    fn presence_joined(&self, socket: &Socket, key: &RoomKey) {
        let room = key.room();
        if let (Some(user), false) = (socket.user(), room == crate::hub::BROADCAST_ROOM) {
            let announce =
                first_matching(&self.room_policies, room).is_some_and(|p| p.presence_events);
            self.backend.presence.joined(key, user.sub(), announce);
        }
    }

    /// A connection of the socket's user left `room` (presence).
    fn presence_left(&self, socket: &Socket, room: &str) {
        if let (Some(user), false) = (socket.user(), room == crate::hub::BROADCAST_ROOM) {
            let announce =
                first_matching(&self.room_policies, room).is_some_and(|p| p.presence_events);
            self.backend
                .presence
                .left(&RoomKey::new(socket.nsp(), room), user.sub(), announce);
        }
    }

    /// Removes a socket from all its rooms and returns what recovery needs to restore it.
    fn detach(&self, socket: &Arc<Socket>) -> Option<SessionRecord> {
        if let Some(user) = socket.user() {
            self.direct.detach(socket, user.sub());
        }
        self.direct.connection_closed(socket.id());
        self.publish_queues.close(&socket.id());
        let rooms = std::mem::take(&mut *socket.rooms.lock());
        for membership in &rooms {
            let key = &membership.key;
            if self.hub.leave(key, socket.id()) {
                self.presence_left(socket, membership.room());
            }
            self.backend.feed.release(key);
        }
        self.record_with(socket, rooms.into_iter().collect())
    }

    /// Takes the session of a socket still connected with this pid (its client came back on a new connection
    /// before the old one was known dead) and closes the old connection — only for its owner (same user, same
    /// namespace): anyone else presenting the pid leaves the live socket alone.
    fn take_over(&self, pid: &Sid, owner: &Owner<'_>) -> Result<SessionRecord, TakeRefused> {
        let socket = {
            let mut live = self.live.lock();
            let socket = live
                .get(pid)
                .and_then(std::sync::Weak::upgrade)
                .ok_or(TakeRefused::Unknown)?;
            let owned = socket.nsp() == owner.nsp
                && socket.user().is_some_and(|user| user.sub() == owner.sub);
            if !owned {
                return Err(TakeRefused::Mismatch);
            }
            live.remove(pid);
            socket
        };
        if !socket.supersede() {
            return Err(TakeRefused::Unknown);
        }
        let record = self.detach(&socket);
        socket
            .session()
            .outbox
            .close(crate::engineio::CloseReason::ServerClose(
                "session resumed on another connection".into(),
            ));
        record.ok_or(TakeRefused::Unknown)
    }

    /// Sets the token deadlines of a connected socket (its `token:expiring` notice and its disconnection).
    fn watch_expiry(&self, socket: &Arc<Socket>) {
        if let Some(exp) = socket.user().and_then(|user| user.expires_at()) {
            self.expiry.schedule(socket, exp);
        }
    }

    /// Acts on a token deadline that came due.
    fn token_due(&self, socket: &Arc<Socket>, exp: u64, due: expiry::Due) {
        match due {
            expiry::Due::Notice => {
                let in_secs = exp.saturating_sub(expiry::unix_now());
                let notice = serde_json::json!({ "exp": exp, "in_secs": in_secs }).to_string();
                let _ = socket.emit(expiry::EXPIRING_EVENT, &[notice.as_bytes()]);
            }
            expiry::Due::Expire => {
                metrics::counter!("tidings_tokens_expired_total").increment(1);
                tracing::debug!(socket = %socket.id(), exp, "token expired; disconnecting");
                let notice =
                    serde_json::json!({ "message": "token expired", "exp": exp }).to_string();
                let _ = socket.emit(expiry::EXPIRED_EVENT, &[notice.as_bytes()]);
                if socket.disconnect() {
                    // Kept for recovery: a client that comes back with a fresh token resumes its session.
                    self.on_disconnect(socket, true);
                }
            }
        }
    }

    /// Registers a connected socket: its token deadlines, its recovery id, and on the messages namespace its
    /// device (`device` from the CONNECT, else one named after the connection).
    fn track(&self, socket: &Arc<Socket>, device: Option<&str>) {
        self.watch_expiry(socket);
        if socket.nsp() == self.direct.namespace() {
            if let Some(user) = socket.user() {
                self.direct.attach(socket, user, device);
            }
        }
        if let Some(pid) = socket.pid() {
            self.live.lock().insert(pid, Arc::downgrade(socket));
        }
    }

    fn leave(&self, socket: &Arc<Socket>, room: &str) -> bool {
        let key = RoomKey::new(socket.nsp(), room);
        let left = self.hub.leave(&key, socket.id());
        if left {
            self.presence_left(socket, room);
            socket.rooms.lock().retain(|m| m.room() != room);
            self.backend.feed.release(&key);
            self.save_room_left(socket, room);
        }
        left
    }
}

/// Acts on token deadlines once a second while the application lives.
async fn expiry_loop(app: std::sync::Weak<Tidings>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    loop {
        tick.tick().await;
        let Some(app) = app.upgrade() else {
            return;
        };
        for (socket, exp, due) in app.expiry.take_due(expiry::unix_now()) {
            app.token_due(&socket, exp, due);
        }
        ticks += 1;
        if ticks.is_multiple_of(60) {
            app.expiry.purge_closed();
        }
        metrics::gauge!("tidings_token_deadlines").set(app.expiry.len() as f64);
    }
}

/// The fields of a CONNECT payload tidings reads: the token, and the recovery id and offset the client
/// library adds on reconnection.
#[derive(serde::Deserialize, Default)]
struct AuthPayload {
    token: Option<String>,
    device: Option<String>,
    pid: Option<String>,
    offset: Option<String>,
}

impl AuthPayload {
    fn parse(auth: Option<&Bytes>) -> AuthPayload {
        auth.and_then(|a| serde_json::from_slice(a).ok())
            .unwrap_or_default()
    }
}

impl Application for Tidings {
    fn connect(&self, request: ConnectRequest<'_>) -> Connecting {
        let Some(policy) = self.namespaces.get(request.nsp) else {
            return Connecting::Ready(Err("Invalid namespace".into()));
        };
        let payload = AuthPayload::parse(request.auth);
        let token = payload.token.as_deref().or(request.query_token);
        let Some(token) = token else {
            crate::auth::refusals::client_refused(
                "missing",
                "no token in the CONNECT payload or query",
            );
            return Connecting::Ready(Err("unauthorized".into()));
        };
        let claims = match self.auth.verify(token) {
            Ok(claims) => Arc::new(claims),
            Err(error) => {
                crate::auth::refusals::token_refused(&error);
                return Connecting::Ready(Err(error.to_string()));
            }
        };
        if let Some(device) = &payload.device {
            if let Err(error) =
                direct::validate_device(device, self.direct.limits().max_device_bytes)
            {
                crate::auth::refusals::client_refused("device", &error.to_string());
                return Connecting::Ready(Err(format!("invalid device: {error}")));
            }
        }
        let Some(app) = self.arc() else {
            return Connecting::Ready(Err("server shutting down".into()));
        };
        let resume = payload
            .pid
            .filter(|_| policy.recovery)
            .map(|pid| (pid, payload.offset));
        let mut connecting = Box::pin(app.connect_socket(
            request.session.clone(),
            request.nsp.to_owned(),
            claims,
            policy.recovery,
            resume,
            payload.device,
        ));
        // An embedded node decides at once; a cluster node usually waits for Redis.
        match futures_util::FutureExt::now_or_never(&mut connecting) {
            Some(decided) => Connecting::Ready(decided),
            None => Connecting::Pending(connecting),
        }
    }

    fn on_event(&self, socket: &Arc<Socket>, event: ClientEvent) {
        events::handle(self, socket, event);
    }

    fn on_disconnect(&self, socket: &Arc<Socket>, session_closed: bool) {
        if socket.is_superseded() {
            // Its session was already taken over by a recovered connection.
            return;
        }
        if let Some(pid) = socket.pid() {
            let mut live = self.live.lock();
            if live
                .get(&pid)
                .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(socket)))
            {
                live.remove(&pid);
            }
        }
        let record = self.detach(socket);
        // A transport loss keeps the session for recovery; a deliberate client disconnect does not.
        let record = record.filter(|_| session_closed);
        let version = socket.next_record_version();
        match (record, socket.pid()) {
            (Some(record), _) => self.backend.sessions.park(record, version),
            (None, Some(pid)) => self.backend.sessions.forget(pid),
            (None, None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(pattern: &str, client_publish: bool) -> RoomPolicy {
        RoomPolicy::publishing(pattern.parse().unwrap(), client_publish)
    }

    #[test]
    fn first_matching_policy_decides() {
        // A read-only exception listed before a broad chat rule must stay read-only.
        let policies = [policy("chat:announce", false), policy("chat:*", true)];
        let allows = |room| first_matching(&policies, room).is_some_and(|p| p.client_publish);
        assert!(!allows("chat:announce"));
        assert!(allows("chat:lobby"));
        assert!(!allows("news"));
        assert!(first_matching(&policies, "news").is_none());
    }
}
