//! Duet matching and signaling server.
//!
//! - [`hub`]: the sans-IO matching/session state machine (the product logic).
//! - [`backend`]: the boundary between sockets and state; the in-memory backend.
//! - [`cluster`]: scale-out over Redis (`--redis`): the shared pool and routing between nodes.
//! - [`ws`], [`http`], [`server`]: the thin drivers (WebSocket, HTTP endpoints, TLS, shutdown).
//! - [`guard`]: per-connection rate limits and abuse detection.
//! - [`access`]: `Origin`/`Host` checks and connection caps.
//! - [`config`]: flags, environment and TOML file.
//! - [`turn`]: ICE servers and TURN REST credentials.

pub mod access;
pub mod backend;
pub mod cluster;
pub mod config;
pub mod guard;
pub mod http;
pub mod hub;
pub mod server;
pub mod turn;
pub mod ws;

pub use config::{Cli, ServerConfig};
pub use server::{Server, ServerError};
