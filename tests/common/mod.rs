//! Shared helpers for the integration tests: an in-process node, tokens, and the clients in the submodules
//! (a Socket.IO-over-websocket client built on tokio-tungstenite, a raw websocket client for byte-level abuse,
//! the HTTP API and a long-polling client).
//!
//! Each test binary uses a subset of these, hence the `dead_code` and `unused_imports` allowances.
#![allow(dead_code, unused_imports)]

pub mod dm;
mod http;
mod process;
mod raw_ws;
mod redis;
mod ws;

pub use self::redis::{unique_prefix, RedisServer};
pub use http::{Api, Polling};
pub use process::DataDirNode;
pub use raw_ws::{RawWs, ServerFrame};
pub use ws::{Frame, WsClient};

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use tidings::config::Config;
use tidings::server::RunningNode;

/// HS256 secret of every test node.
pub const SECRET: &str = "integration-test-jwt-secret-0123456789abcdef";
/// API key of every test node.
pub const API_KEY: &str = "integration-test-api-key-0123456789";
/// Default wait for something that should happen promptly.
pub const WAIT: Duration = Duration::from_secs(3);

/// The config every test starts from: random port, known secrets.
pub fn test_config() -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    config.auth.jwt_secret = SECRET.into();
    config.api.keys = vec![API_KEY.into()];
    config
}

/// A node owned by its own thread for the whole process, built before any test's node.
///
/// `tidings::server::build` installs the global metrics recorder for the first node built in the process only;
/// later nodes answer `/metrics` with 404. Building this node first (every [`start`] goes through it) gives each
/// test binary one node whose `/metrics` renders the process-wide recorder, i.e. the metrics of every node.
pub fn metrics_node() -> SocketAddr {
    static NODE: OnceLock<SocketAddr> = OnceLock::new();
    *NODE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let running = tidings::server::start(&test_config()).await.unwrap();
                tx.send(running.local_addr()).unwrap();
                std::future::pending::<()>().await;
            });
        });
        rx.recv().unwrap()
    })
}

/// Starts a node with [`test_config`] adjusted by `tweak`.
pub async fn start(tweak: impl FnOnce(&mut Config)) -> RunningNode {
    metrics_node();
    let mut config = test_config();
    tweak(&mut config);
    tidings::server::start(&config).await.unwrap()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// A token for `sub` with the given `rooms`, `join` and `publish` claims, valid for an hour.
pub fn token(sub: &str, rooms: &[&str], join: &[&str], publish: &[&str]) -> String {
    tidings::auth::mint_token(
        SECRET,
        sub,
        &strings(rooms),
        &strings(join),
        &strings(publish),
        3600,
    )
    .unwrap()
}

/// The Socket.IO CONNECT packet `40{"token":…}`.
pub fn connect_packet(token: &str) -> String {
    format!("40{}", serde_json::json!({ "token": token }))
}

/// A `42["name",data,"offset"]` frame, split up.
#[derive(Debug, Clone, PartialEq)]
pub struct EventFrame {
    /// Event name.
    pub name: String,
    /// First argument.
    pub data: Value,
    /// Trailing offset string, when the event carries one.
    pub offset: Option<String>,
}

/// Parses an event frame of the main namespace; `None` for any other frame.
pub fn parse_event(text: &str) -> Option<EventFrame> {
    let json = text.strip_prefix("42")?;
    if !json.starts_with('[') {
        return None;
    }
    let items: Vec<Value> = serde_json::from_str(json).ok()?;
    let name = items.first()?.as_str()?.to_owned();
    let data = items.get(1).cloned().unwrap_or(Value::Null);
    let offset = items.get(2).and_then(Value::as_str).map(str::to_owned);
    Some(EventFrame { name, data, offset })
}

/// The value of a Prometheus sample `name{labels}` (or `name` alone) in `text`, 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
        .unwrap_or(0.0)
}

/// The rendered `/metrics` of the process (see [`metrics_node`]).
pub async fn process_metrics() -> String {
    let api = Api::new(metrics_node());
    let (status, text) = api.get_text("/metrics").await;
    assert_eq!(status, 200, "{text}");
    text
}

/// The resident set size of this process, in bytes.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("no VmRSS");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}
