//! The microphone through cpal, bridged from its callback thread into the pull-based [`AudioSource`].

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::thread;
use std::time::Duration;

use cpal::traits::{DeviceTrait, StreamTrait};
use cpal::{FromSample, SampleFormat, SizedSample, Stream, StreamConfig};
use tracing::{info, warn};

use super::audio::{Direction, device_name, find_device, stream_config};
use crate::frame::samples_to_us;
use crate::{
    AUDIO_SAMPLE_RATE, AudioFormat, AudioFrame, AudioSource, FrameDuration, MediaClock, MediaError, Resampler,
};

/// How long `open` waits for the device to start.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `next_frame` waits for audio before reporting the microphone as stalled.
const FRAME_TIMEOUT: Duration = Duration::from_secs(2);
/// Callback chunks queued between the device and the consumer (~0.5-1 s of audio at usual periods).
const QUEUE_CHUNKS: usize = 64;

/// What to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MicrophoneConfig {
    /// A device id or name from [`list_devices`](crate::list_devices); `None` for the system default.
    pub device: Option<String>,
    /// Duration of the frames [`next_frame`](AudioSource::next_frame) returns.
    pub frame_duration: FrameDuration,
}

impl Default for MicrophoneConfig {
    /// The default microphone, 20 ms frames.
    fn default() -> Self {
        Self { device: None, frame_duration: FrameDuration::Ms20 }
    }
}

/// Audio from the device callback: mono samples at 48 kHz, or the stream's failure.
enum Chunk {
    Audio { samples: Vec<i16>, captured_us: u64 },
    Failed(String),
}

/// A microphone as an [`AudioSource`]: mono, 48 kHz (resampled if the device runs at another rate), frames
/// of the configured duration.
///
/// cpal delivers audio on its own callback thread, and its stream type is not `Send` on every platform, so
/// the stream lives on a dedicated thread ("duet-mic") and audio crosses to the consumer over a bounded
/// channel (full: the oldest audio is kept and new chunks are dropped with a warning).
/// [`next_frame`](AudioSource::next_frame) blocks until a frame is complete. Timestamps are the capture time
/// of the first sample.
///
/// A missing microphone, or one that is present but cannot be used (no configuration, busy), gives
/// [`MediaError::NoMicrophone`] from [`MicrophoneSource::open`].
pub struct MicrophoneSource {
    name: String,
    format: AudioFormat,
    chunks: Receiver<Chunk>,
    pending: Vec<i16>,
    pending_timestamp_us: u64,
    /// Dropping this ends the stream thread.
    _stop: SyncSender<()>,
}

impl std::fmt::Debug for MicrophoneSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MicrophoneSource")
            .field("name", &self.name)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl MicrophoneSource {
    /// Opens the microphone.
    pub fn open(config: MicrophoneConfig, clock: MediaClock) -> Result<Self, MediaError> {
        let (chunk_tx, chunks) = mpsc::sync_channel(QUEUE_CHUNKS);
        let (init_tx, init_rx) = mpsc::sync_channel(1);
        let (stop, stop_rx) = mpsc::sync_channel::<()>(0);
        let wanted = config.device.clone();
        thread::Builder::new()
            .name("duet-mic".into())
            .spawn(move || match start(wanted.as_deref(), clock, chunk_tx) {
                Ok((stream, name)) => {
                    if init_tx.send(Ok(name)).is_ok() {
                        // Runs until the source is dropped (the stop sender disconnects).
                        let _ = stop_rx.recv();
                    }
                    drop(stream);
                }
                Err(reason) => {
                    let _ = init_tx.send(Err(reason));
                }
            })
            .map_err(|e| MediaError::NoMicrophone { reason: format!("cannot start the audio thread: {e}") })?;
        let name = match init_rx.recv_timeout(OPEN_TIMEOUT) {
            Ok(Ok(name)) => name,
            Ok(Err(reason)) => return Err(MediaError::NoMicrophone { reason }),
            Err(RecvTimeoutError::Timeout) => {
                return Err(MediaError::NoMicrophone {
                    reason: format!("the device did not start within {} s", OPEN_TIMEOUT.as_secs()),
                });
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(MediaError::NoMicrophone { reason: "the audio thread failed".to_owned() });
            }
        };
        let format = AudioFormat { sample_rate: AUDIO_SAMPLE_RATE, channels: 1, frame_duration: config.frame_duration };
        Ok(Self { name, format, chunks, pending: Vec::new(), pending_timestamp_us: 0, _stop: stop })
    }

    /// The device's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    fn lost(&self, reason: String) -> MediaError {
        MediaError::DeviceLost { device: format!("microphone {}", self.name), reason }
    }
}

