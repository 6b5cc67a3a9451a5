//! Deterministic signals and measures for the audio processing tests and benchmark: speech-like
//! voices, a room's echo path, microphone noise, and the echo, double-talk and noise figures.
//!
//! Everything here is 48 kHz mono, in floating point with 1.0 = full scale until [`to_i16`].

use duet_media::{AudioProcessor, PROCESSING_FRAME, ProcessingConfig};

/// Samples per second.
pub const RATE: usize = 48_000;

/// A small deterministic generator (SplitMix64), so every run hears the same signals.
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [low, high).
    pub fn range(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.uniform()
    }

    /// Standard normal (Box-Muller).
    pub fn gaussian(&mut self) -> f64 {
        let u = self.uniform().max(1e-12);
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// A two-pole resonator (a formant), unity gain at its centre.
struct Resonator {
    a1: f64,
    a2: f64,
    gain: f64,
    y1: f64,
    y2: f64,
}

impl Resonator {
    fn new() -> Self {
        Self { a1: 0.0, a2: 0.0, gain: 0.0, y1: 0.0, y2: 0.0 }
    }

    fn tune(&mut self, frequency: f64, bandwidth: f64) {
        let r = (-std::f64::consts::PI * bandwidth / RATE as f64).exp();
        let theta = std::f64::consts::TAU * frequency / RATE as f64;
        self.a1 = 2.0 * r * theta.cos();
        self.a2 = -r * r;
        self.gain = (1.0 - r) * (1.0 - 2.0 * r * (2.0 * theta).cos() + r * r).sqrt();
    }

    fn step(&mut self, x: f64) -> f64 {
        let y = self.gain * x + self.a1 * self.y1 + self.a2 * self.y2;
        self.y2 = self.y1;
        self.y1 = y;
        y
    }
}

/// A speech-like voice: its samples and, per 10 ms block, whether it is talking.
pub struct Voice {
    /// The signal, 1.0 = full scale.
    pub samples: Vec<f64>,
    /// One flag per 10 ms block: the syllable envelope is up.
    pub active: Vec<bool>,
}

/// The glottal flow over one pitch period (Rosenberg's pulse: opens over 40 % of the period,
/// closes over 16 %, then stays shut).
fn glottal_flow(phase: f64) -> f64 {
    const OPEN: f64 = 0.4;
    const CLOSING: f64 = 0.16;
    if phase < OPEN {
        0.5 * (1.0 - (std::f64::consts::PI * phase / OPEN).cos())
    } else if phase < OPEN + CLOSING {
        (std::f64::consts::FRAC_PI_2 * (phase - OPEN) / CLOSING).cos()
    } else {
        0.0
    }
}

/// A source-filter voice: Rosenberg glottal pulses with jittered, gliding pitch (or, for one
/// syllable in five, a fricative's noise), through three formants that move from syllable to
/// syllable, under a syllabic envelope (syllables of 100–260 ms, about 4 a second, phrases of 3–9
/// syllables, pauses of 0.25–0.7 s). Broadband like real speech, unlike a harmonic tone, which
/// defeats AEC3; peaks about 15 dB over the talking RMS, as speech has. Scaled to `dbfs` RMS over
/// the talking blocks.
pub fn voice(seed: u64, seconds: f64, dbfs: f64) -> Voice {
    let len = (seconds * RATE as f64) as usize;
    let mut rng = Rng::new(seed);
    let mut envelope = vec![0.0f64; len];
    let mut samples = vec![0.0f64; len];
    let mut formants = [Resonator::new(), Resonator::new(), Resonator::new()];
    let (mut phase, mut flow) = (0.0f64, 0.0f64);
    let mut syllable = Vec::new();
    let mut at = (rng.range(0.05, 0.3) * RATE as f64) as usize;
    while at < len {
        let syllables = 3 + (rng.uniform() * 7.0) as usize;
        for _ in 0..syllables {
            let duration = (rng.range(0.10, 0.26) * RATE as f64) as usize;
            let voiced = rng.uniform() > 0.2;
            let (f0_start, f0_end) = (rng.range(95.0, 210.0), rng.range(95.0, 210.0));
            let loudness = rng.range(0.5, 1.0) * if voiced { 1.0 } else { 0.5 };
            let [f1, f2, f3] = [rng.range(300.0, 850.0), rng.range(900.0, 2300.0), rng.range(2400.0, 3300.0)];
            formants[0].tune(f1, 90.0);
            formants[1].tune(f2, 120.0);
            formants[2].tune(f3, 180.0);
            syllable.clear();
            for n in 0..duration.min(len.saturating_sub(at)) {
                let excitation = if voiced {
                    let t = n as f64 / duration as f64;
                    let f0 = (f0_start + (f0_end - f0_start) * t) * (1.0 + 0.01 * rng.gaussian());
                    phase = (phase + f0 / RATE as f64).fract();
                    // The radiated sound follows the flow's derivative; a little breath noise.
                    let next = glottal_flow(phase);
                    let derivative = next - flow;
                    flow = next;
                    derivative + 0.002 * rng.gaussian()
                } else {
                    rng.gaussian()
                };
                syllable.push(formants.iter_mut().fold(0.0, |acc, f| acc + f.step(excitation)));
            }
            let level = rms(&syllable).max(1e-12);
            for (n, x) in syllable.iter().enumerate() {
                let t = n as f64 / duration as f64;
                envelope[at + n] = (std::f64::consts::PI * t).sin().powf(0.7);
                samples[at + n] = loudness * envelope[at + n] * x / level;
            }
            at += duration + (rng.range(0.02, 0.08) * RATE as f64) as usize;
            if at >= len {
                break;
            }
        }
        at += (rng.range(0.25, 0.7) * RATE as f64) as usize;
    }
    let active: Vec<bool> =
        envelope.chunks(PROCESSING_FRAME).map(|block| block.iter().sum::<f64>() / block.len() as f64 > 0.2).collect();
    let talking: Vec<f64> = samples
        .chunks(PROCESSING_FRAME)
        .zip(&active)
        .filter(|(_, a)| **a)
        .flat_map(|(block, _)| block.iter().copied())
        .collect();
    scale_to(&mut samples, rms(&talking), dbfs);
    Voice { samples, active }
}

/// White Gaussian noise at `dbfs` RMS.
pub fn white_noise(seed: u64, len: usize, dbfs: f64) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    let mut noise: Vec<f64> = (0..len).map(|_| rng.gaussian()).collect();
    let level = rms(&noise);
    scale_to(&mut noise, level, dbfs);
    noise
}

