//! Socket.IO v5 packet codec: `<type>[<attachments>-][<nsp>,][<ack id>][<JSON>]` <-> [`Packet`].
//!
//! [`Packet::decode`] and [`Packet::encode`] handle the Socket.IO text alone (the Engine.IO
//! layer has already stripped, or will add, the message digit `4`). The `encode_*` helpers used
//! on the send path write a complete Engine.IO message, `4` included, so their output can go
//! straight into an `Outgoing::Text`.
//!
//! Payloads are kept as the raw JSON text received; decoding checks their syntax and top-level
//! shape without building a JSON tree.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use thiserror::Error;

/// Most binary attachments one packet may announce.
pub const MAX_ATTACHMENTS: usize = 64;

/// Longest namespace accepted, in bytes.
pub const MAX_NSP_LEN: usize = 256;

/// The main namespace.
const MAIN_NSP: &[u8] = b"/";

/// The Socket.IO packet type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketKind {
    /// `0`: join a namespace (client) or accept the join (server).
    Connect,
    /// `1`: leave a namespace.
    Disconnect,
    /// `2`: an event `["name", ...args]`.
    Event,
    /// `3`: the answer to an event that asked for one.
    Ack,
    /// `4`: the server refuses a namespace join.
    ConnectError,
    /// `5`: an event whose binary arguments follow as separate attachments.
    BinaryEvent,
    /// `6`: an ack whose binary arguments follow as separate attachments.
    BinaryAck,
}

impl PacketKind {
    /// Parses the ASCII type digit.
    pub fn from_digit(digit: u8) -> Option<PacketKind> {
        Some(match digit {
            b'0' => PacketKind::Connect,
            b'1' => PacketKind::Disconnect,
            b'2' => PacketKind::Event,
            b'3' => PacketKind::Ack,
            b'4' => PacketKind::ConnectError,
            b'5' => PacketKind::BinaryEvent,
            b'6' => PacketKind::BinaryAck,
            _ => return None,
        })
    }

    /// The ASCII type digit.
    pub fn digit(self) -> u8 {
        match self {
            PacketKind::Connect => b'0',
            PacketKind::Disconnect => b'1',
            PacketKind::Event => b'2',
            PacketKind::Ack => b'3',
            PacketKind::ConnectError => b'4',
            PacketKind::BinaryEvent => b'5',
            PacketKind::BinaryAck => b'6',
        }
    }

    /// Whether the packet carries an attachments count (binary event or ack).
    pub fn is_binary(self) -> bool {
        matches!(self, PacketKind::BinaryEvent | PacketKind::BinaryAck)
    }

    /// Whether an ack id may appear (events ask for acks; acks answer them).
    fn takes_ack_id(self) -> bool {
        matches!(
            self,
            PacketKind::Event | PacketKind::Ack | PacketKind::BinaryEvent | PacketKind::BinaryAck
        )
    }
}

/// One Socket.IO packet; `nsp` and `data` are zero-copy slices of the decoded text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// The packet type.
    pub kind: PacketKind,
    /// The namespace, `/` for the main one, otherwise starting with `/` (e.g. `/chat`).
    pub nsp: Bytes,
    /// The ack id: on an event, asks for an ack; on an ack, names the event answered.
    pub id: Option<u64>,
    /// Number of binary attachments that follow (binary kinds only; 0 otherwise).
    pub attachments: usize,
    /// The JSON payload, exactly as received.
    pub data: Option<Bytes>,
}

