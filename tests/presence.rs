//! Presence on an embedded node, over real websockets and the HTTP API: users (not connections) with their
//! device counts, in pages; `presence:join` / `presence:leave` coalesced per room and second, and one
//! `presence:reset` instead of a flood when many users change at once.

mod common;

use std::time::Duration;

use common::{start, token, Api, WsClient, WAIT};
use serde_json::json;
use tidings::config::{Config, RoomPolicy};
use tokio::time::Instant;

fn policies(config: &mut Config) {
    let mut team = RoomPolicy::new("team:*".parse().unwrap(), false);
    team.presence_events = true;
    config.rooms = vec![team];
}

async fn member(addr: std::net::SocketAddr, user: &str) -> WsClient {
    WsClient::connect(addr, &token(user, &["team:*"], &["team:1"], &[]))
        .await
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_listed_once_with_their_devices_in_pages() {
    let node = start(policies).await;
    let addr = node.local_addr();
    let api = Api::new(addr);
    let _alice_phone = member(addr, "alice").await;
    let _alice_laptop = member(addr, "alice").await;
    let mut bob = member(addr, "bob").await;
    let (status, stats) = api.get("/v1/rooms/team:1/presence/stats").await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(
        (stats["users"].clone(), stats["connections"].clone()),
        (json!(2), json!(3))
    );
    let (_, page) = api.get("/v1/rooms/team:1/presence?limit=1").await;
    let users = page["users"].as_array().unwrap();
    assert_eq!(
        (
            users.len(),
            users[0]["user"].clone(),
            users[0]["devices"].clone()
        ),
        (1, json!("alice"), json!(2))
    );
    assert!(users[0]["joined_at"].as_u64().unwrap() > 0);
    assert_eq!(page["cursor"], "alice");
    let (_, next) = api
        .get("/v1/rooms/team:1/presence?limit=1&cursor=alice")
        .await;
    assert_eq!(next["users"][0]["user"], "bob");
    assert!(next.get("cursor").is_none(), "last page: {next}");

    // The client event, for members only.
    let reply = bob
        .emit_with_ack(1, "presence", &[json!({ "room": "team:1" })])
        .await;
    let names: Vec<&str> = reply[0]["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user"].as_str().unwrap())
        .collect();
    assert_eq!(
        (reply[0]["ok"].clone(), names),
        (json!(true), vec!["alice", "bob"])
    );
    // Nobody may forge an announcement: the names are the server's.
    let (status, forged) = api
        .post(
            "/v1/publish",
            json!({ "room": "team:1", "event": "presence:leave", "data": { "room": "team:1", "user": "bob" } })
                .to_string(),
        )
        .await;
    assert_eq!(
        (status, forged["error"]["code"].as_str()),
        (400, Some("invalid_event")),
        "{forged}"
    );
    let (mut stranger, _) = WsClient::connect(addr, &token("eve", &["team:*"], &[], &[])).await;
    let refused = stranger
        .emit_with_ack(1, "presence", &[json!({ "room": "team:1" })])
        .await;
    assert_eq!(refused[0]["error"], "forbidden");

    // A user's last connection leaving takes the user out.
    drop(_alice_phone);
    drop(_alice_laptop);
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, stats) = api.get("/v1/rooms/team:1/presence/stats").await;
        if stats["users"] == 1 && stats["connections"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{stats}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_and_leaves_are_announced_once_per_user_and_coalesced() {
    let node = start(policies).await;
    let addr = node.local_addr();
    let mut watcher = member(addr, "watcher").await;
    let _ = watcher.presence_events(Duration::from_millis(1200)).await;

    let dave_phone = member(addr, "dave").await;
    let dave_laptop = member(addr, "dave").await;
    let got = watcher.presence_events(Duration::from_millis(1500)).await;
    assert_eq!(
        got,
        vec![(
            "presence:join".to_owned(),
            json!({ "room": "team:1", "user": "dave" })
        )]
    );

    drop(dave_phone);
    let got = watcher.presence_events(Duration::from_millis(1500)).await;
    assert!(got.is_empty(), "dave still has a device: {got:?}");
    drop(dave_laptop);
    let got = watcher.presence_events(Duration::from_millis(1500)).await;
    assert_eq!(
        got,
        vec![(
            "presence:leave".to_owned(),
            json!({ "room": "team:1", "user": "dave" })
        )]
    );

    // Gone and back within one flush: nothing to announce.
    let erin = member(addr, "erin").await;
    let _ = watcher.presence_events(Duration::from_millis(1500)).await;
    drop(erin);
    let _erin_again = member(addr, "erin").await;
    let got = watcher.presence_events(Duration::from_millis(1500)).await;
    // Either within one flush (nothing said) or across two (a leave, then a join): never a lone leave.
    let names: Vec<&str> = got.iter().map(|(name, _)| name.as_str()).collect();
    assert!(
        names.is_empty() || names == ["presence:leave", "presence:join"],
        "{got:?}"
    );
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_arriving_at_once_is_one_reset_not_a_flood() {
    let node = start(|config| {
        policies(config);
        config.limits.max_sessions_per_ip = 0;
        config.limits.handshakes_per_sec_per_ip = 0;
    })
    .await;
    let addr = node.local_addr();
    let mut watcher = member(addr, "watcher").await;
    let _ = watcher.presence_events(Duration::from_millis(1200)).await;
    let crowd: Vec<WsClient> = futures_util::future::join_all(
        (0..150).map(|n| async move { member(addr, &format!("u{n}")).await }),
    )
    .await;
    let got = watcher.presence_events(Duration::from_millis(2500)).await;
    let resets = got
        .iter()
        .filter(|(name, _)| name == "presence:reset")
        .count();
    let joins = got
        .iter()
        .filter(|(name, _)| name == "presence:join")
        .count();
    assert!(resets >= 1, "no reset: {} events", got.len());
    assert!(
        joins <= tidings::app::presence::MAX_CHANGES_PER_FLUSH,
        "{joins} joins announced one by one"
    );
    let (_, stats) = Api::new(addr).get("/v1/rooms/team:1/presence/stats").await;
    assert_eq!(stats["users"], 151, "{stats}");
    drop(crowd);
    node.shutdown(Duration::from_secs(1)).await;
}
