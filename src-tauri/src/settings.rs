//! The user's settings: a typed struct, validated before it is stored, persisted with
//! `tauri-plugin-store` as `settings.json` in the app config directory (owner-only).
//!
//! The page never sees a TURN credential: it gets a [`SettingsView`] that only says whether one
//! is saved, and sends a [`SettingsUpdate`] in which an absent credential means "keep the saved
//! one". A damaged file is moved aside (never overwritten) and defaults are used, with a notice.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use duet_core::call::Quality;
use duet_core::tls::CaCertError;
use duet_proto::{IceServer, MAX_INTEREST_CHARS, MAX_INTERESTS, valid_language};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tauri::Runtime;
use tauri_plugin_store::{Store, StoreBuilder};

/// The settings file's name inside the app config directory.
pub const FILE_NAME: &str = "settings.json";
/// At most this many TURN servers.
pub const MAX_TURN_SERVERS: usize = 8;
const MAX_URL_CHARS: usize = 512;
const MAX_FIELD_CHARS: usize = 256;
const MAX_PATH_CHARS: usize = 4096;

/// A TURN (or STUN) server the user added.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TurnServer {
    /// `turn:host[:port][?transport=udp|tcp]`, `turns:…` or `stun:host[:port]`.
    pub url: String,
    /// TURN username (empty for STUN).
    #[serde(default)]
    pub username: String,
    /// TURN credential. Never logged, never handed to the page.
    #[serde(default)]
    pub credential: String,
}

impl std::fmt::Debug for TurnServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnServer")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("credential", &"<redacted>")
            .finish()
    }
}

/// The quality a call starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum QualityChoice {
    /// Follow the network.
    #[default]
    Auto,
    /// Up to 720p.
    High,
    /// Up to 360p.
    Medium,
    /// Up to 180p.
    Low,
    /// No video.
    AudioOnly,
}

impl From<QualityChoice> for Quality {
    fn from(q: QualityChoice) -> Self {
        match q {
            QualityChoice::Auto => Quality::Auto,
            QualityChoice::High => Quality::High,
            QualityChoice::Medium => Quality::Medium,
            QualityChoice::Low => Quality::Low,
            QualityChoice::AudioOnly => Quality::AudioOnly,
        }
    }
}

/// Everything the user can set, generic over how a TURN server is represented:
/// [`Settings`] as stored, [`SettingsView`] as the page sees it (no credentials),
/// [`SettingsUpdate`] as the page sends it (a credential left out keeps the saved one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SettingsOf<T> {
    /// `ws://` or `wss://` URL of a Duet server's `/ws`; empty: the embedded server.
    pub server_url: String,
    /// The user's own TURN/STUN servers, added to the server's.
    pub turn_servers: Vec<T>,
    /// "Hide my IP": relay-only ICE.
    pub relay_only: bool,
    /// Full path of a PEM file of CA certificates trusted for a `wss://` server, in addition to
    /// the system's (a server with a private or self-signed certificate); `None`: the system's
    /// only.
    pub ca_cert: Option<String>,
    /// Camera device id; `None`: the first camera.
    pub camera: Option<String>,
    /// Microphone device id; `None`: the default.
    pub microphone: Option<String>,
    /// Speaker device id; `None`: the default.
    pub speaker: Option<String>,
    /// Cancel the echo of the partner's voice from the speaker in the microphone. On by default
    /// (a file written before this setting existed loads with it on); off for headphones.
    pub echo_cancellation: bool,
    /// Suppress steady background noise in the microphone. On by default; off for music.
    pub noise_suppression: bool,
    /// Keep the microphone's level even (automatic gain control). On by default; off for music.
    pub auto_gain: bool,
    /// Start with the window hidden (in the tray).
    pub start_minimised: bool,
    /// Closing the window keeps the app (and a call) running in the tray.
    pub close_to_tray: bool,
    /// Quality a call starts with.
    pub quality: QualityChoice,
    /// Interests shared with random partners.
    pub interests: Vec<String>,
    /// Preferred language (a tag such as `en` or `pt-BR`).
    pub language: Option<String>,
}

/// The settings as stored.
pub type Settings = SettingsOf<TurnServer>;
/// The settings as the page sees them.
pub type SettingsView = SettingsOf<TurnServerView>;
/// The settings form as the page sends it.
pub type SettingsUpdate = SettingsOf<TurnServerUpdate>;

