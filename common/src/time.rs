//! Timeouts as the kernel's waits take them.

use std::time::{Duration, Instant};

/// A deadline `d` from now, for any `d`: one too far for the clock
/// (`Duration::MAX`, "forever") is a century away, which no wait
/// reaches, instead of `Instant + Duration` panicking.
pub fn deadline_in(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(FOREVER))
        .unwrap_or(now)
}

/// What "forever" becomes: a hundred years.
pub const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `d` in whole milliseconds, rounded up (rounding down would wake early
/// and spin until a deadline), at most `i32::MAX`: what `poll(2)` and
/// `epoll_wait(2)` take.
pub fn millis_ceil(d: Duration) -> i32 {
    d.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_up_and_saturates() {
        assert_eq!(millis_ceil(Duration::ZERO), 0);
        assert_eq!(millis_ceil(Duration::from_nanos(1)), 1);
        assert_eq!(millis_ceil(Duration::from_millis(5)), 5);
        assert_eq!(millis_ceil(Duration::from_micros(5001)), 6);
        assert_eq!(millis_ceil(Duration::MAX), i32::MAX);
    }

    #[test]
    fn forever_is_a_century_away_not_a_panic() {
        let far = deadline_in(Duration::MAX);
        assert!(far > Instant::now() + FOREVER - Duration::from_secs(60));
        let near = deadline_in(Duration::from_secs(1));
        assert!(near <= Instant::now() + Duration::from_secs(1));
        assert!(far.saturating_duration_since(Instant::now()) > Duration::from_secs(1 << 31));
    }
}
