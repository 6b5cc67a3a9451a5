//! One WebRTC peer connection (webrtc 0.21): a VP8 and an Opus track each way, the `chat`
//! and `control` data channels, trickle ICE, congestion control with a readable estimate,
//! keyframe requests both ways, and stats.
//!
//! The peer moves *encoded* media: the media pipeline encodes/decodes on its own threads.
//! Everything the connection reports arrives as [`PeerEvent`]s through [`PeerEvents`], bounded
//! wherever the partner feeds them; negotiation decisions are taken by
//! [`crate::negotiation::Negotiator`], this type only performs them. The partner's keyframe
//! requests are passed on at most once per [`KEYFRAME_MIN_INTERVAL`].

mod assembler;
mod events;
mod interceptors;
mod stats;

use crate::quality::{ProbeCluster, ProbeResult};
use crate::verify::Fingerprint;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use duet_proto::{IceCandidate, IceServer, SdpType, SessionDescription, SignalPayload};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::network_type::NetworkType;
use rtc::interceptor::{
    CongestionControlBuilder, NackGeneratorBuilder, NackResponderBuilder, Slot, TwccReceiverBuilder, TwccSenderBuilder,
};
use rtc::media::Sample;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_RTX, MIME_TYPE_VP8};
use rtc::peer_connection::transport::RTCDtlsRole;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RTCRtpHeaderExtensionCapability, RTCRtpRtxParameters, RtpCodecKind, TYPE_RTCP_FB_NACK, TYPE_RTCP_FB_TRANSPORT_CC,
};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit, RTCDataChannelState};
use webrtc::media_stream::MediaStreamTrack;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceCandidateInit, RTCIceGatheringState, RTCIceServer, RTCIceTransportPolicy, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSdpType, RTCSessionDescription, Registry, SettingEngineBuilder, configure_rtcp_reports,
    configure_simulcast_extension_headers,
};
use webrtc::rtp_transceiver::RtpSender;

pub use events::PeerEvents;
pub use stats::{PeerStats, TrackStats};

use crate::call::PeerState;
use crate::negotiation::Action;
use crate::quality::bwe::Estimator;
use crate::quality::keyframe::{KEYFRAME_MIN_INTERVAL, KeyframeThrottle};
use crate::quality::{MAX_ESTIMATE_BPS, MIN_ESTIMATE_BPS, START_ESTIMATE_BPS};
use events::{EventSender, Refusals};
use interceptors::{
    KeyframeRequestForwarder, PriorityPacer, ReportingEstimator, ThrottledNackResponder, TransportMeters,
    WithRepairStream,
};

const VIDEO_SSRC_BASE: u32 = 0x4455_0000;
const AUDIO_SSRC_BASE: u32 = 0x4455_8000;
const VIDEO_PT: u8 = 96;
/// Retransmissions (RFC 4588) of VP8 on their own payload type and SSRC.
const RTX_PT: u8 = 97;
const OPUS_PT: u8 = 111;

/// How a peer connection is set up.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// STUN/TURN servers.
    pub ice_servers: Vec<IceServer>,
    /// Local UDP address for host candidates: `0.0.0.0:0` for every interface, a concrete
    /// address to use only that one (tests use `127.0.0.1:0`).
    pub bind: SocketAddr,
    /// Only relay (TURN) candidates: the partner never learns our address.
    pub relay_only: bool,
    /// Congestion control start / min / max, in bit/s.
    pub bitrate_bps: (f64, f64, f64),
}

impl Default for PeerConfig {
    fn default() -> Self {
        Self {
            ice_servers: Vec::new(),
            bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            relay_only: false,
            bitrate_bps: (START_ESTIMATE_BPS, MIN_ESTIMATE_BPS, MAX_ESTIMATE_BPS),
        }
    }
}

/// Which data channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Reliable, ordered text chat.
    Chat,
    /// Reliable, ordered control messages (keepalive, video paused, ...).
    Control,
}

