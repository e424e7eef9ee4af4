//! Flags of `tidings bench tracking` and their checked form.

use std::net::Ipv4Addr;
use std::time::Duration;

use clap::Args;

use crate::auth::{mint_claims, AuthError, Claims};
use crate::bench::plan::{parse_target, Target};
use crate::bench::sys::loopback_source;
use crate::bench::BenchError;

/// Lifetime of minted tokens: long enough for any run.
const TOKEN_TTL_SECS: u64 = 24 * 3600;
/// Connections one bench process holds at most (the open-files limit here is 20,000 per process).
pub const MAX_CONNECTIONS: u64 = 19_000;

/// Flags of `tidings bench tracking`: workers publish positions from their own connections into their team's
/// room at a steady rate; managers watch the rooms; every position is timed from the worker's send to each
/// manager.
#[derive(Debug, Clone, Args)]
pub struct TrackingArgs {
    /// Nodes, comma-separated or repeated (http:// or ws://); connections go round-robin over them, so a
    /// team's workers and managers are spread over the nodes.
    #[arg(
        long = "url",
        value_name = "URL",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:3000"
    )]
    pub urls: Vec<String>,
    /// Worker connections, each publishing its positions (`worker-<i>`, team i mod T).
    #[arg(long, value_name = "W", default_value_t = 1000)]
    pub workers: u32,
    /// Teams, each one room (`<room-prefix><t>`).
    #[arg(long, value_name = "T", default_value_t = 50)]
    pub teams: u32,
    /// Manager connections per team, each a member of its team's room.
    #[arg(long, value_name = "K", default_value_t = 2)]
    pub managers: u32,
    /// Positions per second per worker.
    #[arg(long, value_name = "R", default_value_t = 2.0)]
    pub rate: f64,
    /// Seconds of publishing.
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds to wait after publishing for answers and positions still on their way.
    #[arg(long, value_name = "S", default_value_t = 5.0)]
    pub drain: f64,
    /// Prefix of the team rooms: the nodes' room policies decide what the rooms are (ephemeral, conflated).
    #[arg(long, value_name = "P", default_value = "pos:")]
    pub room_prefix: String,
    /// The rooms conflate positions by worker over this interval (ms): managers are then expected to get the
    /// latest position of each worker, not every one (set it to the rooms' `conflate_ms`).
    #[arg(long, value_name = "MS")]
    pub conflated_ms: Option<u64>,
    /// Connect without tokens (peers without authentication: the kit's Socket.IO and socketioxide servers).
    #[arg(long)]
    pub no_auth: bool,
    /// HS256 secret the tokens are minted with (not with --no-auth).
    #[arg(
        long,
        value_name = "S",
        env = "TIDINGS_JWT_SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,
    /// Server processes whose CPU time over the run is reported per accepted position (repeatable or
    /// comma-separated; e.g. the nodes and Redis).
    #[arg(long = "server-pid", value_name = "PID", value_delimiter = ',')]
    pub server_pids: Vec<u32>,
    /// Seconds a connection may take to connect.
    #[arg(long, value_name = "S", default_value_t = 20.0)]
    pub connect_timeout: f64,
    /// Connect from 127.0.0.1 … 127.0.0.N (round-robin), to stay under per-address limits of the nodes.
    #[arg(long, value_name = "N")]
    pub source_ips: Option<u32>,
    /// Allow targets that are not loopback addresses.
    #[arg(long)]
    pub allow_remote: bool,
    /// Print one JSON line instead of the table.
    #[arg(long)]
    pub json: bool,
    /// No progress lines.
    #[arg(short, long)]
    pub quiet: bool,
    /// A name for this run in the report (e.g. the server's).
    #[arg(long, value_name = "NAME", default_value = "tidings")]
    pub label: String,
}

impl TrackingArgs {
    /// The defaults, for `url` with `secret` (library use and tests).
    pub fn new(url: &str, secret: &str) -> TrackingArgs {
        TrackingArgs {
            urls: vec![url.to_owned()],
            workers: 1000,
            teams: 50,
            managers: 2,
            rate: 2.0,
            duration: 10.0,
            drain: 5.0,
            room_prefix: "pos:".into(),
            conflated_ms: None,
            no_auth: false,
            jwt_secret: Some(secret.to_owned()),
            server_pids: Vec::new(),
            connect_timeout: 20.0,
            source_ips: None,
            allow_remote: false,
            json: false,
            quiet: false,
            label: "tidings".into(),
        }
    }
}

