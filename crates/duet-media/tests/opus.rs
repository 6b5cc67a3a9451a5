//! Opus through libopus: the synthetic audio marker survives 32 kb/s coding and packet loss (with FEC and
//! concealment), and bitrate and packet duration change on the fly.

#![allow(clippy::unwrap_used)]

use duet_media::{
    AudioMarker, AudioMarkerDetector, AudioSource, FrameDuration, MediaClock, OpusConfig, OpusDecoder, OpusEncoder,
    SyntheticAudioSource,
};

/// Encodes `seconds` of synthetic audio starting at `start_us` (with 20 ms packets), "loses" the packets for
/// which `lost` is true, decodes the rest (recovering losses with FEC from the next packet), and returns
/// the markers found.
fn through_opus(config: OpusConfig, start_us: u64, seconds: u64, lost: impl Fn(usize) -> bool) -> Vec<AudioMarker> {
    let source = SyntheticAudioSource::new(config.channels, FrameDuration::Ms10, MediaClock::new()).unwrap();
    let mut encoder = OpusEncoder::new(config).unwrap();
    let packets: Vec<_> =
        (0..seconds * 100).flat_map(|n| encoder.encode(&source.render(start_us, n * 480)).unwrap()).collect();
    assert_eq!(packets.len() as u64, seconds * 1000 / u64::from(config.frame_duration.as_millis()));
    let mut decoder = OpusDecoder::new(config.channels).unwrap();
    let mut detector = AudioMarkerDetector::new();
    let mut markers = Vec::new();
    for (i, packet) in packets.iter().enumerate() {
        let frame = if lost(i) {
            decoder.conceal(packet.duration, packets.get(i + 1).map(|p| p.data.as_slice()), packet.timestamp_us)
        } else {
            decoder.decode(&packet.data, packet.timestamp_us)
        }
        .unwrap();
        assert_eq!(frame.samples_per_channel(), packet.duration.samples_per_channel(48_000));
        markers.extend(detector.push(&frame));
    }
    markers
}

/// Checks one marker per 500 ms, each at its send time plus Opus's look-ahead (6.5 ms) within the
/// detector's precision, with consecutive counters.
fn check_markers(markers: &[AudioMarker], first_burst_us: u64, count: usize) {
    assert_eq!(markers.len(), count, "{markers:?}");
    for (i, marker) in markers.iter().enumerate() {
        let sent = first_burst_us + i as u64 * 500_000;
        assert_eq!(marker.sent_at_us(), Some(sent), "{marker:?}");
        let delay = marker.timestamp_us as i64 - sent as i64;
        assert!((0..=12_000).contains(&delay), "burst {i} found {delay} us after it was sent");
    }
}

#[test]
fn marker_survives_opus_at_32_kbps() {
    let markers = through_opus(OpusConfig::default(), 250_000, 6, |_| false);
    // Audio from 0.25 s to 6.25 s: bursts at 0.5, 1.0, ... 6.0 s.
    check_markers(&markers, 500_000, 12);
}

#[test]
fn marker_survives_stereo_and_60_ms_packets() {
    let config =
        OpusConfig { channels: 2, bitrate_bps: 48_000, frame_duration: FrameDuration::Ms60, ..OpusConfig::default() };
    check_markers(&through_opus(config, 0, 4, |_| false), 0, 8);
}

#[test]
fn marker_survives_ten_percent_loss_with_fec() {
    let config = OpusConfig { expected_loss_pct: 10, ..OpusConfig::default() };
    // Every tenth packet lost, never one inside a burst's first 10 ms (the detector needs 7.5 ms of it).
    let markers = through_opus(config, 0, 6, |i| i % 10 == 3);
    check_markers(&markers, 0, 12);
}

