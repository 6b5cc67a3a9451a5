//! What both load benchmarks share: the client socket type and its configuration, opening a
//! session (or resuming one with its token), the pairing burst, the relay of signals between
//! paired clients and the candidates they carry, percentiles, a process's memory and CPU time,
//! and the file-descriptor limit.

use std::fmt::Display;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use duet_proto::{
    ClientFrame, ClientMessage, IceCandidate, ServerFrame, ServerMessage, SignalPayload, parse_server_frame,
};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Barrier, mpsc};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub type Ws = WebSocketStream<TcpStream>;

pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0)
}

/// A WebSocket to `server`'s `/ws` from the source address `src` (no `hello` yet).
pub async fn connect(server: SocketAddr, src: IpAddr) -> Result<Ws, String> {
    let sock = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    sock.bind(SocketAddr::new(src, 0)).map_err(|e| e.to_string())?;
    let stream = sock.connect(server).await.map_err(|e| e.to_string())?;
    stream.set_nodelay(true).ok();
    let url = format!("ws://{server}/ws");
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config())).await.map_err(|e| e.to_string())?;
    Ok(ws)
}

/// Sends `hello` (with a resume token and the last `seq` processed, to take a session back) and
/// returns the `welcome` frame.
pub async fn hello(ws: &mut Ws, resume_token: Option<String>, ack: Option<u64>) -> Result<ServerFrame, String> {
    let hello = ClientFrame { id: Some(1), ack, msg: ClientMessage::Hello { version: 1, resume_token, client: None } };
    ws.send(Message::text(hello.to_json())).await.map_err(|e| e.to_string())?;
    match ws.next().await {
        Some(Ok(Message::Text(t))) => match parse_server_frame(t.as_str()) {
            Ok(f) if matches!(f.msg, ServerMessage::Welcome { .. }) => Ok(f),
            _ => Err(format!("no welcome: {t}")),
        },
        other => Err(format!("no welcome: {other:?}")),
    }
}

/// All sessions join the queue at once; returns pairings per second.
pub async fn pairing_burst(conns: Vec<Ws>) -> f64 {
    let n = conns.len();
    let barrier = Arc::new(Barrier::new(n + 1));
    let mut tasks = Vec::with_capacity(n);
    for mut ws in conns {
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let join = ClientFrame::with_id(2, ClientMessage::JoinQueue { interests: vec![], language: None });
            ws.send(Message::text(join.to_json())).await.unwrap();
            let mut last_seq = 0;
            loop {
                let msg = ws.next().await.expect("open").expect("read");
                let f = parse_server_frame(msg.to_text().unwrap()).unwrap();
                last_seq = last_seq.max(f.seq);
                if f.msg.kind() == "matched" {
                    let at = Instant::now();
                    let leave = ClientFrame { id: Some(3), ack: Some(last_seq), msg: ClientMessage::Leave };
                    let _ = ws.send(Message::text(leave.to_json())).await;
                    return (at, ws);
                }
            }
        }));
    }
    barrier.wait().await;
    let start = Instant::now();
    let mut last = start;
    let mut keep = Vec::with_capacity(n);
    for t in tasks {
        let (at, ws) = t.await.unwrap();
        last = last.max(at);
        keep.push(ws);
    }
    (n / 2) as f64 / last.duration_since(start).as_secs_f64()
}

/// The server the clients talk to.
#[derive(Clone, Copy, PartialEq)]
pub enum Target {
    /// `duet-server`: sessions, JSON frames, `seq` and acks.
    Duet,
    /// The `load` bench's bare WebSocket relay: text frames go to the partner unchanged.
    #[allow(dead_code, reason = "only the load bench runs the anchor")]
    Anchor,
}

/// K paired clients: the first of each pair sends signals at `rate / K` per second for
/// `duration`, the second receives them. Returns (signals sent, latencies in microseconds).
pub async fn relay(pairs: Vec<(Ws, Ws)>, target: Target, rate: u64, duration: Duration) -> (u64, Vec<u64>) {
    let k = pairs.len();
    let epoch = Instant::now();
    let interval = Duration::from_secs_f64(k as f64 / rate as f64);
    let stop_at = Instant::now() + duration;
    let (lat_tx, mut lat_rx) = mpsc::unbounded_channel::<Vec<u64>>();
    let sent = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for (i, (a, b)) in pairs.into_iter().enumerate() {
        let sent = sent.clone();
        // Spread the senders' phases over one interval.
        let offset = interval.mul_f64(i as f64 / k as f64);
        handles.push(tokio::spawn(sender(a, target, interval, offset, stop_at, epoch, sent)));
        let lat_tx = lat_tx.clone();
        handles.push(tokio::spawn(async move {
            let lat = receiver(b, target, stop_at + Duration::from_secs(2), epoch).await;
            let _ = lat_tx.send(lat);
        }));
    }
    drop(lat_tx);
    for h in handles {
        h.await.unwrap();
    }
    let mut all = Vec::new();
    while let Some(mut v) = lat_rx.recv().await {
        all.append(&mut v);
    }
    (sent.load(Ordering::Relaxed), all)
}

