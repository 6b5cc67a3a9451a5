//! Capture and playback devices during a call: which to use ([`DevicePolicy`], sans-IO), how a
//! call changes device without stopping ([`switch`]), and the manager that executes the
//! policy's decisions against a [`DeviceBackend`] (the system's devices, or scripted ones in
//! tests). The microphone path always runs through the audio processing stage
//! ([`ProcessedSource`]) with the far end taken from the speaker the manager opened.
//!
//! Opening a device blocks (up to seconds): call the manager off the async runtime.

mod backend;
mod policy;
pub mod switch;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

pub use backend::{DeviceBackend, SystemDevices};
use duet_media::{
    AudioSink, AudioSource, DeviceInfo, Devices, EchoReference, FrameRate, MediaClock, MediaError, NullAudioSink,
    ProcessedSource, ProcessingConfig, ProcessingControls, VideoFormat, VideoSource,
};
pub use policy::{DeviceAction, DeviceKind, DevicePolicy};
pub use switch::DeviceLost;
use switch::{Switch, SwitchableAudioSink, SwitchableAudioSource, SwitchableVideoSource};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// Frame size of a call's video when it starts without a camera.
const NO_CAMERA_FORMAT: VideoFormat =
    VideoFormat { width: 1280, height: 720, frame_rate: FrameRate { num: 30, den: 1 } };

/// Which devices a call takes from the manager (the others come from elsewhere: a test
/// pattern, a file, or nowhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    /// A camera.
    pub camera: bool,
    /// A microphone.
    pub microphone: bool,
    /// A speaker.
    pub speaker: bool,
}

/// A call's device media, ready for [`crate::call::CallMedia`].
pub struct CallDevices {
    /// The camera (switchable).
    pub video: Option<Box<dyn VideoSource>>,
    /// The microphone (switchable, processed).
    pub audio: Option<Box<dyn AudioSource>>,
    /// The speaker (switchable).
    pub audio_sink: Option<Box<dyn AudioSink>>,
}

struct Switches {
    camera: Option<Switch<Box<dyn VideoSource>>>,
    microphone: Option<Switch<Box<dyn AudioSource>>>,
    speaker: Option<Switch<Box<dyn AudioSink>>>,
}

/// Executes the device policy for one engine: opens devices, installs them in the running
/// call, and says what the user should know.
pub struct DeviceManager {
    backend: Arc<dyn DeviceBackend>,
    policy: DevicePolicy,
    echo_reference: Arc<EchoReference>,
    processing: Arc<ProcessingControls>,
    lost: mpsc::UnboundedSender<DeviceLost>,
    switches: Option<Switches>,
    /// The camera opened as a call starts, before its switch exists.
    first_camera: Option<(Box<dyn VideoSource>, Option<String>)>,
    clock: MediaClock,
    /// Open right now, per kind (camera, microphone, speaker).
    open: [bool; 3],
}

impl DeviceManager {
    /// A manager over `backend`; device failures arrive on the returned receiver, for
    /// [`DeviceManager::lost`].
    pub fn new(
        backend: Arc<dyn DeviceBackend>,
        processing: ProcessingConfig,
        clock: MediaClock,
    ) -> (Self, mpsc::UnboundedReceiver<DeviceLost>) {
        let (lost, lost_rx) = mpsc::unbounded_channel();
        let manager = Self {
            backend,
            policy: DevicePolicy::new(),
            echo_reference: Arc::new(EchoReference::new()),
            processing: Arc::new(ProcessingControls::new(processing)),
            lost,
            switches: None,
            first_camera: None,
            clock,
            open: [false; 3],
        };
        (manager, lost_rx)
    }

    /// The processing stages and the microphone level.
    #[must_use]
    pub fn processing(&self) -> &Arc<ProcessingControls> {
        &self.processing
    }

    /// The devices last listed.
    #[must_use]
    pub fn lists(&self) -> &Devices {
        self.policy.lists()
    }

    /// A device of `kind` is open in the call.
    #[must_use]
    pub fn is_open(&self, kind: DeviceKind) -> bool {
        self.switches.is_some() && self.open[index(kind)]
    }

    /// The user's choices (`None`: the default); in a call, a changed choice switches device.
    pub fn choose(
        &mut self,
        camera: Option<String>,
        microphone: Option<String>,
        speaker: Option<String>,
    ) -> Vec<String> {
        let mut actions = self.policy.choose(DeviceKind::Camera, camera);
        actions.extend(self.policy.choose(DeviceKind::Microphone, microphone));
        actions.extend(self.policy.choose(DeviceKind::Speaker, speaker));
        self.execute(actions)
    }

