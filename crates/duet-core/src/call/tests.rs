//! The call machine on simulated time.

use std::time::{Duration, Instant};

use duet_proto::*;

use super::*;
use crate::call::{Failure, Fix};
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
    m.signaling(now, SignalingEvent::State(SessionState::Connected));
    m.command(Command::Start { interests: vec![], language: None });
    m.signaling(Instant::now(), matched(polite));
    // Complete the first offer/answer so the negotiator is idle and stable.
    let kind = if polite { SdpType::Offer } else { SdpType::Answer };
    if !polite {
        m.negotiation_result(Instant::now(), Ok(()));
    }
    let description = SessionDescription { sdp_type: kind, sdp: "v=0".into() };
    m.signaling(
        Instant::now(),
        SignalingEvent::Message(ServerMessage::Signal {
            payload: SignalPayload::Description { description },
            generation: None,
        }),
    );
    m.negotiation_result(Instant::now(), Ok(()));
    if polite {
        m.negotiation_result(Instant::now(), Ok(()));
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
    m.signaling(Instant::now(), matched(false));
    let out = outputs(&mut m);
    assert_eq!(out[0], Output::PairingStarted, "the chat starts afresh");
    assert!(matches!(out[1], Output::CreatePeer { polite: false, .. }));
    assert!(out.contains(&Output::State(CallState::Connecting)));
    assert!(out.contains(&Output::Negotiate(Action::MakeOffer { ice_restart: false })), "impolite offers first");
    m.peer_state(Instant::now(), PeerState::Connected);
    assert_eq!(m.state(), &CallState::Connected);
}

#[test]
fn the_polite_side_waits_for_the_offer() {
    let mut m = CallMachine::new();
    m.signaling(Instant::now(), matched(true));
    let out = outputs(&mut m);
    assert!(!out.iter().any(|o| matches!(o, Output::Negotiate(_))));
    let offer = SessionDescription { sdp_type: SdpType::Offer, sdp: "v=0".into() };
    m.signaling(
        Instant::now(),
        SignalingEvent::Message(ServerMessage::Signal {
            payload: SignalPayload::Description { description: offer.clone() },
            generation: Some(1),
        }),
    );
    assert_eq!(outputs(&mut m), [Output::Negotiate(Action::ApplyRemote(offer))]);
    m.negotiation_result(Instant::now(), Ok(()));
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
    let (mut m, t0) = in_call(false);
    m.peer_state(t0, PeerState::Failed);
    assert!(outputs(&mut m).contains(&Output::Negotiate(Action::MakeOffer { ice_restart: true })));
    m.handle_timeout(t0 + RESTART_TIMEOUT);
    let out = outputs(&mut m);
    assert_eq!(out[0], Output::ClosePeer);
    // The partner is told: a `restart` of the new generation.
    assert_eq!(out[1], restart(2));
    assert!(matches!(out[2], Output::CreatePeer { polite: false, .. }), "same role for the fresh connection");
    assert!(out.contains(&Output::Negotiate(Action::MakeOffer { ice_restart: false })));
    assert_eq!(m.generation(), 2);
}

#[test]
fn the_partner_reconnecting_raises_no_alarm_while_media_flows() {
    let (mut m, t0) = in_call(false);
    m.signaling(Instant::now(), SignalingEvent::Message(ServerMessage::PeerReconnecting { grace_ms: 15000 }));
    assert_eq!(m.state(), &CallState::Connected);
    m.signaling(Instant::now(), SignalingEvent::State(SessionState::Reconnecting { attempt: 1 }));
    assert_eq!(m.state(), &CallState::Connected, "our signaling blip while media flows: no alarm");
    m.peer_state(t0, PeerState::Disconnected);
    assert_eq!(m.state(), &CallState::Reconnecting { side: Side::Peer });
    m.signaling(Instant::now(), SignalingEvent::Message(ServerMessage::PeerResumed));
    m.peer_state(t0, PeerState::Connected);
    assert_eq!(m.state(), &CallState::Connected);
}

