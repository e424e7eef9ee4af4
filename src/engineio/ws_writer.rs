//! Writes Engine.IO packets as websocket frames without waiting: as many frames per `writev` as the socket
//! takes; what it does not take is kept, byte-exact, for when the socket is writable again.
//!
//! Two writers use it: the connection task ([`FrameWriter`]) and, while that task sleeps with nothing unsent,
//! a publisher writing a small room's event straight to the socket ([`write_frames`], see
//! [`Outbox::lend_stream`](super::Outbox::lend_stream)).

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

/// What one non-waiting write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Frames now completely written, counted from the first of `packets`.
    pub frames: usize,
    /// Bytes of the next frame already written (less than its length).
    pub partial: usize,
}

/// One `writev` of the frames of (at most the first [`FRAMES_PER_WRITE`] of) `packets`, skipping the first
/// `skip` bytes, which went out earlier. `WouldBlock` when the socket takes nothing.
pub fn write_frames(stream: &TcpStream, packets: &[Outgoing], skip: usize) -> io::Result<Progress> {
    let count = packets.len().min(FRAMES_PER_WRITE);
    let mut headers = [([0u8; 10], 0usize); FRAMES_PER_WRITE];
    for (slot, packet) in headers.iter_mut().zip(&packets[..count]) {
        *slot = header(packet);
    }
    let mut slices = [IoSlice::new(&[]); FRAMES_PER_WRITE * 2];
    let mut used = 0;
    for (packet, (head, n)) in packets[..count].iter().zip(&headers) {
        slices[used] = IoSlice::new(&head[..*n]);
        slices[used + 1] = IoSlice::new(payload(packet));
        used += 2;
    }
    let mut view = &mut slices[..used];
    IoSlice::advance_slices(&mut view, skip);
    let n = stream.try_write_vectored(view)?;
    if n == 0 {
        return Err(io::ErrorKind::WriteZero.into());
    }
    let mut written = skip + n;
    let mut frames = 0;
    for (packet, (_, head_len)) in packets[..count].iter().zip(&headers) {
        let len = head_len + payload(packet).len();
        if written < len {
            break;
        }
        written -= len;
        frames += 1;
    }
    metrics::counter!("tidings_ws_frames_sent_total").increment(frames as u64);
    Ok(Progress {
        frames,
        partial: written,
    })
}

impl FrameWriter {
    /// True while frames wait for the socket.
    pub fn is_blocked(&self) -> bool {
        !self.unsent.is_empty()
    }

    /// Adds packets behind anything still unsent. `written` bytes of the first one already went out (only
    /// possible when nothing is unsent: the rest of a frame a publisher started, see [`write_frames`]).
    pub fn extend(&mut self, packets: Vec<Outgoing>, written: usize) {
        if self.unsent.is_empty() {
            self.unsent = packets;
            self.written = written;
        } else {
            debug_assert_eq!(written, 0, "a partial frame can only lead");
            self.unsent.extend(packets);
        }
    }

    /// Writes without waiting; `Ok(true)` once everything went out, `Ok(false)` when the socket is full.
    pub fn write_some(&mut self, stream: &TcpStream) -> io::Result<bool> {
        while !self.unsent.is_empty() {
            match write_frames(stream, &self.unsent, self.written) {
                Ok(progress) => {
                    self.unsent.drain(..progress.frames);
                    self.written = progress.partial;
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