    /// Lists the devices again. Returns whether the lists changed, and notices.
    pub fn refresh(&mut self) -> (bool, Vec<String>) {
        let devices = self.backend.list();
        self.update_lists(devices)
    }

    /// Takes device lists listed elsewhere (off the engine's task).
    pub fn update_lists(&mut self, devices: Devices) -> (bool, Vec<String>) {
        let (changed, actions) = self.policy.update_lists(devices);
        (changed, self.execute(actions))
    }

    /// The backend, to list devices from another thread.
    #[must_use]
    pub fn backend(&self) -> Arc<dyn DeviceBackend> {
        self.backend.clone()
    }

    /// Opens the devices a call takes and returns them for the call, with notices.
    pub fn open_call(&mut self, wanted: Wanted) -> (CallDevices, Vec<String>) {
        self.close_call();
        let mut notices = Vec::new();
        let mut devices = CallDevices { video: None, audio: None, audio_sink: None };
        self.switches = Some(Switches { camera: None, microphone: None, speaker: None });
        if wanted.camera {
            // The first camera sets the call's frame size: it is opened before its switch exists.
            let actions = self.policy.activate(DeviceKind::Camera);
            notices.extend(self.execute(actions));
            let first = self.first_camera.take();
            let format = first.as_ref().map_or(NO_CAMERA_FORMAT, |(camera, _)| camera.format());
            let (source, switch) = SwitchableVideoSource::new(format, self.clock, self.lost.clone());
            if let Some((camera, id)) = first {
                switch.install(camera, id);
            }
            devices.video = Some(Box::new(source));
            self.switches_mut().camera = Some(switch);
        }
        if wanted.microphone {
            let (source, switch) = SwitchableAudioSource::new(self.clock, self.lost.clone());
            match ProcessedSource::new(Box::new(source), self.processing.clone(), Some(self.echo_reference.clone())) {
                Ok(processed) => {
                    devices.audio = Some(Box::new(processed));
                    self.switches_mut().microphone = Some(switch);
                    let actions = self.policy.activate(DeviceKind::Microphone);
                    notices.extend(self.execute(actions));
                }
                Err(e) => notices.push(format!("Audio processing is unavailable ({e}): your microphone is off.")),
            }
        }
        if wanted.speaker {
            let (sink, switch) = SwitchableAudioSink::new(self.lost.clone());
            devices.audio_sink = Some(Box::new(sink));
            self.switches_mut().speaker = Some(switch);
            let actions = self.policy.activate(DeviceKind::Speaker);
            notices.extend(self.execute(actions));
        }
        (devices, notices)
    }

    fn switches_mut(&mut self) -> &mut Switches {
        self.switches.get_or_insert(Switches { camera: None, microphone: None, speaker: None })
    }

    /// The call ended: its devices are released (the call's threads drop them).
    pub fn close_call(&mut self) {
        self.switches = None;
        self.open = [false; 3];
        self.policy.deactivate();
    }

    /// A device stopped working: switch to another, or go without. Returns notices.
    pub fn lost(&mut self, lost: &DeviceLost) -> Vec<String> {
        warn!(kind = lost.kind.noun(), reason = %lost.reason, "device lost");
        // Decided on the lists the device was in use with (they name it), then read again:
        // the device has probably left them.
        let actions = self.policy.lost(lost.kind, lost.device.as_deref(), &lost.reason);
        if !actions.is_empty() {
            self.open[index(lost.kind)] = false;
        }
        let mut notices = self.execute(actions);
        let devices = self.backend.list();
        notices.extend(self.update_lists(devices).1);
        notices
    }

    /// Opens the microphone the user chose (or the default) for the settings' level meter,
    /// processed like in a call.
    pub fn open_meter(&self) -> Result<MicrophoneMeter, MediaError> {
        let source =
            self.backend.open_microphone(self.policy.preferred(DeviceKind::Microphone).as_ref(), self.clock)?;
        let processed = ProcessedSource::new(source, self.processing.clone(), Some(self.echo_reference.clone()))?;
        MicrophoneMeter::start(Box::new(processed))
    }

    /// Opens the chosen speaker (or the default) for a test sound; a null sink (with a notice)
    /// when there is none.
    pub fn open_test_speaker(&self) -> (Box<dyn AudioSink>, Option<String>) {
        match self
            .backend
            .open_speaker(self.policy.preferred(DeviceKind::Speaker).as_ref(), self.echo_reference.clone())
        {
            Ok(sink) => (sink, None),
            Err(e) => (Box::new(NullAudioSink::new()), Some(format!("No speaker to test ({e})."))),
        }
    }

