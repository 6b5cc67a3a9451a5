//! The source traits: where raw frames come from.

use crate::{AudioFormat, AudioFrame, MediaError, VideoFormat, VideoFrame};

/// A producer of I420 video frames, pulled by the caller.
///
/// Pacing: *live* sources (cameras) block in [`next_frame`](VideoSource::next_frame) until the device
/// delivers, so they pace themselves. Synthetic and file sources return at once: the caller keeps the pace of
/// [`VideoFormat::frame_rate`] (e.g. with a `tokio::time::interval`). Because live sources block, an async
/// caller runs them on a dedicated thread (or `spawn_blocking`).
///
/// Every frame's timestamp is its capture time on the [`MediaClock`](crate::MediaClock) the source was
/// given: for caller-paced sources, the moment `next_frame` was called.
pub trait VideoSource: Send {
    /// Size and nominal frame rate of the frames.
    fn format(&self) -> VideoFormat;

    /// The next frame, `Ok(None)` at the end of a finite source.
    fn next_frame(&mut self) -> Result<Option<VideoFrame>, MediaError>;
}

/// A producer of 48 kHz audio frames of a fixed duration, pulled by the caller.
///
/// Pacing is as for [`VideoSource`]: the microphone blocks until a whole frame has been captured, synthetic
/// and file sources return at once and the caller keeps the pace of [`AudioFormat::frame_duration`].
/// Timestamps are sample-accurate: each frame's timestamp is the previous one's plus its duration, anchored
/// on the clock at the first pull (or at capture for the microphone).
pub trait AudioSource: Send {
    /// Sample rate, channels and frame duration of the frames.
    fn format(&self) -> AudioFormat;

    /// The next frame, `Ok(None)` at the end of a finite source.
    fn next_frame(&mut self) -> Result<Option<AudioFrame>, MediaError>;
}

impl<T: VideoSource + ?Sized> VideoSource for Box<T> {
    fn format(&self) -> VideoFormat {
        (**self).format()
    }

    fn next_frame(&mut self) -> Result<Option<VideoFrame>, MediaError> {
        (**self).next_frame()
    }
}

impl<T: AudioSource + ?Sized> AudioSource for Box<T> {
    fn format(&self) -> AudioFormat {
        (**self).format()
    }

    fn next_frame(&mut self) -> Result<Option<AudioFrame>, MediaError> {
        (**self).next_frame()
    }
}
