//! The Duet desktop app: a thin Tauri shell around the call engine.
//!
//! - [`settings`]: the typed settings, persisted with `tauri-plugin-store`.
//! - [`engine`]: forwards page commands to `duet-core` and engine events to the page and tray.
//! - [`commands`]: what the page may invoke, with input checks.
//! - [`video_bridge`]: decoded frames to the page over an IPC channel, newest frame wins.
//! - [`tray`]: the tray icon per call state and its menu.
//! - [`embedded`]: the built-in server used when no server is configured.
//! - [`state`]: what the commands share.
//!
//! Environment (for tests and benchmarks; none is needed to use the app):
//! `DUET_CONFIG_DIR` (settings directory), `DUET_VIDEO` / `DUET_AUDIO` (media specs such as
//! `synthetic:1280x720@30` and `tone` instead of camera and microphone), `DUET_NO_PLAYBACK=1`,
//! `DUET_BIND` (local media address, e.g. `127.0.0.1:0`), `DUET_EMBEDDED_ADDR`.

pub mod commands;
pub mod device;
pub mod embedded;
pub mod engine;
mod media_devices;
pub mod settings;
pub mod state;
#[cfg(test)]
mod test_support;
pub mod tray;
pub mod video_bridge;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tauri::menu::MenuEvent;
use tauri::{AppHandle, Emitter, Manager, RunEvent, Runtime, WindowEvent};
use tracing::{info, warn};

use crate::engine::{AppCommand, Engine, EngineConfig, MediaOverrides, Status, UiEvent, UiSink};
use crate::settings::SettingsStore;
use crate::state::{AppState, EarlyNotices, ServerInUse, resolve_server};
use crate::tray::Tray;
use crate::video_bridge::VideoBridge;

/// The event name the page listens to.
pub const EVENT: &str = "duet";

/// When `run` began (for the time to first paint).
static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// Milliseconds since the app started.
pub fn uptime_ms() -> u64 {
    STARTED.get().map_or(0, |t| t.elapsed().as_millis() as u64)
}

/// Launch options read from the environment.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// Settings directory instead of the app config dir.
    pub config_dir: Option<PathBuf>,
    /// Media instead of camera/microphone/speaker.
    pub overrides: MediaOverrides,
    /// Local media address.
    pub bind: SocketAddr,
}

impl LaunchOptions {
    /// Reads `DUET_*` variables; a bad value is an error naming it.
    pub fn from_env() -> Result<Self, String> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let overrides = MediaOverrides {
            video: var("DUET_VIDEO").map(|v| v.parse()).transpose().map_err(|e| format!("DUET_VIDEO: {e}"))?,
            audio: var("DUET_AUDIO").map(|v| v.parse()).transpose().map_err(|e| format!("DUET_AUDIO: {e}"))?,
            mute_playback: var("DUET_NO_PLAYBACK").is_some_and(|v| v != "0"),
        };
        let bind = match var("DUET_BIND") {
            Some(b) => b.parse().map_err(|_| format!("DUET_BIND: {b:?} is not an address such as 127.0.0.1:0"))?,
            None => SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        Ok(Self { config_dir: var("DUET_CONFIG_DIR").map(PathBuf::from), overrides, bind })
    }
}

/// Sends engine events to the page and the tray.
struct TauriUi<R: Runtime> {
    app: AppHandle<R>,
    early: Arc<EarlyNotices>,
}

impl<R: Runtime> UiSink for TauriUi<R> {
    fn emit(&self, event: UiEvent) {
        if let Some(tray) = self.app.try_state::<Tray<R>>() {
            match &event {
                UiEvent::Status(s) => tray.show_status(s.status),
                UiEvent::Controls(c) => tray.show_controls(c),
                _ => {}
            }
        }
        if let UiEvent::Status(s) = &event {
            info!(status = ?s.status, side = s.side, reason = s.reason.as_deref(), test_call = s.test_call, "status");
        }
        if let UiEvent::Notice { text } = &event
            && self.early.hold(text)
        {
            return;
        }
        let _ = self.app.emit(EVENT, &event);
    }
}

fn on_tray_menu<R: Runtime>(app: &AppHandle<R>, event: MenuEvent) {
    let Some(state) = app.try_state::<AppState<R>>() else { return };
    match event.id().as_ref() {
        tray::ids::SHOW => tray::toggle_window(app),
        tray::ids::START_NEXT => {
            let cmd = if matches!(state.engine.snapshot().status.status, Status::Idle | Status::Ended) {
                let s = state.settings();
                AppCommand::Start { interests: s.interests, language: s.language }
            } else {
                AppCommand::Next
            };
            let app = app.clone();
            tauri::async_runtime::spawn(async move {
                if let Some(state) = app.try_state::<AppState<R>>() {
                    state.send_in_order(cmd).await;
                }
            });
        }
        tray::ids::MUTE => {
            let muted = state.engine.snapshot().controls.muted;
            state.engine.send(AppCommand::SetMuted(!muted));
        }
        tray::ids::QUIT => {
            let engine = state.engine.clone();
            let app = app.clone();
            tauri::async_runtime::spawn(async move {
                engine.quit().await;
                app.exit(0);
            });
        }
        _ => {}
    }
}

