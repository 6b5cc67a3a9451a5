//! The interceptors the application adds to webrtc's chain: one that publishes the congestion
//! controller's estimate and the loss it sees (the API offers no other way to read them), the
//! send queue that keeps audio first and the delay bounded ([`PriorityPacer`], around
//! [`crate::quality::pacer::Pacer`]) and sends probe clusters, one in front of webrtc's NACK
//! responder that answers only the retransmission requests worth answering
//! ([`ThrottledNackResponder`], around [`crate::quality::retransmit::RetransmitPolicy`]), and
//! one that hands keyframe requests (PLI/FIR) to the sending track (by default inbound RTCP
//! stops at the end of the interceptor chain).

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rtc::shared::marshal::MarshalSize;

use crate::quality::AckedRate;
use crate::quality::bwe::Estimator;
use crate::quality::pacer::{Class, PACING_FACTOR, Pacer};
use crate::quality::probe::{ProbeCluster, ProbeMeter, ProbeResult};
use crate::quality::retransmit::RetransmitPolicy;

use rtc::interceptor::{
    Attribute, AttributedPacket, BandwidthEstimator, EstimatorStats, Interceptor, Packet, PacketReport, StreamInfo,
    TaggedPacket,
};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
    NackPair, TransportLayerNack, nack_pairs_from_sequence_numbers,
};
use rtc::sansio::Protocol;

/// What the transport measures for the application, shared with the interceptors (each value
/// an `f64` or a count in an atomic).
#[derive(Debug, Default)]
pub(super) struct TransportMeters {
    /// The estimator's target, bit/s (`f64` bits).
    pub(super) target_bps: AtomicU64,
    /// The loss the partner reports on what we send, a fraction (`f64` bits).
    pub(super) loss: AtomicU64,
    /// The rate the partner acknowledged, bit/s (`f64` bits; NaN until feedback covers a window).
    pub(super) acked_bps: AtomicU64,
    /// Video packets the pacer dropped because they waited too long.
    pub(super) video_dropped: AtomicU64,
    /// Video stopped: the pacer drops what it holds (set by the peer, taken by the pacer).
    pub(super) drop_queued_video: AtomicBool,
    /// The latest round trip the transport feedback showed, µs (0 until known): from a
    /// packet's departure to the feedback that reported it, for the newest packet reported.
    pub(super) feedback_rtt_us: AtomicU64,
    probes: Mutex<Probes>,
}

/// Probe clusters the quality controller asked for, their packets in flight and what the
/// feedback made of them: the pacer sends, the estimator measures, the peer hands over.
#[derive(Debug, Default)]
pub(super) struct Probes {
    pub(super) requested: VecDeque<ProbeCluster>,
    meter: ProbeMeter,
    pub(super) results: VecDeque<ProbeResult>,
}

impl TransportMeters {
    pub(super) fn load(value: &AtomicU64) -> f64 {
        f64::from_bits(value.load(Ordering::Relaxed))
    }

