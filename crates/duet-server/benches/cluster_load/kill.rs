//! Phase 4 of `cluster_load`: a node killed under load (issue 15: "no session lost when a node is
//! killed under load").
//!
//! Three `duet-server` processes share one `redis-server` and one resume secret. P pairs are made
//! through the shared pool; each pair shares an interest no other pair has, so the layout is
//! chosen: pair i has its first member on node i % 3 and its second on node (i / 3) % 3, which
//! puts two pairs in three across two nodes. Every session sends a signal every
//! `--kill-signal-ms`. Then node 0 is SIGKILLed. Its clients see their sockets drop and reconnect
//! as real clients do (exponential backoff from 100 ms, doubling, at most 2 s, full jitter) to the
//! surviving nodes in turn (round robin, as a load balancer would send them), with
//! `hello {resume_token}`. A client answers `peer_resumed` at once with a signal (the ICE restart a
//! real client sends). Everything each client sees is recorded with its time and judged at the end.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use duet_proto::*;
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{self, Ws, candidate_tag, pct, signal_frame};
use crate::{Args, Node, http_get, node_command, spawn_node, start_redis, wait_healthy};

const NODES: usize = 3;
/// The node that is killed.
const VICTIM: usize = 0;
const SECRET: &str = "one resume secret for the whole benchmark service";
const BACKOFF_BASE_MS: u64 = 100;
const BACKOFF_MAX_MS: u64 = 2_000;
/// Senders stop this long before the end, so that what they sent has time to arrive.
const DRAIN: Duration = Duration::from_millis(1_500);
/// Signals sent this long before the kill count as in flight when it happened.
const IN_FLIGHT_MS: f64 = 2_000.0;
/// Pairs queued at once while pairing up.
const WAVE: usize = 400;
/// Signal frames carry `id = SIGNAL_ID + their number`, so a refusal names the signal.
const SIGNAL_ID: u64 = 1_000;

/// The node of client `idx` (pair `idx / 2`; even: first member, odd: second).
fn node_of(idx: usize) -> usize {
    let pair = idx / 2;
    if idx.is_multiple_of(2) { pair % NODES } else { (pair / NODES) % NODES }
}

/// What one client saw, times in ms since the phase began.
#[derive(Default, Debug)]
struct Record {
    idx: usize,
    node0: usize,
    session0: String,
    /// Signals sent: number → when.
    sent: HashMap<u64, f64>,
    /// Signals answered with an error (not relayed, and the client was told).
    refused: HashSet<u64>,
    /// Signals received: (sender, number, when).
    received: Vec<(usize, u64, f64)>,
    reconnecting: Vec<f64>,
    resumed: Vec<f64>,
    left: Vec<(f64, String)>,
    /// The socket dropped: when, why.
    dropped: Vec<(f64, String)>,
    /// `welcome`s after reconnecting.
    welcomes: Vec<Welcomed>,
    failed_attempts: u32,
    errors: Vec<(f64, String)>,
    /// Frames a client in a call should not get (`matched`, `queued`, ...).
    unexpected: Vec<(f64, String)>,
}

#[derive(Debug)]
struct Welcomed {
    at: f64,
    node: usize,
    session: String,
    restored: bool,
}

/// What all clients share.
struct Shared {
    epoch: Instant,
    addrs: Vec<SocketAddr>,
    /// Where clients reconnect: the surviving nodes, in turn.
    survivors: Vec<usize>,
    next_survivor: AtomicUsize,
    send_until: Instant,
    end: Instant,
}

impl Shared {
    fn ms(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64() * 1000.0
    }
}

struct Client {
    rec: Record,
    ws: Option<Ws>,
    token: String,
    last_seq: u64,
    signals: u64,
}

