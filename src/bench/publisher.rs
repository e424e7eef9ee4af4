//! The publisher: events at a steady rate, round-robin over the rooms, each carrying its send time `t` (µs
//! since the epoch) and a global `seq`; over the HTTP API (keep-alive pool; one node's or every node's in turn)
//! or the Redis ingest channel, with a bounded number of requests in flight. With churning clients a room's next
//! event waits for the answer to its previous one, so the room's events are sequenced in `seq` order, which the
//! clients check.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{header, Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard, Semaphore};
use tokio::time::Instant;

use super::client::micros;
use super::plan::{Plan, PublishVia};
use super::polling::error_chain_root;
use super::stats::{new_hist, Hist};
use super::sys::unix_micros;
use super::BenchError;

/// Time one publish request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest publish answer read.
const MAX_ANSWER: usize = 64 * 1024;

/// When each event of a phase is due: event `i` at `i / rate` seconds after the start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Events per second.
    pub rate: f64,
    /// Events in the phase.
    pub count: u64,
    /// Time after the start past which no event is issued any more (the rest are "not sent").
    pub cutoff: Duration,
}

impl Schedule {
    /// `count` events at `rate`, none issued later than `cutoff` after the start.
    pub fn new(rate: f64, count: u64, cutoff: Duration) -> Schedule {
        Schedule {
            rate,
            count,
            cutoff,
        }
    }

    /// Offset of event `i` from the start.
    pub fn due(&self, i: u64) -> Duration {
        Duration::from_secs_f64(i as f64 / self.rate)
    }

    /// Whether an event whose turn comes `elapsed` after the start may still be issued.
    pub fn in_time(&self, elapsed: Duration) -> bool {
        elapsed <= self.cutoff
    }
}

/// What a publishing phase did.
#[derive(Debug, Clone)]
pub struct Published {
    /// Events the phase was to publish.
    pub planned: u64,
    /// Events issued.
    pub sent: u64,
    /// Events the server accepted (2xx; for Redis: delivered to at least one subscriber).
    pub accepted: u64,
    /// Events refused or failed.
    pub failed: u64,
    /// Accepted events per room.
    pub accepted_per_room: Vec<u64>,
    /// Sum of the `recipients` the HTTP API reported (absent for Redis).
    pub recipients: Option<u64>,
    /// Wall-clock µs of the first request.
    pub started_us: u64,
    /// Wall-clock µs of the last request.
    pub last_sent_us: u64,
    /// Wall-clock µs when the last answer came.
    pub finished_us: u64,
    /// Largest delay of an issued event behind its schedule, µs.
    pub max_lag_us: u64,
    /// Failure reasons with counts.
    pub errors: BTreeMap<String, u64>,
    /// Request latency, µs.
    pub latency: Hist,
}

impl Published {
    fn new(planned: u64, rooms: usize, http: bool) -> Published {
        Published {
            planned,
            sent: 0,
            accepted: 0,
            failed: 0,
            accepted_per_room: vec![0; rooms],
            recipients: http.then_some(0),
            started_us: 0,
            last_sent_us: 0,
            finished_us: 0,
            max_lag_us: 0,
            errors: BTreeMap::new(),
            latency: new_hist(),
        }
    }

    /// Events not issued because the schedule ran out of time.
    pub fn not_sent(&self) -> u64 {
        self.planned - self.sent
    }

    /// Events issued per second, from the first request to one interval after the last.
    pub fn achieved_rate(&self, rate: f64) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        let span = self.last_sent_us.saturating_sub(self.started_us) as f64 / 1e6 + 1.0 / rate;
        self.sent as f64 / span
    }
}

/// How a publish request goes out.
#[derive(Clone)]
enum Sender {
    Http {
        client: Client<HttpConnector, Body>,
        uris: Arc<[Uri]>,
        authorization: Option<String>,
    },
    Redis {
        connection: redis::aio::MultiplexedConnection,
        channel: String,
    },
    Kafka {
        producer: rdkafka::producer::FutureProducer,
        topic: Arc<str>,
    },
}

/// Publishes the bench's events.
pub struct Publisher {
    sender: Sender,
    rooms: Arc<[String]>,
    payload: usize,
    concurrency: usize,
    /// One lock per room, held from a publish until its answer, when rooms are published one event at a time.
    in_order: Option<Vec<Arc<AsyncMutex<()>>>>,
}

