//! Write coalescing for a busy websocket: queued packets go out at once when the socket has been quiet, but
//! no sooner than `interval` after its previous write when events keep coming.
//!
//! A room of thousands that receives events faster than one per interval would otherwise cost one `writev`
//! (and, on the client, one read) per member per event. Spacing one socket's writes lets the events that
//! arrive in between leave together in one `writev`, which on a loaded node is the difference between
//! keeping up and falling behind. A socket that receives fewer than one event per interval never waits.

use std::time::Duration;

use tokio::time::Instant;

use super::write_cadence::{millis, SAMPLE_EVERY};

/// Larger lags are reported as this (a clock step, or a socket that sat blocked: not the node's lag).
const MAX_LAG_MS: u32 = 10_000;

/// When one websocket may write next. Lives in the connection task; holds no heap memory.
#[derive(Debug, Clone, Copy)]
pub struct WritePacer {
    /// Shortest time between two writes of queued packets, in milliseconds; 0 writes every wake at once.
    interval_ms: u32,
    /// When packets were last written (or the writer was last allowed to write).
    last: Option<Instant>,
    /// Packets are waiting for [`WritePacer::due`].
    waiting: bool,
    /// How late the next write runs, for the node's write cadence (see [`WritePacer::lag_of_write`]).
    lateness: Lateness,
    /// Writes since the last lag sample.
    unsampled: u8,
}

/// What the next write's lag is measured from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lateness {
    /// From when its packets were queued: nothing held them back on purpose.
    SinceQueued,
    /// Known already: the pacing wait ended this many milliseconds before the writer ran.
    Known(u32),
    /// Unknown: packets held back on purpose were written early (something urgent came).
    Unknown,
}

impl WritePacer {
    /// A pacer spacing writes at least `interval` apart (zero: no spacing).
    pub fn new(interval: Duration) -> Self {
        WritePacer {
            interval_ms: millis(interval),
            last: None,
            waiting: false,
            lateness: Lateness::SinceQueued,
            unsampled: 0,
        }
    }

    /// Changes the spacing (the node's cadence moved); a wait in progress ends at the new deadline.
    pub fn set_interval(&mut self, interval: Duration) {
        self.interval_ms = millis(interval);
    }

    /// Packets were queued at `now`: returns true when they may be written now (and records the write), false
    /// when they must wait until [`WritePacer::due`].
    pub fn on_queued(&mut self, now: Instant) -> bool {
        if self.waiting {
            return false;
        }
        match self.next_allowed() {
            Some(next) if next > now => {
                self.waiting = true;
                false
            }
            _ => {
                self.last = Some(now);
                true
            }
        }
    }

    /// Something that must not wait was queued at `now`: everything queued is written now, and that counts as
    /// the socket's latest write.
    pub fn on_urgent(&mut self, now: Instant) {
        if self.waiting {
            self.lateness = Lateness::Unknown;
        }
        self.waiting = false;
        self.last = Some(now);
    }

    /// When the waiting packets may be written, if packets are waiting.
    pub fn due(&self) -> Option<Instant> {
        if self.waiting {
            self.next_allowed()
        } else {
            None
        }
    }

    /// The timer fired at `now`: returns true when waiting packets may now be written (and records the
    /// write), false when nothing waits or it is too early.
    pub fn on_timer(&mut self, now: Instant) -> bool {
        match self.due() {
            Some(due) if due <= now => {
                self.waiting = false;
                self.last = Some(now);
                self.lateness = Lateness::Known(millis(now - due));
                true
            }
            _ => false,
        }
    }

    /// Packets queued at `queued_ms` were just taken for writing at `now_ms` (both on
    /// [`write_cadence::now_ms`](super::write_cadence::now_ms)'s clock): how late the writer ran, beyond any
    /// wait the pacer asked for. `None` for most writes (one in [`SAMPLE_EVERY`] is reported) and when the
    /// lag cannot be told.
    pub fn lag_of_write(&mut self, queued_ms: u32, now_ms: u32) -> Option<u32> {
        let lateness = std::mem::replace(&mut self.lateness, Lateness::SinceQueued);
        self.unsampled += 1;
        if self.unsampled < SAMPLE_EVERY {
            return None;
        }
        self.unsampled = 0;
        match lateness {
            Lateness::SinceQueued => Some(now_ms.wrapping_sub(queued_ms).min(MAX_LAG_MS)),
            Lateness::Known(lag) => Some(lag),
            Lateness::Unknown => None,
        }
    }

    /// True while queued packets wait for [`WritePacer::due`].
    pub fn is_waiting(&self) -> bool {
        self.waiting
    }

