//! The real desktop window, end to end: Xvfb, `tauri-driver` + WebKitWebDriver driving the
//! built `duet-app` with synthetic camera and microphone, on its embedded server.
//!
//! - A test call with the echo bot shows moving video, switches quality, mutes (button and
//!   Ctrl+D), turns the camera off (Ctrl+E), ends with Esc Esc; settings save a TURN server
//!   (owner-only file, credential never shown) and refuse an invalid one without losing
//!   anything; a damaged settings file is moved aside with a visible notice. A screenshot of
//!   the call screen is saved in `test-artifacts/`.
//! - Two app instances match with each other through one embedded server and chat; the one
//!   without a camera says so and still gets the call; it shows the quality bars and its
//!   partner's audio-only choice as a placeholder; a report reaches the server and ends the call;
//!   when the instance that ran the server quits, the other one takes over its address.
//! - The settings meter the microphone (a tone) while they are open and stop when closed, turn
//!   noise suppression off in the saved file, and test the speaker (playing, then done).
//! - Closing the window hides it when "keep running in the tray" is set, and quits otherwise.
//! - The window refuses a bad room code with a message, then joins a room by code with a
//!   separate `duet bot` process and shows its video.

mod support;

use std::sync::Mutex;

use support::{Display, Driver, Session, artifacts_dir, free_port};

/// One window test at a time: each runs WebKit and media on a 2-core machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn media_env(config: &std::path::Path, embedded_port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("DUET_CONFIG_DIR", config.display().to_string()),
        ("DUET_EMBEDDED_ADDR", format!("127.0.0.1:{embedded_port}")),
        ("DUET_BIND", "127.0.0.1:0".into()),
        ("DUET_NO_PLAYBACK", "1".into()),
        ("DUET_AUDIO", "tone".into()),
    ]
}

fn frames(s: &Session, id: &str) -> u64 {
    s.data(id, "frames").parse().unwrap_or(0)
}

