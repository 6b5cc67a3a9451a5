//! Parsing and validation of frames, with errors that map onto stable codes.

use serde::Deserialize;
use thiserror::Error;

use crate::limits::*;
use crate::messages::*;

/// Why a client frame was refused. `reply_to` is the frame's `id` when it could be read,
/// so the `error` reply can carry it as `ref`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{code}: {message}")]
pub struct ProtoError {
    /// Stable code for the `error` reply.
    pub code: ErrorCode,
    /// Human-readable explanation (never echoes secrets or large input).
    pub message: String,
    /// The refused frame's `id`, if readable.
    pub reply_to: Option<u64>,
}

impl ProtoError {
    /// A new error without a `ref`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), reply_to: None }
    }

    /// The `error` server message for this failure.
    pub fn to_message(&self) -> ServerMessage {
        ServerMessage::error(self.code, self.message.clone())
    }
}

/// The head of any frame: enough to classify a failed parse.
#[derive(Deserialize)]
struct Head {
    #[serde(rename = "type")]
    kind: Option<serde_json::Value>,
    id: Option<serde_json::Value>,
}

/// Parses and validates one client text frame.
///
/// Checks, in order: size, JSON syntax, object with a string `type`, known type, fields,
/// then limits. Each failure has its own [`ErrorCode`].
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, ProtoError> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(ProtoError::new(
            ErrorCode::FrameTooLarge,
            format!("frame of {} bytes exceeds the limit of {MAX_FRAME_BYTES} bytes", text.len()),
        ));
    }
    let reply_to = check_head(text)?;
    let frame = serde_json::from_str::<ClientFrame>(text).map_err(|e| ProtoError {
        code: ErrorCode::InvalidField,
        message: short(&e),
        reply_to,
    })?;
    validate_client_frame(&frame).map_err(|e| ProtoError { reply_to, ..e })?;
    Ok(frame)
}

/// Cheap first pass: the frame is a JSON object whose `type` is a known string and whose
/// `id`, if any, is a non-negative integer. Returns the id.
fn check_head(text: &str) -> Result<Option<u64>, ProtoError> {
    let not_object = || ProtoError::new(ErrorCode::BadMessage, "a frame must be a JSON object with a string \"type\"");
    let bad_json = |e: serde_json::Error| ProtoError::new(ErrorCode::BadJson, format!("not valid JSON: {}", short(&e)));
    if !text.trim_start().starts_with('{') {
        return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => not_object(),
            Err(e) => bad_json(e),
        });
    }
    let head = match serde_json::from_str::<Head>(text) {
        Ok(head) => head,
        Err(e) if e.is_syntax() || e.is_eof() => return Err(bad_json(e)),
        Err(_) => return Err(not_object()),
    };
    let reply_to = head.id.as_ref().and_then(serde_json::Value::as_u64);
    let with_ref = |e: ProtoError| ProtoError { reply_to, ..e };
    let Some(serde_json::Value::String(kind)) = head.kind else {
        return Err(with_ref(not_object()));
    };
    if !CLIENT_MESSAGE_TYPES.contains(&kind.as_str()) {
        return Err(with_ref(ProtoError::new(
            ErrorCode::UnknownType,
            format!("unknown message type \"{}\"", truncate(&kind, 40)),
        )));
    }
    if head.id.is_some() && reply_to.is_none() {
        return Err(ProtoError::new(ErrorCode::InvalidField, "\"id\" must be a non-negative integer"));
    }
    Ok(reply_to)
}

/// Serde's message without the line/column suffix noise for single-line frames.
fn short(err: &serde_json::Error) -> String {
    truncate(&err.to_string(), 160)
}

fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max_chars).collect();
        t.push('…');
        t
    }
}

fn invalid(message: impl Into<String>) -> ProtoError {
    ProtoError::new(ErrorCode::InvalidField, message)
}

