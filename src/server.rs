//! The node: builds the engine, application and API from config, accepts connections, and shuts down
//! gracefully on SIGINT/SIGTERM (clients are closed at the Engine.IO level so they reconnect elsewhere).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::Body;
use axum::extract::Request;
use axum::routing::any;
use axum::Router;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;

use crate::app::direct::{Direct, DirectLimits, LocalFanout};
use crate::app::{
    Backend, ClusterBackend, NamespacePolicy, PublishLimits, RoomPolicy, Tidings, TidingsParts,
};
use crate::auth::Authenticator;
use crate::cluster::direct::RedisFanout;
use crate::cluster::forward::Forwarder;
use crate::cluster::keys::Keys;
use crate::cluster::registry::{NodeInfo, Registry};
use crate::cluster::tunnels::{TunnelCloser, Tunnels};
use crate::cluster::{Redis, RedisTarget};
use crate::cluster::{RedisMessages, ReplicaWait};
use crate::config::Config;
use crate::drain::{self, DrainPlan, Draining, Hurry};
use crate::engineio::address_limits::AddressLimits;
use crate::engineio::client_addr::TrustedProxies;
use crate::engineio::cors::CorsPolicy;
use crate::engineio::polling_conn::{self, PollingRoutes};
use crate::engineio::session::NodeTag;
use crate::engineio::{CloseReason, Engine, EngineConfig, OutboxLimits};
use crate::history::{HistoryStore, MemoryHistory};
use crate::hub::Hub;
use crate::messages::{DiskMessages, MemoryMessages, MessageStore};
use crate::recovery::{MemorySessionStore, SessionStore};
use crate::rooms_disk::DiskHistory;
use crate::socketio::{ClientLimits, SocketIo};

/// Path of the Socket.IO endpoint.
pub const SOCKET_IO_PATH: &str = "/socket.io/";
/// Path of the bare Engine.IO echo endpoint (conformance mode only).
pub const ENGINE_IO_PATH: &str = "/engine.io/";
/// Path of the raw WebSocket echo endpoint (conformance mode only).
pub const WS_ECHO_PATH: &str = "/ws-echo";

/// Where the start-up banner goes: plain lines (stdout, warnings on stderr) or log events, so that a node
/// logging JSON writes nothing but JSON lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Banner {
    /// `tidings listening on http://…` on stdout.
    Text,
    /// The same as `info`/`warn` log events.
    Log,
}

/// Runs a node until SIGINT/SIGTERM, then drains it.
pub async fn run(mut config: Config, banner: Banner) -> anyhow::Result<()> {
    crate::process::raise_open_files_limit();
    if config.conformance {
        apply_conformance_settings(&mut config);
    }
    let generated = config.ensure_secrets();
    let running = start(&config).await?;
    print_banner(&config, &running, &generated, banner);
    shutdown_signal().await;
    let plan = config.shutdown.plan();
    tracing::info!(
        unready_secs = plan.unready.as_secs(),
        window_secs = plan.window.as_secs(),
        deadline_secs = plan.deadline.as_secs(),
        "draining: not ready any more (a second signal closes what is left at once)"
    );
    let (hurry, hurry_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("second signal: closing every client now");
        let _ = hurry.send(true);
    });
    running.drain(plan, Some(hurry_rx)).await;
    Ok(())
}

/// A node accepting connections; see [`start`].
pub struct RunningNode {
    node: Node,
    local: SocketAddr,
    admin_local: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
    admin_accept: Option<tokio::task::JoinHandle<()>>,
}

