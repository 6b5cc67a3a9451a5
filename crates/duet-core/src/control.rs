//! Messages on the `control` data channel between partners (JSON text, `t`-tagged), shared with
//! the browser client: camera and audio-only state (kept in step by [`crate::call::VideoSync`]),
//! the size the partner's video is shown at, and the keepalive ([`crate::keepalive`]).

use serde::{Deserialize, Serialize};

use crate::quality::AudioOnlyCause;

/// Largest display size a partner may announce (anything larger is clamped).
const MAX_VIEW: u32 = 7680;

/// One control message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ControlMessage {
    /// Our video is on or off. With a `cause` it is audio-only (`network` or `choice`, from the
    /// sender's side); without one the camera was turned off.
    Video {
        /// Video flows.
        on: bool,
        /// Why it is suspended (audio-only), when it is.
        #[serde(default, skip_serializing_if = "Option::is_none", with = "cause")]
        cause: Option<AudioOnlyCause>,
        /// The version of the sender's state (it grows with each change); a Duet receiver
        /// answers with a `video_ack` of it. Absent from clients that do not re-send (the
        /// browser client).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    /// The partner's `video` of this `seq` arrived.
    VideoAck {
        /// Its `seq`.
        seq: u64,
    },
    /// The size (pixels) the partner's video is displayed at here: the sender never needs to
    /// send more.
    View {
        /// Width.
        w: u32,
        /// Height.
        h: u32,
    },
    /// Keepalive probe; answered with a `pong` carrying the same `ts`.
    Ping {
        /// The sender's clock, ms (opaque to the receiver).
        ts: u64,
    },
    /// Keepalive answer.
    Pong {
        /// The `ts` of the ping answered.
        ts: u64,
    },
}

impl ControlMessage {
    /// Parses a message; `None` for anything malformed or unknown (ignored, never fatal).
    pub fn parse(text: &str) -> Option<Self> {
        let msg: ControlMessage = serde_json::from_str(text).ok()?;
        Some(match msg {
            ControlMessage::View { w, h } if w == 0 || h == 0 => return None,
            ControlMessage::View { w, h } => ControlMessage::View { w: w.min(MAX_VIEW), h: h.min(MAX_VIEW) },
            other => other,
        })
    }

    /// The JSON text.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

mod cause {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::quality::AudioOnlyCause;

    pub fn serialize<S: Serializer>(c: &Option<AudioOnlyCause>, s: S) -> Result<S::Ok, S::Error> {
        match c {
            Some(c) => s.serialize_str(c.as_str()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<AudioOnlyCause>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        Ok(match text.as_deref() {
            Some("network") => Some(AudioOnlyCause::Network),
            Some("choice") => Some(AudioOnlyCause::Choice),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_messages_have_a_short_wire_shape() {
        assert_eq!(ControlMessage::Ping { ts: 7 }.encode(), r#"{"t":"ping","ts":7}"#);
        assert_eq!(ControlMessage::parse(r#"{"t":"pong","ts":7}"#), Some(ControlMessage::Pong { ts: 7 }));
    }

    #[test]
    fn messages_round_trip_in_the_shape_the_browser_client_uses() {
        let off = ControlMessage::Video { on: false, cause: Some(AudioOnlyCause::Network), seq: Some(3) };
        assert_eq!(off.encode(), r#"{"t":"video","on":false,"cause":"network","seq":3}"#);
        assert_eq!(ControlMessage::parse(&off.encode()), Some(off));
        assert_eq!(ControlMessage::VideoAck { seq: 3 }.encode(), r#"{"t":"video_ack","seq":3}"#);
        // The browser client's shape: no `seq`.
        let camera = ControlMessage::Video { on: true, cause: None, seq: None };
        assert_eq!(camera.encode(), r#"{"t":"video","on":true}"#);
        assert_eq!(ControlMessage::parse(r#"{"t":"video","on":true}"#), Some(camera));
        assert_eq!(
            ControlMessage::parse(r#"{"t":"view","w":320,"h":180}"#),
            Some(ControlMessage::View { w: 320, h: 180 })
        );
    }

    #[test]
    fn hostile_or_unknown_messages_are_ignored_or_bounded() {
        assert_eq!(ControlMessage::parse("not json"), None);
        assert_eq!(ControlMessage::parse(r#"{"t":"ping"}"#), None);
        assert_eq!(ControlMessage::parse(r#"{"t":"view","w":0,"h":10}"#), None);
        assert_eq!(
            ControlMessage::parse(r#"{"t":"view","w":4000000000,"h":10}"#),
            Some(ControlMessage::View { w: MAX_VIEW, h: 10 })
        );
        // Only the sender's own causes travel: anything else reads as a camera change.
        assert_eq!(
            ControlMessage::parse(r#"{"t":"video","on":false,"cause":"partner_network"}"#),
            Some(ControlMessage::Video { on: false, cause: None, seq: None })
        );
    }
}
