//! A cluster node's capabilities over Redis: events are numbered and kept in Redis streams by one script and
//! reach the nodes subscribed to their rooms; records live in Redis so any node can resume a session.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};

use super::{EventLog, MissedError, RoomFeed, Sessions, TakeError, Unavailable};
use crate::app::{ClusterBackend, PublishError, Receipt};
use crate::cluster::history::{read_after, read_page, trimmed_after, StreamEvent};
use crate::cluster::sessions::TakeError as RedisTakeError;
use crate::engineio::session::Sid;
use crate::history::{HistoryError, HistoryPage, ReadLimit};
use crate::hub::{Event, EventPackets, RoomKey};
use crate::recovery::{Membership, Owner, SessionRecord};

fn unavailable(error: impl std::fmt::Display) -> Unavailable {
    Unavailable(error.to_string())
}

/// Sequencing and history in Redis.
pub struct RedisLog {
    cluster: Arc<ClusterBackend>,
}

impl RedisLog {
    /// Events numbered and kept by `cluster`.
    pub fn new(cluster: Arc<ClusterBackend>) -> RedisLog {
        RedisLog { cluster }
    }
}

impl RedisLog {
    /// The stream events of `room` after `after` (at most `max`, one more to tell a longer gap) for a
    /// recovering membership, oldest first; fails when the history no longer covers the gap or Redis lost its
    /// data since the socket joined.
    pub async fn missed_events(
        &self,
        room: &RoomKey,
        membership: &Membership,
        after: u64,
        max: usize,
    ) -> Result<Vec<StreamEvent>, MissedError> {
        let cluster = &self.cluster;
        let epoch = cluster.epoch().await.map_err(unavailable)?;
        if membership.epoch != epoch {
            return Err(HistoryError::EpochChanged.into());
        }
        let events = read_after(&cluster.redis, &cluster.keys, room, after, max + 1)
            .await
            .map_err(unavailable)?;
        if events.len() <= max
            && trimmed_after(&cluster.redis, &cluster.keys, room, after)
                .await
                .map_err(unavailable)?
        {
            return Err(HistoryError::Evicted.into());
        }
        Ok(events)
    }

    /// The cluster (one Redis, or one partition) this log publishes through.
    pub fn cluster(&self) -> &Arc<ClusterBackend> {
        &self.cluster
    }
}

impl EventLog for RedisLog {
    fn publish<'a>(&'a self, event: &'a Event<'a>) -> BoxFuture<'a, Result<Receipt, PublishError>> {
        async move {
            let published = self
                .cluster
                .broker
                .publish(event)
                .await
                .map_err(|e| PublishError::Unavailable(e.to_string()))?;
            Ok(Receipt {
                seq: published.seq,
                recipients: published.receivers,
            })
        }
        .boxed()
    }

    fn page(
        &self,
        room: RoomKey,
        _epoch: Option<u64>,
        since: u64,
        limit: ReadLimit,
    ) -> BoxFuture<'static, Result<HistoryPage, Unavailable>> {
        let cluster = self.cluster.clone();
        async move {
            read_page(&cluster.redis, &cluster.keys, &room, since, limit)
                .await
                .map_err(unavailable)
        }
        .boxed()
    }

    fn epoch<'a>(&'a self, _room: &'a RoomKey) -> BoxFuture<'a, Result<u64, Unavailable>> {
        async move { self.cluster.epoch().await.map_err(unavailable) }.boxed()
    }

    fn missed<'a>(
        &'a self,
        room: &'a RoomKey,
        membership: &'a Membership,
        after: u64,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<(u64, EventPackets)>, MissedError>> {
        async move {
            let events = self.missed_events(room, membership, after, max).await?;
            Ok(events
                .into_iter()
                .map(|e| (e.seq, e.event.packets(room.nsp(), e.seq)))
                .collect())
        }
        .boxed()
    }

    fn broadcast(&self, room: &RoomKey, event: super::Ephemeral<'_>) -> bool {
        let wire = crate::cluster::broker::WireEvent::from_event(&event.as_event(room));
        let Ok(wire) = wire else {
            return false;
        };
        let (interval_ms, key) = match event.conflate {
            Some(conflate) => (Some(conflate.interval_ms), Some(conflate.key)),
            None => (None, None),
        };
        self.cluster.ephemeral.publish(
            self.cluster.keys.channel(room),
            &crate::cluster::ephemeral::WireEphemeral {
                event: wire,
                interval_ms,
                key,
            },
        )
    }

    fn publish_once<'a>(
        &'a self,
        event: &'a Event<'a>,
        claim: &'a str,
        claim_ttl_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Receipt>, PublishError>> {
        async move {
            let claim = self.cluster.keys.ingest_seen(claim);
            let published = self
                .cluster
                .broker
                .publish_once(event, &claim, claim_ttl_ms)
                .await
                .map_err(|e| PublishError::Unavailable(e.to_string()))?;
            Ok(published.map(|p| Receipt {
                seq: p.seq,
                recipients: p.receivers,
            }))
        }
        .boxed()
    }

    fn publish_batch_once<'a>(
        &'a self,
        events: &'a [(Event<'a>, &'a str)],
        claim_ttl_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<Option<Receipt>>, PublishError>> {
        async move {
            let claims: Vec<String> = events
                .iter()
                .map(|(_, claim)| self.cluster.keys.ingest_seen(claim))
                .collect();
            let batch: Vec<(&Event<'_>, Option<&str>)> = events
                .iter()
                .zip(&claims)
                .map(|((event, _), claim)| (event, Some(claim.as_str())))
                .collect();
            let published = self
                .cluster
                .broker
                .publish_batch(&batch, claim_ttl_ms)
                .await
                .map_err(|e| PublishError::Unavailable(e.to_string()))?;
            Ok(published
                .into_iter()
                .map(|p| {
                    p.map(|p| Receipt {
                        seq: p.seq,
                        recipients: p.receivers,
                    })
                })
                .collect())
        }
        .boxed()
    }

    fn claim<'a>(
        &'a self,
        claim: &'a str,
        claim_ttl_ms: u64,
    ) -> BoxFuture<'a, Result<bool, PublishError>> {
        async move {
            let mut set = redis::cmd("SET");
            set.arg(self.cluster.keys.ingest_seen(claim))
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(claim_ttl_ms);
            let taken: Option<String> = self
                .cluster
                .redis
                .run(&set)
                .await
                .map_err(|e| PublishError::Unavailable(e.to_string()))?;
            Ok(taken.is_some())
        }
        .boxed()
    }
}

