//! Presence across a cluster over a real Redis: every node answers with the users of all nodes (a user with
//! devices on two nodes is one user), announcements reach members on every node once per user, a node killed
//! with SIGKILL takes its users with it within the stated bound, and a node whose share Redis lost writes it
//! again by itself.

mod common;

use std::time::Duration;

use common::{start, token, unique_prefix, Api, DataDirNode, RedisServer, WsClient};
use serde_json::{json, Value};
use tidings::config::RoomPolicy;
use tidings::server::RunningNode;
use tokio::time::Instant;

async fn cluster_node(redis: &RedisServer, prefix: &str) -> RunningNode {
    let url = redis.url();
    let prefix = prefix.to_owned();
    start(move |config| {
        config.redis.url = url;
        config.redis.key_prefix = prefix;
        let mut team = RoomPolicy::new("team:*".parse().unwrap(), false);
        team.presence_events = true;
        config.rooms = vec![team];
    })
    .await
}

async fn member(addr: std::net::SocketAddr, user: &str) -> WsClient {
    WsClient::connect(addr, &token(user, &["team:*"], &["team:1"], &[]))
        .await
        .0
}

fn counts(stats: &Value) -> (u64, u64) {
    (
        stats["users"].as_u64().unwrap_or(0),
        stats["connections"].as_u64().unwrap_or(0),
    )
}

fn users(page: &Value) -> Vec<(String, u64)> {
    page["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["user"].as_str().unwrap().to_owned(),
                u["devices"].as_u64().unwrap(),
            )
        })
        .collect()
}

