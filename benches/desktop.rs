//! Desktop app benchmarks: video frames reaching the page and what they cost, RSS in a call,
//! time to first paint, installer size; each beside its anchor measured in the same run.
//!
//! `cargo bench -p duet-app --bench desktop -- --seconds 10`
//!
//! - Page frame rate: the real window under Xvfb (driven by tauri-driver) in a test call with
//!   the echo bot and a synthetic 30 fps camera: remote and preview frames drawn per second,
//!   CPU of the whole app (Rust process + WebKit web and network processes) and RSS/PSS.
//!   Anchor: headless Chromium on the Duet browser client in the same kind of call (a 30 fps
//!   Y4M camera, echoed back), counting presented remote frames, CPU and memory of all its
//!   processes.
//! - First paint: the app started directly (no WebDriver), time from `main` to the page's
//!   second animation frame (the `window painted` log line); the first launch after dropping
//!   the page cache when allowed (cold), then warm launches.
//! - Installer size: the .deb/.rpm in dist/ (`bash scripts/check-package.sh` builds them);
//!   anchor: Debian's chromium package.
//!
//! Under `cargo test` (no `--bench`) it makes a short smoke run at 360p.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use duet_core::call::{Call, CallCommand, CallConfig, Command as CallCmd};
use duet_core::media::DiscardVideoSink;
use duet_core::sources::{self, AudioSpec, VideoSpec};
use support::{APP, Display, Driver, Session, free_port, tagged_app};

const TICKS_PER_S: f64 = 100.0; // USER_HZ on Linux

/// CPU ticks and memory of a process tree.
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    ticks: u64,
    rss_kib: u64,
    pss_kib: u64,
    main_rss_kib: u64,
    main_ticks: u64,
    processes: usize,
}

fn proc_field(pid: u32, file: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
}

/// Fields after the command name in /proc/PID/stat (index 0 is the state).
fn stat_fields(pid: u32) -> Vec<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("").split_whitespace().map(|v| v.parse().unwrap_or(0)).collect()
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc").unwrap().flatten().filter_map(|e| e.file_name().to_string_lossy().parse().ok()).collect()
}

/// `root` and all its descendants.
fn tree(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> =
        all_pids().into_iter().map(|p| (p, stat_fields(p).get(1).copied().unwrap_or(0) as u32)).collect();
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(parents.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    out
}

/// Usage of the processes in `pids` (`main`'s RSS reported apart).
fn usage(pids: &[u32], main: u32) -> Usage {
    let mut u = Usage::default();
    for &pid in pids {
        let f = stat_fields(pid);
        if f.is_empty() {
            continue;
        }
        let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0); // utime, stime
        u.ticks += ticks;
        let rss = proc_field(pid, "status", "VmRSS:");
        u.rss_kib += rss;
        u.pss_kib += proc_field(pid, "smaps_rollup", "Pss:");
        if pid == main {
            u.main_rss_kib = rss;
            u.main_ticks = ticks;
        }
        u.processes += 1;
    }
    u
}

/// CPU between two samples `secs` apart, and memory at the second.
struct Cost {
    cpu_pct: f64,
    main_cpu_pct: f64,
    rss_mib: f64,
    pss_mib: f64,
    main_rss_mib: f64,
    processes: usize,
}

impl Cost {
    fn between(a: Usage, b: Usage, secs: f64) -> Cost {
        let pct = |ticks: u64| 100.0 * ticks as f64 / TICKS_PER_S / secs;
        let mib = |kib: u64| kib as f64 / 1024.0;
        Cost {
            cpu_pct: pct(b.ticks.saturating_sub(a.ticks)),
            main_cpu_pct: pct(b.main_ticks.saturating_sub(a.main_ticks)),
            rss_mib: mib(b.rss_kib),
            pss_mib: mib(b.pss_kib),
            main_rss_mib: mib(b.main_rss_kib),
            processes: b.processes,
        }
    }
}

struct PageRun {
    /// Before the call: main process RSS and total PSS, MiB.
    idle: (f64, f64),
    size: String,
    remote_fps: f64,
    local_fps: f64,
    dropped_pct: f64,
    cost: Cost,
}

