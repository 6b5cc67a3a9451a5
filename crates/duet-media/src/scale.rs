//! I420 scaling for the lower rungs of the bitrate ladder (and for camera sizes that do not match).

use crate::{MediaError, VideoFrame};

/// Fixed-point precision of the filter weights.
const WEIGHT_BITS: u32 = 14;

/// Scales an I420 frame to `width` x `height` (aspect ratio is the caller's business), keeping its timestamp.
///
/// A separable tent filter whose support grows with the downscaling factor: bilinear interpolation when
/// enlarging, and an anti-aliasing triangle filter over all covered source pixels when shrinking (so
/// 720p -> 360p -> 180p does not alias). Weights are 14-bit fixed point; the same size returns a copy.
pub fn scale_i420(src: &VideoFrame, width: u32, height: u32) -> Result<VideoFrame, MediaError> {
    let mut dst = VideoFrame::black(width, height, src.timestamp_us())?;
    if (width, height) == (src.width(), src.height()) {
        dst.planes_mut().0.copy_from_slice(src.y());
        let (_, u, v) = dst.planes_mut();
        u.copy_from_slice(src.u());
        v.copy_from_slice(src.v());
        return Ok(dst);
    }
    let (cw, ch) = (dst.chroma_width() as usize, dst.chroma_height() as usize);
    let (scw, sch) = (src.chroma_width() as usize, src.chroma_height() as usize);
    let (y, u, v) = dst.planes_mut();
    let (sw, sh) = (src.width() as usize, src.height() as usize);
    scale_plane(src.y(), sw, sh, y, width as usize, height as usize);
    scale_plane(src.u(), scw, sch, u, cw, ch);
    scale_plane(src.v(), scw, sch, v, cw, ch);
    Ok(dst)
}

/// Filter taps for every output coordinate of one axis, in fixed-size rows: output `i` reads source
/// samples `starts[i] .. starts[i] + len` with weights `weights[i * len ..][..len]` (zero-padded), so the
/// inner loops have a fixed trip count and no bounds surprises.
struct Taps {
    len: usize,
    starts: Vec<usize>,
    weights: Vec<i16>,
}

fn taps(src_len: usize, dst_len: usize) -> Taps {
    let scale = src_len as f64 / dst_len as f64;
    let support = scale.max(1.0);
    let one = 1i32 << WEIGHT_BITS;
    let per_output: Vec<(usize, Vec<i32>)> = (0..dst_len)
        .map(|out| {
            let center = (out as f64 + 0.5) * scale - 0.5;
            let first = ((center - support).floor() + 1.0).max(0.0) as usize;
            let last = ((center + support).ceil() - 1.0).min(src_len as f64 - 1.0).max(first as f64) as usize;
            let raw: Vec<f64> = (first..=last).map(|x| (1.0 - (x as f64 - center).abs() / support).max(0.0)).collect();
            let sum: f64 = raw.iter().sum();
            let mut weights: Vec<i32> = if sum > 0.0 {
                raw.iter().map(|w| (w / sum * f64::from(one)).round() as i32).collect()
            } else {
                vec![0; raw.len()]
            };
            // Put the rounding residue on the largest weight so every output sums to exactly 1.
            let residue = one - weights.iter().sum::<i32>();
            if let Some(max) = weights.iter_mut().max_by_key(|w| **w) {
                *max += residue;
            }
            (first, weights)
        })
        .collect();
    let len = per_output.iter().map(|(_, w)| w.len()).max().unwrap_or(1).min(src_len);
    let mut starts = Vec::with_capacity(dst_len);
    let mut weights = vec![0i16; dst_len * len];
    for (i, (first, taps)) in per_output.into_iter().enumerate() {
        // Shift windows that would run past the end left, padding with zero weights in front.
        let start = first.min(src_len - len);
        let offset = first - start;
        for (slot, &w) in weights[i * len + offset..].iter_mut().zip(&taps) {
            // Every weight is within 0..=2^14, so it fits.
            *slot = w as i16;
        }
        starts.push(start);
    }
    Taps { len, starts, weights }
}

