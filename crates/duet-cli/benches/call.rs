//! Call benchmark: N calls between two real `duet call` processes through a real server on
//! loopback, with synthetic VP8/Opus media, and the 720p codec speed.
//!
//! `cargo bench -p duet-cli --bench call -- [--calls 5] [--seconds 8]`
//!
//! Prints time from `matched` to the first decoded frame (median, p95), capture-to-decoded
//! latency p50/p95 at 640x360@30 with audio, CPU per call side (user+sys seconds per
//! call-second) at 360p30 and 720p30, and VP8 encode/decode fps at 720p. Anchors: the
//! Chromium figures the issue gives for this machine (two headless Chromium 156 peers on
//! loopback), until the browser client lets the same run measure Chromium itself.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Instant;

use duet_media::{MediaClock, SyntheticVideoSource, VideoSource, Vp8Config, Vp8Decoder, Vp8Encoder};
use duet_server::{Server, ServerConfig};
use serde_json::Value;
use tokio::process::Command;

const DUET: &str = env!("CARGO_BIN_EXE_duet");

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn side(addr: SocketAddr, room: &str, video: &str, quality: &str, seconds: u64) -> Value {
    let out = Command::new(DUET)
        .args(["call", "--server", &format!("ws://{addr}/ws"), "--bind", "127.0.0.1:0", "--json"])
        .args(["--room", room, "--video", video, "--quality", quality, "--duration", &seconds.to_string()])
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "summary")
        .unwrap_or_else(|| panic!("no summary from duet: {text}"))
}

/// Runs `calls` calls; returns both sides' summaries.
async fn calls(addr: SocketAddr, n: u64, video: &str, quality: &str, seconds: u64) -> Vec<Value> {
    let mut out = vec![];
    for i in 0..n {
        let room = format!("bench-{video}-{i}").replace([':', '@'], "-");
        let (x, y) =
            tokio::join!(side(addr, &room, video, quality, seconds), side(addr, &room, video, quality, seconds));
        eprintln!(
            "  call {i}: first frame {} / {} ms, latency p50 {} / {} ms, cpu/s {:.2} / {:.2}",
            x["time_to_first_frame_ms"],
            y["time_to_first_frame_ms"],
            x["latency_ms_p50"],
            y["latency_ms_p50"],
            x["cpu_per_call_second"].as_f64().unwrap_or(f64::NAN),
            y["cpu_per_call_second"].as_f64().unwrap_or(f64::NAN)
        );
        out.push(x);
        out.push(y);
    }
    out
}

