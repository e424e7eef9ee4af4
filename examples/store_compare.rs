//! Compares the embedded engines for the durable message store on the message workload: each client accepts
//! a message, then marks it sent, delivered and read, waiting for every change to be durable (synced) before
//! the next. Both engines sit behind the same group commit (one writer thread takes every waiting change,
//! applies them in one transaction, commits once, answers each caller).
//!
//! - `sqlite`: the store itself, `tidings::messages::DiskMessages` (SQLite, WAL, `synchronous = FULL`).
//! - `redb`: the same records, indexes and counters in redb tables (`Durability::Immediate`).
//!
//! ```sh
//! cargo run --release --example store_compare            # every engine at 1, 16 and 256 clients
//! cargo run --release --example store_compare -- 5 1 64  # 5 s per run, at 1 and 64 clients
//! cargo run --release --example store_compare -- --reads  # reads beside writes, SQLite store only
//! ```
//!
//! Each configuration runs `TIDINGS_COMPARE_ROUNDS` (3) times, the engines taking turns; the table shows the
//! median round.
//!
//! Syncs are counted with `strace -c` (fsync and fdatasync of the run, when strace is installed); bytes on
//! disk are the files in the data directory after the run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use redb::{ReadableTable, TableDefinition};
use tidings::messages::{DiskMessages, InboxLimits, MessageId, MessageStore, NewMessage};
use tokio::sync::{mpsc, oneshot};

const ENGINES: [&str; 2] = ["sqlite", "redb"];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--one") {
        let (engine, clients, secs) =
            (&args[1], args[2].parse().unwrap(), args[3].parse().unwrap());
        let dir = PathBuf::from(&args[4]);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let line = runtime.block_on(run(engine, clients, Duration::from_secs(secs), &dir));
        println!("RESULT {line}");
        return;
    }
    if args.first().map(String::as_str) == Some("--reads") {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(reads_beside_writes(Duration::from_secs(3)));
        return;
    }
    let secs: u64 = args.first().map_or(3, |s| s.parse().unwrap());
    let levels: Vec<usize> = if args.len() > 1 {
        args[1..].iter().map(|s| s.parse().unwrap()).collect()
    } else {
        vec![1, 16, 256]
    };
    let strace = Command::new("strace").arg("-V").output().is_ok();
    println!(
        "| engine | clients | changes/s | messages/s | p50 ms | p99 ms | commits | syncs | syncs/message | bytes on disk |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    // Engines take turns, round after round, so a burst of load from elsewhere on the machine hits both; the
    // row shown is each engine's median round by changes/s.
    let rounds: usize = std::env::var("TIDINGS_COMPARE_ROUNDS").map_or(3, |r| r.parse().unwrap());
    for &clients in &levels {
        let mut results: Vec<Vec<Row>> = vec![Vec::new(); ENGINES.len()];
        for _ in 0..rounds {
            for (e, engine) in ENGINES.iter().enumerate() {
                results[e].push(measure(engine, clients, secs, strace));
            }
        }
        for (engine, mut rows) in ENGINES.iter().zip(results) {
            rows.sort_by(|a, b| a.changes.total_cmp(&b.changes));
            let row = &rows[rows.len() / 2];
            let messages = row.changes / 4.0;
            let syncs_text = row.syncs.map_or("-".into(), |s| s.to_string());
            let per_message = row.syncs.map_or("-".into(), |s| {
                format!("{:.3}", s as f64 / (messages * secs as f64))
            });
            println!(
                "| {engine} | {clients} | {:.0} | {messages:.0} | {:.2} | {:.2} | {} | {syncs_text} | {per_message} | {} |",
                row.changes,
                row.p50,
                row.p99,
                row.commits,
                human(row.bytes)
            );
        }
    }
}

