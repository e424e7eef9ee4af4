//! `tidings bench tracking` (benchmark case E): W workers publish their positions from their own connections
//! at rate r into T team rooms, each watched by K managers. Managers connect and subscribe first; then every
//! worker sends on its own schedule (phases spread over the period) and counts the answers; managers time each
//! position from the worker's send and check it is their team's and in order. Reported: accepted positions per
//! second, deliveries, latency, loss (or, with conflation, whether each manager ends with each worker's last
//! position), and the CPU the server processes spent per accepted position.
//!
//! It speaks only the client events `subscribe` and `publish`, so it runs unchanged against the kit's
//! Socket.IO and socketioxide peers (`--no-auth`).
//!
//! Data path: [`args`] (checked flags) → [`roles`] (one task per connection) → [`report`].

pub mod args;
pub mod report;
pub mod roles;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use args::{TrackingArgs, TrackingPlan};
pub use report::TrackingReport;

use super::dm::conn::{self, Conn};
use super::stats::{merge_hist, new_hist};
use super::sys::{process_cpu_seconds, Usage};
use super::BenchError;
use args::Role;
use roles::{ManagerTally, Shared};

/// Connections opened at once while connecting.
const CONNECT_PARALLELISM: usize = 128;

/// A tracking run, ready to go.
pub struct TrackingBench {
    plan: Arc<TrackingPlan>,
}

impl TrackingBench {
    /// Checks `args`.
    pub fn new(args: &TrackingArgs) -> Result<TrackingBench, BenchError> {
        crate::process::raise_open_files_limit();
        Ok(TrackingBench {
            plan: Arc::new(TrackingPlan::from_args(args)?),
        })
    }

    /// The checked plan.
    pub fn plan(&self) -> &TrackingPlan {
        &self.plan
    }

    /// Connects everyone, publishes for the duration, drains, and reports.
    pub async fn run(&self) -> Result<TrackingReport, BenchError> {
        let plan = self.plan.clone();
        let shared = Arc::new(Shared::new(plan.workers));
        let (stop_tx, stop) = watch::channel(false);
        let roles = plan.roles();
        let (opened, mut failed) = self.open_all(&roles).await;

        // Managers subscribe before any worker sends.
        let mut managers: Vec<(u32, JoinHandle<ManagerTally>)> = Vec::new();
        let mut workers_conns = Vec::new();
        let mut subscribed = Vec::new();
        for (role, conn) in opened {
            match role {
                Role::Manager(team, _) => {
                    let (ready, heard) = oneshot::channel();
                    let task = tokio::spawn(roles::manager(
                        team,
                        plan.clone(),
                        conn,
                        shared.clone(),
                        ready,
                        stop.clone(),
                    ));
                    managers.push((team, task));
                    subscribed.push(heard);
                }
                Role::Worker(i) => workers_conns.push((i, conn)),
            }
        }
        for heard in subscribed {
            let outcome = tokio::time::timeout(plan.connect_timeout, heard).await;
            let reason = match outcome {
                Ok(Ok(Ok(()))) => continue,
                Ok(Ok(Err(reason))) => format!("subscribe: {reason}"),
                Ok(Err(_)) => "subscribe: manager ended".to_owned(),
                Err(_) => "subscribe: no answer".to_owned(),
            };
            *failed.entry(reason).or_default() += 1;
        }
        progress(
            &plan,
            &format!(
                "{} managers subscribed, {} workers connected ({} failed); publishing {} s",
                managers.len(),
                workers_conns.len(),
                failed.values().sum::<u64>(),
                plan.duration.as_secs_f64()
            ),
        );

        // Time to spawn every worker before the first is due (a late start would make them all catch up at once).
        let start = Instant::now() + Duration::from_millis(200 + u64::from(plan.workers / 10));
        let cpu_before = server_cpu(&plan);
        let own_before = Usage::now();
        let mut workers: Vec<JoinHandle<()>> = Vec::with_capacity(workers_conns.len());
        let mut tallies = Vec::with_capacity(workers_conns.len());
        for (i, conn) in workers_conns {
            let (done, tally) = oneshot::channel();
            tallies.push(tally);
            workers.push(tokio::spawn(roles::worker(
                i,
                plan.clone(),
                conn,
                shared.clone(),
                start,
                stop.clone(),
                done,
            )));
        }
        let ticker = Progress::start(&plan, shared.clone());
        let deadline = start + plan.duration + plan.drain;
        let mut worker_tallies = Vec::with_capacity(workers.len());
        for mut tally in tallies {
            let done = match tokio::time::timeout_at(deadline, &mut tally).await {
                Ok(done) => done,
                Err(_) => {
                    // Past the drain: stop every worker and take what they have.
                    let _ = stop_tx.send(true);
                    tally.await
                }
            };
            if let Ok(tally) = done {
                worker_tallies.push(tally);
            }
        }
        self.settle(&shared, deadline).await;
        let cpu_after = server_cpu(&plan);
        let own_after = Usage::now();
        let _ = stop_tx.send(true);
        ticker.stop();
        for task in workers {
            let _ = task.await;
        }

        let mut manager_tallies = Vec::with_capacity(managers.len());
        for (team, task) in managers {
            if let Ok(tally) = task.await {
                manager_tallies.push((team, tally));
            }
        }
        let mut latency = new_hist();
        for (_, m) in &manager_tallies {
            merge_hist(&mut latency, &m.latency);
        }
        for (_, m) in &manager_tallies {
            if let Some(reason) = &m.dropped {
                *failed
                    .entry(format!("manager dropped: {reason}"))
                    .or_default() += 1;
            }
        }
        let ack_latency = roles::merged_ack_latency(&mut worker_tallies);
        let load = |v: &[std::sync::atomic::AtomicU64]| -> Vec<u64> {
            v.iter().map(|a| a.load(Ordering::Relaxed)).collect()
        };
        let server_cpu_s = cpu_before
            .iter()
            .filter_map(|(pid, before)| Some((*pid, cpu_after.get(pid)? - before)))
            .collect();
        Ok(TrackingReport::build(
            &plan,
            &report::Gathered {
                failed,
                workers: &worker_tallies,
                managers: &manager_tallies,
                ack_latency: &ack_latency,
                latency: &latency,
                accepted_by: &load(&shared.accepted_by),
                last_accepted: &load(&shared.last_accepted),
                sent: shared.sent.load(Ordering::Relaxed),
                server_cpu_s,
                loadgen_cpu_s: own_after.cpu_s - own_before.cpu_s,
            },
        ))
    }

