//! Real WebSocket clients against the service: matching, relay, rooms, duplicate ids, blocks,
//! HTTP endpoints. Each test runs twice (`memory::` and `redis::`, see [`common::Service`]).

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use duet_proto::*;
use duet_server::hub::HubConfig;

both_modes!(
    two_clients_are_matched_and_relay_a_full_negotiation,
    a_repeated_id_is_answered_but_relayed_once,
    rooms_by_code_pair_friends_and_refuse_a_third,
    next_rematches_with_a_third_client,
    block_means_never_again,
    a_block_follows_the_person_to_a_new_session_on_the_same_device,
    http_endpoints_answer,
);

async fn two_clients_are_matched_and_relay_a_full_negotiation(mode: Mode) {
    let service = Service::start(mode, HubConfig::default()).await;
    let (mut a, mut b) = service.matched_pair().await;

    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\n";
    let id = a.send(ClientMessage::Signal { payload: offer(sdp), generation: None }).await;
    assert_eq!(a.expect("ok").await.reply_to, Some(id));
    let got = b.expect("signal").await;
    assert!(matches!(&got.msg, ServerMessage::Signal { payload, .. } if *payload == offer(sdp)));

    let answer = SignalPayload::Description {
        description: SessionDescription { sdp_type: SdpType::Answer, sdp: "v=0\r\n".into() },
    };
    b.send(ClientMessage::Signal { payload: answer.clone(), generation: None }).await;
    let cand = SignalPayload::Candidate {
        candidate: IceCandidate {
            candidate: "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
            username_fragment: Some("abcd".into()),
        },
    };
    b.send(ClientMessage::Signal { payload: cand.clone(), generation: None }).await;
    b.send(ClientMessage::Signal { payload: SignalPayload::EndOfCandidates, generation: None }).await;
    for expected in [answer, cand, SignalPayload::EndOfCandidates] {
        let f = a.expect("signal").await;
        assert!(matches!(f.msg, ServerMessage::Signal { payload, .. } if payload == expected));
    }
    service.totals(|v| v["signals_relayed_total"] == 4 && v["matches_total"] == 1).await;
}

async fn a_repeated_id_is_answered_but_relayed_once(mode: Mode) {
    let service = Service::start(mode, HubConfig::default()).await;
    let (mut a, mut b) = service.matched_pair().await;
    let frame = ClientFrame::with_id(900, ClientMessage::Signal { payload: SignalPayload::Restart, generation: None });
    a.send_frame(frame.clone()).await;
    a.send_frame(frame).await;
    assert_eq!(a.expect("ok").await.reply_to, Some(900));
    assert_eq!(a.expect("ok").await.reply_to, Some(900));
    b.expect("signal").await;
    b.expect_silence(std::time::Duration::from_millis(300)).await;
}

async fn rooms_by_code_pair_friends_and_refuse_a_third(mode: Mode) {
    let service = Service::start(mode, HubConfig::default()).await;
    let mut x = Client::connect(service.url(0)).await;
    let mut y = Client::connect(service.url(1)).await;
    let mut z = Client::connect(service.url(2)).await;
    x.send(ClientMessage::JoinRoom { code: "our-room".into() }).await;
    x.expect("room_joined").await;
    y.send(ClientMessage::JoinRoom { code: "our-room".into() }).await;
    let m = y.expect("matched").await;
    assert!(
        matches!(&m.msg, ServerMessage::Matched { room, peer, polite: true, .. } if room == "our-room" && peer.session_id == x.session_id)
    );
    x.expect("matched").await;
    let id = z.send(ClientMessage::JoinRoom { code: "our-room".into() }).await;
    assert_eq!(z.expect_error(Some(id)).await, ErrorCode::RoomFull);
}

