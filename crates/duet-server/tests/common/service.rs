//! The service under test in either mode, so one behavioural test runs against both: one
//! in-memory server, or two nodes sharing a real `redis-server` with the test's clients spread
//! over them (client 0 on node a, client 1 on node b, client 2 on node a, ...).

use std::time::{Duration, Instant};

use duet_proto::ClientMessage;
use duet_server::ServerConfig;
use duet_server::hub::HubConfig;
use duet_server::hub::token::TokenKey;

use super::redis_server::{RedisServer, node_with, wait_ended, wait_pool};
use super::{Client, TestServer, matched_pair_at};

/// How the service stores its shared state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One process, everything in its memory (the embedded mode).
    Memory,
    /// Two nodes sharing the pool, rooms and relay through Redis (`--redis`).
    Redis,
}

/// One test's service. The nodes stop before Redis does (fields drop in order).
pub struct Service {
    pub mode: Mode,
    nodes: Vec<TestServer>,
    redis: Option<RedisServer>,
}

impl Service {
    pub async fn start(mode: Mode, hub: HubConfig) -> Self {
        Self::from_config(mode, ServerConfig { hub, ..ServerConfig::default() }).await
    }

    /// Every node gets `cfg` with a listen address of 127.0.0.1:0 (and, with Redis, its node id,
    /// and one resume secret for the whole service, as the deployment guide asks).
    pub async fn from_config(mode: Mode, cfg: ServerConfig) -> Self {
        let cfg = ServerConfig { listen: "127.0.0.1:0".parse().unwrap(), ..cfg };
        match mode {
            Mode::Memory => Self { mode, nodes: vec![TestServer::from_config(cfg).await], redis: None },
            Mode::Redis => {
                let redis = RedisServer::start();
                let mut cfg = cfg;
                if cfg.hub.resume_key.is_none() {
                    cfg.hub.resume_key = Some(TokenKey::new(b"one secret for the whole service".to_vec()));
                }
                let mut nodes = Vec::new();
                for id in ["a", "b"] {
                    nodes.push(node_with(&redis, id, cfg.clone()).await);
                }
                Self { mode, nodes, redis: Some(redis) }
            }
        }
    }

    /// The node of the `i`-th client of the test (counting from 0).
    pub fn node(&self, i: usize) -> &TestServer {
        &self.nodes[i % self.nodes.len()]
    }

    /// The WebSocket URL for the `i`-th client of the test.
    pub fn url(&self, i: usize) -> &str {
        &self.node(i).url
    }

    /// GET a path on the first client's node.
    pub async fn get(&self, path: &str) -> (u16, String) {
        self.node(0).get(path).await
    }

    /// [`Service::get`] with extra request headers.
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        self.node(0).get_with(path, headers).await
    }

    /// Waits until `n` sessions wait in the queue. A `queued` reply on a node of the service
    /// comes before its request reaches Redis, whose order decides who waited longer. In one
    /// process the session is in the queue when `queued` is sent.
    pub async fn queue_holds(&self, n: usize) {
        if let Some(redis) = &self.redis {
            wait_pool(redis, n).await;
        }
    }

    /// Waits until the service has recorded that `session` ended: at once in one process, where
    /// the session ends in the server's memory; with Redis, until its node's record of the end
    /// reached Redis (within 10 s), which may come after its partner was told.
    pub async fn ended(&self, session: &str) {
        if let Some(redis) = &self.redis {
            wait_ended(redis, session).await;
        }
    }

    /// Two clients (the 0th and the 1st) matched through the queue: (impolite, polite).
    pub async fn matched_pair(&self) -> (Client, Client) {
        let mut a = Client::connect(self.url(0)).await;
        let b = Client::connect(self.url(1)).await;
        a.send(ClientMessage::JoinQueue { interests: vec![], language: None }).await;
        a.expect("queued").await;
        self.queue_holds(1).await;
        matched_pair_at(a, b).await
    }

    /// The service's counters (`/api/webrtc/stats`) once `done` holds for them, and returns
    /// them. In one process: the server's own, read once. With Redis: the totals over the
    /// nodes, which each node republishes every second; every node must report them within 10 s.
    pub async fn totals(&self, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        for server in &self.nodes {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let (_, body) = server.get("/api/webrtc/stats").await;
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                let totals = match self.mode {
                    Mode::Memory => v.clone(),
                    Mode::Redis if v["service"]["nodes"] == self.nodes.len() => v["service"]["totals"].clone(),
                    Mode::Redis => serde_json::Value::Null,
                };
                if done(&totals) {
                    last = totals;
                    break;
                }
                assert!(self.mode == Mode::Redis && Instant::now() < deadline, "the service's counters: {v}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        last
    }

    /// Waits until `/metrics` has the service's `line`: `duet_<line>` in one process, the total
    /// `duet_service_<line>` over the nodes with Redis (on every node, within 10 s).
    pub async fn metric(&self, line: &str) {
        let line = match self.mode {
            Mode::Memory => format!("duet_{line}"),
            Mode::Redis => format!("duet_service_{line}"),
        };
        for server in &self.nodes {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let (_, metrics) = server.get("/metrics").await;
                if metrics.lines().any(|l| l == line) {
                    break;
                }
                assert!(self.mode == Mode::Redis && Instant::now() < deadline, "missing {line:?} in:\n{metrics}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Runs each named `async fn name(mode: Mode)` of the file as two tests, `memory::name` and
/// `redis::name`.
#[allow(unused_macros)]
macro_rules! both_modes {
    ($($name:ident),+ $(,)?) => {
        mod memory {
            $(#[tokio::test]
            async fn $name() {
                super::$name($crate::common::Mode::Memory).await
            })+
        }
        mod redis {
            $(#[tokio::test]
            async fn $name() {
                super::$name($crate::common::Mode::Redis).await
            })+
        }
    };
}
pub(crate) use both_modes;
