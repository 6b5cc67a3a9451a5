//! Audio processing on simulated rooms: echo cancellation (ERLE after 2 s, for echo delays of 40,
//! 100 and 200 ms), near-end speech in double talk, noise suppression at 5 dB SNR, gain control,
//! stages switched mid-stream, and the offline WAV path.
//!
//! The far end and the near end are speech-like voices (see `audio_signals`); the echo is the far
//! end through a room impulse response (RT60 200 ms, -10 dB) and a delay, plus microphone noise at
//! -50 dBFS. Measures are computed on the part after 2 s (convergence).

mod audio_signals;

use std::path::Path;
use std::sync::OnceLock;

use audio_signals::{
    Scene, coloured_noise, db, energy, erle, hagerman_snr, mix, near_end_attenuation, process, rms, run, to_i16,
    white_noise,
};
use duet_media::{
    AudioProcessor, AudioSink, AudioSource, FrameDuration, MediaClock, MediaError, PROCESSING_FRAME, ProcessingConfig,
    WavSource, WavWriter, process_wav_files,
};

const SECONDS: f64 = 10.0;
/// The near end starts talking after 3 s: the echo canceller has converged on the far end alone.
const NEAR_STARTS: f64 = 3.0;
/// Blocks of 10 ms before measuring: 2 s of convergence.
const CONVERGED: usize = 200;
const DELAYS_MS: [usize; 3] = [40, 100, 200];

/// Echo cancellation alone (with its high-pass filter): what ERLE and double talk are about.
const AEC: ProcessingConfig =
    ProcessingConfig { echo_cancellation: true, noise_suppression: false, gain_control: false };
const OFF: ProcessingConfig =
    ProcessingConfig { echo_cancellation: false, noise_suppression: false, gain_control: false };

fn scene() -> &'static Scene {
    static SCENE: OnceLock<Scene> = OnceLock::new();
    SCENE.get_or_init(|| Scene::new(SECONDS, NEAR_STARTS))
}

/// The microphone hearing the far end's echo after `delay_ms` (and the near end when `talking`).
fn mic(delay_ms: usize, talking: bool) -> Vec<i16> {
    scene().mic(delay_ms, talking)
}

fn far() -> Vec<i16> {
    scene().far_i16()
}

#[test]
fn echo_is_cancelled_by_25_db_after_2_s_at_40_100_200_ms() {
    let far = far();
    for delay in DELAYS_MS {
        let mic = mic(delay, false);
        let out = process(AEC, &far, &mic);
        let erle = erle(&mic, &out, scene().echoing(delay), CONVERGED);
        eprintln!("delay {delay} ms: ERLE {erle:.1} dB");
        assert!(erle >= 25.0, "delay {delay} ms: ERLE {erle:.1} dB");
    }
}

#[test]
fn near_end_survives_double_talk_within_3_db() {
    let far = far();
    let silence = vec![0i16; far.len()];
    for delay in DELAYS_MS {
        let alone = process(AEC, &silence, &scene().near_alone());
        let mic = mic(delay, true);
        let mixed = process(AEC, &far, &mic);
        let attenuation = near_end_attenuation(&alone, &mixed, &scene().near.active, CONVERGED);
        // The echo really was there and was cancelled where the near end is quiet.
        let near_silent = |i: usize| {
            scene().near.samples.chunks(PROCESSING_FRAME).nth(i).is_some_and(|block| block.iter().all(|&x| x == 0.0))
        };
        let echoing = scene().echoing(delay);
        let far_only = |i: usize| echoing(i) && near_silent(i);
        let erle = db(energy(&mic, CONVERGED, far_only), energy(&mixed, CONVERGED, far_only));
        eprintln!("delay {delay} ms: near end attenuated {attenuation:.2} dB, ERLE outside double talk {erle:.1} dB");
        assert!(attenuation < 3.0, "delay {delay} ms: near end attenuated by {attenuation:.2} dB");
        assert!(erle >= 10.0, "delay {delay} ms: ERLE outside double talk {erle:.1} dB");
    }
}

