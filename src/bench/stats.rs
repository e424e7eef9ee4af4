//! What the clients measure: a [`Tally`] of counters and histograms that merges across threads and processes,
//! and the [`Recorder`] the client tasks write into, one uncontended shard per runtime thread.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2Serializer};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// A histogram of microseconds.
pub type Hist = Histogram<u64>;

/// Largest value a histogram keeps exactly: one hour in µs (larger values are clamped to it).
const HIST_MAX_US: u64 = 3_600_000_000;

/// An empty histogram for 1 µs .. 1 h with 3 significant digits.
pub fn new_hist() -> Hist {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("static histogram bounds are valid")
}

/// Encodes a histogram with HdrHistogram's V2 format, in standard base64 (for a line-based pipe).
pub fn encode_hist(hist: &Hist) -> String {
    let mut raw = Vec::new();
    V2Serializer::new()
        .serialize(hist, &mut raw)
        .expect("serializing into a Vec cannot fail");
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// Decodes what [`encode_hist`] made.
pub fn decode_hist(text: &str) -> Result<Hist, String> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("histogram is not base64: {e}"))?;
    Deserializer::new()
        .deserialize(&mut raw.as_slice())
        .map_err(|e| format!("histogram does not decode: {e:?}"))
}

/// Adds `from` into `into`, clamping values `into` cannot hold (it has the same bounds in practice).
pub fn merge_hist(into: &mut Hist, from: &Hist) {
    if into.add(from).is_err() {
        for value in from.iter_recorded() {
            into.saturating_record_n(value.value_iterated_to(), value.count_at_value());
        }
    }
}

/// Serde adapter: a histogram travels as base64 V2 text.
mod hist_text {
    use super::{decode_hist, encode_hist, Hist};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(hist: &Hist, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode_hist(hist))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hist, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        decode_hist(&text).map_err(serde::de::Error::custom)
    }
}

/// Everything the clients of one process (or of several, merged) counted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Tally {
    /// Clients that finished connecting and subscribing.
    pub connected: u64,
    /// Clients that could not connect or subscribe.
    pub failed: u64,
    /// Connected clients whose connection ended before the bench stopped them.
    pub disconnects: u64,
    /// Timed events of the measured phase received.
    pub deliveries: u64,
    /// Events of the warm-up phase received (not in the latency histogram).
    pub warmup_deliveries: u64,
    /// Events whose offset (or seq, without offsets) repeated the previous one of the same client; for a
    /// churning client, events of its room received before (not counted as deliveries).
    pub duplicates: u64,
    /// Events whose offset (or seq) was lower than the previous one of the same client.
    pub out_of_order: u64,
    /// Events without a numeric `t` and `seq`.
    pub untimed: u64,
    /// Churning clients: events of their room skipped over (a later one came first).
    pub gaps: u64,
    /// Churning clients: skipped events that came late after all.
    pub gaps_filled: u64,
    /// Churning clients: connections dropped on purpose (the TCP socket closed without a Socket.IO disconnect).
    pub drops: u64,
    /// Churning clients: connections opened again after a drop or a lost connection.
    pub reconnects: u64,
    /// Reconnects whose session was resumed.
    pub recovered: u64,
    /// Reconnects answered with a new session although resuming was asked.
    pub not_recovered: u64,
    /// Reconnect attempts that failed (each retried on the next node).
    pub reconnect_failures: u64,
    /// Frames or packets that did not parse.
    pub bad_packets: u64,
    /// Deliveries whose receive time was before their send time (clock trouble), recorded as 0.
    pub negative_latency: u64,
    /// Wall-clock µs of the first measured delivery (0: none yet).
    pub first_delivery_us: u64,
    /// Wall-clock µs of the last measured delivery.
    pub last_delivery_us: u64,
    /// Wall-clock µs at which the last client connected or failed.
    pub last_resolved_us: u64,
    /// Live subscribed clients per room.
    pub members: Vec<u64>,
    /// Publish → deliver latency of measured deliveries, µs.
    #[serde(with = "hist_text")]
    pub latency: Hist,
    /// Time from opening the TCP connection to the subscribe ack, µs.
    #[serde(with = "hist_text")]
    pub connect: Hist,
    /// Churning clients: time from losing a connection to being live again, µs.
    #[serde(with = "hist_text")]
    pub reconnect: Hist,
    /// Connect failures and disconnect reasons, with counts.
    pub errors: BTreeMap<String, u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            connected: 0,
            failed: 0,
            disconnects: 0,
            deliveries: 0,
            warmup_deliveries: 0,
            duplicates: 0,
            out_of_order: 0,
            untimed: 0,
            gaps: 0,
            gaps_filled: 0,
            drops: 0,
            reconnects: 0,
            recovered: 0,
            not_recovered: 0,
            reconnect_failures: 0,
            bad_packets: 0,
            negative_latency: 0,
            first_delivery_us: 0,
            last_delivery_us: 0,
            last_resolved_us: 0,
            members: Vec::new(),
            latency: new_hist(),
            connect: new_hist(),
            reconnect: new_hist(),
            errors: BTreeMap::new(),
        }
    }
}

