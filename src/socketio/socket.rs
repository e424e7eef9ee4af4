//! One client connected to one namespace: what it is (id, user, rooms) and how to send to it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use once_cell::race::OnceBox;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::packet::{
    encode_ack, encode_binary_ack, encode_binary_event, encode_connect, encode_disconnect,
    encode_event,
};
use crate::auth::VerifiedClaims;
use crate::engineio::session::Sid;
use crate::engineio::{Outgoing, PushError, Session};
use crate::recovery::Membership;

/// The client's answer to a server emit that asked for an ack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckReply {
    /// Raw JSON array of the ack arguments.
    pub data: Bytes,
    /// Binary attachments of a BINARY_ACK.
    pub attachments: Vec<Bytes>,
}

/// A socket: one namespace of one client.
pub struct Socket {
    id: Sid,
    nsp: Box<str>,
    session: Arc<Session>,
    /// Swapped when the client refreshes its token.
    user: Mutex<Option<Arc<VerifiedClaims>>>,
    pid: Option<Sid>,
    /// Rooms the socket is in, as the application tracks them.
    /// (A thin list: its length lives in its block, which a socket in any room has anyway.)
    pub rooms: Mutex<thin_vec::ThinVec<Membership>>,
    connected: AtomicBool,
    /// In the `tidings_sockets` gauge (set once the client holds it as connected).
    counted: AtomicBool,
    superseded: AtomicBool,
    /// The next ack id (32 bits: ids wrap after four billion emits, long after any ack was answered).
    next_ack: AtomicU32,
    /// Versions of the application's writes of this socket's state to a shared store.
    record_version: AtomicU64,
    /// What only some sockets ever need, made at first use (see [`Extras`]).
    extras: OnceBox<Mutex<Extras>>,
}

/// The parts of a socket most never use, in one block (lock included) made when the first is needed: an idle
/// socket keeps a pointer for them.
#[derive(Default)]
struct Extras {
    /// Emits waiting for the client's ack, by ack id.
    acks: HashMap<u64, AckWaiter>,
    /// Client publish buckets of the room policies that limit them, by policy index (a few at most).
    publish_rates: Vec<(usize, crate::rate::Bucket)>,
}

/// Who gets the client's answer to an emit with an ack id.
enum AckWaiter {
    /// A future awaiting it.
    Channel(oneshot::Sender<AckReply>),
    /// A callback run on the connection's task when it arrives.
    Callback(Box<dyn FnOnce(AckReply) + Send>),
}

impl AckWaiter {
    fn answer(self, reply: AckReply) {
        match self {
            AckWaiter::Channel(tx) => {
                let _ = tx.send(reply);
            }
            AckWaiter::Callback(callback) => callback(reply),
        }
    }
}

impl Socket {
    /// A new socket. `id` is reused when a session is recovered; `pid` is the private id that lets the client
    /// recover it later (None when recovery is off for the namespace).
    pub fn new(
        session: Arc<Session>,
        nsp: &str,
        id: Option<Sid>,
        pid: Option<Sid>,
        user: Option<Arc<VerifiedClaims>>,
    ) -> Arc<Socket> {
        Arc::new(Socket {
            id: id.unwrap_or_else(Sid::random),
            nsp: nsp.into(),
            session,
            user: Mutex::new(user),
            pid,
            rooms: Mutex::new(thin_vec::ThinVec::new()),
            connected: AtomicBool::new(true),
            counted: AtomicBool::new(false),
            superseded: AtomicBool::new(false),
            next_ack: AtomicU32::new(0),
            record_version: AtomicU64::new(0),
            extras: OnceBox::new(),
        })
    }

    /// The socket id (`socket.id` on the client).
    pub fn id(&self) -> Sid {
        self.id
    }

    /// The private session id used for connection state recovery.
    pub fn pid(&self) -> Option<Sid> {
        self.pid
    }

    /// The namespace.
    pub fn nsp(&self) -> &str {
        &self.nsp
    }

    /// The Engine.IO session carrying the socket.
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// The authenticated user, if the application has users.
    pub fn user(&self) -> Option<Arc<VerifiedClaims>> {
        self.user.lock().clone()
    }

