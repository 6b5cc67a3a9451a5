//! A synthetic microphone: a 440 Hz tone with periodic marker bursts, and the receiver's burst detector.
//!
//! Every [`MARKER_PERIOD_US`] (500 ms) of the source's timeline, aligned to multiples of the period on its
//! [`MediaClock`], the tone is replaced for [`MARKER_BURST_US`] (20 ms) by a burst at one of four frequencies
//! ([`MARKER_FREQUENCIES_HZ`]): burst `k` (starting at `k * 500 ms`) uses frequency `k mod 4`, a 2-bit counter.
//! Pure tones in the 1-2.5 kHz band survive Opus at any bitrate a call uses.
//!
//! [`AudioMarkerDetector`] finds the bursts with Goertzel filters over 10 ms Hann windows every 2.5 ms and
//! reports each burst's onset on the timeline of the frames it is given (to about +-1.5 ms). When sender and
//! receiver share a clock ([`MediaClock::unix_aligned`] on one host), [`AudioMarker::sent_at_us`] recovers the
//! send time from the onset and the counter, so onset minus send time is the mouth-to-ear latency (unambiguous
//! up to 2 s); a gap in the counter means a burst was lost.

use std::collections::VecDeque;
use std::f64::consts::TAU;

use crate::frame::samples_to_us;
use crate::{AUDIO_SAMPLE_RATE, AudioFormat, AudioFrame, AudioSource, FrameDuration, MediaClock, MediaError};

/// Time between marker bursts.
pub const MARKER_PERIOD_US: u64 = 500_000;
/// Length of a marker burst.
pub const MARKER_BURST_US: u64 = 20_000;
/// Burst frequencies; burst `k` uses `MARKER_FREQUENCIES_HZ[k % 4]`.
pub const MARKER_FREQUENCIES_HZ: [f64; 4] = [1000.0, 1500.0, 2000.0, 2500.0];

const TONE_HZ: f64 = 440.0;
const TONE_AMPLITUDE: f64 = 0.25;
const BURST_AMPLITUDE: f64 = 0.5;
/// Cross-fade between tone and burst (1 ms) so the switch does not splash energy across the spectrum.
const FADE_US: u64 = 1_000;

/// A 440 Hz tone with a marker burst every 500 ms (see the [module docs](self)), 48 kHz, 1 or 2 channels.
#[derive(Debug, Clone)]
pub struct SyntheticAudioSource {
    format: AudioFormat,
    clock: MediaClock,
    start_us: Option<u64>,
    next_sample: u64,
}

impl SyntheticAudioSource {
    /// A source of `channels` (1 or 2) channels delivering frames of `frame_duration`, stamped with `clock`.
    pub fn new(channels: u16, frame_duration: FrameDuration, clock: MediaClock) -> Result<Self, MediaError> {
        if !(1..=2).contains(&channels) {
            return Err(MediaError::InvalidArgument(format!("synthetic audio has 1 or 2 channels, not {channels}")));
        }
        let format = AudioFormat { sample_rate: AUDIO_SAMPLE_RATE, channels, frame_duration };
        Ok(Self { format, clock, start_us: None, next_sample: 0 })
    }

    /// Renders the frame whose first sample is sample number `first_sample` of a timeline that starts at
    /// `start_us`. [`next_frame`](AudioSource::next_frame) calls this with consecutive sample numbers.
    #[must_use]
    pub fn render(&self, start_us: u64, first_sample: u64) -> AudioFrame {
        let count = self.format.frame_duration.samples_per_channel(AUDIO_SAMPLE_RATE);
        let channels = usize::from(self.format.channels);
        let mut samples = Vec::with_capacity(count * channels);
        for i in first_sample..first_sample + count as u64 {
            let t = start_us + samples_to_us(i, AUDIO_SAMPLE_RATE);
            let seconds = i as f64 / f64::from(AUDIO_SAMPLE_RATE);
            let tone = TONE_AMPLITUDE * (TAU * TONE_HZ * seconds).sin();
            let in_period = t % MARKER_PERIOD_US;
            let value = if in_period < MARKER_BURST_US {
                let frequency = MARKER_FREQUENCIES_HZ[((t / MARKER_PERIOD_US) % 4) as usize];
                let burst = BURST_AMPLITUDE * (TAU * frequency * seconds).sin();
                let fade = (in_period.min(MARKER_BURST_US - in_period) as f64 / FADE_US as f64).min(1.0);
                tone * (1.0 - fade) + burst * fade
            } else {
                tone
            };
            let sample = (value * f64::from(i16::MAX)).round() as i16;
            samples.extend(std::iter::repeat_n(sample, channels));
        }
        let timestamp = start_us + samples_to_us(first_sample, AUDIO_SAMPLE_RATE);
        // Channels (1 or 2) and rate were validated in `new`, and the sample count is a whole number of frames.
        AudioFrame::from_valid_parts(samples, AUDIO_SAMPLE_RATE, self.format.channels, timestamp)
    }
}

