//! Direct messages in Redis (cluster mode): every node reads and changes the same records and inboxes, each
//! state transition in one Lua script, so two nodes never give one sequence twice or move a status backwards.
//!
//! Layout, all under `<prefix>:dm:store:` ([`Keys::dm_root`]; the routing keys of direct messages, `dm:user:`
//! and `dm:node:`, lie beside it):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `msg:<id>` | hash | the record: fields, status, timestamps, per-device receipts |
//! | `seq:<user>` | hash | `seq` (the inbox's last sequence) and `n` (records of this inbox still kept) |
//! | `inbox:<user>` | sorted set | ids in the inbox, scored by sequence |
//! | `acked:<user>` | sorted set | the delivered ones among them (what a full inbox may let go), by sequence |
//! | `key:<from>\0<key>` | string | the id a sender's idempotency key was first used for |
//! | `expiry` | sorted set | inbox messages of every user by the time their ttl passes |
//! | `forget` | sorted set | records out of their inbox by the time they are deleted |
//!
//! An inbox is a sorted set rather than a stream because messages leave it out of order (read per sender, the
//! oldest delivered one when it is full) and are looked up by sequence.
//!
//! The scripts reach records and inboxes through ids they read, so the keys of one call may lie in different
//! Redis Cluster slots: like the rest of cluster mode, the store needs one Redis master (standalone or under
//! Sentinel), not a Redis Cluster.
//!
//! Durability: a method returns once Redis ran its script, i.e. the change is in the master's memory and, with
//! AOF on, in its log (fsynced per `appendfsync`). [`ReplicaWait`] additionally waits after every write until
//! that many replicas confirmed it (`WAIT`, one for every group of concurrent writes), and reports the store
//! unavailable when they do not in time.

mod replica_wait;
mod reply;
mod scripts;

pub use replica_wait::ReplicaWait;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt};
use redis::{Script, ScriptInvocation, Value};

use self::replica_wait::Confirmer;
use super::connection::RESPONSE_TIMEOUT;
use super::keys::Keys;
use super::Redis;
use crate::messages::{
    Accepted, Change, InboxLimits, Marks, Message, MessageId, MessageState, MessageStore,
    NewMessage, Pending, Status, StoreError,
};

/// Most ids one script call marks; longer lists are split (each message's change stays atomic).
pub const MAX_IDS_PER_CALL: usize = 512;
/// Ids drawn for one message before giving up (a second one is already next to impossible).
const ID_ATTEMPTS: usize = 3;
/// Most messages one `pending` or `inbox` call returns.
pub const MAX_PAGE: usize = 1000;
/// Index entries (expiries plus records to forget) one sweep script handles.
const SWEEP_BATCH: usize = 500;
/// Sweep scripts one `sweep` call runs at most; what is left waits for the next sweep.
const SWEEP_MAX_BATCHES: usize = 20;

/// The compiled scripts.
struct Scripts {
    accept: Script,
    mark_sent: Script,
    mark_delivered: Script,
    mark_read: Script,
    pending: Script,
    inbox: Script,
    sweep: Script,
}

/// Direct messages kept in Redis.
pub struct RedisMessages {
    redis: Arc<Redis>,
    keys: Keys,
    limits: InboxLimits,
    confirmer: Option<Confirmer>,
    scripts: Scripts,
}

impl RedisMessages {
    /// A store under the cluster's keys, bounding inboxes by `limits` (`max_records` does not apply: Redis
    /// memory bounds the records).
    pub fn new(redis: Arc<Redis>, keys: Keys, limits: InboxLimits) -> RedisMessages {
        RedisMessages {
            redis,
            keys,
            limits,
            confirmer: None,
            scripts: Scripts {
                accept: Script::new(scripts::ACCEPT_LUA),
                mark_sent: Script::new(scripts::MARK_SENT_LUA),
                mark_delivered: Script::new(scripts::MARK_DELIVERED_LUA),
                mark_read: Script::new(scripts::MARK_READ_LUA),
                pending: Script::new(scripts::PENDING_LUA),
                inbox: Script::new(scripts::INBOX_LUA),
                sweep: Script::new(scripts::SWEEP_LUA),
            },
        }
    }

