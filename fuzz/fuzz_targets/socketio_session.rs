//! A Socket.IO session (`socketio::Client` with the conformance echo application), fed a fuzzer-chosen
//! sequence of text and binary messages: CONNECTs, events and acks with attachments, in any order. Never
//! panics; after a message closes the session, nothing more is fed, as the engine does.
//!
//! Input: messages separated by `0xFF` (never in UTF-8 text); a message starting with `B` is binary (the rest
//! of it), any other is a text message.
#![no_main]

use std::sync::Arc;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tidings::conformance::EchoApp;
use tidings::engineio::session::{Session, TransportKind};
use tidings::engineio::{CloseReason, Message, OutboxLimits, SessionHandler};
use tidings::socketio::{Client, ClientLimits, Endpoint};

tidings_fuzz::cap_allocations!();

fuzz_target!(|data: &[u8]| {
    let config = tidings_fuzz::node::config();
    let _runtime = tidings_fuzz::node::runtime().enter();
    let session = Session::new(
        TransportKind::WebSocket,
        OutboxLimits {
            max_messages: config.limits.outbox_max_messages,
            max_bytes: config.limits.outbox_max_bytes,
        },
        100,
    );
    let limits = ClientLimits {
        connect_timeout: config.engine.connect_timeout(),
        max_attachment_bytes: config.engine.max_payload as usize,
    };
    let endpoint = Endpoint {
        app: Arc::new(EchoApp),
        limits,
    };
    let client = Client::new(Arc::new(endpoint), None);
    let mut sent = Vec::new();
    let mut closed = CloseReason::ServerShutdown;
    for record in data.split(|&b| b == 0xFF) {
        let message = match record.split_first() {
            Some((b'B', binary)) => Message::Binary(Bytes::copy_from_slice(binary)),
            _ => Message::Text(Bytes::copy_from_slice(record)),
        };
        if let Err(reason) = client.on_message(&session, message) {
            closed = reason;
            break;
        }
        session.outbox.drain(&mut sent, usize::MAX);
        sent.clear();
    }
    client.on_close(&session, &closed);
});
