//! In-memory room history, bounded per room (count, age) and globally (bytes).
//!
//! One lock guards everything: appends already run one at a time under the hub's ordering lock, and reads
//! (replays, the history API) are short.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use rand::Rng;

use super::{HistoryError, HistoryStats, HistoryStore, StoredEvent};
use crate::hub::{EventPackets, RoomKey};

/// Bytes accounted per stored event on top of its payload: queue slot, shared packet list, allocator headers
/// (measured with `bench/recovery.sh`: about 150 bytes of heap besides the packet itself).
pub const EVENT_OVERHEAD: usize = 160;

struct Stream {
    epoch: u64,
    events: VecDeque<(StoredEvent, Instant)>,
    /// Highest sequence ever evicted from this stream (0 = none).
    evicted_through: u64,
    last_used: Instant,
}

#[derive(Default)]
struct State {
    streams: HashMap<RoomKey, Stream>,
    /// Oldest event of each non-empty stream, by sequence then room: the global eviction order. An event
    /// published to several rooms has one sequence in each of their streams, so the room is part of the key.
    fronts: BTreeSet<(u64, RoomKey)>,
    events: usize,
    bytes: usize,
}

fn event_size(packets: &EventPackets) -> usize {
    packets.iter().map(|p| p.len()).sum::<usize>() + EVENT_OVERHEAD
}

impl State {
    /// Removes the oldest event of `room`'s stream, keeping the indexes right.
    fn pop_front(&mut self, room: &RoomKey) {
        let Some(stream) = self.streams.get_mut(room) else {
            return;
        };
        let Some((event, _)) = stream.events.pop_front() else {
            return;
        };
        self.fronts.remove(&(event.seq, room.clone()));
        stream.evicted_through = stream.evicted_through.max(event.seq);
        if let Some((next, _)) = stream.events.front() {
            self.fronts.insert((next.seq, room.clone()));
        }
        self.events -= 1;
        self.bytes -= event_size(&event.packets);
    }

    /// Evicts the globally oldest event.
    fn pop_oldest(&mut self) -> bool {
        let Some((_, room)) = self.fronts.first().cloned() else {
            return false;
        };
        self.pop_front(&room);
        true
    }
}

/// The embedded history store.
pub struct MemoryHistory {
    state: Mutex<State>,
    max_events: usize,
    max_age: Duration,
    max_bytes: usize,
    keep_idle: Duration,
}

