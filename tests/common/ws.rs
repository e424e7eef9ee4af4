//! A Socket.IO client over a tokio-tungstenite websocket.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::{connect_packet, parse_event, EventFrame, WAIT};

/// One frame the client received (websocket-level control frames excluded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
}

impl Frame {
    /// The text, for text frames.
    pub fn text(&self) -> Option<&str> {
        match self {
            Frame::Text(text) => Some(text),
            Frame::Binary(_) => None,
        }
    }
}

enum Incoming {
    Frame(Frame),
    /// The connection ended; the code of the server's close frame, if one came.
    Closed(Option<u16>),
}

/// A Socket.IO client over a tokio-tungstenite websocket. A background task owns the socket: it answers Engine.IO
/// pings (`2` → `3`) unless told not to, and forwards every other frame.
pub struct WsClient {
    /// The Engine.IO open packet's JSON.
    pub open: Value,
    out: mpsc::UnboundedSender<Message>,
    incoming: mpsc::UnboundedReceiver<Incoming>,
    answer_pings: Arc<AtomicBool>,
    closed: Option<Option<u16>>,
    /// Every frame received so far (pings included when they are not answered).
    pub log: Vec<Frame>,
    task: tokio::task::JoinHandle<()>,
}

impl WsClient {
    /// Opens a websocket Engine.IO session and reads its open packet.
    pub async fn handshake(addr: SocketAddr) -> WsClient {
        Self::handshake_with(addr, true).await
    }

    /// Like [`WsClient::handshake`]; with `answer_pings` false the client never answers a ping.
    pub async fn handshake_with(addr: SocketAddr, answer_pings: bool) -> WsClient {
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let (out, out_rx) = mpsc::unbounded_channel::<Message>();
        let (in_tx, incoming) = mpsc::unbounded_channel();
        let answer = Arc::new(AtomicBool::new(answer_pings));
        let task = tokio::spawn(pump(ws, out.clone(), out_rx, in_tx, answer.clone()));
        let mut client = WsClient {
            open: Value::Null,
            out,
            incoming,
            answer_pings: answer,
            closed: None,
            log: Vec::new(),
            task,
        };
        let open = client.recv_text(WAIT).await;
        let json = open
            .strip_prefix('0')
            .unwrap_or_else(|| panic!("expected an open packet, got {open:?}"));
        client.open = serde_json::from_str(json).unwrap();
        client
    }

    /// Handshake plus Socket.IO CONNECT with `token`; returns the client and the CONNECT reply's JSON.
    pub async fn connect(addr: SocketAddr, token: &str) -> (WsClient, Value) {
        let mut client = Self::handshake(addr).await;
        let reply = client.socketio_connect(&connect_packet(token)).await;
        (client, reply)
    }

    /// Sends a CONNECT packet and waits for `40{…}`; panics on a CONNECT_ERROR.
    pub async fn socketio_connect(&mut self, packet: &str) -> Value {
        self.send_text(packet);
        let reply = self
            .recv_until(
                |f| {
                    f.text()
                        .is_some_and(|t| t.starts_with("40") || t.starts_with("44"))
                },
                WAIT,
            )
            .await;
        let text = reply.text().unwrap();
        let json = text
            .strip_prefix("40")
            .unwrap_or_else(|| panic!("connect refused: {text}"));
        serde_json::from_str(json).unwrap()
    }

    /// Sends a text frame (ignored once the connection is gone).
    pub fn send_text(&self, text: &str) {
        let _ = self.out.send(Message::text(text));
    }

    /// Sends a binary frame (ignored once the connection is gone).
    pub fn send_binary(&self, data: Vec<u8>) {
        let _ = self.out.send(Message::binary(data));
    }

    /// Emits `event` with `args` asking for ack `id`, and returns the ack's arguments.
    pub async fn emit_with_ack(&mut self, id: u64, event: &str, args: &[Value]) -> Value {
        let mut items = vec![Value::from(event)];
        items.extend(args.iter().cloned());
        self.send_text(&format!("42{id}{}", Value::Array(items)));
        let prefix = format!("43{id}[");
        let ack = self
            .recv_until(|f| f.text().is_some_and(|t| t.starts_with(&prefix)), WAIT)
            .await;
        serde_json::from_str(&ack.text().unwrap()[prefix.len() - 1..]).unwrap()
    }

    /// Subscribes to `room` and asserts the ack is `{"ok":true}`.
    pub async fn subscribe(&mut self, id: u64, room: &str) {
        let ack = self
            .emit_with_ack(id, "subscribe", &[Value::from(room)])
            .await;
        assert_eq!(ack, serde_json::json!([{ "ok": true }]), "subscribe {room}");
    }

