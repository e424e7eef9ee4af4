//! The result of a run: the merged tallies of all clients, the publisher's figures and the bench's own cost,
//! as a table for people or one JSON line for scripts.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::churn_report::ChurnReport;
use super::plan::{Plan, PublishVia};
use super::publisher::Published;
use super::stats::{Hist, Tally};
use super::sys::Usage;

/// Everything a run measured. Times are milliseconds unless the name says otherwise.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Clients asked for.
    pub clients: usize,
    /// Of which long-polling.
    pub polling_clients: usize,
    /// Nodes connected to.
    pub urls: usize,
    /// Rooms.
    pub rooms: usize,
    /// Client processes (1: in the bench process itself).
    pub workers: usize,
    /// Clients that connected and subscribed.
    pub connected: u64,
    /// Clients that did not.
    pub failed: u64,
    /// Seconds from the first connection attempt until every client had connected or failed.
    pub connect_s: f64,
    /// Connect + subscribe time of one client.
    pub connect_p50_ms: f64,
    /// 99th percentile of it.
    pub connect_p99_ms: f64,
    /// Slowest client.
    pub connect_max_ms: f64,
    /// `http` or `redis`.
    pub publish_via: &'static str,
    /// Events the measured phase was to publish.
    pub planned: u64,
    /// Events issued.
    pub sent: u64,
    /// Events accepted by the server.
    pub accepted: u64,
    /// Events refused or failed.
    pub publish_failed: u64,
    /// Events not issued in time.
    pub not_sent: u64,
    /// Events issued per second.
    pub publish_rate: f64,
    /// Publish request latency.
    pub publish_p50_ms: f64,
    /// 99th percentile of it.
    pub publish_p99_ms: f64,
    /// Slowest publish request.
    pub publish_max_ms: f64,
    /// Largest delay of a request behind its schedule.
    pub max_schedule_lag_ms: f64,
    /// Sum of the `recipients` the HTTP API answered (not for Redis).
    pub recipients_total: Option<u64>,
    /// Σ over rooms of accepted events × subscribed clients.
    pub expected: u64,
    /// Measured events received.
    pub deliveries: u64,
    /// `deliveries / expected`.
    pub delivered_ratio: f64,
    /// Seconds from the first to the last measured delivery.
    pub active_s: f64,
    /// `deliveries / active_s`.
    pub deliveries_per_s: f64,
    /// Publish → deliver latency, 50th percentile.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
    /// Connections lost after connecting.
    pub disconnects: u64,
    /// Events seen twice by a client.
    pub duplicates: u64,
    /// Events that came after a later one to the same client.
    pub out_of_order: u64,
    /// Events without `t` / `seq`.
    pub untimed: u64,
    /// Frames or packets that did not parse.
    pub bad_packets: u64,
    /// Deliveries timed before their send time.
    pub negative_latency: u64,
    /// Events of the warm-up phase received.
    pub warmup_deliveries: u64,
    /// CPU seconds of every bench process over the whole run.
    pub cpu_s: f64,
    /// CPU seconds of every bench process from the start of publishing to the end.
    pub cpu_s_publish: f64,
    /// `cpu_s_publish` per delivery, µs.
    pub cpu_us_per_delivery: f64,
    /// Peak RSS summed over the bench processes, KiB.
    pub peak_rss_kib: u64,
    /// Seconds of the whole run.
    pub run_s: f64,
    /// Connect failures and disconnect reasons.
    pub errors: BTreeMap<String, u64>,
    /// Publish failure reasons.
    pub publish_errors: BTreeMap<String, u64>,
    /// Drops, reconnects and the order check, with `--reconnect-per-min`.
    pub churn: Option<ChurnReport>,
}

/// The inputs of a report besides the plan.
pub struct Inputs<'a> {
    /// Every client's tally, merged.
    pub tally: &'a Tally,
    /// Subscribed clients per room when publishing started.
    pub members: &'a [u64],
    /// The measured publishing phase.
    pub published: &'a Published,
    /// CPU and peak RSS summed over the processes, at the end.
    pub usage: Usage,
    /// CPU seconds summed over the processes when publishing started.
    pub cpu_at_publish: f64,
    /// Wall-clock µs when the clients started connecting.
    pub started_us: u64,
    /// Wall-clock µs at the end.
    pub finished_us: u64,
}

