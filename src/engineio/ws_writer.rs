//! Writes Engine.IO packets as websocket frames without waiting: as many frames per `writev` as the socket
//! takes; what it does not take is kept, byte-exact, for when the socket is writable again.
//!
//! Two writers use it: the connection task ([`FrameWriter`]) and, while that task sleeps with nothing unsent,
//! a publisher writing a small room's event straight to the socket ([`write_frames`], see
//! [`Outbox::lend_stream`](super::Outbox::lend_stream)).

use std::cell::Cell;
use std::io::{self, IoSlice};
use std::sync::OnceLock;

use tokio::net::TcpStream;

use super::ws_frame::{encode_header, OpCode};
use super::Outgoing;

/// Frames per `writev` (two iovecs each). Small on purpose: the iovec and header arrays live on the stack
/// and are initialised on every write, and most writes carry one or two frames.
const FRAMES_PER_WRITE: usize = 32;

/// Largest batch buffer (in packets) a thread keeps for reuse; a bigger one is freed.
const SPARE_MAX_PACKETS: usize = 1024;

thread_local! {
    /// One emptied batch buffer per thread, so that waking a writer does not allocate: connections keep no
    /// buffer while idle, the thread that runs them does.
    static SPARE: Cell<Vec<Outgoing>> = const { Cell::new(Vec::new()) };
}

/// The counter of frames written, registered once the metrics recorder is installed.
static FRAMES_SENT: OnceLock<metrics::Counter> = OnceLock::new();

/// Registers the frames counter with the installed metrics recorder (once; frames written before are not
/// counted). Looking the counter up on every `writev` costs about 1% of the server's CPU.
pub fn register_metrics() {
    FRAMES_SENT.get_or_init(|| metrics::counter!("tidings_ws_frames_sent_total"));
}

/// An empty packet buffer for a writer's next batch: this thread's spare one, if it has one.
pub fn batch_buffer() -> Vec<Outgoing> {
    SPARE.take()
}

/// Gives an emptied batch buffer back to this thread, unless it already holds a larger one.
fn recycle(mut buffer: Vec<Outgoing>) {
    buffer.clear();
    if buffer.capacity() == 0 || buffer.capacity() > SPARE_MAX_PACKETS {
        return;
    }
    let spare = SPARE.take();
    SPARE.set(if spare.capacity() >= buffer.capacity() {
        spare
    } else {
        buffer
    });
}

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
        Outgoing::WsPong(data) => (OpCode::Pong, data.len()),
    };
    let mut header = [0u8; 10];
    let n = encode_header(opcode, len, &mut header);
    (header, n)
}

fn payload(packet: &Outgoing) -> &[u8] {
    match packet {
        Outgoing::Text(bytes) | Outgoing::Binary(bytes) | Outgoing::WsPong(bytes) => bytes,
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
    if let Some(counter) = FRAMES_SENT.get() {
        counter.increment(frames as u64);
    }
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
    /// Takes `packets` from a [`batch_buffer`]; the buffer goes back to the thread once empty.
    pub fn extend(&mut self, mut packets: Vec<Outgoing>, written: usize) {
        if packets.is_empty() {
            recycle(packets);
        } else if self.unsent.is_empty() {
            recycle(std::mem::replace(&mut self.unsent, packets));
            self.written = written;
        } else {
            debug_assert_eq!(written, 0, "a partial frame can only lead");
            self.unsent.append(&mut packets);
            recycle(packets);
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
        // Idle connections keep no buffer: it goes back to the thread.
        recycle(std::mem::take(&mut self.unsent));
        self.written = 0;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engineio::outbox::tests::{read_exactly, socket_pair, text};

    #[tokio::test]
    async fn an_idle_writer_gives_its_buffer_back_to_the_thread() {
        let (server, mut client) = socket_pair().await;
        let mut writer = FrameWriter::default();
        let mut batch = batch_buffer();
        batch.extend([text("41"), text("42")]);
        writer.extend(batch, 0);
        assert!(writer.write_some(&server).unwrap());
        assert_eq!(read_exactly(&mut client, 8).await, b"\x81\x0241\x81\x0242");
        assert_eq!(
            writer.unsent.capacity(),
            0,
            "the idle connection keeps no buffer"
        );
        let reused = batch_buffer();
        assert!(
            reused.is_empty() && reused.capacity() >= 2,
            "the thread keeps it"
        );
        assert_eq!(batch_buffer().capacity(), 0, "and hands it out once");
    }

    #[tokio::test]
    async fn packets_added_while_blocked_follow_the_unsent_ones() {
        let (server, mut client) = socket_pair().await;
        let mut writer = FrameWriter::default();
        writer.extend(vec![text("1a")], 0);
        writer.extend(vec![text("2b"), text("3c")], 0);
        writer.extend(Vec::new(), 0);
        assert!(writer.write_some(&server).unwrap());
        assert_eq!(
            read_exactly(&mut client, 12).await,
            b"\x81\x021a\x81\x022b\x81\x023c"
        );
    }

    #[test]
    fn oversized_buffers_are_not_kept() {
        recycle(Vec::with_capacity(SPARE_MAX_PACKETS + 1));
        assert_eq!(batch_buffer().capacity(), 0);
        recycle(Vec::with_capacity(8));
        recycle(Vec::with_capacity(4));
        assert!(batch_buffer().capacity() >= 8, "the larger spare is kept");
    }
}