    pub(super) fn probes(&self) -> MutexGuard<'_, Probes> {
        self.probes.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Wraps the bandwidth estimator: measures probe clusters (their packets are kept from the
/// estimator's delay and loss signals, and their results raise its target), and publishes the
/// target and the loss it sees after every update.
pub(super) struct ReportingEstimator {
    inner: Estimator,
    meters: Arc<TransportMeters>,
    acked: AckedRate,
}

impl ReportingEstimator {
    pub(super) fn new(inner: Estimator, meters: Arc<TransportMeters>) -> Self {
        meters.acked_bps.store(f64::NAN.to_bits(), Ordering::Relaxed);
        let this = Self { inner, meters, acked: AckedRate::default() };
        this.publish();
        this
    }

    fn publish(&self) {
        self.meters.target_bps.store(self.inner.target_bitrate().to_bits(), Ordering::Relaxed);
        self.meters.loss.store(self.inner.stats().packet_loss.unwrap_or(0.0).to_bits(), Ordering::Relaxed);
    }

    /// Hands the clusters measured by `now` to the estimator and the peer.
    fn take_probe_results(&mut self, now: Instant, probes: &mut Probes) {
        while let Some(result) = probes.meter.poll_result(now) {
            if let Some(rate) = result.held_rate() {
                self.inner.on_probe_result(now, rate);
            }
            probes.results.push_back(result);
        }
    }
}

impl BandwidthEstimator for ReportingEstimator {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        let meters = self.meters.clone();
        let mut probes = meters.probes();
        let media: Vec<PacketReport> = reports
            .iter()
            .filter(|r| !probes.meter.on_report(r.ssrc, r.rtp_sequence_number, r.arrival.filter(|_| r.arrived)))
            .cloned()
            .collect();
        self.inner.on_reports(now, &media);
        for r in reports.iter().filter(|r| r.arrived) {
            self.acked.add(now, r.size);
        }
        if let Some(newest) = reports.iter().filter(|r| r.arrived).map(|r| r.departure).max() {
            let rtt = now.saturating_duration_since(newest).as_micros().max(1);
            self.meters.feedback_rtt_us.store(u64::try_from(rtt).unwrap_or(u64::MAX), Ordering::Relaxed);
        }
        self.take_probe_results(now, &mut probes);
        let acked = self.acked.rate_bps(now).unwrap_or(f64::NAN);
        self.meters.acked_bps.store(acked.to_bits(), Ordering::Relaxed);
        self.publish();
    }

    fn target_bitrate(&self) -> f64 {
        self.inner.target_bitrate()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.inner.handle_timeout(now);
        let meters = self.meters.clone();
        self.take_probe_results(now, &mut meters.probes());
        self.publish();
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.inner.poll_timeout()
    }

    fn stats(&self) -> EstimatorStats {
        self.inner.stats()
    }
}

/// Recent video packets kept as the material of probes.
const PROBE_MATERIAL: usize = 32;

/// The send queue in the pacer's slot: audio leaves at once, video is paced at the estimate
/// (times [`PACING_FACTOR`]) and dropped, whole frames at a time, when it has waited too long.
/// Packets are classed by SSRC: the streams bound with an `audio/` codec are audio.
///
/// It also sends the probe clusters the quality controller asks for, as RTX copies of recent
/// video packets (RFC 4588, as libwebrtc pads), paced at the cluster's rate. It therefore owns
/// the RTX stream's sequence numbers: the NACK responder's retransmissions and the probes are
/// numbered in the order they leave (the receiver's SRTP replay window would refuse a number
/// used twice).
pub(super) struct PriorityPacer {
    pacer: Pacer<TaggedPacket>,
    audio_ssrcs: HashSet<u32>,
    meters: Arc<TransportMeters>,
    /// RTCP and audio: out at once.
    urgent: VecDeque<TaggedPacket>,
    released: VecDeque<TaggedPacket>,
    read: VecDeque<TaggedPacket>,
    repair: Option<RepairStream>,
    recent_video: VecDeque<rtc::rtp::Packet>,
    /// Probe packets and when each leaves.
    probes: VecDeque<(Instant, rtc::rtp::Packet, ProbeCluster)>,
    /// Since when a requested cluster waits for an audio packet to follow.
    probe_waiting_since: Option<Instant>,
}

/// A cluster starts right after an audio packet (see [`crate::quality::probe`]), or after this
/// long without one (muted).
const PROBE_WAITS_FOR_AUDIO: Duration = Duration::from_millis(100);

/// The video stream and its RTX stream.
#[derive(Debug, Clone, Copy)]
struct RepairStream {
    media_ssrc: u32,
    ssrc: u32,
    payload_type: u8,
    next_seq: u16,
}

impl RepairStream {
    /// An RTX copy of a media packet (sequence number set as it leaves).
    fn copy(&self, original: &rtc::rtp::Packet) -> rtc::rtp::Packet {
        let mut payload = Vec::with_capacity(2 + original.payload.len());
        payload.extend_from_slice(&original.header.sequence_number.to_be_bytes());
        payload.extend_from_slice(&original.payload);
        rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                ssrc: self.ssrc,
                payload_type: self.payload_type,
                timestamp: original.header.timestamp,
                marker: original.header.marker,
                ..Default::default()
            },
            payload: payload.into(),
        }
    }
}

impl PriorityPacer {
    pub(super) fn new(start_bps: f64, meters: Arc<TransportMeters>) -> Self {
        Self {
            pacer: Pacer::new(start_bps * PACING_FACTOR),
            audio_ssrcs: HashSet::new(),
            meters,
            urgent: VecDeque::new(),
            released: VecDeque::new(),
            read: VecDeque::new(),
            repair: None,
            recent_video: VecDeque::new(),
            probes: VecDeque::new(),
            probe_waiting_since: None,
        }
    }

