//! Server configuration: defaults < TOML file < `TIDINGS_*` environment < command-line flags, validated once at
//! startup, plus the commented default file that `tidings genconfig` prints.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::auth::RoomPattern;

/// Everything the server can be configured with. Each section has its own struct; every field has a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the server listens on (Socket.IO and HTTP API).
    pub listen: SocketAddr,
    /// Tokio worker threads; 0 means one per core (see [`Config::worker_threads`]).
    pub workers: usize,
    /// Base URL at which this node is reached directly, advertised in the cluster's node registry: other nodes
    /// forward requests for this node's sessions to it (plain HTTP, so an `http://` URL they can reach), and
    /// `/v1/nodes/pick` hands it to new clients. Empty = `http://<listen address>` with the bound port.
    pub public_url: String,
    /// JWT verification.
    pub auth: AuthConfig,
    /// HTTP API.
    pub api: ApiConfig,
    /// Engine.IO transport settings.
    pub engine: EngineConfig,
    /// Per-connection and global limits.
    pub limits: LimitsConfig,
    /// Namespaces besides `/`, which always exists.
    pub namespaces: Vec<NamespaceConfig>,
    /// Room policies; the first whose pattern matches a room applies (see [`Config::room_policy`]).
    pub rooms: Vec<RoomPolicy>,
    /// Per-room event history, kept for connection state recovery.
    pub history: HistoryConfig,
    /// Connection state recovery.
    pub recovery: RecoveryConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// Redis backend (cluster mode); off when `url` is empty.
    pub redis: RedisConfig,
    /// Protocol conformance mode for the official Socket.IO / Engine.IO test suites; only set by the hidden
    /// `--conformance` flag, never from the file.
    #[serde(skip)]
    pub conformance: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            workers: 0,
            public_url: String::new(),
            auth: AuthConfig::default(),
            api: ApiConfig::default(),
            engine: EngineConfig::default(),
            limits: LimitsConfig::default(),
            namespaces: Vec::new(),
            rooms: Vec::new(),
            history: HistoryConfig::default(),
            recovery: RecoveryConfig::default(),
            shutdown: ShutdownConfig::default(),
            redis: RedisConfig::default(),
            conformance: false,
        }
    }
}

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
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: String::new(),
            jwt_public_key: String::new(),
            leeway_secs: 5,
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
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            max_body_bytes: 1024 * 1024,
        }
    }
}

impl ApiConfig {
    /// True when `presented` is one of the configured keys. Compares in constant time per key, so response
    /// timing does not reveal how much of a key was right.
    pub fn accepts_key(&self, presented: &str) -> bool {
        self.keys.iter().fold(false, |found, key| {
            found | constant_time_eq(key.as_bytes(), presented.as_bytes())
        })
    }
}

impl fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<&str> = self.keys.iter().map(|k| redacted(k)).collect();
        f.debug_struct("ApiConfig")
            .field("keys", &keys)
            .field("max_body_bytes", &self.max_body_bytes)
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
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            ping_interval_ms: 25_000,
            ping_timeout_ms: 20_000,
            max_payload: 1_000_000,
            connect_timeout_ms: 45_000,
            cors_origins: vec!["*".to_owned()],
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
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: 100_000,
            outbox_max_messages: 4096,
            outbox_max_bytes: 8 * 1024 * 1024,
            client_packets_per_sec: 50,
        }
    }
}

impl LimitsConfig {
    /// Burst size of the per-connection packet rate limit: twice the sustained rate.
    pub fn client_packet_burst(&self) -> u32 {
        self.client_packets_per_sec.saturating_mul(2)
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
}

/// `[history]`: how much of each room's recent events is kept for recovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// Events kept per room.
    pub max_events: usize,
    /// Age after which an event leaves the history, in seconds.
    pub max_age_secs: u64,
    /// Cap on the bytes of history over all rooms.
    pub max_bytes: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            max_events: 1000,
            max_age_secs: 300,
            max_bytes: 256 * 1024 * 1024,
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

/// `[shutdown]`: graceful shutdown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Time given to connections to close after a shutdown signal, in seconds.
    pub drain_secs: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self { drain_secs: 10 }
    }
}

