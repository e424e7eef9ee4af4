//! Event arguments: splitting an event payload into its name and each argument's raw JSON text.

use bytes::Bytes;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use super::PacketError;

/// Splits an event payload into the event name and each argument's raw JSON text.
///
/// The arguments are zero-copy slices of `data`, byte for byte as the client sent them.
pub fn event_args(data: &Bytes) -> Result<(String, Vec<Bytes>), PacketError> {
    let items: Vec<&RawValue> = match serde_json::from_slice(data) {
        Ok(items) => items,
        Err(_) if serde_json::from_slice::<IgnoredAny>(data).is_ok() => {
            return Err(PacketError::EventNotArray)
        }
        Err(_) => return Err(PacketError::InvalidJson),
    };
    let (name, args) = items.split_first().ok_or(PacketError::EmptyEvent)?;
    let name: String =
        serde_json::from_str(name.get()).map_err(|_| PacketError::EventNameNotString)?;
    let args = args
        .iter()
        .map(|raw| subslice(data, raw.get().as_bytes()))
        .collect();
    Ok((name, args))
}

/// `part` as a slice of `whole` when it lies inside it (always, for parsed raw values), else a copy.
fn subslice(whole: &Bytes, part: &[u8]) -> Bytes {
    let offset = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    match offset.checked_add(part.len()) {
        Some(end) if end <= whole.len() => whole.slice(offset..end),
        _ => Bytes::copy_from_slice(part),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_args_keep_the_original_bytes() {
        let data = Bytes::from_static(
            "[\"chat\" , {\"a\": [1, {\"b\":\"x,y\"}]},\"with \\\"quotes\\\", and commas\", \"ünïcødé 🎉\",\"\\u00e9\\n\",-1.5e3,null,[]]"
                .as_bytes(),
        );
        let (name, args) = event_args(&data).expect("valid event");
        assert_eq!(name, "chat");
        let texts: Vec<&[u8]> = args.iter().map(|a| &a[..]).collect();
        assert_eq!(
            texts,
            vec![
                "{\"a\": [1, {\"b\":\"x,y\"}]}".as_bytes(),
                "\"with \\\"quotes\\\", and commas\"".as_bytes(),
                "\"ünïcødé 🎉\"".as_bytes(),
                "\"\\u00e9\\n\"".as_bytes(),
                b"-1.5e3",
                b"null",
                b"[]",
            ]
        );
        for arg in &args {
            let offset = arg.as_ptr() as usize - data.as_ptr() as usize;
            assert!(
                offset + arg.len() <= data.len(),
                "zero-copy slice of the payload"
            );
        }
    }

    #[test]
    fn event_args_unescapes_the_name() {
        let data = Bytes::from_static(b"[\"a\\\"b\\u00e9\"]");
        assert_eq!(event_args(&data), Ok(("a\"bé".to_owned(), vec![])));
    }

    #[test]
    fn event_args_errors() {
        let err = |s: &'static str| event_args(&Bytes::from_static(s.as_bytes())).map(|_| ());
        assert_eq!(err("[]"), Err(PacketError::EmptyEvent));
        assert_eq!(err("[1]"), Err(PacketError::EventNameNotString));
        assert_eq!(err("{}"), Err(PacketError::EventNotArray));
        assert_eq!(err("[\"e\""), Err(PacketError::InvalidJson));
        assert_eq!(err("[\"e\"]x"), Err(PacketError::InvalidJson));
    }
}
