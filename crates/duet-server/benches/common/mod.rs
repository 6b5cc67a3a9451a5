//! What both load benchmarks share: the client socket type and its configuration, opening a
//! session (or resuming one with its token), the pairing burst, a process's memory and CPU time,
//! and the file-descriptor limit.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use duet_proto::{ClientFrame, ClientMessage, ServerFrame, ServerMessage, parse_server_frame};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Barrier;
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
