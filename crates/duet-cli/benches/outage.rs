//! Link-outage benchmark: Duet calls (two `duet call` processes) and Chromium calls (two
//! Chromiums on the browser client) in network namespaces, client `a`'s link cut (every packet
//! dropped in the router, signaling too) for 3, 10 and 20 s mid-call, each beside the other in
//! the same run. Needs root, Node.js with playwright-core in `tests/browser`, and Chromium.
//!
//! `cargo bench -p duet-cli --bench outage` (about 4 minutes). Prints, for each outage, how
//! long after the link returned each receiver had media again:
//! - Duet: the longest time without any decoded partner media (`longest_media_gap_ms`, decode
//!   to decode) minus the outage;
//! - Chromium: the first 100 ms sample after the link returned in which more audio packets
//!   had arrived (so within about 0.1 s).
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

/// The link goes down this long after the start.
const DOWN_AT: f64 = 8.0;
/// And the call goes on this long after it returns.
const AFTER: f64 = 10.0;

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// Cuts `a`'s link at [`DOWN_AT`] for `outage` seconds (from `t0`); returns when it is back,
/// in seconds since `t0`.
fn cut(net: &Net, t0: Instant, outage: f64) -> f64 {
    std::thread::sleep(Duration::from_secs_f64(DOWN_AT).saturating_sub(t0.elapsed()));
    net.outage(true);
    std::thread::sleep(Duration::from_secs_f64(outage));
    net.outage(false);
    t0.elapsed().as_secs_f64()
}

/// Seconds after the link returned until each side (a, b) had partner media again.
fn duet(outage: f64) -> [f64; 2] {
    let net = Net::new("od");
    let (_server, url) = server(&net);
    let t0 = Instant::now();
    let room = format!("bench-outage-{}", std::process::id());
    let secs = (DOWN_AT + outage + AFTER) as u32;
    let video = "synthetic:640x360@30";
    let a = client(&net.a, "10.77.1.2", &url, &room, video, secs);
    let b = client(&net.b, "10.77.2.2", &url, &room, video, secs);
    let a = std::thread::spawn(move || events(a, t0));
    let b = std::thread::spawn(move || events(b, t0));
    cut(&net, t0, outage);
    let back = |events: Vec<Value>| {
        let summary = events.iter().rev().find(|e| e["event"] == "summary").cloned().unwrap_or_default();
        f(&summary["longest_media_gap_ms"]) / 1000.0 - outage
    };
    [back(a.join().unwrap()), back(b.join().unwrap())]
}

fn chromium(outage: f64) -> [f64; 2] {
    let dir = tempfile::tempdir().unwrap();
    let clip = chromium::clip(dir.path(), 640, 360);
    let net = Net::new("oc");
    let (_server, url) = server(&net);
    let t0 = Instant::now();
    let secs = (DOWN_AT + outage + AFTER) as u32;
    let (a, b) = chromium::pair(dir.path(), &net, &url, "bench-outage", &clip, secs, 100);
    let returned = cut(&net, t0, outage);
    let back = |v: Value| {
        let samples = v["timeline"].as_array().cloned().unwrap_or_default();
        samples
            .windows(2)
            .find(|w| f(&w[0]["t"]) >= returned && f(&w[1]["audioPacketsReceived"]) > f(&w[0]["audioPacketsReceived"]))
            .map_or(f64::INFINITY, |w| f(&w[1]["t"]) - returned)
    };
    [back(chromium::result(a)), back(chromium::result(b))]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        let [a, b] = duet(3.0);
        println!("smoke: after a 3 s outage Duet had media back {a:.2} / {b:.2} s after the link returned");
        return;
    }
    println!("| outage | Duet a / b: media back after the link returned | Chromium a / b |");
    println!("|---|---|---|");
    for outage in [3.0, 10.0, 20.0] {
        let [da, db] = duet(outage);
        let [ca, cb] = chromium(outage);
        println!("| {outage:.0} s | {da:.2} / {db:.2} s | {ca:.2} / {cb:.2} s |");
    }
}
