//! A ring `Consumer` over a memfd whose header and data region a hostile
//! producer writes anything into, before and between reads: every read
//! gives what the reference reader of docs/RING.md gives (a record with
//! the bytes at its place, or the same typed error); no panic, no hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlink_tests::fuzzing::{ring_consumer, RingCase};

fuzz_target!(|data: &[u8]| {
    ring_consumer(&RingCase::from_bytes(data));
});
