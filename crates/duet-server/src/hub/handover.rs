//! A session that moved to this node from another one that may still be alive gets its
//! partner's messages exactly once and in the order they were sent. Still free of I/O.
//!
//! Around a move, the partner's messages reach the new node on several paths: what the old
//! node had given the session and its client had not processed comes in the old node's
//! [`RemoteMsg::Replay`]; what the old node reads for the session afterwards, it forwards
//! ([`RemoteMsg::Peer`] with `via`); what it never read is taken out of its inbox
//! ([`RemoteMsg::Salvage`]); and once the partner's node has switched, its messages come
//! straight here. Each path is in order, but they race each other.
//!
//! - **Order.** When the partner's node has switched (it answered the rejoin, asked to rejoin,
//!   or the pair is whole on this node), every message it sent to the old node is in the old
//!   node's inbox. This node then writes [`RemoteMsg::Handover`] there, behind all of them. A
//!   live old node reads it after them (by then it has given each to the session, which
//!   replays it, or forwarded it), and answers [`RemoteMsg::HandedOver`] behind its replay and
//!   forwards. Until then, what the partner sends straight to the session here waits
//!   ([`Handover::held`]); the replay and forwards, which are older, are delivered as they come.
//! - **A dead old node** never answers. The salvage asked for with the handover takes what it
//!   did not read at once if its heartbeat is over; otherwise the wait ends when its heartbeat
//!   runs out ([`super::Input::NodeDown`]) or after [`HANDOVER_WAIT`], with a salvage that takes
//!   what it did not read even though it may beat ([`RemoteMsg::Salvage`] `force`). Then what
//!   waited is delivered.
//! - **Exactly once.** Every node stamps the messages it sends to partners with its address
//!   and a number that grows with each ([`Stamp`]). A session remembers the newest stamp it was
//!   given from each node ([`super::session::Heard`]; the old node sends its own with the
//!   replay), and is never given a message not newer than that: not a copy (a salvage may take
//!   what a live old node read just before its read marker moved, and forwards), and not one
//!   that a newer one overtook (an old node slower than [`HANDOVER_WAIT`]; such a message is
//!   lost, as it would be with a dead node).

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use duet_proto::ServerMessage;
use tracing::{debug, info, warn};

use super::cluster::{PeerEvent, RemoteMsg, Stamp};
use super::{Hub, Now, Output, Timer};

/// How long a session's previous node, while it beats, has to hand the session over before
/// what it did not read is salvaged anyway. A live node answers after two trips through
/// inboxes (milliseconds: the relay between nodes has a p99 of 4 to 10 ms under load, see
/// `BENCHMARKS.md`); one that takes a hundred times that is as good as gone for this session.
/// A node killed less than a heartbeat ago (5 s) cannot be told from a slow one: its sessions'
/// partners' messages wait this long on their new nodes.
pub(super) const HANDOVER_WAIT: Duration = Duration::from_millis(500);

/// How long salvages asked for are waited for, once one is forced. A node answers every
/// salvage its hub asks for, at the latest when it gives up writing what came before it (after
/// 15 s, `crate::cluster::DELIVERY_PATIENCE`); one not answered by then was refused (the queue
/// to Redis was full) and never will be.
pub(super) const SALVAGE_WAIT: Duration = Duration::from_secs(30);

/// Messages held for one session during its handover, at most: beyond that, the wait ends.
pub(super) const MAX_HANDOVER_HELD: usize = 1024;

/// A session whose previous node is handing it over.
#[derive(Debug)]
pub(super) struct Handover {
    /// The previous node.
    from: String,
    /// When the wait ends by [`Hub::handover_overdue`] (identifies its timer).
    deadline: Instant,
    /// A salvage was asked for that takes what the node did not read, beating or not.
    forced: bool,
    /// Salvages asked for and not answered yet. Each runs on a task of its own, so their
    /// answers come in any order: one that found nothing may come before the one that took
    /// what the node never read. The wait ends only once none is out.
    salvages_out: u32,
    /// The previous node is done with the session: it handed it over, or a salvage took what
    /// it never read.
    done: bool,
    /// What the partner sent the session straight here meanwhile, in order.
    held: Vec<Held>,
}

/// A message waiting for a handover.
#[derive(Debug)]
enum Held {
    /// From the partner on this node.
    Local(ServerMessage),
    /// From the partner on another node.
    Remote { from: String, event: PeerEvent, stamp: Option<Stamp> },
}

