//! Multi-node load benchmark of `duet-server` (issue 15): one node in memory against two
//! nodes sharing one `redis-server`, measured in the same run with the same clients.
//!
//! Starts the release `duet-server` binary (and, for the cluster, a `redis-server` on a free
//! loopback port) as child processes and, against each setup:
//! 1. **hold**: opens N sessions (hello/welcome), spread evenly over the nodes, and reads every
//!    process's RSS: sessions held per node, memory per session (nodes + Redis);
//! 2. **pair**: 2P held sessions send `join_queue` at once: pairings per second across the
//!    service (on two nodes, through the shared pool);
//! 3. **relay**: K pairs (rooms by code; on two nodes one member on each, so every signal
//!    crosses nodes through Redis) relay `signal`s at R per second for D seconds: relay latency
//!    p50/p99 (send to receive, same clock).
//!
//! Then, on three nodes and one Redis (`cluster_load/kill.rs`):
//! 4. **kill**: P pairs spread over the nodes, most of them across two nodes, signal steadily;
//!    one node is SIGKILLed, and its clients come back on the other two with their resume tokens
//!    (exponential backoff, full jitter): sessions restored, pairings whole again and how soon,
//!    and the signals that did or did not arrive.
//!
//! `cargo bench -p duet-server --bench cluster_load -- --sessions 10000 --pairs 2000 --rate 10000`
//! runs all four; `--phase compare` runs 1-3 only, `--phase kill` the kill alone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "cluster_load/kill.rs"]
mod kill;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use common::{Target, Ws, cpu_secs, pairing_burst, pct, raise_fd_limit, rss_kib};
use duet_proto::*;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser, Debug, Clone)]
struct Args {
    /// Rounds of the comparison, one node and two nodes taking turns; with more than one, a
    /// last table gives each round's pairings and relay p99 and their medians.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Sessions to hold at once (in total, over all nodes).
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// Pairs to match in the pairing burst.
    #[arg(long, default_value_t = 2_000)]
    pairs: usize,
    /// Pairs relaying signals in the latency phase.
    #[arg(long, default_value_t = 500)]
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
    /// Log level of the servers under test (`RUST_LOG`).
    #[arg(long, default_value = "warn")]
    server_log: String,
    /// Which phases to run: `all`, `compare` (one node against two: hold, pair, relay) or `kill`.
    #[arg(long, value_enum, default_value = "all")]
    phase: Phase,
    /// Pairs holding a call when a node is killed (two sessions each, over three nodes).
    #[arg(long, default_value_t = 500)]
    kill_pairs: usize,
    /// Each session of the kill phase sends a signal this often (ms).
    #[arg(long, default_value_t = 1000)]
    kill_signal_ms: u64,
    /// Seconds of steady signalling before the kill.
    #[arg(long, default_value_t = 5)]
    kill_warmup: u64,
    /// Seconds watched after the kill (longer than the node heartbeat, 5 s, plus the resume
    /// grace, 15 s, so that a pairing given up by the server shows as `peer_left`).
    #[arg(long, default_value_t = 25)]
    kill_observe: u64,
    /// Log level of the kill phase's nodes; their stderr goes to files named at the end.
    #[arg(long, default_value = "info")]
    kill_log: String,
    /// Set by `cargo bench`; without it (as under `cargo test`) a small smoke run is made.
    #[arg(long)]
    bench: bool,
}

