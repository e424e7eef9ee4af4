//! RFC 6455 WebSocket framing for the server side: handshake key, client frame parsing, server frame headers.
//!
//! No extensions are negotiated (so every RSV bit must be 0). Client frames must be masked;
//! server frames never are, so a server header is at most 10 bytes and the writer can put
//! it in front of a shared payload with one vectored write.
//!
//! Text is checked for UTF-8 as it arrives, fragment by fragment and within a frame still being
//! received, so an invalid sequence fails the connection at once (Autobahn cases 6.4.x), not
//! after the rest of a message up to the size limit has been read.

use base64::Engine;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use sha1::{Digest, Sha1};
use thiserror::Error;

/// The GUID appended to the client's `Sec-WebSocket-Key` (RFC 6455 section 1.3).
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Largest payload of a control frame (close, ping, pong).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// The `Sec-WebSocket-Accept` value answering a client's `Sec-WebSocket-Key`.
pub fn accept_key(client_key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(client_key);
    sha.update(ACCEPT_GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// A frame opcode this server understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpCode {
    /// `0x0`: a later fragment of a text or binary message.
    Continuation,
    /// `0x1`: a UTF-8 text message (or its first fragment).
    Text,
    /// `0x2`: a binary message (or its first fragment).
    Binary,
    /// `0x8`: closes the connection, optionally with a code and reason.
    Close,
    /// `0x9`: asks the peer for a pong with the same payload.
    Ping,
    /// `0xA`: answers a ping.
    Pong,
}

impl OpCode {
    /// The 4-bit wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Parses a 4-bit wire value; reserved opcodes give `None`.
    pub fn from_u8(value: u8) -> Option<OpCode> {
        Some(match value {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    /// Control frames (close, ping, pong) may not be fragmented and carry at most 125 bytes.
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// One complete message from the client; fragments are already joined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WsMessage {
    /// A text message, checked to be valid UTF-8.
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping; the server answers with [`pong_frame`].
    Ping(Bytes),
    /// A pong (unsolicited or answering our ping).
    Pong(Bytes),
    /// A close frame: the status code if one was sent, and the UTF-8 reason.
    Close(Option<u16>, Bytes),
}

/// Why the client's byte stream is not acceptable; the connection must then be closed.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    /// Every client-to-server frame must be masked.
    #[error("client frame is not masked")]
    Unmasked,
    /// An RSV bit is set, but no extension was negotiated.
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    /// The opcode is one of the reserved values.
    #[error("unknown opcode 0x{0:x}")]
    UnknownOpcode(u8),
    /// A close, ping or pong frame without the FIN bit.
    #[error("fragmented control frame")]
    FragmentedControl,
    /// A close, ping or pong frame longer than 125 bytes.
    #[error("control frame payload longer than 125 bytes")]
    ControlTooLong,
    /// A continuation frame with no fragmented message in progress.
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is still open.
    #[error("new data frame before the fragmented message was finished")]
    UnfinishedMessage,
    /// A 64-bit payload length with its most significant bit set.
    #[error("payload length has its most significant bit set")]
    LengthOverflow,
    /// The message (all fragments together) is longer than the configured limit.
    #[error("message larger than {limit} bytes")]
    TooLarge {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// A text message or close reason that is not valid UTF-8.
    #[error("text is not valid UTF-8")]
    InvalidUtf8,
    /// A close payload of exactly one byte: too short for a status code.
    #[error("close frame payload of 1 byte")]
    CloseTooShort,
    /// A close status code that may not be sent on the wire.
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
}

impl FrameError {
    /// The status code to put in our close frame: 1007 bad UTF-8, 1009 too big, 1002 otherwise.
    pub fn close_code(&self) -> u16 {
        match self {
            FrameError::InvalidUtf8 => 1007,
            FrameError::TooLarge { .. } => 1009,
            _ => 1002,
        }
    }
}

/// A fragmented message whose final frame has not arrived yet.
#[derive(Debug)]
struct Partial {
    text: bool,
    data: BytesMut,
}

/// Checks UTF-8 text that arrives in pieces (fragments, or parts of one frame still being received).
///
/// A piece may end inside a character: those bytes are carried to the next piece. An invalid sequence
/// is reported as soon as its first wrong byte is fed, not when the message is complete.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    carry: [u8; 4],
    /// Bytes used in `carry` (0 to 3; a byte, as every connection's decoder holds one).
    carry_len: u8,
}

impl Utf8Stream {
    /// Checks the next piece; `Err` as soon as the text so far cannot be the start of valid UTF-8.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), FrameError> {
        if self.carry_len > 0 {
            let carried = usize::from(self.carry_len);
            // Complete the carried character with at most 3 more bytes.
            let take = data.len().min(4 - carried);
            let mut joined = self.carry;
            joined[carried..carried + take].copy_from_slice(&data[..take]);
            let joined_len = carried + take;
            match std::str::from_utf8(&joined[..joined_len]) {
                Ok(_) => {
                    self.carry_len = 0;
                    data = &data[take..];
                }
                Err(e) if e.valid_up_to() > 0 => {
                    // The carried character is complete; the rest of `data` is checked below.
                    let used = e.valid_up_to() - carried;
                    self.carry_len = 0;
                    data = &data[used..];
                }
                Err(e) if e.error_len().is_some() => return Err(FrameError::InvalidUtf8),
                Err(_) => {
                    // Still a valid start of a character: all of `data` was used.
                    self.carry = joined;
                    // An incomplete character: fewer than 4 bytes.
                    self.carry_len = joined_len as u8;
                    return Ok(());
                }
            }
        }
        match std::str::from_utf8(data) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(FrameError::InvalidUtf8),
            Err(e) => {
                let tail = &data[e.valid_up_to()..];
                self.carry[..tail.len()].copy_from_slice(tail);
                // An incomplete character at the end: fewer than 4 bytes.
                self.carry_len = tail.len() as u8;
                Ok(())
            }
        }
    }

    /// Ends the text: `Err` if it stops inside a character. The stream is then ready for new text.
    pub fn finish(&mut self) -> Result<(), FrameError> {
        let complete = self.carry_len == 0;
        self.carry_len = 0;
        if complete {
            Ok(())
        } else {
            Err(FrameError::InvalidUtf8)
        }
    }
}

/// What a frame header says; `header_len` includes the masking key.
#[derive(Clone, Copy, Debug)]
struct Header {
    fin: bool,
    opcode: OpCode,
    mask: [u8; 4],
    header_len: usize,
    payload_len: usize,
}

/// Parses client frames from a read buffer and joins fragments into whole messages.
///
/// After an error the stream is unusable: close the connection rather than calling again.
#[derive(Debug)]
pub struct FrameDecoder {
    max_message: usize,
    /// Boxed: only a fragmented message has one, and every connection holds a decoder.
    partial: Option<Box<Partial>>,
    /// The text message being received, checked as its bytes come in.
    utf8: Utf8Stream,
    /// Payload bytes of the incomplete frame at the front of the buffer already unmasked and checked.
    checked: usize,
}

impl FrameDecoder {
    /// A decoder refusing messages longer than `max_message` bytes (all fragments together).
    pub fn new(max_message: usize) -> Self {
        FrameDecoder {
            max_message,
            partial: None,
            utf8: Utf8Stream::default(),
            checked: 0,
        }
    }

    /// Consumes complete frames from the front of `buf` until one completes a message.
    ///
    /// Returns `Ok(None)` when more bytes are needed; an incomplete frame stays in `buf`.
    /// The length a header declares is checked before its payload is waited for, so an
    /// oversized frame is refused as soon as its header is in.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<WsMessage>, FrameError> {
        loop {
            let Some(header) = self.parse_header(buf)? else {
                return Ok(None);
            };
            let frame_len = header.header_len + header.payload_len;
            if buf.len() < frame_len {
                // Text is checked as it arrives, so invalid UTF-8 fails the connection without waiting
                // for the rest of a large frame.
                if self.carries_text(header.opcode) {
                    let end = buf.len();
                    self.check_text(header, &mut buf[header.header_len..end])?;
                }
                // The length is already bounded by the limits, so this is safe to reserve.
                buf.reserve(frame_len - buf.len());
                return Ok(None);
            }
            buf.advance(header.header_len);
            let mut payload = buf.split_to(header.payload_len);
            if self.carries_text(header.opcode) {
                self.check_text(header, &mut payload)?;
            } else {
                unmask(&mut payload, header.mask, 0);
            }
            self.checked = 0;
            if let Some(message) = self.on_frame(header, payload)? {
                return Ok(Some(message));
            }
        }
    }

    /// True when a frame with this opcode carries part of a text message.
    fn carries_text(&self, opcode: OpCode) -> bool {
        match opcode {
            OpCode::Text => true,
            OpCode::Continuation => self.partial.as_ref().is_some_and(|p| p.text),
            _ => false,
        }
    }

    /// Unmasks and checks the payload bytes received so far of a text-carrying frame (`payload` starts at
    /// the frame's first payload byte); bytes already checked on an earlier call are skipped.
    fn check_text(&mut self, header: Header, payload: &mut [u8]) -> Result<(), FrameError> {
        if self.checked == 0 && header.opcode == OpCode::Text {
            // A new text message starts with this frame.
            self.utf8 = Utf8Stream::default();
        }
        let fresh = &mut payload[self.checked..];
        unmask(fresh, header.mask, self.checked);
        self.checked += fresh.len();
        self.utf8.feed(fresh)
    }

    /// Parses and checks the header at the front of `buf`; `None` if it is not all there.
    fn parse_header(&self, buf: &[u8]) -> Result<Option<Header>, FrameError> {
        let [b0, b1] = match buf.get(..2) {
            Some(&[b0, b1]) => [b0, b1],
            _ => return Ok(None),
        };
        let fin = b0 & 0x80 != 0;
        if b0 & 0x70 != 0 {
            return Err(FrameError::ReservedBits);
        }
        let opcode = OpCode::from_u8(b0 & 0x0F).ok_or(FrameError::UnknownOpcode(b0 & 0x0F))?;
        if b1 & 0x80 == 0 {
            return Err(FrameError::Unmasked);
        }
        let short_len = b1 & 0x7F;
        if opcode.is_control() {
            if !fin {
                return Err(FrameError::FragmentedControl);
            }
            if usize::from(short_len) > MAX_CONTROL_PAYLOAD {
                return Err(FrameError::ControlTooLong);
            }
        } else {
            match (opcode, &self.partial) {
                (OpCode::Continuation, None) => return Err(FrameError::UnexpectedContinuation),
                (OpCode::Text | OpCode::Binary, Some(_)) => {
                    return Err(FrameError::UnfinishedMessage)
                }
                _ => {}
            }
        }
        let (ext_len, declared) = match short_len {
            126 => match read_array::<2>(buf, 2) {
                Some(b) => (2, u64::from(u16::from_be_bytes(b))),
                None => return Ok(None),
            },
            127 => match read_array::<8>(buf, 2) {
                Some(b) => (8, u64::from_be_bytes(b)),
                None => return Ok(None),
            },
            n => (0, u64::from(n)),
        };
        if declared >> 63 != 0 {
            return Err(FrameError::LengthOverflow);
        }
        let payload_len = self.check_length(opcode, declared)?;
        let header_len = 2 + ext_len + 4;
        let Some(mask) = read_array::<4>(buf, 2 + ext_len) else {
            return Ok(None);
        };
        Ok(Some(Header {
            fin,
            opcode,
            mask,
            header_len,
            payload_len,
        }))
    }

    /// Refuses a data frame that would push the message past `max_message`.
    fn check_length(&self, opcode: OpCode, declared: u64) -> Result<usize, FrameError> {
        if opcode.is_control() {
            // Already bounded by the 7-bit length check; 126/127 were refused above.
            return usize::try_from(declared).map_err(|_| FrameError::ControlTooLong);
        }
        let buffered = self.partial.as_ref().map_or(0, |p| p.data.len());
        let room = self.max_message.saturating_sub(buffered);
        match usize::try_from(declared) {
            Ok(len) if len <= room => Ok(len),
            _ => Err(FrameError::TooLarge {
                limit: self.max_message,
            }),
        }
    }

    /// Handles one complete, unmasked frame; returns a message when one is finished.
    fn on_frame(
        &mut self,
        header: Header,
        payload: BytesMut,
    ) -> Result<Option<WsMessage>, FrameError> {
        match header.opcode {
            OpCode::Ping => Ok(Some(WsMessage::Ping(payload.freeze()))),
            OpCode::Pong => Ok(Some(WsMessage::Pong(payload.freeze()))),
            OpCode::Close => parse_close(payload.freeze()).map(Some),
            OpCode::Text | OpCode::Binary => {
                let text = header.opcode == OpCode::Text;
                if header.fin {
                    return self.finish(text, payload).map(Some);
                }
                self.partial = Some(Box::new(Partial {
                    text,
                    data: payload,
                }));
                Ok(None)
            }
            OpCode::Continuation => {
                let Some(mut partial) = self.partial.take() else {
                    return Err(FrameError::UnexpectedContinuation);
                };
                partial.data.extend_from_slice(&payload);
                if header.fin {
                    let Partial { text, data } = *partial;
                    return self.finish(text, data).map(Some);
                }
                self.partial = Some(partial);
                Ok(None)
            }
        }
    }

    /// Turns a complete data message into a [`WsMessage`]; its text was checked piece by piece on the
    /// way in, so only a character cut off at the end is left to refuse.
    fn finish(&mut self, text: bool, data: BytesMut) -> Result<WsMessage, FrameError> {
        if !text {
            return Ok(WsMessage::Binary(data.freeze()));
        }
        self.utf8.finish()?;
        Ok(WsMessage::Text(data.freeze()))
    }
}

