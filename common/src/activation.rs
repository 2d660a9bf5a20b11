//! Sockets opened by someone else: systemd's socket activation
//! (`LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`, fds from 3 on, as
//! `sd_listen_fds(3)` describes), and the checks that an fd handed to a
//! service is a listening Unix stream socket.
#![allow(unsafe_code)] // Only to take ownership of the fds systemd passed.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::socket::{getsockopt, sockopt, SockType, SockaddrLike, SockaddrStorage};

/// The first fd systemd passes (`SD_LISTEN_FDS_START`).
const FIRST_FD: i32 = 3;

/// Most fds taken from the environment: more is a corrupt environment.
const MAX_FDS: usize = 1024;

/// Set once the fds were taken: they are owned from then on, and a
/// second taker gets none.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// An fd the service manager passed, with its name (`FileDescriptorName=`
/// in the socket unit; systemd's default is the unit's name).
#[derive(Debug)]
pub struct ListenFd {
    /// The fd, close-on-exec from now on.
    pub fd: OwnedFd,
    /// Its name from `LISTEN_FDNAMES`, if given.
    pub name: Option<String>,
}

/// Takes the fds the service manager passed to this process: `None` if
/// it was not socket-activated (`LISTEN_PID` is not this process, or
/// unset), or if they were already taken in this process (each fd has one
/// owner). Like `sd_listen_fds(3)` with `unset_environment` false: the
/// variables stay (changing the environment of a running process is not
/// thread-safe), but are not honoured twice.
///
/// # Errors
///
/// `InvalidData` for a `LISTEN_FDS` that is not a number up to 1,024;
/// what `fcntl` says of an fd that is not open.
pub fn take_listen_fds() -> io::Result<Option<Vec<ListenFd>>> {
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    if !for_us {
        return Ok(None);
    }
    let n = match std::env::var("LISTEN_FDS") {
        Ok(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n <= MAX_FDS)
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, format!("LISTEN_FDS={v:?}"))
            })?,
        Err(_) => return Ok(None),
    };
    if TAKEN.load(Ordering::Acquire) {
        return Ok(None);
    }
    // Checked before anything is owned: an fd that is not open is an
    // error, and leaves the rest for nobody.
    for fd in FIRST_FD..FIRST_FD + n as i32 {
        // SAFETY: F_GETFD on an fd number only reads its flags (or
        // fails with EBADF); nothing is owned or changed.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    if TAKEN.swap(true, Ordering::AcqRel) {
        return Ok(None);
    }
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|v| v.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    let mut out = Vec::with_capacity(n);
    for (i, raw) in (FIRST_FD..FIRST_FD + n as i32).enumerate() {
        // SAFETY: the service manager opened fds 3 to 3 + LISTEN_FDS - 1
        // for this process (LISTEN_PID is ours), each is open (checked
        // above), and TAKEN makes this the only place that takes
        // ownership of them, once per process.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        out.push(ListenFd {
            fd,
            name: names.get(i).filter(|s| !s.is_empty()).cloned(),
        });
    }
    Ok(Some(out))
}

/// `fd` as a listener, if it is one a ringlink service can serve: a
/// Unix stream socket that listens. Made non-blocking and close-on-exec.
///
/// # Errors
///
/// `InvalidInput` naming what it is instead; what the system calls say.
pub fn unix_listener(fd: OwnedFd) -> io::Result<UnixListener> {
    let not = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "fd {} is {what}, not a listening Unix stream socket",
                fd.as_raw_fd()
            ),
        )
    };
    let ty = getsockopt(&fd, sockopt::SockType).map_err(|e| {
        if e == nix::errno::Errno::ENOTSOCK {
            not("not a socket")
        } else {
            e.into()
        }
    })?;
    if ty != SockType::Stream {
        return Err(not("a socket of another type"));
    }
    let family = nix::sys::socket::getsockname::<SockaddrStorage>(fd.as_raw_fd())?.family();
    if family != Some(nix::sys::socket::AddressFamily::Unix) {
        return Err(not("a socket of another family"));
    }
    if !getsockopt(&fd, sockopt::AcceptConn)? {
        return Err(not("a socket that does not listen"));
    }
    fcntl(fd.as_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    let l = UnixListener::from(fd);
    l.set_nonblocking(true)?;
    Ok(l)
}
