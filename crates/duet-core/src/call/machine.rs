//! The call lifecycle as a sans-IO state machine.
//!
//! It turns application commands, signaling events and peer-connection events into
//! signaling messages, peer-connection actions and application events: searching, matched,
//! connecting, connected, reconnecting (ours or the partner's), ended with a reason. Media
//! failures escalate as DESIGN.md describes: ICE `disconnected` for a while, or `failed`,
//! triggers an ICE restart; a restart that does not recover in time ends in a fresh peer
//! connection in the same room; a partner that does not come back ends the call.
//!
//! Every peer connection of a pairing has a generation (1, 2, ...), carried by every signal
//! we send. A signal of an older generation is late (from a replaced connection): dropped
//! and counted. A signal of a newer one means the partner moved to a fresh connection: we
//! follow. Replacing is decided by one side (the impolite one first; the polite side only
//! after a longer wait), which announces it with a `restart` signal of the new generation.
//! Connecting, an unanswered offer and an ICE restart each have a timeout whose next step is
//! a fresh connection; [`MAX_REPLACEMENTS`] of those in a row without media end the call.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use duet_proto::{ClientMessage, IceServer, PeerLeftReason, SdpType, ServerMessage, SignalPayload};
use tracing::{debug, info};

use super::recovery::{Failure, Fix, Outage, Recovery};
use crate::negotiation::{self, Negotiator};
use crate::signaling::{SessionState, SignalingEvent};

/// How long ICE may stay `disconnected` before an ICE restart.
pub const DISCONNECTED_GRACE: Duration = Duration::from_secs(2);
/// How long an ICE restart may take before the peer connection is replaced.
pub const RESTART_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new peer connection may take to connect before it is replaced.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long our offer may go unanswered (while both sides reach the server) before the peer
/// connection is replaced.
pub const OFFER_TIMEOUT: Duration = Duration::from_secs(5);
/// Fresh peer connections in a row that never connected before the call is given up.
pub const MAX_REPLACEMENTS: u32 = 3;
/// The polite side waits this much longer than the impolite side before it replaces the peer
/// connection itself, so that normally one side decides and the other follows.
const POLITE_WAIT_FACTOR: u32 = 2;

/// Where the call is, as the user sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallState {
    /// Not looking for anyone.
    Idle,
    /// Waiting in the queue for a partner.
    Searching,
    /// Waiting in a room by code for the friend.
    WaitingInRoom {
        /// The code.
        code: String,
    },
    /// Matched; media is being set up.
    Connecting,
    /// Media flows.
    Connected,
    /// Trying to get back: our signaling or media path, or the partner.
    Reconnecting {
        /// Whose side is away.
        side: Side,
    },
    /// The call is over.
    Ended {
        /// Why, in words for the user.
        reason: String,
    },
}

/// Which side a reconnection concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// This app (its network or the server connection).
    Local,
    /// The partner.
    Peer,
}

/// ICE/peer connection state as reported by the peer connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// Gathering/checking.
    Connecting,
    /// Media path up.
    Connected,
    /// Path lost, may come back.
    Disconnected,
    /// Path lost for good.
    Failed,
}

/// What the application asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Look for a random partner.
    Start {
        /// Interests to share.
        interests: Vec<String>,
        /// Preferred language.
        language: Option<String>,
    },
    /// Join a friend's room.
    JoinRoom {
        /// The code.
        code: String,
    },
    /// Skip to the next partner.
    Next,
    /// End the call or stop searching.
    Stop,
    /// Report the partner.
    Report {
        /// Why.
        reason: String,
    },
    /// Block the partner.
    Block,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send this to the signaling server.
    Signal(ClientMessage),
    /// Create a peer connection for a new partner (dropping any old one).
    CreatePeer {
        /// Perfect-negotiation role.
        polite: bool,
        /// ICE servers for it.
        ice_servers: Vec<IceServer>,
    },
    /// Close and drop the peer connection.
    ClosePeer,
    /// Perform this negotiation step on the peer connection.
    Negotiate(negotiation::Action),
    /// Tell the application the state changed.
    State(CallState),
    /// Tell the application a user-facing problem.
    Notice(String),
    /// Media or signaling is back after an outage.
    Recovered(Recovery),
    /// A signal of a replaced peer connection arrived late and was dropped.
    StaleSignalDropped,
    /// A new partner: what belongs to one pairing (the chat) starts afresh.
    PairingStarted,
    /// The partner is gone: nothing of the pairing may reach the next one.
    PairingEnded,
}