/// Parses a close payload: empty, or a valid status code followed by a UTF-8 reason.
fn parse_close(payload: Bytes) -> Result<WsMessage, FrameError> {
    match payload.len() {
        0 => return Ok(WsMessage::Close(None, payload)),
        1 => return Err(FrameError::CloseTooShort),
        _ => {}
    }
    let code = u16::from_be_bytes([payload[0], payload[1]]);
    if !is_valid_close_code(code) {
        return Err(FrameError::InvalidCloseCode(code));
    }
    let reason = payload.slice(2..);
    if std::str::from_utf8(&reason).is_err() {
        return Err(FrameError::InvalidUtf8);
    }
    Ok(WsMessage::Close(Some(code), reason))
}

/// Codes a peer may put in a close frame: the defined 1000-1003 and 1007-1014 (1004 is
/// reserved, 1005/1006/1015 must never be sent), and the registered/private 3000-4999.
fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Reads `N` bytes at `at`, or `None` if the buffer is too short.
fn read_array<const N: usize>(buf: &[u8], at: usize) -> Option<[u8; N]> {
    buf.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// XORs `data` with the repeating 4-byte mask, eight bytes at a time; `offset` is the position of
/// `data` in the frame's payload (the mask repeats from the payload's first byte).
fn unmask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut mask = mask;
    mask.rotate_left(offset % 4);
    let [m0, m1, m2, m3] = mask;
    let mask64 = u64::from_ne_bytes([m0, m1, m2, m3, m0, m1, m2, m3]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ mask64).to_ne_bytes());
    }
    // Each chunk is 8 bytes, so the remainder starts on a mask boundary again.
    for (byte, m) in chunks.into_remainder().iter_mut().zip(mask.iter().cycle()) {
        *byte ^= m;
    }
}

