//! The result of a direct-message bench run: a Markdown table (one header, one row, so several runs line up), a
//! JSON line, and the section of the benchmarks file.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Serialize;

use super::args::DmPlan;
use super::ledger::Counts;
use crate::bench::stats::Hist;

/// What the run itself saw beside the ledger.
pub struct Outcome {
    /// Connections attempted.
    pub connections: u64,
    /// Connections that failed, by reason.
    pub failures: BTreeMap<String, u64>,
    /// Accepted messages some device of the recipient never received.
    pub lost: u64,
    /// Device receipts missing over those.
    pub missing: u64,
    /// Unix µs the sending started.
    pub start_us: u64,
    /// Seconds the senders took to write everything.
    pub send_s: f64,
}

/// The numbers of one run.
#[derive(Debug, Clone, Serialize)]
pub struct DmReport {
    /// Nodes.
    pub nodes: usize,
    /// Sender connections.
    pub senders: u32,
    /// Recipient users.
    pub recipients: u32,
    /// Devices per recipient.
    pub devices: u32,
    /// Target rate, messages/s.
    pub rate: f64,
    /// Connections attempted.
    pub connections: u64,
    /// Connections that failed, by reason.
    pub connect_failures: BTreeMap<String, u64>,
    /// `dm` events written.
    pub sent: u64,
    /// Accepted (`ok: true`).
    pub accepted: u64,
    /// Accepted per second, from the first send to the last accepted answer.
    pub accepted_per_s: f64,
    /// Refusals by error code.
    pub refused: BTreeMap<String, u64>,
    /// `dm` events never answered before the drain ended.
    pub unanswered: u64,
    /// Send → accepted answer, ms: p50, p99.
    pub accept_ms: [f64; 2],
    /// Send → device receipt, ms: p50, p99, max.
    pub deliver_ms: [f64; 3],
    /// Send → first `delivered` status at the sender, ms: p50, p99.
    pub delivered_status_ms: [f64; 2],
    /// Device receipts (first per device and message).
    pub receipts: u64,
    /// Receipts expected: accepted × devices.
    pub expected_receipts: u64,
    /// Accepted messages some device of the recipient never received.
    pub lost: u64,
    /// Receipts missing over those.
    pub missing_receipts: u64,
    /// `dm` events written again with the same idempotency key after their connection dropped unanswered.
    pub resent: u64,
    /// Receipts of a message the device had received before without its acknowledgement confirmed (allowed).
    pub redelivered: u64,
    /// Receipts of a message whose acknowledgement by the same device the node had confirmed (an error).
    pub duplicated_after_ack: u64,
    /// Messages a device received under two message ids: stored twice (an error).
    pub stored_twice: u64,
    /// Receipts out of the order the sender's messages were accepted in.
    pub out_of_order: u64,
    /// Connections opened again after one dropped.
    pub reconnects: u64,
    /// Failed attempts to open a connection again, by reason.
    pub reconnect_failures: BTreeMap<String, u64>,
    /// `ack` events the node refused.
    pub ack_refusals: u64,
    /// Accepted messages without a `delivered` status at their sender.
    pub no_delivered_status: u64,
    /// Answers and events that did not parse.
    pub unparsed: u64,
}

fn ms(hist: &Hist, q: f64) -> f64 {
    if hist.is_empty() {
        return 0.0;
    }
    hist.value_at_quantile(q) as f64 / 1000.0
}

impl DmReport {
    /// What fell short, one sentence each: connections that failed, sends never answered, messages lost.
    /// Refusals (`busy`, `inbox_full`) are the server's answer under load and stay in the table only.
    pub fn shortfalls(&self) -> Vec<String> {
        let mut short = Vec::new();
        let failed: u64 = self.connect_failures.values().sum();
        if failed > 0 {
            short.push(format!("{failed} connections failed"));
        }
        if self.unanswered > 0 {
            short.push(format!("{} dm sends were never answered", self.unanswered));
        }
        if self.lost > 0 {
            short.push(format!("{} accepted messages were lost", self.lost));
        }
        short
    }

    /// Puts the numbers together.
    pub fn build(plan: &DmPlan, c: &Counts, outcome: Outcome) -> DmReport {
        let span_s = (c.last_accept_us.saturating_sub(outcome.start_us) as f64 / 1e6)
            .max(outcome.send_s)
            .max(plan.duration.as_secs_f64());
        DmReport {
            nodes: plan.targets.len(),
            senders: plan.senders,
            recipients: plan.recipients,
            devices: plan.devices,
            rate: plan.rate,
            connections: outcome.connections,
            connect_failures: outcome.failures,
            sent: c.sent,
            accepted: c.accepted,
            accepted_per_s: c.accepted as f64 / span_s,
            refused: c.refused.clone(),
            unanswered: c.sent.saturating_sub(c.answered),
            accept_ms: [ms(&c.accept_us, 0.5), ms(&c.accept_us, 0.99)],
            deliver_ms: [
                ms(&c.deliver_us, 0.5),
                ms(&c.deliver_us, 0.99),
                ms(&c.deliver_us, 1.0),
            ],
            delivered_status_ms: [ms(&c.status_us, 0.5), ms(&c.status_us, 0.99)],
            receipts: c.receipts,
            expected_receipts: c.accepted * u64::from(plan.devices),
            lost: outcome.lost,
            missing_receipts: outcome.missing,
            resent: c.resent,
            redelivered: c.redelivered,
            duplicated_after_ack: c.duplicated_after_ack,
            stored_twice: c.stored_twice,
            out_of_order: c.out_of_order,
            reconnects: c.reconnects,
            reconnect_failures: c.reconnect_failures.clone(),
            ack_refusals: c.ack_refusals,
            no_delivered_status: c.accepted.saturating_sub(c.delivered_statuses),
            unparsed: c.unparsed,
        }
    }

