//! Per-connection rate limiting and abuse detection, free of I/O.
//!
//! Every frame takes a token from a bucket; a frame without a token is dropped and answered
//! with `rate_limited`. Refused frames (rate-limited or invalid) count as violations; only
//! sustained abuse (too many violations within a window) closes the connection.

use std::time::{Duration, Instant};

/// Limits of one connection.
#[derive(Debug, Clone, Copy)]
pub struct GuardConfig {
    /// Frames per second allowed on average.
    pub rate_per_sec: f64,
    /// Frames allowed in a burst.
    pub burst: f64,
    /// Violations tolerated within `window` before the connection is closed.
    pub max_violations: u32,
    /// Window over which violations are counted.
    pub window: Duration,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self { rate_per_sec: 50.0, burst: 200.0, max_violations: 50, window: Duration::from_secs(10) }
    }
}

/// What to do with a frame or violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Process it.
    Allow,
    /// Drop it and answer `rate_limited`.
    Limited,
    /// Close the connection (policy violation).
    Close,
}

/// The guard state of one connection.
#[derive(Debug, Clone)]
pub struct ConnGuard {
    cfg: GuardConfig,
    tokens: f64,
    refilled: Instant,
    window_start: Instant,
    violations: u32,
}

impl ConnGuard {
    /// A full bucket at `now`.
    pub fn new(cfg: GuardConfig, now: Instant) -> Self {
        Self { cfg, tokens: cfg.burst, refilled: now, window_start: now, violations: 0 }
    }

    /// A frame arrived at `now`.
    pub fn on_frame(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.cfg.rate_per_sec).min(self.cfg.burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Verdict::Allow
        } else {
            match self.on_violation(now) {
                Verdict::Close => Verdict::Close,
                _ => Verdict::Limited,
            }
        }
    }

    /// A frame was refused (invalid or rate-limited) at `now`.
    pub fn on_violation(&mut self, now: Instant) -> Verdict {
        if now.saturating_duration_since(self.window_start) > self.cfg.window {
            self.window_start = now;
            self.violations = 0;
        }
        self.violations += 1;
        if self.violations > self.cfg.max_violations { Verdict::Close } else { Verdict::Allow }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GuardConfig {
        GuardConfig { rate_per_sec: 10.0, burst: 5.0, max_violations: 3, window: Duration::from_secs(10) }
    }

    #[test]
    fn bursts_are_allowed_then_limited_then_refilled() {
        let t0 = Instant::now();
        let mut g = ConnGuard::new(cfg(), t0);
        for _ in 0..5 {
            assert_eq!(g.on_frame(t0), Verdict::Allow);
        }
        assert_eq!(g.on_frame(t0), Verdict::Limited);
        assert_eq!(g.on_frame(t0 + Duration::from_millis(100)), Verdict::Allow, "one token per 100 ms");
    }

    #[test]
    fn sustained_abuse_closes_occasional_mistakes_do_not() {
        let t0 = Instant::now();
        let mut g = ConnGuard::new(cfg(), t0);
        for i in 0..3 {
            assert_eq!(g.on_violation(t0 + Duration::from_secs(i)), Verdict::Allow);
        }
        // A new window forgives.
        assert_eq!(g.on_violation(t0 + Duration::from_secs(11)), Verdict::Allow);
        for _ in 0..2 {
            assert_eq!(g.on_violation(t0 + Duration::from_secs(12)), Verdict::Allow);
        }
        assert_eq!(g.on_violation(t0 + Duration::from_secs(12)), Verdict::Close);
    }

    #[test]
    fn flooding_ends_in_close() {
        let t0 = Instant::now();
        let mut g = ConnGuard::new(cfg(), t0);
        let verdicts: Vec<Verdict> = (0..10).map(|_| g.on_frame(t0)).collect();
        assert_eq!(&verdicts[..5], &[Verdict::Allow; 5]);
        assert_eq!(&verdicts[5..8], &[Verdict::Limited; 3]);
        assert_eq!(verdicts[8], Verdict::Close);
    }
}
