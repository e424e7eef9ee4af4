//! WebSocket transport: the HTTP upgrade, the polling→websocket probe, and the one task that drives a
//! websocket session (reads frames, drains the outbox with vectored writes, runs the heartbeat).
//!
//! An idle connection holds no read buffer: bytes are read into a stack array and only a partial frame is
//! kept on the heap until it completes.
//!
//! The same task also serves raw websocket endpoints ([`Framing::Raw`], conformance mode): each text or
//! binary message goes to the session handler as is, with no Engine.IO packet inside and no heartbeat.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::body::Body;
use bytes::BytesMut;
use http::{header, HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::address_limits::AddressSlot;
use super::handshake::EngineError;
use super::packet::Packet;
use super::session::{Flag, Session, Sid, TransportKind};
use super::write_cadence::now_ms;
use super::write_pacer::WritePacer;
use super::ws_frame::{
    accept_key, close_frame, encode_frame, pong_frame, FrameDecoder, OpCode, WsMessage,
};
use super::ws_writer::{batch_buffer, FrameWriter};
use super::{CloseReason, Engine, Message, OpenRequest, Outgoing, Signal};

/// Bytes drained from the outbox per write round.
const BYTES_PER_ROUND: usize = 256 * 1024;
/// Rounds per pump, so one busy socket cannot hog its worker.
const ROUNDS_PER_PUMP: usize = 4;
/// Time a client has to finish the probe and upgrade once its websocket is open.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time given to flush the last packets and the close frame of a closing session.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Most bytes read and dropped after our close frame while waiting for the client to close its side.
const CLOSE_DRAIN_BYTES: usize = 1 << 20;

/// What the messages of a websocket connection carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// One Engine.IO packet per message; the session has a heartbeat.
    EngineIo,
    /// Application messages as they are (no packet type, no open packet, no heartbeat).
    Raw,
}

/// Answers a websocket upgrade request for a raw endpoint: a new session whose text and binary messages go
/// to the engine's handler unchanged. It counts against the per-address limits like any new session.
pub fn upgrade_raw(
    engine: Arc<Engine>,
    req: Request<Body>,
    open: OpenRequest,
) -> Result<Response<Body>, EngineError> {
    let slot = engine.admit_address(open.remote)?;
    accept(engine, req, None, open, slot, Framing::Raw)
}

/// Answers an Engine.IO websocket upgrade request and starts the connection task once the upgrade completes.
/// A new session (no `sid`) gets `slot`, its place in its address's count.
pub fn upgrade(
    engine: Arc<Engine>,
    req: Request<Body>,
    sid: Option<Sid>,
    open: OpenRequest,
    slot: Option<AddressSlot>,
) -> Result<Response<Body>, EngineError> {
    let existing = match sid {
        Some(sid) => Some(engine.find(&sid).ok_or(EngineError::UnknownSid)?),
        None => None,
    };
    accept(engine, req, existing, open, slot, Framing::EngineIo)
}

/// Accepts the upgrade; the connection serves a new session, or takes `existing` over from polling.
fn accept(
    engine: Arc<Engine>,
    mut req: Request<Body>,
    existing: Option<Arc<Session>>,
    open: OpenRequest,
    slot: Option<AddressSlot>,
    framing: Framing,
) -> Result<Response<Body>, EngineError> {
    let key =
        client_key(req.headers()).ok_or(EngineError::BadRequest("not a websocket upgrade"))?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let task = async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%error, "websocket upgrade failed");
                return;
            }
        };
        // Copy out any bytes read past the request, then drop hyper's buffer: a slice of it would keep the
        // whole read buffer alive for the life of the connection.
        let (stream, buf) = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => (parts.io.into_inner(), BytesMut::from(&parts.read_buf[..])),
            Err(_) => {
                tracing::error!("websocket upgrade on an unexpected connection type");
                return;
            }
        };
        let connection = Connection {
            stream: Arc::new(stream),
            buf,
            decoder: FrameDecoder::new(engine.config().max_payload),
            framing,
        };
        match existing {
            None => connection.serve_new(engine, open, slot).await,
            Some(session) => connection.serve_upgrade(engine, session).await,
        }
    };
    tokio::spawn(task);
    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept_key(key.as_bytes()))
        .body(Body::empty())
        .unwrap_or_default())
}

