//! A hostile or broken server cannot make the client panic or hang: arbitrary frames, with
//! every number at the ends of its range, go through the client's signaling machine and on
//! into its call machine on simulated time (the client-side counterpart of the fuzz targets
//! over the frame parsers).

use std::time::Duration;

use proptest::prelude::*;

#[path = "common/client_session.rs"]
mod client_session;

use client_session::run_client_session;

/// A number as a hostile server would pick it.
fn number() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), Just(1), Just(u64::MAX), Just(u64::MAX / 2), Just(i64::MAX as u64 + 1), any::<u64>()]
}

/// Server frames: well-formed ones with extreme values, and garbage.
fn frame() -> impl Strategy<Value = String> {
    let s = "[a-z0-9:. ]{0,12}";
    prop_oneof![
        (number(), number(), number(), any::<bool>(), any::<bool>()).prop_map(|(seq, hb, grace, resumed, restored)| format!(
            r#"{{"seq":{seq},"type":"welcome","session_id":"s","resume_token":"t","heartbeat_ms":{hb},"resume_grace_ms":{grace},"ice_servers":[],"resumed":{resumed},"replayed":{},"server":{{"version":"x","protocol":1,"max_frame_bytes":{hb}}},"restored":{restored}}}"#,
            grace % 1000
        )),
        (number(), number()).prop_map(|(seq, ts)| format!(r#"{{"seq":{seq},"type":"pong","ts":{ts}}}"#)),
        (number(), any::<bool>()).prop_map(|(seq, polite)| format!(
            r#"{{"seq":{seq},"type":"matched","room":"r","peer":{{"session_id":"p"}},"polite":{polite},"ice_servers":[{{"urls":["turn:127.0.0.1:3478"],"username":"{}:u","credential":"c"}}]}}"#,
            seq
        )),
        (number(), number()).prop_map(|(seq, grace)| format!(r#"{{"seq":{seq},"type":"peer_reconnecting","grace_ms":{grace}}}"#)),
        (number(), number(), s).prop_map(|(seq, generation, text)| format!(
            r#"{{"seq":{seq},"type":"signal","payload":{{"kind":"candidate","candidate":{{"candidate":"{text}"}}}},"generation":{generation}}}"#
        )),
        (number(), number()).prop_map(|(seq, generation)| format!(
            r#"{{"seq":{seq},"type":"signal","payload":{{"kind":"description","description":{{"type":"answer","sdp":"v=0"}}}},"generation":{generation}}}"#
        )),
        (number(), number()).prop_map(|(seq, generation)| format!(r#"{{"seq":{seq},"type":"signal","payload":{{"kind":"restart"}},"generation":{generation}}}"#)),
        number().prop_map(|seq| format!(r#"{{"seq":{seq},"type":"peer_left","reason":"left"}}"#)),
        number().prop_map(|seq| format!(r#"{{"seq":{seq},"type":"token","resume_token":"t2"}}"#)),
        number().prop_map(|seq| format!(r#"{{"seq":{seq},"type":"error","code":"rate_limited","message":"slow\n down"}}"#)),
        ".{0,64}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_server_frames_never_panic_the_client(frames in prop::collection::vec((frame(), 0u64..5_000), 1..40)) {
        run_client_session(frames.iter().map(|(text, wait_ms)| (Duration::from_millis(*wait_ms), text.as_str())));
    }
}
