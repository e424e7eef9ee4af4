//! Group commit of the rooms store: publishers publish through a real hub into room history kept on disk
//! (`tidings::rooms_disk`, SQLite WAL, `synchronous = FULL`) and wait for each event to be durable before
//! publishing the next, as the app does before answering 2xx / ok. Prints, per concurrency level, events
//! made durable per second, commits (one sync each) per second, events per commit and the publish → durable
//! latency.
//!
//! ```sh
//! cargo run --release --example rooms_durable_bench                 # 3 s at 1, 4, 16, 64 and 256 publishers
//! cargo run --release --example rooms_durable_bench -- 5 1 64       # 5 s per level, at 1 and 64 publishers
//! ```
//!
//! Events are 200 bytes of JSON into 100 rooms; history keeps 100 events per room, so eviction (deletes) runs
//! alongside the appends as it does on a busy node.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tidings::history::HistoryStore;
use tidings::hub::{Event, Hub};
use tidings::rooms_disk::{self, Limits};

const ROOMS: usize = 100;

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers: seconds, then publisher counts"))
        .collect();
    let secs = args.first().copied().unwrap_or(3);
    let levels: Vec<usize> = if args.len() > 1 {
        args[1..].iter().map(|&n| n as usize).collect()
    } else {
        vec![1, 4, 16, 64, 256]
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "| publishers | durable events/s | commits/s | events/commit | p50 ms | p99 ms | max ms |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for publishers in levels {
        let row = runtime.block_on(run(publishers, Duration::from_secs(secs)));
        println!(
            "| {publishers} | {:.0} | {:.0} | {:.1} | {:.2} | {:.2} | {:.2} |",
            row.events as f64 / row.elapsed,
            row.commits as f64 / row.elapsed,
            row.events as f64 / row.commits.max(1) as f64,
            row.latency.value_at_quantile(0.5) as f64 / 1000.0,
            row.latency.value_at_quantile(0.99) as f64 / 1000.0,
            row.latency.max() as f64 / 1000.0,
        );
    }
}

struct Row {
    events: u64,
    commits: u64,
    elapsed: f64,
    /// Publish → durable, microseconds.
    latency: Histogram<u64>,
}

async fn run(publishers: usize, duration: Duration) -> Row {
    let unique: u64 = rand::random();
    let dir = std::env::temp_dir().join(format!("tidings-rooms-bench-{unique:x}"));
    let (history, _sessions) = rooms_disk::open(
        &dir,
        Limits {
            max_events: 100,
            max_age: Duration::from_secs(300),
            max_bytes: 64 << 20,
            keep_idle: Duration::from_secs(300),
            max_disconnection: Duration::from_secs(120),
        },
    )
    .unwrap();
    let hub = Arc::new(Hub::new(history.clone()));
    let data = format!("{{\"text\":\"{}\"}}", "x".repeat(190));
    let commits_before = history.commits();
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..publishers)
        .map(|p| {
            let (hub, history, data) = (hub.clone(), history.clone(), data.clone());
            tokio::spawn(async move {
                let mut latency = Histogram::<u64>::new(3).unwrap();
                let mut events = 0u64;
                let mut n = p;
                while Instant::now() < deadline {
                    let rooms = [format!("room{}", n % ROOMS)];
                    n += publishers;
                    let sent = Instant::now();
                    let seq = hub
                        .publish(&Event {
                            nsp: "/",
                            rooms: &rooms,
                            name: "update",
                            data: data.as_bytes(),
                            attachments: &[],
                            with_offset: true,
                        })
                        .seq;
                    history.durable(seq).await.expect("durable");
                    latency.record(sent.elapsed().as_micros() as u64).unwrap();
                    events += 1;
                }
                (events, latency)
            })
        })
        .collect();
    let mut row = Row {
        events: 0,
        commits: 0,
        elapsed: 0.0,
        latency: Histogram::new(3).unwrap(),
    };
    for task in tasks {
        let (events, latency) = task.await.unwrap();
        row.events += events;
        row.latency.add(latency).unwrap();
    }
    row.elapsed = started.elapsed().as_secs_f64();
    row.commits = history.commits() - commits_before;
    history.close().await.unwrap();
    drop(hub);
    let _ = std::fs::remove_dir_all(PathBuf::from(&dir));
    row
}
