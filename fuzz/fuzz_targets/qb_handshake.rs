//! libqb's handshake decoders (the request and response headers, the
//! connection request a ringlink server reads from a libqb client, the
//! connection response a ringlink client reads from a libqb server) on
//! arbitrary bytes, the response also with the bytes laid over an honest
//! one: a typed error, or a value that keeps the decoders' promises.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringlink_tests::fuzzing::qb_handshake(data);
});