    /// One JSON line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report serializes")
    }

    /// The table row of this run (see [`TABLE_HEADER`]).
    pub fn row(&self) -> String {
        let refused = if self.refused.is_empty() {
            "0".to_owned()
        } else {
            self.refused
                .iter()
                .map(|(code, n)| format!("{code} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let failed: u64 = self.connect_failures.values().sum();
        format!(
            "| {} | {} → {}×{} | {:.0} | {} | {:.0} | {:.1} / {:.1} | {:.1} / {:.1} / {:.1} | {:.1} / {:.1} | {} | {} / {} | {} | {} | {} / {} | {} | {} |",
            self.nodes,
            self.senders,
            self.recipients,
            self.devices,
            self.rate,
            self.sent,
            self.accepted_per_s,
            self.accept_ms[0],
            self.accept_ms[1],
            self.deliver_ms[0],
            self.deliver_ms[1],
            self.deliver_ms[2],
            self.delivered_status_ms[0],
            self.delivered_status_ms[1],
            self.lost,
            self.duplicated_after_ack,
            self.stored_twice,
            self.redelivered,
            self.out_of_order,
            self.reconnects,
            self.resent,
            refused,
            failed,
        )
    }
}

/// Header of the table (two lines).
pub const TABLE_HEADER: &str = "| nodes | senders → users×devices | target msg/s | sent | accepted/s | accepted p50 / p99 ms | delivered to device p50 / p99 / max ms | `delivered` status p50 / p99 ms | lost | dup after ack / stored twice | redelivered | out of order | reconnects / resent | refused | conn failed |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";

impl fmt::Display for DmReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{TABLE_HEADER}")?;
        writeln!(f, "{}", self.row())?;
        if self.unanswered + self.missing_receipts + self.no_delivered_status + self.unparsed > 0 {
            writeln!(
                f,
                "\nunanswered dm {} | missing device receipts {} (expected {}) | accepted without a delivered status {} | unparsed {}",
                self.unanswered,
                self.missing_receipts,
                self.expected_receipts,
                self.no_delivered_status,
                self.unparsed
            )?;
        }
        for (reason, n) in &self.connect_failures {
            writeln!(f, "connection failed ×{n}: {reason}")?;
        }
        for (reason, n) in &self.reconnect_failures {
            writeln!(f, "reconnect attempt failed ×{n}: {reason}")?;
        }
        if self.ack_refusals > 0 {
            writeln!(f, "ack events refused: {}", self.ack_refusals)?;
        }
        Ok(())
    }
}

/// Replaces the section `## <title>` of the Markdown file at `path` with `body` (up to the next `## ` heading),
/// or appends it; creates the file when missing.
pub fn write_section(path: &Path, title: &str, body: &str) -> std::io::Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    std::fs::write(path, replace_section(&old, title, body))
}

fn replace_section(old: &str, title: &str, body: &str) -> String {
    let heading = format!("## {title}");
    let section = format!("{heading}\n\n{}\n", body.trim_end());
    let lines: Vec<&str> = old.lines().collect();
    let Some(start) = lines.iter().position(|l| l.trim_end() == heading) else {
        let mut text = old.trim_end().to_owned();
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(&section);
        return text;
    };
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.starts_with("## "))
        .map_or(lines.len(), |p| start + 1 + p);
    let mut text = lines[..start].join("\n");
    if start > 0 {
        text.push('\n');
    }
    text.push_str(&section);
    if end < lines.len() {
        text.push('\n');
        text.push_str(&lines[end..].join("\n"));
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_replaced_or_appended() {
        let text = "# Benchmarks\n\n## A\n\nold a\n\n## B\n\nb\n";
        let replaced = replace_section(text, "A", "new a");
        assert_eq!(replaced, "# Benchmarks\n\n## A\n\nnew a\n\n## B\n\nb\n");
        let appended = replace_section(text, "C", "c\n");
        assert_eq!(appended, format!("{}\n\n## C\n\nc\n", text.trim_end()));
        assert_eq!(replace_section("", "X", "x"), "## X\n\nx\n");
        let last = replace_section("## B\n\nb\n", "B", "b2");
        assert_eq!(last, "## B\n\nb2\n");
    }
}
