//! The tokio driver of [`SignalingMachine`]: one task owning the WebSocket.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use duet_proto::{ClientMessage, MAX_FRAME_BYTES};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::TlsError;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tracing::debug;

use super::machine::{Output, SignalingConfig, SignalingError, SignalingEvent, SignalingMachine};
use crate::tls;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

enum Command {
    Send(ClientMessage),
    NetworkChanged,
    Close,
}

/// Handle to a running signaling connection. Dropping it closes the connection.
#[derive(Clone)]
pub struct SignalingClient {
    commands: mpsc::UnboundedSender<Command>,
}

impl SignalingClient {
    /// Starts connecting to `url` (`ws://` or `wss://`); events arrive on the returned
    /// receiver until it reports `Failed` or the client is closed.
    pub fn start(url: String, cfg: SignalingConfig) -> (Self, mpsc::UnboundedReceiver<SignalingEvent>) {
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        tokio::spawn(run(url, cfg, cmd_rx, ev_tx));
        (Self { commands: cmd_tx }, ev_rx)
    }

    /// Sends a message (queued while reconnecting, re-sent after a resume until answered).
    pub fn send(&self, msg: ClientMessage) {
        let _ = self.commands.send(Command::Send(msg));
    }

    /// This machine's addresses changed: reconnect now rather than wait for the old socket
    /// to be noticed dead.
    pub fn network_changed(&self) {
        let _ = self.commands.send(Command::NetworkChanged);
    }

    /// Closes the connection for good.
    pub fn close(&self) {
        let _ = self.commands.send(Command::Close);
    }
}

async fn run(
    url: String,
    cfg: SignalingConfig,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<SignalingEvent>,
) {
    let connect_timeout = cfg.connect_timeout;
    let secure = url.get(..6).is_some_and(|scheme| scheme.eq_ignore_ascii_case("wss://"));
    let ca_cert = cfg.ca_cert.clone();
    if !secure && ca_cert.is_some() {
        debug!("not a wss:// URL: the CA certificate file is not used");
    }
    let mut machine = SignalingMachine::new(cfg, Instant::now());
    let mut ws: Option<Ws> = None;
    // Built on the first wss:// attempt and kept for every reconnection.
    let mut tls_config: Option<Arc<rustls::ClientConfig>> = None;
    loop {
        // Carry out everything the machine asked for.
        while let Some(out) = machine.poll_output() {
            match out {
                Output::Connect => {
                    let connector = if secure {
                        if tls_config.is_none() {
                            match build_tls(ca_cert.clone()).await {
                                Ok(c) => tls_config = Some(c),
                                Err(reason) => {
                                    machine.give_up(SignalingError::TlsSetup { url: url.clone(), reason });
                                    continue;
                                }
                            }
                        }
                        tls_config.clone().map(Connector::Rustls)
                    } else {
                        Some(Connector::Plain)
                    };
                    let ws_config = WebSocketConfig::default()
                        .max_message_size(Some(MAX_FRAME_BYTES))
                        .max_frame_size(Some(MAX_FRAME_BYTES));
                    let attempt = tokio_tungstenite::connect_async_tls_with_config(
                        url.as_str(),
                        Some(ws_config),
                        true,
                        connector,
                    );
                    match tokio::time::timeout(connect_timeout, attempt).await {
                        Ok(Ok((socket, _))) => {
                            ws = Some(socket);
                            machine.socket_opened(Instant::now());
                        }
                        Ok(Err(e)) => match definitive_failure(&url, &e) {
                            Some(err) => machine.give_up(err),
                            None => machine.socket_closed(Instant::now(), &e.to_string()),
                        },
                        Err(_) => machine.socket_closed(Instant::now(), "connection timed out"),
                    }
                }
                Output::Transmit(text) => {
                    let failed = match ws.as_mut() {
                        Some(socket) => socket.send(Message::text(text)).await.is_err(),
                        None => false,
                    };
                    if failed {
                        ws = None;
                        machine.socket_closed(Instant::now(), "write failed");
                    }
                }
                Output::Disconnect => {
                    if let Some(mut socket) = ws.take() {
                        let _ = tokio::time::timeout(Duration::from_millis(500), socket.close(None)).await;
                    }
                }
                Output::Event(ev) => {
                    let done = matches!(ev, SignalingEvent::Failed(_));
                    if events.send(ev).is_err() {
                        machine.close();
                    }
                    if done {
                        return;
                    }
                }
            }
        }
        if matches!(machine.state(), super::SessionState::Closed) && ws.is_none() {
            return;
        }
        let deadline = machine.poll_timeout().unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = tokio::time::sleep_until(deadline.into()) => machine.handle_timeout(Instant::now()),
            cmd = commands.recv() => match cmd {
                Some(Command::Send(msg)) => { machine.send(msg); }
                Some(Command::NetworkChanged) => machine.network_changed(Instant::now()),
                Some(Command::Close) | None => machine.close(),
            },
            msg = next_frame(&mut ws) => match msg {
                Some(Ok(Message::Text(t))) => machine.handle_text(Instant::now(), t.as_str()),
                Some(Ok(Message::Close(frame))) => {
                    debug!(?frame, "server closed the socket");
                    ws = None;
                    let reason = frame.map(|f| format!("closed by server ({} {})", u16::from(f.code), f.reason))
                        .unwrap_or_else(|| "closed by server".into());
                    machine.socket_closed(Instant::now(), &reason);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    ws = None;
                    machine.socket_closed(Instant::now(), &e.to_string());
                }
                None => {
                    ws = None;
                    machine.socket_closed(Instant::now(), "connection lost");
                }
            },
        }
    }
}

/// The next frame of the socket, or never if there is none.
async fn next_frame(ws: &mut Option<Ws>) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    match ws.as_mut() {
        Some(socket) => socket.next().await,
        None => std::future::pending().await,
    }
}

/// The TLS configuration for `wss://` (reads the CA file and the system's roots: off the async
/// threads).
async fn build_tls(ca_cert: Option<PathBuf>) -> Result<Arc<rustls::ClientConfig>, String> {
    match tokio::task::spawn_blocking(move || tls::client_config(ca_cert.as_deref())).await {
        Ok(Ok(config)) => Ok(config),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("TLS setup did not finish: {e}")),
    }
}

/// A failed connection attempt that retrying cannot fix: the server's certificate is not
/// trusted, or the host name cannot be used with TLS. Anything else (refused, reset, timed
/// out, a TLS protocol error) is retried.
fn definitive_failure(url: &str, err: &tokio_tungstenite::tungstenite::Error) -> Option<SignalingError> {
    if let Some(reason) = tls::certificate_problem(err) {
        return Some(SignalingError::Certificate { url: url.to_string(), reason });
    }
    match err {
        tokio_tungstenite::tungstenite::Error::Tls(TlsError::InvalidDnsName) => Some(SignalingError::TlsSetup {
            url: url.to_string(),
            reason: "its host name cannot be used with TLS".into(),
        }),
        _ => None,
    }
}
