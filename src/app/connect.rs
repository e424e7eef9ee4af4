//! Sockets joining rooms and sessions coming and going, the same way over every backend: rooms are fed to the
//! node before a socket joins them, a CONNECT resumes a recorded session (replaying what its client missed,
//! before any live event) or starts a fresh one, and every change of a socket's rooms goes to its record.

use std::sync::Arc;
use std::time::Duration;

use super::backend::{MissedError, TakeError, Unavailable};
use super::recover::{still_allowed, Failure};
use super::Tidings;
use crate::auth::{user_room, VerifiedClaims};
use crate::cluster::partition::{pack, OffsetVector};
use crate::engineio::session::Sid;
use crate::engineio::Session;
use crate::hub::{EventPackets, RoomKey, BROADCAST_ROOM};
use crate::recovery::{Membership, Owner, TakeRefused};
use crate::socketio::Socket;

impl Tidings {
    /// Joins the socket to `rooms`: each room's feed first (a cluster node subscribes and waits until it is
    /// live), then every membership in one step under the hub's ordering lock, so the socket is owed exactly
    /// the events after its join.
    pub(super) async fn join_rooms(
        &self,
        socket: &Arc<Socket>,
        rooms: &[String],
    ) -> Result<(), Unavailable> {
        let keys: Vec<RoomKey> = rooms
            .iter()
            .map(|r| RoomKey::new(socket.nsp(), r))
            .collect();
        let mut epochs = Vec::with_capacity(keys.len());
        for key in &keys {
            epochs.push(self.backend.log.epoch(key).await?);
        }
        let feed = &self.backend.feed;
        for (taken, key) in keys.iter().enumerate() {
            if let Err(error) = feed.acquire(key).await {
                for key in &keys[..taken] {
                    feed.release(key);
                }
                return Err(error);
            }
        }
        self.hub.with_order(|seq| {
            for (key, epoch) in keys.iter().zip(epochs) {
                if let Some(key) = self.hub.join(key, socket.id(), socket.session()) {
                    metrics::counter!("tidings_room_joins_total", "namespace" => socket.nsp().to_owned())
                        .increment(1);
                    self.presence_joined(socket, &key);
                    let mut memberships = socket.rooms.lock();
                    if memberships.len() < 4 {
                        // Most sockets are in a room or two: grow the list one at a time up to four
                        // (the first push would otherwise make room for four, 128 bytes per socket).
                        memberships.reserve_exact(1);
                    }
                    let joined_seq = feed.joined_seq(&key, seq);
                    memberships.push(Membership {
                        key,
                        epoch,
                        joined_seq,
                    });
                } else {
                    // Already a member: keep one feed reference per membership.
                    feed.release(key);
                }
            }
        });
        Ok(())
    }

    /// Leaves every room of a socket (and drops its feed references).
    pub(super) fn leave_all(&self, socket: &Arc<Socket>) {
        let rooms = std::mem::take(&mut *socket.rooms.lock());
        for membership in rooms {
            let key = &membership.key;
            if self.hub.leave(key, socket.id()) {
                self.presence_left(socket, membership.room());
            }
            self.backend.feed.release(key);
        }
    }

    /// Writes the socket's whole state to its record.
    pub(super) fn save_session(&self, socket: &Arc<Socket>) {
        if let Some(record) = self.record_of(socket) {
            let version = socket.next_record_version();
            self.backend.sessions.save(record, version);
        }
    }

    /// Records one room the socket joined.
    pub(super) fn save_room_joined(&self, socket: &Arc<Socket>, room: &str) {
        let Some(record) = self.record_of(socket) else {
            return;
        };
        let Some(membership) = record.rooms.iter().find(|m| m.room() == room).cloned() else {
            return;
        };
        let version = socket.next_record_version();
        self.backend
            .sessions
            .room_joined(record, membership, version);
    }

    /// Records one room the socket left.
    pub(super) fn save_room_left(&self, socket: &Arc<Socket>, room: &str) {
        if let Some(record) = self.record_of(socket) {
            let version = socket.next_record_version();
            self.backend.sessions.room_left(record, room, version);
        }
    }

