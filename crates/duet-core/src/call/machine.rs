//! The call lifecycle as a sans-IO state machine.
//!
//! It turns application commands, signaling events and peer-connection events into
//! signaling messages, peer-connection actions and application events: searching, matched,
//! connecting, connected, reconnecting (ours or the partner's), ended with a reason. Media
//! failures escalate as DESIGN.md describes: ICE `disconnected` for a while, or `failed`,
//! triggers an ICE restart; a restart that does not recover in time ends in a fresh peer
//! connection in the same room; a partner that does not come back ends the call.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use duet_proto::{ClientMessage, IceServer, PeerLeftReason, ServerMessage, SignalPayload};
use tracing::info;

use crate::negotiation::{self, Negotiator};
use crate::signaling::{SessionState, SignalingEvent};

/// How long ICE may stay `disconnected` before an ICE restart.
pub const DISCONNECTED_GRACE: Duration = Duration::from_secs(2);
/// How long an ICE restart may take before the peer connection is replaced.
pub const RESTART_TIMEOUT: Duration = Duration::from_secs(10);

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

    /// A signaling event.
    pub fn signaling(&mut self, ev: SignalingEvent) {
        match ev {
            SignalingEvent::State(SessionState::Connected) => {
                self.signaling_up = true;
                self.refresh_connected();
            }
            SignalingEvent::State(SessionState::Reconnecting { .. }) => {
                self.signaling_up = false;
                // Media may well keep flowing; only say so while the call needs signaling.
                if self.in_call() && self.peer_state != PeerState::Connected {
                    self.set_state(CallState::Reconnecting { side: Side::Local });
                }
            }
            SignalingEvent::State(_) => {}
            SignalingEvent::Welcome { ice_servers, .. } => self.ice_servers = ice_servers,
            SignalingEvent::SessionLost => {
                if self.in_call() || self.state == CallState::Searching {
                    self.end_peer();
                    self.set_state(CallState::Ended { reason: "The connection to the server was lost.".into() });
                }
            }
            SignalingEvent::Message(msg) => self.server_message(msg),
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

    fn server_message(&mut self, msg: ServerMessage) {
        match msg {
            ServerMessage::Matched { polite, ice_servers, peer, room, .. } => {
                info!(room = %room, peer = %peer.session_id, polite, "matched");
                self.end_peer();
                let ice = if ice_servers.is_empty() { self.ice_servers.clone() } else { ice_servers };
                self.negotiator = Some(Negotiator::new(polite));
                self.peer_state = PeerState::Connecting;
                self.out.push_back(Output::CreatePeer { polite, ice_servers: ice });
                self.set_state(CallState::Connecting);
                // The impolite side (which waited longer) makes the first offer.
                if !polite {
                    self.negotiate(negotiation::Input::NegotiationNeeded { ice_restart: false });
                }
            }
            ServerMessage::Signal { payload } => {
                let input = match payload {
                    SignalPayload::Description { description } => negotiation::Input::Remote(description),
                    SignalPayload::Candidate { candidate } => negotiation::Input::Candidate(candidate),
                    SignalPayload::EndOfCandidates => return,
                    SignalPayload::Restart => negotiation::Input::RestartRequested,
                };
                self.negotiate(input);
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
        match state {
            PeerState::Connected => {
                self.disconnected_since = None;
                self.restart_started = None;
                self.refresh_connected();
            }
            PeerState::Disconnected => {
                self.disconnected_since.get_or_insert(now);
                self.set_state(CallState::Reconnecting { side: if self.peer_away { Side::Peer } else { Side::Local } });
            }
            PeerState::Failed => {
                self.set_state(CallState::Reconnecting { side: if self.peer_away { Side::Peer } else { Side::Local } });
                self.restart_ice(now);
            }
            PeerState::Connecting => {}
        }
    }

    /// The driver finished (or failed) the last negotiation action.
    pub fn negotiation_result(&mut self, result: Result<(), String>) {
        self.negotiate(match result {
            Ok(()) => negotiation::Input::Done,
            Err(e) => negotiation::Input::Failed(e),
        });
    }

    /// The peer connection wants a negotiation (tracks changed).
    pub fn negotiation_needed(&mut self) {
        self.negotiate(negotiation::Input::NegotiationNeeded { ice_restart: false });
    }

    /// When [`CallMachine::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.disconnected_since, self.restart_started) {
            (_, Some(t)) => Some(t + RESTART_TIMEOUT),
            (Some(t), None) => Some(t + DISCONNECTED_GRACE),
            (None, None) => None,
        }
    }

    /// Runs what is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(t) = self.restart_started {
            if now >= t + RESTART_TIMEOUT {
                info!("ICE restart did not recover the media path; replacing the peer connection");
                self.replace_peer();
            }
        } else if self.disconnected_since.is_some_and(|t| now >= t + DISCONNECTED_GRACE) {
            self.restart_ice(now);
        }
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    fn restart_ice(&mut self, now: Instant) {
        if self.restart_started.is_some() {
            return;
        }
        self.restart_started = Some(now);
        info!("media path lost; restarting ICE");
        self.negotiate(negotiation::Input::NegotiationNeeded { ice_restart: true });
    }

    fn replace_peer(&mut self) {
        let Some(old) = self.negotiator.take() else { return };
        let polite = old.is_polite();
        self.out.push_back(Output::ClosePeer);
        self.negotiator = Some(Negotiator::new(polite));
        self.peer_state = PeerState::Connecting;
        self.disconnected_since = None;
        self.restart_started = None;
        self.out.push_back(Output::CreatePeer { polite, ice_servers: self.ice_servers.clone() });
        if !polite {
            self.negotiate(negotiation::Input::NegotiationNeeded { ice_restart: false });
        }
    }

    fn negotiate(&mut self, input: negotiation::Input) {
        let Some(n) = self.negotiator.as_mut() else { return };
        n.handle(input);
        while let Some(action) = n.poll_action() {
            if let negotiation::Action::GiveUp(_) = action {
                self.replace_peer();
                return;
            }
            self.out.push_back(Output::Negotiate(action));
        }
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
        }
        self.disconnected_since = None;
        self.restart_started = None;
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
