//! Scale-out over Redis: the async driver between a clustered hub and Redis.
//!
//! The hub stays sans-IO (see `hub::cluster`); this module carries its requests:
//! - **Pool** ([`PoolOp`]): one task runs a node's requests in order, each one atomic Lua script
//!   ([`POOL_SCRIPT`]) over the shared pool; a pairing comes back as [`Input::PoolMatched`] and
//!   goes to the partner's node.
//! - **Between nodes** ([`RemoteMsg`]): every node reads its own stream `duet:node:<id>:inbox`
//!   (`XREAD BLOCK`, in order) and feeds [`Input::Remote`]; a sender task appends to other nodes'
//!   streams in the order the hub emitted, retrying while Redis is away.
//! - **Health**: a `PING` every [`HEALTH_EVERY`]; while it fails the node is unhealthy
//!   ([`StoreHealth`]), and when Redis is back the hub puts its queued sessions into the pool
//!   again ([`Input::PoolRejoin`]: a restarted Redis may have lost it).
//!
//! - **Sessions** ([`directory`]): which node holds each session, and which nodes stopped
//!   beating ([`Input::NodeDown`]), so that a pairing survives the death of a node.
//!
//! The key layout and the guarantees are described in `docs/SCALING.md`.

pub mod device_blocks;
pub mod directory;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::StreamReadReply;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::backend::{Backend, InMemoryBackend, STORE_QUEUE, StoreSink};
use crate::hub::{CodeOutcome, CodeReply, HubConfig, Input, PoolEntry, PoolMatch, PoolOp, RemoteMsg};
use crate::turn::Secret;
use device_blocks::DEVICE_BLOCKS_PREFIX;

/// The pool's sorted set: session id -> place (ascending = longest waiting).
pub const POOL_KEY: &str = "duet:{pool}:queue";
/// The pool's entries: session id -> [`PoolEntry`] as JSON.
pub const POOL_ENTRIES_KEY: &str = "duet:{pool}:entry";
/// When each pooled session entered the pool (Redis time, ms), for the interest wait.
pub const POOL_SINCE_KEY: &str = "duet:{pool}:since";
/// Each node process's heartbeat: its address ([`process_address`]) -> until when (Redis time,
/// ms) it counts as alive. Rewritten every [`STATS_EVERY`]; set to "over now" when the process
/// drains or its successor starts; forgotten an hour after it ran out. A process without a
/// field counts as alive (it has not beaten yet, or Redis restarted empty).
pub const ALIVE_KEY: &str = "duet:{pool}:alive";
/// How long one heartbeat keeps a node alive.
const ALIVE_FOR_MS: u64 = 5000;
/// Writes a heartbeat in Redis's clock. KEYS: alive. ARGV: node id, milliseconds.
const ALIVE_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], now + tonumber(ARGV[2]))
return 1
"#;
/// The counter places are drawn from.
pub const POOL_SEQ_KEY: &str = "duet:{pool}:seq";
/// How many pool entries one matching attempt looks at (oldest first), as in one process.
pub const MAX_SCAN: usize = 1024;
/// How often the node pings Redis.
pub const HEALTH_EVERY: Duration = Duration::from_millis(250);
/// A node's inbox keeps at most about this many messages (older ones are trimmed).
const INBOX_MAXLEN: usize = 100_000;
/// An inbox nobody writes to disappears after this long (a node that is gone).
const INBOX_TTL_SECS: u64 = 600;
/// How long a message for another node is retried while Redis is unreachable before it is
/// dropped (the partner's client replays its own unanswered messages after a resume).
const DELIVERY_PATIENCE: Duration = Duration::from_secs(15);
/// How often a node trims what it has read from its inbox (`XTRIM MINID`).
const TRIM_EVERY: Duration = Duration::from_millis(200);
/// How often a sender renews the expiry of an inbox it writes to.
const EXPIRE_EVERY: Duration = Duration::from_secs(60);
/// Longest wait of one `XREAD`.
const READ_BLOCK_MS: u64 = 1000;

/// The atomic matcher. KEYS: queue, entries, since, seq, alive ([`ALIVE_KEY`]). ARGV: mode (`join` | `retry` |
/// `leave`), session id, entry JSON (for `leave`: the leaving node, whose entry only goes), interest
/// wait (ms), scan limit, device blocks prefix
/// ([`device_blocks::DEVICE_BLOCKS_PREFIX`]). Enters (or updates) the
/// session, then looks for a partner exactly as one process does (see `hub::matching`): the
/// longest-waiting entry sharing an interest or the language; failing that the longest-waiting
/// one, if both accept anyone (not picky, or waited the interest wait); never a pair where either
/// avoids the other, or whose devices blocked each other, and never an entry that is away
/// (`w`: its socket is lost; it keeps its place). A pairing takes both out of the pool in the same script, so nobody is
/// paired twice. An entry of a node whose heartbeat in [`ALIVE_KEY`] is over is removed, never
/// paired. Returns nil, or `[older entry, newer entry]`.
pub const POOL_SCRIPT: &str = r#"
local queue, entries, sinces, seq, alive = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local mode, sid, raw = ARGV[1], ARGV[2], ARGV[3]
local wait, scan, dblocks = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
if mode == 'leave' then
  -- Only the leaving node's own entry: the session may be queued on another node by now.
  local current = redis.call('HGET', entries, sid)
  if current and raw ~= '' and cjson.decode(current).n ~= raw then return false end
  redis.call('ZREM', queue, sid)
  redis.call('HDEL', entries, sid)
  redis.call('HDEL', sinces, sid)
  return false
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local since
if redis.call('ZSCORE', queue, sid) then
  since = tonumber(redis.call('HGET', sinces, sid)) or now
elseif mode == 'join' then
  -- A partner left by `next` goes just ahead of the one who pressed it, if that one waits.
  local ahead = cjson.decode(raw).b
  local theirs = ahead and redis.call('ZSCORE', queue, ahead)
  redis.call('ZADD', queue, theirs and (tonumber(theirs) - 0.5) or redis.call('INCR', seq), sid)
  since = now
  redis.call('HSET', sinces, sid, since)
else
  return false
