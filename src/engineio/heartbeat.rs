//! Engine.IO v4 heartbeat: the server pings every `pingInterval` after the last pong and closes a session
//! whose pong does not arrive within `pingTimeout`.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{CloseReason, Engine, Outgoing, Session};

/// What the heartbeat asks for when its deadline passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// Send a ping now.
    SendPing,
    /// The pong is overdue: close the session.
    TimedOut,
}

/// Heartbeat state of one session, driven by whoever owns its timer.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    interval: Duration,
    timeout: Duration,
    deadline: Instant,
    awaiting_pong: bool,
}

impl Heartbeat {
    /// Starts the schedule: the first ping is due one interval from `now`.
    pub fn new(interval: Duration, timeout: Duration, now: Instant) -> Self {
        Heartbeat {
            interval,
            timeout,
            deadline: now + interval,
            awaiting_pong: false,
        }
    }

    /// When the next action is due.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Called when the deadline passed. The pong is due `timeout` after the ping was scheduled (not after
    /// the timer happened to fire), so the limit is the same whether it is checked here or lazily.
    pub fn on_deadline(&mut self, _now: Instant) -> Beat {
        if self.awaiting_pong {
            Beat::TimedOut
        } else {
            self.awaiting_pong = true;
            self.deadline += self.timeout;
            Beat::SendPing
        }
    }

    /// Called when a pong arrived; the next ping is due one interval later.
    pub fn on_pong(&mut self, now: Instant) {
        if self.awaiting_pong {
            self.awaiting_pong = false;
            self.deadline = now + self.interval;
        }
    }
}

/// Runs the heartbeat of a session whose transport does not drive it itself (sessions opened by polling,
/// which keep this task across an upgrade). Ends when the session closes.
pub async fn run(engine: Arc<Engine>, session: Arc<Session>) {
    let config = engine.config();
    let mut beat = Heartbeat::new(config.ping_interval, config.ping_timeout, Instant::now());
    let mut pongs = session.pong_count();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(beat.deadline()) => {}
            _ = session.pong_received() => {}
            reason = std::future::poll_fn(|cx| session.outbox.poll_closing(cx)) => {
                // Closed while no GET is waiting (slow consumer, connect timeout): finish the session now.
                engine.close_session(&session, reason);
                return;
            }
        }
        if session.is_closed() {
            return;
        }
        let now = Instant::now();
        let seen = session.pong_count();
        if seen != pongs {
            pongs = seen;
            beat.on_pong(now);
            continue;
        }
        if now < beat.deadline() {
            continue;
        }
        match beat.on_deadline(now) {
            Beat::SendPing => {
                if session.outbox.push(Outgoing::ping()).is_err() {
                    let reason = session
                        .outbox
                        .closing()
                        .unwrap_or(CloseReason::TransportClose);
                    engine.close_session(&session, reason);
                    return;
                }
                session.expect_pong_by(beat.deadline());
            }
            Beat::TimedOut => {
                engine.close_session(&session, CloseReason::PingTimeout);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_then_timeout() {
        let t0 = Instant::now();
        let interval = Duration::from_millis(300);
        let timeout = Duration::from_millis(200);
        let mut hb = Heartbeat::new(interval, timeout, t0);
        assert_eq!(hb.deadline(), t0 + interval);
        assert_eq!(hb.on_deadline(t0 + interval), Beat::SendPing);
        assert_eq!(hb.deadline(), t0 + interval + timeout);
        assert_eq!(hb.on_deadline(hb.deadline()), Beat::TimedOut);
    }

    #[test]
    fn pong_reschedules_from_pong_time() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(Duration::from_millis(300), Duration::from_millis(200), t0);
        hb.on_deadline(t0 + Duration::from_millis(300));
        let pong_at = t0 + Duration::from_millis(350);
        hb.on_pong(pong_at);
        assert_eq!(hb.deadline(), pong_at + Duration::from_millis(300));
        assert_eq!(hb.on_deadline(hb.deadline()), Beat::SendPing);
    }

    #[test]
    fn unsolicited_pong_changes_nothing() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(Duration::from_millis(300), Duration::from_millis(200), t0);
        hb.on_pong(t0 + Duration::from_millis(10));
        assert_eq!(hb.deadline(), t0 + Duration::from_millis(300));
    }
}
