//! The commands the page may invoke. Each validates its input, then forwards to the engine
//! or the settings store; errors come back to the page as a sentence for the user.

use std::sync::Arc;

use duet_core::chat::MAX_CHAT_CHARS;
use duet_proto::{MAX_INTEREST_CHARS, MAX_INTERESTS, MAX_REASON_CHARS, valid_language, valid_room_code};
use serde::Serialize;
use tauri::State;
use tauri::ipc::Channel;

use crate::engine::{AppCommand, DevicesView, Snapshot};
use crate::settings::{QualityChoice, SettingsUpdate, SettingsView};
use crate::state::AppState;
use crate::video_bridge::{Stream, StreamCounters};

/// The app state as commands receive it.
type Shared<'a> = State<'a, AppState<tauri::Wry>>;

/// What the page shows on load.
#[derive(Debug, Serialize)]
pub struct AppInfo {
    /// Status and controls.
    #[serde(flatten)]
    pub snapshot: Snapshot,
    /// The server in use (`ws://…/ws`).
    pub server_url: String,
    /// It is the built-in one.
    pub embedded: bool,
    /// Messages from start-up (e.g. a damaged settings file) not yet shown.
    pub notices: Vec<String>,
    /// App version.
    pub version: &'static str,
}

/// Status, controls and server.
#[tauri::command]
pub fn get_state(state: Shared<'_>) -> AppInfo {
    let (server_url, embedded) = state.server();
    AppInfo {
        snapshot: state.engine.snapshot(),
        server_url,
        embedded,
        notices: state.take_notices(),
        version: env!("CARGO_PKG_VERSION"),
    }
}

/// Checks interests and language from the page.
pub fn check_profile(
    interests: Vec<String>,
    language: Option<String>,
) -> Result<(Vec<String>, Option<String>), String> {
    let interests: Vec<String> = interests.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    if interests.len() > MAX_INTERESTS {
        return Err(format!("Choose at most {MAX_INTERESTS} interests."));
    }
    if interests.iter().any(|i| i.chars().count() > MAX_INTEREST_CHARS) {
        return Err(format!("Each interest can be at most {MAX_INTEREST_CHARS} characters."));
    }
    let language = language.map(|l| l.trim().to_string()).filter(|l| !l.is_empty());
    if language.as_deref().is_some_and(|l| !valid_language(l)) {
        return Err("Use a language tag such as en or pt-BR.".into());
    }
    Ok((interests, language))
}

/// Checks a room code from the page.
pub fn check_room_code(code: &str) -> Result<String, String> {
    let code = code.trim();
    if valid_room_code(code) {
        Ok(code.to_string())
    } else {
        Err("A room code is 3 to 32 letters, digits, - or _.".into())
    }
}

/// Checks a chat message from the page.
pub fn check_chat(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("The message is empty.".into());
    }
    if text.chars().count() > MAX_CHAT_CHARS {
        return Err(format!("A message can be at most {MAX_CHAT_CHARS} characters."));
    }
    Ok(text.to_string())
}

/// Checks a report reason from the page.
pub fn check_reason(reason: &str) -> Result<String, String> {
    let reason = reason.trim();
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(format!("A reason can be at most {MAX_REASON_CHARS} characters."));
    }
    Ok(if reason.is_empty() { "unspecified".into() } else { reason.to_string() })
}

/// Start looking for a random partner. Interests and language default to the settings'.
#[tauri::command]
pub async fn start(state: Shared<'_>, interests: Option<Vec<String>>, language: Option<String>) -> Result<(), String> {
    let saved = state.settings();
    let (interests, language) = check_profile(interests.unwrap_or(saved.interests), language.or(saved.language))?;
    state.send_in_order(AppCommand::Start { interests, language }).await;
    Ok(())
}

/// Join a friend's room.
#[tauri::command]
pub async fn join_room(state: Shared<'_>, code: String) -> Result<(), String> {
    let code = check_room_code(&code)?;
    state.send_in_order(AppCommand::JoinRoom(code)).await;
    Ok(())
}

