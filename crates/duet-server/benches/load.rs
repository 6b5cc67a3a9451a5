//! Load benchmark of `duet-server`: real WebSocket sessions from one process.
//!
//! Runs the release `duet-server` binary as a child process and, against it:
//! 1. **hold**: opens N sessions (hello/welcome) from several loopback source addresses and
//!    reads the server's RSS: max concurrent sessions, RSS per session;
//! 2. **pair**: 2P held sessions send `join_queue` at once: pairings per second;
//! 3. **relay**: K pairs (rooms by code) relay `signal`s at R per second for D seconds:
//!    relay latency p50/p99 (send to receive, same clock).
//!
//! The anchor, measured in the same run: the same hold and relay phases against a bare
//! WebSocket relay (this binary with `--anchor-server`: tokio-tungstenite with the same
//! buffer settings, pairs by connection order, no JSON, no sessions) — the floor that the
//! transport alone costs.
//!
//! `cargo bench -p duet-server --bench load -- --sessions 50000 --pairs 10000 --rate 10000`

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use common::{Target, Ws, cpu_secs, pairing_burst, pct, raise_fd_limit, rss_kib, ws_config};
use duet_proto::*;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser, Debug, Clone)]
struct Args {
    /// Sessions to hold at once.
    #[arg(long, default_value_t = 50_000)]
    sessions: usize,
    /// Pairs to match in the pairing burst.
    #[arg(long, default_value_t = 10_000)]
    pairs: usize,
    /// Pairs relaying signals in the latency phase.
    #[arg(long, default_value_t = 1_000)]
    relay_pairs: usize,
    /// Signals per second in total during the latency phase.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Seconds of relaying.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Connections opened concurrently.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Log level of the server under test (`RUST_LOG`).
    #[arg(long, default_value = "warn")]
    server_log: String,
    /// Skip the anchor run.
    #[arg(long)]
    no_anchor: bool,
    /// Internal: run as the bare WebSocket relay anchor on this address.
    #[arg(long)]
    anchor_server: Option<SocketAddr>,
    /// Sessions asked for, when the descriptor limit forced fewer (set internally).
    #[arg(skip)]
    requested_sessions: usize,
    /// Set by `cargo bench`; without it (as under `cargo test`) a small smoke run is made.
    #[arg(long)]
    bench: bool,
}

