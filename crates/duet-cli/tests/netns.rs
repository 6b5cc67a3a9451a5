//! Calls over capped links: two `duet call` processes in their own network namespaces behind a
//! router namespace that runs `duet-server`, with `tc tbf` caps on the router's links toward
//! each client, changed mid-call. Needs root (CI runs as root); namespaces and addresses
//! (10.77.x.y) are made here and torn down on exit, also on failure.
//!
//! Topology: `a` 10.77.1.2 <-veth-> `r` 10.77.1.1 / 10.77.2.1 <-veth-> `b` 10.77.2.2.

#![allow(clippy::unwrap_used, missing_docs)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

const DUET: &str = env!("CARGO_BIN_EXE_duet");

/// One scenario at a time: each runs two media processes on a 2-core machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Three namespaces joined by two veth pairs; deleted when dropped.
struct Net {
    a: String,
    r: String,
    b: String,
}

impl Net {
    fn new(tag: &str) -> Self {
        let id = format!("{}{}", tag, std::process::id() % 10000);
        let net = Net { a: format!("da{id}"), r: format!("dr{id}"), b: format!("db{id}") };
        for ns in [&net.a, &net.r, &net.b] {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        for (side, ns, subnet) in [("a", &net.a, 1), ("b", &net.b, 2)] {
            let (outer, inner) = (format!("r{side}{id}"), format!("{side}r{id}"));
            sh(&["ip", "link", "add", &outer, "netns", &net.r, "type", "veth", "peer", "name", &inner, "netns", ns]);
            sh(&["ip", "-n", &net.r, "addr", "add", &format!("10.77.{subnet}.1/24"), "dev", &outer]);
            sh(&["ip", "-n", ns, "addr", "add", &format!("10.77.{subnet}.2/24"), "dev", &inner]);
            sh(&["ip", "-n", &net.r, "link", "set", &outer, "up"]);
            sh(&["ip", "-n", ns, "link", "set", &inner, "up"]);
            sh(&["ip", "-n", ns, "route", "add", "default", "via", &format!("10.77.{subnet}.1")]);
            // Shaping must see real packet sizes.
            for (n, dev) in [(&net.r, &outer), (ns, &inner)] {
                let _ = Command::new("ip")
                    .args(["netns", "exec", n, "ethtool", "-K", dev])
                    .args(["tso", "off", "gso", "off", "gro", "off"])
                    .output();
            }
        }
        sh(&["ip", "netns", "exec", &net.r, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        net
    }

    /// Caps both of the router's links toward the clients at `kbit` kb/s (`None`: lifted).
    fn cap(&self, kbit: Option<u32>) {
        let id = &self.r[2..];
        for dev in [format!("ra{id}"), format!("rb{id}")] {
            let _ =
                Command::new("ip").args(["netns", "exec", &self.r, "tc", "qdisc", "del", "dev", &dev, "root"]).output();
            if let Some(k) = kbit {
                let burst = if k < 100 { "3000" } else { "6kb" };
                sh(&[
                    "ip",
                    "netns",
                    "exec",
                    &self.r,
                    "tc",
                    "qdisc",
                    "add",
                    "dev",
                    &dev,
                    "root",
                    "tbf",
                    "rate",
                    &format!("{k}kbit"),
                    "burst",
                    burst,
                    "latency",
                    "100ms",
                ]);
            }
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in [&self.a, &self.r, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server_bin() -> PathBuf {
    let bin = PathBuf::from(DUET).with_file_name("duet-server");
    assert!(bin.exists(), "{} is missing: build the workspace (cargo build -p duet-server)", bin.display());
    bin
}

/// Starts `duet-server` in the router namespace; returns it and its WebSocket URL.
fn server(net: &Net) -> (Proc, String) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &net.r])
        .arg(server_bin())
        .args(["--listen", "10.77.1.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.split_whitespace().find(|w| w.starts_with("ws://")).unwrap_or_else(|| panic!("{line}")).to_string();
    (Proc(child), url)
}

/// Starts a `duet call` in namespace `ns` bound to `ip`, joining `room` for `secs`.
fn client(ns: &str, ip: &str, url: &str, room: &str, secs: u32) -> Proc {
    let child = Command::new("ip")
        .args(["netns", "exec", ns, DUET, "call", "--json", "--server", url, "--room", room])
        .args(["--bind", &format!("{ip}:0"), "--video", "synthetic:640x360@30", "--duration", &secs.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Proc(child)
}

/// Waits for the process and parses its JSON lines (with the time each event was printed,
/// seconds since `t0`, as `_t`).
fn events(mut p: Proc, t0: Instant) -> Vec<Value> {
    let stdout = p.0.stdout.take().unwrap();
    let mut stderr = p.0.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let mut out = Vec::new();
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if let Ok(mut v) = serde_json::from_str::<Value>(&line) {
            v["_t"] = t0.elapsed().as_secs_f64().into();
            out.push(v);
        }
    }
    let _ = p.0.wait();
    let errors = errors.join().unwrap_or_default();
    if !out.iter().any(|e| e["event"] == "summary" && e["connected"] == true) {
        eprintln!("duet call printed on stderr:\n{errors}");
    }
    out
}

/// Runs a call of `secs` between two namespaced clients while `schedule` (seconds since the
/// start, cap) is applied; returns both sides' events.
fn call(tag: &str, secs: u32, schedule: &[(f64, Option<u32>)]) -> (Vec<Value>, Vec<Value>) {
    let net = Net::new(tag);
    let (_server, url) = server(&net);
    let t0 = Instant::now();
    let room = format!("netns-{tag}-{}", std::process::id());
    let a = client(&net.a, "10.77.1.2", &url, &room, secs);
    let b = client(&net.b, "10.77.2.2", &url, &room, secs);
    let a = std::thread::spawn(move || events(a, t0));
    let b = std::thread::spawn(move || events(b, t0));
    for &(at, kbit) in schedule {
        if let Some(wait) = Duration::from_secs_f64(at).checked_sub(t0.elapsed()) {
            std::thread::sleep(wait);
        }
        net.cap(kbit);
    }
    (a.join().unwrap(), b.join().unwrap())
}

fn summary(events: &[Value]) -> &Value {
    events.iter().rev().find(|e| e["event"] == "summary").unwrap_or_else(|| panic!("no summary: {events:?}"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// Mean of `field` over `stats` events printed within [from, to) seconds.
fn mean(events: &[Value], field: &str, from: f64, to: f64) -> f64 {
    let v: Vec<f64> = events
        .iter()
        .filter(|e| e["event"] == "stats" && (from..to).contains(&f(&e["_t"])))
        .map(|e| f(&e[field]))
        .collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn timeline(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "rung" || e["event"] == "audio_only")
        .map(|e| format!("{:.1}s {} {} {}", f(&e["_t"]), e["rung"], e["on"], e["cause"]))
        .collect()
}

#[test]
fn a_300_kbps_cap_keeps_video_and_all_the_audio_and_the_call_recovers_when_it_lifts() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (cap_on, cap_off) = (6.0, 31.0);
    let (a, b) = call("c", 45, &[(cap_on, Some(300)), (cap_off, None)]);
    let (sa, sb) = (summary(&a), summary(&b));
    assert_eq!(sa["connected"], true, "{sa}");
    // The sender fits the cap: what it sends at steady state is under it.
    let sent = mean(&a, "video_send_kbps", cap_on + 6.0, cap_off) + mean(&a, "audio_send_kbps", cap_on + 6.0, cap_off);
    assert!(sent <= 300.0, "sending {sent:.0} kb/s into 300: {:?}", timeline(&a));
    // A rung that fits was chosen, and video keeps arriving.
    let fits = a.iter().any(|e| {
        e["event"] == "rung"
            && (cap_on..cap_on + 6.0).contains(&f(&e["_t"]))
            && ["360p15", "180p30", "180p15"].contains(&e["rung"].as_str().unwrap_or(""))
    });
    assert!(fits, "no rung for 300 kb/s: {:?}", timeline(&a));
    let fps = mean(&b, "recv_fps", cap_on + 6.0, cap_off);
    eprintln!("under 300 kb/s the partner decodes {fps:.1} fps; {:?}", timeline(&a));
    assert!(fps >= 8.0, "partner decodes {fps:.1} fps under the cap: {:?}", timeline(&a));
    // Audio first: (almost) every audio frame reaches the partner (it was 11 % before).
    let (got, sent) = (f(&sb["audio_frames_decoded"]), f(&sa["audio_frames_sent"]));
    assert!(got >= sent * 0.95, "partner decoded {got} of {sent} audio frames");
    // No standing queue: the median capture-to-decode latency stays well under a second.
    assert!(f(&sb["latency_ms_p50"]) < 400.0, "{sb}");
    // After the cap is lifted the sender climbs back to the top rung this source has.
    let back = a.iter().find(|e| e["event"] == "rung" && f(&e["_t"]) > cap_off && e["rung"] == "360p30");
    eprintln!("back at 360p30 {:?} s after the cap", back.map(|e| f(&e["_t"]) - cap_off));
    assert!(back.is_some(), "not back at 360p30 after the cap: {:?}", timeline(&a));
    for s in [sa, sb] {
        for k in ["rung_changes", "audio_only_ms", "longest_video_freeze_ms", "longest_audio_gap_ms", "mean_send_kbps"]
        {
            assert!(s.get(k).is_some(), "summary lacks {k}: {s}");
        }
    }
}

#[test]
fn a_48_kbps_cap_falls_back_to_audio_only_both_ways_and_video_comes_back() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (cap_on, cap_off) = (6.0, 26.0);
    let (a, b) = call("d", 45, &[(cap_on, Some(48)), (cap_off, None)]);
    let (sa, sb) = (summary(&a), summary(&b));
    assert_eq!(sa["connected"], true, "{sa}");
    for (me, partner, name) in [(&a, &b, "a"), (&b, &a, "b")] {
        let on = me
            .iter()
            .find(|e| e["event"] == "audio_only" && e["on"] == true && e["cause"] == "network")
            .map(|e| f(&e["_t"]));
        let on = on.unwrap_or_else(|| panic!("{name} never went audio-only: {:?}", timeline(me)));
        assert!((cap_on..cap_on + 5.0).contains(&on), "{name} audio-only at {on:.1}s: {:?}", timeline(me));
        // The partner is told, with the cause.
        assert!(
            partner.iter().any(|e| e["event"] == "audio_only" && e["on"] == true && e["cause"] == "partner_network"),
            "{name}'s partner was not told"
        );
        // Video comes back by itself once the link allows it.
        let off = me.iter().any(|e| e["event"] == "audio_only" && e["on"] == false && f(&e["_t"]) > cap_off);
        assert!(off, "{name} stayed audio-only after the cap: {:?}", timeline(me));
    }
    // Audio went on through the cap.
    let (got, sent) = (f(&sb["audio_frames_decoded"]), f(&sa["audio_frames_sent"]));
    assert!(got >= sent * 0.85, "partner decoded {got} of {sent} audio frames");
    assert!(f(&sa["audio_only_ms"]) >= 5000.0, "{sa}");
}
