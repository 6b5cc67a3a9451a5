//! Capped-link benchmark: a Duet call (two `duet call` processes) and a Chromium call (two
//! Chromiums on the browser client) through the same scripted `tc tbf` profile, in network
//! namespaces (see `tests/common/netns.rs`), one after the other in the same run. Needs root,
//! Node.js with playwright-core in `tests/browser`, and Debian's Chromium.
//!
//! `cargo bench -p duet-cli --bench capped` (about 3 minutes): free for 10 s, 300 kb/s for 30 s,
//! 48 kb/s for 20 s, free for 20 s, both directions, a 1280x720 30 fps source on every side.
//! Prints one table, measured on the receiving side (fps, audio) and the sending side (rate),
//! from once-a-second samples:
//! - settle: from the 300 kb/s cap until video is smooth again (>= 10 fps for 2 s in a row);
//! - longest freeze: the longest run of seconds under 1 fps (outside audio-only);
//! - longest audio gap: Duet's own measure (decode to decode); for Chromium the longest run of
//!   seconds with under half the audio packets; over the whole call, and within 5 s of the
//!   300 kb/s cap's onset and of the 48 kb/s cap's (Duet: from `stats`' per-interval `audio_gap_ms`);
//! - utilisation: the mean send rate over the last 10 s of the 300 kb/s cap, over the cap;
//! - audio-only: from the 48 kb/s cap until video is off (Duet's `audio_only` event);
//! - recovery: from the cap being lifted until the sender is back above 1 Mb/s.
//!
//! Under `cargo test` (no `--bench`) it makes a short smoke run of the Duet side only.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "common/chromium.rs"]
mod chromium;
#[path = "../tests/common/netns.rs"]
mod netns;

use std::time::{Duration, Instant};

use netns::{Net, client, events, server};
use serde_json::Value;

/// (seconds from the start, cap in kb/s; `None`: lifted).
type Profile = Vec<(f64, Option<u32>)>;

/// Per-second samples of one direction.
#[derive(Debug, Default)]
struct Series {
    /// Receiver: frames decoded per second.
    fps: Vec<f64>,
    /// Receiver: audio packets per second (Chromium), or `None` when the precise longest gap is
    /// known (Duet's summary, from decode times).
    audio: Vec<f64>,
    audio_gap_s: Option<f64>,
    /// Receiver: the longest audio gap that ended in each second, ms (Duet only).
    audio_gap_ms: Vec<f64>,
    /// Sender: kbit/s sent.
    send_kbps: Vec<f64>,
    /// Periods (seconds since the start) the sender spent in audio-only, if it has such a mode.
    audio_only: Vec<(f64, f64)>,
}