impl RunningNode {
    /// Where the node listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Where the separate admin listener (`admin.listen`) listens, when there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_local
    }

    /// The node's parts.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Stops at once: refuses new clients, closes every open one at the Engine.IO level (so clients reconnect)
    /// and waits up to `drain` for the sessions to go.
    pub async fn shutdown(self, drain: Duration) {
        self.drain(DrainPlan::immediate(drain), None).await;
    }

    /// Drains the node as `plan` says: readiness false and out of the node registry at once; after
    /// `plan.unready` new clients are refused (`503`) and the open ones are closed evenly over `plan.window`; the
    /// node then waits for the sessions to go, until `plan.deadline` from now at the latest, stops listening,
    /// flushes the Kafka producer and closes its stores. `hurry` skips what is left of the waits.
    pub async fn drain(self, plan: DrainPlan, mut hurry: Hurry) {
        let started = tokio::time::Instant::now();
        let deadline = started + plan.deadline;
        self.node.draining.start();
        if let Some(registry) = &self.node.registry {
            // Advertised as draining first, so no new client is sent here; it stays listed until it is empty, so
            // that the other nodes still forward its clients' requests to it.
            registry_step("marking the node draining", registry.mark_draining()).await;
        }
        drain::sleep_until((started + plan.unready).min(deadline), &mut hurry).await;
        for engine in &self.node.engines {
            engine.refuse_new_sessions();
        }
        let closed = drain::close_spread(
            &self.node.engines,
            self.node.tunnels.as_deref(),
            plan.window,
            deadline,
            &mut hurry,
        )
        .await;
        loop {
            if self.node.open_sessions() == 0 || tokio::time::Instant::now() >= deadline {
                break;
            }
            let tick = tokio::time::Instant::now() + Duration::from_millis(20);
            if drain::sleep_until(tick.min(deadline), &mut hurry).await {
                break;
            }
        }
        // Whatever is still open (the deadline passed, or a second signal) goes now.
        self.node.close_all();
        // Give the last close frames a moment on the wire.
        tokio::time::sleep(Duration::from_millis(100).min(plan.deadline)).await;
        if let Some(registry) = &self.node.registry {
            registry_step("leaving the node registry", registry.deregister()).await;
        }
        let _ = self.stop.send(true);
        let _ = self.accept.await;
        if let Some(admin) = self.admin_accept {
            let _ = admin.await;
        }
        if let Some(egress) = self.node.egress.clone() {
            let wait = plan.deadline.max(Duration::from_secs(1));
            let _ = tokio::task::spawn_blocking(move || egress.flush(wait)).await;
        }
        if let Some(rooms) = &self.node.rooms_store {
            // After the sessions were parked: their records are in the last batch before the clean mark.
            if let Err(error) = rooms.close().await {
                tracing::warn!(%error, "closing the room history store failed");
            }
        }
        tracing::info!(
            closed,
            remaining = self.node.open_sessions(),
            took_ms = started.elapsed().as_millis() as u64,
            "stopped"
        );
    }
}

/// Runs one registry write of the drain, waiting at most 2 s; a failure is logged (the drain goes on: the entry
/// expires by itself).
async fn registry_step(
    what: &str,
    step: impl std::future::Future<Output = Result<(), crate::cluster::registry::RegistryError>>,
) {
    match tokio::time::timeout(Duration::from_secs(2), step).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "{what} failed"),
        Err(_) => tracing::warn!("{what} timed out"),
    }
}

/// Binds `config.listen` (and `admin.listen` when set) and serves the node described by `config` (secrets must
/// be set) in the background.
pub async fn start(config: &Config) -> anyhow::Result<RunningNode> {
    let listener =
        bind(config.listen).with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener.local_addr()?;
    let admin_listener = match config.admin.listen_addr().filter(|_| !config.conformance) {
        Some(addr) => {
            Some(bind(addr).with_context(|| format!("cannot listen on {addr} (admin.listen)"))?)
        }
        None => None,
    };
    let admin_local = admin_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    let node = build(config, local)?;
    let (stop, stop_rx) = watch::channel(false);
    let admin_accept = match (admin_listener, &node.admin) {
        (Some(listener), Some(router)) => Some(tokio::spawn(accept_loop(
            listener,
            router.clone(),
            Arc::new(PollingRoutes::default()),
            stop_rx.clone(),
        ))),
        _ => None,
    };
    let accept = tokio::spawn(accept_loop(
        listener,
        node.router.clone(),
        node.polling.clone(),
        stop_rx,
    ));
    Ok(RunningNode {
        node,
        local,
        admin_local,
        stop,
        accept,
        admin_accept,
    })
}

/// A built node: its endpoints and router.
pub struct Node {
    /// Every Engine.IO endpoint of the node.
    pub engines: Vec<Arc<Engine>>,
    /// The HTTP router (API and Engine.IO paths).
    pub router: Router,
    /// The router of the separate admin listener (`/metrics`, `/stats`, `/healthz`); `None` when they are served
    /// by `router` (no `admin.listen`) or in conformance mode.
    pub admin: Option<Router>,
    /// The Engine.IO endpoints whose long-polling requests are served without hyper (see [`polling_conn`]).
    pub polling: Arc<PollingRoutes>,
    /// This node's entry in the cluster's node registry; `None` when it runs alone.
    pub registry: Option<Arc<Registry>>,
    /// Room history and sessions kept in the data directory, closed (drained, marked clean) at shutdown.
    pub rooms_store: Option<Arc<DiskHistory>>,
    /// The Kafka producer, flushed at shutdown (what it still holds has up to the drain time to get out).
    pub egress: Option<Arc<crate::kafka::egress::KafkaEgress>>,
    /// Set when the node starts draining; `/readyz` reads it.
    pub draining: Arc<Draining>,
    /// The websockets this node splices to other nodes (cluster mode), moved by the drain like sessions.
    pub tunnels: Option<Arc<Tunnels>>,
}

