//! The Redis message store against real `redis-server` processes: the store contract, two nodes accepting for
//! one recipient at once, a Redis crash (errors while down; with AOF, nothing acknowledged lost), and the
//! replica wait.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{unique_prefix, RedisServer};
use redis::AsyncCommands;
use tidings::cluster::keys::Keys;
use tidings::cluster::{Redis, RedisMessages, RedisTarget, ReplicaWait};
use tidings::messages::{contract, InboxLimits, MessageStore, NewMessage, StoreError};

fn store(url: &str, prefix: &str, limits: InboxLimits) -> RedisMessages {
    let redis = Arc::new(Redis::new(RedisTarget::parse(url).unwrap()));
    RedisMessages::new(redis, Keys::new(prefix), limits)
}

fn message(to: &str, n: usize, key: Option<String>) -> NewMessage {
    NewMessage {
        from: Some("alice".into()),
        to: to.into(),
        event: "chat".into(),
        data: format!("{{\"n\":{n}}}").into(),
        key,
        at_ms: tidings::messages::now_ms(),
        ttl_ms: 3_600_000,
    }
}

fn roomy() -> InboxLimits {
    InboxLimits {
        max_messages: 10_000,
        ..InboxLimits::default()
    }
}

#[tokio::test]
async fn keeps_the_store_contract_and_forgets_what_it_swept() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("dm-contract");
    let messages = store(&redis.url(), &prefix, contract::CONTRACT_LIMITS);
    contract::check(&messages, "c-").await;

    // Erin's two messages were swept past their retention: her counters and inbox indexes are gone.
    let keys = Keys::new(&prefix);
    let mut conn = redis.conn().await;
    for key in [
        keys.dm_counters("c-erin"),
        keys.dm_inbox("c-erin"),
        keys.dm_acked("c-erin"),
    ] {
        assert!(!conn.exists::<_, bool>(&key).await.unwrap(), "{key} left");
    }
    // Every idempotency key left names a record still kept.
    let idempotency: Vec<String> = conn.keys(format!("{}key:*", keys.dm_root())).await.unwrap();
    assert!(!idempotency.is_empty());
    for key in idempotency {
        let id: String = conn.get(&key).await.unwrap();
        assert!(
            conn.exists::<_, bool>(keys.dm_message(&id)).await.unwrap(),
            "{key} names a forgotten record"
        );
    }
    // Nothing of the run lies outside the direct-message root.
    let all: Vec<String> = conn.keys(format!("{prefix}:*")).await.unwrap();
    assert!(
        all.iter().all(|k| k.starts_with(&keys.dm_root())),
        "{all:?}"
    );
    // Every record left is either in an inbox (expiry index) or waiting to be forgotten, never both.
    let records: Vec<String> = conn.keys(format!("{}msg:*", keys.dm_root())).await.unwrap();
    let expiring: Vec<String> = conn.zrange(keys.dm_expiry(), 0, -1).await.unwrap();
    let forgetting: Vec<String> = conn.zrange(keys.dm_forget(), 0, -1).await.unwrap();
    assert_eq!(records.len(), expiring.len() + forgetting.len());
    assert!(expiring.iter().all(|id| !forgetting.contains(id)));
}

