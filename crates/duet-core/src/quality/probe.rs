//! Active probing, free of I/O: finding out whether the link carries more than the sender uses.
//!
//! While video is suspended for the network the sender is application-limited: audio alone
//! cannot show that a cap was lifted, and the delay-based estimator only learns from what is
//! sent. libwebrtc and str0m send short clusters of packets at a chosen rate and take the rate
//! at which the partner received them (transport-wide feedback) as a measurement of the link.
//! [`Prober`] decides when and at what rate (a cluster every [`PROBE_INTERVAL`] while suspended,
//! doubling at once after each one that held); [`ProbeMeter`] turns the feedback on a cluster's
//! packets into a [`ProbeResult`]. The pacer sends the clusters as RTX copies of recent video
//! packets (see `peer::interceptors`), so a receiver drops them as duplicates.
//!
//! Clusters are small, [`MIN_CLUSTER_BYTES`] or [`CLUSTER_DURATION`] at their rate: under a cap,
//! whatever of a cluster exceeds the bottleneck's burst waits in its queue, and so does the audio
//! behind it. The pacer starts a cluster right after an audio packet, so the next one finds at
//! most the cluster's tail ahead of it (once per [`PROBE_INTERVAL`]). A token-bucket shaper lets
//! its burst through at line rate (the tests' `tc tbf`: 3,000 bytes under 100 kb/s): the
//! cluster's last packet, beyond the burst, arrives at the shaper's rate, and that is what fails
//! the probe. A shaper whose burst exceeds a cluster fools it, as it fools libwebrtc's probes,
//! but rarely a whole climb: the controller trusts only a climb that reached [`MAX_PROBE_BPS`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How often a suspended sender probes (a failed probe costs the audio one short queue).
pub const PROBE_INTERVAL: Duration = Duration::from_millis(2500);
/// The first probe after video was suspended waits this long (the cap that suspended it is
/// unlikely to be gone at once).
pub const FIRST_PROBE_AFTER: Duration = Duration::from_millis(1500);
/// The rate of a first probe, bit/s: enough for the top rung's floor. The higher the rate, the
/// shorter the cluster, and the less of the audio behind it a failed one delays.
pub const FIRST_PROBE_BPS: f64 = 1_200_000.0;
/// The highest rate probed, bit/s.
pub const MAX_PROBE_BPS: f64 = 3_000_000.0;
/// A cluster lasts this long at its rate (libwebrtc's minimum) ...
pub const CLUSTER_DURATION: Duration = Duration::from_millis(15);
/// ... and carries at least this many bytes (three packets of video).
pub const MIN_CLUSTER_BYTES: usize = 3000;
/// A cluster counts only if at least this share of its packets arrived.
pub const MIN_ARRIVED: f64 = 0.8;
/// A probe holds (and the next one doubles) if it measured at least this share of its rate.
pub const HELD_SHARE: f64 = 0.7;
/// Feedback on a cluster's packets is awaited this long after its last packet left.
pub const RESULT_TIMEOUT: Duration = Duration::from_millis(1000);
/// A cluster asked for this long ago without a result counts as failed (it was never sent, or
/// its result was lost with a replaced connection).
pub const UNANSWERED_AFTER: Duration = Duration::from_millis(1060);

/// A cluster to send: `bytes` of packets paced at `rate_bps`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeCluster {
    /// Identifies the cluster in its [`ProbeResult`].
    pub id: u32,
    /// Sending rate, bit/s.
    pub rate_bps: f64,
    /// Bytes to send (on the wire).
    pub bytes: usize,
}

/// What the partner's feedback says about a cluster.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeResult {
    /// The cluster measured.
    pub cluster: ProbeCluster,
    /// The rate the link carried it at (the smaller of the sent and received rates), bit/s;
    /// `None` if too little of it arrived to tell.
    pub rate_bps: Option<f64>,
    /// False if it could not be sent at all (no RTX stream, or no video sent yet to copy).
    pub sent: bool,
}

impl ProbeResult {
    /// A cluster given up: lost, unanswered, or (`sent` false) never sent.
    pub fn failed(cluster: ProbeCluster, sent: bool) -> Self {
        Self { cluster, rate_bps: None, sent }
    }

    /// The rate measured, if the link carried the cluster nearly at its rate. Only such a rate
    /// counts: one well under the cluster's rate is mostly a shaper's burst passing at line rate
    /// followed by its real rate, a mix that says neither.
    pub fn held_rate(&self) -> Option<f64> {
        self.rate_bps.filter(|r| *r >= self.cluster.rate_bps * HELD_SHARE)
    }

