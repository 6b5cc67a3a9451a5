//! The WebSocket connection task: a thin driver between one socket and the backend.

use std::sync::Arc;
use std::time::{Duration, Instant};

use duet_proto::{ErrorCode, MAX_FRAME_BYTES, ProtoError, parse_client_frame};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::{debug, warn};

use crate::backend::{Backend, OUTGOING_QUEUE, Outgoing};
use crate::guard::{ConnGuard, GuardConfig, Verdict};
use crate::hub::Input;

/// Close code for sustained abuse (policy violation).
pub const CLOSE_ABUSE: u16 = 1008;
/// Close code for a frame over [`HARD_FRAME_LIMIT`].
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code when the client does not read its frames fast enough.
pub const CLOSE_TOO_SLOW: u16 = 4002;
/// Frames larger than this close the connection outright (1009); frames between
/// [`MAX_FRAME_BYTES`] and this are answered with `frame_too_large` and the connection lives.
pub const HARD_FRAME_LIMIT: usize = 1024 * 1024;
/// Longest time a single write to the socket may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The WebSocket settings of the server: small buffers (many idle sessions), hard limits.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(4 * MAX_FRAME_BYTES)
        .max_message_size(Some(HARD_FRAME_LIMIT))
        .max_frame_size(Some(HARD_FRAME_LIMIT))
}

enum Event {
    Out(Option<Outgoing>),
    In(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
}

/// Serves one upgraded WebSocket until either side closes it.
pub async fn serve_socket<S>(mut ws: WebSocketStream<S>, backend: Arc<dyn Backend>, guard: GuardConfig)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (tx, mut rx) = mpsc::channel(OUTGOING_QUEUE);
    let conn = backend.open(tx);
    let mut guard = ConnGuard::new(guard, Instant::now());
    debug!(conn = conn.0, "websocket opened");
    loop {
        let event = tokio::select! {
            out = rx.recv() => Event::Out(out),
            msg = ws.next() => Event::In(msg),
        };
        match event {
            Event::Out(Some(Outgoing::Text(text))) => {
                let mut batch = vec![text];
                let mut then_close = None;
                while batch.len() < 64 {
                    match rx.try_recv() {
                        Ok(Outgoing::Text(t)) => batch.push(t),
                        Ok(Outgoing::Close(code, reason)) => {
                            then_close = Some((code, reason));
                            break;
                        }
                        Err(_) => break,
                    }
                }
                if write_all(&mut ws, batch).await.is_err() {
                    break;
                }
                if let Some((code, reason)) = then_close {
                    close(&mut ws, code, reason).await;
                    break;
                }
            }
            Event::Out(Some(Outgoing::Close(code, reason))) => {
                close(&mut ws, code, reason).await;
                break;
            }
            Event::Out(None) => {
                close(&mut ws, CLOSE_TOO_SLOW, "client too slow to read").await;
                break;
            }
            Event::In(Some(Ok(Message::Text(text)))) => {
                let now = Instant::now();
                let verdict = guard.on_frame(now);
                let input = match verdict {
                    Verdict::Allow => match parse_client_frame(text.as_str()) {
                        Ok(frame) => Input::Frame(conn, frame),
                        Err(err) => {
                            if guard.on_violation(now) == Verdict::Close {
                                abuse(&mut ws, &mut rx, conn.0).await;
                                break;
                            }
                            Input::Refused(conn, err)
                        }
                    },
                    Verdict::Limited => {
                        Input::Refused(conn, ProtoError::new(ErrorCode::RateLimited, "too many messages; slow down"))
                    }
                    Verdict::Close => {
                        abuse(&mut ws, &mut rx, conn.0).await;
                        break;
                    }
                };
                backend.input(input);
            }
            Event::In(Some(Ok(Message::Binary(_)))) => {
                if guard.on_violation(Instant::now()) == Verdict::Close {
                    abuse(&mut ws, &mut rx, conn.0).await;
                    break;
                }
                let err = ProtoError::new(
                    ErrorCode::BinaryFrame,
                    "binary frames are not part of the protocol; send JSON text",
                );
                backend.input(Input::Refused(conn, err));
            }
            Event::In(Some(Ok(Message::Close(_)))) | Event::In(None) => break,
            Event::In(Some(Ok(_))) => {}
            Event::In(Some(Err(WsError::Capacity(err)))) => {
                warn!(conn = conn.0, error = %err, "frame over the hard limit; closing");
                close(&mut ws, CLOSE_TOO_BIG, "message too big").await;
                break;
            }
            Event::In(Some(Err(err))) => {
                debug!(conn = conn.0, error = %err, "websocket read failed");
                break;
            }
        }
    }
    backend.input(Input::Closed(conn));
    debug!(conn = conn.0, "websocket closed");
}

async fn write_all<S>(ws: &mut WebSocketStream<S>, batch: Vec<Arc<str>>) -> Result<(), ()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let write = async {
        for text in batch {
            ws.feed(Message::text(String::from(&*text))).await?;
        }
        ws.flush().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

async fn close<S>(ws: &mut WebSocketStream<S>, code: u16, reason: &'static str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
    // Complete the closing handshake: read (and drop) until the client's close arrives, so
    // unread input does not turn our close into a TCP reset that loses the last frames.
    let handshake = async {
        ws.close(Some(frame)).await?;
        while let Some(msg) = ws.next().await {
            msg?;
        }
        Ok::<_, tokio_tungstenite::tungstenite::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), handshake).await;
}

/// Closes for sustained abuse, after writing the replies already queued (the client sees
/// its `rate_limited`/`error` answers before the close).
async fn abuse<S>(ws: &mut WebSocketStream<S>, rx: &mut mpsc::Receiver<Outgoing>, conn: u64)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    warn!(conn, "closing connection after sustained invalid or excessive messages");
    let mut pending = Vec::new();
    while let Ok(Outgoing::Text(t)) = rx.try_recv() {
        pending.push(t);
    }
    let _ = write_all(ws, pending).await;
    close(ws, CLOSE_ABUSE, "too many invalid or excessive messages").await;
}
