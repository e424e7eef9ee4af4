//! Cluster nodes over a real Redis: the node registry (`/v1/nodes`, `/v1/nodes/pick`, expiry of dead nodes,
//! graceful leave), refusing clients past `max_connections`, and serving a session through a node that does not
//! own it (forwarded long-polling and a spliced websocket upgrade).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{start, token, unique_prefix, Api, Polling, RawWs, RedisServer, WAIT};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tidings::server::RunningNode;

use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// Starts a node of the cluster on `redis` under `prefix`, with `max_connections`.
async fn cluster_node(redis: &RedisServer, prefix: &str, max_connections: usize) -> RunningNode {
    let url = redis.url();
    let prefix = prefix.to_owned();
    start(move |config| {
        config.redis.url = url;
        config.redis.key_prefix = prefix;
        config.limits.max_connections = max_connections;
    })
    .await
}

fn id_of(node: &RunningNode) -> String {
    node.node()
        .registry
        .as_ref()
        .expect("cluster node without a registry")
        .me()
        .id
        .as_str()
        .to_owned()
}

/// `GET /v1/nodes` on `api`, as `id -> connections`, sorted by id.
async fn nodes(api: &Api) -> Vec<(String, u64)> {
    let (status, reply) = api.get("/v1/nodes").await;
    assert_eq!(status, 200, "{reply}");
    reply["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap().to_owned(),
                n["connections"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Polls `/v1/nodes` on `api` until `done` holds for the listing; panics after `timeout`.
async fn wait_nodes(
    api: &Api,
    timeout: Duration,
    done: impl Fn(&[(String, u64)]) -> bool,
) -> Vec<(String, u64)> {
    let deadline = Instant::now() + timeout;
    loop {
        let listing = nodes(api).await;
        if done(&listing) {
            return listing;
        }
        assert!(
            Instant::now() < deadline,
            "node listing still {listing:?} after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sorted(mut items: Vec<(String, u64)>) -> Vec<(String, u64)> {
    items.sort();
    items
}

#[tokio::test]
async fn nodes_are_listed_with_their_load_and_the_least_loaded_is_picked() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("list");
    let a = cluster_node(&redis, &prefix, 100).await;
    let b = cluster_node(&redis, &prefix, 100).await;
    let c = cluster_node(&redis, &prefix, 100).await;
    let (ida, idb, idc) = (id_of(&a), id_of(&b), id_of(&c));
    let api_a = Api::new(a.local_addr());
    let api_c = Api::new(c.local_addr());

    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(RawWs::handshake(a.local_addr()).await);
    }
    clients.push(RawWs::handshake(b.local_addr()).await);
    let want = sorted(vec![(ida.clone(), 3), (idb.clone(), 1), (idc.clone(), 0)]);
    // Other nodes' counts arrive with their next heartbeat.
    wait_nodes(&api_c, Duration::from_secs(5), |l| l == want.as_slice()).await;

    let (status, reply) = api_a.get("/v1/nodes").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["self"], ida.as_str());
    for node in reply["nodes"].as_array().unwrap() {
        let running = [&a, &b, &c]
            .into_iter()
            .find(|n| id_of(n) == node["id"].as_str().unwrap())
            .unwrap();
        assert_eq!(node["url"], format!("http://{}", running.local_addr()));
        assert_eq!(node["max_connections"], 100);
        assert!(node["started_at"].as_u64().unwrap() > 0, "{node}");
    }

    let (status, pick) = api_a.get("/v1/nodes/pick").await;
    assert_eq!(status, 200, "{pick}");
    assert_eq!(
        pick,
        json!({ "id": idc, "url": format!("http://{}", c.local_addr()), "connections": 0 })
    );

    // Behind the API key like every /v1 route.
    let response = api_a
        .http
        .get(format!("{}/v1/nodes", api_a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    drop(clients);
    for node in [a, b, c] {
        node.shutdown(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_node_alone_answers_for_itself() {
    let node = start(|_| {}).await;
    let api = Api::new(node.local_addr());
    let _client = RawWs::handshake(node.local_addr()).await;
    let (status, reply) = api.get("/v1/nodes").await;
    assert_eq!(status, 200, "{reply}");
    let listed = reply["nodes"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{reply}");
    assert_eq!(listed[0]["id"], reply["self"]);
    assert_eq!(listed[0]["connections"], 1);
    assert_eq!(listed[0]["url"], format!("http://{}", node.local_addr()));
    let (status, pick) = api.get("/v1/nodes/pick").await;
    assert_eq!(status, 200, "{pick}");
    assert_eq!(pick["id"], reply["self"]);
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_node_that_stops_beating_drops_out_and_one_that_leaves_goes_at_once() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("expiry");
    let a = cluster_node(&redis, &prefix, 100).await;
    let b = cluster_node(&redis, &prefix, 100).await;
    let c = cluster_node(&redis, &prefix, 100).await;
    let (ida, idb, idc) = (id_of(&a), id_of(&b), id_of(&c));
    let api_b = Api::new(b.local_addr());
    wait_nodes(&api_b, WAIT, |l| l.len() == 3).await;

    // Graceful: gone at once.
    c.shutdown(Duration::from_millis(100)).await;
    wait_nodes(&api_b, Duration::from_millis(500), |l| {
        !l.iter().any(|(id, _)| *id == idc)
    })
    .await;

    // Crash: gone once its entry expires (6.5 s after the last beat).
    a.node().registry.as_ref().unwrap().stop_heartbeat();
    let stopped = Instant::now();
    let listing = wait_nodes(&api_b, Duration::from_secs(8), |l| {
        !l.iter().any(|(id, _)| *id == ida)
    })
    .await;
    let took = stopped.elapsed();
    assert!(took <= Duration::from_millis(7500), "took {took:?}");
    assert_eq!(listing, vec![(idb.clone(), 0)]);
    // The reader dropped the dead id from the set too.
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg(format!("{prefix}:nodes"))
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    assert_eq!(members, vec![idb]);
    a.shutdown(Duration::from_millis(100)).await;
    b.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn a_draining_node_stays_listed_as_draining_is_never_picked_and_leaves_when_done() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("draining");
    let a = cluster_node(&redis, &prefix, 100).await;
    let b = cluster_node(&redis, &prefix, 100).await;
    let (ida, idb) = (id_of(&a), id_of(&b));
    let api_a = Api::new(a.local_addr());
    let api_b = Api::new(b.local_addr());
    wait_nodes(&api_a, WAIT, |l| l.len() == 2).await;
    // b holds fewer clients than a: the one picked, until it drains.
    let _held = RawWs::handshake(a.local_addr()).await;
    wait_nodes(&api_b, WAIT, |l| {
        l.iter().any(|(id, n)| *id == ida && *n == 1)
    })
    .await;
    let (_, pick) = api_a.get("/v1/nodes/pick").await;
    assert_eq!(pick["id"], idb.as_str());

    let (hurry, hurry_rx) = tokio::sync::watch::channel(false);
    let plan = tidings::drain::DrainPlan {
        unready: Duration::from_secs(30),
        window: Duration::ZERO,
        deadline: Duration::from_secs(40),
    };
    let draining = tokio::spawn(b.drain(plan, Some(hurry_rx)));
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, reply) = api_a.get("/v1/nodes").await;
        assert_eq!(status, 200, "{reply}");
        let entry = reply["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == idb.as_str())
            .cloned()
            .expect("a draining node stays listed, so its sessions can still be reached");
        if entry["draining"] == true {
            assert!(entry["rss_bytes"].as_u64().unwrap() > 0, "{entry}");
            assert!(entry["cpu_percent"].is_number() && entry["events_per_sec"].is_number());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never listed as draining: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, pick) = api_a.get("/v1/nodes/pick").await;
    assert_eq!(pick["id"], ida.as_str(), "a draining node is not picked");
    let (status, ready) = api_b.get("/readyz").await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["draining"], true);

    hurry.send(true).unwrap();
    tokio::time::timeout(WAIT, draining).await.unwrap().unwrap();
    wait_nodes(&api_a, Duration::from_millis(500), |l| {
        !l.iter().any(|(id, _)| *id == idb)
    })
    .await;
    a.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn a_full_node_refuses_clearly_and_is_not_picked() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("full");
    let a = cluster_node(&redis, &prefix, 1).await;
    let b = cluster_node(&redis, &prefix, 100).await;
    let (ida, idb) = (id_of(&a), id_of(&b));
    let _on_a = Polling::handshake(a.local_addr()).await;
    let _on_b = RawWs::handshake(b.local_addr()).await;

    // Polling handshake: 503 with the Engine.IO error body.
    let response = reqwest::get(format!(
        "http://{}/socket.io/?EIO=4&transport=polling",
        a.local_addr()
    ))
    .await
    .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({ "code": 4, "message": "Server full: max_connections reached" })
    );

    // Websocket: the upgrade succeeds, then a 1013 "try again later" close with the same reason.
    let url = format!(
        "ws://{}/socket.io/?EIO=4&transport=websocket",
        a.local_addr()
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let close = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("no close frame");
    match close {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 1013);
            assert_eq!(
                frame.reason.as_str(),
                "Server full: max_connections reached"
            );
        }
        other => panic!("expected a close frame, got {other:?}"),
    }

    // Both nodes have one connection; only b has room.
    let api_b = Api::new(b.local_addr());
    let want = sorted(vec![(ida, 1), (idb.clone(), 1)]);
    wait_nodes(&api_b, Duration::from_secs(5), |l| l == want.as_slice()).await;
    let (status, pick) = api_b.get("/v1/nodes/pick").await;
    assert_eq!((status, pick["id"].as_str()), (200, Some(idb.as_str())));

    // Nobody has room: 503 JSON error.
    let c = cluster_node(&redis, &unique_prefix("full-alone"), 1).await;
    let _on_c = Polling::handshake(c.local_addr()).await;
    let (status, reply) = Api::new(c.local_addr()).get("/v1/nodes/pick").await;
    assert_eq!(status, 503, "{reply}");
    assert_eq!(reply["error"]["code"], "no_node_available");
    for node in [a, b, c] {
        node.shutdown(Duration::from_millis(100)).await;
    }
}

/// The same polling session as `on`, addressed to `addr`.
fn polling_via(on: &Polling, addr: SocketAddr) -> Polling {
    Polling {
        http: reqwest::Client::new(),
        endpoint: format!("http://{addr}/socket.io/"),
        sid: on.sid.clone(),
        open: on.open.clone(),
    }
}

#[tokio::test]
async fn polling_requests_for_another_nodes_session_are_forwarded() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("poll");
    let a = cluster_node(&redis, &prefix, 100).await;
    let b = cluster_node(&redis, &prefix, 100).await;
    let (api_a, api_b) = (Api::new(a.local_addr()), Api::new(b.local_addr()));
    wait_nodes(&api_b, WAIT, |l| l.len() == 2).await;

    let on_a = Polling::handshake(a.local_addr()).await;
    assert!(on_a.sid.starts_with(&id_of(&a)));
    let via_b = polling_via(&on_a, b.local_addr());
    let reply = via_b
        .socketio_connect(&token("alice", &["news"], &["news"], &[]))
        .await;
    assert!(reply["sid"].is_string(), "{reply}");
    assert_eq!(api_a.connections().await, 1);
    assert_eq!(api_b.connections().await, 0);

    // A long-poll through b waits on a until something is published there.
    let poll = tokio::spawn(async move {
        let got = via_b.get().await;
        (got, via_b)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poll.is_finished(), "the forwarded GET did not wait");
    api_a
        .publish("news", "update", json!({ "headline": "forwarded" }))
        .await;
    let ((status, body), via_b) = tokio::time::timeout(WAIT, poll).await.unwrap().unwrap();
    assert_eq!(status, 200);
    assert!(
        body.starts_with(r#"42["update",{"headline":"forwarded"}"#),
        "{body}"
    );

    // A POST through b reaches the session on a (here: an ack'd subscribe).
    let (status, ok) = via_b.post(r#"421["subscribe","news"]"#).await;
    assert_eq!((status, ok.as_str()), (200, "ok"));
    let (status, body) = tokio::time::timeout(WAIT, via_b.get()).await.unwrap();
    assert_eq!((status, body.as_str()), (200, r#"431[{"ok":true}]"#));

    // The client's close through b ends the session on a.
    let (status, _) = via_b.post("1").await;
    assert_eq!(status, 200);
    let (status, body) = tokio::time::timeout(WAIT, via_b.get()).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "6"));
    api_a.wait_connections(0, WAIT).await;
    a.shutdown(Duration::from_millis(100)).await;
    b.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn a_websocket_upgrade_sent_to_another_node_is_spliced_to_the_owner() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("ws");
    let a = cluster_node(&redis, &prefix, 100).await;
    let b = cluster_node(&redis, &prefix, 100).await;
    let api_a = Api::new(a.local_addr());
    wait_nodes(&Api::new(b.local_addr()), WAIT, |l| l.len() == 2).await;

    let on_a = Polling::handshake(a.local_addr()).await;
    let reply = on_a
        .socketio_connect(&token("bob", &["news", "team"], &["news"], &[]))
        .await;
    assert!(reply["sid"].is_string(), "{reply}");

    let url = format!(
        "ws://{}/socket.io/?EIO=4&transport=websocket&sid={}",
        b.local_addr(),
        on_a.sid
    );
    // tungstenite checks the Sec-WebSocket-Accept relayed from a.
    let (mut ws, response) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(response.status().as_u16(), 101);
    ws.send(Message::text("2probe")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "3probe");
    ws.send(Message::text("5")).await.unwrap();

    api_a.publish("news", "update", json!({ "n": 1 })).await;
    let event = next_text(&mut ws).await;
    assert!(event.starts_with(r#"42["update",{"n":1}"#), "{event}");
    // Upgraded: polling is over for this session.
    let (status, _) = on_a.get().await;
    assert_eq!(status, 400);
    ws.send(Message::text(r#"427["subscribe","team"]"#))
        .await
        .unwrap();
    assert_eq!(next_text(&mut ws).await, r#"437[{"ok":true}]"#);
    api_a.publish("team", "memo", json!({ "n": 2 })).await;
    let event = next_text(&mut ws).await;
    assert!(event.starts_with(r#"42["memo",{"n":2}"#), "{event}");

    // Closing the client's side ends the session on its owner.
    ws.close(None).await.unwrap();
    api_a.wait_connections(0, WAIT).await;
    a.shutdown(Duration::from_millis(100)).await;
    b.shutdown(Duration::from_millis(100)).await;
}

/// The next text frame that is not an Engine.IO ping.
async fn next_text<S>(ws: &mut S) -> String
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) if text.as_str() != "2" => {
                return text.as_str().to_owned()
            }
            Ok(Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_)))) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn forwarding_loops_and_unknown_owners_are_refused() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("loop");
    let a = cluster_node(&redis, &prefix, 100).await;
    let b = cluster_node(&redis, &prefix, 100).await;
    wait_nodes(&Api::new(b.local_addr()), WAIT, |l| l.len() == 2).await;
    let on_a = Polling::handshake(a.local_addr()).await;
    let url = format!(
        "http://{}/socket.io/?EIO=4&transport=polling&sid={}",
        b.local_addr(),
        on_a.sid
    );
    let http = reqwest::Client::new();

    // Already forwarded once: refused, not forwarded again.
    let response = http
        .get(&url)
        .header("x-tidings-forwarded", "zzzzzz")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], 3, "{body}");

    // A session of a node nobody knows: the usual unknown-sid answer.
    let unknown = format!(
        "http://{}/socket.io/?EIO=4&transport=polling&sid=QQQQQQ{}",
        b.local_addr(),
        &on_a.sid[6..]
    );
    let response = http.get(&unknown).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({ "code": 1, "message": "Session ID unknown" }));

    // The session itself is untouched and still served through b.
    let (status, body) = polling_via(&on_a, b.local_addr()).post("40").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    a.shutdown(Duration::from_millis(100)).await;
    b.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn the_registry_survives_a_redis_outage() {
    let mut redis = RedisServer::start().await;
    let prefix = unique_prefix("outage");
    let a = cluster_node(&redis, &prefix, 100).await;
    let ida = id_of(&a);
    let api = Api::new(a.local_addr());
    wait_nodes(&api, WAIT, |l| l.len() == 1).await;

    let _ = redis.child.kill();
    let _ = redis.child.wait();
    let (status, reply) = api.get("/v1/nodes").await;
    assert_eq!(status, 503, "{reply}");
    assert_eq!(reply["error"]["code"], "registry_unavailable");
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A new, empty Redis: the heartbeat registers the node again on its own.
    redis.restart().await;
    let mut conn = redis.conn().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(format!("{prefix}:nodes"))
            .query_async(&mut conn)
            .await
            .unwrap();
        if members == vec![ida.clone()] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not registered again: {members:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(nodes(&api).await, vec![(ida, 0)]);
    a.shutdown(Duration::from_millis(100)).await;
}
