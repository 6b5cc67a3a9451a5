//! Fuzz target: `duet_proto::parse_server_frame` on arbitrary bytes (properties in `src/lib.rs`).

#![no_main]

use duet_proto::{ServerFrame, parse_server_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| duet_fuzz::check_bytes(data, parse_server_frame, ServerFrame::to_json));
