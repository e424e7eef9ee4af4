//! Hostile and malformed input: every case closes the offending connection (with the fitting websocket close
//! code where one applies) while a bystander on the same node keeps receiving events.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use common::{start, token, Api, Polling, RawWs, WsClient, WAIT};
use serde_json::{json, Value};
use tidings::config::Config;

/// Runs one case on a fresh node: a bystander joined to `news` connects first, then `victim` misbehaves and
/// reports how its connection ended (the close code, if any). Afterwards the victim's session must be gone and
/// the bystander must still receive a published event.
async fn case<F, Fut>(tweak: impl FnOnce(&mut Config), victim: F) -> Option<u16>
where
    F: FnOnce(SocketAddr) -> Fut,
    Fut: Future<Output = Option<u16>>,
{
    let node = start(tweak).await;
    let addr = node.local_addr();
    let api = Api::new(addr);
    let (mut bystander, _) = WsClient::connect(addr, &token("bob", &[], &["news"], &[])).await;
    let code = victim(addr).await;
    api.wait_connections(1, WAIT).await;
    api.publish("news", "update", json!({ "after": "bad input" }))
        .await;
    bystander
        .recv_event_with("update", "after", &json!("bad input"), WAIT)
        .await;
    assert!(!bystander.is_closed());
    node.shutdown(Duration::from_millis(200)).await;
    code
}

/// Opens a websocket session (Socket.IO-connected when `connect`), sends `text`, and waits for the close.
async fn ws_text(addr: SocketAddr, connect: bool, text: String) -> Option<u16> {
    let mut victim = ws_victim(addr, connect).await;
    victim.send_text(&text);
    victim.expect_closed(WAIT).await
}

/// Like [`ws_text`] with a binary frame.
async fn ws_binary(addr: SocketAddr, connect: bool, data: Vec<u8>) -> Option<u16> {
    let mut victim = ws_victim(addr, connect).await;
    victim.send_binary(data);
    victim.expect_closed(WAIT).await
}

async fn ws_victim(addr: SocketAddr, connect: bool) -> WsClient {
    if connect {
        WsClient::connect(addr, &token("mallory", &[], &["news"], &[]))
            .await
            .0
    } else {
        WsClient::handshake(addr).await
    }
}

/// Handshakes on a raw socket, writes `bytes` and waits for the close.
async fn raw_bytes(addr: SocketAddr, bytes: Vec<u8>) -> Option<u16> {
    let mut victim = RawWs::handshake(addr).await;
    victim.write_raw(&bytes).await;
    victim.expect_closed(WAIT).await
}

fn no_tweak(_: &mut Config) {}

// --- Engine.IO garbage -------------------------------------------------------------------------------------

#[tokio::test]
async fn engineio_unknown_packet_type_letter() {
    let code = case(no_tweak, |a| ws_text(a, false, "x".into())).await;
    assert_eq!(code, Some(1002));
}

#[tokio::test]
async fn engineio_empty_text_frame() {
    let code = case(no_tweak, |a| ws_text(a, false, String::new())).await;
    assert_eq!(code, Some(1002));
}

#[tokio::test]
async fn engineio_unknown_packet_type_digit() {
    let code = case(no_tweak, |a| ws_text(a, false, "9".into())).await;
    assert_eq!(code, Some(1002));
}

// --- Socket.IO malformed -----------------------------------------------------------------------------------

#[tokio::test]
async fn socketio_unknown_packet_type() {
    let code = case(no_tweak, |a| ws_text(a, true, "4abc".into())).await;
    assert_eq!(code, Some(1002));
}

#[tokio::test]
async fn socketio_event_payload_not_an_array() {
    let code = case(no_tweak, |a| ws_text(a, true, "42{}".into())).await;
    assert_eq!(code, Some(1002));
}

