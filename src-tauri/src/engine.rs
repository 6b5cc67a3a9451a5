//! Forwarding between the page and the call engine.
//!
//! One task owns the [`duet_core::call::Call`] (created on the first Start and kept across
//! calls, so the signaling session survives Next/Stop), the "test call" bot, and what the page
//! should show. Page commands go in as [`AppCommand`]s; the engine's events come out as
//! [`UiEvent`]s for the page and the tray. Call logic stays in `duet-core`: this module maps
//! states to what the user sees and turns settings into call configurations.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duet_core::call::{Call, CallCommand, CallConfig, CallEvent, CallState, CallStats, Command, Side};
use duet_core::devices::DeviceBackend;
use duet_core::media::DiscardVideoSink;
use duet_core::quality::{AudioOnlyCause, QualityStatus};
use duet_core::sources::{self, AudioSpec, VideoSpec};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::media_devices::{DeviceEvent, EngineDevices};
use crate::settings::{QualityChoice, Settings};
use crate::video_bridge::{PreviewSource, Stream, VideoBridge};

/// What the user sees at a glance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Nothing going on.
    #[default]
    Idle,
    /// Looking for a random partner.
    Searching,
    /// In a room, waiting for the friend.
    Waiting,
    /// Matched; media is being set up.
    Connecting,
    /// In a call with video.
    Connected,
    /// In a call, getting back after a network problem.
    Reconnecting,
    /// In a call with no video either way.
    AudioOnly,
    /// The call ended.
    Ended,
}

/// The status line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct StatusView {
    /// The state.
    pub status: Status,
    /// While reconnecting: `"you"` (our network) or `"partner"`.
    pub side: Option<&'static str>,
    /// Why the call ended.
    pub reason: Option<String>,
    /// The room code while waiting in a room.
    pub room: Option<String>,
    /// This is a test call with the echo bot.
    pub test_call: bool,
    /// Why our video is suspended, as the core says (`network`, `choice`).
    pub audio_only: Option<&'static str>,
    /// Why the partner's video is suspended (`partner_network`, `partner_choice`).
    pub partner_audio_only: Option<&'static str>,
}

/// The call controls' state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControlsView {
    /// Microphone muted.
    pub muted: bool,
    /// Camera on.
    pub camera_on: bool,
    /// Current quality.
    pub quality: QualityChoice,
    /// A camera (or other video source) is open.
    pub has_camera: bool,
    /// A microphone (or other audio source) is open.
    pub has_microphone: bool,
}

/// Once-a-second numbers for the stats overlay and the quality indicator.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct StatsView {
    /// Round-trip time, ms.
    pub rtt_ms: Option<f64>,
    /// Partner video packets lost over the last interval, percent.
    pub loss_pct: f64,
    /// Partner video jitter, ms.
    pub jitter_ms: f64,
    /// Everything we send, kbit/s.
    pub send_kbps: f64,
    /// Everything we receive, kbit/s.
    pub recv_kbps: f64,
    /// Partner video width.
    pub width: Option<u32>,
    /// Partner video height.
    pub height: Option<u32>,
    /// Partner frames decoded per second.
    pub fps: f64,
    /// `direct`, `relayed` or `unknown`.
    pub path: &'static str,
    /// Connection quality from the core: 1 (poor) to 4 (excellent) ...
    pub bars: u8,
    /// ... and why, in words.
    pub why: String,
    /// The rung we send, e.g. `360p30` (none while our video is off).
    pub rung: Option<&'static str>,
    /// Encoder target, kbit/s.
    pub encoder_kbps: u32,
}

/// Everything the page and the tray are told.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UiEvent {
    /// The status changed.
    Status(StatusView),
    /// The controls changed.
    Controls(ControlsView),
    /// Matched with a partner in `room`.
    Matched {
        /// Room name.
        room: String,
    },
    /// First `video` or `audio` from the partner.
    MediaStarted {
        /// `video` or `audio`.
        media: &'static str,
    },
    /// A chat message from the partner.
    ChatReceived {
        /// The text.
        text: String,
    },
    /// Our chat message, queued under `id`.
    ChatSent {
        /// Its id.
        id: u64,
        /// The text.
        text: String,
    },
    /// The partner has our message `id`.
    ChatDelivered {
        /// Its id.
        id: u64,
    },
    /// The partner left before it had our message `id`.
    ChatUndelivered {
        /// Its id.
        id: u64,
    },
    /// What to compare with the partner to know no one sits in the middle.
    Verify {
        /// Six emoji.
        emoji: String,
        /// Their names, to read out.
        words: String,
    },
    /// The partner turned their camera on or off.
    PeerVideo {
        /// On?
        on: bool,
    },
    /// Numbers.
    Stats(StatsView),
    /// Something the user should read.
    Notice {
        /// The text.
        text: String,
    },
    /// The microphone level while the settings' level meter is on, about ten times a second.
    MicLevel {
        /// Loudness of the last 100 ms after processing, dBFS (-100 for silence).
        rms_dbfs: f32,
    },
    /// The speaker test started or finished.
    SpeakerTest {
        /// A test sound is playing.
        playing: bool,
    },
    /// The cameras, microphones or speakers changed (plugged in or out).
    Devices(DevicesView),
}

