//! Two sides' video states over a `control` channel that loses what the test says, on
//! simulated time.

use std::time::{Duration, Instant};

use super::*;

const ON: VideoState = VideoState::ON;
const NETWORK: VideoState = VideoState { on: false, cause: Some(AudioOnlyCause::Network) };
const OFF: VideoState = VideoState { on: false, cause: None };

/// What the application is told of the partner's camera ...
fn camera(on: bool) -> VideoSyncOutput {
    VideoSyncOutput::PartnerCamera(on)
}

/// ... and of its audio-only for its network.
fn audio_only(on: bool) -> VideoSyncOutput {
    VideoSyncOutput::PartnerAudioOnly { on, cause: AudioOnlyCause::PartnerNetwork }
}

/// Side `a` and side `b`, what each was told about the other, what each sent.
struct Pair {
    t0: Instant,
    a: VideoSync,
    b: VideoSync,
    /// What `b` reported of `a`'s video, in order.
    b_told: Vec<VideoSyncOutput>,
    /// What `a` reported of `b`'s video.
    a_told: Vec<VideoSyncOutput>,
    /// Messages `a` sent.
    a_sent: Vec<ControlMessage>,
    /// Messages of `a` (and of `b`) that are lost from now on.
    lose_a: bool,
    lose_b: bool,
}

impl Pair {
    fn new() -> Self {
        Self {
            t0: Instant::now(),
            a: VideoSync::new(ON, false),
            b: VideoSync::new(ON, false),
            b_told: Vec::new(),
            a_told: Vec::new(),
            a_sent: Vec::new(),
            lose_a: false,
            lose_b: false,
        }
    }

    fn at(&self, s: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(s)
    }

    /// Both channels open at `s` and the first announcements go through.
    fn connected(s: f64) -> Self {
        let mut p = Self::new();
        p.open(s);
        p
    }

    fn open(&mut self, s: f64) {
        let now = self.at(s);
        self.a.opened(now);
        self.b.opened(now);
        self.carry(now);
    }

    /// The connection is replaced: whatever was on the way is gone.
    fn replaced(&mut self) {
        self.a.closed();
        self.b.closed();
        self.carry_lost();
    }

