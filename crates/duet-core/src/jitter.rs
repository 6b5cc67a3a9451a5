//! The receive side's audio jitter buffer, free of I/O: puts Opus packets back in RTP sequence
//! order and says, for each missing one, whether it can be recovered from the next packet's
//! in-band FEC or must be concealed (Opus PLC).
//!
//! A packet that arrives in order plays at once (no added delay on a clean link). A gap waits at
//! most [`MAX_WAIT`] for the missing packet (reordering, a retransmission); then the missing packet
//! is recovered from the FEC of the next one if that is here, or concealed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// How long a gap waits for its packet.
pub const MAX_WAIT: Duration = Duration::from_millis(60);
/// Packets held at most (older ones are given up as lost).
const MAX_HELD: usize = 50;
/// A gap longer than this (packets) is a stream restart: playing resumes from the new packet.
const MAX_GAP: u64 = 100;

/// What the decoder does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// Decode this packet.
    Packet(Bytes),
    /// The packet before this one was lost: decode its FEC copy from this packet (which then
    /// plays as [`Playout::Packet`] next).
    Recover(Bytes),
    /// A packet was lost with nothing to recover it from: conceal one packet's worth.
    Conceal,
}

/// Reorders one Opus stream.
#[derive(Debug, Default)]
pub struct AudioJitterBuffer {
    /// The next extended sequence number to play.
    next: Option<u64>,
    last: Option<u64>,
    held: BTreeMap<u64, Bytes>,
    /// When the oldest gap started waiting.
    waiting_since: Option<Instant>,
    late: u64,
    recovered: u64,
    concealed: u64,
}

impl AudioJitterBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// A packet with RTP sequence number `seq` arrived at `now`.
    pub fn push(&mut self, now: Instant, seq: u16, payload: Bytes) {
        let ext = extend(seq, self.last);
        let next = *self.next.get_or_insert(ext);
        if ext.abs_diff(next) > MAX_GAP {
            // A new stream (a new partner or peer connection numbers from a random point, ahead
            // of the old one or behind it) or a very long outage: start over from here.
            self.held.clear();
            self.next = Some(ext);
            self.last = Some(ext);
            self.waiting_since = None;
        } else if ext < next {
            self.late += 1;
            return;
        }
        self.last = Some(self.last.map_or(ext, |l| l.max(ext)));
        let next = self.next.unwrap_or(ext);
        self.held.insert(ext, payload);
        if self.held.len() > MAX_HELD
            && let Some((&first, _)) = self.held.iter().next()
        {
            self.concealed += first.saturating_sub(next);
            self.next = Some(first);
        }
        if !self.held.contains_key(&self.next.unwrap_or(ext)) && self.waiting_since.is_none() {
            self.waiting_since = Some(now);
        }
    }

    /// The next thing to play at `now`, if any.
    pub fn poll(&mut self, now: Instant) -> Option<Playout> {
        let next = self.next?;
        if let Some(p) = self.held.remove(&next) {
            self.next = Some(next + 1);
            self.waiting_since = if self.held.is_empty() || self.held.contains_key(&(next + 1)) {
                None
            } else {
                Some(self.waiting_since.unwrap_or(now))
            };
            return Some(Playout::Packet(p));
        }
        // A gap: wait for it, then give the missing packet up.
        let since = self.waiting_since?;
        if self.held.is_empty() || now.duration_since(since) < MAX_WAIT {
            return None;
        }
        self.next = Some(next + 1);
        // The rest of the same burst has been missing as long: no second wait.
        self.waiting_since = (!self.held.contains_key(&(next + 1))).then_some(since);
        match self.held.get(&(next + 1)) {
            Some(p) => {
                self.recovered += 1;
                Some(Playout::Recover(p.clone()))
            }
            None => {
                self.concealed += 1;
                Some(Playout::Conceal)
            }
        }
    }

    /// When [`AudioJitterBuffer::poll`] has something new to say, if waiting.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.waiting_since.filter(|_| !self.held.is_empty()).map(|t| t + MAX_WAIT)
    }

    /// Packets (late, recovered from FEC, concealed) so far.
    pub fn counts(&self) -> (u64, u64, u64) {
        (self.late, self.recovered, self.concealed)
    }
}

