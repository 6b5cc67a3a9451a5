//! Per-session state kept by the hub.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use duet_proto::{ClientInfo, ServerMessage, normalize_interest, normalize_language};

use super::ConnId;
use super::cluster::Stamp;

/// How many answered message ids a session remembers for duplicate detection.
const REMEMBERED_REPLIES: usize = 64;
/// How many recent partners (for the `next` cooldown) a session remembers.
const REMEMBERED_PARTNERS: usize = 16;
/// How many sessions one session may block; the oldest block goes first beyond it.
pub(super) const MAX_BLOCKED: usize = 256;
/// How many different room codes one session may open rooms for per [`ROOM_ATTEMPT_WINDOW`]:
/// opening a room is what a wrong guess of someone else's code does (opening the same room
/// again, as friends who leave and rejoin do, is no guess).
pub(super) const MAX_ROOM_ATTEMPTS: usize = 10;
/// The window of [`MAX_ROOM_ATTEMPTS`].
pub(super) const ROOM_ATTEMPT_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// Where a session is in the matching lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// Neither queued nor in a room.
    Idle,
    /// Waiting in the queue since `since`, in FIFO position `ticket`.
    Queued { ticket: u64, since: Instant },
    /// In a room (random pair, or by code).
    InRoom(u64),
}

/// Matching preferences, normalised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Prefs {
    pub interests: Vec<String>,
    pub language: Option<String>,
}

impl Prefs {
    pub fn new(interests: &[String], language: Option<&str>) -> Self {
        let mut norm: Vec<String> = interests.iter().map(|i| normalize_interest(i)).collect();
        norm.sort();
        norm.dedup();
        Self { interests: norm, language: language.map(normalize_language) }
    }

    /// True if the client expressed any preference.
    pub fn is_picky(&self) -> bool {
        !self.interests.is_empty() || self.language.is_some()
    }

    /// Interests both share (both lists are sorted).
    pub fn common(&self, other: &Prefs) -> Vec<String> {
        self.interests.iter().filter(|i| other.interests.binary_search(i).is_ok()).cloned().collect()
    }

    /// True if the two share an interest or a language.
    pub fn shares(&self, other: &Prefs) -> bool {
        self.language.is_some() && self.language == other.language
            || self.interests.iter().any(|i| other.interests.binary_search(i).is_ok())
    }
}

/// One client session, surviving socket loss for the grace period.
pub(super) struct Session {
    pub public_id: String,
    pub token: String,
    pub conn: Option<ConnId>,
    pub detached_at: Option<Instant>,
    /// Incremented on every attach/detach, so stale grace timers are ignored.
    pub detach_epoch: u64,
    pub next_seq: u64,
    /// Sent but unacknowledged messages, by sequence number, for replay on resume (with the
    /// stamp of a message from a partner on another node).
    outbox: VecDeque<(u64, Arc<str>, Option<Stamp>)>,
    /// Bytes of the frames in `outbox`.
    outbox_bytes: usize,
    replies: VecDeque<(u64, ServerMessage)>,
    pub client: Option<ClientInfo>,
    pub prefs: Prefs,
    pub state: State,
    /// Sessions this one must never be matched with.
    pub blocked: Vec<u64>,
    /// The client's device, if it said (blocks follow it to new sessions).
    pub device: Option<super::blocks::Device>,
    /// Recent partners and until when they may not be matched again.
    pub recent: Vec<(u64, Instant)>,
    /// Partners on other nodes (public ids) this session must never be matched with.
    pub blocked_remote: Vec<String>,
    /// Recent partners on other nodes and until when they may not be matched again.
    pub recent_remote: Vec<(String, Instant)>,
    /// When this session recently opened rooms by code, and a hash of each code.
    room_attempts: VecDeque<(Instant, u64)>,
    /// A `join_room` the shared store has not answered yet (clustered nodes only).
    pub pending_code: Option<PendingCode>,
    /// The newest message from each other node this session was given (clustered nodes only).
    pub heard: Heard,
}

/// How many nodes' newest messages a session remembers (see [`Heard`]); the node heard from
/// longest ago goes first beyond it. A session has one partner at a time, whose messages
/// come from the partner's node and, around a move, its previous one.
pub(super) const HEARD_NODES: usize = 8;

/// The newest message ([`Stamp`]) from each node a session was given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Heard {
    /// Latest first.
    newest: VecDeque<Stamp>,
}

impl Heard {
    /// True, and remembered, if `stamp` is newer than every message given from its node; false
    /// for a copy of one given, or one older.
    pub fn note(&mut self, stamp: &Stamp) -> bool {
        match self.newest.iter().position(|s| s.node == stamp.node) {
            Some(i) if self.newest[i].seq >= stamp.seq => false,
            Some(i) => {
                self.newest.remove(i);
                self.newest.push_front(stamp.clone());
                true
            }
            None => {
                self.newest.push_front(stamp.clone());
                self.newest.truncate(HEARD_NODES);
                true
            }
        }
    }

    /// The newest message from each node, latest first.
    pub fn stamps(&self) -> impl Iterator<Item = &Stamp> {
        self.newest.iter()
    }
}

/// A `join_room` waiting for the shared store's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCode {
    /// The room code.
    pub code: String,
    /// Identifies this request (a late answer to an older one is undone, not applied).
    pub ticket: u64,
    /// The client message id to answer.
    pub id: Option<u64>,
}

