//! HTTP on the same port as the WebSocket: `/ws` upgrade, health, ICE config, stats, metrics.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use duet_proto::{ErrorCode, PROTOCOL_VERSION};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tracing::debug;

use crate::access::{AccessConfig, Admission, Refusal, check_request};
use crate::backend::Backend;
use crate::cluster::directory::Directory;
use crate::cluster::{ServiceStats, StoreHealth};
use crate::guard::GuardConfig;
use crate::hub::TokenIce;
use crate::ws::{serve_socket, ws_config};

/// The server version reported by `/health` and `welcome`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// State shared by every HTTP connection.
pub struct AppState {
    /// The session backend.
    pub backend: Arc<dyn Backend>,
    /// When the server started.
    pub started: Instant,
    /// Per-connection limits.
    pub guard: GuardConfig,
    /// Set once shutdown began: `/health` answers 503 and upgrades are refused.
    pub shutting_down: AtomicBool,
    /// Live WebSocket connections.
    pub live_sockets: AtomicUsize,
    /// The listen address (the `Host` check depends on it being loopback).
    pub listen: SocketAddr,
    /// Allowed origins and connection caps.
    pub access: AccessConfig,
    /// Open connections, overall and per address.
    pub admission: Mutex<Admission>,
    /// Reachability of the shared store when the node runs with `--redis`.
    pub store: Option<Arc<StoreHealth>>,
    /// Every live node's counters and the service totals when the node runs with `--redis`.
    pub service: Option<Arc<ServiceStats>>,
    /// The service's session directory when the node runs with `--redis`.
    pub directory: Option<Directory>,
    /// Closes when the server is dropped (its `run` finished, or was dropped midway, as a
    /// killed process): the WebSocket tasks end with it.
    pub server_gone: tokio::sync::watch::Receiver<()>,
}

impl AppState {
    /// False while the node's shared store (Redis) is unreachable.
    pub fn store_ok(&self) -> bool {
        self.store.as_ref().is_none_or(|s| s.is_ok())
    }
}

impl AppState {
    /// Admits a new connection from `ip` (see [`Admission`]); the permit releases it when the
    /// connection, and any WebSocket it upgraded to, is gone.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Arc<Permit>, Refusal> {
        let mut admission = self.admission.lock().unwrap_or_else(|e| e.into_inner());
        admission.admit(&self.access, ip)?;
        Ok(Arc::new(Permit { state: self.clone(), ip }))
    }
}

/// An admitted connection; dropping the last clone releases it.
pub struct Permit {
    state: Arc<AppState>,
    ip: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.state.admission.lock().unwrap_or_else(|e| e.into_inner()).release(self.ip);
    }
}

type Body = Full<Bytes>;

/// Serves HTTP/1.1 (with upgrades) on one accepted stream; a connection that was not
/// admitted gets only the refusal, on every request.
pub async fn serve_http<S>(stream: S, state: Arc<AppState>, admitted: Result<Arc<Permit>, Refusal>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let state = state.clone();
        let admitted = admitted.clone();
        async move {
            Ok::<_, Infallible>(match admitted {
                Ok(permit) => route(req, state, permit).await,
                Err(refusal) => refused(refusal),
            })
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades();
    if let Err(err) = conn.await {
        debug!(error = %err, "http connection ended with an error");
    }
}

async fn route(req: Request<Incoming>, state: Arc<AppState>, permit: Arc<Permit>) -> Response<Body> {
    let path = req.uri().path().to_string();
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return json_response(StatusCode::METHOD_NOT_ALLOWED, json!({"error": "only GET and HEAD are supported"}));
    }
    let header_str = |name: header::HeaderName| req.headers().get(name).and_then(|v| v.to_str().ok());
    // HTTP/1.1 requests carry `Host`; an absolute URI also names it.
    let host = header_str(header::HOST).or_else(|| req.uri().authority().map(|a| a.as_str()));
    if let Err(refusal) = check_request(&state.access, state.listen, host, header_str(header::ORIGIN)) {
        debug!(?refusal, "request refused");
        return refused(refusal);
    }
    if state.shutting_down.load(Ordering::Relaxed) && path != "/health" {
        return json_response(StatusCode::SERVICE_UNAVAILABLE, json!({"error": "the server is shutting down"}));
    }
    match path.as_str() {
        "/ws" if !state.store_ok() => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "the service's shared store is unreachable; try again shortly"}),
        ),
        "/ws" => upgrade(req, state, permit),
        "/health" => health(&state),
        "/api/webrtc/config" => webrtc_config(&state, bearer(&req)).await,
        "/api/webrtc/stats" => stats(&state),
        "/metrics" => metrics(&state),
        "/" | "/index.html" => web("text/html; charset=utf-8", include_str!("../web/index.html")),
        "/app.js" => web("text/javascript; charset=utf-8", include_str!("../web/app.js")),
        "/style.css" => web("text/css; charset=utf-8", include_str!("../web/style.css")),
        _ => json_response(StatusCode::NOT_FOUND, json!({"error": "not found"})),
    }
}

