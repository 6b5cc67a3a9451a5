//! Our video state as the partner must know it, and the partner's as it tells us (sans-IO).
//!
//! Whether our video flows, and why not (camera off, audio-only for the network or by choice),
//! is a state the partner shows, not an event: a notice that does not arrive leaves its UI
//! wrong until the next change, however long that takes. So each side announces its state as
//! `{"t":"video","on":..,"cause":..,"seq":N}` on the `control` channel (`seq` grows with each
//! change) when the channel opens and whenever the state changes, and re-sends it every
//! [`RESEND_AFTER`] until the partner answers `{"t":"video_ack","seq":N}`. Nothing then depends
//! on one message: not on a channel that was not open yet, not on a connection replaced with the
//! notice still on its way (the next one's opening announces the state as it is), not on a
//! receiver that lost it.
//!
//! The receiver acknowledges every `seq` it gets and acts on each version once (a re-sent one
//! is a duplicate): it keeps the partner's state and says what changed, in the application's
//! terms (the partner went audio-only and why, or back; the partner's camera went on or off).
//! Re-sending starts only once the partner has shown it speaks `seq` (it acknowledged, or
//! announced with one): a partner that does not (the browser client) gets each change once, as
//! before, and its own messages, without `seq`, all count.
//!
//! An echo bot (the test call) sends the partner's video back, so its state is the partner's,
//! mirrored.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tracing::{debug, info};

use crate::control::ControlMessage;
use crate::quality::AudioOnlyCause;

/// How long an announcement may go unacknowledged before it is sent again.
pub const RESEND_AFTER: Duration = Duration::from_secs(1);

/// Whether video flows in one direction, and why not when it is suspended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoState {
    /// Video flows.
    pub on: bool,
    /// Why it is suspended (audio-only), from the sender's side; `None` with `on: false` is a
    /// camera that is off.
    pub cause: Option<AudioOnlyCause>,
}

impl VideoState {
    /// Video flows.
    pub const ON: VideoState = VideoState { on: true, cause: None };
}

/// What the driver must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoSyncOutput {
    /// Send this on the `control` channel.
    Send(ControlMessage),
    /// Tell the application: the partner's video was suspended (`on`: audio-only) or resumed;
    /// `cause` is `partner_network` or `partner_choice`.
    PartnerAudioOnly {
        /// Audio-only now.
        on: bool,
        /// Why.
        cause: AudioOnlyCause,
    },
    /// Tell the application: the partner turned its camera on or off.
    PartnerCamera(bool),
}

/// See the module documentation.
#[derive(Debug)]
pub struct VideoSync {
    /// Our state and its version.
    ours: VideoState,
    seq: u64,
    /// The partner acknowledged `seq`.
    acked: bool,
    /// The `control` channel is open.
    open: bool,
    /// When our state goes out again if still unacknowledged.
    resend_at: Option<Instant>,
    /// The partner speaks `seq` and `video_ack`.
    partner_acks: bool,
    /// The newest version of the partner's state acted on, on this connection.
    partner_seq: Option<u64>,
    /// The partner's video flows, as it last said.
    partner_on: bool,
    /// Why the partner's video is suspended (its side's cause), if it is.
    partner_suspended: Option<AudioOnlyCause>,
    /// Our state is the partner's (an echo bot).
    mirror: bool,
    out: VecDeque<VideoSyncOutput>,
}

impl VideoSync {
    /// Starts with our state `ours`, no channel open; `mirror`: an echo bot's.
    pub fn new(ours: VideoState, mirror: bool) -> Self {
        Self {
            ours,
            seq: 1,
            acked: false,
            open: false,
            resend_at: None,
            partner_acks: false,
            partner_seq: None,
            partner_on: true,
            partner_suspended: None,
            mirror,
            out: VecDeque::new(),
        }
    }

    /// Our state is now `state` at `now` (the same state again is no change). Ignored by a
    /// mirror.
    pub fn set(&mut self, now: Instant, state: VideoState) {
        if !self.mirror {
            self.change(now, state);
        }
    }

