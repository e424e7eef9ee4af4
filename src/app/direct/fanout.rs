//! How a direct message or a status change reaches the nodes where its user has devices: [`Fanout`] is the
//! capability; [`LocalFanout`] is the embedded one (every device is on this node).

use std::sync::{Arc, OnceLock, Weak};

use futures_util::future::{self, BoxFuture, FutureExt};

use super::Direct;
use crate::messages::{Change, Message, StoreError};

/// Whether a user has devices connected, as the whole deployment sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UserPresence {
    /// Connected devices (a device connected twice counts once per node it is on).
    pub devices: usize,
}

/// Carries messages and status changes to the nodes holding a user's devices, and answers presence.
pub trait Fanout: Send + Sync + 'static {
    /// Hands an accepted message to every node with a device of its recipient (this node included), where
    /// [`Direct::offer`] takes it.
    fn message(&self, message: Message);
    /// Hands a status change to every node with a device of `user` (the sender), where
    /// [`Direct::status_to_devices`] takes it.
    fn status(&self, user: &str, change: Change);
    /// `user` has `devices_here` devices on this node now (a device came or went).
    fn devices_changed(&self, user: &str, devices_here: usize);
    /// The user's presence over every node.
    fn presence<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<UserPresence, StoreError>>;
}

/// The embedded fan-out: every device is on this node.
#[derive(Default)]
pub struct LocalFanout {
    direct: OnceLock<Weak<Direct>>,
}

impl LocalFanout {
    /// A fan-out to be bound to its [`Direct`] once that exists.
    pub fn new() -> Arc<LocalFanout> {
        Arc::new(LocalFanout::default())
    }

    /// Binds the fan-out to the engine it delivers to.
    pub fn bind(&self, direct: &Arc<Direct>) {
        let _ = self.direct.set(Arc::downgrade(direct));
    }

    fn direct(&self) -> Option<Arc<Direct>> {
        self.direct.get().and_then(Weak::upgrade)
    }
}

impl Fanout for LocalFanout {
    fn message(&self, message: Message) {
        if let Some(direct) = self.direct() {
            direct.offer(&message);
        }
    }

    fn status(&self, user: &str, change: Change) {
        if let Some(direct) = self.direct() {
            direct.status_to_devices(user, &change);
        }
    }

    fn devices_changed(&self, _user: &str, _devices_here: usize) {}

    fn presence<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<UserPresence, StoreError>> {
        let devices = self.direct().map_or(0, |direct| direct.local_devices(user));
        future::ready(Ok(UserPresence { devices })).boxed()
    }
}