impl Handover {
    /// What waited, for a session that moves on before its handover is over: the messages of
    /// its partner on this node, and those of its partner on another node, addressed to `to`
    /// and forwarded `via` this node.
    pub(super) fn split(self, to: &str, via: Option<String>) -> (Vec<ServerMessage>, Vec<RemoteMsg>) {
        let mut local = Vec::new();
        let mut remote = Vec::new();
        for held in self.held {
            match held {
                Held::Local(msg) => local.push(msg),
                Held::Remote { from, event, stamp } => {
                    remote.push(RemoteMsg::Peer { to: to.to_string(), from, event, stamp, via: via.clone() })
                }
            }
        }
        (local, remote)
    }
}

impl Hub {
    /// The partner of `session`, which moved here, has switched to this node: the node it moved
    /// from is asked to hand it over (nothing happens if it did not move here).
    pub(super) fn begin_handover(&mut self, now: Now, session: &str) {
        let Some(from) = self.moved_in.remove(session) else { return };
        let Some(here) = self.cfg.cluster_node.clone() else { return };
        debug!(session = %session, node = %from, "asking the session's previous node to hand it over");
        let ask = RemoteMsg::Handover { session: session.to_string(), node: here };
        self.out.push_back(Output::Remote { node: from.clone(), msg: Box::new(ask) });
        let salvage = RemoteMsg::Salvage { session: session.to_string(), force: false };
        self.out.push_back(Output::Remote { node: from.clone(), msg: Box::new(salvage) });
        let deadline = now.mono + HANDOVER_WAIT;
        self.timers.push(Reverse((deadline, Timer::Handover(session.to_string(), deadline))));
        // A handover asked for again (the session moved here once more) keeps what waits, and
        // the salvages still out, whose answers come all the same.
        let (held, out) = self.handovers.remove(session).map(|h| (h.held, h.salvages_out)).unwrap_or_default();
        let h = Handover { from, deadline, forced: false, salvages_out: out + 1, done: false, held };
        self.handovers.insert(session.to_string(), h);
    }

    /// `node`, which holds `session` now, asks this node (where it was) to hand it over: this
    /// node has read everything written here before the request, and given or forwarded it.
    pub(super) fn handover_asked(&mut self, session: String, node: &str) {
        let Some(here) = self.cfg.cluster_node.clone() else { return };
        debug!(session = %session, node = %node, "session handed over to its new node");
        let msg = RemoteMsg::HandedOver { session, node: here };
        self.out.push_back(Output::Remote { node: node.to_string(), msg: Box::new(msg) });
    }

    /// `node` handed `session` over: what waited for that goes to the session (once no salvage
    /// is out).
    pub(super) fn handed_over(&mut self, now: Now, session: &str, node: &str) {
        if let Some(h) = self.handovers.get_mut(session).filter(|h| h.from == node) {
            h.done = true;
            self.end_handover_if_done(now, session);
        }
    }

    /// The wait for the previous node of `session` set to end at `deadline` is over: a node
    /// that did not hand the session over in time has its inbox salvaged; salvages still out
    /// [`SALVAGE_WAIT`] after that are waited for no longer, and what waited is delivered.
    pub(super) fn handover_overdue(&mut self, now: Now, session: &str, deadline: Instant) {
        let Some(h) = self.handovers.get(session).filter(|h| h.deadline == deadline) else { return };
        if !h.forced {
            let wait_ms = HANDOVER_WAIT.as_millis() as u64;
            info!(session = %session, node = %h.from, wait_ms, "previous node did not hand the session over in time; its inbox is salvaged");
            return self.force_salvage(now, session);
        }
        warn!(session = %session, node = %h.from, salvages_out = h.salvages_out, "salvage of the previous node's inbox never answered; what waited is delivered");
        self.end_handover(now, session);
    }

    /// `node` stopped beating: the sessions it was handing over here are salvaged from it.
    pub(super) fn handovers_from_dead_node(&mut self, now: Now, node: &str) {
        let sessions: Vec<String> =
            self.handovers.iter().filter(|(_, h)| h.from == node && !h.forced).map(|(s, _)| s.clone()).collect();
        for session in sessions {
            self.force_salvage(now, &session);
        }
    }

    /// Asks for a salvage that takes what the previous node of `session` did not read, beating
    /// or not, and waits at most [`SALVAGE_WAIT`] for the salvages out.
    fn force_salvage(&mut self, now: Now, session: &str) {
        let Some(h) = self.handovers.get_mut(session) else { return };
        h.forced = true;
        h.salvages_out += 1;
        h.deadline = now.mono + SALVAGE_WAIT;
        self.timers.push(Reverse((h.deadline, Timer::Handover(session.to_string(), h.deadline))));
        let node = h.from.clone();
        let msg = RemoteMsg::Salvage { session: session.to_string(), force: true };
        self.out.push_back(Output::Remote { node, msg: Box::new(msg) });
    }