/// Extends a 16-bit sequence number near `last`.
fn extend(seq: u16, last: Option<u64>) -> u64 {
    let Some(last) = last else { return u64::from(seq) + (1 << 16) };
    let base = last & !0xffff;
    [base.wrapping_sub(1 << 16), base, base + (1 << 16)]
        .into_iter()
        .map(|b| b + u64::from(seq))
        .min_by_key(|c| c.abs_diff(last))
        .unwrap_or(base + u64::from(seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: u8) -> Bytes {
        Bytes::from(vec![n])
    }

    fn drain(j: &mut AudioJitterBuffer, now: Instant) -> Vec<Playout> {
        std::iter::from_fn(|| j.poll(now)).collect()
    }

    #[test]
    fn a_new_stream_numbered_behind_the_old_one_starts_over() {
        // A new partner (or a fresh peer connection) starts at a random sequence number, here
        // far behind where the last stream ended: it is not "late", it is a new stream.
        let t0 = Instant::now();
        let mut j = AudioJitterBuffer::new();
        for seq in 30_000..30_010u16 {
            j.push(t0, seq, p(1));
        }
        drain(&mut j, t0);
        for (i, seq) in (1_000..1_005u16).enumerate() {
            j.push(t0, seq, p(2 + i as u8));
        }
        let played = drain(&mut j, t0);
        assert_eq!(played.len(), 5, "{played:?}");
        assert_eq!(played[0], Playout::Packet(p(2)));
    }

    #[test]
    fn in_order_packets_play_at_once() {
        let mut j = AudioJitterBuffer::new();
        let t0 = Instant::now();
        for s in 0..3u16 {
            j.push(t0, s, p(s as u8));
            assert_eq!(drain(&mut j, t0), vec![Playout::Packet(p(s as u8))]);
        }
        assert_eq!(j.poll_timeout(), None);
    }

    #[test]
    fn a_reordered_packet_is_put_back_in_place() {
        let mut j = AudioJitterBuffer::new();
        let t0 = Instant::now();
        j.push(t0, 10, p(10));
        j.push(t0, 12, p(12));
        assert_eq!(drain(&mut j, t0), vec![Playout::Packet(p(10))]);
        assert!(j.poll_timeout().is_some());
        j.push(t0 + Duration::from_millis(20), 11, p(11));
        assert_eq!(drain(&mut j, t0 + Duration::from_millis(20)), vec![Playout::Packet(p(11)), Playout::Packet(p(12))]);
        assert_eq!(j.counts(), (0, 0, 0));
    }

    #[test]
    fn a_lost_packet_is_recovered_from_the_next_ones_fec_after_the_wait() {
        let mut j = AudioJitterBuffer::new();
        let t0 = Instant::now();
        j.push(t0, 1, p(1));
        j.push(t0, 3, p(3));
        assert_eq!(drain(&mut j, t0), vec![Playout::Packet(p(1))]);
        assert_eq!(drain(&mut j, t0 + MAX_WAIT / 2), vec![]);
        let later = j.poll_timeout().unwrap();
        assert_eq!(drain(&mut j, later), vec![Playout::Recover(p(3)), Playout::Packet(p(3))]);
        // It came after all: too late, dropped.
        j.push(later, 2, p(2));
        assert_eq!(drain(&mut j, later), vec![]);
        assert_eq!(j.counts(), (1, 1, 0));
    }

    #[test]
    fn a_burst_loss_conceals_all_but_the_last_which_fec_recovers() {
        let mut j = AudioJitterBuffer::new();
        let t0 = Instant::now();
        j.push(t0, 100, p(0));
        j.push(t0, 104, p(4));
        let mut out = drain(&mut j, t0);
        let mut now = t0;
        while let Some(t) = j.poll_timeout() {
            now = t;
            out.extend(drain(&mut j, now));
        }
        assert_eq!(
            out,
            vec![
                Playout::Packet(p(0)),
                Playout::Conceal,
                Playout::Conceal,
                Playout::Recover(p(4)),
                Playout::Packet(p(4))
            ]
        );
        assert!(now - t0 <= MAX_WAIT, "one wait for the whole burst");
    }

    #[test]
    fn sequence_numbers_wrap_and_a_restart_starts_over() {
        let mut j = AudioJitterBuffer::new();
        let t0 = Instant::now();
        for s in [65534u16, 65535, 0, 1] {
            j.push(t0, s, p(s as u8));
        }
        assert_eq!(drain(&mut j, t0).len(), 4);
        j.push(t0, 30_000, p(9));
        assert_eq!(drain(&mut j, t0), vec![Playout::Packet(p(9))]);
    }
}
