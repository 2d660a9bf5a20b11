//! Support for the multi-process integration tests of ringlink.
//!
//! The tests (one binary per area under `tests/`) run a real second
//! process, the `ring_peer` helper binary of this package, and share a
//! ring with it:
//!
//! - [`payload`]: the deterministic record stream, where the length and
//!   every byte of record `seq` follow from `(seed, seq)`, so a reader
//!   detects any lost, duplicated, reordered or torn record;
//! - [`stream`]: producing and checking that stream through the zero-copy
//!   and the copying API, with a watchdog on every wait;
//! - [`peer`]: spawning `ring_peer` with one end of a socketpair, passing
//!   rings to it with `SCM_RIGHTS`, and a guard that always kills and
//!   reaps it;
//! - [`raw`]: a second, independent mapping of a ring's memory through
//!   which a test plays the hostile peer;
//! - [`tmp`]: unique names and self-removing temporary directories.
//!
//! The attack, crash and soak tests (`attack_*`, `crash_*`, `soak`,
//! `fuzz_*`) add:
//!
//! - [`attack`]: a client written from `docs/PROTOCOL.md` alone, which
//!   runs the handshake by hand and holds a connection's rings or
//!   sockets directly, to break the protocol in ways the client crate
//!   cannot;
//! - [`hostile`]: the other direction, a server written from
//!   `docs/PROTOCOL.md` alone that the real client connects to;
//! - [`fuzzing`]: the decoders and the ring reader fed arbitrary input,
//!   shared by the `fuzz/` targets (cargo-fuzz) and the property tests
//!   CI runs;
//! - [`scale`]: how big the soak and crash runs are (CI's size, or the
//!   issue's full figures with `RINGLINK_SOAK_SCALE`).
//!
//! The server and client tests (`ipc_*`) run the real `ringlink-ipcs` and
//! `ringlink-ipcc` in helper processes of their own, `test_server` and
//! `test_client`, spawned the same way:
//!
//! - [`ipc`]: the test protocol those helpers speak (message ids,
//!   parameters, payload contents);
//! - [`procs`]: the helpers as a test drives them (a [`procs::ServerProc`]
//!   reports its statistics on request and is killed on drop), over
//!   [`lines`] of text on the inherited socket;
//! - [`procfs`]: fds, mappings, memory, ids and thread states from
//!   `/proc`, for the leak and "already blocked" checks;
//! - [`deadlines`]: a service's handshake deadlines kept however it is
//!   driven (`run`, `run_until`, the application's own poll loop).
//!
//! # How the helper gets its socket
//!
//! The parent makes a `UnixStream` pair (both ends close-on-exec, as std
//! makes them), and spawns the helper with `pre_exec` clearing
//! close-on-exec on the child's end *in the forked child only*. The fd
//! keeps its number across `exec`, and the helper learns it from the
//! environment variable [`peer::SOCK_ENV`]. No `dup2` to a fixed number
//! is involved, so the fd can collide with nothing std sets up in the
//! child, and no other process (another test's helper spawned at the same
//! moment) inherits it. The parent then closes its copy of the child's
//! end, sends the ring's memory fd and eventfds over its own end with
//! `ringlink_common::fdpass::send_fds`, and the helper rebuilds the ring
//! with `Ring::from_fds`.

pub mod attack;
pub mod cmap;
pub mod deadlines;
pub mod fuzzing;
pub mod hostile;
pub mod ipc;
pub mod lines;
pub mod payload;
pub mod peer;
pub mod procfs;
pub mod procs;
pub mod qbc;
pub mod raw;
pub mod scale;
pub mod stream;
pub mod tmp;
pub mod transport;

/// The README's examples, compiled (and the ring one run) as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

/// `docs/LIBQB.md`'s examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/LIBQB.md")]
struct LibqbDoctests;

/// `ringlink-ringbuf`'s crate page (its README), run as a doc test. The
/// facade's crate page is checked against its crate doc's example by a
/// test of the facade.
#[cfg(doctest)]
#[doc = include_str!("../../ringbuf/README.md")]
struct RingbufReadmeDoctests;
