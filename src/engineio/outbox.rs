//! Bounded outbound queue of one Engine.IO session, shared by the fan-out path and the transport writer.
//!
//! Publishers never wait on a client: `push` either queues the packet or, when the queue is over its limits,
//! marks the session as a slow consumer and wakes the writer so it closes the connection. The queue holds
//! refcounted `Bytes`, so a packet sent to many sessions is stored once. An idle outbox owns no heap memory.
//!
//! A websocket writer that goes to sleep with nothing unsent lends its socket to the outbox
//! ([`Outbox::lend_stream`]). While it is lent, an event of a small room is written to the socket by the
//! publisher itself, under the outbox lock, instead of being queued and the writer task woken: no task wake,
//! no second thread, one `writev`. Whatever the socket does not take is queued (with how much of its first
//! frame went out) and the writer is woken to finish it, as for any queued packet.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::net::TcpStream;

use super::packet::Outgoing;
use super::write_cadence::{self, now_ms};
use super::ws_writer::write_frames;
use super::CloseReason;
use crate::cluster::partition::unpack;

/// A drain of at least this many packets keeps the queue's ring buffer for the next batch.
const KEEP_QUEUE_MIN_BATCH: usize = 3;
/// Largest ring buffer kept between batches (packets).
const KEEP_QUEUE_MAX_CAPACITY: usize = 16;

/// Size limits of one outbox.
#[derive(Clone, Copy, Debug)]
pub struct OutboxLimits {
    /// Most packets queued at once.
    pub max_messages: usize,
    /// Most payload bytes queued at once.
    pub max_bytes: usize,
}

/// What one [`Outbox::drain_frames`] took and left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drained {
    /// Bytes of the first drained packet's frame a publisher already wrote (0 when none).
    pub written: usize,
    /// When the drained packets started waiting, on [`now_ms`]'s clock (`None`: nothing was drained; 0 while
    /// [`write_cadence::tracking`] is off).
    pub queued_ms: Option<u32>,
    /// Packets are still queued: the byte budget ran out.
    pub more: bool,
    /// The session is closing and nothing is left queued.
    pub closing: Option<CloseReason>,
}

/// What woke a waiting writer (see [`Outbox::poll_signal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Room events were queued: a busy websocket may hold them back to write several at once.
    Events,
    /// Something for this client alone is queued (a reply, a ping, a replay), the session is closing, or the
    /// transport changed: write at once.
    Urgent,
}

/// Why a packet was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The session is closing or closed.
    #[error("session closed")]
    Closed,
    /// The queue was over its limits; the session is now closing as a slow consumer.
    #[error("outbound queue full")]
    Full,
}

/// A room event parked during a replay: its sequence and its packets.
type HeldEvent = (u64, Arc<[Outgoing]>);

#[derive(Default)]
struct State {
    queue: VecDeque<Outgoing>,
    /// At most [`Outbox::max_bytes`], so 32 bits.
    bytes: u32,
    /// Highest stream sequence queued, used to keep room events in order and unique per session (of partition
    /// 0: a single Redis or the embedded node; see [`crate::cluster::partition`]).
    last_seq: u64,
    /// The same for partitions 1 and up, when the cluster has several (a thin list: one pointer, and nothing
    /// allocated without partitions).
    other_partitions: thin_vec::ThinVec<u64>,
    /// Boxed: only a closing session has one, and the reason inline would take 32 bytes of every session.
    closing: Option<Box<CloseReason>>,
    /// Something happened since the writer last looked.
    signaled: bool,
    /// The one task waiting on this outbox (the transport writer or a polling GET).
    waiter: Option<Waker>,
    /// Woken when the outbox starts closing (see [`Outbox::on_close`]).
    /// Boxed: only a polling session between two GETs has one, and every session holds an outbox.
    close_waiter: Option<Box<Waker>>,
    /// While a replay is being prepared, room events are parked here instead of queued.
    /// Boxed: a replay is rare and short, and every session holds an outbox.
    #[allow(clippy::box_collection)]
    held: Option<Box<Vec<HeldEvent>>>,
    /// The websocket of a writer asleep with nothing unsent (see [`Outbox::lend_stream`]).
    lent: Option<Arc<TcpStream>>,
    /// Bytes of the first queued packet's frame already written by a publisher.
    partial: u32,
    /// When the queue last went from empty to not empty ([`now_ms`]), to tell how late the writer runs.
    queued_ms: u32,
    /// Since the last drain, something was queued that should not wait (see [`Signal::Urgent`]).
    urgent: bool,
}

