//! The real `duet-server` binary as a separate process: address line, graceful shutdown on
//! SIGTERM, configuration errors, and logs that never contain secrets.

#![allow(clippy::unwrap_used)]

mod common;
mod process;

use std::io::Read;
use std::process::Command;
use std::time::Duration;

use common::*;
use duet_proto::*;
use futures_util::SinkExt;
use process::*;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn sigterm_closes_every_socket_as_going_away_and_exits_cleanly() {
    let mut p = spawn(&[], &[]);
    let (mut a, mut b) = matched_pair(&p.url).await;
    sigterm(&p);
    for c in [&mut a, &mut b] {
        // No `peer_left`: the call is the partners' own; they resume when the server is back.
        loop {
            match c.next().await {
                Got::Frame(f) => assert!(!matches!(f.msg, ServerMessage::PeerLeft { .. }), "{f:?}"),
                Got::Closed(close) => {
                    assert_eq!(close.map(|c| u16::from(c.code)), Some(1001));
                    break;
                }
            }
        }
    }
    let status = wait_exit(&mut p, Duration::from_secs(5));
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn a_server_restarted_with_the_same_secret_gives_both_partners_their_pairing_back() {
    let env = [("DUET_RESUME_SECRET", "restart-secret-0123456789")];
    let mut p = spawn(&[], &env);
    let (mut a, mut b) = matched_pair(&p.url).await;
    let listen = p.url.trim_start_matches("ws://").trim_end_matches("/ws").to_string();
    sigterm(&p);
    assert!(wait_exit(&mut p, Duration::from_secs(5)).success());
    for c in [&mut a, &mut b] {
        c.expect_close().await;
    }

    let p2 = spawn_on(&listen, &[], &env);
    let welcome_of = |f: &ServerFrame| match f.msg {
        ServerMessage::Welcome { resumed, restored, .. } => (resumed, restored),
        _ => panic!("{f:?}"),
    };
    let mut a2 = raw(&p2.url).await;
    let hello = |token: &str| {
        ClientFrame::new(ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            resume_token: Some(token.into()),
            client: None,
        })
        .to_json()
    };
    a2.send(Message::text(hello(&a.token))).await.unwrap();
    let mut a2 = Client::from_parts(a2, a.session_id.clone(), a.token.clone());
    assert_eq!(welcome_of(&a2.expect("welcome").await), (true, true));
    a2.expect("peer_reconnecting").await;
    let mut b2 = raw(&p2.url).await;
    b2.send(Message::text(hello(&b.token))).await.unwrap();
    let mut b2 = Client::from_parts(b2, b.session_id.clone(), b.token.clone());
    assert_eq!(welcome_of(&b2.expect("welcome").await), (true, true));
    b2.expect("peer_resumed").await;
    a2.expect("peer_resumed").await;
    a2.send(ClientMessage::Signal { payload: offer("after the restart"), generation: None }).await;
    let f = b2.expect("signal").await;
    assert_eq!(f.msg, ServerMessage::Signal { payload: offer("after the restart"), generation: None });

    let stream = tokio::net::TcpStream::connect(&listen).await.unwrap();
    let (status, body) = http_get(stream, &listen, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("duet_sessions_restored_total 2"), "{body}");
    assert!(body.contains("duet_pairings_restored_total 1"), "{body}");
}

#[tokio::test]
async fn logs_are_json_lines_without_secrets() {
    let secret = "SEKRIT-turn-7f3a";
    let mut p = spawn(
        &["--turn-url", "turn:127.0.0.1:3478", "--log-format", "json"],
        &[("DUET_TURN_SECRET", secret), ("RUST_LOG", "debug")],
    );
    let (mut a, mut b) = matched_pair(&p.url).await;
    let token = a.token.clone();
    a.send(ClientMessage::Signal { payload: offer("v=0"), generation: None }).await;
    b.expect("signal").await;
    a.send_text("{broken").await;
    a.expect("error").await;
    sigterm(&p);
    wait_exit(&mut p, Duration::from_secs(5));
    let mut logs = String::new();
    p.child.stderr.take().unwrap().read_to_string(&mut logs).unwrap();
    assert!(logs.lines().count() > 5, "{logs}");
    for line in logs.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("not a JSON line: {line}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string());
    }
    assert!(!logs.contains(secret), "TURN secret leaked into logs");
    assert!(!logs.contains(&token), "resume token leaked into logs");
    assert!(logs.contains("matched"));
}

#[test]
fn a_bad_configuration_exits_non_zero_with_a_message() {
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--turn-url", "http://nope"])
        .env("DUET_TURN_SECRET", "SEKRIT-x")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("turn_urls"), "{err}");
    assert!(!err.contains("SEKRIT-x"));

    let out = Command::new(BIN).args(["--listen", "not-an-address"]).output().unwrap();
    assert!(!out.status.success());
}

#[test]
fn a_busy_port_is_reported() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(BIN).args(["--listen", &addr]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot listen on") && err.contains(&addr), "{err}");
}

#[test]
fn config_file_and_environment_are_read() {
    let dir = std::env::temp_dir().join(format!("duet-bin-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("duet.toml");
    std::fs::write(&file, "resume_grace_ms = 4321\n[[ice_servers]]\nurls = [\"stun:127.0.0.1:3478\"]\n").unwrap();
    let p = spawn(&["--config", file.to_str().unwrap()], &[("DUET_HEARTBEAT_MS", "1234")]);
    let addr = p.url.trim_start_matches("ws://").trim_end_matches("/ws").to_string();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let body = rt.block_on(async {
        // ICE servers go to live sessions only.
        let client = Client::connect(&p.url).await;
        let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let auth = format!("Bearer {}", client.token);
        http_get_with(stream, &addr, "/api/webrtc/config", &[("Authorization", &auth)]).await.1
    });
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["resume_grace_ms"], 4321);
    assert_eq!(v["heartbeat_ms"], 1234);
    assert_eq!(v["ice_servers"][0]["urls"][0], "stun:127.0.0.1:3478");
    let _ = std::fs::remove_dir_all(dir);
}