impl Node {
    /// Closes every session of every endpoint, and every websocket spliced to another node.
    pub fn close_all(&self) {
        for engine in &self.engines {
            engine.close_all(CloseReason::ServerShutdown);
        }
        if let Some(tunnels) = &self.tunnels {
            tunnels.closers().iter().for_each(TunnelCloser::close);
        }
    }

    /// Sessions still open, and websockets still spliced to other nodes.
    pub fn open_sessions(&self) -> usize {
        let tunnels = self.tunnels.as_ref().map_or(0, |t| t.len());
        self.engines
            .iter()
            .map(|e| e.session_count())
            .sum::<usize>()
            + tunnels
    }
}

/// Buckets of the `tidings_outbox_depth` histogram (packets queued per session, sampled).
const OUTBOX_DEPTH_BUCKETS: &[f64] = &[0.0, 1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0];

/// Buckets of the `tidings_redis_command_seconds` histogram.
const REDIS_SECONDS_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// How often every session's outbox depth is sampled into `tidings_outbox_depth`.
const OUTBOX_SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Samples the outbox depths of `engine`'s sessions every [`OUTBOX_SAMPLE_EVERY`] while the engine lives.
fn spawn_outbox_sampler(engine: &Arc<Engine>) {
    let engine = Arc::downgrade(engine);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(OUTBOX_SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(engine) = engine.upgrade() else {
                return;
            };
            engine.sample_metrics(true);
        }
    });
}

/// How often the recorder folds recorded histogram samples into its buckets.
const METRICS_UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Folds histogram samples into their buckets every [`METRICS_UPKEEP_EVERY`], for the life of the process. The
/// recorder keeps every sample in growing blocks until it is rendered or kept up: a node that nobody scrapes
/// grew by every histogram sample (~3 MiB a minute per node at 17,000 connections, from the outbox-depth
/// samples alone). A thread, not a task: the recorder is process-wide and outlives any one runtime.
fn spawn_metrics_upkeep(handle: metrics_exporter_prometheus::PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(METRICS_UPKEEP_EVERY);
            handle.run_upkeep();
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot start the metrics upkeep thread; histograms grow until scraped");
    }
}

/// The process-wide Prometheus recorder (every node in a process renders the same metrics).
fn metrics_handle() -> metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full("tidings_outbox_depth".into()),
                    OUTBOX_DEPTH_BUCKETS,
                )
                .expect("the buckets are not empty")
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(
                        "tidings_redis_command_seconds".into(),
                    ),
                    REDIS_SECONDS_BUCKETS,
                )
                .expect("the buckets are not empty")
                .build_recorder();
            let handle = recorder.handle();
            spawn_metrics_upkeep(handle.clone());
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!(
                    "a metrics recorder was already installed; /metrics shows only this one"
                );
            }
            crate::engineio::ws_writer::register_metrics();
            handle
        })
        .clone()
}

/// Engine.IO settings from config.
pub fn engine_config(config: &Config, node_tag: NodeTag) -> EngineConfig {
    EngineConfig {
        ping_interval: config.engine.ping_interval(),
        ping_timeout: config.engine.ping_timeout(),
        max_payload: usize::try_from(config.engine.max_payload).unwrap_or(usize::MAX),
        outbox: OutboxLimits {
            max_messages: config.limits.outbox_max_messages,
            max_bytes: config.limits.outbox_max_bytes,
        },
        max_messages_per_sec: config.limits.client_packets_per_sec,
        max_sessions: config.limits.max_connections,
        cors: CorsPolicy {
            origins: config.engine.cors_origins.clone(),
            credentials: config.engine.cors_credentials,
        },
        misbehaviour_log_interval: config.limits.misbehaviour_log_interval(),
        address_limits: AddressLimits {
            max_sessions: config.limits.max_sessions_per_ip,
            handshakes_per_sec: config.limits.handshakes_per_sec_per_ip,
            handshake_burst: config.limits.handshake_burst_per_ip,
        },
        // Checked by `Config::validate`.
        trusted_proxies: TrustedProxies::parse(&config.limits.trusted_proxies).unwrap_or_default(),
        node_tag,
        write_interval: config.engine.write_interval(),
        write_interval_max: config.engine.write_interval_max(),
    }
}

