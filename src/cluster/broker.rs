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
use crate::hub::{encode_room_event_at, Event, EventPackets, RoomKey};

/// Publishes events in order, in one step: for each, takes its claim when it has one (skipping the event when
/// the claim was taken before), assigns the cluster-wide sequence, appends it to each room's stream and
/// publishes it on each room's channel. Returns `{seq, receivers}` per event (`{0, 0}` for a skipped one).
///
/// KEYS: the sequence key, then per event its claim key (claimed events only) and one stream key per room.
/// ARGV: max stream length, stream TTL (ms), publish time (ms), claim lifetime (ms), then per event: its room
/// count, whether it is claimed (1/0), its payload and one channel per room.
const PUBLISH_LUA: &str = r#"
local out = {}
local k, a = 2, 5
while a <= #ARGV do
  local n, claimed, payload = tonumber(ARGV[a]), ARGV[a + 1] == '1', ARGV[a + 2]
  a = a + 3
  local seq, receivers = 0, 0
  local fresh = true
  if claimed then
    fresh = redis.call('SET', KEYS[k], 1, 'NX', 'PX', ARGV[4])
    k = k + 1
  end
  if fresh then
    seq = redis.call('INCR', KEYS[1])
    for i = 0, n - 1 do
      local stream = KEYS[k + i]
      local prev = 0
      local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
      if #last > 0 then
        prev = tonumber(string.match(last[1][1], '^0%-(%d+)$')) or 0
      end
      redis.call('XADD', stream, 'MAXLEN', '~', ARGV[1], '0-' .. seq, 'p', payload, 't', ARGV[3])
      redis.call('PEXPIRE', stream, ARGV[2])
      receivers = receivers + redis.call('PUBLISH', ARGV[a + i], seq .. ' ' .. prev .. ' ' .. payload)
    end
  end
  out[#out + 1] = seq
  out[#out + 1] = receivers
  k = k + n
  a = a + n
end
return out
"#;

/// Why a publish could not be made durable.
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
    /// Rooms of the same publish numbered by a lower partition: their members get the event from there, not
    /// from this copy (see [`super::partition`]).
    #[serde(rename = "x", default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
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
            except: Vec::new(),
        })
    }

    /// The packets clients get for this event at `seq`.
    pub fn packets(&self, nsp: &str, seq: u64) -> EventPackets {
        self.packets_at(nsp, &seq.to_string())
    }

    /// The packets clients get for this event with `offset` (its text).
    pub fn packets_at(&self, nsp: &str, offset: &str) -> EventPackets {
        let attachments: Vec<Bytes> = self
            .attachments
            .iter()
            .filter_map(|a| base64::engine::general_purpose::STANDARD.decode(a).ok())
            .map(Bytes::from)
            .collect();
        let rooms: [String; 0] = [];
        encode_room_event_at(
            &Event {
                nsp,
                rooms: &rooms,
                name: &self.name,
                data: self.data.get().as_bytes(),
                attachments: &attachments,
                with_offset: self.with_offset,
            },
            offset,
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
            max_events: max_events.max(1),
            stream_ttl_ms: stream_ttl.as_millis().max(1000) as u64,
        }
    }

    /// Makes the event durable in Redis and publishes it; returns once Redis answered.
    pub async fn publish(&self, event: &Event<'_>) -> Result<ClusterPublished, BrokerError> {
        let published = self.publish_batch(&[(event, None)], 0).await?;
        Ok(published
            .into_iter()
            .flatten()
            .next()
            .unwrap_or(ClusterPublished {
                seq: 0,
                receivers: 0,
            }))
    }

    /// Like [`Broker::publish`], in the same atomic step as taking `claim` (a key, kept `claim_ttl_ms`):
    /// `None`, and nothing published, when the claim was taken before.
    pub async fn publish_once(
        &self,
        event: &Event<'_>,
        claim: &str,
        claim_ttl_ms: u64,
    ) -> Result<Option<ClusterPublished>, BrokerError> {
        let published = self
            .publish_batch(&[(event, Some(claim))], claim_ttl_ms)
            .await?;
        Ok(published.into_iter().next().flatten())
    }

    /// Publishes `events` in their order with one script call, each behind its claim key when it has one (kept
    /// `claim_ttl_ms`): one answer per event, `None` for an event whose claim was taken before. All or none
    /// are answered; after an error some may have been published (their claims then skip them on a retry).
    pub async fn publish_batch(
        &self,
        events: &[(&Event<'_>, Option<&str>)],
        claim_ttl_ms: u64,
    ) -> Result<Vec<Option<ClusterPublished>>, BrokerError> {
        let events: Vec<(&Event<'_>, Option<&str>, &[String])> =
            events.iter().map(|(e, c)| (*e, *c, &[][..])).collect();
        self.publish_batch_except(&events, claim_ttl_ms).await
    }

    /// [`Broker::publish_batch`] where each event names the rooms of its publish whose members get it from
    /// another partition (carried in the wire form, see [`WireEvent::except`]).
    pub async fn publish_batch_except(
        &self,
        events: &[(&Event<'_>, Option<&str>, &[String])],
        claim_ttl_ms: u64,
    ) -> Result<Vec<Option<ClusterPublished>>, BrokerError> {
        let mut invocation = self.script.prepare_invoke();
        invocation.key(self.keys.seq());
        invocation
            .arg(self.max_events)
            .arg(self.stream_ttl_ms)
            .arg(now_ms())
            .arg(claim_ttl_ms);
        for (event, claim, except) in events {
            let mut wire = WireEvent::from_event(event).map_err(json_error)?;
            wire.except = except.to_vec();
            let payload = serde_json::to_string(&wire).map_err(json_error)?;
            invocation
                .arg(event.rooms.len())
                .arg(u8::from(claim.is_some()))
                .arg(payload);
            if let Some(claim) = claim {
                invocation.key(*claim);
            }
            for room in event.rooms {
                let room = RoomKey::new(event.nsp, room);
                invocation
                    .key(self.keys.stream(&room))
                    .arg(self.keys.channel(&room));
            }
        }
        let answers: Vec<u64> = self.redis.run_script(&invocation).await?;
        if answers.len() != events.len() * 2 {
            return Err(BrokerError::Redis(redis::RedisError::from((
                redis::ErrorKind::TypeError,
                "publish script answered the wrong number of events",
            ))));
        }
        let published: Vec<Option<ClusterPublished>> = answers
            .chunks_exact(2)
            .map(|pair| {
                (pair[0] != 0).then_some(ClusterPublished {
                    seq: pair[0],
                    receivers: pair[1],
                })
            })
            .collect();
        let fresh = published.iter().flatten().count();
        metrics::counter!("tidings_events_published_total").increment(fresh as u64);
        crate::load::count_published(fresh as u64);
        Ok(published)
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
    use crate::hub::encode_room_event;

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
