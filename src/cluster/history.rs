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

/// Reads a stream's `max-deleted-entry-id` in one call, `false` when the stream does not exist (asking
/// `XINFO STREAM` of a missing key is an error reply, which would count as a Redis failure in the metrics).
const MAX_DELETED_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
for i = 1, #info, 2 do
  if info[i] == 'max-deleted-entry-id' then return info[i + 1] end
end
return false
";

static MAX_DELETED: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(MAX_DELETED_LUA));

/// True when events of `room` with a sequence above `after` were trimmed away (history no longer covers
/// that position).
pub async fn trimmed_after(
    redis: &Redis,
    keys: &Keys,
    room: &RoomKey,
    after: u64,
) -> Result<bool, redis::RedisError> {
    let mut invocation = MAX_DELETED.prepare_invoke();
    invocation.key(keys.stream(room));
    // No stream: no event in the retention window, so nothing was missed.
    let max_deleted: Option<String> = redis.run_script(&invocation).await?;
    let max_deleted = max_deleted
        .and_then(|id| id.strip_prefix("0-").and_then(|s| s.parse::<u64>().ok()))
        .unwrap_or(0);
    Ok(max_deleted > after)
}

/// Events read for a page, with how the read ended.
struct PageRead {
    events: Vec<StreamEvent>,
    more: bool,
    cut: bool,
}

/// First XRANGE chunk of a budgeted read: small, so a stream of large events is not read far past the budget.
const FIRST_CHUNK: usize = 8;
/// Largest XRANGE chunk of a budgeted read.
const MAX_CHUNK: usize = 128;

/// Events of `room` after `after` within `limit`, read in XRANGE chunks: each chunk is sized from the budget
/// left and the mean size seen so far, and the budget is checked on every entry before it is kept, so at
/// most one chunk is read past it. Entry cost: its stored payload plus [`crate::history::VIEW_OVERHEAD`],
/// the same measure the embedded store uses.
async fn read_within(
    redis: &Redis,
    keys: &Keys,
    room: &RoomKey,
    mut after: u64,
    limit: crate::history::ReadLimit,
) -> Result<PageRead, redis::RedisError> {
    let mut read = PageRead {
        events: Vec::new(),
        more: false,
        cut: false,
    };
    let (mut used, mut seen_bytes, mut seen) = (0usize, 0usize, 0usize);
    loop {
        // One entry past the event limit tells whether more follow.
        let wanted = limit.events - read.events.len() + 1;
        let by_budget = match seen {
            0 => FIRST_CHUNK,
            _ => (limit.bytes.saturating_sub(used) / (seen_bytes / seen).max(1)).saturating_add(1),
        };
        let count = wanted.min(by_budget).clamp(1, MAX_CHUNK);
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(keys.stream(room))
            .arg(format!("(0-{after}"))
            .arg("+")
            .arg("COUNT")
            .arg(count);
        let reply: StreamRangeReply = redis.run(&cmd).await?;
        let got = reply.ids.len();
        for entry in reply.ids {
            let Some(seq) = entry.id.strip_prefix("0-").and_then(|s| s.parse().ok()) else {
                continue;
            };
            after = seq;
            let payload: Option<String> = entry.get("p");
            let at_ms: u64 = entry.get("t").unwrap_or(0);
            let Some(payload) = payload else { continue };
            let size = payload.len() + crate::history::VIEW_OVERHEAD;
            seen += 1;
            seen_bytes += size;
            if read.events.len() >= limit.events {
                read.more = true;
                return Ok(read);
            }
            if !read.events.is_empty() && used.saturating_add(size) > limit.bytes {
                read.more = true;
                read.cut = true;
                return Ok(read);
            }
            if let Ok(event) = serde_json::from_str(&payload) {
                used += size;
                read.events.push(StreamEvent { seq, at_ms, event });
            }
        }
        if got < count {
            return Ok(read);
        }
    }
}

/// A page of a room's history for the API and the `history` client event (see
/// [`crate::history::read_page`]); `complete` is false when events after `since` were trimmed.
pub async fn read_page(
    redis: &Redis,
    keys: &Keys,
    room: &RoomKey,
    since: u64,
    limit: crate::history::ReadLimit,
) -> Result<crate::history::HistoryPage, redis::RedisError> {
    let limit = crate::history::ReadLimit {
        events: limit.events.clamp(1, crate::history::MAX_PAGE),
        ..limit
    };
    let complete = !trimmed_after(redis, keys, room, since).await?;
    let read = read_within(redis, keys, room, since, limit).await?;
    let epoch: Option<String> = redis.run(redis::cmd("GET").arg(keys.epoch())).await?;
    Ok(crate::history::HistoryPage {
        epoch: epoch.unwrap_or_default(),
        complete,
        more: read.more,
        truncated: read.cut,
        events: read.events.iter().map(describe).collect(),
    })
}

/// The JSON view of a stream event, as [`crate::history::describe`] gives it for the embedded store.
fn describe(e: &StreamEvent) -> serde_json::Value {
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
}
