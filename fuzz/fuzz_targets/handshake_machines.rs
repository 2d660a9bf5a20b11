//! The handshake's state machines, server and client, fed arbitrary
//! bytes in arbitrary pieces: each takes exactly the message it awaits
//! and decides as the decoders do.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringlink_tests::fuzzing::handshake_machines(data);
});