/// The answer to a request turned away by [`check_request`] or admission.
fn refused(refusal: Refusal) -> Response<Body> {
    let status = match refusal {
        Refusal::ForeignOrigin | Refusal::ForeignHost => StatusCode::FORBIDDEN,
        Refusal::Full => StatusCode::SERVICE_UNAVAILABLE,
        Refusal::TooManyFromAddress => StatusCode::TOO_MANY_REQUESTS,
    };
    json_response(status, json!({"error": refusal.message()}))
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(req: &Request<Incoming>) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn upgrade(mut req: Request<Incoming>, state: Arc<AppState>, permit: Arc<Permit>) -> Response<Body> {
    let headers = req.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .any(|v| v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))))
    };
    let key = headers.get(header::SEC_WEBSOCKET_KEY).cloned();
    let version_ok = headers.get(header::SEC_WEBSOCKET_VERSION).is_some_and(|v| v == "13");
    let (Some(key), true, true, true) =
        (key, has_token(header::CONNECTION, "upgrade"), has_token(header::UPGRADE, "websocket"), version_ok)
    else {
        return json_response(
            StatusCode::UPGRADE_REQUIRED,
            json!({"error": "/ws is a WebSocket endpoint (protocol v1); connect with a WebSocket client"}),
        );
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                state.live_sockets.fetch_add(1, Ordering::Relaxed);
                let ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(ws_config())).await;
                let mut gone = state.server_gone.clone();
                tokio::select! {
                    _ = serve_socket(ws, state.backend.clone(), state.guard) => {}
                    _ = gone.changed() => {}
                }
                state.live_sockets.fetch_sub(1, Ordering::Relaxed);
                drop(permit);
            }
            Err(err) => debug!(error = %err, "websocket upgrade failed"),
        }
    });
    let mut resp = Response::new(Body::default());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

