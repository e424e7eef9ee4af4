//! A crowd of misbehaving clients cannot flood the log: their closes are logged at debug level, with at most one
//! warning per `limits.misbehaviour_log_interval_secs`, and every one is still counted in the metrics.
//!
//! Its own test binary: it installs the process's global log subscriber to read what the server wrote.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{metric, process_metrics, start, RawWs, WAIT};

/// Everything the server logs at info level and above, as text.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

const BAD_CLIENTS: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_protocol_errors_make_one_warning() {
    let log = Captured::default();
    let writer = log.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    )
    .unwrap();
    let node = start(|_| {}).await;
    let before = process_metrics().await;
    for _ in 0..BAD_CLIENTS {
        // "x" is no Engine.IO packet type: a protocol error.
        let mut client = RawWs::handshake(node.local_addr()).await;
        client.write_raw(&RawWs::frame(0x1, b"x")).await;
        assert_eq!(client.expect_closed(WAIT).await, Some(1002));
    }
    let after = process_metrics().await;
    let delta = |series: &str| metric(&after, series) - metric(&before, series);
    assert_eq!(
        delta("tidings_sessions_closed_total{reason=\"protocol_error\"}"),
        BAD_CLIENTS as f64,
        "every close is counted"
    );
    assert_eq!(
        delta("tidings_log_lines_suppressed_total"),
        (BAD_CLIENTS - 1) as f64
    );
    let lines: Vec<String> = log
        .lines()
        .into_iter()
        .filter(|l| l.contains("clos"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains("WARN")
            && lines[0].contains("protocol error")
            && lines[0].contains("suppressed=0"),
        "{}",
        lines[0]
    );
    node.shutdown(Duration::from_millis(200)).await;
}
