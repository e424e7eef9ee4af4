//! Why a session was not recovered on CONNECT (the client then starts a fresh session), and which of its rooms
//! a recovered session keeps.

use crate::auth::{user_room, VerifiedClaims};
use crate::history::HistoryError;
use crate::hub::BROADCAST_ROOM;
use crate::recovery::TakeRefused;

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

/// True when the token still lets the socket be in `room` (a recovered session leaves the others).
pub(super) fn still_allowed(claims: &VerifiedClaims, room: &str) -> bool {
    room == BROADCAST_ROOM
        || room == user_room(claims.sub())
        || claims.may_join(room)
        || claims.auto_join().any(|r| r == room)
}