fn health(state: &AppState) -> Response<Body> {
    let stats = state.backend.stats();
    let shutting_down = state.shutting_down.load(Ordering::Relaxed);
    let store_ok = state.store_ok();
    let status = if shutting_down || !store_ok { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    let mut body = json!({
            "status": if shutting_down { "shutting_down" } else if !store_ok { "unhealthy" } else { "ok" },
            "version": VERSION,
            "protocol": PROTOCOL_VERSION,
            "uptime_s": state.started.elapsed().as_secs(),
            "sessions": stats.sessions,
            "connections": stats.connections,
    });
    if !store_ok {
        body["reason"] = "redis unreachable".into();
    }
    if state.store.is_some() {
        body["store"] = if store_ok { "redis" } else { "redis_unreachable" }.into();
    }
    json_response(status, body)
}

/// ICE servers (with TURN credentials bound to the session) for a live session only: the
/// caller proves it with the session's resume token.
async fn webrtc_config(state: &AppState, token: Option<&str>) -> Response<Body> {
    let cfg = state.backend.hub_config();
    let grant = token.and_then(|t| state.backend.ice_servers_for_token(t));
    let live = match (&grant, &state.directory) {
        (Some(g), _) if g.held_here => true,
        // A session of another node of the service: live while the directory holds it.
        (Some(g), Some(directory)) => directory.is_live(&g.session).await,
        _ => false,
    };
    let Some(TokenIce { ice_servers, .. }) = grant.filter(|_| live) else {
        let mut resp = json_response(
            StatusCode::UNAUTHORIZED,
            json!({"error": "ICE servers are issued to live sessions only: send the session's resume token as Authorization: Bearer <token>"}),
        );
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return resp;
    };
    json_response(
        StatusCode::OK,
        json!({
            "ice_servers": ice_servers,
            "heartbeat_ms": cfg.heartbeat.as_millis() as u64,
            "resume_grace_ms": cfg.resume_grace.as_millis() as u64,
            "protocol": PROTOCOL_VERSION,
        }),
    )
}

fn stats(state: &AppState) -> Response<Body> {
    let stats = state.backend.stats();
    let mut value = serde_json::to_value(&stats).unwrap_or_else(|_| json!({}));
    value["uptime_s"] = state.started.elapsed().as_secs().into();
    value["live_sockets"] = state.live_sockets.load(Ordering::Relaxed).into();
    if let Some(service) = &state.service {
        // The fields above are this node's; `service` adds every live node's and the totals.
        let view = service.view();
        value["node"] = view.node.into();
        value["service"] = json!({
            "nodes": view.per_node.len(),
            "totals": view.totals,
            "per_node": view.per_node,
        });
    }
    json_response(StatusCode::OK, value)
}

/// Prometheus text exposition of the stats.
fn metrics(state: &AppState) -> Response<Body> {
    let s = state.backend.stats();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(out, "# HELP duet_{name} {help}\n# TYPE duet_{name} {kind}\nduet_{name} {value}");
    };
    metric("uptime_seconds", "gauge", "Seconds since the server started.", state.started.elapsed().as_secs());
    metric("sessions", "gauge", "Live sessions, with or without a socket.", s.sessions as u64);
    metric("sessions_detached", "gauge", "Sessions in their resume grace period.", s.sessions_detached as u64);
    metric("connections", "gauge", "Open WebSocket connections.", s.connections as u64);
    metric("queue_length", "gauge", "Clients waiting to be matched.", s.queue_length as u64);
    metric("rooms", "gauge", "Rooms with at least one member.", s.rooms as u64);
    metric("matches_total", "counter", "Pairs matched.", s.matches_total);
    metric("resumes_total", "counter", "Sessions resumed with a token.", s.resumes_total);
    metric("restarts_relayed_total", "counter", "Restart signals relayed between partners.", s.restarts_relayed_total);
    metric(
        "sessions_restored_total",
        "counter",
        "Sessions rebuilt from a token another server process signed.",
        s.sessions_restored_total,
    );
    metric(
        "pairings_restored_total",
        "counter",
        "Pairings rebuilt after a restart with both partners back.",
        s.pairings_restored_total,
    );
    metric("sessions_expired_total", "counter", "Sessions ended by grace expiry.", s.sessions_expired_total);
    metric("idle_timeouts_total", "counter", "Connections closed for silence.", s.idle_timeouts_total);
    metric("signals_relayed_total", "counter", "Signals relayed between peers.", s.signals_relayed_total);
    metric("reports_total", "counter", "Reports received.", s.reports_total);
    metric("blocks_total", "counter", "Blocks received.", s.blocks_total);
    metric("frames_in_total", "counter", "Frames received.", s.frames_in_total);
    metric("frames_out_total", "counter", "Frames sent.", s.frames_out_total);
    let refused = "Requests for Redis refused because its queue was full.";
    metric("store_backlog_refused_total", "counter", refused, s.store_backlog_refused_total);
    let _ = writeln!(out, "# HELP duet_errors_total Error replies by code.\n# TYPE duet_errors_total counter");
    for code in ErrorCode::ALL {
        let n = s.errors_total.get(&code).copied().unwrap_or(0);
        let _ = writeln!(out, "duet_errors_total{{code=\"{}\"}} {n}", code.as_str());
    }
    if let Some(service) = &state.service {
        service_metrics(&mut out, &service.view());
    }
    text_response(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", out)
}

/// The service totals (`duet_service_*`) and every live node's counters (`duet_node_*{node}`)
/// of a clustered node, as the nodes last published them to Redis.
fn service_metrics(out: &mut String, view: &crate::cluster::ServiceView) {
    let _ = writeln!(out, "# HELP duet_service_nodes Nodes whose counters are live in Redis.");
    let _ = writeln!(out, "# TYPE duet_service_nodes gauge\nduet_service_nodes {}", view.per_node.len());
    let Some(totals) = view.totals.as_object() else { return };
    for (name, total) in totals {
        let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
        if let Some(total) = total.as_u64() {
            let _ = writeln!(out, "# HELP duet_service_{name} {name}, summed over the live nodes.");
            let _ = writeln!(out, "# TYPE duet_service_{name} {kind}\nduet_service_{name} {total}");
            let _ = writeln!(out, "# HELP duet_node_{name} {name} of each live node.\n# TYPE duet_node_{name} {kind}");
            for (node, stats) in &view.per_node {
                let v = stats.get(name).and_then(|v| v.as_u64()).unwrap_or(0);
                let _ = writeln!(out, "duet_node_{name}{{node=\"{node}\"}} {v}");
            }
        } else if let Some(by_code) = total.as_object() {
            let _ = writeln!(out, "# HELP duet_service_{name} {name} by code, summed over the live nodes.");
            let _ = writeln!(out, "# TYPE duet_service_{name} {kind}");
            for (code, n) in by_code {
                let n = n.as_u64().unwrap_or(0);
                let _ = writeln!(out, "duet_service_{name}{{code=\"{code}\"}} {n}");
            }
        }
    }
}

/// A file of the browser client (embedded in the binary), with a strict content policy.
fn web(content_type: &'static str, body: &'static str) -> Response<Body> {
    let mut resp = text_response(StatusCode::OK, content_type, body.to_string());
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob: mediastream:; img-src 'self' data:",
        ),
    );
    resp
}

fn json_response(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    text_response(status, "application/json", value.to_string())
}

fn text_response(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
