//! Ephemeral events across nodes: published on the room's channel (as `e <json>`) without a sequence or a
//! stream entry, in the order this node was given them (one queue, a pipeline of `PUBLISH` per batch), so a
//! client's positions reach members on every node in the order it sent them. Each receiving node hands them to
//! its own members, conflated there when the publisher said so.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::broker::WireEvent;
use super::connection::Redis;
use crate::hub::Conflate;

/// Ephemeral events waiting to be published at most; past it one is dropped and counted
/// (`tidings_ephemeral_dropped_total{where="publish"}`): they are worth nothing late.
pub const MAX_WAITING: usize = 65_536;

/// Events published with one pipeline at most.
const BATCH: usize = 1024;

/// The channel message of an ephemeral event.
#[derive(Serialize, Deserialize)]
pub struct WireEphemeral {
    /// The event.
    #[serde(rename = "v")]
    pub event: WireEvent,
    /// Conflation interval of its room, ms (absent: not conflated).
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    /// Its conflation key.
    #[serde(rename = "k", default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl WireEphemeral {
    /// The conflation it asks for.
    pub fn conflate(&self) -> Option<Conflate> {
        Some(Conflate {
            interval_ms: self.interval_ms?,
            key: self.key.clone()?,
        })
    }

    /// Parses a channel message that is an ephemeral event; `None` for anything else.
    pub fn parse(text: &str) -> Option<Result<WireEphemeral, serde_json::Error>> {
        text.strip_prefix("e ").map(serde_json::from_str)
    }
}

/// Publishes ephemeral events in order.
pub struct EphemeralPublisher {
    queue: mpsc::Sender<(String, String)>,
}

impl EphemeralPublisher {
    /// Starts the publishing task (call from a Tokio runtime).
    pub fn start(redis: Arc<Redis>) -> EphemeralPublisher {
        let (queue, waiting) = mpsc::channel(MAX_WAITING);
        tokio::spawn(publish_loop(redis, waiting));
        EphemeralPublisher { queue }
    }

    /// Queues `event` for `channel`; false when it was dropped (queue full or not serialisable).
    pub fn publish(&self, channel: String, event: &WireEphemeral) -> bool {
        let Ok(json) = serde_json::to_string(event) else {
            return false;
        };
        if self.queue.try_send((channel, format!("e {json}"))).is_err() {
            metrics::counter!("tidings_ephemeral_dropped_total", "where" => "publish").increment(1);
            return false;
        }
        true
    }
}

async fn publish_loop(redis: Arc<Redis>, mut waiting: mpsc::Receiver<(String, String)>) {
    let mut batch = Vec::with_capacity(BATCH);
    while waiting.recv_many(&mut batch, BATCH).await > 0 {
        let mut pipe = redis::pipe();
        for (channel, payload) in &batch {
            pipe.cmd("PUBLISH").arg(channel).arg(payload).ignore();
        }
        let sent = match redis.conn().await {
            Ok(mut conn) => {
                let result: Result<(), _> = pipe.query_async(&mut conn).await;
                redis.observe(result).await
            }
            Err(error) => Err(error),
        };
        match sent {
            Ok(()) => {
                metrics::counter!("tidings_ephemeral_published_total").increment(batch.len() as u64)
            }
            Err(error) => {
                metrics::counter!("tidings_ephemeral_dropped_total", "where" => "publish")
                    .increment(batch.len() as u64);
                tracing::debug!(%error, "ephemeral events not published");
            }
        }
        batch.clear();
    }
}
