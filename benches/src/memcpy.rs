//! The single-core memcpy rate: what one core copies per second between
//! two buffers of a message's size, both in its cache. The ceiling for a
//! transport that copies the payload once.

use std::hint::black_box;
use std::time::{Duration, Instant};

/// Copies `src` into `dst` `times` times, opaque to the optimiser.
#[inline]
pub fn copy_n(dst: &mut [u8], src: &[u8], times: u64) {
    for _ in 0..times {
        black_box(&mut *dst).copy_from_slice(black_box(src));
    }
}

/// Bytes per second copied between two `size`-byte buffers, measured for
/// about `time` after a warm-up of a fifth of it.
pub fn rate(size: usize, time: Duration) -> f64 {
    let src = crate::payload::pattern(size.max(1));
    let mut dst = vec![0u8; size.max(1)];
    let batch = (1 << 20) / size.max(1) as u64 + 1;
    let run = |dst: &mut [u8], time: Duration| {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < time {
            copy_n(dst, &src, batch);
            n += batch;
        }
        (n, start.elapsed())
    };
    run(&mut dst, time / 5);
    let (n, took) = run(&mut dst, time);
    (n as f64 * size as f64) / took.as_secs_f64()
}
