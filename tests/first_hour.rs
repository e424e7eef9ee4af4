//! What a new user meets first, over real sockets: every HTTP error is JSON with a code and a message that
//! says what to fix; refused client tokens and API keys are logged at INFO with their reason (rate-limited,
//! never the credential) and counted by reason; `GET /v1/nodes/pick` needs no API key and is rate-limited per
//! address.
//!
//! Its own test binary: it installs the process's global log subscriber to read what the server wrote.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{connect_packet, metric, process_metrics, start, Api, WsClient, API_KEY, WAIT};
use serde_json::{json, Value};

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

/// The process's log, captured from the first call on.
fn log() -> &'static Captured {
    static LOG: OnceLock<Captured> = OnceLock::new();
    LOG.get_or_init(|| {
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
        log
    })
}

fn log_lines(containing: &str) -> Vec<String> {
    String::from_utf8_lossy(&log().0.lock().unwrap())
        .lines()
        .filter(|l| l.contains(containing))
        .map(str::to_owned)
        .collect()
}

/// A request with any method, path and headers; the status and the body as JSON (`Null` when it is not).
async fn request(
    addr: std::net::SocketAddr,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Asserts a JSON error `{"error":{code,message}}` and gives its message.
fn error(reply: &(u16, Value), status: u16, code: &str) -> String {
    assert_eq!(reply.0, status, "{}", reply.1);
    assert_eq!(reply.1["error"]["code"], code, "{}", reply.1);
    let message = reply.1["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(!message.is_empty(), "{}", reply.1);
    message
}

const KEY: (&str, &str) = (
    "authorization",
    "Bearer integration-test-api-key-0123456789",
);

#[tokio::test]
async fn unknown_routes_methods_and_queries_are_json_errors() {
    log();
    assert_eq!(KEY.1, format!("Bearer {API_KEY}"));
    let node = start(|_| {}).await;
    let addr = node.local_addr();
    use reqwest::Method;

    let reply = request(addr, Method::GET, "/nope", &[], None).await;
    assert!(error(&reply, 404, "not_found").contains("GET /nope"));
    let reply = request(addr, Method::GET, "/v1/nothing-here", &[KEY], None).await;
    error(&reply, 404, "not_found");
    let reply = request(addr, Method::GET, "/v1/publish", &[KEY], None).await;
    assert!(error(&reply, 405, "method_not_allowed").contains("GET"));
    let reply = request(addr, Method::DELETE, "/healthz", &[], None).await;
    error(&reply, 405, "method_not_allowed");

    let reply = request(
        addr,
        Method::GET,
        "/v1/rooms/news/history?limit=ten",
        &[KEY],
        None,
    )
    .await;
    assert!(error(&reply, 400, "invalid_query").contains("limit"));
    let reply = request(
        addr,
        Method::GET,
        "/v1/rooms/news/history?limit=0",
        &[KEY],
        None,
    )
    .await;
    assert!(error(&reply, 400, "invalid_query").contains("limit"));
    let reply = request(
        addr,
        Method::GET,
        "/v1/users/bob/messages?limit=0",
        &[KEY],
        None,
    )
    .await;
    error(&reply, 400, "invalid_query");
    let reply = request(
        addr,
        Method::GET,
        "/v1/users/bob/messages?since=-1",
        &[KEY],
        None,
    )
    .await;
    assert!(error(&reply, 400, "invalid_query").contains("since"));
    let reply = request(
        addr,
        Method::GET,
        "/v1/rooms/news/history?limit=5",
        &[KEY],
        None,
    )
    .await;
    assert_eq!(reply.0, 200, "{}", reply.1);
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn batch_errors_name_the_event() {
    log();
    let node = start(|_| {}).await;
    let addr = node.local_addr();
    let good = json!({ "room": "news", "event": "update", "data": 1 });
    let body = json!({ "events": [good, good, { "room": "bad room", "event": "update" }] });
    let reply = request(
        addr,
        reqwest::Method::POST,
        "/v1/publish/batch",
        &[KEY],
        Some(body),
    )
    .await;
    let message = error(&reply, 400, "invalid_room");
    assert!(message.starts_with("events[2]: "), "{message}");

    let body = json!({ "events": [good, { "room": 7, "event": "update" }] });
    let reply = request(
        addr,
        reqwest::Method::POST,
        "/v1/publish/batch",
        &[KEY],
        Some(body),
    )
    .await;
    let message = error(&reply, 400, "invalid_body");
    assert!(
        message.starts_with("events[1].room: invalid type"),
        "{message}"
    );
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn refused_api_keys_say_why_are_counted_by_reason_and_logged_without_the_key() {
    log();
    let node = start(|_| {}).await;
    let addr = node.local_addr();
    let before = process_metrics().await;
    let body = Some(json!({ "room": "news", "event": "update" }));
    let post = |headers: &'static [(&'static str, &'static str)]| {
        let body = body.clone();
        async move { request(addr, reqwest::Method::POST, "/v1/publish", headers, body).await }
    };

    let message = error(&post(&[]).await, 401, "unauthorized");
    assert!(
        message.contains("missing Authorization header"),
        "{message}"
    );
    let reply = post(&[("authorization", "integration-test-api-key-0123456789")]).await;
    assert!(error(&reply, 401, "unauthorized").contains("Bearer"));
    let reply = post(&[("authorization", "Basic dXNlcjpwYXNz")]).await;
    assert!(error(&reply, 401, "unauthorized").contains("Bearer"));
    const WRONG: &str = "Bearer wrong-key-that-must-not-be-logged";
    for _ in 0..20 {
        let reply = post(&[("authorization", WRONG)]).await;
        assert_eq!(error(&reply, 401, "unauthorized"), "invalid API key");
    }
    // The scheme's case does not matter.
    let reply = post(&[(
        "authorization",
        "bearer integration-test-api-key-0123456789",
    )])
    .await;
    assert_eq!(reply.0, 200, "{}", reply.1);

    let after = process_metrics().await;
    let count = |text: &str, reason: &str| {
        metric(
            text,
            &format!("tidings_api_unauthorized_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(count(&after, "missing") - count(&before, "missing"), 1.0);
    assert_eq!(
        count(&after, "not_bearer") - count(&before, "not_bearer"),
        2.0
    );
    assert_eq!(
        count(&after, "wrong_key") - count(&before, "wrong_key"),
        20.0
    );

    let lines = log_lines("API request refused");
    assert!(!lines.is_empty(), "no INFO line for a refused key");
    assert!(
        lines[0].contains("INFO") && lines[0].contains("reason=missing"),
        "{lines:?}"
    );
    assert!(
        lines.len() <= 5,
        "23 refusals within a few seconds make at most one line a second: {lines:?}"
    );
    let all = String::from_utf8_lossy(&log().0.lock().unwrap()).into_owned();
    assert!(
        !all.contains("wrong-key-that-must-not-be-logged"),
        "the key was logged"
    );
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn refused_client_tokens_are_logged_and_counted_by_reason() {
    log();
    let node = start(|_| {}).await;
    let addr = node.local_addr();
    let before = process_metrics().await;
    let forged = tidings::auth::mint_token(
        "another-secret-entirely-0123456789abcdef",
        "mallory",
        &[],
        &[],
        &[],
        60,
    )
    .unwrap();
    let mut client = WsClient::handshake(addr).await;
    client.send_text(&connect_packet(&forged));
    let reply = client
        .recv_until(|f| f.text().is_some_and(|t| t.starts_with("44")), WAIT)
        .await;
    assert!(reply.text().unwrap().contains("unauthorized"), "{reply:?}");

    let after = process_metrics().await;
    let series = "tidings_auth_failures_total{reason=\"bad_signature\"}";
    assert_eq!(metric(&after, series) - metric(&before, series), 1.0);
    let lines = log_lines("client refused");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("INFO") && l.contains("reason=bad_signature")),
        "{lines:?}"
    );
    let all = String::from_utf8_lossy(&log().0.lock().unwrap()).into_owned();
    assert!(!all.contains(&forged), "the token was logged");
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn clients_pick_a_node_without_a_key_within_a_rate() {
    log();
    let node = start(|c| {
        c.limits.handshakes_per_sec_per_ip = 1;
        c.limits.handshake_burst_per_ip = 3;
    })
    .await;
    let addr = node.local_addr();
    let api = Api::new(addr);
    // The client flow costs no handshake budget: the picks have their own.
    let mut answers = Vec::new();
    for _ in 0..5 {
        answers.push(request(addr, reqwest::Method::GET, "/v1/nodes/pick", &[], None).await);
    }
    let (status, pick) = &answers[0];
    assert_eq!(*status, 200, "{pick}");
    assert_eq!(pick["url"], format!("http://{addr}"));
    let id = pick["id"].as_str().unwrap().to_owned();
    assert!(answers[..3].iter().all(|(s, _)| *s == 200), "{answers:?}");
    assert_eq!(
        answers.iter().filter(|(s, _)| *s == 429).count(),
        2,
        "past the burst: {answers:?}"
    );
    error(&answers[4], 429, "rate_limited");
    // The node listing still needs the key.
    let reply = request(addr, reqwest::Method::GET, "/v1/nodes", &[], None).await;
    error(&reply, 401, "unauthorized");
    assert_eq!(api.get("/v1/nodes").await.0, 200);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let path = format!("/v1/nodes/pick?exclude={id}");
    let reply = request(addr, reqwest::Method::GET, &path, &[], None).await;
    error(&reply, 503, "no_node_available");
    node.shutdown(Duration::from_millis(200)).await;
}

/// Runs the `tidings` binary with `args` (no `TIDINGS_*` from the test's environment); exit success, stdout,
/// stderr.
fn tidings(args: &[&str]) -> (bool, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tidings"));
    command.args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("TIDINGS_") {
            command.env_remove(name);
        }
    }
    let out = command.output().expect("cannot run tidings");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_refuses_to_start_without_secrets_and_fails_on_shortfalls() {
    log();
    let (ok, _, err) = tidings(&["bench", "--url", "http://127.0.0.1:9", "--clients", "1"]);
    assert!(!ok && err.contains("--jwt-secret"), "{err}");
    let (ok, _, err) = tidings(&[
        "bench",
        "--url",
        "http://127.0.0.1:9",
        "--clients",
        "1",
        "--jwt-secret",
        "s",
    ]);
    assert!(!ok && err.contains("--api-key"), "{err}");

    // Every client refused (wrong secret): the report is printed, and the exit status says it fell short.
    let node = start(|_| {}).await;
    let url = format!("http://{}", node.local_addr());
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        tidings(&[
            "bench",
            "--url",
            &url,
            "--clients",
            "2",
            "--rate",
            "5",
            "--duration",
            "0.2",
            "--drain",
            "0.3",
            "--workers",
            "1",
            "--quiet",
            "--jwt-secret",
            "a-different-secret-0123456789abcdef",
            "--api-key",
            API_KEY,
        ])
    })
    .await
    .unwrap();
    assert!(!ok, "exit 0 although no client connected\n{out}\n{err}");
    assert!(
        out.contains("expected (ratio"),
        "the report is still printed: {out}"
    );
    assert!(err.contains("2 of 2 clients did not connect"), "{err}");
    node.shutdown(Duration::from_millis(200)).await;
}
