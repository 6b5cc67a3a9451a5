//! The end-of-call summary (`duet call --json` prints it as `{"event":"summary", ...}`).
//!
//! Pure bookkeeping: the driver reports what happened with timestamps; frame loss and
//! latency come from the frame numbers and capture times embedded in synthetic video.

use std::collections::BTreeSet;

use serde::Serialize;

/// The summary of one call side. Field names are a public contract.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CallSummary {
    /// The media path came up at least once.
    pub connected: bool,
    /// From `matched` to the first decoded remote video frame, in ms.
    pub time_to_first_frame_ms: Option<u64>,
    /// Remote video frames decoded.
    pub video_frames_decoded: u64,
    /// Remote frames missing between the first and last received frame number.
    pub video_frames_lost: u64,
    /// Capture-to-decoded latency, median, in ms (from embedded timestamps).
    pub latency_ms_p50: Option<f64>,
    /// Capture-to-decoded latency, 95th percentile, in ms.
    pub latency_ms_p95: Option<f64>,
    /// Remote audio frames decoded.
    pub audio_frames_decoded: u64,
    /// Chat messages sent.
    pub chat_sent: u64,
    /// Chat messages received.
    pub chat_received: u64,
    /// Bytes sent on the media transport.
    pub bytes_sent: u64,
    /// Bytes received on the media transport.
    pub bytes_received: u64,
    /// Width of the last decoded remote frame.
    pub video_width: Option<u32>,
    /// Height of the last decoded remote frame.
    pub video_height: Option<u32>,
    /// Our video frames handed to the network.
    pub video_frames_sent: u64,
    /// Our audio packets handed to the network.
    pub audio_frames_sent: u64,
    /// Times our sending rung changed (the first rung not counted).
    pub rung_changes: u64,
    /// Time our video was suspended (audio-only, for the network or by choice), ms.
    pub audio_only_ms: u64,
    /// Longest time between two decoded partner video frames while the partner was sending
    /// video, ms.
    pub longest_video_freeze_ms: Option<u64>,
    /// Longest time between two decoded partner audio frames, ms.
    pub longest_audio_gap_ms: Option<u64>,
    /// Mean transport send rate from connecting to the end of the call, kbit/s.
    pub mean_send_kbps: Option<f64>,
    /// Outages recovered from (media path or signaling; each also a `recovered` event).
    pub recoveries: u64,
    /// Longest time in a call with no decoded partner media at all (audio or video), ms.
    pub longest_media_gap_ms: Option<u64>,
    /// Signals of replaced peer connections that arrived late and were dropped.
    pub stale_signals_dropped: u64,
    /// Probe clusters measured (sent while our video was suspended for the network, and the
    /// climb after one that held).
    pub probes: u64,
    /// Of those, the ones the link carried nearly at their rate.
    pub probes_held: u64,
}

/// Accumulates a [`CallSummary`]. Times are microseconds on the caller's clock.
#[derive(Debug, Default)]
pub struct SummaryBuilder {
    summary: CallSummary,
    matched_at_us: Option<u64>,
    frame_numbers: BTreeSet<u64>,
    latencies_us: Vec<u64>,
    connected_at_us: Option<u64>,
    last_video_us: Option<u64>,
    last_audio_us: Option<u64>,
    /// The longest audio gap that ended since [`SummaryBuilder::take_audio_gap_ms`] was last called.
    audio_gap_since_taken_ms: Option<u64>,
    last_media_us: Option<u64>,
    audio_only_since_us: Option<u64>,
    last_bytes_us: Option<u64>,
}

