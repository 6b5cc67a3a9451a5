//! Two real webrtc peer connections in one process on 127.0.0.1, negotiated by the perfect
//! negotiation machine: media frames arrive intact, data channels carry text both ways, an
//! ICE restart keeps media flowing, crossing offers (glare) still end connected, and a storm of
//! keyframe requests makes at most one keyframe per half second.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use duet_core::call::PeerState;
use duet_core::media::{VideoLimits, VideoSender};
use duet_core::negotiation::{Action, Input, Negotiator};
use duet_core::peer::{Channel, Peer, PeerConfig, PeerEvent, PeerEvents};
use duet_media::{MediaClock, SyntheticVideoSource};
use duet_proto::SignalPayload;

struct Side {
    peer: Peer,
    events: PeerEvents,
    neg: Negotiator,
    state: PeerState,
    frames: Vec<Bytes>,
    audio: usize,
    texts: Vec<(Channel, String)>,
    open: usize,
    keyframe_requests: usize,
}

async fn side(polite: bool) -> Side {
    let cfg = PeerConfig { bind: "127.0.0.1:0".parse().unwrap(), ..PeerConfig::default() };
    let (peer, events) = Peer::new(cfg).await.unwrap();
    Side {
        peer,
        events,
        neg: Negotiator::new(polite),
        state: PeerState::Connecting,
        frames: vec![],
        audio: 0,
        texts: vec![],
        open: 0,
        keyframe_requests: 0,
    }
}

/// Runs every pending negotiation action of `s`, delivering what it produces to `other`.
async fn run_actions(s: &mut Side, other: &mut Side) {
    while let Some(action) = s.neg.poll_action() {
        let result = s.peer.perform(&action).await;
        let needs_report = !matches!(action, Action::AddCandidate(_) | Action::GiveUp(_));
        match result {
            Ok(Some(SignalPayload::Description { description })) => {
                if needs_report {
                    s.neg.handle(Input::Done);
                }
                other.neg.handle(Input::Remote(description));
            }
            Ok(_) => {
                if needs_report {
                    s.neg.handle(Input::Done);
                }
            }
            Err(e) => s.neg.handle(Input::Failed(e.to_string())),
        }
    }
}

fn absorb(s: &mut Side, ev: PeerEvent, other: &mut Side) {
    match ev {
        PeerEvent::Candidate(c) => other.neg.handle(Input::Candidate(c)),
        PeerEvent::State(st) => s.state = st,
        PeerEvent::NegotiationNeeded | PeerEvent::GatheringComplete => {}
        PeerEvent::VideoFrame { data, .. } => s.frames.push(data),
        PeerEvent::VideoGap => {}
        PeerEvent::AudioPacket { .. } => s.audio += 1,
        PeerEvent::KeyframeRequested => s.keyframe_requests += 1,
        PeerEvent::ChannelOpen(_) => s.open += 1,
        PeerEvent::ChannelMessage(ch, text) => s.texts.push((ch, text)),
        PeerEvent::ChannelClosed(_) => {}
    }
}