pub struct KillResults {
    records: Vec<Record>,
    kill_ms: f64,
    setup_secs: f64,
    node_ids: Vec<String>,
    logs: Vec<PathBuf>,
    /// The survivors' `/api/webrtc/stats` at the end.
    stats: Vec<String>,
    /// What other nodes wrote to the killed node's inbox after the kill (nobody reads it):
    /// kind of message → count, and the signals found there as (sender, number).
    dead_inbox: HashMap<String, usize>,
    dead_inbox_signals: HashSet<(usize, u64)>,
}

fn src() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))
}

pub async fn run(args: &Args) -> KillResults {
    let t0 = Instant::now();
    let (redis, port) = start_redis();
    let dir = std::env::temp_dir().join(format!("duet-cluster-kill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let node_ids: Vec<String> = (1..=NODES).map(|i| format!("k{i}")).collect();
    let logs: Vec<PathBuf> = node_ids.iter().map(|id| dir.join(format!("{id}.log"))).collect();
    let mut nodes: Vec<Option<Node>> = node_ids
        .iter()
        .zip(&logs)
        .map(|(id, log)| {
            let mut c = node_command(&args.kill_log, Some((port, id)));
            // Pairs are made by a shared interest: nobody settles for a stranger meanwhile.
            c.args(["--interest-wait-ms", "600000"]).env("DUET_RESUME_SECRET", SECRET);
            Some(spawn_node(c.stderr(File::create(log).unwrap())))
        })
        .collect();
    let addrs: Vec<SocketAddr> = nodes.iter().flatten().map(|n| n.addr).collect();
    for a in &addrs {
        wait_healthy(*a).await;
    }
    let mut clients = pair_up(&addrs, args.kill_pairs, args.concurrency).await;
    let setup_secs = t0.elapsed().as_secs_f64();

    let epoch = Instant::now();
    let kill_at = epoch + Duration::from_secs(args.kill_warmup);
    let end = kill_at + Duration::from_secs(args.kill_observe);
    let shared = Arc::new(Shared {
        epoch,
        addrs: addrs.clone(),
        survivors: (0..NODES).filter(|n| *n != VICTIM).collect(),
        next_survivor: AtomicUsize::new(0),
        send_until: end - DRAIN,
        end,
    });
    let interval = Duration::from_millis(args.kill_signal_ms);
    let n = clients.len();
    let mut tasks = Vec::with_capacity(n);
    for (i, c) in clients.drain(..).enumerate() {
        // Spread the clients' ticks over one interval.
        let first = epoch + interval.mul_f64(i as f64 / n as f64);
        tasks.push(tokio::spawn(c.run(shared.clone(), first, interval)));
    }
    tokio::time::sleep_until(kill_at.into()).await;
    let mut victim = nodes[VICTIM].take().unwrap();
    let kill_ms = shared.ms();
    let kill_unix_ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis();
    victim.proc.child.kill().unwrap(); // SIGKILL
    eprintln!(
        "[kill] node {} SIGKILLed at +{:.1} s; watching for {} s",
        node_ids[VICTIM],
        kill_ms / 1000.0,
        args.kill_observe
    );
    let _ = victim.proc.child.wait();
    let mut records = Vec::with_capacity(n);
    for t in tasks {
        records.push(t.await.unwrap());
    }
    let mut stats = Vec::new();
    for n in nodes.iter().flatten() {
        let answer = http_get(n.addr, "/api/webrtc/stats").await;
        stats.push(answer.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or(answer));
    }
    drop(nodes);
    let (dead_inbox, dead_inbox_signals) = dead_inbox(port, &node_ids[VICTIM], kill_unix_ms);
    drop(redis);
    KillResults { records, kill_ms, setup_secs, node_ids, logs, stats, dead_inbox, dead_inbox_signals }
}

/// The entries of the inbox stream of `node`'s last process (`duet:node:<address>:inbox`)
/// written at or after `since` (Unix ms; stream ids are Redis's clock, this machine's): their
/// kinds, and the signals in them.
fn dead_inbox(port: u16, node: &str, since: u128) -> (HashMap<String, usize>, HashSet<(usize, u64)>) {
    let redis_cli = |args: &[&str]| {
        std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "--raw"])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let address = redis_cli(&["GET", &duet_server::cluster::incarnation_key(node)]);
    let inbox = duet_server::cluster::inbox_key(address.trim());
    let out = redis_cli(&["XRANGE", &inbox, &since.to_string(), "+"]);
    let (mut kinds, mut signals) = (HashMap::new(), HashSet::new());
    for v in out.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()) {
        let kind = match (v["t"].as_str(), v["event"]["e"].as_str()) {
            (Some(t), Some(e)) => format!("{t}/{e}"),
            (Some(t), None) => t.to_string(),
            _ => "?".into(),
        };
        *kinds.entry(kind).or_default() += 1;
        if let Some(tag) = candidate_tag(&v.to_string())
            && let Some((from, n)) = tag.split_once('x')
            && let (Ok(from), Ok(n)) = (from.parse(), n.parse())
        {
            signals.insert((from, n));
        }
    }
    (kinds, signals)
}

