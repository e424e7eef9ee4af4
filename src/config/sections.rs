//! The `[section]` structs of the config file, each with its defaults and typed accessors.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::secrets::redacted;
use crate::auth::RoomPattern;

/// `[auth]`: how client tokens are verified. Exactly one of `jwt_secret` / `jwt_public_key` may be set.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 shared secret; empty when unset.
    pub jwt_secret: String,
    /// Path to a PEM public key (RS256 or ES256, told from the key); empty when unset.
    pub jwt_public_key: String,
    /// Clock skew tolerated on `exp` / `nbf`, in seconds.
    pub leeway_secs: u64,
    /// Refuse tokens without `exp` (a token that never expires cannot be revoked by time).
    pub require_exp: bool,
    /// How long before its token's `exp` a connected client gets the `token:expiring` event, in seconds.
    pub expiry_notice_secs: u64,
    /// Accept an HS256 secret shorter than [`MIN_JWT_SECRET_BYTES`] and API keys shorter than
    /// [`MIN_API_KEY_BYTES`] (development only; `--insecure-dev-secrets`, `TIDINGS_INSECURE_DEV_SECRETS`).
    pub insecure_dev_secrets: bool,
}

/// Shortest accepted HS256 secret, in bytes (the key size of HMAC-SHA256), unless
/// `auth.insecure_dev_secrets` is set.
pub const MIN_JWT_SECRET_BYTES: usize = 32;
/// Shortest accepted API key, in bytes, unless `auth.insecure_dev_secrets` is set.
pub const MIN_API_KEY_BYTES: usize = 16;

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: String::new(),
            jwt_public_key: String::new(),
            leeway_secs: 5,
            require_exp: true,
            expiry_notice_secs: 60,
            insecure_dev_secrets: false,
        }
    }
}

impl AuthConfig {
    /// The HS256 secret, if one is set.
    pub fn secret(&self) -> Option<&str> {
        Some(self.jwt_secret.as_str()).filter(|s| !s.is_empty())
    }

    /// The public key path, if one is set.
    pub fn public_key_path(&self) -> Option<&Path> {
        Some(self.jwt_public_key.as_str())
            .filter(|s| !s.is_empty())
            .map(Path::new)
    }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A config dump in a log must not leak the secret.
        f.debug_struct("AuthConfig")
            .field("jwt_secret", &redacted(&self.jwt_secret))
            .field("jwt_public_key", &self.jwt_public_key)
            .field("leeway_secs", &self.leeway_secs)
            .field("require_exp", &self.require_exp)
            .field("expiry_notice_secs", &self.expiry_notice_secs)
            .field("insecure_dev_secrets", &self.insecure_dev_secrets)
            .finish()
    }
}

/// `[api]`: the HTTP API.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Accepted API keys (`Authorization: Bearer <key>`).
    pub keys: Vec<String>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// How long an `Idempotency-Key` of `POST /v1/publish` is remembered, in seconds: a publish repeated with the
    /// same key within that time is answered without publishing again.
    pub idempotency_ttl_secs: u64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            max_body_bytes: 1024 * 1024,
            idempotency_ttl_secs: 600,
        }
    }
}

impl fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<&str> = self.keys.iter().map(|k| redacted(k)).collect();
        f.debug_struct("ApiConfig")
            .field("keys", &keys)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("idempotency_ttl_secs", &self.idempotency_ttl_secs)
            .finish()
    }
}