    /// The next frame, or `None` when the connection closed or `timeout` passed.
    pub async fn next_frame(&mut self, timeout: Duration) -> Option<Frame> {
        if self.closed.is_some() {
            return None;
        }
        match tokio::time::timeout(timeout, self.incoming.recv()).await {
            Ok(Some(Incoming::Frame(frame))) => {
                self.log.push(frame.clone());
                Some(frame)
            }
            Ok(Some(Incoming::Closed(code))) => {
                self.closed = Some(code);
                None
            }
            Ok(None) => {
                self.closed = Some(None);
                None
            }
            Err(_) => None,
        }
    }

    /// The first frame (from now on) matching `pred`; panics when none comes within `timeout`.
    pub async fn recv_until(&mut self, pred: impl Fn(&Frame) -> bool, timeout: Duration) -> Frame {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_frame(left).await {
                Some(frame) if pred(&frame) => return frame,
                Some(_) => {}
                None => panic!(
                    "no matching frame within {timeout:?} (closed: {:?}); received: {:?}",
                    self.closed, self.log
                ),
            }
        }
    }

    /// Every event this client gets within `window` (from now on).
    pub async fn events_for(&mut self, window: Duration) -> Vec<EventFrame> {
        let deadline = Instant::now() + window;
        let mut events = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Some(frame) = self.next_frame(left).await else {
                break;
            };
            if let Some(event) = frame.text().and_then(parse_event) {
                events.push(event);
            }
        }
        events
    }

    /// The presence events (`presence:*`) this client gets within `window`, as (name, data); panics if one
    /// has an offset (they are ephemeral).
    pub async fn presence_events(&mut self, window: Duration) -> Vec<(String, Value)> {
        let mut presence = Vec::new();
        for event in self.events_for(window).await {
            if event.name.starts_with("presence:") {
                assert_eq!(event.offset, None, "presence events are ephemeral");
                presence.push((event.name, event.data));
            }
        }
        presence
    }

    /// The next text frame; panics on timeout or close.
    pub async fn recv_text(&mut self, timeout: Duration) -> String {
        let frame = self.recv_until(|f| f.text().is_some(), timeout).await;
        frame.text().unwrap().to_owned()
    }

    /// The next event frame; panics on timeout or close.
    pub async fn recv_event(&mut self, timeout: Duration) -> EventFrame {
        let frame = self
            .recv_until(|f| f.text().and_then(parse_event).is_some(), timeout)
            .await;
        parse_event(frame.text().unwrap()).unwrap()
    }

    /// The next event frame named `name` whose data has `key` = `value`; panics on timeout or close.
    pub async fn recv_event_with(
        &mut self,
        name: &str,
        key: &str,
        value: &Value,
        timeout: Duration,
    ) -> EventFrame {
        let frame = self
            .recv_until(
                |f| {
                    f.text()
                        .and_then(parse_event)
                        .is_some_and(|e| e.name == name && e.data.get(key) == Some(value))
                },
                timeout,
            )
            .await;
        parse_event(frame.text().unwrap()).unwrap()
    }

    /// Waits for the connection to end; returns the close code of the server's close frame, `None` when the TCP
    /// connection ended without one. Panics if it is still open after `timeout`.
    pub async fn expect_closed(&mut self, timeout: Duration) -> Option<u16> {
        let deadline = Instant::now() + timeout;
        while self.closed.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "connection still open after {timeout:?}; received: {:?}",
                    self.log
                );
            }
            self.next_frame(left).await;
        }
        self.closed.unwrap()
    }

    /// True once the connection is known to be closed.
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// Starts or stops answering pings.
    pub fn answer_pings(&self, on: bool) {
        self.answer_pings.store(on, Ordering::Release);
    }

    /// Drops the TCP connection without any closing handshake.
    pub fn drop_connection(self) {
        self.task.abort();
    }
}

impl Drop for WsClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn pump(
    mut ws: Ws,
    out: mpsc::UnboundedSender<Message>,
    mut out_rx: mpsc::UnboundedReceiver<Message>,
    incoming: mpsc::UnboundedSender<Incoming>,
    answer_pings: Arc<AtomicBool>,
) {
    let mut close_code = None;
    let mut writable = true;
    loop {
        tokio::select! {
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    if text.as_str() == "2" && answer_pings.load(Ordering::Acquire) {
                        let _ = out.send(Message::text("3"));
                        continue;
                    }
                    let _ = incoming.send(Incoming::Frame(Frame::Text(text.as_str().to_owned())));
                }
                Some(Ok(Message::Binary(data))) => {
                    let _ = incoming.send(Incoming::Frame(Frame::Binary(data.to_vec())));
                }
                Some(Ok(Message::Close(frame))) => {
                    close_code = frame.map(|f| u16::from(f.code));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
            message = out_rx.recv(), if writable => match message {
                Some(message) => {
                    if ws.send(message).await.is_err() {
                        writable = false;
                    }
                }
                None => writable = false,
            },
        }
    }
    let _ = incoming.send(Incoming::Closed(close_code));
}
