//! `tidings bench` against an in-process node: 20 clients (two of them long-polling) over 2 rooms, 20 events a
//! second for one second, every delivery accounted for.

use std::time::Duration;

use tidings::bench::{Bench, BenchArgs};
use tidings::config::Config;

/// HS256 secret of the node under test.
const SECRET: &str = "bench-smoke-jwt-secret-0123456789abcdef";
/// API key of the node under test.
const API_KEY: &str = "bench-smoke-api-key-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_delivers_everything_to_every_client() {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    config.auth.jwt_secret = SECRET.into();
    config.api.keys = vec![API_KEY.into()];
    let node = tidings::server::start(&config).await.unwrap();

    let mut args = BenchArgs::new(&format!("http://{}", node.local_addr()), 20);
    args.rooms = 2;
    args.polling_share = 0.1;
    args.rate = 20.0;
    args.duration = 1.0;
    args.drain = 5.0;
    args.workers = 1;
    args.quiet = true;
    args.jwt_secret = Some(SECRET.into());
    args.api_key = Some(API_KEY.into());
    let bench = Bench::new(&args).unwrap();
    let report = tokio::time::timeout(Duration::from_secs(20), bench.run())
        .await
        .expect("the bench ends by itself")
        .unwrap();

    assert_eq!((report.connected, report.failed), (20, 0), "{report}");
    assert_eq!(report.polling_clients, 2);
    assert_eq!((report.planned, report.accepted), (20, 20), "{report}");
    assert_eq!(report.expected, 20 * 10, "{report}");
    assert_eq!(report.deliveries, report.expected, "{report}");
    assert_eq!(report.delivered_ratio, 1.0);
    assert_eq!(report.recipients_total, Some(200));
    assert_eq!(report.shortfalls(1.0), Vec::<String>::new(), "{report}");
    assert_eq!(
        (report.duplicates, report.out_of_order, report.disconnects),
        (0, 0, 0),
        "{report}"
    );
    assert!(report.p99_ms > 0.0 && report.p99_ms < 1000.0, "{report}");
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_reports_refused_tokens() {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    config.auth.jwt_secret = SECRET.into();
    config.api.keys = vec![API_KEY.into()];
    let node = tidings::server::start(&config).await.unwrap();

    let mut args = BenchArgs::new(&format!("http://{}", node.local_addr()), 3);
    args.rate = 5.0;
    args.duration = 0.2;
    args.drain = 0.5;
    args.workers = 1;
    args.quiet = true;
    args.jwt_secret = Some("a-different-secret-0123456789abcdef".into());
    args.api_key = Some(API_KEY.into());
    let report = Bench::new(&args).unwrap().run().await.unwrap();
    assert_eq!((report.connected, report.failed), (0, 3), "{report}");
    let shortfalls = report.shortfalls(1.0);
    assert!(
        shortfalls[0].contains("3 of 3 clients did not connect"),
        "{shortfalls:?}"
    );
    assert_eq!(
        report.errors.get("socket.io connect error: unauthorized"),
        Some(&3),
        "{report}"
    );
    node.shutdown(Duration::from_secs(1)).await;
}