impl State {
    /// Notes that what is queued starts waiting now (only while lag is tracked: a clock read otherwise wasted).
    fn mark_queued(&mut self) {
        if write_cadence::tracking() {
            self.queued_ms = now_ms();
        }
    }
}

/// The outbound queue of one session.
pub struct Outbox {
    state: Mutex<State>,
    /// [`OutboxLimits::max_messages`], saturated to 32 bits (every session holds these).
    max_messages: u32,
    /// [`OutboxLimits::max_bytes`], saturated to 32 bits.
    max_bytes: u32,
}

impl Outbox {
    /// An empty outbox with the given limits.
    pub fn new(limits: OutboxLimits) -> Self {
        let saturated = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Outbox {
            state: Mutex::new(State::default()),
            max_messages: saturated(limits.max_messages),
            max_bytes: saturated(limits.max_bytes),
        }
    }

    /// Asks the CPU to start loading this outbox into its cache. The fan-out calls it a few members ahead:
    /// a large room's outboxes are not in the cache, and waiting for each one's lock line in turn was most of
    /// the fan-out's own time.
    #[inline]
    pub fn prefetch(&self) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            const LINE: usize = 64;
            let start = self as *const Outbox as *const i8;
            for offset in (0..std::mem::size_of::<Outbox>()).step_by(LINE) {
                // SAFETY: a prefetch is only a hint, it never faults; the address lies inside `self`.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(start.add(offset)) };
            }
        }
    }

    /// Queues one packet.
    pub fn push(&self, packet: Outgoing) -> Result<(), PushError> {
        self.push_group(std::slice::from_ref(&packet), 0)
            .map(|_| ())
    }

    /// Queues a room event with its stream sequence; returns `Ok(false)` when this session already has it
    /// (the event was addressed to several of its rooms, or a replay already covered it). Sequence 0 means
    /// "not a stream event" and is never skipped. The packets of one group stay together (a binary event
    /// and its attachments).
    pub fn push_event(&self, seq: u64, packets: &[Outgoing]) -> Result<bool, PushError> {
        self.push_group(packets, seq)
    }

    /// Queues a room event held as a shared packet list; while the outbox is held (see [`Outbox::hold`]) the
    /// event is parked instead. With `write_now`, an event that finds the queue empty and the socket lent is
    /// written to the socket right here (for small fan-outs; a large one is better spread over the writers).
    pub fn push_shared_event(
        &self,
        seq: u64,
        packets: &Arc<[Outgoing]>,
        write_now: bool,
    ) -> Result<bool, PushError> {
        let mut state = self.state.lock();
        if let Some(held) = state.held.as_mut() {
            if held.len() >= self.max_messages as usize {
                state.closing = Some(Box::new(CloseReason::SlowConsumer));
                let waiter = signal(&mut state);
                drop(state);
                wake(waiter);
                return Err(PushError::Full);
            }
            held.push((seq, packets.clone()));
            return Ok(true);
        }
        self.push_locked(state, packets, seq, write_now, false)
    }

    /// Queues an ephemeral event (no offset, no replay): written like a room event, but while the queue holds
    /// half of its limits or more the event is dropped (`Ok(false)`) instead of closing the session, so a slow
    /// subscriber loses positions and typing indicators, not its connection, and keeps room for the events
    /// that matter. Parked room events (a replay under way) do not hold it back: it has no place in that order.
    pub fn push_ephemeral(
        &self,
        packets: &Arc<[Outgoing]>,
        write_now: bool,
    ) -> Result<bool, PushError> {
        let state = self.state.lock();
        if state.closing.is_some() {
            return Err(PushError::Closed);
        }
        let size: usize = packets.iter().map(Outgoing::len).sum();
        if (state.queue.len() + packets.len()) * 2 > self.max_messages as usize
            || (state.bytes as usize + size) * 2 > self.max_bytes as usize
        {
            return Ok(false);
        }
        self.push_locked(state, packets, 0, write_now, false)
    }

    /// Parks room events from now on, until [`Outbox::release`]: lets a replay be queued ahead of live events
    /// that arrive while it is being read.
    pub fn hold(&self) {
        self.state.lock().held.get_or_insert_with(Default::default);
    }

    /// Queues the parked events that are newer than everything queued so far, and stops parking. All under
    /// one lock: a live event arriving meanwhile cannot be queued ahead of them (the per-session sequence
    /// check would then drop them as already delivered).
    pub fn release(&self) -> Result<(), PushError> {
        let mut state = self.state.lock();
        let held = state.held.take().map(|held| *held).unwrap_or_default();
        let mut result = Ok(());
        let mut wake_writer = false;
        for (seq, packets) in held {
            match admit(&mut state, seq) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(error) => {
                    result = Err(error);
                    break;
                }
            }
            match self.enqueue(&mut state, &packets, true) {
                Ok(signal) => wake_writer |= signal,
                Err(error) => {
                    wake_writer = true;
                    result = Err(error);
                    break;
                }
            }
        }
        let waiter = if wake_writer {
            signal(&mut state)
        } else {
            [None, None]
        };
        drop(state);
        wake(waiter);
        result
    }

    /// Drops the parked events and stops parking (the replay they were waiting for was abandoned).
    pub fn discard_held(&self) {
        self.state.lock().held.take();
    }

    fn push_group(&self, packets: &[Outgoing], seq: u64) -> Result<bool, PushError> {
        self.push_locked(self.state.lock(), packets, seq, false, true)
    }

    /// Queues `packets` under the lock the caller already holds (one lock per delivery on the fan-out path).
    /// `urgent` packets wake the writer even behind queued room events (see [`Signal::Urgent`]).
    fn push_locked(
        &self,
        mut state: MutexGuard<'_, State>,
        mut packets: &[Outgoing],
        seq: u64,
        write_now: bool,
        urgent: bool,
    ) -> Result<bool, PushError> {
        if !admit(&mut state, seq)? {
            return Ok(false);
        }
        if write_now && state.queue.is_empty() {
            if let Some(stream) = state.lent.as_deref() {
                match write_frames(stream, packets, 0) {
                    Ok(progress) if progress.frames == packets.len() => return Ok(true),
                    Ok(progress) => {
                        // The socket took part: the writer finishes the rest, starting mid-frame.
                        packets = &packets[progress.frames..];
                        // Less than one frame, which is less than `max_bytes`.
                        state.partial = progress.partial as u32;
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                    // The writer meets the same error on its next write and ends the session.
                    Err(_) => {}
                }
                state.lent = None;
            }
        }
        let queued = self.enqueue(&mut state, packets, urgent);
        let waiter = match queued {
            Ok(false) => [None, None],
            Ok(true) | Err(_) => signal(&mut state),
        };
        drop(state);
        wake(waiter);
        queued.map(|_| true)
    }

    /// Appends `packets` to the queue; returns whether the writer must be signaled (only the first packet
    /// after a drain needs to wake it, and the first urgent one). Over the limits nothing is queued and the
    /// session starts closing as a slow consumer (`Full`; the caller signals the writer).
    fn enqueue(
        &self,
        state: &mut State,
        packets: &[Outgoing],
        urgent: bool,
    ) -> Result<bool, PushError> {
        let size: usize = packets.iter().map(Outgoing::len).sum();
        if state.queue.len() + packets.len() > self.max_messages as usize
            || state.bytes as usize + size > self.max_bytes as usize
        {
            state.closing = Some(Box::new(CloseReason::SlowConsumer));
            return Err(PushError::Full);
        }
        let was_empty = state.queue.is_empty();
        if was_empty {
            state.mark_queued();
        }
        let newly_urgent = urgent && !state.urgent;
        state.urgent |= urgent;
        state.queue.extend(packets.iter().cloned());
        // Fits: the total was checked against `max_bytes`, a u32.
        state.bytes += size as u32;
        Ok(was_empty || newly_urgent)
    }

    /// Raises the session's stream position without queueing (after a replay was queued by other means).
    pub fn advance_seq(&self, seq: u64) {
        let mut state = self.state.lock();
        let last = position_of(&mut state, seq);
        *last = (*last).max(unpack(seq).1);
    }

    /// Highest event sequence queued so far.
    pub fn last_seq(&self) -> u64 {
        self.state.lock().last_seq
    }

    /// Asks the writer to close the session; the first reason wins. Queued packets are still flushed.
    pub fn close(&self, reason: CloseReason) {
        let mut state = self.state.lock();
        if state.closing.is_none() {
            state.closing = Some(Box::new(reason));
        }
        state.urgent = true;
        let waiter = signal(&mut state);
        drop(state);
        wake(waiter);
    }

    /// The close reason, once closing.
    pub fn closing(&self) -> Option<CloseReason> {
        self.state.lock().closing.as_deref().cloned()
    }

    /// Moves queued packets into `out`, at most `max_bytes` worth (always at least one packet), and returns
    /// the close reason if the session is closing and nothing is left to send.
    pub fn drain(&self, out: &mut Vec<Outgoing>, max_bytes: usize) -> Option<CloseReason> {
        self.drain_frames(out, max_bytes).closing
    }

    /// As [`Outbox::drain`], for a websocket writer, which also learns how much of the first packet's frame a
    /// publisher already wrote and whether packets are left behind.
    pub fn drain_frames(&self, out: &mut Vec<Outgoing>, max_bytes: usize) -> Drained {
        let mut state = self.state.lock();
        state.urgent = false;
        let written = std::mem::take(&mut state.partial) as usize;
        let mut taken = 0;
        let mut drained = 0;
        while let Some(front) = state.queue.front() {
            if !out.is_empty() && taken + front.len() > max_bytes {
                break;
            }
            taken += front.len();
            if let Some(packet) = state.queue.pop_front() {
                out.push(packet);
                drained += 1;
            }
        }
        state.bytes -= taken as u32;
        let queued_ms = (drained > 0).then_some(state.queued_ms);
        if !state.queue.is_empty() {
            // The rest waits from now: the writer takes it in its next round.
            state.mark_queued();
            return Drained {
                written,
                queued_ms,
                more: true,
                closing: None,
            };
        }
        // A session that drained a batch keeps its ring buffer for the next one instead of growing a new one
        // every time; one that drained a packet or two (a ping, a rare event) is idle and gives it back.
        if drained < KEEP_QUEUE_MIN_BATCH || state.queue.capacity() > KEEP_QUEUE_MAX_CAPACITY {
            state.queue = VecDeque::new();
        }
        Drained {
            written,
            queued_ms,
            more: false,
            closing: state.closing.as_deref().cloned(),
        }
    }

    /// Registers the websocket writer's waker as [`Outbox::poll_ready`] does and, when it has to wait with
    /// nothing queued and the session open, lends it the socket, all under one lock. Returns whether the
    /// socket was lent. Publishers of small rooms write to a lent socket until the writer takes it back:
    /// [`Outbox::poll_ready`] does when it reports ready, [`Outbox::reclaim_stream`] otherwise.
    pub fn lend_stream(
        &self,
        stream: &Arc<TcpStream>,
        cx: &mut Context<'_>,
    ) -> (Poll<Signal>, bool) {
        let mut state = self.state.lock();
        if state.signaled {
            state.signaled = false;
            return (Poll::Ready(signal_kind(&state)), false);
        }
        register(&mut state, cx);
        if !state.queue.is_empty() || state.closing.is_some() {
            return (Poll::Pending, false);
        }
        state.lent = Some(stream.clone());
        (Poll::Pending, true)
    }

    /// Takes the lent websocket back: from now on only its writer writes to it.
    pub fn reclaim_stream(&self) {
        self.state.lock().lent = None;
    }

    /// Packets waiting to be written.
    pub fn len(&self) -> usize {
        self.state.lock().queue.len()
    }

    /// True when no packet is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when packets are waiting.
    pub fn has_pending(&self) -> bool {
        !self.state.lock().queue.is_empty()
    }

    /// Ready when something was queued, a close was requested, or [`Outbox::wake`] was called since the
    /// last time this returned ready; a lent websocket is taken back then. Keeps only the latest waker: one
    /// task waits on an outbox at a time.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_signal(cx).map(|_| ())
    }

    /// As [`Outbox::poll_ready`], telling whether what woke the writer may wait (see [`Signal`]).
    pub fn poll_signal(&self, cx: &mut Context<'_>) -> Poll<Signal> {
        let mut state = self.state.lock();
        if state.signaled {
            state.signaled = false;
            state.lent = None;
            return Poll::Ready(signal_kind(&state));
        }
        register(&mut state, cx);
        Poll::Pending
    }

    /// Wakes `waker` once the outbox starts closing (at once if it already is), for whoever must finish a
    /// session no transport task watches. One such waker per outbox: a second call replaces the first.
    pub fn on_close(&self, waker: Waker) {
        let mut state = self.state.lock();
        if state.closing.is_some() {
            drop(state);
            waker.wake();
            return;
        }
        state.close_waiter = Some(Box::new(waker));
    }

    /// Waits as [`Outbox::poll_ready`] does.
    pub async fn ready(&self) {
        std::future::poll_fn(|cx| self.poll_ready(cx)).await
    }

    /// Wakes the current waiter without queueing anything (transport change).
    pub fn wake(&self) {
        let mut state = self.state.lock();
        state.urgent = true;
        let waiter = signal(&mut state);
        drop(state);
        wake(waiter);
    }
}

