//! The websockets this node splices to the node owning their session (see [`super::forward`]): counted, and
//! closable one by one, so that a draining node moves them over its drain window like its own sessions instead
//! of cutting them all when it exits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// The open spliced websockets of this node.
#[derive(Debug, Default)]
pub struct Tunnels {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Notify>>>,
}

impl Tunnels {
    /// Registers a tunnel; it stays listed until the guard is dropped.
    pub fn open(self: &Arc<Self>) -> TunnelGuard {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let close = Arc::new(Notify::new());
        self.open.lock().insert(id, close.clone());
        TunnelGuard {
            tunnels: self.clone(),
            id,
            close,
        }
    }

    /// Open tunnels.
    pub fn len(&self) -> usize {
        self.open.lock().len()
    }

    /// True when no tunnel is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A closer for every open tunnel: [`TunnelCloser::close`] ends it (both connections are dropped).
    pub fn closers(&self) -> Vec<TunnelCloser> {
        self.open
            .lock()
            .values()
            .map(|close| TunnelCloser(close.clone()))
            .collect()
    }
}

/// Ends one tunnel.
#[derive(Debug, Clone)]
pub struct TunnelCloser(Arc<Notify>);

impl TunnelCloser {
    /// Asks the tunnel to end (at once, or as soon as it starts waiting).
    pub fn close(&self) {
        self.0.notify_one();
    }
}

/// One open tunnel's place in [`Tunnels`].
#[derive(Debug)]
pub struct TunnelGuard {
    tunnels: Arc<Tunnels>,
    id: u64,
    close: Arc<Notify>,
}

impl TunnelGuard {
    /// Resolves when the tunnel was asked to close.
    pub async fn closed(&self) {
        self.close.notified().await;
    }
}

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        self.tunnels.open.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closer_ends_its_tunnel_and_the_guard_unlists_it() {
        let tunnels = Arc::new(Tunnels::default());
        let guard = tunnels.open();
        let other = tunnels.open();
        assert_eq!(tunnels.len(), 2);
        for closer in tunnels.closers() {
            closer.close();
        }
        // The permit is kept until the tunnel waits.
        tokio::time::timeout(std::time::Duration::from_secs(1), guard.closed())
            .await
            .unwrap();
        drop(guard);
        assert_eq!(tunnels.len(), 1);
        drop(other);
        assert!(tunnels.is_empty());
    }
}