/// The app in a test call at `w`x`h`: frames on the page per second and the cost.
fn page_run(display: &Display, w: u32, h: u32, warmup: u64, secs: u64) -> PageRun {
    let config = tempfile::tempdir().unwrap();
    let tag = format!("app-{}", free_port());
    let env = vec![
        ("DUET_CONFIG_DIR", config.path().display().to_string()),
        ("DUET_EMBEDDED_ADDR", format!("127.0.0.1:{}", free_port())),
        ("DUET_BIND", "127.0.0.1:0".to_string()),
        ("DUET_NO_PLAYBACK", "1".to_string()),
        ("DUET_AUDIO", "tone".to_string()),
        ("DUET_VIDEO", format!("synthetic:{w}x{h}@30")),
        ("DUET_BENCH_TAG", tag.clone()),
        ("RUST_LOG", "warn".to_string()),
    ];
    let driver = Driver::start(display, &env);
    let s = Session::new(&driver);
    std::thread::sleep(Duration::from_secs(1));
    let app = tagged_app(&tag).expect("the app process");
    let idle = usage(&tree(app), app);
    s.click("#btn-test");
    s.wait("the test call", 30, "return document.getElementById('status').dataset.status === 'connected'");
    s.wait("video", 20, "return Number(document.getElementById('remote-video').dataset.frames) > 10");
    std::thread::sleep(Duration::from_secs(warmup));
    let frames = |id: &str| s.data(id, "frames").parse::<u64>().unwrap_or(0);
    let counters = || s.exec("return window.__TAURI__.core.invoke('video_counters')");
    // The app and its WebKit processes (web, network).
    let pids = tree(app);
    let (r0, l0, c0, u0, t0) =
        (frames("remote-video"), frames("local-video"), counters(), usage(&pids, app), Instant::now());
    std::thread::sleep(Duration::from_secs(secs));
    let (r1, l1, c1, u1) = (frames("remote-video"), frames("local-video"), counters(), usage(&pids, app));
    let dt = t0.elapsed().as_secs_f64();
    let n = |v: &serde_json::Value, i: usize, k: &str| v[i][k].as_u64().unwrap_or(0);
    let offered = n(&c1, 0, "offered") - n(&c0, 0, "offered");
    let dropped = n(&c1, 0, "dropped") - n(&c0, 0, "dropped");
    let idle = (idle.main_rss_kib as f64 / 1024.0, idle.pss_kib as f64 / 1024.0);
    PageRun {
        idle,
        size: format!("{w}x{h}"),
        remote_fps: (r1 - r0) as f64 / dt,
        local_fps: (l1 - l0) as f64 / dt,
        dropped_pct: if offered > 0 { 100.0 * dropped as f64 / offered as f64 } else { 0.0 },
        cost: Cost::between(u0, u1, dt),
    }
}

/// A 2-second looping 30 fps Y4M clip of the synthetic pattern (Chromium's fake camera).
fn y4m_clip(w: u32, h: u32) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".y4m").tempfile().unwrap();
    let mut src = duet_media::SyntheticVideoSource::new(w, h, 30, duet_media::MediaClock::new()).unwrap();
    let mut out = std::io::BufWriter::new(file.as_file_mut());
    writeln!(out, "YUV4MPEG2 W{w} H{h} F30:1 Ip A1:1 C420jpeg").unwrap();
    for _ in 0..60 {
        let f = duet_media::VideoSource::next_frame(&mut src).unwrap().unwrap();
        out.write_all(b"FRAME\n").unwrap();
        out.write_all(f.data()).unwrap();
    }
    drop(out);
    file
}

