//! Command line (clap): `serve`, `gentoken`, `genconfig`, and how `serve`'s flags and the environment are layered
//! over the config file.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::auth::{mint_claims, AuthError, Claims};
pub use crate::bench::BenchArgs;
use crate::config::{Config, ConfigError, Overrides};

/// The `tidings` command line.
#[derive(Debug, Parser)]
#[command(
    name = "tidings",
    version,
    about = "Real-time event server speaking the Socket.IO v4 protocol"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (log filter: TIDINGS_LOG, default "info", e.g. TIDINGS_LOG=debug or "info,tidings=debug").
    Serve(ServeArgs),
    /// Print an HS256 JWT for development and tests.
    Gentoken(GentokenArgs),
    /// Print a commented configuration file holding every option with its default.
    Genconfig,
    /// Load-test running nodes: N Socket.IO clients subscribe, events are published at a steady rate,
    /// every delivery is timed.
    Bench(BenchArgs),
}

/// Flags of `tidings serve`. Precedence: defaults < config file < `TIDINGS_*` environment < these flags.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML config file (`tidings genconfig` prints one with every option). Any option can also be set with
    /// TIDINGS__<SECTION>__<KEY>, e.g. TIDINGS__LIMITS__MAX_CONNECTIONS=5000.
    #[arg(
        long,
        value_name = "FILE",
        env = "TIDINGS_CONFIG",
        hide_env_values = true
    )]
    pub config: Option<PathBuf>,
    /// Address to listen on: IP:port, e.g. 0.0.0.0:3000, or localhost:port [env: TIDINGS_LISTEN].
    #[arg(long, value_name = "ADDR", value_parser = crate::config::parse_listen)]
    pub listen: Option<SocketAddr>,
    /// HS256 secret for client tokens [env: TIDINGS_JWT_SECRET].
    #[arg(long, value_name = "S", conflicts_with = "jwt_public_key")]
    pub jwt_secret: Option<String>,
    /// PEM public key file for RS256 / ES256 client tokens [env: TIDINGS_JWT_PUBLIC_KEY].
    #[arg(long, value_name = "PEM_FILE")]
    pub jwt_public_key: Option<String>,
    /// API key accepted by the HTTP API, added to the configured ones [env: TIDINGS_API_KEY].
    #[arg(long, value_name = "K")]
    pub api_key: Option<String>,
    /// Redis URL; runs this node as part of a cluster [env: TIDINGS_REDIS_URL].
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// Redis groups the rooms' events are spread over, comma-separated (`redis.partitions`)
    /// [env: TIDINGS_REDIS_PARTITIONS].
    #[arg(long, value_name = "URLS")]
    pub redis_partitions: Option<String>,
    /// Directory of the embedded store: messages, statuses, room history and recovery sessions survive a
    /// restart [env: TIDINGS_DATA_DIR].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
    /// URL other nodes and clients reach this node at, http:// only (https is not supported: terminate TLS in
    /// front of the nodes) [env: TIDINGS_PUBLIC_URL].
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// Prefix of every Redis key and channel; one cluster per prefix [env: TIDINGS_REDIS_KEY_PREFIX].
    #[arg(long, value_name = "PREFIX")]
    pub redis_key_prefix: Option<String>,
    /// Most connections this node accepts [env: TIDINGS_MAX_CONNECTIONS].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Development only: accept an HS256 secret shorter than 32 bytes and API keys shorter than 16
    /// [env: TIDINGS_INSECURE_DEV_SECRETS].
    #[arg(long)]
    pub insecure_dev_secrets: bool,
    /// Testing only: serve the echo handlers the official Socket.IO / Engine.IO test suites and the Autobahn
    /// WebSocket suite expect (/ws-echo), instead of the application.
    #[arg(long)]
    pub conformance: bool,
    /// Log lines as text (for people) or one JSON object per line (for log collectors).
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        env = "TIDINGS_LOG_FORMAT",
        hide_env_values = true,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

/// How `tidings serve` writes its log lines (to stderr).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, coloured on a terminal.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields`, and the spans (e.g. an API request's
    /// `request_id`).
    Json,
}

