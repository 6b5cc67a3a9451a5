//! Chromium's own audio processing as the anchor: Debian's Chromium, headless, captures a fake
//! microphone (a WAV file) through `getUserMedia` with its processing on or off, while an
//! `<audio>` element plays the far end, and posts the processed track back as 48 kHz samples.
//!
//! The page and the files are served from a small HTTP server on 127.0.0.1 run by the benchmark.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const PAGE: &str = r#"<!doctype html><html><body><script>
const post = (path, body) => fetch(path, {method: "POST", body});
const log = (m) => post("/log", String(m));
(async () => {
  try {
    const q = new URLSearchParams(location.search);
    const on = q.get("processing") === "1";
    const ctx = new AudioContext({sampleRate: 48000});
    await ctx.audioWorklet.addModule("/worklet.js");
    if (q.get("play") === "1") {
      const far = new Audio("/far.wav");
      await far.play();
    }
    const stream = await navigator.mediaDevices.getUserMedia({audio: {
      echoCancellation: on, noiseSuppression: on, autoGainControl: on, channelCount: 1}});
    log("track " + JSON.stringify(stream.getAudioTracks()[0].getSettings()));
    const source = ctx.createMediaStreamSource(stream);
    const recorder = new AudioWorkletNode(ctx, "recorder");
    const mute = ctx.createGain();
    mute.gain.value = 0;
    source.connect(recorder); recorder.connect(mute); mute.connect(ctx.destination);
    const chunks = [];
    recorder.port.onmessage = (e) => chunks.push(e.data);
    await new Promise((r) => setTimeout(r, Number(q.get("ms"))));
    const all = new Float32Array(chunks.reduce((n, c) => n + c.length, 0));
    let at = 0;
    for (const c of chunks) { all.set(c, at); at += c.length; }
    await post("/result", all.buffer);
  } catch (e) {
    await log("error " + e);
    await post("/result", new ArrayBuffer(0));
  }
})();
</script></body></html>"#;

const WORKLET: &str = r#"class Recorder extends AudioWorkletProcessor {
  process(inputs) {
    const channel = inputs[0][0];
    if (channel) this.port.postMessage(new Float32Array(channel));
    return true;
  }
}
registerProcessor("recorder", Recorder);"#;

/// Debian's Chromium, if installed.
pub fn find() -> Option<PathBuf> {
    ["/usr/lib/chromium/chromium", "/usr/bin/chromium"].iter().map(PathBuf::from).find(|p| p.exists())
}

/// What the page posted back.
enum Posted {
    Log(String),
    Result(Vec<u8>),
}

/// One capture: `far` (if any) playing through an `<audio>` element, `mic` as Chromium's fake
/// microphone, Chromium's echo cancellation, noise suppression and gain control all on or all
/// off; `ms` of the captured track as 48 kHz samples (1.0 = full scale), and the page's log.
pub fn capture(
    chromium: &Path,
    dir: &Path,
    far: Option<&Path>,
    mic: &Path,
    processing: bool,
    ms: u64,
) -> Result<(Vec<f32>, Vec<String>), String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let far_bytes = match far {
        Some(path) => std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?,
        None => Vec::new(),
    };
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (sender, far_bytes) = (sender.clone(), far_bytes.clone());
            std::thread::spawn(move || serve(stream, &far_bytes, &sender));
        }
    });
    let profile = dir.join(format!("profile-{port}"));
    let url = format!(
        "http://127.0.0.1:{port}/?processing={}&play={}&ms={ms}",
        u8::from(processing),
        u8::from(far.is_some())
    );
    let mut child = Command::new(chromium)
        .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"])
        .args(["--disable-background-networking", "--disable-component-update"])
        .args(["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"])
        .arg("--autoplay-policy=no-user-gesture-required")
        .arg(format!("--use-file-for-fake-audio-capture={}", mic.display()))
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", chromium.display()))?;
    let deadline = std::time::Instant::now() + Duration::from_millis(ms) + Duration::from_secs(30);
    let mut log = Vec::new();
    let result = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match receiver.recv_timeout(left) {
            Ok(Posted::Log(line)) => log.push(line),
            Ok(Posted::Result(bytes)) => break Ok(bytes),
            Err(_) => break Err(format!("no result from Chromium within {} s; page log: {log:?}", left.as_secs())),
        }
    };
    stop(&mut child);
    // Best effort: the profile is scratch.
    let _ = std::fs::remove_dir_all(&profile);
    let bytes = result?;
    if bytes.is_empty() {
        return Err(format!("the page failed: {log:?}"));
    }
    let samples = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    Ok((samples, log))
}

/// Ends the Chromium this benchmark started (by its process id), politely first.
fn stop(child: &mut Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    for _ in 0..50 {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Answers one HTTP request: the page, the worklet, the far end, or a post from the page.
fn serve(stream: TcpStream, far: &[u8], posted: &mpsc::Sender<Posted>) {
    let Ok(mut writer) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/").split('?').next().unwrap_or("/");
    let (status, kind, content): (&str, &str, &[u8]) = match (request.starts_with("POST"), path) {
        (false, "/") => ("200 OK", "text/html", PAGE.as_bytes()),
        (false, "/worklet.js") => ("200 OK", "text/javascript", WORKLET.as_bytes()),
        (false, "/far.wav") if !far.is_empty() => ("200 OK", "audio/wav", far),
        (true, "/log") => {
            let _ = posted.send(Posted::Log(String::from_utf8_lossy(&body).into_owned()));
            ("200 OK", "text/plain", b"")
        }
        (true, "/result") => {
            let _ = posted.send(Posted::Result(std::mem::take(&mut body)));
            ("200 OK", "text/plain", b"")
        }
        _ => ("404 Not Found", "text/plain", b""),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        content.len()
    );
    let _ = writer.write_all(head.as_bytes()).and_then(|()| writer.write_all(content));
}
