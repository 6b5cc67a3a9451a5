//! A call: lifecycle machine, the video state both partners keep in step, and (with the peer
//! connection) its driver.

mod driver;
mod machine;
mod recovery;
#[cfg(test)]
mod tests;
mod video_sync;

pub use driver::{Call, CallCommand, CallConfig, CallEvent, CallMedia, CallStats, Quality};
pub use machine::{
    CONNECT_TIMEOUT, CallMachine, CallState, Command, DISCONNECTED_GRACE, MAX_REPLACEMENTS, OFFER_TIMEOUT, Output,
    PeerState, RESTART_TIMEOUT, Side,
};
pub use recovery::{Failure, Fix, Recovery};
pub use video_sync::{RESEND_AFTER, VideoState, VideoSync, VideoSyncOutput};
