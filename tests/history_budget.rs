//! History replies within `history.max_reply_bytes` over real sockets (the HTTP API and the client `history`
//! event, embedded and against a real Redis), and history bytes counted once for an event published to many
//! rooms.

mod common;

use std::time::Duration;

use common::{process_metrics, start, token, unique_prefix, Api, RedisServer, WsClient};
use serde_json::{json, Value};
use tidings::server::RunningNode;

/// Budget of every node in these tests.
const BUDGET: usize = 4096;
/// Events published to the paged room.
const EVENTS: usize = 30;

fn budgeted(config: &mut tidings::config::Config) {
    config.history.max_reply_bytes = BUDGET;
}

async fn cluster_node(redis: &RedisServer, prefix: &str) -> RunningNode {
    let (url, prefix) = (redis.url(), prefix.to_owned());
    start(move |config| {
        budgeted(config);
        config.redis.url = url;
        config.redis.key_prefix = prefix;
    })
    .await
}

/// Publishes `EVENTS` events of about 500 bytes to `news`, then one of 10 KB (larger than the budget).
async fn publish_events(api: &Api) {
    for n in 0..EVENTS {
        api.publish("news", "update", json!({ "n": n, "pad": "p".repeat(500) }))
            .await;
    }
    api.publish("news", "big", json!({ "pad": "B".repeat(10_000) }))
        .await;
}

/// Who reads the pages.
enum Reader<'a> {
    /// `GET /v1/rooms/news/history`.
    Api(&'a Api),
    /// The `history` client event, with the next ack id.
    Client(WsClient, u64),
}

impl Reader<'_> {
    /// The page of `news` after `since`, `limit` 1000.
    async fn page(&mut self, since: &str) -> Value {
        match self {
            Reader::Api(api) => {
                let path = format!("/v1/rooms/news/history?since={since}&limit=1000");
                let (status, page) = api.get(&path).await;
                assert_eq!(status, 200, "{page}");
                page
            }
            Reader::Client(client, id) => {
                *id += 1;
                let args = [json!({ "room": "news", "since": since, "limit": 1000 })];
                let ack = client.emit_with_ack(*id, "history", &args).await;
                assert_eq!(ack[0]["ok"], json!(true), "{ack}");
                ack[0].clone()
            }
        }
    }

    /// Reads every page from `since = 0`, checking each one against the budget, and returns the events in
    /// order with the number of pages.
    async fn read_all(&mut self) -> (Vec<Value>, usize) {
        let (mut events, mut pages, mut since) = (Vec::new(), 0, "0".to_owned());
        loop {
            let page = self.page(&since).await;
            pages += 1;
            assert_eq!(page["complete"], json!(true), "{page}");
            let found = page["events"].as_array().expect("events").clone();
            assert!(!found.is_empty(), "a page with `more` moves on: {page}");
            let bytes: usize = found.iter().map(|e| e.to_string().len()).sum();
            if found.len() > 1 {
                assert!(bytes <= BUDGET, "{bytes} bytes in one reply");
            }
            if page["more"] == json!(true) {
                assert_eq!(page["truncated"], json!(true), "cut by bytes, not by limit");
            }
            since = found.last().unwrap()["offset"].as_str().unwrap().to_owned();
            events.extend(found);
            if page["more"] == json!(false) {
                assert_eq!(page["truncated"], json!(false));
                return (events, pages);
            }
            assert!(pages < 100, "paging does not end");
        }
    }
}

/// Every event once, in publish order, the oversized one last and whole.
fn check_all_read(events: &[Value], pages: usize) {
    assert_eq!(events.len(), EVENTS + 1);
    let offsets: Vec<u64> = events
        .iter()
        .map(|e| e["offset"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
    for (n, event) in events[..EVENTS].iter().enumerate() {
        assert_eq!(event["data"]["n"], json!(n));
    }
    assert_eq!(events[EVENTS]["event"], json!("big"));
    assert_eq!(
        events[EVENTS]["data"]["pad"].as_str().unwrap().len(),
        10_000
    );
    // About 7 events of ~600 bytes fit 4 KiB: 30 of them need at least 5 pages, the big one its own.
    assert!(pages >= 6, "{pages} pages");
}

fn truncated_count(metrics: &str, surface: &str) -> f64 {
    common::metric(
        metrics,
        &format!("tidings_history_replies_truncated_total{{surface=\"{surface}\"}}"),
    )
}

/// Pages through `news` with both the API and the client `history` event of a node.
async fn page_with_api_and_client(node: &RunningNode) {
    let addr = node.local_addr();
    let api = Api::new(addr);
    publish_events(&api).await;
    let before = process_metrics().await;

    let (events, pages) = Reader::Api(&api).read_all().await;
    check_all_read(&events, pages);

    let (client, _) = WsClient::connect(addr, &token("carol", &["news"], &[], &[])).await;
    let (client_events, client_pages) = Reader::Client(client, 0).read_all().await;
    assert_eq!(client_events, events, "the client event pages like the API");
    assert_eq!(client_pages, pages);

    let after = process_metrics().await;
    for surface in ["api", "client"] {
        let cut = truncated_count(&after, surface) - truncated_count(&before, surface);
        assert!(
            cut >= (pages - 1) as f64,
            "{surface}: {cut} truncated replies counted"
        );
    }

    // A page ended by `limit` says `more` without `truncated`.
    let (_, page) = api.get("/v1/rooms/news/history?limit=2").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    assert_eq!(
        (&page["more"], &page["truncated"]),
        (&json!(true), &json!(false))
    );
}

#[tokio::test]
async fn history_replies_stay_within_the_byte_budget_and_page_on() {
    let node = start(budgeted).await;
    page_with_api_and_client(&node).await;
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn cluster_history_replies_stay_within_the_byte_budget_and_page_on() {
    let redis = RedisServer::start().await;
    let node = cluster_node(&redis, &unique_prefix("reply-budget")).await;
    page_with_api_and_client(&node).await;
    node.shutdown(Duration::from_millis(200)).await;
}

/// A 100 KB event published to 1000 rooms pins one payload: counted once per room it would be 100 MB against
/// a 4 MiB cap, and every other room's history would be evicted for it.
#[tokio::test]
async fn a_large_publish_to_many_rooms_keeps_other_rooms_history() {
    let node = start(|config| config.history.max_bytes = 4 << 20).await;
    let api = Api::new(node.local_addr());
    for n in 0..10 {
        api.publish("quiet", "tick", json!({ "n": n })).await;
    }
    let rooms: Vec<String> = (0..1000).map(|i| format!("r{i}")).collect();
    let body = json!({ "rooms": rooms, "event": "big", "data": "x".repeat(100_000) });
    let (status, reply) = api.post("/v1/publish", body.to_string()).await;
    assert_eq!(status, 200, "{reply}");

    let (_, quiet) = api.get("/v1/rooms/quiet/history?limit=100").await;
    assert_eq!(quiet["complete"], json!(true), "{quiet}");
    assert_eq!(quiet["events"].as_array().unwrap().len(), 10);
    for room in ["r0", "r500", "r999"] {
        let (_, page) = api.get(&format!("/v1/rooms/{room}/history")).await;
        assert_eq!(page["events"].as_array().unwrap().len(), 1, "{room}");
    }
    node.shutdown(Duration::from_millis(200)).await;
}
