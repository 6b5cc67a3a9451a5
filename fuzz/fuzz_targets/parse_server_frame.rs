//! Fuzz target: `duet_proto::parse_server_frame` on arbitrary bytes.
//!
//! Properties checked for every input (as `&str` when it is valid UTF-8, otherwise its
//! lossy conversion):
//! - the parser never panics;
//! - every accepted frame survives `to_json` -> `parse_server_frame` unchanged, and its
//!   encoding is stable;
//! - every refusal carries a code from `ErrorCode::ALL` and a short message (< 300 chars).

#![no_main]

use duet_proto::{ErrorCode, parse_server_frame};
use libfuzzer_sys::fuzz_target;

/// Longest error message allowed, in characters.
const MAX_MESSAGE_CHARS: usize = 300;

fuzz_target!(|data: &[u8]| {
    match std::str::from_utf8(data) {
        Ok(text) => check(text),
        Err(_) => check(&String::from_utf8_lossy(data)),
    }
});

fn check(text: &str) {
    match parse_server_frame(text) {
        Ok(frame) => {
            let json = frame.to_json();
            let again = match parse_server_frame(&json) {
                Ok(again) => again,
                Err(e) => panic!(
                    "re-encoded server frame was refused: {e}\n  input:   {}\n  encoded: {}\n  frame:   {frame:?}",
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
            assert_eq!(again.to_json(), json, "encoding is not stable\n  input: {}", preview(text));
            // The message kind is total.
            let _ = frame.msg.kind();
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