    /// Lays out the clusters asked for as RTX copies of recent video packets, each leaving when
    /// the cluster's rate allows, from right after an audio packet (`after_audio`). Without
    /// video sent yet (or without RTX) a cluster fails at once.
    /// Drops the queued video if the peer said video stopped (before anything newer is queued:
    /// the flag is taken with the next packet or timeout, whichever comes first).
    fn take_video_stop(&mut self) {
        if self.meters.drop_queued_video.swap(false, Ordering::Relaxed) {
            self.pacer.drop_video();
        }
    }

    fn schedule_probes(&mut self, now: Instant, after_audio: bool) {
        let meters = self.meters.clone();
        let mut probes = meters.probes();
        if probes.requested.is_empty() {
            return;
        }
        let since = *self.probe_waiting_since.get_or_insert(now);
        if !after_audio && !self.audio_ssrcs.is_empty() && now.saturating_duration_since(since) < PROBE_WAITS_FOR_AUDIO
        {
            return;
        }
        self.probe_waiting_since = None;
        while let Some(cluster) = probes.requested.pop_front() {
            let Some(repair) = self.repair.filter(|_| !self.recent_video.is_empty()) else {
                probes.results.push_back(ProbeResult::failed(cluster, false));
                continue;
            };
            let mut at = self.probes.back().map_or(now, |p| p.0.max(now));
            let mut bytes = 0;
            for original in self.recent_video.iter().rev().cycle() {
                if bytes >= cluster.bytes {
                    break;
                }
                let copy = repair.copy(original);
                let size = copy.marshal_size();
                self.probes.push_back((at, copy, cluster));
                bytes += size;
                at += Duration::from_secs_f64(size as f64 * 8.0 / cluster.rate_bps);
            }
        }
    }

