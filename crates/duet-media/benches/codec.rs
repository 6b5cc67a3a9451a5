//! Codec benchmark: VP8 encode/decode speed at 360p and 720p, Opus encode/decode time per 20 ms frame,
//! each beside anchors measured in the same run. Prints a markdown table.
//!
//! `cargo bench -p duet-media --bench codec` (add `-- --quick` for a short run).
//!
//! Anchors: libvpx itself at other speeds (cpu-used -4, -8, -10) and in libwebrtc's camera configuration (-6
//! with the denoiser), so the default (-6, as libwebrtc on desktops) is judged against its neighbours on the
//! same frames; two encoder threads, idle and with every core busy; the raw cost of touching a frame (an
//! I420 copy, and a 720p -> 360p scale) as the floor any pipeline pays; for Opus, the real-time budget of a
//! frame and the cost of the crate's own resampler on the same 20 ms.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use duet_media::{
    AudioFrame, FrameDuration, MediaClock, MediaError, OpusConfig, OpusDecoder, OpusEncoder, Resampler,
    SyntheticAudioSource, SyntheticVideoSource, VideoFrame, Vp8Config, Vp8Decoder, Vp8Encoder, scale_i420,
};

const FPS: u32 = 30;

struct VideoResult {
    encode_fps: f64,
    decode_fps: f64,
    kbps: f64,
    psnr_y: f64,
    encoded: usize,
}

fn psnr_y(a: &VideoFrame, b: &VideoFrame) -> f64 {
    let sse: u64 = a.y().iter().zip(b.y()).map(|(&x, &y)| u64::from(x.abs_diff(y)).pow(2)).sum();
    let mse = sse as f64 / a.y().len() as f64;
    if mse == 0.0 { 99.0 } else { 10.0 * (255.0 * 255.0 / mse).log10() }
}

fn run_vp8(frames: &[VideoFrame], config: Vp8Config) -> Result<VideoResult, MediaError> {
    let mut encoder = Vp8Encoder::new(config)?;
    let mut packets = Vec::with_capacity(frames.len());
    let mut encode_time = Duration::ZERO;
    for frame in frames {
        let start = Instant::now();
        let packet = encoder.encode(frame)?;
        encode_time += start.elapsed();
        packets.push(packet);
    }
    let mut decoder = Vp8Decoder::new()?;
    let (mut decode_time, mut psnr_sum, mut encoded, mut bytes) = (Duration::ZERO, 0.0, 0, 0);
    for (frame, packet) in frames.iter().zip(&packets) {
        let Some(packet) = packet else { continue };
        encoded += 1;
        bytes += packet.data.len();
        let start = Instant::now();
        let picture = decoder.decode(&packet.data, packet.timestamp_us)?;
        decode_time += start.elapsed();
        let Some(picture) = picture else { continue };
        psnr_sum += psnr_y(frame, &picture);
    }
    let seconds = frames.len() as f64 / f64::from(FPS);
    Ok(VideoResult {
        encode_fps: frames.len() as f64 / encode_time.as_secs_f64(),
        decode_fps: encoded as f64 / decode_time.as_secs_f64(),
        kbps: bytes as f64 * 8.0 / 1000.0 / seconds,
        psnr_y: psnr_sum / encoded.max(1) as f64,
        encoded,
    })
}

/// Runs `f` while one busy-looping thread per core competes for the CPU (a loaded desktop).
fn with_cpu_load<T>(f: impl FnOnce() -> T) -> T {
    let stop = AtomicBool::new(false);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..cores {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    black_box(0u64);
                }
            });
        }
        let result = f();
        stop.store(true, Ordering::Relaxed);
        result
    })
}

fn per_frame<T>(iterations: usize, mut f: impl FnMut() -> T) -> Duration {
    let start = Instant::now();
    for _ in 0..iterations {
        black_box(f());
    }
    start.elapsed() / iterations as u32
}