impl ServeArgs {
    /// The top layer these flags make.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen,
            jwt_secret: self.jwt_secret.clone(),
            jwt_public_key: self.jwt_public_key.clone(),
            api_key: self.api_key.clone(),
            redis_url: self.redis.clone(),
            redis_partitions: self.redis_partitions.clone(),
            data_dir: self.data_dir.clone(),
            public_url: self.public_url.clone(),
            redis_key_prefix: self.redis_key_prefix.clone(),
            max_connections: self.max_connections,
            insecure_dev_secrets: self.insecure_dev_secrets.then_some(true),
            conformance: self.conformance,
        }
    }

    /// Loads the config file, applies this process's `TIDINGS_*` environment and then the flags, and validates.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        self.load_config_with_env(|var| std::env::var(var).ok())
    }

    /// Like [`ServeArgs::load_config`], with `env` standing in for the environment (tests).
    pub fn load_config_with_env(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut config = Config::load_with_env(self.config.as_deref(), &env)?;
        config.apply(&Overrides::from_env_with(env)?);
        config.apply(&self.overrides());
        config.validate()?;
        Ok(config)
    }
}

/// Flags of `tidings gentoken`.
#[derive(Debug, Clone, Args)]
pub struct GentokenArgs {
    /// HS256 secret to sign with.
    #[arg(
        long,
        value_name = "S",
        env = "TIDINGS_JWT_SECRET",
        hide_env_values = true
    )]
    pub secret: String,
    /// User id (the `sub` claim).
    #[arg(long, value_name = "USER")]
    pub sub: String,
    /// Comma-separated patterns of rooms the user may join, e.g. 'team:*,news'.
    #[arg(long, value_name = "PATTERNS", default_value = "")]
    pub rooms: String,
    /// Comma-separated rooms joined when the user connects.
    #[arg(long, value_name = "ROOMS", default_value = "")]
    pub join: String,
    /// Comma-separated patterns of rooms the user may publish to.
    #[arg(long, value_name = "PATTERNS", default_value = "")]
    pub publish: String,
    /// Comma-separated patterns of the users the user may send direct messages to, e.g. 'bob,support-*'.
    #[arg(long, value_name = "PATTERNS", default_value = "")]
    pub dm: String,
    /// Seconds until the token expires (every minted token has an `exp`).
    #[arg(long, value_name = "SECS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub ttl: u64,
}

impl GentokenArgs {
    /// Mints the token these flags describe.
    pub fn mint(&self) -> Result<String, AuthError> {
        let claims = Claims {
            sub: self.sub.clone(),
            rooms: split_list(&self.rooms),
            join: split_list(&self.join),
            publish: split_list(&self.publish),
            dm: split_list(&self.dm),
            ..Claims::default()
        };
        mint_claims(&self.secret, claims, self.ttl)
    }
}

