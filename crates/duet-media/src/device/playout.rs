//! The speaker's jitter buffer: a lock-free single-producer single-consumer ring of samples.
//!
//! The producer is [`SpeakerSink::play`](crate::SpeakerSink) (the call engine's thread); the consumer is the
//! audio device's callback, which must never block. Slots are atomics, so the ring is safe Rust: the
//! producer stores samples then publishes the write position (release); the consumer reads the write position
//! (acquire), copies, then publishes its read position (release) for the producer to see free space.

use std::sync::atomic::{AtomicBool, AtomicI16, AtomicU64, AtomicUsize, Ordering};

/// Playback counters of a [`SpeakerSink`](crate::SpeakerSink).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PlayoutStats {
    /// Times the buffer ran dry and playback paused (silence) to re-fill to the target.
    pub underruns: u64,
    /// Samples discarded: arriving into a full buffer, or trimmed to bring latency back to the target.
    pub dropped_samples: u64,
    /// Samples queued right now (all channels).
    pub buffered_samples: u64,
}

pub(crate) struct PlayoutRing {
    slots: Box<[AtomicI16]>,
    channels: usize,
    /// Total samples ever written (wrapping).
    write: AtomicUsize,
    /// Total samples ever read or skipped (wrapping).
    read: AtomicUsize,
    /// Fill level (samples) at which playback starts or resumes.
    target: usize,
    /// Fill level above which the consumer trims back to `target`.
    max: usize,
    primed: AtomicBool,
    underruns: AtomicU64,
    dropped: AtomicU64,
}

