//! The embedded node's capabilities: events are numbered and fanned out by the hub in this process and kept by
//! its [`HistoryStore`] (memory, or the data directory); records are kept by a [`SessionStore`]; ingest claims
//! are remembered in memory.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use futures_util::future::{ready, BoxFuture, FutureExt};
use parking_lot::Mutex;

use super::{EventLog, MissedError, RoomFeed, Sessions, TakeError, Unavailable};
use crate::app::{PublishError, Receipt};
use crate::engineio::session::Sid;
use crate::history::{read_page, HistoryPage, ReadLimit};
use crate::hub::{Event, EventPackets, Hub, RoomKey};
use crate::recovery::{Membership, Owner, SessionRecord, SessionStore, TakeRefused};

/// Claims (ingested record ids) an embedded node remembers; the oldest are forgotten first. A crash loses them
/// with the node's memory.
pub const LOCAL_CLAIMS: usize = 1_000_000;

/// Sequencing and history in this process.
pub struct LocalLog {
    hub: Arc<Hub>,
    /// The last [`LOCAL_CLAIMS`] claims taken, as a set and in the order they were taken.
    claims: Mutex<(HashSet<String>, VecDeque<String>)>,
}

impl LocalLog {
    /// Events numbered by `hub` and kept in its history.
    pub fn new(hub: Arc<Hub>) -> LocalLog {
        LocalLog {
            hub,
            claims: Mutex::default(),
        }
    }

    /// Takes `claim`: true when nobody had.
    fn take(&self, claim: &str) -> bool {
        let mut claims = self.claims.lock();
        let fresh = claims.0.insert(claim.to_owned());
        if fresh {
            claims.1.push_back(claim.to_owned());
            if claims.1.len() > LOCAL_CLAIMS {
                if let Some(oldest) = claims.1.pop_front() {
                    claims.0.remove(&oldest);
                }
            }
        }
        fresh
    }

    /// Gives `claim` back (its publish failed and will be tried again).
    fn give_back(&self, claim: &str) {
        let mut claims = self.claims.lock();
        if claims.0.remove(claim) {
            claims.1.retain(|kept| kept != claim);
        }
    }
}

impl EventLog for LocalLog {
    fn publish<'a>(&'a self, event: &'a Event<'a>) -> BoxFuture<'a, Result<Receipt, PublishError>> {
        let published = self.hub.publish(event);
        let durable = self.hub.history().durable(published.seq);
        async move {
            durable
                .await
                .map_err(|error| PublishError::Unavailable(error.to_string()))?;
            Ok(Receipt {
                seq: published.seq,
                recipients: published.recipients as u64,
            })
        }
        .boxed()
    }

    fn page(
        &self,
        room: RoomKey,
        epoch: Option<u64>,
        since: u64,
        limit: ReadLimit,
    ) -> BoxFuture<'static, Result<HistoryPage, Unavailable>> {
        let page = read_page(self.hub.history().as_ref(), &room, epoch, since, limit);
        ready(Ok(page)).boxed()
    }

    fn epoch<'a>(&'a self, room: &'a RoomKey) -> BoxFuture<'a, Result<u64, Unavailable>> {
        ready(Ok(self.hub.history().epoch(room))).boxed()
    }

    fn missed<'a>(
        &'a self,
        room: &'a RoomKey,
        membership: &'a Membership,
        after: u64,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<(u64, EventPackets)>, MissedError>> {
        let read = self
            .hub
            .history()
            .read_missed(room, membership, after, max + 1)
            .map(|events| events.into_iter().map(|e| (e.seq, e.packets)).collect())
            .map_err(MissedError::History);
        ready(read).boxed()
    }

    fn broadcast(&self, room: &RoomKey, event: super::Ephemeral<'_>) -> bool {
        let packets = crate::hub::encode_room_event(&event.as_event(room), 0);
        self.hub.deliver_ephemeral(room, packets, event.conflate);
        true
    }

    fn publish_once<'a>(
        &'a self,
        event: &'a Event<'a>,
        claim: &'a str,
        _claim_ttl_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Receipt>, PublishError>> {
        async move {
            if !self.take(claim) {
                return Ok(None);
            }
            let published = self.publish(event).await;
            if published.is_err() {
                self.give_back(claim);
            }
            published.map(Some)
        }
        .boxed()
    }

    fn claim<'a>(
        &'a self,
        claim: &'a str,
        _claim_ttl_ms: u64,
    ) -> BoxFuture<'a, Result<bool, PublishError>> {
        ready(Ok(self.take(claim))).boxed()
    }
}

