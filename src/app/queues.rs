//! One ordered queue per connection, each worked by its own task: what a connection sends is handled in the
//! order it sent it, without one connection waiting for another. A queue is created with the connection's first
//! item and ends once the connection closed ([`ConnectionQueues::close`]) and its worker took what was left.

use std::collections::HashMap;
use std::future::Future;

use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::engineio::session::Sid;

/// The queues of every connection of one kind of work.
pub struct ConnectionQueues<T> {
    queues: Mutex<HashMap<Sid, mpsc::Sender<T>>>,
    capacity: usize,
}

impl<T: Send + 'static> ConnectionQueues<T> {
    /// Queues holding at most `capacity` waiting items each.
    pub fn new(capacity: usize) -> ConnectionQueues<T> {
        ConnectionQueues {
            queues: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// Queues `item` behind the connection's earlier ones; the connection's first item starts its worker
    /// (`work`, given the receiving end). False when the queue is full (the item is dropped).
    pub fn push<W, F>(&self, connection: Sid, item: T, work: W) -> bool
    where
        W: FnOnce(mpsc::Receiver<T>) -> F,
        F: Future<Output = ()> + Send + 'static,
    {
        let mut queues = self.queues.lock();
        let queue = queues.entry(connection).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(self.capacity);
            tokio::spawn(work(rx));
            tx
        });
        queue.try_send(item).is_ok()
    }

    /// The connection closed: its worker finishes what its queue holds, then ends.
    pub fn close(&self, connection: &Sid) {
        self.queues.lock().remove(connection);
    }
}