/// Noise falling 3 dB (pink, Paul Kellet's filter) or 6 dB (brown, a leaky integrator) per octave,
/// at `dbfs` RMS.
pub fn coloured_noise(seed: u64, len: usize, dbfs: f64, brown: bool) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    let mut b = [0.0f64; 7];
    let mut noise: Vec<f64> = (0..len)
        .map(|_| {
            let w = rng.gaussian();
            if brown {
                b[0] = 0.995 * b[0] + w;
                return b[0];
            }
            b[0] = 0.99886 * b[0] + w * 0.0555179;
            b[1] = 0.99332 * b[1] + w * 0.0750759;
            b[2] = 0.96900 * b[2] + w * 0.1538520;
            b[3] = 0.86650 * b[3] + w * 0.3104856;
            b[4] = 0.55000 * b[4] + w * 0.5329522;
            b[5] = -0.7616 * b[5] - w * 0.0168980;
            let pink = b[..6].iter().sum::<f64>() + b[6] + w * 0.5362;
            b[6] = w * 0.115926;
            pink
        })
        .collect();
    let level = rms(&noise);
    scale_to(&mut noise, level, dbfs);
    noise
}

/// A room's impulse response: exponentially decaying noise (60 dB down after `rt60` seconds), dense
/// for the first 5 ms, then one tap per millisecond-sized cell at a random place ("velvet noise",
/// which sounds and cancels like the dense tail at a fraction of the convolution cost), 300 ms long,
/// with total energy `gain_db`. Returns (offset, gain) taps.
pub fn room(seed: u64, rt60: f64, gain_db: f64) -> Vec<(usize, f64)> {
    let mut rng = Rng::new(seed);
    let decay = |n: usize| (-6.9078 * n as f64 / (rt60 * RATE as f64)).exp();
    let dense = RATE / 200;
    let cell = RATE / 1000;
    let mut taps: Vec<(usize, f64)> = (0..dense).map(|n| (n, rng.gaussian() * decay(n))).collect();
    let mut start = dense;
    while start < RATE * 3 / 10 {
        let n = start + (rng.uniform() * cell as f64) as usize;
        // One tap stands for a cell's worth of energy.
        let sign = if rng.uniform() < 0.5 { -1.0 } else { 1.0 };
        taps.push((n, sign * (cell as f64).sqrt() * decay(n)));
        start += cell;
    }
    let energy: f64 = taps.iter().map(|(_, g)| g * g).sum();
    let scale = 10f64.powf(gain_db / 20.0) / energy.sqrt();
    for tap in &mut taps {
        tap.1 *= scale;
    }
    taps
}

