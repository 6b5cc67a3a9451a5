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

    /// The words of the last "verify your partner" string shown.
    pub fn verify_words(&self) -> Option<String> {
        self.events.iter().rev().find(|e| e["event"] == "verify").and_then(|e| e["words"].as_str()).map(str::to_string)
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
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
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
        Self::balancing(vec![target]).await
    }

    /// A relay that sends each new connection to the first of `targets` that accepts it, as a
    /// load balancer in front of several nodes would.
    pub async fn balancing(targets: Vec<SocketAddr>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let live: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Default::default();
        let list = live.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let targets = targets.clone();
                let h = tokio::spawn(async move {
                    for target in targets {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
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

/// A WebSocket relay in front of the server that records what its client sends and can make
/// the signals of a replaced peer connection arrive late, as a slow signaling path would.
///
/// With `late`, when its client is the impolite side (the offerer), it holds back every partner
/// signal of generation 1, so the client's offer goes unanswered and the call moves to a fresh
/// peer connection (generation 2); `late` after that generation's first signal, it delivers
/// what it held. Server frames are renumbered so the held ones arrive as new frames (not as
/// replays the client would skip by `seq`).
pub struct SignalRelay {
    pub addr: SocketAddr,
    /// How many signals were held back and delivered late.
    pub delivered_late: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Every text frame the client sent.
    pub sent: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl SignalRelay {
    pub async fn start(target: SocketAddr, late: Option<std::time::Duration>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let relay = Self { addr, delivered_late: Default::default(), sent: Default::default() };
        let (counter, sent) = (relay.delivered_late.clone(), relay.sent.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(relay_signals(tcp, target, late, counter.clone(), sent.clone()));
            }
        });
        relay
    }
}

async fn relay_signals(
    tcp: tokio::net::TcpStream,
    target: SocketAddr,
    late: Option<std::time::Duration>,
    delivered_late: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    sent: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let Ok(client) = tokio_tungstenite::accept_async(tcp).await else { return };
    let Ok((server, _)) = tokio_tungstenite::connect_async(format!("ws://{target}/ws")).await else { return };
    let (mut to_client, mut from_client) = client.split();
    let (mut to_server, mut from_server) = server.split();
    tokio::spawn(async move {
        while let Some(Ok(m)) = from_client.next().await {
            if let Message::Text(t) = &m {
                sent.lock().unwrap().push(t.to_string());
            }
            if to_server.send(m).await.is_err() {
                break;
            }
        }
    });
    let (late_tx, mut late_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<Value>>();
    let mut next_seq = 0u64;
    let mut impolite = false;
    let mut held: Vec<Value> = Vec::new();
    let mut release_scheduled = false;
    loop {
        let frames: Vec<Value> = tokio::select! {
            m = from_server.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["type"] == "matched" {
                        impolite = v["polite"] == false;
                    }
                    let generation = v["generation"].as_u64();
                    if v["type"] == "signal" && late.is_some() && impolite && generation == Some(1) && !release_scheduled {
                        held.push(v);
                        continue;
                    }
                    if v["type"] == "signal" && generation.is_some_and(|g| g >= 2) && !held.is_empty() && !release_scheduled {
                        release_scheduled = true;
                        let (frames, tx, wait) = (std::mem::take(&mut held), late_tx.clone(), late.unwrap_or_default());
                        tokio::spawn(async move {
                            tokio::time::sleep(wait).await;
                            let _ = tx.send(frames);
                        });
                    }
                    vec![v]
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            },
            Some(late) = late_rx.recv() => {
                delivered_late.fetch_add(late.len(), std::sync::atomic::Ordering::SeqCst);
                late
            }
        };
        for mut v in frames {
            if v["seq"].as_u64().is_some_and(|s| s >= 1) {
                next_seq += 1;
                v["seq"] = next_seq.into();
            }
            if to_client.send(Message::text(v.to_string())).await.is_err() {
                return;
            }
        }
    }
    let _ = to_client.close().await;
}

/// The receiver decodes the sender's video without gaps, at the sent size, with audio.
///
/// Each side's `--duration` counts from its own `connected`, so the side that connected later
/// goes on sending after its partner hung up: those frames cannot arrive. What the receiver
/// must show is a continuous run: at least 90 % of the frames between the first and the last
/// it decoded (`video_frames_lost` counts the gaps), no freeze, and a run that covers most of
/// what was sent.
pub fn check_media(receiver: &Run, sender: &Run, width: u64, height: u64) {
    let (r, s) = (receiver.summary(), sender.summary());
    assert_eq!(r["connected"], true, "{r}");
    let sent = u(&s["video_frames_sent"]);
    let decoded = u(&r["video_frames_decoded"]);
    let lost = u(&r["video_frames_lost"]);
    assert!(sent > 50, "sender sent {sent} frames");
    assert!(decoded * 10 >= (decoded + lost) * 9, "decoded {decoded}, {lost} missing in between: {r}");
    assert!(decoded * 4 >= sent * 3, "decoded {decoded} of {sent} sent");
    assert!(u(&r["longest_video_freeze_ms"]) < 1000, "{r}");
    assert_eq!((u(&r["video_width"]), u(&r["video_height"])), (width, height));
    assert!(u(&r["audio_frames_decoded"]) * 4 >= u(&s["audio_frames_sent"]) * 3, "{r} vs {s}");
    assert!(u(&r["longest_audio_gap_ms"]) < 1000, "{r}");
    assert!(r["latency_ms_p50"].as_f64().unwrap() < 1000.0);
    assert!(r["time_to_first_frame_ms"].is_u64());
    assert!(u(&r["bytes_received"]) > 0 && u(&r["bytes_sent"]) > 0);
}
