//! Queue, pairing, rooms by code, next/leave/report/block.

use std::cmp::Reverse;

use duet_proto::{ErrorCode, PeerInfo, PeerLeftReason, ServerMessage};
use tracing::info;

use super::session::{Prefs, State};
use super::{ConnId, Hub, Now, Room, Timer, cluster};

/// How many queue entries one matching attempt looks at (oldest first).
const MAX_SCAN: usize = 1024;

impl Hub {
    pub(super) fn join_queue(&mut self, now: Now, conn: ConnId, key: u64, id: Option<u64>, prefs: Prefs) {
        match self.state(key) {
            State::InRoom(_) => {
                self.fail(conn, Some(key), id, ErrorCode::Busy, "in a call or room: send next or leave first")
            }
            State::Queued { ticket, since } => {
                // Already waiting: take the new preferences, keep the place in the queue.
                if prefs.is_picky() {
                    let at = (since + self.cfg.interest_wait).max(now.mono);
                    self.timers.push(Reverse((at, Timer::Rematch(key, ticket))));
                }
                if let Some(s) = self.sessions.get_mut(&key) {
                    s.prefs = prefs;
                }
                self.reply_queued(key, id);
                self.try_match(now, key);
            }
            State::Idle => {
                if let Some(s) = self.sessions.get_mut(&key) {
                    s.prefs = prefs;
                }
                self.enqueue(now, key, id);
            }
        }
    }

    /// Puts an idle session into the queue with its current preferences and tries to match it.
    pub(super) fn enqueue(&mut self, now: Now, key: u64, id: Option<u64>) {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let Some(s) = self.sessions.get_mut(&key) else { return };
        s.state = State::Queued { ticket, since: now.mono };
        let picky = s.prefs.is_picky();
        self.queue.insert(ticket, key);
        if picky {
            self.timers.push(Reverse((now.mono + self.cfg.interest_wait, Timer::Rematch(key, ticket))));
        }
        self.reply_queued(key, id);
        if self.clustered() {
            self.pool_join(now, key);
        } else {
            self.try_match(now, key);
        }
    }

    fn reply_queued(&mut self, key: u64, id: Option<u64>) {
        let Some(s) = self.sessions.get(&key) else { return };
        let msg = ServerMessage::Queued { interests: s.prefs.interests.clone(), language: s.prefs.language.clone() };
        self.reply(key, id, msg);
    }

    /// Takes a session out of the queue (and out of the shared pool, if there is one).
    pub(super) fn dequeue(&mut self, key: u64) {
        if self.take_from_queue(key) {
            self.pool_leave(key);
        }
    }

    /// Takes a session out of this hub's queue only; true if it was queued.
    pub(super) fn take_from_queue(&mut self, key: u64) -> bool {
        if let Some(s) = self.sessions.get_mut(&key)
            && let State::Queued { ticket, .. } = s.state
        {
            self.queue.remove(&ticket);
            s.state = State::Idle;
            return true;
        }
        false
    }

    /// True if `key` accepts a partner who shares nothing with it.
    fn open_to_anyone(&self, key: u64, now: Now) -> bool {
        let Some(s) = self.sessions.get(&key) else { return false };
        match s.state {
            State::Queued { since, .. } => !s.prefs.is_picky() || now.mono >= since + self.cfg.interest_wait,
            _ => false,
        }
    }

    fn blocked(&self, now: Now, a: u64, b: u64) -> bool {
        let has = |x: u64, y: u64| self.sessions.get(&x).is_some_and(|s| s.blocked.contains(&y));
        let device = |k: u64| self.sessions.get(&k).and_then(|s| s.device);
        let by_device = device(a).zip(device(b)).is_some_and(|(da, db)| self.device_blocks.blocked(now.mono, da, db));
        has(a, b) || has(b, a) || by_device
    }

    /// Looks for a partner for queued session `key`: the longest-waiting session that shares
    /// an interest or language; failing that, the longest-waiting one, if both sides accept
    /// anyone. Never a blocked pair, nor a pair that just parted with `next`.
    pub(super) fn try_match(&mut self, now: Now, key: u64) {
        if self.clustered() {
            return self.pool_retry(now, key);
        }
        let Some(me) = self.sessions.get(&key) else { return };
        let State::Queued { ticket: my_ticket, .. } = me.state else { return };
        if me.conn.is_none() {
            return;
        }
        let me_open = self.open_to_anyone(key, now);
        let mut shared = None;
        let mut any = None;
        let mut retry_at = None;
        for (&ticket, &other) in self.queue.iter().take(MAX_SCAN) {
            if other == key {
                continue;
            }
            let Some(o) = self.sessions.get(&other) else { continue };
            if o.conn.is_none() || self.blocked(now, key, other) {
                continue;
            }
            let cooldown = me.cooldown_until(other, now.mono).or_else(|| o.cooldown_until(key, now.mono));
            if let Some(until) = cooldown {
                retry_at = Some(retry_at.map_or(until, |r: std::time::Instant| r.min(until)));
                continue;
            }
            if me.prefs.shares(&o.prefs) {
                shared = Some((ticket, other));
                break;
            }
            if any.is_none() && me_open && self.open_to_anyone(other, now) {
                any = Some((ticket, other));
            }
        }
        match shared.or(any) {
            Some((their_ticket, other)) => {
                // The one who waited longer makes the offer (impolite); the newcomer is polite.
                let (first, second) = if their_ticket < my_ticket { (other, key) } else { (key, other) };
                self.take_from_queue(first);
                self.take_from_queue(second);
                let room = self.next_room;
                self.next_room += 1;
                let name = format!("r-{}", self.random_hex(6));
                self.rooms.insert(room, Room::new(name, None, vec![first, second]));
                self.announce_match(now, room);
            }
            None => {
                if let Some(at) = retry_at {
                    self.timers.push(Reverse((at, Timer::Rematch(key, my_ticket))));
                }
            }
        }
    }