/// Reads (a device's pending page) from 4 clients while 16 clients write, through the store's read-only
/// connections. A read sent through the writer instead would queue behind the batch being synced, so it would
/// wait at least the write latency printed beside it.
async fn reads_beside_writes(length: Duration) {
    let dir = std::env::temp_dir().join(format!("tidings-compare-reads-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Arc::new(Sqlite(DiskMessages::open(&dir, limits()).unwrap()));
    let deadline = Instant::now() + length;
    let writers = (0..16).map(|c| {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let mut latencies = Histogram::<u64>::new(3).unwrap();
            let (from, to) = (format!("s{c}"), format!("u{}", c % 4));
            for n in 0u64.. {
                if Instant::now() >= deadline {
                    break;
                }
                let timed = Instant::now();
                store.accept(&from, &to, n).await;
                latencies
                    .record(timed.elapsed().as_micros() as u64)
                    .unwrap();
            }
            latencies
        })
    });
    let readers = (0..4).map(|c| {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let mut latencies = Histogram::<u64>::new(3).unwrap();
            let user = format!("u{c}");
            while Instant::now() < deadline {
                let timed = Instant::now();
                store.0.pending(&user, "phone", 0, 50).await.unwrap();
                latencies
                    .record(timed.elapsed().as_micros() as u64)
                    .unwrap();
            }
            latencies
        })
    });
    let (writes, reads) = futures_util::future::join(
        futures_util::future::join_all(writers),
        futures_util::future::join_all(readers),
    )
    .await;
    let merge = |all: Vec<Result<Histogram<u64>, tokio::task::JoinError>>| {
        let mut merged = Histogram::<u64>::new(3).unwrap();
        for h in all {
            merged.add(h.unwrap()).unwrap();
        }
        merged
    };
    let (writes, reads) = (merge(writes), merge(reads));
    let secs = length.as_secs_f64();
    println!("| 4 readers beside 16 writers | per second | p50 ms | p99 ms |");
    println!("| --- | ---: | ---: | ---: |");
    for (name, h) in [
        ("pending (read-only connection)", &reads),
        ("accept (to durable)", &writes),
    ] {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} |",
            h.len() as f64 / secs,
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// One run's numbers.
#[derive(Clone)]
struct Row {
    changes: f64,
    p50: f64,
    p99: f64,
    commits: u64,
    syncs: Option<u64>,
    bytes: u64,
}

fn measure(engine: &str, clients: usize, secs: u64, strace: bool) -> Row {
    let dir = std::env::temp_dir().join(format!(
        "tidings-compare-{engine}-{clients}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let (line, syncs) = run_child(engine, clients, secs, &dir, strace);
    let bytes = dir_bytes(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let fields: Vec<&str> = line.split_whitespace().collect();
    Row {
        changes: fields[0].parse().unwrap(),
        p50: fields[1].parse().unwrap(),
        p99: fields[2].parse().unwrap(),
        commits: fields[3].parse().unwrap(),
        syncs,
        bytes,
    }
}

/// Runs one engine at one concurrency in a child process (under `strace -c` when it is there).
fn run_child(
    engine: &str,
    clients: usize,
    secs: u64,
    dir: &Path,
    strace: bool,
) -> (String, Option<u64>) {
    let exe = std::env::current_exe().unwrap();
    let summary = dir.with_extension("strace");
    let own = [
        "--one".to_owned(),
        engine.to_owned(),
        clients.to_string(),
        secs.to_string(),
        dir.display().to_string(),
    ];
    let output = if strace {
        Command::new("strace")
            .args([
                "-f",
                "-c",
                "--seccomp-bpf",
                "-e",
                "trace=fsync,fdatasync",
                "-o",
            ])
            .arg(&summary)
            .arg(&exe)
            .args(&own)
            .output()
    } else {
        Command::new(&exe).args(&own).output()
    }
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| {
            panic!(
                "{engine} {clients}: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
        .to_owned();
    let syncs = strace.then(|| count_syncs(&summary));
    let _ = std::fs::remove_file(&summary);
    (line, syncs)
}

/// Calls of fsync and fdatasync in an `strace -c` summary.
fn count_syncs(summary: &Path) -> u64 {
    let text = std::fs::read_to_string(summary).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let name = *fields.last()?;
            (name == "fsync" || name == "fdatasync").then(|| fields.get(3)?.parse::<u64>().ok())?
        })
        .sum()
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn human(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The workload against one engine: `clients` loops of accept → sent → delivered → read for `length`.
/// Prints changes/s, p50 and p99 latency to durable (ms) and commits.
async fn run(engine: &str, clients: usize, length: Duration, dir: &Path) -> String {
    let store: Arc<dyn Engine> = match engine {
        "sqlite" => Arc::new(Sqlite(DiskMessages::open(dir, limits()).unwrap())),
        "redb" => Arc::new(Redb::open(dir)),
        other => panic!("unknown engine {other}"),
    };
    let started = Instant::now();
    let deadline = started + length;
    let loops = (0..clients).map(|c| {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let mut latencies = Histogram::<u64>::new(3).unwrap();
            let (from, to) = (format!("s{c}"), format!("u{}", c % 64));
            for n in 0u64.. {
                if Instant::now() >= deadline {
                    break;
                }
                let timed = Instant::now();
                let id = store.accept(&from, &to, n).await;
                latencies
                    .record(timed.elapsed().as_micros() as u64)
                    .unwrap();
                for step in 0..3 {
                    let timed = Instant::now();
                    store.step(step, &from, &to, &id).await;
                    latencies
                        .record(timed.elapsed().as_micros() as u64)
                        .unwrap();
                }
            }
            latencies
        })
    });
    let mut all = Histogram::<u64>::new(3).unwrap();
    for latencies in futures_util::future::join_all(loops).await {
        all.add(latencies.unwrap()).unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    format!(
        "{:.0} {:.3} {:.3} {}",
        all.len() as f64 / elapsed,
        all.value_at_quantile(0.5) as f64 / 1000.0,
        all.value_at_quantile(0.99) as f64 / 1000.0,
        store.commits()
    )
}

fn limits() -> InboxLimits {
    InboxLimits {
        max_messages: 1_000_000,
        ..InboxLimits::default()
    }
}

/// One engine under the workload.
trait Engine: Send + Sync {
    /// Accepts message `n` from `from` to `to`; returns its id once durable.
    fn accept<'a>(
        &'a self,
        from: &'a str,
        to: &'a str,
        n: u64,
    ) -> futures_util::future::BoxFuture<'a, String>;
    /// Step 0 marks it sent, 1 delivered, 2 read; returns once durable.
    fn step<'a>(
        &'a self,
        step: u8,
        from: &'a str,
        to: &'a str,
        id: &'a str,
    ) -> futures_util::future::BoxFuture<'a, ()>;
    /// Transactions committed.
    fn commits(&self) -> u64;
}

struct Sqlite(DiskMessages);

fn new_message(from: &str, to: &str, n: u64) -> NewMessage {
    NewMessage {
        from: Some(from.to_owned()),
        to: to.to_owned(),
        event: "chat".into(),
        data: format!("{{\"text\":\"message number {n} with a few words in it\"}}").into(),
        key: Some(format!("c-{n}")),
        at_ms: tidings::messages::now_ms(),
        ttl_ms: 3_600_000,
    }
}

impl Engine for Sqlite {
    fn accept<'a>(
        &'a self,
        from: &'a str,
        to: &'a str,
        n: u64,
    ) -> futures_util::future::BoxFuture<'a, String> {
        Box::pin(async move {
            let accepted = self.0.accept(new_message(from, to, n)).await.unwrap();
            accepted.message.id.to_string()
        })
    }

    fn step<'a>(
        &'a self,
        step: u8,
        from: &'a str,
        to: &'a str,
        id: &'a str,
    ) -> futures_util::future::BoxFuture<'a, ()> {
        Box::pin(async move {
            let id = MessageId::parse(id).unwrap();
            let now = tidings::messages::now_ms();
            let ids = std::slice::from_ref(&id);
            match step {
                0 => drop(self.0.mark_sent(to, ids, now).await.unwrap()),
                1 => drop(self.0.mark_delivered(to, "phone", ids, now).await.unwrap()),
                _ => drop(self.0.mark_read(to, from, &id, now).await.unwrap()),
            }
        })
    }

    fn commits(&self) -> u64 {
        self.0.commits()
    }
}