/// A fresh room code nobody can guess, to share with a friend.
#[tauri::command]
pub fn new_room_code() -> String {
    duet_core::room_code::new_room_code()
}

/// A call with the echo bot.
#[tauri::command]
pub async fn test_call(state: Shared<'_>) -> Result<(), String> {
    state.send_in_order(AppCommand::TestCall).await;
    Ok(())
}

/// Skip to the next partner.
#[tauri::command]
pub async fn next(state: Shared<'_>) -> Result<(), String> {
    state.send_in_order(AppCommand::Next).await;
    Ok(())
}

/// End the call or the search.
#[tauri::command]
pub async fn stop(state: Shared<'_>) -> Result<(), String> {
    state.send_in_order(AppCommand::Stop).await;
    Ok(())
}

/// Send a chat message.
#[tauri::command]
pub fn send_chat(state: Shared<'_>, text: String) -> Result<(), String> {
    state.engine.send(AppCommand::SendChat(check_chat(&text)?));
    Ok(())
}

/// Mute or unmute.
#[tauri::command]
pub fn set_muted(state: Shared<'_>, muted: bool) {
    state.engine.send(AppCommand::SetMuted(muted));
}

/// Camera on or off.
#[tauri::command]
pub fn set_camera(state: Shared<'_>, on: bool) {
    state.engine.send(AppCommand::SetCamera(on));
}

/// Choose the quality.
#[tauri::command]
pub fn set_quality(state: Shared<'_>, quality: QualityChoice) {
    state.engine.send(AppCommand::SetQuality(quality));
}

/// Report the partner.
#[tauri::command]
pub fn report(state: Shared<'_>, reason: String) -> Result<(), String> {
    state.engine.send(AppCommand::Report(check_reason(&reason)?));
    Ok(())
}

/// Block the partner.
#[tauri::command]
pub fn block(state: Shared<'_>) {
    state.engine.send(AppCommand::Block);
}

/// The settings, without secrets.
#[tauri::command]
pub fn get_settings(state: Shared<'_>) -> SettingsView {
    state.settings().view()
}

/// Validates and saves the settings; on error nothing changes.
#[tauri::command]
pub async fn save_settings(state: Shared<'_>, update: SettingsUpdate) -> Result<SettingsView, String> {
    state.save_settings(update).await.map_err(|e| e.to_string())
}

/// The cameras, microphones and speakers present, as the engine last found them (it looks again
/// every few seconds and sends the page a `devices` event when they change).
#[tauri::command]
pub fn list_devices(state: Shared<'_>) -> DevicesView {
    state.engine.snapshot().devices
}

/// Turns the settings' microphone level meter on or off: while on, the engine sends the page a
/// `mic_level` event about ten times a second.
#[tauri::command]
pub fn mic_test(state: Shared<'_>, on: bool) {
    state.engine.send(AppCommand::MicTest(on));
}

/// Plays a short test sound on the chosen speaker; the engine sends `speaker_test` events when
/// it starts and when it ends.
#[tauri::command]
pub fn speaker_test(state: Shared<'_>) {
    state.engine.send(AppCommand::SpeakerTest);
}

/// The page's channel for a video stream.
#[tauri::command]
pub fn video_attach(state: Shared<'_>, stream: Stream, channel: Channel) {
    state.bridge.attach(stream, Arc::new(channel));
}

/// The canvas of `stream` is `width` x `height` device pixels on screen.
#[tauri::command]
pub async fn video_viewport(state: Shared<'_>, stream: Stream, width: u32, height: u32) -> Result<(), String> {
    state.bridge.set_viewport(stream, width, height);
    // The partner never needs to send more than the canvas shows.
    if stream == Stream::Remote && width > 0 && height > 0 {
        state.send_in_order(AppCommand::SetViewSize(width, height)).await;
    }
    Ok(())
}

/// The page has drawn the last frame of `stream`.
#[tauri::command]
pub fn video_ack(state: Shared<'_>, stream: Stream) {
    state.bridge.ack(stream);
}

/// Frame counters of both streams (for the stats overlay and benchmarks).
#[tauri::command]
pub fn video_counters(state: Shared<'_>) -> [StreamCounters; 2] {
    [state.bridge.counters(Stream::Remote), state.bridge.counters(Stream::Local)]
}

