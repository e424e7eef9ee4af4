//! The rooms store against real files in a temporary directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rusqlite::Connection;

use super::*;
use crate::engineio::session::Sid;
use crate::engineio::Outgoing;
use crate::history::{HistoryError, HistoryStore, JournalError};
use crate::hub::{EventPackets, RoomKey};
use crate::recovery::{Membership, Owner, SessionRecord, SessionStore, TakeRefused};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let unique: u64 = rand::random();
        let dir = std::env::temp_dir().join(format!("tidings-rooms-{name}-{unique:x}"));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn limits(max_events: usize, max_bytes: usize) -> Limits {
    Limits {
        max_events,
        max_age: Duration::from_secs(300),
        max_bytes,
        keep_idle: Duration::from_secs(120),
        max_disconnection: Duration::from_secs(120),
    }
}

fn packets(text: &str) -> EventPackets {
    Arc::from([Outgoing::Text(Bytes::copy_from_slice(text.as_bytes()))])
}

fn seqs(h: &dyn HistoryStore, room: &RoomKey) -> Vec<u64> {
    h.read_after(room, None, h.evicted_through(room), usize::MAX)
        .unwrap()
        .1
        .iter()
        .map(|e| e.seq)
        .collect()
}

/// Opens the store, waiting for a dropped one's writer to let the directory go.
fn reopen(dir: &Path, limits: Limits) -> (Arc<DiskHistory>, Arc<DiskSessions>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match open(dir, limits) {
            Err(OpenError::Lock(LockError::InUse(_))) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            other => return other.unwrap(),
        }
    }
}

fn count(dir: &Path, table: &str) -> i64 {
    let conn = Connection::open(dir.join(FILE_NAME)).unwrap();
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
        row.get(0)
    })
    .unwrap()
}

#[tokio::test]
async fn a_clean_close_restores_events_epochs_and_sequence() {
    let dir = TempDir::new("clean");
    let rooms: Vec<RoomKey> = (0..3)
        .map(|i| RoomKey::new("/", &format!("r{i}")))
        .collect();
    let quiet = RoomKey::new("/chat", "quiet");
    let (history, _) = open(&dir.0, limits(5, 1 << 20)).unwrap();
    assert_eq!(history.resume_seq(), 0, "a new store starts at 0");
    let epochs: Vec<u64> = rooms.iter().map(|r| history.epoch(r)).collect();
    let quiet_epoch = history.epoch(&quiet);
    for seq in 1..=20u64 {
        history.append(
            &rooms[(seq % 3) as usize],
            seq,
            &packets(&format!("e{seq}")),
        );
    }
    // One event in every room under one sequence.
    for room in &rooms {
        history.append(room, 21, &packets("all"));
    }
    history.durable(21).await.unwrap();
    let before: Vec<Vec<u64>> = rooms.iter().map(|r| seqs(&*history, r)).collect();
    assert_eq!(before[0], vec![9, 12, 15, 18, 21], "5 per room");
    history.close().await.unwrap();
    assert_eq!(
        history.durable(22).await.unwrap_err(),
        super::journal::closed()
    );
    drop(history);

    let (history, _) = open(&dir.0, limits(5, 1 << 20)).unwrap();
    assert!(history.loaded().clean);
    assert_eq!(history.resume_seq(), 21);
    for (i, room) in rooms.iter().enumerate() {
        assert_eq!(history.epoch(room), epochs[i], "epoch of {room:?}");
        assert_eq!(seqs(&*history, room), before[i]);
        assert!(history.evicted_through(room) > 0);
        // A position before the kept events is still told apart from a complete one.
        assert_eq!(
            history
                .read_after(room, Some(epochs[i]), 1, 10)
                .unwrap_err(),
            HistoryError::Evicted
        );
    }
    assert_eq!(
        history.epoch(&quiet),
        quiet_epoch,
        "an empty stream keeps its epoch"
    );
    let event = &history.read_after(&rooms[0], None, 18, 1).unwrap().1[0];
    assert_eq!(event.packets[0].as_bytes(), &Bytes::from_static(b"all"));
    // The shared event is stored once.
    assert_eq!(count(&dir.0, "slots"), 15);
    assert_eq!(count(&dir.0, "events"), 13);

    // Smaller limits on the next start apply to what is read back, on disk too.
    history.close().await.unwrap();
    drop(history);
    let (history, _) = open(&dir.0, limits(2, 1 << 20)).unwrap();
    assert_eq!(seqs(&*history, &rooms[0]), vec![18, 21]);
    history.durable(0).await.unwrap();
    assert_eq!(count(&dir.0, "slots"), 6);
    history.close().await.unwrap();
}