fn scale_plane(src: &[u8], sw: usize, sh: usize, dst: &mut [u8], dw: usize, dh: usize) {
    // Horizontal pass into an intermediate dw x sh plane (skipped when the width does not change).
    let temp;
    let (mid, mid_w) = if sw == dw {
        (src, sw)
    } else {
        let horizontal = taps(sw, dw);
        let mut plane = vec![0u8; dw * sh];
        match horizontal.len {
            4 if sw == 2 * dw => halve_horizontal(src, sw, &mut plane, dw, &horizontal),
            1 => horizontal_pass::<1>(src, sw, &mut plane, dw, &horizontal),
            2 => horizontal_pass::<2>(src, sw, &mut plane, dw, &horizontal),
            3 => horizontal_pass::<3>(src, sw, &mut plane, dw, &horizontal),
            4 => horizontal_pass::<4>(src, sw, &mut plane, dw, &horizontal),
            5 => horizontal_pass::<5>(src, sw, &mut plane, dw, &horizontal),
            6 => horizontal_pass::<6>(src, sw, &mut plane, dw, &horizontal),
            _ => horizontal_any(src, sw, &mut plane, dw, &horizontal),
        }
        temp = plane;
        (&temp[..], dw)
    };
    if sh == dh {
        dst.copy_from_slice(&mid[..dw * dh]);
        return;
    }
    // Vertical pass, a row at a time over whole rows (vectorises: 16-bit weights times 8-bit pixels).
    let vertical = taps(sh, dh);
    let n = vertical.len;
    let round = 1i32 << (WEIGHT_BITS - 1);
    let mut acc = vec![0i32; mid_w];
    let halving = n == 4 && sh == 2 * dh;
    for (y, ((dst_row, &start), weights)) in
        dst.chunks_exact_mut(dw).zip(&vertical.starts).zip(vertical.weights.chunks_exact(n)).enumerate()
    {
        if halving && y > 0 && y + 1 < dh {
            // Exact 2:1 away from the edges: the taps are 1/8, 3/8, 3/8, 1/8 on rows 2y-1 .. 2y+2.
            let row = |r: usize| &mid[r * mid_w..(r + 1) * mid_w];
            let (r0, r1, r2, r3) = (row(2 * y - 1), row(2 * y), row(2 * y + 1), row(2 * y + 2));
            for ((((out, &a), &b), &c), &d) in dst_row.iter_mut().zip(r0).zip(r1).zip(r2).zip(r3) {
                *out = tent_half(a, b, c, d);
            }
            continue;
        }
        acc.fill(round);
        for (i, &weight) in weights.iter().enumerate().filter(|(_, w)| **w != 0) {
            let row = &mid[(start + i) * mid_w..(start + i + 1) * mid_w];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += i32::from(weight) * i32::from(p);
            }
        }
        for (out, &a) in dst_row.iter_mut().zip(&acc) {
            *out = (a >> WEIGHT_BITS).clamp(0, 255) as u8;
        }
    }
}

/// The 2:1 tent filter (weights 1/8, 3/8, 3/8, 1/8, the same as the generic taps), in 16-bit arithmetic.
fn tent_half(a: u8, b: u8, c: u8, d: u8) -> u8 {
    ((u16::from(a) + 3 * (u16::from(b) + u16::from(c)) + u16::from(d) + 4) >> 3) as u8
}

/// The horizontal pass for an exact 2:1 reduction: the fixed tent away from the edges, the generic
/// (renormalised) taps on the first and last pixel.
fn halve_horizontal(src: &[u8], sw: usize, dst: &mut [u8], dw: usize, taps: &Taps) {
    let round = 1i32 << (WEIGHT_BITS - 1);
    let edge = |row: &[u8], x: usize| -> u8 {
        let start = taps.starts[x];
        let acc: i32 =
            taps.weights[x * 4..x * 4 + 4].iter().zip(&row[start..]).map(|(&w, &p)| i32::from(w) * i32::from(p)).sum();
        ((acc + round) >> WEIGHT_BITS).clamp(0, 255) as u8
    };
    for (src_row, dst_row) in src.chunks_exact(sw).zip(dst.chunks_exact_mut(dw)) {
        dst_row[0] = edge(src_row, 0);
        dst_row[dw - 1] = edge(src_row, dw - 1);
        if dw > 2 {
            // Output x reads source pixels 2x-1 .. 2x+2: two consecutive pairs of `src_row[1..]`.
            let pairs = src_row[1..].chunks_exact(2);
            for ((out, ab), cd) in dst_row[1..dw - 1].iter_mut().zip(pairs.clone()).zip(pairs.skip(1)) {
                *out = tent_half(ab[0], ab[1], cd[0], cd[1]);
            }
        }
    }
}

/// The horizontal pass with a fixed tap count, so the inner dot product is unrolled.
fn horizontal_pass<const N: usize>(src: &[u8], sw: usize, dst: &mut [u8], dw: usize, taps: &Taps) {
    let round = 1i32 << (WEIGHT_BITS - 1);
    for (src_row, dst_row) in src.chunks_exact(sw).zip(dst.chunks_exact_mut(dw)) {
        for ((out, &start), weights) in dst_row.iter_mut().zip(&taps.starts).zip(taps.weights.chunks_exact(N)) {
            let (Some(pixels), Some(weights)) = (
                src_row.get(start..start + N).and_then(|p| <&[u8; N]>::try_from(p).ok()),
                <&[i16; N]>::try_from(weights).ok(),
            ) else {
                continue;
            };
            let mut acc = round;
            for k in 0..N {
                acc += i32::from(weights[k]) * i32::from(pixels[k]);
            }
            *out = (acc >> WEIGHT_BITS).clamp(0, 255) as u8;
        }
    }
}