impl<T> Default for SettingsOf<T> {
    fn default() -> Self {
        Self {
            server_url: String::new(),
            turn_servers: Vec::new(),
            relay_only: false,
            ca_cert: None,
            camera: None,
            microphone: None,
            speaker: None,
            echo_cancellation: true,
            noise_suppression: true,
            auto_gain: true,
            start_minimised: false,
            close_to_tray: false,
            quality: QualityChoice::Auto,
            interests: Vec::new(),
            language: None,
        }
    }
}

impl<T> SettingsOf<T> {
    /// The same settings with each TURN server mapped by `f` (dropped where it gives `None`).
    fn map_turn<U>(self, f: impl FnMut(T) -> Option<U>) -> SettingsOf<U> {
        SettingsOf {
            server_url: self.server_url,
            turn_servers: self.turn_servers.into_iter().filter_map(f).collect(),
            relay_only: self.relay_only,
            ca_cert: self.ca_cert,
            camera: self.camera,
            microphone: self.microphone,
            speaker: self.speaker,
            echo_cancellation: self.echo_cancellation,
            noise_suppression: self.noise_suppression,
            auto_gain: self.auto_gain,
            start_minimised: self.start_minimised,
            close_to_tray: self.close_to_tray,
            quality: self.quality,
            interests: self.interests,
            language: self.language,
        }
    }
}

/// Why settings were refused. The message names the field and says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// A value is not acceptable.
    #[error("{field}: {message}")]
    Invalid {
        /// Which setting, in words.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The settings could not be written.
    #[error("could not save the settings: {0}")]
    Write(String),
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> SettingsError {
    SettingsError::Invalid { field: field.into(), message: message.into() }
}

impl Settings {
    /// Checks every value; the first problem is returned. Files are not read here (a CA
    /// certificate file that went missing does not make the settings file damaged): see
    /// [`Settings::check_ca_cert`].
    pub fn validate(&self) -> Result<(), SettingsError> {
        if !self.server_url.is_empty() {
            validate_server_url(&self.server_url)?;
        }
        if let Some(path) = &self.ca_cert {
            let field = "CA certificate";
            if path.is_empty() || path.chars().count() > MAX_PATH_CHARS {
                return Err(invalid(field, format!("the path must be 1..={MAX_PATH_CHARS} characters")));
            }
            if !Path::new(path).is_absolute() {
                return Err(invalid(field, "give the full path of the PEM file (e.g. /etc/ssl/certs/my-ca.pem)"));
            }
        }
        if self.turn_servers.len() > MAX_TURN_SERVERS {
            return Err(invalid("TURN servers", format!("at most {MAX_TURN_SERVERS}")));
        }
        for (i, t) in self.turn_servers.iter().enumerate() {
            t.validate().map_err(|message| invalid(format!("TURN server {}", i + 1), message))?;
        }
        if self.relay_only && self.server_url.is_empty() && !self.turn_servers.iter().any(TurnServer::is_turn) {
            return Err(invalid(
                "Hide my IP",
                "relay-only calls need a TURN server: add one, or use a server that provides TURN",
            ));
        }
        for (field, value) in [("Camera", &self.camera), ("Microphone", &self.microphone), ("Speaker", &self.speaker)] {
            if value.as_ref().is_some_and(|v| v.is_empty() || v.chars().count() > MAX_FIELD_CHARS) {
                return Err(invalid(field, format!("the device id must be 1..={MAX_FIELD_CHARS} characters")));
            }
        }
        if self.interests.len() > MAX_INTERESTS {
            return Err(invalid("Interests", format!("at most {MAX_INTERESTS}")));
        }
        if self.interests.iter().any(|i| i.trim().is_empty() || i.trim().chars().count() > MAX_INTEREST_CHARS) {
            return Err(invalid("Interests", format!("each interest must be 1..={MAX_INTEREST_CHARS} characters")));
        }
        if let Some(lang) = &self.language
            && !valid_language(lang)
        {
            return Err(invalid("Language", "use a language tag such as en or pt-BR"));
        }
        Ok(())
    }

    /// Reads the CA certificate file, if one is set: it must hold at least one PEM
    /// certificate. Done when the user saves, not when settings are loaded.
    pub fn check_ca_cert(&self) -> Result<(), SettingsError> {
        let Some(path) = &self.ca_cert else { return Ok(()) };
        duet_core::tls::load_ca_certs(Path::new(path)).map(drop).map_err(|e| {
            let message = match e {
                CaCertError::Read { path, source } => format!("cannot read {}: {source}", path.display()),
                CaCertError::NoCertificates { path } => format!(
                    "{} holds no certificate: it must be PEM (-----BEGIN CERTIFICATE----- blocks)",
                    path.display()
                ),
                other => other.to_string(),
            };
            invalid("CA certificate", message)
        })
    }

    /// The user's ICE servers in the engine's form.
    pub fn ice_servers(&self) -> Vec<IceServer> {
        self.turn_servers
            .iter()
            .map(|t| IceServer {
                urls: vec![t.url.clone()],
                username: (!t.username.is_empty()).then(|| t.username.clone()),
                credential: (!t.credential.is_empty()).then(|| t.credential.clone()),
            })
            .collect()
    }

    /// What the page may see.
    pub fn view(&self) -> SettingsView {
        self.clone().map_turn(|t| {
            Some(TurnServerView { url: t.url, username: t.username, has_credential: !t.credential.is_empty() })
        })
    }

    /// Applies an update from the page: TURN credentials left out are kept from the saved
    /// entry with the same URL and username; blank rows are dropped. The result is validated,
    /// and the CA certificate file, if any, read.
    pub fn updated(&self, update: SettingsUpdate) -> Result<Settings, SettingsError> {
        let mut next = update.map_turn(|t| {
            let url = t.url.trim().to_string();
            let username = t.username.trim().to_string();
            let credential = t.credential.unwrap_or_else(|| {
                self.turn_servers
                    .iter()
                    .find(|old| old.url == url && old.username == username)
                    .map(|old| old.credential.clone())
                    .unwrap_or_default()
            });
            let blank = url.is_empty() && username.is_empty() && credential.is_empty();
            (!blank).then_some(TurnServer { url, username, credential })
        });
        let clean = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        next.server_url = next.server_url.trim().to_string();
        next.camera = clean(next.camera);
        next.microphone = clean(next.microphone);
        next.speaker = clean(next.speaker);
        next.language = clean(next.language);
        next.ca_cert = clean(next.ca_cert);
        next.interests = next.interests.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        next.validate()?;
        next.check_ca_cert()?;
        Ok(next)
    }

    /// Reads settings from the store's entries (a missing key takes its default).
    fn from_entries(entries: Vec<(String, Value)>) -> Result<Settings, String> {
        let map: Map<String, Value> = entries.into_iter().collect();
        serde_json::from_value(Value::Object(map)).map_err(|e| e.to_string())
    }

    fn to_entries(&self) -> Vec<(String, Value)> {
        match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map.into_iter().collect(),
            _ => Vec::new(),
        }
    }
}

