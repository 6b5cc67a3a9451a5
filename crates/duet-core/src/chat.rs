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

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use tracing::warn;

/// Longest chat message, in characters.
pub const MAX_CHAT_CHARS: usize = 2000;

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
    seen: HashSet<u64>,
    out: Vec<ChatOutput>,
}

impl Chat {
    /// A chat with nothing sent or received.
    pub fn new() -> Self {
        Self { next_id: 1, ..Self::default() }
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

    /// A text arrived on the channel.
    pub fn received(&mut self, text: &str) {
        if !self.paired {
            return;
        }
        match serde_json::from_str::<ChatFrame>(text) {
            Ok(ChatFrame::Msg { id, text }) => {
                // Always ack (the first ack may have been lost); deliver once.
                self.out.push(ChatOutput::Transmit(frame_json(&ChatFrame::Ack { id })));
                if self.seen.insert(id) {
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
        b.received(&wire[0]);
        b.received(&wire[0]);
        let out = b.drain();
        let received: Vec<_> = out.iter().filter(|o| matches!(o, ChatOutput::Received { .. })).collect();
        assert_eq!(received.len(), 1, "delivered once");
        let acks = transmitted(&out);
        assert_eq!(acks.len(), 2, "acked every time");
        a.received(&acks[0]);
        a.received(&acks[1]);
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
        b.received(&again[0]);
        let ack = transmitted(&b.drain());
        a.received(&ack[0]);
        a.drain();
        a.retransmit();
        assert!(a.drain().is_empty(), "nothing left to resend");
    }

    #[test]
    fn bad_input_is_refused_or_ignored() {
        let mut a = paired();
        assert_eq!(a.send("   "), Err(ChatError::Empty));
        assert_eq!(a.send(&"x".repeat(MAX_CHAT_CHARS + 1)), Err(ChatError::TooLong));
        a.received("not json");
        a.received(r#"{"t":"ack","id":99}"#);
        assert!(a.drain().is_empty());
    }

    #[test]
    fn a_new_partner_gets_nothing_of_the_previous_chat() {
        let (mut a, mut b, mut c) = (paired(), paired(), paired());
        a.opened();
        b.opened();
        // b's message 1 reaches a; a's message 1 to b is never acknowledged.
        b.send("from b").unwrap();
        a.received(&transmitted(&b.drain())[0]);
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
        a.received(&transmitted(&c.drain())[0]);
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
        a.received(r#"{"t":"msg","id":1,"text":"late"}"#);
        assert!(a.drain().is_empty());
    }
}
