//! What the speaker actually played, for the echo canceller.
//!
//! The speaker's device callback pushes the mono mix of every buffer it plays (at the device's
//! rate) into a lock-free ring; the capture side ([`ProcessedSource`](crate::ProcessedSource))
//! takes it before each microphone frame and feeds it to the echo canceller as the far end. The
//! callback never blocks or allocates here: what does not fit in the ring (nobody is taking it)
//! is dropped.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::AUDIO_SAMPLE_RATE;
use crate::device::playout::PlayoutRing;

/// Seconds of played audio the ring holds: far more than the capture side ever lags.
const CAPACITY_S: usize = 1;
/// The highest device rate the ring is sized for.
const MAX_RATE: usize = 192_000;

/// The far-end reference: mono audio as played, shared by one speaker and one microphone path.
pub struct EchoReference {
    ring: PlayoutRing,
    rate: AtomicU32,
}

impl std::fmt::Debug for EchoReference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EchoReference").field("rate", &self.rate()).finish_non_exhaustive()
    }
}

impl Default for EchoReference {
    fn default() -> Self {
        let capacity = CAPACITY_S * MAX_RATE;
        Self { ring: PlayoutRing::new(capacity, 1, 0, capacity), rate: AtomicU32::new(AUDIO_SAMPLE_RATE) }
    }
}

impl EchoReference {
    /// An empty reference at 48 kHz.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The player: the rate of what it will push from now on.
    pub fn set_rate(&self, rate: u32) {
        self.rate.store(rate, Ordering::Relaxed);
    }

    /// The rate of what is pushed, Hz.
    #[must_use]
    pub fn rate(&self) -> u32 {
        self.rate.load(Ordering::Relaxed)
    }

    /// The player: mono samples just played.
    pub fn push(&self, played: &[i16]) {
        self.ring.push(played);
    }

    /// The capture side: moves up to `out.len()` played samples into `out`, oldest first, and
    /// returns how many.
    pub fn take(&self, out: &mut [i16]) -> usize {
        self.ring.take(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn played_audio_comes_out_in_order_at_its_rate() {
        let reference = EchoReference::new();
        assert_eq!(reference.rate(), 48_000);
        reference.set_rate(44_100);
        reference.push(&[1, 2, 3]);
        reference.push(&[4]);
        let mut out = [0i16; 8];
        assert_eq!(reference.take(&mut out), 4);
        assert_eq!(&out[..4], &[1, 2, 3, 4]);
        assert_eq!(reference.rate(), 44_100);
        assert_eq!(reference.take(&mut out), 0);
    }
}
