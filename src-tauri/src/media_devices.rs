//! The engine's devices: what a call sends and plays (the user's devices through
//! [`DeviceManager`], or the `DUET_VIDEO`/`DUET_AUDIO` overrides), devices changing during a
//! call, the device lists, the microphone level meter and the speaker test. Device decisions
//! live in `duet_core::devices`; this executes them off the async runtime and reports.

use std::sync::Arc;
use std::time::Duration;

use duet_core::call::CallMedia;
use duet_core::devices::{DeviceBackend, DeviceKind, DeviceLost, DeviceManager, MicrophoneMeter, Wanted};
use duet_core::media::DiscardVideoSink;
use duet_core::sources::{self, AudioSpec, VideoSpec};
use duet_media::{AudioSink, Devices, MediaClock, NullAudioSink, ProcessedSource, ProcessingConfig, VideoSink};
use tokio::sync::mpsc;
use tokio::time::{Interval, MissedTickBehavior};
use tracing::warn;

use crate::engine::{DeviceView, DevicesView, MediaOverrides};
use crate::settings::Settings;

/// How often the device lists are read again (no platform-independent hot-plug events).
const LIST_EVERY: Duration = Duration::from_secs(2);
/// How often the level meter reports.
const METER_EVERY: Duration = Duration::from_millis(100);

/// Something that happened to the devices, for the engine to act on.
pub(crate) enum DeviceEvent {
    /// A device of the call stopped working.
    Lost(DeviceLost),
    /// Time to read the device lists again.
    List,
    /// Time to report the microphone level.
    Meter,
    /// The speaker test finished.
    SpeakerTestDone,
}

/// Where the level meter's microphone is.
enum Meter {
    /// The call's microphone (it meters every frame it sends).
    Call,
    /// A microphone opened just for the meter (it stops when dropped).
    Own { _running: MicrophoneMeter },
}

/// The engine's devices.
pub(crate) struct EngineDevices {
    manager: DeviceManager,
    lost: mpsc::UnboundedReceiver<DeviceLost>,
    overrides: MediaOverrides,
    /// The call's override video and audio sources opened (a missing override camera did not).
    overrides_open: (bool, bool),
    clock: MediaClock,
    list_timer: Interval,
    meter: Option<Meter>,
    meter_timer: Interval,
    speaker_test: Option<mpsc::UnboundedReceiver<()>>,
    /// The lists the page was last given.
    published: Option<Devices>,
}

/// Runs `f` (a device open, which may block for seconds in a driver) without holding up the
/// async runtime's other tasks: on a multi-threaded runtime the worker hands them off.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn timer(every: Duration) -> Interval {
    let mut timer = tokio::time::interval(every);
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    timer
}

/// The processing stages the settings ask for.
pub(crate) fn processing(settings: &Settings) -> ProcessingConfig {
    ProcessingConfig {
        echo_cancellation: settings.echo_cancellation,
        noise_suppression: settings.noise_suppression,
        gain_control: settings.auto_gain,
    }
}

/// The lists as the page shows them.
pub(crate) fn view(devices: &Devices) -> DevicesView {
    let view = |list: &[duet_media::DeviceInfo]| {
        list.iter().map(|d| DeviceView { id: d.id.clone(), name: d.name.clone(), is_default: d.is_default }).collect()
    };
    DevicesView {
        cameras: view(&devices.cameras),
        microphones: view(&devices.microphones),
        speakers: view(&devices.speakers),
        notes: devices.notes.clone(),
    }
}

impl EngineDevices {
    pub(crate) fn new(backend: Arc<dyn DeviceBackend>, settings: &Settings, overrides: MediaOverrides) -> Self {
        let clock = MediaClock::unix_aligned();
        let (mut manager, lost) = DeviceManager::new(backend, processing(settings), clock);
        manager.choose(settings.camera.clone(), settings.microphone.clone(), settings.speaker.clone());
        Self {
            manager,
            lost,
            overrides,
            overrides_open: (false, false),
            clock,
            list_timer: timer(LIST_EVERY),
            meter: None,
            meter_timer: timer(METER_EVERY),
            speaker_test: None,
            published: None,
        }
    }

