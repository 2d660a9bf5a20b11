//! The connection's stream socket, as the client reads it: the one
//! place that reads it after the handshake.
//!
//! What the server writes there is wake-ups (a byte each) for the rings,
//! or, over the socket transport, its flow-control level (the last byte
//! read); end of stream means the server is gone. Every read takes the
//! wake-ups meant for any of the rings, so whoever reads must tell
//! whoever else may be waiting: the async client's other tasks
//! ([`take_drained`](Stream::take_drained)), and an application that
//! polls the client's fd after `prepare_poll` (a private eventfd in the
//! client's epoll set, made readable again, [`arm_app`](Stream::arm_app)).

use std::cell::Cell;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use ringlink_channel::fds::FdInbox;
use ringlink_channel::stream::{self, Drained};
use ringlink_common::Violation;

/// Epoll token of the private eventfd in the client's epoll set.
pub(crate) const APP_TOKEN: u64 = 3;

/// The client's end of the connection's stream socket.
pub(crate) struct Stream {
    sock: Arc<UnixStream>,
    connected: Cell<bool>,
    /// Whether the bytes are flow-control levels (socket transport).
    levels: bool,
    level: Cell<u32>,
    /// Something was read since [`take_drained`](Self::take_drained).
    drained: Cell<bool>,
    /// Read out since this side last raised a waiting flag: no wake-up
    /// can have come since (a server sends one only for a raised flag),
    /// so a sleep may skip its drain (`needs_drain`).
    quiet: Cell<bool>,
    /// Made readable when a read takes wake-ups while the application
    /// polls the client's fd (after `prepare_poll`); never shared with
    /// the server.
    app: Option<EventFd>,
    /// Where the server's fds are filed (rings, when the client takes
    /// any).
    inbox: Option<Arc<FdInbox>>,
    /// What the server did wrong on the stream (fds out of its terms).
    fault: Cell<Option<Violation>>,
}

impl Stream {
    /// The socket, after the handshake; `levels` over the socket
    /// transport, starting at `level`.
    pub(crate) fn new(
        sock: Arc<UnixStream>,
        levels: bool,
        level: u32,
        inbox: Option<Arc<FdInbox>>,
    ) -> Stream {
        Stream {
            sock,
            connected: Cell::new(true),
            levels,
            level: Cell::new(level),
            drained: Cell::new(false),
            quiet: Cell::new(false),
            app: None,
            inbox,
            fault: Cell::new(None),
        }
    }

    /// What the server broke, if the connection ended for it.
    pub(crate) fn fault(&self) -> Option<Violation> {
        self.fault.get()
    }

    /// Whether the server was still there at the last read.
    pub(crate) fn connected(&self) -> bool {
        self.connected.get()
    }

    /// The server's flow-control level as last read (socket transport).
    pub(crate) fn level(&self) -> u32 {
        self.level.get()
    }

    /// The connection is unusable: shuts the socket down (the server
    /// sees it at once).
    pub(crate) fn fail(&self) {
        self.connected.set(false);
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }

    /// After [`fail`](Self::fail): reads what is still queued, any fds
    /// reaped (`fdpass::recv_nowait`), so that the socket's last close
    /// finds nothing to close.
    pub(crate) fn read_out_for_close(&self) {
        ringlink_channel::stream::read_out_shut(self.sock.as_fd());
    }

    /// Reads what the server wrote, without waiting and at most
    /// [`READ_LIMIT`](stream::READ_LIMIT) bytes (`stream::read_out`, which
    /// files the fds attached in the inbox, or reaps them). Returns whether anything was read or the
    /// end found: wake-ups meant for any ring may have been taken.
    pub(crate) fn read(&self) -> bool {
        if !self.connected.get() {
            return false;
        }
        match stream::read_out(&self.sock, self.inbox.as_deref()) {
            Drained::Nothing => {
                self.quiet.set(true);
                return false;
            }
            Drained::Fault(v) => {
                self.fault.set(Some(v));
                self.fail();
            }
            Drained::Bytes(last) => {
                if self.levels {
                    self.level.set(u32::from(last));
                }
            }
            Drained::Gone | Drained::Failed => self.connected.set(false),
        }
        self.drained.set(true);
        self.quiet.set(true);
        if let Some(app) = &self.app {
            // A full counter already reads as readable.
            let _ = app.write(1);
        }
        true
    }

    /// Whether a sleep must drain before it raises its flags (PROTOCOL.md
    /// §4, W0): not if the socket was read out since a flag last went up,
    /// for the server sends a wake-up only for a raised flag. (Other
    /// bytes, a server leaving, end the poll and are read after it.)
    pub(crate) fn needs_drain(&self) -> bool {
        !self.quiet.get()
    }

    /// A waiting flag goes up: wake-ups may come from now on.
    pub(crate) fn flags_up(&self) {
        self.quiet.set(false);
    }

    /// Whether a read took anything since the last call (a receiver
    /// fetching its fds from the stream counts).
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn take_drained(&self) -> bool {
        self.drained.replace(false) | self.fetched()
    }

    /// Whether a receiver fetching its fds read wake-ups off the stream
    /// since the last call.
    pub(crate) fn fetched(&self) -> bool {
        self.inbox.as_ref().is_some_and(|i| i.took_wakeups())
    }

    /// Before the application polls the client's fd: from now on, a read
    /// by the client's own calls that takes wake-ups makes the fd
    /// readable again (the private eventfd, made and added to `epoll` on
    /// the first call); what an earlier one signalled is consumed here.
    ///
    /// # Errors
    ///
    /// If the eventfd cannot be made or added.
    pub(crate) fn arm_app(&mut self, epoll: &Epoll) -> io::Result<()> {
        match &self.app {
            Some(app) => {
                let _ = app.read();
            }
            None => {
                let app = EventFd::from_value_and_flags(
                    0,
                    EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
                )?;
                epoll.add(&app, EpollEvent::new(EpollFlags::EPOLLIN, APP_TOKEN))?;
                self.app = Some(app);
            }
        }
        Ok(())
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A client's stream whose server end is `peer`.
    fn pair() -> (Stream, UnixStream) {
        let (ours, peer) = UnixStream::pair().expect("socketpair");
        ours.set_nonblocking(true).expect("nonblocking");
        (Stream::new(Arc::new(ours), false, 0, None), peer)
    }

    #[test]
    fn a_sleep_drains_only_after_a_flag_went_up() {
        let (stream, mut peer) = pair();
        // Nothing read yet: what the handshake left may be there.
        assert!(stream.needs_drain());
        assert!(!stream.read(), "nothing to read");
        assert!(!stream.needs_drain(), "read out, no flag up since");
        stream.flags_up();
        assert!(stream.needs_drain(), "a flag went up: a wake-up may come");
        // The wake-up comes; the read after the poll takes it.
        peer.write_all(&[1]).expect("wake-up");
        assert!(stream.read(), "the wake-up is read");
        assert!(!stream.needs_drain());
        // A server that left is still seen by a read, drained or not.
        drop(peer);
        stream.flags_up();
        assert!(stream.needs_drain());
        stream.read();
        assert!(!stream.connected());
    }
}