/// `[engine]`: Engine.IO settings announced in the handshake and enforced on every connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Interval between server pings, in milliseconds.
    pub ping_interval_ms: u64,
    /// Time the client has to answer a ping, in milliseconds.
    pub ping_timeout_ms: u64,
    /// Largest accepted Engine.IO payload, in bytes (announced as `maxPayload`).
    pub max_payload: u64,
    /// Time the client has to send its Socket.IO CONNECT, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Origins allowed for polling requests (`*` = any); empty disables CORS headers.
    pub cors_origins: Vec<String>,
    /// Answer allowed origins with `Access-Control-Allow-Credentials: true` (browser clients created with
    /// `withCredentials: true`, which send cookies). Only with an explicit origin list: never with `*`.
    pub cors_credentials: bool,
    /// Shortest time between two writes to a websocket that keeps receiving events, in milliseconds: events
    /// arriving closer together leave in one write. A socket quiet for this long is written at once; 0 = never wait.
    pub write_interval_ms: u64,
    /// Longest the write interval may grow to while this node's writers run late (more busy sockets than
    /// time to write them), in milliseconds: they are then written on a steady, wider cadence, in fewer and
    /// larger writes, which leaves CPU to whatever shares the machine. 0 (or not above `write_interval_ms`):
    /// the interval never changes.
    pub write_interval_max_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            ping_interval_ms: 25_000,
            ping_timeout_ms: 20_000,
            max_payload: 1_000_000,
            connect_timeout_ms: 10_000,
            cors_origins: vec!["*".to_owned()],
            cors_credentials: false,
            write_interval_ms: 20,
            write_interval_max_ms: 0,
        }
    }
}

impl EngineConfig {
    /// `ping_interval_ms` as a duration.
    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms)
    }

    /// `ping_timeout_ms` as a duration.
    pub fn ping_timeout(&self) -> Duration {
        Duration::from_millis(self.ping_timeout_ms)
    }

    /// `connect_timeout_ms` as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// `write_interval_ms` as a duration.
    pub fn write_interval(&self) -> Duration {
        Duration::from_millis(self.write_interval_ms)
    }

    /// `write_interval_max_ms` as a duration.
    pub fn write_interval_max(&self) -> Duration {
        Duration::from_millis(self.write_interval_max_ms)
    }
}

/// `[limits]`: bounds that keep one client or a crowd from exhausting the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Concurrent connections accepted by this node.
    pub max_connections: usize,
    /// Messages queued per connection before it is disconnected as a slow consumer.
    pub outbox_max_messages: usize,
    /// Bytes queued per connection before it is disconnected as a slow consumer.
    pub outbox_max_bytes: usize,
    /// Sustained incoming Socket.IO packets per second per connection; bursts up to twice that.
    pub client_packets_per_sec: u32,
    /// Deepest nesting of arrays and objects accepted in published `data` (client, HTTP and Redis ingest).
    pub max_json_depth: usize,
    /// Most rooms one socket may be in, its personal and broadcast rooms included.
    pub max_rooms_per_socket: usize,
    /// Sessions closed for misbehaving (protocol errors, floods, oversized or invalid data) are logged one by
    /// one at debug level only; at most one warning per this many seconds sums them up by reason.
    pub misbehaviour_log_interval_secs: u64,
    /// Most concurrent sessions per client address (IPv6: per /64); past it a handshake gets 429. 0 = no limit.
    pub max_sessions_per_ip: u32,
    /// Sustained handshakes (new sessions) per second per client address (IPv6: per /64); past it a handshake
    /// gets 429. 0 = no limit.
    pub handshakes_per_sec_per_ip: u32,
    /// Handshakes a client address may make at once before `handshakes_per_sec_per_ip` applies.
    pub handshake_burst_per_ip: u32,
    /// Proxies (addresses or CIDR blocks) whose `X-Forwarded-For` / `Forwarded` headers name the client address
    /// the per-address limits count; empty = the socket peer is always the client.
    pub trusted_proxies: Vec<String>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: 100_000,
            outbox_max_messages: 4096,
            outbox_max_bytes: 8 * 1024 * 1024,
            client_packets_per_sec: 50,
            max_json_depth: 64,
            max_rooms_per_socket: 1000,
            misbehaviour_log_interval_secs: 10,
            max_sessions_per_ip: 1000,
            handshakes_per_sec_per_ip: 50,
            handshake_burst_per_ip: 200,
            trusted_proxies: Vec::new(),
        }
    }
}

