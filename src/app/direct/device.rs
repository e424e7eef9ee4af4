//! One connected device of a user and where its message stream stands: the last inbox sequence written to it,
//! the messages written and not acknowledged yet (a bounded window), and whether it is caught up with the
//! inbox (then new messages are written as they come) or reading it back.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use once_cell::race::OnceBox;
use parking_lot::Mutex;

use crate::auth::VerifiedClaims;
use crate::messages::{Message, MessageId};
use crate::socketio::Socket;

/// Longest device name accepted in the CONNECT auth payload is a config value; these are the bytes allowed.
fn is_device_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@')
}

/// Checks a `device` from a CONNECT auth payload: 1 to `max_bytes` of ASCII letters, digits and `-_.:@`.
pub fn validate_device(name: &str, max_bytes: usize) -> Result<(), String> {
    if name.is_empty() || name.len() > max_bytes {
        return Err(format!("device must be 1 to {max_bytes} bytes"));
    }
    if !name.bytes().all(is_device_byte) {
        return Err("device may only hold ASCII letters, digits and - _ . : @".into());
    }
    Ok(())
}

/// Where a device's stream stands.
#[derive(Debug, Default)]
pub(super) struct Stream {
    /// Last inbox sequence written to the device (or skipped as already acknowledged or gone).
    pub cursor: u64,
    /// Messages written and not acknowledged yet, with the ack id of their emit (its callback is dropped when
    /// the `ack` event acknowledges the message instead, so callbacks never pile up on the socket).
    pub unacked: Unacked,
    /// Caught up: a message with the next sequence is written as it comes.
    pub live: bool,
    /// A read of the inbox is running.
    pub catching_up: bool,
    /// Something arrived during that read: read once more before going live.
    pub again: bool,
    /// The device left; nothing more is written.
    pub closed: bool,
    /// Messages that came live ahead of their turn (a message before them is still on its way from another
    /// node or another connection), by sequence; written once the gap fills, or read back from the inbox if it
    /// does not fill in time. At most [`super::MAX_PARKED`].
    pub parked: Parked,
    /// Counts (wrapping) the times messages started waiting in `parked`, so a gap's timer knows whether it is
    /// still that gap.
    pub gaps: u32,
}

/// Messages that came ahead of their turn, by sequence. Empty, it is one pointer: every connected device has
/// one, and a gap is rare.
#[derive(Debug, Default)]
#[allow(clippy::box_collection)] // The box is the point: 8 bytes inline instead of 24.
pub(super) struct Parked(Option<Box<BTreeMap<u64, Message>>>);

impl Parked {
    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |m| m.len())
    }

    /// True when none waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Parks a message under its sequence.
    pub fn insert(&mut self, seq: u64, message: Message) {
        self.0
            .get_or_insert_with(Default::default)
            .insert(seq, message);
    }

    /// The message with the lowest sequence, to look at or take (an emptied table goes here).
    pub fn first_entry(
        &mut self,
    ) -> Option<std::collections::btree_map::OccupiedEntry<'_, u64, Message>> {
        if self.0.as_ref().is_some_and(|m| m.is_empty()) {
            self.0 = None;
        }
        self.0.as_mut()?.first_entry()
    }

    /// Forgets every parked message (the table goes).
    pub fn clear(&mut self) {
        self.0 = None;
    }
}

/// Messages written to a device and not acknowledged yet, by id, with the ack id of their emit. Empty, it is
/// one pointer: every connected device has one, few have messages in flight.
#[derive(Debug, Default)]
#[allow(clippy::box_collection)] // The box is the point: 8 bytes inline instead of 48.
pub(super) struct Unacked(Option<Box<HashMap<MessageId, u64>>>);