fn client_key(headers: &HeaderMap) -> Option<String> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .map(|s| {
                    s.split(',')
                        .any(|part| part.trim().eq_ignore_ascii_case(token))
                })
                .unwrap_or(false)
        })
    };
    if !has_token(header::UPGRADE, "websocket") || !has_token(header::CONNECTION, "upgrade") {
        return None;
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return None;
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// One upgraded websocket connection.
struct Connection {
    /// Shared only to be lent to publishers while the writer sleeps (see [`Outbox::lend_stream`]).
    ///
    /// [`Outbox::lend_stream`]: super::Outbox::lend_stream
    stream: Arc<TcpStream>,
    /// Bytes of an incomplete frame; empty (and unallocated) while idle.
    buf: BytesMut,
    decoder: FrameDecoder,
    framing: Framing,
}

/// A [`Connection`] waiting without a task. Its read buffer is kept only while it holds part of a frame, boxed:
/// a parked connection's is nearly always empty, and inline it would take 32 bytes of every one.
struct ParkedConn {
    stream: Arc<TcpStream>,
    buf: Option<Box<BytesMut>>,
    decoder: FrameDecoder,
    framing: Framing,
}

impl Connection {
    fn park(self) -> ParkedConn {
        ParkedConn {
            stream: self.stream,
            buf: (!self.buf.is_empty()).then(|| Box::new(self.buf)),
            decoder: self.decoder,
            framing: self.framing,
        }
    }
}

impl ParkedConn {
    fn resume(self) -> Connection {
        Connection {
            stream: self.stream,
            buf: self.buf.map_or_else(BytesMut::new, |buf| *buf),
            decoder: self.decoder,
            framing: self.framing,
        }
    }
}

/// Why the connection task woke up.
#[derive(PartialEq, Eq)]
enum Wake {
    Outbox(Signal),
    Writable(bool),
    Readable(bool),
    Timer,
}

/// Where one [`Connection::pump`] left the session.
enum Pumped {
    /// Everything queued went out.
    Idle,
    /// The socket is full; frames wait in the writer.
    Blocked,
    /// The rounds ran out with packets still queued.
    More,
    /// Everything went out and the session is closing.
    Closed(CloseReason),
}

/// Waits for whatever the connection task must act on next: the outbox, the socket becoming writable (when
/// `blocked`), readable, or the pacing timer (when there is one). With `lendable`, the first poll lends the socket to
/// publishers while the task sleeps (see [`Outbox::lend_stream`]); the second value says whether it did.
/// One hand-written wait instead of `select!`: no per-connection future for each source, and only what it
/// needs kept in the connection's task.
///
/// [`Outbox::lend_stream`]: super::Outbox::lend_stream
async fn wait(
    stream: &Arc<TcpStream>,
    outbox: &super::Outbox,
    mut timer: Option<std::pin::Pin<&mut tokio::time::Sleep>>,
    blocked: bool,
    lendable: bool,
) -> (Wake, bool) {
    let mut first_poll = true;
    let mut lent = false;
    let wake = std::future::poll_fn(move |cx| {
        let polled = if first_poll && lendable {
            let (ready, was_lent) = outbox.lend_stream(stream, cx);
            lent = was_lent;
            ready
        } else {
            outbox.poll_signal(cx)
        };
        first_poll = false;
        if let Poll::Ready(signal) = polled {
            return Poll::Ready((Wake::Outbox(signal), lent));
        }
        if blocked {
            if let Poll::Ready(result) = stream.poll_write_ready(cx) {
                return Poll::Ready((Wake::Writable(result.is_ok()), lent));
            }
        }
        if let Poll::Ready(result) = stream.poll_read_ready(cx) {
            return Poll::Ready((Wake::Readable(result.is_ok()), lent));
        }
        if timer
            .as_mut()
            .is_some_and(|t| t.as_mut().poll(cx).is_ready())
        {
            return Poll::Ready((Wake::Timer, lent));
        }
        Poll::Pending
    });
    wake.await
}

/// A websocket connection's wake target while it has nothing to do: an idle connection holds this instead of a
/// task (its task ends; the first wake spawns a new one that carries on where it stopped).
struct Parked {
    state: parking_lot::Mutex<Park>,
}

/// Where a connection is.
enum Park {
    /// A task runs it; `woken` tells whether a wake came since the task last looked.
    Running { woken: bool },
    /// No task: what the next one needs (inline: the connection keeps this block whether it runs or not, so one
    /// 152-byte block instead of 40 + 128).
    Idle(Resume),
}

/// The state a parked connection resumes with.
struct Resume {
    conn: ParkedConn,
    engine: Arc<Engine>,
    session: Arc<Session>,
    /// When the last write went out, so a write right after the park is paced as before.
    pacer: WritePacer,
}

impl Parked {
    fn running() -> Parked {
        Parked {
            state: parking_lot::Mutex::new(Park::Running { woken: false }),
        }
    }

    /// Forgets wakes seen so far (the caller is about to look at everything).
    fn clear_woken(&self) {
        if let Park::Running { woken } = &mut *self.state.lock() {
            *woken = false;
        }
    }
}

impl std::task::Wake for Parked {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut state = self.state.lock();
        match std::mem::replace(&mut *state, Park::Running { woken: true }) {
            Park::Idle(resume) => {
                *state = Park::Running { woken: false };
                drop(state);
                let Resume {
                    conn,
                    engine,
                    session,
                    pacer,
                } = resume;
                let runtime = tokio::runtime::Handle::try_current()
                    .ok()
                    .or_else(|| engine.runtime());
                if let Some(runtime) = runtime {
                    runtime.spawn(
                        conn.resume()
                            .drive(engine, session, self.clone(), Some(pacer)),
                    );
                }
            }
            Park::Running { .. } => {}
        }
    }
}