    /// Numbers what leaves on the RTX stream, and keeps recent video packets as probe material.
    fn leaving(&mut self, packet: &mut TaggedPacket) {
        let (Some(repair), Packet::Rtp(rtp)) = (self.repair.as_mut(), &mut packet.message.packet) else { return };
        if rtp.header.ssrc == repair.ssrc {
            rtp.header.sequence_number = repair.next_seq;
            repair.next_seq = repair.next_seq.wrapping_add(1);
        } else if rtp.header.ssrc == repair.media_ssrc {
            if self.recent_video.len() == PROBE_MATERIAL {
                self.recent_video.pop_front();
            }
            self.recent_video.push_back(rtp.clone());
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for PriorityPacer {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        // The congestion controller (wire-ward) tags the feedback that changed its estimate.
        if let Some(Attribute::TargetBitrateChanged { bits_per_second }) =
            msg.message.get(&Attribute::TargetBitrateChanged { bits_per_second: 0.0 })
        {
            self.pacer.set_rate(*bits_per_second * PACING_FACTOR);
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        let Packet::Rtp(rtp) = &msg.message.packet else {
            self.urgent.push_back(msg);
            return Ok(());
        };
        let bytes = rtp.marshal_size();
        let class = if self.audio_ssrcs.contains(&rtp.header.ssrc) {
            Class::Audio
        } else {
            Class::Video { frame: (rtp.header.ssrc, rtp.header.timestamp), keyframe: starts_vp8_keyframe(&rtp.payload) }
        };
        let now = msg.now;
        self.take_video_stop();
        if let Some(audio) = self.pacer.push(now, msg, bytes, class) {
            self.urgent.push_back(audio);
        }
        // The controller's requests come on the quality tick: pick them up with the traffic.
        self.schedule_probes(now, class == Class::Audio);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.urgent.pop_front().or_else(|| self.released.pop_front())
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        self.take_video_stop();
        for mut packet in self.pacer.release(now) {
            // The departure instant: what leaves now is recorded as leaving now, so the queueing
            // here is never charged to the network.
            packet.now = now;
            self.leaving(&mut packet);
            self.released.push_back(packet);
        }
        self.schedule_probes(now, false);
        while self.probes.front().is_some_and(|p| p.0 <= now) {
            let Some((_, rtp, cluster)) = self.probes.pop_front() else { break };
            let mut packet =
                TaggedPacket { now, transport: Default::default(), message: AttributedPacket::new(Packet::Rtp(rtp)) };
            self.leaving(&mut packet);
            if let Packet::Rtp(rtp) = &packet.message.packet {
                let (ssrc, seq, size) = (rtp.header.ssrc, rtp.header.sequence_number, rtp.marshal_size());
                self.meters.probes().meter.on_sent(cluster, ssrc, seq, size, now);
            }
            self.released.push_back(packet);
        }
        self.meters.video_dropped.store(self.pacer.dropped_video(), Ordering::Relaxed);
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        let probe = self.probes.front().map(|p| p.0);
        match (self.pacer.poll_timeout(), probe) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// True if a VP8 RTP payload (RFC 7741) starts a keyframe: the start bit of partition 0 is set
/// and the frame tag's P bit is 0. RTX packets (another payload) never match by accident often
/// enough to matter: at worst such a packet is not dropped.
fn starts_vp8_keyframe(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else { return false };
    // S (start of partition) with partition id 0.
    if first & 0x10 == 0 || first & 0x0f != 0 {
        return false;
    }
    let mut at = 1;
    if first & 0x80 != 0 {
        let Some(&ext) = payload.get(1) else { return false };
        at = 2;
        if ext & 0x80 != 0 {
            // Picture id: 2 bytes when its M bit is set.
            at += if payload.get(at).is_some_and(|b| b & 0x80 != 0) { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            at += 1;
        }
        if ext & 0x30 != 0 {
            at += 1;
        }
    }
    payload.get(at).is_some_and(|tag| tag & 0x01 == 0)
}

impl Interceptor for PriorityPacer {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        if info.mime_type.to_ascii_lowercase().starts_with("audio/") {
            self.audio_ssrcs.insert(info.ssrc);
        } else if let (Some(ssrc), Some(payload_type)) = (info.ssrc_rtx, info.payload_type_rtx) {
            self.repair = Some(RepairStream { media_ssrc: info.ssrc, ssrc, payload_type, next_seq: 0 });
        }
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.audio_ssrcs.remove(&info.ssrc);
        if self.repair.is_some_and(|r| r.media_ssrc == info.ssrc) {
            self.repair = None;
            self.recent_video.clear();
        }
    }
    fn bind_remote_stream(&mut self, _: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::starts_vp8_keyframe;

    #[test]
    fn vp8_keyframes_are_recognised_from_the_first_packet() {
        // S=1, no extension; frame tag P=0 (key) / P=1 (delta).
        assert!(starts_vp8_keyframe(&[0x10, 0x50, 0x2a, 0x01]));
        assert!(!starts_vp8_keyframe(&[0x10, 0x51, 0x2a, 0x01]));
        // Not the start of a partition: never.
        assert!(!starts_vp8_keyframe(&[0x00, 0x50]));
        // Extended descriptor with a 2-byte picture id (I, M set): the tag follows it.
        assert!(starts_vp8_keyframe(&[0x90, 0x80, 0x81, 0x23, 0x50]));
        assert!(!starts_vp8_keyframe(&[0x90, 0x80, 0x81, 0x23, 0x51]));
        assert!(!starts_vp8_keyframe(&[]));
    }
}

/// Marks inbound PLI/FIR for delivery to the application (the sending track's `poll()`);
/// drops other RTCP, which earlier interceptors (NACK, reports, TWCC) already consumed.
#[derive(Default)]
pub(super) struct KeyframeRequestForwarder {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequestForwarder {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(pkts) = &msg.message.packet {
            let keep: Vec<Box<dyn rtc::rtcp::Packet>> = pkts
                .iter()
                .filter(|p| p.as_any().is::<PictureLossIndication>() || p.as_any().is::<FullIntraRequest>())
                .cloned()
                .collect();
            if keep.is_empty() {
                return Ok(());
            }
            msg.message.packet = Packet::Rtcp(keep);
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for KeyframeRequestForwarder {
    fn bind_local_stream(&mut self, _: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
}

/// webrtc's NACK responder behind [`RetransmitPolicy`]: the NACKs it reads name only the
/// packets worth resending (once per round trip, and not after the partner gave up on them).
pub(super) struct ThrottledNackResponder<I> {
    inner: I,
    policy: RetransmitPolicy,
    meters: Arc<TransportMeters>,
}

impl<I> ThrottledNackResponder<I> {
    pub(super) fn new(inner: I, meters: Arc<TransportMeters>) -> Self {
        Self { inner, policy: RetransmitPolicy::default(), meters }
    }

    fn rtt(&self) -> Option<Duration> {
        let us = self.meters.feedback_rtt_us.load(Ordering::Relaxed);
        (us > 0).then(|| Duration::from_micros(us))
    }

    /// `packets` with each NACK narrowed to what the policy answers (and dropped if nothing is).
    fn narrow(&mut self, now: Instant, packets: &[Box<dyn rtc::rtcp::Packet>]) -> Vec<Box<dyn rtc::rtcp::Packet>> {
        let rtt = self.rtt();
        packets
            .iter()
            .filter_map(|packet| {
                let Some(nack) = packet.as_any().downcast_ref::<TransportLayerNack>() else {
                    return Some(packet.cloned());
                };
                let wanted: Vec<u16> = nack
                    .nacks
                    .iter()
                    .flat_map(NackPair::packet_list)
                    .filter(|seq| self.policy.should_resend(nack.media_ssrc, *seq, now, rtt))
                    .collect();
                (!wanted.is_empty()).then(|| {
                    Box::new(TransportLayerNack { nacks: nack_pairs_from_sequence_numbers(&wanted), ..nack.clone() })
                        as Box<dyn rtc::rtcp::Packet>
                })
            })
            .collect()
    }
}

impl<I: Interceptor> Protocol<TaggedPacket, TaggedPacket, ()> for ThrottledNackResponder<I> {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet
            && packets.iter().any(|p| p.as_any().is::<TransportLayerNack>())
        {
            let narrowed = self.narrow(msg.now, packets);
            msg.message.packet = Packet::Rtcp(narrowed);
        }
        self.inner.handle_read(msg)
    }
    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.inner.poll_read()
    }
    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtp(rtp) = &msg.message.packet
            && !msg.message.has(&Attribute::Retransmission)
        {
            self.policy.on_sent(rtp.header.ssrc, rtp.header.sequence_number, msg.now);
        }
        self.inner.handle_write(msg)
    }
    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.inner.poll_write()
    }
    fn handle_event(&mut self, evt: ()) -> Result<(), Self::Error> {
        self.inner.handle_event(evt)
    }
    fn poll_event(&mut self) -> Option<()> {
        self.inner.poll_event()
    }
    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        self.inner.handle_timeout(now)
    }
    fn poll_timeout(&mut self) -> Option<Instant> {
        self.inner.poll_timeout()
    }
    fn close(&mut self) -> Result<(), Self::Error> {
        self.inner.close()
    }
}

impl<I: Interceptor> Interceptor for ThrottledNackResponder<I> {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.inner.bind_local_stream(info);
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.policy.forget(info.ssrc);
        self.inner.unbind_local_stream(info);
    }
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        self.inner.bind_remote_stream(info);
    }
    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.inner.unbind_remote_stream(info);
    }
}

/// Also binds each local stream's RTX SSRC, as a stream of its own, for the wrapped interceptor.
/// webrtc's TWCC sender and congestion controller bind only the primary SSRC: without this, a
/// retransmission carries no transport-wide sequence number and the estimator never sees its
/// bytes (it takes a lossy link for an emptier one than it is).
pub(super) struct WithRepairStream<I>(pub(super) I);

fn repair_stream(info: &StreamInfo) -> Option<StreamInfo> {
    info.ssrc_rtx.map(|ssrc| StreamInfo { ssrc, ssrc_rtx: None, ..info.clone() })
}

impl<I: Interceptor> Protocol<TaggedPacket, TaggedPacket, ()> for WithRepairStream<I> {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.0.handle_read(msg)
    }
    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.0.poll_read()
    }
    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.0.handle_write(msg)
    }
    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.0.poll_write()
    }
    fn handle_event(&mut self, evt: ()) -> Result<(), Self::Error> {
        self.0.handle_event(evt)
    }
    fn poll_event(&mut self) -> Option<()> {
        self.0.poll_event()
    }
    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        self.0.handle_timeout(now)
    }
    fn poll_timeout(&mut self) -> Option<Instant> {
        self.0.poll_timeout()
    }
    fn close(&mut self) -> Result<(), Self::Error> {
        self.0.close()
    }
}

