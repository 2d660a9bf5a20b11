//! Passing file descriptors between processes over a Unix socket
//! (`SCM_RIGHTS`), with the bytes that accompany them; and keeping a
//! peer from passing us fds we did not ask for.
//!
//! # Fds a peer attaches where none are expected
//!
//! Any byte on a Unix socket may carry fds. A read that takes the byte
//! without room for them makes the kernel close them, in the reading
//! thread; and the last close of some files waits: a TCP socket with
//! `SO_LINGER` set and unsent data waits for the whole linger time, a
//! file on a FUSE mount the peer runs waits for its daemon. So a peer
//! that attached such an fd to a wake-up byte would stop the thread
//! that drains it, whatever `MSG_DONTWAIT` says. Two defences:
//!
//! - [`refuse_fds`] turns `SO_PASSRIGHTS` off on a socket (Linux 6.16
//!   and later): the peer's `sendmsg` with fds then fails, and none ever
//!   arrive.
//! - [`recv_nowait`] reads with room for every fd one message can carry
//!   (`SCM_MAX_FD`, 253); any that came are [`reap`]ed: a socket among
//!   them gets an abortive close (`SO_LINGER` of zero), and all are closed
//!   on a thread of their own, so no close can hold the reader.
#![allow(unsafe_code)] // Only to take ownership of fds the kernel handed us.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use crate::violation::FdKind;

/// Most fds one handshake message may carry.
pub const MAX_FDS: usize = 16;

/// Sends `data` with `fds` attached, in one `sendmsg` that never waits
/// (`MSG_DONTWAIT`: a full socket is `WouldBlock`). Returns the bytes
/// sent (the fds go with the first byte).
///
/// # Errors
///
/// `InvalidInput` if `data` is empty or more than [`MAX_FDS`] fds are
/// given; any error of `sendmsg`.
pub fn send_fds(sock: &UnixStream, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    if data.is_empty() || fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "send_fds needs at least one byte and at most MAX_FDS fds",
        ));
    }
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let iov = [IoSlice::new(data)];
    let cmsgs = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsgs };
    loop {
        let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
        match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, flags, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => return r.map_err(io::Error::from),
        }
    }
}

/// Receives into `buf` with any attached fds (close-on-exec). Returns the
/// bytes read (0 at end of stream) and the fds, owned.
///
/// # Errors
///
/// `InvalidData` if the peer attached more fds than [`MAX_FDS`] (the
/// kernel truncated them; those that did arrive are closed); any error of
/// `recvmsg`.
pub fn recv_fds(sock: &UnixStream, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let msg = loop {
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => break r.map_err(io::Error::from)?,
        }
    };
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            for fd in raw {
                // SAFETY: the kernel installed this fd in our table for
                // this message; nothing else owns it.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "peer sent more fds than allowed",
        ));
    }
    Ok((msg.bytes, fds))
}

/// Fds a peer sent, until they are checked and taken: whatever is still
/// here when this is dropped is [`reap`]ed (a peer's fd may be one whose
/// closing waits, passed where a memfd or a socket was expected).
#[derive(Debug, Default)]
pub struct PeerFds(Vec<OwnedFd>);

impl PeerFds {
    /// Holds `fds`.
    pub fn new(fds: Vec<OwnedFd>) -> PeerFds {
        PeerFds(fds)
    }

    /// Adds more.
    pub fn extend(&mut self, fds: impl IntoIterator<Item = OwnedFd>) {
        self.0.extend(fds);
    }

    /// How many.
    #[inline]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Views of them, to check before taking them.
    pub fn iter(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.0.iter().map(AsFd::as_fd)
    }

    /// Takes them all (once checked).
    #[inline]
    pub fn take(mut self) -> Vec<OwnedFd> {
        std::mem::take(&mut self.0)
    }
}

impl Drop for PeerFds {
    #[inline]
    fn drop(&mut self) {
        // Most messages carry none: no reaper for them (it is started on
        // its first fd), and no call (this runs for every message).
        if !self.0.is_empty() {
            self.reap_all();
        }
    }
}

impl PeerFds {
    #[cold]
    fn reap_all(&mut self) {
        reap(self.0.drain(..));
    }
}

/// Reads exactly `buf.len()` bytes from the socket `fd`, waiting at most
/// until `deadline` in all (a peer trickling bytes cannot stretch it), and
/// reaping any fds attached ([`recv_nowait`]).
///
/// # Errors
///
/// `TimedOut` once the deadline passes; `UnexpectedEof` if the peer
/// closes first; the `poll` or `recvmsg` error.
pub fn recv_exact(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    deadline: std::time::Instant,
) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        match recv_nowait(fd, &mut buf[got..], MsgFlags::empty()) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                let ms = crate::time::millis_ceil(left);
                let mut p = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
                match nix::poll::poll(
                    &mut p,
                    nix::poll::PollTimeout::try_from(ms).unwrap_or(nix::poll::PollTimeout::MAX),
                ) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Most fds one message can carry (`SCM_MAX_FD` in the kernel).
pub const SCM_MAX_FD: usize = 253;

