//! The signaling machine on simulated time, with hand-made server frames.

use std::time::{Duration, Instant};

use duet_proto::*;

use super::*;

struct Sim {
    m: SignalingMachine,
    now: Instant,
    sent: Vec<ClientFrame>,
    events: Vec<SignalingEvent>,
    connects: u32,
    disconnects: u32,
}

impl Sim {
    fn new() -> Self {
        let now = Instant::now();
        let cfg = SignalingConfig { jitter_seed: Some(1), ..SignalingConfig::default() };
        let mut s =
            Sim { m: SignalingMachine::new(cfg, now), now, sent: vec![], events: vec![], connects: 0, disconnects: 0 };
        s.drain();
        s
    }

    fn drain(&mut self) {
        while let Some(o) = self.m.poll_output() {
            match o {
                Output::Connect => self.connects += 1,
                Output::Disconnect => self.disconnects += 1,
                Output::Transmit(t) => self.sent.push(parse_client_frame(&t).expect("client sends valid frames")),
                Output::Event(e) => self.events.push(e),
            }
        }
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(at) = self.m.poll_timeout().filter(|at| *at <= end) {
            self.now = self.now.max(at);
            self.m.handle_timeout(self.now);
            self.drain();
        }
        self.now = end;
    }

    fn server(&mut self, seq: u64, reply_to: Option<u64>, msg: ServerMessage) {
        self.m.handle_text(self.now, &ServerFrame { seq, reply_to, msg }.to_json());
        self.drain();
    }

    fn welcome(&mut self, seq: u64, resumed: bool) {
        self.server(seq, None, welcome(resumed));
    }

    fn open(&mut self) {
        self.m.socket_opened(self.now);
        self.drain();
    }

    fn take_sent(&mut self) -> Vec<ClientFrame> {
        std::mem::take(&mut self.sent)
    }

    fn take_events(&mut self) -> Vec<SignalingEvent> {
        std::mem::take(&mut self.events)
    }

    /// Connected and welcomed, outputs cleared.
    fn ready() -> Self {
        let mut s = Sim::new();
        s.open();
        s.welcome(1, false);
        s.take_sent();
        s.take_events();
        s
    }
}

fn welcome(resumed: bool) -> ServerMessage {
    welcome_with(resumed, false)
}

fn welcome_with(resumed: bool, restored: bool) -> ServerMessage {
    ServerMessage::Welcome {
        session_id: "s1".into(),
        resume_token: "tok".into(),
        heartbeat_ms: 4000,
        resume_grace_ms: 15000,
        ice_servers: vec![],
        resumed,
        replayed: 0,
        server: ServerInfo { version: "t".into(), protocol: 1, max_frame_bytes: 65536 },
        restored,
    }
}

fn queued() -> ServerMessage {
    ServerMessage::Queued { interests: vec![], language: None }
}

#[test]
fn connects_says_hello_and_reports_the_session() {
    let mut s = Sim::new();
    assert_eq!(s.connects, 1);
    s.open();
    let hello = s.take_sent();
    assert!(
        matches!(&hello[0].msg, ClientMessage::Hello { version: 1, resume_token: None, client: Some(_) }),
        "{hello:?}"
    );
    s.welcome(1, false);
    let ev = s.take_events();
    assert!(ev.contains(&SignalingEvent::State(SessionState::Connected)));
    assert!(ev.iter().any(|e| matches!(e, SignalingEvent::Welcome { resumed: false, .. })));
}

#[test]
fn messages_sent_before_welcome_go_out_after_it() {
    let mut s = Sim::new();
    let id = s.m.send(ClientMessage::JoinQueue { interests: vec![], language: None }).unwrap();
    s.open();
    assert_eq!(s.take_sent().len(), 1, "only hello before welcome");
    s.welcome(1, false);
    let sent = s.take_sent();
    assert_eq!(sent[0].id, Some(id));
    assert!(matches!(sent[0].msg, ClientMessage::JoinQueue { .. }));
}

