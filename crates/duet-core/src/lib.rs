//! The Duet call engine.
//!
//! - [`signaling`]: the protocol v1 client: session, acks, resend after resume, heartbeat,
//!   reconnection with exponential backoff and jitter.
//! - [`call`]: the call lifecycle (matching, connecting, reconnecting, ICE restart and peer
//!   replacement, ending) as a sans-IO machine.
//! - [`media`]: capture/encode and decode/render threads around the peer connection.
//! - [`quality`]: the call's quality: bandwidth estimate, ladder, audio policy, audio-only,
//!   send queue, and the status the UIs show.
//! - [`jitter`]: the audio jitter buffer (reordering, FEC recovery, concealment).
//! - [`control`]: messages on the `control` data channel.
//! - [`chat`]: text chat with ids and acks over the data channel (survives reconnects).
//! - [`summary`]: the end-of-call numbers (first frame, loss, latency, counters).
//! - [`peer`]: one webrtc peer connection (VP8 + Opus each way, data channels, trickle
//!   ICE, congestion control estimate, keyframe requests, stats).
//! - [`room_code`]: room codes nobody can guess, for friends to share.
//! - [`sources`]: opening synthetic, file and device media by spec (shared by the CLI and
//!   the desktop app).
//! - [`negotiation`]: perfect negotiation (glare, duplicate/stale descriptions, early
//!   candidates) as a sans-IO machine.
//! - [`verify`]: the short authentication string both partners compare ("verify your
//!   partner"), from the two DTLS certificate fingerprints.
//! - [`tls`]: `wss://` with the platform's trust store plus an optional CA file, and which
//!   TLS failures are not worth retrying.

pub mod call;
pub mod chat;
pub mod control;
pub mod devices;
pub mod jitter;
pub mod keepalive;
pub mod media;
pub mod negotiation;
pub mod netwatch;
pub mod peer;
pub mod quality;
pub mod room_code;
pub mod signaling;
pub mod sources;
pub mod summary;
pub mod tls;
pub mod turn;
pub mod verify;
