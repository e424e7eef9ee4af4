//! Why clients and backends are turned away, for operators: every refused client token and every refused API
//! key is counted by reason, and logged at INFO with that reason, at most one line per second for each of the
//! two kinds, so a crowd of bad credentials cannot flood the log. A line names the refusal that triggered it
//! and how many were held back since the previous line, by reason. The token or key itself is never logged.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use std::sync::Mutex;

use super::AuthError;

/// At most one line per this interval for each kind of refusal.
const INTERVAL: Duration = Duration::from_secs(1);

/// A rate limiter for one kind of refusal log line.
#[derive(Debug)]
pub struct RefusalLog {
    interval: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    last_line: Option<Instant>,
    held_back: BTreeMap<&'static str, u64>,
}

impl RefusalLog {
    /// At most one line per `interval`.
    pub const fn new(interval: Duration) -> RefusalLog {
        RefusalLog {
            interval,
            state: Mutex::new(State {
                last_line: None,
                held_back: BTreeMap::new(),
            }),
        }
    }

    /// Notes a refusal for `reason` at `now`. `Some(held back)` when a line is due (the refusals that got no
    /// line since the previous one, as `reason=n ...`, or `none`), else `None` (this one is held back).
    pub fn note(&self, reason: &'static str, now: Instant) -> Option<String> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let due = state
            .last_line
            .is_none_or(|last| now.saturating_duration_since(last) >= self.interval);
        if !due {
            *state.held_back.entry(reason).or_default() += 1;
            return None;
        }
        state.last_line = Some(now);
        let held = std::mem::take(&mut state.held_back);
        Some(if held.is_empty() {
            "none".to_owned()
        } else {
            held.iter()
                .map(|(reason, n)| format!("{reason}={n}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
    }
}

static CLIENT_TOKENS: RefusalLog = RefusalLog::new(INTERVAL);
static API_KEYS: RefusalLog = RefusalLog::new(INTERVAL);

/// A Socket.IO client's connection or token refresh was refused: counted in
/// `tidings_auth_failures_total{reason}` and logged (rate-limited) with the reason and `detail`.
pub fn client_refused(reason: &'static str, detail: &str) {
    metrics::counter!("tidings_auth_failures_total", "reason" => reason).increment(1);
    if let Some(held_back) = CLIENT_TOKENS.note(reason, Instant::now()) {
        tracing::info!(reason = %reason, detail, held_back = %held_back, "client refused");
    }
}

/// A client's token was refused by the verifier: see [`client_refused`].
pub fn token_refused(error: &AuthError) {
    client_refused(error.reason(), &error.detail());
}

/// An HTTP API request was refused for its API key (`missing`, `not_bearer` or `wrong_key`): counted in
/// `tidings_api_unauthorized_total{reason}` and logged (rate-limited) with the reason, route and peer.
pub fn api_key_refused(reason: &'static str, path: &str, peer: Option<IpAddr>) {
    metrics::counter!("tidings_api_unauthorized_total", "reason" => reason).increment(1);
    if let Some(held_back) = API_KEYS.note(reason, Instant::now()) {
        let peer = peer.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
        tracing::info!(reason = %reason, path, %peer, held_back = %held_back, "API request refused");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_what_was_held_back() {
        let log = RefusalLog::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(log.note("expired", t0).as_deref(), Some("none"));
        assert_eq!(log.note("expired", t0 + Duration::from_millis(10)), None);
        assert_eq!(
            log.note("bad_signature", t0 + Duration::from_millis(20)),
            None
        );
        assert_eq!(log.note("expired", t0 + Duration::from_millis(30)), None);
        assert_eq!(
            log.note("missing", t0 + Duration::from_secs(1)).as_deref(),
            Some("bad_signature=1 expired=2")
        );
        assert_eq!(
            log.note("missing", t0 + Duration::from_secs(3)).as_deref(),
            Some("none"),
            "the count starts again after each line"
        );
    }
}