/// Polls the idle wait once with the parked connection's waker: what woke it, or `None` when nothing is ready.
fn poll_idle(
    stream: &Arc<TcpStream>,
    outbox: &super::Outbox,
    parked: &Arc<Parked>,
) -> Option<(Wake, bool)> {
    let waker = std::task::Waker::from(parked.clone());
    let mut cx = std::task::Context::from_waker(&waker);
    let wait = std::pin::pin!(wait(stream, outbox, None, false, true));
    match wait.poll(&mut cx) {
        Poll::Ready(woke) => Some(woke),
        Poll::Pending => None,
    }
}

/// What reading produced.
enum Inbound {
    Message(WsMessage),
    /// Nothing complete yet.
    Pending,
}

impl Connection {
    /// A session opened directly on websocket.
    async fn serve_new(
        mut self,
        engine: Arc<Engine>,
        open: OpenRequest,
        slot: Option<AddressSlot>,
    ) {
        let opened = engine.open_session(TransportKind::WebSocket, &open, slot);
        drop(open);
        let session = match opened {
            Ok(session) => session,
            Err(error) => {
                let _ = self.write_raw(&close_frame(1013, &error.to_string())).await;
                return;
            }
        };
        if self.framing == Framing::Raw {
            self.run(engine, session);
            return;
        }
        // The open packet goes first; nothing else is queued before the client's CONNECT.
        if session
            .outbox
            .push(engine.open_packet(&session, false))
            .is_err()
        {
            engine.close_session(&session, CloseReason::TransportClose);
            return;
        }
        engine.start_heartbeat(&session);
        self.run(engine, session);
    }

    /// Serves the session on a task of its own (ended while the connection idles, see [`Parked`]). The task that
    /// accepted the upgrade ends here: its state (the upgrade future, the request's parts, the open request)
    /// would otherwise stay in the connection task's allocation for as long as the connection lives.
    fn run(self, engine: Arc<Engine>, session: Arc<Session>) {
        tokio::spawn(self.drive(engine, session, Arc::new(Parked::running()), None));
    }

    /// A polling session moving to this websocket: answer the probe, wait for the upgrade packet, take over.
    async fn serve_upgrade(mut self, engine: Arc<Engine>, session: Arc<Session>) {
        if session.transport() != TransportKind::Polling
            || session.swap_flag(Flag::UpgradeClaimed, true)
        {
            // A second websocket for a session that already has one: accept, then close it alone.
            let _ = self
                .write_raw(&close_frame(1008, "session already upgraded"))
                .await;
            return;
        }
        match tokio::time::timeout(UPGRADE_TIMEOUT, self.probe(&engine, &session)).await {
            Ok(Ok(())) => {
                session.set_transport(TransportKind::WebSocket);
                metrics::counter!("tidings_upgrades_total").increment(1);
                self.run(engine, session);
            }
            Ok(Err(reason)) => {
                if session.transport() == TransportKind::Upgrading {
                    session.set_transport(TransportKind::Polling);
                }
                session.swap_flag(Flag::UpgradeClaimed, false);
                tracing::debug!(sid = %session.sid(), %reason, "upgrade abandoned");
                let _ = self
                    .write_raw(&close_frame(reason.ws_code(), "upgrade failed"))
                    .await;
            }
            Err(_) => {
                if session.transport() == TransportKind::Upgrading {
                    session.set_transport(TransportKind::Polling);
                }
                session.swap_flag(Flag::UpgradeClaimed, false);
                let _ = self
                    .write_raw(&close_frame(1000, "upgrade timed out"))
                    .await;
            }
        }
    }

