//! The wire protocol as a Socket.IO client sees it: handshake, CONNECT replies and errors, event offsets,
//! heartbeat, graceful shutdown, client events and connection state recovery.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{
    connect_packet, parse_event, start, token, Api, EventFrame, Polling, WsClient, SECRET, WAIT,
};
use serde_json::{json, Value};
use tokio::time::Instant;

fn news_token(sub: &str) -> String {
    token(sub, &["news"], &[], &[])
}

#[tokio::test]
async fn websocket_open_packet_announces_the_session() {
    let node = start(|c| {
        c.engine.ping_interval_ms = 1234;
        c.engine.ping_timeout_ms = 567;
        c.engine.max_payload = 89_000;
    })
    .await;
    let client = WsClient::handshake(node.local_addr()).await;
    let open = client.open.as_object().unwrap();
    let mut keys: Vec<&str> = open.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "maxPayload",
            "pingInterval",
            "pingTimeout",
            "sid",
            "upgrades"
        ]
    );
    assert_eq!(open["sid"].as_str().map(str::len), Some(20));
    assert_eq!(open["upgrades"], json!([]));
    assert_eq!(open["pingInterval"], 1234);
    assert_eq!(open["pingTimeout"], 567);
    assert_eq!(open["maxPayload"], 89_000);

    // A polling session may upgrade.
    let polling = Polling::handshake(node.local_addr()).await;
    assert_eq!(polling.open["upgrades"], json!(["websocket"]));
    assert_ne!(polling.sid, open["sid"].as_str().unwrap());
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn connect_without_token_is_unauthorized() {
    let node = start(|_| {}).await;
    let mut client = WsClient::handshake(node.local_addr()).await;
    client.send_text("40");
    assert_eq!(
        client.recv_text(WAIT).await,
        r#"44{"message":"unauthorized"}"#
    );
    client.send_text(r#"40{"token":"not.a.jwt"}"#);
    assert_eq!(
        client.recv_text(WAIT).await,
        r#"44{"message":"unauthorized"}"#
    );
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn connect_with_expired_token_says_so() {
    let node = start(|_| {}).await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({ "sub": "alice", "exp": now - 3600 }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let mut client = WsClient::handshake(node.local_addr()).await;
    client.send_text(&connect_packet(&expired));
    assert_eq!(
        client.recv_text(WAIT).await,
        r#"44{"message":"token expired"}"#
    );
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn connect_to_unknown_namespace_is_refused() {
    let node = start(|_| {}).await;
    let mut client = WsClient::handshake(node.local_addr()).await;
    client.send_text(&format!(
        "40/nope,{}",
        json!({ "token": news_token("alice") })
    ));
    assert_eq!(
        client.recv_text(WAIT).await,
        r#"44/nope,{"message":"Invalid namespace"}"#
    );
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn connect_reply_carries_sid_and_pid() {
    let node = start(|_| {}).await;
    let (client, reply) = WsClient::connect(node.local_addr(), &news_token("alice")).await;
    let reply = reply.as_object().unwrap();
    assert_eq!(reply.len(), 2, "{reply:?}");
    let sid = reply["sid"].as_str().unwrap();
    let pid = reply["pid"].as_str().unwrap();
    assert_eq!((sid.len(), pid.len()), (20, 20));
    assert_ne!(sid, pid);
    // The Socket.IO id is not the Engine.IO id.
    assert_ne!(sid, client.open["sid"].as_str().unwrap());
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn events_carry_increasing_offsets() {
    let node = start(|_| {}).await;
    let api = Api::new(node.local_addr());
    let (mut client, _) = WsClient::connect(node.local_addr(), &news_token("alice")).await;
    client.subscribe(1, "news").await;
    let mut last = 0u64;
    for i in 0..3 {
        let receipt = api.publish("news", "update", json!({ "i": i })).await;
        let text = client.recv_text(WAIT).await;
        let event = parse_event(&text).unwrap_or_else(|| panic!("not an event: {text}"));
        assert_eq!(event.name, "update");
        assert_eq!(event.data, json!({ "i": i }));
        let offset = event.offset.expect("event without offset");
        assert_eq!(text, format!(r#"42["update",{{"i":{i}}},"{offset}"]"#));
        assert_eq!(receipt["offset"], offset.as_str());
        let n: u64 = offset.parse().unwrap();
        assert!(n > last, "offset {n} after {last}");
        last = n;
    }
    node.shutdown(Duration::from_millis(200)).await;
}

/// A node that pings every 200 ms and waits 200 ms for the pong.
async fn fast_heartbeat_node() -> tidings::server::RunningNode {
    start(|c| {
        c.engine.ping_interval_ms = 200;
        c.engine.ping_timeout_ms = 200;
    })
    .await
}

#[tokio::test]
async fn silent_client_is_closed_after_ping_timeout() {
    let node = fast_heartbeat_node().await;
    let addr = node.local_addr();
    let api = Api::new(addr);
    let started = Instant::now();
    let mut silent = WsClient::handshake_with(addr, false).await;
    silent
        .socketio_connect(&connect_packet(&news_token("quiet")))
        .await;
    let (mut lively, _) = WsClient::connect(addr, &token("lively", &[], &["news"], &[])).await;

    let code = silent.expect_closed(Duration::from_secs(2)).await;
    let closed_after = started.elapsed();
    assert!(
        closed_after < Duration::from_secs(1),
        "closed only after {closed_after:?}"
    );
    assert!(
        silent.log.iter().any(|f| f.text() == Some("2")),
        "no ping seen before the close: {:?}",
        silent.log
    );
    assert_ne!(code, Some(1001), "a ping timeout is not a shutdown");

    // A client that answers its pings outlives several ping periods.
    tokio::time::sleep_until(started + Duration::from_millis(1200)).await;
    api.publish("news", "update", json!({ "still": "here" }))
        .await;
    lively
        .recv_event_with("update", "still", &json!("here"), WAIT)
        .await;
    assert!(!lively.is_closed());
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn polling_sessions_are_pinged_and_a_silent_one_is_closed_with_no_get_waiting() {
    let node = fast_heartbeat_node().await;
    let addr = node.local_addr();
    let api = Api::new(addr);
    let lively = Polling::handshake(addr).await;
    lively.socketio_connect(&news_token("lively")).await;
    // Connected, then never polls again: only the heartbeat can tell it is gone.
    let silent = Polling::handshake(addr).await;
    silent.socketio_connect(&news_token("quiet")).await;
    api.wait_connections(2, WAIT).await;

    let started = Instant::now();
    let mut pings = 0;
    while started.elapsed() < Duration::from_millis(1300) {
        let (status, body) = tokio::time::timeout(WAIT, lively.get()).await.unwrap();
        assert_eq!(status, 200, "{body:?}");
        for _ in body.split('\x1e').filter(|p| *p == "2") {
            pings += 1;
            assert_eq!(lively.post("3").await, (200, "ok".to_owned()));
        }
    }
    assert!(pings >= 4, "{pings} pings in 1.3 s at a 200 ms interval");
    // The silent session went at its pong deadline (~400 ms), the lively one is still there.
    api.wait_connections(1, WAIT).await;
    assert_eq!(silent.get().await.0, 400);
    let (status, _) = tokio::time::timeout(WAIT, lively.get()).await.unwrap();
    assert_eq!(status, 200);
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn closed_sessions_leave_the_heartbeat_schedule() {
    let node = start(|c| c.engine.ping_interval_ms = 60_000).await;
    let addr = node.local_addr();
    let api = Api::new(addr);
    let engine = node.node().engines[0].clone();
    let (mut lively, _) = WsClient::connect(addr, &token("lively", &[], &["news"], &[])).await;
    let mut clients = Vec::new();
    for i in 0..150 {
        clients.push(WsClient::handshake(addr).await);
        if i % 50 == 49 {
            tokio::task::yield_now().await;
        }
    }
    api.wait_connections(151, WAIT).await;
    assert_eq!(engine.heartbeat_len(), 151);
    drop(clients);
    // No look is due for a minute: the closes themselves get the dead entries swept.
    let deadline = Instant::now() + WAIT;
    while engine.session_count() > 1 || engine.heartbeat_len() > 1 {
        assert!(
            Instant::now() < deadline,
            "{} sessions, {} scheduled",
            engine.session_count(),
            engine.heartbeat_len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    api.publish("news", "update", json!({ "still": "here" }))
        .await;
    lively
        .recv_event_with("update", "still", &json!("here"), WAIT)
        .await;
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn shutdown_closes_websockets_with_1001_and_polls_with_a_close_packet() {
    let node = start(|_| {}).await;
    let addr = node.local_addr();
    let (mut ws1, _) = WsClient::connect(addr, &news_token("a")).await;
    let (mut ws2, _) = WsClient::connect(addr, &news_token("b")).await;
    let polling = Polling::handshake(addr).await;
    polling.socketio_connect(&news_token("c")).await;
    let pending = tokio::spawn(async move { polling.get().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!pending.is_finished(), "the poll should be waiting");

    let shutdown = tokio::spawn(node.shutdown(Duration::from_secs(2)));
    assert_eq!(ws1.expect_closed(WAIT).await, Some(1001));
    assert_eq!(ws2.expect_closed(WAIT).await, Some(1001));
    let (status, body) = tokio::time::timeout(WAIT, pending)
        .await
        .expect("poll not answered")
        .unwrap();
    assert_eq!(status, 200);
    assert!(
        body.split('\u{1e}').any(|packet| packet == "1"),
        "no close packet in {body:?}"
    );
    tokio::time::timeout(WAIT, shutdown)
        .await
        .expect("shutdown hung")
        .unwrap();
}

#[tokio::test]
async fn subscribe_outside_the_token_rooms_is_forbidden() {
    let node = start(|_| {}).await;
    let api = Api::new(node.local_addr());
    let (mut client, _) = WsClient::connect(node.local_addr(), &news_token("alice")).await;
    let ack = client
        .emit_with_ack(7, "subscribe", &[json!("secret")])
        .await;
    assert_eq!(ack, json!([{ "ok": false, "error": "forbidden" }]));
    let (status, room) = api.get("/v1/rooms/secret").await;
    assert_eq!((status, &room["members"]), (200, &json!(0)));
    // The allowed room still works.
    client.subscribe(8, "news").await;
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn unknown_client_event_is_refused_and_not_forwarded() {
    let node = start(|_| {}).await;
    let addr = node.local_addr();
    let api = Api::new(addr);
    let everything = token("root", &["*"], &["news"], &["*"]);
    let (mut sender, _) = WsClient::connect(addr, &everything).await;
    let (mut other, _) = WsClient::connect(addr, &token("bob", &[], &["news"], &[])).await;
    let ack = sender
        .emit_with_ack(
            3,
            "chat",
            &[json!({ "room": "news", "event": "chat", "data": "hi" })],
        )
        .await;
    assert_eq!(ack, json!([{ "ok": false, "error": "unknown event" }]));

    // Without an ack id the event is dropped silently.
    sender.send_text(r#"42["chat","hi"]"#);
    api.publish("news", "marker", json!({ "m": 1 })).await;
    for client in [&mut sender, &mut other] {
        let first = client.recv_event(WAIT).await;
        assert_eq!(first.name, "marker", "something arrived before the marker");
    }
    assert!(!sender.is_closed() && !other.is_closed());
    node.shutdown(Duration::from_millis(200)).await;
}

/// Reads the next `n` frames and asserts each is an event.
async fn next_events(client: &mut WsClient, n: usize) -> Vec<EventFrame> {
    let mut events = Vec::new();
    for _ in 0..n {
        let text = client.recv_text(WAIT).await;
        events.push(parse_event(&text).unwrap_or_else(|| panic!("expected an event, got {text}")));
    }
    events
}

#[tokio::test]
async fn recovery_replays_missed_events_in_order_then_goes_live() {
    let node = start(|_| {}).await;
    let addr = node.local_addr();
    let api = Api::new(addr);
    let alice = news_token("alice");
    let (mut client, reply) = WsClient::connect(addr, &alice).await;
    let (sid, pid) = (reply["sid"].clone(), reply["pid"].clone());
    client.subscribe(1, "news").await;
    api.publish("news", "update", json!({ "i": 0 })).await;
    let seen = client.recv_event(WAIT).await;
    assert_eq!(seen.data, json!({ "i": 0 }));
    let offset = seen.offset.unwrap();

    client.drop_connection();
    api.wait_connections(0, WAIT).await;
    for i in 1..=5 {
        api.publish("news", "update", json!({ "i": i })).await;
    }

    let mut back = WsClient::handshake(addr).await;
    back.send_text(&format!(
        "40{}",
        json!({ "token": alice, "pid": pid, "offset": offset })
    ));
    let reply_text = back.recv_text(WAIT).await;
    let reply: Value = serde_json::from_str(
        reply_text
            .strip_prefix("40")
            .unwrap_or_else(|| panic!("not a connect reply: {reply_text}")),
    )
    .unwrap();
    assert_eq!(reply, json!({ "sid": sid, "pid": pid }));

    let replayed = next_events(&mut back, 5).await;
    let mut last: u64 = offset.parse().unwrap();
    for (i, event) in (1..=5).zip(&replayed) {
        assert_eq!(event.name, "update");
        assert_eq!(event.data, json!({ "i": i }));
        let n: u64 = event.offset.as_deref().unwrap().parse().unwrap();
        assert!(n > last, "offset {n} after {last}");
        last = n;
    }

    // The room membership came back too: the next frame is the live event, nothing replayed twice.
    api.publish("news", "update", json!({ "i": 6 })).await;
    let live = next_events(&mut back, 1).await.remove(0);
    assert_eq!(live.data, json!({ "i": 6 }));
    assert!(live.offset.unwrap().parse::<u64>().unwrap() > last);
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn recovery_with_unknown_pid_starts_a_new_session() {
    let node = start(|_| {}).await;
    let addr = node.local_addr();
    let api = Api::new(addr);
    let alice = news_token("alice");
    let (client, first) = WsClient::connect(addr, &alice).await;
    client.drop_connection();
    api.wait_connections(0, WAIT).await;

    let mut fresh = WsClient::handshake(addr).await;
    let unknown = "AAAAAAAAAAAAAAAAAAAA";
    let reply = fresh
        .socketio_connect(&format!(
            "40{}",
            json!({ "token": alice, "pid": unknown, "offset": "1" })
        ))
        .await;
    assert_ne!(reply["sid"], first["sid"]);
    assert_ne!(reply["pid"], first["pid"]);
    assert_ne!(reply["pid"], unknown);
    assert_eq!(reply["pid"].as_str().map(str::len), Some(20));

    // Someone else's parked session is not theirs to take.
    let mut mallory = WsClient::handshake(addr).await;
    let stolen = mallory
        .socketio_connect(&format!(
            "40{}",
            json!({ "token": news_token("mallory"), "pid": first["pid"], "offset": "0" })
        ))
        .await;
    assert_ne!(stolen["sid"], first["sid"]);
    assert_ne!(stolen["pid"], first["pid"]);
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn largest_packet_rate_limit_does_not_overflow() {
    let node = start(|c| c.limits.client_packets_per_sec = u32::MAX).await;
    let (mut client, _) = WsClient::connect(node.local_addr(), &news_token("alice")).await;
    client.subscribe(1, "news").await;
    node.shutdown(Duration::from_millis(200)).await;
}
