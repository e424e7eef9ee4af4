//! Engine.IO v4 heartbeat: the server pings every `pingInterval` after the last pong and closes a session
//! whose pong does not arrive within `pingTimeout`.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
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
    /// `pingInterval` in milliseconds (kept small: every websocket connection's task holds a heartbeat).
    interval_ms: u32,
    /// `pingTimeout` in milliseconds.
    timeout_ms: u32,
    deadline: Instant,
    awaiting_pong: bool,
}

/// Milliseconds of `d`, at most `u32::MAX` (~49 days).
fn ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

impl Heartbeat {
    /// Starts the schedule: the first ping is due one interval from `now`.
    pub fn new(interval: Duration, timeout: Duration, now: Instant) -> Self {
        let mut beat = Heartbeat {
            interval_ms: ms(interval),
            timeout_ms: ms(timeout),
            deadline: now,
            awaiting_pong: false,
        };
        beat.deadline += beat.interval();
        beat
    }

    /// `pingInterval`.
    fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.into())
    }

    /// `pingTimeout`.
    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.into())
    }

    /// When the next action is due.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// When a heartbeat that is not woken by pongs must look again (after `now`): at the deadline, or, while
    /// a pong is awaited, one interval after the ping if that is still to come and comes first (a pong that
    /// came by then makes the next ping due one interval after it, as if it had woken the heartbeat).
    pub fn check_at(&self, now: Instant) -> Instant {
        if self.awaiting_pong {
            let early = self.deadline - self.timeout() + self.interval();
            if early > now && early < self.deadline {
                return early;
            }
        }
        self.deadline
    }

    /// Called when the deadline passed. The pong is due `timeout` after the ping was scheduled (not after
    /// the timer happened to fire), so the limit is the same whether it is checked here or lazily.
    pub fn on_deadline(&mut self, _now: Instant) -> Beat {
        if self.awaiting_pong {
            Beat::TimedOut
        } else {
            self.awaiting_pong = true;
            self.deadline += self.timeout();
            Beat::SendPing
        }
    }

    /// Called when a pong arrived; the next ping is due one interval later.
    pub fn on_pong(&mut self, now: Instant) {
        if self.awaiting_pong {
            self.awaiting_pong = false;
            self.deadline = now + self.interval();
        }
    }
}

/// Runs the heartbeat of a session whose transport does not drive it itself (sessions opened by polling,
/// which keep this task across an upgrade). Ends when the session closes.
pub async fn run(engine: Arc<Engine>, session: Arc<Session>) {
    let config = engine.config();
    let mut beat = Heartbeat::new(config.ping_interval, config.ping_timeout, Instant::now());
    let mut pongs = session.pong_count();
    // One timer, woken at the heartbeat's own times only: a pong is looked at when its ping's next check
    // comes (the next ping is then due one interval after the pong arrived), so an idle session's task holds
    // no waiter for pongs.
    let timer = tokio::time::sleep_until(beat.check_at(Instant::now()));
    tokio::pin!(timer);
    loop {
        let closing = std::future::poll_fn(|cx| {
            if let Poll::Ready(reason) = session.outbox.poll_closing(cx) {
                return Poll::Ready(Some(reason));
            }
            timer.as_mut().poll(cx).map(|()| None)
        })
        .await;
        if let Some(reason) = closing {
            // Closed while no GET is waiting (slow consumer, connect timeout): finish the session now.
            engine.close_session(&session, reason);
            return;
        }
        if session.is_closed() {
            return;
        }
        let now = Instant::now();
        let seen = session.pong_count();
        if seen != pongs {
            pongs = seen;
            beat.on_pong(session.last_pong_at().unwrap_or(now).min(now));
        }
        if now >= beat.deadline() {
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
        timer.as_mut().reset(beat.check_at(now));
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

    #[test]
    fn checks_come_at_the_deadline_or_one_interval_after_the_ping() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // Timeout shorter than the interval: only the deadlines.
        let mut hb = Heartbeat::new(ms(300), ms(200), t0);
        assert_eq!(hb.check_at(t0), t0 + ms(300));
        assert_eq!(hb.on_deadline(t0 + ms(300)), Beat::SendPing);
        assert_eq!(hb.check_at(t0 + ms(300)), t0 + ms(500));
        // Timeout longer than the interval: a look one interval after the ping, then the deadline.
        let mut hb = Heartbeat::new(ms(100), ms(500), t0);
        assert_eq!(hb.on_deadline(t0 + ms(100)), Beat::SendPing);
        assert_eq!(hb.check_at(t0 + ms(100)), t0 + ms(200));
        assert_eq!(
            hb.check_at(t0 + ms(200)),
            t0 + ms(600),
            "never the same instant twice"
        );
        hb.on_pong(t0 + ms(150));
        assert_eq!(hb.check_at(t0 + ms(200)), t0 + ms(250));
    }
}