#[test]
fn the_window_makes_a_test_call_and_keeps_settings_safe() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let display = Display::start();
    let config = tempfile::tempdir().unwrap();
    let settings_path = config.path().join("settings.json");
    std::fs::write(&settings_path, b"{\"server_url\": \"wss://half-written").unwrap();
    let mut env = media_env(config.path(), free_port());
    env.push(("DUET_VIDEO", "synthetic:640x360@30".into()));
    let driver = Driver::start(&display, &env);
    let s = Session::new(&driver);

    // The damaged file was kept aside and the user told.
    s.wait(
        "the damaged-settings notice",
        10,
        "return document.getElementById('notices').textContent.includes('damaged')",
    );
    let aside: Vec<_> = std::fs::read_dir(config.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("settings.json.damaged-"))
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(std::fs::read(aside[0].path()).unwrap(), b"{\"server_url\": \"wss://half-written");
    assert_eq!(s.text("#server"), "built-in server");

    // Test call: our own video comes back from the echo bot and keeps moving.
    s.click("#btn-test");
    s.wait("the test call to connect", 20, "return document.getElementById('status').dataset.status === 'connected'");
    assert_eq!(s.data("status", "testCall"), "true");
    s.wait("echoed video", 10, "return Number(document.getElementById('remote-video').dataset.frames) > 30");
    let (f1, h1) = (frames(&s, "remote-video"), s.data("remote-video", "hash"));
    std::thread::sleep(std::time::Duration::from_secs(2));
    let (f2, h2) = (frames(&s, "remote-video"), s.data("remote-video", "hash"));
    assert!(f2 >= f1 + 20, "remote video is not updating: {f1} -> {f2} frames in 2 s");
    assert_ne!(h1, h2, "the remote picture does not change");
    assert!(frames(&s, "local-video") > 30, "the local preview is not drawn");
    assert_eq!(s.data("remote-video", "width"), "640");

    // The stats overlay shows a direct path, then a screenshot of the call screen.
    s.click("#btn-stats");
    s.wait("stats", 10, "return document.getElementById('st-path').textContent === 'direct'");
    display.screenshot(&artifacts_dir().join("desktop-call.png"));

    // Quality Low reaches the engine: the echoed video shrinks to 320x180.
    s.click("#quality option[value=low]");
    s.wait("low-quality video", 15, "return Number(document.getElementById('remote-video').dataset.width) <= 320");

    // Mute with the button, unmute with Ctrl+D; the state comes back from the engine.
    s.click("#btn-mute");
    s.wait("muted", 5, "return document.getElementById('btn-mute').getAttribute('aria-pressed') === 'true'");
    s.type_text("#chat-input", "\u{E009}d\u{E000}");
    s.wait("unmuted", 5, "return document.getElementById('btn-mute').getAttribute('aria-pressed') === 'false'");
    // Ctrl+E turns the camera off: the preview goes away.
    s.type_text("#chat-input", "\u{E009}e\u{E000}");
    s.wait("camera off", 5, "return document.getElementById('btn-camera').getAttribute('aria-pressed') === 'false' && document.getElementById('local-video').hidden");

    // Esc twice: next, which ends a test call.
    s.type_text("#chat-input", "\u{E00C}\u{E00C}");
    s.wait(
        "the test call to end",
        10,
        "return ['idle', 'ended'].includes(document.getElementById('status').dataset.status)",
    );

    // Settings: save a TURN server.
    s.click("#btn-settings");
    s.wait("the settings dialog", 5, "return document.getElementById('settings').open");
    s.click("#btn-add-turn");
    s.fill("#turn-list .turn-row:last-child .turn-url", "turn:127.0.0.1:3478?transport=udp");
    s.fill("#turn-list .turn-row:last-child .turn-user", "alice");
    s.fill("#turn-list .turn-row:last-child .turn-cred", "s3cret-turn-pass");
    s.click("#btn-save-settings");
    s.wait("saved", 10, "return !document.getElementById('settings-ok').hidden");
    let saved = std::fs::read_to_string(&settings_path).unwrap();
    assert!(saved.contains("turn:127.0.0.1:3478?transport=udp") && saved.contains("s3cret-turn-pass"), "{saved}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&settings_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "settings.json must be owner-only");
    }
    // The page is told that a credential is saved, never the credential.
    let view = s.exec("return window.__TAURI__.core.invoke('get_settings').then((v) => JSON.stringify(v))");
    assert!(
        view.as_str().unwrap().contains("\"has_credential\":true") && !view.to_string().contains("s3cret"),
        "{view}"
    );
    assert_eq!(s.exec("return document.querySelector('#turn-list .turn-row .turn-cred').value"), "");
    assert!(!s.exec("return document.documentElement.outerHTML").to_string().contains("s3cret"));
    assert_eq!(
        s.exec("return document.querySelector('#turn-list .turn-row .turn-cred').placeholder"),
        "Saved (leave empty to keep)"
    );

    // An invalid TURN server is refused with a message; nothing on disk changes.
    s.click("#btn-add-turn");
    s.fill("#turn-list .turn-row:last-child .turn-url", "http://turn.example.org");
    s.fill("#turn-list .turn-row:last-child .turn-user", "bob");
    s.fill("#turn-list .turn-row:last-child .turn-cred", "pw");
    s.click("#btn-save-settings");
    s.wait("the error", 10, "return !document.getElementById('settings-error').hidden");
    let error = s.text("#settings-error");
    assert!(error.contains("TURN server 2") && error.contains("turn:"), "{error}");
    assert_eq!(std::fs::read_to_string(&settings_path).unwrap(), saved, "a refused save changed the file");
    // Saving again without the bad row works and keeps the saved credential.
    s.click("#turn-list .turn-row:last-child .turn-remove");
    s.click("#btn-save-settings");
    s.wait(
        "saved again",
        10,
        "return document.getElementById('settings-error').hidden && !document.getElementById('settings-ok').hidden",
    );
    assert!(std::fs::read_to_string(&settings_path).unwrap().contains("s3cret-turn-pass"));
}

