//! A pairing across nodes outlives the death of either node. Still free of I/O.
//!
//! - **Session directory.** Every session a clustered node holds is claimed in the shared store
//!   ([`PoolOp::Claim`]), and released when it ends. The answer ([`Claimed`]) says which node
//!   held the session before and which node holds the partner its token names.
//! - **One copy.** A session restored from its token on another node is dropped by the node that
//!   held it ([`RemoteMsg::Taken`]), without ending its pairing: a token is never live twice.
//!   What that node sent the client after the last message the client acknowledged is sent
//!   again by the new node ([`RemoteMsg::Replay`]).
//! - **Rejoin.** The restored session tells its partner's node where it is now
//!   ([`PeerEvent::Rejoin`]); that node answers ([`PeerEvent::Rejoined`]) and both clients get
//!   `peer_resumed`, whichever nodes they are on.
//! - **Nothing in flight lost, nothing twice, nothing out of order.** Once the partner's node
//!   has switched, the old node hands over what it read for the session (`handover.rs`): what
//!   the partner sends the new node meanwhile waits for it. Messages partners sent to an old
//!   node that died are taken out of its inbox instead ([`RemoteMsg::Salvage`]).
//! - **A dead node.** When a node's heartbeat runs out ([`super::Input::NodeDown`]), its remote
//!   partners here hear `peer_reconnecting`; their signals are held until the partner is back,
//!   and after the grace period they hear `peer_left` with `timeout`.

use std::cmp::Reverse;
use std::collections::{HashMap, VecDeque};

use duet_proto::{PeerLeftReason, ServerMessage, parse_server_frame};
use tracing::{debug, info};

use super::blocks::Device;
use super::cluster::{Claimed, PeerEvent, PoolOp, RemoteMsg, RemotePeer, Stamp};
use super::session::State;
use super::token::Claims;
use super::{CLOSE_REPLACED, ConnId, Hub, Now, Output, PendingHello, PendingRestore, Timer};

/// Signals held for a lost partner, at most; older ones are dropped first (the clients
/// renegotiate after `peer_resumed` anyway).
pub(super) const MAX_HELD: usize = 64;

/// Messages from partners kept for a session whose restore waits for the session directory, at
/// most; later ones are dropped.
pub(super) const MAX_EARLY: usize = 1024;

/// Sessions that moved away remembered for forwarding, at most.
pub(super) const MAX_MOVED: usize = 10_000;

/// Where sessions that moved from this node went: messages still on their way here follow.
#[derive(Debug, Default)]
pub(super) struct MovedOut {
    node_of: HashMap<String, String>,
    order: VecDeque<String>,
}

impl MovedOut {
    fn insert(&mut self, session: &str, node: &str) {
        if self.node_of.insert(session.to_string(), node.to_string()).is_none() {
            self.order.push_back(session.to_string());
        }
        while self.order.len() > MAX_MOVED {
            if let Some(oldest) = self.order.pop_front() {
                self.node_of.remove(&oldest);
            }
        }
    }

    /// `session` is back here: messages for it are delivered here, never forwarded.
    pub(super) fn remove(&mut self, session: &str) {
        self.node_of.remove(session);
    }

    /// The node `session` moved to, if it moved from here.
    pub(super) fn node_of(&self, session: &str) -> Option<&str> {
        self.node_of.get(session).map(String::as_str)
    }
}

/// Holds `event` for the lost partner `peer`.
pub(super) fn hold(peer: &mut RemotePeer, event: PeerEvent) {
    push_bounded(&mut peer.held, event);
}

fn push_bounded(held: &mut Vec<PeerEvent>, event: PeerEvent) {
    if held.len() == MAX_HELD {
        held.remove(0);
    }
    held.push(event);
}

impl Hub {
    /// True if the session waits in a restored room for its partner to come back.
    pub(super) fn awaits_partner(&self, key: u64) -> bool {
        let State::InRoom(room) = self.state(key) else { return false };
        self.rooms.get(&room).is_some_and(|r| r.awaiting.is_some())
    }

    /// Holds a signal of `key` for the partner its restored room waits for.
    pub(super) fn hold_for_partner(&mut self, key: u64, event: PeerEvent) {
        let State::InRoom(room) = self.state(key) else { return };
        if let Some(r) = self.rooms.get_mut(&room) {
            push_bounded(&mut r.held, event);
        }
    }

    /// The session `session` lives on this node from now on (`partner`: the partner its token
    /// names).
    pub(super) fn claim(&mut self, session: String, partner: Option<String>) {
        if self.clustered() {
            self.out.push_back(Output::Pool(Box::new(PoolOp::Claim { session, partner })));
        }
    }

