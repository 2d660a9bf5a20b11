//! The few system calls the ring needs, wrapped so that the rest of the
//! crate stays free of `unsafe` and of raw fds.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING)`.
pub(crate) fn memfd_create(name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a valid NUL-terminated string for the call's
    // duration; the flags are valid.
    let fd = cvt(unsafe {
        libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
    })?;
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `posix_fallocate(fd, 0, len)`: the file grown to at least `len`
/// bytes with every block allocated now. A sparse file's page gets its
/// memory at its first touch, and in a full tmpfs that touch raises
/// `SIGBUS`; an allocated one never does.
pub(crate) fn allocate(fd: BorrowedFd<'_>, len: u64) -> io::Result<()> {
    let len =
        libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // tmpfs gives up on a pending signal (EINTR, undoing what it
    // allocated, whatever SA_RESTART says): a few more tries, as libqb's
    // own `qb_sys_mmap_file_open` makes.
    let mut tries = 0;
    loop {
        // SAFETY: plain call on a live fd; no memory is passed. It returns
        // the error number itself rather than setting errno.
        match unsafe { libc::posix_fallocate(fd.as_raw_fd(), 0, len) } {
            0 => return Ok(()),
            libc::EINTR if tries < 8 => tries += 1,
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

/// Seals that keep a memfd's size fixed for its whole life.
pub(crate) const RING_SEALS: libc::c_int =
    libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

/// `fcntl(F_ADD_SEALS)`.
pub(crate) fn add_seals(fd: BorrowedFd<'_>, seals: libc::c_int) -> io::Result<()> {
    // SAFETY: plain fcntl on a live fd; no memory is passed.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) }).map(drop)
}

/// `fcntl(F_GET_SEALS)`: `Ok(None)` for files that do not support seals.
pub(crate) fn get_seals(fd: BorrowedFd<'_>) -> io::Result<Option<libc::c_int>> {
    // SAFETY: plain fcntl on a live fd; no memory is passed.
    match cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) }) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A non-blocking, close-on-exec eventfd with a zero counter.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: valid flags; no memory is passed.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd's counter. A full counter (`EAGAIN`) already
/// means "readable", so it is not an error.
pub(crate) fn eventfd_signal(fd: BorrowedFd<'_>) {
    let one: u64 = 1;
    loop {
        // SAFETY: writes 8 bytes from a live local `u64`.
        let r = unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        if r >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            // Any failure other than EINTR (EAGAIN: counter saturated, so
            // the waiter will wake anyway; EBADF cannot happen on an
            // OwnedFd) leaves nothing to do.
            return;
        }
    }
}

/// Sends one wake-up byte on a Unix socket to the peer, never waiting:
/// `MSG_DONTWAIT` makes this one call non-blocking whatever the open
/// file description's flags, and `MSG_NOSIGNAL` keeps a peer that has
/// gone from raising `SIGPIPE`. A full socket (`EAGAIN`) means bytes the
/// peer has not read are waiting, so it will wake anyway; a peer that
/// has gone (`EPIPE`, `ECONNRESET`) has no one to wake. Either way
/// nothing is left to do.
///
/// Returns `false` only when the kernel had no memory for the byte
/// (`ENOBUFS`, `ENOMEM`): then nothing is queued, and the caller keeps the
/// peer's waiting flag raised so that the next signal tries again.
pub(crate) fn socket_signal(fd: BorrowedFd<'_>) -> bool {
    let byte = [WAKE_BYTE];
    loop {
        // SAFETY: sends 1 byte from a live local array on an open fd.
        let r = unsafe {
            libc::send(
                fd.as_raw_fd(),
                byte.as_ptr().cast(),
                1,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if r >= 0 {
            return true;
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::ENOBUFS) | Some(libc::ENOMEM) => return false,
            _ => return true,
        }
    }
}

/// The byte [`socket_signal`] sends. Receivers treat any byte as a
/// wake-up.
pub(crate) const WAKE_BYTE: u8 = 1;

/// Most bytes one [`socket_drain`] reads: a peer that floods the socket
/// costs a bounded amount of work per drain (the rest keeps the socket
/// readable, a spurious wake-up for the next wait).
const DRAIN_LIMIT: usize = 64 << 10;

/// Reads and discards the wake-up bytes waiting on a Unix socket, never
/// waiting (`MSG_DONTWAIT`), at most [`DRAIN_LIMIT`] of them. Returns
/// `false` if the peer has closed its end or reset the connection (end
/// of stream): nothing will ever wake us through it again.
pub(crate) fn socket_drain(fd: BorrowedFd<'_>) -> bool {
    let mut buf = [0u8; 4096];
    let mut total = 0;
    while total < DRAIN_LIMIT {
        // SAFETY: receives at most `buf.len()` bytes into a live local
        // array on an open fd.
        let r = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        match r {
            0 => return false,
            n if n > 0 => {
                total += n as usize;
                if (n as usize) < buf.len() {
                    return true; // a stream socket: that was all of it
                }
            }
            _ => match io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::ECONNRESET) | Some(libc::ENOTCONN) => return false,
                // EAGAIN: drained. Anything else (EBADF cannot happen on
                // an fd we own) leaves the next wait to find out.
                _ => return true,
            },
        }
    }
    true
}