#[test]
fn partner_leaving_ends_or_requeues() {
    let (mut m, _) = in_call(false);
    m.signaling(Instant::now(), SignalingEvent::Message(ServerMessage::PeerLeft { reason: PeerLeftReason::Next }));
    let out = outputs(&mut m);
    assert!(out.contains(&Output::ClosePeer));
    assert_eq!(m.state(), &CallState::Searching);
    let (mut m, _) = in_call(false);
    m.signaling(Instant::now(), SignalingEvent::Message(ServerMessage::PeerLeft { reason: PeerLeftReason::Timeout }));
    assert!(matches!(m.state(), CallState::Ended { reason } if reason.contains("connection was lost")));
}

#[test]
fn next_and_stop_close_the_peer_and_tell_the_server() {
    let (mut m, _) = in_call(false);
    m.command(Command::Next);
    let out = outputs(&mut m);
    assert_eq!(out[..3], [Output::ClosePeer, Output::PairingEnded, Output::Signal(ClientMessage::Next)]);
    assert_eq!(m.state(), &CallState::Searching);
    m.command(Command::Stop);
    assert!(outputs(&mut m).contains(&Output::Signal(ClientMessage::Leave)));
    assert_eq!(m.state(), &CallState::Idle);
}

#[test]
fn losing_the_session_or_the_server_ends_the_call_with_a_reason() {
    let (mut m, _) = in_call(false);
    m.signaling(Instant::now(), SignalingEvent::SessionLost);
    assert!(matches!(m.state(), CallState::Ended { .. }));
    let (mut m, _) = in_call(false);
    m.signaling(Instant::now(), SignalingEvent::Failed(SignalingError::Unreachable("refused".into())));
    assert!(matches!(m.state(), CallState::Ended { reason } if reason.contains("cannot reach")));
}

#[test]
fn a_full_room_is_a_notice_and_back_to_idle() {
    let mut m = CallMachine::new();
    m.command(Command::JoinRoom { code: "abc".into() });
    m.signaling(
        Instant::now(),
        SignalingEvent::Refused { request: "join_room", code: ErrorCode::RoomFull, message: "room abc is full".into() },
    );
    let out = outputs(&mut m);
    assert!(out.iter().any(|o| matches!(o, Output::Notice(n) if n.contains("full"))));
    assert_eq!(m.state(), &CallState::Idle);
}

fn restart(generation: u32) -> Output {
    Output::Signal(ClientMessage::Signal { payload: SignalPayload::Restart, generation: Some(generation) })
}

fn signal(payload: SignalPayload, generation: Option<u32>) -> SignalingEvent {
    SignalingEvent::Message(ServerMessage::Signal { payload, generation })
}

fn answer() -> SignalPayload {
    SignalPayload::Description { description: SessionDescription { sdp_type: SdpType::Answer, sdp: "v=0 late".into() } }
}

fn candidate() -> SignalPayload {
    SignalPayload::Candidate {
        candidate: IceCandidate {
            candidate: "candidate:1 1 udp 1 10.0.0.1 9 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
            username_fragment: None,
        },
    }
}

#[test]
fn late_signals_of_a_replaced_peer_connection_are_dropped_and_counted() {
    let (mut m, t0) = in_call(false);
    m.peer_state(t0, PeerState::Failed);
    m.handle_timeout(t0 + RESTART_TIMEOUT);
    outputs(&mut m);
    assert_eq!(m.generation(), 2);
    // The old connection's answer and candidates arrive now: none reaches the new connection.
    m.signaling(t0 + RESTART_TIMEOUT, signal(answer(), Some(1)));
    m.signaling(t0 + RESTART_TIMEOUT, signal(candidate(), Some(1)));
    let out = outputs(&mut m);
    assert_eq!(out, [Output::StaleSignalDropped, Output::StaleSignalDropped]);
    // The new generation's answer goes through.
    m.negotiation_result(t0 + RESTART_TIMEOUT, Ok(()));
    m.signaling(t0 + RESTART_TIMEOUT, signal(answer(), Some(2)));
    assert!(matches!(&outputs(&mut m)[..], [Output::Negotiate(Action::ApplyRemote(_))]));
}

