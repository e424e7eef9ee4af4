//! In-process session store. Records live only as long as the process: a restarted node cannot recover
//! sessions (its history epochs change too, so clients get a clean new session).

use std::collections::HashMap;
use std::time::Instant;

use parking_lot::Mutex;

use super::{Owner, SessionRecord, SessionStore, TakeRefused};
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

    /// Removes a record whoever it belongs to; true when there was one.
    pub fn remove(&self, pid: &Sid) -> bool {
        self.records.lock().remove(pid).is_some()
    }
}

impl SessionStore for MemorySessionStore {
    fn park(&self, record: SessionRecord) {
        self.records.lock().insert(record.pid, record);
    }

    fn take(&self, pid: &Sid, owner: &Owner<'_>) -> Result<SessionRecord, TakeRefused> {
        let mut records = self.records.lock();
        let record = records.get(pid).ok_or(TakeRefused::Unknown)?;
        if record.expires_at <= Instant::now() {
            records.remove(pid);
            return Err(TakeRefused::Unknown);
        }
        if !owner.owns(record) {
            return Err(TakeRefused::Mismatch);
        }
        records.remove(pid).ok_or(TakeRefused::Unknown)
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
        let intruder = Owner {
            nsp: "/",
            sub: "eve",
        };
        let other_nsp = Owner {
            nsp: "/chat",
            sub: "u",
        };
        let owner = Owner { nsp: "/", sub: "u" };
        // Someone else's pid is refused without consuming the record.
        assert_eq!(
            store.take(&pid, &intruder).unwrap_err(),
            TakeRefused::Mismatch
        );
        assert_eq!(
            store.take(&pid, &other_nsp).unwrap_err(),
            TakeRefused::Mismatch
        );
        assert!(store.take(&pid, &owner).is_ok());
        assert_eq!(store.take(&pid, &owner).unwrap_err(), TakeRefused::Unknown);
        let expired = record(Duration::ZERO);
        let pid = expired.pid;
        store.park(expired);
        assert_eq!(store.take(&pid, &owner).unwrap_err(), TakeRefused::Unknown);
        store.park(record(Duration::ZERO));
        store.sweep();
        assert!(store.is_empty());
    }
}
