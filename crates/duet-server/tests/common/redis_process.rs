//! A real `redis-server` for tests: started on a free loopback port with its files in a temp
//! dir, killed on drop. Needs the `redis-server` package (scripts/packages.txt); a test fails,
//! loudly, without it. Shared by the server's tests and the `duet` end-to-end tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// One `redis-server` process on 127.0.0.1.
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a fresh server on a free port.
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let server = Self { port, dir: tempfile::tempdir().unwrap() };
        server.spawn();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn pidfile(&self) -> PathBuf {
        self.dir.path().join("redis.pid")
    }

    fn up(&self) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
    }

    /// Starts (or restarts) the process on the same port, empty (no persistence).
    pub fn spawn(&self) {
        let dir = self.dir.path();
        let status = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "yes", "--protected-mode", "no"])
            .arg("--pidfile")
            .arg(self.pidfile())
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .status()
            .expect("redis-server is installed (apt-get install redis-server; see scripts/packages.txt)");
        assert!(status.success(), "redis-server started");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.up() {
            assert!(Instant::now() < deadline, "redis-server listens on {} within 10 s", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process at once (as a crash would) and waits until the port is closed.
    pub fn kill(&self) {
        let pid = std::fs::read_to_string(self.pidfile()).unwrap_or_default();
        let pid = pid.trim();
        if pid.is_empty() {
            return;
        }
        let _ = Command::new("kill").args(["-KILL", pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.up() {
            assert!(Instant::now() < deadline, "redis-server stopped");
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_file(self.pidfile());
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
