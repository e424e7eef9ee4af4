//! Engine.IO v4 HTTP long-polling payloads: several packets in one body, joined by `\x1e`.
//!
//! Text packets appear as-is (`4hello`); binary packets appear as `b` + standard base64
//! (`bAQIDBA==`). A text packet cannot contain a raw `\x1e`: Socket.IO JSON never does,
//! since JSON escapes every control character.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use super::packet::{Outgoing, Packet, PacketError};

/// The record separator placed between packets in a polling body.
pub const SEPARATOR: u8 = 0x1e;

/// Standard alphabet; padding is written, and accepted present or absent when reading.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a polling body could not be decoded; `index` is the 0-based record position.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum PayloadError {
    /// The body has no bytes; a client always posts at least one packet.
    #[error("empty polling payload")]
    EmptyBody,
    /// Two separators in a row, or one at the start or end of the body.
    #[error("empty packet at position {index} of the polling payload")]
    EmptyRecord {
        /// Position of the empty record.
        index: usize,
    },
    /// The body holds more packets than the caller allows.
    #[error("polling payload has more than {max} packets")]
    TooManyPackets {
        /// The limit that was passed.
        max: usize,
    },
    /// A `b` record whose remainder is not valid standard base64.
    #[error("invalid base64 in binary packet at position {index}")]
    InvalidBase64 {
        /// Position of the bad record.
        index: usize,
    },
    /// A text record that is not a valid Engine.IO packet.
    #[error("invalid packet at position {index}: {reason}")]
    Packet {
        /// Position of the bad record.
        index: usize,
        /// What was wrong with it.
        reason: PacketError,
    },
}

/// Splits a polling body into packets; text data are zero-copy slices of `body`.
///
/// The packet count is checked before anything is decoded, so an oversized body costs one
/// scan. Binary records are base64-decoded into fresh buffers.
pub fn decode_payload(body: Bytes, max_packets: usize) -> Result<Vec<Packet>, PayloadError> {
    if body.is_empty() {
        return Err(PayloadError::EmptyBody);
    }
    let count = 1 + body.iter().filter(|&&b| b == SEPARATOR).count();
    if count > max_packets {
        return Err(PayloadError::TooManyPackets { max: max_packets });
    }
    let mut packets = Vec::with_capacity(count);
    let mut start = 0;
    for index in 0..count {
        let end = body[start..]
            .iter()
            .position(|&b| b == SEPARATOR)
            .map_or(body.len(), |p| start + p);
        packets.push(decode_record(body.slice(start..end), index)?);
        start = end + 1;
    }
    Ok(packets)
}

/// Decodes one record: `b<base64>` is binary, anything else a text packet.
fn decode_record(record: Bytes, index: usize) -> Result<Packet, PayloadError> {
    match record.first() {
        None => Err(PayloadError::EmptyRecord { index }),
        Some(b'b') => BASE64
            .decode(&record[1..])
            .map(|raw| Packet::Binary(Bytes::from(raw)))
            .map_err(|_| PayloadError::InvalidBase64 { index }),
        Some(_) => {
            Packet::decode_text(record).map_err(|reason| PayloadError::Packet { index, reason })
        }
    }
}

/// Appends the packets to `out` as one polling body, separated by `\x1e`.
pub fn encode_payload<'a>(packets: impl IntoIterator<Item = &'a Outgoing>, out: &mut BytesMut) {
    let packets = packets
        .into_iter()
        .filter(|packet| !matches!(packet, Outgoing::WsPong(_)));
    for (i, packet) in packets.enumerate() {
        if i > 0 {
            out.put_u8(SEPARATOR);
        }
        match packet {
            Outgoing::Text(text) => out.put_slice(text),
            Outgoing::Binary(raw) => encode_base64_record(raw, out),
            Outgoing::WsPong(_) => {}
        }
    }
}

