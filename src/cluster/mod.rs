//! Running several nodes as one cluster over Redis: shared publishing with cluster-wide order, history and
//! sessions in Redis, the node registry, and routing requests to the node that owns a session.

pub mod connection;

pub use connection::{Redis, RedisTarget};
