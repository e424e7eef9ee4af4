//! Abuse paths of a hostile or careless client, each closed at its root: room policy order, binary
//! placeholders relayed to others, attachments before CONNECT, JSON depth, another user's recovery id, token
//! expiry on live connections, and the per-socket room cap. Every case checks that the node and its other
//! clients carry on.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{connect_packet, start, token, Api, WsClient, SECRET, WAIT};
use serde_json::{json, Value};
use tidings::config::RoomPolicy;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token for `sub` expiring at `exp` (seconds since the epoch), `None` for one without `exp`.
fn token_expiring(sub: &str, rooms: &[&str], exp: Option<u64>) -> String {
    let mut claims = json!({ "sub": sub, "rooms": rooms });
    if let Some(exp) = exp {
        claims["exp"] = exp.into();
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn first_matching_room_policy_wins() {
    let node = start(|c| {
        c.rooms = vec![
            RoomPolicy::new("chat:announce".parse().unwrap(), false),
            RoomPolicy::new("chat:*".parse().unwrap(), true),
        ];
    })
    .await;
    let addr = node.local_addr();
    let (mut client, _) = WsClient::connect(addr, &token("carol", &["chat:*"], &[], &[])).await;
    client.subscribe(1, "chat:announce").await;
    client.subscribe(2, "chat:lobby").await;
    let publish = |room: &str| json!({ "room": room, "event": "msg", "data": { "x": 1 } });
    let ack = client
        .emit_with_ack(3, "publish", &[publish("chat:announce")])
        .await;
    assert_eq!(
        ack[0],
        json!({ "ok": false, "error": "forbidden" }),
        "read-only exception first"
    );
    let ack = client
        .emit_with_ack(4, "publish", &[publish("chat:lobby")])
        .await;
    assert_eq!(ack[0]["ok"], json!(true), "{ack}");
    node.shutdown(Duration::from_millis(200)).await;
}

/// A binary publish whose placeholder points past its attachments would make every stock client in the room
/// disconnect (`illegal attachments`), and again on each recovery replay: it is refused and never reaches
/// history.
#[tokio::test]
async fn placeholders_past_the_attachments_are_never_relayed() {
    let node = start(|_| {}).await;
    let addr = node.local_addr();
    let api = Api::new(addr);
    let (mut member, _) = WsClient::connect(addr, &token("bob", &[], &["news"], &[])).await;
    let publisher = token("mallory", &[], &[], &["news"]);

    // The poison pill itself: the packet is refused and its sender disconnected.
    let (mut mallory, _) = WsClient::connect(addr, &publisher).await;
    mallory.send_text(
        r#"451-["publish",{"room":"news","event":"pic","data":{"_placeholder":true,"num":1}}]"#,
    );
    mallory.send_binary(vec![1, 2, 3]);
    assert_eq!(mallory.expect_closed(WAIT).await, Some(1002));

    // A valid packet whose placeholder sits outside `data`: the event would go out with an attachment and no
    // placeholder for it, so the publish is refused (the connection stays).
    let (mut mallory, _) = WsClient::connect(addr, &publisher).await;
    mallory.send_text(
        r#"451-6["publish",{"room":"news","event":"pic","data":1},{"_placeholder":true,"num":0}]"#,
    );
    mallory.send_binary(vec![1, 2, 3]);
    let ack = mallory
        .recv_until(|f| f.text().is_some_and(|t| t.starts_with("436[")), WAIT)
        .await;
    let ack: Value = serde_json::from_str(&ack.text().unwrap()[3..]).unwrap();
    assert_eq!(ack[0]["ok"], json!(false), "{ack}");

    // A placeholder-shaped object in a packet without attachments is refused too: from a client it ends the
    // connection like any packet a stock client could not have sent, over HTTP it is a 400.
    mallory.send_text(
        r#"427["publish",{"room":"news","event":"pic","data":{"_placeholder":true,"num":0}}]"#,
    );
    assert_eq!(mallory.expect_closed(WAIT).await, Some(1002));
    let (status, reply) = api
        .post(
            "/v1/publish",
            json!({ "room": "news", "event": "pic", "data": [{ "_placeholder": true, "num": 0 }] })
                .to_string(),
        )
        .await;
    assert_eq!(
        (status, reply["error"]["code"].clone()),
        (400, json!("invalid_data"))
    );

    // A well-formed binary publish still goes through, and history holds only it.
    let (mut mallory, _) = WsClient::connect(addr, &publisher).await;
    mallory.send_text(
        r#"451-8["publish",{"room":"news","event":"pic","data":{"_placeholder":true,"num":0}}]"#,
    );
    mallory.send_binary(vec![9, 9]);
    let ack = mallory
        .recv_until(|f| f.text().is_some_and(|t| t.starts_with("438[")), WAIT)
        .await;
    assert!(ack.text().unwrap().contains(r#""ok":true"#), "{ack:?}");
    let (_, history) = api.get("/v1/rooms/news/history").await;
    assert_eq!(history["events"].as_array().unwrap().len(), 1, "{history}");
    api.publish("news", "update", json!({ "after": "poison" }))
        .await;
    member
        .recv_event_with("update", "after", &json!("poison"), WAIT)
        .await;
    assert!(!member.is_closed());
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn published_data_nesting_is_capped_on_every_path() {
    let node = start(|c| c.limits.max_json_depth = 8).await;
    let addr = node.local_addr();
    let api = Api::new(addr);
    let nested = |depth: usize| -> Value {
        serde_json::from_str(&format!("{}{}", "[".repeat(depth), "]".repeat(depth))).unwrap()
    };
    let body = |depth| json!({ "room": "news", "event": "e", "data": nested(depth) }).to_string();
    let (status, reply) = api.post("/v1/publish", body(9)).await;
    assert_eq!(
        (status, reply["error"]["code"].clone()),
        (400, json!("too_deep")),
        "{reply}"
    );
    let (status, _) = api.post("/v1/publish", body(8)).await;
    assert_eq!(status, 200);
    let batch = json!({ "events": [
        { "room": "news", "event": "e", "data": 1 },
        { "room": "news", "event": "e", "data": nested(9) },
    ] });
    let (status, _) = api.post("/v1/publish/batch", batch.to_string()).await;
    assert_eq!(status, 400, "the whole batch is refused");
    let broadcast = json!({ "event": "e", "data": nested(9) });
    let (status, _) = api.post("/v1/broadcast", broadcast.to_string()).await;
    assert_eq!(status, 400);
    let (mut client, _) = WsClient::connect(addr, &token("p", &[], &[], &["news"])).await;
    let ack = client
        .emit_with_ack(
            1,
            "publish",
            &[json!({ "room": "news", "event": "e", "data": nested(9) })],
        )
        .await;
    assert_eq!(ack[0]["ok"], json!(false), "{ack}");
    assert!(
        ack[0]["error"].as_str().unwrap().contains("deeper"),
        "{ack}"
    );
    node.shutdown(Duration::from_millis(200)).await;
}

/// Presenting someone else's recovery id must neither disconnect them nor consume their parked session.
#[tokio::test]
async fn another_users_pid_takes_nothing() {
    let node = start(|_| {}).await;
    let addr = node.local_addr();
    let api = Api::new(addr);
    let alice = token("alice", &[], &["news"], &[]);
    let (mut live, reply) = WsClient::connect(addr, &alice).await;
    let pid = reply["pid"].as_str().unwrap().to_owned();
    let sid = reply["sid"].as_str().unwrap().to_owned();

    // Bob with Alice's pid while she is connected: a fresh session for him, she stays.
    let mut bob = WsClient::handshake(addr).await;
    let bob_token = token("bob", &[], &[], &[]);
    let stolen = json!({ "token": bob_token, "pid": pid, "offset": "0" });
    let reply = bob.socketio_connect(&format!("40{stolen}")).await;
    assert_ne!(reply["sid"], json!(sid), "not recovered: {reply}");
    api.publish("news", "update", json!({ "n": 1 })).await;
    live.recv_event_with("update", "n", &json!(1), WAIT).await;
    assert!(!live.is_closed());

    // Alice's connection drops: her session is parked. Bob's attempt must not consume it.
    live.drop_connection();
    api.wait_connections(1, WAIT).await;
    let mut bob = WsClient::handshake(addr).await;
    let reply = bob.socketio_connect(&format!("40{stolen}")).await;
    assert_ne!(reply["sid"], json!(sid));
    api.publish("news", "update", json!({ "n": 2 })).await;
    let mut back = WsClient::handshake(addr).await;
    let resume = json!({ "token": alice, "pid": pid, "offset": "0" });
    let reply = back.socketio_connect(&format!("40{resume}")).await;
    assert_eq!(reply["sid"], json!(sid), "Alice recovers her own session");
    back.recv_event_with("update", "n", &json!(2), WAIT).await;
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn tokens_without_exp_are_refused_by_default() {
    let node = start(|_| {}).await;
    let addr = node.local_addr();
    let mut client = WsClient::handshake(addr).await;
    client.send_text(&connect_packet(&token_expiring("u", &[], None)));
    let reply = client
        .recv_until(|f| f.text().is_some_and(|t| t.starts_with("44")), WAIT)
        .await;
    assert!(reply.text().unwrap().contains("unauthorized"), "{reply:?}");
    node.shutdown(Duration::from_millis(200)).await;

    let node = start(|c| c.auth.require_exp = false).await;
    let (_client, reply) =
        WsClient::connect(node.local_addr(), &token_expiring("u", &[], None)).await;
    assert!(reply["sid"].is_string());
    node.shutdown(Duration::from_millis(200)).await;
}

/// At `exp` a live socket is told and disconnected; one that refreshed in time stays, with the new token's
/// rooms only.
#[tokio::test]
async fn live_sockets_expire_unless_refreshed() {
    let node = start(|c| {
        c.auth.leeway_secs = 0;
        c.auth.expiry_notice_secs = 1;
    })
    .await;
    let addr = node.local_addr();
    let api = Api::new(addr);
    let exp = now() + 3;
    let (mut stale, _) =
        WsClient::connect(addr, &token_expiring("dave", &["a", "b"], Some(exp))).await;
    let (mut fresh, _) =
        WsClient::connect(addr, &token_expiring("erin", &["a", "b"], Some(exp))).await;
    for client in [&mut stale, &mut fresh] {
        client.subscribe(1, "a").await;
        client.subscribe(2, "b").await;
    }
    // Refresh: another user's token is refused, an expired one too; the same user's fresh one is taken.
    let other = token_expiring("mallory", &["*"], Some(now() + 3600));
    let ack = fresh
        .emit_with_ack(3, "refresh", &[json!({ "token": other })])
        .await;
    assert_eq!(ack[0], json!({ "ok": false, "error": "forbidden" }));
    let old = token_expiring("erin", &["*"], Some(now() - 60));
    let ack = fresh
        .emit_with_ack(4, "refresh", &[json!({ "token": old })])
        .await;
    assert_eq!(ack[0], json!({ "ok": false, "error": "token expired" }));
    let new_exp = now() + 3600;
    let renewed = token_expiring("erin", &["a"], Some(new_exp));
    let ack = fresh
        .emit_with_ack(5, "refresh", &[json!({ "token": renewed })])
        .await;
    assert_eq!(ack[0], json!({ "ok": true, "exp": new_exp, "left": ["b"] }));

    let expiring = stale
        .recv_until(
            |f| f.text().is_some_and(|t| t.contains("token:expiring")),
            WAIT,
        )
        .await;
    assert!(expiring.text().unwrap().contains(&format!("\"exp\":{exp}")));
    let expired = stale
        .recv_until(
            |f| f.text().is_some_and(|t| t.contains("token:expired")),
            WAIT,
        )
        .await;
    assert!(
        expired.text().unwrap().contains("token expired"),
        "{expired:?}"
    );
    let disconnect = stale.recv_text(WAIT).await;
    assert_eq!(disconnect, "41", "server-side DISCONNECT of the namespace");
    // The expired socket is out of its rooms; the refreshed one keeps `a` but left `b`.
    api.publish("b", "update", json!({ "n": 1 })).await;
    api.publish("a", "update", json!({ "n": 2 })).await;
    let event = fresh.recv_event(WAIT).await;
    assert_eq!(
        (event.name.as_str(), event.data.clone()),
        ("update", json!({ "n": 2 }))
    );
    let (_, room) = api.get("/v1/rooms/a").await;
    assert_eq!(room["members"], json!(1), "{room}");
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn rooms_per_socket_are_capped() {
    // The broadcast and personal rooms count: two more fit.
    let node = start(|c| c.limits.max_rooms_per_socket = 4).await;
    let addr = node.local_addr();
    let (mut client, _) = WsClient::connect(addr, &token("f", &["r*"], &[], &[])).await;
    client.subscribe(1, "r1").await;
    client.subscribe(2, "r2").await;
    client.subscribe(3, "r2").await;
    let ack = client.emit_with_ack(4, "subscribe", &[json!("r3")]).await;
    assert_eq!(ack[0]["ok"], json!(false));
    assert!(
        ack[0]["error"].as_str().unwrap().contains("too many rooms"),
        "{ack}"
    );
    let ack = client.emit_with_ack(5, "unsubscribe", &[json!("r1")]).await;
    assert_eq!(ack[0]["ok"], json!(true));
    client.subscribe(6, "r3").await;
    node.shutdown(Duration::from_millis(200)).await;
}
