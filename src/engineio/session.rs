//! One Engine.IO session: its id, outbox, transport state, heartbeat signals and incoming rate limit.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use base64::Engine as _;
use parking_lot::Mutex;
use rand::RngCore;

use super::address_limits::AddressSlot;
use super::outbox::{Outbox, OutboxLimits};
use super::SessionHandler;

/// A 20-character random session id: 15 random bytes, written in base64url. Kept as the bytes (every
/// connection holds several ids, in its socket and in the room and session tables) and written out when asked.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sid([u8; SID_BYTES]);

/// Bytes of a session id.
const SID_BYTES: usize = 15;

/// Characters of a session id as text.
pub const SID_LEN: usize = 20;

impl Sid {
    /// A fresh random id.
    pub fn random() -> Sid {
        let mut raw = [0u8; SID_BYTES];
        rand::thread_rng().fill_bytes(&mut raw);
        Sid(raw)
    }

    /// A fresh random id whose first [`NODE_TAG_LEN`] characters name the node that owns the session, so any
    /// node of a cluster can route a request for it.
    pub fn random_tagged(tag: &NodeTag) -> Sid {
        let mut text = Sid::random().text();
        text.0[..NODE_TAG_LEN].copy_from_slice(&tag.0);
        Sid::parse(&text).unwrap_or_else(Sid::random)
    }

    /// The node tag at the start of the id.
    pub fn node_tag(&self) -> NodeTag {
        let mut tag = [0u8; NODE_TAG_LEN];
        tag.copy_from_slice(&self.text().0[..NODE_TAG_LEN]);
        NodeTag(tag)
    }

    /// Parses an id received from a client.
    pub fn parse(text: &str) -> Option<Sid> {
        if text.len() != SID_LEN || !is_base64url(text.as_bytes()) {
            return None;
        }
        let mut raw = [0u8; SID_BYTES];
        let read = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode_slice(text, &mut raw)
            .ok()?;
        (read == SID_BYTES).then_some(Sid(raw))
    }

    /// The id's bytes (not its text).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The id as text.
    pub fn text(&self) -> SidText {
        let mut out = [0u8; SID_LEN];
        let written = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode_slice(self.0, &mut out)
            .unwrap_or(0);
        debug_assert_eq!(written, SID_LEN);
        SidText(out)
    }
}

/// A session id as text (see [`Sid::text`]); derefs to `str`.
#[derive(Clone, Copy)]
pub struct SidText([u8; SID_LEN]);

impl std::ops::Deref for SidText {
    type Target = str;

    fn deref(&self) -> &str {
        // Only base64url characters are ever written.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl std::fmt::Debug for Sid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text())
    }
}

impl std::fmt::Display for Sid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text())
    }
}

/// True when every byte is a base64url character (the alphabet of session ids and node tags).
fn is_base64url(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
}

/// Length of a node tag.
pub const NODE_TAG_LEN: usize = 6;

/// Short random name of a node, carried at the start of its Engine.IO session ids.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeTag([u8; NODE_TAG_LEN]);

impl NodeTag {
    /// A fresh random tag.
    pub fn random() -> NodeTag {
        Sid::random().node_tag()
    }

    /// Parses a tag (base64url characters only).
    pub fn parse(text: &str) -> Option<NodeTag> {
        let bytes: [u8; NODE_TAG_LEN] = text.as_bytes().try_into().ok()?;
        is_base64url(&bytes).then_some(NodeTag(bytes))
    }

    /// The tag as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl std::fmt::Debug for NodeTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for NodeTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Process-wide reference instant for deadlines kept in atomics (tokio's clock, so tests that pause time
/// see the heartbeat follow it).
fn clock_base() -> tokio::time::Instant {
    static BASE: OnceLock<tokio::time::Instant> = OnceLock::new();
    *BASE.get_or_init(tokio::time::Instant::now)
}

/// Milliseconds from [`clock_base`] to now, at least 1 (0 means "never" where it is stored).
pub(crate) fn clock_ms() -> u64 {
    let base = clock_base();
    (tokio::time::Instant::now()
        .saturating_duration_since(base)
        .as_millis() as u64)
        .max(1)
}

/// The instant `ms` milliseconds after [`clock_base`] (a year on when that is out of range).
pub(crate) fn instant_of_ms(ms: u64) -> tokio::time::Instant {
    let base = clock_base();
    base.checked_add(std::time::Duration::from_millis(ms))
        .unwrap_or_else(|| {
            tokio::time::Instant::now() + std::time::Duration::from_secs(365 * 86_400)
        })
}

/// Which transport currently carries a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TransportKind {
    /// HTTP long-polling.
    Polling = 0,
    /// A websocket probe succeeded; polling is being wound down.
    Upgrading = 1,
    /// Websocket.
    WebSocket = 2,
}

