//! The result of a tracking run: what was published and accepted, what the managers got and how late, what
//! was lost, and what it cost the servers per accepted position.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::args::TrackingPlan;
use super::roles::{ManagerTally, WorkerTally};
use crate::bench::stats::Hist;

/// One tracking run.
#[derive(Debug, Clone, Serialize)]
pub struct TrackingReport {
    /// The run's name.
    pub label: String,
    /// Nodes connected to.
    pub nodes: usize,
    /// Workers, teams, managers per team.
    pub workers: u32,
    /// Teams.
    pub teams: u32,
    /// Managers per team.
    pub managers: u32,
    /// Positions per second per worker.
    pub rate: f64,
    /// Publishing seconds.
    pub duration_s: f64,
    /// The rooms' conflation interval, ms, when conflated.
    pub conflated_ms: Option<u64>,
    /// Connections that failed to open (or to subscribe), by reason.
    pub failed: BTreeMap<String, u64>,
    /// Positions sent.
    pub sent: u64,
    /// Positions answered `ok`.
    pub accepted: u64,
    /// Accepted positions per second of publishing.
    pub accepted_per_s: f64,
    /// Refusals by reason.
    pub refused: BTreeMap<String, u64>,
    /// Positions never answered.
    pub unanswered: u64,
    /// Publish → answer, ms: p50, p99.
    pub ack_p50_ms: f64,
    /// Publish → answer p99, ms.
    pub ack_p99_ms: f64,
    /// Deliveries to managers.
    pub deliveries: u64,
    /// Deliveries per second of publishing.
    pub deliveries_per_s: f64,
    /// Expected deliveries: each accepted position to each manager of its team (not with conflation).
    pub expected: Option<u64>,
    /// Accepted positions a manager never got (not with conflation).
    pub lost: Option<u64>,
    /// With conflation: (manager, worker) pairs whose last position at the manager is not the worker's last.
    pub stale: Option<u64>,
    /// Deliveries per manager per second.
    pub per_manager_per_s: f64,
    /// Positions received after a later one of the same worker.
    pub out_of_order: u64,
    /// Positions received twice.
    pub duplicates: u64,
    /// Positions of another team (a leak).
    pub foreign: u64,
    /// Worker send → manager receive, ms.
    pub p50_ms: f64,
    /// p90, ms.
    pub p90_ms: f64,
    /// p99, ms.
    pub p99_ms: f64,
    /// Max, ms.
    pub max_ms: f64,
    /// The publishing schedule's worst lag, ms (the bench itself falling behind).
    pub max_schedule_lag_ms: u64,
    /// Server processes measured: their CPU seconds over the run, by pid.
    pub server_cpu_s: BTreeMap<u32, f64>,
    /// Server CPU µs per accepted position (all measured processes).
    pub cpu_us_per_inbound: Option<f64>,
    /// This bench's own CPU seconds over the run.
    pub loadgen_cpu_s: f64,
}

/// What the run gathered, for [`TrackingReport::build`].
pub struct Gathered<'a> {
    /// Connections that failed, by reason.
    pub failed: BTreeMap<String, u64>,
    /// Workers' tallies.
    pub workers: &'a [WorkerTally],
    /// Managers' tallies with their team.
    pub managers: &'a [(u32, ManagerTally)],
    /// Answer times.
    pub ack_latency: &'a Hist,
    /// Delivery times.
    pub latency: &'a Hist,
    /// Accepted positions per worker.
    pub accepted_by: &'a [u64],
    /// Highest accepted sequence + 1 per worker.
    pub last_accepted: &'a [u64],
    /// Positions sent.
    pub sent: u64,
    /// Server CPU seconds by pid.
    pub server_cpu_s: BTreeMap<u32, f64>,
    /// Own CPU seconds.
    pub loadgen_cpu_s: f64,
}

fn ms(hist: &Hist, quantile: f64) -> f64 {
    if hist.is_empty() {
        return 0.0;
    }
    hist.value_at_quantile(quantile) as f64 / 1000.0
}