    /// The same store, waiting after every write until `wait.replicas` replicas have it.
    pub fn with_replica_wait(mut self, wait: ReplicaWait) -> RedisMessages {
        let longest = RESPONSE_TIMEOUT.saturating_sub(Duration::from_millis(500));
        let wait = ReplicaWait {
            replicas: wait.replicas,
            timeout: wait.timeout.clamp(Duration::from_millis(1), longest),
        };
        self.confirmer =
            (wait.replicas > 0).then(|| Confirmer::new(self.redis.target().clone(), wait));
        self
    }

    /// Runs one script, timing it by `op`; a `write` is followed by the replica wait when one is set.
    async fn run(
        &self,
        op: &'static str,
        invocation: &ScriptInvocation<'_>,
        write: bool,
    ) -> Result<Value, StoreError> {
        let started = Instant::now();
        let result = self.run_once(invocation, write).await;
        metrics::histogram!("tidings_store_redis_seconds", "op" => op)
            .record(started.elapsed().as_secs_f64());
        if let Err(error) = &result {
            metrics::counter!("tidings_store_redis_errors_total", "op" => op).increment(1);
            tracing::debug!(op, %error, "message store call failed");
        }
        result
    }

    async fn run_once(
        &self,
        invocation: &ScriptInvocation<'_>,
        write: bool,
    ) -> Result<Value, StoreError> {
        let Some(confirmer) = self.confirmer.as_ref().filter(|_| write) else {
            let mut conn = self.redis.conn().await.map_err(unavailable)?;
            let result = invocation.invoke_async(&mut conn).await;
            return self.redis.observe(result).await.map_err(unavailable);
        };
        let (generation, mut conn) = confirmer.conn().await.map_err(unavailable)?;
        let reply = match invocation.invoke_async(&mut conn).await {
            Ok(reply) => reply,
            Err(error) => {
                confirmer.failed(generation).await;
                return Err(unavailable(error));
            }
        };
        let ticket = confirmer.completed(generation);
        confirmer
            .confirm(ticket)
            .await
            .map_err(|error| StoreError::Unavailable(error.to_string()))?;
        Ok(reply)
    }

    /// Accepts `messages` in order with one script call per attempt; a message whose new id is taken is tried
    /// again, with the ones after it, under another id.
    async fn accept_batch_now(
        &self,
        messages: Vec<NewMessage>,
    ) -> Vec<Result<Accepted, StoreError>> {
        let mut out: Vec<Result<Accepted, StoreError>> = Vec::with_capacity(messages.len());
        let mut attempts = 0;
        while out.len() < messages.len() {
            let rest = &messages[out.len()..];
            let ids: Vec<MessageId> = rest.iter().map(|m| MessageId::generate(m.at_ms)).collect();
            let answers = match self.accept_as(rest, &ids).await {
                Ok(answers) => answers,
                Err(error) => {
                    out.extend(rest.iter().map(|_| Err(error.clone())));
                    break;
                }
            };
            let taken = answers.iter().any(Option::is_none);
            out.extend(answers.into_iter().flatten());
            attempts += 1;
            if taken && attempts >= ID_ATTEMPTS {
                let error = StoreError::Unavailable("no free message id".into());
                out.extend(messages[out.len()..].iter().map(|_| Err(error.clone())));
            } else if !taken && out.len() < messages.len() {
                let error = malformed(reply::Malformed("accept reply"));
                out.extend(messages[out.len()..].iter().map(|_| Err(error.clone())));
            }
        }
        out
    }