#[test]
fn replayed_duplicates_are_skipped() {
    let mut s = Sim::ready();
    s.server(2, None, queued());
    s.server(2, None, queued());
    s.server(3, None, ServerMessage::PeerResumed);
    let msgs: Vec<_> = s.take_events().into_iter().filter(|e| matches!(e, SignalingEvent::Message(_))).collect();
    assert_eq!(msgs.len(), 2);
}

#[test]
fn acks_are_piggy_backed_or_sent_after_a_delay() {
    let mut s = Sim::ready();
    s.server(2, None, queued());
    s.m.send(ClientMessage::Next);
    s.drain();
    assert_eq!(s.take_sent()[0].ack, Some(2), "piggy-backed");
    s.server(3, None, ServerMessage::PeerResumed);
    s.advance(Duration::from_millis(350));
    let sent = s.take_sent();
    assert!(sent.iter().any(|f| f.msg == ClientMessage::Ack { seq: 3 }), "{sent:?}");
}

#[test]
fn many_messages_are_acked_at_once() {
    let mut s = Sim::ready();
    for seq in 2..18 {
        s.server(seq, None, ServerMessage::PeerResumed);
    }
    assert!(s.take_sent().iter().any(|f| f.msg == ClientMessage::Ack { seq: 17 }));
}

#[test]
fn a_lost_socket_reconnects_with_backoff_and_resumes() {
    let mut s = Sim::ready();
    s.server(2, None, queued());
    let id = s.m.send(ClientMessage::Signal { payload: SignalPayload::Restart, generation: None }).unwrap();
    s.drain();
    s.take_sent();
    s.m.socket_closed(s.now, "reset");
    s.drain();
    assert!(s.take_events().contains(&SignalingEvent::State(SessionState::Reconnecting { attempt: 1 })));
    let at = s.m.poll_timeout().unwrap();
    assert!(at <= s.now + Backoff::default().window(0), "first retry within the base window");
    s.advance(Duration::from_millis(300));
    assert_eq!(s.connects, 2);
    s.open();
    let hello = s.take_sent();
    assert!(matches!(&hello[0].msg, ClientMessage::Hello { resume_token: Some(t), .. } if t == "tok"));
    assert_eq!(hello[0].ack, Some(2), "the resuming hello acks what was processed");
    s.welcome(5, true);
    let resent = s.take_sent();
    assert_eq!(resent.len(), 1);
    assert_eq!(resent[0].id, Some(id), "the unanswered signal is re-sent with its id");
    assert!(s.take_events().iter().any(|e| matches!(e, SignalingEvent::Welcome { resumed: true, .. })));
    // Once answered, it is not re-sent again.
    s.server(6, Some(id), ServerMessage::Ok);
    s.m.socket_closed(s.now, "reset");
    s.advance(Duration::from_secs(1));
    s.open();
    s.take_sent();
    s.welcome(7, true);
    assert!(s.take_sent().is_empty());
}

#[test]
fn a_restarted_server_gets_the_newest_token_and_its_sequence_numbers_start_again() {
    let mut s = Sim::ready();
    for seq in 2..=40 {
        s.server(seq, None, ServerMessage::PeerResumed);
    }
    // The pairing changed: the server reissued the token.
    s.server(41, None, ServerMessage::Token { resume_token: "tok-paired".into() });
    s.take_events();
    s.take_sent();
    s.m.socket_closed(s.now, "going away");
    s.advance(Duration::from_secs(1));
    s.open();
    let hello = s.take_sent();
    assert!(matches!(&hello[0].msg, ClientMessage::Hello { resume_token: Some(t), .. } if t == "tok-paired"));
    // The restarted process numbers from 1 again: nothing it sends may be taken for a replay.
    s.server(1, None, welcome_with(true, true));
    let ev = s.take_events();
    assert!(!ev.contains(&SignalingEvent::SessionLost), "{ev:?}");
    s.server(2, None, ServerMessage::PeerResumed);
    assert!(s.take_events().contains(&SignalingEvent::Message(ServerMessage::PeerResumed)));
    s.advance(Duration::from_millis(350));
    assert!(s.take_sent().iter().any(|f| f.msg == ClientMessage::Ack { seq: 2 }));
}

