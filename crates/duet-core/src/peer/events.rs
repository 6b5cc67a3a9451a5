//! The peer's events on their way to the application, in bounded queues wherever the partner
//! feeds them.
//!
//! - Connection events (candidates, gathering, state, negotiation needed) come from our own
//!   ICE agent and connection: a handful per connection, never dropped, unbounded.
//! - Data channel events: a bounded queue whose reader waits when it is full, so SCTP flow
//!   control stops the partner (webrtc's own queues are bounded too); nothing is dropped.
//! - Audio packets and video frames: bounded queues; when one is full the newest item is
//!   dropped and counted. A dropped video frame is reported as a [`PeerEvent::VideoGap`].
//! - Keyframe requests and gaps are flags: any number of them waiting is one event.
//!
//! [`PeerEvents::recv`] reads connection events first, then audio, data channels, keyframe
//! requests, gaps and video last: when the application falls behind, video is what waits and
//! is dropped, never audio or control before it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::mpsc::{self, error::TrySendError};

use super::PeerEvent;

/// Partner audio packets waiting for the application, at most (1.3 s of 20 ms packets).
const AUDIO_QUEUE: usize = 64;
/// Partner video frames waiting for the application, at most (2 s at 30 fps: a decoder that
/// starts slowly on a loaded machine catches up instead of losing frames).
const VIDEO_QUEUE: usize = 64;
/// Bytes of partner video frames waiting for the application, at most.
const VIDEO_QUEUE_BYTES: usize = 8 << 20;
/// Data channel events waiting for the application, at most.
const CHANNEL_QUEUE: usize = 64;

/// What the peer refused from the partner so far.
#[derive(Debug, Default)]
pub(super) struct Refusals {
    /// Frames under assembly dropped for their size.
    pub(super) oversized_frames: AtomicU64,
    /// Video frames and audio packets dropped because the application was behind.
    pub(super) media_dropped: AtomicU64,
    /// Keyframe requests ignored for coming too soon after the last one.
    pub(super) keyframe_requests_ignored: AtomicU64,
}

/// The sending side, shared by the peer's tasks and its event handler.
#[derive(Clone)]
pub(super) struct EventSender {
    connection: mpsc::UnboundedSender<PeerEvent>,
    channels: mpsc::Sender<PeerEvent>,
    audio: mpsc::Sender<PeerEvent>,
    video: mpsc::Sender<PeerEvent>,
    /// Bytes of the frames in `video`.
    video_bytes: Arc<AtomicUsize>,
    video_gap: mpsc::Sender<()>,
    keyframe_requested: mpsc::Sender<()>,
    refusals: Arc<Refusals>,
}

/// The events of one peer connection (see [`super::Peer::new`]).
pub struct PeerEvents {
    connection: mpsc::UnboundedReceiver<PeerEvent>,
    channels: mpsc::Receiver<PeerEvent>,
    audio: mpsc::Receiver<PeerEvent>,
    video: mpsc::Receiver<PeerEvent>,
    video_bytes: Arc<AtomicUsize>,
    video_gap: mpsc::Receiver<()>,
    keyframe_requested: mpsc::Receiver<()>,
}

/// A connected sender and receiver; drops are counted in `refusals`.
pub(super) fn queues(refusals: Arc<Refusals>) -> (EventSender, PeerEvents) {
    let (connection_tx, connection) = mpsc::unbounded_channel();
    let (channels_tx, channels) = mpsc::channel(CHANNEL_QUEUE);
    let (audio_tx, audio) = mpsc::channel(AUDIO_QUEUE);
    let (video_tx, video) = mpsc::channel(VIDEO_QUEUE);
    let (video_gap_tx, video_gap) = mpsc::channel(1);
    let (keyframe_tx, keyframe_requested) = mpsc::channel(1);
    let video_bytes = Arc::new(AtomicUsize::new(0));
    let sender = EventSender {
        connection: connection_tx,
        channels: channels_tx,
        audio: audio_tx,
        video: video_tx,
        video_bytes: video_bytes.clone(),
        video_gap: video_gap_tx,
        keyframe_requested: keyframe_tx,
        refusals,
    };
    (sender, PeerEvents { connection, channels, audio, video, video_bytes, video_gap, keyframe_requested })
}

