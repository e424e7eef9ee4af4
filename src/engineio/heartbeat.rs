//! Engine.IO v4 heartbeat: the server pings `pingInterval` after the handshake and after each pong, and
//! closes a session whose pong does not arrive within `pingTimeout` of its ping.
//!
//! One task per endpoint keeps every session's heartbeat ([`Heartbeats`]): a queue ordered by when each
//! session must be looked at next, with 16 bytes per session, instead of a timer (and, for polling, a task)
//! per connection. A session's heartbeat state is two clock readings in the session itself
//! ([`Session::beat_state`]); the schedule rule is [`check`].

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Wake, Waker};

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::session::{clock_ms, instant_of_ms};
use super::{CloseReason, Engine, Outgoing, Session};

/// What a look at a session's heartbeat asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// Nothing yet.
    Wait,
    /// Send a ping now; its pong is due at this time (ms of the session clock).
    SendPing {
        /// When the pong is due.
        pong_due_ms: u64,
    },
    /// The pong is overdue: close the session.
    TimedOut,
}

/// The heartbeat rule, at `now_ms`, for a session whose current interval started at `from_ms` (the
/// handshake or the last pong that answered a ping) and whose awaited pong is due at `pong_due_ms` (0 when
/// none is awaited). Returns what to do and when to look again.
///
/// The pong of a ping is due `timeout` after the ping was scheduled, so a silent client is gone exactly
/// `interval + timeout` after its last pong; a ping sent late (a busy node) still gives the client at least
/// half the timeout.
pub fn check(
    now_ms: u64,
    from_ms: u64,
    pong_due_ms: u64,
    interval_ms: u64,
    timeout_ms: u64,
) -> (Beat, u64) {
    if pong_due_ms != 0 {
        if now_ms >= pong_due_ms {
            return (Beat::TimedOut, now_ms);
        }
        // Also one interval on: a pong that came by then makes the next ping due one interval after it.
        return (Beat::Wait, pong_due_ms.min(now_ms + interval_ms));
    }
    let ping_at = from_ms + interval_ms;
    if now_ms < ping_at {
        return (Beat::Wait, ping_at);
    }
    let due = (ping_at + timeout_ms)
        .max(now_ms + timeout_ms / 2)
        .max(now_ms + 1);
    (
        Beat::SendPing { pong_due_ms: due },
        due.min(now_ms + interval_ms.max(1)),
    )
}

/// One scheduled look at a session.
struct Entry {
    at_ms: u64,
    session: Weak<Session>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.at_ms == other.at_ms
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at_ms.cmp(&other.at_ms)
    }
}

/// Most entries handled under one hold of the queue's lock.
const BATCH: usize = 1024;

/// Every session's heartbeat on one endpoint, run by one task.
#[derive(Default)]
pub struct Heartbeats {
    /// When each session is looked at next (earliest first). Closed sessions leave at their next look, or
    /// in a sweep once they are half the queue.
    queue: Mutex<BinaryHeap<Reverse<Entry>>>,
    /// Sessions whose outbox started closing, for the ones no transport task is watching (see
    /// [`Heartbeats::watch_close`]).
    closing: Mutex<Vec<Weak<Session>>>,
    /// Wakes the task: an earlier entry, a closing outbox, or the endpoint going away.
    wake: Notify,
    /// The time the task sleeps until (ms of the session clock), for [`Heartbeats::start`] to compare with.
    next_ms: AtomicU64,
    /// Sessions closed since the last sweep.
    closed: AtomicUsize,
    /// Entries in the queue at its last change, for [`Heartbeats::note_closed`] to compare with.
    scheduled: AtomicUsize,
    running: AtomicBool,
    stopped: AtomicBool,
}

impl Heartbeats {
    /// Starts the heartbeat of `session`: its first ping is due one interval after the session opened.
    /// The endpoint's task is started with the first session.
    pub fn start(self: &Arc<Self>, engine: &Arc<Engine>, session: &Arc<Session>) {
        let (from_ms, _) = session.beat_state();
        let at_ms = from_ms + ms(engine.config().ping_interval);
        let mut queue = self.queue.lock();
        crate::grow::reserve(&mut queue, 1);
        queue.push(Reverse(Entry {
            at_ms,
            session: Arc::downgrade(session),
        }));
        drop(queue);
        self.scheduled.fetch_add(1, Ordering::Relaxed);
        if !self.running.swap(true, Ordering::AcqRel) {
            tokio::spawn(drive(self.clone(), Arc::downgrade(engine)));
        }
        if at_ms < self.next_ms.load(Ordering::Acquire) {
            self.wake.notify_one();
        }
    }

