//! The real `duet-server` binary as a child process, killed when dropped.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_duet-server");

/// A running `duet-server`; dropping it kills it (SIGKILL: no drain, no goodbye).
pub struct Proc {
    pub child: Child,
    pub url: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server on 127.0.0.1 with a free port.
pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Proc {
    spawn_on("127.0.0.1:0", args, env)
}

/// A server listening on `listen`, once it printed its address line.
pub fn spawn_on(listen: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(BIN);
    cmd.args(["--listen", listen]).args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn duet-server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.split_whitespace().find(|w| w.starts_with("ws://")).expect("address line").to_string();
    Proc { child, url }
}

pub fn sigterm(p: &Proc) {
    let status = Command::new("kill").args(["-TERM", &p.child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

/// Stops the process where it is (SIGSTOP): alive, but doing nothing until [`resume`].
pub fn pause(p: &Proc) {
    let status = Command::new("kill").args(["-STOP", &p.child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

/// Lets a process stopped by [`pause`] go on (SIGCONT).
pub fn resume(p: &Proc) {
    let status = Command::new("kill").args(["-CONT", &p.child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

pub fn wait_exit(p: &mut Proc, within: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = p.child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < within, "process did not exit within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