impl AudioSource for MicrophoneSource {
    fn format(&self) -> AudioFormat {
        self.format
    }

    fn next_frame(&mut self) -> Result<Option<AudioFrame>, MediaError> {
        let needed = self.format.frame_duration.samples_per_channel(AUDIO_SAMPLE_RATE);
        while self.pending.len() < needed {
            match self.chunks.recv_timeout(FRAME_TIMEOUT) {
                Ok(Chunk::Audio { samples, captured_us }) => {
                    if self.pending.is_empty() {
                        // Re-anchor on the device's clock whenever the queue drains, so drift never builds up.
                        self.pending_timestamp_us = captured_us;
                    }
                    self.pending.extend_from_slice(&samples);
                }
                Ok(Chunk::Failed(reason)) => return Err(self.lost(reason)),
                Err(RecvTimeoutError::Timeout) => {
                    return Err(self.lost(format!("no audio for {} s", FRAME_TIMEOUT.as_secs())));
                }
                Err(RecvTimeoutError::Disconnected) => return Err(self.lost("the audio thread ended".to_owned())),
            }
        }
        let samples: Vec<i16> = self.pending.drain(..needed).collect();
        let timestamp = self.pending_timestamp_us;
        self.pending_timestamp_us += samples_to_us(needed as u64, AUDIO_SAMPLE_RATE);
        AudioFrame::new(samples, AUDIO_SAMPLE_RATE, 1, timestamp).map(Some)
    }
}

/// Opens and starts the input stream (on the microphone thread); returns it with the device's name.
fn start(wanted: Option<&str>, clock: MediaClock, chunks: SyncSender<Chunk>) -> Result<(Stream, String), String> {
    let host = cpal::default_host();
    let device = find_device(&host, Direction::Input, wanted)?;
    let name = device_name(&device);
    let supported = stream_config(&device, Direction::Input).map_err(|e| format!("{name}: {e}"))?;
    let config = supported.config();
    let stream = match supported.sample_format() {
        SampleFormat::I16 => build::<i16>(&device, &config, clock, chunks),
        SampleFormat::I32 => build::<i32>(&device, &config, clock, chunks),
        SampleFormat::U16 => build::<u16>(&device, &config, clock, chunks),
        SampleFormat::F32 => build::<f32>(&device, &config, clock, chunks),
        SampleFormat::F64 => build::<f64>(&device, &config, clock, chunks),
        other => Err(format!("unsupported sample format {other}")),
    }
    .map_err(|e| format!("{name}: {e}"))?;
    stream.play().map_err(|e| format!("{name}: cannot start capture: {e}"))?;
    info!(device = %name, rate = config.sample_rate, channels = config.channels, "microphone opened");
    Ok((stream, name))
}

fn build<T>(
    device: &cpal::Device,
    config: &StreamConfig,
    clock: MediaClock,
    chunks: SyncSender<Chunk>,
) -> Result<Stream, String>
where
    T: SizedSample + Send + 'static,
    f32: FromSample<T>,
{
    let channels = usize::from(config.channels.max(1));
    let rate = config.sample_rate;
    let mut resampler = Resampler::new(rate, AUDIO_SAMPLE_RATE, 1).map_err(|e| e.to_string())?;
    let mut mono = Vec::new();
    let mut overflowed = false;
    let errors = chunks.clone();
    device
        .build_input_stream::<T, _, _>(
            *config,
            move |data: &[T], _: &cpal::InputCallbackInfo| {
                let now = clock.now_us();
                mono.clear();
                mono.extend(data.chunks_exact(channels).map(|frame| {
                    let sum: f32 = frame.iter().map(|&s| s.to_sample::<f32>()).sum();
                    (sum / channels as f32 * 32_767.0).round().clamp(-32_768.0, 32_767.0) as i16
                }));
                let captured_us = now.saturating_sub(samples_to_us(mono.len() as u64, rate));
                let mut samples = Vec::with_capacity(mono.len() * AUDIO_SAMPLE_RATE as usize / rate as usize + 2);
                resampler.process(&mono, &mut samples);
                let full = chunks.try_send(Chunk::Audio { samples, captured_us }).is_err();
                if full && !overflowed {
                    warn!("microphone audio is not being consumed; dropping audio");
                }
                overflowed = full;
            },
            move |error| {
                warn!(%error, "microphone stream error");
                if matches!(error.kind(), cpal::ErrorKind::DeviceNotAvailable | cpal::ErrorKind::StreamInvalidated) {
                    let _ = errors.try_send(Chunk::Failed(error.to_string()));
                }
            },
            Some(Duration::from_secs(3)),
        )
        .map_err(|e| e.to_string())
}