/// What the peer connection reports.
#[derive(Debug, Clone)]
pub enum PeerEvent {
    /// Local candidate gathering finished (every STUN/TURN server answered or gave up).
    GatheringComplete,
    /// A local ICE candidate to signal to the partner.
    Candidate(IceCandidate),
    /// The connection state changed.
    State(PeerState),
    /// Tracks changed: a negotiation is needed.
    NegotiationNeeded,
    /// One whole encoded VP8 frame from the partner.
    VideoFrame {
        /// The frame.
        data: Bytes,
        /// True for a keyframe.
        keyframe: bool,
    },
    /// Partner video frames were lost for good: the decoder needs a keyframe.
    VideoGap,
    /// One Opus packet from the partner.
    AudioPacket {
        /// Its RTP sequence number (the jitter buffer reorders by it).
        seq: u16,
        /// The packet.
        data: Bytes,
    },
    /// The partner asked for a keyframe (PLI/FIR). Passed on at most once per
    /// [`KEYFRAME_MIN_INTERVAL`]: the requests in between are ignored.
    KeyframeRequested,
    /// A data channel opened.
    ChannelOpen(Channel),
    /// A text message on a data channel.
    ChannelMessage(Channel, String),
    /// A data channel closed (the partner closed its connection, or ours is closing).
    ChannelClosed(Channel),
}

/// A peer connection failure, worded for logs and users.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct PeerError {
    context: &'static str,
    #[source]
    source: webrtc::error::Error,
}

/// webrtc's configuration for these ICE servers and policy.
fn rtc_configuration(servers: &[IceServer], relay_only: bool) -> webrtc::peer_connection::RTCConfiguration {
    let ice_servers = servers
        .iter()
        .map(|s| RTCIceServer {
            urls: s.urls.clone(),
            username: s.username.clone().unwrap_or_default(),
            credential: s.credential.clone().unwrap_or_default(),
        })
        .collect();
    let policy = if relay_only { RTCIceTransportPolicy::Relay } else { RTCIceTransportPolicy::All };
    RTCConfigurationBuilder::new().with_ice_servers(ice_servers).with_ice_transport_policy(policy).build()
}

fn ctx(context: &'static str) -> impl FnOnce(webrtc::error::Error) -> PeerError {
    move |source| PeerError { context, source }
}

/// The partner's video track and its SSRC (for keyframe requests).
type RemoteVideo = Arc<Mutex<Option<(Arc<dyn TrackRemote>, u32)>>>;

struct Handler {
    events: EventSender,
    local_ufrag: Arc<Mutex<String>>,
    remote_video: RemoteVideo,
    refusals: Arc<Refusals>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_negotiation_needed(&self) {
        self.events.send(PeerEvent::NegotiationNeeded).await;
    }

    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(init) => {
                let ufrag = self.local_ufrag.lock().map(|u| u.clone()).unwrap_or_default();
                let candidate = IceCandidate {
                    candidate: init.candidate,
                    // to_json() leaves the mid empty; everything is bundled on the first m-line.
                    sdp_mid: Some(init.sdp_mid.filter(|m| !m.is_empty()).unwrap_or_else(|| "0".into())),
                    sdp_m_line_index: Some(init.sdp_mline_index.unwrap_or(0)),
                    username_fragment: (!ufrag.is_empty()).then_some(ufrag),
                };
                self.events.send(PeerEvent::Candidate(candidate)).await;
            }
            Err(e) => warn!(error = %e, "local candidate could not be serialised"),
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.events.send(PeerEvent::GatheringComplete).await;
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        debug!(%state, "peer connection state");
        let mapped = match state {
            RTCPeerConnectionState::Connected => PeerState::Connected,
            RTCPeerConnectionState::Disconnected => PeerState::Disconnected,
            RTCPeerConnectionState::Failed => PeerState::Failed,
            _ => PeerState::Connecting,
        };
        self.events.send(PeerEvent::State(mapped)).await;
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        tokio::spawn(receive_track(track, self.events.clone(), self.remote_video.clone(), self.refusals.clone()));
    }
}

