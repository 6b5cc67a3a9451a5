//! The interceptors the application adds to webrtc's chain: one that publishes the congestion
//! controller's estimate and the loss it sees (the API offers no other way to read them), the
//! send queue that keeps audio first and the delay bounded ([`PriorityPacer`], around
//! [`crate::quality::pacer::Pacer`]), and one that hands keyframe requests (PLI/FIR) to the
//! sending track (by default inbound RTCP stops at the end of the interceptor chain).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rtc::shared::marshal::MarshalSize;

use crate::quality::AckedRate;
use crate::quality::pacer::{Class, PACING_FACTOR, Pacer};

use rtc::interceptor::{
    Attribute, BandwidthEstimator, EstimatorStats, Interceptor, Packet, PacketReport, StreamInfo, TaggedPacket,
};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
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
}

impl TransportMeters {
    pub(super) fn load(value: &AtomicU64) -> f64 {
        f64::from_bits(value.load(Ordering::Relaxed))
    }
}

/// Wraps a bandwidth estimator and publishes its target and the loss it sees after every update.
pub(super) struct ReportingEstimator<E: BandwidthEstimator> {
    inner: E,
    meters: Arc<TransportMeters>,
    acked: AckedRate,
}

impl<E: BandwidthEstimator> ReportingEstimator<E> {
    pub(super) fn new(inner: E, meters: Arc<TransportMeters>) -> Self {
        meters.acked_bps.store(f64::NAN.to_bits(), Ordering::Relaxed);
        let this = Self { inner, meters, acked: AckedRate::default() };
        this.publish();
        this
    }

    fn publish(&self) {
        self.meters.target_bps.store(self.inner.target_bitrate().to_bits(), Ordering::Relaxed);
        self.meters.loss.store(self.inner.stats().packet_loss.unwrap_or(0.0).to_bits(), Ordering::Relaxed);
    }
}

impl<E: BandwidthEstimator> BandwidthEstimator for ReportingEstimator<E> {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        self.inner.on_reports(now, reports);
        for r in reports.iter().filter(|r| r.arrived) {
            self.acked.add(now, r.size);
        }
        let acked = self.acked.rate_bps(now).unwrap_or(f64::NAN);
        self.meters.acked_bps.store(acked.to_bits(), Ordering::Relaxed);
        self.publish();
    }

    fn target_bitrate(&self) -> f64 {
        self.inner.target_bitrate()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.inner.handle_timeout(now);
        self.publish();
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.inner.poll_timeout()
    }

    fn stats(&self) -> EstimatorStats {
        self.inner.stats()
    }
}

/// The send queue in the pacer's slot: audio leaves at once, video is paced at the estimate
/// (times [`PACING_FACTOR`]) and dropped, whole frames at a time, when it has waited too long.
/// Packets are classed by SSRC: the streams bound with an `audio/` codec are audio.
pub(super) struct PriorityPacer {
    pacer: Pacer<TaggedPacket>,
    audio_ssrcs: HashSet<u32>,
    meters: Arc<TransportMeters>,
    /// RTCP and audio: out at once.
    urgent: VecDeque<TaggedPacket>,
    released: VecDeque<TaggedPacket>,
    read: VecDeque<TaggedPacket>,
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
        if let Some(audio) = self.pacer.push(now, msg, bytes, class) {
            self.urgent.push_back(audio);
        }
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.urgent.pop_front().or_else(|| self.released.pop_front())
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        for mut packet in self.pacer.release(now) {
            // The departure instant: what leaves now is recorded as leaving now, so the queueing
            // here is never charged to the network.
            packet.now = now;
            self.released.push_back(packet);
        }
        self.meters.video_dropped.store(self.pacer.dropped_video(), Ordering::Relaxed);
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.pacer.poll_timeout()
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
        }
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.audio_ssrcs.remove(&info.ssrc);
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
