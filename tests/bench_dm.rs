//! `tidings bench dm` against an in-process node: 4 senders, 5 users with 2 devices each, 200 messages a second
//! for one second; every message accepted, received by both devices of its recipient, and reported delivered to
//! its sender. Then against a `tidings serve --data-dir` process killed with SIGKILL during the run and
//! restarted on the same port: every connection comes back, nothing accepted is lost, nothing acknowledged comes
//! again, nothing is stored twice or out of order.

mod common;

use std::path::Path;
use std::time::Duration;

use common::DataDirNode;
use tidings::bench::dm::{DmArgs, DmBench};

fn args(url: String) -> DmArgs {
    let mut args = DmArgs::new(&url, common::SECRET);
    args.senders = 4;
    args.recipients = 5;
    args.devices = 2;
    args.rate = 200.0;
    args.duration = 1.0;
    args.drain = 10.0;
    args.quiet = true;
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_reaches_every_device_and_its_sender_hears_delivered() {
    let node = common::start(|c| c.limits.client_packets_per_sec = 10_000).await;
    let bench = DmBench::new(&args(format!("http://{}", node.local_addr()))).unwrap();
    let report = tokio::time::timeout(Duration::from_secs(30), bench.run())
        .await
        .expect("the bench ends by itself")
        .unwrap();

    assert_eq!(report.connections, 4 + 5 * 2, "{report}");
    assert!(report.connect_failures.is_empty(), "{report}");
    assert_eq!(
        (report.sent, report.accepted, report.unanswered),
        (200, 200, 0),
        "{report}"
    );
    assert!(report.refused.is_empty(), "{report}");
    assert_eq!(
        (report.receipts, report.expected_receipts),
        (400, 400),
        "{report}"
    );
    assert_eq!((report.lost, report.missing_receipts), (0, 0), "{report}");
    assert_eq!(
        (
            report.duplicated_after_ack,
            report.stored_twice,
            report.out_of_order
        ),
        (0, 0, 0),
        "{report}"
    );
    assert_eq!(
        (report.no_delivered_status, report.unparsed),
        (0, 0),
        "{report}"
    );
    assert!(report.accept_ms[0] > 0.0 && report.deliver_ms[2] >= report.deliver_ms[1]);
    assert!(report.delivered_status_ms[1] > 0.0, "{report}");
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_reported_and_nothing_is_sent() {
    let node = common::start(|c| c.limits.client_packets_per_sec = 10_000).await;
    let mut a = args(format!("http://{}", node.local_addr()));
    a.jwt_secret = "a-different-secret-0123456789abcdef".into();
    a.drain = 0.5;
    let report = tokio::time::timeout(Duration::from_secs(30), DmBench::new(&a).unwrap().run())
        .await
        .expect("the bench ends by itself")
        .unwrap();
    assert_eq!(
        report
            .connect_failures
            .get("socket.io connect error: unauthorized"),
        Some(&14),
        "{report}"
    );
    assert_eq!(
        (report.sent, report.accepted, report.receipts),
        (0, 0, 0),
        "{report}"
    );
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_and_restart_during_the_run_loses_and_duplicates_nothing() {
    let dir = std::env::temp_dir().join(format!("tidings-bench-dm-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let node = start_node("127.0.0.1:0", &dir);
    let addr = node.addr;
    let mut a = args(format!("http://{addr}"));
    a.rate = 300.0;
    a.duration = 6.0;
    a.drain = 15.0;
    let bench = DmBench::new(&a).unwrap();
    let killer = {
        let dir = dir.clone();
        tokio::spawn(async move {
            // A third of the way through the sending, then back after a second on the same port and data.
            tokio::time::sleep(Duration::from_secs(2)).await;
            node.kill();
            tokio::time::sleep(Duration::from_secs(1)).await;
            tokio::task::spawn_blocking(move || start_node(&addr.to_string(), &dir))
                .await
                .unwrap()
        })
    };
    let report = tokio::time::timeout(Duration::from_secs(60), bench.run())
        .await
        .expect("the bench ends by itself")
        .unwrap();
    let restarted = killer.await.unwrap();
    eprintln!("{report}");

    assert!(report.connect_failures.is_empty(), "{report}");
    assert!(
        report.reconnects >= report.connections,
        "every connection came back: {report}"
    );
    assert_eq!(
        (report.sent, report.accepted, report.unanswered),
        (1800, 1800, 0),
        "{report}"
    );
    assert!(report.refused.is_empty(), "{report}");
    assert_eq!((report.lost, report.missing_receipts), (0, 0), "{report}");
    assert_eq!(report.receipts, report.expected_receipts, "{report}");
    assert_eq!(
        (
            report.duplicated_after_ack,
            report.stored_twice,
            report.out_of_order
        ),
        (0, 0, 0),
        "{report}"
    );
    drop(restarted);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A `tidings serve --data-dir` process with the bench's limits (`bench/dm-limits.toml`).
fn start_node(listen: &str, dir: &Path) -> DataDirNode {
    let limits = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/dm-limits.toml");
    DataDirNode::start(listen, dir, &["--config".as_ref(), limits.as_os_str()])
}
