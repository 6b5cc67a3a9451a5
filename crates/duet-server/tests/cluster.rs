//! Several nodes sharing one pool through a real `redis-server` (started here, on loopback):
//! health while Redis is away, pairing across nodes, relay in order, the race for partners,
//! and pairings that outlive a killed node (real `duet-server` processes, SIGKILL).

#![allow(clippy::unwrap_used)]

mod common;
mod process;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::redis_server::{RedisServer, node, wait_health, wait_pool};
use common::*;
use duet_proto::*;
use duet_server::hub::HubConfig;

fn queue(interests: &[&str], language: Option<&str>) -> ClientMessage {
    ClientMessage::JoinQueue {
        interests: interests.iter().map(|s| s.to_string()).collect(),
        language: language.map(str::to_string),
    }
}

fn candidate(n: usize) -> SignalPayload {
    SignalPayload::Candidate {
        candidate: IceCandidate {
            candidate: format!("candidate:{n} 1 udp 2122260223 10.0.0.1 {} typ host", 40000 + n),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
            username_fragment: None,
        },
    }
}

/// The `matched` a client got: (room, peer session, polite, common interests).
fn matched(f: &ServerFrame) -> (String, String, bool, Vec<String>) {
    match &f.msg {
        ServerMessage::Matched { room, peer, polite, common_interests, .. } => {
            (room.clone(), peer.session_id.clone(), *polite, common_interests.clone())
        }
        other => panic!("expected matched, got {other:?}"),
    }
}

#[tokio::test]
async fn clients_on_two_nodes_are_matched_and_signal_in_order() {
    let redis = RedisServer::start();
    let node_a = node(&redis, "node-a", HubConfig::default()).await;
    let node_b = node(&redis, "node-b", HubConfig::default()).await;
    let mut a = Client::connect(&node_a.url).await;
    let mut b = Client::connect(&node_b.url).await;
    a.send(queue(&["Music", "films"], Some("en"))).await;
    a.expect("queued").await;
    wait_pool(&redis, 1).await;
    b.send(queue(&["music"], Some("en-GB"))).await;
    b.expect("queued").await;
    let (room_a, peer_a, polite_a, common_a) = matched(&a.expect("matched").await);
    let (room_b, peer_b, polite_b, common_b) = matched(&b.expect("matched").await);
    assert_eq!(room_a, room_b, "one room");
    assert!(room_a.starts_with("r-") && room_a.len() == 14, "{room_a}");
    assert_eq!((peer_a.as_str(), peer_b.as_str()), (b.session_id.as_str(), a.session_id.as_str()));
    assert!(!polite_a && polite_b, "the one who waited longer (a) makes the offer");
    assert_eq!(common_a, vec!["music".to_string()]);
    assert_eq!(common_b, common_a);
    a.expect("token").await;
    b.expect("token").await;

    // a's offer and 40 candidates reach b on the other node, in order; b's answer comes back.
    a.send(ClientMessage::Signal { payload: offer("v=0 from node a"), generation: Some(1) }).await;
    for n in 0..40 {
        a.send(ClientMessage::Signal { payload: candidate(n), generation: Some(1) }).await;
    }
    let f = b.expect("signal").await;
    assert!(
        matches!(&f.msg, ServerMessage::Signal { payload, generation: Some(1) } if *payload == offer("v=0 from node a"))
    );
    for n in 0..40 {
        let f = b.expect("signal").await;
        assert!(matches!(&f.msg, ServerMessage::Signal { payload, .. } if *payload == candidate(n)), "in order: {n}");
    }
    b.send(ClientMessage::Signal { payload: SignalPayload::Restart, generation: None }).await;
    let f = a.expect("signal").await;
    assert!(matches!(&f.msg, ServerMessage::Signal { payload: SignalPayload::Restart, .. }));

    // b loses its socket: a hears it across nodes; b resumes on its node: a hears that too.
    let token = b.token.clone();
    drop(b);
    let f = a.expect("peer_reconnecting").await;
    assert!(matches!(f.msg, ServerMessage::PeerReconnecting { grace_ms: 15000 }));
    let mut b = Client::hello_on(raw(&node_b.url).await, Some(token)).await;
    b.ids_from(100);
    a.expect("peer_resumed").await;
    b.send(ClientMessage::Signal { payload: SignalPayload::EndOfCandidates, generation: None }).await;
    let f = a.expect("signal").await;
    assert!(matches!(&f.msg, ServerMessage::Signal { payload: SignalPayload::EndOfCandidates, .. }));

    // `next` on b: a is told and re-queued; the two are not paired again (cooldown), across nodes.
    b.send(ClientMessage::Next).await;
    b.expect("queued").await;
    let f = a.expect("peer_left").await;
    assert!(matches!(f.msg, ServerMessage::PeerLeft { reason: PeerLeftReason::Next }));
    a.expect("queued").await;
    a.expect("token").await;
    wait_pool(&redis, 2).await;
    a.expect_silence(Duration::from_millis(800)).await;
    // A newcomer on node b is paired with a (the longest waiting) across nodes.
    let mut c = Client::connect(&node_b.url).await;
    c.send(queue(&[], None)).await;
    c.expect("queued").await;
    let (_, peer_c, polite_c, _) = matched(&c.expect("matched").await);
    assert!(peer_c == a.session_id || peer_c == b.session_id, "c is paired with a waiting client");
    assert!(polite_c, "c is the newcomer");

    // A signal of a's old partner is never relayed to its new one: b has no partner now or
    // a new one; it only ever reaches the current partner. b with no partner gets not_in_call.
    if peer_c == a.session_id {
        let id = b.send(ClientMessage::Signal { payload: SignalPayload::Restart, generation: None }).await;
        assert_eq!(b.expect_error(Some(id)).await, ErrorCode::NotInCall);
    }
    let (_, stats) = node_a.get("/api/webrtc/stats").await;
    assert!(stats.contains("\"signals_relayed_total\":41"), "a relayed its 41 signals: {stats}");
}

