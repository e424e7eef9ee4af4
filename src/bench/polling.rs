//! Long-polling bench clients: the same Socket.IO client as over websocket, carried by Engine.IO HTTP
//! long-polling (a GET that waits for packets, POSTs for what the client sends) over pooled keep-alive
//! connections.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use super::client::{micros, Shared};
use super::plan::Plan;
use super::session::{Hello, SioClient, Step};
use super::stats::Recorder;
use super::sys::unix_micros;
use crate::engineio::payload::SEPARATOR;

/// Largest polling body the bench reads.
const MAX_BODY: usize = 16 << 20;

/// An HTTP client with its connection pool.
type Http = Client<HttpConnector, Body>;

/// HTTP clients for the long-polling clients: one per source address (connections bind to it).
pub struct PollingHttp {
    clients: Vec<Http>,
    /// Close requests of stopped clients still under way.
    closing: Arc<AtomicUsize>,
}

impl PollingHttp {
    /// Clients for `plan`'s source addresses; none when no client polls.
    pub fn new(plan: &Plan) -> PollingHttp {
        if plan.polling_share <= 0.0 {
            return PollingHttp {
                clients: Vec::new(),
                closing: Arc::default(),
            };
        }
        let sources = plan.source_ips.unwrap_or(1);
        let clients = (0..sources)
            .map(|n| {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                if plan.source_ips.is_some() {
                    connector.set_local_address(Some(IpAddr::V4(super::sys::loopback_source(n))));
                }
                Client::builder(TokioExecutor::new()).build(connector)
            })
            .collect();
        PollingHttp {
            clients,
            closing: Arc::default(),
        }
    }

    /// Waits (at most `limit`) until the close requests of stopped clients were answered.
    pub async fn closed(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.closing.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The client for connections from `source`.
    fn for_source(&self, source: Option<Ipv4Addr>) -> Option<&Http> {
        let index = source.map_or(0, |ip| {
            (u32::from(ip) - u32::from(Ipv4Addr::new(127, 0, 0, 1))) as usize
        });
        self.clients.get(index).or(self.clients.first())
    }
}

/// One long-polling client from handshake to disconnect.
pub async fn run_client(j: usize, shared: Arc<Shared>) {
    let recorder = &shared.recorder;
    let room = shared.plan.room_of(j);
    let started = Instant::now();
    let opening = Box::pin(PollConn::open(j, &shared));
    let mut conn = match tokio::time::timeout(shared.plan.connect_timeout, opening).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(reason)) => return recorder.failed(&reason, unix_micros()),
        Err(_) => return recorder.failed("connect timeout", unix_micros()),
    };
    recorder.connected(room, micros(started.elapsed()), unix_micros());
    let reason = loop {
        if let Err(reason) = conn.poll(recorder).await {
            break reason;
        }
    };
    recorder.disconnected(room, &reason);
}

/// An Engine.IO polling session speaking Socket.IO.
struct PollConn {
    http: Http,
    /// `http://host/path?EIO=4&transport=polling&sid=…`.
    url: String,
    session: SioClient,
    closing: Arc<AtomicUsize>,
}

impl Drop for PollConn {
    /// A polling session has no connection whose end the server would notice: tell it the client is gone
    /// (best effort), rather than leave the session to the ping timeout and to later runs' fan-out.
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (http, url) = (self.http.clone(), std::mem::take(&mut self.url));
        let closing = self.closing.clone();
        closing.fetch_add(1, Ordering::AcqRel);
        runtime.spawn(async move {
            // The server finishes a client-closed session on the next poll, which it answers at once.
            if request(&http, Method::POST, &url, Body::from("1"))
                .await
                .is_ok()
            {
                let poll = request(&http, Method::GET, &url, Body::empty());
                let _ = tokio::time::timeout(Duration::from_secs(2), poll).await;
            }
            closing.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

impl PollConn {
    /// Opens the session and runs the Socket.IO handshake until the subscribe ack.
    async fn open(j: usize, shared: &Shared) -> Result<PollConn, String> {
        let plan = &shared.plan;
        let target = plan.target_of(j);
        let http = shared
            .polling
            .for_source(plan.source_of(j))
            .ok_or("polling: no HTTP client")?
            .clone();
        let token = plan.token_for(j).map_err(|e| format!("token: {e}"))?;
        let hello = Hello::new(&plan.room_name(plan.room_of(j)), token.as_deref());
        let base = format!(
            "http://{}{}?EIO=4&transport=polling",
            target.authority, target.path
        );
        let body = request(&http, Method::GET, &base, Body::empty()).await?;
        let open = body
            .split(|&b| b == SEPARATOR)
            .next()
            .and_then(|p| p.strip_prefix(b"0"))
            .ok_or("polling: no open packet")?;
        let sid = serde_json::from_slice::<serde_json::Value>(open)
            .ok()
            .and_then(|v| v.get("sid")?.as_str().map(str::to_owned))
            .ok_or("polling: open packet without sid")?;
        let mut conn = PollConn {
            http,
            url: format!("{base}&sid={sid}"),
            session: SioClient::new(hello),
            closing: shared.polling.closing.clone(),
        };
        conn.handle(&body, &shared.recorder).await?;
        while !conn.session.is_live() {
            conn.poll(&shared.recorder).await?;
        }
        Ok(conn)
    }

    /// One long-poll: waits for packets and handles them.
    async fn poll(&mut self, recorder: &Recorder) -> Result<(), String> {
        let body = request(&self.http, Method::GET, &self.url, Body::empty()).await?;
        self.handle(&body, recorder).await
    }

    /// Hands every packet of a polling body to the Socket.IO client and POSTs its replies.
    async fn handle(&mut self, body: &[u8], recorder: &Recorder) -> Result<(), String> {
        let now_us = unix_micros();
        let mut replies = Vec::new();
        for packet in body.split(|&b| b == SEPARATOR) {
            match self
                .session
                .on_packet(packet, now_us, recorder, &mut replies)
            {
                Step::Continue | Step::Live => {}
                Step::Failed(reason) => return Err(reason),
                Step::Closed(reason) => return Err(reason.to_owned()),
            }
        }
        if replies.is_empty() {
            return Ok(());
        }
        let body = replies.join("\u{1e}");
        request(&self.http, Method::POST, &self.url, Body::from(body)).await?;
        Ok(())
    }
}

/// Sends one request; the body of a 200 answer, else the reason.
async fn request(http: &Http, method: Method, url: &str, body: Body) -> Result<Bytes, String> {
    let request = Request::builder()
        .method(method)
        .uri(url)
        .header(http::header::CONTENT_TYPE, "text/plain;charset=UTF-8")
        .body(body)
        .map_err(|e| format!("polling request: {e}"))?;
    let response = http
        .request(request)
        .await
        .map_err(|e| format!("polling: {}", error_chain_root(&e)))?;
    let status = response.status();
    let body = axum::body::to_bytes(Body::new(response.into_body()), MAX_BODY)
        .await
        .map_err(|e| format!("polling body: {e}"))?;
    if status != StatusCode::OK {
        return Err(format!("polling: HTTP {}", status.as_u16()));
    }
    Ok(body)
}

/// The innermost cause of an error (hyper's outer messages say little).
pub(super) fn error_chain_root(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(source) = inner.source() {
        inner = source;
    }
    inner.to_string()
}
