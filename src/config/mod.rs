//! Server configuration: defaults < TOML file < `TIDINGS_*` environment < command-line flags, validated once at
//! startup, plus the commented default file that `tidings genconfig` prints.
//!
//! This module holds [`Config`] itself, loading it from TOML and its cross-section lookups; the rest is split by job:
//! `sections` (the `[section]` structs and their defaults), `overrides` (the environment / flag layer),
//! `validate` (rules serde cannot express), `secrets` (generated secrets, redaction) and `template` (the
//! `genconfig` file).

mod address;
pub mod env_table;
mod overrides;
mod secrets;
mod sections;
mod template;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use address::parse_listen;
pub use overrides::Overrides;
pub use secrets::GeneratedSecret;
pub use sections::{
    AdminConfig, ApiConfig, AuthConfig, EngineConfig, HistoryConfig, KafkaConfig,
    KafkaEgressConfig, KafkaIngestConfig, LimitsConfig, MessagesConfig, NamespaceConfig,
    RecoveryConfig, RedisConfig, RoomPolicy, ShutdownConfig, StorageConfig, MIN_API_KEY_BYTES,
    MIN_JWT_SECRET_BYTES,
};
pub use template::DEFAULT_CONFIG_TOML;

/// Everything the server can be configured with. Each section has its own struct; every field has a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the server listens on (Socket.IO and HTTP API): `IP:port` or `localhost:port`.
    #[serde(deserialize_with = "address::deserialize_listen")]
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
    /// Operator endpoints (`/metrics`, `/stats`).
    pub admin: AdminConfig,
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
    /// The embedded store.
    pub storage: StorageConfig,
    /// Direct messages.
    pub messages: MessagesConfig,
    /// Kafka topics the node publishes from.
    pub kafka: KafkaConfig,
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
            admin: AdminConfig::default(),
            engine: EngineConfig::default(),
            limits: LimitsConfig::default(),
            namespaces: Vec::new(),
            rooms: Vec::new(),
            history: HistoryConfig::default(),
            recovery: RecoveryConfig::default(),
            shutdown: ShutdownConfig::default(),
            redis: RedisConfig::default(),
            storage: StorageConfig::default(),
            messages: MessagesConfig::default(),
            kafka: KafkaConfig::default(),
            conformance: false,
        }
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

    /// Like [`Config::load`], with the options set by `TIDINGS__<SECTION>__<KEY>` variables (`get` reads the
    /// environment) laid over the file; see [`env_table`].
    pub fn load_with_env(
        file: Option<&Path>,
        get: &impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let overlay = env_table::collect(get);
        if overlay.is_empty() {
            return Self::load(file);
        }
        match file {
            None => env_table::load(None, overlay),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
                    path: path.to_owned(),
                    error,
                })?;
                env_table::load(Some((&text, &path.display().to_string())), overlay)
            }
        }
    }

    /// Parses TOML text over the defaults; `origin` names the text in errors.
    pub fn parse_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|error| ConfigError::Parse {
            origin: origin.to_owned(),
            error,
        })
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses and validates `text`, giving the error message (shared with the validation tests).
    pub(super) fn check(text: &str) -> Result<(), String> {
        Config::parse_toml(text, "<test>")
            .map_err(|e| e.to_string())?
            .validate()
            .map_err(|e| e.to_string())
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
        let e = check("listen = \"example.com:3000\"\n").unwrap_err();
        assert!(e.contains("use IP:port"), "{e}");
        assert!(check("listen = \"localhost:3000\"\n").is_ok());
        let e = check("conformance = true\n").unwrap_err();
        assert!(e.contains("unknown field `conformance`"), "{e}");
        let e = check("[engine]\nping_interval_ms = -1\n").unwrap_err();
        assert!(e.contains("ping_interval_ms"), "{e}");
        let e = check("[[rooms]]\npattern = \"t:*\"\nconflate_ms = 1000\n").unwrap_err();
        assert!(e.contains("rooms.conflate_key"), "{e}");
        let e = check("[[rooms]]\npattern = \"t:*\"\nconflate_key = \"id\"\n").unwrap_err();
        assert!(e.contains("rooms.conflate_key"), "{e}");
        let e = check("[[rooms]]\npattern = \"t:*\"\nconflate_ms = 60001\nconflate_key = \"id\"\n")
            .unwrap_err();
        assert!(e.contains("rooms.conflate_ms"), "{e}");
        let e = check("[[rooms]]\npattern = \"t:*\"\nclient_publish_burst = 5\n").unwrap_err();
        assert!(e.contains("rooms.client_publish_burst"), "{e}");
        check("[[rooms]]\npattern = \"t:*\"\nconflate_ms = 1000\nconflate_key = \"id\"\nclient_publish_per_sec = 4\n")
            .unwrap();
    }
}
