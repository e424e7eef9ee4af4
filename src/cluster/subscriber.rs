//! The node's one Redis pub/sub connection: subscribed only to the rooms that have members here (plus the
//! ingest channel), delivering every message to the local hub in the order Redis published them.
//!
//! Each room remembers the last sequence delivered. A message whose "previous sequence in this room" is
//! newer than that, or a reconnection, triggers a catch-up read of the room streams, so a dropped
//! pub/sub connection loses nothing that Redis accepted.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::aio::PubSubSink;
use tokio::sync::{mpsc, oneshot};

use super::broker::{ChannelMessage, WireEvent};
use super::history::read_after;
use super::keys::Keys;
use super::partition::{pack, NodePositions};
use super::Redis;
use crate::hub::{EventPackets, Hub, RoomKey};

/// How long a join waits for its room subscription.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most events read per room in one catch-up.
const CATCH_UP_LIMIT: usize = 10_000;

/// Why a room could not be subscribed.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// Redis did not confirm in time.
    #[error("cluster subscription unavailable")]
    Unavailable,
}

struct RoomState {
    refs: usize,
    last_seq: u64,
    /// The room's position was established once (it stays meaningful across reconnections).
    known: bool,
    active: bool,
    waiters: Vec<oneshot::Sender<()>>,
}

enum Control {
    Subscribe(RoomKey),
    Unsubscribe(RoomKey),
    /// Subscribe the direct-message channel now.
    Resync,
}

/// Called with each message of the ingest channel.
pub type IngestHandler = Arc<dyn Fn(Bytes) + Send + Sync>;

/// Called with each message of the node's direct-message channel (`Some`), and after every (re)subscription
/// (`None`: hand-overs may have been missed meanwhile).
pub type DirectHandler = Arc<dyn Fn(Option<&[u8]>) + Send + Sync>;

/// The partition a subscriber serves, when rooms are spread over several Redis groups (see
/// [`super::partition`]): its events reach the hub at packed positions, carrying the node's offset vector.
pub struct Lane {
    /// Index of the partition.
    pub index: usize,
    /// The node's positions in every partition, shared by the partitions' subscribers.
    pub positions: Arc<NodePositions>,
}

/// Room subscriptions of this node.
pub struct Subscriber {
    keys: Keys,
    lane: Option<Lane>,
    rooms: Mutex<HashMap<RoomKey, RoomState>>,
    control: mpsc::UnboundedSender<Control>,
    ingest: OnceLock<IngestHandler>,
    reset: OnceLock<ResetHandler>,
    /// The node's direct-message channel and its handler.
    direct: OnceLock<(String, DirectHandler)>,
}

/// Called when Redis lost its data (its sequence went backwards): local sessions can no longer be trusted
/// to be in step with the cluster.
pub type ResetHandler = Arc<dyn Fn() + Send + Sync>;

impl Subscriber {
    /// Starts the subscription task.
    pub fn start(redis: Arc<Redis>, keys: Keys, hub: Arc<Hub>) -> Arc<Subscriber> {
        Subscriber::start_lane(redis, keys, hub, None)
    }

    /// Starts the subscription task of one partition (`lane`), or of the single Redis (`None`).
    pub fn start_lane(
        redis: Arc<Redis>,
        keys: Keys,
        hub: Arc<Hub>,
        lane: Option<Lane>,
    ) -> Arc<Subscriber> {
        let (control, rx) = mpsc::unbounded_channel();
        let subscriber = Arc::new(Subscriber {
            keys,
            lane,
            rooms: Mutex::new(HashMap::new()),
            control,
            ingest: OnceLock::new(),
            reset: OnceLock::new(),
            direct: OnceLock::new(),
        });
        tokio::spawn(run(Arc::downgrade(&subscriber), redis, hub, rx));
        subscriber
    }

    /// Calls `handler` when Redis is found to have lost its data.
    pub fn set_reset(&self, handler: ResetHandler) {
        let _ = self.reset.set(handler);
    }

    /// Subscribes the node's direct-message `channel` (from the next (re)connection on, which this call
    /// triggers) and routes its messages to `handler`.
    pub fn set_direct(&self, channel: String, handler: DirectHandler) {
        if self.direct.set((channel, handler)).is_ok() {
            let _ = self.control.send(Control::Resync);
        }
    }

