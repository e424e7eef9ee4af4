//! The client side of RFC 6455, as much as the bench needs: the upgrade request and its 101 answer, masked
//! frames out, unmasked server frames in. The server side lives in `engineio::ws_frame`, whose opcodes and
//! `Sec-WebSocket-Accept` computation this reuses.

use base64::Engine as _;
use thiserror::Error;

use crate::engineio::ws_frame::{accept_key, OpCode};

/// Largest server message the bench accepts (fragments joined).
pub const MAX_MESSAGE: usize = 16 << 20;
/// Largest upgrade answer (status line and headers).
const MAX_UPGRADE_RESPONSE: usize = 8192;

/// Why the server's bytes are not a websocket stream the bench can follow.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum WsError {
    /// The upgrade was answered with another status than 101.
    #[error("upgrade refused with HTTP {0}")]
    Refused(u16),
    /// The upgrade answer is not HTTP, too long, or lacks the right `Sec-WebSocket-Accept`.
    #[error("bad upgrade answer: {0}")]
    BadUpgrade(&'static str),
    /// A server frame is masked, uses reserved bits or opcodes, or breaks fragmentation rules.
    #[error("bad frame: {0}")]
    BadFrame(&'static str),
    /// A message longer than [`MAX_MESSAGE`].
    #[error("message larger than {MAX_MESSAGE} bytes")]
    TooLarge,
}

/// A random `Sec-WebSocket-Key` and the upgrade request carrying it.
pub fn upgrade_request(host: &str, path_and_query: &str) -> (String, Vec<u8>) {
    let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
    let request = format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    (key, request.into_bytes())
}

/// Checks the server's answer to the upgrade; `Ok(Some(n))` when complete, `n` being the header length (frames
/// may follow in the same buffer), `Ok(None)` when more bytes are needed.
pub fn parse_upgrade_response(buf: &[u8], key: &str) -> Result<Option<usize>, WsError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_UPGRADE_RESPONSE => return Ok(None),
        Ok(httparse::Status::Partial) => return Err(WsError::BadUpgrade("headers too long")),
        Err(_) => return Err(WsError::BadUpgrade("not an HTTP response")),
    };
    match response.code {
        Some(101) => {}
        Some(code) => return Err(WsError::Refused(code)),
        None => return Err(WsError::BadUpgrade("no status")),
    }
    let accept = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
        .ok_or(WsError::BadUpgrade("no Sec-WebSocket-Accept"))?;
    if accept.value != accept_key(key.as_bytes()).as_bytes() {
        return Err(WsError::BadUpgrade("wrong Sec-WebSocket-Accept"));
    }
    Ok(Some(len))
}

/// Appends one masked client frame with FIN set (RFC 6455 section 5.3: every client frame is masked).
pub fn encode_masked(opcode: OpCode, payload: &[u8], out: &mut Vec<u8>) {
    out.push(0x80 | opcode.as_u8());
    match payload.len() {
        len @ 0..=125 => out.push(0x80 | len as u8),
        len if len <= usize::from(u16::MAX) => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    let mask: [u8; 4] = rand::random();
    out.extend_from_slice(&mask);
    out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
}

/// One server frame, borrowed from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Final fragment of its message.
    pub fin: bool,
    /// What the frame carries.
    pub opcode: OpCode,
    /// The payload (server frames are not masked).
    pub payload: &'a [u8],
}

