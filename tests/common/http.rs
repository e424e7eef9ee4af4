//! HTTP clients: the API of a node, and an Engine.IO long-polling session.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::{connect_packet, API_KEY, WAIT};

/// The HTTP API of a node.
#[derive(Clone)]
pub struct Api {
    /// The HTTP client (keeps connections alive).
    pub http: reqwest::Client,
    /// `http://addr`.
    pub base: String,
}

impl Api {
    /// The API of the node at `addr`.
    pub fn new(addr: SocketAddr) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: format!("http://{addr}"),
        }
    }

    /// POSTs `body` to `path` with the test API key; returns the status and the body parsed as JSON
    /// (`Value::Null` when it is not JSON).
    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        self.post_with_key(path, Some(API_KEY), body).await
    }

    /// POSTs `body` with the given API key (or none).
    pub async fn post_with_key(
        &self,
        path: &str,
        key: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// GETs `path` with the test API key; returns the status and the body as text.
    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// Polls GET `path` (which must answer 200) until `done` holds for the answer; panics after `within`.
    pub async fn wait_for(
        &self,
        path: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (status, reply) = self.get(path).await;
            assert_eq!(status, 200, "{reply}");
            if done(&reply) {
                return reply;
            }
            assert!(Instant::now() < deadline, "{path}: still {reply}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// GETs `path` with the test API key; returns the status and the JSON body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let (status, text) = self.get_text(path).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Publishes `event` with `data` to `room`; asserts a 200 and returns the reply.
    pub async fn publish(&self, room: &str, event: &str, data: Value) -> Value {
        let body = serde_json::json!({ "room": room, "event": event, "data": data });
        let (status, reply) = self.post("/v1/publish", body.to_string()).await;
        assert_eq!(status, 200, "publish refused: {reply}");
        reply
    }

    /// `connections` from `/healthz`.
    pub async fn connections(&self) -> u64 {
        let (status, health) = self.get("/healthz").await;
        assert_eq!(status, 200);
        health["connections"].as_u64().unwrap()
    }

    /// Waits until `/healthz` reports `n` connections; panics after `timeout`.
    pub async fn wait_connections(&self, n: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.connections().await;
            if now == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "connections stayed at {now}, expected {n}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A long-polling Engine.IO session driven with reqwest.
pub struct Polling {
    /// The HTTP client.
    pub http: reqwest::Client,
    /// `http://addr/socket.io/`.
    pub endpoint: String,
    /// The session id.
    pub sid: String,
    /// The open packet's JSON.
    pub open: Value,
}

impl Polling {
    /// Performs the polling handshake.
    pub async fn handshake(addr: SocketAddr) -> Polling {
        let http = reqwest::Client::new();
        let endpoint = format!("http://{addr}/socket.io/");
        let response = http
            .get(format!("{endpoint}?EIO=4&transport=polling"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let body = response.text().await.unwrap();
        let open: Value = serde_json::from_str(body.strip_prefix('0').unwrap()).unwrap();
        let sid = open["sid"].as_str().unwrap().to_owned();
        Polling {
            http,
            endpoint,
            sid,
            open,
        }
    }

    fn url(&self) -> String {
        format!("{}?EIO=4&transport=polling&sid={}", self.endpoint, self.sid)
    }

    /// POSTs a payload; returns the status and body.
    pub async fn post(&self, body: impl Into<reqwest::Body>) -> (u16, String) {
        let response = self
            .http
            .post(self.url())
            .header("content-type", "text/plain;charset=UTF-8")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// GETs (long-polls); returns the status and body.
    pub async fn get(&self) -> (u16, String) {
        let response = self.http.get(self.url()).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// Sends a CONNECT with `token` and polls for the reply; returns its JSON.
    pub async fn socketio_connect(&self, token: &str) -> Value {
        let (status, body) = self.post(connect_packet(token)).await;
        assert_eq!((status, body.as_str()), (200, "ok"));
        let (status, body) = tokio::time::timeout(WAIT, self.get()).await.unwrap();
        assert_eq!(status, 200);
        let reply = body
            .split('\x1e')
            .find(|p| p.starts_with("40"))
            .unwrap_or_else(|| panic!("no connect reply in {body:?}"));
        serde_json::from_str(&reply[2..]).unwrap()
    }
}