impl ShutdownConfig {
    /// `drain_secs` as a duration.
    pub fn drain(&self) -> Duration {
        Duration::from_secs(self.drain_secs)
    }
}

/// `[redis]`: the Redis backend for clusters of nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://` / `rediss://` / `unix://` URL; empty runs the node alone, in memory.
    pub url: String,
    /// Prefix of every Redis key and channel, so several deployments can share one Redis.
    pub key_prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            key_prefix: "tidings".to_owned(),
        }
    }
}

impl RedisConfig {
    /// The URL, if Redis is configured.
    pub fn url(&self) -> Option<&str> {
        Some(self.url.as_str()).filter(|s| !s.is_empty())
    }
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The config file is not valid TOML or does not fit the schema (unknown key, wrong type, bad address).
    #[error("invalid config file {origin}: {error}")]
    Parse {
        /// The file, or the origin given to [`Config::parse_toml`].
        origin: String,
        /// The TOML error, with line and column.
        error: toml::de::Error,
    },
    /// A `TIDINGS_*` environment variable has an unusable value.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A value breaks a rule checked by [`Config::validate`].
    #[error("invalid config: {field}: {message}")]
    Invalid {
        /// Dotted path of the offending option, e.g. `engine.ping_interval_ms`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// Settings that come from the environment or the command line, applied over the file by [`Config::apply`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `TIDINGS_LISTEN` / `--listen`.
    pub listen: Option<SocketAddr>,
    /// `TIDINGS_JWT_SECRET` / `--jwt-secret`; replaces any public key from a lower layer.
    pub jwt_secret: Option<String>,
    /// `TIDINGS_JWT_PUBLIC_KEY` / `--jwt-public-key`; replaces any secret from a lower layer.
    pub jwt_public_key: Option<String>,
    /// `TIDINGS_API_KEY` / `--api-key`; added to `api.keys`.
    pub api_key: Option<String>,
    /// `TIDINGS_REDIS_URL` / `--redis`.
    pub redis_url: Option<String>,
    /// `--conformance` (no environment variable).
    pub conformance: bool,
}

impl Overrides {
    /// Reads the `TIDINGS_*` variables of this process. Empty variables count as unset.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_env_with(|var| std::env::var(var).ok())
    }

    /// Like [`Overrides::from_env`], with `get` standing in for the environment (tests).
    pub fn from_env_with(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |var: &str| get(var).filter(|v| !v.is_empty());
        let listen = match get("TIDINGS_LISTEN") {
            Some(text) => Some(text.parse().map_err(|e| ConfigError::Env {
                var: "TIDINGS_LISTEN",
                message: format!("{text:?} is not an IP:port address ({e})"),
            })?),
            None => None,
        };
        let overrides = Self {
            listen,
            jwt_secret: get("TIDINGS_JWT_SECRET"),
            jwt_public_key: get("TIDINGS_JWT_PUBLIC_KEY"),
            api_key: get("TIDINGS_API_KEY"),
            redis_url: get("TIDINGS_REDIS_URL"),
            conformance: false,
        };
        if overrides.jwt_secret.is_some() && overrides.jwt_public_key.is_some() {
            return Err(ConfigError::Env {
                var: "TIDINGS_JWT_PUBLIC_KEY",
                message: "TIDINGS_JWT_SECRET is set too; set only one".to_owned(),
            });
        }
        Ok(overrides)
    }
}

/// A secret that [`Config::ensure_secrets`] had to invent because none was configured.
#[derive(Clone, PartialEq, Eq)]
pub enum GeneratedSecret {
    /// A random HS256 secret (64 hex digits), now in `auth.jwt_secret`.
    JwtSecret(String),
    /// A random API key (64 hex digits), now in `api.keys`.
    ApiKey(String),
}

impl GeneratedSecret {
    /// What the secret is, for the warning: `JWT secret` or `API key`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::JwtSecret(_) => "JWT secret",
            Self::ApiKey(_) => "API key",
        }
    }

    /// The generated value.
    pub fn value(&self) -> &str {
        match self {
            Self::JwtSecret(v) | Self::ApiKey(v) => v,
        }
    }
}