#[test]
fn a_newer_generation_from_the_partner_is_followed_without_a_second_restart() {
    let (mut m, t0) = in_call(true);
    m.signaling(t0, signal(SignalPayload::Restart, Some(2)));
    let out = outputs(&mut m);
    assert_eq!(out[0], Output::ClosePeer);
    assert!(matches!(out[1], Output::CreatePeer { polite: true, .. }));
    assert!(!out.iter().any(|o| matches!(o, Output::Signal(_))), "following is silent: {out:?}");
    assert_eq!(m.generation(), 2);
    // The impolite side's offer for generation 2 is taken by the new connection.
    let offer = SessionDescription { sdp_type: SdpType::Offer, sdp: "v=0 gen2".into() };
    m.signaling(t0, signal(SignalPayload::Description { description: offer.clone() }, Some(2)));
    assert_eq!(outputs(&mut m), [Output::Negotiate(Action::ApplyRemote(offer))]);
    // Signals without a generation (a browser partner) count as current.
    m.negotiation_result(t0, Ok(()));
    outputs(&mut m);
    m.signaling(t0, signal(candidate(), None));
    assert!(matches!(&outputs(&mut m)[..], [Output::Negotiate(Action::AddCandidate(_))]));
}

#[test]
fn the_impolite_side_decides_and_the_polite_side_only_after_waiting_twice_as_long() {
    let (mut polite, t0) = in_call(true);
    polite.peer_state(t0, PeerState::Failed);
    outputs(&mut polite);
    polite.handle_timeout(t0 + RESTART_TIMEOUT);
    assert!(!outputs(&mut polite).contains(&Output::ClosePeer), "the impolite side decides first");
    polite.handle_timeout(t0 + RESTART_TIMEOUT * 2);
    let out = outputs(&mut polite);
    assert_eq!(out[..2], [Output::ClosePeer, restart(2)], "and the polite side if it never does");
}

#[test]
fn a_connection_that_never_connects_is_replaced_and_the_call_given_up_after_three() {
    let mut m = CallMachine::new();
    let t0 = Instant::now();
    m.signaling(t0, SignalingEvent::State(SessionState::Connected));
    m.signaling(t0, matched(false));
    outputs(&mut m);
    let mut t = t0;
    for generation in 2..=MAX_REPLACEMENTS + 1 {
        t += CONNECT_TIMEOUT;
        m.handle_timeout(t);
        let out = outputs(&mut m);
        assert!(out.contains(&restart(generation)), "{out:?}");
        assert_eq!(m.state(), &CallState::Connecting);
    }
    t += CONNECT_TIMEOUT;
    m.handle_timeout(t);
    assert!(matches!(m.state(), CallState::Ended { reason } if reason.contains("Could not connect")));
    assert_eq!(m.poll_timeout(), None, "no timer outlives the call");
}

#[test]
fn an_unanswered_offer_is_replaced_only_while_both_sides_reach_the_server() {
    let mut m = CallMachine::new();
    let t0 = Instant::now();
    m.signaling(t0, SignalingEvent::State(SessionState::Connected));
    m.signaling(t0, matched(false));
    outputs(&mut m);
    m.negotiation_result(t0, Ok(()));
    // The partner is away: the server holds the offer; no replacement.
    m.signaling(t0, SignalingEvent::Message(ServerMessage::PeerReconnecting { grace_ms: 15000 }));
    m.handle_timeout(t0 + OFFER_TIMEOUT);
    assert!(!outputs(&mut m).contains(&Output::ClosePeer));
    m.signaling(t0 + OFFER_TIMEOUT, SignalingEvent::Message(ServerMessage::PeerResumed));
    m.handle_timeout(t0 + OFFER_TIMEOUT * 2);
    let out = outputs(&mut m);
    assert_eq!(out[..2], [Output::ClosePeer, restart(2)], "{out:?}");
}