fn main() {
    let mut args = Args::parse();
    // `cargo test --all-targets` runs benches without `--bench`: then a small smoke run.
    if !args.bench && args.anchor_server.is_none() {
        args.sessions = args.sessions.min(300);
        args.pairs = args.pairs.min(100);
        args.relay_pairs = args.relay_pairs.min(20);
        args.rate = args.rate.min(400);
        args.duration = args.duration.min(1);
    }
    let fd_limit = raise_fd_limit(400_000);
    // Each session is one socket in the server and one here; keep a margin for everything else.
    let budget = (fd_limit as usize).saturating_sub(500);
    if args.anchor_server.is_none() && args.sessions > budget {
        eprintln!(
            "note: RLIMIT_NOFILE is {fd_limit} and cannot be raised here (raising the hard limit needs \
             CAP_SYS_RESOURCE): holding {budget} sessions instead of {}",
            args.sessions
        );
        args.requested_sessions = args.sessions;
        args.sessions = budget;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    if let Some(addr) = args.anchor_server {
        rt.block_on(anchor_server(addr));
        return;
    }
    let duet = rt.block_on(run_against(Target::Duet, &args));
    let anchor = (!args.no_anchor).then(|| rt.block_on(run_against(Target::Anchor, &args)));
    print_table(&args, &duet, anchor.as_ref());
}

#[derive(Default, Debug)]
struct Results {
    held: usize,
    hold_secs: f64,
    rss_base_kib: u64,
    rss_held_kib: u64,
    pairings_per_sec: Option<f64>,
    pairs_matched: usize,
    relay_sent: u64,
    relay_received: usize,
    relay_secs: f64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
    server_cpu_relay: f64,
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(target: Target, server_log: &str) -> Server {
    let mut cmd = match target {
        Target::Duet => {
            let mut c = Command::new(env!("CARGO_BIN_EXE_duet-server"));
            // Idle sessions are held without pings for the whole run; the connection cap is
            // lifted, the benchmark measures what the machine holds.
            c.args(["--listen", "127.0.0.1:0", "--heartbeat-ms", "600000", "--idle-timeout-ms", "1200000"]);
            c.args(["--max-connections", "10000000"]);
            c.env("RUST_LOG", server_log);
            c
        }
        Target::Anchor => {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let mut c = Command::new(std::env::current_exe().unwrap());
            c.args(["--anchor-server", &format!("127.0.0.1:{port}")]);
            c
        }
    };
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn server");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    let addr = line
        .split(|c: char| c.is_whitespace() || c == '/')
        .find_map(|w| w.parse::<SocketAddr>().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    Server { child, addr }
}

async fn run_against(target: Target, args: &Args) -> Results {
    let server = start(target, &args.server_log);
    let pid = server.child.id();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut r = Results { rss_base_kib: rss_kib(pid), ..Results::default() };
    let name = if target == Target::Duet { "duet-server" } else { "anchor" };

    // 1. hold
    let t0 = Instant::now();
    let mut conns = open_sessions(server.addr, args.sessions, args.concurrency, target).await;
    r.hold_secs = t0.elapsed().as_secs_f64();
    r.held = conns.len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    r.rss_held_kib = rss_kib(pid);
    eprintln!("[{name}] holding {} sessions after {:.1} s, RSS {} MiB", r.held, r.hold_secs, r.rss_held_kib / 1024);

    // 2. pairings (the anchor has no matching)
    if target == Target::Duet {
        let n = (2 * args.pairs).min(conns.len().saturating_sub(2 * args.relay_pairs)) & !1;
        let batch: Vec<Ws> = conns.drain(..n).collect();
        r.pairs_matched = n / 2;
        r.pairings_per_sec = Some(pairing_burst(batch).await);
        eprintln!("[{name}] pairings/s: {:.0}", r.pairings_per_sec.unwrap_or(0.0));
    }

    // 3. relay latency
    let k = args.relay_pairs.min(conns.len() / 2);
    let relay: Vec<Ws> = conns.drain(..2 * k).collect();
    let cpu0 = cpu_secs(pid);
    let t = Instant::now();
    let (sent, lat) = relay_phase(relay, target, args.rate, Duration::from_secs(args.duration)).await;
    r.relay_secs = t.elapsed().as_secs_f64();
    r.server_cpu_relay = (cpu_secs(pid) - cpu0) / r.relay_secs;
    r.relay_sent = sent;
    r.relay_received = lat.len();
    let mut lat = lat;
    lat.sort_unstable();
    (r.p50_us, r.p99_us, r.max_us) = (pct(&lat, 0.50), pct(&lat, 0.99), lat.last().copied().unwrap_or(0));
    eprintln!("[{name}] relay: sent {sent}, received {}, p50 {} us, p99 {} us", r.relay_received, r.p50_us, r.p99_us);
    drop(conns);
    r
}

/// Opens `n` sessions from 127.0.0.2, 127.0.0.3, ... (20,000 per source address).
async fn open_sessions(server: SocketAddr, n: usize, concurrency: usize, target: Target) -> Vec<Ws> {
    let sem = Arc::new(Semaphore::new(concurrency));
    let failures = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let sem = sem.clone();
        let failures = failures.clone();
        let src = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i / 20_000) as u8));
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.unwrap();
            for _attempt in 0..3 {
                match open_one(server, src, target).await {
                    Ok(ws) => return Some(ws),
                    Err(_) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            None
        }));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        if let Some(ws) = t.await.unwrap() {
            out.push(ws);
        }
    }
    let f = failures.load(Ordering::Relaxed);
    if f > 0 {
        eprintln!("  ({f} connection attempts failed and were retried)");
    }
    out
}

async fn open_one(server: SocketAddr, src: IpAddr, target: Target) -> Result<Ws, String> {
    let mut ws = common::connect(server, src).await?;
    if target == Target::Duet {
        common::hello(&mut ws, None, None).await?;
    }
    Ok(ws)
}

/// K pairs: even index sends signals at `rate / K` per second, odd index receives.
/// Returns (signals sent, latencies in microseconds).
async fn relay_phase(conns: Vec<Ws>, target: Target, rate: u64, duration: Duration) -> (u64, Vec<u64>) {
    let k = conns.len() / 2;
    let mut conns = conns.into_iter();
    let mut pairs = Vec::with_capacity(k);
    // Pair up: rooms by code for duet, connection order for the anchor.
    for i in 0..k {
        let (mut a, mut b) = (conns.next().unwrap(), conns.next().unwrap());
        let (join, ready) = match target {
            Target::Duet => (
                ClientFrame::with_id(10, ClientMessage::JoinRoom { code: format!("bench-{i}") }).to_json(),
                "\"matched\"",
            ),
            Target::Anchor => (format!("pair:bench-{i}"), "paired"),
        };
        for ws in [&mut a, &mut b] {
            ws.send(Message::text(join.clone())).await.unwrap();
        }
        for ws in [&mut a, &mut b] {
            loop {
                let msg = ws.next().await.unwrap().unwrap();
                if msg.to_text().unwrap().contains(ready) {
                    break;
                }
            }
        }
        pairs.push((a, b));
    }
    common::relay(pairs, target, rate, duration).await
}

