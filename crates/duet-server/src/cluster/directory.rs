//! The session directory and the watch on other nodes' heartbeats (see `hub::failover`).
//!
//! - `duet:{pool}:home:<session>` holds the node of a live session: set by [`CLAIM_SCRIPT`] when
//!   a node takes a session (new or restored), removed by [`RELEASE_SCRIPT`] when it ends there,
//!   and expiring with the session's restorable age otherwise (its node died and nobody came back).
//! - `duet:{pool}:ended:<session>` says a session ended for good (its grace period ran out on its
//!   node): set by [`RELEASE_SCRIPT`] for as long as a token of the session could be restored, it
//!   makes [`CLAIM_SCRIPT`] refuse the session, so its tokens start new sessions on every node.
//!   (A live session without a directory entry, as after a Redis restart, is still restored.)
//! - [`watch_nodes`] reads every node's heartbeat ([`ALIVE_KEY`]) each [`WATCH_EVERY`] and feeds
//!   [`Input::NodeDown`] once for each node whose heartbeat ran out. When this node's own
//!   heartbeat was seen over (its writes were late), other nodes' scripts may have removed its
//!   waiting entries: once it beats again, its queued sessions re-enter the pool
//!   ([`Input::PoolRejoin`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::watch;
use tracing::{debug, info};

use super::{ALIVE_KEY, kind, stopped_during};
use crate::backend::{Backend, InMemoryBackend};
use crate::hub::{Claimed, Input, MAX_RESTORE_AGE_SECS};

/// Prefix of the directory's keys (in the pool's hash slot: a claim reads two of them).
pub const HOME_KEY_PREFIX: &str = "duet:{pool}:home:";

/// The directory key of `session`.
pub fn home_key(session: &str) -> String {
    format!("{HOME_KEY_PREFIX}{session}")
}

/// Prefix of the keys that say a session ended (in the pool's hash slot, with its home).
pub const ENDED_KEY_PREFIX: &str = "duet:{pool}:ended:";

/// The key that says `session` ended for good.
pub fn ended_key(session: &str) -> String {
    format!("{ENDED_KEY_PREFIX}{session}")
}

/// Takes a session for a node, unless it ended. KEYS: the session's home, its ended key, the
/// partner's home (optional). ARGV: node id, TTL (s). Returns `{previous node or '', partner's
/// node or ''}`, or `{'', '', 'ended'}` (and takes nothing) if the session ended.
pub const CLAIM_SCRIPT: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 1 then return {'', '', 'ended'} end
local previous = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
local partner = false
if KEYS[3] then partner = redis.call('GET', KEYS[3]) end
return {previous or '', partner or ''}
"#;

/// A session ended for good on a node: its entry goes if it is still the node's, and the session
/// is recorded as ended unless another node holds it now (restored there, it lives on). KEYS:
/// the session's home, its ended key. ARGV: node id, how long the record lives (s).
pub const RELEASE_SCRIPT: &str = r#"
local home = redis.call('GET', KEYS[1])
if home == ARGV[1] then redis.call('DEL', KEYS[1]) end
if home == ARGV[1] or not home then redis.call('SET', KEYS[2], '1', 'EX', tonumber(ARGV[2])) end
return 1
"#;

/// How long a directory entry outlives its last claim: as long as its token can be restored.
pub const HOME_TTL_SECS: u64 = MAX_RESTORE_AGE_SECS;

/// How long the record that a session ended lives: as long as its newest token can be restored,
/// and 5 minutes more for clocks of nodes that disagree (a node judges a token's age by its own).
pub const ENDED_TTL_SECS: u64 = MAX_RESTORE_AGE_SECS + 300;

/// The claim script's call for `session` (and the partner its token names).
pub fn claim<'a>(
    script: &'a redis::Script,
    node: &str,
    session: &str,
    partner: Option<&str>,
) -> redis::ScriptInvocation<'a> {
    let mut inv = script.key(home_key(session));
    inv.key(ended_key(session));
    if let Some(p) = partner {
        inv.key(home_key(p));
    }
    inv.arg(node).arg(HOME_TTL_SECS);
    inv
}

/// The release script's call for `session`.
pub fn release<'a>(script: &'a redis::Script, node: &str, session: &str) -> redis::ScriptInvocation<'a> {
    let mut inv = script.key(home_key(session));
    inv.key(ended_key(session));
    inv.arg(node).arg(ENDED_TTL_SECS);
    inv
}

/// The claim script's answer, as the hub takes it.
pub fn claimed(session: String, answer: Vec<String>) -> Claimed {
    let node = |i: usize| answer.get(i).filter(|n| !n.is_empty()).cloned();
    let ended = answer.get(2).is_some_and(|e| e == "ended");
    Claimed { session, previous: node(0), partner_node: node(1), ended }
}

/// Reads the session directory.
#[derive(Clone)]
pub struct Directory {
    conn: ConnectionManager,
}

impl Directory {
    pub(super) fn new(conn: ConnectionManager) -> Self {
        Self { conn }
    }

    /// Whether `session` lives on a node of the service (false when Redis does not answer
    /// within a second).
    pub async fn is_live(&self, session: &str) -> bool {
        let mut conn = self.conn.clone();
        let mut exists = redis::cmd("EXISTS");
        exists.arg(home_key(session));
        matches!(
            tokio::time::timeout(Duration::from_secs(1), exists.query_async::<bool>(&mut conn)).await,
            Ok(Ok(true))
        )
    }
}

/// The key where a node writes the id of the last inbox entry its hub has taken.
pub fn read_marker_key(node: &str) -> String {
    format!("duet:node:{node}:read")
}