    /// The next device event.
    pub(crate) async fn next(&mut self) -> DeviceEvent {
        let metering = self.meter.is_some();
        let Self { lost, list_timer, meter_timer, speaker_test, .. } = self;
        let speaker_test = async {
            match speaker_test {
                Some(done) => done.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(lost) = lost.recv() => DeviceEvent::Lost(lost),
            _ = list_timer.tick() => DeviceEvent::List,
            _ = meter_timer.tick(), if metering => DeviceEvent::Meter,
            _ = speaker_test => DeviceEvent::SpeakerTestDone,
        }
    }

    /// Reads the lists again (off the engine's task); notices.
    pub(crate) async fn refresh(&mut self) -> Vec<String> {
        let backend = self.manager.backend();
        let Ok(devices) = tokio::task::spawn_blocking(move || backend.list()).await else {
            return Vec::new();
        };
        blocking(|| self.manager.update_lists(devices)).1
    }

    /// The lists last read.
    pub(crate) fn lists(&self) -> &Devices {
        self.manager.lists()
    }

    /// The lists, if they changed since this was last asked.
    pub(crate) fn changed_lists(&mut self) -> Option<DevicesView> {
        if self.published.as_ref() == Some(self.manager.lists()) {
            return None;
        }
        self.published = Some(self.manager.lists().clone());
        Some(view(self.manager.lists()))
    }

    /// A device of the call failed: switch or go without. Returns notices.
    pub(crate) fn lost(&mut self, lost: &DeviceLost) -> Vec<String> {
        blocking(|| self.manager.lost(lost))
    }

    /// The settings changed: devices switch now, processing stages from the next frame.
    pub(crate) fn reconfigure(&mut self, settings: &Settings) -> Vec<String> {
        self.manager.processing().set_config(processing(settings));
        let (camera, microphone, speaker) =
            (settings.camera.clone(), settings.microphone.clone(), settings.speaker.clone());
        blocking(|| self.manager.choose(camera, microphone, speaker))
    }

    /// The call's camera is usable (a device, or the video override).
    pub(crate) fn has_camera(&self) -> bool {
        self.overrides_open.0 || self.manager.is_open(DeviceKind::Camera)
    }

    /// The call's microphone is usable (a device, or the audio override).
    pub(crate) fn has_microphone(&self) -> bool {
        self.overrides_open.1 || self.manager.is_open(DeviceKind::Microphone)
    }

    /// Opens what a call sends and plays: overrides where given, the user's devices otherwise.
    pub(crate) fn open_call(&mut self, video_sink: Box<dyn VideoSink>) -> Result<(CallMedia, Vec<String>), String> {
        // The meter's own microphone gives way to the call's.
        if matches!(self.meter, Some(Meter::Own { .. })) {
            self.meter = Some(Meter::Call);
        }
        let overrides = self.overrides.clone();
        let video = overrides.video.clone().unwrap_or(VideoSpec::None);
        let audio = overrides.audio.clone().unwrap_or(AudioSpec::None);
        let opened = blocking(|| sources::open(&video, &audio, video_sink))?;
        let mut media = opened.media;
        let mut notices = opened.notices;
        media.clock = self.clock;
        self.overrides_open = (media.video.is_some(), media.audio.is_some());
        if let Some((source, paced)) = media.audio.take() {
            // A test tone or a file is not a microphone: metered, not processed.
            media.audio = Some((Box::new(ProcessedSource::metered(source, self.manager.processing().clone())), paced));
        }
        let wanted = Wanted {
            camera: overrides.video.is_none(),
            microphone: overrides.audio.is_none(),
            speaker: !overrides.mute_playback,
        };
        let (devices, device_notices) = blocking(|| self.manager.open_call(wanted));
        notices.extend(device_notices);
        if let Some(camera) = devices.video {
            media.video = Some((camera, false));
        }
        if let Some(microphone) = devices.audio {
            media.audio = Some((microphone, false));
        }
        if let Some(speaker) = devices.audio_sink {
            media.audio_sink = speaker;
        }
        Ok((media, notices))
    }

    /// The call ended: its devices go.
    pub(crate) fn close_call(&mut self) {
        self.overrides_open = (false, false);
        self.manager.close_call();
        // A level meter that read the call's microphone opens its own again.
        if matches!(self.meter, Some(Meter::Call)) {
            self.meter = None;
            if let Err(e) = self.mic_test(true, false) {
                warn!(error = %e, "level meter after the call");
            }
        }
    }

    /// Turns the level meter on (reading the call's microphone when `in_call`, else opening
    /// one) or off. `Err` says why the meter cannot run.
    pub(crate) fn mic_test(&mut self, on: bool, in_call: bool) -> Result<(), String> {
        if !on {
            self.meter = None;
            return Ok(());
        }
        if in_call {
            self.meter = Some(Meter::Call);
            return Ok(());
        }
        if self.meter.is_some() {
            return Ok(());
        }
        let meter = match &self.overrides.audio {
            Some(AudioSpec::None) => return Err("Audio is turned off for this run.".to_owned()),
            Some(spec) => {
                let spec = spec.clone();
                let opened = blocking(|| sources::open(&VideoSpec::None, &spec, Box::new(DiscardVideoSink)))?;
                let source = opened.media.audio.ok_or("no audio source")?.0;
                MicrophoneMeter::start(Box::new(ProcessedSource::metered(source, self.manager.processing().clone())))
            }
            None => blocking(|| self.manager.open_meter()),
        }
        .map_err(|e| format!("The level meter cannot open your microphone: {e}"))?;
        self.meter = Some(Meter::Own { _running: meter });
        Ok(())
    }

    /// The level for the meter, dBFS.
    pub(crate) fn level_dbfs(&self) -> f32 {
        self.manager.processing().level_dbfs()
    }

    /// Starts the speaker test unless one is playing; false if one was. A notice when there is
    /// no speaker (the test sound then goes nowhere).
    pub(crate) fn speaker_test(&mut self) -> (bool, Option<String>) {
        if self.speaker_test.is_some() {
            return (false, None);
        }
        let (mut sink, notice): (Box<dyn AudioSink>, _) = if self.overrides.mute_playback {
            (Box::new(NullAudioSink::new()), None)
        } else {
            blocking(|| self.manager.open_test_speaker())
        };
        let (done, done_rx) = mpsc::unbounded_channel();
        let clock = self.clock;
        let spawned = std::thread::Builder::new().name("duet-speaker-test".into()).spawn(move || {
            duet_core::devices::play_test_sound(sink.as_mut(), clock);
            let _ = done.send(());
        });
        if let Err(e) = spawned {
            warn!(error = %e, "speaker test");
            return (false, Some("The speaker test could not start.".to_owned()));
        }
        self.speaker_test = Some(done_rx);
        (true, notice)
    }

    /// The speaker test ended.
    pub(crate) fn speaker_test_done(&mut self) {
        self.speaker_test = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{AppCommand, Engine, Status, UiEvent};
    use crate::test_support::{FakeDevices, Recorder, engine_with, wait_for};
    use crate::video_bridge::Stream;

    fn status(e: &Engine) -> Status {
        e.snapshot().status.status
    }

    fn noticed<'a>(ui: &'a Recorder, words: &'static str) -> impl Fn() -> bool + 'a {
        move || ui.has(|ev| matches!(ev, UiEvent::Notice { text } if text.contains(words)))
    }

    /// Waits until device `id` has taken `more` frames beyond what it had.
    async fn flowing(devices: &FakeDevices, id: &str, more: u64) {
        let start = devices.frames(id);
        wait_for(&format!("frames through {id}"), 10, || devices.frames(id) >= start + more).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn devices_switch_and_unplug_mid_call_without_dropping_it() {
        let server = crate::embedded::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let devices = FakeDevices::new(&["cam0", "cam1"], &["builtin-mic", "usb-mic"], &["builtin-out", "headset"]);
        let settings =
            Settings { microphone: Some("usb-mic".into()), speaker: Some("headset".into()), ..Settings::default() };
        let overrides = MediaOverrides { video: None, audio: None, mute_playback: false };
        let (e, ui, bridge) = engine_with(server.url(), settings.clone(), overrides, devices.clone());
        wait_for("device lists", 5, || e.snapshot().devices.microphones.len() == 2).await;
        e.send(AppCommand::TestCall);
        wait_for("connected", 15, || status(&e) == Status::Connected).await;
        // The chosen devices are in use: the echo bot sends our audio back to the headset.
        flowing(&devices, "usb-mic", 25).await;
        flowing(&devices, "cam0", 15).await;
        flowing(&devices, "headset", 25).await;
        assert_eq!(devices.frames("builtin-mic"), 0);

        // The USB microphone is pulled out: the built-in one takes over, the call stays up.
        devices.unplug("usb-mic");
        wait_for("a notice", 5, noticed(&ui, "\"usb-mic device\" stopped working")).await;
        flowing(&devices, "builtin-mic", 25).await;
        flowing(&devices, "headset", 25).await;
        assert_eq!(status(&e), Status::Connected);
        wait_for("the lists to drop it", 5, || e.snapshot().devices.microphones.len() == 1).await;
        assert!(ui.has(|ev| matches!(ev, UiEvent::Devices(d) if d.microphones.len() == 1)));

        // Another camera chosen in the settings applies at once; partner video goes on.
        let with_cam1 = Settings { camera: Some("cam1".into()), ..settings.clone() };
        e.send(AppCommand::Reconfigure { settings: Box::new(with_cam1), server_url: server.url() });
        flowing(&devices, "cam1", 15).await;
        let cam0 = devices.frames("cam0");
        let echoed = bridge.counters(Stream::Remote).sent;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(devices.frames("cam0") <= cam0 + 1, "the old camera is released");
        assert!(bridge.counters(Stream::Remote).sent >= echoed + 5, "partner video keeps coming");

        // The headset goes: playback moves to the built-in speaker.
        devices.unplug("headset");
        flowing(&devices, "builtin-out", 25).await;

        // The USB microphone comes back: it is the user's choice, so it is used again.
        devices.plug_microphone("usb-mic");
        wait_for("the choice back", 10, noticed(&ui, "Using your microphone \"usb-mic device\"")).await;
        flowing(&devices, "usb-mic", 25).await;

        // Every microphone gone: the call goes on without one, and says so.
        devices.unplug("usb-mic");
        devices.unplug("builtin-mic");
        wait_for("no microphone", 10, || !e.snapshot().controls.has_microphone).await;
        wait_for("why", 5, noticed(&ui, "cannot hear you until you connect one")).await;
        flowing(&devices, "builtin-out", 25).await;
        assert_eq!(status(&e), Status::Connected);
        e.quit().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_level_meter_reads_the_microphone_and_the_speaker_test_plays_a_sound() {
        let devices = FakeDevices::new(&[], &["builtin-mic", "mic"], &["builtin-out", "out"]);
        let overrides = MediaOverrides { video: None, audio: None, mute_playback: false };
        let settings = Settings { microphone: Some("mic".into()), speaker: Some("out".into()), ..Settings::default() };
        // No server needed: neither test starts a call.
        let (e, ui, _) = engine_with("ws://127.0.0.1:9/ws".into(), settings, overrides, devices.clone());
        wait_for("device lists", 5, || e.snapshot().devices.microphones.len() == 2).await;
        e.send(AppCommand::MicTest(true));
        let loud = |ui: &Recorder| {
            ui.all(|ev| matches!(ev, UiEvent::MicLevel { rms_dbfs } if *rms_dbfs > -40.0).then_some(()))
        };
        wait_for("a level from the tone", 5, || loud(&ui).len() >= 3).await;
        e.send(AppCommand::MicTest(false));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let levels = ui.all(|ev| matches!(ev, UiEvent::MicLevel { .. }).then_some(())).len();
        let pulled = devices.frames("mic");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(ui.all(|ev| matches!(ev, UiEvent::MicLevel { .. }).then_some(())).len(), levels, "meter off");
        assert_eq!(devices.frames("mic"), pulled, "the microphone is released");

        e.send(AppCommand::SpeakerTest);
        wait_for("playing", 5, || ui.has(|ev| matches!(ev, UiEvent::SpeakerTest { playing: true }))).await;
        wait_for("finished", 5, || ui.has(|ev| matches!(ev, UiEvent::SpeakerTest { playing: false }))).await;
        assert_eq!(devices.frames("out"), 75, "1.5 s of sound in 20 ms frames, on the chosen speaker");
        assert_eq!(devices.frames("builtin-mic") + devices.frames("builtin-out"), 0, "the chosen devices only");
        e.quit().await;
    }

    /// A camera or microphone that takes a second to open must not stall the app's other
    /// tasks (the page, the tray, the embedded server) on the one runtime worker.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn opening_a_slow_device_does_not_stall_the_runtime() {
        let ticks = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counter = ticks.clone();
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        let before = ticks.load(std::sync::atomic::Ordering::Relaxed);
        blocking(|| std::thread::sleep(Duration::from_millis(500)));
        let during = ticks.load(std::sync::atomic::Ordering::Relaxed) - before;
        ticker.abort();
        assert!(during >= 10, "the runtime stalled while the device opened: {during} ticks in 500 ms");
    }
}