impl LimitsConfig {
    /// Burst size of the per-connection packet rate limit: twice the sustained rate.
    pub fn client_packet_burst(&self) -> u32 {
        self.client_packets_per_sec.saturating_mul(2)
    }

    /// `misbehaviour_log_interval_secs` as a duration.
    pub fn misbehaviour_log_interval(&self) -> Duration {
        Duration::from_secs(self.misbehaviour_log_interval_secs)
    }
}

/// `[admin]`: where the operator endpoints `/metrics` and `/stats` are served, whether they need a key, and the
/// read-only admin keys.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// `IP:port` of a separate listener serving `/metrics`, `/stats` and `/healthz`; the main port then answers
    /// 404 for `/metrics` and `/stats`. Empty = served on the main port.
    pub listen: String,
    /// `/metrics` and `/stats` need `Authorization: Bearer <api key>`, wherever they are served.
    pub require_api_key: bool,
    /// Admin keys: accepted for the operator's reads (`/metrics`, `/stats`, the dashboard's data) but not for
    /// publishing or anything else under `/v1`. API keys are accepted there too.
    pub keys: Vec<String>,
}

impl fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<&str> = self.keys.iter().map(|k| redacted(k)).collect();
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("require_api_key", &self.require_api_key)
            .field("keys", &keys)
            .finish()
    }
}

impl AdminConfig {
    /// The separate admin address, when one is set (validated by [`Config::validate`](super::Config::validate)).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen.parse().ok()
    }
}

/// `[[namespaces]]`: one namespace besides `/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceConfig {
    /// Namespace name, starting with `/`.
    pub name: String,
    /// Connection state recovery for this namespace; unset means the same as `[recovery].enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<bool>,
}

/// `[[rooms]]`: what clients may do in the rooms matching `pattern`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomPolicy {
    /// Exact room name or trailing-`*` glob.
    pub pattern: RoomPattern,
    /// Members of a matching room may publish to it (besides what their token's `publish` claim allows).
    #[serde(default)]
    pub client_publish: bool,
    /// Events of matching rooms are ephemeral: no offset, no history, no replay after a reconnect; a slow
    /// member drops them instead of being disconnected (positions, typing indicators, cursors).
    #[serde(default)]
    pub ephemeral: bool,
    /// Conflation interval in milliseconds (0: off; makes the room ephemeral): within each interval a member
    /// gets at most the latest event per `conflate_key`.
    #[serde(default)]
    pub conflate_ms: u64,
    /// The top-level field of the event data whose value is the conflation key (e.g. `worker_id`); events
    /// without it are not conflated.
    #[serde(default)]
    pub conflate_key: String,
    /// Client publishes per second one connection may make into matching rooms (0: only the connection's
    /// packet limit, `limits.client_packets_per_sec`, applies).
    #[serde(default)]
    pub client_publish_per_sec: u32,
    /// Client publishes a connection may save up for a burst into matching rooms (0: the per-second rate).
    #[serde(default)]
    pub client_publish_burst: u32,
    /// Members of matching rooms get `presence:join` / `presence:leave` when a user's first connection joins
    /// and their last one leaves (coalesced per room and second).
    #[serde(default)]
    pub presence_events: bool,
}

impl RoomPolicy {
    /// A policy that only says whether members may publish.
    pub fn new(pattern: RoomPattern, client_publish: bool) -> RoomPolicy {
        RoomPolicy {
            pattern,
            client_publish,
            ephemeral: false,
            conflate_ms: 0,
            conflate_key: String::new(),
            client_publish_per_sec: 0,
            client_publish_burst: 0,
            presence_events: false,
        }
    }
}

/// Longest conflation interval a room policy may set, in milliseconds.
pub const MAX_CONFLATE_MS: u64 = 60_000;

