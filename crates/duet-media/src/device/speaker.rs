//! Playback through cpal with a small jitter buffer, and the automatic fallback to a null sink.

use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use cpal::traits::{DeviceTrait, StreamTrait};
use cpal::{FromSample, SampleFormat, SizedSample, Stream, StreamConfig};
use tracing::{info, warn};

use super::audio::{Direction, device_name, find_device, stream_config};
use super::playout::{PlayoutRing, PlayoutStats};
use crate::{AudioFrame, AudioSink, EchoReference, MediaError, NullAudioSink, Resampler};

/// How long `open` waits for the device to start.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Ring capacity: far more than the jitter buffer ever holds.
const CAPACITY_MS: u32 = 500;

/// What to open and how much to buffer.
#[derive(Debug, Clone)]
pub struct SpeakerConfig {
    /// A device id or name from [`list_devices`](crate::list_devices); `None` for the system default.
    pub device: Option<String>,
    /// Audio queued before playback starts, and again after an underrun (default 60 ms): absorbs the
    /// jitter of frames arriving from the network and the decoder.
    pub jitter_ms: u32,
    /// Queued audio above which the oldest is dropped to bring latency back to `jitter_ms` (default 160 ms).
    pub max_latency_ms: u32,
    /// Where the mono mix of everything played goes, for the echo canceller.
    pub echo_reference: Option<Arc<EchoReference>>,
}

impl Default for SpeakerConfig {
    fn default() -> Self {
        Self { device: None, jitter_ms: 60, max_latency_ms: 160, echo_reference: None }
    }
}

/// A speaker as an [`AudioSink`].
///
/// [`play`](AudioSink::play) resamples the frame to the device rate, maps its channels onto the device's
/// (mono is copied to every channel, stereo is mixed down for a mono device) and queues it in a lock-free
/// jitter buffer that the device callback drains. Playback starts once [`SpeakerConfig::jitter_ms`] is
/// queued; on underrun the device plays silence and re-buffers; when too much is queued the oldest audio is
/// dropped. The cpal stream lives on its own thread ("duet-speaker").
pub struct SpeakerSink {
    name: String,
    ring: Arc<PlayoutRing>,
    device_rate: u32,
    device_channels: u16,
    resampler: Option<(Resampler, u16)>,
    resampled: Vec<i16>,
    mapped: Vec<i16>,
    failure: Arc<Mutex<Option<String>>>,
    /// Dropping this ends the stream thread.
    _stop: SyncSender<()>,
}

impl std::fmt::Debug for SpeakerSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpeakerSink")
            .field("name", &self.name)
            .field("device_rate", &self.device_rate)
            .field("device_channels", &self.device_channels)
            .finish_non_exhaustive()
    }
}

/// What the stream thread reports once the device is running.
struct Started {
    name: String,
    rate: u32,
    channels: u16,
    ring: Arc<PlayoutRing>,
}

impl SpeakerSink {
    /// Opens the speaker; [`MediaError::NoSpeaker`] if there is none or it cannot be used.
    pub fn open(config: SpeakerConfig) -> Result<Self, MediaError> {
        let (init_tx, init_rx) = mpsc::sync_channel(1);
        let (stop, stop_rx) = mpsc::sync_channel::<()>(0);
        let failure = Arc::new(Mutex::new(None));
        let thread_failure = failure.clone();
        let thread_config = config.clone();
        thread::Builder::new()
            .name("duet-speaker".into())
            .spawn(move || match start(&thread_config, thread_failure) {
                Ok((stream, started)) => {
                    if init_tx.send(Ok(started)).is_ok() {
                        // Runs until the sink is dropped (the stop sender disconnects).
                        let _ = stop_rx.recv();
                    }
                    drop(stream);
                }
                Err(reason) => {
                    let _ = init_tx.send(Err(reason));
                }
            })
            .map_err(|e| MediaError::NoSpeaker { reason: format!("cannot start the audio thread: {e}") })?;
        let started = match init_rx.recv_timeout(OPEN_TIMEOUT) {
            Ok(Ok(started)) => started,
            Ok(Err(reason)) => return Err(MediaError::NoSpeaker { reason }),
            Err(RecvTimeoutError::Timeout) => {
                return Err(MediaError::NoSpeaker {
                    reason: format!("the device did not start within {} s", OPEN_TIMEOUT.as_secs()),
                });
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(MediaError::NoSpeaker { reason: "the audio thread failed".to_owned() });
            }
        };
        Ok(Self {
            name: started.name,
            ring: started.ring,
            device_rate: started.rate,
            device_channels: started.channels,
            resampler: None,
            resampled: Vec::new(),
            mapped: Vec::new(),
            failure,
            _stop: stop,
        })
    }

    /// The device's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Underruns, dropped audio and current fill of the jitter buffer.
    #[must_use]
    pub fn stats(&self) -> PlayoutStats {
        self.ring.stats()
    }
}

impl AudioSink for SpeakerSink {
    fn play(&mut self, frame: &AudioFrame) -> Result<(), MediaError> {
        if let Some(reason) = self.failure.lock().ok().and_then(|f| f.clone()) {
            return Err(MediaError::DeviceLost { device: format!("speaker {}", self.name), reason });
        }
        let key = (frame.sample_rate(), frame.channels());
        let resampler = match &mut self.resampler {
            Some((resampler, channels)) if (resampler.in_rate(), *channels) == key => resampler,
            slot => {
                let resampler = Resampler::new(frame.sample_rate(), self.device_rate, frame.channels())?;
                &mut slot.insert((resampler, frame.channels())).0
            }
        };
        self.resampled.clear();
        resampler.process(frame.samples(), &mut self.resampled);
        map_channels(&self.resampled, frame.channels(), self.device_channels, &mut self.mapped);
        self.ring.push(&self.mapped);
        Ok(())
    }
}

