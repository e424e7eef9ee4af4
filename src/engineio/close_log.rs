//! Logging of sessions closed for misbehaving (protocol errors, floods, oversized or invalid data) in a way a
//! crowd of bad clients cannot turn into a flood of log lines: each close is logged at debug level, and at most
//! one warning per interval says what was closed since the previous one, by reason.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::CloseReason;

/// The rate limiter behind the misbehaviour warnings of one endpoint.
#[derive(Debug)]
pub struct CloseLog {
    interval: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When the last warning was written.
    last_warning: Option<Instant>,
    /// Closes since that warning that got no line of their own, by reason label.
    suppressed: BTreeMap<&'static str, u64>,
}

/// A warning to write now: the close that triggered it, plus what was held back since the previous warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Closes without a warning of their own since the previous warning, by reason label.
    pub suppressed: BTreeMap<&'static str, u64>,
}

impl Warning {
    /// How many closes were held back.
    pub fn suppressed_total(&self) -> u64 {
        self.suppressed.values().sum()
    }

    /// `protocol_error=3 flood=1`, or `none`.
    pub fn suppressed_by_reason(&self) -> String {
        if self.suppressed.is_empty() {
            return "none".to_owned();
        }
        self.suppressed
            .iter()
            .map(|(reason, n)| format!("{reason}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl CloseLog {
    /// At most one warning per `interval`.
    pub fn new(interval: Duration) -> CloseLog {
        CloseLog {
            interval,
            state: Mutex::new(State::default()),
        }
    }

    /// Whether `reason` is a client's misbehaviour, which this log rate-limits.
    pub fn is_misbehaviour(reason: &CloseReason) -> bool {
        matches!(
            reason,
            CloseReason::ProtocolError(_)
                | CloseReason::InvalidData(_)
                | CloseReason::SlowConsumer
                | CloseReason::Flood
                | CloseReason::PayloadTooLarge
        )
    }

    /// Notes a misbehaviour close at `now`: a [`Warning`] when one is due, else `None` (the close is counted
    /// for the next warning).
    pub fn note(&self, reason: &CloseReason, now: Instant) -> Option<Warning> {
        let mut state = self.state.lock();
        let due = state
            .last_warning
            .is_none_or(|last| now.saturating_duration_since(last) >= self.interval);
        if due {
            state.last_warning = Some(now);
            return Some(Warning {
                suppressed: std::mem::take(&mut state.suppressed),
            });
        }
        *state.suppressed.entry(reason.label()).or_default() += 1;
        None
    }

    /// Logs a close: every one at debug level; a misbehaviour also as a warning when one is due.
    pub fn log(&self, sid: &dyn std::fmt::Display, reason: &CloseReason) {
        tracing::debug!(sid = %sid, %reason, "closing session");
        if !Self::is_misbehaviour(reason) {
            return;
        }
        match self.note(reason, Instant::now()) {
            Some(warning) => tracing::warn!(
                sid = %sid,
                %reason,
                suppressed = warning.suppressed_total(),
                suppressed_by_reason = %warning.suppressed_by_reason(),
                "closing a misbehaving session (further ones are logged at debug level, at most one warning \
                 per {}s; suppressed counts the ones since the last warning)",
                self.interval.as_secs_f64()
            ),
            None => metrics::counter!("tidings_log_lines_suppressed_total").increment(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_interval_with_the_rest_counted() {
        let log = CloseLog::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let protocol = CloseReason::ProtocolError("bad".into());
        assert_eq!(
            log.note(&protocol, t0),
            Some(Warning {
                suppressed: BTreeMap::new()
            }),
            "the first one is logged at once"
        );
        let mut warnings = 0;
        for i in 0..10_000u64 {
            let reason = if i % 2 == 0 {
                protocol.clone()
            } else {
                CloseReason::Flood
            };
            // 10,000 closes spread over 9.999 s: all inside the first interval.
            if log.note(&reason, t0 + Duration::from_millis(i)).is_some() {
                warnings += 1;
            }
        }
        assert_eq!(warnings, 0);
        let warning = log.note(&protocol, t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(warning.suppressed_total(), 10_000);
        assert_eq!(
            warning.suppressed_by_reason(),
            "flood=5000 protocol_error=5000"
        );
        assert!(log.note(&protocol, t0 + Duration::from_secs(11)).is_none());
        let warning = log.note(&protocol, t0 + Duration::from_secs(60)).unwrap();
        assert_eq!(warning.suppressed_by_reason(), "protocol_error=1");
    }

    #[test]
    fn only_misbehaviour_is_rate_limited() {
        for reason in [
            CloseReason::ProtocolError(String::new()),
            CloseReason::InvalidData(String::new()),
            CloseReason::SlowConsumer,
            CloseReason::Flood,
            CloseReason::PayloadTooLarge,
        ] {
            assert!(CloseLog::is_misbehaviour(&reason), "{reason}");
        }
        for reason in [
            CloseReason::TransportClose,
            CloseReason::ClientClose,
            CloseReason::PingTimeout,
            CloseReason::ServerShutdown,
            CloseReason::ServerClose(String::new()),
        ] {
            assert!(!CloseLog::is_misbehaviour(&reason), "{reason}");
        }
    }
}
