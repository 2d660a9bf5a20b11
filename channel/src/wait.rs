//! Waiting on fds with a deadline, for either transport (the rings'
//! wake-ups arrive on the connection's socket, the socket transport's
//! messages on its sockets).

use std::io;
use std::time::Instant;

pub use ringlink_common::time::millis_ceil;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};

/// Poll flags for readability (hang-up and errors are always reported).
pub const READABLE: PollFlags = PollFlags::POLLIN;
/// Poll flags for writability.
pub const WRITABLE: PollFlags = PollFlags::POLLOUT;

/// Polls `fds` until one is ready or `deadline` passes (`None`: no
/// deadline). An interrupted poll returns early, as a spurious wake-up:
/// callers re-check what they wait for anyway.
///
/// # Errors
///
/// The `poll` failure.
pub fn poll_until(fds: &mut [PollFd<'_>], deadline: Option<Instant>) -> io::Result<()> {
    match nix::poll::poll(fds, timeout_until(deadline)) {
        Ok(_) | Err(Errno::EINTR) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The poll timeout that ends at `deadline`, rounded up to whole
/// milliseconds (rounding down would wake early and spin until the
/// deadline), `NONE` for no deadline.
pub fn timeout_until(deadline: Option<Instant>) -> PollTimeout {
    match deadline {
        None => PollTimeout::NONE,
        Some(d) => PollTimeout::try_from(millis_ceil(d.saturating_duration_since(Instant::now())))
            .unwrap_or(PollTimeout::MAX),
    }
}
