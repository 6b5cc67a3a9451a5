//! VP8 frame reassembly from RTP, free of I/O.
//!
//! webrtc's `SampleBuilder` releases a frame only when the first packet of the *next* frame
//! arrives, which adds a whole frame interval (33 ms at 30 fps) to every frame's latency.
//! This assembler releases a frame as soon as it is complete: its first packet (VP8 `S` bit,
//! partition 0), its last (RTP marker) and every sequence number between them. Frames are
//! released in order; an incomplete frame is given up when a newer one is complete and the
//! old one has waited longer than [`MAX_WAIT`] (or too many frames are pending), and the
//! caller learns of the gap so it can ask for a keyframe.
//!
//! What the partner can make it hold is bounded: at most [`MAX_HELD_BYTES`] and
//! [`MAX_HELD_PACKETS`] in all frames under assembly (a stream that never sets the marker bit
//! included). Beyond that the oldest frames are dropped, counted, and reported as a gap.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

/// How long an incomplete frame may wait for retransmissions while newer frames are ready.
pub const MAX_WAIT: Duration = Duration::from_millis(150);
/// Most frames held at once.
const MAX_PENDING: usize = 8;
/// Most payload bytes held for frames under assembly, in all (several keyframes of 4K video).
pub const MAX_HELD_BYTES: usize = 4 << 20;
/// Most packets held for frames under assembly, in all.
pub const MAX_HELD_PACKETS: usize = 4096;

#[derive(Default)]
struct Partial {
    first_seen: Option<Instant>,
    /// Payloads by extended sequence number.
    parts: BTreeMap<u64, Bytes>,
    /// Their total length.
    bytes: usize,
    head: Option<u64>,
    tail: Option<u64>,
    /// Every packet from head to tail is here (updated on each packet).
    complete: bool,
}

impl Partial {
    fn is_complete(&self) -> bool {
        match (self.head, self.tail) {
            (Some(h), Some(t)) if t >= h => (h..=t).all(|s| self.parts.contains_key(&s)),
            _ => false,
        }
    }

    fn assemble(self) -> Bytes {
        let mut out = BytesMut::new();
        for (_, p) in self.parts {
            out.extend_from_slice(&p);
        }
        out.freeze()
    }
}

/// What the assembler produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assembled {
    /// A whole VP8 frame.
    Frame(Bytes),
    /// Frames were given up: the next delta frames cannot be decoded without a keyframe.
    Gap,
}

/// Reassembles one VP8 stream.
#[derive(Default)]
pub struct Vp8Assembler {
    /// Partial frames by extended RTP timestamp.
    pending: BTreeMap<u64, Partial>,
    /// Bytes and packets in `pending`.
    held_bytes: usize,
    held_packets: usize,
    /// Frames dropped because the held bytes or packets went over their bound.
    overflowed: u64,
    last_seq: Option<u64>,
    last_ts: Option<u64>,
    /// Newest timestamp released or given up: older packets are late and dropped.
    released_ts: Option<u64>,
}

/// Extends a wrapping 16/32-bit counter to 64 bits near `last`.
fn extend(value: u64, last: Option<u64>, bits: u32) -> u64 {
    let Some(last) = last else { return value + (1 << bits) };
    let span = 1u64 << bits;
    let base = last & !(span - 1);
    [base.wrapping_sub(span), base, base + span]
        .into_iter()
        .map(|b| b.wrapping_add(value))
        .min_by_key(|c| c.abs_diff(last))
        .unwrap_or(base + value)
}

/// Parses the VP8 payload descriptor (RFC 7741 section 4.2): returns whether the packet
/// starts a frame (S bit set, partition 0) and where the VP8 data begins.
fn parse_descriptor(p: &[u8]) -> Option<(bool, usize)> {
    let first = *p.first()?;
    let start = first & 0x10 != 0 && first & 0x07 == 0;
    let mut at = 1;
    if first & 0x80 != 0 {
        let ext = *p.get(at)?;
        at += 1;
        if ext & 0x80 != 0 {
            // Picture id: 15 bits when M is set, else 7.
            at += if *p.get(at)? & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            at += 1;
        }
        if ext & 0x30 != 0 {
            at += 1;
        }
    }
    (at < p.len()).then_some((start, at))
}

