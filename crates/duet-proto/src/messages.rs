//! Message types for both directions of protocol v1.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A frame sent by a client: optional message `id` (replies carry it back as `ref`, and a
/// repeated id is answered again but not acted on twice), an optional piggy-backed `ack`
/// of server sequence numbers, and the message itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientFrame {
    /// Client-chosen message id, unique within the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// Cumulative ack: the client has processed every server message with `seq <= ack`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<u64>,
    /// The message.
    #[serde(flatten)]
    pub msg: ClientMessage,
}

impl ClientFrame {
    /// A frame without id or ack.
    pub fn new(msg: ClientMessage) -> Self {
        Self { id: None, ack: None, msg }
    }

    /// A frame carrying a message id.
    pub fn with_id(id: u64, msg: ClientMessage) -> Self {
        Self { id: Some(id), ack: None, msg }
    }

    /// Serializes the frame to its JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

/// Messages a client sends to the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// First message on every connection: starts a new session, or resumes one.
    Hello {
        /// Protocol version the client speaks; must equal [`crate::PROTOCOL_VERSION`].
        version: u32,
        /// Token from an earlier `welcome`, to take that session back.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume_token: Option<String>,
        /// Who the client is (shown to the partner, used in logs and stats).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client: Option<ClientInfo>,
    },
    /// Enter the random-matching queue.
    JoinQueue {
        /// Topics the client would like to share with a partner.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        interests: Vec<String>,
        /// Preferred language tag, e.g. `en` or `pt-BR`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        language: Option<String>,
    },
    /// Leave the queue without being matched.
    LeaveQueue,
    /// End the current call (or wait) and re-queue both sides.
    Next,
    /// Join the room with this code; a room holds at most two.
    JoinRoom {
        /// Room code shared between friends.
        code: String,
    },
    /// Leave the current call or room.
    Leave,
    /// Relay a WebRTC signal to the matched peer (and only to it).
    Signal {
        /// The signal.
        payload: SignalPayload,
        /// The sender's peer-connection generation in this pairing (1 for the first, one more
        /// for every fresh peer connection); relayed unchanged. Receivers drop signals of an
        /// older generation than theirs and follow a newer one. Left out by clients that do
        /// not track generations.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        generation: Option<u32>,
    },
    /// Report the partner; ends the call and the pair is never matched again.
    Report {
        /// Free-text reason.
        reason: String,
    },
    /// Block the partner; ends the call and the pair is never matched again.
    Block,
    /// Heartbeat; answered by `pong`.
    Ping {
        /// Opaque client timestamp echoed in the `pong`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ts: Option<u64>,
    },
    /// Ask for fresh ICE servers (TURN credentials about to expire in a long call); answered
    /// by `ice_servers`.
    RefreshIceServers,
    /// Standalone acknowledgement of server messages up to `seq`.
    Ack {
        /// Highest server sequence number processed.
        seq: u64,
    },
}

impl ClientMessage {
    /// The wire name of the message (`type`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Hello { .. } => "hello",
            Self::JoinQueue { .. } => "join_queue",
            Self::LeaveQueue => "leave_queue",
            Self::Next => "next",
            Self::JoinRoom { .. } => "join_room",
            Self::Leave => "leave",
            Self::Signal { .. } => "signal",
            Self::Report { .. } => "report",
            Self::Block => "block",
            Self::Ping { .. } => "ping",
            Self::RefreshIceServers => "refresh_ice_servers",
            Self::Ack { .. } => "ack",
        }
    }
}

/// Every client message type name, for classifying unknown types.
pub const CLIENT_MESSAGE_TYPES: &[&str] = &[
    "hello",
    "join_queue",
    "leave_queue",
    "next",
    "join_room",
    "leave",
    "signal",
    "report",
    "block",
    "ping",
    "refresh_ice_servers",
    "ack",
];

/// Self-description of a client, sent in `hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ClientInfo {
    /// Client program, e.g. `duet-desktop`, `duet-web`, `duet-cli`.
    pub name: String,
    /// Client version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Operating system or browser.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// A random id of this installation, the same across sessions, so that a block follows
    /// the person to their next session. 16 to 64 characters of `A-Z a-z 0-9 - _`. Only the
    /// server sees it (never a partner); it keeps only a hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