/// The call machine. See the module docs.
pub struct CallMachine {
    state: CallState,
    negotiator: Option<Negotiator>,
    ice_servers: Vec<IceServer>,
    peer_state: PeerState,
    disconnected_since: Option<Instant>,
    restart_started: Option<Instant>,
    signaling_up: bool,
    peer_away: bool,
    /// The generation of the current peer connection in this pairing.
    generation: u32,
    /// When the current peer connection was created, until it first connects.
    connecting_since: Option<Instant>,
    /// When our last offer went out, until the answer comes.
    offer_sent_at: Option<Instant>,
    /// The last negotiation step handed to the driver is an offer.
    offering: bool,
    /// Fresh peer connections since media last flowed.
    replacements: u32,
    /// The media path is down (since, what failed, what is being tried).
    outage: Option<Outage>,
    /// The signaling connection is down (since when).
    signaling_lost: Option<Instant>,
    /// The interests and language of the latest search (a `next` searches with them again).
    search: (Vec<String>, Option<String>),
    out: VecDeque<Output>,
}

impl Default for CallMachine {
    fn default() -> Self {
        Self::new()
    }
}

impl CallMachine {
    /// An idle call.
    pub fn new() -> Self {
        Self {
            state: CallState::Idle,
            negotiator: None,
            ice_servers: Vec::new(),
            peer_state: PeerState::Connecting,
            disconnected_since: None,
            restart_started: None,
            signaling_up: false,
            peer_away: false,
            generation: 0,
            connecting_since: None,
            offer_sent_at: None,
            offering: false,
            replacements: 0,
            outage: None,
            signaling_lost: None,
            search: (Vec::new(), None),
            out: VecDeque::new(),
        }
    }

    /// The current state.
    pub fn state(&self) -> &CallState {
        &self.state
    }

