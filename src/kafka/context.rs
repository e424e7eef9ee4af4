//! What the Kafka clients tell tidings. librdkafka's log lines and errors go to `tracing`; its statistics
//! (every [`STATS_INTERVAL_MS`]) say whether the client has a broker connection up, kept in its [`Link`] —
//! `/readyz` lists the links, `tidings_kafka_connected{client}` is 1 or 0 — and consumer-group rebalances are
//! logged and counted (`tidings_kafka_rebalances_total{client, kind}`).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;

/// How often librdkafka reports its statistics (and so how fast a link's state follows the brokers).
pub const STATS_INTERVAL_MS: &str = "1000";

/// Client errors logged at warn level at most once per interval (the rest at debug, counted).
static CLIENT_ERRORS: crate::auth::refusals::RefusalLog =
    crate::auth::refusals::RefusalLog::new(std::time::Duration::from_secs(10));

/// Not known yet: no statistics came.
const STARTING: u8 = 0;
/// At least one broker connection is up.
const UP: u8 = 1;
/// No broker connection is up.
const DOWN: u8 = 2;

/// One Kafka client of this node (an ingest entry's consumer, the egress producer) and its broker state.
pub struct Link {
    name: String,
    state: AtomicU8,
}

impl Link {
    /// The client's name, e.g. `ingest[0]` or `egress`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `starting`, `up` or `down`.
    pub fn state(&self) -> &'static str {
        match self.state.load(Ordering::Relaxed) {
            UP => "up",
            DOWN => "down",
            _ => "starting",
        }
    }

    fn set(&self, up: bool) {
        let new = if up { UP } else { DOWN };
        let old = self.state.swap(new, Ordering::Relaxed);
        metrics::gauge!("tidings_kafka_connected", "client" => self.name.clone())
            .set(f64::from(u8::from(up)));
        if old != new {
            if up {
                tracing::info!(client = %self.name, "kafka: connected to the brokers");
            } else {
                tracing::warn!(client = %self.name, "kafka: no broker reachable; retrying");
            }
        }
    }
}

/// The Kafka clients of this node.
#[derive(Default)]
pub struct Links(Mutex<Vec<Arc<Link>>>);

impl Links {
    /// A new link named `name`, in state `starting`.
    pub fn add(&self, name: &str) -> Arc<Link> {
        let link = Arc::new(Link {
            name: name.to_owned(),
            state: AtomicU8::new(STARTING),
        });
        metrics::gauge!("tidings_kafka_connected", "client" => name.to_owned()).set(0.0);
        self.0.lock().push(link.clone());
        link
    }

    /// `{name: state}` of every link.
    pub fn to_json(&self) -> serde_json::Value {
        let links = self.0.lock();
        serde_json::Value::Object(
            links
                .iter()
                .map(|link| (link.name.clone(), link.state().into()))
                .collect(),
        )
    }
}

/// The context of one client: its [`Link`].
pub struct Context {
    link: Arc<Link>,
}

impl Context {
    /// The context of the client behind `link`.
    pub fn new(link: Arc<Link>) -> Context {
        Context { link }
    }
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let client = self.link.name();
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(client, facility, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(client, facility, "librdkafka: {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(client, facility, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(client, facility, "librdkafka: {message}"),
        }
    }

    fn stats(&self, statistics: Statistics) {
        // Bootstrap entries have no node id; a learned broker that is UP is a working connection.
        let up = statistics
            .brokers
            .values()
            .any(|broker| broker.state == "UP");
        self.link.set(up);
        metrics::gauge!("tidings_kafka_queued", "client" => self.link.name.clone())
            .set(statistics.msg_cnt as f64);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        metrics::counter!("tidings_kafka_errors_total", "where" => "client").increment(1);
        if matches!(
            error.rdkafka_error_code(),
            Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown)
        ) {
            self.link.set(false);
        }
        // A broker away makes librdkafka report every reconnection attempt: one line per 10 s per node.
        match CLIENT_ERRORS.note("client", std::time::Instant::now()) {
            Some(held) => {
                tracing::warn!(client = %self.link.name(), %error, reason, held_back = %held,
                "kafka client error")
            }
            None => {
                tracing::debug!(client = %self.link.name(), %error, reason, "kafka client error")
            }
        }
    }
}

impl ConsumerContext for Context {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let (kind, partitions) = match rebalance {
            Rebalance::Assign(list) => ("assign", list.count()),
            Rebalance::Revoke(list) => ("revoke", list.count()),
            Rebalance::Error(error) => {
                tracing::warn!(client = %self.link.name(), %error, "kafka: rebalance failed");
                ("error", 0)
            }
        };
        metrics::counter!("tidings_kafka_rebalances_total", "client" => self.link.name.clone(), "kind" => kind)
            .increment(1);
        tracing::info!(client = %self.link.name(), kind, partitions, "kafka: group rebalanced");
    }
}
