//! What a Kafka record means to tidings: its value is a JSON publish body `{room|rooms, event, data, id?,
//! namespace?}` (as `POST /v1/publish` and the Redis ingest channel take), or a direct message `{to, event,
//! data, id?, from?, ttl?}` (as `POST /v1/users/{to}/messages` takes); a record without `room`, `rooms` and
//! `to` takes its room from the record key, one without `event` its event from a header. Its identity for
//! deduplication is its `id`, else its topic, partition and offset.

use serde_json::{Map, Value};

/// One record read from a topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Its topic.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// Its key, if any.
    pub key: Option<Vec<u8>>,
    /// Its headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Its value, if any.
    pub value: Option<Vec<u8>>,
}

/// Why a record cannot be published (it never will be: it is counted, logged and skipped).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// No value.
    #[error("the record has no value")]
    Empty,
    /// The value is over the ingest size limit.
    #[error("the record's value is {0} bytes, over limits.max_ingest_bytes")]
    TooLarge(usize),
    /// The value is not a JSON object.
    #[error("the record's value is not a JSON object: {0}")]
    NotJson(String),
    /// The key that should name the room is not UTF-8.
    #[error("the record key is not UTF-8 (it names the room when the value has no room)")]
    KeyNotText,
    /// The header that should name the event is not UTF-8.
    #[error("the event header is not UTF-8")]
    HeaderNotText,
    /// `id` is not a string of 1 to 128 bytes.
    #[error("id must be a string of 1 to 128 bytes")]
    BadId,
    /// Both a recipient (`to`) and rooms.
    #[error("a record has either `to` (a direct message) or `room`/`rooms`, not both")]
    BothTargets,
}

impl RecordError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            RecordError::Empty => "empty",
            RecordError::TooLarge(_) => "too_large",
            RecordError::NotJson(_) => "not_json",
            RecordError::KeyNotText | RecordError::HeaderNotText => "not_text",
            RecordError::BadId => "bad_id",
            RecordError::BothTargets => "both_targets",
        }
    }
}

/// A record ready to publish: the publish body and the id it is deduplicated by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingest {
    /// `{room|rooms, event, data, namespace?}`, as the ingest path checks it; for a direct message `{to,
    /// event, data, id, from?, ttl?}`, as the message API checks it, its `id` the message's idempotency key.
    pub body: Vec<u8>,
    /// The record's `id`, or `kafka:<topic>:<partition>:<offset>` (for a direct message without `id`:
    /// `kafka-` and 32 hex digits of that position's SHA-256, a valid idempotency key).
    pub id: String,
    /// A direct message (`to`), not a publish to rooms.
    pub direct: bool,
}

/// The publish body of `record` (at most `max_bytes` of value), with the room from its key and the event from
/// its header `event_header` when the value has none.
pub fn to_ingest(
    record: &Record,
    event_header: &str,
    max_bytes: usize,
) -> Result<Ingest, RecordError> {
    let value = record.value.as_deref().ok_or(RecordError::Empty)?;
    if value.len() > max_bytes {
        return Err(RecordError::TooLarge(value.len()));
    }
    let mut body: Map<String, Value> =
        serde_json::from_slice(value).map_err(|e| RecordError::NotJson(e.to_string()))?;
    let direct = body.contains_key("to");
    let rooms = body.contains_key("room") || body.contains_key("rooms");
    if direct && rooms {
        return Err(RecordError::BothTargets);
    }
    if !direct && !rooms {
        if let Some(key) = &record.key {
            let room = std::str::from_utf8(key).map_err(|_| RecordError::KeyNotText)?;
            body.insert("room".into(), Value::String(room.to_owned()));
        }
    }
    if !body.contains_key("event") {
        if let Some((_, name)) = record.headers.iter().find(|(k, _)| k == event_header) {
            let name = std::str::from_utf8(name).map_err(|_| RecordError::HeaderNotText)?;
            body.insert("event".into(), Value::String(name.to_owned()));
        }
    }
    let position = format!("{}:{}:{}", record.topic, record.partition, record.offset);
    let id = match body.remove("id") {
        None if direct => format!("kafka-{}", &hex_sha256(position.as_bytes())[..32]),
        None => format!("kafka:{position}"),
        Some(Value::String(id)) if (1..=128).contains(&id.len()) => id,
        Some(_) => return Err(RecordError::BadId),
    };
    if direct {
        // The message store deduplicates by the idempotency key, durably, with the message.
        body.insert("id".into(), Value::String(id.clone()));
    }
    let body = serde_json::to_vec(&body).map_err(|e| RecordError::NotJson(e.to_string()))?;
    Ok(Ingest { body, id, direct })
}

