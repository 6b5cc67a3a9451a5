//! The tray icon: one icon per call state, and a menu with Show/Hide, Start/Next, Mute, Quit.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tauri::image::Image;
use tauri::menu::{CheckMenuItem, Menu, MenuEvent, MenuItem, PredefinedMenuItem};
use tauri::tray::{TrayIcon, TrayIconBuilder};
use tauri::{AppHandle, Manager, Runtime, include_image};

use crate::engine::{ControlsView, Status};

/// What the tray icon shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrayState {
    /// No call.
    Idle,
    /// Looking for a partner, waiting in a room, or connecting.
    Searching,
    /// In a call with video.
    InCall,
    /// In a call, reconnecting.
    Reconnecting,
    /// In a call without video.
    AudioOnly,
}

impl From<Status> for TrayState {
    fn from(s: Status) -> Self {
        match s {
            Status::Idle | Status::Ended => TrayState::Idle,
            Status::Searching | Status::Waiting | Status::Connecting => TrayState::Searching,
            Status::Connected => TrayState::InCall,
            Status::Reconnecting => TrayState::Reconnecting,
            Status::AudioOnly => TrayState::AudioOnly,
        }
    }
}

impl TrayState {
    /// The icon for this state.
    pub fn icon(self) -> Image<'static> {
        match self {
            TrayState::Idle => include_image!("icons/tray/idle.png"),
            TrayState::Searching => include_image!("icons/tray/searching.png"),
            TrayState::InCall => include_image!("icons/tray/in-call.png"),
            TrayState::Reconnecting => include_image!("icons/tray/reconnecting.png"),
            TrayState::AudioOnly => include_image!("icons/tray/audio-only.png"),
        }
    }

    /// The tooltip.
    pub fn tooltip(self) -> &'static str {
        match self {
            TrayState::Idle => "Duet",
            TrayState::Searching => "Duet: looking for a partner",
            TrayState::InCall => "Duet: in a call",
            TrayState::Reconnecting => "Duet: reconnecting",
            TrayState::AudioOnly => "Duet: in a call (audio only)",
        }
    }

    /// Whether the Start/Next item means "Start".
    pub fn offers_start(self) -> bool {
        self == TrayState::Idle
    }
}

/// Menu item ids.
pub mod ids {
    /// Show or hide the window.
    pub const SHOW: &str = "show";
    /// Start, or Next in a call.
    pub const START_NEXT: &str = "start_next";
    /// Mute toggle.
    pub const MUTE: &str = "mute";
    /// Quit.
    pub const QUIT: &str = "quit";
}

/// The tray icon and the menu items that change.
pub struct Tray<R: Runtime> {
    icon: TrayIcon<R>,
    start_next: MenuItem<R>,
    mute: CheckMenuItem<R>,
    state: Mutex<Option<TrayState>>,
    frozen: AtomicBool,
}

impl<R: Runtime> Tray<R> {
    /// Creates the tray icon; `on_menu` handles menu clicks.
    pub fn build(
        app: &AppHandle<R>,
        on_menu: impl Fn(&AppHandle<R>, MenuEvent) + Send + Sync + 'static,
    ) -> tauri::Result<Self> {
        let show = MenuItem::with_id(app, ids::SHOW, "Show/Hide Duet", true, None::<&str>)?;
        let start_next = MenuItem::with_id(app, ids::START_NEXT, "Start", true, None::<&str>)?;
        let mute = CheckMenuItem::with_id(app, ids::MUTE, "Mute", true, false, None::<&str>)?;
        let quit = MenuItem::with_id(app, ids::QUIT, "Quit", true, None::<&str>)?;
        let sep = PredefinedMenuItem::separator(app)?;
        let menu = Menu::with_items(app, &[&show, &start_next, &mute, &sep, &quit])?;
        let icon = TrayIconBuilder::with_id("duet")
            .icon(TrayState::Idle.icon())
            .tooltip(TrayState::Idle.tooltip())
            .menu(&menu)
            .on_menu_event(on_menu)
            .build(app)?;
        Ok(Self { icon, start_next, mute, state: Mutex::new(Some(TrayState::Idle)), frozen: AtomicBool::new(false) })
    }

    /// The current state.
    pub fn state(&self) -> TrayState {
        self.state.lock().ok().and_then(|s| *s).unwrap_or(TrayState::Idle)
    }

    /// Stops updating (the app is exiting: updates would wait for the busy main thread).
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    /// Shows `status`.
    pub fn show_status(&self, status: Status) {
        if self.frozen.load(Ordering::SeqCst) {
            return;
        }
        let next = TrayState::from(status);
        let Ok(mut current) = self.state.lock() else { return };
        if *current == Some(next) {
            return;
        }
        *current = Some(next);
        drop(current);
        let _ = self.icon.set_icon(Some(next.icon()));
        let _ = self.icon.set_tooltip(Some(next.tooltip()));
        let _ = self.start_next.set_text(if next.offers_start() { "Start" } else { "Next" });
    }

    /// Shows the controls (the Mute check).
    pub fn show_controls(&self, controls: &ControlsView) {
        if self.frozen.load(Ordering::SeqCst) {
            return;
        }
        if self.mute.is_checked().ok() != Some(controls.muted) {
            let _ = self.mute.set_checked(controls.muted);
        }
    }
}

/// Shows the main window if hidden, hides it if shown.
pub fn toggle_window<R: Runtime>(app: &AppHandle<R>) {
    if let Some(w) = app.get_webview_window("main") {
        if w.is_visible().unwrap_or(false) {
            let _ = w.hide();
        } else {
            let _ = w.show();
            let _ = w.set_focus();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_a_tray_state_and_distinct_icons() {
        assert_eq!(TrayState::from(Status::Ended), TrayState::Idle);
        assert_eq!(TrayState::from(Status::Waiting), TrayState::Searching);
        assert_eq!(TrayState::from(Status::Connected), TrayState::InCall);
        assert_eq!(TrayState::from(Status::Reconnecting), TrayState::Reconnecting);
        assert_eq!(TrayState::from(Status::AudioOnly), TrayState::AudioOnly);
        let all =
            [TrayState::Idle, TrayState::Searching, TrayState::InCall, TrayState::Reconnecting, TrayState::AudioOnly];
        let icons: Vec<Vec<u8>> = all.iter().map(|s| s.icon().rgba().to_vec()).collect();
        for (i, a) in icons.iter().enumerate() {
            assert!(!a.is_empty());
            for b in &icons[i + 1..] {
                assert_ne!(a, b, "two states share an icon");
            }
        }
        assert!(TrayState::Idle.offers_start());
        assert!(!TrayState::InCall.offers_start());
    }
}
