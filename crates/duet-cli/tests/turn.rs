//! TURN through a real coturn on 127.0.0.1 (started by the test; Debian's `coturn` package):
//! a relay-only call with credentials the Duet server issues, a wrong password named in a
//! clear message with the call falling back to its other candidates, and relay-only with a
//! wrong password failing clearly.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

mod common;

use common::*;
use duet_server::turn::{IceConfig, Secret, TurnRest};

#[path = "common/coturn.rs"]
mod coturn;

use coturn::{Coturn, SECRET};

/// A Duet server issuing REST credentials for `turn`.
async fn server_issuing(turn: &Coturn) -> SocketAddr {
    let mut cfg = duet_server::ServerConfig { listen: "127.0.0.1:0".parse().unwrap(), ..Default::default() };
    cfg.hub.ice = IceConfig {
        servers: vec![],
        turn: Some(TurnRest { urls: vec![turn.url()], secret: Secret::new(SECRET), ttl: Duration::from_secs(600) }),
    };
    let server = duet_server::Server::bind(cfg).await.unwrap();
    let addr = server.local_addr();
    tokio::spawn(server.run(std::future::pending()));
    addr
}

fn last_stats(run: &Run) -> &serde_json::Value {
    run.events.iter().rev().find(|e| e["event"] == "stats").unwrap_or_else(|| panic!("no stats: {}", run.stderr))
}

