//! Keyframe requests, throttled both ways as libwebrtc does.
//!
//! - The partner's requests (PLI/FIR) for our keyframes: one is honoured, then the others are
//!   ignored for [`KEYFRAME_MIN_INTERVAL`] (libwebrtc's `EncoderRtcpFeedback` does the same
//!   with 300 ms), so a request storm cannot turn our encoder into a keyframe source.
//! - Our requests for the partner's keyframes ([`KeyframeNeed`]): once our decoder needs a
//!   keyframe, the need lasts until one arrives, and a request goes out at most every
//!   [`KEYFRAME_REQUEST_INTERVAL`] with the partner's frames (libwebrtc's receive stream
//!   re-requests every 200 ms), so a request the partner ignored is repeated, never lost.

use std::time::{Duration, Instant};

/// Keyframes made on request come at most this often.
pub const KEYFRAME_MIN_INTERVAL: Duration = Duration::from_millis(500);
/// Our keyframe requests to the partner go out at most this often.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(300);

/// Serves a request only if none was served in the last `min_interval`.
#[derive(Debug, Clone)]
pub struct KeyframeThrottle {
    min_interval: Duration,
    last_served: Option<Instant>,
}

impl KeyframeThrottle {
    /// A throttle serving one request per `min_interval` at most.
    pub fn new(min_interval: Duration) -> Self {
        Self { min_interval, last_served: None }
    }

    /// A request at `now`: true if it is served (the first one, or the first `min_interval`
    /// after the last served one), false if it is to be ignored.
    pub fn allow(&mut self, now: Instant) -> bool {
        let due = self.last_served.is_none_or(|t| now.saturating_duration_since(t) >= self.min_interval);
        if due {
            self.last_served = Some(now);
        }
        due
    }
}

/// Whether we still need a keyframe from the partner, and when to ask for it again.
#[derive(Debug, Clone)]
pub struct KeyframeNeed {
    throttle: KeyframeThrottle,
    needed: bool,
}

impl Default for KeyframeNeed {
    fn default() -> Self {
        Self { throttle: KeyframeThrottle::new(KEYFRAME_REQUEST_INTERVAL), needed: false }
    }
}

impl KeyframeNeed {
    /// Our decoder needs a keyframe (loss, a dropped frame, a decode error): true if a request
    /// is to be sent now.
    pub fn needed(&mut self, now: Instant) -> bool {
        self.needed = true;
        self.throttle.allow(now)
    }

    /// A partner frame arrived at `now`: a keyframe ends the need; while it lasts, true if the
    /// request is to be repeated now.
    pub fn frame(&mut self, now: Instant, keyframe: bool) -> bool {
        if keyframe {
            self.needed = false;
        }
        self.needed && self.throttle.allow(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storm_of_1000_requests_in_a_second_is_served_at_most_twice() {
        let mut throttle = KeyframeThrottle::new(KEYFRAME_MIN_INTERVAL);
        let t0 = Instant::now();
        let served = (0..1000u64).filter(|i| throttle.allow(t0 + Duration::from_millis(*i))).count();
        assert_eq!(served, 2, "at 0 and 500 ms");
        // The next second is the same.
        let served = (1000..2000u64).filter(|i| throttle.allow(t0 + Duration::from_millis(*i))).count();
        assert_eq!(served, 2);
    }

    #[test]
    fn the_first_request_and_one_after_a_quiet_interval_are_served_at_once() {
        let mut throttle = KeyframeThrottle::new(KEYFRAME_MIN_INTERVAL);
        let t0 = Instant::now();
        assert!(throttle.allow(t0));
        assert!(!throttle.allow(t0 + KEYFRAME_MIN_INTERVAL - Duration::from_millis(1)));
        // Ignored requests do not push the next one back.
        assert!(throttle.allow(t0 + KEYFRAME_MIN_INTERVAL));
        assert!(throttle.allow(t0 + KEYFRAME_MIN_INTERVAL * 5));
        // A clock read out of order is not a panic.
        assert!(!throttle.allow(t0));
    }

    #[test]
    fn a_need_is_asked_for_again_with_later_frames_until_a_keyframe_arrives() {
        let mut need = KeyframeNeed::default();
        let t0 = Instant::now();
        let frame = Duration::from_millis(33);
        assert!(!need.frame(t0, false), "nothing needed yet");
        assert!(need.needed(t0));
        // Decode errors on every frame: one request per interval.
        let asked = (1..=30u32).filter(|&i| need.needed(t0 + frame * i) | need.frame(t0 + frame * i, false)).count();
        assert_eq!(asked, 3, "at 330, 660 and 990 ms");
        // Frames alone repeat the request (a gap does not repeat by itself).
        let mut need = KeyframeNeed::default();
        assert!(need.needed(t0));
        assert!(!need.frame(t0 + frame, false));
        assert!(need.frame(t0 + KEYFRAME_REQUEST_INTERVAL, false));
        // A keyframe ends it.
        assert!(!need.frame(t0 + KEYFRAME_REQUEST_INTERVAL * 2, true));
        assert!(!need.frame(t0 + KEYFRAME_REQUEST_INTERVAL * 4, false));
        assert!(need.needed(t0 + KEYFRAME_REQUEST_INTERVAL * 5), "a new need is asked for at once");
    }
}
