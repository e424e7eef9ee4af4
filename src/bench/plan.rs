//! The checked form of the flags: where each client connects from and to, which room it joins, how it
//! authenticates, and how the publisher reaches the nodes.

use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use http::Uri;

use super::args::BenchArgs;
use super::sys::loopback_source;
use super::BenchError;
use crate::auth::{mint_token, AuthError};

/// File descriptors a process keeps for itself beyond its clients (runtime, pipes, publisher connections).
const FD_RESERVE: u64 = 300;
/// Lifetime of minted client tokens: long enough for any run.
const TOKEN_TTL_SECS: u64 = 24 * 3600;

/// A node the clients connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Resolved address.
    pub addr: SocketAddr,
    /// `host:port` as given, for the `Host` header.
    pub authority: String,
    /// Engine.IO path, `/socket.io/` unless the URL names another.
    pub path: String,
}

/// How clients authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// `40` without auth.
    None,
    /// The same token for every client.
    Shared(String),
    /// A token per client, minted with this HS256 secret.
    Minted(String),
}

/// How events are published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishVia {
    /// `POST` to these URLs in turn with the API key as bearer token.
    Http {
        /// The publish endpoints (one, or every node's with `--publish-round-robin`).
        uris: Vec<Uri>,
        /// The API key, if any.
        api_key: Option<String>,
    },
    /// Records produced to a Kafka topic the nodes consume.
    Kafka {
        /// `host:port,...`.
        brokers: String,
        /// The topic.
        topic: String,
    },
    /// `PUBLISH` on the ingest channel of a cluster.
    Redis {
        /// Redis URL.
        url: String,
        /// `<prefix>:publish`.
        channel: String,
    },
}

/// What a bench run does, checked.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Nodes, round-robin by client index.
    pub targets: Vec<Target>,
    /// Clients over all processes.
    pub clients: usize,
    /// Rooms.
    pub rooms: usize,
    /// Room name prefix.
    pub room_prefix: String,
    /// Share of long-polling clients.
    pub polling_share: f64,
    /// Client authentication.
    pub auth: Auth,
    /// Publishing.
    pub publish: PublishVia,
    /// Publish requests in flight at most.
    pub concurrency: usize,
    /// Share of the websocket clients dropping their connection per minute of publishing (0.01 = 1%).
    pub churn_per_min: f64,
    /// Events per second.
    pub rate: f64,
    /// Measured publishing time.
    pub duration: Duration,
    /// Approximate data size of an event.
    pub payload: usize,
    /// New connections per second over all processes.
    pub ramp: f64,
    /// Time allowed to connect and subscribe.
    pub connect_timeout: Duration,
    /// Number of loopback source addresses to spread clients over.
    pub source_ips: Option<u32>,
    /// Client processes (1: in this process).
    pub workers: usize,
    /// `(index, count)` when this process is a worker.
    pub worker: Option<(usize, usize)>,
    /// Warm-up publishing time.
    pub warmup: Duration,
    /// Time to wait for deliveries after publishing.
    pub drain: Duration,
    /// Idle time between all clients resolved and the start of publishing.
    pub hold: Duration,
    /// Print JSON instead of the table.
    pub json: bool,
    /// No progress lines.
    pub quiet: bool,
}