#[tokio::test]
async fn without_a_clean_close_the_sequence_jumps_past_anything_delivered() {
    let dir = TempDir::new("crash");
    let room = RoomKey::new("/", "a");
    let (history, sessions) = open(&dir.0, limits(100, 1 << 20)).unwrap();
    let epoch = history.epoch(&room);
    for seq in 1..=10 {
        history.append(&room, seq, &packets("x"));
    }
    history.durable(10).await.unwrap();
    drop((history, sessions)); // no close: the marker is not written

    let (history, sessions) = reopen(&dir.0, limits(100, 1 << 20));
    assert!(!history.loaded().clean);
    assert_eq!(history.resume_seq(), 10 + CRASH_GAP);
    assert_eq!(seqs(&*history, &room), (1..=10).collect::<Vec<_>>());
    assert_eq!(history.epoch(&room), epoch);
    // A second crash before anything new is committed jumps again: the first gap's numbers may be out.
    drop((history, sessions));
    let (history, _) = reopen(&dir.0, limits(100, 1 << 20));
    assert_eq!(history.resume_seq(), 10 + 2 * CRASH_GAP);
    // The hub continues from there.
    let hub = crate::hub::Hub::new(history.clone());
    assert_eq!(hub.last_seq(), 10 + 2 * CRASH_GAP);
    drop(hub);
    // A clean close after a crash is clean again.
    history.close().await.unwrap();
    drop(history);
    let (history, _) = open(&dir.0, limits(100, 1 << 20)).unwrap();
    assert_eq!(history.resume_seq(), 10 + 2 * CRASH_GAP);
    history.close().await.unwrap();
}

#[tokio::test]
async fn a_flood_with_small_limits_keeps_the_file_bounded() {
    let dir = TempDir::new("flood");
    let event = "f".repeat(2000);
    let one =
        crate::history::MemoryHistory::new(1, Duration::from_secs(60), 1 << 30, Duration::ZERO);
    one.append(&RoomKey::new("/", "x"), 1, &packets(&event));
    let per_event = one.stats().bytes;
    // 10 rooms, 50 events each at most, 200 events' bytes in all.
    let (history, _) = open(&dir.0, limits(50, per_event * 200)).unwrap();
    let rooms: Vec<RoomKey> = (0..10)
        .map(|i| RoomKey::new("/", &format!("r{i}")))
        .collect();
    let mut sizes = Vec::new();
    for round in 0..10u64 {
        for n in 0..2000u64 {
            let seq = round * 2000 + n + 1;
            history.append(&rooms[(seq % 10) as usize], seq, &packets(&event));
            if seq % 100 == 0 {
                history.durable(seq).await.unwrap();
            }
        }
        assert!(history.stats().events <= 200);
        let on_disk = count(&dir.0, "slots");
        assert_eq!(on_disk as usize, history.stats().events, "round {round}");
        assert_eq!(count(&dir.0, "events"), on_disk);
        sizes.push(std::fs::metadata(dir.0.join(FILE_NAME)).unwrap().len());
    }
    // 40 MB were published; the file holds about the 200 events kept (400 KB) plus one batch in flight.
    assert!(sizes.iter().all(|&size| size < 2 << 20), "{sizes:?}");
    // Freed pages are reused: the file stops growing once the limits are reached.
    assert!(
        sizes[9] <= sizes[2] + sizes[2] / 4,
        "the file kept growing: {sizes:?}"
    );
    history.close().await.unwrap();
}

