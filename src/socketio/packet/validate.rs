//! Checks on the JSON a client sends that go beyond "is it JSON": binary placeholders that a stock client can
//! resolve, and nesting depth.
//!
//! A packet relayed to other clients (and kept in history for recovery) must be something every stock
//! `socket.io-client` can parse: its decoder rejects a binary packet whose placeholders point past the
//! attachments (`illegal attachments`) and closes the whole connection, so one bad publish would disconnect
//! every member of a room, again on every recovery replay.

use serde_json::Value;

use super::PacketError;

/// Checks that the placeholders in `data` match `attachments` exactly: every object carrying a `_placeholder`
/// key is `{"_placeholder":true,"num":N}` with `N < attachments`, each index is used exactly once, and there
/// are as many placeholders as attachments (none at all for a packet without attachments).
///
/// Most payloads never mention `_placeholder`: those are accepted after one scan of the bytes, without parsing.
pub fn check_placeholders(data: &[u8], attachments: usize) -> Result<(), PacketError> {
    if attachments == 0 && !may_name_placeholder(data) {
        return Ok(());
    }
    let value: Value = serde_json::from_slice(data).map_err(|_| PacketError::InvalidJson)?;
    let mut used = vec![false; attachments];
    let mut found = 0usize;
    visit(&value, &mut used, &mut found)?;
    if found != attachments {
        return Err(PacketError::BadPlaceholders);
    }
    Ok(())
}

/// True when the text could spell the key `_placeholder`, literally or with `\u` escapes.
fn may_name_placeholder(data: &[u8]) -> bool {
    const KEY: &[u8] = b"_placeholder";
    data.windows(KEY.len()).any(|w| w == KEY) || data.windows(2).any(|w| w == b"\\u")
}

fn visit(value: &Value, used: &mut [bool], found: &mut usize) -> Result<(), PacketError> {
    match value {
        Value::Array(items) => items.iter().try_for_each(|v| visit(v, used, found)),
        Value::Object(map) if map.contains_key("_placeholder") => {
            let num = match (map.len(), map.get("_placeholder"), map.get("num")) {
                (2, Some(Value::Bool(true)), Some(num)) => num.as_u64(),
                _ => None,
            };
            let slot = num
                .and_then(|n| usize::try_from(n).ok())
                .and_then(|n| used.get_mut(n))
                .ok_or(PacketError::BadPlaceholders)?;
            if std::mem::replace(slot, true) {
                return Err(PacketError::BadPlaceholders);
            }
            *found += 1;
            Ok(())
        }
        Value::Object(map) => map.values().try_for_each(|v| visit(v, used, found)),
        _ => Ok(()),
    }
}

/// The deepest nesting of arrays and objects in a JSON text (0 for a scalar), read without parsing: brackets
/// inside strings do not count. Meant for text already known to be valid JSON.
pub fn nesting_depth(data: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut in_string = false;
    let mut escaped = false;
    for &byte in data {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(data: &str, attachments: usize) -> Result<(), PacketError> {
        check_placeholders(data.as_bytes(), attachments)
    }

    #[test]
    fn placeholders_must_match_the_attachments_exactly() {
        let one = r#"["e",{"_placeholder":true,"num":0}]"#;
        assert_eq!(check(one, 1), Ok(()));
        let two = r#"["e",{"a":[{"_placeholder":true,"num":1}]},{"num":0,"_placeholder":true}]"#;
        assert_eq!(check(two, 2), Ok(()));
        assert_eq!(check(r#"["e",1,"text"]"#, 0), Ok(()));
        let bad = [
            // Past the attachments: the poison pill that made stock clients disconnect.
            (r#"["e",{"_placeholder":true,"num":1}]"#, 1),
            (r#"["e",{"_placeholder":true,"num":5}]"#, 0),
            // An index used twice, or one attachment never referenced.
            (
                r#"["e",{"_placeholder":true,"num":0},{"_placeholder":true,"num":0}]"#,
                2,
            ),
            (r#"["e",{"_placeholder":true,"num":0}]"#, 2),
            (r#"["e"]"#, 1),
            // Shaped like a placeholder without being a valid one.
            (r#"["e",{"_placeholder":true,"num":-1}]"#, 1),
            (r#"["e",{"_placeholder":true,"num":0.5}]"#, 1),
            (r#"["e",{"_placeholder":true,"num":"0"}]"#, 1),
            (r#"["e",{"_placeholder":false,"num":0}]"#, 1),
            (r#"["e",{"_placeholder":true}]"#, 1),
            (r#"["e",{"_placeholder":true,"num":0,"x":1}]"#, 1),
            (r#"["e",{"_placeholder":true,"num":0}]"#, 0),
            // The key spelled with an escape is the same key to a JSON parser.
            (r#"["e",{"\u005fplaceholder":true,"num":3}]"#, 0),
        ];
        for (data, attachments) in bad {
            assert_eq!(
                check(data, attachments),
                Err(PacketError::BadPlaceholders),
                "{data} with {attachments}"
            );
        }
        assert_eq!(check(r#"["e",{"\u00e9":1}]"#, 0), Ok(()));
    }

    #[test]
    fn nesting_depth_ignores_strings() {
        assert_eq!(nesting_depth(b"1"), 0);
        assert_eq!(nesting_depth(b"[]"), 1);
        assert_eq!(nesting_depth(br#"{"a":[1,{"b":[]}]}"#), 4);
        assert_eq!(nesting_depth(br#"["[[[[", "\"[[", {"k]": "}}"}]"#), 2);
        assert_eq!(nesting_depth(&[b'['; 1000]), 1000);
    }
}