/// `[history]`: how much of each room's recent events is kept for recovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// Events kept per room.
    pub max_events: usize,
    /// Age after which an event leaves the history, in seconds.
    pub max_age_secs: u64,
    /// Cap on the bytes of history over all rooms. An event held by several rooms counts its payload once
    /// plus a small slot per room.
    pub max_bytes: u64,
    /// Byte budget of one history reply (`history` client event, `GET /v1/rooms/{room}/history`): events are
    /// added while they fit, then the reply says `more` and `truncated` and the reader pages on. The first
    /// event of a page always goes in, so one event larger than the budget is still readable.
    pub max_reply_bytes: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            max_events: 1000,
            max_age_secs: 300,
            max_bytes: 256 * 1024 * 1024,
            max_reply_bytes: 1024 * 1024,
        }
    }
}

impl HistoryConfig {
    /// `max_age_secs` as a duration.
    pub fn max_age(&self) -> Duration {
        Duration::from_secs(self.max_age_secs)
    }
}

/// `[recovery]`: Socket.IO connection state recovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecoveryConfig {
    /// Recovery on `/`, and the default for namespaces without their own flag.
    pub enabled: bool,
    /// How long a disconnected session can still be recovered, in seconds.
    pub max_disconnection_secs: u64,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_disconnection_secs: 120,
        }
    }
}

impl RecoveryConfig {
    /// `max_disconnection_secs` as a duration.
    pub fn max_disconnection(&self) -> Duration {
        Duration::from_secs(self.max_disconnection_secs)
    }
}

/// `[shutdown]`: the drain on SIGTERM / ctrl-c. Readiness (`/readyz`) goes false at once; after `unready_secs`
/// new clients are refused (`503`, so a balancer tries another node) and the open ones are closed, spread over
/// `drain_window_secs`, so that they reconnect to the other nodes (and recover) without a storm; the node exits
/// when the last one is gone or at `drain_secs`, whichever comes first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Longest time from the signal to the exit, in seconds; clients still open then are closed at once.
    pub drain_secs: u64,
    /// Time over which the open clients are closed (evenly), in seconds; 0 closes them all at once.
    pub drain_window_secs: u64,
    /// Time between readiness going false and the first refusal, in seconds: what a load balancer needs to
    /// stop sending new clients (e.g. a Kubernetes Service's endpoints update). Clients are still served then.
    pub unready_secs: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_secs: 20,
            drain_window_secs: 5,
            unready_secs: 0,
        }
    }
}

impl ShutdownConfig {
    /// `drain_secs` as a duration.
    pub fn drain(&self) -> Duration {
        Duration::from_secs(self.drain_secs)
    }

    /// The drain these settings describe.
    pub fn plan(&self) -> crate::drain::DrainPlan {
        crate::drain::DrainPlan {
            unready: Duration::from_secs(self.unready_secs),
            window: Duration::from_secs(self.drain_window_secs),
            deadline: self.drain(),
        }
    }
}

/// `[redis]`: the Redis backend for clusters of nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://` / `rediss://` / `unix://` / `redis+sentinel://` / `redis+cluster://` URL; empty runs the node
    /// alone, in memory.
    pub url: String,
    /// Prefix of every Redis key and channel, so several deployments can share one Redis.
    pub key_prefix: String,
    /// Replicas that must have a direct message (or status change) before it is acknowledged (`WAIT`);
    /// 0 acknowledges once the master ran it.
    pub wait_replicas: u32,
    /// Longest wait for those replicas, in milliseconds; past it the write is answered `unavailable`.
    pub wait_timeout_ms: u64,
    /// Redis groups (each a `redis://` URL or a Sentinel group, like `url`) the rooms' events are spread over
    /// by a consistent hash of the room: each numbers, keeps and publishes its own rooms' events, so the
    /// cluster's publish rate grows with them. Empty: every event goes through `url`. Records, presence, the
    /// registry and direct messages stay on `url`. Every node must list the same groups in the same order.
    pub partitions: Vec<String>,
    /// With a Redis Cluster `url` (`redis+cluster://…`): how many partitions the rooms' events are spread over,
    /// each on the hash slot of its own tag `{<key_prefix>:p<i>}` (so on whichever master serves it); 0 keeps
    /// every event on the slot of `{<key_prefix>}`, with the records.
    pub cluster_partitions: usize,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            key_prefix: "tidings".to_owned(),
            wait_replicas: 0,
            wait_timeout_ms: 1000,
            partitions: Vec::new(),
            cluster_partitions: 0,
        }
    }
}

