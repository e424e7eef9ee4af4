//! Connection state recovery: what is kept of a disconnected socket so that its client, reconnecting with
//! the private id (`pid`) and last offset it got, resumes the same session and receives what it missed.
//!
//! [`SessionStore`] is the capability; [`MemorySessionStore`] keeps records in this process, and
//! [`crate::rooms_disk::DiskSessions`] keeps them on disk too.

mod memory;

use std::time::Instant;

pub use memory::MemorySessionStore;

use crate::engineio::session::Sid;
use crate::hub::RoomKey;

/// A socket's place in one room: which stream epoch it saw and the sequence current when it joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// The room, by its key in the session's namespace: a live socket's is the hub's own key of the room, so a
    /// membership takes no allocation of its own.
    pub key: RoomKey,
    /// Epoch of the room's history when joined.
    pub epoch: u64,
    /// Last sequence assigned when joined: events after it are the socket's.
    pub joined_seq: u64,
}

impl Membership {
    /// The room's name.
    pub fn room(&self) -> &str {
        self.key.room()
    }
}

/// What is needed to restore a socket.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    /// Private id the client presents.
    pub pid: Sid,
    /// Socket id, reused on recovery.
    pub sid: Sid,
    /// Namespace.
    pub nsp: Box<str>,
    /// User the session belongs to.
    pub sub: String,
    /// Rooms the socket was in.
    pub rooms: Vec<Membership>,
    /// After this instant the session cannot be recovered.
    pub expires_at: Instant,
}

/// Who asks to resume a session: it is handed over only to the same user on the same namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner<'a> {
    /// The namespace of the CONNECT.
    pub nsp: &'a str,
    /// The `sub` of the token presented.
    pub sub: &'a str,
}

impl Owner<'_> {
    /// True when `record` belongs to this owner.
    pub fn owns(&self, record: &SessionRecord) -> bool {
        &*record.nsp == self.nsp && record.sub == self.sub
    }
}

/// Why a session record was not handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TakeRefused {
    /// No such record (never existed, expired, or already taken).
    #[error("unknown or expired session")]
    Unknown,
    /// The record belongs to another namespace or user; it was left in place.
    #[error("session belongs to another namespace or user")]
    Mismatch,
}

/// Where disconnected sessions wait for their client.
pub trait SessionStore: Send + Sync + 'static {
    /// Keeps a disconnected socket's record until it expires.
    fn park(&self, record: SessionRecord);
    /// Removes and returns a record that has not expired, only if it belongs to `owner`: a record of another
    /// namespace or user is left in place (a caller presenting someone else's pid must not consume it).
    fn take(&self, pid: &Sid, owner: &Owner<'_>) -> Result<SessionRecord, TakeRefused>;
    /// Drops expired records.
    fn sweep(&self);
    /// Keeps the current state of a connected socket, so that its client can still resume it if this process
    /// dies without parking it (a no-op where records do not outlive the process).
    fn save_live(&self, _record: &SessionRecord) {}
    /// Forgets a session for good (a deliberate disconnect).
    fn forget(&self, _pid: &Sid) {}
    /// Records held.
    fn len(&self) -> usize;
    /// True when no record is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
