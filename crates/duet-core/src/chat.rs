//! Text chat over the `chat` data channel with ids and acknowledgements, free of I/O.
//!
//! Every message carries an id; the receiver acknowledges it and delivers each id once.
//! Unacknowledged messages are sent again whenever a (new) channel opens, so a chat survives
//! a replaced peer connection: nothing lost, nothing duplicated.
//!
//! A chat belongs to one pairing: nothing of it (messages not yet acknowledged, the ids seen)
//! outlives the partner. Between partners nothing can be sent or received.
//!
//! Wire format (JSON text on the channel): `{"t":"msg","id":7,"text":"hi"}` and
//! `{"t":"ack","id":7}`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tracing::warn;

/// Longest chat message, in characters.
pub const MAX_CHAT_CHARS: usize = 2000;
/// Messages a partner may deliver per second on average; more are neither delivered nor
/// acknowledged (an honest sender sends them again a second later).
pub const MAX_RECEIVED_PER_SEC: f64 = 50.0;
/// Messages a partner may deliver in a burst (a reconnection re-sends what was unacknowledged).
pub const RECEIVED_BURST: f64 = 100.0;
/// Message ids remembered for duplicate detection; beyond it the oldest half is folded into a
/// floor below which every id counts as seen.
pub const MAX_SEEN_IDS: usize = 4096;

/// A frame on the chat channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ChatFrame {
    /// A message.
    Msg {
        /// Sender-chosen id, unique per sender and call.
        id: u64,
        /// The text.
        text: String,
    },
    /// Receipt of message `id`.
    Ack {
        /// The acknowledged id.
        id: u64,
    },
}

/// Why a message could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    /// Empty after trimming.
    #[error("the message is empty")]
    Empty,
    /// Longer than [`MAX_CHAT_CHARS`].
    #[error("the message is longer than {MAX_CHAT_CHARS} characters")]
    TooLong,
    /// No partner to send it to.
    #[error("there is no partner to send the message to")]
    NoPartner,
}

/// What the chat machine produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatOutput {
    /// Write this text on the channel (if it is open; otherwise it is re-sent on open).
    Transmit(String),
    /// A message from the partner, delivered once.
    Received {
        /// Its id.
        id: u64,
        /// The text.
        text: String,
    },
    /// The partner has our message `id`.
    Delivered {
        /// The id.
        id: u64,
    },
    /// The pairing ended before the partner acknowledged our message `id`; it is dropped.
    Undelivered {
        /// The id.
        id: u64,
    },
}

/// Chat state of one call: of its current pairing, if any.
#[derive(Debug, Default)]
pub struct Chat {
    next_id: u64,
    paired: bool,
    open: bool,
    unacked: BTreeMap<u64, String>,
    seen: BTreeSet<u64>,
    /// Every id at or below it counts as seen.
    seen_floor: u64,
    /// Messages the partner may still deliver now, and when that was last topped up.
    allowance: f64,
    topped_up: Option<Instant>,
    out: Vec<ChatOutput>,
}

impl Chat {
    /// A chat with nothing sent or received.
    pub fn new() -> Self {
        Self { next_id: 1, allowance: RECEIVED_BURST, ..Self::default() }
    }

    /// A new partner: the chat starts empty.
    pub fn start_pairing(&mut self) {
        self.end_pairing();
        self.paired = true;
    }

    /// The partner is gone: messages it did not acknowledge are reported undelivered and
    /// dropped, and the ids it used are forgotten (the next partner numbers from 1 again).
    pub fn end_pairing(&mut self) {
        for id in std::mem::take(&mut self.unacked).into_keys() {
            self.out.push(ChatOutput::Undelivered { id });
        }
        self.seen.clear();
        self.seen_floor = 0;
        self.allowance = RECEIVED_BURST;
        self.topped_up = None;
        self.paired = false;
        self.open = false;
    }

