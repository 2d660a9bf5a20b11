//! Fds inside messages (`docs/PROTOCOL.md` §3.1), for both flavours.
//!
//! Each side announces in the handshake what it accepts ([`FdTerms`]:
//! fds per message, fds in flight per channel, directories or not), and a
//! sender keeps to its peer's terms; a receiver checks every fd against
//! its own and treats a peer that breaks them as broken
//! ([`Violation::Fds`]), closing what came on the reaper thread, never in
//! its own (`fdpass::reap`).
//!
//! - Over the socket transport, a message's fds ride on its first
//!   datagram (`SCM_RIGHTS`), and arrive with it.
//! - Over shared memory, the record cannot carry them: the sender sends
//!   them on the connection's stream socket, attached to one byte that
//!   names the channel ([`tag`]), before it publishes the message, whose
//!   header counts them. The receiver files what the stream brings in an
//!   [`FdInbox`], one queue per channel, and a message takes its count
//!   from the front of its channel's queue. The sender counts what it
//!   sent on a ring and the reader has not yet released ([`FdOutbox`]),
//!   and waits for room (as for a full ring) rather than put more than
//!   the peer's in-flight limit in its queue.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use ringlink_common::fdpass::{self, PeerFds};
use ringlink_common::wire::{FdTerms, MsgHeader};
use ringlink_common::{Channel, FdFault, Peer, Violation};

use crate::error::TrySendError;

/// Both sides' terms on one connection: what this side accepts, and what
/// its peer does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdAgreement {
    /// What this side accepts (announced to the peer).
    pub ours: FdTerms,
    /// What the peer accepts (it announced).
    pub theirs: FdTerms,
}

/// The byte that carries a ring message's fds on the stream socket:
/// `0x80` plus the channel's number (request 0, response 1, event 2).
/// Like every byte on the stream, it is also a wake-up.
pub fn tag(channel: Channel) -> u8 {
    0x80 | index(channel) as u8
}

fn index(channel: Channel) -> usize {
    match channel {
        Channel::Request => 0,
        Channel::Response => 1,
        Channel::Event => 2,
    }
}

/// The channel a tag byte names, among those `by` sends on.
fn tagged(byte: u8, by: Peer) -> Option<Channel> {
    let channel = match byte {
        0x80 => Channel::Request,
        0x81 => Channel::Response,
        0x82 => Channel::Event,
        _ => return None,
    };
    let sends = match by {
        Peer::Client => channel == Channel::Request,
        Peer::Server => channel != Channel::Request,
    };
    sends.then_some(channel)
}

/// Whether a message of this kind may carry fds: requests (numbered or
/// one-way), responses and events; not calls, replies or lagged notices.
pub fn may_carry(header: &MsgHeader) -> bool {
    !(header.is_call() || header.is_reply() || header.is_lagged())
}

/// Checks `n` fds of one message against `terms`.
fn check_count(n: usize, terms: &FdTerms) -> Result<(), FdFault> {
    if n == 0 {
        return Ok(());
    }
    if !terms.accepts_any() {
        return Err(FdFault::NotAccepted);
    }
    if n > usize::from(terms.per_message) {
        return Err(FdFault::PerMessage {
            count: u16::try_from(n).unwrap_or(u16::MAX),
            max: terms.per_message,
        });
    }
    Ok(())
}

/// Checks fds that came against this side's `terms`: their number, and
/// their kinds (directories and `O_PATH` fds, unless accepted).
///
/// # Errors
///
/// The fault; the caller drops `fds` (reaped).
pub fn check_received(fds: &PeerFds, terms: &FdTerms) -> Result<(), FdFault> {
    check_count(fds.len(), terms)?;
    if !terms.directories {
        for fd in fds.iter() {
            match fdpass::refusable_kind(fd) {
                Ok(None) => {}
                Ok(Some(kind)) => return Err(FdFault::Kind(kind)),
                // An fd we were just given cannot be closed under us;
                // one the kernel will not describe is not taken.
                Err(_) => return Err(FdFault::NotAccepted),
            }
        }
    }
    Ok(())
}

