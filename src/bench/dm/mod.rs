//! `tidings bench dm`: direct messages under load. Recipient devices connect first, then sender connections emit
//! `dm` events at a steady aggregate rate, each with an idempotency key and the send time and the sender's
//! counter in its data; every device acknowledges every message with the `ack` event. A connection that drops
//! (a node killed, restarted) is opened again, on the next node, and picks up where it was: a sender writes its
//! unanswered messages again, a device gets what it has not acknowledged replayed. Measured: the accepted rate
//! and latency, send → device latency, send → `delivered` status at the sender, losses, redeliveries,
//! duplicates after an ack, order, refusals, reconnections.
//!
//! Data path: [`args`] (checked flags) → [`sender`] and [`device`] (one task per role over [`conn`], opened
//! again by [`reconnect`]) → [`ledger`] → [`report`].

pub mod args;
pub mod conn;
pub mod device;
pub mod ledger;
pub mod reconnect;
pub mod report;
pub mod sender;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use args::{DmArgs, DmPlan};
pub use report::DmReport;

use super::sys::unix_micros;
use super::BenchError;
use args::Role;
use conn::Conn;
use ledger::Ledger;
use reconnect::Redial;
use sender::Sender;

/// Connections opened at once while connecting.
const CONNECT_PARALLELISM: usize = 64;
/// After connections dropped, how long the drain waits for `delivered` statuses once nothing else is missing
/// and none came: statuses are written to the sender's connections of the moment, so those emitted while a
/// sender was reconnecting never come (the node keeps them; `GET /v1/messages/{id}` has them).
const STATUS_GRACE: Duration = Duration::from_secs(2);

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
        let roles = plan.roles();
        let (opened, failures) = self.open_all(&roles).await;
        progress(
            &plan,
            &format!(
                "{} of {} connections open; sending {} messages at {}/s",
                opened.len(),
                roles.len(),
                plan.messages(),
                plan.rate
            ),
        );
        let start = Instant::now() + Duration::from_millis(100);
        let start_us = unix_micros() + 100_000;
        // Connections are opened again until the drain is over.
        let until = start + plan.duration + plan.drain;
        let mut tasks: Vec<JoinHandle<()>> = Vec::new();
        let mut all_sent = Vec::new();
        for (role, conn) in opened {
            let redial = Redial::new(role, until);
            let (plan, ledger) = (plan.clone(), ledger.clone());
            tasks.push(match role {
                Role::Device(_, d) => tokio::spawn(device::run(d, plan, conn, redial, ledger)),
                Role::Sender(i) => {
                    let (tell, heard) = oneshot::channel();
                    all_sent.push(heard);
                    tokio::spawn(Sender::new(i, plan, ledger, start, tell).run(conn, redial))
                }
            });
        }
        let ticker = Progress::start(&plan, ledger.clone());
        for heard in all_sent {
            // An error: the sender gave up (its connection never came back); nothing more to wait for.
            let _ = heard.await;
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

    /// Opens every role's connection, `CONNECT_PARALLELISM` at a time; a role whose connection fails takes
    /// no part in the run, its failure counted by reason.
    async fn open_all(&self, roles: &[Role]) -> (Vec<(Role, Conn)>, BTreeMap<String, u64>) {
        let plan = &self.plan;
        conn::open_all(roles, CONNECT_PARALLELISM, plan.connect_timeout, |role| {
            let auth = plan.auth_of(role).map_err(|e| format!("token: {e}"))?;
            Ok((plan.target_of(role).clone(), plan.source_of(role), auth))
        })
        .await
    }

    /// Waits until every `dm` is answered, every accepted message reached every device and its sender heard
    /// `delivered` (or, after reconnections, no status came for [`STATUS_GRACE`]), or the drain time is over.
    async fn drain(&self, ledger: &Ledger) {
        let deadline = Instant::now() + self.plan.drain;
        let devices = u64::from(self.plan.devices);
        let mut statuses = (u64::MAX, Instant::now());
        while Instant::now() < deadline {
            let c = ledger.snapshot_counts();
            if c.delivered_statuses != statuses.0 {
                statuses = (c.delivered_statuses, Instant::now());
            }
            let settled = c.answered >= c.sent && c.receipts >= c.accepted * devices;
            let statuses_done = c.delivered_statuses >= c.accepted
                || (c.reconnects > 0 && statuses.1.elapsed() >= STATUS_GRACE);
            if settled && statuses_done {
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
                    "[{:>5.1} s] sent {} | accepted {} | refused {} | device receipts {} | delivered statuses {} | reconnects {}",
                    started.elapsed().as_secs_f64(),
                    c.sent,
                    c.accepted,
                    c.answered - c.accepted,
                    c.receipts,
                    c.delivered_statuses,
                    c.reconnects
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
