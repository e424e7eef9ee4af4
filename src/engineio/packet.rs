//! Engine.IO v4 packet codec: one packet <-> its wire form (type digit + data, or raw binary).
//!
//! Text packets are a single ASCII type digit followed by their data (`4hello`, `2probe`, `6`).
//! Binary packets carry raw bytes with no type prefix: over WebSocket they are binary frames,
//! over HTTP long-polling they are written as `b` + base64 (see `payload`).
//!
//! Decoding is lenient where the reference implementation is: data after the digit of a
//! `close`, `upgrade` or `noop` packet is ignored rather than refused, because the JavaScript
//! parser accepts it and refusing would only add a way to fail. `open` decodes (into
//! [`Packet::Open`]) even though only servers send it; the session layer refuses it.

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

/// One decoded Engine.IO packet; data fields are zero-copy slices of the received bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    /// `0`: handshake data (JSON text); sent by servers only.
    Open(Bytes),
    /// `1`: the peer closes the session.
    Close,
    /// `2`: heartbeat or upgrade probe (`2probe`); the data is echoed back in the pong.
    Ping(Bytes),
    /// `3`: answer to a ping, carrying the ping's data.
    Pong(Bytes),
    /// `4`: an application message (for us, one Socket.IO packet in text form).
    Message(Bytes),
    /// A binary message: raw bytes, no type prefix (Engine.IO v4).
    Binary(Bytes),
    /// `5`: completes a transport upgrade.
    Upgrade,
    /// `6`: does nothing; used to end a pending poll.
    Noop,
}

/// Why a text packet could not be decoded.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum PacketError {
    /// The packet has no bytes at all, so not even a type digit.
    #[error("empty engine.io packet")]
    Empty,
    /// The first byte is not one of the type digits `0`..=`6`.
    #[error("unknown engine.io packet type byte 0x{0:02x}")]
    UnknownType(u8),
    /// A text packet must be valid UTF-8.
    #[error("engine.io text packet is not valid UTF-8")]
    InvalidUtf8,
}

impl Packet {
    /// Decodes one whole text packet (type digit + data), validating that it is UTF-8.
    pub fn decode_text(text: Bytes) -> Result<Packet, PacketError> {
        let Some(&digit) = text.first() else {
            return Err(PacketError::Empty);
        };
        if !(b'0'..=b'6').contains(&digit) {
            return Err(PacketError::UnknownType(digit));
        }
        if std::str::from_utf8(&text).is_err() {
            return Err(PacketError::InvalidUtf8);
        }
        let data = || text.slice(1..);
        Ok(match digit {
            b'0' => Packet::Open(data()),
            b'1' => Packet::Close,
            b'2' => Packet::Ping(data()),
            b'3' => Packet::Pong(data()),
            b'4' => Packet::Message(data()),
            b'5' => Packet::Upgrade,
            b'6' => Packet::Noop,
            other => return Err(PacketError::UnknownType(other)),
        })
    }

    /// Wraps the payload of a WebSocket binary frame (no type prefix in Engine.IO v4).
    pub fn binary(data: Bytes) -> Packet {
        Packet::Binary(data)
    }

    /// The type digit of a text packet, or `None` for [`Packet::Binary`].
    pub fn type_digit(&self) -> Option<u8> {
        self.text_parts().map(|(digit, _)| digit)
    }

    /// Type digit and data of a text packet; `None` for [`Packet::Binary`].
    fn text_parts(&self) -> Option<(u8, &[u8])> {
        Some(match self {
            Packet::Open(d) => (b'0', d),
            Packet::Close => (b'1', &[]),
            Packet::Ping(d) => (b'2', d),
            Packet::Pong(d) => (b'3', d),
            Packet::Message(d) => (b'4', d),
            Packet::Upgrade => (b'5', &[]),
            Packet::Noop => (b'6', &[]),
            Packet::Binary(_) => return None,
        })
    }

    /// Appends the text form: type digit + data.
    ///
    /// A [`Packet::Binary`] has no text form of its own; it is written the way HTTP
    /// long-polling carries it, `b` + standard base64.
    pub fn encode_text(&self, out: &mut BytesMut) {
        if let Packet::Binary(raw) = self {
            super::payload::encode_base64_record(raw, out);
        } else if let Some((digit, data)) = self.text_parts() {
            out.reserve(1 + data.len());
            out.put_u8(digit);
            out.put_slice(data);
        }
    }

