//! Direct messages on an embedded node with a data directory survive `kill -9` of the real process: every
//! message answered 2xx is delivered after the restart, in order, and what a device acknowledged before the
//! kill does not come back to it.

mod common;

use std::time::Duration;

use common::{Api, DataDirNode, WsClient, WAIT};
use serde_json::{json, Value};

fn bob_token() -> String {
    common::token("bob", &[], &[], &[])
}

/// Events `42<ack>["note", n, meta]` a device receives, as (ack id, n).
async fn next_note(client: &mut WsClient) -> (u64, i64) {
    let frame = client
        .recv_until(
            |f| {
                f.text()
                    .is_some_and(|t| t.starts_with("42") && t.contains("[\"note\""))
            },
            WAIT,
        )
        .await;
    let text = &frame.text().unwrap()[2..];
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let items: Vec<Value> = serde_json::from_str(&text[digits..]).unwrap();
    (text[..digits].parse().unwrap(), items[1].as_i64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_messages_and_receipts_survive_kill_9() {
    let dir = std::env::temp_dir().join(format!("tidings-dm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);

    let node = DataDirNode::start("127.0.0.1:0", &dir, &[]);
    let api = Api::new(node.addr);
    let mut ids = Vec::new();
    for n in 0..50 {
        let (status, body) = api
            .post(
                "/v1/users/bob/messages",
                json!({ "event": "note", "data": n, "from": "alice" }).to_string(),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    // A device takes the first ten and acknowledges them, then the node dies.
    let auth = json!({ "token": bob_token(), "device": "phone" });
    let mut phone = WsClient::handshake(node.addr).await;
    phone.socketio_connect(&format!("40{auth}")).await;
    for expected in 0..10 {
        let (ack, n) = next_note(&mut phone).await;
        assert_eq!(n, expected);
        phone.send_text(&format!("43{ack}[]"));
    }
    let api_check = Api::new(node.addr);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, m) = api_check.get(&format!("/v1/messages/{}", ids[9])).await;
        if m["status"] == "delivered" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    phone.drop_connection();
    node.kill();

    let node = DataDirNode::start("127.0.0.1:0", &dir, &[]);
    let api = Api::new(node.addr);
    let (status, first) = api.get(&format!("/v1/messages/{}", ids[0])).await;
    assert_eq!((status, first["status"].as_str()), (200, Some("delivered")));
    assert_eq!(first["devices"][0]["device"], "phone");
    let mut phone = WsClient::handshake(node.addr).await;
    phone.socketio_connect(&format!("40{auth}")).await;
    for expected in 10..50 {
        let (ack, n) = next_note(&mut phone).await;
        assert_eq!(n, expected, "in order, nothing acknowledged comes back");
        phone.send_text(&format!("43{ack}[]"));
    }
    // A new message after the restart continues the sequence.
    let (status, body) = api
        .post(
            "/v1/users/bob/messages",
            json!({ "event": "note", "data": 50, "from": "alice" }).to_string(),
        )
        .await;
    assert_eq!((status, body["seq"].as_u64()), (200, Some(51)));
    assert_eq!(next_note(&mut phone).await.1, 50);
    node.kill();
    let _ = std::fs::remove_dir_all(&dir);
}
