//! Connection state recovery benchmark: how fast parked sessions get their missed events back, and what the
//! room history costs in memory per stored event.
//!
//! ```sh
//! cargo run --release --example recovery_bench -- [--clients 1000] [--events 1000] [--payload 100] [--json]
//! ```
//!
//! A tidings node runs in this process on its own Tokio runtime (threads `tidings-srv`); the clients and the
//! HTTP publisher run on a second runtime (threads `bench-cli`), so the CPU time of the server threads can be
//! told apart from the clients' (both are reported; the whole-process figure is an upper bound).
//!
//! 1. **Replay.** N raw Socket.IO-over-websocket clients join one room, optionally receive `--pre-events`
//!    live events (so they hold an offset), then all their TCP connections are dropped without a websocket
//!    close frame. Once `/healthz` shows 0 connections (sessions parked), E events are published with
//!    `POST /v1/publish/batch`; then the clock starts and all N clients reconnect at once with
//!    `40{"token","pid","offset"}`. The clock stops when every client got its CONNECT reply with the same sid
//!    and all E events, byte-checked against what was published (order, no gap, no duplicate). A short grace
//!    period afterwards catches extra (duplicated) events. Any failure is reported with a wire trace and makes
//!    the exit status non-zero.
//! 2. **History memory.** On a fresh node with no clients, M events (payload bytes of padding each) are
//!    published across R rooms; the process RSS (`VmRSS`) and the store's own accounting (the
//!    `tidings_history_bytes` gauge, refreshed by the node's one-second sweep) are read before and after.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use tidings::config::Config;
use tidings::server::RunningNode;

const SECRET: &str = "recovery-bench-jwt-secret-0123456789abcdef";
const API_KEY: &str = "recovery-bench-api-key-0123456789";
/// The room of the replay phase.
const ROOM: &str = "bench";
/// Event name of every published event.
const EVENT: &str = "update";
/// Most events in one `POST /v1/publish/batch`.
const BATCH: usize = 1000;
/// Name of the server runtime's threads (at most 15 bytes: it is the kernel's `comm`).
const SERVER_THREAD: &str = "tidings-srv";
/// Name of the client runtime's threads.
const CLIENT_THREAD: &str = "bench-cli";
/// The server replays at most this many events to one socket (`MAX_REPLAY` in src/app/recover.rs); a longer gap
/// gets a fresh session.
const SERVER_MAX_REPLAY: usize = 2048;
/// Concurrent connection attempts while setting up (the timed reconnection is not limited).
const SETUP_CONCURRENCY: usize = 128;
/// Wait after the last client completed, to catch events delivered twice.
const GRACE: Duration = Duration::from_millis(300);

/// The system allocator, counting the heap bytes and blocks allocated minus freed while [`COUNTING`] is on (the
/// history memory phase only, so the replay timings do not pay for it).
struct CountingAlloc;

static COUNTING: AtomicBool = AtomicBool::new(false);
static HEAP_BYTES: AtomicI64 = AtomicI64::new(0);
static HEAP_BLOCKS: AtomicI64 = AtomicI64::new(0);
/// Net blocks by requested size (index = size; the last slot gathers larger blocks).
static BY_SIZE: [AtomicI64; SIZE_SLOTS] = [const { AtomicI64::new(0) }; SIZE_SLOTS];
const SIZE_SLOTS: usize = 1025;

fn size_slot(size: usize) -> &'static AtomicI64 {
    &BY_SIZE[size.min(SIZE_SLOTS - 1)]
}

fn count(bytes: i64, blocks: i64) {
    if COUNTING.load(Ordering::Relaxed) {
        HEAP_BYTES.fetch_add(bytes, Ordering::Relaxed);
        HEAP_BLOCKS.fetch_add(blocks, Ordering::Relaxed);
    }
}

