//! A token bucket: `per_sec` tokens a second, at most `burst` saved up. Eight bytes, as every session holds
//! one: the tokens as an `f32`, the last take in milliseconds on a process-wide clock as a `u32`, wrapping. A
//! take that looks more than 24 days back or earlier than the last one refills nothing: a `now` read before
//! another thread's take never refills the bucket, and only a bucket left untouched for 24 days or more could
//! notice, by refilling less than it may.

use std::sync::OnceLock;
use std::time::Instant;

/// One bucket; starts full.
#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f32,
    last_ms: u32,
}

/// The origin of [`Bucket`]'s clock, set by the first bucket made.
static BASE: OnceLock<Instant> = OnceLock::new();

fn base() -> Instant {
    *BASE.get_or_init(Instant::now)
}

/// `at` in whole milliseconds since [`BASE`], wrapping.
fn ms(at: Instant) -> u32 {
    at.saturating_duration_since(base()).as_millis() as u32
}

impl Default for Bucket {
    fn default() -> Self {
        base();
        Bucket {
            tokens: f32::MAX,
            last_ms: 0,
        }
    }
}

impl Bucket {
    /// A bucket holding `tokens` to begin with (the rate's burst caps them at the first take).
    pub fn with_tokens(tokens: u32) -> Bucket {
        Bucket {
            tokens: tokens as f32,
            last_ms: ms(Instant::now()),
        }
    }

    /// Takes one token at `now`; false when none is left.
    pub fn take(&mut self, per_sec: u32, burst: u32, now: Instant) -> bool {
        let burst = burst.max(1) as f32;
        let now_ms = ms(now);
        let elapsed = match now_ms.wrapping_sub(self.last_ms) {
            behind if behind > u32::MAX / 2 => 0,
            elapsed => elapsed,
        };
        // In f64: a long pause times a high rate stays exact before the cap applies.
        let refill = f64::from(elapsed) / 1000.0 * f64::from(per_sec);
        self.tokens = (f64::from(self.tokens.min(burst)) + refill).min(f64::from(burst)) as f32;
        self.last_ms = self.last_ms.wrapping_add(elapsed);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate() {
        let mut bucket = Bucket::default();
        let t0 = Instant::now();
        assert!((0..3).all(|_| bucket.take(2, 3, t0)), "the burst");
        assert!(!bucket.take(2, 3, t0), "then empty");
        assert!(
            bucket.take(2, 3, t0 + Duration::from_millis(500)),
            "one token per 1/rate s"
        );
        assert!(!bucket.take(2, 3, t0 + Duration::from_millis(600)));
        assert!(
            !bucket.take(2, 3, t0 + Duration::from_millis(100)),
            "an earlier instant refills nothing"
        );
        assert!((0..3).all(|_| bucket.take(2, 3, t0 + Duration::from_secs(60))));
        assert!(
            !bucket.take(2, 3, t0 + Duration::from_secs(60)),
            "saved up to the burst only"
        );
    }
}