    /// Keeps the records of connected sessions alive (every third of the recovery window).
    pub(super) fn spawn_record_refresh(self: &Arc<Self>) {
        let app = Arc::downgrade(self);
        let period = (self.max_disconnection / 3).max(Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let Some(app) = app.upgrade() else {
                    return;
                };
                let pids: Vec<Sid> = app.live.lock().keys().copied().collect();
                let refresh = app.backend.sessions.refresh(pids);
                drop(app);
                refresh.await;
            }
        });
    }

    /// A CONNECT: recovery if asked and possible, else a fresh session; rooms are joined before the CONNECT
    /// reply so nothing published after it is missed.
    pub(super) async fn connect_socket(
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
                .recover(&session, &nsp, &claims, &pid, offset.as_deref())
                .await
            {
                Ok((socket, replayed)) => {
                    metrics::counter!("tidings_recoveries_succeeded_total").increment(1);
                    metrics::counter!("tidings_events_replayed_total").increment(replayed as u64);
                    tracing::debug!(socket = %socket.id(), replayed, "session recovered");
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
        if let Err(error) = self.join_rooms(&socket, &rooms).await {
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

    /// Restores the session `pid` with the events its client missed after `offset`.
    async fn recover(
        &self,
        session: &Arc<Session>,
        nsp: &str,
        claims: &Arc<VerifiedClaims>,
        pid: &str,
        offset: Option<&str>,
    ) -> Result<(Arc<Socket>, usize), Failure> {
        let pid = Sid::parse(pid).ok_or(Failure::UnknownSession)?;
        // Ownership is checked before anything is taken or closed: another user's pid changes nothing. A
        // session still connected here (its client came back before the old connection was known dead) is
        // taken over first; its stored record is only a copy of it.
        let owner = Owner {
            nsp,
            sub: claims.sub(),
        };
        let record = match self.take_over(&pid, &owner) {
            Ok(record) => record,
            Err(TakeRefused::Mismatch) => return Err(Failure::Mismatch),
            Err(TakeRefused::Unknown) => {
                self.backend
                    .sessions
                    .take(&pid, owner)
                    .await
                    .map_err(|error| match error {
                        TakeError::Unknown => Failure::UnknownSession,
                        TakeError::Mismatch => Failure::Mismatch,
                        TakeError::Unavailable(_) => Failure::Unavailable,
                    })?
            }
        };
        // Taken: from here on a failure puts it back, so the client's next attempt can still resume it (a
        // connect whose answer never reached the client must not use the session up).
        let backup = record.clone();
        let resumed = self.resume(session, nsp, claims, pid, offset, record).await;
        if let Err(failure) = &resumed {
            if !matches!(failure, Failure::Mismatch) {
                tracing::debug!(%failure, "recovery failed after the session was taken; parked again");
                self.backend.sessions.park(backup, 1);
            }
        }
        resumed
    }

    /// Resumes a taken session record on `session`: its rooms joined again, what it missed replayed after
    /// the CONNECT reply.
    async fn resume(
        &self,
        session: &Arc<Session>,
        nsp: &str,
        claims: &Arc<VerifiedClaims>,
        pid: Sid,
        offset: Option<&str>,
        record: crate::recovery::SessionRecord,
    ) -> Result<(Arc<Socket>, usize), Failure> {
        let log = &self.backend.log;
        let offsets = match offset {
            Some(text) => {
                Some(OffsetVector::parse(text, log.partitions()).map_err(|_| Failure::BadOffset)?)
            }
            None => None,
        };
        let rooms: Vec<Membership> = record
            .rooms
            .into_iter()
            .filter(|m| still_allowed(claims, m.room()))
            .collect();
        let socket = Socket::new(
            session.clone(),
            nsp,
            Some(record.sid),
            Some(pid),
            Some(claims.clone()),
        );
        // Live events that arrive while the replay is read wait behind it; those the replay also holds are
        // dropped by the outbox's sequence check.
        session.outbox.hold();
        // The client has every event up to its offset: a live one at or before it is not queued again (this
        // node may be behind the one the client left).
        if let Some(offsets) = &offsets {
            for (partition, seq) in offsets.positions().iter().enumerate() {
                session.outbox.advance_seq(pack(partition, *seq));
            }
        }
        let names: Vec<String> = rooms.iter().map(|m| m.room().to_owned()).collect();
        if self.join_rooms(&socket, &names).await.is_err() {
            session.outbox.discard_held();
            return Err(Failure::Unavailable);
        }
        // Keep the original join positions: they bound what the session is owed.
        {
            let mut joined = socket.rooms.lock();
            for membership in joined.iter_mut() {
                if let Some(original) = rooms.iter().find(|m| m.room() == membership.room()) {
                    membership.joined_seq = original.joined_seq;
                }
            }
        }
        match self.read_missed(nsp, &rooms, offsets.as_ref()).await {
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

    /// Everything the session missed, from every room it was in, in replay order.
    async fn read_missed(
        &self,
        nsp: &str,
        rooms: &[Membership],
        offsets: Option<&OffsetVector>,
    ) -> Result<Vec<(u64, EventPackets)>, Failure> {
        let missed = self
            .backend
            .log
            .replay(nsp, rooms, offsets, self.max_replay)
            .await
            .map_err(|error| match error {
                MissedError::Unavailable(_) => Failure::Unavailable,
                MissedError::History(error) => Failure::History(error),
            })?;
        if missed.len() > self.max_replay {
            return Err(Failure::TooMany);
        }
        Ok(missed)
    }
}
