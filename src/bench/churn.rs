//! Churn: while events are published, a share of this process's websocket clients per minute drops its
//! connection (`--reconnect-per-min`), one at a time at evenly spaced moments, each a client picked at random
//! among those connected then. A client is told through its [`Slot`]; the dropping, reconnecting and resuming is
//! the client's own (`client.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng as _, SeedableRng as _};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::plan::Plan;

/// Random picks tried per drop before the moment passes without one (every pick was reconnecting).
const PICKS: usize = 16;

/// One client's line from the churn driver.
#[derive(Default)]
pub struct Slot {
    /// Connected and reading: it may be picked.
    live: AtomicBool,
    /// Set when it was picked.
    drop: Notify,
}

impl Slot {
    /// The client is connected (`true`) or on its way back (`false`).
    pub fn set_live(&self, live: bool) {
        self.live.store(live, Ordering::Release);
    }

    /// Resolves once the client was picked to drop its connection.
    pub async fn picked(&self) {
        self.drop.notified().await;
    }

    /// Picks the client if it is connected.
    fn pick(&self) -> bool {
        let live = self.live.swap(false, Ordering::AcqRel);
        if live {
            self.drop.notify_one();
        }
        live
    }
}

/// The churn of one process: a slot per client (by its position among this process's clients).
pub struct Churn {
    slots: Box<[Slot]>,
    /// Positions of the websocket clients (long-polling ones do not churn).
    candidates: Box<[u32]>,
    started: AtomicBool,
}

impl Churn {
    /// Slots for this process's clients of `plan`.
    pub fn new(plan: &Plan) -> Arc<Churn> {
        let mut slots = Vec::new();
        let mut candidates = Vec::new();
        for (k, j) in plan.my_clients().enumerate() {
            slots.push(Slot::default());
            if !plan.is_polling(j) {
                candidates.push(u32::try_from(k).unwrap_or(u32::MAX));
            }
        }
        Arc::new(Churn {
            slots: slots.into(),
            candidates: candidates.into(),
            started: AtomicBool::new(false),
        })
    }

    /// The slot of this process's client `k`.
    pub fn slot(&self, k: usize) -> &Slot {
        &self.slots[k]
    }

    /// Starts dropping clients for the publishing time of `plan` (warm-up and measured phase); once.
    pub fn start(self: &Arc<Self>, plan: &Plan) {
        if self.started.swap(true, Ordering::AcqRel) || self.candidates.is_empty() {
            return;
        }
        let per_second = self.candidates.len() as f64 * plan.churn_per_min / 60.0;
        if per_second <= 0.0 {
            return;
        }
        let every = Duration::from_secs_f64(1.0 / per_second);
        let window = plan.warmup + plan.duration;
        let churn = self.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let mut rng = rand::rngs::StdRng::from_entropy();
            for i in 1u32.. {
                let Some(due) = every.checked_mul(i).filter(|d| *d <= window) else {
                    return;
                };
                tokio::time::sleep_until(start + due).await;
                for _ in 0..PICKS {
                    let k = churn.candidates[rng.gen_range(0..churn.candidates.len())];
                    if churn.slots[k as usize].pick() {
                        break;
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_live_clients_are_picked_once() {
        let slot = Slot::default();
        assert!(!slot.pick(), "not connected: not picked");
        slot.set_live(true);
        assert!(slot.pick());
        assert!(!slot.pick(), "picked already: on its way back");
        // The pick waits for the client.
        tokio::time::timeout(Duration::from_secs(1), slot.picked())
            .await
            .expect("the picked client is told");
    }
}