/// One device in a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceView {
    /// Id to save.
    pub id: String,
    /// Name to show.
    pub name: String,
    /// The system default.
    pub is_default: bool,
}

/// The devices present, as the settings page lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DevicesView {
    /// Cameras.
    pub cameras: Vec<DeviceView>,
    /// Microphones.
    pub microphones: Vec<DeviceView>,
    /// Speakers.
    pub speakers: Vec<DeviceView>,
    /// Problems found while listing.
    pub notes: Vec<String>,
}

/// Where [`UiEvent`]s go.
pub trait UiSink: Send + Sync + 'static {
    /// Delivers one event.
    fn emit(&self, event: UiEvent);
}

/// What the page (or the tray) asks for.
#[derive(Debug)]
pub enum AppCommand {
    /// Find a random partner.
    Start {
        /// Interests (validated).
        interests: Vec<String>,
        /// Language (validated).
        language: Option<String>,
    },
    /// Join a friend's room (code validated).
    JoinRoom(String),
    /// A test call with the echo bot.
    TestCall,
    /// Skip to the next partner (ends a test call).
    Next,
    /// End the call or the search.
    Stop,
    /// Send a chat message (validated).
    SendChat(String),
    /// Mute or unmute.
    SetMuted(bool),
    /// Camera on/off.
    SetCamera(bool),
    /// Quality.
    SetQuality(QualityChoice),
    /// The partner's video is shown at this size (device pixels).
    SetViewSize(u32, u32),
    /// Report the partner.
    Report(String),
    /// Block the partner.
    Block,
    /// New settings (and the server they resolve to); applied at the next call if one is on.
    Reconfigure {
        /// The settings.
        settings: Box<Settings>,
        /// The server URL to use.
        server_url: String,
    },
    /// The server behind the same URL was replaced (our own embedded server took over the
    /// address): sessions on the old one are gone, so the next call uses a fresh engine.
    ServerReplaced,
    /// Turn the settings' microphone level meter on or off ([`UiEvent::MicLevel`]).
    MicTest(bool),
    /// Play a short test sound on the chosen speaker ([`UiEvent::SpeakerTest`]).
    SpeakerTest,
    /// End everything; answers when done.
    Quit(oneshot::Sender<()>),
}

/// Media choices that override the settings (tests and benchmarks: `DUET_VIDEO`, `DUET_AUDIO`).
#[derive(Debug, Clone, Default)]
pub struct MediaOverrides {
    /// Video to send instead of the camera.
    pub video: Option<VideoSpec>,
    /// Audio to send instead of the microphone.
    pub audio: Option<AudioSpec>,
    /// Play partner audio nowhere.
    pub mute_playback: bool,
}

/// How the engine runs.
pub struct EngineConfig {
    /// The settings at start.
    pub settings: Settings,
    /// The server to use.
    pub server_url: String,
    /// Media overrides.
    pub overrides: MediaOverrides,
    /// Local UDP address for media.
    pub bind: SocketAddr,
    /// Video to the page.
    pub bridge: VideoBridge,
    /// This installation's id for the server (blocks follow it across sessions).
    pub device_id: Option<String>,
    /// Cameras, microphones and speakers (the system's; scripted ones in tests).
    pub devices: Arc<dyn DeviceBackend>,
}

/// What the page reads when it (re)loads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    /// Status.
    pub status: StatusView,
    /// Controls.
    pub controls: ControlsView,
    /// The devices present.
    pub devices: DevicesView,
}

/// Handle to the engine task.
#[derive(Clone)]
pub struct Engine {
    tx: mpsc::UnboundedSender<AppCommand>,
    snapshot: Arc<Mutex<Snapshot>>,
}

impl Engine {
    /// Starts the engine task (inside a tokio runtime).
    pub fn start(cfg: EngineConfig, ui: Arc<dyn UiSink>) -> Engine {
        let (tx, rx) = mpsc::unbounded_channel();
        let controls = ControlsView {
            muted: false,
            camera_on: true,
            quality: cfg.settings.quality,
            has_camera: false,
            has_microphone: false,
        };
        let snapshot =
            Arc::new(Mutex::new(Snapshot { status: StatusView::default(), controls, devices: DevicesView::default() }));
        let task = Task::new(cfg, ui, snapshot.clone());
        tokio::spawn(task.run(rx));
        Engine { tx, snapshot }
    }

    /// Sends a command.
    pub fn send(&self, cmd: AppCommand) {
        let _ = self.tx.send(cmd);
    }

    /// The current status and controls.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Ends calls and waits (at most 2 s) for the engine to finish.
    pub async fn quit(&self) {
        let (tx, rx) = oneshot::channel();
        self.send(AppCommand::Quit(tx));
        let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
    }
}

