//! Raw frame types: I420 video and interleaved 16-bit PCM audio, plus their formats.

use std::fmt;
use std::time::Duration;

use crate::MediaError;

/// The largest width or height accepted for a video frame (VP8's limit is 16383).
pub const MAX_DIMENSION: u32 = 16_383;

/// The sample rate of all audio on the wire and out of the sources: 48 kHz.
pub const AUDIO_SAMPLE_RATE: u32 = 48_000;

/// A video frame in I420 (planar YUV 4:2:0, BT.601 limited range), stored as one contiguous buffer:
/// the Y plane (`width * height` bytes), then U, then V (each `chroma_width * chroma_height` bytes), no padding.
/// Chroma dimensions round up, so odd sizes are allowed.
#[derive(Clone, PartialEq, Eq)]
pub struct VideoFrame {
    width: u32,
    height: u32,
    timestamp_us: u64,
    data: Vec<u8>,
}

impl VideoFrame {
    /// Wraps an I420 buffer. Fails if a dimension is 0 or above [`MAX_DIMENSION`], or if `data` does not have
    /// exactly [`VideoFrame::buffer_size`] bytes.
    pub fn new(width: u32, height: u32, timestamp_us: u64, data: Vec<u8>) -> Result<Self, MediaError> {
        let expected = Self::buffer_size(width, height)?;
        if data.len() != expected {
            return Err(MediaError::InvalidArgument(format!(
                "I420 frame {width}x{height} needs {expected} bytes, got {}",
                data.len()
            )));
        }
        Ok(Self { width, height, timestamp_us, data })
    }

    /// A black frame (Y = 16, U = V = 128).
    pub fn black(width: u32, height: u32, timestamp_us: u64) -> Result<Self, MediaError> {
        let size = Self::buffer_size(width, height)?;
        let luma = plane_len(width, height);
        let mut data = vec![128u8; size];
        data[..luma].fill(16);
        Ok(Self { width, height, timestamp_us, data })
    }

    /// Copies three planes with arbitrary strides (e.g. from a decoder or a capture API) into a new frame.
    /// Each plane must hold at least `stride * (rows - 1) + row_width` bytes.
    pub fn from_planes(
        width: u32,
        height: u32,
        timestamp_us: u64,
        planes: [(&[u8], usize); 3],
    ) -> Result<Self, MediaError> {
        let mut frame = Self::black(width, height, timestamp_us)?;
        let (cw, ch) = (frame.chroma_width() as usize, frame.chroma_height() as usize);
        let dims = [(width as usize, height as usize), (cw, ch), (cw, ch)];
        let (y, u, v) = frame.planes_mut();
        for ((dst, (src, stride)), (w, h)) in [y, u, v].into_iter().zip(planes).zip(dims) {
            if stride < w || src.len() < stride * (h - 1) + w {
                return Err(MediaError::InvalidArgument(format!(
                    "plane of {w}x{h} with stride {stride} needs {} bytes, got {}",
                    stride * (h - 1) + w,
                    src.len()
                )));
            }
            for (dst_row, src_row) in dst.chunks_exact_mut(w).zip(src.chunks(stride)) {
                dst_row.copy_from_slice(&src_row[..w]);
            }
        }
        Ok(frame)
    }

    /// Bytes needed for an I420 frame of this size; fails for 0 or oversized dimensions.
    pub fn buffer_size(width: u32, height: u32) -> Result<usize, MediaError> {
        if width == 0 || height == 0 || width > MAX_DIMENSION || height > MAX_DIMENSION {
            return Err(MediaError::InvalidArgument(format!(
                "frame size {width}x{height} out of range (1..={MAX_DIMENSION})"
            )));
        }
        Ok(plane_len(width, height) + 2 * plane_len(width.div_ceil(2), height.div_ceil(2)))
    }

    /// Width in pixels.
    #[must_use]
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    #[must_use]
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Width of the U and V planes: `ceil(width / 2)`.
    #[must_use]
    pub fn chroma_width(&self) -> u32 {
        self.width.div_ceil(2)
    }

    /// Height of the U and V planes: `ceil(height / 2)`.
    #[must_use]
    pub fn chroma_height(&self) -> u32 {
        self.height.div_ceil(2)
    }

    /// Capture time in microseconds on the caller's [`MediaClock`](crate::MediaClock).
    #[must_use]
    pub fn timestamp_us(&self) -> u64 {
        self.timestamp_us
    }

    /// Replaces the timestamp.
    pub fn set_timestamp_us(&mut self, timestamp_us: u64) {
        self.timestamp_us = timestamp_us;
    }

    /// The whole I420 buffer (Y, then U, then V).
    #[must_use]
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Takes the I420 buffer out.
    #[must_use]
    pub fn into_data(self) -> Vec<u8> {
        self.data
    }

    /// The Y plane (stride = width).
    #[must_use]
    pub fn y(&self) -> &[u8] {
        &self.data[..self.luma_len()]
    }

    /// The U plane (stride = chroma width).
    #[must_use]
    pub fn u(&self) -> &[u8] {
        let (start, len) = (self.luma_len(), self.chroma_len());
        &self.data[start..start + len]
    }

