//! The media pipeline around a peer connection: capture + encode threads on the way out,
//! decode + render/play threads on the way in.
//!
//! libvpx contexts are not `Send`, and encoding must never stall the async driver, so each
//! codec lives on its own OS thread. Threads talk to the driver over channels; every queue
//! is bounded and drops video (never audio) when full, so a slow machine loses frames
//! instead of building latency. Reports to the driver are dropped when it is
//! [`RECEIVED_QUEUE`] reports behind.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use duet_media::{
    AudioFrame, AudioSink, AudioSource, FrameDuration, MediaClock, OpusConfig, OpusDecoder, OpusEncoder, VideoFrame,
    VideoSink, VideoSource, Vp8Config, Vp8Decoder, Vp8Encoder, read_marker, scale_i420,
};
use tokio::sync::mpsc::{self, error::TrySendError};
use tracing::{debug, info, warn};

use crate::jitter::{AudioJitterBuffer, Playout};
use crate::quality::AudioSettings;
use crate::quality::keyframe::{KEYFRAME_MIN_INTERVAL, KeyframeThrottle};

/// Encoded video frames waiting for the network, at most (older ones are dropped).
pub const VIDEO_OUT_QUEUE: usize = 4;
/// Encoded frames waiting for the decoder, at most.
const VIDEO_IN_QUEUE: usize = 8;
/// Reports from the receive threads waiting for the driver, at most.
pub const RECEIVED_QUEUE: usize = 256;

/// An encoded VP8 frame on its way to the peer.
#[derive(Debug)]
pub struct OutgoingVideo {
    /// The VP8 bitstream.
    pub data: Bytes,
    /// When the raw frame was captured.
    pub captured: Instant,
    /// Frame duration (for the RTP timestamp).
    pub duration: Duration,
}

/// An Opus packet on its way to the peer.
#[derive(Debug)]
pub struct OutgoingAudio {
    /// The packet.
    pub data: Bytes,
    /// When its audio was captured.
    pub captured: Instant,
    /// Its duration.
    pub duration: Duration,
}

/// What the receive side reports to the driver.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// A video frame was decoded at `now_us` (media clock); `marker` is its embedded
    /// (frame number, capture time), if any.
    Video {
        /// Decode time on the media clock.
        now_us: u64,
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// Embedded marker.
        marker: Option<(u64, u64)>,
    },
    /// Decoding cannot continue without a keyframe.
    NeedKeyframe,
    /// An audio frame was decoded and played.
    Audio,
}

/// A codec thread and the channel that feeds it. Dropping it closes the channel, which ends
/// the thread's loop, and joins the thread.
struct Worker<T> {
    input: Option<T>,
    thread: Option<JoinHandle<()>>,
}

impl<T> Worker<T> {
    fn spawn(name: &str, input: T, body: impl FnOnce() + Send + 'static) -> Result<Self, duet_media::MediaError> {
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(body)
            .map_err(|e| duet_media::MediaError::InvalidArgument(format!("cannot start thread {name}: {e}")))?;
        Ok(Self { input: Some(input), thread: Some(thread) })
    }

    fn input(&self) -> Option<&T> {
        self.input.as_ref()
    }
}