/// One Chromium peer on the served browser client (tests/browser/peer.mjs); its report.
async fn chromium(addr: SocketAddr, path: &str, seconds: u64) -> Value {
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser/peer.mjs");
    let out = Command::new("node")
        .arg(script)
        .args(["--url", &format!("http://{addr}{path}"), "--seconds", &seconds.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .await
        .expect("node (scripts/test.sh installs it)");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// First-frame times (ms from `matched`) of `n` calls of each pairing: duet<->Chromium
/// (both sides) and Chromium<->Chromium.
async fn browser_calls(addr: SocketAddr, n: u64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mut duet_side, mut chromium_vs_duet, mut chromium_pair) = (vec![], vec![], vec![]);
    for i in 0..n {
        let room = format!("bench-browser-{i}");
        let page = format!("/?room={room}");
        let c = tokio::spawn(async move { chromium(addr, &page, 2).await });
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        let d = side(addr, &room, "synthetic:640x360@30", "auto", 3).await;
        let c = c.await.unwrap();
        duet_side.extend(d["time_to_first_frame_ms"].as_f64());
        chromium_vs_duet.extend(c["firstFrameMs"].as_f64());
        let room = format!("bench-chromium-{i}");
        let (p1, p2) = (format!("/?room={room}"), format!("/?room={room}"));
        let a = tokio::spawn(async move { chromium(addr, &p1, 2).await });
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        let b = chromium(addr, &p2, 2).await;
        let a = a.await.unwrap();
        chromium_pair.extend(a["firstFrameMs"].as_f64());
        chromium_pair.extend(b["firstFrameMs"].as_f64());
        eprintln!(
            "  browser call {i}: duet {} / chromium {} ms; chromium pair {} / {} ms",
            d["time_to_first_frame_ms"], c["firstFrameMs"], a["firstFrameMs"], b["firstFrameMs"]
        );
    }
    (duet_side, chromium_vs_duet, chromium_pair)
}

fn pct(mut v: Vec<f64>, p: f64) -> f64 {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn field(sides: &[Value], key: &str) -> Vec<f64> {
    sides.iter().filter_map(|s| s[key].as_f64()).collect()
}

/// VP8 encode and decode speed at 1280x720 over `frames` frames of the synthetic pattern.
fn codec_fps(frames: u64) -> (f64, f64) {
    let mut src = SyntheticVideoSource::new(1280, 720, 30, MediaClock::new()).unwrap().with_noise(3).with_pan(2);
    let raw: Vec<_> = (0..frames).map(|_| src.next_frame().unwrap().unwrap()).collect();
    let mut enc = Vp8Encoder::new(Vp8Config::new(1280, 720, 30, 1500)).unwrap();
    let t = Instant::now();
    let mut encoded = vec![];
    for (i, f) in raw.iter().enumerate() {
        let mut f = f.clone();
        f.set_timestamp_us(i as u64 * 33_333);
        if let Some(e) = enc.encode(&f).unwrap() {
            encoded.push(e);
        }
    }
    let enc_fps = frames as f64 / t.elapsed().as_secs_f64();
    let mut dec = Vp8Decoder::new().unwrap();
    let t = Instant::now();
    for e in &encoded {
        dec.decode(&e.data, e.timestamp_us).unwrap();
    }
    (enc_fps, encoded.len() as f64 / t.elapsed().as_secs_f64())
}

fn main() {
    // `cargo test --all-targets` runs benches without `--bench`: then a short smoke run that
    // proves the benchmark still works without spending minutes.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let n = arg("--calls", if smoke { 1 } else { 5 });
    let seconds = arg("--seconds", if smoke { 2 } else { 8 });
    let big_calls = if smoke { 0 } else { 2 };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let cfg = ServerConfig { listen: "127.0.0.1:0".parse().unwrap(), ..ServerConfig::default() };
        let server = Server::bind(cfg).await.unwrap();
        let addr = server.local_addr();
        tokio::spawn(server.run(std::future::pending()));

        eprintln!("{n} calls at 640x360@30 with audio, {seconds} s each");
        let s360 = calls(addr, n, "synthetic:640x360@30", "auto", seconds).await;
        eprintln!("{big_calls} calls at 1280x720@30 with audio, {seconds} s each");
        let s720 = calls(addr, big_calls, "synthetic:1280x720@30", "high", seconds).await;
        let browser_n = if smoke { 1 } else { 3 };
        eprintln!("{browser_n} duet<->Chromium and Chromium<->Chromium calls");
        let (b_duet, b_chromium, b_pair) = browser_calls(addr, browser_n).await;
        eprintln!("VP8 codec speed at 1280x720");
        let (enc_fps, dec_fps) = codec_fps(if smoke { 20 } else { 300 });

        let ff = field(&s360, "time_to_first_frame_ms");
        let lat50 = field(&s360, "latency_ms_p50");
        let lat95 = field(&s360, "latency_ms_p95");
        let cpu360 = field(&s360, "cpu_per_call_second");
        let cpu720 = field(&s720, "cpu_per_call_second");
        let lost: f64 = field(&s360, "video_frames_lost").iter().sum();
        let decoded: f64 = field(&s360, "video_frames_decoded").iter().sum();
        let fps720: Vec<f64> = s720
            .iter()
            .filter_map(|s| Some(s["video_frames_decoded"].as_f64()? / s["call_s"].as_f64()?))
            .collect();
        let h720: Vec<f64> = field(&s720, "video_height");

        println!();
        println!("duet call benchmark ({n} calls at 360p30, {big_calls} at 720p30, {seconds} s each, loopback)");
        println!("| metric | duet | anchor: Chromium 156 (issue 3, this machine) | target |");
        println!("|---|---|---|---|");
        println!(
            "| matched -> first decoded frame, median / p95 | {:.0} / {:.0} ms | 199 ms median | < 150 ms median |",
            pct(ff.clone(), 0.5),
            pct(ff, 0.95)
        );
        println!(
            "| capture -> decoded latency p50 at 360p30 (median of calls) | {:.1} ms | 38-40 ms video-only, 63-96 ms with audio | < 35 ms |",
            pct(lat50.clone(), 0.5)
        );
        println!("| capture -> decoded latency p95 at 360p30 (median of calls) | {:.1} ms | | |", pct(lat95, 0.5));
        println!(
            "| video frames lost (360p calls) | {lost:.0} of {:.0} decoded | | |",
            decoded
        );
        println!(
            "| CPU per call side, 360p30 + audio (median) | {:.0}% of a core | 60% | < 30% |",
            pct(cpu360, 0.5) * 100.0
        );
        println!(
            "| CPU per call side, 720p30 + audio (median) | {:.0}% of a core | 93-97%, then drops to 540p | < 60% |",
            pct(cpu720, 0.5) * 100.0
        );
        println!(
            "| 720p call: received fps / height (median) | {:.1} fps / {:.0} | cannot hold 720p30 | 30 fps at 720 |",
            pct(fps720, 0.5),
            pct(h720, 0.5)
        );
        println!("| VP8 encode / decode at 1280x720, 1 thread | {enc_fps:.0} / {dec_fps:.0} fps | | |");
        println!();
        println!("First frame after `matched`, same run (median / max of {browser_n} calls, ms):");
        println!("| pairing | duet side | Chromium side |");
        println!("|---|---|---|");
        println!("| duet <-> duet | {:.0} / {:.0} | |", pct(field(&s360, "time_to_first_frame_ms"), 0.5), pct(field(&s360, "time_to_first_frame_ms"), 1.0));
        println!(
            "| duet <-> Chromium | {:.0} / {:.0} | {:.0} / {:.0} |",
            pct(b_duet.clone(), 0.5),
            pct(b_duet, 1.0),
            pct(b_chromium.clone(), 0.5),
            pct(b_chromium, 1.0)
        );
        println!("| Chromium <-> Chromium | | {:.0} / {:.0} |", pct(b_pair.clone(), 0.5), pct(b_pair, 1.0));
    });
}
