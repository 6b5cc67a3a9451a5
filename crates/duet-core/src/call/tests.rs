//! The call machine on simulated time.

use std::time::{Duration, Instant};

use duet_proto::*;

use super::*;
use crate::negotiation::Action;
use crate::signaling::{SessionState, SignalingError, SignalingEvent};

fn outputs(m: &mut CallMachine) -> Vec<Output> {
    std::iter::from_fn(|| m.poll_output()).collect()
}

fn matched(polite: bool) -> SignalingEvent {
    SignalingEvent::Message(ServerMessage::Matched {
        room: "r-1".into(),
        peer: PeerInfo { session_id: "p".into(), client: None, language: None },
        polite,
        ice_servers: vec![],
        common_interests: vec![],
    })
}

fn in_call(polite: bool) -> (CallMachine, Instant) {
    let mut m = CallMachine::new();
    let now = Instant::now();
    m.command(Command::Start { interests: vec![], language: None });
    m.signaling(matched(polite));
    // Complete the first offer/answer so the negotiator is idle and stable.
    let kind = if polite { SdpType::Offer } else { SdpType::Answer };
    if !polite {
        m.negotiation_result(Ok(()));
    }
    let description = SessionDescription { sdp_type: kind, sdp: "v=0".into() };
    m.signaling(SignalingEvent::Message(ServerMessage::Signal { payload: SignalPayload::Description { description } }));
    m.negotiation_result(Ok(()));
    if polite {
        m.negotiation_result(Ok(()));
    }
    m.peer_state(now, PeerState::Connected);
    outputs(&mut m);
    (m, now)
}

#[test]
fn start_match_offer_connect() {
    let mut m = CallMachine::new();
    m.command(Command::Start { interests: vec!["chess".into()], language: None });
    let out = outputs(&mut m);
    assert!(matches!(&out[0], Output::Signal(ClientMessage::JoinQueue { interests, .. }) if interests == &["chess"]));
    assert_eq!(out[1], Output::State(CallState::Searching));
    m.signaling(matched(false));
    let out = outputs(&mut m);
    assert!(matches!(out[0], Output::CreatePeer { polite: false, .. }));
    assert!(out.contains(&Output::State(CallState::Connecting)));
    assert!(out.contains(&Output::Negotiate(Action::MakeOffer { ice_restart: false })), "impolite offers first");
    m.peer_state(Instant::now(), PeerState::Connected);
    assert_eq!(m.state(), &CallState::Connected);
}

#[test]
fn the_polite_side_waits_for_the_offer() {
    let mut m = CallMachine::new();
    m.signaling(matched(true));
    let out = outputs(&mut m);
    assert!(!out.iter().any(|o| matches!(o, Output::Negotiate(_))));
    let offer = SessionDescription { sdp_type: SdpType::Offer, sdp: "v=0".into() };
    m.signaling(SignalingEvent::Message(ServerMessage::Signal {
        payload: SignalPayload::Description { description: offer.clone() },
    }));
    assert_eq!(outputs(&mut m), [Output::Negotiate(Action::ApplyRemote(offer))]);
    m.negotiation_result(Ok(()));
    assert_eq!(outputs(&mut m), [Output::Negotiate(Action::MakeAnswer)]);
}

#[test]
fn a_short_media_blip_restarts_ice_after_the_grace() {
    let (mut m, t0) = in_call(false);
    m.peer_state(t0, PeerState::Disconnected);
    assert_eq!(m.state(), &CallState::Reconnecting { side: Side::Local });
    m.handle_timeout(t0 + Duration::from_millis(1900));
    assert!(!outputs(&mut m).iter().any(|o| matches!(o, Output::Negotiate(_))));
    m.handle_timeout(t0 + DISCONNECTED_GRACE);
    assert!(outputs(&mut m).contains(&Output::Negotiate(Action::MakeOffer { ice_restart: true })));
    m.peer_state(t0 + Duration::from_secs(3), PeerState::Connected);
    assert_eq!(m.state(), &CallState::Connected);
    assert_eq!(m.poll_timeout(), None);
}