impl AudioSource for SyntheticAudioSource {
    fn format(&self) -> AudioFormat {
        self.format
    }

    fn next_frame(&mut self) -> Result<Option<AudioFrame>, MediaError> {
        let start = *self.start_us.get_or_insert_with(|| self.clock.now_us());
        let frame = self.render(start, self.next_sample);
        self.next_sample += frame.samples_per_channel() as u64;
        Ok(Some(frame))
    }
}

/// A marker burst found by [`AudioMarkerDetector`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AudioMarker {
    /// The burst's 2-bit counter (which of [`MARKER_FREQUENCIES_HZ`] it used).
    pub sequence: u8,
    /// The burst's onset on the timeline of the frames given to the detector.
    pub timestamp_us: u64,
}

impl AudioMarker {
    /// The time the sender started this burst, assuming the detector's timeline is the sender's clock and the
    /// latency is below 2 s: the latest multiple of 500 ms at or before the onset whose counter matches.
    /// `None` if there is no such time (onset earlier than the burst could have been sent).
    #[must_use]
    pub fn sent_at_us(&self) -> Option<u64> {
        let period = self.timestamp_us / MARKER_PERIOD_US;
        let back = (period + 4 - u64::from(self.sequence % 4)) % 4;
        period.checked_sub(back).map(|k| k * MARKER_PERIOD_US)
    }
}

/// Finds synthetic-audio marker bursts in a stream of decoded frames (see the [module docs](self)).
///
/// Feed it every frame in order with [`push`](AudioMarkerDetector::push); frame timestamps place the onsets,
/// so gaps and jitter in the timeline are honoured. Stereo input is mixed to mono.
#[derive(Debug, Clone)]
pub struct AudioMarkerDetector {
    sample_rate: u32,
    window: Vec<f64>,
    coefficients: [f64; 4],
    hop: usize,
    buffer: Vec<f64>,
    /// Absolute sample number of `buffer[0]`.
    buffer_start: u64,
    /// (absolute sample number, timestamp) of the first sample of each frame still in the buffer.
    marks: VecDeque<(u64, u64)>,
    run: Option<Run>,
}

#[derive(Debug, Clone, Copy)]
struct Run {
    sequence: u8,
    first_window_us: u64,
    windows: u32,
    reported: bool,
}

/// Windows in a row that must show the same burst frequency (about 7.5 ms of a 20 ms burst).
const MIN_RUN: u32 = 4;
/// Share of a window's energy that must sit at a burst frequency.
const MIN_RATIO: f64 = 0.5;
/// Below this RMS (about -50 dBFS) a window is silence and never holds a burst.
const MIN_RMS: f64 = 0.003;

impl AudioMarkerDetector {
    /// A detector for 48 kHz audio (it adapts to other rates when frames at another rate arrive).
    #[must_use]
    pub fn new() -> Self {
        Self::for_rate(AUDIO_SAMPLE_RATE)
    }

    fn for_rate(sample_rate: u32) -> Self {
        let length = (sample_rate / 100) as usize;
        let window = (0..length).map(|n| 0.5 - 0.5 * (TAU * n as f64 / length as f64).cos()).collect();
        let coefficients = MARKER_FREQUENCIES_HZ.map(|f| 2.0 * (TAU * f / f64::from(sample_rate)).cos());
        Self {
            sample_rate,
            window,
            coefficients,
            hop: (sample_rate / 400) as usize,
            buffer: Vec::new(),
            buffer_start: 0,
            marks: VecDeque::new(),
            run: None,
        }
    }

    /// Analyses one frame; returns the bursts whose onset was confirmed by it.
    pub fn push(&mut self, frame: &AudioFrame) -> Vec<AudioMarker> {
        if frame.sample_rate() != self.sample_rate {
            *self = Self::for_rate(frame.sample_rate());
        }
        let channels = usize::from(frame.channels());
        self.marks.push_back((self.buffer_start + self.buffer.len() as u64, frame.timestamp_us()));
        self.buffer.extend(
            frame.samples().chunks_exact(channels).map(|chunk| {
                chunk.iter().map(|&s| f64::from(s)).sum::<f64>() / (channels as f64 * f64::from(i16::MAX))
            }),
        );

        let mut found = Vec::new();
        let mut position = 0;
        while self.buffer.len() - position >= self.window.len() {
            let start_us = self.time_of(self.buffer_start + position as u64);
            if let Some(marker) = self.analyse(position, start_us) {
                found.push(marker);
            }
            position += self.hop;
        }
        self.buffer.drain(..position);
        self.buffer_start += position as u64;
        while self.marks.len() > 1 && self.marks[1].0 <= self.buffer_start {
            self.marks.pop_front();
        }
        found
    }

    fn time_of(&self, sample: u64) -> u64 {
        let (index, timestamp) =
            self.marks.iter().rev().find(|(index, _)| *index <= sample).copied().unwrap_or((sample, 0));
        timestamp + samples_to_us(sample - index, self.sample_rate)
    }