/// A connection of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Manager `k` of team `t`.
    Manager(u32, u32),
    /// Worker `i` (of team i mod T).
    Worker(u32),
}

/// The checked flags.
#[derive(Debug, Clone)]
pub struct TrackingPlan {
    /// Nodes.
    pub targets: Vec<Target>,
    /// Workers.
    pub workers: u32,
    /// Teams.
    pub teams: u32,
    /// Managers per team.
    pub managers: u32,
    /// Positions per second per worker.
    pub rate: f64,
    /// Publishing time.
    pub duration: Duration,
    /// Drain time.
    pub drain: Duration,
    /// Team room prefix.
    pub room_prefix: String,
    /// Conflation interval the rooms are expected to have.
    pub conflated: Option<Duration>,
    /// Token secret (`None`: no tokens).
    pub secret: Option<String>,
    /// Server processes to measure.
    pub server_pids: Vec<u32>,
    /// Connect time limit.
    pub connect_timeout: Duration,
    /// Loopback source addresses to spread over.
    pub source_ips: Option<u32>,
    /// JSON output.
    pub json: bool,
    /// No progress lines.
    pub quiet: bool,
    /// The run's name.
    pub label: String,
}

impl TrackingPlan {
    /// Checks `args`.
    pub fn from_args(args: &TrackingArgs) -> Result<TrackingPlan, BenchError> {
        let invalid = |m: &str| BenchError::Invalid(m.to_owned());
        if args.workers == 0 || args.teams == 0 || args.managers == 0 {
            return Err(invalid(
                "--workers, --teams and --managers must be at least 1",
            ));
        }
        if args.teams > args.workers {
            return Err(invalid("--teams must be at most --workers"));
        }
        let connections =
            u64::from(args.workers) + u64::from(args.teams) * u64::from(args.managers);
        if connections > MAX_CONNECTIONS {
            return Err(invalid(&format!(
                "{connections} connections: one bench process holds at most {MAX_CONNECTIONS} (open-files limit); run several processes"
            )));
        }
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(args.rate) || !positive(args.duration) || !positive(args.connect_timeout) {
            return Err(invalid(
                "--rate, --duration and --connect-timeout must be greater than 0",
            ));
        }
        if !(args.drain.is_finite() && args.drain >= 0.0) {
            return Err(invalid("--drain must be 0 or more"));
        }
        let secret = match (&args.jwt_secret, args.no_auth) {
            (_, true) => None,
            (Some(secret), false) if !secret.is_empty() => Some(secret.clone()),
            _ => {
                return Err(invalid(
                    "--jwt-secret (or TIDINGS_JWT_SECRET) is needed, or --no-auth for servers without tokens",
                ))
            }
        };
        if args.source_ips.is_some_and(|n| n == 0 || n > 65_000) {
            return Err(invalid("--source-ips must be 1..=65000"));
        }
        if args.room_prefix.is_empty() || args.room_prefix.len() > 64 {
            return Err(invalid("--room-prefix must be 1 to 64 bytes"));
        }
        let targets = args
            .urls
            .iter()
            .map(|url| parse_target(url, args.allow_remote))
            .collect::<Result<Vec<_>, _>>()?;
        if targets.is_empty() {
            return Err(invalid("--url is needed"));
        }
        Ok(TrackingPlan {
            targets,
            workers: args.workers,
            teams: args.teams,
            managers: args.managers,
            rate: args.rate,
            duration: Duration::from_secs_f64(args.duration),
            drain: Duration::from_secs_f64(args.drain),
            room_prefix: args.room_prefix.clone(),
            conflated: args.conflated_ms.map(Duration::from_millis),
            secret,
            server_pids: args.server_pids.clone(),
            connect_timeout: Duration::from_secs_f64(args.connect_timeout),
            source_ips: args.source_ips,
            json: args.json,
            quiet: args.quiet,
            label: args.label.clone(),
        })
    }

