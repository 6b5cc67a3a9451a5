//! VP8 through libvpx: the frame marker survives real-time encoding, bitrate changes take effect,
//! keyframes come on demand, and bad input is reported, not decoded into garbage.

#![allow(clippy::unwrap_used)]

use duet_media::{
    Marker, MarkerCheckSink, MarkerReport, MediaClock, MediaError, SyntheticVideoSource, VideoFrame, VideoSink,
    VideoSource, Vp8Config, Vp8Decoder, Vp8Encoder, is_vp8_keyframe, read_marker, scale_i420,
};

const FRAME_US: u64 = 33_333;

struct RoundTrip {
    encoded: u64,
    decoded_with_marker: u64,
    kbps: f64,
    report: MarkerReport,
}

/// Encodes `frames` synthetic frames (with camera-like noise) stamped 33 ms apart (rate control reads the
/// timestamps, so they must advance at the real frame rate), checks every decoded frame's marker, and counts
/// them with a [`MarkerCheckSink`].
fn marker_round_trip(width: u32, height: u32, kbps: u32, frames: u64) -> RoundTrip {
    let source = SyntheticVideoSource::new(width, height, 30, MediaClock::new()).unwrap().with_noise(3).with_pan(2);
    let mut encoder = Vp8Encoder::new(Vp8Config::new(width, height, 30, kbps)).unwrap();
    let mut decoder = Vp8Decoder::new().unwrap();
    let mut sink = MarkerCheckSink::new(MediaClock::new());
    let (mut encoded, mut decoded_with_marker, mut bytes) = (0, 0, 0);
    for n in 0..frames {
        let timestamp_us = 1_000_000 + n * FRAME_US;
        let frame = source.render(n, timestamp_us).unwrap();
        let Some(packet) = encoder.encode(&frame).unwrap() else {
            continue; // skipped by rate control
        };
        encoded += 1;
        bytes += packet.data.len() as u64;
        assert_eq!(packet.timestamp_us, timestamp_us);
        let picture = decoder.decode(&packet.data, packet.timestamp_us).unwrap().expect("VP8 frames are shown");
        assert_eq!((picture.width(), picture.height(), picture.timestamp_us()), (width, height, timestamp_us));
        let marker = read_marker(&picture);
        assert_eq!(marker, Some(Marker { frame_number: n, timestamp_us }), "frame {n} at {width}x{height} {kbps} kb/s");
        decoded_with_marker += 1;
        sink.render(picture).unwrap();
    }
    let seconds = frames as f64 * FRAME_US as f64 / 1e6;
    let report = sink.report();
    assert_eq!((report.frames, report.markers, report.duplicates, report.reordered), (encoded, encoded, 0, 0));
    // Frames skipped by rate control are exactly the losses the sink sees between the first and the last.
    let last = report.last_frame.unwrap();
    assert_eq!(report.lost, last + 1 - encoded, "{report:?}");
    RoundTrip { encoded, decoded_with_marker, kbps: bytes as f64 * 8.0 / 1000.0 / seconds, report }
}

fn check(result: &RoundTrip, frames: u64, target_kbps: f64) {
    assert_eq!(result.decoded_with_marker, result.encoded);
    assert_eq!(result.report.first_frame, Some(0));
    assert!(
        result.encoded * 10 >= frames * 8,
        "rate control skipped too many frames: {} of {frames} encoded",
        result.encoded
    );
    assert!(
        result.kbps < target_kbps * 1.4 && result.kbps > target_kbps * 0.4,
        "achieved {:.0} kb/s for a {target_kbps} kb/s target",
        result.kbps
    );
}

#[test]
fn marker_survives_vp8_at_360p() {
    for kbps in [300, 1500] {
        let result = marker_round_trip(640, 360, kbps, 240);
        check(&result, 240, f64::from(kbps));
    }
}

#[test]
fn marker_survives_vp8_at_720p() {
    let result = marker_round_trip(1280, 720, 1500, 120);
    check(&result, 120, 1500.0);
    // 300 kb/s is a fifth of what panning 720p needs: rate control skips most frames (the ladder would have
    // switched to 360p long before), but every frame that does get through still carries its marker.
    let starved = marker_round_trip(1280, 720, 300, 120);
    assert!(starved.encoded >= 8, "{} frames encoded", starved.encoded);
    assert_eq!(starved.decoded_with_marker, starved.encoded);
}