impl SummaryBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// The server matched us with a partner at `now_us` (the first match counts).
    pub fn matched(&mut self, now_us: u64) {
        self.matched_at_us.get_or_insert(now_us);
        // The time between two partners is no gap in a call.
        self.last_media_us = None;
    }

    /// An outage was recovered from.
    pub fn recovered(&mut self) {
        self.summary.recoveries += 1;
    }

    /// A late signal of a replaced peer connection was dropped.
    pub fn stale_signal_dropped(&mut self) {
        self.summary.stale_signals_dropped += 1;
    }

    /// Any partner media decoded at `now_us`.
    fn media(&mut self, now_us: u64) {
        if let Some(last) = self.last_media_us.replace(now_us) {
            let gap = now_us.saturating_sub(last) / 1000;
            self.summary.longest_media_gap_ms = Some(self.summary.longest_media_gap_ms.unwrap_or(0).max(gap));
        }
    }

    /// The media path came up at `now_us`.
    pub fn connected(&mut self, now_us: u64) {
        self.summary.connected = true;
        self.connected_at_us.get_or_insert(now_us);
    }

    /// Our sending rung changed (not the first one).
    pub fn rung_changed(&mut self) {
        self.summary.rung_changes += 1;
    }

    /// A probe cluster was measured; `held`: the link carried it nearly at its rate.
    pub fn probed(&mut self, held: bool) {
        self.summary.probes += 1;
        self.summary.probes_held += u64::from(held);
    }

    /// Our video was suspended (`true`) or resumed at `now_us`.
    pub fn audio_only(&mut self, now_us: u64, on: bool) {
        match (on, self.audio_only_since_us) {
            (true, None) => self.audio_only_since_us = Some(now_us),
            (false, Some(since)) => {
                self.summary.audio_only_ms += now_us.saturating_sub(since) / 1000;
                self.audio_only_since_us = None;
            }
            _ => {}
        }
    }

    /// The partner stopped or started sending video: the time in between is no freeze.
    pub fn partner_video_paused(&mut self) {
        self.last_video_us = None;
    }

    /// A remote video frame was decoded at `now_us`; `marker` is its embedded
    /// (frame number, capture time in µs), if it carried one.
    pub fn video_frame(&mut self, now_us: u64, width: u32, height: u32, marker: Option<(u64, u64)>) {
        self.summary.video_frames_decoded += 1;
        self.media(now_us);
        self.summary.video_width = Some(width);
        self.summary.video_height = Some(height);
        if self.summary.time_to_first_frame_ms.is_none()
            && let Some(m) = self.matched_at_us
        {
            self.summary.time_to_first_frame_ms = Some(now_us.saturating_sub(m) / 1000);
        }
        if let Some(last) = self.last_video_us.replace(now_us) {
            let gap = now_us.saturating_sub(last) / 1000;
            self.summary.longest_video_freeze_ms = Some(self.summary.longest_video_freeze_ms.unwrap_or(0).max(gap));
        }
        if let Some((number, captured_us)) = marker {
            self.frame_numbers.insert(number);
            self.latencies_us.push(now_us.saturating_sub(captured_us));
        }
    }

    /// One of our video frames went to the network.
    pub fn video_frame_sent(&mut self) {
        self.summary.video_frames_sent += 1;
    }

    /// One of our audio packets went to the network.
    pub fn audio_frame_sent(&mut self) {
        self.summary.audio_frames_sent += 1;
    }

    /// A remote audio frame was decoded at `now_us`.
    pub fn audio_frame(&mut self, now_us: u64) {
        self.summary.audio_frames_decoded += 1;
        self.media(now_us);
        if let Some(last) = self.last_audio_us.replace(now_us) {
            let gap = now_us.saturating_sub(last) / 1000;
            self.summary.longest_audio_gap_ms = Some(self.summary.longest_audio_gap_ms.unwrap_or(0).max(gap));
            self.audio_gap_since_taken_ms = Some(self.audio_gap_since_taken_ms.unwrap_or(0).max(gap));
        }
    }

    /// The longest gap between two decoded audio frames that ended since the last call, ms
    /// (`None` if fewer than two frames were decoded since).
    pub fn take_audio_gap_ms(&mut self) -> Option<u64> {
        self.audio_gap_since_taken_ms.take()
    }

    /// A chat message was sent.
    pub fn chat_sent(&mut self) {
        self.summary.chat_sent += 1;
    }

    /// A chat message was received.
    pub fn chat_received(&mut self) {
        self.summary.chat_received += 1;
    }

    /// Transport byte counters (latest totals) at `now_us`. The counters start again with every
    /// peer connection, so totals only grow by what each connection adds.
    pub fn bytes(&mut self, now_us: u64, sent: u64, received: u64) {
        self.summary.bytes_sent = sent;
        self.summary.bytes_received = received;
        self.last_bytes_us = Some(now_us);
    }

    /// The summary as of `now_us`.
    pub fn summary_at(&self, now_us: u64) -> CallSummary {
        let mut s = self.summary();
        if let Some(since) = self.audio_only_since_us {
            s.audio_only_ms += now_us.saturating_sub(since) / 1000;
        }
        s
    }

    /// The summary so far.
    pub fn summary(&self) -> CallSummary {
        let mut s = self.summary.clone();
        if let (Some(from), Some(to)) = (self.connected_at_us, self.last_bytes_us) {
            let secs = to.saturating_sub(from) as f64 / 1e6;
            if secs >= 0.5 {
                s.mean_send_kbps = Some((s.bytes_sent as f64 * 8.0 / 1000.0 / secs * 10.0).round() / 10.0);
            }
        }
        if let (Some(first), Some(last)) = (self.frame_numbers.first(), self.frame_numbers.last()) {
            let span = last - first + 1;
            s.video_frames_lost = span - self.frame_numbers.len() as u64;
        }
        let mut lat = self.latencies_us.clone();
        lat.sort_unstable();
        s.latency_ms_p50 = percentile_ms(&lat, 0.50);
        s.latency_ms_p95 = percentile_ms(&lat, 0.95);
        s
    }
}