/// Opens 2 × `pairs` sessions, each on its node, and pairs them through the shared pool: the
/// first members queue, then the second members, each with its pair's own interest. This goes in
/// waves of [`WAVE`] pairs, so that a first member is always among the entries the pool script
/// scans (it reads up to 1024).
async fn pair_up(addrs: &[SocketAddr], pairs: usize, concurrency: usize) -> Vec<Client> {
    let sem = Arc::new(Semaphore::new(concurrency));
    let open = |idx: usize| {
        let (sem, addr) = (sem.clone(), addrs[node_of(idx)]);
        tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.unwrap();
            for _attempt in 0..3 {
                if let Ok(mut ws) = common::connect(addr, src()).await
                    && let Ok(w) = common::hello(&mut ws, None, None).await
                {
                    return (ws, w);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("session {idx} could not be opened on {addr}");
        })
    };
    // true: matched, false: queued.
    let (queued_tx, mut queued_rx) = mpsc::unbounded_channel::<bool>();
    let join = |idx: usize, (ws, w): (Ws, ServerFrame)| {
        let queued_tx = queued_tx.clone();
        tokio::spawn(async move {
            let mut ws: Ws = ws;
            let ServerMessage::Welcome { session_id, resume_token, .. } = w.msg else { unreachable!() };
            let join = ClientMessage::JoinQueue { interests: vec![format!("pair-{}", idx / 2)], language: None };
            ws.send(Message::text(ClientFrame::with_id(2, join).to_json())).await.unwrap();
            let (mut peer, mut token, mut last_seq) = (None, resume_token, w.seq);
            // The pairing's token follows `matched`.
            while peer.is_none() || token.is_empty() {
                let msg = tokio::time::timeout(Duration::from_secs(60), ws.next()).await;
                let Ok(Some(Ok(Message::Text(t)))) = msg else { panic!("session {idx}: no pairing: {msg:?}") };
                let f = parse_server_frame(t.as_str()).unwrap();
                last_seq = last_seq.max(f.seq);
                match f.msg {
                    ServerMessage::Queued { .. } => {
                        let _ = queued_tx.send(false);
                    }
                    ServerMessage::Matched { peer: p, .. } => {
                        peer = Some(p.session_id);
                        token.clear();
                        let _ = queued_tx.send(true);
                    }
                    ServerMessage::Token { resume_token } if peer.is_some() => token = resume_token,
                    _ => {}
                }
            }
            let rec = Record { idx, node0: node_of(idx), session0: session_id, ..Record::default() };
            (Client { rec, ws: Some(ws), token, last_seq, signals: 0 }, peer.unwrap())
        })
    };
    let opened: Vec<_> = (0..2 * pairs).map(open).collect();
    let mut sessions = Vec::with_capacity(2 * pairs);
    for t in opened {
        sessions.push(Some(t.await.unwrap()));
    }
    let mut joining: Vec<Option<_>> = (0..2 * pairs).map(|_| None).collect();
    for first in (0..pairs).step_by(WAVE) {
        let wave = first..(first + WAVE).min(pairs);
        for p in wave.clone() {
            joining[2 * p] = Some(join(2 * p, sessions[2 * p].take().unwrap()));
        }
        let mut queued = 0;
        while queued < wave.len() {
            queued += usize::from(!next_event(&mut queued_rx).await);
        }
        for p in wave.clone() {
            joining[2 * p + 1] = Some(join(2 * p + 1, sessions[2 * p + 1].take().unwrap()));
        }
        let mut matched = 0;
        while matched < 2 * wave.len() {
            matched += usize::from(next_event(&mut queued_rx).await);
        }
    }
    let mut clients = Vec::with_capacity(2 * pairs);
    let mut peers = Vec::with_capacity(2 * pairs);
    for t in joining {
        let (c, peer) = t.unwrap().await.unwrap();
        clients.push(c);
        peers.push(peer);
    }
    for (idx, peer) in peers.iter().enumerate() {
        assert_eq!(*peer, clients[idx ^ 1].rec.session0, "session {idx} is paired with its pair's other member");
    }
    clients
}