impl RedisConfig {
    /// The URL, if Redis is configured.
    pub fn url(&self) -> Option<&str> {
        Some(self.url.as_str()).filter(|s| !s.is_empty())
    }
}

/// `[kafka]`: topics the node publishes from, and the topics it produces to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// `[[kafka.ingest]]`: consumers whose records are published like `POST /v1/publish` bodies.
    pub ingest: Vec<KafkaIngestConfig>,
    /// `[kafka.egress]`: client publishes and direct-message status changes produced to topics.
    pub egress: KafkaEgressConfig,
}

/// `[kafka.egress]`: what the node produces to Kafka. Off while `brokers` is empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaEgressConfig {
    /// Bootstrap brokers, `host:port[,host:port…]`; empty: no egress.
    pub brokers: String,
    /// Topic of client publishes (the `publish` client event), keyed by room; empty: none.
    pub publishes_topic: String,
    /// Patterns of the rooms whose client publishes are produced.
    pub publish_rooms: Vec<String>,
    /// Patterns of the rooms whose client publishes are produced *before* they are published to the room:
    /// the client's `ok` then means Kafka acknowledged the record, and nothing reaches the room that Kafka
    /// did not take. Produced even when not in `publish_rooms`.
    pub ack_rooms: Vec<String>,
    /// Topic of direct-message status changes (accepted, delivered per device, read), keyed by the sender
    /// (the recipient for a message without one); empty: none.
    pub statuses_topic: String,
    /// Records waiting for Kafka at most (in memory, while it is slow or away); past it new records are
    /// dropped and counted (`tidings_kafka_egress_total{result="dropped"}`).
    pub max_queued: usize,
    /// How long a record may wait for Kafka before it is dropped and counted, in milliseconds.
    pub delivery_timeout_ms: u64,
    /// Longest a client's publish to an `ack_rooms` room waits for Kafka before it is answered `unavailable`
    /// (the event is then not published to the room), in milliseconds.
    pub ack_timeout_ms: u64,
    /// librdkafka properties of the producer, as they are (see `KafkaIngestConfig::properties`).
    pub properties: std::collections::BTreeMap<String, String>,
}

impl Default for KafkaEgressConfig {
    fn default() -> Self {
        Self {
            brokers: String::new(),
            publishes_topic: String::new(),
            publish_rooms: vec!["*".to_owned()],
            ack_rooms: Vec::new(),
            statuses_topic: String::new(),
            max_queued: 100_000,
            delivery_timeout_ms: 300_000,
            ack_timeout_ms: 5_000,
            properties: std::collections::BTreeMap::new(),
        }
    }
}

impl KafkaEgressConfig {
    /// Whether the node produces anything.
    pub fn enabled(&self) -> bool {
        !self.brokers.trim().is_empty()
    }
}