impl Plan {
    /// Checks the flags; `fd_limit` (the open-files limit) decides how many worker processes `--workers 0` means.
    pub fn from_args(args: &BenchArgs, fd_limit: u64) -> Result<Plan, BenchError> {
        check_numbers(args)?;
        let mut targets = Vec::new();
        for url in args.urls.iter().map(|u| u.trim()).filter(|u| !u.is_empty()) {
            targets.push(parse_target(url, args.allow_remote)?);
        }
        if targets.is_empty() {
            return Err(invalid("give at least one --url"));
        }
        if args.source_ips.is_some() && targets.iter().any(|t| !t.addr.ip().is_loopback()) {
            return Err(invalid("--source-ips needs IPv4 loopback targets"));
        }
        let auth = match (&args.token, &args.jwt_secret) {
            (Some(token), _) => Auth::Shared(token.clone()),
            (None, Some(secret)) if !secret.is_empty() => Auth::Minted(secret.clone()),
            _ => {
                return Err(invalid(
                    "clients need tokens: give --jwt-secret (or TIDINGS_JWT_SECRET), the node's HS256 secret, \
                     or --token",
                ))
            }
        };
        if args.redis_ingest.is_none()
            && args.kafka_ingest.is_none()
            && args.api_key.as_deref().is_none_or(str::is_empty)
        {
            return Err(invalid(
                "publishing through the HTTP API needs --api-key (or TIDINGS_API_KEY); or publish with \
                 --redis-ingest or --kafka-ingest",
            ));
        }
        if !(0.0..=1.0).contains(&args.min_delivered) {
            return Err(invalid("--min-delivered is a ratio from 0 to 1"));
        }
        let publish = match (&args.kafka_ingest, &args.redis_ingest) {
            (Some(brokers), _) => {
                for broker in brokers.split(',') {
                    let (host, port) = broker
                        .rsplit_once(':')
                        .ok_or_else(|| invalid("--kafka-ingest takes host:port[,host:port...]"))?;
                    let port = port
                        .parse()
                        .map_err(|_| invalid("--kafka-ingest: bad port"))?;
                    resolve(host, port, args.allow_remote)?;
                }
                PublishVia::Kafka {
                    brokers: brokers.clone(),
                    topic: args.kafka_topic.clone().unwrap_or_default(),
                }
            }
            (None, Some(url)) => {
                check_redis_url(url, args.allow_remote)?;
                PublishVia::Redis {
                    url: url.clone(),
                    channel: format!("{}:publish", args.redis_prefix),
                }
            }
            (None, None) => PublishVia::Http {
                uris: if args.publish_round_robin {
                    targets
                        .iter()
                        .map(|t| publish_uri_of(t, args.allow_remote))
                        .collect::<Result<_, _>>()?
                } else {
                    vec![publish_uri(args, &targets[0])?]
                },
                api_key: args.api_key.clone().filter(|k| !k.is_empty()),
            },
        };
        let mut plan = Plan {
            targets,
            clients: args.clients,
            rooms: args.rooms,
            room_prefix: args.room_prefix.clone(),
            polling_share: args.polling_share,
            auth,
            publish,
            concurrency: args.publish_concurrency,
            churn_per_min: args.reconnect_per_min / 100.0,
            rate: args.rate,
            duration: Duration::from_secs_f64(args.duration),
            payload: args.payload,
            ramp: parse_ramp(&args.ramp)?,
            connect_timeout: Duration::from_secs_f64(args.connect_timeout),
            source_ips: args.source_ips,
            workers: 1,
            worker: None,
            warmup: Duration::from_secs_f64(args.warmup),
            drain: Duration::from_secs_f64(args.drain),
            hold: Duration::from_secs_f64(args.hold),
            json: args.json,
            quiet: args.quiet,
        };
        plan.workers = match (args.worker_index, args.worker_count) {
            (Some(index), Some(count)) if index < count => {
                plan.worker = Some((index, count));
                count
            }
            (Some(_), Some(_)) => {
                return Err(invalid("--worker-index must be below --worker-count"))
            }
            _ if args.workers > 0 => args.workers,
            _ => plan.auto_workers(fd_limit),
        };
        if plan.workers > plan.clients {
            plan.workers = plan.clients;
        }
        Ok(plan)
    }

    /// Processes needed so that no process holds more sockets than `fd_limit` allows.
    fn auto_workers(&self, fd_limit: u64) -> usize {
        let per_process = fd_limit.saturating_sub(FD_RESERVE).max(1);
        let polling = (self.clients as f64 * self.polling_share).ceil() as u64;
        // A long-polling client may hold two connections: the pending GET and a POST.
        let need = self.clients as u64 + polling;
        usize::try_from(need.div_ceil(per_process))
            .unwrap_or(usize::MAX)
            .max(1)
    }

