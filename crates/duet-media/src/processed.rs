//! The microphone path's audio processing: echo cancellation against what the speaker played,
//! noise suppression and gain control, applied to a source's frames where they are pulled (the
//! encoder's thread), with a level meter.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};

use crate::apm::{AudioProcessor, PROCESSING_FRAME, ProcessingConfig};
use crate::{AUDIO_SAMPLE_RATE, AudioFormat, AudioFrame, AudioSource, EchoReference, MediaError, Resampler};

/// The meter's floor: what silence reads, dBFS.
pub const SILENCE_DBFS: f32 = -100.0;
/// Played samples taken from the reference at a time (100 ms at 48 kHz).
const TAKE_CHUNK: usize = 4_800;

const ECHO: u8 = 1;
const NOISE: u8 = 2;
const GAIN: u8 = 4;

/// Shared between a [`ProcessedSource`] and whoever controls it (settings, the level meter):
/// which stages run, and the level of the last frame.
#[derive(Debug)]
pub struct ProcessingControls {
    stages: AtomicU8,
    level_dbfs: AtomicU32,
}

impl ProcessingControls {
    /// Controls starting with `config`.
    #[must_use]
    pub fn new(config: ProcessingConfig) -> Self {
        let controls = Self { stages: AtomicU8::new(0), level_dbfs: AtomicU32::new(SILENCE_DBFS.to_bits()) };
        controls.set_config(config);
        controls
    }

    /// Turns stages on or off from the next frame on.
    pub fn set_config(&self, config: ProcessingConfig) {
        let bit = |on: bool, bit: u8| if on { bit } else { 0 };
        let stages =
            bit(config.echo_cancellation, ECHO) | bit(config.noise_suppression, NOISE) | bit(config.gain_control, GAIN);
        self.stages.store(stages, Ordering::Relaxed);
    }

    /// The stages asked for.
    #[must_use]
    pub fn config(&self) -> ProcessingConfig {
        let stages = self.stages.load(Ordering::Relaxed);
        ProcessingConfig {
            echo_cancellation: stages & ECHO != 0,
            noise_suppression: stages & NOISE != 0,
            gain_control: stages & GAIN != 0,
        }
    }

    /// Loudness of the last frame sent (after processing), dBFS; [`SILENCE_DBFS`] for silence.
    #[must_use]
    pub fn level_dbfs(&self) -> f32 {
        f32::from_bits(self.level_dbfs.load(Ordering::Relaxed))
    }

    fn set_level(&self, samples: &[i16]) {
        self.level_dbfs.store(rms_dbfs(samples).to_bits(), Ordering::Relaxed);
    }
}

/// Root mean square of `samples` in dBFS, floored at [`SILENCE_DBFS`].
#[must_use]
pub fn rms_dbfs(samples: &[i16]) -> f32 {
    if samples.is_empty() {
        return SILENCE_DBFS;
    }
    let energy: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>() / samples.len() as f64;
    let rms = energy.sqrt() / 32_768.0;
    if rms <= 0.0 { SILENCE_DBFS } else { (20.0 * rms.log10()).max(f64::from(SILENCE_DBFS)) as f32 }
}

/// A source whose frames pass through an [`AudioProcessor`] before anyone sees them.
///
/// Before each frame, everything the speaker played since the last one is taken from the
/// [`EchoReference`] (resampled to 48 kHz if the speaker runs at another rate) and given to the
/// echo canceller as the far end, which estimates the delay between the two itself. Frames that
/// are not 48 kHz mono in whole 10 ms blocks pass untouched (metered all the same). Buffers are
/// allocated once; the processing runs on the thread that pulls frames.
pub struct ProcessedSource {
    inner: Box<dyn AudioSource>,
    processor: Option<AudioProcessor>,
    applied: ProcessingConfig,
    controls: Arc<ProcessingControls>,
    reference: Option<Arc<EchoReference>>,
    taken: Vec<i16>,
    far: Vec<i16>,
    resampler: Option<Resampler>,
}

impl std::fmt::Debug for ProcessedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessedSource")
            .field("applied", &self.applied)
            .field("processing", &self.processor.is_some())
            .finish_non_exhaustive()
    }
}

impl ProcessedSource {
    /// Processes `inner` with the stages `controls` asks for, the far end taken from
    /// `reference` (none: nothing is played where this device hears it).
    pub fn new(
        inner: Box<dyn AudioSource>,
        controls: Arc<ProcessingControls>,
        reference: Option<Arc<EchoReference>>,
    ) -> Result<Self, MediaError> {
        let applied = controls.config();
        let processor = AudioProcessor::new(applied)?;
        Ok(Self {
            inner,
            processor: Some(processor),
            applied,
            controls,
            reference,
            taken: vec![0; TAKE_CHUNK],
            far: Vec::with_capacity(2 * TAKE_CHUNK),
            resampler: None,
        })
    }

    /// Only meters `inner` (a test tone or a file is not a microphone: nothing to clean up).
    #[must_use]
    pub fn metered(inner: Box<dyn AudioSource>, controls: Arc<ProcessingControls>) -> Self {
        Self {
            inner,
            processor: None,
            applied: ProcessingConfig { echo_cancellation: false, noise_suppression: false, gain_control: false },
            controls,
            reference: None,
            taken: Vec::new(),
            far: Vec::new(),
            resampler: None,
        }
    }