struct Row {
    who: &'static str,
    settle_s: Option<f64>,
    freeze_s: f64,
    audio_gap_s: f64,
    /// The longest audio gap within 5 s of the 300 kb/s cap, and of the 48 kb/s cap.
    onset_gaps_s: (f64, f64),
    utilisation: f64,
    audio_only_s: Option<f64>,
    recovery_s: Option<f64>,
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// The longest run of seconds in `from..to` where `bad` holds.
fn longest_run(values: &[f64], from: usize, to: usize, bad: impl Fn(f64) -> bool) -> f64 {
    let (mut best, mut run) = (0, 0);
    for v in values.iter().take(to).skip(from) {
        run = if bad(*v) { run + 1 } else { 0 };
        best = best.max(run);
    }
    f64::from(best)
}

fn row(who: &'static str, s: &Series, cap300: f64, cap48: f64, lift: f64, end: f64) -> Row {
    let sec = |t: f64| t as usize;
    let settle_s = (sec(cap300)..sec(cap48).saturating_sub(1))
        .find(|&i| s.fps.get(i).copied().unwrap_or(0.0) >= 10.0 && s.fps.get(i + 1).copied().unwrap_or(0.0) >= 10.0)
        .map(|i| i as f64 - cap300);
    // Seconds in audio-only are no freeze: the receiver shows a placeholder.
    let audio_only = |i: usize| s.audio_only.iter().any(|(from, to)| (sec(*from)..=sec(*to)).contains(&i));
    let fps: Vec<f64> = s.fps.iter().enumerate().map(|(i, v)| if audio_only(i) { f64::MAX } else { *v }).collect();
    let freeze_s = longest_run(&fps, 5, sec(end), |v| v < 1.0);
    // Chromium: seconds with under half of the 50 packets a second of 20 ms packets holds.
    let audio_gap_s = s.audio_gap_s.unwrap_or_else(|| longest_run(&s.audio, 5, sec(end), |v| v < 25.0));
    let gap_after = |cap: f64| {
        if s.audio_gap_ms.is_empty() {
            longest_run(&s.audio, sec(cap), sec(cap) + 5, |v| v < 25.0)
        } else {
            // A second's `stats` report the gaps that ended in the second before it.
            s.audio_gap_ms.iter().take(sec(cap) + 6).skip(sec(cap) + 1).fold(0.0, |a: f64, b| a.max(*b)) / 1000.0
        }
    };
    let onset_gaps_s = (gap_after(cap300), gap_after(cap48));
    let steady = &s.send_kbps[sec(cap48 - 10.0).min(s.send_kbps.len())..sec(cap48).min(s.send_kbps.len())];
    let utilisation = steady.iter().sum::<f64>() / steady.len().max(1) as f64 / 300.0;
    let audio_only_s = s.audio_only.iter().find(|(t, _)| *t >= cap48 && *t < lift).map(|(t, _)| t - cap48);
    let recovery_s =
        (sec(lift)..sec(end).min(s.send_kbps.len())).find(|&i| s.send_kbps[i] >= 1000.0).map(|i| i as f64 - lift);
    Row { who, settle_s, freeze_s, audio_gap_s, onset_gaps_s, utilisation, audio_only_s, recovery_s }
}

/// Applies `profile` on `net` from `t0`, in the calling thread.
fn apply(net: &Net, t0: Instant, profile: &Profile) {
    for &(at, kbit) in profile {
        if let Some(wait) = Duration::from_secs_f64(at).checked_sub(t0.elapsed()) {
            std::thread::sleep(wait);
        }
        net.cap(kbit);
    }
}

/// The per-second `stats` field of one side's events.
fn per_second(events: &[Value], secs: usize, value: impl Fn(&Value) -> f64) -> Vec<f64> {
    let mut out = vec![0.0; secs];
    for e in events.iter().filter(|e| e["event"] == "stats") {
        let i = f(&e["_t"]) as usize;
        if i < secs {
            out[i] = value(e);
        }
    }
    out
}

fn duet_call(profile: &Profile, secs: u32) -> Series {
    let net = Net::new("bd");
    let (_server, url) = server(&net);
    let t0 = Instant::now();
    let room = format!("bench-duet-{}", std::process::id());
    let video = "synthetic:1280x720@30";
    let a = client(&net.a, "10.77.1.2", &url, &room, video, secs);
    let b = client(&net.b, "10.77.2.2", &url, &room, video, secs);
    let a = std::thread::spawn(move || events(a, t0));
    let b = std::thread::spawn(move || events(b, t0));
    apply(&net, t0, profile);
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    let n = secs as usize + 1;
    let summary = b.iter().rev().find(|e| e["event"] == "summary").cloned().unwrap_or_default();
    Series {
        fps: per_second(&b, n, |e| f(&e["recv_fps"])),
        audio: vec![],
        audio_gap_s: Some(f(&summary["longest_audio_gap_ms"]) / 1000.0),
        audio_gap_ms: per_second(&b, n, |e| f(&e["audio_gap_ms"])),
        send_kbps: per_second(&a, n, |e| f(&e["video_send_kbps"]) + f(&e["audio_send_kbps"])),
        audio_only: audio_only_periods(&a, f64::from(secs)),
    }
}

/// From `audio_only` events (cause `network`): when video was off, until it came back (or `end`).
fn audio_only_periods(events: &[Value], end: f64) -> Vec<(f64, f64)> {
    let mut out = vec![];
    let mut since = None;
    for e in events.iter().filter(|e| e["event"] == "audio_only" && e["cause"] == "network") {
        match (e["on"].as_bool(), since) {
            (Some(true), None) => since = Some(f(&e["_t"])),
            (Some(false), Some(from)) => {
                out.push((from, f(&e["_t"])));
                since = None;
            }
            _ => {}
        }
    }
    out.extend(since.map(|from| (from, end)));
    out
}

fn chromium_call(profile: &Profile, secs: u32) -> Series {
    let dir = tempfile::tempdir().unwrap();
    let clip = chromium::clip(dir.path(), 1280, 720);
    let net = Net::new("bc");
    let (_server, url) = server(&net);
    let t0 = Instant::now();
    let (a, b) = chromium::pair(dir.path(), &net, &url, "bench-chromium", &clip, secs, 1000);
    apply(&net, t0, profile);
    let (a, b) = (chromium::result(a), chromium::result(b));
    let n = secs as usize + 1;
    // Per-second deltas of a running counter from the timeline.
    let deltas = |v: &Value, key: &str, scale: f64| -> Vec<f64> {
        let mut out = vec![0.0; n];
        let samples = v["timeline"].as_array().cloned().unwrap_or_default();
        for w in samples.windows(2) {
            let i = f(&w[1]["t"]) as usize;
            let dt = (f(&w[1]["t"]) - f(&w[0]["t"])).max(0.1);
            if i < n {
                out[i] = (f(&w[1][key]) - f(&w[0][key])).max(0.0) * scale / dt;
            }
        }
        out
    };
    Series {
        fps: deltas(&b, "framesDecoded", 1.0),
        audio: deltas(&b, "audioPacketsReceived", 1.0),
        audio_gap_s: None,
        audio_gap_ms: vec![],
        send_kbps: deltas(&a, "bytesSent", 8.0 / 1000.0),
        audio_only: vec![],
    }
}

/// The per-second timeline on stderr: receiver fps / sender kb/s.
fn trace(who: &str, s: &Series) {
    let cells: Vec<String> =
        s.fps.iter().zip(&s.send_kbps).enumerate().map(|(i, (f, k))| format!("{i}:{f:.0}/{k:.0}")).collect();
    eprintln!("{who} (second:fps/kbps) {}", cells.join(" "));
}

fn print(rows: &[Row], profile: &Profile) {
    println!("profile (s, kb/s): {profile:?}");
    println!(
        "| | settle after 300 kb/s | longest freeze | longest audio gap: call / 300 kb/s onset / 48 kb/s onset | utilisation at 300 kb/s | audio-only after 48 kb/s | back above 1 Mb/s after the cap |"
    );
    println!("|---|---|---|---|---|---|---|");
    let s = |v: Option<f64>| v.map_or("never".to_string(), |v| format!("{v:.0} s"));
    for r in rows {
        println!(
            "| {} | {} | {:.0} s | {:.1} / {:.1} / {:.1} s | {:.0} % | {} | {} |",
            r.who,
            s(r.settle_s),
            r.freeze_s,
            r.audio_gap_s,
            r.onset_gaps_s.0,
            r.onset_gaps_s.1,
            r.utilisation * 100.0,
            if r.who == "Chromium" { "no such mode".into() } else { s(r.audio_only_s) },
            s(r.recovery_s),
        );
    }
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    if smoke {
        // A short Duet-only run keeps the bench compiling and working under `cargo test`.
        let profile: Profile = vec![(4.0, Some(300)), (10.0, Some(48)), (14.0, None)];
        let d = duet_call(&profile, 18);
        print(&[row("Duet", &d, 4.0, 10.0, 14.0, 18.0)], &profile);
        return;
    }
    let profile: Profile = vec![(10.0, Some(300)), (40.0, Some(48)), (60.0, None)];
    let secs = 80;
    eprintln!("Duet call ({secs} s)...");
    let d = duet_call(&profile, secs);
    trace("Duet", &d);
    eprintln!("Chromium call ({secs} s)...");
    let c = chromium_call(&profile, secs);
    trace("Chromium", &c);
    print(&[row("Duet", &d, 10.0, 40.0, 60.0, 80.0), row("Chromium", &c, 10.0, 40.0, 60.0, 80.0)], &profile);
}
