//! Shared by the end-to-end and browser tests: an in-process server and real `duet` runs.
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::process::Stdio;

use duet_server::{Server, ServerConfig};
use serde_json::Value;
use tokio::process::Command;
use tokio::sync::{Semaphore, SemaphorePermit};

/// Calls (two media processes each) running at once: more starves a 2-core machine and turns
/// timing assertions into noise.
static CALLS: Semaphore = Semaphore::const_new(2);

/// Waits for a call slot; hold it for the whole test.
pub async fn call_slot() -> SemaphorePermit<'static> {
    CALLS.acquire().await.unwrap()
}

pub const DUET: &str = env!("CARGO_BIN_EXE_duet");

pub async fn server() -> SocketAddr {
    let cfg = ServerConfig { listen: "127.0.0.1:0".parse().unwrap(), ..ServerConfig::default() };
    let server = Server::bind(cfg).await.unwrap();
    let addr = server.local_addr();
    tokio::spawn(server.run(std::future::pending()));
    addr
}

/// What one `duet` process printed.
pub struct Run {
    pub code: i32,
    pub events: Vec<Value>,
    pub stderr: String,
}

impl Run {
    pub fn summary(&self) -> &Value {
        self.events
            .iter()
            .rev()
            .find(|e| e["event"] == "summary")
            .unwrap_or_else(|| panic!("no summary: {}", self.stderr))
    }

    pub fn count(&self, event: &str) -> usize {
        self.events.iter().filter(|e| e["event"] == event).count()
    }
}

pub async fn duet(args: Vec<String>) -> Run {
    let out = Command::new(DUET)
        .args(&args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let events = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    Run { code: out.status.code().unwrap_or(-1), events, stderr: String::from_utf8_lossy(&out.stderr).into() }
}

pub fn call_args(addr: SocketAddr, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ["call", "--server", &format!("ws://{addr}/ws"), "--bind", "127.0.0.1:0", "--json"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

pub fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// GET a JSON endpoint of the server over plain HTTP/1.1.
pub async fn http_get_json(addr: SocketAddr, path: &str) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    serde_json::from_str(buf.split_once("\r\n\r\n").unwrap().1).unwrap()
}

/// A TCP relay in front of the server whose live connections can be cut at once, like a
/// network blip under the signaling socket (new connections still go through).
pub struct CutRelay {
    pub addr: SocketAddr,
    live: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl CutRelay {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let live: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Default::default();
        let list = live.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let h = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                list.lock().unwrap().push(h);
            }
        });
        Self { addr, live }
    }

    /// Drops every relayed connection.
    pub fn cut(&self) {
        for h in self.live.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}