end
redis.call('HSET', entries, sid, raw)
local me = cjson.decode(raw)
-- Away (its socket lost): it keeps its place, and neither looks nor is looked for.
if me.w then return false end
local function picky(e) return (e.i ~= nil and #e.i > 0) or e.l ~= nil end
local function open(e, s) return (not picky(e)) or now >= s + wait end
local function shares(a, b)
  if a.l ~= nil and a.l == b.l then return true end
  for _, x in ipairs(a.i or {}) do
    for _, y in ipairs(b.i or {}) do
      if x == y then return true end
    end
  end
  return false
end
local function avoids(e, other)
  for _, x in ipairs(e.a or {}) do
    if x == other then return true end
  end
  return false
end
local function devices_blocked(a, b)
  return a.d ~= nil and b.d ~= nil and redis.call('SISMEMBER', dblocks .. a.d, b.d) == 1
end
local me_open = open(me, since)
local pick, any = nil, nil
for _, id in ipairs(redis.call('ZRANGE', queue, 0, scan - 1)) do
  if id ~= sid then
    local oraw = redis.call('HGET', entries, id)
    local o = oraw and cjson.decode(oraw)
    local beat = o and redis.call('HGET', alive, o.n)
    if o and beat and tonumber(beat) < now then
      -- The entry of a node that stopped beating (killed, not drained): it leaves the pool.
      redis.call('ZREM', queue, id)
      redis.call('HDEL', entries, id)
      redis.call('HDEL', sinces, id)
    elseif o and not o.w then
      if not avoids(me, id) and not avoids(o, sid) and not devices_blocked(me, o) then
        if shares(me, o) then
          pick = id
          break
        end
        if any == nil and me_open and open(o, tonumber(redis.call('HGET', sinces, id)) or now) then
          any = id
        end
      end
    end
  end
end
pick = pick or any
if not pick then return false end
local mine = tonumber(redis.call('ZSCORE', queue, sid))
local theirs = tonumber(redis.call('ZSCORE', queue, pick))
local their_raw = redis.call('HGET', entries, pick)
redis.call('ZREM', queue, sid, pick)
redis.call('HDEL', entries, sid, pick)
redis.call('HDEL', sinces, sid, pick)
if theirs < mine then return {their_raw, raw} end
return {raw, their_raw}
"#;

/// Which process of a node id is the current one: `duet:{pool}:incarnation:<id>` -> its
/// address (see [`Cluster::start`]).
pub fn incarnation_key(id: &str) -> String {
    format!("duet:{{pool}}:incarnation:{id}")
}

/// Retires the previous process of a node id when a new one starts. KEYS: the id's
/// [`incarnation_key`], alive, queue, entries, since. ARGV: the new address. The previous
/// address's heartbeat is over from now on (other nodes take it for dead: their sessions'
/// partners there wait for them elsewhere, and what was sent to its inbox is salvaged), and its
/// waiting entries leave the pool. Returns how many entries went.
const RETIRE_SCRIPT: &str = r#"
local previous = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1])
if not previous or previous == ARGV[1] then return 0 end
local t = redis.call('TIME')
redis.call('HSET', KEYS[2], previous, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local all = redis.call('HGETALL', KEYS[4])
local swept = 0
for i = 1, #all, 2 do
  local ok, e = pcall(cjson.decode, all[i + 1])
  if ok and e.n == previous then
    redis.call('ZREM', KEYS[3], all[i])
    redis.call('HDEL', KEYS[4], all[i])
    redis.call('HDEL', KEYS[5], all[i])
    swept = swept + 1
  end
end
return swept
"#;

/// Rooms by code: one hash per room, `duet:room:<hash of the code>`, session id -> entry JSON.
pub const ROOM_KEY_PREFIX: &str = "duet:room:";
/// A room by code nobody joins or leaves for this long disappears (a node that died with a
/// member waiting in it).
const ROOM_TTL_SECS: u64 = 24 * 3600;

/// The atomic room by code. KEYS: the room, alive ([`ALIVE_KEY`]). ARGV: mode (`join` | `leave` |
/// `restore`), session id, entry JSON, may open (`1` | `0`), TTL (s), device blocks prefix. A
/// join into an empty room opens it (if the session may open one); into a room with one member
/// pairs them (unless either avoids the other); a room of two is full. A member of a node whose
/// heartbeat is over is removed first, unless a live member is beside it (its pair may be
/// restored: the room stays full). A repeated join gets the same answer. Returns `{'opened'}`,
/// `{'paired', waiting entry}`, `{'full'}` or `{'rate_limited'}`; a leave returns nil. A restore
/// rewrites the session's entry (now naming its new node) if the room still holds it, and
/// returns `{'kept'}`, else `{'gone'}`.
pub const ROOM_SCRIPT: &str = r#"
local key, alive = KEYS[1], KEYS[2]
local mode, sid, raw, may_open, ttl, dblocks = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
if mode == 'leave' then
  redis.call('HDEL', key, sid)
  return false
end
if mode == 'restore' then
  if redis.call('HEXISTS', key, sid) == 0 then return {'gone'} end
  redis.call('HSET', key, sid, raw)
  redis.call('EXPIRE', key, ttl)
  return {'kept'}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all = redis.call('HGETALL', key)
local mine, live, dead = false, {}, {}
for i = 1, #all, 2 do
  if all[i] == sid then
    mine = true
  else
    local beat = redis.call('HGET', alive, cjson.decode(all[i + 1]).n)
    if beat and tonumber(beat) < now then
      table.insert(dead, all[i])
    else
      table.insert(live, all[i + 1])
    end
  end
end
if #live == 0 then
  -- Members of nodes that stopped beating (killed, not drained), with nobody alive beside
  -- them, leave the room. Beside a live member, such a member keeps its place: its client
  -- may restore it on another node, and the live member's node takes it out if it does not.
  for _, d in ipairs(dead) do redis.call('HDEL', key, d) end
  dead = {}
end
local n = #live + #dead
local other_raw = live[1]
if mine then
  redis.call('HSET', key, sid, raw)
  redis.call('EXPIRE', key, ttl)
  if other_raw then return {'paired', other_raw} end
  return {'opened'}
end
if n == 0 then
  if may_open ~= '1' then return {'rate_limited'} end
  redis.call('HSET', key, sid, raw)
  redis.call('EXPIRE', key, ttl)
  return {'opened'}
end
if n >= 2 then return {'full'} end
local me, other = cjson.decode(raw), cjson.decode(other_raw)
local function avoids(e, id)
  for _, x in ipairs(e.a or {}) do
    if x == id then return true end
  end
  return false
end
local blocked = me.d ~= nil and other.d ~= nil and redis.call('SISMEMBER', dblocks .. me.d, other.d) == 1
if avoids(me, other.s) or avoids(other, sid) or blocked then return {'full'} end
redis.call('HSET', key, sid, raw)
redis.call('EXPIRE', key, ttl)
return {'paired', other_raw}
"#;

/// The key of the room by code `code` (the code itself is not stored: only its SHA-256).
pub fn room_key(code: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(code.as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("{ROOM_KEY_PREFIX}{hex}")
}

/// Each node's counters, as JSON: `duet:stats:<node>`, rewritten every [`STATS_EVERY`] with a
/// TTL of [`STATS_TTL_SECS`], so a node that is gone drops out of the totals.
pub const STATS_KEY_PREFIX: &str = "duet:stats:";
/// The set of node ids that published counters (pruned of nodes whose counters expired).
pub const NODES_KEY: &str = "duet:nodes";
/// How often a node publishes its counters and reads everyone's.
pub const STATS_EVERY: Duration = Duration::from_secs(1);
/// How long a node's published counters live without being rewritten.
const STATS_TTL_SECS: u64 = 5;

/// The key of a node's published counters.
pub fn stats_key(node: &str) -> String {
    format!("{STATS_KEY_PREFIX}{node}")
}

/// The service's counters as the live nodes last published them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceView {
    /// This node's id.
    pub node: String,
    /// Each live node's counters (the JSON of its [`crate::hub::Stats`]), by node id.
    pub per_node: BTreeMap<String, serde_json::Value>,
    /// The sums over `per_node` (every number added up, `errors_total` code by code).
    pub totals: serde_json::Value,
}

/// The latest [`ServiceView`], refreshed every [`STATS_EVERY`] while Redis answers.
#[derive(Debug, Default)]
pub struct ServiceStats {
    view: Mutex<ServiceView>,
}

impl ServiceStats {
    /// The latest view (at most about [`STATS_EVERY`] old).
    pub fn view(&self) -> ServiceView {
        self.view.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Adds `add` into `into`: numbers are summed, objects key by key; anything else is kept.
pub fn sum_json(into: &mut serde_json::Value, add: &serde_json::Value) {
    use serde_json::Value;
    match (into, add) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(existing) => sum_json(existing, v),
                    None => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot @ Value::Number(_), Value::Number(b)) => {
            if let (Some(x), Some(y)) = (slot.as_u64(), b.as_u64()) {
                *slot = Value::from(x.saturating_add(y));
            }
        }
        _ => {}
    }
}

/// What went wrong with Redis, for a log line (the error's kind only: never a URL).
fn kind(err: &redis::RedisError) -> String {
    format!("{:?}", err.kind())
}

/// The stream a node process reads its messages from (`node` is its address).
pub fn inbox_key(node: &str) -> String {
    format!("duet:node:{node}:inbox")
}

/// A node process's address in the service: its id and a random incarnation, `<id>@<hex>`.
/// Pool entries, the session directory, heartbeats and inboxes name processes, so a process
/// restarted under the same id is a new node to the others, and its previous process one that
/// died (see [`RETIRE_SCRIPT`]).
pub fn process_address(id: &str) -> String {
    format!("{id}@{:08x}", rand::random::<u32>())
}

/// Where the node finds Redis, and who it is.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]` (a secret: it may hold a password).
    pub url: Secret,
    /// This node's id (letters, digits, `-`, `_`, `.`; 1 to 64 characters), unique in the service.
    pub node: String,
}

