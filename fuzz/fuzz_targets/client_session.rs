//! Fuzz target: the client side of a session with a hostile server. The input is split into
//! server frames (one per line, each preceded by a byte of simulated time) that go through
//! duet-core's signaling machine and on into its call machine. Nothing may panic, and every
//! deadline the client arms stays within a day of now.

#![no_main]

use std::time::{Duration, Instant};

use duet_core::call::{CallMachine, Command};
use duet_core::signaling::{Output, SignalingConfig, SignalingMachine};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let mut signaling = SignalingMachine::new(SignalingConfig { jitter_seed: Some(1), ..SignalingConfig::default() }, now);
    let mut call = CallMachine::new();
    call.command(Command::Start { interests: vec![], language: None });
    signaling.socket_opened(now);
    for line in data.split(|b| *b == b'\n') {
        let Some((wait, frame)) = line.split_first() else { continue };
        now += Duration::from_millis(u64::from(*wait) * 40);
        signaling.handle_text(now, &String::from_utf8_lossy(frame));
        if signaling.poll_timeout().is_some_and(|t| t <= now) {
            signaling.handle_timeout(now);
        }
        while let Some(out) = signaling.poll_output() {
            if let Output::Event(ev) = out {
                call.signaling(now, ev);
            }
        }
        if call.poll_timeout().is_some_and(|t| t <= now) {
            call.handle_timeout(now);
        }
        while call.poll_output().is_some() {}
    }
    let horizon = now + Duration::from_secs(24 * 3600);
    assert!(signaling.poll_timeout().is_none_or(|t| t <= horizon));
    assert!(call.poll_timeout().is_none_or(|t| t <= horizon));
});
