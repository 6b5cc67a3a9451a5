//! Size and length limits of protocol v1. Both sides enforce them.

/// Largest text frame accepted, in bytes. Larger frames are answered with `frame_too_large`.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Largest SDP accepted inside a `signal` description, in bytes.
pub const MAX_SDP_BYTES: usize = 60 * 1024;
/// Largest ICE candidate line, in bytes.
pub const MAX_CANDIDATE_BYTES: usize = 1024;
/// Longest `sdpMid` / `usernameFragment`, in bytes.
pub const MAX_SHORT_FIELD_BYTES: usize = 256;
/// Most interests in one `join_queue`.
pub const MAX_INTERESTS: usize = 10;
/// Longest interest, in characters.
pub const MAX_INTEREST_CHARS: usize = 32;
/// Longest language tag (BCP 47 style, e.g. `pt-BR`), in characters.
pub const MAX_LANGUAGE_CHARS: usize = 16;
/// Shortest room code, in characters.
pub const MIN_ROOM_CODE_CHARS: usize = 3;
/// Longest room code, in characters.
pub const MAX_ROOM_CODE_CHARS: usize = 32;
/// Longest free-text `report` reason, in characters.
pub const MAX_REASON_CHARS: usize = 200;
/// Longest resume token, in bytes (signed tokens carry the session's pairing: about 250).
pub const MAX_RESUME_TOKEN_BYTES: usize = 512;
/// Longest client name/version/platform string, in characters.
pub const MAX_CLIENT_FIELD_CHARS: usize = 64;
/// Shortest `client.device` (a random id needs some length to be unguessable).
pub const MIN_DEVICE_ID_CHARS: usize = 16;