async fn next_rematches_with_a_third_client(mode: Mode) {
    let service = Service::start(mode, HubConfig::default()).await;
    let (mut a, mut b) = service.matched_pair().await;
    a.send(ClientMessage::Next).await;
    a.expect("queued").await;
    let left = b.expect("peer_left").await;
    assert!(matches!(left.msg, ServerMessage::PeerLeft { reason: PeerLeftReason::Next }));
    b.expect("queued").await;
    service.queue_holds(2).await;
    let mut c = Client::connect(service.url(2)).await;
    c.send(ClientMessage::JoinQueue { interests: vec![], language: None }).await;
    let m = c.expect("matched").await;
    let ServerMessage::Matched { peer, .. } = m.msg else { unreachable!() };
    assert_eq!(peer.session_id, b.session_id, "b was re-queued first");
    b.expect("matched").await;
}

/// b's new session is on the other node of the service when there is one: the block holds
/// wherever the device comes back.
async fn a_block_follows_the_person_to_a_new_session_on_the_same_device(mode: Mode) {
    let service = Service::start(mode, HubConfig::default()).await;
    let mut a = Client::connect_on(service.url(0), "device-alice-0000001").await;
    a.send(ClientMessage::JoinQueue { interests: vec![], language: None }).await;
    a.expect("queued").await;
    service.queue_holds(1).await;
    let mut b = Client::connect_on(service.url(1), "device-bob-000000001").await;
    b.send(ClientMessage::JoinQueue { interests: vec![], language: None }).await;
    a.expect("matched").await;
    b.expect("matched").await;
    a.send(ClientMessage::Block).await;
    a.expect("ok").await;
    // b quits the app and starts again: a new session on the same device, on a's node.
    b.send(ClientMessage::Leave).await;
    drop(b);
    let mut b2 = Client::connect_on(service.url(0), "device-bob-000000001").await;
    for c in [&mut a, &mut b2] {
        c.send(ClientMessage::JoinQueue { interests: vec![], language: None }).await;
        c.expect("queued").await;
    }
    service.queue_holds(2).await;
    a.expect_silence(std::time::Duration::from_millis(500)).await;
    b2.expect_silence(std::time::Duration::from_millis(100)).await;
    // Another device is matched with a at once.
    let mut c = Client::connect_on(service.url(1), "device-carol-0000001").await;
    c.send(ClientMessage::JoinQueue { interests: vec![], language: None }).await;
    c.expect("matched").await;
}

async fn block_means_never_again(mode: Mode) {
    let service = Service::start(mode, HubConfig::default()).await;
    let (mut a, mut b) = service.matched_pair().await;
    a.send(ClientMessage::Block).await;
    a.expect("ok").await;
    assert!(matches!(b.expect("peer_left").await.msg, ServerMessage::PeerLeft { reason: PeerLeftReason::Blocked }));
    for c in [&mut a, &mut b] {
        c.send(ClientMessage::JoinQueue { interests: vec![], language: None }).await;
        c.expect("queued").await;
    }
    service.queue_holds(2).await;
    a.expect_silence(std::time::Duration::from_millis(500)).await;
}

/// The first client's node answers for itself (its `sessions` are its own).
async fn http_endpoints_answer(mode: Mode) {
    let service = Service::start(mode, HubConfig::default()).await;
    let c = Client::connect(service.url(0)).await;
    let (status, body) = service.get("/health").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["protocol"], 1);
    assert!(v["uptime_s"].is_u64() && v["version"].is_string());
    assert_eq!(v["sessions"], 1);

    let (status, body) =
        service.get_with("/api/webrtc/config", &[("Authorization", &format!("Bearer {}", c.token))]).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["ice_servers"].is_array());
    assert_eq!(v["resume_grace_ms"], 15000);

    let (status, body) = service.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("duet_sessions 1"), "{body}");
    assert!(body.contains("duet_errors_total{code=\"bad_json\"} 0"));

    let (status, body) = service.get("/").await;
    assert_eq!(status, 200);
    assert!(body.contains("<script type=\"module\" src=\"/app.js\">"), "the browser client is served at /");
    let (status, body) = service.get("/app.js").await;
    assert_eq!(status, 200);
    assert!(body.contains("new RTCPeerConnection"));
    assert_eq!(service.get("/style.css").await.0, 200);

    assert_eq!(service.get("/nope").await.0, 404);
    assert_eq!(service.get("/ws").await.0, 426, "plain GET on /ws explains itself");
}