/// The next queued (false) or matched (true) of the pairing, within a minute.
async fn next_event(rx: &mut mpsc::UnboundedReceiver<bool>) -> bool {
    tokio::time::timeout(Duration::from_secs(60), rx.recv()).await.expect("pairing up stalled").unwrap()
}

impl Client {
    async fn run(mut self, shared: Arc<Shared>, first: Instant, interval: Duration) -> Record {
        let mut tick = tokio::time::interval_at(first.into(), interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let Some(ws) = self.ws.as_mut() else {
                if self.reconnect(&shared).await {
                    continue;
                }
                break;
            };
            tokio::select! {
                _ = tick.tick() => {
                    if Instant::now() < shared.send_until {
                        self.signal(&shared).await;
                    }
                }
                msg = ws.next() => match msg {
                    Some(Ok(Message::Text(t))) => self.on_frame(t.as_str(), &shared).await,
                    Some(Ok(Message::Close(frame))) => self.dropped(&shared, format!("close {frame:?}")),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => self.dropped(&shared, e.to_string()),
                    None => self.dropped(&shared, "end of stream".into()),
                },
                _ = tokio::time::sleep_until(shared.end.into()) => break,
            }
        }
        self.rec
    }

    fn dropped(&mut self, shared: &Shared, why: String) {
        if Instant::now() < shared.end {
            self.rec.dropped.push((shared.ms(), why));
        }
        self.ws = None;
    }

    /// Sends the next numbered signal (with the ack of what was processed).
    async fn signal(&mut self, shared: &Shared) {
        let Some(ws) = self.ws.as_mut() else { return };
        self.signals += 1;
        let n = self.signals;
        // The candidate's tag names the sender and the signal: `<idx>x<n>`.
        let frame = signal_frame(SIGNAL_ID + n, self.last_seq, format_args!("{}x{n}", self.rec.idx));
        let at = shared.ms();
        match ws.send(Message::text(frame.to_json())).await {
            Ok(()) => {
                self.rec.sent.insert(n, at);
            }
            Err(e) => self.dropped(shared, format!("send: {e}")),
        }
    }

