//! Reading room history back from Redis streams (recovery, catch-up after a lost subscription, the history API).

use redis::streams::StreamRangeReply;

use super::broker::WireEvent;
use super::keys::Keys;
use super::Redis;
use crate::hub::RoomKey;

/// One event read from a room stream.
#[derive(Debug, Clone)]
pub struct StreamEvent {
    /// Cluster-wide sequence.
    pub seq: u64,
    /// Publish time, ms since the Unix epoch.
    pub at_ms: u64,
    /// The event.
    pub event: WireEvent,
}

/// Events of `room` with a sequence above `after`, oldest first, at most `limit`.
pub async fn read_after(
    redis: &Redis,
    keys: &Keys,
    room: &RoomKey,
    after: u64,
    limit: usize,
) -> Result<Vec<StreamEvent>, redis::RedisError> {
    let mut cmd = redis::cmd("XRANGE");
    cmd.arg(keys.stream(room))
        .arg(format!("(0-{after}"))
        .arg("+")
        .arg("COUNT")
        .arg(limit.max(1));
    let reply: StreamRangeReply = redis.run(&cmd).await?;
    let mut events = Vec::with_capacity(reply.ids.len());
    for entry in reply.ids {
        let Some(seq) = entry.id.strip_prefix("0-").and_then(|s| s.parse().ok()) else {
            continue;
        };
        let payload: Option<String> = entry.get("p");
        let at_ms: u64 = entry.get("t").unwrap_or(0);
        if let Some(event) = payload.and_then(|p| serde_json::from_str(&p).ok()) {
            events.push(StreamEvent { seq, at_ms, event });
        }
    }
    Ok(events)
}

/// True when events of `room` with a sequence above `after` were trimmed away (history no longer covers
/// that position).
pub async fn trimmed_after(
    redis: &Redis,
    keys: &Keys,
    room: &RoomKey,
    after: u64,
) -> Result<bool, redis::RedisError> {
    let mut cmd = redis::cmd("XINFO");
    cmd.arg("STREAM").arg(keys.stream(room));
    let info: redis::Value = match redis.run(&cmd).await {
        Ok(info) => info,
        // No stream: no event in the retention window, so nothing was missed.
        Err(error) if error.code() == Some("ERR") => return Ok(false),
        Err(error) => return Err(error),
    };
    let max_deleted = stream_info_field(&info, "max-deleted-entry-id")
        .and_then(|id| id.strip_prefix("0-").and_then(|s| s.parse::<u64>().ok()))
        .unwrap_or(0);
    Ok(max_deleted > after)
}

fn stream_info_field(info: &redis::Value, name: &str) -> Option<String> {
    let pairs: Vec<(String, redis::Value)> = match info {
        redis::Value::Map(map) => map
            .iter()
            .filter_map(|(k, v)| {
                redis::from_redis_value::<String>(k)
                    .ok()
                    .map(|k| (k, v.clone()))
            })
            .collect(),
        redis::Value::Array(items) => items
            .chunks(2)
            .filter_map(|pair| match pair {
                [k, v] => redis::from_redis_value::<String>(k)
                    .ok()
                    .map(|k| (k, v.clone())),
                _ => None,
            })
            .collect(),
        _ => return None,
    };
    pairs
        .into_iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| redis::from_redis_value::<String>(&v).ok())
}

/// A page of a room's history for the API and the `history` client event (see
/// [`crate::history::read_page`]); `complete` is false when events after `since` were trimmed.
pub async fn read_page(
    redis: &Redis,
    keys: &Keys,
    room: &RoomKey,
    since: u64,
    limit: usize,
) -> Result<crate::history::HistoryPage, redis::RedisError> {
    let limit = limit.clamp(1, crate::history::MAX_PAGE);
    let complete = !trimmed_after(redis, keys, room, since).await?;
    let events = read_after(redis, keys, room, since, limit).await?;
    let epoch: Option<String> = redis.run(redis::cmd("GET").arg(keys.epoch())).await?;
    Ok(crate::history::HistoryPage {
        epoch: epoch.unwrap_or_default(),
        complete,
        events: events
            .iter()
            .map(|e| {
                let mut view = serde_json::json!({
                    "offset": e.seq.to_string(),
                    "at": e.at_ms,
                    "event": e.event.name,
                    "data": serde_json::from_str::<serde_json::Value>(e.event.data.get()).unwrap_or_default(),
                });
                if !e.event.attachments.is_empty() {
                    view["attachments"] = e.event.attachments.clone().into();
                }
                view
            })
            .collect(),
    })
}