/// One `[[kafka.ingest]]` entry: a consumer group on some topics of one cluster of brokers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaIngestConfig {
    /// Bootstrap brokers, `host:port[,host:port…]`.
    pub brokers: String,
    /// Topics read.
    pub topics: Vec<String>,
    /// Consumer group: every node of a cluster uses the same one, so each record is published once.
    pub group: String,
    /// Header whose value is the event name when the record's JSON has no `event`.
    pub event_header: String,
    /// Topic a record that cannot be published is copied to (with a `tidings-error` header); empty = none.
    pub dead_letter_topic: String,
    /// librdkafka properties for this entry's clients, as they are (e.g. `"security.protocol" = "SASL_SSL"`,
    /// `"sasl.mechanisms"`, `"ssl.ca.location"`, `"fetch.wait.max.ms"`); the ones tidings' guarantees rest on
    /// (see [`KAFKA_RESERVED`]) cannot be set.
    pub properties: std::collections::BTreeMap<String, String>,
}

/// librdkafka properties a `properties` table may not set: tidings sets them, and its guarantees (offsets
/// committed only after the event was accepted; one group per cluster) rest on them.
pub const KAFKA_RESERVED: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.idempotence",
    "acks",
    "request.required.acks",
];

impl Default for KafkaIngestConfig {
    fn default() -> Self {
        Self {
            brokers: String::new(),
            topics: Vec::new(),
            group: "tidings".to_owned(),
            event_header: "event".to_owned(),
            dead_letter_topic: String::new(),
            properties: std::collections::BTreeMap::new(),
        }
    }
}

/// `[storage]`: where the embedded mode keeps its data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Directory of the embedded store (messages, statuses, inbox cursors, room history, recovery sessions);
    /// empty keeps everything in memory, lost when the process ends. Ignored in cluster mode (Redis is the
    /// store).
    pub data_dir: String,
}

impl StorageConfig {
    /// The data directory, if one is set.
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        Some(self.data_dir.as_str())
            .filter(|s| !s.is_empty())
            .map(std::path::Path::new)
    }
}

/// `[messages]`: direct messages between users.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MessagesConfig {
    /// The namespace on which devices receive direct messages and statuses, and may send them.
    pub namespace: String,
    /// Inbox lifetime of a message sent without `ttl`, in seconds.
    pub default_ttl_secs: u64,
    /// Longest `ttl` a sender may ask for, in seconds.
    pub max_ttl_secs: u64,
    /// Most messages one user's inbox holds; past it the oldest delivered one leaves, and if none was
    /// delivered a new message is refused (`inbox_full`).
    pub inbox_max_messages: usize,
    /// How long a message's status and receipts stay readable after it left the inbox, in seconds.
    pub retention_secs: u64,
    /// Most messages written to one device and not yet acknowledged; the rest wait in the inbox until the
    /// device acknowledges.
    pub max_unacked_per_device: usize,
    /// Most `dm` events of one connection waiting for the store; past it a `dm` is refused with `busy`.
    pub max_queued_sends_per_connection: usize,
    /// Most message records the in-memory store holds (embedded mode without a data directory).
    pub max_memory_records: usize,
    /// Longest `device` name in a CONNECT auth payload, in bytes.
    pub max_device_bytes: usize,
    /// `http://` URL the backend's webhook events are posted to (status changes, offline users); empty: none.
    pub webhook_url: String,
    /// Shared secret of the webhook signature (at least 16 bytes).
    pub webhook_secret: String,
    /// How long a user may be offline with undelivered messages before the webhook hears `user.offline`.
    pub webhook_offline_after_secs: u64,
    /// Time one webhook attempt may take, in milliseconds.
    pub webhook_timeout_ms: u64,
    /// Attempts per webhook event before it is given up.
    pub webhook_max_attempts: u32,
    /// Webhook events waiting at most (while the receiver is down); past it new ones are dropped.
    pub webhook_queue: usize,
}

impl Default for MessagesConfig {
    fn default() -> Self {
        Self {
            namespace: "/".to_owned(),
            default_ttl_secs: 7 * 24 * 3600,
            max_ttl_secs: 30 * 24 * 3600,
            inbox_max_messages: 1000,
            retention_secs: 24 * 3600,
            max_unacked_per_device: 256,
            max_queued_sends_per_connection: 1024,
            max_memory_records: 1_000_000,
            max_device_bytes: 64,
            webhook_url: String::new(),
            webhook_secret: String::new(),
            webhook_offline_after_secs: 30,
            webhook_timeout_ms: 5000,
            webhook_max_attempts: 12,
            webhook_queue: 10_000,
        }
    }
}

