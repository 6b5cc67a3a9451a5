//! Shared helpers for the integration tests: an in-process server on 127.0.0.1:0 and a
//! real WebSocket client speaking protocol v1.
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

pub mod redis_server;
mod service;

// Not every test file runs its tests in both modes.
#[allow(unused_imports)]
pub(crate) use service::{Mode, Service, both_modes};

use std::net::SocketAddr;
use std::time::Duration;

use duet_proto::*;
use duet_server::hub::HubConfig;
use duet_server::{Server, ServerConfig};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const STEP: Duration = Duration::from_secs(5);

/// A server running in this process until dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    pub done: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::with(HubConfig::default()).await
    }

    pub async fn with(hub: HubConfig) -> Self {
        let cfg = ServerConfig { listen: "127.0.0.1:0".parse().unwrap(), hub, ..ServerConfig::default() };
        Self::from_config(cfg).await
    }

    pub async fn from_config(cfg: ServerConfig) -> Self {
        let server = Server::bind(cfg).await.expect("bind");
        let addr = server.local_addr();
        let url = server.ws_url();
        let (tx, rx) = oneshot::channel();
        let done = tokio::spawn(server.run(async {
            let _ = rx.await;
        }));
        Self { addr, url, stop: Some(tx), done: Some(done) }
    }

    /// Triggers graceful shutdown and waits for it to finish.
    pub async fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(done) = self.done.take() {
            tokio::time::timeout(Duration::from_secs(10), done).await.expect("shutdown in time").unwrap();
        }
    }

    /// GET a path over plain HTTP/1.1; returns (status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        self.get_with(path, &[]).await
    }

    /// [`TestServer::get`] with extra request headers.
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let stream = TcpStream::connect(self.addr).await.unwrap();
        http_get_with(stream, &self.addr.to_string(), path, headers).await
    }

    /// Starts graceful shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A minimal HTTP/1.1 GET over any stream (Connection: close).
pub async fn http_get<S: AsyncRead + AsyncWrite + Unpin>(stream: S, host: &str, path: &str) -> (u16, String) {
    http_get_with(stream, host, path, &[]).await
}

/// [`http_get`] with extra request headers.
pub async fn http_get_with<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(STEP, stream.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A protocol v1 client over a real WebSocket.
pub struct Client {
    pub ws: Ws,
    pub session_id: String,
    pub token: String,
    next_id: u64,
    /// Highest seq processed, acked with every frame sent.
    pub last_seq: u64,
}

/// What a read produced.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Got {
    Frame(ServerFrame),
    Closed(Option<CloseFrame>),
}

impl Client {
    /// Connects and says hello.
    pub async fn connect(url: &str) -> Self {
        let ws = raw(url).await;
        Self::hello_on(ws, None).await
    }

    /// Connects and says hello as a client on `device` (its `client.device` id).
    pub async fn connect_on(url: &str, device: &str) -> Self {
        Self::hello_as(raw(url).await, None, Some(device.into())).await
    }

    /// Says hello (optionally resuming) on an open socket.
    pub async fn hello_on(ws: Ws, token: Option<String>) -> Self {
        Self::hello_as(ws, token, None).await
    }