impl Publisher {
    /// A publisher for `plan` (connects to Redis when publishing there).
    pub async fn connect(plan: &Plan) -> Result<Publisher, BenchError> {
        let sender = match &plan.publish {
            PublishVia::Http { uris, api_key } => {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                Sender::Http {
                    client: Client::builder(TokioExecutor::new())
                        .pool_max_idle_per_host(plan.concurrency)
                        .build(connector),
                    uris: uris.clone().into(),
                    authorization: api_key.as_ref().map(|k| format!("Bearer {k}")),
                }
            }
            PublishVia::Kafka { brokers, topic } => {
                let producer = rdkafka::ClientConfig::new()
                    .set("bootstrap.servers", brokers)
                    .set("linger.ms", "5")
                    .set("message.timeout.ms", "10000")
                    .create()
                    .map_err(|e| BenchError::Kafka(e.to_string()))?;
                Sender::Kafka {
                    producer,
                    topic: topic.as_str().into(),
                }
            }
            PublishVia::Redis { url, channel } => {
                let client = redis::Client::open(url.as_str())
                    .map_err(|e| BenchError::Redis(e.to_string()))?;
                let connection = client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(|e| BenchError::Redis(e.to_string()))?;
                Sender::Redis {
                    connection,
                    channel: channel.clone(),
                }
            }
        };
        Ok(Publisher {
            sender,
            rooms: (0..plan.rooms)
                .map(|k| plan.room_name(k))
                .collect::<Vec<_>>()
                .into(),
            payload: plan.payload,
            concurrency: plan.concurrency,
            in_order: plan
                .churns()
                .then(|| (0..plan.rooms).map(|_| Arc::default()).collect()),
        })
    }

    /// Waits until `room` has no publish in flight, when rooms are published one event at a time.
    async fn room_turn(&self, room: usize) -> Option<OwnedMutexGuard<()>> {
        match &self.in_order {
            Some(locks) => Some(locks[room].clone().lock_owned().await),
            None => None,
        }
    }

    /// Publishes events `first_seq ..` as `schedule` says; event `seq` goes to room `seq mod rooms`.
    pub async fn run(&self, first_seq: u64, schedule: Schedule) -> Published {
        let http = matches!(self.sender, Sender::Http { .. });
        let result = Arc::new(Mutex::new(Published::new(
            schedule.count,
            self.rooms.len(),
            http,
        )));
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let start = Instant::now();
        result.lock().started_us = unix_micros();
        for i in 0..schedule.count {
            let due = start + schedule.due(i);
            tokio::time::sleep_until(due).await;
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let now = Instant::now();
            if !schedule.in_time(now - start) {
                break;
            }
            let seq = first_seq + i;
            let room = (seq % self.rooms.len() as u64) as usize;
            let turn = self.room_turn(room).await;
            let body = event_body(&self.rooms[room], seq, self.payload);
            {
                let mut r = result.lock();
                r.sent += 1;
                r.last_sent_us = unix_micros();
                r.max_lag_us = r.max_lag_us.max(micros(now - due));
            }
            let sender = self.sender.clone();
            let rooms = self.rooms.clone();
            let result = result.clone();
            tokio::spawn(async move {
                let sent = Instant::now();
                // Node (room + round): successive events go to successive nodes, and so do a room's.
                let node = room + (seq / rooms.len() as u64) as usize;
                let outcome = sender.send(node, &rooms[room], body).await;
                drop(turn);
                let took = micros(sent.elapsed());
                let mut r = result.lock();
                r.latency.saturating_record(took.max(1));
                r.finished_us = unix_micros();
                match outcome {
                    Ok(recipients) => {
                        r.accepted += 1;
                        r.accepted_per_room[room] += 1;
                        if let (Some(total), Some(n)) = (r.recipients.as_mut(), recipients) {
                            *total += n;
                        }
                    }
                    Err(reason) => {
                        r.failed += 1;
                        *r.errors.entry(reason).or_default() += 1;
                    }
                }
                drop(permit);
            });
        }
        // Every permit back means every request answered.
        let _ = permits
            .acquire_many(u32::try_from(self.concurrency).unwrap_or(u32::MAX))
            .await;
        let published = result.lock().clone();
        published
    }
}

