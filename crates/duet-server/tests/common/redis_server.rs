//! The service over a real `redis-server` ([`RedisServer`]): nodes on it and waits on its state.

use std::time::{Duration, Instant};

use duet_server::ServerConfig;
use duet_server::cluster::RedisConfig;
use duet_server::hub::HubConfig;
use duet_server::turn::Secret;

use super::TestServer;

#[path = "redis_process.rs"]
mod redis_process;
pub use redis_process::RedisServer;

/// A node of the service on 127.0.0.1:0, sharing the pool through `redis`.
pub async fn node(redis: &RedisServer, id: &str, hub: HubConfig) -> TestServer {
    let cfg = ServerConfig { listen: "127.0.0.1:0".parse().unwrap(), hub, ..ServerConfig::default() };
    node_with(redis, id, cfg).await
}

/// [`node`] with the rest of its configuration from `cfg`.
pub async fn node_with(redis: &RedisServer, id: &str, cfg: ServerConfig) -> TestServer {
    let cfg = ServerConfig { redis: Some(RedisConfig { url: Secret::new(redis.url()), node: id.into() }), ..cfg };
    let server = TestServer::from_config(cfg).await;
    wait_health(&server, 200).await;
    server
}

/// Polls `/health` until it answers `status` (within 10 s); returns the body.
pub async fn wait_health(server: &TestServer, status: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (got, body) = server.get("/health").await;
        if got == status {
            return body;
        }
        assert!(Instant::now() < deadline, "/health answered {got} {body}, not {status}, for 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (up to 10 s) until the shared pool in `redis` holds `n` waiting sessions: a `queued`
/// reply comes before the node's request has reached Redis.
pub async fn wait_pool(redis: &RedisServer, n: usize) {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let len: usize = redis::cmd("ZCARD").arg(duet_server::cluster::POOL_KEY).query_async(&mut conn).await.unwrap();
        if len == n {
            return;
        }
        assert!(Instant::now() < deadline, "the pool holds {len} sessions, not {n}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (up to 10 s) until `redis` records that `session` ended for good.
pub async fn wait_ended(redis: &RedisServer, session: &str) {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = duet_server::cluster::directory::ended_key(session);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ended: bool = redis::cmd("EXISTS").arg(&key).query_async(&mut conn).await.unwrap();
        if ended {
            return;
        }
        assert!(Instant::now() < deadline, "no record that session {session} ended");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
