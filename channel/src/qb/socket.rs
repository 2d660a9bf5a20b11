//! libqb's socket flavour: one `SOCK_DGRAM` datagram per message, on
//! sockets bound to abstract names derived from the connection's
//! directory; a control file of three `{sent, flow_control}` pairs
//! (`docs/LIBQB.md`).
//!
//! The server's request socket is bound before the client binds its own:
//! until the server connects it to the client's, any local process could
//! send it a datagram, which libqb's server takes as the client's
//! request. ringlink's takes a datagram only from the client's name, and
//! connects the socket to it at the first one (the kernel then drops
//! every other sender's; those that came before are still in the queue,
//! and still refused).

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr};
use ringlink_common::qb::{dgram_name, RequestHeader, ResponseHeader, SUN_PATH_LEN};
use ringlink_common::wire::{MsgHeader, WireError};
use ringlink_common::{Channel, Peer, Violation};
use ringlink_ringbuf::guard::GuardedMap;

use crate::error::{TryRecvError, TrySendError};
use crate::qb::order::{Ordered, Out};
use crate::qb::shm::Header;

/// An abstract datagram address name (107 bytes, NUL padded).
pub(crate) type Name = [u8; SUN_PATH_LEN - 1];

/// A non-blocking `SOCK_DGRAM` Unix socket bound to `name`, its buffers
/// large enough for messages of `max` bytes (the kernel caps them at its
/// limits, as libqb's are capped).
pub(crate) fn bound(name: &[u8], max: usize) -> io::Result<OwnedFd> {
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    socket::bind(fd.as_raw_fd(), &UnixAddr::new_abstract(&dgram_name(name))?)?;
    size(fd.as_fd(), max);
    Ok(fd)
}

/// Raises the socket's buffers to hold a message of `max` bytes.
fn size(fd: BorrowedFd<'_>, max: usize) {
    let want = max.min(i32::MAX as usize);
    if socket::getsockopt(&fd, socket::sockopt::SndBuf).is_ok_and(|b| b < want) {
        let _ = socket::setsockopt(&fd, socket::sockopt::SndBuf, &want);
    }
    if socket::getsockopt(&fd, socket::sockopt::RcvBuf).is_ok_and(|b| b < want) {
        let _ = socket::setsockopt(&fd, socket::sockopt::RcvBuf, &want);
    }
}