impl<T> Drop for Worker<T> {
    fn drop(&mut self) {
        self.input = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Video sending settings that change during a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoLimits {
    /// Largest width to send (frames are scaled down, keeping the aspect ratio).
    pub max_width: u32,
    /// Largest height to send.
    pub max_height: u32,
    /// Bitrate cap in kbit/s (the congestion estimate may lower it further).
    pub max_kbps: u32,
    /// Frames per second at most (frames of a faster source are skipped evenly).
    pub max_fps: u32,
}

impl From<crate::quality::Rung> for VideoLimits {
    fn from(r: crate::quality::Rung) -> Self {
        Self { max_width: r.width, max_height: r.height, max_kbps: r.max_kbps, max_fps: r.fps }
    }
}

enum VideoControl {
    Bitrate(u32),
    Limits(VideoLimits),
    Keyframe,
    Enabled(bool),
}

/// The capture + VP8 encode thread.
pub struct VideoSender {
    worker: Worker<std_mpsc::Sender<VideoControl>>,
    counters: Arc<VideoCounters>,
}

/// What the video thread has done so far.
#[derive(Debug, Default)]
pub struct VideoCounters {
    /// Frames encoded.
    pub encoded: AtomicU64,
    /// Keyframes among them.
    pub keyframes: AtomicU64,
    /// Encoded frames dropped because the network queue was full.
    pub dropped: AtomicU64,
}

impl VideoSender {
    /// Starts capturing from `source` (paced to its frame rate if `paced`; a camera paces
    /// itself) and encoding; frames arrive on `out`.
    pub fn start(
        source: Box<dyn VideoSource>,
        paced: bool,
        limits: VideoLimits,
        out: mpsc::Sender<OutgoingVideo>,
    ) -> Result<Self, duet_media::MediaError> {
        let (control, rx) = std_mpsc::channel();
        let format = source.format();
        let (w, h) = fit(format.width, format.height, limits);
        let fps = (format.frame_rate.as_f64().round().max(1.0) as u32).min(limits.max_fps.max(1));
        let encoder = Vp8Config::new(w, h, fps, limits.max_kbps.min(600));
        // Validate the settings here, where the error can still be reported.
        drop(Vp8Encoder::new(encoder.clone())?);
        let counters = Arc::new(VideoCounters::default());
        let thread_counters = counters.clone();
        let worker = Worker::spawn("duet-video-send", control, move || {
            video_send_loop(source, paced, encoder, limits, rx, out, &thread_counters)
        })?;
        Ok(Self { worker, counters })
    }

    /// Frames encoded and dropped so far.
    pub fn counters(&self) -> (u64, u64) {
        (self.counters.encoded.load(Ordering::Relaxed), self.counters.dropped.load(Ordering::Relaxed))
    }

    /// Keyframes encoded so far.
    pub fn keyframes(&self) -> u64 {
        self.counters.keyframes.load(Ordering::Relaxed)
    }

    /// Sets the encoder's target bitrate (kbit/s), within the limits.
    pub fn set_bitrate(&self, kbps: u32) {
        self.control(VideoControl::Bitrate(kbps));
    }

    /// Changes resolution, frame rate and bitrate caps (a ladder rung). Only a new resolution
    /// makes a keyframe.
    pub fn set_limits(&self, limits: VideoLimits) {
        self.control(VideoControl::Limits(limits));
    }

    /// Makes a keyframe: at once, or when the last forced one is [`KEYFRAME_MIN_INTERVAL`] old
    /// (requests in between are one).
    pub fn request_keyframe(&self) {
        self.control(VideoControl::Keyframe);
    }

    /// Turns sending on or off (camera off, audio-only).
    pub fn set_enabled(&self, on: bool) {
        self.control(VideoControl::Enabled(on));
    }

    fn control(&self, c: VideoControl) {
        if let Some(tx) = self.worker.input() {
            let _ = tx.send(c);
        }
    }
}

/// The largest size within `limits` with the source's aspect ratio (even dimensions).
fn fit(width: u32, height: u32, limits: VideoLimits) -> (u32, u32) {
    let scale = (limits.max_width as f64 / width as f64).min(limits.max_height as f64 / height as f64).min(1.0);
    let even = |v: f64| ((v.round() as u32) & !1).max(2);
    (even(width as f64 * scale), even(height as f64 * scale))
}

fn video_send_loop(
    mut source: Box<dyn VideoSource>,
    paced: bool,
    mut config: Vp8Config,
    mut limits: VideoLimits,
    control: std_mpsc::Receiver<VideoControl>,
    out: mpsc::Sender<OutgoingVideo>,
    counters: &VideoCounters,
) {
    let mut encoder = match Vp8Encoder::new(config.clone()) {
        Ok(e) => e,
        Err(e) => {
            warn!(error = %e, "video encoder failed to start");
            return;
        }
    };
    let format = source.format();
    let interval = format.frame_rate.frame_interval();
    let mut next_at = Instant::now();
    let mut enabled = true;
    let mut target_kbps = config.bitrate_kbps;
    // The capture time of the last frame sent (frame-rate decimation and RTP durations).
    let mut last_sent: Option<Instant> = None;
    // Keyframe requests (the partner's PLIs, our pacer's drops) are served at most once per
    // KEYFRAME_MIN_INTERVAL: a burst of them must not turn the encoder into a keyframe source.
    let mut keyframe_pending = false;
    let mut keyframe_throttle = KeyframeThrottle::new(KEYFRAME_MIN_INTERVAL);
    loop {
        loop {
            match control.try_recv() {
                Ok(VideoControl::Bitrate(kbps)) => target_kbps = kbps,
                Ok(VideoControl::Limits(l)) => limits = l,
                Ok(VideoControl::Keyframe) => keyframe_pending = true,
                Ok(VideoControl::Enabled(on)) => {
                    if on && !enabled {
                        encoder.request_keyframe();
                    }
                    enabled = on;
                }
                Err(std_mpsc::TryRecvError::Empty) => break,
                Err(std_mpsc::TryRecvError::Disconnected) => return,
            }
        }
        let kbps = target_kbps.clamp(50, limits.max_kbps.max(50));
        if kbps != config.bitrate_kbps {
            config.bitrate_kbps = kbps;
            if let Err(e) = encoder.set_bitrate(kbps) {
                warn!(error = %e, "bitrate change refused");
            }
        }
        if paced {
            let now = Instant::now();
            if next_at > now {
                std::thread::sleep(next_at - now);
            } else if now - next_at > interval * 4 {
                next_at = now;
            }
            next_at += interval;
        }
        let frame = match source.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => {
                info!("video source ended");
                return;
            }
            Err(e) => {
                warn!(error = %e, "video source failed");
                return;
            }
        };
        if !enabled {
            last_sent = None;
            continue;
        }
        let captured = Instant::now();
        if keyframe_pending && keyframe_throttle.allow(captured) {
            encoder.request_keyframe();
            keyframe_pending = false;
        }
        // Skip frames to stay at the rung's frame rate (a 30 fps source at 15 fps: every other).
        let min_gap = Duration::from_secs_f64(0.9 / f64::from(limits.max_fps.max(1)));
        if last_sent.is_some_and(|t| captured.duration_since(t) < min_gap) {
            continue;
        }
        let duration = last_sent.map_or(interval, |t| captured.duration_since(t).min(interval * 8));
        last_sent = Some(captured);
        let (w, h) = fit(frame.width(), frame.height(), limits);
        let frame = if (w, h) != (frame.width(), frame.height()) {
            match scale_i420(&frame, w, h) {
                Ok(f) => f,
                Err(e) => {
                    warn!(error = %e, "scaling failed");
                    continue;
                }
            }
        } else {
            frame
        };
        match encoder.encode(&frame) {
            Ok(Some(encoded)) => {
                counters.encoded.fetch_add(1, Ordering::Relaxed);
                if encoded.keyframe {
                    counters.keyframes.fetch_add(1, Ordering::Relaxed);
                }
                let item = OutgoingVideo { data: Bytes::from(encoded.data), captured, duration };
                if out.try_send(item).is_err() {
                    if out.is_closed() {
                        return;
                    }
                    let dropped = counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    // The next frame must be decodable on its own.
                    encoder.request_keyframe();
                    debug!(dropped, "network queue full; video frame dropped");
                }
            }
            Ok(None) => {}
            Err(e) => warn!(error = %e, "encode failed"),
        }
    }
}

enum AudioControl {
    Muted(bool),
    Settings(AudioSettings),
}

/// The capture + Opus encode thread.
pub struct AudioSender {
    worker: Worker<std_mpsc::Sender<AudioControl>>,
    /// Set when the sender is dropped: the thread stops waiting for room in a full queue (its
    /// reader may be the very task dropping it, which then joins the thread).
    stop: Arc<AtomicBool>,
}

impl Drop for AudioSender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl AudioSender {
    /// Starts capturing from `source` (paced if `paced`) and encoding 20 ms Opus packets.
    pub fn start(
        source: Box<dyn AudioSource>,
        paced: bool,
        out: mpsc::Sender<OutgoingAudio>,
    ) -> Result<Self, duet_media::MediaError> {
        let channels = source.format().channels;
        let encoder = OpusEncoder::new(OpusConfig { channels, ..OpusConfig::default() })?;
        let (muted, rx) = std_mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let worker = Worker::spawn("duet-audio-send", muted, move || {
            audio_send_loop(source, paced, encoder, rx, out, &stopped)
        })?;
        Ok(Self { worker, stop })
    }