/// Checks fds about to be sent on a message with `header` against the
/// peer's `terms`, before anything is sent.
///
/// # Errors
///
/// [`TrySendError::FdsNotAccepted`] or [`TrySendError::FdRefused`].
pub fn check_sending(
    header: &MsgHeader,
    fds: &[BorrowedFd<'_>],
    terms: &FdTerms,
) -> Result<(), TrySendError> {
    if fds.is_empty() {
        return Ok(());
    }
    let max = if may_carry(header) {
        usize::from(terms.per_message)
    } else {
        0
    };
    if fds.len() > max {
        return Err(TrySendError::FdsNotAccepted {
            count: fds.len(),
            max,
        });
    }
    if !terms.directories {
        for (index, fd) in fds.iter().enumerate() {
            match fdpass::refusable_kind(*fd) {
                Ok(None) => {}
                Ok(Some(kind)) => return Err(TrySendError::FdRefused { index, kind }),
                Err(e) => return Err(TrySendError::Io(e)),
            }
        }
    }
    Ok(())
}

/// Sends `byte` with `fds` attached on `sock`, never waiting.
///
/// # Errors
///
/// `Full` when the socket takes no more now, `Closed` when the peer is
/// gone, `Io` otherwise (`ETOOMANYREFS`: this user has more fds in
/// flight than its fd limit).
pub fn send_attached(
    sock: BorrowedFd<'_>,
    byte: u8,
    fds: &[BorrowedFd<'_>],
) -> Result<(), TrySendError> {
    let raw: Vec<i32> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let cmsgs = [ControlMessage::ScmRights(&raw)];
    let iov = [IoSlice::new(std::slice::from_ref(&byte))];
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
    loop {
        return match sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsgs, flags, None) {
            Ok(_) => Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::ENOBUFS) => Err(TrySendError::Full),
            Err(nix::errno::Errno::EPIPE | nix::errno::Errno::ECONNRESET) => {
                Err(TrySendError::Closed)
            }
            // The peer's socket refuses fds (SO_PASSRIGHTS off): it takes
            // none, whatever its terms said.
            Err(nix::errno::Errno::EPERM) => Err(TrySendError::FdsNotAccepted {
                count: fds.len(),
                max: 0,
            }),
            Err(e) => Err(TrySendError::Io(io::Error::from(e))),
        };
    }
}

/// The fds a peer sent on the stream socket ahead of their ring messages,
/// one queue per channel, until their messages take them. Shared by
/// whoever reads the stream (the owner's drain) and the ring receivers.
/// What is left when it is dropped is reaped.
#[derive(Debug)]
pub struct FdInbox {
    /// What this side accepts.
    terms: FdTerms,
    /// Who sends the fds.
    by: Peer,
    queues: Mutex<[VecDeque<OwnedFd>; 3]>,
    /// Held by whoever reads the stream for this inbox, from the read to
    /// the filing: a receiver that finds its fds missing waits for a read
    /// under way to file them before it reads on.
    reading: Mutex<()>,
    /// A receiver read the stream for its fds ([`took_wakeups`]): the
    /// bytes it took were wake-ups too, meant perhaps for another ring or
    /// another waiter, whom the stream's owner must tell.
    ///
    /// [`took_wakeups`]: FdInbox::took_wakeups
    took: std::sync::atomic::AtomicBool,
}

