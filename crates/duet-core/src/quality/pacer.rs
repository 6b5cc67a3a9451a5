//! The send queue: audio first, video paced at the estimate, and a bounded delay.
//!
//! Packets leave through a token bucket refilled at the pacing rate. Audio (and anything
//! always goes before video and is never dropped: it is small, and a voice that arrives is worth
//! more than any picture. Video waits its turn; a frame none of whose packets has left after
//! [`MAX_VIDEO_DELAY`] is dropped whole, so the queue never builds seconds of delay under a cap
//! (the receiver asks for a keyframe and the encoder, told of the drop, lowers its output). A
//! frame that has started to leave is always finished: half a frame is worth nothing, and a
//! keyframe larger than the delay bound must still get through.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The pacer sends at the estimate times this: a little headroom so encoder overshoot drains
/// quickly, while the queue (not the network) absorbs what exceeds it.
pub const PACING_FACTOR: f64 = 1.1;
/// The longest a video packet may wait in the queue.
pub const MAX_VIDEO_DELAY: Duration = Duration::from_millis(150);
/// The budget may accumulate at most this many bits (a 40 ms burst at the rate, at least 2 packets).
const BURST: Duration = Duration::from_millis(40);
const MIN_BURST_BITS: f64 = 2.0 * 1500.0 * 8.0;

/// What kind of packet, for priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Audio: first, never dropped.
    Audio,
    /// Video (and its retransmissions): paced, dropped when stale.
    Video {
        /// Frame identity (SSRC and RTP timestamp), so a stale frame is dropped whole.
        frame: (u32, u32),
        /// The packet starts a keyframe: never dropped, and it ends a broken chain.
        keyframe: bool,
    },
}

/// A priority pacer holding packets of type `P`.
#[derive(Debug)]
pub struct Pacer<P> {
    rate_bps: f64,
    budget_bits: f64,
    last_refill: Option<Instant>,
    video: VecDeque<(P, f64, (u32, u32), Instant)>,
    /// The frame whose packets are leaving (never dropped).
    in_progress: Option<(u32, u32)>,
    /// Keyframes queued or leaving (never dropped).
    keyframes: Vec<(u32, u32)>,
    /// A frame was dropped: the delta frames after it cannot be decoded, so they are dropped
    /// too until a keyframe arrives (the receiver asks for one, the encoder is told).
    broken: bool,
    dropped_video: u64,
}

impl<P> Pacer<P> {
    /// A pacer sending at `rate_bps`.
    pub fn new(rate_bps: f64) -> Self {
        let mut p = Self {
            rate_bps: 0.0,
            budget_bits: 0.0,
            last_refill: None,
            video: VecDeque::new(),
            in_progress: None,
            keyframes: Vec::new(),
            broken: false,
            dropped_video: 0,
        };
        p.set_rate(rate_bps);
        p.budget_bits = p.burst_bits();
        p
    }

    /// Changes the pacing rate.
    pub fn set_rate(&mut self, rate_bps: f64) {
        self.rate_bps = rate_bps.max(10_000.0);
        self.budget_bits = self.budget_bits.min(self.burst_bits());
    }

    fn burst_bits(&self) -> f64 {
        (self.rate_bps * BURST.as_secs_f64()).max(MIN_BURST_BITS)
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last_refill {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.budget_bits = (self.budget_bits + elapsed * self.rate_bps).min(self.burst_bits());
        }
        self.last_refill = Some(now.max(self.last_refill.unwrap_or(now)));
    }