/// Appends `b` + standard base64 of `raw`: the polling form of a binary packet.
pub(crate) fn encode_base64_record(raw: &[u8], out: &mut BytesMut) {
    out.put_u8(b'b');
    let Some(encoded_len) = base64::encoded_len(raw.len(), true) else {
        return; // Unreachable for any length that fits in memory.
    };
    let start = out.len();
    out.resize(start + encoded_len, 0);
    match BASE64.encode_slice(raw, &mut out[start..]) {
        Ok(written) => out.truncate(start + written),
        Err(_) => out.truncate(start),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(s: &[u8]) -> Result<Vec<Packet>, PayloadError> {
        decode_payload(Bytes::copy_from_slice(s), 16)
    }

    fn msg(s: &'static str) -> Packet {
        Packet::Message(Bytes::from_static(s.as_bytes()))
    }

    fn encode(packets: &[Outgoing]) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_payload(packets, &mut out);
        out.to_vec()
    }

    #[test]
    fn decodes_single_and_multiple_text_packets() {
        assert_eq!(decode(b"4hello"), Ok(vec![msg("hello")]));
        assert_eq!(
            decode(b"4test1\x1e4test2\x1e4test3"),
            Ok(vec![msg("test1"), msg("test2"), msg("test3")])
        );
        assert_eq!(
            decode(b"2\x1e2probe\x1e1"),
            Ok(vec![
                Packet::Ping(Bytes::new()),
                Packet::Ping(Bytes::from_static(b"probe")),
                Packet::Close
            ])
        );
    }

    #[test]
    fn text_and_binary_round_trip_identically() {
        let body = b"4hello\x1ebAQIDBA==";
        let packets = decode(body).expect("valid payload");
        assert_eq!(
            packets,
            vec![
                msg("hello"),
                Packet::Binary(Bytes::from_static(&[1, 2, 3, 4]))
            ]
        );
        let outgoing: Vec<Outgoing> = packets.iter().map(Packet::to_outgoing).collect();
        assert_eq!(encode(&outgoing), body);
    }

    #[test]
    fn text_records_are_zero_copy() {
        let body = Bytes::from_static(b"4abc\x1e4def");
        let packets = decode_payload(body.clone(), 2).expect("valid");
        let Packet::Message(second) = &packets[1] else {
            panic!("message expected")
        };
        assert_eq!(second.as_ptr(), body[6..].as_ptr());
    }

    #[test]
    fn base64_padding_is_optional_when_reading() {
        assert_eq!(
            decode(b"bAQIDBA"),
            Ok(vec![Packet::Binary(Bytes::from_static(&[1, 2, 3, 4]))])
        );
        assert_eq!(decode(b"b"), Ok(vec![Packet::Binary(Bytes::new())]));
    }

    #[test]
    fn encodes_with_separators_only_between_packets() {
        assert_eq!(encode(&[]), b"");
        assert_eq!(encode(&[Outgoing::ping()]), b"2");
        assert_eq!(
            encode(&[
                Outgoing::message("a"),
                Outgoing::noop(),
                Outgoing::Binary(Bytes::from_static(b"\xff"))
            ]),
            b"4a\x1e6\x1eb/w=="
        );
        assert_eq!(encode(&[Outgoing::Binary(Bytes::new())]), b"b");
    }

    #[test]
    fn encode_appends_to_existing_buffer() {
        let mut out = BytesMut::from(&b"prefix:"[..]);
        encode_payload(&[Outgoing::Binary(Bytes::from_static(b"hi!"))], &mut out);
        assert_eq!(&out[..], b"prefix:baGkh");
    }

    #[test]
    fn round_trips_many_binary_lengths() {
        for len in 0..40u8 {
            let raw: Vec<u8> = (0..len).map(|i| i.wrapping_mul(37)).collect();
            let out = encode(&[
                Outgoing::Binary(Bytes::from(raw.clone())),
                Outgoing::message("x"),
            ]);
            assert_eq!(
                decode(&out),
                Ok(vec![Packet::Binary(Bytes::from(raw)), msg("x")]),
                "length {len}"
            );
        }
    }

    #[test]
    fn rejects_empty_body_and_empty_records() {
        assert_eq!(decode(b""), Err(PayloadError::EmptyBody));
        assert_eq!(decode(b"\x1e"), Err(PayloadError::EmptyRecord { index: 0 }));
        assert_eq!(
            decode(b"4a\x1e"),
            Err(PayloadError::EmptyRecord { index: 1 })
        );
        assert_eq!(
            decode(b"\x1e4a"),
            Err(PayloadError::EmptyRecord { index: 0 })
        );
        assert_eq!(
            decode(b"4a\x1e\x1e4b"),
            Err(PayloadError::EmptyRecord { index: 1 })
        );
    }

    #[test]
    fn rejects_bad_base64() {
        assert_eq!(
            decode(b"b!!!!"),
            Err(PayloadError::InvalidBase64 { index: 0 })
        );
        assert_eq!(
            decode(b"4a\x1ebA"),
            Err(PayloadError::InvalidBase64 { index: 1 })
        );
        assert_eq!(
            decode(b"bAQ\xffID"),
            Err(PayloadError::InvalidBase64 { index: 0 })
        );
    }

    #[test]
    fn rejects_too_many_packets_before_decoding() {
        assert_eq!(
            decode_payload(Bytes::from_static(b"4a\x1e4b\x1e4c"), 2),
            Err(PayloadError::TooManyPackets { max: 2 })
        );
        // Counted before decoding: garbage in the records does not change the error.
        assert_eq!(
            decode_payload(Bytes::from_static(b"x\x1ey\x1ez"), 2),
            Err(PayloadError::TooManyPackets { max: 2 })
        );
        assert_eq!(
            decode_payload(Bytes::from_static(b"4a\x1e4b"), 2).map(|p| p.len()),
            Ok(2)
        );
        assert_eq!(
            decode_payload(Bytes::from_static(b"4a"), 0),
            Err(PayloadError::TooManyPackets { max: 0 })
        );
    }

    #[test]
    fn wraps_packet_errors_with_position() {
        assert_eq!(
            decode(b"abc"),
            Err(PayloadError::Packet {
                index: 0,
                reason: PacketError::UnknownType(b'a')
            })
        );
        assert_eq!(
            decode(b"4ok\x1e9"),
            Err(PayloadError::Packet {
                index: 1,
                reason: PacketError::UnknownType(b'9')
            })
        );
        assert_eq!(
            decode(b"4ok\x1e4\xc3"),
            Err(PayloadError::Packet {
                index: 1,
                reason: PacketError::InvalidUtf8
            })
        );
        let err = decode(b"7").expect_err("bad type");
        assert_eq!(
            err.to_string(),
            "invalid packet at position 0: unknown engine.io packet type byte 0x37"
        );
    }
}