    fn next_allowed(&self) -> Option<Instant> {
        if self.interval_ms == 0 {
            return None;
        }
        self.last
            .map(|last| last + Duration::from_millis(u64::from(self.interval_ms)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_millis(20);

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn the_first_write_goes_at_once() {
        let mut pacer = WritePacer::new(INTERVAL);
        assert!(pacer.on_queued(Instant::now()));
        assert_eq!(pacer.due(), None);
        assert!(!pacer.is_waiting());
    }

    #[test]
    fn a_write_within_the_interval_waits_for_its_end() {
        let start = Instant::now();
        let mut pacer = WritePacer::new(INTERVAL);
        assert!(pacer.on_queued(start));
        assert!(!pacer.on_queued(at(start, 5)));
        assert!(pacer.is_waiting());
        assert_eq!(pacer.due(), Some(at(start, 20)));
        // More packets while waiting keep the same deadline.
        assert!(!pacer.on_queued(at(start, 12)));
        assert_eq!(pacer.due(), Some(at(start, 20)));
        // Too early: still waiting.
        assert!(!pacer.on_timer(at(start, 19)));
        assert!(pacer.is_waiting());
        assert!(pacer.on_timer(at(start, 20)));
        assert!(!pacer.is_waiting());
        // The next write is spaced from the one the timer allowed.
        assert!(!pacer.on_queued(at(start, 30)));
        assert_eq!(pacer.due(), Some(at(start, 40)));
    }

    #[test]
    fn a_socket_quiet_for_an_interval_writes_at_once() {
        let start = Instant::now();
        let mut pacer = WritePacer::new(INTERVAL);
        assert!(pacer.on_queued(start));
        assert!(pacer.on_queued(at(start, 20)));
        assert!(pacer.on_queued(at(start, 1000)));
        assert!(!pacer.is_waiting());
    }

    #[test]
    fn an_urgent_packet_ends_the_wait_and_counts_as_a_write() {
        let start = Instant::now();
        let mut pacer = WritePacer::new(INTERVAL);
        assert!(pacer.on_queued(start));
        assert!(!pacer.on_queued(at(start, 5)));
        pacer.on_urgent(at(start, 8));
        assert!(!pacer.is_waiting());
        assert_eq!(pacer.due(), None);
        // A timer set for the old deadline allows nothing.
        assert!(!pacer.on_timer(at(start, 20)));
        assert!(!pacer.on_queued(at(start, 21)));
        assert_eq!(pacer.due(), Some(at(start, 28)));
    }

    #[test]
    fn a_zero_interval_never_waits() {
        let start = Instant::now();
        let mut pacer = WritePacer::new(Duration::ZERO);
        for ms in [0, 0, 1, 1, 2] {
            assert!(pacer.on_queued(at(start, ms)));
            assert_eq!(pacer.due(), None);
        }
    }

    /// Writes until the next one is the sampled one; none of them reports a lag.
    fn skip_to_sampled_write(pacer: &mut WritePacer, queued_ms: u32, now_ms: u32) {
        for _ in 1..SAMPLE_EVERY {
            assert_eq!(pacer.lag_of_write(queued_ms, now_ms), None);
        }
    }

    /// The lag reported for `SAMPLE_EVERY` writes in a row, the last one being the sampled one.
    fn sampled_lag(pacer: &mut WritePacer, queued_ms: u32, now_ms: u32) -> Option<u32> {
        skip_to_sampled_write(pacer, queued_ms, now_ms);
        pacer.lag_of_write(queued_ms, now_ms)
    }

    /// A pacer whose next write is sampled, holding packets queued 5 ms after a write at `start`.
    fn waiting_before_a_sampled_write(start: Instant) -> WritePacer {
        let mut pacer = WritePacer::new(INTERVAL);
        skip_to_sampled_write(&mut pacer, 0, 0);
        assert!(pacer.on_queued(start));
        assert!(!pacer.on_queued(at(start, 5)));
        pacer
    }

    #[test]
    fn an_unpaced_write_lags_from_when_its_packets_were_queued() {
        let mut pacer = WritePacer::new(INTERVAL);
        assert!(pacer.on_queued(Instant::now()));
        assert_eq!(sampled_lag(&mut pacer, 1_000, 1_180), Some(180));
        assert_eq!(
            sampled_lag(&mut pacer, u32::MAX - 5, 4),
            Some(10),
            "the clock wraps"
        );
    }

    #[test]
    fn a_paced_write_lags_only_from_the_end_of_its_wait() {
        let start = Instant::now();
        let mut pacer = waiting_before_a_sampled_write(start);
        assert!(pacer.on_timer(at(start, 27)));
        // Queued 22 ms before the write, but 20 of them were the pacing wait.
        assert_eq!(pacer.lag_of_write(5, 27), Some(7));
    }

    #[test]
    fn a_wait_cut_short_by_an_urgent_packet_reports_no_lag() {
        let start = Instant::now();
        let mut pacer = waiting_before_a_sampled_write(start);
        pacer.on_urgent(at(start, 15));
        assert_eq!(pacer.lag_of_write(5, 15), None);
    }

    #[test]
    fn a_new_interval_moves_the_deadline_of_a_wait() {
        let start = Instant::now();
        let mut pacer = WritePacer::new(INTERVAL);
        assert!(pacer.on_queued(start));
        assert!(!pacer.on_queued(at(start, 5)));
        pacer.set_interval(Duration::from_millis(200));
        assert_eq!(pacer.due(), Some(at(start, 200)));
        assert!(!pacer.on_timer(at(start, 20)));
        assert!(pacer.on_timer(at(start, 200)));
    }

    #[test]
    fn a_timer_with_nothing_waiting_allows_nothing() {
        let start = Instant::now();
        let mut pacer = WritePacer::new(INTERVAL);
        assert!(!pacer.on_timer(start));
        assert!(pacer.on_queued(start));
        assert!(!pacer.on_timer(at(start, 50)));
    }
}