/// Takes out of a node's inbox every message it had not read for the given sessions, in one
/// pass, unless the node still beats and the salvage is not forced (a live node hands its
/// sessions over itself). KEYS: the inbox, its read marker, the heartbeats ([`ALIVE_KEY`]).
/// ARGV: the node's address, `1` to force, the sessions. Returns `['alive']` (nothing taken:
/// the node's heartbeat runs, or it has none), or `['taken', session, message JSON, ...]`,
/// oldest first. (Messages between nodes are serialized with `to` first after the tag, and
/// session ids are hex, so a plain match finds the addressee.)
pub const SALVAGE_SCRIPT: &str = r#"
if ARGV[2] ~= '1' then
  local beat = redis.call('HGET', KEYS[3], ARGV[1])
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if not beat or tonumber(beat) >= now then return {'alive'} end
end
local wanted = {}
for i = 3, #ARGV do wanted[ARGV[i]] = true end
local from = redis.call('GET', KEYS[2]) or '0-0'
local out = {'taken'}
for _, entry in ipairs(redis.call('XRANGE', KEYS[1], '(' .. from, '+')) do
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'd' then
      local to = string.match(fields[i + 1], '"to":"([^"]+)"')
      if to and wanted[to] then
        table.insert(out, to)
        table.insert(out, fields[i + 1])
        redis.call('XDEL', KEYS[1], entry[1])
      end
    end
  end
end
return out
"#;

/// How often other nodes' heartbeats are read.
pub const WATCH_EVERY: Duration = Duration::from_millis(500);
/// How long one heartbeat keeps a node alive (`super::ALIVE_FOR_MS`).
const ALIVE_FOR: Duration = Duration::from_millis(super::ALIVE_FOR_MS);
/// A heartbeat over for this long is removed from [`ALIVE_KEY`] (the node is long gone).
const FORGET_AFTER_MS: u64 = 3_600_000;

/// Which nodes' heartbeats are over, from the heartbeat hash and Redis's clock (ms).
pub fn dead_nodes(beats: &HashMap<String, u64>, now_ms: u64) -> HashSet<String> {
    beats.iter().filter(|(_, until)| **until < now_ms).map(|(n, _)| n.clone()).collect()
}

/// Feeds [`Input::NodeDown`] for every other node whose heartbeat is seen over in two reads
/// in a row, and [`Input::NodeUp`] when it beats again. Nodes already dead when this node
/// starts are not reported, and a read is not trusted after a gap of a heartbeat's length or
/// while this node's own heartbeat is over (Redis stalled, or this node did): then every
/// heartbeat may look over.
pub async fn watch_nodes(
    mut conn: ConnectionManager,
    node: String,
    backend: Arc<InMemoryBackend>,
    mut stop: watch::Receiver<bool>,
) {
    let mut reported: Option<HashSet<String>> = None;
    let mut previous = HashSet::new();
    let mut seen_dead_myself = false;
    let mut last_read = tokio::time::Instant::now();
    loop {
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL").arg(ALIVE_KEY).cmd("TIME");
        match pipe.query_async::<(HashMap<String, u64>, (u64, u64))>(&mut conn).await {
            Ok((beats, (secs, micros))) => {
                let now_ms = secs * 1000 + micros / 1000;
                let now_dead = dead_nodes(&beats, now_ms);
                let gap = std::mem::replace(&mut last_read, tokio::time::Instant::now()).elapsed();
                let trusted = gap < ALIVE_FOR && !now_dead.contains(&node);
                if now_dead.contains(&node) {
                    seen_dead_myself = true;
                } else if std::mem::take(&mut seen_dead_myself) {
                    info!("this node's heartbeat was over for a while; its queued sessions re-enter the pool");
                    backend.input(Input::PoolRejoin);
                }
                match reported.as_mut() {
                    None => reported = Some(now_dead.clone()),
                    Some(reported) if trusted => {
                        for gone in now_dead.intersection(&previous).filter(|n| **n != node) {
                            if reported.insert(gone.clone()) {
                                info!(node = %gone, "a node's heartbeat ran out");
                                backend.input(Input::NodeDown(gone.clone()));
                            }
                        }
                        let back: Vec<String> = reported.difference(&now_dead).cloned().collect();
                        for node in back {
                            reported.remove(&node);
                            backend.input(Input::NodeUp(node));
                        }
                    }
                    Some(_) => debug!("heartbeats not trusted this time (a gap, or this node's own is over)"),
                }
                if trusted {
                    previous = now_dead.clone();
                }
                let forgotten: Vec<&String> =
                    beats.iter().filter(|(_, until)| **until + FORGET_AFTER_MS < now_ms).map(|(n, _)| n).collect();
                if !forgotten.is_empty() {
                    let _ = redis::cmd("HDEL").arg(ALIVE_KEY).arg(forgotten).query_async::<()>(&mut conn).await;
                }
            }
            Err(err) => debug!(error = %kind(&err), "reading heartbeats failed"),
        }
        if stopped_during(&mut stop, WATCH_EVERY).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_dead_once_its_heartbeat_is_over() {
        let beats = HashMap::from([("a".to_string(), 1_000), ("b".to_string(), 5_000)]);
        assert_eq!(dead_nodes(&beats, 999), HashSet::new());
        assert_eq!(dead_nodes(&beats, 1_001), HashSet::from(["a".to_string()]));
    }

    #[test]
    fn an_empty_answer_part_is_no_node() {
        let c = claimed("s".into(), vec!["".into(), "node-b".into()]);
        assert_eq!((c.previous, c.partner_node, c.ended), (None, Some("node-b".into()), false));
        let c = claimed("s".into(), vec!["".into(), "".into(), "ended".into()]);
        assert_eq!((c.previous, c.partner_node, c.ended), (None, None, true));
    }
}