/// Re-lays interleaved audio from `from` to `to` channels into `out`.
fn map_channels(input: &[i16], from: u16, to: u16, out: &mut Vec<i16>) {
    let (from, to) = (usize::from(from.max(1)), usize::from(to.max(1)));
    out.clear();
    for frame in input.chunks_exact(from) {
        match (from, to) {
            (f, t) if f == t => out.extend_from_slice(frame),
            (1, _) => out.extend(std::iter::repeat_n(frame[0], to)),
            (_, 1) => {
                let sum: i32 = frame.iter().map(|&s| i32::from(s)).sum();
                out.push((sum / from as i32) as i16);
            }
            _ => out.extend((0..to).map(|c| frame.get(c).copied().unwrap_or(0))),
        }
    }
}

/// Opens and starts the output stream (on the speaker thread).
fn start(config: &SpeakerConfig, failure: Arc<Mutex<Option<String>>>) -> Result<(Stream, Started), String> {
    let host = cpal::default_host();
    let device = find_device(&host, Direction::Output, config.device.as_deref())?;
    let name = device_name(&device);
    let supported = stream_config(&device, Direction::Output).map_err(|e| format!("{name}: {e}"))?;
    let stream_config = supported.config();
    let (rate, channels) = (stream_config.sample_rate, stream_config.channels);
    let per_ms = rate as usize * usize::from(channels) / 1000;
    let ring = Arc::new(PlayoutRing::new(
        per_ms * CAPACITY_MS as usize,
        usize::from(channels),
        per_ms * config.jitter_ms as usize,
        per_ms * config.max_latency_ms.max(config.jitter_ms) as usize,
    ));
    if let Some(reference) = &config.echo_reference {
        reference.set_rate(rate);
    }
    let tap = config.echo_reference.clone();
    let stream = match supported.sample_format() {
        SampleFormat::I16 => build::<i16>(&device, &stream_config, ring.clone(), tap, failure),
        SampleFormat::I32 => build::<i32>(&device, &stream_config, ring.clone(), tap, failure),
        SampleFormat::U16 => build::<u16>(&device, &stream_config, ring.clone(), tap, failure),
        SampleFormat::F32 => build::<f32>(&device, &stream_config, ring.clone(), tap, failure),
        SampleFormat::F64 => build::<f64>(&device, &stream_config, ring.clone(), tap, failure),
        other => Err(format!("unsupported sample format {other}")),
    }
    .map_err(|e| format!("{name}: {e}"))?;
    stream.play().map_err(|e| format!("{name}: cannot start playback: {e}"))?;
    info!(device = %name, rate, channels, jitter_ms = config.jitter_ms, "speaker opened");
    Ok((stream, Started { name, rate, channels, ring }))
}

fn build<T>(
    device: &cpal::Device,
    config: &StreamConfig,
    ring: Arc<PlayoutRing>,
    echo_reference: Option<Arc<EchoReference>>,
    failure: Arc<Mutex<Option<String>>>,
) -> Result<Stream, String>
where
    T: SizedSample + FromSample<i16> + Send + 'static,
{
    let channels = config.channels;
    let mut scratch: Vec<i16> = Vec::new();
    let mut mono: Vec<i16> = Vec::new();
    device
        .build_output_stream::<T, _, _>(
            *config,
            move |data: &mut [T], _: &cpal::OutputCallbackInfo| {
                // Grows only when the device asks for a bigger buffer than ever before.
                scratch.resize(data.len(), 0);
                ring.pull(&mut scratch);
                for (out, &sample) in data.iter_mut().zip(&scratch) {
                    *out = T::from_sample(sample);
                }
                if let Some(reference) = &echo_reference {
                    // The echo canceller hears exactly what is played (grows like `scratch`).
                    map_channels(&scratch, channels, 1, &mut mono);
                    reference.push(&mono);
                }
            },
            move |error| {
                warn!(%error, "speaker stream error");
                if matches!(error.kind(), cpal::ErrorKind::DeviceNotAvailable | cpal::ErrorKind::StreamInvalidated)
                    && let Ok(mut failure) = failure.lock()
                {
                    *failure = Some(error.to_string());
                }
            },
            Some(Duration::from_secs(3)),
        )
        .map_err(|e| e.to_string())
}

/// The speaker if one works, otherwise a [`NullAudioSink`] (with an info log saying why), so a machine
/// without a sound card still runs calls.
#[must_use]
pub fn open_audio_sink(config: SpeakerConfig) -> Box<dyn AudioSink> {
    match SpeakerSink::open(config) {
        Ok(speaker) => Box::new(speaker),
        Err(error) => {
            info!(%error, "no usable speaker: received audio is discarded (null audio sink)");
            Box::new(NullAudioSink::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_mapping() {
        let mut out = Vec::new();
        map_channels(&[1, 2], 1, 2, &mut out);
        assert_eq!(out, [1, 1, 2, 2]);
        map_channels(&[10, 20, 30, 50], 2, 1, &mut out);
        assert_eq!(out, [15, 40]);
        map_channels(&[1, 2], 2, 4, &mut out);
        assert_eq!(out, [1, 2, 0, 0]);
        map_channels(&[1, 2, 3, 4], 2, 2, &mut out);
        assert_eq!(out, [1, 2, 3, 4]);
    }
}
