//! Direct messages on the connection side: sending (after the store made a message durable), writing messages
//! to every device of their recipient in inbox order with a bounded window of unacknowledged ones, reading a
//! device's inbox back when it connects or falls behind, taking its acknowledgements and read markers, and
//! telling the sender's devices about every status change.
//!
//! The store ([`MessageStore`]) and the way messages reach other nodes ([`Fanout`]) are capabilities chosen
//! once at start; nothing here knows which ones.

mod batch;
pub mod client;
mod device;
mod fanout;
mod registry;
pub mod request;
pub mod webhook;

pub use device::{validate_device, Device};
pub use fanout::{Fanout, LocalFanout, UserPresence};

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::auth::VerifiedClaims;
use crate::engineio::session::Sid;
use crate::messages::{
    now_ms, Accepted, Change, Message, MessageId, MessageStore, NewMessage, Status, StoreError,
    MAX_ACCEPT_BATCH,
};
use crate::socketio::Socket;

/// The reserved event a sender's devices get status changes under.
pub const STATUS_EVENT: &str = "message:status";

/// Most messages read from the inbox in one step of a catch-up.
const PAGE: usize = 100;
/// Most messages held back per device while it waits for an earlier one (see [`Stream::parked`]).
pub const MAX_PARKED: usize = 64;
/// How long messages that came early wait for the gap before them to fill before the device reads its inbox.
pub const GAP_WAIT: Duration = Duration::from_millis(150);
/// Pause before reading an inbox again after the store failed.
const RETRY: Duration = Duration::from_secs(1);

/// Bounds of the message layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectLimits {
    /// Ttl of a message sent without one.
    pub default_ttl: Duration,
    /// Longest ttl a sender may ask for.
    pub max_ttl: Duration,
    /// Most messages written to a device and not acknowledged.
    pub max_unacked: usize,
    /// Most `dm` events of one connection waiting for the store; past it a `dm` is refused as `busy`.
    pub max_queued_sends: usize,
    /// Longest device name.
    pub max_device_bytes: usize,
}

impl Default for DirectLimits {
    fn default() -> Self {
        DirectLimits {
            default_ttl: Duration::from_secs(7 * 24 * 3600),
            max_ttl: Duration::from_secs(30 * 24 * 3600),
            max_unacked: 256,
            max_queued_sends: 1024,
            max_device_bytes: 64,
        }
    }
}

/// The message layer of one node.
pub struct Direct {
    store: Arc<dyn MessageStore>,
    fanout: Arc<dyn Fanout>,
    /// The namespace devices are on.
    namespace: String,
    limits: DirectLimits,
    /// Devices on this node, by user: most users have one here, kept in the table's slot without a list of
    /// its own.
    devices: Mutex<registry::Registry>,
    /// Per connection, the queue its `dm` events are stored through one after the other, so a client's
    /// messages are accepted in the order it sent them.
    queues: super::queues::ConnectionQueues<QueuedSend>,
    /// The backend's webhook, with how long a user may be offline with undelivered messages before it is
    /// told.
    webhook: Option<(webhook::Webhook, Duration)>,
    /// Devices with sent marks or receipts waiting, for the mark writer (each at most once per kind while its
    /// batch is flushing, so the queue is bounded by twice the devices).
    marks: mpsc::UnboundedSender<(Arc<Device>, MarkKind)>,
    /// Users with an offline check pending.
    offline_checks: Mutex<std::collections::HashSet<String>>,
    /// The event bus status changes also go to, once set.
    egress: OnceLock<Arc<dyn crate::app::egress::Egress>>,
    self_ref: OnceLock<Weak<Direct>>,
}

/// A `dm` event waiting in its connection's queue: the message, or why it was refused before reaching the
/// store (answered in its turn, so a client's acks come in the order of its events), and the ack to answer.
pub struct QueuedSend {
    /// The checked message, or the refusal.
    pub message: Result<NewMessage, request::DmError>,
    /// The Socket.IO ack id the answer goes to.
    pub ack: Option<u64>,
}

