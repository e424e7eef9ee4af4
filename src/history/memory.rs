//! In-memory room history, bounded per room (count, age) and globally (bytes).
//!
//! One lock guards everything: appends already run one at a time under the hub's ordering lock, and reads
//! (replays, the history API) are short.
//!
//! An event published to several rooms is one set of shared packets held by each room's stream under the same
//! sequence. Each room keeps and evicts it on its own rules; its bytes are counted once, as long as any room
//! still holds it, plus a slot per room that holds it: that is the memory it really pins.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use rand::Rng;

use super::{reply_size, HistoryError, HistoryStats, HistoryStore, ReadLimit, Slice, StoredEvent};
use crate::hub::{EventPackets, RoomKey};
use crate::recovery::Membership;

/// Bytes accounted per stored event on top of its payload, for an event held by one room: queue slot,
/// shared packet list, allocator headers (measured with `bench/recovery.sh`: about 150 bytes of heap besides
/// the packet itself). Split into [`SLOT_OVERHEAD`] per room and the rest once per event.
pub const EVENT_OVERHEAD: usize = 160;

/// Bytes accounted for each room that holds an event: its queue entry `(StoredEvent, Instant)` (48 bytes)
/// and the room's share of the eviction index, rounded up.
pub const SLOT_OVERHEAD: usize = 64;

/// A room's stream: 24 bytes while it holds nothing and never lost an event (a map entry of 40 bytes with its
/// key). The store keeps none for a room that never had an event (see [`MemoryHistory`]'s epochs).
struct Stream {
    epoch: u64,
    /// When the stream was last used, in whole seconds since the store began (see [`MemoryHistory::secs`]).
    last_used: u32,
    /// Its events and eviction mark, from its first event (or a restored mark) on.
    held: Option<Box<Held>>,
}

/// What a stream holds once it had an event.
#[derive(Default)]
struct Held {
    events: VecDeque<(StoredEvent, Instant)>,
    /// Highest sequence ever evicted from this stream (0 = none).
    evicted_through: u64,
    /// Sequence of the first event appended to this stream (0 when it was made with a mark instead).
    first_seq: u64,
}

impl Stream {
    fn new(epoch: u64, last_used: u32) -> Stream {
        Stream {
            epoch,
            last_used,
            held: None,
        }
    }

    fn events(&self) -> Option<&VecDeque<(StoredEvent, Instant)>> {
        self.held.as_deref().map(|held| &held.events)
    }

    fn is_empty(&self) -> bool {
        self.events().is_none_or(VecDeque::is_empty)
    }

    fn evicted_through(&self) -> u64 {
        self.held.as_deref().map_or(0, |held| held.evicted_through)
    }

    fn held_mut(&mut self) -> &mut Held {
        self.held.get_or_insert_with(Box::default)
    }
}

/// An event held by at least one stream.
struct Shared {
    /// Payload plus the once-per-event overhead.
    bytes: usize,
    /// Streams holding it.
    holders: usize,
}

/// Told what the memory store lets go of, so that a copy kept elsewhere (the disk journal) follows it. Called
/// under the store's lock: an implementation must never block.
pub trait Evictions: Send + Sync {
    /// Events of `room` up to `through` left its stream (count, age or byte limit).
    fn evicted(&self, room: &RoomKey, through: u64);
    /// The (empty, idle) stream of `room` was dropped; a later one gets a new epoch.
    fn dropped(&self, room: &RoomKey);
}

#[derive(Default)]
struct State {
    streams: HashMap<RoomKey, Stream>,
    /// Per bucket of room keys ([`GENERATION_BUCKETS`]), how many streams that held events were dropped: part
    /// of the epoch of every room of the bucket that has no stream (see [`MemoryHistory::empty_epoch`]).
    generations: Vec<u32>,
    /// Oldest event of each non-empty stream, by sequence then room: the global eviction order. An event
    /// published to several rooms has one sequence in each of their streams, so the room is part of the key.
    fronts: BTreeSet<(u64, RoomKey)>,
    /// Events held, by sequence, with how many streams hold them: their payload is counted once.
    shared: HashMap<u64, Shared>,
    events: usize,
    bytes: usize,
    observer: Option<Arc<dyn Evictions>>,
}

