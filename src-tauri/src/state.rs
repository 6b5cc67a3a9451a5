//! What the commands share: the engine handle, the video bridge, the settings store and the
//! server in use (the embedded one or the user's).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tauri::Runtime;

use crate::embedded::{self, Embedded};
use crate::engine::{AppCommand, Engine};
use crate::settings::{Settings, SettingsError, SettingsStore, SettingsUpdate, SettingsView};
use crate::video_bridge::VideoBridge;

/// The server a call uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInUse {
    /// `ws://…/ws`.
    pub url: String,
    /// The built-in one.
    pub embedded: bool,
}

/// Shared app state (Tauri managed state).
pub struct AppState<R: Runtime> {
    /// The engine.
    pub engine: Engine,
    /// Video to the page.
    pub bridge: VideoBridge,
    settings: Mutex<SettingsStore<R>>,
    embedded: tokio::sync::Mutex<Option<Embedded>>,
    server: Mutex<ServerInUse>,
    early: Arc<EarlyNotices>,
    /// Held while a call command is checked and sent, so commands reach the engine in the
    /// order the user gave them (Start waits for the server check; a Stop after it waits too).
    order: tokio::sync::Mutex<()>,
}

/// Notices raised before the page is listening (start-up problems, missing devices): kept
/// until the page asks for them once, then passed straight through.
#[derive(Default)]
pub struct EarlyNotices {
    page_ready: AtomicBool,
    held: Mutex<Vec<String>>,
}

impl EarlyNotices {
    /// Holds `text` if the page has not asked yet; false if it should be sent now.
    pub fn hold(&self, text: &str) -> bool {
        let mut held = lock(&self.held);
        if self.page_ready.load(Ordering::SeqCst) {
            return false;
        }
        held.push(text.to_string());
        true
    }

    /// Everything held; from now on nothing is.
    pub fn release(&self) -> Vec<String> {
        let mut held = lock(&self.held);
        self.page_ready.store(true, Ordering::SeqCst);
        std::mem::take(&mut *held)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Resolves the server for `settings`: theirs, or the embedded one (started if needed).
pub async fn resolve_server(
    settings: &Settings,
    embedded: &mut Option<Embedded>,
) -> Result<ServerInUse, embedded::EmbeddedError> {
    if !settings.server_url.is_empty() {
        return Ok(ServerInUse { url: settings.server_url.clone(), embedded: false });
    }
    if embedded.is_none() {
        *embedded = Some(embedded::start(embedded::configured_addr()?).await?);
    }
    let url = embedded.as_ref().map(Embedded::url).unwrap_or_default();
    Ok(ServerInUse { url, embedded: true })
}

impl<R: Runtime> AppState<R> {
    /// Puts the parts together.
    pub fn new(
        engine: Engine,
        bridge: VideoBridge,
        settings: SettingsStore<R>,
        embedded: Option<Embedded>,
        server: ServerInUse,
        early: Arc<EarlyNotices>,
    ) -> Self {
        Self {
            engine,
            bridge,
            settings: Mutex::new(settings),
            embedded: tokio::sync::Mutex::new(embedded),
            server: Mutex::new(server),
            early,
            order: tokio::sync::Mutex::new(()),
        }
    }

    /// A copy of the settings.
    pub fn settings(&self) -> Settings {
        lock(&self.settings).get().clone()
    }

    /// The server in use: URL and whether it is the embedded one.
    pub fn server(&self) -> (String, bool) {
        let s = lock(&self.server);
        (s.url.clone(), s.embedded)
    }

    /// Sends `cmd` to the engine in order with the other call commands; Start, Join and Test
    /// call first make sure the embedded server is there.
    pub async fn send_in_order(&self, cmd: AppCommand) {
        let _order = self.order.lock().await;
        if matches!(cmd, AppCommand::Start { .. } | AppCommand::JoinRoom(_) | AppCommand::TestCall) {
            self.ensure_server().await;
        }
        self.engine.send(cmd);
    }

    /// Notices held until the page was ready, once.
    pub fn take_notices(&self) -> Vec<String> {
        self.early.release()
    }

    /// Before a call on the embedded server: if it was another instance's and that instance has
    /// quit (or the port was taken at start and is free now), start our own on the same address.
    /// The URL does not change; the engine starts a fresh session on it.
    async fn ensure_server(&self) {
        if !self.server().1 {
            return;
        }
        let mut embedded = self.embedded.lock().await;
        if embedded.as_ref().is_some_and(Embedded::is_owned) {
            return;
        }
        let Ok(addr) = embedded::configured_addr() else { return };
        let alive = tokio::task::spawn_blocking(move || embedded::is_duet_server(addr)).await.unwrap_or(false);
        if alive {
            return;
        }
        match embedded::start(addr).await {
            Ok(e) => {
                tracing::info!(%addr, "the shared embedded server is gone: now running our own");
                *embedded = Some(e);
                // Sessions on the old server are gone with it: the next call starts afresh.
                self.engine.send(AppCommand::ServerReplaced);
            }
            Err(e) => tracing::warn!(error = %e, "embedded server unavailable"),
        }
    }

    /// Validates and saves an update from the page, then reconfigures the engine. Nothing is
    /// saved if the update is invalid or its server cannot be used.
    pub async fn save_settings(&self, update: SettingsUpdate) -> Result<SettingsView, SettingsError> {
        let next = lock(&self.settings).get().updated(update)?;
        let server = {
            let mut embedded = self.embedded.lock().await;
            resolve_server(&next, &mut embedded)
                .await
                .map_err(|e| SettingsError::Invalid { field: "Server URL".into(), message: e.to_string() })?
        };
        lock(&self.settings).save(next.clone())?;
        tracing::info!(server = %server.url, embedded = server.embedded, turn_servers = next.turn_servers.len(), "settings saved");
        let view = next.view();
        self.engine.send(AppCommand::Reconfigure { settings: Box::new(next), server_url: server.url.clone() });
        *lock(&self.server) = server;
        Ok(view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_are_held_until_the_page_asks_then_passed_through() {
        let early = EarlyNotices::default();
        assert!(early.hold("settings damaged"));
        assert!(early.hold("no camera"));
        assert_eq!(early.release(), vec!["settings damaged".to_string(), "no camera".to_string()]);
        assert!(!early.hold("later"));
        assert!(early.release().is_empty());
    }
}
