//! Direct messages on three nodes sharing a real redis-server: devices of one user on two nodes both get a
//! message sent on a third, the sender sees every status, any node answers for the message and for presence,
//! and a device connecting to yet another node reads its inbox.

mod common;

use std::time::Duration;

use common::dm::{ack, assert_none, device, next_named, next_status, next_status_from};
use common::{start, unique_prefix, Api, RedisServer, WAIT};
use serde_json::json;
use tidings::server::RunningNode;

async fn cluster_node(redis: &RedisServer, prefix: &str) -> RunningNode {
    let (url, prefix) = (redis.url(), prefix.to_owned());
    start(move |config| {
        config.redis.url = url;
        config.redis.key_prefix = prefix;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_on_other_nodes_get_messages_and_the_sender_every_status() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("dm");
    let nodes = [
        cluster_node(&redis, &prefix).await,
        cluster_node(&redis, &prefix).await,
        cluster_node(&redis, &prefix).await,
    ];
    let addr = |i: usize| nodes[i].local_addr();
    let mut alice = device(addr(0), "alice", &["bob"], "alice-web").await;
    let mut phone = device(addr(1), "bob", &[], "phone").await;
    let mut laptop = device(addr(2), "bob", &[], "laptop").await;
    let api0 = Api::new(addr(0));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, presence) = api0.get("/v1/users/bob").await;
        if presence["devices"] == 2 {
            assert_eq!(presence["online"], true);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{presence}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let reply = alice
        .emit_with_ack(
            1,
            "dm",
            &[json!({ "to": "bob", "event": "chat", "data": "hi" })],
        )
        .await;
    assert_eq!(reply[0]["ok"], true, "{reply}");
    let id = reply[0]["id"].as_str().unwrap().to_owned();
    let on_phone = next_named(&mut phone, "chat", WAIT).await;
    let on_laptop = next_named(&mut laptop, "chat", WAIT).await;
    assert_eq!(
        (
            on_phone.args[1]["id"].as_str(),
            on_laptop.args[1]["id"].as_str()
        ),
        (Some(id.as_str()), Some(id.as_str()))
    );
    assert_eq!(next_status(&mut alice, "sent").await["id"], id.as_str());
    ack(&phone, &on_phone);
    ack(&laptop, &on_laptop);
    next_status_from(&mut alice, "delivered", "phone").await;
    next_status_from(&mut alice, "delivered", "laptop").await;
    let read = laptop
        .emit_with_ack(2, "read", &[json!({ "from": "alice", "up_to": id })])
        .await;
    assert_eq!(read[0], json!({ "ok": true, "read": 1 }));
    assert_eq!(next_status(&mut alice, "read").await["id"], id.as_str());
    let (status, message) = Api::new(addr(1)).get(&format!("/v1/messages/{id}")).await;
    assert_eq!((status, message["status"].as_str()), (200, Some("read")));

    // A message while a third device is away; it connects to the first node and reads it from the inbox.
    let second = alice
        .emit_with_ack(
            3,
            "dm",
            &[json!({ "to": "bob", "event": "chat", "data": "again" })],
        )
        .await;
    let second_id = second[0]["id"].as_str().unwrap().to_owned();
    let mut tablet = device(addr(0), "bob", &[], "tablet").await;
    let got = next_named(&mut tablet, "chat", WAIT).await;
    assert_eq!(
        got.args[1]["id"],
        second_id.as_str(),
        "only the unread message"
    );
    assert_none(&mut tablet, "chat", Duration::from_millis(300)).await;
    for node in nodes {
        node.shutdown(Duration::from_secs(1)).await;
    }
}