/// Splits a comma-separated flag value, trimming entries and dropping empty ones.
fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Authenticator;
    use clap::CommandFactory;
    use std::collections::HashMap;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tidings").chain(args.iter().copied()))
    }

    fn serve_args(args: &[&str]) -> ServeArgs {
        match parse(&[&["serve"], args].concat()).unwrap().command {
            Command::Serve(a) => a,
            other => panic!("not serve: {other:?}"),
        }
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    /// A config file unique to this test, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, text: &str) -> Self {
            let path =
                std::env::temp_dir().join(format!("tidings-{}-{name}.toml", std::process::id()));
            std::fs::write(&path, text).unwrap();
            Self(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_flags() {
        let a = serve_args(&[
            "--listen",
            "0.0.0.0:4000",
            "--jwt-secret",
            "s",
            "--api-key",
            "k",
            "--redis",
            "redis://127.0.0.1:6379",
            "--conformance",
        ]);
        assert_eq!(a.listen, Some("0.0.0.0:4000".parse().unwrap()));
        assert_eq!(a.jwt_secret.as_deref(), Some("s"));
        assert!(a.conformance);
        assert!(parse(&["serve", "--jwt-secret", "s", "--jwt-public-key", "k.pem"]).is_err());
        assert!(parse(&["serve", "--listen", "localhost"]).is_err());
        assert_eq!(
            serve_args(&["--listen", "localhost:4000"]).listen,
            Some("127.0.0.1:4000".parse().unwrap())
        );
        let help = Cli::command()
            .find_subcommand_mut("serve")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(help.contains("--conformance"));
        assert!(help.contains("TIDINGS_LISTEN"));
        assert!(help.contains("TIDINGS_PUBLIC_URL") && help.contains("TIDINGS_REDIS_KEY_PREFIX"));
        assert!(!help.contains("=]"), "no empty `NAME=` env hints: {help}");
    }

    #[test]
    fn precedence_file_env_flags() {
        let file = TempFile::new(
            "precedence",
            r#"
            listen = "127.0.0.1:1001"
            workers = 3
            [auth]
            jwt_public_key = "/keys/file.pem"
            [api]
            keys = ["file-key-0123456789"]
            [redis]
            url = "redis://file"
            "#,
        );
        let path = file.0.to_str().unwrap();
        // File only.
        let c = serve_args(&["--config", path])
            .load_config_with_env(env(&[]))
            .unwrap();
        assert_eq!(c.listen.port(), 1001);
        assert_eq!(c.workers, 3);
        assert_eq!(c.auth.jwt_public_key, "/keys/file.pem");
        // Env over file: the env secret replaces the file's public key.
        let e = env(&[
            ("TIDINGS_LISTEN", "127.0.0.1:1002"),
            (
                "TIDINGS_JWT_SECRET",
                "env-secret-0123456789abcdef0123456789",
            ),
            ("TIDINGS_API_KEY", "env-key-0123456789"),
            ("TIDINGS_REDIS_URL", "redis://env"),
        ]);
        let c = serve_args(&["--config", path])
            .load_config_with_env(&e)
            .unwrap();
        assert_eq!(c.listen.port(), 1002);
        assert_eq!(c.auth.jwt_secret, "env-secret-0123456789abcdef0123456789");
        assert_eq!(c.auth.jwt_public_key, "");
        assert_eq!(c.api.keys, ["file-key-0123456789", "env-key-0123456789"]);
        assert_eq!(c.redis.url, "redis://env");
        // Flags over env.
        let flags = serve_args(&[
            "--config",
            path,
            "--listen",
            "127.0.0.1:1003",
            "--jwt-public-key",
            "/keys/flag.pem",
            "--api-key",
            "flag-key-0123456789",
            "--redis",
            "redis://flag",
        ]);
        let c = flags.load_config_with_env(&e).unwrap();
        assert_eq!(c.listen.port(), 1003);
        assert_eq!(c.auth.jwt_public_key, "/keys/flag.pem");
        assert_eq!(c.auth.jwt_secret, "");
        assert_eq!(
            c.api.keys,
            [
                "file-key-0123456789",
                "env-key-0123456789",
                "flag-key-0123456789"
            ]
        );
        assert_eq!(c.redis.url, "redis://flag");
        assert!(!c.conformance);
        // Defaults when nothing is given.
        let c = ServeArgs::default().load_config_with_env(env(&[])).unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn bad_inputs_are_reported() {
        let err = |args: &[&str], vars: &[(&str, &str)]| {
            serve_args(args)
                .load_config_with_env(env(vars))
                .unwrap_err()
                .to_string()
        };
        let msg = err(&[], &[("TIDINGS_LISTEN", "nowhere")]);
        assert!(
            msg.starts_with("environment variable TIDINGS_LISTEN: \"nowhere\""),
            "{msg}"
        );
        let msg = err(
            &[],
            &[("TIDINGS_JWT_SECRET", "s"), ("TIDINGS_JWT_PUBLIC_KEY", "k")],
        );
        assert!(msg.contains("set only one"), "{msg}");
        let msg = err(&["--config", "/nonexistent/tidings.toml"], &[]);
        assert!(
            msg.starts_with("cannot read config file /nonexistent/tidings.toml"),
            "{msg}"
        );
        let file = TempFile::new("unknown-key", "[engine]\nping_interval = 5\n");
        let msg = err(&["--config", file.0.to_str().unwrap()], &[]);
        assert!(msg.contains("unknown field `ping_interval`"), "{msg}");
        let file = TempFile::new("zero-ping", "[engine]\nping_interval_ms = 0\n");
        let msg = err(&["--config", file.0.to_str().unwrap()], &[]);
        assert_eq!(
            msg,
            "invalid config: engine.ping_interval_ms: must be greater than 0"
        );
        // Empty variables count as unset.
        assert!(serve_args(&[])
            .load_config_with_env(env(&[("TIDINGS_LISTEN", "")]))
            .is_ok());
    }

    #[test]
    fn short_secrets_need_the_insecure_flag() {
        let short = [
            ("TIDINGS_JWT_SECRET", "dev-secret"),
            ("TIDINGS_API_KEY", "dev-key"),
        ];
        let msg = serve_args(&[])
            .load_config_with_env(env(&short))
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("invalid config: auth.jwt_secret: the HS256 secret is 10 bytes")
                && msg.contains("--insecure-dev-secrets"),
            "{msg}"
        );
        let c = serve_args(&["--insecure-dev-secrets"])
            .load_config_with_env(env(&short))
            .unwrap();
        assert!(c.auth.insecure_dev_secrets);
        let with_env = [short[0], short[1], ("TIDINGS_INSECURE_DEV_SECRETS", "true")];
        assert!(
            serve_args(&[])
                .load_config_with_env(env(&with_env))
                .unwrap()
                .auth
                .insecure_dev_secrets
        );
        // The flag wins over the environment, the environment over the file.
        let file = TempFile::new(
            "insecure",
            "[auth]\ninsecure_dev_secrets = true\njwt_secret = \"s\"\n",
        );
        let path = file.0.to_str().unwrap();
        let off = [("TIDINGS_INSECURE_DEV_SECRETS", "0")];
        assert!(serve_args(&["--config", path])
            .load_config_with_env(env(&off))
            .is_err());
        assert!(serve_args(&["--config", path, "--insecure-dev-secrets"])
            .load_config_with_env(env(&off))
            .is_ok());
        let msg = serve_args(&[])
            .load_config_with_env(env(&[("TIDINGS_INSECURE_DEV_SECRETS", "maybe")]))
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("environment variable TIDINGS_INSECURE_DEV_SECRETS: \"maybe\""),
            "{msg}"
        );
    }

    #[test]
    fn gentoken_mints_a_verifiable_token() {
        let cli = parse(&[
            "gentoken",
            "--secret",
            "dev",
            "--sub",
            "alice",
            "--rooms",
            "team:*, news",
            "--join",
            "news",
            "--publish",
            "chat:*",
            "--dm",
            "bob, support-*",
            "--ttl",
            "60",
        ])
        .unwrap();
        let Command::Gentoken(args) = cli.command else {
            panic!("not gentoken");
        };
        let v = Authenticator::hs256("dev", 0)
            .verify(&args.mint().unwrap())
            .unwrap();
        assert_eq!(v.sub(), "alice");
        assert!(v.may_dm("bob") && v.may_dm("support-7") && !v.may_dm("carol"));
        assert!(v.may_join("team:x") && v.may_join("news") && v.may_publish("chat:1"));
        assert_eq!(v.auto_join().collect::<Vec<_>>(), ["news"]);
        assert!(v.expires_at().is_some());
        assert!(
            parse(&["gentoken", "--secret", "dev"]).is_err(),
            "--sub is required"
        );
    }

    #[test]
    fn gentoken_defaults_and_bad_rooms() {
        let Command::Gentoken(args) = parse(&["gentoken", "--secret", "s", "--sub", "u"])
            .unwrap()
            .command
        else {
            panic!("not gentoken");
        };
        assert_eq!(args.ttl, 3600);
        assert!(args.mint().is_ok());
        let bad = GentokenArgs {
            rooms: "a*b".into(),
            ..args
        };
        assert!(bad
            .mint()
            .unwrap_err()
            .to_string()
            .contains("claim `rooms`"));
    }

    #[test]
    fn genconfig_parses() {
        assert!(matches!(
            parse(&["genconfig"]).unwrap().command,
            Command::Genconfig
        ));
    }
}
