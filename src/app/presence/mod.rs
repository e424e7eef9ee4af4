//! Who is in a room: users (not connections — a user's second device makes no second entry), with their device
//! count and join time, listed in pages, counted, and optionally announced to the room's members.
//!
//! [`Presence`] is the capability, chosen once at start: [`LocalPresence`] keeps an embedded node's rooms in
//! memory. Announcements (`presence:join` / `presence:leave` `{room, user}`, for rooms whose policy sets
//! `presence_events`) are coalesced per room over [`FLUSH_EVERY`]: a user who leaves and comes back within it
//! is not announced at all, and a room announces at most [`MAX_CHANGES_PER_FLUSH`] users per flush — past that
//! its members get one `presence:reset` `{room, users}` and read the list again in pages. A reconnect storm in a
//! 10,000-member room therefore costs each member at most one event per changed user up to that bound, or one
//! event, per second.

mod local;

pub use local::LocalPresence;

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

/// Presence where it is not kept yet (cluster mode, until presence is shared over Redis): every read is
/// refused as unavailable rather than answered with this node's share only.
pub struct NoPresence;

impl Presence for NoPresence {
    fn joined(&self, _: &RoomKey, _: &str, _: bool) {}
    fn left(&self, _: &RoomKey, _: &str, _: bool) {}
    fn page<'a>(
        &'a self,
        _: &'a RoomKey,
        _: Option<&'a str>,
        _: usize,
    ) -> BoxFuture<'a, Result<PresencePage, Unavailable>> {
        Box::pin(std::future::ready(Err(not_kept())))
    }
    fn stats<'a>(&'a self, _: &'a RoomKey) -> BoxFuture<'a, Result<PresenceStats, Unavailable>> {
        Box::pin(std::future::ready(Err(not_kept())))
    }
}

fn not_kept() -> Unavailable {
    Unavailable("presence is not kept in cluster mode yet".into())
}
