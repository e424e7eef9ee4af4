//! One Engine.IO session seen from Socket.IO: its sockets per namespace and binary packet reassembly.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use thin_vec::ThinVec;

use super::packet::{check_placeholders, encode_connect_error, event_args, Packet, PacketKind};
use super::{Application, ClientEvent, ConnectRequest, Connecting, Socket};
use crate::engineio::{CloseReason, Message, Outgoing, Session, SessionHandler};

/// Packets (with their attachments) received for a namespace whose CONNECT is being decided.
type HeldPackets = Vec<(Packet, Vec<Bytes>)>;

/// Most packets held for a namespace whose CONNECT is still being decided.
const MAX_HELD_PACKETS: usize = 64;

/// A binary event or ack waiting for its attachments.
struct PartialPacket {
    packet: Packet,
    attachments: Vec<Bytes>,
    /// Bytes of the attachments received so far.
    bytes: usize,
}

/// Bounds on what one session may make the server hold for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// Time the client has to connect a namespace before the session is closed.
    pub connect_timeout: Duration,
    /// Most bytes the attachments of one binary packet may hold in total (and the packets held for a
    /// namespace whose CONNECT is being decided); more closes the session.
    pub max_attachment_bytes: usize,
}

/// A copy of `bytes` in an allocation of its own: what a session keeps beyond the call that received it must
/// not hold on to the (possibly much larger) buffer the frame was read into.
fn detach(bytes: &Bytes) -> Bytes {
    Bytes::copy_from_slice(bytes)
}

/// A packet whose slices are copied out of the received message.
fn detached(packet: Packet) -> Packet {
    Packet {
        nsp: detach(&packet.nsp),
        data: packet.data.as_ref().map(detach),
        ..packet
    }
}

fn held_size(packet: &Packet, attachments: &[Bytes]) -> usize {
    packet.nsp.len()
        + packet.data.as_ref().map_or(0, Bytes::len)
        + attachments.iter().map(Bytes::len).sum::<usize>()
}

/// What every client of one Socket.IO endpoint shares: one pointer in each client.
pub struct Endpoint {
    /// The application the clients' packets go to.
    pub app: Arc<dyn Application>,
    /// The bounds every client is held to.
    pub limits: ClientLimits,
}

/// The Socket.IO side of one Engine.IO session.
pub struct Client {
    endpoint: Arc<Endpoint>,
    query_token: Option<Box<str>>,
    /// A thin list: one namespace is the common case, and an empty list is one pointer.
    sockets: Mutex<ThinVec<Arc<Socket>>>,
    /// Boxed: only a binary packet waiting for its attachments has one, and every session holds a client.
    partial: Mutex<Option<Box<PartialPacket>>>,
    ever_connected: AtomicBool,
    /// Set (under the `sockets` lock) when the session ended.
    closed: AtomicBool,
    /// Bytes of the packets in `connecting`; a packet that would take it past `max_attachment_bytes` closes
    /// the session instead (saturates at `u32::MAX` for a bound set above 4 GiB).
    held_bytes: AtomicU32,
    /// The connect timer's task, ended once a namespace connects: an idle connection keeps no task for it.
    connect_timer: Mutex<Option<tokio::task::AbortHandle>>,
    /// Namespaces whose CONNECT is being decided, with the packets received for them meanwhile.
    /// A thin list: one pointer while empty, as it is once the client is connected.
    connecting: Mutex<ThinVec<(String, HeldPackets)>>,
    /// The client itself, for tasks it starts (set when it is made).
    self_ref: std::sync::Weak<Client>,
}

impl Client {
    /// A client with no namespace connected yet.
    pub fn new(endpoint: Arc<Endpoint>, query_token: Option<&str>) -> Arc<Client> {
        Arc::new_cyclic(|self_ref| Client {
            endpoint,
            query_token: query_token.map(Into::into),
            sockets: Mutex::new(ThinVec::new()),
            partial: Mutex::new(None),
            ever_connected: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            held_bytes: AtomicU32::new(0),
            connect_timer: Mutex::new(None),
            connecting: Mutex::new(ThinVec::new()),
            self_ref: self_ref.clone(),
        })
    }