impl MemoryHistory {
    /// A store keeping at most `max_events` per room for at most `max_age`, `max_bytes` in total; empty
    /// streams are kept `keep_idle` after last use so that short disconnections keep their epoch.
    pub fn new(
        max_events: usize,
        max_age: Duration,
        max_bytes: usize,
        keep_idle: Duration,
    ) -> MemoryHistory {
        MemoryHistory {
            state: Mutex::new(State::default()),
            max_events,
            max_age,
            max_bytes,
            keep_idle,
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn new_stream(now: Instant) -> Stream {
    Stream {
        epoch: rand::thread_rng().gen_range(1..u64::MAX >> 11),
        events: VecDeque::new(),
        evicted_through: 0,
        last_used: now,
    }
}

impl HistoryStore for MemoryHistory {
    fn epoch(&self, room: &RoomKey) -> u64 {
        let now = Instant::now();
        let mut state = self.state.lock();
        let stream = state
            .streams
            .entry(room.clone())
            .or_insert_with(|| new_stream(now));
        stream.last_used = now;
        stream.epoch
    }

    fn append(&self, room: &RoomKey, seq: u64, packets: &EventPackets) {
        if self.max_events == 0 {
            return;
        }
        let now = Instant::now();
        let size = event_size(packets);
        let mut state = self.state.lock();
        let stream = state
            .streams
            .entry(room.clone())
            .or_insert_with(|| new_stream(now));
        stream.last_used = now;
        let was_empty = stream.events.is_empty();
        stream.events.push_back((
            StoredEvent {
                seq,
                at_ms: now_ms(),
                packets: packets.clone(),
            },
            now,
        ));
        let over_count = stream.events.len() > self.max_events;
        if was_empty {
            state.fronts.insert((seq, room.clone()));
        }
        state.events += 1;
        state.bytes += size;
        if over_count {
            state.pop_front(room);
        }
        while state.bytes > self.max_bytes && state.pop_oldest() {}
    }

    fn read_after(
        &self,
        room: &RoomKey,
        epoch: Option<u64>,
        after: u64,
        limit: usize,
    ) -> Result<(u64, Vec<StoredEvent>), HistoryError> {
        let state = self.state.lock();
        let Some(stream) = state.streams.get(room) else {
            return match epoch {
                Some(_) => Err(HistoryError::EpochChanged),
                None => Ok((0, Vec::new())),
            };
        };
        if epoch.is_some_and(|e| e != stream.epoch) {
            return Err(HistoryError::EpochChanged);
        }
        if stream.evicted_through > after {
            return Err(HistoryError::Evicted);
        }
        let start = stream
            .events
            .partition_point(|(event, _)| event.seq <= after);
        let events = stream
            .events
            .range(start..)
            .take(limit)
            .map(|(event, _)| event.clone())
            .collect();
        Ok((stream.epoch, events))
    }

    fn sweep(&self, in_use: &dyn Fn(&RoomKey) -> bool) {
        let now = Instant::now();
        let mut state = self.state.lock();
        // Streams in order of their oldest event: the first one whose oldest event is young enough ends it.
        while let Some((_, room)) = state.fronts.first().cloned() {
            let expired = state
                .streams
                .get(&room)
                .and_then(|s| s.events.front())
                .is_some_and(|(_, at)| now.duration_since(*at) > self.max_age);
            if !expired {
                break;
            }
            state.pop_front(&room);
        }
        let keep_idle = self.keep_idle;
        state.streams.retain(|room, stream| {
            !stream.events.is_empty()
                || now.duration_since(stream.last_used) < keep_idle
                || in_use(room)
        });
    }

    fn stats(&self) -> HistoryStats {
        let state = self.state.lock();
        HistoryStats {
            rooms: state.streams.len(),
            events: state.events,
            bytes: state.bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engineio::Outgoing;
    use bytes::Bytes;
    use std::sync::Arc;

    fn packets(text: &str) -> EventPackets {
        Arc::from([Outgoing::Text(Bytes::copy_from_slice(text.as_bytes()))])
    }

    fn store(max_events: usize, max_bytes: usize) -> MemoryHistory {
        MemoryHistory::new(
            max_events,
            Duration::from_secs(300),
            max_bytes,
            Duration::from_secs(120),
        )
    }

    fn seqs(events: &[StoredEvent]) -> Vec<u64> {
        events.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn reads_in_order_after_position() {
        let h = store(100, 1 << 20);
        let room = RoomKey::new("/", "a");
        let epoch = h.epoch(&room);
        for seq in [2, 5, 9] {
            h.append(&room, seq, &packets("x"));
        }
        let (e, events) = h.read_after(&room, Some(epoch), 0, 100).unwrap();
        assert_eq!(e, epoch);
        assert_eq!(seqs(&events), vec![2, 5, 9]);
        assert_eq!(
            seqs(&h.read_after(&room, Some(epoch), 5, 100).unwrap().1),
            vec![9]
        );
        assert_eq!(
            seqs(&h.read_after(&room, Some(epoch), 4, 1).unwrap().1),
            vec![5]
        );
        assert!(h
            .read_after(&room, Some(epoch), 9, 100)
            .unwrap()
            .1
            .is_empty());
    }

    #[test]
    fn count_eviction_detected() {
        let h = store(3, 1 << 20);
        let room = RoomKey::new("/", "a");
        let epoch = h.epoch(&room);
        for seq in 1..=5 {
            h.append(&room, seq, &packets("x"));
        }
        assert_eq!(
            h.read_after(&room, Some(epoch), 1, 10).unwrap_err(),
            HistoryError::Evicted
        );
        assert_eq!(
            seqs(&h.read_after(&room, Some(epoch), 2, 10).unwrap().1),
            vec![3, 4, 5]
        );
        assert_eq!(h.stats().events, 3);
    }

    #[test]
    fn epoch_change_detected() {
        let h = store(10, 1 << 20);
        let room = RoomKey::new("/", "a");
        let epoch = h.epoch(&room);
        assert_eq!(
            h.read_after(&room, Some(epoch + 1), 0, 10).unwrap_err(),
            HistoryError::EpochChanged
        );
        let other = RoomKey::new("/", "never-created");
        assert_eq!(
            h.read_after(&other, Some(epoch), 0, 10).unwrap_err(),
            HistoryError::EpochChanged
        );
    }

    #[test]
    fn global_byte_cap_evicts_oldest_across_rooms() {
        let one = event_size(&packets("0123456789"));
        let h = store(100, one * 3);
        let (a, b) = (RoomKey::new("/", "a"), RoomKey::new("/", "b"));
        h.append(&a, 1, &packets("0123456789"));
        h.append(&b, 2, &packets("0123456789"));
        h.append(&a, 3, &packets("0123456789"));
        h.append(&b, 4, &packets("0123456789"));
        let stats = h.stats();
        assert_eq!(stats.events, 3);
        assert!(stats.bytes <= one * 3);
        assert_eq!(
            h.read_after(&a, None, 0, 10).unwrap_err(),
            HistoryError::Evicted
        );
        assert_eq!(seqs(&h.read_after(&a, None, 1, 10).unwrap().1), vec![3]);
        assert_eq!(seqs(&h.read_after(&b, None, 0, 10).unwrap().1), vec![2, 4]);
    }

    #[test]
    fn age_eviction_and_idle_stream_removal() {
        let h = MemoryHistory::new(10, Duration::ZERO, 1 << 20, Duration::ZERO);
        let room = RoomKey::new("/", "a");
        let epoch = h.epoch(&room);
        h.append(&room, 1, &packets("x"));
        std::thread::sleep(Duration::from_millis(2));
        h.sweep(&|_| true);
        assert_eq!(h.stats().events, 0);
        assert_eq!(
            h.read_after(&room, Some(epoch), 0, 10).unwrap_err(),
            HistoryError::Evicted
        );
        assert!(h.read_after(&room, Some(epoch), 1, 10).is_ok());
        h.sweep(&|_| false);
        assert_eq!(h.stats().rooms, 0);
        assert_eq!(
            h.read_after(&room, Some(epoch), 1, 10).unwrap_err(),
            HistoryError::EpochChanged
        );
    }

    /// The 1000-room publish: one sequence in every room's stream. Each room keeps and evicts it on its own.
    #[test]
    fn multi_room_events_are_evicted_in_every_room() {
        let rooms: Vec<RoomKey> = (0..1000)
            .map(|i| RoomKey::new("/", &format!("r{i}")))
            .collect();
        let aged = MemoryHistory::new(10, Duration::ZERO, 1 << 30, Duration::from_secs(60));
        for room in &rooms {
            aged.append(room, 1, &packets("shared"));
        }
        std::thread::sleep(Duration::from_millis(2));
        aged.sweep(&|_| true);
        assert_eq!(aged.stats().events, 0, "max age holds in every room");
        assert_eq!(aged.stats().bytes, 0);

        let one = event_size(&packets("shared"));
        let capped = store(10, one * 100);
        for room in &rooms {
            capped.append(room, 1, &packets("shared"));
        }
        let stats = capped.stats();
        assert!(stats.bytes <= one * 100, "{} bytes held", stats.bytes);
        assert_eq!(stats.events, 100);
    }

    /// Random single- and multi-room publishes against a plain model of the rules (count per room, global
    /// byte cap evicting the oldest front first, max age): after every step the store holds exactly what the
    /// model keeps, bytes never exceed the cap, and after a sweep with max age 0 nothing is left.
    #[test]
    fn random_publishes_follow_the_rules() {
        use std::collections::BTreeMap;
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for round in 0..20 {
            let max_events = 1 + next(6) as usize;
            let unit = event_size(&packets("x"));
            let cap = unit * (3 + next(20) as usize);
            let h = store(max_events, cap);
            let rooms: Vec<RoomKey> = (0..6)
                .map(|i| RoomKey::new("/", &format!("r{i}")))
                .collect();
            // room index -> (seq, size) kept, oldest first.
            let mut model: BTreeMap<usize, VecDeque<(u64, usize)>> = BTreeMap::new();
            for seq in 1..=200u64 {
                let text = "y".repeat(1 + next(3 * 160) as usize);
                let size = event_size(&packets(&text));
                let mut targets: Vec<usize> = (0..1 + next(4)).map(|_| next(6) as usize).collect();
                targets.sort();
                targets.dedup();
                for &r in &targets {
                    h.append(&rooms[r], seq, &packets(&text));
                    let kept = model.entry(r).or_default();
                    kept.push_back((seq, size));
                    if kept.len() > max_events {
                        kept.pop_front();
                    }
                    loop {
                        let total: usize = model.values().flatten().map(|(_, s)| s).sum();
                        if total <= cap {
                            break;
                        }
                        let oldest = model
                            .iter()
                            .filter_map(|(room, kept)| {
                                kept.front()
                                    .map(|(seq, _)| (*seq, rooms[*room].clone(), *room))
                            })
                            .min()
                            .map(|(_, _, room)| room)
                            .unwrap();
                        model.get_mut(&oldest).unwrap().pop_front();
                    }
                }
                let stats = h.stats();
                assert!(
                    stats.bytes <= cap,
                    "round {round} seq {seq}: {} > {cap}",
                    stats.bytes
                );
                for (i, room) in rooms.iter().enumerate() {
                    let want: Vec<u64> = model
                        .get(&i)
                        .map_or_else(Vec::new, |k| k.iter().map(|(s, _)| *s).collect());
                    let after = want.first().map_or(seq, |first| first - 1);
                    let got = h
                        .read_after(room, None, after, usize::MAX)
                        .map(|(_, e)| seqs(&e));
                    assert_eq!(got, Ok(want), "round {round} seq {seq} room {i}");
                }
            }
            let aged = MemoryHistory::new(max_events, Duration::ZERO, cap, Duration::from_secs(60));
            for seq in 1..=50u64 {
                for _ in 0..1 + next(3) {
                    aged.append(&rooms[next(6) as usize], seq, &packets("z"));
                }
            }
            std::thread::sleep(Duration::from_millis(2));
            aged.sweep(&|_| true);
            assert_eq!(
                (aged.stats().events, aged.stats().bytes),
                (0, 0),
                "round {round}"
            );
        }
    }
}