    /// `2probe` → `3probe`, then waits for the upgrade packet `5`. Every frame takes a token of the session's
    /// rate limit; past it the upgrade is abandoned.
    async fn probe(&mut self, engine: &Engine, session: &Arc<Session>) -> Result<(), CloseReason> {
        loop {
            let message = self.next_message().await?;
            engine.admit_packet(session)?;
            let packet = match message {
                WsMessage::Text(text) => Packet::decode_text(text)
                    .map_err(|e| CloseReason::ProtocolError(e.to_string()))?,
                WsMessage::Ping(data) => {
                    self.write_raw(&pong_frame(&data))
                        .await
                        .map_err(|_| CloseReason::TransportClose)?;
                    continue;
                }
                WsMessage::Pong(_) => continue,
                WsMessage::Close(..) => return Err(CloseReason::TransportClose),
                WsMessage::Binary(_) => {
                    return Err(CloseReason::ProtocolError(
                        "binary frame during probe".into(),
                    ))
                }
            };
            match packet {
                Packet::Ping(data) if &data[..] == b"probe" => {
                    let mut reply = BytesMut::new();
                    encode_frame(OpCode::Text, b"3probe", &mut reply);
                    self.write_raw(&reply)
                        .await
                        .map_err(|_| CloseReason::TransportClose)?;
                    session.set_transport(TransportKind::Upgrading);
                }
                Packet::Upgrade if session.transport() == TransportKind::Upgrading => return Ok(()),
                _ => {
                    return Err(CloseReason::ProtocolError(
                        "unexpected packet during upgrade".into(),
                    ))
                }
            }
        }
    }

    /// Reads until one whole websocket message is available.
    async fn next_message(&mut self) -> Result<WsMessage, CloseReason> {
        loop {
            if let Inbound::Message(message) = self.decode()? {
                return Ok(message);
            }
            self.stream
                .readable()
                .await
                .map_err(|_| CloseReason::TransportClose)?;
            self.fill()?;
        }
    }

