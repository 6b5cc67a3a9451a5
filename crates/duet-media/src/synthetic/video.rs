//! A synthetic camera: colour bars, a zone-plate texture and a moving checkered box, with a frame marker.

use crate::marker::{MARKER_MIN_HEIGHT, MARKER_MIN_WIDTH, Marker, marker_height, write_marker};
use crate::{FrameRate, MediaClock, MediaError, VideoFormat, VideoFrame, VideoSource};

/// 75 % colour bars (white, yellow, cyan, green, magenta, red, blue) as BT.601 limited-range Y, U, V.
const BARS: [[u8; 3]; 7] =
    [[180, 128, 128], [162, 44, 142], [131, 156, 44], [112, 72, 58], [84, 184, 198], [65, 100, 212], [35, 212, 114]];

/// A moving test pattern that carries its frame number and capture time in a [`Marker`].
///
/// The picture: the marker strip on top, then 75 % colour bars, then a zone-plate texture (rings getting finer
/// towards the edges), with a checkered box bouncing across the whole area below the strip (so the encoder
/// has motion to code every frame). Options make it cost what a camera does: luma noise like a sensor's
/// ([`with_noise`](SyntheticVideoSource::with_noise)) and a camera pan that moves the whole background
/// ([`with_pan`](SyntheticVideoSource::with_pan)).
///
/// Caller-paced: [`next_frame`](VideoSource::next_frame) renders at once and stamps the frame with the clock's
/// current reading. [`render`](SyntheticVideoSource::render) draws any frame deterministically.
///
/// Encode it with [`Vp8Config::denoise`](crate::Vp8Config::denoise) off (the default): libvpx's denoiser
/// damages the marker at some sizes.
#[derive(Debug, Clone)]
pub struct SyntheticVideoSource {
    format: VideoFormat,
    clock: MediaClock,
    next_frame_number: u64,
    noise: u8,
    pan: u32,
    background: VideoFrame,
}

impl SyntheticVideoSource {
    /// A `width` x `height` pattern at `fps` frames per second, stamped with `clock`.
    ///
    /// The frame must be at least [`MARKER_MIN_WIDTH`] x [`MARKER_MIN_HEIGHT`] (160x88) to carry the marker.
    pub fn new(width: u32, height: u32, fps: u32, clock: MediaClock) -> Result<Self, MediaError> {
        if width < MARKER_MIN_WIDTH || height < MARKER_MIN_HEIGHT {
            return Err(MediaError::InvalidArgument(format!(
                "synthetic video must be at least {MARKER_MIN_WIDTH}x{MARKER_MIN_HEIGHT}, got {width}x{height}"
            )));
        }
        if fps == 0 || fps > 240 {
            return Err(MediaError::InvalidArgument(format!("frame rate {fps} out of range (1..=240)")));
        }
        let format = VideoFormat { width, height, frame_rate: FrameRate::from_fps(fps) };
        Ok(Self { format, clock, next_frame_number: 0, noise: 0, pan: 0, background: background(width, height)? })
    }

    /// Adds uniform luma noise of +-`amplitude` (0 = none) below the marker, different in every frame, like a
    /// camera sensor's. 2-4 gives a realistic bit cost for encoder tests and benchmarks.
    #[must_use]
    pub fn with_noise(mut self, amplitude: u8) -> Self {
        self.noise = amplitude;
        self
    }

    /// Pans the background (bars and texture, wrapping around) `pixels_per_frame` to the left every frame,
    /// like a camera turning: every macroblock moves, which exercises the encoder's motion search.
    #[must_use]
    pub fn with_pan(mut self, pixels_per_frame: u32) -> Self {
        self.pan = pixels_per_frame;
        self
    }

    /// Draws frame `frame_number` with `timestamp_us` in its marker and as its timestamp.
    pub fn render(&self, frame_number: u64, timestamp_us: u64) -> Result<VideoFrame, MediaError> {
        let mut frame = self.background.clone();
        frame.set_timestamp_us(timestamp_us);
        let (width, height) = (frame.width() as usize, frame.height() as usize);
        let top = marker_height(frame.height()) as usize;
        if self.pan > 0 {
            self.pan_background(&mut frame, frame_number, top);
        }
        let area = height - top;
        let side = (area / 3).max(8);

        // Bounce: x and y follow triangle waves of different periods, about 3 s across at 30 fps.
        let x = triangle(frame_number, 90, width - side);
        let y = top + triangle(frame_number, 67, area - side);
        let (luma, u, v) = frame.planes_mut();
        for row in y..y + side {
            for col in x..x + side {
                let check = ((row - y) / 8 + (col - x) / 8).is_multiple_of(2);
                luma[row * width + col] = if check { 220 } else { 40 };
            }
        }
        let chroma_width = width.div_ceil(2);
        for row in y / 2..(y + side).div_ceil(2) {
            u[row * chroma_width + x / 2..row * chroma_width + (x + side).div_ceil(2)].fill(90);
            v[row * chroma_width + x / 2..row * chroma_width + (x + side).div_ceil(2)].fill(170);
        }
        if self.noise > 0 {
            add_noise(&mut luma[top * width..], self.noise, frame_number);
        }
        write_marker(&mut frame, Marker { frame_number, timestamp_us })?;
        Ok(frame)
    }
}