// redb: the same records and indexes as the SQLite schema, as key-value tables.
const MESSAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("messages");
const INBOX: TableDefinition<(&str, u64), &str> = TableDefinition::new("inbox");
const KEYS: TableDefinition<(&str, &str), &str> = TableDefinition::new("keys");
const INBOXES: TableDefinition<&str, u64> = TableDefinition::new("inboxes");
const RECEIPTS: TableDefinition<(&str, &str), u64> = TableDefinition::new("receipts");
/// (due time, id): the sweep's two indexes, as the SQLite store keeps them.
const EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("expiry");
const FORGET: TableDefinition<(u64, &str), ()> = TableDefinition::new("forget");

/// A change for the redb writer: the operation and where to answer.
struct RedbJob {
    op: RedbOp,
    reply: oneshot::Sender<String>,
}

enum RedbOp {
    Accept { from: String, to: String, n: u64 },
    Step { step: u8, to: String, id: String },
}

struct Redb {
    queue: mpsc::Sender<RedbJob>,
    commits: Arc<std::sync::atomic::AtomicU64>,
}

impl Redb {
    fn open(dir: &Path) -> Redb {
        std::fs::create_dir_all(dir).unwrap();
        let db = redb::Database::create(dir.join("messages.redb")).unwrap();
        let (queue, mut jobs) = mpsc::channel::<RedbJob>(4096);
        let commits = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = Arc::clone(&commits);
        std::thread::spawn(move || {
            let mut batch = Vec::new();
            while let Some(first) = jobs.blocking_recv() {
                batch.push(first);
                while batch.len() < 1024 {
                    match jobs.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let tx = db.begin_write().unwrap();
                let answers: Vec<String> =
                    batch.iter().map(|job| redb_apply(&tx, &job.op)).collect();
                tx.commit().unwrap();
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                for (job, answer) in batch.drain(..).zip(answers) {
                    let _ = job.reply.send(answer);
                }
            }
        });
        Redb { queue, commits }
    }

    async fn submit(&self, op: RedbOp) -> String {
        let (reply, answer) = oneshot::channel();
        self.queue.send(RedbJob { op, reply }).await.unwrap();
        answer.await.unwrap()
    }
}

/// A record as the SQLite row holds it: status, timestamps, the message's fields and data.
fn record(status: u8, from: &str, to: &str, n: u64, now: u64) -> Vec<u8> {
    let mut out = vec![status];
    for time in [now, now + 3_600_000, 0, 0, 0, 0] {
        out.extend_from_slice(&time.to_le_bytes());
    }
    out.extend_from_slice(
        format!(
            "{from}\0{to}\0chat\0c-{n}\0{{\"text\":\"message number {n} with a few words in it\"}}"
        )
        .as_bytes(),
    );
    out
}

fn redb_apply(tx: &redb::WriteTransaction, op: &RedbOp) -> String {
    let now = tidings::messages::now_ms();
    let mut messages = tx.open_table(MESSAGES).unwrap();
    let mut inbox = tx.open_table(INBOX).unwrap();
    match op {
        RedbOp::Accept { from, to, n } => {
            let mut keys = tx.open_table(KEYS).unwrap();
            let key = format!("c-{n}");
            if let Some(id) = keys.get((from.as_str(), key.as_str())).unwrap() {
                return id.value().to_owned();
            }
            let mut inboxes = tx.open_table(INBOXES).unwrap();
            let seq = inboxes.get(to.as_str()).unwrap().map_or(0, |v| v.value()) + 1;
            let id = MessageId::generate(now).to_string();
            messages
                .insert(id.as_str(), record(0, from, to, *n, now).as_slice())
                .unwrap();
            inbox.insert((to.as_str(), seq), id.as_str()).unwrap();
            keys.insert((from.as_str(), key.as_str()), id.as_str())
                .unwrap();
            inboxes.insert(to.as_str(), seq).unwrap();
            let mut expiry = tx.open_table(EXPIRY).unwrap();
            expiry.insert((now + 3_600_000, id.as_str()), ()).unwrap();
            id
        }
        RedbOp::Step { step, to, id } => {
            let mut bytes = messages.get(id.as_str()).unwrap().unwrap().value().to_vec();
            bytes[0] = step + 1;
            let slot = 1 + 8 * (2 + *step as usize);
            bytes[slot..slot + 8].copy_from_slice(&now.to_le_bytes());
            messages.insert(id.as_str(), bytes.as_slice()).unwrap();
            if *step == 1 {
                let mut receipts = tx.open_table(RECEIPTS).unwrap();
                receipts.insert((id.as_str(), "phone"), now).unwrap();
            }
            if *step == 2 {
                // Leaves the inbox: find its entry as the SQLite store does through its index.
                let entry = inbox
                    .range((to.as_str(), 0)..=(to.as_str(), u64::MAX))
                    .unwrap()
                    .filter_map(Result::ok)
                    .find(|(_, v)| v.value() == id.as_str())
                    .map(|(k, _)| k.value().1);
                if let Some(seq) = entry {
                    inbox.remove((to.as_str(), seq)).unwrap();
                }
                let accepted = u64::from_le_bytes(bytes[1..9].try_into().unwrap());
                let mut expiry = tx.open_table(EXPIRY).unwrap();
                expiry.remove((accepted + 3_600_000, id.as_str())).unwrap();
                let mut forget = tx.open_table(FORGET).unwrap();
                forget.insert((now + 86_400_000, id.as_str()), ()).unwrap();
            }
            String::new()
        }
    }
}

impl Engine for Redb {
    fn accept<'a>(
        &'a self,
        from: &'a str,
        to: &'a str,
        n: u64,
    ) -> futures_util::future::BoxFuture<'a, String> {
        Box::pin(self.submit(RedbOp::Accept {
            from: from.to_owned(),
            to: to.to_owned(),
            n,
        }))
    }

    fn step<'a>(
        &'a self,
        step: u8,
        _from: &'a str,
        to: &'a str,
        id: &'a str,
    ) -> futures_util::future::BoxFuture<'a, ()> {
        Box::pin(async move {
            self.submit(RedbOp::Step {
                step,
                to: to.to_owned(),
                id: id.to_owned(),
            })
            .await;
        })
    }

    fn commits(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::Relaxed)
    }
}
