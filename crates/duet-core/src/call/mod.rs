//! A call: lifecycle machine and (with the peer connection) its driver.

mod driver;
mod machine;
mod recovery;
#[cfg(test)]
mod tests;

pub use driver::{Call, CallCommand, CallConfig, CallEvent, CallMedia, CallStats, Quality};
pub use machine::{
    CONNECT_TIMEOUT, CallMachine, CallState, Command, DISCONNECTED_GRACE, MAX_REPLACEMENTS, OFFER_TIMEOUT, Output,
    PeerState, RESTART_TIMEOUT, Side,
};
pub use recovery::{Failure, Fix, Recovery};
