//! The service's deadlines kept however it is driven (`run`,
//! `run_until`, the application's own poll loop): a client that sends
//! nothing is closed at its handshake deadline, and one waiting for a
//! slot (`queue_when_full`) is refused there, while nothing else happens
//! in the service.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use ringlink_common::wire::Status;
use ringlink_common::{Error, ServiceAddr};
use ringlink_ipcc::Client;

use crate::procs::{client_options, connect};

/// The handshake deadline the tests give the service.
pub const HANDSHAKE: Duration = Duration::from_millis(200);

/// How late past it a deadline may be kept on a loaded machine.
pub const LATE: Duration = Duration::from_secs(2);

/// How long a test waits for what the deadline should bring (a service
/// that keeps no deadline while idle brings nothing).
pub const LONG_ENOUGH: Duration = Duration::from_secs(5);

/// Connects to `addr` and sends nothing: how long until the server
/// closed the connection (`None`: still open after [`LONG_ENOUGH`]).
///
/// # Panics
///
/// If the server sends anything, or the socket fails.
pub fn silent_connection_lifetime(addr: &ServiceAddr) -> Option<Duration> {
    let start = Instant::now();
    let sock = crate::attack::dial(addr);
    sock.set_read_timeout(Some(LONG_ENOUGH))
        .expect("read timeout");
    let mut buf = [0u8; 64];
    match (&sock).read(&mut buf) {
        Ok(0) => Some(start.elapsed()),
        Ok(n) => panic!("the server sent {n} bytes to a client that said nothing"),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Some(start.elapsed()),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => panic!("read: {e}"),
    }
}

/// With the service's one slot (`max_clients` 1, `queue_when_full`)
/// taken by a client of its own, how long a second client waits before
/// its connect fails, and how (it gives up by itself after
/// [`LONG_ENOUGH`]).
///
/// # Panics
///
/// If the first client cannot connect.
pub fn queued_client_outcome(addr: &ServiceAddr) -> (Duration, Result<u64, Error>) {
    let first = connect(addr, 0);
    let mut opts = client_options(0);
    opts.timeout = LONG_ENOUGH;
    opts.server_wait = LONG_ENOUGH;
    let start = Instant::now();
    let second = Client::connect(addr, &opts).map(|c| c.id());
    let took = start.elapsed();
    drop(first);
    (took, second)
}

/// Asserts that a silent connection is closed at its deadline, twice
/// (the second after the service went idle again).
///
/// # Panics
///
/// If it is not.
pub fn assert_silent_connections_closed(addr: &ServiceAddr) {
    for round in 0..2 {
        let took = silent_connection_lifetime(addr);
        assert_kept(&format!("silent connection {round}"), took);
    }
}

/// Asserts that a client waiting for a slot is refused by the server
/// (`TooManyClients`) at its deadline, rather than timing out itself.
///
/// # Panics
///
/// If it is not.
pub fn assert_queued_client_refused(addr: &ServiceAddr) {
    let (took, second) = queued_client_outcome(addr);
    match second {
        Err(Error::Rejected(Status::TooManyClients)) => {}
        other => panic!("expected TooManyClients, got {other:?} after {took:?}"),
    }
    assert_kept("queued client", Some(took));
}

/// Asserts that a deadline was kept: not before it (less a little, for
/// the clocks' rounding), at most [`LATE`] after it.
///
/// # Panics
///
/// If it was not.
pub fn assert_kept(what: &str, took: Option<Duration>) {
    let took = took.unwrap_or_else(|| panic!("{what}: deadline not kept within {LONG_ENOUGH:?}"));
    assert!(
        took >= HANDSHAKE * 9 / 10,
        "{what}: after {took:?}, before the deadline"
    );
    assert!(took < HANDSHAKE + LATE, "{what}: after {took:?}");
    eprintln!("{what}: deadline {HANDSHAKE:?}, kept after {took:?}");
}