#[test]
fn noise_suppression_gains_10_db_at_5_db_snr() {
    let ns = ProcessingConfig { echo_cancellation: false, noise_suppression: true, gain_control: false };
    let speech = &scene().near.samples;
    let silence = vec![0i16; speech.len()];
    // 5 dB SNR over the measured part (the noise is stationary).
    let level = 20.0 * rms(&speech[CONVERGED * PROCESSING_FRAME..]).log10();
    // Measured: +13.6 dB (white), +10.3 dB (pink); pink noise overlaps speech more.
    for (kind, noise, minimum) in [
        ("white", white_noise(5, speech.len(), level - 5.0), 10.0),
        ("pink", coloured_noise(6, speech.len(), level - 5.0, false), 8.0),
    ] {
        let minus: Vec<f64> = noise.iter().map(|n| -n).collect();
        let plus = process(ns, &silence, &to_i16(&mix(&[speech, &noise])));
        let minus = process(ns, &silence, &to_i16(&mix(&[speech, &minus])));
        let (before, after) = hagerman_snr(speech, &noise, &plus, &minus, CONVERGED);
        eprintln!("{kind} noise: SNR {before:.1} dB -> {after:.1} dB ({:+.1} dB)", after - before);
        assert!((before - 5.0).abs() < 0.5, "{kind}: input SNR {before:.1} dB");
        assert!(after - before >= minimum, "{kind}: SNR {before:.1} dB -> {after:.1} dB");
    }
}

#[test]
fn all_stages_off_leave_the_microphone_bit_exact() {
    let mut mic = mic(100, true);
    mic[1000] = i16::MAX;
    mic[1001] = i16::MIN;
    let out = process(OFF, &far(), &mic);
    assert_eq!(out, mic);
}

#[test]
fn echo_cancellation_switched_off_and_on_mid_stream() {
    let (far, mic) = (far(), mic(100, false));
    let third = mic.len() / PROCESSING_FRAME / 3;
    let mut processor = AudioProcessor::new(AEC).expect("processor");
    let out = run(&mut processor, &far, &mic, |processor, block| {
        if block == third {
            processor.set_config(OFF);
        } else if block == 2 * third {
            processor.set_config(AEC);
        }
    });
    let echoing = scene().echoing(100);
    let erle_between = |from: usize, to: usize| {
        let between = |i: usize| i < to && echoing(i);
        db(energy(&mic, from, between), energy(&out, from, between))
    };
    let (on, off, again) =
        (erle_between(third / 2, third), erle_between(third, 2 * third), erle_between(2 * third + 100, 3 * third));
    eprintln!("ERLE on {on:.1} dB, off {off:.1} dB, on again (after 1 s) {again:.1} dB");
    assert!(on >= 20.0, "before switching off: {on:.1} dB");
    assert!(off < 3.0, "switched off: {off:.1} dB");
    assert!(again >= 20.0, "switched on again: {again:.1} dB");
}

/// Quiet speech (-40 dBFS) is brought up towards the gain control's target (about -22 dBFS); loud
/// speech (-20 dBFS, peaks at -5 dBFS) is neither raised nor clipped, from its first word on.
#[test]
fn gain_control_raises_quiet_speech_and_does_not_clip_loud_speech() {
    let agc = ProcessingConfig { echo_cancellation: false, noise_suppression: false, gain_control: true };
    let speech = &scene().near;
    let silence = vec![0i16; speech.samples.len()];
    // The last 3 s of speech: the gain has adapted.
    let adapted = |i: usize| i >= 700 && speech.active.get(i).copied().unwrap_or(false);
    let at =
        |dbfs: f64| to_i16(&speech.samples.iter().map(|s| s * 10f64.powf((dbfs + 20.0) / 20.0)).collect::<Vec<_>>());
    let (quiet, loud) = (at(-40.0), at(-20.0));
    let (quiet_out, loud_out) = (process(agc, &silence, &quiet), process(agc, &silence, &loud));
    let raised = db(energy(&quiet_out, 0, adapted), energy(&quiet, 0, adapted));
    let loud_gain = db(energy(&loud_out, 0, adapted), energy(&loud, 0, adapted));
    let input_peak = loud.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
    let clipped = loud_out.iter().filter(|s| s.unsigned_abs() >= 32_767).count();
    eprintln!(
        "quiet speech raised {raised:+.1} dB; loud speech (peak {input_peak}) {loud_gain:+.1} dB, {clipped} samples clipped"
    );
    assert!(input_peak < 20_000, "the loud input itself peaks at {input_peak}");
    assert!(raised >= 10.0, "quiet speech raised by {raised:.1} dB only");
    assert_eq!(clipped, 0, "loud speech clipped");
    assert!(loud_gain.abs() < 3.0, "loud speech changed by {loud_gain:.1} dB");
}

