//! Who is in a room: users (not connections — a user's second device makes no second entry), with their device
//! count and join time, listed in pages, counted, and optionally announced to the room's members.
//!
//! [`Presence`] is the capability, chosen once at start: [`LocalPresence`] keeps an embedded node's rooms in
//! memory; [`SharedPresence`] keeps a cluster's in Redis (each node writes its own share; the share of a node
//! that dies is removed by the others within [`EXPIRY_BOUND`]). Announcements (`presence:join` / `presence:leave` `{room, user}`, for rooms whose policy sets
//! `presence_events`) are coalesced per room over [`FLUSH_EVERY`]: a user who leaves and comes back within it
//! is not announced at all, and a room announces at most [`MAX_CHANGES_PER_FLUSH`] users per flush — past that
//! its members get one `presence:reset` `{room, changed}` and read the list again in pages. A reconnect storm in a
//! 10,000-member room therefore costs each member at most one event per changed user up to that bound, or one
//! event, per second. In a cluster the changes are coalesced per room in Redis and flushed by one node, so the
//! bound holds cluster-wide.

mod counts;
mod local;
mod shared;

pub use local::LocalPresence;
pub use shared::SharedPresence;

use futures_util::future::BoxFuture;
use serde::Serialize;

use super::backend::Unavailable;
use crate::hub::RoomKey;

/// A user's first connection joined a room: `{room, user}`.
pub const JOIN_EVENT: &str = "presence:join";
/// A user's last connection left a room: `{room, user}`.
pub const LEAVE_EVENT: &str = "presence:leave";
/// Too many users changed at once to name them: `{room, changed}`; read the list again.
pub const RESET_EVENT: &str = "presence:reset";

/// How often pending announcements of a room go out.
pub const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Users announced per room and flush at most; more changes become one `presence:reset`.
pub const MAX_CHANGES_PER_FLUSH: usize = 100;

/// How long a dead cluster node's users stay present at most: its registry entry expires
/// ([`crate::cluster::registry::ENTRY_TTL`]), then the next sweep of a live node (every heartbeat) removes them.
pub const EXPIRY_BOUND: std::time::Duration = std::time::Duration::from_millis(
    crate::cluster::registry::ENTRY_TTL.as_millis() as u64
        + crate::cluster::registry::HEARTBEAT_INTERVAL.as_millis() as u64,
);

/// Users in one page at most.
pub const MAX_PAGE: usize = 1000;

/// One user present in a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PresentUser {
    /// The user (`sub` of their token).
    pub user: String,
    /// Their connections in the room.
    pub devices: usize,
    /// When their first connection joined, ms since the Unix epoch.
    pub joined_at: u64,
}

/// A page of a room's users, by user id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PresencePage {
    /// The users after the cursor, at most the limit.
    pub users: Vec<PresentUser>,
    /// Where the next page starts (the last user of this one), when there are more.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// A room's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PresenceStats {
    /// Users present.
    pub users: usize,
    /// Their connections.
    pub connections: usize,
}

/// Who is in which room.
pub trait Presence: Send + Sync + 'static {
    /// A connection of `user` joined `room`; `announce` when the room's policy wants `presence:join`.
    fn joined(&self, room: &RoomKey, user: &str, announce: bool);
    /// A connection of `user` left `room` (or disconnected).
    fn left(&self, room: &RoomKey, user: &str, announce: bool);
    /// The users of `room` after `cursor` (a user id), by id, at most `limit` (≤ [`MAX_PAGE`]).
    fn page<'a>(
        &'a self,
        room: &'a RoomKey,
        cursor: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<PresencePage, Unavailable>>;
    /// The counts of `room`.
    fn stats<'a>(&'a self, room: &'a RoomKey) -> BoxFuture<'a, Result<PresenceStats, Unavailable>>;
}
