//! TURN servers a client is given on the command line or in its settings: parsing
//! `turn:USER:PASS@HOST:PORT` URLs, filling in credentials the signaling server issued, and
//! telling the user when gathering produced no relay address (wrong credentials, or the
//! server unreachable). No I/O.

use duet_proto::IceServer;

/// A TURN URL that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TurnUrlError {
    /// Not `turn:` or `turns:`.
    #[error("{0:?} is not a turn: or turns: URL (turn:[USER:PASS@]HOST:PORT[?transport=udp|tcp])")]
    Scheme(String),
    /// No host, or credentials without both parts.
    #[error("{url:?}: {reason}")]
    Malformed {
        /// The URL as given, credentials removed.
        url: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Parses `turn:[USER:PASS@]HOST:PORT[?transport=udp]` (or `turns:`). Credentials, if given,
/// become the server's username and credential; the URL keeps only host, port and query.
pub fn parse_turn_url(text: &str) -> Result<IceServer, TurnUrlError> {
    let (scheme, rest) = text
        .split_once(':')
        .filter(|(s, _)| matches!(*s, "turn" | "turns"))
        .ok_or_else(|| TurnUrlError::Scheme(redact(text)))?;
    let rest = rest.trim_start_matches("//");
    let (userinfo, host) = match rest.rsplit_once('@') {
        Some((userinfo, host)) => (Some(userinfo), host),
        None => (None, rest),
    };
    let malformed = |reason| TurnUrlError::Malformed { url: redact(text), reason };
    let host_only = host.split('?').next().unwrap_or_default();
    if host_only.is_empty() || host_only.starts_with(':') {
        return Err(malformed("no host"));
    }
    let (username, credential) = match userinfo {
        None => (None, None),
        Some(u) => match u.split_once(':') {
            Some((user, pass)) if !user.is_empty() && !pass.is_empty() => {
                (Some(user.to_string()), Some(pass.to_string()))
            }
            _ => return Err(malformed("credentials must be USER:PASS")),
        },
    };
    Ok(IceServer { urls: vec![format!("{scheme}:{host}")], username, credential })
}

/// The URL with any credentials removed, for messages and logs.
pub fn redact(text: &str) -> String {
    match (text.split_once(':'), text.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => format!("{scheme}:{host}"),
        _ => text.to_string(),
    }
}

/// The user's TURN servers with the signaling server's ones appended; a user server given
/// without credentials takes those the signaling server issued (coturn REST credentials are
/// valid on every server sharing its secret).
pub fn merge(user: &[IceServer], from_server: &[IceServer]) -> Vec<IceServer> {
    let issued = from_server.iter().find(|s| s.username.is_some() && s.credential.is_some());
    let mut out: Vec<IceServer> = user
        .iter()
        .map(|s| match (&s.username, issued) {
            (None, Some(issued)) if is_turn(s) => {
                IceServer { username: issued.username.clone(), credential: issued.credential.clone(), ..s.clone() }
            }
            _ => s.clone(),
        })
        .collect();
    out.extend(from_server.iter().take(MAX_SERVER_ICE_SERVERS).cloned());
    out
}

/// The most ICE servers taken from the signaling server (each one is contacted while gathering).
pub const MAX_SERVER_ICE_SERVERS: usize = 8;
/// The longest wait before refreshing TURN credentials, whatever expiry the server claims.
pub const MAX_REFRESH_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

fn is_turn(s: &IceServer) -> bool {
    s.urls.iter().any(|u| u.starts_with("turn:") || u.starts_with("turns:"))
}

/// The TURN URLs of a set of ICE servers (credentials are never part of them).
pub fn turn_urls(servers: &[IceServer]) -> Vec<String> {
    servers.iter().filter(|s| is_turn(s)).flat_map(|s| s.urls.iter().cloned()).collect()
}

/// What to tell the user once candidate gathering is complete: `None` when a relay candidate
/// was gathered or no TURN server is configured.
pub fn relay_problem(servers: &[IceServer], relay_gathered: bool, relay_only: bool) -> Option<String> {
    let urls = turn_urls(servers);
    if relay_gathered {
        return None;
    }
    if urls.is_empty() {
        return relay_only.then(|| "Hide my IP needs a TURN server, and none is configured.".to_string());
    }
    let what =
        if relay_only { "the call cannot connect while your IP is hidden" } else { "the call goes on without a relay" };
    Some(format!(
        "The TURN server {} gave no relay address (wrong credentials, or it cannot be reached); {what}.",
        urls.join(", ")
    ))
}

/// How long until the issued TURN credentials among `servers` should be replaced: two thirds
/// of the way to the earliest expiry (REST usernames are `EXPIRY:ID`, Unix seconds), at least
/// a second. `None` when no credential expires.
pub fn refresh_after(servers: &[IceServer], now_unix: u64) -> Option<std::time::Duration> {
    let expiry = servers
        .iter()
        .filter(|s| is_turn(s))
        .filter_map(|s| s.username.as_deref()?.split_once(':')?.0.parse::<u64>().ok())
        .min()?;
    let left = expiry.saturating_sub(now_unix);
    Some(std::time::Duration::from_secs(left / 3 * 2).clamp(std::time::Duration::from_secs(1), MAX_REFRESH_AFTER))
}

/// True if an SDP candidate line is a relay candidate.
pub fn is_relay_candidate(line: &str) -> bool {
    line.split_whitespace().skip_while(|w| *w != "typ").nth(1) == Some("relay")
}

/// A session description as a relay-only client may send it: every `a=candidate` line that
/// is not a relay is removed (a description made after gathering lists the candidates too).
pub fn without_non_relay_candidates(sdp: &str) -> String {
    sdp.split_inclusive('\n')
        .filter(|line| !line.trim_start().starts_with("a=candidate:") || is_relay_candidate(line))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_the_url_become_the_servers_and_leave_the_url() {
        let s = parse_turn_url("turn:alice:s3cret@127.0.0.1:3478?transport=udp").unwrap();
        assert_eq!(s.urls, ["turn:127.0.0.1:3478?transport=udp"]);
        assert_eq!((s.username.as_deref(), s.credential.as_deref()), (Some("alice"), Some("s3cret")));
        let s = parse_turn_url("turns:turn.example.org:5349").unwrap();
        assert_eq!((s.urls[0].as_str(), s.username), ("turns:turn.example.org:5349", None));
    }

    #[test]
    fn bad_urls_are_explained_without_their_password() {
        let e = parse_turn_url("stun:127.0.0.1:3478").unwrap_err().to_string();
        assert!(e.contains("not a turn:"), "{e}");
        let e = parse_turn_url("turn:alice@host:3478").unwrap_err().to_string();
        assert!(e.contains("USER:PASS"), "{e}");
        let e = parse_turn_url("turn:alice:hunter2@").unwrap_err().to_string();
        assert!(e.contains("no host") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn a_user_server_without_credentials_takes_the_issued_ones() {
        let user = [parse_turn_url("turn:127.0.0.1:3478").unwrap(), parse_turn_url("turn:a:b@10.0.0.1:3478").unwrap()];
        let issued = IceServer {
            urls: vec!["turn:relay.example:3478".into()],
            username: Some("1700000000:s1".into()),
            credential: Some("mac".into()),
        };
        let merged = merge(&user, std::slice::from_ref(&issued));
        assert_eq!(merged[0].username.as_deref(), Some("1700000000:s1"));
        assert_eq!(merged[1].username.as_deref(), Some("a"), "its own credentials are kept");
        assert_eq!(merged[2], issued);
    }

    #[test]
    fn no_relay_address_is_a_message_naming_the_server() {
        let servers = [parse_turn_url("turn:u:p@127.0.0.1:3478").unwrap()];
        let m = relay_problem(&servers, false, false).unwrap();
        assert!(m.contains("turn:127.0.0.1:3478") && !m.contains(":p@") && m.contains("without a relay"), "{m}");
        assert!(relay_problem(&servers, false, true).unwrap().contains("cannot connect"));
        assert_eq!(relay_problem(&servers, true, true), None);
        assert_eq!(relay_problem(&[], false, false), None);
        assert!(relay_problem(&[], false, true).unwrap().contains("none is configured"));
    }

    #[test]
    fn issued_credentials_are_replaced_two_thirds_of_the_way_to_their_expiry() {
        let issued = |user: &str| IceServer {
            urls: vec!["turn:127.0.0.1:3478".into()],
            username: Some(user.into()),
            credential: Some("x".into()),
        };
        let secs = std::time::Duration::from_secs;
        assert_eq!(refresh_after(&[issued("1000:s1"), issued("1600:s1")], 100), Some(secs(600)));
        assert_eq!(refresh_after(&[issued("1000:s1")], 999), Some(secs(1)), "at least a second");
        assert_eq!(refresh_after(&[issued("alice")], 100), None, "a user's own credential does not expire");
        assert_eq!(refresh_after(&[], 100), None);
    }

    #[test]
    fn relay_candidates_are_recognised() {
        assert!(is_relay_candidate("candidate:1 1 udp 16777215 127.0.0.1 50000 typ relay raddr 0.0.0.0 rport 0"));
        assert!(!is_relay_candidate("candidate:1 1 udp 2130706431 10.0.0.1 50000 typ host"));
    }

    #[test]
    fn a_relay_only_description_keeps_only_relay_candidates() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
                   a=candidate:1 1 udp 2130706431 192.168.1.20 50000 typ host\r\n\
                   a=candidate:2 1 udp 1694498815 203.0.113.9 50001 typ srflx raddr 192.168.1.20 rport 50000\r\n\
                   a=candidate:3 1 udp 16777215 198.51.100.4 60000 typ relay raddr 203.0.113.9 rport 50001\r\n\
                   a=end-of-candidates\r\n";
        let out = without_non_relay_candidates(sdp);
        assert!(!out.contains("192.168.1.20 50000 typ host") && !out.contains("typ srflx"), "{out}");
        assert!(out.contains("typ relay") && out.contains("a=end-of-candidates\r\n") && out.starts_with("v=0\r\n"));
    }

    #[test]
    fn hostile_server_ice_values_are_bounded() {
        let turn = |user: &str| IceServer {
            urls: vec!["turn:127.0.0.1:3478".into()],
            username: Some(user.into()),
            credential: Some("c".into()),
        };
        // An expiry at the end of time neither overflows nor waits longer than a day.
        assert_eq!(refresh_after(&[turn(&format!("{}:s", u64::MAX))], 0), Some(MAX_REFRESH_AFTER));
        let many: Vec<IceServer> = (0..1000).map(|i| turn(&format!("1:{i}"))).collect();
        assert_eq!(merge(&[], &many).len(), MAX_SERVER_ICE_SERVERS);
    }
}
