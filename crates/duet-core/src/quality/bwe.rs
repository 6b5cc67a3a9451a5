//! The bandwidth estimator: webrtc-rs's delay trend, overuse detector and loss-based controller
//! (transport-wide feedback in, the same signals as its GCC), with Duet's own rate controller.
//!
//! Measured against webrtc-rs's `Gcc` (the simulated link in `tests.rs`, and namespaces with
//! `tc tbf` in `duet-cli/tests/netns.rs`): after one backoff its controller treats every rate
//! above 85 % of that backoff's as "near the ceiling" and climbs by one packet per 200 ms for
//! the rest of the call (about 50 kb/s per second: 14 s from 300 kb/s to 1 Mb/s after a cap is
//! lifted). [`Aimd`] keeps the ceiling as a mean and deviation of the rates seen at backoffs, as
//! libwebrtc's AIMD does: additive only within three deviations of it, and once past that the
//! ceiling is forgotten (the link got better) and growth is multiplicative, faster while no
//! overuse has been seen for a while.

use std::time::{Duration, Instant};

use rtc::interceptor::{
    BandwidthEstimator, EstimatorStats, LossController, OveruseDetector, PacketReport, RateCalculator,
    RateControlState, SlopeEstimator, Usage,
};

/// Backoff: the new target is this share of the received rate.
pub const DECREASE_FACTOR: f64 = 0.85;
/// Multiplicative growth per second shortly after an overuse.
pub const SLOW_GROWTH: f64 = 1.08;
/// Multiplicative growth per second once no overuse has been seen for [`CALM_AFTER`].
pub const FAST_GROWTH: f64 = 1.25;
/// See [`FAST_GROWTH`].
pub const CALM_AFTER: Duration = Duration::from_secs(2);
/// Additive growth near the ceiling: one 1200-byte packet per [`INTERVAL`].
const ADDITIVE_BITS: f64 = 1200.0 * 8.0;
/// Changes (other than backoffs) at most this often, so each one is seen before the next.
pub const INTERVAL: Duration = Duration::from_millis(200);
/// The ceiling's deviation is at least this share of its mean.
const MIN_DEVIATION: f64 = 0.05;

/// Delay-based AIMD rate control with a remembered ceiling.
#[derive(Debug, Clone)]
pub struct Aimd {
    state: RateControlState,
    target: f64,
    min: f64,
    max: f64,
    /// Mean and variance (bit/s) of the received rate at recent backoffs.
    ceiling: Option<(f64, f64)>,
    last_change: Option<Instant>,
    last_overuse: Option<Instant>,
}

impl Aimd {
    /// Starts at `initial`, within `min..=max` (bit/s).
    pub fn new(initial: f64, min: f64, max: f64) -> Self {
        Self {
            state: RateControlState::default(),
            target: initial.clamp(min, max),
            min,
            max,
            ceiling: None,
            last_change: None,
            last_overuse: None,
        }
    }

    /// The target, bit/s.
    pub fn target(&self) -> f64 {
        self.target
    }

    /// Takes the overuse signal and the received rate (bit/s, if known) at `now`.
    pub fn update(&mut self, now: Instant, usage: Usage, received: Option<f64>) -> f64 {
        self.state = self.state.next(usage);
        if self.state != RateControlState::Decrease
            && self.last_change.is_some_and(|t| now.saturating_duration_since(t) < INTERVAL)
        {
            return self.target;
        }
        match self.state {
            RateControlState::Hold => {}
            RateControlState::Decrease => {
                let Some(received) = received else { return self.target };
                self.last_overuse = Some(now);
                self.remember_ceiling(received);
                self.target = (received * DECREASE_FACTOR).min(self.target).clamp(self.min, self.max);
                self.last_change = Some(now);
            }
            RateControlState::Increase => {
                let elapsed = self.last_change.map_or(INTERVAL, |t| now.saturating_duration_since(t)).min(INTERVAL * 5);
                if let Some((mean, var)) = self.ceiling {
                    let deviation = var.sqrt().max(mean * MIN_DEVIATION);
                    if self.target > mean + 3.0 * deviation {
                        // Well past the old ceiling without congestion: the link changed.
                        self.ceiling = None;
                    }
                }
                self.target = match self.ceiling {
                    Some(_) => self.target + ADDITIVE_BITS * elapsed.as_secs_f64() / INTERVAL.as_secs_f64(),
                    None => {
                        let calm = self.last_overuse.is_none_or(|t| now.saturating_duration_since(t) >= CALM_AFTER);
                        let growth = if calm { FAST_GROWTH } else { SLOW_GROWTH };
                        self.target * growth.powf(elapsed.as_secs_f64())
                    }
                }
                .clamp(self.min, self.max);
                self.last_change = Some(now);
            }
        }
        self.target
    }

