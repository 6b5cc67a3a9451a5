//! The boundary between the socket layer and the matching/session state.
//!
//! Connection tasks talk only to a [`Backend`]: they register a connection with a channel
//! for its outgoing frames, feed it inputs, and read stats. [`InMemoryBackend`] runs one
//! [`Hub`] behind a mutex for a single server node; a shared-state backend (e.g. Redis, so
//! several nodes share one pool) implements the same trait.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};
use tracing::debug;

use crate::hub::{ConnId, Hub, HubConfig, Input, Now, Output, PoolOp, RemoteMsg, Stats, TokenIce};

/// Capacity of a connection's outgoing queue. A client that lets it fill up is too slow to
/// read its signaling and is disconnected (it may resume; nothing unacked is lost).
pub const OUTGOING_QUEUE: usize = 1024;
/// Longest sleep of the timer task, so deadlines are met within this much.
const TIMER_GRANULARITY: Duration = Duration::from_millis(50);

/// What a connection task must write to its socket.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    /// A text frame.
    Text(Arc<str>),
    /// A close frame with code and reason, after which the task ends.
    Close(u16, &'static str),
}

/// The state behind the sockets.
pub trait Backend: Send + Sync + 'static {
    /// Registers a new connection; frames for it arrive on `tx`.
    fn open(&self, tx: mpsc::Sender<Outgoing>) -> ConnId;
    /// Feeds a frame, a refusal or a close from a connection.
    fn input(&self, input: Input);
    /// Runs due timers; returns the next deadline.
    fn tick(&self) -> Option<Instant>;
    /// Current counters.
    fn stats(&self) -> Stats;
    /// ICE servers for the session holding resume token `token` (`/api/webrtc/config`), or
    /// `None` when no live session does (see [`crate::hub::Hub::ice_servers_for_token`]).
    fn ice_servers_for_token(&self, token: &str) -> Option<TokenIce>;
    /// The hub configuration (heartbeat, grace) announced to clients.
    fn hub_config(&self) -> HubConfig;
}

/// The current time from the system clocks.
pub fn now() -> Now {
    let unix_secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Now { mono: Instant::now(), unix_secs }
}

/// Where a clustered hub's requests to the shared store go (see `crate::cluster`): pool
/// requests and messages for other nodes, each channel in the order the hub emitted them.
#[derive(Debug, Clone)]
pub struct StoreSink {
    /// Requests to the shared pool.
    pub pool: mpsc::UnboundedSender<PoolOp>,
    /// Messages for other nodes: (node id, message).
    pub remote: mpsc::UnboundedSender<(String, RemoteMsg)>,
}

struct Inner {
    hub: Hub,
    conns: HashMap<ConnId, mpsc::Sender<Outgoing>>,
    sink: Option<StoreSink>,
}

/// One hub in this process: the default, single-node backend.
pub struct InMemoryBackend {
    inner: Mutex<Inner>,
    next_conn: AtomicU64,
}

impl InMemoryBackend {
    /// A backend around a new hub.
    pub fn new(cfg: HubConfig, server_version: &str) -> Self {
        Self {
            inner: Mutex::new(Inner { hub: Hub::new(cfg, server_version), conns: HashMap::new(), sink: None }),
            next_conn: AtomicU64::new(1),
        }
    }

    /// A backend around a hub that shares its pool through a store: the hub's pool requests
    /// and messages for other nodes go to `sink` (set `cfg.cluster_node`).
    pub fn with_store(cfg: HubConfig, server_version: &str, sink: StoreSink) -> Self {
        let backend = Self::new(cfg, server_version);
        backend.lock().sink = Some(sink);
        backend
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock would be a bug; keep serving with the state as is.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    /// Feeds one input and routes every output, all under the lock so frames for one
    /// connection are queued in sequence order.
    fn handle(&mut self, input: Input) {
        let now = now();
        self.hub.handle(now, input);
        self.route(now);
    }

    fn route(&mut self, now: Now) {
        let mut overflowed = Vec::new();
        while let Some(out) = self.hub.poll_output() {
            match out {
                Output::Send { conn, text } => {
                    if let Some(tx) = self.conns.get(&conn)
                        && tx.try_send(Outgoing::Text(text)).is_err()
                    {
                        overflowed.push(conn);
                        self.conns.remove(&conn);
                    }
                }
                Output::Close { conn, code, reason } => {
                    if let Some(tx) = self.conns.remove(&conn) {
                        let _ = tx.try_send(Outgoing::Close(code, reason));
                    }
                }
                Output::Pool(op) => match &self.sink {
                    Some(sink) => {
                        let _ = sink.pool.send(*op);
                    }
                    None => debug!("pool request without a store; dropped"),
                },
                Output::Remote { node, msg } => match &self.sink {
                    Some(sink) => {
                        let _ = sink.remote.send((node, *msg));
                    }
                    None => debug!("message for another node without a store; dropped"),
                },
            }
            for conn in overflowed.drain(..) {
                debug!(conn = conn.0, "outgoing queue full; dropping the connection");
                self.hub.handle(now, Input::Closed(conn));
            }
        }
    }
}

impl Backend for InMemoryBackend {
    fn open(&self, tx: mpsc::Sender<Outgoing>) -> ConnId {
        let conn = ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed));
        let mut inner = self.lock();
        inner.conns.insert(conn, tx);
        inner.handle(Input::Opened(conn));
        conn
    }

    fn input(&self, input: Input) {
        let mut inner = self.lock();
        if let Input::Closed(conn) = &input {
            inner.conns.remove(conn);
        }
        inner.handle(input);
    }

    fn tick(&self) -> Option<Instant> {
        let mut inner = self.lock();
        let now = now();
        inner.hub.handle_timeout(now);
        inner.route(now);
        inner.hub.poll_timeout()
    }

    fn stats(&self) -> Stats {
        self.lock().hub.stats()
    }

    fn ice_servers_for_token(&self, token: &str) -> Option<TokenIce> {
        self.lock().hub.ice_servers_for_token(now(), token)
    }

    fn hub_config(&self) -> HubConfig {
        self.lock().hub.config().clone()
    }
}

/// Drives a backend's timers until `stop` turns true.
pub async fn run_timers(backend: Arc<dyn Backend>, mut stop: watch::Receiver<bool>) {
    loop {
        let next = backend.tick();
        let cap = Instant::now() + TIMER_GRANULARITY;
        let wake = next.map_or(cap, |n| n.min(cap));
        tokio::select! {
            _ = tokio::time::sleep_until(wake.into()) => {}
            _ = stop.changed() => {
                backend.tick();
                return;
            }
        }
    }
}