    /// See [`ProbeResult::held_rate`].
    pub fn held(&self) -> bool {
        self.held_rate().is_some()
    }
}

/// Decides when to probe and at what rate.
#[derive(Debug)]
pub struct Prober {
    next_id: u32,
    wanted: bool,
    next_at: Option<Instant>,
    next_rate: f64,
    in_flight: Option<(ProbeCluster, Instant)>,
    /// The last cluster held and a faster one follows.
    climbing: bool,
}

impl Default for Prober {
    fn default() -> Self {
        Self { next_id: 1, wanted: false, next_at: None, next_rate: FIRST_PROBE_BPS, in_flight: None, climbing: false }
    }
}

impl Prober {
    /// Whether the sender is application-limited for want of a measurement (video suspended for
    /// the network). A climb that started keeps going when this turns false.
    pub fn set_wanted(&mut self, now: Instant, wanted: bool) {
        if wanted && !self.wanted && self.next_at.is_none() {
            self.next_at = Some(now + FIRST_PROBE_AFTER);
            self.next_rate = FIRST_PROBE_BPS;
        }
        self.wanted = wanted;
    }

    /// The next cluster to send, if one is due at `now`.
    pub fn poll(&mut self, now: Instant) -> Option<ProbeCluster> {
        if let Some((cluster, sent)) = self.in_flight
            && now.saturating_duration_since(sent) >= UNANSWERED_AFTER
        {
            self.on_result(now, ProbeResult::failed(cluster, true));
        }
        if self.in_flight.is_some() || self.next_at.is_none_or(|at| now < at) {
            return None;
        }
        self.next_at = None;
        let rate_bps = self.next_rate;
        let bytes = ((rate_bps * CLUSTER_DURATION.as_secs_f64() / 8.0) as usize).max(MIN_CLUSTER_BYTES);
        let cluster = ProbeCluster { id: self.next_id, rate_bps, bytes };
        self.next_id = self.next_id.wrapping_add(1);
        self.in_flight = Some((cluster, now));
        Some(cluster)
    }

    /// The measurement of a cluster arrived. One that held is followed at once by one at twice
    /// the measured rate (up to [`MAX_PROBE_BPS`]); otherwise probing starts over from
    /// [`FIRST_PROBE_BPS`] after [`PROBE_INTERVAL`], while still wanted.
    pub fn on_result(&mut self, now: Instant, result: ProbeResult) {
        if self.in_flight.is_none_or(|(c, _)| c.id != result.cluster.id) {
            return;
        }
        self.in_flight = None;
        let held = result.held_rate();
        self.climbing = held.is_some() && result.cluster.rate_bps < MAX_PROBE_BPS;
        match held {
            Some(rate) if self.climbing => {
                self.next_rate = (rate * 2.0).min(MAX_PROBE_BPS);
                self.next_at = Some(now);
            }
            _ => {
                self.next_rate = FIRST_PROBE_BPS;
                self.next_at = self.wanted.then_some(now + PROBE_INTERVAL);
            }
        }
    }

    /// A climb of doubling probes is under way (the last probe held and the next is due or out).
    pub fn climbing(&self) -> bool {
        self.climbing
    }
}

#[derive(Debug)]
struct SentProbe {
    seq: u16,
    bytes: usize,
    departure: Instant,
    /// `None`: no feedback yet; `Some(None)`: reported lost.
    arrival: Option<Option<Duration>>,
}

#[derive(Debug)]
struct ClusterLog {
    cluster: ProbeCluster,
    packets: Vec<SentProbe>,
}

/// Measures clusters from the transport-wide feedback on their packets.
#[derive(Debug, Default)]
pub struct ProbeMeter {
    ssrc: Option<u32>,
    clusters: VecDeque<ClusterLog>,
}

impl ProbeMeter {
    /// A packet of `cluster` left at `departure`: `bytes` on the wire, sequence number `seq` on
    /// the stream `ssrc` that carries probes.
    pub fn on_sent(&mut self, cluster: ProbeCluster, ssrc: u32, seq: u16, bytes: usize, departure: Instant) {
        self.ssrc = Some(ssrc);
        let packet = SentProbe { seq, bytes, departure, arrival: None };
        match self.clusters.iter_mut().find(|c| c.cluster.id == cluster.id) {
            Some(log) => log.packets.push(packet),
            None => self.clusters.push_back(ClusterLog { cluster, packets: vec![packet] }),
        }
    }

