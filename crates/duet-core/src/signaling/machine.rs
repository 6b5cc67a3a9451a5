//! The client side of protocol v1 as a sans-IO state machine.
//!
//! It owns the session (token, sequence numbers, acks), message ids and their resend after a
//! resume, the heartbeat, dead-socket detection and reconnection with backoff. It never
//! touches a socket or a clock: the driver ([`super::client`]) opens sockets when told
//! ([`Output::Connect`]), passes frames in, writes [`Output::Transmit`] text out, and calls
//! [`SignalingMachine::handle_timeout`] at [`SignalingMachine::poll_timeout`].

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use duet_proto::{
    ClientFrame, ClientInfo, ClientMessage, ErrorCode, IceServer, PROTOCOL_VERSION, ServerMessage, parse_server_frame,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tracing::{debug, info, warn};

use super::Backoff;

/// The shortest heartbeat period taken from a server.
pub const MIN_HEARTBEAT: Duration = Duration::from_millis(200);
/// The longest heartbeat period taken from a server (a longer one would let a dead socket
/// go unnoticed, and a huge one overflow the deadlines computed from it).
pub const MAX_HEARTBEAT: Duration = Duration::from_secs(60);

/// Tunables of the signaling client.
#[derive(Debug, Clone)]
pub struct SignalingConfig {
    /// How the client introduces itself.
    pub client: ClientInfo,
    /// Reconnect delays.
    pub backoff: Backoff,
    /// Connection attempts before giving up when the server was never reached.
    pub initial_attempts: u32,
    /// Longest time from opening a socket to `welcome`.
    pub connect_timeout: Duration,
    /// Send a standalone `ack` after this many unacknowledged messages...
    pub ack_every: u32,
    /// ...or this long after the first one.
    pub ack_delay: Duration,
    /// Seed for the reconnect jitter (`None`: from the OS).
    pub jitter_seed: Option<u64>,
    /// PEM file of CA certificates trusted for `wss://`, in addition to the platform's roots.
    pub ca_cert: Option<PathBuf>,
}

impl Default for SignalingConfig {
    fn default() -> Self {
        Self {
            client: ClientInfo { name: "duet".into(), version: None, platform: None, device: None },
            backoff: Backoff::default(),
            initial_attempts: 3,
            connect_timeout: Duration::from_secs(5),
            ack_every: 16,
            ack_delay: Duration::from_millis(300),
            jitter_seed: None,
            ca_cert: None,
        }
    }
}

/// Where the signaling connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// First connection in progress.
    Connecting,
    /// Welcomed: messages flow.
    Connected,
    /// The socket was lost; retrying (the session is resumed if the server still has it).
    Reconnecting {
        /// Retry number, from 1.
        attempt: u32,
    },
    /// Closed by the application.
    Closed,
    /// Gave up (see the `Failed` event for why).
    Failed,
}

/// Why signaling gave up. The messages are meant for users.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignalingError {
    /// The server could not be reached at all.
    #[error("cannot reach the Duet server: {0}")]
    Unreachable(String),
    /// The server speaks another protocol version.
    #[error("the server speaks a different Duet protocol: {0}")]
    VersionMismatch(String),
    /// The server's TLS certificate failed verification (unknown issuer, expired, issued for
    /// another name...): retrying cannot help.
    #[error("cannot verify the server's certificate ({url}): {reason}")]
    Certificate {
        /// The server URL.
        url: String,
        /// What is wrong with the certificate.
        reason: String,
    },
    /// TLS could not be set up on this side (an unusable CA certificate file, no trusted
    /// certificates at all, a host name TLS cannot use).
    #[error("cannot set up TLS for {url}: {reason}")]
    TlsSetup {
        /// The server URL.
        url: String,
        /// Why.
        reason: String,
    },
}

