//! The disk store against the contract, across a reopen, under concurrent callers, and on a full disk.

use std::path::PathBuf;
use std::sync::Arc;

use super::*;
use crate::messages::contract::{self, CONTRACT_LIMITS};
use crate::messages::Status;

/// A fresh directory under the system's temporary one, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let unique: u64 = rand::random();
        let path =
            std::env::temp_dir().join(format!("tidings-{name}-{}-{unique:x}", std::process::id()));
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn new_message(from: &str, to: &str, n: u64) -> NewMessage {
    NewMessage {
        from: Some(from.into()),
        to: to.into(),
        event: "chat".into(),
        data: format!("{{\"n\":{n}}}").into(),
        key: Some(format!("k{n}")),
        at_ms: 1_000 + n,
        ttl_ms: 3_600_000,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_the_store_contract() {
    let dir = TempDir::new("contract");
    let store = DiskMessages::open(&dir.0.join("data"), CONTRACT_LIMITS).unwrap();
    contract::check(&store, "").await;
    // Everything forgotten after the contract's last sweep but the records still in an inbox, as in memory.
    let conn = Connection::open(store.path()).unwrap();
    let records: u64 = conn
        .query_row("SELECT count(*) FROM messages", [], |row| row.get(0))
        .unwrap();
    assert!(records <= 8, "{records} records left");
    let orphans: u64 = conn
        .query_row(
            "SELECT count(*) FROM receipts WHERE message NOT IN (SELECT id FROM messages)",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(orphans, 0, "receipts leave with their message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_and_receipts_survive_a_restart() {
    let dir = TempDir::new("restart");
    let store = DiskMessages::open(&dir.0, InboxLimits::default()).unwrap();
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(
            store
                .accept(new_message("alice", "bob", n))
                .await
                .unwrap()
                .message
                .id,
        );
    }
    store.mark_sent("bob", &ids[..4], 2_000).await.unwrap();
    store
        .mark_delivered("bob", "phone", &ids[..3], 2_100)
        .await
        .unwrap();
    store
        .mark_delivered("bob", "laptop", &ids[1..2], 2_200)
        .await
        .unwrap();
    store
        .mark_read("bob", "alice", &ids[1], 2_300)
        .await
        .unwrap();
    let before: Vec<_> = futures_util::future::join_all(ids.iter().map(|id| store.get(id))).await;
    store.close().await;

    let store = DiskMessages::open(&dir.0, InboxLimits::default()).unwrap();
    for (id, before) in ids.iter().zip(before) {
        assert_eq!(store.get(id).await.unwrap(), before.unwrap(), "{id}");
    }
    let read = store.get(&ids[1]).await.unwrap().unwrap();
    assert_eq!(read.status, Status::Read);
    let devices: Vec<_> = read
        .devices
        .iter()
        .map(|d| (d.device.as_str(), d.delivered_at))
        .collect();
    assert_eq!(devices, [("phone", 2_100), ("laptop", 2_200)]);
    let pending = store.pending("bob", "phone", 0, 10).await.unwrap();
    let seqs: Vec<_> = pending.messages.iter().map(|m| m.seq).collect();
    assert_eq!((seqs, pending.last_seq), (vec![4, 5, 6], 6));
    // The sequence and the idempotency keys carry on where they were.
    let next = store.accept(new_message("alice", "bob", 6)).await.unwrap();
    assert_eq!((next.message.seq, next.fresh), (7, true));
    let again = store.accept(new_message("alice", "bob", 0)).await.unwrap();
    assert_eq!((again.message.id, again.fresh), (ids[0].clone(), false));
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_commits() {
    let dir = TempDir::new("group");
    let store = Arc::new(DiskMessages::open(&dir.0, InboxLimits::default()).unwrap());
    let before = store.commits();
    let accepts = (0..500).map(|n| {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            store
                .accept(new_message("alice", &format!("u{}", n % 7), n))
                .await
        })
    });
    for accepted in futures_util::future::join_all(accepts).await {
        assert!(accepted.unwrap().unwrap().fresh);
    }
    let commits = store.commits() - before;
    assert!(
        commits < 100,
        "500 concurrent accepts took {commits} commits"
    );
    let listed = store.inbox("u3", 0, 1000).await.unwrap();
    let seqs: Vec<_> = listed.iter().map(|s| s.message.seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "one sequence per inbox, no gap"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_is_kept_out() {
    let dir = TempDir::new("lock");
    let store = DiskMessages::open(&dir.0, InboxLimits::default()).unwrap();
    assert!(matches!(
        DiskMessages::open(&dir.0, InboxLimits::default()),
        Err(OpenError::InUse(_))
    ));
    store.close().await;
    DiskMessages::open(&dir.0, InboxLimits::default())
        .unwrap()
        .close()
        .await;
}

/// Caps the file at a few pages, as a full disk would: writes past it fail with "database or disk is full".
fn tiny_file(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "max_page_count", 12)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_unavailable_and_keeps_what_was_acknowledged() {
    let dir = TempDir::new("full");
    let store = DiskMessages::open_tuned(&dir.0, InboxLimits::default(), tiny_file).unwrap();
    let mut acknowledged = Vec::new();
    let mut refusal = None;
    for n in 0..2_000 {
        let mut message = new_message("alice", "bob", n);
        message.data = format!("{{\"pad\":\"{}\"}}", "x".repeat(400)).into();
        match store.accept(message).await {
            Ok(accepted) => acknowledged.push(accepted.message.id),
            Err(error) => {
                refusal = Some(error);
                break;
            }
        }
    }
    assert!(
        matches!(refusal, Some(StoreError::Unavailable(_))),
        "{refusal:?}"
    );
    assert!(!acknowledged.is_empty());
    // Still serving: reads work, a write that fits (no new pages) goes through after the failed batch.
    let sent = store
        .mark_sent("bob", &acknowledged[..1], 9_000)
        .await
        .unwrap();
    assert_eq!(sent.len(), 1);
    store.close().await;
    let store = DiskMessages::open(&dir.0, InboxLimits::default()).unwrap();
    let listed = store.inbox("bob", 0, 10_000).await.unwrap();
    let listed: Vec<_> = listed.into_iter().map(|s| s.message.id).collect();
    assert_eq!(
        listed, acknowledged,
        "every acknowledged message, nothing else"
    );
    store.close().await;
}

#[test]
fn lookups_and_sweeps_go_through_indexes() {
    let dir = TempDir::new("plans");
    std::fs::create_dir_all(&dir.0).unwrap();
    let conn = schema::open_writer(&dir.0.join(FILE_NAME)).unwrap();
    let statements = [
        writes::BY_KEY,
        writes::OLDEST_DELIVERED,
        writes::SENT,
        writes::READ_UP_TO,
        writes::EXPIRY_DUE,
        writes::FORGET_DUE,
        writes::FORGET_RECEIPTS,
        reads::LAST_SEQ,
        reads::PENDING,
        reads::INBOX,
        rows::GET,
        rows::RECEIPTS,
    ];
    for sql in statements {
        let mut plan = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        // Parameters left unbound: the plan does not depend on their values.
        let mut rows = plan.raw_query();
        let mut details = Vec::new();
        while let Some(row) = rows.next().unwrap() {
            details.push(row.get::<_, String>(3).unwrap());
        }
        assert!(
            details.iter().all(|d| !d.starts_with("SCAN")),
            "{sql}\n{details:#?}"
        );
        // One message's receipts (one per device) are few enough to sort; everything else comes in index order.
        assert!(
            sql == rows::RECEIPTS || !details.iter().any(|d| d.contains("TEMP B-TREE")),
            "sorted without an index: {sql}\n{details:#?}"
        );
    }
}
