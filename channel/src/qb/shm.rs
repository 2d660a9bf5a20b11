//! libqb's shared-memory flavour: a channel is a libqb ring
//! (`ringlink_ringbuf::qb`), a message one chunk beginning with libqb's
//! header; a request is announced by one byte on the connection's
//! stream socket, an event too, a response only by the ring's semaphore
//! (`docs/LIBQB.md`).

use std::io::IoSlice;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use ringlink_common::qb::{RequestHeader, ResponseHeader, REQUEST_HEADER_LEN, RESPONSE_HEADER_LEN};
use ringlink_common::wire::MsgHeader;
use ringlink_common::{Channel, Peer, Violation};
use ringlink_ringbuf::qb::{QbCorruption, QbRing};

use crate::error::{TryRecvError, TrySendError};
use crate::qb::order::{Ordered, Out};
use crate::qb::Notify;

/// The violation a corrupt libqb ring is.
pub(crate) fn corrupt(by: Peer, channel: Channel, c: QbCorruption) -> Violation {
    Violation::CorruptQbRing {
        by,
        channel,
        corruption: c,
    }
}

/// Which header this channel's messages carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Header {
    /// 16 bytes, `{id, size}`: requests.
    Request,
    /// 24 bytes, `{id, size, error}`: responses and events.
    Response,
}

impl Header {
    pub(crate) fn len(self) -> usize {
        match self {
            Header::Request => REQUEST_HEADER_LEN,
            Header::Response => RESPONSE_HEADER_LEN,
        }
    }

    /// The header bytes of a message of `len` payload bytes.
    pub(crate) fn encode(
        self,
        h: &MsgHeader,
        len: usize,
        out: &mut [u8; RESPONSE_HEADER_LEN],
    ) -> usize {
        let size = (self.len() + len) as i32;
        match self {
            Header::Request => {
                out[..REQUEST_HEADER_LEN]
                    .copy_from_slice(&RequestHeader { id: h.id, size }.encode());
            }
            Header::Response => {
                *out = ResponseHeader {
                    id: h.id,
                    size,
                    error: h.error,
                }
                .encode();
            }
        }
        self.len()
    }
}

/// The writing end of a libqb ring.
#[derive(Debug)]
pub struct QbShmSender {
    inner: Ordered<ShmOut>,
}

/// Where a libqb ring sender's messages go.
#[derive(Debug)]
pub(crate) struct ShmOut {
    ring: QbRing,
    header: Header,
    /// Announces each message on the stream socket (requests, events).
    notify: Option<Notify>,
    channel: Channel,
    peer: Peer,
}

impl Out for ShmOut {
    fn write(&mut self, h: &MsgHeader, parts: &[IoSlice<'_>]) -> Result<bool, TrySendError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut head = [0u8; RESPONSE_HEADER_LEN];
        let n = self.header.encode(h, len, &mut head);
        let mut all = Vec::with_capacity(parts.len() + 1);
        all.push(IoSlice::new(&head[..n]));
        all.extend(parts.iter().map(|p| IoSlice::new(p)));
        match self.ring.try_write(&all) {
            Ok(true) => {
                if let Some(n) = &mut self.notify {
                    n.one_more();
                }
                Ok(true)
            }
            Ok(false) => Ok(false),
            Err(c) => Err(TrySendError::Violation(corrupt(self.peer, self.channel, c))),
        }
    }

    fn pay(&mut self) -> bool {
        // Bytes owed from before go first (never dropped: a libqb peer
        // reads one per message, and waits for it).
        self.notify.as_mut().is_none_or(|n| {
            n.pay();
            n.paid()
        })
    }
}

impl QbShmSender {
    pub(crate) fn new(
        ring: QbRing,
        header: Header,
        notify: Option<Arc<UnixStream>>,
        ordered: bool,
        channel: Channel,
        peer: Peer,
    ) -> QbShmSender {
        let out = ShmOut {
            ring,
            header,
            notify: notify.map(Notify::new),
            channel,
            peer,
        };
        QbShmSender {
            inner: Ordered::new(out, ordered),
        }
    }

    pub(crate) fn ring(&self) -> &QbRing {
        &self.inner.out.ring
    }

