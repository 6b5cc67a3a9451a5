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
//!
//! A shallow tail-drop queue (`tc tbf ... latency 100ms`, a home router) defeats both of GCC's
//! signals: once the queue is full the delay stops growing (no trend, no overuse), and the loss
//! it causes, a few per cent, is inside the loss controller's 2-10 % "hold" band. Measured at a
//! 300 kb/s cap: the sender sat at 310-320 kb/s for 3 s while the partner's video fell from 30
//! to 3 fps. So loss that comes with a standing queue (this batch's one-way delay
//! [`CONGESTION_QUEUE`] over the lowest of the last [`MIN_DELAY_WINDOW`]) is congestion: the
//! target backs off to [`LOSS_DECREASE`] of the received rate. Loss on an empty queue (a lossy
//! radio) is left to the loss controller.

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
/// Growth stops at this many times the received rate (plus [`RECEIVED_SLACK_BPS`]), as in
/// libwebrtc's AIMD: a sender that sends less than the target (an encoder under its rung's
/// ceiling, audio-only) proves nothing about the rates above, and the pacer sends keyframes at
/// the target. Measured at a 300 kb/s cap without this: the target drifted to 1.4 Mb/s while
/// 200 kb/s went through. Probes (see [`super::probe`]) raise it past this bound.
pub const RECEIVED_LIMIT: f64 = 2.0;
/// See [`RECEIVED_LIMIT`].
pub const RECEIVED_SLACK_BPS: f64 = 10_000.0;
/// Loss in a feedback batch, and on average, from which, with a standing queue, the target
/// backs off.
pub const CONGESTION_LOSS: f64 = 0.02;
/// A batch's mean one-way delay this far over the recent lowest is a standing queue.
pub const CONGESTION_QUEUE: Duration = Duration::from_millis(40);
/// The lowest one-way delay is taken over this window.
pub const MIN_DELAY_WINDOW: Duration = Duration::from_secs(30);
/// A batch that arrived at under this share of the received rate is a collapse of the link:
/// congestion loss then backs off from the batch's rate.
pub const COLLAPSE: f64 = 0.5;
/// A backoff for congestion loss: the new target is this share of the received rate.
pub const LOSS_DECREASE: f64 = 0.9;

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
                let grown = match self.ceiling {
                    Some(_) => self.target + ADDITIVE_BITS * elapsed.as_secs_f64() / INTERVAL.as_secs_f64(),
                    None => {
                        let calm = self.last_overuse.is_none_or(|t| now.saturating_duration_since(t) >= CALM_AFTER);
                        let growth = if calm { FAST_GROWTH } else { SLOW_GROWTH };
                        self.target * growth.powf(elapsed.as_secs_f64())
                    }
                };
                let limit = received.map_or(f64::INFINITY, |r| r * RECEIVED_LIMIT + RECEIVED_SLACK_BPS);
                self.target = grown.min(limit.max(self.target)).clamp(self.min, self.max);
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

    /// Loss with a standing queue at `now`: the target backs off to [`LOSS_DECREASE`] of the
    /// received rate, as an overuse would (at most once per [`INTERVAL`]).
    pub fn congestion_loss(&mut self, now: Instant, received: f64) {
        if self.last_overuse.is_some_and(|t| now.saturating_duration_since(t) < INTERVAL) {
            return;
        }
        self.last_overuse = Some(now);
        self.remember_ceiling(received);
        self.target = (received * LOSS_DECREASE).min(self.target).clamp(self.min, self.max);
        self.last_change = Some(now);
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
    queue: QueueDelay,
    min: f64,
    max: f64,
    target: f64,
}

/// One-way delay (receiver's arrival clock minus departure, up to a constant) over time, to tell
/// a standing queue from an empty one.
#[derive(Debug, Default)]
struct QueueDelay {
    epoch: Option<Instant>,
    /// Per batch: when, and its lowest one-way delay (s).
    lows: std::collections::VecDeque<(Instant, f64)>,
}

