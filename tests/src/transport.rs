//! Which transport the integration tests run over.
//!
//! Every test of the server and client runs twice, once per transport,
//! from one body: [`transport_test!`](crate::transport_test) turns
//! `fn name() { .. }` into a module `name` with the tests `shm` and
//! `socket`. Each instantiation selects its transport for the whole
//! process with [`enter`]: the test's own clients and services read it
//! ([`current`], through `procs::client_options` and
//! [`service_options`]), and every helper process the test spawns
//! inherits it in [`ENV`].
//!
//! The choice is process-wide because helpers are processes. nextest
//! runs each test in a process of its own; under `cargo test`, [`enter`]
//! holds a lock for the test's duration, so tests of one binary run one
//! at a time instead of mixing transports.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Mutex, MutexGuard};

use ringlink_common::Transport;
use ringlink_ipcs::ServiceOptions;

/// Environment variable a helper process reads its transport from
/// (`shm` or `socket`).
pub const ENV: &str = "RINGLINK_TEST_TRANSPORT";

static CURRENT: AtomicU16 = AtomicU16::new(Transport::Shm as u16);
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The transport this process's test runs over.
pub fn current() -> Transport {
    match CURRENT.load(Ordering::Relaxed) {
        2 => Transport::Socket,
        _ => Transport::Shm,
    }
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

/// Runs the rest of this test over `t` (see the module docs); the guard
/// keeps other tests of this process out until it is dropped.
pub fn enter(t: Transport) -> MutexGuard<'static, ()> {
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    CURRENT.store(t as u16, Ordering::Relaxed);
    guard
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
