//! The commented default config file that `tidings genconfig` prints, kept in step with the defaults by its tests.

/// The commented default configuration printed by `tidings genconfig`; it parses back into
/// [`Config::default`](super::Config::default).
pub const DEFAULT_CONFIG_TOML: &str = r#"# tidings configuration: every option with its default value.
# Precedence: defaults < this file (--config / TIDINGS_CONFIG) < TIDINGS_* environment < command-line flags.
# Every option below can also be set from the environment as TIDINGS__<SECTION>__<KEY> (a TOML value, or plain
# text), e.g. TIDINGS__LIMITS__MAX_CONNECTIONS=5000 or TIDINGS__PUBLIC_URL=http://10.0.0.5:3000.
# Logging is not configured here: TIDINGS_LOG sets the filter (default "info"; e.g. "debug", or
# "info,tidings::cluster=debug"), and logs go to stderr.

# Address to listen on, IP:port or localhost:port (TIDINGS_LISTEN, --listen).
listen = "127.0.0.1:3000"
# Tokio worker threads; 0 = one per CPU core.
workers = 0
# Base URL at which this node is reached directly (cluster mode): other nodes forward requests for this node's
# sessions to it over plain HTTP, so it must be an http:// URL they can reach (not a load balancer in front of
# every node), and /v1/nodes/pick hands it to new clients. https is not supported: terminate TLS in front of the
# nodes. Empty = http://<listen address> (TIDINGS_PUBLIC_URL, --public-url).
public_url = ""

[auth]
# HS256 secret (TIDINGS_JWT_SECRET, --jwt-secret), at least 32 bytes; with neither secret nor key, a random one
# is generated.
jwt_secret = ""
# PEM public key file: RSA = RS256, EC P-256 = ES256 (TIDINGS_JWT_PUBLIC_KEY, --jwt-public-key).
jwt_public_key = ""
# Clock skew tolerated on a token's exp and nbf, in seconds.
leeway_secs = 5
# Refuse tokens without `exp` (`tidings gentoken` always sets one). false = a token without exp never expires.
require_exp = true
# Seconds before a connected client's token expires that it gets the `token:expiring` event, so it can send a
# fresh token with the `refresh` event; at `exp` (+ leeway) a client that did not gets `token:expired` and is
# disconnected.
expiry_notice_secs = 60
# Development only: accept an HS256 secret shorter than 32 bytes and API keys shorter than 16 bytes
# (TIDINGS_INSECURE_DEV_SECRETS=1, --insecure-dev-secrets).
insecure_dev_secrets = false

[api]
# HTTP API keys, sent as "Authorization: Bearer <key>", each at least 16 bytes (TIDINGS_API_KEY, --api-key add
# one; none = one is generated).
keys = []
# Largest accepted HTTP request body, in bytes.
max_body_bytes = 1048576
# How long an Idempotency-Key header of POST /v1/publish is remembered, in seconds: the same key again within it
# is answered {"ok":true,"repeated":true} without publishing twice (retry a publish whose answer was lost).
idempotency_ttl_secs = 600

[admin]
# IP:port of a separate listener for /metrics, /stats and /healthz (e.g. "127.0.0.1:9090", reachable only by the
# operator); the main port then answers 404 for /metrics and /stats. Empty = served on the main port.
listen = ""
# /metrics and /stats need "Authorization: Bearer <api key>", wherever they are served.
require_api_key = false
# Admin keys (each at least 16 bytes): read-only operator access to /metrics, /stats and the dashboard's data
# (/dashboard); they cannot publish. API keys work there too.
keys = []