    /// A probe measured that the link carries `rate` (bit/s): the target rises to it if lower,
    /// and the remembered ceiling, which the link has just shown to be gone, is forgotten.
    pub fn raise_to(&mut self, now: Instant, rate: f64) {
        if rate > self.target {
            self.target = rate.clamp(self.min, self.max);
            self.ceiling = None;
            self.last_change = Some(now);
        }
    }

    /// Folds a backoff's received rate into the ceiling (a new one far from it starts afresh).
    fn remember_ceiling(&mut self, received: f64) {
        self.ceiling = Some(match self.ceiling {
            Some((mean, var)) if (received - mean).abs() <= 3.0 * var.sqrt().max(mean * MIN_DEVIATION) => {
                let mean = 0.95 * mean + 0.05 * received;
                (mean, 0.95 * var + 0.05 * (received - mean).powi(2))
            }
            _ => (received, 0.0),
        });
    }
}

/// The estimator the peer connection's congestion control runs (see the module text).
#[derive(Debug)]
pub struct Estimator {
    slope: SlopeEstimator,
    detector: OveruseDetector,
    rate: RateCalculator,
    delay: Aimd,
    loss: LossController,
    min: f64,
    max: f64,
    target: f64,
}

impl Estimator {
    /// Starts at `initial`, within `min..=max` (bit/s).
    pub fn new(initial: f64, min: f64, max: f64) -> Self {
        let initial = initial.clamp(min, max);
        Self {
            slope: SlopeEstimator::new(),
            detector: OveruseDetector::new(),
            rate: RateCalculator::default(),
            delay: Aimd::new(initial, min, max),
            loss: LossController::new(initial, min, max),
            min,
            max,
            target: initial,
        }
    }
}

impl Estimator {
    /// A probe measured that the link carries `rate` (bit/s, see [`super::probe`]): both the
    /// delay-based and the loss-based targets rise to it if lower. Only an application-limited
    /// sender probes, so neither had the traffic to find this out.
    pub fn on_probe_result(&mut self, now: Instant, rate: f64) {
        self.delay.raise_to(now, rate);
        if self.loss.target() < rate {
            self.loss = LossController::new(rate, self.min, self.max);
        }
        self.target = self.delay.target().min(self.loss.target()).clamp(self.min, self.max);
    }
}