    /// Mutes (sends silence) or unmutes.
    pub fn set_muted(&self, muted: bool) {
        self.control(AudioControl::Muted(muted));
    }

    /// Applies bitrate, FEC, expected loss and packet duration from the next packet on.
    pub fn set_settings(&self, settings: AudioSettings) {
        self.control(AudioControl::Settings(settings));
    }

    fn control(&self, c: AudioControl) {
        if let Some(tx) = self.worker.input() {
            let _ = tx.send(c);
        }
    }
}

fn apply_audio_settings(encoder: &mut OpusEncoder, s: AudioSettings) -> Result<(), duet_media::MediaError> {
    encoder.set_bitrate(s.bitrate_bps)?;
    encoder.set_fec(s.fec)?;
    encoder.set_expected_loss(s.expected_loss_pct)?;
    encoder.set_frame_duration(if s.frame_ms >= 60 { FrameDuration::Ms60 } else { FrameDuration::Ms20 });
    Ok(())
}

fn audio_send_loop(
    mut source: Box<dyn AudioSource>,
    paced: bool,
    mut encoder: OpusEncoder,
    control: std_mpsc::Receiver<AudioControl>,
    out: mpsc::Sender<OutgoingAudio>,
    stop: &AtomicBool,
) {
    let mut next_at = Instant::now();
    let mut muted = false;
    loop {
        loop {
            match control.try_recv() {
                Ok(AudioControl::Muted(m)) => muted = m,
                Ok(AudioControl::Settings(s)) => {
                    if let Err(e) = apply_audio_settings(&mut encoder, s) {
                        warn!(error = %e, "audio settings refused");
                    }
                }
                Err(std_mpsc::TryRecvError::Empty) => break,
                Err(std_mpsc::TryRecvError::Disconnected) => return,
            }
        }
        let mut frame = match source.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => {
                warn!(error = %e, "audio source failed");
                return;
            }
        };
        if paced {
            let now = Instant::now();
            if next_at > now {
                std::thread::sleep(next_at - now);
            } else if now - next_at > Duration::from_millis(200) {
                next_at = now;
            }
            next_at += Duration::from_micros(frame.duration_us());
        }
        if muted {
            frame.samples_mut().fill(0);
        }
        let captured = Instant::now();
        match encoder.encode(&frame) {
            Ok(packets) => {
                for p in packets {
                    let duration = Duration::from_millis(u64::from(p.duration.as_millis()));
                    // Audio is small and never dropped here: wait briefly if the driver lags.
                    let packet = OutgoingAudio { data: Bytes::from(p.data), captured, duration };
                    if !send_unless_stopped(&out, packet, stop) {
                        return;
                    }
                }
            }
            Err(e) => warn!(error = %e, "opus encode failed"),
        }
    }
}

