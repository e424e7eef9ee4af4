//! A recipient device of the direct-message bench. It acknowledges what it receives with the `ack` event (one
//! per batch of packets read together), whose answer confirms that the node stored the receipts; and it judges
//! every receipt against its [`DeviceBook`], kept across its connections: a message received again before its
//! acknowledgement was confirmed is a redelivery (at-least-once allows it), after that a duplicate (an error),
//! and under a second message id a message stored twice (an error). Order is checked per sender, on each
//! connection for every receipt (a replay too) and over the device's life for first receipts (a gap that is
//! filled later shows up there).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::args::DmPlan;
use super::conn::{split_ack_id, Conn};
use super::ledger::{Key, Ledger, Receipt};
use super::reconnect::Redial;
use super::sender::EVENT;
use crate::bench::sys::unix_micros;

/// Most ids in one `ack` event (the node's limit).
const MAX_ACK_IDS: usize = 1000;

/// The data of each bench message: first send time (µs), sender, counter.
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

/// An answer to `ack`.
#[derive(Deserialize)]
struct AckAnswer {
    ok: bool,
}

/// What one device knows across its connections.
#[derive(Debug, Default)]
pub struct DeviceBook {
    /// Message id → whether the node confirmed this device's acknowledgement of it.
    acked: HashMap<String, bool>,
    /// (sender, counter) → the message id it was first received under.
    ids: HashMap<Key, String>,
    /// Sender → highest counter first received from it.
    first_order: HashMap<u32, u64>,
}

/// Order of the receipts on one connection: sender → highest counter received from it.
#[derive(Debug, Default)]
pub struct ConnOrder {
    last: HashMap<u32, u64>,
}

/// How one receipt was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// First receipt, redelivery or duplicate after ack; `None` when the message was stored twice.
    pub receipt: Option<Receipt>,
    /// It came after a later message of the same sender.
    pub out_of_order: bool,
}

impl DeviceBook {
    /// Judges the receipt of message `key` under message id `id` on the connection whose order is `conn`.
    pub fn receive(&mut self, conn: &mut ConnOrder, key: Key, id: &str) -> Verdict {
        let (sender, n) = key;
        let receipt = match self.ids.entry(key) {
            Entry::Occupied(first) if first.get() != id => None,
            Entry::Occupied(_) => match self.acked.get(id) {
                Some(true) => Some(Receipt::AfterAck),
                _ => Some(Receipt::Redelivered),
            },
            Entry::Vacant(slot) => {
                slot.insert(id.to_owned());
                self.acked.insert(id.to_owned(), false);
                Some(Receipt::First)
            }
        };
        let mut out_of_order = raise(&mut conn.last, sender, n);
        if receipt == Some(Receipt::First) {
            out_of_order |= raise(&mut self.first_order, sender, n);
        }
        Verdict {
            receipt,
            out_of_order,
        }
    }

    /// The node stored this device's receipts of `ids`.
    pub fn confirm(&mut self, ids: &[String]) {
        for id in ids {
            if let Some(confirmed) = self.acked.get_mut(id) {
                *confirmed = true;
            }
        }
    }
}

/// Moves `last[sender]` up to `n`; true when `n` is not above it (out of order).
fn raise(last: &mut HashMap<u32, u64>, sender: u32, n: u64) -> bool {
    match last.get(&sender) {
        Some(&before) if before >= n => true,
        _ => {
            last.insert(sender, n);
            false
        }
    }
}

/// Device `d` of its recipient: serves `conn` and, each time a connection drops, the next one `redial` opens,
/// until the run is over.
pub async fn run(
    d: u32,
    plan: Arc<DmPlan>,
    mut conn: Conn,
    mut redial: Redial,
    ledger: Arc<Ledger>,
) {
    let mut book = DeviceBook::default();
    loop {
        serve(d, &mut book, conn, &ledger).await;
        match redial.connect(&plan, &ledger).await {
            Some(next) => conn = next,
            None => return,
        }
    }
}