/// What the application learns from signaling.
#[derive(Debug, Clone, PartialEq)]
pub enum SignalingEvent {
    /// The connection state changed.
    State(SessionState),
    /// A session was established (`resumed`: the previous one was taken back).
    Welcome {
        /// Public session id.
        session_id: String,
        /// True when the old session (and its call) survived.
        resumed: bool,
        /// True when a restarted server rebuilt it from its token.
        restored: bool,
        /// ICE servers from the server.
        ice_servers: Vec<IceServer>,
    },
    /// The previous session could not be resumed: a new one replaced it and any call of the
    /// old one is over.
    SessionLost,
    /// A matching/call message from the server (`queued`, `room_joined`, `matched`,
    /// `peer_reconnecting`, `peer_resumed`, `peer_left`, `signal`).
    Message(ServerMessage),
    /// The server refused one of our messages.
    Refused {
        /// The refused message's type.
        request: &'static str,
        /// Stable code.
        code: ErrorCode,
        /// Explanation.
        message: String,
    },
    /// Round-trip time of the last heartbeat.
    Rtt(Duration),
    /// Signaling gave up.
    Failed(SignalingError),
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Open a WebSocket now.
    Connect,
    /// Write this text frame.
    Transmit(String),
    /// Close the current socket.
    Disconnect,
    /// Tell the application.
    Event(SignalingEvent),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Socket {
    None,
    /// Socket requested or open, `welcome` not yet received.
    Opening {
        since: Instant,
        open: bool,
    },
    /// Welcomed.
    Ready,
}

struct Pending {
    msg: ClientMessage,
    sent: bool,
}

/// The signaling state machine. See the module docs.
pub struct SignalingMachine {
    cfg: SignalingConfig,
    rng: StdRng,
    state: SessionState,
    socket: Socket,
    token: Option<String>,
    heartbeat: Duration,
    highest_seq: u64,
    acked_seq: u64,
    unacked: u32,
    first_unacked_at: Option<Instant>,
    next_id: u64,
    unanswered: BTreeMap<u64, Pending>,
    attempts: u32,
    welcomed_once: bool,
    reconnect_at: Option<Instant>,
    last_rx: Instant,
    last_ping: Instant,
    epoch: Instant,
    out: VecDeque<Output>,
}

impl SignalingMachine {
    /// A machine that starts by asking for a connection.
    pub fn new(cfg: SignalingConfig, now: Instant) -> Self {
        let rng = match cfg.jitter_seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        let mut m = Self {
            cfg,
            rng,
            state: SessionState::Connecting,
            socket: Socket::Opening { since: now, open: false },
            token: None,
            heartbeat: Duration::from_secs(5),
            highest_seq: 0,
            acked_seq: 0,
            unacked: 0,
            first_unacked_at: None,
            next_id: 1,
            unanswered: BTreeMap::new(),
            attempts: 0,
            welcomed_once: false,
            reconnect_at: None,
            last_rx: now,
            last_ping: now,
            epoch: now,
            out: VecDeque::new(),
        };
        m.out.push_back(Output::Connect);
        m.out.push_back(Output::Event(SignalingEvent::State(SessionState::Connecting)));
        m
    }

    /// The current state.
    pub fn state(&self) -> SessionState {
        self.state
    }

