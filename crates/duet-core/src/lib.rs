//! The Duet call engine.
//!
//! - [`signaling`]: the protocol v1 client: session, acks, resend after resume, heartbeat,
//!   reconnection with exponential backoff and jitter.

pub mod signaling;