impl BandwidthEstimator for Estimator {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        if reports.is_empty() {
            return;
        }
        let mut usage = self.detector.usage();
        for report in reports {
            if report.arrived {
                self.rate.add(now, report.size);
            }
            if let Some(trend) = self.slope.accumulate(report) {
                usage = self.detector.update(trend.at, trend.estimate_ms);
            }
        }
        let received = self.rate.rate_bits_per_second(now);
        let delay = self.delay.update(now, usage, received);
        let lost = reports.iter().filter(|r| !r.arrived).count();
        let loss = self.loss.update(now, lost, reports.len());
        self.target = delay.min(loss).clamp(self.min, self.max);
    }

    fn target_bitrate(&self) -> f64 {
        self.target
    }

    fn stats(&self) -> EstimatorStats {
        let mut stats = EstimatorStats::default();
        stats.delay_based_bitrate = Some(self.delay.target());
        stats.loss_based_bitrate = Some(self.loss.target());
        stats.packet_loss = self.loss.average_loss();
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn overuse_backs_off_from_the_received_rate() {
        let t0 = Instant::now();
        let mut a = Aimd::new(1_000_000.0, 30_000.0, 5_000_000.0);
        assert_eq!(a.update(t0, Usage::Over, Some(400_000.0)), 340_000.0);
    }

    #[test]
    fn near_the_last_ceiling_growth_is_additive_and_past_it_multiplicative_again() {
        let t0 = Instant::now();
        let mut a = Aimd::new(1_000_000.0, 30_000.0, 5_000_000.0);
        a.update(t0, Usage::Over, Some(300_000.0));
        a.update(at(t0, 10), Usage::Normal, None);
        // One second of quiet near 300 kb/s: about 48 kb/s more.
        for i in 1..=5 {
            a.update(at(t0, 10 + i * 200), Usage::Normal, None);
        }
        let after_1s = a.target();
        assert!((255_000.0 + 40_000.0..255_000.0 + 60_000.0).contains(&after_1s), "{after_1s}");
        // The cap is gone: within 7 s more it is above 1 Mb/s.
        for i in 6..=40 {
            a.update(at(t0, 10 + i * 200), Usage::Normal, None);
        }
        assert!(a.target() > 1_000_000.0, "{}", a.target());
    }

    #[test]
    fn growth_is_slow_right_after_an_overuse_and_fast_once_calm() {
        let t0 = Instant::now();
        let mut a = Aimd::new(500_000.0, 30_000.0, 50_000_000.0);
        // No ceiling yet (first backoff forgotten once past it); compare one second of growth
        // just after an overuse and one later.
        a.update(t0, Usage::Over, Some(100_000.0));
        a.ceiling = None;
        a.update(at(t0, 10), Usage::Normal, None);
        let start = a.target();
        for i in 1..=5 {
            a.update(at(t0, 10 + i * 200), Usage::Normal, None);
        }
        let early = a.target() / start;
        for i in 6..=10 {
            a.update(at(t0, 10 + i * 200), Usage::Normal, None);
        }
        // From 2.2 s on, two calm seconds.
        let before = a.target();
        for i in 11..=20 {
            a.update(at(t0, 10 + i * 200), Usage::Normal, None);
        }
        let late_per_s = (a.target() / before).powf(1.0 / 2.0);
        assert!(early < 1.10, "{early}");
        assert!(late_per_s > 1.2, "{late_per_s}");
    }

    #[test]
    fn a_probe_raises_both_targets_and_forgets_the_ceiling() {
        let t0 = Instant::now();
        let mut e = Estimator::new(1_000_000.0, 30_000.0, 5_000_000.0);
        e.delay.update(t0, Usage::Over, Some(50_000.0));
        e.loss = LossController::new(60_000.0, 30_000.0, 5_000_000.0);
        e.on_probe_result(at(t0, 100), 1_200_000.0);
        assert_eq!(e.target_bitrate(), 1_200_000.0);
        assert!(e.delay.ceiling.is_none());
        // A probe below the target changes nothing.
        e.on_probe_result(at(t0, 200), 400_000.0);
        assert_eq!(e.target_bitrate(), 1_200_000.0);
    }

    #[test]
    fn underuse_holds_and_the_target_stays_within_bounds() {
        let t0 = Instant::now();
        let mut a = Aimd::new(200_000.0, 100_000.0, 300_000.0);
        assert_eq!(a.update(t0, Usage::Under, Some(50_000.0)), 200_000.0);
        a.update(at(t0, 300), Usage::Over, Some(10_000.0));
        assert_eq!(a.target(), 100_000.0);
        for i in 0..100 {
            a.update(at(t0, 600 + i * 200), Usage::Normal, None);
        }
        assert_eq!(a.target(), 300_000.0);
    }
}