/// Lowercase hex of the SHA-256 of `bytes`.
fn hex_sha256(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(value: &str) -> Record {
        Record {
            topic: "events".into(),
            partition: 2,
            offset: 41,
            value: Some(value.as_bytes().to_vec()),
            ..Record::default()
        }
    }

    fn body(ingest: &Ingest) -> Value {
        serde_json::from_slice(&ingest.body).unwrap()
    }

    #[test]
    fn the_value_is_the_publish_body() {
        let got = to_ingest(
            &record(r#"{"room":"news","event":"update","data":{"n":1},"id":"m-1"}"#),
            "event",
            1024,
        )
        .unwrap();
        assert_eq!(got.id, "m-1");
        assert_eq!(
            body(&got),
            serde_json::json!({"room":"news","event":"update","data":{"n":1}})
        );
    }

    #[test]
    fn room_from_the_key_event_from_a_header_id_from_the_position() {
        let mut r = record(r#"{"data":{"n":1}}"#);
        r.key = Some(b"team:7".to_vec());
        r.headers = vec![("event".into(), b"position".to_vec())];
        let got = to_ingest(&r, "event", 1024).unwrap();
        assert_eq!(got.id, "kafka:events:2:41");
        assert_eq!(
            body(&got),
            serde_json::json!({"room":"team:7","event":"position","data":{"n":1}})
        );
        // The value wins over key and header.
        let mut r = record(r#"{"rooms":["a"],"event":"e","data":1}"#);
        r.key = Some(b"b".to_vec());
        r.headers = vec![("event".into(), b"other".to_vec())];
        assert_eq!(
            body(&to_ingest(&r, "event", 1024).unwrap()),
            serde_json::json!({"rooms":["a"],"event":"e","data":1})
        );
    }

    #[test]
    fn bad_records_say_why() {
        let empty = Record::default();
        assert_eq!(to_ingest(&empty, "event", 10), Err(RecordError::Empty));
        assert_eq!(
            to_ingest(&record("{}"), "event", 1).unwrap_err().label(),
            "too_large"
        );
        assert_eq!(
            to_ingest(&record("[1]"), "event", 100).unwrap_err().label(),
            "not_json"
        );
        assert_eq!(
            to_ingest(&record(r#"{"id":7}"#), "event", 100),
            Err(RecordError::BadId)
        );
        let mut r = record(r#"{"data":1}"#);
        r.key = Some(vec![0xff]);
        assert_eq!(to_ingest(&r, "event", 100), Err(RecordError::KeyNotText));
        assert_eq!(
            to_ingest(
                &record(r#"{"to":"bob","room":"a","event":"e"}"#),
                "event",
                100
            ),
            Err(RecordError::BothTargets)
        );
    }

    #[test]
    fn direct_messages_keep_their_id_as_the_idempotency_key() {
        let mut r = record(r#"{"to":"bob","data":{"n":1}}"#);
        r.key = Some(b"ignored-room".to_vec());
        r.headers = vec![("event".into(), b"note".to_vec())];
        let got = to_ingest(&r, "event", 1024).unwrap();
        assert!(got.direct);
        assert!(
            got.id.starts_with("kafka-") && got.id.len() == 38,
            "{}",
            got.id
        );
        assert!(crate::messages::MessageId::parse(&got.id).is_some());
        assert_eq!(
            body(&got),
            serde_json::json!({"to":"bob","event":"note","data":{"n":1},"id":got.id})
        );
        // Another position, another key; the same position, the same key.
        let mut other = r.clone();
        other.offset += 1;
        assert_ne!(to_ingest(&other, "event", 1024).unwrap().id, got.id);
        assert_eq!(to_ingest(&r, "event", 1024).unwrap().id, got.id);
        let given = to_ingest(
            &record(r#"{"to":"bob","event":"e","id":"m-7"}"#),
            "event",
            1024,
        )
        .unwrap();
        assert_eq!((given.id.as_str(), given.direct), ("m-7", true));
        assert_eq!(body(&given)["id"], "m-7");
    }
}
