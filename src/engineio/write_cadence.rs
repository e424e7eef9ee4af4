//! The node's write interval, widened while its websocket writers run late.
//!
//! Pacing ([`super::write_pacer`]) spaces one busy socket's writes by an interval. A fixed short interval
//! keeps latency low while the node keeps up, but once the workers have more sockets to write than time
//! (thousands of members, every one receiving events), each writer simply runs whenever the scheduler gets
//! to it: a socket is written after a random wait, and the tail of that wait is the latency tail. Then a
//! longer interval is better: every busy socket is written on a steady cadence, each write carries more
//! events, the node spends less time in `writev`, and the clients reading those sockets get the CPU back.
//!
//! The writers report how late they ran (the *lag*: time from when their packets were queued, or from the
//! end of the pacing wait, to the write). Every [`TICK_MS`] the mean lag decides the interval: a node that
//! lags more than [`LAG_SLACK_MS`] widens it to the interval plus the lag, with [`HEADROOM`]; one that keeps
//! up narrows it by [`NARROW`] per tick, down to the configured interval. So the interval settles just
//! above the time the node needs to write all its busy sockets once.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How often the interval is reconsidered, in milliseconds.
pub const TICK_MS: u32 = 100;
/// Mean lag a node may run with before its interval widens, in milliseconds (scheduling noise).
pub const LAG_SLACK_MS: u32 = 10;
/// A widened interval is the old one plus the lag, times this.
pub const HEADROOM: f64 = 1.2;
/// Each tick without lag narrows the interval by this factor.
pub const NARROW: f64 = 0.95;
/// One write in this many reports its lag (a shared counter touched by every write would cost more).
pub const SAMPLE_EVERY: u8 = 8;

/// Set once any adaptive cadence exists in this process: only then do outboxes note when packets were queued.
static TRACKING: AtomicBool = AtomicBool::new(false);

/// True when writers' lag is tracked (some engine of this process has an adaptive cadence).
pub fn tracking() -> bool {
    TRACKING.load(Ordering::Relaxed)
}

/// Milliseconds on the node's coarse clock (since the first call in this process; wraps after 49 days, so
/// compare with `wrapping_sub`).
pub fn now_ms() -> u32 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    epoch.elapsed().as_millis() as u32
}

/// The interval after one tick: `mean_lag_ms` is the mean lag reported during the tick (`None`: no write).
pub fn next_interval(current_ms: u32, mean_lag_ms: Option<u32>, base_ms: u32, max_ms: u32) -> u32 {
    let next = match mean_lag_ms {
        Some(lag) if lag > LAG_SLACK_MS => {
            let widened = (f64::from(current_ms) + f64::from(lag)) * HEADROOM;
            widened.max(f64::from(current_ms))
        }
        _ => f64::from(current_ms) * NARROW,
    };
    (next.round() as u32).clamp(base_ms, max_ms)
}

/// The node's current write interval and the lag reports it is computed from. Shared by all websocket
/// writers of an engine.
#[derive(Debug)]
pub struct WriteCadence {
    base_ms: u32,
    max_ms: u32,
    current_ms: AtomicU32,
    lag_sum_ms: AtomicU64,
    lag_count: AtomicU64,
    /// Coarse-clock time of the last tick.
    ticked_ms: AtomicU32,
}

impl WriteCadence {
    /// A cadence between `base` (the configured interval, also the start) and `max`. It never moves when
    /// `max` is not above `base`, or when `base` is zero (pacing off).
    pub fn new(base: Duration, max: Duration) -> Self {
        let base_ms = millis(base);
        let max_ms = if base_ms == 0 {
            0
        } else {
            millis(max).max(base_ms)
        };
        if max_ms > base_ms {
            TRACKING.store(true, Ordering::Relaxed);
        }
        WriteCadence {
            base_ms,
            max_ms,
            current_ms: AtomicU32::new(base_ms),
            lag_sum_ms: AtomicU64::new(0),
            lag_count: AtomicU64::new(0),
            ticked_ms: AtomicU32::new(now_ms()),
        }
    }

    /// True when the interval can change at all.
    pub fn is_adaptive(&self) -> bool {
        self.max_ms > self.base_ms
    }