/// Builds the node described by `config` (secrets must already be set), listening on `local`.
pub fn build(config: &Config, local: SocketAddr) -> anyhow::Result<Node> {
    let metrics = Some(metrics_handle());
    let node_tag = NodeTag::random();
    let client_limits = ClientLimits {
        connect_timeout: config.engine.connect_timeout(),
        max_attachment_bytes: config.engine.max_payload as usize,
    };
    if config.conformance {
        let sio = SocketIo::new(Arc::new(crate::conformance::EchoApp), client_limits);
        let socket_io = Engine::new(engine_config(config, node_tag), sio);
        let engine_io = Engine::new(
            engine_config(config, node_tag),
            Arc::new(crate::conformance::EngineEcho),
        );
        let ws_echo = Engine::new(
            crate::conformance::raw_echo_config(engine_config(config, node_tag)),
            Arc::new(crate::conformance::RawEcho),
        );
        let raw_echo = ws_echo.clone();
        let router = Router::new()
            .route(SOCKET_IO_PATH, any(engine_route(socket_io.clone())))
            .route(ENGINE_IO_PATH, any(engine_route(engine_io.clone())))
            .route(
                WS_ECHO_PATH,
                any(move |req: Request| {
                    let remote = req.extensions().get::<SocketAddr>().copied();
                    std::future::ready(crate::conformance::raw_echo_upgrade(
                        raw_echo.clone(),
                        req,
                        remote,
                    ))
                }),
            );
        let mut polling = PollingRoutes::default();
        polling.add(SOCKET_IO_PATH, socket_io.clone());
        polling.add(ENGINE_IO_PATH, engine_io.clone());
        return Ok(Node {
            engines: vec![socket_io, engine_io, ws_echo],
            router,
            admin: None,
            polling: Arc::new(polling),
            registry: None,
            rooms_store: None,
            egress: None,
            draining: Arc::default(),
            tunnels: None,
        });
    }
    let me = NodeInfo::new(
        node_tag,
        public_url(config, local),
        config.limits.max_connections,
    );
    let redis = cluster_redis(config)?;
    let data_dir = config.storage.data_dir().filter(|_| redis.is_none());
    let rooms_store = match data_dir {
        Some(dir) => Some(
            crate::rooms_disk::open(dir, rooms_limits(config))
                .with_context(|| format!("cannot open the room store in {}", dir.display()))?,
        ),
        None => None,
    };
    let (history, sessions): (Arc<dyn HistoryStore>, Arc<dyn SessionStore>) = match &rooms_store {
        Some((history, sessions)) => (history.clone(), sessions.clone()),
        None => (memory_history(config), Arc::new(MemorySessionStore::new())),
    };
    let hub = Arc::new(Hub::new(history));
    // A stream outlives both its retention and the recovery window: a missing stream then means nothing was
    // published to the room in that time.
    let stream_ttl = config
        .history
        .max_age()
        .max(config.recovery.max_disconnection())
        + Duration::from_secs(60);
    let cluster = redis.as_ref().map(|redis| {
        ClusterBackend::new(
            redis.clone(),
            Keys::new(&main_prefix(config)),
            hub.clone(),
            node_tag.as_str(),
            config.history.max_events,
            stream_ttl,
        )
    });
    let partitions = match &cluster {
        Some(_) if !config.redis.partitions.is_empty() || config.redis.cluster_partitions > 0 => {
            cluster_partitions(config, &hub, node_tag.as_str(), stream_ttl)?
        }
        _ => Vec::new(),
    };
    let (backend, direct) = match &cluster {
        Some(cluster) if !partitions.is_empty() => (
            Backend::partitioned(
                cluster.clone(),
                partitions.clone(),
                config.recovery.max_disconnection(),
                node_tag.as_str(),
            ),
            cluster_direct(config, cluster, node_tag.as_str()),
        ),
        Some(cluster) => (
            Backend::redis(
                cluster.clone(),
                config.recovery.max_disconnection(),
                node_tag.as_str(),
            ),
            cluster_direct(config, cluster, node_tag.as_str()),
        ),
        None => {
            let direct = match data_dir {
                None => {
                    tracing::info!(
                        "no data directory: messages, history and sessions are kept in memory only"
                    );
                    memory_direct(config)
                }
                Some(dir) => {
                    tracing::info!(
                        dir = %dir.display(),
                        resume_seq = hub.last_seq(),
                        "direct messages, room history and recovery sessions are kept on disk"
                    );
                    disk_direct(config, dir)?
                }
            };
            (Backend::local(hub.clone(), sessions.clone()), direct)
        }
    };
    let app = Tidings::new(app_parts(config, hub.clone(), backend, direct)?);
    tokio::spawn(sweep_loop(Arc::downgrade(&hub), Arc::downgrade(&sessions)));
    let engine = Engine::new(
        engine_config(config, node_tag),
        SocketIo::new(app.clone(), client_limits),
    );
    let kafka_links = Arc::new(crate::kafka::context::Links::default());
    let egress = if config.kafka.egress.enabled() {
        let link = kafka_links.add("egress");
        let egress = crate::kafka::egress::KafkaEgress::new(
            &config.kafka.egress,
            &format!("tidings-{node_tag}-egress"),
            node_tag.as_str(),
            link,
            || kafka_links.add("egress-ack"),
        )
        .map_err(|e| anyhow::anyhow!("kafka egress: {e}"))?;
        tracing::info!(brokers = %config.kafka.egress.brokers,
            publishes = %config.kafka.egress.publishes_topic,
            statuses = %config.kafka.egress.statuses_topic, "kafka egress: producing");
        let egress = Arc::new(egress);
        app.set_egress(egress.clone());
        Some(egress)
    } else {
        None
    };
    if !config.kafka.ingest.is_empty() {
        crate::kafka::spawn_ingest(&app, &config.kafka.ingest, node_tag.as_str(), &kafka_links)
            .map_err(|e| anyhow::anyhow!("kafka ingest: {e}"))?;
    }
    if let Some(cluster) = &cluster {
        let ingest = crate::app::spawn_ingest(&app);
        cluster
            .subscriber
            .set_ingest(Arc::new(move |raw| ingest.offer(raw)));
        for part in std::iter::once(cluster).chain(&partitions) {
            let engine = Arc::downgrade(&engine);
            let weak_cluster = Arc::downgrade(part);
            part.subscriber.set_reset(Arc::new(move || {
                if let Some(cluster) = weak_cluster.upgrade() {
                    cluster.forget_epoch();
                }
                if let Some(engine) = engine.upgrade() {
                    engine.close_every_session(CloseReason::ServerClose(
                        "cluster state was reset".into(),
                    ));
                }
            }));
        }
    }
    let (registry, tunnels) = redis
        .as_ref()
        .map(|redis| start_cluster(redis.clone(), config, &engine, me.clone()))
        .unzip();
    if let Some(redis) = &redis {
        let namespaces = std::iter::once("/".to_owned())
            .chain(config.namespaces.iter().map(|ns| ns.name.clone()))
            .collect();
        let keys = Keys::new(&main_prefix(config));
        crate::cluster::room_counts::spawn_publisher(
            redis.clone(),
            keys,
            me.id.as_str().to_owned(),
            &hub,
            namespaces,
        );
    }
    spawn_outbox_sampler(&engine);
    let draining = Arc::<Draining>::default();
    metrics::gauge!("tidings_draining").set(0.0);
    let api_state = crate::api::ApiState {
        app,
        engine: engine.clone(),
        keys: Arc::new(crate::api::ApiKeys::new(&config.api.keys)),
        admin_keys: Arc::new(crate::api::ApiKeys::new(&config.admin.keys)),
        idempotency_ttl_secs: config.api.idempotency_ttl_secs,
        admin_requires_key: config.admin.require_api_key,
        max_body: config.api.max_body_bytes,
        metrics,
        registry: registry.clone(),
        node: me,
        kafka: kafka_links,
        draining: draining.clone(),
    };
    let separate_admin = config.admin.listen_addr().is_some();
    let admin = separate_admin.then(|| crate::api::admin_router(api_state.clone()));
    let router = crate::api::router(api_state, !separate_admin)
        .route(SOCKET_IO_PATH, any(engine_route(engine.clone())));
    let mut polling = PollingRoutes::default();
    polling.add(SOCKET_IO_PATH, engine.clone());
    Ok(Node {
        engines: vec![engine],
        router,
        admin,
        polling: Arc::new(polling),
        registry,
        rooms_store: rooms_store.map(|(history, _)| history),
        egress,
        draining,
        tunnels,
    })
}

