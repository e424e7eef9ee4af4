//! Redis message store benchmark: direct messages accepted and acknowledged per second, and the latency of
//! `accept` and `mark_delivered`, at several concurrency levels and Redis durability settings.
//!
//! ```sh
//! cargo run --release --example redis_messages_bench -- [--messages 20000] [--concurrency 1,8,32,128] \
//!     [--modes none,everysec,always,replica] [--recipients 1000] [--redis redis://127.0.0.1:6379]
//! ```
//!
//! Each mode runs against a fresh `redis-server` this program starts on a free loopback port (and stops by its
//! pid): `none` (no persistence), `everysec` and `always` (AOF with that `appendfsync`, in a temporary
//! directory), `replica` (no persistence, one replica, the store waiting for it after every write). With
//! `--redis` the given server is used instead, as it is configured, for one mode named `given`.
//!
//! At each concurrency level C tasks share one store (one multiplexed connection, as a node has) and loop:
//! accept a message for one of R recipients, then acknowledge it from a device (`mark_delivered`), until
//! `--messages` messages went through. Reported: messages per second (accepted and acknowledged), and p50/p99
//! of each call's latency in microseconds.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use hdrhistogram::Histogram;

use tidings::cluster::keys::Keys;
use tidings::cluster::{Redis, RedisMessages, RedisTarget, ReplicaWait};
use tidings::messages::{InboxLimits, MessageStore, NewMessage};

#[derive(Parser)]
struct Args {
    /// Messages per concurrency level.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Concurrency levels (tasks), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,128")]
    concurrency: Vec<usize>,
    /// Redis setups: none, everysec, always, replica.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "none,everysec,always,replica"
    )]
    modes: Vec<String>,
    /// Distinct recipients the messages go to.
    #[arg(long, default_value_t = 1000)]
    recipients: usize,
    /// Bytes of JSON data per message.
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// Use this server instead of starting one per mode.
    #[arg(long)]
    redis: Option<String>,
}

/// A `redis-server` this program started, killed by its pid when dropped. It works in a scratch directory of
/// its own (`--dir`, unless `extra` names another), so a replica's copy of the data never lands in the
/// directory the program was started from.
struct Server {
    child: Child,
    port: u16,
    _scratch: TempDir,
}