    /// Every connection: the managers first (they must watch before anything is sent), then the workers.
    pub fn roles(&self) -> Vec<Role> {
        let managers =
            (0..self.teams).flat_map(|t| (0..self.managers).map(move |k| Role::Manager(t, k)));
        managers
            .chain((0..self.workers).map(Role::Worker))
            .collect()
    }

    /// Connection number of `role`, which decides its node and source address.
    pub fn index_of(&self, role: Role) -> usize {
        match role {
            Role::Manager(t, k) => (t * self.managers + k) as usize,
            Role::Worker(i) => (self.teams * self.managers + i) as usize,
        }
    }

    /// Node of `role`.
    pub fn target_of(&self, role: Role) -> &Target {
        &self.targets[self.index_of(role) % self.targets.len()]
    }

    /// Source address of `role`, if spread over several.
    pub fn source_of(&self, role: Role) -> Option<Ipv4Addr> {
        let n = self.source_ips?;
        Some(loopback_source(
            (self.index_of(role) as u64 % u64::from(n)) as u32,
        ))
    }

    /// Team of worker `i`.
    pub fn team_of(&self, worker: u32) -> u32 {
        worker % self.teams
    }

    /// Workers of team `t`.
    pub fn team_size(&self, team: u32) -> u32 {
        self.workers / self.teams + u32::from(team < self.workers % self.teams)
    }

    /// Room of team `t`.
    pub fn room(&self, team: u32) -> String {
        format!("{}{team}", self.room_prefix)
    }

    /// Positions every worker publishes.
    pub fn positions_per_worker(&self) -> u64 {
        ((self.rate * self.duration.as_secs_f64()).round() as u64).max(1)
    }

    /// The CONNECT payload of `role`: a worker may publish to its team's room, a manager may join only its own.
    pub fn auth_of(&self, role: Role) -> Result<serde_json::Value, AuthError> {
        let Some(secret) = &self.secret else {
            return Ok(serde_json::json!({}));
        };
        let claims = match role {
            Role::Worker(i) => Claims {
                sub: format!("worker-{i}"),
                publish: vec![self.room(self.team_of(i))],
                ..Claims::default()
            },
            Role::Manager(t, k) => Claims {
                sub: format!("manager-{t}-{k}"),
                rooms: vec![self.room(t)],
                ..Claims::default()
            },
        };
        let token = mint_claims(secret, claims, TOKEN_TTL_SECS)?;
        Ok(serde_json::json!({ "token": token }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teams_rooms_and_tokens() {
        let mut args =
            TrackingArgs::new("http://127.0.0.1:1", "secret-0123456789abcdef0123456789ab");
        args.urls.push("http://127.0.0.1:2".into());
        args.workers = 10;
        args.teams = 3;
        args.managers = 2;
        let plan = TrackingPlan::from_args(&args).unwrap();
        assert_eq!(plan.roles().len(), 16);
        assert_eq!(
            (plan.team_size(0), plan.team_size(1), plan.team_size(2)),
            (4, 3, 3)
        );
        assert_eq!(plan.team_of(7), 1);
        assert_eq!(plan.room(2), "pos:2");
        assert_eq!(plan.positions_per_worker(), 20);
        let ports: Vec<u16> = [Role::Manager(0, 0), Role::Manager(0, 1), Role::Worker(0)]
            .iter()
            .map(|&r| plan.target_of(r).addr.port())
            .collect();
        assert_eq!(ports, [1, 2, 1], "a team's managers are on both nodes");
        assert!(plan.auth_of(Role::Worker(1)).unwrap()["token"].is_string());
        args.no_auth = true;
        let open = TrackingPlan::from_args(&args).unwrap();
        assert_eq!(
            open.auth_of(Role::Worker(1)).unwrap(),
            serde_json::json!({})
        );
        args.no_auth = false;
        args.jwt_secret = None;
        assert!(TrackingPlan::from_args(&args).is_err());
        args.jwt_secret = Some("s".repeat(32));
        args.workers = 20_000;
        assert!(TrackingPlan::from_args(&args).is_err());
    }
}