/// Writes an unmasked server frame header with FIN set; returns its length (2, 4 or 10).
pub fn encode_header(opcode: OpCode, payload_len: usize, out: &mut [u8; 10]) -> usize {
    out[0] = 0x80 | opcode.as_u8();
    if payload_len <= MAX_CONTROL_PAYLOAD {
        out[1] = payload_len as u8; // Fits: at most 125.
        2
    } else if let Ok(len) = u16::try_from(payload_len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
        10
    }
}

/// Appends one complete unmasked server frame (header + payload) to `out`.
pub fn encode_frame(opcode: OpCode, payload: &[u8], out: &mut BytesMut) {
    let mut header = [0u8; 10];
    let header_len = encode_header(opcode, payload.len(), &mut header);
    out.reserve(header_len + payload.len());
    out.put_slice(&header[..header_len]);
    out.put_slice(payload);
}

/// A close frame with `code` and `reason`, the reason cut (on a character boundary) to fit 125 bytes.
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut cut = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + cut].copy_from_slice(&reason.as_bytes()[..cut]);
    let mut out = BytesMut::with_capacity(2 + 2 + cut);
    encode_frame(OpCode::Close, &payload[..2 + cut], &mut out);
    out.freeze()
}

/// A pong frame echoing a ping's payload (cut to 125 bytes, which a valid ping never exceeds).
pub fn pong_frame(payload: &[u8]) -> Bytes {
    let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
    let mut out = BytesMut::with_capacity(2 + payload.len());
    encode_frame(OpCode::Pong, payload, &mut out);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A client frame with first byte `b0` (FIN/RSV/opcode), masked with `MASK`.
    fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![b0];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&MASK);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        out
    }

    fn text(payload: &[u8]) -> Vec<u8> {
        frame(0x81, payload)
    }

    fn decode_all(max: usize, input: &[u8]) -> Result<Vec<WsMessage>, FrameError> {
        let mut decoder = FrameDecoder::new(max);
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(msg) = decoder.decode(&mut buf)? {
            out.push(msg);
        }
        assert!(buf.is_empty(), "leftover bytes: {buf:?}");
        Ok(out)
    }

    fn one(input: &[u8]) -> Result<WsMessage, FrameError> {
        let mut decoder = FrameDecoder::new(1 << 20);
        let mut buf = BytesMut::from(input);
        let message = decoder.decode(&mut buf)?;
        assert!(buf.is_empty(), "leftover bytes: {buf:?}");
        Ok(message.expect("a complete message"))
    }

    fn t(s: &'static str) -> WsMessage {
        WsMessage::Text(Bytes::from_static(s.as_bytes()))
    }

    #[test]
    fn accept_key_matches_rfc_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn opcode_wire_values_round_trip() {
        for op in [
            OpCode::Continuation,
            OpCode::Text,
            OpCode::Binary,
            OpCode::Close,
            OpCode::Ping,
            OpCode::Pong,
        ] {
            assert_eq!(OpCode::from_u8(op.as_u8()), Some(op));
        }
        for reserved in [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            assert_eq!(OpCode::from_u8(reserved), None);
        }
    }

    #[test]
    fn header_lengths() {
        let mut h = [0u8; 10];
        assert_eq!(encode_header(OpCode::Text, 0, &mut h), 2);
        assert_eq!(h[..2], [0x81, 0]);
        assert_eq!(encode_header(OpCode::Binary, 125, &mut h), 2);
        assert_eq!(h[..2], [0x82, 125]);
        assert_eq!(encode_header(OpCode::Text, 126, &mut h), 4);
        assert_eq!(h[..4], [0x81, 126, 0, 126]);
        assert_eq!(encode_header(OpCode::Text, 65535, &mut h), 4);
        assert_eq!(h[..4], [0x81, 126, 0xFF, 0xFF]);
        assert_eq!(encode_header(OpCode::Binary, 65536, &mut h), 10);
        assert_eq!(h, [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(encode_header(OpCode::Close, 2, &mut h), 2);
        assert_eq!(h[..2], [0x88, 2]);
    }

    #[test]
    fn close_and_pong_frames() {
        assert_eq!(&close_frame(1000, "")[..], [0x88, 2, 0x03, 0xE8]);
        assert_eq!(
            &close_frame(1009, "big")[..],
            [0x88, 5, 0x03, 0xF1, b'b', b'i', b'g']
        );
        let long = "é".repeat(100); // 200 bytes: cut to 122 so no character is split.
        let frame = close_frame(1002, &long);
        assert_eq!(frame[1] as usize, 2 + 122);
        assert!(std::str::from_utf8(&frame[4..]).is_ok());
        assert_eq!(&pong_frame(b"")[..], [0x8A, 0]);
        assert_eq!(&pong_frame(b"hi")[..], [0x8A, 2, b'h', b'i']);
        assert_eq!(pong_frame(&[7; 300]).len(), 2 + 125);
        let mut out = BytesMut::new();
        encode_frame(OpCode::Text, &[b'x'; 200], &mut out);
        assert_eq!(out.len(), 4 + 200);
        assert_eq!(out[..4], [0x81, 126, 0, 200]);
    }

    #[test]
    fn decodes_single_frames() {
        assert_eq!(one(&text(b"4hello")), Ok(t("4hello")));
        assert_eq!(one(&text(b"")), Ok(t("")));
        assert_eq!(
            one(&frame(0x82, &[1, 2, 3])),
            Ok(WsMessage::Binary(Bytes::from_static(&[1, 2, 3])))
        );
        assert_eq!(
            one(&frame(0x89, b"p")),
            Ok(WsMessage::Ping(Bytes::from_static(b"p")))
        );
        assert_eq!(one(&frame(0x8A, b"")), Ok(WsMessage::Pong(Bytes::new())));
    }

    #[test]
    fn decodes_16_and_64_bit_lengths() {
        for len in [126usize, 1000, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            assert_eq!(
                one(&frame(0x82, &payload)),
                Ok(WsMessage::Binary(Bytes::from(payload))),
                "len {len}"
            );
        }
    }

    #[test]
    fn unmask_handles_every_remainder_length() {
        for len in 0..40usize {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            assert_eq!(
                one(&frame(0x82, &payload)),
                Ok(WsMessage::Binary(Bytes::from(payload)))
            );
        }
    }

    #[test]
    fn several_frames_in_one_buffer() {
        let mut input = text(b"a");
        input.extend(frame(0x89, b""));
        input.extend(text(b"b"));
        assert_eq!(
            decode_all(100, &input),
            Ok(vec![t("a"), WsMessage::Ping(Bytes::new()), t("b")])
        );
    }

    /// "héllo wörld" in three fragments, with a ping between the 1st and 2nd; the 'é'
    /// is split across fragments, which is fine because UTF-8 is checked on the whole.
    fn fragmented_input() -> Vec<u8> {
        let s = "héllo wörld".as_bytes();
        let mut input = frame(0x01, &s[..2]); // "h" + first byte of 'é'
        input.extend(frame(0x89, b"mid"));
        input.extend(frame(0x00, &s[2..7]));
        input.extend(frame(0x80, &s[7..]));
        input
    }

    #[test]
    fn joins_fragments_with_interleaved_control_frame() {
        assert_eq!(
            decode_all(100, &fragmented_input()),
            Ok(vec![
                WsMessage::Ping(Bytes::from_static(b"mid")),
                t("héllo wörld")
            ])
        );
    }

    #[test]
    fn fragmented_binary() {
        let mut input = frame(0x02, &[1]);
        input.extend(frame(0x00, &[]));
        input.extend(frame(0x80, &[2, 3]));
        assert_eq!(
            decode_all(3, &input),
            Ok(vec![WsMessage::Binary(Bytes::from_static(&[1, 2, 3]))])
        );
    }

    #[test]
    fn byte_by_byte_input_gives_the_same_messages() {
        let mut input = fragmented_input();
        input.extend(frame(0x82, &[9; 300]));
        input.extend(frame(0x88, &[0x03, 0xE8, b'b', b'y', b'e']));
        let mut decoder = FrameDecoder::new(1000);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &b in &input {
            buf.put_u8(b);
            while let Some(msg) = decoder.decode(&mut buf).expect("valid input") {
                got.push(msg);
            }
        }
        assert!(buf.is_empty());
        assert_eq!(
            got,
            vec![
                WsMessage::Ping(Bytes::from_static(b"mid")),
                t("héllo wörld"),
                WsMessage::Binary(Bytes::from(vec![9; 300])),
                WsMessage::Close(Some(1000), Bytes::from_static(b"bye")),
            ]
        );
    }

    #[test]
    fn partial_frame_stays_in_buffer() {
        let input = text(b"hello");
        let mut decoder = FrameDecoder::new(100);
        let mut buf = BytesMut::from(&input[..input.len() - 1]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        assert_eq!(buf.len(), input.len() - 1);
        buf.put_u8(input[input.len() - 1]);
        assert_eq!(decoder.decode(&mut buf), Ok(Some(t("hello"))));
    }

    #[test]
    fn rejects_unmasked_frames() {
        assert_eq!(one(&[0x81, 0x02, b'h', b'i']), Err(FrameError::Unmasked));
        // Refused from the first two bytes, without waiting for the payload.
        assert_eq!(one(&[0x81, 0x05]), Err(FrameError::Unmasked));
    }

    #[test]
    fn rejects_reserved_bits() {
        for rsv in [0x40, 0x20, 0x10] {
            assert_eq!(one(&frame(0x81 | rsv, b"x")), Err(FrameError::ReservedBits));
        }
    }

    #[test]
    fn rejects_unknown_opcodes() {
        for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            assert_eq!(
                one(&frame(0x80 | op, b"")),
                Err(FrameError::UnknownOpcode(op))
            );
        }
    }

    #[test]
    fn rejects_bad_control_frames() {
        assert_eq!(one(&frame(0x09, b"")), Err(FrameError::FragmentedControl));
        assert_eq!(one(&frame(0x08, b"")), Err(FrameError::FragmentedControl));
        assert_eq!(
            one(&frame(0x89, &[0; 126])),
            Err(FrameError::ControlTooLong)
        );
        assert_eq!(
            one(&frame(0x8A, &[0; 126])),
            Err(FrameError::ControlTooLong)
        );
        assert_eq!(
            one(&frame(0x89, &[0; 125])),
            Ok(WsMessage::Ping(Bytes::from(vec![0; 125])))
        );
    }

    #[test]
    fn rejects_continuation_without_message() {
        assert_eq!(
            one(&frame(0x80, b"x")),
            Err(FrameError::UnexpectedContinuation)
        );
        assert_eq!(
            one(&frame(0x00, b"x")),
            Err(FrameError::UnexpectedContinuation)
        );
        // A finished message does not leave anything to continue.
        let mut input = text(b"done");
        input.extend(frame(0x80, b"x"));
        assert_eq!(
            decode_all(100, &input),
            Err(FrameError::UnexpectedContinuation)
        );
    }

    #[test]
    fn rejects_new_data_frame_inside_fragmented_message() {
        for next in [0x81u8, 0x82, 0x01, 0x02] {
            let mut input = frame(0x01, b"a");
            input.extend(frame(next, b"b"));
            assert_eq!(
                decode_all(100, &input),
                Err(FrameError::UnfinishedMessage),
                "{next:#x}"
            );
        }
    }

    #[test]
    fn rejects_64_bit_length_with_top_bit() {
        let mut input = vec![0x82, 0x80 | 127];
        input.extend_from_slice(&(1u64 << 63).to_be_bytes());
        assert_eq!(one(&input), Err(FrameError::LengthOverflow));
    }

    #[test]
    fn refuses_huge_declared_length_from_the_header_alone() {
        let mut input = vec![0x82, 0x80 | 127];
        input.extend_from_slice(&(1u64 << 40).to_be_bytes());
        // No masking key and no payload yet: the header's length is enough to refuse.
        assert_eq!(one(&input), Err(FrameError::TooLarge { limit: 1 << 20 }));
        let mut decoder = FrameDecoder::new(100);
        let mut buf = BytesMut::from(&[0x81, 0x80 | 126, 0x01, 0x00][..]);
        assert_eq!(
            decoder.decode(&mut buf),
            Err(FrameError::TooLarge { limit: 100 })
        );
    }

    #[test]
    fn enforces_max_message_on_single_frames() {
        assert_eq!(decode_all(5, &text(b"12345")), Ok(vec![t("12345")]));
        assert_eq!(
            decode_all(5, &text(b"123456")),
            Err(FrameError::TooLarge { limit: 5 })
        );
        assert_eq!(decode_all(0, &text(b"")), Ok(vec![t("")]));
    }

    #[test]
    fn enforces_max_message_across_fragments() {
        let mut ok = frame(0x01, b"123");
        ok.extend(frame(0x80, b"45"));
        assert_eq!(decode_all(5, &ok), Ok(vec![t("12345")]));
        let mut too_big = frame(0x01, b"123");
        too_big.extend(frame(0x00, b"45"));
        too_big.extend(frame(0x80, b"6"));
        assert_eq!(
            decode_all(5, &too_big),
            Err(FrameError::TooLarge { limit: 5 })
        );
    }

    #[test]
    fn control_frames_do_not_count_against_max_message() {
        assert_eq!(
            decode_all(1, &frame(0x89, b"longer ping")).map(|m| m.len()),
            Ok(1)
        );
    }

    #[test]
    fn rejects_invalid_utf8_text() {
        assert_eq!(one(&text(b"\xff")), Err(FrameError::InvalidUtf8));
        let mut input = frame(0x01, "é".as_bytes());
        input.extend(frame(0x80, b"\xc3")); // ends inside a character
        assert_eq!(decode_all(100, &input), Err(FrameError::InvalidUtf8));
        // Binary data is never checked.
        assert_eq!(
            one(&frame(0x82, b"\xff")),
            Ok(WsMessage::Binary(Bytes::from_static(b"\xff")))
        );
    }

    /// Feeds `text` to a fresh [`Utf8Stream`] in pieces cut at `cuts`; the result of `finish`.
    fn stream_check(text: &[u8], cuts: &[usize]) -> Result<(), FrameError> {
        let mut stream = Utf8Stream::default();
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&text.len())) {
            stream.feed(&text[start..cut])?;
            start = cut;
        }
        stream.finish()
    }

    #[test]
    fn utf8_stream_agrees_with_whole_text_checks_at_every_cut() {
        let samples: [&[u8]; 9] = [
            "κόσμε".as_bytes(),
            "a€b𝄞c".as_bytes(),
            b"\xf4\x8f\xbf\xbf",         // U+10FFFF, the last code point
            b"\xf4\x90\x80\x80",         // past U+10FFFF
            b"\xed\xa0\x80",             // a surrogate
            b"\xc0\xaf",                 // an overlong '/'
            b"ab\xe2\x82",               // ends inside a character
            b"\x80",                     // a lone continuation byte
            b"\xce\xba\xe1\xbd\xb9\xcf", // ends inside a character
        ];
        for text in samples {
            let whole = std::str::from_utf8(text).is_ok();
            for a in 0..=text.len() {
                for b in a..=text.len() {
                    assert_eq!(
                        stream_check(text, &[a, b]).is_ok(),
                        whole,
                        "{text:x?} cut at {a} and {b}"
                    );
                }
            }
            let bytewise: Vec<usize> = (1..text.len()).collect();
            assert_eq!(stream_check(text, &bytewise).is_ok(), whole, "{text:x?}");
        }
    }

    #[test]
    fn utf8_stream_fails_on_the_first_impossible_byte() {
        let mut stream = Utf8Stream::default();
        assert_eq!(
            stream.feed(b"ok \xf4"),
            Ok(()),
            "a valid start of a character"
        );
        assert_eq!(
            stream.feed(b"\x90"),
            Err(FrameError::InvalidUtf8),
            "past U+10FFFF"
        );
        let mut stream = Utf8Stream::default();
        assert_eq!(stream.feed(b"\xed"), Ok(()));
        assert_eq!(
            stream.feed(b"\xa0"),
            Err(FrameError::InvalidUtf8),
            "a surrogate"
        );
        let mut stream = Utf8Stream::default();
        assert_eq!(stream.feed(b"\xe2\x82"), Ok(()));
        assert_eq!(stream.finish(), Err(FrameError::InvalidUtf8));
        assert_eq!(stream.feed(b"fresh"), Ok(()), "finish starts new text");
        assert_eq!(stream.finish(), Ok(()));
    }

    #[test]
    fn invalid_fragment_fails_before_the_final_one() {
        let mut decoder = FrameDecoder::new(100);
        let mut buf = BytesMut::from(&frame(0x01, b"fine")[..]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        buf.extend_from_slice(&frame(0x00, b"\xf4\x90\x80\x80"));
        assert_eq!(decoder.decode(&mut buf), Err(FrameError::InvalidUtf8));
    }

    #[test]
    fn invalid_text_fails_before_its_frame_is_complete() {
        let mut payload = b"fine ".to_vec();
        payload.extend_from_slice(b"\xc0\xaf");
        payload.extend_from_slice(&[b'x'; 200]);
        let input = frame(0x81, &payload);
        let mut decoder = FrameDecoder::new(1000);
        // Header and the first bytes only: valid so far, so more is needed.
        let mut buf = BytesMut::from(&input[..8 + 3]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        // Up to the overlong sequence, still far from the end of the frame.
        buf.extend_from_slice(&input[8 + 3..8 + 7]);
        assert_eq!(decoder.decode(&mut buf), Err(FrameError::InvalidUtf8));
    }

    #[test]
    fn text_checked_in_pieces_is_unmasked_once() {
        // A frame received a few bytes at a time, with characters split across the reads: the text
        // comes out exactly as sent, whatever mask offset each read starts at.
        let text = "ab€c𝄞dé".repeat(9);
        let mut input = frame(0x01, &text.as_bytes()[..13]);
        input.extend(frame(0x89, b"ping"));
        input.extend(frame(0x80, &text.as_bytes()[13..]));
        for step in 1..9 {
            let mut decoder = FrameDecoder::new(1000);
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for chunk in input.chunks(step) {
                buf.extend_from_slice(chunk);
                while let Some(message) = decoder.decode(&mut buf).expect("valid input") {
                    got.push(message);
                }
            }
            assert_eq!(
                got,
                vec![
                    WsMessage::Ping(Bytes::from_static(b"ping")),
                    WsMessage::Text(Bytes::from(text.clone()))
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn close_payloads() {
        assert_eq!(
            one(&frame(0x88, b"")),
            Ok(WsMessage::Close(None, Bytes::new()))
        );
        assert_eq!(one(&frame(0x88, &[0x03])), Err(FrameError::CloseTooShort));
        for code in [
            1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1014, 3000, 3999, 4000,
            4999,
        ] {
            assert_eq!(
                one(&frame(0x88, &code.to_be_bytes())),
                Ok(WsMessage::Close(Some(code), Bytes::new())),
                "{code}"
            );
        }
        for code in [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
        ] {
            assert_eq!(
                one(&frame(0x88, &code.to_be_bytes())),
                Err(FrameError::InvalidCloseCode(code))
            );
        }
        assert_eq!(
            one(&frame(0x88, &[0x03, 0xE8, b'o', b'k'])),
            Ok(WsMessage::Close(Some(1000), Bytes::from_static(b"ok")))
        );
        assert_eq!(
            one(&frame(0x88, &[0x03, 0xE8, 0xff])),
            Err(FrameError::InvalidUtf8)
        );
    }

    #[test]
    fn close_codes_for_errors() {
        assert_eq!(FrameError::InvalidUtf8.close_code(), 1007);
        assert_eq!(FrameError::TooLarge { limit: 1 }.close_code(), 1009);
        for e in [
            FrameError::Unmasked,
            FrameError::ReservedBits,
            FrameError::UnknownOpcode(3),
            FrameError::FragmentedControl,
            FrameError::ControlTooLong,
            FrameError::UnexpectedContinuation,
            FrameError::UnfinishedMessage,
            FrameError::LengthOverflow,
            FrameError::CloseTooShort,
            FrameError::InvalidCloseCode(1005),
        ] {
            assert_eq!(e.close_code(), 1002, "{e}");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: xorshift bytes fed in varying chunk sizes.
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for round in 0..2000 {
            let mut decoder = FrameDecoder::new(64);
            let mut buf = BytesMut::new();
            for _ in 0..8 {
                for _ in 0..(round % 13 + 1) {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    buf.put_u8(state as u8 | if round % 2 == 0 { 0x80 } else { 0 });
                }
                match decoder.decode(&mut buf) {
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
    }
}