/// Resets an eventfd's counter to zero (non-blocking).
pub(crate) fn eventfd_drain(fd: BorrowedFd<'_>) {
    let mut buf: u64 = 0;
    // SAFETY: reads at most 8 bytes into a live local `u64`. The result
    // does not matter: EAGAIN means the counter was already zero.
    unsafe { libc::read(fd.as_raw_fd(), (&mut buf as *mut u64).cast(), 8) };
}

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

/// Waits until `fd` is readable or `timeout` passes (`None`: no limit).
/// Returns early on a signal; callers re-check their condition anyway.
pub(crate) fn poll_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = timeout.map(timespec);
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `pfd` and `ts` live across the call; one fd is passed; a
    // null timeout means "no limit" and a null sigmask means "unchanged".
    let r = unsafe { libc::ppoll(&mut pfd, 1, ts_ptr, std::ptr::null()) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::EINTR) {
            Ok(false)
        } else {
            Err(e)
        };
    }
    Ok(r > 0)
}

/// `FUTEX_WAIT` (shared, not `PRIVATE`: the word lives in a mapping other
/// processes share) while `*word == expected`, for at most `timeout`.
#[cfg(not(loom))]
pub(crate) fn futex_wait(
    word: &std::sync::atomic::AtomicU32,
    expected: u32,
    timeout: Option<Duration>,
) {
    let ts = timeout.map(timespec);
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a live, aligned 32-bit atomic; `ts` outlives the
    // call. Every outcome (woken, EAGAIN because the value changed,
    // ETIMEDOUT, EINTR) sends the caller back to re-check its condition.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
}

/// `FUTEX_WAKE` of every waiter on `word` (shared futex).
#[cfg(not(loom))]
pub(crate) fn futex_wake(word: &std::sync::atomic::AtomicU32) {
    // SAFETY: `word` is a live, aligned 32-bit atomic; FUTEX_WAKE only
    // uses its address as a key.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
}

/// Sets `O_NONBLOCK` on `fd` (a wake fd received from a peer, which may
/// have made it blocking).
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain fcntl calls on a live fd; no memory is passed.
    let flags = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) }).map(drop)
}

/// Whether `fd` is an eventfd, from its `/proc/self/fd` link; `None` if
/// that cannot be read (no `/proc`).
pub(crate) fn is_eventfd(fd: BorrowedFd<'_>) -> Option<bool> {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    Some(link.as_os_str() == "anon_inode:[eventfd]")
}

const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

/// One `membarrier(cmd, 0, 0)`.
fn membarrier(cmd: libc::c_int) -> std::io::Result<()> {
    // SAFETY: the membarrier syscall takes no pointers.
    if unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0, 0) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Registers this process for private expedited membarriers.
pub(crate) fn membarrier_register_private() -> bool {
    membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED).is_ok()
}

/// Runs a full memory barrier on every running thread of this process.
pub(crate) fn membarrier_private() -> std::io::Result<()> {
    membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)
}
