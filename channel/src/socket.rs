//! The socket transport's framing: messages over Unix `SOCK_SEQPACKET`
//! sockets, for [`Transport::Socket`](ringlink_common::Transport::Socket).
//!
//! A message is the same bytes as a ring record (a [`MsgHeader`], then the
//! payload), sent as one datagram when it fits the socket's send buffer,
//! otherwise as several: the first carries the header, the next ones the
//! rest, back to back. `SOCK_SEQPACKET` keeps datagram boundaries and
//! order, and each direction of a socket has one writer at a time (the
//! client's thread, or the server's per-connection lock), so fragments of
//! two messages never interleave. The receiver learns the length from the
//! header and reassembles; a datagram that would overrun the announced
//! length, or a length above the negotiated maximum, is a protocol
//! violation.
//!
//! Sends never block: a message whose first datagram does not fit is
//! refused ([`SendError::WouldBlock`], nothing sent), and the tail of a
//! message whose later datagrams do not fit is kept and sent by
//! [`SockTx::flush`] once the peer reads (the owner polls for
//! writability), so a peer that stops reading can stall only itself.

#![allow(unsafe_code)] // One ioctl (SIOCOUTQ), with a local out-parameter.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::socket::{
    self, sockopt, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
};
use ringlink_common::fdpass::PeerFds;
use ringlink_common::wire::{FdTerms, MsgHeader, WireError, MSG_HEADER_LEN};
use ringlink_common::{FdFault, Framing};

/// Send buffer each socket asks for. The kernel caps it at twice
/// `net.core.wmem_max`; fragments are sized from what it granted.
pub const SOCKET_BUFFER: usize = 4 << 20;

/// `ioctl` reading the bytes in a socket's send queue (`TIOCOUTQ`;
/// `linux/sockios.h`), missing from the `libc` crate under this name.
const SIOCOUTQ: libc::Ioctl = libc::TIOCOUTQ;

/// Smallest fragment: below this the kernel's limits are broken, not
/// just small.
const MIN_FRAGMENT: usize = 4096;

/// Largest fragment: Linux builds a Unix datagram from a linear part of
/// up to about 16 KiB plus up to 17 page fragments, so a datagram this
/// size needs no multi-page (high-order) allocation, which may fail
/// (`ENOBUFS`) on a fragmented machine.
const MAX_FRAGMENT: usize = 64 << 10;

/// Most slices one `sendmsg` takes (`IOV_MAX`).
const MAX_IOV: usize = 1024;

/// A connected pair of non-blocking, close-on-exec `SOCK_SEQPACKET`
/// sockets with [`SOCKET_BUFFER`]-sized send buffers (as far as the
/// kernel allows).
///
/// # Errors
///
/// The `socketpair` failure.
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let (a, b) = socket::socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )?;
    for s in [&a, &b] {
        // Best effort: a smaller buffer only means more fragments.
        let _ = socket::setsockopt(s, sockopt::SndBuf, &SOCKET_BUFFER);
    }
    Ok((a, b))
}

/// Checks that `fd` is a `SOCK_SEQPACKET` socket, and makes it
/// non-blocking (an fd received from a peer is checked before use).
///
/// # Errors
///
/// `InvalidData` if it is another kind of fd; the `fcntl` failure.
pub fn check(fd: BorrowedFd<'_>) -> io::Result<()> {
    match socket::getsockopt(&fd, sockopt::SockType) {
        Ok(SockType::SeqPacket) => {}
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a SOCK_SEQPACKET socket",
            ))
        }
    }
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL)?;
    let flags = nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags))?;
    Ok(())
}

/// Why a message was not sent.
#[derive(Debug)]
pub enum SendError {
    /// No room: nothing was sent (or a previous message's tail is still
    /// waiting). Poll for writability and retry.
    WouldBlock,
    /// The peer closed its end.
    Closed,
    /// Any other failure of `sendmsg`.
    Io(io::Error),
}

