//! [`DiskSessions`]: recovery sessions held in memory and journaled to `rooms.db`.

use std::sync::Arc;
use std::time::Instant;

use super::codec;
use super::journal::{Job, Journal, SessionRow};
use super::wall_ms;
use crate::engineio::session::Sid;
use crate::recovery::{MemorySessionStore, Owner, SessionRecord, SessionStore, TakeRefused};

/// Sessions kept on disk: parked records are served from memory, every change is journaled, and connected
/// sockets' state is saved too, so that after a crash their clients can still resume.
pub struct DiskSessions {
    memory: MemorySessionStore,
    journal: Arc<Journal>,
}

impl DiskSessions {
    pub(super) fn new(memory: MemorySessionStore, journal: Arc<Journal>) -> DiskSessions {
        DiskSessions { memory, journal }
    }

    fn save(&self, record: &SessionRecord, live: bool) {
        let now_ms = wall_ms();
        let left = record.expires_at.saturating_duration_since(Instant::now());
        self.journal.send(Job::Session(SessionRow {
            pid: record.pid.to_string(),
            sid: record.sid.to_string(),
            nsp: record.nsp.to_string(),
            sub: record.sub.clone(),
            rooms: codec::encode_rooms(&record.rooms),
            live,
            expires_ms: if live {
                0
            } else {
                now_ms + left.as_millis() as u64
            },
        }));
    }
}

impl SessionStore for DiskSessions {
    fn park(&self, record: SessionRecord) {
        self.save(&record, false);
        self.memory.park(record);
    }

    fn take(&self, pid: &Sid, owner: &Owner<'_>) -> Result<SessionRecord, TakeRefused> {
        // Removed from memory first, under its lock: two clients racing with one pid get it once.
        let record = self.memory.take(pid, owner)?;
        self.journal.send(Job::Forget(pid.to_string()));
        Ok(record)
    }

    fn sweep(&self) {
        self.memory.sweep();
        self.journal.send(Job::SweepSessions { now_ms: wall_ms() });
    }

    fn len(&self) -> usize {
        self.memory.len()
    }

    fn save_live(&self, record: &SessionRecord) {
        self.save(record, true);
    }

    fn forget(&self, pid: &Sid) {
        self.memory.remove(pid);
        self.journal.send(Job::Forget(pid.to_string()));
    }
}