    /// Name of room `k`.
    pub fn room_name(&self, k: usize) -> String {
        format!("{}-{k}", self.room_prefix)
    }

    /// Room of client `j`.
    pub fn room_of(&self, j: usize) -> usize {
        j % self.rooms
    }

    /// Node of client `j`.
    pub fn target_of(&self, j: usize) -> &Target {
        self.target_at(j, 0)
    }

    /// Node of connection `attempt` of client `j` (0: its first): the next node of the list each time.
    pub fn target_at(&self, j: usize, attempt: usize) -> &Target {
        &self.targets[(j + attempt) % self.targets.len()]
    }

    /// Whether clients churn (drop and resume their connections, checking every event's order).
    pub fn churns(&self) -> bool {
        self.churn_per_min > 0.0
    }

    /// Source address of client `j`: round-robin within each target, so every node sees every source address.
    pub fn source_of(&self, j: usize) -> Option<Ipv4Addr> {
        let n = self.source_ips?;
        let k = (j / self.targets.len()) as u64 % u64::from(n);
        Some(loopback_source(k as u32))
    }

    /// Whether client `j` uses long-polling: spread evenly, `polling_share` of all clients.
    pub fn is_polling(&self, j: usize) -> bool {
        let share = self.polling_share;
        ((j + 1) as f64 * share).floor() > (j as f64 * share).floor()
    }

    /// Token of client `j`, if the clients authenticate.
    pub fn token_for(&self, j: usize) -> Result<Option<String>, AuthError> {
        match &self.auth {
            Auth::None => Ok(None),
            Auth::Shared(token) => Ok(Some(token.clone())),
            Auth::Minted(secret) => mint_token(
                secret,
                &format!("bench-{j}"),
                &[format!("{}*", self.room_prefix)],
                &[],
                &[],
                TOKEN_TTL_SECS,
            )
            .map(Some),
        }
    }

    /// Events of the warm-up phase (seq `0 .. warmup_messages`).
    pub fn warmup_messages(&self) -> u64 {
        (self.rate * self.warmup.as_secs_f64()).round() as u64
    }

    /// Events of the measured phase.
    pub fn measured_messages(&self) -> u64 {
        ((self.rate * self.duration.as_secs_f64()).round() as u64).max(1)
    }

    /// The clients of this process: all of them, or those `j` with `j mod count == index` in a worker.
    pub fn my_clients(&self) -> impl Iterator<Item = usize> {
        let (index, count) = self.worker.unwrap_or((0, 1));
        (index..self.clients).step_by(count)
    }

    /// Connection ramp of this process.
    pub fn my_ramp(&self) -> f64 {
        self.ramp / self.worker.map_or(1, |(_, count)| count) as f64
    }
}

fn invalid(message: impl Into<String>) -> BenchError {
    BenchError::Invalid(message.into())
}

/// Ranges of the numeric flags.
fn check_numbers(args: &BenchArgs) -> Result<(), BenchError> {
    let finite_positive = |v: f64| v.is_finite() && v > 0.0;
    let finite_non_negative = |v: f64| v.is_finite() && v >= 0.0;
    if args.clients == 0 {
        return Err(invalid("--clients must be at least 1"));
    }
    if args.rooms == 0 {
        return Err(invalid("--rooms must be at least 1"));
    }
    if !(0.0..=1.0).contains(&args.polling_share) {
        return Err(invalid("--polling-share must be between 0 and 1"));
    }
    if !finite_positive(args.rate) || !finite_positive(args.duration) {
        return Err(invalid("--rate and --duration must be greater than 0"));
    }
    if !finite_positive(args.connect_timeout)
        || !finite_non_negative(args.warmup)
        || !finite_non_negative(args.drain)
        || !finite_non_negative(args.hold)
    {
        return Err(invalid(
            "--connect-timeout must be > 0, --warmup, --drain and --hold >= 0",
        ));
    }
    if args.publish_concurrency == 0 {
        return Err(invalid("--publish-concurrency must be at least 1"));
    }
    if !finite_non_negative(args.reconnect_per_min) || args.reconnect_per_min > 100.0 {
        return Err(invalid("--reconnect-per-min is a percentage from 0 to 100"));
    }
    if args.source_ips.is_some_and(|n| n == 0 || n > 65_000) {
        return Err(invalid("--source-ips must be 1..=65000"));
    }
    Ok(())
}