#[tokio::test]
async fn a_block_across_nodes_keeps_the_pair_apart() {
    let redis = RedisServer::start();
    let node_a = node(&redis, "node-a", HubConfig::default()).await;
    let node_b = node(&redis, "node-b", HubConfig::default()).await;
    let mut a = Client::connect(&node_a.url).await;
    let mut b = Client::connect(&node_b.url).await;
    a.send(queue(&[], None)).await;
    a.expect("queued").await;
    wait_pool(&redis, 1).await;
    b.send(queue(&[], None)).await;
    matched(&a.expect("matched").await);
    matched(&b.expect("matched").await);
    let id = b.send(ClientMessage::Block).await;
    let f = b.expect("ok").await;
    assert_eq!(f.reply_to, Some(id));
    let f = a.expect("peer_left").await;
    assert!(matches!(f.msg, ServerMessage::PeerLeft { reason: PeerLeftReason::Blocked }));
    // Both queue again: they are never paired with each other, whichever node asks.
    a.send(queue(&[], None)).await;
    a.expect("queued").await;
    wait_pool(&redis, 1).await;
    b.send(queue(&[], None)).await;
    b.expect("queued").await;
    wait_pool(&redis, 2).await;
    a.expect_silence(Duration::from_millis(800)).await;
    b.expect_silence(Duration::from_millis(100)).await;
    let mut c = Client::connect(&node_a.url).await;
    c.send(queue(&[], None)).await;
    let (_, peer, _, _) = matched(&c.expect("matched").await);
    assert_eq!(peer, a.session_id, "c gets the longest-waiting client, a");
}

