//! Pixel-format conversion to I420 for camera frames (YUYV, NV12, packed RGB/BGR, grey).
//!
//! RGB uses the BT.601 limited-range matrix (what VP8 and browsers assume for untagged video), in 8-bit
//! fixed point. Chroma is the average of each 2x2 block (edge pixels alone at odd sizes).

use crate::{MediaError, VideoFrame};

/// Byte order of a packed 24-bit pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RgbOrder {
    /// Red, green, blue.
    Rgb,
    /// Blue, green, red.
    Bgr,
}

/// Packed 24-bit RGB or BGR (`width * height * 3` bytes, no row padding) to I420.
pub fn rgb24_to_i420(
    data: &[u8],
    width: u32,
    height: u32,
    order: RgbOrder,
    timestamp_us: u64,
) -> Result<VideoFrame, MediaError> {
    let mut frame = VideoFrame::black(width, height, timestamp_us)?;
    let (w, h) = (width as usize, height as usize);
    check_len("RGB24", data, w * h * 3)?;
    let pixel = |x: usize, y: usize| -> [i32; 3] {
        let p = &data[(y * w + x) * 3..(y * w + x) * 3 + 3];
        let (r, g, b) = match order {
            RgbOrder::Rgb => (p[0], p[1], p[2]),
            RgbOrder::Bgr => (p[2], p[1], p[0]),
        };
        [i32::from(r), i32::from(g), i32::from(b)]
    };
    let cw = w.div_ceil(2);
    let (y_plane, u_plane, v_plane) = frame.planes_mut();
    for y in 0..h {
        for x in 0..w {
            let [r, g, b] = pixel(x, y);
            y_plane[y * w + x] = clamp_u8(((66 * r + 129 * g + 25 * b + 128) >> 8) + 16);
        }
    }
    for cy in 0..h.div_ceil(2) {
        for cx in 0..cw {
            let mut sum = [0i32; 3];
            let mut count = 0;
            for y in 2 * cy..(2 * cy + 2).min(h) {
                for x in 2 * cx..(2 * cx + 2).min(w) {
                    let p = pixel(x, y);
                    for (s, v) in sum.iter_mut().zip(p) {
                        *s += v;
                    }
                    count += 1;
                }
            }
            let [r, g, b] = sum.map(|s| (s + count / 2) / count);
            u_plane[cy * cw + cx] = clamp_u8(((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128);
            v_plane[cy * cw + cx] = clamp_u8(((112 * r - 94 * g - 18 * b + 128) >> 8) + 128);
        }
    }
    Ok(frame)
}

/// Packed YUYV 4:2:2 (Y0 U Y1 V; `width * height * 2` bytes, width even) to I420.
pub fn yuyv_to_i420(data: &[u8], width: u32, height: u32, timestamp_us: u64) -> Result<VideoFrame, MediaError> {
    if !width.is_multiple_of(2) {
        return Err(MediaError::InvalidArgument(format!("YUYV frames have an even width, got {width}")));
    }
    let mut frame = VideoFrame::black(width, height, timestamp_us)?;
    let (w, h) = (width as usize, height as usize);
    check_len("YUYV", data, w * h * 2)?;
    let cw = w / 2;
    let (y_plane, u_plane, v_plane) = frame.planes_mut();
    for (src_row, dst_row) in data.chunks_exact(w * 2).zip(y_plane.chunks_exact_mut(w)) {
        for (dst, src) in dst_row.iter_mut().zip(src_row.iter().step_by(2)) {
            *dst = *src;
        }
    }
    for cy in 0..h.div_ceil(2) {
        let top = &data[2 * cy * w * 2..(2 * cy + 1) * w * 2];
        let bottom = if 2 * cy + 1 < h { &data[(2 * cy + 1) * w * 2..(2 * cy + 2) * w * 2] } else { top };
        for cx in 0..cw {
            let average = |offset: usize| {
                (u16::from(top[cx * 4 + offset]) + u16::from(bottom[cx * 4 + offset])).div_ceil(2) as u8
            };
            u_plane[cy * cw + cx] = average(1);
            v_plane[cy * cw + cx] = average(3);
        }
    }
    Ok(frame)
}

/// NV12 (Y plane, then interleaved U/V at half resolution; no row padding) to I420.
pub fn nv12_to_i420(data: &[u8], width: u32, height: u32, timestamp_us: u64) -> Result<VideoFrame, MediaError> {
    let mut frame = VideoFrame::black(width, height, timestamp_us)?;
    let (luma, cw, ch) =
        (width as usize * height as usize, frame.chroma_width() as usize, frame.chroma_height() as usize);
    check_len("NV12", data, luma + cw * ch * 2)?;
    let (y_plane, u_plane, v_plane) = frame.planes_mut();
    y_plane.copy_from_slice(&data[..luma]);
    for ((uv, u), v) in data[luma..luma + cw * ch * 2].chunks_exact(2).zip(u_plane.iter_mut()).zip(v_plane.iter_mut()) {
        *u = uv[0];
        *v = uv[1];
    }
    Ok(frame)
}

/// 8-bit grey (`width * height` bytes) to I420 with neutral chroma.
pub fn gray_to_i420(data: &[u8], width: u32, height: u32, timestamp_us: u64) -> Result<VideoFrame, MediaError> {
    let mut frame = VideoFrame::black(width, height, timestamp_us)?;
    let luma = width as usize * height as usize;
    check_len("grey", data, luma)?;
    frame.planes_mut().0.copy_from_slice(&data[..luma]);
    Ok(frame)
}

fn check_len(format: &str, data: &[u8], needed: usize) -> Result<(), MediaError> {
    if data.len() < needed {
        return Err(MediaError::InvalidArgument(format!("{format} frame needs {needed} bytes, got {}", data.len())));
    }
    Ok(())
}

fn clamp_u8(value: i32) -> u8 {
    value.clamp(0, 255) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rgb_primaries_map_to_bt601_limited_range() {
        // White, black, red, blue in a 2x2 image: luma per pixel, chroma of the average.
        let data = [255, 255, 255, 0, 0, 0, 255, 0, 0, 0, 0, 255];
        let frame = rgb24_to_i420(&data, 2, 2, RgbOrder::Rgb, 9).unwrap();
        assert_eq!(frame.y(), &[235, 16, 82, 41]);
        assert_eq!(frame.timestamp_us(), 9);
        let uniform = |rgb: [u8; 3]| rgb24_to_i420(&rgb.repeat(4), 2, 2, RgbOrder::Rgb, 0).unwrap();
        let red = uniform([255, 0, 0]);
        assert_eq!((red.u()[0], red.v()[0]), (90, 240));
        let bgr = rgb24_to_i420(&[0, 0, 255].repeat(4), 2, 2, RgbOrder::Bgr, 0).unwrap();
        assert_eq!(bgr, red);
        let grey = uniform([128, 128, 128]);
        assert_eq!((grey.y()[0], grey.u()[0], grey.v()[0]), (126, 128, 128));
    }

    #[test]
    fn yuyv_and_nv12_deinterleave() {
        // 2x2 YUYV: rows [Y=10 U=100 Y=20 V=200] and [Y=30 U=110 Y=40 V=210].
        let yuyv = [10, 100, 20, 200, 30, 110, 40, 210];
        let frame = yuyv_to_i420(&yuyv, 2, 2, 0).unwrap();
        assert_eq!((frame.y(), frame.u(), frame.v()), (&[10, 20, 30, 40][..], &[105][..], &[205][..]));
        assert!(yuyv_to_i420(&yuyv, 3, 1, 0).is_err());
        assert!(yuyv_to_i420(&yuyv[..6], 2, 2, 0).is_err());

        let nv12 = [1, 2, 3, 4, 5, 6, 50, 60, 70, 80];
        let frame = nv12_to_i420(&nv12, 3, 2, 0).unwrap();
        assert_eq!((frame.y(), frame.u(), frame.v()), (&[1, 2, 3, 4, 5, 6][..], &[50, 70][..], &[60, 80][..]));
        let grey = gray_to_i420(&[7; 6], 3, 2, 0).unwrap();
        assert_eq!((grey.y(), grey.u()), (&[7; 6][..], &[128, 128][..]));
        assert!(gray_to_i420(&[7; 5], 3, 2, 0).is_err());
    }

    #[test]
    fn odd_sizes_convert() {
        let frame = rgb24_to_i420(&[200; 3 * 5 * 3], 5, 3, RgbOrder::Rgb, 0).unwrap();
        assert_eq!(frame.u().len(), 6);
        assert!(frame.u().iter().all(|&u| u == 128));
        let yuyv = yuyv_to_i420(&[16, 128, 16, 128].repeat(3), 2, 3, 0).unwrap();
        assert_eq!(yuyv.u().len(), 2);
    }
}
