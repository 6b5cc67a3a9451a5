//! Hub behaviour on simulated time: each test drives the state machine directly.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use duet_proto::*;

use super::*;
use crate::turn::{Secret, TurnRest};

/// Simulated clients around one hub; time only moves when a test says so.
struct Sim {
    hub: Hub,
    now: Instant,
    unix: u64,
    next_conn: u64,
    inbox: HashMap<ConnId, Vec<ServerFrame>>,
    closed: HashMap<ConnId, u16>,
}

impl Sim {
    fn new() -> Self {
        Self::with(HubConfig::default())
    }

    /// Clients that never need to ping: idle timeout of an hour.
    fn patient() -> Self {
        Self::with(HubConfig { idle_timeout: Duration::from_secs(3600), ..HubConfig::default() })
    }

    fn with(cfg: HubConfig) -> Self {
        let cfg = HubConfig { rng_seed: Some(7), ..cfg };
        Self {
            hub: Hub::new(cfg, "test"),
            now: Instant::now(),
            unix: 1_700_000_000,
            next_conn: 1,
            inbox: HashMap::new(),
            closed: HashMap::new(),
        }
    }

    fn now(&self) -> Now {
        Now { mono: self.now, unix_secs: self.unix }
    }

    fn pump(&mut self) {
        while let Some(out) = self.hub.poll_output() {
            match out {
                Output::Send { conn, text } => {
                    let frame = parse_server_frame(&text).expect("server sends valid frames");
                    self.inbox.entry(conn).or_default().push(frame);
                }
                Output::Close { conn, code, .. } => {
                    self.closed.insert(conn, code);
                }
                Output::Pool(_) | Output::Remote { .. } => panic!("a hub without cluster_node talks to no store"),
            }
        }
    }

    fn input(&mut self, input: Input) {
        self.hub.handle(self.now(), input);
        self.pump();
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(at) = self.hub.poll_timeout().filter(|at| *at <= end) {
            self.now = self.now.max(at);
            self.hub.handle_timeout(self.now());
            self.pump();
        }
        self.now = end;
        self.unix += d.as_secs();
    }

    fn open(&mut self) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.input(Input::Opened(conn));
        conn
    }

    fn send(&mut self, conn: ConnId, frame: ClientFrame) {
        self.input(Input::Frame(conn, frame));
    }

    fn msg(&mut self, conn: ConnId, msg: ClientMessage) {
        self.send(conn, ClientFrame::new(msg));
    }

    /// The connection's inbox without `token` messages (see [`Sim::take_all`]).
    fn take(&mut self, conn: ConnId) -> Vec<ServerFrame> {
        self.take_all(conn).into_iter().filter(|f| f.msg.kind() != "token").collect()
    }

    fn take_all(&mut self, conn: ConnId) -> Vec<ServerFrame> {
        self.inbox.remove(&conn).unwrap_or_default()
    }

    fn kinds(&mut self, conn: ConnId) -> Vec<&'static str> {
        self.take(conn).iter().map(|f| f.msg.kind()).collect()
    }

    /// Opens a connection, says hello, returns (conn, resume token, session id).
    fn client(&mut self) -> (ConnId, String, String) {
        let conn = self.open();
        self.msg(conn, ClientMessage::Hello { version: 1, resume_token: None, client: None });
        let frames = self.take(conn);
        let ServerMessage::Welcome { resume_token, session_id, .. } = &frames[0].msg else {
            panic!("expected welcome, got {frames:?}")
        };
        (conn, resume_token.clone(), session_id.clone())
    }

    fn queue(&mut self, conn: ConnId, interests: &[&str], language: Option<&str>) {
        let interests = interests.iter().map(|s| s.to_string()).collect();
        self.msg(conn, ClientMessage::JoinQueue { interests, language: language.map(str::to_string) });
    }

    /// The `matched` message in this connection's inbox (taking the inbox).
    fn matched(&mut self, conn: ConnId) -> Option<(String, bool, String)> {
        self.take(conn).into_iter().find_map(|f| match f.msg {
            ServerMessage::Matched { peer, polite, room, .. } => Some((peer.session_id, polite, room)),
            _ => None,
        })
    }

    fn pair(&mut self) -> ((ConnId, String, String), (ConnId, String, String)) {
        let a = self.client();
        let b = self.client();
        self.queue(a.0, &[], None);
        self.queue(b.0, &[], None);
        assert!(self.matched(a.0).is_some() && self.matched(b.0).is_some());
        (a, b)
    }
}

fn offer() -> SignalPayload {
    SignalPayload::Description { description: SessionDescription { sdp_type: SdpType::Offer, sdp: "v=0".into() } }
}

#[test]
fn hello_is_answered_with_welcome() {
    let mut sim = Sim::new();
    let conn = sim.open();
    sim.send(conn, ClientFrame::with_id(1, ClientMessage::Hello { version: 1, resume_token: None, client: None }));
    let frames = sim.take(conn);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].reply_to, Some(1));
    let ServerMessage::Welcome { heartbeat_ms, resume_grace_ms, resumed, resume_token, session_id, .. } =
        &frames[0].msg
    else {
        panic!()
    };
    assert_eq!((*heartbeat_ms, *resume_grace_ms, *resumed), (5000, 15000, false));
    assert!(resume_token.len() >= 40 && session_id.len() == 32);
}

#[test]
fn version_mismatch_is_a_clear_error() {
    let mut sim = Sim::new();
    let conn = sim.open();
    sim.send(conn, ClientFrame::with_id(3, ClientMessage::Hello { version: 2, resume_token: None, client: None }));
    let frames = sim.take(conn);
    let ServerMessage::Error { code, message } = &frames[0].msg else { panic!() };
    assert_eq!(*code, ErrorCode::VersionMismatch);
    assert!(message.contains("v1") && message.contains("v2"), "{message}");
    assert_eq!(frames[0].reply_to, Some(3));
}

#[test]
fn messages_before_hello_are_refused() {
    let mut sim = Sim::new();
    let conn = sim.open();
    sim.msg(conn, ClientMessage::Next);
    let frames = sim.take(conn);
    assert!(matches!(frames[0].msg, ServerMessage::Error { code: ErrorCode::HelloRequired, .. }));
    assert_eq!(frames[0].seq, 0);
}