/// The horizontal pass for large downscaling factors (more than six taps).
fn horizontal_any(src: &[u8], sw: usize, dst: &mut [u8], dw: usize, taps: &Taps) {
    let round = 1i32 << (WEIGHT_BITS - 1);
    for (src_row, dst_row) in src.chunks_exact(sw).zip(dst.chunks_exact_mut(dw)) {
        for ((out, &start), weights) in dst_row.iter_mut().zip(&taps.starts).zip(taps.weights.chunks_exact(taps.len)) {
            let acc: i32 = weights.iter().zip(&src_row[start..]).map(|(&w, &p)| i32::from(w) * i32::from(p)).sum();
            *out = ((acc + round) >> WEIGHT_BITS).clamp(0, 255) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MediaClock, SyntheticVideoSource, read_marker};

    #[test]
    fn flat_planes_stay_flat_and_timestamps_survive() {
        let mut src = VideoFrame::black(64, 48, 42).unwrap();
        src.planes_mut().0.fill(100);
        for (w, h) in [(32, 24), (17, 9), (128, 96), (1, 1)] {
            let out = scale_i420(&src, w, h).unwrap();
            assert!(out.y().iter().all(|&p| p == 100), "{w}x{h}");
            assert!(out.u().iter().all(|&p| p == 128));
            assert_eq!(out.timestamp_us(), 42);
        }
        assert_eq!(scale_i420(&src, 64, 48).unwrap(), src);
    }

    #[test]
    fn halving_averages_and_the_marker_survives_the_ladder() {
        let src = VideoFrame::new(4, 2, 0, vec![0, 100, 200, 40, 0, 100, 200, 40, 1, 2, 3, 4]).unwrap();
        let half = scale_i420(&src, 2, 1).unwrap();
        // A tent of half-width 2 centred between each pair: 1/8, 3/8, 3/8, 1/8, renormalised at the edges
        // (3/7, 3/7, 1/7 and 1/7, 3/7, 3/7).
        assert_eq!(half.y(), &[71, 117]);
        let source = SyntheticVideoSource::new(1280, 720, 30, MediaClock::new()).unwrap().with_noise(2);
        let frame = source.render(1234, 5678).unwrap();
        for (w, h) in [(640, 360), (320, 180), (960, 540)] {
            let scaled = scale_i420(&frame, w, h).unwrap();
            assert_eq!(read_marker(&scaled).map(|m| m.frame_number), Some(1234), "{w}x{h}");
        }
    }

    #[test]
    fn the_halving_fast_path_matches_the_generic_filter() {
        let source = SyntheticVideoSource::new(640, 360, 30, MediaClock::new()).unwrap().with_noise(20);
        let frame = source.render(3, 0).unwrap();
        let fast = scale_i420(&frame, 320, 180).unwrap();
        // The generic filter, plane by plane, without the fast path.
        let (sw, sh, dw, dh) = (640, 360, 320, 180);
        let generic = |src: &[u8], sw: usize, sh: usize, dw: usize, dh: usize| -> Vec<u8> {
            let h = taps(sw, dw);
            let mut mid = vec![0u8; dw * sh];
            horizontal_any(src, sw, &mut mid, dw, &h);
            let v = taps(sh, dh);
            let mut out = vec![0u8; dw * dh];
            for x in 0..dw {
                for y in 0..dh {
                    let acc: i32 = (0..v.len)
                        .map(|k| i32::from(v.weights[y * v.len + k]) * i32::from(mid[(v.starts[y] + k) * dw + x]))
                        .sum();
                    out[y * dw + x] = ((acc + (1 << (WEIGHT_BITS - 1))) >> WEIGHT_BITS) as u8;
                }
            }
            out
        };
        assert_eq!(fast.y(), generic(frame.y(), sw, sh, dw, dh).as_slice());
        assert_eq!(fast.u(), generic(frame.u(), sw / 2, sh / 2, dw / 2, dh / 2).as_slice());
    }

    #[test]
    fn weights_always_sum_to_one() {
        for (s, d) in [(1280, 640), (720, 180), (3, 7), (1000, 999), (5, 1), (1, 4)] {
            let taps = taps(s, d);
            for (start, weights) in taps.starts.iter().zip(taps.weights.chunks_exact(taps.len)) {
                assert_eq!(weights.iter().map(|&w| i32::from(w)).sum::<i32>(), 1 << WEIGHT_BITS);
                assert!(start + taps.len <= s);
            }
        }
    }
}