[engine]
# Interval between server pings, in milliseconds.
ping_interval_ms = 25000
# Time a client has to answer a ping, in milliseconds.
ping_timeout_ms = 20000
# Largest accepted Engine.IO payload, in bytes.
max_payload = 1000000
# Time a new session has to connect a namespace (Socket.IO CONNECT), in milliseconds; a session that has not
# by then is closed, so sessions without a token do not hold a place for long.
connect_timeout_ms = 10000
# Origins allowed to call the Socket.IO endpoint from a browser page ("*" = any, answered with
# Access-Control-Allow-Origin: *); [] sends no CORS headers.
cors_origins = ["*"]
# Allow credentialed requests (clients created with withCredentials: true, which send cookies): listed origins
# get Access-Control-Allow-Credentials: true. Needs an explicit cors_origins list without "*".
cors_credentials = false
# Shortest time between two writes to a websocket that keeps receiving events, in milliseconds: events that
# arrive closer together leave in one write (fewer syscalls under load). A socket quiet this long is written
# at once. 0 = write every event at once.
write_interval_ms = 20
# Longest the write interval may grow to while this node's writers run late (more busy sockets than time to
# write them), in milliseconds: they are then written on a steady, wider cadence, in fewer and larger writes,
# which leaves CPU to whatever shares the machine (see the README's design notes before raising it).
# 0 (or not above write_interval_ms) = the interval never changes.
write_interval_max_ms = 0

[limits]
# Concurrent connections accepted by this node (TIDINGS_MAX_CONNECTIONS, --max-connections).
max_connections = 100000
# Messages queued per connection; a client past this is disconnected as a slow consumer.
outbox_max_messages = 4096
# Bytes queued per connection; a client past this is disconnected as a slow consumer.
outbox_max_bytes = 8388608
# Incoming Socket.IO packets per second per connection (burst = 2x); past it the client is closed as a flood.
client_packets_per_sec = 50
# Deepest nesting of arrays and objects accepted in published `data`, from clients, the HTTP API and Redis
# ingest alike (deeper: refused with a clear error).
max_json_depth = 64
# Most rooms one connection may be in, its personal and broadcast rooms included (a subscribe past it is
# refused with "too many rooms").
max_rooms_per_socket = 1000
# Sessions closed for misbehaving (protocol error, flood, oversized or invalid data) are logged one by one at
# debug level; at most one warning per this many seconds counts them by reason (tidings_sessions_closed_total
# counts every one).
misbehaviour_log_interval_secs = 10
# Per client address (IPv4: the address; IPv6: its /64 prefix). Past either limit a handshake is answered
# 429 and counted in tidings_connections_refused_total{reason="max_sessions_per_ip"|"handshakes_per_sec_per_ip"}.
# The defaults leave room for offices and carrier-grade NAT behind one address while keeping one source far
# from max_connections. 0 = no limit.
# Most concurrent sessions per client address.
max_sessions_per_ip = 1000
# Sustained new sessions (handshakes) per second per client address ...
handshakes_per_sec_per_ip = 50
# ... after a burst of this many.
handshake_burst_per_ip = 200
# Proxies (IPs or CIDR blocks) in front of the node whose X-Forwarded-For (or, without it, Forwarded: for=)
# names the client: the rightmost hop that is not itself a trusted proxy. Empty: the socket peer is the client,
# and forwarding headers are ignored. Example: ["10.0.0.0/8", "fd00::/8"].
trusted_proxies = []

# Extra namespaces besides "/", which always exists (none by default). Example:
# [[namespaces]]
# name = "/chat"
# recovery = true    # default: the value of [recovery].enabled

# Room policies, first matching pattern wins (none by default). Example:
# [[rooms]]
# pattern = "chat:*" # exact room name, or a prefix followed by "*"
# client_publish = true # members of a matching room may publish to it (default false)
# client_publish_per_sec = 0 # publishes a second one connection may make into matching rooms (0: no own limit)
# client_publish_burst = 0 # publishes a connection may save up (0: the per-second rate)
# ephemeral = false # no offset, history or replay; a slow member drops these events instead of disconnecting
# conflate_ms = 0 # conflation interval (0: off; makes the room ephemeral): the latest event per key only
# conflate_key = "" # the top-level data field whose value is the conflation key, e.g. "worker_id"
# presence_events = false # members get presence:join / presence:leave (coalesced per room and second)

[history]
# Events kept per room for recovery.
max_events = 1000
# Age after which an event leaves the history, in seconds.
max_age_secs = 300
# Cap on the bytes of history over all rooms (an event held by several rooms counts its payload once,
# plus 64 bytes per room holding it).
max_bytes = 268435456
# Byte budget of one history reply (client `history` event and GET /v1/rooms/{room}/history). A page
# stops when the next event would not fit and says `more: true, truncated: true`; read on from its last
# offset. The first event of a page always goes in. At least 1024, at most limits.outbox_max_bytes.
max_reply_bytes = 1048576

