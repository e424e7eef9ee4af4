//! [`Config::validate`]: the rules serde cannot express, checked once at startup.

use std::collections::HashSet;

use super::sections::{MIN_API_KEY_BYTES, MIN_JWT_SECRET_BYTES};
use super::{Config, ConfigError};
use crate::engineio::client_addr::TrustedProxies;

/// Longest accepted `engine.write_interval_ms` and `engine.write_interval_max_ms`: pacing delays a busy
/// socket's events by up to this much.
const MAX_WRITE_INTERVAL_MS: u64 = 1000;

/// Smallest accepted `history.max_reply_bytes`: below it most pages would hold a single event.
const MIN_REPLY_BYTES: usize = 1024;

impl Config {
    /// Checks the rules serde cannot express; the first broken rule is the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_top()?;
        self.validate_secret_lengths()?;
        self.validate_admin()?;
        self.validate_engine_and_limits()?;
        self.validate_namespaces()?;
        self.validate_rooms()?;
        self.validate_backends()?;
        self.validate_kafka()
    }

    fn validate_kafka(&self) -> Result<(), ConfigError> {
        for (i, ingest) in self.kafka.ingest.iter().enumerate() {
            let field = |name: &str| format!("kafka.ingest[{i}].{name}");
            if ingest.brokers.split(',').any(|b| b.trim().is_empty()) {
                return invalid(&field("brokers"), "must list host:port[,host:port...]");
            }
            if ingest.topics.is_empty() || !ingest.topics.iter().all(|t| kafka_name(t)) {
                return invalid(
                    &field("topics"),
                    "must name at least one topic, each 1-249 characters of A-Z a-z 0-9 . _ -",
                );
            }
            if !ingest.dead_letter_topic.is_empty() && !kafka_name(&ingest.dead_letter_topic) {
                return invalid(
                    &field("dead_letter_topic"),
                    "must be empty or 1-249 characters of A-Z a-z 0-9 . _ -",
                );
            }
            if ingest.group.trim().is_empty() || ingest.event_header.trim().is_empty() {
                return invalid(&field("group"), "group and event_header must not be empty");
            }
            check_properties(&ingest.properties, &field("properties"))?;
        }
        self.validate_egress()
    }

    fn validate_egress(&self) -> Result<(), ConfigError> {
        let egress = &self.kafka.egress;
        if !egress.enabled() {
            return Ok(());
        }
        if egress.brokers.split(',').any(|b| b.trim().is_empty()) {
            return invalid("kafka.egress.brokers", "must list host:port[,host:port...]");
        }
        for (name, topic) in [
            ("publishes_topic", &egress.publishes_topic),
            ("statuses_topic", &egress.statuses_topic),
        ] {
            if !topic.is_empty() && !kafka_name(topic) {
                return invalid(
                    &format!("kafka.egress.{name}"),
                    "must be empty or 1-249 characters of A-Z a-z 0-9 . _ -",
                );
            }
        }
        if egress.publishes_topic.is_empty() && egress.statuses_topic.is_empty() {
            return invalid(
                "kafka.egress",
                "brokers are set but neither publishes_topic nor statuses_topic",
            );
        }
        for (name, patterns) in [
            ("publish_rooms", &egress.publish_rooms),
            ("ack_rooms", &egress.ack_rooms),
        ] {
            if let Err(error) = crate::auth::RoomPatterns::parse(patterns.iter()) {
                return invalid(&format!("kafka.egress.{name}"), error.to_string());
            }
        }
        if !(1..=10_000_000).contains(&egress.max_queued) {
            return invalid("kafka.egress.max_queued", "must be 1 to 10000000");
        }
        if !(1_000..=3_600_000).contains(&egress.delivery_timeout_ms) {
            return invalid(
                "kafka.egress.delivery_timeout_ms",
                "must be 1000 to 3600000",
            );
        }
        if !(100..=egress.delivery_timeout_ms).contains(&egress.ack_timeout_ms) {
            return invalid(
                "kafka.egress.ack_timeout_ms",
                "must be 100 to delivery_timeout_ms",
            );
        }
        check_properties(&egress.properties, "kafka.egress.properties")
    }

    fn validate_top(&self) -> Result<(), ConfigError> {
        if !self.public_url.is_empty() && !has_scheme(&self.public_url, &["http"]) {
            return invalid(
                "public_url",
                "must be empty or an http:// URL: other nodes forward to it over plain HTTP (https is not \
                 supported; terminate TLS in front of the nodes)",
            );
        }
        if self.auth.secret().is_some() && self.auth.public_key_path().is_some() {
            return invalid(
                "auth",
                "jwt_secret and jwt_public_key are both set; configure only one",
            );
        }
        for (field, keys) in [
            ("api.keys", &self.api.keys),
            ("admin.keys", &self.admin.keys),
        ] {
            for key in keys {
                if key.is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return invalid(
                        field,
                        "keys must be non-empty and contain no whitespace or control characters",
                    );
                }
            }
        }
        positive("api.idempotency_ttl_secs", self.api.idempotency_ttl_secs)?;
        positive("api.max_body_bytes", self.api.max_body_bytes as u64)?;
        let shutdown = &self.shutdown;
        if shutdown.drain_secs
            < shutdown
                .unready_secs
                .saturating_add(shutdown.drain_window_secs)
        {
            return invalid(
                "shutdown.drain_secs",
                "must be at least unready_secs + drain_window_secs",
            );
        }
        Ok(())
    }

    /// Short secrets can be guessed offline (a JWT carries its HMAC) or online; they pass only in development.
    fn validate_secret_lengths(&self) -> Result<(), ConfigError> {
        if self.auth.insecure_dev_secrets {
            return Ok(());
        }
        const HOW: &str =
            "(for development only: --insecure-dev-secrets, TIDINGS_INSECURE_DEV_SECRETS=1 or \
             auth.insecure_dev_secrets = true)";
        if let Some(secret) = self.auth.secret() {
            if secret.len() < MIN_JWT_SECRET_BYTES {
                return invalid(
                    "auth.jwt_secret",
                    format!(
                        "the HS256 secret is {} bytes; it must be at least {MIN_JWT_SECRET_BYTES} bytes {HOW}",
                        secret.len()
                    ),
                );
            }
        }
        if let Some(short) = self.admin.keys.iter().find(|k| k.len() < MIN_API_KEY_BYTES) {
            return invalid(
                "admin.keys",
                format!(
                    "an admin key is {} bytes; admin keys must be at least {MIN_API_KEY_BYTES} bytes {HOW}",
                    short.len()
                ),
            );
        }
        if let Some(short) = self.api.keys.iter().find(|k| k.len() < MIN_API_KEY_BYTES) {
            return invalid(
                "api.keys",
                format!(
                    "an API key is {} bytes; API keys must be at least {MIN_API_KEY_BYTES} bytes {HOW}",
                    short.len()
                ),
            );
        }
        Ok(())
    }

    fn validate_admin(&self) -> Result<(), ConfigError> {
        let listen = &self.admin.listen;
        if listen.is_empty() {
            return Ok(());
        }
        let Some(addr) = self.admin.listen_addr() else {
            return invalid(
                "admin.listen",
                format!("{listen:?} is not an IP:port address (empty = the main port)"),
            );
        };
        if addr.port() != 0 && addr == self.listen {
            return invalid(
                "admin.listen",
                "is the main listen address; leave it empty to serve /metrics and /stats there",
            );
        }
        Ok(())
    }

    fn validate_engine_and_limits(&self) -> Result<(), ConfigError> {
        let e = &self.engine;
        positive("engine.ping_interval_ms", e.ping_interval_ms)?;
        positive("engine.ping_timeout_ms", e.ping_timeout_ms)?;
        positive("engine.max_payload", e.max_payload)?;
        positive("engine.connect_timeout_ms", e.connect_timeout_ms)?;
        for (field, value) in [
            ("engine.write_interval_ms", e.write_interval_ms),
            ("engine.write_interval_max_ms", e.write_interval_max_ms),
        ] {
            if value > MAX_WRITE_INTERVAL_MS {
                return invalid(
                    field,
                    format!(
                        "must be at most {MAX_WRITE_INTERVAL_MS} (it delays events by up to this much)"
                    ),
                );
            }
        }
        for origin in &e.cors_origins {
            if origin != "*" && !has_scheme(origin, &["http", "https"]) {
                return invalid(
                    "engine.cors_origins",
                    format!("{origin:?} is neither \"*\" nor an http(s)://host origin"),
                );
            }
        }
        if e.cors_credentials
            && (e.cors_origins.is_empty() || e.cors_origins.iter().any(|o| o == "*"))
        {
            return invalid(
                "engine.cors_credentials",
                "needs an explicit list of origins in engine.cors_origins, without \"*\" (credentials are never \
                 allowed for any origin)",
            );
        }
        let l = &self.limits;
        positive("limits.max_connections", l.max_connections as u64)?;
        positive("limits.outbox_max_messages", l.outbox_max_messages as u64)?;
        positive("limits.outbox_max_bytes", l.outbox_max_bytes as u64)?;
        positive(
            "limits.client_packets_per_sec",
            u64::from(l.client_packets_per_sec),
        )?;
        positive("limits.max_json_depth", l.max_json_depth as u64)?;
        positive("limits.max_rooms_per_socket", l.max_rooms_per_socket as u64)?;
        positive(
            "limits.misbehaviour_log_interval_secs",
            l.misbehaviour_log_interval_secs,
        )?;
        if l.handshakes_per_sec_per_ip > 0 && l.handshake_burst_per_ip == 0 {
            return invalid(
                "limits.handshake_burst_per_ip",
                "must be greater than 0 while handshakes_per_sec_per_ip is set",
            );
        }
        if let Err(error) = TrustedProxies::parse(&l.trusted_proxies) {
            return invalid("limits.trusted_proxies", error.to_string());
        }
        if self.redis.wait_replicas > 0 && !(1..=2500).contains(&self.redis.wait_timeout_ms) {
            return invalid(
                "redis.wait_timeout_ms",
                "must be 1 to 2500 (below the Redis command timeout) while wait_replicas is set",
            );
        }
        let m = &self.messages;
        if !m.namespace.starts_with('/') {
            return invalid(
                "messages.namespace",
                format!("{:?} must start with '/'", m.namespace),
            );
        }
        if m.namespace != "/" && !self.namespaces.iter().any(|ns| ns.name == m.namespace) {
            return invalid(
                "messages.namespace",
                format!(
                    "{:?} is not \"/\" nor a configured [[namespaces]] entry",
                    m.namespace
                ),
            );
        }
        positive("messages.default_ttl_secs", m.default_ttl_secs)?;
        positive("messages.max_ttl_secs", m.max_ttl_secs)?;
        if m.default_ttl_secs > m.max_ttl_secs {
            return invalid(
                "messages.default_ttl_secs",
                "must be at most messages.max_ttl_secs",
            );
        }
        positive("messages.inbox_max_messages", m.inbox_max_messages as u64)?;
        positive(
            "messages.max_unacked_per_device",
            m.max_unacked_per_device as u64,
        )?;
        positive(
            "messages.max_queued_sends_per_connection",
            m.max_queued_sends_per_connection as u64,
        )?;
        positive("messages.max_memory_records", m.max_memory_records as u64)?;
        positive("messages.max_device_bytes", m.max_device_bytes as u64)?;
        if !m.webhook_url.is_empty() {
            if !m.webhook_url.starts_with("http://") {
                return invalid(
                    "messages.webhook_url",
                    "must be an http:// URL (put a TLS-terminating relay in front for https)",
                );
            }
            if m.webhook_url.parse::<http::Uri>().is_err() {
                return invalid("messages.webhook_url", "is not a valid URL");
            }
            if m.webhook_secret.len() < MIN_API_KEY_BYTES && !self.auth.insecure_dev_secrets {
                return invalid(
                    "messages.webhook_secret",
                    format!("must be at least {MIN_API_KEY_BYTES} bytes when webhook_url is set"),
                );
            }
            positive("messages.webhook_timeout_ms", m.webhook_timeout_ms)?;
            positive(
                "messages.webhook_max_attempts",
                u64::from(m.webhook_max_attempts),
            )?;
            positive("messages.webhook_queue", m.webhook_queue as u64)?;
        }
        positive("history.max_events", self.history.max_events as u64)?;
        positive("history.max_age_secs", self.history.max_age_secs)?;
        positive("history.max_bytes", self.history.max_bytes)?;
        let reply = self.history.max_reply_bytes;
        if reply < MIN_REPLY_BYTES || reply > l.outbox_max_bytes {
            return invalid(
                "history.max_reply_bytes",
                format!(
                    "must be at least {MIN_REPLY_BYTES} and at most limits.outbox_max_bytes (a reply is queued like any packet)"
                ),
            );
        }
        positive(
            "recovery.max_disconnection_secs",
            self.recovery.max_disconnection_secs,
        )
    }

    fn validate_rooms(&self) -> Result<(), ConfigError> {
        for policy in &self.rooms {
            let conflates = policy.conflate_ms > 0;
            if conflates == policy.conflate_key.is_empty() {
                return invalid(
                    "rooms.conflate_key",
                    "conflate_ms and conflate_key go together (a room conflates by a field of its events)",
                );
            }
            if policy.conflate_ms > super::sections::MAX_CONFLATE_MS {
                return invalid(
                    "rooms.conflate_ms",
                    format!("must be at most {}", super::sections::MAX_CONFLATE_MS),
                );
            }
            if policy.client_publish_burst > 0 && policy.client_publish_per_sec == 0 {
                return invalid("rooms.client_publish_burst", "needs client_publish_per_sec");
            }
        }
        Ok(())
    }

    fn validate_namespaces(&self) -> Result<(), ConfigError> {
        let mut seen = HashSet::new();
        for ns in &self.namespaces {
            let name = &ns.name;
            if !name.starts_with('/') {
                return invalid("namespaces.name", format!("{name:?} must start with '/'"));
            }
            if name == "/" {
                return invalid(
                    "namespaces.name",
                    "\"/\" always exists; configure its recovery in [recovery]",
                );
            }
            if name.len() > 200
                || name
                    .chars()
                    .any(|c| c == ',' || c.is_whitespace() || c.is_control())
            {
                return invalid(
                    "namespaces.name",
                    format!("{name:?} must be at most 200 bytes, without ',', whitespace or control characters"),
                );
            }
            if !seen.insert(name.as_str()) {
                return invalid("namespaces.name", format!("{name:?} is configured twice"));
            }
        }
        Ok(())
    }

    fn validate_backends(&self) -> Result<(), ConfigError> {
        let r = &self.redis;
        if !r.url.is_empty()
            && !has_scheme(
                &r.url,
                &["redis", "rediss", "unix", "redis+sentinel", "redis+cluster"],
            )
        {
            return invalid(
                "redis.url",
                "must be empty or a redis://, rediss://, unix://, redis+sentinel:// or redis+cluster:// URL",
            );
        }
        let on_cluster = r.url.starts_with("redis+cluster://");
        if r.cluster_partitions > 0 && !on_cluster {
            return invalid(
                "redis.cluster_partitions",
                "needs a Redis Cluster redis.url (redis+cluster://host:port[,host:port])",
            );
        }
        if on_cluster && !r.partitions.is_empty() {
            return invalid(
                "redis.partitions",
                "not with a Redis Cluster redis.url: set redis.cluster_partitions instead",
            );
        }
        if r.cluster_partitions > crate::cluster::partition::MAX_PARTITIONS {
            return invalid(
                "redis.cluster_partitions",
                format!("at most {}", crate::cluster::partition::MAX_PARTITIONS),
            );
        }
        if !r.partitions.is_empty() && r.url.is_empty() {
            return invalid(
                "redis.partitions",
                "needs redis.url (records, presence and the registry stay there)",
            );
        }
        if r.partitions.len() > crate::cluster::partition::MAX_PARTITIONS {
            return invalid(
                "redis.partitions",
                format!(
                    "at most {} groups",
                    crate::cluster::partition::MAX_PARTITIONS
                ),
            );
        }
        if let Some(bad) = r
            .partitions
            .iter()
            .find(|u| !has_scheme(u, &["redis", "rediss", "unix", "redis+sentinel"]))
        {
            return invalid(
                "redis.partitions",
                format!("{bad:?} is not a redis://, rediss://, unix:// or redis+sentinel:// URL"),
            );
        }
        if r.key_prefix.is_empty()
            || r.key_prefix
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return invalid(
                "redis.key_prefix",
                "must be non-empty, without whitespace or control characters",
            );
        }
        Ok(())
    }
}

