//! Media that can change device during a call: the call's threads pull from (or play into) a
//! switchable wrapper; the engine hands it a new device, or none, whenever the device policy
//! says so. A device that fails is reported once as [`DeviceLost`] and replaced by silence (or
//! black frames, or a null speaker) until the engine brings another: the call never stops for
//! a device.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use duet_media::{
    AUDIO_SAMPLE_RATE, AudioFormat, AudioFrame, AudioSink, AudioSource, FrameDuration, FrameRate, MediaClock,
    MediaError, NullAudioSink, VideoFormat, VideoFrame, VideoSource, scale_i420,
};
use tokio::sync::mpsc;

use super::DeviceKind;

/// A device stopped working.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceLost {
    /// Its kind.
    pub kind: DeviceKind,
    /// The id it was installed with (`None`: the system default).
    pub device: Option<String>,
    /// What went wrong.
    pub reason: String,
}

/// The engine's side of one switchable device: installs replacements.
pub struct Switch<T> {
    pending: Arc<Mutex<Option<Installed<T>>>>,
}

impl<T> Clone for Switch<T> {
    fn clone(&self) -> Self {
        Self { pending: self.pending.clone() }
    }
}

/// A device (or none) with the id it was opened as.
struct Installed<T> {
    media: Option<T>,
    device: Option<String>,
}

impl<T> Switch<T> {
    fn new() -> Self {
        Self { pending: Arc::new(Mutex::new(None)) }
    }

    /// Uses `media` (opened as `device`, `None` for the system default) from the next frame on.
    pub fn install(&self, media: T, device: Option<String>) {
        *self.pending.lock().unwrap_or_else(PoisonError::into_inner) = Some(Installed { media: Some(media), device });
    }

    /// Goes on without a device from the next frame on.
    pub fn clear(&self) {
        *self.pending.lock().unwrap_or_else(PoisonError::into_inner) = Some(Installed { media: None, device: None });
    }

    fn take(&self) -> Option<Installed<T>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// What every switchable wrapper shares: the current device and where failures go.
struct Current<T> {
    kind: DeviceKind,
    switch: Switch<T>,
    media: Option<T>,
    device: Option<String>,
    lost: mpsc::UnboundedSender<DeviceLost>,
}

impl<T> Current<T> {
    fn new(kind: DeviceKind, lost: mpsc::UnboundedSender<DeviceLost>) -> (Self, Switch<T>) {
        let switch = Switch::new();
        (Self { kind, switch: switch.clone(), media: None, device: None, lost }, switch)
    }

    /// Picks up what the engine installed since the last frame.
    fn refresh(&mut self) {
        if let Some(installed) = self.switch.take() {
            self.media = installed.media;
            self.device = installed.device;
        }
    }

    /// The device failed: report it once and go without.
    fn fail(&mut self, reason: String) {
        self.media = None;
        let _ = self.lost.send(DeviceLost { kind: self.kind, device: self.device.take(), reason });
    }
}

/// Paces placeholder frames at real time while there is no device.
struct Pacer {
    next_at: Option<Instant>,
}

impl Pacer {
    fn wait(&mut self, interval: Duration) {
        let now = Instant::now();
        let at = self.next_at.filter(|at| *at + Duration::from_millis(200) > now).unwrap_or(now);
        if at > now {
            std::thread::sleep(at - now);
        }
        self.next_at = Some(at + interval);
    }
}

/// A microphone that can change during a call: 48 kHz mono, 20 ms frames; silence while there
/// is none. Devices pace themselves (they block until audio is captured).
pub struct SwitchableAudioSource {
    current: Current<Box<dyn AudioSource>>,
    clock: MediaClock,
    pacer: Pacer,
}

impl SwitchableAudioSource {
    /// A source with no device yet; failures go to `lost`.
    #[must_use]
    pub fn new(clock: MediaClock, lost: mpsc::UnboundedSender<DeviceLost>) -> (Self, Switch<Box<dyn AudioSource>>) {
        let (current, switch) = Current::new(DeviceKind::Microphone, lost);
        (Self { current, clock, pacer: Pacer { next_at: None } }, switch)
    }