/// Bytes of one event counted once however many rooms hold it.
fn shared_size(packets: &EventPackets) -> usize {
    packets.iter().map(|p| p.len()).sum::<usize>() + EVENT_OVERHEAD - SLOT_OVERHEAD
}

impl State {
    /// Counts a new slot holding the event `seq`.
    fn hold(&mut self, seq: u64, packets: &EventPackets) {
        let shared = self.shared.entry(seq).or_insert_with(|| Shared {
            bytes: shared_size(packets),
            holders: 0,
        });
        if shared.holders == 0 {
            self.bytes += shared.bytes;
        }
        shared.holders += 1;
        self.events += 1;
        self.bytes += SLOT_OVERHEAD;
    }

    /// Uncounts one slot of the event `seq`; its payload goes when the last slot does.
    fn release(&mut self, seq: u64) {
        self.events -= 1;
        self.bytes -= SLOT_OVERHEAD;
        if let Some(shared) = self.shared.get_mut(&seq) {
            shared.holders -= 1;
            if shared.holders == 0 {
                self.bytes -= shared.bytes;
                self.shared.remove(&seq);
            }
        }
    }

    /// Removes the oldest event of `room`'s stream, keeping the indexes right.
    fn pop_front(&mut self, room: &RoomKey) {
        let Some(stream) = self.streams.get_mut(room) else {
            return;
        };
        let Some(held) = stream.held.as_deref_mut() else {
            return;
        };
        let Some((event, _)) = held.events.pop_front() else {
            return;
        };
        held.evicted_through = held.evicted_through.max(event.seq);
        let next = held.events.front().map(|(next, _)| next.seq);
        self.fronts.remove(&(event.seq, room.clone()));
        if let Some(next) = next {
            self.fronts.insert((next, room.clone()));
        }
        self.release(event.seq);
        if let Some(observer) = &self.observer {
            observer.evicted(room, event.seq);
        }
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

/// Buckets of room keys with a generation of their own (16 KiB of counters).
const GENERATION_BUCKETS: usize = 4096;

/// Epochs stay below 2^53, exact as JSON numbers.
const EPOCH_MASK: u64 = (1 << 53) - 1;

/// The embedded history store.
///
/// A room that never had an event has no stream (every connection's personal room is one such room until its
/// first event): its epoch is the store's base epoch mixed with its bucket's generation, and its first event
/// makes a stream with that epoch. Dropping a stream that held events (empty and idle, see
/// [`HistoryStore::sweep`]) moves its bucket to the next generation, so a reader who knew that stream, or the
/// room before it, finds another epoch, as if every room had a stream of its own. Recovery reads
/// ([`HistoryStore::read_missed`]) also take a stream made after the member joined, whatever its epoch: a room's
/// stream is never dropped while a member is in it or could still recover it, so it holds every event since.
pub struct MemoryHistory {
    state: Mutex<State>,
    /// Epoch of the rooms without a stream at generation 0.
    base_epoch: u64,
    /// The clock's origin for streams' last use.
    born: Instant,
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
            state: Mutex::new(State {
                generations: vec![0; GENERATION_BUCKETS],
                ..State::default()
            }),
            base_epoch: random_epoch(),
            born: Instant::now(),
            max_events,
            max_age,
            max_bytes,
            keep_idle,
        }
    }

    /// Tells `observer` of every event and stream this store lets go of from now on.
    pub fn observed_by(self, observer: Arc<dyn Evictions>) -> MemoryHistory {
        self.state.lock().observer = Some(observer);
        self
    }

