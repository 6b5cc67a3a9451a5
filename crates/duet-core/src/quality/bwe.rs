//! The bandwidth estimator: webrtc-rs's packet grouping and loss-based controller over
//! transport-wide feedback, with Duet's own delay trend ([`Trendline`]) and rate controller.
//!
//! Measured against webrtc-rs's `Gcc` (the simulated link in `tests.rs`, and namespaces with
//! `tc tbf` in `duet-cli/tests/netns.rs`): after one backoff its controller treats every rate
//! above 85 % of that backoff's as "near the ceiling" and climbs by one packet per 200 ms for
//! the rest of the call (about 50 kb/s per second: 14 s from 300 kb/s to 1 Mb/s after a cap is
//! lifted). [`Aimd`] keeps the ceiling as a mean and deviation of the rates seen at backoffs, as
//! libwebrtc's AIMD does: additive only within three deviations of it, and once past that the
//! ceiling is forgotten (the link got better) and growth is multiplicative, faster while no
//! overuse has been seen for a while.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rtc::interceptor::{
    ArrivalGroupAccumulator, BandwidthEstimator, EstimatorStats, InterGroupDelay, LossController, PacketReport,
    RateCalculator, RateControlState, Usage,
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

/// Delay samples the trend line is fitted over.
const TREND_WINDOW: usize = 20;
/// Smoothing of the accumulated delay before the fit.
const TREND_SMOOTHING: f64 = 0.9;
/// The fitted slope is scaled by the number of samples (up to [`TREND_MIN_DELTAS`]) and this
/// gain before it is compared with the threshold.
const TREND_GAIN: f64 = 4.0;
/// See [`TREND_GAIN`].
const TREND_MIN_DELTAS: u32 = 60;
/// The adaptive threshold (ms): where it starts, its bounds, and how fast it follows the trend
/// up (outside it) and down (inside it), per ms.
const THRESHOLD_START: f64 = 12.5;
const THRESHOLD_MIN: f64 = 6.0;
const THRESHOLD_MAX: f64 = 600.0;
const THRESHOLD_UP: f64 = 0.0087;
const THRESHOLD_DOWN: f64 = 0.039;
/// A trend this far above the threshold is a spike: the threshold does not follow it.
const THRESHOLD_MAX_ADAPT: f64 = 15.0;
/// Overuse is declared once the trend has been over the threshold this long (and rising).
const OVERUSE_TIME_MS: f64 = 10.0;

/// The delay-based overuse detector: a line fitted through the smoothed accumulated delay of
/// the last [`TREND_WINDOW`] packet groups, its slope compared with an adaptive threshold
/// (libwebrtc's trendline estimator, from its published design).
///
/// It replaces webrtc-rs's Kalman filter and detector, which compare the filtered delay change
/// per group (a fraction of a millisecond while a queue builds behind a 300 kb/s shaper) with a
/// threshold meant for a scaled trend: on simulated time behind a `tc tbf`-like shaper they
/// never declared overuse, so only loss backed the estimate off, once the shaper's queue had
/// filled (in namespaces, round trips of 200-450 ms stood under a 300 kb/s cap).
#[derive(Debug, Clone)]
pub struct Trendline {
    first: Option<Instant>,
    last: Option<Instant>,
    accumulated: f64,
    smoothed: f64,
    deltas: u32,
    samples: VecDeque<(f64, f64)>,
    threshold: f64,
    threshold_at: Option<Instant>,
    over_ms: Option<f64>,
    over_count: u32,
    prev_trend: f64,
    usage: Usage,
}

impl Default for Trendline {
    fn default() -> Self {
        Self {
            first: None,
            last: None,
            accumulated: 0.0,
            smoothed: 0.0,
            deltas: 0,
            samples: VecDeque::new(),
            threshold: THRESHOLD_START,
            threshold_at: None,
            over_ms: None,
            over_count: 0,
            prev_trend: 0.0,
            usage: Usage::Normal,
        }
    }
}

impl Trendline {
    /// The current verdict.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// Takes the delay change between two packet groups; returns the verdict.
    pub fn update(&mut self, delay: InterGroupDelay) -> Usage {
        let first = *self.first.get_or_insert(delay.at);
        let since_last_ms = self.last.map_or(0.0, |l| delay.at.saturating_duration_since(l).as_secs_f64() * 1000.0);
        self.last = Some(delay.at);
        self.deltas = self.deltas.saturating_add(1);
        self.accumulated += delay.delta_ms;
        self.smoothed = TREND_SMOOTHING * self.smoothed + (1.0 - TREND_SMOOTHING) * self.accumulated;
        let t_ms = delay.at.saturating_duration_since(first).as_secs_f64() * 1000.0;
        self.samples.push_back((t_ms, self.smoothed));
        if self.samples.len() > TREND_WINDOW {
            self.samples.pop_front();
        }
        let trend = if self.samples.len() == TREND_WINDOW { slope(&self.samples) } else { None };
        let trend = trend.unwrap_or(self.prev_trend);
        self.detect(trend, since_last_ms, delay.at);
        self.usage
    }

