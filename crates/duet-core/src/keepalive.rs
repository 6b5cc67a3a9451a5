//! The application keepalive on the `control` data channel, free of I/O: a `ping` every
//! [`INTERVAL`], the partner's `pong` giving the round-trip time, and silence for
//! [`SILENT_AFTER`] reported as a media path that is gone even if ICE has not noticed yet
//! (consent checks take up to 30 s). Silence only counts once the partner has answered a ping:
//! a partner that does not speak the keepalive (an older client) is never taken for a dead one.

use std::time::{Duration, Instant};

use crate::control::ControlMessage;

/// How often a ping goes out.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// Nothing heard on the channel for this long: the path is silent.
pub const SILENT_AFTER: Duration = Duration::from_secs(4);

/// What the keepalive wants done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAliveOutput {
    /// Send this on the `control` channel.
    Send(ControlMessage),
    /// A round trip was measured.
    Rtt(Duration),
    /// The partner has gone silent.
    Silent,
    /// The partner is heard again after [`KeepAliveOutput::Silent`].
    Heard,
}

/// The keepalive of one control channel.
#[derive(Debug, Clone)]
pub struct KeepAlive {
    epoch: Instant,
    next_ping: Instant,
    last_heard: Instant,
    answers_pings: bool,
    silent: bool,
}

impl KeepAlive {
    /// The channel opened at `now`: the first ping goes at once.
    pub fn new(now: Instant) -> Self {
        Self { epoch: now, next_ping: now, last_heard: now, answers_pings: false, silent: false }
    }

    /// When [`KeepAlive::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Instant {
        if self.answers_pings && !self.silent {
            self.next_ping.min(self.last_heard + SILENT_AFTER)
        } else {
            self.next_ping
        }
    }

    /// Runs what is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<KeepAliveOutput> {
        let mut out = Vec::new();
        if now >= self.next_ping {
            let ts = now.saturating_duration_since(self.epoch).as_millis() as u64;
            out.push(KeepAliveOutput::Send(ControlMessage::Ping { ts }));
            self.next_ping = now + INTERVAL;
        }
        if self.answers_pings && !self.silent && now >= self.last_heard + SILENT_AFTER {
            self.silent = true;
            out.push(KeepAliveOutput::Silent);
        }
        out
    }

    /// Anything arrived on the channel at `now` (`msg`: it was a control message).
    pub fn received(&mut self, now: Instant, msg: Option<&ControlMessage>) -> Vec<KeepAliveOutput> {
        let mut out = Vec::new();
        self.last_heard = now;
        if std::mem::take(&mut self.silent) {
            out.push(KeepAliveOutput::Heard);
        }
        match msg {
            Some(ControlMessage::Ping { ts }) => out.push(KeepAliveOutput::Send(ControlMessage::Pong { ts: *ts })),
            Some(ControlMessage::Pong { ts }) => {
                // A pong can only answer a ping of ours: never from the future, never older
                // than the channel.
                let sent = self.epoch.checked_add(Duration::from_millis(*ts));
                if let Some(sent) = sent.filter(|sent| *sent <= now) {
                    self.answers_pings = true;
                    out.push(KeepAliveOutput::Rtt(now - sent));
                }
            }
            _ => {}
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn pings_go_out_every_second_and_a_pong_gives_the_round_trip() {
        let t0 = Instant::now();
        let mut k = KeepAlive::new(t0);
        assert_eq!(k.handle_timeout(t0), [KeepAliveOutput::Send(ControlMessage::Ping { ts: 0 })]);
        assert_eq!(k.poll_timeout(), ms(t0, 1000));
        assert_eq!(
            k.received(ms(t0, 42), Some(&ControlMessage::Pong { ts: 0 })),
            [KeepAliveOutput::Rtt(Duration::from_millis(42))]
        );
        assert_eq!(k.handle_timeout(ms(t0, 1000)), [KeepAliveOutput::Send(ControlMessage::Ping { ts: 1000 })]);
    }

    #[test]
    fn a_ping_is_answered_with_its_timestamp() {
        let t0 = Instant::now();
        let mut k = KeepAlive::new(t0);
        assert_eq!(
            k.received(t0, Some(&ControlMessage::Ping { ts: 99 })),
            [KeepAliveOutput::Send(ControlMessage::Pong { ts: 99 })]
        );
    }

    #[test]
    fn silence_after_answers_is_reported_once_and_the_partner_heard_again() {
        let t0 = Instant::now();
        let mut k = KeepAlive::new(t0);
        k.handle_timeout(t0);
        k.received(ms(t0, 10), Some(&ControlMessage::Pong { ts: 0 }));
        let mut silent_at = None;
        for t in (1000..=8000).step_by(1000) {
            if k.handle_timeout(ms(t0, t)).contains(&KeepAliveOutput::Silent) {
                assert!(silent_at.is_none(), "reported once");
                silent_at = Some(t);
            }
        }
        assert_eq!(silent_at, Some(5000), "4 s after the last thing heard (10 ms)");
        assert_eq!(
            k.received(ms(t0, 8500), Some(&ControlMessage::Video { on: true, cause: None, seq: None })),
            [KeepAliveOutput::Heard]
        );
    }

    #[test]
    fn a_partner_that_never_answers_pings_is_never_taken_for_silent() {
        let t0 = Instant::now();
        let mut k = KeepAlive::new(t0);
        for t in (0..=20_000).step_by(1000) {
            assert!(!k.handle_timeout(ms(t0, t)).contains(&KeepAliveOutput::Silent));
        }
    }

    #[test]
    fn a_pong_from_the_future_is_no_round_trip() {
        let t0 = Instant::now();
        let mut k = KeepAlive::new(t0);
        assert!(k.received(ms(t0, 5), Some(&ControlMessage::Pong { ts: 60_000 })).is_empty());
        assert!(k.received(ms(t0, 5), Some(&ControlMessage::Pong { ts: u64::MAX })).is_empty());
    }
}
