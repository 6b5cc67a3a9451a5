//! Decoded video to the page: I420 frames as raw bytes over a `tauri::ipc::Channel`.
//!
//! Each stream (the partner's video, the local preview) keeps only the newest frame. A frame is
//! sent when the page has acknowledged the previous one ([`VideoBridge::ack`]), so a slow page
//! gets fewer, fresher frames instead of a growing queue; frames replaced before they were sent
//! are counted as dropped. The page reports each canvas's size on screen
//! ([`VideoBridge::set_viewport`]); larger frames are scaled down to it before they cross the
//! IPC, so a small window costs less. The local preview (a corner of the window) is at most
//! 480x270 and is only produced when the page is ready for it.
//!
//! Wire format (little-endian): `stream u8, 0u8 x3, width u32, height u32, seq u32`, then the Y,
//! U and V planes.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use duet_media::{MediaError, VideoFormat, VideoFrame, VideoSink, VideoSource, scale_i420};
use serde::Serialize;

/// Bytes before the planes.
pub const HEADER_BYTES: usize = 16;
/// The preview is scaled to fit this box.
pub const PREVIEW_MAX: (u32, u32) = (480, 270);
/// A frame the page has not acknowledged within this time is taken as lost (e.g. a reload).
const ACK_TIMEOUT: Duration = Duration::from_millis(500);

/// Which picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// The partner's video.
    Remote = 0,
    /// The local camera preview.
    Local = 1,
}

/// Where packed frames go (the page's channel; a recorder in tests).
pub trait FrameOut: Send + Sync {
    /// Delivers one packed frame; false if the receiver is gone.
    fn deliver(&self, packet: Vec<u8>) -> bool;
}

impl FrameOut for tauri::ipc::Channel {
    fn deliver(&self, packet: Vec<u8>) -> bool {
        self.send(tauri::ipc::InvokeResponseBody::Raw(packet)).is_ok()
    }
}

/// Frame counters of one stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StreamCounters {
    /// Frames handed to the bridge.
    pub offered: u64,
    /// Frames sent to the page.
    pub sent: u64,
    /// Frames replaced by a newer one before they could be sent.
    pub dropped: u64,
}

#[derive(Default)]
struct StreamState {
    out: Option<Arc<dyn FrameOut>>,
    viewport: Option<(u32, u32)>,
    closed: bool,
    pending: Option<VideoFrame>,
    in_flight_since: Option<Instant>,
    seq: u32,
    counters: StreamCounters,
}

impl StreamState {
    fn ready(&self, now: Instant) -> bool {
        self.out.is_some() && self.in_flight_since.is_none_or(|t| now.duration_since(t) >= ACK_TIMEOUT)
    }
}

/// The bridge between decoder/capture threads and the page.
#[derive(Clone, Default)]
pub struct VideoBridge {
    streams: Arc<[Mutex<StreamState>; 2]>,
}

impl VideoBridge {
    /// A bridge with no page attached.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self, stream: Stream) -> MutexGuard<'_, StreamState> {
        self.streams[stream as usize].lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Attaches the page's channel for `stream` (replacing an earlier one, e.g. after a reload).
    pub fn attach(&self, stream: Stream, out: Arc<dyn FrameOut>) {
        let mut s = self.lock(stream);
        s.out = Some(out);
        s.in_flight_since = None;
        self.pump(stream, s);
    }

    /// The page has drawn (or discarded) the last frame of `stream`: send the newest one.
    pub fn ack(&self, stream: Stream) {
        let mut s = self.lock(stream);
        s.in_flight_since = None;
        self.pump(stream, s);
    }

    /// Hands over a frame; it replaces any frame not yet sent. Ignored while closed.
    pub fn offer(&self, stream: Stream, frame: VideoFrame) {
        let mut s = self.lock(stream);
        if s.closed {
            return;
        }
        s.counters.offered += 1;
        if s.pending.replace(frame).is_some() {
            s.counters.dropped += 1;
        }
        self.pump(stream, s);
    }

    /// True when a frame offered now would be sent at once (so producing one is worth it).
    pub fn wants(&self, stream: Stream) -> bool {
        let s = self.lock(stream);
        !s.closed && s.ready(Instant::now()) && s.pending.is_none()
    }