    fn detect(&mut self, trend: f64, since_last_ms: f64, now: Instant) {
        let modified = f64::from(self.deltas.min(TREND_MIN_DELTAS)) * trend * TREND_GAIN;
        if modified > self.threshold {
            let over = self.over_ms.map_or(since_last_ms / 2.0, |o| o + since_last_ms);
            self.over_count += 1;
            if over > OVERUSE_TIME_MS && self.over_count > 1 && trend >= self.prev_trend {
                self.over_ms = Some(0.0);
                self.over_count = 0;
                self.usage = Usage::Over;
            } else {
                self.over_ms = Some(over);
            }
        } else {
            self.over_ms = None;
            self.over_count = 0;
            self.usage = if modified < -self.threshold { Usage::Under } else { Usage::Normal };
        }
        self.prev_trend = trend;
        self.adapt_threshold(modified, now);
    }

    fn adapt_threshold(&mut self, modified: f64, now: Instant) {
        let last = *self.threshold_at.get_or_insert(now);
        self.threshold_at = Some(now);
        if modified.abs() > self.threshold + THRESHOLD_MAX_ADAPT {
            return;
        }
        let k = if modified.abs() < self.threshold { THRESHOLD_DOWN } else { THRESHOLD_UP };
        let dt_ms = (now.saturating_duration_since(last).as_secs_f64() * 1000.0).min(100.0);
        self.threshold =
            (self.threshold + k * (modified.abs() - self.threshold) * dt_ms).clamp(THRESHOLD_MIN, THRESHOLD_MAX);
    }
}

/// The least-squares slope of `points` (`None` if they share one x).
fn slope(points: &VecDeque<(f64, f64)>) -> Option<f64> {
    let n = points.len() as f64;
    let (mx, my) = points.iter().fold((0.0, 0.0), |(x, y), p| (x + p.0 / n, y + p.1 / n));
    let (num, den) = points.iter().fold((0.0, 0.0), |(a, b), p| (a + (p.0 - mx) * (p.1 - my), b + (p.0 - mx).powi(2)));
    (den > 0.0).then(|| num / den)
}

/// The trend's overuse counts only while the queue is at least this deep (ms over the least
/// one-way delay of the last [`BASE_DELAY_WINDOW`]).
pub const QUEUE_GATE_MS: f64 = 25.0;
/// See [`QUEUE_GATE_MS`].
const BASE_DELAY_WINDOW: Duration = Duration::from_secs(10);

/// How much longer than the fastest packet of the last [`BASE_DELAY_WINDOW`] the packets of a
/// feedback batch took (the least of them; the clocks' offset cancels out).
///
/// A token-bucket shaper passes a burst at line rate and then spaces packets at its rate, so
/// the delay between packet groups swings by ten milliseconds and more with no queue behind it:
/// in namespaces under `tc tbf` the trend line crossed its threshold every second or so on those
/// swings alone and held the sender at 44 % of a 300 kb/s cap. A queue that is building (or
/// stands) delays every packet of a batch.
#[derive(Debug, Default)]
pub struct QueueDelay {
    epoch: Option<Instant>,
    /// Per second of departures: the least one-way delay (ms on the receiver's clock less ms
    /// since `epoch` on ours).
    minima: VecDeque<(Instant, f64)>,
}

impl QueueDelay {
    /// The queue (ms) the packets of this batch found, if any of them arrived.
    pub fn update(&mut self, reports: &[PacketReport]) -> Option<f64> {
        let epoch = *self.epoch.get_or_insert(reports.first()?.departure);
        let mut least: Option<(Instant, f64)> = None;
        for r in reports {
            let Some(arrival) = r.arrival.filter(|_| r.arrived) else { continue };
            let delay = (arrival.as_secs_f64() - r.departure.saturating_duration_since(epoch).as_secs_f64()) * 1000.0;
            if least.is_none_or(|(_, d)| delay < d) {
                least = Some((r.departure, delay));
            }
        }
        let (at, least) = least?;
        match self.minima.back_mut() {
            Some((start, min)) if at.saturating_duration_since(*start) < Duration::from_secs(1) => {
                *min = min.min(least)
            }
            _ => self.minima.push_back((at, least)),
        }
        while self.minima.front().is_some_and(|(t, _)| at.saturating_duration_since(*t) > BASE_DELAY_WINDOW) {
            self.minima.pop_front();
        }
        let base = self.minima.iter().map(|m| m.1).fold(f64::INFINITY, f64::min);
        Some(least - base)
    }
}

