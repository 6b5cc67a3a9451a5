//! Duet signaling protocol, version 1.
//!
//! JSON text frames over WebSocket, tagged by `type`. This crate holds the message types
//! for both directions, their limits and validation, and the parse/encode functions that
//! the server and clients share. It performs no I/O. The wire format is documented message
//! by message in `docs/PROTOCOL.md`.

mod limits;
mod messages;
mod parse;

pub use limits::*;
pub use messages::*;
pub use parse::*;

/// The protocol version this crate speaks; sent in `hello` and checked by the server.
pub const PROTOCOL_VERSION: u32 = 1;