    /// Routes messages of the ingest channel to `handler`.
    pub fn set_ingest(&self, handler: IngestHandler) {
        let _ = self.ingest.set(handler);
    }

    /// Takes a reference on a room's subscription, waiting until it is live; returns the last sequence
    /// delivered for the room (events after it reach local members).
    pub async fn acquire(&self, room: &RoomKey) -> Result<u64, SubscribeError> {
        let waiter = {
            let mut rooms = self.rooms.lock();
            match rooms.get_mut(room) {
                Some(state) => {
                    state.refs += 1;
                    if state.active {
                        return Ok(state.last_seq);
                    }
                    let (tx, rx) = oneshot::channel();
                    state.waiters.push(tx);
                    rx
                }
                None => {
                    let (tx, rx) = oneshot::channel();
                    rooms.insert(
                        room.clone(),
                        RoomState {
                            refs: 1,
                            last_seq: 0,
                            known: false,
                            active: false,
                            waiters: vec![tx],
                        },
                    );
                    let _ = self.control.send(Control::Subscribe(room.clone()));
                    rx
                }
            }
        };
        match tokio::time::timeout(SUBSCRIBE_TIMEOUT, waiter).await {
            Ok(Ok(())) => Ok(self.last_seq(room)),
            _ => {
                self.release(room);
                Err(SubscribeError::Unavailable)
            }
        }
    }

    /// Drops a reference; the room is unsubscribed when none is left.
    pub fn release(&self, room: &RoomKey) {
        let mut rooms = self.rooms.lock();
        let Some(state) = rooms.get_mut(room) else {
            return;
        };
        state.refs = state.refs.saturating_sub(1);
        if state.refs == 0 {
            rooms.remove(room);
            let _ = self.control.send(Control::Unsubscribe(room.clone()));
        }
    }

    /// Last sequence delivered for a room (0 when not subscribed).
    pub fn last_seq(&self, room: &RoomKey) -> u64 {
        self.rooms.lock().get(room).map_or(0, |s| s.last_seq)
    }

    /// Rooms this node is subscribed to (`nsp\0room` keys), sorted.
    pub fn subscribed_rooms(&self) -> Vec<String> {
        let mut rooms: Vec<String> = self
            .rooms
            .lock()
            .iter()
            .filter(|(_, s)| s.active)
            .map(|(k, _)| k.as_str().to_owned())
            .collect();
        rooms.sort();
        rooms
    }

