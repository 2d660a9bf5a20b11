//! The sleep/wake floor: a bare eventfd ping-pong between two processes,
//! with no spinning and nothing of the ring in it.
//!
//! Two eventfds, `ping` (driver → peer) and `pong` (peer → driver). The
//! driver writes `ping`, then waits for `pong` the way a ring's sleeping
//! side waits for its wake-up (`poll` on the eventfd, then `read` to reset
//! it); the peer does the mirror image. Every hop is one cross-core
//! wake-up through the kernel: the least a round trip costs when neither
//! side spins (a ring or a socket with a zero spin budget).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::STALL;

/// The two eventfds.
#[derive(Debug)]
pub struct WakeFloor {
    ping: File,
    pong: File,
}

impl WakeFloor {
    /// Makes two fresh eventfds (close-on-exec, blocking).
    ///
    /// # Errors
    ///
    /// If the kernel refuses an eventfd.
    pub fn create() -> io::Result<WakeFloor> {
        let make = || -> io::Result<File> {
            let efd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC)?;
            Ok(File::from(OwnedFd::from(efd)))
        };
        Ok(WakeFloor {
            ping: make()?,
            pong: make()?,
        })
    }

    /// Wraps the two eventfds received from the driver (`ping`, then
    /// `pong`, as [`fds`](Self::fds) lists them).
    pub fn from_fds(ping: OwnedFd, pong: OwnedFd) -> WakeFloor {
        WakeFloor {
            ping: File::from(ping),
            pong: File::from(pong),
        }
    }

    /// The eventfds to pass to the peer: `ping`, then `pong`.
    pub fn fds(&self) -> [BorrowedFd<'_>; 2] {
        [self.ping.as_fd(), self.pong.as_fd()]
    }

    /// Driver side: `count` round trips. Returns the total time; with
    /// `samples`, also appends each round trip's nanoseconds.
    ///
    /// # Errors
    ///
    /// `TimedOut` if the peer does not answer within [`STALL`]; any
    /// eventfd error.
    pub fn drive(&self, count: u64, mut samples: Option<&mut Vec<u64>>) -> io::Result<Duration> {
        let start = Instant::now();
        let mut last = start;
        for _ in 0..count {
            signal(&self.ping)?;
            wait(&self.pong)?;
            if let Some(s) = samples.as_deref_mut() {
                let now = Instant::now();
                s.push(now.duration_since(last).as_nanos() as u64);
                last = now;
            }
        }
        Ok(start.elapsed())
    }

    /// Peer side: answers `count` round trips.
    ///
    /// # Errors
    ///
    /// As [`drive`](Self::drive).
    pub fn answer(&self, count: u64) -> io::Result<()> {
        for _ in 0..count {
            wait(&self.ping)?;
            signal(&self.pong)?;
        }
        Ok(())
    }
}

/// Adds one to an eventfd's counter, waking a process that waits on it.
#[inline]
fn signal(mut efd: &File) -> io::Result<()> {
    efd.write_all(&1u64.to_ne_bytes())
}

/// Waits (in `poll`, as a ring's sleeping side does) until the eventfd's
/// counter is non-zero, then reads it back to zero.
#[inline]
fn wait(mut efd: &File) -> io::Result<()> {
    let timeout = PollTimeout::try_from(STALL).map_err(|_| io::ErrorKind::InvalidInput)?;
    loop {
        let mut fds = [PollFd::new(efd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) => return Err(io::ErrorKind::TimedOut.into()),
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let mut word = [0u8; 8];
    efd.read_exact(&mut word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_pong_between_threads() {
        let floor = WakeFloor::create().unwrap();
        let mut samples = Vec::new();
        std::thread::scope(|s| {
            s.spawn(|| floor.answer(100).unwrap());
            floor.drive(100, Some(&mut samples)).unwrap();
        });
        assert_eq!(samples.len(), 100);
    }
}