fn count_block(size: usize, blocks: i64) {
    if COUNTING.load(Ordering::Relaxed) {
        HEAP_BYTES.fetch_add(size as i64 * blocks, Ordering::Relaxed);
        HEAP_BLOCKS.fetch_add(blocks, Ordering::Relaxed);
        size_slot(size).fetch_add(blocks, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            count_block(layout.size(), 1);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            count_block(layout.size(), 1);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        count_block(layout.size(), -1);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() && COUNTING.load(Ordering::Relaxed) {
            count(new_size as i64 - layout.size() as i64, 0);
            size_slot(layout.size()).fetch_sub(1, Ordering::Relaxed);
            size_slot(new_size).fetch_add(1, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

/// Starts counting heap growth from zero.
fn heap_count_start() {
    HEAP_BYTES.store(0, Ordering::SeqCst);
    HEAP_BLOCKS.store(0, Ordering::SeqCst);
    for slot in &BY_SIZE {
        slot.store(0, Ordering::SeqCst);
    }
    COUNTING.store(true, Ordering::SeqCst);
}

/// Stops counting; returns the net heap bytes and blocks allocated meanwhile, and the net blocks of the sizes
/// that gained the most (size, blocks; size 1024 stands for 1024 and more).
fn heap_count_stop() -> (i64, i64, Vec<(usize, i64)>) {
    COUNTING.store(false, Ordering::SeqCst);
    let mut sizes: Vec<(usize, i64)> = BY_SIZE
        .iter()
        .enumerate()
        .map(|(size, n)| (size, n.load(Ordering::SeqCst)))
        .filter(|(_, n)| *n > 0)
        .collect();
    sizes.sort_by_key(|(size, n)| std::cmp::Reverse(*n * (*size as i64).max(1)));
    sizes.truncate(6);
    (
        HEAP_BYTES.load(Ordering::SeqCst),
        HEAP_BLOCKS.load(Ordering::SeqCst),
        sizes,
    )
}

#[derive(Parser, Debug, Clone, serde::Serialize)]
#[command(about = "tidings connection state recovery benchmark")]
struct Args {
    /// Clients that disconnect and recover (replay phase).
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Events published while the clients are away, replayed to each.
    #[arg(long, default_value_t = 1000)]
    events: usize,
    /// Bytes of padding in each event's data (`{"seq":i,"pad":"xxx…"}`), both phases.
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// Events each client receives live before the disconnection, so that it resumes from an offset as
    /// socket.io-client does (0: reconnect without an offset).
    #[arg(long, default_value_t = 1)]
    pre_events: usize,
    /// Events stored in the history memory phase.
    #[arg(long, default_value_t = 200_000)]
    history_events: usize,
    /// Rooms the history memory phase spreads its events over.
    #[arg(long, default_value_t = 200)]
    history_rooms: usize,
    /// Worker threads of the server runtime.
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Worker threads of the client runtime.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// Seam check: also publish this many events one by one while the clients reconnect (each client must then
    /// get E + this many events, in order, once each). Off (0) for the measurement proper.
    #[arg(long, default_value_t = 0)]
    live_during: usize,
    /// Pause between the events of `--live-during`, in milliseconds.
    #[arg(long, default_value_t = 2)]
    live_interval_ms: u64,
    /// Limit the timed reconnection to this many clients between TCP connect and CONNECT reply at once
    /// (0: all at once, the default).
    #[arg(long, default_value_t = 0)]
    wave_concurrency: usize,
    /// Give up on a reconnecting client after this many seconds.
    #[arg(long, default_value_t = 30)]
    timeout_secs: u64,
    /// Skip the replay phase.
    #[arg(long)]
    skip_replay: bool,
    /// Skip the history memory phase.
    #[arg(long)]
    skip_memory: bool,
    /// Also print the results as one JSON line (the last line of output).
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tidings::process::raise_open_files_limit();
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.server_threads.max(1))
        .thread_name(SERVER_THREAD)
        .enable_all()
        .build()?;
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .thread_name(CLIENT_THREAD)
        .enable_all()
        .build()?;
    let handle = server.handle().clone();
    // History first: its RSS baseline should not carry the replay phase's freed buffers.
    let memory = if args.skip_memory {
        None
    } else {
        Some(client.block_on(memory_phase(&args, &handle))?)
    };
    let replay = if args.skip_replay {
        None
    } else {
        Some(client.block_on(replay_phase(&args, &handle))?)
    };
    drop(client);
    server.shutdown_background();

    print_table(&args, replay.as_ref(), memory.as_ref());
    if args.json {
        let line = json!({
            "bench": "recovery",
            "args": args,
            "machine": { "nproc": std::thread::available_parallelism().map_or(0, usize::from),
                         "mem_total_bytes": meminfo_total() },
            "replay": replay.as_ref().map(ReplayResult::to_json),
            "memory": memory.as_ref().map(MemoryResult::to_json),
        });
        println!("{line}");
    }
    if let Some(replay) = &replay {
        if !replay.failures.is_empty() {
            eprintln!(
                "FAILED: {} of {} clients did not recover correctly",
                replay.failures.len(),
                args.clients
            );
            std::process::exit(1);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// Node and HTTP API

fn base_config() -> Config {
    let mut config = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Config::default()
    };
    config.auth.jwt_secret = SECRET.into();
    config.api.keys = vec![API_KEY.into()];
    // Every client connects (and reconnects at once) from 127.0.0.1.
    config.limits.max_sessions_per_ip = 0;
    config.limits.handshakes_per_sec_per_ip = 0;
    config
}

/// A request body limit that fits a full batch of events with `payload` bytes of padding.
fn body_limit(payload: usize) -> usize {
    (BATCH * (payload + 128)).max(1024 * 1024)
}

/// Starts a node on the server runtime.
async fn start_node(server: &Handle, config: Config) -> anyhow::Result<RunningNode> {
    config
        .validate()
        .map_err(|e| anyhow!("bench config rejected: {e}"))?;
    server
        .spawn(async move { tidings::server::start(&config).await })
        .await?
}

async fn stop_node(server: &Handle, node: RunningNode) {
    let _ = server
        .spawn(node.shutdown(Duration::from_millis(200)))
        .await;
}

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(addr: SocketAddr) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: format!("http://{addr}"),
        }
    }

    async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(API_KEY)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        ensure!(status.is_success(), "GET {path}: {status}: {text}");
        Ok(text)
    }

    async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        Ok(serde_json::from_str(&self.get_text(path).await?)?)
    }

    async fn connections(&self) -> anyhow::Result<u64> {
        let health = self.get_json("/healthz").await?;
        health["connections"]
            .as_u64()
            .ok_or_else(|| anyhow!("no connections in /healthz: {health}"))
    }

    /// Polls `/healthz` until it reports `n` connections.
    async fn wait_connections(&self, n: u64, timeout: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            let now = self.connections().await?;
            if now == n {
                return Ok(start.elapsed());
            }
            ensure!(
                start.elapsed() < timeout,
                "/healthz connections stayed at {now}, expected {n}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Publishes a batch of event objects (JSON text each); returns `(offset, recipients)` per event.
    async fn publish_batch(&self, events: &[String]) -> anyhow::Result<Vec<(u64, u64)>> {
        let mut body =
            String::with_capacity(events.iter().map(|e| e.len() + 1).sum::<usize>() + 16);
        body.push_str(r#"{"events":["#);
        for (i, event) in events.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(event);
        }
        body.push_str("]}");
        let response = self
            .http
            .post(format!("{}/v1/publish/batch", self.base))
            .bearer_auth(API_KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        ensure!(status.is_success(), "publish batch: {status}: {text}");
        let reply: Value = serde_json::from_str(&text)?;
        let results = reply["results"]
            .as_array()
            .ok_or_else(|| anyhow!("publish batch: no results in {text}"))?;
        ensure!(
            results.len() == events.len(),
            "publish batch: {} results for {} events",
            results.len(),
            events.len()
        );
        results
            .iter()
            .map(|r| {
                let offset = r["offset"]
                    .as_str()
                    .and_then(|o| o.parse().ok())
                    .ok_or_else(|| anyhow!("bad offset in {r}"))?;
                let recipients = r["recipients"]
                    .as_u64()
                    .ok_or_else(|| anyhow!("bad recipients in {r}"))?;
                Ok((offset, recipients))
            })
            .collect()
    }
}

/// The data of event `seq`: `{"seq":seq,"pad":"xxx…"}`.
fn event_data(seq: usize, pad: &str) -> String {
    format!(r#"{{"seq":{seq},"pad":"{pad}"}}"#)
}

/// A publish request object for the batch API.
fn publish_object(room: &str, data: &str) -> String {
    format!(r#"{{"room":"{room}","event":"{EVENT}","data":{data}}}"#)
}

/// The Engine.IO text packet a client receives for an event of the main namespace with recovery on.
fn event_packet(data: &str, offset: u64) -> String {
    format!(r#"42["{EVENT}",{data},"{offset}"]"#)
}

/// The value of the sample `series` (exact name, labels included) in a Prometheus text rendering.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
}

// ---------------------------------------------------------------------------------------------------------
// Process measurements

fn open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    limit.rlim_cur
}

/// `VmRSS` of this process, in bytes.
fn rss_bytes() -> u64 {
    proc_status_kb("/proc/self/status", "VmRSS:") * 1024
}

fn meminfo_total() -> u64 {
    proc_status_kb("/proc/meminfo", "MemTotal:") * 1024
}

fn proc_status_kb(path: &str, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// User + system CPU time of the whole process.
fn process_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct passed.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPU time of the threads named `name` (nanosecond `schedstat`, else tick-granular `stat`).
fn threads_cpu(name: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    // SAFETY: sysconf has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let mut total = Duration::ZERO;
    for task in tasks.flatten() {
        let dir = task.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let schedstat = std::fs::read_to_string(dir.join("schedstat")).ok();
        if let Some(ns) = schedstat
            .as_deref()
            .and_then(|s| s.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
        {
            total += Duration::from_nanos(ns);
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // Fields after the parenthesised command: state is field 3, utime 14, stime 15.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let get = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        total += Duration::from_nanos((get(11) + get(12)) * 1_000_000_000 / ticks);
    }
    total
}

/// TcpExt counters of /proc/net/netstat that show a listen queue overflowing (system-wide).
const TCP_COUNTERS: [&str; 4] = [
    "ListenOverflows",
    "ListenDrops",
    "TCPSynRetrans",
    "TCPReqQFullDoCookies",
];

fn tcp_counters() -> [u64; 4] {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = text.lines();
    let mut found = [0; 4];
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if !names.starts_with("TcpExt:") {
            continue;
        }
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Some(i) = TCP_COUNTERS.iter().position(|c| *c == name) {
                found[i] = value.parse().unwrap_or(0);
            }
        }
    }
    found
}

/// The accept-queue size of the listening socket on `port` (`Send-Q` of `ss -ltn`), when `ss` is available.
fn listen_backlog(port: u16) -> Option<u64> {
    let output = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines().next()?.split_whitespace().nth(2)?.parse().ok()
}

/// Returns freed heap memory to the system, so that RSS shows what is live.
fn malloc_trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[derive(Clone, Copy)]
struct CpuSample {
    process: Duration,
    server: Duration,
    client: Duration,
}

impl CpuSample {
    fn now() -> CpuSample {
        CpuSample {
            process: process_cpu(),
            server: threads_cpu(SERVER_THREAD),
            client: threads_cpu(CLIENT_THREAD),
        }
    }

    fn since(self, earlier: CpuSample) -> CpuSample {
        CpuSample {
            process: self.process.saturating_sub(earlier.process),
            server: self.server.saturating_sub(earlier.server),
            client: self.client.saturating_sub(earlier.client),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ---------------------------------------------------------------------------------------------------------
// Websocket client

type Ws = WebSocketStream<TcpStream>;

/// Opens a websocket Engine.IO session and reads its open packet.
async fn ws_open(addr: SocketAddr) -> anyhow::Result<Ws> {
    let tcp = TcpStream::connect(addr).await.context("tcp connect")?;
    tcp.set_nodelay(true)?;
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp)
        .await
        .context("websocket handshake")?;
    let open = next_text(&mut ws).await?;
    ensure!(
        open.starts_with('0'),
        "expected an Engine.IO open packet, got {open:?}"
    );
    Ok(ws)
}

/// The next text frame that is not an Engine.IO ping (pings are answered).
async fn next_text(ws: &mut Ws) -> anyhow::Result<Utf8Bytes> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                if text.as_str() == "2" {
                    ws.send(Message::text("3")).await?;
                    continue;
                }
                return Ok(text);
            }
            Some(Ok(Message::Binary(data))) => {
                bail!("unexpected binary frame ({} bytes)", data.len())
            }
            Some(Ok(Message::Close(frame))) => bail!("server closed the websocket: {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(error)) => bail!("websocket error: {error}"),
            None => bail!("connection ended"),
        }
    }
}

/// A client of the replay phase between its sessions.
struct Conn {
    ws: Option<Ws>,
    token: String,
    sid: String,
    pid: String,
    /// Offset of the last event received.
    offset: Option<String>,
}

fn parse_connect_reply(text: &str) -> anyhow::Result<(String, String)> {
    let json = text
        .strip_prefix("40")
        .ok_or_else(|| anyhow!("CONNECT refused or unexpected frame: {text}"))?;
    let reply: Value = serde_json::from_str(json)?;
    let sid = reply["sid"].as_str().unwrap_or_default().to_owned();
    let pid = reply["pid"].as_str().unwrap_or_default().to_owned();
    ensure!(
        !sid.is_empty() && !pid.is_empty(),
        "CONNECT reply without sid/pid (recovery off?): {text}"
    );
    Ok((sid, pid))
}

/// Handshake, CONNECT with `token`, subscribe to [`ROOM`].
async fn join(addr: SocketAddr, token: String) -> anyhow::Result<Conn> {
    let mut ws = ws_open(addr).await?;
    ws.send(Message::text(format!(r#"40{{"token":"{token}"}}"#)))
        .await?;
    let reply = next_text(&mut ws).await?;
    let (sid, pid) = parse_connect_reply(&reply)?;
    ws.send(Message::text(format!(r#"421["subscribe","{ROOM}"]"#)))
        .await?;
    let ack = next_text(&mut ws).await?;
    ensure!(
        ack.as_str() == r#"431[{"ok":true}]"#,
        "subscribe refused: {ack}"
    );
    Ok(Conn {
        ws: Some(ws),
        token,
        sid,
        pid,
        offset: None,
    })
}

/// Reads `count` live events, keeping the last offset.
async fn read_live(conn: &mut Conn, count: usize) -> anyhow::Result<()> {
    let ws = conn.ws.as_mut().expect("connected");
    for _ in 0..count {
        let text = next_text(ws).await?;
        let items: Vec<Value> = text
            .strip_prefix("42")
            .and_then(|json| serde_json::from_str(json).ok())
            .ok_or_else(|| anyhow!("expected an event, got {text}"))?;
        let offset = items
            .get(2)
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("event without an offset: {text}"))?;
        conn.offset = Some(offset.to_owned());
    }
    Ok(())
}

/// What happened to one reconnecting client.
#[derive(Default)]
struct Outcome {
    index: usize,
    connect_at: Option<Duration>,
    complete_at: Option<Duration>,
    received: usize,
    wire_bytes: u64,
    /// Events that matched semantically but not byte for byte.
    reformatted: usize,
    extra: usize,
    error: Option<String>,
    trace: Vec<String>,
}

fn clip(text: &str) -> String {
    const MAX: usize = 160;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…(+{} bytes)", &text[..end], text.len() - end)
}

/// The offset of an event packet `42[…,"<offset>"]`.
fn trailing_offset(text: &str) -> Option<u64> {
    let body = text.strip_suffix("\"]")?;
    body[body.rfind('"')? + 1..].parse().ok()
}

/// Checks a packet of an event published during the wave: event `index` of the stream, newer than `after`;
/// returns its offset.
fn check_live(text: &str, index: usize, after: u64) -> Option<u64> {
    let items: Vec<Value> = serde_json::from_str(text.strip_prefix("42")?).ok()?;
    let offset = items.get(2)?.as_str()?.parse().ok()?;
    (items.first()?.as_str()? == EVENT
        && items.get(1)?.get("seq")?.as_u64()? == index as u64
        && offset > after)
        .then_some(offset)
}

/// Same event once parsed (tolerates a different but equivalent encoding).
fn same_event(got: &str, expected: &str) -> bool {
    let parse = |t: &str| -> Option<Value> { serde_json::from_str(t.strip_prefix("42")?).ok() };
    matches!((parse(got), parse(expected)), (Some(a), Some(b)) if a == b)
}

/// Reconnects with the parked session's pid and offset, then reads the replay. Returns the websocket once all
/// expected events arrived.
async fn recover(
    addr: SocketAddr,
    conn: &Conn,
    expected: &[String],
    total: usize,
    t0: Instant,
    gate: Option<&Semaphore>,
    out: &mut Outcome,
) -> Result<Ws, String> {
    let permit = match gate {
        Some(gate) => Some(gate.acquire().await.map_err(|e| e.to_string())?),
        None => None,
    };
    let mut ws = ws_open(addr).await.map_err(|e| format!("{e:#}"))?;
    let mut packet = format!(r#"40{{"token":"{}","pid":"{}""#, conn.token, conn.pid);
    if let Some(offset) = &conn.offset {
        let _ = write!(packet, r#","offset":"{offset}""#);
    }
    packet.push('}');
    out.trace.push(format!(
        "> {}",
        clip(&packet.replace(&conn.token, "<token>"))
    ));
    ws.send(Message::text(packet))
        .await
        .map_err(|e| format!("send CONNECT: {e}"))?;
    let reply = next_text(&mut ws).await.map_err(|e| format!("{e:#}"))?;
    out.trace.push(format!("< {}", clip(&reply)));
    out.connect_at = Some(t0.elapsed());
    drop(permit);
    let (sid, pid) = parse_connect_reply(&reply).map_err(|e| format!("{e:#}"))?;
    if sid != conn.sid {
        return Err(format!(
            "not recovered: new sid {sid} (was {}), pid {pid} (was {})",
            conn.sid, conn.pid
        ));
    }
    let mut previous: Option<Utf8Bytes> = None;
    let mut last_offset = 0;
    while out.received < total {
        let text = match next_text(&mut ws).await {
            Ok(text) => text,
            Err(e) => {
                if let Some(prev) = &previous {
                    out.trace
                        .push(format!("< [{}] {}", out.received - 1, clip(prev)));
                }
                return Err(format!("after {}/{total} events: {e:#}", out.received));
            }
        };
        if out.received >= expected.len() {
            // Published during the wave: offsets unknown in advance, order and uniqueness still checked.
            match check_live(&text, out.received, last_offset) {
                Some(offset) => last_offset = offset,
                None => {
                    if let Some(prev) = &previous {
                        out.trace
                            .push(format!("< [{}] {}", out.received - 1, clip(prev)));
                    }
                    out.trace
                        .push(format!("< [{}] {}", out.received, clip(&text)));
                    out.trace.push(format!(
                        "  expected [{}] event {EVENT} with seq {} and an offset above {last_offset}",
                        out.received, out.received
                    ));
                    return Err(format!(
                        "event {} of {total} wrong (published during the wave)",
                        out.received
                    ));
                }
            }
            out.wire_bytes += text.len() as u64;
            out.received += 1;
            previous = Some(text);
            continue;
        }
        let want = &expected[out.received];
        if text.as_str() != want.as_str() {
            if same_event(&text, want) {
                out.reformatted += 1;
            } else {
                if let Some(prev) = &previous {
                    out.trace
                        .push(format!("< [{}] {}", out.received - 1, clip(prev)));
                }
                out.trace
                    .push(format!("< [{}] {}", out.received, clip(&text)));
                out.trace
                    .push(format!("  expected [{}] {}", out.received, clip(want)));
                return Err(format!(
                    "event {} of {total} wrong (out of order, duplicate, or not an event)",
                    out.received
                ));
            }
        }
        last_offset = trailing_offset(want).unwrap_or(last_offset);
        out.wire_bytes += text.len() as u64;
        out.received += 1;
        previous = Some(text);
    }
    out.complete_at = Some(t0.elapsed());
    Ok(ws)
}

/// What every reconnecting client shares.
#[derive(Clone)]
struct Wave {
    addr: SocketAddr,
    /// The exact packets each client must receive first, in order.
    expected: Arc<Vec<String>>,
    /// Events each client must receive: `expected`, then those published during the wave.
    total: usize,
    /// When the clock started.
    t0: Instant,
    /// Time allowed to one client.
    limit: Duration,
    /// One message per client once it completed or failed.
    done: mpsc::UnboundedSender<bool>,
    /// Stops the watch for extra events.
    stop: watch::Receiver<bool>,
    /// Bounds the clients between TCP connect and CONNECT reply (`--wave-concurrency`).
    gate: Option<Arc<Semaphore>>,
}

/// One reconnecting client: recover, report completion, then watch for extra events until told to stop.
async fn reconnect(index: usize, conn: Conn, wave: Wave) -> Outcome {
    let Wave {
        addr,
        expected,
        total,
        t0,
        limit,
        done,
        mut stop,
        gate,
    } = wave;
    let mut out = Outcome {
        index,
        ..Outcome::default()
    };
    let result = tokio::time::timeout(
        limit,
        recover(addr, &conn, &expected, total, t0, gate.as_deref(), &mut out),
    )
    .await;
    let ws = match result {
        Ok(Ok(ws)) => Some(ws),
        Ok(Err(error)) => {
            out.error = Some(error);
            None
        }
        Err(_) => {
            out.error = Some(format!(
                "timed out after {limit:?} with {}/{total} events",
                out.received
            ));
            None
        }
    };
    let _ = done.send(out.error.is_none());
    let Some(mut ws) = ws else {
        return out;
    };
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    if text.as_str() == "2" {
                        let _ = ws.send(Message::text("3")).await;
                        continue;
                    }
                    out.extra += 1;
                    if out.extra <= 3 {
                        out.trace.push(format!("< [extra {}] {}", out.extra, clip(&text)));
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    out.error = Some(format!("server closed the websocket after the replay: {frame:?}"));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    out.error = Some(format!("websocket error after the replay: {error}"));
                    break;
                }
                None => {
                    out.error = Some("connection ended after the replay".into());
                    break;
                }
            },
        }
    }
    if out.extra > 0 && out.error.is_none() {
        out.error = Some(format!(
            "{} extra event(s) after all {total} expected (duplicates)",
            out.extra
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------------------------
// Replay phase

struct ReplayResult {
    clients: usize,
    events: usize,
    /// Events published during the wave (`--live-during`).
    live: usize,
    setup: Duration,
    park_detect: Duration,
    publish: Duration,
    total: Duration,
    cpu: CpuSample,
    complete_ms: Vec<f64>,
    connect_ms: Vec<f64>,
    /// From CONNECT reply to last event, per client.
    after_connect_ms: Vec<f64>,
    recovered: usize,
    wire_bytes: u64,
    reformatted: usize,
    failures: Vec<Outcome>,
    server_counters: Value,
    tcp_counters: Value,
    /// Accept queue of the node's listening socket.
    backlog: Option<u64>,
}

impl ReplayResult {
    /// Events delivered after the reconnection, over all recovered clients.
    fn replayed(&self) -> u64 {
        (self.recovered * (self.events + self.live)) as u64
    }

    fn events_per_sec(&self) -> f64 {
        (self.clients * self.events) as f64 / self.total.as_secs_f64()
    }

    fn packet_bytes(&self) -> f64 {
        self.wire_bytes as f64 / self.replayed().max(1) as f64
    }

    fn to_json(&self) -> Value {
        json!({
            "clients": self.clients,
            "events": self.events,
            "live_during": self.live,
            "recovered": self.recovered,
            "failed": self.failures.len(),
            "total_ms": ms(self.total),
            "events_per_sec": self.events_per_sec(),
            "client_complete_p10_ms": percentile(&self.complete_ms, 10.0),
            "client_complete_p50_ms": percentile(&self.complete_ms, 50.0),
            "client_complete_p90_ms": percentile(&self.complete_ms, 90.0),
            "client_complete_p99_ms": percentile(&self.complete_ms, 99.0),
            "client_complete_max_ms": percentile(&self.complete_ms, 100.0),
            "client_connect_p50_ms": percentile(&self.connect_ms, 50.0),
            "client_connect_p99_ms": percentile(&self.connect_ms, 99.0),
            "client_replay_p50_ms": percentile(&self.after_connect_ms, 50.0),
            "client_replay_p99_ms": percentile(&self.after_connect_ms, 99.0),
            "process_cpu_ms": ms(self.cpu.process),
            "server_threads_cpu_ms": ms(self.cpu.server),
            "client_threads_cpu_ms": ms(self.cpu.client),
            "server_cpu_us_per_event": ms(self.cpu.server) * 1000.0 / self.replayed().max(1) as f64,
            "packet_bytes": self.packet_bytes(),
            "replayed_mib_per_sec": self.wire_bytes as f64 / 1048576.0 / self.total.as_secs_f64(),
            "reformatted_events": self.reformatted,
            "setup_ms": ms(self.setup),
            "park_detect_ms": ms(self.park_detect),
            "publish_ms": ms(self.publish),
            "server_counters": self.server_counters,
            "tcp_counters": self.tcp_counters,
            "listen_backlog": self.backlog,
        })
    }
}

async fn replay_phase(args: &Args, server: &Handle) -> anyhow::Result<ReplayResult> {
    let (n, e, pre) = (args.clients, args.events, args.pre_events);
    ensure!(n > 0, "--clients must be at least 1");
    let mut config = base_config();
    let per_client = e + pre + args.live_during + 16;
    config.history.max_events = config.history.max_events.max(per_client);
    config.history.max_bytes = config.history.max_bytes.max(4 << 30);
    config.history.max_age_secs = config.history.max_age_secs.max(600);
    config.limits.outbox_max_messages = config.limits.outbox_max_messages.max(per_client);
    config.limits.outbox_max_bytes = config
        .limits
        .outbox_max_bytes
        .max(per_client * (args.payload + 128) * 2);
    config.limits.max_connections = config.limits.max_connections.max(n * 2);
    config.api.max_body_bytes = body_limit(args.payload);
    if e > SERVER_MAX_REPLAY {
        eprintln!(
            "warning: {e} missed events exceed the server's replay cap ({SERVER_MAX_REPLAY}); recovery will fail"
        );
    }
    let fd_needed = 2 * n as u64 + 64;
    if open_files_limit() < fd_needed {
        eprintln!(
            "warning: open-files limit {} < {fd_needed} needed for {n} clients",
            open_files_limit()
        );
    }
    let node = start_node(server, config).await?;
    let addr = node.local_addr();
    let api = Api::new(addr);
    let backlog = listen_backlog(addr.port());

    // N clients in the room.
    let tokens = (0..n)
        .map(|i| {
            tidings::auth::mint_token(
                SECRET,
                &format!("user{i}"),
                &[ROOM.to_owned()],
                &[],
                &[],
                3600,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let setup_start = Instant::now();
    let limit = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
    let joins: Vec<_> = tokens
        .into_iter()
        .map(|token| {
            let limit = limit.clone();
            tokio::spawn(async move {
                let _permit = limit.acquire_owned().await?;
                join(addr, token).await
            })
        })
        .collect();
    let mut conns = Vec::with_capacity(n);
    for (i, handle) in joins.into_iter().enumerate() {
        conns.push(handle.await?.with_context(|| format!("client {i} setup"))?);
    }
    api.wait_connections(n as u64, Duration::from_secs(30))
        .await?;
    let room = api.get_json(&format!("/v1/rooms/{ROOM}")).await?;
    ensure!(
        room["members"].as_u64() == Some(n as u64),
        "room has {} members, expected {n}",
        room["members"]
    );
    if pre > 0 {
        let live: Vec<String> = (0..pre)
            .map(|j| publish_object(ROOM, &format!(r#"{{"live":{j}}}"#)))
            .collect();
        for (offset, recipients) in api.publish_batch(&live).await? {
            ensure!(
                recipients == n as u64,
                "live event {offset} reached {recipients} of {n} clients"
            );
        }
        let reads: Vec<_> = conns
            .into_iter()
            .map(|mut conn| {
                tokio::spawn(async move {
                    read_live(&mut conn, pre).await?;
                    anyhow::Ok(conn)
                })
            })
            .collect();
        conns = Vec::with_capacity(n);
        for (i, handle) in reads.into_iter().enumerate() {
            conns.push(
                handle
                    .await?
                    .with_context(|| format!("client {i} live events"))?,
            );
        }
    }
    let setup = setup_start.elapsed();

    // Drop every TCP connection: no websocket close frame, no Socket.IO disconnect.
    for conn in &mut conns {
        drop(conn.ws.take());
    }
    let park_detect = api.wait_connections(0, Duration::from_secs(30)).await?;

    // Publish what they miss.
    let pad = "x".repeat(args.payload);
    let publish_start = Instant::now();
    let mut expected = Vec::with_capacity(e);
    for start in (0..e).step_by(BATCH) {
        let datas: Vec<String> = (start..(start + BATCH).min(e))
            .map(|seq| event_data(seq, &pad))
            .collect();
        let objects: Vec<String> = datas.iter().map(|d| publish_object(ROOM, d)).collect();
        let results = api.publish_batch(&objects).await?;
        for (data, (offset, recipients)) in datas.iter().zip(results) {
            ensure!(
                recipients == 0,
                "event at offset {offset} was delivered live to {recipients} clients: sessions not parked"
            );
            expected.push(event_packet(data, offset));
        }
    }
    let publish = publish_start.elapsed();
    let expected = Arc::new(expected);
    let live = args.live_during;

    // The timed part: everyone reconnects at once.
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let tcp0 = tcp_counters();
    let cpu0 = CpuSample::now();
    let wave = Wave {
        addr,
        expected,
        total: e + live,
        t0: Instant::now(),
        limit: Duration::from_secs(args.timeout_secs),
        done: done_tx,
        stop: stop_rx,
        gate: (args.wave_concurrency > 0).then(|| Arc::new(Semaphore::new(args.wave_concurrency))),
    };
    let t0 = wave.t0;
    let publisher = (live > 0).then(|| {
        let (api, pad) = (api.clone(), pad.clone());
        let interval = Duration::from_millis(args.live_interval_ms);
        tokio::spawn(async move {
            for seq in e..e + live {
                api.publish_batch(&[publish_object(ROOM, &event_data(seq, &pad))])
                    .await?;
                tokio::time::sleep(interval).await;
            }
            anyhow::Ok(())
        })
    });
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, conn)| tokio::spawn(reconnect(i, conn, wave.clone())))
        .collect();
    drop(wave);
    let mut finished = 0;
    while finished < n {
        match done_rx.recv().await {
            Some(_) => finished += 1,
            None => break,
        }
    }
    let all_done = t0.elapsed();
    let cpu = CpuSample::now().since(cpu0);
    let tcp1 = tcp_counters();
    let mut tcp = serde_json::Map::new();
    for (i, name) in TCP_COUNTERS.iter().enumerate() {
        tcp.insert((*name).to_owned(), tcp1[i].saturating_sub(tcp0[i]).into());
    }
    tokio::time::sleep(GRACE).await;
    let _ = stop_tx.send(true);
    if let Some(publisher) = publisher {
        publisher.await?.context("publishing during the wave")?;
    }
    let mut outcomes = Vec::with_capacity(n);
    for (i, task) in tasks.into_iter().enumerate() {
        outcomes.push(task.await.unwrap_or_else(|e| Outcome {
            index: i,
            error: Some(format!("client task failed: {e}")),
            ..Outcome::default()
        }));
    }
    let metrics = api.get_text("/metrics").await.unwrap_or_default();
    let mut counters = serde_json::Map::new();
    for line in metrics.lines() {
        if line.starts_with("tidings_recoveries_") || line.starts_with("tidings_events_replayed") {
            if let Some((name, value)) = line.rsplit_once(' ') {
                counters.insert(
                    name.to_owned(),
                    value.parse::<f64>().unwrap_or(f64::NAN).into(),
                );
            }
        }
    }
    stop_node(server, node).await;

    let mut complete_ms: Vec<f64> = outcomes
        .iter()
        .filter(|o| o.error.is_none())
        .filter_map(|o| o.complete_at.map(ms))
        .collect();
    complete_ms.sort_by(f64::total_cmp);
    let mut connect_ms: Vec<f64> = outcomes
        .iter()
        .filter_map(|o| o.connect_at.map(ms))
        .collect();
    connect_ms.sort_by(f64::total_cmp);
    let mut after_connect_ms: Vec<f64> = outcomes
        .iter()
        .filter(|o| o.error.is_none())
        .filter_map(|o| Some(ms(o.complete_at?.saturating_sub(o.connect_at?))))
        .collect();
    after_connect_ms.sort_by(f64::total_cmp);
    let total = outcomes
        .iter()
        .filter_map(|o| o.complete_at)
        .max()
        .unwrap_or(all_done);
    let wire_bytes = outcomes
        .iter()
        .filter(|o| o.error.is_none())
        .map(|o| o.wire_bytes)
        .sum();
    let reformatted = outcomes.iter().map(|o| o.reformatted).sum();
    let failures: Vec<Outcome> = outcomes.into_iter().filter(|o| o.error.is_some()).collect();
    Ok(ReplayResult {
        clients: n,
        events: e,
        live,
        setup,
        park_detect,
        publish,
        total,
        cpu,
        recovered: n - failures.len(),
        complete_ms,
        connect_ms,
        after_connect_ms,
        wire_bytes,
        reformatted,
        failures,
        server_counters: Value::Object(counters),
        tcp_counters: Value::Object(tcp),
        backlog,
    })
}

// ---------------------------------------------------------------------------------------------------------
// History memory phase

struct MemoryResult {
    events: usize,
    rooms: usize,
    publish: Duration,
    rss_before: u64,
    rss_after: u64,
    /// After `malloc_trim`: freed heap returned to the system.
    rss_trimmed: u64,
    /// Net heap bytes requested while publishing (allocator overhead excluded).
    heap_bytes: i64,
    /// Net heap blocks allocated while publishing.
    heap_blocks: i64,
    /// Block sizes holding most of the growth, with their net block counts.
    heap_sizes: Vec<(usize, i64)>,
    accounted: u64,
    packet_bytes: u64,
}

impl MemoryResult {
    fn rss_per_event(&self) -> f64 {
        self.rss_after.saturating_sub(self.rss_before) as f64 / self.events as f64
    }

    fn rss_trimmed_per_event(&self) -> f64 {
        self.rss_trimmed.saturating_sub(self.rss_before) as f64 / self.events as f64
    }

    fn accounted_per_event(&self) -> f64 {
        self.accounted as f64 / self.events as f64
    }

    fn packet_per_event(&self) -> f64 {
        self.packet_bytes as f64 / self.events as f64
    }

    fn to_json(&self) -> Value {
        json!({
            "events": self.events,
            "rooms": self.rooms,
            "publish_ms": ms(self.publish),
            "publish_events_per_sec": self.events as f64 / self.publish.as_secs_f64(),
            "rss_before_bytes": self.rss_before,
            "rss_after_bytes": self.rss_after,
            "rss_bytes_per_event": self.rss_per_event(),
            "rss_trimmed_bytes": self.rss_trimmed,
            "rss_trimmed_bytes_per_event": self.rss_trimmed_per_event(),
            "heap_bytes_per_event": self.heap_bytes as f64 / self.events as f64,
            "heap_blocks_per_event": self.heap_blocks as f64 / self.events as f64,
            "heap_blocks_by_size": self.heap_sizes.iter()
                .map(|(size, n)| json!({"size": size, "per_event": *n as f64 / self.events as f64}))
                .collect::<Vec<_>>(),
            "accounted_bytes": self.accounted,
            "accounted_bytes_per_event": self.accounted_per_event(),
            "packet_bytes_per_event": self.packet_per_event(),
        })
    }
}

/// Waits until the history gauges (refreshed by the node's sweep, once a second) show `events`; returns the
/// accounted bytes.
async fn history_gauges(api: &Api, events: u64) -> anyhow::Result<u64> {
    let start = Instant::now();
    loop {
        let text = api.get_text("/metrics").await?;
        let held = metric(&text, "tidings_history_events");
        if held == Some(events as f64) {
            let bytes = metric(&text, "tidings_history_bytes")
                .ok_or_else(|| anyhow!("no tidings_history_bytes in /metrics"))?;
            return Ok(bytes as u64);
        }
        ensure!(
            start.elapsed() < Duration::from_secs(10),
            "tidings_history_events is {held:?}, expected {events}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn memory_phase(args: &Args, server: &Handle) -> anyhow::Result<MemoryResult> {
    let (m, rooms) = (args.history_events, args.history_rooms.max(1));
    ensure!(m > 0, "--history-events must be at least 1");
    let mut config = base_config();
    config.history.max_events = m.max(BATCH);
    config.history.max_bytes = 64 << 30;
    config.history.max_age_secs = 3600;
    config.api.max_body_bytes = body_limit(args.payload);
    let node = start_node(server, config).await?;
    let api = Api::new(node.local_addr());
    let pad = "x".repeat(args.payload);

    // Warm up the HTTP path and the allocator with one batch in a room of its own.
    let warmup: Vec<String> = (0..BATCH)
        .map(|i| publish_object("warmup", &event_data(i, &pad)))
        .collect();
    api.publish_batch(&warmup).await?;
    let accounted_before = history_gauges(&api, BATCH as u64).await?;
    malloc_trim();
    let rss_before = rss_bytes();

    heap_count_start();
    let start = Instant::now();
    let mut packet_bytes = 0u64;
    for first in (0..m).step_by(BATCH) {
        let datas: Vec<(usize, String)> = (first..(first + BATCH).min(m))
            .map(|i| (i % rooms, event_data(i, &pad)))
            .collect();
        let objects: Vec<String> = datas
            .iter()
            .map(|(room, data)| publish_object(&format!("h{room}"), data))
            .collect();
        let results = api.publish_batch(&objects).await?;
        for ((_, data), (offset, _)) in datas.iter().zip(results) {
            packet_bytes += event_packet(data, offset).len() as u64;
        }
    }
    let publish = start.elapsed();
    let (heap_bytes, heap_blocks, heap_sizes) = heap_count_stop();
    let rss_after = rss_bytes();
    let accounted_after = history_gauges(&api, (BATCH + m) as u64).await?;
    malloc_trim();
    let rss_trimmed = rss_bytes();

    // The events are really there: room h0 holds every event i with i % rooms == 0.
    let in_h0 = m.div_ceil(rooms);
    let page = api
        .get_json(&format!("/v1/rooms/h0/history?limit={}", in_h0.min(1000)))
        .await?;
    let got = page["events"].as_array().map_or(0, Vec::len);
    ensure!(
        page["complete"] == Value::Bool(true) && got == in_h0.min(1000),
        "room h0 history: complete={} with {got} events, expected {}",
        page["complete"],
        in_h0.min(1000)
    );
    stop_node(server, node).await;
    Ok(MemoryResult {
        events: m,
        rooms,
        publish,
        rss_before,
        rss_after,
        rss_trimmed,
        heap_bytes,
        heap_blocks,
        heap_sizes,
        accounted: accounted_after.saturating_sub(accounted_before),
        packet_bytes,
    })
}

// ---------------------------------------------------------------------------------------------------------
// Report

fn print_table(args: &Args, replay: Option<&ReplayResult>, memory: Option<&MemoryResult>) {
    let row = |name: &str, value: String| println!("  {name:<38} {value}");
    println!(
        "tidings recovery bench: {} cores, server runtime {} threads, client runtime {} threads",
        std::thread::available_parallelism().map_or(0, usize::from),
        args.server_threads,
        args.client_threads
    );
    if let Some(r) = replay {
        println!(
            "Replay: {} clients x {} events, payload {} B, {} live event(s) before the drop, reconnecting {}",
            r.clients,
            r.events,
            args.payload,
            args.pre_events,
            match args.wave_concurrency {
                0 => "all at once".to_owned(),
                k => format!("at most {k} at a time"),
            }
        );
        if r.live > 0 {
            row(
                "published during the wave (seam check)",
                format!("{} events (each client must get E + {})", r.live, r.live),
            );
        }
        row(
            "recovered (same sid, all events)",
            format!("{}/{}", r.recovered, r.clients),
        );
        row(
            "replay time (all clients)",
            format!("{:.0} ms", ms(r.total)),
        );
        row(
            "events replayed / s (N*E/time)",
            format!("{:.0}", r.events_per_sec()),
        );
        row(
            "per-client complete p50 / p99 / max",
            format!(
                "{:.0} / {:.0} / {:.0} ms",
                percentile(&r.complete_ms, 50.0),
                percentile(&r.complete_ms, 99.0),
                percentile(&r.complete_ms, 100.0)
            ),
        );
        row(
            "per-client CONNECT reply p50 / p99",
            format!(
                "{:.0} / {:.0} ms",
                percentile(&r.connect_ms, 50.0),
                percentile(&r.connect_ms, 99.0)
            ),
        );
        row(
            "per-client CONNECT reply to last event p50 / p99",
            format!(
                "{:.1} / {:.1} ms",
                percentile(&r.after_connect_ms, 50.0),
                percentile(&r.after_connect_ms, 99.0)
            ),
        );
        row(
            "CPU process (upper bound)",
            format!("{:.0} ms", ms(r.cpu.process)),
        );
        row(
            "CPU server threads / client threads",
            format!("{:.0} / {:.0} ms", ms(r.cpu.server), ms(r.cpu.client)),
        );
        row(
            "server CPU per replayed event",
            format!(
                "{:.2} us",
                ms(r.cpu.server) * 1000.0 / r.replayed().max(1) as f64
            ),
        );
        row(
            "event packet on the wire",
            format!(
                "{:.0} B ({:.1} MiB/s replayed)",
                r.packet_bytes(),
                r.wire_bytes as f64 / 1048576.0 / r.total.as_secs_f64()
            ),
        );
        row(
            "setup / park detect / publish",
            format!(
                "{:.0} / {:.0} / {:.0} ms",
                ms(r.setup),
                ms(r.park_detect),
                ms(r.publish)
            ),
        );
        row("server counters", r.server_counters.to_string());
        row(
            "kernel TCP counters during the wave",
            format!(
                "{} (listen backlog {})",
                r.tcp_counters,
                r.backlog.map_or("?".to_owned(), |b| b.to_string())
            ),
        );
        if r.reformatted > 0 {
            row(
                "events equivalent but not byte-equal",
                r.reformatted.to_string(),
            );
        }
        for failure in r.failures.iter().take(5) {
            println!(
                "  FAIL client {}: {}",
                failure.index,
                failure.error.as_deref().unwrap_or("?")
            );
            for line in &failure.trace {
                println!("      {line}");
            }
        }
        if r.failures.len() > 5 {
            println!("  … and {} more failures", r.failures.len() - 5);
        }
    }
    if let Some(m) = memory {
        println!(
            "History memory: {} events in {} rooms, payload {} B, no clients",
            m.events, m.rooms, args.payload
        );
        row(
            "publish (batch API)",
            format!(
                "{:.0} ms ({:.0} events/s)",
                ms(m.publish),
                m.events as f64 / m.publish.as_secs_f64()
            ),
        );
        row(
            "RSS before / after",
            format!(
                "{:.1} / {:.1} MiB",
                m.rss_before as f64 / 1048576.0,
                m.rss_after as f64 / 1048576.0
            ),
        );
        row(
            "RSS per stored event",
            format!("{:.0} B", m.rss_per_event()),
        );
        row(
            "RSS per stored event after malloc_trim",
            format!("{:.0} B", m.rss_trimmed_per_event()),
        );
        row(
            "heap requested per stored event",
            format!(
                "{:.0} B in {:.2} blocks",
                m.heap_bytes as f64 / m.events as f64,
                m.heap_blocks as f64 / m.events as f64
            ),
        );
        row(
            "retained blocks per event, by size",
            m.heap_sizes
                .iter()
                .map(|(size, n)| format!("{size} B x {:.2}", *n as f64 / m.events as f64))
                .collect::<Vec<_>>()
                .join(", "),
        );
        row(
            "accounted per stored event",
            format!("{:.0} B", m.accounted_per_event()),
        );
        row(
            "encoded event packet",
            format!("{:.0} B", m.packet_per_event()),
        );
    }
}
