//! HTTP long-polling transport: a GET waits for queued packets, a POST carries the client's packets.

use std::sync::Arc;

use axum::body::Body;
use bytes::BytesMut;
use http::{header, Request, Response, StatusCode};

use super::handshake::EngineError;
use super::payload::{decode_payload, encode_payload};
use super::session::{Flag, Session, TransportKind};
use super::{CloseReason, Engine, Outgoing};

/// How long a GET arriving mid-upgrade waits for the upgrade to settle.
const UPGRADE_RACE_GRACE: std::time::Duration = std::time::Duration::from_millis(50);

/// Most packets accepted in one POST body.
const MAX_PACKETS_PER_POST: usize = 1024;

/// The handshake reply: the open packet alone.
pub fn open_response(open: &Outgoing) -> Response<Body> {
    payload_response(std::slice::from_ref(open))
}

/// A lone noop packet, ending a poll with nothing to say.
pub fn noop_response() -> Response<Body> {
    payload_response(&[Outgoing::noop()])
}

fn payload_response(packets: &[Outgoing]) -> Response<Body> {
    let mut body = BytesMut::new();
    encode_payload(packets, &mut body);
    text_response(StatusCode::OK, body.freeze())
}

fn text_response(status: StatusCode, body: impl Into<Body>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=UTF-8")
        .body(body.into())
        .unwrap_or_default()
}

/// Clears the session's "GET in flight" flag however the request ends (also when the client goes away), and
/// counts the GETs in flight in the gauge `tidings_polls_waiting`.
struct PollGuard<'a>(&'a Session);

impl<'a> PollGuard<'a> {
    fn new(session: &'a Session) -> PollGuard<'a> {
        metrics::gauge!("tidings_polls_waiting").increment(1.0);
        PollGuard(session)
    }
}

impl Drop for PollGuard<'_> {
    fn drop(&mut self) {
        self.0.swap_flag(Flag::PollActive, false);
        metrics::gauge!("tidings_polls_waiting").decrement(1.0);
    }
}

/// A polling GET: answers with everything queued, waiting until something is.
pub async fn get(
    engine: &Arc<Engine>,
    session: &Arc<Session>,
) -> Result<Response<Body>, EngineError> {
    let upgrading =
        session.transport() == TransportKind::Upgrading || session.flag(Flag::UpgradeClaimed);
    if upgrading && session.transport() != TransportKind::WebSocket {
        // A GET racing an upgrade in flight: give the upgrade a moment to settle, then answer for the
        // transport that results (a noop while still upgrading, 400 once upgraded).
        let deadline = tokio::time::Instant::now() + UPGRADE_RACE_GRACE;
        while session.transport() != TransportKind::WebSocket
            && tokio::time::Instant::now() < deadline
        {
            // Boxed: this rare wait would otherwise size every parked GET's state.
            Box::pin(tokio::time::sleep(std::time::Duration::from_millis(5))).await;
        }
        if session.transport() == TransportKind::Upgrading {
            return Ok(noop_response());
        }
    }
    if session.transport() == TransportKind::WebSocket {
        return Err(EngineError::BadRequest("transport upgraded"));
    }
    if session.swap_flag(Flag::PollActive, true) {
        engine.close_session(
            session,
            CloseReason::ProtocolError("overlapping polling requests".into()),
        );
        return Err(EngineError::BadRequest("overlapping polling requests"));
    }
    let _guard = PollGuard::new(session);
    let max_bytes = engine.config().max_payload;
    let mut packets = Vec::new();
    loop {
        if let Some(reason) = session.outbox.drain(&mut packets, max_bytes) {
            engine.close_session(session, reason.clone());
            packets.push(match reason {
                CloseReason::ClientClose => Outgoing::noop(),
                _ => Outgoing::close(),
            });
        }
        if !packets.is_empty() {
            return Ok(payload_response(&packets));
        }
        if session.transport() != TransportKind::Polling {
            return Ok(payload_response(&[Outgoing::noop()]));
        }
        session.outbox.ready().await;
    }
}

/// A polling POST: reads the client's packets and applies them in order.
pub async fn post(
    engine: &Arc<Engine>,
    session: &Arc<Session>,
    req: Request<Body>,
) -> Result<Response<Body>, EngineError> {
    if session.transport() == TransportKind::WebSocket {
        return Err(EngineError::BadRequest("transport upgraded"));
    }
    let max = engine.config().max_payload;
    let body = match axum::body::to_bytes(req.into_body(), max).await {
        Ok(body) => body,
        Err(_) => {
            engine.close_session(session, CloseReason::PayloadTooLarge);
            return Err(EngineError::PayloadTooLarge);
        }
    };
    let _order = session.post_lock.lock();
    let packets = match decode_payload(body, MAX_PACKETS_PER_POST) {
        Ok(packets) => packets,
        Err(error) => {
            engine.close_session(session, CloseReason::ProtocolError(error.to_string()));
            return Err(EngineError::BadRequest("invalid payload"));
        }
    };
    for packet in packets {
        if session.is_closed() {
            break;
        }
        if let Err(reason) = engine.on_packet(session, packet) {
            let client_close = reason == CloseReason::ClientClose;
            engine.close_session(session, reason);
            if !client_close {
                return Err(EngineError::BadRequest("invalid packet"));
            }
            break;
        }
    }
    Ok(text_response(StatusCode::OK, "ok"))
}