/// What a `signal` carries. Field names inside follow the browser's `toJSON()` shapes so a
/// web client can pass them through unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SignalPayload {
    /// An SDP offer/answer (or rollback).
    Description {
        /// The session description.
        description: SessionDescription,
    },
    /// A trickled ICE candidate.
    Candidate {
        /// The candidate.
        candidate: IceCandidate,
    },
    /// The sender has gathered all its candidates.
    EndOfCandidates,
    /// Ask the peer to restart ICE (the receiver, if impolite, sends a restart offer).
    Restart,
}

impl SignalPayload {
    /// The wire name of the payload (`kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Description { .. } => "description",
            Self::Candidate { .. } => "candidate",
            Self::EndOfCandidates => "end_of_candidates",
            Self::Restart => "restart",
        }
    }
}

/// SDP description type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SdpType {
    /// An offer.
    Offer,
    /// A provisional answer.
    Pranswer,
    /// A final answer.
    Answer,
    /// Roll back a pending local offer.
    Rollback,
}

/// An SDP description (`RTCSessionDescriptionInit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDescription {
    /// Offer, answer, pranswer or rollback.
    #[serde(rename = "type")]
    pub sdp_type: SdpType,
    /// The SDP text (empty for rollback).
    #[serde(default)]
    pub sdp: String,
}

/// An ICE candidate (`RTCIceCandidateInit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidate {
    /// The `candidate:` attribute line.
    pub candidate: String,
    /// Media stream identification tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    /// Index of the m-line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_m_line_index: Option<u16>,
    /// ICE ufrag the candidate belongs to (distinguishes generations across restarts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_fragment: Option<String>,
}

/// A frame sent by the server: every one carries a sequence number `seq`, replies carry
/// the `ref` of the client message they answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerFrame {
    /// Per-session sequence number, increasing by one per message sent to the session.
    pub seq: u64,
    /// The `id` of the client message this answers.
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<u64>,
    /// The message.
    #[serde(flatten)]
    pub msg: ServerMessage,
}

impl ServerFrame {
    /// Serializes the frame to its JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|_| String::from(r#"{"seq":0,"type":"error","code":"internal","message":"encode failed"}"#))
    }
}

/// Messages the server sends to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Answer to `hello`: the session is (re)established.
    Welcome {
        /// Public id of the session (the partner sees it).
        session_id: String,
        /// Secret token to resume this session on a new socket. Never log it.
        resume_token: String,
        /// Send `ping` at least this often.
        heartbeat_ms: u64,
        /// How long the session survives without a socket.
        resume_grace_ms: u64,
        /// STUN/TURN servers to use.
        ice_servers: Vec<IceServer>,
        /// True when an earlier session was taken back.
        resumed: bool,
        /// Number of unacknowledged messages replayed before this `welcome`.
        replayed: u32,
        /// Server facts: version and limits.
        server: ServerInfo,
        /// True when the session (and its pairing) was rebuilt from its signed token by a
        /// restarted server: the server's sequence numbers start again at this `welcome`'s, and
        /// messages the old process had not delivered are gone (`resumed` is true as well).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        restored: bool,
    },
    /// Fresh ICE servers (new TURN credentials), the answer to `refresh_ice_servers`.
    IceServers {
        /// STUN/TURN servers to use from now on.
        ice_servers: Vec<IceServer>,
    },
    /// The session's resume token changed (its pairing did): resume with this one from now on.
    /// Never log it.
    Token {
        /// The new token.
        resume_token: String,
    },
    /// The client is in the matching queue.
    Queued {
        /// Interests the client is queued with (normalised).
        interests: Vec<String>,
        /// Language the client is queued with (normalised).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        language: Option<String>,
    },
    /// The client entered a room by code and waits for the second person.
    RoomJoined {
        /// The room code.
        code: String,
    },
    /// The client was paired with a partner; start WebRTC negotiation.
    Matched {
        /// Room identifier (the code for rooms by code).
        room: String,
        /// Who the partner is.
        peer: PeerInfo,
        /// Perfect-negotiation role: the polite side yields on glare.
        polite: bool,
        /// STUN/TURN servers for this call (fresh TURN credentials).
        ice_servers: Vec<IceServer>,
        /// Interests both sides share.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        common_interests: Vec<String>,
    },
    /// The partner lost its socket; it may come back within `grace_ms`.
    PeerReconnecting {
        /// How long the server waits for the partner.
        grace_ms: u64,
    },
    /// The partner is back after `peer_reconnecting`.
    PeerResumed,
    /// The partner is gone; the call is over.
    PeerLeft {
        /// Why.
        reason: PeerLeftReason,
    },
    /// A signal from the partner.
    Signal {
        /// The signal.
        payload: SignalPayload,
        /// The sender's peer-connection generation, as it sent it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        generation: Option<u32>,
    },
    /// Generic success reply to a client message that has no other answer.
    Ok,
    /// Heartbeat answer.
    Pong {
        /// The client's `ts`, echoed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ts: Option<u64>,
    },
    /// Something the client sent was refused.
    Error {
        /// Stable machine-readable code.
        code: ErrorCode,
        /// Human-readable explanation.
        message: String,
    },
}

