//! The HTTP API: key checks, JSON errors, publish validation, batches, room listings, health and metrics.

mod common;

use std::time::Duration;

use common::{metrics_node, start, token, Api, WsClient, API_KEY, WAIT};
use serde_json::{json, Value};
use tidings::config::NamespaceConfig;

/// Asserts `reply` is the API's JSON error with `code` and a non-empty message.
fn assert_error(status: u16, reply: &Value, want_status: u16, code: &str) {
    assert_eq!(status, want_status, "{reply}");
    assert_eq!(reply["error"]["code"], code, "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "no message: {reply}"
    );
    assert_eq!(
        reply.as_object().map(|o| o.len()),
        Some(1),
        "extra fields: {reply}"
    );
}

fn publish_body(room: &str, event: &str) -> String {
    json!({ "room": room, "event": event, "data": { "x": 1 } }).to_string()
}

#[tokio::test]
async fn requests_without_the_right_key_are_401() {
    let node = start(|_| {}).await;
    let api = Api::new(node.local_addr());
    let body = publish_body("news", "update");
    for key in [
        None,
        Some("wrong-key"),
        Some(""),
        Some(&format!("{API_KEY}-but-longer")),
        Some(&API_KEY[..API_KEY.len() - 1]),
    ] {
        let (status, reply) = api.post_with_key("/v1/publish", key, body.clone()).await;
        assert_error(status, &reply, 401, "unauthorized");
    }
    // Not a bearer token.
    let response = api
        .http
        .post(format!("{}/v1/publish", api.base))
        .header("authorization", format!("Basic {API_KEY}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let response = api
        .http
        .get(format!("{}/v1/rooms", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    // The right key works.
    let (status, reply) = api
        .post("/v1/publish", publish_body("news", "update"))
        .await;
    assert_eq!(status, 200, "{reply}");
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn invalid_json_is_400_with_a_json_error() {
    let node = start(|_| {}).await;
    let api = Api::new(node.local_addr());
    for body in ["{", "not json", ""] {
        let (status, reply) = api.post("/v1/publish", body).await;
        assert_error(status, &reply, 400, "invalid_json");
    }
    // JSON of the wrong shape: the message names the field.
    for (body, field) in [
        ("[]", "request body"),
        (r#"{"room":"news"}"#, "missing field `event`"),
        (r#"{"room":"news","event":"x","surprise":1}"#, "surprise"),
        (r#"{"room":5,"event":"x"}"#, "room: invalid type"),
    ] {
        let (status, reply) = api.post("/v1/publish", body).await;
        assert_error(status, &reply, 400, "invalid_body");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{body}: {message}");
    }
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn invalid_or_missing_rooms_are_400() {
    let node = start(|_| {}).await;
    let api = Api::new(node.local_addr());
    for room in ["bad room", "a*", "", "tab\there", &"r".repeat(201)] {
        let (status, reply) = api.post("/v1/publish", publish_body(room, "update")).await;
        assert_error(status, &reply, 400, "invalid_room");
    }
    let (status, reply) = api
        .post("/v1/publish", json!({ "event": "update" }).to_string())
        .await;
    assert_error(status, &reply, 400, "missing_room");
    let (status, reply) = api
        .post(
            "/v1/publish",
            json!({ "rooms": [], "event": "update" }).to_string(),
        )
        .await;
    assert_error(status, &reply, 400, "missing_room");
    let (status, reply) = api.get("/v1/rooms/bad%20room").await;
    assert_error(status, &reply, 400, "invalid_room");
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn reserved_event_names_are_400() {
    let node = start(|_| {}).await;
    let api = Api::new(node.local_addr());
    for event in ["connect", "disconnect", "connect_error", ""] {
        let (status, reply) = api.post("/v1/publish", publish_body("news", event)).await;
        assert_error(status, &reply, 400, "invalid_event");
    }
    let (status, reply) = api
        .post(
            "/v1/broadcast",
            json!({ "event": "disconnecting" }).to_string(),
        )
        .await;
    assert_error(status, &reply, 400, "invalid_event");
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn oversize_body_is_413() {
    let node = start(|c| c.api.max_body_bytes = 256).await;
    let api = Api::new(node.local_addr());
    let big = json!({ "room": "news", "event": "update", "data": "x".repeat(2000) }).to_string();
    let (status, reply) = api.post("/v1/publish", big).await;
    assert_error(status, &reply, 413, "payload_too_large");
    // A body under the limit still passes.
    let (status, reply) = api
        .post("/v1/publish", publish_body("news", "update"))
        .await;
    assert_eq!(status, 200, "{reply}");
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn unknown_namespace_is_404() {
    let node = start(|c| {
        c.namespaces = vec![NamespaceConfig {
            name: "/chat".into(),
            recovery: None,
        }]
    })
    .await;
    let api = Api::new(node.local_addr());
    let body = json!({ "room": "news", "event": "update", "namespace": "/nope" }).to_string();
    let (status, reply) = api.post("/v1/publish", body).await;
    assert_error(status, &reply, 404, "unknown_namespace");
    let (status, reply) = api.get("/v1/rooms?namespace=/nope").await;
    assert_error(status, &reply, 404, "unknown_namespace");
    let body = json!({ "room": "news", "event": "update", "namespace": "/chat" }).to_string();
    let (status, reply) = api.post("/v1/publish", body).await;
    assert_eq!(status, 200, "{reply}");
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn publish_receipt_counts_recipients() {
    let node = start(|_| {}).await;
    let addr = node.local_addr();
    let api = Api::new(addr);
    let (mut a, _) = WsClient::connect(addr, &token("a", &[], &["news"], &[])).await;
    let (mut b, _) = WsClient::connect(addr, &token("b", &[], &["news"], &[])).await;
    let reply = api.publish("news", "update", json!({ "n": 1 })).await;
    assert_eq!(reply["ok"], true);
    assert_eq!(reply["recipients"], 2);
    let offset = reply["offset"].as_str().unwrap().to_owned();
    for client in [&mut a, &mut b] {
        let event = client.recv_event(WAIT).await;
        assert_eq!(event.data, json!({ "n": 1 }));
        assert_eq!(event.offset.as_deref(), Some(offset.as_str()));
    }
    let reply = api.publish("empty-room", "update", json!(null)).await;
    assert_eq!(reply["recipients"], 0);
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn batch_is_all_or_nothing() {
    let node = start(|_| {}).await;
    let addr = node.local_addr();
    let api = Api::new(addr);
    let (mut client, _) = WsClient::connect(addr, &token("a", &[], &["news"], &[])).await;

    let bad = json!({ "events": [
        { "room": "news", "event": "first", "data": 1 },
        { "room": "bad room", "event": "second", "data": 2 },
    ]});
    let (status, reply) = api.post("/v1/publish/batch", bad.to_string()).await;
    assert_error(status, &reply, 400, "invalid_room");
    let reserved = json!({ "events": [
        { "room": "news", "event": "first", "data": 1 },
        { "room": "news", "event": "connect", "data": 2 },
    ]});
    let (status, reply) = api.post("/v1/publish/batch", reserved.to_string()).await;
    assert_error(status, &reply, 400, "invalid_event");
    let (status, reply) = api
        .post("/v1/publish/batch", json!({ "events": [] }).to_string())
        .await;
    assert_error(status, &reply, 400, "invalid_batch");

    let good = json!({ "events": [
        { "room": "news", "event": "first", "data": 1 },
        { "room": "news", "event": "second", "data": 2 },
    ]});
    let (status, reply) = api.post("/v1/publish/batch", good.to_string()).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["results"].as_array().map(Vec::len), Some(2));
    // Nothing of the refused batches came through: the good batch's events are the first to arrive.
    let first = client.recv_event(WAIT).await;
    let second = client.recv_event(WAIT).await;
    assert_eq!(
        (
            first.name.as_str(),
            &first.data,
            second.name.as_str(),
            &second.data
        ),
        ("first", &json!(1), "second", &json!(2))
    );
    node.shutdown(Duration::from_millis(200)).await;
}

/// The member count of `name` in a `/v1/rooms` listing (None when it is not listed).
fn members(listing: &Value, name: &str) -> Option<u64> {
    listing["rooms"]
        .as_array()?
        .iter()
        .find(|room| room["name"] == name)
        .and_then(|room| room["members"].as_u64())
}

#[tokio::test]
async fn rooms_report_member_counts() {
    let node = start(|_| {}).await;
    let addr = node.local_addr();
    let api = Api::new(addr);
    let (_alice, _) = WsClient::connect(addr, &token("alice", &[], &["news"], &[])).await;
    let (bob, _) = WsClient::connect(addr, &token("bob", &[], &["news", "sports"], &[])).await;
    let (mut carol, _) = WsClient::connect(addr, &token("carol", &["sports"], &[], &[])).await;
    carol.subscribe(1, "sports").await;

    let (status, listing) = api.get("/v1/rooms").await;
    assert_eq!(status, 200, "{listing}");
    assert_eq!(listing["namespace"], "/");
    assert_eq!(members(&listing, "news"), Some(2), "{listing}");
    assert_eq!(members(&listing, "sports"), Some(2), "{listing}");
    assert_eq!(members(&listing, "user:alice"), Some(1), "{listing}");
    assert_eq!(
        members(&listing, ""),
        None,
        "broadcast room listed: {listing}"
    );
    let (status, news) = api.get("/v1/rooms/news").await;
    assert_eq!(status, 200);
    assert_eq!(
        news,
        json!({ "namespace": "/", "scope": "node", "name": "news", "members": 2 })
    );

    bob.drop_connection();
    api.wait_connections(2, WAIT).await;
    let (_, listing) = api.get("/v1/rooms").await;
    assert_eq!(members(&listing, "news"), Some(1), "{listing}");
    assert_eq!(members(&listing, "sports"), Some(1), "{listing}");
    let (_, nobody) = api.get("/v1/rooms/nobody-here").await;
    assert_eq!(nobody["members"], 0);
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn healthz_counts_connections() {
    let node = start(|_| {}).await;
    let addr = node.local_addr();
    let api = Api::new(addr);
    // No key needed.
    let response = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let health: Value = response.json().await.unwrap();
    assert_eq!(health, json!({ "ok": true, "connections": 0 }));
    let (_a, _) = WsClient::connect(addr, &token("a", &[], &[], &[])).await;
    let b = WsClient::handshake(addr).await;
    assert_eq!(api.connections().await, 2);
    drop(b);
    api.wait_connections(1, WAIT).await;
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    // Only the first node of a process renders metrics (see `common::metrics_node`); it sees every node's.
    let node = start(|_| {}).await;
    let addr = node.local_addr();
    let (_client, _) = WsClient::connect(addr, &token("a", &[], &["news"], &[])).await;
    Api::new(addr).publish("news", "update", json!(1)).await;

    let response = reqwest::get(format!("http://{}/metrics", metrics_node()))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text().await.unwrap();
    assert!(text.contains("tidings_"), "{text}");
    for series in [
        "tidings_events_published_total",
        "tidings_sessions_opened_total",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(series)),
            "{series} missing from:\n{text}"
        );
    }
    node.shutdown(Duration::from_millis(200)).await;
}
