//! What the engine's tests share: a recording page, a page that draws at once, waiting, an
//! engine on given media, and scripted devices that can be plugged in and out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duet_core::devices::DeviceBackend;
use duet_media::{
    AudioFormat, AudioFrame, AudioSink, AudioSource, DeviceInfo, Devices, EchoReference, FrameDuration, MediaClock,
    MediaError, SyntheticAudioSource, SyntheticVideoSource, VideoFormat, VideoFrame, VideoSource,
};

use crate::engine::{Engine, EngineConfig, MediaOverrides, UiEvent, UiSink};
use crate::settings::Settings;
use crate::video_bridge::{FrameOut, Stream, VideoBridge};

/// Records what the page would be told.
#[derive(Default)]
pub(crate) struct Recorder(Mutex<Vec<UiEvent>>);

impl UiSink for Recorder {
    fn emit(&self, event: UiEvent) {
        self.0.lock().unwrap().push(event);
    }
}

impl Recorder {
    pub(crate) fn has(&self, f: impl Fn(&UiEvent) -> bool) -> bool {
        self.0.lock().unwrap().iter().any(f)
    }

    /// The events so far that `f` picks.
    pub(crate) fn all<T>(&self, f: impl Fn(&UiEvent) -> Option<T>) -> Vec<T> {
        self.0.lock().unwrap().iter().filter_map(f).collect()
    }
}

/// A page that draws every frame at once.
struct Page(VideoBridge, Stream);

impl FrameOut for Page {
    fn deliver(&self, _packet: Vec<u8>) -> bool {
        let (bridge, stream) = (self.0.clone(), self.1);
        std::thread::spawn(move || bridge.ack(stream));
        true
    }
}

pub(crate) async fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An engine on `server_url` with these settings, media overrides and devices, and a page that
/// draws every frame at once.
pub(crate) fn engine_with(
    server_url: String,
    settings: Settings,
    overrides: MediaOverrides,
    devices: Arc<dyn DeviceBackend>,
) -> (Engine, Arc<Recorder>, VideoBridge) {
    let bridge = VideoBridge::new();
    bridge.attach(Stream::Remote, Arc::new(Page(bridge.clone(), Stream::Remote)));
    bridge.attach(Stream::Local, Arc::new(Page(bridge.clone(), Stream::Local)));
    let ui = Arc::new(Recorder::default());
    let cfg = EngineConfig {
        settings,
        server_url,
        overrides,
        bind: "127.0.0.1:0".parse().unwrap(),
        bridge: bridge.clone(),
        device_id: None,
        devices,
    };
    (Engine::start(cfg, ui.clone()), ui, bridge)
}

/// One scripted device: whether it is plugged in, and how many frames went through it.
#[derive(Default)]
struct Plug {
    unplugged: AtomicBool,
    frames: AtomicU64,
}