#[tokio::test]
async fn socketio_event_with_junk_before_payload() {
    let code = case(no_tweak, |a| ws_text(a, true, r#"42abc["x",1]"#.into())).await;
    assert_eq!(code, Some(1002));
}

#[tokio::test]
async fn socketio_binary_event_without_attachment_count() {
    let code = case(no_tweak, |a| ws_text(a, true, r#"45-["x",1]"#.into())).await;
    assert_eq!(code, Some(1002));
}

#[tokio::test]
async fn socketio_binary_attachment_with_nothing_pending() {
    let code = case(no_tweak, |a| ws_binary(a, true, vec![1, 2, 3, 4])).await;
    assert_eq!(code, Some(1002));
}

/// Without a connected namespace (no token checked yet) a session may not announce attachments: nothing is
/// buffered for it.
#[tokio::test]
async fn socketio_binary_event_before_connect() {
    let announce = r#"451-["x",{"_placeholder":true,"num":0}]"#.to_owned();
    let code = case(no_tweak, |a| ws_text(a, false, announce)).await;
    assert_eq!(code, Some(1002));
}

/// The attachments of one packet share one budget (`maxPayload` in all): past it the session is closed before
/// the rest is held.
#[tokio::test]
async fn socketio_attachments_over_budget() {
    let code = case(
        |c| c.engine.max_payload = 100_000,
        |addr| async move {
            let mut victim = ws_victim(addr, true).await;
            let placeholders: Vec<String> = (0..3)
                .map(|n| format!(r#"{{"_placeholder":true,"num":{n}}}"#))
                .collect();
            victim.send_text(&format!(r#"453-["x",{}]"#, placeholders.join(",")));
            for _ in 0..3 {
                victim.send_binary(vec![7; 40_000]);
            }
            victim.expect_closed(WAIT).await
        },
    )
    .await;
    assert_eq!(code, Some(1009));
}

/// Placeholders must name each announced attachment exactly once.
#[tokio::test]
async fn socketio_placeholder_past_the_attachments() {
    let text = r#"451-["x",{"_placeholder":true,"num":3}]"#.to_owned();
    let code = case(no_tweak, |a| ws_text(a, true, text)).await;
    assert_eq!(code, Some(1002));
}

// --- Websocket framing -------------------------------------------------------------------------------------

#[tokio::test]
async fn random_binary_frame_before_connect() {
    // A fixed xorshift stream: random-looking, but the same on every run.
    let mut x: u32 = 0x9e37_79b9;
    let bytes: Vec<u8> = (0..512)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let code = case(no_tweak, |a| ws_binary(a, false, bytes)).await;
    assert_eq!(code, Some(1002));
}

#[tokio::test]
async fn unmasked_client_frame() {
    let frame = RawWs::frame_with(1, b"4hello", false);
    let code = case(no_tweak, |a| raw_bytes(a, frame)).await;
    assert_eq!(code, Some(1002));
}

#[tokio::test]
async fn frame_declaring_a_terabyte() {
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 40).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    header.extend_from_slice(&[0u8; 64]);
    let code = case(no_tweak, |a| raw_bytes(a, header)).await;
    assert_eq!(code, Some(1009));
}

#[tokio::test]
async fn text_message_over_max_payload() {
    let big = format!(r#"42["publish",{{"pad":"{}"}}]"#, "a".repeat(20_000));
    let code = case(|c| c.engine.max_payload = 10_000, |a| ws_text(a, true, big)).await;
    assert_eq!(code, Some(1009));
}

#[tokio::test]
async fn packet_flood() {
    let code = case(
        |c| c.limits.client_packets_per_sec = 10,
        |addr| async move {
            let mut victim = ws_victim(addr, true).await;
            for i in 0..200 {
                victim.send_text(&format!(r#"42["noise",{i}]"#));
            }
            victim.expect_closed(WAIT).await
        },
    )
    .await;
    assert_eq!(code, Some(1008));
}

/// Control packets count against the per-connection rate limit too: websocket ping frames, Engine.IO pongs and
/// noops, each of which the server used to take for free.
async fn control_flood(addr: SocketAddr, frame: Vec<u8>) -> Option<u16> {
    let mut victim = RawWs::handshake(addr).await;
    for _ in 0..200 {
        victim.write_raw(&frame).await;
    }
    victim.expect_closed(WAIT).await
}

/// Sends `frame` past a packet rate of 10/s and expects the flood close (1008).
async fn assert_flood_closes(frame: Vec<u8>) {
    let code = case(
        |c| c.limits.client_packets_per_sec = 10,
        |a| control_flood(a, frame),
    )
    .await;
    assert_eq!(code, Some(1008));
}

#[tokio::test]
async fn websocket_ping_frame_flood() {
    assert_flood_closes(RawWs::frame(9, b"are you there")).await;
}

#[tokio::test]
async fn websocket_pong_frame_flood() {
    assert_flood_closes(RawWs::frame(10, b"")).await;
}

#[tokio::test]
async fn engineio_pong_flood() {
    assert_flood_closes(RawWs::frame(1, b"3")).await;
}

#[tokio::test]
async fn engineio_noop_flood() {
    assert_flood_closes(RawWs::frame(1, b"6")).await;
}

/// The same over long-polling: one POST of 200 noops closes the session.
#[tokio::test]
async fn polling_noop_flood() {
    case(
        |c| c.limits.client_packets_per_sec = 10,
        |addr| async move {
            let victim = Polling::handshake(addr).await;
            let noops = vec!["6"; 200].join("\x1e");
            let (status, _) = victim.post(noops).await;
            assert_eq!(status, 400);
            let (status, _) = victim.get().await;
            assert_eq!(status, 400, "the session is gone");
            None
        },
    )
    .await;
}

fn invalid_utf8_frame() -> Vec<u8> {
    RawWs::frame(1, &[b'4', b'2', b'[', b'"', 0xff, 0xfe, b'"', b']'])
}

#[tokio::test]
async fn invalid_utf8_text_frame_closes_the_connection() {
    let code = case(no_tweak, |a| raw_bytes(a, invalid_utf8_frame())).await;
    assert!(
        matches!(code, Some(1002 | 1007)),
        "expected a protocol-level close, got {code:?}"
    );
}

#[tokio::test]
async fn invalid_utf8_text_frame_is_closed_with_1007() {
    let code = case(no_tweak, |a| raw_bytes(a, invalid_utf8_frame())).await;
    assert_eq!(code, Some(1007));
}

// --- Long-polling ------------------------------------------------------------------------------------------

/// The JSON error body of an Engine.IO error reply.
fn engine_error(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not a JSON error body: {body:?}"))
}

#[tokio::test]
async fn polling_post_over_max_payload_is_413_and_ends_the_session() {
    case(
        |c| c.engine.max_payload = 10_000,
        |addr| async move {
            let victim = Polling::handshake(addr).await;
            let (status, _) = victim.post(format!("4{}", "a".repeat(20_000))).await;
            assert_eq!(status, 413);
            let (status, body) = victim.get().await;
            assert_eq!(status, 400);
            assert_eq!(engine_error(&body)["code"], 1, "{body}");
            None
        },
    )
    .await;
}

#[tokio::test]
async fn polling_post_garbage_is_400_and_ends_the_session() {
    case(no_tweak, |addr| async move {
        let victim = Polling::handshake(addr).await;
        let (status, _) = victim.post("x\u{1e}\u{1e}zz").await;
        assert_eq!(status, 400);
        let (status, body) = victim.get().await;
        assert_eq!(status, 400);
        assert_eq!(engine_error(&body)["code"], 1, "{body}");
        None
    })
    .await;
}

#[tokio::test]
async fn polling_get_with_unknown_sid_is_400() {
    case(no_tweak, |addr| async move {
        let response = reqwest::get(format!(
            "http://{addr}/socket.io/?EIO=4&transport=polling&sid=nope"
        ))
        .await
        .unwrap();
        assert_eq!(response.status().as_u16(), 400);
        let body = engine_error(&response.text().await.unwrap());
        assert_eq!(body, json!({ "code": 1, "message": "Session ID unknown" }));
        None
    })
    .await;
}

#[tokio::test]
async fn polling_without_eio_is_400() {
    case(no_tweak, |addr| async move {
        let response = reqwest::get(format!("http://{addr}/socket.io/?transport=polling"))
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400);
        let body = engine_error(&response.text().await.unwrap());
        assert_eq!(body["code"], 5, "{body}");
        None
    })
    .await;
}

#[tokio::test]
async fn polling_with_eio3_is_400_unsupported_version() {
    case(no_tweak, |addr| async move {
        let response = reqwest::get(format!("http://{addr}/socket.io/?EIO=3&transport=polling"))
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400);
        let body = engine_error(&response.text().await.unwrap());
        assert_eq!(
            body,
            json!({ "code": 5, "message": "Unsupported protocol version" })
        );
        None
    })
    .await;
}
