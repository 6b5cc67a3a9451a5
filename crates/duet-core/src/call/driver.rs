//! The call driver: one tokio task that wires signaling, the call machine, the peer
//! connection, chat and the media threads together. The application talks to it through
//! [`Call`] (commands) and a stream of [`CallEvent`]s.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use duet_media::{AudioSink, AudioSource, MediaClock, VideoSink, VideoSource};
use duet_proto::{ClientInfo, ClientMessage, IceServer, SignalPayload};
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::machine::{CallMachine, CallState, Command, Output, PeerState};
use super::recovery::Recovery;
use super::video_sync::{VideoState, VideoSync, VideoSyncOutput};
use crate::chat::{Chat, ChatOutput};
use crate::control::ControlMessage;
use crate::keepalive::{KeepAlive, KeepAliveOutput};
use crate::media::{AudioReceiver, AudioSender, OutgoingAudio, OutgoingVideo, Received, VideoReceiver, VideoSender};
use crate::negotiation::Action;
use crate::peer::{Channel, Peer, PeerConfig, PeerEvent, PeerEvents, PeerStats};
use crate::quality::keyframe::KeyframeNeed;
use crate::quality::{AudioOnlyCause, QualityController, QualityOutput, QualityStatus, RungReason};
use crate::signaling::{SignalingClient, SignalingConfig, SignalingEvent};
use crate::summary::{CallSummary, SummaryBuilder};
use crate::turn;
use crate::verify::ShortAuthString;

/// The user's quality choice: Auto follows the ladder, High, Medium and Low cap it, Audio only
/// forces audio (see [`crate::quality`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    /// Follow the network, up to 720p30.
    Auto,
    /// Follow the network up to 720p30 (the same top as Auto today; kept apart for a higher top
    /// rung on sources that have one).
    High,
    /// Up to 360p30.
    Medium,
    /// Up to 180p15.
    Low,
    /// No video at all (never resumes by itself).
    AudioOnly,
}

/// Media the call sends: sources are opened by the caller (so their errors surface before
/// connecting) and handed over.
pub struct CallMedia {
    /// Video to send (`None`: receive-only).
    pub video: Option<(Box<dyn VideoSource>, bool)>,
    /// Audio to send (`None`: listen-only).
    pub audio: Option<(Box<dyn AudioSource>, bool)>,
    /// Where decoded partner video goes.
    pub video_sink: Box<dyn VideoSink>,
    /// Where decoded partner audio goes.
    pub audio_sink: Box<dyn AudioSink>,
    /// Clock of the sources' timestamps (for latency from embedded markers).
    pub clock: MediaClock,
}

/// How to run a call.
#[derive(Debug, Clone)]
pub struct CallConfig {
    /// `ws://` or `wss://` URL of the server's `/ws`.
    pub server_url: String,
    /// How this client introduces itself.
    pub client: ClientInfo,
    /// Local UDP address for media (`0.0.0.0:0`: all interfaces).
    pub bind: SocketAddr,
    /// Extra ICE servers (the user's own TURN), added to the server's.
    pub ice_servers: Vec<IceServer>,
    /// Relay-only ("hide my IP").
    pub relay_only: bool,
    /// PEM file of CA certificates trusted for a `wss://` server, in addition to the
    /// platform's roots.
    pub ca_cert: Option<PathBuf>,
    /// Initial quality.
    pub quality: Quality,
    /// How often [`CallEvent::Stats`] is emitted.
    pub stats_interval: Duration,
    /// Send the partner's own video and audio back to them (the "test call" bot).
    pub echo: bool,
}

impl CallConfig {
    /// Defaults for `server_url`.
    pub fn new(server_url: impl Into<String>) -> Self {
        Self {
            server_url: server_url.into(),
            client: ClientInfo {
                name: "duet".into(),
                version: Some(env!("CARGO_PKG_VERSION").into()),
                platform: None,
                device: None,
            },
            bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            ice_servers: Vec::new(),
            relay_only: false,
            ca_cert: None,
            quality: Quality::Auto,
            stats_interval: Duration::from_secs(1),
            echo: false,
        }
    }
}

/// What the application can ask of a call.
#[derive(Debug, Clone, PartialEq)]
pub enum CallCommand {
    /// A lifecycle command (start, room, next, stop, report, block).
    Call(Command),
    /// Send a chat message.
    SendChat(String),
    /// Mute or unmute the microphone.
    SetMuted(bool),
    /// Turn the camera on or off.
    SetCamera(bool),
    /// Change the quality.
    SetQuality(Quality),
    /// The partner's video is shown at this size (pixels): the partner never sends more.
    SetViewSize(u32, u32),
    /// The user's TURN servers or "Hide my IP" changed: they apply from the next peer
    /// connection on (the next partner, or a fresh connection with this one).
    SetIce {
        /// The user's own STUN/TURN servers (the server's are added to them).
        servers: Vec<IceServer>,
        /// Use and signal only relay addresses.
        relay_only: bool,
    },
    /// End everything (leave, close signaling) and emit the summary.
    Shutdown,
}