fn write_wav(path: &Path, rate: u32, channels: u16, samples: &[i16]) {
    let mut writer = WavWriter::create(path, rate, channels).expect("create");
    let frame = duet_media::AudioFrame::new(samples.to_vec(), rate, channels, 0).expect("frame");
    writer.play(&frame).expect("write");
    writer.finish().expect("finish");
}

fn read_wav(path: &Path) -> Vec<i16> {
    let mut source = WavSource::open(path, FrameDuration::Ms10, MediaClock::new()).expect("open");
    let mut samples = Vec::new();
    while let Some(frame) = source.next_frame().expect("read") {
        samples.extend_from_slice(frame.samples());
    }
    samples
}

#[test]
fn wav_files_are_processed_like_the_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (far_path, mic_path, out_path) =
        (dir.path().join("far.wav"), dir.path().join("mic.wav"), dir.path().join("out.wav"));
    let (far, mic) = (far(), mic(100, false));
    write_wav(&far_path, 48_000, 1, &far);
    write_wav(&mic_path, 48_000, 1, &mic);
    let report = process_wav_files(&far_path, &mic_path, &out_path, AEC).expect("process");
    let out = read_wav(&out_path);
    assert_eq!(out, process(AEC, &far, &mic), "the files give the stream's output");
    assert_eq!((report.frames, report.far_frames, report.duration_ms), (1000, 1000, 10_000));
    assert!(report.processing_us_mean > 0.0 && report.realtime_factor > 0.0, "{report:?}");
    assert!(report.stats.delay_ms.is_some_and(|d| (80..=120).contains(&d)), "{report:?}");
    assert!(report.stats.render_frames == 1000 && report.stats.capture_frames == 1000, "{report:?}");

    // All off: the output file holds the microphone file's samples.
    process_wav_files(&far_path, &mic_path, &out_path, OFF).expect("process");
    assert_eq!(read_wav(&out_path), mic);
}

#[test]
fn wav_lengths_that_differ_follow_the_microphone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (far_path, mic_path, out_path) =
        (dir.path().join("far.wav"), dir.path().join("mic.wav"), dir.path().join("out.wav"));
    write_wav(&far_path, 48_000, 1, &vec![100; 10 * PROCESSING_FRAME]);
    // 25.5 blocks: the last is completed with silence.
    let mic: Vec<i16> = (0..25 * PROCESSING_FRAME + 240).map(|i| (i % 200) as i16).collect();
    write_wav(&mic_path, 48_000, 1, &mic);
    let report = process_wav_files(&far_path, &mic_path, &out_path, OFF).expect("process");
    assert_eq!((report.frames, report.far_frames), (26, 10));
    let out = read_wav(&out_path);
    assert_eq!(out.len(), 26 * PROCESSING_FRAME);
    assert_eq!(&out[..mic.len()], &mic[..]);
    let report = process_wav_files(&mic_path, &far_path, &out_path, OFF).expect("process");
    assert_eq!((report.frames, report.far_frames), (10, 26));
}

#[test]
fn wav_files_in_the_wrong_format_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.wav");
    write_wav(&good, 48_000, 1, &[0; PROCESSING_FRAME]);
    let out = dir.path().join("out.wav");
    type Make = fn(&Path);
    let cases: [(&str, Make, &str); 4] = [
        ("rate.wav", |p| write_wav(p, 44_100, 1, &[0; 441]), "44100 Hz"),
        ("stereo.wav", |p| write_wav(p, 48_000, 2, &[0; 960]), "2 channel"),
        ("text.wav", |p| std::fs::write(p, "not audio").expect("write"), "RIFF"),
        ("missing.wav", |_| (), "No such file"),
    ];
    for (name, make, text) in cases {
        let path = dir.path().join(name);
        make(&path);
        for (far, mic) in [(&path, &good), (&good, &path)] {
            let error = process_wav_files(far, mic, &out, ProcessingConfig::default()).expect_err(name);
            let message = error.to_string();
            assert!(message.contains(text) && message.contains(name), "{name}: {message}");
            assert!(
                matches!(
                    error,
                    MediaError::UnsupportedFile { .. } | MediaError::InvalidFile { .. } | MediaError::Io { .. }
                ),
                "{name}: {error:?}"
            );
        }
    }
}