impl Tally {
    /// Adds `other` into `self`: counters add up, histograms merge, times take the earliest / latest.
    pub fn merge(&mut self, other: &Tally) {
        self.connected += other.connected;
        self.failed += other.failed;
        self.disconnects += other.disconnects;
        self.deliveries += other.deliveries;
        self.warmup_deliveries += other.warmup_deliveries;
        self.duplicates += other.duplicates;
        self.out_of_order += other.out_of_order;
        self.untimed += other.untimed;
        self.gaps += other.gaps;
        self.gaps_filled += other.gaps_filled;
        self.drops += other.drops;
        self.reconnects += other.reconnects;
        self.recovered += other.recovered;
        self.not_recovered += other.not_recovered;
        self.reconnect_failures += other.reconnect_failures;
        self.bad_packets += other.bad_packets;
        self.negative_latency += other.negative_latency;
        self.first_delivery_us = earliest(self.first_delivery_us, other.first_delivery_us);
        self.last_delivery_us = self.last_delivery_us.max(other.last_delivery_us);
        self.last_resolved_us = self.last_resolved_us.max(other.last_resolved_us);
        if self.members.len() < other.members.len() {
            self.members.resize(other.members.len(), 0);
        }
        for (mine, theirs) in self.members.iter_mut().zip(&other.members) {
            *mine += theirs;
        }
        merge_hist(&mut self.latency, &other.latency);
        merge_hist(&mut self.connect, &other.connect);
        merge_hist(&mut self.reconnect, &other.reconnect);
        for (reason, count) in &other.errors {
            *self.errors.entry(reason.clone()).or_default() += count;
        }
    }

    /// Counts one event received at `now_us`, sent at `sent_us`; `warmup` events only count.
    pub fn record_delivery(&mut self, now_us: u64, sent_us: u64, warmup: bool) {
        if warmup {
            self.warmup_deliveries += 1;
            return;
        }
        self.deliveries += 1;
        self.first_delivery_us = earliest(self.first_delivery_us, now_us);
        self.last_delivery_us = self.last_delivery_us.max(now_us);
        let latency = match now_us.checked_sub(sent_us) {
            Some(latency) => latency,
            None => {
                self.negative_latency += 1;
                0
            }
        };
        self.latency.saturating_record(latency.max(1));
    }

    /// Counts one occurrence of `reason`.
    pub fn count_error(&mut self, reason: &str) {
        match self.errors.get_mut(reason) {
            Some(count) => *count += 1,
            None => {
                self.errors.insert(reason.to_owned(), 1);
            }
        }
    }

    /// All measured deliveries plus warm-up ones: what arrived at all.
    pub fn all_deliveries(&self) -> u64 {
        self.deliveries + self.warmup_deliveries
    }
}

/// The earlier of two wall-clock times where 0 means "not yet".
fn earliest(a: u64, b: u64) -> u64 {
    match (a, b) {
        (0, b) => b,
        (a, 0) => a,
        (a, b) => a.min(b),
    }
}

/// Source of [`Recorder`] ids, so a thread's shard list tells recorders apart.
static NEXT_RECORDER: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's shard of each live recorder, by recorder id.
    static SHARDS: RefCell<Vec<(u64, Arc<Mutex<Tally>>)>> = const { RefCell::new(Vec::new()) };
}