    fn change(&mut self, now: Instant, state: VideoState) {
        if state == self.ours {
            return;
        }
        self.ours = state;
        self.seq += 1;
        self.acked = false;
        if self.open {
            self.announce(now);
        }
    }

    /// The `control` channel opened at `now`: our state goes out.
    pub fn opened(&mut self, now: Instant) {
        self.open = true;
        self.acked = false;
        self.announce(now);
    }

    /// A new partner: nothing is known of its video (taken as on) until it says.
    pub fn new_partner(&mut self) {
        self.partner_on = true;
        self.partner_suspended = None;
    }

    /// The partner's video flows, as it last said.
    pub fn partner_on(&self) -> bool {
        self.partner_on
    }

    /// Why the partner's video is suspended (from its side: `network` or `choice`), if it is.
    pub fn partner_suspended(&self) -> Option<AudioOnlyCause> {
        self.partner_suspended
    }

    /// The `control` channel closed, or the connection was replaced: nothing sent on it counts,
    /// and the partner (perhaps another client) is learnt afresh: its next announcement counts
    /// whatever its version, and re-sending waits until it shows it speaks `seq`.
    pub fn closed(&mut self) {
        self.open = false;
        self.acked = false;
        self.resend_at = None;
        self.partner_acks = false;
        self.partner_seq = None;
        self.out.retain(|o| !matches!(o, VideoSyncOutput::Send(_)));
    }

    /// A control message from the partner arrived at `now`.
    pub fn received(&mut self, now: Instant, msg: &ControlMessage) {
        match *msg {
            ControlMessage::Video { on, cause, seq: Some(seq) } => {
                self.partner_acks = true;
                self.out.push_back(VideoSyncOutput::Send(ControlMessage::VideoAck { seq }));
                if self.partner_seq.is_some_and(|last| seq <= last) {
                    return;
                }
                self.partner_seq = Some(seq);
                self.partner(now, VideoState { on, cause });
            }
            ControlMessage::Video { on, cause, seq: None } => self.partner(now, VideoState { on, cause }),
            ControlMessage::VideoAck { seq } => {
                self.partner_acks = true;
                if seq == self.seq {
                    self.acked = true;
                    self.resend_at = None;
                }
            }
            _ => {}
        }
    }

    /// When [`VideoSync::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.resend_at.filter(|_| self.open && !self.acked && self.partner_acks)
    }

    /// Runs what is due at `now`: our unacknowledged state goes out again.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_some_and(|t| now >= t) {
            self.announce(now);
        }
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<VideoSyncOutput> {
        self.out.pop_front()
    }

    /// The partner announced `state`: a camera change without a cause, audio-only with one.
    fn partner(&mut self, now: Instant, state: VideoState) {
        info!(on = state.on, cause = state.cause.map(AudioOnlyCause::as_str), "partner video state");
        self.partner_on = state.on;
        match state.cause {
            Some(cause) => {
                self.partner_suspended = (!state.on).then_some(cause);
                self.out.push_back(VideoSyncOutput::PartnerAudioOnly { on: !state.on, cause: cause.for_partner() });
            }
            None => {
                if let Some(was) = self.partner_suspended.filter(|_| state.on) {
                    self.partner_suspended = None;
                    self.out.push_back(VideoSyncOutput::PartnerAudioOnly { on: false, cause: was.for_partner() });
                }
                self.out.push_back(VideoSyncOutput::PartnerCamera(state.on));
            }
        }
        if self.mirror {
            self.change(now, state);
        }
    }

    fn announce(&mut self, now: Instant) {
        let VideoState { on, cause } = self.ours;
        debug!(on, cause = cause.map(AudioOnlyCause::as_str), seq = self.seq, "video state announced");
        self.out.push_back(VideoSyncOutput::Send(ControlMessage::Video { on, cause, seq: Some(self.seq) }));
        self.resend_at = Some(now + RESEND_AFTER);
    }
}

#[cfg(test)]
mod tests;
