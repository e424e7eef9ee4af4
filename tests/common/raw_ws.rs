//! A websocket client on a bare TCP stream, for input no websocket library would send.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{connect_packet, WAIT};

/// A websocket client on a bare TCP stream: the upgrade is done by hand and frames are written byte by byte, so
/// a test can send what no websocket library would (unmasked frames, absurd lengths, invalid UTF-8).
pub struct RawWs {
    /// The TCP stream, after the upgrade.
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// The Engine.IO open packet's JSON.
    pub open: Value,
}

/// A server frame: opcode and payload.
pub type ServerFrame = (u8, Vec<u8>);

impl RawWs {
    /// Connects, upgrades and reads the open packet.
    pub async fn handshake(addr: SocketAddr) -> RawWs {
        Self::handshake_on(TcpStream::connect(addr).await.unwrap(), addr).await
    }

    /// Like [`RawWs::handshake`], on a stream the caller connected (e.g. with a small receive buffer).
    pub async fn handshake_on(stream: TcpStream, addr: SocketAddr) -> RawWs {
        let mut raw = Self::upgrade(stream, addr, "/socket.io/?EIO=4&transport=websocket").await;
        let (opcode, payload) = raw.read_frame(WAIT).await.expect("no open packet");
        assert_eq!(opcode, 1);
        let text = String::from_utf8(payload).unwrap();
        raw.open = serde_json::from_str(text.strip_prefix('0').unwrap()).unwrap();
        raw
    }

    /// Upgrades `stream` on the plain websocket endpoint `path` (no Engine.IO open packet is read).
    pub async fn upgrade(mut stream: TcpStream, addr: SocketAddr, path: &str) -> RawWs {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
                .await
                .expect("upgrade response timed out")
                .unwrap();
            assert!(n > 0, "connection closed during upgrade");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        assert!(
            head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "wrong accept key: {head}"
        );
        let rest = buf.split_off(head_end);
        RawWs {
            stream,
            buf: rest,
            open: Value::Null,
        }
    }

    /// A masked client frame with FIN set.
    pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        Self::frame_with(opcode, payload, true)
    }

    /// A client frame with FIN set, masked or not.
    pub fn frame_with(opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
        Self::frame_bits(0x80 | opcode, payload, masked)
    }

    /// A client frame whose first byte (FIN, RSV bits, opcode) is `b0`, masked or not.
    pub fn frame_bits(b0: u8, payload: &[u8], masked: bool) -> Vec<u8> {
        let mask_bit = if masked { 0x80 } else { 0 };
        let mut out = vec![b0];
        match payload.len() {
            n if n < 126 => out.push(mask_bit | n as u8),
            n if n <= 0xFFFF => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            let mask = [0x37, 0xfa, 0x21, 0x3d];
            out.extend_from_slice(&mask);
            out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        } else {
            out.extend_from_slice(payload);
        }
        out
    }

    /// Writes bytes as they are (errors ignored: the server may already have closed).
    pub async fn write_raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// Sends a masked text frame.
    pub async fn send_text(&mut self, text: &str) {
        let frame = Self::frame(1, text.as_bytes());
        self.write_raw(&frame).await;
    }

    /// Sends a CONNECT with `token` and waits for `40{…}`; returns its JSON.
    pub async fn socketio_connect(&mut self, token: &str) -> Value {
        self.send_text(&connect_packet(token)).await;
        let text = self.recv_text_until(|t| t.starts_with("40")).await;
        serde_json::from_str(&text[2..]).unwrap()
    }

    /// Reads text frames (answering pings) until one matches; panics on timeout or close.
    pub async fn recv_text_until(&mut self, pred: impl Fn(&str) -> bool) -> String {
        loop {
            let (opcode, payload) = self.read_frame(WAIT).await.expect("closed or timed out");
            if opcode != 1 {
                continue;
            }
            let text = String::from_utf8(payload).unwrap();
            if text == "2" {
                self.send_text("3").await;
            } else if pred(&text) {
                return text;
            }
        }
    }

    /// Reads one server frame; `None` on EOF, error or timeout.
    pub async fn read_frame(&mut self, timeout: Duration) -> Option<ServerFrame> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(frame) = self.parse_frame() {
                return Some(frame);
            }
            let mut chunk = vec![0u8; 64 * 1024];
            let read = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await;
            match read {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }

    fn parse_frame(&mut self) -> Option<ServerFrame> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        assert_eq!(b[1] & 0x80, 0, "server frames must not be masked");
        let (len, header) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (
                u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => return None,
            n => (n as usize, 2),
        };
        if b.len() < header + len {
            return None;
        }
        let opcode = b[0] & 0x0f;
        let payload = b[header..header + len].to_vec();
        self.buf.drain(..header + len);
        Some((opcode, payload))
    }

    /// Reads until the server's close frame (returns its code) or the end of the stream (`None`); panics if the
    /// connection is still open after `timeout`.
    pub async fn expect_closed(&mut self, timeout: Duration) -> Option<u16> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((opcode, payload)) = self.parse_frame() {
                if opcode == 8 {
                    return payload
                        .get(..2)
                        .map(|code| u16::from_be_bytes([code[0], code[1]]));
                }
                continue;
            }
            let mut chunk = vec![0u8; 64 * 1024];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                Ok(_) => return None,
                Err(_) => panic!("connection still open after {timeout:?}"),
            }
        }
    }
}
