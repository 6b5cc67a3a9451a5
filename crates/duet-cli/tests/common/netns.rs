//! Network namespaces for calls over impaired links, shared by `tests/netns.rs` and
//! `benches/capped.rs`: a router namespace running `duet-server` between two client namespaces,
//! `tc tbf` caps on the router's links toward the clients. Needs root. Addresses are 10.77.x.y;
//! everything is torn down on drop, also on failure.
//!
//! Topology: `a` 10.77.1.2 <-veth-> `r` 10.77.1.1 / 10.77.2.1 <-veth-> `b` 10.77.2.2.
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use serde_json::Value;

pub const DUET: &str = env!("CARGO_BIN_EXE_duet");

pub fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Three namespaces joined by two veth pairs; deleted when dropped.
pub struct Net {
    pub a: String,
    pub r: String,
    pub b: String,
}

impl Net {
    pub fn new(tag: &str) -> Self {
        let id = format!("{}{}", tag, std::process::id() % 10000);
        let net = Net { a: format!("da{id}"), r: format!("dr{id}"), b: format!("db{id}") };
        for ns in [&net.a, &net.r, &net.b] {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        for (side, ns, subnet) in [("a", &net.a, 1), ("b", &net.b, 2)] {
            let (outer, inner) = (format!("r{side}{id}"), format!("{side}r{id}"));
            sh(&["ip", "link", "add", &outer, "netns", &net.r, "type", "veth", "peer", "name", &inner, "netns", ns]);
            sh(&["ip", "-n", &net.r, "addr", "add", &format!("10.77.{subnet}.1/24"), "dev", &outer]);
            sh(&["ip", "-n", ns, "addr", "add", &format!("10.77.{subnet}.2/24"), "dev", &inner]);
            sh(&["ip", "-n", &net.r, "link", "set", &outer, "up"]);
            sh(&["ip", "-n", ns, "link", "set", &inner, "up"]);
            sh(&["ip", "-n", ns, "route", "add", "default", "via", &format!("10.77.{subnet}.1")]);
            // Shaping must see real packet sizes.
            for (n, dev) in [(&net.r, &outer), (ns, &inner)] {
                let _ = Command::new("ip")
                    .args(["netns", "exec", n, "ethtool", "-K", dev])
                    .args(["tso", "off", "gso", "off", "gro", "off"])
                    .output();
            }
        }
        sh(&["ip", "netns", "exec", &net.r, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        net
    }

    /// Runs an nftables script in the router namespace.
    fn nft(&self, script: &str) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.r, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().unwrap().write_all(script.as_bytes())?;
                child.wait_with_output()
            })
            .unwrap();
        assert!(out.status.success(), "nft: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Takes client `a`'s link down (`true`: every packet from and to it dropped in the router,
    /// signaling and media alike, while the interfaces stay up) or back up.
    pub fn outage(&self, down: bool) {
        let id = &self.r[2..];
        if down {
            self.nft(&format!(
                "table inet outage {{
                  chain drop_in {{ type filter hook prerouting priority -300; iifname \"ra{id}\" drop; }}
                  chain drop_fwd {{ type filter hook forward priority -300; oifname \"ra{id}\" drop; }}
                  chain drop_out {{ type filter hook output priority -300; oifname \"ra{id}\" drop; }}
                }}"
            ));
        } else {
            self.nft("delete table inet outage");
        }
    }

    /// Drops `percent` % of the packets the router forwards toward either client (the media;
    /// signaling ends in the router), at random (nftables `numgen random`); `None`: no loss.
    pub fn loss(&self, percent: Option<u32>) {
        let id = &self.r[2..];
        // Adding first makes the delete succeed when there was no table.
        self.nft("add table inet loss\ndelete table inet loss");
        if let Some(p) = percent {
            self.nft(&format!(
                "table inet loss {{
                  chain lossy {{ type filter hook forward priority -200; oifname {{ \"ra{id}\", \"rb{id}\" }} numgen random mod 100 < {p} drop; }}
                }}"
            ));
        }
    }

    /// Moves client `a` from 10.77.1.2 to `new_ip` (same subnet) as a DHCP renewal or a
    /// different access point would: the new address is added, the old one removed.
    pub fn move_a(&self, new_ip: &str) {
        self.move_a_from("10.77.1.2", new_ip);
    }

    /// [`Net::move_a`] from another address than the first.
    pub fn move_a_from(&self, old_ip: &str, new_ip: &str) {
        let dev = format!("ar{}", &self.a[2..]);
        sh(&["ip", "netns", "exec", &self.a, "sysctl", "-qw", &format!("net.ipv4.conf.{dev}.promote_secondaries=1")]);
        sh(&["ip", "-n", &self.a, "addr", "add", &format!("{new_ip}/24"), "dev", &dev]);
        sh(&["ip", "-n", &self.a, "addr", "del", &format!("{old_ip}/24"), "dev", &dev]);
        sh(&["ip", "-n", &self.a, "route", "replace", "default", "via", "10.77.1.1"]);
    }

    /// Caps both of the router's links toward the clients at `kbit` kb/s (`None`: lifted).
    pub fn cap(&self, kbit: Option<u32>) {
        let id = &self.r[2..];
        for dev in [format!("ra{id}"), format!("rb{id}")] {
            let _ =
                Command::new("ip").args(["netns", "exec", &self.r, "tc", "qdisc", "del", "dev", &dev, "root"]).output();
            if let Some(k) = kbit {
                let burst = if k < 100 { "3000" } else { "6kb" };
                sh(&[
                    "ip",
                    "netns",
                    "exec",
                    &self.r,
                    "tc",
                    "qdisc",
                    "add",
                    "dev",
                    &dev,
                    "root",
                    "tbf",
                    "rate",
                    &format!("{k}kbit"),
                    "burst",
                    burst,
                    "latency",
                    "100ms",
                ]);
            }
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in [&self.a, &self.r, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn server_bin() -> PathBuf {
    let bin = PathBuf::from(DUET).with_file_name("duet-server");
    assert!(bin.exists(), "{} is missing: build the workspace (cargo build -p duet-server)", bin.display());
    bin
}

/// Starts `duet-server` in the router namespace; returns it and its WebSocket URL.
pub fn server(net: &Net) -> (Proc, String) {
    server_with(net, &[])
}

/// [`server`] with extra flags.
pub fn server_with(net: &Net, args: &[&str]) -> (Proc, String) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &net.r])
        .arg(server_bin())
        .args(["--listen", "10.77.1.1:0"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.split_whitespace().find(|w| w.starts_with("ws://")).unwrap_or_else(|| panic!("{line}")).to_string();
    (Proc(child), url)
}

/// Starts a `duet call` in namespace `ns` bound to `ip`, joining `room` for `secs`.
pub fn client(ns: &str, ip: &str, url: &str, room: &str, video: &str, secs: u32) -> Proc {
    client_with(ns, ip, url, room, video, secs, &[])
}

/// [`client`] with extra `duet call` flags.
pub fn client_with(ns: &str, ip: &str, url: &str, room: &str, video: &str, secs: u32, extra: &[&str]) -> Proc {
    let child = Command::new("ip")
        .args(["netns", "exec", ns, DUET, "call", "--json", "--server", url, "--room", room])
        .args(["--bind", &format!("{ip}:0"), "--video", video, "--duration", &secs.to_string()])
        .args(extra)
        .env("RUST_LOG", std::env::var("DUET_NETNS_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Proc(child)
}

/// Waits for the process and parses its JSON lines (with the time each event was printed,
/// seconds since `t0`, as `_t`).
pub fn events(mut p: Proc, t0: Instant) -> Vec<Value> {
    let stdout = p.0.stdout.take().unwrap();
    let mut stderr = p.0.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let mut out = Vec::new();
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if let Ok(mut v) = serde_json::from_str::<Value>(&line) {
            v["_t"] = t0.elapsed().as_secs_f64().into();
            out.push(v);
        }
    }
    let _ = p.0.wait();
    let errors = errors.join().unwrap_or_default();
    if std::env::var("DUET_NETNS_LOG").is_ok() || !out.iter().any(|e| e["event"] == "summary" && e["connected"] == true)
    {
        eprintln!("duet call printed on stderr:\n{errors}");
    }
    out
}
