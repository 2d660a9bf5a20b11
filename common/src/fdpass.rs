//! Passing file descriptors between processes over a Unix socket
//! (`SCM_RIGHTS`), with the bytes that accompany them.
#![allow(unsafe_code)] // Only to take ownership of fds the kernel handed us.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// Most fds one message may carry.
pub const MAX_FDS: usize = 16;

/// Sends `data` with `fds` attached, in one `sendmsg`. Returns the bytes
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
        match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
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