    /// Finishes `session` as soon as its outbox starts closing (a slow consumer, a connect timeout), for a
    /// session no transport task watches: a polling session between two GETs.
    pub fn watch_close(self: &Arc<Self>, session: &Arc<Session>) {
        let hook = Arc::new(CloseHook {
            session: Arc::downgrade(session),
            heartbeats: Arc::downgrade(self),
        });
        session.outbox.on_close(Waker::from(hook));
    }

    /// Notes that a session closed: its entry is dead weight until its next look, or until a sweep, which
    /// comes as soon as the closed sessions are half the queue (a mass disconnect does not leave every
    /// session's block allocated for up to a ping interval).
    pub fn note_closed(&self) {
        let closed = self.closed.fetch_add(1, Ordering::Relaxed) + 1;
        if sweep_due(closed, self.scheduled.load(Ordering::Relaxed)) {
            self.wake.notify_one();
        }
    }

    /// Ends the task (the endpoint is going away).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Number of sessions in the schedule (closed ones not yet swept included).
    pub fn len(&self) -> usize {
        self.queue.lock().len()
    }

    /// True when no session is scheduled.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes up to [`BATCH`] entries due by `now_ms`.
    fn take_due(&self, now_ms: u64, into: &mut Vec<Weak<Session>>) {
        let mut queue = self.queue.lock();
        while into.len() < BATCH {
            match queue.peek() {
                Some(Reverse(entry)) if entry.at_ms <= now_ms => {}
                _ => break,
            }
            if let Some(Reverse(entry)) = queue.pop() {
                into.push(entry.session);
            }
        }
    }

    /// Puts looked-at sessions back, sweeps closed ones when they are half the queue, and returns (and
    /// records) when the next look is due.
    fn reschedule(&self, entries: &mut Vec<Entry>) -> u64 {
        let mut queue = self.queue.lock();
        crate::grow::reserve(&mut queue, entries.len());
        queue.extend(entries.drain(..).map(Reverse));
        if sweep_due(self.closed.load(Ordering::Relaxed), queue.len()) {
            self.closed.store(0, Ordering::Relaxed);
            queue.retain(|Reverse(entry)| entry.session.strong_count() > 0);
        }
        self.scheduled.store(queue.len(), Ordering::Relaxed);
        let next = queue.peek().map_or(u64::MAX, |Reverse(entry)| entry.at_ms);
        self.next_ms.store(next, Ordering::Release);
        next
    }
}

/// True when `closed` sessions are enough of a queue of `len` to sweep it.
fn sweep_due(closed: usize, len: usize) -> bool {
    closed > 64 && closed * 2 > len
}

/// Runs every heartbeat of the endpoint until it goes away.
async fn drive(heartbeats: Arc<Heartbeats>, engine: Weak<Engine>) {
    let mut due = Vec::new();
    let mut next = Vec::new();
    loop {
        if heartbeats.stopped.load(Ordering::Acquire) {
            return;
        }
        let Some(engine) = engine.upgrade() else {
            return;
        };
        let closing = std::mem::take(&mut *heartbeats.closing.lock());
        for session in closing.iter().filter_map(Weak::upgrade) {
            // Closed while no GET is waiting (slow consumer, connect timeout): finish the session now.
            if !session.is_closed() {
                close_as_outbox_says(&engine, &session);
            }
        }
        let interval = ms(engine.config().ping_interval);
        let timeout = ms(engine.config().ping_timeout);
        let wake_at = loop {
            let now = clock_ms();
            heartbeats.take_due(now, &mut due);
            let more = due.len() == BATCH;
            for weak in due.drain(..) {
                let Some(session) = weak.upgrade() else {
                    continue;
                };
                if session.is_closed() {
                    continue;
                }
                if let Some(at_ms) = look(&engine, &session, now, interval, timeout) {
                    next.push(Entry {
                        at_ms,
                        session: weak,
                    });
                }
            }
            let wake_at = heartbeats.reschedule(&mut next);
            if !more {
                break wake_at;
            }
            // A long batch: let the node's other tasks run.
            tokio::task::yield_now().await;
        };
        drop(engine);
        let notified = heartbeats.wake.notified();
        if wake_at == u64::MAX {
            notified.await;
        } else {
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(instant_of_ms(wake_at)) => {}
            }
        }
    }
}