    /// An application command.
    pub fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Start { interests, language } => {
                self.end_peer();
                self.search = (interests.clone(), language.clone());
                self.out.push_back(Output::Signal(ClientMessage::JoinQueue { interests, language }));
                self.set_state(CallState::Searching);
            }
            Command::JoinRoom { code } => {
                self.end_peer();
                self.out.push_back(Output::Signal(ClientMessage::JoinRoom { code: code.clone() }));
                self.set_state(CallState::WaitingInRoom { code });
            }
            Command::Next => {
                self.end_peer();
                self.out.push_back(Output::Signal(ClientMessage::Next));
                self.set_state(CallState::Searching);
            }
            Command::Stop => {
                self.end_peer();
                self.out.push_back(Output::Signal(ClientMessage::Leave));
                self.set_state(CallState::Idle);
            }
            Command::Report { reason } => {
                self.end_peer();
                self.out.push_back(Output::Signal(ClientMessage::Report { reason }));
                self.set_state(CallState::Ended { reason: "You reported your partner.".into() });
            }
            Command::Block => {
                self.end_peer();
                self.out.push_back(Output::Signal(ClientMessage::Block));
                self.set_state(CallState::Ended { reason: "You blocked your partner.".into() });
            }
        }
    }

    /// The generation of the current peer connection (stamped on every signal we send).
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// A signaling event at `now`.
    pub fn signaling(&mut self, now: Instant, ev: SignalingEvent) {
        match ev {
            SignalingEvent::State(SessionState::Connected) => {
                self.signaling_up = true;
                self.refresh_connected();
            }
            SignalingEvent::State(SessionState::Reconnecting { .. }) => {
                self.signaling_up = false;
                self.signaling_lost.get_or_insert(now);
                // Media may well keep flowing; only say so while the call needs signaling.
                if self.in_call() && self.peer_state != PeerState::Connected {
                    self.set_state(CallState::Reconnecting { side: Side::Local });
                }
            }
            SignalingEvent::State(_) => {}
            SignalingEvent::Welcome { ice_servers, resumed, restored, .. } => {
                self.ice_servers = ice_servers;
                if restored {
                    self.ask_to_wait_again();
                }
                if let Some(since) = self.signaling_lost.take().filter(|_| resumed) {
                    let mut outage = Outage::new(since, Failure::Signaling);
                    outage.escalate(if restored { Fix::SessionRestore } else { Fix::SessionResume });
                    self.report(outage.recovered(now));
                }
            }
            SignalingEvent::SessionLost => {
                if self.in_call() || self.state == CallState::Searching {
                    self.end_peer();
                    self.set_state(CallState::Ended { reason: "The connection to the server was lost.".into() });
                }
            }
            SignalingEvent::Message(msg) => self.server_message(now, msg),
            SignalingEvent::Refused { request, message, .. } => {
                self.out.push_back(Output::Notice(format!("The server refused {request}: {message}")));
                if request == "join_room" {
                    self.set_state(CallState::Idle);
                }
            }
            SignalingEvent::Rtt(_) => {}
            SignalingEvent::Failed(err) => {
                self.end_peer();
                self.set_state(CallState::Ended { reason: err.to_string() });
            }
        }
    }

    /// A server that rebuilt the session from its token (another node, or a restarted server)
    /// has its pairing, never its place in the queue or in a room by code: a wait asks again.
    fn ask_to_wait_again(&mut self) {
        let again = match &self.state {
            CallState::Searching => {
                let (interests, language) = self.search.clone();
                ClientMessage::JoinQueue { interests, language }
            }
            CallState::WaitingInRoom { code } => ClientMessage::JoinRoom { code: code.clone() },
            _ => return,
        };
        debug!("session restored by another server while waiting; asking for the wait again");
        self.out.push_back(Output::Signal(again));
    }

    fn server_message(&mut self, now: Instant, msg: ServerMessage) {
        match msg {
            ServerMessage::Matched { polite, ice_servers, peer, room, .. } => {
                info!(room = %room, peer = %peer.session_id, polite, "matched");
                self.end_peer();
                self.out.push_back(Output::PairingStarted);
                self.ice_servers = if ice_servers.is_empty() { self.ice_servers.clone() } else { ice_servers };
                self.replacements = 0;
                self.generation = 0;
                self.new_peer(now, polite);
                self.set_state(CallState::Connecting);
            }
            ServerMessage::Signal { payload, generation } => {
                let Some(polite) = self.negotiator.as_ref().map(Negotiator::is_polite) else { return };
                match generation {
                    Some(g) if g < self.generation => {
                        info!(
                            generation = g,
                            current = self.generation,
                            kind = payload.kind(),
                            "late signal of a replaced peer connection dropped"
                        );
                        self.out.push_back(Output::StaleSignalDropped);
                        return;
                    }
                    Some(g) if g > self.generation => {
                        info!(generation = g, "the partner moved to a fresh peer connection; following");
                        self.outage
                            .get_or_insert(Outage::new(now, Failure::PartnerNewConnection))
                            .escalate(Fix::NewPeerConnection);
                        self.out.push_back(Output::ClosePeer);
                        self.generation = g - 1;
                        self.new_peer(now, polite);
                        if payload == SignalPayload::Restart {
                            return;
                        }
                    }
                    _ => {}
                }
                let input = match payload {
                    SignalPayload::Description { description } => {
                        if description.sdp_type == SdpType::Answer {
                            self.offer_sent_at = None;
                        }
                        negotiation::Input::Remote(description)
                    }
                    SignalPayload::Candidate { candidate } => negotiation::Input::Candidate(candidate),
                    SignalPayload::EndOfCandidates => return,
                    SignalPayload::Restart => negotiation::Input::RestartRequested,
                };
                self.negotiate(now, input);
            }
            ServerMessage::PeerReconnecting { .. } => {
                self.peer_away = true;
                if self.in_call() && self.peer_state != PeerState::Connected {
                    self.set_state(CallState::Reconnecting { side: Side::Peer });
                }
            }
            ServerMessage::PeerResumed => {
                self.peer_away = false;
                self.refresh_connected();
            }
            // About a call we already left (hung up, pressed Next): nothing to do.
            ServerMessage::PeerLeft { reason } if !self.in_call() => {
                debug!(?reason, "peer_left for a call already left; ignored");
            }
            ServerMessage::PeerLeft { reason } => {
                self.end_peer();
                let text = match reason {
                    PeerLeftReason::Left => "Your partner left.",
                    PeerLeftReason::Next => "Your partner moved on to someone else.",
                    PeerLeftReason::Timeout => "Your partner's connection was lost.",
                    PeerLeftReason::Blocked | PeerLeftReason::Reported => "The call was ended by your partner.",
                    PeerLeftReason::ServerShutdown => "The server is restarting.",
                };
                match (&self.state, reason) {
                    // `next` re-queues us on the server: we are searching again.
                    (_, PeerLeftReason::Next) => {
                        self.out.push_back(Output::Notice(text.into()));
                        self.set_state(CallState::Searching);
                    }
                    _ => self.set_state(CallState::Ended { reason: text.into() }),
                }
            }
            ServerMessage::Queued { .. } => {
                if !self.in_call() {
                    self.set_state(CallState::Searching);
                }
            }
            ServerMessage::RoomJoined { code } => {
                if !self.in_call() {
                    self.set_state(CallState::WaitingInRoom { code });
                }
            }
            ServerMessage::IceServers { ice_servers } => self.ice_servers = ice_servers,
            ServerMessage::Welcome { .. }
            | ServerMessage::Token { .. }
            | ServerMessage::Ok
            | ServerMessage::Pong { .. }
            | ServerMessage::Error { .. } => {}
        }
    }

    /// The peer connection's state changed.
    pub fn peer_state(&mut self, now: Instant, state: PeerState) {
        if self.negotiator.is_none() {
            return;
        }
        self.peer_state = state;
        let side = if self.peer_away { Side::Peer } else { Side::Local };
        match state {
            PeerState::Connected => {
                self.disconnected_since = None;
                self.restart_started = None;
                self.connecting_since = None;
                self.replacements = 0;
                if let Some(outage) = self.outage.take() {
                    self.report(outage.recovered(now));
                }
                self.refresh_connected();
            }
            PeerState::Disconnected => {
                self.disconnected_since.get_or_insert(now);
                if self.connecting_since.is_none() {
                    self.outage.get_or_insert(Outage::new(now, Failure::IceDisconnected));
                }
                self.set_state(CallState::Reconnecting { side });
            }
            PeerState::Failed => {
                if self.connecting_since.is_none() {
                    self.outage.get_or_insert(Outage::new(now, Failure::IceFailed));
                }
                self.set_state(CallState::Reconnecting { side });
                self.restart_ice(now);
            }
            PeerState::Connecting => {}
        }
    }

    /// This machine's network addresses changed at `now`. If one went away (a new network, a
    /// new lease), the media path may be gone without ICE knowing yet, and the connection's
    /// sockets are bound to addresses that no longer exist: move to a fresh peer connection at
    /// once (bound to the addresses there are now; the partner follows its generation). An
    /// address that only appeared changes nothing that works.
    pub fn network_changed(&mut self, now: Instant, address_lost: bool) {
        if !address_lost || self.negotiator.is_none() {
            return;
        }
        info!("a local address went away; moving media to a fresh peer connection");
        self.replace_peer(now, Failure::NetworkChanged);
    }

    /// The keepalive heard nothing from the partner for a while at `now`, although ICE still
    /// says connected: handled as a lost path (ICE restart after the grace, and so on).
    pub fn media_silent(&mut self, now: Instant) {
        if self.negotiator.is_none() || self.peer_state != PeerState::Connected {
            return;
        }
        info!("the partner went silent on the control channel");
        self.outage.get_or_insert(Outage::new(now, Failure::KeepaliveSilent));
        self.peer_state(now, PeerState::Disconnected);
    }

    /// The driver finished (or failed) the last negotiation action at `now`.
    pub fn negotiation_result(&mut self, now: Instant, result: Result<(), String>) {
        if std::mem::take(&mut self.offering) && result.is_ok() {
            self.offer_sent_at = Some(now);
        }
        self.negotiate(
            now,
            match result {
                Ok(()) => negotiation::Input::Done,
                Err(e) => negotiation::Input::Failed(e),
            },
        );
    }

    /// The peer connection wants a negotiation (tracks changed).
    pub fn negotiation_needed(&mut self, now: Instant) {
        self.negotiate(now, negotiation::Input::NegotiationNeeded { ice_restart: false });
    }

    /// When [`CallMachine::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let waits = self.wait_factor();
        [
            self.restart_started.map(|t| t + RESTART_TIMEOUT * waits),
            self.disconnected_since.filter(|_| self.restart_started.is_none()).map(|t| t + DISCONNECTED_GRACE),
            self.connecting_since.map(|t| t + CONNECT_TIMEOUT * waits),
            self.offer_sent_at.map(|t| t + OFFER_TIMEOUT),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs what is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let waits = self.wait_factor();
        // A fresh connection needs both sides on the server; until then the current one is
        // kept (it may well come back by itself when the network does) and the timer re-armed.
        let reachable = self.signaling_up && !self.peer_away;
        if self.restart_started.is_some_and(|t| now >= t + RESTART_TIMEOUT * waits) {
            if reachable {
                info!("ICE restart did not recover the media path; replacing the peer connection");
                self.replace_peer(now, Failure::IceFailed);
            } else {
                self.restart_started = Some(now);
            }
        } else if self.connecting_since.is_some_and(|t| now >= t + CONNECT_TIMEOUT * waits) {
            if reachable {
                info!(generation = self.generation, "the peer connection did not connect in time; replacing it");
                self.replace_peer(now, Failure::ConnectTimeout);
            } else {
                self.connecting_since = Some(now);
            }
        } else if self.offer_sent_at.is_some_and(|t| now >= t + OFFER_TIMEOUT) {
            if reachable {
                info!("our offer got no answer; replacing the peer connection");
                self.replace_peer(now, Failure::OfferUnanswered);
            } else {
                // The server holds the offer for the partner; wait for both to be back.
                self.offer_sent_at = Some(now);
            }
        } else if self.restart_started.is_none()
            && self.disconnected_since.is_some_and(|t| now >= t + DISCONNECTED_GRACE)
        {
            self.restart_ice(now);
        }
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The impolite side decides on a fresh connection; the polite side waits longer, so it
    /// normally follows (and still decides if the impolite side never does).
    fn wait_factor(&self) -> u32 {
        if self.negotiator.as_ref().is_some_and(Negotiator::is_polite) { POLITE_WAIT_FACTOR } else { 1 }
    }

    fn restart_ice(&mut self, now: Instant) {
        if self.restart_started.is_some() {
            return;
        }
        self.restart_started = Some(now);
        if let Some(outage) = self.outage.as_mut() {
            outage.escalate(Fix::IceRestart);
        }
        info!("media path lost; restarting ICE");
        self.negotiate(now, negotiation::Input::NegotiationNeeded { ice_restart: true });
    }

    /// Creates the next generation's peer connection (the impolite side offers).
    fn new_peer(&mut self, now: Instant, polite: bool) {
        self.generation += 1;
        self.negotiator = Some(Negotiator::new(polite));
        self.peer_state = PeerState::Connecting;
        self.disconnected_since = None;
        self.restart_started = None;
        self.offer_sent_at = None;
        self.offering = false;
        self.connecting_since = Some(now);
        self.out.push_back(Output::CreatePeer { polite, ice_servers: self.ice_servers.clone() });
        if !polite {
            self.negotiate(now, negotiation::Input::NegotiationNeeded { ice_restart: false });
        }
    }

    /// Decides on a fresh peer connection in this pairing and tells the partner (a `restart`
    /// signal of the new generation), or gives the call up after too many.
    fn replace_peer(&mut self, now: Instant, failed: Failure) {
        let Some(polite) = self.negotiator.as_ref().map(Negotiator::is_polite) else { return };
        if self.replacements >= MAX_REPLACEMENTS {
            info!(replacements = self.replacements, "no media path after fresh peer connections; giving up");
            self.end_peer();
            self.set_state(CallState::Ended { reason: "Could not connect to your partner.".into() });
            return;
        }
        self.replacements += 1;
        self.outage.get_or_insert(Outage::new(now, failed)).escalate(Fix::NewPeerConnection);
        self.out.push_back(Output::ClosePeer);
        self.out.push_back(Output::Signal(ClientMessage::Signal {
            payload: SignalPayload::Restart,
            generation: Some(self.generation + 1),
        }));
        self.new_peer(now, polite);
    }

    fn negotiate(&mut self, now: Instant, input: negotiation::Input) {
        let Some(n) = self.negotiator.as_mut() else { return };
        n.handle(input);
        while let Some(action) = n.poll_action() {
            if let negotiation::Action::GiveUp(_) = action {
                self.replace_peer(now, Failure::OfferUnanswered);
                return;
            }
            self.offering = matches!(action, negotiation::Action::MakeOffer { .. });
            self.out.push_back(Output::Negotiate(action));
        }
    }

    fn report(&mut self, recovery: Recovery) {
        info!(failed = ?recovery.failed, fixed_by = ?recovery.fixed_by, took_ms = recovery.took.as_millis() as u64, "recovered");
        self.out.push_back(Output::Recovered(recovery));
    }

    fn in_call(&self) -> bool {
        matches!(self.state, CallState::Connecting | CallState::Connected | CallState::Reconnecting { .. })
    }

    fn refresh_connected(&mut self) {
        if self.negotiator.is_some() && self.peer_state == PeerState::Connected {
            self.set_state(CallState::Connected);
        }
    }

    fn end_peer(&mut self) {
        if self.negotiator.take().is_some() {
            self.out.push_back(Output::ClosePeer);
            self.out.push_back(Output::PairingEnded);
        }
        self.disconnected_since = None;
        self.restart_started = None;
        self.connecting_since = None;
        self.offer_sent_at = None;
        self.offering = false;
        self.outage = None;
        self.peer_away = false;
    }

    fn set_state(&mut self, state: CallState) {
        if self.state != state {
            info!(?state, "call state");
            self.state = state.clone();
            self.out.push_back(Output::State(state));
        }
    }
}
