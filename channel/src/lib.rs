//! ringlink's channel layer: what carries a connection's messages,
//! under both roles (`ringlink-ipcs` and `ringlink-ipcc`).
//!
//! - [`frame`]: a message's 24-byte header read and checked against the
//!   negotiated maximum, once for every transport and role;
//! - the transports ("flavours"), each in a file of its own: [`ring`]
//!   (shared-memory rings, `ringlink-ringbuf`) and [`socket`]
//!   (`SOCK_SEQPACKET` sockets, with fragmentation); [`Sender`] and
//!   [`Receiver`] are the one seam the roles use, and this file is the
//!   only place that dispatches on the flavour (as crossbeam-channel
//!   dispatches its flavours only in `channel.rs`);
//! - [`set`]: a connection's three channels (request, response, event):
//!   their order on the wire, their names, their sizes, made by the server
//!   ([`set::offer`]) and opened by the client ([`set::open`]) from one
//!   definition;
//! - [`named`]: rings as files in a directory, opened by path;
//! - [`stream`]: the connection's stream socket after the handshake
//!   (wake-ups, flow-control levels, liveness);
//! - [`wait`]: polling with deadlines.
//!
//! Adding a transport means adding a flavour file here, its variants in
//! [`Sender`] and [`Receiver`], and its making and opening in [`set`];
//! the roles do not change.
#![deny(unsafe_code)]

use std::io::IoSlice;
use std::os::fd::{BorrowedFd, OwnedFd};

use ringlink_common::fdpass::PeerFds;
use std::sync::Arc;

use ringlink_common::wire::MsgHeader;
use ringlink_ringbuf::wake::{Fenced, SleepPrep};
use ringlink_ringbuf::ReadGrant;

mod error;
pub mod fds;
pub mod frame;
pub mod named;
pub mod qb;
pub mod ring;
pub mod set;
pub mod socket;
pub mod stream;
pub mod wait;

pub use error::{TryRecvError, TrySendError};
use qb::shm::{QbShmReceiver, QbShmSender};
use qb::socket::{QbSockReceiver, QbSockSender};
use ring::{RingReceiver, RingSender};
use socket::{SockRx, SocketReceiver, SocketSender};

/// The sending end of a channel, whichever the transport.
#[derive(Debug)]
pub enum Sender {
    /// A ring in shared memory.
    Ring(RingSender),
    /// A `SOCK_SEQPACKET` socket.
    Socket(SocketSender),
    /// A libqb ring.
    QbShm(QbShmSender),
    /// A libqb datagram socket.
    QbSocket(QbSockSender),
}

/// Sends in a batch ([`Sender::batch`]); the reader is woken, if it
/// sleeps, when the batch is dropped (forgetting it leaves the batch
/// open, and the reader of this channel unwoken: see
/// `ringlink_ringbuf::Producer::begin_batch`).
#[derive(Debug)]
#[must_use = "the batch ends when this is dropped"]
pub struct Batch<'a>(&'a mut Sender);

impl Batch<'_> {
    /// [`Sender::try_send_with_fds`], in the batch.
    ///
    /// # Errors
    ///
    /// As [`Sender::try_send_with_fds`].
    #[inline]
    pub fn try_send_with_fds(
        &mut self,
        header: MsgHeader,
        parts: &[IoSlice<'_>],
        max: usize,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), TrySendError> {
        self.0.try_send_with_fds(header, parts, max, fds)
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        if let Sender::Ring(r) = self.0 {
            r.producer().end_batch();
        }
    }
}

/// A message reserved in a ring ([`Sender::try_reserve`]), its payload
/// to be written in place; nothing is sent until it is committed.
#[derive(Debug)]
#[must_use = "nothing is sent until the reservation is committed"]
pub struct Reserved {
    ring: ringlink_ringbuf::Reservation,
    /// Written into the record at the commit.
    header: MsgHeader,
}

impl Reserved {
    /// The message's header, as it will be sent.
    pub fn header(&self) -> &MsgHeader {
        &self.header
    }