/// Nearest-rank percentile of sorted microsecond values, in milliseconds.
fn percentile_ms(sorted_us: &[u64], p: f64) -> Option<f64> {
    if sorted_us.is_empty() {
        return None;
    }
    let rank = ((p * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    Some(sorted_us[rank - 1] as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_frame_loss_and_latency() {
        let mut b = SummaryBuilder::new();
        b.matched(1_000_000);
        b.connected(1_050_000);
        // Frames 10..=19 with 13 and 17 missing, one duplicate; latency 20..=27 ms.
        let mut t = 1_150_000;
        for (i, n) in [10, 11, 12, 14, 15, 16, 18, 19, 19].into_iter().enumerate() {
            b.video_frame(t, 640, 360, Some((n, t - 20_000 - i as u64 * 1000)));
            t += 33_000;
        }
        b.audio_frame(1_200_000);
        b.audio_frame(1_220_000);
        b.audio_frame(1_400_000);
        b.bytes(3_050_000, 250_000, 1000);
        let s = b.summary();
        assert_eq!(s.time_to_first_frame_ms, Some(150));
        assert_eq!(s.video_frames_decoded, 9);
        assert_eq!(s.video_frames_lost, 2);
        assert_eq!(s.latency_ms_p50, Some(24.0));
        assert_eq!(s.latency_ms_p95, Some(28.0));
        assert_eq!((s.video_width, s.video_height), (Some(640), Some(360)));
        assert!(s.connected);
        assert_eq!(s.longest_audio_gap_ms, Some(180));
        assert_eq!(s.longest_video_freeze_ms, Some(33));
        assert_eq!(s.mean_send_kbps, Some(1000.0));
    }

    #[test]
    fn each_stats_interval_reports_the_longest_audio_gap_that_ended_in_it() {
        let mut b = SummaryBuilder::new();
        assert_eq!(b.take_audio_gap_ms(), None);
        for t in [1_000_000, 1_020_000, 1_320_000, 1_340_000] {
            b.audio_frame(t);
        }
        assert_eq!(b.take_audio_gap_ms(), Some(300));
        b.audio_frame(1_400_000);
        b.audio_frame(1_420_000);
        assert_eq!(b.take_audio_gap_ms(), Some(60));
        assert_eq!(b.take_audio_gap_ms(), None);
        assert_eq!(b.summary().longest_audio_gap_ms, Some(300));
    }

    #[test]
    fn audio_only_time_and_freezes_exclude_the_partners_pauses() {
        let mut b = SummaryBuilder::new();
        b.video_frame(0, 640, 360, None);
        b.partner_video_paused();
        b.video_frame(5_000_000, 640, 360, None);
        b.video_frame(5_100_000, 640, 360, None);
        b.audio_only(1_000_000, true);
        b.audio_only(2_000_000, true);
        b.audio_only(3_500_000, false);
        b.audio_only(4_000_000, true);
        b.rung_changed();
        let s = b.summary_at(4_500_000);
        assert_eq!(s.longest_video_freeze_ms, Some(100));
        assert_eq!(s.audio_only_ms, 3000);
        assert_eq!(s.rung_changes, 1);
    }

    #[test]
    fn field_names_are_the_public_contract() {
        let v = serde_json::to_value(SummaryBuilder::new().summary()).unwrap();
        for key in [
            "connected",
            "time_to_first_frame_ms",
            "video_frames_decoded",
            "video_frames_lost",
            "latency_ms_p50",
            "latency_ms_p95",
            "audio_frames_decoded",
            "chat_sent",
            "chat_received",
            "bytes_sent",
            "bytes_received",
            "rung_changes",
            "audio_only_ms",
            "longest_video_freeze_ms",
            "longest_audio_gap_ms",
            "mean_send_kbps",
            "recoveries",
            "longest_media_gap_ms",
            "stale_signals_dropped",
            "probes",
            "probes_held",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
    }

    #[test]
    fn the_media_gap_spans_audio_and_video_and_not_the_time_between_partners() {
        let mut b = SummaryBuilder::new();
        b.matched(0);
        b.audio_frame(1_000_000);
        b.video_frame(1_200_000, 64, 48, None);
        b.audio_frame(1_300_000);
        // Nothing at all for 2.5 s: the outage.
        b.video_frame(3_800_000, 64, 48, None);
        b.audio_frame(3_820_000);
        // A new partner 10 s later.
        b.matched(13_000_000);
        b.audio_frame(14_000_000);
        b.audio_frame(14_020_000);
        b.recovered();
        b.stale_signal_dropped();
        let s = b.summary();
        assert_eq!(s.longest_media_gap_ms, Some(2500));
        assert_eq!((s.recoveries, s.stale_signals_dropped), (1, 1));
    }

    #[test]
    fn no_frames_means_no_numbers_not_zeroes() {
        let s = SummaryBuilder::new().summary();
        assert_eq!((s.time_to_first_frame_ms, s.latency_ms_p50, s.video_frames_lost), (None, None, 0));
    }
}
