//! The clients of one process: a spawner that opens them at the ramp rate, and the websocket client task (one
//! task per connection; while idle it holds the socket, an unallocated leftover buffer and a few counters).
//! With churn a websocket client also drops its connection when picked (closing the TCP socket with a reset, no
//! Socket.IO disconnect, as a network loss would) or when it is lost, and opens it again on the next node of
//! `--url`, resuming its session.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;

use super::churn::Churn;
use super::plan::Plan;
use super::polling::{self, PollingHttp};
use super::session::{Connected, Hello, SioClient, Step};
use super::stats::Recorder;
use super::sys::{connect_from, unix_micros};
use super::track::Track;
use super::ws::{encode_masked, parse_frame, parse_upgrade_response, upgrade_request, MAX_MESSAGE};
use crate::engineio::ws_frame::OpCode;

/// Bytes read from a socket at a time, into a stack buffer that is not kept while the client waits.
const READ_CHUNK: usize = 4096;
/// A leftover buffer larger than this is freed once empty, so a burst does not pin memory.
const KEEP_PENDING: usize = 1024;
/// Wait after a failed reconnect attempt; it doubles after each further one.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest wait between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What every client task of a process shares.
pub struct Shared {
    /// The run.
    pub plan: Arc<Plan>,
    /// Where the clients count.
    pub recorder: Arc<Recorder>,
    /// HTTP clients of the long-polling clients, one per source address.
    pub(super) polling: PollingHttp,
    /// Who drops their connection when, with `--reconnect-per-min`.
    churn: Option<Arc<Churn>>,
}

/// The clients of this process, being opened or open.
pub struct Clients {
    shared: Arc<Shared>,
    total: u64,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    spawner: AbortHandle,
}

impl Clients {
    /// Starts opening this process's clients at its share of the ramp rate (needs a tokio runtime).
    pub fn start(plan: Arc<Plan>, recorder: Arc<Recorder>) -> Clients {
        let total = plan.my_clients().count() as u64;
        let shared = Arc::new(Shared {
            polling: PollingHttp::new(&plan),
            churn: plan.churns().then(|| Churn::new(&plan)),
            plan,
            recorder,
        });
        let tasks = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
        let spawner = tokio::spawn(spawn_all(shared.clone(), tasks.clone())).abort_handle();
        Clients {
            shared,
            total,
            tasks,
            spawner,
        }
    }

    /// Clients this process opens.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Whether every client connected or failed.
    pub fn all_resolved(&self) -> bool {
        self.shared.recorder.resolved() >= self.total
    }

    /// The recorder the clients write into.
    pub fn recorder(&self) -> &Arc<Recorder> {
        &self.shared.recorder
    }

    /// Publishing starts: clients begin to churn, if they do.
    pub fn start_churn(&self) {
        if let Some(churn) = &self.shared.churn {
            churn.start(&self.shared.plan);
        }
    }

    /// Ends every client (their sockets close as the tasks drop).
    pub fn stop(&self) {
        self.spawner.abort();
        for task in self.tasks.lock().iter() {
            task.abort();
        }
    }

