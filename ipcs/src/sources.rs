//! Timers and the application's own fds, served by the service's loop
//! (LibIPC's timer and external-fd events), so that a daemon needs no
//! second loop for its housekeeping.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::sys::epoll::EpollFlags;
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

/// Identifies a timer added with [`Service::add_timer`](crate::Service::add_timer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId {
    pub(crate) slot: usize,
    pub(crate) serial: u64,
}

/// Identifies an fd added with [`Service::add_fd`](crate::Service::add_fd).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FdId {
    pub(crate) slot: usize,
    pub(crate) serial: u64,
}

/// What an added fd is watched for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Interest {
    /// Readable (or hung up).
    Readable,
    /// Writable.
    Writable,
    /// Either.
    Both,
}

impl Interest {
    pub(crate) fn flags(self) -> EpollFlags {
        match self {
            Interest::Readable => EpollFlags::EPOLLIN,
            Interest::Writable => EpollFlags::EPOLLOUT,
            Interest::Both => EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT,
        }
    }
}

/// What an added fd turned out to be ready for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Readiness {
    /// Data to read (or end of stream).
    pub readable: bool,
    /// Room to write.
    pub writable: bool,
    /// Hang-up or error.
    pub hangup: bool,
}

impl Readiness {
    pub(crate) fn from_flags(f: EpollFlags) -> Readiness {
        Readiness {
            readable: f.contains(EpollFlags::EPOLLIN),
            writable: f.contains(EpollFlags::EPOLLOUT),
            hangup: f
                .intersects(EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR | EpollFlags::EPOLLRDHUP),
        }
    }
}

pub(crate) type TimerCallback = Box<dyn FnMut() + Send>;
pub(crate) type FdCallback = Box<dyn FnMut(BorrowedFd<'_>, Readiness) + Send>;

/// A periodic timer: a timerfd in the loop's epoll set.
pub(crate) struct Timer {
    pub(crate) serial: u64,
    pub(crate) fd: TimerFd,
    pub(crate) callback: TimerCallback,
}

impl Timer {
    pub(crate) fn new(
        serial: u64,
        period: Duration,
        callback: TimerCallback,
    ) -> nix::Result<Timer> {
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        // A zero period would disarm the timer; the shortest is 1 ns.
        let period = TimeSpec::from_duration(period.max(Duration::from_nanos(1)));
        fd.set(Expiration::Interval(period), TimerSetTimeFlags::empty())?;
        Ok(Timer {
            serial,
            fd,
            callback,
        })
    }

    /// Consumes the expirations (so the level-triggered fd goes quiet)
    /// and runs the callback once, however many periods passed.
    pub(crate) fn fire(&mut self) {
        if self.fd.wait().is_ok() {
            (self.callback)();
        }
    }
}

/// One of the application's fds.
pub(crate) struct Foreign {
    pub(crate) serial: u64,
    pub(crate) fd: OwnedFd,
    pub(crate) callback: FdCallback,
    /// Still in the epoll set (it leaves after a hang-up or error).
    pub(crate) watched: bool,
}

impl Foreign {
    /// Runs the callback; returns whether the fd hung up or failed, after
    /// which it must leave the loop (it would be reported ready forever).
    pub(crate) fn fire(&mut self, flags: EpollFlags) -> bool {
        (self.callback)(self.fd.as_fd(), Readiness::from_flags(flags));
        flags.intersects(EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR)
    }
}

impl fmt::Debug for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timer")
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Foreign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Foreign")
            .field("serial", &self.serial)
            .field("fd", &self.fd)
            .finish_non_exhaustive()
    }
}