impl TrackingReport {
    /// The report of `plan`'s run.
    pub fn build(plan: &TrackingPlan, g: &Gathered<'_>) -> TrackingReport {
        let secs = plan.duration.as_secs_f64();
        let accepted: u64 = g.accepted_by.iter().sum();
        let mut refused = BTreeMap::new();
        for tally in g.workers {
            for (reason, n) in &tally.refused {
                *refused.entry(reason.clone()).or_default() += n;
            }
        }
        let deliveries: u64 = g.managers.iter().map(|(_, m)| m.deliveries).sum();
        let team_workers = |team: u32| (team..plan.workers).step_by(plan.teams as usize);
        let (expected, lost, stale) = if plan.conflated.is_some() {
            let stale = g
                .managers
                .iter()
                .map(|(team, m)| {
                    team_workers(*team)
                        .enumerate()
                        .filter(|(j, w)| m.last_seq[*j] != g.last_accepted[*w as usize])
                        .count() as u64
                })
                .sum();
            (None, None, Some(stale))
        } else {
            let mut expected = 0;
            let mut lost = 0;
            for (team, m) in g.managers {
                for (j, w) in team_workers(*team).enumerate() {
                    let want = g.accepted_by[w as usize];
                    expected += want;
                    lost += want.saturating_sub(m.received[j]);
                }
            }
            (Some(expected), Some(lost), None)
        };
        let server_total: f64 = g.server_cpu_s.values().sum();
        TrackingReport {
            label: plan.label.clone(),
            nodes: plan.targets.len(),
            workers: plan.workers,
            teams: plan.teams,
            managers: plan.managers,
            rate: plan.rate,
            duration_s: secs,
            conflated_ms: plan.conflated.map(|d| d.as_millis() as u64),
            failed: g.failed.clone(),
            sent: g.sent,
            accepted,
            accepted_per_s: accepted as f64 / secs,
            refused,
            unanswered: g.workers.iter().map(|w| w.unanswered).sum(),
            ack_p50_ms: ms(g.ack_latency, 0.5),
            ack_p99_ms: ms(g.ack_latency, 0.99),
            deliveries,
            deliveries_per_s: deliveries as f64 / secs,
            expected,
            lost,
            stale,
            per_manager_per_s: deliveries as f64
                / secs
                / (f64::from(plan.teams) * f64::from(plan.managers)),
            out_of_order: g.managers.iter().map(|(_, m)| m.out_of_order).sum(),
            duplicates: g.managers.iter().map(|(_, m)| m.duplicates).sum(),
            foreign: g.managers.iter().map(|(_, m)| m.foreign).sum(),
            p50_ms: ms(g.latency, 0.5),
            p90_ms: ms(g.latency, 0.9),
            p99_ms: ms(g.latency, 0.99),
            max_ms: ms(g.latency, 1.0),
            max_schedule_lag_ms: g.workers.iter().map(|w| w.max_lag_ms).max().unwrap_or(0),
            cpu_us_per_inbound: (!g.server_cpu_s.is_empty() && accepted > 0)
                .then(|| server_total * 1e6 / accepted as f64),
            server_cpu_s: g.server_cpu_s.clone(),
            loadgen_cpu_s: g.loadgen_cpu_s,
        }
    }

    /// The report as one JSON line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// What fell short: failed connections, refused or unanswered positions, lost positions, leaks, disorder.
    pub fn shortfalls(&self) -> Vec<String> {
        let mut short = Vec::new();
        let failed: u64 = self.failed.values().sum();
        if failed > 0 {
            short.push(format!("{failed} connections failed: {:?}", self.failed));
        }
        let refused: u64 = self.refused.values().sum();
        if refused > 0 {
            short.push(format!("{refused} positions refused: {:?}", self.refused));
        }
        if self.unanswered > 0 {
            short.push(format!("{} positions unanswered", self.unanswered));
        }
        if let Some(lost) = self.lost.filter(|&n| n > 0) {
            short.push(format!("{lost} deliveries lost"));
        }
        if let Some(stale) = self.stale.filter(|&n| n > 0) {
            short.push(format!(
                "{stale} managers' last positions are not the workers' last"
            ));
        }
        if self.foreign > 0 {
            short.push(format!("{} positions of another team", self.foreign));
        }
        if self.out_of_order > 0 {
            short.push(format!("{} positions out of order", self.out_of_order));
        }
        short
    }
}

impl fmt::Display for TrackingReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = crate::bench::report::thousands;
        writeln!(
            f,
            "{}: {} workers × {}/s into {} teams, {} managers each, {} node(s), {} s{}",
            self.label,
            self.workers,
            self.rate,
            self.teams,
            self.managers,
            self.nodes,
            self.duration_s,
            self.conflated_ms
                .map_or(String::new(), |ms| format!(", conflated {ms} ms"))
        )?;
        writeln!(
            f,
            "  positions: sent {}, accepted {} ({:.0}/s), refused {}, unanswered {}; answer p50 {:.1} ms, p99 {:.1} ms",
            n(self.sent),
            n(self.accepted),
            self.accepted_per_s,
            n(self.refused.values().sum()),
            n(self.unanswered),
            self.ack_p50_ms,
            self.ack_p99_ms
        )?;
        let completeness = match (self.expected, self.lost, self.stale) {
            (Some(expected), Some(lost), _) => {
                format!("expected {}, lost {}", n(expected), n(lost))
            }
            (_, _, Some(stale)) => format!("stale last positions {}", n(stale)),
            _ => String::new(),
        };
        writeln!(
            f,
            "  managers: deliveries {} ({:.0}/s, {:.1}/s per manager), {completeness}, out of order {}, duplicates {}, other teams' {}",
            n(self.deliveries),
            self.deliveries_per_s,
            self.per_manager_per_s,
            self.out_of_order,
            self.duplicates,
            self.foreign
        )?;
        writeln!(
            f,
            "  latency worker → manager: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms (schedule lag ≤ {} ms)",
            self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms, self.max_schedule_lag_ms
        )?;
        let servers: Vec<String> = self
            .server_cpu_s
            .iter()
            .map(|(pid, s)| format!("{pid}: {s:.2} s"))
            .collect();
        writeln!(
            f,
            "  CPU: servers [{}] → {} µs per accepted position; bench {:.2} s",
            servers.join(", "),
            self.cpu_us_per_inbound
                .map_or("-".to_owned(), |us| format!("{us:.1}")),
            self.loadgen_cpu_s
        )
    }
}