    /// Sends a message (now if connected, else after the next `welcome`); returns its id.
    /// Until the server answers it, the message is re-sent after every resume.
    pub fn send(&mut self, msg: ClientMessage) -> Option<u64> {
        if matches!(self.state, SessionState::Closed | SessionState::Failed) {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        let sent = self.socket == Socket::Ready;
        if sent {
            self.transmit(Some(id), msg.clone());
        }
        self.unanswered.insert(id, Pending { msg, sent });
        Some(id)
    }

    /// The application ends signaling.
    pub fn close(&mut self) {
        if self.socket != Socket::None {
            self.out.push_back(Output::Disconnect);
        }
        self.socket = Socket::None;
        self.reconnect_at = None;
        self.set_state(SessionState::Closed);
    }

    /// The socket the driver opened after [`Output::Connect`] is open.
    pub fn socket_opened(&mut self, now: Instant) {
        if !matches!(self.socket, Socket::Opening { .. }) {
            return;
        }
        self.socket = Socket::Opening { since: now, open: true };
        self.last_rx = now;
        let resume_token = self.token.clone();
        let ack = (resume_token.is_some() && self.highest_seq > 0).then_some(self.highest_seq);
        let hello =
            ClientMessage::Hello { version: PROTOCOL_VERSION, resume_token, client: Some(self.cfg.client.clone()) };
        self.out.push_back(Output::Transmit(ClientFrame { id: None, ack, msg: hello }.to_json()));
    }

    /// This machine's network changed: the socket may be dead without anything saying so.
    /// Reconnect (and resume) at once, without backoff.
    pub fn network_changed(&mut self, now: Instant) {
        if matches!(self.state, SessionState::Closed | SessionState::Failed) {
            return;
        }
        if self.socket != Socket::None {
            self.out.push_back(Output::Disconnect);
            self.socket = Socket::None;
        }
        info!("network changed; reconnecting signaling now");
        self.reconnect_at = Some(now);
        if self.welcomed_once {
            self.set_state(SessionState::Reconnecting { attempt: self.attempts.max(1) });
        }
    }

    /// The socket closed or failed (or could not be opened).
    pub fn socket_closed(&mut self, now: Instant, reason: &str) {
        if self.socket == Socket::None || matches!(self.state, SessionState::Closed | SessionState::Failed) {
            self.socket = Socket::None;
            return;
        }
        self.socket = Socket::None;
        self.attempts += 1;
        if !self.welcomed_once && self.attempts >= self.cfg.initial_attempts {
            warn!(attempts = self.attempts, reason, "server unreachable; giving up");
            self.fail(SignalingError::Unreachable(reason.to_string()));
            return;
        }
        let unit: f64 = self.rng.random();
        let delay = self.cfg.backoff.delay(self.attempts - 1, unit);
        info!(attempt = self.attempts, delay_ms = delay.as_millis() as u64, reason, "signaling socket lost; retrying");
        self.reconnect_at = Some(now + delay);
        if self.welcomed_once {
            self.set_state(SessionState::Reconnecting { attempt: self.attempts });
        }
    }

    /// The socket could not be opened and retrying cannot help (the server's certificate is
    /// not trusted, TLS cannot be set up): give up now with `err`, whatever the state.
    pub fn give_up(&mut self, err: SignalingError) {
        if matches!(self.state, SessionState::Closed | SessionState::Failed) {
            return;
        }
        warn!(error = %err, "signaling cannot connect; giving up");
        self.socket = Socket::None;
        self.fail(err);
    }

    /// A text frame arrived.
    pub fn handle_text(&mut self, now: Instant, text: &str) {
        self.last_rx = now;
        let frame = match parse_server_frame(text) {
            Ok(f) => f,
            Err(e) => {
                warn!(error = %e, "unreadable frame from the server; ignored");
                return;
            }
        };
        if let ServerMessage::Welcome { .. } = frame.msg {
            self.on_welcome(now, frame.seq, frame.msg);
            return;
        }
        if frame.seq != 0 {
            if frame.seq <= self.highest_seq {
                debug!(seq = frame.seq, "duplicate from a replay; skipped");
                return;
            }
            self.highest_seq = frame.seq;
            self.unacked += 1;
            self.first_unacked_at.get_or_insert(now);
        }
        let request = frame.reply_to.and_then(|id| self.unanswered.remove(&id)).map(|p| p.msg.kind());
        match frame.msg {
            ServerMessage::Ok => {}
            ServerMessage::Token { resume_token } => self.token = Some(resume_token),
            ServerMessage::Pong { ts } => {
                // The server echoes our timestamp; one from the future is not ours.
                let sent = ts.and_then(|ts| self.epoch.checked_add(Duration::from_millis(ts))).filter(|s| *s <= now);
                if let Some(sent) = sent {
                    self.out.push_back(Output::Event(SignalingEvent::Rtt(now - sent)));
                }
            }
            ServerMessage::Error { code: ErrorCode::VersionMismatch, message } => {
                self.fail(SignalingError::VersionMismatch(message));
            }
            ServerMessage::Error { code, message } => {
                warn!(code = code.as_str(), message = ?message.chars().take(120).collect::<String>(), "server refused a message");
                let request = request.unwrap_or("unknown");
                self.out.push_back(Output::Event(SignalingEvent::Refused { request, code, message }));
            }
            other => self.out.push_back(Output::Event(SignalingEvent::Message(other))),
        }
        if self.unacked >= self.cfg.ack_every {
            self.send_ack();
        }
    }

    fn on_welcome(&mut self, now: Instant, seq: u64, welcome: ServerMessage) {
        let ServerMessage::Welcome {
            session_id,
            resume_token: token,
            heartbeat_ms,
            ice_servers,
            resumed,
            restored,
            ..
        } = welcome
        else {
            return;
        };
        let lost = self.token.is_some() && !resumed;
        if lost {
            // The old session is gone: its pending messages belonged to it.
            self.unanswered.clear();
        }
        // A new session, or one a restarted server rebuilt from its token: the server's
        // sequence numbers start again here.
        if !resumed || restored {
            self.highest_seq = seq;
            self.acked_seq = seq;
            self.unacked = 0;
            self.first_unacked_at = None;
        }
        self.token = Some(token);
        self.heartbeat = Duration::from_millis(heartbeat_ms).clamp(MIN_HEARTBEAT, MAX_HEARTBEAT);
        self.socket = Socket::Ready;
        self.attempts = 0;
        self.welcomed_once = true;
        self.reconnect_at = None;
        self.last_ping = now;
        info!(session = ?session_id.chars().take(64).collect::<String>(), resumed, restored, "signaling session ready");
        self.set_state(SessionState::Connected);
        if lost {
            self.out.push_back(Output::Event(SignalingEvent::SessionLost));
        }
        self.out.push_back(Output::Event(SignalingEvent::Welcome { session_id, resumed, restored, ice_servers }));
        // Everything not yet answered goes (again): the server answers repeated ids without
        // acting twice.
        let pending: Vec<(u64, ClientMessage)> = self.unanswered.iter().map(|(id, p)| (*id, p.msg.clone())).collect();
        for (id, msg) in pending {
            self.transmit(Some(id), msg);
            if let Some(p) = self.unanswered.get_mut(&id) {
                p.sent = true;
            }
        }
    }

    /// When [`SignalingMachine::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        if let Some(at) = self.reconnect_at {
            consider(at);
        }
        match self.socket {
            Socket::Opening { since, .. } => consider(since + self.cfg.connect_timeout),
            Socket::Ready => {
                consider(self.last_ping + self.ping_interval());
                consider(self.last_rx + self.dead_after());
                if let Some(first) = self.first_unacked_at {
                    consider(first + self.cfg.ack_delay);
                }
            }
            Socket::None => {}
        }
        next
    }