/// Pumps both sides until `done` or the timeout.
async fn pump(a: &mut Side, b: &mut Side, within: Duration, done: impl Fn(&Side, &Side) -> bool) {
    let deadline = Instant::now() + within;
    loop {
        run_actions(a, b).await;
        run_actions(b, a).await;
        if done(a, b) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out: a={:?} b={:?} frames a={} b={} busy a={} b={}",
            a.state,
            b.state,
            a.frames.len(),
            b.frames.len(),
            a.neg.is_busy(),
            b.neg.is_busy()
        );
        tokio::select! {
            Some(ev) = a.events.recv() => absorb(a, ev, b),
            Some(ev) = b.events.recv() => absorb(b, ev, a),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
}

fn frame(n: u8, len: usize) -> Bytes {
    // First byte: VP8 "P" bit clear only on frame 0 (a keyframe), like a real stream.
    let mut v = vec![n; len];
    v[0] = if n == 0 { 0x10 } else { 0x11 };
    Bytes::from(v)
}

/// Sends frames at 30 fps, as a camera does (the send queue drops video that waits longer than
/// its delay bound, so a burst far above the pacing rate would not arrive whole).
async fn send_frames(a: &mut Side, b: &mut Side, from: u8, count: u8) {
    for n in from..from + count {
        let next = Instant::now() + Duration::from_micros(33_333);
        a.peer.send_video(frame(n, 3000), Instant::now(), Duration::from_micros(33_333)).await;
        a.peer.send_audio(Bytes::from_static(&[0xf8, 0xff, 0xfe]), Instant::now(), Duration::from_millis(20)).await;
        pump(a, b, Duration::from_secs(1), |_, _| Instant::now() >= next).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_and_data_flow_between_two_peers_and_survive_an_ice_restart() {
    let (mut a, mut b) = (side(false).await, side(true).await);
    a.neg.handle(Input::NegotiationNeeded { ice_restart: false });
    pump(&mut a, &mut b, Duration::from_secs(10), |a, b| {
        a.state == PeerState::Connected && b.state == PeerState::Connected && a.open == 2 && b.open == 2
    })
    .await;

    send_frames(&mut a, &mut b, 0, 30).await;
    pump(&mut a, &mut b, Duration::from_secs(5), |_, b| b.frames.len() >= 29).await;
    // Every frame but possibly the last (the reassembler emits a frame when the next begins)
    // arrives byte for byte, in order.
    for (i, f) in b.frames.iter().enumerate() {
        assert_eq!(f, &frame(i as u8, 3000), "frame {i}");
    }
    assert!(b.audio >= 25, "audio packets: {}", b.audio);

    assert!(a.peer.send_text(Channel::Chat, "hello b").await);
    assert!(b.peer.send_text(Channel::Control, "hello a").await);
    pump(&mut a, &mut b, Duration::from_secs(5), |a, b| !a.texts.is_empty() && !b.texts.is_empty()).await;
    assert_eq!(b.texts[0], (Channel::Chat, "hello b".to_string()));
    assert_eq!(a.texts[0], (Channel::Control, "hello a".to_string()));

    // Keyframe request from the receiver reaches the sender.
    b.peer.request_keyframe().await;
    pump(&mut a, &mut b, Duration::from_secs(5), |a, _| a.keyframe_requests > 0).await;

    // ICE restart from the polite side: media keeps flowing afterwards.
    b.neg.handle(Input::NegotiationNeeded { ice_restart: true });
    pump(&mut a, &mut b, Duration::from_secs(5), |a, b| !a.neg.is_busy() && !b.neg.is_busy()).await;
    // Let ICE re-check the pair with the new credentials (a few ms on loopback).
    let settle = Instant::now() + Duration::from_millis(300);
    pump(&mut a, &mut b, Duration::from_secs(5), |_, _| Instant::now() >= settle).await;
    let before = b.frames.len();
    send_frames(&mut a, &mut b, 30, 20).await;
    pump(&mut a, &mut b, Duration::from_secs(5), |_, b| b.frames.len() >= before + 19).await;
    let stats = b.peer.stats().await;
    assert!(stats.video_in.packets > 0 && stats.rtt_ms.is_some(), "{stats:?}");
    assert_eq!(stats.local_candidate.as_deref(), Some("host"));
    a.peer.close().await;
    b.peer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_carry_vp8_with_rtx_opus_and_the_data_channels() {
    let a = side(false).await;
    let offer = a.peer.make_offer(false).await.unwrap();
    let sdp = offer.sdp;
    for needle in [
        "VP8/90000",
        "rtx/90000",
        "apt=96",
        "ssrc-group:FID",
        "opus/48000/2",
        "nack",
        "transport-cc",
        "webrtc-datachannel",
    ] {
        assert!(sdp.contains(needle), "offer lacks {needle}:\n{sdp}");
    }
    a.peer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossing_offers_resolve_by_politeness() {
    let (mut a, mut b) = (side(false).await, side(true).await);
    a.neg.handle(Input::NegotiationNeeded { ice_restart: false });
    b.neg.handle(Input::NegotiationNeeded { ice_restart: false });
    pump(&mut a, &mut b, Duration::from_secs(10), |a, b| {
        a.state == PeerState::Connected && b.state == PeerState::Connected && !a.neg.is_busy() && !b.neg.is_busy()
    })
    .await;
    send_frames(&mut a, &mut b, 0, 10).await;
    pump(&mut a, &mut b, Duration::from_secs(5), |_, b| b.frames.len() >= 9).await;
    a.peer.close().await;
    b.peer.close().await;
}

/// The partner sends 1000 PLIs within a second: the peer passes on one per 500 ms, and a real
/// encoder fed with them (as the call driver feeds it) makes at most two keyframes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_keyframe_requests_makes_at_most_two_keyframes() {
    let (mut a, mut b) = (side(false).await, side(true).await);
    a.neg.handle(Input::NegotiationNeeded { ice_restart: false });
    pump(&mut a, &mut b, Duration::from_secs(10), |a, b| {
        a.state == PeerState::Connected && b.state == PeerState::Connected
    })
    .await;
    // B addresses its PLIs to the video track it receives from A.
    send_frames(&mut a, &mut b, 0, 5).await;
    pump(&mut a, &mut b, Duration::from_secs(5), |_, b| !b.frames.is_empty()).await;

    let source = SyntheticVideoSource::new(320, 180, 30, MediaClock::new()).unwrap();
    let limits = VideoLimits { max_width: 320, max_height: 180, max_kbps: 300, max_fps: 30 };
    let (out, mut encoded) = tokio::sync::mpsc::channel(4);
    let encoder = VideoSender::start(Box::new(source), true, limits, out).unwrap();
    let drain = tokio::spawn(async move { while encoded.recv().await.is_some() {} });
    let first = Instant::now() + Duration::from_secs(5);
    while encoder.keyframes() == 0 {
        assert!(Instant::now() < first, "no first keyframe");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let keyframes_before = encoder.keyframes();

    let storm_started = Instant::now();
    let flood = async {
        // 100 bursts of 10, 9 ms apart: 1000 requests in 0.9 s.
        let mut tick = tokio::time::interval(Duration::from_millis(9));
        for _ in 0..100 {
            tick.tick().await;
            for _ in 0..10 {
                b.peer.request_keyframe().await;
            }
        }
        storm_started.elapsed()
    };
    let serve = async {
        let mut passed_on = 0;
        let until = storm_started + Duration::from_millis(1600);
        while let Ok(Some(ev)) = tokio::time::timeout_at(until.into(), a.events.recv()).await {
            if matches!(ev, PeerEvent::KeyframeRequested) {
                passed_on += 1;
                encoder.request_keyframe();
            }
        }
        passed_on
    };
    let (storm, passed_on) = tokio::join!(flood, serve);
    assert!(storm < Duration::from_secs(1), "the storm took {storm:?}");
    let stats = a.peer.stats().await;
    assert!((1..=2).contains(&passed_on), "{passed_on} requests passed on, {stats:?}");
    assert!(stats.keyframe_requests_ignored >= 500, "{stats:?}");
    let keyframes = encoder.keyframes() - keyframes_before;
    assert!((1..=2).contains(&keyframes), "{keyframes} keyframes for the storm");
    drop(encoder);
    drain.await.unwrap();
    a.peer.close().await;
    b.peer.close().await;
}