/// A live peer connection. Dropping it does not close it: call [`Peer::close`].
pub struct Peer {
    pc: Arc<dyn PeerConnection>,
    video: Arc<TrackLocalStaticSample>,
    audio: Arc<TrackLocalStaticSample>,
    video_sender: Arc<dyn RtpSender>,
    audio_sender: Arc<dyn RtpSender>,
    video_ssrc: u32,
    audio_ssrc: u32,
    video_pt: Mutex<Option<u8>>,
    audio_pt: Mutex<Option<u8>>,
    chat: Arc<dyn DataChannel>,
    control: Arc<dyn DataChannel>,
    local_ufrag: Arc<Mutex<String>>,
    meters: Arc<TransportMeters>,
    refusals: Arc<Refusals>,
    remote_video: RemoteVideo,
    closed: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Peer {
    /// Builds the connection with both tracks and both data channels; events arrive on the
    /// returned receiver.
    pub async fn new(cfg: PeerConfig) -> Result<(Self, PeerEvents), PeerError> {
        let refusals = Arc::new(Refusals::default());
        let (events_tx, events) = events::queues(refusals.clone());
        let vp8 = RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_VP8.to_owned(),
                clock_rate: 90_000,
                channels: 0,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: vec![],
            },
            payload_type: VIDEO_PT,
        };
        let opus = RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.to_owned(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                rtcp_feedback: vec![],
            },
            payload_type: OPUS_PT,
        };
        let rtx = RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_RTX.to_owned(),
                clock_rate: 90_000,
                channels: 0,
                sdp_fmtp_line: format!("apt={VIDEO_PT}"),
                rtcp_feedback: vec![],
            },
            payload_type: RTX_PT,
        };
        let mut me = MediaEngine::default();
        // Codecs first: the interceptor helpers add NACK/TWCC feedback to registered codecs only.
        me.register_codec(vp8.clone(), RtpCodecKind::Video).map_err(ctx("registering VP8"))?;
        me.register_codec(rtx, RtpCodecKind::Video).map_err(ctx("registering RTX"))?;
        me.register_codec(opus.clone(), RtpCodecKind::Audio).map_err(ctx("registering Opus"))?;

        let (start, min, max) = cfg.bitrate_bps;
        let meters = Arc::new(TransportMeters::default());
        let estimator = ReportingEstimator::new(Estimator::new(start, min, max), meters.clone());
        let registry = congestion_control(estimator, PriorityPacer::new(start, meters.clone()), &mut me)
            .map_err(ctx("congestion control"))?;
        let registry = feedback_and_reports(registry, &mut me, meters.clone()).map_err(ctx("interceptors"))?;
        let registry = registry.with(Slot::from(14_000), KeyframeRequestForwarder::default());

        let settings = SettingEngineBuilder::new()
            .with_multicast_dns_mode(MulticastDnsMode::Disabled)
            .with_network_types(vec![NetworkType::Udp4])
            // The first DTLS flight waits for the next ICE check: a 20 ms interval (70 tries =
            // the default 1.4 s budget) connects in ~25 ms instead of ~205 ms.
            .with_ice_connection_attempts(Some(Duration::from_millis(20)), Some(70))
            // The answerer waits for the offerer's ClientHello (setup:passive). As the client, it
            // could send its hello before the answer reaches the offerer, which then drops it and
            // only gets the retransmission a second later (seen as 1.1 s first frames).
            .with_answering_dtls_role(RTCDtlsRole::Server)
            // When the partner's check arrives before its trickled candidate, the pair is
            // peer-reflexive and would wait 1 s (the default) before being accepted: one call
            // in three connected a second late on loopback. Accept it at once.
            .with_prflx_acceptance_min_wait(Some(Duration::ZERO))
            .build();
        let config = rtc_configuration(&cfg.ice_servers, cfg.relay_only);
        let local_ufrag = Arc::new(Mutex::new(String::new()));
        let remote_video: RemoteVideo = Arc::default();
        let handler = Arc::new(Handler {
            events: events_tx.clone(),
            local_ufrag: local_ufrag.clone(),
            remote_video: remote_video.clone(),
            refusals: refusals.clone(),
        });
        let pc = PeerConnectionBuilder::new()
            .with_configuration(config)
            .with_media_engine(me)
            .with_interceptor_registry(registry)
            .with_setting_engine(settings)
            .with_handler(handler as Arc<dyn PeerConnectionEventHandler>)
            .with_udp_addrs(vec![cfg.bind])
            .build()
            .await
            .map_err(ctx("creating the peer connection"))?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);

        let salt = rand::random::<u16>() as u32 & 0x7fff;
        let (video_ssrc, audio_ssrc) = (VIDEO_SSRC_BASE | salt, AUDIO_SSRC_BASE | salt);
        // Track ids must differ from the partner's: webrtc 0.21 routes inbound RTCP by track
        // id and checks remote tracks first, so equal ids would send PLIs for our video to
        // our copy of theirs.
        let track = |kind, ssrc: u32, codec: RTCRtpCodec, id: &str| {
            TrackLocalStaticSample::new(
                Instant::now(),
                MediaStreamTrack::new(
                    format!("duet-{salt:04x}"),
                    format!("{id}-{salt:04x}"),
                    id.to_owned(),
                    kind,
                    vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            ssrc: Some(ssrc),
                            // NACKed video packets are resent as RTX on the next SSRC.
                            rtx: (kind == RtpCodecKind::Video).then(|| RTCRtpRtxParameters { ssrc: ssrc + 1 }),
                            ..Default::default()
                        },
                        codec,
                        ..Default::default()
                    }],
                ),
            )
            .map(Arc::new)
            .map_err(ctx("creating a track"))
        };
        let video = track(RtpCodecKind::Video, video_ssrc, vp8.rtp_codec.clone(), "video")?;
        let audio = track(RtpCodecKind::Audio, audio_ssrc, opus.rtp_codec.clone(), "audio")?;
        let video_sender =
            pc.add_track(video.clone() as Arc<dyn TrackLocal>).await.map_err(ctx("adding the video track"))?;
        let audio_sender =
            pc.add_track(audio.clone() as Arc<dyn TrackLocal>).await.map_err(ctx("adding the audio track"))?;

        // Negotiated channels with fixed ids: both sides create the same two, so neither waits
        // for the other to announce them and glare cannot duplicate them.
        let init = |id| Some(RTCDataChannelInit { negotiated: Some(id), ..Default::default() });
        let chat = pc.create_data_channel("chat", init(0)).await.map_err(ctx("creating the chat channel"))?;
        let control = pc.create_data_channel("control", init(1)).await.map_err(ctx("creating the control channel"))?;

        let closed = Arc::new(AtomicBool::new(false));
        let tasks = vec![
            tokio::spawn(channel_loop(chat.clone(), Channel::Chat, events_tx.clone())),
            tokio::spawn(channel_loop(control.clone(), Channel::Control, events_tx.clone())),
            tokio::spawn(keyframe_requests(video.clone(), events_tx, closed.clone(), refusals.clone())),
        ];
        info!(bind = %cfg.bind, relay_only = cfg.relay_only, "peer connection created");
        Ok((
            Self {
                pc,
                video,
                audio,
                video_sender,
                audio_sender,
                video_ssrc,
                audio_ssrc,
                video_pt: Mutex::new(None),
                audio_pt: Mutex::new(None),
                chat,
                control,
                local_ufrag,
                meters,
                refusals,
                remote_video,
                closed,
                tasks,
            },
            events,
        ))
    }

    /// Creates an offer (with new ICE credentials if `ice_restart`), applies it locally and
    /// returns it for signaling.
    pub async fn make_offer(&self, ice_restart: bool) -> Result<SessionDescription, PeerError> {
        if ice_restart {
            self.pc.restart_ice().await.map_err(ctx("restarting ICE"))?;
        }
        let offer = self.pc.create_offer(None).await.map_err(ctx("creating an offer"))?;
        self.set_local(offer).await
    }

    /// Creates an answer to the applied remote offer, applies it and returns it.
    pub async fn make_answer(&self) -> Result<SessionDescription, PeerError> {
        let answer = self.pc.create_answer(None).await.map_err(ctx("creating an answer"))?;
        self.set_local(answer).await
    }

    async fn set_local(&self, desc: RTCSessionDescription) -> Result<SessionDescription, PeerError> {
        if let Some(ufrag) = desc.sdp.lines().find_map(|l| l.strip_prefix("a=ice-ufrag:"))
            && let Ok(mut u) = self.local_ufrag.lock()
        {
            *u = ufrag.trim().to_string();
        }
        let out = to_proto(&desc);
        self.pc.set_local_description(desc).await.map_err(ctx("applying the local description"))?;
        Ok(out)
    }

    /// Rolls back a pending local offer.
    pub async fn rollback(&self) -> Result<(), PeerError> {
        let mut rollback = RTCSessionDescription::default();
        rollback.sdp_type = RTCSdpType::Rollback;
        self.pc.set_local_description(rollback).await.map_err(ctx("rolling back"))
    }

    /// Applies a description from the partner.
    pub async fn apply_remote(&self, desc: &SessionDescription) -> Result<(), PeerError> {
        let mut d = RTCSessionDescription::default();
        d.sdp_type = match desc.sdp_type {
            SdpType::Offer => RTCSdpType::Offer,
            SdpType::Answer => RTCSdpType::Answer,
            SdpType::Pranswer => RTCSdpType::Pranswer,
            SdpType::Rollback => RTCSdpType::Rollback,
        };
        d.sdp = desc.sdp.clone();
        self.pc.set_remote_description(d).await.map_err(ctx("applying the remote description"))
    }

    /// Adds a candidate from the partner. An empty candidate (end of candidates) is a no-op.
    pub async fn add_candidate(&self, c: &IceCandidate) -> Result<(), PeerError> {
        let init = RTCIceCandidateInit {
            candidate: c.candidate.clone(),
            sdp_mid: c.sdp_mid.clone(),
            sdp_mline_index: c.sdp_m_line_index,
            username_fragment: c.username_fragment.clone(),
            ..Default::default()
        };
        self.pc.add_ice_candidate(init).await.map_err(ctx("adding a remote candidate"))
    }

    /// Performs one negotiation step; returns the signal to send to the partner, if any.
    pub async fn perform(&self, action: &Action) -> Result<Option<SignalPayload>, PeerError> {
        match action {
            Action::MakeOffer { ice_restart } => {
                let description = self.make_offer(*ice_restart).await?;
                Ok(Some(SignalPayload::Description { description }))
            }
            Action::MakeAnswer => {
                let description = self.make_answer().await?;
                Ok(Some(SignalPayload::Description { description }))
            }
            Action::RollbackLocal => self.rollback().await.map(|_| None),
            Action::ApplyRemote(desc) => self.apply_remote(desc).await.map(|_| None),
            Action::AddCandidate(c) => {
                // A stale candidate (e.g. from before an ICE restart) is not worth failing for.
                if let Err(e) = self.add_candidate(c).await {
                    debug!(error = %e, "remote candidate not added");
                }
                Ok(None)
            }
            Action::GiveUp(_) => Ok(None),
        }
    }

    /// Sends one encoded VP8 frame lasting `duration`. Before negotiation completes the frame
    /// is dropped (returns `false`).
    pub async fn send_video(&self, data: Bytes, captured: Instant, duration: Duration) -> bool {
        let Some(pt) = self.payload_type(&self.video_sender, &self.video_pt).await else { return false };
        let sample = Sample { data, duration, ..Sample::new(captured) };
        self.video.sample_writer(self.video_ssrc, pt).write_sample(&sample).await.is_ok()
    }

    /// Sends one Opus packet lasting `duration`.
    pub async fn send_audio(&self, data: Bytes, captured: Instant, duration: Duration) -> bool {
        let Some(pt) = self.payload_type(&self.audio_sender, &self.audio_pt).await else { return false };
        let sample = Sample { data, duration, ..Sample::new(captured) };
        self.audio.sample_writer(self.audio_ssrc, pt).write_sample(&sample).await.is_ok()
    }

    async fn payload_type(&self, sender: &Arc<dyn RtpSender>, cache: &Mutex<Option<u8>>) -> Option<u8> {
        if let Some(pt) = cache.lock().ok().and_then(|c| *c) {
            return Some(pt);
        }
        let params = sender.get_parameters().await.ok()?;
        let pt = params.rtp_parameters.codecs.first()?.payload_type;
        if let Ok(mut c) = cache.lock() {
            *c = Some(pt);
        }
        Some(pt)
    }

    /// Sends text on a data channel (dropped, and logged, if it is not open).
    pub async fn send_text(&self, channel: Channel, text: &str) -> bool {
        let dc = match channel {
            Channel::Chat => &self.chat,
            Channel::Control => &self.control,
        };
        let sent = dc.send_text(text).await;
        if let Err(e) = &sent {
            debug!(?channel, error = %e, "data channel message not sent");
        }
        sent.is_ok()
    }

    /// Uses these ICE servers from now on: new credentials for the same TURN servers re-sign
    /// the allocations in place (webrtc refreshes them with the new credential; the media path
    /// is not interrupted).
    pub async fn set_ice_servers(&self, servers: &[IceServer], relay_only: bool) -> Result<(), PeerError> {
        self.pc.set_configuration(rtc_configuration(servers, relay_only)).await.map_err(ctx("updating ICE servers"))
    }

    /// Asks the partner for a keyframe (after a decode error or loss we cannot repair). Not
    /// throttled here: see [`crate::quality::keyframe::KeyframeNeed`].
    pub async fn request_keyframe(&self) {
        let remote = self.remote_video.lock().ok().and_then(|r| r.clone());
        if let Some((track, media_ssrc)) = remote {
            let pli = PictureLossIndication { sender_ssrc: 0, media_ssrc };
            if let Err(e) = track.write_rtcp(vec![Box::new(pli)]).await {
                debug!(error = %e, "PLI not sent");
            }
        }
    }

    /// The congestion controller's current target, in bit/s.
    pub fn target_bitrate_bps(&self) -> f64 {
        TransportMeters::load(&self.meters.target_bps)
    }

    /// Video sending stopped: the send queue drops the video it still holds.
    pub fn drop_queued_video(&self) {
        self.meters.drop_queued_video.store(true, Ordering::Relaxed);
    }

    /// Sends a probe cluster (see [`crate::quality::probe`]).
    pub fn probe(&self, cluster: ProbeCluster) {
        self.meters.probes().requested.push_back(cluster);
    }

    /// The probe clusters measured since the last call.
    pub fn probe_results(&self) -> Vec<ProbeResult> {
        self.meters.probes().results.drain(..).collect()
    }

    /// What the transport measures now: estimate, loss on what we send, video dropped by the
    /// send queue.
    pub fn transport(&self) -> Transport {
        Transport {
            estimate_bps: self.target_bitrate_bps(),
            acked_bps: Some(TransportMeters::load(&self.meters.acked_bps)).filter(|a| a.is_finite()),
            loss: TransportMeters::load(&self.meters.loss),
            video_packets_dropped: self.meters.video_dropped.load(Ordering::Relaxed),
        }
    }

    /// The DTLS certificate fingerprints of our description and the partner's, once both are
    /// applied.
    pub async fn fingerprints(&self) -> Option<(Fingerprint, Fingerprint)> {
        let local = self.pc.current_local_description().await.or(self.pc.local_description().await)?;
        let remote = self.pc.current_remote_description().await.or(self.pc.remote_description().await)?;
        Some((Fingerprint::from_sdp(&local.sdp)?, Fingerprint::from_sdp(&remote.sdp)?))
    }

    /// A snapshot of the connection's statistics.
    pub async fn stats(&self) -> PeerStats {
        let report = self.pc.get_stats(Instant::now(), webrtc::peer_connection::StatsSelector::None).await;
        let mut stats = stats::from_report(&report, self.target_bitrate_bps());
        stats.video_frames_oversized = self.refusals.oversized_frames.load(Ordering::Relaxed);
        stats.media_dropped = self.refusals.media_dropped.load(Ordering::Relaxed);
        stats.keyframe_requests_ignored = self.refusals.keyframe_requests_ignored.load(Ordering::Relaxed);
        stats
    }

    /// Closes the connection and ends its tasks.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        if let Err(e) = self.pc.close().await {
            debug!(error = %e, "close reported an error");
        }
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What the transport measures, read at any time (see [`Peer::transport`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Transport {
    /// The bandwidth estimate, bit/s.
    pub estimate_bps: f64,
    /// The rate the partner acknowledged over the last second, bit/s (`None` at first).
    pub acked_bps: Option<f64>,
    /// The loss the partner reports on what we send, a fraction.
    pub loss: f64,
    /// Video packets the send queue dropped because they waited too long, so far.
    pub video_packets_dropped: u64,
}

/// Transport-wide congestion control as webrtc's `configure_congestion_control` sets it up
/// (TWCC feedback both ways, the estimator wire-most), with Duet's priority pacer in the
/// pacer's slot instead of webrtc's first-in-first-out one.
fn congestion_control<E: rtc::interceptor::BandwidthEstimator + 'static>(
    estimator: E,
    pacer: PriorityPacer,
    me: &mut MediaEngine,
) -> Result<Registry, webrtc::error::Error> {
    for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
        me.register_feedback(
            RTCPFeedback { typ: TYPE_RTCP_FB_TRANSPORT_CC.to_owned(), parameter: String::new() },
            kind,
        );
        me.register_header_extension(
            RTCRtpHeaderExtensionCapability { uri: rtc::sdp::extmap::TRANSPORT_CC_URI.to_owned() },
            kind,
            None,
        )?;
    }
    Ok(Registry::new()
        .with(Slot::CongestionControl, WithRepairStream(CongestionControlBuilder::new(estimator).build()))
        .with(Slot::Pacer, pacer)
        .with(Slot::TwccSender, WithRepairStream(TwccSenderBuilder::new().build()))
        .with(Slot::TwccReceiver, TwccReceiverBuilder::new().build()))
}

