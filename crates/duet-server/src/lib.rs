//! Duet matching and signaling server.
//!
//! - [`hub`]: the sans-IO matching/session state machine.
//! - [`turn`]: ICE server configuration and TURN REST credentials.

pub mod hub;
pub mod turn;