    /// Feedback on one packet: true if it was a probe (its loss or delay says nothing about the
    /// media the estimator follows).
    pub fn on_report(&mut self, ssrc: u32, seq: u16, arrival: Option<Duration>) -> bool {
        if self.ssrc != Some(ssrc) {
            return false;
        }
        for log in &mut self.clusters {
            if let Some(p) = log.packets.iter_mut().find(|p| p.seq == seq && p.arrival.is_none()) {
                p.arrival = Some(arrival);
                return true;
            }
        }
        false
    }

    /// The next cluster measured: all of its `expected` packets reported, or its feedback
    /// overdue at `now`.
    pub fn poll_result(&mut self, now: Instant) -> Option<ProbeResult> {
        let done = self.clusters.iter().position(|log| {
            let sent = log.packets.iter().map(|p| p.bytes).sum::<usize>() >= log.cluster.bytes;
            let reported = log.packets.iter().all(|p| p.arrival.is_some());
            let last = log.packets.iter().map(|p| p.departure).max();
            (sent && reported) || last.is_some_and(|l| now.saturating_duration_since(l) > RESULT_TIMEOUT)
        })?;
        let log = self.clusters.remove(done)?;
        Some(ProbeResult { cluster: log.cluster, rate_bps: measure(&log.packets), sent: true })
    }
}

