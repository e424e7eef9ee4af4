//! Honest answers in a cluster, over a real Redis: `GET /v1/rooms` and `/v1/rooms/{room}` count the members on
//! every live node (a node with no local member still lists the room), and a publish answers with the nodes it
//! reached under `nodes`, not a `recipients` count it cannot know.

mod common;

use std::time::Duration;

use common::{start, token, unique_prefix, Api, RedisServer, WsClient};
use serde_json::Value;
use tidings::server::RunningNode;

async fn cluster_node(redis: &RedisServer, prefix: &str) -> RunningNode {
    let url = redis.url();
    let prefix = prefix.to_owned();
    start(move |config| {
        config.redis.url = url;
        config.redis.key_prefix = prefix;
    })
    .await
}

fn room<'a>(listing: &'a Value, name: &str) -> Option<&'a Value> {
    listing["rooms"]
        .as_array()?
        .iter()
        .find(|r| r["name"] == name)
}

#[tokio::test]
async fn room_counts_cover_every_node() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("rooms");
    let a = cluster_node(&redis, &prefix).await;
    let b = cluster_node(&redis, &prefix).await;
    let (api_a, api_b) = (Api::new(a.local_addr()), Api::new(b.local_addr()));

    let (_alice, _) = WsClient::connect(a.local_addr(), &token("alice", &[], &["news"], &[])).await;
    let (_bob, _) = WsClient::connect(a.local_addr(), &token("bob", &[], &["news"], &[])).await;
    let (_carol, _) = WsClient::connect(
        b.local_addr(),
        &token("carol", &[], &["news", "sports"], &[]),
    )
    .await;

    // B has one local member of news and none of alice's room, yet lists both with every node's members.
    let listing = api_b
        .wait_for("/v1/rooms", Duration::from_secs(10), |l| {
            room(l, "news").is_some_and(|r| r["members"] == 3) && room(l, "user:alice").is_some()
        })
        .await;
    assert_eq!(listing["scope"], "cluster");
    assert_eq!(
        room(&listing, "news").unwrap()["local_members"],
        1,
        "{listing}"
    );
    let alice = room(&listing, "user:alice").unwrap();
    assert_eq!(
        (alice["members"].as_u64(), alice["local_members"].as_u64()),
        (Some(1), Some(0))
    );
    let (_, news) = api_a.get("/v1/rooms/news").await;
    assert_eq!(
        (news["members"].as_u64(), news["local_members"].as_u64()),
        (Some(3), Some(2)),
        "{news}"
    );
    assert_eq!(news["scope"], "cluster");
    let (_, sports) = api_a.get("/v1/rooms/sports").await;
    assert_eq!(
        (sports["members"].as_u64(), sports["local_members"].as_u64()),
        (Some(1), Some(0))
    );

    // A publish in cluster mode says how many nodes it reached, not a per-connection count.
    let reply = api_b.publish("news", "update", serde_json::json!(1)).await;
    assert_eq!(reply["nodes"], 2, "{reply}");
    assert!(reply.get("recipients").is_none(), "{reply}");

    // A node that goes away takes its members with it once its counts expire.
    a.shutdown(Duration::from_millis(200)).await;
    let listing = api_b
        .wait_for("/v1/rooms", Duration::from_secs(10), |l| {
            room(l, "news").is_some_and(|r| r["members"] == 1) && room(l, "user:alice").is_none()
        })
        .await;
    assert_eq!(room(&listing, "news").unwrap()["local_members"], 1);
    b.shutdown(Duration::from_millis(200)).await;
}