    /// A `hello` on `conn` with a token of a session another node may hold or have ended: the
    /// session is claimed, and restored when the directory answers that it has not ended
    /// ([`Hub::claimed`]). A second `hello` with the same session's token meanwhile takes the
    /// place of the first, as a resume replaces an older socket (the first token's pairing is
    /// the one claimed).
    pub(super) fn restore_when_claimed(&mut self, conn: ConnId, hello: PendingHello, claims: Claims) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.restoring = true;
        }
        let session = claims.session.clone();
        let partner = claims.pairing.as_ref().map(|p| p.partner.clone());
        match self.restoring.get_mut(&session) {
            Some(pending) => {
                let old = std::mem::replace(&mut pending.conn, conn);
                pending.hello = hello;
                if self.conns.remove(&old).is_some() {
                    self.out.push_back(Output::Close {
                        conn: old,
                        code: CLOSE_REPLACED,
                        reason: "replaced by a new connection",
                    });
                }
            }
            None => {
                debug!(session = %session, "token of a session held elsewhere; asking the session directory");
                self.restoring.insert(session.clone(), PendingRestore { conn, hello, claims, early: Vec::new() });
                self.claim(session, partner);
            }
        }
    }

    /// The session `key` ended on this node for good.
    pub(super) fn release(&mut self, key: u64) {
        if self.clustered() {
            let session = self.public_id(key).to_string();
            self.out.push_back(Output::Pool(Box::new(PoolOp::Release { session })));
        }
    }

    /// The directory's answer to a claim: a session whose token waited for it is restored (or,
    /// if it ended, its client gets a new session), the old copy is dropped, and a restored
    /// session that waits for its partner asks the partner's node to rejoin the pair.
    pub(super) fn claimed(&mut self, now: Now, c: Claimed) {
        let early = self.restoring.get_mut(&c.session).map(|p| std::mem::take(&mut p.early)).unwrap_or_default();
        self.claimed_here(now, c);
        // What partners on other nodes sent meanwhile, now that the session is here (or not).
        for msg in early {
            self.remote(now, msg);
        }
    }

    fn claimed_here(&mut self, now: Now, c: Claimed) {
        let Some(here) = self.cfg.cluster_node.clone() else { return };
        let mut ack = None;
        if let Some(PendingRestore { conn, hello, claims, .. }) = self.restoring.remove(&c.session) {
            let open = self.conns.get_mut(&conn).map(|c| c.restoring = false).is_some();
            if c.ended {
                info!(session = %c.session, "resume token of a session that ended; starting a new session");
                if open && !self.shutting_down {
                    self.new_session(now, conn, hello.id, hello.client);
                }
                return;
            }
            ack = hello.ack;
            let key = self.restore(now, conn, hello.id, hello.client, claims);
            if !open {
                // Its socket closed while the directory answered: the session waits for it here.
                self.detach(now, key);
            }
        }
        let Some(key) = self.by_public.get(&c.session).copied() else { return };
        if let Some(previous) = c.previous.filter(|n| *n != here) {
            debug!(session = %c.session, node = %previous, "session restored here; its old copy is dropped");
            let msg = RemoteMsg::Taken { session: c.session.clone(), node: here.clone(), ack };
            self.out.push_back(Output::Remote { node: previous.clone(), msg: Box::new(msg) });
            self.moved_in.insert(c.session.clone(), previous);
        }
        let State::InRoom(room) = self.state(key) else { return };
        if self.partner(key).is_some() {
            // The pair is whole here already: what the partner had sent to the old node is
            // behind every message this node wrote there; what it signals now waits for that.
            self.begin_handover(now, &c.session);
            return;
        }
        let awaited = self.rooms.get(&room).and_then(|r| r.awaiting.as_ref()).map(|(p, _)| p.clone());
        if let (Some(partner), Some(node)) = (awaited, c.partner_node.filter(|n| *n != here)) {
            info!(session = %c.session, partner = %partner, node = %node, "asking the partner's node to rejoin the pair");
            let device = self.sessions.get(&key).and_then(|s| s.device).map(|d| d.hex());
            self.emit_remote(&node, &partner, &c.session, PeerEvent::Rejoin { node: here, device });
        }
    }

    /// Another node restored `session` from its token: the copy here goes (what its client did
    /// not process goes to the new node), and its pairing is left for the new node to rejoin.
    pub(super) fn taken(&mut self, session: &str, node: &str, ack: Option<u64>) {
        let Some(key) = self.by_public.get(session).copied() else { return };
        if let Some(ack) = ack {
            self.apply_ack(key, ack);
        }
        // Tokens are the new node's to issue.
        let (mut messages, mut stamps): (Vec<ServerMessage>, Vec<Option<Stamp>>) = self
            .sessions
            .get(&key)
            .map(|s| {
                s.unacked_stamped()
                    .filter_map(|(text, stamp)| Some((parse_server_frame(text).ok()?.msg, stamp.clone())))
                    .filter(|(m, _)| !matches!(m, ServerMessage::Token { .. }))
                    .unzip()
            })
            .unwrap_or_default();
        // Still handed over to this node itself: what waited for that goes on with the session.
        let via = self.cfg.cluster_node.clone();
        let (held_here, forwarded) = self.handovers.remove(session).map(|h| h.split(session, via)).unwrap_or_default();
        messages.extend(held_here);
        while stamps.last().is_some_and(Option::is_none) {
            stamps.pop();
        }
        let heard: Vec<Stamp> =
            self.sessions.get(&key).map(|s| s.heard.stamps().cloned().collect()).unwrap_or_default();
        if !messages.is_empty() || !heard.is_empty() {
            debug!(session = %session, messages = messages.len(), "unacknowledged messages follow the session");
            let msg = RemoteMsg::Replay { session: session.to_string(), messages, stamps, heard };
            self.out.push_back(Output::Remote { node: node.to_string(), msg: Box::new(msg) });
        }
        for msg in forwarded {
            self.out.push_back(Output::Remote { node: node.to_string(), msg: Box::new(msg) });
        }
        if let Some(conn) = self.sessions.get(&key).and_then(|s| s.conn) {
            // The same token is in use on another node: this socket is the stale one.
            self.conns.remove(&conn);
            self.out.push_back(Output::Close { conn, code: CLOSE_REPLACED, reason: "session moved to another server" });
        }
        let device = self.sessions.get(&key).and_then(|s| s.device);
        match self.state(key) {
            // Its entry leaves the pool (only this node's entry: the new node may have queued
            // it again already).
            State::Queued { .. } => self.dequeue(key),
            State::InRoom(room) => {
                let Some(r) = self.rooms.get_mut(&room) else { return };
                match r.members.iter().copied().find(|m| *m != key) {
                    // A pair within this node: the partner stays, with the session on `node`.
                    Some(other) => {
                        let polite_here = r.members.first() != Some(&other);
                        r.members.retain(|m| *m != key);
                        r.remote = Some(RemotePeer { device, ..RemotePeer::new(session, node, polite_here) });
                    }
                    None => {
                        let alone = r.remote.is_none() && r.awaiting.is_none();
                        if let Some(code) = self.rooms.remove(&room).and_then(|r| r.code) {
                            if self.codes.get(&code) == Some(&room) {
                                self.codes.remove(&code);
                            }
                            // Waiting alone in a room by code: the room is free again.
                            if alone {
                                self.code_leave(key, code);
                            }
                        }
                    }
                }
            }
            State::Idle => {}
        }
        self.sessions.remove(&key);
        self.by_public.remove(session);
        self.moved_in.remove(session);
        self.moved_out.insert(session, node);
        info!(session = %session, node = %node, "session moved to another node; the copy here is dropped");
    }

    /// Messages the session's old node had sent it that its client never processed (`stamps`:
    /// those that came from partners on other nodes), and the newest message from each node
    /// it was given there (`heard`): none is given twice, nor after a newer one from its node.
    pub(super) fn replay(
        &mut self,
        session: &str,
        messages: Vec<ServerMessage>,
        stamps: Vec<Option<Stamp>>,
        heard: Vec<Stamp>,
    ) {
        let Some(key) = self.by_public.get(session).copied() else { return };
        info!(session = %session, messages = messages.len(), "messages of the old node sent again");
        let mut stamps = stamps.into_iter();
        for msg in messages {
            let stamp = stamps.next().flatten();
            let fresh = match (&stamp, self.sessions.get_mut(&key)) {
                (Some(stamp), Some(s)) => s.heard.note(stamp),
                _ => true,
            };
            if fresh {
                self.send_stamped(key, msg, stamp);
            } else {
                debug!(session = %session, "replayed message already given, or older than one given; dropped");
            }
        }
        if let Some(s) = self.sessions.get_mut(&key) {
            for stamp in &heard {
                s.heard.note(stamp);
            }
        }
    }

    /// `from`, restored on `node`, asks to go on with its partner `key` here.
    pub(super) fn rejoin(&mut self, now: Now, key: u64, from: &str, node: &str, device: Option<String>) {
        let my_device = self.sessions.get(&key).and_then(|s| s.device).map(|d| d.hex());
        let device = device.as_deref().and_then(Device::from_hex);
        let State::InRoom(room) = self.state(key) else { return self.not_partners_any_more(key, from, node) };
        let Some(r) = self.rooms.get_mut(&room) else { return self.not_partners_any_more(key, from, node) };
        let held = match (&mut r.remote, &r.awaiting) {
            (Some(peer), _) if peer.session == from => {
                peer.node = node.to_string();
                peer.lost_at = None;
                peer.device = peer.device.or(device);
                std::mem::take(&mut peer.held)
            }
            // Restored here earlier, waiting for this very partner.
            (None, Some((partner, polite))) if partner == from => {
                r.remote = Some(RemotePeer { device, ..RemotePeer::new(from, node, *polite) });
                r.awaiting = None;
                std::mem::take(&mut r.held)
            }
            _ => return self.not_partners_any_more(key, from, node),
        };
        self.stats.pairings_restored_total += 1;
        let to = self.public_id(key).to_string();
        info!(a = %to, b = %from, node = %node, "pairing rejoined across nodes");
        let here = self.cfg.cluster_node.clone().unwrap_or_default();
        self.emit_remote(node, from, &to, PeerEvent::Rejoined { node: here, device: my_device });
        for event in held {
            self.emit_remote(node, from, &to, event);
        }
        self.send(key, None, ServerMessage::PeerResumed);
        // Restored here too: what the partner had sent to this session's old node.
        self.begin_handover(now, &to);
    }

    /// `from` (on `node`) asked to rejoin `key`, which has moved on: it is told the pairing is over.
    fn not_partners_any_more(&mut self, key: u64, from: &str, node: &str) {
        debug!(session = %self.public_id(key), "rejoin from a former partner; told it is over");
        let to = self.public_id(key).to_string();
        self.emit_remote(node, from, &to, PeerEvent::Left { reason: PeerLeftReason::Timeout, requeue: false });
    }

    /// True if `room` is a restored room waiting for `partner`.
    pub(super) fn awaits(&self, room: u64, partner: &str) -> bool {
        self.rooms.get(&room).and_then(|r| r.awaiting.as_ref()).is_some_and(|(p, _)| p == partner)
    }

    /// A message from the partner a restored room waits for, before its node answered the
    /// rejoin: a signal is delivered, a goodbye ends the wait.
    pub(super) fn deliver_from_awaited_partner(
        &mut self,
        now: Now,
        key: u64,
        room: u64,
        event: PeerEvent,
        stamp: Option<Stamp>,
    ) {
        match event {
            PeerEvent::Signal { payload, generation } => {
                self.send_stamped(key, ServerMessage::Signal { payload, generation }, stamp)
            }
            PeerEvent::Left { .. } => self.partner_not_back(now, room, false),
            _ => {}
        }
    }

    /// The partner's node took this session's [`PeerEvent::Rejoin`]: the pair is whole again.
    pub(super) fn rejoined(&mut self, now: Now, key: u64, from: &str, node: &str, device: Option<String>) {
        let device = device.as_deref().and_then(Device::from_hex);
        let State::InRoom(room) = self.state(key) else { return };
        let Some(r) = self.rooms.get_mut(&room) else { return };
        let Some((partner, polite)) = r.awaiting.clone() else { return };
        if partner != from {
            return;
        }
        r.awaiting = None;
        r.remote = Some(RemotePeer { device, ..RemotePeer::new(from, node, polite) });
        let held = std::mem::take(&mut r.held);
        let to = self.public_id(key).to_string();
        for event in held {
            self.emit_remote(node, from, &to, event);
        }
        self.send(key, None, ServerMessage::PeerResumed);
        // The partner's node has switched: all it sent to this session's old node is there.
        let session = self.public_id(key).to_string();
        self.begin_handover(now, &session);
    }

    /// A message came from the partner of `key` in `room`: if its node had seemed dead, it
    /// is back, and what was held for it goes out.
    pub(super) fn partner_heard(&mut self, key: u64, room: u64) {
        let Some(peer) = self.rooms.get_mut(&room).and_then(|r| r.remote.as_mut()) else { return };
        if peer.lost_at.take().is_none() {
            return;
        }
        let (node, to, held) = (peer.node.clone(), peer.session.clone(), std::mem::take(&mut peer.held));
        let from = self.public_id(key).to_string();
        for event in held {
            self.emit_remote(&node, &to, &from, event);
        }
        self.send(key, None, ServerMessage::PeerResumed);
    }

    /// `node` stopped beating: its sessions' partners here wait for them (on any node) for the
    /// grace period.
    pub(super) fn node_down(&mut self, now: Now, node: &str) {
        let grace = self.cfg.resume_grace;
        let mut told = Vec::new();
        for (room, r) in &mut self.rooms {
            if let (Some(peer), [member]) = (r.remote.as_mut(), r.members.as_slice())
                && peer.node == node
                && peer.lost_at.is_none()
            {
                peer.lost_at = Some(now.mono);
                told.push((*room, *member, peer.session.clone()));
            }
        }
        info!(node = %node, pairings = told.len(), "node stopped beating; its partners here wait for them");
        for (room, member, session) in told {
            self.timers.push(Reverse((now.mono + grace, Timer::AwaitRemote(room, session, now.mono))));
            self.send(member, None, ServerMessage::PeerReconnecting { grace_ms: grace.as_millis() as u64 });
        }
        // Sessions it was handing over: it never will.
        self.handovers_from_dead_node(now, node);
    }

    /// `node` beats again (its heartbeat had run out): its partners here were waiting for
    /// nothing; they hear `peer_resumed`, and what was held goes out.
    pub(super) fn node_up(&mut self, node: &str) {
        let back: Vec<(u64, u64)> = self
            .rooms
            .iter()
            .filter(|(_, r)| r.remote.as_ref().is_some_and(|p| p.lost_at.is_some() && p.node == node))
            .filter_map(|(room, r)| Some((*room, *r.members.first()?)))
            .collect();
        info!(node = %node, pairings = back.len(), "a node beats again");
        for (room, member) in back {
            self.partner_heard(member, room);
        }
    }

    /// The grace period of a lost remote partner is over: if it is still lost, the call is.
    pub(super) fn remote_not_back(&mut self, now: Now, room: u64, session: &str, lost_at: std::time::Instant) {
        let Some(r) = self.rooms.get(&room) else { return };
        // Only for the loss this timer was set for: a partner lost again has a grace of its own.
        let lost = r.remote.as_ref().is_some_and(|p| p.lost_at == Some(lost_at) && p.session == session);
        let Some(&member) = r.members.first() else { return };
        if lost {
            info!(session = %session, "partner on a dead node did not come back");
            let code = r.code.clone();
            // If that node was only slow, its side ends too.
            self.tell_remote(member, PeerEvent::Left { reason: PeerLeftReason::Timeout, requeue: false });
            self.remote_left(now, member, room, session, PeerLeftReason::Timeout, false);
            // The member stays in its room by code; the partner's dead node cannot take the
            // partner out of it, so this node does, and a newcomer with the code gets the member.
            if let Some(code) = code {
                self.code_leave_session(session.to_string(), code);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use duet_proto::{ClientFrame, ClientMessage, ErrorCode, SignalPayload};

    use super::super::cluster::PoolEntry;
    use super::super::cluster::tests::{Node, join, joined, remote_entry, unstamped};
    use super::*;
    use crate::hub::token::{Claims, Pairing, TokenKey};
    use crate::hub::{CodeOutcome, CodeReply, ConnId, Input, PoolMatch};

    fn key() -> TokenKey {
        TokenKey::new(b"one secret for the service".to_vec())
    }

    /// A session of node `n` on `conn`, paired by the pool with `partner` on node "there".
    fn paired_with_remote(n: &mut Node, conn: u64, partner: &str) -> (ConnId, String) {
        let (c, id) = n.client(conn);
        n.msg(c, join());
        let mine = joined(n).pop().unwrap();
        let m = PoolMatch { room: "r-00000000000a".into(), first: remote_entry(partner), second: mine };
        n.input(Input::Remote(RemoteMsg::Matched(Box::new(m))));
        assert_eq!(n.last_to(c).kind(), "token");
        (c, id)
    }

    /// What node `n` sent to node `to`, taken out (without stamps).
    fn sent_to(n: &mut Node, to: &str) -> Vec<RemoteMsg> {
        let (mine, rest) = std::mem::take(&mut n.remote).into_iter().partition(|(node, _)| node == to);
        n.remote = rest;
        mine.into_iter().map(|(_, m)| unstamped(m)).collect()
    }

    /// Node c asks node "there" to hand session x over.
    fn handover_of_x_to_c() -> [RemoteMsg; 2] {
        [
            RemoteMsg::Handover { session: "x".into(), node: "c".into() },
            RemoteMsg::Salvage { session: "x".into(), force: false },
        ]
    }

    fn signal(p: SignalPayload) -> ClientMessage {
        ClientMessage::Signal { payload: p, generation: None }
    }

    #[test]
    fn a_session_restored_on_a_third_node_rejoins_its_partner_and_the_old_copy_goes() {
        // y on node "b", paired with x on node "there", which died; x comes back on node "c".
        let mut b = Node::named("b", None);
        let (y, y_id) = paired_with_remote(&mut b, 1, "x");
        let mut c = Node::named("c", Some(key()));
        let x = hello_restored_on_c(&mut c, &y_id, Some(4));
        assert_eq!(c.kinds_to(x), [] as [&str; 0], "x waits for the session directory");
        assert_eq!(c.pool.last(), Some(&PoolOp::Claim { session: "x".into(), partner: Some(y_id.clone()) }));

        // The directory says where x was and where y is.
        let answer = Claimed {
            session: "x".into(),
            previous: Some("there".into()),
            partner_node: Some("b".into()),
            ended: false,
        };
        c.input(Input::Claimed(Box::new(answer)));
        assert_eq!(c.kinds_to(x), ["welcome", "peer_reconnecting"]);
        assert_eq!(
            sent_to(&mut c, "there"),
            [RemoteMsg::Taken { session: "x".into(), node: "c".into(), ack: Some(4) }]
        );
        let rejoin = sent_to(&mut c, "b");
        assert_eq!(
            rejoin,
            [RemoteMsg::Peer {
                to: y_id.clone(),
                from: "x".into(),
                event: PeerEvent::Rejoin { node: "c".into(), device: None },
                stamp: None,
                via: None
            }]
        );

        // y's node takes it: y hears peer_resumed, and x's node the answer.
        b.input(Input::Remote(rejoin[0].clone()));
        assert_eq!(b.last_to(y).kind(), "peer_resumed");
        let answer = sent_to(&mut b, "c");
        assert_eq!(
            answer,
            [RemoteMsg::Peer {
                to: "x".into(),
                from: y_id.clone(),
                event: PeerEvent::Rejoined { node: "b".into(), device: None },
                stamp: None,
                via: None
            }]
        );
        c.input(Input::Remote(answer[0].clone()));
        assert_eq!(c.last_to(x).kind(), "peer_resumed");
        // The old node's inbox held nothing more for x.
        assert_eq!(sent_to(&mut c, "there"), handover_of_x_to_c());
        c.input(Input::Salvaged { session: "x".into(), messages: vec![], node_alive: false });

        // Signals flow both ways between the new nodes.
        c.msg(x, signal(SignalPayload::Restart));
        let to_y = sent_to(&mut c, "b");
        assert_eq!(to_y.len(), 1);
        b.input(Input::Remote(to_y[0].clone()));
        assert!(matches!(b.last_to(y), ServerMessage::Signal { payload: SignalPayload::Restart, .. }));
        b.msg(y, signal(SignalPayload::EndOfCandidates));
        let to_x = sent_to(&mut b, "c");
        c.input(Input::Remote(to_x[0].clone()));
        assert!(matches!(c.last_to(x), ServerMessage::Signal { payload: SignalPayload::EndOfCandidates, .. }));
        // The grace period passes: nobody is told the partner left.
        c.advance(Duration::from_secs(60));
        b.advance(Duration::from_secs(60));
        assert_eq!(c.last_to(x).kind(), "signal");
        assert_eq!(b.last_to(y).kind(), "signal");
    }

    #[test]
    fn a_dead_partner_node_is_reported_its_signals_held_and_after_the_grace_the_call_ends() {
        let mut n = Node::named("b", None);
        let (y, _) = paired_with_remote(&mut n, 1, "x");
        n.input(Input::NodeDown("elsewhere".into()));
        assert_eq!(n.last_to(y).kind(), "token", "another node's death is not this pair's");
        n.input(Input::NodeDown("there".into()));
        assert!(matches!(n.last_to(y), ServerMessage::PeerReconnecting { .. }));
        // y's signal waits: nothing goes to the dead node.
        n.msg(y, signal(SignalPayload::Restart));
        assert!(sent_to(&mut n, "there").is_empty());
        n.advance(Duration::from_secs(31));
        assert!(matches!(n.last_to(y), ServerMessage::Token { .. }));
        assert!(n.kinds_to(y).ends_with(&["peer_left", "token"]), "{:?}", n.kinds_to(y));
    }

    #[test]
    fn a_partner_whose_node_dies_again_gets_a_whole_grace_period_the_second_time() {
        let mut n = Node::named("b", None);
        let (y, y_id) = paired_with_remote(&mut n, 1, "x");
        let grace = n.hub.cfg.resume_grace;
        n.input(Input::NodeDown("there".into()));
        // x comes back on node c within the grace period...
        n.advance(grace / 2);
        let rejoin = PeerEvent::Rejoin { node: "c".into(), device: None };
        n.input(Input::Remote(RemoteMsg::Peer {
            to: y_id.clone(),
            from: "x".into(),
            event: rejoin,
            stamp: None,
            via: None,
        }));
        assert_eq!(n.last_to(y).kind(), "peer_resumed");
        // ...and node c dies too, shortly before the first grace period would have run out.
        n.advance(grace / 2 - Duration::from_secs(1));
        n.input(Input::NodeDown("c".into()));
        assert!(matches!(n.last_to(y), ServerMessage::PeerReconnecting { .. }));
        // The first loss's timer is not the second's: y still waits for x.
        n.advance(Duration::from_secs(2));
        assert!(!n.kinds_to(y).contains(&"peer_left"), "given up early: {:?}", n.kinds_to(y));
        n.advance(grace);
        assert!(n.kinds_to(y).contains(&"peer_left"), "{:?}", n.kinds_to(y));
    }

    #[test]
    fn a_partner_back_on_another_node_gets_what_was_held_for_it() {
        let mut n = Node::named("b", None);
        let (y, y_id) = paired_with_remote(&mut n, 1, "x");
        n.input(Input::NodeDown("there".into()));
        n.msg(y, signal(SignalPayload::Restart));
        let rejoin = PeerEvent::Rejoin { node: "c".into(), device: None };
        n.input(Input::Remote(RemoteMsg::Peer {
            to: y_id.clone(),
            from: "x".into(),
            event: rejoin,
            stamp: None,
            via: None,
        }));
        assert_eq!(n.last_to(y).kind(), "peer_resumed");
        let to_x = sent_to(&mut n, "c");
        assert!(matches!(&to_x[0], RemoteMsg::Peer { event: PeerEvent::Rejoined { node, .. }, .. } if node == "b"));
        assert!(matches!(
            &to_x[1],
            RemoteMsg::Peer { event: PeerEvent::Signal { payload: SignalPayload::Restart, .. }, .. }
        ));
        // No timeout later: the partner is back.
        n.advance(Duration::from_secs(31));
        assert_eq!(n.last_to(y).kind(), "peer_resumed");
    }

    #[test]
    fn a_node_that_only_seemed_dead_is_heard_again_and_nothing_is_lost() {
        let mut n = Node::named("b", None);
        let (y, y_id) = paired_with_remote(&mut n, 1, "x");
        n.input(Input::NodeDown("there".into()));
        n.msg(y, signal(SignalPayload::Restart));
        let late = PeerEvent::Signal { payload: SignalPayload::EndOfCandidates, generation: None };
        n.input(Input::Remote(RemoteMsg::Peer { to: y_id, from: "x".into(), event: late, stamp: None, via: None }));
        assert!(n.kinds_to(y).ends_with(&["peer_reconnecting", "peer_resumed", "signal"]), "{:?}", n.kinds_to(y));
        let held = sent_to(&mut n, "there");
        assert!(matches!(
            &held[0],
            RemoteMsg::Peer { event: PeerEvent::Signal { payload: SignalPayload::Restart, .. }, .. }
        ));
    }

    #[test]
    fn a_token_restored_on_another_node_closes_the_copy_here_and_keeps_its_partner() {
        let mut n = Node::named("here", None);
        let (x, x_id) = n.client(1);
        let (y, y_id) = n.client(2);
        n.msg(x, join());
        n.msg(y, join());
        let entries = joined(&n);
        let m = PoolMatch { room: "r-00000000000b".into(), first: entries[0].clone(), second: entries[1].clone() };
        n.input(Input::PoolMatched(Box::new(m)));
        assert_eq!(n.hub.stats().rooms, 1);
        // x processed everything up to its token; then y signals.
        let ack = n.frames.iter().filter(|(c, f)| *c == x && f.msg.kind() == "token").map(|(_, f)| f.seq).max();
        n.msg(y, signal(SignalPayload::Restart));
        n.input(Input::Remote(RemoteMsg::Taken { session: x_id.clone(), node: "c".into(), ack }));
        assert_eq!(n.closed, [x], "the stale socket of the moved session is closed");
        let replay = sent_to(&mut n, "c");
        match replay.as_slice() {
            [RemoteMsg::Replay { session, messages, .. }] => {
                assert_eq!(session, &x_id);
                assert!(matches!(messages.as_slice(), [ServerMessage::Signal { payload: SignalPayload::Restart, .. }]));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!((n.hub.stats().sessions, n.hub.stats().rooms), (1, 1));
        n.input(Input::Closed(x));
        n.input(Input::Remote(RemoteMsg::Peer {
            to: y_id.clone(),
            from: x_id.clone(),
            event: PeerEvent::Rejoin { node: "c".into(), device: None },
            stamp: None,
            via: None,
        }));
        assert_eq!(n.last_to(y).kind(), "peer_resumed");
        n.msg(y, signal(SignalPayload::Restart));
        let to_x = sent_to(&mut n, "c");
        assert!(
            matches!(to_x.last(), Some(RemoteMsg::Peer { to, event: PeerEvent::Signal { .. }, .. }) if *to == x_id)
        );
    }

    #[test]
    fn what_the_old_node_never_delivered_is_sent_by_the_new_one() {
        let mut n = Node::named("c", None);
        let (x, x_id) = n.client(1);
        let late = ServerMessage::Signal { payload: SignalPayload::EndOfCandidates, generation: Some(2) };
        n.input(Input::Remote(RemoteMsg::Replay {
            session: x_id,
            messages: vec![late.clone()],
            stamps: vec![],
            heard: vec![],
        }));
        assert_eq!(n.last_to(x), &late);
    }

    #[test]
    fn a_rejoin_that_comes_before_the_directory_answers_waits_for_it() {
        // x and y were paired on node "there", which died. y came back on node "b" first, and
        // the directory told it x was still on "there"; x comes back on node "c", and y's
        // rejoin reaches c before the directory's answer to x's claim does.
        let mut c = Node::named("c", Some(key()));
        let x = hello_restored_on_c(&mut c, "y", None);
        let rejoin = PeerEvent::Rejoin { node: "b".into(), device: None };
        c.input(Input::Remote(RemoteMsg::Peer {
            to: "x".into(),
            from: "y".into(),
            event: rejoin,
            stamp: None,
            via: None,
        }));
        assert_eq!(c.kinds_to(x), [] as [&str; 0], "x still waits for the session directory");
        assert_eq!(sent_to(&mut c, "b"), []);

        // The directory's answer names y's old node: x asks it in vain, but y's rejoin is taken.
        let answer = Claimed {
            session: "x".into(),
            previous: Some("there".into()),
            partner_node: Some("there".into()),
            ended: false,
        };
        c.input(Input::Claimed(Box::new(answer)));
        assert_eq!(c.last_to(x).kind(), "peer_resumed");
        assert_eq!(
            sent_to(&mut c, "b"),
            [RemoteMsg::Peer {
                to: "y".into(),
                from: "x".into(),
                event: PeerEvent::Rejoined { node: "c".into(), device: None },
                stamp: None,
                via: None
            }]
        );
    }

    /// On node "c": x says hello with its token, which names partner `y_id`, having processed
    /// its old node's messages up to `ack`. Returns x's connection.
    fn hello_restored_on_c(c: &mut Node, y_id: &str, ack: Option<u64>) -> ConnId {
        let claims = Claims {
            session: "x".into(),
            pairing: Some(Pairing { partner: y_id.into(), polite: false, code: None }),
            issued: 1_700_000_000,
            instance: 12345,
            nonce: 1,
        };
        let x = ConnId(7);
        c.input(Input::Opened(x));
        let hello = ClientMessage::Hello { version: 1, resume_token: Some(key().sign(&claims)), client: None };
        c.input(Input::Frame(x, ClientFrame { id: Some(1), ack, msg: hello }));
        x
    }

    /// On node "c": x restored from its token with partner y on node "b"; the old node "there"
    /// is taken to have died. Returns x's connection.
    fn restored_on_c(c: &mut Node, y_id: &str) -> ConnId {
        let x = hello_restored_on_c(c, y_id, None);
        let answer = Claimed {
            session: "x".into(),
            previous: Some("there".into()),
            partner_node: Some("b".into()),
            ended: false,
        };
        c.input(Input::Claimed(Box::new(answer)));
        x
    }

    #[test]
    fn a_token_of_a_session_that_ended_elsewhere_starts_a_new_session() {
        let mut c = Node::named("c", Some(key()));
        let x = hello_restored_on_c(&mut c, "y", None);
        assert!(c.kinds_to(x).is_empty());
        let answer = Claimed { session: "x".into(), previous: None, partner_node: None, ended: true };
        c.input(Input::Claimed(Box::new(answer)));
        match c.last_to(x) {
            ServerMessage::Welcome { session_id, resumed: false, restored: false, .. } => {
                assert_ne!(session_id, "x");
                assert_eq!(c.pool.last(), Some(&PoolOp::Claim { session: session_id.clone(), partner: None }));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.kinds_to(x), ["welcome"], "no pairing, nothing of the old session");
        assert!(c.remote.is_empty(), "no node is told anything about the ended session");
        assert_eq!((c.hub.stats().sessions, c.hub.stats().sessions_restored_total), (1, 0));
    }

    #[test]
    fn while_the_directory_answers_a_newer_socket_takes_the_restore_and_a_closed_one_leaves_it_waiting() {
        let mut c = Node::named("c", Some(key()));
        let first = hello_restored_on_c(&mut c, "y", None);
        // The same token on a second socket, with a second hello on it.
        let claims_so_far = c.pool.len();
        let second = ConnId(8);
        c.input(Input::Opened(second));
        let claims = Claims {
            session: "x".into(),
            pairing: Some(Pairing { partner: "y".into(), polite: false, code: None }),
            issued: 1_700_000_000,
            instance: 12345,
            nonce: 1,
        };
        let hello = ClientMessage::Hello { version: 1, resume_token: Some(key().sign(&claims)), client: None };
        c.msg(second, hello.clone());
        assert_eq!(c.closed, [first], "the older socket is replaced");
        assert_eq!(c.pool.len(), claims_so_far, "one claim for both");
        c.msg(second, hello);
        assert!(matches!(c.last_to(second), ServerMessage::Error { code: ErrorCode::AlreadyWelcomed, .. }));
        // The newer socket closes too before the directory answers: x is restored without one.
        c.input(Input::Closed(second));
        let answer = Claimed { session: "x".into(), previous: Some("there".into()), partner_node: None, ended: false };
        c.input(Input::Claimed(Box::new(answer)));
        let stats = c.hub.stats();
        assert_eq!((stats.sessions, stats.sessions_detached, stats.sessions_restored_total), (1, 1, 1));
        assert!(matches!(sent_to(&mut c, "there").as_slice(), [RemoteMsg::Taken { .. }]));
        // Its client comes back within the grace period and resumes it.
        let third = ConnId(9);
        c.input(Input::Opened(third));
        let hello = ClientMessage::Hello { version: 1, resume_token: Some(key().sign(&claims)), client: None };
        c.msg(third, hello);
        assert!(matches!(c.last_to(third), ServerMessage::Welcome { resumed: true, .. }));
        assert_eq!(c.hub.stats().sessions_detached, 0);
    }

    /// The pairing named by the newest token `conn` got on `n`.
    fn newest_pairing(n: &Node, conn: ConnId) -> Option<Pairing> {
        let token = n.frames.iter().rev().find_map(|(c, f)| match &f.msg {
            ServerMessage::Token { resume_token } | ServerMessage::Welcome { resume_token, .. } if *c == conn => {
                Some(resume_token.clone())
            }
            _ => None,
        });
        key().verify(&token.unwrap()).unwrap().pairing
    }

    #[test]
    fn a_restored_member_of_a_room_by_code_takes_its_place_in_the_shared_room_back() {
        let mut c = Node::named("c", Some(key()));
        let claims = Claims {
            session: "x".into(),
            pairing: Some(Pairing { partner: "y".into(), polite: false, code: Some("friends-4".into()) }),
            issued: 1_700_000_000,
            instance: 12345,
            nonce: 1,
        };
        let x = ConnId(7);
        c.input(Input::Opened(x));
        c.msg(x, ClientMessage::Hello { version: 1, resume_token: Some(key().sign(&claims)), client: None });
        let answer = Claimed { session: "x".into(), previous: Some("there".into()), partner_node: None, ended: false };
        c.input(Input::Claimed(Box::new(answer)));
        assert_eq!(c.kinds_to(x), ["welcome", "peer_reconnecting"]);
        match c.pool.last() {
            Some(PoolOp::RestoreCode { code, entry }) => {
                assert_eq!((code.as_str(), entry.session.as_str(), entry.node.as_str()), ("friends-4", "x", "c"));
            }
            other => panic!("{other:?}"),
        }
        c.input(Input::CodeRestored { code: "friends-4".into(), session: "x".into(), kept: true });
        assert_eq!(c.kinds_to(x), ["welcome", "peer_reconnecting"]);
        // The room moved on without x meanwhile: the pairing goes on without the code.
        c.input(Input::CodeRestored { code: "friends-4".into(), session: "x".into(), kept: false });
        assert_eq!(c.last_to(x).kind(), "token");
        assert_eq!(newest_pairing(&c, x).map(|p| (p.partner, p.code)), Some(("y".into(), None)));
    }

    #[test]
    fn a_partner_given_up_on_in_a_room_by_code_leaves_it_in_the_shared_store_and_the_member_stays() {
        let mut n = Node::named("b", None);
        let (y, _) = n.client(1);
        n.msg(y, ClientMessage::JoinRoom { code: "friends-5".into() });
        let mine = n
            .pool
            .iter()
            .rev()
            .find_map(|op| match op {
                PoolOp::JoinCode { entry, .. } => Some(entry.clone()),
                _ => None,
            })
            .unwrap();
        let paired = CodeOutcome::Paired(Box::new(remote_entry("x")));
        n.input(Input::CodeReply(Box::new(CodeReply {
            code: "friends-5".into(),
            joiner: mine.clone(),
            outcome: paired,
        })));
        assert!(n.kinds_to(y).contains(&"matched"));
        n.input(Input::NodeDown("there".into()));
        n.advance(Duration::from_secs(31));
        assert!(n.kinds_to(y).ends_with(&["peer_left", "token"]), "{:?}", n.kinds_to(y));
        assert_eq!(n.pool.last(), Some(&PoolOp::LeaveCode { code: "friends-5".into(), session: "x".into() }));
        // y waits in the room: a newcomer with the code is paired with it.
        let joiner = PoolEntry { session: "w".into(), ..remote_entry("w") };
        n.input(Input::Remote(RemoteMsg::CodePaired {
            code: "friends-5".into(),
            waiting: Box::new(mine),
            joiner: Box::new(joiner),
        }));
        match n.frames.iter().rev().find(|(c, f)| *c == y && f.msg.kind() == "matched").map(|(_, f)| &f.msg) {
            Some(ServerMessage::Matched { room, peer, .. }) => {
                assert_eq!((room.as_str(), peer.session_id.as_str()), ("friends-5", "w"));
            }
            other => panic!("{other:?}"),
        }
    }

    fn from_y(y: &str, p: SignalPayload) -> RemoteMsg {
        RemoteMsg::Peer {
            to: "x".into(),
            from: y.into(),
            event: PeerEvent::Signal { payload: p, generation: None },
            stamp: None,
            via: None,
        }
    }

    #[test]
    fn what_the_partner_sent_to_a_dead_node_is_salvaged_and_delivered_before_anything_newer() {
        let mut c = Node::named("c", Some(key()));
        let x = restored_on_c(&mut c, "y");
        c.remote.clear();
        let rejoined = PeerEvent::Rejoined { node: "b".into(), device: None };
        c.input(Input::Remote(RemoteMsg::Peer {
            to: "x".into(),
            from: "y".into(),
            event: rejoined,
            stamp: None,
            via: None,
        }));
        assert_eq!(c.last_to(x).kind(), "peer_resumed");
        // Once y's node has switched, whatever it wrote to the old node's inbox is there.
        assert_eq!(sent_to(&mut c, "there"), handover_of_x_to_c());
        // A newer signal waits for the salvage.
        c.input(Input::Remote(from_y("y", SignalPayload::EndOfCandidates)));
        assert_eq!(c.last_to(x).kind(), "peer_resumed");
        let old = vec![from_y("y", SignalPayload::Restart)];
        c.input(Input::Salvaged { session: "x".into(), messages: old, node_alive: false });
        assert_signals_older_first(&c, x);
        // Then signals flow as usual.
        c.input(Input::Remote(from_y("y", SignalPayload::Restart)));
        assert!(matches!(c.last_to(x), ServerMessage::Signal { payload: SignalPayload::Restart, .. }));
    }

    /// `x` got the salvaged `Restart` first, then the partner's newer `EndOfCandidates`.
    fn assert_signals_older_first(c: &Node, x: ConnId) {
        let signals: Vec<&ServerMessage> =
            c.frames.iter().filter(|(conn, f)| *conn == x && f.msg.kind() == "signal").map(|(_, f)| &f.msg).collect();
        assert!(
            matches!(
                signals.as_slice(),
                [
                    ServerMessage::Signal { payload: SignalPayload::Restart, .. },
                    ServerMessage::Signal { payload: SignalPayload::EndOfCandidates, .. }
                ]
            ),
            "{signals:?}"
        );
    }

    #[test]
    fn a_pair_whole_on_the_node_reached_gets_the_salvaged_signals_too() {
        let mut c = Node::named("c", Some(key()));
        let (y, y_id) = paired_with_remote(&mut c, 1, "x");
        let x = restored_on_c(&mut c, &y_id);
        assert_eq!(c.last_to(y).kind(), "peer_resumed", "the pair is whole on node c");
        assert_eq!(c.pool.iter().filter(|op| matches!(op, PoolOp::Claim { .. })).count(), 2);
        // The handover is asked for at the claim, after the old copy is dropped.
        let to_old = sent_to(&mut c, "there");
        assert!(
            matches!(
                to_old.as_slice(),
                [RemoteMsg::Taken { .. }, RemoteMsg::Handover { .. }, RemoteMsg::Salvage { .. }]
            ),
            "{to_old:?}"
        );
        // y signals again before the old node's inbox is salvaged (it died): that newer signal
        // waits for the older one.
        c.msg(y, signal(SignalPayload::EndOfCandidates));
        c.input(Input::Salvaged {
            session: "x".into(),
            messages: vec![from_y(&y_id, SignalPayload::Restart)],
            node_alive: false,
        });
        assert_signals_older_first(&c, x);
        // Then signals flow as usual.
        c.msg(y, signal(SignalPayload::Restart));
        assert!(matches!(c.last_to(x), ServerMessage::Signal { payload: SignalPayload::Restart, .. }));
    }

    #[test]
    fn messages_on_their_way_to_a_moved_session_follow_it() {
        let mut n = Node::named("there", None);
        let (_, x_id) = n.client(1);
        n.input(Input::Remote(RemoteMsg::Taken { session: x_id.clone(), node: "c".into(), ack: None }));
        let late = RemoteMsg::Peer {
            to: x_id.clone(),
            from: "y".into(),
            event: PeerEvent::Signal { payload: SignalPayload::Restart, generation: None },
            stamp: None,
            via: None,
        };
        n.input(Input::Remote(late.clone()));
        let RemoteMsg::Peer { to, from, event, .. } = late else { unreachable!() };
        assert_eq!(sent_to(&mut n, "c"), [RemoteMsg::Peer { to, from, event, stamp: None, via: Some("there".into()) }]);
    }

    #[test]
    fn what_a_restored_session_signalled_before_the_rejoin_follows_it_to_the_partners_node() {
        let mut c = Node::named("c", Some(key()));
        let x = restored_on_c(&mut c, "y");
        c.remote.clear();
        c.msg(x, signal(SignalPayload::Restart));
        assert_ne!(c.last_to(x).kind(), "error", "held, not refused");
        let rejoined = PeerEvent::Rejoined { node: "b".into(), device: None };
        c.input(Input::Remote(RemoteMsg::Peer {
            to: "x".into(),
            from: "y".into(),
            event: rejoined,
            stamp: None,
            via: None,
        }));
        let to_y = sent_to(&mut c, "b");
        assert!(
            matches!(to_y.as_slice(), [RemoteMsg::Peer { to, event: PeerEvent::Signal { payload: SignalPayload::Restart, .. }, .. }] if to == "y"),
            "{to_y:?}"
        );
    }

    #[test]
    fn a_node_that_beats_again_resumes_its_pairings_and_gets_what_was_held() {
        let mut n = Node::named("b", None);
        let (y, _) = paired_with_remote(&mut n, 1, "x");
        n.input(Input::NodeDown("there".into()));
        n.msg(y, signal(SignalPayload::Restart));
        // A quiet call: no message comes from the partner, but its node beats again.
        n.input(Input::NodeUp("there".into()));
        assert_eq!(n.last_to(y).kind(), "peer_resumed");
        assert!(matches!(
            sent_to(&mut n, "there").as_slice(),
            [RemoteMsg::Peer { event: PeerEvent::Signal { payload: SignalPayload::Restart, .. }, .. }]
        ));
        n.advance(Duration::from_secs(60));
        assert_eq!(n.last_to(y).kind(), "peer_resumed", "the grace timer ends nothing");
    }

    #[test]
    fn a_partner_given_up_on_is_told_on_its_node_too() {
        let mut n = Node::named("b", None);
        let (y, y_id) = paired_with_remote(&mut n, 1, "x");
        n.input(Input::NodeDown("there".into()));
        n.advance(Duration::from_secs(31));
        assert!(n.kinds_to(y).contains(&"peer_left"));
        let told = sent_to(&mut n, "there");
        assert!(
            matches!(told.as_slice(), [RemoteMsg::Peer { to, from, event: PeerEvent::Left { reason: PeerLeftReason::Timeout, .. }, .. }] if to == "x" && *from == y_id),
            "{told:?}"
        );
    }

    #[test]
    fn back_on_its_partners_node_a_session_gets_what_was_held_for_it() {
        let mut c = Node::named("c", Some(key()));
        let (y, y_id) = paired_with_remote(&mut c, 1, "x");
        c.input(Input::NodeDown("there".into()));
        c.msg(y, signal(SignalPayload::EndOfCandidates));
        let x = restored_on_c(&mut c, &y_id);
        assert!(
            c.frames.iter().any(|(conn, f)| *conn == x
                && matches!(f.msg, ServerMessage::Signal { payload: SignalPayload::EndOfCandidates, .. })),
            "{:?}",
            c.kinds_to(x)
        );
    }

    #[test]
    fn the_partners_signal_before_its_node_answers_the_rejoin_is_delivered() {
        let mut c = Node::named("c", Some(key()));
        let x = restored_on_c(&mut c, "y");
        // Forwarded by y's old node, it beats B's Rejoined here.
        c.input(Input::Remote(from_y("y", SignalPayload::Restart)));
        assert!(matches!(c.last_to(x), ServerMessage::Signal { payload: SignalPayload::Restart, .. }));
    }

    #[test]
    fn a_rejoin_from_a_former_partner_is_answered_and_ends_the_wait() {
        let mut b = Node::named("b", None);
        let (_, y_id) = b.client(1);
        let rejoin = PeerEvent::Rejoin { node: "c".into(), device: None };
        b.input(Input::Remote(RemoteMsg::Peer {
            to: y_id.clone(),
            from: "x".into(),
            event: rejoin,
            stamp: None,
            via: None,
        }));
        let answer = sent_to(&mut b, "c");
        assert!(matches!(answer.as_slice(), [RemoteMsg::Peer { event: PeerEvent::Left { .. }, .. }]), "{answer:?}");
        let mut c = Node::named("c", Some(key()));
        let x = restored_on_c(&mut c, &y_id);
        c.input(Input::Remote(answer[0].clone()));
        assert!(c.kinds_to(x).ends_with(&["peer_left", "token"]), "{:?}", c.kinds_to(x));
    }

    #[test]
    fn a_queued_session_taken_elsewhere_leaves_the_pool_and_a_room_by_code_is_freed() {
        let mut n = Node::named("there", None);
        let (q, q_id) = n.client(1);
        n.msg(q, join());
        n.input(Input::Remote(RemoteMsg::Taken { session: q_id.clone(), node: "c".into(), ack: None }));
        assert_eq!(n.pool.last(), Some(&PoolOp::Leave { session: q_id }));
        let (w, w_id) = n.client(2);
        n.msg(w, ClientMessage::JoinRoom { code: "friends-1".into() });
        let entry = n.pool.iter().find_map(|op| match op {
            PoolOp::JoinCode { entry, .. } => Some(entry.clone()),
            _ => None,
        });
        let reply = CodeReply { code: "friends-1".into(), joiner: entry.unwrap(), outcome: CodeOutcome::Opened };
        n.input(Input::CodeReply(Box::new(reply)));
        n.input(Input::Remote(RemoteMsg::Taken { session: w_id.clone(), node: "c".into(), ack: None }));
        assert_eq!(n.pool.last(), Some(&PoolOp::LeaveCode { code: "friends-1".into(), session: w_id }));
    }

    #[test]
    fn a_session_back_on_a_node_it_had_left_is_no_longer_forwarded_from_there() {
        let mut c = Node::named("c", Some(key()));
        c.input(Input::Remote(RemoteMsg::Taken { session: "x".into(), node: "d".into(), ack: None }));
        let x = restored_on_c(&mut c, "y");
        c.remote.clear();
        let rejoined = PeerEvent::Rejoined { node: "b".into(), device: None };
        c.input(Input::Remote(RemoteMsg::Peer {
            to: "x".into(),
            from: "y".into(),
            event: rejoined,
            stamp: None,
            via: None,
        }));
        c.input(Input::Salvaged { session: "x".into(), messages: vec![], node_alive: false });
        c.input(Input::Remote(from_y("y", SignalPayload::Restart)));
        assert!(matches!(c.last_to(x), ServerMessage::Signal { .. }));
        assert!(sent_to(&mut c, "d").is_empty(), "delivered here, not sent on to d");
    }
}