/// `SO_PASSRIGHTS` (Linux 6.16): whether a socket accepts `SCM_RIGHTS`.
/// Not in the `libc` crate yet.
const SO_PASSRIGHTS: libc::c_int = 83;

/// Makes `sock` refuse fds from its peer (`SO_PASSRIGHTS` off): a peer's
/// `sendmsg` with `SCM_RIGHTS` on the other end then fails with `EPERM`.
/// Returns whether the kernel supports it (Linux 6.16 and later); where
/// it does not, read with [`recv_nowait`] so that attached fds are
/// reaped. The option belongs to the socket, not the fd: a peer that
/// kept a copy of this end could turn it on again.
pub fn refuse_fds(sock: BorrowedFd<'_>) -> bool {
    let off: libc::c_int = 0;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live
    // local int; the fd is open.
    let refused = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PASSRIGHTS,
            (&off as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    };
    if refused {
        REFUSING.store(true, Ordering::Relaxed);
    }
    refused
}

/// Makes `sock` accept fds from its peer again (`SO_PASSRIGHTS` on, the
/// kernel's default), where this side takes fds in messages. Best
/// effort: a kernel without the option accepts them anyway.
pub fn accept_fds(sock: BorrowedFd<'_>) {
    let on: libc::c_int = 1;
    // SAFETY: as in `refuse_fds`.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PASSRIGHTS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// Set once [`refuse_fds`] worked: the kernel refuses fds for us.
static REFUSING: AtomicBool = AtomicBool::new(false);

/// Closes a socket the peer could write to, on which [`refuse_fds`] was
/// called: what the peer queued and we never read goes with its closing,
/// fds included, and the last close of some of them waits. Where the
/// kernel refuses fds, only those queued before [`refuse_fds`] can be
/// there (a client writes before the server accepts it): the queue is
/// read out here (its fds reaped) and the socket closed at once, so that
/// the fd count is back when this returns. Where it does not, the socket
/// is [`reap`]ed.
pub fn close_refusing(sock: OwnedFd) {
    if REFUSING.load(Ordering::Relaxed) {
        // Shut down first: nothing more can arrive, and the reads below
        // end at the end of what is queued.
        let _ = nix::sys::socket::shutdown(sock.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        let mut buf = [0u8; 4096];
        loop {
            match recv_nowait(sock.as_fd(), &mut buf, MsgFlags::empty()) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        drop(sock);
    } else {
        reap([sock]);
    }
}

/// Receives into `buf` from the socket `fd` without waiting
/// (`MSG_DONTWAIT`, plus `flags`, e.g. `MSG_TRUNC`), with room for every
/// fd the peer may have attached; those are [`reap`]ed, never closed in
/// this thread. Returns what `recv(2)` would (0 at end of stream; with
/// `MSG_TRUNC`, a datagram's real length).
///
/// # Errors
///
/// The `recvmsg` error (`WouldBlock` when nothing waits).
pub fn recv_nowait(fd: BorrowedFd<'_>, buf: &mut [u8], flags: MsgFlags) -> io::Result<usize> {
    recv_keeping(fd, buf, flags).map(|(n, _fds)| n)
}

/// As [`recv_nowait`], keeping the fds that came (close-on-exec, in
/// their order), held so that those dropped unused are still reaped.
/// A read that returns fds ended with the byte they were attached to
/// (the kernel stops a stream read after the first message with fds).
///
/// # Errors
///
/// The `recvmsg` error (`WouldBlock` when nothing waits).
pub fn recv_keeping(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    flags: MsgFlags,
) -> io::Result<(usize, PeerFds)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; SCM_MAX_FD]);
    let flags = flags | MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
    loop {
        match recvmsg::<()>(fd.as_raw_fd(), &mut iov, Some(&mut space), flags) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(msg) => {
                let mut fds = PeerFds::default();
                if let Ok(cmsgs) = msg.cmsgs() {
                    for cmsg in cmsgs {
                        if let ControlMessageOwned::ScmRights(raw) = cmsg {
                            // SAFETY: the kernel installed these fds in
                            // our table for this message; nothing else
                            // owns them.
                            fds.extend(raw.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
                        }
                    }
                }
                if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
                    // Some fds were not installed (our fd table is full:
                    // there is room for every fd a message can carry):
                    // the message cannot be taken whole. Those that came
                    // are reaped with `fds`.
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "fds lost on arrival (MSG_CTRUNC): out of file descriptors",
                    ));
                }
                return Ok((msg.bytes, fds));
            }
        }
    }
}

/// Whether `fd` is of a kind a receiver may refuse ([`FdKind`]): an
/// `O_PATH` fd (`F_GETFL`), or a directory (`statx` asking only for the
/// type, with `AT_STATX_DONT_SYNC`, so that a file on a network or FUSE
/// file system answers from what the kernel holds, never waiting for its
/// server, which may be the peer). Neither call can be made to wait.
///
/// # Errors
///
/// What `fcntl` or `statx` said (a closed fd: `EBADF`).
pub fn refusable_kind(fd: BorrowedFd<'_>) -> io::Result<Option<FdKind>> {
    // SAFETY: F_GETFL takes no argument; the fd is borrowed, so open.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::O_PATH != 0 {
        return Ok(Some(FdKind::Path));
    }
    // SAFETY: an all-zero statx is a valid value of this plain C struct.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the path is a NUL-terminated empty string (AT_EMPTY_PATH:
    // the fd itself), and `st` is a live local the kernel writes.
    let r = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_STATX_DONT_SYNC,
            libc::STATX_TYPE,
            &mut st,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((u32::from(st.stx_mode) & libc::S_IFMT == libc::S_IFDIR).then_some(FdKind::Directory))
}