/// The JSON body of event `seq` for `room`, its data padded to about `payload` bytes.
fn event_body(room: &str, seq: u64, payload: usize) -> String {
    let t = unix_micros();
    let data = format!("{{\"t\":{t},\"seq\":{seq}}}");
    // `,"pad":""` adds 9 bytes around the padding itself.
    let data = match payload.checked_sub(data.len() + 9) {
        Some(pad) if pad > 0 => format!(
            "{{\"t\":{t},\"seq\":{seq},\"pad\":\"{}\"}}",
            "x".repeat(pad)
        ),
        _ => data,
    };
    format!(
        "{{\"room\":{},\"event\":\"message\",\"data\":{data}}}",
        serde_json::Value::from(room)
    )
}

/// The part of the publish answer the bench reads.
#[derive(Deserialize)]
struct Answer {
    recipients: Option<u64>,
}

impl Sender {
    /// Sends an event for `room` (over HTTP to publish URL `node` modulo their number); `Ok(recipients)` when
    /// accepted.
    async fn send(&self, node: usize, room: &str, body: String) -> Result<Option<u64>, String> {
        match self {
            Sender::Http {
                client,
                uris,
                authorization,
            } => {
                let uri = &uris[node % uris.len()];
                let mut request =
                    Request::post(uri.clone()).header(header::CONTENT_TYPE, "application/json");
                if let Some(value) = authorization {
                    request = request.header(header::AUTHORIZATION, value);
                }
                let request = request
                    .body(Body::from(body))
                    .map_err(|e| format!("request: {e}"))?;
                let response = tokio::time::timeout(REQUEST_TIMEOUT, client.request(request))
                    .await
                    .map_err(|_| "timeout".to_owned())?
                    .map_err(|e| format!("http: {}", error_chain_root(&e)))?;
                let status = response.status();
                let answer = axum::body::to_bytes(Body::new(response.into_body()), MAX_ANSWER)
                    .await
                    .map_err(|e| format!("answer: {e}"))?;
                if !status.is_success() {
                    return Err(format!("HTTP {}", status.as_u16()));
                }
                Ok(serde_json::from_slice::<Answer>(&answer)
                    .ok()
                    .and_then(|a| a.recipients))
            }
            Sender::Redis {
                connection,
                channel,
            } => {
                let mut connection = connection.clone();
                let receivers: i64 = tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    redis::cmd("PUBLISH")
                        .arg(channel)
                        .arg(body)
                        .query_async(&mut connection),
                )
                .await
                .map_err(|_| "timeout".to_owned())?
                .map_err(|e| format!("redis: {e}"))?;
                if receivers == 0 {
                    return Err("no node subscribed to the ingest channel".into());
                }
                Ok(None)
            }
            Sender::Kafka { producer, topic } => {
                let record = rdkafka::producer::FutureRecord::to(topic)
                    .key(room)
                    .payload(&body);
                producer
                    .send(record, REQUEST_TIMEOUT)
                    .await
                    .map(|_| None)
                    .map_err(|(e, _)| format!("kafka: {e}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_spaces_events_evenly() {
        let s = Schedule::new(200.0, 2000, Duration::from_secs(10));
        assert_eq!(s.due(0), Duration::ZERO);
        assert_eq!(s.due(1), Duration::from_millis(5));
        assert_eq!(s.due(200), Duration::from_secs(1));
        assert_eq!(s.due(1999), Duration::from_millis(9995));
        assert!(s.in_time(Duration::from_secs(10)));
        assert!(!s.in_time(Duration::from_millis(10_001)));
        let slow = Schedule::new(0.5, 3, Duration::from_secs(6));
        assert_eq!(slow.due(2), Duration::from_secs(4));
    }

    #[test]
    fn bodies_carry_time_seq_and_padding() {
        let body: serde_json::Value = serde_json::from_str(&event_body("bench-1", 7, 200)).unwrap();
        assert_eq!(body["room"], "bench-1");
        assert_eq!(body["event"], "message");
        assert_eq!(body["data"]["seq"], 7);
        let t = body["data"]["t"].as_u64().unwrap();
        assert!(t.abs_diff(unix_micros()) < 10_000_000);
        let data_len = body["data"].to_string().len();
        assert!((195..=205).contains(&data_len), "{data_len}");
        let small: serde_json::Value = serde_json::from_str(&event_body("r", 1, 10)).unwrap();
        assert!(small["data"].get("pad").is_none());
    }
}