/// Expected deliveries: each accepted event reaches every subscribed member of its room.
pub fn expected_deliveries(accepted_per_room: &[u64], members: &[u64]) -> u64 {
    accepted_per_room
        .iter()
        .zip(members)
        .map(|(events, members)| events * members)
        .sum()
}

/// Milliseconds with µs precision.
fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn quantile_ms(hist: &Hist, q: f64) -> f64 {
    if hist.is_empty() {
        0.0
    } else {
        ms(hist.value_at_quantile(q))
    }
}

impl Report {
    /// What fell short of the plan, one sentence each; empty when the run did all it set out to do: every
    /// client connected, every publish was sent and accepted, and at least `min_delivered` of the expected
    /// deliveries arrived.
    pub fn shortfalls(&self, min_delivered: f64) -> Vec<String> {
        let mut short = Vec::new();
        if self.failed > 0 {
            short.push(format!(
                "{} of {} clients did not connect",
                self.failed, self.clients
            ));
        }
        if self.publish_failed > 0 {
            short.push(format!("{} publishes failed", self.publish_failed));
        }
        if self.not_sent > 0 {
            short.push(format!("{} planned publishes were not sent", self.not_sent));
        }
        if self.delivered_ratio < min_delivered {
            short.push(format!(
                "{} of {} expected deliveries arrived ({:.4}, below --min-delivered {min_delivered})",
                self.deliveries, self.expected, self.delivered_ratio
            ));
        }
        if let Some(churn) = &self.churn {
            short.extend(churn.shortfalls());
        }
        short
    }

    /// Computes the report of a finished run.
    pub fn build(plan: &Plan, inputs: &Inputs<'_>) -> Report {
        let t = inputs.tally;
        let p = inputs.published;
        let expected = expected_deliveries(&p.accepted_per_room, inputs.members);
        let active_s = t.last_delivery_us.saturating_sub(t.first_delivery_us) as f64 / 1e6;
        let cpu_s_publish = (inputs.usage.cpu_s - inputs.cpu_at_publish).max(0.0);
        Report {
            clients: plan.clients,
            polling_clients: (0..plan.clients).filter(|&j| plan.is_polling(j)).count(),
            urls: plan.targets.len(),
            rooms: plan.rooms,
            workers: plan.workers,
            connected: t.connected,
            failed: t.failed,
            connect_s: t.last_resolved_us.saturating_sub(inputs.started_us) as f64 / 1e6,
            connect_p50_ms: quantile_ms(&t.connect, 0.5),
            connect_p99_ms: quantile_ms(&t.connect, 0.99),
            connect_max_ms: ms(t.connect.max()),
            publish_via: match plan.publish {
                PublishVia::Http { .. } => "http",
                PublishVia::Redis { .. } => "redis",
                PublishVia::Kafka { .. } => "kafka",
            },
            planned: p.planned,
            sent: p.sent,
            accepted: p.accepted,
            publish_failed: p.failed,
            not_sent: p.not_sent(),
            publish_rate: p.achieved_rate(plan.rate),
            publish_p50_ms: quantile_ms(&p.latency, 0.5),
            publish_p99_ms: quantile_ms(&p.latency, 0.99),
            publish_max_ms: ms(p.latency.max()),
            max_schedule_lag_ms: ms(p.max_lag_us),
            recipients_total: p.recipients,
            expected,
            deliveries: t.deliveries,
            delivered_ratio: if expected == 0 {
                0.0
            } else {
                t.deliveries as f64 / expected as f64
            },
            active_s,
            deliveries_per_s: if active_s > 0.0 {
                t.deliveries as f64 / active_s
            } else {
                t.deliveries as f64
            },
            p50_ms: quantile_ms(&t.latency, 0.5),
            p90_ms: quantile_ms(&t.latency, 0.9),
            p99_ms: quantile_ms(&t.latency, 0.99),
            p999_ms: quantile_ms(&t.latency, 0.999),
            max_ms: ms(t.latency.max()),
            mean_ms: if t.latency.is_empty() {
                0.0
            } else {
                t.latency.mean() / 1000.0
            },
            disconnects: t.disconnects,
            duplicates: t.duplicates,
            out_of_order: t.out_of_order,
            untimed: t.untimed,
            bad_packets: t.bad_packets,
            negative_latency: t.negative_latency,
            warmup_deliveries: t.warmup_deliveries,
            cpu_s: inputs.usage.cpu_s,
            cpu_s_publish,
            cpu_us_per_delivery: if t.deliveries > 0 {
                cpu_s_publish * 1e6 / t.deliveries as f64
            } else {
                0.0
            },
            peak_rss_kib: inputs.usage.peak_rss_kib,
            run_s: inputs.finished_us.saturating_sub(inputs.started_us) as f64 / 1e6,
            errors: t.errors.clone(),
            publish_errors: p.errors.clone(),
            churn: plan
                .churns()
                .then(|| ChurnReport::build(plan.churn_per_min * 100.0, t, expected)),
        }
    }