impl Direct {
    /// The message layer over `store`, reaching other nodes through `fanout`; it sweeps expired messages once
    /// a second while it lives.
    pub fn new(
        store: Arc<dyn MessageStore>,
        fanout: Arc<dyn Fanout>,
        namespace: &str,
        limits: DirectLimits,
    ) -> Arc<Direct> {
        Self::with_webhook(store, fanout, namespace, limits, None)
    }

    /// Like [`Direct::new`], posting status changes and offline users to a webhook (`offline_after`: how
    /// long a user is offline with undelivered messages before the webhook hears of it).
    pub fn with_webhook(
        store: Arc<dyn MessageStore>,
        fanout: Arc<dyn Fanout>,
        namespace: &str,
        limits: DirectLimits,
        webhook: Option<(webhook::WebhookConfig, Duration)>,
    ) -> Arc<Direct> {
        let (marks, waiting) = mpsc::unbounded_channel();
        let direct = Arc::new(Direct {
            marks,
            store,
            fanout,
            namespace: namespace.to_owned(),
            limits,
            devices: Mutex::new(registry::Registry::new()),
            queues: super::queues::ConnectionQueues::new(limits.max_queued_sends),
            webhook: webhook.map(|(config, after)| (webhook::Webhook::start(config), after)),
            offline_checks: Mutex::new(std::collections::HashSet::new()),
            egress: OnceLock::new(),
            self_ref: OnceLock::new(),
        });
        let _ = direct.self_ref.set(Arc::downgrade(&direct));
        tokio::spawn(sweep_loop(Arc::downgrade(&direct)));
        tokio::spawn(mark_writer(Arc::downgrade(&direct), waiting));
        direct
    }

    /// The store behind the layer.
    pub fn store(&self) -> &Arc<dyn MessageStore> {
        &self.store
    }

    /// The fan-out behind the layer.
    pub fn fanout(&self) -> &Arc<dyn Fanout> {
        &self.fanout
    }

    /// The namespace devices are on.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The layer's bounds.
    pub fn limits(&self) -> &DirectLimits {
        &self.limits
    }

    fn arc(&self) -> Option<Arc<Direct>> {
        self.self_ref.get().and_then(Weak::upgrade)
    }

    /// Stores a message and, once it is durable, tells the sender's devices and hands it to the recipient's.
    /// A repeated idempotency key returns the first message; it is offered again while undelivered (a crash
    /// may have come between storing and delivering it).
    pub async fn send(&self, message: NewMessage) -> Result<Accepted, StoreError> {
        let accepted = self.store.accept(message).await?;
        self.accepted(&accepted);
        Ok(accepted)
    }

    /// Stores messages in the given order with one write to the store (see [`MessageStore::accept_batch`]),
    /// then goes on with each as [`Direct::send`] does; one answer per message, in order.
    pub async fn send_batch(&self, messages: Vec<NewMessage>) -> Vec<Result<Accepted, StoreError>> {
        let answers = self.store.accept_batch(messages).await;
        for accepted in answers.iter().flatten() {
            self.accepted(accepted);
        }
        answers
    }

    /// What follows a durable accept: the sender's devices hear of it, and the recipient's are offered it
    /// while it is undelivered.
    fn accepted(&self, accepted: &Accepted) {
        if accepted.fresh {
            metrics::counter!("tidings_messages_accepted_total").increment(1);
            let m = &accepted.message;
            self.notify(vec![Change {
                id: m.id.clone(),
                from: m.from.clone(),
                to: m.to.clone(),
                status: Status::Accepted,
                device: None,
                at: m.accepted_at,
            }]);
            self.watch_offline(&m.to);
        } else {
            metrics::counter!("tidings_messages_repeated_total").increment(1);
        }
        if accepted.status < Status::Delivered {
            self.fanout.message(accepted.message.clone());
        }
    }

    /// Queues a connection's `dm` for the store behind the ones it sent before; false when too many wait.
    /// The connection's queue is worked in batches of what waits (up to [`MAX_ACCEPT_BATCH`]), each stored
    /// with one write, so a client's messages are accepted in the order it sent them without waiting for one
    /// round trip to the store each.
    pub fn enqueue(&self, socket: &Arc<Socket>, send: QueuedSend) -> bool {
        let Some(direct) = self.arc() else {
            return false;
        };
        let queued = self.queues.push(socket.id(), send, |queue| {
            direct.work_queue(socket.clone(), queue)
        });
        if !queued {
            metrics::counter!("tidings_message_sends_queue_full_total").increment(1);
        }
        queued
    }

