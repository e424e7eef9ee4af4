//! Token expiry on live connections: a socket hears `token:expiring` some time before its token's `exp`, and
//! at `exp` (plus the configured leeway) it gets `token:expired` and is disconnected, unless the client sent
//! a fresh token with the `refresh` event in the meantime.
//!
//! One clock per node, not one timer per socket: deadlines wait in a binary heap that a single task reads once a
//! second (token expiry is in whole seconds anyway). A socket has one entry at a time, 24 bytes: its notice, and
//! once the notice is sent, its disconnection. (An ordered map of both deadlines, the first version, kept ~155
//! bytes per connection in half-full B-tree nodes.)

use std::cmp::Ordering;
use std::collections::BinaryHeap;
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

/// One socket's next deadline.
struct Entry {
    /// The deadline's unix second times two, plus one for [`Due::Expire`]: ordered by time, a notice before a
    /// disconnection of the same second.
    key: u64,
    /// The `exp` the deadline was set for: a refreshed socket has another one and ignores the entry.
    exp: u64,
    socket: Weak<Socket>,
}

impl Entry {
    fn new(at: u64, due: Due, exp: u64, socket: Weak<Socket>) -> Entry {
        Entry {
            key: at.min(u64::MAX / 2) * 2 + u64::from(due == Due::Expire),
            exp,
            socket,
        }
    }

    fn at(&self) -> u64 {
        self.key / 2
    }

    fn due(&self) -> Due {
        if self.key % 2 == 1 {
            Due::Expire
        } else {
            Due::Notice
        }
    }
}

// Reversed on the key: the heap's top is the earliest deadline.
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        other.key.cmp(&self.key)
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for Entry {}

/// Deadlines of every socket whose token has an `exp`.
pub struct ExpiryClock {
    deadlines: Mutex<BinaryHeap<Entry>>,
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
            deadlines: Mutex::new(BinaryHeap::new()),
            notice,
            leeway,
        }
    }

    /// Sets the deadlines of a socket whose token expires at `exp` (seconds since the epoch): its notice now,
    /// its disconnection once the notice is taken.
    pub fn schedule(&self, socket: &Arc<Socket>, exp: u64) {
        let notice_at = exp.saturating_sub(self.notice.as_secs());
        let mut deadlines = self.deadlines.lock();
        crate::grow::reserve(&mut deadlines, 1);
        deadlines.push(Entry::new(
            notice_at,
            Due::Notice,
            exp,
            Arc::downgrade(socket),
        ));
    }

    /// Takes every deadline up to `now` whose socket is still connected with the same `exp`; a notice taken
    /// puts the socket's disconnection in its place (taken in the same call when it is due too).
    pub fn take_due(&self, now: u64) -> Vec<(Arc<Socket>, u64, Due)> {
        let mut taken = Vec::new();
        loop {
            let mut popped = Vec::new();
            {
                let mut deadlines = self.deadlines.lock();
                while deadlines.peek().is_some_and(|top| top.at() <= now) {
                    popped.extend(deadlines.pop());
                }
            }
            if popped.is_empty() {
                return taken;
            }
            // The sockets' own locks are taken with the clock's released.
            let mut next = Vec::new();
            for entry in popped {
                let Some(socket) = entry.socket.upgrade() else {
                    continue;
                };
                let current = socket.user().and_then(|user| user.expires_at());
                if !socket.is_connected() || current != Some(entry.exp) {
                    continue;
                }
                let due = entry.due();
                if due == Due::Notice {
                    let expire_at = entry.exp.saturating_add(self.leeway.as_secs());
                    next.push(Entry::new(expire_at, Due::Expire, entry.exp, entry.socket));
                }
                taken.push((socket, entry.exp, due));
            }
            if next.is_empty() {
                return taken;
            }
            let mut deadlines = self.deadlines.lock();
            crate::grow::reserve(&mut deadlines, next.len());
            deadlines.extend(next);
        }
    }

    /// Drops the deadlines of sockets that are gone, returning how many: a closed socket's entry would
    /// otherwise wait for its token's `exp`, keeping the socket's allocation (its `Weak`) and a slot, which
    /// under reconnection churn grows the node by every socket that ever connected within a token's
    /// lifetime. One pass over the heap; the expiry task calls it once a minute.
    pub fn purge_closed(&self) -> usize {
        let mut deadlines = self.deadlines.lock();
        let before = deadlines.len();
        deadlines.retain(|entry| entry.socket.strong_count() > 0);
        if deadlines.capacity() > 4 * deadlines.len().max(64) {
            deadlines.shrink_to_fit();
        }
        before - deadlines.len()
    }

    /// Deadlines waiting (gauge): one per socket with an `exp`.
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
        assert_eq!(clock.len(), 2);
        assert_eq!(clock.purge_closed(), 0);
        drop(b);
        assert_eq!(clock.purge_closed(), 1);
        assert_eq!(clock.len(), 1);
        let due: Vec<Due> = clock
            .take_due(1005)
            .into_iter()
            .map(|(_, _, d)| d)
            .collect();
        assert_eq!(
            due,
            vec![Due::Notice, Due::Expire],
            "the live socket's deadlines stay, both taken when both are due"
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
        assert_eq!(
            clock.len(),
            1,
            "b's new notice remains (a's expiry was taken)"
        );
        drop(b);
        assert!(
            clock.take_due(u64::MAX - 1).is_empty(),
            "dropped sockets are skipped"
        );
        assert!(clock.is_empty());
    }
}
