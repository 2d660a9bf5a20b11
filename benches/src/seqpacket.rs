//! The comparison transport: a Unix-domain `SOCK_SEQPACKET` socket pair
//! with blocking I/O (the kernel's sleep/wake-up on every empty read),
//! with the same loops as [`ops`](crate::ops).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use nix::sys::socket::{setsockopt, socketpair, sockopt, AddressFamily, SockFlag, SockType};
use nix::sys::time::TimeVal;

use crate::payload::{check, pattern, stamp};
use crate::STALL;

/// A connected `SOCK_SEQPACKET` pair (close-on-exec), each end with
/// [`STALL`] as its send and receive timeout. The ends are `File`s:
/// `write` and `read` on them are `send` and `recv` without flags.
///
/// # Errors
///
/// If the sockets cannot be made.
pub fn pair() -> io::Result<(File, File)> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    Ok((prepare(a)?, prepare(b)?))
}

/// Sets [`STALL`] as the send and receive timeouts of a received end.
///
/// # Errors
///
/// If `setsockopt` fails (e.g. `fd` is not a socket).
pub fn prepare(fd: OwnedFd) -> io::Result<File> {
    let tv = TimeVal::new(STALL.as_secs() as _, 0);
    setsockopt(&fd, sockopt::ReceiveTimeout, &tv)?;
    setsockopt(&fd, sockopt::SendTimeout, &tv)?;
    Ok(File::from(fd))
}

/// Sends one message.
///
/// # Errors
///
/// Any error of `send`; `WriteZero` on a short send.
#[inline]
pub fn send_one(sock: &File, msg: &[u8]) -> io::Result<()> {
    let n = (&*sock).write(msg)?;
    if n != msg.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short seqpacket send",
        ));
    }
    Ok(())
}

/// Receives one message into `buf` (which should be larger than any
/// expected message, so that a truncation shows as a wrong length).
///
/// # Errors
///
/// Any error of `recv` (`WouldBlock` after [`STALL`]); `UnexpectedEof`
/// when the peer has closed.
#[inline]
pub fn recv_one<'b>(sock: &File, buf: &'b mut [u8]) -> io::Result<&'b [u8]> {
    let n = (&*sock).read(buf)?;
    if n == 0 && !buf.is_empty() {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(&buf[..n])
}

/// Sends `count` messages of `size` bytes, stamped `0..count`.
///
/// # Errors
///
/// As [`send_one`].
pub fn send(sock: &File, size: usize, count: u64) -> io::Result<()> {
    let mut src = pattern(size);
    for seq in 0..count {
        stamp(&mut src, seq);
        send_one(sock, &src)?;
    }
    Ok(())
}

/// Receives `count + 1` messages, as [`ops::receive`](crate::ops::receive).
///
/// # Errors
///
/// As [`recv_one`], and `InvalidData` for a wrong message.
pub fn receive(sock: &File, size: usize, count: u64) -> io::Result<(Duration, u64)> {
    let mut buf = vec![0u8; size + 64];
    let mut acc = check(recv_one(sock, &mut buf)?, size, 0)?;
    let start = Instant::now();
    for seq in 1..=count {
        acc ^= check(recv_one(sock, &mut buf)?, size, seq)?;
    }
    Ok((start.elapsed(), acc))
}

/// Answers `count` requests of at most `max` bytes with copies of them.
///
/// # Errors
///
/// As [`send_one`] and [`recv_one`].
pub fn echo(sock: &File, max: usize, count: u64) -> io::Result<()> {
    let mut buf = vec![0u8; max + 64];
    for _ in 0..count {
        let req = recv_one(sock, &mut buf)?;
        send_one(sock, req)?;
    }
    Ok(())
}

/// Makes `count` round trips, as [`ops::round_trips`](crate::ops::round_trips).
///
/// # Errors
///
/// As [`send_one`] and [`recv_one`], and `InvalidData` for a wrong
/// answer.
pub fn round_trips(
    sock: &File,
    size: usize,
    count: u64,
    mut samples: Option<&mut Vec<u64>>,
) -> io::Result<(Duration, u64)> {
    let mut src = pattern(size);
    let mut buf = vec![0u8; size + 64];
    let mut acc = 0;
    let start = Instant::now();
    let mut last = start;
    for seq in 0..count {
        stamp(&mut src, seq);
        send_one(sock, &src)?;
        acc ^= check(recv_one(sock, &mut buf)?, size, seq)?;
        if let Some(s) = samples.as_deref_mut() {
            let now = Instant::now();
            s.push(now.duration_since(last).as_nanos() as u64);
            last = now;
        }
    }
    Ok((start.elapsed(), acc))
}