    /// Both members of a full room learn of each other; members[0] is impolite.
    pub(super) fn announce_match(&mut self, now: Now, room: u64) {
        let Some(r) = self.rooms.get(&room) else { return };
        let (name, members) = (r.name.clone(), r.members.clone());
        let [first, second] = members[..] else { return };
        for key in [first, second] {
            if let Some(s) = self.sessions.get_mut(&key) {
                s.state = State::InRoom(room);
            }
        }
        self.stats.matches_total += 1;
        let (Some(a), Some(b)) = (self.sessions.get(&first), self.sessions.get(&second)) else { return };
        let common = a.prefs.common(&b.prefs);
        let by_code = self.rooms.get(&room).is_some_and(|r| r.code.is_some());
        info!(room, by_code, a = %a.public_id, b = %b.public_id, common = common.len(), "matched");
        let msgs = [(first, b, false), (second, a, true)].map(|(to, peer, polite)| {
            let msg = ServerMessage::Matched {
                room: name.clone(),
                peer: PeerInfo {
                    session_id: peer.public_id.clone(),
                    client: peer.client.clone(),
                    language: peer.prefs.language.clone(),
                },
                polite,
                ice_servers: self.cfg.ice.servers_for(&self.sessions[&to].public_id, now.unix_secs),
                common_interests: common.clone(),
            };
            (to, msg)
        });
        for (to, msg) in msgs {
            self.send(to, None, msg);
            self.reissue_token(now, to);
        }
    }

    pub(super) fn next(&mut self, now: Now, key: u64, id: Option<u64>) {
        match self.state(key) {
            State::InRoom(_) => {
                let remote = self.remote_partner(key).map(|p| p.session.clone());
                if let (Some(other), Some(s)) = (remote, self.sessions.get_mut(&key)) {
                    s.remember_remote_partner(other, now.mono + self.cfg.rematch_cooldown, now.mono);
                }
                if let Some(partner) = self.leave_room(now, key, PeerLeftReason::Next, true) {
                    let until = now.mono + self.cfg.rematch_cooldown;
                    for (a, b) in [(key, partner), (partner, key)] {
                        if let Some(s) = self.sessions.get_mut(&a) {
                            s.remember_partner(b, until, now.mono);
                        }
                    }
                }
                self.enqueue(now, key, id);
            }
            State::Queued { .. } => self.reply_queued(key, id),
            State::Idle => self.enqueue(now, key, id),
        }
    }

    pub(super) fn join_room(&mut self, now: Now, conn: ConnId, key: u64, id: Option<u64>, code: String) {
        if let State::InRoom(_) = self.state(key) {
            self.fail(conn, Some(key), id, ErrorCode::Busy, "in a call or room: send leave first");
            return;
        }
        // Queue preferences do not apply to a room with a friend.
        if let Some(s) = self.sessions.get_mut(&key) {
            s.prefs = Prefs::default();
        }
        if self.clustered() {
            // The room may be open on another node: the shared store decides.
            return self.code_join(now, key, id, code);
        }
        match self.codes.get(&code).copied() {
            Some(room) => {
                let members = self.rooms.get(&room).map(|r| r.members.clone()).unwrap_or_default();
                // A restored member's partner, expected back, holds the other place.
                let awaited = self.rooms.get(&room).is_some_and(|r| r.awaiting.is_some());
                let refused =
                    members.len() + usize::from(awaited) >= 2 || members.iter().any(|m| self.blocked(now, *m, key));
                if refused {
                    self.fail(conn, Some(key), id, ErrorCode::RoomFull, "the room is full");
                    return;
                }
                self.dequeue(key);
                if let Some(r) = self.rooms.get_mut(&room) {
                    r.members.push(key);
                }
                self.reply(key, id, ServerMessage::RoomJoined { code });
                self.announce_match(now, room);
            }
            None => {
                // Opening a room is what a wrong guess of another's code does: limited.
                if !self.sessions.get_mut(&key).is_some_and(|s| s.room_attempt(now.mono, &code)) {
                    self.fail(conn, Some(key), id, ErrorCode::RateLimited, "too many room codes tried; wait a minute");
                    return;
                }
                self.dequeue(key);
                let room = self.next_room;
                self.next_room += 1;
                self.rooms.insert(room, Room::new(code.clone(), Some(code.clone()), vec![key]));
                self.codes.insert(code.clone(), room);
                if let Some(s) = self.sessions.get_mut(&key) {
                    s.state = State::InRoom(room);
                }
                info!(session = %self.public_id(key), room, "waiting in room");
                self.reply(key, id, ServerMessage::RoomJoined { code });
            }
        }
    }