/// The anchor: a bare WebSocket relay. A connection's first text frame `pair:<code>` puts it
/// in a pair (like a room by code); after that, text frames go to the partner unchanged.
async fn anchor_server(addr: SocketAddr) {
    type Slot = (mpsc::Sender<Message>, tokio::sync::oneshot::Sender<mpsc::Sender<Message>>);
    let listener = TcpListener::bind(addr).await.unwrap();
    println!("anchor listening on ws://{addr}/ws");
    let rooms: Arc<std::sync::Mutex<std::collections::HashMap<String, Slot>>> = Arc::default();
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        stream.set_nodelay(true).ok();
        let rooms = rooms.clone();
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(ws_config())).await else {
                return;
            };
            let (tx, mut rx) = mpsc::channel::<Message>(1024);
            let mut partner: Option<mpsc::Sender<Message>> = None;
            let mut partner_rx: Option<tokio::sync::oneshot::Receiver<mpsc::Sender<Message>>> = None;
            loop {
                tokio::select! {
                    p = async { partner_rx.as_mut().unwrap().await }, if partner_rx.is_some() => {
                        partner = p.ok();
                        partner_rx = None;
                    }
                    out = rx.recv() => match out {
                        Some(m) => { if ws.send(m).await.is_err() { break; } }
                        None => break,
                    },
                    msg = ws.next() => match msg {
                        Some(Ok(Message::Text(t))) => {
                            if let Some(code) = t.as_str().strip_prefix("pair:") {
                                let waiting = rooms.lock().unwrap().remove(code);
                                match waiting {
                                    Some((other_tx, other_partner)) => {
                                        let _ = other_partner.send(tx.clone());
                                        partner = Some(other_tx);
                                    }
                                    None => {
                                        let (ptx, prx) = tokio::sync::oneshot::channel();
                                        rooms.lock().unwrap().insert(code.to_string(), (tx.clone(), ptx));
                                        partner_rx = Some(prx);
                                    }
                                }
                                let _ = ws.send(Message::text("paired")).await;
                            } else if let Some(p) = &partner {
                                let _ = p.try_send(Message::Text(t));
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => break,
                    },
                }
            }
        });
    }
}

fn print_table(args: &Args, d: &Results, a: Option<&Results>) {
    let an = |f: &dyn Fn(&Results) -> String| a.map(f).unwrap_or_else(|| "-".into());
    let row = |label: &str, duet: String, anchor: String, target: &str| {
        println!("| {label} | {duet} | {anchor} | {target} |");
    };
    let per = |r: &Results| (r.rss_held_kib.saturating_sub(r.rss_base_kib)) as f64 / r.held.max(1) as f64;
    let mib = |kib: f64| format!("{:.0} MiB", kib / 1024.0);
    let ms = |us: u64| format!("{:.2} ms", us as f64 / 1000.0);
    let rate = |r: &Results| format!("{:.0}/s", r.relay_sent as f64 / args.duration as f64);
    println!();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    println!("duet-server load benchmark ({cores} cores)");
    println!("| metric | duet-server | anchor: bare WebSocket relay | target |");
    println!("|---|---|---|---|");
    let wanted = args.requested_sessions.max(args.sessions).to_string();
    row("concurrent sessions held", d.held.to_string(), an(&|r| r.held.to_string()), &wanted);
    row("time to open them", format!("{:.1} s", d.hold_secs), an(&|r| format!("{:.1} s", r.hold_secs)), "");
    row("server RSS holding them", mib(d.rss_held_kib as f64), an(&|r| mib(r.rss_held_kib as f64)), "< 1024 MiB");
    row("server RSS per session", format!("{:.1} KiB", per(d)), an(&|r| format!("{:.1} KiB", per(r))), "< 20.9 KiB");
    if args.requested_sessions > args.sessions {
        let at = |r: &Results| mib(r.rss_base_kib as f64 + per(r) * args.requested_sessions as f64);
        let label =
            format!("server RSS at {} sessions (extrapolated: base + per-session x N)", args.requested_sessions);
        row(&label, at(d), an(&at), "< 1024 MiB");
    }
    let label = format!("pairings per second ({} pairs queued at once)", d.pairs_matched);
    row(&label, format!("{:.0}", d.pairings_per_sec.unwrap_or(0.0)), "n/a".into(), "10,000");
    let counts = |r: &Results| format!("{} / {}", r.relay_sent, r.relay_received);
    row("relay: signals sent / received", counts(d), an(&counts), "none lost");
    row("relay: offered rate", rate(d), an(&rate), &format!("{}/s", args.rate));
    row("relay latency p50", ms(d.p50_us), an(&|r| ms(r.p50_us)), "");
    row("relay latency p99", ms(d.p99_us), an(&|r| ms(r.p99_us)), "< 5 ms");
    row("relay latency max", ms(d.max_us), an(&|r| ms(r.max_us)), "");
    let cpu = |r: &Results| format!("{:.0}% of a core", r.server_cpu_relay * 100.0);
    row("server CPU while relaying", cpu(d), an(&cpu), "");
}