/// Parses the server frame at the front of `buf`: `Ok(Some((frame, consumed)))`, or `Ok(None)` when the frame
/// is not all there yet.
pub fn parse_frame(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, WsError> {
    let (b0, b1) = match buf {
        [b0, b1, ..] => (*b0, *b1),
        _ => return Ok(None),
    };
    if b0 & 0x70 != 0 {
        return Err(WsError::BadFrame("reserved bits set"));
    }
    let opcode = OpCode::from_u8(b0 & 0x0F).ok_or(WsError::BadFrame("unknown opcode"))?;
    if b1 & 0x80 != 0 {
        return Err(WsError::BadFrame("masked server frame"));
    }
    let (header, len) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (4, u64::from(u16::from_be_bytes([b[0], b[1]]))),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => (10, u64::from_be_bytes(b.try_into().expect("8 bytes"))),
            None => return Ok(None),
        },
        n => (2, u64::from(n)),
    };
    let len = usize::try_from(len)
        .ok()
        .filter(|&l| l <= MAX_MESSAGE)
        .ok_or(WsError::TooLarge)?;
    let Some(payload) = buf.get(header..header + len) else {
        return Ok(None);
    };
    let fin = b0 & 0x80 != 0;
    if opcode.is_control() && (!fin || len > 125) {
        return Err(WsError::BadFrame("bad control frame"));
    }
    Ok(Some((
        Frame {
            fin,
            opcode,
            payload,
        },
        header + len,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engineio::ws_frame::{encode_frame, FrameDecoder, WsMessage};
    use bytes::BytesMut;

    #[test]
    fn masked_frames_decode_on_the_server_side() {
        for len in [0usize, 1, 125, 126, 1000, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 90) as u8 + b' ').collect();
            let mut wire = Vec::new();
            encode_masked(OpCode::Text, &payload, &mut wire);
            let mut buf = BytesMut::from(&wire[..]);
            let got = FrameDecoder::new(1 << 20).decode(&mut buf).unwrap();
            assert_eq!(got, Some(WsMessage::Text(payload.into())), "len {len}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn server_frames_parse() {
        let mut wire = BytesMut::new();
        encode_frame(OpCode::Text, b"42[\"message\"]", &mut wire);
        encode_frame(OpCode::Ping, b"p", &mut wire);
        encode_frame(OpCode::Binary, &[7; 300], &mut wire);
        let (first, n1) = parse_frame(&wire).unwrap().unwrap();
        assert_eq!(first.payload, b"42[\"message\"]");
        assert!(first.fin && first.opcode == OpCode::Text);
        let (second, n2) = parse_frame(&wire[n1..]).unwrap().unwrap();
        assert_eq!((second.opcode, second.payload), (OpCode::Ping, &b"p"[..]));
        let (third, n3) = parse_frame(&wire[n1 + n2..]).unwrap().unwrap();
        assert_eq!(third.payload.len(), 300);
        assert_eq!(n1 + n2 + n3, wire.len());
        // Every proper prefix is "need more".
        for cut in 0..n1 {
            assert_eq!(parse_frame(&wire[..cut]), Ok(None), "cut {cut}");
        }
    }

    #[test]
    fn bad_server_frames() {
        assert!(
            parse_frame(&[0x81, 0x81, 0, 0, 0, 0, b'x']).is_err(),
            "masked"
        );
        assert!(parse_frame(&[0xC1, 0x00]).is_err(), "rsv1");
        assert!(parse_frame(&[0x83, 0x00]).is_err(), "opcode 3");
        assert!(parse_frame(&[0x09, 0x00]).is_err(), "fragmented ping");
        let mut huge = vec![0x82, 127];
        huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
        assert_eq!(parse_frame(&huge), Err(WsError::TooLarge));
    }

    #[test]
    fn upgrade_answers() {
        let (key, request) =
            upgrade_request("127.0.0.1:1", "/socket.io/?EIO=4&transport=websocket");
        let text = String::from_utf8(request).unwrap();
        assert!(text.starts_with("GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"));
        assert!(text.contains(&format!("Sec-WebSocket-Key: {key}\r\n")));
        let ok = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n\x01\x01x",
            accept_key(key.as_bytes())
        );
        assert_eq!(
            parse_upgrade_response(ok.as_bytes(), &key),
            Ok(Some(ok.len() - 3))
        );
        assert_eq!(parse_upgrade_response(&ok.as_bytes()[..20], &key), Ok(None));
        let wrong = ok.replace(&accept_key(key.as_bytes()), "AAAA");
        assert!(parse_upgrade_response(wrong.as_bytes(), &key).is_err());
        let refused = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(
            parse_upgrade_response(refused, &key),
            Err(WsError::Refused(400))
        );
    }
}