    async fn hello_as(ws: Ws, token: Option<String>, device: Option<String>) -> Self {
        let mut c = Client { ws, session_id: String::new(), token: String::new(), next_id: 1, last_seq: 0 };
        c.send(ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            resume_token: token,
            client: Some(ClientInfo { name: "duet-test".into(), version: None, platform: None, device }),
        })
        .await;
        let welcome = c.expect("welcome").await;
        let ServerMessage::Welcome { session_id, resume_token, .. } = welcome.msg else { unreachable!() };
        c.session_id = session_id;
        c.token = resume_token;
        c
    }

    /// A client around a socket that already got its `welcome`.
    pub fn from_parts(ws: Ws, session_id: String, token: String) -> Self {
        Client { ws, session_id, token, next_id: 100, last_seq: 0 }
    }

    /// Numbers the next messages from `id` on (a resumed session remembers the ids it saw).
    pub fn ids_from(&mut self, id: u64) {
        self.next_id = id;
    }

    /// Sends a message with a fresh id and the current ack; returns the id.
    pub async fn send(&mut self, msg: ClientMessage) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let ack = (self.last_seq > 0).then_some(self.last_seq);
        self.send_frame(ClientFrame { id: Some(id), ack, msg }).await;
        id
    }

    pub async fn send_frame(&mut self, frame: ClientFrame) {
        self.ws.send(Message::text(frame.to_json())).await.expect("send");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text.to_string())).await.expect("send");
    }

    /// The next frame or the close, within [`STEP`].
    pub async fn next(&mut self) -> Got {
        loop {
            let msg = tokio::time::timeout(STEP, self.ws.next()).await.expect("server answered in time");
            match msg {
                Some(Ok(Message::Text(t))) => {
                    let f = parse_server_frame(t.as_str()).expect("valid server frame");
                    if f.seq > self.last_seq && f.msg.kind() != "welcome" {
                        self.last_seq = f.seq;
                    }
                    if let ServerMessage::Token { resume_token } = &f.msg {
                        self.token = resume_token.clone();
                    }
                    return Got::Frame(f);
                }
                Some(Ok(Message::Close(c))) => return Got::Closed(c),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Got::Closed(None),
            }
        }
    }

    /// The next frame, which must not be a close.
    pub async fn recv(&mut self) -> ServerFrame {
        match self.next().await {
            Got::Frame(f) => f,
            Got::Closed(c) => panic!("connection closed: {c:?}"),
        }
    }

    /// Skips frames until one of `kind` arrives.
    pub async fn expect(&mut self, kind: &str) -> ServerFrame {
        loop {
            let f = self.recv().await;
            if f.msg.kind() == kind {
                return f;
            }
            if let ServerMessage::Error { code, message } = &f.msg
                && kind != "error"
            {
                panic!("expected {kind}, got error {code}: {message}");
            }
        }
    }

    /// The error code of the next frame, which must be an `error` answering `id`.
    pub async fn expect_error(&mut self, id: Option<u64>) -> ErrorCode {
        let f = self.expect("error").await;
        assert_eq!(f.reply_to, id, "error answers the right message");
        match f.msg {
            ServerMessage::Error { code, .. } => code,
            _ => unreachable!(),
        }
    }

    /// Waits for the close frame (skipping frames before it).
    pub async fn expect_close(&mut self) -> Option<CloseFrame> {
        loop {
            if let Got::Closed(c) = self.next().await {
                return c;
            }
        }
    }

    /// Nothing arrives within `d`.
    pub async fn expect_silence(&mut self, d: Duration) {
        if let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(d, self.ws.next()).await {
            panic!("expected silence, got {t}");
        }
    }
}

/// Opens a WebSocket without saying hello.
pub async fn raw(url: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("websocket connect");
    ws
}

/// Two clients matched through the queue: (impolite, polite).
pub async fn matched_pair(url: &str) -> (Client, Client) {
    let mut a = Client::connect(url).await;
    let b = Client::connect(url).await;
    a.send(ClientMessage::JoinQueue { interests: vec![], language: None }).await;
    a.expect("queued").await;
    matched_pair_at(a, b).await
}

/// `b` joins the queue where `a` waits: (a impolite, b polite), with their pairing's tokens.
pub async fn matched_pair_at(mut a: Client, mut b: Client) -> (Client, Client) {
    b.send(ClientMessage::JoinQueue { interests: vec![], language: None }).await;
    let ma = a.expect("matched").await;
    let mb = b.expect("matched").await;
    assert!(matches!(ma.msg, ServerMessage::Matched { polite: false, .. }));
    assert!(matches!(mb.msg, ServerMessage::Matched { polite: true, .. }));
    // Each side's resume token is reissued for the pairing right after `matched`.
    a.expect("token").await;
    b.expect("token").await;
    (a, b)
}

pub fn offer(sdp: &str) -> SignalPayload {
    SignalPayload::Description { description: SessionDescription { sdp_type: SdpType::Offer, sdp: sdp.into() } }
}
