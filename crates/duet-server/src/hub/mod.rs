//! The matching and session state machine, free of I/O.
//!
//! [`Hub`] takes [`Input`]s together with the current time ([`Now`]) and produces
//! [`Output`]s (text to send to a connection, connections to close) and a next deadline
//! ([`Hub::poll_timeout`]). It never reads a clock or touches a socket, so every behaviour
//! is unit-tested on simulated time (see `tests.rs`). The WebSocket driver in `crate::ws`
//! feeds it.

pub mod blocks;
mod cluster;
mod failover;
mod handover;
mod matching;
mod session;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
pub mod token;

pub use cluster::{Claimed, CodeOutcome, CodeReply, PeerEvent, PoolEntry, PoolMatch, PoolOp, RemoteMsg, Stamp};

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use duet_proto::{
    ClientFrame, ClientInfo, ClientMessage, ErrorCode, PROTOCOL_VERSION, PeerLeftReason, ProtoError, ServerFrame,
    ServerInfo, ServerMessage,
};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use serde::Serialize;
use tracing::{debug, info, warn};

use crate::turn::IceConfig;
use session::{Prefs, Session, State};
use token::{Claims, Pairing, TokenKey};

/// A client-supplied string as it may appear in a log: at most 40 characters (escaped by
/// logging it with `?`).
pub(crate) fn loggable(text: &str) -> String {
    const MAX: usize = 40;
    let mut out: String = text.chars().take(MAX).collect();
    if text.chars().nth(MAX).is_some() {
        out.push('…');
    }
    out
}

/// WebSocket close code sent to a socket that another socket of the same session replaced.
pub const CLOSE_REPLACED: u16 = 4000;
/// WebSocket close code sent when a connection was silent longer than the idle timeout.
pub const CLOSE_IDLE: u16 = 4001;
/// WebSocket close code ("going away") sent on server shutdown: clients reconnect (to this
/// server once it is back, or to another node) and resume their sessions with their tokens.
pub const CLOSE_SHUTDOWN: u16 = 1001;
/// A restarted server takes back sessions from tokens issued at most this long ago.
pub const MAX_RESTORE_AGE_SECS: u64 = 24 * 3600;

/// Identifies one WebSocket connection; assigned by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// The current time, as the driver (or a test) tells it.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Monotonic time, for every timeout.
    pub mono: Instant,
    /// Wall-clock seconds since the Unix epoch, for TURN credential expiry.
    pub unix_secs: u64,
}

/// Tunables of the hub.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Clients send `ping` at least this often.
    pub heartbeat: Duration,
    /// A connection silent for this long is closed (and its session starts its grace period).
    pub idle_timeout: Duration,
    /// How long a session survives without a socket.
    pub resume_grace: Duration,
    /// How long a queued client with interests/language waits for a partner who shares
    /// them before anyone will do.
    pub interest_wait: Duration,
    /// After `next`, the same pair is not matched again for this long.
    pub rematch_cooldown: Duration,
    /// Most unacknowledged messages kept per session for replay.
    pub max_unacked: usize,
    /// Most bytes of unacknowledged messages kept per session for replay.
    pub max_unacked_bytes: usize,
    /// ICE servers handed out.
    pub ice: IceConfig,
    /// Seed for session ids and tokens; `None` uses the operating system's randomness.
    pub rng_seed: Option<u64>,
    /// The key resume tokens are signed with. The same key after a restart lets clients take
    /// back their sessions and pairings; `None`: a random key per process (a restart ends them).
    pub resume_key: Option<TokenKey>,
    /// This node's id when several nodes share one pool (`--redis`): queued sessions go to the
    /// shared pool ([`Output::Pool`]) and partners on other nodes are reached with
    /// [`Output::Remote`]. `None` (the default): everything is matched in this process.
    pub cluster_node: Option<String>,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(12),
            resume_grace: Duration::from_secs(15),
            interest_wait: Duration::from_secs(3),
            rematch_cooldown: Duration::from_secs(30),
            max_unacked: 512,
            max_unacked_bytes: 1 << 20,
            ice: IceConfig::default(),
            rng_seed: None,
            resume_key: None,
            cluster_node: None,
        }
    }
}

/// Something that happened on a connection.
#[derive(Debug, Clone)]
pub enum Input {
    /// A WebSocket connection was accepted.
    Opened(ConnId),
    /// A valid frame arrived.
    Frame(ConnId, ClientFrame),
    /// A frame arrived that the driver refused (parse failure, limit, rate); the hub answers
    /// with an `error` and counts it.
    Refused(ConnId, ProtoError),
    /// The connection is gone.
    Closed(ConnId),
    /// The server is shutting down.
    Shutdown,
    /// The shared pool paired two sessions (at least one of them on this node).
    PoolMatched(Box<PoolMatch>),
    /// A message from another node.
    Remote(RemoteMsg),
    /// The store is reachable again and may have lost the pool: queued sessions re-enter it.
    PoolRejoin,
    /// The shared store's answer to a [`PoolOp::JoinCode`] of this node.
    CodeReply(Box<CodeReply>),
    /// The session directory's answer to a [`PoolOp::Claim`] of this node.
    Claimed(Box<Claimed>),
    /// The shared store's answer to a [`PoolOp::RestoreCode`] of this node.
    CodeRestored {
        /// The room code.
        code: String,
        /// The restored session's public id.
        session: String,
        /// Whether the room still held the session (and now names this node for it).
        kept: bool,
    },
    /// Another node's heartbeat ran out: it is taken for dead.
    NodeDown(String),
    /// A node taken for dead beats again.
    NodeUp(String),
    /// What a [`RemoteMsg::Salvage`] took from the old node's inbox for `session`, in order.
    Salvaged {
        /// The session's public id.
        session: String,
        /// The messages.
        messages: Vec<RemoteMsg>,
        /// The old node still beats and the salvage was not forced: nothing was taken (the node
        /// hands over what it read itself, answering [`RemoteMsg::Handover`]).
        node_alive: bool,
    },
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send this text frame on the connection.
    Send {
        /// The connection.
        conn: ConnId,
        /// The JSON text.
        text: Arc<str>,
    },
    /// Close the connection with this close frame.
    Close {
        /// The connection.
        conn: ConnId,
        /// WebSocket close code.
        code: u16,
        /// Close reason.
        reason: &'static str,
    },
    /// Carry out this request on the shared pool (only with [`HubConfig::cluster_node`]), in order.
    Pool(Box<PoolOp>),
    /// Deliver this message to another node (only with [`HubConfig::cluster_node`]), in order.
    Remote {
        /// The receiving node.
        node: String,
        /// The message.
        msg: Box<RemoteMsg>,
    },
}

