//! File sources and sinks: Y4M video, WAV audio.

pub mod wav;
pub mod y4m;