/// One Engine.IO session.
pub struct Session {
    sid: Sid,
    /// Packets waiting to be written by the current transport.
    pub outbox: Outbox,
    transport: AtomicU8,
    /// The session's [`Flag`]s, one bit each.
    flags: AtomicU8,
    /// Serialises POST bodies of one session so packets are handled in order (held while they are applied,
    /// which never waits: a one-byte lock rather than an async one).
    pub(crate) post_lock: Mutex<()>,
    /// When the current ping interval started, in ms since [`clock_base`]: the handshake, then each pong
    /// that answered a ping (the endpoint's heartbeat task reads it when it looks at the session).
    beat_from_ms: AtomicU64,
    /// When the pong of the last ping is due, in ms since [`clock_base`]; 0 when none is awaited.
    pong_due_ms: AtomicU64,
    /// The layer above, given when the session is made (none for a bare session in tests and tools).
    handler: Option<Arc<dyn SessionHandler>>,
    /// Token bucket limiting incoming messages.
    rate: Mutex<crate::rate::Bucket>,
    /// The session's place in its client address's count, given back when the session leaves the table.
    /// Given back by the engine with [`Session::take_address`] (see [`AddressSlot::into_key`]).
    address: Mutex<Option<std::net::IpAddr>>,
}

/// One of a session's yes/no states, kept together in one byte of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Flag {
    /// Set while a polling GET is outstanding.
    PollActive = 1,
    /// Set once a websocket claimed the upgrade of this session; a second one is turned away.
    UpgradeClaimed = 2,
    /// Closed by the client's close packet on polling, with no GET told yet: the next GET gets a noop.
    ClosedByClient = 4,
    /// The session was closed.
    Closed = 8,
}

impl Session {
    /// A new session on the given transport.
    pub fn new(transport: TransportKind, limits: OutboxLimits, burst: u32) -> Arc<Session> {
        Session::with_sid(Sid::random(), transport, limits, burst)
    }

    /// A new session with a given id.
    pub fn with_sid(
        sid: Sid,
        transport: TransportKind,
        limits: OutboxLimits,
        burst: u32,
    ) -> Arc<Session> {
        Session::with_handler(sid, transport, limits, burst, None)
    }

    /// A new session with a given id whose messages and end go to `handler`.
    pub(crate) fn with_handler(
        sid: Sid,
        transport: TransportKind,
        limits: OutboxLimits,
        burst: u32,
        handler: Option<Arc<dyn SessionHandler>>,
    ) -> Arc<Session> {
        Arc::new(Session {
            sid,
            outbox: Outbox::new(limits),
            transport: AtomicU8::new(transport as u8),
            flags: AtomicU8::new(0),
            post_lock: Mutex::new(()),
            beat_from_ms: AtomicU64::new(clock_ms()),
            pong_due_ms: AtomicU64::new(0),
            handler,
            rate: Mutex::new(crate::rate::Bucket::with_tokens(burst)),
            address: Mutex::new(None),
        })
    }

    /// The session id.
    pub fn sid(&self) -> Sid {
        self.sid
    }

    /// The transport carrying the session now.
    pub fn transport(&self) -> TransportKind {
        match self.transport.load(Ordering::Acquire) {
            0 => TransportKind::Polling,
            1 => TransportKind::Upgrading,
            _ => TransportKind::WebSocket,
        }
    }

    /// Moves the session to another transport and wakes whoever waits on the outbox.
    pub(crate) fn set_transport(&self, kind: TransportKind) {
        self.transport.store(kind as u8, Ordering::Release);
        self.outbox.wake();
    }

    /// Whether `flag` is set.
    pub(crate) fn flag(&self, flag: Flag) -> bool {
        self.flags.load(Ordering::Acquire) & flag as u8 != 0
    }

