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

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

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

/// Most requests, and most messages for other nodes, a clustered hub keeps queued for Redis.
/// While Redis is slow or away they wait (and are retried); beyond this many, new ones are
/// refused and counted (`store_backlog_refused_total`) instead of growing without bound.
pub const STORE_QUEUE: usize = 100_000;

/// Where a clustered hub's requests to the shared store go (see `crate::cluster`): pool
/// requests and messages for other nodes, each channel in the order the hub emitted them, each
/// holding at most [`STORE_QUEUE`].
#[derive(Debug, Clone)]
pub struct StoreSink {
    /// Requests to the shared pool.
    pub pool: mpsc::Sender<PoolOp>,
    /// Messages for other nodes: (node address, message).
    pub remote: mpsc::Sender<(String, RemoteMsg)>,
}

struct Inner {
    hub: Hub,
    conns: HashMap<ConnId, mpsc::Sender<Outgoing>>,
    sink: Option<StoreSink>,
    /// Requests and messages refused because the store's queue was full.
    store_refused: u64,
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
            inner: Mutex::new(Inner {
                hub: Hub::new(cfg, server_version),
                conns: HashMap::new(),
                sink: None,
                store_refused: 0,
            }),
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
    /// Counts a request the store's full queue refused (`full`), with a warning for the first
    /// of every 10,000.
    fn refused_by_store(&mut self, full: bool) {
        if full {
            if self.store_refused.is_multiple_of(10_000) {
                warn!(refused_so_far = self.store_refused + 1, "redis is not keeping up; requests for it refused");
            }
            self.store_refused += 1;
        }
    }

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
                        let full = matches!(sink.pool.try_send(*op), Err(TrySendError::Full(_)));
                        self.refused_by_store(full);
                    }
                    None => debug!("pool request without a store; dropped"),
                },
                Output::Remote { node, msg } => match &self.sink {
                    Some(sink) => {
                        let full = matches!(sink.remote.try_send((node, *msg)), Err(TrySendError::Full(_)));
                        self.refused_by_store(full);
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
        let inner = self.lock();
        Stats { store_backlog_refused_total: inner.store_refused, ..inner.hub.stats() }
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

#[cfg(test)]
mod tests {
    use duet_proto::{ClientFrame, ClientMessage, PROTOCOL_VERSION};

    use super::*;

    fn hello() -> ClientFrame {
        ClientFrame {
            id: Some(1),
            ack: None,
            msg: ClientMessage::Hello { version: PROTOCOL_VERSION, resume_token: None, client: None },
        }
    }

    #[test]
    fn requests_for_a_store_that_does_not_keep_up_are_refused_and_counted_not_queued_without_bound() {
        // Queues of two, which nobody reads (Redis stalled): every new session claims itself.
        let (pool, mut pool_rx) = mpsc::channel(2);
        let (remote, _remote_rx) = mpsc::channel(2);
        let cfg = HubConfig { cluster_node: Some("n@1".into()), ..HubConfig::default() };
        let backend = InMemoryBackend::with_store(cfg, "test", StoreSink { pool, remote });
        for _ in 0..3 {
            let (tx, _rx) = mpsc::channel(OUTGOING_QUEUE);
            let conn = backend.open(tx);
            backend.input(Input::Frame(conn, hello()));
        }
        assert_eq!(backend.stats().store_backlog_refused_total, 1);
        assert_eq!(backend.stats().sessions, 3, "the sessions themselves are served");
        // Once the store takes what waits, requests go through again.
        while pool_rx.try_recv().is_ok() {}
        let (tx, _rx) = mpsc::channel(OUTGOING_QUEUE);
        let conn = backend.open(tx);
        backend.input(Input::Frame(conn, hello()));
        assert_eq!(backend.stats().store_backlog_refused_total, 1);
        assert!(pool_rx.try_recv().is_ok());
    }
}
