//! `tidings bench`: a load test of running nodes. N Socket.IO clients connect and subscribe, then events are
//! published at a steady rate and every delivery is timed from the publisher's send time to the client's receive
//! time; the run ends when every expected delivery arrived or the drain time is over.
//!
//! Data path: [`plan`] (checked flags) → [`client`] / [`polling`] (one task per connection, speaking
//! [`session`] over [`ws`]) → [`stats`] (per-thread tallies) → [`report`]. [`publisher`] drives the events;
//! [`workers`] spreads the clients over processes when one cannot hold enough sockets.

pub mod args;
pub mod churn;
pub mod churn_report;
pub mod client;
pub mod dm;
pub mod plan;
pub mod polling;
pub mod publisher;
pub mod report;
pub mod session;
pub mod stats;
pub mod sys;
pub mod track;
pub mod tracking;
pub mod workers;
pub mod ws;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::time::Instant;

pub use args::BenchArgs;
pub use plan::Plan;
pub use report::Report;

use client::Clients;
use publisher::{Published, Publisher, Schedule};
use report::{expected_deliveries, thousands, Inputs};
use stats::{Recorder, Tally};
use sys::{unix_micros, Usage};
use workers::{WorkerSet, WorkerView};

/// Time allowed after the last connection is due for the clients to finish their handshakes, beyond the
/// connect timeout.
const READY_SLACK: Duration = Duration::from_secs(5);
/// Time the workers get to report their final tally.
const FINISH_TIMEOUT: Duration = Duration::from_secs(10);
/// Time the long-polling clients get to close their sessions.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Slack past the end of the schedule within which a late event is still issued.
const SCHEDULE_GRACE: Duration = Duration::from_millis(500);

/// Why a bench could not run.
#[derive(Debug, Error)]
pub enum BenchError {
    /// A flag value that cannot work.
    #[error("{0}")]
    Invalid(String),
    /// The Redis ingest connection failed.
    #[error("redis ingest: {0}")]
    Redis(String),
    /// The Kafka producer could not be created.
    #[error("kafka ingest: {0}")]
    Kafka(String),
    /// Worker processes could not be started or did not report.
    #[error("worker processes: {0}")]
    Workers(String),
}

/// A bench run, ready to go.
pub struct Bench {
    plan: Arc<Plan>,
    worker_command: Option<(PathBuf, Vec<OsString>)>,
}

impl Bench {
    /// Checks `args` (raising the open-files limit first, since it decides the number of worker processes).
    pub fn new(args: &BenchArgs) -> Result<Bench, BenchError> {
        let fd_limit = sys::raise_open_files_limit();
        Ok(Bench {
            plan: Arc::new(Plan::from_args(args, fd_limit)?),
            worker_command: None,
        })
    }

    /// How to start a worker process: `program` with `args` (the bench's own command line), to which the
    /// worker flags are appended. Without it every client runs in this process.
    pub fn with_worker_command(mut self, program: PathBuf, args: Vec<OsString>) -> Bench {
        self.worker_command = Some((program, args));
        self
    }

    /// The checked plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Whether this process is one of the workers of a multi-process run.
    pub fn is_worker(&self) -> bool {
        self.plan.worker.is_some()
    }

    /// Tokio worker threads for this process: the cores shared by the client processes; one for a parent that
    /// only publishes.
    pub fn threads(&self) -> usize {
        let cores = sys::cores();
        match (self.plan.worker, self.plan.workers) {
            (Some((_, count)), _) => (cores / count).max(1),
            (None, 1) => cores,
            (None, _) => 1,
        }
    }

    /// Runs this process as a worker (see [`workers`]).
    pub async fn run_worker(&self) -> Result<(), BenchError> {
        workers::serve(self.plan.clone()).await
    }

    /// Runs the bench and returns its report.
    pub async fn run(&self) -> Result<Report, BenchError> {
        let plan = &self.plan;
        let started_us = unix_micros();
        let publisher = Publisher::connect(plan).await?;
        let mut fleet = self.start_fleet()?;
        let progress = Progress::start(plan, fleet.view(), Instant::now());
        let ready = fleet.wait_ready(plan).await?;
        if !plan.hold.is_zero() {
            progress_note(
                plan,
                &format!("holding the clients idle for {:?}", plan.hold),
            );
            tokio::time::sleep(plan.hold).await;
        }
        fleet.mark().await?;
        let cpu_at_publish = Usage::now().cpu_s;
        let members = ready.members;
        let published = if ready.connected > 0 {
            self.publish(&publisher, &fleet).await
        } else {
            publisher
                .run(0, Schedule::new(plan.rate, 0, Duration::ZERO))
                .await
        };
        let expected = expected_deliveries(&published.accepted_per_room, &members);
        fleet.drain(expected, plan.drain).await;
        progress.stop();
        let (tally, workers_usage, workers_cpu_at_mark) = fleet.finish().await?;
        let own = Usage::now();
        let usage = Usage {
            cpu_s: own.cpu_s + workers_usage.cpu_s,
            peak_rss_kib: own.peak_rss_kib + workers_usage.peak_rss_kib,
        };
        Ok(Report::build(
            plan,
            &Inputs {
                tally: &tally,
                members: &members,
                published: &published,
                usage,
                cpu_at_publish: cpu_at_publish + workers_cpu_at_mark,
                started_us,
                finished_us: unix_micros(),
            },
        ))
    }

