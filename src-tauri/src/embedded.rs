//! The embedded default server: with no server configured, the app runs `duet-server`
//! in-process on localhost so it works out of the box. A second app instance on the same
//! machine finds the first one's server on the port and uses it, so the two can match.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use duet_server::{Server, ServerConfig, ServerError};
use tokio::sync::oneshot;
use tracing::info;

/// Where the embedded server listens unless `DUET_EMBEDDED_ADDR` says otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8787";

/// Why the embedded server is not available.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// The address is taken by something that is not a Duet server.
    #[error(
        "the built-in server cannot start: {addr} is used by another program. Choose a server in Settings, or free the port"
    )]
    PortTaken {
        /// The address.
        addr: SocketAddr,
    },
    /// Binding failed for another reason.
    #[error("the built-in server cannot start: {0}")]
    Bind(#[from] ServerError),
    /// `DUET_EMBEDDED_ADDR` is not an address.
    #[error("DUET_EMBEDDED_ADDR={0:?} is not an address such as 127.0.0.1:8787")]
    BadAddr(String),
}

/// The embedded server in use: ours (stopped on drop) or another local instance's.
pub struct Embedded {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl Embedded {
    /// The `ws://` URL of its `/ws`.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// True if this process runs it (false: shared with another local instance).
    pub fn is_owned(&self) -> bool {
        self.stop.is_some()
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The address to use: `DUET_EMBEDDED_ADDR` or [`DEFAULT_ADDR`].
pub fn configured_addr() -> Result<SocketAddr, EmbeddedError> {
    let raw = std::env::var("DUET_EMBEDDED_ADDR").unwrap_or_else(|_| DEFAULT_ADDR.to_string());
    raw.parse().map_err(|_| EmbeddedError::BadAddr(raw))
}

/// Starts the embedded server on `addr`, or joins the Duet server already listening there.
/// Must run inside a tokio runtime.
pub async fn start(addr: SocketAddr) -> Result<Embedded, EmbeddedError> {
    let cfg = ServerConfig { listen: addr, ..ServerConfig::default() };
    match Server::bind(cfg).await {
        Ok(server) => {
            let addr = server.local_addr();
            let (stop, stopped) = oneshot::channel::<()>();
            tokio::spawn(server.run(async move {
                let _ = stopped.await;
            }));
            info!(%addr, "embedded server started");
            Ok(Embedded { addr, stop: Some(stop) })
        }
        Err(ServerError::Bind { source, .. }) if source.kind() == std::io::ErrorKind::AddrInUse => {
            let probe = tokio::task::spawn_blocking(move || is_duet_server(addr)).await.unwrap_or(false);
            if probe {
                info!(%addr, "using the embedded server of another Duet instance");
                Ok(Embedded { addr, stop: None })
            } else {
                Err(EmbeddedError::PortTaken { addr })
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// True if `addr` answers `/health` like a Duet server.
pub fn is_duet_server(addr: SocketAddr) -> bool {
    let probe = || -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        write!(s, "GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
        let mut body = String::new();
        s.take(16 * 1024).read_to_string(&mut body)?;
        Ok(body)
    };
    probe().is_ok_and(|r| r.starts_with("HTTP/1.1 200") && r.contains("\"protocol\":1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn starts_and_a_second_instance_joins_it() {
        let first = start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        assert!(first.is_owned());
        assert!(first.url().starts_with("ws://127.0.0.1:"));
        let addr: SocketAddr = first.addr;
        assert!(tokio::task::spawn_blocking(move || is_duet_server(addr)).await.unwrap());
        let second = start(addr).await.unwrap();
        assert!(!second.is_owned());
        assert_eq!(second.url(), first.url());
    }

    #[tokio::test]
    async fn a_port_held_by_another_program_is_a_clear_error() {
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = other.local_addr().unwrap();
        // Something that accepts and says nothing useful.
        std::thread::spawn(move || {
            for s in other.incoming().flatten() {
                drop(s);
            }
        });
        let err = start(addr).await.err().unwrap().to_string();
        assert!(err.contains("used by another program"), "{err}");
    }
}