fn main() -> Result<(), MediaError> {
    // `cargo test --all-targets` runs benches without `--bench`: then a quick smoke run.
    let quick = std::env::args().any(|a| a == "--quick") || !std::env::args().any(|a| a == "--bench");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("## duet-media codec benchmark ({cores} cores{})\n", if quick { ", quick" } else { "" });
    println!(
        "Synthetic pattern panning 2 px/frame with +-3 luma noise (camera-like motion and bit cost), {FPS} fps, \
         real-time CBR settings.\n"
    );
    println!("| case | setting | encode fps | decode fps | kb/s | PSNR-Y dB | frames coded |");
    println!("|---|---|---:|---:|---:|---:|---:|");

    let clock = MediaClock::new();
    for (width, height, kbps, count) in [(640, 360, 600, 300), (1280, 720, 1500, 150)] {
        let count = if quick { count / 3 } else { count };
        let source = SyntheticVideoSource::new(width, height, FPS, clock)?.with_noise(3).with_pan(2);
        let frames =
            (0..count).map(|n| source.render(n, n * 1_000_000 / u64::from(FPS))).collect::<Result<Vec<_>, _>>()?;
        let case = format!("VP8 {width}x{height} @ {kbps} kb/s");
        for (setting, cpu_used, denoise, threads, loaded) in [
            ("duet default (cpu-used -6, threads auto)", -6, false, None, false),
            ("anchor: cpu-used -4 (slower)", -4, false, None, false),
            ("anchor: cpu-used -8", -8, false, None, false),
            ("anchor: cpu-used -10", -10, false, None, false),
            ("anchor: libwebrtc camera setting (-6 + denoiser)", -6, true, None, false),
            ("cpu-used -6, 2 threads", -6, false, Some(2), false),
            ("both cores busy: duet default", -6, false, None, true),
            ("both cores busy: 2 threads", -6, false, Some(2), true),
        ] {
            let config = Vp8Config { cpu_used, denoise, threads, ..Vp8Config::new(width, height, FPS, kbps) };
            let r = if loaded { with_cpu_load(|| run_vp8(&frames, config))? } else { run_vp8(&frames, config)? };
            println!(
                "| {case} | {setting} | {:.0} | {:.0} | {:.0} | {:.2} | {}/{} |",
                r.encode_fps,
                r.decode_fps,
                r.kbps,
                r.psnr_y,
                r.encoded,
                frames.len()
            );
        }
        let copy = per_frame(frames.len(), || frames[0].clone());
        println!("| {case} | anchor: I420 frame copy | {:.0} | | | | |", 1.0 / copy.as_secs_f64());
        if width == 1280 {
            for (w, h) in [(640, 360), (320, 180)] {
                let scale = per_frame(frames.len(), || scale_i420(&frames[0], w, h));
                println!("| {case} | anchor: scale to {w}x{h} | {:.0} | | | | |", 1.0 / scale.as_secs_f64());
            }
        }
    }

    println!("\n| case | setting | µs per 20 ms frame | % of real time |");
    println!("|---|---|---:|---:|");
    let iterations = if quick { 500 } else { 3000 };
    let source = SyntheticAudioSource::new(1, FrameDuration::Ms20, clock)?;
    let audio: Vec<AudioFrame> = (0..iterations as u64).map(|n| source.render(0, n * 960)).collect();
    let mut encoder = OpusEncoder::new(OpusConfig::default())?;
    let mut packets = Vec::with_capacity(audio.len());
    let start = Instant::now();
    for frame in &audio {
        packets.extend(encoder.encode(frame)?);
    }
    let encode = start.elapsed() / iterations as u32;
    let mut decoder = OpusDecoder::new(1)?;
    let start = Instant::now();
    for packet in &packets {
        black_box(decoder.decode(&packet.data, packet.timestamp_us)?);
    }
    let decode = start.elapsed() / iterations as u32;
    let plc = per_frame(iterations, || decoder.conceal(FrameDuration::Ms20, None, 0));
    let mut resampler = Resampler::new(44_100, 48_000, 1)?;
    let input: Vec<i16> = audio[0].samples()[..882].to_vec();
    let mut output = Vec::with_capacity(1000);
    let resample = per_frame(iterations, || {
        output.clear();
        resampler.process(&input, &mut output);
    });
    let budget = Duration::from_millis(20);
    for (setting, time) in [
        ("Opus encode, mono 32 kb/s VoIP", encode),
        ("Opus decode", decode),
        ("Opus concealment (lost packet)", plc),
        ("anchor: resample 44.1 -> 48 kHz", resample),
        ("anchor: real-time budget", budget),
    ] {
        println!(
            "| audio | {setting} | {:.1} | {:.3} |",
            time.as_secs_f64() * 1e6,
            100.0 * time.as_secs_f64() / budget.as_secs_f64()
        );
    }
    Ok(())
}
