//! The call's quality, decided in one place (sans-IO, simulated-time tests beside it).
//!
//! [`QualityController`] turns the transport's bandwidth estimate, loss and RTT, the user's
//! quality choice, the partner's display size and the source's size into what the sender does:
//! the ladder rung and encoder target ([`ladder`]), the Opus settings ([`opus`]), and whether video
//! is suspended (audio-only) and why. It also computes the [`QualityStatus`] every UI displays
//! as it is: rung, estimate, RTT, loss, bars with the reason, audio-only with its cause on
//! either side. [`pacer`] is the send queue that keeps audio first and the delay bounded.
//! [`keyframe`] throttles keyframe requests both ways. [`probe`] measures the link while the
//! sender is application-limited (video suspended), so that video comes back as soon as a cap is
//! lifted.

pub mod bwe;
pub mod keyframe;
pub mod ladder;
pub mod opus;
pub mod pacer;
pub mod probe;
pub mod retransmit;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

pub use ladder::{LADDER, Ladder, Rung, RungReason};
pub use opus::AudioSettings;
pub use probe::{ProbeCluster, ProbeResult};

use crate::call::Quality;

/// The transport estimate a call starts from, bit/s: enough for the top rung, so a free link
/// starts there (fast start); on a capped link the estimator backs off within about a second,
/// and the pacer keeps audio first and the queue short meanwhile.
pub const START_ESTIMATE_BPS: f64 = 1_500_000.0;
/// The lowest estimate, bit/s (audio-only on a very thin link still needs a rate to pace at).
pub const MIN_ESTIMATE_BPS: f64 = 30_000.0;
/// The highest estimate, bit/s (the top rung plus audio, with room).
pub const MAX_ESTIMATE_BPS: f64 = 3_500_000.0;
/// How long the video budget must stay under the lowest rung before video is suspended ...
pub const SUSPEND_HOLD: Duration = Duration::from_millis(1000);
/// ... or under half of it.
pub const DEEP_SUSPEND_HOLD: Duration = Duration::from_millis(400);
/// Loss (fraction) that makes video useless; held for [`LOSSY_HOLD`] it suspends video.
pub const LOSSY: f64 = 0.30;
/// How long [`LOSSY`] loss must last.
pub const LOSSY_HOLD: Duration = Duration::from_secs(3);
/// Video resumes when the budget reaches the lowest rung's floor times this.
pub const RESUME_MARGIN: f64 = 1.6;
/// ... and has stayed there this long.
pub const RESUME_HOLD: Duration = Duration::from_secs(2);
/// The first wait after a suspension before video may resume; doubled after each resume that
/// did not hold (see [`RESUME_HELD`]), up to [`MAX_RESUME_BACKOFF`].
pub const RESUME_BACKOFF: Duration = Duration::from_secs(3);
/// The longest wait between resume attempts.
pub const MAX_RESUME_BACKOFF: Duration = Duration::from_secs(12);
/// A budget this many times the lowest rung's floor, held for [`RESUME_HOLD`], resumes without
/// waiting out the backoff: the link clearly changed (only where probes cannot be sent: an
/// application-limited sender's estimate has measured nothing).
pub const LINK_CHANGED: f64 = 3.0;
/// Where probes can be sent, they bring video back as soon as the link allows; the estimate
/// alone then resumes only after this many times the backoff (a link the probes cannot read, for
/// want of a burst that hides part of a cluster, or a queue deep enough to carry one slowly).
pub const PROBING_BACKOFF_FACTOR: u32 = 10;
/// A resume counts as held after this long without a new suspension (the backoff resets).
pub const RESUME_HELD: Duration = Duration::from_secs(10);
/// The sender plans with the lowest estimate of this window: an estimator probing upward while
/// the sender is application-limited overshoots the link, and its sawtooth peaks must not raise
/// the encoder's target (decreases still count at once).
pub const STABLE_WINDOW: Duration = Duration::from_secs(2);
/// The estimate acted on is at most the rate the partner acknowledged over [`AckedRate`]'s
/// window times this, plus [`ACKED_SLACK_KBPS`]: an estimator that keeps raising its target
/// while the sender is application-limited has measured nothing, and following it overshoots
/// the link. Sending at the allowed rate probes for more: the allowance grows by this factor
/// per window while the link carries it.
pub const ACKED_FACTOR: f64 = 1.25;
/// See [`ACKED_FACTOR`].
pub const ACKED_SLACK_KBPS: f64 = 40.0;
/// The link is calm when the estimate has not dropped for this long ...
pub const CALM_FOR: Duration = Duration::from_secs(2);
/// ... and then the allowance grows this much per second (see `QualityController::allowed_bps`).
pub const CALM_GROWTH: f64 = 1.25;
/// Share of the estimate the sender plans for (the rest absorbs estimate error and RTCP).
const HEADROOM: f64 = 0.9;
/// IP + UDP + SRTP + RTP header bytes per audio packet.
const AUDIO_OVERHEAD_BYTES: f64 = 50.0;

