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
}

impl RedisFanout {
    /// The fan-out of node `node`; bind it to its [`Direct`] with [`RedisFanout::bind`].
    pub fn new(redis: Arc<Redis>, keys: Keys, node: &str) -> Arc<RedisFanout> {
        let (presence, rx) = mpsc::unbounded_channel();
        let fanout = Arc::new(RedisFanout {
            redis: redis.clone(),
            keys: keys.clone(),
            node: node.to_owned(),
            direct: OnceLock::new(),
            presence,
        });
        tokio::spawn(presence_writer(redis, keys, node.to_owned(), rx));
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

    /// A hand-over from another node (a message of this node's channel).
    pub fn on_channel_message(&self, payload: &[u8]) {
        let Some(direct) = self.direct() else {
            return;
        };
        match serde_json::from_slice::<Wire>(payload) {
            Ok(Wire::Message(message)) => match message.into_message() {
                Some(message) => direct.offer(&message),
                None => tracing::warn!("undecodable direct message hand-over ignored"),
            },
            Ok(Wire::Status { user, change }) => match change.into_change() {
                Some(change) => direct.status_to_devices(&user, &change),
                None => tracing::warn!("undecodable status hand-over ignored"),
            },
            Err(error) => tracing::warn!(%error, "malformed direct hand-over ignored"),
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

    /// Hands `wire` to every other node holding `user`'s devices (this node is served directly).
    fn hand_over(&self, user: &str, wire: Wire) {
        let redis = self.redis.clone();
        let keys = self.keys.clone();
        let node = self.node.clone();
        let user = user.to_owned();
        tokio::spawn(async move {
            let Ok(payload) = serde_json::to_string(&wire) else {
                return;
            };
            let nodes: Result<Vec<String>, _> = redis
                .run(redis::cmd("HKEYS").arg(keys.direct_user(&user)))
                .await;
            let nodes = match nodes {
                Ok(nodes) => nodes,
                Err(error) => {
                    // The inbox still holds messages; devices read them back after the reconnection.
                    tracing::warn!(%error, "could not look up a user's nodes");
                    return;
                }
            };
            for other in nodes.into_iter().filter(|n| *n != node) {
                let mut publish = redis::cmd("PUBLISH");
                publish.arg(keys.direct_channel(&other)).arg(&payload);
                if let Err(error) = redis.run::<i64>(&publish).await {
                    tracing::warn!(%error, "could not hand a message over to another node");
                }
            }
            metrics::counter!("tidings_message_handovers_total").increment(1);
        });
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
