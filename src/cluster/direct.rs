//! Direct messages across nodes: which nodes hold a user's devices (a Redis hash per user: node → devices
//! there), and each node's own pub/sub channel, on which the nodes that accept a message or a status change
//! for one of its users hand it over. Only nodes holding the user do any work for it.
//!
//! Pub/sub is not durable, and need not be: every message is in its recipient's inbox before it is handed
//! over, so a device that missed a hand-over (its node was cut off from Redis) reads it back from the inbox.
//! After each reconnection the node republishes where its users are and every local device reads its inbox.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};

use futures_util::future::{BoxFuture, FutureExt};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::keys::Keys;
use super::Redis;
use crate::app::direct::{Direct, Fanout, UserPresence};
use crate::messages::{Change, Message, MessageId, Status, StoreError};

/// A hand-over between nodes.
#[derive(Serialize, Deserialize)]
#[serde(tag = "k")]
enum Wire {
    /// A message for one of the node's users.
    #[serde(rename = "m")]
    Message(WireMessage),
    /// A status change for one of the node's users (the sender).
    #[serde(rename = "s")]
    Status { user: String, change: WireChange },
    /// A message hand-over for the user was lost: its devices on the node read their inboxes back.
    #[serde(rename = "c")]
    CatchUp { user: String },
}

#[derive(Serialize, Deserialize)]
struct WireMessage {
    id: String,
    seq: u64,
    from: Option<String>,
    to: String,
    event: String,
    data: String,
    key: Option<String>,
    accepted_at: u64,
    expires_at: u64,
}

#[derive(Serialize, Deserialize)]
struct WireChange {
    id: String,
    from: Option<String>,
    to: String,
    status: String,
    device: Option<String>,
    at: u64,
}

impl From<&Message> for WireMessage {
    fn from(m: &Message) -> WireMessage {
        WireMessage {
            id: m.id.as_str().to_owned(),
            seq: m.seq,
            from: m.from.clone(),
            to: m.to.clone(),
            event: m.event.clone(),
            data: m.data.to_string(),
            key: m.key.clone(),
            accepted_at: m.accepted_at,
            expires_at: m.expires_at,
        }
    }
}

impl WireMessage {
    fn into_message(self) -> Option<Message> {
        Some(Message {
            id: MessageId::parse(&self.id)?,
            seq: self.seq,
            from: self.from,
            to: self.to,
            event: self.event,
            data: self.data.into(),
            key: self.key,
            accepted_at: self.accepted_at,
            expires_at: self.expires_at,
        })
    }
}

impl From<&Change> for WireChange {
    fn from(c: &Change) -> WireChange {
        WireChange {
            id: c.id.as_str().to_owned(),
            from: c.from.clone(),
            to: c.to.clone(),
            status: c.status.as_str().to_owned(),
            device: c.device.clone(),
            at: c.at,
        }
    }
}

impl WireChange {
    fn into_change(self) -> Option<Change> {
        Some(Change {
            id: MessageId::parse(&self.id)?,
            from: self.from,
            to: self.to,
            status: Status::parse(&self.status)?,
            device: self.device,
            at: self.at,
        })
    }
}

/// A presence update, applied in the order the node's devices came and went.
enum PresenceUpdate {
    /// `user` has this many devices on the node now (0: none).
    Devices(String, usize),
    /// Republish every local user (after a reconnection).
    All(Vec<(String, usize)>),
}

/// The cluster fan-out of one node.
pub struct RedisFanout {
    redis: Arc<Redis>,
    keys: Keys,
    node: String,
    direct: OnceLock<Weak<Direct>>,
    presence: mpsc::UnboundedSender<PresenceUpdate>,
    /// Hand-overs waiting for the worker that publishes them, in the order they were made.
    handovers: mpsc::Sender<Handover>,
    lost: Lost,
}

/// A hand-over waiting to be published: the user whose nodes get it and the wire JSON.
struct Handover {
    user: String,
    payload: String,
    /// A message (or a catch-up) rather than a status change: if it is lost, the user's devices elsewhere must
    /// be told to read their inboxes.
    message: bool,
}

/// Users whose message hand-overs were lost (dropped or not published), to be sent a catch-up.
type Lost = Arc<parking_lot::Mutex<std::collections::HashSet<String>>>;

/// Users kept in [`Lost`] at most; past it a loss is only counted (those devices catch up at their next gap
/// or reconnection).
pub const MAX_LOST_USERS: usize = 65_536;

/// How often the hand-over writer looks for catch-ups to send while nothing else is waiting.
const LOST_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

fn lose(lost: &Lost, user: &str) {
    let mut lost = lost.lock();
    if lost.len() < MAX_LOST_USERS {
        lost.insert(user.to_owned());
    } else {
        metrics::counter!("tidings_message_catch_ups_dropped_total").increment(1);
    }
}

/// Hand-overs waiting at most; past it one is dropped and counted (`tidings_message_handovers_dropped_total`).
/// Nothing is lost with it: a dropped message is in the inbox and a device reads it back at its next gap
/// (at most [`crate::app::direct::GAP_WAIT`] after the next message); a dropped status change is only not
/// pushed (`GET /v1/messages/{id}` has it).
pub const MAX_WAITING_HANDOVERS: usize = 65_536;

