//! Perfect negotiation (the W3C pattern) as a sans-IO state machine.
//!
//! Both peers may start a negotiation at any time (tracks added, camera turned off, ICE
//! restart). When offers cross ("glare"), the **polite** peer (assigned by the server in
//! `matched`) rolls its own offer back and answers the other; the **impolite** peer ignores
//! the incoming offer and waits for the answer to its own. Duplicate or stale descriptions
//! (an answer in `stable`, the same offer twice) are dropped instead of failing the
//! connection, and candidates that arrive before a remote description are held back.
//!
//! The machine issues one [`Action`] at a time; the driver performs it on the peer
//! connection (asynchronously) and reports the result as an [`Input`]. It never calls
//! webrtc itself.

use std::collections::VecDeque;

use duet_proto::{IceCandidate, SdpType, SessionDescription};
use tracing::{debug, info, warn};

/// The peer connection's signaling state as the machine tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalingState {
    /// No offer pending.
    Stable,
    /// Our offer is applied; waiting for the answer.
    HaveLocalOffer,
    /// The peer's offer is applied; our answer is being made.
    HaveRemoteOffer,
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Our side needs a (re)negotiation; `ice_restart` asks for new ICE credentials.
    NegotiationNeeded {
        /// Restart ICE with this offer.
        ice_restart: bool,
    },
    /// The peer asked us to restart ICE.
    RestartRequested,
    /// A description from the peer.
    Remote(SessionDescription),
    /// A candidate from the peer.
    Candidate(IceCandidate),
    /// The last [`Action`] finished successfully.
    Done,
    /// The last [`Action`] failed.
    Failed(String),
}