/// The bounds of the room history and sessions kept in the data directory (those of the memory history).
fn rooms_limits(config: &Config) -> crate::rooms_disk::Limits {
    crate::rooms_disk::Limits {
        max_events: config.history.max_events,
        max_age: config.history.max_age(),
        max_bytes: usize::try_from(config.history.max_bytes).unwrap_or(usize::MAX),
        keep_idle: config
            .history
            .max_age()
            .max(config.recovery.max_disconnection()),
        max_disconnection: config.recovery.max_disconnection(),
    }
}

/// The embedded room history with the configured bounds.
pub fn memory_history(config: &Config) -> Arc<MemoryHistory> {
    Arc::new(MemoryHistory::new(
        config.history.max_events,
        config.history.max_age(),
        usize::try_from(config.history.max_bytes).unwrap_or(usize::MAX),
        config
            .history
            .max_age()
            .max(config.recovery.max_disconnection()),
    ))
}

/// The direct message layer of an embedded node kept in memory, with the configured bounds.
pub fn memory_direct(config: &Config) -> Arc<Direct> {
    let store = Arc::new(MemoryMessages::new(config.messages.inbox_limits()));
    direct_over(config, store)
}

/// The direct message layer of an embedded node keeping its messages on disk in `dir`.
fn disk_direct(config: &Config, dir: &std::path::Path) -> anyhow::Result<Arc<Direct>> {
    let store = DiskMessages::open(dir, config.messages.inbox_limits())
        .with_context(|| format!("cannot open the message store in {}", dir.display()))?;
    Ok(direct_over(config, Arc::new(store)))
}

