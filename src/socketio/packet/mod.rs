//! Socket.IO v5 packet codec: `<type>[<attachments>-][<nsp>,][<ack id>][<JSON>]` <-> [`Packet`].
//!
//! [`Packet::decode`] and [`Packet::encode`] handle the Socket.IO text alone (the Engine.IO
//! layer has already stripped, or will add, the message digit `4`). The `encode_*` helpers used
//! on the send path write a complete Engine.IO message, `4` included, so their output can go
//! straight into an `Outgoing::Text`.
//!
//! Payloads are kept as the raw JSON text received; decoding checks their syntax and top-level
//! shape without building a JSON tree.
//!
//! Layout: this module holds the packet types; `decode` parses, `encode` writes, `args` splits event payloads,
//! `validate` checks placeholders and nesting depth.

mod args;
mod decode;
mod encode;
mod validate;

use bytes::Bytes;
use thiserror::Error;

pub use args::event_args;
pub use encode::{
    encode_ack, encode_binary_ack, encode_binary_event, encode_connect, encode_connect_error,
    encode_disconnect, encode_event,
};
pub use validate::{check_placeholders, nesting_depth};

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

    /// Whether the packet carries event or ack arguments (which may be relayed to other clients).
    pub fn carries_event_data(self) -> bool {
        self.takes_ack_id()
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
    /// Binary placeholders that do not name each attachment exactly once, or an object shaped like a
    /// placeholder that is not a valid one: a stock client would refuse the packet.
    #[error("binary placeholders do not match the attachments")]
    BadPlaceholders,
}

impl Packet {
    /// The namespace as text (decoded packets are always UTF-8; a hand-built invalid one gives "").
    pub fn nsp_str(&self) -> &str {
        std::str::from_utf8(&self.nsp).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;

    /// Decodes `s` (shared with the submodules' tests).
    pub(super) fn dec(s: &str) -> Result<Packet, PacketError> {
        Packet::decode(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn enc(p: &Packet) -> String {
        let mut out = BytesMut::new();
        p.encode(&mut out);
        String::from_utf8(out.to_vec()).expect("utf-8")
    }

    /// Builds a packet from static parts (shared with the submodules' tests).
    pub(super) fn packet(
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

    /// What `f` writes, as text (shared with the submodules' tests).
    pub(super) fn written(f: impl FnOnce(&mut BytesMut)) -> String {
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
    fn nsp_str_of_invalid_bytes_is_empty() {
        let mut p = packet(Connect, "/", None, 0, None);
        p.nsp = Bytes::from_static(b"/\xff");
        assert_eq!(p.nsp_str(), "");
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
}
