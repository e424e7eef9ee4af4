//! Where the application keeps what outlives a call, one capability per trait, each with an implementation for
//! the embedded node (memory, or the data directory behind the history and session stores) and one for a
//! cluster over Redis. [`Backend`] holds the three, chosen once at start; the application never asks which.
//!
//! - [`EventLog`]: sequencing and history — a publish gets its offset, is kept, and reaches the members; a
//!   recovering session reads what it missed.
//! - [`RoomFeed`]: whether this node hears a room's events (a cluster node subscribes before a socket joins).
//! - [`Sessions`]: recovery records of connected and disconnected sockets.

mod local;
mod partitioned;
mod redis;

use std::sync::Arc;

use futures_util::future::BoxFuture;

pub use local::{LocalFeed, LocalLog, LocalSessions};
pub use partitioned::{PartitionedFeed, PartitionedLog};
pub use redis::{RedisFeed, RedisLog, RedisSessions};

use super::{PublishError, Receipt};
use crate::cluster::partition::OffsetVector;
use crate::engineio::session::Sid;
use crate::history::{HistoryError, HistoryPage, ReadLimit};
use crate::hub::{Event, EventPackets, RoomKey};
use crate::recovery::{Membership, Owner, SessionRecord};

/// Why a store could not answer now (a Redis outage); the caller refuses the request rather than guess.
#[derive(Debug, Clone, thiserror::Error)]
#[error("store unavailable: {0}")]
pub struct Unavailable(pub String);

/// Why the events a session missed in one room cannot be read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MissedError {
    /// The store could not be read.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    /// The history cannot cover the gap.
    #[error("{0}")]
    History(#[from] HistoryError),
}

/// Why a session record was not handed over.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TakeError {
    /// No such record (never existed, expired, or already taken).
    #[error("unknown or expired session")]
    Unknown,
    /// The record belongs to another namespace or user; it was left in place.
    #[error("session belongs to another namespace or user")]
    Mismatch,
    /// The store could not be reached.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// Sequencing and history.
pub trait EventLog: Send + Sync + 'static {
    /// Publishes an event: numbered, kept in its rooms' history and handed to their members; resolves once it
    /// is durable where the configuration keeps history.
    fn publish<'a>(&'a self, event: &'a Event<'a>) -> BoxFuture<'a, Result<Receipt, PublishError>>;
    /// A page of a room's history after `since` (and in `epoch`, when given), within `limit`.
    fn page(
        &self,
        room: RoomKey,
        epoch: Option<u64>,
        since: u64,
        limit: ReadLimit,
    ) -> BoxFuture<'static, Result<HistoryPage, Unavailable>>;
    /// The epoch a socket joining `room` now records in its membership.
    fn epoch<'a>(&'a self, room: &'a RoomKey) -> BoxFuture<'a, Result<u64, Unavailable>>;
    /// The events of `room` after `after` (at most `max`, one more to tell a longer gap) for a recovering
    /// membership, oldest first; fails when the history no longer covers the gap or its epoch changed.
    fn missed<'a>(
        &'a self,
        room: &'a RoomKey,
        membership: &'a Membership,
        after: u64,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<(u64, EventPackets)>, MissedError>>;
    /// Hands an ephemeral event to the members of `room` on every node: no sequence, no history, no replay.
    /// Returns once it is on its way (queued for the members here, or for publishing to the other nodes in the
    /// order this node was given them); false when it was dropped (the node's publish queue is full).
    fn broadcast(&self, room: &RoomKey, event: Ephemeral<'_>) -> bool;
    /// Publishes `event` only if nobody took `claim` (a record id) before, taking it in the same step, kept
    /// `claim_ttl_ms` (in Redis, shared by the cluster; an embedded node remembers the last claims in memory);
    /// `None` when it was taken. A claim whose publish failed is free again.
    fn publish_once<'a>(
        &'a self,
        event: &'a Event<'a>,
        claim: &'a str,
        claim_ttl_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Receipt>, PublishError>>;
    /// [`EventLog::publish_once`] for several events in their order (each with its claim), in one step where
    /// the log can: one answer per event. On an error some of them may have been published; their claims
    /// then skip them when the batch is tried again.
    fn publish_batch_once<'a>(
        &'a self,
        events: &'a [(Event<'a>, &'a str)],
        claim_ttl_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<Option<Receipt>>, PublishError>> {
        Box::pin(async move {
            let mut answers = Vec::with_capacity(events.len());
            for (event, claim) in events {
                answers.push(self.publish_once(event, claim, claim_ttl_ms).await?);
            }
            Ok(answers)
        })
    }
    /// Takes `claim` for records published to ephemeral rooms only: false when it was taken before.
    fn claim<'a>(
        &'a self,
        claim: &'a str,
        claim_ttl_ms: u64,
    ) -> BoxFuture<'a, Result<bool, PublishError>>;
    /// How many partitions number the events (1: one sequence for the whole node or cluster).
    fn partitions(&self) -> usize {
        1
    }
    /// The partition whose sequence numbers `room`'s events.
    fn partition(&self, _room: &RoomKey) -> usize {
        0
    }
    /// Everything a recovering session missed in its `rooms` of `nsp` (their keys are in that namespace) after
    /// `offsets` (the client's offset read back), in replay order, each event once, with the offset it carries.
    /// Stops early and returns more than `max` events when there are more than that.
    fn replay<'a>(
        &'a self,
        _nsp: &'a str,
        rooms: &'a [Membership],
        offsets: Option<&'a OffsetVector>,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<(u64, EventPackets)>, MissedError>> {
        Box::pin(async move {
            let after = offsets.map_or(0, |o| o.get(0));
            let mut missed = Vec::new();
            for membership in rooms {
                let from = after.max(membership.joined_seq);
                let events = self.missed(&membership.key, membership, from, max).await?;
                if events.len() > max {
                    return Ok(events);
                }
                missed.extend(events);
            }
            missed.sort_by_key(|(seq, _)| *seq);
            missed.dedup_by_key(|(seq, _)| *seq);
            Ok(missed)
        })
    }
}