/// The direct message layer of a cluster node: messages handed over between nodes through Redis.
fn cluster_direct(config: &Config, cluster: &Arc<ClusterBackend>, node: &str) -> Arc<Direct> {
    let mut store = RedisMessages::new(
        cluster.redis.clone(),
        cluster.keys.clone(),
        config.messages.inbox_limits(),
    );
    if config.redis.wait_replicas > 0 {
        store = store.with_replica_wait(ReplicaWait {
            replicas: config.redis.wait_replicas,
            timeout: Duration::from_millis(config.redis.wait_timeout_ms),
        });
    }
    let store: Arc<dyn MessageStore> = Arc::new(store);
    let fanout = RedisFanout::new(cluster.redis.clone(), cluster.keys.clone(), node);
    let direct = Direct::with_webhook(
        store,
        fanout.clone(),
        &config.messages.namespace,
        direct_limits(config),
        config.messages.webhook(),
    );
    fanout.bind(&direct);
    let weak = Arc::downgrade(&fanout);
    cluster.subscriber.set_direct(
        fanout.channel(),
        Arc::new(move |payload| {
            if let Some(fanout) = weak.upgrade() {
                match payload {
                    Some(payload) => fanout.on_channel_message(payload),
                    None => fanout.on_resubscribed(),
                }
            }
        }),
    );
    direct
}

/// The direct message layer over `store`, every device on this node.
fn direct_over(config: &Config, store: Arc<dyn MessageStore>) -> Arc<Direct> {
    let fanout = LocalFanout::new();
    let direct = Direct::with_webhook(
        store,
        fanout.clone(),
        &config.messages.namespace,
        direct_limits(config),
        config.messages.webhook(),
    );
    fanout.bind(&direct);
    direct
}

/// The message layer's bounds from `[messages]`.
pub fn direct_limits(config: &Config) -> DirectLimits {
    let m = &config.messages;
    DirectLimits {
        default_ttl: Duration::from_secs(m.default_ttl_secs),
        max_ttl: Duration::from_secs(m.max_ttl_secs),
        max_unacked: m.max_unacked_per_device,
        max_queued_sends: m.max_queued_sends_per_connection,
        max_device_bytes: m.max_device_bytes,
    }
}

/// The application's parts as `config` sets them, around `hub`, `backend` and the message layer `direct`.
pub fn app_parts(
    config: &Config,
    hub: Arc<Hub>,
    backend: Backend,
    direct: Arc<Direct>,
) -> anyhow::Result<TidingsParts> {
    let auth = Authenticator::new(&config.auth).context("invalid auth settings")?;
    let mut namespaces = HashMap::new();
    namespaces.insert(
        "/".to_owned(),
        NamespacePolicy {
            recovery: config.recovery.enabled,
        },
    );
    for ns in &config.namespaces {
        namespaces.insert(
            ns.name.clone(),
            NamespacePolicy {
                recovery: ns.recovery.unwrap_or(config.recovery.enabled),
            },
        );
    }
    let room_policies = config
        .rooms
        .iter()
        .map(|policy| RoomPolicy {
            pattern: policy.pattern.clone(),
            client_publish: policy.client_publish,
            ephemeral: policy.ephemeral,
            conflate: (policy.conflate_ms > 0)
                .then(|| (policy.conflate_ms, policy.conflate_key.clone())),
            publish_rate: (
                policy.client_publish_per_sec,
                if policy.client_publish_burst == 0 {
                    policy.client_publish_per_sec
                } else {
                    policy.client_publish_burst
                },
            ),
            presence_events: policy.presence_events,
        })
        .collect();
    Ok(TidingsParts {
        auth,
        hub,
        backend,
        namespaces,
        room_policies,
        max_disconnection: config.recovery.max_disconnection(),
        // A replay is queued at once: leave the outbox room for the live events that follow it.
        max_replay: config.limits.outbox_max_messages.saturating_sub(64).max(16),
        publish_limits: PublishLimits {
            max_json_depth: config.limits.max_json_depth,
            max_ingest_bytes: config.api.max_body_bytes,
            ..PublishLimits::default()
        },
        max_rooms_per_socket: config.limits.max_rooms_per_socket,
        history_reply_bytes: config.history.max_reply_bytes,
        expiry_notice: std::time::Duration::from_secs(config.auth.expiry_notice_secs),
        expiry_leeway: std::time::Duration::from_secs(config.auth.leeway_secs),
        direct,
    })
}

