//! The in-process message store: everything in memory, gone with the process (embedded mode without a data
//! directory).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures_util::future::{self, BoxFuture, FutureExt};
use parking_lot::Mutex;

use super::model::{
    Accepted, Change, DeviceReceipt, InboxLimits, Message, MessageId, MessageState, NewMessage,
    Pending, Status,
};
use super::{MessageStore, StoreError};

/// One user's inbox: its last sequence and the messages still in it.
#[derive(Default)]
struct Inbox {
    last_seq: u64,
    entries: BTreeMap<u64, MessageId>,
    /// Records of this inbox still held (in it or kept for their status).
    records: usize,
}

#[derive(Default)]
struct State {
    records: HashMap<MessageId, MessageState>,
    inboxes: HashMap<String, Inbox>,
    /// (sender or "", key) → message.
    keys: HashMap<(String, String), MessageId>,
    /// Inbox messages by the time their ttl passes.
    expiries: BTreeSet<(u64, MessageId)>,
    /// Records out of the inbox by the time they are forgotten.
    forget: BTreeSet<(u64, MessageId)>,
}

/// Messages kept in this process.
pub struct MemoryMessages {
    limits: InboxLimits,
    state: Mutex<State>,
}

impl MemoryMessages {
    /// An empty store with these bounds.
    pub fn new(limits: InboxLimits) -> MemoryMessages {
        MemoryMessages {
            limits,
            state: Mutex::new(State::default()),
        }
    }

    /// Message records held (in an inbox or kept for their status).
    pub fn len(&self) -> usize {
        self.state.lock().records.len()
    }

