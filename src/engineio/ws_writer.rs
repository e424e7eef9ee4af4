//! Writes Engine.IO packets as websocket frames without waiting: as many frames per `writev` as the socket
//! takes; what it does not take is kept, byte-exact, for when the socket is writable again.

use std::io::{self, IoSlice};

use tokio::net::TcpStream;

use super::ws_frame::{encode_header, OpCode};
use super::Outgoing;

/// Frames per `writev` (two iovecs each). Small on purpose: the iovec and header arrays live on the stack
/// and are initialised on every write, and most writes carry one or two frames.
const FRAMES_PER_WRITE: usize = 32;

/// Frames waiting for the socket, and how much of the first ones already went out.
#[derive(Default)]
pub struct FrameWriter {
    unsent: Vec<Outgoing>,
    /// Bytes (headers included) of the leading frames of `unsent` already written.
    written: usize,
}

fn header(packet: &Outgoing) -> ([u8; 10], usize) {
    let (opcode, len) = match packet {
        Outgoing::Text(text) => (OpCode::Text, text.len()),
        Outgoing::Binary(data) => (OpCode::Binary, data.len()),
    };
    let mut header = [0u8; 10];
    let n = encode_header(opcode, len, &mut header);
    (header, n)
}

fn payload(packet: &Outgoing) -> &[u8] {
    match packet {
        Outgoing::Text(bytes) | Outgoing::Binary(bytes) => bytes,
    }
}

impl FrameWriter {
    /// True while frames wait for the socket.
    pub fn is_blocked(&self) -> bool {
        !self.unsent.is_empty()
    }

    /// Adds packets behind anything still unsent.
    pub fn extend(&mut self, packets: Vec<Outgoing>) {
        if self.unsent.is_empty() {
            self.unsent = packets;
        } else {
            self.unsent.extend(packets);
        }
    }

    /// Writes without waiting; `Ok(true)` once everything went out, `Ok(false)` when the socket is full.
    pub fn write_some(&mut self, stream: &TcpStream) -> io::Result<bool> {
        while !self.unsent.is_empty() {
            let count = self.unsent.len().min(FRAMES_PER_WRITE);
            let mut headers = [([0u8; 10], 0usize); FRAMES_PER_WRITE];
            for (slot, packet) in headers.iter_mut().zip(&self.unsent[..count]) {
                *slot = header(packet);
            }
            let mut slices = [IoSlice::new(&[]); FRAMES_PER_WRITE * 2];
            let mut used = 0;
            for (packet, (head, n)) in self.unsent[..count].iter().zip(&headers) {
                slices[used] = IoSlice::new(&head[..*n]);
                slices[used + 1] = IoSlice::new(payload(packet));
                used += 2;
            }
            let mut view = &mut slices[..used];
            IoSlice::advance_slices(&mut view, self.written);
            match stream.try_write_vectored(view) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.written += n;
                    let mut done = 0;
                    for (packet, (_, head_len)) in self.unsent[..count].iter().zip(&headers) {
                        let frame_len = head_len + payload(packet).len();
                        if self.written < frame_len {
                            break;
                        }
                        self.written -= frame_len;
                        done += 1;
                    }
                    metrics::counter!("tidings_ws_frames_sent_total").increment(done as u64);
                    self.unsent.drain(..done);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(error) => return Err(error),
            }
        }
        // Idle connections keep no buffer.
        self.unsent = Vec::new();
        self.written = 0;
        Ok(true)
    }
}