/// Once-a-second numbers.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CallStats {
    /// Peer connection statistics.
    #[serde(flatten)]
    pub peer: PeerStats,
    /// Video send bitrate over the last interval, kbit/s.
    pub video_send_kbps: f64,
    /// Video receive bitrate, kbit/s.
    pub video_recv_kbps: f64,
    /// Audio send bitrate, kbit/s.
    pub audio_send_kbps: f64,
    /// Audio receive bitrate, kbit/s.
    pub audio_recv_kbps: f64,
    /// Frames decoded per second.
    pub recv_fps: f64,
    /// Encoder target, kbit/s.
    pub encoder_kbps: u32,
    /// Round trip of the last keepalive on the `control` channel, ms.
    pub control_rtt_ms: Option<f64>,
    /// Video frames encoded so far.
    pub frames_encoded: u64,
    /// Encoded frames dropped before the network (queue full) so far.
    pub frames_dropped: u64,
    /// Partner frames decoded so far.
    pub frames_decoded: u64,
    /// Keyframes encoded so far (the first, on request, after drops).
    pub keyframes_encoded: u64,
    /// Partner keyframes refused so far for declaring too large a picture.
    pub video_frames_too_large: u64,
    /// Remote video size.
    pub recv_width: Option<u32>,
    /// Remote video height.
    pub recv_height: Option<u32>,
    /// The longest gap between two decoded partner audio frames that ended in this interval, ms.
    pub audio_gap_ms: Option<u64>,
}

/// What the call reports.
#[derive(Debug, Clone, PartialEq)]
pub enum CallEvent {
    /// The call state changed.
    State(CallState),
    /// Matched with a partner.
    Matched {
        /// The partner's session id.
        peer: String,
        /// Room name.
        room: String,
    },
    /// First media of a kind arrived from this partner (`"video"` / `"audio"`).
    MediaStarted(&'static str),
    /// A chat message from the partner.
    ChatReceived(String),
    /// Our chat message was queued under `id` (delivered later: [`CallEvent::ChatDelivered`]).
    ChatSent {
        /// Its id.
        id: u64,
        /// The text as sent (trimmed).
        text: String,
    },
    /// The partner has our chat message `id`.
    ChatDelivered(u64),
    /// The partner left before it had our chat message `id`; it will not be delivered.
    ChatUndelivered(u64),
    /// The string to compare with the partner's ("verify your partner"): the same on both
    /// sides unless someone sits in the middle of the call's encryption. New with each peer
    /// connection whose certificates differ.
    Verify(ShortAuthString),
    /// The partner turned their camera on/off.
    PeerVideo(bool),
    /// Our sending rung changed.
    Rung {
        /// The rung, e.g. `360p30`.
        rung: &'static str,
        /// Encoder target, kbit/s.
        target_kbps: u32,
        /// Why.
        reason: RungReason,
    },
    /// Video was suspended (`on`: audio-only) or resumed in one direction; the cause says which
    /// side and why (`network`/`choice`: ours, `partner_network`/`partner_choice`: theirs).
    AudioOnly {
        /// Audio-only now.
        on: bool,
        /// Why.
        cause: AudioOnlyCause,
    },
    /// The call's quality as the UIs show it (with every stats tick, and on changes).
    Quality(Box<QualityStatus>),
    /// Numbers.
    Stats(Box<CallStats>),
    /// Something the user should read.
    Notice(String),
    /// Media or signaling came back after an outage: what failed, what fixed it, how long it took.
    Recovered(Recovery),
    /// The call ended for good (after [`CallCommand::Shutdown`] or a fatal error).
    Finished(Box<CallSummary>),
}

/// Handle to a running call.
#[derive(Clone)]
pub struct Call {
    commands: mpsc::UnboundedSender<CallCommand>,
}

impl Call {
    /// Starts the call engine: connects to the server and waits for commands.
    pub fn start(cfg: CallConfig, media: CallMedia) -> (Call, mpsc::UnboundedReceiver<CallEvent>) {
        let (commands, cmd_rx) = mpsc::unbounded_channel();
        let (events, ev_rx) = mpsc::unbounded_channel();
        tokio::spawn(run(cfg, media, cmd_rx, events));
        (Call { commands }, ev_rx)
    }