    /// Payload bytes reserved.
    pub fn len(&self) -> usize {
        self.header.size as usize
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

const NOT_RESERVED_HERE: &str = "a reservation used on a sender that did not make it";

/// The payload length of `parts`, checked against `max`.
#[inline]
fn checked_len(parts: &[IoSlice<'_>], max: usize) -> Result<u32, TrySendError> {
    match ringlink_common::payload_len(parts, max) {
        Ok(len) => Ok(len as u32),
        Err(ringlink_common::Error::MessageTooLarge { len, max }) => {
            Err(TrySendError::TooLarge { len, max })
        }
        Err(_) => unreachable!("payload_len fails only over the maximum"),
    }
}

impl Sender {
    /// Sends one message (`header`'s `size` is set here), without
    /// waiting. The payload is checked against `max`, the negotiated
    /// maximum, before anything is written.
    ///
    /// # Errors
    ///
    /// [`TrySendError`]; `TooLarge` over `max`.
    #[inline]
    pub fn try_send(
        &mut self,
        header: MsgHeader,
        parts: &[IoSlice<'_>],
        max: usize,
    ) -> Result<(), TrySendError> {
        self.try_send_with_fds(header, parts, max, &[])
    }

    /// As [`try_send`](Self::try_send), with `fds` carried by the message
    /// (its header counts them): checked against the peer's terms first
    /// (how many, and their kinds), and sent only with the message.
    ///
    /// # Errors
    ///
    /// As [`try_send`](Self::try_send); `FdsNotAccepted` and `FdRefused`
    /// when the peer's terms do not take them (libqb's transports take
    /// none).
    #[inline]
    pub fn try_send_with_fds(
        &mut self,
        mut header: MsgHeader,
        parts: &[IoSlice<'_>],
        max: usize,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), TrySendError> {
        header.size = checked_len(parts, max)?;
        match self {
            Sender::Ring(r) => r.try_send(&header, parts, fds),
            Sender::Socket(s) => s.try_send(&header, parts, fds),
            Sender::QbShm(_) | Sender::QbSocket(_) if !fds.is_empty() => {
                Err(TrySendError::FdsNotAccepted {
                    count: fds.len(),
                    max: 0,
                })
            }
            Sender::QbShm(q) => q.try_send(&header, parts),
            Sender::QbSocket(q) => q.try_send(&header, parts),
        }
    }

    /// A batch of sends ([`Batch`]): over ringlink's rings, the sends
    /// check whether the reader sleeps once, when the batch ends, rather
    /// than each after its own message (a full fence each); elsewhere the
    /// same as sending one by one.
    pub fn batch(&mut self) -> Batch<'_> {
        if let Sender::Ring(r) = self {
            r.producer().begin_batch();
        }
        Batch(self)
    }

    /// What the peer accepts of fds on this channel's messages (libqb's:
    /// none).
    #[inline]
    pub fn fd_terms(&self) -> ringlink_common::wire::FdTerms {
        match self {
            Sender::Ring(r) => r.fd_terms(),
            Sender::Socket(s) => s.fd_terms(),
            Sender::QbShm(_) | Sender::QbSocket(_) => ringlink_common::wire::FdTerms::NONE,
        }
    }

    /// Whether [`try_reserve`](Self::try_reserve) writes in place:
    /// ringlink's rings do; sockets and libqb's transports need the
    /// payload in a buffer of the caller's (then [`try_send`](Self::try_send)).
    pub fn writes_in_place(&self) -> bool {
        matches!(self, Sender::Ring(_))
    }

    /// Sends a message of `len` payload bytes written in place, without
    /// waiting: once the ring has room, `fill` is called once on the
    /// payload's bytes in the ring (whatever they held before), then the
    /// message is published. `fill` is not called when nothing is sent.
    /// Only where [`writes_in_place`](Self::writes_in_place).
    ///
    /// # Errors
    ///
    /// As [`try_send`](Self::try_send) (`Full`: `fill` was not called);
    /// `Io(Unsupported)` for a sender that does not write in place.
    pub fn try_send_in_place(
        &mut self,
        mut header: MsgHeader,
        len: usize,
        max: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<(), TrySendError> {
        if len > max {
            return Err(TrySendError::TooLarge { len, max });
        }
        header.size = len as u32;
        match self {
            Sender::Ring(r) => r.try_send_in_place(&header, fill),
            _ => Err(TrySendError::Io(std::io::ErrorKind::Unsupported.into())),
        }
    }

    /// Reserves room for a message of `len` payload bytes to be written
    /// in place, without waiting (`header`'s `size` is set here; the
    /// header is written at the commit). The payload's bytes are then
    /// [`reserved_mut`](Self::reserved_mut) (whatever they held before),
    /// and the message goes with [`commit_reserved`](Self::commit_reserved);
    /// a reservation dropped unused sends nothing. It lasts until this
    /// sender sends anything else. Only where
    /// [`writes_in_place`](Self::writes_in_place).
    ///
    /// # Errors
    ///
    /// As [`try_send`](Self::try_send) (`Full`: nothing reserved);
    /// `Io(Unsupported)` for a sender that does not write in place.
    #[inline]
    pub fn try_reserve(
        &mut self,
        mut header: MsgHeader,
        len: usize,
        max: usize,
    ) -> Result<Reserved, TrySendError> {
        if len > max {
            return Err(TrySendError::TooLarge { len, max });
        }
        header.size = len as u32;
        match self {
            Sender::Ring(r) => Ok(Reserved {
                ring: r.try_reserve(header.size)?,
                header,
            }),
            _ => Err(TrySendError::Io(std::io::ErrorKind::Unsupported.into())),
        }
    }

    /// The payload bytes of a message [reserved](Self::try_reserve) here.
    ///
    /// # Panics
    ///
    /// If `reserved` is not this sender's, or this sender sent anything
    /// since it was made.
    #[inline]
    pub fn reserved(&self, reserved: &Reserved) -> &[u8] {
        match self {
            Sender::Ring(r) => r.reserved(&reserved.ring),
            _ => panic!("{NOT_RESERVED_HERE}"),
        }
    }

    /// The payload bytes of a message [reserved](Self::try_reserve) here,
    /// to write.
    ///
    /// # Panics
    ///
    /// As [`reserved`](Self::reserved).
    #[inline]
    pub fn reserved_mut(&mut self, reserved: &Reserved) -> &mut [u8] {
        match self {
            Sender::Ring(r) => r.reserved_mut(&reserved.ring),
            _ => panic!("{NOT_RESERVED_HERE}"),
        }
    }

    /// Sends a message [reserved](Self::try_reserve) here: it is
    /// published as its bytes stand.
    ///
    /// # Panics
    ///
    /// As [`reserved`](Self::reserved).
    #[inline]
    pub fn commit_reserved(&mut self, reserved: &Reserved) {
        match self {
            Sender::Ring(r) => r.commit_reserved(&reserved.ring, &reserved.header),
            _ => panic!("{NOT_RESERVED_HERE}"),
        }
    }

    /// Declares that request `seq` gets no response: a libqb sender, which
    /// puts responses in request order, stops holding later ones for it
    /// (and sends those that waited, if there is room). No effect on
    /// ringlink's transports, whose responses carry their request's
    /// number.
    ///
    /// # Errors
    ///
    /// As [`flush`](Self::flush).
    pub fn skip(&mut self, seq: u64) -> Result<(), TrySendError> {
        match self {
            Sender::QbShm(q) => q.skip(seq).map(drop),
            Sender::QbSocket(q) => q.skip(seq).map(drop),
            Sender::Ring(_) | Sender::Socket(_) => Ok(()),
        }
    }

    /// Whether a message of `len` payload bytes would go now (flow
    /// control: a server takes a request only when its answer fits).
    ///
    /// # Errors
    ///
    /// `Violation` if the peer corrupted the ring, `Closed`.
    pub fn room_for(&mut self, len: usize) -> Result<bool, TrySendError> {
        match self {
            Sender::Ring(r) => r.room_for(len),
            Sender::Socket(s) => Ok(s.room_for()),
            Sender::QbShm(q) => q.room_for(len),
            Sender::QbSocket(q) => Ok(q.room_for()),
        }
    }

    /// Whether a message of `len` payload bytes (and a full message's
    /// worth of fds) certainly fits now, by what the sender already knows,
    /// reading nothing the peer writes: a hint, kept by those who send
    /// under a lock for those who would otherwise take it to ask
    /// [`room_for`](Self::room_for). Only ringlink's rings to a peer that
    /// takes no fds ever say `true`; `false` means "ask".
    #[inline]
    pub fn surely_fits(&self, len: usize) -> bool {
        match self {
            Sender::Ring(r) => r.surely_fits(len),
            _ => false,
        }
    }

    /// Whether `n` more fds stay within the peer's in-flight limit on this
    /// channel now (ringlink's rings, where the sender counts what the
    /// reader has not released; elsewhere always). A sender refused for
    /// fds waits for the reader to release a message, as for room.
    #[inline]
    pub fn fd_room_for(&mut self, n: usize) -> bool {
        match self {
            Sender::Ring(r) => r.fd_room_for(n),
            _ => true,
        }
    }

    /// Sends what is left of the last message (a socket's tail; libqb:
    /// responses held for their turn, notification bytes owed): whether
    /// nothing is left. ringlink's rings have no tails.
    ///
    /// # Errors
    ///
    /// `Closed`, `Io`.
    pub fn flush(&mut self) -> Result<bool, TrySendError> {
        match self {
            Sender::Ring(_) => Ok(true),
            Sender::Socket(s) => s.flush(),
            Sender::QbShm(q) => q.flush_held(),
            Sender::QbSocket(q) => q.flush(),
        }
    }

    /// Whether the tail of a message waits to be sent.
    pub fn has_tail(&self) -> bool {
        match self {
            Sender::Ring(_) => false,
            Sender::Socket(s) => s.tx().has_pending(),
            Sender::QbShm(q) => q.has_tail(),
            Sender::QbSocket(q) => q.holding(),
        }
    }

    /// Bytes sent and not yet read by the peer (with a socket's unsent
    /// tail).
    pub fn queued(&self) -> usize {
        match self {
            Sender::Ring(r) => r.queued(),
            Sender::Socket(s) => s.tx().queued(),
            Sender::QbShm(q) => q.queued(),
            Sender::QbSocket(q) => q.held_bytes(),
        }
    }

    /// Messages sent and not yet read, where the transport counts them
    /// (libqb's: its ring's semaphore, its control file's counter).
    pub fn queued_messages(&self) -> Option<u64> {
        match self {
            Sender::QbShm(q) => Some(u64::from(q.ring().queued())),
            Sender::QbSocket(q) => Some(q.sent_unread()),
            Sender::Ring(_) | Sender::Socket(_) => None,
        }
    }

    /// The fd to poll for writability while waiting for room (sockets);
    /// `None` for rings, whose room comes as a wake-up on the stream.
    pub fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        match self {
            Sender::Ring(_) | Sender::QbShm(_) => None,
            Sender::Socket(s) => Some(s.tx().fd()),
            Sender::QbSocket(q) => Some(q.fd()),
        }
    }

    /// The sleeper's half of the wake-up handshake, for a sender about to
    /// wait for room (rings; the stream socket drained by its owner):
    /// whether it may sleep. Sockets: always (their fd says). libqb
    /// rings: always, but nothing will wake it ([`woken_by_peer`](Self::woken_by_peer)).
    pub fn prepare_sleep(&mut self) -> bool {
        match self {
            Sender::Ring(r) => r.producer().prepare_sleep(),
            Sender::Socket(_) | Sender::QbShm(_) | Sender::QbSocket(_) => true,
        }
    }

    /// Whether the peer says when it makes room (ringlink's rings: a
    /// wake-up; sockets: writability). A libqb peer does not: a sender
    /// waiting for room must look again every so often.
    pub fn woken_by_peer(&self) -> bool {
        !matches!(self, Sender::QbShm(_))
    }

    /// Lowers the waiting flag on waking (rings).
    pub fn lower_wake_flag(&mut self) {
        if let Sender::Ring(r) = self {
            r.producer().lower_wake_flag();
        }
    }

    /// Whether the channel was closed (rings: by either side; a socket's
    /// closing shows when it is used).
    #[inline]
    pub fn is_closed(&self) -> bool {
        match self {
            Sender::Ring(r) => r.is_closed(),
            Sender::Socket(_) | Sender::QbSocket(_) => false,
            Sender::QbShm(q) => q.ring().truncated(),
        }
    }

    /// Marks the channel closed from this side (rings; libqb's: this
    /// process leaves the ring's count of users).
    pub fn close(&mut self) {
        match self {
            Sender::Ring(r) => r.close(),
            Sender::QbShm(q) => q.ring().leave(),
            Sender::Socket(_) | Sender::QbSocket(_) => {}
        }
    }

    /// The socket, given back to be closed where its closing cannot hold
    /// anyone (sockets); `None` for rings.
    pub fn into_socket(self) -> Option<Arc<OwnedFd>> {
        match self {
            Sender::Ring(_) | Sender::QbShm(_) => None,
            Sender::Socket(s) => Some(s.into_fd()),
            Sender::QbSocket(q) => Some(q.into_fd()),
        }
    }
}

/// The receiving end of a channel, whichever the transport.
#[derive(Debug)]
pub enum Receiver {
    /// A ring in shared memory.
    Ring(RingReceiver),
    /// A `SOCK_SEQPACKET` socket.
    Socket(SocketReceiver),
    /// A libqb ring.
    QbShm(QbShmReceiver),
    /// A libqb datagram socket.
    QbSocket(QbSockReceiver),
}

/// What [`Receiver::try_recv_plain`] found.
#[derive(Debug)]
pub enum Plain<'a> {
    /// Nothing yet.
    Empty,
    /// A message of a ring channel that carries no fds: its header
    /// (checked as [`Incoming::header`]'s) and its record, in place; the
    /// payload is the record after
    /// [`MSG_HEADER_LEN`](ringlink_common::wire::MSG_HEADER_LEN) bytes
    /// ([`frame::payload`]), in memory the peer can write (validate it as
    /// any input, and read each value once). Released with the grant's
    /// `release`; dropped unreleased, it is received again.
    Message(MsgHeader, ReadGrant<'a>),
    /// Something for [`Receiver::try_recv`]: a message with fds, or
    /// anything on a socket or libqb channel (not looked at).
    Other,
}

/// A message received, in place (a ring record, or a socket's reassembly
/// buffer): its header and payload, until [`release`](Incoming::release)
/// gives its room back. Dropped unreleased, it is received again.
#[derive(Debug)]
pub struct Incoming<'a> {
    header: MsgHeader,
    body: Body<'a>,
}

#[derive(Debug)]
enum Body<'a> {
    Ring(ReadGrant<'a>, &'a mut PeerFds),
    Socket(&'a mut SockRx),
    Qb(&'a mut QbShmReceiver),
    QbSock(&'a mut QbSockReceiver),
}

impl Incoming<'_> {
    /// The message's header (checked: size, reserved field, maximum).
    #[inline]
    pub fn header(&self) -> MsgHeader {
        self.header
    }

    /// The payload. In a ring it lives in memory the peer can write: a
    /// peer breaking the protocol could change it while it is read, so
    /// validate it as any input, and read each value once.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        match &self.body {
            Body::Ring(g, _) => frame::payload(g),
            Body::Socket(rx) => rx.message().map(|(_, p)| p).unwrap_or(&[]),
            Body::Qb(r) => r.payload(),
            Body::QbSock(r) => r.payload(),
        }
    }

    /// The fds the message carries (as many as its header counts; checked
    /// against this side's terms), taken: those not taken by the time it
    /// is released are reaped.
    #[inline]
    pub fn take_fds(&mut self) -> PeerFds {
        match &mut self.body {
            Body::Ring(_, fds) => std::mem::take(*fds),
            Body::Socket(rx) => rx.take_fds(),
            Body::Qb(_) | Body::QbSock(_) => PeerFds::default(),
        }
    }

    /// Done with it: its room goes back to the peer (and any fds not
    /// taken are reaped).
    #[inline]
    pub fn release(self) {
        match self.body {
            Body::Ring(g, fds) => {
                g.release();
                drop(std::mem::take(fds));
            }
            Body::Socket(rx) => rx.consume(),
            Body::Qb(r) => r.release(),
            Body::QbSock(r) => r.release(),
        }
    }
}

impl Receiver {
    /// [`try_recv`](Self::try_recv)'s common case, for a caller on the
    /// path of a round trip: a ring channel's message without fds, viewed
    /// in place with nothing to move or match on the way
    /// ([`Plain::Message`]); [`Plain::Other`] for everything else, which
    /// `try_recv` then takes (the ring's record is read again).
    ///
    /// # Errors
    ///
    /// As [`try_recv`](Self::try_recv).
    #[inline]
    pub fn try_recv_plain(&mut self) -> Result<Plain<'_>, TryRecvError> {
        match self {
            Receiver::Ring(r) => r.try_recv_plain(),
            _ => Ok(Plain::Other),
        }
    }

    /// The next message, without waiting: `Ok(None)` if none is there
    /// (yet).
    ///
    /// # Errors
    ///
    /// [`TryRecvError`].
    #[inline]
    pub fn try_recv(&mut self) -> Result<Option<Incoming<'_>>, TryRecvError> {
        match self {
            Receiver::Ring(r) => Ok(r.try_recv()?.map(|(header, g, fds)| Incoming {
                header,
                body: Body::Ring(g, fds),
            })),
            Receiver::Socket(s) => Ok(s.try_recv()?.map(|(header, rx)| Incoming {
                header,
                body: Body::Socket(rx),
            })),
            Receiver::QbShm(q) => match q.try_recv()? {
                Some(header) => Ok(Some(Incoming {
                    header,
                    body: Body::Qb(q),
                })),
                None => Ok(None),
            },
            Receiver::QbSocket(q) => match q.try_recv()? {
                Some(header) => Ok(Some(Incoming {
                    header,
                    body: Body::QbSock(q),
                })),
                None => Ok(None),
            },
        }
    }

