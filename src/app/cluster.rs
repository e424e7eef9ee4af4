//! The tidings rules when nodes form a cluster over Redis: joins wait for the node's room subscription,
//! publishes go through the Redis broker, session records live in Redis, and recovery replays from the room
//! streams — on whichever node the client comes back to.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;

use super::recover::{still_allowed, Failure};
use super::Tidings;
use crate::auth::{user_room, VerifiedClaims};
use crate::cluster::broker::Broker;
use crate::cluster::history::{read_after, trimmed_after};
use crate::cluster::keys::Keys;
use crate::cluster::sessions::{ClusterSessions, TakeError};
use crate::cluster::subscriber::{SubscribeError, Subscriber};
use crate::cluster::Redis;
use crate::engineio::session::Sid;
use crate::engineio::Session;
use crate::hub::{Hub, RoomKey, BROADCAST_ROOM};
use crate::recovery::{Membership, Owner, TakeRefused};
use crate::socketio::Socket;

/// Extra time a connected session's record outlives its recovery window, between two refreshes.
const LIVE_RECORD_SLACK: Duration = Duration::from_secs(60);

/// The Redis side of a cluster node.
pub struct ClusterBackend {
    /// Shared command connection.
    pub redis: Arc<Redis>,
    /// Key names.
    pub keys: Keys,
    /// Publishing.
    pub broker: Broker,
    /// This node's room subscriptions.
    pub subscriber: Arc<Subscriber>,
    /// Session records.
    pub sessions: ClusterSessions,
    epoch: parking_lot::Mutex<Option<u64>>,
}

impl ClusterBackend {
    /// Connects the cluster pieces (connections are made lazily and retried); `node` names this node.
    pub fn new(
        redis: Arc<Redis>,
        keys: Keys,
        hub: Arc<Hub>,
        node: &str,
        max_events: usize,
        stream_ttl: Duration,
    ) -> Arc<ClusterBackend> {
        Arc::new(ClusterBackend {
            broker: Broker::new(redis.clone(), keys.clone(), max_events, stream_ttl),
            subscriber: Subscriber::start(redis.clone(), keys.clone(), hub),
            sessions: ClusterSessions::new(redis.clone(), keys.clone(), node.to_owned()),
            redis,
            keys,
            epoch: parking_lot::Mutex::new(None),
        })
    }

    /// The dataset epoch: created once per Redis dataset; a different value means Redis lost its data.
    pub async fn epoch(&self) -> Result<u64, redis::RedisError> {
        if let Some(epoch) = *self.epoch.lock() {
            return Ok(epoch);
        }
        let fresh: u64 = rand::thread_rng().gen_range(1..u64::MAX >> 11);
        let mut set = redis::cmd("SET");
        set.arg(self.keys.epoch()).arg(fresh).arg("NX");
        self.redis.run::<Option<String>>(&set).await?;
        let stored: Option<String> = self
            .redis
            .run(redis::cmd("GET").arg(self.keys.epoch()))
            .await?;
        let epoch = stored.and_then(|s| s.parse().ok()).unwrap_or(fresh);
        *self.epoch.lock() = Some(epoch);
        Ok(epoch)
    }

    /// Forgets the cached epoch (after Redis lost its data).
    pub fn forget_epoch(&self) {
        self.epoch.lock().take();
    }
}

impl Tidings {
    fn cluster(&self) -> Option<&Arc<ClusterBackend>> {
        match &self.backend {
            super::Backend::Cluster(cluster) => Some(cluster),
            super::Backend::Memory { .. } => None,
        }
    }

    /// Subscribes the node to `rooms` (waiting until live), then joins the socket to them in one ordered step.
    pub(super) async fn join_cluster(
        &self,
        socket: &Arc<Socket>,
        rooms: &[String],
    ) -> Result<(), SubscribeError> {
        let Some(cluster) = self.cluster() else {
            return Ok(());
        };
        let epoch = cluster
            .epoch()
            .await
            .map_err(|_| SubscribeError::Unavailable)?;
        let keys: Vec<RoomKey> = rooms
            .iter()
            .map(|r| RoomKey::new(socket.nsp(), r))
            .collect();
        let mut acquired = Vec::new();
        for key in &keys {
            match cluster.subscriber.acquire(key).await {
                Ok(_) => acquired.push(key.clone()),
                Err(error) => {
                    for key in &acquired {
                        cluster.subscriber.release(key);
                    }
                    return Err(error);
                }
            }
        }
        self.hub.with_order(|_| {
            for (room, key) in rooms.iter().zip(&keys) {
                if self.hub.join(key, socket.id(), socket.session()) {
                    socket.rooms.lock().push(Membership {
                        room: room.as_str().into(),
                        epoch,
                        joined_seq: cluster.subscriber.last_seq(key),
                    });
                } else {
                    // Already a member: keep one subscription reference per membership.
                    cluster.subscriber.release(key);
                }
            }
        });
        Ok(())
    }

