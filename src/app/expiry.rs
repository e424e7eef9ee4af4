//! Token expiry on live connections: a socket hears `token:expiring` some time before its token's `exp`, and
//! at `exp` (plus the configured leeway) it gets `token:expired` and is disconnected, unless the client sent
//! a fresh token with the `refresh` event in the meantime.
//!
//! One clock per node, not one timer per socket: deadlines wait in an ordered map that a single task reads
//! once a second (token expiry is in whole seconds anyway).

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::socketio::Socket;

/// The reserved event a socket gets before its token expires: `{exp, in_secs}`.
pub const EXPIRING_EVENT: &str = "token:expiring";
/// The reserved event a socket gets when its token expired, right before the server disconnects it:
/// `{message: "token expired", exp}`.
pub const EXPIRED_EVENT: &str = "token:expired";

/// What is due at a deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Tell the client its token expires soon.
    Notice,
    /// The token expired: disconnect.
    Expire,
}

struct Entry {
    socket: Weak<Socket>,
    /// The `exp` the deadline was set for: a refreshed socket has another one and ignores the entry.
    exp: u64,
    due: Due,
}

/// Deadlines of every socket whose token has an `exp`.
pub struct ExpiryClock {
    /// (unix second, tie-breaker) → entry.
    deadlines: Mutex<BTreeMap<(u64, u64), Entry>>,
    next_id: std::sync::atomic::AtomicU64,
    notice: Duration,
    leeway: Duration,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl ExpiryClock {
    /// A clock that sends the notice `notice` before `exp` and disconnects `leeway` after it.
    pub fn new(notice: Duration, leeway: Duration) -> ExpiryClock {
        ExpiryClock {
            deadlines: Mutex::new(BTreeMap::new()),
            next_id: std::sync::atomic::AtomicU64::new(0),
            notice,
            leeway,
        }
    }

    /// Sets the deadlines of a socket whose token expires at `exp` (seconds since the epoch).
    pub fn schedule(&self, socket: &Arc<Socket>, exp: u64) {
        let notice_at = exp.saturating_sub(self.notice.as_secs());
        let expire_at = exp.saturating_add(self.leeway.as_secs());
        let mut deadlines = self.deadlines.lock();
        for (at, due) in [(notice_at, Due::Notice), (expire_at, Due::Expire)] {
            let id = self
                .next_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            deadlines.insert(
                (at, id),
                Entry {
                    socket: Arc::downgrade(socket),
                    exp,
                    due,
                },
            );
        }
    }

    /// Takes every deadline up to `now` whose socket is still connected with the same `exp`.
    pub fn take_due(&self, now: u64) -> Vec<(Arc<Socket>, u64, Due)> {
        let mut deadlines = self.deadlines.lock();
        let later = deadlines.split_off(&(now.saturating_add(1), 0));
        let due = std::mem::replace(&mut *deadlines, later);
        drop(deadlines);
        due.into_values()
            .filter_map(|entry| {
                let socket = entry.socket.upgrade()?;
                let current = socket.user().and_then(|user| user.expires_at());
                (socket.is_connected() && current == Some(entry.exp))
                    .then_some((socket, entry.exp, entry.due))
            })
            .collect()
    }

    /// Drops the deadlines of sockets that are gone, returning how many: a closed socket's entries would
    /// otherwise wait for its token's `exp`, each keeping the socket's allocation (its `Weak`) and a map slot,
    /// which under reconnection churn grows the node by every socket that ever connected within a token's
    /// lifetime. One pass over the map; the expiry task calls it once a minute.
    pub fn purge_closed(&self) -> usize {
        let mut deadlines = self.deadlines.lock();
        let before = deadlines.len();
        deadlines.retain(|_, entry| entry.socket.strong_count() > 0);
        before - deadlines.len()
    }

    /// Deadlines waiting (gauge).
    pub fn len(&self) -> usize {
        self.deadlines.lock().len()
    }

    /// True when no deadline waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::VerifiedClaims;
    use crate::engineio::session::TransportKind;
    use crate::engineio::{OutboxLimits, Session};

    fn claims(exp: u64) -> Arc<VerifiedClaims> {
        let claims: crate::auth::Claims =
            serde_json::from_value(serde_json::json!({ "sub": "u", "exp": exp })).unwrap();
        Arc::new(VerifiedClaims::from_claims(claims).unwrap())
    }

    fn socket(exp: u64) -> Arc<Socket> {
        let limits = OutboxLimits {
            max_messages: 8,
            max_bytes: 1 << 16,
        };
        let session = Session::new(TransportKind::WebSocket, limits, 10);
        Socket::new(session, "/", None, None, Some(claims(exp)))
    }

    #[test]
    fn closed_sockets_leave_the_map_at_the_next_purge() {
        let clock = ExpiryClock::new(Duration::from_secs(60), Duration::from_secs(5));
        let (a, b) = (socket(1000), socket(1000));
        clock.schedule(&a, 1000);
        clock.schedule(&b, 1000);
        assert_eq!(clock.len(), 4);
        assert_eq!(clock.purge_closed(), 0);
        drop(b);
        assert_eq!(clock.purge_closed(), 2);
        assert_eq!(clock.len(), 2);
        assert_eq!(
            clock.take_due(1005).len(),
            2,
            "the live socket's deadlines stay"
        );
    }

    #[test]
    fn notice_then_expiry_and_refresh_cancels() {
        let clock = ExpiryClock::new(Duration::from_secs(60), Duration::from_secs(5));
        let (a, b) = (socket(1000), socket(1000));
        clock.schedule(&a, 1000);
        clock.schedule(&b, 1000);
        assert!(clock.take_due(939).is_empty());
        let due = clock.take_due(940);
        assert_eq!(due.len(), 2);
        assert!(due
            .iter()
            .all(|(_, exp, d)| *exp == 1000 && *d == Due::Notice));
        drop(due);
        // `b` refreshed to a later token: its old deadline no longer applies.
        b.set_user(claims(5000));
        clock.schedule(&b, 5000);
        let due = clock.take_due(1005);
        assert_eq!(due.len(), 1);
        assert!(Arc::ptr_eq(&due[0].0, &a) && due[0].2 == Due::Expire);
        assert_eq!(clock.len(), 2, "b's two new deadlines remain");
        drop(b);
        assert!(
            clock.take_due(u64::MAX - 1).is_empty(),
            "dropped sockets are skipped"
        );
        assert!(clock.is_empty());
    }
}
