//! What the direct-message bench measures, shared by every connection task: each message by (sender, counter)
//! with the devices that received it, the three latency histograms, the refusals by error code, the per-device
//! checks (redeliveries, duplicates after an ack, order per sender) and the reconnections.

use std::collections::{BTreeMap, HashMap};

use parking_lot::Mutex;

use crate::bench::stats::{new_hist, Hist};

/// A message of the run: sender index and that sender's counter.
pub type Key = (u32, u64);

/// What a device's receipt of a message was, as its device book judged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receipt {
    /// The first time this device got the message.
    First,
    /// Again, before the server confirmed the device's acknowledgement: at-least-once delivery allows it.
    Redelivered,
    /// Again, after the server confirmed the device's acknowledgement: an error.
    AfterAck,
}

/// What became of one message.
#[derive(Debug, Default, Clone, Copy)]
struct Entry {
    /// The server answered the `dm` with `ok: true`.
    accepted: bool,
    /// Bit `d` set once device `d` of the recipient received it.
    devices: u64,
    /// A `delivered` status reached the sender.
    delivered_status: bool,
}

/// The counters and histograms; read through [`Ledger::snapshot`].
#[derive(Debug, Clone)]
pub struct Counts {
    /// `dm` events written.
    pub sent: u64,
    /// Answers to them (accepted or refused).
    pub answered: u64,
    /// Answers with `ok: true`.
    pub accepted: u64,
    /// Refusals by `error` code (`timeout`-free: an unanswered `dm` is just not answered).
    pub refused: BTreeMap<String, u64>,
    /// `dm` events written again, with the same idempotency key, after their answer was lost with a connection.
    pub resent: u64,
    /// First receipts of a message by a device.
    pub receipts: u64,
    /// Receipts of a message a device had received before without its acknowledgement being confirmed.
    pub redelivered: u64,
    /// Receipts of a message whose acknowledgement by the same device the server had confirmed.
    pub duplicated_after_ack: u64,
    /// Receipts of a message (sender, counter) under a second message id: the server stored it twice.
    pub stored_twice: u64,
    /// Receipts out of the order in which the sender's messages were accepted (see the device book).
    pub out_of_order: u64,
    /// `ack` events the server refused (their ids are acknowledged again).
    pub ack_refusals: u64,
    /// Connections opened again after one dropped.
    pub reconnects: u64,
    /// Failed attempts to open a connection again, by reason.
    pub reconnect_failures: BTreeMap<String, u64>,
    /// Messages whose first `delivered` status reached the sender.
    pub delivered_statuses: u64,
    /// Events and acks that did not parse as the bench's.
    pub unparsed: u64,
    /// Send → accepted ack, µs.
    pub accept_us: Hist,
    /// Send → device receive, µs, every first receipt.
    pub deliver_us: Hist,
    /// Send → first `delivered` status at the sender, µs.
    pub status_us: Hist,
    /// Unix µs of the last accepted ack.
    pub last_accept_us: u64,
}

impl Default for Counts {
    fn default() -> Counts {
        Counts {
            sent: 0,
            answered: 0,
            accepted: 0,
            refused: BTreeMap::new(),
            resent: 0,
            receipts: 0,
            redelivered: 0,
            duplicated_after_ack: 0,
            stored_twice: 0,
            out_of_order: 0,
            ack_refusals: 0,
            reconnects: 0,
            reconnect_failures: BTreeMap::new(),
            delivered_statuses: 0,
            unparsed: 0,
            accept_us: new_hist(),
            deliver_us: new_hist(),
            status_us: new_hist(),
            last_accept_us: 0,
        }
    }
}

/// How far a run is (see [`Counts`] for each field).
#[derive(Debug, Clone, Copy)]
pub struct Tick {
    /// `dm` events written.
    pub sent: u64,
    /// Answers to them.
    pub answered: u64,
    /// Accepted ones.
    pub accepted: u64,
    /// First receipts by devices.
    pub receipts: u64,
    /// First `delivered` statuses at the senders.
    pub delivered_statuses: u64,
    /// Connections opened again.
    pub reconnects: u64,
}

#[derive(Default)]
struct Inner {
    counts: Counts,
    messages: HashMap<Key, Entry>,
}

/// The shared record of a run.
#[derive(Default)]
pub struct Ledger {
    inner: Mutex<Inner>,
}

impl Ledger {
    /// A `dm` was written.
    pub fn sent(&self) {
        self.inner.lock().counts.sent += 1;
    }

    /// The server accepted message `key`, sent at `sent_us`, answering at `now_us`.
    pub fn accepted(&self, key: Key, sent_us: u64, now_us: u64) {
        let mut inner = self.inner.lock();
        inner.messages.entry(key).or_default().accepted = true;
        let c = &mut inner.counts;
        c.answered += 1;
        c.accepted += 1;
        c.last_accept_us = c.last_accept_us.max(now_us);
        record(&mut c.accept_us, now_us.saturating_sub(sent_us));
    }

    /// The server refused a `dm` with `code`.
    pub fn refused(&self, code: &str) {
        let mut inner = self.inner.lock();
        inner.counts.answered += 1;
        *inner.counts.refused.entry(code.to_owned()).or_default() += 1;
    }

