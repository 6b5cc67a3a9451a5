//! Audio processing benchmark (issue 14): Duet's [`AudioProcessor`] (sonora 0.2: AEC3, noise
//! suppression, AGC2) on a simulated room, beside Chromium's own audio processing on the same
//! files where it can be measured here. Prints markdown tables.
//!
//! `cargo bench -p duet-media --bench audio_processing` (add `-- --quick` for a short run without
//! Chromium, `-- --no-chromium` to skip only Chromium, `-- --chromium-runs N` to repeat each
//! Chromium measurement N times instead of 3: its timing, and so its figures, vary from run to run).
//!
//! The room (shared with `tests/audio_processing.rs`): speech-like far and near ends (source-filter
//! voices), the far end's echo through a room impulse response (RT60 200 ms, -10 dB) delayed by 40,
//! 100 or 200 ms, microphone noise at -50 dBFS; the near end talks from 3 s on. Figures are over
//! the part after 2 s (convergence):
//! - ERLE: microphone energy over output energy, in the blocks where the echo of far-end speech
//!   arrives.
//! - Near-end attenuation in double talk: the output with echo projected on the output of the same
//!   chain fed the near end without echo (and no far end), over the blocks where the near end talks.
//! - Noise suppression: speech plus stationary noise at 5 dB SNR, SNR before and after by the
//!   Hagerman–Olofsson phase-inversion method (speech + noise and speech − noise through the chain:
//!   half the sum is the processed speech, half the difference the processed noise).
//! - CPU: wall time of each 10 ms step (far block + microphone block), on one core.
//! - Allocations: heap allocations per 10 ms step, counted by this binary's global allocator, through
//!   [`AudioProcessor`] and through sonora's API directly with the same configuration.

#[path = "../tests/audio_signals/mod.rs"]
mod signals;

#[path = "audio_processing/chromium.rs"]
mod chromium;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use duet_media::{AudioFrame, AudioProcessor, AudioSink, PROCESSING_FRAME, ProcessingConfig, WavWriter};
use signals::{
    RATE, Scene, coloured_noise, db, energy, erle, hagerman_snr, mix, near_end_attenuation, process, rms, to_i16,
    white_noise,
};
use sonora::config::{
    AdaptiveDigital, EchoCanceller, GainController2, HighPassFilter, NoiseSuppression, NoiseSuppressionLevel,
};

/// Counts heap allocations (and reallocations) of the whole process.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; only a counter is added.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SECONDS: f64 = 10.0;
const NEAR_STARTS: f64 = 3.0;
/// Blocks of 10 ms before measuring: 2 s of convergence.
const CONVERGED: usize = 200;
const DELAYS_MS: [usize; 3] = [40, 100, 200];

const fn config(echo_cancellation: bool, noise_suppression: bool, gain_control: bool) -> ProcessingConfig {
    ProcessingConfig { echo_cancellation, noise_suppression, gain_control }
}
const ALL: ProcessingConfig = config(true, true, true);
const AEC: ProcessingConfig = config(true, false, false);
const NS: ProcessingConfig = config(false, true, false);
const AGC: ProcessingConfig = config(false, false, true);
const OFF: ProcessingConfig = config(false, false, false);