/// `2000`, `2000/s`.
fn parse_ramp(text: &str) -> Result<f64, BenchError> {
    let number = text.trim().trim_end_matches("/s").trim();
    match number.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(invalid(format!(
            "--ramp {text:?}: expected connections per second, e.g. 2000/s"
        ))),
    }
}

/// Parses a client URL (`http://`, `ws://`) into a target, refusing non-loopback hosts unless allowed.
pub(crate) fn parse_target(url: &str, allow_remote: bool) -> Result<Target, BenchError> {
    let uri: Uri = url
        .parse()
        .map_err(|e| invalid(format!("--url {url:?}: {e}")))?;
    match uri.scheme_str() {
        Some("http" | "ws") => {}
        _ => {
            return Err(invalid(format!(
                "--url {url:?}: only http:// and ws:// are supported"
            )))
        }
    }
    let authority = uri
        .authority()
        .ok_or_else(|| invalid(format!("--url {url:?}: no host")))?;
    let addr = resolve(
        authority.host(),
        authority.port_u16().unwrap_or(80),
        allow_remote,
    )?;
    let path = match uri.path() {
        "" | "/" => "/socket.io/".to_owned(),
        path if path.ends_with('/') => path.to_owned(),
        path => format!("{path}/"),
    };
    Ok(Target {
        addr,
        authority: authority.as_str().to_owned(),
        path,
    })
}

/// Resolves `host:port` (IPv4 preferred) and insists on loopback unless allowed.
fn resolve(host: &str, port: u16, allow_remote: bool) -> Result<SocketAddr, BenchError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| invalid(format!("cannot resolve {host}:{port}: {e}")))?
        .collect();
    let addr = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| invalid(format!("no address for {host}:{port}")))?;
    if !allow_remote && !addr.ip().is_loopback() {
        return Err(invalid(format!(
            "{host} ({}) is not a loopback address; pass --allow-remote to load a remote server",
            addr.ip()
        )));
    }
    Ok(addr)
}

/// The publish endpoint: `--publish-url` (path defaulting to /v1/publish), else the first node's.
fn publish_uri(args: &BenchArgs, first: &Target) -> Result<Uri, BenchError> {
    let text = match &args.publish_url {
        Some(url) => url.clone(),
        None => format!("http://{}/v1/publish", first.authority),
    };
    let uri: Uri = text
        .parse()
        .map_err(|e| invalid(format!("--publish-url {text:?}: {e}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(invalid(format!(
            "--publish-url {text:?}: only http:// is supported"
        )));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| invalid(format!("--publish-url {text:?}: no host")))?
        .clone();
    resolve(
        authority.host(),
        authority.port_u16().unwrap_or(80),
        args.allow_remote,
    )?;
    if matches!(uri.path(), "" | "/") {
        return Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query("/v1/publish")
            .build()
            .map_err(|e| invalid(format!("--publish-url {text:?}: {e}")));
    }
    Ok(uri)
}

/// The `/v1/publish` endpoint of node `target`.
fn publish_uri_of(target: &Target, allow_remote: bool) -> Result<Uri, BenchError> {
    resolve(
        &target.addr.ip().to_string(),
        target.addr.port(),
        allow_remote,
    )?;
    format!("http://{}/v1/publish", target.authority)
        .parse()
        .map_err(|e| invalid(format!("publish URL of {}: {e}", target.authority)))
}

