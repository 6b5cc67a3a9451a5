//! A real coturn on 127.0.0.1 for tests (Debian's `coturn` package), killed on drop. Shared by
//! the CLI's TURN tests and the desktop engine's tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The `static-auth-secret` of [`Coturn::start`] (TURN REST credentials).
pub const SECRET: &str = "coturn-test-secret";
/// The long-term user of [`Coturn::with_user`].
pub const USER: (&str, &str) = ("duet", "duet-turn-password");

/// coturn on 127.0.0.1; killed on drop.
pub struct Coturn {
    child: Child,
    /// Its UDP port.
    pub port: u16,
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Coturn {
    /// With REST credentials from [`SECRET`].
    pub fn start() -> Self {
        Self::spawn(&["--use-auth-secret", &format!("--static-auth-secret={SECRET}")])
    }

    /// With the long-term user [`USER`] (credentials as a settings file holds them).
    pub fn with_user() -> Self {
        Self::spawn(&["--lt-cred-mech", &format!("--user={}:{}", USER.0, USER.1)])
    }

    fn spawn(auth: &[&str]) -> Self {
        let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("turnserver")
            .args(["-n", "--no-cli", "--no-tls", "--no-dtls", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1"])
            .arg(format!("--listening-port={port}"))
            .args(auth)
            .args(["--realm=duet.test", "--allow-loopback-peers", "--min-port=40000", "--max-port=40999"])
            .args(["--log-file=stdout"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnserver must be installed (Debian package coturn; scripts/test.sh installs it)");
        // It answers as soon as it listens.
        std::thread::sleep(Duration::from_millis(700));
        Coturn { child, port }
    }

    /// Its `turn:` URL (UDP).
    pub fn url(&self) -> String {
        format!("turn:127.0.0.1:{}?transport=udp", self.port)
    }
}
