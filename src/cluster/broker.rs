//! Publishing through Redis: one Lua script assigns the cluster-wide sequence, appends the event to each
//! room's stream and publishes it on each room's channel, atomically. A publish is answered only after that
//! script succeeded, so an answered event is in Redis (as durable as Redis is configured to be).

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use redis::Script;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::keys::Keys;
use super::Redis;
use crate::hub::{encode_room_event, Event, EventPackets, RoomKey};

/// Appends to every room stream and publishes, in one step; returns `{seq, receivers}`.
///
/// KEYS: the sequence key, then one stream key per room. ARGV: payload, max stream length, stream TTL (ms),
/// publish time (ms), then one channel per room.
const PUBLISH_LUA: &str = r#"
local seq = redis.call('INCR', KEYS[1])
local receivers = 0
for i = 2, #KEYS do
  local stream = KEYS[i]
  local prev = 0
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  if #last > 0 then
    prev = tonumber(string.match(last[1][1], '^0%-(%d+)$')) or 0
  end
  redis.call('XADD', stream, 'MAXLEN', '~', ARGV[2], '0-' .. seq, 'p', ARGV[1], 't', ARGV[4])
  redis.call('PEXPIRE', stream, ARGV[3])
  receivers = receivers + redis.call('PUBLISH', ARGV[3 + i], seq .. ' ' .. prev .. ' ' .. ARGV[1])
end
return {seq, receivers}
"#;

/// Why a publish could not be made durable.
/// [`PUBLISH_LUA`] behind a claim: KEYS as there plus the claim key last; ARGV as there plus the claim's
/// lifetime (ms) last. Publishes nothing and answers `{0, 0}` when the claim was taken before.
const PUBLISH_ONCE_LUA: &str = r#"
local claim = table.remove(KEYS)
local claim_ttl = table.remove(ARGV)
if not redis.call('SET', claim, 1, 'NX', 'PX', claim_ttl) then
  return {0, 0}
end
"#;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Redis did not accept the event.
    #[error("redis unavailable: {0}")]
    Redis(#[from] redis::RedisError),
}

/// An event as carried through Redis (channel messages and stream entries).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct WireEvent {
    /// Event name.
    #[serde(rename = "e")]
    pub name: String,
    /// Raw JSON data.
    #[serde(rename = "d")]
    pub data: Box<RawValue>,
    /// Tag deliveries with their offset.
    #[serde(rename = "o", default)]
    pub with_offset: bool,
    /// Binary attachments, base64.
    #[serde(rename = "b", default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<String>,
}

impl WireEvent {
    /// The wire form of an event.
    pub fn from_event(event: &Event<'_>) -> Result<WireEvent, serde_json::Error> {
        let data = std::str::from_utf8(event.data).map_err(serde::de::Error::custom)?;
        Ok(WireEvent {
            name: event.name.to_owned(),
            data: RawValue::from_string(data.to_owned())?,
            with_offset: event.with_offset,
            attachments: event
                .attachments
                .iter()
                .map(|a| base64::engine::general_purpose::STANDARD.encode(a))
                .collect(),
        })
    }

    /// The packets clients get for this event at `seq`.
    pub fn packets(&self, nsp: &str, seq: u64) -> EventPackets {
        let attachments: Vec<Bytes> = self
            .attachments
            .iter()
            .filter_map(|a| base64::engine::general_purpose::STANDARD.decode(a).ok())
            .map(Bytes::from)
            .collect();
        let rooms: [String; 0] = [];
        encode_room_event(
            &Event {
                nsp,
                rooms: &rooms,
                name: &self.name,
                data: self.data.get().as_bytes(),
                attachments: &attachments,
                with_offset: self.with_offset,
            },
            seq,
        )
    }
}

/// A channel message: `"<seq> <previous seq in this room> <payload>"`.
#[derive(Debug)]
pub struct ChannelMessage<'a> {
    /// Sequence of the event.
    pub seq: u64,
    /// Sequence of the room's previous event (0 if none): a gap check for the receiving node.
    pub prev: u64,
    /// The JSON payload.
    pub payload: &'a str,
}