impl Session {
    pub fn new(public_id: String, token: String, conn: ConnId, client: Option<ClientInfo>) -> Self {
        Self {
            public_id,
            token,
            conn: Some(conn),
            detached_at: None,
            detach_epoch: 0,
            next_seq: 1,
            outbox: VecDeque::new(),
            outbox_bytes: 0,
            replies: VecDeque::new(),
            client,
            prefs: Prefs::default(),
            state: State::Idle,
            blocked: Vec::new(),
            device: None,
            recent: Vec::new(),
            blocked_remote: Vec::new(),
            recent_remote: Vec::new(),
            room_attempts: VecDeque::new(),
            pending_code: None,
            heard: Heard::default(),
        }
    }

    /// Stores a sent frame for replay, keeping at most `max_frames` frames and `max_bytes`
    /// bytes (the oldest go first); returns how many were dropped.
    pub fn store_unacked(
        &mut self,
        seq: u64,
        text: Arc<str>,
        stamp: Option<Stamp>,
        max_frames: usize,
        max_bytes: usize,
    ) -> usize {
        self.outbox_bytes += text.len();
        self.outbox.push_back((seq, text, stamp));
        let mut dropped = 0;
        while self.outbox.len() > max_frames || (self.outbox_bytes > max_bytes && self.outbox.len() > 1) {
            if let Some((_, t, _)) = self.outbox.pop_front() {
                self.outbox_bytes -= t.len();
                dropped += 1;
            }
        }
        dropped
    }

    /// Drops every stored frame up to `ack`.
    pub fn acked(&mut self, ack: u64) {
        while self.outbox.front().is_some_and(|(seq, _, _)| *seq <= ack) {
            if let Some((_, t, _)) = self.outbox.pop_front() {
                self.outbox_bytes -= t.len();
            }
        }
    }

    /// The stored frames, oldest first.
    pub fn unacked(&self) -> impl Iterator<Item = &Arc<str>> {
        self.outbox.iter().map(|(_, t, _)| t)
    }

    /// The stored frames with their stamps, oldest first.
    pub fn unacked_stamped(&self) -> impl Iterator<Item = (&Arc<str>, &Option<Stamp>)> {
        self.outbox.iter().map(|(_, t, s)| (t, s))
    }

    /// Blocks `other` (the oldest block goes beyond [`MAX_BLOCKED`]).
    pub fn block(&mut self, other: u64) {
        if !self.blocked.contains(&other) {
            if self.blocked.len() == MAX_BLOCKED {
                self.blocked.remove(0);
            }
            self.blocked.push(other);
        }
    }

    /// Counts an attempt to open a room for `code` at `now`; false when over the limit.
    pub fn room_attempt(&mut self, now: Instant, code: &str) -> bool {
        self.room_attempt_inner(now, code, true)
    }

    /// Whether an attempt to open a room for `code` at `now` is within the limit, without
    /// counting it (a node asks the shared store first, and counts only a room it opened).
    pub fn may_open_room(&mut self, now: Instant, code: &str) -> bool {
        self.room_attempt_inner(now, code, false)
    }

    fn room_attempt_inner(&mut self, now: Instant, code: &str, record: bool) -> bool {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        code.hash(&mut hasher);
        let code = hasher.finish();
        while self.room_attempts.front().is_some_and(|(t, _)| now.saturating_duration_since(*t) >= ROOM_ATTEMPT_WINDOW)
        {
            self.room_attempts.pop_front();
        }
        if self.room_attempts.iter().any(|(_, c)| *c == code) {
            return true;
        }
        if self.room_attempts.len() >= MAX_ROOM_ATTEMPTS {
            return false;
        }
        if record {
            self.room_attempts.push_back((now, code));
        }
        true
    }

    /// The answer already given to message `id`, if remembered.
    pub fn cached_reply(&self, id: u64) -> Option<ServerMessage> {
        self.replies.iter().find(|(i, _)| *i == id).map(|(_, m)| m.clone())
    }

    pub fn remember_reply(&mut self, id: u64, msg: ServerMessage) {
        if self.replies.len() == REMEMBERED_REPLIES {
            self.replies.pop_front();
        }
        self.replies.push_back((id, msg));
    }

    /// Until when `other` may not be matched with this session again, if it is cooling down.
    pub fn cooldown_until(&self, other: u64, now: Instant) -> Option<Instant> {
        self.recent.iter().find(|(k, until)| *k == other && *until > now).map(|(_, until)| *until)
    }

    /// [`Session::remember_partner`] for a partner on another node.
    pub fn remember_remote_partner(&mut self, other: String, until: Instant, now: Instant) {
        self.recent_remote.retain(|(k, t)| *k != other && *t > now);
        if self.recent_remote.len() == REMEMBERED_PARTNERS {
            self.recent_remote.remove(0);
        }
        self.recent_remote.push((other, until));
    }

    pub fn remember_partner(&mut self, other: u64, until: Instant, now: Instant) {
        self.recent.retain(|(k, t)| *k != other && *t > now);
        if self.recent.len() == REMEMBERED_PARTNERS {
            self.recent.remove(0);
        }
        self.recent.push((other, until));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(node: &str, seq: u64) -> Stamp {
        Stamp { node: node.into(), seq }
    }

    #[test]
    fn a_session_is_given_only_messages_newer_than_what_it_was_given_from_their_node() {
        let mut heard = Heard::default();
        assert!(heard.note(&stamp("b", 5)));
        assert!(!heard.note(&stamp("b", 5)), "a copy");
        assert!(!heard.note(&stamp("b", 3)), "overtaken by a newer one");
        assert!(heard.note(&stamp("d", 1)), "another node counts on its own");
        assert!(heard.note(&stamp("b", 6)));
        // The node heard from longest ago is forgotten first.
        for n in 0..HEARD_NODES as u64 {
            assert!(heard.note(&stamp(&format!("n{n}"), 1)));
        }
        assert_eq!(heard.stamps().count(), HEARD_NODES);
        assert!(heard.note(&stamp("b", 1)), "forgotten");
    }
}