/// Why no message was received.
#[derive(Debug)]
pub enum RecvError {
    /// No complete message yet. Poll for readability and retry.
    Empty,
    /// The peer closed its end and everything it sent has been read.
    Closed,
    /// The peer broke the framing (the message is not delivered).
    Framing(Framing),
    /// The peer's fds broke this side's terms (the message is not
    /// delivered; the fds are reaped).
    Fds(FdFault),
    /// Any other failure of `recv`.
    Io(io::Error),
}

/// The sending half of one direction of a socket-transport connection.
#[derive(Debug)]
pub struct SockTx {
    fd: Arc<OwnedFd>,
    /// Largest datagram to send.
    fragment: usize,
    /// The send buffer the kernel granted.
    buffer: usize,
    /// The unsent tail of the last message.
    pending: Vec<u8>,
    /// How much of `pending` is sent.
    at: usize,
}

impl SockTx {
    /// Sends on `fd`. A socket used both ways is shared with its
    /// [`SockRx`] (one fd, one `Arc` each): every call here is
    /// non-blocking by its own flags, so the two never wait on each
    /// other.
    ///
    /// # Errors
    ///
    /// If the send buffer size cannot be read.
    pub fn new(fd: impl Into<Arc<OwnedFd>>) -> io::Result<SockTx> {
        let fd = fd.into();
        let granted = socket::getsockopt(&*fd, sockopt::SndBuf)?;
        // Half the buffer (one fragment in the peer's queue, one on its
        // way, and the kernel's per-datagram overhead beside them), and at
        // most MAX_FRAGMENT, which the kernel builds from single pages.
        let fragment = (granted / 2).clamp(MIN_FRAGMENT, MAX_FRAGMENT);
        Ok(SockTx {
            fd,
            fragment,
            buffer: granted,
            pending: Vec::new(),
            at: 0,
        })
    }

    /// The socket, to poll for writability while [`has_pending`](Self::has_pending).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The socket, given back (to close it where its closing cannot
    /// hold anyone: `fdpass::reap`).
    pub fn into_fd(self) -> Arc<OwnedFd> {
        self.fd
    }

    /// Whether the tail of a message waits to be sent.
    pub fn has_pending(&self) -> bool {
        self.at < self.pending.len()
    }

    /// Bytes sent but not yet read by the peer, plus any unsent tail.
    pub fn queued(&self) -> usize {
        self.in_kernel() + (self.pending.len() - self.at)
    }

    /// Whether a message sent now would not be refused: no tail waits,
    /// and the kernel takes another datagram (it does while the memory
    /// charged to the send buffer, `SIOCOUTQ`, is below the buffer's
    /// size). Only the holder of this half sends on it, so this stays
    /// true until it sends.
    pub fn can_send(&self) -> bool {
        !self.has_pending() && self.in_kernel() < self.buffer
    }

    /// Memory the kernel charges to the send buffer (`SIOCOUTQ`): the
    /// datagrams the peer has not read, with their overhead.
    fn in_kernel(&self) -> usize {
        send_queue_bytes(self.fd.as_fd()).unwrap_or(0)
    }

