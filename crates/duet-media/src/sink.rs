//! The sink traits, a null audio sink and a verifying video sink for tests and benchmarks.

use std::collections::HashSet;

use crate::{AudioFrame, MediaClock, MediaError, VideoFrame, read_marker};

/// A consumer of decoded video frames (the UI's renderer, a file writer, a test counter).
///
/// `render` takes the frame by value so a sink can hand the buffer on without copying. It must not block
/// for long: real-time callers drop frames rather than wait.
pub trait VideoSink: Send {
    /// Consumes one frame.
    fn render(&mut self, frame: VideoFrame) -> Result<(), MediaError>;
}

/// A consumer of decoded audio (speaker, file writer, null).
///
/// `play` queues the frame and returns at once; a device sink plays it out at its own pace.
pub trait AudioSink: Send {
    /// Queues one frame for playback.
    fn play(&mut self, frame: &AudioFrame) -> Result<(), MediaError>;
}

impl<T: VideoSink + ?Sized> VideoSink for Box<T> {
    fn render(&mut self, frame: VideoFrame) -> Result<(), MediaError> {
        (**self).render(frame)
    }
}

impl<T: AudioSink + ?Sized> AudioSink for Box<T> {
    fn play(&mut self, frame: &AudioFrame) -> Result<(), MediaError> {
        (**self).play(frame)
    }
}

/// An audio sink that discards everything: the fallback where there is no sound card.
#[derive(Debug, Default, Clone)]
pub struct NullAudioSink {
    frames: u64,
    samples_per_channel: u64,
}

impl NullAudioSink {
    /// A new sink.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Frames received so far.
    #[must_use]
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Samples per channel received so far.
    #[must_use]
    pub fn samples_per_channel(&self) -> u64 {
        self.samples_per_channel
    }
}

impl AudioSink for NullAudioSink {
    fn play(&mut self, frame: &AudioFrame) -> Result<(), MediaError> {
        self.frames += 1;
        self.samples_per_channel += frame.samples_per_channel() as u64;
        Ok(())
    }
}

/// Latency statistics in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencySummary {
    /// Smallest.
    pub min_us: u64,
    /// Median.
    pub p50_us: u64,
    /// 95th percentile.
    pub p95_us: u64,
    /// Largest.
    pub max_us: u64,
    /// Arithmetic mean.
    pub mean_us: u64,
}

impl LatencySummary {
    /// Summarises `samples` (any order); `None` if empty.
    #[must_use]
    pub fn from_samples(samples: &[u64]) -> Option<Self> {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let (&min_us, &max_us) = (sorted.first()?, sorted.last()?);
        // Nearest-rank percentiles.
        let at = |q: usize| sorted[(sorted.len() * q).div_ceil(100).saturating_sub(1)];
        let mean_us = (sorted.iter().map(|&s| u128::from(s)).sum::<u128>() / sorted.len() as u128) as u64;
        Some(Self { min_us, p50_us: at(50), p95_us: at(95), max_us, mean_us })
    }
}

/// What a [`MarkerCheckSink`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerReport {
    /// Frames rendered.
    pub frames: u64,
    /// Frames whose marker read correctly.
    pub markers: u64,
    /// Frames without a readable marker (damaged, or not from a synthetic source).
    pub unreadable: u64,
    /// Frames whose number had been seen before.
    pub duplicates: u64,
    /// Frames that arrived after a higher-numbered one.
    pub reordered: u64,
    /// Lowest frame number seen.
    pub first_frame: Option<u64>,
    /// Highest frame number seen.
    pub last_frame: Option<u64>,
    /// Frame numbers between the first and the last that never arrived.
    pub lost: u64,
    /// Capture-to-render latency (the render-time clock reading minus the marker's timestamp).
    pub latency: Option<LatencySummary>,
}

/// A video sink that reads every frame's [`Marker`](crate::Marker) and keeps count: frames, unreadable
/// markers, lost, duplicated and reordered frame numbers, and capture-to-render latency on a clock shared with
/// the sender (the same [`MediaClock`], or [`MediaClock::unix_aligned`] on both sides of one host).
#[derive(Debug)]
pub struct MarkerCheckSink {
    clock: MediaClock,
    frames: u64,
    unreadable: u64,
    duplicates: u64,
    reordered: u64,
    seen: HashSet<u64>,
    first: Option<u64>,
    last: Option<u64>,
    latencies: Vec<u64>,
}