    /// Ends every client and waits (at most `limit`) until they are gone and the long-polling ones told the
    /// server.
    pub async fn close(&self, limit: Duration) {
        self.stop();
        let deadline = Instant::now() + limit;
        let tasks = std::mem::take(&mut *self.tasks.lock());
        for task in tasks {
            // Only cancellation can come back: the tasks were aborted.
            let _ = tokio::time::timeout_at(deadline, task).await;
        }
        self.shared
            .polling
            .closed(deadline.saturating_duration_since(Instant::now()))
            .await;
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Spawns client `k` of this process at `k / ramp` seconds.
async fn spawn_all(shared: Arc<Shared>, tasks: Arc<Mutex<Vec<JoinHandle<()>>>>) {
    let started = Instant::now();
    let ramp = shared.plan.my_ramp();
    let clients: Vec<usize> = shared.plan.my_clients().collect();
    for (k, j) in clients.into_iter().enumerate() {
        let due = started + Duration::from_secs_f64(k as f64 / ramp);
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        let task = if shared.plan.is_polling(j) {
            tokio::spawn(polling::run_client(j, shared.clone()))
        } else {
            tokio::spawn(run_client(j, k, shared.clone()))
        };
        tasks.lock().push(task);
    }
}

/// One websocket client from connect to disconnect (`k`: its position among this process's clients).
async fn run_client(j: usize, k: usize, shared: Arc<Shared>) {
    let recorder = &shared.recorder;
    let plan = &shared.plan;
    let room = plan.room_of(j);
    let started = Instant::now();
    let token = match plan.token_for(j) {
        Ok(token) => token,
        Err(e) => return recorder.failed(&format!("token: {e}"), unix_micros()),
    };
    let hello = Hello::new(&plan.room_name(room), token.as_deref());
    let mut session = match &shared.churn {
        Some(_) => SioClient::tracked(hello, Track::new(room as u64, plan.rooms as u64)),
        None => SioClient::new(hello),
    };
    let mut conn = match WsConn::open_in_time(j, 0, &shared, &mut session).await {
        Ok(conn) => conn,
        Err(reason) => return recorder.failed(&reason, unix_micros()),
    };
    recorder.connected(room, micros(started.elapsed()), unix_micros());
    let Some(churn) = shared.churn.clone() else {
        let reason = conn.run(&mut session, recorder).await;
        recorder.disconnected(room, &reason);
        return;
    };
    let slot = churn.slot(k);
    let mut attempt = 0;
    loop {
        slot.set_live(true);
        let lost = tokio::select! {
            reason = conn.run(&mut session, recorder) => Some(reason),
            () = slot.picked() => None,
        };
        slot.set_live(false);
        let since = Instant::now();
        conn.reset();
        recorder.dropped(lost.as_deref());
        conn = redial(j, &shared, token.as_deref(), &mut session, &mut attempt).await;
        let connected = session.connected();
        recorder.with(|t| {
            t.reconnects += 1;
            match connected {
                Connected::Recovered => t.recovered += 1,
                Connected::NotRecovered => t.not_recovered += 1,
                Connected::Fresh => {}
            }
            t.reconnect
                .saturating_record(micros(since.elapsed()).max(1));
        });
    }
}

/// Opens client `j`'s connection again, resuming its session: each attempt on the next node, waiting longer
/// after each failed one, until one succeeds (the bench stops the client at the end of the run).
async fn redial(
    j: usize,
    shared: &Shared,
    token: Option<&str>,
    session: &mut SioClient,
    attempt: &mut usize,
) -> WsConn {
    let plan = &shared.plan;
    let room = plan.room_name(plan.room_of(j));
    let mut backoff = FIRST_BACKOFF;
    loop {
        *attempt += 1;
        session.restart(Hello::with_auth(&room, &session.connect_auth(token)));
        match WsConn::open_in_time(j, *attempt, shared, session).await {
            Ok(conn) => return conn,
            Err(reason) => shared.recorder.with(|t| {
                t.reconnect_failures += 1;
                t.count_error(&format!("reconnect: {reason}"));
            }),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Whole microseconds of `d`.
pub(super) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A websocket connection carrying a Socket.IO client (the [`SioClient`] is the caller's: it outlives the
/// connection when the client reconnects).
struct WsConn {
    stream: TcpStream,
    /// Bytes of a frame that is not complete yet.
    pending: Vec<u8>,
    /// Opcode and data of a fragmented message in progress.
    fragment: Option<(OpCode, Vec<u8>)>,
}

impl WsConn {
    /// [`WsConn::open`] within the connect timeout, to node `attempt` of client `j`.
    async fn open_in_time(
        j: usize,
        attempt: usize,
        shared: &Shared,
        session: &mut SioClient,
    ) -> Result<WsConn, String> {
        let mut waiting_for = "tcp connect";
        // Boxed, so the handshake's buffers and state are freed once it is done.
        let opening = Box::pin(WsConn::open(j, attempt, shared, session, &mut waiting_for));
        match tokio::time::timeout(shared.plan.connect_timeout, opening).await {
            Ok(result) => result,
            Err(_) => Err(format!("connect timeout waiting for {waiting_for}")),
        }
    }

    /// Connects, upgrades and runs the Socket.IO handshake until the client is live (subscribed, or its session
    /// resumed); `waiting_for` names the step under way (for the reason of a timeout).
    async fn open(
        j: usize,
        attempt: usize,
        shared: &Shared,
        session: &mut SioClient,
        waiting_for: &mut &'static str,
    ) -> Result<WsConn, String> {
        let plan = &shared.plan;
        let target = plan.target_at(j, attempt);
        let mut stream = connect_from(target.addr, plan.source_of(j))
            .await
            .map_err(|e| format!("tcp connect: {}", io_reason(&e)))?;
        let (key, request) = upgrade_request(
            &target.authority,
            &format!("{}?EIO=4&transport=websocket", target.path),
        );
        stream
            .write_all(&request)
            .await
            .map_err(|e| format!("upgrade write: {}", io_reason(&e)))?;
        *waiting_for = "upgrade answer";
        let pending = read_upgrade(&mut stream, &key).await?;
        let mut conn = WsConn {
            stream,
            pending,
            fragment: None,
        };
        // Frames that came with the 101 answer.
        if !conn.pending.is_empty() && conn.process_pending(session, &shared.recorder).await? {
            return Ok(conn);
        }
        while !session.is_live() {
            *waiting_for = session.waiting_for();
            conn.read_some(session, &shared.recorder).await?;
        }
        Ok(conn)
    }

    /// Reads and answers until the connection ends; returns why.
    async fn run(&mut self, session: &mut SioClient, recorder: &Recorder) -> String {
        loop {
            if let Err(reason) = self.read_some(session, recorder).await {
                return reason;
            }
        }
    }

    /// Ends the connection with a TCP reset, as a lost network would leave it: no Socket.IO disconnect, no
    /// WebSocket close.
    fn reset(self) {
        // Without the zero linger the socket closes with a FIN, which serves as well.
        let _ = self.stream.set_zero_linger();
    }

    /// Waits for bytes, handles every complete frame in them, sends what they call for. `Ok(true)` when the
    /// client became live; `Err` with the reason when the connection ended.
    async fn read_some(
        &mut self,
        session: &mut SioClient,
        recorder: &Recorder,
    ) -> Result<bool, String> {
        self.stream
            .readable()
            .await
            .map_err(|e| format!("read: {}", io_reason(&e)))?;
        let mut out = Outgoing::default();
        let live = {
            let mut chunk = [0u8; READ_CHUNK];
            let n = match self.stream.try_read(&mut chunk) {
                Ok(0) => return Err("eof".into()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(format!("read: {}", io_reason(&e))),
            };
            if self.pending.is_empty() {
                let (used, live) = self.process(&chunk[..n], session, recorder, &mut out)?;
                self.pending.extend_from_slice(&chunk[used..n]);
                live
            } else {
                self.pending.extend_from_slice(&chunk[..n]);
                self.take_pending(session, recorder, &mut out)?
            }
        };
        self.send(out).await?;
        Ok(live)
    }

    /// Handles the frames already in `pending`.
    async fn process_pending(
        &mut self,
        session: &mut SioClient,
        recorder: &Recorder,
    ) -> Result<bool, String> {
        let mut out = Outgoing::default();
        let live = self.take_pending(session, recorder, &mut out)?;
        self.send(out).await?;
        Ok(live)
    }

    /// Processes `pending` and keeps only the incomplete tail, freeing a large buffer once it is empty.
    fn take_pending(
        &mut self,
        session: &mut SioClient,
        recorder: &Recorder,
        out: &mut Outgoing,
    ) -> Result<bool, String> {
        let data = std::mem::take(&mut self.pending);
        let (used, live) = self.process(&data, session, recorder, out)?;
        self.pending = data;
        self.pending.drain(..used);
        if self.pending.is_empty() && self.pending.capacity() > KEEP_PENDING {
            self.pending = Vec::new();
        }
        Ok(live)
    }

    /// Handles the complete frames at the front of `data`; returns the bytes used and whether the client
    /// became live.
    fn process(
        &mut self,
        data: &[u8],
        session: &mut SioClient,
        recorder: &Recorder,
        out: &mut Outgoing,
    ) -> Result<(usize, bool), String> {
        let now_us = unix_micros();
        let mut used = 0;
        let mut live = false;
        while let Some((frame, len)) = parse_frame(&data[used..]).map_err(|e| e.to_string())? {
            used += len;
            let message = match (frame.opcode, frame.fin, self.fragment.take()) {
                (OpCode::Ping, ..) => {
                    encode_masked(OpCode::Pong, frame.payload, &mut out.wire);
                    continue;
                }
                (OpCode::Pong, ..) => continue,
                (OpCode::Close, ..) => return Err(close_reason(frame.payload)),
                (OpCode::Text | OpCode::Binary, true, None) => (frame.opcode, frame.payload),
                (OpCode::Text | OpCode::Binary, false, None) => {
                    self.fragment = Some((frame.opcode, frame.payload.to_vec()));
                    continue;
                }
                (OpCode::Continuation, fin, Some((opcode, mut joined))) => {
                    if joined.len() + frame.payload.len() > MAX_MESSAGE {
                        return Err("message too large".into());
                    }
                    joined.extend_from_slice(frame.payload);
                    if !fin {
                        self.fragment = Some((opcode, joined));
                        continue;
                    }
                    live |= on_message(session, opcode, &joined, now_us, recorder, out)?;
                    continue;
                }
                _ => return Err("bad frame: broken fragmentation".into()),
            };
            live |= on_message(session, message.0, message.1, now_us, recorder, out)?;
        }
        Ok((used, live))
    }

    /// Writes the replies a batch of frames called for.
    async fn send(&mut self, mut out: Outgoing) -> Result<(), String> {
        for packet in &out.packets {
            encode_masked(OpCode::Text, packet.as_bytes(), &mut out.wire);
        }
        if out.wire.is_empty() {
            return Ok(());
        }
        self.stream
            .write_all(&out.wire)
            .await
            .map_err(|e| format!("write: {}", io_reason(&e)))
    }
}

/// Hands a whole text message to the Socket.IO client (binary messages are not part of the bench).
fn on_message(
    session: &mut SioClient,
    opcode: OpCode,
    payload: &[u8],
    now_us: u64,
    recorder: &Recorder,
    out: &mut Outgoing,
) -> Result<bool, String> {
    if opcode != OpCode::Text {
        return Ok(false);
    }
    match session.on_packet(payload, now_us, recorder, &mut out.packets) {
        Step::Continue => Ok(false),
        Step::Live => Ok(true),
        Step::Failed(reason) => Err(reason),
        Step::Closed(reason) => Err(reason.to_owned()),
    }
}

/// What a batch of frames calls for: Engine.IO packets to send and ready-made frames (pongs).
#[derive(Default)]
struct Outgoing {
    packets: Vec<String>,
    wire: Vec<u8>,
}

/// Reads the answer to the upgrade request; returns the bytes that followed it.
pub(crate) async fn read_upgrade(stream: &mut TcpStream, key: &str) -> Result<Vec<u8>, String> {
    use tokio::io::AsyncReadExt as _;
    let mut buf = Vec::with_capacity(512);
    loop {
        let mut chunk = [0u8; 1024];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("upgrade read: {}", io_reason(&e)))?;
        if n == 0 {
            return Err("upgrade: connection closed".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(len) = parse_upgrade_response(&buf, key).map_err(|e| e.to_string())? {
            buf.drain(..len);
            buf.shrink_to_fit();
            return Ok(buf);
        }
    }
}

/// `ws close <code>` from a close frame's payload.
fn close_reason(payload: &[u8]) -> String {
    match payload {
        [hi, lo, ..] => format!("ws close {}", u16::from_be_bytes([*hi, *lo])),
        _ => "ws close".into(),
    }
}

/// A short, low-cardinality description of an I/O error (the error map groups by it).
pub(crate) fn io_reason(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(_) => e.to_string(),
        None => format!("{:?}", e.kind()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons() {
        assert_eq!(close_reason(&[0x03, 0xE8, b'x']), "ws close 1000");
        assert_eq!(close_reason(&[]), "ws close");
    }
}