    /// The interval busy sockets are paced at now.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.current_ms.load(Ordering::Relaxed)))
    }

    /// A writer ran `lag_ms` late, at `now_ms` on the coarse clock; reconsiders the interval once a tick has
    /// passed since the last time.
    pub fn report(&self, lag_ms: u32, now_ms: u32) {
        if !self.is_adaptive() {
            return;
        }
        self.lag_sum_ms
            .fetch_add(u64::from(lag_ms), Ordering::Relaxed);
        self.lag_count.fetch_add(1, Ordering::Relaxed);
        let ticked = self.ticked_ms.load(Ordering::Relaxed);
        let elapsed = now_ms.wrapping_sub(ticked);
        if elapsed < TICK_MS
            || self
                .ticked_ms
                .compare_exchange(ticked, now_ms, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.tick(elapsed / TICK_MS);
    }

    /// Ends a tick (`ticks` of them when no write reported for a while: each quiet one narrows).
    fn tick(&self, ticks: u32) {
        let sum = self.lag_sum_ms.swap(0, Ordering::Relaxed);
        let count = self.lag_count.swap(0, Ordering::Relaxed);
        let mean = (count > 0).then(|| (sum / count).min(u64::from(u32::MAX)) as u32);
        let mut interval = self.current_ms.load(Ordering::Relaxed);
        for _ in 1..ticks.min(64) {
            interval = next_interval(interval, None, self.base_ms, self.max_ms);
        }
        interval = next_interval(interval, mean, self.base_ms, self.max_ms);
        self.current_ms.store(interval, Ordering::Relaxed);
        metrics::gauge!("tidings_ws_write_interval_ms").set(f64::from(interval));
        if let Some(mean) = mean {
            metrics::gauge!("tidings_ws_write_lag_ms").set(f64::from(mean));
        }
    }
}

/// Whole milliseconds of `duration`, saturating at `u32::MAX`.
pub(crate) fn millis(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cadence(base: u64, max: u64) -> WriteCadence {
        WriteCadence::new(Duration::from_millis(base), Duration::from_millis(max))
    }

    fn ms(cadence: &WriteCadence) -> u64 {
        cadence.interval().as_millis() as u64
    }

    #[test]
    fn lag_beyond_the_slack_widens_by_the_lag_with_headroom() {
        assert_eq!(next_interval(20, Some(180), 20, 500), 240);
        assert_eq!(next_interval(240, Some(30), 20, 500), 324);
        assert_eq!(next_interval(400, Some(300), 20, 500), 500, "capped");
    }

    #[test]
    fn a_node_that_keeps_up_narrows_back_to_the_base() {
        assert_eq!(next_interval(200, Some(LAG_SLACK_MS), 20, 500), 190);
        assert_eq!(next_interval(200, None, 20, 500), 190);
        assert_eq!(next_interval(21, Some(2), 20, 500), 20);
        assert_eq!(
            next_interval(20, Some(0), 20, 500),
            20,
            "never below the base"
        );
    }

    #[test]
    fn reports_move_the_interval_once_per_tick() {
        let c = cadence(20, 500);
        let start = c.ticked_ms.load(Ordering::Relaxed);
        c.report(200, start + 1);
        c.report(160, start + 50);
        assert_eq!(ms(&c), 20, "within the first tick nothing moves");
        c.report(180, start + TICK_MS);
        assert_eq!(ms(&c), 240, "mean lag 180: (20 + 180) × 1.2");
        c.report(0, start + TICK_MS + 10);
        c.report(0, start + 2 * TICK_MS);
        assert_eq!(ms(&c), 228, "a tick without lag narrows by 5 %");
    }

    #[test]
    fn quiet_ticks_narrow_too() {
        let c = cadence(20, 500);
        let start = c.ticked_ms.load(Ordering::Relaxed);
        c.report(400, start + TICK_MS);
        assert_eq!(ms(&c), 500);
        // Ten ticks later, the next report ends nine quiet ticks and its own.
        c.report(0, start + 11 * TICK_MS);
        let expected = (0..10).fold(500, |i, _| next_interval(i, None, 20, 500));
        assert_eq!(ms(&c), u64::from(expected));
        assert!(expected < 320);
    }

    #[test]
    fn a_fixed_or_disabled_interval_never_moves() {
        for c in [cadence(20, 20), cadence(20, 10), cadence(0, 500)] {
            assert!(!c.is_adaptive());
            let start = c.ticked_ms.load(Ordering::Relaxed);
            let before = ms(&c);
            c.report(1000, start + TICK_MS);
            c.report(1000, start + 5 * TICK_MS);
            assert_eq!(ms(&c), before);
        }
    }
}