/// The URL other nodes use to reach this one: `public_url`, or `http://<bound address>`.
fn public_url(config: &Config, local: SocketAddr) -> String {
    if !config.public_url.is_empty() {
        return config.public_url.trim_end_matches('/').to_owned();
    }
    let mut addr = local;
    if addr.ip().is_unspecified() {
        // Listening on every interface: loopback at least reaches nodes on this host.
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("http://{addr}")
}

/// The shared Redis command connection in cluster mode (`redis.url` set); it connects on first use.
fn cluster_redis(config: &Config) -> anyhow::Result<Option<Arc<Redis>>> {
    let Some(url) = config.redis.url() else {
        return Ok(None);
    };
    let target = if RedisTarget::is_cluster_url(url) {
        RedisTarget::cluster_slot(url, &config.redis.key_prefix)
    } else {
        RedisTarget::parse(url)
    }
    .context("invalid redis.url")?;
    Ok(Some(Arc::new(Redis::new(target))))
}

/// The prefix of every key and channel on `redis.url`: `redis.key_prefix`, hash-tagged on a Redis Cluster so
/// that all of them (and the scripts that touch several) live in one slot.
fn main_prefix(config: &Config) -> String {
    match config.redis.url() {
        Some(url) if RedisTarget::is_cluster_url(url) => format!("{{{}}}", config.redis.key_prefix),
        _ => config.redis.key_prefix.clone(),
    }
}

/// The partitions of `redis.partitions` (partition `i` under the key prefix `<prefix>:p<i>`, so groups may share
/// a Redis) or `redis.cluster_partitions` (partition `i` under `{<prefix>:p<i>}` on the master of that slot),
/// their subscribers sharing one vector of this node's positions.
fn cluster_partitions(
    config: &Config,
    hub: &Arc<Hub>,
    node: &str,
    stream_ttl: Duration,
) -> anyhow::Result<Vec<Arc<ClusterBackend>>> {
    // On a Redis Cluster, partition i is the slot of its tag; otherwise the i-th group of the list.
    let groups: Vec<(RedisTarget, String)> = match config.redis.url() {
        Some(url) if RedisTarget::is_cluster_url(url) => (0..config.redis.cluster_partitions)
            .map(|index| {
                let tag = format!("{}:p{index}", config.redis.key_prefix);
                let target = RedisTarget::cluster_slot(url, &tag).context("invalid redis.url")?;
                Ok((target, format!("{{{tag}}}")))
            })
            .collect::<anyhow::Result<_>>()?,
        _ => config
            .redis
            .partitions
            .iter()
            .enumerate()
            .map(|(index, url)| {
                let target = RedisTarget::parse(url)
                    .with_context(|| format!("invalid redis.partitions entry {index}"))?;
                Ok((target, format!("{}:p{index}", config.redis.key_prefix)))
            })
            .collect::<anyhow::Result<_>>()?,
    };
    let positions = Arc::new(crate::cluster::partition::NodePositions::new(groups.len()));
    let mut parts = Vec::with_capacity(groups.len());
    for (index, (target, prefix)) in groups.into_iter().enumerate() {
        parts.push(ClusterBackend::with_lane(
            Arc::new(Redis::new(target)),
            Keys::new(&prefix),
            hub.clone(),
            node,
            config.history.max_events,
            stream_ttl,
            Some(crate::cluster::subscriber::Lane {
                index,
                positions: positions.clone(),
            }),
        ));
    }
    tracing::info!(
        partitions = parts.len(),
        "room events spread over redis groups"
    );
    Ok(parts)
}

/// Cluster mode: advertises this node in the registry (heartbeat with the engine's connection count) and
/// forwards requests for other nodes' sessions to their owner.
fn start_cluster(
    redis: Arc<Redis>,
    config: &Config,
    engine: &Arc<Engine>,
    me: NodeInfo,
) -> (Arc<Registry>, Arc<Tunnels>) {
    if config.public_url.is_empty() && config.listen.ip().is_unspecified() {
        tracing::warn!(url = %me.url, "public_url is not set: other nodes will forward to this URL; set public_url to an address they can reach");
    }
    tracing::info!(node = %me.id, url = %me.url, "joining the cluster");
    let registry = Arc::new(Registry::new(redis, main_prefix(config), me));
    let counted = Arc::downgrade(engine);
    registry.spawn_heartbeat(Arc::new(move || {
        counted.upgrade().map_or(0, |engine| engine.session_count())
    }));
    let forwarder = Forwarder::new(registry.clone(), Forwarder::timeout_for(engine.config()));
    let tunnels = forwarder.tunnels();
    engine.set_router(Arc::new(forwarder));
    (registry, tunnels)
}

fn engine_route(
    engine: Arc<Engine>,
) -> impl Fn(
    Request,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = axum::response::Response> + Send>>
       + Clone
       + Send
       + Sync
       + 'static {
    move |req: Request| {
        let engine = engine.clone();
        Box::pin(async move {
            let remote = req.extensions().get::<SocketAddr>().copied();
            engine.handle(req, remote).await
        })
    }
}

/// Once a second: expire history and parked sessions. Ends when the node is dropped.
async fn sweep_loop(hub: std::sync::Weak<Hub>, sessions: std::sync::Weak<dyn SessionStore>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (Some(hub), Some(sessions)) = (hub.upgrade(), sessions.upgrade()) else {
            return;
        };
        hub.sweep();
        sessions.sweep();
        metrics::gauge!("tidings_parked_sessions").set(sessions.len() as f64);
    }
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    polling: Arc<PollingRoutes>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        tokio::spawn(serve_connection(
            stream,
            remote,
            router.clone(),
            polling.clone(),
            stop.clone(),
        ));
    }
}

