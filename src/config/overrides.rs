//! The environment / command-line layer: [`Overrides`], read from `TIDINGS_*` or flags and applied over a [`Config`].

use std::net::SocketAddr;

use super::{Config, ConfigError};

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
    /// `TIDINGS_REDIS_PARTITIONS`: comma-separated Redis groups.
    pub redis_partitions: Option<String>,
    /// `TIDINGS_DATA_DIR` / `--data-dir`.
    pub data_dir: Option<String>,
    /// `TIDINGS_PUBLIC_URL` / `--public-url`: sets `public_url`.
    pub public_url: Option<String>,
    /// `TIDINGS_REDIS_KEY_PREFIX` / `--redis-key-prefix`: sets `redis.key_prefix`.
    pub redis_key_prefix: Option<String>,
    /// `TIDINGS_MAX_CONNECTIONS` / `--max-connections`: sets `limits.max_connections`.
    pub max_connections: Option<usize>,
    /// `TIDINGS_INSECURE_DEV_SECRETS` / `--insecure-dev-secrets`: sets `auth.insecure_dev_secrets`.
    pub insecure_dev_secrets: Option<bool>,
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
            Some(text) => Some(
                super::parse_listen(&text).map_err(|message| ConfigError::Env {
                    var: "TIDINGS_LISTEN",
                    message,
                })?,
            ),
            None => None,
        };
        let max_connections = match get("TIDINGS_MAX_CONNECTIONS") {
            Some(text) => Some(text.trim().parse().map_err(|_| ConfigError::Env {
                var: "TIDINGS_MAX_CONNECTIONS",
                message: format!("{text:?} is not a number of connections"),
            })?),
            None => None,
        };
        let insecure_dev_secrets = match get("TIDINGS_INSECURE_DEV_SECRETS") {
            Some(text) => Some(parse_flag(&text).ok_or_else(|| ConfigError::Env {
                var: "TIDINGS_INSECURE_DEV_SECRETS",
                message: format!("{text:?} is not one of 1, true, yes, on, 0, false, no, off"),
            })?),
            None => None,
        };
        let overrides = Self {
            listen,
            jwt_secret: get("TIDINGS_JWT_SECRET"),
            jwt_public_key: get("TIDINGS_JWT_PUBLIC_KEY"),
            api_key: get("TIDINGS_API_KEY"),
            redis_url: get("TIDINGS_REDIS_URL"),
            redis_partitions: get("TIDINGS_REDIS_PARTITIONS"),
            data_dir: get("TIDINGS_DATA_DIR"),
            public_url: get("TIDINGS_PUBLIC_URL"),
            redis_key_prefix: get("TIDINGS_REDIS_KEY_PREFIX"),
            max_connections,
            insecure_dev_secrets,
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

impl Config {
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
        if let Some(list) = &overrides.redis_partitions {
            self.redis.partitions = list
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if let Some(url) = &overrides.redis_url {
            self.redis.url.clone_from(url);
        }
        if let Some(dir) = &overrides.data_dir {
            self.storage.data_dir.clone_from(dir);
        }
        if let Some(url) = &overrides.public_url {
            self.public_url.clone_from(url);
        }
        if let Some(prefix) = &overrides.redis_key_prefix {
            self.redis.key_prefix.clone_from(prefix);
        }
        if let Some(max) = overrides.max_connections {
            self.limits.max_connections = max;
        }
        if let Some(insecure) = overrides.insecure_dev_secrets {
            self.auth.insecure_dev_secrets = insecure;
        }
        self.conformance |= overrides.conformance;
    }
}

/// A boolean environment value: `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`, any case.
fn parse_flag(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}