#[test]
fn marker_survives_every_ladder_rung_and_size() {
    for (width, height, kbps) in [(960, 540, 1000), (480, 270, 400), (320, 180, 600), (320, 180, 150)] {
        let result = marker_round_trip(width, height, kbps, 90);
        assert_eq!(result.decoded_with_marker, result.encoded, "{width}x{height}");
        assert!(result.encoded >= 70, "{width}x{height} at {kbps} kb/s: {} of 90 encoded", result.encoded);
    }
}

#[test]
fn marker_survives_the_ladder_down_to_180p() {
    let source = SyntheticVideoSource::new(1280, 720, 30, MediaClock::new()).unwrap().with_noise(2);
    let mut encoder = Vp8Encoder::new(Vp8Config::new(320, 180, 15, 150)).unwrap();
    let mut decoder = Vp8Decoder::new().unwrap();
    let mut decoded = 0;
    for n in 0..60 {
        let small = scale_i420(&source.render(n, n * 66_666).unwrap(), 320, 180).unwrap();
        if let Some(packet) = encoder.encode(&small).unwrap() {
            let picture = decoder.decode(&packet.data, packet.timestamp_us).unwrap().unwrap();
            assert_eq!(read_marker(&picture).map(|m| m.frame_number), Some(n));
            decoded += 1;
        }
    }
    assert!(decoded >= 45, "{decoded} of 60");
}

#[test]
fn latency_is_measured_on_the_senders_clock() {
    // A real-time run: the source stamps frames on the clock, the sink reads the marker on the same clock.
    let clock = MediaClock::new();
    let mut source = SyntheticVideoSource::new(640, 360, 30, clock).unwrap();
    let mut encoder = Vp8Encoder::new(Vp8Config::new(640, 360, 30, 800)).unwrap();
    let mut decoder = Vp8Decoder::new().unwrap();
    let mut sink = MarkerCheckSink::new(clock);
    let start = std::time::Instant::now();
    for n in 0..20u32 {
        std::thread::sleep(
            (start + std::time::Duration::from_micros(FRAME_US) * n)
                .saturating_duration_since(std::time::Instant::now()),
        );
        let frame = source.next_frame().unwrap().unwrap();
        if let Some(packet) = encoder.encode(&frame).unwrap() {
            sink.render(decoder.decode(&packet.data, packet.timestamp_us).unwrap().unwrap()).unwrap();
        }
    }
    let report = sink.report();
    assert_eq!((report.first_frame, report.lost, report.unreadable), (Some(0), 0, 0), "{report:?}");
    let latency = report.latency.unwrap();
    // Encode plus decode of a 360p frame: milliseconds, even in a debug build.
    assert!(latency.p50_us > 0 && latency.max_us < 100_000, "{latency:?}");
}

#[test]
fn lower_bitrate_takes_effect_on_the_fly() {
    let source = SyntheticVideoSource::new(640, 360, 30, MediaClock::new()).unwrap().with_noise(3);
    let mut encoder = Vp8Encoder::new(Vp8Config::new(640, 360, 30, 1500)).unwrap();
    let window_bytes = |encoder: &mut Vp8Encoder, from: u64| -> usize {
        (from..from + 90)
            .filter_map(|n| encoder.encode(&source.render(n, n * FRAME_US).unwrap()).unwrap())
            .skip(45) // let rate control settle
            .map(|packet| {
                assert!(!packet.keyframe, "a bitrate change must not force a keyframe");
                packet.data.len()
            })
            .sum()
    };
    let high = window_bytes(&mut encoder, 0);
    encoder.set_bitrate(300).unwrap();
    assert_eq!(encoder.config().bitrate_kbps, 300);
    let low = window_bytes(&mut encoder, 90);
    assert!(low * 3 < high, "1500 kb/s: {high} bytes, 300 kb/s: {low} bytes");
    encoder.set_bitrate(1500).unwrap();
    let again = window_bytes(&mut encoder, 180);
    assert!(again > low * 3, "back to 1500 kb/s: {again} bytes");
    assert!(encoder.set_bitrate(0).is_err());
}

#[test]
fn keyframes_come_on_demand_only() {
    let source = SyntheticVideoSource::new(640, 360, 30, MediaClock::new()).unwrap();
    let mut encoder = Vp8Encoder::new(Vp8Config::new(640, 360, 30, 800)).unwrap();
    let mut keyframes = Vec::new();
    for n in 0..90 {
        if n == 40 || n == 41 || n == 70 {
            encoder.request_keyframe();
        }
        if let Some(packet) = encoder.encode(&source.render(n, n * FRAME_US).unwrap()).unwrap() {
            assert_eq!(packet.keyframe, is_vp8_keyframe(&packet.data));
            if packet.keyframe {
                keyframes.push(n);
            }
        }
    }
    // The first frame, then each request (two requests in a row give two keyframes).
    assert_eq!(keyframes, [0, 40, 41, 70]);
}