    /// A message sent straight here to `to` by its partner `from`: while `to` is handed over it
    /// waits (`Ok`), otherwise it is given back to be delivered now.
    pub(super) fn hold_during_handover(
        &mut self,
        now: Now,
        to: &str,
        from: String,
        event: PeerEvent,
        stamp: Option<Stamp>,
    ) -> Result<(), PeerEvent> {
        let Some(h) = self.handovers.get_mut(to) else { return Err(event) };
        h.held.push(Held::Remote { from, event, stamp });
        self.check_held(now, to);
        Ok(())
    }

    /// A message from the partner on this node to `key`: while `key` is handed over it waits,
    /// so that it comes after what the partner had sent to `key`'s previous node.
    pub(super) fn deliver_from_local_partner(&mut self, now: Now, key: u64, msg: ServerMessage) {
        let session = self.public_id(key).to_string();
        match self.handovers.get_mut(&session) {
            Some(h) => {
                h.held.push(Held::Local(msg));
                self.check_held(now, &session);
            }
            None => self.send(key, None, msg),
        }
    }

    /// Too much waits for the handover of `session`: the wait ends (what the previous node
    /// still sends is delivered only if newer than what was given).
    fn check_held(&mut self, now: Now, session: &str) {
        if let Some(h) = self.handovers.get(session).filter(|h| h.held.len() >= MAX_HANDOVER_HELD) {
            warn!(session = %session, node = %h.from, held = h.held.len(), "too much waits for a session's handover; delivered now");
            self.end_handover(now, session);
        }
    }

    /// What [`RemoteMsg::Salvage`] took out of the inbox of `session`'s previous node: nothing
    /// if that node beats and the salvage was not forced (`node_alive`: it hands over itself);
    /// otherwise what it never read, delivered before what waited (which is newer), once no
    /// other salvage is out.
    pub(super) fn salvaged(&mut self, now: Now, session: &str, messages: Vec<RemoteMsg>, node_alive: bool) {
        if let Some(h) = self.handovers.get_mut(session) {
            h.salvages_out = h.salvages_out.saturating_sub(1);
            h.done |= !node_alive;
        }
        if node_alive {
            debug!(session = %session, "previous node beats; it hands the session over itself");
            return self.end_handover_if_done(now, session);
        }
        let Some(key) = self.by_public.get(session).copied() else {
            self.handovers.remove(session);
            return;
        };
        if !messages.is_empty() {
            info!(session = %session, messages = messages.len(), "messages left in the previous node's inbox delivered");
        }
        for msg in messages {
            let RemoteMsg::Peer { from, event, stamp, .. } = msg else { continue };
            let local_partner = self.partner(key).map(|p| self.public_id(p).to_string());
            match event {
                // Sent across nodes before the pair came together here: a signal still counts.
                PeerEvent::Signal { payload, generation } if local_partner.as_deref() == Some(from.as_str()) => {
                    let fresh = match (&stamp, self.sessions.get_mut(&key)) {
                        (Some(stamp), Some(s)) => s.heard.note(stamp),
                        _ => true,
                    };
                    if fresh {
                        self.send_stamped(key, ServerMessage::Signal { payload, generation }, stamp);
                    }
                }
                event => self.peer_message(now, key, from, event, stamp),
            }
        }
        self.end_handover_if_done(now, session);
    }

    /// Ends the handover of `session` if its previous node is done with it and no salvage is
    /// out.
    fn end_handover_if_done(&mut self, now: Now, session: &str) {
        if self.handovers.get(session).is_some_and(|h| h.done && h.salvages_out == 0) {
            self.end_handover(now, session);
        }
    }

    /// The previous node of `session` is done with it: what waited goes to the session, in order.
    fn end_handover(&mut self, now: Now, session: &str) {
        let Some(h) = self.handovers.remove(session) else { return };
        let Some(key) = self.by_public.get(session).copied() else { return };
        debug!(session = %session, node = %h.from, held = h.held.len(), "handover over");
        for held in h.held {
            match held {
                Held::Local(msg) => self.send(key, None, msg),
                Held::Remote { from, event, stamp } => self.peer_message(now, key, from, event, stamp),
            }
        }
    }
}
