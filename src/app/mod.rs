//! The tidings rules on top of Socket.IO: JWT-authenticated connects, rooms the token allows, listen-only
//! clients, and publishing only where a claim or a room policy says so.

mod events;
mod recover;

pub use events::validate_event_name;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::auth::{user_room, Authenticator, RoomPattern};
use crate::engineio::session::Sid;
use crate::hub::{Hub, RoomKey, BROADCAST_ROOM};
use crate::recovery::{Membership, SessionRecord, SessionStore};
use crate::socketio::{Application, ClientEvent, ConnectRequest, Socket};

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
}

/// Event names a server must never emit: the client library reserves them for its own life-cycle.
pub const RESERVED_EVENTS: &[&str] = &[
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// The tidings application.
pub struct Tidings {
    auth: Authenticator,
    hub: Arc<Hub>,
    sessions: Arc<dyn SessionStore>,
    namespaces: HashMap<String, NamespacePolicy>,
    room_policies: Vec<RoomPolicy>,
    max_disconnection: std::time::Duration,
    /// Connected sockets with a recovery id, so a client whose old connection is not known dead yet can
    /// still take its session over.
    live: parking_lot::Mutex<HashMap<Sid, std::sync::Weak<Socket>>>,
}

/// Everything the application is built from.
pub struct TidingsParts {
    /// Token verification.
    pub auth: Authenticator,
    /// Rooms and fan-out.
    pub hub: Arc<Hub>,
    /// Where disconnected sessions wait for recovery.
    pub sessions: Arc<dyn SessionStore>,
    /// `/` plus the configured namespaces.
    pub namespaces: HashMap<String, NamespacePolicy>,
    /// Room policies from config.
    pub room_policies: Vec<RoomPolicy>,
    /// How long a disconnected session stays recoverable.
    pub max_disconnection: std::time::Duration,
}

impl Tidings {
    /// The application built from its parts.
    pub fn new(parts: TidingsParts) -> Arc<Tidings> {
        Arc::new(Tidings {
            auth: parts.auth,
            hub: parts.hub,
            sessions: parts.sessions,
            namespaces: parts.namespaces,
            room_policies: parts.room_policies,
            max_disconnection: parts.max_disconnection,
            live: parking_lot::Mutex::new(HashMap::new()),
        })
    }

    /// The session store.
    pub fn sessions(&self) -> &Arc<dyn SessionStore> {
        &self.sessions
    }

    /// The namespace's policy, if it exists.
    pub fn namespace(&self, nsp: &str) -> Option<&NamespacePolicy> {
        self.namespaces.get(nsp)
    }

    /// The hub behind the application.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    fn policy_allows_publish(&self, room: &str) -> bool {
        self.room_policies
            .iter()
            .any(|policy| policy.client_publish && policy.pattern.matches(room))
    }

    fn join(&self, socket: &Arc<Socket>, room: &str) -> bool {
        self.hub.with_order(|seq| self.join_at(socket, room, seq))
    }

    /// Joins with the hub's ordering lock held (`seq` = last assigned sequence).
    fn join_at(&self, socket: &Arc<Socket>, room: &str, seq: u64) -> bool {
        let key = RoomKey::new(socket.nsp(), room);
        let joined = self.hub.join(&key, socket.id(), socket.session());
        if joined {
            socket.rooms.lock().push(Membership {
                room: room.into(),
                epoch: self.hub.history().epoch(&key),
                joined_seq: seq,
            });
        }
        joined
    }

    /// Removes a socket from all its rooms and returns what recovery needs to restore it.
    fn detach(&self, socket: &Arc<Socket>) -> Option<SessionRecord> {
        let rooms = std::mem::take(&mut *socket.rooms.lock());
        for membership in &rooms {
            let key = RoomKey::new(socket.nsp(), &membership.room);
            self.hub.leave(&key, socket.id());
            self.hub.history().epoch(&key);
        }
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

    /// Takes the session of a socket still connected with this pid (its client came back on a new connection
    /// before the old one was known dead) and closes the old connection.
    fn take_over(&self, pid: &Sid) -> Option<SessionRecord> {
        let socket = self.live.lock().remove(pid)?.upgrade()?;
        if !socket.supersede() {
            return None;
        }
        let record = self.detach(&socket);
        socket
            .session()
            .outbox
            .close(crate::engineio::CloseReason::ServerClose(
                "session resumed on another connection".into(),
            ));
        record
    }

    /// Registers a connected socket that has a recovery id.
    fn track(&self, socket: &Arc<Socket>) {
        if let Some(pid) = socket.pid() {
            self.live.lock().insert(pid, Arc::downgrade(socket));
        }
    }

    fn leave(&self, socket: &Arc<Socket>, room: &str) -> bool {
        let key = RoomKey::new(socket.nsp(), room);
        let left = self.hub.leave(&key, socket.id());
        if left {
            socket.rooms.lock().retain(|m| &*m.room != room);
            // Keep the stream's epoch alive for a while after the last member leaves.
            self.hub.history().epoch(&key);
        }
        left
    }
}

/// The fields of a CONNECT payload tidings reads: the token, and the recovery id and offset the client
/// library adds on reconnection.
#[derive(serde::Deserialize, Default)]
struct AuthPayload {
    token: Option<String>,
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
    fn connect(&self, request: ConnectRequest<'_>) -> Result<Arc<Socket>, String> {
        let Some(policy) = self.namespaces.get(request.nsp) else {
            return Err("Invalid namespace".into());
        };
        let payload = AuthPayload::parse(request.auth);
        let token = payload.token.as_deref().or(request.query_token);
        let Some(token) = token else {
            metrics::counter!("tidings_auth_failures_total", "reason" => "missing").increment(1);
            return Err("unauthorized".into());
        };
        let claims = match self.auth.verify(token) {
            Ok(claims) => Arc::new(claims),
            Err(error) => {
                tracing::debug!(%error, detail = ?error, "connect refused");
                metrics::counter!("tidings_auth_failures_total", "reason" => "invalid")
                    .increment(1);
                return Err(error.to_string());
            }
        };
        if policy.recovery {
            if let Some(pid) = payload.pid.as_deref() {
                if let Some(socket) =
                    self.recover(&request, &claims, pid, payload.offset.as_deref())
                {
                    return Ok(socket);
                }
            }
        }
        let pid = policy.recovery.then(Sid::random);
        let socket = Socket::new(
            request.session.clone(),
            request.nsp,
            None,
            pid,
            Some(claims.clone()),
        );
        socket.send_connect_reply().map_err(|e| e.to_string())?;
        self.hub.with_order(|seq| {
            self.join_at(&socket, BROADCAST_ROOM, seq);
            self.join_at(&socket, &user_room(claims.sub()), seq);
            for room in claims.auto_join() {
                self.join_at(&socket, room, seq);
            }
        });
        self.track(&socket);
        metrics::counter!("tidings_sockets_connected_total").increment(1);
        Ok(socket)
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
        if let (true, Some(record)) = (session_closed, record) {
            self.sessions.park(record);
        }
    }
}
