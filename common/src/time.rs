//! Timeouts as the kernel's waits take them.

use std::time::Duration;

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
}