    /// The fd to poll for readability while waiting (sockets); `None`
    /// for rings, whose messages come with a wake-up on the stream.
    pub fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        match self {
            Receiver::Ring(_) | Receiver::QbShm(_) => None,
            Receiver::Socket(s) => Some(s.rx().fd()),
            Receiver::QbSocket(q) => Some(q.fd()),
        }
    }

    /// Whether something may be waiting without a system call to tell
    /// (rings: a record word is published at the reader's position;
    /// sockets: a message already reassembled, which polling would not
    /// show).
    #[inline]
    pub fn pending(&self) -> bool {
        match self {
            Receiver::Ring(r) => r.pending(),
            Receiver::Socket(s) => s.rx().ready(),
            Receiver::QbShm(q) => q.pending(),
            Receiver::QbSocket(q) => q.pending(),
        }
    }

    /// The sleeper's half of the wake-up handshake for one ring (the
    /// stream socket drained by its owner): whether it may sleep.
    /// Sockets: unless a message is already reassembled.
    pub fn prepare_sleep(&mut self) -> bool {
        match self {
            Receiver::Ring(r) => r.consumer().prepare_sleep(),
            Receiver::Socket(s) => !s.rx().ready(),
            // A libqb peer announces every message (a byte on the stream
            // socket, or the ring's semaphore): nothing to raise.
            Receiver::QbShm(q) => !q.pending(),
            Receiver::QbSocket(q) => !q.pending(),
        }
    }

    /// Raises the waiting flag in a batch (rings; see
    /// `ringlink_ringbuf::wake::prepare_sleep`).
    pub fn raise_wake_flag(&mut self, prep: &mut SleepPrep) {
        if let Receiver::Ring(r) = self {
            r.consumer().raise_wake_flag(prep);
        }
    }

    /// After the batch's fence: whether the caller may sleep (rings: the
    /// ring did not move; sockets: no message already reassembled, and
    /// an edge-driven one not left readable).
    pub fn confirm_wake(&mut self, fenced: &Fenced) -> bool {
        match self {
            Receiver::Ring(r) => r.consumer().confirm_wake(fenced),
            Receiver::Socket(s) => !s.left_readable() && !s.rx().ready(),
            Receiver::QbShm(q) => !q.pending(),
            Receiver::QbSocket(q) => !q.left_readable() && !q.pending(),
        }
    }

    /// Lets a ring's releases gather before the writer is told of them,
    /// up to an eighth of the ring (see
    /// `ringlink_ringbuf::Consumer::set_release_batch`): for a reader
    /// that drains in bursts and calls
    /// [`publish_released`](Self::publish_released) whenever it stops
    /// with messages left (ringlink's server, on request rings). Other
    /// transports: nothing.
    pub fn batch_releases(&mut self) {
        if let Receiver::Ring(r) = self {
            let c = r.consumer();
            let bytes = c.capacity() / 8;
            c.set_release_batch(bytes);
        }
    }

    /// Tells the writer of the room the messages read so far freed, if
    /// [`batch_releases`](Self::batch_releases) kept some back (rings).
    pub fn publish_released(&mut self) {
        if let Receiver::Ring(r) = self {
            r.consumer().publish_released();
        }
    }

    /// Lowers the waiting flag on waking (rings).
    pub fn lower_wake_flag(&mut self) {
        if let Receiver::Ring(r) = self {
            r.consumer().lower_wake_flag();
        }
    }

    /// An edge-driven socket (the server's loop, on `EPOLLET`): read only
    /// after this, until a read finds it dry. No effect on rings.
    pub fn mark_readable(&mut self) {
        match self {
            Receiver::Socket(s) => s.mark_readable(),
            Receiver::QbSocket(q) => q.mark_readable(),
            _ => {}
        }
    }

    /// Whether the channel was closed (rings; see [`Sender::is_closed`]).
    #[inline]
    pub fn is_closed(&self) -> bool {
        match self {
            Receiver::Ring(r) => r.is_closed(),
            Receiver::Socket(_) | Receiver::QbSocket(_) => false,
            Receiver::QbShm(q) => q.is_closed(),
        }
    }

    /// Marks the channel closed from this side (rings; libqb's: this
    /// process leaves the ring's count of users).
    pub fn close(&mut self) {
        match self {
            Receiver::Ring(r) => r.close(),
            Receiver::QbShm(q) => q.ring().leave(),
            Receiver::Socket(_) | Receiver::QbSocket(_) => {}
        }
    }

    /// Waits, up to `deadline`, for a libqb ring's semaphore to count a
    /// message (a libqb server signals its responses no other way):
    /// whether one is counted. Other receivers: whether one is pending.
    pub fn wait_counted(&self, deadline: Option<std::time::Instant>) -> bool {
        match self {
            Receiver::QbShm(q) => q.pending() || q.ring().wait_queued(deadline),
            _ => self.pending(),
        }
    }

    /// Publishes a value in the ring header's user word and wakes the
    /// producer if it waits (rings; the server's flow-control level on
    /// the request ring). Sockets: nothing (the level goes on the stream).
    pub fn publish_user_word(&mut self, value: u32) {
        match self {
            Receiver::Ring(r) => r.consumer().publish_user_word(value),
            // libqb's flow-control word, read by the client at each send.
            Receiver::QbShm(q) => q.ring().set_fc(value as i32),
            // In the control file, which the server side holds.
            Receiver::Socket(_) | Receiver::QbSocket(_) => {}
        }
    }

    /// The socket, given back (see [`Sender::into_socket`]).
    pub fn into_socket(self) -> Option<Arc<OwnedFd>> {
        match self {
            Receiver::Ring(_) | Receiver::QbShm(_) => None,
            Receiver::Socket(s) => Some(s.into_fd()),
            Receiver::QbSocket(q) => Some(q.into_fd()),
        }
    }
}