    /// The page shows `stream` in a `width` x `height` box (device pixels): frames larger than
    /// that are scaled down to fit before they are sent.
    pub fn set_viewport(&self, stream: Stream, width: u32, height: u32) {
        let clamp = |v: u32| v.clamp(16, 8192);
        self.lock(stream).viewport = Some((clamp(width), clamp(height)));
    }

    /// The box the preview is scaled to: [`PREVIEW_MAX`], or the preview's box if smaller.
    fn preview_box(&self) -> (u32, u32) {
        match self.lock(Stream::Local).viewport {
            Some((w, h)) => (w.min(PREVIEW_MAX.0), h.min(PREVIEW_MAX.1)),
            None => PREVIEW_MAX,
        }
    }

    /// Counters of `stream`.
    pub fn counters(&self, stream: Stream) -> StreamCounters {
        self.lock(stream).counters
    }

    /// Clears what the page shows no longer (a call ended): pending frames are discarded.
    pub fn clear(&self, stream: Stream) {
        self.lock(stream).pending = None;
    }

    /// Stops `stream` (its source is going away): pending and late frames are discarded until
    /// [`VideoBridge::open`].
    pub fn close(&self, stream: Stream) {
        let mut s = self.lock(stream);
        s.closed = true;
        s.pending = None;
    }

    /// Accepts frames of `stream` again.
    pub fn open(&self, stream: Stream) {
        self.lock(stream).closed = false;
    }

    fn pump(&self, stream: Stream, mut s: MutexGuard<'_, StreamState>) {
        if !s.ready(Instant::now()) {
            return;
        }
        let (Some(frame), Some(out)) = (s.pending.take(), s.out.clone()) else { return };
        s.seq = s.seq.wrapping_add(1);
        let seq = s.seq;
        s.in_flight_since = Some(Instant::now());
        s.counters.sent += 1;
        let viewport = s.viewport;
        drop(s);
        let scaled = viewport.and_then(|v| fit_within(&frame, v));
        if !out.deliver(pack(stream, seq, scaled.as_ref().unwrap_or(&frame))) {
            let mut s = self.lock(stream);
            s.out = None;
            s.in_flight_since = None;
        }
    }

    /// A sink for decoded partner video.
    pub fn remote_sink(&self) -> RemoteSink {
        RemoteSink { bridge: self.clone() }
    }
}