    /// Takes `key` out of its room; the partner (if any) gets `peer_left {reason}`.
    /// A random pair's room dissolves: the partner is re-queued if `requeue_partner`, else
    /// idle. In a room by code the partner stays and waits for someone else.
    /// Returns the partner.
    pub(super) fn leave_room(
        &mut self,
        now: Now,
        key: u64,
        reason: PeerLeftReason,
        requeue_partner: bool,
    ) -> Option<u64> {
        let State::InRoom(room) = self.state(key) else { return None };
        if let Some(code) = self.rooms.get(&room).and_then(|r| r.code.clone()) {
            self.code_leave(key, code);
        }
        if self.tell_remote(key, cluster::PeerEvent::Left { reason, requeue: requeue_partner }) {
            // A pair across nodes: the partner's node ends its side.
            if let Some(code) = self.rooms.remove(&room).and_then(|r| r.code)
                && self.codes.get(&code) == Some(&room)
            {
                self.codes.remove(&code);
            }
            if let Some(s) = self.sessions.get_mut(&key) {
                s.state = State::Idle;
            }
            info!(room, session = %self.public_id(key), reason = ?reason, "left a pairing across nodes");
            self.reissue_token(now, key);
            return None;
        }
        if let Some(s) = self.sessions.get_mut(&key) {
            s.state = State::Idle;
        }
        let r = self.rooms.get_mut(&room)?;
        r.members.retain(|m| *m != key);
        let partner = r.members.first().copied();
        let by_code = r.code.is_some();
        if (!by_code || r.members.is_empty())
            && let Some(r) = self.rooms.remove(&room)
            && let Some(code) = r.code
        {
            self.codes.remove(&code);
        }
        info!(room, by_code, session = %self.public_id(key), reason = ?reason, "left room");
        self.reissue_token(now, key);
        if let Some(p) = partner {
            self.send(p, None, ServerMessage::PeerLeft { reason });
            if !by_code {
                if let Some(s) = self.sessions.get_mut(&p) {
                    s.state = State::Idle;
                }
                if requeue_partner {
                    self.enqueue(now, p, None);
                }
            }
            self.reissue_token(now, p);
        }
        partner
    }

    /// `report` and `block`: end the call, and never match this pair again.
    pub(super) fn end_with(
        &mut self,
        now: Now,
        conn: ConnId,
        key: u64,
        id: Option<u64>,
        reason: PeerLeftReason,
        report: Option<String>,
    ) {
        if let Some((other, their_device)) = self.remote_partner(key).map(|p| (p.session.clone(), p.device)) {
            let my_device = self.sessions.get(&key).and_then(|s| s.device);
            if let (Some(a), Some(b)) = (my_device, their_device) {
                self.device_blocks.block(now.mono, a, b);
                self.share_device_block(a, b);
            }
            if let Some(s) = self.sessions.get_mut(&key) {
                if s.blocked_remote.len() == super::session::MAX_BLOCKED {
                    s.blocked_remote.remove(0);
                }
                s.blocked_remote.push(other.clone());
            }
            match &report {
                Some(_) => self.stats.reports_total += 1,
                None => self.stats.blocks_total += 1,
            }
            info!(session = %self.public_id(key), partner = %other, report = report.is_some(), "block across nodes");
            self.leave_room(now, key, reason, false);
            self.reply(key, id, ServerMessage::Ok);
            return;
        }
        let Some(partner) = self.partner(key) else {
            self.fail(conn, Some(key), id, ErrorCode::NotInCall, "no partner to report or block");
            return;
        };
        for (a, b) in [(key, partner), (partner, key)] {
            if let Some(s) = self.sessions.get_mut(&a) {
                s.block(b);
            }
        }
        let device = |k: u64| self.sessions.get(&k).and_then(|s| s.device);
        if let (Some(a), Some(b)) = (device(key), device(partner)) {
            self.device_blocks.block(now.mono, a, b);
            self.share_device_block(a, b);
        }
        match &report {
            Some(text) => {
                self.stats.reports_total += 1;
                let reason = super::loggable(text);
                info!(reporter = %self.public_id(key), reported = %self.public_id(partner), ?reason, "report");
            }
            None => {
                self.stats.blocks_total += 1;
                info!(blocker = %self.public_id(key), blocked = %self.public_id(partner), "block");
            }
        }
        self.leave_room(now, key, reason, false);
        self.reply(key, id, ServerMessage::Ok);
    }
}
