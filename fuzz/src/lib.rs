//! Properties shared by the fuzz targets: for every input (as `&str` when it is valid UTF-8,
//! otherwise its lossy conversion)
//! - the parser never panics;
//! - every accepted frame survives `to_json` -> parse unchanged, and its encoding is stable
//!   (encoding the re-parsed frame gives the same text);
//! - every refusal carries a code from `ErrorCode::ALL`, a short message (< 300 chars), and
//!   builds its `error` reply without panicking.

use std::fmt::Debug;

use duet_proto::{ErrorCode, ProtoError};

/// Longest error message allowed, in characters.
const MAX_MESSAGE_CHARS: usize = 300;

/// Runs the properties on raw fuzzer bytes.
pub fn check_bytes<T: PartialEq + Debug>(
    data: &[u8],
    parse: fn(&str) -> Result<T, ProtoError>,
    encode: fn(&T) -> String,
) {
    match std::str::from_utf8(data) {
        Ok(text) => check(text, parse, encode),
        // Valid UTF-8 converts to itself, so the lossy pass only matters for invalid input.
        Err(_) => check(&String::from_utf8_lossy(data), parse, encode),
    }
}

fn check<T: PartialEq + Debug>(text: &str, parse: fn(&str) -> Result<T, ProtoError>, encode: fn(&T) -> String) {
    match parse(text) {
        Ok(frame) => {
            let json = encode(&frame);
            let again = match parse(&json) {
                Ok(again) => again,
                Err(e) => panic!(
                    "re-encoded frame was refused: {e}\n  input:   {}\n  encoded: {}\n  frame:   {frame:?}",
                    preview(text),
                    preview(&json)
                ),
            };
            assert_eq!(
                again,
                frame,
                "round trip changed the frame\n  input:   {}\n  encoded: {}",
                preview(text),
                preview(&json)
            );
            assert_eq!(encode(&again), json, "encoding is not stable\n  input: {}", preview(text));
        }
        Err(e) => {
            assert!(ErrorCode::ALL.contains(&e.code), "unlisted error code {:?} for input {}", e.code, preview(text));
            let chars = e.message.chars().count();
            assert!(
                chars < MAX_MESSAGE_CHARS,
                "error message of {chars} chars (limit {MAX_MESSAGE_CHARS}) for input {}: {}",
                preview(text),
                preview(&e.message)
            );
            let _ = e.to_message();
        }
    }
}

/// The first characters of `s`, debug-quoted, for panic messages (inputs can be 64 KiB).
fn preview(s: &str) -> String {
    const MAX: usize = 400;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head:?}… ({} bytes)", s.len())
    }
}