/// Why a Socket.IO packet was refused.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum PacketError {
    /// No bytes at all.
    #[error("empty socket.io packet")]
    Empty,
    /// The packet text is not valid UTF-8.
    #[error("socket.io packet is not valid UTF-8")]
    InvalidUtf8,
    /// The first byte is not a type digit `0`..=`6`.
    #[error("unknown socket.io packet type byte 0x{0:02x}")]
    UnknownType(u8),
    /// An attachments count (`N-`) on a packet type that has none.
    #[error("attachments count on a non-binary packet")]
    AttachmentsOnNonBinary,
    /// A binary packet without its attachments count.
    #[error("binary packet without an attachments count")]
    MissingAttachments,
    /// The attachments count is not made of ASCII digits.
    #[error("attachments count is not a number")]
    AttachmentsNotDigits,
    /// The attachments count is not followed by `-`.
    #[error("attachments count not followed by '-'")]
    MissingAttachmentsDash,
    /// More attachments than [`MAX_ATTACHMENTS`].
    #[error("more than {max} attachments")]
    TooManyAttachments {
        /// The limit.
        max: usize,
    },
    /// A namespace longer than [`MAX_NSP_LEN`] bytes.
    #[error("namespace longer than {max} bytes")]
    NamespaceTooLong {
        /// The limit.
        max: usize,
    },
    /// A namespace containing a control character.
    #[error("namespace contains a control character")]
    NamespaceControlChar,
    /// An ack id too large for 64 bits.
    #[error("ack id does not fit in 64 bits")]
    AckIdOverflow,
    /// An ack id on a packet type that cannot carry one.
    #[error("ack id on a packet type without acks")]
    UnexpectedAckId,
    /// An ack packet without the id of the event it answers.
    #[error("ack packet without an ack id")]
    MissingAckId,
    /// The payload is not a single well-formed JSON value.
    #[error("payload is not valid JSON")]
    InvalidJson,
    /// A packet type that requires a payload has none.
    #[error("missing payload")]
    MissingPayload,
    /// A disconnect packet with a payload.
    #[error("disconnect packet with a payload")]
    UnexpectedPayload,
    /// A connect payload that is not a JSON object.
    #[error("connect payload is not a JSON object")]
    ConnectNotObject,
    /// A connect-error payload that is not a JSON object.
    #[error("connect error payload is not a JSON object")]
    ConnectErrorNotObject,
    /// An event payload that is not a JSON array.
    #[error("event payload is not a JSON array")]
    EventNotArray,
    /// An event payload that is an empty array (no event name).
    #[error("event payload is an empty array")]
    EmptyEvent,
    /// An event payload whose first element is not a string.
    #[error("event name is not a string")]
    EventNameNotString,
    /// An ack payload that is not a JSON array.
    #[error("ack payload is not a JSON array")]
    AckNotArray,
}

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

    /// Appends the Socket.IO text (without the Engine.IO `4`); the inverse of [`Packet::decode`].
    ///
    /// The attachments count is written for binary kinds only; an empty `nsp` means `/`.
    pub fn encode(&self, out: &mut BytesMut) {
        let attachments = self.kind.is_binary().then_some(self.attachments);
        let data = self.data.as_deref().unwrap_or_default();
        out.reserve(24 + self.nsp.len() + 21 + data.len());
        put_prefix(out, self.kind, attachments, &self.nsp, self.id);
        out.put_slice(data);
    }

    /// The namespace as text (decoded packets are always UTF-8; a hand-built invalid one gives "").
    pub fn nsp_str(&self) -> &str {
        std::str::from_utf8(&self.nsp).unwrap_or("")
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

/// Appends the Engine.IO message `42[/nsp,][id]["event",args...]`.
pub fn encode_event(nsp: &str, id: Option<u64>, event: &str, args: &[&[u8]], out: &mut BytesMut) {
    put_message(out, PacketKind::Event, None, nsp, id, Some(event), args);
}

/// Appends the Engine.IO message `45N-[/nsp,][id]["event",args...]` announcing `attachments`.
pub fn encode_binary_event(
    nsp: &str,
    id: Option<u64>,
    event: &str,
    args: &[&[u8]],
    attachments: usize,
    out: &mut BytesMut,
) {
    put_message(
        out,
        PacketKind::BinaryEvent,
        Some(attachments),
        nsp,
        id,
        Some(event),
        args,
    );
}

/// Appends the Engine.IO message `43[/nsp,]id[args...]`.
pub fn encode_ack(nsp: &str, id: u64, args: &[&[u8]], out: &mut BytesMut) {
    put_message(out, PacketKind::Ack, None, nsp, Some(id), None, args);
}

/// Appends the Engine.IO message `46N-[/nsp,]id[args...]` announcing `attachments`.
pub fn encode_binary_ack(
    nsp: &str,
    id: u64,
    args: &[&[u8]],
    attachments: usize,
    out: &mut BytesMut,
) {
    put_message(
        out,
        PacketKind::BinaryAck,
        Some(attachments),
        nsp,
        Some(id),
        None,
        args,
    );
}

/// Appends the Engine.IO message `40[/nsp,]{json}` accepting a namespace join.
pub fn encode_connect(nsp: &str, json: &[u8], out: &mut BytesMut) {
    out.reserve(4 + nsp.len() + json.len());
    put_prefix_message(out, PacketKind::Connect, None, nsp.as_bytes(), None);
    out.put_slice(json);
}

/// Appends the Engine.IO message `44[/nsp,]{"message":"..."}` refusing a namespace join.
pub fn encode_connect_error(nsp: &str, message: &str, out: &mut BytesMut) {
    out.reserve(16 + nsp.len() + message.len());
    put_prefix_message(out, PacketKind::ConnectError, None, nsp.as_bytes(), None);
    out.put_slice(b"{\"message\":");
    put_json_string(out, message);
    out.put_u8(b'}');
}

/// Appends the Engine.IO message `41` (main namespace) or `41/nsp,`.
pub fn encode_disconnect(nsp: &str, out: &mut BytesMut) {
    put_prefix_message(out, PacketKind::Disconnect, None, nsp.as_bytes(), None);
}

/// Writes a whole event or ack message: prefix, then `[` name?, args `]`.
fn put_message(
    out: &mut BytesMut,
    kind: PacketKind,
    attachments: Option<usize>,
    nsp: &str,
    id: Option<u64>,
    event: Option<&str>,
    args: &[&[u8]],
) {
    let args_len: usize = args.iter().map(|a| a.len() + 1).sum();
    let event_len = event.map_or(0, |e| e.len() + 3);
    out.reserve(48 + nsp.len() + event_len + args_len);
    put_prefix_message(out, kind, attachments, nsp.as_bytes(), id);
    out.put_u8(b'[');
    let mut first = true;
    if let Some(event) = event {
        put_json_string(out, event);
        first = false;
    }
    for arg in args {
        if !first {
            out.put_u8(b',');
        }
        out.put_slice(arg);
        first = false;
    }
    out.put_u8(b']');
}

/// Writes the Engine.IO message digit `4`, then the Socket.IO prefix.
fn put_prefix_message(
    out: &mut BytesMut,
    kind: PacketKind,
    attachments: Option<usize>,
    nsp: &[u8],
    id: Option<u64>,
) {
    out.put_u8(b'4');
    put_prefix(out, kind, attachments, nsp, id);
}

/// Writes `<type>[<attachments>-][<nsp>,][<id>]`; the nsp is omitted when it is `/` or empty.
fn put_prefix(
    out: &mut BytesMut,
    kind: PacketKind,
    attachments: Option<usize>,
    nsp: &[u8],
    id: Option<u64>,
) {
    out.put_u8(kind.digit());
    if let Some(count) = attachments {
        put_decimal(out, count as u64);
        out.put_u8(b'-');
    }
    if !nsp.is_empty() && nsp != MAIN_NSP {
        out.put_slice(nsp);
        out.put_u8(b',');
    }
    if let Some(id) = id {
        put_decimal(out, id);
    }
}

/// Writes `n` in decimal without allocating.
fn put_decimal(out: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[start..]);
}