#[tokio::test]
async fn dropped_streams_and_aged_events_leave_the_file() {
    let dir = TempDir::new("sweep");
    let mut tight = limits(100, 1 << 20);
    tight.max_age = Duration::from_millis(1);
    tight.keep_idle = Duration::ZERO;
    let (history, _) = open(&dir.0, tight).unwrap();
    let (a, b) = (RoomKey::new("/", "a"), RoomKey::new("/", "b"));
    history.append(&a, 1, &packets("x"));
    history.append(&b, 2, &packets("y"));
    history.durable(2).await.unwrap();
    assert_eq!(count(&dir.0, "slots"), 2);
    std::thread::sleep(Duration::from_millis(5));
    history.sweep(&|room| room == &a);
    history.durable(2).await.unwrap();
    assert_eq!(count(&dir.0, "slots"), 0);
    assert_eq!(count(&dir.0, "events"), 0);
    assert_eq!(
        count(&dir.0, "streams"),
        1,
        "b's stream was dropped, a's is in use"
    );
    history.close().await.unwrap();
}

fn record(pid: Sid, sub: &str, expires_in: Duration) -> SessionRecord {
    SessionRecord {
        pid,
        sid: Sid::random(),
        nsp: "/".into(),
        sub: sub.into(),
        rooms: vec![Membership {
            key: RoomKey::new("/", "news"),
            epoch: 77,
            joined_seq: 5,
        }],
        expires_at: Instant::now() + expires_in,
    }
}

#[tokio::test]
async fn sessions_survive_a_crash_and_are_taken_once() {
    let dir = TempDir::new("sessions");
    let mut short = limits(10, 1 << 20);
    short.max_disconnection = Duration::from_secs(30);
    let (history, sessions) = open(&dir.0, short).unwrap();
    let (parked, live, taken, forgotten, expired) = (
        Sid::random(),
        Sid::random(),
        Sid::random(),
        Sid::random(),
        Sid::random(),
    );
    sessions.park(record(parked, "u", Duration::from_secs(600)));
    sessions.save_live(&record(live, "v", Duration::from_secs(600)));
    sessions.park(record(taken, "u", Duration::from_secs(600)));
    sessions.save_live(&record(forgotten, "u", Duration::from_secs(600)));
    sessions.park(record(expired, "u", Duration::from_millis(1)));
    let owner = Owner { nsp: "/", sub: "u" };
    sessions.take(&taken, &owner).unwrap();
    sessions.forget(&forgotten);
    history.durable(0).await.unwrap();
    drop((history, sessions)); // a crash: no close

    std::thread::sleep(Duration::from_millis(5));
    let opened = Instant::now();
    let (history, sessions) = reopen(&dir.0, short);
    assert_eq!(history.loaded().sessions, 2);
    assert_eq!(sessions.len(), 2);
    assert_eq!(
        sessions.take(&taken, &owner).unwrap_err(),
        TakeRefused::Unknown
    );
    assert_eq!(
        sessions.take(&forgotten, &owner).unwrap_err(),
        TakeRefused::Unknown
    );
    assert_eq!(
        sessions.take(&expired, &owner).unwrap_err(),
        TakeRefused::Unknown
    );
    let back = sessions.take(&parked, &owner).unwrap();
    assert_eq!(back.rooms, record(parked, "u", Duration::ZERO).rooms);
    assert!(
        back.expires_at > opened + Duration::from_secs(500),
        "keeps its expiry"
    );
    // The connected socket's session is parked for the configured disconnection window from the open.
    let v = Owner { nsp: "/", sub: "v" };
    // Racing takers get it exactly once.
    let winners = std::thread::scope(|scope| {
        let takers: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| sessions.take(&live, &v).is_ok()))
            .collect();
        takers
            .into_iter()
            .filter_map(|t| t.join().unwrap().then_some(()))
            .count()
    });
    assert_eq!(winners, 1);
    history.durable(0).await.unwrap();
    drop((history, sessions));
    let (history, sessions) = reopen(&dir.0, short);
    assert!(sessions.is_empty(), "taken sessions stay taken");
    history.close().await.unwrap();
}

#[tokio::test]
async fn a_live_session_is_resumable_for_the_disconnection_window() {
    let dir = TempDir::new("window");
    let mut short = limits(10, 1 << 20);
    short.max_disconnection = Duration::from_secs(30);
    let (history, sessions) = open(&dir.0, short).unwrap();
    let live = Sid::random();
    sessions.save_live(&record(live, "v", Duration::from_secs(3600)));
    history.close().await.unwrap();
    drop((history, sessions));
    let opened = Instant::now();
    let (history, sessions) = open(&dir.0, short).unwrap();
    let back = sessions.take(&live, &Owner { nsp: "/", sub: "v" }).unwrap();
    assert!(back.expires_at >= opened + Duration::from_secs(29));
    assert!(back.expires_at <= Instant::now() + Duration::from_secs(30));
    history.close().await.unwrap();
}

