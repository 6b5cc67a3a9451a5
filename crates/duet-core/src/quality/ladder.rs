//! The video ladder: which resolution, frame rate and bitrate range to send for a given budget,
//! with hysteresis and minimum dwell times so the choice never oscillates.
//!
//! A rung is entered going up only when the budget exceeds its floor by a margin and has done so
//! for a while; it is left going down as soon as the budget has been under its floor for a short
//! while (at once when far under). Down-switches may skip rungs; so may up-switches (fast start
//! goes from the first estimate straight to the rung that fits).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

/// One step of the ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rung {
    /// Short name, e.g. `360p30` (the `rung` field of `duet call --json` events).
    pub name: &'static str,
    /// Frame width.
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// The video bitrate this rung needs at least, kbit/s.
    pub min_kbps: u32,
    /// The most this rung uses, kbit/s (the encoder target is capped here).
    pub max_kbps: u32,
}

/// The ladder, best first (the receiver's display size, the source and the user's choice cap it).
pub const LADDER: [Rung; 6] = [
    Rung { name: "720p30", width: 1280, height: 720, fps: 30, min_kbps: 1100, max_kbps: 2500 },
    Rung { name: "540p30", width: 960, height: 540, fps: 30, min_kbps: 650, max_kbps: 1400 },
    Rung { name: "360p30", width: 640, height: 360, fps: 30, min_kbps: 330, max_kbps: 800 },
    Rung { name: "360p15", width: 640, height: 360, fps: 15, min_kbps: 180, max_kbps: 450 },
    Rung { name: "180p30", width: 320, height: 180, fps: 30, min_kbps: 120, max_kbps: 350 },
    Rung { name: "180p15", width: 320, height: 180, fps: 15, min_kbps: 70, max_kbps: 250 },
];

/// Going up needs the budget this much above the higher rung's floor ...
pub const UP_MARGIN: f64 = 1.15;
/// ... for the whole of this window (an estimator's sawtooth peaks do not count).
pub const UP_WINDOW: Duration = Duration::from_millis(1500);
/// Going down: the budget's mean over this window is under the current rung's floor ...
pub const DOWN_WINDOW: Duration = Duration::from_millis(1000);
/// ... or the budget is under this fraction of the floor (switch at once).
pub const DOWN_AT_ONCE: f64 = 0.6;
/// After a down-switch, no up-switch for this long; doubled when an up-switch is followed by a
/// down-switch within [`UP_FAILED_WITHIN`], up to [`MAX_UP_WAIT`].
pub const UP_AFTER_DOWN: Duration = Duration::from_secs(3);
/// An up-switch followed by a down-switch this soon failed.
pub const UP_FAILED_WITHIN: Duration = Duration::from_secs(10);
/// The longest wait before trying a higher rung again.
pub const MAX_UP_WAIT: Duration = Duration::from_secs(24);
/// A budget this many times the floor of the rung that last failed clears the backoff.
pub const LINK_CHANGED: f64 = 2.0;

/// Why the rung changed (the `reason` of `duet call --json` `rung` events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RungReason {
    /// The first rung of the call.
    Start,
    /// The bandwidth estimate allows more.
    Bandwidth,
    /// The bandwidth estimate (or loss) calls for less.
    Congestion,
    /// The user's quality choice, the receiver's display size or the source caps it.
    Cap,
}

/// Chooses the rung from the video budget over time.
#[derive(Debug, Clone)]
pub struct Ladder {
    current: usize,
    /// The best rung allowed by caps (index into [`LADDER`]).
    cap: usize,
    started: bool,
    /// Recent (up, down) budgets, oldest first, covering the longer of the two windows.
    history: VecDeque<(Instant, f64, f64)>,
    /// When the rung last changed for bandwidth (the windows only count samples since).
    changed_at: Option<Instant>,
    last_up: Option<Instant>,
    last_down: Option<Instant>,
    up_wait: Duration,
    /// The floor of the rung whose up-switch last failed.
    failed_floor: Option<f64>,
}

impl Default for Ladder {
    fn default() -> Self {
        Self::new()
    }
}

impl Ladder {
    /// A ladder at the lowest rung, capped at the top.
    pub fn new() -> Self {
        Self {
            current: LADDER.len() - 1,
            cap: 0,
            started: false,
            history: VecDeque::new(),
            changed_at: None,
            last_up: None,
            last_down: None,
            up_wait: UP_AFTER_DOWN,
            failed_floor: None,
        }
    }

    /// The current rung.
    pub fn rung(&self) -> Rung {
        LADDER[self.current]
    }