/// Where client tasks record; each runtime thread writes its own shard, so the hot path takes no contended lock.
pub struct Recorder {
    id: u64,
    rooms: usize,
    warmup_messages: u64,
    shards: Mutex<Vec<Arc<Mutex<Tally>>>>,
    members: Box<[AtomicU64]>,
    resolved: AtomicU64,
}

impl Recorder {
    /// A recorder for clients spread over `rooms` rooms; events with `seq < warmup_messages` are warm-up.
    pub fn new(rooms: usize, warmup_messages: u64) -> Arc<Recorder> {
        Arc::new(Recorder {
            id: NEXT_RECORDER.fetch_add(1, Ordering::Relaxed),
            rooms,
            warmup_messages,
            shards: Mutex::new(Vec::new()),
            members: (0..rooms).map(|_| AtomicU64::new(0)).collect(),
            resolved: AtomicU64::new(0),
        })
    }

    /// Whether an event with this seq belongs to the warm-up phase.
    pub fn is_warmup(&self, seq: u64) -> bool {
        seq < self.warmup_messages
    }

    /// Runs `f` on this thread's shard.
    pub fn with<R>(&self, f: impl FnOnce(&mut Tally) -> R) -> R {
        let shard = SHARDS.with(|cell| {
            let mut list = cell.borrow_mut();
            if let Some((_, shard)) = list.iter().find(|(id, _)| *id == self.id) {
                return shard.clone();
            }
            // Forget shards of recorders that are gone (only this list still holds them).
            list.retain(|(_, shard)| Arc::strong_count(shard) > 1);
            let shard = Arc::new(Mutex::new(Tally::default()));
            self.shards.lock().push(shard.clone());
            list.push((self.id, shard.clone()));
            shard
        });
        let mut tally = shard.lock();
        f(&mut tally)
    }

    /// A client of `room` connected and subscribed after `connect_us`.
    pub fn connected(&self, room: usize, connect_us: u64, now_us: u64) {
        self.members[room].fetch_add(1, Ordering::Relaxed);
        self.with(|t| {
            t.connected += 1;
            t.connect.saturating_record(connect_us.max(1));
            t.last_resolved_us = t.last_resolved_us.max(now_us);
        });
        self.resolved.fetch_add(1, Ordering::Release);
    }

    /// A client could not connect or subscribe.
    pub fn failed(&self, reason: &str, now_us: u64) {
        self.with(|t| {
            t.failed += 1;
            t.count_error(reason);
            t.last_resolved_us = t.last_resolved_us.max(now_us);
        });
        self.resolved.fetch_add(1, Ordering::Release);
    }

    /// A churning client lost its connection (`reason`) or dropped it on purpose (`None`); it stays a member of
    /// its room, since it comes back and is owed every event.
    pub fn dropped(&self, reason: Option<&str>) {
        self.with(|t| match reason {
            Some(reason) => {
                t.disconnects += 1;
                t.count_error(reason);
            }
            None => t.drops += 1,
        });
    }

    /// A connected client of `room` lost its connection.
    pub fn disconnected(&self, room: usize, reason: &str) {
        self.members[room].fetch_sub(1, Ordering::Relaxed);
        self.with(|t| {
            t.disconnects += 1;
            t.count_error(reason);
        });
    }

    /// Clients that connected or failed so far.
    pub fn resolved(&self) -> u64 {
        self.resolved.load(Ordering::Acquire)
    }