    /// Carries out the policy's actions (and those that follow from failed opens).
    fn execute(&mut self, actions: Vec<DeviceAction>) -> Vec<String> {
        let mut notices = Vec::new();
        let mut queue = actions;
        while !queue.is_empty() {
            let mut next = Vec::new();
            for action in queue {
                match action {
                    DeviceAction::Notice(text) => {
                        info!(notice = %text, "device notice");
                        notices.push(text);
                    }
                    DeviceAction::Close(kind) => {
                        self.open[index(kind)] = false;
                        if let Some(s) = &self.switches {
                            match kind {
                                DeviceKind::Camera => s.camera.as_ref().map(Switch::clear),
                                DeviceKind::Microphone => s.microphone.as_ref().map(Switch::clear),
                                DeviceKind::Speaker => s.speaker.as_ref().map(Switch::clear),
                            };
                        }
                    }
                    DeviceAction::Open { kind, device } => match self.install(kind, device.as_ref()) {
                        Ok(()) => {
                            self.policy.opened(kind, device.as_ref());
                            self.open[index(kind)] = true;
                            info!(
                                kind = kind.noun(),
                                device = device.as_ref().map_or("default", |d| &d.name),
                                "device in use"
                            );
                        }
                        Err(e) => next.extend(self.policy.open_failed(kind, device.as_ref(), &e.to_string())),
                    },
                }
            }
            queue = next;
        }
        notices
    }

    /// Opens `device` and hands it to the call (nothing to do outside a call).
    fn install(&mut self, kind: DeviceKind, device: Option<&DeviceInfo>) -> Result<(), MediaError> {
        let Some(switches) = &self.switches else {
            return Ok(());
        };
        let id = device.map(|d| d.id.clone());
        match kind {
            DeviceKind::Camera => {
                let camera = self.backend.open_camera(device, self.clock)?;
                match &switches.camera {
                    Some(switch) => switch.install(camera, id),
                    None => self.first_camera = Some((camera, id)),
                }
            }
            DeviceKind::Microphone => {
                if let Some(switch) = &switches.microphone {
                    switch.install(self.backend.open_microphone(device, self.clock)?, id);
                }
            }
            DeviceKind::Speaker => {
                if let Some(switch) = &switches.speaker {
                    switch.install(self.backend.open_speaker(device, self.echo_reference.clone())?, id);
                }
            }
        }
        Ok(())
    }
}

fn index(kind: DeviceKind) -> usize {
    match kind {
        DeviceKind::Camera => 0,
        DeviceKind::Microphone => 1,
        DeviceKind::Speaker => 2,
    }
}

/// Pulls a microphone's frames on its own thread so its level can be read (the settings' level
/// meter when no call holds the microphone). Stops when dropped.
pub struct MicrophoneMeter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MicrophoneMeter {
    /// Starts pulling from `source` (whose level lands in its [`ProcessingControls`]).
    pub fn start(mut source: Box<dyn AudioSource>) -> Result<Self, MediaError> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("duet-mic-meter".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    match source.next_frame() {
                        Ok(Some(_)) => {}
                        Ok(None) => return,
                        Err(e) => {
                            warn!(error = %e, "level meter: the microphone failed");
                            return;
                        }
                    }
                }
            })
            .map_err(|e| MediaError::InvalidArgument(format!("cannot start the level meter: {e}")))?;
        Ok(Self { stop, thread: Some(thread) })
    }
}

impl Drop for MicrophoneMeter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // A microphone returns a frame at least every 2 s (or fails): this ends.
            let _ = thread.join();
        }
    }
}

/// Plays a short chime (two tones, 1.5 s) into `sink`, in real time, on the calling thread.
pub fn play_test_sound(sink: &mut dyn AudioSink, clock: MediaClock) {
    const RATE: u32 = duet_media::AUDIO_SAMPLE_RATE;
    let frame_len = (RATE / 50) as usize;
    let mut started = std::time::Instant::now();
    for index in 0..75u32 {
        let frequency = if index < 38 { 660.0 } else { 880.0 };
        let samples: Vec<i16> = (0..frame_len)
            .map(|n| {
                let t = f64::from(index) * 0.02 + n as f64 / f64::from(RATE);
                (0.25 * 32_767.0 * (std::f64::consts::TAU * frequency * t).sin()) as i16
            })
            .collect();
        match duet_media::AudioFrame::new(samples, RATE, 1, clock.now_us()) {
            Ok(frame) => {
                if let Err(e) = sink.play(&frame) {
                    warn!(error = %e, "test sound: the speaker failed");
                    return;
                }
            }
            Err(e) => {
                warn!(error = %e, "test sound");
                return;
            }
        }
        started += Duration::from_millis(20);
        if let Some(wait) = started.checked_duration_since(std::time::Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}
