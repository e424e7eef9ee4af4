//! Decoding: Socket.IO text -> [`Packet`], checking the prefix fields and the payload's top-level JSON shape.

use std::fmt;

use bytes::Bytes;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{Packet, PacketError, PacketKind, MAIN_NSP, MAX_ATTACHMENTS, MAX_NSP_LEN};

impl Packet {
    /// Decodes the Socket.IO text of one Engine.IO message (without its `4`).
    pub fn decode(text: Bytes) -> Result<Packet, PacketError> {
        let Some(&digit) = text.first() else {
            return Err(PacketError::Empty);
        };
        let kind = PacketKind::from_digit(digit).ok_or(PacketError::UnknownType(digit))?;
        if std::str::from_utf8(&text).is_err() {
            return Err(PacketError::InvalidUtf8);
        }
        let mut pos = 1;
        let attachments = parse_attachments(kind, &text, &mut pos)?;
        let nsp = parse_nsp(&text, &mut pos)?;
        let id = parse_ack_id(&text, &mut pos)?;
        let data = (pos < text.len()).then(|| text.slice(pos..));
        if id.is_some() && !kind.takes_ack_id() {
            return Err(PacketError::UnexpectedAckId);
        }
        if id.is_none() && matches!(kind, PacketKind::Ack | PacketKind::BinaryAck) {
            return Err(PacketError::MissingAckId);
        }
        check_payload(kind, data.as_deref())?;
        Ok(Packet {
            kind,
            nsp,
            id,
            attachments,
            data,
        })
    }
}

/// Reads `N-` for binary kinds; refuses it on the others.
fn parse_attachments(kind: PacketKind, text: &[u8], pos: &mut usize) -> Result<usize, PacketError> {
    let digits = digit_run(text, *pos);
    let after = text.get(*pos + digits).copied();
    if !kind.is_binary() {
        return match after {
            Some(b'-') => Err(PacketError::AttachmentsOnNonBinary),
            _ => Ok(0),
        };
    }
    match (digits, after) {
        (0, Some(b'-') | None) => return Err(PacketError::MissingAttachments),
        (0, Some(_)) => return Err(PacketError::AttachmentsNotDigits),
        (_, Some(b'-')) => {}
        (_, _) => return Err(PacketError::MissingAttachmentsDash),
    }
    let too_many = PacketError::TooManyAttachments {
        max: MAX_ATTACHMENTS,
    };
    let count = parse_u64(&text[*pos..*pos + digits]).ok_or(too_many)?;
    let count = usize::try_from(count)
        .ok()
        .filter(|&n| n <= MAX_ATTACHMENTS)
        .ok_or(too_many)?;
    *pos += digits + 1;
    Ok(count)
}

/// Reads `/name,` (the comma may be missing at the very end); no leading `/` means `/`.
fn parse_nsp(text: &Bytes, pos: &mut usize) -> Result<Bytes, PacketError> {
    if text.get(*pos) != Some(&b'/') {
        return Ok(Bytes::from_static(MAIN_NSP));
    }
    let start = *pos;
    let rest = &text[start..];
    let (end, next) = match rest.iter().position(|&b| b == b',') {
        Some(comma) => (start + comma, start + comma + 1),
        None => (text.len(), text.len()),
    };
    if end - start > MAX_NSP_LEN {
        return Err(PacketError::NamespaceTooLong { max: MAX_NSP_LEN });
    }
    if text[start..end].iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(PacketError::NamespaceControlChar);
    }
    *pos = next;
    Ok(text.slice(start..end))
}

/// Reads the decimal ack id, if any.
fn parse_ack_id(text: &[u8], pos: &mut usize) -> Result<Option<u64>, PacketError> {
    let digits = digit_run(text, *pos);
    if digits == 0 {
        return Ok(None);
    }
    let id = parse_u64(&text[*pos..*pos + digits]).ok_or(PacketError::AckIdOverflow)?;
    *pos += digits;
    Ok(Some(id))
}

/// Number of ASCII digits starting at `pos`.
fn digit_run(text: &[u8], pos: usize) -> usize {
    text.get(pos..).map_or(0, |rest| {
        rest.iter().take_while(|b| b.is_ascii_digit()).count()
    })
}