[recovery]
# Connection state recovery on "/", and the default for namespaces without their own flag.
enabled = true
# How long a disconnected session can still be recovered, in seconds.
max_disconnection_secs = 120

[shutdown]
# On SIGTERM / ctrl-c, /readyz answers 503 at once; after unready_secs new clients are refused (503: a balancer
# tries another node) and the open ones are closed evenly over drain_window_secs, so that they reconnect to the
# other nodes and recover without a storm. The node exits when the last one is gone, or at drain_secs. A second
# signal closes what is left at once.
# Longest time from the signal to the exit, in seconds (at least unready_secs + drain_window_secs).
drain_secs = 20
# Time over which the open clients are closed, in seconds; 0 = all at once.
drain_window_secs = 5
# Time between readiness going false and the first refusal, in seconds (e.g. 5 behind a Kubernetes Service).
unready_secs = 0

[redis]
# Redis URL to run several nodes as a cluster: redis://, rediss://, unix://, redis+sentinel://h1:p1,h2:p2/master or
# redis+cluster://h1:p1,h2:p2 (Redis Cluster); empty = single node, in memory (TIDINGS_REDIS_URL, --redis).
url = ""
# Prefix of every Redis key and channel; one cluster per prefix (TIDINGS_REDIS_KEY_PREFIX, --redis-key-prefix).
key_prefix = "tidings"
# Replicas that must hold a direct message or status change before it is acknowledged (Redis WAIT); 0 = the
# master's reply is enough. See the README on Redis persistence for what makes an acknowledged message durable.
wait_replicas = 0
# Longest wait for those replicas, in milliseconds (at most 2500); past it the sender gets "unavailable" and may
# retry with the same id.
wait_timeout_ms = 1000
# Redis groups (URLs like `url`, Sentinel groups too) the rooms' events are spread over, each numbering its own
# rooms, so the publish rate grows with them; empty = every event through `url`. Records, presence, the registry
# and direct messages stay on `url`. Every node lists the same groups in the same order; changing the list moves
# about 1/n of the rooms, whose sessions then start afresh. TIDINGS_REDIS_PARTITIONS (comma-separated).
partitions = []
# With a Redis Cluster url (redis+cluster://host:port[,host:port]): every key of the cluster is hash-tagged
# ({<key_prefix>} for records and the registry), and the rooms' events are spread over this many partitions, each
# on the slot of {<key_prefix>:p<i>}, so on whichever master serves it; 0 keeps them on {<key_prefix>}'s slot.
cluster_partitions = 0

[storage]
# Directory of the embedded store (TIDINGS_DATA_DIR, --data-dir): direct messages, their statuses and inbox
# cursors, room history and recovery sessions are kept on disk there and survive a restart. Empty = in memory
# only (the server says so at start). Not used in cluster mode, where Redis is the store.
data_dir = ""

[messages]
# Namespace on which devices receive direct messages and `message:status`, and may send `dm`, `ack` and `read`.
namespace = "/"
# Inbox lifetime of a message sent without a ttl, in seconds (7 days); undelivered by then, it expires.
default_ttl_secs = 604800
# Longest ttl a sender may ask for, in seconds (30 days).
max_ttl_secs = 2592000
# Most messages in one user's inbox. Past it the oldest delivered message leaves; if none was delivered, a new
# message is refused with "inbox_full".
inbox_max_messages = 1000
# How long a message's status and receipts stay readable (GET /v1/messages/{id}) after it left the inbox, in
# seconds.
retention_secs = 86400
# Messages written to one device and not acknowledged yet; the rest wait in the inbox until it acknowledges.
max_unacked_per_device = 256
# Most `dm` events of one connection waiting for the store (they are stored in batches, in order); past it a `dm`
# is answered `busy` and counted in tidings_message_sends_queue_full_total.
max_queued_sends_per_connection = 1024
# Most message records the in-memory store holds (no data_dir); past it new messages are refused.
max_memory_records = 1000000
# Longest `device` name in the CONNECT auth payload, in bytes.
max_device_bytes = 64
# http:// URL the backend's webhook events are POSTed to: {"type":"message.status", id, from, to, status,
# device?, at} for every status change, and {"type":"user.offline", user, undelivered, oldest_id, oldest_at, at}
# when a user stays offline with undelivered messages. Signed: X-Tidings-Timestamp and
# X-Tidings-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">. Empty = no webhook.
webhook_url = ""
# Shared secret of the signature, at least 16 bytes.
webhook_secret = ""
# Seconds a user may be offline with undelivered messages before the webhook hears user.offline.
webhook_offline_after_secs = 30
# Milliseconds one attempt may take; a non-2xx answer or none is retried with exponential backoff.
webhook_timeout_ms = 5000
# Attempts per event before it is given up (tidings_webhook_dropped_total).
webhook_max_attempts = 12
# Events waiting at most while the receiver is down; past it new events are dropped and counted.
webhook_queue = 10000

