//! Y4M and WAV files: round trips through the writers and readers, looping, resampling, and clear typed
//! errors for corrupt, unsupported and missing files.

#![allow(clippy::unwrap_used)]

use std::f64::consts::TAU;
use std::fs;
use std::path::Path;

use duet_media::{
    AudioFrame, AudioSink, AudioSource, FrameDuration, FrameRate, MediaClock, MediaError, SyntheticVideoSource,
    VideoFrame, VideoSink, VideoSource, WavSource, WavWriter, Y4mSource, Y4mWriter, read_marker,
};

fn frames(count: u64) -> Vec<VideoFrame> {
    let source = SyntheticVideoSource::new(320, 180, 30, MediaClock::new()).unwrap();
    (0..count).map(|n| source.render(n, n).unwrap()).collect()
}

#[test]
fn y4m_round_trip_and_loop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clip.y4m");
    let originals = frames(3);
    let mut writer = Y4mWriter::create(&path, 320, 180, FrameRate { num: 30_000, den: 1001 }).unwrap();
    for frame in &originals {
        writer.render(frame.clone()).unwrap();
    }
    assert!(writer.render(VideoFrame::black(2, 2, 0).unwrap()).is_err(), "size mismatch is refused");
    writer.finish().unwrap();

    let clock = MediaClock::new();
    let mut source = Y4mSource::open(&path, clock).unwrap();
    let format = source.format();
    assert_eq!((format.width, format.height, format.frame_rate), (320, 180, FrameRate { num: 30_000, den: 1001 }));
    for original in &originals {
        let frame = source.next_frame().unwrap().unwrap();
        assert_eq!(frame.data(), original.data());
        assert!(frame.timestamp_us() <= clock.now_us());
    }
    assert!(source.next_frame().unwrap().is_none(), "not looping: the file ends");

    let mut looping = Y4mSource::open(&path, clock).unwrap().looping(true);
    let numbers: Vec<u64> =
        (0..7).map(|_| read_marker(&looping.next_frame().unwrap().unwrap()).unwrap().frame_number).collect();
    assert_eq!(numbers, [0, 1, 2, 0, 1, 2, 0]);
}

#[test]
fn y4m_header_variants_and_frame_parameters() {
    let dir = tempfile::tempdir().unwrap();
    // 4x2 luma plus two 2x1 chroma planes.
    let frame = vec![7u8; 4 * 2 + 2 * 2];
    for header in ["YUV4MPEG2 W4 H2 F25:1 C420jpeg", "YUV4MPEG2 W4 H2 F25:1 C420mpeg2 Ip A0:0", "YUV4MPEG2 W4 H2 F25:1"]
    {
        let path = dir.path().join("variant.y4m");
        let mut bytes = format!("{header}\nFRAME Ixyz\n").into_bytes();
        bytes.extend_from_slice(&frame);
        fs::write(&path, bytes).unwrap();
        let mut source = Y4mSource::open(&path, MediaClock::new()).unwrap();
        assert_eq!(source.next_frame().unwrap().unwrap().data(), frame.as_slice(), "{header}");
    }
}

fn open_y4m(dir: &Path, name: &str, bytes: &[u8]) -> Result<Vec<VideoFrame>, MediaError> {
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    let mut source = Y4mSource::open(&path, MediaClock::new())?;
    let mut frames = Vec::new();
    while let Some(frame) = source.next_frame()? {
        frames.push(frame);
    }
    Ok(frames)
}

#[test]
fn y4m_errors_are_typed_and_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8]); 6] = [
        ("garbage.y4m", b"\x00\x01 not a video at all\n"),
        ("empty.y4m", b""),
        ("no-newline.y4m", b"YUV4MPEG2 W4 H2 F25:1"),
        ("no-width.y4m", b"YUV4MPEG2 H2 F25:1\n"),
        ("truncated.y4m", b"YUV4MPEG2 W4 H2 F25:1\nFRAME\n\x01\x02\x03"),
        ("bad-frame-tag.y4m", b"YUV4MPEG2 W4 H2 F25:1\nFRAMX\n123456789012"),
    ];
    for (name, bytes) in cases {
        let error = open_y4m(dir.path(), name, bytes).unwrap_err();
        assert!(matches!(error, MediaError::InvalidFile { .. }), "{name}: {error}");
        assert!(error.to_string().contains(name), "the message names the file: {error}");
    }
    let error = open_y4m(dir.path(), "444.y4m", b"YUV4MPEG2 W4 H2 F25:1 C444\n").unwrap_err();
    assert!(matches!(error, MediaError::UnsupportedFile { .. }), "{error}");
    assert!(error.to_string().contains("C444") && error.to_string().contains("444.y4m"), "{error}");

    let missing = dir.path().join("does-not-exist.y4m");
    let error = Y4mSource::open(&missing, MediaClock::new()).unwrap_err();
    assert!(matches!(&error, MediaError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound));
    assert!(error.to_string().contains("does-not-exist.y4m"), "{error}");
}

fn tone(rate: u32, channels: u16, seconds: f64, frequency: f64) -> Vec<i16> {
    let count = (f64::from(rate) * seconds) as usize;
    (0..count)
        .flat_map(|i| {
            let v = (8000.0 * (TAU * frequency * i as f64 / f64::from(rate)).sin()) as i16;
            std::iter::repeat_n(v, usize::from(channels))
        })
        .collect()
}

/// Estimated frequency of a mono signal from its zero crossings.
fn frequency(samples: &[i16], rate: u32) -> f64 {
    let crossings = samples.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
    crossings as f64 / 2.0 / (samples.len() as f64 / f64::from(rate))
}