    /// Converts to the unit queued on the send path (binary stays binary, without copying).
    pub fn to_outgoing(&self) -> Outgoing {
        match self {
            Packet::Binary(data) => Outgoing::Binary(data.clone()),
            Packet::Close => Outgoing::close(),
            Packet::Upgrade => Outgoing::Text(Bytes::from_static(b"5")),
            Packet::Noop => Outgoing::noop(),
            Packet::Ping(d) if d.is_empty() => Outgoing::ping(),
            Packet::Pong(d) if d.is_empty() => Outgoing::pong(b""),
            _ => {
                let mut out =
                    BytesMut::with_capacity(1 + self.text_parts().map_or(0, |(_, d)| d.len()));
                self.encode_text(&mut out);
                Outgoing::Text(out.freeze())
            }
        }
    }
}

/// One Engine.IO packet ready to send: text packets include their type digit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outgoing {
    /// A text packet, type digit included (`4...`); a WebSocket text frame.
    Text(Bytes),
    /// Raw binary data; a WebSocket binary frame, or `b<base64>` in a polling payload.
    Binary(Bytes),
    /// A WebSocket pong frame answering the client's WebSocket ping (not an Engine.IO packet: only a
    /// websocket connection queues it, and a polling payload leaves it out).
    WsPong(Bytes),
}

impl Outgoing {
    /// Number of bytes of the packet (text: digit included; binary: raw, before any base64).
    pub fn len(&self) -> usize {
        match self {
            Outgoing::Text(b) | Outgoing::Binary(b) | Outgoing::WsPong(b) => b.len(),
        }
    }

    /// True when the packet holds no bytes (never the case for packets built here).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes to put on the wire (text: digit included; binary: raw).
    pub fn as_bytes(&self) -> &Bytes {
        match self {
            Outgoing::Text(b) | Outgoing::Binary(b) | Outgoing::WsPong(b) => b,
        }
    }

    /// A message packet `4<text>`.
    pub fn message(text: &str) -> Self {
        Self::with_digit(b'4', text.as_bytes())
    }

    /// The server's heartbeat `2`.
    pub fn ping() -> Self {
        Outgoing::Text(Bytes::from_static(b"2"))
    }

    /// A message packet `4<data>` from bytes already known to be UTF-8 text.
    pub fn message_bytes(data: &[u8]) -> Self {
        Self::with_digit(b'4', data)
    }

    /// A pong `3<payload>` echoing a ping's data (`3probe` during an upgrade).
    ///
    /// Takes anything byte-like (`Bytes`, `&[u8]`, `&str`); the common payloads are static.
    pub fn pong(payload: impl AsRef<[u8]>) -> Self {
        match payload.as_ref() {
            b"" => Outgoing::Text(Bytes::from_static(b"3")),
            b"probe" => Outgoing::Text(Bytes::from_static(b"3probe")),
            other => Self::with_digit(b'3', other),
        }
    }

    /// A noop `6`, used to release a pending poll.
    pub fn noop() -> Self {
        Outgoing::Text(Bytes::from_static(b"6"))
    }

    /// A close packet `1`.
    pub fn close() -> Self {
        Outgoing::Text(Bytes::from_static(b"1"))
    }

    /// The open packet `0<json>` carrying the handshake.
    pub fn open(json: &str) -> Self {
        Self::with_digit(b'0', json.as_bytes())
    }

