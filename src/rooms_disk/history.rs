//! [`DiskHistory`]: the room history served from memory and journaled to `rooms.db`.

use std::sync::Arc;

use futures_util::future::{BoxFuture, FutureExt};
use parking_lot::Mutex;

use super::journal::{Job, Journal};
use super::load::Loaded;
use super::wall_ms;
use crate::history::{
    HistoryError, HistoryStats, HistoryStore, JournalError, MemoryHistory, ReadLimit, Slice,
    StoredEvent,
};
use crate::hub::{EventPackets, RoomKey};
use crate::recovery::Membership;
use crate::sqlite::commit::Running;

/// Room history kept on disk: every read is served by an inner [`MemoryHistory`] (same limits), every change
/// of it is journaled.
pub struct DiskHistory {
    memory: MemoryHistory,
    journal: Arc<Journal>,
    loaded: Loaded,
    writer: Mutex<Option<Running>>,
}

impl DiskHistory {
    pub(super) fn new(
        memory: MemoryHistory,
        journal: Arc<Journal>,
        loaded: Loaded,
        writer: Running,
    ) -> DiskHistory {
        DiskHistory {
            memory,
            journal,
            loaded,
            writer: Mutex::new(Some(writer)),
        }
    }

    /// What was read back when the store was opened.
    pub fn loaded(&self) -> Loaded {
        self.loaded
    }

    /// Transactions committed since the store was opened (each one sync of the log).
    pub fn commits(&self) -> u64 {
        self.writer
            .lock()
            .as_ref()
            .map_or(0, |w| w.commits.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Commits everything queued (history and sessions), marks the close as clean, closes the database and
    /// releases the directory. Publish nothing after it: later changes are not kept.
    pub async fn close(&self) -> Result<(), JournalError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.journal.send(Job::Close { reply });
        let closed = answer.await.unwrap_or(Err(super::journal::closed()));
        let writer = self.writer.lock().take();
        if let Some(writer) = writer {
            let _ = tokio::task::spawn_blocking(move || writer.thread.join()).await;
        }
        closed
    }
}

impl HistoryStore for DiskHistory {
    fn epoch(&self, room: &RoomKey) -> u64 {
        let (epoch, created) = self.memory.open_stream(room);
        if created {
            self.journal.send(Job::Stream {
                room: room.clone(),
                epoch,
            });
        }
        epoch
    }

    fn append(&self, room: &RoomKey, seq: u64, packets: &EventPackets) {
        if self.memory.max_events() == 0 {
            return;
        }
        let at_ms = wall_ms();
        // Queued before the memory store takes it: an eviction it causes (of this very event, when it alone
        // passes the byte limit) then reaches the writer after the append.
        self.journal.send(Job::Append {
            room: room.clone(),
            epoch: self.memory.open_stream(room).0,
            seq,
            at_ms,
            packets: packets.clone(),
        });
        self.memory.insert(room, seq, at_ms, packets);
    }

    fn read_within(
        &self,
        room: &RoomKey,
        epoch: Option<u64>,
        after: u64,
        limit: ReadLimit,
    ) -> Result<Slice, HistoryError> {
        self.memory.read_within(room, epoch, after, limit)
    }

    fn read_missed(
        &self,
        room: &RoomKey,
        membership: &Membership,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, HistoryError> {
        self.memory.read_missed(room, membership, after, limit)
    }

    fn evicted_through(&self, room: &RoomKey) -> u64 {
        self.memory.evicted_through(room)
    }

    fn sweep(&self, in_use: &dyn Fn(&RoomKey) -> bool) {
        self.memory.sweep(in_use);
    }

    fn stats(&self) -> HistoryStats {
        self.memory.stats()
    }

    fn durable(&self, seq: u64) -> BoxFuture<'static, Result<(), JournalError>> {
        let journal = Arc::clone(&self.journal);
        async move { journal.sync(seq).await }.boxed()
    }

    fn resume_seq(&self) -> u64 {
        self.loaded.resume_seq
    }
}