    /// Sends a command.
    pub fn send(&self, cmd: CallCommand) {
        let _ = self.commands.send(cmd);
    }
}

/// How often the quality controller reads the transport's estimate.
const QUALITY_INTERVAL: Duration = Duration::from_millis(200);

struct Live {
    peer: Peer,
    events: PeerEvents,
    /// The ICE servers it was given (to name a TURN server that gave no relay address).
    ice_servers: Vec<IceServer>,
    /// A relay candidate was gathered.
    relay_gathered: bool,
    /// Made relay-only ("Hide my IP"): nothing but relay addresses leaves it.
    relay_only: bool,
}

struct Driver {
    cfg: CallConfig,
    events: mpsc::UnboundedSender<CallEvent>,
    signaling: SignalingClient,
    machine: CallMachine,
    live: Option<Live>,
    chat: Chat,
    /// The string last shown to compare with the partner.
    verification: Option<ShortAuthString>,
    summary: SummaryBuilder,
    clock: MediaClock,
    video_sender: Option<VideoSender>,
    audio_sender: Option<AudioSender>,
    video_receiver: Option<VideoReceiver>,
    audio_receiver: Option<AudioReceiver>,
    controller: QualityController,
    /// Our video state as the partner is told it, and the partner's.
    video_sync: VideoSync,
    view: Option<(u32, u32)>,
    camera_on: bool,
    video_dropped_seen: u64,
    seen_video: bool,
    seen_audio: bool,
    last_stats: Option<(Instant, PeerStats, u64)>,
    frames_decoded: u64,
    last_size: Option<(u32, u32)>,
    media_ready: bool,
    /// When to ask the server for fresh TURN credentials.
    ice_refresh_at: Option<Instant>,
    /// The keepalive of the current `control` channel.
    keepalive: Option<KeepAlive>,
    control_rtt: Option<Duration>,
    /// When partner media (any RTP) last arrived: a silent control channel alone, with media
    /// still arriving, is no lost path.
    last_media_rx: Instant,
    /// Whether we need a keyframe from the current partner, and when to ask again.
    keyframe_need: KeyframeNeed,
}

async fn run(
    cfg: CallConfig,
    media: CallMedia,
    mut commands: mpsc::UnboundedReceiver<CallCommand>,
    events: mpsc::UnboundedSender<CallEvent>,
) {
    let sig_cfg =
        SignalingConfig { client: cfg.client.clone(), ca_cert: cfg.ca_cert.clone(), ..SignalingConfig::default() };
    let (signaling, mut sig_rx) = SignalingClient::start(cfg.server_url.clone(), sig_cfg);
    let (video_tx, mut video_rx) = mpsc::channel::<OutgoingVideo>(crate::media::VIDEO_OUT_QUEUE);
    let (audio_tx, mut audio_rx) = mpsc::channel::<OutgoingAudio>(16);
    let (recv_tx, mut recv_rx) = mpsc::channel::<Received>(crate::media::RECEIVED_QUEUE);
    let source_size = media.video.as_ref().map_or((1280, 720, 30), |(s, _)| {
        let f = s.format();
        (f.width, f.height, f.frame_rate.as_f64().round() as u32)
    });
    let mut d = Driver {
        events: events.clone(),
        signaling,
        machine: CallMachine::new(),
        live: None,
        chat: Chat::new(),
        verification: None,
        summary: SummaryBuilder::new(),
        clock: media.clock,
        video_sender: None,
        audio_sender: None,
        video_receiver: None,
        audio_receiver: None,
        controller: QualityController::new(source_size, cfg.quality),
        video_sync: VideoSync::new(VideoState::ON, cfg.echo),
        view: None,
        camera_on: true,
        video_dropped_seen: 0,
        seen_video: false,
        seen_audio: false,
        last_stats: None,
        frames_decoded: 0,
        last_size: None,
        media_ready: false,
        keepalive: None,
        ice_refresh_at: None,
        control_rtt: None,
        last_media_rx: Instant::now(),
        keyframe_need: KeyframeNeed::default(),
        cfg,
    };
    if let Some((source, paced)) = media.video {
        // The lowest rung until the first estimate picks the real one.
        let lowest = crate::quality::LADDER[crate::quality::LADDER.len() - 1];
        match VideoSender::start(source, paced, lowest.into(), video_tx) {
            Ok(s) => {
                d.video_sender = Some(s);
                d.apply_video_state();
            }
            Err(e) => d.notice(format!("Video cannot be sent: {e}")),
        }
    }
    if let Some((source, paced)) = media.audio {
        match AudioSender::start(source, paced, audio_tx) {
            Ok(s) => d.audio_sender = Some(s),
            Err(e) => d.notice(format!("Audio cannot be sent: {e}")),
        }
    }
    match VideoReceiver::start(media.video_sink, d.clock, recv_tx.clone()) {
        Ok(r) => d.video_receiver = Some(r),
        Err(e) => d.notice(format!("Video cannot be received: {e}")),
    }
    match AudioReceiver::start(media.audio_sink, recv_tx) {
        Ok(r) => d.audio_receiver = Some(r),
        Err(e) => d.notice(format!("Audio cannot be received: {e}")),
    }
    let mut stats_tick = tokio::time::interval(d.cfg.stats_interval);
    stats_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut quality_tick = tokio::time::interval(QUALITY_INTERVAL);
    quality_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut network_changes = crate::netwatch::spawn();
    let mut shutting_down = false;
    loop {
        d.drain().await;
        if shutting_down {
            break;
        }
        let deadline = d.machine.poll_timeout().unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let control_at =
            d.keepalive.as_ref().map(KeepAlive::poll_timeout).into_iter().chain(d.video_sync.poll_timeout()).min();
        tokio::select! {
            ev = sig_rx.recv() => match ev {
                Some(SignalingEvent::Message(duet_proto::ServerMessage::IceServers { ice_servers })) => {
                    d.refresh_ice_servers(&ice_servers).await;
                    d.on_signaling(SignalingEvent::Message(duet_proto::ServerMessage::IceServers { ice_servers }));
                }
                Some(ev) => d.on_signaling(ev),
                None => {
                    // Signaling gave up (its Failed event was already handled).
                    shutting_down = true;
                }
            },
            ev = next_peer_event(&mut d.live) => {
                if let Some(ev) = ev {
                    d.on_peer(ev).await;
                }
            }
            cmd = commands.recv() => match cmd {
                Some(CallCommand::Shutdown) | None => {
                    d.machine.command(Command::Stop);
                    d.drain().await;
                    shutting_down = true;
                }
                Some(cmd) => d.on_command(cmd).await,
            },
            // Media goes out only once the path is up (before that, DTLS has no keys yet).
            Some(v) = video_rx.recv() => {
                if let Some(live) = d.live.as_ref().filter(|_| d.media_ready)
                    && live.peer.send_video(v.data, v.captured, v.duration).await {
                        d.summary.video_frame_sent();
                    }
            }
            Some(a) = audio_rx.recv() => {
                if let Some(live) = d.live.as_ref().filter(|_| d.media_ready)
                    && live.peer.send_audio(a.data, a.captured, a.duration).await {
                        d.summary.audio_frame_sent();
                    }
            }
            Some(r) = recv_rx.recv() => d.on_received(r).await,
            _ = quality_tick.tick() => d.on_quality_tick().await,
            Some(address_lost) = network_changes.recv() => {
                d.signaling.network_changed();
                d.machine.network_changed(Instant::now(), address_lost);
            }
            _ = stats_tick.tick() => {
                d.on_stats().await;
                d.chat.retransmit();
                d.flush_chat().await;
            }
            _ = tokio::time::sleep_until(deadline.into()) => d.machine.handle_timeout(Instant::now()),
            _ = tokio::time::sleep_until(d.ice_refresh_at.unwrap_or(deadline).into()), if d.ice_refresh_at.is_some() => {
                d.ice_refresh_at = None;
                d.signaling.send(ClientMessage::RefreshIceServers);
            }
            // The control channel's timers: the keepalive, our video state's re-sending.
            _ = tokio::time::sleep_until(control_at.unwrap_or(deadline).into()), if control_at.is_some() => {
                let out = d.keepalive.as_mut().map(|k| k.handle_timeout(Instant::now())).unwrap_or_default();
                d.on_keepalive(out).await;
                d.video_sync.handle_timeout(Instant::now());
                d.sync_video().await;
            }
        }
    }
    if let Some(live) = d.live.take() {
        live.peer.close().await;
    }
    // Let the `leave` reach the server before closing the socket.
    tokio::time::sleep(Duration::from_millis(100)).await;
    d.signaling.close();
    d.video_sender = None;
    d.audio_sender = None;
    let summary = d.summary.summary_at(d.clock.now_us());
    let _ = events.send(CallEvent::Finished(Box::new(summary)));
}

async fn next_peer_event(live: &mut Option<Live>) -> Option<PeerEvent> {
    match live {
        Some(l) => l.events.recv().await,
        None => std::future::pending().await,
    }
}

impl Driver {
    fn emit(&self, ev: CallEvent) {
        let _ = self.events.send(ev);
    }

