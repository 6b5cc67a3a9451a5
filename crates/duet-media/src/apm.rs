//! Audio processing for the microphone: echo cancellation (AEC3), noise suppression and automatic
//! gain control (AGC2, adaptive digital), from the pure-Rust port of WebRTC's audio processing
//! module, [`sonora`] (chosen and measured in `docs/AUDIO-PROCESSING.md`).
//!
//! [`AudioProcessor`] works on 48 kHz mono 16-bit audio in 10 ms blocks ([`PROCESSING_FRAME`]
//! samples). The far end (what the speaker plays) goes in through
//! [`AudioProcessor::analyze_render`] in pieces of any length; the microphone through
//! [`AudioProcessor::process_capture`], in place. The echo canceller finds the delay between the
//! two itself. The wrapper's buffers are allocated once; sonora itself allocates inside each
//! frame, so call it from a thread where that is harmless (the encoder's, not a device callback).
//!
//! [`process_wav_files`] runs the same processing offline over two WAV files, for measurements
//! (`duet process-audio`).

use std::path::Path;
use std::time::Instant;

use sonora::config::{
    AdaptiveDigital, EchoCanceller, GainController2, HighPassFilter, NoiseSuppression, NoiseSuppressionLevel,
};
use sonora::{AudioProcessing, Config, StreamConfig};

use crate::{AUDIO_SAMPLE_RATE, AudioSink, AudioSource, FrameDuration, MediaClock, MediaError, WavSource, WavWriter};

/// Samples in one processing block: 10 ms at 48 kHz, mono.
pub const PROCESSING_FRAME: usize = 480;

/// The gain control's starting gain, dB, before it has heard speech. WebRTC's default is 15 dB,
/// meant to work with an analog microphone volume control, which Duet does not have: measured on
/// speech-like input (`tests/audio_processing.rs`), 15 dB clips the first second of anyone talking
/// at -25 dBFS or louder, 6 dB nobody up to -20 dBFS, and quiet talkers (-40 dBFS) still end up
/// within 1 dB of the same level after a few seconds of speech.
const AGC_INITIAL_GAIN_DB: f32 = 6.0;

/// Which stages run. Default: all on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessingConfig {
    /// Acoustic echo cancellation against the far end given to [`AudioProcessor::analyze_render`].
    pub echo_cancellation: bool,
    /// Stationary noise suppression (level High, about 18 dB).
    pub noise_suppression: bool,
    /// Automatic gain control: an adaptive digital gain (WebRTC's AGC2) bringing speech to about
    /// -22 dBFS, with a limiter.
    pub gain_control: bool,
}

impl Default for ProcessingConfig {
    fn default() -> Self {
        Self { echo_cancellation: true, noise_suppression: true, gain_control: true }
    }
}

impl ProcessingConfig {
    /// True when at least one stage runs.
    #[must_use]
    pub fn any(&self) -> bool {
        self.echo_cancellation || self.noise_suppression || self.gain_control
    }