    /// Accepts `messages` under `ids` in one script call: an answer per message tried, `None` for one whose id
    /// was taken (the script stopped there).
    async fn accept_as(
        &self,
        messages: &[NewMessage],
        ids: &[MessageId],
    ) -> Result<Vec<Option<Result<Accepted, StoreError>>>, StoreError> {
        let mut invocation = self.scripts.accept.prepare_invoke();
        invocation
            .arg(self.keys.dm_root())
            .arg(self.limits.max_messages.max(1))
            .arg(self.limits.retention_ms);
        for (new, id) in messages.iter().zip(ids) {
            let from = new.from.as_deref().unwrap_or_default();
            let expires_at = new.at_ms.saturating_add(new.ttl_ms);
            let pairs = 7 + usize::from(new.from.is_some()) + usize::from(new.key.is_some());
            invocation
                .arg(&new.to)
                .arg(if new.key.is_some() { "1" } else { "0" })
                .arg(
                    self.keys
                        .dm_idempotency(from, new.key.as_deref().unwrap_or_default()),
                )
                .arg(id.as_str())
                .arg(new.at_ms)
                .arg(expires_at)
                .arg(pairs * 2);
            invocation
                .arg("id")
                .arg(id.as_str())
                .arg("to")
                .arg(&new.to)
                .arg("ev")
                .arg(&new.event)
                .arg("data")
                .arg(new.data.as_ref())
                .arg("at")
                .arg(new.at_ms)
                .arg("exp")
                .arg(expires_at)
                .arg("st")
                .arg(Status::Accepted.as_str());
            if let Some(from) = &new.from {
                invocation.arg("from").arg(from);
            }
            if let Some(key) = &new.key {
                invocation.arg("key").arg(key);
            }
        }
        let reply =
            reply::array(self.run("accept", &invocation, true).await?).map_err(malformed)?;
        if reply.is_empty() || reply.len() > messages.len() {
            return Err(malformed(reply::Malformed("accept reply")));
        }
        let mut out = Vec::with_capacity(reply.len());
        for ((answer, new), id) in reply.into_iter().zip(messages).zip(ids) {
            let answer = reply::array(answer).map_err(malformed)?;
            out.push(match answer.as_slice() {
                [Value::Int(1), seq] => {
                    let seq =
                        reply::number(seq).ok_or_else(|| malformed(reply::Malformed("seq")))?;
                    Some(Ok(Accepted {
                        message: Message::from_new(new.clone(), id.clone(), seq),
                        status: Status::Accepted,
                        fresh: true,
                    }))
                }
                [Value::Int(0), fields] => {
                    let state = reply::record(fields.clone()).map_err(malformed)?;
                    Some(Ok(Accepted {
                        message: state.message,
                        status: state.status,
                        fresh: false,
                    }))
                }
                [Value::Int(-1)] => Some(Err(StoreError::InboxFull)),
                [Value::Int(-2)] => {
                    // The script stopped at this message.
                    out.push(None);
                    break;
                }
                _ => return Err(malformed(reply::Malformed("accept reply"))),
            });
        }
        Ok(out)
    }

    async fn mark_sent_now(
        &self,
        user: &str,
        ids: &[MessageId],
        at_ms: u64,
    ) -> Result<Vec<Change>, StoreError> {
        let marks = [Marks {
            user: user.to_owned(),
            device: None,
            ids: ids.to_vec(),
            at_ms,
        }];
        all_or_error(self.run_marks(&marks).await)
    }

    async fn mark_delivered_now(
        &self,
        user: &str,
        device: &str,
        ids: &[MessageId],
        at_ms: u64,
    ) -> Result<Vec<Change>, StoreError> {
        let marks = [Marks {
            user: user.to_owned(),
            device: Some(device.to_owned()),
            ids: ids.to_vec(),
            at_ms,
        }];
        all_or_error(self.run_marks(&marks).await)
    }

    async fn mark_batch_now(&self, marks: Vec<Marks>) -> (Vec<Change>, Option<StoreError>) {
        let (sent, delivered): (Vec<Marks>, Vec<Marks>) =
            marks.into_iter().partition(|mark| mark.device.is_none());
        let ((mut changes, sent_failure), (delivered, delivered_failure)) =
            futures_util::join!(self.run_marks(&sent), self.run_marks(&delivered));
        changes.extend(delivered);
        (changes, sent_failure.or(delivered_failure))
    }