#[test]
fn each_recovery_says_what_failed_what_fixed_it_and_how_long_it_took() {
    let recovered = |out: &[Output]| {
        out.iter()
            .find_map(|o| match o {
                Output::Recovered(r) => Some(*r),
                _ => None,
            })
            .expect("a recovery")
    };
    // Back by itself within the grace.
    let (mut m, t0) = in_call(false);
    m.peer_state(t0, PeerState::Disconnected);
    m.peer_state(t0 + Duration::from_millis(800), PeerState::Connected);
    let r = recovered(&outputs(&mut m));
    assert_eq!((r.failed, r.fixed_by, r.took), (Failure::IceDisconnected, Fix::Ice, Duration::from_millis(800)));
    // An ICE restart.
    m.peer_state(t0 + Duration::from_secs(10), PeerState::Disconnected);
    m.handle_timeout(t0 + Duration::from_secs(10) + DISCONNECTED_GRACE);
    m.peer_state(t0 + Duration::from_secs(13), PeerState::Connected);
    let r = recovered(&outputs(&mut m));
    assert_eq!((r.failed, r.fixed_by, r.took), (Failure::IceDisconnected, Fix::IceRestart, Duration::from_secs(3)));
    // A fresh peer connection.
    m.peer_state(t0 + Duration::from_secs(20), PeerState::Failed);
    m.handle_timeout(t0 + Duration::from_secs(20) + RESTART_TIMEOUT);
    m.peer_state(t0 + Duration::from_secs(32), PeerState::Connected);
    let r = recovered(&outputs(&mut m));
    assert_eq!((r.failed, r.fixed_by, r.took), (Failure::IceFailed, Fix::NewPeerConnection, Duration::from_secs(12)));
    // Signaling, resumed on a restarted server.
    m.signaling(t0 + Duration::from_secs(40), SignalingEvent::State(SessionState::Reconnecting { attempt: 1 }));
    m.signaling(
        t0 + Duration::from_secs(43),
        SignalingEvent::Welcome { session_id: "s".into(), resumed: true, restored: true, ice_servers: vec![] },
    );
    let r = recovered(&outputs(&mut m));
    assert_eq!((r.failed, r.fixed_by, r.took), (Failure::Signaling, Fix::SessionRestore, Duration::from_secs(3)));
}

#[test]
fn no_fresh_connection_while_the_partner_cannot_be_reached_the_old_one_may_come_back() {
    let (mut m, t0) = in_call(false);
    m.peer_state(t0, PeerState::Disconnected);
    m.handle_timeout(t0 + DISCONNECTED_GRACE);
    outputs(&mut m);
    // The partner's link is down too: the server says it is reconnecting.
    m.signaling(
        t0 + Duration::from_secs(5),
        SignalingEvent::Message(ServerMessage::PeerReconnecting { grace_ms: 30000 }),
    );
    for s in [10, 20, 30] {
        m.handle_timeout(t0 + Duration::from_secs(s) + RESTART_TIMEOUT);
    }
    assert!(!outputs(&mut m).contains(&Output::ClosePeer), "kept the connection while the partner was away");
    // The link returns: the same connection recovers by itself.
    m.peer_state(t0 + Duration::from_secs(41), PeerState::Connected);
    assert_eq!(m.generation(), 1);
    assert_eq!(m.state(), &CallState::Connected);
}

#[test]
fn a_lost_local_address_moves_media_to_a_fresh_connection_at_once_and_a_new_one_changes_nothing() {
    let (mut m, t0) = in_call(true);
    // Only a new address (a VPN, a second interface): the working path stays.
    m.network_changed(t0, false);
    assert!(outputs(&mut m).is_empty());
    // The address in use went away: no waiting for ICE to notice, even on the polite side.
    m.network_changed(t0 + Duration::from_secs(5), true);
    let out = outputs(&mut m);
    assert_eq!(out[..2], [Output::ClosePeer, restart(2)], "{out:?}");
    assert!(matches!(out[2], Output::CreatePeer { polite: true, .. }));
    m.peer_state(t0 + Duration::from_millis(5_400), PeerState::Connected);
    let r = outputs(&mut m).into_iter().find_map(|o| match o {
        Output::Recovered(r) => Some(r),
        _ => None,
    });
    let r = r.expect("recovered");
    assert_eq!(
        (r.failed, r.fixed_by, r.took),
        (Failure::NetworkChanged, Fix::NewPeerConnection, Duration::from_millis(400))
    );
}

#[test]
fn a_partner_silent_on_the_control_channel_while_ice_says_connected_is_a_lost_path() {
    let (mut m, t0) = in_call(false);
    m.media_silent(t0);
    assert_eq!(m.state(), &CallState::Reconnecting { side: Side::Local });
    m.handle_timeout(t0 + DISCONNECTED_GRACE);
    assert!(outputs(&mut m).contains(&Output::Negotiate(Action::MakeOffer { ice_restart: true })));
    m.peer_state(t0 + Duration::from_secs(3), PeerState::Connected);
    let r = outputs(&mut m).into_iter().find_map(|o| match o {
        Output::Recovered(r) => Some(r),
        _ => None,
    });
    let r = r.expect("recovered");
    assert_eq!((r.failed, r.fixed_by, r.took), (Failure::KeepaliveSilent, Fix::IceRestart, Duration::from_secs(3)));
    // Silence while the path is already being recovered changes nothing.
    m.peer_state(t0 + Duration::from_secs(10), PeerState::Disconnected);
    outputs(&mut m);
    m.media_silent(t0 + Duration::from_secs(11));
    assert!(outputs(&mut m).is_empty());
}

