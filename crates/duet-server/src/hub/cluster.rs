//! The hub's seam to a shared pool: what a node sends to the store and to other nodes, and what
//! it gets back. Still free of I/O: the hub emits [`Output::Pool`] and [`Output::Remote`] and takes
//! [`Input::PoolMatched`], [`Input::Remote`] and [`Input::PoolRejoin`]; `crate::cluster` carries
//! them over Redis.
//!
//! Only active when [`super::HubConfig::cluster_node`] is set. Then every session that enters the
//! queue goes to the shared pool (matching runs there, atomically), and a partner on another node
//! is a [`RemotePeer`] of a room that holds only the local member.

use std::cmp::Reverse;

use duet_proto::{ClientInfo, PeerInfo, PeerLeftReason, ServerMessage, SignalPayload};
use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use super::session::{MAX_BLOCKED, Prefs, State};
use super::{Hub, Now, Output, Room, Timer};

/// A waiting session as the shared pool holds it (serialized compactly; the Lua matcher reads
/// `i`, `l` and `a`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolEntry {
    /// The session's public id.
    #[serde(rename = "s")]
    pub session: String,
    /// The node holding the session.
    #[serde(rename = "n")]
    pub node: String,
    /// The hub's queue ticket: a match is taken only while the session still waits with it.
    #[serde(rename = "t")]
    pub ticket: u64,
    /// Normalised interests.
    #[serde(rename = "i", default, skip_serializing_if = "Vec::is_empty")]
    pub interests: Vec<String>,
    /// Normalised language.
    #[serde(rename = "l", default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Public ids this session must not be paired with (blocks, reports, `next` cooldowns).
    #[serde(rename = "a", default, skip_serializing_if = "Vec::is_empty")]
    pub avoid: Vec<String>,
    /// What the partner is shown of this client (`matched.peer.client`; never the device id).
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientInfo>,
}

/// A request to the shared pool. A node's requests are carried out in the order emitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolOp {
    /// Enter the pool (at the back, unless already in it) and try to pair.
    Join(PoolEntry),
    /// Try to pair again (new preferences, interest wait or cooldown over), only if still in the
    /// pool: a session another node has just paired is not put back.
    Retry(PoolEntry),
    /// Leave the pool.
    Leave {
        /// The session's public id.
        session: String,
    },
}

/// Two sessions the pool paired, atomically taken out of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolMatch {
    /// The room name both sides are told (`r-` and 12 hex digits).
    pub room: String,
    /// The one who waited longer: impolite, makes the offer.
    pub first: PoolEntry,
    /// The newcomer: polite.
    pub second: PoolEntry,
}

/// A message between nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum RemoteMsg {
    /// The pool paired a session of the receiving node.
    Matched(Box<PoolMatch>),
    /// From a session to its partner on the receiving node.
    Peer {
        /// The receiving session's public id.
        to: String,
        /// The sending session's public id (checked against the receiver's current partner).
        from: String,
        /// What happened.
        event: PeerEvent,
    },
}

/// What one partner tells the other across nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "e", rename_all = "snake_case")]
pub enum PeerEvent {
    /// A `signal` to relay.
    Signal {
        /// The payload.
        payload: SignalPayload,
        /// The sender's peer-connection generation.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        generation: Option<u32>,
    },
    /// The sender lost its socket (`peer_reconnecting`).
    Reconnecting {
        /// Its grace period.
        grace_ms: u64,
    },
    /// The sender is back (`peer_resumed`).
    Resumed,
    /// The sender left the pairing (`peer_left`).
    Left {
        /// Why.
        reason: PeerLeftReason,
        /// Whether the receiver goes back into the queue.
        requeue: bool,
    },
}

/// The partner of a room's only local member, on another node.
#[derive(Debug, Clone)]
pub(super) struct RemotePeer {
    pub session: String,
    pub node: String,
    /// Whether the local member is the polite side.
    pub polite_here: bool,
}

impl Hub {
    fn node(&self) -> Option<&str> {
        self.cfg.cluster_node.as_deref()
    }

    /// True when matching goes through a shared pool.
    pub(super) fn clustered(&self) -> bool {
        self.cfg.cluster_node.is_some()
    }

