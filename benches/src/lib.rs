//! Benchmarks of ringlink against Unix sockets.
//!
//! Four front ends share this library:
//!
//! - the `ring-bench` command (`src/bin/ring-bench.rs`), which runs a
//!   fixed suite between two processes and prints one table (one-way
//!   throughput, round-trip latency, memcpy rate) with the ratios that
//!   matter;
//! - the criterion bench `benches/ring.rs`, the same measurements (and
//!   their two-thread variants) under criterion's statistics;
//! - the `ipc-bench` command (`src/bin/ipc-bench.rs`, the [`ipc`]
//!   module), the whole library rather than the ring: ringlink's server
//!   and client over shared memory and over its socket transport, against
//!   a bare Unix-socket server, with one server process and one or many
//!   client processes;
//! - the criterion bench `benches/ipc.rs`, round trips and one-way runs
//!   through `ipcs`/`ipcc` under criterion's statistics.
//!
//! The ring benches (and `ipc-bench`, for its floors) drive a second
//! process, the *peer*: `ring-bench --peer` (or `ipc-bench --peer`),
//! spawned by [`driver::Peer::spawn`] with a Unix stream socket as its
//! standard input. Over that socket the driver passes the fds of two rings (a
//! request ring driver → peer and a response ring peer → driver), of a
//! `SOCK_SEQPACKET` socket pair end, of a small shared mapping for the
//! bare spin ping-pong ([`floor`], the latency floor), of the bare
//! shared-memory streams ([`bare`], the least a ring can be: two that
//! publish counters, two that publish slot headers) and of the
//! two eventfds of a bare sleep/wake ping-pong ([`wake`]); afterwards
//! it carries only commands ([`wire`]) and their replies, never benchmark
//! data.
//!
//! Every message's payload is written by its sender (stamped with a
//! sequence number at both ends, [`payload::stamp`]) and read by its
//! receiver (stamp checked, one word of every cache line read,
//! [`payload::check`]), so that no transport gets credit for bytes nobody
//! touched.

pub mod bare;
pub mod cpu;
pub mod driver;
pub mod floor;
pub mod hist;
pub mod ipc;
pub mod memcpy;
pub mod ops;
pub mod payload;
pub mod peer;
pub mod seqpacket;
pub mod stats;
pub mod wake;
pub mod wire;

use std::time::Duration;

/// Longest any single wait may take before a benchmark gives up with an
/// error (a stuck or dead peer), instead of hanging.
pub const STALL: Duration = Duration::from_secs(10);

/// Default ring capacity of the benchmarks: large enough for several
/// 64 KiB records in flight, comparable to a Unix socket's default send
/// buffer (about 208 KiB) plus the receiver's queue.
pub const DEFAULT_CAPACITY: usize = 1 << 20;

/// The smallest valid ring capacity that carries records of `size` bytes
/// (a record may take at most half the ring), at least `preferred`.
pub fn capacity_for(size: usize, preferred: usize) -> usize {
    let need = 2 * (size + 2 * 8);
    need.max(preferred)
        .max(ringlink_ringbuf::MIN_CAPACITY)
        .next_power_of_two()
}

/// Turns any error into an `io::Error` (the benches report, they do not
/// recover).
pub fn other<E: std::error::Error + Send + Sync + 'static>(e: E) -> std::io::Error {
    std::io::Error::other(e)
}
