//! Binding, accepting (plain or TLS), and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::backend::{Backend, InMemoryBackend, run_timers};
use crate::cluster::{Cluster, ClusterError};
use crate::config::{ServerConfig, TlsFiles};
use crate::guard::GuardConfig;
use crate::http::{AppState, VERSION, serve_http};
use crate::hub::Input;

/// How long shutdown waits for sockets to take their close frames.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a draining node of a service waits for its sessions in rooms to be restored on
/// other nodes (their clients reconnect with backoff).
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a draining node waits for Redis to take its last requests.
const STORE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a TLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the server could not start.
#[derive(Debug, Error)]
pub enum ServerError {
    /// The listen address is taken or not allowed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS certificate or key is unusable.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The Redis driver could not start.
    #[error("Redis: {0}")]
    Cluster(#[from] ClusterError),
}

/// A bound server, ready to [`Server::run`].
pub struct Server {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: Arc<AppState>,
    cluster: Option<Cluster>,
    /// Dropped with the server: its WebSocket tasks end with it (see [`AppState::server_gone`]).
    _alive: watch::Sender<()>,
}

impl Server {
    /// Binds the listen address and loads TLS files; nothing is served until `run`.
    pub async fn bind(cfg: ServerConfig) -> Result<Self, ServerError> {
        let tls = cfg.tls.as_ref().map(load_tls).transpose()?;
        let listener =
            TcpListener::bind(cfg.listen).await.map_err(|source| ServerError::Bind { addr: cfg.listen, source })?;
        let cluster = cfg.redis.as_ref().map(|redis| Cluster::start(redis, cfg.hub.clone(), VERSION)).transpose()?;
        let backend: Arc<dyn Backend> = match &cluster {
            Some(c) => c.backend.clone(),
            None => Arc::new(InMemoryBackend::new(cfg.hub, VERSION)),
        };
        let (alive, server_gone) = watch::channel(());
        let state = Arc::new(AppState {
            backend,
            started: Instant::now(),
            guard: GuardConfig::default(),
            shutting_down: AtomicBool::new(false),
            live_sockets: AtomicUsize::new(0),
            listen: listener.local_addr().unwrap_or(cfg.listen),
            access: cfg.access,
            admission: Default::default(),
            store: cluster.as_ref().map(|c| c.health.clone()),
            service: cluster.as_ref().map(|c| c.service.clone()),
            directory: cluster.as_ref().map(|c| c.directory()),
            server_gone,
        });
        Ok(Self { listener, tls, state, cluster, _alive: alive })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// The WebSocket URL clients connect to.
    pub fn ws_url(&self) -> String {
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        format!("{scheme}://{}/ws", self.local_addr())
    }

    /// Serves until `shutdown` completes, then tells every client (`peer_left
    /// {reason: server_shutdown}` and a close frame) and waits briefly for them to go.
    ///
    /// Every task of the server belongs to this future: dropped before it completes, the
    /// server stops at once, as a killed process would (no goodbye, sockets cut).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut timers = AbortOnDrop(tokio::spawn(run_timers(self.state.backend.clone(), stop_rx)));
        let mut conns = JoinSet::new();
        info!(addr = %self.local_addr(), tls = self.tls.is_some(), version = VERSION, "listening");
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => self.accept(accepted, &mut conns).await,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        info!("shutting down");
        self.state.shutting_down.store(true, Ordering::Relaxed);
        self.state.backend.input(Input::Shutdown);
        // While the sockets drain, new requests are still answered: with 503.
        self.serve_until(&mut conns, DRAIN_TIMEOUT, || self.state.live_sockets.load(Ordering::Relaxed) == 0).await;
        if self.cluster.is_some() {
            // A node of a service hands its sessions over: the nodes that restore them get what
            // their clients had not processed (`Taken`, `Replay`) until none is left in a room.
            self.serve_until(&mut conns, HANDOVER_TIMEOUT, || self.state.backend.stats().rooms == 0).await;
        }
        let _ = stop_tx.send(true);
        let _ = (&mut timers.0).await;
        if let Some(cluster) = &self.cluster {
            // Drain: the waiting sessions' removal from the shared pool (emitted at shutdown)
            // and the partners' `peer_reconnecting` reach Redis before the node exits.
            cluster.flush(STORE_FLUSH_TIMEOUT).await;
            cluster.stop();
            // Its counters leave the service totals at once (not only when they expire).
            cluster.leave_service(STORE_FLUSH_TIMEOUT).await;
        }
        info!(remaining = self.state.live_sockets.load(Ordering::Relaxed), "stopped");
    }
}

impl Server {
    /// Goes on answering new connections (shutting down: with 503) until `done` holds, checked
    /// every 20 ms, or `patience` runs out.
    async fn serve_until(&self, conns: &mut JoinSet<()>, patience: Duration, done: impl Fn() -> bool) {
        let reached = async {
            while !done() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::pin!(reached);
        let deadline = tokio::time::sleep(patience);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut reached => break,
                _ = &mut deadline => break,
                accepted = self.listener.accept() => self.accept(accepted, conns).await,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    }

    /// Serves one accepted connection (admitted or only told why not) on its own task in `conns`.
    async fn accept(&self, accepted: std::io::Result<(tokio::net::TcpStream, SocketAddr)>, conns: &mut JoinSet<()>) {
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(err) => {
                // Usually out of file descriptors: back off instead of spinning.
                warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = self.state.clone();
        let admitted = state.admit(peer.ip());
        if let Err(refusal) = admitted {
            debug!(?refusal, "connection over the limits; answering with the refusal");
        }
        match self.tls.clone() {
            None => {
                conns.spawn(serve_http(stream, state, admitted));
            }
            Some(acceptor) => {
                conns.spawn(async move {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => serve_http(tls, state, admitted).await,
                        Ok(Err(err)) => debug!(%peer, error = %err, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

/// A task aborted when its handle is dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn load_tls(files: &TlsFiles) -> Result<TlsAcceptor, ServerError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| ServerError::Tls(format!("cannot read certificate {}: {e}", show(&files.cert))))?
        .collect::<Result<_, _>>()
        .map_err(|e| ServerError::Tls(format!("invalid certificate {}: {e}", show(&files.cert))))?;
    if certs.is_empty() {
        return Err(ServerError::Tls(format!("no certificate found in {}", show(&files.cert))));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| ServerError::Tls(format!("cannot read private key {}: {e}", show(&files.key))))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServerError::Tls(format!("certificate and key do not work together: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn show(path: &Path) -> String {
    path.display().to_string()
}