    /// Replaces the user's claims (a refreshed token).
    pub fn set_user(&self, claims: Arc<VerifiedClaims>) {
        *self.user.lock() = Some(claims);
    }

    /// The next version for a write of this socket's state to a shared store (1, 2, …): writes that may
    /// land out of order carry it, so an older one never undoes a newer one.
    pub fn next_record_version(&self) -> u64 {
        self.record_version.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// False once the socket left its namespace or its session ended.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Marks the socket as replaced by another connection of the same session; true for the first caller.
    pub fn supersede(&self) -> bool {
        !self.superseded.swap(true, Ordering::AcqRel)
    }

    /// True once another connection took this socket's session over.
    pub fn is_superseded(&self) -> bool {
        self.superseded.load(Ordering::Acquire)
    }

    /// Marks the socket disconnected; true for the call that did it (the application hears of each socket
    /// leaving once, however it left).
    pub(crate) fn mark_disconnected(&self) -> bool {
        let was_connected = self.connected.swap(false, Ordering::AcqRel);
        if let Some(extras) = self.extras.get() {
            extras.lock().acks = HashMap::new();
        }
        if was_connected && self.counted.swap(false, Ordering::AcqRel) {
            metrics::gauge!("tidings_sockets", "namespace" => self.nsp.to_string()).decrement(1.0);
        }
        was_connected
    }

    /// Counts the socket in `tidings_sockets{namespace}` until it disconnects (once; while it is connected).
    pub(crate) fn count_connected(&self) {
        if self.is_connected() && !self.counted.swap(true, Ordering::AcqRel) {
            metrics::gauge!("tidings_sockets", "namespace" => self.nsp.to_string()).increment(1.0);
            // Disconnected meanwhile: undo, unless the disconnect already did.
            if !self.is_connected() && self.counted.swap(false, Ordering::AcqRel) {
                metrics::gauge!("tidings_sockets", "namespace" => self.nsp.to_string())
                    .decrement(1.0);
            }
        }
    }

    /// Disconnects the socket from the server side: queues a DISCONNECT for its namespace (the client emits
    /// `disconnect` with reason `io server disconnect` and does not reconnect by itself). True when the socket
    /// was still connected; the caller then does what the end of a socket needs.
    pub fn disconnect(&self) -> bool {
        if !self.mark_disconnected() {
            return false;
        }
        let mut out = BytesMut::new();
        encode_disconnect(&self.nsp, &mut out);
        let _ = self.send(Outgoing::Text(out.freeze()));
        true
    }

    /// Queues the CONNECT reply: `40{"sid":…}` plus `"pid"` when recovery is on.
    pub fn send_connect_reply(&self) -> Result<(), PushError> {
        let json = match self.pid {
            Some(pid) => format!(r#"{{"sid":"{}","pid":"{}"}}"#, self.id, pid),
            None => format!(r#"{{"sid":"{}"}}"#, self.id),
        };
        let mut out = BytesMut::new();
        encode_connect(&self.nsp, json.as_bytes(), &mut out);
        self.send(Outgoing::Text(out.freeze()))
    }

    /// Queues one prepared packet.
    pub fn send(&self, packet: Outgoing) -> Result<(), PushError> {
        self.session.outbox.push(packet)
    }

    /// Emits an event with raw JSON arguments.
    pub fn emit(&self, event: &str, args: &[&[u8]]) -> Result<(), PushError> {
        let mut out = BytesMut::new();
        encode_event(&self.nsp, None, event, args, &mut out);
        self.send(Outgoing::Text(out.freeze()))
    }

    /// Emits an event with binary attachments (arguments carry the placeholders).
    pub fn emit_binary(
        &self,
        event: &str,
        args: &[&[u8]],
        attachments: &[Bytes],
    ) -> Result<(), PushError> {
        let mut out = BytesMut::new();
        encode_binary_event(&self.nsp, None, event, args, attachments.len(), &mut out);
        self.send_group(out.freeze(), attachments)
    }

    /// Emits an event and returns a receiver for the client's ack.
    pub fn emit_with_ack(
        &self,
        event: &str,
        args: &[&[u8]],
    ) -> Result<oneshot::Receiver<AckReply>, PushError> {
        let (tx, rx) = oneshot::channel();
        self.emit_waiting(event, args, AckWaiter::Channel(tx))?;
        Ok(rx)
    }

    /// Emits an event asking for an ack; `on_ack` runs when the client answers (never, if the socket goes
    /// first or [`Socket::forget_ack`] drops it: it is then dropped unrun). Returns the ack id.
    pub fn emit_with_callback(
        &self,
        event: &str,
        args: &[&[u8]],
        on_ack: Box<dyn FnOnce(AckReply) + Send>,
    ) -> Result<u64, PushError> {
        self.emit_waiting(event, args, AckWaiter::Callback(on_ack))
    }

    /// Stops waiting for the ack `id` (the client acknowledged the same thing another way); a later ACK with
    /// that id is ignored.
    pub fn forget_ack(&self, id: u64) {
        if let Some(extras) = self.extras.get() {
            extras.lock().acks.remove(&id);
        }
    }

    /// Takes a token of the client publish bucket of room policy `index`; false when the socket is over the
    /// policy's rate.
    pub fn take_publish_token(&self, index: usize, per_sec: u32, burst: u32) -> bool {
        let mut extras = self.extras.get_or_init(Box::default).lock();
        let rates = &mut extras.publish_rates;
        let at = match rates.iter().position(|(i, _)| *i == index) {
            Some(at) => at,
            None => {
                rates.push((index, crate::rate::Bucket::default()));
                rates.len() - 1
            }
        };
        rates[at].1.take(per_sec, burst, std::time::Instant::now())
    }

    /// Acks this socket still waits for.
    pub fn pending_acks(&self) -> usize {
        self.extras
            .get()
            .map_or(0, |extras| extras.lock().acks.len())
    }

    fn emit_waiting(
        &self,
        event: &str,
        args: &[&[u8]],
        waiter: AckWaiter,
    ) -> Result<u64, PushError> {
        let id = u64::from(self.next_ack.fetch_add(1, Ordering::Relaxed));
        self.extras
            .get_or_init(Box::default)
            .lock()
            .acks
            .insert(id, waiter);
        let mut out = BytesMut::new();
        encode_event(&self.nsp, Some(id), event, args, &mut out);
        if let Err(error) = self.send(Outgoing::Text(out.freeze())) {
            self.forget_ack(id);
            return Err(error);
        }
        Ok(id)
    }

    /// Routes an ACK from the client to the emit waiting for it; unknown ids are ignored.
    pub(crate) fn resolve_ack(&self, id: u64, data: Bytes, attachments: Vec<Bytes>) {
        let waiter = self
            .extras
            .get()
            .and_then(|extras| extras.lock().acks.remove(&id));
        if let Some(waiter) = waiter {
            waiter.answer(AckReply { data, attachments });
        }
    }

    /// Answers a client's ack request with raw JSON arguments.
    pub fn ack(&self, id: u64, args: &[&[u8]]) -> Result<(), PushError> {
        let mut out = BytesMut::new();
        encode_ack(&self.nsp, id, args, &mut out);
        self.send(Outgoing::Text(out.freeze()))
    }

    /// Answers a client's ack request with binary attachments.
    pub fn ack_binary(
        &self,
        id: u64,
        args: &[&[u8]],
        attachments: &[Bytes],
    ) -> Result<(), PushError> {
        let mut out = BytesMut::new();
        encode_binary_ack(&self.nsp, id, args, attachments.len(), &mut out);
        self.send_group(out.freeze(), attachments)
    }

    fn send_group(&self, head: Bytes, attachments: &[Bytes]) -> Result<(), PushError> {
        let mut group = Vec::with_capacity(1 + attachments.len());
        group.push(Outgoing::Text(head));
        group.extend(attachments.iter().cloned().map(Outgoing::Binary));
        self.session.outbox.push_event(0, &group).map(|_| ())
    }
}
