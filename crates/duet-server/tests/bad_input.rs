//! A corpus of malformed, oversized and unknown messages: each gets the right `error`,
//! the connection survives, and the server keeps serving a call in progress. Only sustained
//! abuse closes a connection. Each test runs twice (`memory::` and `redis::`, see
//! [`common::Service`]).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use duet_proto::*;
use duet_server::hub::HubConfig;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

both_modes!(
    every_malformed_message_gets_its_error_and_the_server_keeps_serving,
    a_binary_frame_is_refused_not_fatal,
    messages_before_hello_and_a_wrong_version_are_explained,
    a_frame_over_the_hard_limit_closes_with_1009,
    flooding_is_rate_limited_then_closed,
    occasional_mistakes_never_close_the_connection,
);

/// (frame text, expected code, expected `ref`)
fn corpus() -> Vec<(String, ErrorCode, Option<u64>)> {
    let big_sdp = "a".repeat(MAX_SDP_BYTES + 10);
    vec![
        ("{".into(), ErrorCode::BadJson, None),
        ("not json at all".into(), ErrorCode::BadJson, None),
        ("".into(), ErrorCode::BadJson, None),
        ("[1,2,3]".into(), ErrorCode::BadMessage, None),
        ("42".into(), ErrorCode::BadMessage, None),
        (r#"{"id":5}"#.into(), ErrorCode::BadMessage, Some(5)),
        (r#"{"type":7,"id":6}"#.into(), ErrorCode::BadMessage, Some(6)),
        (r#"{"type":"warp_drive","id":7}"#.into(), ErrorCode::UnknownType, Some(7)),
        (r#"{"type":"join_room","id":8}"#.into(), ErrorCode::InvalidField, Some(8)),
        (r#"{"type":"join_room","code":"x","id":9}"#.into(), ErrorCode::InvalidField, Some(9)),
        (r#"{"type":"join_room","code":"no spaces!","id":10}"#.into(), ErrorCode::InvalidField, Some(10)),
        (format!(r#"{{"type":"join_room","code":"{}","id":11}}"#, "c".repeat(33)), ErrorCode::InvalidField, Some(11)),
        (
            format!(r#"{{"type":"join_queue","interests":[{}],"id":12}}"#, ["\"a\""; 11].join(",")),
            ErrorCode::InvalidField,
            Some(12),
        ),
        (
            format!(r#"{{"type":"join_queue","interests":["{}"],"id":13}}"#, "i".repeat(33)),
            ErrorCode::InvalidField,
            Some(13),
        ),
        (r#"{"type":"join_queue","language":"klingon language","id":14}"#.into(), ErrorCode::InvalidField, Some(14)),
        (r#"{"type":"signal","payload":{"kind":"teleport"},"id":15}"#.into(), ErrorCode::InvalidField, Some(15)),
        (r#"{"type":"signal","payload":"offer","id":16}"#.into(), ErrorCode::InvalidField, Some(16)),
        (
            format!(
                r#"{{"type":"signal","payload":{{"kind":"description","description":{{"type":"offer","sdp":"{big_sdp}"}}}},"id":17}}"#
            ),
            ErrorCode::InvalidField,
            Some(17),
        ),
        (r#"{"type":"signal","payload":{"kind":"restart"},"id":18}"#.into(), ErrorCode::NotInCall, Some(18)),
        (r#"{"type":"report","reason":"x","id":19}"#.into(), ErrorCode::NotInCall, Some(19)),
        (r#"{"type":"hello","version":1,"id":20}"#.into(), ErrorCode::AlreadyWelcomed, Some(20)),
        (r#"{"type":"ping","id":"abc"}"#.into(), ErrorCode::InvalidField, None),
        (r#"{"type":"ping","id":-4}"#.into(), ErrorCode::InvalidField, None),
        (format!(r#"{{"type":"report","reason":"{}","id":21}}"#, "r".repeat(70_000)), ErrorCode::FrameTooLarge, None),
    ]
}

async fn every_malformed_message_gets_its_error_and_the_server_keeps_serving(mode: Mode) {
    let service = Service::start(mode, HubConfig::default()).await;
    let (mut a, mut b) = service.matched_pair().await;
    let mut bad = Client::connect(service.url(2)).await;
    for (i, (text, code, reply_to)) in corpus().into_iter().enumerate() {
        bad.send_text(&text).await;
        let f = bad.recv().await;
        match &f.msg {
            ServerMessage::Error { code: got, message } => {
                assert_eq!(*got, code, "corpus entry {i}: {message}");
                assert!(message.len() < 300, "error messages stay short");
            }
            other => panic!("corpus entry {i}: expected error {code}, got {other:?}"),
        }
        assert_eq!(f.reply_to, reply_to, "corpus entry {i}");
        // Meanwhile, the call between a and b is unaffected.
        a.send(ClientMessage::Signal { payload: SignalPayload::Restart, generation: None }).await;
        b.expect("signal").await;
    }
    // The misbehaving connection is still usable.
    bad.send(ClientMessage::Ping { ts: Some(42) }).await;
    assert!(matches!(bad.expect("pong").await.msg, ServerMessage::Pong { ts: Some(42) }));
    service.metric("errors_total{code=\"invalid_field\"} 12").await;
}

async fn a_binary_frame_is_refused_not_fatal(mode: Mode) {
    let service = Service::start(mode, HubConfig::default()).await;
    let mut c = Client::connect(service.url(0)).await;
    c.ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(c.expect_error(None).await, ErrorCode::BinaryFrame);
    c.send(ClientMessage::Ping { ts: None }).await;
    c.expect("pong").await;
}

async fn messages_before_hello_and_a_wrong_version_are_explained(mode: Mode) {
    let service = Service::start(mode, HubConfig::default()).await;
    let ws = raw(service.url(0)).await;
    let mut c = Client::from_parts(ws, String::new(), String::new());
    c.send_text(r#"{"type":"join_queue","id":1}"#).await;
    assert_eq!(c.expect_error(Some(1)).await, ErrorCode::HelloRequired);
    c.send_text(r#"{"type":"hello","version":99,"id":2}"#).await;
    let f = c.expect("error").await;
    let ServerMessage::Error { code, message } = f.msg else { unreachable!() };
    assert_eq!(code, ErrorCode::VersionMismatch);
    assert!(message.contains("v1") && message.contains("v99"));
}

async fn a_frame_over_the_hard_limit_closes_with_1009(mode: Mode) {
    let service = Service::start(mode, HubConfig::default()).await;
    let mut c = Client::connect(service.url(0)).await;
    let huge = format!(r#"{{"type":"report","reason":"{}"}}"#, "x".repeat(2 * 1024 * 1024));
    let _ = c.ws.send(Message::text(huge)).await;
    let close = c.expect_close().await.expect("a close frame, not a dropped socket");
    assert_eq!(u16::from(close.code), 1009);
    // Others are unaffected.
    let mut d = Client::connect(service.url(1)).await;
    d.send(ClientMessage::Ping { ts: None }).await;
    d.expect("pong").await;
}

async fn flooding_is_rate_limited_then_closed(mode: Mode) {
    let service = Service::start(mode, HubConfig::default()).await;
    let mut c = Client::connect(service.url(0)).await;
    // Far beyond the burst allowance, faster than the refill.
    for _ in 0..400 {
        c.ws.feed(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
    }
    c.ws.flush().await.unwrap();
    let mut limited = 0;
    let close = loop {
        match c.next().await {
            Got::Frame(f) => {
                if let ServerMessage::Error { code: ErrorCode::RateLimited, .. } = f.msg {
                    limited += 1;
                }
            }
            Got::Closed(close) => break close,
        }
    };
    eprintln!("limited={limited} close={close:?}");
    assert!(limited > 0, "rate_limited errors came before the close");
    assert_eq!(close.map(|c| u16::from(c.code)), Some(1008));
}

async fn occasional_mistakes_never_close_the_connection(mode: Mode) {
    let service = Service::start(mode, HubConfig::default()).await;
    let mut c = Client::connect(service.url(0)).await;
    for _ in 0..20 {
        c.send_text("{oops").await;
        assert_eq!(c.expect_error(None).await, ErrorCode::BadJson);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    c.send(ClientMessage::Ping { ts: None }).await;
    c.expect("pong").await;
}