fn main() -> Result<(), String> {
    // `cargo test --all-targets` runs benches without `--bench`: then a quick smoke run.
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick") || !args.iter().any(|a| a == "--bench");
    let with_chromium = !quick && !args.iter().any(|a| a == "--no-chromium");
    let chromium_runs = args
        .iter()
        .position(|a| a == "--chromium-runs")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(3usize)
        .max(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("## duet-media audio processing benchmark ({cores} cores{})\n", if quick { ", quick" } else { "" });
    let scene = Scene::new(SECONDS, NEAR_STARTS);
    echo_table(&scene);
    noise_table(&scene);
    cost_table(&scene, if quick { 1 } else { 5 });
    if with_chromium {
        match chromium::find() {
            Some(path) => chromium_table(&path, chromium_runs)?,
            None => {
                println!("\nChromium anchor skipped: no Chromium at /usr/lib/chromium/chromium or /usr/bin/chromium.")
            }
        }
    }
    Ok(())
}

fn echo_table(scene: &Scene) {
    println!("### Echo (speech-like far end, RT60 200 ms, -10 dB, mic noise -50 dBFS)\n");
    println!(
        "| echo delay | chain | ERLE after 2 s | near end in double talk | ERLE where only the far end talks, double-talk run | delay estimate |"
    );
    println!("|---:|---|---:|---:|---:|---:|");
    let far = scene.far_i16();
    let silence = vec![0i16; far.len()];
    let near_silent = |i: usize| {
        scene.near.samples.chunks(PROCESSING_FRAME).nth(i).is_some_and(|block| block.iter().all(|&x| x == 0.0))
    };
    for delay in DELAYS_MS {
        let (mic, mic_talking) = (scene.mic(delay, false), scene.mic(delay, true));
        for (name, config) in [("echo cancellation only", AEC), ("all stages (Duet's default)", ALL)] {
            let mut processor = AudioProcessor::new(config).expect("processor");
            let out = signals::run(&mut processor, &far, &mic, |_, _| {});
            let estimate = processor.stats().delay_ms.map_or("-".to_owned(), |d| format!("{d} ms"));
            let alone = process(config, &silence, &scene.near_alone());
            let mixed = process(config, &far, &mic_talking);
            let echoing = scene.echoing(delay);
            let far_only = |i: usize| echoing(i) && near_silent(i);
            println!(
                "| {delay} ms | {name} | {:.1} dB | -{:.2} dB | {:.1} dB | {estimate} |",
                erle(&mic, &out, echoing, CONVERGED),
                near_end_attenuation(&alone, &mixed, &scene.near.active, CONVERGED),
                db(energy(&mic_talking, CONVERGED, far_only), energy(&mixed, CONVERGED, far_only)),
            );
        }
    }
    let mic = scene.mic(100, false);
    println!(
        "| 100 ms | no processing (reference) | {:.1} dB | | | |",
        erle(&mic, &process(OFF, &far, &mic), scene.echoing(100), CONVERGED)
    );
    println!("\nTargets (issue 14): ERLE >= 25 dB after 2 s; near end attenuated by less than 3 dB.\n");
}

fn noise_table(scene: &Scene) {
    println!("### Noise suppression (speech-like near end + stationary noise at 5 dB SNR)\n");
    println!("| noise | chain | SNR in | SNR out | improvement |");
    println!("|---|---|---:|---:|---:|");
    let speech = &scene.near.samples;
    let silence = vec![0i16; speech.len()];
    let level = 20.0 * rms(&speech[CONVERGED * PROCESSING_FRAME..]).log10();
    for (kind, noise) in [
        ("white", white_noise(5, speech.len(), level - 5.0)),
        ("pink", coloured_noise(6, speech.len(), level - 5.0, false)),
        ("brown", coloured_noise(7, speech.len(), level - 5.0, true)),
    ] {
        let inverted: Vec<f64> = noise.iter().map(|n| -n).collect();
        let (plus, minus) = (to_i16(&mix(&[speech, &noise])), to_i16(&mix(&[speech, &inverted])));
        for (name, config) in [("noise suppression only", NS), ("all stages", ALL)] {
            let (before, after) = hagerman_snr(
                speech,
                &noise,
                &process(config, &silence, &plus),
                &process(config, &silence, &minus),
                CONVERGED,
            );
            println!("| {kind} | {name} | {before:.1} dB | {after:.1} dB | {:+.1} dB |", after - before);
        }
    }
    println!();
}

/// Sonora's configuration for every stage, as `AudioProcessor` sets it up (apm.rs).
fn sonora_all() -> sonora::AudioProcessing {
    let config = sonora::Config {
        high_pass_filter: Some(HighPassFilter::default()),
        echo_canceller: Some(EchoCanceller::default()),
        noise_suppression: Some(NoiseSuppression { level: NoiseSuppressionLevel::High, ..Default::default() }),
        gain_controller2: Some(GainController2 {
            adaptive_digital: Some(AdaptiveDigital { initial_gain_db: 6.0, ..AdaptiveDigital::default() }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let stream = sonora::StreamConfig::new(48_000, 1);
    sonora::AudioProcessing::builder().config(config).capture_config(stream).render_config(stream).build()
}

fn cost_table(scene: &Scene, repeats: usize) {
    println!("### Cost per 10 ms step (far block + microphone block), one core\n");
    println!("| chain | mean | p99 | max | mean, % of one core | allocations per step |");
    println!("|---|---:|---:|---:|---:|---:|");
    let far = scene.far_i16();
    let mic = scene.mic(100, true);
    // The far end arrives in pieces of 441 samples, as from a 44.1 kHz device's callbacks.
    for (name, config) in [
        ("all stages", ALL),
        ("echo cancellation only", AEC),
        ("noise suppression only", NS),
        ("gain control only", AGC),
        ("all off", OFF),
    ] {
        let mut times = Vec::new();
        let mut allocations = 0u64;
        let mut counted = 0u64;
        for _ in 0..repeats {
            let mut processor = AudioProcessor::new(config).expect("processor");
            let mut out = mic.clone();
            let mut fed = 0;
            for (i, block) in out.chunks_exact_mut(PROCESSING_FRAME).enumerate() {
                let end = (i + 1) * PROCESSING_FRAME;
                let before = ALLOCATIONS.load(Ordering::Relaxed);
                let start = Instant::now();
                while fed < end.min(far.len()) {
                    let piece = 441.min(far.len() - fed);
                    processor.analyze_render(&far[fed..fed + piece]);
                    fed += piece;
                }
                processor.process_capture(block).expect("whole blocks");
                times.push(start.elapsed().as_secs_f64() * 1e6);
                if i >= 100 {
                    allocations += ALLOCATIONS.load(Ordering::Relaxed) - before;
                    counted += 1;
                }
            }
        }
        times.sort_by(f64::total_cmp);
        let mean = times.iter().sum::<f64>() / times.len() as f64;
        let p99 = times[times.len() * 99 / 100];
        let max = times[times.len() - 1];
        println!(
            "| {name} | {mean:.0} µs | {p99:.0} µs | {max:.0} µs | {:.2} % | {:.1} |",
            mean / 100.0,
            allocations as f64 / counted.max(1) as f64
        );
    }
    // Sonora alone, the same calls without the wrapper, in whole blocks.
    let mut apm = sonora_all();
    let (mut scratch, mut out) = (vec![0i16; PROCESSING_FRAME], vec![0i16; PROCESSING_FRAME]);
    let (mut allocations, mut counted) = (0u64, 0u64);
    for (i, (far, mic)) in far.chunks_exact(PROCESSING_FRAME).zip(mic.chunks_exact(PROCESSING_FRAME)).enumerate() {
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let _ = apm.process_render_i16(far, &mut scratch);
        let _ = apm.process_capture_i16(mic, &mut out);
        if i >= 100 {
            allocations += ALLOCATIONS.load(Ordering::Relaxed) - before;
            counted += 1;
        }
    }
    println!("| sonora's API directly, all stages | | | | | {:.1} |", allocations as f64 / counted.max(1) as f64);
    println!("\nTarget (issue 14): under 5 % of one core. Allocations: the wrapper's own are the difference.\n");
}

/// Writes 16-bit mono 48 kHz samples.
fn write_wav(path: &Path, samples: &[i16]) -> Result<(), String> {
    let mut writer = WavWriter::create(path, 48_000, 1).map_err(|e| e.to_string())?;
    let frame = AudioFrame::new(samples.to_vec(), 48_000, 1, 0).map_err(|e| e.to_string())?;
    writer.play(&frame).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())
}

/// Where `reference[window]` lies in `recorded`: the offset `o` such that `recorded[n]` holds file
/// sample `n + o`, searched from -0.5 s to +1.5 s (coarse on every 4th sample, then refined), and
/// the normalised correlation there (1 = the same waveform).
fn align(reference: &[f64], recorded: &[f32], window: std::ops::Range<usize>) -> (isize, f64) {
    let sums = |offset: isize, step: usize| -> (f64, f64) {
        window.clone().step_by(step).fold((0.0, 0.0), |(cross, own), n| {
            let y = usize::try_from(n as isize - offset)
                .ok()
                .and_then(|at| recorded.get(at))
                .map_or(0.0, |&y| f64::from(y));
            (cross + reference[n] * y, own + y * y)
        })
    };
    let best = |offsets: &mut dyn Iterator<Item = isize>, step: usize| {
        offsets.map(|o| (o, sums(o, step).0)).max_by(|a, b| a.1.abs().total_cmp(&b.1.abs())).map_or(0, |b| b.0)
    };
    let coarse = best(&mut (-(RATE as isize) / 2..=(3 * RATE as isize) / 2).step_by(4), 4);
    let offset = best(&mut (coarse - 8..=coarse + 8), 1);
    let (cross, own) = sums(offset, 1);
    let reference_energy: f64 = reference[window].iter().map(|x| x * x).sum();
    (offset, cross / (own * reference_energy).sqrt().max(1e-12))
}

/// `recorded` as 16-bit samples on the file's time line (see [`align`]), `len` long.
fn on_file_time(recorded: &[f32], offset: isize, len: usize) -> Vec<i16> {
    (0..len)
        .map(|n| {
            usize::try_from(n as isize - offset)
                .ok()
                .and_then(|at| recorded.get(at))
                .map_or(0, |&y| (f64::from(y) * 32_768.0).round().clamp(-32_768.0, 32_767.0) as i16)
        })
        .collect()
}

/// Median and range of Chromium's repeated runs (its timing differs from run to run).
fn spread(mut values: Vec<f64>, unit: &str) -> String {
    values.sort_by(f64::total_cmp);
    match values.as_slice() {
        [] => "-".to_owned(),
        [one] => format!("{one:.1} {unit}"),
        all => format!("{:.1} {unit} ({:.1} to {:.1})", all[all.len() / 2], all[0], all[all.len() - 1]),
    }
}

/// The anchor: the same files through Duet (all stages) and through Chromium (all on), Chromium
/// `repeats` times.
fn chromium_table(chromium: &Path, repeats: usize) -> Result<(), String> {
    println!("### Anchor: Chromium's audio processing on the same files\n");
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let dir = dir.path();
    // 12 s files; Chromium records 11 s of its processed track (it starts capturing a little late).
    let scene = Scene::new(12.0, NEAR_STARTS);
    let len = scene.far.samples.len();
    let record_ms = 11_000;
    let blocks_recorded = record_ms as usize / 10 - 50;
    let far_path = dir.join("far.wav");
    write_wav(&far_path, &scene.far_i16())?;
    // A few words of a third voice from 1 s to 1.8 s, in the microphone only (not an echo), to line
    // Chromium's recording up with the file (a noise burst does not survive its processing); the
    // same files go through Duet. The measures start at 2 s.
    let marker = signals::voice(9, 0.8, -14.0).samples;
    let marker_window = RATE..RATE + marker.len();
    let mut marker_reference = vec![0.0; len];
    marker_reference[marker_window.clone()].copy_from_slice(&marker);
    let with_marker = |mic: Vec<f64>| mix(&[&mic, &marker_reference]);
    let far = scene.far_i16();
    let silence = vec![0i16; len];
    // One Chromium capture of `mic`, lined up on `reference[window]`, on the file's time line.
    let run = |name: &str,
               far: Option<&Path>,
               mic: &[i16],
               processing: bool,
               reference: &[f64],
               window: std::ops::Range<usize>|
     -> Result<Vec<i16>, String> {
        let path = dir.join(format!("{name}.wav"));
        write_wav(&path, mic)?;
        let (recorded, log) = chromium::capture(chromium, dir, far, &path, processing, record_ms)?;
        let (offset, correlation) = align(reference, &recorded, window);
        let settings = log.iter().find(|l| l.starts_with("track")).map_or("", String::as_str);
        eprintln!("{name}: recording at {offset:+} samples from the file, correlation {correlation:.2}; {settings}");
        Ok(on_file_time(&recorded, offset, len))
    };
    let repeated =
        |f: &mut dyn FnMut() -> Result<f64, String>| (0..repeats).map(|_| f()).collect::<Result<Vec<f64>, String>>();

    println!(
        "| case | Duet (sonora, all stages) | Chromium (all on){} |",
        if repeats > 1 { format!(", median of {repeats} (range)") } else { String::new() }
    );
    println!("|---|---:|---:|");
    for delay in DELAYS_MS {
        let mic = to_i16(&with_marker(scene.mic_f64(delay, false)));
        let echoing = scene.echoing(delay);
        let measured = |i: usize| i < blocks_recorded && echoing(i);
        let duet = erle(&mic, &process(ALL, &far, &mic), measured, CONVERGED);
        let chrome = repeated(&mut || {
            let out =
                run(&format!("echo-{delay}"), Some(&far_path), &mic, true, &marker_reference, marker_window.clone())?;
            Ok(erle(&mic, &out, measured, CONVERGED))
        })?;
        println!("| ERLE after 2 s, echo {delay} ms in the files | {duet:.1} dB | {} |", spread(chrome, "dB"));
    }
    // Controls: processing off (the recording is the file: ERLE ~ 0), and processing on with no far
    // end played (no reference: what is left is noise suppression and gain control).
    let mic = to_i16(&with_marker(scene.mic_f64(100, false)));
    let measured = |i: usize| i < blocks_recorded && scene.echoing(100)(i);
    for (name, far, processing) in [
        ("control: Chromium processing off", Some(far_path.as_path()), false),
        ("control: far end not played (no reference)", None, true),
    ] {
        let chrome = run("control", far, &mic, processing, &marker_reference, marker_window.clone())?;
        let duet = if processing { process(ALL, &silence, &mic) } else { mic.clone() };
        println!(
            "| ERLE, {name}, 100 ms | {:.1} dB | {:.1} dB |",
            erle(&mic, &duet, measured, CONVERGED),
            erle(&mic, &chrome, measured, CONVERGED)
        );
    }

    // Double talk: the near end alone (no far end played) and with the echo, lined up on the near end.
    let near_window = 4 * RATE..5 * RATE;
    let alone_mic = scene.near_alone();
    let duet_alone = process(ALL, &silence, &alone_mic);
    let near_active: Vec<bool> = scene.near.active.iter().enumerate().map(|(i, &a)| a && i < blocks_recorded).collect();
    let mut chrome = vec![Vec::new(); DELAYS_MS.len()];
    for _ in 0..repeats {
        let alone = run("alone", None, &alone_mic, true, &scene.near.samples, near_window.clone())?;
        for (values, delay) in chrome.iter_mut().zip(DELAYS_MS) {
            let out = run(
                &format!("talk-{delay}"),
                Some(&far_path),
                &scene.mic(delay, true),
                true,
                &scene.near.samples,
                near_window.clone(),
            )?;
            values.push(-near_end_attenuation(&alone, &out, &near_active, CONVERGED));
        }
    }
    for (values, delay) in chrome.into_iter().zip(DELAYS_MS) {
        let duet =
            near_end_attenuation(&duet_alone, &process(ALL, &far, &scene.mic(delay, true)), &near_active, CONVERGED);
        println!("| near end in double talk, echo {delay} ms | {:.1} dB | {} |", -duet, spread(values, "dB"));
    }

    // Noise suppression, no far end: speech ± noise, each recording lined up on the speech.
    let speech = &scene.near.samples;
    let cut = blocks_recorded * PROCESSING_FRAME;
    let level = 20.0 * rms(&speech[CONVERGED * PROCESSING_FRAME..cut]).log10();
    for (kind, noise, processing) in [
        ("white", white_noise(5, len, level - 5.0), true),
        ("pink", coloured_noise(6, len, level - 5.0, false), true),
        ("white (control: Chromium processing off)", white_noise(5, len, level - 5.0), false),
    ] {
        let inverted: Vec<f64> = noise.iter().map(|n| -n).collect();
        let (plus, minus) = (to_i16(&mix(&[speech, &noise])), to_i16(&mix(&[speech, &inverted])));
        let gain = |p: &[i16], m: &[i16]| {
            let (before, after) = hagerman_snr(&speech[..cut], &noise[..cut], &p[..cut], &m[..cut], CONVERGED);
            // Check of the method: the noise estimate should not correlate with the speech.
            let (mut cross, mut own, mut reference) = (0.0, 0.0, 0.0);
            for n in CONVERGED * PROCESSING_FRAME..cut {
                let noise_estimate = (f64::from(p[n]) - f64::from(m[n])) / 2.0 / 32_768.0;
                cross += noise_estimate * speech[n];
                own += noise_estimate * noise_estimate;
                reference += speech[n] * speech[n];
            }
            eprintln!(
                "{kind}: SNR {before:.1} -> {after:.1} dB, speech correlation of the noise estimate {:.3}",
                cross / (own * reference).sqrt().max(1e-12)
            );
            after - before
        };
        let duet = if processing {
            gain(&process(ALL, &silence, &plus), &process(ALL, &silence, &minus))
        } else {
            gain(&plus, &minus)
        };
        let mut one = || -> Result<f64, String> {
            let p = run("plus", None, &plus, processing, speech, near_window.clone())?;
            let m = run("minus", None, &minus, processing, speech, near_window.clone())?;
            Ok(gain(&p, &m))
        };
        let chrome = if processing { repeated(&mut one)? } else { vec![one()?] };
        println!("| SNR gain, {kind} noise at 5 dB | {duet:.1} dB | {} |", spread(chrome, "dB"));
    }
    let version = Command::new(chromium).arg("--version").output();
    println!(
        "\n{}: headless, fake microphone = the file, far end played by an `<audio>` element to a machine \
         without a sound card. Negative = attenuated.",
        version.map_or_else(|_| "Chromium".into(), |o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    );
    Ok(())
}