    fn notice(&self, text: String) {
        warn!(text = ?text, "notice");
        self.emit(CallEvent::Notice(text));
    }

    fn on_signaling(&mut self, ev: SignalingEvent) {
        if let SignalingEvent::Message(duet_proto::ServerMessage::Matched { peer, room, .. }) = &ev {
            self.summary.matched(self.clock.now_us());
            // `media_started` is per partner.
            self.seen_video = false;
            self.seen_audio = false;
            self.emit(CallEvent::Matched { peer: peer.session_id.clone(), room: room.clone() });
        }
        if let SignalingEvent::Failed(e) = &ev {
            self.notice(e.to_string());
        }
        self.machine.signaling(Instant::now(), ev);
    }

    async fn on_command(&mut self, cmd: CallCommand) {
        match cmd {
            CallCommand::Call(c) => self.machine.command(c),
            CallCommand::SendChat(text) => match self.chat.send(&text) {
                Ok(id) => {
                    self.summary.chat_sent();
                    self.emit(CallEvent::ChatSent { id, text: text.trim().to_string() });
                }
                Err(e) => self.notice(format!("Message not sent: {e}")),
            },
            CallCommand::SetMuted(m) => {
                if let Some(a) = &self.audio_sender {
                    a.set_muted(m);
                }
            }
            CallCommand::SetCamera(on) => {
                self.camera_on = on;
                self.apply_video_state();
                self.sync_video().await;
            }
            CallCommand::SetQuality(q) => {
                self.controller.set_choice(Instant::now(), q);
                self.apply_quality().await;
            }
            CallCommand::SetIce { servers, relay_only } => {
                info!(relay_only, servers = servers.len(), "ICE settings apply from the next peer connection");
                self.cfg.ice_servers = servers;
                self.cfg.relay_only = relay_only;
            }
            CallCommand::SetViewSize(w, h) => {
                self.view = Some((w, h));
                self.send_control(ControlMessage::View { w, h }).await;
            }
            CallCommand::Shutdown => {}
        }
        self.flush_chat().await;
    }

