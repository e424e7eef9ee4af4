//! Operator-facing hardening over real sockets and a real `tidings` process: CORS answers to browser origins,
//! where `/metrics` and `/stats` are served and whether they need the API key, and the refusal of short secrets.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{start, API_KEY};

const POLLING_HANDSHAKE: &str = "/socket.io/?EIO=4&transport=polling";

/// The CORS headers of a request to `path` on `addr` from `origin`: (allow-origin, allow-credentials).
async fn cors(
    addr: std::net::SocketAddr,
    method: reqwest::Method,
    path: &str,
    origin: &str,
) -> (u16, Option<String>, Option<String>) {
    let response = reqwest::Client::new()
        .request(method, format!("http://{addr}{path}"))
        .header("origin", origin)
        .send()
        .await
        .unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    (
        response.status().as_u16(),
        header("access-control-allow-origin"),
        header("access-control-allow-credentials"),
    )
}

#[tokio::test]
async fn by_default_any_origin_is_allowed_without_credentials() {
    let node = start(|_| {}).await;
    let addr = node.local_addr();
    for method in [reqwest::Method::GET, reqwest::Method::OPTIONS] {
        let (status, origin, credentials) = cors(
            addr,
            method.clone(),
            POLLING_HANDSHAKE,
            "https://evil.example",
        )
        .await;
        assert!(status == 200 || status == 204, "{method}: {status}");
        assert_eq!(origin.as_deref(), Some("*"), "{method}");
        assert_eq!(credentials, None, "{method}: no credentials for any origin");
    }
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn credentials_only_for_listed_origins() {
    let node = start(|c| {
        c.engine.cors_origins = vec!["https://app.example".into()];
        c.engine.cors_credentials = true;
    })
    .await;
    let addr = node.local_addr();
    for method in [reqwest::Method::GET, reqwest::Method::OPTIONS] {
        let (_, origin, credentials) = cors(
            addr,
            method.clone(),
            POLLING_HANDSHAKE,
            "https://app.example",
        )
        .await;
        assert_eq!(origin.as_deref(), Some("https://app.example"), "{method}");
        assert_eq!(credentials.as_deref(), Some("true"), "{method}");
        let (_, origin, credentials) = cors(
            addr,
            method.clone(),
            POLLING_HANDSHAKE,
            "https://evil.example",
        )
        .await;
        assert_eq!((origin, credentials), (None, None), "{method}");
    }
    node.shutdown(Duration::from_millis(200)).await;

    // A listed origin without `cors_credentials` gets its name back, but no credentials.
    let node = start(|c| c.engine.cors_origins = vec!["https://app.example".into()]).await;
    let (_, origin, credentials) = cors(
        node.local_addr(),
        reqwest::Method::GET,
        POLLING_HANDSHAKE,
        "https://app.example",
    )
    .await;
    assert_eq!(origin.as_deref(), Some("https://app.example"));
    assert_eq!(credentials, None);
    node.shutdown(Duration::from_millis(200)).await;
}

/// The status of `GET path` on `addr`, with `key` as bearer token when given.
async fn status(addr: std::net::SocketAddr, path: &str, key: Option<&str>) -> u16 {
    let mut request = reqwest::Client::new().get(format!("http://{addr}{path}"));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn admin_endpoints_on_the_main_port_by_default_optionally_behind_the_key() {
    let node = start(|_| {}).await;
    let addr = node.local_addr();
    assert_eq!(node.admin_addr(), None);
    for path in ["/metrics", "/stats", "/healthz"] {
        assert_eq!(status(addr, path, None).await, 200, "{path}");
    }
    node.shutdown(Duration::from_millis(200)).await;

    let node = start(|c| c.admin.require_api_key = true).await;
    let addr = node.local_addr();
    for path in ["/metrics", "/stats"] {
        assert_eq!(status(addr, path, None).await, 401, "{path}");
        assert_eq!(status(addr, path, Some("wrong-key-0123456789")).await, 401);
        assert_eq!(status(addr, path, Some(API_KEY)).await, 200, "{path}");
    }
    assert_eq!(
        status(addr, "/healthz", None).await,
        200,
        "health stays open"
    );
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_separate_admin_listener_takes_metrics_and_stats_off_the_main_port() {
    let node = start(|c| c.admin.listen = "127.0.0.1:0".into()).await;
    let main = node.local_addr();
    let admin = node.admin_addr().expect("admin listener");
    assert_ne!(main, admin);
    for path in ["/metrics", "/stats"] {
        assert_eq!(
            status(main, path, None).await,
            404,
            "{path} on the main port"
        );
        assert_eq!(
            status(admin, path, None).await,
            200,
            "{path} on the admin port"
        );
    }
    assert_eq!(status(main, "/healthz", None).await, 200);
    assert_eq!(status(admin, "/healthz", None).await, 200);
    // The admin port serves nothing else: no API, no Socket.IO.
    assert_eq!(status(admin, "/v1/rooms", Some(API_KEY)).await, 404);
    assert_eq!(status(admin, POLLING_HANDSHAKE, None).await, 404);
    assert_eq!(status(main, "/v1/rooms", Some(API_KEY)).await, 200);
    let text = reqwest::get(format!("http://{admin}/stats"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("\"sockets\""), "{text}");
    node.shutdown(Duration::from_millis(200)).await;

    let node = start(|c| {
        c.admin.listen = "127.0.0.1:0".into();
        c.admin.require_api_key = true;
    })
    .await;
    let admin = node.admin_addr().unwrap();
    assert_eq!(status(admin, "/metrics", None).await, 401);
    assert_eq!(status(admin, "/metrics", Some(API_KEY)).await, 200);
    assert_eq!(status(admin, "/healthz", None).await, 200);
    // Stopping the node stops the admin listener too.
    node.shutdown(Duration::from_millis(200)).await;
    assert!(reqwest::get(format!("http://{admin}/healthz"))
        .await
        .is_err());
}

/// A `tidings serve` process on a random port with `args`; its stderr, and whether it started listening.
fn serve(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("TIDINGS_JWT_SECRET")
        .env_remove("TIDINGS_API_KEY")
        .env_remove("TIDINGS_INSECURE_DEV_SECRETS")
        .env_remove("TIDINGS_CONFIG")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
    let listening = line.starts_with("tidings listening on http://127.0.0.1:");
    if listening {
        let _ = child.kill();
    }
    let output = child.wait_with_output().unwrap();
    (
        listening,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn short_secrets_are_refused_unless_insecure_dev_secrets() {
    let (listening, stderr) = serve(&["--jwt-secret", "dev-secret", "--api-key", "dev-key"], &[]);
    assert!(!listening);
    assert!(
        stderr.contains(
            "auth.jwt_secret: the HS256 secret is 10 bytes; it must be at least 32 bytes"
        ) && stderr.contains("--insecure-dev-secrets"),
        "{stderr}"
    );
    let long_secret = "0123456789abcdef0123456789abcdef";
    let (listening, stderr) = serve(&["--jwt-secret", long_secret, "--api-key", "dev-key"], &[]);
    assert!(!listening);
    assert!(
        stderr.contains("api.keys: an API key is 7 bytes; API keys must be at least 16 bytes"),
        "{stderr}"
    );
    let (listening, stderr) = serve(
        &["--jwt-secret", long_secret, "--api-key", "0123456789abcdef"],
        &[],
    );
    assert!(listening, "{stderr}");
    let (listening, stderr) = serve(
        &[
            "--jwt-secret",
            "dev-secret",
            "--api-key",
            "dev-key",
            "--insecure-dev-secrets",
        ],
        &[],
    );
    assert!(listening, "{stderr}");
    assert!(stderr.contains("insecure_dev_secrets is on"), "{stderr}");
    let (listening, stderr) = serve(
        &["--jwt-secret", "dev-secret", "--api-key", "dev-key"],
        &[("TIDINGS_INSECURE_DEV_SECRETS", "1")],
    );
    assert!(listening, "{stderr}");
    // The generated development secrets are long enough.
    let (listening, stderr) = serve(&[], &[]);
    assert!(listening, "{stderr}");
    assert!(stderr.contains("generated development secrets"), "{stderr}");
}