    /// Runs marks of one kind (all sent, or all receipts), at most [`MAX_IDS_PER_CALL`] ids per script call;
    /// the calls go out together (marks are independent of each other and idempotent, so their order does not
    /// matter) and their round trips overlap. Returns the changes of every call that succeeded, and the error
    /// of one that failed, if any.
    async fn run_marks(&self, marks: &[Marks]) -> (Vec<Change>, Option<StoreError>) {
        let Some(first) = marks.first() else {
            return (Vec::new(), None);
        };
        let (script, op) = match first.device {
            None => (&self.scripts.mark_sent, "mark_sent"),
            Some(_) => (&self.scripts.mark_delivered, "mark_delivered"),
        };
        let mut calls = Vec::new();
        let mut invocation = script.prepare_invoke();
        invocation.arg(self.keys.dm_root());
        let mut ids_in_call = 0;
        for mark in marks {
            for chunk in mark.ids.chunks(MAX_IDS_PER_CALL) {
                if ids_in_call + chunk.len() > MAX_IDS_PER_CALL {
                    calls.push(std::mem::replace(&mut invocation, script.prepare_invoke()));
                    invocation.arg(self.keys.dm_root());
                    ids_in_call = 0;
                }
                invocation.arg(&mark.user);
                if let Some(device) = &mark.device {
                    invocation.arg(device);
                }
                invocation.arg(mark.at_ms).arg(chunk.len());
                for id in chunk {
                    invocation.arg(id.as_str());
                }
                ids_in_call += chunk.len();
            }
        }
        if ids_in_call > 0 {
            calls.push(invocation);
        }
        let replies =
            futures_util::future::join_all(calls.iter().map(|call| self.run(op, call, true))).await;
        let mut out = Vec::new();
        let mut failure = None;
        for reply in replies {
            // One failed call does not hide the changes the others stored: their statuses still go out.
            match reply.and_then(|r| reply::changes(r).map_err(malformed)) {
                Ok(changes) => out.extend(changes),
                Err(error) => failure = Some(error),
            }
        }
        (out, failure)
    }

    async fn mark_read_now(
        &self,
        user: &str,
        from: &str,
        up_to: &MessageId,
        at_ms: u64,
    ) -> Result<Vec<Change>, StoreError> {
        let mut invocation = self.scripts.mark_read.prepare_invoke();
        invocation
            .key(self.keys.dm_inbox(user))
            .key(self.keys.dm_acked(user))
            .key(self.keys.dm_expiry())
            .key(self.keys.dm_forget())
            .arg(self.keys.dm_root())
            .arg(user)
            .arg(from)
            .arg(up_to.as_str())
            .arg(at_ms)
            .arg(self.limits.retention_ms);
        match self.run("mark_read", &invocation, true).await? {
            Value::Nil => Err(StoreError::UnknownMessage),
            reply => reply::changes(reply).map_err(malformed),
        }
    }

    async fn pending_now(
        &self,
        user: &str,
        device: &str,
        after: u64,
        limit: usize,
    ) -> Result<Pending, StoreError> {
        let mut invocation = self.scripts.pending.prepare_invoke();
        invocation
            .key(self.keys.dm_counters(user))
            .key(self.keys.dm_inbox(user))
            .arg(self.keys.dm_root())
            .arg(device)
            .arg(after)
            .arg(limit.min(MAX_PAGE))
            .arg(&scripts::MESSAGE_FIELDS[..]);
        let reply =
            reply::array(self.run("pending", &invocation, false).await?).map_err(malformed)?;
        let [last_seq, messages] = <[Value; 2]>::try_from(reply)
            .map_err(|_| malformed(reply::Malformed("pending reply")))?;
        Ok(Pending {
            last_seq: reply::number(&last_seq)
                .ok_or_else(|| malformed(reply::Malformed("last seq")))?,
            messages: reply::array(messages)
                .map_err(malformed)?
                .into_iter()
                .map(reply::message_from_values)
                .collect::<Result<_, _>>()
                .map_err(malformed)?,
        })
    }

