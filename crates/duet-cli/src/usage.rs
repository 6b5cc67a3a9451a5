//! This process's CPU time (user + system), for the summary's CPU-per-call-second figure.

use std::time::Instant;

/// User + system CPU seconds used by this process so far (Linux; `None` elsewhere).
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name: state is 0, utime 11, stime 12.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    // USER_HZ is 100 on every Linux configuration Duet supports.
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

/// CPU seconds and wall seconds since `start` (taken when the call connected).
pub fn since(start: Option<(Instant, Option<f64>)>) -> Option<(f64, f64)> {
    let (at, cpu0) = start?;
    Some((cpu_seconds()? - cpu0?, at.elapsed().as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_with_work() {
        let before = cpu_seconds().unwrap();
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed().as_millis() < 300 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        assert!(x != 1);
        assert!(cpu_seconds().unwrap() - before >= 0.1);
    }
}