    /// Works one connection's queue until the connection closed and the queue is empty.
    async fn work_queue(
        self: Arc<Self>,
        socket: Arc<Socket>,
        mut queue: mpsc::Receiver<QueuedSend>,
    ) {
        let mut waiting = Vec::with_capacity(MAX_ACCEPT_BATCH);
        while queue.recv_many(&mut waiting, MAX_ACCEPT_BATCH).await > 0 {
            let mut turns = Vec::with_capacity(waiting.len());
            let mut messages = Vec::with_capacity(waiting.len());
            for send in waiting.drain(..) {
                match send.message {
                    Ok(message) => {
                        messages.push(message);
                        turns.push((send.ack, None));
                    }
                    Err(refused) => turns.push((send.ack, Some(refused))),
                }
            }
            let mut answers = self.send_batch(messages).await.into_iter();
            for (ack, refused) in turns {
                let answer = match refused {
                    Some(refused) => Err(refused),
                    None => answers
                        .next()
                        .unwrap_or_else(|| Err(StoreError::Unavailable("no answer".into())))
                        .map_err(request::DmError::from),
                };
                client::answer_send(&socket, ack, answer);
            }
        }
    }

    /// A connection closed: its queue finishes what it holds, then ends.
    pub fn connection_closed(&self, socket: Sid) {
        self.queues.close(&socket);
    }

    /// Sends status changes to `egress` too from now on (set once, at start).
    pub fn set_egress(&self, egress: Arc<dyn crate::app::egress::Egress>) {
        let _ = self.egress.set(egress);
    }

    /// Status changes go to their sender's devices, wherever they are, to the webhook and to the event bus.
    pub fn notify(&self, changes: Vec<Change>) {
        for change in changes {
            if let Some(egress) = self.egress.get() {
                egress.status(&change);
            }
            metrics::counter!("tidings_message_status_changes_total", "status" => change.status.as_str())
                .increment(1);
            if let Some((webhook, _)) = &self.webhook {
                let mut event = change.to_json();
                event["type"] = "message.status".into();
                event["from"] = change.from.clone().into();
                webhook.send(event);
            }
            if let Some(from) = change.from.clone() {
                self.fanout.status(&from, change);
            }
        }
    }

