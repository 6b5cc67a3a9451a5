//! Devices on a machine that may have none (CI has no camera and no sound card): listing never panics,
//! and absence comes out quickly as the typed "no device" errors the call engine falls back from.

#![allow(clippy::unwrap_used)]
#![cfg(all(feature = "camera", feature = "audio-device"))]

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use duet_media::{
    AudioFrame, AudioSource, CameraConfig, CameraSource, MediaClock, MediaError, MicrophoneConfig, MicrophoneSource,
    SpeakerConfig, SpeakerSink, VideoSource, list_devices, open_audio_sink,
};

/// Runs `f` on a thread and fails the test if it takes more than 20 s (a hang), returning its result.
fn within_time_limit<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20)).expect("device call hung for 20 s")
}

#[test]
fn listing_never_panics_and_reads_clearly() {
    let devices = within_time_limit(list_devices);
    let text = devices.to_string();
    for kind in ["cameras", "microphones", "speakers"] {
        assert!(text.contains(kind), "{text}");
    }
    if devices.cameras.is_empty() {
        assert!(text.contains("cameras: none"), "{text}");
    }
}

#[test]
fn no_camera_is_a_typed_error_not_a_panic() {
    let cameras = within_time_limit(|| list_devices().cameras);
    let started = Instant::now();
    let result = within_time_limit(|| CameraSource::open(CameraConfig::default(), MediaClock::new()));
    match result {
        Err(error) => {
            assert!(matches!(error, MediaError::NoCamera { .. }), "{error}");
            assert!(error.is_device_unavailable());
            assert!(error.to_string().starts_with("no camera available"), "{error}");
            if cameras.is_empty() {
                assert!(started.elapsed() < Duration::from_secs(5), "absence is reported at once");
            }
        }
        // A machine with a working camera: it must deliver a frame of its advertised size.
        Ok(mut camera) => {
            assert!(!cameras.is_empty());
            let format = camera.format();
            let frame = camera.next_frame().unwrap().unwrap();
            assert_eq!((frame.width(), frame.height()), (format.width, format.height));
        }
    }
    // An index that does not exist is never there.
    let missing = within_time_limit(|| {
        CameraSource::open(CameraConfig { index: 9999, ..CameraConfig::default() }, MediaClock::new())
    });
    assert!(matches!(missing, Err(MediaError::NoCamera { .. })));
}

#[test]
fn no_microphone_is_a_typed_error_not_a_panic() {
    let microphones = within_time_limit(|| list_devices().microphones);
    let result = within_time_limit(|| MicrophoneSource::open(MicrophoneConfig::default(), MediaClock::new()));
    match result {
        // On CI cpal has a default input device whose configuration cannot be read: present but unusable,
        // which must come out like absent.
        Err(error) => {
            assert!(matches!(error, MediaError::NoMicrophone { .. }), "{error}");
            assert!(error.is_device_unavailable());
            assert!(error.to_string().starts_with("no usable microphone"), "{error}");
        }
        Ok(mut microphone) => {
            assert!(!microphones.is_empty(), "a microphone opened that the listing did not show");
            let frame: AudioFrame = within_time_limit(move || microphone.next_frame()).unwrap().unwrap();
            assert_eq!((frame.sample_rate(), frame.channels(), frame.samples_per_channel()), (48_000, 1, 960));
        }
    }
    let named = within_time_limit(|| {
        MicrophoneSource::open(
            MicrophoneConfig { device: Some("no such microphone".into()), ..MicrophoneConfig::default() },
            MediaClock::new(),
        )
    });
    let error = named.unwrap_err();
    assert!(
        matches!(error, MediaError::NoMicrophone { .. }) && error.to_string().contains("no such microphone"),
        "{error}"
    );
}

#[test]
fn no_speaker_falls_back_to_the_null_sink() {
    let speakers = within_time_limit(|| list_devices().speakers);
    match within_time_limit(|| SpeakerSink::open(SpeakerConfig::default())) {
        Err(error) => assert!(matches!(error, MediaError::NoSpeaker { .. }), "{error}"),
        Ok(_) => assert!(!speakers.is_empty(), "a speaker opened that the listing did not show"),
    }
    // Either way, the automatic choice plays without error.
    let mut sink = within_time_limit(|| open_audio_sink(SpeakerConfig::default()));
    for n in 0..5 {
        sink.play(&AudioFrame::silence(48_000, 1, 960, n * 20_000).unwrap()).unwrap();
    }
}
