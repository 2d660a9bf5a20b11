//! The socket transport's reassembly (`SockRx`) fed arbitrary datagrams
//! over a real `SOCK_SEQPACKET` pair: exactly what the reference
//! reassembly of docs/PROTOCOL.md §3 delivers, and the same ending.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringlink_tests::fuzzing::sock_rx_bytes(data);
});
