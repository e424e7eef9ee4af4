//! Packet codec micro-benchmarks: decoding what clients send and encoding what the server sends.
//!
//! Covers the Engine.IO packet (`4<socket.io text>`), the Socket.IO packet (an EVENT carrying a ~100-byte
//! JSON object plus its offset, a CONNECT with auth, a binary EVENT header), HTTP long-polling payloads
//! (several packets joined by `\x1e`, and a base64 binary record) and RFC 6455 frames (a masked client
//! frame decoded, a server frame header encoded). Throughput is the size of the wire form handled per
//! iteration, in decimal MB/s.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tidings::engineio::packet::{Outgoing, Packet as EnginePacket};
use tidings::engineio::payload::{decode_payload, encode_payload};
use tidings::engineio::ws_frame::{encode_header, FrameDecoder, OpCode};
use tidings::socketio::packet::{encode_connect, encode_event, event_args, Packet as SocketPacket};

/// A typical chat event's data: a JSON object of about 100 bytes.
const EVENT_DATA: &str = r#"{"user":"u-1842","room":"lobby","text":"a typical chat line of about this size","ts":1732406400123}"#;

/// The offset argument appended to room events when connection state recovery is on.
const EVENT_OFFSET: &str = r#""1048576""#;

/// Socket.IO CONNECT with the auth object a recovering client sends: a JWT, its old pid and offset.
const CONNECT_WITH_AUTH: &str = concat!(
    r#"0{"token":"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1LTE4NDIiLCJyb29tcyI6WyJsb2JieSJdLCJleHAiOjE3MzI0MTAwMDB9"#,
    r#".h2n1oV7wJ8m7b0uT1q2Kc9yX5sZ3dF6gH4jL0pQ8rTk","pid":"Zx8uWq3vLm0pNc7rTb2y","offset":"1048576"}"#,
);

/// The server's CONNECT reply data: socket id and private id.
const CONNECT_REPLY: &str = r#"{"sid":"k3Jd9sLq0PzX7vBn2mWc","pid":"Zx8uWq3vLm0pNc7rTb2y"}"#;

/// Socket.IO binary EVENT header announcing one attachment.
const BINARY_EVENT: &str =
    r#"51-["upload",{"_placeholder":true,"num":0},{"name":"avatar.png","size":1024}]"#;

/// Packets in the polling bodies.
const PACKETS_PER_POLL: usize = 8;

/// Size of the binary attachment and of the large websocket frame.
const BINARY_LEN: usize = 1024;
const LARGE_FRAME_LEN: usize = 16 * 1024;

/// Masking key of the client frames.
const MASK: [u8; 4] = [0x9e, 0x21, 0x5c, 0xd3];

/// `2["message",<data>,"<offset>"]`: the Socket.IO text of a room event.
fn socketio_event_text() -> String {
    format!(r#"2["message",{EVENT_DATA},{EVENT_OFFSET}]"#)
}

/// The Engine.IO message carrying [`socketio_event_text`]: `42[...]`.
fn engineio_event_message() -> Bytes {
    Bytes::from(format!("4{}", socketio_event_text()))
}

fn throughput(len: usize) -> Throughput {
    Throughput::BytesDecimal(len as u64)
}

/// A client-to-server frame with FIN set: header, masking key, masked payload.
fn masked_client_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x80 | opcode.as_u8()];
    if payload.len() < 126 {
        frame.push(0x80 | payload.len() as u8);
    } else if let Ok(len) = u16::try_from(payload.len()) {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&len.to_be_bytes());
    } else {
        frame.push(0x80 | 127);
        frame.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    }
    frame.extend_from_slice(&MASK);
    let masked = payload.iter().zip(MASK.iter().cycle()).map(|(b, m)| b ^ m);
    frame.extend(masked);
    frame
}

/// Bytes `0, 1, 2, ...` wrapping at 256: binary data that is neither all zeros nor text.
fn binary_data(len: usize) -> Bytes {
    (0..len).map(|i| i as u8).collect::<Vec<u8>>().into()
}

fn engineio_packet(c: &mut Criterion) {
    let mut group = c.benchmark_group("engineio_packet");
    let message = engineio_event_message();
    group.throughput(throughput(message.len()));
    group.bench_function("decode_message", |b| {
        b.iter(|| EnginePacket::decode_text(black_box(message.clone())))
    });
    let packet = EnginePacket::Message(message.slice(1..));
    let mut out = BytesMut::with_capacity(message.len());
    group.bench_function("encode_message", |b| {
        b.iter(|| {
            out.clear();
            black_box(&packet).encode_text(&mut out);
            black_box(out.len())
        })
    });
    group.finish();
}