    /// The sonora configuration for these stages. The high-pass filter (which removes DC and rumble
    /// below about 100 Hz) runs with the echo canceller or the noise suppressor, not for gain control
    /// alone.
    fn to_sonora(self) -> Config {
        Config {
            high_pass_filter: (self.echo_cancellation || self.noise_suppression).then(HighPassFilter::default),
            echo_canceller: self.echo_cancellation.then(EchoCanceller::default),
            noise_suppression: self
                .noise_suppression
                .then(|| NoiseSuppression { level: NoiseSuppressionLevel::High, ..Default::default() }),
            gain_controller2: self.gain_control.then(|| GainController2 {
                adaptive_digital: Some(AdaptiveDigital {
                    initial_gain_db: AGC_INITIAL_GAIN_DB,
                    ..AdaptiveDigital::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// What the processor has seen and what the echo canceller reports.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessingStats {
    /// The echo canceller's current estimate of the delay from the far end to the microphone, ms
    /// (`None` while echo cancellation is off).
    pub delay_ms: Option<u32>,
    /// Echo return loss estimated by the echo canceller, dB (how much quieter the echo is than the far
    /// end, before cancellation).
    pub echo_return_loss_db: Option<f64>,
    /// Echo return loss enhancement estimated by the echo canceller, dB (how much it removes).
    pub echo_return_loss_enhancement_db: Option<f64>,
    /// Microphone blocks of 10 ms processed.
    pub capture_frames: u64,
    /// Far-end blocks of 10 ms given to the echo canceller.
    pub render_frames: u64,
}

/// Echo cancellation, noise suppression and gain control over 48 kHz mono 10 ms blocks.
///
/// Feed the far end as it is played with [`analyze_render`](Self::analyze_render) and process the
/// microphone with [`process_capture`](Self::process_capture), in the order they happen.
pub struct AudioProcessor {
    apm: AudioProcessing,
    config: ProcessingConfig,
    /// Far-end samples waiting for a whole block: `far[..far_len]`.
    far: Box<[i16]>,
    far_len: usize,
    /// Sonora's output, copied back over the caller's samples.
    scratch: Box<[i16]>,
    capture_frames: u64,
    render_frames: u64,
}

impl std::fmt::Debug for AudioProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioProcessor")
            .field("config", &self.config)
            .field("capture_frames", &self.capture_frames)
            .field("render_frames", &self.render_frames)
            .finish_non_exhaustive()
    }
}

impl AudioProcessor {
    /// A processor running the stages of `config` on 48 kHz mono audio.
    pub fn new(config: ProcessingConfig) -> Result<Self, MediaError> {
        let stream = StreamConfig::new(AUDIO_SAMPLE_RATE, 1);
        if stream.num_samples() != PROCESSING_FRAME {
            return Err(MediaError::InvalidArgument(format!(
                "audio processing needs {PROCESSING_FRAME}-sample blocks, the stream has {}",
                stream.num_samples()
            )));
        }
        let apm =
            AudioProcessing::builder().config(config.to_sonora()).capture_config(stream).render_config(stream).build();
        Ok(Self {
            apm,
            config,
            far: vec![0; PROCESSING_FRAME].into_boxed_slice(),
            far_len: 0,
            scratch: vec![0; PROCESSING_FRAME].into_boxed_slice(),
            capture_frames: 0,
            render_frames: 0,
        })
    }

    /// The stages running.
    #[must_use]
    pub fn config(&self) -> ProcessingConfig {
        self.config
    }

    /// Turns stages on or off from the next block on, without re-creating the processor.
    ///
    /// Sonora re-initialises every stage when the set of active stages changes, so the echo
    /// canceller starts afresh after any switch and re-converges within about a second of far-end
    /// speech. Setting the same configuration does nothing.
    pub fn set_config(&mut self, config: ProcessingConfig) {
        if config == self.config {
            return;
        }
        if !config.echo_cancellation {
            self.far_len = 0;
        }
        self.apm.apply_config(config.to_sonora());
        self.config = config;
    }

    /// The far end as it is played (48 kHz mono, any length), for the echo canceller: buffered into
    /// whole 10 ms blocks, each handed on as soon as it is complete. Ignored while echo cancellation is
    /// off.
    pub fn analyze_render(&mut self, far: &[i16]) {
        if !self.config.echo_cancellation {
            return;
        }
        let mut rest = far;
        while !rest.is_empty() {
            let take = (PROCESSING_FRAME - self.far_len).min(rest.len());
            self.far[self.far_len..self.far_len + take].copy_from_slice(&rest[..take]);
            self.far_len += take;
            rest = &rest[take..];
            if self.far_len == PROCESSING_FRAME {
                self.far_len = 0;
                // Sonora's only errors are for stream formats, fixed at 48 kHz mono in `new`.
                if self.apm.process_render_i16(&self.far, &mut self.scratch).is_ok() {
                    self.render_frames += 1;
                }
            }
        }
    }

    /// Processes microphone audio in place: 48 kHz mono, a whole number of 10 ms blocks
    /// ([`PROCESSING_FRAME`] samples each), else [`MediaError::InvalidArgument`] and the samples are
    /// left untouched. With every stage off the samples are not touched at all.
    pub fn process_capture(&mut self, mic: &mut [i16]) -> Result<(), MediaError> {
        if !mic.len().is_multiple_of(PROCESSING_FRAME) {
            return Err(MediaError::InvalidArgument(format!(
                "audio processing takes whole 10 ms blocks of {PROCESSING_FRAME} samples, got {} samples",
                mic.len()
            )));
        }
        if !self.config.any() {
            self.capture_frames += (mic.len() / PROCESSING_FRAME) as u64;
            return Ok(());
        }
        for block in mic.chunks_exact_mut(PROCESSING_FRAME) {
            self.apm.process_capture_i16(block, &mut self.scratch).map_err(|e| MediaError::Codec {
                codec: "audio processing",
                operation: "capture",
                message: e.to_string(),
            })?;
            block.copy_from_slice(&self.scratch);
            self.capture_frames += 1;
        }
        Ok(())
    }

    /// The echo canceller's estimates and the block counts.
    #[must_use]
    pub fn stats(&self) -> ProcessingStats {
        let sonora = self.apm.statistics();
        let echo = self.config.echo_cancellation;
        ProcessingStats {
            delay_ms: sonora.delay_ms.filter(|_| echo).and_then(|d| u32::try_from(d).ok()),
            echo_return_loss_db: sonora.echo_return_loss.filter(|_| echo),
            echo_return_loss_enhancement_db: sonora.echo_return_loss_enhancement.filter(|_| echo),
            capture_frames: self.capture_frames,
            render_frames: self.render_frames,
        }
    }
}

/// What [`process_wav_files`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessingReport {
    /// 10 ms blocks processed: the microphone file's length, the last block completed with silence.
    pub frames: u64,
    /// Audio processed, ms (`frames` × 10).
    pub duration_ms: u64,
    /// 10 ms blocks in the far-end file. Fewer than `frames`: the far end was continued with silence;
    /// more: the rest was not used.
    pub far_frames: u64,
    /// Mean processing time of one 10 ms step (far block and microphone block), µs.
    pub processing_us_mean: f64,
    /// The longest step, µs.
    pub processing_us_max: f64,
    /// Audio time per processing time (100 = a hundred times faster than real time).
    pub realtime_factor: f64,
    /// The processor's statistics at the end.
    pub stats: ProcessingStats,
}

/// Runs the processing offline: the far end from `far`, the microphone from `mic`, the result to
/// `out`, all 48 kHz mono 16-bit PCM WAV, 10 ms at a time with each far block given before the
/// microphone block of the same time.
///
/// The output is as long as the microphone file, rounded up to whole 10 ms. A far-end file that is
/// shorter is continued with silence, a longer one is cut (see [`ProcessingReport::far_frames`]).
/// Errors: [`MediaError::Io`] for a file that cannot be opened or written,
/// [`MediaError::InvalidFile`] for one that is not a WAV file, [`MediaError::UnsupportedFile`] for a
/// WAV file that is not 48 kHz mono 16-bit.
pub fn process_wav_files(
    far: &Path,
    mic: &Path,
    out: &Path,
    config: ProcessingConfig,
) -> Result<ProcessingReport, MediaError> {
    let mut far = open_wav(far)?;
    let mut mic = open_wav(mic)?;
    let mut writer = WavWriter::create(out, AUDIO_SAMPLE_RATE, 1)?;
    let mut processor = AudioProcessor::new(config)?;
    let silence = [0i16; PROCESSING_FRAME];
    let (mut frames, mut far_frames, mut far_ended) = (0u64, 0u64, false);
    let (mut total_us, mut max_us) = (0.0f64, 0.0f64);
    while let Some(mut frame) = mic.next_frame()? {
        let far_frame = if far_ended { None } else { far.next_frame()? };
        far_ended = far_frame.is_none();
        far_frames += u64::from(!far_ended);
        let start = Instant::now();
        processor.analyze_render(far_frame.as_ref().map_or(&silence[..], |f| f.samples()));
        processor.process_capture(frame.samples_mut())?;
        let us = start.elapsed().as_secs_f64() * 1e6;
        total_us += us;
        max_us = max_us.max(us);
        writer.play(&frame)?;
        frames += 1;
    }
    writer.finish()?;
    // Any far-end frames past the microphone's end are counted, not processed.
    if !far_ended {
        while far.next_frame()?.is_some() {
            far_frames += 1;
        }
    }
    let duration_ms = frames * 10;
    let processing_us_mean = if frames == 0 { 0.0 } else { total_us / frames as f64 };
    Ok(ProcessingReport {
        frames,
        duration_ms,
        far_frames,
        processing_us_mean,
        processing_us_max: max_us,
        realtime_factor: if total_us > 0.0 { duration_ms as f64 * 1000.0 / total_us } else { 0.0 },
        stats: processor.stats(),
    })
}

/// Opens a WAV file in 10 ms frames, refusing anything but 48 kHz mono.
fn open_wav(path: &Path) -> Result<WavSource, MediaError> {
    let source = WavSource::open(path, FrameDuration::Ms10, MediaClock::new())?;
    let (rate, channels) = (source.file_sample_rate(), source.format().channels);
    if rate != AUDIO_SAMPLE_RATE || channels != 1 {
        return Err(MediaError::UnsupportedFile {
            path: path.to_path_buf(),
            format: "WAV",
            reason: format!("{rate} Hz with {channels} channel(s); audio processing needs 48000 Hz mono"),
        });
    }
    Ok(source)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn off() -> ProcessingConfig {
        ProcessingConfig { echo_cancellation: false, noise_suppression: false, gain_control: false }
    }

    /// A deterministic noise-like signal at about -20 dBFS.
    fn noise(len: usize, seed: u32) -> Vec<i16> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((state >> 16) as i16) / 10
            })
            .collect()
    }