impl<I: Interceptor> Interceptor for WithRepairStream<I> {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.0.bind_local_stream(info);
        if let Some(repair) = repair_stream(info) {
            self.0.bind_local_stream(&repair);
        }
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.0.unbind_local_stream(info);
        if let Some(repair) = repair_stream(info) {
            self.0.unbind_local_stream(&repair);
        }
    }
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        self.0.bind_remote_stream(info);
    }
    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.0.unbind_remote_stream(info);
    }
}

#[cfg(test)]
mod repair_stream_tests {
    use super::*;
    use rtc::interceptor::{AttributedPacket, RTPHeaderExtension, TwccSenderBuilder};

    const TWCC_ID: u8 = 5;

    fn video_stream() -> StreamInfo {
        StreamInfo {
            ssrc: 1000,
            ssrc_rtx: Some(1001),
            payload_type: 96,
            payload_type_rtx: Some(97),
            mime_type: "video/VP8".into(),
            rtp_header_extensions: vec![RTPHeaderExtension {
                uri: rtc::sdp::extmap::TRANSPORT_CC_URI.into(),
                id: u16::from(TWCC_ID),
            }],
            ..Default::default()
        }
    }

    fn sent_with_transport_sequence(chain: &mut impl Interceptor, ssrc: u32) -> bool {
        let mut rtp = rtc::rtp::Packet::default();
        rtp.header.version = 2;
        rtp.header.ssrc = ssrc;
        let packet = TaggedPacket {
            now: Instant::now(),
            transport: Default::default(),
            message: AttributedPacket::new(Packet::Rtp(rtp)),
        };
        chain.handle_write(packet).unwrap();
        let out = chain.poll_write().unwrap();
        let Packet::Rtp(rtp) = &out.message.packet else { panic!("not RTP") };
        rtp.header.get_extension(TWCC_ID).is_some()
    }