/// An ephemeral event for one room (see [`crate::hub::Hub::deliver_ephemeral`]).
pub struct Ephemeral<'a> {
    /// Event name.
    pub name: &'a str,
    /// Raw JSON data.
    pub data: &'a [u8],
    /// Binary attachments (the data then holds placeholders).
    pub attachments: &'a [bytes::Bytes],
    /// The room's conflation and this event's key, when the room conflates.
    pub conflate: Option<crate::hub::Conflate>,
}

impl Ephemeral<'_> {
    /// The event as the hub encodes it for `room`: no offset.
    pub fn as_event<'b>(&'b self, room: &'b RoomKey) -> Event<'b> {
        Event {
            nsp: room.nsp(),
            rooms: &[],
            name: self.name,
            data: self.data,
            attachments: self.attachments,
            with_offset: false,
        }
    }
}

/// Whether this node hears a room's events.
pub trait RoomFeed: Send + Sync + 'static {
    /// Makes sure the room's events reach this node before a socket joins it; one reference per membership.
    fn acquire<'a>(&'a self, room: &'a RoomKey) -> BoxFuture<'a, Result<(), Unavailable>>;
    /// Drops a reference taken by [`RoomFeed::acquire`] (a socket left the room).
    fn release(&self, room: &RoomKey);
    /// The last sequence a socket joining `room` now has seen (it is owed the events after it), given the hub's
    /// last sequence; called under the hub's ordering lock.
    fn joined_seq(&self, room: &RoomKey, hub_seq: u64) -> u64;
}

/// Recovery records. Writes are fire-and-forget: a lost write costs a recovery, never a connection.
pub trait Sessions: Send + Sync + 'static {
    /// The whole state of a connected socket (after its CONNECT or recovery); `version` orders a socket's writes.
    fn save(&self, record: SessionRecord, version: u64);
    /// A connected socket joined a room (`record` is its whole state, with the room).
    fn room_joined(&self, record: SessionRecord, membership: Membership, version: u64);
    /// A connected socket left a room (`record` is its whole state, without the room).
    fn room_left(&self, record: SessionRecord, room: &str, version: u64);
    /// A socket's transport was lost: keep its record for the recovery window.
    fn park(&self, record: SessionRecord, version: u64);
    /// A socket disconnected deliberately: its record is not wanted any more.
    fn forget(&self, pid: Sid);
    /// Removes and returns the record of `pid`, once, only for its owner.
    fn take<'a>(
        &'a self,
        pid: &'a Sid,
        owner: Owner<'a>,
    ) -> BoxFuture<'a, Result<SessionRecord, TakeError>>;
    /// Keeps the records of sockets still connected here alive (called every third of the recovery window).
    fn refresh(&self, pids: Vec<Sid>) -> BoxFuture<'static, ()>;
}

/// The three capabilities of a node, chosen once at start.
#[derive(Clone)]
pub struct Backend {
    /// Sequencing and history.
    pub log: Arc<dyn EventLog>,
    /// Room subscriptions.
    pub feed: Arc<dyn RoomFeed>,
    /// Recovery records.
    pub sessions: Arc<dyn Sessions>,
    /// Who is in which room.
    pub presence: Arc<dyn super::presence::Presence>,
}

impl Backend {
    /// The embedded node: events numbered by `hub` and kept in its history, records kept by `sessions`.
    pub fn local(
        hub: Arc<crate::hub::Hub>,
        sessions: Arc<dyn crate::recovery::SessionStore>,
    ) -> Backend {
        Backend {
            log: Arc::new(LocalLog::new(hub.clone())),
            presence: super::presence::LocalPresence::new(&hub),
            feed: Arc::new(LocalFeed::new(hub)),
            sessions: Arc::new(LocalSessions::new(sessions)),
        }
    }

    /// A cluster node `node` over `cluster`, whose parked records stay recoverable for `window`.
    pub fn redis(
        cluster: Arc<super::ClusterBackend>,
        window: std::time::Duration,
        node: &str,
    ) -> Backend {
        let presence = crate::cluster::presence::PresenceStore::new(
            cluster.redis.clone(),
            cluster.keys.clone(),
            node,
        );
        Backend {
            log: Arc::new(RedisLog::new(cluster.clone())),
            feed: Arc::new(RedisFeed::new(cluster.clone())),
            sessions: Arc::new(RedisSessions::new(cluster, window)),
            presence: super::presence::SharedPresence::start(presence),
        }
    }

    /// [`Backend::redis`] with the rooms' events spread over `parts` (partition `i` is `parts[i]`); records,
    /// presence and the rest stay on `cluster`.
    pub fn partitioned(
        cluster: Arc<super::ClusterBackend>,
        parts: Vec<Arc<super::ClusterBackend>>,
        window: std::time::Duration,
        node: &str,
    ) -> Backend {
        Backend {
            log: Arc::new(PartitionedLog::new(parts.clone())),
            feed: Arc::new(PartitionedFeed::new(parts)),
            ..Backend::redis(cluster, window, node)
        }
    }
}