/// Looks at one session's heartbeat; returns when to look again, or `None` once it is closed.
fn look(
    engine: &Engine,
    session: &Arc<Session>,
    now: u64,
    interval: u64,
    timeout: u64,
) -> Option<u64> {
    let (from_ms, pong_due_ms) = session.beat_state();
    let (beat, again) = check(now, from_ms, pong_due_ms, interval, timeout);
    match beat {
        Beat::Wait => Some(again),
        Beat::SendPing { pong_due_ms } => {
            // Due before the ping goes out: its pong may come back at once.
            session.expect_pong_by(pong_due_ms);
            if session.outbox.push(Outgoing::ping()).is_err() {
                close_as_outbox_says(engine, session);
                return None;
            }
            Some(again)
        }
        Beat::TimedOut => {
            engine.close_session(session, CloseReason::PingTimeout);
            None
        }
    }
}

/// Closes `session` for the reason its outbox gives (a transport close when it gives none).
fn close_as_outbox_says(engine: &Engine, session: &Arc<Session>) {
    let reason = session
        .outbox
        .closing()
        .unwrap_or(CloseReason::TransportClose);
    engine.close_session(session, reason);
}

/// Milliseconds of `d`.
fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 4)
}

/// Woken by a session's outbox when it starts closing: hands the session to the heartbeat task.
struct CloseHook {
    session: Weak<Session>,
    heartbeats: Weak<Heartbeats>,
}

impl Wake for CloseHook {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(heartbeats) = self.heartbeats.upgrade() {
            heartbeats.closing.lock().push(self.session.clone());
            heartbeats.wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: u64 = 300;
    const TIMEOUT: u64 = 200;

    #[test]
    fn first_ping_one_interval_after_the_handshake() {
        assert_eq!(check(100, 0, 0, INTERVAL, TIMEOUT), (Beat::Wait, 300));
        assert_eq!(
            check(300, 0, 0, INTERVAL, TIMEOUT),
            (Beat::SendPing { pong_due_ms: 500 }, 500)
        );
    }

    #[test]
    fn silent_client_times_out_at_its_pong_deadline() {
        assert_eq!(check(499, 0, 500, INTERVAL, TIMEOUT), (Beat::Wait, 500));
        assert_eq!(check(500, 0, 500, INTERVAL, TIMEOUT).0, Beat::TimedOut);
    }

    #[test]
    fn next_ping_one_interval_after_the_pong() {
        // Pong at 350 for the ping of 300: the interval now counts from 350.
        assert_eq!(check(500, 350, 0, INTERVAL, TIMEOUT), (Beat::Wait, 650));
        assert_eq!(
            check(650, 350, 0, INTERVAL, TIMEOUT),
            (Beat::SendPing { pong_due_ms: 850 }, 850)
        );
    }

    #[test]
    fn late_ping_still_leaves_half_the_timeout() {
        // Scheduled at 300, sent at 450: the pong is due at 550, not 500.
        assert_eq!(
            check(450, 0, 0, INTERVAL, TIMEOUT),
            (Beat::SendPing { pong_due_ms: 550 }, 550)
        );
    }

    #[test]
    fn long_timeout_looks_again_one_interval_after_the_ping() {
        // Timeout longer than the interval: a look one interval after the ping (a pong may have reset the
        // schedule by then), then the deadline.
        assert_eq!(
            check(100, 0, 0, 100, 500),
            (Beat::SendPing { pong_due_ms: 600 }, 200)
        );
        assert_eq!(check(200, 0, 600, 100, 500), (Beat::Wait, 300));
        assert_eq!(check(200, 150, 0, 100, 500), (Beat::Wait, 250));
    }

    #[test]
    fn entries_order_by_time_only() {
        let mut heap = BinaryHeap::new();
        for at_ms in [30, 10, 20] {
            heap.push(Reverse(Entry {
                at_ms,
                session: Weak::new(),
            }));
        }
        let order: Vec<u64> = std::iter::from_fn(|| heap.pop().map(|Reverse(e)| e.at_ms)).collect();
        assert_eq!(order, [10, 20, 30]);
    }
}
