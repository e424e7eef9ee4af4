//! The part of the report on churn (`--reconnect-per-min`): drops and reconnects, how many sessions were
//! resumed, and what the clients' order check found (events lost, skipped, duplicated, out of order).

use std::fmt;

use serde::Serialize;

use super::report::thousands;
use super::stats::{Hist, Tally};

/// What churning clients counted. Times are milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChurnReport {
    /// Share of the websocket clients dropping their connection per minute, in percent.
    pub per_min_percent: f64,
    /// Connections dropped on purpose.
    pub drops: u64,
    /// Connections lost otherwise (closed by the server, reset); they reconnect too.
    pub lost_connections: u64,
    /// Connections opened again.
    pub reconnects: u64,
    /// Reconnects that resumed their session (same `pid`, missed events replayed).
    pub recovered: u64,
    /// Reconnects answered with a new session although resuming was asked.
    pub not_recovered: u64,
    /// Reconnect attempts that failed (retried on the next node).
    pub reconnect_failures: u64,
    /// Clients still away at the end.
    pub never_back: u64,
    /// Expected deliveries that never arrived: expected minus the distinct events received.
    pub lost: u64,
    /// Events skipped over (a later one of the room came first) that never came.
    pub gaps_unfilled: u64,
    /// Events of a client's room received again.
    pub duplicates: u64,
    /// Events received after a later one of the same room.
    pub out_of_order: u64,
    /// Time from losing a connection to being live again.
    pub reconnect_p50_ms: f64,
    /// 99th percentile of it.
    pub reconnect_p99_ms: f64,
    /// Longest.
    pub reconnect_max_ms: f64,
}

impl ChurnReport {
    /// The churn figures of `tally` for a run at `percent` per minute with `expected` measured deliveries.
    pub fn build(percent: f64, tally: &Tally, expected: u64) -> ChurnReport {
        let quantile = |h: &Hist, q: f64| {
            if h.is_empty() {
                0.0
            } else {
                h.value_at_quantile(q) as f64 / 1000.0
            }
        };
        ChurnReport {
            per_min_percent: percent,
            drops: tally.drops,
            lost_connections: tally.disconnects,
            reconnects: tally.reconnects,
            recovered: tally.recovered,
            not_recovered: tally.not_recovered,
            reconnect_failures: tally.reconnect_failures,
            never_back: (tally.drops + tally.disconnects).saturating_sub(tally.reconnects),
            // Duplicates are not counted as deliveries here, so deliveries are distinct events.
            lost: expected.saturating_sub(tally.deliveries),
            gaps_unfilled: tally.gaps.saturating_sub(tally.gaps_filled),
            duplicates: tally.duplicates,
            out_of_order: tally.out_of_order,
            reconnect_p50_ms: quantile(&tally.reconnect, 0.5),
            reconnect_p99_ms: quantile(&tally.reconnect, 0.99),
            reconnect_max_ms: tally.reconnect.max() as f64 / 1000.0,
        }
    }

    /// What went wrong, one sentence each: anything lost, skipped, repeated or out of order, a session not
    /// resumed, a client not back.
    pub fn shortfalls(&self) -> Vec<String> {
        let counts = [
            (self.lost, "expected deliveries were lost"),
            (self.gaps_unfilled, "events were skipped and never came"),
            (self.duplicates, "events came twice"),
            (self.out_of_order, "events came out of order"),
            (self.not_recovered, "reconnects were not recovered"),
            (
                self.never_back,
                "clients were not connected again at the end",
            ),
        ];
        counts
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{} {what}", thousands(*n)))
            .collect()
    }
}

impl fmt::Display for ChurnReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}%/min: {} drops, {} lost connections, {} reconnects ({} recovered, {} not recovered, {} failed \
             attempts, {} never back); reconnect p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {} lost, {} skipped, \
             {} duplicated, {} out of order",
            self.per_min_percent,
            thousands(self.drops),
            thousands(self.lost_connections),
            thousands(self.reconnects),
            thousands(self.recovered),
            thousands(self.not_recovered),
            thousands(self.reconnect_failures),
            thousands(self.never_back),
            self.reconnect_p50_ms,
            self.reconnect_p99_ms,
            self.reconnect_max_ms,
            thousands(self.lost),
            thousands(self.gaps_unfilled),
            thousands(self.duplicates),
            thousands(self.out_of_order),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_and_shortfalls() {
        let mut t = Tally {
            drops: 10,
            disconnects: 1,
            reconnects: 10,
            recovered: 9,
            not_recovered: 1,
            gaps: 3,
            gaps_filled: 1,
            out_of_order: 1,
            ..Tally::default()
        };
        t.record_delivery(2_000, 1_000, false);
        t.reconnect.saturating_record(40_000);
        let r = ChurnReport::build(1.0, &t, 3);
        assert_eq!((r.lost, r.gaps_unfilled, r.never_back), (2, 2, 1));
        assert!((r.reconnect_p99_ms - 40.0).abs() < 0.1);
        let said = r.shortfalls();
        assert_eq!(said.len(), 5, "{said:?}");
        assert!(said[0].starts_with("2 expected deliveries were lost"));
        assert!(said[3].starts_with("1 reconnects were not recovered"));
        let clean = ChurnReport::build(
            1.0,
            &Tally {
                drops: 2,
                reconnects: 2,
                recovered: 2,
                ..Tally::default()
            },
            0,
        );
        assert!(clean.shortfalls().is_empty());
        assert!(clean.to_string().contains("2 reconnects (2 recovered"));
    }
}