    fn analyse(&mut self, position: usize, start_us: u64) -> Option<AudioMarker> {
        let samples = &self.buffer[position..position + self.window.len()];
        let mut energy = 0.0;
        let mut states = [(0.0f64, 0.0f64); 4];
        for (&x, &w) in samples.iter().zip(&self.window) {
            let x = x * w;
            energy += x * x;
            for ((s1, s2), coefficient) in states.iter_mut().zip(self.coefficients) {
                let s0 = x + coefficient * *s1 - *s2;
                *s2 = *s1;
                *s1 = s0;
            }
        }
        let length = self.window.len() as f64;
        let rms = (energy / (length * 0.375)).sqrt();
        // A pure tone at frequency f gives |X(f)|^2 = energy * N / 3 with a Hann window: normalise to 1.
        let (sequence, ratio) = states
            .iter()
            .zip(self.coefficients)
            .map(|(&(s1, s2), c)| (s1 * s1 + s2 * s2 - c * s1 * s2) * 3.0 / (length * energy.max(f64::MIN_POSITIVE)))
            .enumerate()
            .fold((0, 0.0), |best, (k, r)| if r > best.1 { (k, r) } else { best });
        let sequence = sequence as u8;
        if rms < MIN_RMS || ratio < MIN_RATIO {
            self.run = None;
            return None;
        }
        let run = match self.run {
            Some(run) if run.sequence == sequence => Run { windows: run.windows + 1, ..run },
            _ => Run { sequence, first_window_us: start_us, windows: 1, reported: false },
        };
        self.run = Some(Run { reported: run.reported || run.windows >= MIN_RUN, ..run });
        if run.windows >= MIN_RUN && !run.reported {
            // The first window that qualifies has the onset between its middle and one hop later.
            let window_us = samples_to_us(self.window.len() as u64, self.sample_rate);
            let hop_us = samples_to_us(self.hop as u64, self.sample_rate);
            return Some(AudioMarker { sequence, timestamp_us: run.first_window_us + window_us / 2 - hop_us / 2 });
        }
        None
    }
}

impl Default for AudioMarkerDetector {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_are_aligned_to_the_clock_and_detected_exactly() {
        let source = SyntheticAudioSource::new(2, FrameDuration::Ms10, MediaClock::new()).unwrap();
        let mut detector = AudioMarkerDetector::new();
        let start_us = 1_234_000; // not a multiple of the period
        let mut markers = Vec::new();
        for n in 0..300 {
            markers.extend(detector.push(&source.render(start_us, n * 480)));
        }
        // 3 s of audio from 1.234 s: bursts at 1.5, 2.0, ... 4.0 s.
        assert_eq!(markers.len(), 6, "{markers:?}");
        for (i, marker) in markers.iter().enumerate() {
            let sent = 1_500_000 + i as u64 * MARKER_PERIOD_US;
            assert_eq!(u64::from(marker.sequence), (sent / MARKER_PERIOD_US) % 4);
            assert!(marker.timestamp_us.abs_diff(sent) <= 2_000, "{marker:?} vs {sent}");
            assert_eq!(marker.sent_at_us(), Some(sent));
        }
    }

    #[test]
    fn pure_tone_and_silence_have_no_markers() {
        let mut detector = AudioMarkerDetector::new();
        let tone: Vec<i16> = (0..48_000).map(|i| ((TAU * 440.0 * i as f64 / 48_000.0).sin() * 8000.0) as i16).collect();
        assert!(detector.push(&AudioFrame::new(tone, 48_000, 1, 0).unwrap()).is_empty());
        assert!(detector.push(&AudioFrame::silence(48_000, 1, 48_000, 1_000_000).unwrap()).is_empty());
    }

    #[test]
    fn sent_time_recovers_within_two_seconds() {
        let marker = AudioMarker { sequence: 3, timestamp_us: 7_650_000 };
        // Period index 15 has sequence 3: sent at 7.5 s.
        assert_eq!(marker.sent_at_us(), Some(7_500_000));
        let late = AudioMarker { sequence: 2, timestamp_us: 7_650_000 };
        assert_eq!(late.sent_at_us(), Some(7_000_000));
        assert_eq!(AudioMarker { sequence: 3, timestamp_us: 100 }.sent_at_us(), None);
    }

    #[test]
    fn source_rejects_bad_channel_counts_and_stamps_frames() {
        assert!(SyntheticAudioSource::new(3, FrameDuration::Ms20, MediaClock::new()).is_err());
        let mut source = SyntheticAudioSource::new(1, FrameDuration::Ms20, MediaClock::new()).unwrap();
        let a = source.next_frame().unwrap().unwrap();
        let b = source.next_frame().unwrap().unwrap();
        assert_eq!(a.samples().len(), 960);
        assert_eq!(b.timestamp_us() - a.timestamp_us(), 20_000);
    }
}
