//! tidings: a real-time event server speaking the Socket.IO v4 protocol.
//!
//! Data path: [`engineio`] (transports, sessions) → [`socketio`] (packets, namespaces, acks) →
//! [`app`] (auth, rooms, publish rules) → [`hub`] (fan-out). [`api`] is the HTTP API for backends,
//! [`server`] wires a node together from [`config`].

#[cfg(feature = "alloc-census")]
pub mod alloc_census;
pub mod api;
pub mod app;
pub mod auth;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod conformance;
pub mod drain;
pub mod engineio;
pub mod grow;
pub mod history;
pub mod hub;
pub mod kafka;
pub mod load;
pub mod messages;
pub mod process;
pub mod rate;
pub mod recovery;
pub mod rooms_disk;
pub mod server;
pub mod socketio;
pub mod sqlite;