impl ServerMessage {
    /// The wire name of the message (`type`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Welcome { .. } => "welcome",
            Self::Token { .. } => "token",
            Self::IceServers { .. } => "ice_servers",
            Self::Queued { .. } => "queued",
            Self::RoomJoined { .. } => "room_joined",
            Self::Matched { .. } => "matched",
            Self::PeerReconnecting { .. } => "peer_reconnecting",
            Self::PeerResumed => "peer_resumed",
            Self::PeerLeft { .. } => "peer_left",
            Self::Signal { .. } => "signal",
            Self::Ok => "ok",
            Self::Pong { .. } => "pong",
            Self::Error { .. } => "error",
        }
    }

    /// An `error` message.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error { code, message: message.into() }
    }
}

/// Facts about the server, sent in `welcome`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// Server software version.
    pub version: String,
    /// Protocol version.
    pub protocol: u32,
    /// Largest frame the server accepts.
    pub max_frame_bytes: usize,
}

/// The partner as seen in `matched`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The partner's public session id.
    pub session_id: String,
    /// The partner's client description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientInfo>,
    /// The partner's language, if it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

/// Why a partner left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerLeftReason {
    /// The partner left (`leave`, or closed the app).
    Left,
    /// The partner pressed Next.
    Next,
    /// The partner did not come back within the grace period.
    Timeout,
    /// The partner blocked this client.
    Blocked,
    /// The partner reported this client.
    Reported,
    /// The server is shutting down.
    ServerShutdown,
}

/// An ICE server entry (`RTCIceServer`). The credential is redacted in `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:`/`turn:`/`turns:` URLs.
    pub urls: Vec<String>,
    /// TURN username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN credential (password). Never log it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl fmt::Debug for IceServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IceServer")
            .field("urls", &self.urls)
            .field("username", &self.username)
            .field("credential", &self.credential.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Stable error codes of `error` messages. Clients may switch on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not valid JSON.
    BadJson,
    /// The frame is JSON but not an object with a string `type`.
    BadMessage,
    /// `type` names no protocol v1 message.
    UnknownType,
    /// A field is missing, has the wrong type, or breaks a limit.
    InvalidField,
    /// The frame exceeds [`crate::MAX_FRAME_BYTES`].
    FrameTooLarge,
    /// Binary frames are not part of the protocol.
    BinaryFrame,
    /// The connection sends faster than allowed; the message was dropped.
    RateLimited,
    /// The `hello` names a protocol version this server does not speak.
    VersionMismatch,
    /// The first message on a connection must be `hello`.
    HelloRequired,
    /// `hello` was already answered on this connection.
    AlreadyWelcomed,
    /// The message needs a matched partner and there is none.
    NotInCall,
    /// The message needs an idle session (e.g. `join_queue` during a call).
    Busy,
    /// The room already holds two people (or cannot be joined by this client).
    RoomFull,
    /// The server could not process the message.
    Internal,
}

impl ErrorCode {
    /// Every code, for stats and documentation.
    pub const ALL: [ErrorCode; 14] = [
        Self::BadJson,
        Self::BadMessage,
        Self::UnknownType,
        Self::InvalidField,
        Self::FrameTooLarge,
        Self::BinaryFrame,
        Self::RateLimited,
        Self::VersionMismatch,
        Self::HelloRequired,
        Self::AlreadyWelcomed,
        Self::NotInCall,
        Self::Busy,
        Self::RoomFull,
        Self::Internal,
    ];

    /// The wire name of the code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadJson => "bad_json",
            Self::BadMessage => "bad_message",
            Self::UnknownType => "unknown_type",
            Self::InvalidField => "invalid_field",
            Self::FrameTooLarge => "frame_too_large",
            Self::BinaryFrame => "binary_frame",
            Self::RateLimited => "rate_limited",
            Self::VersionMismatch => "version_mismatch",
            Self::HelloRequired => "hello_required",
            Self::AlreadyWelcomed => "already_welcomed",
            Self::NotInCall => "not_in_call",
            Self::Busy => "busy",
            Self::RoomFull => "room_full",
            Self::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