    fn activate(&self, room: &RoomKey, baseline: Option<u64>) {
        let mut rooms = self.rooms.lock();
        if let Some(state) = rooms.get_mut(room) {
            if let Some(seq) = baseline {
                state.last_seq = state.last_seq.max(seq);
            }
            state.known = true;
            state.active = true;
            for waiter in state.waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }
}

/// The subscription task: connects (with backoff), resubscribes and catches up, then relays messages.
async fn run(
    subscriber: std::sync::Weak<Subscriber>,
    redis: Arc<Redis>,
    hub: Arc<Hub>,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut cache: Option<(u64, String, EventPackets)> = None;
    loop {
        let Some(me) = subscriber.upgrade() else {
            return;
        };
        let pubsub = match redis.target().pubsub().await {
            Ok(pubsub) => pubsub,
            Err(error) => {
                tracing::warn!(%error, "redis pub/sub unavailable; retrying");
                drop(me);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        if let Err(error) = resync(&me, &redis, &hub, &mut sink, &mut cache).await {
            tracing::warn!(%error, "redis resubscribe failed; retrying");
            continue;
        }
        backoff = Duration::from_millis(100);
        tracing::info!(rooms = me.rooms.lock().len(), "redis pub/sub connected");
        drop(me);
        loop {
            tokio::select! {
                command = control.recv() => {
                    let Some(me) = subscriber.upgrade() else { return };
                    let Some(command) = command else { return };
                    let result = match command {
                        Control::Subscribe(room) => subscribe(&me, &redis, &hub, &mut sink, &room, &mut cache).await,
                        Control::Resync => match me.direct.get() {
                            Some((channel, handler)) => sink.subscribe(channel).await.map(|()| handler(None)),
                            None => Ok(()),
                        },
                        Control::Unsubscribe(room) => {
                            // Still wanted if re-acquired meanwhile.
                            if me.rooms.lock().contains_key(&room) {
                                Ok(())
                            } else {
                                sink.unsubscribe(me.keys.channel(&room)).await
                            }
                        }
                    };
                    if let Err(error) = result {
                        tracing::warn!(%error, "redis pub/sub command failed; reconnecting");
                        break;
                    }
                }
                message = stream.next() => {
                    let Some(me) = subscriber.upgrade() else { return };
                    let Some(message) = message else {
                        tracing::warn!("redis pub/sub connection lost; reconnecting");
                        break;
                    };
                    on_message(&me, &redis, &hub, message, &mut cache).await;
                }
            }
        }
        if let Some(me) = subscriber.upgrade() {
            for state in me.rooms.lock().values_mut() {
                state.active = false;
            }
        }
        metrics::counter!("tidings_redis_reconnects_total").increment(1);
    }
}

/// Subscribes the ingest channel and every wanted room, then delivers whatever was missed, in order.
async fn resync(
    me: &Subscriber,
    redis: &Redis,
    hub: &Hub,
    sink: &mut PubSubSink,
    cache: &mut Option<(u64, String, EventPackets)>,
) -> Result<(), redis::RedisError> {
    sink.subscribe(me.keys.ingest()).await?;
    if let Some((channel, handler)) = me.direct.get() {
        sink.subscribe(channel).await?;
        handler(None);
    }
    let wanted: Vec<(RoomKey, u64, bool)> = me
        .rooms
        .lock()
        .iter()
        .map(|(k, s)| (k.clone(), s.last_seq, s.known))
        .collect();
    for (room, _, _) in &wanted {
        sink.subscribe(me.keys.channel(room)).await?;
    }
    let current: u64 = redis
        .run(redis::cmd("GET").arg(me.keys.seq()))
        .await
        .map(|v: Option<u64>| v.unwrap_or(0))?;
    let newest_seen = wanted.iter().map(|(_, last, _)| *last).max().unwrap_or(0);
    if current < newest_seen {
        // Redis came back without its data: positions mean nothing any more. Start over from what it has,
        // and let the node drop its sessions so clients reconnect to a consistent state.
        tracing::error!(
            current,
            newest_seen,
            "redis lost its data; restarting room positions"
        );
        metrics::counter!("tidings_cluster_resets_total").increment(1);
        for state in me.rooms.lock().values_mut() {
            state.last_seq = 0;
            state.known = false;
        }
        if let Some(lane) = &me.lane {
            hub.with_order(|_| lane.positions.reset(lane.index));
        }
        if let Some(reset) = me.reset.get() {
            reset();
        }
        for (room, _, _) in &wanted {
            me.activate(room, Some(current));
        }
        return Ok(());
    }
    // Catch up every room that had a position, merged into one sequence order; a room that never had one
    // starts now. Only up to `current`: the rooms are read one after the other while publishing goes on, and an
    // event published meanwhile in a room read later must not be delivered ahead of one in a room read earlier
    // (a member of both would drop the older as already seen). Everything after `current` comes on the
    // channels, subscribed before `current` was read, in order.
    let mut missed = Vec::new();
    for (room, last, known) in &wanted {
        if !*known {
            continue;
        }
        for event in read_after(redis, &me.keys, room, *last, CATCH_UP_LIMIT).await? {
            if event.seq <= current {
                missed.push((room.clone(), event));
            }
        }
    }
    missed.sort_by_key(|(_, e)| e.seq);
    for (room, event) in missed {
        deliver(me, hub, &room, event.seq, &event.event, cache);
    }
    for (room, _, known) in wanted {
        me.activate(&room, (!known).then_some(current));
    }
    Ok(())
}

async fn subscribe(
    me: &Subscriber,
    redis: &Redis,
    hub: &Hub,
    sink: &mut PubSubSink,
    room: &RoomKey,
    cache: &mut Option<(u64, String, EventPackets)>,
) -> Result<(), redis::RedisError> {
    let (last, known) = match me.rooms.lock().get(room) {
        Some(state) if !state.active => (state.last_seq, state.known),
        // Released meanwhile, or already live.
        _ => return Ok(()),
    };
    sink.subscribe(me.keys.channel(room)).await?;
    if !known {
        let baseline: Option<u64> = redis.run(redis::cmd("GET").arg(me.keys.seq())).await?;
        me.activate(room, Some(baseline.unwrap_or(0)));
    } else {
        for event in read_after(redis, &me.keys, room, last, CATCH_UP_LIMIT).await? {
            deliver(me, hub, room, event.seq, &event.event, cache);
        }
        me.activate(room, None);
    }
    Ok(())
}

async fn on_message(
    me: &Subscriber,
    redis: &Redis,
    hub: &Hub,
    message: redis::Msg,
    cache: &mut Option<(u64, String, EventPackets)>,
) {
    let channel = message.get_channel_name();
    if let Some((direct, handler)) = me.direct.get() {
        if channel == direct {
            handler(Some(message.get_payload_bytes()));
            return;
        }
    }
    if channel == me.keys.ingest() {
        if let Some(handler) = me.ingest.get() {
            handler(Bytes::copy_from_slice(message.get_payload_bytes()));
        }
        return;
    }
    let Some(room) = me.keys.room_of_channel(channel) else {
        return;
    };
    let Ok(text) = std::str::from_utf8(message.get_payload_bytes()) else {
        return;
    };
    if let Some(ephemeral) = super::ephemeral::WireEphemeral::parse(text) {
        let active = matches!(me.rooms.lock().get(&room), Some(state) if state.active);
        match ephemeral {
            Ok(wire) if active => {
                let packets = wire.event.packets(room.nsp(), 0);
                hub.deliver_ephemeral(&room, packets, wire.conflate());
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(channel, %error, "malformed ephemeral event ignored"),
        }
        return;
    }
    let Some(parsed) = ChannelMessage::parse(text) else {
        tracing::warn!(channel, "malformed cluster message ignored");
        return;
    };
    let last = match me.rooms.lock().get(&room) {
        Some(state) if state.active => state.last_seq,
        _ => return,
    };
    if parsed.seq <= last {
        return;
    }
    if parsed.prev > last {
        // Something published before this message never reached us: read it from the stream first.
        metrics::counter!("tidings_cluster_gaps_total").increment(1);
        match read_after(redis, &me.keys, &room, last, CATCH_UP_LIMIT).await {
            Ok(events) => {
                for event in events.into_iter().filter(|e| e.seq < parsed.seq) {
                    deliver(me, hub, &room, event.seq, &event.event, cache);
                }
            }
            Err(error) => tracing::warn!(%error, "catch-up read failed; events may be missing"),
        }
    }
    match serde_json::from_str::<WireEvent>(parsed.payload) {
        Ok(event) => deliver(me, hub, &room, parsed.seq, &event, cache),
        Err(error) => tracing::warn!(%error, "undecodable cluster event ignored"),
    }
}

/// Encodes (once per event and namespace) and hands an event to the local members of a room.
fn deliver(
    me: &Subscriber,
    hub: &Hub,
    room: &RoomKey,
    seq: u64,
    event: &WireEvent,
    cache: &mut Option<(u64, String, EventPackets)>,
) {
    let nsp = room.nsp();
    // One Redis: the packets are encoded once per event (its rooms share them). Partitions: the offset is the
    // node's vector at the moment of delivery, so they are encoded under the lock, per room.
    let shared = me.lane.is_none().then(|| match cache {
        Some((cached_seq, cached_nsp, packets)) if *cached_seq == seq && cached_nsp == nsp => {
            packets.clone()
        }
        _ => {
            let packets = event.packets(nsp, seq);
            *cache = Some((seq, nsp.to_owned(), packets.clone()));
            packets
        }
    });
    // Position and fan-out change together under the hub's ordering lock, so a socket joining concurrently
    // either gets this event live or has it after its join position.
    hub.with_order(|_| {
        if let Some(state) = me.rooms.lock().get_mut(room) {
            if seq <= state.last_seq {
                return;
            }
            state.last_seq = seq;
        }
        match (&me.lane, shared) {
            (Some(lane), _) => {
                lane.positions.advance(lane.index, seq);
                let packets = event.packets_at(nsp, &lane.positions.offset());
                let except: Vec<RoomKey> =
                    event.except.iter().map(|r| RoomKey::new(nsp, r)).collect();
                hub.deliver_ordered_except(room, pack(lane.index, seq), &packets, &except);
            }
            (None, Some(packets)) => {
                hub.deliver_ordered(room, seq, &packets);
            }
            (None, None) => {}
        }
    });
    metrics::counter!("tidings_cluster_events_received_total").increment(1);
}