/// Why the Redis driver could not start.
#[derive(Debug, Error)]
pub enum ClusterError {
    /// The URL is not a Redis URL (the URL itself is not repeated: it may hold a password).
    #[error("the Redis URL is not valid: {0}")]
    Url(String),
}

/// Whether Redis answered the last health check.
#[derive(Debug, Default)]
pub struct StoreHealth {
    ok: AtomicBool,
}

impl StoreHealth {
    /// True while Redis answers.
    pub fn is_ok(&self) -> bool {
        self.ok.load(Ordering::Relaxed)
    }
}

/// A valid node id: 1 to 64 characters of letters, digits, `-`, `_` and `.`.
pub fn valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The running driver of one node; its tasks stop when [`Cluster::stop`] is called or it is dropped.
pub struct Cluster {
    /// Redis reachability, for `/health` and upgrades.
    pub health: Arc<StoreHealth>,
    /// The backend the hub runs in.
    pub backend: Arc<InMemoryBackend>,
    /// Every live node's counters and the service totals, for `/metrics` and `/api/webrtc/stats`.
    pub service: Arc<ServiceStats>,
    id: String,
    address: String,
    conn: ConnectionManager,
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    pool_flush: mpsc::UnboundedSender<oneshot::Sender<()>>,
    remote_flush: mpsc::UnboundedSender<oneshot::Sender<()>>,
}