    /// Every shard merged, with the live member counts.
    pub fn snapshot(&self) -> Tally {
        let mut total = Tally {
            members: vec![0; self.rooms],
            ..Tally::default()
        };
        let shards = self.shards.lock().clone();
        for shard in shards {
            total.merge(&shard.lock());
        }
        for (room, members) in total.members.iter_mut().zip(self.members.iter()) {
            *room = members.load(Ordering::Relaxed);
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally_with(latencies: &[u64], deliveries_at: u64) -> Tally {
        let mut t = Tally::default();
        for &l in latencies {
            t.record_delivery(deliveries_at, deliveries_at - l, false);
        }
        t
    }

    #[test]
    fn histogram_survives_the_pipe() {
        let mut h = new_hist();
        for v in [1, 10, 100, 1_000, 65_000, 1_000_000, 10 * HIST_MAX_US] {
            h.saturating_record(v);
        }
        let back = decode_hist(&encode_hist(&h)).unwrap();
        assert_eq!(back.len(), h.len());
        assert_eq!(back.max(), h.max());
        assert_eq!(back.value_at_quantile(0.5), h.value_at_quantile(0.5));
        assert!(decode_hist("not base64!").is_err());
        assert!(decode_hist("AAAA").is_err());
    }

    #[test]
    fn histograms_merge() {
        let mut a = new_hist();
        let mut b = new_hist();
        for v in 1..=1000 {
            a.saturating_record(v);
            b.saturating_record(v + 1000);
        }
        merge_hist(&mut a, &b);
        assert_eq!(a.len(), 2000);
        let p50 = a.value_at_quantile(0.5);
        assert!((995..=1005).contains(&p50), "{p50}");
        assert!(a.max() >= 2000 && a.max() <= 2002);
    }

    #[test]
    fn tallies_merge() {
        let mut a = tally_with(&[100, 200], 5_000);
        a.connected = 2;
        a.members = vec![1, 1];
        a.count_error("eof");
        a.last_resolved_us = 10;
        let mut b = tally_with(&[300], 3_000);
        b.connected = 1;
        b.failed = 2;
        b.members = vec![0, 1, 7];
        b.count_error("eof");
        b.count_error("timeout");
        b.duplicates = 1;
        a.merge(&b);
        assert_eq!(
            (a.connected, a.failed, a.deliveries, a.duplicates),
            (3, 2, 3, 1)
        );
        assert_eq!(a.members, [1, 2, 7]);
        assert_eq!(a.first_delivery_us, 3_000);
        assert_eq!(a.last_delivery_us, 5_000);
        assert_eq!(a.last_resolved_us, 10);
        assert_eq!(a.latency.len(), 3);
        assert_eq!(a.errors["eof"], 2);
        assert_eq!(a.errors["timeout"], 1);
        // Merging an empty tally changes nothing.
        let before = (a.deliveries, a.first_delivery_us, a.latency.len());
        a.merge(&Tally::default());
        assert_eq!(before, (a.deliveries, a.first_delivery_us, a.latency.len()));
    }

    #[test]
    fn tally_json_round_trip() {
        let mut t = tally_with(&[42, 4200], 9_000);
        t.count_error("socket.io connect error: unauthorized");
        let text = serde_json::to_string(&t).unwrap();
        let back: Tally = serde_json::from_str(&text).unwrap();
        assert_eq!(back.deliveries, 2);
        assert_eq!(back.latency.len(), 2);
        assert_eq!(back.latency.max(), t.latency.max());
        assert_eq!(back.errors, t.errors);
    }

    #[test]
    fn warmup_and_negative_latency() {
        let mut t = Tally::default();
        t.record_delivery(100, 50, true);
        t.record_delivery(100, 150, false);
        assert_eq!(
            (t.warmup_deliveries, t.deliveries, t.negative_latency),
            (1, 1, 1)
        );
        assert_eq!(t.latency.len(), 1);
        assert_eq!(t.all_deliveries(), 2);
    }

    #[test]
    fn recorder_shards_per_thread() {
        let rec = Recorder::new(2, 5);
        assert!(rec.is_warmup(4) && !rec.is_warmup(5));
        rec.connected(1, 1_000, 7);
        rec.failed("refused", 8);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..100 {
                        rec.with(|t| t.record_delivery(10, 5, false));
                    }
                });
            }
        });
        rec.disconnected(1, "eof");
        let snap = rec.snapshot();
        assert_eq!(snap.deliveries, 300);
        assert_eq!((snap.connected, snap.failed, snap.disconnects), (1, 1, 1));
        assert_eq!(snap.members, [0, 0]);
        assert_eq!(snap.errors.len(), 2);
        assert_eq!(rec.resolved(), 2);
        // A second recorder on the same threads keeps its own counts.
        let other = Recorder::new(1, 0);
        other.with(|t| t.untimed += 1);
        assert_eq!(other.snapshot().untimed, 1);
        assert_eq!(rec.snapshot().untimed, 0);
    }
}