#[test]
fn backoff_grows_while_the_server_stays_away() {
    let mut s = Sim::ready();
    let mut gaps = vec![];
    for _ in 0..5 {
        let before = s.now;
        s.m.socket_closed(s.now, "refused");
        s.drain();
        let at = s.m.poll_timeout().unwrap();
        gaps.push(at - before);
        s.advance(at - s.now);
        assert_eq!(s.m.state(), SessionState::Reconnecting { attempt: s.connects - 1 });
    }
    for (i, gap) in gaps.iter().enumerate() {
        assert!(*gap <= Backoff::default().window(i as u32), "gap {i} = {gap:?}");
    }
    assert_eq!(s.connects, 6);
}

#[test]
fn a_failed_resume_reports_the_session_lost() {
    let mut s = Sim::ready();
    s.m.send(ClientMessage::Signal { payload: SignalPayload::Restart, generation: None });
    s.drain();
    s.m.socket_closed(s.now, "reset");
    s.advance(Duration::from_secs(1));
    s.open();
    s.take_sent();
    s.take_events();
    s.welcome(1, false);
    assert!(s.take_events().contains(&SignalingEvent::SessionLost));
    assert!(s.take_sent().is_empty(), "the old session's signal is not sent into the new one");
}

#[test]
fn an_unreachable_server_fails_promptly() {
    let mut s = Sim::new();
    for _ in 0..3 {
        s.m.socket_closed(s.now, "connection refused");
        s.drain();
        s.advance(Duration::from_secs(1));
    }
    let ev = s.take_events();
    assert!(
        ev.iter().any(|e| matches!(e, SignalingEvent::Failed(SignalingError::Unreachable(r)) if r.contains("refused")))
    );
    assert_eq!(s.m.state(), SessionState::Failed);
    assert!(s.m.poll_timeout().is_none(), "nothing more to do");
}

#[test]
fn an_untrusted_certificate_is_final_at_once_even_mid_session() {
    let cert = || SignalingError::Certificate {
        url: "wss://x.org/ws".into(),
        reason: "it is not signed by an authority this computer trusts".into(),
    };
    // The first attempt: no retries.
    let mut s = Sim::new();
    s.m.give_up(cert());
    s.drain();
    assert_eq!(s.m.state(), SessionState::Failed);
    assert!(s.take_events().contains(&SignalingEvent::Failed(cert())));
    assert!(s.m.poll_timeout().is_none(), "nothing more to do");
    s.advance(Duration::from_secs(60));
    assert_eq!(s.connects, 1, "never retried");
    assert_eq!(
        cert().to_string(),
        "cannot verify the server's certificate (wss://x.org/ws): it is not signed by an authority this computer trusts"
    );

    // A reconnection after the certificate changed under a live session: also final.
    let mut s = Sim::ready();
    s.m.socket_closed(s.now, "connection reset");
    s.drain();
    s.advance(Duration::from_secs(1));
    assert_eq!(s.connects, 2, "one reconnection attempt");
    s.m.give_up(cert());
    s.drain();
    assert_eq!(s.m.state(), SessionState::Failed);
    s.advance(Duration::from_secs(60));
    assert_eq!(s.connects, 2, "never retried");
    // Once closed, nothing more happens.
    s.m.give_up(cert());
    s.drain();
    assert_eq!(s.take_events().iter().filter(|e| matches!(e, SignalingEvent::Failed(_))).count(), 1);
}

#[test]
fn a_version_mismatch_is_final() {
    let mut s = Sim::new();
    s.open();
    s.server(0, None, ServerMessage::error(ErrorCode::VersionMismatch, "server speaks v2"));
    let ev = s.take_events();
    assert!(ev.iter().any(|e| matches!(e, SignalingEvent::Failed(SignalingError::VersionMismatch(_)))));
    assert_eq!(s.disconnects, 1);
}

