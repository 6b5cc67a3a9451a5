//! `duet`: the headless Duet client.
//!
//! - `duet call`: join a server, hold a call with synthetic, file or device media, print one
//!   line per event (`--json`: JSON lines) and a final summary.
//! - `duet bot`: serve partners one after another (echo their media back, or send synthetic).
//! - `duet devices`: list cameras, microphones and speakers.
//! - `duet process-audio`: run the call's echo cancellation, noise suppression and gain control
//!   over WAV files, offline.

mod media;
mod output;
mod process_audio;
mod usage;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use duet_core::call::{Call, CallCommand, CallConfig, CallEvent, CallState, Command, Quality};
use tracing_subscriber::EnvFilter;

use duet_core::sources::{AudioSpec, VideoSpec};
use duet_proto::IceServer;
use output::Printer;

#[derive(Parser)]
#[command(name = "duet", version, about = "Headless Duet client")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Join a server and hold a call.
    Call(CallArgs),
    /// Serve partners one after another (a "test call" partner).
    Bot(BotArgs),
    /// List cameras, microphones and speakers.
    Devices,
    /// Run the call's audio processing offline: echo cancellation against --far, noise
    /// suppression and gain control on --mic, written to --out (48 kHz mono 16-bit WAV).
    ProcessAudio(process_audio::ProcessAudioArgs),
}

#[derive(Args, Clone)]
struct Common {
    /// Server WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:8787/ws")]
    server: String,
    /// Join this room (friend code) instead of the random queue.
    #[arg(long)]
    room: Option<String>,
    /// Interest to share with a partner (repeatable).
    #[arg(long = "interest")]
    interests: Vec<String>,
    /// Preferred language, e.g. en or pt-BR.
    #[arg(long)]
    language: Option<String>,
    /// Video to send: synthetic[:WxH[@FPS]], camera[:INDEX], file:PATH.y4m or none.
    #[arg(long, default_value = "synthetic")]
    video: VideoSpec,
    /// Audio to send: tone, mic[:ID], file:PATH.wav or none.
    #[arg(long, default_value = "tone")]
    audio: AudioSpec,
    /// Quality: auto, high, medium, low, audio-only.
    #[arg(long, default_value = "auto", value_parser = parse_quality)]
    quality: Quality,
    /// Local UDP address for media (127.0.0.1:0 keeps a test on loopback).
    #[arg(long, default_value = "0.0.0.0:0")]
    bind: SocketAddr,
    /// Your own TURN server (repeatable): turn:[USER:PASS@]HOST:PORT[?transport=udp]; without
    /// credentials it uses those the Duet server issues.
    #[arg(long = "turn", value_parser = parse_turn)]
    turn: Vec<IceServer>,
    /// Send media only through TURN relays: the partner never learns your address.
    #[arg(long)]
    relay_only: bool,
    /// This installation's id for the server (16-64 characters of A-Z a-z 0-9 - _): blocks
    /// follow it to later sessions. Only the server sees it.
    #[arg(long, value_parser = parse_device_id)]
    device_id: Option<String>,
    /// PEM file of CA certificates to trust for a wss:// server, in addition to the system's
    /// (a server with a private or self-signed certificate).
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// Print one JSON object per line.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct CallArgs {
    #[command(flatten)]
    common: Common,
    /// Seconds to hold the call once connected.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Give up if no call is connected within this many seconds.
    #[arg(long, default_value_t = 30.0)]
    connect_timeout: f64,
    /// Chat message to send once connected (repeatable).
    #[arg(long = "chat")]
    chat: Vec<String>,
    /// Send the --chat messages this many seconds after connecting instead of at once.
    #[arg(long, default_value_t = 0.0)]
    chat_after: f64,
    /// Also send this many numbered chat messages ("chat 1", "chat 2", ...) once connected,
    /// one every --chat-every-ms (a chat load through reconnections).
    #[arg(long, default_value_t = 0)]
    chat_count: u32,
    /// Interval of the --chat-count messages, ms.
    #[arg(long, default_value_t = 20)]
    chat_every_ms: u64,
    /// Press Next this many seconds after connecting (then hold the next call).
    #[arg(long)]
    next_after: Option<f64>,
}

#[derive(Args)]
struct BotArgs {
    #[command(flatten)]
    common: Common,
    /// Send synthetic media instead of echoing the partner's.
    #[arg(long)]
    synthetic: bool,
    /// Stop after this many seconds (default: run until interrupted).
    #[arg(long)]
    duration: Option<f64>,
}

