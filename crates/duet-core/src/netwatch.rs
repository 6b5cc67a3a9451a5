//! Watches this machine's network addresses (netlink on Linux, the system's notifications on
//! macOS and Windows, through `if-watch`) and reports each change, so that a call reconnects
//! signaling and moves media to a fresh peer connection at once instead of waiting for timeouts
//! to notice a dead path.

use std::time::Duration;

use futures_util::StreamExt;
use if_watch::{IfEvent, IpNet};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Changes closer together than this are reported once (moving to a new address is an add and
/// a remove).
const SETTLE: Duration = Duration::from_millis(200);

/// True for an address whose coming or going can change a call's path: not loopback, not
/// IPv6 link-local.
pub fn matters(net: &IpNet) -> bool {
    let addr = net.addr();
    let link_local_v6 = matches!(addr, std::net::IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80);
    !addr.is_loopback() && !link_local_v6
}

/// Starts watching; the receiver gets one report per settled change (never for the addresses
/// present at the start): `true` if an address went away. If watching is impossible here, says
/// so once and never reports.
pub fn spawn() -> mpsc::UnboundedReceiver<bool> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut watcher = match if_watch::tokio::IfWatcher::new() {
            Ok(w) => w,
            Err(e) => {
                warn!(error = %e, "cannot watch network changes; a changed address is noticed by timeouts only");
                return;
            }
        };
        // The current addresses come first, as if they had just appeared: take them in.
        while let Ok(Some(_)) = tokio::time::timeout(SETTLE, watcher.next()).await {}
        loop {
            let Some(event) = watcher.next().await else { return };
            let mut lost = match event {
                Ok(IfEvent::Up(net)) if matters(&net) => false,
                Ok(IfEvent::Down(net)) if matters(&net) => true,
                Ok(_) => continue,
                Err(e) => {
                    debug!(error = %e, "network watch ended");
                    return;
                }
            };
            while let Ok(Some(more)) = tokio::time::timeout(SETTLE, watcher.next()).await {
                lost |= matches!(more, Ok(IfEvent::Down(net)) if matters(&net));
            }
            info!(address_lost = lost, "network addresses changed");
            if tx.send(lost).is_err() {
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_link_local_addresses_do_not_matter() {
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        assert!(matters(&net("10.77.1.3/24")));
        assert!(matters(&net("2001:db8::1/64")));
        assert!(!matters(&net("127.0.0.1/8")));
        assert!(!matters(&net("::1/128")));
        assert!(!matters(&net("fe80::1/64")));
    }
}