    /// The pool entry of a queued session.
    fn pool_entry(&self, now: Now, key: u64) -> Option<PoolEntry> {
        let node = self.node()?.to_string();
        let s = self.sessions.get(&key)?;
        let State::Queued { ticket, .. } = s.state else { return None };
        let mut avoid: Vec<String> = s
            .blocked
            .iter()
            .chain(s.recent.iter().filter(|(_, until)| *until > now.mono).map(|(k, _)| k))
            .filter_map(|k| self.sessions.get(k).map(|o| o.public_id.clone()))
            .collect();
        avoid.extend(s.blocked_remote.iter().cloned());
        avoid.extend(s.recent_remote.iter().filter(|(_, until)| *until > now.mono).map(|(p, _)| p.clone()));
        Some(PoolEntry {
            session: s.public_id.clone(),
            node,
            ticket,
            interests: s.prefs.interests.clone(),
            language: s.prefs.language.clone(),
            avoid,
            client: s.client.clone(),
        })
    }

    /// A queued session enters the shared pool (and a rematch timer is set for the end of its
    /// nearest `next` cooldown, when its avoid list shrinks).
    pub(super) fn pool_join(&mut self, now: Now, key: u64) {
        let Some(entry) = self.pool_entry(now, key) else { return };
        if self.sessions.get(&key).is_none_or(|s| s.conn.is_none()) {
            return;
        }
        if let Some(s) = self.sessions.get(&key) {
            let cooldowns = s.recent.iter().map(|(_, t)| *t).chain(s.recent_remote.iter().map(|(_, t)| *t));
            if let Some(at) = cooldowns.filter(|t| *t > now.mono).min() {
                self.timers.push(Reverse((at, Timer::Rematch(key, entry.ticket))));
            }
        }
        self.out.push_back(Output::Pool(Box::new(PoolOp::Join(entry))));
    }

    /// A queued session tries the shared pool again (if it is still in it).
    pub(super) fn pool_retry(&mut self, now: Now, key: u64) {
        if self.sessions.get(&key).is_none_or(|s| s.conn.is_none()) {
            return;
        }
        if let Some(entry) = self.pool_entry(now, key) {
            self.out.push_back(Output::Pool(Box::new(PoolOp::Retry(entry))));
        }
    }

    /// The session left the queue: it leaves the shared pool too.
    pub(super) fn pool_leave(&mut self, key: u64) {
        if let (true, Some(s)) = (self.clustered(), self.sessions.get(&key)) {
            self.out.push_back(Output::Pool(Box::new(PoolOp::Leave { session: s.public_id.clone() })));
        }
    }

    /// The store may have lost the pool (Redis restarted): every queued session with a socket
    /// enters it again.
    pub(super) fn pool_rejoin(&mut self, now: Now) {
        if !self.clustered() {
            return;
        }
        let queued: Vec<u64> = self.queue.values().copied().collect();
        info!(sessions = queued.len(), "queued sessions re-enter the shared pool");
        for key in queued {
            self.pool_join(now, key);
        }
    }

    /// The key of a session of this node that still waits with the ticket the pool paired.
    fn still_waiting(&self, entry: &PoolEntry) -> Option<u64> {
        let key = *self.by_public.get(&entry.session)?;
        let s = self.sessions.get(&key)?;
        let waiting = matches!(s.state, State::Queued { ticket, .. } if ticket == entry.ticket);
        (waiting && s.conn.is_some()).then_some(key)
    }

    /// The pool paired two sessions; this node takes its side(s).
    pub(super) fn pool_matched(&mut self, now: Now, m: PoolMatch) {
        let Some(node) = self.node().map(str::to_string) else { return };
        let here = |e: &PoolEntry| e.node == node;
        match (here(&m.first), here(&m.second)) {
            (true, true) => match (self.still_waiting(&m.first), self.still_waiting(&m.second)) {
                (Some(a), Some(b)) => {
                    self.take_from_queue(a);
                    self.take_from_queue(b);
                    let room = self.next_room;
                    self.next_room += 1;
                    let r = Room { name: m.room, code: None, members: vec![a, b], awaiting: None, remote: None };
                    self.rooms.insert(room, r);
                    self.announce_match(now, room);
                }
                (Some(k), None) | (None, Some(k)) => {
                    debug!(session = %self.public_id(k), "pool partner no longer waiting; back to the pool");
                    self.pool_join(now, k);
                }
                (None, None) => {}
            },
            (true, false) | (false, true) => {
                let (local, remote, polite) =
                    if here(&m.first) { (&m.first, &m.second, false) } else { (&m.second, &m.first, true) };
                match self.still_waiting(local) {
                    Some(key) => {
                        self.take_from_queue(key);
                        let room = self.next_room;
                        self.next_room += 1;
                        let peer = RemotePeer {
                            session: remote.session.clone(),
                            node: remote.node.clone(),
                            polite_here: polite,
                        };
                        let r = Room {
                            name: m.room.clone(),
                            code: None,
                            members: vec![key],
                            awaiting: None,
                            remote: Some(peer),
                        };
                        self.rooms.insert(room, r);
                        self.announce_remote_match(now, room, key, remote, polite);
                    }
                    None => {
                        // Left the queue while the pool paired it: the partner is told and re-queued.
                        debug!(session = %local.session, "paired by the pool after leaving the queue; partner re-queued");
                        let event = PeerEvent::Left { reason: PeerLeftReason::Left, requeue: true };
                        self.emit_remote(&remote.node, &remote.session, &local.session, event);
                    }
                }
            }
            (false, false) => debug!(room = %m.room, "a pairing for other nodes; ignored"),
        }
    }