    /// The epoch `room` has while it has no stream, and the one its next stream gets.
    fn empty_epoch(&self, state: &State, room: &RoomKey) -> u64 {
        let generation = state.generations[bucket(room)];
        ((self.base_epoch ^ u64::from(generation).wrapping_mul(0x9E37_79B9_7F4A_7C15)) & EPOCH_MASK)
            .max(1)
    }

    /// `now` in whole seconds since the store began (a stream's last use; 136 years fit).
    fn secs(&self, now: Instant) -> u32 {
        u32::try_from(now.saturating_duration_since(self.born).as_secs()).unwrap_or(u32::MAX)
    }

    /// The most events kept per room (0: history is off and appends keep nothing).
    pub fn max_events(&self) -> usize {
        self.max_events
    }

    /// The epoch of `room`'s stream, and whether this call created the stream.
    pub fn open_stream(&self, room: &RoomKey) -> (u64, bool) {
        let now = self.secs(Instant::now());
        let mut state = self.state.lock();
        let mut created = false;
        let stream = state.streams.entry(room.clone()).or_insert_with(|| {
            created = true;
            new_stream(now)
        });
        stream.last_used = now;
        (stream.epoch, created)
    }

    /// Puts back a stream kept elsewhere, with its epoch and eviction mark, as if just used; an existing
    /// stream of the room is left as it is.
    pub fn restore_stream(&self, room: &RoomKey, epoch: u64, evicted_through: u64) {
        let now = self.secs(Instant::now());
        self.state
            .lock()
            .streams
            .entry(room.clone())
            .or_insert_with(|| {
                let mut stream = Stream::new(epoch, now);
                if evicted_through > 0 {
                    stream.held_mut().evicted_through = evicted_through;
                }
                stream
            });
    }

    /// Appends an event published at `at_ms` (ms since the Unix epoch): its age counts from then, so an event
    /// restored from disk keeps its place in the age limit. Limits apply as for [`HistoryStore::append`].
    pub fn insert(&self, room: &RoomKey, seq: u64, at_ms: u64, packets: &EventPackets) {
        let now = Instant::now();
        let age = Duration::from_millis(now_ms().saturating_sub(at_ms));
        // Just after boot the monotonic clock may not reach back that far: the event then counts as published
        // at boot, kept at most its max age from there.
        let at = now.checked_sub(age).unwrap_or(now);
        self.append_stamped(room, seq, at_ms, packets, at, now);
    }

    /// [`HistoryStore::append`] at a given instant (tests drive the clock).
    fn append_at(&self, room: &RoomKey, seq: u64, packets: &EventPackets, now: Instant) {
        self.append_stamped(room, seq, now_ms(), packets, now, now);
    }

    /// Appends an event published at `at` (`at_ms` on the wall clock), the stream used at `now`.
    fn append_stamped(
        &self,
        room: &RoomKey,
        seq: u64,
        at_ms: u64,
        packets: &EventPackets,
        at: Instant,
        now: Instant,
    ) {
        if self.max_events == 0 {
            return;
        }
        let secs = self.secs(now);
        let mut state = self.state.lock();
        let epoch = self.empty_epoch(&state, room);
        let stream = state
            .streams
            .entry(room.clone())
            .or_insert_with(|| Stream::new(epoch, secs));
        stream.last_used = secs;
        let first = stream.held.is_none();
        let held = stream.held_mut();
        if first {
            held.first_seq = seq;
        }
        let was_empty = held.events.is_empty();
        held.events.push_back((
            StoredEvent {
                seq,
                at_ms,
                packets: packets.clone(),
            },
            at,
        ));
        let over_count = held.events.len() > self.max_events;
        if was_empty {
            state.fronts.insert((seq, room.clone()));
        }
        state.hold(seq, packets);
        if over_count {
            state.pop_front(room);
        }
        while state.bytes > self.max_bytes && state.pop_oldest() {}
    }