/// Connects a datagram socket to the abstract `name`: `Ok(false)` if
/// nobody is bound there (yet).
pub(crate) fn connect(fd: BorrowedFd<'_>, name: &Name) -> io::Result<bool> {
    match socket::connect(fd.as_raw_fd(), &UnixAddr::new_abstract(name)?) {
        Ok(()) => Ok(true),
        Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ECONNREFUSED) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Where a libqb socket sender's messages go.
#[derive(Debug)]
pub(crate) struct SockOut {
    fd: Arc<OwnedFd>,
    /// The peer's name, until connected to it (a server's sockets: the
    /// client binds its own only after the connection response).
    peer_name: Option<Name>,
    header: Header,
    ctl: Arc<GuardedMap>,
    /// The control file's `sent` counter of this channel.
    sent: usize,
    /// A small message, header and parts made one buffer: one plain
    /// `send`, and no allocation per message.
    small: Vec<u8>,
}

/// Messages up to this size (header included) are copied into one
/// buffer and sent with `send`; larger ones go as an `iovec` list.
const SMALL: usize = 4096;

impl Out for SockOut {
    fn write(&mut self, h: &MsgHeader, parts: &[IoSlice<'_>]) -> Result<bool, TrySendError> {
        if let Some(name) = self.peer_name {
            match connect(self.fd.as_fd(), &name) {
                Ok(true) => self.peer_name = None,
                // Not bound yet: as if the socket were full.
                Ok(false) => return Ok(false),
                Err(e) => return Err(TrySendError::Io(e)),
            }
        }
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut head = [0u8; ringlink_common::qb::RESPONSE_HEADER_LEN];
        let n = self.header.encode(h, len, &mut head);
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        let sent = if n + len <= SMALL {
            self.small.clear();
            self.small.extend_from_slice(&head[..n]);
            for p in parts {
                self.small.extend_from_slice(p);
            }
            socket::send(self.fd.as_raw_fd(), &self.small, flags)
        } else {
            let mut all = Vec::with_capacity(parts.len() + 1);
            all.push(IoSlice::new(&head[..n]));
            all.extend(parts.iter().map(|p| IoSlice::new(p)));
            socket::sendmsg::<()>(self.fd.as_raw_fd(), &all, &[], flags, None)
        };
        match sent {
            Ok(_) => {
                self.ctl.u32(self.sent).fetch_add(1, Ordering::AcqRel);
                Ok(true)
            }
            Err(nix::errno::Errno::EAGAIN) => Ok(false),
            // Larger than the socket's buffer takes (the kernel capped
            // it below the negotiated size).
            Err(nix::errno::Errno::EMSGSIZE) => Err(TrySendError::Io(
                io::Error::from_raw_os_error(nix::errno::Errno::EMSGSIZE as i32),
            )),
            Err(
                nix::errno::Errno::ECONNREFUSED
                | nix::errno::Errno::EPIPE
                | nix::errno::Errno::ENOTCONN
                | nix::errno::Errno::ECONNRESET,
            ) => Err(TrySendError::Closed),
            Err(e) => Err(TrySendError::Io(e.into())),
        }
    }
}

/// The writing end of a libqb socket channel.
#[derive(Debug)]
pub struct QbSockSender {
    inner: Ordered<SockOut>,
    /// Messages sent before the peer bound its socket (an event from
    /// `connection_created`, which libqb's server would block for), in
    /// order, until it has.
    early: std::collections::VecDeque<(MsgHeader, Vec<u8>)>,
    early_bytes: usize,
    /// The socket's send buffer size, read once.
    sndbuf: Option<usize>,
}

/// Most bytes kept for a peer that has not bound its socket yet.
const EARLY_LIMIT: usize = 1 << 20;

impl QbSockSender {
    /// Sends on `fd` (connected to `peer_name` at the first send if
    /// given), counting in the control file's word at `sent`.
    pub(crate) fn new(
        fd: Arc<OwnedFd>,
        peer_name: Option<Name>,
        header: Header,
        ctl: Arc<GuardedMap>,
        sent: usize,
        ordered: bool,
    ) -> QbSockSender {
        let out = SockOut {
            fd,
            peer_name,
            header,
            ctl,
            sent,
            small: Vec::with_capacity(SMALL),
        };
        QbSockSender {
            inner: Ordered::new(out, ordered),
            early: std::collections::VecDeque::new(),
            early_bytes: 0,
            sndbuf: None,
        }
    }

    /// Whether the peer's socket is there to send to: connected, or
    /// connected now.
    fn peer_bound(&mut self) -> Result<bool, TrySendError> {
        let out = &mut self.inner.out;
        match out.peer_name {
            None => Ok(true),
            Some(name) => match connect(out.fd.as_fd(), &name) {
                Ok(true) => {
                    out.peer_name = None;
                    Ok(true)
                }
                Ok(false) => Ok(false),
                Err(e) => Err(TrySendError::Io(e)),
            },
        }
    }

    pub(crate) fn try_send(
        &mut self,
        h: &MsgHeader,
        parts: &[IoSlice<'_>],
    ) -> Result<(), TrySendError> {
        if !self.early.is_empty() || !self.peer_bound()? {
            let len: usize = parts.iter().map(|p| p.len()).sum();
            if self.early_bytes + len > EARLY_LIMIT {
                return Err(TrySendError::Full);
            }
            self.early_bytes += len;
            let body = parts.iter().flat_map(|p| p.iter().copied()).collect();
            self.early.push_back((*h, body));
            return self.flush().map(drop);
        }
        self.inner.send(h, parts)
    }

    pub(crate) fn flush(&mut self) -> Result<bool, TrySendError> {
        if !self.early.is_empty() {
            if !self.peer_bound()? {
                return Ok(false);
            }
            while let Some((h, body)) = self.early.pop_front() {
                match self.inner.send(&h, &[IoSlice::new(&body)]) {
                    Ok(()) => self.early_bytes -= body.len(),
                    Err(TrySendError::Full) => {
                        self.early.push_front((h, body));
                        return Ok(false);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        self.inner.flush()
    }

    /// Request `seq` gets no response.
    pub(crate) fn skip(&mut self, seq: u64) -> Result<bool, TrySendError> {
        self.inner.skip(seq)
    }

    /// Room now: nothing held back, and a send would go.
    ///
    /// A datagram socket polls writable only once three quarters of its
    /// send buffer are free, while a send goes as soon as the bytes in
    /// flight are below the buffer's size: a sender waiting for room by
    /// polling would let the reader run dry. So the bytes in flight
    /// (`SIOCOUTQ`, on our own socket) are compared with the buffer's
    /// size; a full reader's queue still makes the send fail, and the
    /// sender look again.
    pub(crate) fn room_for(&mut self) -> bool {
        if self.inner.holding() || !self.early.is_empty() {
            return false;
        }
        let fd = self.inner.out.fd.as_fd();
        if self.inner.out.peer_name.is_none() {
            let sndbuf = *self.sndbuf.get_or_insert_with(|| {
                socket::getsockopt(&fd, socket::sockopt::SndBuf).unwrap_or(0)
            });
            if let (Some(queued), true) = (crate::socket::send_queue_bytes(fd), sndbuf > 0) {
                return queued < sndbuf;
            }
        }
        let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLOUT)];
        matches!(
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO),
            Ok(1)
        )
    }

    pub(crate) fn holding(&self) -> bool {
        self.inner.holding() || !self.early.is_empty()
    }

    pub(crate) fn held_bytes(&self) -> usize {
        self.inner.held_bytes() + self.early_bytes
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.inner.out.fd.as_fd()
    }

    /// The control file's count of this channel's messages not yet read
    /// (the peer takes one off per message), and those kept here.
    pub(crate) fn sent_unread(&self) -> u64 {
        let o = &self.inner.out;
        u64::from(o.ctl.u32(o.sent).load(Ordering::Acquire)) + self.early.len() as u64
    }

    pub(crate) fn into_fd(self) -> Arc<OwnedFd> {
        self.inner.out.fd
    }
}

/// Most datagrams from strangers one `try_recv` drops before it returns
/// (a server's request socket before its client's first request).
pub(crate) const STRANGERS_PER_CALL: u32 = 64;

/// The reading end of a libqb socket channel.
#[derive(Debug)]
pub struct QbSockReceiver {
    fd: Arc<OwnedFd>,
    header: Header,
    channel: Channel,
    peer: Peer,
    /// The negotiated maximum payload.
    max: usize,
    ctl: Arc<GuardedMap>,
    sent: usize,
    /// Take datagrams only from this name; connect to it at the first
    /// (a server's request socket, bound before its client's).
    only_from: Option<Name>,
    /// Connected to `only_from`: the kernel refuses other senders now,
    /// but what they sent before is still queued (and still refused).
    connected: bool,
    buf: Vec<u8>,
    len: usize,
    held: Option<MsgHeader>,
    next_seq: u64,
    /// Read only after epoll said readable, until a read finds it dry
    /// (the server's edge-triggered loop); `None`: read whenever asked.
    readable: Option<bool>,
    /// Datagrams refused for coming from elsewhere.
    strangers: u64,
}

impl QbSockReceiver {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        fd: Arc<OwnedFd>,
        header: Header,
        channel: Channel,
        peer: Peer,
        max: usize,
        ctl: Arc<GuardedMap>,
        sent: usize,
        only_from: Option<Name>,
    ) -> QbSockReceiver {
        QbSockReceiver {
            fd,
            header,
            channel,
            peer,
            max,
            ctl,
            sent,
            only_from,
            connected: false,
            // One byte more than the largest message: a longer datagram
            // shows as such (MSG_TRUNC), never as a cut one.
            buf: vec![0; header.len() + max + 1],
            len: 0,
            held: None,
            next_seq: 1,
            readable: None,
            strangers: 0,
        }
    }

    /// The next message (the one taken before and not released, or a new
    /// datagram), its header checked against its length and the maximum.
    ///
    /// Strangers' datagrams are dropped, at most [`STRANGERS_PER_CALL`]
    /// of them: then `None`, the socket still readable (the server's loop
    /// comes back at its next turn, having served everyone else).
    pub(crate) fn try_recv(&mut self) -> Result<Option<MsgHeader>, TryRecvError> {
        if let Some(h) = self.held {
            return Ok(Some(h));
        }
        let mut dropped = 0;
        loop {
            if self.readable == Some(false) {
                return Ok(None);
            }
            let (n, from) = {
                let mut iov = [IoSliceMut::new(&mut self.buf)];
                match socket::recvmsg::<UnixAddr>(
                    self.fd.as_raw_fd(),
                    &mut iov,
                    None,
                    MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC | MsgFlags::MSG_CMSG_CLOEXEC,
                ) {
                    Ok(m) => (m.bytes, m.address),
                    Err(nix::errno::Errno::EAGAIN) => {
                        if self.readable.is_some() {
                            self.readable = Some(false);
                        }
                        return Ok(None);
                    }
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(nix::errno::Errno::ECONNREFUSED | nix::errno::Errno::ECONNRESET) => {
                        return Err(TryRecvError::Closed)
                    }
                    Err(e) => return Err(TryRecvError::Io(e.into())),
                }
            };
            if let Some(want) = self.only_from {
                // An unbound sender's address is empty: nix's `UnixAddr`
                // panics when asked what kind it is (a length below
                // `sun_path`'s offset), so its length is looked at first.
                let named = |a: &&UnixAddr| socket::SockaddrLike::len(*a) as usize > 2;
                let theirs = from.as_ref().filter(named).and_then(UnixAddr::as_abstract);
                if theirs != Some(&want[..]) {
                    // Not the client's: dropped (libqb's server would take
                    // it as the client's request).
                    self.strangers += 1;
                    dropped += 1;
                    if dropped < STRANGERS_PER_CALL {
                        continue;
                    }
                    // A flood (several senders can keep the socket from
                    // ever running dry): no more now. Connected to the
                    // client's name, if bound by now (libqb's client binds
                    // it before it sends, and sends from it alone; libqb's
                    // server connects there at its first response), the
                    // socket takes no one else's from here.
                    if !self.connected {
                        self.connected = connect(self.fd.as_fd(), &want).unwrap_or(false);
                    }
                    return Ok(None);
                }
                // The kernel keeps everyone else out from now on; the
                // name is still checked, for what strangers sent before.
                if !self.connected && connect(self.fd.as_fd(), &want).unwrap_or(false) {
                    self.connected = true;
                }
            }
            return self.take(n).map(Some);
        }
    }

    /// Checks the datagram of `n` bytes in the buffer.
    fn take(&mut self, n: usize) -> Result<MsgHeader, TryRecvError> {
        let bad = |error| {
            TryRecvError::Violation(Violation::BadHeader {
                by: self.peer,
                channel: self.channel,
                error,
            })
        };
        if n > self.buf.len() - 1 {
            return Err(Violation::OverMaximum {
                by: self.peer,
                channel: self.channel,
                len: n.saturating_sub(self.header.len()) as u64,
                max: self.max as u64,
            }
            .into());
        }
        let (id, size, error) = match self.header {
            Header::Request => match RequestHeader::decode(&self.buf[..n]) {
                Ok(h) => (h.id, h.size, 0),
                Err(e) => return Err(bad(e)),
            },
            Header::Response => match ResponseHeader::decode(&self.buf[..n]) {
                Ok(h) => (h.id, h.size, h.error),
                Err(e) => return Err(bad(e)),
            },
        };
        if size < 0 || size as usize != n {
            return Err(bad(WireError::Size));
        }
        if self.header == Header::Request && id == ringlink_common::qb::MSG_DISCONNECT {
            return Err(TryRecvError::Closed);
        }
        let _ = self
            .ctl
            .u32(self.sent)
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_sub(1))
            });
        let seq = match self.header {
            Header::Request => {
                self.next_seq += 1;
                self.next_seq - 1
            }
            Header::Response => 0,
        };
        let h = MsgHeader {
            id,
            size: (n - self.header.len()) as u32,
            error,
            flags: 0,
            seq,
        };
        self.len = n;
        self.held = Some(h);
        Ok(h)
    }

    /// The payload of the message [`try_recv`](Self::try_recv) gave.
    pub(crate) fn payload(&self) -> &[u8] {
        self.buf.get(self.header.len()..self.len).unwrap_or(&[])
    }

    /// The held message is done with.
    pub(crate) fn release(&mut self) {
        self.held = None;
    }

    pub(crate) fn pending(&self) -> bool {
        self.held.is_some()
    }

    pub(crate) fn mark_readable(&mut self) {
        self.readable = Some(true);
    }

    pub(crate) fn left_readable(&self) -> bool {
        self.readable == Some(true)
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub(crate) fn into_fd(self) -> Arc<OwnedFd> {
        self.fd
    }

    /// Datagrams refused for not coming from the client.
    pub fn strangers(&self) -> u64 {
        self.strangers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctl() -> Arc<GuardedMap> {
        let f = tempfile();
        f.set_len(24).expect("size");
        Arc::new(GuardedMap::map(f.as_fd(), 24).expect("map"))
    }

    fn tempfile() -> std::fs::File {
        let dir = std::env::temp_dir().join(format!(
            "qbsock-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&dir)
            .expect("file");
        let _ = std::fs::remove_file(&dir);
        f
    }

    /// The server's receiver of requests on `server`, from the client
    /// bound at `client_name` (4 KiB messages).
    fn client_receiver(
        server: Arc<OwnedFd>,
        ctl: Arc<GuardedMap>,
        client_name: &str,
    ) -> QbSockReceiver {
        QbSockReceiver::new(
            server,
            Header::Request,
            Channel::Request,
            Peer::Client,
            4096,
            ctl,
            0,
            Some(dgram_name(client_name.as_bytes())),
        )
    }

    #[test]
    fn only_the_clients_name_gets_in_and_a_stranger_does_not() {
        let tag = format!("/ringlink-test-{}-qbsock", std::process::id());
        let server_name = format!("{tag}-request");
        let client_name = format!("{tag}-response");
        let ctl = ctl();
        let server = Arc::new(bound(server_name.as_bytes(), 4096).expect("bind"));
        let mut rx = client_receiver(server, ctl, &client_name);
        let to = UnixAddr::new_abstract(&dgram_name(server_name.as_bytes())).expect("addr");
        let mut msg = RequestHeader {
            id: 7,
            size: 16 + 3,
        }
        .encode()
        .to_vec();
        msg.extend_from_slice(b"abc");
        // A stranger (unbound, and bound elsewhere).
        let stranger = socket::socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .expect("socket");
        socket::sendto(stranger.as_raw_fd(), &msg, &to, MsgFlags::empty()).expect("send");
        let other = bound(format!("{tag}-other").as_bytes(), 4096).expect("bind");
        socket::sendto(other.as_raw_fd(), &msg, &to, MsgFlags::empty()).expect("send");
        assert!(rx.try_recv().expect("recv").is_none());
        assert_eq!(rx.strangers(), 2);
        // The client.
        let client = bound(client_name.as_bytes(), 4096).expect("bind");
        socket::sendto(client.as_raw_fd(), &msg, &to, MsgFlags::empty()).expect("send");
        let h = rx.try_recv().expect("recv").expect("the client's request");
        assert_eq!((h.id, h.size, h.seq), (7, 3, 1));
        assert_eq!(rx.payload(), b"abc");
    }

    #[test]
    fn a_stranger_queued_behind_the_clients_first_request_is_still_refused() {
        // The socket is connected to the client's name at its first
        // request: a stranger's datagram that came in before that (behind
        // the request) is still in the queue, and is not the client's.
        let tag = format!("/ringlink-test-{}-qbsock-behind", std::process::id());
        let server_name = format!("{tag}-request");
        let client_name = format!("{tag}-response");
        let server = Arc::new(bound(server_name.as_bytes(), 4096).expect("bind"));
        let mut rx = client_receiver(server, ctl(), &client_name);
        let to = UnixAddr::new_abstract(&dgram_name(server_name.as_bytes())).expect("addr");
        let msg = |id: i32| {
            let mut m = RequestHeader { id, size: 16 + 3 }.encode().to_vec();
            m.extend_from_slice(b"abc");
            m
        };
        let client = bound(client_name.as_bytes(), 4096).expect("bind");
        socket::sendto(client.as_raw_fd(), &msg(7), &to, MsgFlags::empty()).expect("send");
        let stranger = bound(format!("{tag}-other").as_bytes(), 4096).expect("bind");
        socket::sendto(stranger.as_raw_fd(), &msg(666), &to, MsgFlags::empty()).expect("send");
        let h = rx.try_recv().expect("recv").expect("the client's request");
        assert_eq!(h.id, 7);
        rx.release();
        // Connected now: the kernel refuses the stranger's next.
        assert!(socket::sendto(stranger.as_raw_fd(), &msg(666), &to, MsgFlags::empty()).is_err());
        assert_eq!(
            rx.try_recv().expect("recv"),
            None,
            "the stranger's was taken"
        );
        assert_eq!(rx.strangers(), 1);
        socket::sendto(client.as_raw_fd(), &msg(8), &to, MsgFlags::empty()).expect("send");
        let h = rx.try_recv().expect("recv").expect("the client's request");
        assert_eq!((h.id, h.seq), (8, 2));
    }

    #[test]
    fn a_flood_of_strangers_is_dropped_a_bounded_number_at_a_time() {
        // More strangers' datagrams wait than one call may drop (here
        // queued at once by a peer, which the kernel lets queue past its
        // limit for others; on a busy machine, senders keeping the socket
        // from running dry): each call drops a bounded number and says
        // "nothing now", the socket left readable, until it is dry.
        let (server, flood) = socket::socketpair(
            AddressFamily::Unix,
            SockType::Datagram,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )
        .expect("socketpair");
        let client_name = format!("/ringlink-test-{}-qbflood-response", std::process::id());
        let mut rx = client_receiver(Arc::new(server), ctl(), &client_name);
        let msg = RequestHeader { id: 7, size: 16 }.encode();
        let mut queued = 0u64;
        while queued < 3 * u64::from(STRANGERS_PER_CALL)
            && socket::send(flood.as_raw_fd(), &msg, MsgFlags::empty()).is_ok()
        {
            queued += 1;
        }
        assert!(
            queued > u64::from(STRANGERS_PER_CALL),
            "only {queued} queued"
        );
        rx.mark_readable();
        let mut calls = 0;
        while rx.left_readable() {
            let before = rx.strangers();
            assert!(rx.try_recv().expect("recv").is_none());
            assert!(rx.strangers() - before <= u64::from(STRANGERS_PER_CALL));
            calls += 1;
            assert!(calls <= 10, "never dry");
        }
        assert_eq!(rx.strangers(), queued);
        assert!(calls > 1, "{queued} strangers dropped in one call");
    }
}