/// Parses ASCII digits; `None` on overflow (or a non-digit, which callers never pass).
fn parse_u64(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?
            .checked_add(u64::from(char::from(d).to_digit(10)?))
    })
}

/// Checks the payload is valid JSON of the shape the packet type requires.
fn check_payload(kind: PacketKind, data: Option<&[u8]>) -> Result<(), PacketError> {
    let shape = match data {
        None => {
            return match kind {
                PacketKind::Connect | PacketKind::Disconnect => Ok(()),
                _ => Err(PacketError::MissingPayload),
            }
        }
        Some(_) if kind == PacketKind::Disconnect => return Err(PacketError::UnexpectedPayload),
        Some(json) => {
            serde_json::from_slice::<ShapeProbe>(json)
                .map_err(|_| PacketError::InvalidJson)?
                .0
        }
    };
    match (kind, shape) {
        (PacketKind::Connect, Shape::Object) | (PacketKind::ConnectError, Shape::Object) => Ok(()),
        (PacketKind::Connect, _) => Err(PacketError::ConnectNotObject),
        (PacketKind::ConnectError, _) => Err(PacketError::ConnectErrorNotObject),
        (PacketKind::Event | PacketKind::BinaryEvent, Shape::Array { first_is_string }) => {
            match first_is_string {
                Some(true) => Ok(()),
                Some(false) => Err(PacketError::EventNameNotString),
                None => Err(PacketError::EmptyEvent),
            }
        }
        (PacketKind::Event | PacketKind::BinaryEvent, _) => Err(PacketError::EventNotArray),
        (PacketKind::Ack | PacketKind::BinaryAck, Shape::Array { .. }) => Ok(()),
        (PacketKind::Ack | PacketKind::BinaryAck, _) => Err(PacketError::AckNotArray),
        (PacketKind::Disconnect, _) => Err(PacketError::UnexpectedPayload),
    }
}

/// The top-level shape of a JSON value, found in one pass without building it.
#[derive(Clone, Copy, Debug)]
enum Shape {
    Object,
    /// `first_is_string` is `None` for an empty array.
    Array {
        first_is_string: Option<bool>,
    },
    String,
    Scalar,
}

/// Deserializes any JSON value into its [`Shape`], skipping (but validating) the contents.
struct ShapeProbe(Shape);

impl<'de> Deserialize<'de> for ShapeProbe {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ShapeVisitor).map(ShapeProbe)
    }
}

struct ShapeVisitor;

impl<'de> Visitor<'de> for ShapeVisitor {
    type Value = Shape;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
        Ok(Shape::Scalar)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Shape, E> {
        Ok(Shape::Scalar)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Shape, E> {
        Ok(Shape::Scalar)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
        Ok(Shape::Scalar)
    }

    fn visit_unit<E>(self) -> Result<Shape, E> {
        Ok(Shape::Scalar)
    }

    fn visit_str<E>(self, _: &str) -> Result<Shape, E> {
        Ok(Shape::String)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        let first = seq.next_element::<ShapeProbe>()?;
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Shape::Array {
            first_is_string: first.map(|p| matches!(p.0, Shape::String)),
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Shape::Object)
    }
}

#[cfg(test)]
mod tests {
    use super::super::event_args;
    use super::super::tests::{dec, packet};
    use super::*;
    use PacketKind::*;

    #[test]
    fn decoded_fields_are_zero_copy() {
        let text = Bytes::from_static(b"2/chat,5[\"e\"]");
        let p = Packet::decode(text.clone()).expect("valid");
        assert_eq!(p.nsp.as_ptr(), text[1..].as_ptr());
        assert_eq!(p.data.expect("data").as_ptr(), text[8..].as_ptr());
        assert_eq!(p.nsp.len(), 5);
    }

    #[test]
    fn namespace_without_trailing_comma_runs_to_the_end() {
        assert_eq!(
            dec("0/custom"),
            Ok(packet(Connect, "/custom", None, 0, None))
        );
        assert_eq!(
            dec("1/custom"),
            Ok(packet(Disconnect, "/custom", None, 0, None))
        );
        assert_eq!(
            dec("0/custom").map(|p| p.nsp_str().to_owned()),
            Ok("/custom".to_owned())
        );
        // Without the comma the payload is swallowed into the name, so the event has none.
        assert_eq!(dec("2/chat[\"e\"]"), Err(PacketError::MissingPayload));
        assert_eq!(
            dec("2/,[\"e\"]"),
            Ok(packet(Event, "/", None, 0, Some("[\"e\"]")))
        );
    }