impl Vp8Assembler {
    /// An empty assembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one RTP packet; returns what became ready, in order.
    pub fn push(&mut self, now: Instant, seq: u16, timestamp: u32, marker: bool, payload: &Bytes) -> Vec<Assembled> {
        let seq = extend(u64::from(seq), self.last_seq, 16);
        let ts = extend(u64::from(timestamp), self.last_ts, 32);
        self.last_seq = Some(self.last_seq.map_or(seq, |l| l.max(seq)));
        self.last_ts = Some(self.last_ts.map_or(ts, |l| l.max(ts)));
        if self.released_ts.is_some_and(|r| ts <= r) {
            return Vec::new();
        }
        let Some((head, offset)) = parse_descriptor(payload) else { return Vec::new() };
        let data = payload.slice(offset..);
        let added = data.len();
        let partial = self.pending.entry(ts).or_default();
        partial.first_seen.get_or_insert(now);
        // A retransmitted packet replaces its first copy.
        let replaced = partial.parts.insert(seq, data);
        let removed = replaced.as_ref().map_or(0, Bytes::len);
        partial.bytes = partial.bytes + added - removed;
        if head {
            partial.head = Some(seq);
        }
        if marker {
            partial.tail = Some(seq);
        }
        partial.complete = partial.is_complete();
        self.held_bytes = self.held_bytes + added - removed;
        self.held_packets += usize::from(replaced.is_none());
        let mut out = Vec::new();
        // Frames are released in order: the oldest goes first, up to the one being flooded.
        while self.held_bytes > MAX_HELD_BYTES || self.held_packets > MAX_HELD_PACKETS {
            self.give_up_oldest(&mut out);
            self.overflowed += 1;
        }
        self.release(now, &mut out);
        out
    }

    /// Frames dropped so far because they (with the others held) went over [`MAX_HELD_BYTES`]
    /// or [`MAX_HELD_PACKETS`].
    pub fn overflowed(&self) -> u64 {
        self.overflowed
    }

    fn pop_oldest(&mut self) -> Option<Partial> {
        let (ts, partial) = self.pending.pop_first()?;
        self.released_ts = Some(ts);
        self.held_bytes -= partial.bytes;
        self.held_packets -= partial.parts.len();
        Some(partial)
    }

    fn give_up_oldest(&mut self, out: &mut Vec<Assembled>) {
        if self.pop_oldest().is_some() && out.last() != Some(&Assembled::Gap) {
            out.push(Assembled::Gap);
        }
    }