    /// Sets (`on`) or clears `flag`; whether it was set before.
    pub(crate) fn swap_flag(&self, flag: Flag, on: bool) -> bool {
        let bit = flag as u8;
        let before = if on {
            self.flags.fetch_or(bit, Ordering::AcqRel)
        } else {
            self.flags.fetch_and(!bit, Ordering::AcqRel)
        };
        before & bit != 0
    }

    /// True once the session was closed.
    pub fn is_closed(&self) -> bool {
        self.flag(Flag::Closed)
    }

    /// Marks the session closed; true for the first caller only.
    pub(crate) fn mark_closed(&self) -> bool {
        !self.swap_flag(Flag::Closed, true)
    }

    /// Records a pong from the client: when it answers a ping, the next interval starts now (a pong nobody
    /// asked for changes nothing).
    pub(crate) fn on_pong(&self) {
        if self.pong_due_ms.load(Ordering::Acquire) != 0 {
            // The new start first: whoever sees no pong awaited also sees when the interval started.
            self.beat_from_ms.store(clock_ms(), Ordering::Release);
            self.pong_due_ms.store(0, Ordering::Release);
        }
    }

    /// The heartbeat's state: when the current interval started and when the awaited pong is due (0 when
    /// none is), both in ms of the session clock.
    pub(crate) fn beat_state(&self) -> (u64, u64) {
        let due = self.pong_due_ms.load(Ordering::Acquire);
        (self.beat_from_ms.load(Ordering::Acquire), due)
    }

    /// Notes that a ping goes out whose pong is due at `due_ms`.
    pub(crate) fn expect_pong_by(&self, due_ms: u64) {
        self.pong_due_ms.store(due_ms.max(1), Ordering::Release);
    }

    /// True when a pong is overdue: the session is dead even if the heartbeat has not looked at it yet.
    pub(crate) fn pong_overdue(&self) -> bool {
        let due = self.pong_due_ms.load(Ordering::Acquire);
        due != 0 && clock_ms() >= due
    }

    /// The handler of the layer above.
    pub(crate) fn handler(&self) -> Option<&Arc<dyn SessionHandler>> {
        self.handler.as_ref()
    }

    /// Holds `slot` until the engine takes it back with [`Session::take_address`].
    pub(crate) fn hold_address(&self, slot: Option<AddressSlot>) {
        *self.address.lock() = slot.map(AddressSlot::into_key);
    }

    /// The session's place in its address's count, for the engine to give back (once).
    pub(crate) fn take_address(&self) -> Option<std::net::IpAddr> {
        self.address.lock().take()
    }

    /// Takes one token for an incoming message; false when the client is flooding.
    pub(crate) fn admit_message(&self, per_sec: u32) -> bool {
        per_sec == 0
            || self
                .rate
                .lock()
                .take(per_sec, per_sec.saturating_mul(2), Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sid_round_trips() {
        let sid = Sid::random();
        assert_eq!(sid.text().len(), 20);
        assert_eq!(Sid::parse(&sid.text()), Some(sid));
        // Every 20-character base64url text is an id, kept as 15 bytes and written back the same.
        for text in [
            "AZaz09-_AZaz09-_AZaz",
            "____________________",
            "AAAAAAAAAAAAAAAAAAAA",
        ] {
            assert_eq!(&*Sid::parse(text).unwrap().text(), text);
        }
        assert_eq!(std::mem::size_of::<Sid>(), 15);
        assert_eq!(Sid::parse("short"), None);
        assert_eq!(Sid::parse("aaaaaaaaaaaaaaaaaaa!"), None);
    }

    #[test]
    fn tagged_sids_name_their_node() {
        let tag = NodeTag::random();
        let sid = Sid::random_tagged(&tag);
        assert_eq!(sid.node_tag(), tag);
        assert!(sid.text().starts_with(tag.as_str()));
        assert_eq!(NodeTag::parse(tag.as_str()), Some(tag));
        assert_eq!(NodeTag::parse("bad!!!"), None);
    }

    #[test]
    fn rate_limit_allows_burst_then_refuses() {
        let limits = OutboxLimits {
            max_messages: 10,
            max_bytes: 100,
        };
        let session = Session::new(TransportKind::WebSocket, limits, 10);
        let admitted = (0..30).filter(|_| session.admit_message(5)).count();
        assert_eq!(admitted, 10);
    }
}