impl SyntheticVideoSource {
    /// Copies the background rotated left by the pan offset of `frame_number` (even, so chroma follows).
    fn pan_background(&self, frame: &mut VideoFrame, frame_number: u64, top: usize) {
        let width = frame.width() as usize;
        let chroma_width = frame.chroma_width() as usize;
        let offset = ((frame_number * u64::from(self.pan)) % width as u64) as usize & !1;
        let (y, u, v) = frame.planes_mut();
        let rotate = |dst: &mut [u8], src: &[u8], row_len: usize, first_row: usize, shift: usize| {
            for (dst_row, src_row) in dst.chunks_exact_mut(row_len).zip(src.chunks_exact(row_len)).skip(first_row) {
                dst_row[..row_len - shift].copy_from_slice(&src_row[shift..]);
                dst_row[row_len - shift..].copy_from_slice(&src_row[..shift]);
            }
        };
        rotate(y, self.background.y(), width, top, offset);
        let shift = (offset / 2).min(chroma_width);
        rotate(u, self.background.u(), chroma_width, top / 2, shift);
        rotate(v, self.background.v(), chroma_width, top / 2, shift);
    }
}

impl VideoSource for SyntheticVideoSource {
    fn format(&self) -> VideoFormat {
        self.format
    }

    fn next_frame(&mut self) -> Result<Option<VideoFrame>, MediaError> {
        let frame = self.render(self.next_frame_number, self.clock.now_us())?;
        self.next_frame_number += 1;
        Ok(Some(frame))
    }
}

/// A triangle wave over `0..=max` with the given half period in frames.
fn triangle(frame_number: u64, half_period: u64, max: usize) -> usize {
    let phase = frame_number % (2 * half_period);
    let up = if phase < half_period { phase } else { 2 * half_period - phase };
    (up as usize * max) / half_period as usize
}

fn background(width: u32, height: u32) -> Result<VideoFrame, MediaError> {
    let mut frame = VideoFrame::black(width, height, 0)?;
    let (w, h) = (width as usize, height as usize);
    let top = marker_height(height) as usize;
    let ramp_top = top + (h - top) * 2 / 3;
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    // Zone plate: phase pi * r^2 / (2 w) gives rings whose frequency grows to 1/4 cycle per pixel at the
    // left and right edges, well below aliasing.
    let (cx, cy) = (w as f64 / 2.0, (ramp_top + h) as f64 / 2.0);
    let (y, u, v) = frame.planes_mut();
    for row in top..h {
        for col in 0..w {
            y[row * w + col] = if row < ramp_top {
                BARS[col * 7 / w][0]
            } else {
                let r2 = (col as f64 - cx).powi(2) + (row as f64 - cy).powi(2);
                (126.0 + 90.0 * (std::f64::consts::PI * r2 / (2.0 * w as f64)).cos()).round() as u8
            };
        }
    }
    for row in top / 2..ch {
        for col in 0..cw {
            let (cu, cv) = if row * 2 < ramp_top {
                let bar = BARS[(col * 2).min(w - 1) * 7 / w];
                (bar[1], bar[2])
            } else {
                (128, 128)
            };
            u[row * cw + col] = cu;
            v[row * cw + col] = cv;
        }
    }
    Ok(frame)
}

fn add_noise(luma: &mut [u8], amplitude: u8, seed: u64) {
    let span = 2 * u32::from(amplitude) + 1;
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for pixel in luma {
        // xorshift64: fast, and different for every frame.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let offset = (state >> 32) as u32 % span;
        *pixel = (i32::from(*pixel) + offset as i32 - i32::from(amplitude)).clamp(0, 255) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read_marker;

    #[test]
    fn frames_carry_their_number_and_time() {
        let clock = MediaClock::new();
        let mut source = SyntheticVideoSource::new(640, 360, 30, clock).unwrap().with_noise(3);
        for n in 0..5 {
            let frame = source.next_frame().unwrap().unwrap();
            let marker = read_marker(&frame).unwrap();
            assert_eq!(marker.frame_number, n);
            assert_eq!(marker.timestamp_us, frame.timestamp_us());
        }
    }

    #[test]
    fn rendering_is_deterministic_and_moves() {
        let source = SyntheticVideoSource::new(320, 180, 30, MediaClock::new()).unwrap().with_noise(2);
        let a = source.render(10, 5).unwrap();
        assert_eq!(a, source.render(10, 5).unwrap());
        assert_ne!(a.y(), source.render(11, 5).unwrap().y());
        assert_eq!(source.format().frame_rate.num, 30);
    }

    #[test]
    fn panning_moves_the_background_but_not_the_marker() {
        let source = SyntheticVideoSource::new(320, 180, 30, MediaClock::new()).unwrap().with_pan(4);
        let (a, b) = (source.render(0, 0).unwrap(), source.render(1, 0).unwrap());
        // Row 100 is bars/texture; the box bounces elsewhere on frames 0 and 1 at this size.
        let row = |f: &VideoFrame, r: usize| f.y()[r * 320..(r + 1) * 320].to_vec();
        let (ra, rb) = (row(&a, 170), row(&b, 170));
        assert_eq!(&rb[..316], &ra[4..]);
        assert_eq!(read_marker(&b).map(|m| m.frame_number), Some(1));
        let odd = SyntheticVideoSource::new(161, 89, 30, MediaClock::new()).unwrap().with_pan(3);
        for n in 0..60 {
            assert_eq!(read_marker(&odd.render(n, 0).unwrap()).map(|m| m.frame_number), Some(n));
        }
    }

    #[test]
    fn odd_sizes_and_limits() {
        let source = SyntheticVideoSource::new(161, 89, 15, MediaClock::new()).unwrap();
        for n in [0, 45, 90, 133, 1_000_001] {
            let frame = source.render(n, n * 2).unwrap();
            assert_eq!(read_marker(&frame).map(|m| m.frame_number), Some(n));
        }
        assert!(SyntheticVideoSource::new(100, 100, 30, MediaClock::new()).is_err());
        assert!(SyntheticVideoSource::new(640, 360, 0, MediaClock::new()).is_err());
    }
}
