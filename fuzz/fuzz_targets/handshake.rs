//! The handshake decoders of both directions (`ConnectRequest` as the
//! server reads it, `ConnectResponse` as the client reads it, `Confirm`)
//! on arbitrary bytes: a typed error, or a value that re-encodes to them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringlink_tests::fuzzing::handshake(data);
});