/// How often one lost packet is asked for again. webrtc's default is without end (every 100 ms
/// for as long as it stays in a 512-packet log): under a cap, those retransmissions of frames
/// long given up filled the link (measured: ~200 kb/s of retransmissions into a 300 kb/s cap
/// while the sender sent no video at all).
const MAX_NACKS_PER_PACKET: u16 = 3;

/// webrtc's `register_default_interceptors` (NACK with PLI, RTCP reports, the mid/rid header
/// extensions; TWCC comes with [`congestion_control`]), with retransmission requests bounded
/// and answered only while useful ([`ThrottledNackResponder`]).
fn feedback_and_reports(
    registry: Registry,
    me: &mut MediaEngine,
    meters: Arc<TransportMeters>,
) -> Result<Registry, webrtc::error::Error> {
    for parameter in ["", "pli"] {
        me.register_feedback(
            RTCPFeedback { typ: TYPE_RTCP_FB_NACK.to_owned(), parameter: parameter.to_owned() },
            RtpCodecKind::Video,
        );
    }
    configure_simulcast_extension_headers(me)?;
    let registry = registry
        .with(Slot::NackResponder, ThrottledNackResponder::new(NackResponderBuilder::new().build(), meters))
        .with(Slot::NackGenerator, NackGeneratorBuilder::new().with_max_nacks_per_packet(MAX_NACKS_PER_PACKET).build());
    Ok(configure_rtcp_reports(registry))
}

