//! Synthetic sources for tests, benchmarks and the headless client: they carry markers a receiver reads
//! to measure latency and loss.

pub mod audio;
pub mod video;
