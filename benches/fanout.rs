//! Fan-out micro-benchmarks: one `Hub::publish` of a ~100-byte event, the path a published event takes on a
//! node (encode once, append to the room's history, queue on every member's outbox).
//!
//! Members are sessions without a transport: nothing writes them to a socket, so after every publish the
//! benchmark drains each recipient's outbox itself, outside the timed region. Every publish therefore finds
//! idle outboxes, as on a node whose writers keep up, and none is refused as full (checked). The history keeps
//! [`HISTORY_EVENTS_PER_ROOM`] events per room and is filled to that cap before measuring, so each publish
//! also evicts one event. No metrics recorder is installed, so the hub's counters cost nothing here.
//!
//! Throughput is in deliveries (members reached per publish); time per delivery is time per publish divided
//! by the member count.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tidings::engineio::session::TransportKind;
use tidings::engineio::{EngineConfig, Outgoing, Session};
use tidings::history::MemoryHistory;
use tidings::hub::{Event, Hub, RoomKey};

/// The event's data: a JSON object of about 100 bytes.
const EVENT_DATA: &[u8] =
    br#"{"user":"u-1842","room":"lobby","text":"a typical chat line of about this size","ts":1732406400123}"#;

/// Events kept per room by the benchmark's history.
const HISTORY_EVENTS_PER_ROOM: usize = 100;

/// Member counts of the single-room cases.
const ROOM_SIZES: [usize; 5] = [1, 20, 100, 2_000, 20_000];

/// The many-rooms case: this many rooms of [`MEMBERS_PER_SMALL_ROOM`], published to in turn.
const SMALL_ROOMS: usize = 1_000;
const MEMBERS_PER_SMALL_ROOM: usize = 20;

/// One room of the fixture: its name (as an event target) and its members.
struct Room {
    targets: [String; 1],
    members: Vec<Arc<Session>>,
}

/// A hub whose rooms are all in the main namespace, each with its own member sessions.
struct Fixture {
    hub: Hub,
    rooms: Vec<Room>,
    drained: Vec<Outgoing>,
}

impl Fixture {
    fn new(room_count: usize, members_per_room: usize) -> Fixture {
        let history = MemoryHistory::new(
            HISTORY_EVENTS_PER_ROOM,
            Duration::from_secs(300),
            256 << 20,
            Duration::from_secs(300),
        );
        let hub = Hub::new(Arc::new(history));
        let limits = EngineConfig::default().outbox;
        let rooms = (0..room_count)
            .map(|index| {
                let name = format!("room-{index}");
                let key = RoomKey::new("/", &name);
                let members: Vec<Arc<Session>> = (0..members_per_room)
                    .map(|_| Session::new(TransportKind::WebSocket, limits, 10))
                    .collect();
                for session in &members {
                    hub.join(&key, session.sid(), session);
                }
                Room {
                    targets: [name],
                    members,
                }
            })
            .collect();
        let mut fixture = Fixture {
            hub,
            rooms,
            drained: Vec::new(),
        };
        for _ in 0..HISTORY_EVENTS_PER_ROOM {
            for index in 0..room_count {
                fixture.publish_and_drain(index);
            }
        }
        fixture
    }

    /// Publishes one event to room `index`; returns the time `Hub::publish` took, then drains the members.
    fn publish_and_drain(&mut self, index: usize) -> Duration {
        let room = &self.rooms[index];
        let event = Event {
            nsp: "/",
            rooms: &room.targets,
            name: "message",
            data: EVENT_DATA,
            attachments: &[],
            with_offset: true,
        };
        let start = Instant::now();
        let published = black_box(self.hub.publish(black_box(&event)));
        let elapsed = start.elapsed();
        assert_eq!(
            (published.recipients, published.dropped),
            (room.members.len(), 0),
            "every member must take the event"
        );
        for session in &room.members {
            session.outbox.drain(&mut self.drained, usize::MAX);
            self.drained.clear();
        }
        elapsed
    }
}

fn publish_to_one_room(c: &mut Criterion) {
    let mut group = c.benchmark_group("hub_publish");
    group.sample_size(30);
    for members in ROOM_SIZES {
        let mut fixture = Fixture::new(1, members);
        group.throughput(Throughput::Elements(members as u64));
        group.bench_function(BenchmarkId::new("one_room", members), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| fixture.publish_and_drain(0)).sum())
        });
    }

    let mut fixture = Fixture::new(SMALL_ROOMS, MEMBERS_PER_SMALL_ROOM);
    let mut next_room = 0;
    group.throughput(Throughput::Elements(MEMBERS_PER_SMALL_ROOM as u64));
    let id = format!("round_robin_{SMALL_ROOMS}_rooms_x_{MEMBERS_PER_SMALL_ROOM}");
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    next_room = (next_room + 1) % SMALL_ROOMS;
                    fixture.publish_and_drain(next_room)
                })
                .sum()
        })
    });
    group.finish();
}

criterion_group!(fanout, publish_to_one_room);
criterion_main!(fanout);
