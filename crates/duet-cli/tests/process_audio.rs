//! `duet process-audio`: the real binary over WAV files, its report (human and JSON), the stages
//! switched off, and bad input (missing file, wrong rate, stereo, not a WAV) refused with one
//! line on stderr and a non-zero exit, never a panic.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use duet_media::{AudioFrame, AudioSink, AudioSource, FrameDuration, MediaClock, WavSource, WavWriter};
use serde_json::Value;

fn write_wav(path: &Path, rate: u32, channels: u16, samples: &[i16]) {
    let mut writer = WavWriter::create(path, rate, channels).unwrap();
    writer.play(&AudioFrame::new(samples.to_vec(), rate, channels, 0).unwrap()).unwrap();
    writer.finish().unwrap();
}

fn read_wav(path: &Path) -> Vec<i16> {
    let mut source = WavSource::open(path, FrameDuration::Ms10, MediaClock::new()).unwrap();
    let mut samples = Vec::new();
    while let Some(frame) = source.next_frame().unwrap() {
        samples.extend_from_slice(frame.samples());
    }
    samples
}

/// 3 s of bursts of noise (the far end) and the microphone hearing them 60 ms later at -10 dB.
fn far_and_mic(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<i16>) {
    let mut state = 12_345u32;
    let far: Vec<i16> = (0..144_000)
        .map(|n| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let on = (n / 9_600) % 3 != 2;
            if on { ((state >> 16) as i16) / 8 } else { 0 }
        })
        .collect();
    let mic: Vec<i16> = (0..far.len()).map(|n| if n < 2_880 { 0 } else { far[n - 2_880] / 3 }).collect();
    let (far_path, mic_path) = (dir.join("far.wav"), dir.join("mic.wav"));
    write_wav(&far_path, 48_000, 1, &far);
    write_wav(&mic_path, 48_000, 1, &mic);
    (far_path, mic_path, mic)
}

fn duet(args: &[&str], paths: &[&Path]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_duet"));
    command.arg("process-audio").args(args);
    for (flag, path) in ["--far", "--mic", "--out"].iter().zip(paths) {
        command.arg(flag).arg(path);
    }
    command.output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn processes_files_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let (far, mic, mic_samples) = far_and_mic(dir.path());
    let out = dir.path().join("out.wav");

    let output = duet(&["--json"], &[&far, &mic, &out]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!((report["frames"].as_u64(), report["duration_ms"].as_u64()), (Some(300), Some(3000)), "{report}");
    assert!(report["processing_us_mean"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["realtime_factor"].as_f64().unwrap() > 1.0, "{report}");
    assert!(report["delay_ms"].as_u64().is_some(), "{report}");
    assert_eq!(report["echo_cancellation"], true);
    let processed = read_wav(&out);
    assert_eq!(processed.len(), mic_samples.len());
    let energy = |s: &[i16]| s[96_000..].iter().map(|&x| f64::from(x).powi(2)).sum::<f64>();
    let erle = 10.0 * (energy(&mic_samples) / energy(&processed).max(1.0)).log10();
    assert!(erle > 15.0, "echo reduced by {erle:.1} dB only");

    let output = duet(&[], &[&far, &mic, &out]);
    assert!(output.status.success(), "{}", stderr(&output));
    let line = String::from_utf8_lossy(&output.stdout);
    assert!(line.starts_with("processed 3.00 s into") && line.contains("µs per 10 ms frame"), "{line}");
}

#[test]
fn every_stage_off_copies_the_microphone() {
    let dir = tempfile::tempdir().unwrap();
    let (far, mic, mic_samples) = far_and_mic(dir.path());
    let out = dir.path().join("out.wav");
    let flags = ["--no-echo-cancellation", "--no-noise-suppression", "--no-gain-control", "--json"];
    let output = duet(&flags, &[&far, &mic, &out]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["delay_ms"], Value::Null, "{report}");
    assert_eq!(read_wav(&out), mic_samples);
}

#[test]
fn bad_input_is_one_line_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let (far, mic, _) = far_and_mic(dir.path());
    let out = dir.path().join("out.wav");
    let (rate, stereo, text) = (dir.path().join("44k.wav"), dir.path().join("stereo.wav"), dir.path().join("text.wav"));
    write_wav(&rate, 44_100, 1, &[0; 4_410]);
    write_wav(&stereo, 48_000, 2, &[0; 960]);
    std::fs::write(&text, "this is not a WAV file").unwrap();
    let missing = dir.path().join("missing.wav");
    for (paths, expected) in [
        ([&far, &missing], "missing.wav: No such file"),
        ([&missing, &mic], "missing.wav: No such file"),
        ([&far, &rate], "44100 Hz"),
        ([&stereo, &mic], "2 channel"),
        ([&far, &text], "invalid WAV file"),
    ] {
        let output = duet(&[], &[paths[0], paths[1], &out]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{expected}: {message}");
        assert!(message.starts_with("duet: process-audio: ") && message.contains(expected), "{expected}: {message}");
        assert_eq!(message.trim_end().lines().count(), 1, "{message}");
        assert!(!message.contains("panicked"), "{message}");
        assert!(output.stdout.is_empty());
    }
    // The output cannot be written.
    let output = duet(&[], &[&far, &mic, &dir.path().join("no/such/dir/out.wav")]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("out.wav"), "{}", stderr(&output));
}