    fn announce_remote_match(&mut self, now: Now, room: u64, key: u64, peer: &PoolEntry, polite: bool) {
        let Some(s) = self.sessions.get_mut(&key) else { return };
        s.state = State::InRoom(room);
        let peer_prefs = Prefs { interests: peer.interests.clone(), language: peer.language.clone() };
        let common = s.prefs.common(&peer_prefs);
        let public_id = s.public_id.clone();
        let name = self.rooms.get(&room).map(|r| r.name.clone()).unwrap_or_default();
        // Counted once per pairing service-wide: by the node of the impolite side.
        if !polite {
            self.stats.matches_total += 1;
        }
        info!(room, a = %public_id, b = %peer.session, node = %peer.node, common = common.len(), "matched across nodes");
        let msg = ServerMessage::Matched {
            room: name,
            peer: PeerInfo {
                session_id: peer.session.clone(),
                client: peer.client.clone(),
                language: peer.language.clone(),
            },
            polite,
            ice_servers: self.cfg.ice.servers_for(&public_id, now.unix_secs),
            common_interests: common,
        };
        self.send(key, None, msg);
        self.reissue_token(now, key);
    }

    /// The partner on another node, if the session's room has one.
    pub(super) fn remote_partner(&self, key: u64) -> Option<&RemotePeer> {
        let State::InRoom(room) = self.state(key) else { return None };
        self.rooms.get(&room)?.remote.as_ref()
    }

    /// Tells the remote partner of `key` about `event`; false if it has none.
    pub(super) fn tell_remote(&mut self, key: u64, event: PeerEvent) -> bool {
        let Some(peer) = self.remote_partner(key).cloned() else { return false };
        let from = self.public_id(key).to_string();
        self.emit_remote(&peer.node, &peer.session, &from, event);
        true
    }

    fn emit_remote(&mut self, node: &str, to: &str, from: &str, event: PeerEvent) {
        let msg = RemoteMsg::Peer { to: to.to_string(), from: from.to_string(), event };
        self.out.push_back(Output::Remote { node: node.to_string(), msg: Box::new(msg) });
    }

