//! A call: lifecycle machine and (with the peer connection) its driver.

mod machine;
#[cfg(test)]
mod tests;

pub use machine::{CallMachine, CallState, Command, DISCONNECTED_GRACE, Output, PeerState, RESTART_TIMEOUT, Side};