    /// After the webhook's offline delay, tells it if `user` has no device connected anywhere and undelivered
    /// messages; one check per user at a time.
    fn watch_offline(&self, user: &str) {
        let Some((_, after)) = &self.webhook else {
            return;
        };
        if !self.offline_checks.lock().insert(user.to_owned()) {
            return;
        }
        let (Some(direct), after, user) = (self.arc(), *after, user.to_owned()) else {
            return;
        };
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            direct.offline_checks.lock().remove(&user);
            let online = match direct.fanout.presence(&user).await {
                Ok(presence) => presence.devices > 0,
                Err(error) => {
                    tracing::warn!(%error, "offline check skipped: presence unavailable");
                    return;
                }
            };
            if online {
                return;
            }
            let inbox = match direct.store.inbox(&user, 0, usize::MAX).await {
                Ok(inbox) => inbox,
                Err(error) => {
                    tracing::warn!(%error, "offline check skipped: inbox unavailable");
                    return;
                }
            };
            let undelivered: Vec<_> = inbox
                .iter()
                .filter(|m| m.status < Status::Delivered)
                .collect();
            let (Some(oldest), Some((webhook, _))) = (undelivered.first(), &direct.webhook) else {
                return;
            };
            metrics::counter!("tidings_webhook_offline_users_total").increment(1);
            webhook.send(serde_json::json!({
                "type": "user.offline",
                "user": user,
                "undelivered": undelivered.len(),
                "oldest_id": oldest.message.id,
                "oldest_at": oldest.message.accepted_at,
                "at": now_ms(),
            }));
        });
    }

    /// Writes a status change to this node's devices of `user`.
    pub fn status_to_devices(&self, user: &str, change: &Change) {
        let payload = change.to_json().to_string();
        for device in self.devices_of(user) {
            let _ = device.socket.emit(STATUS_EVENT, &[payload.as_bytes()]);
        }
    }

    /// Connected devices of `user` on this node.
    pub fn local_devices(&self, user: &str) -> usize {
        self.devices.lock().of(user).len()
    }

    fn devices_of(&self, user: &str) -> Vec<Arc<Device>> {
        self.devices.lock().of(user).to_vec()
    }

    /// A device connected: it is registered for new messages and reads back what it has not acknowledged.
    pub fn attach(
        &self,
        socket: &Arc<Socket>,
        claims: Arc<VerifiedClaims>,
        name: Option<&str>,
    ) -> Arc<Device> {
        let device = Device::new(socket.clone(), claims, name);
        let here = self.devices.lock().add(device.clone());
        metrics::gauge!("tidings_message_devices").increment(1.0);
        self.fanout.devices_changed(device.user(), here);
        self.catch_up(&device);
        device
    }

    /// The device on `socket` left.
    pub fn detach(&self, socket: &Socket, user: &str) {
        let here = {
            let mut devices = self.devices.lock();
            let Some((device, here)) = devices.remove(user, &socket.id()) else {
                return;
            };
            device.stream.lock().closed = true;
            here
        };
        metrics::gauge!("tidings_message_devices").decrement(1.0);
        self.fanout.devices_changed(user, here);
    }

    /// Users with devices on this node, and how many each.
    pub fn local_users(&self) -> Vec<(String, usize)> {
        self.devices
            .lock()
            .iter()
            .map(|(user, list)| (user.to_owned(), list.len()))
            .collect()
    }

    /// Every local device of `user` reads its inbox back (a hand-over for it may have been lost).
    pub fn catch_up_user(&self, user: &str) {
        for device in self.devices_of(user) {
            self.catch_up(&device);
        }
    }

    /// Every local device reads its inbox back (after hand-overs may have been lost).
    pub fn catch_up_all(&self) {
        let devices: Vec<Arc<Device>> = self
            .devices
            .lock()
            .iter()
            .flat_map(|(_, list)| list.iter().cloned())
            .collect();
        for device in devices {
            self.catch_up(&device);
        }
    }

    /// The device on `socket`, if it is one.
    pub fn device_of(&self, socket: &Socket, user: &str) -> Option<Arc<Device>> {
        self.devices
            .lock()
            .of(user)
            .iter()
            .find(|device| device.socket.id() == socket.id())
            .cloned()
    }

    /// A message for one of this node's users: written at once to each caught-up device it is next for, held
    /// back briefly for a device it came early to (see [`Stream::parked`]), and read back from the inbox by
    /// the others.
    pub fn offer(&self, message: &Message) {
        for device in self.devices_of(&message.to) {
            let mut written = Vec::new();
            let mut gap = None;
            let caught_up = {
                let mut stream = device.stream.lock();
                if stream.closed || message.seq <= stream.cursor {
                    continue;
                }
                let room = stream.unacked.len() < self.limits.max_unacked;
                if stream.live && room && message.seq == stream.cursor + 1 {
                    if self.write(&device, &mut stream, message) {
                        written.push(message.id.clone());
                        self.write_parked(&device, &mut stream, &mut written)
                    } else {
                        false
                    }
                } else if stream.live
                    && message.seq > stream.cursor + 1
                    && stream.parked.len() < MAX_PARKED
                {
                    if stream.parked.is_empty() {
                        stream.gaps = stream.gaps.wrapping_add(1);
                        gap = Some(stream.gaps);
                    }
                    stream.parked.insert(message.seq, message.clone());
                    true
                } else {
                    false
                }
            };
            if !written.is_empty() {
                self.mark_sent(&device, written);
            }
            if let Some(gap) = gap {
                self.watch_gap(&device, gap);
            }
            if !caught_up {
                self.catch_up(&device);
            }
        }
    }

    /// Writes the parked messages that are next in turn (the stream's cursor just moved); false when the
    /// device's window or connection stopped that (the caller starts a read-back).
    fn write_parked(
        &self,
        device: &Arc<Device>,
        stream: &mut Stream,
        written: &mut Vec<MessageId>,
    ) -> bool {
        while let Some(entry) = stream.parked.first_entry() {
            if *entry.key() <= stream.cursor {
                entry.remove();
                continue;
            }
            if *entry.key() != stream.cursor + 1 {
                return true;
            }
            if stream.unacked.len() >= self.limits.max_unacked {
                return false;
            }
            let next = entry.remove();
            if !self.write(device, stream, &next) {
                return false;
            }
            written.push(next.id);
        }
        true
    }

    /// After [`GAP_WAIT`], a device whose messages still wait for the same gap reads its inbox back: the
    /// message it waits for was lost on the way (its node was cut off) or is slow; the inbox has it.
    fn watch_gap(&self, device: &Arc<Device>, gap: u32) {
        let (Some(direct), device) = (self.arc(), Arc::downgrade(device)) else {
            return;
        };
        tokio::spawn(async move {
            tokio::time::sleep(GAP_WAIT).await;
            let Some(device) = device.upgrade() else {
                return;
            };
            let open = {
                let stream = device.stream.lock();
                stream.gaps == gap && !stream.parked.is_empty()
            };
            if open {
                metrics::counter!("tidings_message_gaps_read_back_total").increment(1);
                direct.catch_up(&device);
            }
        });
    }

    /// Writes one message to a device (its stream locked); false if the connection would not take it.
    fn write(&self, device: &Arc<Device>, stream: &mut Stream, message: &Message) -> bool {
        let meta = message.meta_json();
        let on_ack: Box<dyn FnOnce(crate::socketio::socket::AckReply) + Send> = {
            let direct = self.self_ref.get().cloned().unwrap_or_default();
            let device = Arc::downgrade(device);
            let id = message.id.clone();
            Box::new(move |_reply| {
                if let (Some(direct), Some(device)) = (direct.upgrade(), device.upgrade()) {
                    direct.receipt(&device, id);
                }
            })
        };
        let sent = device.socket.emit_with_callback(
            &message.event,
            &[message.data.as_bytes(), meta.as_bytes()],
            on_ack,
        );
        match sent {
            Ok(ack_id) => {
                stream.cursor = message.seq;
                stream.unacked.insert(message.id.clone(), ack_id);
                metrics::counter!("tidings_messages_written_total").increment(1);
                true
            }
            Err(_) => {
                // The connection is closing; the message stays in the inbox for the device's next connection.
                stream.live = false;
                stream.closed = true;
                false
            }
        }
    }

    /// Marks messages written to a device sent, coalesced with the device's other sent marks (see [`batch`])
    /// and written together with other devices' marks by the node's mark writer.
    fn mark_sent(&self, device: &Arc<Device>, ids: Vec<MessageId>) {
        if device.sent.push(ids) {
            let _ = self.marks.send((device.clone(), MarkKind::Sent));
        }
    }

    /// A device acknowledged a message with the ack callback: its window moves on at once, and its receipt is
    /// stored with the device's other receipts waiting (see [`batch`]) by the node's mark writer, then the
    /// sender's devices hear of it.
    fn receipt(&self, device: &Arc<Device>, id: MessageId) {
        self.release_window(device, std::slice::from_ref(&id));
        if device.receipts.push([id]) {
            let _ = self.marks.send((device.clone(), MarkKind::Delivered));
        }
    }

    /// Takes acknowledged messages out of a device's window, and resumes its catch-up when the window had held
    /// it back.
    fn release_window(&self, device: &Arc<Device>, ids: &[MessageId]) {
        let resume = {
            let mut stream = device.stream.lock();
            for id in ids {
                if let Some(ack_id) = stream.unacked.remove(id) {
                    device.socket.forget_ack(ack_id);
                }
            }
            !stream.closed
                && !stream.live
                && !stream.catching_up
                && stream.unacked.len() < self.limits.max_unacked
        };
        if resume {
            self.catch_up(device);
        }
    }

    /// A device acknowledged messages with the `ack` event: the window moves on, and once the mark writer
    /// stored the receipts (with every other device's) the sender's devices hear of them. Returns the receipts
    /// that were new.
    pub async fn acknowledge(
        &self,
        device: &Arc<Device>,
        ids: Vec<MessageId>,
    ) -> Result<usize, StoreError> {
        self.release_window(device, &ids);
        let (reply, answer) = tokio::sync::oneshot::channel();
        let flush = {
            let mut waiting = device.ack_events.get_or_init(Box::default).lock();
            let set = ids.iter().cloned().collect();
            let (flush, end) = device.receipts.push_counted(ids);
            waiting.push_back(device::AckEvent {
                end,
                ids: set,
                stored: 0,
                reply,
            });
            flush
        };
        if flush {
            let _ = self.marks.send((device.clone(), MarkKind::Delivered));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("message layer closed".into())))
    }

    /// `user` read every message from `from` up to `up_to`: stored, then the sender's devices hear of it.
    /// Returns how many messages changed to read.
    pub async fn read(
        &self,
        user: &str,
        from: &str,
        up_to: &MessageId,
    ) -> Result<usize, StoreError> {
        let changes = self.store.mark_read(user, from, up_to, now_ms()).await?;
        let read = changes.len();
        self.notify(changes);
        Ok(read)
    }

    /// Starts reading the device's inbox back, unless a read is running (then it reads once more).
    fn catch_up(&self, device: &Arc<Device>) {
        {
            let mut stream = device.stream.lock();
            if stream.closed {
                return;
            }
            stream.live = false;
            // Everything parked is in the inbox: the read brings it in turn.
            stream.parked.clear();
            if stream.catching_up {
                stream.again = true;
                return;
            }
            stream.catching_up = true;
            stream.again = false;
        }
        let Some(direct) = self.arc() else {
            return;
        };
        tokio::spawn(direct.catch_up_task(device.clone()));
    }

    async fn catch_up_task(self: Arc<Self>, device: Arc<Device>) {
        loop {
            let (after, room) = {
                let mut stream = device.stream.lock();
                let room = self
                    .limits
                    .max_unacked
                    .saturating_sub(stream.unacked.len())
                    .min(PAGE);
                if stream.closed || room == 0 {
                    // Window full: the next acknowledgement resumes the read.
                    stream.catching_up = false;
                    return;
                }
                stream.again = false;
                (stream.cursor, room)
            };
            let page = match self
                .store
                .pending(device.user(), &device.name(), after, room)
                .await
            {
                Ok(page) => page,
                Err(error) => {
                    // Every device retries while the store is down: counted, logged at debug only.
                    metrics::counter!("tidings_message_inbox_read_failures_total").increment(1);
                    tracing::debug!(%error, user = %device.user(), "could not read an inbox; retrying");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
            let mut written = Vec::new();
            let done = {
                let mut stream = device.stream.lock();
                if stream.closed {
                    stream.catching_up = false;
                    return;
                }
                for message in &page.messages {
                    if message.seq > stream.cursor {
                        if !self.write(&device, &mut stream, message) {
                            stream.catching_up = false;
                            return;
                        }
                        written.push(message.id.clone());
                    }
                }
                let complete = page.messages.len() < room;
                if complete {
                    // Everything up to the inbox's last sequence was written or needs nothing.
                    stream.cursor = stream.cursor.max(page.last_seq);
                }
                let done = complete && !stream.again;
                if done {
                    stream.live = true;
                    stream.catching_up = false;
                }
                done
            };
            if !written.is_empty() {
                self.mark_sent(&device, written);
            }
            if done {
                return;
            }
        }
    }

    /// Expires messages whose ttl passed and tells their senders.
    async fn sweep(&self) {
        match self.store.sweep(now_ms()).await {
            Ok(changes) => {
                let expired = changes
                    .iter()
                    .filter(|c| c.status == Status::Expired)
                    .count();
                metrics::counter!("tidings_messages_expired_total").increment(expired as u64);
                self.notify(changes);
            }
            Err(error) => {
                // Once a second while the store is down: the store's own errors are counted.
                tracing::debug!(%error, "message sweep failed");
            }
        }
    }
}

use device::Stream;

/// Which batch of a device the mark writer takes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MarkKind {
    Sent,
    Delivered,
}