/// Checks every limit of protocol v1 on an already-parsed frame.
pub fn validate_client_frame(frame: &ClientFrame) -> Result<(), ProtoError> {
    match &frame.msg {
        ClientMessage::Hello { resume_token, client, .. } => {
            if let Some(token) = resume_token
                && (token.is_empty() || token.len() > MAX_RESUME_TOKEN_BYTES)
            {
                return Err(invalid(format!("resume_token must be 1..={MAX_RESUME_TOKEN_BYTES} bytes")));
            }
            if let Some(c) = client {
                for (name, value) in [
                    ("client.name", Some(&c.name)),
                    ("client.version", c.version.as_ref()),
                    ("client.platform", c.platform.as_ref()),
                ] {
                    if value.is_some_and(|v| v.chars().count() > MAX_CLIENT_FIELD_CHARS) {
                        return Err(invalid(format!("{name} is longer than {MAX_CLIENT_FIELD_CHARS} characters")));
                    }
                }
                if c.device.as_deref().is_some_and(|d| !valid_device_id(d)) {
                    return Err(invalid(format!(
                        "client.device must be {MIN_DEVICE_ID_CHARS}..={MAX_CLIENT_FIELD_CHARS} characters of A-Z, a-z, 0-9, '-' or '_'"
                    )));
                }
            }
        }
        ClientMessage::JoinQueue { interests, language } => {
            if interests.len() > MAX_INTERESTS {
                return Err(invalid(format!("at most {MAX_INTERESTS} interests")));
            }
            for interest in interests {
                let n = interest.trim().chars().count();
                if n == 0 || n > MAX_INTEREST_CHARS {
                    return Err(invalid(format!("each interest must be 1..={MAX_INTEREST_CHARS} characters")));
                }
            }
            if let Some(lang) = language
                && !valid_language(lang)
            {
                return Err(invalid(format!(
                    "language must be a tag like \"en\" or \"pt-BR\" (letters, digits, '-', at most {MAX_LANGUAGE_CHARS})"
                )));
            }
        }
        ClientMessage::JoinRoom { code } => {
            if !valid_room_code(code) {
                return Err(invalid(format!(
                    "room code must be {MIN_ROOM_CODE_CHARS}..={MAX_ROOM_CODE_CHARS} characters of A-Z, a-z, 0-9, '-' or '_'"
                )));
            }
        }
        ClientMessage::Signal { payload, .. } => validate_signal(payload)?,
        ClientMessage::Report { reason } => {
            if reason.chars().count() > MAX_REASON_CHARS {
                return Err(invalid(format!("reason is longer than {MAX_REASON_CHARS} characters")));
            }
        }
        ClientMessage::LeaveQueue
        | ClientMessage::Next
        | ClientMessage::Leave
        | ClientMessage::Block
        | ClientMessage::Ping { .. }
        | ClientMessage::RefreshIceServers
        | ClientMessage::Ack { .. } => {}
    }
    Ok(())
}

fn validate_signal(payload: &SignalPayload) -> Result<(), ProtoError> {
    match payload {
        SignalPayload::Description { description } => {
            if description.sdp.len() > MAX_SDP_BYTES {
                return Err(invalid(format!("sdp is larger than {MAX_SDP_BYTES} bytes")));
            }
            if description.sdp_type != SdpType::Rollback && description.sdp.is_empty() {
                return Err(invalid("sdp must not be empty"));
            }
        }
        SignalPayload::Candidate { candidate } => {
            if candidate.candidate.len() > MAX_CANDIDATE_BYTES {
                return Err(invalid(format!("candidate is longer than {MAX_CANDIDATE_BYTES} bytes")));
            }
            for (name, v) in [("sdpMid", &candidate.sdp_mid), ("usernameFragment", &candidate.username_fragment)] {
                if v.as_ref().is_some_and(|v| v.len() > MAX_SHORT_FIELD_BYTES) {
                    return Err(invalid(format!("{name} is longer than {MAX_SHORT_FIELD_BYTES} bytes")));
                }
            }
        }
        SignalPayload::EndOfCandidates | SignalPayload::Restart => {}
    }
    Ok(())
}

