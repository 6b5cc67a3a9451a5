//! A VP8 keyframe declaring a huge picture is refused before libvpx allocates for it. Alone in its
//! test binary: the check reads the process's peak memory.

#![allow(clippy::unwrap_used)]

use duet_media::{MediaClock, MediaError, SyntheticVideoSource, Vp8Config, Vp8Decoder, Vp8Encoder, vp8_keyframe_size};

/// The first 10 bytes of a VP8 keyframe (RFC 6386 section 9.1): the frame tag (keyframe, version 0,
/// shown, first partition of 0 bytes), the start code, then 14-bit width and height.
fn keyframe_header(width: u16, height: u16) -> Vec<u8> {
    let mut header = vec![0x10, 0x00, 0x00, 0x9d, 0x01, 0x2a];
    header.extend_from_slice(&width.to_le_bytes());
    header.extend_from_slice(&height.to_le_bytes());
    header
}

/// Peak resident memory of this process in KiB (Linux), if known.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn a_keyframe_declaring_16383x16383_is_refused_without_allocating() {
    let mut decoder = Vp8Decoder::new().unwrap();
    let before = peak_rss_kib();

    let huge = keyframe_header(16_383, 16_383);
    assert_eq!(vp8_keyframe_size(&huge), Some((16_383, 16_383)));
    let error = decoder.decode(&huge, 0).unwrap_err();
    assert!(matches!(error, MediaError::FrameTooLarge { width: 16_383, height: 16_383 }), "{error}");
    assert!(!error.needs_keyframe() && decoder.awaiting_keyframe());
    // Too large by area with both dimensions under 4096; 4K UHD is not.
    let wide = keyframe_header(4000, 4000);
    assert!(matches!(decoder.decode(&wide, 0), Err(MediaError::FrameTooLarge { .. })));
    // libvpx would have set up ~2 GB of frame buffers and touched ~850 MB of them.
    if let (Some(before), Some(after)) = (before, peak_rss_kib()) {
        assert!(after - before < 64 * 1024, "peak memory grew from {before} KiB to {after} KiB");
    }
    // 4K UHD is within the cap: libvpx gets it (and rejects this header-only frame).
    let uhd = keyframe_header(3840, 2160);
    assert!(matches!(decoder.decode(&uhd, 0), Err(MediaError::CorruptFrame { .. })));

    // A real stream decodes afterwards.
    let source = SyntheticVideoSource::new(320, 180, 30, MediaClock::new()).unwrap();
    let mut encoder = Vp8Encoder::new(Vp8Config::new(320, 180, 30, 300)).unwrap();
    let key = encoder.encode(&source.render(0, 0).unwrap()).unwrap().unwrap();
    assert_eq!(vp8_keyframe_size(&key.data), Some((320, 180)));
    let picture = decoder.decode(&key.data, 0).unwrap().unwrap();
    assert_eq!((picture.width(), picture.height()), (320, 180));
}