    /// A message from another node.
    pub(super) fn remote(&mut self, now: Now, msg: RemoteMsg) {
        if !self.clustered() {
            return;
        }
        let (to, from, event) = match msg {
            RemoteMsg::Matched(m) => return self.pool_matched(now, *m),
            RemoteMsg::Peer { to, from, event } => (to, from, event),
        };
        let Some(key) = self.by_public.get(&to).copied() else {
            debug!(session = %to, "message for a session not on this node; dropped");
            return;
        };
        let State::InRoom(room) = self.state(key) else { return };
        if self.rooms.get(&room).and_then(|r| r.remote.as_ref()).is_none_or(|p| p.session != from) {
            debug!(session = %to, "message from a former partner; dropped");
            return;
        }
        match event {
            PeerEvent::Signal { payload, generation } => {
                self.send(key, None, ServerMessage::Signal { payload, generation })
            }
            PeerEvent::Reconnecting { grace_ms } => self.send(key, None, ServerMessage::PeerReconnecting { grace_ms }),
            PeerEvent::Resumed => self.send(key, None, ServerMessage::PeerResumed),
            PeerEvent::Left { reason, requeue } => {
                self.rooms.remove(&room);
                let cooldown = now.mono + self.cfg.rematch_cooldown;
                if let Some(s) = self.sessions.get_mut(&key) {
                    s.state = State::Idle;
                    match reason {
                        PeerLeftReason::Blocked | PeerLeftReason::Reported => {
                            if s.blocked_remote.len() == MAX_BLOCKED {
                                s.blocked_remote.remove(0);
                            }
                            s.blocked_remote.push(from.clone());
                        }
                        PeerLeftReason::Next => s.remember_remote_partner(from.clone(), cooldown, now.mono),
                        _ => {}
                    }
                }
                info!(room, session = %to, reason = ?reason, "partner on another node left");
                self.send(key, None, ServerMessage::PeerLeft { reason });
                if requeue {
                    self.enqueue(now, key, None);
                }
                self.reissue_token(now, key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use duet_proto::{ClientFrame, ClientMessage, ServerFrame, parse_server_frame};

    use super::*;
    use crate::hub::{ConnId, HubConfig, Input};

    /// A clustered hub on node "here", with what it sent to clients, the pool and other nodes.
    struct Node {
        hub: Hub,
        now: Instant,
        frames: Vec<(ConnId, ServerFrame)>,
        pool: Vec<PoolOp>,
        remote: Vec<(String, RemoteMsg)>,
    }

    impl Node {
        fn new() -> Self {
            let cfg = HubConfig {
                rng_seed: Some(3),
                idle_timeout: Duration::from_secs(3600),
                cluster_node: Some("here".into()),
                ..HubConfig::default()
            };
            Self { hub: Hub::new(cfg, "test"), now: Instant::now(), frames: vec![], pool: vec![], remote: vec![] }
        }

        fn now(&self) -> Now {
            Now { mono: self.now, unix_secs: 1_700_000_000 }
        }

        fn input(&mut self, input: Input) {
            self.hub.handle(self.now(), input);
            while let Some(out) = self.hub.poll_output() {
                match out {
                    Output::Send { conn, text } => self.frames.push((conn, parse_server_frame(&text).unwrap())),
                    Output::Close { .. } => {}
                    Output::Pool(op) => self.pool.push(*op),
                    Output::Remote { node, msg } => self.remote.push((node, *msg)),
                }
            }
        }

        fn msg(&mut self, conn: ConnId, msg: ClientMessage) {
            self.input(Input::Frame(conn, ClientFrame::new(msg)));
        }

        /// A connected session; returns its connection and public id.
        fn client(&mut self, n: u64) -> (ConnId, String) {
            let conn = ConnId(n);
            self.input(Input::Opened(conn));
            self.msg(conn, ClientMessage::Hello { version: 1, resume_token: None, client: None });
            let id = self
                .frames
                .iter()
                .find_map(|(c, f)| match &f.msg {
                    ServerMessage::Welcome { session_id, .. } if *c == conn => Some(session_id.clone()),
                    _ => None,
                })
                .unwrap();
            (conn, id)
        }

        fn last_to(&self, conn: ConnId) -> &ServerMessage {
            &self.frames.iter().rev().find(|(c, _)| *c == conn).unwrap().1.msg
        }

        fn kinds_to(&self, conn: ConnId) -> Vec<&'static str> {
            self.frames.iter().filter(|(c, _)| *c == conn).map(|(_, f)| f.msg.kind()).collect()
        }
    }

    fn join() -> ClientMessage {
        ClientMessage::JoinQueue { interests: vec!["Music".into()], language: Some("en-GB".into()) }
    }

    fn remote_entry(session: &str) -> PoolEntry {
        PoolEntry {
            session: session.into(),
            node: "there".into(),
            ticket: 9,
            interests: vec!["music".into()],
            language: None,
            avoid: vec![],
            client: None,
        }
    }

    fn joined(node: &Node) -> Vec<PoolEntry> {
        node.pool.iter().filter_map(|op| if let PoolOp::Join(e) = op { Some(e.clone()) } else { None }).collect()
    }

    #[test]
    fn queued_sessions_go_to_the_shared_pool_and_are_not_matched_locally() {
        let mut n = Node::new();
        let (a, a_id) = n.client(1);
        let (b, _) = n.client(2);
        n.msg(a, join());
        n.msg(b, join());
        assert_eq!(n.kinds_to(a), ["welcome", "queued"], "no local pairing: the pool decides");
        let entries = joined(&n);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].session, a_id);
        assert_eq!(entries[0].node, "here");
        assert_eq!(
            (entries[0].interests.clone(), entries[0].language.clone()),
            (vec!["music".into()], Some("en".into()))
        );
        n.msg(a, ClientMessage::LeaveQueue);
        assert_eq!(n.pool.last(), Some(&PoolOp::Leave { session: a_id }));
    }

    #[test]
    fn a_pairing_across_nodes_relays_both_ways_and_ends_on_the_partners_word() {
        let mut n = Node::new();
        let (a, a_id) = n.client(1);
        n.msg(a, join());
        let mine = joined(&n).remove(0);
        let m = PoolMatch { room: "r-0123456789ab".into(), first: remote_entry("far"), second: mine };
        n.input(Input::Remote(RemoteMsg::Matched(Box::new(m))));
        match n.frames.iter().rev().find(|(c, f)| *c == a && f.msg.kind() == "matched").map(|(_, f)| &f.msg) {
            Some(ServerMessage::Matched { room, peer, polite, common_interests, .. }) => {
                assert_eq!((room.as_str(), peer.session_id.as_str(), *polite), ("r-0123456789ab", "far", true));
                assert_eq!(common_interests, &vec!["music".to_string()]);
            }
            other => panic!("{other:?}"),
        }
        // a's signal goes to the partner's node, addressed to the partner.
        n.msg(a, ClientMessage::Signal { payload: SignalPayload::Restart, generation: None });
        let (node, msg) = n.remote.last().unwrap().clone();
        assert_eq!(node, "there");
        assert_eq!(
            msg,
            RemoteMsg::Peer {
                to: "far".into(),
                from: a_id.clone(),
                event: PeerEvent::Signal { payload: SignalPayload::Restart, generation: None }
            }
        );
        // Only the current partner is heard: a former or unknown one is dropped.
        let stray = PeerEvent::Signal { payload: SignalPayload::EndOfCandidates, generation: None };
        n.input(Input::Remote(RemoteMsg::Peer { to: a_id.clone(), from: "someone-else".into(), event: stray.clone() }));
        assert_ne!(n.last_to(a).kind(), "signal");
        n.input(Input::Remote(RemoteMsg::Peer { to: a_id.clone(), from: "far".into(), event: stray }));
        assert!(matches!(n.last_to(a), ServerMessage::Signal { payload: SignalPayload::EndOfCandidates, .. }));
        // The partner presses next: a is told, re-queued, and avoids it for the cooldown.
        let left = PeerEvent::Left { reason: PeerLeftReason::Next, requeue: true };
        n.input(Input::Remote(RemoteMsg::Peer { to: a_id.clone(), from: "far".into(), event: left }));
        let tail: Vec<_> = n.kinds_to(a).into_iter().rev().take(3).collect();
        assert_eq!(tail, ["token", "queued", "peer_left"]);
        let again = joined(&n).pop().unwrap();
        assert_eq!(again.avoid, vec!["far".to_string()]);
        n.now += Duration::from_secs(31);
        n.hub.handle_timeout(n.now());
        while let Some(out) = n.hub.poll_output() {
            if let Output::Pool(op) = out {
                n.pool.push(*op);
            }
        }
        assert!(
            matches!(n.pool.last(), Some(PoolOp::Retry(e)) if e.avoid.is_empty()),
            "cooldown over: {:?}",
            n.pool.last()
        );
    }

    #[test]
    fn a_pairing_for_a_session_that_left_the_queue_frees_the_partner() {
        let mut n = Node::new();
        let (a, a_id) = n.client(1);
        n.msg(a, join());
        let mine = joined(&n).remove(0);
        n.msg(a, ClientMessage::LeaveQueue);
        let m = PoolMatch { room: "r-000000000001".into(), first: remote_entry("far"), second: mine };
        n.input(Input::PoolMatched(Box::new(m)));
        assert!(n.kinds_to(a).iter().all(|k| *k != "matched"));
        let left = PeerEvent::Left { reason: PeerLeftReason::Left, requeue: true };
        assert_eq!(
            n.remote.last(),
            Some(&("there".to_string(), RemoteMsg::Peer { to: "far".into(), from: a_id, event: left }))
        );
    }

    #[test]
    fn a_lost_socket_leaves_the_pool_and_a_resume_enters_it_again() {
        let mut n = Node::new();
        let (a, a_id) = n.client(1);
        n.msg(a, join());
        n.input(Input::Closed(a));
        assert_eq!(n.pool.last(), Some(&PoolOp::Leave { session: a_id.clone() }));
        let token = n
            .frames
            .iter()
            .find_map(|(_, f)| {
                if let ServerMessage::Welcome { resume_token, .. } = &f.msg { Some(resume_token.clone()) } else { None }
            })
            .unwrap();
        n.input(Input::Opened(ConnId(2)));
        n.msg(ConnId(2), ClientMessage::Hello { version: 1, resume_token: Some(token), client: None });
        assert!(matches!(n.pool.last(), Some(PoolOp::Join(e)) if e.session == a_id));
    }
}
