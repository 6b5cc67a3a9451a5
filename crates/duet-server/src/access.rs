//! Who may use the server, free of I/O: the `Origin`/`Host` checks that keep web pages on
//! other sites (and DNS rebinding) away from a server on loopback, and the connection caps
//! overall and per address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// Access limits and the origins allowed besides the server's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessConfig {
    /// Web origins (`scheme://host[:port]`) allowed to open `/ws` besides the served browser
    /// client's own origin. Their hosts are also accepted in `Host`.
    pub allowed_origins: Vec<String>,
    /// Open connections (HTTP and WebSocket) at most.
    pub max_connections: usize,
    /// Open connections from one non-loopback address at most (0: no limit).
    pub max_connections_per_ip: usize,
}

impl Default for AccessConfig {
    fn default() -> Self {
        Self { allowed_origins: Vec::new(), max_connections: 50_000, max_connections_per_ip: 64 }
    }
}

/// Why a request or connection is turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A page on another site (its `Origin` is neither ours nor allowed).
    ForeignOrigin,
    /// A `Host` this server does not answer to (DNS rebinding onto loopback).
    ForeignHost,
    /// The server is at its connection limit.
    Full,
    /// This address holds too many connections already.
    TooManyFromAddress,
}

impl Refusal {
    /// What the client is told.
    pub fn message(self) -> &'static str {
        match self {
            Self::ForeignOrigin => "this origin may not use the Duet server",
            Self::ForeignHost => "unknown host for this Duet server",
            Self::Full => "the server is full; try again later",
            Self::TooManyFromAddress => "too many connections from your address",
        }
    }
}

/// Checks `Host` (every request) and `Origin` (sent by browsers) for a server listening on
/// `listen`. Native clients send no `Origin` and are not limited by it.
pub fn check_request(
    cfg: &AccessConfig,
    listen: SocketAddr,
    host: Option<&str>,
    origin: Option<&str>,
) -> Result<(), Refusal> {
    let allowed_hosts = || cfg.allowed_origins.iter().filter_map(|o| origin_host(o));
    // On loopback only local names reach us honestly; anything else is a rebound name.
    if listen.ip().is_loopback() {
        let host = host.ok_or(Refusal::ForeignHost)?;
        if !is_loopback_host(host) && !allowed_hosts().any(|h| h.eq_ignore_ascii_case(host)) {
            return Err(Refusal::ForeignHost);
        }
    }
    let Some(origin) = origin else { return Ok(()) };
    let origin = origin.trim_end_matches('/');
    if cfg.allowed_origins.iter().any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(origin)) {
        return Ok(());
    }
    // The browser client served by this server: same scheme-less host and port as `Host`.
    match (origin_host(origin), host) {
        (Some(o), Some(h)) if o.eq_ignore_ascii_case(h) => Ok(()),
        _ => Err(Refusal::ForeignOrigin),
    }
}

/// `host[:port]` of an `http(s)://` origin.
fn origin_host(origin: &str) -> Option<&str> {
    let rest = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"))?;
    let host = rest.trim_end_matches('/');
    (!host.is_empty() && !host.contains('/')).then_some(host)
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Open connections, overall and per address.
#[derive(Debug, Default)]
pub struct Admission {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl Admission {
    /// Admits a connection from `ip`, or says why not. Every admitted one must be
    /// [`Admission::release`]d.
    pub fn admit(&mut self, cfg: &AccessConfig, ip: IpAddr) -> Result<(), Refusal> {
        if self.total >= cfg.max_connections {
            return Err(Refusal::Full);
        }
        let limited = cfg.max_connections_per_ip > 0 && !ip.is_loopback();
        let count = self.per_ip.entry(ip).or_default();
        if limited && *count >= cfg.max_connections_per_ip {
            return Err(Refusal::TooManyFromAddress);
        }
        *count += 1;
        self.total += 1;
        Ok(())
    }

    /// A connection from `ip` closed.
    pub fn release(&mut self, ip: IpAddr) {
        if let Some(count) = self.per_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                self.per_ip.remove(&ip);
            }
            self.total = self.total.saturating_sub(1);
        }
    }

    /// Open connections.
    pub fn open(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> SocketAddr {
        "127.0.0.1:8787".parse().unwrap()
    }

    #[test]
    fn native_clients_and_the_served_page_are_let_in() {
        let cfg = AccessConfig::default();
        assert_eq!(check_request(&cfg, local(), Some("127.0.0.1:8787"), None), Ok(()));
        assert_eq!(check_request(&cfg, local(), Some("localhost:8787"), Some("http://localhost:8787")), Ok(()));
        assert_eq!(check_request(&cfg, local(), Some("[::1]:8787"), Some("http://[::1]:8787")), Ok(()));
    }

    #[test]
    fn a_page_on_another_site_is_refused() {
        let cfg = AccessConfig::default();
        let evil = Some("https://evil.example");
        assert_eq!(check_request(&cfg, local(), Some("127.0.0.1:8787"), evil), Err(Refusal::ForeignOrigin));
        // Another port on the same machine is another origin too.
        let other_port = Some("http://127.0.0.1:3000");
        assert_eq!(check_request(&cfg, local(), Some("127.0.0.1:8787"), other_port), Err(Refusal::ForeignOrigin));
        assert_eq!(check_request(&cfg, local(), Some("127.0.0.1:8787"), Some("null")), Err(Refusal::ForeignOrigin));
    }

    #[test]
    fn a_rebound_name_on_loopback_is_refused_even_same_origin() {
        let cfg = AccessConfig::default();
        let host = Some("evil.example:8787");
        assert_eq!(check_request(&cfg, local(), host, Some("http://evil.example:8787")), Err(Refusal::ForeignHost));
        assert_eq!(check_request(&cfg, local(), host, None), Err(Refusal::ForeignHost));
        assert_eq!(check_request(&cfg, local(), None, None), Err(Refusal::ForeignHost));
    }

    #[test]
    fn configured_origins_are_allowed_and_a_public_server_answers_to_its_names() {
        let cfg = AccessConfig { allowed_origins: vec!["https://duet.example/".into()], ..AccessConfig::default() };
        let origin = Some("https://duet.example");
        assert_eq!(check_request(&cfg, local(), Some("duet.example"), origin), Ok(()));
        let public: SocketAddr = "0.0.0.0:443".parse().unwrap();
        assert_eq!(check_request(&cfg, public, Some("chat.example"), Some("https://chat.example")), Ok(()));
        assert_eq!(
            check_request(&cfg, public, Some("chat.example"), Some("https://evil.example")),
            Err(Refusal::ForeignOrigin)
        );
    }

    #[test]
    fn connections_are_capped_overall_and_per_address_but_not_on_loopback() {
        let cfg = AccessConfig { allowed_origins: vec![], max_connections: 5, max_connections_per_ip: 2 };
        let mut a = Admission::default();
        let remote: IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(a.admit(&cfg, remote), Ok(()));
        assert_eq!(a.admit(&cfg, remote), Ok(()));
        assert_eq!(a.admit(&cfg, remote), Err(Refusal::TooManyFromAddress));
        a.release(remote);
        assert_eq!(a.admit(&cfg, remote), Ok(()));
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(a.admit(&cfg, local), Ok(()));
        }
        assert_eq!(a.admit(&cfg, local), Err(Refusal::Full));
        assert_eq!(a.open(), 5);
        a.release("198.51.100.1".parse().unwrap());
        assert_eq!(a.open(), 5, "releasing an address never admitted changes nothing");
    }
}