    /// Waits for positions still on their way: without conflation until every accepted position reached every
    /// manager of its team, with conflation for two intervals (the last positions are flushed by then); never
    /// past `deadline`.
    async fn settle(&self, shared: &Shared, deadline: Instant) {
        if let Some(interval) = self.plan.conflated {
            let until = (Instant::now() + interval * 2 + Duration::from_millis(300)).min(deadline);
            tokio::time::sleep_until(until).await;
            return;
        }
        let expected = shared.accepted.load(Ordering::Relaxed) * u64::from(self.plan.managers);
        while Instant::now() < deadline && shared.delivered.load(Ordering::Relaxed) < expected {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
}

/// CPU seconds so far of each measured server process that can be read.
fn server_cpu(plan: &TrackingPlan) -> BTreeMap<u32, f64> {
    plan.server_pids
        .iter()
        .filter_map(|&pid| Some((pid, process_cpu_seconds(&pid.to_string())?)))
        .collect()
}

/// One progress line a second on stderr (unless quiet).
struct Progress(Option<JoinHandle<()>>);

impl Progress {
    fn start(plan: &TrackingPlan, shared: Arc<Shared>) -> Progress {
        if plan.quiet {
            return Progress(None);
        }
        Progress(Some(tokio::spawn(async move {
            let started = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                eprintln!(
                    "[{:>5.1} s] sent {} | accepted {} | delivered {} | later than 100 ms {} | worst this second {:.1} ms",
                    started.elapsed().as_secs_f64(),
                    shared.sent.load(Ordering::Relaxed),
                    shared.accepted.load(Ordering::Relaxed),
                    shared.delivered.load(Ordering::Relaxed),
                    shared.late.load(Ordering::Relaxed),
                    shared.worst_us.swap(0, Ordering::Relaxed) as f64 / 1000.0,
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

fn progress(plan: &TrackingPlan, note: &str) {
    if !plan.quiet {
        eprintln!("bench tracking: {note}");
    }
}