    #[test]
    fn namespace_limits() {
        let ok = format!("0/{},", "n".repeat(MAX_NSP_LEN - 1));
        assert_eq!(dec(&ok).map(|p| p.nsp.len()), Ok(MAX_NSP_LEN));
        let long = format!("0/{},", "n".repeat(MAX_NSP_LEN));
        assert_eq!(
            dec(&long),
            Err(PacketError::NamespaceTooLong { max: MAX_NSP_LEN })
        );
        let long_no_comma = format!("0/{}", "n".repeat(1000));
        assert_eq!(
            dec(&long_no_comma),
            Err(PacketError::NamespaceTooLong { max: MAX_NSP_LEN })
        );
        assert_eq!(dec("0/a\nb,"), Err(PacketError::NamespaceControlChar));
        assert_eq!(dec("0/a\u{0}b,"), Err(PacketError::NamespaceControlChar));
        assert_eq!(dec("0/a\u{7f},"), Err(PacketError::NamespaceControlChar));
        assert_eq!(
            dec("0/ünï,").map(|p| p.nsp_str().to_owned()),
            Ok("/ünï".to_owned())
        );
    }

    #[test]
    fn rejects_bad_type_and_encoding() {
        assert_eq!(dec(""), Err(PacketError::Empty));
        assert_eq!(dec("7"), Err(PacketError::UnknownType(b'7')));
        // The conformance suite's "4abc" reaches us as "abc" once Engine.IO strips the "4".
        assert_eq!(dec("abc"), Err(PacketError::UnknownType(b'a')));
        assert_eq!(
            Packet::decode(Bytes::from_static(b"2[\"\xff\"]")),
            Err(PacketError::InvalidUtf8)
        );
    }

    #[test]
    fn rejects_bad_attachments() {
        assert_eq!(dec("5-[\"e\"]"), Err(PacketError::MissingAttachments));
        assert_eq!(dec("5"), Err(PacketError::MissingAttachments));
        assert_eq!(dec("6-1[]"), Err(PacketError::MissingAttachments));
        assert_eq!(dec("5a-[\"e\"]"), Err(PacketError::AttachmentsNotDigits));
        assert_eq!(dec("5[\"e\"]"), Err(PacketError::AttachmentsNotDigits));
        assert_eq!(dec("51[\"e\"]"), Err(PacketError::MissingAttachmentsDash));
        assert_eq!(dec("51"), Err(PacketError::MissingAttachmentsDash));
        assert_eq!(
            dec("565-[\"e\"]"),
            Err(PacketError::TooManyAttachments {
                max: MAX_ATTACHMENTS
            })
        );
        assert_eq!(
            dec("5999999999999999999999999-[\"e\"]"),
            Err(PacketError::TooManyAttachments {
                max: MAX_ATTACHMENTS
            })
        );
        assert_eq!(dec("564-[\"e\"]").map(|p| p.attachments), Ok(64));
        assert_eq!(dec("50-[\"e\"]").map(|p| p.attachments), Ok(0));
        assert_eq!(dec("21-[\"e\"]"), Err(PacketError::AttachmentsOnNonBinary));
        assert_eq!(dec("3-[]"), Err(PacketError::AttachmentsOnNonBinary));
    }

    #[test]
    fn ack_id_rules() {
        assert_eq!(
            dec("218446744073709551615[\"e\"]").map(|p| p.id),
            Ok(Some(u64::MAX))
        );
        assert_eq!(
            dec("218446744073709551616[\"e\"]"),
            Err(PacketError::AckIdOverflow)
        );
        assert_eq!(
            dec("299999999999999999999999999[\"e\"]"),
            Err(PacketError::AckIdOverflow)
        );
        assert_eq!(dec("3[]"), Err(PacketError::MissingAckId));
        assert_eq!(dec("61-[]"), Err(PacketError::MissingAckId));
        assert_eq!(dec("012{}"), Err(PacketError::UnexpectedAckId));
        assert_eq!(dec("11"), Err(PacketError::UnexpectedAckId));
        assert_eq!(
            dec("41{\"message\":\"x\"}"),
            Err(PacketError::UnexpectedAckId)
        );
        assert_eq!(dec("2007[\"e\"]").map(|p| p.id), Ok(Some(7)));
    }

