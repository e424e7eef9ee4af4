//! The drain of a stopping node: readiness goes false first, then new clients are refused and the open ones are
//! closed evenly over a window, so that they reconnect to the other nodes (and recover their missed events there)
//! without all arriving at once. [`crate::server::RunningNode::drain`] runs the steps; this module holds the plan,
//! the flag `/readyz` reads, and the spread close.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use rand::seq::SliceRandom;

use crate::cluster::tunnels::{TunnelCloser, Tunnels};
use crate::engineio::{CloseReason, Engine, Session};

/// Pace of the spread close: one batch of sessions every tick.
const TICK: Duration = Duration::from_millis(50);

/// When each step of a drain happens, from the signal on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainPlan {
    /// Readiness is false but clients are still taken, so that balancers stop sending new ones first.
    pub unready: Duration,
    /// The open clients are closed evenly over this long; zero closes them all at once.
    pub window: Duration,
    /// From the signal to the exit at the latest; clients still open then are closed at once.
    pub deadline: Duration,
}

impl DrainPlan {
    /// Refuse and close everything at once, then wait up to `deadline` for the sessions to go.
    pub fn immediate(deadline: Duration) -> DrainPlan {
        DrainPlan {
            unready: Duration::ZERO,
            window: Duration::ZERO,
            deadline,
        }
    }
}

/// Whether the node drains: `/readyz` answers `503` from the moment it is set.
#[derive(Debug, Default)]
pub struct Draining(AtomicBool);

impl Draining {
    /// Marks the node as draining (for good).
    pub fn start(&self) {
        if !self.0.swap(true, Ordering::AcqRel) {
            metrics::gauge!("tidings_draining").set(1.0);
        }
    }

    /// True once [`Draining::start`] was called.
    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Something that makes the drain skip what is left of its waits (a second signal); `None` never fires.
pub type Hurry = Option<watch::Receiver<bool>>;

/// Resolves when `hurry` fires (at once when it already has); never when it is `None` or its sender is gone.
pub async fn hurried(hurry: &mut Hurry) {
    match hurry {
        Some(rx) => {
            if rx.wait_for(|&now| now).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// Sleeps until `until`, or less when hurried; true when hurried.
pub async fn sleep_until(until: Instant, hurry: &mut Hurry) -> bool {
    tokio::select! {
        _ = tokio::time::sleep_until(until) => false,
        _ = hurried(hurry) => true,
    }
}

/// One thing the drain moves to another node: a session of this node, or a websocket it splices to another.
enum Closing {
    Session(Arc<Engine>, Arc<Session>),
    Tunnel(TunnelCloser),
}

/// Closes every open session of `engines` (which refuse new ones by now) and every websocket spliced through
/// `tunnels` evenly over `window`, in a random order, ending by `deadline` at the latest, in batches every
/// [`TICK`] or so. When hurried, what is left is closed at once. Returns how many this closed.
pub async fn close_spread(
    engines: &[Arc<Engine>],
    tunnels: Option<&Tunnels>,
    window: Duration,
    deadline: Instant,
    hurry: &mut Hurry,
) -> usize {
    let mut sessions: Vec<Closing> = engines
        .iter()
        .flat_map(|engine| {
            engine
                .sessions()
                .into_iter()
                .map(|s| Closing::Session(engine.clone(), s))
        })
        .chain(
            tunnels
                .map(Tunnels::closers)
                .unwrap_or_default()
                .into_iter()
                .map(Closing::Tunnel),
        )
        .collect();
    sessions.shuffle(&mut rand::thread_rng());
    let total = sessions.len();
    let window = window.min(deadline.saturating_duration_since(Instant::now()));
    tracing::info!(
        sessions_and_tunnels = total,
        window_ms = window.as_millis() as u64,
        "closing clients"
    );
    let start = Instant::now();
    let mut closed = 0;
    let mut next = 0;
    let mut hurrying = false;
    while next < total {
        // Session i is due at start + window * i / total: evenly over the window, whatever the count.
        let due = if hurrying || window.is_zero() {
            total
        } else {
            let elapsed = start.elapsed().as_nanos();
            let due = elapsed * total as u128 / window.as_nanos() + 1;
            usize::try_from(due).unwrap_or(total).min(total)
        };
        for closing in &sessions[next..due] {
            match closing {
                Closing::Session(engine, session) if !session.is_closed() => {
                    engine.close_session(session, CloseReason::ServerShutdown);
                    closed += 1;
                }
                Closing::Session(..) => {}
                Closing::Tunnel(tunnel) => {
                    tunnel.close();
                    closed += 1;
                }
            }
        }
        metrics::counter!("tidings_drain_closed_total").increment((due - next) as u64);
        next = due;
        if next < total && !hurrying {
            hurrying = sleep_until(Instant::now() + TICK, hurry).await;
        }
    }
    closed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hurry_that_fired_ends_waits_at_once() {
        let (tx, rx) = watch::channel(false);
        let mut hurry = Some(rx);
        tx.send(true).unwrap();
        let far = Instant::now() + Duration::from_secs(3600);
        assert!(sleep_until(far, &mut hurry).await);
    }

    #[tokio::test(start_paused = true)]
    async fn no_hurry_sleeps_to_the_end() {
        let mut hurry: Hurry = None;
        let until = Instant::now() + Duration::from_secs(5);
        assert!(!sleep_until(until, &mut hurry).await);
        assert!(Instant::now() >= until);
    }

    #[test]
    fn draining_is_sticky() {
        let draining = Draining::default();
        assert!(!draining.is_draining());
        draining.start();
        draining.start();
        assert!(draining.is_draining());
    }
}