    /// Closes the session if no namespace gets connected in time.
    pub fn start_connect_timer(self: &Arc<Self>, session: &Arc<Session>) {
        let timeout = self.endpoint.limits.connect_timeout;
        let client = Arc::downgrade(self);
        let session = Arc::downgrade(session);
        let task = tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            let (Some(client), Some(session)) = (client.upgrade(), session.upgrade()) else {
                return;
            };
            if !client.ever_connected.load(Ordering::Acquire) {
                session.outbox.close(CloseReason::ServerClose(
                    "no Socket.IO connect in time".into(),
                ));
            }
        });
        *self.connect_timer.lock() = Some(task.abort_handle());
        if self.ever_connected.load(Ordering::Acquire) {
            self.stop_connect_timer();
        }
    }

    /// Notes that a namespace connected and frees the connect timer's task.
    fn mark_connected(&self) {
        self.ever_connected.store(true, Ordering::Release);
        self.stop_connect_timer();
    }

    fn stop_connect_timer(&self) {
        if let Some(timer) = self.connect_timer.lock().take() {
            timer.abort();
        }
    }

    /// The connected socket of `nsp`; one the server disconnected meanwhile is dropped from the list.
    fn socket(&self, nsp: &str) -> Option<Arc<Socket>> {
        let mut sockets = self.sockets.lock();
        sockets.retain(|s| s.is_connected());
        sockets.iter().find(|s| s.nsp() == nsp).cloned()
    }

    fn on_text(&self, session: &Arc<Session>, text: Bytes) -> Result<(), CloseReason> {
        if self.partial.lock().is_some() {
            return Err(protocol(
                "text packet while binary attachments were expected",
            ));
        }
        let packet = Packet::decode(text).map_err(|e| protocol(&e.to_string()))?;
        if packet.kind.carries_event_data() {
            // Checked before any attachment is taken: a packet no stock client could parse is never relayed.
            let data = packet.data.as_deref().unwrap_or_default();
            check_placeholders(data, packet.attachments).map_err(|e| protocol(&e.to_string()))?;
        }
        if matches!(packet.kind, PacketKind::BinaryEvent | PacketKind::BinaryAck)
            && packet.attachments > 0
        {
            if !self.may_send_on(packet.nsp_str()) {
                metrics::counter!("tidings_attachments_refused_total", "reason" => "not_connected")
                    .increment(1);
                return Err(protocol(
                    "binary packet for a namespace that is not connected",
                ));
            }
            *self.partial.lock() = Some(Box::new(PartialPacket {
                attachments: Vec::with_capacity(packet.attachments),
                packet: detached(packet),
                bytes: 0,
            }));
            return Ok(());
        }
        self.dispatch(session, packet, Vec::new())
    }

    /// True when `nsp` is connected, or its CONNECT was authorised and is being completed.
    fn may_send_on(&self, nsp: &str) -> bool {
        let connecting = self.connecting.lock();
        self.socket(nsp).is_some() || connecting.iter().any(|(n, _)| n == nsp)
    }

    fn on_binary(&self, session: &Arc<Session>, data: Bytes) -> Result<(), CloseReason> {
        let complete = {
            let mut partial = self.partial.lock();
            let Some(pending) = partial.as_mut() else {
                return Err(protocol("unexpected binary attachment"));
            };
            pending.bytes = pending.bytes.saturating_add(data.len());
            if pending.bytes > self.endpoint.limits.max_attachment_bytes {
                metrics::counter!("tidings_attachments_refused_total", "reason" => "too_large")
                    .increment(1);
                return Err(CloseReason::PayloadTooLarge);
            }
            pending.attachments.push(detach(&data));
            if pending.attachments.len() < pending.packet.attachments {
                return Ok(());
            }
            partial.take()
        };
        match complete.map(|boxed| *boxed) {
            Some(PartialPacket {
                packet,
                attachments,
                ..
            }) => self.dispatch(session, packet, attachments),
            None => Ok(()),
        }
    }

    fn dispatch(
        &self,
        session: &Arc<Session>,
        packet: Packet,
        attachments: Vec<Bytes>,
    ) -> Result<(), CloseReason> {
        match packet.kind {
            PacketKind::Connect => {
                self.connect(session, &packet);
                Ok(())
            }
            PacketKind::Disconnect => {
                let nsp = packet.nsp_str().to_owned();
                let removed = {
                    let mut sockets = self.sockets.lock();
                    let index = sockets.iter().position(|s| s.nsp() == nsp);
                    index.map(|i| sockets.swap_remove(i))
                };
                if let Some(socket) = removed.filter(|s| s.mark_disconnected()) {
                    self.endpoint.app.on_disconnect(&socket, false);
                }
                Ok(())
            }
            PacketKind::Event | PacketKind::BinaryEvent => {
                let Some((socket, packet, attachments)) =
                    self.socket_or_hold(packet, attachments)?
                else {
                    return Ok(());
                };
                let data = packet
                    .data
                    .as_ref()
                    .ok_or_else(|| protocol("event without payload"))?;
                let (name, args) = event_args(data).map_err(|e| protocol(&e.to_string()))?;
                let event = ClientEvent {
                    name,
                    args,
                    attachments,
                    ack: packet.id,
                };
                self.endpoint.app.on_event(&socket, event);
                Ok(())
            }
            PacketKind::Ack | PacketKind::BinaryAck => {
                let Some((socket, packet, attachments)) =
                    self.socket_or_hold(packet, attachments)?
                else {
                    return Ok(());
                };
                if let Some(id) = packet.id {
                    socket.resolve_ack(id, packet.data.clone().unwrap_or_default(), attachments);
                }
                Ok(())
            }
            PacketKind::ConnectError => Err(protocol("CONNECT_ERROR is sent by servers only")),
        }
    }

    /// The socket a packet is for; while that namespace's CONNECT is still being decided, the packet is held
    /// and handed over once the socket exists (a client may send right after the CONNECT reply).
    #[allow(clippy::type_complexity)]
    fn socket_or_hold(
        &self,
        packet: Packet,
        attachments: Vec<Bytes>,
    ) -> Result<Option<(Arc<Socket>, Packet, Vec<Bytes>)>, CloseReason> {
        let mut connecting = self.connecting.lock();
        if let Some(socket) = self.socket(packet.nsp_str()) {
            return Ok(Some((socket, packet, attachments)));
        }
        if let Some((_, held)) = connecting
            .iter_mut()
            .find(|(nsp, _)| nsp.as_str() == packet.nsp_str())
        {
            // Read and written under the `connecting` lock.
            let total = u64::from(self.held_bytes.load(Ordering::Acquire))
                + held_size(&packet, &attachments) as u64;
            if held.len() >= MAX_HELD_PACKETS
                || total > self.endpoint.limits.max_attachment_bytes as u64
            {
                return Err(CloseReason::Flood);
            }
            self.held_bytes
                .store(u32::try_from(total).unwrap_or(u32::MAX), Ordering::Release);
            let attachments = attachments.iter().map(detach).collect();
            held.push((detached(packet), attachments));
        }
        // Not connected and not connecting: the reference server ignores such packets too.
        Ok(None)
    }

    fn connect(&self, session: &Arc<Session>, packet: &Packet) {
        let nsp = packet.nsp_str();
        if self.socket(nsp).is_some() {
            tracing::debug!(sid = %session.sid(), nsp, "duplicate CONNECT ignored");
            return;
        }
        let request = ConnectRequest {
            nsp,
            auth: packet.data.as_ref(),
            query_token: self.query_token.as_deref(),
            session,
        };
        match self.endpoint.app.connect(request) {
            Connecting::Ready(outcome) => self.connected(session, nsp, outcome),
            Connecting::Pending(pending) => {
                // Counts as connected for the connect timer: the decision is under way.
                self.mark_connected();
                self.connecting.lock().push((nsp.to_owned(), Vec::new()));
                let client = self.self_ref.upgrade();
                let session = session.clone();
                let nsp = nsp.to_owned();
                tokio::spawn(async move {
                    let outcome = pending.await;
                    if let Some(client) = client {
                        client.connected(&session, &nsp, outcome);
                    }
                });
            }
        }
    }

    /// Records the outcome of a CONNECT.
    fn connected(&self, session: &Arc<Session>, nsp: &str, outcome: Result<Arc<Socket>, String>) {
        let held = {
            let mut connecting = self.connecting.lock();
            let index = connecting.iter().position(|(n, _)| n == nsp);
            let held = index
                .map(|i| connecting.swap_remove(i).1)
                .unwrap_or_default();
            if connecting.is_empty() {
                self.held_bytes.store(0, Ordering::Release);
            }
            if let Ok(socket) = &outcome {
                // Registered before the connecting entry is released, so no packet slips between the two.
                let mut sockets = self.sockets.lock();
                if !self.closed.load(Ordering::Acquire) {
                    self.mark_connected();
                    socket.count_connected();
                    if sockets.is_empty() {
                        // A list of one (24 bytes) rather than the default first growth to four (48).
                        sockets.reserve_exact(1);
                    }
                    sockets.push(socket.clone());
                    drop(sockets);
                    drop(connecting);
                    for (packet, attachments) in held {
                        if let Err(reason) = self.dispatch(session, packet, attachments) {
                            session.outbox.close(reason);
                            break;
                        }
                    }
                    return;
                }
            }
            held
        };
        drop(held);
        match outcome {
            Ok(socket) => {
                self.mark_connected();
                // The session ended while the connect was decided: undo it.
                if socket.mark_disconnected() {
                    self.endpoint.app.on_disconnect(&socket, true);
                }
            }
            Err(message) => {
                metrics::counter!("tidings_connect_errors_total").increment(1);
                let mut out = BytesMut::new();
                encode_connect_error(nsp, &message, &mut out);
                let _ = session.outbox.push(Outgoing::Text(out.freeze()));
            }
        }
    }
}