/// ICE servers for the session a resume token names (`/api/webrtc/config`).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenIce {
    /// The session's public id.
    pub session: String,
    /// Whether this node holds the session (if not, only the session directory knows it is live).
    pub held_here: bool,
    /// The servers, with TURN credentials bound to the session.
    pub ice_servers: Vec<duet_proto::IceServer>,
}

/// Counters for `/api/webrtc/stats` and `/metrics`.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Stats {
    /// Live sessions (with or without a socket).
    pub sessions: usize,
    /// Sessions currently without a socket (in their grace period).
    pub sessions_detached: usize,
    /// Open WebSocket connections.
    pub connections: usize,
    /// Clients waiting in the matching queue.
    pub queue_length: usize,
    /// Rooms with at least one member.
    pub rooms: usize,
    /// Pairs matched since start.
    pub matches_total: u64,
    /// Sessions resumed with a token since start.
    pub resumes_total: u64,
    /// Sessions rebuilt from a token another server process signed (counted in `resumes_total` too).
    pub sessions_restored_total: u64,
    /// Pairings rebuilt after a restart because both partners came back.
    pub pairings_restored_total: u64,
    /// Sessions that ended because their grace period ran out.
    pub sessions_expired_total: u64,
    /// Connections closed for silence.
    pub idle_timeouts_total: u64,
    /// Signals relayed between peers.
    pub signals_relayed_total: u64,
    /// `restart` signals relayed (a side moved to a fresh peer connection, or asked for an ICE restart).
    pub restarts_relayed_total: u64,
    /// Reports received.
    pub reports_total: u64,
    /// Blocks received.
    pub blocks_total: u64,
    /// Frames received.
    pub frames_in_total: u64,
    /// Frames sent (including replays).
    pub frames_out_total: u64,
    /// `error` replies by code.
    pub errors_total: BTreeMap<ErrorCode, u64>,
    /// Requests for Redis refused because its queue was full (cluster mode; see
    /// `crate::backend::STORE_QUEUE`).
    pub store_backlog_refused_total: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// Check a connection for silence.
    Idle(ConnId),
    /// A detached session's grace period ends (if still detached in this epoch).
    Grace(u64, u64),
    /// Re-run matching for a queued session (interest wait over, or cooldown over).
    Rematch(u64, u64),
    /// A restored session's partner had this long to come back to the room.
    AwaitPartner(u64),
    /// The partner (this public id) on another node, whose node was taken for dead at this
    /// time, had this long to come back.
    AwaitRemote(u64, String, Instant),
    /// The wait for the previous node of a session (this public id) to hand it over ends at
    /// this time.
    Handover(String, Instant),
}

/// A `hello` as received, with its frame's id and ack.
struct Hello {
    id: Option<u64>,
    ack: Option<u64>,
    version: u32,
    token: Option<String>,
    client: Option<ClientInfo>,
}

/// What a `hello` whose session waits for the session directory needs to be answered.
struct PendingHello {
    id: Option<u64>,
    ack: Option<u64>,
    client: Option<ClientInfo>,
}

/// A token's session to restore once the session directory says it has not ended (cluster
/// mode; see [`Hub::claimed`]).
struct PendingRestore {
    conn: ConnId,
    hello: PendingHello,
    claims: Claims,
    /// Messages from partners on other nodes that came before the directory answered (a
    /// partner restored elsewhere at the same moment may ask to rejoin first), in order.
    early: Vec<RemoteMsg>,
}

struct Conn {
    session: Option<u64>,
    last_seen: Instant,
    /// Its `hello` waits for the session directory ([`PendingRestore`]).
    restoring: bool,
}

/// A room: a random pair, or a room by code (which may wait with one member).
struct Room {
    name: String,
    code: Option<String>,
    members: Vec<u64>,
    /// Restored after a restart with one member: the public id of the partner expected back,
    /// and whether the member there is polite.
    awaiting: Option<(String, bool)>,
    /// The partner of the only local member, on another node (a random pair across nodes).
    remote: Option<cluster::RemotePeer>,
    /// While `awaiting`: the member's signals for the partner expected back (at most
    /// [`failover::MAX_HELD`]), delivered when it is.
    held: Vec<PeerEvent>,
}

