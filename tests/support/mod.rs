//! Driving the real desktop window: Xvfb, `tauri-driver` + WebKitWebDriver, and a small
//! blocking W3C WebDriver client (a handful of endpoints over plain HTTP/1.1).
#![allow(dead_code, missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The app binary built by cargo for these tests.
pub const APP: &str = env!("CARGO_BIN_EXE_duet-app");

/// A free loopback port (racy, but fine for tests on one machine).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Where tests leave screenshots.
pub fn artifacts_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The running `duet-app` whose environment holds `DUET_BENCH_TAG=tag` (launched through
/// WebDriver, so not our child).
pub fn tagged_app(tag: &str) -> Option<u32> {
    let needle = format!("DUET_BENCH_TAG={tag}");
    std::fs::read_dir("/proc").ok()?.flatten().filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok()).find(
        |p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "duet-app")
                && std::fs::read(format!("/proc/{p}/environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
        },
    )
}

/// Asks the window titled `title` to close as a window manager would (WM_DELETE_WINDOW).
pub fn close_window(display: &Display, title: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/close-window.py");
    let status = Command::new("/usr/bin/python3")
        .arg(script)
        .arg(title)
        .env("DISPLAY", &display.name)
        .status()
        .expect("python3-xlib is installed (scripts/test.sh installs it)");
    assert!(status.success(), "no window titled {title}");
}

/// Whether a window titled `title` is mapped (shown).
pub fn window_shown(display: &Display, title: &str) -> bool {
    let out = Command::new("xwininfo").args(["-display", &display.name, "-name", title]).output().expect("xwininfo");
    String::from_utf8_lossy(&out.stdout).contains("Map State: IsViewable")
}

/// A child process killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child process leading its own process group; the whole group (tauri-driver,
/// WebKitWebDriver, the app, its D-Bus daemon) is stopped on drop.
pub struct Group(pub Child);

impl Drop for Group {
    fn drop(&mut self) {
        let pgid = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-TERM", "--", &pgid]).stderr(Stdio::null()).status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && self.0.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &pgid]).stderr(Stdio::null()).status();
        let _ = self.0.wait();
    }
}

/// A virtual X display.
pub struct Display {
    _xvfb: Proc,
    pub name: String,
}

impl Display {
    pub fn start() -> Display {
        let mut child = Command::new("Xvfb")
            .args(["-displayfd", "1", "-screen", "0", "1280x800x24", "-nolisten", "tcp"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb is installed (scripts/test.sh installs it)");
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut line).unwrap();
        // Keep reading: a closed pipe would kill Xvfb with SIGPIPE on its next message.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let name = format!(":{}", line.trim());
        Display { _xvfb: Proc(child), name }
    }

    /// A screenshot of the whole screen (what a person would see).
    pub fn screenshot(&self, path: &Path) {
        let status = Command::new("import")
            .args(["-display", &self.name, "-window", "root", path.to_str().unwrap()])
            .status()
            .expect("ImageMagick is installed");
        assert!(status.success());
    }
}

fn tauri_driver() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_default();
    let cargo_bin = Path::new(&home).join(".cargo/bin/tauri-driver");
    if cargo_bin.exists() { cargo_bin } else { PathBuf::from("tauri-driver") }
}

/// `tauri-driver` on its own D-Bus session, launching the app with `env`.
pub struct Driver {
    _proc: Group,
    pub port: u16,
}

impl Driver {
    pub fn start(display: &Display, env: &[(&str, String)]) -> Driver {
        let port = free_port();
        let native = free_port();
        let mut cmd = Command::new("dbus-run-session");
        cmd.arg("--")
            .arg(tauri_driver())
            .args(["--port", &port.to_string(), "--native-port", &native.to_string()])
            .args(["--native-driver", "/usr/bin/WebKitWebDriver"])
            .env("DISPLAY", &display.name)
            .env("RUST_LOG", "warn,duet_app=info")
            .env("WEBKIT_DISABLE_DMABUF_RENDERER", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(artifacts_dir().join(format!("app-{port}.log"))).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let proc = Group(cmd.spawn().expect("dbus-run-session and tauri-driver are installed"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tauri-driver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Driver { _proc: proc, port }
    }
}

/// A minimal HTTP/1.1 exchange with a JSON body. tauri-driver 2.1 sometimes closes a request
/// without an answer when its pooled connection to WebKitWebDriver went stale (nothing was
/// forwarded then), so an empty reply is retried.
fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> Value {
    for _ in 0..4 {
        if let Some(v) = http_once(port, method, path, body) {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("tauri-driver gave no answer to {method} {path}, 4 times");
}

fn http_once(port: u16, method: &str, path: &str, body: Option<&Value>) -> Option<Value> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    if raw.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let payload =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(rest) } else { rest.to_string() };
    Some(
        serde_json::from_str(&payload)
            .unwrap_or_else(|e| panic!("bad WebDriver reply to {method} {path}: {e}: {text}")),
    )
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}

/// `GET path` on a local HTTP server, the body as text.
pub fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One WebDriver session: the app is running while it lives.
pub struct Session {
    port: u16,
    id: String,
}

impl Session {
    pub fn new(driver: &Driver) -> Session {
        let caps = json!({"capabilities": {"alwaysMatch": {"tauri:options": {"application": APP}}}});
        let reply = http(driver.port, "POST", "/session", Some(&caps));
        let id = reply["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {reply}")).to_string();
        let s = Session { port: driver.port, id };
        s.wait("the page to be ready", 30, "return document.body.dataset.ready === 'true'");
        s
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let reply = http(self.port, method, &format!("/session/{}{path}", self.id), body.as_ref());
        if let Some(err) = reply["value"].get("error") {
            panic!("WebDriver {method} {path}: {err}: {}", reply["value"]["message"]);
        }
        reply["value"].clone()
    }

    /// Runs `script` (a function body) in the page.
    pub fn exec(&self, script: &str) -> Value {
        self.cmd("POST", "/execute/sync", Some(json!({"script": script, "args": []})))
    }

    /// Waits until `script` returns true.
    pub fn wait(&self, what: &str, secs: u64, script: &str) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if self.exec(script) == Value::Bool(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {secs} s waiting for {what}; status: {}",
                self.status()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn element(&self, css: &str) -> String {
        let v = self.cmd("POST", "/element", Some(json!({"using": "css selector", "value": css})));
        v[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {v}")).to_string()
    }

    /// Clicks like a user.
    pub fn click(&self, css: &str) {
        let id = self.element(css);
        self.cmd("POST", &format!("/element/{id}/click"), Some(json!({})));
    }

    /// Types into a field (keys, including WebDriver key codes such as `\u{E009}` for Control).
    pub fn type_text(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.cmd("POST", &format!("/element/{id}/value"), Some(json!({"text": text})));
    }

    /// Replaces a field's content.
    pub fn fill(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.cmd("POST", &format!("/element/{id}/clear"), Some(json!({})));
        self.type_text(css, text);
    }

    /// The status pill's state.
    pub fn status(&self) -> String {
        self.exec("return document.getElementById('status').dataset.status + ' / ' + document.getElementById('status').textContent")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// A data attribute of an element, as a string.
    pub fn data(&self, id: &str, key: &str) -> String {
        self.exec(&format!("return document.getElementById('{id}').dataset.{key} || ''"))
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The text of an element.
    pub fn text(&self, css: &str) -> String {
        self.exec(&format!("return (document.querySelector({css:?}) || {{}}).textContent || ''"))
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| http(self.port, "DELETE", &format!("/session/{}", self.id), None));
    }
}
