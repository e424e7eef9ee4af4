//! Flags of `tidings bench dm` and their checked form.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::auth::{mint_claims, AuthError, Claims};
use crate::bench::plan::{parse_target, Target};
use crate::bench::sys::loopback_source;
use crate::bench::BenchError;

/// Lifetime of minted tokens: long enough for any run.
const TOKEN_TTL_SECS: u64 = 24 * 3600;
/// Most devices per recipient (one bit each in the ledger).
pub const MAX_DEVICES: u32 = 64;

/// Flags of `tidings bench dm`: senders emit direct messages at a steady aggregate rate to recipients whose
/// devices acknowledge each one; every step is timed.
#[derive(Debug, Clone, Args)]
pub struct DmArgs {
    /// Nodes, comma-separated or repeated (http:// or ws://); connections go round-robin over them, so the devices
    /// of one user land on different nodes.
    #[arg(
        long = "url",
        value_name = "URL",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:3000"
    )]
    pub urls: Vec<String>,
    /// Sender connections, each the only device of its own user (`dm-sender-<i>`, allowed to message anyone).
    #[arg(long, value_name = "S", default_value_t = 10)]
    pub senders: u32,
    /// Recipient users (`dm-user-<r>`).
    #[arg(long, value_name = "R", default_value_t = 100)]
    pub recipients: u32,
    /// Device connections per recipient (`device-<d>`), at most 64.
    #[arg(long, value_name = "D", default_value_t = 2)]
    pub devices: u32,
    /// Messages per second over all senders; message k goes to recipient k mod R.
    #[arg(long, value_name = "M", default_value_t = 1000.0)]
    pub rate: f64,
    /// Seconds of sending.
    #[arg(long, value_name = "T", default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds to wait after sending for answers, receipts and statuses still on their way.
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    pub drain: f64,
    /// Seconds a connection may take to connect.
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    pub connect_timeout: f64,
    /// HS256 secret the tokens are minted with.
    #[arg(
        long,
        value_name = "S",
        env = "TIDINGS_JWT_SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: String,
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
    /// Also replace (or append) the section TITLE of the benchmarks file with the table.
    #[arg(long, value_name = "TITLE")]
    pub write_benchmarks: Option<String>,
    /// The benchmarks file for --write-benchmarks.
    #[arg(long, value_name = "FILE", default_value = "BENCHMARKS.md")]
    pub benchmarks_file: PathBuf,
}

impl DmArgs {
    /// The defaults, for `url` with `secret` (library use and tests).
    pub fn new(url: &str, secret: &str) -> DmArgs {
        DmArgs {
            urls: vec![url.to_owned()],
            senders: 10,
            recipients: 100,
            devices: 2,
            rate: 1000.0,
            duration: 10.0,
            drain: 10.0,
            connect_timeout: 10.0,
            jwt_secret: secret.to_owned(),
            source_ips: None,
            allow_remote: false,
            json: false,
            quiet: false,
            write_benchmarks: None,
            benchmarks_file: PathBuf::from("BENCHMARKS.md"),
        }
    }
}

/// A connection of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sender `i`.
    Sender(u32),
    /// Device `d` of recipient `r`.
    Device(u32, u32),
}

/// The checked flags.
#[derive(Debug, Clone)]
pub struct DmPlan {
    /// Nodes.
    pub targets: Vec<Target>,
    /// Senders.
    pub senders: u32,
    /// Recipient users.
    pub recipients: u32,
    /// Devices per recipient.
    pub devices: u32,
    /// Messages per second, all senders together.
    pub rate: f64,
    /// Sending time.
    pub duration: Duration,
    /// Drain time.
    pub drain: Duration,
    /// Connect time limit.
    pub connect_timeout: Duration,
    /// Token secret.
    pub secret: String,
    /// Loopback source addresses to spread over.
    pub source_ips: Option<u32>,
    /// JSON output.
    pub json: bool,
    /// No progress lines.
    pub quiet: bool,
    /// Prefix of this run's idempotency keys, so a rerun against the same store is not taken for a resend.
    pub run_tag: String,
}