fn to_proto(desc: &RTCSessionDescription) -> SessionDescription {
    let sdp_type = match desc.sdp_type {
        RTCSdpType::Offer => SdpType::Offer,
        RTCSdpType::Pranswer => SdpType::Pranswer,
        RTCSdpType::Rollback => SdpType::Rollback,
        _ => SdpType::Answer,
    };
    SessionDescription { sdp_type, sdp: desc.sdp.clone() }
}

/// Reports a data channel's events. Negotiated channels do not always deliver `OnOpen` on
/// the side whose SCTP association opened first (webrtc 0.21), so the ready state is also
/// polled until the channel is seen open.
async fn channel_loop(dc: Arc<dyn DataChannel>, channel: Channel, events: EventSender) {
    let mut open = false;
    let mut check = tokio::time::interval(Duration::from_millis(50));
    loop {
        let ev = tokio::select! {
            ev = dc.poll() => match ev {
                Some(ev) => ev,
                None => return,
            },
            _ = check.tick(), if !open => {
                if matches!(dc.ready_state().await, Ok(RTCDataChannelState::Open)) {
                    open = true;
                    if !events.send(PeerEvent::ChannelOpen(channel)).await {
                        return;
                    }
                }
                continue;
            }
        };
        let out = match ev {
            DataChannelEvent::OnOpen if open => continue,
            DataChannelEvent::OnOpen => {
                open = true;
                PeerEvent::ChannelOpen(channel)
            }
            DataChannelEvent::OnMessage(m) => match String::from_utf8(m.data.to_vec()) {
                Ok(text) => PeerEvent::ChannelMessage(channel, text),
                Err(_) => continue,
            },
            DataChannelEvent::OnClose => {
                open = false;
                PeerEvent::ChannelClosed(channel)
            }
            _ => continue,
        };
        if !events.send(out).await {
            return;
        }
    }
}