fn main() {
    let mut args = Args::parse();
    if !args.bench {
        args.sessions = args.sessions.min(300);
        args.pairs = args.pairs.min(100);
        args.relay_pairs = args.relay_pairs.min(20);
        args.rate = args.rate.min(400);
        args.duration = args.duration.min(1);
        args.kill_pairs = args.kill_pairs.min(18);
        args.kill_warmup = args.kill_warmup.min(2);
        args.kill_observe = args.kill_observe.min(8);
    }
    let fd_limit = raise_fd_limit(400_000) as usize;
    if args.sessions + 500 > fd_limit {
        eprintln!("note: RLIMIT_NOFILE is {fd_limit}: holding {} sessions", fd_limit - 500);
        args.sessions = fd_limit - 500;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    if args.phase != Phase::Kill {
        let mut rounds = Vec::new();
        for _ in 0..args.rounds.max(1) {
            let single = rt.block_on(run(Setup::Single, &args));
            let cluster = rt.block_on(run(Setup::Cluster, &args));
            print_table(&args, &single, &cluster);
            rounds.push((single, cluster));
        }
        if rounds.len() > 1 {
            print_rounds(&rounds);
        }
    }
    if args.phase != Phase::Compare {
        let killed = rt.block_on(kill::run(&args));
        kill::print_table(&args, &killed);
    }
}

#[derive(Clone, Copy, PartialEq, Debug, clap::ValueEnum)]
enum Phase {
    /// Everything: the comparison, then the kill.
    All,
    /// One node in memory against two nodes and Redis: hold, pair, relay.
    Compare,
    /// Three nodes and Redis, one of them killed under load.
    Kill,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Setup {
    /// One node, in memory (the default mode).
    Single,
    /// Two nodes and one Redis.
    Cluster,
}

#[derive(Default, Debug)]
struct Results {
    held_per_node: Vec<usize>,
    hold_secs: f64,
    node_rss_base_kib: Vec<u64>,
    node_rss_held_kib: Vec<u64>,
    redis_rss_base_kib: u64,
    redis_rss_held_kib: u64,
    pairs_matched: usize,
    pairings_per_sec: f64,
    relay_sent: u64,
    relay_received: usize,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
    nodes_cpu: f64,
    redis_cpu: f64,
}

impl Results {
    fn held(&self) -> usize {
        self.held_per_node.iter().sum()
    }
    /// RSS added per held session, nodes and Redis together.
    fn kib_per_session(&self) -> f64 {
        let nodes: u64 =
            self.node_rss_held_kib.iter().zip(&self.node_rss_base_kib).map(|(h, b)| h.saturating_sub(*b)).sum();
        (nodes + self.redis_rss_held_kib.saturating_sub(self.redis_rss_base_kib)) as f64 / self.held().max(1) as f64
    }
}

/// A child process killed on drop.
struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Node {
    proc: Proc,
    addr: SocketAddr,
}

fn start_node(server_log: &str, redis: Option<(u16, &str)>) -> Node {
    let mut c = node_command(server_log, redis);
    // Idle sessions are held without pings for the whole run.
    c.args(["--heartbeat-ms", "600000", "--idle-timeout-ms", "1200000"]);
    spawn_node(c.stderr(Stdio::inherit()))
}

/// The `duet-server` command line of a node on a free loopback port, its connection cap lifted.
fn node_command(server_log: &str, redis: Option<(u16, &str)>) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_duet-server"));
    c.args(["--listen", "127.0.0.1:0", "--max-connections", "10000000"]);
    if let Some((port, id)) = redis {
        c.args(["--redis", &format!("redis://127.0.0.1:{port}"), "--node-id", id]);
    }
    c.env("RUST_LOG", server_log);
    c
}

/// Starts `c` and reads the node's address from the first line it prints.
fn spawn_node(c: &mut Command) -> Node {
    let mut child = c.stdout(Stdio::piped()).spawn().expect("spawn duet-server");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    let addr = line
        .split(|c: char| c.is_whitespace() || c == '/')
        .find_map(|w| w.parse::<SocketAddr>().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    Node { proc: Proc { child }, addr }
}

/// A `redis-server` in the foreground on a free loopback port, without persistence.
fn start_redis() -> (Proc, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
        .args(["--protected-mode", "no", "--loglevel", "warning"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server is installed (scripts/packages.txt)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server listens");
        std::thread::sleep(Duration::from_millis(20));
    }
    (Proc { child }, port)
}

async fn wait_healthy(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !http_get(addr, "/health").await.starts_with("HTTP/1.1 200") {
        assert!(Instant::now() < deadline, "node {addr} healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The whole HTTP/1.1 answer (status line, headers, body) to `GET path`, or "" if none came.
async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = TcpStream::connect(addr).await else { return String::new() };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let _ = s.write_all(req.as_bytes()).await;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    String::from_utf8_lossy(&buf).into_owned()
}

async fn run(setup: Setup, args: &Args) -> Results {
    let name = format!("{setup:?}");
    let (redis, nodes) = match setup {
        Setup::Single => (None, vec![start_node(&args.server_log, None)]),
        Setup::Cluster => {
            let (redis, port) = start_redis();
            let nodes = ["n1", "n2"].map(|id| start_node(&args.server_log, Some((port, id))));
            (Some(redis), nodes.into())
        }
    };
    for n in &nodes {
        wait_healthy(n.addr).await;
    }
    let pids: Vec<u32> = nodes.iter().map(|n| n.proc.child.id()).collect();
    let redis_pid = redis.as_ref().map(|r| r.child.id());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut r = Results {
        node_rss_base_kib: pids.iter().map(|p| rss_kib(*p)).collect(),
        redis_rss_base_kib: redis_pid.map_or(0, rss_kib),
        ..Results::default()
    };

    // 1. hold, spread over the nodes: conns[i] holds node i's sessions.
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let t0 = Instant::now();
    let mut conns = open_sessions(&addrs, args.sessions, args.concurrency).await;
    r.hold_secs = t0.elapsed().as_secs_f64();
    r.held_per_node = conns.iter().map(Vec::len).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    r.node_rss_held_kib = pids.iter().map(|p| rss_kib(*p)).collect();
    r.redis_rss_held_kib = redis_pid.map_or(0, rss_kib);
    eprintln!("[{name}] holding {:?} sessions after {:.1} s", r.held_per_node, r.hold_secs);

    // 2. pairings: half of the burst from each node.
    let per_node = (2 * args.pairs / nodes.len()).min(conns[0].len().saturating_sub(2 * args.relay_pairs));
    let mut batch = Vec::new();
    for c in conns.iter_mut() {
        batch.extend(c.drain(..per_node.min(c.len())));
    }
    batch.truncate(batch.len() & !1);
    r.pairs_matched = batch.len() / 2;
    r.pairings_per_sec = pairing_burst(batch).await;
    eprintln!("[{name}] pairings/s: {:.0}", r.pairings_per_sec);

    // 3. relay: each pair's members on different nodes when there are two.
    let k = args.relay_pairs.min(conns.iter().map(Vec::len).min().unwrap_or(0) / 2);
    let mut pairs = Vec::with_capacity(k);
    for _ in 0..k {
        let a = conns[0].pop().unwrap();
        let b = conns.last_mut().unwrap().pop().unwrap();
        pairs.push((a, b));
    }
    let cpu0: f64 = pids.iter().map(|p| cpu_secs(*p)).sum();
    let redis_cpu0 = redis_pid.map_or(0.0, cpu_secs);
    let t = Instant::now();
    let (sent, mut lat) = relay_phase(pairs, args.rate, Duration::from_secs(args.duration)).await;
    let secs = t.elapsed().as_secs_f64();
    r.nodes_cpu = (pids.iter().map(|p| cpu_secs(*p)).sum::<f64>() - cpu0) / secs;
    r.redis_cpu = (redis_pid.map_or(0.0, cpu_secs) - redis_cpu0) / secs;
    r.relay_sent = sent;
    r.relay_received = lat.len();
    lat.sort_unstable();
    (r.p50_us, r.p99_us, r.max_us) = (pct(&lat, 0.50), pct(&lat, 0.99), lat.last().copied().unwrap_or(0));
    eprintln!("[{name}] relay: sent {sent}, received {}, p50 {} us, p99 {} us", r.relay_received, r.p50_us, r.p99_us);
    drop(conns);
    drop(nodes);
    drop(redis);
    r
}

/// Opens `n` sessions, session i on node `i % nodes`, from 127.0.0.2, 127.0.0.3, ... (20,000
/// per source address). Returns each node's sessions.
async fn open_sessions(nodes: &[SocketAddr], n: usize, concurrency: usize) -> Vec<Vec<Ws>> {
    let sem = Arc::new(Semaphore::new(concurrency));
    let failures = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let sem = sem.clone();
        let failures = failures.clone();
        let server = nodes[i % nodes.len()];
        let src = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i / 20_000) as u8));
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.unwrap();
            for _attempt in 0..3 {
                match open_one(server, src).await {
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
    let mut out: Vec<Vec<Ws>> = nodes.iter().map(|_| Vec::new()).collect();
    for (i, t) in tasks.into_iter().enumerate() {
        if let Some(ws) = t.await.unwrap() {
            out[i % nodes.len()].push(ws);
        }
    }
    let f = failures.load(Ordering::Relaxed);
    if f > 0 {
        eprintln!("  ({f} connection attempts failed and were retried)");
    }
    out
}

async fn open_one(server: SocketAddr, src: IpAddr) -> Result<Ws, String> {
    let mut ws = common::connect(server, src).await?;
    common::hello(&mut ws, None, None).await?;
    Ok(ws)
}

/// K pairs (rooms by code): the first member sends signals at `rate / K` per second, the
/// second receives. Returns (signals sent, latencies in microseconds).
async fn relay_phase(pairs: Vec<(Ws, Ws)>, rate: u64, duration: Duration) -> (u64, Vec<u64>) {
    let mut ready = Vec::with_capacity(pairs.len());
    for (i, (mut a, mut b)) in pairs.into_iter().enumerate() {
        let join = ClientFrame::with_id(10, ClientMessage::JoinRoom { code: format!("bench-{i}") }).to_json();
        for ws in [&mut a, &mut b] {
            ws.send(Message::text(join.clone())).await.unwrap();
            loop {
                let msg = ws.next().await.unwrap().unwrap();
                if msg.to_text().unwrap().contains("\"room_joined\"") {
                    break;
                }
            }
        }
        for ws in [&mut a, &mut b] {
            loop {
                let msg = ws.next().await.unwrap().unwrap();
                if msg.to_text().unwrap().contains("\"matched\"") {
                    break;
                }
            }
        }
        ready.push((a, b));
    }
    common::relay(ready, Target::Duet, rate, duration).await
}

/// Each round's headline numbers, and their medians.
fn print_rounds(rounds: &[(Results, Results)]) {
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let pick = |f: fn(&Results) -> f64, single: bool| -> Vec<f64> {
        rounds.iter().map(|(s, c)| f(if single { s } else { c })).collect()
    };
    let pairings: fn(&Results) -> f64 = |r| r.pairings_per_sec;
    let p99: fn(&Results) -> f64 = |r| r.p99_us as f64 / 1000.0;
    println!();
    println!("| round | pairings/s: 1 node / 2 nodes | relay p99: 1 node / 2 nodes |");
    println!("|---|---|---|");
    for (i, (s, c)) in rounds.iter().enumerate() {
        println!("| {} | {:.0} / {:.0} | {:.2} / {:.2} ms |", i + 1, pairings(s), pairings(c), p99(s), p99(c));
    }
    println!(
        "| median | {:.0} / {:.0} | {:.2} / {:.2} ms |",
        median(pick(pairings, true)),
        median(pick(pairings, false)),
        median(pick(p99, true)),
        median(pick(p99, false))
    );
}

fn print_table(args: &Args, s: &Results, c: &Results) {
    let row = |label: &str, single: String, cluster: String, target: &str| {
        println!("| {label} | {single} | {cluster} | {target} |");
    };
    let ms = |us: u64| format!("{:.2} ms", us as f64 / 1000.0);
    let mib = |kib: u64| format!("{:.0} MiB", kib as f64 / 1024.0);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    println!();
    println!("duet-server multi-node load benchmark ({cores} cores)");
    println!("| metric | 1 node, in memory | 2 nodes + Redis | target |");
    println!("|---|---|---|---|");
    let held = |r: &Results| {
        let per: Vec<String> = r.held_per_node.iter().map(|n| n.to_string()).collect();
        format!("{} ({})", r.held(), per.join(" + "))
    };
    row("sessions held (per node)", held(s), held(c), &args.sessions.to_string());
    row("time to open them", format!("{:.1} s", s.hold_secs), format!("{:.1} s", c.hold_secs), "");
    let nodes_rss = |r: &Results| r.node_rss_held_kib.iter().map(|k| mib(*k)).collect::<Vec<_>>().join(" + ");
    row("node RSS holding them", nodes_rss(s), nodes_rss(c), "");
    row(
        "Redis RSS (before → holding)",
        "-".into(),
        format!("{} → {}", mib(c.redis_rss_base_kib), mib(c.redis_rss_held_kib)),
        "",
    );
    let per = |r: &Results| format!("{:.1} KiB", r.kib_per_session());
    row("memory per session (nodes + Redis)", per(s), per(c), "");
    let label = |r: &Results| format!("{:.0} ({} pairs)", r.pairings_per_sec, r.pairs_matched);
    row("pairings per second, service-wide (pairs queued at once)", label(s), label(c), "2 nodes ≥ 1 node");
    let counts = |r: &Results| format!("{} / {}", r.relay_sent, r.relay_received);
    row("relay: signals sent / received", counts(s), counts(c), "none lost");
    let rate = |r: &Results| format!("{:.0}/s", r.relay_sent as f64 / args.duration as f64);
    row("relay: offered rate", rate(s), rate(c), &format!("{}/s", args.rate));
    row("relay latency p50", ms(s.p50_us), ms(c.p50_us), "");
    row("relay latency p99", ms(s.p99_us), ms(c.p99_us), "< 5 ms");
    row("relay latency max", ms(s.max_us), ms(c.max_us), "");
    let cpu = |r: &Results| format!("{:.0}% of a core", r.nodes_cpu * 100.0);
    row("nodes' CPU while relaying (sum)", cpu(s), cpu(c), "");
    row("Redis CPU while relaying", "-".into(), format!("{:.0}% of a core", c.redis_cpu * 100.0), "");
}