    /// Queues a message for the partner; returns its id.
    pub fn send(&mut self, text: &str) -> Result<u64, ChatError> {
        if !self.paired {
            return Err(ChatError::NoPartner);
        }
        let text = text.trim();
        if text.is_empty() {
            return Err(ChatError::Empty);
        }
        if text.chars().count() > MAX_CHAT_CHARS {
            return Err(ChatError::TooLong);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.unacked.insert(id, text.to_string());
        if self.open {
            self.out.push(ChatOutput::Transmit(frame_json(&ChatFrame::Msg { id, text: text.to_string() })));
        }
        Ok(id)
    }

    /// The channel opened (first time or after a reconnect): everything unacknowledged goes.
    pub fn opened(&mut self) {
        if !self.paired {
            return;
        }
        self.open = true;
        for (id, text) in &self.unacked {
            self.out.push(ChatOutput::Transmit(frame_json(&ChatFrame::Msg { id: *id, text: text.clone() })));
        }
    }

    /// Sends every unacknowledged message again (call periodically: a send can fail while
    /// a channel is still settling, and the receiver drops duplicates by id).
    pub fn retransmit(&mut self) {
        if self.open {
            self.opened();
        }
    }

    /// The channel closed.
    pub fn closed(&mut self) {
        self.open = false;
    }

    /// A text arrived on the channel at `now`.
    pub fn received(&mut self, now: Instant, text: &str) {
        if !self.paired {
            return;
        }
        match serde_json::from_str::<ChatFrame>(text) {
            Ok(ChatFrame::Msg { id, text }) => {
                if !self.allow(now) {
                    return;
                }
                // Always ack (the first ack may have been lost); deliver once.
                self.out.push(ChatOutput::Transmit(frame_json(&ChatFrame::Ack { id })));
                if id > self.seen_floor && self.seen.insert(id) {
                    self.forget_oldest_ids();
                    let text: String = text.chars().take(MAX_CHAT_CHARS).collect();
                    self.out.push(ChatOutput::Received { id, text });
                }
            }
            Ok(ChatFrame::Ack { id }) => {
                if self.unacked.remove(&id).is_some() {
                    self.out.push(ChatOutput::Delivered { id });
                }
            }
            Err(e) => warn!(error = %e, "unreadable chat frame ignored"),
        }
    }

    /// Takes one message from the partner's allowance, topped up at [`MAX_RECEIVED_PER_SEC`].
    fn allow(&mut self, now: Instant) -> bool {
        let elapsed = self.topped_up.map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
        self.allowance = (self.allowance + elapsed * MAX_RECEIVED_PER_SEC).min(RECEIVED_BURST);
        self.topped_up = Some(now);
        if self.allowance < 1.0 {
            return false;
        }
        self.allowance -= 1.0;
        true
    }

    fn forget_oldest_ids(&mut self) {
        if self.seen.len() > MAX_SEEN_IDS {
            let keep = self.seen.split_off(&self.seen.iter().nth(MAX_SEEN_IDS / 2).copied().unwrap_or(0));
            self.seen_floor = self.seen.last().copied().unwrap_or(self.seen_floor).max(self.seen_floor);
            self.seen = keep;
        }
    }

    /// Messages not yet acknowledged.
    pub fn pending(&self) -> usize {
        self.unacked.len()
    }

    /// Takes what was produced.
    pub fn drain(&mut self) -> Vec<ChatOutput> {
        std::mem::take(&mut self.out)
    }
}

fn frame_json(f: &ChatFrame) -> String {
    serde_json::to_string(f).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paired() -> Chat {
        let mut chat = Chat::new();
        chat.start_pairing();
        chat
    }

    fn transmitted(out: &[ChatOutput]) -> Vec<String> {
        out.iter()
            .filter_map(|o| match o {
                ChatOutput::Transmit(t) => Some(t.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn messages_are_delivered_once_and_acknowledged() {
        let (mut a, mut b) = (paired(), paired());
        a.opened();
        b.opened();
        let id = a.send(" hello ").unwrap();
        let wire = transmitted(&a.drain());
        assert_eq!(wire, [r#"{"t":"msg","id":1,"text":"hello"}"#]);
        b.received(Instant::now(), &wire[0]);
        b.received(Instant::now(), &wire[0]);
        let out = b.drain();
        let received: Vec<_> = out.iter().filter(|o| matches!(o, ChatOutput::Received { .. })).collect();
        assert_eq!(received.len(), 1, "delivered once");
        let acks = transmitted(&out);
        assert_eq!(acks.len(), 2, "acked every time");
        a.received(Instant::now(), &acks[0]);
        a.received(Instant::now(), &acks[1]);
        assert_eq!(a.drain(), [ChatOutput::Delivered { id }]);
        assert_eq!(a.pending(), 0);
    }

    #[test]
    fn unacknowledged_messages_survive_a_new_channel() {
        let mut a = paired();
        a.send("sent while connecting").unwrap();
        assert!(transmitted(&a.drain()).is_empty(), "nothing goes before the channel opens");
        a.opened();
        assert_eq!(transmitted(&a.drain()).len(), 1);
        a.closed();
        a.send("during the outage").unwrap();
        a.opened();
        let again = transmitted(&a.drain());
        assert_eq!(again.len(), 2, "both unacked messages are re-sent: {again:?}");
    }

    #[test]
    fn unacknowledged_messages_are_retransmitted_until_acked() {
        let (mut a, mut b) = (paired(), paired());
        a.opened();
        b.opened();
        a.send("lost the first time").unwrap();
        a.drain();
        a.retransmit();
        let again = transmitted(&a.drain());
        assert_eq!(again.len(), 1);
        b.received(Instant::now(), &again[0]);
        let ack = transmitted(&b.drain());
        a.received(Instant::now(), &ack[0]);
        a.drain();
        a.retransmit();
        assert!(a.drain().is_empty(), "nothing left to resend");
    }

    #[test]
    fn bad_input_is_refused_or_ignored() {
        let mut a = paired();
        assert_eq!(a.send("   "), Err(ChatError::Empty));
        assert_eq!(a.send(&"x".repeat(MAX_CHAT_CHARS + 1)), Err(ChatError::TooLong));
        a.received(Instant::now(), "not json");
        a.received(Instant::now(), r#"{"t":"ack","id":99}"#);
        assert!(a.drain().is_empty());
    }

    #[test]
    fn a_new_partner_gets_nothing_of_the_previous_chat() {
        let (mut a, mut b, mut c) = (paired(), paired(), paired());
        a.opened();
        b.opened();
        // b's message 1 reaches a; a's message 1 to b is never acknowledged.
        b.send("from b").unwrap();
        a.received(Instant::now(), &transmitted(&b.drain())[0]);
        a.send("for b only").unwrap();
        a.drain();
        // a moves on to c.
        a.start_pairing();
        assert_eq!(a.drain(), [ChatOutput::Undelivered { id: 1 }]);
        a.opened();
        c.opened();
        assert!(transmitted(&a.drain()).is_empty(), "nothing of b's chat goes to c");
        // c's message 1 is new to a, although b used the same id.
        c.send("from c").unwrap();
        a.received(Instant::now(), &transmitted(&c.drain())[0]);
        let out = a.drain();
        assert!(out.contains(&ChatOutput::Received { id: 1, text: "from c".into() }), "{out:?}");
    }

    #[test]
    fn between_partners_nothing_is_sent_or_received() {
        let mut a = paired();
        a.opened();
        a.end_pairing();
        assert_eq!(a.send("anyone there?"), Err(ChatError::NoPartner));
        a.opened();
        a.received(Instant::now(), r#"{"t":"msg","id":1,"text":"late"}"#);
        assert!(a.drain().is_empty());
    }

    #[test]
    fn a_partner_flooding_the_chat_is_held_to_the_rate_and_memory_stays_bounded() {
        let mut a = paired();
        a.opened();
        let t0 = Instant::now();
        // 10 000 distinct messages within one second: only the burst gets through.
        for id in 1..=10_000u64 {
            a.received(t0, &format!(r#"{{"t":"msg","id":{id},"text":"spam"}}"#));
        }
        let delivered = a.drain().iter().filter(|o| matches!(o, ChatOutput::Received { .. })).count();
        assert_eq!(delivered, RECEIVED_BURST as usize);
        // Over a long call at the full rate, the ids remembered stay bounded.
        let mut now = t0;
        for id in 20_000..40_000u64 {
            now += std::time::Duration::from_millis(20);
            a.received(now, &format!(r#"{{"t":"msg","id":{id},"text":"x"}}"#));
        }
        assert!(a.seen.len() <= MAX_SEEN_IDS, "{}", a.seen.len());
        a.drain();
        // An old id below the floor is a duplicate: acknowledged, not shown again.
        now += std::time::Duration::from_secs(1);
        a.received(now, r#"{"t":"msg","id":20001,"text":"again"}"#);
        assert!(!a.drain().iter().any(|o| matches!(o, ChatOutput::Received { .. })));
        // A new message at the allowed rate still arrives.
        a.received(now, r#"{"t":"msg","id":40001,"text":"still here"}"#);
        assert!(a.drain().iter().any(|o| matches!(o, ChatOutput::Received { .. })));
    }
}
