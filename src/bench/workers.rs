//! Clients in several processes, for more clients than one process may hold sockets: the bench re-executes
//! itself as worker processes, each opening its share of the clients. A worker reports a JSON line on stdout
//! every [`REPORT_EVERY`] (its tally, histograms in base64 V2) and reads `MARK` / `STOP` lines on stdin; it
//! stops by itself when stdin closes, so no worker outlives the parent.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use super::client::Clients;
use super::plan::Plan;
use super::stats::{Recorder, Tally};
use super::sys::Usage;
use super::BenchError;

/// How often a worker reports.
pub const REPORT_EVERY: Duration = Duration::from_millis(250);
/// Time the long-polling clients get to close their sessions.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A line a worker writes.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Line {
    /// What the worker's clients counted so far; `ready` once every client connected or failed.
    Progress {
        /// Running tally.
        tally: Tally,
        /// All clients resolved.
        ready: bool,
    },
    /// The final tally, after the clients were stopped.
    Result {
        /// Final tally.
        tally: Tally,
        /// CPU seconds and peak RSS of the worker.
        cpu_s: f64,
        /// Peak RSS of the worker, KiB.
        peak_rss_kib: u64,
        /// CPU seconds when `MARK` arrived (0 without one).
        cpu_at_mark: f64,
    },
}

/// Runs this process as a worker until `STOP` or the end of stdin.
pub async fn serve(plan: Arc<Plan>) -> Result<(), BenchError> {
    let recorder = Recorder::new(plan.rooms, plan.warmup_messages());
    let clients = Clients::start(plan, recorder.clone());
    let (commands_tx, mut commands) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if commands_tx.send(line.trim().to_owned()).is_err() {
                return;
            }
        }
        let _ = commands_tx.send("STOP".to_owned());
    });
    let mut stdout = tokio::io::stdout();
    let mut tick = tokio::time::interval(REPORT_EVERY);
    let mut cpu_at_mark = 0.0;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let line = Line::Progress { tally: recorder.snapshot(), ready: clients.all_resolved() };
                write_line(&mut stdout, &line).await?;
            }
            command = commands.recv() => match command.as_deref() {
                Some("MARK") => {
                    cpu_at_mark = Usage::now().cpu_s;
                    clients.start_churn();
                }
                _ => break,
            },
        }
    }
    clients.close(CLOSE_TIMEOUT).await;
    let usage = Usage::now();
    let line = Line::Result {
        tally: recorder.snapshot(),
        cpu_s: usage.cpu_s,
        peak_rss_kib: usage.peak_rss_kib,
        cpu_at_mark,
    };
    write_line(&mut stdout, &line).await
}

async fn write_line(stdout: &mut tokio::io::Stdout, line: &Line) -> Result<(), BenchError> {
    let mut text = serde_json::to_string(line).expect("a worker line always serializes");
    text.push('\n');
    stdout
        .write_all(text.as_bytes())
        .await
        .and(stdout.flush().await)
        .map_err(|e| BenchError::Workers(format!("cannot write to the parent: {e}")))
}

/// What the parent knows of one worker.
#[derive(Default)]
struct WorkerState {
    latest: Option<Tally>,
    ready: bool,
    result: Option<(Tally, Usage, f64)>,
    /// Why the worker's output ended before its result, if it did.
    lost: Option<String>,
}

/// The shared view of every worker's last report.
#[derive(Clone)]
pub struct WorkerView(Arc<Mutex<Vec<WorkerState>>>);

impl WorkerView {
    /// The workers' latest tallies, merged.
    pub fn tally(&self) -> Tally {
        let states = self.0.lock();
        let mut total = Tally::default();
        for state in states.iter() {
            if let Some((tally, ..)) = &state.result {
                total.merge(tally);
            } else if let Some(tally) = &state.latest {
                total.merge(tally);
            }
        }
        total
    }

    /// Whether every worker's clients connected or failed.
    pub fn all_ready(&self) -> bool {
        self.0.lock().iter().all(|s| s.ready)
    }

    /// The first worker that died, with why.
    pub fn lost(&self) -> Option<String> {
        self.0.lock().iter().find_map(|s| s.lost.clone())
    }
}

/// The worker processes of a run, from the parent's side.
pub struct WorkerSet {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    view: WorkerView,
}

impl WorkerSet {
    /// Starts `count` workers: `program` with `args` plus `--worker-index i --worker-count count`.
    pub fn spawn(
        program: &PathBuf,
        args: &[OsString],
        count: usize,
    ) -> Result<WorkerSet, BenchError> {
        let view = WorkerView(Arc::new(Mutex::new(
            (0..count).map(|_| WorkerState::default()).collect(),
        )));
        let mut children = Vec::with_capacity(count);
        let mut stdins = Vec::with_capacity(count);
        for index in 0..count {
            let mut child = Command::new(program)
                .args(args)
                .arg("--worker-index")
                .arg(index.to_string())
                .arg("--worker-count")
                .arg(count.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| {
                    BenchError::Workers(format!("cannot start {}: {e}", program.display()))
                })?;
            stdins.push(child.stdin.take().expect("stdin is piped"));
            let stdout = child.stdout.take().expect("stdout is piped");
            tokio::spawn(read_reports(index, stdout, view.clone()));
            children.push(child);
        }
        Ok(WorkerSet {
            children,
            stdins,
            view,
        })
    }

