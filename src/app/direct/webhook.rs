//! The backend's webhook: status changes of direct messages, and "this user is offline with undelivered
//! messages" — what a backend needs to send a mobile push only when the user is really away.
//!
//! Each event is one `POST` of JSON to `messages.webhook_url`, signed: `X-Tidings-Timestamp` (seconds) and
//! `X-Tidings-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" under messages.webhook_secret>`.
//! Any 2xx answer delivers it; anything else (or no answer within the timeout) is retried with exponential
//! backoff, at least once while the node runs. Events go out in order; while the receiver is down they wait in
//! a bounded queue (past it the newest are dropped and counted).

use std::time::Duration;

use axum::body::Body;
use http::{Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ring::hmac;
use tokio::sync::mpsc;

/// Where and how events are posted.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// `http://` URL the events are posted to.
    pub url: String,
    /// Shared secret of the signature.
    pub secret: String,
    /// Time one attempt may take.
    pub timeout: Duration,
    /// Attempts per event before it is given up (and counted).
    pub max_attempts: u32,
    /// Longest pause between two attempts.
    pub max_backoff: Duration,
    /// Events waiting at most.
    pub queue: usize,
}

/// A running webhook sender.
pub struct Webhook {
    events: mpsc::Sender<serde_json::Value>,
}

impl Webhook {
    /// Starts the sender task.
    pub fn start(config: WebhookConfig) -> Webhook {
        let (events, rx) = mpsc::channel(config.queue.max(1));
        tokio::spawn(run(config, rx));
        Webhook { events }
    }

    /// Queues an event (`type` plus its fields); dropped and counted when the queue is full.
    pub fn send(&self, event: serde_json::Value) {
        if self.events.try_send(event).is_err() {
            metrics::counter!("tidings_webhook_dropped_total", "reason" => "queue_full")
                .increment(1);
        }
    }
}

/// The signature header value of `body` sent at `timestamp`.
pub fn signature(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

async fn run(config: WebhookConfig, mut events: mpsc::Receiver<serde_json::Value>) {
    let client: Client<HttpConnector, Body> = Client::builder(TokioExecutor::new()).build_http();
    while let Some(event) = events.recv().await {
        let body = event.to_string();
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            match post(&client, &config, &body).await {
                Ok(()) => {
                    metrics::counter!("tidings_webhook_delivered_total").increment(1);
                    break;
                }
                Err(error) if attempt >= config.max_attempts => {
                    metrics::counter!("tidings_webhook_dropped_total", "reason" => "attempts")
                        .increment(1);
                    tracing::warn!(%error, attempts = attempt, "webhook event given up");
                    break;
                }
                Err(error) => {
                    metrics::counter!("tidings_webhook_retries_total").increment(1);
                    tracing::debug!(%error, attempt, "webhook attempt failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(config.max_backoff);
                    attempt += 1;
                }
            }
        }
    }
}

async fn post(
    client: &Client<HttpConnector, Body>,
    config: &WebhookConfig,
    body: &str,
) -> Result<(), String> {
    let timestamp = crate::messages::now_ms() / 1000;
    let request = Request::builder()
        .method(Method::POST)
        .uri(&config.url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("x-tidings-timestamp", timestamp)
        .header(
            "x-tidings-signature",
            signature(&config.secret, timestamp, body.as_bytes()),
        )
        .body(Body::from(body.to_owned()))
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(config.timeout, client.request(request))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("answered {}", response.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_cover_timestamp_and_body() {
        let a = signature("s", 1, b"{}");
        assert!(a.starts_with("sha256=") && a.len() == 7 + 64);
        assert_ne!(a, signature("s", 2, b"{}"));
        assert_ne!(a, signature("s", 1, b"{ }"));
        assert_ne!(a, signature("t", 1, b"{}"));
        assert_eq!(a, signature("s", 1, b"{}"));
    }
}
