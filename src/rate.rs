//! A token bucket: `per_sec` tokens a second, at most `burst` saved up.

use std::time::Instant;

/// One bucket; starts full.
#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    last: Option<Instant>,
}

impl Default for Bucket {
    fn default() -> Self {
        Bucket {
            tokens: f64::MAX,
            last: None,
        }
    }
}

impl Bucket {
    /// A bucket holding `tokens` to begin with (the rate's burst caps them at the first take).
    pub fn with_tokens(tokens: u32) -> Bucket {
        Bucket {
            tokens: f64::from(tokens),
            last: Some(Instant::now()),
        }
    }

    /// Takes one token at `now`; false when none is left.
    pub fn take(&mut self, per_sec: u32, burst: u32, now: Instant) -> bool {
        let burst = f64::from(burst.max(1));
        let refill = self.last.map_or(burst, |last| {
            now.duration_since(last).as_secs_f64() * f64::from(per_sec)
        });
        self.tokens = (self.tokens.min(burst) + refill).min(burst);
        self.last = Some(now);
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
        assert!((0..3).all(|_| bucket.take(2, 3, t0 + Duration::from_secs(60))));
        assert!(
            !bucket.take(2, 3, t0 + Duration::from_secs(60)),
            "saved up to the burst only"
        );
    }
}
