//! The WebSocket frame decoder (`FrameDecoder`, with the server's 1 MB message limit), fed the stream in
//! fuzzer-chosen chunk sizes: never panics, and every decoded message, re-encoded with `encode_frame` (and
//! masked, as a client must), decodes to the same message.
//!
//! Input: two bytes seed the chunk sizes, the rest is the byte stream a client sends.
#![no_main]

use bytes::{BufMut, BytesMut};
use libfuzzer_sys::fuzz_target;
use tidings::engineio::ws_frame::{encode_frame, FrameDecoder, OpCode, WsMessage};

tidings_fuzz::cap_allocations!();

/// `engine.max_payload` by default.
const MAX_MESSAGE: usize = 1_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&[a, b], stream)) = data.split_first_chunk::<2>() else {
        return;
    };
    let mut chunks = ChunkSizes(u16::from_le_bytes([a, b]) as u32 | 1);
    let mut decoder = FrameDecoder::new(MAX_MESSAGE);
    let mut buf = BytesMut::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(chunks.next().min(rest.len()));
        rest = tail;
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(message)) => round_trip(&message),
                Ok(None) => break,
                // The connection is closed on any error; nothing more is read.
                Err(error) => {
                    let _ = error.close_code();
                    return;
                }
            }
        }
    }
});

/// Chunk sizes from 1 to 64 bytes, or a large one now and then, from a xorshift sequence.
struct ChunkSizes(u32);

impl ChunkSizes {
    fn next(&mut self) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        match self.0 % 8 {
            0 => 4096,
            _ => 1 + (self.0 >> 8) as usize % 64,
        }
    }
}

/// Re-encodes `message` as one masked client frame and checks a fresh decoder returns it unchanged.
fn round_trip(message: &WsMessage) {
    let (opcode, payload) = match message {
        WsMessage::Text(p) => (OpCode::Text, p.to_vec()),
        WsMessage::Binary(p) => (OpCode::Binary, p.to_vec()),
        WsMessage::Ping(p) => (OpCode::Ping, p.to_vec()),
        WsMessage::Pong(p) => (OpCode::Pong, p.to_vec()),
        WsMessage::Close(None, _) => (OpCode::Close, Vec::new()),
        WsMessage::Close(Some(code), reason) => {
            let mut p = code.to_be_bytes().to_vec();
            p.extend_from_slice(reason);
            (OpCode::Close, p)
        }
    };
    let mut server_frame = BytesMut::new();
    encode_frame(opcode, &payload, &mut server_frame);
    let mut client_frame = masked(&server_frame, payload.len(), [0x37, 0xfa, 0x21, 0x3d]);
    let again = FrameDecoder::new(MAX_MESSAGE)
        .decode(&mut client_frame)
        .expect("a re-encoded message decodes")
        .expect("a whole frame is a whole message");
    assert_eq!(&again, message, "frame round trip");
    assert!(client_frame.is_empty(), "the frame is consumed whole");
}

/// The client form of an unmasked server frame: mask bit set, key after the header, payload masked.
fn masked(frame: &[u8], payload_len: usize, key: [u8; 4]) -> BytesMut {
    let header_len = frame.len() - payload_len;
    let mut out = BytesMut::with_capacity(frame.len() + 4);
    out.put_u8(frame[0]);
    out.put_u8(frame[1] | 0x80);
    out.put_slice(&frame[2..header_len]);
    out.put_slice(&key);
    for (i, byte) in frame[header_len..].iter().enumerate() {
        out.put_u8(byte ^ key[i % 4]);
    }
    out
}
