//! The Duet call engine.
//!
//! - [`signaling`]: the protocol v1 client: session, acks, resend after resume, heartbeat,
//!   reconnection with exponential backoff and jitter.
//! - [`negotiation`]: perfect negotiation (glare, duplicate/stale descriptions, early
//!   candidates) as a sans-IO machine.

pub mod negotiation;
pub mod signaling;