    const FORMAT: AudioFormat =
        AudioFormat { sample_rate: AUDIO_SAMPLE_RATE, channels: 1, frame_duration: FrameDuration::Ms20 };
}

impl AudioSource for SwitchableAudioSource {
    fn format(&self) -> AudioFormat {
        Self::FORMAT
    }

    fn next_frame(&mut self) -> Result<Option<AudioFrame>, MediaError> {
        self.current.refresh();
        if let Some(source) = &mut self.current.media {
            match source.next_frame() {
                Ok(Some(frame)) if frame.sample_rate() == AUDIO_SAMPLE_RATE && frame.channels() == 1 => {
                    self.pacer.next_at = None;
                    return Ok(Some(frame));
                }
                Ok(Some(_)) => self.current.fail("not 48 kHz mono".to_owned()),
                Ok(None) => self.current.fail("the device ended".to_owned()),
                Err(e) => self.current.fail(e.to_string()),
            }
        }
        let duration = Self::FORMAT.frame_duration;
        self.pacer.wait(Duration::from_millis(u64::from(duration.as_millis())));
        let samples = duration.samples_per_channel(AUDIO_SAMPLE_RATE);
        AudioFrame::silence(AUDIO_SAMPLE_RATE, 1, samples, self.clock.now_us()).map(Some)
    }
}

/// A camera that can change during a call. Frames keep the size of the first camera (others are
/// scaled to it, so the encoder never restarts); black frames at 15 fps while there is none.
pub struct SwitchableVideoSource {
    current: Current<Box<dyn VideoSource>>,
    format: VideoFormat,
    clock: MediaClock,
    pacer: Pacer,
}

impl SwitchableVideoSource {
    /// A source with frames of `format` and no device yet; failures go to `lost`.
    #[must_use]
    pub fn new(
        format: VideoFormat,
        clock: MediaClock,
        lost: mpsc::UnboundedSender<DeviceLost>,
    ) -> (Self, Switch<Box<dyn VideoSource>>) {
        let (current, switch) = Current::new(DeviceKind::Camera, lost);
        (Self { current, format, clock, pacer: Pacer { next_at: None } }, switch)
    }
}

impl VideoSource for SwitchableVideoSource {
    fn format(&self) -> VideoFormat {
        self.format
    }