/// Room subscriptions of this node on the cluster's channels.
pub struct RedisFeed {
    cluster: Arc<ClusterBackend>,
}

impl RedisFeed {
    /// Subscriptions through `cluster`'s subscriber.
    pub fn new(cluster: Arc<ClusterBackend>) -> RedisFeed {
        RedisFeed { cluster }
    }
}

impl RoomFeed for RedisFeed {
    fn acquire<'a>(&'a self, room: &'a RoomKey) -> BoxFuture<'a, Result<(), Unavailable>> {
        async move {
            self.cluster
                .subscriber
                .acquire(room)
                .await
                .map(drop)
                .map_err(unavailable)
        }
        .boxed()
    }

    fn release(&self, room: &RoomKey) {
        self.cluster.subscriber.release(room);
    }

    fn joined_seq(&self, room: &RoomKey, _hub_seq: u64) -> u64 {
        self.cluster.subscriber.last_seq(room)
    }
}

/// Extra time a connected session's record outlives its recovery window, between two refreshes.
const LIVE_RECORD_SLACK: Duration = Duration::from_secs(60);

/// Recovery records in Redis, written by this node.
pub struct RedisSessions {
    cluster: Arc<ClusterBackend>,
    /// How long a parked record stays recoverable.
    window: Duration,
}

impl RedisSessions {
    /// Records kept through `cluster`, recoverable for `window` after a disconnection.
    pub fn new(cluster: Arc<ClusterBackend>, window: Duration) -> RedisSessions {
        RedisSessions { cluster, window }
    }

    fn live_ttl(&self) -> Duration {
        self.window + LIVE_RECORD_SLACK
    }

    /// Writes `record` whole with `ttl`, in the background.
    fn spawn_save(&self, record: SessionRecord, version: u64, ttl: Duration) {
        let cluster = self.cluster.clone();
        tokio::spawn(async move {
            if let Err(error) = cluster.sessions.save(&record, version, ttl).await {
                tracing::warn!(%error, "saving session state to redis failed");
            }
        });
    }
}

impl Sessions for RedisSessions {
    fn save(&self, record: SessionRecord, version: u64) {
        self.spawn_save(record, version, self.live_ttl());
    }

    fn room_joined(&self, record: SessionRecord, membership: Membership, version: u64) {
        let cluster = self.cluster.clone();
        let ttl = self.live_ttl();
        tokio::spawn(async move {
            // One field, not the whole record; the whole record only when there is none to add to (it expired).
            match cluster
                .sessions
                .add_room(&record.pid, version, &membership)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    if let Err(error) = cluster.sessions.save(&record, version, ttl).await {
                        tracing::warn!(%error, "saving session state to redis failed");
                    }
                }
                Err(error) => tracing::warn!(%error, "saving a joined room to redis failed"),
            }
        });
    }

    fn room_left(&self, record: SessionRecord, room: &str, version: u64) {
        let cluster = self.cluster.clone();
        let room = room.to_owned();
        tokio::spawn(async move {
            if let Err(error) = cluster
                .sessions
                .remove_room(&record.pid, version, &room)
                .await
            {
                tracing::warn!(%error, "removing a left room from redis failed");
            }
        });
    }

    fn park(&self, record: SessionRecord, version: u64) {
        self.spawn_save(record, version, self.window);
    }

    fn forget(&self, pid: Sid) {
        let cluster = self.cluster.clone();
        tokio::spawn(async move {
            if let Err(error) = cluster.sessions.remove(&pid).await {
                tracing::warn!(%error, "removing a session record from redis failed");
            }
        });
    }

    fn take<'a>(
        &'a self,
        pid: &'a Sid,
        owner: Owner<'a>,
    ) -> BoxFuture<'a, Result<SessionRecord, TakeError>> {
        async move {
            self.cluster
                .sessions
                .take(pid, owner.nsp, owner.sub, self.window)
                .await
                .map_err(|error| match error {
                    RedisTakeError::Unknown => TakeError::Unknown,
                    RedisTakeError::Mismatch => TakeError::Mismatch,
                    RedisTakeError::Redis(error) => TakeError::Unavailable(unavailable(error)),
                })
        }
        .boxed()
    }

    fn refresh(&self, pids: Vec<Sid>) -> BoxFuture<'static, ()> {
        let cluster = self.cluster.clone();
        let ttl = self.live_ttl();
        async move {
            if let Err(error) = cluster.sessions.refresh(&pids, ttl).await {
                tracing::warn!(%error, "refreshing session records failed");
            }
        }
        .boxed()
    }
}
