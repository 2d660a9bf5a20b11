//! The connection's stream socket after the handshake: the socket that
//! introduced the two sides stays open for the connection's life, and
//! carries the rings' wake-ups (a byte each, both ways) or, over the
//! socket transport, the server's flow-control level (a byte from the
//! server). Read with [`read_out`], written with [`send_byte`]; both
//! never wait, whatever the socket's flags, and a read never lets the
//! peer's fds be closed in the reading thread (`fdpass::recv_nowait`).

use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use nix::sys::socket::MsgFlags;
use ringlink_common::fdpass;

use crate::fds::FdInbox;

/// Most bytes one [`read_out`] reads: a peer that writes without end
/// costs a bounded read per call (the rest keeps the socket readable).
pub const READ_LIMIT: usize = 64 << 10;

/// What [`read_out`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drained {
    /// The peer sent fds that break this side's terms (or sent fds where
    /// none are taken): the connection must end. What was read before
    /// them counts as wake-ups.
    Fault(ringlink_common::Violation),
    /// Nothing to read.
    Nothing,
    /// Bytes, read; the last one is given.
    Bytes(u8),
    /// End of stream, or the connection was reset: the peer is gone.
    Gone,
    /// Another error.
    Failed,
}

/// Reads what the peer wrote on its stream socket, without waiting and
/// at most [`READ_LIMIT`] bytes. Fds the peer attached are filed in
/// `inbox` (rings whose side accepts fds: see [`crate::fds`]), or reaped
/// where none are taken.
pub fn read_out(sock: &UnixStream, inbox: Option<&FdInbox>) -> Drained {
    let _reading = inbox.map(FdInbox::reading);
    let mut buf = [0u8; 4096];
    let mut last = None;
    let mut total = 0;
    while total < READ_LIMIT {
        match fdpass::recv_keeping(sock.as_fd(), &mut buf, MsgFlags::empty()) {
            Ok((0, _)) => return Drained::Gone,
            Ok((n, fds)) => {
                last = Some(buf[n - 1]);
                total += n;
                if !fds.is_empty() {
                    // The read ended with the byte they came on.
                    match inbox {
                        Some(inbox) => {
                            if let Err(v) = inbox.deliver(buf[n - 1], fds) {
                                return Drained::Fault(v);
                            }
                        }
                        None => drop(fds), // reaped
                    }
                    continue;
                }
                if n < buf.len() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Drained::Gone,
            Err(_) => return Drained::Failed,
        }
    }
    match last {
        Some(b) => Drained::Bytes(b),
        None => Drained::Nothing,
    }
}

/// Reads out a socket that was shut down (`shutdown(SHUT_RDWR)`: nothing
/// more can come), any fds attached reaped, never closed here: called
/// before the last close of a socket a peer may have queued fds on.
pub fn read_out_shut(sock: std::os::fd::BorrowedFd<'_>) {
    let mut buf = [0u8; 4096];
    loop {
        match fdpass::recv_nowait(sock, &mut buf, MsgFlags::empty()) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Sends one byte on the stream socket without waiting (`MSG_DONTWAIT`):
/// a peer that does not read its socket fills its own buffer, and misses
/// what is sent then, alone.
pub fn send_byte(sock: &UnixStream, byte: u8) {
    use std::os::fd::AsRawFd;
    let _ = nix::sys::socket::send(
        sock.as_raw_fd(),
        &[byte],
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
    );
}

/// Closes the stream socket where its closing cannot hold the caller
/// (`fdpass::close_refusing`), once no ring holds it for its wake-ups
/// (a handle still held elsewhere is closed by its last holder).
pub fn release(sock: Arc<UnixStream>) {
    if let Ok(sock) = Arc::try_unwrap(sock) {
        fdpass::close_refusing(sock.into());
    }
}