/// Serves one accepted connection: long-polling requests in [`polling_conn`] (a parked GET then holds no
/// hyper buffers), and everything from the first other request on in hyper.
///
/// A plain function returning the future: an `async fn` would keep its arguments twice (as arguments and as the
/// locals they move into) in every parked GET's task (496 → 400 B, with [`polling_conn::serve`] alike 344 B:
/// a 512-byte task cell instead of 640).
#[allow(clippy::manual_async_fn)] // on purpose: see above
fn serve_connection(
    stream: TcpStream,
    remote: SocketAddr,
    router: Router,
    polling: Arc<PollingRoutes>,
    mut stop: watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let _ = stream.set_nodelay(true);
        let stream = if polling.is_empty() {
            stream
        } else {
            match polling_conn::serve(stream, &remote, &polling, &mut stop).await {
                polling_conn::Outcome::Closed => return,
                polling_conn::Outcome::Hyper(stream) => stream,
            }
        };
        // Boxed: hyper's connection state is large, and a polling connection's task never gets this far.
        Box::pin(serve_http(stream, remote, router, stop)).await;
    }
}

/// Serves a connection with hyper (HTTP/1.1 with upgrades, for the websocket transport).
async fn serve_http(
    stream: TcpStream,
    remote: SocketAddr,
    router: Router,
    mut stop: watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(remote);
        let router = router.clone();
        async move {
            Ok::<_, Infallible>(
                router
                    .oneshot(req.map(Body::new))
                    .await
                    .unwrap_or_else(|e| match e {}),
            )
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = stop.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), connection.as_mut()).await;
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

fn print_banner(
    config: &Config,
    running: &RunningNode,
    generated: &[crate::config::GeneratedSecret],
    banner: Banner,
) {
    let say = |line: String| match banner {
        Banner::Text => println!("{line}"),
        Banner::Log => tracing::info!("{line}"),
    };
    let warn = |line: String| match banner {
        Banner::Text => eprintln!("WARNING: {line}"),
        Banner::Log => tracing::warn!("{line}"),
    };
    let local = running.local_addr();
    if config.conformance {
        say(format!("tidings conformance server listening on http://{local} (Socket.IO {SOCKET_IO_PATH}, Engine.IO {ENGINE_IO_PATH}, raw WebSocket echo {WS_ECHO_PATH})"));
        return;
    }
    // Warnings first: whoever waits for the "listening" line has them by then.
    if config.auth.insecure_dev_secrets {
        warn("insecure_dev_secrets is on: short JWT secrets and API keys are accepted; development only.".into());
    }
    if !generated.is_empty() {
        warn("no secrets configured; generated development secrets for this run only:".into());
        for secret in generated {
            warn(format!("  {secret}"));
        }
        warn(
            "configure auth.jwt_secret (or jwt_public_key) and api.keys before production use."
                .into(),
        );
    }
    say(format!(
        "tidings listening on http://{local} (Socket.IO at {SOCKET_IO_PATH}, API at /v1)"
    ));
    if let Some(admin) = running.admin_addr() {
        say(format!(
            "tidings admin endpoints on http://{admin} (/metrics, /stats, /healthz)"
        ));
    }
}

/// The settings the official protocol test-suites assume.
fn apply_conformance_settings(config: &mut Config) {
    config.engine.ping_interval_ms = 300;
    config.engine.ping_timeout_ms = 200;
    config.engine.connect_timeout_ms = 1000;
    // The test-suites open every session from one address, faster than any real client.
    config.limits.max_sessions_per_ip = 0;
    config.limits.handshakes_per_sec_per_ip = 0;
    config.engine.max_payload = 1_000_000;
    config.recovery.enabled = false;
}

/// Most connections the kernel queues before the server accepts them: a burst of reconnecting clients (after a
/// node restart or a network blip) must not overflow a small default queue and wait out SYN retries.
const LISTEN_BACKLOG: u32 = 4096;

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