#[test]
fn two_queued_clients_are_matched_and_relay_signals() {
    let mut sim = Sim::new();
    let (a, _, a_id) = sim.client();
    let (b, _, b_id) = sim.client();
    sim.queue(a, &[], None);
    assert_eq!(sim.kinds(a), ["queued"]);
    sim.queue(b, &[], None);
    let (peer_of_a, a_polite, room_a) = sim.matched(a).expect("a matched");
    let (peer_of_b, b_polite, room_b) = sim.matched(b).expect("b matched");
    assert_eq!((peer_of_a, peer_of_b), (b_id, a_id));
    assert!(!a_polite && b_polite, "the one who waited longer is impolite");
    assert_eq!(room_a, room_b);

    sim.msg(a, ClientMessage::Signal { payload: offer(), generation: None });
    let got = sim.take(b);
    assert!(matches!(&got[0].msg, ServerMessage::Signal { payload, .. } if *payload == offer()));
    assert!(sim.take(a).is_empty(), "a signal without id gets no reply");
}

#[test]
fn sequence_numbers_increase_per_session() {
    let mut sim = Sim::new();
    let ((a, ..), _) = sim.pair();
    for _ in 0..3 {
        sim.msg(a, ClientMessage::Ping { ts: Some(1) });
    }
    let seqs: Vec<u64> = sim.take(a).iter().map(|f| f.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
}

#[test]
fn signal_without_partner_is_refused() {
    let mut sim = Sim::new();
    let (a, ..) = sim.client();
    sim.send(a, ClientFrame::with_id(9, ClientMessage::Signal { payload: offer(), generation: None }));
    let f = sim.take(a);
    assert!(matches!(f[0].msg, ServerMessage::Error { code: ErrorCode::NotInCall, .. }));
    assert_eq!(f[0].reply_to, Some(9));
}

#[test]
fn matching_is_first_come_first_served() {
    let mut sim = Sim::new();
    let clients: Vec<_> = (0..4).map(|_| sim.client()).collect();
    for c in &clients {
        sim.queue(c.0, &[], None);
    }
    assert_eq!(sim.matched(clients[0].0).map(|m| m.0), Some(clients[1].2.clone()));
    assert_eq!(sim.matched(clients[2].0).map(|m| m.0), Some(clients[3].2.clone()));
}

#[test]
fn shared_interest_is_preferred_over_waiting_longer() {
    let mut sim = Sim::new();
    let (anyone, ..) = sim.client();
    let (chess1, _, chess1_id) = sim.client();
    let (chess2, ..) = sim.client();
    sim.queue(anyone, &[], None);
    sim.queue(chess1, &["Chess"], None);
    assert!(sim.matched(chess1).is_none(), "a picky client does not take just anyone at once");
    sim.queue(chess2, &["chess ", "go"], None);
    assert_eq!(sim.matched(chess2).map(|m| m.0), Some(chess1_id));
    assert!(sim.matched(anyone).is_none());
}

#[test]
fn common_interests_are_announced() {
    let mut sim = Sim::new();
    let (a, ..) = sim.client();
    let (b, ..) = sim.client();
    sim.queue(a, &["music", "films"], None);
    sim.queue(b, &["Films", "chess"], None);
    let got = sim.take(b);
    let common = got.iter().find_map(|f| match &f.msg {
        ServerMessage::Matched { common_interests, .. } => Some(common_interests.clone()),
        _ => None,
    });
    assert_eq!(common, Some(vec!["films".to_string()]));
}

#[test]
fn language_counts_as_shared() {
    let mut sim = Sim::new();
    let (a, ..) = sim.client();
    let (b, ..) = sim.client();
    sim.queue(a, &["x"], Some("pt-BR"));
    sim.queue(b, &["y"], Some("pt"));
    assert!(sim.matched(b).is_some());
}

#[test]
fn picky_clients_fall_back_to_anyone_after_the_interest_wait() {
    let mut sim = Sim::new();
    let (anyone, ..) = sim.client();
    let (picky, ..) = sim.client();
    sim.queue(anyone, &[], None);
    sim.queue(picky, &["knitting"], None);
    sim.advance(Duration::from_millis(2900));
    assert!(sim.matched(picky).is_none());
    sim.advance(Duration::from_millis(200));
    assert!(sim.matched(picky).is_some(), "fallback after 3 s");
    assert!(sim.matched(anyone).is_some());
}

#[test]
fn two_picky_clients_without_overlap_meet_after_the_wait() {
    let mut sim = Sim::new();
    let (a, ..) = sim.client();
    let (b, ..) = sim.client();
    sim.queue(a, &["knitting"], None);
    sim.advance(Duration::from_secs(1));
    sim.queue(b, &["surfing"], None);
    sim.advance(Duration::from_millis(2100));
    assert!(sim.matched(a).is_none(), "b has not waited long enough yet");
    sim.advance(Duration::from_secs(1));
    assert!(sim.matched(a).is_some());
}

#[test]
fn next_requeues_both_and_does_not_rematch_the_pair_right_away() {
    let mut sim = Sim::new();
    let ((a, ..), (b, _, b_id)) = sim.pair();
    sim.send(a, ClientFrame::with_id(4, ClientMessage::Next));
    let a_got = sim.take(a);
    assert_eq!(a_got[0].msg.kind(), "queued");
    assert_eq!(a_got[0].reply_to, Some(4));
    let b_got = sim.take(b);
    assert!(matches!(b_got[0].msg, ServerMessage::PeerLeft { reason: PeerLeftReason::Next }));
    assert_eq!(b_got[1].msg.kind(), "queued");
    assert!(b_got.iter().all(|f| f.msg.kind() != "matched"), "not re-matched with each other");

    let (c, ..) = sim.client();
    sim.queue(c, &[], None);
    assert_eq!(sim.matched(c).map(|m| m.0), Some(b_id), "the partner re-queued first is matched first");

    // With nobody else around, the pair meets again once the cooldown is over.
    let mut sim = Sim::patient();
    let ((d, ..), (e, ..)) = sim.pair();
    sim.msg(d, ClientMessage::Next);
    sim.take(e);
    sim.advance(Duration::from_secs(29));
    assert!(sim.matched(d).is_none());
    sim.advance(Duration::from_secs(2));
    assert!(sim.matched(d).is_some());
}

#[test]
fn blocked_pairs_never_match_again() {
    let mut sim = Sim::patient();
    let ((a, ..), (b, ..)) = sim.pair();
    sim.send(a, ClientFrame::with_id(1, ClientMessage::Block));
    assert_eq!(sim.take(a)[0].msg, ServerMessage::Ok);
    assert!(matches!(sim.take(b)[0].msg, ServerMessage::PeerLeft { reason: PeerLeftReason::Blocked }));
    sim.queue(a, &[], None);
    sim.queue(b, &[], None);
    sim.advance(Duration::from_secs(600));
    assert!(sim.matched(a).is_none() && sim.matched(b).is_none());
    let (c, ..) = sim.client();
    sim.queue(c, &[], None);
    assert!(sim.matched(c).is_some());
    assert_eq!(sim.hub.stats().blocks_total, 1);
}

#[test]
fn report_ends_the_call_blocks_and_counts() {
    let mut sim = Sim::new();
    let ((a, ..), (b, ..)) = sim.pair();
    sim.msg(a, ClientMessage::Report { reason: "spam".into() });
    assert!(matches!(sim.take(b)[0].msg, ServerMessage::PeerLeft { reason: PeerLeftReason::Reported }));
    sim.msg(a, ClientMessage::JoinRoom { code: "abc".into() });
    sim.msg(b, ClientMessage::JoinRoom { code: "abc".into() });
    assert!(matches!(sim.take(b)[0].msg, ServerMessage::Error { code: ErrorCode::RoomFull, .. }));
    assert_eq!(sim.hub.stats().reports_total, 1);
}

#[test]
fn rooms_by_code_hold_two() {
    let mut sim = Sim::new();
    let (x, _, x_id) = sim.client();
    let (y, _, y_id) = sim.client();
    let (z, ..) = sim.client();
    let join = |code: &str| ClientMessage::JoinRoom { code: code.into() };
    sim.msg(x, join("friends-1"));
    assert_eq!(sim.kinds(x), ["room_joined"]);
    sim.msg(y, join("friends-1"));
    assert_eq!(sim.kinds(y), ["room_joined", "matched"]);
    assert_eq!(sim.matched(x).map(|m| (m.0, m.1, m.2)), Some((y_id, false, "friends-1".into())));
    sim.msg(z, join("friends-1"));
    assert!(matches!(sim.take(z)[0].msg, ServerMessage::Error { code: ErrorCode::RoomFull, .. }));

    // y leaves: x stays in the room and z can take the place.
    sim.msg(y, ClientMessage::Leave);
    assert!(matches!(sim.take(x)[0].msg, ServerMessage::PeerLeft { reason: PeerLeftReason::Left }));
    sim.msg(z, join("friends-1"));
    assert_eq!(sim.matched(z).map(|m| m.0), Some(x_id));
    assert_eq!(sim.hub.stats().rooms, 1);
}

#[test]
fn resume_within_grace_replays_what_was_missed() {
    let mut sim = Sim::patient();
    let ((a, a_token, _), (b, ..)) = sim.pair();
    sim.input(Input::Closed(a));
    assert!(matches!(sim.take(b)[0].msg, ServerMessage::PeerReconnecting { grace_ms: 15000 }));
    sim.msg(b, ClientMessage::Signal { payload: SignalPayload::Restart, generation: None });
    sim.advance(Duration::from_secs(10));

    let a2 = sim.open();
    sim.msg(a2, ClientMessage::Hello { version: 1, resume_token: Some(a_token.clone()), client: None });
    let got = sim.take(a2);
    let kinds: Vec<_> = got.iter().map(|f| f.msg.kind()).collect();
    // Nothing was acked: queued, matched and the signal are replayed, then welcome.
    assert_eq!(kinds, ["queued", "matched", "signal", "welcome"]);
    assert!(got.windows(2).all(|w| w[0].seq < w[1].seq), "replay keeps order and seq");
    // Four replayed: the `token` reissued at the match is among them (filtered from `take`).
    assert!(matches!(got[3].msg, ServerMessage::Welcome { resumed: true, replayed: 4, restored: false, .. }));
    assert_eq!(sim.kinds(b), ["peer_resumed"]);
    assert_eq!(sim.hub.stats().resumes_total, 1);

    // The call goes on over the new socket.
    sim.msg(b, ClientMessage::Signal { payload: offer(), generation: None });
    assert_eq!(sim.kinds(a2), ["signal"]);
}

#[test]
fn acked_messages_are_not_replayed() {
    let mut sim = Sim::new();
    let ((a, a_token, _), (b, ..)) = sim.pair();
    sim.msg(b, ClientMessage::Signal { payload: offer(), generation: None });
    let last = sim.take(a).last().map(|f| f.seq).unwrap();
    sim.send(a, ClientFrame { id: None, ack: Some(last), msg: ClientMessage::Ping { ts: None } });
    sim.take(a);
    sim.msg(b, ClientMessage::Signal { payload: SignalPayload::EndOfCandidates, generation: None });
    sim.input(Input::Closed(a));
    let a2 = sim.open();
    sim.msg(a2, ClientMessage::Hello { version: 1, resume_token: Some(a_token), client: None });
    let got = sim.take(a2);
    assert!(matches!(&got[0].msg, ServerMessage::Signal { payload: SignalPayload::EndOfCandidates, generation: None }));
    assert!(matches!(got[1].msg, ServerMessage::Welcome { replayed: 1, .. }));
}

#[test]
fn grace_expiry_ends_the_call_with_timeout() {
    let mut sim = Sim::patient();
    let ((a, a_token, a_id), (b, ..)) = sim.pair();
    sim.input(Input::Closed(a));
    sim.take(b);
    sim.advance(Duration::from_millis(14_900));
    assert!(sim.take(b).is_empty());
    sim.advance(Duration::from_millis(200));
    assert!(matches!(sim.take(b)[0].msg, ServerMessage::PeerLeft { reason: PeerLeftReason::Timeout }));
    // The old token no longer resumes: a fresh session, not an error.
    let a2 = sim.open();
    sim.msg(a2, ClientMessage::Hello { version: 1, resume_token: Some(a_token), client: None });
    let got = sim.take(a2);
    let ServerMessage::Welcome { resumed, session_id, .. } = &got[0].msg else { panic!("{got:?}") };
    assert!(!resumed && *session_id != a_id);
    assert_eq!(sim.hub.stats().sessions_expired_total, 1);
}

#[test]
fn hello_on_a_new_socket_replaces_a_half_open_one() {
    let mut sim = Sim::new();
    let ((a, a_token, a_id), (b, ..)) = sim.pair();
    // a's old socket is still "open" as far as the server knows.
    let a2 = sim.open();
    sim.msg(a2, ClientMessage::Hello { version: 1, resume_token: Some(a_token), client: None });
    let got = sim.take(a2);
    let welcome = got.iter().find(|f| f.msg.kind() == "welcome").expect("welcome, not an error");
    assert!(matches!(&welcome.msg, ServerMessage::Welcome { resumed: true, session_id, .. } if *session_id == a_id));
    assert_eq!(sim.closed.get(&a), Some(&CLOSE_REPLACED));
    assert!(got.iter().all(|f| f.msg.kind() != "error"));
    // The partner never noticed; the late close of the old socket changes nothing.
    assert!(sim.take(b).is_empty());
    sim.input(Input::Closed(a));
    assert!(sim.take(b).is_empty());
    sim.msg(b, ClientMessage::Signal { payload: offer(), generation: None });
    assert_eq!(sim.kinds(a2), ["signal"]);
}

#[test]
fn duplicate_ids_are_answered_again_but_acted_on_once() {
    let mut sim = Sim::new();
    let ((a, ..), (b, ..)) = sim.pair();
    for _ in 0..3 {
        sim.send(a, ClientFrame::with_id(5, ClientMessage::Signal { payload: offer(), generation: None }));
    }
    let replies = sim.take(a);
    assert_eq!(replies.len(), 3);
    assert!(replies.iter().all(|f| f.reply_to == Some(5) && f.msg == ServerMessage::Ok));
    assert_eq!(sim.kinds(b), ["signal"], "relayed once");
    assert_eq!(sim.hub.stats().signals_relayed_total, 1);

    // A duplicate `next` does not skip twice.
    sim.send(a, ClientFrame::with_id(6, ClientMessage::Next));
    sim.send(a, ClientFrame::with_id(6, ClientMessage::Next));
    assert_eq!(sim.kinds(a), ["queued", "queued"]);
    assert_eq!(sim.hub.stats().queue_length, 2);
}

#[test]
fn silent_connections_time_out_and_pings_keep_them_alive() {
    let mut sim = Sim::new();
    let ((a, ..), (b, ..)) = sim.pair();
    for _ in 0..5 {
        sim.advance(Duration::from_secs(5));
        sim.msg(b, ClientMessage::Ping { ts: None });
    }
    assert!(!sim.closed.contains_key(&b), "pinging client stays");
    assert_eq!(sim.closed.get(&a), Some(&CLOSE_IDLE), "silent client closed");
    assert!(sim.take(b).iter().any(|f| matches!(f.msg, ServerMessage::PeerReconnecting { .. })));
    assert_eq!(sim.hub.stats().idle_timeouts_total, 1);
}

#[test]
fn connections_that_never_say_hello_are_closed() {
    let mut sim = Sim::new();
    let c = sim.open();
    sim.advance(Duration::from_secs(13));
    assert_eq!(sim.closed.get(&c), Some(&CLOSE_IDLE));
    assert_eq!(sim.hub.stats().connections, 0);
}

#[test]
fn pong_and_errors_are_not_replayed() {
    let mut sim = Sim::new();
    let (a, token, _) = sim.client();
    sim.msg(a, ClientMessage::Ping { ts: Some(1) });
    sim.input(Input::Refused(a, ProtoError::new(ErrorCode::BadJson, "x")));
    sim.input(Input::Closed(a));
    let a2 = sim.open();
    sim.msg(a2, ClientMessage::Hello { version: 1, resume_token: Some(token), client: None });
    assert_eq!(sim.kinds(a2), ["welcome"]);
}

#[test]
fn refused_frames_get_coded_errors_and_are_counted() {
    let mut sim = Sim::new();
    let (a, ..) = sim.client();
    let mut err = ProtoError::new(ErrorCode::UnknownType, "unknown message type \"x\"");
    err.reply_to = Some(77);
    sim.input(Input::Refused(a, err));
    let f = sim.take(a);
    assert!(matches!(f[0].msg, ServerMessage::Error { code: ErrorCode::UnknownType, .. }));
    assert_eq!(f[0].reply_to, Some(77));
    assert_eq!(sim.hub.stats().errors_total.get(&ErrorCode::UnknownType), Some(&1));
}

#[test]
fn shutdown_closes_sockets_and_leaves_calls_to_resume() {
    let mut sim = Sim::new();
    let ((a, ..), (b, ..)) = sim.pair();
    let (idle, ..) = sim.client();
    sim.input(Input::Shutdown);
    // No `peer_left`: the partners' media does not need the server; they resume on its return.
    for c in [a, b, idle] {
        assert!(sim.take(c).is_empty());
        assert_eq!(sim.closed.get(&c), Some(&CLOSE_SHUTDOWN));
    }
    let late = sim.open();
    assert_eq!(sim.closed.get(&late), Some(&CLOSE_SHUTDOWN));
}

/// The newest resume token a client was given (welcome or token message).
fn newest_token(frames: &[ServerFrame], old: &str) -> String {
    frames
        .iter()
        .rev()
        .find_map(|f| match &f.msg {
            ServerMessage::Token { resume_token } | ServerMessage::Welcome { resume_token, .. } => {
                Some(resume_token.clone())
            }
            _ => None,
        })
        .unwrap_or_else(|| old.to_string())
}

fn keyed(seed: u64) -> HubConfig {
    HubConfig {
        resume_key: Some(token::TokenKey::new(b"the same secret".to_vec())),
        idle_timeout: Duration::from_secs(3600),
        ..HubConfig::default()
    }
    .seeded(seed)
}

impl HubConfig {
    fn seeded(self, seed: u64) -> Self {
        HubConfig { rng_seed: Some(seed), ..self }
    }
}

impl Sim {
    fn with_seed(cfg: HubConfig) -> Self {
        let mut sim = Self::with(cfg.clone());
        sim.hub = Hub::new(cfg, "test");
        sim
    }

    /// A paired couple's newest tokens.
    fn paired_tokens(&mut self) -> ((ConnId, String), (ConnId, String)) {
        let a = self.client();
        let b = self.client();
        self.queue(a.0, &[], None);
        self.queue(b.0, &[], None);
        let (fa, fb) = (self.take_all(a.0), self.take_all(b.0));
        assert!(fa.iter().any(|f| f.msg.kind() == "matched"), "{fa:?}");
        ((a.0, newest_token(&fa, &a.1)), (b.0, newest_token(&fb, &b.1)))
    }

    fn hello_with(&mut self, token: &str) -> (ConnId, Vec<ServerFrame>) {
        let conn = self.open();
        self.msg(conn, ClientMessage::Hello { version: 1, resume_token: Some(token.into()), client: None });
        let frames = self.take_all(conn);
        (conn, frames)
    }
}

fn welcome_flags(frames: &[ServerFrame]) -> (bool, bool) {
    match &frames[0].msg {
        ServerMessage::Welcome { resumed, restored, .. } => (*resumed, *restored),
        other => panic!("expected welcome, got {other:?}"),
    }
}

#[test]
fn a_restarted_server_with_the_same_secret_restores_both_partners_and_their_pairing() {
    let mut old = Sim::with_seed(keyed(1));
    let ((_, ta), (_, tb)) = old.paired_tokens();
    drop(old);
    let mut new = Sim::with_seed(keyed(2));
    let (a, fa) = new.hello_with(&ta);
    assert_eq!(welcome_flags(&fa), (true, true));
    // Alone so far: the partner is reported as reconnecting.
    assert!(fa.iter().any(|f| matches!(f.msg, ServerMessage::PeerReconnecting { .. })), "{fa:?}");
    new.advance(Duration::from_secs(2));
    let (b, fb) = new.hello_with(&tb);
    assert_eq!(welcome_flags(&fb), (true, true));
    assert!(fb.iter().any(|f| f.msg == ServerMessage::PeerResumed), "{fb:?}");
    assert!(new.take(a).iter().any(|f| f.msg == ServerMessage::PeerResumed));
    // The pairing works again: signals are relayed both ways.
    new.msg(a, ClientMessage::Signal { payload: offer(), generation: None });
    assert!(new.take(b).iter().any(|f| f.msg == ServerMessage::Signal { payload: offer(), generation: None }));
    new.msg(b, ClientMessage::Signal { payload: SignalPayload::Restart, generation: Some(2) });
    assert!(
        new.take(a)
            .iter()
            .any(|f| f.msg == ServerMessage::Signal { payload: SignalPayload::Restart, generation: Some(2) })
    );
    assert_eq!(new.hub.stats().restarts_relayed_total, 1, "relayed with its generation, and counted");
    let stats = new.hub.stats();
    assert_eq!((stats.sessions_restored_total, stats.pairings_restored_total, stats.rooms), (2, 1, 1));
    // Past the grace period nothing ends the restored call.
    new.advance(Duration::from_secs(60));
    assert!(!new.take(a).iter().any(|f| matches!(f.msg, ServerMessage::PeerLeft { .. })));
}

#[test]
fn a_restored_sessions_first_token_names_its_pairing_so_a_second_restart_keeps_the_pair() {
    let mut old = Sim::with_seed(keyed(1));
    let ((_, ta), (_, tb)) = old.paired_tokens();
    drop(old);
    // The server restarts; a is restored (b is not back yet), and the server restarts again.
    let mut second = Sim::with_seed(keyed(2));
    let (_, fa) = second.hello_with(&ta);
    let ta2 = newest_token(&fa, &ta);
    drop(second);
    let mut third = Sim::with_seed(keyed(3));
    let (a, fa) = third.hello_with(&ta2);
    assert!(fa.iter().any(|f| matches!(f.msg, ServerMessage::PeerReconnecting { .. })), "a waits for b: {fa:?}");
    let (_, fb) = third.hello_with(&tb);
    assert!(fb.iter().any(|f| f.msg == ServerMessage::PeerResumed), "{fb:?}");
    assert!(third.take(a).iter().any(|f| f.msg == ServerMessage::PeerResumed));
    assert_eq!(third.hub.stats().pairings_restored_total, 1);
}

#[test]
fn what_a_restored_session_signals_before_its_partner_is_back_waits_for_the_partner() {
    let mut old = Sim::with_seed(keyed(1));
    let ((_, ta), (_, tb)) = old.paired_tokens();
    let mut new = Sim::with_seed(keyed(2));
    let (a, _) = new.hello_with(&ta);
    // a restarts ICE at once, before b is back: accepted, not refused.
    new.send(
        a,
        ClientFrame::with_id(40, ClientMessage::Signal { payload: SignalPayload::Restart, generation: Some(2) }),
    );
    let answer = new.take(a);
    assert!(matches!(answer[0].msg, ServerMessage::Ok) && answer[0].reply_to == Some(40), "{answer:?}");
    let (_, fb) = new.hello_with(&tb);
    let kinds: Vec<&str> = fb.iter().map(|f| f.msg.kind()).collect();
    assert!(
        fb.iter().any(|f| f.msg == ServerMessage::Signal { payload: SignalPayload::Restart, generation: Some(2) }),
        "b gets what a signalled meanwhile: {kinds:?}"
    );
}

#[test]
fn a_restored_session_whose_partner_never_returns_ends_with_timeout() {
    let mut old = Sim::with_seed(keyed(1));
    let ((_, ta), _) = old.paired_tokens();
    let mut new = Sim::with_seed(keyed(2));
    let (a, _) = new.hello_with(&ta);
    new.advance(HubConfig::default().resume_grace + Duration::from_millis(10));
    let frames = new.take_all(a);
    assert!(frames.iter().any(|f| f.msg == ServerMessage::PeerLeft { reason: PeerLeftReason::Timeout }), "{frames:?}");
    // Its newest token no longer claims the partner: after another restart it is alone.
    let token = newest_token(&frames, &ta);
    let mut third = Sim::with_seed(keyed(3));
    let (_, f) = third.hello_with(&token);
    assert_eq!(welcome_flags(&f), (true, true));
    assert_eq!(f.len(), 1, "{f:?}");
}

/// x and y paired in the room by code `code` of a server that then stops: their tokens.
fn tokens_of_a_pair_in_room(code: &str) -> ((String, String), (String, String)) {
    let mut old = Sim::with_seed(keyed(1));
    let (x, _, x_id) = old.client();
    let (y, _, y_id) = old.client();
    old.msg(x, ClientMessage::JoinRoom { code: code.into() });
    old.msg(y, ClientMessage::JoinRoom { code: code.into() });
    ((x_id, newest_token(&old.take_all(x), "")), (y_id, newest_token(&old.take_all(y), "")))
}

#[test]
fn a_restart_keeps_a_room_by_code_its_pairs_room() {
    let ((x_id, tx), (_, ty)) = tokens_of_a_pair_in_room("friends-2");
    let mut new = Sim::with_seed(keyed(2));
    let (x, _) = new.hello_with(&tx);
    // While y is expected back, the room is full, as when a partner reconnects.
    let (z, ..) = new.client();
    new.msg(z, ClientMessage::JoinRoom { code: "friends-2".into() });
    assert!(matches!(new.take(z)[0].msg, ServerMessage::Error { code: ErrorCode::RoomFull, .. }));
    let (y, fy) = new.hello_with(&ty);
    assert!(fy.iter().any(|f| f.msg == ServerMessage::PeerResumed), "{fy:?}");
    new.msg(z, ClientMessage::JoinRoom { code: "friends-2".into() });
    assert!(matches!(new.take(z)[0].msg, ServerMessage::Error { code: ErrorCode::RoomFull, .. }));
    // y leaves: x stays in the room, and z takes the place.
    new.msg(y, ClientMessage::Leave);
    assert!(new.take_all(x).iter().any(|f| f.msg == ServerMessage::PeerLeft { reason: PeerLeftReason::Left }));
    new.msg(z, ClientMessage::JoinRoom { code: "friends-2".into() });
    assert_eq!(new.matched(z).map(|m| (m.0, m.2)), Some((x_id, "friends-2".into())));
}

#[test]
fn a_restored_member_of_a_room_by_code_whose_partner_never_returns_stays_in_the_room() {
    let ((x_id, tx), _) = tokens_of_a_pair_in_room("friends-3");
    let mut new = Sim::with_seed(keyed(2));
    let (x, _) = new.hello_with(&tx);
    new.advance(HubConfig::default().resume_grace + Duration::from_millis(10));
    assert!(new.take_all(x).iter().any(|f| f.msg == ServerMessage::PeerLeft { reason: PeerLeftReason::Timeout }));
    let (z, ..) = new.client();
    new.msg(z, ClientMessage::JoinRoom { code: "friends-3".into() });
    assert_eq!(new.matched(z).map(|m| (m.0, m.2)), Some((x_id, "friends-3".into())));
    assert!(new.take_all(x).iter().any(|f| f.msg.kind() == "matched"));
}

#[test]
fn partners_who_moved_on_are_not_paired_again_by_a_restart() {
    let mut old = Sim::with_seed(keyed(1));
    let ((a, _), (b, _)) = old.paired_tokens();
    old.msg(a, ClientMessage::Next);
    let (ta, tb) = (newest_token(&old.take_all(a), ""), newest_token(&old.take_all(b), ""));
    let mut new = Sim::with_seed(keyed(2));
    let (a2, fa) = new.hello_with(&ta);
    let (b2, fb) = new.hello_with(&tb);
    for frames in [&fa, &fb] {
        assert_eq!(welcome_flags(frames), (true, true));
        assert_eq!(frames.len(), 1, "no pairing claimed: {frames:?}");
    }
    assert!(new.take(a2).is_empty() && new.take(b2).is_empty());
    assert_eq!(new.hub.stats().rooms, 0);
}

#[test]
fn forged_foreign_or_expired_tokens_start_a_new_session() {
    let mut old = Sim::with_seed(keyed(1));
    let ((_, ta), _) = old.paired_tokens();
    // Another secret.
    let mut other = Sim::with_seed(HubConfig { resume_key: Some(token::TokenKey::new(b"x".to_vec())), ..keyed(2) });
    assert_eq!(welcome_flags(&other.hello_with(&ta).1), (false, false));
    // Altered claims.
    let mut forged = ta.clone();
    forged.insert(5, if forged.as_bytes()[5] == b'A' { 'B' } else { 'A' });
    let mut new = Sim::with_seed(keyed(2));
    assert_eq!(welcome_flags(&new.hello_with(&forged).1), (false, false));
    // A session that ended on this very process stays ended.
    let (c, token, _) = new.client();
    new.input(Input::Closed(c));
    new.advance(HubConfig::default().resume_grace + Duration::from_secs(1));
    assert_eq!(welcome_flags(&new.hello_with(&token).1), (false, false));
    // Too old.
    let mut late = Sim::with_seed(keyed(4));
    late.unix += MAX_RESTORE_AGE_SECS + 10;
    assert_eq!(welcome_flags(&late.hello_with(&ta).1), (false, false));
}

#[test]
fn turn_rest_credentials_are_issued_per_session() {
    let ice = crate::turn::IceConfig {
        servers: vec![],
        turn: Some(TurnRest {
            urls: vec!["turn:127.0.0.1:3478".into()],
            secret: Secret::new("s3cret"),
            ttl: Duration::from_secs(3600),
        }),
    };
    let mut sim = Sim::with(HubConfig { ice, ..HubConfig::default() });
    let conn = sim.open();
    sim.msg(conn, ClientMessage::Hello { version: 1, resume_token: None, client: None });
    let f = sim.take(conn);
    let ServerMessage::Welcome { ice_servers, session_id, .. } = &f[0].msg else { panic!() };
    let expected_user = format!("{}:{}", 1_700_000_000 + 3600, session_id);
    assert_eq!(ice_servers[0].username.as_deref(), Some(expected_user.as_str()));
    let (_, pass) = crate::turn::turn_rest_credentials(&Secret::new("s3cret"), session_id, 1_700_003_600);
    assert_eq!(ice_servers[0].credential.as_deref(), Some(pass.as_str()));
}

#[test]
fn fresh_turn_credentials_are_issued_on_request_later_in_the_call() {
    let ice = crate::turn::IceConfig {
        servers: vec![],
        turn: Some(TurnRest {
            urls: vec!["turn:127.0.0.1:3478".into()],
            secret: Secret::new("s3cret"),
            ttl: Duration::from_secs(60),
        }),
    };
    let mut sim = Sim::with(HubConfig { ice, idle_timeout: Duration::from_secs(3600), ..HubConfig::default() });
    let (conn, _, session_id) = sim.client();
    sim.advance(Duration::from_secs(50));
    sim.send(conn, ClientFrame::with_id(9, ClientMessage::RefreshIceServers));
    let f = sim.take(conn);
    let ServerMessage::IceServers { ice_servers } = &f[0].msg else { panic!("{f:?}") };
    assert_eq!(f[0].reply_to, Some(9));
    let expected_user = format!("{}:{}", 1_700_000_000 + 50 + 60, session_id);
    assert_eq!(
        ice_servers[0].username.as_deref(),
        Some(expected_user.as_str()),
        "valid from now, not from the welcome"
    );
}

#[test]
fn leave_queue_and_join_while_busy() {
    let mut sim = Sim::new();
    let ((a, ..), _) = sim.pair();
    sim.send(a, ClientFrame::with_id(2, ClientMessage::JoinQueue { interests: vec![], language: None }));
    assert!(matches!(sim.take(a)[0].msg, ServerMessage::Error { code: ErrorCode::Busy, .. }));
    let (c, ..) = sim.client();
    sim.queue(c, &[], None);
    sim.msg(c, ClientMessage::LeaveQueue);
    assert_eq!(sim.hub.stats().queue_length, 0);
    let (d, ..) = sim.client();
    sim.queue(d, &[], None);
    assert!(sim.matched(d).is_none());
}

#[test]
fn a_queued_client_that_drops_is_not_matched_until_it_resumes() {
    let mut sim = Sim::new();
    let (a, token, a_id) = sim.client();
    sim.queue(a, &[], None);
    sim.input(Input::Closed(a));
    let (b, ..) = sim.client();
    sim.queue(b, &[], None);
    assert!(sim.matched(b).is_none(), "nobody is matched with a socketless session");
    let a2 = sim.open();
    sim.msg(a2, ClientMessage::Hello { version: 1, resume_token: Some(token), client: None });
    assert_eq!(sim.matched(b).map(|m| m.0), Some(a_id));
}

#[test]
fn an_ack_in_the_resuming_hello_trims_the_replay() {
    let mut sim = Sim::patient();
    let ((a, token, _), (b, ..)) = sim.pair();
    sim.msg(b, ClientMessage::Signal { payload: offer(), generation: None });
    let seen = sim.take(a).last().map(|f| f.seq).unwrap();
    sim.msg(b, ClientMessage::Signal { payload: SignalPayload::Restart, generation: None });
    sim.input(Input::Closed(a));
    let a2 = sim.open();
    let hello = ClientMessage::Hello { version: 1, resume_token: Some(token), client: None };
    sim.send(a2, ClientFrame { id: None, ack: Some(seen), msg: hello });
    let got = sim.take(a2);
    assert!(
        matches!(&got[0].msg, ServerMessage::Signal { payload: SignalPayload::Restart, generation: None }),
        "{got:?}"
    );
    assert!(matches!(got[1].msg, ServerMessage::Welcome { replayed: 1, .. }));
}

#[test]
fn a_refused_message_can_be_retried_with_the_same_id() {
    let mut sim = Sim::new();
    let (a, ..) = sim.client();
    sim.send(a, ClientFrame::with_id(3, ClientMessage::Signal { payload: offer(), generation: None }));
    assert!(matches!(sim.take(a)[0].msg, ServerMessage::Error { code: ErrorCode::NotInCall, .. }));
    sim.send(a, ClientFrame::with_id(3, ClientMessage::JoinQueue { interests: vec![], language: None }));
    assert_eq!(sim.kinds(a), ["queued"], "an error is not remembered as the answer to id 3");
}

#[test]
fn becoming_picky_while_queued_still_falls_back() {
    let mut sim = Sim::new();
    let (a, ..) = sim.client();
    let (c, ..) = sim.client();
    sim.queue(a, &[], None);
    sim.queue(a, &["origami"], None);
    sim.advance(Duration::from_secs(1));
    // c takes anyone, but a is picky for 3 s; c sets no timer of its own.
    sim.queue(c, &[], None);
    assert!(sim.matched(a).is_none());
    sim.advance(Duration::from_millis(2100));
    assert!(sim.matched(a).is_some(), "a's interest wait ran out and it took c");
}

#[test]
fn rooms_by_code_ignore_old_queue_preferences() {
    let mut sim = Sim::new();
    let (a, ..) = sim.client();
    let (b, ..) = sim.client();
    sim.queue(a, &["chess"], Some("de"));
    sim.msg(a, ClientMessage::LeaveQueue);
    sim.queue(b, &["chess"], None);
    sim.msg(b, ClientMessage::LeaveQueue);
    sim.take(a);
    sim.take(b);
    sim.msg(a, ClientMessage::JoinRoom { code: "fam".into() });
    sim.msg(b, ClientMessage::JoinRoom { code: "fam".into() });
    let got = sim.take(b);
    let m = got.iter().find(|f| f.msg.kind() == "matched").unwrap();
    let ServerMessage::Matched { common_interests, peer, .. } = &m.msg else { unreachable!() };
    assert!(common_interests.is_empty() && peer.language.is_none());
}

#[test]
fn the_replay_buffer_is_bounded_in_bytes_not_only_in_count() {
    let mut sim = Sim::with(HubConfig {
        idle_timeout: Duration::from_secs(3600),
        max_unacked_bytes: 64 * 1024,
        ..HubConfig::default()
    });
    let ((a, a_token, _), (b, ..)) = sim.pair();
    sim.input(Input::Closed(a));
    // The partner sends 100 signals of 30 KB each while `a` is away: 3 MB.
    let big = SignalPayload::Description {
        description: SessionDescription { sdp_type: SdpType::Offer, sdp: "v".repeat(30_000) },
    };
    for _ in 0..100 {
        sim.msg(b, ClientMessage::Signal { payload: big.clone(), generation: None });
    }
    let a2 = sim.open();
    sim.msg(a2, ClientMessage::Hello { version: 1, resume_token: Some(a_token), client: None });
    let got = sim.take(a2);
    let signals = got.iter().filter(|f| f.msg.kind() == "signal").count();
    assert!((1..=2).contains(&signals), "replayed {signals} signals of 30 KB under a 64 KiB cap");
    assert!(matches!(got.last().unwrap().msg, ServerMessage::Welcome { resumed: true, .. }));
}

#[test]
fn guessing_room_codes_is_limited_and_a_full_room_does_not_echo_its_code() {
    let mut sim = Sim::patient();
    let (x, ..) = sim.client();
    let (y, ..) = sim.client();
    let (z, ..) = sim.client();
    sim.msg(x, ClientMessage::JoinRoom { code: "secret-room-code".into() });
    sim.msg(y, ClientMessage::JoinRoom { code: "secret-room-code".into() });
    sim.take_all(x);
    sim.take_all(y);
    sim.msg(z, ClientMessage::JoinRoom { code: "secret-room-code".into() });
    let ServerMessage::Error { code, message } = &sim.take(z)[0].msg else { panic!() };
    assert_eq!(*code, ErrorCode::RoomFull);
    assert!(!message.contains("secret"), "{message}");
    // Every wrong guess opens a room (and is left again); the eleventh within a minute is refused.
    for i in 0..10 {
        sim.msg(z, ClientMessage::JoinRoom { code: format!("guess-{i}") });
        assert_eq!(sim.kinds(z), ["room_joined"], "guess {i}");
        sim.msg(z, ClientMessage::Leave);
        sim.take_all(z);
    }
    sim.msg(z, ClientMessage::JoinRoom { code: "guess-10".into() });
    assert!(matches!(sim.take(z)[0].msg, ServerMessage::Error { code: ErrorCode::RateLimited, .. }));
    // Reopening a room already tried is no guess: friends leave and rejoin.
    sim.msg(z, ClientMessage::JoinRoom { code: "guess-3".into() });
    assert_eq!(sim.kinds(z), ["room_joined"]);
    sim.msg(z, ClientMessage::Leave);
    sim.take_all(z);
    sim.advance(Duration::from_secs(61));
    sim.msg(z, ClientMessage::JoinRoom { code: "guess-10".into() });
    assert_eq!(sim.kinds(z), ["room_joined"]);
}

#[test]
fn a_session_keeps_its_most_recent_blocks_within_a_bound() {
    let mut s = session::Session::new("p".into(), String::new(), ConnId(1), None);
    for other in 0..(session::MAX_BLOCKED as u64 + 10) {
        s.block(other);
        s.block(other);
    }
    assert_eq!(s.blocked.len(), session::MAX_BLOCKED);
    assert!(!s.blocked.contains(&0) && s.blocked.contains(&(session::MAX_BLOCKED as u64 + 9)));
}

impl Sim {
    /// A client on device `device` (its `client.device` id).
    fn client_on(&mut self, device: &str) -> ConnId {
        let conn = self.open();
        let client = ClientInfo { name: "t".into(), version: None, platform: None, device: Some(device.into()) };
        self.msg(conn, ClientMessage::Hello { version: 1, resume_token: None, client: Some(client) });
        assert_eq!(self.kinds(conn), ["welcome"]);
        conn
    }
}

#[test]
fn a_block_follows_the_person_to_a_new_session_on_the_same_device() {
    let mut sim = Sim::patient();
    let (a, b) = (sim.client_on("device-of-alice-0001"), sim.client_on("device-of-bob-000001"));
    sim.queue(a, &[], None);
    sim.queue(b, &[], None);
    assert!(sim.matched(a).is_some());
    sim.take_all(b);
    sim.msg(a, ClientMessage::Block);
    sim.take_all(a);
    // Bob comes back in a brand-new session (an app restart) on the same device.
    sim.input(Input::Closed(b));
    let b2 = sim.client_on("device-of-bob-000001");
    sim.queue(a, &[], None);
    sim.queue(b2, &[], None);
    sim.advance(Duration::from_secs(600));
    assert!(sim.matched(a).is_none() && sim.matched(b2).is_none(), "the block held across sessions");
    // Anyone else still meets Alice.
    let c = sim.client_on("device-of-carol-0001");
    sim.queue(c, &[], None);
    assert!(sim.matched(c).is_some());
}

#[test]
fn a_device_id_never_reaches_the_partner() {
    let mut sim = Sim::patient();
    let (a, b) = (sim.client_on("secret-device-id-aaaa"), sim.client_on("secret-device-id-bbbb"));
    sim.queue(a, &[], None);
    sim.queue(b, &[], None);
    for conn in [a, b] {
        let text: String = sim.take_all(conn).iter().map(|f| f.to_json()).collect();
        assert!(text.contains("matched") && !text.contains("secret-device-id"), "{text}");
    }
}