/// Whether an event at `seq` is new to this open session (and, if so, makes `seq` its position). Sequence 0
/// is not a stream event and is always new.
fn admit(state: &mut State, seq: u64) -> Result<bool, PushError> {
    if state.closing.is_some() {
        return Err(PushError::Closed);
    }
    if seq != 0 {
        let (_, number) = unpack(seq);
        let last = position_of(state, seq);
        if number <= *last {
            return Ok(false);
        }
        *last = number;
    }
    Ok(true)
}

/// The session's last sequence in the partition of the packed position `seq`.
fn position_of(state: &mut State, seq: u64) -> &mut u64 {
    match unpack(seq).0 {
        0 => &mut state.last_seq,
        partition => {
            let others = &mut state.other_partitions;
            if others.len() < partition {
                others.reserve_exact(partition - others.len());
                others.resize(partition, 0);
            }
            &mut others[partition - 1]
        }
    }
}

/// Keeps `cx`'s waker as the one to wake, unless it is already the one kept.
fn register(state: &mut State, cx: &Context<'_>) {
    match &state.waiter {
        Some(waker) if waker.will_wake(cx.waker()) => {}
        _ => state.waiter = Some(cx.waker().clone()),
    }
}

/// Marks the outbox as signaled and takes the wakers to call once the lock is released.
fn signal(state: &mut State) -> [Option<Waker>; 2] {
    state.signaled = true;
    let closer = if state.closing.is_some() {
        state.close_waiter.take().map(|waker| *waker)
    } else {
        None
    };
    [state.waiter.take(), closer]
}