[kafka]
# Kafka topics whose records are published to rooms like POST /v1/publish bodies (none by default). Each
# [[kafka.ingest]] is one consumer group; a record's offset is committed once its event was accepted. Example:
ingest = []
# [[kafka.ingest]]
# brokers = "127.0.0.1:9092" # bootstrap brokers, host:port[,host:port...]
# topics = ["events"]
# group = "tidings" # every node of a cluster in the same group: each record is published once
# event_header = "event" # header naming the event when the record's JSON has no "event"
# dead_letter_topic = "" # where records that cannot be published are copied (empty: none)
# properties = { "security.protocol" = "SASL_SSL" } # librdkafka settings, as they are

[kafka.egress]
# Bootstrap brokers the node produces to, host:port[,host:port...]; empty: nothing is produced.
brokers = ""
# Topic of client publishes, keyed by room (empty: none).
publishes_topic = ""
# Rooms whose client publishes are produced (patterns).
publish_rooms = ["*"]
# Rooms whose client publishes go to Kafka first: the client's ok means Kafka acknowledged it (patterns).
ack_rooms = []
# Topic of direct-message status changes, keyed by the sender (empty: none).
statuses_topic = ""
# Records waiting for Kafka at most; past it new ones are dropped and counted.
max_queued = 100000
# Milliseconds a record may wait for Kafka before it is dropped and counted.
delivery_timeout_ms = 300000
# Milliseconds a publish to an ack_rooms room waits for Kafka before it is answered unavailable.
ack_timeout_ms = 5000

[kafka.egress.properties]
# librdkafka settings of the producer, as they are, e.g. "security.protocol" = "SASL_SSL"
"#;

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    #[test]
    fn genconfig_round_trips_to_defaults() {
        let parsed = Config::parse_toml(DEFAULT_CONFIG_TOML, "genconfig").unwrap();
        assert_eq!(parsed, Config::default());
        parsed.validate().unwrap();
    }

    #[test]
    fn genconfig_shows_every_option_with_a_comment() {
        // Every leaf of the defaults appears in the text; the two lists appear as commented examples.
        let value = toml::Value::try_from(Config::default()).unwrap();
        let parsed: toml::Value = toml::from_str(DEFAULT_CONFIG_TOML).unwrap();
        for (section, v) in value.as_table().unwrap() {
            match v {
                toml::Value::Table(t) => {
                    for key in t.keys() {
                        assert!(
                            parsed[section].get(key).is_some(),
                            "missing {section}.{key}"
                        );
                    }
                }
                // namespaces / rooms: empty by default, shown as commented examples (checked below).
                toml::Value::Array(list) if list.is_empty() => {}
                _ => assert!(parsed.get(section).is_some(), "missing {section}"),
            }
        }
        for example in [
            "# [[namespaces]]",
            "# name = ",
            "# recovery = ",
            "# [[rooms]]",
            "# pattern = ",
            "# client_publish = ",
        ] {
            assert!(DEFAULT_CONFIG_TOML.contains(example), "missing {example}");
        }
        // One comment line above each option.
        let lines: Vec<&str> = DEFAULT_CONFIG_TOML.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.contains(" = ") && !line.starts_with('#') {
                assert!(lines[i - 1].starts_with("# "), "no comment above {line:?}");
            }
        }
    }
}
