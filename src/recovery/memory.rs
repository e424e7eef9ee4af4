//! In-process session store. Records live only as long as the process: a restarted node cannot recover
//! sessions (its history epochs change too, so clients get a clean new session).

use std::collections::HashMap;
use std::time::Instant;

use parking_lot::Mutex;

use super::{SessionRecord, SessionStore};
use crate::engineio::session::Sid;

/// Disconnected sessions kept in memory.
#[derive(Default)]
pub struct MemorySessionStore {
    records: Mutex<HashMap<Sid, SessionRecord>>,
}

impl MemorySessionStore {
    /// An empty store.
    pub fn new() -> MemorySessionStore {
        MemorySessionStore::default()
    }
}

impl SessionStore for MemorySessionStore {
    fn park(&self, record: SessionRecord) {
        self.records.lock().insert(record.pid, record);
    }

    fn take(&self, pid: &Sid) -> Option<SessionRecord> {
        let record = self.records.lock().remove(pid)?;
        (record.expires_at > Instant::now()).then_some(record)
    }

    fn sweep(&self) {
        let now = Instant::now();
        self.records
            .lock()
            .retain(|_, record| record.expires_at > now);
    }

    fn len(&self) -> usize {
        self.records.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn record(expires_in: Duration) -> SessionRecord {
        SessionRecord {
            pid: Sid::random(),
            sid: Sid::random(),
            nsp: "/".into(),
            sub: "u".into(),
            rooms: Vec::new(),
            expires_at: Instant::now() + expires_in,
        }
    }

    #[test]
    fn take_once_and_expire() {
        let store = MemorySessionStore::new();
        let live = record(Duration::from_secs(60));
        let pid = live.pid;
        store.park(live);
        assert!(store.take(&pid).is_some());
        assert!(store.take(&pid).is_none());
        let expired = record(Duration::ZERO);
        let pid = expired.pid;
        store.park(expired);
        assert!(store.take(&pid).is_none());
        store.park(record(Duration::ZERO));
        store.sweep();
        assert!(store.is_empty());
    }
}
