//! The hub's seam to a shared pool: what a node sends to the store and to other nodes, and what
//! it gets back. Still free of I/O: the hub emits [`Output::Pool`] and [`Output::Remote`] and takes
//! [`Input::PoolMatched`], [`Input::Remote`] and [`Input::PoolRejoin`]; `crate::cluster` carries
//! them over Redis.
//!
//! Only active when [`super::HubConfig::cluster_node`] is set. Then every session that enters the
//! queue goes to the shared pool (matching runs there, atomically), and a partner on another node
//! is a [`RemotePeer`] of a room that holds only the local member.

use std::cmp::Reverse;

use duet_proto::{ClientInfo, ErrorCode, PeerInfo, PeerLeftReason, ServerMessage, SignalPayload};
use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use super::session::{MAX_BLOCKED, PendingCode, Prefs, State};
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
    /// The session's device ([`super::blocks::Device::hex`]): blocks between devices hold on
    /// every node.
    #[serde(rename = "d", default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The session lost its socket: it keeps its place in the pool but is not paired (nor looks
    /// for a partner) until it is back, as in one process.
    #[serde(rename = "w", default, skip_serializing_if = "std::ops::Not::not")]
    pub away: bool,
    /// Enter the pool just ahead of this session if it waits there: a partner left by `next`
    /// goes before the one who pressed it, as in one process.
    #[serde(rename = "b", default, skip_serializing_if = "Option::is_none")]
    pub ahead_of: Option<String>,
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
    /// Join the room by code `code` (shared by every node): open it, or be paired with the one
    /// member waiting in it. Answered with [`super::Input::CodeReply`].
    JoinCode {
        /// The room code as the client gave it.
        code: String,
        /// The joining session; `ticket` identifies this request.
        entry: PoolEntry,
        /// Whether the session may open a new room (its per-session limit of new codes).
        may_open: bool,
    },
    /// Leave the room by code `code`.
    LeaveCode {
        /// The room code.
        code: String,
        /// The session's public id.
        session: String,
    },
    /// A session restored on this node from a token that names its room by code: if the room
    /// still holds it (under the node that held it before), it holds it under this node now.
    /// Answered with [`super::Input::CodeRestored`].
    RestoreCode {
        /// The room code.
        code: String,
        /// The session as the room holds it from now on.
        entry: PoolEntry,
    },
    /// This node now holds `session` (new, or to be restored from its token): record it in the
    /// session directory, and say where it was before and where `partner` is, unless the
    /// session ended for good (then nothing is recorded). Answered with
    /// [`super::Input::Claimed`].
    Claim {
        /// The session's public id.
        session: String,
        /// The partner its token names, if any.
        partner: Option<String>,
    },
    /// Two devices never meet again, on any node (a block or report between them).
    BlockDevices {
        /// One device ([`super::blocks::Device::hex`]).
        a: String,
        /// The other.
        b: String,
    },
    /// `session` ended on this node for good: its directory entry goes (if it is still this
    /// node's), and the service remembers that it ended, so that no node restores it from its
    /// tokens.
    Release {
        /// The session's public id.
        session: String,
    },
}

/// The session directory's answer to a [`PoolOp::Claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The session claimed.
    pub session: String,
    /// The node that held it before, if another one did.
    pub previous: Option<String>,
    /// The node holding the partner the token named, if it is in the directory.
    pub partner_node: Option<String>,
    /// The session ended for good on some node ([`PoolOp::Release`]): it was not claimed, and
    /// its tokens start new sessions.
    pub ended: bool,
}

/// What the shared store did with a [`PoolOp::JoinCode`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeOutcome {
    /// Nobody was in the room: the session opened it and waits in it.
    Opened,
    /// The session joined the member waiting in the room (given here): the room is now full.
    Paired(Box<PoolEntry>),
    /// The room holds two already (or its member blocked this session): `room_full`.
    Full,
    /// Opening a new room is over the session's limit: `rate_limited`.
    RateLimited,
}