/// `JWT secret: <value>` — the line the server's warning shows (deliberately revealing the value).
impl fmt::Display for GeneratedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name(), self.value())
    }
}

impl fmt::Debug for GeneratedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GeneratedSecret({})", self.name())
    }
}

impl Config {
    /// The defaults, overlaid with the TOML file when one is given. Not validated: apply the environment and flags
    /// first, then call [`Config::validate`].
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = file else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        let config = Self::parse_toml(&text, &path.display().to_string())?;
        tracing::debug!(path = %path.display(), "loaded config file");
        Ok(config)
    }

    /// Parses TOML text over the defaults; `origin` names the text in errors.
    pub fn parse_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|error| ConfigError::Parse {
            origin: origin.to_owned(),
            error,
        })
    }

    /// Applies a higher-precedence layer (environment, then flags). A JWT secret replaces a public key from a lower
    /// layer and vice versa; an API key is added to the configured ones.
    pub fn apply(&mut self, overrides: &Overrides) {
        if let Some(listen) = overrides.listen {
            self.listen = listen;
        }
        if let Some(secret) = &overrides.jwt_secret {
            self.auth.jwt_secret.clone_from(secret);
            self.auth.jwt_public_key.clear();
        }
        if let Some(path) = &overrides.jwt_public_key {
            self.auth.jwt_public_key.clone_from(path);
            self.auth.jwt_secret.clear();
        }
        if let Some(key) = &overrides.api_key {
            if !self.api.keys.contains(key) {
                self.api.keys.push(key.clone());
            }
        }
        if let Some(url) = &overrides.redis_url {
            self.redis.url.clone_from(url);
        }
        self.conformance |= overrides.conformance;
    }

    /// Generates what a server cannot run without: a JWT secret when neither a secret nor a public key is set, and an
    /// API key when none is. Returns what was generated so the caller can warn loudly and show the values.
    pub fn ensure_secrets(&mut self) -> Vec<GeneratedSecret> {
        let mut generated = Vec::new();
        if self.auth.secret().is_none() && self.auth.public_key_path().is_none() {
            self.auth.jwt_secret = random_hex_32();
            generated.push(GeneratedSecret::JwtSecret(self.auth.jwt_secret.clone()));
        }
        if self.api.keys.is_empty() {
            let key = random_hex_32();
            self.api.keys.push(key.clone());
            generated.push(GeneratedSecret::ApiKey(key));
        }
        generated
    }

    /// Tokio worker threads to start: `workers`, or the number of cores when it is 0.
    pub fn worker_threads(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }

    /// The configured namespace `name` (not `/`, which is implicit).
    pub fn namespace(&self, name: &str) -> Option<&NamespaceConfig> {
        self.namespaces.iter().find(|ns| ns.name == name)
    }

    /// Whether connection state recovery is on for namespace `name`: `[recovery].enabled` for `/` and for
    /// namespaces without their own flag; false for unknown namespaces.
    pub fn recovery_enabled(&self, name: &str) -> bool {
        if name == "/" {
            return self.recovery.enabled;
        }
        self.namespace(name)
            .is_some_and(|ns| ns.recovery.unwrap_or(self.recovery.enabled))
    }

    /// The policy of `room`: the first `[[rooms]]` entry whose pattern matches, in file order.
    pub fn room_policy(&self, room: &str) -> Option<&RoomPolicy> {
        self.rooms.iter().find(|p| p.pattern.matches(room))
    }

    /// Checks the rules serde cannot express; the first broken rule is the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_top()?;
        self.validate_engine_and_limits()?;
        self.validate_namespaces()?;
        self.validate_backends()
    }

    fn validate_top(&self) -> Result<(), ConfigError> {
        if !self.public_url.is_empty() && !has_scheme(&self.public_url, &["http", "https"]) {
            return invalid("public_url", "must be empty or an http:// or https:// URL");
        }
        if self.auth.secret().is_some() && self.auth.public_key_path().is_some() {
            return invalid(
                "auth",
                "jwt_secret and jwt_public_key are both set; configure only one",
            );
        }
        for key in &self.api.keys {
            if key.is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return invalid(
                    "api.keys",
                    "keys must be non-empty and contain no whitespace or control characters",
                );
            }
        }
        positive("api.max_body_bytes", self.api.max_body_bytes as u64)
    }

    fn validate_engine_and_limits(&self) -> Result<(), ConfigError> {
        let e = &self.engine;
        positive("engine.ping_interval_ms", e.ping_interval_ms)?;
        positive("engine.ping_timeout_ms", e.ping_timeout_ms)?;
        positive("engine.max_payload", e.max_payload)?;
        positive("engine.connect_timeout_ms", e.connect_timeout_ms)?;
        for origin in &e.cors_origins {
            if origin != "*" && !has_scheme(origin, &["http", "https"]) {
                return invalid(
                    "engine.cors_origins",
                    format!("{origin:?} is neither \"*\" nor an http(s)://host origin"),
                );
            }
        }
        let l = &self.limits;
        positive("limits.max_connections", l.max_connections as u64)?;
        positive("limits.outbox_max_messages", l.outbox_max_messages as u64)?;
        positive("limits.outbox_max_bytes", l.outbox_max_bytes as u64)?;
        positive(
            "limits.client_packets_per_sec",
            u64::from(l.client_packets_per_sec),
        )?;
        positive("history.max_events", self.history.max_events as u64)?;
        positive("history.max_age_secs", self.history.max_age_secs)?;
        positive("history.max_bytes", self.history.max_bytes)?;
        positive(
            "recovery.max_disconnection_secs",
            self.recovery.max_disconnection_secs,
        )
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
        if !r.url.is_empty() && !has_scheme(&r.url, &["redis", "rediss", "unix", "redis+sentinel"])
        {
            return invalid(
                "redis.url",
                "must be empty or a redis://, rediss://, unix:// or redis+sentinel:// URL",
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

/// The commented default configuration printed by `tidings genconfig`; it parses back into [`Config::default`].
pub const DEFAULT_CONFIG_TOML: &str = r#"# tidings configuration: every option with its default value.
# Precedence: defaults < this file (--config / TIDINGS_CONFIG) < TIDINGS_* environment < command-line flags.

# Address to listen on, IP:port (TIDINGS_LISTEN, --listen).
listen = "127.0.0.1:3000"
# Tokio worker threads; 0 = one per CPU core.
workers = 0
# Base URL at which this node is reached directly (cluster mode): other nodes forward requests for this node's
# sessions to it over plain HTTP, so it must be an http:// URL they can reach (not a load balancer in front of
# every node), and /v1/nodes/pick hands it to new clients. Empty = http://<listen address>.
public_url = ""

[auth]
# HS256 secret (TIDINGS_JWT_SECRET, --jwt-secret); with neither secret nor key, a random one is generated.
jwt_secret = ""
# PEM public key file: RSA = RS256, EC P-256 = ES256 (TIDINGS_JWT_PUBLIC_KEY, --jwt-public-key).
jwt_public_key = ""
# Clock skew tolerated on a token's exp and nbf, in seconds; a token without exp never expires.
leeway_secs = 5

[api]
# HTTP API keys, sent as "Authorization: Bearer <key>" (TIDINGS_API_KEY, --api-key add one; none = one is generated).
keys = []
# Largest accepted HTTP request body, in bytes.
max_body_bytes = 1048576

[engine]
# Interval between server pings, in milliseconds.
ping_interval_ms = 25000
# Time a client has to answer a ping, in milliseconds.
ping_timeout_ms = 20000
# Largest accepted Engine.IO payload, in bytes.
max_payload = 1000000
# Time a client has to send its Socket.IO CONNECT, in milliseconds.
connect_timeout_ms = 45000
# Origins allowed for polling requests ("*" = any); [] disables CORS headers.
cors_origins = ["*"]

[limits]
# Concurrent connections accepted by this node.
max_connections = 100000
# Messages queued per connection; a client past this is disconnected as a slow consumer.
outbox_max_messages = 4096
# Bytes queued per connection; a client past this is disconnected as a slow consumer.
outbox_max_bytes = 8388608
# Incoming Socket.IO packets per second per connection (burst = 2x); past it the client is closed as a flood.
client_packets_per_sec = 50

# Extra namespaces besides "/", which always exists (none by default). Example:
# [[namespaces]]
# name = "/chat"
# recovery = true    # default: the value of [recovery].enabled

# Room policies, first matching pattern wins (none by default). Example:
# [[rooms]]
# pattern = "chat:*" # exact room name, or a prefix followed by "*"
# client_publish = true # members of a matching room may publish to it (default false)

[history]
# Events kept per room for recovery.
max_events = 1000
# Age after which an event leaves the history, in seconds.
max_age_secs = 300
# Cap on the bytes of history over all rooms.
max_bytes = 268435456

[recovery]
# Connection state recovery on "/", and the default for namespaces without their own flag.
enabled = true
# How long a disconnected session can still be recovered, in seconds.
max_disconnection_secs = 120

[shutdown]
# Time given to connections to close after SIGTERM / ctrl-c, in seconds.
drain_secs = 10

[redis]
# Redis URL to run several nodes as a cluster; empty = single node, in memory (TIDINGS_REDIS_URL, --redis).
url = ""
# Prefix of every Redis key and channel.
key_prefix = "tidings"
"#;

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

/// 32 random bytes from the thread-local CSPRNG, as 64 lowercase hex digits.
fn random_hex_32() -> String {
    use std::fmt::Write as _;
    let bytes: [u8; 32] = rand::random();
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn redacted(secret: &str) -> &'static str {
    if secret.is_empty() {
        ""
    } else {
        "<redacted>"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<(), String> {
        Config::parse_toml(text, "<test>")
            .map_err(|e| e.to_string())?
            .validate()
            .map_err(|e| e.to_string())
    }

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

    #[test]
    fn lists_and_policies_parse() {
        let c = Config::parse_toml(
            r#"
            [[namespaces]]
            name = "/chat"
            recovery = false
            [[namespaces]]
            name = "/feed"
            [[rooms]]
            pattern = "chat:*"
            client_publish = true
            [[rooms]]
            pattern = "*"
            [recovery]
            enabled = true
            "#,
            "<test>",
        )
        .unwrap();
        c.validate().unwrap();
        assert!(c.recovery_enabled("/"));
        assert!(!c.recovery_enabled("/chat"));
        assert!(c.recovery_enabled("/feed"), "inherits [recovery].enabled");
        assert!(!c.recovery_enabled("/unknown"));
        assert!(c.room_policy("chat:1").unwrap().client_publish);
        assert!(
            !c.room_policy("news").unwrap().client_publish,
            "first match wins"
        );
        assert!(Config::default().room_policy("news").is_none());
    }

    #[test]
    fn schema_errors() {
        let e = check("[rooms]\npattern = \"a\"\n").unwrap_err();
        assert!(e.starts_with("invalid config file <test>:"), "{e}");
        let e = check("[[rooms]]\npattern = \"a*b\"\n").unwrap_err();
        assert!(
            e.contains("'*' is only allowed as the last character"),
            "{e}"
        );
        let e = check("[[rooms]]\nclient_publish = true\n").unwrap_err();
        assert!(e.contains("missing field `pattern`"), "{e}");
        let e = check("listen = \"localhost:3000\"\n").unwrap_err();
        assert!(e.contains("invalid socket address"), "{e}");
        let e = check("conformance = true\n").unwrap_err();
        assert!(e.contains("unknown field `conformance`"), "{e}");
        let e = check("[engine]\nping_interval_ms = -1\n").unwrap_err();
        assert!(e.contains("ping_interval_ms"), "{e}");
    }

    #[test]
    fn validation_errors() {
        let cases = [
            ("public_url = \"example.com\"", "invalid config: public_url: must be empty or an http:// or https:// URL"),
            ("[auth]\njwt_secret = \"s\"\njwt_public_key = \"k.pem\"", "invalid config: auth: jwt_secret and jwt_public_key are both set; configure only one"),
            ("[api]\nkeys = [\"a b\"]", "invalid config: api.keys: keys must be non-empty and contain no whitespace or control characters"),
            ("[engine]\nping_timeout_ms = 0", "invalid config: engine.ping_timeout_ms: must be greater than 0"),
            ("[engine]\ncors_origins = [\"example.com\"]", "invalid config: engine.cors_origins: \"example.com\" is neither \"*\" nor an http(s)://host origin"),
            ("[limits]\nclient_packets_per_sec = 0", "invalid config: limits.client_packets_per_sec: must be greater than 0"),
            ("[[namespaces]]\nname = \"chat\"", "invalid config: namespaces.name: \"chat\" must start with '/'"),
            ("[[namespaces]]\nname = \"/\"", "invalid config: namespaces.name: \"/\" always exists; configure its recovery in [recovery]"),
            ("[[namespaces]]\nname = \"/a,b\"", "invalid config: namespaces.name: \"/a,b\" must be at most 200 bytes, without ',', whitespace or control characters"),
            ("[[namespaces]]\nname = \"/a\"\n[[namespaces]]\nname = \"/a\"", "invalid config: namespaces.name: \"/a\" is configured twice"),
            ("[history]\nmax_events = 0", "invalid config: history.max_events: must be greater than 0"),
            ("[redis]\nurl = \"localhost:6379\"", "invalid config: redis.url: must be empty or a redis://, rediss://, unix:// or redis+sentinel:// URL"),
            ("[redis]\nkey_prefix = \"\"", "invalid config: redis.key_prefix: must be non-empty, without whitespace or control characters"),
        ];
        for (text, expected) in cases {
            assert_eq!(check(text).unwrap_err(), expected, "for {text:?}");
        }
        let ok = "public_url = \"https://a.example\"\n[engine]\ncors_origins = [\"https://a.example\", \"*\"]\n[redis]\nurl = \"redis://127.0.0.1:6379/0\"";
        check(ok).unwrap();
    }

    #[test]
    fn ensure_secrets_generates_only_what_is_missing() {
        let mut c = Config::default();
        let generated = c.ensure_secrets();
        assert_eq!(generated.len(), 2);
        assert_eq!(generated[0].name(), "JWT secret");
        assert_eq!(generated[0].value(), c.auth.jwt_secret);
        assert_eq!(generated[1].name(), "API key");
        assert_eq!(c.api.keys, [generated[1].value()]);
        for g in &generated {
            assert_eq!(g.value().len(), 64);
            assert!(g.value().chars().all(|ch| ch.is_ascii_hexdigit()));
        }
        assert_ne!(generated[0].value(), generated[1].value());
        assert_eq!(
            generated[1].to_string(),
            format!("API key: {}", generated[1].value())
        );
        assert_eq!(format!("{:?}", generated[0]), "GeneratedSecret(JWT secret)");
        assert!(c.ensure_secrets().is_empty(), "idempotent");
        c.validate().unwrap();

        let mut with_key = Config::default();
        with_key.auth.jwt_public_key = "k.pem".into();
        with_key.api.keys = vec!["k".into()];
        assert!(with_key.ensure_secrets().is_empty());
        assert!(with_key.auth.jwt_secret.is_empty());
    }

    #[test]
    fn accessors() {
        let c = Config::default();
        assert_eq!(c.engine.ping_interval(), Duration::from_secs(25));
        assert_eq!(c.engine.ping_timeout(), Duration::from_secs(20));
        assert_eq!(c.engine.connect_timeout(), Duration::from_secs(45));
        assert_eq!(c.history.max_age(), Duration::from_secs(300));
        assert_eq!(c.recovery.max_disconnection(), Duration::from_secs(120));
        assert_eq!(c.shutdown.drain(), Duration::from_secs(10));
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
    }

    #[test]
    fn api_keys_and_debug_redaction() {
        let mut c = Config::default();
        c.api.keys = vec!["k1".into(), "k2".into()];
        c.auth.jwt_secret = "hunter2".into();
        assert!(c.api.accepts_key("k2"));
        assert!(!c.api.accepts_key("k3") && !c.api.accepts_key("k") && !c.api.accepts_key(""));
        let dump = format!("{c:?}");
        assert!(!dump.contains("hunter2") && !dump.contains("k1"), "{dump}");
        assert!(dump.contains("<redacted>"));
    }
}
