//! WebSocket conformance over real sockets: the raw echo endpoint of `serve --conformance` (what the
//! Autobahn test-suite drives, see `scripts/autobahn.sh`) and the RFC 6455 behaviour every websocket
//! connection shares with it: pongs that survive a full socket, text checked as it arrives, and a close
//! that ends the TCP stream cleanly.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{start, RawWs, WAIT};
use tidings::server::RunningNode;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// A conformance-mode node; its Engine.IO endpoints get a fast heartbeat, which the raw echo must not run.
async fn conformance_node() -> RunningNode {
    start(|c| {
        c.conformance = true;
        c.engine.ping_interval_ms = 100;
        c.engine.ping_timeout_ms = 100;
    })
    .await
}

async fn echo_client(addr: SocketAddr) -> RawWs {
    RawWs::upgrade(TcpStream::connect(addr).await.unwrap(), addr, "/ws-echo").await
}

/// A masked client frame with the FIN bit as given.
fn fragment(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    RawWs::frame_bits(if fin { 0x80 } else { 0 } | opcode, payload, true)
}

#[tokio::test]
async fn raw_echo_returns_messages_unchanged_without_engineio_framing_or_heartbeat() {
    let node = conformance_node().await;
    let mut ws = echo_client(node.local_addr()).await;

    ws.write_raw(&RawWs::frame(1, "héllo".as_bytes())).await;
    assert_eq!(
        ws.read_frame(WAIT).await,
        Some((1, "héllo".as_bytes().to_vec()))
    );
    ws.write_raw(&RawWs::frame(2, &[0, 255, 7])).await;
    assert_eq!(ws.read_frame(WAIT).await, Some((2, vec![0, 255, 7])));
    // A fragmented message comes back whole, as one frame.
    let mut fragmented = fragment(false, 1, b"ab");
    fragmented.extend(fragment(false, 0, b"cd"));
    fragmented.extend(fragment(true, 0, b"e"));
    ws.write_raw(&fragmented).await;
    assert_eq!(ws.read_frame(WAIT).await, Some((1, b"abcde".to_vec())));

    // Several heartbeat periods of the node's Engine.IO endpoints: no ping, and no timeout either.
    assert_eq!(ws.read_frame(Duration::from_millis(600)).await, None);
    ws.write_raw(&RawWs::frame(1, b"still here")).await;
    assert_eq!(ws.read_frame(WAIT).await, Some((1, b"still here".to_vec())));
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn raw_echo_carries_messages_above_the_engineio_max_payload() {
    let node = conformance_node().await;
    let mut ws = echo_client(node.local_addr()).await;
    let big: Vec<u8> = (0..4 << 20).map(|i| (i % 251) as u8).collect();
    ws.write_raw(&RawWs::frame(2, &big)).await;
    let (opcode, payload) = ws.read_frame(WAIT).await.expect("the echo");
    assert_eq!(opcode, 2);
    assert!(payload == big, "the 4 MiB echo differs");
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_ping_is_answered_while_the_socket_is_full() {
    let node = conformance_node().await;
    let addr = node.local_addr();
    // A tiny receive buffer, so the echoes below fill the server's socket and its writer has to wait.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut ws = RawWs::upgrade(socket.connect(addr).await.unwrap(), addr, "/ws-echo").await;
    const MESSAGES: usize = 8;
    let message = vec![7u8; 1 << 20];
    for _ in 0..MESSAGES {
        ws.write_raw(&RawWs::frame(2, &message)).await;
    }
    // Give the server time to read them all and block on writing the echoes (no read on this side yet).
    tokio::time::sleep(Duration::from_millis(300)).await;
    ws.write_raw(&RawWs::frame(9, b"are you there")).await;

    for i in 0..MESSAGES {
        let (opcode, payload) = ws.read_frame(WAIT).await.expect("an echo");
        assert_eq!((opcode, payload.len()), (2, message.len()), "echo {i}");
    }
    assert_eq!(
        ws.read_frame(WAIT).await,
        Some((10, b"are you there".to_vec())),
        "the pong, after the echoes queued before the ping"
    );
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn invalid_utf8_in_a_fragment_fails_before_the_message_ends() {
    let node = conformance_node().await;
    let mut ws = echo_client(node.local_addr()).await;
    ws.write_raw(&fragment(false, 1, b"valid so far")).await;
    // U+110000 is past the last code point: no continuation can make this valid.
    ws.write_raw(&fragment(false, 0, &[0xf4, 0x90, 0x80, 0x80]))
        .await;
    // The final fragment is never sent: the server must fail the connection on what it has.
    assert_eq!(ws.expect_closed(WAIT).await, Some(1007));
    node.shutdown(Duration::from_millis(200)).await;
}

/// A frame that arrives in pieces with pauses between them (the connection waits without a task, holding the
/// piece it has) comes back whole, also in the middle of a fragmented message.
#[tokio::test]
async fn a_frame_split_over_pauses_is_kept_while_the_connection_waits() {
    let node = conformance_node().await;
    let mut ws = echo_client(node.local_addr()).await;
    let payload: Vec<u8> = (0..300u32).map(|i| b'a' + (i % 26) as u8).collect();
    let frame = RawWs::frame(1, &payload);
    for piece in [&frame[..1], &frame[1..5], &frame[5..150], &frame[150..]] {
        ws.write_raw(piece).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(ws.read_frame(WAIT).await, Some((1, payload.clone())));
    let first = fragment(false, 1, b"first half, ");
    let last = fragment(true, 0, b"second half");
    ws.write_raw(&first).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    ws.write_raw(&last[..3]).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    ws.write_raw(&last[3..]).await;
    assert_eq!(
        ws.read_frame(WAIT).await,
        Some((1, b"first half, second half".to_vec()))
    );
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn invalid_utf8_inside_a_frame_fails_before_the_frame_ends() {
    let node = conformance_node().await;
    let mut ws = echo_client(node.local_addr()).await;
    let mut payload = b"valid so far ".to_vec();
    payload.extend_from_slice(&[
        0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5,
    ]);
    payload.extend_from_slice(&[0xed, 0xa0, 0x80]); // a UTF-16 surrogate: never valid UTF-8
    payload.extend(std::iter::repeat_n(b'x', 4096));
    let frame = RawWs::frame(1, &payload);
    // Everything but the last byte: the frame is never complete.
    ws.write_raw(&frame[..frame.len() - 1]).await;
    assert_eq!(ws.expect_closed(WAIT).await, Some(1007));
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_failed_connection_ends_with_a_close_frame_and_a_clean_tcp_close() {
    let node = conformance_node().await;
    let mut ws = echo_client(node.local_addr()).await;
    // A frame with a reserved bit set, then more data the server will never read as frames.
    let mut bytes = RawWs::frame_bits(0x80 | 0x40 | 1, b"rsv1", true);
    for _ in 0..64 {
        bytes.extend(RawWs::frame(2, &[1u8; 4096]));
    }
    ws.write_raw(&bytes).await;
    assert_eq!(ws.expect_closed(WAIT).await, Some(1002));
    // After the close frame the server ends the stream with FIN: a reset would make clients report an
    // abnormal closure, and may destroy the close frame before they read it.
    let mut rest = [0u8; 1024];
    let end = tokio::time::timeout(WAIT, ws.stream.read(&mut rest))
        .await
        .expect("the server keeps the connection open");
    assert!(matches!(end, Ok(0)), "expected end of stream, got {end:?}");
    node.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_client_close_is_answered_with_the_same_kind_of_close() {
    let node = conformance_node().await;
    let mut ws = echo_client(node.local_addr()).await;
    ws.write_raw(&RawWs::frame(1, b"last words")).await;
    ws.write_raw(&RawWs::frame(8, &[0x03, 0xe8, b'b', b'y', b'e']))
        .await;
    assert_eq!(ws.read_frame(WAIT).await, Some((1, b"last words".to_vec())));
    assert_eq!(ws.expect_closed(WAIT).await, Some(1000));
    let mut rest = [0u8; 16];
    let end = tokio::time::timeout(WAIT, ws.stream.read(&mut rest))
        .await
        .expect("the server keeps the connection open");
    assert!(matches!(end, Ok(0)), "expected end of stream, got {end:?}");
    node.shutdown(Duration::from_millis(200)).await;
}