/// Raises a flag; false if the receiver is gone.
fn raise(flag: &mpsc::Sender<()>) -> bool {
    !matches!(flag.try_send(()), Err(TrySendError::Closed(_)))
}

impl EventSender {
    /// Queues `event` (waiting only for room on a data channel queue); false once the receiver
    /// is gone.
    pub(super) async fn send(&self, event: PeerEvent) -> bool {
        match event {
            PeerEvent::ChannelOpen(_) | PeerEvent::ChannelMessage(..) | PeerEvent::ChannelClosed(_) => {
                self.channels.send(event).await.is_ok()
            }
            PeerEvent::AudioPacket { .. } => self.offer(&self.audio, event).is_some(),
            PeerEvent::VideoFrame { ref data, .. } => {
                let size = data.len();
                let queued = if self.video_bytes.fetch_add(size, Ordering::Relaxed) + size > VIDEO_QUEUE_BYTES {
                    self.refusals.media_dropped.fetch_add(1, Ordering::Relaxed);
                    Some(false)
                } else {
                    self.offer(&self.video, event)
                };
                if queued != Some(true) {
                    self.video_bytes.fetch_sub(size, Ordering::Relaxed);
                }
                match queued {
                    Some(true) => true,
                    Some(false) => raise(&self.video_gap),
                    None => false,
                }
            }
            PeerEvent::VideoGap => raise(&self.video_gap),
            PeerEvent::KeyframeRequested => raise(&self.keyframe_requested),
            PeerEvent::GatheringComplete
            | PeerEvent::Candidate(_)
            | PeerEvent::State(_)
            | PeerEvent::NegotiationNeeded => self.connection.send(event).is_ok(),
        }
    }

    /// Queues a media event, dropping (and counting) it if its queue is full: whether it was
    /// queued, `None` once the receiver is gone.
    fn offer(&self, queue: &mpsc::Sender<PeerEvent>, event: PeerEvent) -> Option<bool> {
        match queue.try_send(event) {
            Ok(()) => Some(true),
            Err(TrySendError::Full(_)) => {
                self.refusals.media_dropped.fetch_add(1, Ordering::Relaxed);
                Some(false)
            }
            Err(TrySendError::Closed(_)) => None,
        }
    }
}