    /// Takes a packet of `bytes` on the wire. Audio comes straight back: it leaves at once,
    /// whatever the budget (a small, steady share that must never wait behind video), and still
    /// spends the budget, so video makes room for it. Video is queued for [`Pacer::release`].
    #[must_use = "audio comes back to be sent at once"]
    pub fn push(&mut self, now: Instant, packet: P, bytes: usize, class: Class) -> Option<P> {
        self.refill(now);
        let bits = bytes as f64 * 8.0;
        match class {
            Class::Audio => {
                self.budget_bits -= bits;
                Some(packet)
            }
            Class::Video { frame, keyframe } => {
                if keyframe {
                    self.keyframes.push(frame);
                    self.broken = false;
                } else if self.broken && !self.keyframes.contains(&frame) && Some(frame) != self.in_progress {
                    self.dropped_video += 1;
                    return None;
                }
                self.video.push_back((packet, bits, frame, now));
                None
            }
        }
    }

    /// The video packets that may leave at `now`, in order.
    pub fn release(&mut self, now: Instant) -> Vec<P> {
        self.refill(now);
        self.drop_stale_video(now);
        let mut out = Vec::new();
        while let Some((_, bits, _, _)) = self.video.front() {
            // A packet larger than the burst goes once the budget is full.
            if self.budget_bits < bits.min(self.burst_bits()) {
                break;
            }
            self.budget_bits -= *bits;
            if let Some((p, _, frame, _)) = self.video.pop_front() {
                if self.in_progress != Some(frame) {
                    // The previous frame has left whole. The frames that waited behind a
                    // keyframe start their wait now: dropping them would break the chain the
                    // keyframe just repaired (and ask for another keyframe, forever).
                    let done = self.in_progress;
                    if done.is_some_and(|d| self.keyframes.contains(&d)) {
                        for v in self.video.iter_mut() {
                            v.3 = now;
                        }
                    }
                    self.keyframes.retain(|k| Some(*k) != done);
                }
                self.in_progress = Some(frame);
                out.push(p);
            }
        }
        out
    }