/// `signal` through `taps`, delayed by `delay` samples, as long as `signal`.
pub fn echo(signal: &[f64], taps: &[(usize, f64)], delay: usize) -> Vec<f64> {
    let mut out = vec![0.0f64; signal.len()];
    for &(offset, gain) in taps {
        let shift = offset + delay;
        if shift >= out.len() {
            continue;
        }
        for (o, x) in out[shift..].iter_mut().zip(signal) {
            *o += gain * x;
        }
    }
    out
}

/// The simulated room of the echo tests: a far end talking throughout, heard through the room;
/// a near end that starts talking later; microphone noise.
pub struct Scene {
    /// The far end (-16 dBFS while talking, peaks about -1 dBFS).
    pub far: Voice,
    /// The near end (-20 dBFS while talking), silent for the first `near_starts` seconds.
    pub near: Voice,
    /// The far end through the room (RT60 200 ms, -10 dB), not yet delayed.
    pub room_echo: Vec<f64>,
    /// White noise at -50 dBFS.
    pub mic_noise: Vec<f64>,
}

impl Scene {
    /// `seconds` of it, the near end starting after `near_starts` seconds.
    pub fn new(seconds: f64, near_starts: f64) -> Self {
        let far = voice(1, seconds, -16.0);
        let mut near = voice(2, seconds - near_starts, -20.0);
        let silent_blocks = (near_starts * 100.0) as usize;
        near.samples.splice(0..0, std::iter::repeat_n(0.0, silent_blocks * PROCESSING_FRAME));
        near.active.splice(0..0, std::iter::repeat_n(false, silent_blocks));
        near.samples.truncate(far.samples.len());
        near.active.truncate(far.active.len());
        let room_echo = echo(&far.samples, &room(3, 0.2, -10.0), 0);
        let mic_noise = white_noise(4, far.samples.len(), -50.0);
        Self { far, near, room_echo, mic_noise }
    }

    /// The far end as played.
    pub fn far_i16(&self) -> Vec<i16> {
        to_i16(&self.far.samples)
    }

    /// The far end's echo after `delay_ms`, with the microphone noise (and the near end when
    /// `talking`), in floating point.
    pub fn mic_f64(&self, delay_ms: usize, talking: bool) -> Vec<f64> {
        let shift = delay_ms * RATE / 1000;
        let mut mic = self.mic_noise.clone();
        for (m, e) in mic[shift..].iter_mut().zip(&self.room_echo) {
            *m += e;
        }
        if talking {
            for (m, n) in mic.iter_mut().zip(&self.near.samples) {
                *m += n;
            }
        }
        mic
    }

    /// [`Scene::mic_f64`] in 16 bits.
    pub fn mic(&self, delay_ms: usize, talking: bool) -> Vec<i16> {
        to_i16(&self.mic_f64(delay_ms, talking))
    }

    /// The near end alone with the microphone noise: what the microphone hears without echo.
    pub fn near_alone(&self) -> Vec<i16> {
        to_i16(&mix(&[&self.near.samples, &self.mic_noise]))
    }

    /// Blocks (10 ms) where the echo of a far end talking arrives, `delay_ms` late.
    pub fn echoing(&self, delay_ms: usize) -> impl Fn(usize) -> bool + Copy + '_ {
        let delay_blocks = delay_ms / 10;
        move |i| i >= delay_blocks && self.far.active.get(i - delay_blocks).copied().unwrap_or(false)
    }
}

/// Sample-by-sample sum of equally long signals.
pub fn mix(parts: &[&[f64]]) -> Vec<f64> {
    let len = parts.iter().map(|p| p.len()).min().unwrap_or(0);
    (0..len).map(|n| parts.iter().map(|p| p[n]).sum()).collect()
}

/// To 16-bit samples, clipped.
pub fn to_i16(signal: &[f64]) -> Vec<i16> {
    signal.iter().map(|&x| (x * 32_768.0).round().clamp(-32_768.0, 32_767.0) as i16).collect()
}

/// RMS of a floating-point signal.
pub fn rms(signal: &[f64]) -> f64 {
    if signal.is_empty() {
        return 0.0;
    }
    (signal.iter().map(|x| x * x).sum::<f64>() / signal.len() as f64).sqrt()
}