/// `relayed` if either end of the selected pair is a TURN relay.
pub fn path_kind(local: Option<&str>, remote: Option<&str>) -> &'static str {
    match (local, remote) {
        (None, None) => "unknown",
        (l, r) if l == Some("relay") || r == Some("relay") => "relayed",
        _ => "direct",
    }
}

struct Live {
    call: Call,
    events: mpsc::UnboundedReceiver<CallEvent>,
}

struct Task {
    cfg: EngineConfig,
    ui: Arc<dyn UiSink>,
    snapshot: Arc<Mutex<Snapshot>>,
    live: Option<Live>,
    /// The live call was made with settings that changed since.
    stale: bool,
    bot: Option<Live>,
    state: CallState,
    status: StatusView,
    controls: ControlsView,
    peer_video: bool,
    /// The quality the core reports (rung, bars, audio-only either way).
    quality: Option<QualityStatus>,
    last_counts: Option<(u64, i64)>,
    /// The last Start/Join/Test request, until the call reacts to it. If the call engine
    /// stops first (its server was unreachable), the request is retried once on a new one.
    unanswered: Option<Request>,
    devices: EngineDevices,
}

/// A request that starts something.
#[derive(Debug, Clone)]
enum Request {
    Start { interests: Vec<String>, language: Option<String> },
    Room(String),
    Test,
}

/// Shuts a call engine down in the background; its remaining events are not shown.
fn retire(live: Live) {
    live.call.send(CallCommand::Shutdown);
    tokio::spawn(async move {
        let mut events = live.events;
        while events.recv().await.is_some() {}
    });
}

async fn next_event(live: &mut Option<Live>) -> Option<CallEvent> {
    match live {
        Some(l) => l.events.recv().await,
        None => std::future::pending().await,
    }
}