    /// A view that follows the workers' reports.
    pub fn view(&self) -> WorkerView {
        self.view.clone()
    }

    /// Tells every worker to note its CPU time (the start of publishing).
    pub async fn mark(&mut self) -> Result<(), BenchError> {
        self.broadcast(b"MARK\n").await
    }

    async fn broadcast(&mut self, line: &[u8]) -> Result<(), BenchError> {
        for stdin in &mut self.stdins {
            stdin
                .write_all(line)
                .await
                .map_err(|e| BenchError::Workers(format!("cannot reach a worker: {e}")))?;
        }
        Ok(())
    }

    /// Stops the workers and collects their final tallies, usage and CPU at the mark (summed).
    pub async fn finish(mut self, timeout: Duration) -> Result<(Tally, Usage, f64), BenchError> {
        // A worker that already died cannot be told; its loss is reported below.
        let _ = self.broadcast(b"STOP\n").await;
        self.stdins.clear();
        let deadline = tokio::time::Instant::now() + timeout;
        for child in &mut self.children {
            let _ = tokio::time::timeout_at(deadline, child.wait()).await;
        }
        // The readers may still be parsing the last line after the process exited.
        for _ in 0..50 {
            if self
                .view
                .0
                .lock()
                .iter()
                .all(|s| s.result.is_some() || s.lost.is_some())
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let states = self.view.0.lock();
        let mut tally = Tally::default();
        let mut usage = Usage::default();
        let mut cpu_at_mark = 0.0;
        for (index, state) in states.iter().enumerate() {
            let Some((t, u, mark)) = &state.result else {
                return Err(BenchError::Workers(format!(
                    "worker {index} gave no result ({})",
                    state.lost.as_deref().unwrap_or("timed out")
                )));
            };
            tally.merge(t);
            usage.cpu_s += u.cpu_s;
            usage.peak_rss_kib += u.peak_rss_kib;
            cpu_at_mark += mark;
        }
        Ok((tally, usage, cpu_at_mark))
    }
}

/// Follows one worker's stdout into the shared state.
async fn read_reports(index: usize, stdout: tokio::process::ChildStdout, view: WorkerView) {
    let mut lines = BufReader::new(stdout).lines();
    let lost = loop {
        match lines.next_line().await {
            Ok(Some(text)) => match serde_json::from_str::<Line>(&text) {
                Ok(line) => apply(&mut view.0.lock()[index], line),
                Err(e) => break format!("unreadable report: {e}"),
            },
            Ok(None) => break "exited".to_owned(),
            Err(e) => break format!("read error: {e}"),
        }
    };
    let mut states = view.0.lock();
    if states[index].result.is_none() {
        states[index].lost = Some(lost);
    }
}

fn apply(state: &mut WorkerState, line: Line) {
    match line {
        Line::Progress { tally, ready } => {
            state.latest = Some(tally);
            state.ready |= ready;
        }
        Line::Result {
            tally,
            cpu_s,
            peak_rss_kib,
            cpu_at_mark,
        } => {
            state.result = Some((
                tally,
                Usage {
                    cpu_s,
                    peak_rss_kib,
                },
                cpu_at_mark,
            ));
            state.ready = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_merge() {
        let mut tally = Tally {
            connected: 3,
            members: vec![2, 1],
            ..Tally::default()
        };
        tally.record_delivery(2_000, 1_000, false);
        let text = serde_json::to_string(&Line::Progress { tally, ready: true }).unwrap();
        assert!(text.starts_with("{\"kind\":\"progress\""));
        let view = WorkerView(Arc::new(Mutex::new(vec![
            WorkerState::default(),
            WorkerState::default(),
        ])));
        apply(&mut view.0.lock()[0], serde_json::from_str(&text).unwrap());
        assert!(!view.all_ready());
        let mut other = Tally {
            connected: 1,
            members: vec![0, 1],
            ..Tally::default()
        };
        other.record_delivery(3_000, 1_000, false);
        apply(
            &mut view.0.lock()[1],
            Line::Result {
                tally: other,
                cpu_s: 1.5,
                peak_rss_kib: 10,
                cpu_at_mark: 0.5,
            },
        );
        assert!(view.all_ready());
        let merged = view.tally();
        assert_eq!((merged.connected, merged.deliveries), (4, 2));
        assert_eq!(merged.members, [2, 2]);
        assert!((1_999..=2_001).contains(&merged.latency.max()));
        assert!(view.lost().is_none());
    }
}
