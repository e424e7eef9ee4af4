//! One websocket connection of the direct-message bench at the Socket.IO level: TCP (from a loopback source
//! address when asked), the upgrade, the Engine.IO open packet, a CONNECT carrying the token and device name;
//! then a [`Reader`] that yields the Socket.IO packets (answering pings itself) and an [`Outbox`] feeding a writer
//! task.

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::bench::client::{io_reason, read_upgrade};
use crate::bench::plan::Target;
use crate::bench::sys::connect_from;
use crate::bench::ws::{encode_masked, parse_frame, upgrade_request};
use crate::engineio::ws_frame::OpCode;

/// Least free room in the read buffer before a read (small: most packets are, and every connection has one).
const READ_CHUNK: usize = 8 * 1024;

/// Sends Engine.IO text packets on the connection, in order; cheap to clone.
#[derive(Clone)]
pub struct Outbox(mpsc::UnboundedSender<String>);

impl Outbox {
    /// Queues `packet` (an Engine.IO packet such as `42["dm",{…}]`); false once the connection is gone.
    pub fn send(&self, packet: String) -> bool {
        self.0.send(packet).is_ok()
    }
}

/// The receiving side: Socket.IO packets of the main namespace, in arrival order.
pub struct Reader {
    stream: OwnedReadHalf,
    buf: Vec<u8>,
    ready: VecDeque<Vec<u8>>,
    fragment: Option<Vec<u8>>,
    outbox: Outbox,
}

/// An open connection: its reader, its outbox and the writer task (aborted on drop of the caller's handles).
pub struct Conn {
    /// Incoming packets.
    pub reader: Reader,
    /// Outgoing packets.
    pub outbox: Outbox,
    /// The task writing the outbox to the socket.
    pub writer: JoinHandle<()>,
}

/// Connects to `target` and runs the handshake with `auth` as the CONNECT payload; `Err` carries a short reason.
pub async fn open(
    target: &Target,
    source: Option<Ipv4Addr>,
    auth: &serde_json::Value,
) -> Result<Conn, String> {
    let mut stream = connect_from(target.addr, source)
        .await
        .map_err(|e| format!("tcp connect: {}", io_reason(&e)))?;
    let (key, request) = upgrade_request(
        &target.authority,
        &format!("{}?EIO=4&transport=websocket", target.path),
    );
    stream
        .write_all(&request)
        .await
        .map_err(|e| format!("upgrade write: {}", io_reason(&e)))?;
    let buf = read_upgrade(&mut stream, &key).await?;
    let (read, write) = stream.into_split();
    let (tx, rx) = mpsc::unbounded_channel();
    let outbox = Outbox(tx);
    let writer = tokio::spawn(write_loop(write, rx));
    let mut reader = Reader {
        stream: read,
        buf,
        ready: VecDeque::new(),
        fragment: None,
        outbox: outbox.clone(),
    };
    reader.handshake(auth).await?;
    Ok(Conn {
        reader,
        outbox,
        writer,
    })
}

impl Reader {
    /// Waits for the open packet, sends the CONNECT and waits for its answer.
    async fn handshake(&mut self, auth: &serde_json::Value) -> Result<(), String> {
        loop {
            let packet = self.next_engine_packet().await?;
            match packet.first() {
                Some(b'0') => break,
                Some(b'2') => self.pong(&packet),
                _ => return Err("engine.io: no open packet".into()),
            }
        }
        self.outbox.send(format!("40{auth}"));
        loop {
            let packet = self.next_engine_packet().await?;
            match (packet.first(), packet.get(1)) {
                (Some(b'4'), Some(b'0')) => return Ok(()),
                (Some(b'4'), Some(b'4')) => {
                    return Err(format!(
                        "socket.io connect error: {}",
                        connect_error(&packet[2..])
                    ))
                }
                (Some(b'2'), _) => self.pong(&packet),
                _ => {}
            }
        }
    }

    /// The next Socket.IO packet (an Engine.IO message without its `4`); `Err` with a reason when the
    /// connection ended.
    pub async fn next(&mut self) -> Result<Vec<u8>, String> {
        loop {
            let packet = self.next_engine_packet().await?;
            match packet.first() {
                Some(b'4') => return Ok(packet[1..].to_vec()),
                Some(b'2') => self.pong(&packet),
                Some(b'1') => return Err("engine.io close".into()),
                _ => {}
            }
        }
    }

    /// Whether a packet has already been read off the socket, so [`Reader::next`] will not wait for the network:
    /// a device acknowledges what it has in one `ack` event once this turns false.
    pub fn has_buffered(&self) -> bool {
        !self.ready.is_empty()
    }

    fn pong(&self, ping: &[u8]) {
        let mut pong = String::from_utf8_lossy(ping).into_owned();
        pong.replace_range(..1, "3");
        self.outbox.send(pong);
    }