    /// One message (see [`Ordered::send`]).
    pub(crate) fn try_send(
        &mut self,
        h: &MsgHeader,
        parts: &[IoSlice<'_>],
    ) -> Result<(), TrySendError> {
        self.inner.send(h, parts)
    }

    /// Sends the held responses whose turn came, and the owed bytes:
    /// whether none is left.
    pub(crate) fn flush_held(&mut self) -> Result<bool, TrySendError> {
        self.inner.flush()
    }

    /// Request `seq` gets no response.
    pub(crate) fn skip(&mut self, seq: u64) -> Result<bool, TrySendError> {
        self.inner.skip(seq)
    }

    /// Room for a message of `len` payload bytes, with nothing held back
    /// ahead of it.
    pub(crate) fn room_for(&mut self, len: usize) -> Result<bool, TrySendError> {
        let o = &self.inner.out;
        if o.ring.truncated() {
            return Err(TrySendError::Violation(corrupt(
                o.peer,
                o.channel,
                QbCorruption::Truncated,
            )));
        }
        if self.inner.holding() {
            return Ok(false);
        }
        o.ring
            .has_room(o.header.len() + len)
            .map_err(|c| TrySendError::Violation(corrupt(o.peer, o.channel, c)))
    }

    /// Bytes written and not yet read, and responses held back.
    pub(crate) fn queued(&self) -> usize {
        self.inner.out.ring.used() + self.inner.held_bytes()
    }

    /// Whether something waits to go (held responses, owed bytes).
    pub(crate) fn has_tail(&self) -> bool {
        self.inner.holding() || self.inner.out.notify.as_ref().is_some_and(|n| !n.paid())
    }
}

/// The reading end of a libqb ring.
#[derive(Debug)]
pub struct QbShmReceiver {
    ring: QbRing,
    header: Header,
    channel: Channel,
    peer: Peer,
    /// The negotiated maximum payload.
    max: usize,
    /// The last message taken from the ring, copied out (the peer may
    /// write the ring while it is read), until released.
    buf: Vec<u8>,
    held: Option<MsgHeader>,
    /// Sequence numbers given to requests (libqb's have none: a
    /// server's responses are matched by order).
    next_seq: u64,
}

impl QbShmReceiver {
    pub(crate) fn new(
        ring: QbRing,
        header: Header,
        channel: Channel,
        peer: Peer,
        max: usize,
    ) -> QbShmReceiver {
        QbShmReceiver {
            ring,
            header,
            channel,
            peer,
            max,
            buf: Vec::new(),
            held: None,
            next_seq: 1,
        }
    }

    pub(crate) fn ring(&self) -> &QbRing {
        &self.ring
    }

    /// The next message: the one taken before and not released, or a new
    /// one, its header checked against its chunk and the maximum; its
    /// payload is then [`payload`](Self::payload).
    pub(crate) fn try_recv(&mut self) -> Result<Option<MsgHeader>, TryRecvError> {
        if let Some(h) = self.held {
            return Ok(Some(h));
        }
        let chunk = match self.ring.try_read() {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(None),
            Err(c) => return Err(corrupt(self.peer, self.channel, c).into()),
        };
        chunk.copy_to(&mut self.buf);
        chunk.release();
        let len = self.buf.len();
        let (id, size, error) = match self.header {
            // An empty chunk, or libqb's disconnect request: the client
            // leaves.
            Header::Request if len == 0 => return Err(TryRecvError::Closed),
            Header::Request => match RequestHeader::decode(&self.buf) {
                Ok(h) if h.id == ringlink_common::qb::MSG_DISCONNECT => {
                    return Err(TryRecvError::Closed)
                }
                Ok(h) => (h.id, h.size, 0),
                Err(e) => return Err(self.bad(e)),
            },
            Header::Response => match ResponseHeader::decode(&self.buf) {
                Ok(h) => (h.id, h.size, h.error),
                Err(e) => return Err(self.bad(e)),
            },
        };
        // libqb trusts `size`; ringlink requires it to be the chunk's.
        if size < 0 || size as usize != len {
            return Err(self.bad(ringlink_common::wire::WireError::Size));
        }
        let payload = len - self.header.len();
        if payload > self.max {
            return Err(Violation::OverMaximum {
                by: self.peer,
                channel: self.channel,
                len: payload as u64,
                max: self.max as u64,
            }
            .into());
        }
        let seq = match self.header {
            Header::Request => {
                self.next_seq += 1;
                self.next_seq - 1
            }
            Header::Response => 0,
        };
        let h = MsgHeader {
            id,
            size: payload as u32,
            error,
            flags: 0,
            seq,
        };
        self.held = Some(h);
        Ok(Some(h))
    }

    /// The payload of the message [`try_recv`](Self::try_recv) gave.
    pub(crate) fn payload(&self) -> &[u8] {
        self.buf.get(self.header.len()..).unwrap_or(&[])
    }

    fn bad(&self, error: ringlink_common::wire::WireError) -> TryRecvError {
        Violation::BadHeader {
            by: self.peer,
            channel: self.channel,
            error,
        }
        .into()
    }

    /// The held message is done with.
    pub(crate) fn release(&mut self) {
        self.held = None;
    }

    /// Whether a message may be waiting.
    pub(crate) fn pending(&self) -> bool {
        self.held.is_some() || self.ring.pending()
    }

    /// Whether the ring was found truncated.
    pub(crate) fn is_closed(&self) -> bool {
        self.ring.truncated()
    }
}
