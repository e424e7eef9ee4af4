//! Reading the message scripts' replies back into the model: records, messages and changes.

use std::collections::HashMap;
use std::sync::Arc;

use redis::Value;

use crate::messages::{Change, DeviceReceipt, Message, MessageId, MessageState, Status};

/// A reply that does not have the shape the scripts give (another program wrote these keys).
#[derive(Debug, thiserror::Error)]
#[error("malformed message store reply: {0}")]
pub struct Malformed(pub &'static str);

/// The text of a string reply; `None` for nil.
pub fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(text) => Some(text.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

/// An unsigned number from an integer or a string reply.
pub fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => text(other)?.parse().ok(),
    }
}

/// The elements of an array reply.
pub fn array(value: Value) -> Result<Vec<Value>, Malformed> {
    match value {
        Value::Array(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        _ => Err(Malformed("expected an array")),
    }
}

/// A change `{id, from, to, status, device, at}` as the scripts reply it.
pub fn change(value: Value) -> Result<Change, Malformed> {
    let items = array(value)?;
    let [id, from, to, status, device, at] = items.as_slice() else {
        return Err(Malformed("a change has six parts"));
    };
    Ok(Change {
        id: text(id)
            .and_then(|id| MessageId::parse(&id))
            .ok_or(Malformed("change id"))?,
        from: text(from),
        to: text(to).ok_or(Malformed("change recipient"))?,
        status: text(status)
            .and_then(|s| Status::parse(&s))
            .ok_or(Malformed("change status"))?,
        device: text(device),
        at: number(at).ok_or(Malformed("change time"))?,
    })
}

/// A list of changes.
pub fn changes(value: Value) -> Result<Vec<Change>, Malformed> {
    array(value)?.into_iter().map(change).collect()
}

/// A message from the values of [`super::scripts::MESSAGE_FIELDS`], in that order.
pub fn message_from_values(value: Value) -> Result<Message, Malformed> {
    let items = array(value)?;
    let [id, seq, to, from, event, data, key, at, exp] = items.as_slice() else {
        return Err(Malformed("a message has nine fields"));
    };
    Ok(Message {
        id: text(id)
            .and_then(|id| MessageId::parse(&id))
            .ok_or(Malformed("message id"))?,
        seq: number(seq).ok_or(Malformed("message seq"))?,
        from: text(from),
        to: text(to).ok_or(Malformed("message recipient"))?,
        event: text(event).ok_or(Malformed("message event"))?,
        data: Arc::from(text(data).ok_or(Malformed("message data"))?.as_str()),
        key: text(key),
        accepted_at: number(at).ok_or(Malformed("message time"))?,
        expires_at: number(exp).ok_or(Malformed("message expiry"))?,
    })
}

/// A whole record from a hash's field/value list (`HGETALL`).
pub fn record(value: Value) -> Result<MessageState, Malformed> {
    let items = array(value)?;
    let mut fields = HashMap::with_capacity(items.len() / 2);
    let mut receipts = Vec::new();
    for pair in items.chunks_exact(2) {
        let name = text(&pair[0]).ok_or(Malformed("field name"))?;
        let value = text(&pair[1]).ok_or(Malformed("field value"))?;
        if let Some(device) = name.strip_prefix("d:") {
            let (order, at) = value.split_once(':').ok_or(Malformed("receipt"))?;
            let order: u64 = order.parse().map_err(|_| Malformed("receipt order"))?;
            let at = at.parse().map_err(|_| Malformed("receipt time"))?;
            receipts.push((
                order,
                DeviceReceipt {
                    device: device.to_owned(),
                    delivered_at: at,
                },
            ));
        } else {
            fields.insert(name, value);
        }
    }
    receipts.sort_by_key(|(order, _)| *order);
    let get = |name: &str| fields.get(name).cloned();
    let time = |name: &str| get(name).and_then(|v| v.parse().ok());
    let message = Message {
        id: get("id")
            .and_then(|id| MessageId::parse(&id))
            .ok_or(Malformed("record id"))?,
        seq: time("seq").ok_or(Malformed("record seq"))?,
        from: get("from"),
        to: get("to").ok_or(Malformed("record recipient"))?,
        event: get("ev").ok_or(Malformed("record event"))?,
        data: Arc::from(get("data").ok_or(Malformed("record data"))?.as_str()),
        key: get("key"),
        accepted_at: time("at").ok_or(Malformed("record time"))?,
        expires_at: time("exp").ok_or(Malformed("record expiry"))?,
    };
    Ok(MessageState {
        message,
        status: get("st")
            .and_then(|s| Status::parse(&s))
            .ok_or(Malformed("record status"))?,
        sent_at: time("sent"),
        delivered_at: time("dlv"),
        read_at: time("read"),
        expired_at: time("xp"),
        devices: receipts.into_iter().map(|(_, receipt)| receipt).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn records_read_back_with_receipts_in_order() {
        let fields = [
            ("id", "m1"),
            ("seq", "3"),
            ("to", "bob"),
            ("ev", "chat"),
            ("data", "{}"),
            ("at", "10"),
            ("exp", "70"),
            ("st", "delivered"),
            ("sent", "11"),
            ("dlv", "12"),
            ("nd", "2"),
            ("d:laptop", "2:13"),
            ("d:phone:1", "1:12"),
        ];
        let value = Value::Array(
            fields
                .iter()
                .flat_map(|(k, v)| [bulk(k), bulk(v)])
                .collect(),
        );
        let state = record(value).unwrap();
        assert_eq!(state.message.from, None);
        assert_eq!(state.message.seq, 3);
        assert_eq!(state.status, Status::Delivered);
        assert_eq!((state.sent_at, state.delivered_at), (Some(11), Some(12)));
        let devices: Vec<_> = state.devices.iter().map(|d| d.device.as_str()).collect();
        assert_eq!(devices, ["phone:1", "laptop"]);
        assert!(record(Value::Array(vec![bulk("id"), bulk("m1")])).is_err());
    }

    #[test]
    fn changes_keep_absent_parts_absent() {
        let value = Value::Array(vec![
            bulk("m1"),
            Value::Nil,
            bulk("bob"),
            bulk("read"),
            Value::Nil,
            bulk("42"),
        ]);
        let change = change(value).unwrap();
        assert_eq!((change.from, change.device), (None, None));
        assert_eq!((change.status, change.at), (Status::Read, 42));
    }
}
