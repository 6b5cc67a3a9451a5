//! 100 rapid leave/rejoin cycles of a room between two call engines in this process, through
//! a real `duet-server` on loopback with synthetic VP8/Opus media: every cycle connects with
//! media both ways, and nothing stale (a timer or a signal of an earlier cycle) disturbs a later
//! one.

#![allow(clippy::unwrap_used, missing_docs)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use duet_core::call::{Call, CallCommand, CallConfig, CallEvent, CallState, Command};
use duet_core::media::DiscardVideoSink;
use duet_core::sources::{self, AudioSpec, VideoSpec};
use tokio::sync::mpsc::UnboundedReceiver;

mod common;

use common::start_server;

fn engine(addr: SocketAddr) -> (Call, UnboundedReceiver<CallEvent>) {
    let mut cfg = CallConfig::new(format!("ws://{addr}/ws"));
    cfg.bind = "127.0.0.1:0".parse().unwrap();
    let video: VideoSpec = "synthetic:320x180@15".parse().unwrap();
    let audio: AudioSpec = "tone".parse().unwrap();
    let opened = sources::open(&video, &audio, Box::new(DiscardVideoSink)).unwrap();
    Call::start(cfg, opened.media)
}

/// Waits until the engine is connected and has both kinds of media from its current partner;
/// returns the unexpected events seen on the way (ended calls, notices).
async fn connected_with_media(events: &mut UnboundedReceiver<CallEvent>, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let (mut connected, mut video, mut audio) = (false, false, false);
    let mut odd = Vec::new();
    while !(connected && video && audio) {
        let ev = tokio::time::timeout_at(deadline.into(), events.recv()).await;
        let ev = ev
            .unwrap_or_else(|_| panic!("not connected with media in {within:?}: connected {connected}, video {video}, audio {audio}; odd events: {odd:?}"))
            .unwrap();
        match ev {
            CallEvent::Matched { .. } => (video, audio) = (false, false),
            CallEvent::State(CallState::Connected) => connected = true,
            CallEvent::State(CallState::Ended { reason }) => odd.push(format!("ended: {reason}")),
            CallEvent::MediaStarted("video") => video = true,
            CallEvent::MediaStarted("audio") => audio = true,
            CallEvent::Notice(n) => odd.push(format!("notice: {n}")),
            _ => {}
        }
    }
    odd
}

async fn idle(events: &mut UnboundedReceiver<CallEvent>) {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.unwrap().unwrap();
        if ev == CallEvent::State(CallState::Idle) {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_rapid_rejoins_of_a_room_all_connect_with_media_both_ways() {
    let addr = start_server().await;
    let (a, mut ea) = engine(addr);
    let (b, mut eb) = engine(addr);
    let started = Instant::now();
    let mut odd = Vec::new();
    for cycle in 0..100 {
        // Two codes in turn: a cycle's leaves may still be in flight when the next one joins.
        let code = format!("rejoin-{}", cycle % 2);
        a.send(CallCommand::Call(Command::JoinRoom { code: code.clone() }));
        b.send(CallCommand::Call(Command::JoinRoom { code }));
        let (oa, ob) = tokio::join!(
            connected_with_media(&mut ea, Duration::from_secs(10)),
            connected_with_media(&mut eb, Duration::from_secs(10))
        );
        odd.extend(oa.into_iter().chain(ob).map(|e| format!("cycle {cycle}: {e}")));
        a.send(CallCommand::Call(Command::Stop));
        b.send(CallCommand::Call(Command::Stop));
        tokio::join!(idle(&mut ea), idle(&mut eb));
    }
    eprintln!("100 cycles in {:.1} s", started.elapsed().as_secs_f64());
    assert!(odd.is_empty(), "{odd:#?}");
    a.send(CallCommand::Shutdown);
    b.send(CallCommand::Shutdown);
}