fn parse_device_id(s: &str) -> Result<String, String> {
    if duet_proto::valid_device_id(s) {
        Ok(s.to_string())
    } else {
        Err("a device id is 16 to 64 characters of A-Z, a-z, 0-9, '-' or '_'".into())
    }
}

fn parse_turn(s: &str) -> Result<IceServer, String> {
    duet_core::turn::parse_turn_url(s).map_err(|e| e.to_string())
}

fn parse_quality(s: &str) -> Result<Quality, String> {
    match s {
        "auto" => Ok(Quality::Auto),
        "high" => Ok(Quality::High),
        "medium" => Ok(Quality::Medium),
        "low" => Ok(Quality::Low),
        "audio-only" | "audio_only" => Ok(Quality::AudioOnly),
        other => Err(format!("unknown quality {other:?} (auto, high, medium, low, audio-only)")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("duet: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    match cli.command {
        Cmd::Devices => devices(),
        Cmd::ProcessAudio(args) => process_audio::run(&args),
        Cmd::Call(args) => runtime.block_on(call(args)),
        Cmd::Bot(args) => runtime.block_on(bot(args)),
    }
}

fn devices() -> ExitCode {
    let d = duet_media::list_devices();
    let section = |title: &str, items: Vec<String>| {
        println!("{title}:");
        if items.is_empty() {
            println!("  (none found)");
        }
        for i in items {
            println!("  {i}");
        }
    };
    section("cameras", d.cameras.iter().map(|c| format!("{} ({})", c.name, c.id)).collect());
    section("microphones", d.microphones.iter().map(|c| format!("{} ({})", c.name, c.id)).collect());
    section("speakers", d.speakers.iter().map(|c| format!("{} ({})", c.name, c.id)).collect());
    for note in &d.notes {
        println!("note: {note}");
    }
    ExitCode::SUCCESS
}

fn config(common: &Common, echo: bool) -> CallConfig {
    let mut cfg = CallConfig::new(common.server.clone());
    cfg.client.name = if echo { "duet-bot".into() } else { "duet-cli".into() };
    cfg.client.platform = Some(std::env::consts::OS.into());
    cfg.bind = common.bind;
    cfg.ice_servers = common.turn.clone();
    cfg.relay_only = common.relay_only;
    cfg.client.device = common.device_id.clone();
    cfg.ca_cert = common.ca_cert.clone();
    cfg.quality = common.quality;
    cfg.echo = echo;
    cfg
}

/// A `--ca-cert` file that cannot be used is bad input: say so before connecting.
fn check_ca_cert(common: &Common) -> Result<(), String> {
    match &common.ca_cert {
        Some(path) => duet_core::tls::load_ca_certs(path).map(drop).map_err(|e| e.to_string()),
        None => Ok(()),
    }
}

fn start_command(common: &Common) -> Command {
    match &common.room {
        Some(code) => Command::JoinRoom { code: code.clone() },
        None => Command::Start { interests: common.interests.clone(), language: common.language.clone() },
    }
}

async fn call(args: CallArgs) -> ExitCode {
    let mut out = Printer::new(args.common.json);
    if let Err(e) = check_ca_cert(&args.common) {
        out.error(&e);
        return ExitCode::from(1);
    }
    let media = match media::open(&args.common.video, &args.common.audio, &mut out) {
        Ok(m) => m,
        Err(e) => {
            out.error(&e);
            return ExitCode::from(1);
        }
    };
    let (call, mut events) = Call::start(config(&args.common, false), media);
    call.send(CallCommand::Call(start_command(&args.common)));
    let started = Instant::now();
    let connect_deadline = started + Duration::from_secs_f64(args.connect_timeout);
    let mut connected_at: Option<Instant> = None;
    let mut nexted = false;
    let mut chats_sent = false;
    let mut numbered_sent = 0u32;
    let mut fatal: Option<String> = None;
    let mut shutdown_sent = false;
    let mut cpu_at_connect: Option<(Instant, Option<f64>)> = None;
    let mut last_notice: Option<String> = None;
    loop {
        let deadline = match connected_at {
            Some(t) => t + Duration::from_secs_f64(args.duration),
            None => connect_deadline,
        };
        let next_at = connected_at.zip(args.next_after).map(|(t, s)| t + Duration::from_secs_f64(s));
        let chat_at = connected_at.filter(|_| !chats_sent).map(|t| t + Duration::from_secs_f64(args.chat_after));
        let wake = match next_at {
            Some(n) if !nexted => n.min(deadline),
            _ => deadline,
        };
        let wake = chat_at.map_or(wake, |c| c.min(wake));
        let numbered_at = connected_at
            .filter(|_| numbered_sent < args.chat_count)
            .map(|t| t + Duration::from_millis(args.chat_every_ms * u64::from(numbered_sent)));
        let wake = numbered_at.map_or(wake, |n| n.min(wake));
        let ev = tokio::select! {
            ev = events.recv() => ev,
            _ = tokio::time::sleep_until(wake.into()) => {
                if numbered_at.is_some_and(|n| Instant::now() >= n) {
                    numbered_sent += 1;
                    call.send(CallCommand::SendChat(format!("chat {numbered_sent}")));
                    continue;
                }
                if chat_at.is_some_and(|c| Instant::now() >= c) {
                    chats_sent = true;
                    for text in &args.chat {
                        call.send(CallCommand::SendChat(text.clone()));
                    }
                    continue;
                }
                if !nexted && next_at.is_some_and(|n| Instant::now() >= n) {
                    nexted = true;
                    out.line("command", serde_json::json!({"command": "next"}));
                    call.send(CallCommand::Call(Command::Next));
                    connected_at = None;
                    continue;
                }
                if connected_at.is_none() && fatal.is_none() {
                    fatal = Some(format!("no call connected within {} s", args.connect_timeout));
                }
                if !shutdown_sent {
                    shutdown_sent = true;
                    call.send(CallCommand::Shutdown);
                }
                continue;
            }
        };
        let Some(ev) = ev else { break };
        match &ev {
            CallEvent::State(CallState::Connected) if connected_at.is_none() => {
                connected_at = Some(Instant::now());
                cpu_at_connect.get_or_insert_with(|| (Instant::now(), usage::cpu_seconds()));
            }
            // Refused before any call (e.g. a full room or a bad room code): nothing to wait for.
            CallEvent::State(CallState::Idle) if connected_at.is_none() && !nexted && !shutdown_sent => {
                fatal = Some(last_notice.clone().unwrap_or_else(|| "the server refused to start the call".into()));
                shutdown_sent = true;
                call.send(CallCommand::Shutdown);
            }
            CallEvent::Notice(text) => last_notice = Some(text.clone()),
            CallEvent::State(CallState::Ended { reason }) if connected_at.is_none() && !nexted => {
                fatal = Some(reason.clone());
                if !shutdown_sent {
                    shutdown_sent = true;
                    call.send(CallCommand::Shutdown);
                }
            }
            _ => {}
        }
        if let CallEvent::Finished(summary) = ev {
            out.summary_with(&summary, usage::since(cpu_at_connect));
            if let Some(reason) = fatal {
                out.error(&reason);
                return ExitCode::from(if summary.connected { 0 } else { 2 });
            }
            return ExitCode::SUCCESS;
        }
        out.event(&ev, started);
    }
    ExitCode::from(1)
}

async fn bot(args: BotArgs) -> ExitCode {
    let mut out = Printer::new(args.common.json);
    if let Err(e) = check_ca_cert(&args.common) {
        out.error(&e);
        return ExitCode::from(1);
    }
    let (video, audio) = if args.synthetic {
        (args.common.video.clone(), args.common.audio.clone())
    } else {
        (VideoSpec::None, AudioSpec::None)
    };
    let media = match media::open(&video, &audio, &mut out) {
        Ok(m) => m,
        Err(e) => {
            out.error(&e);
            return ExitCode::from(1);
        }
    };
    let (call, mut events) = Call::start(config(&args.common, !args.synthetic), media);
    call.send(CallCommand::Call(start_command(&args.common)));
    let started = Instant::now();
    let stop_at = args.duration.map(|s| started + Duration::from_secs_f64(s));
    loop {
        let ev = match stop_at {
            Some(t) => tokio::select! {
                ev = events.recv() => ev,
                _ = tokio::time::sleep_until(t.into()) => {
                    call.send(CallCommand::Shutdown);
                    events.recv().await
                }
            },
            None => events.recv().await,
        };
        let Some(ev) = ev else { return ExitCode::from(1) };
        match &ev {
            // The partner is gone: wait for the next one.
            CallEvent::State(CallState::Ended { reason }) if !reason.contains("reach") => {
                call.send(CallCommand::Call(start_command(&args.common)));
            }
            CallEvent::State(CallState::Idle) if args.common.room.is_none() => {
                call.send(CallCommand::Call(start_command(&args.common)));
            }
            CallEvent::Finished(summary) => {
                out.summary(summary);
                return if summary.connected || stop_at.is_some() { ExitCode::SUCCESS } else { ExitCode::from(2) };
            }
            _ => {}
        }
        out.event(&ev, started);
    }
}
