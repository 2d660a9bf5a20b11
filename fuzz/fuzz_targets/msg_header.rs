//! The message header at the start of every record, on arbitrary
//! records: a typed error, or a header that re-encodes to the record's
//! first bytes and agrees with its length.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ringlink_tests::fuzzing::msg_header(data);
});