    /// A text packet: `digit` followed by `data`.
    fn with_digit(digit: u8, data: &[u8]) -> Self {
        let mut out = BytesMut::with_capacity(1 + data.len());
        out.put_u8(digit);
        out.put_slice(data);
        Outgoing::Text(out.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Result<Packet, PacketError> {
        Packet::decode_text(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn enc(p: &Packet) -> Vec<u8> {
        let mut out = BytesMut::new();
        p.encode_text(&mut out);
        out.to_vec()
    }

    #[test]
    fn decodes_every_type() {
        assert_eq!(
            dec("0{\"sid\":\"x\"}"),
            Ok(Packet::Open(Bytes::from_static(b"{\"sid\":\"x\"}")))
        );
        assert_eq!(dec("1"), Ok(Packet::Close));
        assert_eq!(dec("2"), Ok(Packet::Ping(Bytes::new())));
        assert_eq!(
            dec("2probe"),
            Ok(Packet::Ping(Bytes::from_static(b"probe")))
        );
        assert_eq!(
            dec("3probe"),
            Ok(Packet::Pong(Bytes::from_static(b"probe")))
        );
        assert_eq!(dec("3"), Ok(Packet::Pong(Bytes::new())));
        assert_eq!(dec("4"), Ok(Packet::Message(Bytes::new())));
        assert_eq!(dec("4hello €"), Ok(Packet::Message(Bytes::from("hello €"))));
        assert_eq!(dec("5"), Ok(Packet::Upgrade));
        assert_eq!(dec("6"), Ok(Packet::Noop));
    }

    #[test]
    fn message_data_is_a_zero_copy_slice() {
        let input = Bytes::from_static(b"42[\"ev\",1]");
        let Ok(Packet::Message(data)) = Packet::decode_text(input.clone()) else {
            panic!("expected a message");
        };
        assert_eq!(&data[..], b"2[\"ev\",1]");
        assert_eq!(data.as_ptr(), input[1..].as_ptr());
    }

    #[test]
    fn data_after_close_upgrade_noop_is_ignored() {
        assert_eq!(dec("1x"), Ok(Packet::Close));
        assert_eq!(dec("5probe"), Ok(Packet::Upgrade));
        assert_eq!(dec("6junk"), Ok(Packet::Noop));
    }

    #[test]
    fn rejects_empty_unknown_and_non_utf8() {
        assert_eq!(dec(""), Err(PacketError::Empty));
        assert_eq!(dec("7"), Err(PacketError::UnknownType(b'7')));
        assert_eq!(dec("abc"), Err(PacketError::UnknownType(b'a')));
        assert_eq!(dec("b4"), Err(PacketError::UnknownType(b'b')));
        let bad = Bytes::from_static(b"4\xff\xfe");
        assert_eq!(Packet::decode_text(bad), Err(PacketError::InvalidUtf8));
        let truncated = Bytes::from_static(b"4\xe2\x82");
        assert_eq!(
            Packet::decode_text(truncated),
            Err(PacketError::InvalidUtf8)
        );
    }

    #[test]
    fn error_messages_are_readable() {
        assert_eq!(
            PacketError::UnknownType(b'a').to_string(),
            "unknown engine.io packet type byte 0x61"
        );
    }

    #[test]
    fn text_round_trips() {
        for s in [
            "0{}",
            "1",
            "2",
            "2probe",
            "3probe",
            "4",
            "4hello",
            "5",
            "6",
            "4\u{1F600}",
        ] {
            let p = dec(s).expect(s);
            assert_eq!(enc(&p), s.as_bytes(), "{s}");
            assert_eq!(
                p.to_outgoing(),
                Outgoing::Text(Bytes::copy_from_slice(s.as_bytes()))
            );
        }
    }

    #[test]
    fn binary_packets() {
        let p = Packet::binary(Bytes::from_static(&[1, 2, 3, 4]));
        assert_eq!(p.type_digit(), None);
        assert_eq!(
            p.to_outgoing(),
            Outgoing::Binary(Bytes::from_static(&[1, 2, 3, 4]))
        );
        assert_eq!(enc(&p), b"bAQIDBA==");
        assert_eq!(enc(&Packet::binary(Bytes::new())), b"b");
    }

    #[test]
    fn outgoing_constructors() {
        assert_eq!(
            Outgoing::message("hi"),
            Outgoing::Text(Bytes::from_static(b"4hi"))
        );
        assert_eq!(Outgoing::ping(), Outgoing::Text(Bytes::from_static(b"2")));
        assert_eq!(
            Outgoing::pong(b""),
            Outgoing::Text(Bytes::from_static(b"3"))
        );
        assert_eq!(
            Outgoing::pong(b"probe"),
            Outgoing::Text(Bytes::from_static(b"3probe"))
        );
        assert_eq!(
            Outgoing::pong(b"xy"),
            Outgoing::Text(Bytes::from_static(b"3xy"))
        );
        assert_eq!(
            Outgoing::pong(Bytes::from_static(b"probe")),
            Outgoing::pong("probe")
        );
        assert_eq!(
            Outgoing::message_bytes(&Bytes::from_static(b"2[\"e\"]")),
            Outgoing::Text(Bytes::from_static(b"42[\"e\"]"))
        );
        assert_eq!(Outgoing::noop(), Outgoing::Text(Bytes::from_static(b"6")));
        assert_eq!(Outgoing::close(), Outgoing::Text(Bytes::from_static(b"1")));
        assert_eq!(
            Outgoing::open("{}"),
            Outgoing::Text(Bytes::from_static(b"0{}"))
        );
        assert_eq!(Outgoing::message("hi").len(), 3);
        assert!(!Outgoing::ping().is_empty());
        assert!(Outgoing::Binary(Bytes::new()).is_empty());
        assert_eq!(
            Outgoing::Binary(Bytes::from_static(b"ab")).as_bytes(),
            &Bytes::from_static(b"ab")
        );
    }

    #[test]
    fn constant_packets_do_not_allocate() {
        // from_static packets share the same static storage across calls.
        let (Outgoing::Text(a), Outgoing::Text(b)) = (Outgoing::ping(), Outgoing::ping()) else {
            panic!("ping is text");
        };
        assert_eq!(a.as_ptr(), b.as_ptr());
    }
}