impl MarkerCheckSink {
    /// A sink measuring latency against `clock`.
    #[must_use]
    pub fn new(clock: MediaClock) -> Self {
        Self {
            clock,
            frames: 0,
            unreadable: 0,
            duplicates: 0,
            reordered: 0,
            seen: HashSet::new(),
            first: None,
            last: None,
            latencies: Vec::new(),
        }
    }

    /// The counts so far.
    #[must_use]
    pub fn report(&self) -> MarkerReport {
        let span = match (self.first, self.last) {
            (Some(first), Some(last)) => last - first + 1,
            _ => 0,
        };
        MarkerReport {
            frames: self.frames,
            markers: self.frames - self.unreadable,
            unreadable: self.unreadable,
            duplicates: self.duplicates,
            reordered: self.reordered,
            first_frame: self.first,
            last_frame: self.last,
            lost: span - self.seen.len() as u64,
            latency: LatencySummary::from_samples(&self.latencies),
        }
    }

    /// The frame numbers between the first and the last seen that never arrived, in order.
    #[must_use]
    pub fn lost_frame_numbers(&self) -> Vec<u64> {
        match (self.first, self.last) {
            (Some(first), Some(last)) => (first..=last).filter(|n| !self.seen.contains(n)).collect(),
            _ => Vec::new(),
        }
    }
}

impl VideoSink for MarkerCheckSink {
    fn render(&mut self, frame: VideoFrame) -> Result<(), MediaError> {
        let now = self.clock.now_us();
        self.frames += 1;
        let Some(marker) = read_marker(&frame) else {
            self.unreadable += 1;
            return Ok(());
        };
        let number = marker.frame_number;
        if !self.seen.insert(number) {
            self.duplicates += 1;
            return Ok(());
        }
        if self.last.is_some_and(|last| number < last) {
            self.reordered += 1;
        }
        self.first = Some(self.first.map_or(number, |first| first.min(number)));
        self.last = Some(self.last.map_or(number, |last| last.max(number)));
        self.latencies.push(now.saturating_sub(marker.timestamp_us));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Marker, write_marker};

    fn frame(number: u64, timestamp_us: u64) -> VideoFrame {
        let mut frame = VideoFrame::black(320, 180, 0).unwrap();
        write_marker(&mut frame, Marker { frame_number: number, timestamp_us }).unwrap();
        frame
    }

    #[test]
    fn counts_losses_duplicates_reordering_and_latency() {
        let clock = MediaClock::new();
        let mut sink = MarkerCheckSink::new(clock);
        for n in [3, 4, 6, 5, 5, 9] {
            sink.render(frame(n, 0)).unwrap();
        }
        sink.render(VideoFrame::black(320, 180, 0).unwrap()).unwrap();
        let report = sink.report();
        assert_eq!((report.frames, report.markers, report.unreadable), (7, 6, 1));
        assert_eq!((report.duplicates, report.reordered, report.lost), (1, 1, 2));
        assert_eq!((report.first_frame, report.last_frame), (Some(3), Some(9)));
        assert_eq!(sink.lost_frame_numbers(), [7, 8]);
        let latency = report.latency.unwrap();
        assert!(latency.min_us <= latency.p50_us && latency.p95_us <= latency.max_us);
    }

    #[test]
    fn latency_summary_percentiles() {
        let samples: Vec<u64> = (1..=100).rev().collect();
        let s = LatencySummary::from_samples(&samples).unwrap();
        assert_eq!((s.min_us, s.p50_us, s.p95_us, s.max_us, s.mean_us), (1, 50, 95, 100, 50));
        assert_eq!(LatencySummary::from_samples(&[]), None);
        let mut null = NullAudioSink::new();
        null.play(&AudioFrame::silence(48_000, 2, 480, 0).unwrap()).unwrap();
        assert_eq!((null.frames(), null.samples_per_channel()), (1, 480));
    }
}