/// Refuses a Redis URL that does not parse or names a remote host (unless allowed).
fn check_redis_url(url: &str, allow_remote: bool) -> Result<(), BenchError> {
    let client =
        redis::Client::open(url).map_err(|e| invalid(format!("--redis-ingest {url:?}: {e}")))?;
    match &client.get_connection_info().addr {
        redis::ConnectionAddr::Tcp(host, port) => resolve(host, *port, allow_remote).map(|_| ()),
        redis::ConnectionAddr::Unix(_) => Ok(()),
        _ if allow_remote => Ok(()),
        _ => Err(invalid(format!(
            "--redis-ingest {url:?}: TLS targets need --allow-remote"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(edit: impl FnOnce(&mut BenchArgs)) -> Result<Plan, BenchError> {
        let mut args = BenchArgs::new("http://127.0.0.1:4001", 10);
        args.jwt_secret = Some("plan-test-secret".into());
        args.api_key = Some("plan-test-key".into());
        edit(&mut args);
        Plan::from_args(&args, 20_000)
    }

    #[test]
    fn targets_and_paths() {
        let p = plan(|a| {
            a.urls = vec![
                "http://127.0.0.1:4001".into(),
                "ws://localhost:4002/custom".into(),
            ]
        })
        .unwrap();
        assert_eq!(p.targets[0].path, "/socket.io/");
        assert_eq!(p.targets[0].authority, "127.0.0.1:4001");
        assert_eq!(p.targets[1].path, "/custom/");
        assert_eq!(p.targets[1].addr.port(), 4002);
        assert_eq!(p.target_of(3).addr.port(), 4002);
        match &p.publish {
            PublishVia::Http { uris, api_key } => {
                assert_eq!(uris.len(), 1);
                assert_eq!(uris[0].to_string(), "http://127.0.0.1:4001/v1/publish");
                assert_eq!(api_key.as_deref(), Some("plan-test-key"));
            }
            other => panic!("{other:?}"),
        }
        let spread = plan(|a| {
            a.urls = vec![
                "http://127.0.0.1:4001".into(),
                "http://127.0.0.1:4002".into(),
            ];
            a.publish_round_robin = true;
            a.reconnect_per_min = 1.0;
        })
        .unwrap();
        match &spread.publish {
            PublishVia::Http { uris, .. } => assert_eq!(
                uris.iter().map(|u| u.to_string()).collect::<Vec<_>>(),
                [
                    "http://127.0.0.1:4001/v1/publish",
                    "http://127.0.0.1:4002/v1/publish"
                ]
            ),
            other => panic!("{other:?}"),
        }
        assert!(spread.churns() && (spread.churn_per_min - 0.01).abs() < 1e-12);
        // Reconnects go to the next node each time.
        assert_eq!(spread.target_at(1, 0).addr.port(), 4002);
        assert_eq!(spread.target_at(1, 1).addr.port(), 4001);
        assert!(!p.churns());
    }

    #[test]
    fn refuses_remote_and_bad_values() {
        assert!(plan(|a| a.urls = vec!["http://192.0.2.1:80".into()]).is_err());
        assert!(plan(|a| {
            a.urls = vec!["http://192.0.2.1:80".into()];
            a.allow_remote = true;
        })
        .is_ok());
        assert!(plan(|a| a.publish_url = Some("http://192.0.2.1/".into())).is_err());
        assert!(plan(|a| a.urls = vec!["https://127.0.0.1".into()]).is_err());
        assert!(plan(|a| a.clients = 0).is_err());
        assert!(plan(|a| a.rate = 0.0).is_err());
        assert!(plan(|a| a.polling_share = 1.5).is_err());
        assert!(plan(|a| a.ramp = "fast".into()).is_err());
        assert!(plan(|a| a.reconnect_per_min = -1.0).is_err());
        assert!(plan(|a| a.reconnect_per_min = 101.0).is_err());
        assert!(plan(|a| a.redis_ingest = Some("redis://192.0.2.1:6379".into())).is_err());
        let p = plan(|a| a.redis_ingest = Some("redis://127.0.0.1:6390".into())).unwrap();
        assert_eq!(
            p.publish,
            PublishVia::Redis {
                url: "redis://127.0.0.1:6390".into(),
                channel: "tidings:publish".into()
            }
        );
    }

    #[test]
    fn spreading_clients() {
        let p = plan(|a| {
            a.urls = vec!["http://127.0.0.1:1".into(), "http://127.0.0.1:2".into()];
            a.clients = 10;
            a.rooms = 3;
            a.source_ips = Some(4);
            a.polling_share = 0.3;
        })
        .unwrap();
        assert_eq!(p.room_name(p.room_of(7)), "bench-1");
        // Within each target the sources go round-robin: clients 0,2,4,6 of target 0 get .1 .2 .3 .4.
        let sources: Vec<u8> = (0..10)
            .map(|j| p.source_of(j).unwrap().octets()[3])
            .collect();
        assert_eq!(sources, [1, 1, 2, 2, 3, 3, 4, 4, 1, 1]);
        assert_eq!((0..10).filter(|&j| p.is_polling(j)).count(), 3);
        assert_eq!(plan(|_| {}).unwrap().source_of(0), None);
        assert!(!(0..10).any(|j| plan(|_| {}).unwrap().is_polling(j)));
    }

    #[test]
    fn workers_and_shares() {
        let p = plan(|a| a.clients = 20_000).unwrap();
        assert_eq!(
            p.workers, 2,
            "20000 clients need two processes under a 20000 fd limit"
        );
        assert_eq!(plan(|a| a.clients = 1000).unwrap().workers, 1);
        assert_eq!(plan(|a| a.workers = 3).unwrap().workers, 3);
        let w = plan(|a| {
            a.worker_index = Some(1);
            a.worker_count = Some(3);
            a.ramp = "3000".into();
        })
        .unwrap();
        assert_eq!(w.my_clients().collect::<Vec<_>>(), [1, 4, 7]);
        assert_eq!(w.my_ramp(), 1000.0);
        assert!(plan(|a| {
            a.worker_index = Some(3);
            a.worker_count = Some(3);
        })
        .is_err());
    }

    #[test]
    fn tokens_and_message_counts() {
        let p = plan(|a| {
            a.jwt_secret = Some("s".into());
            a.rate = 200.0;
            a.duration = 10.0;
            a.warmup = 2.5;
        })
        .unwrap();
        let token = p.token_for(5).unwrap().unwrap();
        let claims = crate::auth::Authenticator::hs256("s", 0)
            .verify(&token)
            .unwrap();
        assert_eq!(claims.sub(), "bench-5");
        assert!(claims.may_join("bench-3"));
        assert_eq!((p.warmup_messages(), p.measured_messages()), (500, 2000));
        let shared = plan(|a| a.token = Some("t".into())).unwrap();
        assert_eq!(shared.token_for(1).unwrap().as_deref(), Some("t"));
    }

    #[test]
    fn refuses_to_start_without_the_secrets_it_needs() {
        let e = plan(|a| a.jwt_secret = None).unwrap_err().to_string();
        assert!(e.contains("--jwt-secret"), "{e}");
        let e = plan(|a| a.api_key = None).unwrap_err().to_string();
        assert!(e.contains("--api-key"), "{e}");
        assert!(plan(|a| {
            a.api_key = None;
            a.redis_ingest = Some("redis://127.0.0.1:6379".into());
        })
        .is_ok());
        assert!(plan(|a| a.min_delivered = 1.5).is_err());
    }
}