impl Cluster {
    /// Starts a clustered backend for `hub` and the tasks that connect it to Redis. Redis need not
    /// be reachable yet: the node reports unhealthy until it is.
    pub fn start(cfg: &RedisConfig, mut hub: HubConfig, server_version: &str) -> Result<Self, ClusterError> {
        let info = redis::IntoConnectionInfo::into_connection_info(cfg.url.expose())
            .map_err(|e| ClusterError::Url(kind(&e)))?;
        // Small commands go out at once: without TCP_NODELAY, a command written while the reply
        // to the previous one is outstanding waits for Nagle (tens of ms on a relayed signal).
        let tcp = info.tcp_settings().clone().set_nodelay(true);
        let client = redis::Client::open(info.set_tcp_settings(tcp)).map_err(|e| ClusterError::Url(kind(&e)))?;
        let manager_cfg = |response: Duration| {
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(1)))
                .set_response_timeout(Some(response))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500))
        };
        let commands = ConnectionManager::new_lazy_with_config(client.clone(), manager_cfg(Duration::from_secs(2)))
            .map_err(|e| ClusterError::Url(kind(&e)))?;
        // Messages for other nodes have a connection of their own: their batches do not queue
        // behind pool scripts' answers.
        let sending = ConnectionManager::new_lazy_with_config(client.clone(), manager_cfg(Duration::from_secs(2)))
            .map_err(|e| ClusterError::Url(kind(&e)))?;
        let reader =
            ConnectionManager::new_lazy_with_config(client, manager_cfg(Duration::from_millis(READ_BLOCK_MS + 2000)))
                .map_err(|e| ClusterError::Url(kind(&e)))?;
        let (id, node) = (cfg.node.clone(), process_address(&cfg.node));
        let wait_ms = hub.interest_wait.as_millis() as u64;
        hub.cluster_node = Some(node.clone());
        let (pool_tx, pool_rx) = mpsc::channel(STORE_QUEUE);
        let (remote_tx, remote_rx) = mpsc::channel(STORE_QUEUE);
        let sink = StoreSink { pool: pool_tx, remote: remote_tx.clone() };
        let backend = Arc::new(InMemoryBackend::with_store(hub, server_version, sink));
        let health = Arc::new(StoreHealth::default());
        let (stop, stop_rx) = watch::channel(false);
        let (pool_flush, pool_flush_rx) = mpsc::unbounded_channel();
        let (remote_flush, remote_flush_rx) = mpsc::unbounded_channel();
        info!(node = %id, address = %node, "clustered over Redis");
        let service = Arc::new(ServiceStats::default());
        let tasks = vec![
            tokio::spawn(publish_stats(
                commands.clone(),
                id.clone(),
                node.clone(),
                backend.clone(),
                service.clone(),
                stop_rx.clone(),
            )),
            tokio::spawn(watch_health(commands.clone(), health.clone(), backend.clone(), stop_rx.clone())),
            tokio::spawn(run_pool(
                PoolWorker {
                    conn: commands.clone(),
                    id: id.clone(),
                    node: node.clone(),
                    wait_ms,
                    backend: backend.clone(),
                    remote_tx,
                },
                pool_rx,
                pool_flush_rx,
                stop_rx.clone(),
            )),
            tokio::spawn(send_remote(sending, backend.clone(), remote_rx, remote_flush_rx, stop_rx.clone())),
            tokio::spawn(read_inbox(reader, commands.clone(), node.clone(), backend.clone(), stop_rx.clone())),
            tokio::spawn(directory::watch_nodes(commands.clone(), node.clone(), backend.clone(), stop_rx)),
        ];
        Ok(Self { health, backend, service, id, address: node, conn: commands, tasks, stop, pool_flush, remote_flush })
    }

    /// Waits (at most `patience`) until every pool request and message for other nodes the hub
    /// has emitted so far is carried out: a draining node's last word reaches Redis.
    pub async fn flush(&self, patience: Duration) {
        let flushed = async {
            // Pool requests first: they may produce messages for other nodes.
            let (done, wait) = oneshot::channel();
            if self.pool_flush.send(done).is_ok() {
                let _ = wait.await;
            }
            let (done, wait) = oneshot::channel();
            if self.remote_flush.send(done).is_ok() {
                let _ = wait.await;
            }
        };
        if tokio::time::timeout(patience, flushed).await.is_err() {
            warn!("redis did not take this node's last requests in time; stopping anyway");
        }
    }

    /// A draining node leaves the service, within `patience`: its counters leave the totals and
    /// its heartbeat is over. Its inbox stays until it expires: what partners send its sessions
    /// until they hear where those went is salvaged by the nodes that restore them.
    pub async fn leave_service(&self, patience: Duration) {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.cmd("DEL").arg(stats_key(&self.id)).ignore();
        pipe.cmd("SREM").arg(NODES_KEY).arg(&self.id).ignore();
        // A heartbeat that is over: other nodes take this node for gone at once (their sessions'
        // partners here wait for them to come back elsewhere), and never pair what it left.
        // (Over now, not at 0: a heartbeat over for an hour is forgotten, and no heartbeat at
        // all counts as alive.)
        let over = redis::Script::new(ALIVE_SCRIPT);
        pipe.load_script(&over).ignore();
        pipe.invoke_script(over.key(ALIVE_KEY).arg(&self.address).arg(0)).ignore();
        match tokio::time::timeout(patience, pipe.query_async::<()>(&mut conn)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => debug!(error = %kind(&err), "could not withdraw this node's counters"),
            Err(_) => debug!("withdrawing this node's counters timed out"),
        }
    }

    /// The service's session directory.
    pub fn directory(&self) -> directory::Directory {
        directory::Directory::new(self.conn.clone())
    }

    /// Stops the tasks (messages not yet written to Redis are dropped).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sleeps `d`, or returns true at once when `stop` turns.