    /// The report as one JSON line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report always serializes")
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn reasons(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "none".into();
    }
    map.iter()
        .map(|(reason, count)| format!("{} × {reason}", thousands(*count)))
        .collect::<Vec<_>>()
        .join("; ")
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self;
        writeln!(
            f,
            "tidings bench: {} clients ({} polling) over {} url(s), {} room(s), {} client process(es), {:.1} s",
            thousands(r.clients as u64),
            thousands(r.polling_clients as u64),
            r.urls,
            r.rooms,
            r.workers,
            r.run_s
        )?;
        let rows: [(&str, String); 9] = [
            (
                "clients",
                format!(
                    "{} connected, {} failed in {:.2} s; connect p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                    thousands(r.connected),
                    thousands(r.failed),
                    r.connect_s,
                    r.connect_p50_ms,
                    r.connect_p99_ms,
                    r.connect_max_ms
                ),
            ),
            (
                "publish",
                format!(
                    "{} {}: {} planned, {} accepted, {} failed, {} not sent; {:.1}/s; request p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                    r.publish_via,
                    match r.publish_via { "http" => "POST /v1/publish", "kafka" => "records", _ => "PUBLISH ingest" },
                    thousands(r.planned),
                    thousands(r.accepted),
                    thousands(r.publish_failed),
                    thousands(r.not_sent),
                    r.publish_rate,
                    r.publish_p50_ms,
                    r.publish_p99_ms,
                    r.publish_max_ms
                ),
            ),
            (
                "deliveries",
                format!(
                    "{} of {} expected (ratio {:.6}); {}/s over {:.2} s{}",
                    thousands(r.deliveries),
                    thousands(r.expected),
                    r.delivered_ratio,
                    thousands(r.deliveries_per_s.round() as u64),
                    r.active_s,
                    r.recipients_total
                        .map(|n| format!("; server reported {} recipients", thousands(n)))
                        .unwrap_or_default()
                ),
            ),
            (
                "latency",
                format!(
                    "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms, mean {:.2} ms",
                    r.p50_ms, r.p90_ms, r.p99_ms, r.p999_ms, r.max_ms, r.mean_ms
                ),
            ),
            (
                "anomalies",
                format!(
                    "{} disconnects, {} duplicates, {} out of order, {} untimed, {} bad packets, {} negative latency",
                    r.disconnects, r.duplicates, r.out_of_order, r.untimed, r.bad_packets, r.negative_latency
                ),
            ),
            (
                "warm-up",
                format!("{} deliveries (not measured)", thousands(r.warmup_deliveries)),
            ),
            (
                "bench cost",
                format!(
                    "{:.2} CPU s ({:.2} s while publishing, {:.2} µs per delivery), peak RSS {} KiB",
                    r.cpu_s,
                    r.cpu_s_publish,
                    r.cpu_us_per_delivery,
                    thousands(r.peak_rss_kib)
                ),
            ),
            ("errors", reasons(&r.errors)),
            ("publish errors", reasons(&r.publish_errors)),
        ];
        for (name, value) in rows {
            writeln!(f, "  {name:<15}{value}")?;
        }
        if let Some(churn) = &r.churn {
            writeln!(f, "  {:<15}{churn}", "churn")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::args::BenchArgs;
    use crate::bench::stats::new_hist;

    #[test]
    fn expected_is_events_times_members_per_room() {
        assert_eq!(expected_deliveries(&[10, 10, 9], &[4, 3, 3]), 40 + 30 + 27);
        assert_eq!(expected_deliveries(&[5], &[0]), 0);
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(4_000_000), "4,000,000");
    }

