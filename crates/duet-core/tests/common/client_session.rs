//! The client side of a session with a hostile server, on simulated time: shared by the
//! `hostile_server` proptest and the `client_session` fuzz target.

use std::time::{Duration, Instant};

use duet_core::call::{CallMachine, Command};
use duet_core::signaling::{Output, SignalingConfig, SignalingMachine};

/// Feeds each (wait, server frame) through the signaling machine into the call machine, after
/// waiting that long; panics if either machine does, or if a deadline it arms at the end lies
/// more than a day ahead.
pub fn run_client_session<'a>(frames: impl IntoIterator<Item = (Duration, &'a str)>) {
    let mut now = Instant::now();
    let mut signaling =
        SignalingMachine::new(SignalingConfig { jitter_seed: Some(3), ..SignalingConfig::default() }, now);
    let mut call = CallMachine::new();
    call.command(Command::Start { interests: vec![], language: None });
    signaling.socket_opened(now);
    for (wait, text) in frames {
        now += wait;
        signaling.handle_text(now, text);
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
    // Whatever the server said, the client's next deadlines are in the near future.
    let horizon = now + Duration::from_secs(24 * 3600);
    assert!(signaling.poll_timeout().is_none_or(|t| t <= horizon), "signaling deadline beyond a day");
    assert!(call.poll_timeout().is_none_or(|t| t <= horizon), "call deadline beyond a day");
}