/// What the driver must do next (one at a time, then report [`Input::Done`] or
/// [`Input::Failed`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create an offer, apply it locally and send it to the peer.
    MakeOffer {
        /// With new ICE credentials.
        ice_restart: bool,
    },
    /// Roll back our pending local offer.
    RollbackLocal,
    /// Apply this remote description.
    ApplyRemote(SessionDescription),
    /// Create an answer, apply it locally and send it to the peer.
    MakeAnswer,
    /// Add this remote candidate (no completion report needed).
    AddCandidate(IceCandidate),
    /// Negotiation failed in a way this connection cannot recover from: the caller should
    /// replace the peer connection (full renegotiation).
    GiveUp(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Busy {
    MakingOffer,
    RollingBack,
    ApplyingRemote(SdpType),
    MakingAnswer,
}

/// Failures in a row after which the machine gives up on this peer connection.
const MAX_FAILURES: u32 = 3;

/// The perfect-negotiation machine of one peer connection.
#[derive(Debug)]
pub struct Negotiator {
    polite: bool,
    state: SignalingState,
    busy: Option<Busy>,
    /// A negotiation is wanted once the state is stable again.
    needed: Option<bool>,
    queue: VecDeque<Input>,
    /// Candidates held until a remote description is in place.
    held_candidates: Vec<IceCandidate>,
    has_remote: bool,
    /// The offer just ignored by an impolite peer: its candidates are dropped too.
    ignoring_offer: bool,
    last_remote_offer: Option<String>,
    failures: u32,
    actions: VecDeque<Action>,
}

impl Negotiator {
    /// A machine for a peer connection; `polite` comes from the server's `matched`.
    pub fn new(polite: bool) -> Self {
        Self {
            polite,
            state: SignalingState::Stable,
            busy: None,
            needed: None,
            queue: VecDeque::new(),
            held_candidates: Vec::new(),
            has_remote: false,
            ignoring_offer: false,
            last_remote_offer: None,
            failures: 0,
            actions: VecDeque::new(),
        }
    }

    /// The perfect-negotiation role.
    pub fn is_polite(&self) -> bool {
        self.polite
    }

    /// The tracked signaling state.
    pub fn state(&self) -> SignalingState {
        self.state
    }

    /// True while an action is in flight.
    pub fn is_busy(&self) -> bool {
        self.busy.is_some()
    }

    /// Feeds one input.
    pub fn handle(&mut self, input: Input) {
        match input {
            Input::Done => self.on_done(),
            Input::Failed(why) => self.on_failed(why),
            Input::Candidate(c) => self.on_candidate(c),
            Input::Remote(desc) if desc.sdp_type == SdpType::Offer && self.busy == Some(Busy::MakingOffer) => {
                // Glare while our offer is being made: decide now, as the W3C pattern does.
                if self.polite {
                    self.queue.push_back(Input::Remote(desc));
                } else {
                    info!("offer collision: impolite side ignores the peer's offer");
                    self.ignoring_offer = true;
                }
            }
            other if self.busy.is_some() => self.queue.push_back(other),
            other => self.process(other),
        }
        self.pump();
    }

    /// The next action to perform, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    fn process(&mut self, input: Input) {
        match input {
            Input::NegotiationNeeded { ice_restart } => self.want_offer(ice_restart),
            Input::RestartRequested => self.want_offer(true),
            Input::Remote(desc) => self.on_remote(desc),
            Input::Candidate(c) => self.on_candidate(c),
            Input::Done | Input::Failed(_) => {}
        }
    }

    fn want_offer(&mut self, ice_restart: bool) {
        if self.state == SignalingState::Stable && self.busy.is_none() {
            self.start(Busy::MakingOffer, Action::MakeOffer { ice_restart });
        } else {
            // Merge with any negotiation already wanted; a restart request is sticky.
            self.needed = Some(self.needed.unwrap_or(false) || ice_restart);
        }
    }

    fn on_remote(&mut self, desc: SessionDescription) {
        match desc.sdp_type {
            SdpType::Offer => {
                if self.state == SignalingState::Stable && self.last_remote_offer.as_deref() == Some(desc.sdp.as_str())
                {
                    debug!("duplicate offer dropped");
                    return;
                }
                match self.state {
                    SignalingState::HaveLocalOffer if !self.polite => {
                        info!("offer collision: impolite side ignores the peer's offer");
                        self.ignoring_offer = true;
                    }
                    SignalingState::HaveLocalOffer => {
                        info!("offer collision: polite side rolls back its offer");
                        self.needed = Some(self.needed.unwrap_or(false));
                        self.queue.push_front(Input::Remote(desc));
                        self.start(Busy::RollingBack, Action::RollbackLocal);
                    }
                    SignalingState::HaveRemoteOffer => debug!("second offer while answering; dropped"),
                    SignalingState::Stable => {
                        self.ignoring_offer = false;
                        self.last_remote_offer = Some(desc.sdp.clone());
                        self.start(Busy::ApplyingRemote(SdpType::Offer), Action::ApplyRemote(desc));
                    }
                }
            }
            SdpType::Answer | SdpType::Pranswer => {
                if self.state == SignalingState::HaveLocalOffer {
                    self.start(Busy::ApplyingRemote(desc.sdp_type), Action::ApplyRemote(desc));
                } else {
                    debug!(state = ?self.state, "answer without a pending offer (duplicate or stale); dropped");
                }
            }
            SdpType::Rollback => {
                if self.state == SignalingState::HaveRemoteOffer {
                    self.start(Busy::ApplyingRemote(SdpType::Rollback), Action::ApplyRemote(desc));
                }
            }
        }
    }

    fn on_candidate(&mut self, c: IceCandidate) {
        if self.ignoring_offer {
            debug!("candidate of an ignored offer dropped");
        } else if self.has_remote && !matches!(self.busy, Some(Busy::ApplyingRemote(_))) {
            self.actions.push_back(Action::AddCandidate(c));
        } else {
            self.held_candidates.push(c);
        }
    }

    fn on_done(&mut self) {
        let Some(busy) = self.busy.take() else { return };
        self.failures = 0;
        match busy {
            Busy::MakingOffer => self.state = SignalingState::HaveLocalOffer,
            Busy::RollingBack => self.state = SignalingState::Stable,
            Busy::ApplyingRemote(SdpType::Offer) => {
                self.state = SignalingState::HaveRemoteOffer;
                self.remote_in_place();
                self.start(Busy::MakingAnswer, Action::MakeAnswer);
            }
            Busy::ApplyingRemote(SdpType::Pranswer) => self.remote_in_place(),
            Busy::ApplyingRemote(SdpType::Answer | SdpType::Rollback) => {
                self.state = SignalingState::Stable;
                self.remote_in_place();
            }
            Busy::MakingAnswer => self.state = SignalingState::Stable,
        }
    }

    fn on_failed(&mut self, why: String) {
        let Some(busy) = self.busy.take() else { return };
        self.failures += 1;
        warn!(step = ?busy, %why, failures = self.failures, "negotiation step failed");
        if busy == Busy::MakingOffer {
            // Try again once things are stable.
            self.needed = Some(self.needed.unwrap_or(false));
        }
        if self.failures >= MAX_FAILURES {
            self.queue.clear();
            self.needed = None;
            self.actions.push_back(Action::GiveUp(why));
        }
    }

    fn remote_in_place(&mut self) {
        self.has_remote = true;
        for c in self.held_candidates.drain(..) {
            self.actions.push_back(Action::AddCandidate(c));
        }
    }

    fn start(&mut self, busy: Busy, action: Action) {
        self.busy = Some(busy);
        self.actions.push_back(action);
    }

    /// Processes queued inputs and a wanted negotiation while nothing is in flight.
    fn pump(&mut self) {
        while self.busy.is_none() {
            if let Some(input) = self.queue.pop_front() {
                self.process(input);
                continue;
            }
            if self.state == SignalingState::Stable
                && let Some(ice_restart) = self.needed.take()
            {
                self.start(Busy::MakingOffer, Action::MakeOffer { ice_restart });
                continue;
            }
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(t: SdpType, sdp: &str) -> SessionDescription {
        SessionDescription { sdp_type: t, sdp: sdp.into() }
    }

    fn cand(n: u32) -> IceCandidate {
        IceCandidate {
            candidate: format!("candidate:{n}"),
            sdp_mid: None,
            sdp_m_line_index: Some(0),
            username_fragment: None,
        }
    }

    fn actions(n: &mut Negotiator) -> Vec<Action> {
        std::iter::from_fn(|| n.poll_action()).collect()
    }

    /// Two machines wired together: what one "sends" is delivered to the other.
    struct Pair {
        a: Negotiator,
        b: Negotiator,
        /// (to_b, description) in flight.
        wire: VecDeque<(bool, SessionDescription)>,
        log: Vec<String>,
    }

    impl Pair {
        fn new() -> Self {
            Self { a: Negotiator::new(false), b: Negotiator::new(true), wire: VecDeque::new(), log: vec![] }
        }

        /// Performs every action of side `a_side` successfully (offers/answers go on the wire).
        fn run(&mut self, a_side: bool) {
            loop {
                let n = if a_side { &mut self.a } else { &mut self.b };
                let Some(action) = n.poll_action() else { break };
                let who = if a_side { "a" } else { "b" };
                self.log.push(format!("{who}:{action:?}"));
                match action {
                    Action::MakeOffer { .. } => {
                        self.wire.push_back((a_side, desc(SdpType::Offer, &format!("offer-{who}-{}", self.log.len()))));
                        n.handle(Input::Done);
                    }
                    Action::MakeAnswer => {
                        self.wire.push_back((a_side, desc(SdpType::Answer, &format!("answer-{who}"))));
                        n.handle(Input::Done);
                    }
                    Action::RollbackLocal | Action::ApplyRemote(_) => n.handle(Input::Done),
                    Action::AddCandidate(_) | Action::GiveUp(_) => {}
                }
            }
        }

        fn deliver_all(&mut self) {
            for _ in 0..20 {
                self.run(true);
                self.run(false);
                let Some((to_b, d)) = self.wire.pop_front() else { return };
                if to_b { self.b.handle(Input::Remote(d)) } else { self.a.handle(Input::Remote(d)) }
            }
        }
    }

    #[test]
    fn a_plain_offer_answer_reaches_stable_on_both_sides() {
        let mut p = Pair::new();
        p.a.handle(Input::NegotiationNeeded { ice_restart: false });
        p.deliver_all();
        assert_eq!((p.a.state(), p.b.state()), (SignalingState::Stable, SignalingState::Stable));
        assert!(p.log.iter().any(|l| l.starts_with("b:MakeAnswer")));
    }

    #[test]
    fn glare_polite_rolls_back_impolite_ignores_and_both_end_stable() {
        let mut p = Pair::new();
        // Both want to offer at the same time; both offers are on the wire before either lands.
        p.a.handle(Input::NegotiationNeeded { ice_restart: false });
        p.b.handle(Input::NegotiationNeeded { ice_restart: false });
        p.run(true);
        p.run(false);
        assert_eq!((p.a.state(), p.b.state()), (SignalingState::HaveLocalOffer, SignalingState::HaveLocalOffer));
        p.deliver_all();
        assert_eq!((p.a.state(), p.b.state()), (SignalingState::Stable, SignalingState::Stable));
        assert!(p.log.iter().any(|l| l == "b:RollbackLocal"), "{:?}", p.log);
        assert!(!p.log.iter().any(|l| l == "a:RollbackLocal"));
        // The polite side still gets its negotiation: it offers again after answering.
        let b_offers = p.log.iter().filter(|l| l.starts_with("b:MakeOffer")).count();
        assert_eq!(b_offers, 2, "{:?}", p.log);
    }

    #[test]
    fn an_offer_arriving_while_ours_is_being_made_is_a_collision_too() {
        let mut n = Negotiator::new(false);
        n.handle(Input::NegotiationNeeded { ice_restart: false });
        assert_eq!(actions(&mut n), [Action::MakeOffer { ice_restart: false }]);
        n.handle(Input::Remote(desc(SdpType::Offer, "theirs")));
        n.handle(Input::Candidate(cand(1)));
        n.handle(Input::Done);
        assert!(actions(&mut n).is_empty(), "impolite: their offer and its candidates are ignored");
        let mut n = Negotiator::new(true);
        n.handle(Input::NegotiationNeeded { ice_restart: false });
        actions(&mut n);
        n.handle(Input::Remote(desc(SdpType::Offer, "theirs")));
        n.handle(Input::Done);
        assert_eq!(actions(&mut n), [Action::RollbackLocal]);
        n.handle(Input::Done);
        assert_eq!(actions(&mut n), [Action::ApplyRemote(desc(SdpType::Offer, "theirs"))]);
    }

    #[test]
    fn duplicate_and_stale_answers_are_dropped() {
        let mut n = Negotiator::new(false);
        n.handle(Input::Remote(desc(SdpType::Answer, "stray")));
        assert!(actions(&mut n).is_empty(), "answer in stable");
        n.handle(Input::NegotiationNeeded { ice_restart: false });
        n.handle(Input::Done);
        actions(&mut n);
        n.handle(Input::Remote(desc(SdpType::Answer, "a1")));
        assert_eq!(actions(&mut n), [Action::ApplyRemote(desc(SdpType::Answer, "a1"))]);
        n.handle(Input::Done);
        n.handle(Input::Remote(desc(SdpType::Answer, "a1")));
        assert!(actions(&mut n).is_empty(), "duplicate answer");
        assert_eq!(n.state(), SignalingState::Stable);
    }

    #[test]
    fn a_duplicate_offer_is_answered_once() {
        let mut n = Negotiator::new(true);
        for _ in 0..2 {
            n.handle(Input::Remote(desc(SdpType::Offer, "o1")));
            let acts = actions(&mut n);
            if acts.is_empty() {
                continue;
            }
            n.handle(Input::Done);
            assert_eq!(actions(&mut n), [Action::MakeAnswer]);
            n.handle(Input::Done);
        }
        assert_eq!(n.state(), SignalingState::Stable);
        n.handle(Input::Remote(desc(SdpType::Offer, "o1")));
        assert!(actions(&mut n).is_empty());
    }

    #[test]
    fn early_candidates_wait_for_the_remote_description() {
        let mut n = Negotiator::new(true);
        n.handle(Input::Candidate(cand(1)));
        n.handle(Input::Candidate(cand(2)));
        assert!(actions(&mut n).is_empty());
        n.handle(Input::Remote(desc(SdpType::Offer, "o")));
        n.handle(Input::Candidate(cand(3)));
        assert_eq!(actions(&mut n), [Action::ApplyRemote(desc(SdpType::Offer, "o"))]);
        n.handle(Input::Done);
        let acts = actions(&mut n);
        assert_eq!(
            acts[..3],
            [Action::AddCandidate(cand(1)), Action::AddCandidate(cand(2)), Action::AddCandidate(cand(3))]
        );
        assert_eq!(acts[3], Action::MakeAnswer);
        n.handle(Input::Done);
        n.handle(Input::Candidate(cand(4)));
        assert_eq!(actions(&mut n), [Action::AddCandidate(cand(4))]);
    }

    #[test]
    fn restart_requests_during_a_negotiation_are_kept_for_after_it() {
        let mut n = Negotiator::new(false);
        n.handle(Input::NegotiationNeeded { ice_restart: false });
        actions(&mut n);
        n.handle(Input::RestartRequested);
        n.handle(Input::Done);
        assert!(actions(&mut n).is_empty(), "still waiting for the answer");
        n.handle(Input::Remote(desc(SdpType::Answer, "a")));
        actions(&mut n);
        n.handle(Input::Done);
        assert_eq!(actions(&mut n), [Action::MakeOffer { ice_restart: true }]);
    }

    #[test]
    fn repeated_failures_give_up_for_a_fresh_connection() {
        let mut n = Negotiator::new(false);
        for _ in 0..3 {
            n.handle(Input::NegotiationNeeded { ice_restart: false });
            let acts = actions(&mut n);
            assert!(matches!(acts.last(), Some(Action::MakeOffer { .. })), "{acts:?}");
            n.handle(Input::Failed("boom".into()));
        }
        assert_eq!(actions(&mut n), [Action::GiveUp("boom".into())]);
    }
}
