//! The rooms store loses no event it called durable when its process is killed: this test runs a copy of its
//! own binary as a child that publishes through a real hub into several rooms as fast as it can, waiting for
//! each event to be durable before printing it (and parking and saving sessions the same way), kills the child
//! with SIGKILL mid-run, reopens the store and finds every printed event in its room under its epoch, every
//! printed session resumable, and the sequence resumed past anything the child could have handed out.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidings::engineio::session::Sid;
use tidings::history::HistoryStore;
use tidings::hub::{Event, Hub, RoomKey};
use tidings::recovery::{Membership, Owner, SessionRecord, SessionStore};
use tidings::rooms_disk::{self, Limits, CRASH_GAP};

/// Set in the child's environment: the data directory it writes to.
const CHILD_DIR: &str = "TIDINGS_ROOMS_CRASH_CHILD_DIR";
/// Durable events the parent waits to see before it kills the child.
const KILL_AFTER: usize = 2_000;
/// Concurrent publishers in the child.
const PUBLISHERS: usize = 8;
const ROOMS: usize = 5;
/// Starts every line the child prints.
const MARK: &str = "@@ ";

fn limits() -> Limits {
    Limits {
        max_events: 1_000_000,
        max_age: Duration::from_secs(3600),
        max_bytes: 1 << 30,
        keep_idle: Duration::from_secs(3600),
        max_disconnection: Duration::from_secs(600),
    }
}

fn room(n: usize) -> String {
    format!("room{n}")
}

/// The child's work; does nothing unless started by [`durable_events_and_sessions_survive_kill_9`].
#[test]
#[ignore = "run by durable_events_and_sessions_survive_kill_9 in a child process"]
fn rooms_crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(publish_until_killed(PathBuf::from(dir)));
}

async fn publish_until_killed(dir: PathBuf) {
    let (history, sessions) = rooms_disk::open(&dir, limits()).unwrap();
    let hub = Arc::new(Hub::new(history.clone()));
    for n in 0..ROOMS {
        let epoch = history.epoch(&RoomKey::new("/", &room(n)));
        say(&format!("EPOCH {} {epoch}", room(n)));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let publishers = (0..PUBLISHERS).map(|p| {
        let (hub, history, sessions) = (hub.clone(), history.clone(), sessions.clone());
        tokio::spawn(async move {
            for n in 0usize.. {
                if Instant::now() > deadline {
                    break; // the parent is gone: stop on our own
                }
                let rooms = [room((p + n) % ROOMS)];
                let data = format!("{{\"p\":{p},\"n\":{n}}}");
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
                history.durable(seq).await.unwrap();
                say(&format!("EVENT {} {seq}", rooms[0]));
                if n % 50 == 0 {
                    let record = SessionRecord {
                        pid: Sid::random(),
                        sid: Sid::random(),
                        nsp: "/".into(),
                        sub: format!("user{p}"),
                        rooms: vec![Membership {
                            key: RoomKey::new("/", &rooms[0]),
                            epoch: 1,
                            joined_seq: seq,
                        }],
                        expires_at: Instant::now() + Duration::from_secs(300),
                    };
                    let pid = record.pid;
                    if n % 100 == 0 {
                        sessions.park(record);
                    } else {
                        sessions.save_live(&record);
                    }
                    history.durable(seq).await.unwrap();
                    say(&format!("SESSION {pid} user{p} {seq}"));
                }
            }
        })
    });
    futures_util::future::join_all(publishers).await;
}

/// Prints one line after a marker: the test harness may have started the line already.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "\n{MARK}{line}")
        .and_then(|()| out.flush())
        .is_err()
    {
        std::process::exit(1); // the parent is gone
    }
}

/// What the child printed.
#[derive(Default)]
struct Printed {
    epochs: HashMap<String, u64>,
    events: HashMap<String, Vec<u64>>,
    /// pid, user, joined sequence.
    sessions: Vec<(String, String, u64)>,
}

fn run_child_and_kill(dir: &Path) -> Printed {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "rooms_crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Printed::default();
    let mut events = 0;
    let mut killed = false;
    for line in lines {
        let line = line.unwrap();
        let Some(said) = line.strip_prefix(MARK) else {
            continue;
        };
        let words: Vec<&str> = said.split(' ').collect();
        match words[..] {
            ["EPOCH", room, epoch] => {
                printed.epochs.insert(room.into(), epoch.parse().unwrap());
            }
            ["EVENT", room, seq] => {
                printed
                    .events
                    .entry(room.into())
                    .or_default()
                    .push(seq.parse().unwrap());
                events += 1;
            }
            ["SESSION", pid, user, seq] => {
                printed
                    .sessions
                    .push((pid.into(), user.into(), seq.parse().unwrap()))
            }
            _ => continue,
        }
        if events >= KILL_AFTER && !killed {
            // SIGKILL by the child's own pid: no destructor, no flush, no close.
            child.kill().unwrap();
            killed = true;
            // Read on: lines printed before the kill are still in the pipe.
        }
    }
    let status = child.wait().unwrap();
    assert!(killed, "the child ended before it was killed: {status}");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    printed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_events_and_sessions_survive_kill_9() {
    let unique: u64 = rand::random();
    let dir = std::env::temp_dir().join(format!(
        "tidings-rooms-crash-{}-{unique:x}",
        std::process::id()
    ));
    let printed = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || run_child_and_kill(&dir)
    })
    .await
    .unwrap();
    let highest = printed.events.values().flatten().copied().max().unwrap();

    let (history, sessions) = rooms_disk::open(&dir, limits()).unwrap();
    assert!(!history.loaded().clean, "a killed process did not close");
    assert!(
        history.resume_seq() >= highest + CRASH_GAP,
        "resumed at {} after printing {highest}",
        history.resume_seq()
    );
    for (name, want) in &printed.events {
        let key = RoomKey::new("/", name);
        let epoch = printed.epochs[name];
        assert_eq!(history.epoch(&key), epoch, "{name} changed epoch");
        let (_, held) = history
            .read_after(&key, Some(epoch), 0, usize::MAX)
            .unwrap();
        let held: Vec<u64> = held.iter().map(|e| e.seq).collect();
        assert!(held.windows(2).all(|w| w[0] < w[1]), "{name}: out of order");
        for seq in want {
            assert!(
                held.binary_search(seq).is_ok(),
                "{name}: durable {seq} lost"
            );
        }
    }
    for (pid, user, joined_seq) in &printed.sessions {
        let owner = Owner {
            nsp: "/",
            sub: user,
        };
        let record = sessions
            .take(&Sid::parse(pid).unwrap(), &owner)
            .unwrap_or_else(|e| panic!("session {pid}: {e}"));
        assert_eq!(record.rooms[0].joined_seq, *joined_seq);
    }
    // The hub goes on past every offset the child could have handed out.
    let hub = Hub::new(history.clone());
    let seq = hub
        .publish(&Event {
            nsp: "/",
            rooms: &[room(0)],
            name: "update",
            data: b"{}",
            attachments: &[],
            with_offset: true,
        })
        .seq;
    assert!(seq > highest + CRASH_GAP);
    history.durable(seq).await.unwrap();
    history.close().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
