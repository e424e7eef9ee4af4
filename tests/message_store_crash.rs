//! The disk message store loses nothing it acknowledged when its process is killed: this test runs a copy of
//! its own binary as a child that accepts messages (and marks some sent and delivered) as fast as it can,
//! printing each change once the store returned it, kills the child with SIGKILL mid-run, reopens the store and
//! finds every printed change, with each inbox's order intact.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidings::messages::{DiskMessages, InboxLimits, MessageId, MessageStore, NewMessage, Status};

/// Set in the child's environment: the data directory it writes to.
const CHILD_DIR: &str = "TIDINGS_CRASH_CHILD_DIR";
/// Accepts the parent waits to see before it kills the child.
const KILL_AFTER: usize = 3_000;
/// Concurrent writers in the child.
const WRITERS: usize = 16;
const USERS: usize = 5;
/// Starts every line the child prints about a change.
const MARK: &str = "@@ ";

fn limits() -> InboxLimits {
    InboxLimits {
        max_messages: 1_000_000,
        ..InboxLimits::default()
    }
}

/// The child's work; does nothing unless started by [`acknowledged_writes_survive_kill_9`].
#[test]
#[ignore = "run by acknowledged_writes_survive_kill_9 in a child process"]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(write_until_killed(PathBuf::from(dir)));
}

async fn write_until_killed(dir: PathBuf) {
    let store = Arc::new(DiskMessages::open(&dir, limits()).unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    let writers = (0..WRITERS).map(|w| {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let from = format!("sender{w}");
            for n in 0u64.. {
                if Instant::now() > deadline {
                    break; // the parent is gone: stop on our own
                }
                let to = format!("user{}", (w + n as usize) % USERS);
                let accepted = store
                    .accept(NewMessage {
                        from: Some(from.clone()),
                        to: to.clone(),
                        event: "chat".into(),
                        data: format!("{{\"w\":{w},\"n\":{n}}}").into(),
                        key: Some(format!("{w}-{n}")),
                        at_ms: 1_000_000 + n,
                        ttl_ms: 3_600_000,
                    })
                    .await
                    .unwrap();
                let id = accepted.message.id;
                say(&format!(
                    "ACCEPTED {id} {to} {} {from} {n}",
                    accepted.message.seq
                ));
                if n % 3 == 0 {
                    store
                        .mark_sent(&to, std::slice::from_ref(&id), 2_000_000)
                        .await
                        .unwrap();
                    say(&format!("SENT {id}"));
                }
                if n % 5 == 0 {
                    let device = format!("d{w}");
                    store
                        .mark_delivered(&to, &device, std::slice::from_ref(&id), 3_000_000)
                        .await
                        .unwrap();
                    say(&format!("DELIVERED {id} {device}"));
                }
            }
        })
    });
    futures_util::future::join_all(writers).await;
}

/// Prints one change on its own line, after a marker: the test harness may have started the line already.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "\n{MARK}{line}")
        .and_then(|()| out.flush())
        .is_err()
    {
        std::process::exit(1); // the parent is gone
    }
}

/// What the child printed for one message.
#[derive(Default)]
struct Printed {
    to: String,
    seq: u64,
    from: String,
    n: u64,
    sent: bool,
    device: Option<String>,
}

fn run_child_and_kill(dir: &Path) -> HashMap<String, Printed> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_child",
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
    let mut printed: HashMap<String, Printed> = HashMap::new();
    let mut accepted = 0;
    let mut killed = false;
    for line in lines {
        let line = line.unwrap();
        let Some(change) = line.strip_prefix(MARK) else {
            continue;
        };
        let words: Vec<&str> = change.split(' ').collect();
        match words[..] {
            ["ACCEPTED", id, to, seq, from, n] => {
                let entry = printed.entry(id.to_owned()).or_default();
                entry.to = to.to_owned();
                entry.seq = seq.parse().unwrap();
                entry.from = from.to_owned();
                entry.n = n.parse().unwrap();
                accepted += 1;
            }
            ["SENT", id] => printed.get_mut(id).expect("accepted first").sent = true,
            ["DELIVERED", id, device] => {
                printed.get_mut(id).expect("accepted first").device = Some(device.to_owned())
            }
            _ => continue,
        }
        if accepted >= KILL_AFTER && !killed {
            child.kill().unwrap(); // SIGKILL: no destructor, no flush, no close
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
async fn acknowledged_writes_survive_kill_9() {
    let unique: u64 = rand::random();
    let dir = std::env::temp_dir().join(format!("tidings-crash-{}-{unique:x}", std::process::id()));
    let printed = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || run_child_and_kill(&dir)
    })
    .await
    .unwrap();
    assert!(printed.len() >= KILL_AFTER);

    let store = DiskMessages::open(&dir, limits()).unwrap();
    for (id, want) in &printed {
        let state = store
            .get(&MessageId::parse(id).unwrap())
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged message {id} lost"));
        assert_eq!(
            (state.message.to.as_str(), state.message.seq),
            (want.to.as_str(), want.seq)
        );
        if want.sent {
            assert!(state.status >= Status::Sent, "{id} lost its sent status");
        }
        if let Some(device) = &want.device {
            assert_eq!(state.status, Status::Delivered, "{id}");
            assert!(
                state.devices.iter().any(|d| &d.device == device),
                "{id} lost its receipt"
            );
        }
    }
    for user in 0..USERS {
        let user = format!("user{user}");
        let inbox = store.inbox(&user, 0, usize::MAX).await.unwrap();
        let seqs: Vec<u64> = inbox.iter().map(|s| s.message.seq).collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "{user}: gap in the inbox"
        );
        // Each sender's messages to this user in the order it sent them.
        let mut last_n: HashMap<&str, u64> = HashMap::new();
        for state in &inbox {
            let from = state.message.from.as_deref().unwrap();
            let data: serde_json::Value = serde_json::from_str(&state.message.data).unwrap();
            let n = data["n"].as_u64().unwrap();
            if let Some(before) = last_n.insert(from, n) {
                assert!(before < n, "{user}: {from}'s messages out of order");
            }
        }
        let pending = store
            .pending(&user, "new-device", 0, usize::MAX)
            .await
            .unwrap();
        assert_eq!(pending.last_seq, seqs.len() as u64);
    }
    store.close().await;
    std::fs::remove_dir_all(&dir).unwrap();
}