    /// Feeds what was played since the last frame to the echo canceller.
    fn feed_far_end(&mut self) -> Result<(), MediaError> {
        let (Some(processor), Some(reference)) = (&mut self.processor, &self.reference) else {
            return Ok(());
        };
        loop {
            let rate = reference.rate();
            let count = reference.take(&mut self.taken);
            if count == 0 {
                return Ok(());
            }
            if rate == AUDIO_SAMPLE_RATE {
                processor.analyze_render(&self.taken[..count]);
                continue;
            }
            let resampler = match &mut self.resampler {
                Some(r) if r.in_rate() == rate => r,
                slot => slot.insert(Resampler::new(rate, AUDIO_SAMPLE_RATE, 1)?),
            };
            self.far.clear();
            resampler.process(&self.taken[..count], &mut self.far);
            processor.analyze_render(&self.far);
        }
    }
}

impl AudioSource for ProcessedSource {
    fn format(&self) -> AudioFormat {
        self.inner.format()
    }

    fn next_frame(&mut self) -> Result<Option<AudioFrame>, MediaError> {
        let Some(mut frame) = self.inner.next_frame()? else {
            return Ok(None);
        };
        self.feed_far_end()?;
        let processable = frame.sample_rate() == AUDIO_SAMPLE_RATE
            && frame.channels() == 1
            && frame.samples().len() % PROCESSING_FRAME == 0;
        if let (Some(processor), true) = (&mut self.processor, processable) {
            let wanted = self.controls.config();
            if wanted != self.applied {
                processor.set_config(wanted);
                self.applied = wanted;
            }
            processor.process_capture(frame.samples_mut())?;
        }
        self.controls.set_level(frame.samples());
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FrameDuration;

    /// Frames of a fixed signal.
    struct Repeating {
        samples: Vec<i16>,
    }

    impl AudioSource for Repeating {
        fn format(&self) -> AudioFormat {
            AudioFormat { sample_rate: AUDIO_SAMPLE_RATE, channels: 1, frame_duration: FrameDuration::Ms20 }
        }

        fn next_frame(&mut self) -> Result<Option<AudioFrame>, MediaError> {
            AudioFrame::new(self.samples.clone(), AUDIO_SAMPLE_RATE, 1, 0).map(Some)
        }
    }

    /// Deterministic broadband noise at about -15 dBFS.
    fn noise(n: usize, seed: u32) -> Vec<i16> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((state >> 16) as i16) / 4
            })
            .collect()
    }

    #[test]
    fn levels_in_dbfs() {
        assert_eq!(rms_dbfs(&[]), SILENCE_DBFS);
        assert_eq!(rms_dbfs(&[0; 480]), SILENCE_DBFS);
        let full: Vec<i16> = (0..480).map(|i| if i % 2 == 0 { 32_767 } else { -32_767 }).collect();
        assert!(rms_dbfs(&full).abs() < 0.01);
        let tenth: Vec<i16> = full.iter().map(|s| s / 10).collect();
        assert!((rms_dbfs(&tenth) + 20.0).abs() < 0.05);
    }

    #[test]
    fn controls_round_trip_every_stage() {
        let controls = ProcessingControls::new(ProcessingConfig::default());
        assert_eq!(controls.config(), ProcessingConfig::default());
        let some = ProcessingConfig { echo_cancellation: true, noise_suppression: false, gain_control: true };
        controls.set_config(some);
        assert_eq!(controls.config(), some);
    }

    #[test]
    fn a_metered_source_is_untouched_and_its_level_is_published() {
        let signal = noise(960, 3);
        let controls = Arc::new(ProcessingControls::new(ProcessingConfig::default()));
        let mut metered = ProcessedSource::metered(Box::new(Repeating { samples: signal.clone() }), controls.clone());
        assert_eq!(metered.next_frame().unwrap().unwrap().samples(), signal.as_slice());
        assert!((controls.level_dbfs() - rms_dbfs(&signal)).abs() < 0.01);
        assert!(controls.level_dbfs() > -30.0, "{}", controls.level_dbfs());
    }

    #[test]
    fn the_echo_of_what_the_speaker_played_is_removed_from_the_microphone() {
        // The speaker plays broadband noise; the microphone hears it 10 ms later at -6 dB.
        let played = noise(48_000 * 6, 7);
        let mut heard = vec![0i16; played.len()];
        for (i, h) in heard.iter_mut().enumerate().skip(480) {
            *h = played[i - 480] / 2;
        }
        let reference = Arc::new(EchoReference::new());
        let controls = Arc::new(ProcessingControls::new(ProcessingConfig {
            echo_cancellation: true,
            noise_suppression: false,
            gain_control: false,
        }));
        let mic = Repeating { samples: Vec::new() };
        let mut source = ProcessedSource::new(Box::new(mic), controls.clone(), Some(reference.clone())).unwrap();
        let (mut before, mut after) = (0.0f64, 0.0f64);
        for (index, (played, heard)) in played.chunks(960).zip(heard.chunks(960)).enumerate() {
            reference.push(played);
            source.inner = Box::new(Repeating { samples: heard.to_vec() });
            let out = source.next_frame().unwrap().unwrap();
            if index >= 200 {
                before += heard.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>();
                after += out.samples().iter().map(|&s| f64::from(s).powi(2)).sum::<f64>();
            }
        }
        let erle = 10.0 * (before / after.max(1.0)).log10();
        assert!(erle > 20.0, "echo reduced by only {erle:.1} dB");
        assert!(controls.level_dbfs() < -40.0, "the meter reads the processed signal: {}", controls.level_dbfs());
    }
}
