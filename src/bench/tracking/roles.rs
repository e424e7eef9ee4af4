//! The two kinds of connection of the tracking bench. A worker publishes its positions on schedule
//! (`publish {room, event:"position", data:{worker, seq, t, x, y}}` with an ack) and counts the answers; a
//! manager subscribes to its team's room and checks every position it gets: its latency, that it is of its own
//! team, and per worker that sequence numbers only go up.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use super::args::TrackingPlan;
use crate::bench::dm::conn::{split_ack_id, Conn};
use crate::bench::stats::{merge_hist, new_hist, Hist};
use crate::bench::sys::unix_micros;

/// What all workers share: counters the progress line reads, and each worker's last accepted position.
pub struct Shared {
    /// Positions sent.
    pub sent: AtomicU64,
    /// Positions answered `ok`.
    pub accepted: AtomicU64,
    /// Managers' deliveries so far.
    pub delivered: AtomicU64,
    /// Deliveries later than 100 ms so far.
    pub late: AtomicU64,
    /// The latest delivery since the progress line last read it, µs.
    pub worst_us: AtomicU64,
    /// Per worker: accepted positions.
    pub accepted_by: Vec<AtomicU64>,
    /// Per worker: the highest accepted sequence + 1 (0: none).
    pub last_accepted: Vec<AtomicU64>,
}

impl Shared {
    /// Counters for `workers` workers.
    pub fn new(workers: u32) -> Shared {
        let zeros = || (0..workers).map(|_| AtomicU64::new(0)).collect();
        Shared {
            sent: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            late: AtomicU64::new(0),
            worst_us: AtomicU64::new(0),
            accepted_by: zeros(),
            last_accepted: zeros(),
        }
    }
}

/// What a worker reports at the end.
#[derive(Default)]
pub struct WorkerTally {
    /// Refusals by reason (`error` of the answer, or how the connection ended).
    pub refused: BTreeMap<String, u64>,
    /// Send → answer times, µs.
    pub ack_latency: Option<Hist>,
    /// Positions never answered.
    pub unanswered: u64,
    /// The schedule was this far behind at worst, ms.
    pub max_lag_ms: u64,
}