    async fn inbox_now(
        &self,
        user: &str,
        since: u64,
        limit: usize,
    ) -> Result<Vec<MessageState>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut invocation = self.scripts.inbox.prepare_invoke();
        invocation
            .key(self.keys.dm_inbox(user))
            .arg(self.keys.dm_root())
            .arg(since)
            .arg(limit.min(MAX_PAGE));
        let reply = self.run("inbox", &invocation, false).await?;
        reply::array(reply)
            .map_err(malformed)?
            .into_iter()
            .map(reply::record)
            .collect::<Result<_, _>>()
            .map_err(malformed)
    }

    async fn get_now(&self, id: &MessageId) -> Result<Option<MessageState>, StoreError> {
        let started = Instant::now();
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.keys.dm_message(id.as_str()));
        let result = self.redis.run::<Value>(&cmd).await;
        metrics::histogram!("tidings_store_redis_seconds", "op" => "get")
            .record(started.elapsed().as_secs_f64());
        let reply = result.map_err(unavailable)?;
        match reply::array(reply).map_err(malformed)? {
            fields if fields.is_empty() => Ok(None),
            fields => reply::record(Value::Array(fields))
                .map(Some)
                .map_err(malformed),
        }
    }

    async fn sweep_now(&self, now_ms: u64) -> Result<Vec<Change>, StoreError> {
        let mut out = Vec::new();
        for _ in 0..SWEEP_MAX_BATCHES {
            let mut invocation = self.scripts.sweep.prepare_invoke();
            invocation
                .key(self.keys.dm_expiry())
                .key(self.keys.dm_forget())
                .arg(self.keys.dm_root())
                .arg(now_ms)
                .arg(self.limits.retention_ms)
                .arg(SWEEP_BATCH);
            let reply =
                reply::array(self.run("sweep", &invocation, true).await?).map_err(malformed)?;
            let [handled, changes] = <[Value; 2]>::try_from(reply)
                .map_err(|_| malformed(reply::Malformed("sweep reply")))?;
            out.extend(reply::changes(changes).map_err(malformed)?);
            if reply::number(&handled).unwrap_or(0) < SWEEP_BATCH as u64 {
                break;
            }
        }
        Ok(out)
    }
}

fn unavailable(error: redis::RedisError) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

fn malformed(error: reply::Malformed) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

impl MessageStore for RedisMessages {
    fn accept(&self, message: NewMessage) -> BoxFuture<'_, Result<Accepted, StoreError>> {
        async move {
            self.accept_batch_now(vec![message])
                .await
                .pop()
                .unwrap_or_else(|| Err(StoreError::Unavailable("no answer".into())))
        }
        .boxed()
    }

    fn accept_batch(
        &self,
        messages: Vec<NewMessage>,
    ) -> BoxFuture<'_, Vec<Result<Accepted, StoreError>>> {
        self.accept_batch_now(messages).boxed()
    }

    fn mark_batch(&self, marks: Vec<Marks>) -> BoxFuture<'_, (Vec<Change>, Option<StoreError>)> {
        self.mark_batch_now(marks).boxed()
    }

    fn mark_sent<'a>(
        &'a self,
        user: &'a str,
        ids: &'a [MessageId],
        at_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<Change>, StoreError>> {
        self.mark_sent_now(user, ids, at_ms).boxed()
    }

    fn mark_delivered<'a>(
        &'a self,
        user: &'a str,
        device: &'a str,
        ids: &'a [MessageId],
        at_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<Change>, StoreError>> {
        self.mark_delivered_now(user, device, ids, at_ms).boxed()
    }

    fn mark_read<'a>(
        &'a self,
        user: &'a str,
        from: &'a str,
        up_to: &'a MessageId,
        at_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<Change>, StoreError>> {
        self.mark_read_now(user, from, up_to, at_ms).boxed()
    }

    fn pending<'a>(
        &'a self,
        user: &'a str,
        device: &'a str,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Pending, StoreError>> {
        self.pending_now(user, device, after, limit).boxed()
    }

    fn inbox<'a>(
        &'a self,
        user: &'a str,
        since: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<MessageState>, StoreError>> {
        self.inbox_now(user, since, limit).boxed()
    }

    fn get<'a>(
        &'a self,
        id: &'a MessageId,
    ) -> BoxFuture<'a, Result<Option<MessageState>, StoreError>> {
        self.get_now(id).boxed()
    }

    fn sweep(&self, now_ms: u64) -> BoxFuture<'_, Result<Vec<Change>, StoreError>> {
        self.sweep_now(now_ms).boxed()
    }
}

/// The changes of a mark run, or its error when part of it failed (for callers that answer all or nothing).
fn all_or_error(
    (changes, failure): (Vec<Change>, Option<StoreError>),
) -> Result<Vec<Change>, StoreError> {
    failure.map_or(Ok(changes), Err)
}
