//! End to end over a scaled-out service: `duet` calls through nodes sharing a real
//! `redis-server`, one node killed mid-call.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use duet_server::cluster::RedisConfig;
use duet_server::hub::token::TokenKey;
use duet_server::turn::Secret;
use duet_server::{Server, ServerConfig};
use tokio::task::JoinHandle;

mod common;
#[path = "../../duet-server/tests/common/redis_process.rs"]
mod redis_process;

use common::*;
use redis_process::RedisServer;

/// A node of the service in this process; aborting its task kills it as SIGKILL would: no
/// drain, no goodbye, sockets cut, heartbeat stopped.
async fn node(redis: &RedisServer, id: &str) -> (SocketAddr, JoinHandle<()>) {
    let mut cfg = ServerConfig { listen: "127.0.0.1:0".parse().unwrap(), ..ServerConfig::default() };
    cfg.hub.resume_key = Some(TokenKey::new(b"one secret for the whole service".to_vec()));
    cfg.redis = Some(RedisConfig { url: Secret::new(redis.url()), node: id.into() });
    let server = Server::bind(cfg).await.unwrap();
    let addr = server.local_addr();
    let task = tokio::spawn(server.run(std::future::pending()));
    for _ in 0..200 {
        if http_get_json(addr, "/health").await["status"] == "ok" {
            return (addr, task);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("node {id} never became healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_call_its_client_moves_to_another_and_the_call_goes_on() {
    let _slot = call_slot().await;
    let redis = RedisServer::start();
    let ((a, a_task), (b, _b_task), (c, _c_task)) =
        (node(&redis, "a").await, node(&redis, "b").await, node(&redis, "c").await);
    // x reaches the service through a load balancer that sends it to node a while a is up,
    // then to node c; y is on node b. They are paired through the shared pool.
    let balancer = CutRelay::balancing(vec![a, c]).await;
    let x = tokio::spawn(duet(call_args(balancer.addr, &["--duration", "16"])));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let y = tokio::spawn(duet(call_args(
        b,
        &["--duration", "16", "--chat", "sent while x's node was dead", "--chat-after", "6"],
    )));
    tokio::time::sleep(Duration::from_secs(4)).await;
    a_task.abort();
    let (x, y) = (x.await.unwrap(), y.await.unwrap());
    assert_eq!((x.code, y.code), (0, 0), "{}\n{}", x.stderr, y.stderr);
    for run in [&x, &y] {
        assert_eq!(run.count("matched"), 1, "the pairing survived: no new match\n{}", run.stderr);
        for e in run.events.iter().filter(|e| e["state"] == "ended") {
            assert_eq!(e["reason"], "Your partner left.", "only the hang-up at the end: {e}\n{}", run.stderr);
        }
        let freeze = u(&run.summary()["longest_video_freeze_ms"]);
        assert!(freeze < 1500, "media never stopped: longest freeze {freeze} ms\n{}", run.stderr);
    }
    check_media(&x, &y, 640, 360);
    check_media(&y, &x, 640, 360);
    let restored = x.events.iter().any(|e| e["event"] == "recovered" && e["fixed_by"] == "session_restore");
    assert!(restored, "x's session was restored on another node\n{}", x.stderr);
    let received: Vec<&serde_json::Value> = x.events.iter().filter(|e| e["event"] == "chat_received").collect();
    assert_eq!(received.len(), 1, "the chat arrived exactly once: {received:?}");
    // x's session was restored on node c and its pairing with y on node b rejoined there.
    let (stats_b, stats_c) = (http_get_json(b, "/api/webrtc/stats").await, http_get_json(c, "/api/webrtc/stats").await);
    assert_eq!(stats_c["sessions_restored_total"], 1, "{stats_c}");
    assert_eq!(stats_b["pairings_restored_total"], 1, "{stats_b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_whose_node_is_killed_goes_on_from_another_node_and_finds_a_partner() {
    let _slot = call_slot().await;
    let redis = RedisServer::start();
    let ((a, a_task), (b, _b_task), (c, _c_task)) =
        (node(&redis, "a").await, node(&redis, "b").await, node(&redis, "c").await);
    // x searches on node a (through the balancer), and node a dies while x waits.
    let balancer = CutRelay::balancing(vec![a, c]).await;
    let args = ["--duration", "4", "--connect-timeout", "20", "--interest", "rare"];
    let x = tokio::spawn(duet(call_args(balancer.addr, &args)));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a_task.abort();
    // x's session is rebuilt on node c, without its place in the queue: x asks for it again,
    // and a newcomer on node b is paired with it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let y = tokio::spawn(duet(call_args(b, &args)));
    let (x, y) = (x.await.unwrap(), y.await.unwrap());
    assert_eq!((x.code, y.code), (0, 0), "{}\n{}", x.stderr, y.stderr);
    for run in [&x, &y] {
        assert_eq!(run.count("matched"), 1, "{}", run.stderr);
    }
    check_media(&x, &y, 640, 360);
    let stats_c = http_get_json(c, "/api/webrtc/stats").await;
    assert_eq!(stats_c["sessions_restored_total"], 1, "x was restored on node c: {stats_c}");
}