impl QueueDelay {
    /// Takes a batch's arrived reports; returns its mean queueing delay over the window's lowest,
    /// and the rate (bit/s) at which the batch arrived (over its span less its last packet).
    fn batch(&mut self, now: Instant, reports: &[PacketReport]) -> Option<(Duration, Option<f64>)> {
        let epoch = *self.epoch.get_or_insert_with(|| reports.iter().map(|r| r.departure).min().unwrap_or(now));
        let delays: Vec<f64> = reports
            .iter()
            .filter_map(|r| {
                let arrival = r.arrival.filter(|_| r.arrived)?;
                Some(arrival.as_secs_f64() - r.departure.saturating_duration_since(epoch).as_secs_f64())
            })
            .collect();
        let low = delays.iter().copied().reduce(f64::min)?;
        self.lows.push_back((now, low));
        while self.lows.front().is_some_and(|(t, _)| now.saturating_duration_since(*t) > MIN_DELAY_WINDOW) {
            self.lows.pop_front();
        }
        let floor = self.lows.iter().map(|l| l.1).fold(f64::INFINITY, f64::min);
        let mean = delays.iter().sum::<f64>() / delays.len() as f64;
        let arrivals: Vec<(Duration, usize)> =
            reports.iter().filter_map(|r| r.arrival.filter(|_| r.arrived).map(|a| (a, r.size))).collect();
        let first = arrivals.iter().map(|a| a.0).min()?;
        let (last, last_size) = arrivals.iter().max_by_key(|a| a.0).copied()?;
        let span = last.saturating_sub(first).as_secs_f64();
        let bytes = arrivals.iter().map(|a| a.1).sum::<usize>() - last_size;
        let rate = (span >= 0.02).then(|| bytes as f64 * 8.0 / span);
        Some((Duration::from_secs_f64((mean - floor).max(0.0)), rate))
    }
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
            queue: QueueDelay::default(),
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
        let lost = reports.iter().filter(|r| !r.arrived).count();
        let queued = self.queue.batch(now, reports);
        let loss = self.loss.update(now, lost, reports.len());
        let lossy = self.loss.average_loss().is_some_and(|l| l >= CONGESTION_LOSS);
        // The rate averaged over the last window still counts what went through before a
        // collapse; this batch's own arrival rate does not (taken only when under half of it:
        // a batch's rate is noisy, a sender's pauses inside it count as idle link).
        let batch_rate = queued.and_then(|q| q.1).filter(|b| received.is_some_and(|r| *b < r * COLLAPSE));
        if lost as f64 >= reports.len() as f64 * CONGESTION_LOSS
            && lossy
            && let Some((queue, _)) = queued.filter(|q| q.0 >= CONGESTION_QUEUE)
            && let Some(received) = received.map(|r| batch_rate.map_or(r, |b| b.min(r)))
        {
            tracing::debug!(
                lost,
                of = reports.len(),
                queue_ms = queue.as_millis() as u64,
                received_kbps = (received / 1000.0) as u64,
                "congestion loss"
            );
            self.delay.congestion_loss(now, received);
        }
        let delay = self.delay.update(now, usage, received);
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

    fn report(id: u64, departure: Instant, arrival_ms: Option<u64>) -> PacketReport {
        PacketReport {
            ssrc: 1,
            id,
            rtp_sequence_number: id as u16,
            is_twcc: true,
            twcc_sequence_number: id as u16,
            size: 1000,
            arrived: arrival_ms.is_some(),
            departure,
            arrival: arrival_ms.map(Duration::from_millis),
            ecn: Default::default(),
        }
    }

    /// Feeds `batches` of 20 packets 10 ms apart, each batch 100 ms after the last: every
    /// `lose_every`-th packet lost, each arriving `queue_ms(batch)` after an empty-link delay.
    fn run(e: &mut Estimator, t0: Instant, batches: u64, lose_every: u64, queue_ms: impl Fn(u64) -> u64) {
        let mut id = 0;
        for b in 0..batches {
            let mut reports = Vec::new();
            for _ in 0..20 {
                let sent = id * 5;
                let arrival = (id % lose_every != 0).then_some(sent + 20 + queue_ms(b));
                reports.push(report(id, at(t0, sent), arrival));
                id += 1;
            }
            e.on_reports(at(t0, b * 100 + 100), &reports);
        }
    }

    #[test]
    fn loss_with_a_standing_queue_backs_off_and_loss_on_an_empty_one_does_not() {
        let t0 = Instant::now();
        // 5 % loss, the queue full from the fourth batch on (its delay flat, no trend).
        let mut congested = Estimator::new(3_000_000.0, 30_000.0, 5_000_000.0);
        run(&mut congested, t0, 30, 20, |b| if b < 3 { 0 } else { 100 });
        // The same loss on a link that queues nothing.
        let mut lossy = Estimator::new(3_000_000.0, 30_000.0, 5_000_000.0);
        run(&mut lossy, t0, 30, 20, |_| 0);
        // 20 packets of 1,000 bytes per 100 ms: received under 2 Mb/s.
        assert!(congested.target_bitrate() < 2_000_000.0, "{}", congested.target_bitrate());
        assert!(lossy.target_bitrate() > 2_500_000.0, "{}", lossy.target_bitrate());
    }

    #[test]
    fn the_target_grows_no_further_than_one_and_a_half_times_what_is_received() {
        let t0 = Instant::now();
        let mut a = Aimd::new(300_000.0, 30_000.0, 5_000_000.0);
        for i in 0..50 {
            a.update(at(t0, i * 200), Usage::Normal, Some(200_000.0));
        }
        assert_eq!(a.target(), 410_000.0);
        // Above the bound already: it holds there, never falls for it.
        let mut b = Aimd::new(1_000_000.0, 30_000.0, 5_000_000.0);
        b.update(t0, Usage::Normal, Some(200_000.0));
        assert_eq!(b.target(), 1_000_000.0);
        // Without a received rate yet, growth is free.
        let mut c = Aimd::new(300_000.0, 30_000.0, 5_000_000.0);
        for i in 0..10 {
            c.update(at(t0, i * 200), Usage::Normal, None);
        }
        assert!(c.target() > 400_000.0);
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
