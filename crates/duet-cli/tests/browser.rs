//! Chromium (Debian's, driven by playwright-core through `tests/browser/peer.mjs`) on the
//! browser client that `duet-server` serves, against real `duet` processes and against
//! itself: VP8 and Opus both ways, the chat channel both ways, in both negotiation roles, and
//! a mid-call renegotiation (ICE restart offered by Chromium).
//!
//! Needs `node` and Chromium (`scripts/test.sh` installs both); without them these tests fail
//! with a message saying so.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

mod common;

use common::{CutRelay, call_args as call, duet, http_get_json, server, u as n};
use duet_server::hub::token::TokenKey;
use duet_server::{Server, ServerConfig};

use serde_json::Value;
use tokio::process::Command;
use tokio::sync::Mutex;

/// Browser tests run one at a time: two Chromiums and a duet process already fill 2 cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser/peer.mjs")
}

/// Runs one Chromium peer on `path` of the server; returns what it reported.
async fn chromium(addr: SocketAddr, path: &str, seconds: u32, chat: &str, extra: &[&str]) -> Value {
    let script = script();
    assert!(
        script.parent().unwrap().join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run `npm ci` in tests/browser (scripts/test.sh does)"
    );
    let out = Command::new("node")
        .arg(&script)
        .args(["--url", &format!("http://{addr}{path}"), "--seconds", &seconds.to_string(), "--chat", chat])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .expect("node must be installed (scripts/test.sh installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|_| panic!("no result from Chromium: {stdout} {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(v["ok"], true, "Chromium run failed: {v}\n{}", String::from_utf8_lossy(&out.stderr));
    v
}

/// The summary of a `duet` run.
/// The summary of a `duet` run, with its last "verify your partner" words as `verify_words`.
async fn duet_summary(args: Vec<String>) -> Value {
    let run = duet(args).await;
    let mut summary = run.summary().clone();
    summary["verify_words"] = run.verify_words().into();
    summary
}

fn check_chromium_received_duet(c: &Value) {
    assert!(n(&c["framesDecoded"]) > 60, "{c}");
    assert_eq!((n(&c["frameWidth"]), n(&c["frameHeight"])), (640, 360), "{c}");
    assert!(n(&c["audioPacketsReceived"]) > 100, "{c}");
    assert!(c["codecs"].to_string().contains("video/VP8") && c["codecs"].to_string().contains("audio/opus"));
}

async fn chromium_and_duet(chromium_first: bool) {
    let _one = ONE_AT_A_TIME.lock().await;
    let addr = server().await;
    let room = if chromium_first { "browser-first" } else { "duet-first" };
    let duet_args = call(addr, &["--room", room, "--duration", "8", "--chat", "hello from duet"]);
    let page = format!("/?room={room}");
    let (c, d) = if chromium_first {
        let c = tokio::spawn(async move { chromium(addr, &page, 6, "hello from chromium", &[]).await });
        tokio::time::sleep(Duration::from_secs(2)).await;
        let d = duet_summary(duet_args).await;
        (c.await.unwrap(), d)
    } else {
        let d = tokio::spawn(async move { duet_summary(duet_args).await });
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Chromium (polite, answering) renegotiates mid-call with an ICE restart offer.
        let c = chromium(addr, &page, 6, "hello from chromium", &["--restart-after", "2"]).await;
        assert!(n(&c["framesDecoded"]) > n(&c["framesAtRestart"]) + 40, "media goes on after the restart: {c}");
        assert!(!c["log"].to_string().contains("egotiation"), "no negotiation errors: {c}");
        (c, d.await.unwrap())
    };
    check_chromium_received_duet(&c);
    assert!(n(&d["video_frames_decoded"]) > 40, "duet decoded Chromium's VP8: {d}");
    assert!(n(&d["audio_frames_decoded"]) > 100, "duet decoded Chromium's Opus: {d}");
    assert_eq!(c["chatReceived"], serde_json::json!(["hello from duet"]));
    assert_eq!(n(&d["chat_received"]), 1, "{d}");
    // Chromium on the browser client and duet show the same string to compare.
    assert!(d["verify_words"].is_string(), "{d}");
    assert_eq!(c["verify"]["words"], d["verify_words"], "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_offers_and_duet_answers() {
    chromium_and_duet(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duet_offers_and_chromium_answers() {
    chromium_and_duet(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_chromiums_call_through_the_server() {
    let _one = ONE_AT_A_TIME.lock().await;
    let addr = server().await;
    let a = tokio::spawn(async move { chromium(addr, "/?auto=start", 5, "from a", &[]).await });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b = chromium(addr, "/?auto=start", 5, "from b", &[]).await;
    let a = a.await.unwrap();
    for (me, other) in [(&a, "from b"), (&b, "from a")] {
        assert!(n(&me["framesDecoded"]) > 30, "{me}");
        assert_eq!(me["chatReceived"], serde_json::json!([other]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_test_call_with_the_echo_bot() {
    let _one = ONE_AT_A_TIME.lock().await;
    let addr = server().await;
    let args: Vec<String> =
        ["bot", "--server", &format!("ws://{addr}/ws"), "--bind", "127.0.0.1:0", "--json", "--duration", "12"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let bot = tokio::spawn(async move { duet_summary(args).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = chromium(addr, "/?auto=start", 5, "ping", &[]).await;
    // The bot sends Chromium's own VP8 back.
    assert!(n(&c["framesDecoded"]) > 30, "{c}");
    assert!(n(&c["audioPacketsReceived"]) > 100, "{c}");
    let bot = bot.await.unwrap();
    assert!(n(&bot["video_frames_decoded"]) > 30, "{bot}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_client_resumes_after_a_signaling_blip() {
    let _one = ONE_AT_A_TIME.lock().await;
    let addr = server().await;
    // Chromium loads the page and its WebSocket through a TCP relay that the test cuts.
    let relay = CutRelay::start(addr).await;
    let relay_addr = relay.addr;
    let duet_args = call(addr, &["--room", "web-blip", "--duration", "9"]);
    let d = tokio::spawn(async move { duet_summary(duet_args).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c =
        tokio::spawn(async move { chromium(relay_addr, "/?room=web-blip", 7, "before", &["--chat-after", "5"]).await });
    tokio::time::sleep(Duration::from_secs(4)).await;
    relay.cut();
    let (c, d) = (c.await.unwrap(), d.await.unwrap());
    assert_eq!(c["state"], "connected", "the page is still in the call: {c}");
    assert!(n(&c["framesDecoded"]) > n(&c["framesAtChatAfter"]) + 30, "media kept flowing: {c}");
    assert_eq!(n(&d["chat_received"]), 2, "both messages arrived, before and after the blip: {d}");
    let stats = http_get_json(addr, "/api/webrtc/stats").await;
    assert!(n(&stats["resumes_total"]) >= 1, "the page resumed its session: {stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_client_shows_a_duet_partners_audio_only_with_its_cause() {
    let _one = ONE_AT_A_TIME.lock().await;
    let addr = server().await;
    let duet_args = call(addr, &["--room", "web-audio-only", "--duration", "8", "--quality", "audio-only"]);
    let d = tokio::spawn(async move { duet(duet_args).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = chromium(addr, "/?room=web-audio-only", 5, "hi", &[]).await;
    let d = d.await.unwrap();
    assert_eq!(c["partnerAudioOnly"], "partner_choice", "{c}");
    assert_eq!(c["remoteVideoHidden"], true, "a placeholder, not a frozen frame: {c}");
    assert!(c["log"].to_string().contains("chose audio only"), "{c}");
    assert!(n(&c["audioPacketsReceived"]) > 100, "audio goes on: {c}");
    // duet says so itself, and sends no video.
    assert!(d.events.iter().any(|e| e["event"] == "audio_only" && e["on"] == true && e["cause"] == "choice"));
    assert_eq!(n(&d.summary()["video_frames_sent"]), 0);
}

/// A server in this process signing tokens with one shared secret (so that another such server
/// restores its sessions), and the task that kills it when aborted.
async fn server_sharing_a_secret() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let mut cfg = ServerConfig { listen: "127.0.0.1:0".parse().unwrap(), ..ServerConfig::default() };
    cfg.hub.resume_key = Some(TokenKey::new(b"one secret for both servers".to_vec()));
    let server = Server::bind(cfg).await.unwrap();
    let addr = server.local_addr();
    (addr, tokio::spawn(server.run(std::future::pending())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_client_waiting_in_a_room_waits_on_where_its_session_is_restored() {
    let _one = ONE_AT_A_TIME.lock().await;
    // The page reaches the service through a balancer: the first server while it is up, then
    // the second, which restores sessions from their tokens (the same secret).
    let ((first, first_task), (second, _second_task)) =
        (server_sharing_a_secret().await, server_sharing_a_secret().await);
    let balancer = CutRelay::balancing(vec![first, second]).await;
    let page = balancer.addr;
    let c = tokio::spawn(async move { chromium(page, "/?room=web-restore", 5, "hi", &[]).await });
    // The page waits alone in its room when the first server dies.
    tokio::time::sleep(Duration::from_secs(3)).await;
    first_task.abort();
    // Its session is rebuilt on the second server, which knows nothing of the room: the page
    // joins it again there, and a newcomer to the code finds it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let d = duet(call(second, &["--room", "web-restore", "--duration", "7", "--connect-timeout", "15"])).await;
    let c = c.await.unwrap();
    assert_eq!(d.code, 0, "{}", d.stderr);
    assert_eq!(c["state"], "connected", "{c}");
    assert!(n(&c["framesDecoded"]) > 30, "{c}");
    let stats = http_get_json(second, "/api/webrtc/stats").await;
    assert_eq!(n(&stats["sessions_restored_total"]), 1, "the page's session was restored: {stats}");
}