    fn apply_video_state(&self) {
        let on = self.camera_on && self.controller.suspended().is_none();
        if let Some(v) = &self.video_sender {
            v.set_enabled(on);
        }
        if let (false, Some(live)) = (on, &self.live) {
            live.peer.drop_queued_video();
        }
    }

    async fn send_control(&self, msg: ControlMessage) {
        if let Some(live) = &self.live {
            live.peer.send_text(Channel::Control, &msg.encode()).await;
        }
    }

    /// Our video state as it is now goes to the partner (until acknowledged), the partner's to
    /// the application: carries out what the video state sync asked for.
    async fn sync_video(&mut self) {
        let sending = self.camera_on && self.video_sender.is_some();
        let cause = self.controller.suspended().filter(|_| sending);
        self.video_sync.set(Instant::now(), VideoState { on: sending && cause.is_none(), cause });
        while let Some(out) = self.video_sync.poll_output() {
            let event = match out {
                VideoSyncOutput::Send(msg) => {
                    self.send_control(msg).await;
                    continue;
                }
                VideoSyncOutput::PartnerAudioOnly { on, cause } => CallEvent::AudioOnly { on, cause },
                VideoSyncOutput::PartnerCamera(on) => CallEvent::PeerVideo(on),
            };
            // The partner's video stopped or started: the time in between is no freeze.
            self.summary.partner_video_paused();
            self.emit(event);
        }
        self.controller.set_partner_suspended(self.video_sync.partner_suspended());
    }

    /// Every [`QUALITY_INTERVAL`] while media flows: the controller reads the transport.
    async fn on_quality_tick(&mut self) {
        let Some(live) = self.live.as_ref().filter(|_| self.media_ready) else { return };
        let transport = live.peer.transport();
        // The send queue dropped video: the frames after it cannot be decoded without a keyframe.
        if transport.video_packets_dropped > self.video_dropped_seen {
            self.video_dropped_seen = transport.video_packets_dropped;
            if let Some(v) = &self.video_sender {
                v.request_keyframe();
            }
        }
        for result in live.peer.probe_results() {
            let c = result.cluster;
            let measured_kbps = result.rate_bps.map(|r| (r / 1000.0).round() as u32);
            info!(
                id = c.id,
                rate_kbps = (c.rate_bps / 1000.0).round() as u32,
                bytes = c.bytes,
                ?measured_kbps,
                held = result.held(),
                "probe"
            );
            self.summary.probed(result.held());
            self.controller.on_probe_result(Instant::now(), result);
        }
        let rtt = self.last_stats.as_ref().and_then(|s| s.1.rtt_ms);
        self.controller.update(Instant::now(), transport.estimate_bps, transport.acked_bps, transport.loss, rtt);
        self.apply_quality().await;
    }

    /// Carries out what the quality controller decided.
    async fn apply_quality(&mut self) {
        while let Some(out) = self.controller.poll_output() {
            match out {
                QualityOutput::Rung { rung, target_kbps, reason } => {
                    if let Some(v) = &self.video_sender {
                        v.set_limits(rung.into());
                        v.set_bitrate(target_kbps);
                    }
                    if reason != RungReason::Start {
                        self.summary.rung_changed();
                    }
                    info!(rung = rung.name, target_kbps, ?reason, "rung");
                    self.emit(CallEvent::Rung { rung: rung.name, target_kbps, reason });
                }
                QualityOutput::VideoBitrate(kbps) => {
                    if let Some(v) = &self.video_sender {
                        v.set_bitrate(kbps);
                    }
                }
                QualityOutput::AudioOnly { on, cause } => {
                    self.apply_video_state();
                    self.summary.audio_only(self.clock.now_us(), on);
                    self.sync_video().await;
                    info!(on, cause = cause.as_str(), "audio only");
                    self.emit(CallEvent::AudioOnly { on, cause });
                }
                QualityOutput::Audio(settings) => {
                    if let Some(a) = &self.audio_sender {
                        a.set_settings(settings);
                    }
                }
                QualityOutput::Probe(cluster) => {
                    if let Some(live) = &self.live {
                        live.peer.probe(cluster);
                    }
                }
            }
        }
    }

