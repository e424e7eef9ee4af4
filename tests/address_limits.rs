//! Per-address limits over real sockets: a flood of handshakes from one loopback address (127.0.0.2) is refused
//! with 429 past its limits while a client from another address (127.0.0.1 or 127.0.0.3) connects and receives
//! a publish; the connect deadline gives a silent session's place back; forwarding headers count only from a
//! trusted proxy; a POST body for an unknown session is never waited for.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::{metric, process_metrics, start, token, Api, WsClient, WAIT};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const FLOODER: &str = "127.0.0.2";
const OTHER: &str = "127.0.0.3";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A polling handshake from `from` with extra headers; the status and the body.
async fn polling_handshake(
    addr: SocketAddr,
    from: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let http = reqwest::Client::builder()
        .local_address(ip(from))
        .build()
        .unwrap();
    let mut request = http.get(format!("http://{addr}/socket.io/?EIO=4&transport=polling"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// A TCP connection to `addr` from `from`.
async fn connect_from(addr: SocketAddr, from: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(ip(from), 0)).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Writes `request` on `stream` and reads the response head (and what came with it).
async fn exchange(stream: &mut TcpStream, request: &str) -> String {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
            .await
            .expect("no response in time")
            .unwrap();
        buf.extend_from_slice(&chunk[..n]);
        if n == 0 || buf.windows(4).any(|w| w == b"\r\n\r\n") {
            return String::from_utf8_lossy(&buf).into_owned();
        }
    }
}

/// A websocket handshake from `from`; the response's status line.
async fn websocket_handshake_status(addr: SocketAddr, from: &str) -> String {
    let mut stream = connect_from(addr, from).await;
    let head = exchange(
        &mut stream,
        &format!(
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ),
    )
    .await;
    head.lines().next().unwrap_or("").to_owned()
}

async fn refused(reason: &str) -> f64 {
    let text = process_metrics().await;
    metric(
        &text,
        &format!("tidings_connections_refused_total{{reason=\"{reason}\"}}"),
    )
}

/// A websocket client from 127.0.0.1 joins `news` and receives a publish.
async fn bystander_receives_a_publish(addr: SocketAddr) {
    let api = Api::new(addr);
    let (mut bystander, _) = WsClient::connect(addr, &token("bob", &[], &["news"], &[])).await;
    api.publish("news", "update", json!({ "n": 1 })).await;
    bystander
        .recv_event_with("update", "n", &json!(1), WAIT)
        .await;
}

/// The headline case: a flood of bare polling handshakes from one address no longer fills the node. Before the
/// per-address limit it took all `max_connections` places and every other client got 503.
#[tokio::test]
async fn a_handshake_flood_from_one_address_leaves_room_for_everyone_else() {
    let node = start(|c| {
        c.limits.max_connections = 10;
        c.limits.max_sessions_per_ip = 5;
    })
    .await;
    let addr = node.local_addr();
    let before = refused("max_sessions_per_ip").await;
    let mut statuses = Vec::new();
    for _ in 0..30 {
        let (status, body) = polling_handshake(addr, FLOODER, &[]).await;
        if status == 429 {
            let error: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(error["code"], 4, "{body}");
            assert!(
                error["message"]
                    .as_str()
                    .unwrap()
                    .contains("too many sessions"),
                "{body}"
            );
        }
        statuses.push(status);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 5);
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 25);
    // The websocket handshake is refused before the upgrade, with the same status.
    let status = websocket_handshake_status(addr, FLOODER).await;
    assert!(status.starts_with("HTTP/1.1 429"), "{status}");
    assert!(refused("max_sessions_per_ip").await >= before + 26.0);
    // Everyone else still gets in: a polling client from another address, and a websocket client.
    let (status, body) = polling_handshake(addr, OTHER, &[]).await;
    assert_eq!(status, 200, "{body}");
    bystander_receives_a_publish(addr).await;
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn handshakes_per_second_per_address_are_rate_limited() {
    let node = start(|c| {
        c.limits.max_sessions_per_ip = 0;
        c.limits.handshakes_per_sec_per_ip = 1;
        c.limits.handshake_burst_per_ip = 3;
    })
    .await;
    let addr = node.local_addr();
    let before = refused("handshakes_per_sec_per_ip").await;
    for _ in 0..3 {
        assert_eq!(polling_handshake(addr, FLOODER, &[]).await.0, 200);
    }
    let (status, body) = polling_handshake(addr, FLOODER, &[]).await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("too many handshakes"), "{body}");
    let status = websocket_handshake_status(addr, FLOODER).await;
    assert!(status.starts_with("HTTP/1.1 429"), "{status}");
    assert!(refused("handshakes_per_sec_per_ip").await >= before + 2.0);
    assert_eq!(polling_handshake(addr, OTHER, &[]).await.0, 200);
    bystander_receives_a_publish(addr).await;
    node.shutdown(Duration::from_millis(200)).await;
}

/// A session that never connects a namespace is closed at the connect deadline and gives its address's place
/// back.
#[tokio::test]
async fn the_connect_deadline_frees_a_silent_sessions_place() {
    let node = start(|c| {
        c.engine.connect_timeout_ms = 300;
        c.limits.max_sessions_per_ip = 1;
    })
    .await;
    let addr = node.local_addr();
    let api = Api::new(addr);
    assert_eq!(polling_handshake(addr, FLOODER, &[]).await.0, 200);
    assert_eq!(polling_handshake(addr, FLOODER, &[]).await.0, 429);
    // A websocket session that says nothing is closed too.
    let mut silent = common::RawWs::handshake(addr).await;
    api.wait_connections(0, WAIT).await;
    assert_eq!(silent.expect_closed(WAIT).await, Some(1000));
    assert_eq!(polling_handshake(addr, FLOODER, &[]).await.0, 200);
    node.shutdown(Duration::from_millis(200)).await;
}

/// `X-Forwarded-For` and `Forwarded` name the client only when the peer is a trusted proxy.
#[tokio::test]
async fn forwarding_headers_count_only_from_trusted_proxies() {
    let node = start(|c| {
        c.limits.max_sessions_per_ip = 1;
        c.limits.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    let addr = node.local_addr();
    let proxied = |client: &'static str| [("x-forwarded-for", client)];
    // From the trusted proxy: each forwarded client has its own count (the proxy itself is not counted).
    let spoofed_then_real = [("x-forwarded-for", "203.0.113.50, 198.51.100.1")];
    assert_eq!(
        polling_handshake(addr, "127.0.0.1", &spoofed_then_real)
            .await
            .0,
        200
    );
    assert_eq!(
        polling_handshake(addr, "127.0.0.1", &proxied("198.51.100.1"))
            .await
            .0,
        429
    );
    assert_eq!(
        polling_handshake(addr, "127.0.0.1", &proxied("198.51.100.2"))
            .await
            .0,
        200
    );
    let forwarded = [("forwarded", "for=\"[2001:db8::1]:4711\"")];
    assert_eq!(
        polling_handshake(addr, "127.0.0.1", &forwarded).await.0,
        200
    );
    // Same /64: the same count.
    let same_prefix = [("forwarded", "for=\"[2001:db8::ffff:2]\"")];
    assert_eq!(
        polling_handshake(addr, "127.0.0.1", &same_prefix).await.0,
        429
    );
    // From an untrusted peer the headers are ignored: the peer is the client.
    assert_eq!(
        polling_handshake(addr, FLOODER, &proxied("198.51.100.3"))
            .await
            .0,
        200
    );
    assert_eq!(
        polling_handshake(addr, FLOODER, &proxied("198.51.100.4"))
            .await
            .0,
        429
    );
    node.shutdown(Duration::from_millis(200)).await;
}

/// A POST announcing a large body for a session that does not exist is answered at once, without waiting for
/// (or allocating) the body, and the connection is closed.
#[tokio::test]
async fn a_post_for_an_unknown_session_is_answered_without_its_body() {
    let node = start(|_| {}).await;
    let addr = node.local_addr();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = exchange(
        &mut stream,
        "POST /socket.io/?EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAAAAAA HTTP/1.1\r\nHost: x\r\n\
         Content-Type: text/plain\r\nContent-Length: 900000\r\n\r\n4",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(WAIT, stream.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the connection stays open");
    bystander_receives_a_publish(addr).await;
    node.shutdown(Duration::from_millis(200)).await;
}
