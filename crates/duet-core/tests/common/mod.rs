//! Shared by the integration tests: a real `duet-server` on loopback.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;

use duet_server::{Server, ServerConfig};

/// Starts a server on 127.0.0.1 (a free port) for the rest of the test; returns its address.
pub async fn start_server() -> SocketAddr {
    let cfg = ServerConfig { listen: "127.0.0.1:0".parse().unwrap(), ..ServerConfig::default() };
    let server = Server::bind(cfg).await.unwrap();
    let addr = server.local_addr();
    tokio::spawn(server.run(std::future::pending()));
    addr
}