impl PlayoutRing {
    /// A ring of `capacity` samples that starts playing at `target` and trims above `max` (all in samples,
    /// rounded down to whole frames of `channels`).
    pub(crate) fn new(capacity: usize, channels: usize, target: usize, max: usize) -> Self {
        let channels = channels.max(1);
        let whole = |n: usize| n / channels * channels;
        let capacity = whole(capacity.max(channels));
        Self {
            slots: (0..capacity).map(|_| AtomicI16::new(0)).collect(),
            channels,
            write: AtomicUsize::new(0),
            read: AtomicUsize::new(0),
            target: whole(target).min(capacity),
            max: whole(max).clamp(whole(target), capacity),
            primed: AtomicBool::new(false),
            underruns: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Producer: queues interleaved samples (whole frames); what does not fit is dropped and counted.
    pub(crate) fn push(&self, samples: &[i16]) {
        let write = self.write.load(Ordering::Relaxed);
        let read = self.read.load(Ordering::Acquire);
        let free = self.slots.len() - write.wrapping_sub(read);
        let count = samples.len().min(free) / self.channels * self.channels;
        for (i, &sample) in samples[..count].iter().enumerate() {
            self.slots[write.wrapping_add(i) % self.slots.len()].store(sample, Ordering::Relaxed);
        }
        self.write.store(write.wrapping_add(count), Ordering::Release);
        if count < samples.len() {
            self.dropped.fetch_add((samples.len() - count) as u64, Ordering::Relaxed);
        }
    }

    /// Consumer: fills `out` (whole frames) with queued samples, or silence while (re-)buffering.
    pub(crate) fn pull(&self, out: &mut [i16]) {
        let write = self.write.load(Ordering::Acquire);
        let mut read = self.read.load(Ordering::Relaxed);
        let mut available = write.wrapping_sub(read);
        if !self.primed.load(Ordering::Relaxed) {
            if available < self.target.max(1) {
                out.fill(0);
                return;
            }
            self.primed.store(true, Ordering::Relaxed);
        }
        if available > self.max {
            // Too much queued (the sender's clock runs fast, or a burst arrived): drop the oldest audio.
            let skip = available - self.target;
            read = read.wrapping_add(skip);
            available -= skip;
            self.dropped.fetch_add(skip as u64, Ordering::Relaxed);
        }
        let count = out.len().min(available) / self.channels * self.channels;
        for (i, slot) in out[..count].iter_mut().enumerate() {
            *slot = self.slots[read.wrapping_add(i) % self.slots.len()].load(Ordering::Relaxed);
        }
        out[count..].fill(0);
        self.read.store(read.wrapping_add(count), Ordering::Release);
        if count < out.len() {
            self.primed.store(false, Ordering::Relaxed);
            self.underruns.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Consumer, without a jitter target: moves up to `out.len()` queued samples (whole frames)
    /// into `out` and returns how many.
    pub(crate) fn take(&self, out: &mut [i16]) -> usize {
        let write = self.write.load(Ordering::Acquire);
        let read = self.read.load(Ordering::Relaxed);
        let count = out.len().min(write.wrapping_sub(read)) / self.channels * self.channels;
        for (i, slot) in out[..count].iter_mut().enumerate() {
            *slot = self.slots[read.wrapping_add(i) % self.slots.len()].load(Ordering::Relaxed);
        }
        self.read.store(read.wrapping_add(count), Ordering::Release);
        count
    }

    pub(crate) fn stats(&self) -> PlayoutStats {
        let buffered = self.write.load(Ordering::Acquire).wrapping_sub(self.read.load(Ordering::Acquire));
        PlayoutStats {
            underruns: self.underruns.load(Ordering::Relaxed),
            dropped_samples: self.dropped.load(Ordering::Relaxed),
            buffered_samples: buffered as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_the_target_then_plays_in_order() {
        let ring = PlayoutRing::new(100, 1, 10, 50);
        let mut out = [9i16; 4];
        ring.push(&[1, 2, 3, 4, 5]);
        ring.pull(&mut out);
        assert_eq!(out, [0; 4], "below target: silence");
        ring.push(&[6, 7, 8, 9, 10]);
        ring.pull(&mut out);
        assert_eq!(out, [1, 2, 3, 4]);
        ring.pull(&mut out);
        assert_eq!(out, [5, 6, 7, 8]);
        assert_eq!(ring.stats().buffered_samples, 2);
    }

    #[test]
    fn underrun_gives_silence_and_rebuffers() {
        let ring = PlayoutRing::new(100, 2, 4, 50);
        ring.push(&[1, 1, 2, 2]);
        let mut out = [9i16; 6];
        ring.pull(&mut out);
        assert_eq!(out, [1, 1, 2, 2, 0, 0]);
        assert_eq!(ring.stats().underruns, 1);
        ring.push(&[3, 3]);
        ring.pull(&mut out);
        assert_eq!(out, [0; 6], "re-buffering until the target is back");
        ring.push(&[4, 4]);
        ring.pull(&mut out[..4]);
        assert_eq!(&out[..4], &[3, 3, 4, 4]);
    }

    #[test]
    fn overflow_drops_and_excess_latency_is_trimmed() {
        let ring = PlayoutRing::new(8, 1, 2, 4);
        ring.push(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(ring.stats().dropped_samples, 2, "two did not fit");
        let mut out = [0i16; 2];
        ring.pull(&mut out);
        // 8 queued > max 4: trimmed to the newest 2 before playing.
        assert_eq!(out, [7, 8]);
        assert_eq!(ring.stats().dropped_samples, 8);
        // Wrap-around keeps order.
        for round in 0..20i16 {
            ring.push(&[round, round + 100]);
            ring.pull(&mut out);
            assert_eq!(out, [round, round + 100]);
        }
    }

    #[test]
    fn take_moves_what_is_queued_without_waiting_for_a_target() {
        let ring = PlayoutRing::new(8, 1, 6, 8);
        ring.push(&[1, 2, 3]);
        let mut out = [0i16; 5];
        assert_eq!(ring.take(&mut out), 3);
        assert_eq!(&out[..3], &[1, 2, 3]);
        assert_eq!(ring.take(&mut out), 0);
        ring.push(&[4, 5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(ring.take(&mut out), 5, "bounded by the output");
        assert_eq!(out, [4, 5, 6, 7, 8]);
    }

    #[test]
    fn producer_and_consumer_threads_agree() {
        let ring = std::sync::Arc::new(PlayoutRing::new(64, 1, 1, 64));
        let producer = {
            let ring = ring.clone();
            std::thread::spawn(move || {
                let mut next = 0i16;
                while next < 10_000 {
                    if ring.stats().buffered_samples < 60 {
                        let chunk: Vec<i16> = (next..next + 4).collect();
                        ring.push(&chunk);
                        next += 4;
                    } else {
                        std::thread::yield_now();
                    }
                }
            })
        };
        let mut expected = 0i16;
        let mut out = [0i16; 3];
        while expected < 9_996 {
            ring.pull(&mut out);
            for &s in &out {
                // Zeros are silence (re-buffering), except the first sample, which is 0 itself.
                if s != 0 || expected == 0 {
                    assert_eq!(s, expected);
                    expected += 1;
                }
            }
        }
        producer.join().unwrap();
    }
}