impl FdInbox {
    /// An inbox for fds `by` sends, under this side's `terms`.
    pub fn new(terms: FdTerms, by: Peer) -> Arc<FdInbox> {
        Arc::new(FdInbox {
            terms,
            by,
            queues: Mutex::new(Default::default()),
            reading: Mutex::new(()),
            took: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Held while the stream is read for this inbox.
    pub(crate) fn reading(&self) -> std::sync::MutexGuard<'_, ()> {
        self.reading.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This side's terms.
    pub fn terms(&self) -> FdTerms {
        self.terms
    }

    fn fault(&self, channel: Channel, fault: FdFault) -> Violation {
        Violation::Fds {
            by: self.by,
            channel,
            fault,
        }
    }

    /// Files `fds`, which came with `byte` (the last byte of the read
    /// that brought them).
    ///
    /// # Errors
    ///
    /// The violation: fds where none are accepted, a byte that names no
    /// channel the peer sends on, too many for a message or in flight, a
    /// refused kind. The fds are reaped.
    pub fn deliver(&self, byte: u8, fds: PeerFds) -> Result<(), Violation> {
        let default = match self.by {
            Peer::Client => Channel::Request,
            Peer::Server => Channel::Response,
        };
        if !self.terms.accepts_any() {
            return Err(self.fault(default, FdFault::NotAccepted));
        }
        let Some(channel) = tagged(byte, self.by) else {
            return Err(self.fault(default, FdFault::Stray));
        };
        check_received(&fds, &self.terms).map_err(|f| self.fault(channel, f))?;
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let queue = &mut queues[index(channel)];
        if queue.len() + fds.len() > self.terms.in_flight as usize {
            return Err(self.fault(
                channel,
                FdFault::InFlight {
                    max: self.terms.in_flight,
                },
            ));
        }
        queue.extend(fds.take());
        Ok(())
    }

    /// The first `n` fds filed for `channel`, if that many came.
    pub fn take(&self, channel: Channel, n: usize) -> Option<PeerFds> {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let queue = &mut queues[index(channel)];
        (queue.len() >= n).then(|| PeerFds::new(queue.drain(..n).collect()))
    }

    /// Whether a receiver read wake-ups off the stream while fetching its
    /// fds since the last call: the owner then does what it does when it
    /// reads wake-ups itself (looks at every ring again, wakes the
    /// threads waiting for room, does not sleep on what it has armed).
    pub fn took_wakeups(&self) -> bool {
        // A load first: the swap, a write, only when there is news (the
        // server asks once per connection per sweep).
        self.took.load(std::sync::atomic::Ordering::Relaxed)
            && self.took.swap(false, std::sync::atomic::Ordering::AcqRel)
    }

    pub(crate) fn mark_took(&self) {
        self.took.store(true, std::sync::atomic::Ordering::Release);
    }

    /// How many are filed for `channel`.
    pub fn filed(&self, channel: Channel) -> usize {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())[index(channel)].len()
    }
}

impl Drop for FdInbox {
    fn drop(&mut self) {
        let queues = self.queues.get_mut().unwrap_or_else(|e| e.into_inner());
        for q in queues.iter_mut() {
            fdpass::reap(q.drain(..));
        }
    }
}

/// A ring sender's side of fds: the stream socket they go on, the peer's
/// terms, and what was sent on this ring that the reader has not yet
/// released.
#[derive(Debug)]
pub struct FdOutbox {
    stream: Arc<UnixStream>,
    terms: FdTerms,
    channel: Channel,
    /// (end of the message's record, its fds), oldest first.
    sent: VecDeque<(u64, u32)>,
    in_flight: u32,
}

impl FdOutbox {
    /// Sends on `stream` for `channel`, to a peer with `terms`.
    pub fn new(stream: Arc<UnixStream>, terms: FdTerms, channel: Channel) -> FdOutbox {
        FdOutbox {
            stream,
            terms,
            channel,
            sent: VecDeque::new(),
            in_flight: 0,
        }
    }

    /// The peer's terms.
    pub fn terms(&self) -> &FdTerms {
        &self.terms
    }

    /// Whether `n` more fds stay within the peer's in-flight limit, once
    /// the messages that end at or before the reader's position are
    /// counted out. `released` reads that position (the reader's line in
    /// the ring header): only when the count kept here says no, so that a
    /// sender within its limit reads nothing of the reader's.
    pub fn room_for(&mut self, n: usize, released: impl FnOnce() -> u64) -> bool {
        let limit = self.terms.in_flight as usize;
        if self.in_flight as usize + n <= limit {
            return true;
        }
        let released = released();
        while let Some(&(end, count)) = self.sent.front() {
            // Positions only grow (wrapping): `end` is behind `released`
            // when the distance from it is under half the space.
            if released.wrapping_sub(end) < 1 << 63 {
                self.in_flight -= count;
                self.sent.pop_front();
            } else {
                break;
            }
        }
        self.in_flight as usize + n <= limit
    }

    /// Sends `fds` ahead of a message about to be published.
    ///
    /// # Errors
    ///
    /// As [`send_attached`].
    pub fn send(&self, fds: &[BorrowedFd<'_>]) -> Result<(), TrySendError> {
        use std::os::fd::AsFd;
        send_attached(self.stream.as_fd(), tag(self.channel), fds)
    }

    /// The message carrying `n` fds was published; its record ends at
    /// `end`.
    pub fn published(&mut self, end: u64, n: usize) {
        self.sent.push_back((end, n as u32));
        self.in_flight += n as u32;
    }
}
