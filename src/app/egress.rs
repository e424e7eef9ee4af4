//! Where client publishes and direct-message status changes go beyond this node's clients: an event bus, as a
//! capability chosen once at start — [`NoEgress`], or Kafka (`crate::kafka::egress::KafkaEgress`).

use futures_util::future::BoxFuture;

use crate::messages::Change;

/// A client's publish to a room, as the bus gets it.
pub struct OutPublish<'a> {
    /// Namespace.
    pub nsp: &'a str,
    /// Room.
    pub room: &'a str,
    /// Event name.
    pub event: &'a str,
    /// Event data, JSON text.
    pub data: &'a str,
    /// The publishing user (the token's `sub`).
    pub from: &'a str,
}

/// What happens to a client publish to a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// It does not go to the bus.
    Skip,
    /// It is queued for the bus after it was published (dropped, and counted, when the queue is full).
    Queue,
    /// It goes to the bus first; it is published, and the client answered `ok`, once the bus took it.
    Ack,
}

/// The bus did not take a record.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EgressError {
    /// Too many records wait for the bus.
    #[error("event bus queue full")]
    Full,
    /// The bus refused it or could not be reached in time.
    #[error("event bus: {0}")]
    Failed(String),
}

/// An event bus the node produces to.
pub trait Egress: Send + Sync + 'static {
    /// What happens to client publishes to `room`.
    fn route(&self, room: &str) -> Route;
    /// Queues a client publish (route [`Route::Queue`]).
    fn publish(&self, out: &OutPublish<'_>) -> Result<(), EgressError>;
    /// Hands a client publish to the bus and resolves once the bus acknowledged it (route [`Route::Ack`]).
    fn publish_acked(&self, out: &OutPublish<'_>) -> BoxFuture<'static, Result<(), EgressError>>;
    /// Queues a direct message's status change.
    fn status(&self, change: &Change);
}

/// No bus: nothing goes out.
pub struct NoEgress;

impl Egress for NoEgress {
    fn route(&self, _room: &str) -> Route {
        Route::Skip
    }

    fn publish(&self, _out: &OutPublish<'_>) -> Result<(), EgressError> {
        Ok(())
    }

    fn publish_acked(&self, _out: &OutPublish<'_>) -> BoxFuture<'static, Result<(), EgressError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn status(&self, _change: &Change) {}
}
