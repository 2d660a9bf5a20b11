//! Which transport the integration tests run over.
//!
//! Every test of the server and client runs twice, once per transport,
//! from one body: [`transport_test!`](crate::transport_test) turns
//! `fn name() { .. }` into a module `name` with the tests `shm` and
//! `socket`. Each instantiation selects its transport for its own thread
//! with [`enter`]: the test's own clients and services read it
//! ([`current`], through `procs::client_options` and
//! [`service_options`]), and every helper process the test spawns
//! inherits it in [`ENV`].
//!
//! The choice belongs to the test's thread, not the process: under
//! `cargo test` the tests of a binary run side by side in threads of one
//! process, and a test that runs over one transport never sees another
//! test's choice (tests outside `transport_test!` see shared memory). A
//! thread a test spawns does not inherit it: make the options (or the
//! client) in the test's thread and move them in.

use std::cell::Cell;

use ringlink_common::Transport;
use ringlink_ipcs::ServiceOptions;

/// Environment variable a helper process reads its transport from
/// (`shm` or `socket`).
pub const ENV: &str = "RINGLINK_TEST_TRANSPORT";

thread_local! {
    static CURRENT: Cell<Transport> = const { Cell::new(Transport::Shm) };
}

/// The transport this thread's test runs over (shared memory unless
/// [`enter`] said otherwise).
pub fn current() -> Transport {
    CURRENT.with(Cell::get)
}

/// Its name, as in [`ENV`].
pub fn name(t: Transport) -> &'static str {
    match t {
        Transport::Socket => "socket",
        _ => "shm",
    }
}

/// The transport a helper process was started with ([`ENV`]; default
/// shared memory).
///
/// # Panics
///
/// If the variable holds anything else than `shm` or `socket`.
pub fn from_env() -> Transport {
    match std::env::var(ENV).as_deref() {
        Ok("socket") => Transport::Socket,
        Ok("shm") | Err(_) => Transport::Shm,
        Ok(other) => panic!("{ENV}={other}: expected shm or socket"),
    }
}

/// Runs the rest of this thread's test over `t`, until the guard is
/// dropped (then the previous choice is back).
pub fn enter(t: Transport) -> Entered {
    Entered {
        previous: CURRENT.with(|c| c.replace(t)),
    }
}

/// What [`enter`] returns: the previous transport, restored on drop.
#[derive(Debug)]
#[must_use = "the transport is chosen for as long as this lives"]
pub struct Entered {
    previous: Transport,
}

impl Drop for Entered {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.previous));
    }
}

/// Default service options over the current transport.
pub fn service_options() -> ServiceOptions {
    let mut o = ServiceOptions::default();
    o.transport = current();
    o
}

/// Declares a test that runs over both transports: a module named after
/// the test, holding the tests `shm` and `socket`, which run the same
/// body.
///
/// ```ignore
/// ringlink_tests::transport_test! {
///     fn echo_works() {
///         // ... uses procs::connect, ServerProc::spawn, service_options() ...
///     }
/// }
/// ```
#[macro_export]
macro_rules! transport_test {
    ($(#[$meta:meta])* fn $name:ident() $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $(#[$meta])*
            fn body() $body

            #[test]
            fn shm() {
                let _one = $crate::transport::enter(::ringlink_common::Transport::Shm);
                body()
            }

            #[test]
            fn socket() {
                let _one = $crate::transport::enter(::ringlink_common::Transport::Socket);
                body()
            }
        }
    };
}