/// The page has painted its first frame: logged once, with the time since start.
#[tauri::command]
pub fn window_painted() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| tracing::info!(first_paint_ms = crate::uptime_ms(), "window painted"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_codes() {
        assert_eq!(check_room_code("  friends-42 "), Ok("friends-42".into()));
        assert!(check_room_code("ab").is_err());
        assert!(check_room_code("no spaces").unwrap_err().contains("3 to 32"));
        assert!(check_room_code(&"x".repeat(33)).is_err());
    }

    #[test]
    fn chat_messages() {
        assert_eq!(check_chat(" hi "), Ok("hi".into()));
        assert_eq!(check_chat("   "), Err("The message is empty.".into()));
        assert!(check_chat(&"é".repeat(MAX_CHAT_CHARS)).is_ok());
        assert!(check_chat(&"é".repeat(MAX_CHAT_CHARS + 1)).is_err());
    }

    #[test]
    fn profiles() {
        assert_eq!(
            check_profile(vec![" music ".into(), "".into()], Some(" pt-BR ".into())),
            Ok((vec!["music".into()], Some("pt-BR".into())))
        );
        assert!(check_profile(vec!["x".into(); MAX_INTERESTS + 1], None).is_err());
        assert!(check_profile(vec!["x".repeat(MAX_INTEREST_CHARS + 1)], None).is_err());
        assert!(check_profile(vec![], Some("12".into())).unwrap_err().contains("language tag"));
        assert_eq!(check_profile(vec![], Some(" ".into())), Ok((vec![], None)));
    }

    /// The fields `ui/app.js` reads for the device lists, the level meter and the speaker test.
    #[test]
    fn the_page_gets_devices_levels_and_the_speaker_test_in_the_shapes_it_reads() {
        use crate::engine::{ControlsView, DeviceView, StatusView, UiEvent};
        let mic = DeviceView { id: "hw:1".into(), name: "USB microphone".into(), is_default: true };
        let devices = DevicesView { microphones: vec![mic], notes: vec!["no camera".into()], ..DevicesView::default() };
        let controls = ControlsView {
            muted: false,
            camera_on: true,
            quality: QualityChoice::Auto,
            has_camera: false,
            has_microphone: true,
        };
        let info = AppInfo {
            snapshot: Snapshot { status: StatusView::default(), controls, devices: devices.clone() },
            server_url: "ws://127.0.0.1:8787/ws".into(),
            embedded: true,
            notices: Vec::new(),
            version: "0",
        };
        // At load: `info.devices`, as `list_devices` returns it.
        let loaded = serde_json::to_value(&info).unwrap();
        assert_eq!(loaded["devices"], serde_json::to_value(&devices).unwrap());
        assert_eq!(
            loaded["devices"]["microphones"][0],
            serde_json::json!({"id": "hw:1", "name": "USB microphone", "is_default": true})
        );
        assert_eq!(loaded["devices"]["cameras"], serde_json::json!([]));
        // Then as events.
        let event = |e: UiEvent| serde_json::to_value(e).unwrap();
        assert_eq!(
            event(UiEvent::MicLevel { rms_dbfs: -23.5 }),
            serde_json::json!({"kind": "mic_level", "rms_dbfs": -23.5})
        );
        assert_eq!(
            event(UiEvent::SpeakerTest { playing: true }),
            serde_json::json!({"kind": "speaker_test", "playing": true})
        );
        let pushed = event(UiEvent::Devices(devices));
        assert_eq!(pushed["kind"], "devices");
        assert_eq!(pushed["microphones"], loaded["devices"]["microphones"]);
        assert_eq!(pushed["notes"], serde_json::json!(["no camera"]));
        assert_eq!(pushed["speakers"], serde_json::json!([]));
    }

    #[test]
    fn report_reasons() {
        assert_eq!(check_reason(""), Ok("unspecified".into()));
        assert!(check_reason(&"r".repeat(MAX_REASON_CHARS + 1)).is_err());
    }
}