    #[test]
    fn rejects_bad_payloads() {
        assert_eq!(dec("2{}"), Err(PacketError::EventNotArray));
        assert_eq!(dec("2\"e\""), Err(PacketError::EventNotArray));
        assert_eq!(dec("2abc[\"e\"]"), Err(PacketError::InvalidJson));
        assert_eq!(dec("2"), Err(PacketError::MissingPayload));
        assert_eq!(dec("2[]"), Err(PacketError::EmptyEvent));
        assert_eq!(dec("2[1,\"e\"]"), Err(PacketError::EventNameNotString));
        assert_eq!(dec("2[[\"e\"]]"), Err(PacketError::EventNameNotString));
        assert_eq!(dec("2[null]"), Err(PacketError::EventNameNotString));
        assert_eq!(dec("51-{}"), Err(PacketError::EventNotArray));
        assert_eq!(dec("31{}"), Err(PacketError::AckNotArray));
        assert_eq!(dec("31"), Err(PacketError::MissingPayload));
        assert_eq!(dec("61-1"), Err(PacketError::MissingPayload));
        assert_eq!(dec("1{}"), Err(PacketError::UnexpectedPayload));
        assert_eq!(dec("1/chat,x"), Err(PacketError::UnexpectedPayload));
        assert_eq!(dec("0[]"), Err(PacketError::ConnectNotObject));
        assert_eq!(dec("0\"token\""), Err(PacketError::ConnectNotObject));
        assert_eq!(dec("0null"), Err(PacketError::ConnectNotObject));
        assert_eq!(dec("4"), Err(PacketError::MissingPayload));
        assert_eq!(dec("4[]"), Err(PacketError::ConnectErrorNotObject));
        assert_eq!(dec("4abc"), Err(PacketError::InvalidJson));
        assert_eq!(dec("0{"), Err(PacketError::InvalidJson));
    }

    #[test]
    fn rejects_trailing_garbage_but_not_trailing_whitespace() {
        assert_eq!(dec("2[\"e\"]x"), Err(PacketError::InvalidJson));
        assert_eq!(dec("2[\"e\"][\"f\"]"), Err(PacketError::InvalidJson));
        assert_eq!(dec("0{}}"), Err(PacketError::InvalidJson));
        assert!(dec("2[\"e\"] \n").is_ok());
        assert!(dec("2 [\"e\"]").is_ok());
    }

    #[test]
    fn deep_nesting_never_overflows_the_stack() {
        // Results are compared as booleans so a failure does not print 200 kB of brackets.
        let open = "[".repeat(100_000);
        let close = "]".repeat(100_000);
        // Unclosed: invalid JSON.
        assert!(dec(&format!("2[\"e\",{open}]")) == Err(PacketError::InvalidJson));
        assert!(dec(&format!("2{open}")) == Err(PacketError::InvalidJson));
        // Closed and deep in an argument: valid JSON, skipped iteratively, kept as raw text.
        let event = format!("[\"e\",{open}{close}]");
        assert!(dec(&format!("2{event}")).is_ok());
        let args = event_args(&Bytes::from(event)).map(|(name, args)| (name, args.len()));
        assert!(args == Ok(("e".to_owned(), 1)));
        // Deep as the first element (where the shape is probed recursively): refused.
        assert!(dec(&format!("2[{open}{close}]")) == Err(PacketError::InvalidJson));
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let alphabet = b"0123456789-/,[]{}\"\\:abn \x1f\xc3\xa9";
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 24) as usize;
            let text: Vec<u8> = (0..len)
                .map(|i| alphabet[((state >> (i % 8 * 8)) as usize + i * 7) % alphabet.len()])
                .collect();
            if let Ok(p) = Packet::decode(Bytes::from(text)) {
                let _ = p.nsp_str();
                if let Some(data) = &p.data {
                    let _ = event_args(data);
                }
            }
        }
    }
}