/// Chromium on the browser client in a call with an echo bot at `w`x`h`.
fn chromium_run(rt: &tokio::runtime::Runtime, w: u32, h: u32, warmup: u64, secs: u64) -> Option<PageRun> {
    let server = rt.block_on(duet_app::embedded::start("127.0.0.1:0".parse().unwrap())).ok()?;
    let room = format!("anchor-{}", free_port());
    let _bot = rt.block_on(async {
        let opened = sources::open(&VideoSpec::None, &AudioSpec::None, Box::new(DiscardVideoSink)).unwrap();
        let mut cfg = CallConfig::new(server.url());
        cfg.echo = true;
        cfg.bind = "127.0.0.1:0".parse().unwrap();
        let (bot, events) = Call::start(cfg, opened.media);
        bot.send(CallCommand::Call(CallCmd::JoinRoom { code: room.clone() }));
        (bot, events)
    });
    let clip = y4m_clip(w, h);
    let http = server.url().replace("ws://", "http://").replace("/ws", "");
    let url = format!("{http}/?room={room}&video={w}x{h}");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/render-anchor.mjs");
    let mut child = Command::new("node")
        .arg(script)
        .args(["--url", &url, "--y4m", clip.path().to_str().unwrap()])
        .args(["--warmup", &warmup.to_string(), "--seconds", &secs.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next()?.ok()?;
    if !first.contains("measuring") {
        eprintln!("chromium anchor failed: {first}");
        return None;
    }
    // Every Chromium process (browser, renderer, utility, zygotes), not node itself.
    let node = child.id();
    let pids: Vec<u32> = tree(node).into_iter().filter(|p| *p != node).collect();
    let browser = pids.first().copied().unwrap_or(0);
    let (u0, t0) = (usage(&pids, browser), Instant::now());
    // Sample before the window closes, while the call runs.
    std::thread::sleep(Duration::from_secs(secs).saturating_sub(Duration::from_millis(500)));
    let u1 = usage(&pids, browser);
    let dt = t0.elapsed().as_secs_f64();
    let result: serde_json::Value = serde_json::from_str(&lines.next()?.ok()?).ok()?;
    let _ = child.wait();
    if result["ok"] != true {
        eprintln!("chromium anchor failed: {result}");
        return None;
    }
    Some(PageRun {
        idle: (f64::NAN, f64::NAN),
        size: format!("{}x{}", result["width"], result["height"]),
        remote_fps: result["presented"].as_f64().unwrap_or(0.0) / secs as f64,
        local_fps: f64::NAN,
        dropped_pct: f64::NAN,
        cost: Cost::between(u0, u1, dt),
    })
}

/// Time from `main` to the first painted frame, by the app's own log line.
fn first_paint(display: &Display) -> Option<u64> {
    let config = tempfile::tempdir().unwrap();
    let mut child = Command::new("dbus-run-session")
        .arg("--")
        .arg(APP)
        .env("DISPLAY", &display.name)
        .env("DUET_CONFIG_DIR", config.path())
        .env("DUET_EMBEDDED_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("RUST_LOG", "warn,duet_app=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut found = None;
    for line in BufReader::new(child.stderr.take().unwrap()).lines().map_while(Result::ok) {
        if let Some(rest) = line.split("first_paint_ms=").nth(1) {
            found = rest.split_whitespace().next().and_then(|v| v.parse().ok());
            break;
        }
        if Instant::now() > deadline {
            break;
        }
    }
    let _ = Command::new("pkill").args(["-P", &child.id().to_string()]).status();
    let _ = child.kill();
    let _ = child.wait();
    found
}

fn drop_page_cache() -> bool {
    let _ = Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

fn file_size_mib(dir: &Path, prefix: &str, suffix: &str) -> Option<(String, f64)> {
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let name = e.file_name().to_string_lossy().to_string();
        (name.starts_with(prefix) && name.ends_with(suffix))
            .then(|| (name, e.metadata().map(|m| m.len()).unwrap_or(0) as f64 / 1024.0 / 1024.0))
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let flag = |name: &str, dflt: u64| {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(dflt)
    };
    let secs = flag("--seconds", if full { 10 } else { 2 });
    let warmup = if full { 3 } else { 1 };
    let sizes: &[(u32, u32)] = if full { &[(1280, 720), (640, 360)] } else { &[(640, 360)] };
    let display = Display::start();
    let rt = tokio::runtime::Runtime::new().unwrap();

    println!("# Video to the page (test call, echo bot, synthetic 30 fps camera), {secs} s after {warmup} s warm-up");
    println!(
        "| who | size | remote fps on page | preview fps | frames dropped before the page | CPU, all processes (% of one core) | of which the main process | RSS total MiB | PSS total MiB | main process RSS MiB | processes |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut seen = HashSet::new();
    for &(w, h) in sizes {
        let r = page_run(&display, w, h, warmup, secs);
        println!(
            "| Duet app | {} | {:.1} | {:.1} | {:.1} % | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
            r.size,
            r.remote_fps,
            r.local_fps,
            r.dropped_pct,
            r.cost.cpu_pct,
            r.cost.main_cpu_pct,
            r.cost.rss_mib,
            r.cost.pss_mib,
            r.cost.main_rss_mib,
            r.cost.processes
        );
        println!("| Duet app before the call | – | – | – | – | – | – | – | {:.0} | {:.0} | – |", r.idle.1, r.idle.0);
        assert!(r.remote_fps > 0.0, "no frames reached the page");
        if full || seen.insert((w, h)) {
            match chromium_run(&rt, w, h, warmup, secs) {
                Some(c) => println!(
                    "| Chromium (anchor) | {} | {:.1} | – | – | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
                    c.size,
                    c.remote_fps,
                    c.cost.cpu_pct,
                    c.cost.main_cpu_pct,
                    c.cost.rss_mib,
                    c.cost.pss_mib,
                    c.cost.main_rss_mib,
                    c.cost.processes
                ),
                None => println!("| Chromium (anchor) | {w}x{h} | failed to run | | | | | | | | |"),
            }
        }
    }

    println!("\n# Time to first paint (main() to the page's second animation frame)");
    let cold = drop_page_cache();
    let runs = if full { 5 } else { 1 };
    let times: Vec<u64> = (0..runs).filter_map(|_| first_paint(&display)).collect();
    assert!(!times.is_empty(), "the app never reported its first paint");
    let mut sorted = times.clone();
    sorted.sort_unstable();
    println!(
        "first launch ({}): {} ms; all launches: {:?} ms; median {} ms",
        if cold { "page cache dropped" } else { "page cache could not be dropped: warm" },
        times[0],
        times,
        sorted[sorted.len() / 2]
    );

    println!("\n# Installer size");
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("dist");
    for (prefix, suffix) in [("duet_", ".deb"), ("duet-", ".rpm")] {
        match file_size_mib(&dist, prefix, suffix) {
            Some((name, mib)) => println!("{name}: {mib:.1} MiB"),
            None => println!("{prefix}*{suffix}: not built (run `bash scripts/check-package.sh`)"),
        }
    }
    let chromium_size = Command::new("apt-cache")
        .args(["show", "--no-all-versions", "chromium"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("Size: ").and_then(|v| v.trim().parse::<f64>().ok())));
    if let Some(bytes) = chromium_size {
        println!("anchor: Debian's chromium .deb: {:.1} MiB", bytes / 1024.0 / 1024.0);
    }
}