    /// Drops the node's subscription reference for a room the socket left.
    pub(super) fn release_room(&self, nsp: &str, room: &str) {
        if let Some(cluster) = self.cluster() {
            cluster.subscriber.release(&RoomKey::new(nsp, room));
        }
    }

    /// Saves the socket's current state so another node could resume it (cluster mode).
    pub(super) fn save_session(&self, socket: &Arc<Socket>) {
        let (Some(cluster), Some(record)) = (self.cluster(), self.record_of(socket)) else {
            return;
        };
        let cluster = cluster.clone();
        let ttl = self.max_disconnection + LIVE_RECORD_SLACK;
        let version = socket.next_record_version();
        tokio::spawn(async move {
            if let Err(error) = cluster.sessions.save(&record, version, ttl).await {
                tracing::warn!(%error, "saving session state to redis failed");
            }
        });
    }

    /// Records one room the socket joined in its Redis record (cluster mode): one field, not the whole record.
    pub(super) fn save_room_joined(&self, socket: &Arc<Socket>, room: &str) {
        let (Some(cluster), Some(pid)) = (self.cluster().cloned(), socket.pid()) else {
            return;
        };
        let Some(membership) = socket
            .rooms
            .lock()
            .iter()
            .find(|m| &*m.room == room)
            .cloned()
        else {
            return;
        };
        let app = self.arc();
        let socket = socket.clone();
        let version = socket.next_record_version();
        tokio::spawn(async move {
            match cluster.sessions.add_room(&pid, version, &membership).await {
                Ok(true) => {}
                // No record to add to (it expired meanwhile): write it whole, unless the socket is gone.
                Ok(false) if socket.is_connected() => {
                    if let Some(app) = app {
                        app.save_session(&socket);
                    }
                }
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "saving a joined room to redis failed"),
            }
        });
    }

    /// Removes one room the socket left from its Redis record (cluster mode).
    pub(super) fn save_room_left(&self, socket: &Arc<Socket>, room: &str) {
        let (Some(cluster), Some(pid)) = (self.cluster().cloned(), socket.pid()) else {
            return;
        };
        let room = room.to_owned();
        let version = socket.next_record_version();
        tokio::spawn(async move {
            if let Err(error) = cluster.sessions.remove_room(&pid, version, &room).await {
                tracing::warn!(%error, "removing a left room from redis failed");
            }
        });
    }

    /// Parks (transport lost) or forgets (deliberate disconnect) a session record in Redis.
    pub(super) fn park_cluster(
        &self,
        record: Option<crate::recovery::SessionRecord>,
        socket: &Socket,
    ) {
        let Some(cluster) = self.cluster().cloned() else {
            return;
        };
        let ttl = self.max_disconnection;
        let (pid, version) = (socket.pid(), socket.next_record_version());
        tokio::spawn(async move {
            let result = match (record, pid) {
                (Some(record), _) => cluster.sessions.save(&record, version, ttl).await,
                (None, Some(pid)) => cluster.sessions.remove(&pid).await,
                (None, None) => Ok(()),
            };
            if let Err(error) = result {
                tracing::warn!(%error, "updating session state in redis failed");
            }
        });
    }

    /// Keeps the records of connected sessions alive (every third of the recovery window).
    pub(super) fn spawn_record_refresh(self: &Arc<Self>) {
        let Some(cluster) = self.cluster().cloned() else {
            return;
        };
        let app = Arc::downgrade(self);
        let period = (self.max_disconnection / 3).max(Duration::from_secs(1));
        let ttl = self.max_disconnection + LIVE_RECORD_SLACK;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let Some(app) = app.upgrade() else {
                    return;
                };
                let pids: Vec<Sid> = app.live.lock().keys().copied().collect();
                drop(app);
                if let Err(error) = cluster.sessions.refresh(&pids, ttl).await {
                    tracing::warn!(%error, "refreshing session records failed");
                }
            }
        });
    }

    /// A CONNECT in cluster mode: recovery if asked and possible, else a fresh session; rooms are subscribed
    /// before the CONNECT reply so nothing published after it is missed.
    pub(super) async fn connect_cluster(
        self: Arc<Self>,
        session: Arc<Session>,
        nsp: String,
        claims: Arc<VerifiedClaims>,
        recovery: bool,
        resume: Option<(String, Option<String>)>,
        device: Option<String>,
    ) -> Result<Arc<Socket>, String> {
        if let (true, Some((pid, offset))) = (recovery, resume) {
            metrics::counter!("tidings_recoveries_attempted_total").increment(1);
            match self
                .recover_cluster(&session, &nsp, &claims, &pid, offset.as_deref())
                .await
            {
                Ok((socket, replayed)) => {
                    metrics::counter!("tidings_recoveries_succeeded_total").increment(1);
                    metrics::counter!("tidings_events_replayed_total").increment(replayed as u64);
                    self.track(&socket, device.as_deref());
                    self.save_session(&socket);
                    return Ok(socket);
                }
                Err(failure) => {
                    metrics::counter!("tidings_recoveries_failed_total", "reason" => failure.label()).increment(1);
                    tracing::debug!(reason = %failure, "session not recovered");
                }
            }
        }
        let pid = recovery.then(Sid::random);
        let socket = Socket::new(session, &nsp, None, pid, Some(claims.clone()));
        let mut rooms = vec![BROADCAST_ROOM.to_owned(), user_room(claims.sub())];
        rooms.extend(claims.auto_join().map(str::to_owned));
        // Hold live events until the CONNECT reply is queued: it must come first.
        socket.session().outbox.hold();
        let joined = self.join_cluster(&socket, &rooms).await;
        if let Err(error) = joined {
            socket.session().outbox.discard_held();
            return Err(error.to_string());
        }
        let replied = socket.send_connect_reply();
        let released = socket.session().outbox.release();
        if replied.is_err() || released.is_err() {
            self.leave_all(&socket);
            return Err("session closed".into());
        }
        self.track(&socket, device.as_deref());
        self.save_session(&socket);
        metrics::counter!("tidings_sockets_connected_total").increment(1);
        Ok(socket)
    }

    /// Leaves every room of a socket (and drops the node's subscription references).
    pub(super) fn leave_all(&self, socket: &Arc<Socket>) {
        let rooms = std::mem::take(&mut *socket.rooms.lock());
        for membership in rooms {
            self.hub
                .leave(&RoomKey::new(socket.nsp(), &membership.room), socket.id());
            self.release_room(socket.nsp(), &membership.room);
        }
    }

    async fn recover_cluster(
        &self,
        session: &Arc<Session>,
        nsp: &str,
        claims: &Arc<VerifiedClaims>,
        pid: &str,
        offset: Option<&str>,
    ) -> Result<(Arc<Socket>, usize), Failure> {
        let cluster = self.cluster().cloned().ok_or(Failure::UnknownSession)?;
        let pid = Sid::parse(pid).ok_or(Failure::UnknownSession)?;
        // Ownership is checked before anything is taken or closed: another user's pid changes nothing.
        let owner = Owner {
            nsp,
            sub: claims.sub(),
        };
        let record = match self.take_over(&pid, &owner) {
            Ok(record) => record,
            Err(TakeRefused::Mismatch) => return Err(Failure::Mismatch),
            Err(TakeRefused::Unknown) => cluster
                .sessions
                .take(&pid, nsp, claims.sub(), self.max_disconnection)
                .await
                .map_err(|error| match error {
                    TakeError::Unknown => Failure::UnknownSession,
                    TakeError::Mismatch => Failure::Mismatch,
                    TakeError::Redis(_) => Failure::Unavailable,
                })?,
        };
        let after = match offset {
            Some(text) => text.parse::<u64>().map_err(|_| Failure::BadOffset)?,
            None => 0,
        };
        let epoch = cluster.epoch().await.map_err(|_| Failure::Unavailable)?;
        if record.rooms.iter().any(|m| m.epoch != epoch) {
            return Err(Failure::History(crate::history::HistoryError::EpochChanged));
        }
        let rooms: Vec<Membership> = record
            .rooms
            .into_iter()
            .filter(|m| still_allowed(claims, &m.room))
            .collect();
        let socket = Socket::new(
            session.clone(),
            nsp,
            Some(record.sid),
            Some(pid),
            Some(claims.clone()),
        );
        // Live events that arrive while the replay is read wait behind it.
        session.outbox.hold();
        let names: Vec<String> = rooms.iter().map(|m| m.room.to_string()).collect();
        if self.join_cluster(&socket, &names).await.is_err() {
            session.outbox.discard_held();
            return Err(Failure::Unavailable);
        }
        // Keep the original join positions: they bound what the session is owed.
        {
            let mut joined = socket.rooms.lock();
            for membership in joined.iter_mut() {
                if let Some(original) = rooms.iter().find(|m| m.room == membership.room) {
                    membership.joined_seq = original.joined_seq;
                }
            }
        }
        match self.read_missed(&cluster, nsp, &rooms, after).await {
            Ok(events) => {
                let replied = socket.send_connect_reply();
                let mut pushed = replied.is_ok();
                for (seq, packets) in &events {
                    pushed &= session.outbox.push_event(*seq, packets).is_ok();
                }
                if !pushed || session.outbox.release().is_err() {
                    self.leave_all(&socket);
                    return Err(Failure::Closed);
                }
                Ok((socket, events.len()))
            }
            Err(failure) => {
                session.outbox.discard_held();
                self.leave_all(&socket);
                Err(failure)
            }
        }
    }

    /// Everything the session missed, from every room it was in, in sequence order.
    async fn read_missed(
        &self,
        cluster: &ClusterBackend,
        nsp: &str,
        rooms: &[Membership],
        after: u64,
    ) -> Result<Vec<(u64, Vec<crate::engineio::Outgoing>)>, Failure> {
        let mut missed = Vec::new();
        for membership in rooms {
            let key = RoomKey::new(nsp, &membership.room);
            let from = after.max(membership.joined_seq);
            let events = read_after(
                &cluster.redis,
                &cluster.keys,
                &key,
                from,
                self.max_replay + 1,
            )
            .await
            .map_err(|_| Failure::Unavailable)?;
            if events.len() > self.max_replay {
                return Err(Failure::TooMany);
            }
            if trimmed_after(&cluster.redis, &cluster.keys, &key, from)
                .await
                .map_err(|_| Failure::Unavailable)?
            {
                return Err(Failure::History(crate::history::HistoryError::Evicted));
            }
            missed.extend(events);
        }
        missed.sort_by_key(|e| e.seq);
        missed.dedup_by_key(|e| e.seq);
        if missed.len() > self.max_replay {
            return Err(Failure::TooMany);
        }
        Ok(missed
            .into_iter()
            .map(|e| (e.seq, e.event.packets(nsp, e.seq).to_vec()))
            .collect())
    }

    /// Publishes an ingest-channel message (`{room|rooms, event, data, namespace?, id?}`), once per
    /// cluster: the first node to claim its id (or content hash) publishes it.
    pub(super) async fn ingest(self: Arc<Self>, raw: Bytes) {
        let Some(cluster) = self.cluster().cloned() else {
            return;
        };
        // Checked before anything else: an oversize message is not even hashed for its claim.
        if raw.len() > self.publish_limits().max_ingest_bytes {
            let error = super::RequestError::TooLarge(self.publish_limits().max_ingest_bytes);
            refuse_ingest(error.code(), &error);
            return;
        }
        let id = ingest_id(&raw);
        let mut claim = redis::cmd("SET");
        claim
            .arg(cluster.keys.ingest_seen(&id))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(60_000);
        match cluster.redis.run::<Option<String>>(&claim).await {
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, "ingest claim failed; message dropped");
                return;
            }
        }
        if let Err(error) = self.publish_json(&raw).await {
            refuse_ingest(error.label(), &error);
        }
    }
}

/// Counts and logs an ingest message that was not published, with why.
fn refuse_ingest(reason: &'static str, error: &dyn std::fmt::Display) {
    metrics::counter!("tidings_ingest_rejected_total", "reason" => reason).increment(1);
    tracing::warn!(reason, %error, "ingest message rejected");
}

/// The id of an ingest message: its `id` field, else a hash of its bytes.
fn ingest_id(raw: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct WithId {
        id: Option<String>,
    }
    if let Some(id) = serde_json::from_slice::<WithId>(raw)
        .ok()
        .and_then(|w| w.id)
    {
        return format!("id:{id}");
    }
    use sha1::Digest;
    let digest = sha1::Sha1::digest(raw);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
