//! Confirming writes with replicas in groups: one `WAIT` covers every write whose reply came back on the same
//! connection before it was sent, so concurrent writers share one round trip to the replicas instead of
//! queueing one blocking `WAIT` each behind the other.
//!
//! Writes that must be confirmed go through a connection of this module's own, numbered: `WAIT` only speaks
//! for the connection it is sent on, so a write made on a connection that has since been replaced is reported
//! unconfirmed, never confirmed by a `WAIT` on the new one.

use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::RedisError;
use tokio::sync::Notify;

use crate::cluster::RedisTarget;

/// Waiting for replicas after each write (`WAIT replicas timeout`), so that an acknowledged change survives
/// the loss of the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaWait {
    /// Replicas that must have the write before it is acknowledged.
    pub replicas: u32,
    /// How long to wait for them (kept under the command timeout); past it the write counts as not durable.
    pub timeout: Duration,
}

/// A write whose reply came back: its connection and its place among the writes.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    generation: u64,
    number: u64,
}

/// Why a write was not confirmed.
#[derive(Debug, thiserror::Error)]
pub enum Unconfirmed {
    /// Fewer replicas than required had the write when the wait ended.
    #[error("{acked} of {wanted} replicas confirmed the write within {timeout:?}")]
    TooFew {
        /// Replicas that had it.
        acked: u64,
        /// Replicas required.
        wanted: u32,
        /// The wait.
        timeout: Duration,
    },
    /// The connection of the write was lost before a wait covered it.
    #[error("connection lost before the replicas confirmed the write")]
    ConnectionLost,
    /// The wait itself failed.
    #[error(transparent)]
    Redis(#[from] RedisError),
}

#[derive(Default)]
struct State {
    /// Number of the current connection (0: none yet).
    generation: u64,
    /// Writes of the current connection whose reply came back.
    completed: u64,
    /// Writes of the current connection up to this number are confirmed.
    confirmed: u64,
    /// Writes up to this number were in a wait that ended with too few replicas.
    failed: u64,
    /// The last failure's replica count.
    failed_acked: u64,
    /// A `WAIT` is in flight.
    leading: bool,
}

/// The confirming connection and the group commit over it.
pub struct Confirmer {
    wait: ReplicaWait,
    target: RedisTarget,
    conn: tokio::sync::Mutex<Option<(u64, MultiplexedConnection)>>,
    state: Mutex<State>,
    done: Notify,
}

impl Confirmer {
    /// Confirms writes made through [`Confirmer::conn`] with `wait`.
    pub fn new(target: RedisTarget, wait: ReplicaWait) -> Confirmer {
        Confirmer {
            wait,
            target,
            conn: tokio::sync::Mutex::new(None),
            state: Mutex::new(State::default()),
            done: Notify::new(),
        }
    }

    /// The connection writes are made on, with its number; connects when there is none.
    pub async fn conn(&self) -> Result<(u64, MultiplexedConnection), RedisError> {
        let mut slot = self.conn.lock().await;
        if let Some((generation, conn)) = slot.as_ref() {
            return Ok((*generation, conn.clone()));
        }
        let conn = self.target.connect().await?;
        let generation = {
            let mut state = self.state.lock();
            *state = State {
                generation: state.generation + 1,
                ..State::default()
            };
            state.generation
        };
        *slot = Some((generation, conn.clone()));
        Ok((generation, conn))
    }

    /// Drops connection `generation` after an error on it: writes on it not confirmed yet never will be.
    pub async fn failed(&self, generation: u64) {
        let mut slot = self.conn.lock().await;
        if slot.as_ref().is_some_and(|(g, _)| *g == generation) {
            slot.take();
            // The next connection gets a new number; until then nothing of this one is confirmed.
            self.state.lock().generation = generation + 1;
            self.done.notify_waiters();
        }
    }

    /// Records that a write on connection `generation` got its reply.
    pub fn completed(&self, generation: u64) -> Ticket {
        let mut state = self.state.lock();
        if state.generation != generation {
            // Its connection was replaced meanwhile: no wait can confirm it any more.
            return Ticket {
                generation,
                number: u64::MAX,
            };
        }
        state.completed += 1;
        Ticket {
            generation,
            number: state.completed,
        }
    }

    /// Returns once replicas confirmed the write of `ticket`, sending a `WAIT` for it and every write before it
    /// unless one that covers it is already on its way.
    pub async fn confirm(&self, ticket: Ticket) -> Result<(), Unconfirmed> {
        loop {
            let done = self.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            let covers = {
                let mut state = self.state.lock();
                if state.generation != ticket.generation || ticket.number == u64::MAX {
                    return Err(Unconfirmed::ConnectionLost);
                }
                if ticket.number <= state.confirmed {
                    return Ok(());
                }
                if ticket.number <= state.failed {
                    return Err(self.too_few(state.failed_acked));
                }
                if state.leading {
                    None
                } else {
                    state.leading = true;
                    Some(state.completed)
                }
            };
            let Some(covers) = covers else {
                done.await;
                continue;
            };
            let result = self.wait_once(ticket.generation).await;
            {
                let mut state = self.state.lock();
                if state.generation == ticket.generation {
                    state.leading = false;
                    match &result {
                        Ok(acked) if *acked >= u64::from(self.wait.replicas) => {
                            state.confirmed = state.confirmed.max(covers);
                        }
                        Ok(acked) => {
                            state.failed = state.failed.max(covers);
                            state.failed_acked = *acked;
                        }
                        Err(_) => {}
                    }
                }
            }
            self.done.notify_waiters();
            if let Err(error) = result {
                self.failed(ticket.generation).await;
                return Err(error);
            }
        }
    }

    /// One `WAIT` on connection `generation`; the number of replicas that had every write before it.
    async fn wait_once(&self, generation: u64) -> Result<u64, Unconfirmed> {
        let conn = self.conn.lock().await.clone();
        let Some((current, mut conn)) = conn.filter(|(g, _)| *g == generation) else {
            return Err(Unconfirmed::ConnectionLost);
        };
        debug_assert_eq!(current, generation);
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(self.wait.replicas)
            .arg(self.wait.timeout.as_millis() as u64);
        Ok(cmd.query_async::<u64>(&mut conn).await?)
    }

    fn too_few(&self, acked: u64) -> Unconfirmed {
        Unconfirmed::TooFew {
            acked,
            wanted: self.wait.replicas,
            timeout: self.wait.timeout,
        }
    }
}