    fn next_frame(&mut self) -> Result<Option<VideoFrame>, MediaError> {
        self.current.refresh();
        if let Some(source) = &mut self.current.media {
            match source.next_frame() {
                Ok(Some(frame)) => {
                    self.pacer.next_at = None;
                    if (frame.width(), frame.height()) == (self.format.width, self.format.height) {
                        return Ok(Some(frame));
                    }
                    return scale_i420(&frame, self.format.width, self.format.height).map(Some);
                }
                Ok(None) => self.current.fail("the device ended".to_owned()),
                Err(e) => self.current.fail(e.to_string()),
            }
        }
        self.pacer.wait(FrameRate::from_fps(15).frame_interval());
        VideoFrame::black(self.format.width, self.format.height, self.clock.now_us()).map(Some)
    }
}

/// A speaker that can change during a call; audio goes nowhere while there is none.
pub struct SwitchableAudioSink {
    current: Current<Box<dyn AudioSink>>,
    null: NullAudioSink,
}

impl SwitchableAudioSink {
    /// A sink with no device yet; failures go to `lost`.
    #[must_use]
    pub fn new(lost: mpsc::UnboundedSender<DeviceLost>) -> (Self, Switch<Box<dyn AudioSink>>) {
        let (current, switch) = Current::new(DeviceKind::Speaker, lost);
        (Self { current, null: NullAudioSink::new() }, switch)
    }
}

impl AudioSink for SwitchableAudioSink {
    fn play(&mut self, frame: &AudioFrame) -> Result<(), MediaError> {
        self.current.refresh();
        if let Some(sink) = &mut self.current.media {
            match sink.play(frame) {
                Ok(()) => return Ok(()),
                Err(e) => self.current.fail(e.to_string()),
            }
        }
        self.null.play(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use duet_media::{SyntheticAudioSource, SyntheticVideoSource};

    /// A source that fails after `frames` frames, as an unplugged device does.
    struct Unplugged<S> {
        inner: S,
        frames: u32,
    }

    impl<S: AudioSource> AudioSource for Unplugged<S> {
        fn format(&self) -> AudioFormat {
            self.inner.format()
        }

        fn next_frame(&mut self) -> Result<Option<AudioFrame>, MediaError> {
            if self.frames == 0 {
                return Err(MediaError::DeviceLost { device: "microphone usb".into(), reason: "unplugged".into() });
            }
            self.frames -= 1;
            self.inner.next_frame()
        }
    }

    fn tone(clock: MediaClock) -> SyntheticAudioSource {
        SyntheticAudioSource::new(1, FrameDuration::Ms20, clock).unwrap()
    }

    fn is_silent(frame: &AudioFrame) -> bool {
        frame.samples().iter().all(|&s| s == 0)
    }

    #[test]
    fn a_microphone_that_fails_is_reported_once_and_replaced_by_silence_until_the_next_one() {
        let clock = MediaClock::new();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (mut source, switch) = SwitchableAudioSource::new(clock, tx);
        assert!(is_silent(&source.next_frame().unwrap().unwrap()), "no device yet: silence");
        switch.install(Box::new(Unplugged { inner: tone(clock), frames: 2 }), Some("usb".into()));
        assert!(!is_silent(&source.next_frame().unwrap().unwrap()));
        assert!(!is_silent(&source.next_frame().unwrap().unwrap()));
        let started = Instant::now();
        for _ in 0..5 {
            assert!(is_silent(&source.next_frame().unwrap().unwrap()), "unplugged: silence");
        }
        assert!(started.elapsed() >= Duration::from_millis(70), "silence comes in real time");
        let lost = rx.try_recv().unwrap();
        assert_eq!((lost.kind, lost.device.as_deref()), (DeviceKind::Microphone, Some("usb")));
        assert!(lost.reason.contains("unplugged"));
        assert!(rx.try_recv().is_err(), "reported once");
        switch.install(Box::new(tone(clock)), Some("builtin".into()));
        assert!(!is_silent(&source.next_frame().unwrap().unwrap()), "the new device is heard");
        switch.clear();
        assert!(is_silent(&source.next_frame().unwrap().unwrap()));
    }

    #[test]
    fn another_camera_is_scaled_to_the_calls_frame_size() {
        let clock = MediaClock::new();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let format = VideoFormat { width: 320, height: 180, frame_rate: FrameRate::from_fps(30) };
        let (mut source, switch) = SwitchableVideoSource::new(format, clock, tx);
        let black = source.next_frame().unwrap().unwrap();
        assert_eq!((black.width(), black.height()), (320, 180));
        assert!(black.y().iter().all(|&y| y == black.y()[0]), "no camera: a plain frame");
        switch.install(Box::new(SyntheticVideoSource::new(640, 480, 30, clock).unwrap()), Some("1".into()));
        let frame = source.next_frame().unwrap().unwrap();
        assert_eq!((frame.width(), frame.height()), (320, 180));
        assert!(frame.y().iter().any(|&y| y != frame.y()[0]), "the camera's picture");
        assert!(rx.try_recv().is_err());
    }

    /// A speaker that fails on its first frame.
    struct Broken;

    impl AudioSink for Broken {
        fn play(&mut self, _frame: &AudioFrame) -> Result<(), MediaError> {
            Err(MediaError::DeviceLost { device: "speaker".into(), reason: "unplugged".into() })
        }
    }

    #[test]
    fn a_speaker_that_fails_is_reported_and_audio_goes_nowhere_until_the_next_one() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (mut sink, switch) = SwitchableAudioSink::new(tx);
        let frame = AudioFrame::silence(AUDIO_SAMPLE_RATE, 1, 960, 0).unwrap();
        sink.play(&frame).unwrap();
        switch.install(Box::new(Broken), None);
        sink.play(&frame).unwrap();
        sink.play(&frame).unwrap();
        let lost = rx.try_recv().unwrap();
        assert_eq!((lost.kind, lost.device), (DeviceKind::Speaker, None));
        assert!(rx.try_recv().is_err());
        assert_eq!(sink.null.frames(), 3, "every frame was taken");
    }
}