/// Hand-overs published with one script call at most.
pub const HANDOVER_BATCH: usize = 2048;

/// Publishes a batch of hand-overs: looks up each user's nodes (once per user) and sends every other node
/// one message holding its hand-overs, one wire JSON per line, in the order given.
///
/// The publishes are not propagated to the append-only file or replicas (`set_repl`): nodes subscribe on the
/// master, and a hand-over is worth nothing after a restart or failover (devices read their inboxes then).
/// Propagated, they were most of the AOF: ~1.4 KB per message, and an AOF rewrite every ~50,000 messages.
///
/// ARGV: this node, the user-hash key prefix, the channel prefix, then user/payload pairs. Replies the
/// number of channel messages published.
const HANDOVER_LUA: &str = r#"
redis.set_repl(redis.REPL_NONE)
local me, users, channels = ARGV[1], ARGV[2], ARGV[3]
local nodes_of, order, lines = {}, {}, {}
for i = 4, #ARGV, 2 do
  local user = ARGV[i]
  local nodes = nodes_of[user]
  if not nodes then
    nodes = redis.call('HKEYS', users .. user)
    nodes_of[user] = nodes
  end
  for _, node in ipairs(nodes) do
    if node ~= me then
      if not lines[node] then
        lines[node] = {}
        order[#order + 1] = node
      end
      local list = lines[node]
      list[#list + 1] = ARGV[i + 1]
    end
  end
end
for _, node in ipairs(order) do
  redis.call('PUBLISH', channels .. node, table.concat(lines[node], '\n'))
end
return #order
"#;

impl RedisFanout {
    /// The fan-out of node `node`; bind it to its [`Direct`] with [`RedisFanout::bind`].
    pub fn new(redis: Arc<Redis>, keys: Keys, node: &str) -> Arc<RedisFanout> {
        let (presence, rx) = mpsc::unbounded_channel();
        let (handovers, waiting) = mpsc::channel(MAX_WAITING_HANDOVERS);
        let lost = Lost::default();
        let fanout = Arc::new(RedisFanout {
            lost: lost.clone(),
            redis: redis.clone(),
            keys: keys.clone(),
            node: node.to_owned(),
            direct: OnceLock::new(),
            presence,
            handovers,
        });
        tokio::spawn(presence_writer(
            redis.clone(),
            keys.clone(),
            node.to_owned(),
            rx,
        ));
        tokio::spawn(handover_writer(redis, keys, node.to_owned(), waiting, lost));
        fanout
    }

    /// Binds the fan-out to the message layer it hands messages to.
    pub fn bind(&self, direct: &Arc<Direct>) {
        let _ = self.direct.set(Arc::downgrade(direct));
    }

    /// The channel this node takes hand-overs on.
    pub fn channel(&self) -> String {
        self.keys.direct_channel(&self.node)
    }

    fn direct(&self) -> Option<Arc<Direct>> {
        self.direct.get().and_then(Weak::upgrade)
    }

    /// Hand-overs from another node (a message of this node's channel: one wire JSON per line).
    pub fn on_channel_message(&self, payload: &[u8]) {
        let Some(direct) = self.direct() else {
            return;
        };
        for line in payload.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            match serde_json::from_slice::<Wire>(line) {
                Ok(Wire::Message(message)) => match message.into_message() {
                    Some(message) => direct.offer(&message),
                    None => tracing::warn!("undecodable direct message hand-over ignored"),
                },
                Ok(Wire::Status { user, change }) => match change.into_change() {
                    Some(change) => direct.status_to_devices(&user, &change),
                    None => tracing::warn!("undecodable status hand-over ignored"),
                },
                Ok(Wire::CatchUp { user }) => direct.catch_up_user(&user),
                Err(error) => tracing::warn!(%error, "malformed direct hand-over ignored"),
            }
        }
    }

    /// The node's pub/sub connection is (again) live: republish where this node's users are and let every
    /// local device read back what it may have missed.
    pub fn on_resubscribed(&self) {
        let Some(direct) = self.direct() else {
            return;
        };
        let _ = self
            .presence
            .send(PresenceUpdate::All(direct.local_users()));
        direct.catch_up_all();
    }

    /// Hands `wire` to every other node holding `user`'s devices (this node is served directly), behind every
    /// hand-over made before it.
    fn hand_over(&self, user: &str, wire: Wire) {
        let message = !matches!(wire, Wire::Status { .. });
        let Ok(payload) = serde_json::to_string(&wire) else {
            return;
        };
        let handover = Handover {
            user: user.to_owned(),
            payload,
            message,
        };
        if self.handovers.try_send(handover).is_err() {
            metrics::counter!("tidings_message_handovers_dropped_total").increment(1);
            if message {
                lose(&self.lost, user);
            }
        }
    }
}

/// Publishes hand-overs in the order they were made, a batch of what waits per script call; users whose
/// message hand-overs were lost get a catch-up behind them.
async fn handover_writer(
    redis: Arc<Redis>,
    keys: Keys,
    node: String,
    mut waiting: mpsc::Receiver<Handover>,
    lost: Lost,
) {
    let script = redis::Script::new(HANDOVER_LUA);
    let users = keys.direct_user("");
    let channels = keys.direct_channel("");
    let mut batch = Vec::with_capacity(HANDOVER_BATCH);
    loop {
        let retry = !lost.lock().is_empty();
        tokio::select! {
            taken = waiting.recv_many(&mut batch, HANDOVER_BATCH) => {
                if taken == 0 {
                    return;
                }
            }
            () = tokio::time::sleep(LOST_RETRY), if retry => {}
        }
        for user in std::mem::take(&mut *lost.lock()) {
            let Ok(payload) = serde_json::to_string(&Wire::CatchUp { user: user.clone() }) else {
                continue;
            };
            batch.push(Handover {
                user,
                payload,
                message: true,
            });
        }
        if batch.is_empty() {
            continue;
        }
        let mut invocation = script.prepare_invoke();
        invocation.arg(&node).arg(&users).arg(&channels);
        for handover in &batch {
            invocation.arg(&handover.user).arg(&handover.payload);
        }
        let started = std::time::Instant::now();
        metrics::histogram!("tidings_message_handover_batch").record(batch.len() as f64);
        let published = redis.run_script::<i64>(&invocation).await;
        metrics::histogram!("tidings_message_handover_seconds")
            .record(started.elapsed().as_secs_f64());
        match published {
            Ok(_) => {
                metrics::counter!("tidings_message_handovers_total").increment(batch.len() as u64)
            }
            Err(error) => {
                tracing::warn!(%error, "could not hand messages over to other nodes");
                for handover in batch.iter().filter(|h| h.message) {
                    lose(&lost, &handover.user);
                }
                tokio::time::sleep(LOST_RETRY).await;
            }
        }
        batch.clear();
    }
}

/// Writes presence updates in order; a failed write waits for the next reconnection's full republish.
async fn presence_writer(
    redis: Arc<Redis>,
    keys: Keys,
    node: String,
    mut updates: mpsc::UnboundedReceiver<PresenceUpdate>,
) {
    while let Some(update) = updates.recv().await {
        let pairs = match update {
            PresenceUpdate::Devices(user, devices) => vec![(user, devices)],
            PresenceUpdate::All(all) => all,
        };
        for (user, devices) in pairs {
            let key = keys.direct_user(&user);
            let mut cmd = if devices == 0 {
                let mut cmd = redis::cmd("HDEL");
                cmd.arg(&key).arg(&node);
                cmd
            } else {
                let mut cmd = redis::cmd("HSET");
                cmd.arg(&key).arg(&node).arg(devices);
                cmd
            };
            if let Err(error) = redis.run::<i64>(&cmd).await {
                tracing::warn!(%error, "could not record where a user is connected");
            }
            cmd = redis::cmd("EXPIRE");
            // Outlives any node's registry entry; live nodes rewrite it as devices come and go.
            cmd.arg(&key).arg(PRESENCE_TTL_SECS);
            let _ = redis.run::<i64>(&cmd).await;
        }
    }
}

/// Lifetime of a user's presence hash after its last change.
const PRESENCE_TTL_SECS: u64 = 24 * 3600;

impl Fanout for RedisFanout {
    fn message(&self, message: Message) {
        if let Some(direct) = self.direct() {
            direct.offer(&message);
        }
        let to = message.to.clone();
        self.hand_over(&to, Wire::Message((&message).into()));
    }

    fn status(&self, user: &str, change: Change) {
        if let Some(direct) = self.direct() {
            direct.status_to_devices(user, &change);
        }
        self.hand_over(
            user,
            Wire::Status {
                user: user.to_owned(),
                change: (&change).into(),
            },
        );
    }

    fn devices_changed(&self, user: &str, devices_here: usize) {
        let _ = self
            .presence
            .send(PresenceUpdate::Devices(user.to_owned(), devices_here));
    }

    fn presence<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<UserPresence, StoreError>> {
        async move {
            let unavailable = |e: redis::RedisError| StoreError::Unavailable(e.to_string());
            let nodes: HashMap<String, usize> = self
                .redis
                .run(redis::cmd("HGETALL").arg(self.keys.direct_user(user)))
                .await
                .map_err(unavailable)?;
            let mut devices = 0;
            for (node, count) in nodes {
                // A node that died without cleaning up: its registry entry expired.
                let alive: bool = self
                    .redis
                    .run(redis::cmd("EXISTS").arg(self.keys.node(&node)))
                    .await
                    .map_err(unavailable)?;
                if alive {
                    devices += count;
                } else {
                    let mut cmd = redis::cmd("HDEL");
                    cmd.arg(self.keys.direct_user(user)).arg(&node);
                    let _ = self.redis.run::<i64>(&cmd).await;
                }
            }
            Ok(UserPresence { devices })
        }
        .boxed()
    }
}