    /// Carries out everything the call machine asked for.
    async fn drain(&mut self) {
        while let Some(out) = self.machine.poll_output() {
            match out {
                Output::Signal(msg) => self.signaling.send(msg),
                Output::State(s) => {
                    if s == CallState::Connected {
                        self.summary.connected(self.clock.now_us());
                    }
                    self.emit(CallEvent::State(s));
                }
                Output::Notice(n) => self.notice(n),
                Output::PairingStarted => {
                    self.chat.start_pairing();
                    self.video_sync.new_partner();
                    self.verification = None;
                }
                Output::PairingEnded => self.chat.end_pairing(),
                Output::ClosePeer => {
                    self.media_ready = false;
                    self.keepalive = None;
                    self.video_sync.closed();
                    if let Some(live) = self.live.take() {
                        live.peer.close().await;
                    }
                    self.chat.closed();
                }
                Output::CreatePeer { polite, ice_servers } => {
                    let ice = turn::merge(&self.cfg.ice_servers, &ice_servers);
                    let cfg = PeerConfig {
                        ice_servers: ice.clone(),
                        bind: self.cfg.bind,
                        relay_only: self.cfg.relay_only,
                        ..PeerConfig::default()
                    };
                    match Peer::new(cfg).await {
                        Ok((peer, events)) => {
                            info!(polite, "peer connection ready");
                            self.ice_refresh_at = turn::refresh_after(&ice, unix_now()).map(|d| Instant::now() + d);
                            self.live = Some(Live {
                                peer,
                                events,
                                ice_servers: ice,
                                relay_gathered: false,
                                relay_only: self.cfg.relay_only,
                            });
                            // A new connection starts a new estimate, and perhaps a new partner.
                            self.controller.new_connection();
                            self.keyframe_need = KeyframeNeed::default();
                            self.video_dropped_seen = 0;
                            self.apply_quality().await;
                            self.sync_video().await;
                            if let Some(v) = &self.video_sender {
                                v.request_keyframe();
                            }
                        }
                        Err(e) => self.notice(format!("Could not set up the call: {e}")),
                    }
                }
                Output::Negotiate(action) => self.negotiate(action).await,
                Output::Recovered(recovery) => {
                    self.summary.recovered();
                    self.emit(CallEvent::Recovered(recovery));
                }
                Output::StaleSignalDropped => self.summary.stale_signal_dropped(),
            }
        }
        self.flush_chat().await;
    }

    async fn negotiate(&mut self, action: Action) {
        let Some(live) = &self.live else { return };
        let reports = !matches!(action, Action::AddCandidate(_) | Action::GiveUp(_));
        let result = live.peer.perform(&action).await;
        match result {
            Ok(signal) => {
                if let Some(mut payload) = signal {
                    if let SignalPayload::Description { description } = &mut payload
                        && live.relay_only
                    {
                        description.sdp = turn::without_non_relay_candidates(&description.sdp);
                    }
                    let generation = Some(self.machine.generation());
                    self.signaling.send(ClientMessage::Signal { payload, generation });
                }
                if reports {
                    self.machine.negotiation_result(Instant::now(), Ok(()));
                }
            }
            Err(e) => {
                warn!(error = %e, "negotiation step failed");
                if reports {
                    self.machine.negotiation_result(Instant::now(), Err(e.to_string()));
                }
            }
        }
    }