    #[test]
    fn processor_is_send() {
        fn send<T: Send>() {}
        send::<AudioProcessor>();
    }

    #[test]
    fn default_runs_every_stage() {
        let config = ProcessingConfig::default();
        assert!(config.echo_cancellation && config.noise_suppression && config.gain_control);
        assert!(!off().any());
        let sonora = config.to_sonora();
        assert!(sonora.echo_canceller.is_some() && sonora.noise_suppression.is_some());
        assert!(sonora.gain_controller2.is_some_and(|g| g.adaptive_digital.is_some() && !g.input_volume_controller));
        let sonora = off().to_sonora();
        assert!(sonora.echo_canceller.is_none() && sonora.noise_suppression.is_none());
        assert!(sonora.gain_controller2.is_none() && sonora.high_pass_filter.is_none());
    }

    #[test]
    fn capture_takes_only_whole_blocks() {
        let mut processor = AudioProcessor::new(ProcessingConfig::default()).unwrap();
        for len in [1, 479, 481, 959] {
            let mut mic = noise(len, 7);
            let before = mic.clone();
            let error = processor.process_capture(&mut mic).unwrap_err();
            assert!(matches!(error, MediaError::InvalidArgument(_)), "{error}");
            assert!(error.to_string().contains(&len.to_string()), "{error}");
            assert_eq!(mic, before);
        }
        processor.process_capture(&mut []).unwrap();
        let mut mic = noise(3 * PROCESSING_FRAME, 7);
        processor.process_capture(&mut mic).unwrap();
        assert_eq!(processor.stats().capture_frames, 3);
    }