    /// The V plane (stride = chroma width).
    #[must_use]
    pub fn v(&self) -> &[u8] {
        &self.data[self.luma_len() + self.chroma_len()..]
    }

    /// The three planes, mutable.
    pub fn planes_mut(&mut self) -> (&mut [u8], &mut [u8], &mut [u8]) {
        let (luma, chroma) = (self.luma_len(), self.chroma_len());
        let (y, rest) = self.data.split_at_mut(luma);
        let (u, v) = rest.split_at_mut(chroma);
        (y, u, v)
    }

    fn luma_len(&self) -> usize {
        plane_len(self.width, self.height)
    }

    fn chroma_len(&self) -> usize {
        plane_len(self.chroma_width(), self.chroma_height())
    }
}

impl fmt::Debug for VideoFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VideoFrame")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("timestamp_us", &self.timestamp_us)
            .finish_non_exhaustive()
    }
}

fn plane_len(width: u32, height: u32) -> usize {
    width as usize * height as usize
}

/// A block of interleaved signed 16-bit PCM samples.
#[derive(Clone, PartialEq, Eq)]
pub struct AudioFrame {
    samples: Vec<i16>,
    sample_rate: u32,
    channels: u16,
    timestamp_us: u64,
}

impl AudioFrame {
    /// Wraps interleaved samples. Fails unless `channels` is 1..=8, `sample_rate` is 8000..=192000 and the
    /// sample count is a multiple of `channels`.
    pub fn new(samples: Vec<i16>, sample_rate: u32, channels: u16, timestamp_us: u64) -> Result<Self, MediaError> {
        validate_audio_params(sample_rate, channels)?;
        if !samples.len().is_multiple_of(usize::from(channels)) {
            return Err(MediaError::InvalidArgument(format!(
                "{} samples is not a whole number of {channels}-channel frames",
                samples.len()
            )));
        }
        Ok(Self { samples, sample_rate, channels, timestamp_us })
    }

    /// For callers inside the crate that have already validated rate, channels and length.
    pub(crate) fn from_valid_parts(samples: Vec<i16>, sample_rate: u32, channels: u16, timestamp_us: u64) -> Self {
        debug_assert!(validate_audio_params(sample_rate, channels).is_ok());
        debug_assert_eq!(samples.len() % usize::from(channels), 0);
        Self { samples, sample_rate, channels, timestamp_us }
    }

    /// `samples_per_channel` frames of silence.
    pub fn silence(
        sample_rate: u32,
        channels: u16,
        samples_per_channel: usize,
        timestamp_us: u64,
    ) -> Result<Self, MediaError> {
        Self::new(vec![0; samples_per_channel * usize::from(channels)], sample_rate, channels, timestamp_us)
    }

    /// Interleaved samples.
    #[must_use]
    pub fn samples(&self) -> &[i16] {
        &self.samples
    }

    /// Interleaved samples, mutable (the length cannot change).
    pub fn samples_mut(&mut self) -> &mut [i16] {
        &mut self.samples
    }

    /// Takes the samples out.
    #[must_use]
    pub fn into_samples(self) -> Vec<i16> {
        self.samples
    }

    /// Samples per second per channel.
    #[must_use]
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Number of interleaved channels.
    #[must_use]
    pub fn channels(&self) -> u16 {
        self.channels
    }

    /// Number of samples in each channel.
    #[must_use]
    pub fn samples_per_channel(&self) -> usize {
        self.samples.len() / usize::from(self.channels)
    }

    /// Time of the first sample in microseconds on the caller's [`MediaClock`](crate::MediaClock).
    #[must_use]
    pub fn timestamp_us(&self) -> u64 {
        self.timestamp_us
    }

    /// Replaces the timestamp.
    pub fn set_timestamp_us(&mut self, timestamp_us: u64) {
        self.timestamp_us = timestamp_us;
    }

    /// Duration in microseconds (rounded down).
    #[must_use]
    pub fn duration_us(&self) -> u64 {
        samples_to_us(self.samples_per_channel() as u64, self.sample_rate)
    }
}

impl fmt::Debug for AudioFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AudioFrame")
            .field("samples_per_channel", &self.samples_per_channel())
            .field("sample_rate", &self.sample_rate)
            .field("channels", &self.channels)
            .field("timestamp_us", &self.timestamp_us)
            .finish_non_exhaustive()
    }
}

pub(crate) fn validate_audio_params(sample_rate: u32, channels: u16) -> Result<(), MediaError> {
    if !(8_000..=192_000).contains(&sample_rate) {
        return Err(MediaError::InvalidArgument(format!("sample rate {sample_rate} Hz out of range (8000..=192000)")));
    }
    if !(1..=8).contains(&channels) {
        return Err(MediaError::InvalidArgument(format!("{channels} channels out of range (1..=8)")));
    }
    Ok(())
}

/// Microseconds spanned by `samples` samples at `rate` Hz (rounded down).
pub(crate) fn samples_to_us(samples: u64, rate: u32) -> u64 {
    u64::try_from(u128::from(samples) * 1_000_000 / u128::from(rate.max(1))).unwrap_or(u64::MAX)
}

