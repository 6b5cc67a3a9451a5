//! Two headless Chromiums on the served browser client, each inside a client namespace of a
//! [`Net`], sampling their stats (see `tests/browser/peer.mjs --timeline`). Shared by the
//! capped-link and outage benchmarks.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use duet_media::{FrameRate, MediaClock, SyntheticVideoSource, VideoSink, VideoSource, Y4mWriter};
use serde_json::Value;

use crate::netns::Net;

/// A 30 fps Y4M clip of the moving test pattern, for Chromium's fake camera.
pub fn clip(dir: &Path, width: u32, height: u32) -> PathBuf {
    let path = dir.join(format!("clip-{width}x{height}.y4m"));
    let mut source = SyntheticVideoSource::new(width, height, 30, MediaClock::new()).unwrap();
    let mut y4m = Y4mWriter::create(&path, width, height, FrameRate::from_fps(30)).unwrap();
    for _ in 0..90 {
        y4m.render(source.next_frame().unwrap().unwrap()).unwrap();
    }
    y4m.finish().unwrap();
    path
}

/// Starts a Chromium peer in namespace `ns` joining `room` on the server at `http` for `secs`,
/// sampling every `sample_ms`.
pub fn peer(dir: &Path, ns: &str, http: &str, room: &str, clip: &Path, secs: u32, sample_ms: u32) -> Child {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser/peer.mjs");
    // Chromium runs inside the client's namespace through a wrapper.
    let wrapper = dir.join(format!("chromium-{ns}"));
    std::fs::write(&wrapper, format!("#!/bin/sh\nexec ip netns exec {ns} /usr/lib/chromium/chromium \"$@\"\n"))
        .unwrap();
    Command::new("chmod").arg("+x").arg(&wrapper).status().unwrap();
    Command::new("node")
        .arg(&script)
        .args(["--url", &format!("{http}/?room={room}"), "--seconds", &secs.to_string(), "--timeline"])
        .args(["--sample-ms", &sample_ms.to_string()])
        .args(["--chromium-arg", &format!("--unsafely-treat-insecure-origin-as-secure={http}")])
        .args(["--chromium-arg", &format!("--use-file-for-fake-video-capture={}", clip.display())])
        .env("CHROMIUM", &wrapper)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("node must be installed (scripts/test.sh installs it)")
}

/// What a peer printed (it must have connected).
pub fn result(child: Child) -> Value {
    let out = child.wait_with_output().unwrap();
    let v: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(v["connected"], true, "{v}");
    v
}

/// The HTTP base of a server WebSocket URL.
pub fn http_of(ws_url: &str) -> String {
    ws_url.replace("ws://", "http://").replace("/ws", "")
}

/// Both Chromium peers of a call in `net`'s client namespaces.
pub fn pair(dir: &Path, net: &Net, url: &str, room: &str, clip: &Path, secs: u32, sample_ms: u32) -> (Child, Child) {
    let http = http_of(url);
    (peer(dir, &net.a, &http, room, clip, secs, sample_ms), peer(dir, &net.b, &http, room, clip, secs, sample_ms))
}