/// Sends `item`, waiting while the queue is full; false once the reader is gone or `stop` is
/// set (never waits forever, unlike a blocking send whose reader is joining this thread).
fn send_unless_stopped<T>(out: &mpsc::Sender<T>, mut item: T, stop: &AtomicBool) -> bool {
    loop {
        match out.try_send(item) {
            Ok(()) => return true,
            Err(TrySendError::Closed(_)) => return false,
            Err(TrySendError::Full(back)) => {
                if stop.load(Ordering::Relaxed) {
                    return false;
                }
                item = back;
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

/// Sends a report unless the driver is [`RECEIVED_QUEUE`] reports behind; false once it is gone.
fn report(reports: &mpsc::Sender<Received>, received: Received) -> bool {
    !matches!(reports.try_send(received), Err(TrySendError::Closed(_)))
}

/// The VP8 decode thread: frames in, decoded frames to a sink, reports to the driver.
pub struct VideoReceiver {
    worker: Worker<std_mpsc::SyncSender<Bytes>>,
    too_large: Arc<AtomicU64>,
}

impl VideoReceiver {
    /// Starts decoding into `sink`; `clock` stamps decode times.
    pub fn start(
        sink: Box<dyn VideoSink>,
        clock: MediaClock,
        reports: mpsc::Sender<Received>,
    ) -> Result<Self, duet_media::MediaError> {
        let decoder = Vp8Decoder::new()?;
        let (input, rx) = std_mpsc::sync_channel(VIDEO_IN_QUEUE);
        let too_large = Arc::new(AtomicU64::new(0));
        let counter = too_large.clone();
        let worker = Worker::spawn("duet-video-recv", input, move || {
            video_receive_loop(decoder, sink, clock, rx, reports, &counter)
        })?;
        Ok(Self { worker, too_large })
    }

    /// Queues an encoded frame; returns false if the decoder is behind and it was dropped.
    pub fn push(&self, frame: Bytes) -> bool {
        self.worker.input().is_some_and(|tx| tx.try_send(frame).is_ok())
    }

    /// Keyframes refused so far for declaring a picture over [`duet_media::MAX_DECODE_PIXELS`].
    pub fn frames_too_large(&self) -> u64 {
        self.too_large.load(Ordering::Relaxed)
    }
}

fn video_receive_loop(
    mut decoder: Vp8Decoder,
    mut sink: Box<dyn VideoSink>,
    clock: MediaClock,
    input: std_mpsc::Receiver<Bytes>,
    reports: mpsc::Sender<Received>,
    too_large: &AtomicU64,
) {
    while let Ok(data) = input.recv() {
        match decoder.decode(&data, clock.now_us()) {
            Ok(Some(frame)) => {
                let now_us = clock.now_us();
                let marker = read_marker(&frame).map(|m| (m.frame_number, m.timestamp_us));
                let decoded = Received::Video { now_us, width: frame.width(), height: frame.height(), marker };
                if let Err(e) = sink.render(frame) {
                    debug!(error = %e, "video sink refused a frame");
                }
                if !report(&reports, decoded) {
                    return;
                }
            }
            Ok(None) => {}
            Err(duet_media::MediaError::FrameTooLarge { width, height }) => {
                let refused = too_large.fetch_add(1, Ordering::Relaxed) + 1;
                debug!(width, height, refused, "partner keyframe over the size bound refused");
            }
            Err(e) => {
                debug!(error = %e, "decode failed; asking for a keyframe");
                if e.needs_keyframe() && !report(&reports, Received::NeedKeyframe) {
                    return;
                }
            }
        }
    }
}

/// The Opus decode thread: packets in (put back in order by [`AudioJitterBuffer`]), audio to a
/// sink, lost packets recovered from FEC or concealed.
pub struct AudioReceiver {
    worker: Worker<std_mpsc::SyncSender<(u16, Bytes)>>,
}

impl AudioReceiver {
    /// Starts decoding into `sink`.
    pub fn start(sink: Box<dyn AudioSink>, reports: mpsc::Sender<Received>) -> Result<Self, duet_media::MediaError> {
        let decoder = OpusDecoder::new(1)?;
        let (input, rx) = std_mpsc::sync_channel(64);
        let worker = Worker::spawn("duet-audio-recv", input, move || audio_receive_loop(decoder, sink, rx, reports))?;
        Ok(Self { worker })
    }

    /// Queues a packet with its RTP sequence number.
    pub fn push(&self, seq: u16, packet: Bytes) {
        if let Some(tx) = self.worker.input() {
            let _ = tx.try_send((seq, packet));
        }
    }
}

fn audio_receive_loop(
    mut decoder: OpusDecoder,
    mut sink: Box<dyn AudioSink>,
    input: std_mpsc::Receiver<(u16, Bytes)>,
    reports: mpsc::Sender<Received>,
) {
    let mut jitter = AudioJitterBuffer::new();
    // Concealment covers one packet of the duration last heard.
    let mut last_duration = FrameDuration::Ms20;
    loop {
        let arrived = match jitter.poll_timeout() {
            Some(at) => input.recv_timeout(at.saturating_duration_since(Instant::now())),
            None => input.recv().map_err(|_| std_mpsc::RecvTimeoutError::Disconnected),
        };
        match arrived {
            Ok((seq, packet)) => jitter.push(Instant::now(), seq, packet),
            Err(std_mpsc::RecvTimeoutError::Timeout) => {}
            Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
        }
        while let Some(out) = jitter.poll(Instant::now()) {
            // Concealed audio is played but not counted as received (it was invented).
            let received = !matches!(out, Playout::Conceal);
            let frame = match out {
                Playout::Packet(packet) => decoder.decode(&packet, 0),
                Playout::Recover(next) => decoder.conceal(last_duration, Some(&next), 0),
                Playout::Conceal => decoder.conceal(last_duration, None, 0),
            };
            match frame {
                Ok(frame) => {
                    last_duration = match frame.duration_us() {
                        d if d >= 55_000 => FrameDuration::Ms60,
                        d if d >= 35_000 => FrameDuration::Ms40,
                        d if d >= 15_000 => FrameDuration::Ms20,
                        _ => FrameDuration::Ms10,
                    };
                    play(&mut sink, &frame);
                    if received && !report(&reports, Received::Audio) {
                        return;
                    }
                }
                Err(e) => debug!(error = %e, "opus packet not decodable"),
            }
        }
    }
}

fn play(sink: &mut Box<dyn AudioSink>, frame: &AudioFrame) {
    if let Err(e) = sink.play(frame) {
        debug!(error = %e, "audio sink refused a frame");
    }
}

/// A video sink that drops frames (headless clients that only count and measure).
#[derive(Debug, Default)]
pub struct DiscardVideoSink;

impl VideoSink for DiscardVideoSink {
    fn render(&mut self, _frame: VideoFrame) -> Result<(), duet_media::MediaError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ending a call drops the audio sender from the task that reads its queue: with the queue
    /// full, a blocking send in the thread and a join in `Drop` waited for each other forever.
    #[test]
    fn dropping_the_audio_sender_with_its_queue_full_does_not_deadlock() {
        let source =
            duet_media::SyntheticAudioSource::new(1, FrameDuration::Ms20, duet_media::MediaClock::new()).unwrap();
        let (out, unread) = mpsc::channel(1);
        let sender = AudioSender::start(Box::new(source), false, out).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let (done, dropped) = std_mpsc::channel();
        std::thread::spawn(move || {
            drop(sender);
            let _ = done.send(());
        });
        assert!(dropped.recv_timeout(Duration::from_secs(3)).is_ok(), "drop hung with the queue full");
        drop(unread);
    }

    #[test]
    fn fitting_keeps_the_aspect_ratio_and_never_upscales() {
        let l = |w, h| VideoLimits { max_width: w, max_height: h, max_kbps: 1000, max_fps: 30 };
        assert_eq!(fit(1280, 720, l(640, 360)), (640, 360));
        assert_eq!(fit(1280, 720, l(640, 640)), (640, 360));
        assert_eq!(fit(640, 360, l(1280, 720)), (640, 360));
        assert_eq!(fit(641, 361, l(320, 180)), (320, 180));
    }
}