fn socketio_packet(c: &mut Criterion) {
    let mut group = c.benchmark_group("socketio_packet");
    let event = Bytes::from(socketio_event_text());
    group.throughput(throughput(event.len()));
    group.bench_function("decode_event", |b| {
        b.iter(|| SocketPacket::decode(black_box(event.clone())))
    });
    let event_data = SocketPacket::decode(event.clone())
        .expect("valid event")
        .data
        .expect("event has data");
    group.bench_function("split_event_args", |b| {
        b.iter(|| event_args(black_box(&event_data)))
    });
    let mut out = BytesMut::with_capacity(2 * event.len());
    group.bench_function("encode_event", |b| {
        b.iter(|| {
            out.clear();
            let args = [EVENT_DATA.as_bytes(), EVENT_OFFSET.as_bytes()];
            encode_event(black_box("/"), None, "message", &args, &mut out);
            black_box(out.len())
        })
    });

    let connect = Bytes::from_static(CONNECT_WITH_AUTH.as_bytes());
    group.throughput(throughput(connect.len()));
    group.bench_function("decode_connect_with_auth", |b| {
        b.iter(|| SocketPacket::decode(black_box(connect.clone())))
    });
    group.throughput(throughput(2 + CONNECT_REPLY.len()));
    group.bench_function("encode_connect_reply", |b| {
        b.iter(|| {
            out.clear();
            encode_connect(black_box("/"), CONNECT_REPLY.as_bytes(), &mut out);
            black_box(out.len())
        })
    });

    let binary_event = Bytes::from_static(BINARY_EVENT.as_bytes());
    group.throughput(throughput(binary_event.len()));
    group.bench_function("decode_binary_event", |b| {
        b.iter(|| SocketPacket::decode(black_box(binary_event.clone())))
    });
    group.finish();
}

fn polling_payload(c: &mut Criterion) {
    let mut group = c.benchmark_group("polling_payload");
    let messages: Vec<Outgoing> = (0..PACKETS_PER_POLL)
        .map(|_| Outgoing::Text(engineio_event_message()))
        .collect();
    let mut body = BytesMut::new();
    encode_payload(&messages, &mut body);
    let body = body.freeze();
    group.throughput(throughput(body.len()));
    group.bench_function(format!("decode_{PACKETS_PER_POLL}_messages"), |b| {
        b.iter(|| decode_payload(black_box(body.clone()), 1024))
    });
    let mut out = BytesMut::with_capacity(body.len());
    group.bench_function(format!("encode_{PACKETS_PER_POLL}_messages"), |b| {
        b.iter(|| {
            out.clear();
            encode_payload(black_box(&messages), &mut out);
            black_box(out.len())
        })
    });

    let attachment = [Outgoing::Binary(binary_data(BINARY_LEN))];
    let mut record = BytesMut::new();
    encode_payload(&attachment, &mut record);
    let record = record.freeze();
    group.throughput(throughput(record.len()));
    group.bench_function("decode_binary_1KiB_base64", |b| {
        b.iter(|| decode_payload(black_box(record.clone()), 1024))
    });
    group.bench_function("encode_binary_1KiB_base64", |b| {
        b.iter(|| {
            out.clear();
            encode_payload(black_box(&attachment), &mut out);
            black_box(out.len())
        })
    });
    group.finish();
}

fn websocket_frame(c: &mut Criterion) {
    let mut group = c.benchmark_group("websocket_frame");
    let mut decoder = FrameDecoder::new(1_000_000);

    let text_frame = masked_client_frame(OpCode::Text, &engineio_event_message());
    group.throughput(throughput(text_frame.len()));
    group.bench_function("decode_masked_text", |b| {
        b.iter_batched(
            || BytesMut::from(&text_frame[..]),
            |mut read_buf| {
                let message = decoder.decode(&mut read_buf);
                (read_buf, message)
            },
            BatchSize::SmallInput,
        )
    });

    let binary_frame = masked_client_frame(OpCode::Binary, &binary_data(LARGE_FRAME_LEN));
    group.throughput(throughput(binary_frame.len()));
    group.bench_function("decode_masked_binary_16KiB", |b| {
        b.iter_batched(
            || BytesMut::from(&binary_frame[..]),
            |mut read_buf| {
                let message = decoder.decode(&mut read_buf);
                (read_buf, message)
            },
            BatchSize::LargeInput,
        )
    });

    let payload_len = engineio_event_message().len();
    let mut header = [0u8; 10];
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode_text_header", |b| {
        b.iter(|| encode_header(OpCode::Text, black_box(payload_len), &mut header))
    });
    group.finish();
}

criterion_group!(
    codec,
    engineio_packet,
    socketio_packet,
    polling_payload,
    websocket_frame
);
criterion_main!(codec);