/// Writes `s` as a JSON string literal, escaping quotes, backslashes and control characters.
fn put_json_string(out: &mut BytesMut, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.put_u8(b'"');
    let mut plain_from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.put_slice(&bytes[plain_from..i]);
        if short.is_empty() {
            out.put_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        } else {
            out.put_slice(short);
        }
        plain_from = i + 1;
    }
    out.put_slice(&bytes[plain_from..]);
    out.put_u8(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Result<Packet, PacketError> {
        Packet::decode(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn enc(p: &Packet) -> String {
        let mut out = BytesMut::new();
        p.encode(&mut out);
        String::from_utf8(out.to_vec()).expect("utf-8")
    }

    fn packet(
        kind: PacketKind,
        nsp: &'static str,
        id: Option<u64>,
        attachments: usize,
        data: Option<&'static str>,
    ) -> Packet {
        Packet {
            kind,
            nsp: Bytes::from_static(nsp.as_bytes()),
            id,
            attachments,
            data: data.map(|d| Bytes::from_static(d.as_bytes())),
        }
    }

    fn written(f: impl FnOnce(&mut BytesMut)) -> String {
        let mut out = BytesMut::new();
        f(&mut out);
        String::from_utf8(out.to_vec()).expect("utf-8")
    }

    use PacketKind::*;

    #[test]
    fn spec_examples_decode_and_re_encode_identically() {
        let cases = [
            ("0", packet(Connect, "/", None, 0, None)),
            ("0{\"sid\":\"wZX3oN0bSVIhsaknAAAI\"}", packet(Connect, "/", None, 0, Some("{\"sid\":\"wZX3oN0bSVIhsaknAAAI\"}"))),
            ("0/admin,", packet(Connect, "/admin", None, 0, None)),
            ("0/admin,{\"sid\":\"oSO0\"}", packet(Connect, "/admin", None, 0, Some("{\"sid\":\"oSO0\"}"))),
            ("4{\"message\":\"Not authorized\"}", packet(ConnectError, "/", None, 0, Some("{\"message\":\"Not authorized\"}"))),
            ("2[\"foo\"]", packet(Event, "/", None, 0, Some("[\"foo\"]"))),
            ("2/admin,[\"bar\"]", packet(Event, "/admin", None, 0, Some("[\"bar\"]"))),
            (
                "51-[\"baz\",{\"_placeholder\":true,\"num\":0}]",
                packet(BinaryEvent, "/", None, 1, Some("[\"baz\",{\"_placeholder\":true,\"num\":0}]")),
            ),
            (
                "52-/admin,[\"baz\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]",
                packet(
                    BinaryEvent,
                    "/admin",
                    None,
                    2,
                    Some("[\"baz\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]"),
                ),
            ),
            ("212[\"foo\"]", packet(Event, "/", Some(12), 0, Some("[\"foo\"]"))),
            ("312[]", packet(Ack, "/", Some(12), 0, Some("[]"))),
            ("2/admin,13[\"foo\"]", packet(Event, "/admin", Some(13), 0, Some("[\"foo\"]"))),
            ("3/admin,13[\"bar\"]", packet(Ack, "/admin", Some(13), 0, Some("[\"bar\"]"))),
            ("51-14[\"foo\",{\"_placeholder\":true,\"num\":0}]", packet(BinaryEvent, "/", Some(14), 1, Some("[\"foo\",{\"_placeholder\":true,\"num\":0}]"))),
            ("61-15[\"bar\",{\"_placeholder\":true,\"num\":0}]", packet(BinaryAck, "/", Some(15), 1, Some("[\"bar\",{\"_placeholder\":true,\"num\":0}]"))),
            ("61-/admin,15[]", packet(BinaryAck, "/admin", Some(15), 1, None).with_data("[]")),
            ("1", packet(Disconnect, "/", None, 0, None)),
            ("1/admin,", packet(Disconnect, "/admin", None, 0, None)),
        ];
        for (wire, expected) in cases {
            assert_eq!(dec(wire).as_ref(), Ok(&expected), "{wire}");
            assert_eq!(enc(&expected), wire, "{wire}");
        }
    }

    impl Packet {
        fn with_data(mut self, data: &'static str) -> Packet {
            self.data = Some(Bytes::from_static(data.as_bytes()));
            self
        }
    }

    #[test]
    fn round_trips_every_kind_with_and_without_namespace() {
        let payloads = [
            (Connect, None, Some("{\"token\":\"x\"}")),
            (Connect, None, None),
            (Disconnect, None, None),
            (Event, None, Some("[\"e\",1,{\"a\":[true]}]")),
            (Event, Some(7), Some("[\"e\"]")),
            (Ack, Some(0), Some("[]")),
            (Ack, Some(u64::MAX), Some("[null,\"x\"]")),
            (ConnectError, None, Some("{\"message\":\"no\"}")),
            (
                BinaryEvent,
                None,
                Some("[\"e\",{\"_placeholder\":true,\"num\":0}]"),
            ),
            (BinaryEvent, Some(3), Some("[\"e\"]")),
            (
                BinaryAck,
                Some(9),
                Some("[{\"_placeholder\":true,\"num\":0}]"),
            ),
        ];
        for nsp in ["/", "/chat", "/a/b-c_d"] {
            for (kind, id, data) in payloads {
                for attachments in [0, 1, 64] {
                    let attachments = if kind.is_binary() { attachments } else { 0 };
                    let p = packet(kind, nsp, id, attachments, data);
                    let wire = enc(&p);
                    assert_eq!(dec(&wire), Ok(p), "{wire}");
                }
            }
        }
    }

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
    fn nsp_str_of_invalid_bytes_is_empty() {
        let mut p = packet(Connect, "/", None, 0, None);
        p.nsp = Bytes::from_static(b"/\xff");
        assert_eq!(p.nsp_str(), "");
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
    fn error_messages_are_readable() {
        assert_eq!(
            PacketError::TooManyAttachments { max: 64 }.to_string(),
            "more than 64 attachments"
        );
        assert_eq!(
            PacketError::UnknownType(b'a').to_string(),
            "unknown socket.io packet type byte 0x61"
        );
    }

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

    #[test]
    fn encodes_events() {
        assert_eq!(
            written(|o| encode_event("/", None, "hey", &[b"\"Jude\""], o)),
            "42[\"hey\",\"Jude\"]"
        );
        assert_eq!(
            written(|o| encode_event("/chat", Some(12), "e", &[b"1", b"{\"a\":2}"], o)),
            "42/chat,12[\"e\",1,{\"a\":2}]"
        );
        assert_eq!(
            written(|o| encode_event("", None, "e", &[], o)),
            "42[\"e\"]"
        );
        assert_eq!(
            written(|o| encode_event("/", None, "a\"b\\c\n\u{1}\u{1f}é", &[], o)),
            "42[\"a\\\"b\\\\c\\n\\u0001\\u001fé\"]"
        );
    }

    #[test]
    fn escaped_event_names_decode_back() {
        for name in [
            "plain",
            "q\"uote",
            "back\\slash",
            "ctl\u{0}\u{8}\u{c}\r\t\u{1b}",
            "ünï 🎉",
            "",
        ] {
            let out = written(|o| encode_event("/x", Some(1), name, &[b"true"], o));
            let p = Packet::decode(Bytes::from(out[1..].to_owned())).expect("decodes");
            let (got, args) = event_args(&p.data.expect("data")).expect("event");
            assert_eq!(got, name);
            assert_eq!(args, vec![Bytes::from_static(b"true")]);
        }
    }

    #[test]
    fn encodes_acks_and_binary_packets() {
        assert_eq!(written(|o| encode_ack("/", 12, &[], o)), "4312[]");
        assert_eq!(
            written(|o| encode_ack("/admin", 13, &[b"\"bar\"", b"2"], o)),
            "43/admin,13[\"bar\",2]"
        );
        let placeholder: &[u8] = b"{\"_placeholder\":true,\"num\":0}";
        assert_eq!(
            written(|o| encode_binary_event("/", None, "message-back", &[placeholder], 1, o)),
            "451-[\"message-back\",{\"_placeholder\":true,\"num\":0}]"
        );
        assert_eq!(
            written(|o| encode_binary_event("/nsp", Some(4), "e", &[], 0, o)),
            "450-/nsp,4[\"e\"]"
        );
        assert_eq!(
            written(|o| encode_binary_ack("/", 15, &[placeholder], 1, o)),
            "461-15[{\"_placeholder\":true,\"num\":0}]"
        );
        assert_eq!(
            written(|o| encode_binary_ack("/a", 0, &[], 2, o)),
            "462-/a,0[]"
        );
    }

    #[test]
    fn encodes_connect_error_and_disconnect() {
        assert_eq!(
            written(|o| encode_connect("/", b"{\"sid\":\"abc\"}", o)),
            "40{\"sid\":\"abc\"}"
        );
        assert_eq!(
            written(|o| encode_connect("/custom", b"{\"sid\":\"abc\"}", o)),
            "40/custom,{\"sid\":\"abc\"}"
        );
        assert_eq!(
            written(|o| encode_connect_error("/random", "Invalid namespace", o)),
            "44/random,{\"message\":\"Invalid namespace\"}"
        );
        assert_eq!(
            written(|o| encode_connect_error("/", "say \"no\"", o)),
            "44{\"message\":\"say \\\"no\\\"\"}"
        );
        assert_eq!(written(|o| encode_disconnect("/", o)), "41");
        assert_eq!(written(|o| encode_disconnect("/chat", o)), "41/chat,");
    }

    #[test]
    fn helper_output_decodes_to_the_same_packet() {
        let wire = written(|o| encode_binary_ack("/n", 77, &[b"[1,2]"], 3, o));
        assert_eq!(
            Packet::decode(Bytes::from(wire[1..].to_owned())),
            Ok(packet(BinaryAck, "/n", Some(77), 3, Some("[[1,2]]")))
        );
        let wire = written(|o| encode_connect_error("/", "x", o));
        assert_eq!(
            Packet::decode(Bytes::from(wire[1..].to_owned())),
            Ok(packet(
                ConnectError,
                "/",
                None,
                0,
                Some("{\"message\":\"x\"}")
            ))
        );
    }

    #[test]
    fn decimal_writer() {
        for n in [0u64, 1, 9, 10, 99, 100, 12345, u64::MAX] {
            let mut out = BytesMut::new();
            put_decimal(&mut out, n);
            assert_eq!(&out[..], n.to_string().as_bytes());
        }
    }

    #[test]
    fn kind_digits_round_trip() {
        for kind in [
            Connect,
            Disconnect,
            Event,
            Ack,
            ConnectError,
            BinaryEvent,
            BinaryAck,
        ] {
            assert_eq!(PacketKind::from_digit(kind.digit()), Some(kind));
        }
        assert_eq!(PacketKind::from_digit(b'7'), None);
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
