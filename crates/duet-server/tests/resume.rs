//! Session resume over real sockets: a killed socket, replay of unacked messages, a
//! half-open socket replaced by a new one, heartbeat timeout, grace expiry. Each test runs
//! twice (`memory::` and `redis::`, see [`common::Service`]); a client comes back to its own
//! node, where its session lives.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use duet_proto::*;
use duet_server::hub::{CLOSE_IDLE, CLOSE_REPLACED, HubConfig};

both_modes!(
    resume_after_a_killed_socket_replays_unacked_messages,
    a_second_hello_while_the_old_socket_is_half_open_takes_over,
    a_silent_client_is_detected_within_the_idle_timeout,
    a_token_of_a_session_that_ended_starts_a_fresh_session_on_every_node,
    a_queued_session_that_loses_its_socket_keeps_its_place,
);

/// a waits longest, then b; a's socket dies and a resumes; c shares an interest with both and
/// is paired with a, who never lost its place (on every node of a service too).
async fn a_queued_session_that_loses_its_socket_keeps_its_place(mode: Mode) {
    let hub = HubConfig { interest_wait: Duration::from_secs(60), ..HubConfig::default() };
    let service = Service::start(mode, hub).await;
    let queue = |interest: &[&str]| ClientMessage::JoinQueue {
        interests: interest.iter().map(|s| s.to_string()).collect(),
        language: None,
    };
    let mut a = Client::connect(service.url(0)).await;
    a.send(queue(&["cats"])).await;
    a.expect("queued").await;
    service.queue_holds(1).await;
    let mut b = Client::connect(service.url(1)).await;
    b.send(queue(&["dogs"])).await;
    b.expect("queued").await;
    service.queue_holds(2).await;
    let token = a.token.clone();
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut a = Client::hello_on(raw(service.url(0)).await, Some(token)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut c = Client::connect(service.url(1)).await;
    c.send(queue(&["cats", "dogs"])).await;
    let peer = match c.expect("matched").await.msg {
        ServerMessage::Matched { peer, .. } => peer.session_id,
        other => unreachable!("{other:?}"),
    };
    assert_eq!(peer, a.session_id, "the longest waiting, a, is paired, not b");
    a.expect("matched").await;
    b.expect_silence(Duration::from_millis(300)).await;
}

async fn resume_after_a_killed_socket_replays_unacked_messages(mode: Mode) {
    let service = Service::start(mode, HubConfig::default()).await;
    let (a, mut b) = service.matched_pair().await;
    let token = a.token.clone();
    let session = a.session_id.clone();
    let acked = a.last_seq;
    // Ack everything received so far, then kill the TCP connection without a close frame.
    let mut a = a;
    a.send_frame(ClientFrame { id: None, ack: Some(acked), msg: ClientMessage::Ack { seq: acked } }).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(a);

    let f = b.expect("peer_reconnecting").await;
    assert!(matches!(f.msg, ServerMessage::PeerReconnecting { grace_ms: 15000 }));
    // Signals sent while a is away are kept for it.
    b.send(ClientMessage::Signal { payload: offer("v=0 while away"), generation: None }).await;
    b.send(ClientMessage::Signal { payload: SignalPayload::EndOfCandidates, generation: None }).await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let ws = raw(service.url(0)).await;
    let mut a2 = Client::hello_on_replay(ws, token).await;
    assert_eq!(a2.replayed.len(), 2, "exactly the unacked messages are replayed: {:?}", a2.replayed);
    assert!(
        matches!(&a2.replayed[0].msg, ServerMessage::Signal { payload, .. } if *payload == offer("v=0 while away"))
    );
    assert!(a2.replayed[0].seq > acked && a2.replayed[1].seq == a2.replayed[0].seq + 1);
    assert_eq!(a2.client.session_id, session, "same session");
    b.expect("peer_resumed").await;

    // The call continues over the new socket.
    b.send(ClientMessage::Signal { payload: SignalPayload::Restart, generation: None }).await;
    a2.client.expect("signal").await;
    service.totals(|v| v["resumes_total"] == 1).await;
}

async fn a_second_hello_while_the_old_socket_is_half_open_takes_over(mode: Mode) {
    let service = Service::start(mode, HubConfig::default()).await;
    let (mut a, mut b) = service.matched_pair().await;
    // The old socket stays open (as a half-open socket would look to the server).
    let ws = raw(service.url(0)).await;
    let mut a2 = Client::hello_on_replay(ws, a.token.clone()).await;
    assert!(a2.resumed, "resumed, never 'session already active'");
    let close = a.expect_close().await.expect("close frame");
    assert_eq!(u16::from(close.code), CLOSE_REPLACED);
    b.send(ClientMessage::Signal { payload: SignalPayload::Restart, generation: None }).await;
    a2.client.expect("signal").await;
    b.expect("ok").await;
    // The partner never saw the takeover: no peer_reconnecting, no peer_resumed.
    b.expect_silence(Duration::from_millis(300)).await;
}

async fn a_silent_client_is_detected_within_the_idle_timeout(mode: Mode) {
    let hub = HubConfig {
        heartbeat: Duration::from_millis(200),
        idle_timeout: Duration::from_millis(600),
        resume_grace: Duration::from_millis(800),
        ..HubConfig::default()
    };
    let service = Service::start(mode, hub).await;
    let (mut a, mut b) = service.matched_pair().await;
    let started = std::time::Instant::now();
    // b keeps pinging; a is silent (a frozen app or dead network).
    let pinger = async {
        loop {
            b.send(ClientMessage::Ping { ts: None }).await;
            match b.recv().await.msg {
                ServerMessage::PeerReconnecting { .. } => break,
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        loop {
            b.send(ClientMessage::Ping { ts: None }).await;
            if let ServerMessage::PeerLeft { reason } = b.recv().await.msg {
                assert_eq!(reason, PeerLeftReason::Timeout);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), pinger).await.expect("detected and ended in time");
    assert!(started.elapsed() < Duration::from_secs(3));
    let close = a.expect_close().await.expect("close frame");
    assert_eq!(u16::from(close.code), CLOSE_IDLE);
}

/// a (client 0) and b (client 1) are paired; a's socket dies and its grace period runs out, so
/// its session ends. Its token starts a new session wherever it comes back: on its own node
/// and, in a service, on the other node too (which did not sign it). b's session lives: its
/// token still resumes on a's node.
async fn a_token_of_a_session_that_ended_starts_a_fresh_session_on_every_node(mode: Mode) {
    let hub = HubConfig { resume_grace: Duration::from_millis(300), ..HubConfig::default() };
    let service = Service::start(mode, hub).await;
    let (a, mut b) = service.matched_pair().await;
    let (token, old) = (a.token.clone(), a.session_id.clone());
    drop(a);
    b.expect("peer_reconnecting").await;
    let left = b.expect("peer_left").await;
    assert!(matches!(left.msg, ServerMessage::PeerLeft { reason: PeerLeftReason::Timeout }));
    service.ended(&old).await;
    for client in [1, 0] {
        let a2 = Client::hello_on_replay(raw(service.url(client)).await, token.clone()).await;
        assert!(!a2.resumed, "an ended session's token resumed on client {client}'s node");
        assert_ne!(a2.client.session_id, old, "an ended session was restored on client {client}'s node");
    }
    // A live session's token is not refused anywhere.
    b.send(ClientMessage::Ack { seq: b.last_seq }).await;
    let b2 = Client::hello_on_replay(raw(service.url(0)).await, b.token.clone()).await;
    assert!(b2.resumed);
    assert_eq!(b2.client.session_id, b.session_id);
}

/// A client that resumed, with what was replayed before its `welcome`.
struct Resumed {
    client: Client,
    replayed: Vec<ServerFrame>,
    resumed: bool,
}

trait HelloReplay {
    async fn hello_on_replay(ws: Ws, token: String) -> Resumed;
}

impl HelloReplay for Client {
    async fn hello_on_replay(ws: Ws, token: String) -> Resumed {
        let mut ws = ws;
        use futures_util::{SinkExt, StreamExt};
        let hello = ClientFrame::with_id(
            1,
            ClientMessage::Hello { version: PROTOCOL_VERSION, resume_token: Some(token), client: None },
        );
        ws.send(tokio_tungstenite::tungstenite::Message::text(hello.to_json())).await.unwrap();
        let mut replayed = Vec::new();
        loop {
            let msg = tokio::time::timeout(STEP, ws.next()).await.unwrap().unwrap().unwrap();
            let f = parse_server_frame(msg.to_text().unwrap()).unwrap();
            if let ServerMessage::Welcome { session_id, resume_token, resumed, replayed: n, .. } = f.msg {
                assert_eq!(n as usize, replayed.len());
                let last_seq = replayed.iter().map(|f: &ServerFrame| f.seq).max().unwrap_or(0);
                let mut client = Client::from_parts(ws, session_id, resume_token);
                client.last_seq = last_seq;
                return Resumed { client, replayed, resumed };
            }
            replayed.push(f);
        }
    }
}
