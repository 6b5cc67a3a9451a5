//! `duet process-audio`: the call's audio processing (echo cancellation, noise suppression, gain
//! control) run offline over WAV files, to measure it and compare it with other implementations.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use duet_media::{ProcessingConfig, ProcessingReport, process_wav_files};
use serde_json::json;

/// The arguments of `duet process-audio`.
#[derive(Args)]
pub struct ProcessAudioArgs {
    /// The far end as played by the speaker: 48 kHz mono 16-bit WAV.
    #[arg(long, value_name = "FAR.wav")]
    far: PathBuf,
    /// The microphone, hearing the far end's echo: 48 kHz mono 16-bit WAV.
    #[arg(long, value_name = "MIC.wav")]
    mic: PathBuf,
    /// Where to write the processed microphone (48 kHz mono 16-bit WAV, as long as MIC).
    #[arg(long, value_name = "OUT.wav")]
    out: PathBuf,
    /// Turn echo cancellation off.
    #[arg(long)]
    no_echo_cancellation: bool,
    /// Turn noise suppression off.
    #[arg(long)]
    no_noise_suppression: bool,
    /// Turn automatic gain control off.
    #[arg(long)]
    no_gain_control: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Runs the processing; prints the report (stdout) or the error (stderr, exit 1).
pub fn run(args: &ProcessAudioArgs) -> ExitCode {
    let config = ProcessingConfig {
        echo_cancellation: !args.no_echo_cancellation,
        noise_suppression: !args.no_noise_suppression,
        gain_control: !args.no_gain_control,
    };
    match process_wav_files(&args.far, &args.mic, &args.out, config) {
        Ok(report) => {
            if args.json {
                println!("{}", report_json(&report, config));
            } else {
                println!("{}", report_line(&report, args));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("duet: process-audio: {e}");
            ExitCode::from(1)
        }
    }
}

fn report_json(report: &ProcessingReport, config: ProcessingConfig) -> serde_json::Value {
    json!({
        "frames": report.frames,
        "duration_ms": report.duration_ms,
        "far_frames": report.far_frames,
        "processing_us_mean": report.processing_us_mean,
        "processing_us_max": report.processing_us_max,
        "realtime_factor": report.realtime_factor,
        "delay_ms": report.stats.delay_ms,
        "erle_db": report.stats.echo_return_loss_enhancement_db,
        "echo_cancellation": config.echo_cancellation,
        "noise_suppression": config.noise_suppression,
        "gain_control": config.gain_control,
    })
}

fn report_line(report: &ProcessingReport, args: &ProcessAudioArgs) -> String {
    let delay = report.stats.delay_ms.map(|d| format!("; echo delay {d} ms")).unwrap_or_default();
    let far = if report.far_frames < report.frames {
        format!("; far end {} ms shorter, continued with silence", (report.frames - report.far_frames) * 10)
    } else if report.far_frames > report.frames {
        format!("; far end {} ms longer, cut", (report.far_frames - report.frames) * 10)
    } else {
        String::new()
    };
    format!(
        "processed {:.2} s into {}: {:.0} µs per 10 ms frame (mean), {:.0}x real time{delay}{far}",
        report.duration_ms as f64 / 1000.0,
        args.out.display(),
        report.processing_us_mean,
        report.realtime_factor,
    )
}