/// Why video is off in one direction (the `cause` of `duet call --json` `audio_only` events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AudioOnlyCause {
    /// My link cannot carry video.
    Network,
    /// I chose "Audio only".
    Choice,
    /// The partner's link cannot carry video.
    PartnerNetwork,
    /// The partner chose "Audio only".
    PartnerChoice,
}

impl AudioOnlyCause {
    /// The wire name (control messages, events).
    pub fn as_str(self) -> &'static str {
        match self {
            AudioOnlyCause::Network => "network",
            AudioOnlyCause::Choice => "choice",
            AudioOnlyCause::PartnerNetwork => "partner_network",
            AudioOnlyCause::PartnerChoice => "partner_choice",
        }
    }

    /// The same cause seen from the partner's side.
    pub fn for_partner(self) -> Self {
        match self {
            AudioOnlyCause::Network => AudioOnlyCause::PartnerNetwork,
            AudioOnlyCause::Choice => AudioOnlyCause::PartnerChoice,
            other => other,
        }
    }
}

/// What the sender must do now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum QualityOutput {
    /// Send video at this rung (scale, frame rate, encoder bitrate); a keyframe only if the
    /// resolution changed.
    Rung {
        /// The rung.
        rung: Rung,
        /// Encoder target, kbit/s.
        target_kbps: u32,
        /// Why.
        reason: RungReason,
    },
    /// A new encoder target within the rung, kbit/s.
    VideoBitrate(u32),
    /// Video sending stops (`on`: audio-only) or resumes; `cause` is why it was suspended. Tell
    /// the partner.
    AudioOnly {
        /// Suspended now.
        on: bool,
        /// Why it is (or was) suspended.
        cause: AudioOnlyCause,
    },
    /// New Opus settings.
    Audio(AudioSettings),
    /// Send this probe cluster; its [`ProbeResult`] comes back through
    /// [`QualityController::on_probe_result`].
    Probe(ProbeCluster),
}

/// The quality the UIs show, computed here so that none of them infers anything.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QualityStatus {
    /// The rung we send (`None` while video is suspended or off).
    pub rung: Option<&'static str>,
    /// Encoder target, kbit/s.
    pub target_kbps: u32,
    /// Bandwidth estimate, kbit/s.
    pub estimate_kbps: u32,
    /// Round-trip time, ms.
    pub rtt_ms: Option<u32>,
    /// Loss the partner reports on what we send, percent.
    pub loss_pct: f64,
    /// Why our video is suspended, if it is.
    pub audio_only: Option<AudioOnlyCause>,
    /// Why the partner's video is suspended, if it is.
    pub partner_audio_only: Option<AudioOnlyCause>,
    /// The user's choice.
    pub choice: Quality,
    /// 1 (poor) to 4 (excellent).
    pub bars: u8,
    /// Why the bars are what they are, in words.
    pub why: String,
}

