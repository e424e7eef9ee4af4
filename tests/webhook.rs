//! The backend webhook of direct messages against a real local HTTP receiver: signed events for every status
//! change and for a user offline with undelivered messages, retried while the receiver is down.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use common::{start, Api};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tidings::app::direct::webhook::signature;

const WEBHOOK_SECRET: &str = "webhook-secret-0123456789abcdef";

/// Starts the receiver on `port`; every event it gets (signature checked) lands in `events`.
async fn receiver(port: u16, events: Arc<Mutex<Vec<Value>>>) -> tokio::task::JoinHandle<()> {
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let events = events.clone();
            async move {
                let timestamp: u64 = headers["x-tidings-timestamp"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                let expected = signature(WEBHOOK_SECRET, timestamp, &body);
                assert_eq!(headers["x-tidings-signature"].to_str().unwrap(), expected);
                events.lock().push(serde_json::from_slice(&body).unwrap());
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    })
}

async fn wait_for(events: &Mutex<Vec<Value>>, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(event) = events.lock().iter().find(|e| pred(e)).cloned() {
            return event;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {what}; got {:?}",
            events.lock()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_changes_and_offline_users_reach_the_webhook_after_it_comes_back() {
    // A port nobody listens on yet: the first attempts are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let node = start(|config| {
        config.messages.webhook_url = format!("http://127.0.0.1:{port}/hook");
        config.messages.webhook_secret = WEBHOOK_SECRET.into();
        config.messages.webhook_offline_after_secs = 1;
        config.messages.webhook_timeout_ms = 500;
    })
    .await;
    let api = Api::new(node.local_addr());
    let (status, sent) = api
        .post(
            "/v1/users/bob/messages",
            json!({ "event": "chat", "data": 1, "from": "alice" }).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{sent}");
    let id = sent["id"].as_str().unwrap().to_owned();

    tokio::time::sleep(Duration::from_millis(700)).await;
    let events = Arc::new(Mutex::new(Vec::new()));
    let server = receiver(port, events.clone()).await;

    let accepted = wait_for(&events, "accepted status", |e| {
        e["type"] == "message.status" && e["status"] == "accepted"
    })
    .await;
    assert_eq!(
        (
            accepted["id"].as_str(),
            accepted["from"].as_str(),
            accepted["to"].as_str()
        ),
        (Some(id.as_str()), Some("alice"), Some("bob"))
    );
    let offline = wait_for(&events, "user.offline", |e| e["type"] == "user.offline").await;
    assert_eq!(offline["user"], "bob");
    assert_eq!(offline["undelivered"], 1);
    assert_eq!(offline["oldest_id"], id.as_str());

    let (status, metrics) = api.get_text("/metrics").await;
    if status == 200 {
        assert!(
            metrics.contains("tidings_webhook_retries_total"),
            "retries were counted"
        );
    }
    server.abort();
    node.shutdown(Duration::from_secs(1)).await;
}