impl fmt::Debug for MessagesConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessagesConfig")
            .field("namespace", &self.namespace)
            .field("default_ttl_secs", &self.default_ttl_secs)
            .field("max_ttl_secs", &self.max_ttl_secs)
            .field("inbox_max_messages", &self.inbox_max_messages)
            .field("retention_secs", &self.retention_secs)
            .field("max_unacked_per_device", &self.max_unacked_per_device)
            .field(
                "max_queued_sends_per_connection",
                &self.max_queued_sends_per_connection,
            )
            .field("max_memory_records", &self.max_memory_records)
            .field("max_device_bytes", &self.max_device_bytes)
            .field("webhook_url", &self.webhook_url)
            .field("webhook_secret", &redacted(&self.webhook_secret))
            .field(
                "webhook_offline_after_secs",
                &self.webhook_offline_after_secs,
            )
            .field("webhook_timeout_ms", &self.webhook_timeout_ms)
            .field("webhook_max_attempts", &self.webhook_max_attempts)
            .field("webhook_queue", &self.webhook_queue)
            .finish()
    }
}

impl MessagesConfig {
    /// The webhook's settings, when a URL is set.
    pub fn webhook(&self) -> Option<(crate::app::direct::webhook::WebhookConfig, Duration)> {
        (!self.webhook_url.is_empty()).then(|| {
            (
                crate::app::direct::webhook::WebhookConfig {
                    url: self.webhook_url.clone(),
                    secret: self.webhook_secret.clone(),
                    timeout: Duration::from_millis(self.webhook_timeout_ms),
                    max_attempts: self.webhook_max_attempts,
                    max_backoff: Duration::from_secs(60),
                    queue: self.webhook_queue,
                },
                Duration::from_secs(self.webhook_offline_after_secs),
            )
        })
    }

    /// The bounds every message store applies.
    pub fn inbox_limits(&self) -> crate::messages::InboxLimits {
        crate::messages::InboxLimits {
            max_messages: self.inbox_max_messages,
            retention_ms: self.retention_secs.saturating_mul(1000),
            max_records: self.max_memory_records,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use std::time::Duration;

    #[test]
    fn accessors() {
        let c = Config::default();
        assert_eq!(c.engine.ping_interval(), Duration::from_secs(25));
        assert_eq!(c.engine.ping_timeout(), Duration::from_secs(20));
        assert_eq!(c.engine.connect_timeout(), Duration::from_secs(10));
        assert_eq!(c.history.max_age(), Duration::from_secs(300));
        assert_eq!(c.recovery.max_disconnection(), Duration::from_secs(120));
        assert_eq!(c.shutdown.drain(), Duration::from_secs(20));
        assert_eq!(c.limits.client_packet_burst(), 100);
        assert!(c.worker_threads() >= 1);
        assert_eq!(
            Config {
                workers: 3,
                ..Config::default()
            }
            .worker_threads(),
            3
        );
        assert_eq!(c.redis.url(), None);
        assert_eq!(c.auth.secret(), None);
        assert_eq!(c.auth.public_key_path(), None);
        assert_eq!(
            c.limits.misbehaviour_log_interval(),
            Duration::from_secs(10)
        );
        assert_eq!(c.admin.listen_addr(), None);
    }

    #[test]
    fn debug_redacts_secrets() {
        let mut c = Config::default();
        c.api.keys = vec!["k1".into(), "k2".into()];
        c.auth.jwt_secret = "hunter2".into();
        let dump = format!("{c:?}");
        assert!(!dump.contains("hunter2") && !dump.contains("k1"), "{dump}");
        assert!(dump.contains("<redacted>"));
    }
}