/// Watches the video sender for PLI/FIR from the partner; passes on one per
/// [`KEYFRAME_MIN_INTERVAL`] and counts the others.
async fn keyframe_requests(
    video: Arc<TrackLocalStaticSample>,
    events: EventSender,
    closed: Arc<AtomicBool>,
    refusals: Arc<Refusals>,
) {
    let mut throttle = KeyframeThrottle::new(KEYFRAME_MIN_INTERVAL);
    while !closed.load(Ordering::Relaxed) {
        match video.poll().await {
            Some(TrackLocalEvent::OnRtcpPacket(_)) => {
                if !throttle.allow(Instant::now()) {
                    refusals.keyframe_requests_ignored.fetch_add(1, Ordering::Relaxed);
                } else if !events.send(PeerEvent::KeyframeRequested).await {
                    return;
                }
            }
            Some(_) => {}
            // Not bound yet (before negotiation) or closed: do not spin.
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Reassembles the partner's RTP into whole frames/packets.
async fn receive_track(
    track: Arc<dyn TrackRemote>,
    events: EventSender,
    remote_video: RemoteVideo,
    refusals: Arc<Refusals>,
) {
    let kind = track.kind().await;
    let ssrc = track.ssrcs().await.first().copied().unwrap_or(0);
    info!(?kind, ssrc, "remote track");
    if kind == RtpCodecKind::Video {
        if let Ok(mut r) = remote_video.lock() {
            *r = Some((track.clone(), ssrc));
        }
        let mut assembler = assembler::Vp8Assembler::new();
        while let Some(ev) = track.poll().await {
            if let TrackRemoteEvent::OnRtpPacket(pkt) = ev {
                let h = &pkt.header;
                let before = assembler.overflowed();
                let assembled = assembler.push(Instant::now(), h.sequence_number, h.timestamp, h.marker, &pkt.payload);
                let dropped = assembler.overflowed() - before;
                if dropped > 0 {
                    let total = refusals.oversized_frames.fetch_add(dropped, Ordering::Relaxed) + dropped;
                    debug!(total, "partner video frame over the size bound dropped");
                }
                for out in assembled {
                    let event = match out {
                        assembler::Assembled::Frame(data) => {
                            // VP8 frame tag: the P bit (bit 0 of the first byte) is 0 on keyframes.
                            let keyframe = data.first().is_some_and(|b| b & 0x01 == 0);
                            PeerEvent::VideoFrame { data, keyframe }
                        }
                        assembler::Assembled::Gap => PeerEvent::VideoGap,
                    };
                    if !events.send(event).await {
                        return;
                    }
                }
            }
        }
    } else {
        while let Some(ev) = track.poll().await {
            if let TrackRemoteEvent::OnRtpPacket(pkt) = ev
                && !pkt.payload.is_empty()
                && !events
                    .send(PeerEvent::AudioPacket { seq: pkt.header.sequence_number, data: pkt.payload.clone() })
                    .await
            {
                return;
            }
        }
    }
}