#[tokio::test]
async fn many_clients_on_three_nodes_are_each_matched_exactly_once() {
    // 19, 21 and 20 clients: a node with an odd count cannot pair all of its own, so at least
    // one pairing crosses nodes however the nodes' requests interleave in Redis.
    const PER_NODE: [usize; 3] = [19, 21, 20];
    let redis = RedisServer::start();
    let mut nodes = Vec::new();
    for id in ["n1", "n2", "n3"] {
        nodes.push(node(&redis, id, HubConfig::default()).await);
    }
    // Connect everyone first, then let all of them queue at the same moment.
    let mut clients = Vec::new();
    for (n, count) in PER_NODE.iter().enumerate() {
        for _ in 0..*count {
            clients.push((n, Client::connect(&nodes[n].url).await));
        }
    }
    let go = std::sync::Arc::new(tokio::sync::Barrier::new(clients.len()));
    let mut tasks = Vec::new();
    for (node, mut c) in clients {
        let go = go.clone();
        tasks.push(tokio::spawn(async move {
            go.wait().await;
            c.send(queue(&[], None)).await;
            let first = matched(&c.expect("matched").await);
            // Nothing else pairs this client: no second `matched` for a while.
            let mut again = 0;
            let until = tokio::time::Instant::now() + Duration::from_millis(1500);
            while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(until, futures_util::StreamExt::next(&mut c.ws)).await
            {
                if let tokio_tungstenite::tungstenite::Message::Text(t) = msg
                    && parse_server_frame(t.as_str()).unwrap().msg.kind() == "matched"
                {
                    again += 1;
                }
            }
            (c.session_id.clone(), node, first, again)
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let total: usize = PER_NODE.iter().sum();
    assert_eq!(results.len(), total, "everyone was matched");
    let node_of: HashMap<String, usize> = results.iter().map(|(s, n, _, _)| (s.clone(), *n)).collect();
    let peer_of: HashMap<String, String> = results.iter().map(|(s, _, m, _)| (s.clone(), m.1.clone())).collect();
    let mut rooms: HashMap<String, Vec<(String, bool)>> = HashMap::new();
    for (session, _, (room, peer, polite, _), again) in &results {
        assert_eq!(*again, 0, "{session} matched a second time");
        assert_ne!(peer, session, "nobody is paired with itself");
        assert_eq!(peer_of.get(peer), Some(session), "{session}'s partner names it back");
        rooms.entry(room.clone()).or_default().push((session.clone(), *polite));
    }
    assert_eq!(rooms.len(), total / 2, "{} pairings", total / 2);
    for (room, members) in &rooms {
        assert_eq!(members.len(), 2, "room {room} holds exactly two: {members:?}");
        assert_ne!(members[0].1, members[1].1, "one polite, one impolite in {room}");
    }
    let across = rooms.values().filter(|m| node_of[&m[0].0] != node_of[&m[1].0]).count();
    assert!(across > 0, "some pairings cross nodes");
    let sessions: HashSet<&String> = results.iter().map(|(s, _, _, _)| s).collect();
    assert_eq!(sessions.len(), total);
}

#[tokio::test]
async fn redis_outage_makes_the_node_unhealthy_and_it_recovers_by_itself() {
    let redis = RedisServer::start();
    let server = node(&redis, "solo", HubConfig::default()).await;
    let body = wait_health(&server, 200).await;
    assert!(body.contains("\"status\":\"ok\"") && body.contains("\"store\":\"redis\""), "{body}");
    // A client queued before the outage.
    let mut a = Client::connect(&server.url).await;
    a.send(queue(&[], None)).await;
    a.expect("queued").await;

    redis.kill();
    let body = wait_health(&server, 503).await;
    assert!(body.contains("\"status\":\"unhealthy\"") && body.contains("\"reason\":\"redis unreachable\""), "{body}");
    // New sessions are refused with the reason, before any WebSocket is opened.
    match tokio_tungstenite::connect_async(server.url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 503);
            let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).to_string();
            assert!(body.contains("shared store is unreachable"), "{body}");
        }
        other => panic!("expected 503 on upgrade, got {:?}", other.map(|_| ())),
    }

    // Redis comes back empty on the same port: the node is healthy again by itself, takes new
    // sessions, and the client queued before the outage is back in the (new) pool.
    redis.spawn();
    wait_health(&server, 200).await;
    let mut b = Client::connect(&server.url).await;
    b.send(queue(&[], None)).await;
    b.expect("queued").await;
    let (_, peer_b, _, _) = matched(&b.expect("matched").await);
    let (_, peer_a, _, _) = matched(&a.expect("matched").await);
    assert_eq!((peer_a, peer_b), (b.session_id.clone(), a.session_id.clone()));
}

/// Two nodes sharing one resume secret, with x on node a and y on node b matched to each other
/// and holding the tokens that name their pairing.
async fn paired_across_two_nodes(redis: &RedisServer) -> (TestServer, TestServer, Client, Client) {
    let key = || Some(duet_server::hub::token::TokenKey::new(b"one secret for the whole service".to_vec()));
    let hub = || HubConfig { resume_key: key(), ..HubConfig::default() };
    let node_a = node(redis, "node-a", hub()).await;
    let node_b = node(redis, "node-b", hub()).await;
    let mut x = Client::connect(&node_a.url).await;
    let mut y = Client::connect(&node_b.url).await;
    x.send(queue(&[], None)).await;
    x.expect("queued").await;
    wait_pool(redis, 1).await;
    y.send(queue(&[], None)).await;
    matched(&x.expect("matched").await);
    matched(&y.expect("matched").await);
    x.expect("token").await;
    y.expect("token").await;
    (node_a, node_b, x, y)
}

#[tokio::test]
async fn a_node_stopped_mid_call_its_client_resumes_on_the_other_node_and_the_call_goes_on() {
    let redis = RedisServer::start();
    let (mut node_a, node_b, x, mut y) = paired_across_two_nodes(&redis).await;
    let (token, x_id) = (x.token.clone(), x.session_id.clone());

    // Node a goes away; x reconnects to node b with its token.
    node_a.shutdown().await;
    drop(x);
    let ws = raw(&node_b.url).await;
    let mut x = Client::hello_on(ws, Some(token)).await;
    x.ids_from(100);
    assert_eq!(x.session_id, x_id, "the same session, restored from its token on another node");
    x.expect("peer_resumed").await;
    y.expect("peer_resumed").await;
    // The pairing goes on, now within node b, both ways.
    x.send(ClientMessage::Signal { payload: SignalPayload::Restart, generation: Some(2) }).await;
    let f = y.expect("signal").await;
    assert!(matches!(f.msg, ServerMessage::Signal { payload: SignalPayload::Restart, generation: Some(2) }));
    y.send(ClientMessage::Signal { payload: offer("v=0 after the move"), generation: Some(2) }).await;
    let f = x.expect("signal").await;
    assert!(matches!(&f.msg, ServerMessage::Signal { payload, .. } if *payload == offer("v=0 after the move")));
    let (_, stats) = node_b.get("/api/webrtc/stats").await;
    assert!(stats.contains("\"pairings_restored_total\":1"), "{stats}");
}

fn join_room(code: &str) -> ClientMessage {
    ClientMessage::JoinRoom { code: code.into() }
}

#[tokio::test]
async fn a_room_by_code_pairs_clients_on_two_nodes_and_refuses_a_third() {
    let redis = RedisServer::start();
    let node_a = node(&redis, "node-a", HubConfig::default()).await;
    let node_b = node(&redis, "node-b", HubConfig::default()).await;
    let mut a = Client::connect(&node_a.url).await;
    let mut b = Client::connect(&node_b.url).await;
    let id = a.send(join_room("friends-42")).await;
    let f = a.expect("room_joined").await;
    assert_eq!(f.reply_to, Some(id));
    a.expect_silence(Duration::from_millis(200)).await;

    // b, on the other node, joins the same code: the two are paired in the room of that name.
    let id = b.send(join_room("friends-42")).await;
    let f = b.expect("room_joined").await;
    assert_eq!(f.reply_to, Some(id));
    let (room_b, peer_b, polite_b, _) = matched(&b.expect("matched").await);
    let (room_a, peer_a, polite_a, _) = matched(&a.expect("matched").await);
    assert_eq!((room_a.as_str(), room_b.as_str()), ("friends-42", "friends-42"));
    assert_eq!((peer_a.as_str(), peer_b.as_str()), (b.session_id.as_str(), a.session_id.as_str()));
    assert!(!polite_a && polite_b, "the one who waited (a) makes the offer");
    a.send(ClientMessage::Signal { payload: offer("v=0 room across nodes"), generation: None }).await;
    let f = b.expect("signal").await;
    assert!(matches!(&f.msg, ServerMessage::Signal { payload, .. } if *payload == offer("v=0 room across nodes")));
    b.send(ClientMessage::Signal { payload: SignalPayload::Restart, generation: None }).await;
    let f = a.expect("signal").await;
    assert!(matches!(f.msg, ServerMessage::Signal { payload: SignalPayload::Restart, .. }));

    // A third client, on either node, is refused as in one process.
    for url in [&node_a.url, &node_b.url] {
        let mut c = Client::connect(url).await;
        let id = c.send(join_room("friends-42")).await;
        assert_eq!(c.expect_error(Some(id)).await, ErrorCode::RoomFull);
    }

    // b leaves: a stays in the room, and the next one to join (on node a this time) gets a.
    b.send(ClientMessage::Leave).await;
    b.expect("ok").await;
    let f = a.expect("peer_left").await;
    assert!(matches!(f.msg, ServerMessage::PeerLeft { reason: PeerLeftReason::Left }));
    let mut c = Client::connect(&node_a.url).await;
    c.send(join_room("friends-42")).await;
    c.expect("room_joined").await;
    let (_, peer_c, polite_c, _) = matched(&c.expect("matched").await);
    assert_eq!((peer_c.as_str(), polite_c), (a.session_id.as_str(), true));
    let (_, peer_a, _, _) = matched(&a.expect("matched").await);
    assert_eq!(peer_a, c.session_id);

    // Ten new codes a minute per session, counted where the session is; joining is not opening.
    let mut d = Client::connect(&node_b.url).await;
    for n in 0..10 {
        d.send(join_room(&format!("guess-{n}"))).await;
        d.expect("room_joined").await;
        d.send(ClientMessage::Leave).await;
        d.expect("ok").await;
    }
    let id = d.send(join_room("guess-10")).await;
    assert_eq!(d.expect_error(Some(id)).await, ErrorCode::RateLimited);
    let mut e = Client::connect(&node_a.url).await;
    e.send(join_room("open-elsewhere")).await;
    e.expect("room_joined").await;
    d.send(join_room("open-elsewhere")).await;
    d.expect("room_joined").await;
    let (_, peer_d, _, _) = matched(&d.expect("matched").await);
    assert_eq!(peer_d, e.session_id, "a room open on another node is joined, not opened: no limit");
}

/// How many entries a Redis hash or sorted set holds right now (no waiting).
async fn redis_len(redis: &RedisServer, cmd: &str, key: &str) -> usize {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd(cmd).arg(key).query_async(&mut conn).await.unwrap()
}

#[tokio::test]
async fn a_draining_node_leaves_the_shared_store_and_its_client_keeps_its_partner_on_another_node() {
    let redis = RedisServer::start();
    // x (node a) and y (node b) in a call; w waits in the pool and v alone in a room, both on a.
    let (mut node_a, node_b, mut x, mut y) = paired_across_two_nodes(&redis).await;
    let (token, x_id) = (x.token.clone(), x.session_id.clone());
    let mut w = Client::connect(&node_a.url).await;
    w.send(queue(&["chess"], None)).await;
    w.expect("queued").await;
    wait_pool(&redis, 1).await;
    let mut v = Client::connect(&node_a.url).await;
    v.send(join_room("drain-room")).await;
    v.expect("room_joined").await;
    let room = duet_server::cluster::room_key("drain-room");
    assert_eq!(redis_len(&redis, "HLEN", &room).await, 1);

    // Node a drains: every client is told to move (1001), and by the time the node has exited
    // its waiting sessions are out of the shared store.
    node_a.shutdown().await;
    for c in [&mut x, &mut w, &mut v] {
        let close = c.expect_close().await;
        assert_eq!(close.map(|c| u16::from(c.code)), Some(1001));
    }
    assert_eq!(redis_len(&redis, "ZCARD", duet_server::cluster::POOL_KEY).await, 0, "w left the pool");
    assert_eq!(redis_len(&redis, "HLEN", &room).await, 0, "v left its room");
    // y heard that its partner is moving.
    y.expect("peer_reconnecting").await;

    // x resumes on node b and keeps y; signals flow both ways.
    drop(x);
    let mut x = Client::hello_on(raw(&node_b.url).await, Some(token)).await;
    x.ids_from(100);
    assert_eq!(x.session_id, x_id);
    x.expect("peer_resumed").await;
    y.expect("peer_resumed").await;
    x.send(ClientMessage::Signal { payload: offer("v=0 after the drain"), generation: Some(2) }).await;
    let f = y.expect("signal").await;
    assert!(matches!(&f.msg, ServerMessage::Signal { payload, .. } if *payload == offer("v=0 after the drain")));
    y.send(ClientMessage::Signal { payload: SignalPayload::Restart, generation: Some(2) }).await;
    let f = x.expect("signal").await;
    assert!(matches!(f.msg, ServerMessage::Signal { payload: SignalPayload::Restart, .. }));
    // Nobody on node b is paired with the drained node's ghosts.
    let mut z = Client::connect(&node_b.url).await;
    z.send(join_room("drain-room")).await;
    z.expect("room_joined").await;
    z.expect_silence(Duration::from_millis(300)).await;
}

/// Polls `/api/webrtc/stats` of `server` (up to `within`) until `done` holds; returns the JSON.
async fn wait_stats(
    server: &TestServer,
    within: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + within;
    loop {
        let (_, body) = server.get("/api/webrtc/stats").await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if done(&v) {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "stats never got there: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn stats_and_metrics_report_each_node_and_the_service_totals() {
    let redis = RedisServer::start();
    let node_a = node(&redis, "node-a", HubConfig::default()).await;
    let mut node_b = node(&redis, "node-b", HubConfig::default()).await;
    // One session on node a, three on node b; a pairing across nodes (counted once).
    let mut a = Client::connect(&node_a.url).await;
    let mut b = Client::connect(&node_b.url).await;
    let _b2 = Client::connect(&node_b.url).await;
    let _b3 = Client::connect(&node_b.url).await;
    a.send(queue(&[], None)).await;
    a.expect("queued").await;
    wait_pool(&redis, 1).await;
    b.send(queue(&[], None)).await;
    matched(&a.expect("matched").await);
    matched(&b.expect("matched").await);
    a.send(ClientMessage::Signal { payload: offer("v=0"), generation: None }).await;
    b.expect("signal").await;

    let totals_are = |v: &serde_json::Value| {
        v["service"]["nodes"] == 2
            && v["service"]["totals"]["sessions"] == 4
            && v["service"]["totals"]["matches_total"] == 1
    };
    for server in [&node_a, &node_b] {
        let v = wait_stats(server, Duration::from_secs(10), totals_are).await;
        assert_eq!(v["service"]["per_node"]["node-a"]["sessions"], 1, "{v}");
        assert_eq!(v["service"]["per_node"]["node-b"]["sessions"], 3, "{v}");
        assert_eq!(v["service"]["totals"]["signals_relayed_total"], 1, "{v}");
        assert_eq!(v["service"]["totals"]["rooms"], 2, "one room on each side: {v}");
    }
    // The top-level fields stay the node's own.
    let v = wait_stats(&node_a, Duration::from_secs(10), totals_are).await;
    assert_eq!((v["node"].as_str(), v["sessions"].as_u64()), (Some("node-a"), Some(1)), "{v}");

    let (status, metrics) = node_a.get("/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "duet_sessions 1",
        "duet_service_nodes 2",
        "duet_service_sessions 4",
        "duet_service_matches_total 1",
        "duet_node_sessions{node=\"node-a\"} 1",
        "duet_node_sessions{node=\"node-b\"} 3",
        "# TYPE duet_service_matches_total counter",
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing {line:?} in:\n{metrics}");
    }

    // Node b drains: it leaves the totals at once (node a's next refresh), not only when its
    // counters expire (5 s).
    node_b.shutdown().await;
    let v = wait_stats(&node_a, Duration::from_millis(2500), |v| v["service"]["nodes"] == 1).await;
    assert_eq!(v["service"]["totals"]["sessions"], 1, "{v}");
    assert!(v["service"]["per_node"].get("node-b").is_none(), "{v}");
}

#[tokio::test]
async fn entries_of_a_node_that_stopped_beating_are_never_paired() {
    let redis = RedisServer::start();
    let node_a = node(&redis, "node-a", HubConfig::default()).await;
    // A node that died without draining: its entry in the pool and its member in a room stay
    // behind, and its heartbeat is long over (it beat once, at time 1 ms).
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let ghost = r#"{"s":"ghost-session","n":"dead-node","t":1}"#;
    let room = duet_server::cluster::room_key("haunted");
    let () = redis::pipe()
        .cmd("HSET")
        .arg(duet_server::cluster::ALIVE_KEY)
        .arg("dead-node")
        .arg(1)
        .ignore()
        .cmd("ZADD")
        .arg(duet_server::cluster::POOL_KEY)
        .arg(0)
        .arg("ghost-session")
        .ignore()
        .cmd("HSET")
        .arg("duet:{pool}:entry")
        .arg("ghost-session")
        .arg(ghost)
        .ignore()
        .cmd("HSET")
        .arg(&room)
        .arg("ghost-session")
        .arg(ghost)
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();

    // A client queues: the ghost is removed from the pool instead of being its partner.
    let mut a = Client::connect(&node_a.url).await;
    a.send(queue(&[], None)).await;
    a.expect("queued").await;
    wait_pool(&redis, 1).await;
    a.expect_silence(Duration::from_millis(300)).await;
    let entry: Option<String> =
        redis::cmd("HGET").arg("duet:{pool}:entry").arg("ghost-session").query_async(&mut conn).await.unwrap();
    assert_eq!(entry, None, "the ghost's entry left the pool");
    // A client joins the ghost's room: the ghost leaves it, and the client waits there alone.
    let mut b = Client::connect(&node_a.url).await;
    b.send(join_room("haunted")).await;
    b.expect("room_joined").await;
    b.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(redis_len(&redis, "HLEN", &room).await, 1, "only b is in the room");
    // A live node's sessions are still paired: a newcomer gets a.
    let mut c = Client::connect(&node_a.url).await;
    c.send(queue(&[], None)).await;
    let (_, peer, _, _) = matched(&c.expect("matched").await);
    assert_eq!(peer, a.session_id);
}

/// A node as a real `duet-server` process on the service in `redis`, sharing one resume secret.
fn node_process(redis: &RedisServer, id: &str) -> process::Proc {
    let url = redis.url();
    process::spawn(&["--redis", &url, "--node-id", id], &[("DUET_RESUME_SECRET", "one secret for the whole service")])
}

/// Connects to `url` and queues, until the node takes both (a fresh process may still be
/// reaching Redis: it refuses the WebSocket with 503, or the queue request).
async fn connect_when_ready(url: &str) -> Client {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio_tungstenite::connect_async(url).await {
            Ok((ws, _)) => {
                let mut c = Client::hello_on(ws, None).await;
                c.send(queue(&[], None)).await;
                match c.recv().await.msg {
                    ServerMessage::Queued { .. } => return c,
                    other => assert!(std::time::Instant::now() < deadline, "node not ready: {other:?}"),
                }
            }
            Err(err) => assert!(std::time::Instant::now() < deadline, "node not ready: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Three `duet-server` processes a, b and c; x on node a paired with y on node b, both holding
/// the tokens that name their pairing.
async fn three_nodes_with_x_on_a_paired_with_y_on_b(redis: &RedisServer) -> ([process::Proc; 3], Client, Client) {
    let nodes = [node_process(redis, "a"), node_process(redis, "b"), node_process(redis, "c")];
    let mut x = connect_when_ready(&nodes[0].url).await;
    wait_pool(redis, 1).await;
    let mut y = connect_when_ready(&nodes[1].url).await;
    matched(&x.expect("matched").await);
    matched(&y.expect("matched").await);
    x.expect("token").await;
    y.expect("token").await;
    (nodes, x, y)
}

#[tokio::test]
async fn a_killed_nodes_client_resumes_on_a_third_node_and_the_pairing_goes_on_with_nothing_lost() {
    let redis = RedisServer::start();
    let ([node_a, node_b, node_c], x, mut y) = three_nodes_with_x_on_a_paired_with_y_on_b(&redis).await;
    let (token, x_id) = (x.token.clone(), x.session_id.clone());

    // Node a dies without a word. y signals at once: nobody knows yet, so it goes to node a's
    // inbox. Within 5 s a's heartbeat runs out: y is told its partner is reconnecting, and
    // what y signals then waits for it.
    drop(node_a);
    drop(x);
    y.send(ClientMessage::Signal { payload: offer("v=0 into the dead node"), generation: Some(3) }).await;
    y.expect("ok").await;
    // (A heartbeat lasts 5 s: longer than one wait for a frame.)
    tokio::time::sleep(Duration::from_secs(3)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(12);
    let grace = loop {
        match y.next().await {
            Got::Frame(ServerFrame { msg: ServerMessage::PeerReconnecting { grace_ms }, .. }) => break grace_ms,
            Got::Frame(_) => {}
            Got::Closed(c) => panic!("y lost its socket: {c:?}"),
        }
        assert!(std::time::Instant::now() < deadline);
    };
    assert!(grace >= 10_000, "{grace}");
    y.send(ClientMessage::Signal { payload: offer("v=0 while x was away"), generation: Some(3) }).await;
    y.expect("ok").await;

    // x comes back on node c, neither its old node nor its partner's, and gets both signals,
    // in the order y sent them.
    let mut x = Client::hello_on(raw(&node_c.url).await, Some(token)).await;
    x.ids_from(100);
    assert_eq!(x.session_id, x_id, "the same session, restored from its token");
    x.expect("peer_resumed").await;
    y.expect("peer_resumed").await;
    for sent in ["v=0 into the dead node", "v=0 while x was away"] {
        let f = x.expect("signal").await;
        assert!(matches!(&f.msg, ServerMessage::Signal { payload, .. } if *payload == offer(sent)), "{f:?}");
    }
    x.send(ClientMessage::Signal { payload: SignalPayload::Restart, generation: Some(4) }).await;
    let f = y.expect("signal").await;
    assert!(matches!(f.msg, ServerMessage::Signal { payload: SignalPayload::Restart, generation: Some(4) }));
    // And the pairing still ends as pairings do: x leaves, y hears it.
    x.send(ClientMessage::Leave).await;
    let f = y.expect("peer_left").await;
    assert!(matches!(f.msg, ServerMessage::PeerLeft { reason: PeerLeftReason::Left }), "{f:?}");
    drop((node_b, node_c));
}

/// A client on the node of `url`, once the fresh process takes WebSockets (it refuses them
/// until it reaches Redis).
async fn client_when_ready(url: &str) -> Client {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio_tungstenite::connect_async(url).await {
            Ok((ws, _)) => return Client::hello_on(ws, None).await,
            Err(err) => assert!(std::time::Instant::now() < deadline, "node not ready: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (past a heartbeat's length) for `peer_reconnecting`.
async fn expect_partner_reconnecting(c: &mut Client) {
    tokio::time::sleep(Duration::from_secs(3)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(12);
    loop {
        match c.next().await {
            Got::Frame(ServerFrame { msg: ServerMessage::PeerReconnecting { .. }, .. }) => return,
            Got::Frame(_) => {}
            Got::Closed(close) => panic!("lost its socket: {close:?}"),
        }
        assert!(std::time::Instant::now() < deadline);
    }
}

#[tokio::test]
async fn a_room_by_code_stays_its_pairs_room_when_a_members_node_is_killed() {
    let redis = RedisServer::start();
    let [node_a, node_b, node_c] = [node_process(&redis, "a"), node_process(&redis, "b"), node_process(&redis, "c")];
    let mut x = client_when_ready(&node_a.url).await;
    let mut y = client_when_ready(&node_b.url).await;
    drop(client_when_ready(&node_c.url).await);
    x.send(join_room("friends-7")).await;
    x.expect("room_joined").await;
    y.send(join_room("friends-7")).await;
    let (room, _, _, _) = matched(&y.expect("matched").await);
    assert_eq!(room, "friends-7");
    matched(&x.expect("matched").await);
    x.expect("token").await;
    y.expect("token").await;
    let (token, x_id) = (x.token.clone(), x.session_id.clone());

    // Node a dies. While x is away, the room is still x's and y's, as it is in one process
    // while a partner reconnects: a third client is refused.
    drop(node_a);
    drop(x);
    expect_partner_reconnecting(&mut y).await;
    let mut z = Client::connect(&node_b.url).await;
    let id = z.send(join_room("friends-7")).await;
    assert_eq!(z.expect_error(Some(id)).await, ErrorCode::RoomFull, "a newcomer while x is away");

    // x comes back on node c: the pairing goes on, and the room is still theirs.
    let mut x = Client::hello_on(raw(&node_c.url).await, Some(token)).await;
    x.ids_from(100);
    assert_eq!(x.session_id, x_id);
    x.expect("peer_resumed").await;
    y.expect("peer_resumed").await;
    for url in [&node_b.url, &node_c.url] {
        let mut z = Client::connect(url).await;
        let id = z.send(join_room("friends-7")).await;
        assert_eq!(z.expect_error(Some(id)).await, ErrorCode::RoomFull, "a third client");
    }

    // x leaves: y stays in the room, and the next client with the code is paired with y.
    x.send(ClientMessage::Leave).await;
    let f = y.expect("peer_left").await;
    assert!(matches!(f.msg, ServerMessage::PeerLeft { reason: PeerLeftReason::Left }), "{f:?}");
    let mut w = Client::connect(&node_c.url).await;
    w.send(join_room("friends-7")).await;
    w.expect("room_joined").await;
    let (room_w, peer_w, polite_w, _) = matched(&w.expect("matched").await);
    assert_eq!((room_w.as_str(), peer_w.as_str(), polite_w), ("friends-7", y.session_id.as_str(), true));
    let (_, peer_y, _, _) = matched(&y.expect("matched").await);
    assert_eq!(peer_y, w.session_id);
    drop((node_b, node_c));
}

#[tokio::test]
async fn a_token_used_on_another_node_closes_the_first_copy_and_the_pairing_follows_it() {
    let redis = RedisServer::start();
    let (node_a, node_b, mut x, mut y) = paired_across_two_nodes(&redis).await;
    let key = Some(duet_server::hub::token::TokenKey::new(b"one secret for the whole service".to_vec()));
    let node_c = node(&redis, "node-c", HubConfig { resume_key: key, ..HubConfig::default() }).await;
    // y signals; x gets it on node a but never acknowledges it.
    let before = x.last_seq;
    y.send(ClientMessage::Signal { payload: offer("v=0 never acknowledged"), generation: Some(1) }).await;
    x.expect("signal").await;
    // x's token is used on node c while x is still connected to node a, acknowledging only
    // what came before that signal.
    let mut x2 = Client::from_parts(raw(&node_c.url).await, String::new(), String::new());
    let hello = ClientMessage::Hello { version: PROTOCOL_VERSION, resume_token: Some(x.token.clone()), client: None };
    x2.send_frame(ClientFrame { id: Some(1), ack: Some(before), msg: hello }).await;
    match x2.expect("welcome").await.msg {
        ServerMessage::Welcome { session_id, restored, .. } => assert!(session_id == x.session_id && restored),
        other => unreachable!("{other:?}"),
    }
    let close = x.expect_close().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 4000, "{close:?}");
    // The copy on node a sends over what x never acknowledged; the pairing follows (in either
    // order: they come from two nodes).
    let (mut replayed, mut resumed) = (false, false);
    while !(replayed && resumed) {
        match x2.recv().await.msg {
            ServerMessage::Signal { payload, .. } => {
                assert_eq!(payload, offer("v=0 never acknowledged"));
                replayed = true;
            }
            ServerMessage::PeerResumed => resumed = true,
            _ => {}
        }
    }
    y.expect("peer_resumed").await;
    y.send(ClientMessage::Signal { payload: SignalPayload::Restart, generation: Some(5) }).await;
    assert!(matches!(x2.expect("signal").await.msg, ServerMessage::Signal { generation: Some(5), .. }));
    // Node a holds no copy any more: one session, on node c.
    let (_, stats) = node_a.get("/api/webrtc/stats").await;
    let v: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!((v["node"].as_str(), v["sessions"].as_u64()), (Some("node-a"), Some(0)), "{stats}");
    drop(node_b);
}

/// `y` signals the numbered offers `v=0 #i` for each `i` of `n`, each answered `ok`.
async fn send_numbered(y: &mut Client, n: std::ops::Range<usize>) {
    for i in n {
        y.send(ClientMessage::Signal { payload: offer(&format!("v=0 #{i}")), generation: Some(2) }).await;
        y.expect("ok").await;
    }
}

/// `x` gets the numbered offers of [`send_numbered`] for `n`, in order.
async fn expect_numbered(x: &mut Client, n: std::ops::Range<usize>) {
    for i in n {
        let f = x.expect("signal").await;
        let numbered =
            matches!(&f.msg, ServerMessage::Signal { payload, .. } if *payload == offer(&format!("v=0 #{i}")));
        assert!(numbered, "{f:?}");
    }
}

#[tokio::test]
async fn a_client_back_before_its_dead_node_is_noticed_gets_what_its_partner_sent_meanwhile() {
    let redis = RedisServer::start();
    let ([node_a, node_b, node_c], x, mut y) = three_nodes_with_x_on_a_paired_with_y_on_b(&redis).await;
    let token = x.token.clone();
    // Node a is killed; y's signals go to its inbox (nobody can know yet) and are answered `ok`.
    drop(node_a);
    drop(x);
    send_numbered(&mut y, 0..5).await;
    // x is back on node c at once, long before a's heartbeat runs out, and gets all of them, in order.
    let mut x = Client::hello_on(raw(&node_c.url).await, Some(token)).await;
    x.expect("peer_resumed").await;
    y.expect("peer_resumed").await;
    expect_numbered(&mut x, 0..5).await;
    y.send(ClientMessage::Signal { payload: SignalPayload::Restart, generation: Some(3) }).await;
    assert!(matches!(x.expect("signal").await.msg, ServerMessage::Signal { payload: SignalPayload::Restart, .. }));
    drop((node_b, node_c));
}

/// The address of the current process of node `id` (waits up to 10 s for it to register).
async fn address_of(conn: &mut redis::aio::MultiplexedConnection, id: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let key = duet_server::cluster::incarnation_key(id);
        if let Some(address) = redis::cmd("GET").arg(key).query_async::<Option<String>>(conn).await.unwrap() {
            return address;
        }
        assert!(std::time::Instant::now() < deadline, "node {id} has no process registered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_node_whose_heartbeat_was_late_puts_its_waiting_sessions_back_into_the_pool() {
    let redis = RedisServer::start();
    let node_a = node(&redis, "node-a", HubConfig::default()).await;
    let node_b = node(&redis, "node-b", HubConfig::default()).await;
    let mut w = Client::connect(&node_a.url).await;
    w.send(queue(&[], None)).await;
    w.expect("queued").await;
    wait_pool(&redis, 1).await;
    // Node a's heartbeat is seen over for 1.5 s (as if its writes were late): a client of node
    // b queues meanwhile, and b's script drops w's entry instead of pairing it.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let a = address_of(&mut conn, "node-a").await;
    let overdue = || redis::cmd("HSET").arg(duet_server::cluster::ALIVE_KEY).arg(&a).arg(1).clone();
    overdue().query_async::<()>(&mut conn).await.unwrap();
    let mut v = Client::connect(&node_b.url).await;
    v.send(queue(&[], None)).await;
    v.expect("queued").await;
    for _ in 0..15 {
        overdue().query_async::<()>(&mut conn).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Node a beats again, notices, and w re-enters the pool: w and v are paired.
    matched(&w.expect("matched").await);
    matched(&v.expect("matched").await);
    drop((node_a, node_b));
}

#[tokio::test]
async fn a_node_taken_for_dead_that_beats_again_leaves_its_quiet_calls_alone() {
    let redis = RedisServer::start();
    let (node_a, node_b, mut x, mut y) = paired_across_two_nodes(&redis).await;
    // Node a's heartbeat is seen over for 7 s (late writes, or a stall): y hears its partner is
    // reconnecting. Nothing is signalled: the call's media goes peer to peer.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let a = address_of(&mut conn, "node-a").await;
    let hold_over = async {
        for _ in 0..70 {
            let overdue = redis::cmd("HSET").arg(duet_server::cluster::ALIVE_KEY).arg(&a).arg(1).clone();
            overdue.query_async::<()>(&mut conn).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (_, reconnecting) = tokio::join!(hold_over, y.expect("peer_reconnecting"));
    assert!(matches!(reconnecting.msg, ServerMessage::PeerReconnecting { .. }));
    // Node a beats again: y hears its partner is back, and the call goes on, both ways.
    y.expect("peer_resumed").await;
    y.send(ClientMessage::Signal { payload: SignalPayload::Restart, generation: Some(2) }).await;
    assert!(matches!(x.expect("signal").await.msg, ServerMessage::Signal { generation: Some(2), .. }));
    x.send(ClientMessage::Signal { payload: SignalPayload::EndOfCandidates, generation: Some(2) }).await;
    assert!(matches!(y.expect("signal").await.msg, ServerMessage::Signal { generation: Some(2), .. }));
    drop((node_a, node_b));
}

#[tokio::test]
async fn a_node_restarted_under_the_same_id_leaves_no_entry_of_its_previous_process_to_be_paired() {
    let redis = RedisServer::start();
    let mut node_a = node(&redis, "node-a", HubConfig::default()).await;
    let node_b = node(&redis, "node-b", HubConfig::default()).await;
    let mut w = Client::connect(&node_a.url).await;
    w.send(queue(&[], None)).await;
    w.expect("queued").await;
    wait_pool(&redis, 1).await;
    let mut r = Client::connect(&node_a.url).await;
    r.send(join_room("restart-room")).await;
    r.expect("room_joined").await;
    let room = duet_server::cluster::room_key("restart-room");
    while redis_len(&redis, "HLEN", &room).await == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Node a's process dies (no drain) and a new one starts under the same id at once, long
    // before the old heartbeat runs out: w's entry is still in the pool and r in its room.
    node_a.done.take().unwrap().abort();
    drop((w, r));
    let _node_a = node(&redis, "node-a", HubConfig::default()).await;
    wait_pool(&redis, 0).await;
    // Clients of node b are paired with neither ghost.
    let mut v = Client::connect(&node_b.url).await;
    v.send(queue(&[], None)).await;
    v.expect("queued").await;
    let mut z = Client::connect(&node_b.url).await;
    z.send(join_room("restart-room")).await;
    z.expect("room_joined").await;
    v.expect_silence(Duration::from_millis(500)).await;
    z.expect_silence(Duration::from_millis(100)).await;
}

/// Waits (up to 10 s) until the `duet-server` process at `url` answers `/health` with 200
/// (a fresh process may still be reaching Redis).
async fn wait_process_healthy(url: &str) {
    let addr = url.trim_start_matches("ws://").trim_end_matches("/ws").to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(stream) = tokio::net::TcpStream::connect(&addr).await
            && http_get(stream, &addr, "/health").await.0 == 200
        {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{url} not healthy within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_node_restarted_under_the_same_id_hands_on_what_partners_sent_its_previous_process() {
    let redis = RedisServer::start();
    let ([node_a, node_b, node_c], x, mut y) = three_nodes_with_x_on_a_paired_with_y_on_b(&redis).await;
    let token = x.token.clone();
    // Node a's process dies and its supervisor starts it again at once, under the same id. y
    // signals meanwhile: nobody can know, so it all goes to node a's inbox.
    drop(node_a);
    drop(x);
    send_numbered(&mut y, 0..3).await;
    let node_a = node_process(&redis, "a");
    wait_process_healthy(&node_a.url).await;
    // x comes back to the new process and gets every signal, in order, then the call goes on.
    let mut x = Client::hello_on(raw(&node_a.url).await, Some(token)).await;
    x.expect("peer_resumed").await;
    y.expect("peer_resumed").await;
    expect_numbered(&mut x, 0..3).await;
    y.send(ClientMessage::Signal { payload: SignalPayload::Restart, generation: Some(3) }).await;
    assert!(matches!(x.expect("signal").await.msg, ServerMessage::Signal { payload: SignalPayload::Restart, .. }));
    x.send(ClientMessage::Signal { payload: SignalPayload::EndOfCandidates, generation: Some(3) }).await;
    assert!(matches!(
        y.expect("signal").await.msg,
        ServerMessage::Signal { payload: SignalPayload::EndOfCandidates, .. }
    ));
    drop((node_b, node_c));
}

#[tokio::test]
async fn a_draining_node_hands_its_sessions_over_with_what_their_clients_had_not_processed() {
    let redis = RedisServer::start();
    let (mut node_a, node_b, mut x, mut y) = paired_across_two_nodes(&redis).await;
    let (token, before) = (x.token.clone(), x.last_seq);
    // y signals; x gets it on node a but has not processed it when node a starts draining.
    y.send(ClientMessage::Signal { payload: offer("v=0 not processed"), generation: Some(1) }).await;
    x.expect("signal").await;
    node_a.begin_shutdown();
    let close = x.expect_close().await;
    assert_eq!(close.map(|c| u16::from(c.code)), Some(1001));
    drop(x);
    // x takes a moment to come back, on node b, acknowledging only what came before the signal.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut x = Client::from_parts(raw(&node_b.url).await, String::new(), String::new());
    let hello = ClientMessage::Hello { version: PROTOCOL_VERSION, resume_token: Some(token), client: None };
    x.send_frame(ClientFrame { id: Some(1), ack: Some(before), msg: hello }).await;
    assert!(matches!(x.expect("welcome").await.msg, ServerMessage::Welcome { restored: true, .. }));
    // The draining node waited for it and hands the signal over; the pairing goes on.
    let (mut replayed, mut resumed) = (false, false);
    while !(replayed && resumed) {
        match x.recv().await.msg {
            ServerMessage::Signal { payload, .. } => {
                assert_eq!(payload, offer("v=0 not processed"));
                replayed = true;
            }
            ServerMessage::PeerResumed => resumed = true,
            _ => {}
        }
    }
    // Node a exits once nothing is left to hand over, well within its patience.
    let waited = std::time::Instant::now();
    node_a.shutdown().await;
    assert!(waited.elapsed() < Duration::from_secs(2), "{:?}", waited.elapsed());
    y.send(ClientMessage::Signal { payload: SignalPayload::Restart, generation: Some(2) }).await;
    assert!(matches!(x.expect("signal").await.msg, ServerMessage::Signal { payload: SignalPayload::Restart, .. }));
}

#[tokio::test]
async fn a_session_moved_while_its_old_node_lives_gets_every_signal_of_its_partner_once_and_in_order() {
    let redis = RedisServer::start();
    let ([node_a, node_b, node_c], mut x, mut y) = three_nodes_with_x_on_a_paired_with_y_on_b(&redis).await;
    wait_process_healthy(&node_c.url).await;
    // y signals 0-4: x gets them on node a but has processed none of them when it moves.
    let (token, before) = (x.token.clone(), x.last_seq);
    send_numbered(&mut y, 0..5).await;
    expect_numbered(&mut x, 0..5).await;
    // Node a stalls (SIGSTOP: alive, its heartbeat still good, but slow). y signals 5-9 into
    // its inbox; x's token is used on node c, acknowledging what came before signal 0; y's
    // node switches to node c, and y signals 10-14 straight there.
    process::pause(&node_a);
    send_numbered(&mut y, 5..10).await;
    let mut x2 = Client::from_parts(raw(&node_c.url).await, String::new(), String::new());
    let hello = ClientMessage::Hello { version: PROTOCOL_VERSION, resume_token: Some(token), client: None };
    x2.send_frame(ClientFrame { id: Some(1), ack: Some(before), msg: hello }).await;
    y.expect("peer_resumed").await;
    send_numbered(&mut y, 10..15).await;
    // Node a goes on 100 ms later, long before its heartbeat runs out and within the 500 ms
    // node c waits for it: it hands x over (0-9, which x never processed) while node c holds
    // what y sent it since.
    tokio::time::sleep(Duration::from_millis(100)).await;
    process::resume(&node_a);
    // x gets every signal exactly once, in the order y sent them.
    expect_numbered(&mut x2, 0..15).await;
    x2.expect_silence(Duration::from_millis(500)).await;
    drop((node_a, node_b, node_c));
}