    /// True when no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn accept_now(&self, new: NewMessage) -> Result<Accepted, StoreError> {
        let mut state = self.state.lock();
        let state = &mut *state;
        let key = new
            .key
            .as_ref()
            .map(|key| (new.from.clone().unwrap_or_default(), key.clone()));
        if let Some(existing) = key
            .as_ref()
            .and_then(|key| state.keys.get(key))
            .and_then(|id| state.records.get(id))
        {
            return Ok(Accepted {
                message: existing.message.clone(),
                status: existing.status,
                fresh: false,
            });
        }
        if state.records.len() >= self.limits.max_records {
            return Err(StoreError::Unavailable("message store full".into()));
        }
        let inbox = state.inboxes.entry(new.to.clone()).or_default();
        if inbox.entries.len() >= self.limits.max_messages {
            // Make room by letting the oldest delivered message leave; undelivered ones are never pushed out.
            let delivered = inbox.entries.iter().find_map(|(seq, id)| {
                state
                    .records
                    .get(id)
                    .is_some_and(|r| r.status >= Status::Delivered)
                    .then_some(*seq)
            });
            let Some(seq) = delivered else {
                return Err(StoreError::InboxFull);
            };
            if let Some(id) = inbox.entries.remove(&seq) {
                if let Some(record) = state.records.get(&id) {
                    state
                        .expiries
                        .remove(&(record.message.expires_at, id.clone()));
                }
                state
                    .forget
                    .insert((new.at_ms + self.limits.retention_ms, id));
            }
        }
        inbox.last_seq += 1;
        inbox.records += 1;
        let seq = inbox.last_seq;
        let id = MessageId::generate(new.at_ms);
        inbox.entries.insert(seq, id.clone());
        let message = Message::from_new(new, id.clone(), seq);
        state.expiries.insert((message.expires_at, id.clone()));
        if let Some(key) = key {
            state.keys.insert(key, id.clone());
        }
        state.records.insert(id, MessageState::new(message.clone()));
        Ok(Accepted {
            message,
            status: Status::Accepted,
            fresh: true,
        })
    }

    fn mark_sent_now(&self, user: &str, ids: &[MessageId], at_ms: u64) -> Vec<Change> {
        let mut state = self.state.lock();
        let mut changes = Vec::new();
        for id in ids {
            let Some(record) = state.records.get_mut(id) else {
                continue;
            };
            if record.message.to != user || record.status != Status::Accepted {
                continue;
            }
            record.status = Status::Sent;
            record.sent_at = Some(at_ms);
            changes.push(change(record, None, at_ms));
        }
        changes
    }

    fn mark_delivered_now(
        &self,
        user: &str,
        device: &str,
        ids: &[MessageId],
        at_ms: u64,
    ) -> Vec<Change> {
        let mut state = self.state.lock();
        let mut changes = Vec::new();
        for id in ids {
            let Some(record) = state.records.get_mut(id) else {
                continue;
            };
            if record.message.to != user
                || record.status == Status::Expired
                || record.devices.iter().any(|r| r.device == device)
            {
                continue;
            }
            record.devices.push(DeviceReceipt {
                device: device.to_owned(),
                delivered_at: at_ms,
            });
            if record.status == Status::Read {
                // A late receipt: kept, but the status does not move back.
                continue;
            }
            record.sent_at.get_or_insert(at_ms);
            record.delivered_at.get_or_insert(at_ms);
            record.status = Status::Delivered;
            changes.push(change(record, Some(device), at_ms));
        }
        changes
    }

    fn mark_read_now(
        &self,
        user: &str,
        from: &str,
        up_to: &MessageId,
        at_ms: u64,
    ) -> Result<Vec<Change>, StoreError> {
        let mut state = self.state.lock();
        let state = &mut *state;
        let up_to_seq = state
            .records
            .get(up_to)
            .filter(|r| r.message.to == user)
            .map(|r| r.message.seq)
            .ok_or(StoreError::UnknownMessage)?;
        let Some(inbox) = state.inboxes.get_mut(user) else {
            return Ok(Vec::new());
        };
        let mut changes = Vec::new();
        let mut gone = Vec::new();
        for (seq, id) in inbox.entries.range(..=up_to_seq) {
            let Some(record) = state.records.get_mut(id) else {
                continue;
            };
            if record.message.from.as_deref() != Some(from) || record.status.is_final() {
                continue;
            }
            record.status = Status::Read;
            record.read_at = Some(at_ms);
            changes.push(change(record, None, at_ms));
            gone.push((*seq, id.clone(), record.message.expires_at));
        }
        for (seq, id, expires_at) in gone {
            inbox.entries.remove(&seq);
            state.expiries.remove(&(expires_at, id.clone()));
            state.forget.insert((at_ms + self.limits.retention_ms, id));
        }
        Ok(changes)
    }

    fn pending_now(&self, user: &str, device: &str, after: u64, limit: usize) -> Pending {
        let state = self.state.lock();
        let Some(inbox) = state.inboxes.get(user) else {
            return Pending::default();
        };
        let messages = inbox
            .entries
            .range(after.saturating_add(1)..)
            .filter_map(|(_, id)| state.records.get(id))
            .filter(|r| !r.devices.iter().any(|d| d.device == device))
            .take(limit)
            .map(|r| r.message.clone())
            .collect();
        Pending {
            messages,
            last_seq: inbox.last_seq,
        }
    }

    fn inbox_now(&self, user: &str, since: u64, limit: usize) -> Vec<MessageState> {
        let state = self.state.lock();
        let Some(inbox) = state.inboxes.get(user) else {
            return Vec::new();
        };
        inbox
            .entries
            .range(since.saturating_add(1)..)
            .filter_map(|(_, id)| state.records.get(id))
            .take(limit)
            .cloned()
            .collect()
    }

    fn sweep_now(&self, now_ms: u64) -> Vec<Change> {
        let mut state = self.state.lock();
        let state = &mut *state;
        let mut changes = Vec::new();
        while let Some((expires_at, id)) = state.expiries.first().cloned() {
            if expires_at > now_ms {
                break;
            }
            state.expiries.pop_first();
            let Some(record) = state.records.get_mut(&id) else {
                continue;
            };
            if let Some(inbox) = state.inboxes.get_mut(&record.message.to) {
                inbox.entries.remove(&record.message.seq);
            }
            if record.status < Status::Delivered {
                record.status = Status::Expired;
                record.expired_at = Some(now_ms);
                changes.push(change(record, None, now_ms));
            }
            state
                .forget
                .insert((expires_at + self.limits.retention_ms, id));
        }
        while let Some((at, id)) = state.forget.first().cloned() {
            if at > now_ms {
                break;
            }
            state.forget.pop_first();
            if let Some(record) = state.records.remove(&id) {
                if let Some(key) = &record.message.key {
                    let key = (record.message.from.clone().unwrap_or_default(), key.clone());
                    if state.keys.get(&key) == Some(&id) {
                        state.keys.remove(&key);
                    }
                }
                if let Some(inbox) = state.inboxes.get_mut(&record.message.to) {
                    inbox.records = inbox.records.saturating_sub(1);
                    if inbox.records == 0 && inbox.entries.is_empty() {
                        // Forgotten only once none of its records is left, so a sequence is never reused
                        // while a message that had it can still be read.
                        state.inboxes.remove(&record.message.to);
                    }
                }
            }
        }
        changes
    }
}

