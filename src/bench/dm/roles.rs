//! What each connection of the direct-message bench does: a sender writes `dm` events on its schedule and
//! reads their answers and the `message:status` events; a recipient device acknowledges every message it gets
//! and checks it for duplicates and order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::time::Instant;

use super::args::DmPlan;
use super::conn::{split_ack_id, Outbox, Reader};
use super::ledger::{Key, Ledger};
use crate::bench::sys::unix_micros;

/// Event name the bench's messages are sent under.
pub const EVENT: &str = "bench";
/// Status event the server writes to a sender's devices.
const STATUS_EVENT: &str = "message:status";

/// What a sender keeps between its send loop and its reader.
#[derive(Default)]
pub struct SenderBook {
    inner: Mutex<BookInner>,
}

#[derive(Default)]
struct BookInner {
    /// Ack id → (counter, send time) of `dm` events not answered yet.
    waiting: HashMap<u64, (u64, u64)>,
    /// Message id → (counter, send time) of accepted messages.
    ids: HashMap<String, (u64, u64)>,
    /// `delivered` statuses that came before the answer naming their message id: id → receive time.
    early: HashMap<String, u64>,
}

/// The data of each bench message: send time (µs), sender, counter.
#[derive(Deserialize)]
struct Data {
    t: u64,
    s: u32,
    n: u64,
}

/// The metadata the server adds.
#[derive(Deserialize)]
struct Meta {
    id: String,
}

/// An answer to `dm`.
#[derive(Deserialize)]
struct Answer {
    ok: bool,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// A `message:status` payload.
#[derive(Deserialize)]
struct Status {
    id: String,
    status: String,
}

/// Sends the messages of sender `i`: its n-th is message `n·S + i` of the run, due at that index over the rate.
pub async fn send_loop(
    i: u32,
    plan: Arc<DmPlan>,
    start: Instant,
    outbox: Outbox,
    book: Arc<SenderBook>,
    ledger: Arc<Ledger>,
) {
    let total = plan.messages();
    let mut n = 0u64;
    loop {
        let k = plan.global_index(i, n);
        if k >= total {
            return;
        }
        tokio::time::sleep_until(start + Duration::from_secs_f64(k as f64 / plan.rate)).await;
        let to = DmPlan::recipient((k % u64::from(plan.recipients)) as u32);
        let now = unix_micros();
        let ack = n + 1;
        book.inner.lock().waiting.insert(ack, (n, now));
        let packet = format!(
            "42{ack}[\"dm\",{{\"to\":\"{to}\",\"event\":\"{EVENT}\",\"data\":{{\"t\":{now},\"s\":{i},\"n\":{n}}}}}]"
        );
        if !outbox.send(packet) {
            return;
        }
        ledger.sent();
        n += 1;
    }
}

/// Reads a sender's answers and statuses until the connection ends.
pub async fn sender_reader(i: u32, mut reader: Reader, book: Arc<SenderBook>, ledger: Arc<Ledger>) {
    while let Ok(packet) = reader.next().await {
        let now = unix_micros();
        match packet.first() {
            Some(b'3') => on_answer(i, &packet[1..], now, &book, &ledger),
            Some(b'2') => on_status(i, &packet[1..], now, &book, &ledger),
            _ => {}
        }
    }
}

fn on_answer(i: u32, body: &[u8], now: u64, book: &SenderBook, ledger: &Ledger) {
    let (Some(ack), args) = split_ack_id(body) else {
        return ledger.unparsed();
    };
    let Ok((answer,)) = serde_json::from_slice::<(Answer,)>(args) else {
        return ledger.unparsed();
    };
    let mut inner = book.inner.lock();
    let Some((n, sent)) = inner.waiting.remove(&ack) else {
        return ledger.unparsed();
    };
    match (answer.ok, answer.id) {
        (true, Some(id)) => {
            ledger.accepted((i, n), sent, now);
            if let Some(at) = inner.early.remove(&id) {
                ledger.delivered_status((i, n), sent, at);
            }
            inner.ids.insert(id, (n, sent));
        }
        (true, None) => ledger.unparsed(),
        (false, _) => ledger.refused(answer.error.as_deref().unwrap_or("no error code")),
    }
}

fn on_status(i: u32, body: &[u8], now: u64, book: &SenderBook, ledger: &Ledger) {
    let (_, args) = split_ack_id(body);
    let Ok((name, status)) = serde_json::from_slice::<(String, Status)>(args) else {
        return ledger.unparsed();
    };
    if name != STATUS_EVENT || status.status != "delivered" {
        return;
    }
    let mut inner = book.inner.lock();
    match inner.ids.get(&status.id) {
        Some(&(n, sent)) => ledger.delivered_status((i, n), sent, now),
        None => {
            inner.early.entry(status.id).or_insert(now);
        }
    }
}

/// Device `d` of a recipient: acknowledges every message at once, then records it.
pub async fn device(d: u32, mut reader: Reader, outbox: Outbox, ledger: Arc<Ledger>) {
    let mut seen: HashSet<String> = HashSet::new();
    let mut last: HashMap<u32, u64> = HashMap::new();
    while let Ok(packet) = reader.next().await {
        let now = unix_micros();
        if packet.first() != Some(&b'2') {
            continue;
        }
        let (ack, args) = split_ack_id(&packet[1..]);
        if let Some(ack) = ack {
            outbox.send(format!("43{ack}[]"));
        }
        let Ok((name, data, meta)) = serde_json::from_slice::<(String, Box<RawValue>, Meta)>(args)
        else {
            ledger.unparsed();
            continue;
        };
        let Ok(data) = serde_json::from_str::<Data>(data.get()) else {
            ledger.unparsed();
            continue;
        };
        if name != EVENT {
            continue;
        }
        let key: Key = (data.s, data.n);
        let again = !seen.insert(meta.id);
        if !again {
            match last.get(&data.s) {
                Some(&previous) if previous > data.n => ledger.out_of_order(),
                _ => {
                    last.insert(data.s, data.n);
                }
            }
        }
        ledger.received(key, d, data.t, now, again);
    }
}