/// One connection of device `d`, until it ends.
async fn serve(d: u32, book: &mut DeviceBook, conn: Conn, ledger: &Ledger) {
    let Conn {
        mut reader,
        outbox,
        writer,
    } = conn;
    let mut order = ConnOrder::default();
    let mut batch: Vec<String> = Vec::new();
    let mut acks: HashMap<u64, Vec<String>> = HashMap::new();
    let mut next_ack = 1u64;
    while let Ok(packet) = reader.next().await {
        let now = unix_micros();
        match packet.first() {
            Some(b'2') => {
                if let Some((key, id, sent)) = message(&packet[1..], ledger) {
                    let verdict = book.receive(&mut order, key, &id);
                    match verdict.receipt {
                        Some(kind) => ledger.received(key, d, sent, now, kind),
                        None => ledger.stored_twice(),
                    }
                    if verdict.out_of_order {
                        ledger.out_of_order();
                    }
                    batch.push(id);
                }
            }
            Some(b'3') => {
                let (Some(ack), args) = split_ack_id(&packet[1..]) else {
                    continue;
                };
                let Some(ids) = acks.remove(&ack) else {
                    continue;
                };
                match serde_json::from_slice::<(AckAnswer,)>(args) {
                    Ok((AckAnswer { ok: true },)) => book.confirm(&ids),
                    // Not confirmed: redelivered on a later connection, which the book allows.
                    _ => ledger.ack_refused(),
                }
            }
            _ => {}
        }
        if !batch.is_empty() && (batch.len() >= MAX_ACK_IDS || !reader.has_buffered()) {
            let ids = std::mem::take(&mut batch);
            let payload = serde_json::json!(["ack", { "ids": ids }]);
            outbox.send(format!("42{next_ack}{payload}"));
            acks.insert(next_ack, ids);
            next_ack += 1;
        }
    }
    writer.abort();
}

/// The bench message in an event packet body: its key, message id and first send time.
fn message(body: &[u8], ledger: &Ledger) -> Option<(Key, String, u64)> {
    // The node asks for the message's own ack too; the device answers with the `ack` event instead, whose
    // answer says the receipt is stored.
    let (_, args) = split_ack_id(body);
    let Ok((name, data, meta)) = serde_json::from_slice::<(String, Box<RawValue>, Meta)>(args)
    else {
        ledger.unparsed();
        return None;
    };
    if name != EVENT {
        return None;
    }
    let Ok(data) = serde_json::from_str::<Data>(data.get()) else {
        ledger.unparsed();
        return None;
    };
    Some(((data.s, data.n), meta.id, data.t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redelivery_before_a_confirmed_ack_is_allowed_and_after_it_is_not() {
        let mut book = DeviceBook::default();
        let mut conn = ConnOrder::default();
        let first = book.receive(&mut conn, (0, 1), "m1");
        assert_eq!(first.receipt, Some(Receipt::First));
        book.receive(&mut conn, (0, 2), "m2");
        book.confirm(&["m1".to_owned()]);
        // A new connection replays from the oldest unconfirmed message.
        let mut conn = ConnOrder::default();
        let again = book.receive(&mut conn, (0, 2), "m2");
        assert_eq!(
            again,
            Verdict {
                receipt: Some(Receipt::Redelivered),
                out_of_order: false
            }
        );
        assert_eq!(
            book.receive(&mut conn, (0, 3), "m3").receipt,
            Some(Receipt::First)
        );
        let mut conn = ConnOrder::default();
        let dup = book.receive(&mut conn, (0, 1), "m1");
        assert_eq!(dup.receipt, Some(Receipt::AfterAck));
        assert_eq!(
            book.receive(&mut conn, (0, 3), "m3-bis").receipt,
            None,
            "stored twice"
        );
    }

    #[test]
    fn order_holds_per_sender_on_a_connection_and_for_first_receipts() {
        let mut book = DeviceBook::default();
        let mut conn = ConnOrder::default();
        assert!(!book.receive(&mut conn, (0, 4), "a").out_of_order);
        assert!(
            !book.receive(&mut conn, (1, 2), "b").out_of_order,
            "senders apart"
        );
        assert!(
            !book.receive(&mut conn, (0, 9), "c").out_of_order,
            "gaps are other recipients'"
        );
        // On a new connection a replay may go back, but not below the first receipts' order when it is new.
        let mut conn = ConnOrder::default();
        assert!(!book.receive(&mut conn, (0, 4), "a").out_of_order);
        assert!(
            book.receive(&mut conn, (0, 6), "d").out_of_order,
            "6 came after 9"
        );
        assert!(
            book.receive(&mut conn, (0, 5), "e").out_of_order,
            "back on one connection"
        );
    }
}