impl Room {
    fn new(name: String, code: Option<String>, members: Vec<u64>) -> Self {
        Self { name, code, members, awaiting: None, remote: None, held: Vec::new() }
    }
}

/// The matching/session state machine. See the module docs.
pub struct Hub {
    cfg: HubConfig,
    server_version: String,
    rng: StdRng,
    conns: HashMap<ConnId, Conn>,
    sessions: HashMap<u64, Session>,
    /// Session keys by public id.
    by_public: HashMap<String, u64>,
    token_key: TokenKey,
    /// Identifies this process in the tokens it signs (a token from another process may be restored).
    instance: u64,
    /// Blocks between devices (they outlive sessions).
    device_blocks: blocks::DeviceBlocks,
    rooms: HashMap<u64, Room>,
    codes: HashMap<String, u64>,
    /// Waiting sessions by ticket (ascending ticket = longest waiting first).
    queue: BTreeMap<u64, u64>,
    next_key: u64,
    next_ticket: u64,
    next_room: u64,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    out: VecDeque<Output>,
    stats: Stats,
    shutting_down: bool,
    /// Sessions restored here from another node, by public id: that node.
    moved_in: HashMap<String, String>,
    /// Sessions whose previous node hands over what it read for them, by public id (see
    /// `handover.rs`).
    handovers: HashMap<String, handover::Handover>,
    /// How many messages this node sent to partners on other nodes (the last [`Stamp`]).
    stamped: u64,
    /// Sessions that moved from here to another node (the latest [`failover::MAX_MOVED`]).
    moved_out: failover::MovedOut,
    /// Tokens' sessions waiting for the session directory before they are restored, by public id.
    restoring: HashMap<String, PendingRestore>,
}

impl Hub {
    /// A hub with this configuration; `server_version` goes into `welcome`.
    pub fn new(cfg: HubConfig, server_version: impl Into<String>) -> Self {
        let mut rng = match cfg.rng_seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        let token_key = cfg.resume_key.clone().unwrap_or_else(|| {
            let mut key = vec![0u8; 32];
            rng.fill_bytes(&mut key);
            TokenKey::new(key)
        });
        let instance = rng.next_u64();
        Self {
            cfg,
            server_version: server_version.into(),
            rng,
            conns: HashMap::new(),
            sessions: HashMap::new(),
            by_public: HashMap::new(),
            token_key,
            instance,
            device_blocks: blocks::DeviceBlocks::default(),
            rooms: HashMap::new(),
            codes: HashMap::new(),
            queue: BTreeMap::new(),
            next_key: 1,
            next_ticket: 1,
            next_room: 1,
            timers: BinaryHeap::new(),
            out: VecDeque::new(),
            stats: Stats::default(),
            shutting_down: false,
            moved_in: HashMap::new(),
            handovers: HashMap::new(),
            stamped: 0,
            moved_out: failover::MovedOut::default(),
            restoring: HashMap::new(),
        }
    }