impl PeerEvents {
    /// The next event, by priority (see the module documentation); `None` once the connection
    /// is gone. Cancel-safe.
    pub async fn recv(&mut self) -> Option<PeerEvent> {
        tokio::select! {
            biased;
            Some(event) = self.connection.recv() => Some(event),
            Some(event) = self.audio.recv() => Some(event),
            Some(event) = self.channels.recv() => Some(event),
            Some(()) = self.keyframe_requested.recv() => Some(PeerEvent::KeyframeRequested),
            Some(()) = self.video_gap.recv() => Some(PeerEvent::VideoGap),
            Some(event) = self.video.recv() => {
                if let PeerEvent::VideoFrame { data, .. } = &event {
                    self.video_bytes.fetch_sub(data.len(), Ordering::Relaxed);
                }
                Some(event)
            }
            else => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::call::PeerState;
    use crate::peer::Channel;

    fn frame() -> PeerEvent {
        PeerEvent::VideoFrame { data: Bytes::from_static(&[0x11]), keyframe: false }
    }

    fn audio(seq: u16) -> PeerEvent {
        PeerEvent::AudioPacket { seq, data: Bytes::from_static(&[0xf8]) }
    }

    /// Everything waiting, in the order `recv` gives it.
    async fn drain(events: &mut PeerEvents) -> Vec<PeerEvent> {
        let mut out = Vec::new();
        while let Ok(Some(ev)) = tokio::time::timeout(std::time::Duration::from_millis(5), events.recv()).await {
            out.push(ev);
        }
        out
    }

    #[tokio::test]
    async fn a_flood_is_bounded_and_video_waits_behind_audio_and_control() {
        let refusals = Arc::new(Refusals::default());
        let (tx, mut rx) = queues(refusals.clone());
        for i in 0..10_000u16 {
            assert!(tx.send(frame()).await);
            assert!(tx.send(audio(i)).await);
            assert!(tx.send(PeerEvent::KeyframeRequested).await);
        }
        assert!(tx.send(PeerEvent::ChannelMessage(Channel::Control, "ping".into())).await);
        assert!(tx.send(PeerEvent::State(PeerState::Connected)).await);
        let got = drain(&mut rx).await;
        assert_eq!(got.len(), 1 + AUDIO_QUEUE + 1 + 1 + 1 + VIDEO_QUEUE, "{got:?}");
        assert!(matches!(got[0], PeerEvent::State(PeerState::Connected)));
        assert!(got[1..=AUDIO_QUEUE].iter().all(|e| matches!(e, PeerEvent::AudioPacket { .. })));
        let rest: Vec<_> = got[AUDIO_QUEUE + 1..].iter().collect();
        assert!(matches!(rest[0], PeerEvent::ChannelMessage(Channel::Control, _)));
        assert!(matches!(rest[1], PeerEvent::KeyframeRequested));
        assert!(matches!(rest[2], PeerEvent::VideoGap), "dropped frames are a gap");
        assert!(rest[3..].iter().all(|e| matches!(e, PeerEvent::VideoFrame { .. })));
        let dropped = refusals.media_dropped.load(Ordering::Relaxed);
        assert_eq!(dropped, (10_000 - AUDIO_QUEUE + 10_000 - VIDEO_QUEUE) as u64);
    }

    #[tokio::test]
    async fn data_channel_events_wait_for_room_and_are_never_dropped() {
        let (tx, mut rx) = queues(Arc::default());
        let sender = tokio::spawn(async move {
            for i in 0..3 * CHANNEL_QUEUE {
                assert!(tx.send(PeerEvent::ChannelMessage(Channel::Chat, i.to_string())).await);
            }
            tx.send(PeerEvent::ChannelClosed(Channel::Chat)).await
        });
        let mut texts = Vec::new();
        while let Some(ev) = rx.recv().await {
            match ev {
                PeerEvent::ChannelMessage(_, text) => texts.push(text),
                PeerEvent::ChannelClosed(_) => break,
                other => panic!("{other:?}"),
            }
        }
        assert!(sender.await.unwrap());
        assert_eq!(texts, (0..3 * CHANNEL_QUEUE).map(|i| i.to_string()).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn the_receiver_ends_when_every_sender_is_gone() {
        let (tx, mut rx) = queues(Arc::default());
        assert!(tx.send(PeerEvent::NegotiationNeeded).await);
        drop(tx);
        assert!(matches!(rx.recv().await, Some(PeerEvent::NegotiationNeeded)));
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn queued_video_is_bounded_in_bytes_too() {
        let (sender, mut events) = queues(Arc::default());
        let big = || PeerEvent::VideoFrame { data: Bytes::from(vec![0u8; 1 << 20]), keyframe: false };
        for _ in 0..100 {
            assert!(sender.send(big()).await);
        }
        let frames = drain(&mut events).await.into_iter().filter(|e| matches!(e, PeerEvent::VideoFrame { .. })).count();
        assert_eq!(frames, VIDEO_QUEUE_BYTES >> 20, "8 MiB of 1 MiB frames");
        // Taking them out frees the room again.
        assert!(sender.send(big()).await);
        assert_eq!(drain(&mut events).await.len(), 1);
    }
}
