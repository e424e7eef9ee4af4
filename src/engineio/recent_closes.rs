//! The last session closes of an endpoint and the count of each reason since start: what the dashboard shows
//! as "recent disconnect reasons". Bounded: [`KEPT`] closes and one counter per [`CloseReason`] label.

use std::collections::{BTreeMap, VecDeque};

use parking_lot::Mutex;
use serde::Serialize;

use super::engine::transport_label;
use super::session::TransportKind;
use super::CloseReason;

/// How many of the latest closes are kept.
pub const KEPT: usize = 50;

/// One session close.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Close {
    /// When, milliseconds since the Unix epoch.
    pub at: u64,
    /// The reason's label (`transport_close`, `ping_timeout`, `server_shutdown`, …).
    pub reason: &'static str,
    /// The session's transport then (`polling` or `websocket`).
    pub transport: &'static str,
}

/// The latest closes, newest last, and the counts by reason.
#[derive(Debug, Default)]
pub struct RecentCloses {
    state: Mutex<(VecDeque<Close>, BTreeMap<&'static str, u64>)>,
}

impl RecentCloses {
    /// Notes a close.
    pub fn record(&self, reason: &CloseReason, transport: TransportKind) {
        let close = Close {
            at: crate::messages::now_ms(),
            reason: reason.label(),
            transport: transport_label(transport),
        };
        let mut state = self.state.lock();
        *state.1.entry(close.reason).or_default() += 1;
        if state.0.len() == KEPT {
            state.0.pop_front();
        }
        state.0.push_back(close);
    }

    /// The kept closes, newest first, and the counts by reason since start.
    pub fn snapshot(&self) -> (Vec<Close>, BTreeMap<&'static str, u64>) {
        let state = self.state.lock();
        (state.0.iter().rev().cloned().collect(), state.1.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_and_counts_every_reason() {
        let recent = RecentCloses::default();
        for _ in 0..KEPT + 10 {
            recent.record(&CloseReason::PingTimeout, TransportKind::Polling);
        }
        recent.record(&CloseReason::ServerShutdown, TransportKind::WebSocket);
        let (closes, counts) = recent.snapshot();
        assert_eq!(closes.len(), KEPT);
        assert_eq!(closes[0].reason, "server_shutdown");
        assert_eq!(closes[0].transport, "websocket");
        assert_eq!(counts["ping_timeout"], KEPT as u64 + 10);
        assert_eq!(counts["server_shutdown"], 1);
    }
}
