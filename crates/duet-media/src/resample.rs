//! Sample-rate conversion for audio devices and WAV files whose rate is not 48 kHz.

use crate::MediaError;
use crate::frame::validate_audio_params;

/// Half the filter length, in input samples.
const HALF_TAPS: usize = 16;
const TAPS: usize = 2 * HALF_TAPS;
/// Fractional positions tabulated between two input samples (linearly interpolated in between).
const PHASES: usize = 256;

/// A streaming windowed-sinc resampler for interleaved 16-bit audio.
///
/// A 32-tap sinc filter with a Blackman window, tabulated at 256 fractional phases and interpolated linearly
/// between them. The cut-off sits at 95 % of the lower of the two Nyquist frequencies: the passband is flat up
/// to about 0.8 x that Nyquist frequency, the transition band ends near 1.1 x, and the stopband is about
/// -70 dB (the Blackman window's), plenty for speech and for the tones the markers use. Latency is 16 input
/// samples (0.33 ms at 48 kHz); cost is about 32 multiply-adds per output sample and channel plus 64 per output
/// sample. Downsampling by more than about 3x would want a longer filter: not a case Duet has.
///
/// State carries across calls, so audio can be pushed in chunks of any size with the same result as in one.
#[derive(Debug, Clone)]
pub struct Resampler {
    in_rate: u32,
    out_rate: u32,
    channels: usize,
    /// Input samples per output sample.
    step: f64,
    /// Position of the next output sample, in input frames from the start of `history`.
    position: f64,
    /// Interleaved input frames still needed by the filter.
    history: Vec<f32>,
    /// `(PHASES + 1) * TAPS` filter coefficients.
    table: Vec<f32>,
    kernel: [f32; TAPS],
}

impl Resampler {
    /// A resampler from `in_rate` to `out_rate` Hz for `channels` interleaved channels.
    pub fn new(in_rate: u32, out_rate: u32, channels: u16) -> Result<Self, MediaError> {
        validate_audio_params(in_rate, channels)?;
        validate_audio_params(out_rate, channels)?;
        let cutoff = 0.95 * (f64::from(out_rate) / f64::from(in_rate)).min(1.0);
        let mut table = Vec::with_capacity((PHASES + 1) * TAPS);
        for phase in 0..=PHASES {
            let fraction = phase as f64 / PHASES as f64;
            let row: Vec<f64> = (0..TAPS)
                .map(|tap| {
                    let x = tap as f64 - (HALF_TAPS - 1) as f64 - fraction;
                    cutoff * sinc(cutoff * x) * blackman(x / HALF_TAPS as f64)
                })
                .collect();
            let sum: f64 = row.iter().sum();
            table.extend(row.iter().map(|c| (c / sum) as f32));
        }
        let channels = usize::from(channels);
        Ok(Self {
            in_rate,
            out_rate,
            channels,
            step: f64::from(in_rate) / f64::from(out_rate),
            position: (HALF_TAPS - 1) as f64,
            history: vec![0.0; (HALF_TAPS - 1) * channels],
            table,
            kernel: [0.0; TAPS],
        })
    }

    /// The input rate in Hz.
    #[must_use]
    pub fn in_rate(&self) -> u32 {
        self.in_rate
    }

    /// The output rate in Hz.
    #[must_use]
    pub fn out_rate(&self) -> u32 {
        self.out_rate
    }

    /// Resamples `input` (interleaved, whole frames) and appends the result to `output`. Samples that need
    /// input not yet seen come out of a later call.
    pub fn process(&mut self, input: &[i16], output: &mut Vec<i16>) {
        if self.in_rate == self.out_rate {
            output.extend_from_slice(input);
            return;
        }
        let channels = self.channels;
        self.history.extend(input.iter().map(|&s| f32::from(s)));
        let frames = self.history.len() / channels;
        loop {
            let index = self.position as usize;
            if index + HALF_TAPS >= frames {
                break;
            }
            let phase = (self.position - index as f64) * PHASES as f64;
            let phase_index = (phase as usize).min(PHASES - 1);
            let weight = (phase - phase_index as f64) as f32;
            let (low, high) = self.table[phase_index * TAPS..(phase_index + 2) * TAPS].split_at(TAPS);
            for ((k, &a), &b) in self.kernel.iter_mut().zip(low).zip(high) {
                *k = a + (b - a) * weight;
            }
            let first = (index + 1 - HALF_TAPS) * channels;
            for channel in 0..channels {
                let acc: f32 = self
                    .kernel
                    .iter()
                    .zip(self.history[first + channel..].iter().step_by(channels))
                    .map(|(k, x)| k * x)
                    .sum();
                output.push(acc.round().clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16);
            }
            self.position += self.step;
        }
        let consumed = (self.position as usize).saturating_sub(HALF_TAPS - 1);
        self.history.drain(..consumed * channels);
        self.position -= consumed as f64;
    }
}