    /// Delivers what both sides want sent (unless lost) until neither has anything more.
    fn carry(&mut self, now: Instant) {
        loop {
            let mut moved = false;
            while let Some(o) = self.a.poll_output() {
                moved = true;
                match o {
                    VideoSyncOutput::Send(m) => {
                        self.a_sent.push(m);
                        if !self.lose_a {
                            self.b.received(now, &m);
                        }
                    }
                    told => self.a_told.push(told),
                }
            }
            while let Some(o) = self.b.poll_output() {
                moved = true;
                match o {
                    VideoSyncOutput::Send(m) => {
                        if !self.lose_b {
                            self.a.received(now, &m);
                        }
                    }
                    told => self.b_told.push(told),
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Drops what both sides want sent (it was on a connection that is gone).
    fn carry_lost(&mut self) {
        let (lose_a, lose_b) = (self.lose_a, self.lose_b);
        self.lose_a = true;
        self.lose_b = true;
        self.carry(self.t0);
        self.lose_a = lose_a;
        self.lose_b = lose_b;
    }

    /// Runs both sides' timers until `s`.
    fn run_until(&mut self, s: f64) {
        let end = self.at(s);
        loop {
            let next = [self.a.poll_timeout(), self.b.poll_timeout()].into_iter().flatten().min();
            match next {
                Some(t) if t <= end => {
                    self.a.handle_timeout(t);
                    self.b.handle_timeout(t);
                    self.carry(t);
                }
                _ => return,
            }
        }
    }

    fn a_video_sends(&self) -> usize {
        self.a_sent.iter().filter(|m| matches!(m, ControlMessage::Video { .. })).count()
    }
}

#[test]
fn a_notice_lost_on_the_way_is_sent_again_until_the_partner_has_it() {
    let mut p = Pair::connected(0.0);
    assert_eq!(p.b_told, [camera(true)]);
    // `a` goes audio-only; its notice is lost (a receiver that dropped it, a transport that
    // gave it up).
    p.lose_a = true;
    p.a.set(p.at(8.0), NETWORK);
    p.carry(p.at(8.0));
    assert_eq!(p.b_told, [camera(true)], "the notice was lost");
    p.lose_a = false;
    p.run_until(10.0);
    assert_eq!(p.b_told, [camera(true), audio_only(true)], "the partner was never told");
    assert_eq!(p.b.partner_suspended(), Some(AudioOnlyCause::Network));
    assert!(!p.b.partner_on());
    // Acknowledged: nothing more is sent.
    let sent = p.a_video_sends();
    p.run_until(40.0);
    assert_eq!(p.a_video_sends(), sent);
}

#[test]
fn a_notice_whose_acknowledgement_is_lost_is_sent_again_but_reported_once() {
    let mut p = Pair::connected(0.0);
    p.lose_b = true;
    p.a.set(p.at(8.0), NETWORK);
    p.carry(p.at(8.0));
    p.run_until(12.0);
    assert!(p.a_video_sends() > 2, "re-sent while unacknowledged: {:?}", p.a_sent);
    assert_eq!(p.b_told, [camera(true), audio_only(true)]);
    p.lose_b = false;
    p.run_until(14.0);
    let sent = p.a_video_sends();
    p.run_until(40.0);
    assert_eq!(p.a_video_sends(), sent);
    assert_eq!(p.b_told, [camera(true), audio_only(true)]);
}

#[test]
fn a_change_made_before_the_channel_opened_is_announced_when_it_opens() {
    let mut p = Pair::new();
    p.a.set(p.at(0.5), NETWORK);
    p.carry(p.at(0.5));
    assert!(p.a_sent.is_empty(), "nothing can be sent before the channel is open");
    p.open(1.0);
    assert_eq!(p.b_told, [audio_only(true)]);
}

#[test]
fn a_notice_on_a_replaced_connection_reaches_the_partner_on_the_next_one() {
    let mut p = Pair::connected(0.0);
    p.a.set(p.at(8.0), NETWORK);
    p.replaced();
    assert_eq!(p.b_told, [camera(true)]);
    // No timer sends anything on a connection that is gone.
    p.run_until(12.0);
    assert_eq!(p.b_told, [camera(true)]);
    p.open(12.5);
    assert_eq!(p.b_told, [camera(true), audio_only(true)]);
    // The partner's state is announced again on the new connection.
    assert_eq!(p.a_told, [camera(true), camera(true)]);
}

#[test]
fn each_change_is_reported_in_order() {
    let mut p = Pair::connected(0.0);
    p.a.set(p.at(8.0), NETWORK);
    p.a.set(p.at(8.0), ON);
    p.a.set(p.at(8.0), NETWORK);
    p.carry(p.at(8.0));
    p.run_until(20.0);
    let expected = [camera(true), audio_only(true), audio_only(false), camera(true), audio_only(true)];
    assert_eq!(p.b_told, expected);
    // The same state again is no change.
    p.a.set(p.at(21.0), NETWORK);
    p.carry(p.at(21.0));
    p.run_until(30.0);
    assert_eq!(p.b_told, expected);
    // The camera turned off while audio-only: still audio-only, and the camera is off.
    p.a.set(p.at(31.0), OFF);
    p.carry(p.at(31.0));
    assert_eq!(p.b_told[expected.len()..], [camera(false)]);
    assert_eq!(p.b.partner_suspended(), Some(AudioOnlyCause::Network));
}

#[test]
fn a_partner_that_never_acknowledges_gets_each_change_once() {
    // The browser client: announces without `seq` and never acknowledges.
    let t0 = Instant::now();
    let mut a = VideoSync::new(ON, false);
    a.opened(t0);
    a.received(t0, &ControlMessage::Video { on: true, cause: None, seq: None });
    a.set(t0 + Duration::from_secs(8), NETWORK);
    let mut sent = 0;
    let mut told = Vec::new();
    let mut drain = |a: &mut VideoSync| {
        while let Some(o) = a.poll_output() {
            match o {
                VideoSyncOutput::Send(ControlMessage::Video { .. }) => sent += 1,
                VideoSyncOutput::Send(other) => panic!("nothing else goes to it: {other:?}"),
                heard => told.push(heard),
            }
        }
    };
    drain(&mut a);
    while let Some(t) = a.poll_timeout().filter(|t| *t < t0 + Duration::from_secs(60)) {
        a.handle_timeout(t);
        drain(&mut a);
    }
    // Its own messages all count, as they always did.
    a.received(t0 + Duration::from_secs(9), &ControlMessage::Video { on: false, cause: None, seq: None });
    a.received(t0 + Duration::from_secs(9), &ControlMessage::Video { on: false, cause: None, seq: None });
    drain(&mut a);
    assert_eq!(sent, 2, "the announcement at open and the change, once each");
    assert_eq!(told, [camera(true), camera(false), camera(false)]);
}

#[test]
fn an_echo_announces_back_what_the_partner_announces() {
    let mut p = Pair::new();
    p.b = VideoSync::new(ON, true);
    p.open(0.0);
    // Its own changes do not count: it has no camera of its own.
    p.b.set(p.at(1.0), VideoState { on: false, cause: None });
    p.carry(p.at(1.0));
    p.a.set(p.at(8.0), NETWORK);
    p.carry(p.at(8.0));
    p.run_until(20.0);
    assert_eq!(p.b_told, [camera(true), audio_only(true)]);
    assert_eq!(p.a_told, [camera(true), audio_only(true)]);
}

#[test]
fn the_partners_audio_only_outlives_a_replaced_connection_until_it_says_otherwise() {
    let mut p = Pair::connected(0.0);
    p.a.set(p.at(8.0), NETWORK);
    p.carry(p.at(8.0));
    p.replaced();
    assert_eq!(p.b.partner_suspended(), Some(AudioOnlyCause::Network));
    // On the new connection `a` says its video is back: `b` reports the end of the audio-only.
    p.a.set(p.at(9.0), ON);
    p.open(10.0);
    assert_eq!(p.b_told, [camera(true), audio_only(true), audio_only(false), camera(true)]);
    assert_eq!(p.b.partner_suspended(), None);
    // Another partner starts from nothing known.
    p.a.set(p.at(11.0), NETWORK);
    p.carry(p.at(11.0));
    p.b.new_partner();
    assert_eq!((p.b.partner_on(), p.b.partner_suspended()), (true, None));
}
