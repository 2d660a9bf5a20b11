//! libqb's transports (`docs/LIBQB.md`): a connection made by libqb's
//! handshake, its messages carried in libqb's rings under `/dev/shm`
//! ([`shm`]) or in datagrams ([`socket`]); the connection's directory
//! and files ([`dir`]); responses
//! put in request order for a libqb client (`order`).

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use nix::sys::socket::MsgFlags;

pub mod dir;
pub(crate) mod order;
pub mod set;
pub mod shm;
pub mod socket;

/// One byte on the stream socket per message a libqb peer must be told
/// of (a request, to a libqb server; an event, to a libqb client). A
/// libqb peer reads exactly one per message and may wait for it, so none
/// is dropped: what the socket does not take now is owed, and paid
/// before the next message or when the owner flushes.
#[derive(Debug)]
pub(crate) struct Notify {
    sock: Arc<UnixStream>,
    owed: usize,
}

impl Notify {
    pub(crate) fn new(sock: Arc<UnixStream>) -> Notify {
        Notify { sock, owed: 0 }
    }

    /// One more message to announce.
    pub(crate) fn one_more(&mut self) {
        self.owed += 1;
        self.pay();
    }

    /// Sends what is owed, without waiting (`MSG_DONTWAIT`): a peer that
    /// does not read fills its socket, and is owed the rest.
    pub(crate) fn pay(&mut self) {
        const ZEROS: [u8; 256] = [0; 256];
        while self.owed > 0 {
            let n = self.owed.min(ZEROS.len());
            match nix::sys::socket::send(
                self.sock.as_raw_fd(),
                &ZEROS[..n],
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            ) {
                Ok(sent) => self.owed -= sent.min(self.owed),
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => return,
                // The peer is gone: nobody to tell.
                Err(_) => {
                    self.owed = 0;
                    return;
                }
            }
        }
    }

    /// Whether nothing is owed.
    pub(crate) fn paid(&self) -> bool {
        self.owed == 0
    }
}