    /// The lowest rung's floor: below this budget no video fits.
    pub fn floor_kbps() -> u32 {
        LADDER[LADDER.len() - 1].min_kbps
    }

    /// Caps the ladder at the best rung no larger than `width` x `height` at `fps` (at least
    /// the lowest rung). Returns the new rung if the cap forced a switch down.
    pub fn set_cap(&mut self, width: u32, height: u32, fps: u32) -> Option<Rung> {
        self.cap = LADDER
            .iter()
            .position(|r| r.width <= width && r.height <= height && r.fps <= fps)
            .unwrap_or(LADDER.len() - 1);
        if self.current < self.cap {
            self.current = self.cap;
            return Some(self.rung());
        }
        None
    }

    /// Takes the video budget (kbit/s) at `now`, and the stable budget going up is judged on
    /// (the same, or a more conservative one); returns the new rung and why, if it changed.
    pub fn update(&mut self, now: Instant, budget_kbps: f64, up_budget_kbps: f64) -> Option<(Rung, RungReason)> {
        self.history.push_back((now, budget_kbps.min(up_budget_kbps), budget_kbps));
        while self.history.front().is_some_and(|(t, ..)| now.duration_since(*t) > UP_WINDOW.max(DOWN_WINDOW)) {
            self.history.pop_front();
        }
        if !self.started {
            self.started = true;
            self.current = self.best_fit(budget_kbps, 1.0);
            self.changed_at = Some(now);
            return Some((self.rung(), RungReason::Start));
        }
        let floor = f64::from(self.rung().min_kbps);
        let deep = budget_kbps < floor * DOWN_AT_ONCE;
        let mean = self.window(now, DOWN_WINDOW, |h| h.2).map(|w| w.iter().sum::<f64>() / w.len() as f64);
        if self.current < LADDER.len() - 1 && (deep || mean.is_some_and(|m| m < floor)) {
            let basis = if deep { budget_kbps } else { mean.unwrap_or(budget_kbps) };
            self.current = self.best_fit(basis, 1.0).max(self.current + 1);
            if self.last_up.is_some_and(|t| now.duration_since(t) < UP_FAILED_WITHIN) {
                self.up_wait = (self.up_wait * 2).min(MAX_UP_WAIT);
                self.failed_floor = Some(floor);
            } else {
                self.up_wait = UP_AFTER_DOWN;
            }
            self.last_down = Some(now);
            self.changed_at = Some(now);
            return Some((self.rung(), RungReason::Congestion));
        }
        let lowest = self.window(now, UP_WINDOW, |h| h.1).map(|w| w.iter().copied().fold(f64::INFINITY, f64::min));
        // Twice what the failed rung needed, held for a whole window: the link changed, the
        // backoff no longer applies.
        if let (Some(failed), Some(lowest)) = (self.failed_floor, lowest)
            && lowest >= failed * LINK_CHANGED
        {
            self.failed_floor = None;
            self.up_wait = UP_AFTER_DOWN;
        }
        let settled = self.last_down.is_none_or(|t| now.duration_since(t) >= self.up_wait);
        if let (true, Some(lowest)) = (settled, lowest) {
            let up = self.best_fit(lowest, UP_MARGIN);
            if up < self.current {
                self.current = up;
                self.last_up = Some(now);
                self.changed_at = Some(now);
                return Some((self.rung(), RungReason::Bandwidth));
            }
        }
        None
    }

    /// The budgets (`pick`: up or down) of the last `window` if the history since the last
    /// change covers it.
    fn window(&self, now: Instant, window: Duration, pick: fn(&(Instant, f64, f64)) -> f64) -> Option<Vec<f64>> {
        let since = self.changed_at.unwrap_or(now);
        if now.duration_since(since) < window {
            return None;
        }
        Some(self.history.iter().filter(|h| now.duration_since(h.0) <= window).map(pick).collect())
    }