    /// Sends what is left of the last message. Returns whether all of it
    /// is gone.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`], [`SendError::Io`]; never `WouldBlock`
    /// (that is `Ok(false)`).
    pub fn flush(&mut self) -> Result<bool, SendError> {
        while self.has_pending() {
            let end = (self.at + self.fragment).min(self.pending.len());
            let part = [IoSlice::new(&self.pending[self.at..end])];
            match send(&self.fd, &part, &[]) {
                Ok(()) => self.at = end,
                Err(SendError::WouldBlock) => return Ok(false),
                Err(SendError::Io(e)) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                    self.shrink(e)?;
                }
                Err(e) => return Err(e),
            }
        }
        self.pending.clear();
        self.at = 0;
        Ok(true)
    }

    /// Sends one message: `header` (whose `size` must be the total length
    /// of `parts`) then the payload, gathered from `parts`, with `fds`
    /// attached to its first datagram (the header's count set to theirs).
    ///
    /// # Errors
    ///
    /// [`SendError::WouldBlock`] if the previous message's tail is still
    /// waiting or the first datagram does not fit (nothing is sent);
    /// [`SendError::Closed`]; [`SendError::Io`].
    pub fn try_send(
        &mut self,
        header: &MsgHeader,
        parts: &[IoSlice<'_>],
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), SendError> {
        if !self.flush()? {
            return Err(SendError::WouldBlock);
        }
        let raw: Vec<i32> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let mut head = [0u8; MSG_HEADER_LEN];
        header.with_fds(fds.len() as u16).encode_into(&mut head);
        let joined: Vec<u8>;
        let mut all: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
        all.push(&head);
        all.extend(parts.iter().map(|p| &**p).filter(|p| !p.is_empty()));
        if all.len() > MAX_IOV {
            // More slices than one system call takes: gather them here.
            joined = all.concat();
            all = vec![&joined];
        }
        let total = MSG_HEADER_LEN + header.size as usize;
        let mut off = 0;
        while off < total {
            let len = self.fragment.min(total - off);
            let iov = gather(&all, off, len);
            let attached: &[i32] = if off == 0 { &raw } else { &[] };
            let sent = match send(&self.fd, &iov, attached) {
                Err(SendError::Io(e)) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                    match self.shrink(e) {
                        Ok(()) => continue,
                        Err(e) => Err(e),
                    }
                }
                other => other,
            };
            match sent {
                Ok(()) => off += len,
                Err(SendError::Closed) => return Err(SendError::Closed),
                // Nothing went: the message is refused whole.
                Err(e) if off == 0 => return Err(e),
                Err(_) => {
                    // Part of the message went: it is committed. Keep its
                    // tail for `flush`, which sends it when the socket
                    // takes it (or reports the error that persists), so no
                    // other message's bytes ever follow a partial one.
                    for s in gather(&all, off, total - off) {
                        self.pending.extend_from_slice(&s);
                    }
                    self.at = 0;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// A datagram was too large for the socket (its buffer shrank, or
    /// the system's limits are lower than it said): halve the fragments.
    fn shrink(&mut self, e: io::Error) -> Result<(), SendError> {
        if self.fragment <= MIN_FRAGMENT {
            return Err(SendError::Io(e));
        }
        self.fragment = (self.fragment / 2).max(MIN_FRAGMENT);
        Ok(())
    }
}

/// The slices of `all` (concatenated) covering `off..off + len`.
fn gather<'a>(all: &[&'a [u8]], mut off: usize, mut len: usize) -> Vec<IoSlice<'a>> {
    let mut out = Vec::with_capacity(all.len());
    for s in all {
        if len == 0 {
            break;
        }
        if off >= s.len() {
            off -= s.len();
            continue;
        }
        let take = (s.len() - off).min(len);
        out.push(IoSlice::new(&s[off..off + take]));
        len -= take;
        off = 0;
    }
    out
}

