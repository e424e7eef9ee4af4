//! Ephemeral rooms, conflation and per-room client publish rates, over real websockets on an embedded node and
//! on two nodes over a real Redis: no offset, no history, no replay; the latest event per key per interval;
//! a connection past its room's publish rate is refused alone.

mod common;

use std::time::Duration;

use common::{start, token, unique_prefix, Api, RedisServer, WsClient, WAIT};
use serde_json::{json, Value};
use tidings::config::{Config, RoomPolicy};
use tidings::server::RunningNode;
use tokio::time::Instant;

const INTERVAL_MS: u64 = 400;

fn policies(config: &mut Config) {
    let mut typing = RoomPolicy::new("typing:*".parse().unwrap(), true);
    typing.ephemeral = true;
    let mut track = RoomPolicy::new("track:*".parse().unwrap(), true);
    track.conflate_ms = INTERVAL_MS;
    track.conflate_key = "worker_id".into();
    let mut limited = RoomPolicy::new("rate:*".parse().unwrap(), true);
    limited.client_publish_per_sec = 1;
    limited.client_publish_burst = 2;
    config.rooms = vec![typing, track, limited];
    config.limits.client_packets_per_sec = 1000;
}

async fn publish(client: &mut WsClient, id: u64, room: &str, event: &str, data: Value) -> Value {
    client
        .emit_with_ack(
            id,
            "publish",
            &[json!({ "room": room, "event": event, "data": data })],
        )
        .await[0]
        .clone()
}