/// A frame rate as a fraction (Y4M files use e.g. 30000/1001).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameRate {
    /// Frames...
    pub num: u32,
    /// ...per this many seconds.
    pub den: u32,
}

impl FrameRate {
    /// A whole number of frames per second.
    #[must_use]
    pub fn from_fps(fps: u32) -> Self {
        Self { num: fps, den: 1 }
    }

    /// Frames per second as a float (0 if the fraction is degenerate).
    #[must_use]
    pub fn as_f64(&self) -> f64 {
        if self.den == 0 { 0.0 } else { f64::from(self.num) / f64::from(self.den) }
    }

    /// The time between frames (zero if the rate is 0).
    #[must_use]
    pub fn frame_interval(&self) -> Duration {
        if self.num == 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos(u64::from(self.den) * 1_000_000_000 / u64::from(self.num))
        }
    }
}

impl fmt::Display for FrameRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.den == 1 { write!(f, "{} fps", self.num) } else { write!(f, "{:.3} fps", self.as_f64()) }
    }
}

/// What a [`VideoSource`](crate::VideoSource) produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VideoFormat {
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Nominal frame rate: for live sources what the device delivers, for others the pace the caller should keep.
    pub frame_rate: FrameRate,
}

/// The duration of one audio frame (10 and 20 ms from sources; Opus also takes 40 and 60 ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameDuration {
    /// 10 ms.
    Ms10,
    /// 20 ms, the usual choice for calls.
    Ms20,
    /// 40 ms.
    Ms40,
    /// 60 ms, for low-bitrate audio-only mode.
    Ms60,
}

impl FrameDuration {
    /// The duration in milliseconds.
    #[must_use]
    pub fn as_millis(self) -> u32 {
        match self {
            Self::Ms10 => 10,
            Self::Ms20 => 20,
            Self::Ms40 => 40,
            Self::Ms60 => 60,
        }
    }

    /// Samples per channel at `sample_rate`.
    #[must_use]
    pub fn samples_per_channel(self, sample_rate: u32) -> usize {
        (sample_rate as usize) * self.as_millis() as usize / 1000
    }
}

/// What an [`AudioSource`](crate::AudioSource) produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AudioFormat {
    /// Samples per second per channel (always [`AUDIO_SAMPLE_RATE`] from this crate's sources).
    pub sample_rate: u32,
    /// Interleaved channels.
    pub channels: u16,
    /// Duration of each frame.
    pub frame_duration: FrameDuration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i420_layout_with_odd_sizes() {
        assert_eq!(VideoFrame::buffer_size(4, 2).unwrap(), 8 + 2 + 2);
        assert_eq!(VideoFrame::buffer_size(5, 3).unwrap(), 15 + 6 + 6);
        let mut frame = VideoFrame::black(5, 3, 7).unwrap();
        assert_eq!((frame.chroma_width(), frame.chroma_height()), (3, 2));
        let (y, u, v) = frame.planes_mut();
        assert_eq!((y.len(), u.len(), v.len()), (15, 6, 6));
        y[0] = 1;
        u[0] = 2;
        v[5] = 3;
        assert_eq!(frame.y()[0], 1);
        assert_eq!(frame.u()[0], 2);
        assert_eq!(frame.v()[5], 3);
        assert_eq!(frame.timestamp_us(), 7);
    }

    #[test]
    fn rejects_bad_sizes() {
        assert!(VideoFrame::new(0, 10, 0, vec![]).is_err());
        assert!(VideoFrame::new(2, 2, 0, vec![0; 5]).is_err());
        assert!(VideoFrame::new(MAX_DIMENSION + 1, 2, 0, vec![]).is_err());
        assert!(AudioFrame::new(vec![0; 3], 48_000, 2, 0).is_err());
        assert!(AudioFrame::new(vec![0; 4], 1_000, 2, 0).is_err());
        assert!(AudioFrame::new(vec![0; 4], 48_000, 0, 0).is_err());
    }

    #[test]
    fn from_planes_honours_strides() {
        let y: Vec<u8> = (0..4 * 8).map(|i| i as u8).collect();
        let u = [9u8, 9, 0, 0, 8, 8, 0, 0];
        let frame = VideoFrame::from_planes(3, 3, 0, [(&y, 8), (&u, 4), (&u, 4)]).unwrap();
        assert_eq!(&frame.y()[..3], &[0, 1, 2]);
        assert_eq!(&frame.y()[3..6], &[8, 9, 10]);
        assert_eq!(frame.u(), &[9, 9, 8, 8]);
        assert!(VideoFrame::from_planes(3, 3, 0, [(&y[..10], 8), (&u, 4), (&u, 4)]).is_err());
    }

    #[test]
    fn audio_durations() {
        let frame = AudioFrame::silence(48_000, 2, 960, 5).unwrap();
        assert_eq!(frame.samples().len(), 1920);
        assert_eq!(frame.duration_us(), 20_000);
        assert_eq!(FrameDuration::Ms60.samples_per_channel(48_000), 2880);
        assert_eq!(FrameRate { num: 30_000, den: 1001 }.frame_interval().as_micros(), 33_366);
    }
}