    /// The next Engine.IO text packet.
    async fn next_engine_packet(&mut self) -> Result<Vec<u8>, String> {
        loop {
            if let Some(packet) = self.ready.pop_front() {
                return Ok(packet);
            }
            self.parse()?;
            if !self.ready.is_empty() {
                continue;
            }
            // Read into the buffer's spare room: no zeroed chunk per read (that memset was most of the
            // bench's own CPU at tens of thousands of reads a second).
            if self.buf.capacity() - self.buf.len() < READ_CHUNK {
                self.buf.reserve(READ_CHUNK);
            }
            let n = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| format!("read: {}", io_reason(&e)))?;
            if n == 0 {
                return Err("eof".into());
            }
        }
    }

    /// Moves every complete text message in `buf` to `ready`.
    fn parse(&mut self) -> Result<(), String> {
        let mut used = 0;
        while let Some((frame, len)) = parse_frame(&self.buf[used..]).map_err(|e| e.to_string())? {
            used += len;
            match (frame.opcode, frame.fin) {
                // The server keeps sessions alive with Engine.IO pings (answered in `next`), not websocket ones.
                (OpCode::Ping | OpCode::Pong, _) => {}
                (OpCode::Close, _) => return Err("ws close".into()),
                (OpCode::Text, true) => self.ready.push_back(frame.payload.to_vec()),
                (OpCode::Text, false) => self.fragment = Some(frame.payload.to_vec()),
                (OpCode::Continuation, fin) => {
                    let mut joined = self.fragment.take().ok_or("bad fragmentation")?;
                    joined.extend_from_slice(frame.payload);
                    if fin {
                        self.ready.push_back(joined);
                    } else {
                        self.fragment = Some(joined);
                    }
                }
                _ => {}
            }
        }
        self.buf.drain(..used);
        Ok(())
    }
}

/// Opens a connection for every role, `parallelism` at a time, each within `timeout`: `dial(role)` gives the
/// role's node, source address and CONNECT payload (or why it has none). Returns the open connections with
/// their role, and the failures counted by reason.
pub async fn open_all<R, F>(
    roles: &[R],
    parallelism: usize,
    timeout: std::time::Duration,
    dial: F,
) -> (Vec<(R, Conn)>, BTreeMap<String, u64>)
where
    R: Copy + Send + 'static,
    F: Fn(R) -> Result<(Target, Option<Ipv4Addr>, serde_json::Value), String>,
{
    let mut opened = Vec::new();
    let mut failures = BTreeMap::<String, u64>::new();
    for batch in roles.chunks(parallelism.max(1)) {
        let opening: Vec<_> = batch
            .iter()
            .map(|&role| {
                let dialed = dial(role);
                tokio::spawn(async move {
                    let (target, source, auth) = dialed?;
                    match tokio::time::timeout(timeout, open(&target, source, &auth)).await {
                        Ok(result) => result.map(|c| (role, c)),
                        Err(_) => Err("connect timeout".to_owned()),
                    }
                })
            })
            .collect();
        for task in opening {
            match task.await {
                Ok(Ok(open)) => opened.push(open),
                Ok(Err(reason)) => *failures.entry(reason).or_default() += 1,
                Err(e) => *failures.entry(format!("task: {e}")).or_default() += 1,
            }
        }
    }
    (opened, failures)
}

/// Writes queued packets as masked text frames, several per write when they pile up.
async fn write_loop(mut stream: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<String>) {
    let mut wire = Vec::with_capacity(16 * 1024);
    while let Some(packet) = rx.recv().await {
        encode_masked(OpCode::Text, packet.as_bytes(), &mut wire);
        while wire.len() < 256 * 1024 {
            match rx.try_recv() {
                Ok(packet) => encode_masked(OpCode::Text, packet.as_bytes(), &mut wire),
                Err(_) => break,
            }
        }
        if stream.write_all(&wire).await.is_err() {
            return;
        }
        wire.clear();
    }
}

/// `message` of a CONNECT error payload, or the payload itself.
fn connect_error(payload: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(payload).into_owned())
}

/// Splits an event or ack packet body `<digits>[...]` into its ack id and its JSON array.
pub fn split_ack_id(body: &[u8]) -> (Option<u64>, &[u8]) {
    let digits = body.iter().take_while(|b| b.is_ascii_digit()).count();
    let id = std::str::from_utf8(&body[..digits])
        .ok()
        .and_then(|d| d.parse().ok());
    (id, &body[digits..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_ids() {
        assert_eq!(split_ack_id(b"12[1]"), (Some(12), &b"[1]"[..]));
        assert_eq!(split_ack_id(b"[\"x\"]"), (None, &b"[\"x\"]"[..]));
        assert_eq!(
            connect_error(br#"{"message":"unauthorized"}"#),
            "unauthorized"
        );
        assert_eq!(connect_error(b"nope"), "nope");
    }
}