/// The smaller of the rates a cluster was sent and received at (each over the span from its
/// first packet to its last, less the last packet's bytes), if enough of it arrived.
fn measure(packets: &[SentProbe]) -> Option<f64> {
    let arrived: Vec<(Duration, usize)> =
        packets.iter().filter_map(|p| p.arrival.flatten().map(|a| (a, p.bytes))).collect();
    if arrived.len() < 2 || (arrived.len() as f64) < packets.len() as f64 * MIN_ARRIVED {
        return None;
    }
    let rate = |bytes: usize, span: Duration| bytes as f64 * 8.0 / span.as_secs_f64().max(0.001);
    let first_sent = packets.iter().map(|p| p.departure).min()?;
    let last_sent = packets.iter().max_by_key(|p| p.departure)?;
    let sent_bytes = packets.iter().map(|p| p.bytes).sum::<usize>() - last_sent.bytes;
    let sent = rate(sent_bytes, last_sent.departure.saturating_duration_since(first_sent));
    let first_arrival = arrived.iter().map(|a| a.0).min()?;
    let (last_arrival, last_bytes) = arrived.iter().max_by_key(|a| a.0).copied()?;
    let received_bytes = arrived.iter().map(|a| a.1).sum::<usize>() - last_bytes;
    let received = rate(received_bytes, last_arrival.saturating_sub(first_arrival));
    Some(sent.min(received))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    /// Sends `cluster` in 1,000-byte packets at its rate from `start`; the link carries
    /// `capacity_bps` with no queue beyond `queue_bytes` (the rest is lost). Returns the result.
    fn through_link(cluster: ProbeCluster, start: Instant, capacity_bps: f64, queue_bytes: f64) -> ProbeResult {
        let mut meter = ProbeMeter::default();
        let packets = cluster.bytes.div_ceil(1000);
        let mut link_free = 0.0f64;
        for i in 0..packets {
            let sent_s = i as f64 * 8000.0 / cluster.rate_bps;
            let departure = start + Duration::from_secs_f64(sent_s);
            meter.on_sent(cluster, 7, i as u16, 1000, departure);
            let backlog = (link_free - sent_s).max(0.0) * capacity_bps / 8.0;
            let arrival = (backlog + 1000.0 <= queue_bytes).then(|| {
                link_free = link_free.max(sent_s) + 8000.0 / capacity_bps;
                Duration::from_secs_f64(link_free)
            });
            assert!(meter.on_report(7, i as u16, arrival));
        }
        meter.poll_result(start).expect("all packets reported")
    }

    #[test]
    fn a_free_link_measures_the_probe_rate_and_a_capped_one_fails_it() {
        let t0 = Instant::now();
        let cluster = ProbeCluster { id: 1, rate_bps: 1_200_000.0, bytes: 6000 };
        let free = through_link(cluster, t0, 100_000_000.0, 1e9);
        assert!(free.held(), "{free:?}");
        let rate = free.rate_bps.unwrap();
        assert!((1_100_000.0..1_300_000.0).contains(&rate), "{rate}");
        // 48 kb/s with a 100 ms queue: most of the cluster is lost.
        let capped = through_link(cluster, t0, 48_000.0, 600.0 + 1000.0);
        assert_eq!(capped.rate_bps, None);
        assert!(!capped.held());
        // 500 kb/s with a deep queue: all of it arrives, at the link's rate.
        let slower = through_link(cluster, t0, 500_000.0, 1e9);
        let rate = slower.rate_bps.unwrap();
        assert!((450_000.0..550_000.0).contains(&rate), "{rate}");
        assert!(!slower.held());
    }

    #[test]
    fn reports_of_other_packets_are_not_taken_for_probes() {
        let t0 = Instant::now();
        let mut meter = ProbeMeter::default();
        let cluster = ProbeCluster { id: 1, rate_bps: 1e6, bytes: 1000 };
        meter.on_sent(cluster, 7, 100, 1000, t0);
        assert!(!meter.on_report(8, 100, None), "another stream");
        assert!(!meter.on_report(7, 101, None), "not a probe");
        assert!(meter.on_report(7, 100, Some(Duration::ZERO)));
        assert!(!meter.on_report(7, 100, Some(Duration::ZERO)), "reported twice");
    }

    #[test]
    fn a_cluster_without_feedback_is_given_up_as_failed() {
        let t0 = Instant::now();
        let mut meter = ProbeMeter::default();
        let cluster = ProbeCluster { id: 3, rate_bps: 1e6, bytes: 2000 };
        meter.on_sent(cluster, 7, 1, 1000, t0);
        meter.on_sent(cluster, 7, 2, 1000, ms(t0, 8));
        assert_eq!(meter.poll_result(ms(t0, 500)), None);
        assert_eq!(meter.poll_result(ms(t0, 1100)), Some(ProbeResult::failed(cluster, true)));
    }

    #[test]
    fn a_suspended_sender_probes_periodically_and_climbs_by_doubling_when_probes_hold() {
        let t0 = Instant::now();
        let mut p = Prober::default();
        assert_eq!(p.poll(t0), None, "not wanted yet");
        p.set_wanted(t0, true);
        assert_eq!(p.poll(ms(t0, 1000)), None);
        let first = p.poll(ms(t0, 1500)).expect("first probe");
        assert_eq!(first.rate_bps, FIRST_PROBE_BPS);
        assert!(first.bytes >= MIN_CLUSTER_BYTES);
        assert_eq!(p.poll(ms(t0, 1600)), None, "one cluster at a time");
        // It failed: the next one comes an interval later, at the first rate again.
        p.on_result(ms(t0, 1700), ProbeResult::failed(first, true));
        assert_eq!(p.poll(ms(t0, 1700) + PROBE_INTERVAL - Duration::from_millis(1)), None);
        let second = p.poll(ms(t0, 1700) + PROBE_INTERVAL).expect("second probe");
        assert_eq!(second.rate_bps, FIRST_PROBE_BPS);
        // It held: the next one goes at once at twice the measured rate, even after video
        // resumed, until the maximum.
        let now = ms(t0, 4500);
        p.on_result(now, ProbeResult { cluster: second, rate_bps: Some(1_150_000.0), sent: true });
        p.set_wanted(now, false);
        let third = p.poll(now).expect("climb");
        assert_eq!(third.rate_bps, 2_300_000.0);
        assert!(p.climbing());
        p.on_result(now, ProbeResult { cluster: third, rate_bps: Some(2_250_000.0), sent: true });
        let fourth = p.poll(now).expect("climb");
        assert_eq!(fourth.rate_bps, MAX_PROBE_BPS);
        // Measured a little under its rate, as probes are: still the top.
        p.on_result(now, ProbeResult { cluster: fourth, rate_bps: Some(MAX_PROBE_BPS * 0.97), sent: true });
        assert!(!p.climbing());
        assert_eq!(p.poll(ms(t0, 60_000)), None, "at the top and not wanted: done");
    }

    #[test]
    fn a_probe_without_an_answer_counts_as_failed() {
        let t0 = Instant::now();
        let mut p = Prober::default();
        p.set_wanted(t0, true);
        let first = p.poll(ms(t0, 1500)).unwrap();
        let timeout = ms(t0, 1500) + UNANSWERED_AFTER;
        assert_eq!(p.poll(timeout), None);
        let again = p.poll(timeout + PROBE_INTERVAL).expect("probing goes on");
        assert_ne!(again.id, first.id);
    }
}
