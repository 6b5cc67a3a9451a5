//! The signaling client against a real `duet-server` on loopback: matching and relay, a
//! signaling blip (the TCP path cut under both sockets) survived by resume, an unreachable
//! server, and a server that speaks another protocol version.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duet_core::signaling::{SessionState, SignalingClient, SignalingConfig, SignalingError, SignalingEvent};
use duet_proto::*;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;

mod common;

use common::start_server;

const STEP: Duration = Duration::from_secs(10);

fn client(addr: SocketAddr) -> (SignalingClient, UnboundedReceiver<SignalingEvent>) {
    let cfg = SignalingConfig {
        client: ClientInfo { name: "duet-test".into(), version: None, platform: None, device: None },
        ..SignalingConfig::default()
    };
    SignalingClient::start(format!("ws://{addr}/ws"), cfg)
}

/// Waits for the first event matching `pred`, returning it.
async fn until(
    rx: &mut UnboundedReceiver<SignalingEvent>,
    what: &str,
    pred: impl Fn(&SignalingEvent) -> bool,
) -> SignalingEvent {
    let deadline = Instant::now() + STEP;
    loop {
        let ev = tokio::time::timeout_at(deadline.into(), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .unwrap_or_else(|| panic!("events ended while waiting for {what}"));
        if pred(&ev) {
            return ev;
        }
    }
}

fn is_msg(kind: &'static str) -> impl Fn(&SignalingEvent) -> bool {
    move |e| matches!(e, SignalingEvent::Message(m) if m.kind() == kind)
}

/// A TCP relay in front of the server whose live connections can be cut at will.
struct Cutter {
    addr: SocketAddr,
    live: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Cutter {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let live: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let list = live.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let handle = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                list.lock().unwrap().push(handle);
            }
        });
        Self { addr, live }
    }

    /// Drops every relayed connection at once, like a network blip.
    fn cut(&self) {
        for h in self.live.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}

#[tokio::test]
async fn two_clients_are_matched_and_exchange_signals() {
    let addr = start_server().await;
    let (a, mut a_rx) = client(addr);
    let (b, mut b_rx) = client(addr);
    until(&mut a_rx, "welcome", |e| matches!(e, SignalingEvent::Welcome { .. })).await;
    a.send(ClientMessage::JoinQueue { interests: vec![], language: None });
    until(&mut a_rx, "queued", is_msg("queued")).await;
    b.send(ClientMessage::JoinQueue { interests: vec![], language: None });
    until(&mut a_rx, "matched", is_msg("matched")).await;
    until(&mut b_rx, "matched", is_msg("matched")).await;
    a.send(ClientMessage::Signal { payload: SignalPayload::Restart, generation: None });
    until(&mut b_rx, "signal", is_msg("signal")).await;
}

#[tokio::test]
async fn a_signaling_blip_is_survived_by_resume_without_loss_or_duplicates() {
    let addr = start_server().await;
    let cutter = Cutter::start(addr).await;
    let (a, mut a_rx) = client(cutter.addr);
    let (b, mut b_rx) = client(addr);
    a.send(ClientMessage::JoinRoom { code: "blip-room".into() });
    until(&mut a_rx, "room_joined", is_msg("room_joined")).await;
    b.send(ClientMessage::JoinRoom { code: "blip-room".into() });
    until(&mut a_rx, "matched", is_msg("matched")).await;
    until(&mut b_rx, "matched", is_msg("matched")).await;

    cutter.cut();
    until(&mut a_rx, "reconnecting", |e| matches!(e, SignalingEvent::State(SessionState::Reconnecting { .. }))).await;
    until(&mut b_rx, "peer_reconnecting", is_msg("peer_reconnecting")).await;
    // The partner keeps signaling during the blip; a sends too, into its queue.
    for n in 0..3 {
        let candidate = IceCandidate {
            candidate: format!("candidate:{n} 1 udp 1 127.0.0.1 9 typ host"),
            sdp_mid: None,
            sdp_m_line_index: Some(0),
            username_fragment: None,
        };
        b.send(ClientMessage::Signal { payload: SignalPayload::Candidate { candidate }, generation: None });
    }
    a.send(ClientMessage::Signal { payload: SignalPayload::EndOfCandidates, generation: None });

    // The replay of what a missed arrives before its `welcome {resumed: true}`.
    let mut got = vec![];
    let mut resumed = false;
    while got.len() < 3 || !resumed {
        match until(&mut a_rx, "candidates and resume", |e| {
            matches!(e, SignalingEvent::Welcome { .. } | SignalingEvent::Message(ServerMessage::Signal { .. }))
        })
        .await
        {
            SignalingEvent::Welcome { resumed: r, .. } => resumed = r,
            SignalingEvent::Message(ServerMessage::Signal {
                payload: SignalPayload::Candidate { candidate },
                generation: None,
            }) => got.push(candidate.candidate),
            other => panic!("unexpected {other:?}"),
        }
    }
    until(&mut b_rx, "peer_resumed", is_msg("peer_resumed")).await;
    assert!(got.iter().enumerate().all(|(n, c)| c.starts_with(&format!("candidate:{n} "))), "in order: {got:?}");
    until(&mut b_rx, "a's queued signal", is_msg("signal")).await;
    // Nothing arrives twice.
    let extra = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            if let Some(SignalingEvent::Message(m)) = a_rx.recv().await {
                return m;
            }
        }
    })
    .await;
    assert!(extra.is_err(), "duplicate delivered: {extra:?}");
}

#[tokio::test]
async fn an_unreachable_server_is_reported_promptly() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let started = Instant::now();
    let (_c, mut rx) = client(SocketAddr::from(([127, 0, 0, 1], port)));
    let ev = until(&mut rx, "failure", |e| matches!(e, SignalingEvent::Failed(_))).await;
    assert!(matches!(ev, SignalingEvent::Failed(SignalingError::Unreachable(_))), "{ev:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "prompt: {:?}", started.elapsed());
    assert!(ev_text(&ev).contains("cannot reach the Duet server"));
}

#[tokio::test]
async fn a_server_of_another_version_is_a_clear_error() {
    use futures_util::{SinkExt, StreamExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
        let _hello = ws.next().await;
        let reply =
            r#"{"seq":0,"type":"error","code":"version_mismatch","message":"this server speaks Duet protocol v2"}"#;
        ws.send(tokio_tungstenite::tungstenite::Message::text(reply)).await.unwrap();
        let _ = ws.next().await;
    });
    let (_c, mut rx) = client(addr);
    let ev = until(&mut rx, "failure", |e| matches!(e, SignalingEvent::Failed(_))).await;
    assert!(matches!(&ev, SignalingEvent::Failed(SignalingError::VersionMismatch(m)) if m.contains("v2")), "{ev:?}");
}

fn ev_text(ev: &SignalingEvent) -> String {
    match ev {
        SignalingEvent::Failed(e) => e.to_string(),
        other => format!("{other:?}"),
    }
}