#[test]
fn two_windows_match_each_other_through_the_embedded_server() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let display = Display::start();
    let port = free_port();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut env_a = media_env(dir_a.path(), port);
    env_a.push(("DUET_VIDEO", "synthetic:640x360@30".into()));
    let driver_a = Driver::start(&display, &env_a);
    let a = Session::new(&driver_a);
    // B has no camera (none on this machine): it says so and still takes part.
    let driver_b = Driver::start(&display, &media_env(dir_b.path(), port));
    let b = Session::new(&driver_b);
    assert_eq!(a.text("#server"), "built-in server");
    assert_eq!(b.text("#server"), "built-in server");
    // Said at start, before any call: there is no camera to use.
    b.wait(
        "the no-camera notice at start",
        10,
        "return document.getElementById('notices').textContent.includes('No camera found')",
    );

    a.click("#btn-start");
    a.wait("A searching", 10, "return document.getElementById('status').dataset.status === 'searching'");
    b.click("#btn-start");
    for (name, s) in [("A", &a), ("B", &b)] {
        s.wait(
            &format!("{name} connected"),
            20,
            "return document.getElementById('status').dataset.status === 'connected'",
        );
    }
    b.wait(
        "the no-camera notice",
        10,
        "return document.getElementById('notices').textContent.includes('receive-only')",
    );
    b.wait("A's video at B", 10, "return Number(document.getElementById('remote-video').dataset.frames) > 30");
    assert_eq!(a.data("status", "testCall"), "false");

    b.fill("#chat-input", "hello from the second window");
    b.click("#btn-send");
    a.wait(
        "the chat at A",
        10,
        "return document.getElementById('chat-log').textContent.includes('hello from the second window')",
    );
    b.wait("delivery at B", 10, "return document.querySelector('#chat-log li.me.delivered') !== null");

    // The quality indicator shows the core's bars, with its reason as the tooltip.
    b.wait(
        "B's quality bars",
        10,
        "return ['1', '2', '3', '4'].includes(document.getElementById('link').dataset.bars)",
    );
    assert!(!b.exec("return document.getElementById('link').title").as_str().unwrap_or("").is_empty());
    // A chooses audio only: B shows a placeholder with the cause the core reports, never A's
    // last frame, and A's video comes back when A chooses Auto again.
    a.click("#quality option[value=audio_only]");
    b.wait(
        "A's audio-only at B",
        10,
        "const o = document.getElementById('overlay'); return !o.hidden && o.dataset.audioOnly === 'partner_choice'",
    );
    assert_eq!(b.text("#overlay-text"), "Your partner chose audio only.");
    a.click("#quality option[value=auto]");
    b.wait("A's video back at B", 15, "return document.getElementById('overlay').hidden");

    // A reports B (which also blocks): the server counts it and B's call ends.
    a.click("#btn-report");
    a.wait("the report dialog", 5, "return document.getElementById('report-dialog').open");
    a.click("#report-reason option[value=spam]");
    a.click("#btn-report-send");
    b.wait("B sees the end", 10, "return document.getElementById('status').dataset.status === 'ended'");
    assert!(b.text("#ended-reason").starts_with("The call ended"), "{}", b.text("#ended-reason"));
    let metrics = support::http_get(port, "/metrics");
    assert!(metrics.contains("duet_reports_total 1"), "{metrics}");
    display.screenshot(&artifacts_dir().join("desktop-two-windows.png"));

    // A quits, taking the shared embedded server with it: B's next Start runs its own.
    drop(a);
    drop(driver_a);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(std::time::Instant::now() < deadline, "A's embedded server is still up");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    b.click("#btn-start");
    b.wait(
        "B searching on its own server",
        15,
        "return document.getElementById('status').dataset.status === 'searching'",
    );
    // Really queued there, not only searching in its own eyes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !support::http_get(port, "/metrics").contains("duet_queue_length 1") {
        assert!(std::time::Instant::now() < deadline, "B is not in the queue of its new server");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(b.data("status", "status"), "searching");
}