    /// [`HistoryStore::sweep`] at a given instant (tests drive the clock).
    fn sweep_at(&self, in_use: &dyn Fn(&RoomKey) -> bool, now: Instant) {
        let mut state = self.state.lock();
        // Streams in order of their oldest event: the first one whose oldest event is young enough ends it.
        // Sequences follow publish time, so no younger front can hide an older event behind it.
        while let Some((_, room)) = state.fronts.first().cloned() {
            let expired = state
                .streams
                .get(&room)
                .and_then(|s| s.events()?.front())
                .is_some_and(|(_, at)| now.saturating_duration_since(*at) > self.max_age);
            if !expired {
                break;
            }
            state.pop_front(&room);
        }
        // Last use is in whole seconds: an idle stream is kept while at most the limit's seconds (rounded up)
        // passed, so at least the limit itself; a zero limit keeps none.
        let keep_secs = self.keep_idle.as_secs() + u64::from(self.keep_idle.subsec_nanos() > 0);
        let now_secs = self.secs(now);
        let keep_idle = |last_used: u32| {
            !self.keep_idle.is_zero() && u64::from(now_secs.saturating_sub(last_used)) <= keep_secs
        };
        let observer = state.observer.clone();
        let State {
            streams,
            generations,
            ..
        } = &mut *state;
        streams.retain(|room, stream| {
            let keep = !stream.is_empty() || keep_idle(stream.last_used) || in_use(room);
            if !keep {
                if stream.held.is_some() {
                    // Its events (or its mark) go: the room's next epoch must differ from this one.
                    let generation = &mut generations[bucket(room)];
                    *generation = generation.wrapping_add(1);
                }
                if let Some(observer) = &observer {
                    observer.dropped(room);
                }
            }
            keep
        });
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn random_epoch() -> u64 {
    rand::thread_rng().gen_range(1..u64::MAX >> 11)
}

fn new_stream(now: u32) -> Stream {
    Stream::new(random_epoch(), now)
}

/// The generation bucket of `room`.
fn bucket(room: &RoomKey) -> usize {
    room.bucket(GENERATION_BUCKETS)
}

impl HistoryStore for MemoryHistory {
    fn epoch(&self, room: &RoomKey) -> u64 {
        let now = self.secs(Instant::now());
        let mut state = self.state.lock();
        match state.streams.get_mut(room) {
            Some(stream) => {
                stream.last_used = now;
                stream.epoch
            }
            None => self.empty_epoch(&state, room),
        }
    }

    fn append(&self, room: &RoomKey, seq: u64, packets: &EventPackets) {
        self.append_at(room, seq, packets, Instant::now());
    }

    fn read_within(
        &self,
        room: &RoomKey,
        epoch: Option<u64>,
        after: u64,
        limit: ReadLimit,
    ) -> Result<Slice, HistoryError> {
        let state = self.state.lock();
        let Some(stream) = state.streams.get(room) else {
            let empty = self.empty_epoch(&state, room);
            if epoch.is_some_and(|e| e != empty) {
                return Err(HistoryError::EpochChanged);
            }
            return Ok(Slice {
                epoch: empty,
                ..Slice::default()
            });
        };
        if epoch.is_some_and(|e| e != stream.epoch) {
            return Err(HistoryError::EpochChanged);
        }
        read_stream(stream, after, limit)
    }

    fn read_missed(
        &self,
        room: &RoomKey,
        membership: &Membership,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, HistoryError> {
        let state = self.state.lock();
        let Some(stream) = state.streams.get(room) else {
            // Never dropped while it could be recovered: no stream, no event since the member joined.
            return Ok(Vec::new());
        };
        let made_since = stream
            .held
            .as_deref()
            .is_some_and(|held| held.first_seq > membership.joined_seq);
        if stream.epoch != membership.epoch && !made_since {
            return Err(HistoryError::EpochChanged);
        }
        read_stream(stream, after, ReadLimit::events(limit)).map(|slice| slice.events)
    }

    fn evicted_through(&self, room: &RoomKey) -> u64 {
        let state = self.state.lock();
        state.streams.get(room).map_or(0, Stream::evicted_through)
    }

    fn sweep(&self, in_use: &dyn Fn(&RoomKey) -> bool) {
        self.sweep_at(in_use, Instant::now());
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

/// Events of `stream` after `after` within `limit`; fails when some of them were evicted.
fn read_stream(stream: &Stream, after: u64, limit: ReadLimit) -> Result<Slice, HistoryError> {
    if stream.evicted_through() > after {
        return Err(HistoryError::Evicted);
    }
    let mut slice = Slice {
        epoch: stream.epoch,
        ..Slice::default()
    };
    let Some(events) = stream.events() else {
        return Ok(slice);
    };
    let start = events.partition_point(|(event, _)| event.seq <= after);
    let mut used = 0usize;
    for (event, _) in events.range(start..) {
        if slice.events.len() >= limit.events {
            slice.more = true;
            break;
        }
        // The budget is checked before the event is taken; the first one always goes, so paging moves on.
        let size = reply_size(&event.packets);
        if !slice.events.is_empty() && used.saturating_add(size) > limit.bytes {
            slice.more = true;
            slice.cut = true;
            break;
        }
        used += size;
        slice.events.push(event.clone());
    }
    Ok(slice)
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
        assert_eq!(h.stats().rooms, 0, "a room without events keeps no stream");
        assert_eq!(h.epoch(&room), epoch, "and keeps its epoch");
        assert_eq!(
            h.read_after(&room, Some(epoch + 1), 0, 10).unwrap_err(),
            HistoryError::EpochChanged
        );
        assert_eq!(h.read_after(&room, Some(epoch), 0, 10).unwrap().0, epoch);
        h.append(&room, 3, &packets("x"));
        assert_eq!(h.stats().rooms, 1);
        assert_eq!(
            h.epoch(&room),
            epoch,
            "its first event's stream takes that epoch"
        );
        assert_eq!(
            seqs(&h.read_after(&room, Some(epoch), 0, 10).unwrap().1),
            vec![3]
        );
        assert_eq!(
            h.read_after(&room, Some(epoch + 1), 0, 10).unwrap_err(),
            HistoryError::EpochChanged
        );
    }

    /// A stream that held events and is dropped takes its epoch along: a reader who knew it (or the room
    /// before it) finds another, before and after the room's next event.
    #[test]
    fn a_dropped_stream_changes_the_epoch() {
        let h = MemoryHistory::new(10, Duration::ZERO, 1 << 20, Duration::ZERO);
        let (room, quiet) = (RoomKey::new("/", "a"), RoomKey::new("/", "b"));
        let before = h.epoch(&room);
        let quiet_before = h.epoch(&quiet);
        h.append(&room, 1, &packets("x"));
        std::thread::sleep(Duration::from_millis(2));
        h.sweep(&|_| false);
        assert_eq!(h.stats().rooms, 0, "aged out, idle: dropped");
        let after = h.epoch(&room);
        assert_ne!(after, before);
        assert_eq!(
            h.read_after(&room, Some(before), 0, 10).unwrap_err(),
            HistoryError::EpochChanged
        );
        h.append(&room, 7, &packets("y"));
        assert_eq!(h.epoch(&room), after);
        assert_eq!(
            h.read_after(&room, Some(before), 0, 10).unwrap_err(),
            HistoryError::EpochChanged
        );
        assert_eq!(
            seqs(&h.read_after(&room, Some(after), 0, 10).unwrap().1),
            vec![7]
        );
        // A room of another bucket keeps its epoch; one of the same bucket would move on too.
        if bucket(&quiet) != bucket(&room) {
            assert_eq!(h.epoch(&quiet), quiet_before);
        }
    }

    /// A recovering member reads the stream its room got after it joined, whatever that stream's epoch; one
    /// who joined after the stream was made must hold its epoch.
    #[test]
    fn recovery_reads_take_a_stream_made_after_the_join() {
        let h = store(10, 1 << 20);
        let room = RoomKey::new("/", "a");
        let member = |epoch, joined_seq| Membership {
            key: room.clone(),
            epoch,
            joined_seq,
        };
        assert!(h
            .read_missed(&room, &member(12_345, 4), 4, 10)
            .unwrap()
            .is_empty());
        h.append(&room, 6, &packets("x"));
        h.append(&room, 8, &packets("y"));
        assert_eq!(
            seqs(&h.read_missed(&room, &member(12_345, 4), 4, 10).unwrap()),
            vec![6, 8]
        );
        assert_eq!(
            seqs(&h.read_missed(&room, &member(12_345, 4), 6, 10).unwrap()),
            vec![8]
        );
        assert_eq!(
            h.read_missed(&room, &member(12_345, 7), 7, 10).unwrap_err(),
            HistoryError::EpochChanged
        );
        let epoch = h.epoch(&room);
        assert_eq!(
            seqs(&h.read_missed(&room, &member(epoch, 7), 7, 10).unwrap()),
            vec![8]
        );
    }

    /// Accounted bytes of an event held by `rooms` rooms.
    fn held(text: &str, rooms: usize) -> usize {
        shared_size(&packets(text)) + rooms * SLOT_OVERHEAD
    }

    #[test]
    fn global_byte_cap_evicts_oldest_across_rooms() {
        let one = held("0123456789", 1);
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
        assert_eq!(h.evicted_through(&room), 1);
        assert!(h.read_after(&room, Some(epoch), 1, 10).is_ok());
        h.sweep(&|_| false);
        assert_eq!(h.stats().rooms, 0);
        assert_eq!(
            h.read_after(&room, Some(epoch), 1, 10).unwrap_err(),
            HistoryError::EpochChanged
        );
    }

    /// The 1000-room publish: one sequence in every room's stream. Each room keeps and evicts it on its own,
    /// and its payload is counted once.
    #[test]
    fn multi_room_events_are_evicted_in_every_room() {
        let rooms: Vec<RoomKey> = (0..1000)
            .map(|i| RoomKey::new("/", &format!("r{i}")))
            .collect();
        let aged = MemoryHistory::new(10, Duration::ZERO, 1 << 30, Duration::from_secs(60));
        for room in &rooms {
            aged.append(room, 1, &packets("shared"));
        }
        assert_eq!(aged.stats().bytes, held("shared", 1000));
        std::thread::sleep(Duration::from_millis(2));
        aged.sweep(&|_| true);
        assert_eq!(aged.stats().events, 0, "max age holds in every room");
        assert_eq!(aged.stats().bytes, 0);

        // A cap of the payload plus 100 slots keeps the event in exactly 100 rooms.
        let cap = held("shared", 100);
        let capped = store(10, cap);
        for room in &rooms {
            capped.append(room, 1, &packets("shared"));
        }
        let stats = capped.stats();
        assert_eq!((stats.events, stats.bytes), (100, cap));
        let holding = rooms
            .iter()
            .filter(|room| {
                capped
                    .read_after(room, None, 0, 10)
                    .is_ok_and(|(_, e)| e.len() == 1)
            })
            .count();
        assert_eq!(holding, 100);
    }

    /// A large event published to many rooms pins its packets once: counting it once per room would evict
    /// every other room's history to make room for bytes that are not held.
    #[test]
    fn a_large_multi_room_event_does_not_evict_other_rooms() {
        let big = "b".repeat(100_000);
        let h = store(100, 4 << 20);
        let quiet = RoomKey::new("/", "quiet");
        for seq in 1..=10 {
            h.append(&quiet, seq, &packets("small"));
        }
        for i in 0..1000 {
            h.append(&RoomKey::new("/", &format!("r{i}")), 11, &packets(&big));
        }
        let stats = h.stats();
        assert_eq!(stats.events, 1010);
        assert_eq!(stats.bytes, 10 * held("small", 1) + held(&big, 1000));
        assert_eq!(
            seqs(&h.read_after(&quiet, None, 0, 100).unwrap().1),
            (1..=10).collect::<Vec<_>>()
        );
    }

    #[test]
    fn reads_stop_at_the_byte_budget_and_page_on() {
        let h = store(100, 1 << 20);
        let room = RoomKey::new("/", "a");
        let text = "e".repeat(1000);
        for seq in 1..=10 {
            h.append(&room, seq, &packets(&text));
        }
        let size = reply_size(&packets(&text));
        let budget = ReadLimit {
            events: 100,
            bytes: size * 3 + size / 2,
        };
        let mut after = 0;
        let mut pages = Vec::new();
        loop {
            let slice = h.read_within(&room, None, after, budget).unwrap();
            pages.push(seqs(&slice.events));
            if !slice.more {
                break;
            }
            assert!(slice.cut);
            after = slice.events.last().unwrap().seq;
        }
        assert_eq!(
            pages,
            vec![vec![1, 2, 3], vec![4, 5, 6], vec![7, 8, 9], vec![10]]
        );

        // The event limit ends a page with `more` but without `cut`; the end of the stream with neither.
        let slice = h.read_within(&room, None, 0, ReadLimit::events(4)).unwrap();
        assert_eq!(
            (seqs(&slice.events), slice.more, slice.cut),
            (vec![1, 2, 3, 4], true, false)
        );
        let slice = h.read_within(&room, None, 6, ReadLimit::events(4)).unwrap();
        assert_eq!(
            (slice.events.len(), slice.more, slice.cut),
            (4, false, false)
        );

        // An event larger than the whole budget still comes, alone, so a reader always moves on.
        let tight = ReadLimit {
            events: 100,
            bytes: 10,
        };
        let slice = h.read_within(&room, None, 0, tight).unwrap();
        assert_eq!(
            (seqs(&slice.events), slice.more, slice.cut),
            (vec![1], true, true)
        );
    }

    #[test]
    fn pages_fall_back_to_what_is_held_after_eviction() {
        let h = store(3, 1 << 20);
        let room = RoomKey::new("/", "a");
        for seq in 1..=5 {
            h.append(&room, seq, &packets(r#"42["e",{"n":1},"0"]"#));
        }
        let page = super::super::read_page(&h, &room, None, 0, ReadLimit::events(100));
        assert!(!page.complete);
        let offsets: Vec<_> = page.events.iter().map(|e| e["offset"].clone()).collect();
        assert_eq!(offsets, vec!["3", "4", "5"]);
    }

    /// A small seeded generator (xorshift), so a failing case is reproduced by its seed.
    struct Seeded(u64);

    impl Seeded {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// The rules, kept naively: per room the (sequence, publish step) of each event kept, oldest first.
    struct Model {
        rooms: Vec<RoomKey>,
        kept: Vec<VecDeque<(u64, u64)>>,
        /// Bytes counted once per event held anywhere.
        shared: HashMap<u64, usize>,
        max_events: usize,
        cap: usize,
    }

    impl Model {
        fn bytes(&self) -> usize {
            let held: BTreeSet<u64> = self.kept.iter().flatten().map(|(seq, _)| *seq).collect();
            held.iter().map(|seq| self.shared[seq]).sum::<usize>()
                + self.kept.iter().map(VecDeque::len).sum::<usize>() * SLOT_OVERHEAD
        }

        fn append(&mut self, room: usize, seq: u64, step: u64) {
            self.kept[room].push_back((seq, step));
            if self.kept[room].len() > self.max_events {
                self.kept[room].pop_front();
            }
            while self.bytes() > self.cap {
                let oldest = (0..self.rooms.len())
                    .filter_map(|r| {
                        self.kept[r]
                            .front()
                            .map(|(seq, _)| (*seq, &self.rooms[r], r))
                    })
                    .min()
                    .map(|(_, _, r)| r)
                    .expect("bytes are held");
                self.kept[oldest].pop_front();
            }
        }

        fn sweep(&mut self, now_step: u64, max_age_steps: u64) {
            for kept in &mut self.kept {
                while kept
                    .front()
                    .is_some_and(|(_, at)| now_step - at > max_age_steps)
                {
                    kept.pop_front();
                }
            }
        }
    }

    /// Random single- and multi-room publishes and sweeps on a driven clock, against [`Model`]: after every
    /// step each room holds exactly what the rules keep (count per room, global byte cap evicting the oldest
    /// front first, max age at sweeps), bytes never exceed the cap and match the model, and after a sweep no
    /// event older than the max age is left.
    #[test]
    fn random_publishes_follow_the_rules() {
        const STEP: Duration = Duration::from_millis(10);
        for seed in 1..=40u64 {
            let mut rng = Seeded(0x2545_f491_4f6c_dd1d ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let room_count = 2 + rng.below(8) as usize;
            let max_events = 1 + rng.below(8) as usize;
            let max_age_steps = 5 + rng.below(60);
            let cap = EVENT_OVERHEAD * (3 + rng.below(30) as usize);
            let start = Instant::now();
            let h = MemoryHistory::new(
                max_events,
                STEP * max_age_steps as u32,
                cap,
                Duration::from_secs(3600),
            );
            let rooms: Vec<RoomKey> = (0..room_count)
                .map(|i| RoomKey::new("/", &format!("r{i}")))
                .collect();
            let mut model = Model {
                rooms: rooms.clone(),
                kept: vec![VecDeque::new(); room_count],
                shared: HashMap::new(),
                max_events,
                cap,
            };
            let mut published_at = HashMap::new();
            let mut step = 0u64;
            for seq in 1..=300u64 {
                step += rng.below(8);
                let now = start + STEP * step as u32;
                let context = format!("seed {seed} seq {seq}");
                if rng.below(5) == 0 {
                    h.sweep_at(&|_| true, now);
                    model.sweep(step, max_age_steps);
                    for (r, room) in rooms.iter().enumerate() {
                        let held = h.read_after(room, None, h.evicted_through(room), usize::MAX);
                        for event in held.unwrap().1 {
                            let age = step - published_at[&event.seq];
                            assert!(
                                age <= max_age_steps,
                                "{context}: room {r} kept an event {age} steps old"
                            );
                        }
                    }
                }
                let text = "y".repeat(rng.below(3 * EVENT_OVERHEAD as u64) as usize);
                // Mostly one room, sometimes several, sometimes every room.
                let targets: Vec<usize> = match rng.below(4) {
                    0 | 1 => vec![rng.below(room_count as u64) as usize],
                    2 => (0..room_count).filter(|_| rng.below(2) == 0).collect(),
                    _ => (0..room_count).collect(),
                };
                published_at.insert(seq, step);
                model.shared.insert(seq, shared_size(&packets(&text)));
                for &r in &targets {
                    h.append_at(&rooms[r], seq, &packets(&text), now);
                    model.append(r, seq, step);
                }
                let stats = h.stats();
                assert!(stats.bytes <= cap, "{context}: {} > {cap}", stats.bytes);
                assert_eq!(stats.bytes, model.bytes(), "{context}: bytes");
                for (r, room) in rooms.iter().enumerate() {
                    let want: Vec<u64> = model.kept[r].iter().map(|(seq, _)| *seq).collect();
                    let after = want.first().map_or(seq, |first| first - 1);
                    let got = h
                        .read_after(room, None, after, usize::MAX)
                        .map(|(_, events)| seqs(&events));
                    assert_eq!(got, Ok(want), "{context}: room {r}");
                }
                assert_eq!(
                    stats.events,
                    model.kept.iter().map(VecDeque::len).sum::<usize>()
                );
            }
        }
    }
}
