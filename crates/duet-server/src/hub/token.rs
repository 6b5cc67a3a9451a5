//! Resume tokens the server signs, so that a restarted server (same secret) can take a session
//! and its pairing back without any stored state.
//!
//! A token is `d1.<claims>.<mac>`: the claims as JSON in unpadded base64url, and an
//! HMAC-SHA-256 over `d1.<claims>` with the server's resume secret. The claims name the session,
//! its current partner (if any, who is polite, and their room's code if they met by one) and
//! when they were issued; a
//! session's token is reissued whenever its pairing changes.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

const PREFIX: &str = "d1.";

/// What a token says about its session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The session's public id.
    #[serde(rename = "s")]
    pub session: String,
    /// The partner at issue time.
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub pairing: Option<Pairing>,
    /// Issue time, Unix seconds.
    #[serde(rename = "t")]
    pub issued: u64,
    /// The server process that signed it.
    #[serde(rename = "i")]
    pub instance: u64,
    /// Makes every token unique, also two issued in the same second.
    #[serde(rename = "n")]
    pub nonce: u64,
}

/// The pairing a token records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pairing {
    /// The partner's public session id.
    #[serde(rename = "w")]
    pub partner: String,
    /// Whether this session is the polite side.
    #[serde(rename = "o")]
    pub polite: bool,
    /// The room by code the pair is in, if it is one: a restored pair keeps its room.
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// The key tokens are signed with.
#[derive(Clone)]
pub struct TokenKey(Vec<u8>);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(<redacted>)")
    }
}

impl TokenKey {
    /// A key from secret bytes (at least one byte; the server checks the configured length).
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self(secret.into())
    }

    fn mac(&self, signed: &str) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!());
        mac.update(signed.as_bytes());
        mac
    }

    /// The signed token for `claims`.
    pub fn sign(&self, claims: &Claims) -> String {
        let json = serde_json::to_vec(claims).unwrap_or_default();
        let signed = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(json));
        let tag = self.mac(&signed).finalize().into_bytes();
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// A 64-bit keyed hash of `data` for `domain` (HMAC-SHA-256, truncated): stable across
    /// processes and versions that share the secret.
    pub fn tag64(&self, domain: &str, data: &str) -> u64 {
        let tag = self.mac(&format!("{domain}\0{data}")).finalize().into_bytes();
        u64::from_be_bytes([tag[0], tag[1], tag[2], tag[3], tag[4], tag[5], tag[6], tag[7]])
    }

    /// The claims of a token this key signed; `None` for anything else (forged, altered, from
    /// another secret, or not a signed token at all).
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let (signed, tag) = token.rsplit_once('.')?;
        let claims = signed.strip_prefix(PREFIX)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        self.mac(signed).verify_slice(&tag).ok()?;
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).ok()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            session: "a1".into(),
            pairing: Some(Pairing { partner: "b2".into(), polite: true, code: Some("friends-1".into()) }),
            issued: 1_700_000_000,
            instance: 3,
            nonce: 9,
        }
    }

    #[test]
    fn a_signed_token_verifies_with_the_same_secret_only() {
        let key = TokenKey::new(b"same secret".to_vec());
        let token = key.sign(&claims());
        assert_eq!(key.verify(&token), Some(claims()));
        assert_eq!(TokenKey::new(b"same secret".to_vec()).verify(&token), Some(claims()), "a restarted server");
        assert_eq!(TokenKey::new(b"other secret".to_vec()).verify(&token), None);
    }

    #[test]
    fn altered_or_foreign_tokens_are_refused() {
        let key = TokenKey::new(b"k".to_vec());
        let token = key.sign(&claims());
        let (signed, tag) = token.rsplit_once('.').unwrap();
        // Claims swapped for another session's, the old tag kept.
        let mut other = claims();
        other.session = "evil".into();
        let forged = format!("{PREFIX}{}.{tag}", URL_SAFE_NO_PAD.encode(serde_json::to_vec(&other).unwrap()));
        assert_eq!(key.verify(&forged), None);
        assert_eq!(key.verify(&format!("{signed}.AAAA")), None);
        for junk in ["", ".", "d1..", "random-token-from-an-old-server", "d1.e30.x"] {
            assert_eq!(key.verify(junk), None, "{junk:?}");
        }
    }
}