/// Decides rung, encoder target, Opus settings and audio-only from measurements over time.
#[derive(Debug)]
pub struct QualityController {
    ladder: Ladder,
    choice: Quality,
    source: (u32, u32, u32),
    view: Option<(u32, u32)>,
    /// The transport's latest estimate, kbit/s.
    estimate_kbps: f64,
    /// The lowest estimate over [`STABLE_WINDOW`], kbit/s: what targets are planned with.
    stable_kbps: f64,
    /// The allowance over the acknowledged rate (bit/s) and when it was set.
    allowed: Option<(f64, Instant)>,
    /// The last raw estimate (bit/s), and when it last dropped.
    last_raw_bps: Option<f64>,
    last_drop: Option<Instant>,
    /// Recent estimates (kbit/s; capped by the acknowledged rate, and not) over [`STABLE_WINDOW`].
    estimates: VecDeque<(Instant, f64, f64)>,
    loss: f64,
    rtt_ms: Option<f64>,
    suspended: Option<AudioOnlyCause>,
    partner_suspended: Option<AudioOnlyCause>,
    starved_since: Option<Instant>,
    lossy_since: Option<Instant>,
    resumable_since: Option<Instant>,
    suspended_at: Option<Instant>,
    resumed_at: Option<Instant>,
    backoff: Duration,
    target_kbps: u32,
    audio: Option<AudioSettings>,
    prober: probe::Prober,
    /// The last rate a probe measured (bit/s), and when.
    probed: Option<(f64, Instant)>,
    /// The best rate measured by the climb of probes under way (bit/s).
    climb_best: Option<f64>,
    /// What Opus is planned on while video is suspended for the network, kbit/s.
    audio_basis_kbps: Option<f64>,
    /// A probe could not be sent (no RTX stream negotiated): the estimate alone resumes video.
    probing_unavailable: bool,
    out: VecDeque<QualityOutput>,
}

impl QualityController {
    /// A controller for a source of `width` x `height` at `fps`, starting with `choice`.
    pub fn new(source: (u32, u32, u32), choice: Quality) -> Self {
        let mut c = Self {
            ladder: Ladder::new(),
            choice,
            source,
            view: None,
            estimate_kbps: 0.0,
            stable_kbps: 0.0,
            allowed: None,
            last_raw_bps: None,
            last_drop: None,
            estimates: VecDeque::new(),
            loss: 0.0,
            rtt_ms: None,
            suspended: None,
            partner_suspended: None,
            starved_since: None,
            lossy_since: None,
            resumable_since: None,
            suspended_at: None,
            resumed_at: None,
            backoff: RESUME_BACKOFF,
            target_kbps: 0,
            audio: None,
            prober: probe::Prober::default(),
            probed: None,
            climb_best: None,
            probing_unavailable: false,
            audio_basis_kbps: None,
            out: VecDeque::new(),
        };
        c.apply_caps();
        if choice == Quality::AudioOnly {
            c.suspend(None, AudioOnlyCause::Choice);
        }
        c
    }

