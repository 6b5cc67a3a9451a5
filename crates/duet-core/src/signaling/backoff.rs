//! Reconnect delays: exponential backoff with full jitter, as pure functions.
//!
//! Full jitter (delay uniform in `[0, min(cap, base * 2^attempt)]`) spreads a crowd of clients
//! that lost the same server over the whole window instead of letting them reconnect in
//! waves; the cap keeps a long outage from growing the wait without bound.

use std::time::Duration;

/// Backoff parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Window of the first retry.
    pub base: Duration,
    /// Largest window.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { base: Duration::from_millis(250), cap: Duration::from_secs(8) }
    }
}

impl Backoff {
    /// The window for retry number `attempt` (0-based): `min(cap, base * 2^attempt)`.
    pub fn window(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay before retry number `attempt`, given `unit`, a random number in `[0, 1)`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        self.window(attempt).mul_f64(unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_double_up_to_the_cap() {
        let b = Backoff::default();
        let w: Vec<u128> = (0..8).map(|a| b.window(a).as_millis()).collect();
        assert_eq!(w, [250, 500, 1000, 2000, 4000, 8000, 8000, 8000]);
        assert_eq!(b.window(1000), b.cap, "huge attempt numbers do not overflow");
    }

    #[test]
    fn delays_stay_inside_the_window() {
        let b = Backoff::default();
        assert_eq!(b.delay(3, 0.0), Duration::ZERO);
        assert_eq!(b.delay(3, 0.5), Duration::from_millis(1000));
        assert!(b.delay(3, 0.999_999) < b.window(3));
        assert_eq!(b.delay(3, 7.0), b.window(3), "out-of-range randomness is clamped");
    }

    #[test]
    fn jitter_spreads_a_crowd() {
        let b = Backoff::default();
        let delays: Vec<Duration> = (0..100).map(|i| b.delay(4, i as f64 / 100.0)).collect();
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 90);
    }
}