fn sinc(x: f64) -> f64 {
    if x.abs() < 1e-9 {
        1.0
    } else {
        let px = std::f64::consts::PI * x;
        px.sin() / px
    }
}

/// Blackman window over `u` in [-1, 1].
fn blackman(u: f64) -> f64 {
    if u.abs() >= 1.0 {
        0.0
    } else {
        let a = std::f64::consts::PI * u;
        0.42 + 0.5 * a.cos() + 0.08 * (2.0 * a).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::TAU;

    fn sine(rate: u32, frequency: f64, samples: usize, amplitude: f64) -> Vec<i16> {
        (0..samples).map(|i| (amplitude * (TAU * frequency * i as f64 / f64::from(rate)).sin()) as i16).collect()
    }

    /// Amplitude of `frequency` in `signal` (single-bin DFT over the whole signal).
    fn amplitude_at(signal: &[i16], rate: u32, frequency: f64) -> f64 {
        let (mut re, mut im) = (0.0, 0.0);
        for (i, &s) in signal.iter().enumerate() {
            let phase = TAU * frequency * i as f64 / f64::from(rate);
            re += f64::from(s) * phase.cos();
            im += f64::from(s) * phase.sin();
        }
        2.0 * (re * re + im * im).sqrt() / signal.len() as f64
    }

    #[test]
    fn converts_44100_to_48000_preserving_a_tone() {
        let mut resampler = Resampler::new(44_100, 48_000, 1).unwrap();
        let mut out = Vec::new();
        resampler.process(&sine(44_100, 1000.0, 44_100, 10_000.0), &mut out);
        assert!(out.len().abs_diff(48_000) <= 20, "{}", out.len());
        // Skip the filter's start-up, then the tone is at 1 kHz with its amplitude.
        let steady = &out[100..out.len() - 100];
        let a = amplitude_at(steady, 48_000, 1000.0);
        assert!((a - 10_000.0).abs() < 50.0, "amplitude {a}");
        assert!(amplitude_at(steady, 48_000, 1100.0) < 200.0);
    }

    #[test]
    fn downsampling_removes_what_cannot_be_represented() {
        let mut resampler = Resampler::new(48_000, 16_000, 1).unwrap();
        let mut input = sine(48_000, 1000.0, 48_000, 8000.0);
        for (s, alias) in input.iter_mut().zip(sine(48_000, 15_000.0, 48_000, 8000.0)) {
            *s += alias;
        }
        let mut out = Vec::new();
        resampler.process(&input, &mut out);
        let steady = &out[100..out.len() - 100];
        // 15 kHz would alias to 1 kHz at 16 kHz: only the 1 kHz tone's 8000 may remain.
        let a = amplitude_at(steady, 16_000, 1000.0);
        assert!((a - 8000.0).abs() < 80.0, "amplitude {a}");
    }

    #[test]
    fn chunked_input_gives_the_same_output_and_stereo_stays_separate() {
        let left = sine(32_000, 500.0, 3200, 9000.0);
        let right = sine(32_000, 1500.0, 3200, 4000.0);
        let interleaved: Vec<i16> = left.iter().zip(&right).flat_map(|(&l, &r)| [l, r]).collect();
        let mut whole = Vec::new();
        Resampler::new(32_000, 48_000, 2).unwrap().process(&interleaved, &mut whole);
        let mut chunked = Vec::new();
        let mut resampler = Resampler::new(32_000, 48_000, 2).unwrap();
        for chunk in interleaved.chunks(2 * 37) {
            resampler.process(chunk, &mut chunked);
        }
        assert_eq!(whole, chunked);
        let out_left: Vec<i16> = whole.iter().step_by(2).copied().collect();
        let out_right: Vec<i16> = whole.iter().skip(1).step_by(2).copied().collect();
        assert!((amplitude_at(&out_left[50..], 48_000, 500.0) - 9000.0).abs() < 100.0);
        assert!(amplitude_at(&out_left[50..], 48_000, 1500.0) < 100.0);
        assert!((amplitude_at(&out_right[50..], 48_000, 1500.0) - 4000.0).abs() < 100.0);
    }

    #[test]
    fn same_rate_is_a_copy_and_bad_rates_fail() {
        let mut resampler = Resampler::new(48_000, 48_000, 1).unwrap();
        let mut out = Vec::new();
        resampler.process(&[1, 2, 3], &mut out);
        assert_eq!(out, [1, 2, 3]);
        assert!(Resampler::new(0, 48_000, 1).is_err());
        assert!(Resampler::new(48_000, 48_000, 0).is_err());
    }
}
