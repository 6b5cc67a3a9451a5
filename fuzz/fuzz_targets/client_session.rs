//! Fuzz target: the client side of a session with a hostile server. The input is split into
//! server frames (one per line, each preceded by a byte of simulated time, x 40 ms) that go
//! through duet-core's signaling machine and on into its call machine. Nothing may panic, and
//! every deadline the client arms stays within a day of now.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/duet-core/tests/common/client_session.rs"]
mod client_session;

fuzz_target!(|data: &[u8]| {
    let frames: Vec<(Duration, String)> = data
        .split(|b| *b == b'\n')
        .filter_map(|line| line.split_first())
        .map(|(wait, frame)| (Duration::from_millis(u64::from(*wait) * 40), String::from_utf8_lossy(frame).into_owned()))
        .collect();
    client_session::run_client_session(frames.iter().map(|(wait, text)| (*wait, text.as_str())));
});