    /// ICE servers, with TURN credentials bound to the session, for the live session whose
    /// resume token this is; `None` for anything else. On a node of a service the session may
    /// live on another node: then the grant says so, and the caller asks the session directory.
    pub fn ice_servers_for_token(&self, now: Now, token: &str) -> Option<TokenIce> {
        let claims = self.token_key.verify(token)?;
        let held_here = self.by_public.contains_key(&claims.session);
        let elsewhere = self.clustered() && now.unix_secs.saturating_sub(claims.issued) <= MAX_RESTORE_AGE_SECS;
        (held_here || elsewhere).then(|| TokenIce {
            ice_servers: self.cfg.ice.servers_for(&claims.session, now.unix_secs),
            session: claims.session,
            held_here,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &HubConfig {
        &self.cfg
    }

    /// Feeds one input.
    pub fn handle(&mut self, now: Now, input: Input) {
        match input {
            Input::Opened(conn) => {
                if self.shutting_down {
                    self.out.push_back(Output::Close { conn, code: CLOSE_SHUTDOWN, reason: "server shutting down" });
                    return;
                }
                self.conns.insert(conn, Conn { session: None, last_seen: now.mono, restoring: false });
                self.timers.push(Reverse((now.mono + self.cfg.idle_timeout, Timer::Idle(conn))));
            }
            Input::Frame(conn, frame) => self.on_frame(now, conn, frame),
            Input::Refused(conn, err) => {
                self.stats.frames_in_total += 1;
                let key = self.touch(now, conn);
                self.fail(conn, key, err.reply_to, err.code, err.message);
            }
            Input::Closed(conn) => self.on_closed(now, conn),
            Input::Shutdown => self.shutdown(),
            Input::PoolMatched(m) => self.pool_matched(now, *m),
            Input::Remote(msg) => self.remote(now, msg),
            Input::PoolRejoin => self.pool_rejoin(now),
            Input::CodeReply(r) => self.code_reply(now, *r),
            Input::Claimed(c) => self.claimed(now, *c),
            Input::CodeRestored { code, session, kept } => self.code_restored(now, &code, &session, kept),
            Input::NodeDown(node) => self.node_down(now, &node),
            Input::NodeUp(node) => self.node_up(&node),
            Input::Salvaged { session, messages, node_alive } => self.salvaged(now, &session, messages, node_alive),
        }
    }

    /// The next output, if any. Call until `None` after every input or timeout.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Hub::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Now) {
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now.mono {
                break;
            }
            let Some(Reverse((_, timer))) = self.timers.pop() else { break };
            match timer {
                Timer::Idle(conn) => self.check_idle(now, conn),
                Timer::Grace(key, epoch) => {
                    let expired = self.sessions.get(&key).is_some_and(|s| s.conn.is_none() && s.detach_epoch == epoch);
                    if expired {
                        self.expire(now, key);
                    }
                }
                Timer::AwaitPartner(room) => self.partner_not_back(now, room, true),
                Timer::AwaitRemote(room, session, lost_at) => self.remote_not_back(now, room, &session, lost_at),
                Timer::Handover(session, deadline) => self.handover_overdue(now, &session, deadline),
                Timer::Rematch(key, ticket) => {
                    let still = self
                        .sessions
                        .get(&key)
                        .is_some_and(|s| matches!(s.state, State::Queued { ticket: t, .. } if t == ticket));
                    if still {
                        self.try_match(now, key);
                    }
                }
            }
        }
    }

    /// Current counters.
    pub fn stats(&self) -> Stats {
        Stats {
            sessions: self.sessions.len(),
            sessions_detached: self.sessions.values().filter(|s| s.conn.is_none()).count(),
            connections: self.conns.len(),
            queue_length: self.queue.len(),
            rooms: self.rooms.len(),
            ..self.stats.clone()
        }
    }

    /// True once [`Input::Shutdown`] was handled.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    // ----- connection events -------------------------------------------------------------

    /// Marks the connection alive; returns its session.
    fn touch(&mut self, now: Now, conn: ConnId) -> Option<u64> {
        let c = self.conns.get_mut(&conn)?;
        c.last_seen = now.mono;
        c.session
    }

    fn on_frame(&mut self, now: Now, conn: ConnId, frame: ClientFrame) {
        if !self.conns.contains_key(&conn) || self.shutting_down {
            return;
        }
        self.stats.frames_in_total += 1;
        let key = self.touch(now, conn);
        let ClientFrame { id, ack, msg } = frame;
        let Some(key) = key else {
            let restoring = self.conns.get(&conn).is_some_and(|c| c.restoring);
            match msg {
                ClientMessage::Hello { .. } if restoring => {
                    self.fail(conn, None, id, ErrorCode::AlreadyWelcomed, "this connection already said hello")
                }
                ClientMessage::Hello { version, resume_token, client } => {
                    self.hello(now, conn, Hello { id, ack, version, token: resume_token, client });
                }
                ClientMessage::Ping { ts } => self.send_conn(conn, id, ServerMessage::Pong { ts }),
                other => {
                    self.fail(conn, None, id, ErrorCode::HelloRequired, format!("send hello before {}", other.kind()))
                }
            }
            return;
        };
        if let Some(ack) = ack {
            self.apply_ack(key, ack);
        }
        if let ClientMessage::Ack { seq } = msg {
            self.apply_ack(key, seq);
            return;
        }
        if let Some(id) = id
            && let Some(cached) = self.sessions.get(&key).and_then(|s| s.cached_reply(id))
        {
            debug!(session = %self.public_id(key), id, "duplicate message id answered again");
            self.send(key, Some(id), cached);
            return;
        }
        self.on_message(now, conn, key, id, msg);
    }

    fn on_message(&mut self, now: Now, conn: ConnId, key: u64, id: Option<u64>, msg: ClientMessage) {
        match msg {
            ClientMessage::Hello { .. } => {
                self.fail(conn, Some(key), id, ErrorCode::AlreadyWelcomed, "this connection already said hello")
            }
            ClientMessage::Ping { ts } => self.reply(key, id, ServerMessage::Pong { ts }),
            ClientMessage::RefreshIceServers => {
                let ice_servers = self.cfg.ice.servers_for(self.public_id(key), now.unix_secs);
                self.reply(key, id, ServerMessage::IceServers { ice_servers });
            }
            ClientMessage::Ack { .. } => {}
            ClientMessage::JoinQueue { interests, language } => {
                let prefs = Prefs::new(&interests, language.as_deref());
                self.join_queue(now, conn, key, id, prefs);
            }
            ClientMessage::LeaveQueue => match self.state(key) {
                State::Queued { .. } => {
                    self.dequeue(key);
                    self.reply(key, id, ServerMessage::Ok);
                }
                State::Idle => self.reply(key, id, ServerMessage::Ok),
                State::InRoom(_) => self.fail(conn, Some(key), id, ErrorCode::Busy, "in a call or room: use leave"),
            },
            ClientMessage::Next => self.next(now, key, id),
            ClientMessage::JoinRoom { code } => self.join_room(now, conn, key, id, code),
            ClientMessage::Leave => {
                // A `join_room` the shared store has not answered yet is abandoned too.
                if let Some(s) = self.sessions.get_mut(&key) {
                    s.pending_code = None;
                }
                match self.state(key) {
                    State::Queued { .. } => self.dequeue(key),
                    State::InRoom(_) => {
                        self.leave_room(now, key, PeerLeftReason::Left, false);
                    }
                    State::Idle => {}
                }
                self.reply(key, id, ServerMessage::Ok);
            }
            ClientMessage::Signal { payload, generation } => match self.partner(key) {
                Some(partner) => {
                    self.stats.signals_relayed_total += 1;
                    if payload == duet_proto::SignalPayload::Restart {
                        self.stats.restarts_relayed_total += 1;
                    }
                    self.deliver_from_local_partner(now, partner, ServerMessage::Signal { payload, generation });
                    if id.is_some() {
                        self.reply(key, id, ServerMessage::Ok);
                    }
                }
                None if self.remote_partner(key).is_some() || self.awaits_partner(key) => {
                    self.stats.signals_relayed_total += 1;
                    if payload == duet_proto::SignalPayload::Restart {
                        self.stats.restarts_relayed_total += 1;
                    }
                    let event = PeerEvent::Signal { payload, generation };
                    if !self.tell_remote(key, event.clone()) {
                        self.hold_for_partner(key, event);
                    }
                    if id.is_some() {
                        self.reply(key, id, ServerMessage::Ok);
                    }
                }
                None => self.fail(conn, Some(key), id, ErrorCode::NotInCall, "no partner to signal"),
            },
            ClientMessage::Report { reason } => {
                self.end_with(now, conn, key, id, PeerLeftReason::Reported, Some(reason));
            }
            ClientMessage::Block => self.end_with(now, conn, key, id, PeerLeftReason::Blocked, None),
        }
    }

    fn on_closed(&mut self, now: Now, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else { return };
        if let Some(key) = c.session
            && self.sessions.get(&key).is_some_and(|s| s.conn == Some(conn))
        {
            self.detach(now, key);
        }
    }

    fn check_idle(&mut self, now: Now, conn: ConnId) {
        let Some(c) = self.conns.get(&conn) else { return };
        let deadline = c.last_seen + self.cfg.idle_timeout;
        if deadline <= now.mono {
            self.stats.idle_timeouts_total += 1;
            info!(conn = conn.0, "connection silent past the idle timeout; closing");
            self.out.push_back(Output::Close { conn, code: CLOSE_IDLE, reason: "heartbeat timeout" });
            self.on_closed(now, conn);
        } else {
            self.timers.push(Reverse((deadline, Timer::Idle(conn))));
        }
    }

    fn shutdown(&mut self) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        // No `peer_left`: calls go on peer to peer, and clients resume their sessions (and
        // pairings) from their signed tokens on the restarted server or another node.
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            self.out.push_back(Output::Close { conn, code: CLOSE_SHUTDOWN, reason: "server restarting" });
        }
        // A node of a service drains: its waiting sessions leave the shared store first, so no
        // other node pairs them while they move.
        self.drain_store();
        info!(sessions = self.sessions.len(), "shutdown: connections closing; clients will resume");
    }

    // ----- sessions ------------------------------------------------------------------------

    fn hello(&mut self, now: Now, conn: ConnId, hello: Hello) {
        let Hello { id, ack, version, token, client } = hello;
        if version != PROTOCOL_VERSION {
            self.fail(
                conn,
                None,
                id,
                ErrorCode::VersionMismatch,
                format!(
                    "this server speaks Duet protocol v{PROTOCOL_VERSION}, the client sent v{version}; update the client"
                ),
            );
            return;
        }
        let claims = token.as_deref().and_then(|t| self.token_key.verify(t));
        match claims.as_ref().map(|c| (self.by_public.get(&c.session).copied(), c)) {
            Some((Some(key), _)) => {
                // A resuming client may ack what it processed before the socket died, so the
                // replay holds only what it really missed.
                if let Some(ack) = ack {
                    self.apply_ack(key, ack);
                }
                self.resume(now, conn, key, id, client)
            }
            // On a node of a service, the session may have ended on another node: the directory
            // says so first.
            Some((None, claims)) if self.restorable(now, claims) && self.clustered() => {
                self.restore_when_claimed(conn, PendingHello { id, ack, client }, claims.clone())
            }
            Some((None, claims)) if self.restorable(now, claims) => {
                self.restore(now, conn, id, client, claims.clone());
            }
            _ => {
                if token.is_some() {
                    info!(conn = conn.0, "resume token unknown, invalid or expired; starting a new session");
                }
                self.new_session(now, conn, id, client);
            }
        }
    }

    /// A token another process signed (a restart, or another node with the same secret), not
    /// too old, whose session this process does not hold. (A session that ended here stays
    /// ended: its tokens carry this process's instance.)
    fn restorable(&self, now: Now, claims: &Claims) -> bool {
        claims.instance != self.instance
            && now.unix_secs.saturating_sub(claims.issued) <= MAX_RESTORE_AGE_SECS
            && !self.by_public.contains_key(&claims.session)
    }

    /// Rebuilds a session from its token, and its pairing once both partners are back; returns
    /// its key.
    fn restore(&mut self, now: Now, conn: ConnId, id: Option<u64>, client: Option<ClientInfo>, claims: Claims) -> u64 {
        let key = self.add_session(now, conn, claims.session.clone(), client);
        self.moved_out.remove(&claims.session);
        self.stats.resumes_total += 1;
        self.stats.sessions_restored_total += 1;
        info!(session = %claims.session, paired = claims.pairing.is_some(), "session restored from its token");
        // The welcome's token names the pairing being restored (the session is not in its room
        // yet): restored again elsewhere before the pairing next changes, it must not come back
        // unpaired. A restore that changes the pairing reissues the token.
        let token = self.sign_pairing(now, claims.session.clone(), claims.pairing.clone());
        if let Some(s) = self.sessions.get_mut(&key) {
            s.token = token;
        }
        self.welcome(now, key, id, true, 0, true);
        if let Some(pairing) = claims.pairing {
            self.restore_pairing(now, key, &claims.session, pairing);
        }
        key
    }

    /// The restored session `key` was paired: the pair is whole again if the partner waits for
    /// it here, else the session waits for the partner (in their room by code, if they met by
    /// one and no other room here holds that code).
    fn restore_pairing(&mut self, now: Now, key: u64, session: &str, pairing: Pairing) {
        let Pairing { partner, polite, code } = pairing;
        let waiting = self.by_public.get(&partner).copied().and_then(|p| match self.state(p) {
            State::InRoom(room)
                if self
                    .rooms
                    .get(&room)
                    .is_some_and(|r| r.awaiting.as_ref().is_some_and(|(who, _)| *who == session)) =>
            {
                Some((p, room))
            }
            // The partner is here in a pairing across nodes with this session, whose node went
            // away: the pair is whole again on this node.
            State::InRoom(room)
                if self
                    .rooms
                    .get(&room)
                    .is_some_and(|r| r.remote.as_ref().is_some_and(|peer| peer.session == session)) =>
            {
                Some((p, room))
            }
            _ => None,
        });
        match waiting {
            Some((p, room)) => {
                let mut held = Vec::new();
                if let Some(r) = self.rooms.get_mut(&room) {
                    r.awaiting = None;
                    held = std::mem::take(&mut r.held);
                    // Or held for this session while its old node was taken for dead.
                    held.extend(r.remote.take().map(|peer| peer.held).unwrap_or_default());
                    // members[0] is the impolite side.
                    if polite {
                        r.members.push(key);
                    } else {
                        r.members.insert(0, key);
                    }
                }
                // What the partner signalled while it waited for this session.
                for event in held {
                    if let PeerEvent::Signal { payload, generation } = event {
                        self.send(key, None, ServerMessage::Signal { payload, generation });
                    }
                }
                if let Some(s) = self.sessions.get_mut(&key) {
                    s.state = State::InRoom(room);
                }
                self.stats.pairings_restored_total += 1;
                info!(a = %self.public_id(p), b = %session, "pairing restored");
                for k in [key, p] {
                    self.send(k, None, ServerMessage::PeerResumed);
                }
                // Its entry in the shared room by code names this node from now on.
                if let Some(code) = self.rooms.get(&room).and_then(|r| r.code.clone()) {
                    self.code_restore(now, key, code);
                }
            }
            None if self.by_public.contains_key(&partner) => {
                // The partner is back without this pairing: it moved on (and out of their room).
                self.send(key, None, ServerMessage::PeerLeft { reason: PeerLeftReason::Timeout });
                self.reissue_token(now, key);
                if let Some(code) = code {
                    self.code_leave(key, code);
                }
            }
            None => {
                let room = self.next_room;
                self.next_room += 1;
                let named = code.is_some();
                let code = code.filter(|c| {
                    let free = !self.codes.contains_key(c);
                    if !free {
                        // Another room here has the code now: the pair goes on without it.
                        self.code_leave(key, c.clone());
                    }
                    free
                });
                let code_lost = named && code.is_none();
                let name = code.clone().unwrap_or_else(|| format!("restored-{room}"));
                self.rooms.insert(
                    room,
                    Room { awaiting: Some((partner, polite)), ..Room::new(name, code.clone(), vec![key]) },
                );
                if let Some(code) = code {
                    self.codes.insert(code.clone(), room);
                    self.code_restore(now, key, code);
                }
                if let Some(s) = self.sessions.get_mut(&key) {
                    s.state = State::InRoom(room);
                }
                let grace = self.cfg.resume_grace;
                self.timers.push(Reverse((now.mono + grace, Timer::AwaitPartner(room))));
                self.send(key, None, ServerMessage::PeerReconnecting { grace_ms: grace.as_millis() as u64 });
                if code_lost {
                    self.reissue_token(now, key);
                }
            }
        }
    }

    /// A restored session's partner is not coming back: the call is over. If the partner did
    /// not come back in time (`gave_up`), a room by code stays the member's, as when a partner's
    /// grace period runs out in one process, and the partner leaves it in the shared store (its
    /// node, if any, did not answer). If the partner's node said the pairing is over, the member
    /// leaves the room too.
    fn partner_not_back(&mut self, now: Now, room: u64, gave_up: bool) {
        let Some(r) = self.rooms.get_mut(&room) else { return };
        let Some((partner, _)) = r.awaiting.take() else { return };
        r.held.clear();
        let members = r.members.clone();
        match r.code.clone() {
            Some(code) if gave_up => {
                self.code_leave_session(partner, code);
                for key in members {
                    self.send(key, None, ServerMessage::PeerLeft { reason: PeerLeftReason::Timeout });
                    self.reissue_token(now, key);
                }
            }
            code => {
                self.rooms.remove(&room);
                if let Some(code) = code {
                    if self.codes.get(&code) == Some(&room) {
                        self.codes.remove(&code);
                    }
                    for key in &members {
                        self.code_leave(*key, code.clone());
                    }
                }
                for key in members {
                    if let Some(s) = self.sessions.get_mut(&key) {
                        s.state = State::Idle;
                    }
                    self.send(key, None, ServerMessage::PeerLeft { reason: PeerLeftReason::Timeout });
                    self.reissue_token(now, key);
                }
            }
        }
    }

    /// Signs a token for the session's current pairing.
    fn sign_token(&mut self, now: Now, key: u64) -> Option<String> {
        let s = self.sessions.get(&key)?;
        let pairing = match s.state {
            State::InRoom(room) => {
                let r = self.rooms.get(&room)?;
                let code = r.code.clone();
                match (&r.awaiting, self.partner(key)) {
                    (Some((partner, polite)), _) => Some(Pairing { partner: partner.clone(), polite: *polite, code }),
                    (None, Some(p)) => Some(Pairing {
                        partner: self.public_id(p).to_string(),
                        polite: r.members.first() != Some(&key),
                        code,
                    }),
                    (None, None) => {
                        r.remote.as_ref().map(|p| Pairing { partner: p.session.clone(), polite: p.polite_here, code })
                    }
                }
            }
            _ => None,
        };
        let session = s.public_id.clone();
        Some(self.sign_pairing(now, session, pairing))
    }

    /// A token for `session` naming `pairing`.
    fn sign_pairing(&mut self, now: Now, session: String, pairing: Option<Pairing>) -> String {
        let nonce = self.rng.next_u64();
        self.token_key.sign(&Claims { session, pairing, issued: now.unix_secs, instance: self.instance, nonce })
    }

    /// The pairing changed: the session gets a token that says so.
    pub(super) fn reissue_token(&mut self, now: Now, key: u64) {
        let Some(token) = self.sign_token(now, key) else { return };
        if let Some(s) = self.sessions.get_mut(&key) {
            s.token = token.clone();
        }
        self.send(key, None, ServerMessage::Token { resume_token: token });
    }

    fn new_session(&mut self, now: Now, conn: ConnId, id: Option<u64>, client: Option<ClientInfo>) {
        let public_id = self.random_hex(16);
        let client_name = client.as_ref().map_or_else(|| "-".into(), |c| loggable(&c.name));
        info!(session = %public_id, client = ?client_name, "session started");
        let key = self.add_session(now, conn, public_id.clone(), client);
        self.claim(public_id, None);
        self.welcome(now, key, id, false, 0, false);
    }

    /// The device of a client's `hello`, taken out of its self-description (which partners see:
    /// the id is the server's alone, and only its keyed hash is kept).
    fn take_device(&self, client: &mut Option<ClientInfo>) -> Option<blocks::Device> {
        let id = client.as_mut()?.device.take()?;
        Some(blocks::Device::of(&id, &self.token_key))
    }

    /// Registers a session on `conn` with a freshly signed token; returns its key.
    fn add_session(&mut self, now: Now, conn: ConnId, public_id: String, mut client: Option<ClientInfo>) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        self.by_public.insert(public_id.clone(), key);
        let device = self.take_device(&mut client);
        let mut session = Session::new(public_id, String::new(), conn, client);
        session.device = device;
        self.sessions.insert(key, session);
        if let Some(token) = self.sign_token(now, key)
            && let Some(s) = self.sessions.get_mut(&key)
        {
            s.token = token;
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session = Some(key);
        }
        key
    }

    fn resume(&mut self, now: Now, conn: ConnId, key: u64, id: Option<u64>, mut client: Option<ClientInfo>) {
        let device = self.take_device(&mut client);
        let Some(s) = self.sessions.get_mut(&key) else { return };
        let old = s.conn.replace(conn);
        let was_detached = s.detached_at.take().is_some();
        s.detach_epoch += 1;
        if client.is_some() {
            s.client = client;
            s.device = device;
        }
        let replay: Vec<Arc<str>> = s.unacked().cloned().collect();
        let public_id = s.public_id.clone();
        if let Some(old) = old {
            // The old socket may be half-open: replace it, never refuse the new one.
            self.conns.remove(&old);
            self.out.push_back(Output::Close {
                conn: old,
                code: CLOSE_REPLACED,
                reason: "replaced by a new connection",
            });
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session = Some(key);
        }
        let replayed = replay.len();
        self.stats.frames_out_total += replayed as u64;
        for text in replay {
            self.out.push_back(Output::Send { conn, text });
        }
        self.stats.resumes_total += 1;
        info!(session = %public_id, replayed, replaced_socket = old.is_some(), "session resumed");
        self.welcome(now, key, id, true, replayed as u32, false);
        if was_detached {
            match self.state(key) {
                State::InRoom(_) => {
                    if let Some(partner) = self.partner(key) {
                        self.send(partner, None, ServerMessage::PeerResumed);
                    } else {
                        self.tell_remote(key, PeerEvent::Resumed);
                    }
                }
                // A detached session left the shared pool; it enters it again.
                State::Queued { .. } if self.clustered() => self.pool_join(now, key),
                State::Queued { .. } => self.try_match(now, key),
                State::Idle => {}
            }
        }
    }

    fn welcome(&mut self, now: Now, key: u64, id: Option<u64>, resumed: bool, replayed: u32, restored: bool) {
        let Some(s) = self.sessions.get(&key) else { return };
        let msg = ServerMessage::Welcome {
            session_id: s.public_id.clone(),
            resume_token: s.token.clone(),
            heartbeat_ms: self.cfg.heartbeat.as_millis() as u64,
            resume_grace_ms: self.cfg.resume_grace.as_millis() as u64,
            ice_servers: self.cfg.ice.servers_for(&s.public_id, now.unix_secs),
            resumed,
            replayed,
            server: ServerInfo {
                version: self.server_version.clone(),
                protocol: PROTOCOL_VERSION,
                max_frame_bytes: duet_proto::MAX_FRAME_BYTES,
            },
            restored,
        };
        self.send(key, id, msg);
    }

    fn detach(&mut self, now: Now, key: u64) {
        let grace = self.cfg.resume_grace;
        let Some(s) = self.sessions.get_mut(&key) else { return };
        s.conn = None;
        s.detached_at = Some(now.mono);
        s.detach_epoch += 1;
        let epoch = s.detach_epoch;
        info!(session = %s.public_id, grace_ms = grace.as_millis() as u64, "session lost its socket; grace period started");
        self.timers.push(Reverse((now.mono + grace, Timer::Grace(key, epoch))));
        let grace_ms = grace.as_millis() as u64;
        if let Some(partner) = self.partner(key) {
            self.send(partner, None, ServerMessage::PeerReconnecting { grace_ms });
        } else {
            self.tell_remote(key, PeerEvent::Reconnecting { grace_ms });
        }
        // Without a socket a session is not matched: its place in the shared pool waits for it.
        if self.clustered() && matches!(self.state(key), State::Queued { .. }) {
            self.pool_away(now, key);
        }
    }

    fn expire(&mut self, now: Now, key: u64) {
        self.stats.sessions_expired_total += 1;
        match self.state(key) {
            State::Queued { .. } => self.dequeue(key),
            State::InRoom(_) => {
                self.leave_room(now, key, PeerLeftReason::Timeout, false);
            }
            State::Idle => {}
        }
        self.release(key);
        if let Some(s) = self.sessions.remove(&key) {
            self.moved_in.remove(&s.public_id);
            self.handovers.remove(&s.public_id);
            self.by_public.remove(&s.public_id);
            info!(session = %s.public_id, "session ended: grace period over");
        }
    }

    fn apply_ack(&mut self, key: u64, ack: u64) {
        if let Some(s) = self.sessions.get_mut(&key) {
            s.acked(ack);
        }
    }

    // ----- sending -------------------------------------------------------------------------

    /// Sends a sequenced message to a session (stored for replay unless it is a `welcome`,
    /// `pong` or `error`); delivered now if the session has a socket.
    fn send(&mut self, key: u64, reply_to: Option<u64>, msg: ServerMessage) {
        self.send_inner(key, reply_to, msg, None);
    }

    /// [`Hub::send`] for a message from a partner on another node, stored with its stamp (the
    /// session's next node, if it moves, knows which messages it carries).
    pub(super) fn send_stamped(&mut self, key: u64, msg: ServerMessage, stamp: Option<Stamp>) {
        self.send_inner(key, None, msg, stamp);
    }

    fn send_inner(&mut self, key: u64, reply_to: Option<u64>, msg: ServerMessage, stamp: Option<Stamp>) {
        let (max_unacked, max_bytes) = (self.cfg.max_unacked, self.cfg.max_unacked_bytes);
        let Some(s) = self.sessions.get_mut(&key) else { return };
        let seq = s.next_seq;
        s.next_seq += 1;
        let stored =
            !matches!(msg, ServerMessage::Welcome { .. } | ServerMessage::Pong { .. } | ServerMessage::Error { .. });
        let text: Arc<str> = ServerFrame { seq, reply_to, msg }.to_json().into();
        if stored {
            let dropped = s.store_unacked(seq, text.clone(), stamp, max_unacked, max_bytes);
            if dropped > 0 {
                warn!(session = %s.public_id, dropped, max_unacked, max_bytes, "client does not ack; oldest unacked messages dropped");
            }
        }
        if let Some(conn) = s.conn {
            self.stats.frames_out_total += 1;
            self.out.push_back(Output::Send { conn, text });
        }
    }

    /// Sends an answer to client message `id`, remembering it so a repeated id is answered
    /// the same way without acting twice.
    /// Errors are not remembered: a refused message was not acted on, so a retry with the
    /// same id is processed afresh.
    fn reply(&mut self, key: u64, id: Option<u64>, msg: ServerMessage) {
        let is_error = matches!(msg, ServerMessage::Error { .. });
        if let (Some(id), Some(s), false) = (id, self.sessions.get_mut(&key), is_error) {
            s.remember_reply(id, msg.clone());
        }
        self.send(key, id, msg);
    }

    /// Sends to a connection that has no session yet (`seq` 0, never stored).
    fn send_conn(&mut self, conn: ConnId, reply_to: Option<u64>, msg: ServerMessage) {
        self.stats.frames_out_total += 1;
        let text = ServerFrame { seq: 0, reply_to, msg }.to_json().into();
        self.out.push_back(Output::Send { conn, text });
    }

    fn fail(&mut self, conn: ConnId, key: Option<u64>, id: Option<u64>, code: ErrorCode, message: impl Into<String>) {
        *self.stats.errors_total.entry(code).or_default() += 1;
        let message = message.into();
        debug!(conn = conn.0, code = code.as_str(), %message, "refused client message");
        let msg = ServerMessage::error(code, message);
        match key {
            Some(key) => self.reply(key, id, msg),
            None => self.send_conn(conn, id, msg),
        }
    }

    // ----- helpers -------------------------------------------------------------------------

    fn state(&self, key: u64) -> State {
        self.sessions.get(&key).map(|s| s.state).unwrap_or(State::Idle)
    }

    fn public_id(&self, key: u64) -> &str {
        self.sessions.get(&key).map(|s| s.public_id.as_str()).unwrap_or("-")
    }

    /// The other member of the session's room, if there is one.
    fn partner(&self, key: u64) -> Option<u64> {
        let State::InRoom(room) = self.state(key) else { return None };
        self.rooms.get(&room)?.members.iter().copied().find(|m| *m != key)
    }

    fn random_hex(&mut self, bytes: usize) -> String {
        let mut buf = vec![0u8; bytes];
        self.rng.fill_bytes(&mut buf);
        buf.iter().map(|b| format!("{b:02x}")).collect()
    }
}