/// One datagram, with `fds` attached, without blocking.
fn send(fd: &OwnedFd, iov: &[IoSlice<'_>], fds: &[i32]) -> Result<(), SendError> {
    // MSG_DONTWAIT: this call never waits, whatever O_NONBLOCK says on
    // the open file description (which a peer that kept a copy of the
    // fd could change).
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    loop {
        return match socket::sendmsg::<()>(fd.as_raw_fd(), iov, cmsgs, flags, None) {
            Ok(_) => Ok(()), // a datagram goes whole or not at all
            Err(Errno::EINTR) => continue,
            // No room, or no memory for the datagram right now: both pass.
            Err(Errno::EAGAIN | Errno::ENOBUFS | Errno::ENOMEM) => Err(SendError::WouldBlock),
            Err(Errno::EPIPE | Errno::ECONNRESET | Errno::ENOTCONN) => Err(SendError::Closed),
            Err(e) => Err(SendError::Io(e.into())),
        };
    }
}

/// The receiving half of one direction of a socket-transport connection:
/// reassembles messages of at most `max_message` payload bytes.
#[derive(Debug)]
pub struct SockRx {
    fd: Arc<OwnedFd>,
    buf: Vec<u8>,
    got: usize,
    /// Header of the message being assembled, once its first datagram is
    /// in.
    header: Option<MsgHeader>,
    /// What this side accepts of fds.
    terms: FdTerms,
    /// The fds that came with the message being assembled (its first
    /// datagram), until taken or the message is consumed (then reaped).
    fds: PeerFds,
}

impl SockRx {
    /// Receives on `fd`, messages up to `max_message` payload bytes (see
    /// [`SockTx::new`] for a socket used both ways). The buffer is
    /// allocated zeroed, so the memory of a large maximum is only
    /// committed as messages that large arrive.
    pub fn new(fd: impl Into<Arc<OwnedFd>>, max_message: usize) -> SockRx {
        SockRx {
            fd: fd.into(),
            buf: vec![0; MSG_HEADER_LEN + max_message],
            got: 0,
            header: None,
            terms: FdTerms::NONE,
            fds: PeerFds::default(),
        }
    }

    /// Accepts fds on messages, within `terms` (none by default: any is a
    /// violation).
    pub fn accept_fds(mut self, terms: FdTerms) -> SockRx {
        self.terms = terms;
        self
    }

    /// The fds of the complete message (the rest are reaped when it is
    /// consumed).
    pub fn take_fds(&mut self) -> PeerFds {
        std::mem::take(&mut self.fds)
    }

    /// The socket, to poll for readability.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The socket, given back (see [`SockTx::into_fd`]).
    pub fn into_fd(self) -> Arc<OwnedFd> {
        self.fd
    }

    /// Whether a complete message waits in [`message`](Self::message).
    pub fn ready(&self) -> bool {
        self.header
            .is_some_and(|h| self.got == MSG_HEADER_LEN + h.size as usize)
    }

    /// Reads datagrams until a whole message is in, without blocking.
    ///
    /// # Errors
    ///
    /// [`RecvError::Empty`] until then; [`RecvError::Closed`],
    /// [`RecvError::Framing`], [`RecvError::Io`].
    pub fn fill(&mut self) -> Result<(), RecvError> {
        while !self.ready() {
            let end = match self.header {
                Some(h) => MSG_HEADER_LEN + h.size as usize,
                None => self.buf.len(),
            };
            let room = &mut self.buf[self.got..end];
            // MSG_TRUNC: the datagram's real length, so an oversized one is
            // seen for what it is rather than silently cut.
            // Any fds the peer attached are reaped, never closed here
            // (`fdpass`).
            let first = self.header.is_none();
            let n = match ringlink_common::fdpass::recv_keeping(
                self.fd.as_fd(),
                room,
                MsgFlags::MSG_TRUNC,
            ) {
                Ok((0, _)) => return Err(RecvError::Closed), // no empty datagrams are sent
                Ok((n, fds)) => {
                    if !fds.is_empty() {
                        if !first {
                            return Err(self.fd_fault(FdFault::Stray));
                        }
                        self.fds = fds;
                    }
                    n
                }
                Err(e) => match e.raw_os_error().map(Errno::from_raw) {
                    Some(Errno::EINTR) => continue,
                    Some(Errno::EAGAIN) => return Err(RecvError::Empty),
                    Some(Errno::ECONNRESET) => return Err(RecvError::Closed),
                    _ => return Err(RecvError::Io(e)),
                },
            };
            if n > room.len() {
                return Err(self.violation(Framing::Overrun));
            }
            self.got += n;
            if self.header.is_none() {
                if self.got < MSG_HEADER_LEN {
                    return Err(self.violation(Framing::ShortDatagram));
                }
                let size = u32::from_le_bytes(self.buf[4..8].try_into().expect("4 bytes"));
                let total = MSG_HEADER_LEN.saturating_add(size as usize);
                if total > self.buf.len() {
                    return Err(self.violation(Framing::TooLarge));
                }
                if self.got > total {
                    return Err(self.violation(Framing::Overrun));
                }
                let header = MsgHeader::decode(&self.buf[..total])
                    .map_err(|e: WireError| self.violation(Framing::Header(e)))?;
                let (announced, came) = (usize::from(header.fds()), self.fds.len());
                if announced != came {
                    return Err(self.fd_fault(if came > announced {
                        FdFault::Stray
                    } else {
                        FdFault::Missing {
                            announced: header.fds(),
                            present: came as u16,
                        }
                    }));
                }
                if let Err(f) = crate::fds::check_received(&self.fds, &self.terms) {
                    return Err(self.fd_fault(f));
                }
                self.header = Some(header);
            }
        }
        Ok(())
    }

    /// The complete message, if [`ready`](Self::ready).
    pub fn message(&self) -> Option<(MsgHeader, &[u8])> {
        let h = self.header?;
        let total = MSG_HEADER_LEN + h.size as usize;
        (self.got == total).then(|| (h, &self.buf[MSG_HEADER_LEN..total]))
    }

    /// Drops the complete message, making room for the next (its fds
    /// not taken are reaped).
    pub fn consume(&mut self) {
        self.header = None;
        self.got = 0;
        drop(self.take_fds());
    }

    fn violation(&mut self, what: Framing) -> RecvError {
        self.consume();
        RecvError::Framing(what)
    }

    fn fd_fault(&mut self, what: FdFault) -> RecvError {
        self.consume();
        RecvError::Fds(what)
    }
}

/// The sending end of a socket-transport channel.
#[derive(Debug)]
pub struct SocketSender {
    tx: SockTx,
    /// What the peer accepts of fds.
    terms: FdTerms,
}

impl SocketSender {
    pub(crate) fn new(tx: SockTx, terms: FdTerms) -> SocketSender {
        SocketSender { tx, terms }
    }

    pub(crate) fn try_send(
        &mut self,
        header: &MsgHeader,
        parts: &[IoSlice<'_>],
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), crate::error::TrySendError> {
        crate::fds::check_sending(header, fds, &self.terms)?;
        self.tx.try_send(header, parts, fds).map_err(map_send)
    }

    pub(crate) fn fd_terms(&self) -> FdTerms {
        self.terms
    }

    /// Room for a message now: no tail waits and the kernel takes the
    /// next datagram (it does while the send queue is below the buffer);
    /// writability (`EPOLLOUT`) says when that may have changed.
    pub(crate) fn room_for(&mut self) -> bool {
        self.tx.flush().unwrap_or(true) && self.tx.can_send()
    }

    pub(crate) fn flush(&mut self) -> Result<bool, crate::error::TrySendError> {
        self.tx.flush().map_err(map_send)
    }

    pub(crate) fn tx(&self) -> &SockTx {
        &self.tx
    }

    pub(crate) fn into_fd(self) -> Arc<OwnedFd> {
        self.tx.into_fd()
    }
}

fn map_send(e: SendError) -> crate::error::TrySendError {
    match e {
        SendError::WouldBlock => crate::error::TrySendError::Full,
        SendError::Closed => crate::error::TrySendError::Closed,
        SendError::Io(e) => crate::error::TrySendError::Io(e),
    }
}

/// The reading end of a socket-transport channel.
#[derive(Debug)]
pub struct SocketReceiver {
    rx: SockRx,
    channel: ringlink_common::Channel,
    peer: ringlink_common::Peer,
    /// Read only after epoll said readable, until a read finds it dry
    /// (the server's edge-triggered loop); `None`: read whenever asked.
    readable: Option<bool>,
}

impl SocketReceiver {
    pub(crate) fn new(
        rx: SockRx,
        channel: ringlink_common::Channel,
        peer: ringlink_common::Peer,
    ) -> SocketReceiver {
        SocketReceiver {
            rx,
            channel,
            peer,
            readable: None,
        }
    }

    pub(crate) fn try_recv(
        &mut self,
    ) -> Result<Option<(MsgHeader, &mut SockRx)>, crate::error::TryRecvError> {
        if self.readable == Some(false) {
            return Ok(None);
        }
        match self.rx.fill() {
            Ok(()) => {
                let (header, _) = self.rx.message().expect("filled");
                crate::frame::check_flags(&header, self.peer, self.channel)
                    .map_err(crate::error::TryRecvError::Violation)?;
                Ok(Some((header, &mut self.rx)))
            }
            Err(RecvError::Empty) => {
                if self.readable.is_some() {
                    self.readable = Some(false);
                }
                Ok(None)
            }
            Err(RecvError::Closed) => Err(crate::error::TryRecvError::Closed),
            Err(RecvError::Framing(error)) => Err(crate::error::TryRecvError::Violation(
                ringlink_common::Violation::Framing {
                    by: self.peer,
                    channel: self.channel,
                    error,
                },
            )),
            Err(RecvError::Fds(fault)) => Err(crate::error::TryRecvError::Violation(
                ringlink_common::Violation::Fds {
                    by: self.peer,
                    channel: self.channel,
                    fault,
                },
            )),
            Err(RecvError::Io(e)) => Err(crate::error::TryRecvError::Io(e)),
        }
    }

    pub(crate) fn mark_readable(&mut self) {
        self.readable = Some(true);
    }

    /// Whether epoll said readable and no read has found it dry since
    /// (an edge-driven receiver with work left); never for a receiver
    /// read whenever asked (its fd is polled level-triggered).
    pub(crate) fn left_readable(&self) -> bool {
        self.readable == Some(true)
    }

    pub(crate) fn rx(&self) -> &SockRx {
        &self.rx
    }

    pub(crate) fn into_fd(self) -> Arc<OwnedFd> {
        self.rx.into_fd()
    }
}

/// Memory the kernel charges to `fd`'s send buffer (`SIOCOUTQ`): the
/// datagrams the peer has not read, with their overhead. `None` if the
/// kernel does not say.
pub(crate) fn send_queue_bytes(fd: BorrowedFd<'_>) -> Option<usize> {
    let mut outq: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one int through the pointer, which points
    // to a live local int; the fd is borrowed, so open.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), SIOCOUTQ, &mut outq) };
    (r == 0).then(|| usize::try_from(outq).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(size: usize, seq: u64) -> MsgHeader {
        MsgHeader {
            id: 7,
            size: size as u32,
            error: 0,
            flags: 0,
            seq,
        }
    }

    fn recv_one(rx: &mut SockRx) -> (MsgHeader, Vec<u8>) {
        loop {
            match rx.fill() {
                Ok(()) => break,
                Err(RecvError::Empty) => std::thread::yield_now(),
                Err(e) => panic!("recv: {e:?}"),
            }
        }
        let (h, p) = rx.message().expect("ready");
        let out = (h, p.to_vec());
        rx.consume();
        out
    }

    #[test]
    fn small_and_fragmented_messages_arrive_whole_and_in_order() {
        let (a, b) = pair().expect("pair");
        let mut tx = SockTx::new(a).expect("tx");
        let max = 4 << 20;
        let mut rx = SockRx::new(b, max);
        let sizes = [
            0usize,
            1,
            100,
            tx.fragment - MSG_HEADER_LEN,
            tx.fragment,
            3 * tx.fragment + 5,
            max,
        ];
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            for _ in 0..7 {
                out.push(recv_one(&mut rx));
            }
            out
        });
        for (i, &n) in sizes.iter().enumerate() {
            let payload: Vec<u8> = (0..n).map(|j| (j * 31 + i) as u8).collect();
            // Two slices, split off-centre, to exercise gathering.
            let cut = n / 3;
            let parts = [IoSlice::new(&payload[..cut]), IoSlice::new(&payload[cut..])];
            loop {
                match tx.try_send(&header(n, i as u64 + 1), &parts, &[]) {
                    Ok(()) => break,
                    Err(SendError::WouldBlock) => std::thread::yield_now(),
                    Err(e) => panic!("send: {e:?}"),
                }
            }
        }
        while !tx.flush().expect("flush") {
            std::thread::yield_now();
        }
        let got = reader.join().expect("reader");
        for (i, (h, p)) in got.iter().enumerate() {
            assert_eq!(h.seq, i as u64 + 1);
            assert_eq!(p.len(), sizes[i]);
            assert!(p.iter().enumerate().all(|(j, &b)| b == (j * 31 + i) as u8));
        }
    }

    #[test]
    fn a_full_socket_refuses_whole_messages_and_keeps_a_tail() {
        let (a, b) = pair().expect("pair");
        let mut tx = SockTx::new(a).expect("tx");
        let mut rx = SockRx::new(b, 1 << 20);
        let payload = vec![5u8; 1000];
        let mut sent = 0u64;
        loop {
            match tx.try_send(&header(1000, sent + 1), &[IoSlice::new(&payload)], &[]) {
                Ok(()) => sent += 1,
                Err(SendError::WouldBlock) => break,
                Err(e) => panic!("{e:?}"),
            }
        }
        assert!(sent > 0 && tx.queued() > 0);
        for seq in 1..=sent {
            let (h, p) = recv_one(&mut rx);
            assert_eq!((h.seq, p.len()), (seq, 1000));
        }
        assert!(matches!(rx.fill(), Err(RecvError::Empty)));
    }

    #[test]
    fn closed_and_hostile_peers_are_reported() {
        // A datagram shorter than a header.
        let (a, b) = pair().expect("pair");
        let mut rx = SockRx::new(b, 1024);
        socket::send(a.as_raw_fd(), b"abc", MsgFlags::empty()).expect("send");
        assert!(matches!(rx.fill(), Err(RecvError::Framing(_))));
        // A size above the maximum.
        let mut h = [0u8; MSG_HEADER_LEN];
        header(5000, 1).encode_into(&mut h);
        socket::send(a.as_raw_fd(), &h, MsgFlags::empty()).expect("send");
        assert!(matches!(rx.fill(), Err(RecvError::Framing(_))));
        // A datagram longer than its header says.
        let mut m = vec![0u8; MSG_HEADER_LEN + 20];
        header(10, 1).encode_into(&mut m);
        socket::send(a.as_raw_fd(), &m, MsgFlags::empty()).expect("send");
        assert!(matches!(rx.fill(), Err(RecvError::Framing(_))));
        // Nonzero reserved field.
        let mut m = vec![0u8; MSG_HEADER_LEN];
        header(0, 1).encode_into(&mut m);
        m[12] = 1;
        socket::send(a.as_raw_fd(), &m, MsgFlags::empty()).expect("send");
        assert!(matches!(rx.fill(), Err(RecvError::Framing(_))));
        // A good one still gets through, then the close.
        let mut m = vec![0u8; MSG_HEADER_LEN + 3];
        header(3, 9).encode_into(&mut m);
        socket::send(a.as_raw_fd(), &m, MsgFlags::empty()).expect("send");
        drop(a);
        let (h, p) = recv_one(&mut rx);
        assert_eq!((h.seq, p.len()), (9, 3));
        assert!(matches!(rx.fill(), Err(RecvError::Closed)));
        // And a closed peer refuses sends.
        let (a, b) = pair().expect("pair");
        drop(b);
        let mut tx = SockTx::new(a).expect("tx");
        assert!(matches!(
            tx.try_send(&header(0, 1), &[], &[]),
            Err(SendError::Closed)
        ));
    }
}