    #[test]
    fn render_is_reblocked_from_any_length() {
        let mut processor = AudioProcessor::new(ProcessingConfig::default()).unwrap();
        processor.analyze_render(&noise(1000, 1));
        assert_eq!(processor.stats().render_frames, 2);
        processor.analyze_render(&noise(439, 2));
        assert_eq!(processor.stats().render_frames, 2);
        processor.analyze_render(&noise(1, 3));
        assert_eq!(processor.stats().render_frames, 3);
        processor.analyze_render(&[]);
        assert_eq!(processor.stats().render_frames, 3);
    }

    /// The far end cut into odd pieces gives exactly the output of the same far end in whole blocks.
    #[test]
    fn render_pieces_do_not_change_the_output() {
        let far = noise(40 * PROCESSING_FRAME, 11);
        let mic: Vec<i16> = noise(40 * PROCESSING_FRAME, 12).iter().zip(&far).map(|(&n, &f)| n / 8 + f / 2).collect();
        let run = |piece: usize| {
            let mut processor = AudioProcessor::new(ProcessingConfig::default()).unwrap();
            let mut out = mic.clone();
            let mut fed = 0;
            for block in out.chunks_exact_mut(PROCESSING_FRAME) {
                let end = fed + PROCESSING_FRAME;
                // Pieces of `piece` samples up to this block's end (the remainder waits).
                while fed + piece <= end {
                    processor.analyze_render(&far[fed..fed + piece]);
                    fed += piece;
                }
                processor.analyze_render(&far[fed..end]);
                fed = end;
                processor.process_capture(block).unwrap();
            }
            out
        };
        let whole = run(PROCESSING_FRAME);
        assert_ne!(whole, mic, "processing changed nothing");
        assert_eq!(run(7), whole);
        assert_eq!(run(333), whole);
    }

    #[test]
    fn all_stages_off_leaves_samples_alone() {
        let mut processor = AudioProcessor::new(off()).unwrap();
        let mut mic = noise(10 * PROCESSING_FRAME, 5);
        let before = mic.clone();
        processor.analyze_render(&noise(10 * PROCESSING_FRAME, 6));
        processor.process_capture(&mut mic).unwrap();
        assert_eq!(mic, before);
        let stats = processor.stats();
        assert_eq!((stats.render_frames, stats.capture_frames, stats.delay_ms), (0, 10, None));
    }

    #[test]
    fn set_config_switches_stages() {
        let mut processor = AudioProcessor::new(ProcessingConfig::default()).unwrap();
        let mut mic = noise(5 * PROCESSING_FRAME, 5);
        processor.analyze_render(&noise(5 * PROCESSING_FRAME, 6));
        processor.process_capture(&mut mic).unwrap();
        assert!(processor.stats().delay_ms.is_some());
        processor.analyze_render(&noise(100, 6));
        processor.set_config(off());
        assert_eq!(processor.config(), off());
        assert_eq!(processor.stats().delay_ms, None);
        let mut mic = noise(5 * PROCESSING_FRAME, 8);
        let before = mic.clone();
        processor.process_capture(&mut mic).unwrap();
        assert_eq!(mic, before);
        // The partial far block was dropped with the echo canceller.
        processor.set_config(ProcessingConfig::default());
        processor.analyze_render(&noise(PROCESSING_FRAME - 1, 6));
        assert_eq!(processor.stats().render_frames, 5);
        processor.analyze_render(&[0]);
        assert_eq!(processor.stats().render_frames, 6);
    }
}