fn scale_to(signal: &mut [f64], current_rms: f64, dbfs: f64) {
    let scale = 10f64.powf(dbfs / 20.0) / current_rms.max(1e-12);
    for s in signal {
        *s *= scale;
    }
}

/// Energy of 16-bit `samples` in the 10 ms blocks from `from` on that `keep` selects.
pub fn energy(samples: &[i16], from: usize, keep: impl Fn(usize) -> bool) -> f64 {
    samples
        .chunks(PROCESSING_FRAME)
        .enumerate()
        .skip(from)
        .filter(|(i, _)| keep(*i))
        .flat_map(|(_, block)| block.iter())
        .map(|&s| f64::from(s) * f64::from(s))
        .sum()
}

/// `10 log10(a / b)`, floored so that silence stays finite.
pub fn db(a: f64, b: f64) -> f64 {
    10.0 * (a.max(1e-9) / b.max(1e-9)).log10()
}

/// Runs `mic` through a processor with `config`, `far` fed block by block just before each
/// microphone block. Returns the output.
pub fn process(config: ProcessingConfig, far: &[i16], mic: &[i16]) -> Vec<i16> {
    let mut processor = AudioProcessor::new(config).expect("processor");
    run(&mut processor, far, mic, |_, _| {})
}

/// Like [`process`] with an existing processor; `before_block(processor, index)` runs before each
/// block (to switch stages mid-stream).
pub fn run(
    processor: &mut AudioProcessor,
    far: &[i16],
    mic: &[i16],
    mut before_block: impl FnMut(&mut AudioProcessor, usize),
) -> Vec<i16> {
    let mut out = mic.to_vec();
    for (i, (block, far)) in out.chunks_exact_mut(PROCESSING_FRAME).zip(far.chunks_exact(PROCESSING_FRAME)).enumerate()
    {
        before_block(processor, i);
        processor.analyze_render(far);
        processor.process_capture(block).expect("whole blocks");
    }
    out
}

/// Echo return loss enhancement, dB: microphone energy over output energy in the blocks from
/// `from` on that `echoing` selects (see [`Scene::echoing`]).
pub fn erle(mic: &[i16], out: &[i16], echoing: impl Fn(usize) -> bool + Copy, from: usize) -> f64 {
    db(energy(mic, from, echoing), energy(out, from, echoing))
}

/// How much of the near end survives double talk, dB (positive = attenuated): `alone` is the
/// output of the same chain fed the near end without echo, `mixed` the output with the echo; the
/// mixed output is projected on the near-end-alone output over the blocks from `from` on where the
/// near end talks, and the projection's gain is returned. Residual echo, uncorrelated with the near
/// end, does not count; a suppressor that ducks the near end does.
pub fn near_end_attenuation(alone: &[i16], mixed: &[i16], near_active: &[bool], from: usize) -> f64 {
    let (mut cross, mut own) = (0.0f64, 0.0f64);
    for (i, (a, m)) in alone.chunks(PROCESSING_FRAME).zip(mixed.chunks(PROCESSING_FRAME)).enumerate().skip(from) {
        if !near_active.get(i).copied().unwrap_or(false) {
            continue;
        }
        for (&a, &m) in a.iter().zip(m) {
            cross += f64::from(a) * f64::from(m);
            own += f64::from(a) * f64::from(a);
        }
    }
    -20.0 * (cross.max(1e-9) / own.max(1e-9)).log10()
}

/// Signal-to-noise ratios before and after processing by the Hagerman–Olofsson phase-inversion
/// method: `plus` and `minus` are the outputs for speech + noise and speech − noise through the same
/// chain; their half sum is the processed speech, their half difference the processed noise.
/// Returns (input SNR, output SNR) in dB over the samples from block `from` on.
pub fn hagerman_snr(speech: &[f64], noise: &[f64], plus: &[i16], minus: &[i16], from: usize) -> (f64, f64) {
    let skip = from * PROCESSING_FRAME;
    let input =
        db(speech.iter().skip(skip).map(|x| x * x).sum::<f64>(), noise.iter().skip(skip).map(|x| x * x).sum::<f64>());
    let (mut s, mut n) = (0.0f64, 0.0f64);
    for (&p, &m) in plus.iter().zip(minus).skip(skip) {
        let (p, m) = (f64::from(p), f64::from(m));
        s += (p + m) * (p + m) / 4.0;
        n += (p - m) * (p - m) / 4.0;
    }
    (input, db(s, n))
}
