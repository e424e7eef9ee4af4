//! Flags of `tidings bench`.

use clap::{Args, Subcommand};

use super::dm::DmArgs;

/// Other load shapes than room broadcasts.
#[derive(Debug, Clone, Subcommand)]
pub enum BenchMode {
    /// Direct messages: senders emit `dm` at a steady rate to recipients whose devices acknowledge each one.
    Dm(Box<DmArgs>),
    /// Client streams (case E): workers publish positions into team rooms watched by managers.
    Tracking(Box<crate::bench::tracking::TrackingArgs>),
}

/// Flags of `tidings bench`: N Socket.IO clients subscribe, then events are published at a steady rate and
/// every delivery is timed.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Nodes to connect to, comma-separated or repeated (http:// or ws://, path defaults to /socket.io/);
    /// clients go round-robin over them.
    #[arg(
        long = "url",
        value_name = "URL",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:3000"
    )]
    pub urls: Vec<String>,
    /// Number of clients.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub clients: usize,
    /// Rooms the clients spread over: client j joins `<room-prefix>-<j mod K>`.
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub rooms: usize,
    /// Prefix of the room names.
    #[arg(long, value_name = "PREFIX", default_value = "bench")]
    pub room_prefix: String,
    /// Share of clients (0.0 ..= 1.0) using HTTP long-polling instead of websocket.
    #[arg(long, value_name = "SHARE", default_value_t = 0.0)]
    pub polling_share: f64,
    /// Events published per second (round-robin over the rooms).
    #[arg(long, value_name = "R", default_value_t = 10.0)]
    pub rate: f64,
    /// Seconds of publishing.
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    pub duration: f64,
    /// Approximate size in bytes of each event's data (padded with a `pad` string); 0 = just `t` and `seq`.
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    pub payload: usize,
    /// API key for the HTTP publish API.
    #[arg(
        long,
        value_name = "K",
        env = "TIDINGS_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
    /// HS256 secret: every client gets its own token (sub `bench-<j>`, rooms `<room-prefix>*`).
    #[arg(
        long,
        value_name = "S",
        env = "TIDINGS_JWT_SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,
    /// One token for every client (wins over --jwt-secret).
    #[arg(long, value_name = "T")]
    pub token: Option<String>,
    /// Where to publish; default: the first --url plus /v1/publish.
    #[arg(long, value_name = "URL")]
    pub publish_url: Option<String>,
    /// Publish requests in flight at most.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub publish_concurrency: usize,
    /// POST the events to every node of --url in turn (each one's /v1/publish) instead of one publish URL.
    #[arg(long, conflicts_with = "publish_url")]
    pub publish_round_robin: bool,
    /// Churn: this percentage of the websocket clients (e.g. 1) drops its connection each minute of publishing,
    /// at evenly spaced times, each a client picked at random. A dropped client closes its TCP socket without a
    /// Socket.IO disconnect, reconnects to the next node of --url and resumes its session (`pid`, `offset` in the
    /// CONNECT, as socket.io-client does); every client then checks that it gets each event of its room once
    /// and in order across its reconnects, and a room's events are published one at a time.
    #[arg(long, value_name = "PERCENT", default_value_t = 0.0)]
    pub reconnect_per_min: f64,
    /// Publish with Redis PUBLISH on `<redis-prefix>:publish` (the ingest channel) instead of HTTP.
    #[arg(long, value_name = "URL", conflicts_with = "publish_url")]
    pub redis_ingest: Option<String>,
    /// Publish by producing records to the Kafka topic --kafka-topic at these brokers (host:port, comma-separated),
    /// keyed by room, which a `[[kafka.ingest]]` entry of the nodes consumes.
    #[arg(long, value_name = "BROKERS", conflicts_with_all = ["publish_url", "redis_ingest"], requires = "kafka_topic")]
    pub kafka_ingest: Option<String>,
    /// Topic for --kafka-ingest.
    #[arg(long, value_name = "TOPIC")]
    pub kafka_topic: Option<String>,
    /// Key prefix of the cluster (for --redis-ingest).
    #[arg(long, value_name = "PREFIX", default_value = "tidings")]
    pub redis_prefix: String,
    /// New connections per second, e.g. 2000 or 2000/s (shared by all worker processes).
    #[arg(long, value_name = "RATE", default_value = "5000/s")]
    pub ramp: String,
    /// Seconds a client may take to connect and subscribe.
    #[arg(long, value_name = "S", default_value_t = 30.0)]
    pub connect_timeout: f64,
    /// Bind client sockets to 127.0.0.1 … 127.0.0.N, so each source address has its own ephemeral ports.
    #[arg(long, value_name = "N")]
    pub source_ips: Option<u32>,
    /// Client processes (0 = as many as the open-files limit needs; 1 = clients in this process).
    #[arg(long, value_name = "P", default_value_t = 0)]
    pub workers: usize,
    /// Seconds of publishing before the measured phase; those deliveries are not measured.
    #[arg(long, value_name = "S", default_value_t = 0.0)]
    pub warmup: f64,
    /// Seconds to wait after publishing for deliveries still on their way.
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    pub drain: f64,
    /// Seconds to hold the clients connected and idle (nothing published) once every one of them connected or
    /// failed, before publishing starts; for measuring a node's memory per idle connection (`bench/memory.sh`).
    #[arg(long, value_name = "S", default_value_t = 0.0)]
    pub hold: f64,
    /// Least share of the expected deliveries (0.0 ..= 1.0) a run must see to exit 0; failed connections or
    /// publishes also make it exit non-zero.
    #[arg(long, value_name = "RATIO", default_value_t = 1.0)]
    pub min_delivered: f64,
    /// Allow targets that are not loopback addresses.
    #[arg(long)]
    pub allow_remote: bool,
    /// Print one JSON line instead of the table.
    #[arg(long)]
    pub json: bool,
    /// No progress lines.
    #[arg(short, long)]
    pub quiet: bool,
    /// Another load shape (the flags above are then not used).
    #[command(subcommand)]
    pub mode: Option<BenchMode>,
    /// Internal: this process is worker i of a multi-process run.
    #[arg(long, hide = true, requires = "worker_count")]
    pub worker_index: Option<usize>,
    /// Internal: number of worker processes.
    #[arg(long, hide = true, requires = "worker_index")]
    pub worker_count: Option<usize>,
}

impl BenchArgs {
    /// The flags with clap's defaults, for `clients` clients of the node at `url` (library use and tests).
    pub fn new(url: &str, clients: usize) -> BenchArgs {
        BenchArgs {
            urls: vec![url.to_owned()],
            clients,
            rooms: 1,
            room_prefix: "bench".into(),
            polling_share: 0.0,
            rate: 10.0,
            duration: 10.0,
            payload: 0,
            api_key: None,
            jwt_secret: None,
            token: None,
            publish_url: None,
            publish_concurrency: 16,
            publish_round_robin: false,
            reconnect_per_min: 0.0,
            redis_ingest: None,
            kafka_ingest: None,
            kafka_topic: None,
            redis_prefix: "tidings".into(),
            ramp: "5000/s".into(),
            connect_timeout: 30.0,
            source_ips: None,
            workers: 0,
            warmup: 0.0,
            drain: 10.0,
            hold: 0.0,
            min_delivered: 1.0,
            allow_remote: false,
            json: false,
            quiet: false,
            worker_index: None,
            worker_count: None,
            mode: None,
        }
    }
}