/// Every room's events are published in this process: nothing to subscribe to.
pub struct LocalFeed {
    hub: Arc<Hub>,
}

impl LocalFeed {
    /// Rooms of `hub`.
    pub fn new(hub: Arc<Hub>) -> LocalFeed {
        LocalFeed { hub }
    }
}

impl RoomFeed for LocalFeed {
    fn acquire<'a>(&'a self, _room: &'a RoomKey) -> BoxFuture<'a, Result<(), Unavailable>> {
        ready(Ok(())).boxed()
    }

    fn release(&self, room: &RoomKey) {
        // Keeps the stream's epoch alive for a while after the last member leaves.
        self.hub.history().epoch(room);
    }

    fn joined_seq(&self, _room: &RoomKey, hub_seq: u64) -> u64 {
        hub_seq
    }
}

/// Records in a [`SessionStore`] of this process (which may keep them on disk).
pub struct LocalSessions {
    store: Arc<dyn SessionStore>,
}

impl LocalSessions {
    /// Records kept by `store`.
    pub fn new(store: Arc<dyn SessionStore>) -> LocalSessions {
        LocalSessions { store }
    }
}

impl Sessions for LocalSessions {
    fn save(&self, record: SessionRecord, _version: u64) {
        self.store.save_live(&record);
    }

    fn room_joined(&self, record: SessionRecord, _membership: Membership, _version: u64) {
        self.store.save_live(&record);
    }

    fn room_left(&self, record: SessionRecord, _room: &str, _version: u64) {
        self.store.save_live(&record);
    }

    fn park(&self, record: SessionRecord, _version: u64) {
        self.store.park(record);
    }

    fn forget(&self, pid: Sid) {
        self.store.forget(&pid);
    }

    fn take<'a>(
        &'a self,
        pid: &'a Sid,
        owner: Owner<'a>,
    ) -> BoxFuture<'a, Result<SessionRecord, TakeError>> {
        let taken = self
            .store
            .take(pid, &owner)
            .map_err(|refused| match refused {
                TakeRefused::Unknown => TakeError::Unknown,
                TakeRefused::Mismatch => TakeError::Mismatch,
            });
        ready(taken).boxed()
    }

    fn refresh(&self, _pids: Vec<Sid>) -> BoxFuture<'static, ()> {
        ready(()).boxed()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::history::MemoryHistory;

    #[tokio::test]
    async fn a_claim_publishes_once() {
        let history = Arc::new(MemoryHistory::new(
            100,
            Duration::from_secs(60),
            1 << 20,
            Duration::from_secs(60),
        ));
        let log = LocalLog::new(Arc::new(Hub::new(history)));
        let rooms = ["news".to_owned()];
        let event = Event {
            nsp: "/",
            rooms: &rooms,
            name: "update",
            data: b"1",
            attachments: &[],
            with_offset: true,
        };
        assert!(log.publish_once(&event, "r-1", 0).await.unwrap().is_some());
        assert!(log.publish_once(&event, "r-1", 0).await.unwrap().is_none());
        assert!(!log.claim("r-1", 0).await.unwrap());
        assert!(log.claim("r-2", 0).await.unwrap());
        log.give_back("r-2");
        assert!(log.publish_once(&event, "r-2", 0).await.unwrap().is_some());
    }
}
