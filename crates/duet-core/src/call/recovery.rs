//! What broke in a call and what brought it back: the `recovered` events of `duet call --json`
//! and the summary's `recoveries`.

use std::time::{Duration, Instant};

use serde::Serialize;

/// What failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// ICE reported the media path `disconnected`.
    IceDisconnected,
    /// ICE reported the media path `failed`.
    IceFailed,
    /// A peer connection did not connect in time.
    ConnectTimeout,
    /// Our offer got no answer in time although both sides could be reached.
    OfferUnanswered,
    /// The connection to the signaling server was lost.
    Signaling,
    /// This machine's network addresses changed.
    NetworkChanged,
    /// The partner moved to a fresh peer connection (we followed).
    PartnerNewConnection,
    /// Nothing heard on the `control` channel for a while although ICE still said connected.
    KeepaliveSilent,
}

/// What brought it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fix {
    /// The path came back by itself (within the grace before an ICE restart).
    Ice,
    /// An ICE restart.
    IceRestart,
    /// A fresh peer connection in the same pairing.
    NewPeerConnection,
    /// The session was resumed on the server.
    SessionResume,
    /// A restarted server rebuilt the session (and pairing) from its token.
    SessionRestore,
}

/// One recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// What failed.
    pub failed: Failure,
    /// What fixed it.
    pub fixed_by: Fix,
    /// From the failure to being back.
    pub took: Duration,
}

/// An outage in progress: when it started, what failed, and the step now trying to fix it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Outage {
    since: Instant,
    failed: Failure,
    step: Fix,
}

impl Outage {
    pub(super) fn new(since: Instant, failed: Failure) -> Self {
        Self { since, failed, step: Fix::Ice }
    }

    /// A further step is trying to fix it.
    pub(super) fn escalate(&mut self, step: Fix) {
        self.step = step;
    }

    /// It is over at `now`.
    pub(super) fn recovered(self, now: Instant) -> Recovery {
        Recovery { failed: self.failed, fixed_by: self.step, took: now.saturating_duration_since(self.since) }
    }
}
