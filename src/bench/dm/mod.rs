//! `tidings bench dm`: direct messages under load. Recipient devices connect first, then sender connections emit
//! `dm` events at a steady aggregate rate, each with the send time and the sender's counter in its data; every
//! device acknowledges every message with the ack callback. Measured: the accepted rate and latency, send →
//! device latency, send → `delivered` status at the sender, losses, duplicates, order, refusals.
//!
//! Data path: [`args`] (checked flags) → [`roles`] (one task per connection over [`conn`]) → [`ledger`] →
//! [`report`].

pub mod args;
pub mod conn;
pub mod ledger;
pub mod report;
pub mod roles;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use args::{DmArgs, DmPlan};
pub use report::DmReport;

use super::sys::unix_micros;
use super::BenchError;
use args::Role;
use ledger::Ledger;

/// Connections opened at once while connecting.
const CONNECT_PARALLELISM: usize = 64;

/// A direct-message bench run, ready to go.
pub struct DmBench {
    plan: Arc<DmPlan>,
}

impl DmBench {
    /// Checks `args`.
    pub fn new(args: &DmArgs) -> Result<DmBench, BenchError> {
        crate::process::raise_open_files_limit();
        Ok(DmBench {
            plan: Arc::new(DmPlan::from_args(args)?),
        })
    }

    /// The checked plan.
    pub fn plan(&self) -> &DmPlan {
        &self.plan
    }

    /// Connects everyone, sends for the duration, drains, and reports.
    pub async fn run(&self) -> Result<DmReport, BenchError> {
        let plan = self.plan.clone();
        let ledger = Arc::new(Ledger::default());
        let mut tasks: Vec<JoinHandle<()>> = Vec::new();
        let mut failures = std::collections::BTreeMap::<String, u64>::new();
        let mut senders = Vec::new();
        let roles = plan.roles();
        for batch in roles.chunks(CONNECT_PARALLELISM) {
            let opening: Vec<_> = batch
                .iter()
                .map(|&role| {
                    let plan = plan.clone();
                    tokio::spawn(async move {
                        let auth = plan.auth_of(role).map_err(|e| format!("token: {e}"))?;
                        let open = conn::open(plan.target_of(role), plan.source_of(role), &auth);
                        match tokio::time::timeout(plan.connect_timeout, open).await {
                            Ok(result) => result.map(|c| (role, c)),
                            Err(_) => Err("connect timeout".to_owned()),
                        }
                    })
                })
                .collect();
            for task in opening {
                match task.await {
                    Ok(Ok((role, conn))) => {
                        tasks.push(conn.writer);
                        match role {
                            Role::Device(_, d) => tasks.push(tokio::spawn(roles::device(
                                d,
                                conn.reader,
                                conn.outbox,
                                ledger.clone(),
                            ))),
                            Role::Sender(i) => senders.push((i, conn.reader, conn.outbox)),
                        }
                    }
                    Ok(Err(reason)) => *failures.entry(reason).or_default() += 1,
                    Err(e) => *failures.entry(format!("task: {e}")).or_default() += 1,
                }
            }
        }
        let connected = roles.len() as u64 - failures.values().sum::<u64>();
        progress(
            &plan,
            &format!(
                "{connected} of {} connections open; sending {} messages at {}/s",
                roles.len(),
                plan.messages(),
                plan.rate
            ),
        );
        let start = Instant::now() + Duration::from_millis(100);
        let start_us = unix_micros() + 100_000;
        let mut send_loops = Vec::new();
        for (i, reader, outbox) in senders {
            let book = Arc::new(roles::SenderBook::default());
            tasks.push(tokio::spawn(roles::sender_reader(
                i,
                reader,
                book.clone(),
                ledger.clone(),
            )));
            send_loops.push(tokio::spawn(roles::send_loop(
                i,
                plan.clone(),
                start,
                outbox,
                book,
                ledger.clone(),
            )));
        }
        let ticker = Progress::start(&plan, ledger.clone());
        for task in send_loops {
            let _ = task.await;
        }
        let sent_done = Instant::now();
        self.drain(&ledger).await;
        ticker.stop();
        for task in &tasks {
            task.abort();
        }
        let (lost, missing) = ledger.lost(plan.devices);
        Ok(DmReport::build(
            &plan,
            &ledger.snapshot(),
            report::Outcome {
                connections: roles.len() as u64,
                failures,
                lost,
                missing,
                start_us,
                send_s: sent_done.duration_since(start).as_secs_f64(),
            },
        ))
    }

    /// Waits until every `dm` is answered, every accepted message reached every device and its sender heard
    /// `delivered`, or the drain time is over.
    async fn drain(&self, ledger: &Ledger) {
        let deadline = Instant::now() + self.plan.drain;
        let devices = u64::from(self.plan.devices);
        while Instant::now() < deadline {
            let c = ledger.snapshot_counts();
            if c.answered >= c.sent
                && c.receipts >= c.accepted * devices
                && c.delivered_statuses >= c.accepted
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// One progress line a second on stderr (unless quiet).
struct Progress(Option<JoinHandle<()>>);

impl Progress {
    fn start(plan: &DmPlan, ledger: Arc<Ledger>) -> Progress {
        if plan.quiet {
            return Progress(None);
        }
        Progress(Some(tokio::spawn(async move {
            let started = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let c = ledger.snapshot_counts();
                eprintln!(
                    "[{:>5.1} s] sent {} | accepted {} | refused {} | device receipts {} | delivered statuses {}",
                    started.elapsed().as_secs_f64(),
                    c.sent,
                    c.accepted,
                    c.answered - c.accepted,
                    c.receipts,
                    c.delivered_statuses
                );
            }
        })))
    }

    fn stop(self) {
        if let Some(task) = self.0 {
            task.abort();
        }
    }
}

fn progress(plan: &DmPlan, note: &str) {
    if !plan.quiet {
        eprintln!("bench dm: {note}");
    }
}
