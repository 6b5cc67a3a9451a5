//! Who may use the server: web pages on other sites and rebound host names are refused,
//! TURN credentials go to live sessions only, connections are capped, and a server that is
//! shutting down answers new requests with 503.
//!
//! The checks of origins, host names and TURN credentials run twice (`memory::` and `redis::`,
//! see [`common::Service`]), against the first client's node. Two tests run in one process
//! only: the connection cap is per process by design (docs/SCALING.md, "What is NOT done yet":
//! "Rate limits and connection caps are per node"), and the 503s of a process shutting down are
//! about that one process (a node's drain with Redis is in tests/cluster.rs).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use duet_proto::IceServer;
use duet_server::ServerConfig;
use duet_server::access::AccessConfig;
use duet_server::hub::HubConfig;
use duet_server::turn::{IceConfig, Secret, TurnRest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

both_modes!(
    a_page_on_another_origin_cannot_open_the_websocket,
    a_rebound_host_name_gets_nothing_from_a_loopback_server,
    a_configured_origin_is_allowed,
    turn_credentials_go_to_live_sessions_only_and_name_the_session,
);

/// The status line of a WebSocket handshake sent with these headers.
async fn handshake(server: &TestServer, host: &str, origin: Option<&str>) -> String {
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let origin = origin.map(|o| format!("Origin: {o}\r\n")).unwrap_or_default();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\n{origin}Connection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(STEP, s.read(&mut buf)).await.unwrap().unwrap();
    String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or_default().to_string()
}

async fn a_page_on_another_origin_cannot_open_the_websocket(mode: Mode) {
    let service = Service::start(mode, HubConfig::default()).await;
    let server = service.node(0);
    let host = server.addr.to_string();
    let own = format!("http://{host}");
    assert!(handshake(server, &host, Some(&own)).await.contains("101"), "the served browser client");
    assert!(handshake(server, &host, None).await.contains("101"), "native clients send no Origin");
    for foreign in ["https://evil.example", "http://127.0.0.1:1", "null"] {
        let status = handshake(server, &host, Some(foreign)).await;
        assert!(status.contains("403"), "{foreign}: {status}");
    }
}

async fn a_rebound_host_name_gets_nothing_from_a_loopback_server(mode: Mode) {
    let service = Service::start(mode, HubConfig::default()).await;
    let server = service.node(0);
    let rebound = format!("evil.example:{}", server.addr.port());
    let status = handshake(server, &rebound, Some(&format!("http://{rebound}"))).await;
    assert!(status.contains("403"), "{status}");
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (status, body) = http_get(stream, &rebound, "/api/webrtc/stats").await;
    assert_eq!(status, 403, "{body}");
}

async fn a_configured_origin_is_allowed(mode: Mode) {
    let access = AccessConfig { allowed_origins: vec!["https://duet.example".into()], ..AccessConfig::default() };
    let service = Service::from_config(mode, ServerConfig { access, ..ServerConfig::default() }).await;
    let server = service.node(0);
    let status = handshake(server, &server.addr.to_string(), Some("https://duet.example")).await;
    assert!(status.contains("101"), "{status}");
}

fn with_turn() -> HubConfig {
    let turn = TurnRest {
        urls: vec!["turn:127.0.0.1:3478".into()],
        secret: Secret::new("turn-secret"),
        ttl: Duration::from_secs(600),
    };
    HubConfig { ice: IceConfig { servers: vec![], turn: Some(turn) }, ..HubConfig::default() }
}

fn turn_user(servers: &serde_json::Value) -> String {
    let servers: Vec<IceServer> = serde_json::from_value(servers.clone()).unwrap();
    servers.iter().find_map(|s| s.username.clone()).expect("TURN credentials")
}

async fn turn_credentials_go_to_live_sessions_only_and_name_the_session(mode: Mode) {
    let service = Service::start(mode, with_turn()).await;
    let server = service.node(0);
    let (status, body) = server.get("/api/webrtc/config").await;
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains("turn:"), "{body}");
    let (status, _) = server.get_with("/api/webrtc/config", &[("Authorization", "Bearer d1.forged.token")]).await;
    assert_eq!(status, 401);

    let mut client = Client::connect(service.url(0)).await;
    let auth = format!("Bearer {}", client.token);
    // Any node of the service answers (a load balancer may send the request to any of them).
    for server in [service.node(0), service.node(1)] {
        let (status, body) = server.get_with("/api/webrtc/config", &[("Authorization", &auth)]).await;
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let user = turn_user(&v["ice_servers"]);
        assert!(user.ends_with(&format!(":{}", client.session_id)), "bound to the session: {user}");
    }

    // Once the session has ended, its token gets nothing, from any node.
    client.send(duet_proto::ClientMessage::Leave).await;
    client.ws.close(None).await.unwrap();
    for server in [service.node(0), service.node(1)] {
        let mut ended = false;
        for _ in 0..100 {
            if server.get_with("/api/webrtc/config", &[("Authorization", &auth)]).await.0 == 401 {
                ended = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(ended, "an ended session's token still got TURN credentials");
    }
}

#[tokio::test]
async fn connections_over_the_cap_get_a_clear_refusal() {
    let access = AccessConfig { max_connections: 2, ..AccessConfig::default() };
    let cfg = ServerConfig { listen: "127.0.0.1:0".parse().unwrap(), access, ..ServerConfig::default() };
    let server = TestServer::from_config(cfg).await;
    let _a = raw(&server.url).await;
    let _b = raw(&server.url).await;
    let (status, body) = server.get("/health").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("full"), "{body}");
    drop(_a);
    let mut admitted = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if server.get("/health").await.0 == 200 {
            admitted = true;
            break;
        }
    }
    assert!(admitted, "a closed connection frees its place");
}

#[tokio::test]
async fn a_server_shutting_down_answers_new_requests_with_503() {
    let mut server = TestServer::start().await;
    // A socket that never answers the close keeps the server draining for a while.
    let stuck = raw(&server.url).await;
    server.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for path in ["/api/webrtc/stats", "/health", "/ws"] {
        let (status, body) = server.get(path).await;
        assert_eq!(status, 503, "{path}: {body}");
    }
    drop(stuck);
}
