//! Fuzz target: `duet_proto::parse_client_frame` on arbitrary bytes (properties in `src/lib.rs`).

#![no_main]

use duet_proto::{ClientFrame, parse_client_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| duet_fuzz::check_bytes(data, parse_client_frame, ClientFrame::to_json));