    async fn on_peer(&mut self, ev: PeerEvent) {
        match ev {
            PeerEvent::Candidate(candidate) => {
                let relay = turn::is_relay_candidate(&candidate.candidate);
                let Some(live) = self.live.as_mut() else { return };
                live.relay_gathered |= relay;
                let relay_only = live.relay_only;
                // Hide my IP: only relay addresses ever reach the partner.
                if relay_only && !relay {
                    debug!("non-relay candidate withheld (relay-only)");
                } else {
                    self.signaling.send(ClientMessage::Signal {
                        payload: SignalPayload::Candidate { candidate },
                        generation: Some(self.machine.generation()),
                    });
                }
            }
            PeerEvent::GatheringComplete => {
                let problem = self
                    .live
                    .as_ref()
                    .and_then(|l| turn::relay_problem(&l.ice_servers, l.relay_gathered, l.relay_only));
                if let Some(text) = problem {
                    self.notice(text);
                }
            }
            PeerEvent::State(s) => {
                self.machine.peer_state(Instant::now(), s);
                self.media_ready = s == PeerState::Connected;
                if s == PeerState::Connected {
                    if let Some(v) = &self.video_sender {
                        v.request_keyframe();
                    }
                    self.show_verification().await;
                }
            }
            // Tracks are fixed for the life of a connection (camera off = stop writing), so
            // the only negotiations are the first offer and ICE restarts, which the call
            // machine starts itself.
            PeerEvent::NegotiationNeeded => {}
            PeerEvent::VideoFrame { data, keyframe } => {
                let now = Instant::now();
                self.last_media_rx = now;
                if self.cfg.echo
                    && let Some(live) = &self.live
                {
                    live.peer.send_video(data.clone(), Instant::now(), Duration::from_micros(33_333)).await;
                }
                let queued = self.video_receiver.as_ref().is_some_and(|r| r.push(data));
                if !queued {
                    self.keyframe_needed().await;
                } else if self.keyframe_need.frame(now, keyframe) {
                    self.request_keyframe().await;
                }
            }
            PeerEvent::VideoGap => self.keyframe_needed().await,
            PeerEvent::AudioPacket { seq, data } => {
                self.last_media_rx = Instant::now();
                if self.cfg.echo
                    && let Some(live) = &self.live
                {
                    live.peer.send_audio(data.clone(), Instant::now(), Duration::from_millis(20)).await;
                }
                if let Some(r) = &self.audio_receiver {
                    r.push(seq, data);
                }
            }
            PeerEvent::KeyframeRequested => {
                if let Some(v) = &self.video_sender {
                    v.request_keyframe();
                }
                // An echo has no encoder: pass the request on to the partner's.
                if self.cfg.echo
                    && let Some(live) = &self.live
                {
                    live.peer.request_keyframe().await;
                }
            }
            PeerEvent::ChannelOpen(Channel::Chat) => self.chat.opened(),
            PeerEvent::ChannelOpen(Channel::Control) => {
                self.keepalive = Some(KeepAlive::new(Instant::now()));
                self.video_sync.opened(Instant::now());
                self.sync_video().await;
                if let Some((w, h)) = self.view {
                    self.send_control(ControlMessage::View { w, h }).await;
                }
            }
            PeerEvent::ChannelMessage(Channel::Chat, text) => self.chat.received(Instant::now(), &text),
            PeerEvent::ChannelMessage(Channel::Control, text) => {
                let msg = ControlMessage::parse(&text);
                // Anything on the channel shows the partner is there.
                let out = self.keepalive.as_mut().map(|k| k.received(Instant::now(), msg.as_ref())).unwrap_or_default();
                self.on_keepalive(out).await;
                match msg {
                    Some(ControlMessage::View { w, h }) => {
                        self.controller.set_partner_view(w, h);
                        self.apply_quality().await;
                    }
                    Some(msg) => self.video_sync.received(Instant::now(), &msg),
                    None => debug!("control message ignored"),
                }
                self.sync_video().await;
            }
            PeerEvent::ChannelClosed(Channel::Chat) => self.chat.closed(),
            PeerEvent::ChannelClosed(Channel::Control) => {
                self.keepalive = None;
                self.video_sync.closed();
            }
        }
        self.flush_chat().await;
    }

    /// Tells the application the string to compare with the partner, when it changed.
    async fn show_verification(&mut self) {
        let Some(live) = &self.live else { return };
        let Some((local, remote)) = live.peer.fingerprints().await else {
            warn!("no DTLS fingerprints to verify the partner with");
            return;
        };
        let sas = ShortAuthString::derive(&local, &remote);
        if self.verification.as_ref() != Some(&sas) {
            self.verification = Some(sas.clone());
            self.emit(CallEvent::Verify(sas));
        }
    }

    /// New TURN credentials from the server: the live connection re-signs its allocations with
    /// them before the old ones expire.
    async fn refresh_ice_servers(&mut self, from_server: &[IceServer]) {
        let merged = turn::merge(&self.cfg.ice_servers, from_server);
        if let Some(live) = self.live.as_mut() {
            if let Err(e) = live.peer.set_ice_servers(&merged, live.relay_only).await {
                warn!(error = %e, "fresh TURN credentials could not be applied");
            }
            live.ice_servers = merged.clone();
        }
        info!("TURN credentials refreshed");
        self.ice_refresh_at = turn::refresh_after(&merged, unix_now()).map(|d| Instant::now() + d);
    }