fn notices(run: &Run) -> Vec<String> {
    run.events.iter().filter(|e| e["event"] == "notice").map(|e| e["message"].to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_only_call_goes_through_coturn_with_credentials_the_server_issues() {
    let _slot = call_slot().await;
    let turn = Coturn::start();
    let addr = server_issuing(&turn).await;
    let args = ["--room", "relay", "--duration", "4", "--relay-only", "--video", "synthetic:320x180@15"];
    let a = tokio::spawn(duet(call_args(addr, &args)));
    let b = duet(call_args(addr, &args)).await;
    let a = a.await.unwrap();
    for run in [&a, &b] {
        assert_eq!(run.code, 0, "{}", run.stderr);
        let s = last_stats(run);
        // Both ends of the selected pair are relay candidates: neither side saw the other's address.
        assert_eq!(
            (s["local_candidate"].as_str(), s["remote_candidate"].as_str()),
            (Some("relay"), Some("relay")),
            "{s}"
        );
        assert!(u(&run.summary()["video_frames_decoded"]) > 20, "{}", run.summary());
        assert!(notices(run).is_empty(), "{:?}", notices(run));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_turn_password_is_named_and_the_call_falls_back_to_other_candidates() {
    let _slot = call_slot().await;
    let turn = Coturn::start();
    let addr = server().await;
    let bad = format!("turn:duet:wrong-password@127.0.0.1:{}?transport=udp", turn.port);
    let args = ["--room", "badturn", "--duration", "3", "--turn", bad.as_str(), "--video", "synthetic:320x180@15"];
    let a = tokio::spawn(duet(call_args(addr, &args)));
    let b = duet(call_args(addr, &args)).await;
    let a = a.await.unwrap();
    for run in [&a, &b] {
        assert_eq!(run.code, 0, "{}", run.stderr);
        let n = notices(run);
        let named = format!("turn:127.0.0.1:{}", turn.port);
        assert!(n.iter().any(|m| m.contains(&named) && m.contains("without a relay")), "{n:?}");
        assert!(n.iter().all(|m| !m.contains("wrong-password")), "no password in messages: {n:?}");
        assert_eq!(last_stats(run)["local_candidate"], "host");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_with_a_wrong_turn_password_fails_with_a_clear_message() {
    let _slot = call_slot().await;
    let turn = Coturn::start();
    let addr = server().await;
    let bad = format!("turn:duet:wrong-password@127.0.0.1:{}?transport=udp", turn.port);
    let args = ["--room", "badrelay", "--relay-only", "--turn", bad.as_str(), "--connect-timeout", "8"];
    let a = tokio::spawn(duet(call_args(addr, &args)));
    let b = duet(call_args(addr, &args)).await;
    let a = a.await.unwrap();
    for run in [&a, &b] {
        assert_eq!(run.code, 2, "no call connected: {}", run.stderr);
        let n = notices(run);
        assert!(n.iter().any(|m| m.contains("cannot connect while your IP is hidden")), "{n:?}");
    }
}

#[test]
fn a_malformed_turn_url_is_refused_before_anything_starts() {
    let out = std::process::Command::new(DUET)
        .args(["call", "--turn", "turn:alice@127.0.0.1:3478", "--server", "ws://127.0.0.1:9/ws"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "clap usage error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("USER:PASS"), "{err}");
}

/// Every address a client signalled (trickled candidates and candidates inside descriptions),
/// as `typ` of each candidate line.
fn signalled_candidate_types(frames: &[String]) -> Vec<String> {
    let mut types = Vec::new();
    for frame in frames {
        let v: serde_json::Value = serde_json::from_str(frame).unwrap();
        if v["type"] != "signal" {
            continue;
        }
        let p = &v["payload"];
        let lines: Vec<String> = match p["kind"].as_str() {
            Some("candidate") => vec![p["candidate"]["candidate"].as_str().unwrap_or_default().to_string()],
            Some("description") => p["description"]["sdp"]
                .as_str()
                .unwrap_or_default()
                .lines()
                .filter(|l| l.starts_with("a=candidate:"))
                .map(str::to_string)
                .collect(),
            _ => vec![],
        };
        for line in lines.iter().filter(|l| !l.is_empty()) {
            let typ = line.split_whitespace().skip_while(|w| *w != "typ").nth(1).unwrap_or("?");
            types.push(typ.to_string());
        }
    }
    types
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_only_client_signals_only_relay_addresses_to_every_partner_across_next_and_reconnection() {
    let _slot = call_slot().await;
    let turn = Coturn::start();
    let addr = server_issuing(&turn).await;
    // a hides its IP; everything it sends the server is recorded. a offers first (it waited
    // longer), and the relay holds back b's first answer: a's call with b moves to a fresh
    // peer connection, which gathers and signals again.
    let tap = SignalRelay::start(addr, Some(Duration::from_secs(2))).await;
    let video = ["--video", "synthetic:160x90@10"];
    let a_args =
        [&["--relay-only", "--duration", "4", "--next-after", "3", "--connect-timeout", "40"][..], &video].concat();
    let a = tokio::spawn(duet(call_args(tap.addr, &a_args)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // b leaves soon after a's Next (re-queued, it must not meet c); then c comes.
    let b = duet(call_args(addr, &[&["--duration", "3.5"][..], &video].concat())).await;
    let c = duet(call_args(addr, &[&["--duration", "4"][..], &video].concat())).await;
    let a = a.await.unwrap();
    assert_eq!((a.code, b.code, c.code), (0, 0, 0), "{}\n{}\n{}", a.stderr, b.stderr, c.stderr);
    assert_eq!(a.count("matched"), 2, "a met b, then c: {}", a.stderr);
    for partner in [&b, &c] {
        let s = last_stats(partner);
        assert_eq!(s["remote_candidate"], "relay", "the partner reached a only through the relay: {s}");
    }
    let sent = tap.sent.lock().unwrap().clone();
    let reconnected = sent.iter().any(|f| f.contains(r#""type":"signal""#) && f.contains(r#""generation":2"#));
    assert!(reconnected, "a's call with b went to a second peer connection");
    let types = signalled_candidate_types(&sent);
    assert!(types.iter().filter(|t| *t == "relay").count() >= 3, "relay candidates for every connection: {types:?}");
    assert!(types.iter().all(|t| t == "relay"), "a signalled a non-relay address: {types:?}");
}