    /// Runs what is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.reconnect_at.is_some_and(|at| at <= now) {
            self.reconnect_at = None;
            self.socket = Socket::Opening { since: now, open: false };
            self.out.push_back(Output::Connect);
        }
        match self.socket {
            Socket::Opening { since, open } if now >= since + self.cfg.connect_timeout => {
                self.out.push_back(Output::Disconnect);
                let why = if open { "no welcome from the server" } else { "connection timed out" };
                self.socket_closed(now, why);
            }
            Socket::Ready => {
                if now >= self.last_rx + self.dead_after() {
                    self.out.push_back(Output::Disconnect);
                    self.socket_closed(now, "no heartbeat from the server");
                    return;
                }
                if now >= self.last_ping + self.ping_interval() {
                    self.last_ping = now;
                    let ts = now.saturating_duration_since(self.epoch).as_millis() as u64;
                    self.transmit(None, ClientMessage::Ping { ts: Some(ts) });
                }
                if self.first_unacked_at.is_some_and(|t| now >= t + self.cfg.ack_delay) {
                    self.send_ack();
                }
            }
            _ => {}
        }
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Pings at twice the rate the server asks for, so a dead socket shows within one
    /// heartbeat period.
    fn ping_interval(&self) -> Duration {
        self.heartbeat / 2
    }

    /// Silence from the server for this long means the socket is dead.
    fn dead_after(&self) -> Duration {
        self.heartbeat + self.heartbeat / 2
    }

    fn transmit(&mut self, id: Option<u64>, msg: ClientMessage) {
        let ack = (self.highest_seq > self.acked_seq).then_some(self.highest_seq);
        if ack.is_some() {
            self.mark_acked();
        }
        self.out.push_back(Output::Transmit(ClientFrame { id, ack, msg }.to_json()));
    }

    fn send_ack(&mut self) {
        if self.socket == Socket::Ready && self.highest_seq > self.acked_seq {
            let seq = self.highest_seq;
            self.mark_acked();
            self.out.push_back(Output::Transmit(ClientFrame::new(ClientMessage::Ack { seq }).to_json()));
        }
    }

    fn mark_acked(&mut self) {
        self.acked_seq = self.highest_seq;
        self.unacked = 0;
        self.first_unacked_at = None;
    }

    fn set_state(&mut self, state: SessionState) {
        if self.state != state {
            self.state = state;
            self.out.push_back(Output::Event(SignalingEvent::State(state)));
        }
    }

    fn fail(&mut self, err: SignalingError) {
        if self.socket != Socket::None {
            self.out.push_back(Output::Disconnect);
        }
        self.socket = Socket::None;
        self.reconnect_at = None;
        self.set_state(SessionState::Failed);
        self.out.push_back(Output::Event(SignalingEvent::Failed(err)));
    }
}