#[test]
fn a_peer_left_arriving_after_we_left_or_moved_on_changes_nothing() {
    // Both sides hang up at once: the server tells each that the other left, after each has
    // already left on its own.
    let (mut m, t0) = in_call(false);
    m.command(Command::Stop);
    outputs(&mut m);
    m.signaling(t0, SignalingEvent::Message(ServerMessage::PeerLeft { reason: PeerLeftReason::Left }));
    assert_eq!(m.state(), &CallState::Idle);
    assert!(outputs(&mut m).is_empty());
    // We pressed Next; the old partner's departure must not end the new search.
    let (mut m, t0) = in_call(false);
    m.command(Command::Next);
    outputs(&mut m);
    m.signaling(t0, SignalingEvent::Message(ServerMessage::PeerLeft { reason: PeerLeftReason::Timeout }));
    assert_eq!(m.state(), &CallState::Searching);
}

fn restored_welcome() -> SignalingEvent {
    SignalingEvent::Welcome { session_id: "s".into(), resumed: true, restored: true, ice_servers: vec![] }
}

#[test]
fn a_search_restored_on_another_server_asks_for_its_place_in_the_queue_again() {
    let mut m = CallMachine::new();
    let t0 = Instant::now();
    m.signaling(t0, SignalingEvent::State(SessionState::Connected));
    m.command(Command::Start { interests: vec!["chess".into()], language: Some("de".into()) });
    outputs(&mut m);
    // The server holding the session went away; another rebuilt it from its token, without
    // its place in the queue (a token names a pairing, not a search).
    m.signaling(t0, SignalingEvent::State(SessionState::Reconnecting { attempt: 1 }));
    m.signaling(t0 + Duration::from_secs(1), restored_welcome());
    let out = outputs(&mut m);
    let again = ClientMessage::JoinQueue { interests: vec!["chess".into()], language: Some("de".into()) };
    assert!(out.contains(&Output::Signal(again)), "{out:?}");
    assert_eq!(m.state(), &CallState::Searching);
    // A resume on the same server keeps the place: nothing is asked again.
    m.signaling(t0 + Duration::from_secs(2), SignalingEvent::State(SessionState::Reconnecting { attempt: 1 }));
    let resumed =
        SignalingEvent::Welcome { session_id: "s".into(), resumed: true, restored: false, ice_servers: vec![] };
    m.signaling(t0 + Duration::from_secs(3), resumed);
    assert!(!outputs(&mut m).iter().any(|o| matches!(o, Output::Signal(_))));
}

#[test]
fn a_wait_in_a_room_by_code_restored_on_another_server_joins_the_room_again() {
    let mut m = CallMachine::new();
    let t0 = Instant::now();
    m.signaling(t0, SignalingEvent::State(SessionState::Connected));
    m.command(Command::JoinRoom { code: "friends-42".into() });
    m.signaling(t0, SignalingEvent::Message(ServerMessage::RoomJoined { code: "friends-42".into() }));
    outputs(&mut m);
    m.signaling(t0, SignalingEvent::State(SessionState::Reconnecting { attempt: 1 }));
    m.signaling(t0 + Duration::from_secs(1), restored_welcome());
    let out = outputs(&mut m);
    assert!(out.contains(&Output::Signal(ClientMessage::JoinRoom { code: "friends-42".into() })), "{out:?}");
    assert_eq!(m.state(), &CallState::WaitingInRoom { code: "friends-42".into() });
}

#[test]
fn a_search_after_next_restored_elsewhere_queues_with_the_same_preferences() {
    let (mut m, t0) = in_call(false);
    m.command(Command::Next);
    outputs(&mut m);
    m.signaling(t0, SignalingEvent::State(SessionState::Reconnecting { attempt: 1 }));
    m.signaling(t0 + Duration::from_secs(1), restored_welcome());
    let out = outputs(&mut m);
    let again = ClientMessage::JoinQueue { interests: vec![], language: None };
    assert!(out.contains(&Output::Signal(again)), "{out:?}");
}
