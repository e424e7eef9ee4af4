//! Direct messages on an embedded node, over real websockets and the HTTP API: statuses back to the sender,
//! per-device receipts, the offline inbox, ttl expiry, idempotent resends, refusals and order.

mod common;

use std::time::Duration;

use common::dm::{ack, assert_none, device, next_named, next_status, next_status_from};
use common::{start, Api, WAIT};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_reach_the_sender_and_receipts_are_per_device() {
    let node = start(|_| {}).await;
    let addr = node.local_addr();
    let api = Api::new(addr);
    let mut alice = device(addr, "alice", &["bob"], "alice-phone").await;
    let mut phone = device(addr, "bob", &[], "phone").await;
    let mut laptop = device(addr, "bob", &[], "laptop").await;
    let (_, user) = api.get("/v1/users/bob").await;
    assert_eq!(user, json!({ "user": "bob", "online": true, "devices": 2 }));

    let reply = alice
        .emit_with_ack(
            1,
            "dm",
            &[json!({ "to": "bob", "event": "chat", "data": { "text": "hi" } })],
        )
        .await;
    let id = reply[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(reply[0]["ok"], true);
    assert_eq!(reply[0]["status"], "accepted");
    assert_eq!(next_status(&mut alice, "accepted").await["id"], id.as_str());

    let on_phone = next_named(&mut phone, "chat", WAIT).await;
    let on_laptop = next_named(&mut laptop, "chat", WAIT).await;
    for got in [&on_phone, &on_laptop] {
        assert_eq!(got.args[0], json!({ "text": "hi" }));
        assert_eq!(got.args[1]["id"], id.as_str());
        assert_eq!(got.args[1]["from"], "alice");
        assert_eq!(got.args[1]["seq"], 1);
    }
    let sent = next_status(&mut alice, "sent").await;
    assert_eq!(
        (sent["id"].as_str(), sent["to"].as_str()),
        (Some(id.as_str()), Some("bob"))
    );

    ack(&phone, &on_phone);
    let delivered = next_status_from(&mut alice, "delivered", "phone").await;
    assert_eq!(delivered["id"], id.as_str());
    // The second device acknowledges with the reserved `ack` event instead of the callback.
    let reply = laptop
        .emit_with_ack(2, "ack", &[json!({ "ids": [id] })])
        .await;
    assert_eq!(reply[0], json!({ "ok": true, "delivered": 1 }));
    assert_eq!(
        next_status_from(&mut alice, "delivered", "laptop").await["id"],
        id.as_str()
    );

    let reply = phone
        .emit_with_ack(3, "read", &[json!({ "from": "alice", "up_to": id })])
        .await;
    assert_eq!(reply[0], json!({ "ok": true, "read": 1 }));
    assert_eq!(next_status(&mut alice, "read").await["id"], id.as_str());

    let (status, message) = api.get(&format!("/v1/messages/{id}")).await;
    assert_eq!(status, 200, "{message}");
    assert_eq!(message["status"], "read");
    assert_eq!(
        (message["from"].as_str(), message["to"].as_str()),
        (Some("alice"), Some("bob"))
    );
    for field in ["accepted_at", "sent_at", "delivered_at", "read_at"] {
        assert!(message[field].as_u64().is_some(), "{field} in {message}");
    }
    let devices: Vec<&str> = message["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device"].as_str().unwrap())
        .collect();
    assert_eq!(devices, ["phone", "laptop"]);
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_device_gets_its_inbox_in_order_and_exactly_once_after_its_ack() {
    let node = start(|_| {}).await;
    let addr = node.local_addr();
    let api = Api::new(addr);
    let (_, user) = api.get("/v1/users/bob").await;
    assert_eq!(user["online"], false);
    let mut ids = Vec::new();
    for n in 0..3 {
        let (status, body) = api
            .post(
                "/v1/users/bob/messages",
                json!({ "event": "chat", "data": { "n": n }, "from": "alice" }).to_string(),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "accepted");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    let (_, inbox) = api.get("/v1/users/bob/messages?since=1&limit=5").await;
    let listed: Vec<i64> = inbox["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, [2, 3]);

    let mut phone = device(addr, "bob", &[], "phone").await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(next_named(&mut phone, "chat", WAIT).await);
    }
    let order: Vec<i64> = got
        .iter()
        .map(|e| e.args[0]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(order, [0, 1, 2]);
    ack(&phone, &got[0]);
    ack(&phone, &got[1]);
    // Receipts are stored before the device leaves.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, m) = api.get(&format!("/v1/messages/{}", ids[1])).await;
        if m["status"] == "delivered" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    phone.drop_connection();

    let mut phone = device(addr, "bob", &[], "phone").await;
    let again = next_named(&mut phone, "chat", WAIT).await;
    assert_eq!(
        again.args[0]["n"], 2,
        "only the unacknowledged message comes back"
    );
    assert_none(&mut phone, "chat", Duration::from_millis(300)).await;
    // Another device of the same user still gets all three.
    let mut tablet = device(addr, "bob", &[], "tablet").await;
    for n in 0..3 {
        assert_eq!(next_named(&mut tablet, "chat", WAIT).await.args[0]["n"], n);
    }
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_idempotency_and_expiry() {
    let node = start(|_| {}).await;
    let addr = node.local_addr();
    let api = Api::new(addr);
    let mut alice = device(addr, "alice", &["bob", "support-*"], "a").await;

    let refused = alice
        .emit_with_ack(1, "dm", &[json!({ "to": "carol", "event": "chat" })])
        .await;
    assert_eq!(
        (refused[0]["ok"].as_bool(), refused[0]["error"].as_str()),
        (Some(false), Some("forbidden"))
    );
    let allowed = alice
        .emit_with_ack(2, "dm", &[json!({ "to": "support-7", "event": "chat" })])
        .await;
    assert_eq!(allowed[0]["ok"], true);
    for (n, bad) in [
        json!({ "to": "bob", "event": "connect" }),
        json!({ "to": "bob", "event": "chat", "ttl": 0 }),
        json!({ "to": "bob", "event": "chat", "id": "no spaces" }),
        json!({ "to": "bob", "event": "chat", "from": "mallory" }),
        json!({ "event": "chat" }),
        json!("bob"),
    ]
    .into_iter()
    .enumerate()
    {
        let reply = alice
            .emit_with_ack(10 + n as u64, "dm", std::slice::from_ref(&bad))
            .await;
        assert_eq!(reply[0]["error"], "invalid", "{bad} → {reply}");
    }

    // The same (sender, id) twice: one message, one delivery, the same receipt.
    let first = alice
        .emit_with_ack(
            20,
            "dm",
            &[json!({ "to": "bob", "event": "chat", "id": "c-17", "data": 1 })],
        )
        .await;
    let second = alice
        .emit_with_ack(
            21,
            "dm",
            &[json!({ "to": "bob", "event": "chat", "id": "c-17", "data": 2 })],
        )
        .await;
    assert_eq!(first[0]["id"], second[0]["id"]);
    let mut bob = device(addr, "bob", &[], "b").await;
    let got = next_named(&mut bob, "chat", WAIT).await;
    assert_eq!(got.args[0], 1);
    assert_none(&mut bob, "chat", Duration::from_millis(300)).await;

    // A ttl that passes before any device acknowledges: expired, and no longer delivered.
    let short = alice
        .emit_with_ack(
            30,
            "dm",
            &[json!({ "to": "dave", "event": "chat", "ttl": 1 })],
        )
        .await;
    assert_eq!(short[0]["ok"], false, "dave is not in the dm claim");
    let (status, body) = api
        .post(
            "/v1/users/dave/messages",
            json!({ "event": "chat", "ttl": 1, "from": "alice" }).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let expired = next_status(&mut alice, "expired").await;
    assert_eq!(expired["id"], id.as_str());
    let (_, message) = api.get(&format!("/v1/messages/{id}")).await;
    assert_eq!(message["status"], "expired");
    let mut dave = device(addr, "dave", &[], "d").await;
    assert_none(&mut dave, "chat", Duration::from_millis(300)).await;

    // HTTP refusals.
    let (status, body) = api
        .post(
            "/v1/users/a%20b/messages",
            json!({ "event": "chat" }).to_string(),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid"))
    );
    let (status, _) = api.get("/v1/messages/nope").await;
    assert_eq!(status, 404);
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_from_one_sender_arrive_in_order() {
    const N: u64 = 10_000;
    let node = start(|config| {
        config.limits.client_packets_per_sec = 1_000_000;
        // The sender may run ahead of the recipient: room for all of it in the inbox.
        config.messages.inbox_max_messages = 20_000;
    })
    .await;
    let addr = node.local_addr();
    let alice = device(addr, "alice", &["bob"], "a").await;
    let mut bob = device(addr, "bob", &[], "b").await;
    let sender = tokio::spawn(async move {
        // Up to 200 sends in flight: every one is acknowledged as accepted.
        let mut alice = alice;
        let (mut sent, mut acked) = (0, 0);
        while acked < N {
            while sent < N && sent - acked < 200 {
                alice.send_text(&format!(
                    "42{sent}{}",
                    json!(["dm", { "to": "bob", "event": "chat", "data": sent }])
                ));
                sent += 1;
            }
            let frame = alice
                .next_frame(Duration::from_secs(20))
                .await
                .expect("acks");
            if let Some(text) = frame.text().filter(|t| t.starts_with("43")) {
                assert!(text.contains("\"ok\":true"), "{text}");
                acked += 1;
            }
            alice.log.clear();
        }
        alice
    });
    let mut expected = 0;
    while expected < N {
        let got = next_named(&mut bob, "chat", Duration::from_secs(20)).await;
        assert_eq!(got.args[0], expected, "out of order or duplicated");
        assert_eq!(got.args[1]["seq"], expected + 1);
        ack(&bob, &got);
        expected += 1;
    }
    sender.await.unwrap();
    assert_none(&mut bob, "chat", Duration::from_millis(200)).await;
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_inbox_refuses_its_sender_and_nobody_else() {
    let node = start(|config| {
        config.messages.inbox_max_messages = 5;
        config.limits.client_packets_per_sec = 10_000;
    })
    .await;
    let addr = node.local_addr();
    let mut spammer = device(addr, "mallory", &["*"], "m").await;
    for n in 0..5 {
        let reply = spammer
            .emit_with_ack(
                n,
                "dm",
                &[json!({ "to": "victim", "event": "spam", "data": n })],
            )
            .await;
        assert_eq!(reply[0]["ok"], true);
    }
    let refused = spammer
        .emit_with_ack(9, "dm", &[json!({ "to": "victim", "event": "spam" })])
        .await;
    assert_eq!(refused[0]["error"], "inbox_full", "{refused}");
    // Others are untouched: another user's inbox takes messages, and the spammer is still connected.
    let mut alice = device(addr, "alice", &["bob"], "a").await;
    let mut bob = device(addr, "bob", &[], "b").await;
    let ok = alice
        .emit_with_ack(
            1,
            "dm",
            &[json!({ "to": "bob", "event": "chat", "data": "hi" })],
        )
        .await;
    assert_eq!(ok[0]["ok"], true);
    assert_eq!(next_named(&mut bob, "chat", WAIT).await.args[0], "hi");
    // The victim's device drains its inbox; once delivered, room is made again.
    let mut victim = device(addr, "victim", &[], "v").await;
    for _ in 0..5 {
        let got = next_named(&mut victim, "spam", WAIT).await;
        ack(&victim, &got);
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let reply = spammer
            .emit_with_ack(20, "dm", &[json!({ "to": "victim", "event": "spam" })])
            .await;
        if reply[0]["ok"] == true {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{reply}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!spammer.is_closed());
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_device_names_and_oversized_acks_are_refused_alone() {
    let node = start(|_| {}).await;
    let addr = node.local_addr();
    let mut bad = common::WsClient::handshake(addr).await;
    let auth = json!({ "token": common::dm::dm_token("eve", &[]), "device": "a b" });
    bad.send_text(&format!("40{auth}"));
    let reply = bad
        .recv_until(|f| f.text().is_some_and(|t| t.starts_with("44")), WAIT)
        .await;
    assert!(
        reply.text().unwrap().contains("invalid device"),
        "{reply:?}"
    );
    let long = json!({ "token": common::dm::dm_token("eve", &[]), "device": "d".repeat(65) });
    let mut bad = common::WsClient::handshake(addr).await;
    bad.send_text(&format!("40{long}"));
    let reply = bad
        .recv_until(|f| f.text().is_some_and(|t| t.starts_with("44")), WAIT)
        .await;
    assert!(
        reply.text().unwrap().contains("invalid device"),
        "{reply:?}"
    );

    let mut bob = device(addr, "bob", &[], "b").await;
    let ids: Vec<String> = (0..1001).map(|n| format!("id{n}")).collect();
    let too_many = bob.emit_with_ack(1, "ack", &[json!({ "ids": ids })]).await;
    assert_eq!(too_many[0]["error"], "invalid");
    let (status, body) = Api::new(addr)
        .post(
            "/v1/users/bob/messages",
            json!({ "event": "chat", "data": 7, "from": "alice" }).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        next_named(&mut bob, "chat", WAIT).await.args[0],
        7,
        "the device still works"
    );
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_past_its_send_queue_is_told_busy_and_nobody_else() {
    let dir = std::env::temp_dir().join(format!("tidings-busy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data_dir = dir.display().to_string();
    let node = start(move |config| {
        // A store that syncs every batch and a queue of 2: a burst of sends outruns it.
        config.storage.data_dir = data_dir;
        config.messages.max_queued_sends_per_connection = 2;
        config.limits.client_packets_per_sec = 100_000;
    })
    .await;
    let addr = node.local_addr();
    let mut flooder = device(addr, "mallory", &["*"], "m").await;
    const BURST: u64 = 300;
    let burst: String = (1..=BURST)
        .map(|n| {
            format!(
                "42{n}{}",
                json!(["dm", { "to": "victim", "event": "spam", "data": n }])
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    for packet in burst.lines() {
        flooder.send_text(packet);
    }
    let (mut ok, mut busy) = (0, 0);
    while ok + busy < BURST {
        let frame = flooder
            .recv_until(|f| f.text().is_some_and(|t| t.starts_with("43")), WAIT)
            .await;
        let text = frame.text().unwrap().to_owned();
        let reply: serde_json::Value =
            serde_json::from_str(&text[text.find('[').unwrap()..]).unwrap();
        match (reply[0]["ok"].as_bool(), reply[0]["error"].as_str()) {
            (Some(true), _) => ok += 1,
            (_, Some("busy")) => busy += 1,
            other => panic!("unexpected answer {other:?}: {text}"),
        }
    }
    assert!(busy > 0, "the queue of 2 never filled ({ok} accepted)");
    assert!(ok >= 2, "{ok} accepted");
    // Nothing but the refusals: every accepted message reaches the victim, once, in order.
    let mut victim = device(addr, "victim", &[], "v").await;
    let mut seen = Vec::new();
    for _ in 0..ok {
        let got = next_named(&mut victim, "spam", WAIT).await;
        seen.push(got.args[0].as_u64().unwrap());
        ack(&victim, &got);
    }
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "out of order: {seen:?}"
    );
    assert_none(&mut victim, "spam", Duration::from_millis(200)).await;
    // Others are untouched, and so is the flooder's connection.
    let mut alice = device(addr, "alice", &["bob"], "a").await;
    let mut bob = device(addr, "bob", &[], "b").await;
    let reply = alice
        .emit_with_ack(
            1,
            "dm",
            &[json!({ "to": "bob", "event": "chat", "data": "hi" })],
        )
        .await;
    assert_eq!(reply[0]["ok"], true, "{reply}");
    assert_eq!(next_named(&mut bob, "chat", WAIT).await.args[0], "hi");
    let reply = flooder
        .emit_with_ack(
            9999,
            "dm",
            &[json!({ "to": "victim", "event": "spam", "data": 0 })],
        )
        .await;
    assert_eq!(reply[0]["ok"], true, "{reply}");
    let metrics = common::process_metrics().await;
    assert!(common::metric(&metrics, "tidings_message_sends_queue_full_total") >= busy as f64);
    node.shutdown(Duration::from_secs(1)).await;
    let _ = std::fs::remove_dir_all(&dir);
}