    /// A new peer connection (a fresh one with this partner, or the next partner): what was
    /// measured on the old one no longer holds, so everything starts over as in
    /// [`QualityController::new`], except a suspension for the network. The sender's video is
    /// still off: it resumes, and says so, when the new estimate allows it, like any suspension
    /// (forgotten here, the video stayed off while this controller, and the partner, took it
    /// for on).
    pub fn new_connection(&mut self) {
        let network = self.suspended == Some(AudioOnlyCause::Network);
        *self = Self::new(self.source, self.choice);
        if network && self.suspended.is_none() {
            self.suspended = Some(AudioOnlyCause::Network);
        }
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<QualityOutput> {
        self.out.pop_front()
    }

    /// The user's quality choice.
    pub fn set_choice(&mut self, now: Instant, choice: Quality) {
        let before = self.choice;
        self.choice = choice;
        if choice == Quality::AudioOnly {
            if self.suspended != Some(AudioOnlyCause::Choice) {
                self.suspend(Some(now), AudioOnlyCause::Choice);
            }
            return;
        }
        if before == Quality::AudioOnly && self.suspended == Some(AudioOnlyCause::Choice) {
            self.resume(now);
        }
        self.apply_caps();
    }

    /// The partner's display size for our video (it tells us over the `control` channel).
    pub fn set_partner_view(&mut self, width: u32, height: u32) {
        self.view = Some((width, height));
        self.apply_caps();
    }

    /// The partner suspended (`Some(cause)`, from its side) or resumed its video.
    pub fn set_partner_suspended(&mut self, cause: Option<AudioOnlyCause>) {
        self.partner_suspended = cause.map(AudioOnlyCause::for_partner);
    }

    /// Why the partner's video is suspended, if it is.
    pub fn partner_suspended(&self) -> Option<AudioOnlyCause> {
        self.partner_suspended
    }

    /// Why our video is suspended, if it is.
    pub fn suspended(&self) -> Option<AudioOnlyCause> {
        self.suspended
    }

    /// New measurements at `now`: the transport's estimate and the rate the partner
    /// acknowledged (bit/s; `None` before feedback covers a window), the loss the partner sees
    /// on what we send (fraction) and the RTT (ms). Decides and queues outputs.
    pub fn update(&mut self, now: Instant, estimate_bps: f64, acked_bps: Option<f64>, loss: f64, rtt_ms: Option<f64>) {
        self.decide(now, estimate_bps, acked_bps, loss, rtt_ms);
        self.prober.set_wanted(now, self.suspended == Some(AudioOnlyCause::Network));
        self.poll_probe(now);
    }

    /// A probe cluster was measured. A climb of doubling probes that reached [`probe::MAX_PROBE_BPS`]
    /// measured a free link: its best rate is planned with at once (the estimates so far were
    /// held to what an application-limited sender used) and ends a suspension for the network
    /// without the resume hold and backoff, at the rung that rate allows.
    ///
    /// A climb that stopped short may only have measured a shaper's burst (a `tc tbf` at
    /// 100 kb/s passes a 3,000-byte cluster at line rate), so it is not planned with: it ends a
    /// suspension only once the resume backoff is out, and at the lowest rung, from where the
    /// ladder climbs on what the partner acknowledges. One that fails doubles the backoff.
    pub fn on_probe_result(&mut self, now: Instant, result: ProbeResult) {
        self.prober.on_result(now, result);
        self.probing_unavailable |= !result.sent;
        self.poll_probe(now);
        if let Some(rate) = result.held_rate() {
            self.climb_best = Some(self.climb_best.map_or(rate, |b| b.max(rate)));
        }
        if self.prober.climbing() {
            return;
        }
        let Some(best) = self.climb_best.take() else { return };
        // A climb ends on a held cluster only at the top.
        let reached_top = result.held();
        let lowest = f64::from(Ladder::floor_kbps()) * RESUME_MARGIN;
        let budget = if reached_top {
            self.probed = Some((best, now));
            self.estimates.clear();
            self.audio_basis_kbps = None;
            self.video_budget_kbps(best / 1000.0)
        } else {
            lowest
        };
        let backed_off = reached_top || self.suspended_at.is_none_or(|s| now.duration_since(s) >= self.backoff);
        if self.suspended == Some(AudioOnlyCause::Network)
            && backed_off
            && self.video_budget_kbps(best / 1000.0) >= lowest
            && self.loss < LOSSY / 2.0
        {
            self.resume_video(now, budget);
        }
    }

    fn poll_probe(&mut self, now: Instant) {
        if let Some(cluster) = self.prober.poll(now) {
            self.out.push_back(QualityOutput::Probe(cluster));
        }
    }

    fn decide(&mut self, now: Instant, estimate_bps: f64, acked_bps: Option<f64>, loss: f64, rtt_ms: Option<f64>) {
        let unchecked_kbps = estimate_bps / 1000.0;
        let estimate_bps = estimate_bps.min(self.allowed_bps(now, estimate_bps, acked_bps, loss));
        self.estimates.push_back((now, estimate_bps / 1000.0, unchecked_kbps));
        while self.estimates.front().is_some_and(|(t, ..)| now.duration_since(*t) > STABLE_WINDOW) {
            self.estimates.pop_front();
        }
        self.estimate_kbps = estimate_bps / 1000.0;
        self.stable_kbps = self.estimates.iter().map(|e| e.1).fold(f64::INFINITY, f64::min);
        // Going up (a rung, or out of audio-only) is judged on the estimator alone: the sender
        // is held to what was acknowledged, so that rate cannot show room for more. The switch
        // is itself the probe; one that fails backs off.
        let unchecked = self.estimates.iter().map(|e| e.2).fold(f64::INFINITY, f64::min);
        self.loss = loss.clamp(0.0, 1.0);
        self.rtt_ms = rtt_ms;
        self.update_audio();
        // The ladder and the fallback smooth the raw budget themselves (means, minimums, holds);
        // encoder targets follow the stable one.
        let raw = self.video_budget_kbps(self.estimate_kbps);
        let budget = self.video_budget_kbps(self.stable_kbps);
        let up_budget = self.video_budget_kbps(unchecked);
        match self.suspended {
            Some(AudioOnlyCause::Network) => self.maybe_resume(now, up_budget),
            Some(_) => {}
            None => {
                if self.maybe_suspend(now, raw) {
                    return;
                }
                if let Some((rung, reason)) = self.ladder.update(now, raw, up_budget) {
                    self.target_kbps = target_for(rung, budget);
                    self.out.push_back(QualityOutput::Rung { rung, target_kbps: self.target_kbps, reason });
                } else {
                    let target = target_for(self.ladder.rung(), budget);
                    // Small wobbles do not reconfigure the encoder.
                    if target.abs_diff(self.target_kbps) * 10 > self.target_kbps {
                        self.target_kbps = target;
                        self.out.push_back(QualityOutput::VideoBitrate(target));
                    }
                }
            }
        }
    }

    /// What the UIs show.
    pub fn status(&self) -> QualityStatus {
        let (bars, why) = self.bars();
        QualityStatus {
            rung: self.suspended.is_none().then(|| self.ladder.rung().name),
            target_kbps: if self.suspended.is_none() { self.target_kbps } else { 0 },
            estimate_kbps: self.estimate_kbps as u32,
            rtt_ms: self.rtt_ms.map(|r| r.round() as u32),
            loss_pct: (self.loss * 1000.0).round() / 10.0,
            audio_only: self.suspended,
            partner_audio_only: self.partner_suspended,
            choice: self.choice,
            bars,
            why,
        }
    }

    /// How much of the estimate the sender may act on (bit/s): 1.25 x the acknowledged rate plus
    /// a little, and, while the link is calm (no estimate drop for [`CALM_FOR`], loss under 2 %),
    /// an allowance that grows by [`CALM_GROWTH`] per second towards the estimate, so an encoder
    /// that undershoots its target still climbs after a cap is lifted.
    fn allowed_bps(&mut self, now: Instant, estimate_bps: f64, acked_bps: Option<f64>, loss: f64) -> f64 {
        if self.last_raw_bps.is_some_and(|last| estimate_bps < last * 0.95) {
            self.last_drop = Some(now);
        }
        self.last_raw_bps = Some(estimate_bps);
        let Some(acked) = acked_bps else {
            self.allowed = None;
            return f64::INFINITY;
        };
        // A recent probe measured the link itself.
        let probed = self.probed.filter(|(_, at)| now.duration_since(*at) <= STABLE_WINDOW).map_or(0.0, |p| p.0);
        let floor = (acked * ACKED_FACTOR + ACKED_SLACK_KBPS * 1000.0).max(probed);
        let calm = loss < 0.02 && self.last_drop.is_none_or(|t| now.duration_since(t) >= CALM_FOR);
        let allowed = match self.allowed {
            Some((prev, at)) if calm => floor.max(prev * CALM_GROWTH.powf(now.duration_since(at).as_secs_f64())),
            _ => floor,
        }
        .min(estimate_bps);
        self.allowed = Some((allowed, now));
        allowed
    }

    /// The kbit/s left for video at an estimate once audio and its headers are paid for.
    fn video_budget_kbps(&self, estimate_kbps: f64) -> f64 {
        let audio = self.audio.map_or(40.0, |a| {
            let packets_per_s = 1000.0 / f64::from(a.frame_ms);
            f64::from(a.bitrate_bps) / 1000.0 + packets_per_s * AUDIO_OVERHEAD_BYTES * 8.0 / 1000.0
        });
        (estimate_kbps * HEADROOM - audio).max(0.0)
    }

    /// Opus follows the stable estimate; while video is suspended for the network, the lowest
    /// one since the suspension: the estimator of a sender that only sends audio measures nothing
    /// and drifts up, and audio planned on it would fill the very link that could not carry
    /// video (a probe that holds raises it).
    fn update_audio(&mut self) {
        let basis = if self.suspended == Some(AudioOnlyCause::Network) {
            let lowest = self.audio_basis_kbps.map_or(self.stable_kbps, |b| b.min(self.stable_kbps));
            self.audio_basis_kbps = Some(lowest);
            lowest
        } else {
            self.audio_basis_kbps = None;
            self.stable_kbps
        };
        let settings = opus::settings(basis, self.loss, self.suspended.is_some());
        if self.audio != Some(settings) {
            self.audio = Some(settings);
            self.out.push_back(QualityOutput::Audio(settings));
        }
    }

    fn maybe_suspend(&mut self, now: Instant, budget: f64) -> bool {
        let floor = f64::from(Ladder::floor_kbps());
        let since = if budget < floor { Some(*self.starved_since.get_or_insert(now)) } else { None };
        self.starved_since = since;
        let hold = if budget < floor / 2.0 { DEEP_SUSPEND_HOLD } else { SUSPEND_HOLD };
        let lossy = if self.loss >= LOSSY { Some(*self.lossy_since.get_or_insert(now)) } else { None };
        self.lossy_since = lossy;
        let held = |since: Option<Instant>, hold| since.is_some_and(|s| now.duration_since(s) >= hold);
        if held(since, hold) || held(lossy, LOSSY_HOLD) {
            // A resume that did not hold: wait longer before the next one.
            if self.resumed_at.is_some_and(|r| now.duration_since(r) < RESUME_HELD) {
                self.backoff = (self.backoff * 2).min(MAX_RESUME_BACKOFF);
            } else {
                self.backoff = RESUME_BACKOFF;
            }
            self.suspend(Some(now), AudioOnlyCause::Network);
            return true;
        }
        false
    }

    fn maybe_resume(&mut self, now: Instant, budget: f64) {
        let enough = budget >= f64::from(Ladder::floor_kbps()) * RESUME_MARGIN && self.loss < LOSSY / 2.0;
        if !enough {
            self.resumable_since = None;
            return;
        }
        let since = *self.resumable_since.get_or_insert(now);
        let (changed, backoff) = if self.probing_unavailable {
            (budget >= f64::from(Ladder::floor_kbps()) * LINK_CHANGED, self.backoff)
        } else {
            (false, self.backoff * PROBING_BACKOFF_FACTOR)
        };
        let waited = changed || self.suspended_at.is_none_or(|s| now.duration_since(s) >= backoff);
        if waited && now.duration_since(since) >= RESUME_HOLD {
            // Nothing measured this budget: start at the lowest rung and let the ladder climb
            // on what the link then carries (a keyframe at a high rung into a link that cannot
            // take it would queue the audio behind it).
            self.resume_video(now, budget.min(f64::from(Ladder::floor_kbps()) * RESUME_MARGIN));
        }
    }

    /// Ends a suspension for the network, at the rung the video budget (kbit/s) allows.
    fn resume_video(&mut self, now: Instant, budget: f64) {
        self.resume(now);
        self.ladder = Ladder::new();
        self.apply_caps();
        if let Some((rung, reason)) = self.ladder.update(now, budget, budget) {
            self.target_kbps = target_for(rung, budget);
            self.out.push_back(QualityOutput::Rung { rung, target_kbps: self.target_kbps, reason });
        }
    }

    fn suspend(&mut self, now: Option<Instant>, cause: AudioOnlyCause) {
        self.suspended = Some(cause);
        self.suspended_at = now;
        self.resumable_since = None;
        self.starved_since = None;
        self.lossy_since = None;
        self.out.push_back(QualityOutput::AudioOnly { on: true, cause });
        self.update_audio();
    }

    fn resume(&mut self, now: Instant) {
        let cause = self.suspended.take().unwrap_or(AudioOnlyCause::Network);
        self.resumed_at = Some(now);
        self.out.push_back(QualityOutput::AudioOnly { on: false, cause });
        self.update_audio();
    }

    /// Applies the smallest of the user's choice, the partner's display and the source as the
    /// ladder's cap.
    fn apply_caps(&mut self) {
        let choice = match self.choice {
            Quality::Medium => (640, 360, 30),
            Quality::Low => (320, 180, 15),
            _ => (u32::MAX, u32::MAX, u32::MAX),
        };
        // A display slightly smaller than a rung still gets it (sharper when scaled down).
        let view = self.view.map_or((u32::MAX, u32::MAX), |(w, h)| (w.saturating_mul(5) / 4, h.saturating_mul(5) / 4));
        let (sw, sh, sf) = self.source;
        // A source between two rungs may use the larger one's size class (it is never upscaled).
        let (w, h) = (choice.0.min(view.0).min(sw.max(320)), choice.1.min(view.1).min(sh.max(180)));
        let fps = choice.2.min(sf.max(15));
        if let Some(rung) = self.ladder.set_cap(w, h, fps) {
            self.target_kbps = self.target_kbps.min(rung.max_kbps);
            self.out.push_back(QualityOutput::Rung { rung, target_kbps: self.target_kbps, reason: RungReason::Cap });
        }
    }

    fn bars(&self) -> (u8, String) {
        let budget = self.video_budget_kbps(self.estimate_kbps);
        let rtt = self.rtt_ms.unwrap_or(0.0);
        let loss = self.loss * 100.0;
        let by_bandwidth = match budget {
            b if b >= f64::from(LADDER[0].min_kbps) => 4,
            b if b >= f64::from(LADDER[2].min_kbps) => 3,
            b if b >= f64::from(Ladder::floor_kbps()) => 2,
            _ => 1,
        };
        let by_rtt = match rtt {
            r if r < 150.0 => 4,
            r if r < 300.0 => 3,
            r if r < 600.0 => 2,
            _ => 1,
        };
        let by_loss = match loss {
            l if l < 2.0 => 4,
            l if l < 5.0 => 3,
            l if l < 12.0 => 2,
            _ => 1,
        };
        let bars = by_bandwidth.min(by_rtt).min(by_loss);
        let why = if bars == 4 {
            "Good connection".to_string()
        } else if by_bandwidth == bars {
            format!("Low bandwidth: about {} kb/s", self.estimate_kbps as u32)
        } else if by_loss == bars {
            format!("Packet loss: {loss:.0} %")
        } else {
            format!("High delay: {rtt:.0} ms round trip")
        };
        (bars, why)
    }
}

/// The rate acknowledged by the partner (bytes reported arrived) over the last [`AckedRate::WINDOW`].
#[derive(Debug, Default)]
pub struct AckedRate {
    arrivals: VecDeque<(Instant, usize)>,
    first: Option<Instant>,
}

impl AckedRate {
    /// The averaging window.
    pub const WINDOW: Duration = Duration::from_millis(1000);

    /// `bytes` were reported arrived at `now`.
    pub fn add(&mut self, now: Instant, bytes: usize) {
        self.first.get_or_insert(now);
        self.arrivals.push_back((now, bytes));
        while self.arrivals.front().is_some_and(|(t, _)| now.duration_since(*t) > Self::WINDOW) {
            self.arrivals.pop_front();
        }
    }

    /// The rate in bit/s at `now`, once reports have covered a whole window.
    pub fn rate_bps(&self, now: Instant) -> Option<f64> {
        if self.first.is_none_or(|f| now.duration_since(f) < Self::WINDOW) {
            return None;
        }
        let bytes: usize =
            self.arrivals.iter().filter(|(t, _)| now.duration_since(*t) <= Self::WINDOW).map(|(_, b)| b).sum();
        Some(bytes as f64 * 8.0 / Self::WINDOW.as_secs_f64())
    }
}

/// The encoder target for a rung at a budget: the budget within the rung's range (under the
/// floor while a down-switch is pending, but never under 50 kb/s).
fn target_for(rung: Rung, budget_kbps: f64) -> u32 {
    (budget_kbps as u32).min(rung.max_kbps).max(50)
}

#[cfg(test)]
mod tests;