impl<'a> ChannelMessage<'a> {
    /// Parses a channel message.
    pub fn parse(text: &'a str) -> Option<ChannelMessage<'a>> {
        let (seq, rest) = text.split_once(' ')?;
        let (prev, payload) = rest.split_once(' ')?;
        Some(ChannelMessage {
            seq: seq.parse().ok()?,
            prev: prev.parse().ok()?,
            payload,
        })
    }
}

/// Publishes events into the cluster.
pub struct Broker {
    redis: Arc<Redis>,
    keys: Keys,
    script: Script,
    once: Script,
    max_events: usize,
    stream_ttl_ms: u64,
}

/// What a cluster publish did.
#[derive(Debug, Clone, Copy)]
pub struct ClusterPublished {
    /// Cluster-wide sequence (offset) of the event.
    pub seq: u64,
    /// Channel subscriptions the event reached (nodes serving its rooms).
    pub receivers: u64,
}

impl Broker {
    /// A broker keeping `max_events` per room stream, streams expiring `stream_ttl` after their last event.
    pub fn new(
        redis: Arc<Redis>,
        keys: Keys,
        max_events: usize,
        stream_ttl: std::time::Duration,
    ) -> Broker {
        Broker {
            redis,
            keys,
            script: Script::new(PUBLISH_LUA),
            once: Script::new(&format!("{PUBLISH_ONCE_LUA}{PUBLISH_LUA}")),
            max_events: max_events.max(1),
            stream_ttl_ms: stream_ttl.as_millis().max(1000) as u64,
        }
    }

    /// Makes the event durable in Redis and publishes it; returns once Redis answered.
    pub async fn publish(&self, event: &Event<'_>) -> Result<ClusterPublished, BrokerError> {
        self.run_publish(&self.script, event, None)
            .await
            .map(|published| {
                published.unwrap_or(ClusterPublished {
                    seq: 0,
                    receivers: 0,
                })
            })
    }

    /// Like [`Broker::publish`], in the same atomic step as taking `claim` (a key, kept `claim_ttl_ms`):
    /// `None`, and nothing published, when the claim was taken before.
    pub async fn publish_once(
        &self,
        event: &Event<'_>,
        claim: &str,
        claim_ttl_ms: u64,
    ) -> Result<Option<ClusterPublished>, BrokerError> {
        self.run_publish(&self.once, event, Some((claim, claim_ttl_ms)))
            .await
    }

    async fn run_publish(
        &self,
        script: &Script,
        event: &Event<'_>,
        claim: Option<(&str, u64)>,
    ) -> Result<Option<ClusterPublished>, BrokerError> {
        let payload = serde_json::to_string(&WireEvent::from_event(event).map_err(json_error)?)
            .map_err(json_error)?;
        let mut invocation = script.prepare_invoke();
        invocation.key(self.keys.seq());
        for room in event.rooms {
            invocation.key(self.keys.stream(&RoomKey::new(event.nsp, room)));
        }
        invocation
            .arg(&payload)
            .arg(self.max_events)
            .arg(self.stream_ttl_ms)
            .arg(now_ms());
        for room in event.rooms {
            invocation.arg(self.keys.channel(&RoomKey::new(event.nsp, room)));
        }
        if let Some((key, ttl_ms)) = claim {
            invocation.key(key).arg(ttl_ms);
        }
        let (seq, receivers): (u64, u64) = self.redis.run_script(&invocation).await?;
        if seq == 0 {
            return Ok(None);
        }
        metrics::counter!("tidings_events_published_total").increment(1);
        Ok(Some(ClusterPublished { seq, receivers }))
    }
}

fn json_error(error: serde_json::Error) -> BrokerError {
    BrokerError::Redis(redis::RedisError::from((
        redis::ErrorKind::TypeError,
        "event not serialisable",
        error.to_string(),
    )))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_message_parses() {
        let m = ChannelMessage::parse(r#"12 7 {"e":"x","d":1}"#).unwrap();
        assert_eq!((m.seq, m.prev, m.payload), (12, 7, r#"{"e":"x","d":1}"#));
        assert!(ChannelMessage::parse("x 1 {}").is_none());
        assert!(ChannelMessage::parse("12").is_none());
    }

    #[test]
    fn wire_event_round_trip_encodes_like_local_publish() {
        let rooms = ["news".to_string()];
        let event = Event {
            nsp: "/",
            rooms: &rooms,
            name: "update",
            data: br#"{"a":1}"#,
            attachments: &[],
            with_offset: true,
        };
        let wire = WireEvent::from_event(&event).unwrap();
        let text = serde_json::to_string(&wire).unwrap();
        let back: WireEvent = serde_json::from_str(&text).unwrap();
        assert_eq!(back.packets("/", 9), encode_room_event(&event, 9));
    }
}