/// True if `code` is a valid room code.
pub fn valid_room_code(code: &str) -> bool {
    (MIN_ROOM_CODE_CHARS..=MAX_ROOM_CODE_CHARS).contains(&code.len())
        && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// True if `id` is a well-formed `client.device`.
pub fn valid_device_id(id: &str) -> bool {
    (MIN_DEVICE_ID_CHARS..=MAX_CLIENT_FIELD_CHARS).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// True if `lang` is a plausible language tag.
pub fn valid_language(lang: &str) -> bool {
    (1..=MAX_LANGUAGE_CHARS).contains(&lang.len())
        && lang.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && lang.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
}

/// Canonical form of an interest: trimmed, lower-case, inner whitespace collapsed.
pub fn normalize_interest(interest: &str) -> String {
    interest.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

/// Canonical form of a language tag: primary subtag lower-case (`pt-BR` -> `pt`), so that
/// regional variants match each other.
pub fn normalize_language(lang: &str) -> String {
    lang.split('-').next().unwrap_or(lang).to_ascii_lowercase()
}

/// Parses one server text frame (for clients).
pub fn parse_server_frame(text: &str) -> Result<ServerFrame, ProtoError> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(ProtoError::new(
            ErrorCode::FrameTooLarge,
            format!("server frame of {} bytes is too large", text.len()),
        ));
    }
    serde_json::from_str(text).map_err(|e| {
        let code = if e.is_syntax() || e.is_eof() { ErrorCode::BadJson } else { ErrorCode::BadMessage };
        ProtoError::new(code, short(&e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(text: &str) -> ErrorCode {
        match parse_client_frame(text) {
            Ok(f) => panic!("expected an error, parsed {f:?}"),
            Err(e) => e.code,
        }
    }

    #[test]
    fn parses_hello_with_id_and_ack() {
        let f = parse_client_frame(r#"{"type":"hello","version":1,"id":7,"ack":3,"client":{"name":"t"}}"#).unwrap();
        assert_eq!(f.id, Some(7));
        assert_eq!(f.ack, Some(3));
        assert!(matches!(f.msg, ClientMessage::Hello { version: 1, resume_token: None, client: Some(_) }));
    }

    #[test]
    fn a_device_id_must_be_long_and_plain() {
        let hello =
            |device: &str| format!(r#"{{"type":"hello","version":1,"client":{{"name":"t","device":"{device}"}}}}"#);
        assert!(parse_client_frame(&hello("0123456789abcdef_-AZ")).is_ok());
        for bad in ["short", "has spaces in it here", "é-é-é-é-é-é-é-é-é", &"x".repeat(65)] {
            assert_eq!(code_of(&hello(bad)), ErrorCode::InvalidField, "{bad}");
        }
    }

    #[test]
    fn parses_browser_shaped_signals() {
        let f = parse_client_frame(
            r#"{"type":"signal","payload":{"kind":"candidate","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0}}}"#,
        )
        .unwrap();
        let ClientMessage::Signal { payload: SignalPayload::Candidate { candidate }, generation: None } = f.msg else {
            panic!()
        };
        assert_eq!(candidate.sdp_mid.as_deref(), Some("0"));
        assert_eq!(candidate.sdp_m_line_index, Some(0));
        let f = parse_client_frame(
            r#"{"type":"signal","payload":{"kind":"description","description":{"type":"offer","sdp":"v=0"}}}"#,
        )
        .unwrap();
        assert!(matches!(
            f.msg,
            ClientMessage::Signal { payload: SignalPayload::Description { .. }, generation: None }
        ));
    }

    #[test]
    fn classifies_every_failure() {
        assert_eq!(code_of("{"), ErrorCode::BadJson);
        assert_eq!(code_of("hello"), ErrorCode::BadJson);
        assert_eq!(code_of("[1,2]"), ErrorCode::BadMessage);
        assert_eq!(code_of(r#"{"version":1}"#), ErrorCode::BadMessage);
        assert_eq!(code_of(r#"{"type":5}"#), ErrorCode::BadMessage);
        assert_eq!(code_of(r#"{"type":"hello","version":1,"ack":-3}"#), ErrorCode::InvalidField);
        assert_eq!(parse_client_frame("[1,2]").unwrap_err().reply_to, None);
        assert_eq!(code_of(r#"{"type":"teleport"}"#), ErrorCode::UnknownType);
        assert_eq!(code_of(r#"{"type":"hello"}"#), ErrorCode::InvalidField);
        assert_eq!(code_of(r#"{"type":"hello","version":"1"}"#), ErrorCode::InvalidField);
        assert_eq!(code_of(r#"{"type":"join_room","code":"a b"}"#), ErrorCode::InvalidField);
        assert_eq!(code_of(r#"{"type":"join_room","code":"ab"}"#), ErrorCode::InvalidField);
        assert_eq!(code_of(r#"{"type":"signal","payload":{"kind":"teleport"}}"#), ErrorCode::InvalidField);
        assert_eq!(code_of(r#"{"type":"ping","id":-1}"#), ErrorCode::InvalidField);
        let big = format!(r#"{{"type":"report","reason":"{}"}}"#, "x".repeat(MAX_FRAME_BYTES));
        assert_eq!(code_of(&big), ErrorCode::FrameTooLarge);
    }

    #[test]
    fn errors_carry_the_ref_when_readable() {
        let e = parse_client_frame(r#"{"type":"teleport","id":42}"#).unwrap_err();
        assert_eq!(e.reply_to, Some(42));
        let e = parse_client_frame(r#"{"type":"join_room","code":"!","id":9}"#).unwrap_err();
        assert_eq!((e.code, e.reply_to), (ErrorCode::InvalidField, Some(9)));
    }

    #[test]
    fn enforces_field_limits() {
        let many: Vec<String> = (0..=MAX_INTERESTS).map(|i| format!("\"i{i}\"")).collect();
        assert_eq!(
            code_of(&format!(r#"{{"type":"join_queue","interests":[{}]}}"#, many.join(","))),
            ErrorCode::InvalidField
        );
        let long = "x".repeat(MAX_INTEREST_CHARS + 1);
        assert_eq!(code_of(&format!(r#"{{"type":"join_queue","interests":["{long}"]}}"#)), ErrorCode::InvalidField);
        assert_eq!(code_of(r#"{"type":"join_queue","interests":["  "]}"#), ErrorCode::InvalidField);
        assert_eq!(code_of(r#"{"type":"join_queue","language":"e n"}"#), ErrorCode::InvalidField);
        let sdp = "a".repeat(MAX_SDP_BYTES + 1);
        let frame = format!(
            r#"{{"type":"signal","payload":{{"kind":"description","description":{{"type":"offer","sdp":"{sdp}"}}}}}}"#
        );
        assert!(frame.len() <= MAX_FRAME_BYTES);
        assert_eq!(code_of(&frame), ErrorCode::InvalidField);
        assert!(parse_client_frame(r#"{"type":"join_queue","interests":["Music"],"language":"pt-BR"}"#).is_ok());
    }

    #[test]
    fn unknown_type_is_truncated_in_the_message() {
        let e = parse_client_frame(&format!(r#"{{"type":"{}"}}"#, "z".repeat(1000))).unwrap_err();
        assert!(e.message.chars().count() < 80, "{}", e.message);
    }

    #[test]
    fn normalizes_interests_and_languages() {
        assert_eq!(normalize_interest("  Indie   Music "), "indie music");
        assert_eq!(normalize_language("pt-BR"), "pt");
        assert_eq!(normalize_language("EN"), "en");
    }

    #[test]
    fn server_frames_round_trip() {
        let frame = ServerFrame {
            seq: 3,
            reply_to: Some(1),
            msg: ServerMessage::PeerLeft { reason: PeerLeftReason::ServerShutdown },
        };
        let json = frame.to_json();
        assert_eq!(json, r#"{"seq":3,"ref":1,"type":"peer_left","reason":"server_shutdown"}"#);
        assert_eq!(parse_server_frame(&json).unwrap(), frame);
    }

    #[test]
    fn ice_server_debug_redacts_the_credential() {
        let s =
            IceServer { urls: vec!["turn:x".into()], username: Some("u".into()), credential: Some("hunter2".into()) };
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn error_codes_serialize_as_their_names() {
        for code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), serde_json::Value::String(code.as_str().into()));
        }
    }

    proptest::proptest! {
        /// The parser never panics and always classifies: any input is a frame or a coded error.
        #[test]
        fn parser_total_on_arbitrary_text(s in "\\PC{0,300}") {
            let _ = parse_client_frame(&s);
        }

        /// Structured-looking garbage (JSON objects with random types and fields) never panics.
        #[test]
        fn parser_total_on_json_like(kind in "[a-z_]{0,12}", key in "[a-z_]{1,10}", val in "\\PC{0,40}", id in proptest::option::of(0u64..u64::MAX)) {
            let mut obj = serde_json::json!({"type": kind, key: val});
            if let Some(id) = id { obj["id"] = id.into(); }
            let text = obj.to_string();
            if let Err(e) = parse_client_frame(&text) {
                proptest::prop_assert!(e.reply_to.is_none() || e.reply_to == id);
            }
        }

        /// Every valid frame survives encode -> parse unchanged.
        #[test]
        fn valid_frames_round_trip(code in "[A-Za-z0-9_-]{3,32}", id in 0u64..1000, ack in proptest::option::of(0u64..1000)) {
            let frame = ClientFrame { id: Some(id), ack, msg: ClientMessage::JoinRoom { code } };
            proptest::prop_assert_eq!(parse_client_frame(&frame.to_json()).unwrap(), frame);
        }
    }
}
