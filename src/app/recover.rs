//! Connection state recovery on CONNECT: restore a parked session and replay what its client missed, in
//! order, before any live event; or fail cleanly so the client starts a fresh session.

use std::sync::Arc;

use super::Tidings;
use crate::auth::{user_room, VerifiedClaims};
use crate::engineio::session::Sid;
use crate::history::HistoryError;
use crate::hub::{RoomKey, BROADCAST_ROOM};
use crate::recovery::{Membership, Owner, TakeRefused};
use crate::socketio::{ConnectRequest, Socket};

/// Why a session could not be recovered.
#[derive(Debug, thiserror::Error)]
pub(super) enum Failure {
    /// The cluster store could not be reached.
    #[error("cluster state unavailable")]
    Unavailable,
    /// No parked session with that pid (never existed, expired, or already recovered).
    #[error("unknown or expired session")]
    UnknownSession,
    /// The session belongs to another namespace or user.
    #[error("session belongs to another namespace or user")]
    Mismatch,
    /// The offset is not one we hand out.
    #[error("malformed offset")]
    BadOffset,
    /// A room's history cannot cover the gap.
    #[error("{0}")]
    History(HistoryError),
    /// More missed events than a replay may carry.
    #[error("too many missed events")]
    TooMany,
    /// The reply could not be queued.
    #[error("session closed during recovery")]
    Closed,
}

impl From<TakeRefused> for Failure {
    fn from(refused: TakeRefused) -> Failure {
        match refused {
            TakeRefused::Unknown => Failure::UnknownSession,
            TakeRefused::Mismatch => Failure::Mismatch,
        }
    }
}

impl Failure {
    pub(super) fn label(&self) -> &'static str {
        match self {
            Failure::Unavailable => "unavailable",
            Failure::UnknownSession => "unknown_session",
            Failure::Mismatch => "mismatch",
            Failure::BadOffset => "bad_offset",
            Failure::History(HistoryError::EpochChanged) => "epoch_changed",
            Failure::History(HistoryError::Evicted) => "history_evicted",
            Failure::TooMany => "too_many_missed",
            Failure::Closed => "closed",
        }
    }
}

pub(super) fn still_allowed(claims: &VerifiedClaims, room: &str) -> bool {
    room == BROADCAST_ROOM
        || room == user_room(claims.sub())
        || claims.may_join(room)
        || claims.auto_join().any(|r| r == room)
}

impl Tidings {
    /// Tries to restore the session `pid`; None means "connect as a new session".
    pub(super) fn recover(
        &self,
        request: &ConnectRequest<'_>,
        claims: &Arc<VerifiedClaims>,
        pid: &str,
        offset: Option<&str>,
    ) -> Option<Arc<Socket>> {
        metrics::counter!("tidings_recoveries_attempted_total").increment(1);
        match self.try_recover(request, claims, pid, offset) {
            Ok((socket, replayed)) => {
                metrics::counter!("tidings_recoveries_succeeded_total").increment(1);
                metrics::counter!("tidings_events_replayed_total").increment(replayed as u64);
                tracing::debug!(socket = %socket.id(), replayed, "session recovered");
                Some(socket)
            }
            Err(failure) => {
                metrics::counter!("tidings_recoveries_failed_total", "reason" => failure.label())
                    .increment(1);
                tracing::debug!(reason = %failure, "session not recovered");
                None
            }
        }
    }

    fn try_recover(
        &self,
        request: &ConnectRequest<'_>,
        claims: &Arc<VerifiedClaims>,
        pid: &str,
        offset: Option<&str>,
    ) -> Result<(Arc<Socket>, usize), Failure> {
        let pid = Sid::parse(pid).ok_or(Failure::UnknownSession)?;
        let super::Backend::Memory { sessions } = &self.backend else {
            return Err(Failure::UnknownSession);
        };
        // Ownership is checked before anything is taken or closed: another user's pid changes nothing.
        let owner = Owner {
            nsp: request.nsp,
            sub: claims.sub(),
        };
        let record = match sessions.take(&pid, &owner) {
            Err(TakeRefused::Unknown) => self.take_over(&pid, &owner),
            taken => taken,
        }
        .map_err(Failure::from)?;
        let after = match offset {
            Some(text) => text.parse::<u64>().map_err(|_| Failure::BadOffset)?,
            None => 0,
        };
        let rooms: Vec<Membership> = record
            .rooms
            .into_iter()
            .filter(|m| still_allowed(claims, &m.room))
            .collect();
        let history = self.hub.history();
        // Publishing is paused while the replay is queued and the rooms rejoined: the seam has no gap and
        // no duplicate.
        self.hub.with_order(|_| {
            let mut events = Vec::new();
            for membership in &rooms {
                let key = RoomKey::new(request.nsp, &membership.room);
                let from = after.max(membership.joined_seq);
                let (_, found) = history
                    .read_after(&key, Some(membership.epoch), from, self.max_replay + 1)
                    .map_err(Failure::History)?;
                events.extend(found);
                if events.len() > self.max_replay * 2 {
                    return Err(Failure::TooMany);
                }
            }
            events.sort_by_key(|e| e.seq);
            events.dedup_by_key(|e| e.seq);
            if events.len() > self.max_replay {
                return Err(Failure::TooMany);
            }
            let socket = Socket::new(
                request.session.clone(),
                request.nsp,
                Some(record.sid),
                Some(record.pid),
                Some(claims.clone()),
            );
            socket.send_connect_reply().map_err(|_| Failure::Closed)?;
            let outbox = &request.session.outbox;
            for event in &events {
                outbox
                    .push_event(event.seq, &event.packets)
                    .map_err(|_| Failure::Closed)?;
            }
            for membership in rooms {
                let key = RoomKey::new(request.nsp, &membership.room);
                self.hub.join(&key, socket.id(), socket.session());
                socket.rooms.lock().push(membership);
            }
            Ok((socket, events.len()))
        })
    }
}