/// Sends a signal every `interval` (the first after `offset`) until `stop_at`, its candidate
/// tagged with the time sent (ns since `epoch`).
async fn sender(
    mut ws: Ws,
    target: Target,
    interval: Duration,
    offset: Duration,
    stop_at: Instant,
    epoch: Instant,
    sent: Arc<AtomicU64>,
) {
    let mut tick = tokio::time::interval_at((Instant::now() + offset).into(), interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut id = 100;
    let mut last_seq = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if Instant::now() >= stop_at {
                    break;
                }
                id += 1;
                let nanos = epoch.elapsed().as_nanos();
                let text = match target {
                    Target::Duet => signal_frame(id, last_seq, nanos).to_json(),
                    Target::Anchor => format!("{{\"candidate\":\"{}\"}}", candidate(nanos)),
                };
                if ws.send(Message::text(text)).await.is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    if let Some(seq) = seq_of(t.as_str()) { last_seq = last_seq.max(seq); }
                }
                Some(Ok(_)) => {}
                _ => break,
            },
        }
    }
    // Keep the socket open until the receivers are done.
    tokio::time::sleep_until((stop_at + Duration::from_secs(2)).into()).await;
}

/// Reads signals until `until`: the latency of each (µs), from the time in its candidate tag.
async fn receiver(mut ws: Ws, target: Target, until: Instant, epoch: Instant) -> Vec<u64> {
    let mut lat = Vec::new();
    let mut last_seq = 0;
    let mut unacked = 0;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(until.into(), ws.next()).await {
        let now = epoch.elapsed().as_nanos();
        let Message::Text(t) = msg else { continue };
        let t = t.as_str();
        if let Some(sent) = candidate_tag(t).and_then(|s| s.parse::<u128>().ok()) {
            lat.push(((now.saturating_sub(sent)) / 1000) as u64);
        }
        if target == Target::Duet {
            if let Some(seq) = seq_of(t) {
                last_seq = last_seq.max(seq);
            }
            unacked += 1;
            if unacked >= 32 {
                unacked = 0;
                let ack = ClientFrame::new(ClientMessage::Ack { seq: last_seq });
                let _ = ws.send(Message::text(ack.to_json())).await;
            }
        }
    }
    lat
}

/// The ICE candidate line the benchmarks send, with `tag` in the place of the foundation (read
/// back with [`candidate_tag`]).
pub fn candidate(tag: impl Display) -> String {
    format!("candidate:{tag} 1 udp 2130706431 127.0.0.1 9 typ host")
}

/// A `signal` carrying [`candidate`]`(tag)`, acknowledging `last_seq` if anything was processed.
pub fn signal_frame(id: u64, last_seq: u64, tag: impl Display) -> ClientFrame {
    let candidate = IceCandidate {
        candidate: candidate(tag),
        sdp_mid: Some("0".into()),
        sdp_m_line_index: Some(0),
        username_fragment: None,
    };
    ClientFrame {
        id: Some(id),
        ack: (last_seq > 0).then_some(last_seq),
        msg: ClientMessage::Signal { payload: SignalPayload::Candidate { candidate }, generation: None },
    }
}

/// The tag of the first [`candidate`] in `text` (a frame, or the candidate line itself).
pub fn candidate_tag(text: &str) -> Option<&str> {
    text.split("candidate:").nth(1)?.split(' ').next()
}

/// Percentile `p` (0 to 1) of the sorted `v`; zero if `v` is empty.
pub fn pct<T: Copy + Default>(v: &[T], p: f64) -> T {
    v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1))).copied().unwrap_or_default()
}

pub fn seq_of(text: &str) -> Option<u64> {
    let rest = text.strip_prefix("{\"seq\":")?;
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// User+system CPU seconds of a process.
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields after the command: state is index 0, utime 11, stime 12; 100 ticks per second.
    (ticks(11) + ticks(12)) / 100.0
}

/// Raises RLIMIT_NOFILE towards `want` (as far as allowed); returns the soft limit in force.
#[allow(unsafe_code)]
pub fn raise_fd_limit(want: u64) -> u64 {
    // SAFETY: getrlimit/setrlimit only read/write the struct passed.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            let target = want.max(lim.rlim_max);
            let raised = libc::rlimit { rlim_cur: target, rlim_max: target };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                // Not root: use what the hard limit allows.
                lim.rlim_cur = lim.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
        }
        let mut now = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut now);
        now.rlim_cur
    }
}
