//! Signaling: protocol v1 client (sans-IO machine + tokio/WebSocket driver) and backoff.

mod backoff;
mod client;
mod machine;
#[cfg(test)]
mod tests;

pub use backoff::Backoff;
pub use client::SignalingClient;
pub use machine::{
    MAX_HEARTBEAT, MIN_HEARTBEAT, Output, SessionState, SignalingConfig, SignalingError, SignalingEvent,
    SignalingMachine,
};