async fn stopped_during(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

async fn watch_health(
    mut conn: ConnectionManager,
    health: Arc<StoreHealth>,
    backend: Arc<InMemoryBackend>,
    mut stop: watch::Receiver<bool>,
) {
    let mut first = true;
    loop {
        let ping = redis::cmd("PING");
        let ok = matches!(
            tokio::time::timeout(Duration::from_secs(1), ping.query_async::<String>(&mut conn)).await,
            Ok(Ok(_))
        );
        let was = health.ok.swap(ok, Ordering::Relaxed);
        if ok && !was {
            info!("redis reachable; accepting new sessions");
            if !first {
                backend.input(Input::PoolRejoin);
            }
        } else if !ok && (was || first) {
            warn!("redis unreachable; node unhealthy, refusing new sessions");
        }
        first = false;
        if stopped_during(&mut stop, HEALTH_EVERY).await {
            return;
        }
    }
}

/// Writes this process's heartbeat ([`ALIVE_KEY`], under its `address`) and publishes the
/// node's counters (under its id) every [`STATS_EVERY`], and reads every live node's counters.
async fn publish_stats(
    mut conn: ConnectionManager,
    node: String,
    address: String,
    backend: Arc<InMemoryBackend>,
    service: Arc<ServiceStats>,
    mut stop: watch::Receiver<bool>,
) {
    let heartbeat = redis::Script::new(ALIVE_SCRIPT);
    loop {
        // The heartbeat other nodes' scripts check before pairing with this node's sessions.
        let beat = heartbeat.key(ALIVE_KEY).arg(&address).arg(ALIVE_FOR_MS).invoke_async::<()>(&mut conn).await;
        if let Err(err) = beat {
            debug!(error = %kind(&err), "heartbeat failed");
        }
        let mine = serde_json::to_value(backend.stats()).unwrap_or_default();
        match exchange_stats(&mut conn, &node, &mine).await {
            Ok(per_node) => {
                let mut totals = serde_json::json!({});
                for v in per_node.values() {
                    sum_json(&mut totals, v);
                }
                let view = ServiceView { node: node.clone(), per_node, totals };
                *service.view.lock().unwrap_or_else(|e| e.into_inner()) = view;
            }
            Err(err) => debug!(error = %kind(&err), "publishing counters failed"),
        }
        if stopped_during(&mut stop, STATS_EVERY).await {
            return;
        }
    }
}

/// Writes `mine`, then reads the counters of every node whose counters have not expired
/// (nodes whose counters did are pruned from [`NODES_KEY`]).
async fn exchange_stats(
    conn: &mut ConnectionManager,
    node: &str,
    mine: &serde_json::Value,
) -> Result<BTreeMap<String, serde_json::Value>, redis::RedisError> {
    let mut pipe = redis::pipe();
    pipe.cmd("SET").arg(stats_key(node)).arg(mine.to_string()).arg("EX").arg(STATS_TTL_SECS).ignore();
    pipe.cmd("SADD").arg(NODES_KEY).arg(node).ignore();
    pipe.cmd("SMEMBERS").arg(NODES_KEY);
    let (nodes,): (Vec<String>,) = pipe.query_async(conn).await?;
    let keys: Vec<String> = nodes.iter().map(|n| stats_key(n)).collect();
    let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(conn).await?;
    let mut per_node = BTreeMap::new();
    let mut gone = Vec::new();
    for (n, v) in nodes.into_iter().zip(values) {
        match v.and_then(|v| serde_json::from_str::<serde_json::Value>(&v).ok()) {
            Some(v) => {
                per_node.insert(n, v);
            }
            None => gone.push(n),
        }
    }
    if !gone.is_empty() {
        redis::cmd("SREM").arg(NODES_KEY).arg(&gone).query_async::<()>(conn).await?;
    }
    Ok(per_node)
}

struct PoolWorker {
    conn: ConnectionManager,
    /// The node's configured id.
    id: String,
    /// This process's address (see [`process_address`]).
    node: String,
    wait_ms: u64,
    backend: Arc<InMemoryBackend>,
    remote_tx: mpsc::Sender<(String, RemoteMsg)>,
}

/// Most pool and room requests sent to Redis in one pipeline.
const POOL_BATCH: usize = 128;

/// The node's scripts.
struct Scripts {
    pool: redis::Script,
    room: redis::Script,
    claim: redis::Script,
    release: redis::Script,
    block: redis::Script,
}

/// Runs the node's pool and room requests in the order emitted: whatever is queued goes to
/// Redis in one pipeline (at most [`POOL_BATCH`]), which Redis runs in order, each script
/// atomically; a batch is retried until Redis answers. A flush request is answered once every
/// request queued before it is done.
async fn run_pool(
    mut w: PoolWorker,
    mut rx: mpsc::Receiver<PoolOp>,
    mut flush: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
    mut stop: watch::Receiver<bool>,
) {
    let scripts = Scripts {
        pool: redis::Script::new(POOL_SCRIPT),
        room: redis::Script::new(ROOM_SCRIPT),
        claim: redis::Script::new(directory::CLAIM_SCRIPT),
        release: redis::Script::new(directory::RELEASE_SCRIPT),
        block: redis::Script::new(device_blocks::BLOCK_SCRIPT),
    };
    if !w.retire_previous_process(&mut stop).await {
        return;
    }
    let mut rng = StdRng::from_os_rng();
    loop {
        let Some((first, done)) = next_or_flush(&mut rx, &mut flush).await else { return };
        let mut batch = vec![first];
        loop {
            while batch.len() < POOL_BATCH {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            let more = done.is_some() && batch.len() == POOL_BATCH;
            if !w.run_batch(std::mem::take(&mut batch), &scripts, &mut rng, &mut stop).await {
                return;
            }
            if !more {
                break;
            }
        }
        if let Some(done) = done {
            let _ = done.send(());
        }
    }
}

impl PoolWorker {
    /// A process restarted under the node's id (a supervisor's restart) before its first
    /// request: the previous process is taken for dead at once, and its waiting entries leave
    /// the pool (retried until Redis answers); false once the node stops.
    async fn retire_previous_process(&mut self, stop: &mut watch::Receiver<bool>) -> bool {
        let script = redis::Script::new(RETIRE_SCRIPT);
        let mut delay = Duration::from_millis(50);
        loop {
            let mut inv = script.key(incarnation_key(&self.id));
            inv.key(ALIVE_KEY).key(POOL_KEY).key(POOL_ENTRIES_KEY).key(POOL_SINCE_KEY).arg(&self.node);
            match inv.invoke_async::<u64>(&mut self.conn).await {
                Ok(swept) => {
                    if swept > 0 {
                        info!(entries = swept, "pool entries of this node's previous process removed");
                    }
                    return true;
                }
                Err(err) => {
                    debug!(error = %kind(&err), "retiring this node's previous process failed; retrying");
                    if stopped_during(stop, delay).await {
                        return false;
                    }
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Sends one pipeline of requests (retried until Redis answers) and acts on each answer in
    /// order; false once the node stops.
    async fn run_batch(
        &mut self,
        ops: Vec<PoolOp>,
        scripts: &Scripts,
        rng: &mut StdRng,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let mut pipe = redis::pipe();
        // Loading first makes the EVALSHAs below work on a Redis that restarted empty.
        for script in [&scripts.pool, &scripts.room, &scripts.claim, &scripts.release, &scripts.block] {
            pipe.load_script(script).ignore();
        }
        for op in &ops {
            let inv = self.invocation(op, scripts);
            pipe.invoke_script(&inv);
        }
        let mut delay = Duration::from_millis(50);
        let answers = loop {
            match pipe.query_async::<Vec<redis::Value>>(&mut self.conn).await {
                Ok(answers) => break answers,
                Err(err) => {
                    debug!(error = %kind(&err), requests = ops.len(), "store requests failed; retrying");
                    if stopped_during(stop, delay).await {
                        return false;
                    }
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
            }
        };
        for (op, answer) in ops.into_iter().zip(answers) {
            match op {
                PoolOp::Join(_) | PoolOp::Retry(_) => {
                    self.pool_answer(redis::from_redis_value(answer).unwrap_or_default(), rng).await
                }
                PoolOp::JoinCode { code, entry, .. } => {
                    self.code_answer(code, entry, redis::from_redis_value(answer).unwrap_or_default()).await
                }
                PoolOp::Claim { session, .. } => {
                    let answer = redis::from_redis_value(answer).unwrap_or_default();
                    self.backend.input(Input::Claimed(Box::new(directory::claimed(session, answer))));
                }
                PoolOp::RestoreCode { code, entry } => {
                    let answer: Vec<String> = redis::from_redis_value(answer).unwrap_or_default();
                    let kept = answer.first().is_some_and(|a| a == "kept");
                    self.backend.input(Input::CodeRestored { code, session: entry.session, kept });
                }
                PoolOp::Leave { .. }
                | PoolOp::LeaveCode { .. }
                | PoolOp::Release { .. }
                | PoolOp::BlockDevices { .. } => {}
            }
        }
        true
    }

    /// The script call carrying `op`.
    fn invocation<'a>(&self, op: &PoolOp, scripts: &'a Scripts) -> redis::ScriptInvocation<'a> {
        let pool = |mode: &str, session: &str, raw: String| {
            let mut inv = scripts.pool.key(POOL_KEY);
            inv.key(POOL_ENTRIES_KEY).key(POOL_SINCE_KEY).key(POOL_SEQ_KEY).key(ALIVE_KEY);
            inv.arg(mode).arg(session).arg(raw).arg(self.wait_ms).arg(MAX_SCAN).arg(DEVICE_BLOCKS_PREFIX);
            inv
        };
        match op {
            PoolOp::Join(e) => pool("join", &e.session, serde_json::to_string(e).unwrap_or_default()),
            PoolOp::Retry(e) => pool("retry", &e.session, serde_json::to_string(e).unwrap_or_default()),
            PoolOp::Leave { session } => pool("leave", session, self.node.clone()),
            PoolOp::JoinCode { code, entry, may_open } => {
                let mut inv = scripts.room.key(room_key(code));
                inv.key(ALIVE_KEY);
                let raw = serde_json::to_string(entry).unwrap_or_default();
                inv.arg("join").arg(&entry.session).arg(raw).arg(u8::from(*may_open)).arg(ROOM_TTL_SECS);
                inv.arg(DEVICE_BLOCKS_PREFIX);
                inv
            }
            PoolOp::LeaveCode { code, session } => {
                let mut inv = scripts.room.key(room_key(code));
                inv.key(ALIVE_KEY);
                inv.arg("leave").arg(session).arg("").arg(0).arg(ROOM_TTL_SECS).arg(DEVICE_BLOCKS_PREFIX);
                inv
            }
            PoolOp::RestoreCode { code, entry } => {
                let mut inv = scripts.room.key(room_key(code));
                inv.key(ALIVE_KEY);
                let raw = serde_json::to_string(entry).unwrap_or_default();
                inv.arg("restore").arg(&entry.session).arg(raw).arg(0).arg(ROOM_TTL_SECS).arg(DEVICE_BLOCKS_PREFIX);
                inv
            }
            PoolOp::Claim { session, partner } => {
                directory::claim(&scripts.claim, &self.node, session, partner.as_deref())
            }
            PoolOp::Release { session } => directory::release(&scripts.release, &self.node, session),
            PoolOp::BlockDevices { a, b } => device_blocks::block(&scripts.block, a, b),
        }
    }

    /// The pool script's answer: nothing, or a pairing for this node and its partner's.
    async fn pool_answer(&mut self, paired: Option<Vec<String>>, rng: &mut StdRng) {
        let Some([first, second]) = paired.and_then(|v| <[String; 2]>::try_from(v).ok()) else { return };
        let (Ok(first), Ok(second)) =
            (serde_json::from_str::<PoolEntry>(&first), serde_json::from_str::<PoolEntry>(&second))
        else {
            warn!("unreadable pool entry; pairing dropped");
            return;
        };
        let room = format!("r-{:012x}", rng.next_u64() & 0xffff_ffff_ffff);
        let m = PoolMatch { room, first, second };
        debug!(room = %m.room, a = %m.first.session, b = %m.second.session, "pool paired");
        // The partner's node learns of the pairing before anything this node's hub says next.
        let mut told = Vec::new();
        for side in [&m.first, &m.second] {
            if side.node != self.node && !told.contains(&side.node) {
                told.push(side.node.clone());
                let _ = self.remote_tx.send((side.node.clone(), RemoteMsg::Matched(Box::new(m.clone())))).await;
            }
        }
        self.backend.input(Input::PoolMatched(Box::new(m)));
    }

    /// The room script's answer to a `join_room`; the waiting member's node hears of a pairing
    /// before this node's hub does (so before any signal of the newcomer).
    async fn code_answer(&mut self, code: String, entry: PoolEntry, answer: Vec<String>) {
        let outcome = match answer.first().map(String::as_str) {
            Some("opened") => CodeOutcome::Opened,
            Some("full") => CodeOutcome::Full,
            Some("rate_limited") => CodeOutcome::RateLimited,
            Some("paired") => match answer.get(1).and_then(|w| serde_json::from_str::<PoolEntry>(w).ok()) {
                Some(waiting) => CodeOutcome::Paired(Box::new(waiting)),
                None => {
                    warn!("unreadable room member; treated as a full room");
                    CodeOutcome::Full
                }
            },
            _ => {
                warn!("unexpected answer of the room script; treated as a full room");
                CodeOutcome::Full
            }
        };
        if let CodeOutcome::Paired(waiting) = &outcome
            && waiting.node != self.node
        {
            let msg =
                RemoteMsg::CodePaired { code: code.clone(), waiting: waiting.clone(), joiner: Box::new(entry.clone()) };
            let _ = self.remote_tx.send((waiting.node.clone(), msg)).await;
        }
        self.backend.input(Input::CodeReply(Box::new(CodeReply { code, joiner: entry, outcome })));
    }
}

/// Most batches for other nodes written to Redis and not answered yet. A message does not wait
/// for the answer to the batch before it (a round trip through Redis, which on a busy machine
/// waits for a core as the nodes do) before it is written.
const SEND_WINDOW: usize = 8;

/// A batch for other nodes, written to Redis or about to be.
struct Outbound {
    batch: Vec<(String, RemoteMsg)>,
    /// The salvages asked for with it: they run once it and everything before it is written.
    salvages: BTreeMap<(String, bool), Vec<String>>,
    /// A flush request, answered once it and everything before it is written.
    done: Option<oneshot::Sender<()>>,
    /// Its `MULTI`/`EXEC`, with the time of its first attempt.
    pipe: Option<(Arc<redis::Pipeline>, Instant)>,
    /// The call in flight.
    call: Option<Pin<Box<dyn Future<Output = redis::RedisResult<()>> + Send>>>,
    /// Its answer, once there.
    answer: Option<redis::RedisResult<()>>,
}

/// Appends messages to other nodes' inboxes, in order, in atomic batches, up to
/// [`SEND_WINDOW`] batches in flight on the connection. A flush request is answered once every
/// message queued before it was written (or given up on).
async fn send_remote(
    conn: ConnectionManager,
    backend: Arc<InMemoryBackend>,
    mut rx: mpsc::Receiver<(String, RemoteMsg)>,
    mut flush: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut expired_at: HashMap<String, Instant> = HashMap::new();
    let salvage = redis::Script::new(directory::SALVAGE_SCRIPT);
    let mut in_flight: VecDeque<Outbound> = VecDeque::new();
    loop {
        tokio::select! {
            biased;
            oldest = answered(&mut in_flight), if !in_flight.is_empty() => {
                if !settle(oldest, &mut in_flight, &conn, &salvage, &backend, &mut stop).await {
                    return;
                }
            }
            next = next_or_flush(&mut rx, &mut flush), if in_flight.len() < SEND_WINDOW => {
                let Some((first, done)) = next else {
                    // The hub is gone: what is in flight is still written.
                    while !in_flight.is_empty() {
                        let oldest = answered(&mut in_flight).await;
                        if !settle(oldest, &mut in_flight, &conn, &salvage, &backend, &mut stop).await {
                            return;
                        }
                    }
                    return;
                };
                let mut batch = vec![first];
                // A flush sends everything queued; otherwise batches of at most 256.
                while done.is_some() || batch.len() < 256 {
                    match rx.try_recv() {
                        Ok(m) => batch.push(m),
                        Err(_) => break,
                    }
                }
                // Salvages run once every message of the batch is written (so after all this
                // node wrote before asking, its `Handover` requests included), off this task, one
                // pass over each old inbox.
                let mut salvages: BTreeMap<(String, bool), Vec<String>> = BTreeMap::new();
                batch.retain(|(node, m)| match m {
                    RemoteMsg::Salvage { session, force } => {
                        salvages.entry((node.clone(), *force)).or_default().push(session.clone());
                        false
                    }
                    _ => true,
                });
                let pipe = (!batch.is_empty()).then(|| (Arc::new(batch_pipe(&batch, &mut expired_at)), Instant::now()));
                let call = pipe.as_ref().map(|(pipe, _)| write_batch(conn.clone(), pipe.clone()));
                // The call is first polled by `answered`, after every older one.
                in_flight.push_back(Outbound { batch, salvages, done, pipe, call, answer: None });
            }
        }
    }
}

/// The oldest batch in flight has its answer: if it failed, every batch still in flight gets its
/// answer and the failed ones go again, in order, each retried for [`DELIVERY_PATIENCE`] as
/// before. Then what waited for them goes on. False once the node stops.
async fn settle(
    oldest: Outbound,
    in_flight: &mut VecDeque<Outbound>,
    conn: &ConnectionManager,
    salvage: &redis::Script,
    backend: &Arc<InMemoryBackend>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let failed = matches!(oldest.answer, Some(Err(_)));
    let mut written = vec![oldest];
    if failed {
        written.extend(in_flight.drain(..));
        if !retry_failed(conn, &mut written, stop).await {
            return false;
        }
    }
    for w in written {
        finish(w, conn, salvage, backend);
    }
    true
}

/// One attempt at writing a batch.
fn write_batch(
    mut conn: ConnectionManager,
    pipe: Arc<redis::Pipeline>,
) -> Pin<Box<dyn Future<Output = redis::RedisResult<()>> + Send>> {
    Box::pin(async move { pipe.query_async::<()>(&mut conn).await })
}

/// The oldest batch in flight, once it has its answer. Every call in flight is polled, oldest
/// first, so each one's request joins the connection's queue (first come, first served) behind
/// those of the batches before it: Redis runs the batches in the order they were made.
fn answered(in_flight: &mut VecDeque<Outbound>) -> impl Future<Output = Outbound> + '_ {
    std::future::poll_fn(move |cx| {
        for o in in_flight.iter_mut() {
            if let Some(call) = o.call.as_mut()
                && let Poll::Ready(answer) = call.as_mut().poll(cx)
            {
                o.answer = Some(answer);
                o.call = None;
            }
        }
        if in_flight.front().is_some_and(|o| o.call.is_none()) {
            in_flight.pop_front().map_or(Poll::Pending, Poll::Ready)
        } else {
            Poll::Pending
        }
    })
}

/// The first of `written` failed: waits for the answers of the others, then writes again, in
/// order, each that failed, retried for [`DELIVERY_PATIENCE`] from its first attempt; false once
/// the node stops. (A batch after a failed one that went through stays written: only a Redis
/// that refuses one `EXEC` and takes the next does that, and then the failed one follows it.)
async fn retry_failed(conn: &ConnectionManager, written: &mut [Outbound], stop: &mut watch::Receiver<bool>) -> bool {
    for o in written.iter_mut() {
        if let Some(call) = o.call.take() {
            o.answer = Some(call.await);
        }
    }
    let mut failed_before = false;
    for o in written.iter_mut() {
        let (Some(Err(err)), Some((pipe, started))) = (&o.answer, &o.pipe) else {
            if failed_before && o.pipe.is_some() {
                warn!(
                    messages = o.batch.len(),
                    "messages for other nodes went through ahead of an earlier batch that failed"
                );
            }
            continue;
        };
        failed_before = true;
        debug!(error = %kind(err), messages = o.batch.len(), "sending to other nodes failed; retrying");
        let mut conn = conn.clone();
        if !send_batch(&mut conn, pipe, o.batch.len(), *started, stop).await {
            return false;
        }
        o.answer = Some(Ok(()));
    }
    true
}

/// A batch is written (or given up on): what waited for it goes on.
fn finish(o: Outbound, conn: &ConnectionManager, salvage: &redis::Script, backend: &Arc<InMemoryBackend>) {
    for ((node, force), sessions) in o.salvages {
        let (mut conn, salvage, backend) = (conn.clone(), salvage.clone(), backend.clone());
        tokio::spawn(async move {
            let (node_alive, found) = salvage_inbox(&mut conn, &salvage, &node, sessions, force).await;
            for (session, messages) in found {
                backend.input(Input::Salvaged { session, messages, node_alive });
            }
        });
    }
    if let Some(done) = o.done {
        let _ = done.send(());
    }
}

/// Takes out of `node`'s inbox what it never read for `sessions`, unless `node` still beats
/// and the salvage is not forced: returns whether it was left alone for that reason, and each
/// session's list. If Redis fails, nothing is taken: an unforced salvage counts as left alone
/// (the hub goes on waiting for the node, and forces a salvage later); a forced one is given
/// empty lists (what was there is lost, as the warning says).
async fn salvage_inbox(
    conn: &mut ConnectionManager,
    script: &redis::Script,
    node: &str,
    sessions: Vec<String>,
    force: bool,
) -> (bool, BTreeMap<String, Vec<RemoteMsg>>) {
    let mut inv = script.key(inbox_key(node));
    inv.key(directory::read_marker_key(node)).key(ALIVE_KEY);
    inv.arg(node).arg(if force { "1" } else { "0" });
    for s in &sessions {
        inv.arg(s);
    }
    let mut found: BTreeMap<String, Vec<RemoteMsg>> = sessions.into_iter().map(|s| (s, Vec::new())).collect();
    match inv.invoke_async::<Vec<String>>(conn).await {
        Ok(raw) if raw.first().is_some_and(|status| status == "alive") => return (true, found),
        Ok(raw) => {
            for pair in raw.get(1..).unwrap_or_default().chunks_exact(2) {
                if let (Some(list), Ok(msg)) = (found.get_mut(&pair[0]), serde_json::from_str(&pair[1])) {
                    list.push(msg);
                }
            }
        }
        Err(err) if !force => {
            debug!(error = %kind(&err), "salvaging an old node's inbox failed; it is tried again later");
            return (true, found);
        }
        Err(err) => warn!(error = %kind(&err), "salvaging an old node's inbox failed; what it held is lost"),
    }
    (false, found)
}

/// One batch in a `MULTI`/`EXEC` (with the inboxes' expiry renewed every [`EXPIRE_EVERY`]).
fn batch_pipe(batch: &[(String, RemoteMsg)], expired_at: &mut HashMap<String, Instant>) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.atomic();
    let mut keys = Vec::new();
    for (node, msg) in batch {
        let key = inbox_key(node);
        let data = serde_json::to_vec(msg).unwrap_or_default();
        pipe.cmd("XADD").arg(&key).arg("MAXLEN").arg("~").arg(INBOX_MAXLEN).arg("*").arg("d").arg(data).ignore();
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    for key in keys {
        if expired_at.get(&key).is_none_or(|at| at.elapsed() >= EXPIRE_EVERY) {
            pipe.cmd("EXPIRE").arg(&key).arg(INBOX_TTL_SECS).ignore();
            expired_at.insert(key, Instant::now());
        }
    }
    pipe
}

/// Writes a batch whose first attempt (at `started`) failed again, retried until
/// [`DELIVERY_PATIENCE`] after that; false once the node stops.
async fn send_batch(
    conn: &mut ConnectionManager,
    pipe: &redis::Pipeline,
    messages: usize,
    started: Instant,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let mut delay = Duration::from_millis(50);
    loop {
        if started.elapsed() >= DELIVERY_PATIENCE {
            warn!(messages, "redis away too long; messages for other nodes dropped");
            return true;
        }
        if stopped_during(stop, delay).await {
            return false;
        }
        delay = (delay * 2).min(Duration::from_secs(1));
        match pipe.query_async::<()>(conn).await {
            Ok(()) => return true,
            Err(err) => debug!(error = %kind(&err), messages, "sending to other nodes failed; retrying"),
        }
    }
}

/// Reads this node's inbox in order and feeds the hub; read entries are deleted.
async fn read_inbox(
    mut conn: ConnectionManager,
    trim: ConnectionManager,
    node: String,
    backend: Arc<InMemoryBackend>,
    mut stop: watch::Receiver<bool>,
) {
    let (key, marker) = (inbox_key(&node), directory::read_marker_key(&node));
    let mut last = "0-0".to_string();
    let mut trimmed_at = Instant::now();
    loop {
        if *stop.borrow() {
            return;
        }
        // The marker says what the hub has taken: if this node dies, whoever restores one of
        // its sessions takes what comes after it (`directory::SALVAGE_SCRIPT`).
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg(&marker).arg(&last).arg("EX").arg(INBOX_TTL_SECS).ignore();
        pipe.cmd("XREAD").arg("COUNT").arg(512).arg("BLOCK").arg(READ_BLOCK_MS).arg("STREAMS").arg(&key).arg(&last);
        let read = pipe.query_async::<(Option<StreamReadReply>,)>(&mut conn).await.map(|(reply,)| reply);
        let reply = match read {
            Ok(Some(reply)) => reply,
            Ok(None) => continue,
            Err(err) => {
                debug!(error = %kind(&err), "reading the inbox failed; retrying");
                if stopped_during(&mut stop, Duration::from_millis(200)).await {
                    return;
                }
                continue;
            }
        };
        let mut read_any = false;
        for stream in reply.keys {
            for entry in stream.ids {
                match entry.get::<String>("d").and_then(|d| serde_json::from_str::<RemoteMsg>(&d).ok()) {
                    Some(msg) => backend.input(Input::Remote(msg)),
                    None => warn!("unreadable message in the inbox; skipped"),
                }
                last = entry.id;
                read_any = true;
            }
        }
        if read_any && trimmed_at.elapsed() >= TRIM_EVERY {
            // What was read goes, at most every TRIM_EVERY, on another connection and without
            // waiting: the next read starts at once.
            trimmed_at = Instant::now();
            let (mut trim, key, below) = (trim.clone(), key.clone(), last.clone());
            tokio::spawn(async move {
                let trimmed =
                    redis::cmd("XTRIM").arg(&key).arg("MINID").arg(&below).query_async::<u64>(&mut trim).await;
                if let Err(err) = trimmed {
                    debug!(error = %kind(&err), "trimming the inbox failed");
                }
            });
        }
    }
}

/// The next queued item, or a flush request: with items queued, the first of them and the
/// request (answered once they are sent); with none, the request is answered at once and the
/// wait goes on. `None` once the queue is closed.
async fn next_or_flush<T>(
    rx: &mut mpsc::Receiver<T>,
    flush: &mut mpsc::UnboundedReceiver<oneshot::Sender<()>>,
) -> Option<(T, Option<oneshot::Sender<()>>)> {
    loop {
        tokio::select! {
            biased;
            item = rx.recv() => return item.map(|item| (item, None)),
            Some(done) = flush.recv() => match rx.try_recv() {
                Ok(item) => return Some((item, Some(done))),
                Err(_) => {
                    let _ = done.send(());
                }
            },
        }
    }
}