/// Worker `w` sends `n` positions, alternating workers a and b, as fast as acks come; then the manager's view
/// over two intervals: at most one event per worker per flush, the last ones the latest positions.
async fn check_conflation(worker: &mut WsClient, manager: &mut WsClient, room: &str) {
    const SENT: u64 = 40;
    for n in 0..SENT {
        let id = if n % 2 == 0 { "a" } else { "b" };
        let reply = publish(
            worker,
            100 + n,
            room,
            "pos",
            json!({ "worker_id": id, "n": n }),
        )
        .await;
        assert_eq!(reply, json!({ "ok": true }), "{reply}");
    }
    let got = manager
        .events_for(Duration::from_millis(3 * INTERVAL_MS))
        .await;
    let positions: Vec<(String, u64)> = got
        .iter()
        .filter(|e| e.name == "pos")
        .map(|e| {
            (
                e.data["worker_id"].as_str().unwrap().to_owned(),
                e.data["n"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(
        got.iter().all(|e| e.offset.is_none()),
        "conflated events carry no offset"
    );
    assert!(
        !positions.is_empty() && positions.len() < SENT as usize / 2,
        "{} of {SENT} positions reached the manager: {positions:?}",
        positions.len()
    );
    let last = |id: &str| {
        positions
            .iter()
            .rev()
            .find(|(w, _)| w == id)
            .map(|(_, n)| *n)
    };
    assert_eq!(
        (last("a"), last("b")),
        (Some(SENT - 2), Some(SENT - 1)),
        "{positions:?}"
    );
    // Within a flush, workers come in the order of their last update: b (updated last) after a.
    let tail = &positions[positions.len() - 2..];
    assert_eq!(
        (tail[0].0.as_str(), tail[1].0.as_str()),
        ("a", "b"),
        "{positions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_rooms_skip_history_and_replay() {
    let node = start(policies).await;
    let addr = node.local_addr();
    let (mut alice, _) =
        WsClient::connect(addr, &token("alice", &["typing:*"], &["typing:r"], &[])).await;
    let (mut bob, _) =
        WsClient::connect(addr, &token("bob", &["typing:*"], &["typing:r"], &[])).await;
    let reply = publish(&mut bob, 1, "typing:r", "typing", json!({ "user": "bob" })).await;
    assert_eq!(
        reply,
        json!({ "ok": true }),
        "ephemeral publishes have no offset: {reply}"
    );
    let got = alice.recv_event(WAIT).await;
    assert_eq!(
        (got.name.as_str(), got.data["user"].as_str()),
        ("typing", Some("bob"))
    );
    assert_eq!(got.offset, None);
    let history = alice
        .emit_with_ack(2, "history", &[json!({ "room": "typing:r" })])
        .await;
    assert_eq!(history[0]["events"], json!([]), "{history}");

    // An ephemeral publish over HTTP, to a room whose policy keeps history.
    let (mut carol, _) = WsClient::connect(addr, &token("carol", &["news"], &["news"], &[])).await;
    let (status, reply) = Api::new(addr)
        .post(
            "/v1/publish",
            json!({ "room": "news", "event": "cursor", "data": { "x": 1 }, "ephemeral": true })
                .to_string(),
        )
        .await;
    assert_eq!(
        (status, &reply),
        (200, &json!({ "ok": true, "ephemeral": true }))
    );
    let got = carol.recv_event(WAIT).await;
    assert_eq!((got.name.as_str(), got.offset), ("cursor", None));
    let history = carol
        .emit_with_ack(3, "history", &[json!({ "room": "news" })])
        .await;
    assert_eq!(history[0]["events"], json!([]), "{history}");
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflation_keeps_the_latest_event_per_key() {
    let node = start(policies).await;
    let addr = node.local_addr();
    let (mut worker, _) =
        WsClient::connect(addr, &token("w1", &["track:*"], &["track:t1"], &[])).await;
    let (mut manager, _) =
        WsClient::connect(addr, &token("m1", &["track:*"], &["track:t1"], &[])).await;
    check_conflation(&mut worker, &mut manager, "track:t1").await;
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_publish_rate_refuses_one_connection_alone() {
    let node = start(policies).await;
    let addr = node.local_addr();
    let (mut fast, _) =
        WsClient::connect(addr, &token("fast", &["rate:*"], &["rate:r"], &[])).await;
    let (mut calm, _) =
        WsClient::connect(addr, &token("calm", &["rate:*"], &["rate:r"], &[])).await;
    for n in 0..2 {
        let reply = publish(&mut fast, n, "rate:r", "msg", json!(n)).await;
        assert_eq!(reply["ok"], true, "the burst of 2: {reply}");
    }
    let refused = publish(&mut fast, 9, "rate:r", "msg", json!(9)).await;
    assert_eq!(refused, json!({ "ok": false, "error": "rate_limited" }));
    // Another connection has its own bucket, and the refused one is still connected and gets its token back.
    let reply = publish(&mut calm, 1, "rate:r", "msg", json!("calm")).await;
    assert_eq!(reply["ok"], true, "{reply}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let reply = publish(&mut fast, 10, "rate:r", "msg", json!(10)).await;
    assert_eq!(reply["ok"], true, "{reply}");
    // Rooms without a rate of their own are not affected.
    node.shutdown(Duration::from_secs(1)).await;
}

async fn cluster_node(redis: &RedisServer, prefix: &str) -> RunningNode {
    let url = redis.url();
    let prefix = prefix.to_owned();
    start(move |config| {
        policies(config);
        config.redis.url = url;
        config.redis.key_prefix = prefix;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_and_conflated_events_cross_nodes() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("ephemeral");
    let a = cluster_node(&redis, &prefix).await;
    let b = cluster_node(&redis, &prefix).await;
    let (mut worker, _) = WsClient::connect(
        a.local_addr(),
        &token(
            "w1",
            &["track:*", "typing:*"],
            &["track:t1", "typing:r"],
            &[],
        ),
    )
    .await;
    let (mut manager, _) = WsClient::connect(
        b.local_addr(),
        &token(
            "m1",
            &["track:*", "typing:*"],
            &["track:t1", "typing:r"],
            &[],
        ),
    )
    .await;
    // Wait until node b hears the rooms (its subscription is made when the manager joins).
    let deadline = Instant::now() + WAIT;
    loop {
        let reply = publish(
            &mut worker,
            1,
            "typing:r",
            "typing",
            json!({ "user": "w1" }),
        )
        .await;
        assert_eq!(reply["ok"], true, "{reply}");
        if let Some(frame) = manager.next_frame(Duration::from_millis(200)).await {
            let event = frame.text().and_then(common::parse_event);
            if event.is_some_and(|e| e.name == "typing" && e.offset.is_none()) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "node b never got the ephemeral event"
        );
    }
    // Drain what else came, then the conflated stream.
    let _ = manager.events_for(Duration::from_millis(300)).await;
    check_conflation(&mut worker, &mut manager, "track:t1").await;
    a.shutdown(Duration::from_secs(1)).await;
    b.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_member_drops_ephemeral_events_and_stays_connected() {
    const SLOW_CLOSES: &str = r#"tidings_sessions_closed_total{reason="slow_consumer"}"#;
    const DROPPED: &str = "tidings_ephemeral_dropped_total";
    let node = start(|c| {
        c.limits.outbox_max_messages = 256;
        c.limits.outbox_max_bytes = 1024 * 1024;
    })
    .await;
    let addr = node.local_addr();
    let api = Api::new(addr);
    // A client that stops reading: a tiny receive buffer so the kernel cannot absorb the stream for it.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let mut slow = common::RawWs::handshake_on(stream, addr).await;
    slow.socketio_connect(&token("slow", &["news"], &["news"], &[]))
        .await;
    let (mut healthy, _) = WsClient::connect(addr, &token("fast", &["news"], &["news"], &[])).await;
    api.wait_connections(2, WAIT).await;
    let before = common::process_metrics().await;

    let pad = "x".repeat(8 * 1024);
    for i in 0..1000 {
        let body = json!({ "room": "news", "event": "pos", "data": { "i": i, "pad": pad }, "ephemeral": true });
        let (status, reply) = api.post("/v1/publish", body.to_string()).await;
        assert_eq!(status, 200, "{reply}");
    }
    let after = common::process_metrics().await;
    assert!(
        common::metric(&after, DROPPED) > common::metric(&before, DROPPED),
        "nothing dropped for the slow member"
    );
    assert_eq!(
        common::metric(&after, SLOW_CLOSES),
        common::metric(&before, SLOW_CLOSES),
        "a member was disconnected for ephemeral events"
    );
    // The healthy member got events; the slow one is still connected and gets the next durable event once it
    // reads again.
    assert_eq!(healthy.recv_event(WAIT).await.name, "pos");
    api.publish("news", "final", json!({ "done": true })).await;
    let last = tokio::time::timeout(
        Duration::from_secs(20),
        slow.recv_text_until(|t| t.contains("\"final\"")),
    )
    .await
    .expect("the slow member never got the durable event");
    assert!(last.contains("\"done\":true"), "{last}");
    api.wait_connections(2, WAIT).await;
    node.shutdown(Duration::from_secs(1)).await;
}

/// A client sends `n` durable publishes without waiting for their acks; `member` gets them in that order.
async fn check_publish_order(publisher: &mut WsClient, member: &mut WsClient, room: &str) {
    const SENT: u64 = 200;
    for n in 0..SENT {
        let packet = json!(["publish", { "room": room, "event": "chat", "data": { "n": n } }]);
        publisher.send_text(&format!("42{}{packet}", 1000 + n));
    }
    let mut seen = Vec::new();
    while seen.len() < SENT as usize {
        let event = member.recv_event(WAIT).await;
        if event.name == "chat" {
            assert!(event.offset.is_some(), "durable events carry offsets");
            seen.push(event.data["n"].as_u64().unwrap());
        }
    }
    assert_eq!(
        seen,
        (0..SENT).collect::<Vec<_>>(),
        "publishes out of the order they were sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_clients_durable_publishes_keep_their_order_on_one_node_and_across_nodes() {
    let chat = |config: &mut Config| {
        config.rooms = vec![RoomPolicy::new("chat:*".parse().unwrap(), true)];
        config.limits.client_packets_per_sec = 1000;
    };
    let node = start(chat).await;
    let claims = |user| token(user, &["chat:*"], &["chat:r"], &[]);
    let (mut alice, _) = WsClient::connect(node.local_addr(), &claims("alice")).await;
    let (mut bob, _) = WsClient::connect(node.local_addr(), &claims("bob")).await;
    check_publish_order(&mut alice, &mut bob, "chat:r").await;
    node.shutdown(Duration::from_secs(1)).await;

    let redis = RedisServer::start().await;
    let prefix = unique_prefix("publish-order");
    let cluster = |redis: &RedisServer| {
        let (url, prefix) = (redis.url(), prefix.clone());
        start(move |config| {
            chat(config);
            config.redis.url = url;
            config.redis.key_prefix = prefix;
        })
    };
    let a = cluster(&redis).await;
    let b = cluster(&redis).await;
    let (mut alice, _) = WsClient::connect(a.local_addr(), &claims("alice")).await;
    let (mut bob, _) = WsClient::connect(b.local_addr(), &claims("bob")).await;
    check_publish_order(&mut alice, &mut bob, "chat:r").await;
    a.shutdown(Duration::from_secs(1)).await;
    b.shutdown(Duration::from_secs(1)).await;
}