#[test]
fn the_settings_meter_the_microphone_test_the_speaker_and_turn_noise_suppression_off() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let display = Display::start();
    let config = tempfile::tempdir().unwrap();
    let settings_path = config.path().join("settings.json");
    let driver = Driver::start(&display, &media_env(config.path(), free_port()));
    let s = Session::new(&driver);
    // Count the engine's level events from here on (the page ignores them while closed).
    s.exec(
        "window.duetLevels = 0; window.__TAURI__.event.listen('duet', (e) => { if (e.payload.kind === 'mic_level') window.duetLevels += 1; }); return true",
    );

    // Opening the settings starts the level meter: the tone (DUET_AUDIO=tone) fills the bar.
    s.click("#btn-settings");
    s.wait("the settings dialog", 5, "return document.getElementById('settings').open");
    s.wait(
        "the microphone level meter to show the tone",
        10,
        "return Number(document.getElementById('mic-meter').dataset.dbfs) > -40 && parseFloat(document.getElementById('mic-meter-bar').style.width) > 33",
    );
    // Audio processing is on by default.
    for id in ["set-echo-cancellation", "set-noise-suppression", "set-auto-gain"] {
        assert_eq!(s.exec(&format!("return document.getElementById('{id}').checked")), true, "{id}");
    }
    display.screenshot(&artifacts_dir().join("desktop-settings-audio.png"));

    // Noise suppression off, saved: the file says so and keeps the other two on.
    s.click("#set-noise-suppression");
    s.click("#btn-save-settings");
    s.wait("saved", 10, "return !document.getElementById('settings-ok').hidden");
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&settings_path).unwrap()).unwrap();
    assert_eq!(saved["noise_suppression"], false, "{saved}");
    assert_eq!(saved["echo_cancellation"], true, "{saved}");
    assert_eq!(saved["auto_gain"], true, "{saved}");
    // The meter goes on after the save (the engine applies processing changes at once).
    s.exec("document.getElementById('mic-meter').dataset.dbfs = '-100'; return true");
    s.wait("the meter after the save", 10, "return Number(document.getElementById('mic-meter').dataset.dbfs) > -40");

    // Test speaker: the button says it is playing (and cannot be pressed again), then is back.
    s.exec(
        "const b = document.getElementById('btn-speaker-test'); window.duetSpeaker = []; new MutationObserver(() => window.duetSpeaker.push(`${b.dataset.playing}:${b.disabled}:${b.textContent}`)).observe(b, { attributes: true, childList: true, characterData: true, subtree: true }); return true",
    );
    s.click("#btn-speaker-test");
    s.wait(
        "the speaker test to play and finish",
        10,
        "const seen = window.duetSpeaker; return seen.includes('true:true:Playing…') && seen[seen.length - 1] === 'false:false:Test speaker'",
    );

    // Closing the settings stops the meter in the engine, not only on the page.
    s.click("#btn-cancel-settings");
    s.wait("the settings to close", 5, "return !document.getElementById('settings').open");
    assert_eq!(s.data("mic-meter", "dbfs"), "-100");
    let before: u64 = s.exec("return window.duetLevels").as_u64().unwrap();
    assert!(before >= 5, "only {before} level events while the settings were open");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let after_close = s.exec("return window.duetLevels").as_u64().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let later = s.exec("return window.duetLevels").as_u64().unwrap();
    assert_eq!(later, after_close, "the engine still meters the microphone after the settings closed");
    // The saved choice is shown when the settings open again.
    s.click("#btn-settings");
    s.wait("the settings dialog again", 5, "return document.getElementById('settings').open");
    assert_eq!(s.exec("return document.getElementById('set-noise-suppression').checked"), false);
    assert_eq!(s.exec("return document.getElementById('set-echo-cancellation').checked"), true);
}

