//! I420 scaling for the lower rungs of the bitrate ladder (and for camera sizes that do not match).
//!
//! Each plane goes through `fast_image_resize`'s convolution (SSE4.1/AVX2/NEON chosen at run time) with
//! a bilinear (tent) filter whose support grows with the downscaling factor, so 720p -> 360p -> 180p
//! does not alias.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use crate::{MediaError, VideoFrame};

/// Scales an I420 frame to `width` x `height` (aspect ratio is the caller's business), keeping its
/// timestamp. The same size returns a copy.
pub fn scale_i420(src: &VideoFrame, width: u32, height: u32) -> Result<VideoFrame, MediaError> {
    let mut dst = VideoFrame::black(width, height, src.timestamp_us())?;
    let (sw, sh) = (src.width(), src.height());
    let (scw, sch) = (src.chroma_width(), src.chroma_height());
    let (cw, ch) = (dst.chroma_width(), dst.chroma_height());
    let (y, u, v) = dst.planes_mut();
    if (width, height) == (sw, sh) {
        y.copy_from_slice(src.y());
        u.copy_from_slice(src.u());
        v.copy_from_slice(src.v());
        return Ok(dst);
    }
    RESIZER.with_borrow_mut(|resizer| {
        let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
        let mut plane = |from: &[u8], fw: u32, fh: u32, to: &mut [u8], tw: u32, th: u32| {
            let invalid =
                |e: &dyn std::fmt::Display| MediaError::InvalidArgument(format!("scaling {fw}x{fh} to {tw}x{th}: {e}"));
            let from = ImageRef::new(fw, fh, from, PixelType::U8).map_err(|e| invalid(&e))?;
            let mut to = Image::from_slice_u8(tw, th, to, PixelType::U8).map_err(|e| invalid(&e))?;
            resizer.resize(&from, &mut to, &options).map_err(|e| invalid(&e))
        };
        plane(src.y(), sw, sh, y, width, height)?;
        plane(src.u(), scw, sch, u, cw, ch)?;
        plane(src.v(), scw, sch, v, cw, ch)
    })?;
    Ok(dst)
}

thread_local! {
    /// One resizer per thread (the media threads scale every frame), so its filter buffers are reused.
    static RESIZER: std::cell::RefCell<Resizer> = std::cell::RefCell::new(Resizer::new());
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
    fn downscaling_filters_out_detail_finer_than_the_output_grid() {
        // One-pixel stripes: a point-sampling scaler would keep 0 or 255; an anti-aliasing one averages.
        let (w, h) = (64u32, 32u32);
        let stripes: Vec<u8> = (0..w * h).map(|i| if i % 2 == 0 { 0 } else { 255 }).collect();
        let chroma = vec![128u8; (w * h / 2) as usize];
        let src = VideoFrame::new(w, h, 0, [stripes, chroma].concat()).unwrap();
        for (dw, dh) in [(16, 8), (21, 11), (32, 16)] {
            let out = scale_i420(&src, dw, dh).unwrap();
            assert!(out.y().iter().all(|&p| (100..=155).contains(&p)), "{dw}x{dh}: {:?}", &out.y()[..8]);
        }
    }
}