/// Answers the `ack` events of `device` whose receipts the round that took its receipts up to `end` stored.
fn answer_ack_events(device: &Device, end: u64, changes: &[Change], failure: Option<&StoreError>) {
    let Some(slot) = device.ack_events.get() else {
        return;
    };
    let mut waiting = slot.lock();
    if waiting.is_empty() {
        return;
    }
    let name = device.name();
    let new: Vec<&MessageId> = changes
        .iter()
        .filter(|c| c.device.as_deref() == Some(&*name) && c.to == device.user())
        .map(|c| &c.id)
        .collect();
    for event in waiting.iter_mut() {
        event.stored += new.iter().filter(|id| event.ids.contains(**id)).count();
    }
    while waiting.front().is_some_and(|event| event.end <= end) {
        if let Some(event) = waiting.pop_front() {
            let answer = match failure {
                Some(error) => Err(error.clone()),
                None => Ok(event.stored),
            };
            let _ = event.reply.send(answer);
        }
    }
    if waiting.is_empty() {
        // The queue's buffer goes; its lock stays with the device, which is likely to send another.
        *waiting = std::collections::VecDeque::new();
    }
}

/// Ids written in one round of the mark writer at most (one store write).
const MAX_MARKS_PER_ROUND: usize = 2048;

/// Writes the sent marks and receipts of every device of the node: each round takes what the devices with
/// waiting ids hold and stores it with one [`MessageStore::mark_batch`], then tells the senders. Devices whose
/// batches still hold ids (more came during the round) stay for the next round.
async fn mark_writer(
    direct: Weak<Direct>,
    mut waiting: mpsc::UnboundedReceiver<(Arc<Device>, MarkKind)>,
) {
    let mut flushing: Vec<(Arc<Device>, MarkKind)> = Vec::new();
    loop {
        if flushing.is_empty() && waiting.recv_many(&mut flushing, 1024).await == 0 {
            return;
        }
        while let Ok(more) = waiting.try_recv() {
            flushing.push(more);
        }
        let Some(direct) = direct.upgrade() else {
            return;
        };
        let at_ms = now_ms();
        let mut marks = Vec::new();
        let mut receipts_of = Vec::new();
        let mut taken = 0;
        let mut next = Vec::with_capacity(flushing.len());
        let mut served = Vec::with_capacity(flushing.len());
        for (device, kind) in flushing.drain(..) {
            if taken >= MAX_MARKS_PER_ROUND {
                // Left for the next round, ahead of the ones served in this one.
                next.push((device, kind));
                continue;
            }
            let batch = match kind {
                MarkKind::Sent => &device.sent,
                MarkKind::Delivered => &device.receipts,
            };
            // `None` ends the device's flush: its next id queues it again.
            let Some((ids, end)) = batch.take_counted() else {
                continue;
            };
            taken += ids.len();
            if kind == MarkKind::Delivered {
                receipts_of.push((device.clone(), end));
            }
            marks.push(crate::messages::Marks {
                user: device.user().to_owned(),
                device: (kind == MarkKind::Delivered).then(|| device.name().into_owned()),
                ids,
                at_ms,
            });
            served.push((device, kind));
        }
        next.append(&mut served);
        flushing = next;
        if marks.is_empty() {
            continue;
        }
        let started = std::time::Instant::now();
        metrics::histogram!("tidings_message_mark_round_ids").record(taken as f64);
        let (changes, failure) = direct.store.mark_batch(marks).await;
        metrics::histogram!("tidings_message_mark_round_seconds")
            .record(started.elapsed().as_secs_f64());
        for (device, end) in receipts_of {
            answer_ack_events(&device, end, &changes, failure.as_ref());
        }
        direct.notify(changes);
        if let Some(error) = failure {
            // Not retried: a device's read-back and its next acknowledgement give the marks again.
            tracing::warn!(%error, "could not store sent marks or delivery receipts");
            tokio::time::sleep(RETRY).await;
        }
    }
}