#[test]
fn failed_ice_restarts_at_once_and_a_stuck_restart_replaces_the_peer() {
    let (mut m, t0) = in_call(true);
    m.peer_state(t0, PeerState::Failed);
    assert!(outputs(&mut m).contains(&Output::Negotiate(Action::MakeOffer { ice_restart: true })));
    m.handle_timeout(t0 + RESTART_TIMEOUT);
    let out = outputs(&mut m);
    assert_eq!(out[0], Output::ClosePeer);
    assert!(matches!(out[1], Output::CreatePeer { polite: true, .. }), "same role for the fresh connection");
}

#[test]
fn the_partner_reconnecting_raises_no_alarm_while_media_flows() {
    let (mut m, t0) = in_call(false);
    m.signaling(SignalingEvent::Message(ServerMessage::PeerReconnecting { grace_ms: 15000 }));
    assert_eq!(m.state(), &CallState::Connected);
    m.signaling(SignalingEvent::State(SessionState::Reconnecting { attempt: 1 }));
    assert_eq!(m.state(), &CallState::Connected, "our signaling blip while media flows: no alarm");
    m.peer_state(t0, PeerState::Disconnected);
    assert_eq!(m.state(), &CallState::Reconnecting { side: Side::Peer });
    m.signaling(SignalingEvent::Message(ServerMessage::PeerResumed));
    m.peer_state(t0, PeerState::Connected);
    assert_eq!(m.state(), &CallState::Connected);
}

#[test]
fn partner_leaving_ends_or_requeues() {
    let (mut m, _) = in_call(false);
    m.signaling(SignalingEvent::Message(ServerMessage::PeerLeft { reason: PeerLeftReason::Next }));
    let out = outputs(&mut m);
    assert!(out.contains(&Output::ClosePeer));
    assert_eq!(m.state(), &CallState::Searching);
    let (mut m, _) = in_call(false);
    m.signaling(SignalingEvent::Message(ServerMessage::PeerLeft { reason: PeerLeftReason::Timeout }));
    assert!(matches!(m.state(), CallState::Ended { reason } if reason.contains("connection was lost")));
}

#[test]
fn next_and_stop_close_the_peer_and_tell_the_server() {
    let (mut m, _) = in_call(false);
    m.command(Command::Next);
    let out = outputs(&mut m);
    assert_eq!(out[..2], [Output::ClosePeer, Output::Signal(ClientMessage::Next)]);
    assert_eq!(m.state(), &CallState::Searching);
    m.command(Command::Stop);
    assert!(outputs(&mut m).contains(&Output::Signal(ClientMessage::Leave)));
    assert_eq!(m.state(), &CallState::Idle);
}

#[test]
fn losing_the_session_or_the_server_ends_the_call_with_a_reason() {
    let (mut m, _) = in_call(false);
    m.signaling(SignalingEvent::SessionLost);
    assert!(matches!(m.state(), CallState::Ended { .. }));
    let (mut m, _) = in_call(false);
    m.signaling(SignalingEvent::Failed(SignalingError::Unreachable("refused".into())));
    assert!(matches!(m.state(), CallState::Ended { reason } if reason.contains("cannot reach")));
}

#[test]
fn a_full_room_is_a_notice_and_back_to_idle() {
    let mut m = CallMachine::new();
    m.command(Command::JoinRoom { code: "abc".into() });
    m.signaling(SignalingEvent::Refused {
        request: "join_room",
        code: ErrorCode::RoomFull,
        message: "room abc is full".into(),
    });
    let out = outputs(&mut m);
    assert!(out.iter().any(|o| matches!(o, Output::Notice(n) if n.contains("full"))));
    assert_eq!(m.state(), &CallState::Idle);
}
