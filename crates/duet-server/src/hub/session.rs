//! Per-session state kept by the hub.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use duet_proto::{ClientInfo, ServerMessage, normalize_interest, normalize_language};

use super::ConnId;

/// How many answered message ids a session remembers for duplicate detection.
const REMEMBERED_REPLIES: usize = 64;
/// How many recent partners (for the `next` cooldown) a session remembers.
const REMEMBERED_PARTNERS: usize = 16;

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
    /// Sent but unacknowledged messages, by sequence number, for replay on resume.
    pub outbox: VecDeque<(u64, Arc<str>)>,
    replies: VecDeque<(u64, ServerMessage)>,
    pub client: Option<ClientInfo>,
    pub prefs: Prefs,
    pub state: State,
    /// Sessions this one must never be matched with.
    pub blocked: Vec<u64>,
    /// Recent partners and until when they may not be matched again.
    pub recent: Vec<(u64, Instant)>,
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
            replies: VecDeque::new(),
            client,
            prefs: Prefs::default(),
            state: State::Idle,
            blocked: Vec::new(),
            recent: Vec::new(),
        }
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

    pub fn remember_partner(&mut self, other: u64, until: Instant, now: Instant) {
        self.recent.retain(|(k, t)| *k != other && *t > now);
        if self.recent.len() == REMEMBERED_PARTNERS {
            self.recent.remove(0);
        }
        self.recent.push((other, until));
    }
}
