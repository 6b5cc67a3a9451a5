//! Connection statistics, read from webrtc's stats report once a second.
//!
//! Known gaps of webrtc 0.21 worked around here: candidate ids in the selected pair must be
//! matched by suffix, jitter is in RTP clock units, and remote-inbound RTT/loss are never
//! filled (the ICE pair RTT and the receive-side loss are used instead).

use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use serde::Serialize;
use webrtc::peer_connection::{RTCStatsReport, RTCStatsReportEntry};

/// One direction of one media kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TrackStats {
    /// RTP packets.
    pub packets: u64,
    /// Packets lost (receive side).
    pub packets_lost: i64,
    /// Payload bytes.
    pub bytes: u64,
    /// Interarrival jitter in ms (receive side).
    pub jitter_ms: f64,
}

/// A snapshot of the connection.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PeerStats {
    /// ICE round-trip time of the selected pair, in ms.
    pub rtt_ms: Option<f64>,
    /// `host`, `srflx`, `prflx` or `relay`.
    pub local_candidate: Option<String>,
    /// The partner's candidate type.
    pub remote_candidate: Option<String>,
    /// Transport bytes sent.
    pub bytes_sent: u64,
    /// Transport bytes received.
    pub bytes_received: u64,
    /// Video we send.
    pub video_out: TrackStats,
    /// Audio we send.
    pub audio_out: TrackStats,
    /// Video we receive.
    pub video_in: TrackStats,
    /// Audio we receive.
    pub audio_in: TrackStats,
    /// The congestion controller's target, in bit/s.
    pub target_bitrate_bps: f64,
    /// Partner video frames dropped during assembly for going over the size bound.
    pub video_frames_oversized: u64,
    /// Partner video frames and audio packets dropped because the call engine was behind.
    pub media_dropped: u64,
    /// Partner keyframe requests ignored for coming too soon after the last one.
    pub keyframe_requests_ignored: u64,
}

pub(super) fn from_report(report: &RTCStatsReport, target_bitrate_bps: f64) -> PeerStats {
    let mut s = PeerStats { target_bitrate_bps, ..PeerStats::default() };
    if let Some(t) = report.transport() {
        s.bytes_sent = t.bytes_sent;
        s.bytes_received = t.bytes_received;
        if let Some(RTCStatsReportEntry::IceCandidatePair(pair)) = report.get(&t.selected_candidate_pair_id) {
            s.rtt_ms = Some(pair.current_round_trip_time * 1000.0);
            let kind_of = |id: &str| {
                report.iter().find_map(|e| match e {
                    RTCStatsReportEntry::LocalCandidate(c) | RTCStatsReportEntry::RemoteCandidate(c)
                        if !id.is_empty() && e.id().ends_with(id) =>
                    {
                        Some(c.candidate_type.to_string())
                    }
                    _ => None,
                })
            };
            s.local_candidate = kind_of(&pair.local_candidate_id);
            s.remote_candidate = kind_of(&pair.remote_candidate_id);
        }
    }
    for o in report.outbound_rtp_streams() {
        let sent = &o.sent_rtp_stream_stats;
        let target =
            if sent.rtp_stream_stats.kind == RtpCodecKind::Video { &mut s.video_out } else { &mut s.audio_out };
        target.packets += sent.packets_sent;
        target.bytes += sent.bytes_sent;
    }
    for i in report.inbound_rtp_streams() {
        let r = &i.received_rtp_stream_stats;
        let (target, clock) = if r.rtp_stream_stats.kind == RtpCodecKind::Video {
            (&mut s.video_in, 90_000.0)
        } else {
            (&mut s.audio_in, 48_000.0)
        };
        target.packets += r.packets_received;
        target.packets_lost += r.packets_lost;
        target.bytes += i.bytes_received;
        target.jitter_ms = r.jitter / clock * 1000.0;
    }
    s
}