impl Unacked {
    /// Messages in flight.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |m| m.len())
    }

    /// True when none is in flight.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Notes a message written with the emit's ack id.
    pub fn insert(&mut self, id: MessageId, ack_id: u64) {
        self.0
            .get_or_insert_with(Default::default)
            .insert(id, ack_id);
    }

    /// Forgets a message; its emit's ack id if it was in flight. The table goes once empty.
    pub fn remove(&mut self, id: &MessageId) -> Option<u64> {
        let map = self.0.as_mut()?;
        let removed = map.remove(id);
        if map.is_empty() {
            self.0 = None;
        }
        removed
    }

    /// True when `id` is in flight.
    #[cfg(test)]
    pub fn contains_key(&self, id: &MessageId) -> bool {
        self.0.as_ref().is_some_and(|m| m.contains_key(id))
    }

    /// The ids in flight.
    #[cfg(test)]
    pub fn keys(&self) -> impl Iterator<Item = &MessageId> {
        self.0.iter().flat_map(|m| m.keys())
    }
}

/// A connected device.
pub struct Device {
    /// The socket it is connected with.
    pub socket: Arc<Socket>,
    /// Its user's verified claims as they were when it connected (the user id never changes on a socket).
    claims: Arc<VerifiedClaims>,
    /// Its name, when the CONNECT auth payload gave one (see [`Device::name`]).
    given_name: Option<Arc<str>>,
    pub(super) stream: Mutex<Stream>,
    /// Messages written to this device, waiting to be marked sent.
    pub(super) sent: super::batch::Batch<crate::messages::MessageId>,
    /// Messages this device acknowledged, waiting for their receipts to be stored.
    pub(super) receipts: super::batch::Batch<crate::messages::MessageId>,
    /// `ack` events waiting for their receipts to be stored, oldest first. Made, lock included, at the first
    /// one: most devices never send one, and an unused queue is a single pointer.
    pub(super) ack_events: OnceBox<Mutex<std::collections::VecDeque<AckEvent>>>,
}

/// An `ack` event of a device waiting for the mark writer to store its receipts.
pub(super) struct AckEvent {
    /// Its ids end at this position of the device's receipts (see [`super::batch::Batch::push_counted`]).
    pub end: u64,
    /// Its ids, to count the receipts that were new.
    pub ids: std::collections::HashSet<MessageId>,
    /// New receipts among them stored so far.
    pub stored: usize,
    /// Where the answer goes: how many receipts were new, or why they could not be stored.
    pub reply: tokio::sync::oneshot::Sender<Result<usize, crate::messages::StoreError>>,
}

impl Device {
    /// A device that has not read its inbox yet; without a `name`, it is named after its connection.
    pub fn new(
        socket: Arc<Socket>,
        claims: Arc<VerifiedClaims>,
        name: Option<&str>,
    ) -> Arc<Device> {
        Arc::new(Device {
            socket,
            claims,
            given_name: name.map(Into::into),
            stream: Mutex::new(Stream::default()),
            sent: Default::default(),
            receipts: Default::default(),
            ack_events: OnceBox::new(),
        })
    }

    /// Its user.
    pub fn user(&self) -> &str {
        self.claims.sub()
    }

    /// Its name: the `device` of the CONNECT auth payload, or `conn-<socket id>` (made when asked, so a
    /// device that never gets a message keeps no string for it).
    pub fn name(&self) -> std::borrow::Cow<'_, str> {
        match &self.given_name {
            Some(name) => std::borrow::Cow::Borrowed(name),
            None => std::borrow::Cow::Owned(format!("conn-{}", self.socket.id())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_fits_a_112_byte_block_with_its_reference_counts() {
        // Every connection in the direct namespace holds one; the next size class down is 96 bytes.
        assert!(std::mem::size_of::<Device>() + 16 <= 112);
    }

    #[test]
    fn device_names() {
        assert!(validate_device("phone-1", 64).is_ok());
        assert!(validate_device("a.b:c@d_e", 64).is_ok());
        assert!(validate_device("", 64).is_err());
        assert!(validate_device("a b", 64).is_err());
        assert!(validate_device("tél", 64).is_err());
        assert!(validate_device(&"a".repeat(65), 64).is_err());
        assert!(validate_device(&"a".repeat(64), 64).is_ok());
    }
}