/// The `duet` CLI (built on demand: `cargo test -p duet-app` alone does not build other packages).
fn duet_cli() -> std::path::PathBuf {
    let mut cargo = std::process::Command::new(env!("CARGO"));
    cargo.args(["build", "--quiet", "-p", "duet-cli", "--bin", "duet"]);
    if !cfg!(debug_assertions) {
        cargo.arg("--release");
    }
    let status = cargo.current_dir(env!("CARGO_MANIFEST_DIR")).status().expect("cargo runs");
    assert!(status.success(), "cannot build the duet CLI");
    std::path::Path::new(support::APP).with_file_name("duet")
}

#[test]
fn the_window_joins_a_room_with_a_duet_bot_process() {
    let cli = duet_cli();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let display = Display::start();
    let config = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut env = media_env(config.path(), port);
    env.push(("DUET_VIDEO", "synthetic:640x360@30".into()));
    let driver = Driver::start(&display, &env);
    let s = Session::new(&driver);
    // A `duet bot` sending its own synthetic video waits in room friends-42 on the app's server.
    let _bot = support::Proc(
        std::process::Command::new(cli)
            .args(["bot", "--server", &format!("ws://127.0.0.1:{port}/ws"), "--room", "friends-42"])
            .args(["--synthetic", "--video", "synthetic:320x180@30", "--bind", "127.0.0.1:0", "--duration", "60"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // A bad room code is refused in the window with a message.
    s.fill("#room-code", "no spaces allowed");
    s.click("#btn-join");
    s.wait("the room-code message", 5, "return document.getElementById('notices').textContent.includes('3 to 32')");
    assert_eq!(s.data("status", "status"), "idle");
    s.fill("#room-code", "friends-42");
    s.click("#btn-join");
    s.wait("the room call", 20, "return document.getElementById('status').dataset.status === 'connected'");
    s.wait("the bot's video", 10, "return Number(document.getElementById('remote-video').dataset.frames) > 30");
    assert_eq!(s.data("remote-video", "width"), "320", "the bot's own video, not an echo");
    let h1 = s.data("remote-video", "hash");
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_ne!(s.data("remote-video", "hash"), h1, "the bot's picture does not move");
    s.click("#btn-stop");
    s.wait("idle", 10, "return ['idle', 'ended'].includes(document.getElementById('status').dataset.status)");
}

#[test]
fn closing_the_window_quits_unless_the_user_keeps_duet_in_the_tray() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let display = Display::start();
    let config = tempfile::tempdir().unwrap();
    std::fs::write(config.path().join("settings.json"), br#"{"close_to_tray": true}"#).unwrap();
    let tag = format!("close-{}", free_port());
    let mut env = media_env(config.path(), free_port());
    env.push(("DUET_BENCH_TAG", tag.clone()));
    let driver = Driver::start(&display, &env);
    let s = Session::new(&driver);
    let pid = support::tagged_app(&tag).expect("the app process");
    assert!(support::window_shown(&display, "Duet"));

    // Kept in the tray: closing hides the window, the app runs on.
    support::close_window(&display, "Duet");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while support::window_shown(&display, "Duet") {
        assert!(std::time::Instant::now() < deadline, "the window did not hide");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists(), "the app quit although kept in the tray");

    // Not kept: closing quits.
    let saved = s.exec(
        "return window.__TAURI__.core.invoke('save_settings', { update: { close_to_tray: false } }).then((v) => v.close_to_tray)",
    );
    assert_eq!(saved, serde_json::Value::Bool(false));
    support::close_window(&display, "Duet");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| !st.contains(") Z")) {
        assert!(std::time::Instant::now() < deadline, "the app did not quit when its window was closed");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