    fn decode(&mut self) -> Result<Inbound, CloseReason> {
        let decoded =
            self.decoder
                .decode(&mut self.buf)
                .map_err(|error| match error.close_code() {
                    1009 => CloseReason::PayloadTooLarge,
                    1007 => CloseReason::InvalidData(error.to_string()),
                    _ => CloseReason::ProtocolError(error.to_string()),
                })?;
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            // Keep idle connections free of read buffers.
            self.buf = BytesMut::new();
        }
        Ok(match decoded {
            Some(message) => Inbound::Message(message),
            None => Inbound::Pending,
        })
    }

    /// Moves whatever the socket has into the frame buffer, without blocking.
    fn fill(&mut self) -> Result<(), CloseReason> {
        let mut chunk = [0u8; 4096];
        for _ in 0..16 {
            match self.stream.try_read(&mut chunk) {
                Ok(0) => return Err(CloseReason::TransportClose),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    if n < chunk.len() {
                        return Ok(());
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(_) => return Err(CloseReason::TransportClose),
            }
        }
        Ok(())
    }

    /// The main loop of a websocket session. (A plain function returning the future: an `async fn` would keep
    /// the connection twice in every connection's task, as its argument and as the local it moves into.)
    #[allow(clippy::manual_async_fn)] // on purpose: see above
    fn drive(
        mut self,
        engine: Arc<Engine>,
        session: Arc<Session>,
        parked: Arc<Parked>,
        pacer: Option<WritePacer>,
    ) -> impl std::future::Future<Output = ()> + Send {
        async move {
            // Resumed after a park: the socket may still be lent to publishers, and what woke the connection is
            // looked at first, as if the wait had returned (the pacer decides whether to write now).
            let mut resumed = pacer.is_some();
            session.outbox.reclaim_stream();
            // The write pacing's timer, made while pacing waits (the heartbeat runs elsewhere: an idle connection
            // holds no timer).
            let mut timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
            let mut writer = FrameWriter::default();
            let cadence = engine.write_cadence();
            let mut pacer = pacer.unwrap_or_else(|| WritePacer::new(cadence.interval()));
            let reason = loop {
                if !pacer.is_waiting() && !std::mem::take(&mut resumed) {
                    let mut queued_ms = None;
                    let pumped = self.pump(&session, &mut writer, &mut queued_ms);
                    if let Some(queued_ms) = queued_ms.filter(|_| cadence.is_adaptive()) {
                        let now = now_ms();
                        if let Some(lag) = pacer.lag_of_write(queued_ms, now) {
                            cadence.report(lag, now);
                        }
                    }
                    match pumped {
                        Ok(Pumped::Closed(reason)) => break reason,
                        Ok(Pumped::More) => {
                            // A long queue: let other connections run between rounds.
                            tokio::task::yield_now().await;
                            continue;
                        }
                        Ok(Pumped::Idle | Pumped::Blocked) => {}
                        Err(_) => {
                            break session
                                .outbox
                                .closing()
                                .unwrap_or(CloseReason::TransportClose)
                        }
                    }
                }
                // Nothing unsent: publishers of small rooms may write to the socket until this task wakes.
                let blocked = writer.is_blocked();
                let lendable = !blocked && !pacer.is_waiting();
                let (wake, lent) = if lendable && timer.is_none() {
                    // Idle: wait without a task. The wakers are the parked connection's; if nothing is ready, the
                    // task ends and the first wake starts a new one.
                    parked.clear_woken();
                    match poll_idle(&self.stream, &session.outbox, &parked) {
                        Some(woke) => woke,
                        None => {
                            let mut state = parked.state.lock();
                            if matches!(*state, Park::Running { woken: true }) {
                                drop(state);
                                session.outbox.reclaim_stream();
                                continue;
                            }
                            *state = Park::Idle(Resume {
                                conn: self.park(),
                                engine,
                                session,
                                pacer,
                            });
                            return;
                        }
                    }
                } else {
                    let paced = timer
                        .as_mut()
                        .filter(|_| pacer.is_waiting())
                        .map(|t| t.as_mut());
                    let (stream, outbox) = (&self.stream, &session.outbox);
                    wait(stream, outbox, paced, blocked, lendable).await
                };
                // An outbox wake took the socket back already.
                if lent && !matches!(wake, Wake::Outbox(_)) {
                    session.outbox.reclaim_stream();
                }
                match wake {
                    Wake::Outbox(signal) => {
                        if writer.is_blocked()
                            && session.outbox.closing() == Some(CloseReason::SlowConsumer)
                        {
                            break CloseReason::SlowConsumer;
                        }
                        pacer.set_interval(cadence.interval());
                        if signal == Signal::Urgent {
                            pacer.on_urgent(Instant::now());
                        } else if !writer.is_blocked()
                            && !pacer.is_waiting()
                            && !pacer.on_queued(Instant::now())
                        {
                            if let Some(due) = pacer.due() {
                                match timer.as_mut() {
                                    Some(timer) => timer.as_mut().reset(due),
                                    None => timer = Some(Box::pin(tokio::time::sleep_until(due))),
                                }
                            }
                        }
                    }
                    Wake::Writable(ok) | Wake::Readable(ok) if !ok => {
                        break CloseReason::TransportClose
                    }
                    Wake::Writable(_) => {}
                    Wake::Readable(_) => {
                        if let Err(reason) = self.on_readable(&engine, &session) {
                            break reason;
                        }
                    }
                    Wake::Timer => {
                        pacer.on_timer(Instant::now());
                        if let (Some(timer), Some(due)) = (timer.as_mut(), pacer.due()) {
                            timer.as_mut().reset(due);
                        }
                    }
                }
                if !pacer.is_waiting() {
                    // Only a paced connection keeps a timer: the handshake's writes often come close enough
                    // together to be paced, and every idle connection would keep that timer otherwise.
                    timer = None;
                }
            };
            // Boxed: this rare path would otherwise enlarge every connection's task.
            Box::pin(self.finish(&engine, &session, reason, writer)).await;
        }
    }

    /// Closes the session and, within [`CLOSE_GRACE`], sends what is still queued (e.g. a disconnect packet)
    /// and the close frame.
    async fn finish(
        &mut self,
        engine: &Arc<Engine>,
        session: &Arc<Session>,
        reason: CloseReason,
        mut writer: FrameWriter,
    ) {
        engine.close_session(session, reason.clone());
        let final_reason = session.outbox.closing().unwrap_or(reason);
        let close = close_frame(final_reason.ws_code(), final_reason.label());
        if final_reason == CloseReason::SlowConsumer {
            // Its socket is not draining: do not wait on it, just try to leave a close frame.
            let _ = self.stream.try_write(&close);
            return;
        }
        let goodbye = async {
            loop {
                match self.pump(session, &mut writer, &mut None) {
                    Ok(Pumped::Closed(_) | Pumped::Idle) | Err(_) => break,
                    Ok(Pumped::Blocked) => {
                        if self.stream.writable().await.is_err() {
                            return;
                        }
                    }
                    Ok(Pumped::More) => {}
                }
            }
            if self.write_raw(&close).await.is_ok() {
                self.linger().await;
            }
        };
        let _ = tokio::time::timeout(CLOSE_GRACE, goodbye).await;
    }

    /// After our close frame: ends our side of the stream and reads (and drops) what the client still sends
    /// until it closes too. Closing a socket with unread input makes the kernel reset the connection, which
    /// can destroy the close frame before the client reads it.
    async fn linger(&mut self) {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&*self.stream);
        // SAFETY: `fd` is the open socket `self.stream` owns for as long as this call runs; shutting down
        // the write half does not close the descriptor.
        unsafe { libc::shutdown(fd, libc::SHUT_WR) };
        let mut dropped = 0;
        let mut chunk = [0u8; 4096];
        while dropped < CLOSE_DRAIN_BYTES {
            if self.stream.readable().await.is_err() {
                return;
            }
            match self.stream.try_read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => dropped += n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    }

    /// Moves queued packets to the socket without waiting, at most [`ROUNDS_PER_PUMP`] rounds. When it
    /// starts with nothing unsent and drains packets, `queued_ms` tells when they were queued (a socket that
    /// was blocked says nothing of how late the node runs).
    fn pump(
        &mut self,
        session: &Session,
        writer: &mut FrameWriter,
        queued_ms: &mut Option<u32>,
    ) -> io::Result<Pumped> {
        let unblocked = !writer.is_blocked();
        for round in 0..ROUNDS_PER_PUMP {
            if writer.is_blocked() && !writer.write_some(&self.stream)? {
                return Ok(Pumped::Blocked);
            }
            let mut batch = batch_buffer();
            let drained = session.outbox.drain_frames(&mut batch, BYTES_PER_ROUND);
            if round == 0 && unblocked {
                *queued_ms = drained.queued_ms;
            }
            writer.extend(batch, drained.written);
            if !writer.write_some(&self.stream)? {
                return Ok(Pumped::Blocked);
            }
            if !drained.more {
                return Ok(drained.closing.map_or(Pumped::Idle, Pumped::Closed));
            }
        }
        Ok(Pumped::More)
    }

    /// Reads available frames and applies each message.
    fn on_readable(
        &mut self,
        engine: &Arc<Engine>,
        session: &Arc<Session>,
    ) -> Result<(), CloseReason> {
        self.fill()?;
        loop {
            let message = match self.decode()? {
                Inbound::Message(message) => message,
                Inbound::Pending => return Ok(()),
            };
            let packet = match (message, self.framing) {
                (WsMessage::Text(text), Framing::EngineIo) => Packet::decode_text(text)
                    .map_err(|e| CloseReason::ProtocolError(e.to_string()))?,
                (WsMessage::Binary(data), Framing::EngineIo) => Packet::binary(data),
                (WsMessage::Text(text), Framing::Raw) => {
                    engine.on_message(session, Message::Text(text))?;
                    continue;
                }
                (WsMessage::Binary(data), Framing::Raw) => {
                    engine.on_message(session, Message::Binary(data))?;
                    continue;
                }
                (WsMessage::Ping(data), _) => {
                    // Control frames count against the rate limit like packets: a ping costs a write.
                    engine.admit_packet(session)?;
                    // Queued like any frame, so it never lands inside a partly written one.
                    session
                        .outbox
                        .push(Outgoing::WsPong(data))
                        .map_err(|_| CloseReason::SlowConsumer)?;
                    continue;
                }
                (WsMessage::Pong(_), _) => {
                    engine.admit_packet(session)?;
                    continue;
                }
                (WsMessage::Close(..), _) => return Err(CloseReason::TransportClose),
            };
            engine.on_packet(session, packet)?;
            if session.is_closed() {
                return Ok(());
            }
        }
    }

    /// Writes one prepared frame, waiting for the socket (rare paths: probe reply, close frames).
    async fn write_raw(&mut self, mut frame: &[u8]) -> io::Result<()> {
        while !frame.is_empty() {
            match self.stream.try_write(frame) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => frame = &frame[n..],
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    self.stream.writable().await?
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}