/// A topic name Kafka accepts.
fn kafka_name(name: &str) -> bool {
    (1..=249).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn invalid<T>(field: &str, message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid {
        field: field.to_owned(),
        message: message.into(),
    })
}

fn positive(field: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return invalid(field, "must be greater than 0");
    }
    Ok(())
}

/// True when `url` is `<scheme>://<something>` for one of `schemes`.
fn has_scheme(url: &str, schemes: &[&str]) -> bool {
    url.split_once("://").is_some_and(|(scheme, rest)| {
        schemes.contains(&scheme) && !rest.is_empty() && !rest.contains(char::is_whitespace)
    })
}

/// A `properties` table of librdkafka settings: none of the reserved ones.
fn check_properties(
    properties: &std::collections::BTreeMap<String, String>,
    field: &str,
) -> Result<(), ConfigError> {
    match properties
        .keys()
        .find(|key| super::sections::KAFKA_RESERVED.contains(&key.as_str()))
    {
        Some(key) => invalid(
            field,
            format!("`{key}` is set by tidings (its delivery guarantees rest on it)"),
        ),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::check;

    #[test]
    fn validation_errors() {
        let cases = [
            ("public_url = \"example.com\"", "invalid config: public_url: must be empty or an http:// URL: other nodes forward to it over plain HTTP (https is not supported; terminate TLS in front of the nodes)"),
            ("public_url = \"https://a.example\"", "invalid config: public_url: must be empty or an http:// URL: other nodes forward to it over plain HTTP (https is not supported; terminate TLS in front of the nodes)"),
            ("[[kafka.ingest]]\nbrokers = \"b:9092\"\ntopics = [\"t\"]\n[kafka.ingest.properties]\n\"enable.auto.commit\" = \"false\"", "invalid config: kafka.ingest[0].properties: `enable.auto.commit` is set by tidings (its delivery guarantees rest on it)"),
            ("[kafka.egress]\nbrokers = \"b:9092\"", "invalid config: kafka.egress: brokers are set but neither publishes_topic nor statuses_topic"),
            ("[kafka.egress]\nbrokers = \"b:9092\"\npublishes_topic = \"a b\"", "invalid config: kafka.egress.publishes_topic: must be empty or 1-249 characters of A-Z a-z 0-9 . _ -"),
            ("[kafka.egress]\nbrokers = \"b:9092\"\nstatuses_topic = \"s\"\nack_rooms = [\"a**\"]", "invalid config: kafka.egress.ack_rooms: room pattern \"a**\": '*' is only allowed as the last character"),
            ("[kafka.egress]\nbrokers = \"b:9092\"\nstatuses_topic = \"s\"\nmax_queued = 0", "invalid config: kafka.egress.max_queued: must be 1 to 10000000"),
            ("[kafka.egress]\nbrokers = \"b:9092\"\nstatuses_topic = \"s\"\nack_timeout_ms = 400000", "invalid config: kafka.egress.ack_timeout_ms: must be 100 to delivery_timeout_ms"),
            ("[kafka.egress]\nbrokers = \"b:9092\"\nstatuses_topic = \"s\"\n[kafka.egress.properties]\nacks = \"1\"", "invalid config: kafka.egress.properties: `acks` is set by tidings (its delivery guarantees rest on it)"),
            ("[auth]\njwt_secret = \"s\"\njwt_public_key = \"k.pem\"", "invalid config: auth: jwt_secret and jwt_public_key are both set; configure only one"),
            ("[api]\nkeys = [\"a b\"]", "invalid config: api.keys: keys must be non-empty and contain no whitespace or control characters"),
            ("[engine]\nping_timeout_ms = 0", "invalid config: engine.ping_timeout_ms: must be greater than 0"),
            ("[engine]\nwrite_interval_ms = 1001", "invalid config: engine.write_interval_ms: must be at most 1000 (it delays events by up to this much)"),
            ("[engine]\nwrite_interval_max_ms = 1001", "invalid config: engine.write_interval_max_ms: must be at most 1000 (it delays events by up to this much)"),
            ("[engine]\ncors_origins = [\"example.com\"]", "invalid config: engine.cors_origins: \"example.com\" is neither \"*\" nor an http(s)://host origin"),
            ("[auth]\njwt_secret = \"0123456789abcdef0123456789abcde\"", "invalid config: auth.jwt_secret: the HS256 secret is 31 bytes; it must be at least 32 bytes (for development only: --insecure-dev-secrets, TIDINGS_INSECURE_DEV_SECRETS=1 or auth.insecure_dev_secrets = true)"),
            ("[api]\nkeys = [\"0123456789abcdef\", \"dev-key\"]", "invalid config: api.keys: an API key is 7 bytes; API keys must be at least 16 bytes (for development only: --insecure-dev-secrets, TIDINGS_INSECURE_DEV_SECRETS=1 or auth.insecure_dev_secrets = true)"),
            ("[admin]\nlisten = \"localhost:9000\"", "invalid config: admin.listen: \"localhost:9000\" is not an IP:port address (empty = the main port)"),
            ("[admin]\nlisten = \"127.0.0.1:3000\"", "invalid config: admin.listen: is the main listen address; leave it empty to serve /metrics and /stats there"),
            ("[engine]\ncors_credentials = true", "invalid config: engine.cors_credentials: needs an explicit list of origins in engine.cors_origins, without \"*\" (credentials are never allowed for any origin)"),
            ("[engine]\ncors_credentials = true\ncors_origins = [\"https://a.example\", \"*\"]", "invalid config: engine.cors_credentials: needs an explicit list of origins in engine.cors_origins, without \"*\" (credentials are never allowed for any origin)"),
            ("[limits]\nmisbehaviour_log_interval_secs = 0", "invalid config: limits.misbehaviour_log_interval_secs: must be greater than 0"),
            ("[limits]\nclient_packets_per_sec = 0", "invalid config: limits.client_packets_per_sec: must be greater than 0"),
            ("[limits]\nhandshake_burst_per_ip = 0", "invalid config: limits.handshake_burst_per_ip: must be greater than 0 while handshakes_per_sec_per_ip is set"),
            ("[limits]\ntrusted_proxies = [\"10.0.0.0/33\"]", "invalid config: limits.trusted_proxies: \"10.0.0.0/33\" is not an IP address or CIDR block (e.g. 10.0.0.1, 10.0.0.0/8, fd00::/8)"),
            ("[[namespaces]]\nname = \"chat\"", "invalid config: namespaces.name: \"chat\" must start with '/'"),
            ("[[namespaces]]\nname = \"/\"", "invalid config: namespaces.name: \"/\" always exists; configure its recovery in [recovery]"),
            ("[[namespaces]]\nname = \"/a,b\"", "invalid config: namespaces.name: \"/a,b\" must be at most 200 bytes, without ',', whitespace or control characters"),
            ("[[namespaces]]\nname = \"/a\"\n[[namespaces]]\nname = \"/a\"", "invalid config: namespaces.name: \"/a\" is configured twice"),
            ("[history]\nmax_events = 0", "invalid config: history.max_events: must be greater than 0"),
            ("[history]\nmax_reply_bytes = 1023", "invalid config: history.max_reply_bytes: must be at least 1024 and at most limits.outbox_max_bytes (a reply is queued like any packet)"),
            ("[limits]\noutbox_max_bytes = 65536\n[history]\nmax_reply_bytes = 65537", "invalid config: history.max_reply_bytes: must be at least 1024 and at most limits.outbox_max_bytes (a reply is queued like any packet)"),
            ("[redis]\nurl = \"localhost:6379\"", "invalid config: redis.url: must be empty or a redis://, rediss://, unix://, redis+sentinel:// or redis+cluster:// URL"),
            ("[redis]\nurl = \"redis://h:1\"\ncluster_partitions = 3", "invalid config: redis.cluster_partitions: needs a Redis Cluster redis.url (redis+cluster://host:port[,host:port])"),
            ("[redis]\nurl = \"redis+cluster://h:1\"\npartitions = [\"redis://h:2\"]", "invalid config: redis.partitions: not with a Redis Cluster redis.url: set redis.cluster_partitions instead"),
            ("[redis]\npartitions = [\"redis://h:2\"]", "invalid config: redis.partitions: needs redis.url (records, presence and the registry stay there)"),
            ("[redis]\nkey_prefix = \"\"", "invalid config: redis.key_prefix: must be non-empty, without whitespace or control characters"),
        ];
        for (text, expected) in cases {
            assert_eq!(check(text).unwrap_err(), expected, "for {text:?}");
        }
        let ok = "public_url = \"http://a.example:3000\"\n[engine]\nwrite_interval_max_ms = 1000\ncors_origins = [\"https://a.example\", \"*\"]\n[limits]\nhandshakes_per_sec_per_ip = 0\nhandshake_burst_per_ip = 0\ntrusted_proxies = [\"10.0.0.1\", \"fd00::/8\"]\n[redis]\nurl = \"redis://127.0.0.1:6379/0\"";
        check(ok).unwrap();
        // The shortest accepted secrets, and short ones in development mode.
        let long_enough = "[auth]\njwt_secret = \"0123456789abcdef0123456789abcdef\"\n[api]\nkeys = [\"0123456789abcdef\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n[engine]\ncors_credentials = true\ncors_origins = [\"https://a.example\"]";
        check(long_enough).unwrap();
        check("[auth]\njwt_secret = \"s\"\ninsecure_dev_secrets = true\n[api]\nkeys = [\"k\"]")
            .unwrap();
    }
}