/// The estimator the peer connection's congestion control runs (see the module text).
#[derive(Debug)]
pub struct Estimator {
    groups: ArrivalGroupAccumulator,
    trend: Trendline,
    queue: QueueDelay,
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
            groups: ArrivalGroupAccumulator::default(),
            trend: Trendline::default(),
            queue: QueueDelay::default(),
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
        let mut usage = self.trend.usage();
        for report in reports {
            if report.arrived {
                self.rate.add(now, report.size);
            }
            if let Some(delay) = self.groups.accumulate(report) {
                usage = self.trend.update(delay);
            }
        }
        // A trend without a queue behind it is a shaper's bursts, not congestion.
        let queue = self.queue.update(reports);
        if usage == Usage::Over && queue.is_none_or(|q| q < QUEUE_GATE_MS) {
            usage = Usage::Normal;
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

    /// Feeds `groups` packet groups 10 ms apart, the n-th with delay change `delta(n)` ms;
    /// returns the verdict after each.
    fn trend_over(t0: Instant, groups: u64, delta: impl Fn(u64) -> f64) -> Vec<Usage> {
        let mut trend = Trendline::default();
        (0..groups)
            .map(|n| trend.update(InterGroupDelay { delta_ms: delta(n), at: at(t0, n * 10), size: 1200 }))
            .collect()
    }

    #[test]
    fn a_queue_building_slowly_reads_as_overuse_within_half_a_second() {
        // 0.5 ms more delay per 10 ms group: a sender 5 % over a shaper's rate.
        let verdicts = trend_over(Instant::now(), 100, |_| 0.5);
        let first = verdicts.iter().position(|u| *u == Usage::Over);
        assert!(first.is_some_and(|n| n <= 50), "{first:?}");
    }

    #[test]
    fn jitter_without_a_trend_is_never_overuse() {
        // +-4 ms of jitter, alternating, around a standing delay.
        let verdicts = trend_over(Instant::now(), 1000, |n| if n % 2 == 0 { 4.0 } else { -4.0 });
        assert!(!verdicts.contains(&Usage::Over));
    }

    #[test]
    fn a_draining_queue_reads_as_underuse() {
        let verdicts = trend_over(Instant::now(), 100, |n| if n < 40 { 0.0 } else { -1.0 });
        assert_eq!(verdicts.last(), Some(&Usage::Under));
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

    /// Media packet `n`, 1,000 bytes, that left at `departure` and arrived at `arrival`.
    fn packet(n: u64, departure: Instant, arrival: Duration) -> PacketReport {
        PacketReport {
            ssrc: 1,
            id: n,
            rtp_sequence_number: n as u16,
            is_twcc: true,
            twcc_sequence_number: n as u16,
            size: 1000,
            arrived: true,
            departure,
            arrival: Some(arrival),
            ecn: Default::default(),
        }
    }

    /// Packet `n` of 1,000 bytes leaves at `n` x 10 ms and takes 20 ms plus `extra(n)` ms;
    /// feedback every 5 packets. Returns the estimator's target after each batch, with the
    /// extra delay of the batch's last packet.
    fn targets_with_delay(extra: impl Fn(u64) -> f64) -> Vec<(f64, f64)> {
        let t0 = Instant::now();
        let mut e = Estimator::new(1_000_000.0, 30_000.0, 5_000_000.0);
        let mut out = Vec::new();
        let reports = |from: u64| -> Vec<PacketReport> {
            (from..from + 5)
                .map(|n| {
                    packet(n, at(t0, n * 10), Duration::from_secs_f64((n as f64 * 10.0 + 20.0 + extra(n)) / 1000.0))
                })
                .collect()
        };
        for batch in 0..40 {
            let from = batch * 5;
            e.on_reports(at(t0, from * 10 + 80), &reports(from));
            out.push((e.target_bitrate(), extra(from + 4)));
        }
        out
    }

    #[test]
    fn a_delay_trend_backs_off_only_once_a_queue_stands_behind_it() {
        // The queue grows 0.3 ms per packet: the trend sees it long before it is 25 ms deep.
        let targets = targets_with_delay(|n| 0.3 * n as f64);
        let first_backoff = targets.windows(2).position(|w| w[1].0 < w[0].0).map(|i| targets[i + 1].1);
        assert!(first_backoff.is_some_and(|q| q >= QUEUE_GATE_MS), "backed off at {first_backoff:?} ms of queue");
        // Without a queue (the same swings a shaper's bursts make, around no growth) it never
        // backs off.
        let targets = targets_with_delay(|n| if (n / 10) % 2 == 0 { 0.3 * (n % 10) as f64 * 5.0 } else { 0.0 });
        assert!(targets.windows(2).all(|w| w[1].0 >= w[0].0), "{targets:?}");
    }

    #[test]
    fn the_queue_is_the_batch_s_least_delay_over_the_least_of_the_last_10_s() {
        let t0 = Instant::now();
        let report =
            |n: u64, delay_ms: u64| packet(n, at(t0, n * 100), Duration::from_millis(5_000 + n * 100 + delay_ms));
        let mut q = QueueDelay::default();
        assert_eq!(q.update(&[report(0, 30), report(1, 20)]), Some(0.0));
        // One late packet is jitter; a batch all of whose packets wait is a queue.
        assert_eq!(q.update(&[report(2, 80), report(3, 20)]), Some(0.0));
        assert_eq!(q.update(&[report(4, 70), report(5, 60)]), Some(40.0));
        // Lost packets say nothing about delay.
        assert_eq!(q.update(&[PacketReport { arrived: false, arrival: None, ..report(6, 0) }]), None);
        // 10 s on, a path that got 30 ms slower for good is the new base.
        assert_eq!(q.update(&[report(200, 50)]), Some(0.0));
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
