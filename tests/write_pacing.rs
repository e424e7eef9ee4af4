//! Write pacing (`engine.write_interval_ms`): a websocket that was just written waits out the interval before
//! its next write, and the events that arrive meanwhile leave together; a quiet socket is written at once.
//! With `engine.write_interval_max_ms`, a node whose writers run late widens that interval.

mod common;

use std::time::Duration;

use common::{metric, process_metrics, start, token, Api, WsClient, WAIT};
use serde_json::json;
use tidings::hub::WRITE_NOW_MAX_MEMBERS;
use tokio::time::Instant;

/// Members of the room: more than the publisher writes to itself, so every delivery goes through a writer.
const MEMBERS: usize = WRITE_NOW_MAX_MEMBERS + 6;

/// Connects `MEMBERS` clients to `room` and returns them once the node counts them all.
async fn room_of_members(api: &Api, addr: std::net::SocketAddr, room: &str) -> Vec<WsClient> {
    let mut clients = Vec::with_capacity(MEMBERS);
    for i in 0..MEMBERS {
        let (mut client, _) =
            WsClient::connect(addr, &token(&format!("member-{i}"), &[room], &[], &[])).await;
        client.subscribe(1, room).await;
        clients.push(client);
    }
    api.wait_connections(MEMBERS as u64, WAIT).await;
    clients
}

/// Publishes `n` to `room` and returns when the API answered.
async fn publish(api: &Api, room: &str, n: u64) {
    api.publish(room, "tick", json!({ "n": n })).await;
}

/// Every member got ticks 1..=3 in order.
async fn assert_all_got_three(clients: &mut [WsClient]) {
    for client in clients.iter_mut() {
        for n in 1..=3 {
            let event = client.recv_event(WAIT).await;
            assert_eq!(
                (event.name.as_str(), &event.data),
                ("tick", &json!({ "n": n }))
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_right_after_a_write_wait_for_the_interval_and_leave_together() {
    const INTERVAL: Duration = Duration::from_millis(600);
    let node = start(|c| c.engine.write_interval_ms = INTERVAL.as_millis() as u64).await;
    let addr = node.local_addr();
    let api = Api::new(addr);
    let mut clients = room_of_members(&api, addr, "news").await;
    // Let every socket's last write (its subscribe ack) fall out of the interval.
    tokio::time::sleep(INTERVAL).await;

    // The first event after a quiet spell goes out at once.
    let published = Instant::now();
    publish(&api, "news", 1).await;
    let first = clients[0].recv_event(WAIT).await;
    let first_at = Instant::now();
    assert_eq!(first.data, json!({ "n": 1 }));
    assert!(
        first_at - published < INTERVAL,
        "a quiet socket waited {:?}",
        first_at - published
    );

    // Two more right behind it: they wait out the interval from the first write, then arrive together.
    publish(&api, "news", 2).await;
    publish(&api, "news", 3).await;
    let second = clients[0].recv_event(INTERVAL + WAIT).await;
    let second_at = Instant::now();
    let third = clients[0].recv_event(WAIT).await;
    let third_at = Instant::now();
    assert_eq!(
        (second.data, third.data),
        (json!({ "n": 2 }), json!({ "n": 3 }))
    );
    // The write of event 1 came before `first_at`; the next cannot leave before that write + INTERVAL.
    // Half the interval leaves room for a slow test machine between that write and the read.
    assert!(
        second_at - first_at >= INTERVAL / 2,
        "event 2 came {:?} after event 1, within the write interval",
        second_at - first_at
    );
    assert!(
        third_at - second_at < INTERVAL / 2,
        "event 3 came {:?} after event 2: it was not written with it",
        third_at - second_at
    );

    assert_all_got_three(&mut clients[1..]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_interval_writes_every_event_at_once() {
    let node = start(|c| c.engine.write_interval_ms = 0).await;
    let addr = node.local_addr();
    let api = Api::new(addr);
    let mut clients = room_of_members(&api, addr, "news").await;

    publish(&api, "news", 1).await;
    clients[0].recv_event(WAIT).await;
    let first_at = Instant::now();
    publish(&api, "news", 2).await;
    clients[0].recv_event(WAIT).await;
    // Generous for a loaded machine, and far below the 600 ms the other test paces by.
    assert!(
        first_at.elapsed() < Duration::from_millis(300),
        "event 2 took {:?} without pacing",
        first_at.elapsed()
    );
    publish(&api, "news", 3).await;
    clients[0].recv_event(WAIT).await;
    assert_all_got_three(&mut clients[1..]).await;
}

/// One thread runs the node, the clients and this test. Two events right after each other: the second one
/// finds the sockets just written (or still waiting for a write), so the pacer holds it; the test then holds
/// the thread for longer than the base interval, and the pacing timers fire late. From the second round on,
/// the first event of a round also arrives within the base interval of the late write before it, so every
/// write runs about `HOLD - BASE` behind.
#[tokio::test(flavor = "current_thread")]
async fn a_node_whose_writers_run_late_widens_its_write_interval() {
    const BASE: Duration = Duration::from_millis(50);
    const HOLD: Duration = Duration::from_millis(300);
    const ROUNDS: u64 = 12;
    let node = start(|c| {
        c.engine.write_interval_ms = BASE.as_millis() as u64;
        c.engine.write_interval_max_ms = 500;
    })
    .await;
    let addr = node.local_addr();
    let api = Api::new(addr);
    let mut clients = room_of_members(&api, addr, "news").await;
    let interval = || {
        node.node()
            .engines
            .iter()
            .map(|engine| engine.write_cadence().interval())
            .max()
            .unwrap()
    };
    assert_eq!(interval(), BASE);

    // One write in 8 per connection reports its lag: a dozen late writes give every connection a report.
    for round in 0..ROUNDS {
        publish(&api, "news", 2 * round + 1).await;
        publish(&api, "news", 2 * round + 2).await;
        std::thread::sleep(HOLD);
        // Lets the timers fire and the writers write.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let widened = interval();
    assert!(
        widened >= 4 * BASE,
        "after writes {:?} late the interval is {widened:?}",
        HOLD - BASE
    );
    let text = process_metrics().await;
    assert!(metric(&text, "tidings_ws_write_lag_ms") >= 100.0, "{text}");
    assert!(
        metric(&text, "tidings_ws_write_interval_ms") >= 100.0,
        "{text}"
    );

    // The writers pace by the wider interval: an event right after a write waits well beyond the base.
    for client in clients.iter_mut() {
        for n in 1..=2 * ROUNDS {
            assert_eq!(client.recv_event(WAIT).await.data, json!({ "n": n }));
        }
    }
    let (last, next) = (2 * ROUNDS + 1, 2 * ROUNDS + 2);
    publish(&api, "news", last).await;
    clients[0].recv_event(WAIT).await;
    let first_at = Instant::now();
    publish(&api, "news", next).await;
    assert_eq!(clients[0].recv_event(WAIT).await.data, json!({ "n": next }));
    assert!(
        first_at.elapsed() >= 2 * BASE,
        "event {next} came {:?} after event {last}",
        first_at.elapsed()
    );
}
