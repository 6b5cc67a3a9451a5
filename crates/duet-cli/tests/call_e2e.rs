//! End to end: a real `duet-server` on 127.0.0.1 and real `duet` processes holding calls
//! with synthetic VP8/Opus media, chat, rooms, next, receive-only, the echo bot, and bad
//! input (missing file, unreachable server, wrong protocol version), and `wss://` to a server
//! with a private CA (trusted through `--ca-cert`, refused without it).

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::process::Command;

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_hold_a_call_with_media_and_chat_both_ways() {
    let _slot = call_slot().await;
    let addr = server().await;
    let a = tokio::spawn(duet(call_args(addr, &["--duration", "4", "--chat", "hello from a", "--chat", "second"])));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = duet(call_args(addr, &["--duration", "4", "--chat", "hello from b"])).await;
    let a = a.await.unwrap();
    assert_eq!((a.code, b.code), (0, 0), "a: {} b: {}", a.stderr, b.stderr);
    check_media(&a, &b, 640, 360);
    check_media(&b, &a, 640, 360);
    assert_eq!(u(&a.summary()["chat_received"]), 1);
    assert_eq!(u(&b.summary()["chat_received"]), 2);
    let texts: Vec<&str> =
        b.events.iter().filter(|e| e["event"] == "chat_received").filter_map(|e| e["text"].as_str()).collect();
    assert_eq!(texts, ["hello from a", "second"]);
    assert!(a.count("stats") >= 3);
    // Both show the same string to compare: no one in the middle of the encryption.
    let words = a.verify_words().expect("a verify event");
    assert_eq!(words.split(", ").count(), 6, "{words}");
    assert_eq!(b.verify_words(), Some(words));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn friends_meet_by_room_code() {
    let _slot = call_slot().await;
    let addr = server().await;
    let a = tokio::spawn(duet(call_args(addr, &["--room", "e2e-room", "--duration", "3"])));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b = duet(call_args(addr, &["--room", "e2e-room", "--duration", "3", "--video", "synthetic:320x180@30"])).await;
    let a = a.await.unwrap();
    assert_eq!((a.code, b.code), (0, 0), "{} {}", a.stderr, b.stderr);
    assert!(a.events.iter().any(|e| e["event"] == "matched" && e["room"] == "e2e-room"));
    check_media(&a, &b, 320, 180);
    check_media(&b, &a, 640, 360);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receive_only_client_still_gets_video() {
    let _slot = call_slot().await;
    let addr = server().await;
    let a = tokio::spawn(duet(call_args(addr, &["--duration", "3", "--video", "none", "--audio", "none"])));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = duet(call_args(addr, &["--duration", "3"])).await;
    let a = a.await.unwrap();
    assert_eq!((a.code, b.code), (0, 0));
    check_media(&a, &b, 640, 360);
    assert_eq!(u(&b.summary()["video_frames_decoded"]), 0);
    assert_eq!(u(&a.summary()["video_frames_sent"]), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_moves_on_and_a_third_client_is_matched() {
    let _slot = call_slot().await;
    let addr = server().await;
    // a skips after 2 s; b is re-queued by the server and meets c.
    let a = tokio::spawn(duet(call_args(addr, &["--duration", "2", "--next-after", "2", "--connect-timeout", "6"])));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = tokio::spawn(duet(call_args(addr, &["--duration", "8", "--connect-timeout", "15"])));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let c = duet(call_args(addr, &["--duration", "3"])).await;
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert_eq!(c.code, 0, "{}", c.stderr);
    assert_eq!(c.summary()["connected"], true);
    assert_eq!(b.count("matched"), 2, "b met a, then c");
    assert!(a.events.iter().any(|e| e["event"] == "command" && e["command"] == "next"));
    assert!(u(&c.summary()["video_frames_decoded"]) > 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_bot_sends_our_own_media_back() {
    let _slot = call_slot().await;
    let addr = server().await;
    let bot = tokio::spawn(duet(vec![
        "bot".into(),
        "--server".into(),
        format!("ws://{addr}/ws"),
        "--bind".into(),
        "127.0.0.1:0".into(),
        "--json".into(),
        "--duration".into(),
        "6".into(),
    ]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let me = duet(call_args(addr, &["--duration", "3"])).await;
    let bot = bot.await.unwrap();
    assert_eq!(me.code, 0, "{}", me.stderr);
    let s = me.summary();
    // Our own frames come back: their markers carry our own frame numbers and times.
    assert!(u(&s["video_frames_decoded"]) > 30, "{s}");
    assert!(u(&s["audio_frames_decoded"]) > 50, "{s}");
    assert!(s["latency_ms_p50"].as_f64().unwrap() > 0.0);
    assert_eq!(bot.code, 0, "{}", bot.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_room_is_a_prompt_clear_error() {
    let _slot = call_slot().await;
    let addr = server().await;
    let started = Instant::now();
    let run = duet(call_args(addr, &["--room", "x!"])).await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("room code"), "{}", run.stderr);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_missing_media_file_is_a_prompt_clear_error() {
    let started = Instant::now();
    let run = duet(vec!["call".into(), "--video".into(), "file:/nonexistent/clip.y4m".into(), "--json".into()]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("/nonexistent/clip.y4m"), "{}", run.stderr);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn an_unreachable_server_is_a_prompt_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let started = Instant::now();
    let run = duet(call_args(SocketAddr::from(([127, 0, 0, 1], port)), &["--duration", "2"])).await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("cannot reach the Duet server"), "{}", run.stderr);
    assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_server_of_another_protocol_version_is_a_clear_error() {
    use futures_util::{SinkExt, StreamExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else { return };
                let _ = ws.next().await;
                let reply = r#"{"seq":0,"type":"error","code":"version_mismatch","message":"this server speaks Duet protocol v2, the client sent v1; update the client"}"#;
                let _ = ws.send(tokio_tungstenite::tungstenite::Message::text(reply)).await;
                let _ = ws.next().await;
            });
        }
    });
    let started = Instant::now();
    let run = duet(call_args(addr, &["--duration", "2"])).await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("protocol"), "{}", run.stderr);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn devices_are_listed_and_absence_is_said_clearly() {
    let out = Command::new(DUET).arg("devices").output().await.unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for section in ["cameras:", "microphones:", "speakers:"] {
        assert!(text.contains(section), "{text}");
    }
    // This machine has no camera: the list says so instead of printing nothing.
    assert!(text.contains("(none found)"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_camera_and_microphone_the_call_goes_on_receive_only() {
    let _slot = call_slot().await;
    // This machine has neither: each is a notice, and the call still connects and receives.
    let addr = server().await;
    let a = tokio::spawn(duet(call_args(addr, &["--duration", "3", "--video", "camera", "--audio", "mic"])));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = duet(call_args(addr, &["--duration", "3"])).await;
    let a = a.await.unwrap();
    assert_eq!((a.code, b.code), (0, 0), "{}", a.stderr);
    let notices: Vec<String> = a
        .events
        .iter()
        .filter(|e| e["event"] == "notice")
        .filter_map(|e| e["message"].as_str().map(String::from))
        .collect();
    assert!(notices.iter().any(|n| n.contains("camera") && n.contains("receive-only")), "{notices:?}");
    assert!(notices.iter().any(|n| n.contains("microphone")), "{notices:?}");
    check_media(&a, &b, 640, 360);
    assert_eq!(u(&a.summary()["video_frames_sent"]), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn y4m_and_wav_files_are_sent_as_video_and_audio() {
    use duet_media::{
        AudioSink, AudioSource, FrameDuration, FrameRate, MediaClock, SyntheticAudioSource, SyntheticVideoSource,
        VideoSink, VideoSource, WavWriter, Y4mWriter,
    };
    let dir = std::env::temp_dir().join(format!("duet-e2e-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (clip, tone) = (dir.join("clip.y4m"), dir.join("tone.wav"));
    // Two seconds of the test pattern and of the tone, looped by the sender.
    let mut video = SyntheticVideoSource::new(320, 180, 30, MediaClock::new()).unwrap();
    let mut y4m = Y4mWriter::create(&clip, 320, 180, FrameRate::from_fps(30)).unwrap();
    for _ in 0..60 {
        y4m.render(video.next_frame().unwrap().unwrap()).unwrap();
    }
    y4m.finish().unwrap();
    let mut audio = SyntheticAudioSource::new(1, FrameDuration::Ms20, MediaClock::new()).unwrap();
    let mut wav = WavWriter::create(&tone, 48_000, 1).unwrap();
    for _ in 0..100 {
        wav.play(&audio.next_frame().unwrap().unwrap()).unwrap();
    }
    wav.finish().unwrap();

    let _slot = call_slot().await;
    let addr = server().await;
    let files = [format!("file:{}", clip.display()), format!("file:{}", tone.display())];
    let a = tokio::spawn(duet(call_args(addr, &["--duration", "3", "--video", &files[0], "--audio", &files[1]])));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = duet(call_args(addr, &["--duration", "3"])).await;
    let a = a.await.unwrap();
    assert_eq!((a.code, b.code), (0, 0), "{}", a.stderr);
    // The file's frames carry the markers (and old capture times) of when it was written, so
    // only counts and size are checked here, not latency or loss.
    let (r, s) = (b.summary(), a.summary());
    let (sent, decoded) = (u(&s["video_frames_sent"]), u(&r["video_frames_decoded"]));
    assert!(sent > 50 && decoded * 10 >= sent * 9, "decoded {decoded} of {sent}");
    assert_eq!((u(&r["video_width"]), u(&r["video_height"])), (320, 180));
    assert!(u(&r["audio_frames_decoded"]) * 10 >= u(&s["audio_frames_sent"]) * 9, "{r}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signaling_blip_mid_call_leaves_the_media_alone() {
    let _slot = call_slot().await;
    let addr = server().await;
    // a reaches the server through a TCP relay whose connections the test cuts mid-call.
    let relay = CutRelay::start(addr).await;
    let relay_addr = relay.addr;
    let a = tokio::spawn(duet(call_args(relay_addr, &["--room", "blip", "--duration", "6"])));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = tokio::spawn(duet(call_args(addr, &["--room", "blip", "--duration", "6"])));
    tokio::time::sleep(Duration::from_secs(3)).await;
    relay.cut();
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert_eq!((a.code, b.code), (0, 0), "{}", a.stderr);
    // The call was never reported as interrupted (the only end is the partner hanging up at
    // the end of its run), and media kept flowing both ways.
    for run in [&a, &b] {
        let states: Vec<&str> = run.events.iter().filter_map(|e| e["state"].as_str()).collect();
        assert!(!states.contains(&"reconnecting"), "{states:?}");
        for e in run.events.iter().filter(|e| e["state"] == "ended") {
            assert_eq!(e["reason"], "Your partner left.", "{e}\n{}", run.stderr);
        }
    }
    check_media(&a, &b, 640, 360);
    check_media(&b, &a, 640, 360);
    assert_eq!(a.count("matched"), 1, "the session resumed, no new match");
    // The blip really happened: the server saw the session come back on a new socket.
    let stats = http_get_json(addr, "/api/webrtc/stats").await;
    assert!(stats["resumes_total"].as_u64().unwrap() >= 1, "{stats}");
}

/// A server on `listen` signing resume tokens with a fixed secret; stopped (gracefully, as on
/// SIGTERM) when the returned sender fires or is dropped.
async fn server_with_secret(listen: SocketAddr) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let mut cfg = duet_server::ServerConfig { listen, ..duet_server::ServerConfig::default() };
    cfg.hub.resume_key = Some(duet_server::hub::token::TokenKey::new(b"e2e restart secret".to_vec()));
    let server = duet_server::Server::bind(cfg).await.unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_call_leaves_the_call_and_its_chat_alone() {
    let _slot = call_slot().await;
    let (addr, stop) = server_with_secret("127.0.0.1:0".parse().unwrap()).await;
    // a's chat goes out while the server is down.
    let a = tokio::spawn(duet(call_args(
        addr,
        &["--room", "restart", "--duration", "16", "--chat", "sent during the outage", "--chat-after", "3.5"],
    )));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Long enough for both to come back: reconnection backs off (with jitter) up to 8 s.
    let b = tokio::spawn(duet(call_args(addr, &["--room", "restart", "--duration", "16"])));
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(stop);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (addr2, _stop2) = server_with_secret(addr).await;
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert_eq!((a.code, b.code), (0, 0), "{}\n{}", a.stderr, b.stderr);
    for run in [&a, &b] {
        assert_eq!(run.count("matched"), 1, "the pairing survived: no new match\n{}", run.stderr);
        for e in run.events.iter().filter(|e| e["state"] == "ended") {
            assert_eq!(e["reason"], "Your partner left.", "{e}\n{}", run.stderr);
        }
        // Media never stopped: no freeze anywhere near the outage's length.
        let freeze = u(&run.summary()["longest_video_freeze_ms"]);
        assert!(freeze < 1500, "longest freeze {freeze} ms\n{}", run.stderr);
    }
    check_media(&a, &b, 640, 360);
    check_media(&b, &a, 640, 360);
    let received: Vec<&serde_json::Value> = b.events.iter().filter(|e| e["event"] == "chat_received").collect();
    assert_eq!(received.len(), 1, "the chat arrived exactly once: {received:?}");
    assert_eq!(received[0]["text"], "sent during the outage");
    assert_eq!(a.count("chat_delivered"), 1);
    // Both came back to the restarted server and it rebuilt their pairing from the tokens.
    let stats = http_get_json(addr2, "/api/webrtc/stats").await;
    assert_eq!(stats["sessions_restored_total"], 2, "{stats}");
    assert_eq!(stats["pairings_restored_total"], 1, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_answer_and_late_candidates_of_a_replaced_peer_connection_are_dropped() {
    let _slot = call_slot().await;
    let addr = server().await;
    // Both reach the server through relays; the offerer's holds back its partner's first
    // answer and candidates and delivers them 3 s into the second peer connection.
    let late = Some(Duration::from_secs(3));
    let (relay_a, relay_b) = (SignalRelay::start(addr, late).await, SignalRelay::start(addr, late).await);
    let args = |relay: &SignalRelay| {
        call_args(relay.addr, &["--room", "late", "--duration", "16", "--video", "synthetic:320x180@15"])
    };
    let a = tokio::spawn(duet(args(&relay_a)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = tokio::spawn(duet(args(&relay_b)));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert_eq!((a.code, b.code), (0, 0), "{}\n{}", a.stderr, b.stderr);
    let late = relay_a.delivered_late.load(std::sync::atomic::Ordering::SeqCst)
        + relay_b.delivered_late.load(std::sync::atomic::Ordering::SeqCst);
    // An answer and at least one candidate came late.
    assert!(late >= 2, "held back {late} signals");
    let dropped: u64 = [&a, &b].iter().map(|r| u(&r.summary()["stale_signals_dropped"])).sum();
    assert_eq!(dropped, late as u64, "every late signal was dropped\n{}\n{}", a.summary(), b.summary());
    for (run, other) in [(&a, &b), (&b, &a)] {
        let s = run.summary();
        assert_eq!(s["connected"], true, "{s}\n{}", run.stderr);
        assert_eq!(run.count("matched"), 1);
        for e in run.events.iter().filter(|e| e["state"] == "ended") {
            assert_eq!(e["reason"], "Your partner left.", "{e}\n{}", run.stderr);
        }
        // The second peer connection carried the call without a break after the late signals.
        assert!(u(&s["longest_media_gap_ms"]) < 1000, "{s}");
        assert!(u(&s["video_frames_decoded"]) > 90, "{s}");
        assert!(u(&s["audio_frames_decoded"]) * 10 >= u(&other.summary()["audio_frames_sent"]) * 5, "{s}");
        // Only the one planned replacement: the late signals started no recovery.
        let recovered: Vec<&serde_json::Value> = run.events.iter().filter(|e| e["event"] == "recovered").collect();
        assert!(recovered.len() <= 1, "{recovered:?}");
    }
}

fn chats_received(run: &Run) -> Vec<String> {
    run.events
        .iter()
        .filter(|e| e["event"] == "chat_received")
        .map(|e| e["text"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_belongs_to_one_partner_and_nothing_of_it_reaches_the_next() {
    let _slot = call_slot().await;
    let addr = server().await;
    // a chats with b and presses Next at once (its message may still be unacknowledged); b
    // leaves soon after; c arrives later and meets a.
    let a = tokio::spawn(duet(call_args(
        addr,
        &[
            "--duration",
            "6",
            "--chat",
            "for b only",
            "--chat-after",
            "2",
            "--next-after",
            "2",
            "--video",
            "synthetic:160x90@10",
        ],
    )));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = tokio::spawn(duet(call_args(
        addr,
        &["--duration", "2.3", "--chat", "from b", "--video", "synthetic:160x90@10"],
    )));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let c = duet(call_args(
        addr,
        &["--duration", "4", "--chat", "from c 1", "--chat", "from c 2", "--video", "synthetic:160x90@10"],
    ))
    .await;
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert_eq!((a.code, b.code, c.code), (0, 0, 0), "{}\n{}\n{}", a.stderr, b.stderr, c.stderr);
    assert_eq!((a.count("matched"), b.count("matched"), c.count("matched")), (2, 1, 1), "a met b, then c");
    // c's messages all arrive at a, although b used the same message ids before.
    assert_eq!(chats_received(&a), ["from b", "from c 1", "from c 2"], "{}", a.stderr);
    assert_eq!(c.count("chat_delivered"), 2);
    // Nothing of a's chat with b reaches c.
    assert!(chats_received(&c).is_empty(), "{:?}", chats_received(&c));
    // a's message to b was either delivered to b or reported undelivered, never both.
    let to_b = b.events.iter().any(|e| e["event"] == "chat_received" && e["text"] == "for b only");
    assert_eq!(a.count("chat_delivered") + a.count("chat_undelivered"), 1, "{:?}", a.events);
    if a.count("chat_delivered") == 1 {
        assert!(to_b, "delivered means b has it");
    }
}

/// A `wss://` server on 127.0.0.1 whose certificate (for `127.0.0.1` and `localhost`) is signed
/// by a CA of its own, as a private deployment would have. Returns its address and the
/// directory holding that CA's certificate as `ca.pem` (nothing on this machine trusts it).
async fn tls_server() -> (SocketAddr, tempfile::TempDir) {
    use duet_server::config::TlsFiles;
    use duet_server::{Server, ServerConfig};
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(DnType::CommonName, "Duet e2e test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let (cert_path, key_path) = (dir.path().join("server.pem"), dir.path().join("server-key.pem"));
    std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let cfg = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: Some(TlsFiles { cert: cert_path, key: key_path }),
        ..ServerConfig::default()
    };
    let server = Server::bind(cfg).await.unwrap();
    let addr = server.local_addr();
    tokio::spawn(server.run(std::future::pending()));
    (addr, dir)
}

/// `duet call` against `wss://ADDR/ws`, with `--ca-cert ca` if given.
fn wss_call_args(addr: SocketAddr, ca: Option<&std::path::Path>, extra: &[&str]) -> Vec<String> {
    let mut v = call_args(addr, extra);
    v[2] = format!("wss://{addr}/ws");
    if let Some(ca) = ca {
        v.extend(["--ca-cert".to_string(), ca.display().to_string()]);
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_with_the_servers_ca_certificate_holds_a_call_with_media() {
    let _slot = call_slot().await;
    let (addr, dir) = tls_server().await;
    let ca = dir.path().join("ca.pem");
    let a = tokio::spawn(duet(wss_call_args(addr, Some(&ca), &["--duration", "3", "--chat", "over tls"])));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = duet(wss_call_args(addr, Some(&ca), &["--duration", "3"])).await;
    let a = a.await.unwrap();
    assert_eq!((a.code, b.code), (0, 0), "a: {}\nb: {}", a.stderr, b.stderr);
    check_media(&a, &b, 640, 360);
    check_media(&b, &a, 640, 360);
    assert_eq!(chats_received(&b), ["over tls"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_without_the_ca_certificate_fails_promptly_naming_the_certificate() {
    let (addr, _dir) = tls_server().await;
    let started = Instant::now();
    let run = duet(wss_call_args(addr, None, &["--duration", "2"])).await;
    let took = started.elapsed();
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("cannot verify the server's certificate"), "{}", run.stderr);
    assert!(run.stderr.contains(&format!("wss://{addr}/ws")), "{}", run.stderr);
    assert!(run.stderr.contains("not signed by an authority this computer trusts"), "{}", run.stderr);
    // Given up at the first attempt: no retries with backoff.
    assert!(took < Duration::from_secs(4), "took {took:?}");
    let errors: Vec<_> = run.events.iter().filter(|e| e["event"] == "error").collect();
    assert_eq!(errors.len(), 1, "{:?}", run.events);
    assert_eq!(run.summary()["connected"], false);
}

#[tokio::test]
async fn wss_with_an_unusable_ca_file_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not-a-cert.txt");
    std::fs::write(&not_pem, "hello").unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], 9));
    for (ca, expected) in
        [(dir.path().join("missing.pem"), "cannot read the CA certificate file"), (not_pem, "holds no certificate")]
    {
        let started = Instant::now();
        let run = duet(wss_call_args(addr, Some(&ca), &[])).await;
        assert_eq!(run.code, 1, "{}", run.stderr);
        assert!(run.stderr.contains(expected) && run.stderr.contains(&ca.display().to_string()), "{}", run.stderr);
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