    async fn on_frame(&mut self, text: &str, shared: &Shared) {
        let Ok(f) = parse_server_frame(text) else { return };
        self.last_seq = self.last_seq.max(f.seq);
        // At the end the clients close one after the other: what their partners hear then is
        // not part of the measurement.
        if Instant::now() >= shared.end {
            return;
        }
        let at = shared.ms();
        match f.msg {
            ServerMessage::Signal { payload: SignalPayload::Candidate { candidate }, .. } => {
                if let Some((from, n)) = candidate_tag(&candidate.candidate).and_then(|t| t.split_once('x'))
                    && let (Ok(from), Ok(n)) = (from.parse(), n.parse())
                {
                    self.rec.received.push((from, n, at));
                }
            }
            ServerMessage::PeerReconnecting { .. } => self.rec.reconnecting.push(at),
            ServerMessage::PeerResumed => {
                self.rec.resumed.push(at);
                // A real client restarts ICE at once.
                self.signal(shared).await;
            }
            ServerMessage::PeerLeft { reason } => self.rec.left.push((at, format!("{reason:?}"))),
            ServerMessage::Token { resume_token } => self.token = resume_token,
            ServerMessage::Error { code, message } => {
                if let Some(n) = f.reply_to.and_then(|id| id.checked_sub(SIGNAL_ID)) {
                    self.rec.refused.insert(n);
                }
                self.rec.errors.push((at, format!("{}: {message}", code.as_str())));
            }
            ServerMessage::Ok | ServerMessage::Pong { .. } => {}
            other => self.rec.unexpected.push((at, other.kind().to_string())),
        }
    }

    /// Reconnects to a surviving node with the session's token, with exponential backoff and
    /// full jitter. False when the phase ended first.
    async fn reconnect(&mut self, shared: &Shared) -> bool {
        for attempt in 0u32.. {
            let cap = BACKOFF_BASE_MS.saturating_mul(1 << attempt.min(20)).min(BACKOFF_MAX_MS);
            let wake = Instant::now() + Duration::from_millis(rand::rng().random_range(0..=cap));
            if wake >= shared.end {
                return false;
            }
            tokio::time::sleep_until(wake.into()).await;
            let node = shared.survivors[shared.next_survivor.fetch_add(1, Ordering::Relaxed) % shared.survivors.len()];
            let ack = (self.last_seq > 0).then_some(self.last_seq);
            let opened = async {
                let mut ws = common::connect(shared.addrs[node], src()).await?;
                let w = common::hello(&mut ws, Some(self.token.clone()), ack).await?;
                Ok::<_, String>((ws, w))
            };
            match opened.await {
                Ok((ws, w)) => {
                    let ServerMessage::Welcome { session_id, resume_token, restored, .. } = w.msg else {
                        unreachable!()
                    };
                    let at = shared.ms();
                    self.rec.welcomes.push(Welcomed { at, node, session: session_id, restored });
                    self.token = resume_token;
                    // A session restored on another node numbers its messages afresh.
                    self.last_seq = w.seq;
                    self.ws = Some(ws);
                    return true;
                }
                Err(_) => self.rec.failed_attempts += 1,
            }
        }
        false
    }
}

/// "p50 / p99 / max" of the durations `v` (ms), in seconds.
fn spread(v: &mut [f64]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    v.sort_by(f64::total_cmp);
    format!("{:.2} / {:.2} / {:.2} s", pct(v, 0.5) / 1000.0, pct(v, 0.99) / 1000.0, v[v.len() - 1] / 1000.0)
}

/// Delivered / sent of `from`'s signals sent in `[start, stop)`, not counting refused ones.
fn delivered(from: &Record, to: &Record, start: f64, stop: f64) -> (usize, usize) {
    let (missing, sent) = undelivered(from, to, start, stop);
    (sent - missing.len(), sent)
}

/// The numbers of `from`'s signals sent in `[start, stop)` (not refused) that `to` never got,
/// and how many were sent.
fn undelivered(from: &Record, to: &Record, start: f64, stop: f64) -> (Vec<u64>, usize) {
    let got: HashSet<u64> = to.received.iter().filter(|(f, _, _)| *f == from.idx).map(|(_, n, _)| *n).collect();
    let sent: Vec<u64> = from
        .sent
        .iter()
        .filter(|(n, t)| **t >= start && **t < stop && !from.refused.contains(n))
        .map(|(n, _)| *n)
        .collect();
    let n = sent.len();
    (sent.into_iter().filter(|n| !got.contains(n)).collect(), n)
}