impl Task {
    fn new(cfg: EngineConfig, ui: Arc<dyn UiSink>, snapshot: Arc<Mutex<Snapshot>>) -> Self {
        let controls = snapshot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).controls.clone();
        let devices = EngineDevices::new(cfg.devices.clone(), &cfg.settings, cfg.overrides.clone());
        Self {
            cfg,
            ui,
            snapshot,
            live: None,
            stale: false,
            bot: None,
            state: CallState::Idle,
            status: StatusView::default(),
            controls,
            peer_video: true,
            quality: None,
            last_counts: None,
            unanswered: None,
            devices,
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<AppCommand>) {
        self.check_devices().await;
        loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(AppCommand::Quit(done)) => {
                        self.shutdown().await;
                        let _ = done.send(());
                        return;
                    }
                    Some(cmd) => self.command(cmd),
                    None => {
                        self.shutdown().await;
                        return;
                    }
                },
                ev = next_event(&mut self.live) => match ev {
                    Some(ev) => self.call_event(ev),
                    None => self.engine_stopped(),
                },
                ev = self.devices.next() => self.device_event(ev).await,
                ev = next_event(&mut self.bot) => match ev {
                    Some(CallEvent::Notice(text)) => warn!(%text, "test-call bot notice"),
                    Some(CallEvent::Finished(_)) | None => self.bot_stopped(),
                    Some(_) => {}
                },
            }
        }
    }

    /// Lists the devices at start, and says (without opening anything) if there is no camera or
    /// microphone to use.
    async fn check_devices(&mut self) {
        self.refresh_devices().await;
        let devices = self.devices.lists();
        if self.cfg.overrides.video.is_none() && devices.cameras.is_empty() {
            self.notice("No camera found: your calls will be receive-only until you connect one.");
        }
        if self.cfg.overrides.audio.is_none() && devices.microphones.is_empty() {
            self.notice("No microphone found: your partner will not hear you until you connect one.");
        }
    }

    async fn refresh_devices(&mut self) {
        let notices = self.devices.refresh().await;
        self.device_notices(notices);
    }

    async fn device_event(&mut self, ev: DeviceEvent) {
        match ev {
            DeviceEvent::Lost(lost) => {
                let notices = self.devices.lost(&lost);
                self.device_notices(notices);
            }
            DeviceEvent::List => self.refresh_devices().await,
            DeviceEvent::Meter => self.emit(UiEvent::MicLevel { rms_dbfs: self.devices.level_dbfs() }),
            DeviceEvent::SpeakerTestDone => {
                self.devices.speaker_test_done();
                self.emit(UiEvent::SpeakerTest { playing: false });
            }
        }
    }

    /// Shows what the devices did, and follows which ones there are and the call has now.
    fn device_notices(&mut self, notices: Vec<String>) {
        for text in notices {
            self.notice(text);
        }
        if let Some(view) = self.devices.changed_lists() {
            self.snapshot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).devices = view.clone();
            self.emit(UiEvent::Devices(view));
        }
        if self.live.is_some() {
            let (camera, microphone) = (self.devices.has_camera(), self.devices.has_microphone());
            if (camera, microphone) != (self.controls.has_camera, self.controls.has_microphone) {
                self.set_controls(|c| {
                    c.has_camera = camera;
                    c.has_microphone = microphone;
                });
                self.apply_camera();
            }
        }
    }

    /// Tells the call whether to send video: the user's camera switch, if a camera is there.
    fn apply_camera(&self) {
        if let Some(l) = &self.live {
            l.call.send(CallCommand::SetCamera(self.controls.camera_on && self.controls.has_camera));
        }
    }

    fn emit(&self, ev: UiEvent) {
        self.ui.emit(ev);
    }

    fn notice(&self, text: impl Into<String>) {
        self.emit(UiEvent::Notice { text: text.into() });
    }

    fn publish(&self) {
        let mut s = self.snapshot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        s.status = self.status.clone();
        s.controls = self.controls.clone();
    }

    fn set_status(&mut self, status: StatusView) {
        if status != self.status {
            self.status = status;
            self.publish();
            self.emit(UiEvent::Status(self.status.clone()));
        }
    }

    fn set_controls(&mut self, f: impl FnOnce(&mut ControlsView)) {
        f(&mut self.controls);
        self.publish();
        self.emit(UiEvent::Controls(self.controls.clone()));
        self.refresh_status();
    }

    fn sends_video(&self) -> bool {
        self.controls.has_camera && self.controls.camera_on && self.controls.quality != QualityChoice::AudioOnly
    }

    /// Video flows in at least one direction, as the core says.
    fn video_either_way(&self) -> bool {
        let (ours, theirs) = self.quality.as_ref().map_or((None, None), |q| (q.audio_only, q.partner_audio_only));
        (self.sends_video() && ours.is_none()) || (self.peer_video && theirs.is_none())
    }

    /// Recomputes the status from the call state and the media either way.
    fn refresh_status(&mut self) {
        let mut view = StatusView { test_call: self.bot.is_some(), ..StatusView::default() };
        if let (Some(q), CallState::Connected | CallState::Reconnecting { .. }) = (&self.quality, &self.state) {
            view.audio_only = q.audio_only.map(AudioOnlyCause::as_str);
            view.partner_audio_only = q.partner_audio_only.map(AudioOnlyCause::as_str);
        }
        view.status = match &self.state {
            CallState::Idle => Status::Idle,
            CallState::Searching => Status::Searching,
            CallState::WaitingInRoom { code } => {
                if !view.test_call {
                    view.room = Some(code.clone());
                }
                Status::Waiting
            }
            CallState::Connecting => Status::Connecting,
            CallState::Connected if !self.video_either_way() => Status::AudioOnly,
            CallState::Connected => Status::Connected,
            CallState::Reconnecting { side } => {
                view.side = Some(match side {
                    Side::Local => "you",
                    Side::Peer => "partner",
                });
                Status::Reconnecting
            }
            CallState::Ended { reason } => {
                view.reason = Some(reason.clone());
                Status::Ended
            }
        };
        self.set_status(view);
    }

    /// The user's call, created on first use (or again after settings changed).
    fn call(&mut self) -> Option<Call> {
        if self.stale {
            self.release();
        }
        if let Some(l) = &self.live {
            return Some(l.call.clone());
        }
        let sink = Box::new(self.cfg.bridge.remote_sink());
        let (mut media, notices) = match self.devices.open_call(sink) {
            Ok(opened) => opened,
            Err(e) => {
                self.notice(format!("Cannot open your camera or microphone: {e}"));
                return None;
            }
        };
        self.cfg.bridge.open(Stream::Remote);
        self.cfg.bridge.open(Stream::Local);
        let has_camera = self.devices.has_camera();
        let has_microphone = self.devices.has_microphone();
        if let Some((src, paced)) = media.video.take() {
            media.video = Some((Box::new(PreviewSource::new(src, self.cfg.bridge.clone())), paced));
        }
        for n in notices {
            self.notice(n);
        }
        if !has_camera && !has_microphone {
            self.notice("No camera and no microphone: you can still see and hear your partner and chat.");
        }
        let s = &self.cfg.settings;
        let mut cfg = CallConfig::new(self.cfg.server_url.clone());
        cfg.client.name = "duet-desktop".into();
        cfg.client.platform = Some(std::env::consts::OS.into());
        cfg.client.device = self.cfg.device_id.clone();
        cfg.bind = self.cfg.bind;
        cfg.ice_servers = s.ice_servers();
        cfg.relay_only = s.relay_only;
        cfg.ca_cert = s.ca_cert.as_ref().map(PathBuf::from);
        cfg.quality = self.controls.quality.into();
        info!(
            server = %cfg.server_url,
            relay_only = cfg.relay_only,
            turn_servers = cfg.ice_servers.len(),
            extra_ca = cfg.ca_cert.is_some(),
            "starting the call engine"
        );
        let (call, events) = Call::start(cfg, media);
        if self.controls.muted {
            call.send(CallCommand::SetMuted(true));
        }
        if !(self.controls.camera_on && has_camera) {
            call.send(CallCommand::SetCamera(false));
        }
        self.live = Some(Live { call: call.clone(), events });
        self.set_controls(|c| {
            c.has_camera = has_camera;
            c.has_microphone = has_microphone;
        });
        Some(call)
    }

    fn end_test_call(&mut self) {
        if let Some(bot) = self.bot.take() {
            retire(bot);
        }
    }

    /// Ends the user's call engine: the session is left and camera and microphone are released.
    /// The next Start opens them again on a fresh engine.
    fn release(&mut self) {
        if let Some(live) = self.live.take() {
            retire(live);
        }
        self.devices.close_call();
        self.stale = false;
        self.state = CallState::Idle;
        // Its threads may still hand over a frame or two while they stop.
        self.cfg.bridge.close(Stream::Remote);
        self.cfg.bridge.close(Stream::Local);
    }

    fn command(&mut self, cmd: AppCommand) {
        match cmd {
            AppCommand::Start { interests, language } => self.request(Request::Start { interests, language }),
            AppCommand::JoinRoom(code) => self.request(Request::Room(code)),
            AppCommand::TestCall => self.request(Request::Test),
            AppCommand::Next if self.bot.is_some() => self.stop(),
            AppCommand::Next => self.forward(Command::Next),
            AppCommand::Stop => self.stop(),
            AppCommand::SendChat(text) => {
                if let Some(l) = &self.live {
                    l.call.send(CallCommand::SendChat(text));
                }
            }
            AppCommand::SetMuted(m) => {
                if let Some(l) = &self.live {
                    l.call.send(CallCommand::SetMuted(m));
                }
                self.set_controls(|c| c.muted = m);
            }
            AppCommand::SetCamera(on) => {
                self.set_controls(|c| c.camera_on = on);
                self.apply_camera();
            }
            AppCommand::SetQuality(q) => {
                if let Some(l) = &self.live {
                    l.call.send(CallCommand::SetQuality(q.into()));
                }
                self.set_controls(|c| c.quality = q);
            }
            AppCommand::SetViewSize(w, h) => {
                if let Some(l) = &self.live {
                    l.call.send(CallCommand::SetViewSize(w, h));
                }
            }
            AppCommand::Report(reason) if self.bot.is_none() => self.forward(Command::Report { reason }),
            AppCommand::Block if self.bot.is_none() => self.forward(Command::Block),
            AppCommand::Report(_) | AppCommand::Block => self.notice("There is no one to report in a test call."),
            AppCommand::Reconfigure { settings, server_url } => {
                let server_changed = server_url != self.cfg.server_url;
                // Devices and audio processing change at once, in a call too.
                let notices = self.devices.reconfigure(&settings);
                self.device_notices(notices);
                let media_changed = settings.ca_cert != self.cfg.settings.ca_cert;
                // TURN servers and "Hide my IP" apply to the live engine at once: its next peer
                // connection (after Next, or when the server re-queues us) uses them.
                let ice_changed = settings.turn_servers != self.cfg.settings.turn_servers
                    || settings.relay_only != self.cfg.settings.relay_only;
                if ice_changed && let Some(l) = &self.live {
                    l.call
                        .send(CallCommand::SetIce { servers: settings.ice_servers(), relay_only: settings.relay_only });
                }
                let quality = settings.quality;
                let idle = matches!(self.state, CallState::Idle | CallState::Ended { .. });
                self.cfg.settings = *settings;
                self.cfg.server_url = server_url;
                if idle && quality != self.controls.quality {
                    // The default quality applies to the next call.
                    if let Some(l) = &self.live {
                        l.call.send(CallCommand::SetQuality(quality.into()));
                    }
                    self.set_controls(|c| c.quality = quality);
                }
                if self.live.is_some() && (server_changed || media_changed) {
                    if idle {
                        // Nothing to interrupt: the next Start uses the new settings.
                        self.release();
                        self.refresh_status();
                    } else {
                        self.stale = true;
                        self.notice("The new settings apply from your next call.");
                    }
                }
            }
            AppCommand::ServerReplaced => self.stale = self.live.is_some(),
            AppCommand::MicTest(on) => {
                if let Err(e) = self.devices.mic_test(on, self.live.is_some()) {
                    self.notice(e);
                }
            }
            AppCommand::SpeakerTest => {
                let (started, notice) = self.devices.speaker_test();
                if let Some(text) = notice {
                    self.notice(text);
                }
                if started {
                    self.emit(UiEvent::SpeakerTest { playing: true });
                }
            }
            AppCommand::Quit(_) => {}
        }
    }

    fn forward(&mut self, c: Command) {
        if let Some(l) = &self.live {
            l.call.send(CallCommand::Call(c));
        }
    }

    /// Stop: leaves the call or the queue and releases camera and microphone.
    fn stop(&mut self) {
        self.end_test_call();
        self.release();
        self.refresh_status();
    }

    fn request(&mut self, request: Request) {
        self.unanswered = Some(request.clone());
        // Leaving a test call, or starting one, begins on a fresh engine: events of the call
        // being left cannot end the new one.
        if self.bot.is_some() || matches!(request, Request::Test) {
            self.end_test_call();
            self.release();
        }
        match request {
            Request::Start { interests, language } => {
                if let Some(call) = self.call() {
                    call.send(CallCommand::Call(Command::Start { interests, language }));
                }
            }
            Request::Room(code) => {
                if let Some(call) = self.call() {
                    call.send(CallCommand::Call(Command::JoinRoom { code }));
                }
            }
            Request::Test => self.test_call(),
        }
    }

    /// The user's call engine stopped by itself (e.g. the server stayed unreachable).
    fn engine_stopped(&mut self) {
        self.live = None;
        self.end_test_call();
        if let Some(request) = self.unanswered.take() {
            // Asked for while the old engine was already stopping: once more, afresh.
            self.request(request);
            self.unanswered = None;
            return;
        }
        if !matches!(self.state, CallState::Ended { .. }) {
            self.state = CallState::Idle;
        }
        self.refresh_status();
    }

    /// The echo bot stopped: before it connected, the test call cannot happen.
    fn bot_stopped(&mut self) {
        if self.bot.take().is_none() {
            return;
        }
        if matches!(self.state, CallState::Connected | CallState::Reconnecting { .. }) {
            self.refresh_status();
        } else {
            self.notice("The test call could not start: the echo bot could not reach the server.");
            self.stop();
        }
    }

    fn test_call(&mut self) {
        let Some(call) = self.call() else { return };
        let code = format!("test-{:016x}", rand::random::<u64>());
        let opened = match sources::open(&VideoSpec::None, &AudioSpec::None, Box::new(DiscardVideoSink)) {
            Ok(o) => o,
            Err(e) => {
                self.notice(format!("The test call cannot start: {e}"));
                return;
            }
        };
        let mut cfg = CallConfig::new(self.cfg.server_url.clone());
        cfg.client.name = "duet-bot".into();
        // Same interface as the user's call, its own port.
        cfg.bind = SocketAddr::new(self.cfg.bind.ip(), 0);
        cfg.ice_servers = self.cfg.settings.ice_servers();
        // The bot reaches the same server, so it trusts the same CA.
        cfg.ca_cert = self.cfg.settings.ca_cert.as_ref().map(PathBuf::from);
        cfg.echo = true;
        let (bot, events) = Call::start(cfg, opened.media);
        bot.send(CallCommand::Call(Command::JoinRoom { code: code.clone() }));
        self.bot = Some(Live { call: bot, events });
        info!("test call started");
        call.send(CallCommand::Call(Command::JoinRoom { code }));
        self.refresh_status();
    }

    fn call_event(&mut self, ev: CallEvent) {
        match ev {
            CallEvent::State(state) => {
                if !matches!(state, CallState::Idle | CallState::Ended { .. }) {
                    self.unanswered = None;
                }
                if matches!(state, CallState::Ended { .. } | CallState::Idle) {
                    self.cfg.bridge.clear(Stream::Remote);
                    self.last_counts = None;
                    if self.bot.is_some() && matches!(self.state, CallState::Connected | CallState::Reconnecting { .. })
                    {
                        self.end_test_call();
                    }
                }
                self.state = state;
                self.refresh_status();
            }
            CallEvent::Matched { room, .. } => {
                self.peer_video = true;
                self.quality = None;
                self.emit(UiEvent::Matched { room });
            }
            CallEvent::MediaStarted(media) => self.emit(UiEvent::MediaStarted { media }),
            CallEvent::ChatReceived(text) => self.emit(UiEvent::ChatReceived { text }),
            CallEvent::ChatSent { id, text } => self.emit(UiEvent::ChatSent { id, text }),
            CallEvent::ChatDelivered(id) => self.emit(UiEvent::ChatDelivered { id }),
            CallEvent::ChatUndelivered(id) => self.emit(UiEvent::ChatUndelivered { id }),
            CallEvent::Verify(sas) => self.emit(UiEvent::Verify { emoji: sas.emoji(), words: sas.words() }),
            CallEvent::PeerVideo(on) => {
                self.peer_video = on;
                self.emit(UiEvent::PeerVideo { on });
                self.refresh_status();
            }
            CallEvent::Stats(stats) => {
                let view = self.stats_view(&stats);
                self.emit(UiEvent::Stats(view));
            }
            CallEvent::Quality(q) => {
                self.quality = Some(*q);
                self.refresh_status();
            }
            CallEvent::AudioOnly { on, cause } => {
                if let Some(q) = &mut self.quality {
                    match cause {
                        AudioOnlyCause::Network | AudioOnlyCause::Choice => q.audio_only = on.then_some(cause),
                        _ => q.partner_audio_only = on.then_some(cause),
                    }
                }
                self.refresh_status();
            }
            CallEvent::Rung { .. } => {}
            CallEvent::Recovered(r) => {
                self.notice(format!("Connection back after {:.1} s.", r.took.as_secs_f64()));
            }
            CallEvent::Notice(text) => {
                // The call answered the last request, if only with a problem.
                self.unanswered = None;
                self.notice(text);
            }
            CallEvent::Finished(_) => self.engine_stopped(),
        }
    }

    fn stats_view(&mut self, s: &CallStats) -> StatsView {
        let received = s.peer.video_in.packets;
        let lost = s.peer.video_in.packets_lost;
        let loss_pct = match self.last_counts.replace((received, lost)) {
            Some((r0, l0)) => {
                let got = received.saturating_sub(r0) as f64;
                let missed = (lost - l0).max(0) as f64;
                if got + missed > 0.0 { 100.0 * missed / (got + missed) } else { 0.0 }
            }
            None => 0.0,
        };
        let recv_kbps = s.video_recv_kbps + s.audio_recv_kbps;
        StatsView {
            rtt_ms: s.peer.rtt_ms,
            loss_pct,
            jitter_ms: s.peer.video_in.jitter_ms,
            send_kbps: s.video_send_kbps + s.audio_send_kbps,
            recv_kbps,
            width: s.recv_width,
            height: s.recv_height,
            fps: s.recv_fps,
            path: path_kind(s.peer.local_candidate.as_deref(), s.peer.remote_candidate.as_deref()),
            bars: self.quality.as_ref().map_or(0, |q| q.bars),
            why: self.quality.as_ref().map_or_else(String::new, |q| q.why.clone()),
            rung: self.quality.as_ref().and_then(|q| q.rung),
            encoder_kbps: s.encoder_kbps,
        }
    }

    async fn shutdown(&mut self) {
        self.end_test_call();
        if let Some(mut l) = self.live.take() {
            l.call.send(CallCommand::Shutdown);
            let finished = async { while !matches!(l.events.recv().await, Some(CallEvent::Finished(_)) | None) {} };
            let _ = tokio::time::timeout(Duration::from_millis(1500), finished).await;
        }
    }
}