    /// When [`Pacer::release`] should run next (`None`: nothing queued).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let (_, bits, _, _) = self.video.front()?;
        let last = self.last_refill?;
        let missing = bits.min(self.burst_bits()) - self.budget_bits;
        let wait = Duration::from_secs_f64((missing / self.rate_bps).max(0.0));
        Some(last + wait)
    }

    /// Video has stopped (suspended, camera off): what is queued is dropped, keyframes and the
    /// frame leaving too. A keyframe queued at a thin link's rate would otherwise hold the
    /// bottleneck, and the audio behind it, for seconds after the last frame mattered.
    pub fn drop_video(&mut self) {
        self.dropped_video += self.video.len() as u64;
        self.video.clear();
        self.keyframes.clear();
        self.in_progress = None;
        self.broken = false;
    }

    /// Video packets dropped because they waited too long, so far.
    pub fn dropped_video(&self) -> u64 {
        self.dropped_video
    }

    /// Once a delta frame has waited too long, drops every queued frame that has not started
    /// to leave and is not a keyframe (each whole): the ones after a dropped frame could not be
    /// decoded anyway. Later delta frames are dropped on arrival until a keyframe comes.
    fn drop_stale_video(&mut self, now: Instant) {
        let in_progress = self.in_progress;
        // Nothing waits too long behind a keyframe: see `release`.
        if in_progress.is_some_and(|f| self.keyframes.contains(&f)) {
            return;
        }
        let keyframes = self.keyframes.clone();
        let keep = move |frame: &(u32, u32)| Some(*frame) == in_progress || keyframes.contains(frame);
        if !self.video.iter().any(|v| !keep(&v.2) && now.saturating_duration_since(v.3) > MAX_VIDEO_DELAY) {
            return;
        }
        let before = self.video.len();
        self.video.retain(|v| keep(&v.2));
        self.dropped_video += (before - self.video.len()) as u64;
        // A keyframe still queued after the dropped frames repairs the chain.
        self.broken = !self.video.iter().any(|v| Some(v.2) != in_progress && self.keyframes.contains(&v.2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the pacer every millisecond for `ms`; `feed(t)` gives the packets queued at `t`.
    /// Returns (packet, release time in ms).
    fn run(
        pacer: &mut Pacer<(char, u32)>,
        t0: Instant,
        ms: u64,
        feed: impl Fn(u64) -> Vec<((char, u32), usize, Class)>,
    ) -> Vec<((char, u32), u64)> {
        let mut out = Vec::new();
        for t in 0..ms {
            let now = t0 + Duration::from_millis(t);
            for (p, bytes, class) in feed(t) {
                out.extend(pacer.push(now, p, bytes, class).map(|p| (p, t)));
            }
            out.extend(pacer.release(now).into_iter().map(|p| (p, t)));
        }
        out
    }

    /// 20 ms audio packets of 100 bytes and 30 fps video frames of `frame_bytes` in 1000-byte packets.
    fn call_traffic(frame_bytes: usize) -> impl Fn(u64) -> Vec<((char, u32), usize, Class)> {
        move |t| {
            let mut v = Vec::new();
            if t % 20 == 0 {
                v.push((('a', t as u32), 100, Class::Audio));
            }
            if t % 33 == 0 {
                // A keyframe every 15 frames (as after the drops the encoder is told of).
                let keyframe = (t / 33) % 15 == 0;
                for i in 0..frame_bytes.div_ceil(1000) {
                    v.push((('v', t as u32 * 100 + i as u32), 1000, Class::Video { frame: (1, t as u32), keyframe }));
                }
            }
            v
        }
    }

    #[test]
    fn audio_never_waits_behind_video_even_far_over_the_rate() {
        // 300 kb/s of pacing, 2 Mb/s of video offered: audio leaves the moment it is queued.
        let mut p = Pacer::new(300_000.0);
        let t0 = Instant::now();
        let out = run(&mut p, t0, 5000, call_traffic(8000));
        let audio: Vec<_> = out.iter().filter(|(pkt, _)| pkt.0 == 'a').collect();
        assert_eq!(audio.len(), 250);
        assert!(audio.iter().all(|((_, queued), sent)| u64::from(*queued) == *sent));
    }

    #[test]
    fn video_delay_stays_bounded_by_dropping_stale_frames() {
        // 360 kb/s of video into 300 kb/s: without drops the queue would grow 70 ms every second.
        let mut p = Pacer::new(300_000.0);
        let t0 = Instant::now();
        let out = run(&mut p, t0, 5000, call_traffic(1500));
        let worst = out
            .iter()
            .filter(|(pkt, _)| pkt.0 == 'v')
            .map(|((_, id), sent)| sent - u64::from(id / 100))
            .max()
            .unwrap_or(0);
        // The bound, plus the time to send the one frame that had started (2 packets at 300 kb/s).
        assert!(worst <= MAX_VIDEO_DELAY.as_millis() as u64 + 60, "a video packet waited {worst} ms");
        assert!(p.dropped_video() > 0);
        // What does leave stays under the rate less the 40 kb/s of audio; the frames between a
        // drop and the next keyframe are not sent at all.
        let video_bits: usize = out.iter().filter(|(pkt, _)| pkt.0 == 'v').count() * 8000;
        let kbps = video_bits as f64 / 5.0 / 1000.0;
        assert!((100.0..=275.0).contains(&kbps), "video left at {kbps} kb/s");
    }

    #[test]
    fn frames_are_dropped_whole_and_a_started_frame_is_finished() {
        // 8-packet frames take 213 ms at 300 kb/s, longer than the delay bound: they still leave
        // whole (a keyframe must get through), and the ones queued behind them are dropped.
        let mut p = Pacer::new(300_000.0);
        let t0 = Instant::now();
        let out = run(&mut p, t0, 3000, call_traffic(8000));
        assert!(p.dropped_video() > 0);
        // Every frame that left at all left complete: 8 packets each.
        let mut per_frame = std::collections::BTreeMap::<u32, u32>::new();
        for ((kind, id), _) in &out {
            if *kind == 'v' {
                *per_frame.entry(id / 100).or_default() += 1;
            }
        }
        // The last frame may still be in flight at the end of the run.
        let last = per_frame.keys().last().copied();
        assert!(per_frame.iter().filter(|(f, _)| Some(**f) != last).all(|(_, n)| *n == 8), "{per_frame:?}");
    }

    #[test]
    fn a_keyframe_is_never_dropped_and_ends_the_broken_chain() {
        let mut p = Pacer::new(300_000.0);
        let t0 = Instant::now();
        let video = |frame, keyframe| Class::Video { frame: (1, frame), keyframe };
        // Frame 1 (10 packets, ~270 ms at this rate) holds the queue; frame 2 goes stale behind it.
        for i in 0..10 {
            assert!(p.push(t0, (1, i), 1000, video(1, false)).is_none());
        }
        assert!(p.push(t0, (2, 0), 1000, video(2, false)).is_none());
        let mut out = p.release(t0);
        let at = |ms| t0 + Duration::from_millis(ms);
        out.extend(p.release(at(200)));
        assert_eq!(p.dropped_video(), 1);
        // A delta frame after the drop cannot be decoded: dropped on arrival.
        assert!(p.push(at(200), (5, 0), 1000, video(5, false)).is_none());
        // A keyframe repairs the chain, and the delta frame after it goes out.
        assert!(p.push(at(210), (3, 0), 1000, video(3, true)).is_none());
        assert!(p.push(at(210), (4, 0), 1000, video(4, false)).is_none());
        for ms in (200..3000).step_by(5) {
            out.extend(p.release(at(ms)));
        }
        let frames: Vec<u32> = out.iter().map(|(f, _)| *f).collect();
        assert_eq!(frames.iter().filter(|f| **f == 1).count(), 10, "the started frame was not finished");
        assert!(!frames.contains(&2) && !frames.contains(&5), "undecodable frames left: {frames:?}");
        assert!(frames.contains(&3) && frames.contains(&4), "{frames:?}");
    }

    #[test]
    fn under_the_rate_nothing_is_dropped_or_delayed_much() {
        let mut p = Pacer::new(2_000_000.0);
        let t0 = Instant::now();
        let out = run(&mut p, t0, 3000, call_traffic(3000));
        assert_eq!(p.dropped_video(), 0);
        let worst = out.iter().filter(|(pkt, _)| pkt.0 == 'v').map(|((_, id), s)| s - u64::from(id / 100)).max();
        assert!(worst.unwrap_or(0) <= 20, "{worst:?}");
    }

    #[test]
    fn the_next_deadline_is_when_the_head_can_go() {
        let mut p: Pacer<u8> = Pacer::new(1_000_000.0);
        let t0 = Instant::now();
        assert_eq!(p.poll_timeout(), None);
        for id in 1..=4 {
            assert_eq!(p.push(t0, id, 1500, Class::Video { frame: (1, 1), keyframe: false }), None);
        }
        assert_eq!(p.release(t0).len(), 3);
        let next = p.poll_timeout().expect("a packet is queued");
        assert!(next > t0 && next <= t0 + Duration::from_millis(13), "{:?}", next - t0);
        assert_eq!(p.release(next), vec![4]);
    }

    #[test]
    fn stopping_video_drops_what_is_queued_keyframes_included() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(30_000.0);
        let keyframe = Class::Video { frame: (1, 1), keyframe: true };
        for i in 0..6 {
            assert!(pacer.push(t0, ('v', i), 1000, keyframe).is_none());
        }
        // At 30 kb/s the keyframe alone would hold the link for 1.6 s.
        assert!(!pacer.release(t0).is_empty());
        pacer.drop_video();
        let later =
            run(
                &mut pacer,
                t0,
                2000,
                |t| if t % 60 == 0 { vec![(('a', t as u32), 100, Class::Audio)] } else { vec![] },
            );
        assert!(later.iter().all(|((kind, _), _)| *kind == 'a'), "{later:?}");
        assert_eq!(pacer.poll_timeout(), None);
    }
}