#[test]
fn wav_round_trip_at_48k_and_resampling_from_44k() {
    let dir = tempfile::tempdir().unwrap();
    let clock = MediaClock::new();

    // 48 kHz mono: samples come back bit-exact, in 20 ms frames with sample-accurate timestamps.
    let path = dir.path().join("mono48.wav");
    let samples = tone(48_000, 1, 0.5, 440.0);
    let mut writer = WavWriter::create(&path, 48_000, 1).unwrap();
    writer.play(&AudioFrame::new(samples.clone(), 48_000, 1, 0).unwrap()).unwrap();
    assert!(writer.play(&AudioFrame::silence(16_000, 1, 10, 0).unwrap()).is_err());
    writer.finish().unwrap();
    let mut source = WavSource::open(&path, FrameDuration::Ms20, clock).unwrap();
    let mut read = Vec::new();
    let mut timestamps = Vec::new();
    while let Some(frame) = source.next_frame().unwrap() {
        assert_eq!((frame.sample_rate(), frame.channels(), frame.samples_per_channel()), (48_000, 1, 960));
        timestamps.push(frame.timestamp_us());
        read.extend_from_slice(frame.samples());
    }
    assert_eq!(read.len(), 25 * 960);
    assert_eq!(read, samples);
    assert!(timestamps.windows(2).all(|w| w[1] - w[0] == 20_000));

    // 44.1 kHz stereo: resampled to 48 kHz, same pitch, same duration, looping on request.
    let path = dir.path().join("stereo44.wav");
    let mut writer = WavWriter::create(&path, 44_100, 2).unwrap();
    writer.play(&AudioFrame::new(tone(44_100, 2, 1.0, 1000.0), 44_100, 2, 0).unwrap()).unwrap();
    drop(writer); // finishing on drop works too
    let mut source = WavSource::open(&path, FrameDuration::Ms10, clock).unwrap();
    assert_eq!((source.file_sample_rate(), source.format().sample_rate, source.format().channels), (44_100, 48_000, 2));
    let mut left = Vec::new();
    while let Some(frame) = source.next_frame().unwrap() {
        left.extend(frame.samples().iter().step_by(2));
    }
    assert_eq!(left.len(), 48_000, "one second at 48 kHz (last frame padded)");
    let pitch = frequency(&left[100..47_000], 48_000);
    assert!((pitch - 1000.0).abs() < 5.0, "pitch {pitch} Hz");

    let mut looping = WavSource::open(&path, FrameDuration::Ms20, clock).unwrap().looping(true);
    for _ in 0..120 {
        assert!(looping.next_frame().unwrap().is_some(), "2.4 s from a 1 s file");
    }
}

fn wav_bytes(tag: u16, channels: u16, rate: u32, bits: u16, data: &[u8]) -> Vec<u8> {
    let align = channels * bits / 8;
    let mut bytes = b"RIFF".to_vec();
    bytes.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    bytes.extend_from_slice(b"WAVEfmt ");
    bytes.extend_from_slice(&16u32.to_le_bytes());
    for field in [
        &tag.to_le_bytes()[..],
        &channels.to_le_bytes(),
        &rate.to_le_bytes(),
        &(rate * u32::from(align)).to_le_bytes(),
        &align.to_le_bytes(),
        &bits.to_le_bytes(),
    ] {
        bytes.extend_from_slice(field);
    }
    bytes.extend_from_slice(b"data");
    bytes.extend_from_slice(&(data.len() as u32).to_le_bytes());
    bytes.extend_from_slice(data);
    bytes
}

#[test]
fn wav_errors_are_typed_and_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let open = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        fs::write(&path, bytes).unwrap();
        WavSource::open(&path, FrameDuration::Ms20, MediaClock::new())
    };
    let mut no_data = wav_bytes(1, 1, 48_000, 16, &[]);
    no_data.truncate(36);
    let invalid: [(&str, Vec<u8>); 5] = [
        ("text.wav", b"this is not a wav file at all".to_vec()),
        ("short.wav", b"RIFF".to_vec()),
        ("no-data.wav", no_data),
        ("bad-align.wav", {
            let mut bytes = wav_bytes(1, 2, 48_000, 16, &[0; 8]);
            bytes[32] = 3;
            bytes
        }),
        ("rate.wav", wav_bytes(1, 1, 1_000, 16, &[0; 8])),
    ];
    for (name, bytes) in invalid {
        let error = open(name, &bytes).unwrap_err();
        assert!(matches!(error, MediaError::InvalidFile { .. }), "{name}: {error}");
        assert!(error.to_string().contains(name), "{error}");
    }
    for (name, bytes, text) in [
        ("float.wav", wav_bytes(3, 1, 48_000, 32, &[0; 8]), "floating"),
        ("8bit.wav", wav_bytes(1, 1, 8_000, 8, &[0; 8]), "8-bit"),
        ("surround.wav", wav_bytes(1, 6, 48_000, 16, &[0; 24]), "6 channels"),
    ] {
        let error = open(name, &bytes).unwrap_err();
        assert!(matches!(error, MediaError::UnsupportedFile { .. }), "{name}: {error}");
        assert!(error.to_string().contains(text) && error.to_string().contains(name), "{error}");
    }
    // A data chunk that claims more than the file holds (a streaming writer's header) is read to the end.
    let mut streaming = wav_bytes(1, 1, 48_000, 16, &[1, 0, 2, 0]);
    streaming[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut source = open("streaming.wav", &streaming).unwrap();
    assert_eq!(&source.next_frame().unwrap().unwrap().samples()[..2], &[1, 2]);

    let error = WavSource::open(dir.path().join("nope.wav"), FrameDuration::Ms20, MediaClock::new()).unwrap_err();
    assert!(matches!(error, MediaError::Io { .. }) && error.to_string().contains("nope.wav"), "{error}");
}
