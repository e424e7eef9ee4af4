//! Cluster mode against a real Redis: session records updated one room at a time, another user's recovery id
//! taking nothing, and ingest messages held to the same limits as the HTTP API (refusals counted by reason).

mod common;

use std::time::Duration;

use common::{
    metric, process_metrics, start, token, unique_prefix, Api, RedisServer, WsClient, WAIT,
};
use redis::AsyncCommands;
use serde_json::json;
use tidings::server::RunningNode;

async fn cluster_node(redis: &RedisServer, prefix: &str) -> RunningNode {
    let (url, prefix) = (redis.url(), prefix.to_owned());
    start(move |config| {
        config.redis.url = url;
        config.redis.key_prefix = prefix;
        config.limits.max_json_depth = 8;
    })
    .await
}

/// Polls `check` every 20 ms until it holds; panics after `WAIT`.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn session_records_change_one_room_at_a_time_and_stay_with_their_owner() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("records");
    let node = cluster_node(&redis, &prefix).await;
    let addr = node.local_addr();
    let mut conn = redis.conn().await;
    let alice = token("alice", &["room-*"], &[], &[]);
    let (mut live, reply) = WsClient::connect(addr, &alice).await;
    let pid = reply["pid"].as_str().unwrap().to_owned();
    let sid = reply["sid"].as_str().unwrap().to_owned();
    let key = format!("{prefix}:session:{pid}");

    live.subscribe(1, "room-a").await;
    live.subscribe(2, "room-b").await;
    eventually("room-b recorded", || {
        let (mut conn, key) = (conn.clone(), key.clone());
        async move { conn.hexists::<_, _, bool>(&key, "r:room-b").await.unwrap() }
    })
    .await;
    let ack = live
        .emit_with_ack(3, "unsubscribe", &[json!("room-a")])
        .await;
    assert_eq!(ack[0]["ok"], json!(true));
    eventually("room-a removed", || {
        let (mut conn, key) = (conn.clone(), key.clone());
        async move { !conn.hexists::<_, _, bool>(&key, "r:room-a").await.unwrap() }
    })
    .await;
    let fields: Vec<String> = conn.hkeys(&key).await.unwrap();
    assert!(fields.contains(&"r:room-b".to_owned()), "{fields:?}");

    // Another user with Alice's pid: a fresh session, Alice stays connected and her record stays.
    let mut bob = WsClient::handshake(addr).await;
    let stolen = json!({ "token": token("bob", &[], &[], &[]), "pid": pid, "offset": "0" });
    let reply = bob.socketio_connect(&format!("40{stolen}")).await;
    assert_ne!(reply["sid"], json!(sid));
    let api = Api::new(addr);
    api.publish("room-b", "update", json!({ "n": 1 })).await;
    live.recv_event_with("update", "n", &json!(1), WAIT).await;
    assert!(conn.exists::<_, bool>(&key).await.unwrap());

    // Parked after a drop: still not Bob's to take; Alice recovers it with the room she kept.
    live.drop_connection();
    api.wait_connections(1, WAIT).await;
    let mut bob = WsClient::handshake(addr).await;
    let reply = bob.socketio_connect(&format!("40{stolen}")).await;
    assert_ne!(reply["sid"], json!(sid));
    assert!(
        conn.exists::<_, bool>(&key).await.unwrap(),
        "record left in place"
    );
    api.publish("room-b", "update", json!({ "n": 2 })).await;
    let mut back = WsClient::handshake(addr).await;
    let resume = json!({ "token": alice, "pid": pid, "offset": "0" });
    let reply = back.socketio_connect(&format!("40{resume}")).await;
    assert_eq!(reply["sid"], json!(sid));
    back.recv_event_with("update", "n", &json!(2), WAIT).await;
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn ingest_messages_get_the_api_limits_and_refusals_are_counted() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("ingest");
    let node = cluster_node(&redis, &prefix).await;
    let addr = node.local_addr();
    let (mut member, _) = WsClient::connect(addr, &token("m", &[], &["news"], &[])).await;
    let mut conn = redis.conn().await;
    let channel = format!("{prefix}:publish");
    let series = |reason: &str| format!("tidings_ingest_rejected_total{{reason=\"{reason}\"}}");
    let before = process_metrics().await;
    let deep = format!("{}{}", "[".repeat(9), "]".repeat(9));
    let too_many: Vec<String> = (0..1001).map(|i| format!("r{i}")).collect();
    let bad = [
        (
            format!(r#"{{"room":"news","event":"e","data":{deep}}}"#),
            "too_deep",
        ),
        (
            json!({ "rooms": too_many, "event": "e" }).to_string(),
            "too_many_rooms",
        ),
        (
            json!({ "room": "news", "event": "e", "data": "x".repeat(1024 * 1024) }).to_string(),
            "payload_too_large",
        ),
        (
            json!({ "room": "bad room", "event": "e" }).to_string(),
            "invalid_room",
        ),
    ];
    for (message, _) in &bad {
        let _: i64 = conn.publish(&channel, message).await.unwrap();
    }
    let good = json!({ "room": "news", "event": "ok", "data": { "after": "bad" } }).to_string();
    let _: i64 = conn.publish(&channel, &good).await.unwrap();
    let event = member.recv_event(WAIT).await;
    assert_eq!(event.name, "ok", "only the valid message is delivered");
    for (_, reason) in &bad {
        let before = metric(&before, &series(reason));
        eventually(reason, || async {
            metric(&process_metrics().await, &series(reason)) > before
        })
        .await;
    }
    node.shutdown(Duration::from_millis(200)).await;
}
