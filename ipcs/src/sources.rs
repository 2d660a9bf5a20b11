//! Timers and the application's own fds, served by the service's loop
//! (LibIPC's timer and external-fd events), so that a daemon needs no
//! second loop for its housekeeping.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

use crate::slab::Slab;

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

/// The timers and the application's fds a service's loop serves, each in
/// the loop's epoll set under its token kind.
#[derive(Debug)]
pub(crate) struct Sources {
    timers: Slab<Timer>,
    foreign: Slab<Foreign>,
    /// Source of the serial numbers that keep stale ids from removing a
    /// newer source in a reused slot.
    serial: u64,
    timer_token: u64,
    fd_token: u64,
}

impl Sources {
    /// No sources; their epoll tokens are `timer_token` and `fd_token`
    /// kinds (the slot goes below).
    pub(crate) fn new(timer_token: u64, fd_token: u64) -> Sources {
        Sources {
            timers: Slab::new(),
            foreign: Slab::new(),
            serial: 0,
            timer_token,
            fd_token,
        }
    }

    /// See `Service::add_timer`.
    pub(crate) fn add_timer(
        &mut self,
        epoll: &Epoll,
        period: Duration,
        callback: TimerCallback,
    ) -> io::Result<TimerId> {
        self.serial += 1;
        let timer = Timer::new(self.serial, period, callback)?;
        let slot = self.timers.next_slot();
        let ev = EpollEvent::new(EpollFlags::EPOLLIN, self.timer_token | slot as u64);
        epoll.add(timer.fd.as_fd(), ev)?;
        self.timers.insert(timer);
        Ok(TimerId {
            slot,
            serial: self.serial,
        })
    }

    /// See `Service::remove_timer`.
    pub(crate) fn remove_timer(&mut self, epoll: &Epoll, id: TimerId) -> bool {
        if self
            .timers
            .get(id.slot)
            .is_none_or(|t| t.serial != id.serial)
        {
            return false;
        }
        if let Some(t) = self.timers.remove(id.slot) {
            let _ = epoll.delete(t.fd.as_fd());
        }
        true
    }

    /// See `Service::add_fd`.
    pub(crate) fn add_fd(
        &mut self,
        epoll: &Epoll,
        fd: OwnedFd,
        interest: Interest,
        callback: FdCallback,
    ) -> io::Result<FdId> {
        self.serial += 1;
        let slot = self.foreign.next_slot();
        epoll.add(
            &fd,
            EpollEvent::new(interest.flags(), self.fd_token | slot as u64),
        )?;
        self.foreign.insert(Foreign {
            serial: self.serial,
            fd,
            callback,
            watched: true,
        });
        Ok(FdId {
            slot,
            serial: self.serial,
        })
    }

    /// See `Service::remove_fd`.
    pub(crate) fn remove_fd(&mut self, epoll: &Epoll, id: FdId) -> Option<OwnedFd> {
        if self
            .foreign
            .get(id.slot)
            .is_none_or(|f| f.serial != id.serial)
        {
            return None;
        }
        let f = self.foreign.remove(id.slot)?;
        if f.watched {
            let _ = epoll.delete(&f.fd);
        }
        Some(f.fd)
    }

    /// The timer at `slot` fired.
    pub(crate) fn fire_timer(&mut self, slot: usize) {
        if let Some(t) = self.timers.get_mut(slot) {
            t.fire();
        }
    }

    /// The fd at `slot` is ready; after a hang-up or error it leaves the
    /// epoll set (it would be ready forever) until taken back.
    pub(crate) fn fire_fd(&mut self, slot: usize, flags: EpollFlags, epoll: &Epoll) {
        if let Some(f) = self.foreign.get_mut(slot) {
            if f.watched && f.fire(flags) {
                f.watched = false;
                let _ = epoll.delete(&f.fd);
            }
        }
    }
}