impl DmPlan {
    /// Checks `args`.
    pub fn from_args(args: &DmArgs) -> Result<DmPlan, BenchError> {
        let invalid = |m: &str| BenchError::Invalid(m.to_owned());
        if args.senders == 0 || args.recipients == 0 || args.devices == 0 {
            return Err(invalid(
                "--senders, --recipients and --devices must be at least 1",
            ));
        }
        if args.devices > MAX_DEVICES {
            return Err(invalid("--devices must be at most 64"));
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
        if args.jwt_secret.is_empty() {
            return Err(invalid("--jwt-secret (or TIDINGS_JWT_SECRET) is needed"));
        }
        if args.source_ips.is_some_and(|n| n == 0 || n > 65_000) {
            return Err(invalid("--source-ips must be 1..=65000"));
        }
        let targets = args
            .urls
            .iter()
            .map(|url| parse_target(url, args.allow_remote))
            .collect::<Result<Vec<_>, _>>()?;
        if targets.is_empty() {
            return Err(invalid("--url is needed"));
        }
        Ok(DmPlan {
            targets,
            senders: args.senders,
            recipients: args.recipients,
            devices: args.devices,
            rate: args.rate,
            duration: Duration::from_secs_f64(args.duration),
            drain: Duration::from_secs_f64(args.drain),
            connect_timeout: Duration::from_secs_f64(args.connect_timeout),
            secret: args.jwt_secret.clone(),
            source_ips: args.source_ips,
            json: args.json,
            quiet: args.quiet,
            run_tag: format!("r{}", crate::bench::sys::unix_micros()),
        })
    }

    /// Messages of the run.
    pub fn messages(&self) -> u64 {
        ((self.rate * self.duration.as_secs_f64()).round() as u64).max(1)
    }

    /// Every connection: the devices first (they must be there before anything is sent), then the senders.
    pub fn roles(&self) -> Vec<Role> {
        let devices =
            (0..self.recipients).flat_map(|r| (0..self.devices).map(move |d| Role::Device(r, d)));
        devices.chain((0..self.senders).map(Role::Sender)).collect()
    }

    /// Connection number of `role`, which decides its node and source address: the devices of a user are
    /// consecutive, so round-robin puts them on different nodes.
    pub fn index_of(&self, role: Role) -> usize {
        match role {
            Role::Device(r, d) => (r * self.devices + d) as usize,
            Role::Sender(i) => (self.recipients * self.devices + i) as usize,
        }
    }

    /// Node of `role`.
    pub fn target_of(&self, role: Role) -> &Target {
        self.target_at(role, 0)
    }

    /// Node of `role` for its connection attempt `attempt` (0 the first): each attempt goes to the next node of
    /// `--url`, round-robin.
    pub fn target_at(&self, role: Role, attempt: u64) -> &Target {
        let n = self.targets.len() as u64;
        &self.targets[((self.index_of(role) as u64 + attempt % n) % n) as usize]
    }

    /// The idempotency key of message `n` of a sender: the same for every resend of that message.
    pub fn message_key(&self, n: u64) -> String {
        format!("{}-{n}", self.run_tag)
    }

    /// Source address of `role`, if spread over several.
    pub fn source_of(&self, role: Role) -> Option<Ipv4Addr> {
        let n = self.source_ips?;
        Some(loopback_source(
            (self.index_of(role) as u64 % u64::from(n)) as u32,
        ))
    }

    /// User id of recipient `r`.
    pub fn recipient(r: u32) -> String {
        format!("dm-user-{r}")
    }

    /// The CONNECT payload of `role`: its token (senders may message anyone) and device name.
    pub fn auth_of(&self, role: Role) -> Result<serde_json::Value, AuthError> {
        let (claims, device) = match role {
            Role::Sender(i) => (
                Claims {
                    sub: format!("dm-sender-{i}"),
                    dm: vec!["*".into()],
                    ..Claims::default()
                },
                "sender".to_owned(),
            ),
            Role::Device(r, d) => (
                Claims {
                    sub: DmPlan::recipient(r),
                    ..Claims::default()
                },
                format!("device-{d}"),
            ),
        };
        let token = mint_claims(&self.secret, claims, TOKEN_TTL_SECS)?;
        Ok(serde_json::json!({ "token": token, "device": device }))
    }

    /// Global index of message `n` of sender `i`: it is due at `k / rate` seconds and goes to recipient
    /// `k mod R`.
    pub fn global_index(&self, i: u32, n: u64) -> u64 {
        n * u64::from(self.senders) + u64::from(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_devices_of_a_user_over_nodes() {
        let mut args = DmArgs::new("http://127.0.0.1:1", "secret-0123456789abcdef0123456789ab");
        args.urls.push("http://127.0.0.1:2".into());
        args.senders = 3;
        args.recipients = 2;
        args.devices = 2;
        args.rate = 100.0;
        args.duration = 2.5;
        let plan = DmPlan::from_args(&args).unwrap();
        let ports: Vec<u16> = [Role::Device(1, 0), Role::Device(1, 1), Role::Sender(0)]
            .iter()
            .map(|&role| plan.target_of(role).addr.port())
            .collect();
        assert_eq!(ports, [1, 2, 1]);
        let next: Vec<u16> = (0..3)
            .map(|a| plan.target_at(Role::Device(1, 1), a).addr.port())
            .collect();
        assert_eq!(next, [2, 1, 2], "each reconnect goes to the next node");
        assert!(plan.message_key(7).ends_with("-7") && plan.message_key(7).len() <= 64);
        assert_eq!(plan.roles().len(), 7);
        assert_eq!(plan.messages(), 250);
        assert_eq!(plan.global_index(2, 4), 14);
        let auth = plan.auth_of(Role::Device(1, 1)).unwrap();
        assert_eq!(auth["device"], "device-1");
        args.devices = 65;
        assert!(DmPlan::from_args(&args).is_err());
        args.devices = 1;
        args.jwt_secret.clear();
        assert!(DmPlan::from_args(&args).is_err());
    }
}