/// The shared store's answer to a [`PoolOp::JoinCode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeReply {
    /// The room code.
    pub code: String,
    /// The joining session, as it asked.
    pub joiner: PoolEntry,
    /// What happened.
    pub outcome: CodeOutcome,
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
    /// `joiner` joined the room by code where `waiting`, a session of the receiving node, waits.
    CodePaired {
        /// The room code.
        code: String,
        /// The member that was waiting (impolite).
        waiting: Box<PoolEntry>,
        /// The newcomer (polite).
        joiner: Box<PoolEntry>,
    },
    /// `session` now lives on `node` (restored there from its token): the receiving node drops
    /// its copy without ending the session's pairing.
    Taken {
        /// The session's public id.
        session: String,
        /// Its new node.
        node: String,
        /// The last message the client processed from the receiving node: what it sent after
        /// that comes back as [`RemoteMsg::Replay`].
        ack: Option<u64>,
    },
    /// Never written to a stream: the sending node's own request, carried in order with its
    /// messages to `node`'s inbox. It takes out of the inbox of `node` (which held `session`
    /// and may have died) every message for `session` that node had not read, and gives them to
    /// the sending node's hub ([`super::Input::Salvaged`]). Unless `force`, it takes nothing
    /// while `node`'s heartbeat runs: a live node hands over what it read itself
    /// ([`RemoteMsg::Handover`]).
    Salvage {
        /// The session, now on the sending node.
        session: String,
        /// Take the messages even from a node that still beats (it did not answer in time).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force: bool,
    },
    /// What the sending node had sent to `session` that its client never acknowledged, to be
    /// sent again by the receiving node, which holds the session now.
    Replay {
        /// The session's public id.
        session: String,
        /// The messages, oldest first.
        messages: Vec<ServerMessage>,
        /// The [`Stamp`] of each message that came from another node (a partner's), by position
        /// in `messages` (missing at the end: none).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        stamps: Vec<Option<Stamp>>,
        /// The newest message from each node the session was given on the sending node, acknowledged
        /// or not: anything not newer is not delivered again.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        heard: Vec<Stamp>,
    },
    /// From the node that holds `session` now to the node it moved from, written behind
    /// everything the partner's node sent there before it switched to the new node. The
    /// receiving node answers [`RemoteMsg::HandedOver`] once it has read it: by then it has
    /// sent on everything older for the session.
    Handover {
        /// The session's public id.
        session: String,
        /// The node that holds it now (and asks).
        node: String,
    },
    /// The answer to [`RemoteMsg::Handover`]: everything the sending node read for `session`
    /// before the request (sent again in its [`RemoteMsg::Replay`], or forwarded) is ahead of
    /// this message.
    HandedOver {
        /// The session's public id.
        session: String,
        /// The node that answers (the session's previous node).
        node: String,
    },
    /// From a session to its partner on the receiving node.
    Peer {
        /// The receiving session's public id.
        to: String,
        /// The sending session's public id (checked against the receiver's current partner).
        from: String,
        /// What happened.
        event: PeerEvent,
        /// Where and in which order it was sent (every node stamps what it sends).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stamp: Option<Stamp>,
        /// The node that forwarded it because the receiving session had moved from there: it is
        /// older than anything the partner's node sends the receiving node itself.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<String>,
    },
}

/// Which node sent a [`RemoteMsg::Peer`] and where it came in that node's sending order: every
/// node numbers the messages it sends to partners, 1, 2, 3, ... So, for one receiving session,
/// a message from a node is newer than another from the same node exactly when its number is
/// higher, whichever way each travelled (straight, forwarded by a node the session moved from,
/// replayed, or salvaged from an inbox): a session is never given one that is not newer than
/// one it was given (a copy, or one overtaken on another path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// The sending node's address.
    #[serde(rename = "o")]
    pub node: String,
    /// Its number in that node's sending order.
    #[serde(rename = "n")]
    pub seq: u64,
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
    /// The sender was restored from its token on `node` (its old node died or it moved): the
    /// pairing goes on there. Answered with [`PeerEvent::Rejoined`].
    Rejoin {
        /// The sender's node now.
        node: String,
        /// The sender's device ([`super::blocks::Device::hex`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<String>,
    },
    /// The receiver's [`PeerEvent::Rejoin`] was taken: its partner is on `node`.
    Rejoined {
        /// The sender's node.
        node: String,
        /// The sender's device.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<String>,
    },
}

/// The partner of a room's only local member, on another node.
#[derive(Debug, Clone)]
pub(super) struct RemotePeer {
    pub session: String,
    pub node: String,
    /// Whether the local member is the polite side.
    pub polite_here: bool,
    /// Since when the partner's node is taken for dead: the member was told
    /// `peer_reconnecting`, and its signals wait in `held` until the partner is back (on any
    /// node).
    pub lost_at: Option<std::time::Instant>,
    /// Signals for the partner while it is lost (at most [`super::failover::MAX_HELD`]).
    pub held: Vec<PeerEvent>,
    /// The partner's device, if known (from its pool entry).
    pub device: Option<super::blocks::Device>,
}

impl RemotePeer {
    pub(super) fn new(session: &str, node: &str, polite_here: bool) -> Self {
        let (session, node) = (session.to_string(), node.to_string());
        Self { session, node, polite_here, lost_at: None, held: Vec::new(), device: None }
    }