impl Server {
    fn start(extra: &[&str]) -> anyhow::Result<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let scratch = std::env::temp_dir().join(format!(
            "tidings-dm-bench-{}-redis-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&scratch)?;
        let scratch = TempDir(scratch);
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(&scratch.0)
            .current_dir(&scratch.0)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run redis-server")?;
        Ok(Server {
            child,
            port,
            _scratch: scratch,
        })
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn ready(&self, check: &str) -> anyhow::Result<()> {
        let client = redis::Client::open(self.url())?;
        for _ in 0..500 {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                let info: redis::RedisResult<String> =
                    redis::cmd("INFO").query_async(&mut conn).await;
                if info.is_ok_and(|info| info.contains(check)) {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("redis-server on port {} not ready ({check})", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The servers of one mode and the store over them.
struct Setup {
    store: Arc<RedisMessages>,
    _servers: Vec<Server>,
    _dir: Option<TempDir>,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn store(url: &str, prefix: &str) -> anyhow::Result<RedisMessages> {
    let redis = Arc::new(Redis::new(RedisTarget::parse(url)?));
    Ok(RedisMessages::new(
        redis,
        Keys::new(prefix),
        InboxLimits::default(),
    ))
}

async fn setup(mode: &str, given: Option<&str>, prefix: &str) -> anyhow::Result<Setup> {
    if let Some(url) = given {
        return Ok(Setup {
            store: Arc::new(store(url, prefix)?),
            _servers: Vec::new(),
            _dir: None,
        });
    }
    let (servers, dir, wait) = match mode {
        "none" => (vec![Server::start(&["--appendonly", "no"])?], None, None),
        "everysec" | "always" => {
            let dir = std::env::temp_dir()
                .join(format!("tidings-dm-bench-{}-{mode}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let server = Server::start(&[
                "--appendonly",
                "yes",
                "--appendfsync",
                mode,
                "--dir",
                dir.to_str().context("temp dir path")?,
            ])?;
            (vec![server], Some(TempDir(dir)), None)
        }
        "replica" => {
            let master = Server::start(&["--appendonly", "no"])?;
            master.ready("\r\nloading:0").await?;
            let replica = Server::start(&[
                "--appendonly",
                "no",
                "--replicaof",
                "127.0.0.1",
                &master.port.to_string(),
            ])?;
            let wait = ReplicaWait {
                replicas: 1,
                timeout: Duration::from_millis(1000),
            };
            (vec![master, replica], None, Some(wait))
        }
        other => bail!("unknown mode {other}"),
    };
    servers[0].ready("\r\nloading:0").await?;
    if wait.is_some() {
        servers[0].ready("state=online").await?;
    }
    let mut store = store(&servers[0].url(), prefix)?;
    if let Some(wait) = wait {
        store = store.with_replica_wait(wait);
    }
    Ok(Setup {
        store: Arc::new(store),
        _servers: servers,
        _dir: dir,
    })
}

/// One concurrency level's results.
struct Run {
    per_sec: f64,
    accept: Histogram<u64>,
    delivered: Histogram<u64>,
}

async fn run(store: Arc<RedisMessages>, args: &Args, tasks: usize) -> anyhow::Result<Run> {
    let data: Arc<str> = format!(
        "{{\"text\":\"{}\"}}",
        "x".repeat(args.payload.saturating_sub(11))
    )
    .into();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (store, data, next) = (store.clone(), data.clone(), next.clone());
        // Keys differ per level: a repeated key would be answered without storing anything.
        let (total, recipients) = (args.messages, args.recipients.max(1));
        handles.push(tokio::spawn(async move {
            let mut accept = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut delivered = accept.clone();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let new = NewMessage {
                    from: Some(format!("sender-{}", n % 97)),
                    to: format!("user-{}", n % recipients),
                    event: "chat".into(),
                    data: data.clone(),
                    key: Some(format!("c{tasks}-{n}")),
                    at_ms: tidings::messages::now_ms(),
                    ttl_ms: 3_600_000,
                };
                let to = new.to.clone();
                let t = Instant::now();
                let accepted = store.accept(new).await?;
                accept.record(t.elapsed().as_micros().max(1) as u64)?;
                let t = Instant::now();
                let ids = [accepted.message.id];
                store
                    .mark_delivered(&to, "phone", &ids, tidings::messages::now_ms())
                    .await?;
                delivered.record(t.elapsed().as_micros().max(1) as u64)?;
            }
            anyhow::Ok((accept, delivered))
        }));
    }
    let mut accept = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut delivered = accept.clone();
    for handle in handles {
        let (a, d) = handle.await??;
        accept.add(&a)?;
        delivered.add(&d)?;
    }
    Ok(Run {
        per_sec: args.messages as f64 / started.elapsed().as_secs_f64(),
        accept,
        delivered,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let modes = if args.redis.is_some() {
        vec!["given".to_owned()]
    } else {
        args.modes.clone()
    };
    println!(
        "{} messages per level, {} recipients, {} B data; latencies in µs",
        args.messages, args.recipients, args.payload
    );
    println!(
        "| redis | tasks | msgs/s | accept p50 | accept p99 | delivered p50 | delivered p99 |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for mode in &modes {
        let setup = setup(
            mode,
            args.redis.as_deref(),
            &format!("bench{}", std::process::id()),
        )
        .await?;
        for &tasks in &args.concurrency {
            let result = run(setup.store.clone(), &args, tasks.max(1)).await?;
            println!(
                "| {mode} | {tasks} | {:.0} | {} | {} | {} | {} |",
                result.per_sec,
                result.accept.value_at_quantile(0.5),
                result.accept.value_at_quantile(0.99),
                result.delivered.value_at_quantile(0.5),
                result.delivered.value_at_quantile(0.99),
            );
        }
    }
    Ok(())
}