    /// The best rung within the cap whose floor times `margin` fits the budget (at worst the
    /// lowest).
    fn best_fit(&self, budget_kbps: f64, margin: f64) -> usize {
        (self.cap..LADDER.len())
            .find(|&i| f64::from(LADDER[i].min_kbps) * margin <= budget_kbps)
            .unwrap_or(LADDER.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn names(changes: &[(Rung, RungReason)]) -> Vec<&'static str> {
        changes.iter().map(|c| c.0.name).collect()
    }

    /// Feeds `budget(t)` every 100 ms for `secs` and returns the changes.
    fn run(
        ladder: &mut Ladder,
        t0: Instant,
        from_ms: u64,
        secs: u64,
        budget: impl Fn(u64) -> f64,
    ) -> Vec<(Rung, RungReason)> {
        (0..secs * 10)
            .filter_map(|i| {
                let b = budget(from_ms + i * 100);
                ladder.update(ms(t0, from_ms + i * 100), b, b)
            })
            .collect()
    }

    #[test]
    fn the_first_estimate_picks_the_rung_that_fits_at_once() {
        let mut l = Ladder::new();
        let t0 = Instant::now();
        assert_eq!(l.update(t0, 2000.0, 2000.0), Some((LADDER[0], RungReason::Start)));
        let mut l = Ladder::new();
        assert_eq!(l.update(t0, 400.0, 400.0).map(|c| c.0.name), Some("360p30"));
    }

    #[test]
    fn a_budget_that_drops_switches_down_within_a_second_and_at_once_when_deep() {
        let mut l = Ladder::new();
        let t0 = Instant::now();
        l.update(t0, 2000.0, 2000.0);
        let changes = run(&mut l, t0, 100, 3, |_| 900.0);
        assert_eq!(names(&changes), ["540p30"]);
        // A deep drop switches down at once and may skip rungs.
        let changes = run(&mut l, t0, 3100, 1, |_| 100.0);
        assert_eq!(names(&changes), ["180p15"]);
        assert_eq!(changes[0].1, RungReason::Congestion);
    }

    #[test]
    fn a_budget_that_hovers_at_a_floor_never_oscillates() {
        let mut l = Ladder::new();
        let t0 = Instant::now();
        l.update(t0, 700.0, 700.0);
        assert_eq!(l.rung().name, "540p30");
        // The budget wobbles ±10 % around 690, dipping under the 540p floor every other 300 ms,
        // for a minute (an estimator's sawtooth).
        let changes = run(&mut l, t0, 100, 60, |t| if (t / 300) % 2 == 0 { 620.0 } else { 760.0 });
        assert!(changes.len() <= 1, "rung flapped: {:?}", names(&changes));
    }

    #[test]
    fn going_up_waits_for_the_window_and_the_settling_time_after_a_drop() {
        let mut l = Ladder::new();
        let t0 = Instant::now();
        l.update(t0, 2000.0, 2000.0);
        run(&mut l, t0, 100, 1, |_| 200.0);
        assert_eq!(l.rung().name, "360p15");
        // The cap is lifted at 1.1 s: nothing before 3 s after the drop, then straight to the top.
        let changes = run(&mut l, t0, 1100, 5, |_| 3000.0);
        assert_eq!(names(&changes), ["720p30"]);
        assert_eq!(changes[0].1, RungReason::Bandwidth);
    }

    #[test]
    fn an_up_switch_that_fails_doubles_the_wait_before_the_next_one() {
        let mut l = Ladder::new();
        let t0 = Instant::now();
        l.update(t0, 250.0, 250.0);
        assert_eq!(l.rung().name, "360p15");
        // The link gives 400 for a while, then cannot hold 360p30: every up-switch fails.
        let budget = |t: u64| if (t / 1000) % 6 < 4 { 420.0 } else { 250.0 };
        let changes = run(&mut l, t0, 100, 60, budget);
        let ups = changes.iter().filter(|c| c.1 == RungReason::Bandwidth).count();
        // Without the backoff it would try every 6 s: 10 times.
        assert!((1..=4).contains(&ups), "tried {ups} times in a minute: {:?}", names(&changes));
        // Then the link really gets better: the backoff does not hold the call down.
        let changes = run(&mut l, t0, 61_000, 6, |_| 3000.0);
        assert_eq!(names(&changes).last(), Some(&"720p30"), "{:?}", names(&changes));
    }

    #[test]
    fn caps_limit_the_rung_and_force_a_switch_down() {
        let mut l = Ladder::new();
        let t0 = Instant::now();
        l.update(t0, 3000.0, 3000.0);
        assert_eq!(l.set_cap(640, 360, 30).map(|r| r.name), Some("360p30"));
        assert!(run(&mut l, t0, 100, 5, |_| 3000.0).is_empty());
        // A display smaller than every rung still gets the lowest one.
        assert_eq!(l.set_cap(100, 100, 30).map(|r| r.name), Some("180p15"));
        assert_eq!(l.set_cap(1920, 1080, 30), None);
        assert_eq!(names(&run(&mut l, t0, 600, 2, |_| 3000.0)), ["720p30"]);
    }

    #[test]
    fn the_ladder_is_ordered_and_its_ranges_overlap() {
        for pair in LADDER.windows(2) {
            assert!(pair[0].min_kbps > pair[1].min_kbps);
            assert!(pair[1].max_kbps > pair[0].min_kbps, "{} and {} leave a gap", pair[0].name, pair[1].name);
        }
    }
}
