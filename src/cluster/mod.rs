//! Running several nodes as one cluster over Redis: shared publishing with cluster-wide order, history and
//! sessions in Redis, direct messages in Redis, the node registry, and routing requests to the node that owns a
//! session.

pub mod broker;
pub mod connection;
pub mod direct;
pub mod ephemeral;
pub mod forward;
pub mod history;
pub mod keys;
pub mod messages;
pub mod partition;
pub mod presence;
pub mod registry;
pub mod room_counts;
pub mod sessions;
pub mod subscriber;
pub mod tunnels;

pub use connection::{Redis, RedisTarget};
pub use messages::{RedisMessages, ReplicaWait};