#[test]
fn lower_bitrate_gives_smaller_packets() {
    let source = SyntheticAudioSource::new(1, FrameDuration::Ms20, MediaClock::new()).unwrap();
    let mut encoder = OpusEncoder::new(OpusConfig { bitrate_bps: 64_000, ..OpusConfig::default() }).unwrap();
    let bytes = |encoder: &mut OpusEncoder, from: u64| -> usize {
        (from..from + 50)
            .flat_map(|n| encoder.encode(&source.render(0, n * 960)).unwrap())
            .skip(10)
            .map(|packet| packet.data.len())
            .sum()
    };
    let high = bytes(&mut encoder, 0);
    encoder.set_bitrate(12_000).unwrap();
    let low = bytes(&mut encoder, 50);
    assert!(low * 3 < high, "64 kb/s: {high} bytes, 12 kb/s: {low} bytes");
    assert_eq!(encoder.config().bitrate_bps, 12_000);
}

#[test]
fn packet_duration_changes_on_the_fly() {
    let mut source = SyntheticAudioSource::new(1, FrameDuration::Ms20, MediaClock::new()).unwrap();
    let mut encoder = OpusEncoder::new(OpusConfig::default()).unwrap();
    let mut durations = Vec::new();
    for n in 0..12 {
        if n == 4 {
            encoder.set_frame_duration(FrameDuration::Ms60);
        }
        let frame = source.next_frame().unwrap().unwrap();
        durations.extend(encoder.encode(&frame).unwrap().into_iter().map(|p| p.duration));
    }
    let expected = [FrameDuration::Ms20; 4].into_iter().chain([FrameDuration::Ms60; 2]).collect::<Vec<_>>();
    assert_eq!(durations, expected);
}

#[test]
fn garbage_packets_are_errors_or_audio_never_panics() {
    let mut decoder = OpusDecoder::new(1).unwrap();
    // An Opus packet whose TOC byte announces code 3 (arbitrary frame count) with an invalid count.
    assert!(decoder.decode(&[0x03, 0x00], 0).is_err());
    for seed in 0u32..200 {
        let packet: Vec<u8> =
            (0..(seed % 60 + 1)).map(|i| (seed.wrapping_mul(2_654_435_761) ^ (i * 97)) as u8).collect();
        if let Ok(frame) = decoder.decode(&packet, 0) {
            assert!(frame.samples_per_channel() <= 5760);
        }
    }
}

#[test]
fn fec_recovers_a_lost_packet_better_than_concealment() {
    let source = SyntheticAudioSource::new(1, FrameDuration::Ms20, MediaClock::new()).unwrap();
    let mut encoder = OpusEncoder::new(OpusConfig { expected_loss_pct: 20, ..OpusConfig::default() }).unwrap();
    let packets: Vec<_> = (0..40).flat_map(|n| encoder.encode(&source.render(0, n * 960)).unwrap()).collect();
    let lost = 30;
    let decode_with = |recover: &dyn Fn(&mut OpusDecoder) -> Vec<i16>| -> Vec<i16> {
        let mut decoder = OpusDecoder::new(1).unwrap();
        for packet in &packets[..lost] {
            decoder.decode(&packet.data, 0).unwrap();
        }
        recover(&mut decoder)
    };
    let clean = decode_with(&|d| d.decode(&packets[lost].data, 0).unwrap().into_samples());
    let fec =
        decode_with(&|d| d.conceal(FrameDuration::Ms20, Some(&packets[lost + 1].data), 0).unwrap().into_samples());
    let plc = decode_with(&|d| d.conceal(FrameDuration::Ms20, None, 0).unwrap().into_samples());
    let error = |x: &[i16]| -> f64 { x.iter().zip(&clean).map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2)).sum() };
    let signal: f64 = clean.iter().map(|&s| f64::from(s).powi(2)).sum();
    assert!(error(&fec) < error(&plc), "FEC error {:.3e}, PLC error {:.3e}", error(&fec), error(&plc));
    assert!(error(&fec) < signal / 4.0, "FEC recovery is poor: error {:.3e} vs signal {signal:.3e}", error(&fec));
}