impl TurnServer {
    fn is_turn(&self) -> bool {
        self.url.starts_with("turn:") || self.url.starts_with("turns:")
    }

    fn validate(&self) -> Result<(), String> {
        if self.url.chars().count() > MAX_URL_CHARS {
            return Err(format!("the URL is longer than {MAX_URL_CHARS} characters"));
        }
        let (scheme, rest) = self
            .url
            .split_once(':')
            .filter(|(s, _)| matches!(*s, "turn" | "turns" | "stun" | "stuns"))
            .ok_or("the URL must start with turn:, turns: or stun: (e.g. turn:turn.example.org:3478)")?;
        let (hostport, query) = rest.split_once('?').unwrap_or((rest, ""));
        if hostport.starts_with("//") {
            return Err("write the URL without // (e.g. turn:turn.example.org:3478)".into());
        }
        let (host, port) = split_host_port(hostport)?;
        if host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c)) {
            return Err("the URL needs a host name or address".into());
        }
        if let Some(port) = port
            && port.parse::<u16>().ok().filter(|p| *p > 0).is_none()
        {
            return Err(format!("{port:?} is not a port number (1-65535)"));
        }
        match query {
            "" | "transport=udp" | "transport=tcp" => {}
            _ => return Err("the only option allowed after ? is transport=udp or transport=tcp".into()),
        }
        if scheme.starts_with("turn") {
            if self.username.is_empty() {
                return Err("a TURN server needs a username".into());
            }
            if self.credential.is_empty() {
                return Err("a TURN server needs a credential (password)".into());
            }
        }
        if self.username.chars().count() > MAX_FIELD_CHARS || self.credential.chars().count() > MAX_FIELD_CHARS {
            return Err(format!("username and credential must be at most {MAX_FIELD_CHARS} characters"));
        }
        Ok(())
    }
}