    /// Starts the clients here or in worker processes.
    fn start_fleet(&self) -> Result<Fleet, BenchError> {
        let plan = &self.plan;
        if plan.workers <= 1 {
            let recorder = Recorder::new(plan.rooms, plan.warmup_messages());
            return Ok(Fleet::Local(Clients::start(plan.clone(), recorder)));
        }
        let Some((program, args)) = &self.worker_command else {
            return Err(BenchError::Invalid(format!(
                "{} worker processes need the tidings binary (use --workers 1 in-process)",
                plan.workers
            )));
        };
        Ok(Fleet::Workers(WorkerSet::spawn(
            program,
            args,
            plan.workers,
        )?))
    }

    /// The warm-up phase, then the measured one.
    async fn publish(&self, publisher: &Publisher, fleet: &Fleet) -> Published {
        let plan = &self.plan;
        let warmup = plan.warmup_messages();
        if warmup > 0 {
            let cutoff = plan.warmup + plan.warmup / 2 + SCHEDULE_GRACE;
            let warm = publisher
                .run(0, Schedule::new(plan.rate, warmup, cutoff))
                .await;
            progress_note(
                plan,
                &format!(
                    "warm-up done: {} of {} events accepted; measuring",
                    warm.accepted, warm.planned
                ),
            );
            // Let the warm-up deliveries land before the measured phase starts.
            fleet.drain_warmup(warm.accepted, plan.drain).await;
        }
        let schedule = Schedule::new(
            plan.rate,
            plan.measured_messages(),
            plan.duration + SCHEDULE_GRACE,
        );
        publisher.run(warmup, schedule).await
    }
}

/// What the clients looked like when they were all resolved.
struct Ready {
    connected: u64,
    members: Vec<u64>,
}

/// Where the clients run.
enum Fleet {
    /// In this process.
    Local(Clients),
    /// In worker processes.
    Workers(WorkerSet),
}

/// A cheap handle on the fleet's running tally, for the progress lines.
#[derive(Clone)]
enum FleetView {
    Local(Arc<Recorder>),
    Workers(WorkerView),
}

impl FleetView {
    fn tally(&self) -> Tally {
        match self {
            FleetView::Local(recorder) => recorder.snapshot(),
            FleetView::Workers(view) => view.tally(),
        }
    }
}

impl Fleet {
    fn view(&self) -> FleetView {
        match self {
            Fleet::Local(clients) => FleetView::Local(clients.recorder().clone()),
            Fleet::Workers(set) => FleetView::Workers(set.view()),
        }
    }

    fn tally(&self) -> Tally {
        self.view().tally()
    }

    /// Waits until every client connected or failed (or the time for that is over).
    async fn wait_ready(&self, plan: &Plan) -> Result<Ready, BenchError> {
        let ramp_time = Duration::from_secs_f64(plan.clients as f64 / plan.ramp);
        let deadline = Instant::now() + ramp_time + plan.connect_timeout + READY_SLACK;
        loop {
            let ready = match self {
                Fleet::Local(clients) => clients.all_resolved(),
                Fleet::Workers(set) => {
                    if let Some(lost) = set.view().lost() {
                        return Err(BenchError::Workers(format!("a worker stopped: {lost}")));
                    }
                    set.view().all_ready()
                }
            };
            if ready || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let tally = self.tally();
        Ok(Ready {
            connected: tally.connected,
            members: tally.members,
        })
    }

    /// Marks the start of publishing: workers note their CPU time then, and report it at the end; churning
    /// clients start dropping their connections.
    async fn mark(&mut self) -> Result<(), BenchError> {
        match self {
            Fleet::Local(clients) => {
                clients.start_churn();
                Ok(())
            }
            Fleet::Workers(set) => set.mark().await,
        }
    }

    /// Waits until `expected` measured deliveries arrived, or `limit` passed.
    async fn drain(&self, expected: u64, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline && self.tally().deliveries < expected {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until warm-up deliveries stop growing (or `limit` passed); at least one of each event arrives.
    async fn drain_warmup(&self, accepted: u64, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut last = u64::MAX;
        while Instant::now() < deadline {
            let now = self.tally().warmup_deliveries;
            if now >= accepted && now == last {
                break;
            }
            last = now;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Stops the clients; returns the final tally, the workers' usage and their CPU at the mark.
    async fn finish(self) -> Result<(Tally, Usage, f64), BenchError> {
        match self {
            Fleet::Local(clients) => {
                clients.close(CLOSE_TIMEOUT).await;
                Ok((clients.recorder().snapshot(), Usage::default(), 0.0))
            }
            Fleet::Workers(set) => set.finish(FINISH_TIMEOUT).await,
        }
    }
}

/// One progress line a second on stderr (unless quiet).
struct Progress {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    fn start(plan: &Plan, view: FleetView, started: Instant) -> Progress {
        if plan.quiet {
            return Progress { task: None };
        }
        let clients = plan.clients;
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            let mut last = 0;
            loop {
                tick.tick().await;
                let t = view.tally();
                let all = t.all_deliveries();
                eprintln!(
                    "[{:>6.1} s] connected {}/{} ({} failed, {} lost) | deliveries {} (+{}/s) | p99 {:.1} ms",
                    started.elapsed().as_secs_f64(),
                    thousands(t.connected - t.disconnects.min(t.connected)),
                    thousands(clients as u64),
                    thousands(t.failed),
                    thousands(t.disconnects),
                    thousands(all),
                    thousands(all.saturating_sub(last)),
                    if t.latency.is_empty() {
                        0.0
                    } else {
                        t.latency.value_at_quantile(0.99) as f64 / 1000.0
                    },
                );
                last = all;
            }
        });
        Progress { task: Some(task) }
    }

    fn stop(self) {
        if let Some(task) = self.task {
            task.abort();
        }
    }
}

/// A one-off note among the progress lines.
fn progress_note(plan: &Plan, note: &str) {
    if !plan.quiet {
        eprintln!("bench: {note}");
    }
}