/// At most 40 pages of 4 KiB: the database fills up quickly.
fn tiny_file(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "max_page_count", 40)
}

#[tokio::test]
async fn durable_fails_when_the_journal_cannot_write_and_recovers_after() {
    let dir = TempDir::new("full");
    let (history, _) = open_tuned(&dir.0, limits(1000, 1 << 30), tiny_file).unwrap();
    let room = RoomKey::new("/", "a");
    history.append(&room, 1, &packets("small"));
    history.durable(1).await.unwrap();
    let big = "b".repeat(300_000);
    history.append(&room, 2, &packets(&big));
    let error = history.durable(2).await.unwrap_err();
    assert!(
        matches!(&error, JournalError(e) if e.contains("full")),
        "{error}"
    );
    // Still served from memory, and the failure stays a failure when asked again later.
    assert_eq!(seqs(&*history, &room), vec![1, 2]);
    history.append(&room, 3, &packets("small"));
    history.durable(3).await.unwrap();
    assert!(history.durable(2).await.is_err());
    history.close().await.unwrap();
    drop(history);

    // After a restart the lost event is reported as evicted, not silently skipped.
    let (history, _) = open(&dir.0, limits(1000, 1 << 30)).unwrap();
    assert_eq!(seqs(&*history, &room), vec![3]);
    assert_eq!(
        history.read_after(&room, None, 1, 10).unwrap_err(),
        HistoryError::Evicted
    );
    history.close().await.unwrap();
}

#[tokio::test]
async fn durable_waits_for_the_commit() {
    let dir = TempDir::new("wait");
    let (history, _) = open(&dir.0, limits(1000, 1 << 30)).unwrap();
    let room = RoomKey::new("/", "a");
    let reader = Connection::open(dir.0.join(FILE_NAME)).unwrap();
    let stored = |seq: u64| -> bool {
        reader
            .query_row(
                "SELECT count(*) FROM events WHERE seq = ?1",
                [seq as i64],
                |row| row.get::<_, i64>(0),
            )
            .unwrap()
            == 1
    };
    for seq in 1..=500 {
        history.append(&room, seq, &packets("x"));
        let durable = history.durable(seq);
        if seq % 50 == 0 {
            durable.await.unwrap();
            assert!(stored(seq), "{seq} acknowledged before it was committed");
        }
    }
    assert!(history.commits() >= 1);
    history.close().await.unwrap();
}

#[test]
fn a_second_process_is_kept_out() {
    let dir = TempDir::new("lock");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (history, _sessions) = open(&dir.0, limits(10, 1 << 20)).unwrap();
    assert!(matches!(
        open(&dir.0, limits(10, 1 << 20)),
        Err(OpenError::Lock(LockError::InUse(_)))
    ));
    runtime.block_on(history.close()).unwrap();
    drop(open(&dir.0, limits(10, 1 << 20)).unwrap());
}

/// An event whose packets left the file with its first room (a sweep between two rooms' appends of one
/// publish) is written again for the next room.
#[tokio::test]
async fn a_shared_event_evicted_from_its_first_room_is_still_kept_for_the_next() {
    let dir = TempDir::new("shared");
    let (a, b) = (RoomKey::new("/", "a"), RoomKey::new("/", "b"));
    let mut aging = limits(10, 1 << 20);
    aging.max_age = Duration::from_millis(1);
    let (history, _) = open(&dir.0, aging).unwrap();
    history.append(&a, 5, &packets("five"));
    history.durable(5).await.unwrap();
    std::thread::sleep(Duration::from_millis(5));
    history.sweep(&|_| true);
    history.durable(5).await.unwrap();
    assert_eq!(count(&dir.0, "events"), 0, "5 left with a's slot");
    history.append(&b, 5, &packets("five"));
    history.durable(5).await.unwrap();
    assert_eq!(count(&dir.0, "slots"), 1);
    assert_eq!(count(&dir.0, "events"), 1, "b's slot has its packets");
    history.close().await.unwrap();
}