fn split_host_port(s: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("an IPv6 address needs a closing ]")?;
        return Ok((host, after.strip_prefix(':')));
    }
    Ok(match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    })
}

fn validate_server_url(s: &str) -> Result<(), SettingsError> {
    let field = "Server URL";
    let url =
        url::Url::parse(s).map_err(|e| invalid(field, format!("not a URL ({e}); e.g. wss://duet.example.org/ws")))?;
    if !matches!(url.scheme(), "ws" | "wss") {
        return Err(invalid(field, "must start with ws:// or wss://"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(field, "needs a host name"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(field, "must not contain a user name or password"));
    }
    if s.chars().count() > MAX_URL_CHARS {
        return Err(invalid(field, format!("longer than {MAX_URL_CHARS} characters")));
    }
    Ok(())
}

/// A TURN server as the page sees it: the credential is never included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TurnServerView {
    /// URL.
    pub url: String,
    /// Username.
    pub username: String,
    /// Whether a credential is saved.
    pub has_credential: bool,
}

/// A TURN server as the page sends it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnServerUpdate {
    /// URL.
    pub url: String,
    /// Username.
    #[serde(default)]
    pub username: String,
    /// New credential; `None`: keep the saved one.
    #[serde(default)]
    pub credential: Option<String>,
}

/// What was found in the settings file before the store opened it.
#[derive(Debug, PartialEq, Eq)]
pub enum FileCheck {
    /// No file yet (first run).
    Missing,
    /// A readable file with valid settings.
    Valid,
    /// A damaged file, moved to this path.
    MovedAside(PathBuf),
    /// A damaged file that could not be moved: it is left as it is and never written over.
    Unmovable,
}

/// Checks the file before the store reads it (the store would silently start empty and later
/// overwrite it): a file that is not valid settings JSON is renamed to
/// `settings.json.damaged-<unix time>` so nothing the user had is destroyed.
pub fn check_file(path: &Path) -> FileCheck {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return FileCheck::Missing,
        Err(_) => return move_aside(path),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        // An empty file (e.g. created but never written): nothing to keep.
        return FileCheck::Valid;
    }
    let parsed = serde_json::from_slice::<Map<String, Value>>(&bytes)
        .map_err(|e| e.to_string())
        .and_then(|m| Settings::from_entries(m.into_iter().collect()))
        .and_then(|s| s.validate().map_err(|e| e.to_string()));
    match parsed {
        Ok(()) => FileCheck::Valid,
        Err(reason) => {
            tracing::warn!(path = %path.display(), %reason, "settings file is damaged");
            move_aside(path)
        }
    }
}

fn move_aside(path: &Path) -> FileCheck {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".damaged-{stamp}"));
    let aside = PathBuf::from(aside);
    match fs::rename(path, &aside) {
        Ok(()) => FileCheck::MovedAside(aside),
        // Could not even rename it: leave it alone and run on defaults without saving over it.
        Err(_) => FileCheck::Unmovable,
    }
}