fn setup<R: Runtime>(app: &tauri::App<R>, opts: LaunchOptions) -> Result<(), Box<dyn std::error::Error>> {
    let handle = app.handle().clone();
    let dir = match &opts.config_dir {
        Some(d) => d.clone(),
        None => app.path().app_config_dir()?,
    };
    let loaded = SettingsStore::open(&handle, &dir)?;
    let early = Arc::new(EarlyNotices::default());
    if let Some(n) = &loaded.notice {
        early.hold(n);
    }
    let settings = loaded.store.get().clone();
    info!(path = %loaded.store.path().display(), "settings loaded");
    let bridge = VideoBridge::new();
    let (engine, embedded, server) = tauri::async_runtime::block_on(async {
        let mut embedded = None;
        let server = match resolve_server(&settings, &mut embedded).await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "embedded server unavailable");
                early.hold(&e.to_string());
                let url = embedded::configured_addr().map(|a| format!("ws://{a}/ws")).unwrap_or_default();
                ServerInUse { url, embedded: true }
            }
        };
        let cfg = EngineConfig {
            settings: settings.clone(),
            server_url: server.url.clone(),
            overrides: opts.overrides.clone(),
            bind: opts.bind,
            bridge: bridge.clone(),
            device_id: Some(device::device_id(&dir)),
            devices: Arc::new(duet_core::devices::SystemDevices),
        };
        let engine = Engine::start(cfg, Arc::new(TauriUi { app: handle.clone(), early: early.clone() }));
        (engine, embedded, server)
    });
    info!(server = %server.url, embedded = server.embedded, "server chosen");
    let tray = match Tray::build(&handle, on_tray_menu::<R>) {
        Ok(t) => Some(t),
        Err(e) => {
            warn!(error = %e, "no tray icon on this desktop");
            None
        }
    };
    let has_tray = tray.is_some();
    if let Some(t) = tray {
        app.manage(t);
    }
    app.manage(AppState::new(engine, bridge, loaded.store, embedded, server, early));
    if let Some(w) = app.get_webview_window("main") {
        // Without a tray there would be no way back to a hidden window.
        if !(settings.start_minimised && has_tray) {
            w.show()?;
        }
    }
    Ok(())
}

/// Runs the app until the user quits.
pub fn run() {
    STARTED.get_or_init(std::time::Instant::now);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,duet_app=info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let opts = match LaunchOptions::from_env() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("duet-app: {e}");
            std::process::exit(2);
        }
    };
    let app = tauri::Builder::default()
        .plugin(tauri_plugin_store::Builder::default().build())
        .invoke_handler(tauri::generate_handler![
            commands::get_state,
            commands::start,
            commands::join_room,
            commands::new_room_code,
            commands::test_call,
            commands::next,
            commands::stop,
            commands::send_chat,
            commands::set_muted,
            commands::set_camera,
            commands::set_quality,
            commands::report,
            commands::block,
            commands::get_settings,
            commands::save_settings,
            commands::list_devices,
            commands::mic_test,
            commands::speaker_test,
            commands::video_attach,
            commands::video_ack,
            commands::video_viewport,
            commands::video_counters,
            commands::window_painted,
        ])
        .setup(move |app| setup(app, opts))
        .on_window_event(|window, event| {
            if let WindowEvent::CloseRequested { api, .. } = event {
                let app = window.app_handle();
                let keep = app.try_state::<AppState<tauri::Wry>>().is_some_and(|s| s.settings().close_to_tray)
                    && app.try_state::<Tray<tauri::Wry>>().is_some();
                if keep {
                    api.prevent_close();
                    let _ = window.hide();
                }
            }
        })
        .build(tauri::generate_context!());
    let app = match app {
        Ok(a) => a,
        Err(e) => {
            eprintln!("duet-app: cannot start: {e}");
            std::process::exit(1);
        }
    };
    app.run(|handle, event| {
        if let RunEvent::Exit = event {
            // Tray updates run on this (main) thread, which is about to wait for the engine.
            if let Some(tray) = handle.try_state::<Tray<tauri::Wry>>() {
                tray.freeze();
            }
            if let Some(state) = handle.try_state::<AppState<tauri::Wry>>() {
                let engine = state.engine.clone();
                tauri::async_runtime::block_on(engine.quit());
            }
        }
    });
}
