//! Codecs: VP8 through libvpx, Opus through libopus.

pub mod opus;
pub mod vp8;
