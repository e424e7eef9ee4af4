//! A client that stops reading its socket is disconnected as a slow consumer once its outbox fills; publishers
//! are never held up, healthy members of the same room get every event in order, and memory stays bounded.

mod common;

use std::time::Duration;

use common::{
    metric, process_metrics, rss_bytes, start, token, Api, Polling, RawWs, WsClient, WAIT,
};
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

const EVENTS: u64 = 2000;
const PAD_BYTES: usize = 8 * 1024;
const PUBLISHERS: u64 = 4;
const SLOW_CLOSES: &str = r#"tidings_sessions_closed_total{reason="slow_consumer"}"#;

/// The tests here run one at a time: the RSS check measures the whole process.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_disconnected_and_the_room_carries_on() {
    let _serial = SERIAL.lock().await;
    let node = start(|c| {
        // Room for a healthy reader on a loaded machine; far below what the slow reader is sent (16 MB).
        c.limits.outbox_max_messages = 512;
        c.limits.outbox_max_bytes = 4 * 1024 * 1024;
    })
    .await;
    let addr = node.local_addr();
    let api = Api::new(addr);

    // The slow client: a tiny receive buffer (no autotuning) so the kernel cannot absorb the stream for it.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let mut slow = RawWs::handshake_on(stream, addr).await;
    slow.socketio_connect(&token("slow", &["news"], &[], &[]))
        .await;
    slow.send_text(r#"421["subscribe","news"]"#).await;
    let ack = slow.recv_text_until(|t| t.starts_with("431")).await;
    assert_eq!(ack, r#"431[{"ok":true}]"#);
    // From here on the slow client never reads until the end of the test.

    let (mut healthy, _) = WsClient::connect(addr, &token("fast", &["news"], &[], &[])).await;
    healthy.subscribe(1, "news").await;
    api.wait_connections(2, WAIT).await;

    let slow_closes_before = metric(&process_metrics().await, SLOW_CLOSES);
    let rss_before = rss_bytes();

    // The healthy member reads concurrently, keeping only (offset, index) of each event.
    let reader = tokio::spawn(async move {
        let mut seen = Vec::with_capacity(EVENTS as usize);
        for _ in 0..EVENTS {
            let event = healthy.recv_event(Duration::from_secs(20)).await;
            assert_eq!(event.name, "update");
            assert_eq!(event.data["pad"].as_str().map(str::len), Some(PAD_BYTES));
            let offset: u64 = event.offset.expect("no offset").parse().unwrap();
            seen.push((offset, event.data["i"].as_u64().unwrap()));
        }
        (healthy, seen)
    });

    // A few publishers, each sending its share of the events one after the other.
    let pad = "x".repeat(PAD_BYTES);
    let started = Instant::now();
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|k| {
            let api = api.clone();
            let pad = pad.clone();
            tokio::spawn(async move {
                let mut sent = Vec::new();
                for i in (k..EVENTS).step_by(PUBLISHERS as usize) {
                    // `publish` asserts the 200.
                    let reply = api
                        .publish("news", "update", json!({ "i": i, "pad": pad }))
                        .await;
                    let offset: u64 = reply["offset"].as_str().unwrap().parse().unwrap();
                    sent.push((offset, i));
                }
                sent
            })
        })
        .collect();
    let mut published = Vec::new();
    for publisher in publishers {
        published.extend(publisher.await.unwrap());
    }
    published.sort_unstable();
    let publish_time = started.elapsed();

    let healthy = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("healthy member did not get every event")
        .unwrap();
    let (healthy, seen) = healthy;
    // Every event, each once, in the order the hub sequenced them.
    assert_eq!(seen, published);
    assert!(!healthy.is_closed(), "the healthy member was disconnected");

    // The slow client's session is gone.
    api.wait_connections(1, WAIT).await;
    let slow_closes_after = metric(&process_metrics().await, SLOW_CLOSES);
    assert!(
        slow_closes_after > slow_closes_before,
        "no slow_consumer close counted ({slow_closes_before} -> {slow_closes_after})"
    );

    // Its socket was closed by the server: draining it ends in EOF or a reset, not a stall.
    let mut drained = 0usize;
    let mut chunk = vec![0u8; 256 * 1024];
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match slow.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "slow client's socket still open after draining {drained} bytes"
    );
    assert!(
        (drained as u64) < EVENTS * PAD_BYTES as u64,
        "the slow client got everything ({drained} bytes): it was never cut off"
    );

    let rss_after = rss_bytes();
    let growth = rss_after.saturating_sub(rss_before);
    assert!(
        growth < 64 * 1024 * 1024,
        "RSS grew by {} MiB ({} -> {} MiB); publishing took {publish_time:?}",
        growth >> 20,
        rss_before >> 20,
        rss_after >> 20
    );

    node.shutdown(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn polling_slow_consumer_is_disconnected_promptly() {
    let _serial = SERIAL.lock().await;
    let node = start(|c| c.limits.outbox_max_messages = 8).await;
    let addr = node.local_addr();
    let api = Api::new(addr);
    let slow = Polling::handshake(addr).await;
    slow.socketio_connect(&token("slow", &[], &["news"], &[]))
        .await;
    let (mut healthy, _) = WsClient::connect(addr, &token("fast", &[], &["news"], &[])).await;
    api.wait_connections(2, WAIT).await;

    // The polling client never polls: its outbox overflows after a few events.
    for i in 0..50u64 {
        api.publish("news", "update", json!({ "i": i })).await;
        assert_eq!(healthy.recv_event(WAIT).await.data["i"], i);
    }
    api.wait_connections(1, Duration::from_secs(1)).await;
    let (_, room) = api.get("/v1/rooms/news").await;
    assert_eq!(room["members"], 1, "{room}");

    // Whatever it polls now tells it the session is over.
    let (status, body) = slow.get().await;
    assert!(
        status == 400 || body.split('\u{1e}').any(|p| p == "1"),
        "session still alive: {status} {body:?}"
    );
    node.shutdown(Duration::from_millis(200)).await;
}