fn signal_kind(state: &State) -> Signal {
    if state.urgent {
        Signal::Urgent
    } else {
        Signal::Events
    }
}

fn wake(waiters: [Option<Waker>; 2]) {
    for waker in waiters.into_iter().flatten() {
        waker.wake();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::Bytes;

    pub(crate) fn text(s: &'static str) -> Outgoing {
        Outgoing::Text(Bytes::from_static(s.as_bytes()))
    }

    fn outbox(max_messages: usize, max_bytes: usize) -> Outbox {
        Outbox::new(OutboxLimits {
            max_messages,
            max_bytes,
        })
    }

    #[test]
    fn drains_in_order() {
        let ob = outbox(10, 1000);
        ob.push(text("41")).unwrap();
        ob.push(text("42")).unwrap();
        let mut out = Vec::new();
        assert_eq!(ob.drain(&mut out, usize::MAX), None);
        assert_eq!(out, vec![text("41"), text("42")]);
        assert!(!ob.has_pending());
    }

    #[test]
    fn full_queue_closes_as_slow_consumer() {
        let ob = outbox(2, 1000);
        ob.push(text("a")).unwrap();
        ob.push(text("b")).unwrap();
        assert_eq!(ob.push(text("c")), Err(PushError::Full));
        assert_eq!(ob.closing(), Some(CloseReason::SlowConsumer));
        assert_eq!(ob.push(text("d")), Err(PushError::Closed));
        let mut out = Vec::new();
        assert_eq!(
            ob.drain(&mut out, usize::MAX),
            Some(CloseReason::SlowConsumer)
        );
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn byte_limit_counts() {
        let ob = outbox(100, 5);
        ob.push(text("abc")).unwrap();
        assert_eq!(ob.push(text("abc")), Err(PushError::Full));
    }

    #[test]
    fn events_are_unique_and_ordered_by_sequence() {
        let ob = outbox(100, 1000);
        assert_eq!(ob.push_event(1, &[text("e1")]), Ok(true));
        assert_eq!(ob.push_event(1, &[text("e1")]), Ok(false));
        assert_eq!(ob.push_event(3, &[text("e3")]), Ok(true));
        assert_eq!(ob.push_event(2, &[text("e2")]), Ok(false));
        assert_eq!(ob.last_seq(), 3);
    }

    #[test]
    fn each_partition_keeps_its_own_order() {
        use crate::cluster::partition::pack;
        let ob = outbox(100, 1000);
        assert_eq!(ob.push_event(pack(0, 5), &[text("a")]), Ok(true));
        // Another partition's numbers are not compared with partition 0's.
        assert_eq!(ob.push_event(pack(2, 1), &[text("b")]), Ok(true));
        assert_eq!(ob.push_event(pack(1, 3), &[text("c")]), Ok(true));
        assert_eq!(ob.push_event(pack(2, 1), &[text("b")]), Ok(false));
        assert_eq!(ob.push_event(pack(0, 4), &[text("a")]), Ok(false));
        ob.advance_seq(pack(1, 10));
        assert_eq!(ob.push_event(pack(1, 9), &[text("c")]), Ok(false));
        assert_eq!(ob.push_event(pack(1, 11), &[text("c")]), Ok(true));
        assert_eq!(ob.last_seq(), 5);
    }

    #[test]
    fn held_events_follow_the_replay_without_duplicates() {
        let ob = outbox(100, 1000);
        ob.hold();
        let live = |s: &'static str| -> Arc<[Outgoing]> { Arc::from([text(s)]) };
        ob.push_shared_event(5, &live("e5"), true).unwrap();
        ob.push_shared_event(6, &live("e6"), true).unwrap();
        let mut out = Vec::new();
        ob.drain(&mut out, usize::MAX);
        assert!(out.is_empty(), "held events are not queued");
        // The replay covers 4 and 5; the held 5 must not come twice, 6 follows.
        ob.push_event(4, &[text("e4")]).unwrap();
        ob.push_event(5, &[text("e5")]).unwrap();
        ob.release().unwrap();
        ob.drain(&mut out, usize::MAX);
        assert_eq!(out, vec![text("e4"), text("e5"), text("e6")]);
        ob.push_shared_event(7, &live("e7"), false).unwrap();
        out.clear();
        ob.drain(&mut out, usize::MAX);
        assert_eq!(out, vec![text("e7")]);
    }

    #[test]
    fn drain_respects_byte_budget_but_takes_one() {
        let ob = outbox(100, 1000);
        ob.push(text("aaaa")).unwrap();
        ob.push(text("bbbb")).unwrap();
        let mut out = Vec::new();
        assert!(ob.drain_frames(&mut out, 2).more);
        assert_eq!(out.len(), 1);
        out.clear();
        ob.close(CloseReason::TransportClose);
        let last = ob.drain_frames(&mut out, 2);
        assert_eq!(out.len(), 1);
        assert!(!last.more);
        assert_eq!(last.closing, Some(CloseReason::TransportClose));
    }

    /// A connected loopback pair: (server side as the writer's socket, client side to read from).
    pub(crate) async fn socket_pair() -> (Arc<TcpStream>, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (accepted, client) = tokio::join!(listener.accept(), client);
        (Arc::new(accepted.unwrap().0), client.unwrap())
    }

    pub(crate) async fn read_exactly(stream: &mut TcpStream, n: usize) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; n];
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            stream.read_exact(&mut buf),
        )
        .await
        .expect("bytes arrive")
        .unwrap();
        buf
    }

    fn shared(s: &'static str) -> Arc<[Outgoing]> {
        Arc::from([text(s)])
    }

    /// The writer's wait, polled once: whether the socket was lent (never when the outbox is ready).
    fn lend(ob: &Outbox, stream: &Arc<TcpStream>) -> bool {
        let (ready, lent) = ob.lend_stream(stream, &mut Context::from_waker(Waker::noop()));
        assert!(!(ready.is_ready() && lent));
        lent
    }

    fn poll_ready_now(ob: &Outbox) -> bool {
        ob.poll_ready(&mut Context::from_waker(Waker::noop()))
            .is_ready()
    }

    #[tokio::test]
    async fn lent_socket_is_written_by_the_publisher() {
        let (server, mut client) = socket_pair().await;
        let ob = outbox(10, 1000);
        assert!(lend(&ob, &server));
        assert_eq!(
            ob.push_shared_event(1, &shared("42[\"a\"]"), true),
            Ok(true)
        );
        assert!(!ob.has_pending(), "written, not queued");
        assert!(!poll_ready_now(&ob), "and the writer is not woken");
        // A text frame: FIN+text, length 7, then the payload.
        assert_eq!(read_exactly(&mut client, 9).await, b"\x81\x0742[\"a\"]");
        // Without write_now, or once reclaimed, events are queued for the writer.
        assert_eq!(ob.push_shared_event(2, &shared("b"), false), Ok(true));
        assert!(ob.has_pending());
        let mut out = Vec::new();
        ob.drain(&mut out, usize::MAX);
        ob.reclaim_stream();
        assert_eq!(ob.push_shared_event(3, &shared("c"), true), Ok(true));
        assert!(ob.has_pending());
    }

    #[tokio::test]
    async fn a_ready_wake_takes_the_socket_back() {
        let (server, _client) = socket_pair().await;
        let ob = outbox(10, 1000);
        assert!(lend(&ob, &server));
        ob.wake();
        assert!(poll_ready_now(&ob));
        assert_eq!(ob.push_shared_event(1, &shared("a"), true), Ok(true));
        assert!(ob.has_pending(), "queued for the writer, not written");
        // Signaled again: the next wait reports ready and lends nothing.
        assert!(!lend(&ob, &server));
        assert!(!poll_ready_now(&ob), "that wait consumed the signal");
    }

    #[test]
    fn a_drain_tells_when_its_packets_started_waiting() {
        // An adaptive cadence turns the tracking on for the process.
        let _cadence = write_cadence::WriteCadence::new(
            std::time::Duration::from_millis(20),
            std::time::Duration::from_millis(300),
        );
        assert!(write_cadence::tracking());
        let ob = outbox(16, 1 << 20);
        let mut out = Vec::new();
        assert_eq!(ob.drain_frames(&mut out, usize::MAX).queued_ms, None);
        let before = now_ms();
        ob.push(text("a")).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30));
        ob.push(text("b")).unwrap();
        let queued = ob.drain_frames(&mut out, usize::MAX).queued_ms.unwrap();
        assert!(queued >= before, "queued {queued}, test started {before}");
        assert!(
            now_ms().wrapping_sub(queued) >= 30,
            "the first packet's wait counts"
        );
    }

    #[test]
    fn a_batch_keeps_the_ring_buffer_and_a_lone_packet_gives_it_back() {
        let ob = outbox(100, 100_000);
        let capacity = |ob: &Outbox| ob.state.lock().queue.capacity();
        let mut out = Vec::new();
        for _ in 0..5 {
            ob.push(text("x")).unwrap();
        }
        ob.drain(&mut out, usize::MAX);
        let kept = capacity(&ob);
        assert!(kept >= 5, "a batch keeps its ring buffer ({kept})");
        for _ in 0..5 {
            ob.push(text("y")).unwrap();
        }
        assert_eq!(capacity(&ob), kept, "the next batch reuses it");
        ob.drain(&mut out, usize::MAX);
        ob.push(text("ping")).unwrap();
        ob.drain(&mut out, usize::MAX);
        assert_eq!(capacity(&ob), 0, "an idle session owns no ring buffer");
        for _ in 0..40 {
            ob.push(text("z")).unwrap();
        }
        ob.drain(&mut out, usize::MAX);
        assert_eq!(capacity(&ob), 0, "a large ring buffer is not kept");
    }

    #[test]
    fn live_events_racing_a_release_never_overtake_the_held_ones() {
        const HELD: u64 = 200;
        const LIVE: u64 = 200;
        for round in 0..300 {
            let ob = Arc::new(outbox(10_000, 1 << 24));
            ob.hold();
            for seq in 1..=HELD {
                ob.push_shared_event(seq, &shared("held"), false).unwrap();
            }
            let start = Arc::new(std::sync::Barrier::new(2));
            let live = {
                let (ob, start) = (ob.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    for seq in HELD + 1..=HELD + LIVE {
                        ob.push_shared_event(seq, &shared("live"), false).unwrap();
                    }
                })
            };
            start.wait();
            ob.release().unwrap();
            live.join().unwrap();
            let mut out = Vec::new();
            ob.drain(&mut out, usize::MAX);
            assert_eq!(
                out.len() as u64,
                HELD + LIVE,
                "round {round}: events were lost when a live one overtook the held ones"
            );
        }
    }

    fn signal_now(ob: &Outbox) -> Poll<Signal> {
        ob.poll_signal(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn room_events_may_wait_and_direct_packets_may_not() {
        let ob = outbox(10, 1000);
        let mut out = Vec::new();
        assert_eq!(ob.push_shared_event(1, &shared("a"), false), Ok(true));
        assert_eq!(signal_now(&ob), Poll::Ready(Signal::Events));
        // A reply behind the waiting event wakes the writer again, as urgent.
        ob.push(text("reply")).unwrap();
        assert_eq!(signal_now(&ob), Poll::Ready(Signal::Urgent));
        // Another one before the drain needs no second wake.
        ob.push(text("reply 2")).unwrap();
        assert_eq!(signal_now(&ob), Poll::Pending);
        ob.drain(&mut out, usize::MAX);
        // The drain ends the urgency: the next room event may wait again.
        assert_eq!(ob.push_shared_event(2, &shared("b"), false), Ok(true));
        assert_eq!(signal_now(&ob), Poll::Ready(Signal::Events));
        ob.drain(&mut out, usize::MAX);
        // Replays, closes and transport changes do not wait either.
        assert_eq!(ob.push_event(3, &[text("c")]), Ok(true));
        assert_eq!(signal_now(&ob), Poll::Ready(Signal::Urgent));
        ob.drain(&mut out, usize::MAX);
        ob.wake();
        assert_eq!(signal_now(&ob), Poll::Ready(Signal::Urgent));
        ob.drain(&mut out, usize::MAX);
        ob.close(CloseReason::ServerShutdown);
        assert_eq!(signal_now(&ob), Poll::Ready(Signal::Urgent));
    }

    #[tokio::test]
    async fn nothing_is_lent_while_packets_wait() {
        let (server, _client) = socket_pair().await;
        let ob = outbox(10, 1000);
        ob.push(text("x")).unwrap();
        assert!(poll_ready_now(&ob));
        assert!(!lend(&ob, &server), "not while a packet waits");
        let mut out = Vec::new();
        ob.drain(&mut out, usize::MAX);
        ob.close(CloseReason::TransportClose);
        assert!(poll_ready_now(&ob));
        assert!(!lend(&ob, &server), "not while closing");
    }

    #[tokio::test]
    async fn what_the_socket_refuses_is_queued_with_its_written_part() {
        let (server, mut client) = socket_pair().await;
        let ob = Arc::new(outbox(100_000, 1 << 30));
        assert!(lend(&ob, &server));
        // Fill the socket until a write stops short: the client reads nothing yet.
        let payload = vec![b'4'; 60 * 1024];
        let big: Arc<[Outgoing]> = Arc::from([Outgoing::Text(Bytes::from(payload.clone()))]);
        let mut seq = 0;
        while !ob.has_pending() {
            seq += 1;
            assert_eq!(ob.push_shared_event(seq, &big, true), Ok(true));
            assert!(seq < 10_000, "the socket never filled");
        }
        let mut out = Vec::new();
        let drained = ob.drain_frames(&mut out, usize::MAX);
        let written = drained.written;
        assert!(!drained.more);
        assert_eq!(out.len(), 1, "the socket was taken back: one event queued");
        let mut frame = vec![0x81, 126, 0xF0, 0x00];
        frame.extend_from_slice(&payload);
        assert!(written < frame.len());
        // The writer finishes the frame from where the publisher stopped.
        let mut writer = super::super::ws_writer::FrameWriter::default();
        writer.extend(out, written);
        let expected = frame.repeat(seq as usize);
        let reader =
            tokio::spawn(
                async move { read_exactly(&mut client, expected.len()).await == expected },
            );
        while !writer.write_some(&server).unwrap() {
            server.writable().await.unwrap();
        }
        assert!(
            reader.await.unwrap(),
            "every frame arrives whole and in order"
        );
    }

    #[tokio::test]
    async fn ready_fires_after_push() {
        let ob = std::sync::Arc::new(outbox(10, 100));
        let waiter = {
            let ob = ob.clone();
            tokio::spawn(async move { ob.ready().await })
        };
        tokio::task::yield_now().await;
        ob.push(text("x")).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