    #[test]
    fn retransmissions_on_the_rtx_ssrc_get_a_transport_wide_sequence_number() {
        let mut plain = TwccSenderBuilder::new().build();
        plain.bind_local_stream(&video_stream());
        assert!(sent_with_transport_sequence(&mut plain, 1000));
        assert!(!sent_with_transport_sequence(&mut plain, 1001), "webrtc's own binding skips RTX");

        let mut wrapped = WithRepairStream(TwccSenderBuilder::new().build());
        wrapped.bind_local_stream(&video_stream());
        assert!(sent_with_transport_sequence(&mut wrapped, 1000));
        assert!(sent_with_transport_sequence(&mut wrapped, 1001));
        wrapped.unbind_local_stream(&video_stream());
        assert!(!sent_with_transport_sequence(&mut wrapped, 1001));
    }
}

#[cfg(test)]
mod probe_tests {
    use super::*;
    use crate::quality::probe::ProbeCluster;

    const VIDEO: u32 = 1000;
    const RTX: u32 = 1001;
    const AUDIO: u32 = 2000;

    fn pacer() -> (PriorityPacer, Arc<TransportMeters>) {
        let meters = Arc::new(TransportMeters::default());
        let mut pacer = PriorityPacer::new(2_000_000.0, meters.clone());
        pacer.bind_local_stream(&StreamInfo {
            ssrc: VIDEO,
            ssrc_rtx: Some(RTX),
            payload_type: 96,
            payload_type_rtx: Some(97),
            mime_type: "video/VP8".into(),
            ..Default::default()
        });
        pacer.bind_local_stream(&StreamInfo { ssrc: AUDIO, mime_type: "audio/opus".into(), ..Default::default() });
        (pacer, meters)
    }

    fn write(pacer: &mut PriorityPacer, now: Instant, ssrc: u32, seq: u16, payload: &[u8]) {
        let mut rtp = rtc::rtp::Packet::default();
        rtp.header.version = 2;
        rtp.header.ssrc = ssrc;
        rtp.header.sequence_number = seq;
        rtp.header.timestamp = 90_000;
        rtp.payload = payload.to_vec().into();
        let msg = TaggedPacket { now, transport: Default::default(), message: AttributedPacket::new(Packet::Rtp(rtp)) };
        pacer.handle_write(msg).unwrap();
    }

    /// Runs the pacer every millisecond from `from` for `ms`; returns (ms, packet) of what left.
    fn run(pacer: &mut PriorityPacer, t0: Instant, from: u64, ms: u64) -> Vec<(u64, rtc::rtp::Packet)> {
        let mut out = Vec::new();
        for t in from..from + ms {
            pacer.handle_timeout(t0 + Duration::from_millis(t)).unwrap();
            while let Some(p) = pacer.poll_write() {
                if let Packet::Rtp(rtp) = p.message.packet {
                    out.push((t, rtp));
                }
            }
        }
        out
    }