#[test]
fn resolution_change_recreates_the_encoder_with_a_keyframe() {
    let big = SyntheticVideoSource::new(640, 360, 30, MediaClock::new()).unwrap();
    let small = SyntheticVideoSource::new(320, 180, 30, MediaClock::new()).unwrap();
    let mut encoder = Vp8Encoder::new(Vp8Config::new(640, 360, 30, 600)).unwrap();
    let mut decoder = Vp8Decoder::new().unwrap();
    for n in 0..20 {
        let frame = if n < 10 { big.render(n, n * FRAME_US) } else { small.render(n, n * FRAME_US) }.unwrap();
        let packet = encoder.encode(&frame).unwrap().unwrap();
        assert_eq!(packet.keyframe, n == 0 || n == 10, "frame {n}");
        let picture = decoder.decode(&packet.data, packet.timestamp_us).unwrap().unwrap();
        assert_eq!(picture.width(), if n < 10 { 640 } else { 320 });
        assert_eq!(read_marker(&picture).map(|m| m.frame_number), Some(n));
    }
    assert_eq!((encoder.config().width, encoder.config().height), (320, 180));
}

#[test]
fn decoder_reports_garbage_and_waits_for_a_keyframe() {
    let source = SyntheticVideoSource::new(320, 180, 30, MediaClock::new()).unwrap();
    let mut encoder = Vp8Encoder::new(Vp8Config::new(320, 180, 30, 300)).unwrap();
    let packets: Vec<_> =
        (0..6).map(|n| encoder.encode(&source.render(n, n * FRAME_US).unwrap()).unwrap().unwrap()).collect();
    let mut decoder = Vp8Decoder::new().unwrap();

    // A delta frame first: nothing to predict from.
    let error = decoder.decode(&packets[1].data, 0).unwrap_err();
    assert!(matches!(error, MediaError::KeyframeRequired) && error.needs_keyframe());

    // Keyframe-shaped garbage (valid tag and start code, a new size, nonsense after): libvpx rejects it.
    let mut fake_key = packets[0].data[..10].to_vec();
    fake_key.extend((0..500u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    fake_key[6..10].copy_from_slice(&[0x80, 0x02, 0x68, 0x01]);
    let error = decoder.decode(&fake_key, 0).unwrap_err();
    assert!(matches!(error, MediaError::CorruptFrame { .. }), "{error}");

    // A truncated keyframe is rejected too.
    let truncated = &packets[0].data[..packets[0].data.len() / 3];
    assert!(decoder.decode(truncated, 0).unwrap_err().needs_keyframe());
    assert!(decoder.awaiting_keyframe());

    // The real keyframe resumes decoding; then pure garbage as a delta frame is an error, and the decoder
    // refuses further delta frames until the next keyframe.
    assert!(decoder.decode(&packets[0].data, 0).unwrap().is_some());
    assert!(!decoder.awaiting_keyframe());
    let garbage: Vec<u8> = (0..300u32).map(|i| (i.wrapping_mul(40_503) >> 7) as u8 | 1).collect();
    assert!(decoder.decode(&garbage, 0).unwrap_err().needs_keyframe());
    assert!(matches!(decoder.decode(&packets[2].data, 0), Err(MediaError::KeyframeRequired)));
    assert!(decoder.decode(&[], 0).unwrap_err().needs_keyframe());
}

#[test]
fn encoder_and_decoder_move_to_other_threads_and_reject_bad_configs() {
    let mut encoder = Vp8Encoder::new(Vp8Config::new(320, 180, 30, 300)).unwrap();
    let frame = VideoFrame::black(320, 180, 0).unwrap();
    let packet = std::thread::spawn(move || encoder.encode(&frame).unwrap().unwrap()).join().unwrap();
    let mut decoder = Vp8Decoder::new().unwrap();
    let picture = std::thread::spawn(move || decoder.decode(&packet.data, 5).unwrap().unwrap()).join().unwrap();
    assert_eq!(picture.timestamp_us(), 5);

    for bad in [
        Vp8Config { fps: 0, ..Vp8Config::new(320, 180, 30, 300) },
        Vp8Config { cpu_used: 17, ..Vp8Config::new(320, 180, 30, 300) },
        Vp8Config { max_quantizer: 64, ..Vp8Config::new(320, 180, 30, 300) },
        Vp8Config::new(0, 180, 30, 300),
        Vp8Config::new(320, 180, 30, 0),
    ] {
        assert!(matches!(Vp8Encoder::new(bad), Err(MediaError::InvalidArgument(_))));
    }
}
