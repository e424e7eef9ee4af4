//! Presence of a cluster node: this node counts its own share ([`Counts`]) and one writer task sends what
//! changed to Redis ([`PresenceStore`]) in batches, as absolute numbers read when it writes — a user who joins
//! and leaves before the write costs nothing, and a failed write is simply written again. Pages and counts are
//! read from Redis (cluster-wide). A sweeper on every node removes the share of nodes whose registry entry
//! expired, so a dead node's users leave within [`super::EXPIRY_BOUND`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::counts::Counts;
use super::{
    PresencePage, PresenceStats, PresentUser, FLUSH_EVERY, MAX_CHANGES_PER_FLUSH, MAX_PAGE,
};
use crate::app::backend::Unavailable;
use crate::cluster::presence::{PresenceStore, Share};
use crate::cluster::registry::HEARTBEAT_INTERVAL;
use crate::hub::RoomKey;

/// Shares written with one script call at most.
const WRITE_BATCH: usize = 512;
/// Rooms flushed with one script call at most.
const FLUSH_BATCH: usize = 256;
/// First wait after a failed write; doubles up to [`HEARTBEAT_INTERVAL`].
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// Sweep calls per dead node and sweeper round at most (each removes 16 rooms): 16,384 rooms a round.
const SWEEPS_PER_ROUND: usize = 1024;

/// Presence kept cluster-wide in Redis.
pub struct SharedPresence {
    counts: Mutex<Counts>,
    /// (room, user) whose share changed since it was last written → whether the room announces.
    dirty: Mutex<HashMap<(RoomKey, String), bool>>,
    /// Rooms whose announcements this node flushes next.
    flush: Mutex<HashSet<RoomKey>>,
    wake: Arc<Notify>,
    store: PresenceStore,
}

impl SharedPresence {
    /// Presence over `store`; starts its writer, flusher and sweeper, which end with it (call from a Tokio
    /// runtime).
    pub fn start(store: PresenceStore) -> Arc<SharedPresence> {
        let presence = Arc::new(SharedPresence {
            counts: Mutex::new(Counts::default()),
            dirty: Mutex::new(HashMap::new()),
            flush: Mutex::new(HashSet::new()),
            wake: Arc::new(Notify::new()),
            store,
        });
        tokio::spawn(write_loop(Arc::downgrade(&presence)));
        tokio::spawn(flush_loop(Arc::downgrade(&presence)));
        tokio::spawn(sweep_loop(Arc::downgrade(&presence)));
        presence
    }

    fn changed(&self, room: &RoomKey, user: &str, announce: bool) {
        self.dirty
            .lock()
            .insert((room.clone(), user.to_owned()), announce);
        self.wake.notify_one();
    }

    /// Marks this node's whole share for writing (it is missing from Redis).
    fn rewrite_all(&self) {
        let entries = self.counts.lock().entries();
        let mut dirty = self.dirty.lock();
        for (room, user, announce) in entries {
            dirty.entry((room, user)).or_insert(announce);
        }
        drop(dirty);
        self.wake.notify_one();
    }

    /// Takes up to [`WRITE_BATCH`] dirty entries with their current numbers.
    fn take_batch(&self) -> Vec<Share> {
        let mut dirty = self.dirty.lock();
        let keys: Vec<(RoomKey, String)> = dirty.keys().take(WRITE_BATCH).cloned().collect();
        let counts = self.counts.lock();
        keys.into_iter()
            .filter_map(|key| {
                let announce = dirty.remove(&key)?;
                let devices = counts.devices(&key.0, &key.1);
                Some(Share {
                    room: key.0,
                    user: key.1,
                    devices,
                    announce,
                })
            })
            .collect()
    }

    /// Puts back a batch that could not be written (unless changed again since).
    fn put_back(&self, batch: Vec<Share>) {
        let mut dirty = self.dirty.lock();
        for share in batch {
            dirty
                .entry((share.room, share.user))
                .or_insert(share.announce);
        }
    }
}

impl super::Presence for SharedPresence {
    fn joined(&self, room: &RoomKey, user: &str, announce: bool) {
        self.counts.lock().join(room, user, announce);
        self.changed(room, user, announce);
    }

    fn left(&self, room: &RoomKey, user: &str, announce: bool) {
        if self.counts.lock().leave(room, user).is_some() {
            self.changed(room, user, announce);
        }
    }