    #[test]
    fn video_stopped_drops_the_queued_video_and_audio_goes_on() {
        let (mut pacer, meters) = pacer();
        let t0 = Instant::now();
        // A 40,000-byte keyframe: 160 ms of queue at 2 Mb/s.
        for seq in 0..40u16 {
            let mut payload = vec![0u8; 1000];
            payload[0] = if seq == 0 { 0x10 } else { 0x00 };
            write(&mut pacer, t0, VIDEO, 100 + seq, &payload);
        }
        let before = run(&mut pacer, t0, 0, 20);
        assert!(!before.is_empty() && before.len() < 40, "{} left", before.len());
        meters.drop_queued_video.store(true, Ordering::Relaxed);
        write(&mut pacer, t0 + Duration::from_millis(20), AUDIO, 1, &[0; 100]);
        let after = run(&mut pacer, t0, 20, 500);
        assert_eq!(after.iter().map(|(_, p)| p.header.ssrc).collect::<Vec<_>>(), vec![AUDIO]);
        assert_eq!(pacer.poll_timeout(), None);
    }

    #[test]
    fn a_probe_is_rtx_copies_of_recent_video_after_an_audio_packet_at_the_clusters_rate() {
        let (mut pacer, meters) = pacer();
        let t0 = Instant::now();
        for seq in 0..4u16 {
            write(&mut pacer, t0, VIDEO, 100 + seq, &[seq as u8; 1000]);
        }
        assert_eq!(run(&mut pacer, t0, 0, 10).len(), 4, "the video left");
        // Asked for 3,000 bytes at 1.2 Mb/s: nothing leaves until an audio packet has.
        meters.probes().requested.push_back(ProbeCluster { id: 7, rate_bps: 1_200_000.0, bytes: 3000 });
        assert!(run(&mut pacer, t0, 10, 50).is_empty());
        write(&mut pacer, t0 + Duration::from_millis(60), AUDIO, 1, &[0; 100]);
        let out = run(&mut pacer, t0, 60, 40);
        let probes: Vec<_> = out.iter().filter(|(_, p)| p.header.ssrc == RTX).collect();
        assert_eq!(probes.len(), 3, "{out:?}");
        for (i, (_, p)) in probes.iter().enumerate() {
            assert_eq!(p.header.payload_type, 97);
            assert_eq!(p.header.sequence_number, i as u16, "the pacer numbers the RTX stream");
            // Original sequence number, then the original payload (newest packet first).
            let original = 103 - i as u16;
            assert_eq!(&p.payload[..2], &original.to_be_bytes());
            assert_eq!(p.payload[2..], [original as u8 - 100; 1000]);
        }
        // 1,014 bytes on the wire at 1.2 Mb/s: about 7 ms apart.
        let spacing = probes[2].0 - probes[0].0;
        assert!((12..=16).contains(&spacing), "{spacing} ms for two intervals");
        // The estimator side knows them as probes.
        let mut probes_state = meters.probes();
        assert!(probes_state.meter.on_report(RTX, 0, Some(Duration::ZERO)));
        assert!(!probes_state.meter.on_report(VIDEO, 100, Some(Duration::ZERO)));
    }

    #[test]
    fn retransmissions_are_renumbered_after_the_probes_so_no_rtx_number_is_used_twice() {
        let (mut pacer, meters) = pacer();
        let t0 = Instant::now();
        write(&mut pacer, t0, VIDEO, 100, &[1; 1000]);
        let mut out = run(&mut pacer, t0, 0, 5);
        meters.probes().requested.push_back(ProbeCluster { id: 1, rate_bps: 3_000_000.0, bytes: 2000 });
        write(&mut pacer, t0 + Duration::from_millis(5), AUDIO, 1, &[0; 100]);
        out.extend(run(&mut pacer, t0, 5, 15));
        // The NACK responder numbers its own retransmissions from 0, as if alone on the stream.
        write(&mut pacer, t0 + Duration::from_millis(20), RTX, 0, &[0, 100, 1, 1]);
        out.extend(run(&mut pacer, t0, 20, 10));
        let rtx: Vec<u16> =
            out.iter().filter(|(_, p)| p.header.ssrc == RTX).map(|(_, p)| p.header.sequence_number).collect();
        assert_eq!(rtx, vec![0, 1, 2]);
    }