/// Disposes of fds a peer sent that will not be used, without letting
/// their closing hold this thread: a socket among them gets an abortive
/// close (`SO_LINGER` on, zero seconds), and all are closed on a reaper
/// thread of their own (started on first use; if it cannot be, they are
/// closed here).
pub fn reap(fds: impl IntoIterator<Item = OwnedFd>) {
    static REAPER: OnceLock<Option<Mutex<mpsc::Sender<OwnedFd>>>> = OnceLock::new();
    let reaper = REAPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<OwnedFd>();
        std::thread::Builder::new()
            .name("ringlink-reaper".into())
            .spawn(move || {
                for fd in rx {
                    drop(fd);
                }
            })
            .ok()
            .map(|_| Mutex::new(tx))
    });
    for fd in fds {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt reads a live local `linger`; on an fd that
        // is not a socket it fails with ENOTSOCK and does nothing.
        unsafe {
            libc::setsockopt(
                fd.as_fd().as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        match reaper {
            Some(tx) => {
                let sent = tx.lock().unwrap_or_else(|e| e.into_inner()).send(fd);
                drop(sent); // a dead reaper hands the fd back: closed here
            }
            None => drop(fd),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsFd;

    #[test]
    fn fds_and_bytes_arrive_together() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut file = tempfile_in_memory();
        file.write_all(b"shared").unwrap();
        send_fds(&a, b"hi", &[file.as_fd()]).unwrap();
        let mut buf = [0u8; 8];
        let (n, fds) = recv_fds(&b, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hi");
        assert_eq!(fds.len(), 1);
        let mut got = std::fs::File::from(fds.into_iter().next().unwrap());
        got.rewind().unwrap();
        let mut s = String::new();
        got.read_to_string(&mut s).unwrap();
        assert_eq!(s, "shared");
    }

    #[test]
    fn too_many_fds_refused_before_sending() {
        let (a, _b) = UnixStream::pair().unwrap();
        let f = tempfile_in_memory();
        let fds: Vec<_> = (0..MAX_FDS + 1).map(|_| f.as_fd()).collect();
        let e = send_fds(&a, b"x", &fds).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn end_of_stream_is_zero_bytes() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(a);
        let mut buf = [0u8; 4];
        let (n, fds) = recv_fds(&b, &mut buf).unwrap();
        assert_eq!((n, fds.len()), (0, 0));
    }

    /// A loopback TCP socket whose last close would wait `secs` (full
    /// buffers, a listener that never accepts, `SO_LINGER` set), and
    /// that listener (whose closing would reset it).
    fn lingering(secs: i32) -> (std::net::TcpListener, OwnedFd) {
        use std::io::Write;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut s = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        s.set_nonblocking(true).unwrap();
        while s.write(&[0u8; 65536]).is_ok() {}
        let lg = libc::linger {
            l_onoff: 1,
            l_linger: secs,
        };
        // SAFETY: setsockopt reads a live local `linger`.
        let r = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&lg as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0);
        (l, s.into())
    }

    #[test]
    fn fds_attached_where_none_are_expected_are_reaped_not_closed_by_the_reader() {
        let (a, b) = UnixStream::pair().unwrap();
        let (listener, tcp) = lingering(60);
        // A peer attaches it and closes its own copy: ours is the last.
        send_fds(&a, b"x", &[tcp.as_fd()]).unwrap();
        drop(tcp);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4];
            let r = recv_nowait(b.as_fd(), &mut buf, MsgFlags::empty());
            let _ = tx.send(r.map(|n| buf[..n].to_vec()));
        });
        // A plain recv would have closed it in the reading thread, which
        // would then wait out the 60 s linger.
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the read waited for the attached socket's close");
        assert_eq!(got.unwrap(), b"x");
        drop(listener);
    }

    #[test]
    fn a_socket_that_refuses_fds_makes_the_sender_fail() {
        let (a, b) = UnixStream::pair().unwrap();
        if !refuse_fds(b.as_fd()) {
            eprintln!("skipped: SO_PASSRIGHTS needs Linux 6.16");
            return;
        }
        let f = tempfile_in_memory();
        let e = send_fds(&a, b"x", &[f.as_fd()]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        // Bytes alone still go.
        send_fds(&a, b"y", &[]).unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(
            recv_nowait(b.as_fd(), &mut buf, MsgFlags::empty()).unwrap(),
            1
        );
    }

    fn tempfile_in_memory() -> std::fs::File {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("ringlink-fdpass-{}-{n}", std::process::id());
        let path = std::env::temp_dir().join(name);
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }
}