const STATS: &str = "/v1/rooms/team:1/presence/stats";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_cluster_wide_and_per_user() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("presence");
    let a = cluster_node(&redis, &prefix).await;
    let b = cluster_node(&redis, &prefix).await;
    let (api_a, api_b) = (Api::new(a.local_addr()), Api::new(b.local_addr()));

    let mut carol = member(a.local_addr(), "carol").await;
    let alice_phone = member(a.local_addr(), "alice").await;
    let alice_laptop = member(b.local_addr(), "alice").await;
    let _bob = member(b.local_addr(), "bob").await;

    // Both nodes see three users (alice once, with her two devices) and four connections.
    for api in [&api_a, &api_b] {
        api.wait_for(STATS, Duration::from_secs(5), |s| counts(s) == (3, 4))
            .await;
    }
    let (_, first) = api_b.get("/v1/rooms/team:1/presence?limit=2").await;
    assert_eq!(
        users(&first),
        [("alice".to_owned(), 2), ("bob".to_owned(), 1)]
    );
    assert_eq!(first["cursor"], "bob");
    assert!(first["users"][0]["joined_at"].as_u64().unwrap() > 0);
    let (_, rest) = api_b
        .get("/v1/rooms/team:1/presence?limit=2&cursor=bob")
        .await;
    assert_eq!(users(&rest), [("carol".to_owned(), 1)]);
    assert!(rest.get("cursor").is_none(), "{rest}");
    // The client event reads the same cluster-wide list.
    let page = carol
        .emit_with_ack(1, "presence", &[json!({ "room": "team:1" })])
        .await;
    assert_eq!(page[0]["ok"], true, "{page}");
    assert_eq!(page[0]["users"].as_array().unwrap().len(), 3, "{page}");

    // A user joining on B is announced to a member on A, once.
    let _ = carol.presence_events(Duration::from_millis(1200)).await;
    let dave = member(b.local_addr(), "dave").await;
    let got = carol.presence_events(Duration::from_millis(2500)).await;
    assert_eq!(
        got,
        [(
            "presence:join".to_owned(),
            json!({ "room": "team:1", "user": "dave" })
        )]
    );

    // alice leaving B keeps her present (her phone is on A); leaving A too takes her out, announced once.
    drop(alice_laptop);
    api_a
        .wait_for(STATS, Duration::from_secs(5), |s| counts(s) == (4, 4))
        .await;
    drop(alice_phone);
    drop(dave);
    let got = carol.presence_events(Duration::from_millis(2500)).await;
    let mut left: Vec<String> = got
        .iter()
        .map(|(name, data)| {
            assert_eq!(name, "presence:leave", "{got:?}");
            data["user"].as_str().unwrap().to_owned()
        })
        .collect();
    left.sort();
    assert_eq!(left, ["alice", "dave"]);
    api_b
        .wait_for(STATS, Duration::from_secs(5), |s| counts(s) == (2, 2))
        .await;
    a.shutdown(Duration::from_secs(1)).await;
    b.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_takes_its_users_with_it() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("presence-kill");
    let a = cluster_node(&redis, &prefix).await;
    let api_a = Api::new(a.local_addr());
    let dir = std::env::temp_dir().join(&prefix);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("tidings.toml");
    std::fs::write(
        &config,
        "[[rooms]]\npattern = \"team:*\"\npresence_events = true\n",
    )
    .unwrap();
    let url = redis.url();
    let b = DataDirNode::spawn(
        "127.0.0.1:0",
        &[
            "--redis".as_ref(),
            url.as_ref(),
            "--redis-key-prefix".as_ref(),
            prefix.as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
        ],
    );

    let mut carol = member(a.local_addr(), "carol").await;
    let _bob = member(b.addr, "bob").await;
    let _eve = member(b.addr, "eve").await;
    api_a
        .wait_for(STATS, Duration::from_secs(5), |s| counts(s) == (3, 3))
        .await;
    let _ = carol.presence_events(Duration::from_millis(1200)).await;

    let killed = Instant::now();
    b.kill();
    // Nobody tells the cluster: the registry entry expires, and a sweep of A removes B's share.
    let bound = tidings::app::presence::EXPIRY_BOUND + Duration::from_secs(3);
    api_a.wait_for(STATS, bound, |s| counts(s) == (1, 1)).await;
    let gone_after = killed.elapsed();
    let got = carol.presence_events(Duration::from_millis(2500)).await;
    let mut left: Vec<String> = got
        .iter()
        .filter(|(name, _)| name == "presence:leave")
        .map(|(_, data)| data["user"].as_str().unwrap().to_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["bob", "eve"], "{got:?}");
    let (_, page) = api_a.get("/v1/rooms/team:1/presence").await;
    assert_eq!(users(&page), [("carol".to_owned(), 1)]);
    eprintln!("a killed node's users were gone after {gone_after:?}");
    let _ = std::fs::remove_dir_all(&dir);
    a.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_writes_its_share_again_when_redis_lost_it() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("presence-lost");
    let a = cluster_node(&redis, &prefix).await;
    let api_a = Api::new(a.local_addr());
    let _carol = member(a.local_addr(), "carol").await;
    let _dave = member(a.local_addr(), "dave").await;
    api_a
        .wait_for(STATS, Duration::from_secs(5), |s| counts(s) == (2, 2))
        .await;

    let mut conn = redis.conn().await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    let (_, emptied) = api_a.get(STATS).await;
    assert_eq!(counts(&emptied), (0, 0), "{emptied}");
    // The next sweeper round notices the node is not listed and writes its share again.
    api_a
        .wait_for(STATS, Duration::from_secs(8), |s| counts(s) == (2, 2))
        .await;
    a.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_on_another_node_is_one_reset_not_a_flood() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("presence-crowd");
    let a = cluster_node(&redis, &prefix).await;
    let url = redis.url();
    let b_prefix = prefix.clone();
    let b = start(move |config| {
        config.redis.url = url;
        config.redis.key_prefix = b_prefix;
        let mut team = RoomPolicy::new("team:*".parse().unwrap(), false);
        team.presence_events = true;
        config.rooms = vec![team];
        config.limits.max_sessions_per_ip = 0;
        config.limits.handshakes_per_sec_per_ip = 0;
    })
    .await;
    let mut watcher = member(a.local_addr(), "watcher").await;
    let _ = watcher.presence_events(Duration::from_millis(1200)).await;
    let addr = b.local_addr();
    let crowd: Vec<WsClient> = futures_util::future::join_all(
        (0..250).map(|n| async move { member(addr, &format!("u{n:03}")).await }),
    )
    .await;
    let got = watcher.presence_events(Duration::from_millis(3000)).await;
    let resets = got.iter().filter(|(name, _)| name == "presence:reset");
    let joins = got.iter().filter(|(name, _)| name == "presence:join");
    assert!(resets.count() >= 1, "no reset: {} events", got.len());
    assert!(
        joins.count() < 250,
        "every join was announced one by one: {got:?}"
    );
    Api::new(a.local_addr())
        .wait_for(STATS, Duration::from_secs(5), |s| counts(s) == (251, 251))
        .await;
    drop(crowd);
    a.shutdown(Duration::from_secs(1)).await;
    b.shutdown(Duration::from_secs(1)).await;
}
