//! A sender of the direct-message bench: it writes `dm` events on its schedule, each with an idempotency key,
//! and reads their answers and the `message:status` events. A `dm` whose answer was lost with its connection
//! stays in the sender's book and is written again, same key and same data, on the next connection, so the
//! node stores it once and answers with the same receipt; latencies are measured from the first send.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Deserialize;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::args::DmPlan;
use super::conn::{split_ack_id, Conn, Outbox, Reader};
use super::ledger::Ledger;
use super::reconnect::Redial;
use crate::bench::sys::unix_micros;

/// Event name the bench's messages are sent under.
pub const EVENT: &str = "bench";
/// Status event the server writes to a sender's devices.
const STATUS_EVENT: &str = "message:status";
/// Most `dm` events of one sender written and not answered; its schedule waits past it. Below the node's queue
/// of a connection's pending sends (1024), so resending them all at once on a new connection is never refused
/// as `busy`.
pub const MAX_UNANSWERED: usize = 512;
/// How often a sender whose book is full looks again.
const FULL_POLL: Duration = Duration::from_millis(5);

/// What a sender keeps across its connections, shared by its schedule and its reader.
#[derive(Default)]
pub struct SenderBook {
    inner: Mutex<BookInner>,
}

#[derive(Default)]
struct BookInner {
    /// Counter → first send time (µs) of `dm` events not answered yet, oldest first: what a new connection
    /// writes again.
    waiting: BTreeMap<u64, u64>,
    /// Message id → (counter, first send time) of accepted messages.
    ids: HashMap<String, (u64, u64)>,
    /// `delivered` statuses that came before the answer naming their message id: id → receive time.
    early: HashMap<String, u64>,
}

impl SenderBook {
    /// `dm` events written and not answered yet.
    pub fn unanswered(&self) -> usize {
        self.inner.lock().waiting.len()
    }
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

/// Sender `i` of a run: its n-th message is message `n·S + i` of the run, due at that index over the rate.
pub struct Sender {
    i: u32,
    plan: Arc<DmPlan>,
    ledger: Arc<Ledger>,
    book: Arc<SenderBook>,
    /// When the schedule starts.
    start: Instant,
    /// Counter of the next message to send for the first time.
    next: u64,
    /// Told once every message has been sent once.
    all_sent: Option<oneshot::Sender<()>>,
}

impl Sender {
    /// Sender `i`, starting its schedule at `start`; `all_sent` hears when its last message was first written.
    pub fn new(
        i: u32,
        plan: Arc<DmPlan>,
        ledger: Arc<Ledger>,
        start: Instant,
        all_sent: oneshot::Sender<()>,
    ) -> Sender {
        Sender {
            i,
            plan,
            ledger,
            book: Arc::new(SenderBook::default()),
            start,
            next: 0,
            all_sent: Some(all_sent),
        }
    }

    /// Sends over `conn` and, each time a connection drops, over the next one `redial` opens (writing the
    /// unanswered messages again first), until the run is over.
    pub async fn run(mut self, mut conn: Conn, mut redial: Redial) {
        let mut first = true;
        loop {
            let Conn {
                reader,
                outbox,
                writer,
            } = conn;
            if !first {
                let resent = self.resend(&outbox);
                self.ledger.resent(resent);
            }
            first = false;
            let reading = read_loop(self.i, reader, self.book.clone(), self.ledger.clone());
            tokio::pin!(reading);
            let sending = if self.all_sent.is_some() {
                tokio::select! {
                    () = &mut reading => None,
                    done = self.send(&outbox) => Some(done),
                }
            } else {
                Some(false)
            };
            if let Some(done) = sending {
                if let (true, Some(tell)) = (done, self.all_sent.take()) {
                    let _ = tell.send(());
                }
                // Answers, statuses, until the connection ends.
                reading.await;
            }
            writer.abort();
            match redial.connect(&self.plan, &self.ledger).await {
                Some(next) => conn = next,
                None => return,
            }
        }
    }

    /// Writes the messages due, in order, until all are written once (true) or the connection is gone (false).
    /// Nothing is awaited between putting a message in the book and writing it, so this can be dropped at any
    /// await.
    async fn send(&mut self, outbox: &Outbox) -> bool {
        let (plan, total) = (self.plan.clone(), self.plan.messages());
        loop {
            let k = plan.global_index(self.i, self.next);
            if k >= total {
                return true;
            }
            tokio::time::sleep_until(self.start + Duration::from_secs_f64(k as f64 / plan.rate))
                .await;
            while self.book.unanswered() >= MAX_UNANSWERED {
                tokio::time::sleep(FULL_POLL).await;
            }
            let (n, now) = (self.next, unix_micros());
            self.book.inner.lock().waiting.insert(n, now);
            self.ledger.sent();
            self.next += 1;
            if !outbox.send(self.packet(n, now)) {
                // In the book: written again on the next connection.
                return false;
            }
        }
    }

    /// Writes every unanswered message again, oldest first; returns how many.
    fn resend(&self, outbox: &Outbox) -> u64 {
        let waiting: Vec<(u64, u64)> = self
            .book
            .inner
            .lock()
            .waiting
            .iter()
            .map(|(&n, &t)| (n, t))
            .collect();
        for &(n, t) in &waiting {
            outbox.send(self.packet(n, t));
        }
        waiting.len() as u64
    }

    /// The `dm` event of message `n`, first sent at `t`: the same bytes every time it is written, with the ack
    /// id `n + 1` and the idempotency key of `n`.
    fn packet(&self, n: u64, t: u64) -> String {
        let plan = &self.plan;
        let to =
            DmPlan::recipient((plan.global_index(self.i, n) % u64::from(plan.recipients)) as u32);
        let (i, ack, key) = (self.i, n + 1, plan.message_key(n));
        format!(
            "42{ack}[\"dm\",{{\"to\":\"{to}\",\"event\":\"{EVENT}\",\"id\":\"{key}\",\"data\":{{\"t\":{t},\"s\":{i},\"n\":{n}}}}}]"
        )
    }
}

/// Reads a sender's answers and statuses until the connection ends.
async fn read_loop(i: u32, mut reader: Reader, book: Arc<SenderBook>, ledger: Arc<Ledger>) {
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
    let Some(sent) = ack
        .checked_sub(1)
        .and_then(|n| inner.waiting.remove(&n).map(|t| (n, t)))
    else {
        return ledger.unparsed();
    };
    let (n, sent) = sent;
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
