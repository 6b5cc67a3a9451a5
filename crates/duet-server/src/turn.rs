//! ICE server configuration and TURN REST credentials (coturn `use-auth-secret` format).

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use duet_proto::IceServer;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha1::Sha1;

/// A secret string: never printed by `Debug`, has no `Display`, not serializable.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret bytes, for computing with; never log them.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Short-lived TURN credentials issued from a shared secret.
#[derive(Debug, Clone)]
pub struct TurnRest {
    /// `turn:`/`turns:` URLs the credentials are valid for.
    pub urls: Vec<String>,
    /// The `static-auth-secret` shared with coturn.
    pub secret: Secret,
    /// How long issued credentials stay valid.
    pub ttl: Duration,
}

/// Everything the server hands out as `ice_servers`.
#[derive(Debug, Clone, Default)]
pub struct IceConfig {
    /// Configured STUN/TURN servers, passed through as they are.
    pub servers: Vec<IceServer>,
    /// TURN servers with per-session REST credentials.
    pub turn: Option<TurnRest>,
}

impl IceConfig {
    /// The ICE servers for `user` at wall-clock time `unix_now` (seconds).
    pub fn servers_for(&self, user: &str, unix_now: u64) -> Vec<IceServer> {
        let mut out = self.servers.clone();
        if let Some(turn) = &self.turn {
            let (username, credential) = turn_rest_credentials(&turn.secret, user, unix_now + turn.ttl.as_secs());
            out.push(IceServer { urls: turn.urls.clone(), username: Some(username), credential: Some(credential) });
        }
        out
    }
}

/// TURN REST credentials: username `<expiry>:<user>`, password
/// `base64(HMAC-SHA1(secret, username))`.
pub fn turn_rest_credentials(secret: &Secret, user: &str, expiry_unix: u64) -> (String, String) {
    let username = format!("{expiry_unix}:{user}");
    // HMAC accepts keys of any length, so construction cannot fail.
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_coturn_reference_computation() {
        // Reference: python3 -c "import hmac,hashlib,base64;
        //   print(base64.b64encode(hmac.new(b'north', b'1700000000:alice', hashlib.sha1).digest()))"
        let (user, pass) = turn_rest_credentials(&Secret::new("north"), "alice", 1_700_000_000);
        assert_eq!(user, "1700000000:alice");
        assert_eq!(pass, "Cd/49soE35ICqcJF/bCTn8Z4OyE=");
    }

    #[test]
    fn servers_for_appends_turn_with_expiry() {
        let cfg = IceConfig {
            servers: vec![IceServer { urls: vec!["stun:127.0.0.1:3478".into()], username: None, credential: None }],
            turn: Some(TurnRest {
                urls: vec!["turn:127.0.0.1:3478?transport=udp".into()],
                secret: Secret::new("s"),
                ttl: Duration::from_secs(600),
            }),
        };
        let servers = cfg.servers_for("sess", 1000);
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[1].username.as_deref(), Some("1600:sess"));
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        let t = TurnRest { urls: vec![], secret: s, ttl: Duration::from_secs(1) };
        assert!(!format!("{t:?}").contains("hunter2"));
    }
}
