//! The monotonic microsecond clock that stamps captured frames.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A monotonic clock in microseconds, shared (by copy) between sources and sinks.
///
/// Every frame's `timestamp_us` is a reading of a `MediaClock`: the capture time for frames from sources,
/// whatever the caller passes for decoded frames. Copies of one clock read the same timeline.
///
/// Two flavours:
/// - [`MediaClock::new`] starts at 0 when created: for measurements inside one process.
/// - [`MediaClock::unix_aligned`] reads microseconds since the Unix epoch at creation, then advances with the
///   monotonic clock. It never jumps within a process, and two processes on the same host (or on hosts with
///   synchronised clocks) agree to within the wall clock's precision at their creation, which is what the
///   glass-to-glass latency measurement between two `duet` processes needs.
#[derive(Debug, Clone, Copy)]
pub struct MediaClock {
    origin: Instant,
    origin_us: u64,
}

impl MediaClock {
    /// A clock that reads 0 now.
    #[must_use]
    pub fn new() -> Self {
        Self { origin: Instant::now(), origin_us: 0 }
    }

    /// A clock that reads microseconds since the Unix epoch now, and advances monotonically from there.
    #[must_use]
    pub fn unix_aligned() -> Self {
        let origin = Instant::now();
        let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        Self { origin, origin_us: duration_us(since_epoch) }
    }

    /// The current reading in microseconds.
    #[must_use]
    pub fn now_us(&self) -> u64 {
        self.origin_us.saturating_add(duration_us(self.origin.elapsed()))
    }
}

impl Default for MediaClock {
    fn default() -> Self {
        Self::new()
    }
}

/// A duration in whole microseconds, saturating at `u64::MAX` (585 000 years).
pub(crate) fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_monotonic_and_starts_near_zero() {
        let clock = MediaClock::new();
        let a = clock.now_us();
        std::thread::sleep(Duration::from_millis(2));
        let b = clock.now_us();
        assert!(a < 1_000_000, "fresh clock reads {a}");
        assert!(b >= a + 2_000);
    }

    #[test]
    fn copies_share_the_timeline_and_unix_clock_is_near_wall_time() {
        let clock = MediaClock::unix_aligned();
        let copy = clock;
        let wall = duration_us(SystemTime::now().duration_since(UNIX_EPOCH).unwrap());
        assert!(clock.now_us().abs_diff(wall) < 1_000_000);
        assert!(copy.now_us() >= clock.now_us() - 1_000);
    }
}