/// A real coturn for the engine's tests (shared with the CLI's TURN tests).
#[cfg(test)]
#[path = "../../crates/duet-cli/tests/common/coturn.rs"]
mod coturn;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{FakeDevices, Recorder, engine_with, wait_for};
    use crate::video_bridge::StreamCounters;

    fn engine(server_url: String, video: Option<VideoSpec>) -> (Engine, Arc<Recorder>, VideoBridge) {
        let overrides = MediaOverrides {
            video: Some(video.unwrap_or(VideoSpec::Synthetic { width: 320, height: 180, fps: 30 })),
            audio: Some(AudioSpec::Tone),
            mute_playback: true,
        };
        engine_with(server_url, Settings::default(), overrides, FakeDevices::new(&[], &[], &[]))
    }

    fn status(e: &Engine) -> Status {
        e.snapshot().status.status
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_test_call_echoes_our_video_back_to_the_page() {
        let server = crate::embedded::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let (e, ui, bridge) = engine(server.url(), None);
        e.send(AppCommand::TestCall);
        wait_for("connected", 15, || status(&e) == Status::Connected).await;
        assert!(e.snapshot().status.test_call);
        wait_for("echoed frames", 10, || bridge.counters(Stream::Remote).sent >= 20).await;
        assert!(bridge.counters(Stream::Local).sent >= 20, "the preview reaches the page too");
        wait_for("stats", 5, || ui.has(|ev| matches!(ev, UiEvent::Stats(s) if s.path == "direct"))).await;
        e.send(AppCommand::SetQuality(QualityChoice::AudioOnly));
        // No video either way (ours is off, so the echo has none): the call says audio only.
        wait_for("audio-only status", 10, || status(&e) == Status::AudioOnly).await;
        e.send(AppCommand::SetQuality(QualityChoice::Medium));
        wait_for("video again", 10, || status(&e) == Status::Connected).await;
        e.send(AppCommand::SetMuted(true));
        wait_for("muted control", 5, || e.snapshot().controls.muted).await;
        e.send(AppCommand::Next);
        wait_for("the test call to end", 10, || matches!(status(&e), Status::Idle | Status::Ended)).await;
        assert!(!e.snapshot().status.test_call);
        // Stopped: the camera is released, so the preview stops.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = bridge.counters(Stream::Local).offered;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(bridge.counters(Stream::Local).offered, before, "the camera is still capturing after Stop");
        e.quit().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_apps_match_and_chat_through_the_embedded_server() {
        let server = crate::embedded::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let (a, ui_a, bridge_a) = engine(server.url(), None);
        // The second app has no camera: it still gets the call, receive-only, and is told so.
        let (b, ui_b, _) = engine(server.url(), Some(VideoSpec::Camera(97)));
        a.send(AppCommand::Start { interests: vec![], language: None });
        b.send(AppCommand::Start { interests: vec![], language: None });
        wait_for("both connected", 15, || status(&a) == Status::Connected && status(&b) == Status::Connected).await;
        assert!(ui_b.has(|ev| matches!(ev, UiEvent::Notice { text } if text.contains("receive-only"))));
        assert!(!b.snapshot().controls.has_camera);
        b.send(AppCommand::SendChat("hello from b".into()));
        wait_for("chat", 10, || ui_a.has(|ev| matches!(ev, UiEvent::ChatReceived { text } if text == "hello from b")))
            .await;
        wait_for("delivery", 10, || ui_b.has(|ev| matches!(ev, UiEvent::ChatDelivered { id: 1 }))).await;
        // Both pages show the same emoji to compare with the partner.
        let verify = |ui: &Recorder| {
            ui.all(|ev| match ev {
                UiEvent::Verify { emoji, .. } => Some(emoji.clone()),
                _ => None,
            })
            .pop()
        };
        let shown = verify(&ui_a).expect("a verify event for the page");
        assert_eq!(shown.split(' ').count(), 6, "{shown}");
        assert_eq!(verify(&ui_b), Some(shown));
        assert_eq!(bridge_a.counters(Stream::Remote), StreamCounters::default(), "b sends no video");
        // The quality the core reports is what the page shows: bars with their reason.
        wait_for("bars", 10, || {
            ui_b.has(|ev| matches!(ev, UiEvent::Stats(s) if (1..=4).contains(&s.bars) && !s.why.is_empty()))
        })
        .await;
        // a chooses audio only: b is told why a's video is gone, and with no camera itself the
        // call is audio-only either way.
        a.send(AppCommand::SetQuality(QualityChoice::AudioOnly));
        wait_for("b sees a's choice", 10, || b.snapshot().status.partner_audio_only == Some("partner_choice")).await;
        assert_eq!(status(&b), Status::AudioOnly);
        assert_eq!(a.snapshot().status.audio_only, Some("choice"));
        a.send(AppCommand::SetQuality(QualityChoice::Auto));
        wait_for("a's video back", 10, || {
            b.snapshot().status.partner_audio_only.is_none() && status(&b) == Status::Connected
        })
        .await;
        // A test call from inside a call leaves the partner and reaches the echo bot.
        a.send(AppCommand::TestCall);
        wait_for("b sees the end", 10, || status(&b) == Status::Ended).await;
        wait_for("a in the test call", 15, || status(&a) == Status::Connected && a.snapshot().status.test_call).await;
        a.send(AppCommand::Stop);
        wait_for("a idle", 10, || status(&a) == Status::Idle).await;
        a.quit().await;
        b.quit().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hide_my_ip_turned_on_in_a_call_holds_for_the_next_partner() {
        let turn = super::coturn::Coturn::with_user();
        let server = crate::embedded::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let (a, ui_a, _) = engine(server.url(), None);
        let (b, _, _) = engine(server.url(), None);
        a.send(AppCommand::Start { interests: vec![], language: None });
        b.send(AppCommand::Start { interests: vec![], language: None });
        wait_for("a and b connected", 15, || status(&a) == Status::Connected && status(&b) == Status::Connected).await;
        // Mid-call, a adds its TURN server and hides its IP, then presses Next.
        let settings = Settings {
            relay_only: true,
            turn_servers: vec![crate::settings::TurnServer {
                url: turn.url(),
                username: super::coturn::USER.0.into(),
                credential: super::coturn::USER.1.into(),
            }],
            ..Settings::default()
        };
        a.send(AppCommand::Reconfigure { settings: Box::new(settings), server_url: server.url() });
        a.send(AppCommand::Next);
        b.send(AppCommand::Stop);
        wait_for("b gone", 10, || status(&b) == Status::Idle).await;
        b.quit().await;
        let (c, ui_c, _) = engine(server.url(), None);
        c.send(AppCommand::Start { interests: vec![], language: None });
        wait_for("a and c connected", 20, || status(&a) == Status::Connected && status(&c) == Status::Connected).await;
        // c reaches a only through the relay, never at its address.
        wait_for("a relayed path", 10, || ui_c.has(|ev| matches!(ev, UiEvent::Stats(s) if s.path == "relayed"))).await;
        assert!(!ui_a.has(|ev| matches!(ev, UiEvent::Notice { text } if text.contains("next call"))));
        a.quit().await;
        c.quit().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreachable_server_is_reported_and_nothing_hangs() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (e, ui, _) = engine(format!("ws://127.0.0.1:{port}/ws"), None);
        e.send(AppCommand::Start { interests: vec![], language: None });
        wait_for("the notice", 10, || {
            ui.has(|ev| matches!(ev, UiEvent::Notice { text } if text.contains("cannot reach")))
        })
        .await;
        wait_for("the call to end", 5, || matches!(status(&e), Status::Idle | Status::Ended)).await;
        assert!(e.snapshot().status.reason.is_none_or(|r| r.contains("reach")));
        // The app can try again.
        e.send(AppCommand::Start { interests: vec![], language: None });
        wait_for("a second notice", 10, || {
            ui.all(|ev| matches!(ev, UiEvent::Notice { text } if text.contains("cannot reach")).then_some(())).len()
                >= 2
        })
        .await;
        e.quit().await;
    }

    #[test]
    fn path_kinds() {
        assert_eq!(path_kind(None, None), "unknown");
        assert_eq!(path_kind(Some("host"), Some("prflx")), "direct");
        assert_eq!(path_kind(Some("relay"), Some("host")), "relayed");
        assert_eq!(path_kind(Some("srflx"), Some("relay")), "relayed");
    }
}