fn protocol(detail: &str) -> CloseReason {
    CloseReason::ProtocolError(detail.to_owned())
}

impl SessionHandler for Client {
    fn opened(&self, session: &Arc<Session>) {
        if let Some(client) = self.self_ref.upgrade() {
            client.start_connect_timer(session);
        }
    }

    fn on_message(&self, session: &Arc<Session>, message: Message) -> Result<(), CloseReason> {
        match message {
            Message::Text(text) => self.on_text(session, text),
            Message::Binary(data) => self.on_binary(session, data),
        }
    }

    fn on_close(&self, _session: &Arc<Session>, _reason: &CloseReason) {
        // Dropping the sockets here also breaks the session → client → socket → session cycle.
        let sockets = {
            let mut sockets = self.sockets.lock();
            self.closed.store(true, Ordering::Release);
            std::mem::take(&mut *sockets)
        };
        for socket in sockets.into_iter().filter(|s| s.mark_disconnected()) {
            self.endpoint.app.on_disconnect(&socket, true);
        }
        self.partial.lock().take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::EchoApp;
    use crate::engineio::session::TransportKind;
    use crate::engineio::OutboxLimits;

    const TEST_LIMITS: ClientLimits = ClientLimits {
        connect_timeout: std::time::Duration::from_millis(100),
        max_attachment_bytes: 1000,
    };

    fn setup() -> (Arc<Session>, Arc<Client>) {
        let session = Session::new(
            TransportKind::WebSocket,
            OutboxLimits {
                max_messages: 64,
                max_bytes: 1 << 20,
            },
            100,
        );
        let endpoint = Endpoint {
            app: Arc::new(EchoApp),
            limits: TEST_LIMITS,
        };
        let client = Client::new(Arc::new(endpoint), None);
        (session, client)
    }

    fn sent(session: &Session) -> Vec<Outgoing> {
        let mut out = Vec::new();
        session.outbox.drain(&mut out, usize::MAX);
        out
    }

    fn text(s: &'static str) -> Message {
        Message::Text(Bytes::from_static(s.as_bytes()))
    }

    #[tokio::test]
    async fn server_emit_with_ack_resolves_on_client_ack() {
        let (session, client) = setup();
        client.on_message(&session, text("0")).unwrap();
        sent(&session);
        let socket = client.socket("/").unwrap();
        let reply = socket.emit_with_ack("question", &[b"1"]).unwrap();
        let out = sent(&session);
        assert_eq!(
            out,
            vec![Outgoing::Text(Bytes::from_static(b"420[\"question\",1]"))]
        );
        client.on_message(&session, text("30[\"answer\"]")).unwrap();
        let reply = reply.await.unwrap();
        assert_eq!(&reply.data[..], b"[\"answer\"]");
    }

    #[tokio::test]
    async fn binary_event_is_reassembled_and_echoed() {
        let (session, client) = setup();
        client.on_message(&session, text("0")).unwrap();
        sent(&session);
        client
            .on_message(
                &session,
                text("51-[\"message\",{\"_placeholder\":true,\"num\":0}]"),
            )
            .unwrap();
        assert!(sent(&session).is_empty());
        client
            .on_message(&session, Message::Binary(Bytes::from_static(&[1, 2, 3])))
            .unwrap();
        let out = sent(&session);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1], Outgoing::Binary(Bytes::from_static(&[1, 2, 3])));
    }

    #[tokio::test]
    async fn held_attachments_do_not_pin_the_read_buffer() {
        let (session, client) = setup();
        client.on_message(&session, text("0")).unwrap();
        client
            .on_message(
                &session,
                text("52-[\"e\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]"),
            )
            .unwrap();
        // The attachment arrives as a small slice of a large read buffer.
        let buffer = Bytes::from(vec![5u8; 64 * 1024]);
        client
            .on_message(&session, Message::Binary(buffer.slice(10..20)))
            .unwrap();
        let held = client.partial.lock().as_ref().unwrap().attachments[0].clone();
        let range = buffer.as_ptr() as usize..buffer.as_ptr() as usize + buffer.len();
        assert!(!range.contains(&(held.as_ptr() as usize)), "copied out");
        assert_eq!(&held[..], &[5u8; 10]);
        // Past the budget (1000 bytes in these tests) the session is closed.
        let too_much = Message::Binary(Bytes::from(vec![0u8; 1000]));
        assert_eq!(
            client.on_message(&session, too_much),
            Err(CloseReason::PayloadTooLarge)
        );
    }

    #[test]
    fn unexpected_attachment_and_bad_packets_close() {
        let (session, client) = setup();
        assert!(client
            .on_message(&session, Message::Binary(Bytes::from_static(&[9])))
            .is_err());
        for bad in ["abc", "2{}", "2abc[1]", "4{}", "2"] {
            assert!(
                client.on_message(&session, text(bad)).is_err(),
                "{bad} must close"
            );
        }
    }

    #[test]
    fn a_client_fits_a_128_byte_block_with_its_reference_counts() {
        // Every session holds one; the next allocator size class up is 160 bytes.
        assert!(std::mem::size_of::<Client>() + 16 <= 128);
    }

    #[tokio::test(start_paused = true)]
    async fn connect_timer_closes_only_sessions_that_never_connected() {
        let (idle_session, idle) = setup();
        idle.start_connect_timer(&idle_session);
        let (session, client) = setup();
        client.start_connect_timer(&session);
        client.on_message(&session, text("0")).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(idle_session.outbox.closing().is_some());
        assert_eq!(session.outbox.closing(), None);
    }

    #[test]
    fn unknown_namespace_gets_connect_error() {
        let (session, client) = setup();
        client.on_message(&session, text("0/random,")).unwrap();
        assert_eq!(
            sent(&session),
            vec![Outgoing::Text(Bytes::from_static(
                b"44/random,{\"message\":\"Invalid namespace\"}"
            ))]
        );
    }
}