impl Plug {
    fn check(&self, what: &str) -> Result<(), MediaError> {
        if self.unplugged.load(Ordering::Relaxed) {
            return Err(MediaError::DeviceLost { device: what.to_owned(), reason: "unplugged".to_owned() });
        }
        self.frames.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Devices a test plugs in and out. Cameras give a 320x180 test pattern at 30 fps, microphones
/// a tone, both in real time; speakers count what they play. A device unplugged fails from its
/// next frame on, as a real one does.
#[derive(Default)]
pub(crate) struct FakeDevices {
    devices: Mutex<Devices>,
    plugs: Mutex<HashMap<String, Arc<Plug>>>,
}

impl FakeDevices {
    pub(crate) fn new(cameras: &[&str], microphones: &[&str], speakers: &[&str]) -> Arc<Self> {
        let info = |ids: &[&str]| -> Vec<DeviceInfo> {
            ids.iter()
                .enumerate()
                .map(|(i, id)| DeviceInfo { id: (*id).to_owned(), name: format!("{id} device"), is_default: i == 0 })
                .collect()
        };
        let fake = Self::default();
        *fake.devices.lock().unwrap() =
            Devices { cameras: info(cameras), microphones: info(microphones), speakers: info(speakers), notes: vec![] };
        Arc::new(fake)
    }

    fn plug(&self, id: &str) -> Arc<Plug> {
        self.plugs.lock().unwrap().entry(id.to_owned()).or_default().clone()
    }

    /// Frames captured from (or played on) device `id` so far.
    pub(crate) fn frames(&self, id: &str) -> u64 {
        self.plug(id).frames.load(Ordering::Relaxed)
    }

    /// Pulls device `id` out: it leaves the lists and fails.
    pub(crate) fn unplug(&self, id: &str) {
        self.plug(id).unplugged.store(true, Ordering::Relaxed);
        let mut devices = self.devices.lock().unwrap();
        let Devices { cameras, microphones, speakers, .. } = &mut *devices;
        for list in [cameras, microphones, speakers] {
            list.retain(|d| d.id != id);
        }
    }

    /// Plugs a microphone `id` (back) in.
    pub(crate) fn plug_microphone(&self, id: &str) {
        self.plugs.lock().unwrap().insert(id.to_owned(), Arc::new(Plug::default()));
        let info = DeviceInfo { id: id.to_owned(), name: format!("{id} device"), is_default: false };
        self.devices.lock().unwrap().microphones.push(info);
    }

    fn opened(
        &self,
        device: Option<&DeviceInfo>,
        list: impl Fn(&Devices) -> &Vec<DeviceInfo>,
    ) -> Result<String, MediaError> {
        let devices = self.devices.lock().unwrap();
        let list = list(&devices);
        let found = match device {
            Some(wanted) => list.iter().find(|d| d.id == wanted.id),
            None => list.iter().find(|d| d.is_default).or(list.first()),
        };
        found.map(|d| d.id.clone()).ok_or_else(|| MediaError::NoMicrophone { reason: "not plugged in".to_owned() })
    }
}

impl DeviceBackend for FakeDevices {
    fn list(&self) -> Devices {
        self.devices.lock().unwrap().clone()
    }

    fn open_camera(&self, device: Option<&DeviceInfo>, clock: MediaClock) -> Result<Box<dyn VideoSource>, MediaError> {
        let id = self.opened(device, |d| &d.cameras)?;
        let pattern = SyntheticVideoSource::new(320, 180, 30, clock)?;
        Ok(Box::new(FakeCamera { pattern, plug: self.plug(&id), next_at: Instant::now() }))
    }

    fn open_microphone(
        &self,
        device: Option<&DeviceInfo>,
        clock: MediaClock,
    ) -> Result<Box<dyn AudioSource>, MediaError> {
        let id = self.opened(device, |d| &d.microphones)?;
        let tone = SyntheticAudioSource::new(1, FrameDuration::Ms20, clock)?;
        Ok(Box::new(FakeMicrophone { tone, plug: self.plug(&id), next_at: Instant::now() }))
    }

    fn open_speaker(
        &self,
        device: Option<&DeviceInfo>,
        _echo_reference: Arc<EchoReference>,
    ) -> Result<Box<dyn AudioSink>, MediaError> {
        let id = self.opened(device, |d| &d.speakers)?;
        Ok(Box::new(FakeSpeaker { plug: self.plug(&id) }))
    }
}

/// Waits until `next_at`, then moves it on by `interval`: real-time pacing like a device.
fn pace(next_at: &mut Instant, interval: Duration) {
    if let Some(wait) = next_at.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
    *next_at = (*next_at + interval).max(Instant::now() - Duration::from_millis(100));
}

struct FakeCamera {
    pattern: SyntheticVideoSource,
    plug: Arc<Plug>,
    next_at: Instant,
}

impl VideoSource for FakeCamera {
    fn format(&self) -> VideoFormat {
        self.pattern.format()
    }

    fn next_frame(&mut self) -> Result<Option<VideoFrame>, MediaError> {
        pace(&mut self.next_at, Duration::from_millis(33));
        self.plug.check("camera")?;
        self.pattern.next_frame()
    }
}

struct FakeMicrophone {
    tone: SyntheticAudioSource,
    plug: Arc<Plug>,
    next_at: Instant,
}

impl AudioSource for FakeMicrophone {
    fn format(&self) -> AudioFormat {
        self.tone.format()
    }

    fn next_frame(&mut self) -> Result<Option<AudioFrame>, MediaError> {
        pace(&mut self.next_at, Duration::from_millis(20));
        self.plug.check("microphone")?;
        self.tone.next_frame()
    }
}

struct FakeSpeaker {
    plug: Arc<Plug>,
}

impl AudioSink for FakeSpeaker {
    fn play(&mut self, _frame: &AudioFrame) -> Result<(), MediaError> {
        self.plug.check("speaker")
    }
}