    /// `count` unanswered `dm` events were written again on a new connection.
    pub fn resent(&self, count: u64) {
        self.inner.lock().counts.resent += count;
    }

    /// Device `device` (index within its user) received message `key`, sent at `sent_us`, at `now_us`; `kind`
    /// says whether it had received it before. Only first receipts count towards delivery and its latency.
    pub fn received(&self, key: Key, device: u32, sent_us: u64, now_us: u64, kind: Receipt) {
        let mut inner = self.inner.lock();
        match kind {
            Receipt::First => {
                inner.messages.entry(key).or_default().devices |= 1 << device;
                inner.counts.receipts += 1;
                record(&mut inner.counts.deliver_us, now_us.saturating_sub(sent_us));
            }
            Receipt::Redelivered => inner.counts.redelivered += 1,
            Receipt::AfterAck => inner.counts.duplicated_after_ack += 1,
        }
    }

    /// A device got a message it already had under another message id.
    pub fn stored_twice(&self) {
        self.inner.lock().counts.stored_twice += 1;
    }

    /// A device got a message from a sender out of that sender's order.
    pub fn out_of_order(&self) {
        self.inner.lock().counts.out_of_order += 1;
    }

    /// The server refused a device's `ack` event.
    pub fn ack_refused(&self) {
        self.inner.lock().counts.ack_refusals += 1;
    }

    /// A connection was opened again after it dropped.
    pub fn reconnected(&self) {
        self.inner.lock().counts.reconnects += 1;
    }

    /// An attempt to open a connection again failed for `reason`.
    pub fn reconnect_failed(&self, reason: &str) {
        let mut inner = self.inner.lock();
        *inner
            .counts
            .reconnect_failures
            .entry(reason.to_owned())
            .or_default() += 1;
    }

    /// A `delivered` status for message `key` (sent at `sent_us`) reached its sender at `now_us`; only the first
    /// per message counts.
    pub fn delivered_status(&self, key: Key, sent_us: u64, now_us: u64) {
        let mut inner = self.inner.lock();
        let entry = inner.messages.entry(key).or_default();
        if entry.delivered_status {
            return;
        }
        entry.delivered_status = true;
        inner.counts.delivered_statuses += 1;
        record(&mut inner.counts.status_us, now_us.saturating_sub(sent_us));
    }

    /// Something that did not parse.
    pub fn unparsed(&self) {
        self.inner.lock().counts.unparsed += 1;
    }

    /// The counters that tell how far the run is, without copying the histograms.
    pub fn snapshot_counts(&self) -> Tick {
        let c = &self.inner.lock().counts;
        Tick {
            sent: c.sent,
            answered: c.answered,
            accepted: c.accepted,
            receipts: c.receipts,
            delivered_statuses: c.delivered_statuses,
            reconnects: c.reconnects,
        }
    }

    /// A copy of the counters.
    pub fn snapshot(&self) -> Counts {
        self.inner.lock().counts.clone()
    }

    /// Accepted messages that some of the recipient's `devices` devices never received, and the receipts
    /// missing over all of them.
    pub fn lost(&self, devices: u32) -> (u64, u64) {
        let all = if devices >= 64 {
            u64::MAX
        } else {
            (1u64 << devices) - 1
        };
        let inner = self.inner.lock();
        let mut lost = 0;
        let mut missing = 0;
        for entry in inner.messages.values().filter(|e| e.accepted) {
            let got = entry.devices & all;
            if got != all {
                lost += 1;
                missing += u64::from(devices - got.count_ones());
            }
        }
        (lost, missing)
    }
}

fn record(hist: &mut Hist, us: u64) {
    hist.saturating_record(us.max(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_counts_accepted_messages_a_device_missed() {
        let ledger = Ledger::default();
        ledger.accepted((0, 0), 10, 20);
        ledger.accepted((0, 1), 10, 20);
        ledger.refused("busy");
        ledger.received((0, 0), 0, 10, 30, Receipt::First);
        ledger.received((0, 0), 1, 10, 40, Receipt::First);
        ledger.received((0, 0), 1, 10, 50, Receipt::AfterAck);
        ledger.received((0, 0), 0, 10, 50, Receipt::Redelivered);
        ledger.received((0, 1), 1, 10, 30, Receipt::First);
        // Neither a redelivery nor a duplicate makes up for a device that never got the message.
        ledger.received((0, 1), 1, 10, 60, Receipt::Redelivered);
        // A receipt of a message whose answer never came is not a loss.
        ledger.received((1, 0), 0, 10, 30, Receipt::First);
        assert_eq!(ledger.lost(2), (1, 1));
        let c = ledger.snapshot();
        assert_eq!((c.accepted, c.answered, c.receipts), (2, 3, 4));
        assert_eq!((c.redelivered, c.duplicated_after_ack), (2, 1));
        assert_eq!(c.refused.get("busy"), Some(&1));
        ledger.delivered_status((0, 0), 10, 60);
        ledger.delivered_status((0, 0), 10, 70);
        assert_eq!(ledger.snapshot().delivered_statuses, 1);
    }
}