#[test]
fn pings_keep_time_and_silence_means_a_dead_socket() {
    let mut s = Sim::ready();
    s.advance(Duration::from_millis(2000));
    let pings: Vec<_> = s.take_sent().into_iter().filter(|f| matches!(f.msg, ClientMessage::Ping { .. })).collect();
    assert_eq!(pings.len(), 1, "ping every heartbeat/2");
    let ClientMessage::Ping { ts } = pings[0].msg else { unreachable!() };
    s.advance(Duration::from_millis(20));
    s.server(0, None, ServerMessage::Pong { ts });
    assert!(s.take_events().iter().any(|e| matches!(e, SignalingEvent::Rtt(d) if *d == Duration::from_millis(20))));
    // Silence from now on: dead after 1.5 heartbeats.
    s.advance(Duration::from_millis(5900));
    assert_eq!(s.disconnects, 0);
    s.advance(Duration::from_millis(200));
    assert_eq!(s.disconnects, 1);
    assert!(matches!(s.m.state(), SessionState::Reconnecting { .. }));
}

#[test]
fn no_welcome_in_time_is_retried() {
    let mut s = Sim::new();
    s.open();
    s.advance(Duration::from_millis(5100));
    assert_eq!(s.disconnects, 1);
    s.advance(Duration::from_secs(1));
    assert_eq!(s.connects, 2);
}

#[test]
fn refusals_name_the_request() {
    let mut s = Sim::ready();
    let id = s.m.send(ClientMessage::JoinRoom { code: "abc".into() }).unwrap();
    s.drain();
    s.server(2, Some(id), ServerMessage::error(ErrorCode::RoomFull, "room abc is full"));
    assert!(
        s.take_events()
            .iter()
            .any(|e| matches!(e, SignalingEvent::Refused { request: "join_room", code: ErrorCode::RoomFull, .. }))
    );
}

#[test]
fn closing_stops_everything() {
    let mut s = Sim::ready();
    s.m.close();
    s.drain();
    assert_eq!(s.disconnects, 1);
    assert_eq!(s.m.state(), SessionState::Closed);
    assert!(s.m.send(ClientMessage::Next).is_none());
    s.m.socket_closed(s.now, "closed");
    assert!(s.m.poll_timeout().is_none(), "no reconnect after close");
}

#[test]
fn a_network_change_reconnects_at_once_without_backoff_and_resumes() {
    let mut s = Sim::ready();
    s.m.network_changed(s.now);
    s.drain();
    assert_eq!(s.disconnects, 1, "the old socket is dropped");
    assert!(s.take_events().contains(&SignalingEvent::State(SessionState::Reconnecting { attempt: 1 })));
    assert_eq!(s.m.poll_timeout(), Some(s.now), "no backoff");
    s.advance(Duration::ZERO);
    assert_eq!(s.connects, 2);
    s.open();
    let hello = s.take_sent();
    assert!(matches!(&hello[0].msg, ClientMessage::Hello { resume_token: Some(_), .. }));
}

#[test]
fn hostile_server_values_are_range_checked_without_panicking() {
    let mut hostile = welcome(false);
    let mut s = Sim::new();
    s.m.socket_opened(s.now);
    s.drain();
    // A heartbeat of u64::MAX ms would overflow every deadline computed from it.
    let ServerMessage::Welcome { heartbeat_ms, .. } = &mut hostile else { unreachable!() };
    *heartbeat_ms = u64::MAX;
    s.server(1, None, hostile);
    assert!(s.m.poll_timeout().is_some_and(|t| t <= s.now + MAX_HEARTBEAT * 2), "heartbeat capped");
    // A pong echoing a timestamp from the far future (or u64::MAX) is no RTT.
    s.server(0, None, ServerMessage::Pong { ts: Some(u64::MAX) });
    s.server(0, None, ServerMessage::Pong { ts: Some(u64::MAX / 2) });
    assert!(!s.events.iter().any(|e| matches!(e, SignalingEvent::Rtt(_))), "{:?}", s.events);
    // Sequence numbers at the end of the range.
    s.server(u64::MAX, None, queued());
    s.advance(Duration::from_secs(120));
}