    fn release(&mut self, now: Instant, out: &mut Vec<Assembled>) {
        while let Some(partial) = self.pending.values().next() {
            if partial.complete {
                if let Some(p) = self.pop_oldest() {
                    out.push(Assembled::Frame(p.assemble()));
                }
                continue;
            }
            let newer_complete = self.pending.values().skip(1).any(|p| p.complete);
            let waited = partial.first_seen.is_some_and(|t| now.duration_since(t) > MAX_WAIT);
            if (newer_complete && waited) || self.pending.len() > MAX_PENDING {
                self.give_up_oldest(out);
                continue;
            }
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// VP8 payload descriptor: S bit on the first packet of a frame, partition 0.
    fn pkt(start: bool, body: &[u8]) -> Bytes {
        let mut v = vec![if start { 0x10 } else { 0x00 }];
        v.extend_from_slice(body);
        Bytes::from(v)
    }

    fn frames(out: Vec<Assembled>) -> Vec<Bytes> {
        out.into_iter()
            .filter_map(|a| match a {
                Assembled::Frame(f) => Some(f),
                Assembled::Gap => None,
            })
            .collect()
    }

    #[test]
    fn a_frame_is_released_on_its_last_packet_not_the_next_frame() {
        let mut a = Vp8Assembler::new();
        let t = Instant::now();
        assert!(a.push(t, 10, 3000, false, &pkt(true, b"ab")).is_empty());
        assert!(a.push(t, 11, 3000, false, &pkt(false, b"cd")).is_empty());
        assert_eq!(frames(a.push(t, 12, 3000, true, &pkt(false, b"ef"))), [Bytes::from_static(b"abcdef")]);
    }

    #[test]
    fn reordered_and_retransmitted_packets_still_make_the_frame() {
        let mut a = Vp8Assembler::new();
        let t = Instant::now();
        a.push(t, 12, 3000, true, &pkt(false, b"ef"));
        a.push(t, 10, 3000, false, &pkt(true, b"ab"));
        assert_eq!(frames(a.push(t, 11, 3000, false, &pkt(false, b"cd"))), [Bytes::from_static(b"abcdef")]);
        assert!(a.push(t, 11, 3000, false, &pkt(false, b"cd")).is_empty(), "a late duplicate is dropped");
    }

    #[test]
    fn frames_come_out_in_order_and_a_lost_one_becomes_a_gap() {
        let mut a = Vp8Assembler::new();
        let t = Instant::now();
        // Frame 1 loses its middle packet; frame 2 is complete.
        a.push(t, 1, 100, false, &pkt(true, b"1a"));
        a.push(t, 3, 100, true, &pkt(false, b"1c"));
        let out = a.push(t, 4, 200, true, &pkt(true, b"2"));
        assert!(out.is_empty(), "frame 2 waits for frame 1's retransmission");
        let out = a.push(t + MAX_WAIT + Duration::from_millis(1), 5, 300, true, &pkt(true, b"3"));
        assert_eq!(out[0], Assembled::Gap);
        assert_eq!(frames(out), [Bytes::from_static(b"2"), Bytes::from_static(b"3")]);
    }

    #[test]
    fn descriptors_with_extensions_are_parsed() {
        // X, I with 15-bit picture id, L, T/K: 6 bytes of descriptor, then data.
        let p = [0x90, 0xf0, 0x80 | 0x12, 0x34, 0x05, 0x40, 0xaa, 0xbb];
        assert_eq!(parse_descriptor(&p), Some((true, 6)));
        assert_eq!(parse_descriptor(&[0x90, 0x80, 0x7f, 0x01]), Some((true, 3)));
        assert_eq!(parse_descriptor(&[0x11, 0x00]), Some((false, 1)), "partition 1 is not a frame start");
        assert_eq!(parse_descriptor(&[0x90, 0x80]), None, "truncated");
        assert_eq!(parse_descriptor(&[0x10]), None, "no data");
    }

    #[test]
    fn a_stream_without_marker_bits_is_held_within_bounds_and_frames_resume_after() {
        let mut a = Vp8Assembler::new();
        let t = Instant::now();
        let body = Bytes::from(vec![0x10; 1200]);
        let mut gaps = 0;
        // 20 MB on one timestamp, then on a few more: never a marker bit.
        for i in 0..20_000u32 {
            let out = a.push(t, i as u16, 3000 * (i / 5000), false, &body);
            gaps += out.iter().filter(|o| **o == Assembled::Gap).count();
            assert!(a.held_bytes <= MAX_HELD_BYTES && a.held_packets <= MAX_HELD_PACKETS, "packet {i}");
        }
        assert!(a.overflowed() >= 4, "{}", a.overflowed());
        assert!(gaps >= 4, "each dropped frame is reported: {gaps}");
        // A normal frame afterwards comes out whole.
        a.push(t, 20_000, 90_000, false, &pkt(true, b"ab"));
        assert_eq!(frames(a.push(t, 20_001, 90_000, true, &pkt(false, b"cd"))), [Bytes::from_static(b"abcd")]);
        assert_eq!(a.held_bytes, 0);
    }

    #[test]
    fn tiny_packets_are_bounded_by_count() {
        let mut a = Vp8Assembler::new();
        let t = Instant::now();
        for i in 0..3 * MAX_HELD_PACKETS as u32 {
            a.push(t, i as u16, 7, false, &pkt(false, b"x"));
            assert!(a.held_packets <= MAX_HELD_PACKETS);
        }
        assert_eq!(a.overflowed(), 1, "later packets of the dropped frame are late");
        assert_eq!(frames(a.push(t, 0, 3007, true, &pkt(true, b"n"))), [Bytes::from_static(b"n")]);
    }

    #[test]
    fn retransmitted_copies_are_not_counted_twice() {
        let mut a = Vp8Assembler::new();
        let t = Instant::now();
        for _ in 0..10 {
            a.push(t, 5, 3000, false, &pkt(true, b"abc"));
        }
        assert_eq!((a.held_bytes, a.held_packets), (3, 1));
        assert_eq!(frames(a.push(t, 6, 3000, true, &pkt(false, b"d"))), [Bytes::from_static(b"abcd")]);
        assert_eq!((a.held_bytes, a.held_packets), (0, 0));
    }

    #[test]
    fn sequence_and_timestamp_wrap_around() {
        let mut a = Vp8Assembler::new();
        let t = Instant::now();
        a.push(t, 65534, u32::MAX - 10, false, &pkt(true, b"x"));
        a.push(t, 65535, u32::MAX - 10, false, &pkt(false, b"y"));
        assert_eq!(frames(a.push(t, 0, u32::MAX - 10, true, &pkt(false, b"z"))), [Bytes::from_static(b"xyz")]);
        assert_eq!(frames(a.push(t, 1, 50, true, &pkt(true, b"n"))), [Bytes::from_static(b"n")]);
    }
}