/// Packs a frame for the page.
pub fn pack(stream: Stream, seq: u32, frame: &VideoFrame) -> Vec<u8> {
    let data = frame.data();
    let mut out = Vec::with_capacity(HEADER_BYTES + data.len());
    out.extend_from_slice(&[stream as u8, 0, 0, 0]);
    out.extend_from_slice(&frame.width().to_le_bytes());
    out.extend_from_slice(&frame.height().to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// Decoded partner video into the bridge.
pub struct RemoteSink {
    bridge: VideoBridge,
}

impl VideoSink for RemoteSink {
    fn render(&mut self, frame: VideoFrame) -> Result<(), MediaError> {
        self.bridge.offer(Stream::Remote, frame);
        Ok(())
    }
}

/// A video source that also feeds the local preview.
pub struct PreviewSource {
    inner: Box<dyn VideoSource>,
    bridge: VideoBridge,
}

impl PreviewSource {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn VideoSource>, bridge: VideoBridge) -> Self {
        Self { inner, bridge }
    }
}

/// `frame` scaled down to fit `max` (aspect kept, even sizes); `None` if it already fits (or
/// cannot be scaled: then the original is the best there is).
pub fn fit_within(frame: &VideoFrame, max: (u32, u32)) -> Option<VideoFrame> {
    let (w, h) = (frame.width(), frame.height());
    let scale = f64::min(f64::from(max.0) / f64::from(w), f64::from(max.1) / f64::from(h));
    if scale >= 1.0 {
        return None;
    }
    let even = |v: f64| ((v as u32) & !1).max(2);
    scale_i420(frame, even(f64::from(w) * scale), even(f64::from(h) * scale)).ok()
}

/// `frame` as the preview: scaled to fit `max`, or a copy if it already fits.
pub fn preview_of(frame: &VideoFrame, max: (u32, u32)) -> VideoFrame {
    fit_within(frame, max).unwrap_or_else(|| frame.clone())
}

impl VideoSource for PreviewSource {
    fn format(&self) -> VideoFormat {
        self.inner.format()
    }

    fn next_frame(&mut self) -> Result<Option<VideoFrame>, MediaError> {
        let frame = self.inner.next_frame()?;
        if let Some(f) = &frame
            && self.bridge.wants(Stream::Local)
        {
            self.bridge.offer(Stream::Local, preview_of(f, self.bridge.preview_box()));
        }
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Vec<u8>>>);

    impl FrameOut for Recorder {
        fn deliver(&self, packet: Vec<u8>) -> bool {
            self.0.lock().unwrap().push(packet);
            true
        }
    }

    impl Recorder {
        fn seqs(&self) -> Vec<u32> {
            self.0.lock().unwrap().iter().map(|p| u32::from_le_bytes(p[12..16].try_into().unwrap())).collect()
        }
    }

    fn frame(n: u8) -> VideoFrame {
        let mut f = VideoFrame::black(4, 2, u64::from(n)).unwrap();
        f.planes_mut().0[0] = n;
        f
    }

    #[test]
    fn packs_a_header_and_the_planes() {
        let f = frame(7);
        let p = pack(Stream::Local, 3, &f);
        assert_eq!(p.len(), HEADER_BYTES + 4 * 2 + 2 * 2); // Y 4x2, U and V 2x1 each
        assert_eq!(p[0], 1);
        assert_eq!(u32::from_le_bytes(p[4..8].try_into().unwrap()), 4);
        assert_eq!(u32::from_le_bytes(p[8..12].try_into().unwrap()), 2);
        assert_eq!(u32::from_le_bytes(p[12..16].try_into().unwrap()), 3);
        assert_eq!(&p[HEADER_BYTES..], f.data());
    }

    #[test]
    fn nothing_is_sent_before_a_page_attaches_and_only_the_newest_frame_then() {
        let bridge = VideoBridge::new();
        for n in 0..5 {
            bridge.offer(Stream::Remote, frame(n));
        }
        let rec = Arc::new(Recorder::default());
        bridge.attach(Stream::Remote, rec.clone());
        let sent = rec.0.lock().unwrap().clone();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0][HEADER_BYTES], 4, "the newest frame wins");
        assert_eq!(bridge.counters(Stream::Remote), StreamCounters { offered: 5, sent: 1, dropped: 4 });
    }

    #[test]
    fn one_frame_in_flight_until_the_page_acks() {
        let bridge = VideoBridge::new();
        let rec = Arc::new(Recorder::default());
        bridge.attach(Stream::Remote, rec.clone());
        bridge.offer(Stream::Remote, frame(1));
        bridge.offer(Stream::Remote, frame(2));
        bridge.offer(Stream::Remote, frame(3));
        assert_eq!(rec.seqs(), vec![1], "frames 2 and 3 wait for the ack; 2 is replaced by 3");
        assert!(!bridge.wants(Stream::Remote));
        bridge.ack(Stream::Remote);
        assert_eq!(rec.seqs(), vec![1, 2]);
        assert_eq!(rec.0.lock().unwrap()[1][HEADER_BYTES], 3);
        bridge.ack(Stream::Remote);
        assert!(bridge.wants(Stream::Remote));
        bridge.offer(Stream::Remote, frame(4));
        assert_eq!(rec.seqs(), vec![1, 2, 3]);
        assert_eq!(bridge.counters(Stream::Remote), StreamCounters { offered: 4, sent: 3, dropped: 1 });
    }

    #[test]
    fn a_lost_ack_does_not_stall_the_stream() {
        let bridge = VideoBridge::new();
        let rec = Arc::new(Recorder::default());
        bridge.attach(Stream::Local, rec.clone());
        bridge.offer(Stream::Local, frame(1));
        std::thread::sleep(ACK_TIMEOUT + Duration::from_millis(20));
        bridge.offer(Stream::Local, frame(2));
        assert_eq!(rec.seqs(), vec![1, 2]);
    }

    #[test]
    fn streams_are_independent() {
        let bridge = VideoBridge::new();
        let remote = Arc::new(Recorder::default());
        let local = Arc::new(Recorder::default());
        bridge.attach(Stream::Remote, remote.clone());
        bridge.attach(Stream::Local, local.clone());
        bridge.offer(Stream::Remote, frame(1));
        bridge.offer(Stream::Local, frame(2));
        assert_eq!(remote.0.lock().unwrap()[0][0], 0);
        assert_eq!(local.0.lock().unwrap()[0][0], 1);
    }

    #[test]
    fn the_preview_fits_the_box_and_keeps_the_aspect() {
        let f = VideoFrame::black(1280, 720, 0).unwrap();
        let p = preview_of(&f, PREVIEW_MAX);
        assert_eq!((p.width(), p.height()), (480, 270));
        let f = VideoFrame::black(320, 240, 0).unwrap();
        assert_eq!(preview_of(&f, PREVIEW_MAX).width(), 320);
        let f = VideoFrame::black(1920, 1440, 0).unwrap();
        let p = preview_of(&f, PREVIEW_MAX);
        assert_eq!((p.width(), p.height()), (360, 270));
    }

    #[test]
    fn frames_larger_than_the_canvas_are_scaled_down_before_the_ipc() {
        let bridge = VideoBridge::new();
        let rec = Arc::new(Recorder::default());
        bridge.attach(Stream::Remote, rec.clone());
        bridge.set_viewport(Stream::Remote, 780, 547);
        bridge.offer(Stream::Remote, VideoFrame::black(1280, 720, 0).unwrap());
        bridge.ack(Stream::Remote);
        // A frame that fits goes as it is.
        bridge.offer(Stream::Remote, VideoFrame::black(640, 360, 0).unwrap());
        let sizes: Vec<(u32, u32)> = rec
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|p| {
                let w = u32::from_le_bytes(p[4..8].try_into().unwrap());
                let h = u32::from_le_bytes(p[8..12].try_into().unwrap());
                assert_eq!(p.len(), HEADER_BYTES + VideoFrame::buffer_size(w, h).unwrap());
                (w, h)
            })
            .collect();
        assert_eq!(sizes, vec![(780, 438), (640, 360)]);
    }

    #[test]
    fn a_closed_stream_drops_late_frames_until_reopened() {
        let bridge = VideoBridge::new();
        let rec = Arc::new(Recorder::default());
        bridge.attach(Stream::Remote, rec.clone());
        bridge.close(Stream::Remote);
        bridge.offer(Stream::Remote, frame(1));
        assert!(!bridge.wants(Stream::Remote));
        assert!(rec.seqs().is_empty());
        bridge.open(Stream::Remote);
        bridge.offer(Stream::Remote, frame(2));
        assert_eq!(rec.seqs(), vec![1]);
    }

    #[test]
    fn the_preview_follows_its_box_on_the_page() {
        let bridge = VideoBridge::new();
        bridge.set_viewport(Stream::Local, 240, 135);
        assert_eq!(bridge.preview_box(), (240, 135));
        bridge.set_viewport(Stream::Local, 4000, 3000);
        assert_eq!(bridge.preview_box(), PREVIEW_MAX);
    }

    #[test]
    fn the_preview_source_only_scales_when_the_page_is_ready() {
        let bridge = VideoBridge::new();
        let clock = duet_media::MediaClock::new();
        let src = duet_media::SyntheticVideoSource::new(1280, 720, 30, clock).unwrap();
        let mut preview = PreviewSource::new(Box::new(src), bridge.clone());
        assert_eq!(preview.next_frame().unwrap().unwrap().width(), 1280);
        assert_eq!(bridge.counters(Stream::Local).offered, 0, "no page: no preview work");
        let rec = Arc::new(Recorder::default());
        bridge.attach(Stream::Local, rec.clone());
        preview.next_frame().unwrap();
        preview.next_frame().unwrap();
        assert_eq!(bridge.counters(Stream::Local), StreamCounters { offered: 1, sent: 1, dropped: 0 });
        let p = &rec.0.lock().unwrap()[0];
        assert_eq!(u32::from_le_bytes(p[4..8].try_into().unwrap()), 480);
    }
}
