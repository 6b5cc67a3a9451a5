//! A call: lifecycle machine and (with the peer connection) its driver.

mod driver;
mod machine;
#[cfg(test)]
mod tests;

pub use driver::{Call, CallCommand, CallConfig, CallEvent, CallMedia, CallStats, Quality};
pub use machine::{CallMachine, CallState, Command, DISCONNECTED_GRACE, Output, PeerState, RESTART_TIMEOUT, Side};