    fn page<'a>(
        &'a self,
        room: &'a RoomKey,
        cursor: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<PresencePage, Unavailable>> {
        async move {
            let limit = limit.clamp(1, MAX_PAGE);
            let mut rows = self
                .store
                .page(room, cursor, limit)
                .await
                .map_err(unavailable)?;
            let more = rows.len() > limit;
            rows.truncate(limit);
            let users: Vec<PresentUser> = rows
                .into_iter()
                .map(|(user, devices, joined_at)| PresentUser {
                    user,
                    devices,
                    joined_at,
                })
                .collect();
            let cursor = more.then(|| users.last().map(|u| u.user.clone())).flatten();
            Ok(PresencePage { users, cursor })
        }
        .boxed()
    }

    fn stats<'a>(&'a self, room: &'a RoomKey) -> BoxFuture<'a, Result<PresenceStats, Unavailable>> {
        async move {
            let (users, connections) = self.store.stats(room).await.map_err(unavailable)?;
            Ok(PresenceStats { users, connections })
        }
        .boxed()
    }
}

fn unavailable(error: redis::RedisError) -> Unavailable {
    Unavailable(format!("presence store: {error}"))
}

/// Writes dirty shares as they come, a batch at a time, retrying failed ones.
async fn write_loop(presence: Weak<SharedPresence>) {
    let mut retry = FIRST_RETRY;
    loop {
        let Some(me) = presence.upgrade() else {
            return;
        };
        let batch = me.take_batch();
        if batch.is_empty() {
            let wake = me.wake.clone();
            drop(me);
            // Wake up now and then to notice the presence is gone.
            let _ = tokio::time::timeout(HEARTBEAT_INTERVAL, wake.notified()).await;
            continue;
        }
        match me.store.write(&batch).await {
            Ok(written) => {
                retry = FIRST_RETRY;
                metrics::counter!("tidings_presence_writes_total").increment(batch.len() as u64);
                me.flush.lock().extend(written.flush);
                if written.fresh {
                    me.rewrite_all();
                }
            }
            Err(error) => {
                tracing::debug!(%error, shares = batch.len(), "presence write failed; retrying");
                metrics::counter!("tidings_presence_write_failures_total").increment(1);
                me.put_back(batch);
                drop(me);
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(HEARTBEAT_INTERVAL);
            }
        }
    }
}

/// Sends the announcements of the rooms this node flushes, once a [`FLUSH_EVERY`].
async fn flush_loop(presence: Weak<SharedPresence>) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(me) = presence.upgrade() else {
            return;
        };
        let rooms: Vec<RoomKey> = me.flush.lock().drain().collect();
        for chunk in rooms.chunks(FLUSH_BATCH) {
            match me.store.flush(chunk, MAX_CHANGES_PER_FLUSH).await {
                Ok((events, resets)) => {
                    metrics::counter!("tidings_presence_events_total").increment(events);
                    metrics::counter!("tidings_presence_resets_total").increment(resets);
                }
                Err(error) => {
                    // The claims expire; the next change of each room claims it again.
                    tracing::debug!(%error, rooms = chunk.len(), "presence flush failed");
                }
            }
        }
    }
}

/// Every heartbeat: writes this node's whole share again if Redis does not list it, and sweeps the share of
/// nodes whose registry entry expired.
async fn sweep_loop(presence: Weak<SharedPresence>) {
    let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(me) = presence.upgrade() else {
            return;
        };
        if let Err(error) = sweep_round(&me).await {
            tracing::debug!(%error, "presence sweep failed");
        }
    }
}

async fn sweep_round(me: &SharedPresence) -> Result<(), redis::RedisError> {
    let has_share = !me.counts.lock().is_empty();
    if has_share && me.dirty.lock().is_empty() && !me.store.listed().await? {
        tracing::info!("this node's presence was missing from Redis; writing it again");
        metrics::counter!("tidings_presence_rewrites_total").increment(1);
        me.rewrite_all();
    }
    let others = me.store.other_nodes().await?;
    for dead in me.store.dead(&others).await? {
        let mut swept = 0;
        loop {
            let (more, flush) = me.store.sweep(&dead).await?;
            me.flush.lock().extend(flush);
            swept += 1;
            if !more || swept == SWEEPS_PER_ROUND {
                break;
            }
        }
        tracing::info!(node = %dead, "removed the presence of a node that is gone");
        metrics::counter!("tidings_presence_nodes_swept_total").increment(1);
    }
    Ok(())
}