/// When `to` first received a signal `from` sent at or after `since`.
fn first_arrival(from: &Record, to: &Record, since: f64) -> Option<f64> {
    to.received
        .iter()
        .filter(|(f, n, _)| *f == from.idx && from.sent.get(n).is_some_and(|t| *t >= since))
        .map(|(_, _, at)| *at)
        .min_by(f64::total_cmp)
}

pub fn print_table(args: &Args, r: &KillResults) {
    let k = r.kill_ms;
    let recs = &r.records;
    let victim = |m: &Record| m.node0 == VICTIM;
    let after = |v: &[f64]| v.iter().copied().find(|t| *t >= k);
    let end_ms = k + args.kill_observe as f64 * 1000.0;
    let send_stop = end_ms - DRAIN.as_secs_f64() * 1000.0;
    let restored = |m: &Record| m.welcomes.last().is_some_and(|w| w.session == m.session0);

    let on_victim: Vec<&Record> = recs.iter().filter(|m| victim(m)).collect();
    let back: Vec<&Record> = on_victim.iter().copied().filter(|m| restored(m)).collect();
    let mut reconnect_ms: Vec<f64> =
        back.iter().filter_map(|m| m.welcomes.iter().find(|w| w.session == m.session0)).map(|w| w.at - k).collect();
    let failed_attempts: u32 = on_victim.iter().map(|m| m.failed_attempts).sum();
    let restored_flag = back.iter().filter(|m| m.welcomes.last().is_some_and(|w| w.restored)).count();

    let mut affected = 0;
    let mut rejoined = 0;
    let mut whole_ms = Vec::new();
    let mut lost: Vec<String> = Vec::new();
    let mut told = Vec::new();
    let mut partners = 0;
    let (mut away_ok, mut away_sent, mut away_in_dead) = (0, 0, 0);
    let (mut flight_ok, mut flight_sent) = (0, 0);
    let (mut vflight_ok, mut vflight_sent) = (0, 0);
    let (mut post_ok, mut post_sent) = (0, 0);
    let (mut calm_ok, mut calm_sent, mut calm_hurt) = (0, 0, 0);
    let mut layouts: HashMap<&str, usize> = HashMap::new();
    for pair in recs.chunks(2) {
        let [a, b] = pair else { continue };
        let both = [(a, b), (b, a)];
        if !victim(a) && !victim(b) {
            for (m, o) in both {
                let (ok, sent) = delivered(m, o, 0.0, send_stop);
                (calm_ok, calm_sent) = (calm_ok + ok, calm_sent + sent);
            }
            if [a, b].iter().any(|m| !m.dropped.is_empty() || !m.left.is_empty() || !m.reconnecting.is_empty()) {
                calm_hurt += 1;
            }
            continue;
        }
        affected += 1;
        let layout = if victim(a) && victim(b) { "both on the killed node" } else { "across nodes" };
        *layouts.entry(layout).or_default() += 1;
        let mut why = Vec::new();
        for m in [a, b] {
            if victim(m) {
                match m.welcomes.last() {
                    None => why.push(format!(
                        "{} ({}): never back ({} failed attempts; dropped: {:?})",
                        m.session0, r.node_ids[m.node0], m.failed_attempts, m.dropped
                    )),
                    Some(w) if w.session != m.session0 => why.push(format!(
                        "{} ({}): token not taken on {}, new session {}",
                        m.session0, r.node_ids[m.node0], r.node_ids[w.node], w.session
                    )),
                    Some(_) => {}
                }
            } else if !m.dropped.is_empty() {
                why.push(format!("{} ({}, survivor): socket dropped {:?}", m.session0, r.node_ids[m.node0], m.dropped));
            }
            if let Some((t, reason)) = m.left.iter().find(|(t, _)| *t >= k) {
                why.push(format!("{}: peer_left {reason} at +{:.1} s after the kill", m.session0, (t - k) / 1000.0));
            }
        }
        for (m, o) in both {
            if !victim(m) && victim(o) {
                partners += 1;
                if let Some(t) = after(&m.reconnecting) {
                    told.push(t - k);
                }
                let until = after(&m.resumed).unwrap_or(end_ms).min(send_stop);
                let (missing, sent) = undelivered(m, o, k, until);
                (away_ok, away_sent) = (away_ok + sent - missing.len(), away_sent + sent);
                away_in_dead += missing.iter().filter(|n| r.dead_inbox_signals.contains(&(m.idx, **n))).count();
                let (ok, sent) = delivered(m, o, k - IN_FLIGHT_MS, k);
                (flight_ok, flight_sent) = (flight_ok + ok, flight_sent + sent);
            }
            if victim(m) {
                let (ok, sent) = delivered(m, o, k - IN_FLIGHT_MS, k);
                (vflight_ok, vflight_sent) = (vflight_ok + ok, vflight_sent + sent);
            }
        }
        let resumed: Vec<Option<f64>> = [a, b].iter().map(|m| after(&m.resumed)).collect();
        for (m, at) in [a, b].iter().zip(&resumed) {
            if at.is_none() {
                why.push(format!("{} ({}): no peer_resumed", m.session0, r.node_ids[m.node0]));
            }
        }
        let mut arrivals = Vec::new();
        for ((m, o), at) in both.iter().zip(&resumed) {
            let Some(at) = at else { continue };
            let (ok, sent) = delivered(m, o, *at, send_stop);
            (post_ok, post_sent) = (post_ok + ok, post_sent + sent);
            match first_arrival(m, o, *at) {
                Some(t) => arrivals.push(t),
                None => why.push(format!("{} → {}: no signal after peer_resumed arrived", m.session0, o.session0)),
            }
        }
        if why.is_empty() && arrivals.len() == 2 {
            rejoined += 1;
            whole_ms.push(arrivals.iter().copied().fold(0.0, f64::max) - k);
        } else {
            lost.push(format!(
                "pair {} ({} + {}): {}",
                a.idx / 2,
                r.node_ids[a.node0],
                r.node_ids[b.node0],
                why.join("; ")
            ));
        }
    }
    let survivors: Vec<&Record> = recs.iter().filter(|m| !victim(m)).collect();
    let survivors_kept = survivors.iter().filter(|m| m.dropped.is_empty() && m.welcomes.is_empty()).count();
    let sessions_lost = on_victim.len() - back.len() + survivors.len() - survivors_kept;
    let last_whole = whole_ms.iter().copied().fold(0.0, f64::max);
    let errors: usize = recs.iter().map(|m| m.errors.len()).sum();
    let refused: usize = recs.iter().map(|m| m.refused.len()).sum();
    let unexpected: usize = recs.iter().map(|m| m.unexpected.len()).sum();
    let told_n = told.len();
    let per_node: Vec<String> =
        (0..NODES).map(|n| format!("{} {}", r.node_ids[n], recs.iter().filter(|m| m.node0 == n).count())).collect();
    let crossing = recs.chunks(2).filter(|p| p[0].node0 != p[1].node0).count();

    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let row = |label: &str, value: String, target: &str| println!("| {label} | {value} | {target} |");
    println!();
    println!("duet-server: one of three nodes SIGKILLed under load ({cores} cores)");
    println!("| metric | measured | target |");
    println!("|---|---|---|");
    row(
        "pairs held (sessions per node)",
        format!("{} ({}), {crossing} pairs across two nodes", recs.len() / 2, per_node.join(", ")),
        "",
    );
    row(
        "load: one signal per session every",
        format!(
            "{} ms ({:.0} signals/s); setup took {:.1} s",
            args.kill_signal_ms,
            recs.len() as f64 * 1000.0 / args.kill_signal_ms as f64,
            r.setup_secs
        ),
        "",
    );
    row("sessions on the killed node", on_victim.len().to_string(), "");
    row(
        "sessions restored (same session id, on a surviving node)",
        format!("{} / {} ({restored_flag} marked `restored`)", back.len(), on_victim.len()),
        "all",
    );
    row("kill → restored `welcome`, p50 / p99 / max", spread(&mut reconnect_ms), "");
    row("failed reconnect attempts", failed_attempts.to_string(), "");
    let mut lay: Vec<String> = layouts.iter().map(|(l, n)| format!("{n} {l}")).collect();
    lay.sort();
    row("pairings touching the killed node", format!("{affected} ({})", lay.join(", ")), "");
    row(
        "pairings rejoined (both `peer_resumed`, then a signal arrived each way)",
        format!("{rejoined} / {affected}"),
        "all",
    );
    row("sessions lost / pairings lost", format!("{sessions_lost} / {}", lost.len()), "0 / 0");
    row(
        "partners (on surviving nodes) told `peer_reconnecting`",
        format!("{told_n} / {partners}, after the kill: {}", spread(&mut told)),
        "",
    );
    row("kill → pairing whole again, p50 / p99 / max", spread(&mut whole_ms), "");
    row("kill → last pairing whole again", format!("{:.2} s", last_whole / 1000.0), "");
    row(
        "survivors' signals sent while the partner was away: delivered / sent",
        format!("{away_ok} / {away_sent}"),
        "all",
    );
    row(
        "… of those lost: found in the killed node's inbox stream (written after the kill, never read)",
        format!("{away_in_dead} / {}", away_sent - away_ok),
        "",
    );
    row(
        "survivors' signals sent in the 2 s before the kill: delivered / sent",
        format!("{flight_ok} / {flight_sent}"),
        "",
    );
    row(
        "killed node's clients' signals sent in the 2 s before the kill: delivered / sent",
        format!("{vflight_ok} / {vflight_sent}"),
        "",
    );
    row("signals sent after `peer_resumed`: delivered / sent", format!("{post_ok} / {post_sent}"), "all");
    row(
        "sessions on the surviving nodes kept (socket never dropped)",
        format!("{survivors_kept} / {}", survivors.len()),
        "all",
    );
    row(
        "pairings not touching the killed node: disturbed; signals delivered / sent",
        format!("{calm_hurt}; {calm_ok} / {calm_sent}"),
        "0; all",
    );
    row("error replies (signals refused)", format!("{errors} ({refused})"), "");
    row("unexpected frames (matched, queued, ...)", unexpected.to_string(), "0");

    let mut reasons: HashMap<String, usize> = HashMap::new();
    for m in recs {
        for (_, e) in &m.errors {
            *reasons.entry(e.clone()).or_default() += 1;
        }
        for (_, u) in &m.unexpected {
            *reasons.entry(format!("unexpected {u}")).or_default() += 1;
        }
    }
    let mut inbox: Vec<String> = r.dead_inbox.iter().map(|(kind, n)| format!("{kind} {n}")).collect();
    inbox.sort();
    eprintln!(
        "[kill] written to {}'s inbox after the kill: {} ({} signals)",
        r.node_ids[VICTIM],
        inbox.join(", "),
        r.dead_inbox_signals.len()
    );
    if !reasons.is_empty() {
        eprintln!("[kill] errors and unexpected frames: {reasons:?}");
    }
    for s in &r.stats {
        let v: serde_json::Value = serde_json::from_str(s).unwrap_or_default();
        eprintln!(
            "[kill] node {}: sessions {}, sessions_restored_total {}, pairings_restored_total {}; service sessions {}",
            v["node"],
            v["sessions"],
            v["sessions_restored_total"],
            v["pairings_restored_total"],
            v["service"]["totals"]["sessions"]
        );
    }
    for l in lost.iter().take(40) {
        eprintln!("[kill] lost: {l}");
    }
    if lost.len() > 40 {
        eprintln!("[kill] ... and {} more lost pairings", lost.len() - 40);
    }
    let logs: Vec<String> = r.logs.iter().map(|p| p.display().to_string()).collect();
    eprintln!("[kill] node logs (RUST_LOG={}): {}", args.kill_log, logs.join(" "));
}