async fn sweep_loop(direct: Weak<Direct>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(direct) = direct.upgrade() else {
            return;
        };
        direct.sweep().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engineio::session::TransportKind;
    use crate::engineio::{OutboxLimits, Session};
    use crate::messages::{InboxLimits, MemoryMessages};

    /// A websocket socket of user `sub` in the default namespace, on a session of its own.
    pub(super) fn socket(sub: &str) -> Arc<Socket> {
        let claims: crate::auth::Claims =
            serde_json::from_value(serde_json::json!({ "sub": sub })).unwrap();
        let claims = Arc::new(crate::auth::VerifiedClaims::from_claims(claims).unwrap());
        let limits = OutboxLimits {
            max_messages: 1024,
            max_bytes: 1 << 20,
        };
        let session = Session::new(TransportKind::WebSocket, limits, 10);
        Socket::new(session, "/", None, None, Some(claims))
    }

    fn message(n: u64) -> NewMessage {
        NewMessage {
            from: Some("alice".into()),
            to: "bob".into(),
            event: "chat".into(),
            data: Arc::from(n.to_string().as_str()),
            key: None,
            at_ms: now_ms(),
            ttl_ms: 60_000,
        }
    }

    /// A message layer over a memory store with bob's device connected and caught up.
    async fn bob_live() -> (Arc<MemoryMessages>, Arc<Direct>, Arc<Socket>, Arc<Device>) {
        let store = Arc::new(MemoryMessages::new(InboxLimits::default()));
        let fanout = LocalFanout::new();
        let direct = Direct::new(store.clone(), fanout.clone(), "/", DirectLimits::default());
        fanout.bind(&direct);
        let bob = socket("bob");
        let device = live_device(&direct, &bob).await;
        (store, direct, bob, device)
    }

    async fn live_device(direct: &Arc<Direct>, socket: &Arc<Socket>) -> Arc<Device> {
        let device = direct.attach(socket, socket.user().unwrap(), Some("phone"));
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while device.stream.lock().catching_up || !device.stream.lock().live {
            assert!(tokio::time::Instant::now() < deadline, "never went live");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        device
    }

    #[tokio::test]
    async fn a_message_that_comes_early_waits_for_the_one_before_it() {
        let (store, direct, bob, device) = bob_live().await;
        // Stored without being offered, as when they were accepted on other nodes.
        let first = store.accept(message(1)).await.unwrap().message;
        let second = store.accept(message(2)).await.unwrap().message;
        direct.offer(&second);
        {
            let stream = device.stream.lock();
            assert_eq!((stream.cursor, stream.parked.len()), (0, 1));
            assert!(stream.live, "no read-back for a gap that may fill");
        }
        direct.offer(&first);
        let stream = device.stream.lock();
        assert_eq!((stream.cursor, stream.parked.len()), (2, 0));
        assert!(stream.unacked.contains_key(&first.id) && stream.unacked.contains_key(&second.id));
        assert_eq!(bob.pending_acks(), 2);
    }

    #[tokio::test]
    async fn a_gap_that_does_not_fill_is_read_back_from_the_inbox() {
        let (store, direct, _bob, device) = bob_live().await;
        // The first one's hand-over is lost; only the second comes.
        let _lost = store.accept(message(1)).await.unwrap().message;
        let second = store.accept(message(2)).await.unwrap().message;
        direct.offer(&second);
        assert_eq!(device.stream.lock().cursor, 0);
        tokio::time::sleep(GAP_WAIT + std::time::Duration::from_millis(200)).await;
        let stream = device.stream.lock();
        assert_eq!((stream.cursor, stream.parked.len()), (2, 0));
        assert_eq!(stream.unacked.len(), 2);
    }

    #[tokio::test]
    async fn the_ack_event_drops_the_callbacks_of_what_it_acknowledges() {
        let store = Arc::new(MemoryMessages::new(InboxLimits::default()));
        let fanout = LocalFanout::new();
        let direct = Direct::new(store, fanout.clone(), "/", DirectLimits::default());
        fanout.bind(&direct);
        let bob = socket("bob");
        let device = direct.attach(&bob, bob.user().unwrap(), Some("phone"));
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while device.stream.lock().catching_up || !device.stream.lock().live {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the device never went live"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        for n in 0..5 {
            direct.send(message(n)).await.unwrap();
        }
        while bob.pending_acks() < 5 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} written",
                bob.pending_acks()
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // The device acknowledges with the `ack` event instead of the callbacks: they must not stay behind.
        let ids: Vec<MessageId> = device.stream.lock().unacked.keys().cloned().collect();
        assert_eq!(direct.acknowledge(&device, ids).await.unwrap(), 5);
        assert_eq!(bob.pending_acks(), 0);
        assert!(device.stream.lock().unacked.is_empty());
    }
}
