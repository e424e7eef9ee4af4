//! Encoding: [`Packet::encode`], and the `encode_*` helpers that write whole Engine.IO messages on the send path.

use bytes::{BufMut, BytesMut};

use super::{Packet, PacketKind, MAIN_NSP};

impl Packet {
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
    use bytes::Bytes;

    use super::super::event_args;
    use super::super::tests::{packet, written};
    use super::*;
    use PacketKind::*;

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
}