#[tokio::test]
async fn two_nodes_accepting_for_one_user_get_distinct_gapless_sequences() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix("dm-two-nodes");
    let nodes = [
        Arc::new(store(&redis.url(), &prefix, roomy())),
        Arc::new(store(&redis.url(), &prefix, roomy())),
    ];
    const EACH: usize = 300;
    let mut tasks = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for i in 0..EACH {
            let node = node.clone();
            tasks.push(tokio::spawn(async move {
                node.accept(message("bob", n * EACH + i, None)).await
            }));
        }
    }
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.push(task.await.unwrap().unwrap().message.seq);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=2 * EACH as u64).collect::<Vec<_>>());
    // Either node reads the same inbox, in sequence order.
    let page = nodes[1].pending("bob", "phone", 0, 1000).await.unwrap();
    assert_eq!(page.last_seq, 2 * EACH as u64);
    let listed: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
    assert_eq!(listed, (1..=2 * EACH as u64).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_redis_crash_gives_unavailable_and_the_store_comes_back() {
    let mut redis = RedisServer::start().await;
    let prefix = unique_prefix("dm-crash");
    let messages = store(&redis.url(), &prefix, roomy());
    let first = messages.accept(message("bob", 1, None)).await.unwrap();
    let id = first.message.id.clone();

    let _ = redis.child.kill();
    let _ = redis.child.wait();
    let unavailable = |what: &str, result: Result<(), StoreError>| {
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{what} while Redis is down: {result:?}"
        );
    };
    let bounded = Duration::from_secs(10);
    let ids = [id.clone()];
    let calls = async {
        unavailable(
            "accept",
            messages.accept(message("bob", 2, None)).await.map(drop),
        );
        unavailable(
            "mark_sent",
            messages.mark_sent("bob", &ids, 1).await.map(drop),
        );
        unavailable(
            "mark_delivered",
            messages.mark_delivered("bob", "d", &ids, 1).await.map(drop),
        );
        unavailable(
            "mark_read",
            messages.mark_read("bob", "alice", &id, 1).await.map(drop),
        );
        unavailable(
            "pending",
            messages.pending("bob", "d", 0, 10).await.map(drop),
        );
        unavailable("inbox", messages.inbox("bob", 0, 10).await.map(drop));
        unavailable("get", messages.get(&id).await.map(drop));
        unavailable("sweep", messages.sweep(1).await.map(drop));
    };
    tokio::time::timeout(bounded, calls)
        .await
        .expect("calls answer while Redis is down");

    // A fresh, empty Redis (no persistence here): the store reconnects and loads its scripts again.
    redis.restart().await;
    let again = messages.accept(message("bob", 3, None)).await.unwrap();
    assert_eq!(again.message.seq, 1, "the old inbox went with the data");
    assert_eq!(messages.get(&id).await.unwrap(), None);
}

/// A `redis-server` of this test's own (persistence or replication flags), killed by its pid when dropped.
struct OwnRedis {
    child: Child,
    port: u16,
    /// Its working directory (`--dir` unless `extra` names another): nothing lands in the repository.
    _scratch: DataDir,
}