/// Makes the directory owner-only and the file (created empty if needed) owner-only, so the
/// store's plain `fs::write` keeps TURN credentials private.
pub fn restrict_permissions(dir: &Path, file: &Path) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    if !file.exists() {
        fs::write(file, b"{}")?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        fs::set_permissions(file, fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// The settings, persisted through `tauri-plugin-store`.
pub struct SettingsStore<R: Runtime> {
    store: Arc<Store<R>>,
    dir: PathBuf,
    path: PathBuf,
    current: Settings,
    /// The file is damaged and could not be moved aside: never write over it.
    read_only: bool,
}

/// Settings as loaded at start, with a notice for the user when the file was damaged.
pub struct Loaded<R: Runtime> {
    /// The store.
    pub store: SettingsStore<R>,
    /// Something to tell the user.
    pub notice: Option<String>,
}

impl<R: Runtime> SettingsStore<R> {
    /// Opens `dir/settings.json`, recovering from a damaged file.
    pub fn open(app: &tauri::AppHandle<R>, dir: &Path) -> Result<Loaded<R>, SettingsError> {
        let path = dir.join(FILE_NAME);
        let check = check_file(&path);
        let read_only = check == FileCheck::Unmovable;
        let notice = match &check {
            FileCheck::MovedAside(aside) => Some(format!(
                "Your settings file was damaged, so Duet started with default settings. The old file was kept as {}.",
                aside.display()
            )),
            FileCheck::Unmovable => Some(format!(
                "Your settings file {} is damaged and could not be moved aside. Duet runs on default settings and will not write over it: move or delete it to save settings again.",
                path.display()
            )),
            FileCheck::Missing | FileCheck::Valid => None,
        };
        if !read_only {
            restrict_permissions(dir, &path).map_err(|e| SettingsError::Write(e.to_string()))?;
        }
        let store = StoreBuilder::new(app, &path)
            .disable_auto_save()
            .build()
            .map_err(|e| SettingsError::Write(e.to_string()))?;
        let current =
            if read_only { Settings::default() } else { Settings::from_entries(store.entries()).unwrap_or_default() };
        // The plugin saves every store it holds when the app exits: that would write this
        // instance's copy over changes another instance saved since (or over a damaged file).
        // Only `save` writes the file.
        store.close_resource();
        Ok(Loaded { store: SettingsStore { store, dir: dir.to_path_buf(), path, current, read_only }, notice })
    }

    /// The current settings.
    pub fn get(&self) -> &Settings {
        &self.current
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Validates, stores and writes `next`. On error nothing changes, in memory or on disk.
    pub fn save(&mut self, next: Settings) -> Result<(), SettingsError> {
        next.validate()?;
        if self.read_only {
            return Err(SettingsError::Write(format!(
                "{} is damaged and could not be moved aside; move or delete it first",
                self.path.display()
            )));
        }
        restrict_permissions(&self.dir, &self.path).map_err(|e| SettingsError::Write(e.to_string()))?;
        self.store.clear();
        for (k, v) in next.to_entries() {
            self.store.set(k, v);
        }
        if let Err(e) = self.store.save() {
            // Put the old values back so memory matches the file.
            self.store.clear();
            for (k, v) in self.current.to_entries() {
                self.store.set(k, v);
            }
            return Err(SettingsError::Write(e.to_string()));
        }
        self.current = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(url: &str) -> TurnServer {
        TurnServer { url: url.into(), username: "alice".into(), credential: "s3cret".into() }
    }

    #[test]
    fn defaults_are_valid_and_use_the_embedded_server() {
        let s = Settings::default();
        assert!(s.validate().is_ok());
        assert!(s.server_url.is_empty());
    }

    #[test]
    fn accepts_good_urls() {
        for url in [
            "turn:turn.example.org",
            "turn:turn.example.org:3478",
            "turn:127.0.0.1:3478?transport=tcp",
            "turns:turn.example.org:5349",
            "turn:[2001:db8::1]:3478",
            "stun:stun.example.org:19302",
        ] {
            let s = Settings { turn_servers: vec![turn(url)], ..Settings::default() };
            assert_eq!(s.validate(), Ok(()), "{url}");
        }
        for url in ["ws://127.0.0.1:8787/ws", "wss://duet.example.org/ws"] {
            let s = Settings { server_url: url.into(), ..Settings::default() };
            assert_eq!(s.validate(), Ok(()), "{url}");
        }
    }

    #[test]
    fn refuses_bad_turn_entries_with_a_message_naming_the_entry() {
        let cases = [
            (turn("http://turn.example.org"), "must start with turn:"),
            (turn("turn://turn.example.org"), "without //"),
            (turn("turn:"), "needs a host"),
            (turn("turn:turn.example.org:99999"), "not a port number"),
            (turn("turn:turn.example.org?transport=sctp"), "transport=udp"),
            (TurnServer { username: String::new(), ..turn("turn:t.example.org") }, "needs a username"),
            (TurnServer { credential: String::new(), ..turn("turn:t.example.org") }, "needs a credential"),
        ];
        for (entry, expected) in cases {
            let s = Settings { turn_servers: vec![turn("turn:ok.example.org"), entry.clone()], ..Settings::default() };
            let err = s.validate().unwrap_err().to_string();
            assert!(err.starts_with("TURN server 2: "), "{err}");
            assert!(err.contains(expected), "{entry:?}: {err}");
        }
    }

    #[test]
    fn refuses_bad_server_urls_and_other_fields() {
        let bad = |s: Settings, expected: &str| {
            let err = s.validate().unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        };
        bad(Settings { server_url: "http://x.org/ws".into(), ..Settings::default() }, "ws:// or wss://");
        bad(Settings { server_url: "not a url".into(), ..Settings::default() }, "not a URL");
        bad(Settings { server_url: "wss://u:p@x.org/ws".into(), ..Settings::default() }, "user name or password");
        bad(Settings { relay_only: true, ..Settings::default() }, "need a TURN server");
        bad(Settings { language: Some("english please".into()), ..Settings::default() }, "language tag");
        bad(Settings { interests: vec![" ".into()], ..Settings::default() }, "each interest");
        bad(
            Settings { turn_servers: vec![turn("turn:a.org"); MAX_TURN_SERVERS + 1], ..Settings::default() },
            "at most",
        );
        // Relay-only is fine with a TURN server, or with a server that may provide one.
        let ok = Settings { relay_only: true, turn_servers: vec![turn("turn:a.org")], ..Settings::default() };
        assert!(ok.validate().is_ok());
        let ok = Settings { relay_only: true, server_url: "wss://x.org/ws".into(), ..Settings::default() };
        assert!(ok.validate().is_ok());
    }

    /// A self-signed CA certificate (P-256, valid until 2126).
    const TEST_CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBljCCAT2gAwIBAgIUFuQxgdYhqheMbF9+NzPHr+Za34AwCgYIKoZIzj0EAwIw
IDEeMBwGA1UEAwwVRHVldCBzZXR0aW5ncyB0ZXN0IENBMCAXDTI2MTIwMjA4NDc1
NVoYDzIxMjYxMTA4MDg0NzU1WjAgMR4wHAYDVQQDDBVEdWV0IHNldHRpbmdzIHRl
c3QgQ0EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQX63CUjBtQWNc8Zf5lAMwl
qe7dKruU/Hi+YE2hJPf3BUkyI2+L+g1NiRYKrKyx6oVrbMnhJFtc88VSF2D7Ukki
o1MwUTAdBgNVHQ4EFgQUdTRtLK78+uTNN/G8oQP7D3AY644wHwYDVR0jBBgwFoAU
dTRtLK78+uTNN/G8oQP7D3AY644wDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQD
AgNHADBEAiBNiZ31jrCd6h8QwpayffMpn3gm7Z+0bPjfpSy9xCGyUwIgKOseA5x1
P2uwi2CfDX2SMghjygDkOyQy2OTenkPeObI=
-----END CERTIFICATE-----
";

    fn with_ca_cert(path: &str) -> SettingsUpdate {
        serde_json::from_value(serde_json::json!({"server_url": "wss://x.org/ws", "ca_cert": path})).unwrap()
    }

    #[test]
    fn a_ca_cert_that_does_not_exist_is_refused_on_save_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope").join("ca.pem");
        let missing = missing.to_str().unwrap();
        let err = Settings::default().updated(with_ca_cert(missing)).unwrap_err().to_string();
        assert!(err.starts_with(&format!("CA certificate: cannot read {missing}: ")), "{err}");
        // A directory is no better.
        let err = Settings::default().updated(with_ca_cert(dir.path().to_str().unwrap())).unwrap_err();
        assert!(err.to_string().starts_with("CA certificate: cannot read"), "{err}");
    }

    #[test]
    fn a_ca_cert_that_is_not_pem_is_refused_on_save() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.txt");
        fs::write(&path, "just some text").unwrap();
        let err = Settings::default().updated(with_ca_cert(path.to_str().unwrap())).unwrap_err().to_string();
        assert!(err.starts_with("CA certificate: ") && err.contains("holds no certificate"), "{err}");
        assert!(err.contains("BEGIN CERTIFICATE") && err.contains("ca.txt"), "{err}");
    }

    #[test]
    fn a_readable_pem_ca_cert_is_saved_and_a_blank_one_means_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        fs::write(&path, TEST_CA_PEM).unwrap();
        let path = path.to_str().unwrap().to_string();
        let next = Settings::default().updated(with_ca_cert(&format!(" {path} "))).unwrap();
        assert_eq!(next.ca_cert.as_deref(), Some(path.as_str()));
        assert_eq!(next.view().ca_cert.as_deref(), Some(path.as_str()));
        assert_eq!(Settings::from_entries(next.to_entries()), Ok(next));
        let cleared = Settings::default().updated(with_ca_cert("  ")).unwrap();
        assert_eq!(cleared.ca_cert, None);
    }

    #[test]
    fn a_relative_ca_cert_path_is_invalid() {
        let s = Settings { ca_cert: Some("certs/ca.pem".into()), ..Settings::default() };
        let err = s.validate().unwrap_err().to_string();
        assert!(err.starts_with("CA certificate: give the full path"), "{err}");
    }

    #[test]
    fn a_ca_cert_that_went_missing_does_not_make_the_settings_file_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let ca = dir.path().join("gone.pem");
        let json = serde_json::json!({"server_url": "wss://x.org/ws", "ca_cert": ca.to_str().unwrap()});
        fs::write(&path, json.to_string()).unwrap();
        assert_eq!(check_file(&path), FileCheck::Valid);
        assert!(path.exists());
    }

    #[test]
    fn the_view_never_contains_a_credential_and_debug_redacts_it() {
        let s = Settings { turn_servers: vec![turn("turn:a.org")], ..Settings::default() };
        let json = serde_json::to_string(&s.view()).unwrap();
        assert!(!json.contains("s3cret"), "{json}");
        assert!(json.contains(r#""has_credential":true"#), "{json}");
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn an_update_keeps_saved_credentials_it_leaves_out_and_takes_new_ones() {
        let saved = Settings { turn_servers: vec![turn("turn:a.org")], ..Settings::default() };
        let update: SettingsUpdate = serde_json::from_value(serde_json::json!({
            "turn_servers": [
                {"url": "turn:a.org", "username": "alice"},
                {"url": " turn:b.org:3478 ", "username": "bob", "credential": "pw2"},
                {"url": "", "username": ""}
            ],
            "quality": "medium",
            "interests": ["music", " "]
        }))
        .unwrap();
        let next = saved.updated(update).unwrap();
        assert_eq!(next.turn_servers[0].credential, "s3cret");
        assert_eq!(
            next.turn_servers[1],
            TurnServer { url: "turn:b.org:3478".into(), username: "bob".into(), credential: "pw2".into() }
        );
        assert_eq!(next.turn_servers.len(), 2);
        assert_eq!(next.quality, QualityChoice::Medium);
        assert_eq!(next.interests, vec!["music".to_string()]);
        // A changed username does not inherit the old credential.
        let update: SettingsUpdate = serde_json::from_value(serde_json::json!({
            "turn_servers": [{"url": "turn:a.org", "username": "mallory"}]
        }))
        .unwrap();
        assert!(saved.updated(update).unwrap_err().to_string().contains("needs a credential"));
    }

    #[test]
    fn unknown_fields_in_an_update_are_refused() {
        let r = serde_json::from_value::<SettingsUpdate>(serde_json::json!({"server": "x"}));
        assert!(r.is_err());
    }

    #[test]
    fn entries_round_trip_and_missing_keys_take_defaults() {
        let s = Settings { turn_servers: vec![turn("turn:a.org")], relay_only: true, ..Settings::default() };
        assert_eq!(Settings::from_entries(s.to_entries()), Ok(s));
        let partial = vec![("close_to_tray".to_string(), Value::Bool(true))];
        assert_eq!(Settings::from_entries(partial), Ok(Settings { close_to_tray: true, ..Settings::default() }));
    }

    #[test]
    fn audio_processing_is_on_by_default() {
        let s = Settings::default();
        assert!(s.echo_cancellation && s.noise_suppression && s.auto_gain);
        let view = serde_json::to_value(s.view()).unwrap();
        for key in ["echo_cancellation", "noise_suppression", "auto_gain"] {
            assert_eq!(view[key], Value::Bool(true), "{key}: {view}");
        }
    }

    #[test]
    fn a_file_from_before_audio_processing_loads_with_all_of_it_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let old = r#"{"server_url":"wss://x.org/ws","camera":"/dev/video0","quality":"low","close_to_tray":true}"#;
        fs::write(&path, old).unwrap();
        assert_eq!(check_file(&path), FileCheck::Valid);
        let map: Map<String, Value> = serde_json::from_str(old).unwrap();
        let s = Settings::from_entries(map.into_iter().collect()).unwrap();
        assert!(s.echo_cancellation && s.noise_suppression && s.auto_gain, "{s:?}");
        assert_eq!((s.camera.as_deref(), s.quality, s.close_to_tray), (Some("/dev/video0"), QualityChoice::Low, true));
        // An update from a page that leaves them out turns nothing off either.
        let update: SettingsUpdate = serde_json::from_value(serde_json::json!({"quality": "high"})).unwrap();
        let next = s.updated(update).unwrap();
        assert!(next.echo_cancellation && next.noise_suppression && next.auto_gain);
    }

    #[test]
    fn audio_processing_turned_off_round_trips() {
        let update: SettingsUpdate = serde_json::from_value(serde_json::json!({"noise_suppression": false})).unwrap();
        let next = Settings::default().updated(update).unwrap();
        assert_eq!((next.echo_cancellation, next.noise_suppression, next.auto_gain), (true, false, true));
        assert_eq!(serde_json::to_value(next.view()).unwrap()["noise_suppression"], Value::Bool(false));
        let entries = next.to_entries();
        assert!(entries.contains(&("noise_suppression".into(), Value::Bool(false))), "{entries:?}");
        assert!(entries.contains(&("echo_cancellation".into(), Value::Bool(true))), "{entries:?}");
        assert_eq!(Settings::from_entries(entries), Ok(next.clone()));
        // Through the file as the store writes it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        fs::write(&path, serde_json::to_string_pretty(&next).unwrap()).unwrap();
        assert_eq!(check_file(&path), FileCheck::Valid);
        let map: Map<String, Value> = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(Settings::from_entries(map.into_iter().collect()), Ok(next));
        // Each can be off, all at once too.
        let all_off =
            Settings { echo_cancellation: false, noise_suppression: false, auto_gain: false, ..Settings::default() };
        assert!(all_off.validate().is_ok());
        assert_eq!(Settings::from_entries(all_off.to_entries()), Ok(all_off));
    }

    #[test]
    fn a_missing_file_is_a_first_run() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(check_file(&dir.path().join(FILE_NAME)), FileCheck::Missing);
    }

    #[test]
    fn an_empty_file_is_not_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        fs::write(&path, b"").unwrap();
        assert_eq!(check_file(&path), FileCheck::Valid);
    }

    #[test]
    fn a_damaged_file_that_cannot_be_moved_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        fs::write(&path, b"{oops").unwrap();
        // Directories where the file would be moved to: a file cannot be renamed onto one.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        for stamp in now..now + 5 {
            fs::create_dir_all(dir.path().join(format!("{FILE_NAME}.damaged-{stamp}/x"))).unwrap();
        }
        assert_eq!(check_file(&path), FileCheck::Unmovable);
        assert_eq!(fs::read(&path).unwrap(), b"{oops");
    }

    #[test]
    fn a_valid_file_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        fs::write(&path, r#"{"server_url":"wss://x.org/ws","quality":"low"}"#).unwrap();
        assert_eq!(check_file(&path), FileCheck::Valid);
        assert!(path.exists());
    }

    #[test]
    fn damaged_files_are_moved_aside_with_their_contents_intact() {
        for content in [
            &b"{\"server_url\": \"wss://x.org/ws\","[..], // truncated JSON
            b"\xff\xfe garbage",
            b"[1, 2, 3]",
            br#"{"quality": "ultra"}"#,
            br#"{"turn_servers": [{"url": "http://nope"}]}"#,
            br#"{"surprise": true}"#,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(FILE_NAME);
            fs::write(&path, content).unwrap();
            let FileCheck::MovedAside(aside) = check_file(&path) else { panic!("not moved: {content:?}") };
            assert!(!path.exists());
            assert_eq!(fs::read(&aside).unwrap(), content);
            assert!(aside.file_name().unwrap().to_string_lossy().starts_with("settings.json.damaged-"));
        }
    }

    #[cfg(unix)]
    #[test]
    fn the_file_and_its_directory_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("chat.duet.desktop");
        let path = dir.join(FILE_NAME);
        restrict_permissions(&dir, &path).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        // A file someone made world-readable is tightened again.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        restrict_permissions(&dir, &path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(check_file(&path), FileCheck::Valid);
    }
}