    #[test]
    fn without_video_to_copy_a_probe_fails_at_once_as_not_sent() {
        let (mut pacer, meters) = pacer();
        let t0 = Instant::now();
        let cluster = ProbeCluster { id: 1, rate_bps: 1_200_000.0, bytes: 3000 };
        meters.probes().requested.push_back(cluster);
        write(&mut pacer, t0, AUDIO, 1, &[0; 100]);
        assert_eq!(meters.probes().results.pop_front(), Some(ProbeResult::failed(cluster, false)));
    }
}

#[cfg(test)]
mod nack_tests {
    use super::*;
    use rtc::interceptor::NackResponderBuilder;

    const VIDEO: u32 = 1000;
    const RTX: u32 = 1001;

    fn responder() -> (ThrottledNackResponder<rtc::interceptor::NackResponderInterceptor>, Arc<TransportMeters>) {
        let meters = Arc::new(TransportMeters::default());
        let mut r = ThrottledNackResponder::new(NackResponderBuilder::new().build(), meters.clone());
        r.bind_local_stream(&StreamInfo {
            ssrc: VIDEO,
            ssrc_rtx: Some(RTX),
            payload_type: 96,
            payload_type_rtx: Some(97),
            mime_type: "video/VP8".into(),
            rtcp_feedback: vec![rtc::interceptor::RTCPFeedback { typ: "nack".into(), parameter: String::new() }],
            ..Default::default()
        });
        (r, meters)
    }

    fn send(r: &mut ThrottledNackResponder<rtc::interceptor::NackResponderInterceptor>, now: Instant, seq: u16) {
        let mut rtp = rtc::rtp::Packet::default();
        rtp.header.version = 2;
        rtp.header.ssrc = VIDEO;
        rtp.header.sequence_number = seq;
        rtp.payload = vec![0u8; 100].into();
        r.handle_write(TaggedPacket {
            now,
            transport: Default::default(),
            message: AttributedPacket::new(Packet::Rtp(rtp)),
        })
        .unwrap();
        while r.poll_write().is_some() {}
    }

    /// The partner's NACK for `seqs` arrives at `now`; returns the sequence numbers resent.
    fn nack(
        r: &mut ThrottledNackResponder<rtc::interceptor::NackResponderInterceptor>,
        now: Instant,
        seqs: &[u16],
    ) -> Vec<u16> {
        let nack =
            TransportLayerNack { sender_ssrc: 1, media_ssrc: VIDEO, nacks: nack_pairs_from_sequence_numbers(seqs) };
        let packets: Vec<Box<dyn rtc::rtcp::Packet>> = vec![Box::new(nack)];
        r.handle_read(TaggedPacket {
            now,
            transport: Default::default(),
            message: AttributedPacket::new(Packet::Rtcp(packets)),
        })
        .unwrap();
        while r.poll_read().is_some() {}
        let mut resent = Vec::new();
        while let Some(p) = r.poll_write() {
            if let Packet::Rtp(rtp) = p.message.packet {
                assert_eq!(rtp.header.ssrc, RTX);
                resent.push(u16::from_be_bytes([rtp.payload[0], rtp.payload[1]]));
            }
        }
        resent
    }

    #[test]
    fn a_packet_asked_for_again_within_a_round_trip_is_resent_once() {
        let (mut r, meters) = responder();
        meters.feedback_rtt_us.store(300_000, Ordering::Relaxed);
        let t0 = Instant::now();
        for seq in 10..20 {
            send(&mut r, t0, seq);
        }
        let ms = Duration::from_millis;
        assert_eq!(nack(&mut r, t0 + ms(30), &[12, 13]), vec![12, 13]);
        // The partner's second and third requests, 100 ms apart, cross the copies in flight.
        assert_eq!(nack(&mut r, t0 + ms(130), &[12, 13, 15]), vec![15]);
        assert_eq!(nack(&mut r, t0 + ms(230), &[12, 13, 15]), Vec::<u16>::new());
    }

    #[test]
    fn packets_older_than_the_partner_waits_for_are_not_resent() {
        let (mut r, _) = responder();
        let t0 = Instant::now();
        send(&mut r, t0, 10);
        send(&mut r, t0 + Duration::from_millis(400), 11);
        assert_eq!(nack(&mut r, t0 + Duration::from_millis(450), &[10, 11]), vec![11]);
    }
}