    #[test]
    fn report_from_merged_parts() {
        let mut args = BenchArgs::new("http://127.0.0.1:1", 4);
        args.jwt_secret = Some("report-test-secret".into());
        args.api_key = Some("report-test-key".into());
        let plan = Plan::from_args(&args, 20_000).unwrap();
        let mut a = Tally::default();
        let mut b = Tally::default();
        for (tally, at) in [(&mut a, 1_000_000), (&mut b, 3_000_000)] {
            tally.connected = 2;
            tally.record_delivery(at, at - 10_000, false);
            tally.record_delivery(at + 1, at - 30_000, false);
            tally.connect.saturating_record(2_000);
        }
        a.merge(&b);
        let mut published = Published {
            planned: 2,
            sent: 2,
            accepted: 1,
            failed: 1,
            accepted_per_room: vec![1],
            recipients: Some(4),
            started_us: 0,
            last_sent_us: 100_000,
            finished_us: 0,
            max_lag_us: 0,
            errors: BTreeMap::from([("HTTP 500".to_owned(), 1)]),
            latency: new_hist(),
        };
        published.latency.saturating_record(500);
        let report = Report::build(
            &plan,
            &Inputs {
                tally: &a,
                members: &[4],
                published: &published,
                usage: Usage {
                    cpu_s: 3.0,
                    peak_rss_kib: 100,
                },
                cpu_at_publish: 1.0,
                started_us: 0,
                finished_us: 5_000_000,
            },
        );
        assert_eq!(
            (report.connected, report.expected, report.deliveries),
            (4, 4, 4)
        );
        assert_eq!(report.delivered_ratio, 1.0);
        // One publish failed: a shortfall even with every expected delivery there.
        assert_eq!(
            report.shortfalls(1.0),
            vec!["1 publishes failed".to_owned()]
        );
        let mut short = report.clone();
        short.failed = 1;
        short.publish_failed = 0;
        short.delivered_ratio = 0.5;
        let said = short.shortfalls(0.9);
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(
            said[0].contains("1 of 4 clients did not connect"),
            "{said:?}"
        );
        assert!(said[1].contains("below --min-delivered 0.9"), "{said:?}");
        assert!(
            short.shortfalls(0.5).len() == 1,
            "0.5 delivered meets --min-delivered 0.5"
        );
        assert!((report.active_s - 2.000001).abs() < 1e-9);
        assert!((report.p50_ms - 10.0).abs() < 0.1, "{}", report.p50_ms);
        assert!((report.max_ms - 30.0).abs() < 0.1);
        assert_eq!(report.cpu_s_publish, 2.0);
        assert_eq!(report.cpu_us_per_delivery, 500_000.0);
        assert!((report.publish_rate - 2.0 / 0.2).abs() < 1e-9);
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["delivered_ratio"], 1.0);
        assert_eq!(json["publish_errors"]["HTTP 500"], 1);
        let table = report.to_string();
        assert!(
            table.contains("4 of 4 expected (ratio 1.000000)"),
            "{table}"
        );
        assert!(table.contains("1 × HTTP 500"), "{table}");
        assert!(report.churn.is_none() && !table.contains("churn"));
    }
}
