//! What a Kafka record means to tidings: its value is a JSON publish body `{room|rooms, event, data, id?,
//! namespace?}` (as `POST /v1/publish` and the Redis ingest channel take); a record without `room` and `rooms`
//! takes its room from the record key, one without `event` its event from a header. Its identity for
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
        }
    }
}

/// A record ready to publish: the publish body and the id it is deduplicated by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingest {
    /// `{room|rooms, event, data, namespace?}`, as the ingest path checks it.
    pub body: Vec<u8>,
    /// The record's `id`, or `kafka:<topic>:<partition>:<offset>`.
    pub id: String,
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
    if !body.contains_key("room") && !body.contains_key("rooms") {
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
    let id = match body.remove("id") {
        None => format!(
            "kafka:{}:{}:{}",
            record.topic, record.partition, record.offset
        ),
        Some(Value::String(id)) if (1..=128).contains(&id.len()) => id,
        Some(_) => return Err(RecordError::BadId),
    };
    let body = serde_json::to_vec(&body).map_err(|e| RecordError::NotJson(e.to_string()))?;
    Ok(Ingest { body, id })
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
    }
}