    /// The partner of a pool or room entry.
    pub(super) fn of(entry: &PoolEntry, polite_here: bool) -> Self {
        let device = entry.device.as_deref().and_then(super::blocks::Device::from_hex);
        Self { device, ..Self::new(&entry.session, &entry.node, polite_here) }
    }
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
        let State::Queued { ticket, .. } = self.sessions.get(&key)?.state else { return None };
        self.entry_with(now, key, ticket)
    }

    /// The session as the shared store holds it, with `ticket`.
    fn entry_with(&self, now: Now, key: u64, ticket: u64) -> Option<PoolEntry> {
        let node = self.node()?.to_string();
        let s = self.sessions.get(&key)?;
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
            device: s.device.map(|d| d.hex()),
            away: s.conn.is_none(),
            ahead_of: None,
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

    /// A block between devices `a` and `b` holds on every node of the service.
    pub(super) fn share_device_block(&mut self, a: super::blocks::Device, b: super::blocks::Device) {
        if self.clustered() {
            self.out.push_back(Output::Pool(Box::new(PoolOp::BlockDevices { a: a.hex(), b: b.hex() })));
        }
    }

    /// A queued session lost its socket: its pool entry stays, marked away (never paired).
    pub(super) fn pool_away(&mut self, now: Now, key: u64) {
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
        // A store that lost the pool lost the session directory too.
        let held: Vec<u64> = self.sessions.keys().copied().collect();
        for key in held {
            let session = self.public_id(key).to_string();
            self.claim(session, None);
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
                    let r = Room::new(m.room, None, vec![a, b]);
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
                        let peer = RemotePeer::of(remote, polite);
                        let r = Room { remote: Some(peer), ..Room::new(m.room.clone(), None, vec![key]) };
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

    /// `join_room` on a clustered node: the shared store decides (the room may be open on
    /// another node); the answer comes back as [`super::Input::CodeReply`].
    pub(super) fn code_join(&mut self, now: Now, key: u64, id: Option<u64>, code: String) {
        self.dequeue(key);
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let may_open = self.sessions.get_mut(&key).is_some_and(|s| s.may_open_room(now.mono, &code));
        let Some(entry) = self.entry_with(now, key, ticket) else { return };
        if let Some(s) = self.sessions.get_mut(&key) {
            s.pending_code = Some(PendingCode { code: code.clone(), ticket, id });
        }
        self.out.push_back(Output::Pool(Box::new(PoolOp::JoinCode { code, entry, may_open })));
    }

    /// The session leaves the room by code `code` in the shared store.
    pub(super) fn code_leave(&mut self, key: u64, code: String) {
        let session = self.public_id(key).to_string();
        self.code_leave_session(session, code);
    }

    /// `session` (of this node or not) leaves the room by code `code` in the shared store.
    pub(super) fn code_leave_session(&mut self, session: String, code: String) {
        if self.clustered() {
            self.out.push_back(Output::Pool(Box::new(PoolOp::LeaveCode { code, session })));
        }
    }

    /// The session `key`, restored here, was in the room by code `code`: the shared room names
    /// this node for it from now on, if it still holds it.
    pub(super) fn code_restore(&mut self, now: Now, key: u64, code: String) {
        if !self.clustered() {
            return;
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        if let Some(entry) = self.entry_with(now, key, ticket) {
            self.out.push_back(Output::Pool(Box::new(PoolOp::RestoreCode { code, entry })));
        }
    }

    /// The shared store's answer to a [`PoolOp::RestoreCode`]. A room that no longer holds the
    /// session (its partner's node gave up on it, or a newcomer took its place while every
    /// member's node was dead) is not the pair's any more: the pair goes on without the code,
    /// and a member waiting there alone leaves it.
    pub(super) fn code_restored(&mut self, now: Now, code: &str, session: &str, kept: bool) {
        if kept {
            debug!(session = %session, "restored session kept its place in its room by code");
            return;
        }
        let Some(key) = self.by_public.get(session).copied() else { return };
        let State::InRoom(room) = self.state(key) else { return };
        let Some(r) = self.rooms.get_mut(&room).filter(|r| r.code.as_deref() == Some(code)) else { return };
        r.code = None;
        let alone = r.members.len() == 1 && r.remote.is_none() && r.awaiting.is_none();
        if self.codes.get(code) == Some(&room) {
            self.codes.remove(code);
        }
        info!(session = %session, alone, "restored session's room by code has moved on without it");
        if alone {
            self.rooms.remove(&room);
            if let Some(s) = self.sessions.get_mut(&key) {
                s.state = State::Idle;
            }
        }
        self.reissue_token(now, key);
    }

    /// A local room by code with this one member, as the store opened it.
    fn open_code_room(&mut self, key: u64, code: &str, remote: Option<RemotePeer>) -> u64 {
        let room = self.next_room;
        self.next_room += 1;
        let r = Room { remote, ..Room::new(code.to_string(), Some(code.to_string()), vec![key]) };
        self.rooms.insert(room, r);
        self.codes.insert(code.to_string(), room);
        if let Some(s) = self.sessions.get_mut(&key) {
            s.state = State::InRoom(room);
        }
        room
    }

    /// The shared store answered a `join_room` of a session of this node.
    pub(super) fn code_reply(&mut self, now: Now, r: CodeReply) {
        let Some(node) = self.node().map(str::to_string) else { return };
        let CodeReply { code, joiner, outcome } = r;
        let key = self.by_public.get(&joiner.session).copied();
        let pending = key.and_then(|k| {
            let s = self.sessions.get_mut(&k)?;
            let current = s.pending_code.as_ref().is_some_and(|p| p.code == code && p.ticket == joiner.ticket);
            (current && s.state == State::Idle).then(|| s.pending_code.take()).flatten().map(|p| (k, p, s.conn))
        });
        let Some((key, p, conn)) = pending else {
            // The session moved on (or is gone) meanwhile: what the store did is undone.
            if matches!(outcome, CodeOutcome::Opened | CodeOutcome::Paired(_)) {
                debug!(session = %joiner.session, "answer to an abandoned join_room; undone");
                self.out.push_back(Output::Pool(Box::new(PoolOp::LeaveCode { code, session: joiner.session.clone() })));
                if let CodeOutcome::Paired(w) = outcome
                    && w.node != node
                {
                    let event = PeerEvent::Left { reason: PeerLeftReason::Left, requeue: false };
                    self.emit_remote(&w.node, &w.session, &joiner.session, event);
                }
            }
            return;
        };
        let conn = conn.unwrap_or(super::ConnId(0));
        match outcome {
            CodeOutcome::Full => self.fail(conn, Some(key), p.id, ErrorCode::RoomFull, "the room is full"),
            CodeOutcome::RateLimited => {
                self.fail(conn, Some(key), p.id, ErrorCode::RateLimited, "too many room codes tried; wait a minute")
            }
            CodeOutcome::Opened => {
                if let Some(s) = self.sessions.get_mut(&key) {
                    s.room_attempt(now.mono, &code);
                }
                let room = self.open_code_room(key, &code, None);
                info!(session = %self.public_id(key), room, "waiting in room (shared)");
                self.reply(key, p.id, ServerMessage::RoomJoined { code });
            }
            CodeOutcome::Paired(w) if w.node == node => {
                let waiting = self.by_public.get(&w.session).copied();
                let room = self.codes.get(&code).copied().filter(|room| {
                    self.rooms
                        .get(room)
                        .is_some_and(|r| r.remote.is_none() && waiting.is_some_and(|k| r.members == [k]))
                });
                match room {
                    Some(room) => {
                        if let Some(r) = self.rooms.get_mut(&room) {
                            r.members.push(key);
                        }
                        self.reply(key, p.id, ServerMessage::RoomJoined { code });
                        self.announce_match(now, room);
                    }
                    None => {
                        // The store's member is no longer in the room here: it is taken out, and
                        // the newcomer waits in the room instead.
                        debug!(session = %w.session, "stale member of a room by code removed");
                        self.out.push_back(Output::Pool(Box::new(PoolOp::LeaveCode {
                            code: code.clone(),
                            session: w.session.clone(),
                        })));
                        self.open_code_room(key, &code, None);
                        self.reply(key, p.id, ServerMessage::RoomJoined { code });
                    }
                }
            }
            CodeOutcome::Paired(w) => {
                let peer = RemotePeer::of(&w, true);
                let room = self.open_code_room(key, &code, Some(peer));
                self.reply(key, p.id, ServerMessage::RoomJoined { code });
                self.announce_remote_match(now, room, key, &w, true);
            }
        }
    }

    /// A session of another node joined the room by code where a session of this node waits.
    fn code_paired(&mut self, now: Now, code: &str, waiting: &PoolEntry, joiner: &PoolEntry) {
        let key = self.by_public.get(&waiting.session).copied();
        let room = key.and_then(|k| match self.state(k) {
            State::InRoom(room)
                if self.rooms.get(&room).is_some_and(|r| {
                    r.code.as_deref() == Some(code) && r.members == [k] && r.remote.is_none() && r.awaiting.is_none()
                }) =>
            {
                Some((k, room))
            }
            _ => None,
        });
        match room {
            Some((key, room)) => {
                if let Some(r) = self.rooms.get_mut(&room) {
                    r.remote = Some(RemotePeer::of(joiner, false));
                }
                self.announce_remote_match(now, room, key, joiner, false);
            }
            None => {
                debug!(session = %waiting.session, "joined a room by code its member has left; newcomer told");
                let event = PeerEvent::Left { reason: PeerLeftReason::Left, requeue: false };
                self.emit_remote(&joiner.node, &joiner.session, &waiting.session, event);
            }
        }
    }

    /// A draining node takes its sessions out of the shared store: the queued ones out of the
    /// pool, and members waiting alone in a room by code out of it (their clients resume
    /// elsewhere; a pairing is kept, in their tokens).
    pub(super) fn drain_store(&mut self) {
        if !self.clustered() {
            return;
        }
        let queued: Vec<u64> = self.queue.values().copied().collect();
        for key in &queued {
            self.pool_leave(*key);
        }
        let alone: Vec<(u64, String)> = self
            .rooms
            .values()
            .filter(|r| r.remote.is_none() && r.awaiting.is_none() && r.members.len() == 1)
            .filter_map(|r| Some((r.members[0], r.code.clone()?)))
            .collect();
        for (key, code) in &alone {
            self.code_leave(*key, code.clone());
        }
        info!(
            queued = queued.len(),
            waiting_in_rooms = alone.len(),
            "drain: this node's waiting sessions left the shared store"
        );
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

    /// The pool join just emitted for `key` places it ahead of `other` (who pressed `next`
    /// and queued on its own node first).
    fn join_ahead_of(&mut self, key: u64, other: &str) {
        let session = self.public_id(key).to_string();
        let joined = self.out.iter_mut().rev().find_map(|o| match o {
            Output::Pool(op) => match op.as_mut() {
                PoolOp::Join(e) if e.session == session => Some(e),
                _ => None,
            },
            _ => None,
        });
        if let Some(entry) = joined {
            entry.ahead_of = Some(other.to_string());
        }
    }

    /// The partner on another node, if the session's room has one.
    pub(super) fn remote_partner(&self, key: u64) -> Option<&RemotePeer> {
        let State::InRoom(room) = self.state(key) else { return None };
        self.rooms.get(&room)?.remote.as_ref()
    }

    /// Tells the remote partner of `key` about `event` (a signal for a lost partner is held
    /// until it is back); false if it has none.
    pub(super) fn tell_remote(&mut self, key: u64, event: PeerEvent) -> bool {
        let State::InRoom(room) = self.state(key) else { return false };
        let Some(peer) = self.rooms.get_mut(&room).and_then(|r| r.remote.as_mut()) else { return false };
        if peer.lost_at.is_some() && matches!(event, PeerEvent::Signal { .. }) {
            super::failover::hold(peer, event);
            return true;
        }
        let (node, to) = (peer.node.clone(), peer.session.clone());
        let from = self.public_id(key).to_string();
        self.emit_remote(&node, &to, &from, event);
        true
    }

    /// Sends `event` from `from` here to `to` on `node`, stamped with its place in this node's
    /// sending order.
    pub(super) fn emit_remote(&mut self, node: &str, to: &str, from: &str, event: PeerEvent) {
        self.stamped += 1;
        let stamp = Stamp { node: self.node().unwrap_or_default().to_string(), seq: self.stamped };
        let msg = RemoteMsg::Peer { to: to.to_string(), from: from.to_string(), event, stamp: Some(stamp), via: None };
        self.out.push_back(Output::Remote { node: node.to_string(), msg: Box::new(msg) });
    }

    /// A message from another node.
    pub(super) fn remote(&mut self, now: Now, msg: RemoteMsg) {
        if !self.clustered() {
            return;
        }
        let (to, from, event, stamp, via) = match msg {
            RemoteMsg::Matched(m) => return self.pool_matched(now, *m),
            RemoteMsg::CodePaired { code, waiting, joiner } => return self.code_paired(now, &code, &waiting, &joiner),
            RemoteMsg::Taken { session, node, ack } => return self.taken(&session, &node, ack),
            RemoteMsg::Replay { session, messages, stamps, heard } => {
                return self.replay(&session, messages, stamps, heard);
            }
            RemoteMsg::Handover { session, node } => return self.handover_asked(session, &node),
            RemoteMsg::HandedOver { session, node } => return self.handed_over(now, &session, &node),
            RemoteMsg::Salvage { .. } => return,
            RemoteMsg::Peer { to, from, event, stamp, via } => (to, from, event, stamp, via),
        };
        let Some(key) = self.by_public.get(&to).copied() else {
            if let Some(pending) = self.restoring.get_mut(&to) {
                // Restored here once the directory answers: a partner restored on another node
                // at the same moment may ask to rejoin before that. It waits for the answer.
                if pending.early.len() < super::failover::MAX_EARLY {
                    pending.early.push(RemoteMsg::Peer { to, from, event, stamp, via });
                }
                return;
            }
            if let Some(node) = self.moved_out.node_of(&to).map(str::to_string) {
                // The session moved on: what was on its way here follows it (older than what its
                // partner's node sends there itself).
                let via = self.node().map(str::to_string);
                let msg = RemoteMsg::Peer { to, from, event, stamp, via };
                self.out.push_back(Output::Remote { node, msg: Box::new(msg) });
            } else {
                debug!(session = %to, "message for a session not on this node; dropped");
            }
            return;
        };
        // Sent straight here, it waits while the session's previous node hands over what is
        // older; forwarded by that node, it is older.
        let event = match via {
            None => match self.hold_during_handover(now, &to, from.clone(), event, stamp.clone()) {
                Ok(()) => return,
                Err(event) => event,
            },
            Some(_) => event,
        };
        self.peer_message(now, key, from, event, stamp)
    }

    /// A message from the partner `from` (on another node) to `key`, in its turn. One for the
    /// client that is not newer than one the client was given from the same node is dropped.
    /// (A rejoin and its answer, which go straight to the partner's node and may overtake older
    /// messages on their way through a node the session left, say nothing to the client, and
    /// taking one twice changes nothing.)
    pub(super) fn peer_message(&mut self, now: Now, key: u64, from: String, event: PeerEvent, stamp: Option<Stamp>) {
        let event = match event {
            PeerEvent::Rejoin { node, device } => return self.rejoin(now, key, &from, &node, device),
            PeerEvent::Rejoined { node, device } => return self.rejoined(now, key, &from, &node, device),
            event => event,
        };
        let State::InRoom(room) = self.state(key) else { return };
        // The restored session's partner, whose node has not answered the rejoin yet?
        let awaited = self.awaits(room, &from);
        if !awaited && self.rooms.get(&room).and_then(|r| r.remote.as_ref()).is_none_or(|p| p.session != from) {
            debug!(session = %self.public_id(key), "message from a former partner; dropped");
            return;
        }
        if let Some(stamp) = &stamp
            && let Some(s) = self.sessions.get_mut(&key)
            && !s.heard.note(stamp)
        {
            debug!(session = %s.public_id, node = %stamp.node, seq = stamp.seq, "message already given, or older than one given; dropped");
            return;
        }
        if awaited {
            return self.deliver_from_awaited_partner(now, key, room, event, stamp);
        }
        // A partner whose node seemed dead is heard from again: it never left.
        self.partner_heard(key, room);
        self.peer_event(now, key, room, &from, event, stamp);
    }

    /// Delivers what the remote partner `from` of `key` (in `room`) says (`stamp`: as it came).
    pub(super) fn peer_event(
        &mut self,
        now: Now,
        key: u64,
        room: u64,
        from: &str,
        event: PeerEvent,
        stamp: Option<Stamp>,
    ) {
        match event {
            PeerEvent::Signal { payload, generation } => {
                self.send_stamped(key, ServerMessage::Signal { payload, generation }, stamp)
            }
            PeerEvent::Reconnecting { grace_ms } => {
                self.send_stamped(key, ServerMessage::PeerReconnecting { grace_ms }, stamp)
            }
            PeerEvent::Resumed => self.send_stamped(key, ServerMessage::PeerResumed, stamp),
            PeerEvent::Left { reason, requeue } => self.remote_left(now, key, room, from, reason, requeue),
            PeerEvent::Rejoin { .. } | PeerEvent::Rejoined { .. } => {}
        }
    }

    /// The partner on another node left the pairing (or never came back: `Timeout`).
    pub(super) fn remote_left(
        &mut self,
        now: Now,
        key: u64,
        room: u64,
        from: &str,
        reason: PeerLeftReason,
        requeue: bool,
    ) {
        // In a room by code the member stays and waits for someone else, as in one process.
        let by_code = self.rooms.get(&room).is_some_and(|r| r.code.is_some());
        match self.rooms.get_mut(&room) {
            Some(r) if by_code => r.remote = None,
            _ => {
                self.rooms.remove(&room);
            }
        }
        let requeue = requeue && !by_code;
        let cooldown = now.mono + self.cfg.rematch_cooldown;
        if let Some(s) = self.sessions.get_mut(&key) {
            if !by_code {
                s.state = State::Idle;
            }
            match reason {
                PeerLeftReason::Blocked | PeerLeftReason::Reported => {
                    if s.blocked_remote.len() == MAX_BLOCKED {
                        s.blocked_remote.remove(0);
                    }
                    s.blocked_remote.push(from.to_string());
                }
                PeerLeftReason::Next => s.remember_remote_partner(from.to_string(), cooldown, now.mono),
                _ => {}
            }
        }
        info!(room, session = %self.public_id(key), reason = ?reason, "partner on another node left");
        self.send(key, None, ServerMessage::PeerLeft { reason });
        if requeue {
            self.enqueue(now, key, None);
            if reason == PeerLeftReason::Next {
                self.join_ahead_of(key, from);
            }
        }
        self.reissue_token(now, key);
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::{Duration, Instant};

    use duet_proto::{ClientFrame, ClientMessage, ServerFrame, parse_server_frame};

    use super::*;
    use crate::hub::{ConnId, HubConfig, Input};

    /// A clustered hub on node "here", with what it sent to clients, the pool and other nodes.
    pub(in crate::hub) struct Node {
        pub hub: Hub,
        pub now: Instant,
        pub frames: Vec<(ConnId, ServerFrame)>,
        pub pool: Vec<PoolOp>,
        pub remote: Vec<(String, RemoteMsg)>,
        pub closed: Vec<ConnId>,
    }

    impl Node {
        fn new() -> Self {
            Self::named("here", None)
        }

        /// A clustered hub on node `name`, signing tokens with `key` (random without).
        pub fn named(name: &str, key: Option<crate::hub::token::TokenKey>) -> Self {
            let cfg = HubConfig {
                rng_seed: Some(3),
                idle_timeout: Duration::from_secs(3600),
                cluster_node: Some(name.into()),
                resume_key: key,
                ..HubConfig::default()
            };
            let hub = Hub::new(cfg, "test");
            Self { hub, now: Instant::now(), frames: vec![], pool: vec![], remote: vec![], closed: vec![] }
        }

        pub fn now(&self) -> Now {
            Now { mono: self.now, unix_secs: 1_700_000_000 }
        }

        pub fn input(&mut self, input: Input) {
            self.hub.handle(self.now(), input);
            self.drain();
        }

        /// Runs the timers due after `d`.
        pub fn advance(&mut self, d: Duration) {
            self.now += d;
            self.hub.handle_timeout(self.now());
            self.drain();
        }

        fn drain(&mut self) {
            while let Some(out) = self.hub.poll_output() {
                match out {
                    Output::Send { conn, text } => self.frames.push((conn, parse_server_frame(&text).unwrap())),
                    Output::Close { conn, .. } => self.closed.push(conn),
                    Output::Pool(op) => self.pool.push(*op),
                    Output::Remote { node, msg } => self.remote.push((node, *msg)),
                }
            }
        }

        pub fn msg(&mut self, conn: ConnId, msg: ClientMessage) {
            self.input(Input::Frame(conn, ClientFrame::new(msg)));
        }

        /// A connected session; returns its connection and public id.
        pub fn client(&mut self, n: u64) -> (ConnId, String) {
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

        pub fn last_to(&self, conn: ConnId) -> &ServerMessage {
            &self.frames.iter().rev().find(|(c, _)| *c == conn).unwrap().1.msg
        }

        pub fn kinds_to(&self, conn: ConnId) -> Vec<&'static str> {
            self.frames.iter().filter(|(c, _)| *c == conn).map(|(_, f)| f.msg.kind()).collect()
        }
    }

    /// `msg` without its stamp (a test compares what it means, not where it came in the
    /// sender's order).
    pub fn unstamped(msg: RemoteMsg) -> RemoteMsg {
        match msg {
            RemoteMsg::Peer { to, from, event, via, .. } => RemoteMsg::Peer { to, from, event, stamp: None, via },
            msg => msg,
        }
    }

    pub fn join() -> ClientMessage {
        ClientMessage::JoinQueue { interests: vec!["Music".into()], language: Some("en-GB".into()) }
    }

    pub fn remote_entry(session: &str) -> PoolEntry {
        PoolEntry {
            session: session.into(),
            node: "there".into(),
            ticket: 9,
            interests: vec!["music".into()],
            language: None,
            avoid: vec![],
            client: None,
            device: None,
            away: false,
            ahead_of: None,
        }
    }

    pub fn joined(node: &Node) -> Vec<PoolEntry> {
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
        let msg = unstamped(msg);
        assert_eq!(node, "there");
        assert_eq!(
            msg,
            RemoteMsg::Peer {
                to: "far".into(),
                from: a_id.clone(),
                event: PeerEvent::Signal { payload: SignalPayload::Restart, generation: None },
                stamp: None,
                via: None
            }
        );
        // Only the current partner is heard: a former or unknown one is dropped.
        let stray = PeerEvent::Signal { payload: SignalPayload::EndOfCandidates, generation: None };
        n.input(Input::Remote(RemoteMsg::Peer {
            to: a_id.clone(),
            from: "someone-else".into(),
            event: stray.clone(),
            stamp: None,
            via: None,
        }));
        assert_ne!(n.last_to(a).kind(), "signal");
        n.input(Input::Remote(RemoteMsg::Peer {
            to: a_id.clone(),
            from: "far".into(),
            event: stray,
            stamp: None,
            via: None,
        }));
        assert!(matches!(n.last_to(a), ServerMessage::Signal { payload: SignalPayload::EndOfCandidates, .. }));
        // The partner presses next: a is told, re-queued, and avoids it for the cooldown.
        let left = PeerEvent::Left { reason: PeerLeftReason::Next, requeue: true };
        n.input(Input::Remote(RemoteMsg::Peer {
            to: a_id.clone(),
            from: "far".into(),
            event: left,
            stamp: None,
            via: None,
        }));
        let tail: Vec<_> = n.kinds_to(a).into_iter().rev().take(3).collect();
        assert_eq!(tail, ["token", "queued", "peer_left"]);
        let again = joined(&n).pop().unwrap();
        assert_eq!(again.avoid, vec!["far".to_string()]);
        n.advance(Duration::from_secs(31));
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
            n.remote.last().cloned().map(|(node, msg)| (node, unstamped(msg))).as_ref(),
            Some(&(
                "there".to_string(),
                RemoteMsg::Peer { to: "far".into(), from: a_id, event: left, stamp: None, via: None }
            ))
        );
    }

    #[test]
    fn a_lost_socket_keeps_its_place_in_the_pool_away_and_a_resume_brings_it_back() {
        let mut n = Node::new();
        let (a, a_id) = n.client(1);
        n.msg(a, join());
        n.input(Input::Closed(a));
        assert!(matches!(n.pool.last(), Some(PoolOp::Retry(e)) if e.session == a_id && e.away), "{:?}", n.pool.last());
        let token = n
            .frames
            .iter()
            .find_map(|(_, f)| {
                if let ServerMessage::Welcome { resume_token, .. } = &f.msg { Some(resume_token.clone()) } else { None }
            })
            .unwrap();
        n.input(Input::Opened(ConnId(2)));
        n.msg(ConnId(2), ClientMessage::Hello { version: 1, resume_token: Some(token), client: None });
        assert!(matches!(n.pool.last(), Some(PoolOp::Join(e)) if e.session == a_id && !e.away));
    }

    fn join_code_of(node: &Node) -> PoolEntry {
        node.pool
            .iter()
            .rev()
            .find_map(|op| if let PoolOp::JoinCode { entry, .. } = op { Some(entry.clone()) } else { None })
            .unwrap()
    }

    #[test]
    fn a_room_by_code_is_decided_by_the_store_and_joined_from_another_node() {
        let mut n = Node::new();
        let (a, a_id) = n.client(1);
        n.msg(a, ClientMessage::JoinRoom { code: "friends".into() });
        assert_eq!(n.kinds_to(a), ["welcome"], "no answer before the store's");
        let mine = join_code_of(&n);
        assert!(matches!(n.pool.last(), Some(PoolOp::JoinCode { may_open: true, .. })));
        // A late answer to an abandoned request is undone, not applied.
        let stale = CodeReply { code: "friends".into(), joiner: mine.clone(), outcome: CodeOutcome::Opened };
        n.msg(a, ClientMessage::Leave);
        n.input(Input::CodeReply(Box::new(stale)));
        assert_eq!(n.pool.last(), Some(&PoolOp::LeaveCode { code: "friends".into(), session: a_id.clone() }));
        assert_ne!(n.last_to(a).kind(), "room_joined");
        // Asked again: opened here, then a session of another node joins.
        n.msg(a, ClientMessage::JoinRoom { code: "friends".into() });
        let mine = join_code_of(&n);
        n.input(Input::CodeReply(Box::new(CodeReply {
            code: "friends".into(),
            joiner: mine.clone(),
            outcome: CodeOutcome::Opened,
        })));
        assert_eq!(n.last_to(a).kind(), "room_joined");
        let joiner = remote_entry("far");
        n.input(Input::Remote(RemoteMsg::CodePaired {
            code: "friends".into(),
            waiting: Box::new(mine),
            joiner: Box::new(joiner),
        }));
        match n.frames.iter().rev().find(|(c, f)| *c == a && f.msg.kind() == "matched").map(|(_, f)| &f.msg) {
            Some(ServerMessage::Matched { room, peer, polite, .. }) => {
                assert_eq!((room.as_str(), peer.session_id.as_str(), *polite), ("friends", "far", false));
            }
            other => panic!("{other:?}"),
        }
        // The partner leaves: a stays in the room by code (not re-queued), as in one process.
        let left = PeerEvent::Left { reason: PeerLeftReason::Left, requeue: true };
        n.input(Input::Remote(RemoteMsg::Peer {
            to: a_id.clone(),
            from: "far".into(),
            event: left,
            stamp: None,
            via: None,
        }));
        assert!(n.kinds_to(a).contains(&"peer_left"));
        assert!(!n.kinds_to(a).contains(&"queued"));
        // Shutdown drains the store: a, alone in its room, leaves it there.
        n.input(Input::Shutdown);
        assert_eq!(n.pool.last(), Some(&PoolOp::LeaveCode { code: "friends".into(), session: a_id }));
    }

    #[test]
    fn shutdown_takes_the_nodes_queued_sessions_out_of_the_shared_pool() {
        let mut n = Node::new();
        let (a, a_id) = n.client(1);
        let (b, b_id) = n.client(2);
        let (_idle, _) = n.client(3);
        n.msg(a, join());
        n.msg(b, join());
        n.pool.clear();
        n.input(Input::Shutdown);
        let mut left: Vec<_> = n
            .pool
            .iter()
            .filter_map(|op| if let PoolOp::Leave { session } = op { Some(session.clone()) } else { None })
            .collect();
        left.sort();
        let mut want = vec![a_id, b_id];
        want.sort();
        assert_eq!(left, want, "both queued sessions leave the pool before their sockets close");
    }
}
