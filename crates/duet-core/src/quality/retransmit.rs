//! Which retransmission requests (NACKs) are worth answering, free of I/O.
//!
//! webrtc's NACK responder resends every packet named in every NACK from a 1,024-packet history.
//! The partner asks for a lost packet up to three times, 100 ms apart; while a queue stands in
//! front of a cap the round trip is 200-450 ms, so each lost packet was resent three times, long
//! after the partner had given up on its frame, and the retransmissions kept the queue standing.
//! Measured in namespaces under a 300 kb/s cap: 105-160 kb/s of the ~300 kb/s sent were
//! retransmissions for as long as the cap lasted (31-35 kb/s beside the media with this policy,
//! as on a free link). libwebrtc resends a packet at most once per round trip; Duet also resends
//! nothing older than the partner would still wait for.
//!
//! [`RetransmitPolicy`] remembers when each recent packet was sent and last resent, and answers
//! [`RetransmitPolicy::should_resend`].

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// A packet older than this is not resent: the partner gives up on an incomplete frame
/// 150 ms after its first packet arrived (`peer::assembler::MAX_WAIT`), and a resent packet
/// arrives one way later than the NACK left; this leaves room for the time the frame waited in
/// the send queue.
pub const MAX_AGE: Duration = Duration::from_millis(300);
/// A packet is resent again only after a round trip, and never more often than this. Under the
/// partner's 100 ms between requests: on a short round trip a request repeated 100 ms later
/// means the copy was lost, and is answered.
pub const MIN_SPACING: Duration = Duration::from_millis(50);
/// Packets remembered per stream.
const HISTORY: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Sent {
    seq: u16,
    at: Instant,
    resent: Option<Instant>,
}

/// Decides, per stream and sequence number, whether a NACK is answered.
#[derive(Debug, Default)]
pub struct RetransmitPolicy {
    streams: HashMap<u32, VecDeque<Sent>>,
}

impl RetransmitPolicy {
    /// Packet `seq` of stream `ssrc` was sent (first time) at `now`.
    pub fn on_sent(&mut self, ssrc: u32, seq: u16, now: Instant) {
        let history = self.streams.entry(ssrc).or_default();
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(Sent { seq, at: now, resent: None });
    }

    /// Whether packet `seq` of stream `ssrc`, asked for at `now`, is resent, given the latest
    /// round trip (if known). A packet resent is recorded as such.
    pub fn should_resend(&mut self, ssrc: u32, seq: u16, now: Instant, rtt: Option<Duration>) -> bool {
        let Some(sent) = self.streams.get_mut(&ssrc).and_then(|h| h.iter_mut().rev().find(|s| s.seq == seq)) else {
            return false;
        };
        if now.saturating_duration_since(sent.at) > MAX_AGE {
            return false;
        }
        let spacing = rtt.map_or(MIN_SPACING, |rtt| rtt.max(MIN_SPACING));
        if sent.resent.is_some_and(|t| now.saturating_duration_since(t) < spacing) {
            return false;
        }
        sent.resent = Some(now);
        true
    }

    /// Forgets stream `ssrc`.
    pub fn forget(&mut self, ssrc: u32) {
        self.streams.remove(&ssrc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_fresh_loss_is_resent_once_per_round_trip() {
        let t0 = Instant::now();
        let mut p = RetransmitPolicy::default();
        p.on_sent(1, 10, t0);
        assert!(p.should_resend(1, 10, t0 + ms(40), Some(ms(150))));
        // The partner asks again 100 ms later: the copy is still on its way.
        assert!(!p.should_resend(1, 10, t0 + ms(140), Some(ms(150))));
        // A round trip later it was lost too.
        assert!(p.should_resend(1, 10, t0 + ms(200), Some(ms(150))));
    }

    #[test]
    fn on_a_short_round_trip_a_request_repeated_100_ms_later_is_answered() {
        let t0 = Instant::now();
        let mut p = RetransmitPolicy::default();
        p.on_sent(1, 10, t0);
        assert!(p.should_resend(1, 10, t0 + ms(10), Some(ms(5))));
        // A duplicate request right behind the first (a repeated NACK packet) is not.
        assert!(!p.should_resend(1, 10, t0 + ms(20), Some(ms(5))));
        assert!(p.should_resend(1, 10, t0 + ms(108), Some(ms(5))));
        // Without a round trip known, the same.
        p.on_sent(1, 11, t0);
        assert!(p.should_resend(1, 11, t0 + ms(10), None));
        assert!(!p.should_resend(1, 11, t0 + ms(59), None));
        assert!(p.should_resend(1, 11, t0 + ms(108), None));
    }

    #[test]
    fn a_packet_the_partner_no_longer_waits_for_is_not_resent() {
        let t0 = Instant::now();
        let mut p = RetransmitPolicy::default();
        p.on_sent(1, 10, t0);
        assert!(!p.should_resend(1, 10, t0 + MAX_AGE + ms(1), Some(ms(1))));
    }

    #[test]
    fn unknown_and_forgotten_packets_are_not_resent() {
        let t0 = Instant::now();
        let mut p = RetransmitPolicy::default();
        p.on_sent(1, 10, t0);
        assert!(!p.should_resend(1, 11, t0, None));
        assert!(!p.should_resend(2, 10, t0, None));
        p.forget(1);
        assert!(!p.should_resend(1, 10, t0, None));
    }

    #[test]
    fn the_history_keeps_the_newest_packets_and_a_wrapped_number_finds_the_newest() {
        let t0 = Instant::now();
        let mut p = RetransmitPolicy::default();
        for n in 0..(HISTORY as u32 + 70_000) {
            p.on_sent(1, n as u16, t0 + ms(u64::from(n) / 1000));
        }
        let last = t0 + ms(u64::from(HISTORY as u32 + 70_000) / 1000);
        // The newest packet with this number (sent just now) is resent.
        assert!(p.should_resend(1, (HISTORY as u32 + 69_999) as u16, last, None));
        assert_eq!(p.streams[&1].len(), HISTORY);
    }
}