fn change(record: &MessageState, device: Option<&str>, at: u64) -> Change {
    Change {
        id: record.message.id.clone(),
        from: record.message.from.clone(),
        to: record.message.to.clone(),
        status: record.status,
        device: device.map(str::to_owned),
        at,
    }
}

impl MessageStore for MemoryMessages {
    fn accept(&self, message: NewMessage) -> BoxFuture<'_, Result<Accepted, StoreError>> {
        future::ready(self.accept_now(message)).boxed()
    }

    fn mark_sent<'a>(
        &'a self,
        user: &'a str,
        ids: &'a [MessageId],
        at_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<Change>, StoreError>> {
        future::ready(Ok(self.mark_sent_now(user, ids, at_ms))).boxed()
    }

    fn mark_delivered<'a>(
        &'a self,
        user: &'a str,
        device: &'a str,
        ids: &'a [MessageId],
        at_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<Change>, StoreError>> {
        future::ready(Ok(self.mark_delivered_now(user, device, ids, at_ms))).boxed()
    }

    fn mark_read<'a>(
        &'a self,
        user: &'a str,
        from: &'a str,
        up_to: &'a MessageId,
        at_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<Change>, StoreError>> {
        future::ready(self.mark_read_now(user, from, up_to, at_ms)).boxed()
    }

    fn pending<'a>(
        &'a self,
        user: &'a str,
        device: &'a str,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Pending, StoreError>> {
        future::ready(Ok(self.pending_now(user, device, after, limit))).boxed()
    }

    fn inbox<'a>(
        &'a self,
        user: &'a str,
        since: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<MessageState>, StoreError>> {
        future::ready(Ok(self.inbox_now(user, since, limit))).boxed()
    }

    fn get<'a>(
        &'a self,
        id: &'a MessageId,
    ) -> BoxFuture<'a, Result<Option<MessageState>, StoreError>> {
        future::ready(Ok(self.state.lock().records.get(id).cloned())).boxed()
    }

    fn sweep(&self, now_ms: u64) -> BoxFuture<'_, Result<Vec<Change>, StoreError>> {
        future::ready(Ok(self.sweep_now(now_ms))).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_the_store_contract() {
        let store = MemoryMessages::new(super::super::contract::CONTRACT_LIMITS);
        super::super::contract::check(&store, "").await;
        // Everything forgotten after the contract's last sweep but the records still in an inbox.
        assert!(store.len() <= 8, "{} records left", store.len());
    }

    #[tokio::test]
    async fn refuses_past_the_record_cap() {
        let store = MemoryMessages::new(InboxLimits {
            max_records: 2,
            ..InboxLimits::default()
        });
        let new = |to: &str| NewMessage {
            from: None,
            to: to.into(),
            event: "e".into(),
            data: "null".into(),
            key: None,
            at_ms: 1,
            ttl_ms: 1000,
        };
        store.accept(new("a")).await.unwrap();
        store.accept(new("b")).await.unwrap();
        assert!(matches!(
            store.accept(new("c")).await,
            Err(StoreError::Unavailable(_))
        ));
    }
}