/// Publishes worker `i`'s positions from `start` on, answers pings, counts answers; tells `done` its tally once
/// every position is answered (or the connection ended, or `stop` turned true), and stays connected until
/// `stop` turns true.
pub async fn worker(
    i: u32,
    plan: Arc<TrackingPlan>,
    mut conn: Conn,
    shared: Arc<Shared>,
    start: Instant,
    mut stop: watch::Receiver<bool>,
    done: tokio::sync::oneshot::Sender<WorkerTally>,
) {
    let room = plan.room(plan.team_of(i));
    let period = Duration::from_secs_f64(1.0 / plan.rate);
    let phase = period.mul_f64(f64::from(i) / f64::from(plan.workers));
    let mut tick = tokio::time::interval_at(start + phase, period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let total = plan.positions_per_worker();
    let mut tally = WorkerTally {
        ack_latency: Some(new_hist()),
        ..WorkerTally::default()
    };
    let mut waiting: VecDeque<(u64, u64)> = VecDeque::new();
    let mut seq = 0u64;
    loop {
        if seq == total && waiting.is_empty() {
            break;
        }
        tokio::select! {
            due = tick.tick(), if seq < total => {
                let lag = Instant::now().saturating_duration_since(due).as_millis() as u64;
                tally.max_lag_ms = tally.max_lag_ms.max(lag);
                let t = unix_micros();
                // A little walk around the team's area: what a phone would send.
                let (x, y) = (f64::from(i % 100) + seq as f64 * 0.01, f64::from(i / 100) + seq as f64 * 0.02);
                let packet = format!(
                    r#"42{seq}["publish",{{"room":"{room}","event":"position","data":{{"worker":{i},"seq":{seq},"t":{t},"x":{x:.2},"y":{y:.2}}}}}]"#
                );
                if !conn.outbox.send(packet) {
                    break;
                }
                waiting.push_back((seq, t));
                seq += 1;
                shared.sent.fetch_add(1, Ordering::Relaxed);
            }
            packet = conn.reader.next() => {
                let packet = match packet {
                    Ok(packet) => packet,
                    Err(reason) => {
                        *tally.refused.entry(format!("connection: {reason}")).or_default() += 1;
                        break;
                    }
                };
                let Some(body) = packet.strip_prefix(b"3") else {
                    continue;
                };
                let (Some(id), answer) = split_ack_id(body) else {
                    continue;
                };
                let Some(at) = waiting.iter().position(|(s, _)| *s == id) else {
                    continue;
                };
                let (_, sent_us) = waiting.remove(at).unwrap_or_default();
                if let Some(hist) = tally.ack_latency.as_mut() {
                    let _ = hist.record(unix_micros().saturating_sub(sent_us).max(1));
                }
                if answer.windows(9).any(|w| w == br#""ok":true"#) {
                    shared.accepted.fetch_add(1, Ordering::Relaxed);
                    shared.accepted_by[i as usize].fetch_add(1, Ordering::Relaxed);
                    shared.last_accepted[i as usize].fetch_max(id + 1, Ordering::Relaxed);
                } else {
                    *tally.refused.entry(refusal(answer)).or_default() += 1;
                }
            }
            _ = stop.changed() => break,
        }
    }
    tally.unanswered = waiting.len() as u64 + (total - seq);
    // Stay connected until the run ends: thousands of workers leaving together while the last positions are
    // delivered would time the disconnection storm, not the stream.
    let _ = done.send(tally);
    while !*stop.borrow() {
        tokio::select! {
            packet = conn.reader.next() => if packet.is_err() { break },
            changed = stop.changed() => if changed.is_err() { break },
        }
    }
    conn.writer.abort();
}

/// The `error` of a refusal answer `[{"ok":false,"error":"…"}]`, or the answer itself, shortened.
fn refusal(answer: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Answer {
        error: Option<String>,
    }
    serde_json::from_slice::<Vec<Answer>>(answer)
        .ok()
        .and_then(|mut a| a.pop()?.error)
        .unwrap_or_else(|| String::from_utf8_lossy(&answer[..answer.len().min(80)]).into_owned())
}

/// What a manager reports at the end.
pub struct ManagerTally {
    /// Positions received.
    pub deliveries: u64,
    /// Worker send → manager receive, µs.
    pub latency: Hist,
    /// Per worker of the team (by worker / teams): positions received.
    pub received: Vec<u64>,
    /// Per worker of the team: the last sequence received + 1 (0: none).
    pub last_seq: Vec<u64>,
    /// Positions older than one already received from the same worker.
    pub out_of_order: u64,
    /// The same position twice.
    pub duplicates: u64,
    /// Positions of another team's worker (a room leaked).
    pub foreign: u64,
    /// How the connection ended early, if it did.
    pub dropped: Option<String>,
}

#[derive(Deserialize)]
struct Position {
    worker: u32,
    seq: u64,
    t: u64,
}

/// Subscribes manager `k` of team `team` and records every position until `stop` turns true; `ready` is told
/// once the subscription is answered (`Err` with the refusal).
pub async fn manager(
    team: u32,
    plan: Arc<TrackingPlan>,
    mut conn: Conn,
    shared: Arc<Shared>,
    ready: tokio::sync::oneshot::Sender<Result<(), String>>,
    mut stop: watch::Receiver<bool>,
) -> ManagerTally {
    let size = plan.team_size(team) as usize;
    let mut tally = ManagerTally {
        deliveries: 0,
        latency: new_hist(),
        received: vec![0; size],
        last_seq: vec![0; size],
        out_of_order: 0,
        duplicates: 0,
        foreign: 0,
        dropped: None,
    };
    conn.outbox
        .send(format!(r#"420["subscribe","{}"]"#, plan.room(team)));
    let mut ready = Some(ready);
    loop {
        let packet = tokio::select! {
            packet = conn.reader.next() => packet,
            _ = stop.changed() => break,
        };
        let packet = match packet {
            Ok(packet) => packet,
            Err(reason) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Err(reason.clone()));
                }
                tally.dropped = Some(reason);
                break;
            }
        };
        match packet.first() {
            Some(b'3') => {
                if let (Some(0), answer) = split_ack_id(&packet[1..]) {
                    if let Some(ready) = ready.take() {
                        let ok = answer.windows(9).any(|w| w == br#""ok":true"#);
                        let _ = ready.send(if ok { Ok(()) } else { Err(refusal(answer)) });
                    }
                }
            }
            Some(b'2') => record(&plan, team, &packet[1..], &mut tally, &shared),
            _ => {}
        }
    }
    conn.writer.abort();
    tally
}

fn record(plan: &TrackingPlan, team: u32, body: &[u8], tally: &mut ManagerTally, shared: &Shared) {
    let now = unix_micros();
    let Ok(args) = serde_json::from_slice::<Vec<&RawValue>>(body) else {
        return;
    };
    if args.first().map(|name| name.get()) != Some(r#""position""#) {
        return;
    }
    let Some(Ok(position)) = args
        .get(1)
        .map(|data| serde_json::from_str::<Position>(data.get()))
    else {
        return;
    };
    tally.deliveries += 1;
    shared.delivered.fetch_add(1, Ordering::Relaxed);
    let age = now.saturating_sub(position.t).max(1);
    let _ = tally.latency.record(age);
    if age > 100_000 {
        shared.late.fetch_add(1, Ordering::Relaxed);
    }
    shared.worst_us.fetch_max(age, Ordering::Relaxed);
    if position.worker >= plan.workers || plan.team_of(position.worker) != team {
        tally.foreign += 1;
        return;
    }
    let j = (position.worker / plan.teams) as usize;
    tally.received[j] += 1;
    let next = position.seq + 1;
    match next.cmp(&tally.last_seq[j]) {
        std::cmp::Ordering::Greater => tally.last_seq[j] = next,
        std::cmp::Ordering::Equal => tally.duplicates += 1,
        std::cmp::Ordering::Less => tally.out_of_order += 1,
    }
}

/// Merges the workers' answer-time histograms.
pub fn merged_ack_latency(tallies: &mut [WorkerTally]) -> Hist {
    let mut all = new_hist();
    for tally in tallies {
        if let Some(hist) = tally.ack_latency.take() {
            merge_hist(&mut all, &hist);
        }
    }
    all
}