impl OwnRedis {
    fn start(port: u16, extra: &[&str]) -> OwnRedis {
        static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let scratch = DataDir::new(&format!("redis-{port}-{n}"));
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
            .expect("cannot run redis-server");
        OwnRedis {
            child,
            port,
            _scratch: scratch,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Waits until the server answers and has finished loading its data.
    async fn ready(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.url()).unwrap();
        for _ in 0..250 {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                let info: redis::RedisResult<String> = redis::cmd("INFO")
                    .arg("persistence")
                    .query_async(&mut conn)
                    .await;
                if info.is_ok_and(|info| info.contains("\r\nloading:0")) {
                    return conn;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis-server on port {} did not come up", self.port);
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh directory for a server's append-only file, removed when dropped.
struct DataDir(PathBuf);

impl DataDir {
    fn new(name: &str) -> DataDir {
        let dir = std::env::temp_dir().join(unique_prefix(name));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        DataDir(dir)
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn with_aof_every_acknowledged_message_survives_a_redis_kill() {
    // A killed process loses nothing it had written to the AOF; `always` also fsyncs before answering, which
    // is what makes an acknowledged message survive a machine crash, not only a process one.
    let dir = DataDir::new("dm-aof");
    let port = free_port();
    let aof = [
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        dir.0.to_str().unwrap(),
    ];
    let mut server = OwnRedis::start(port, &aof);
    server.ready().await;
    let messages = Arc::new(store(&server.url(), "dm-aof", roomy()));

    // Senders keep accepting while the server is killed (SIGKILL) under them.
    let mut senders = Vec::new();
    for s in 0..4 {
        let messages = messages.clone();
        senders.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut refused = 0;
            for i in 0..10_000 {
                match messages.accept(message("bob", s * 10_000 + i, None)).await {
                    Ok(accepted) => acknowledged.push(accepted.message),
                    Err(StoreError::Unavailable(_)) => {
                        refused += 1;
                        if refused > 3 {
                            break;
                        }
                    }
                    Err(other) => panic!("unexpected {other:?}"),
                }
            }
            acknowledged
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill();
    let mut acknowledged = Vec::new();
    for sender in senders {
        acknowledged.extend(sender.await.unwrap());
    }
    assert!(acknowledged.len() > 10, "too few accepted before the crash");

    let restarted = OwnRedis::start(port, &aof);
    restarted.ready().await;
    for message in &acknowledged {
        let kept = messages.get(&message.id).await.unwrap();
        assert_eq!(
            kept.map(|s| s.message),
            Some(message.clone()),
            "lost after the crash"
        );
    }
    // The inbox's sequence goes on after the last one given, never back.
    let highest = acknowledged.iter().map(|m| m.seq).max().unwrap();
    let next = messages.accept(message("bob", 0, None)).await.unwrap();
    assert!(next.message.seq > highest);
}

#[tokio::test]
async fn the_replica_wait_refuses_writes_no_replica_confirmed() {
    let master = RedisServer::start().await;
    let master_port: u16 = master.url().rsplit(':').next().unwrap().parse().unwrap();
    let mut replica = OwnRedis::start(
        free_port(),
        &["--replicaof", "127.0.0.1", &master_port.to_string()],
    );
    replica.ready().await;
    let mut conn = master.conn().await;
    for attempt in 0.. {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut conn)
            .await
            .unwrap();
        if info.contains("state=online") {
            break;
        }
        assert!(attempt < 500, "replica never came online: {info}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let prefix = unique_prefix("dm-wait");
    let messages = store(&master.url(), &prefix, roomy()).with_replica_wait(ReplicaWait {
        replicas: 1,
        // Long enough for a replica on a busy 2-core machine; the refusals below wait this long each.
        timeout: Duration::from_millis(1000),
    });
    let key = Some("k1".to_owned());
    let first = messages
        .accept(message("bob", 1, key.clone()))
        .await
        .unwrap();
    assert!(first.fresh);
    let acked = messages
        .mark_delivered("bob", "phone", std::slice::from_ref(&first.message.id), 5)
        .await
        .unwrap();
    assert_eq!(acked.len(), 1);

    // Concurrent writers share their waits; every one of them is confirmed.
    let messages = Arc::new(messages);
    let concurrent = |from: usize| {
        let messages = messages.clone();
        futures_util::future::join_all((from..from + 40).map(move |n| {
            let messages = messages.clone();
            async move { messages.accept(message("carol", n, None)).await }
        }))
    };
    for result in concurrent(0).await {
        assert!(result.unwrap().fresh);
    }

    replica.kill();
    for result in concurrent(100).await {
        assert!(
            matches!(&result, Err(StoreError::Unavailable(why)) if why.contains("replicas")),
            "{result:?}"
        );
    }
    let lone = messages.accept(message("bob", 2, None)).await;
    assert!(
        matches!(&lone, Err(StoreError::Unavailable(why)) if why.contains("replicas")),
        "{lone:?}"
    );
    // The write itself reached the master: the retry with the same key finds the first message.
    let again = store(&master.url(), &prefix, roomy())
        .accept(message("bob", 3, key))
        .await
        .unwrap();
    assert_eq!((again.fresh, again.message.id), (false, first.message.id));

    // The master gone: writes that wait for replicas fail too, none is reported confirmed.
    let mut master = master;
    let _ = master.child.kill();
    let _ = master.child.wait();
    for result in concurrent(200).await {
        assert!(
            matches!(&result, Err(StoreError::Unavailable(_))),
            "{result:?}"
        );
    }
}