    /// Carries out what the keepalive asked for.
    async fn on_keepalive(&mut self, out: Vec<KeepAliveOutput>) {
        for o in out {
            match o {
                KeepAliveOutput::Send(msg) => self.send_control(msg).await,
                KeepAliveOutput::Rtt(rtt) => self.control_rtt = Some(rtt),
                KeepAliveOutput::Silent => {
                    let now = Instant::now();
                    if now.saturating_duration_since(self.last_media_rx) >= crate::keepalive::SILENT_AFTER {
                        self.machine.media_silent(now);
                    }
                }
                // ICE never said otherwise: the path is back.
                KeepAliveOutput::Heard if self.media_ready => {
                    self.machine.peer_state(Instant::now(), PeerState::Connected)
                }
                KeepAliveOutput::Heard => {}
            }
        }
    }

    /// Our decoder needs a keyframe: the partner is asked now, or with its next frames if it was
    /// asked less than [`crate::quality::keyframe::KEYFRAME_REQUEST_INTERVAL`] ago.
    async fn keyframe_needed(&mut self) {
        if self.keyframe_need.needed(Instant::now()) {
            self.request_keyframe().await;
        }
    }

    /// Asks the partner for a keyframe, unless its video is off (nothing to repair then).
    async fn request_keyframe(&self) {
        if !self.video_sync.partner_on() {
            return;
        }
        if let Some(live) = &self.live {
            live.peer.request_keyframe().await;
        }
    }

    async fn flush_chat(&mut self) {
        for out in self.chat.drain() {
            match out {
                ChatOutput::Transmit(text) => {
                    if let Some(live) = &self.live {
                        live.peer.send_text(Channel::Chat, &text).await;
                    }
                }
                ChatOutput::Received { text, .. } => {
                    self.summary.chat_received();
                    self.emit(CallEvent::ChatReceived(text));
                }
                ChatOutput::Delivered { id } => self.emit(CallEvent::ChatDelivered(id)),
                ChatOutput::Undelivered { id } => self.emit(CallEvent::ChatUndelivered(id)),
            }
        }
    }

    async fn on_received(&mut self, r: Received) {
        match r {
            Received::Video { now_us, width, height, marker } => {
                self.summary.video_frame(now_us, width, height, marker);
                self.frames_decoded += 1;
                self.last_size = Some((width, height));
                if !self.seen_video {
                    self.seen_video = true;
                    self.emit(CallEvent::MediaStarted("video"));
                }
            }
            Received::NeedKeyframe => self.keyframe_needed().await,
            Received::Audio => {
                self.summary.audio_frame(self.clock.now_us());
                if !self.seen_audio {
                    self.seen_audio = true;
                    self.emit(CallEvent::MediaStarted("audio"));
                }
            }
        }
    }

    /// Once a second: stats and the quality status to the application.
    async fn on_stats(&mut self) {
        let Some(live) = &self.live else { return };
        let stats = live.peer.stats().await;
        self.summary.bytes(self.clock.now_us(), stats.bytes_sent, stats.bytes_received);
        let quality = self.controller.status();
        let now = Instant::now();
        let (frames_encoded, frames_dropped) = self.video_sender.as_ref().map_or((0, 0), VideoSender::counters);
        let mut out = CallStats {
            peer: stats.clone(),
            encoder_kbps: quality.target_kbps,
            control_rtt_ms: self.control_rtt.map(|d| d.as_secs_f64() * 1000.0),
            frames_encoded,
            frames_dropped,
            frames_decoded: self.frames_decoded,
            keyframes_encoded: self.video_sender.as_ref().map_or(0, VideoSender::keyframes),
            video_frames_too_large: self.video_receiver.as_ref().map_or(0, VideoReceiver::frames_too_large),
            recv_width: self.last_size.map(|s| s.0),
            recv_height: self.last_size.map(|s| s.1),
            audio_gap_ms: self.summary.take_audio_gap_ms(),
            ..CallStats::default()
        };
        if let Some((t, prev, frames)) = &self.last_stats {
            let secs = now.duration_since(*t).as_secs_f64().max(0.001);
            let kbps = |now: u64, before: u64| now.saturating_sub(before) as f64 * 8.0 / 1000.0 / secs;
            out.video_send_kbps = kbps(stats.video_out.bytes, prev.video_out.bytes);
            out.video_recv_kbps = kbps(stats.video_in.bytes, prev.video_in.bytes);
            out.audio_send_kbps = kbps(stats.audio_out.bytes, prev.audio_out.bytes);
            out.audio_recv_kbps = kbps(stats.audio_in.bytes, prev.audio_in.bytes);
            out.recv_fps = (self.frames_decoded - frames) as f64 / secs;
        }
        self.last_stats = Some((now, stats, self.frames_decoded));
        self.emit(CallEvent::Stats(Box::new(out)));
        self.emit(CallEvent::Quality(Box::new(quality)));
    }
}

/// Wall-clock seconds since the Unix epoch (TURN credential expiry is in those).
fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
