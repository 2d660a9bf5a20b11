//! The kernel objects a ring's sides sleep on (eventfds, futexes, a
//! socket), and the two directions a wake-up goes. The handshake that
//! decides when to sleep and when to signal is in `wake`.

use std::os::fd::AsFd;
use std::time::Duration;

use crate::sync::{AtomicU32, Ordering};

/// The kernel objects a ring's sides sleep on, one per direction.
#[derive(Debug)]
pub(crate) enum Signals {
    /// Two eventfds: pollable, handed to the peer over `SCM_RIGHTS`.
    EventFd {
        /// Written by the producer when the consumer waits for data.
        data_ready: std::os::fd::OwnedFd,
        /// Written by the consumer when the producer waits for space.
        space_ready: std::os::fd::OwnedFd,
    },
    /// Futexes on the waiting flags themselves: nothing to pass, so rings
    /// opened by path use these.
    #[cfg_attr(loom, allow(dead_code))]
    Futex,
    /// One byte on this process's end of a connected Unix socket whose
    /// other end the peer holds (see [`crate::Wake::Socket`]).
    #[cfg_attr(loom, allow(dead_code))]
    Socket(std::sync::Arc<std::os::unix::net::UnixStream>),
    /// A loom-visible model of an eventfd (a counter under a mutex).
    #[cfg(loom)]
    Loom(std::sync::Arc<[LoomEvent; 2]>),
}

/// Which way a wake-up goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Producer wakes a consumer waiting for data.
    Data,
    /// Consumer wakes a producer waiting for space.
    Space,
}

impl Signals {
    /// Forgets wake-ups that arrived before now (called before the waiting
    /// flag is raised, so a later signal is never lost). Returns `false`
    /// if the peer can no longer wake us (its end of the wake-up socket
    /// is closed): the caller treats the ring as closed.
    pub(crate) fn reset(&self, dir: Direction) -> bool {
        match self {
            Signals::EventFd { .. } => {
                crate::sys::eventfd_drain(self.fd(dir));
                true
            }
            Signals::Futex => true,
            #[cfg(not(loom))]
            Signals::Socket(sock) => crate::sys::socket_drain(sock.as_fd()),
            #[cfg(loom)]
            Signals::Socket(_) => unreachable!("socket rings are not built under loom"),
            #[cfg(loom)]
            Signals::Loom(ev) => {
                ev[dir as usize].reset();
                true
            }
        }
    }

    /// Sleeps until signalled, `timeout` passes, or (futex) `flag` is no
    /// longer set. May return spuriously.
    pub(crate) fn wait(&self, dir: Direction, flag: &AtomicU32, timeout: Option<Duration>) {
        let _ = flag;
        match self {
            Signals::EventFd { .. } | Signals::Socket(_) => {
                // An error here (ENOMEM) is treated as a spurious wake-up:
                // the caller re-checks and waits again.
                let _ = crate::sys::poll_readable(self.fd(dir), timeout);
            }
            #[cfg(not(loom))]
            Signals::Futex => crate::sys::futex_wait(flag, 1, timeout),
            #[cfg(loom)]
            Signals::Futex => unreachable!("futex rings are not built under loom"),
            #[cfg(loom)]
            Signals::Loom(ev) => ev[dir as usize].wait(),
        }
    }

    /// Wakes the side waiting in direction `dir`. The caller has already
    /// cleared `flag`.
    pub(crate) fn wake(&self, dir: Direction, flag: &AtomicU32) {
        let _ = flag;
        match self {
            Signals::EventFd { .. } => crate::sys::eventfd_signal(self.fd(dir)),
            #[cfg(not(loom))]
            Signals::Socket(sock) => {
                if !crate::sys::socket_signal(sock.as_fd()) {
                    // Not sent (no memory for it): the flag stays up, so
                    // that the next publication signals again.
                    flag.store(1, Ordering::Relaxed);
                }
            }
            #[cfg(loom)]
            Signals::Socket(_) => unreachable!("socket rings are not built under loom"),
            #[cfg(not(loom))]
            Signals::Futex => crate::sys::futex_wake(flag),
            #[cfg(loom)]
            Signals::Futex => unreachable!("futex rings are not built under loom"),
            #[cfg(loom)]
            Signals::Loom(ev) => ev[dir as usize].signal(),
        }
    }

    /// The fd a direction sleeps on: its eventfd, or the wake-up socket
    /// (both directions). Only called on `EventFd` and `Socket`.
    pub(crate) fn fd(&self, dir: Direction) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Signals::EventFd {
                data_ready,
                space_ready,
            } => match dir {
                Direction::Data => data_ready.as_fd(),
                Direction::Space => space_ready.as_fd(),
            },
            Signals::Socket(sock) => sock.as_fd(),
            _ => unreachable!("fd() is only called on eventfd and socket rings"),
        }
    }
}

/// An eventfd modelled for loom: a counter, a mutex and a condvar.
#[cfg(loom)]
#[derive(Debug, Default)]
pub(crate) struct LoomEvent {
    count: loom::sync::Mutex<u64>,
    cv: loom::sync::Condvar,
}

#[cfg(loom)]
impl LoomEvent {
    fn reset(&self) {
        *self.count.lock().unwrap() = 0;
    }
    fn wait(&self) {
        let mut c = self.count.lock().unwrap();
        while *c == 0 {
            c = self.cv.wait(c).unwrap();
        }
    }
    fn signal(&self) {
        *self.count.lock().unwrap() += 1;
        self.cv.notify_all();
    }
}
