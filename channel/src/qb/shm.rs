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
use crate::qb::order::{Admit, Order};
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
    ring: QbRing,
    header: Header,
    /// Announces each message on the stream socket (requests, events).
    notify: Option<Notify>,
    /// Responses held until the earlier requests are answered.
    order: Option<Order>,
    channel: Channel,
    peer: Peer,
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
        QbShmSender {
            ring,
            header,
            notify: notify.map(Notify::new),
            order: ordered.then(Order::default),
            channel,
            peer,
        }
    }

    pub(crate) fn ring(&self) -> &QbRing {
        &self.ring
    }

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

    /// One message; a response waits (copied) while an earlier request
    /// is unanswered, and goes with the ones it held back once it is.
    pub(crate) fn try_send(
        &mut self,
        h: &MsgHeader,
        parts: &[IoSlice<'_>],
    ) -> Result<(), TrySendError> {
        if let Some(n) = &mut self.notify {
            // Bytes owed from before go first (never dropped: a libqb
            // peer reads one per message, and waits for it).
            n.pay();
        }
        if let Some(o) = self.order.as_mut() {
            if o.admit(h.seq) == Admit::Later {
                o.hold(*h, parts);
                return self.flush_held().map(drop);
            }
        }
        if !self.write(h, parts)? {
            return Err(TrySendError::Full);
        }
        if let Some(o) = self.order.as_mut() {
            o.sent(h.seq);
        }
        self.flush_held().map(drop)
    }

    /// Sends the held responses whose turn came, while the ring has room:
    /// whether none is left.
    pub(crate) fn flush_held(&mut self) -> Result<bool, TrySendError> {
        if let Some(n) = &mut self.notify {
            n.pay();
        }
        while let Some((h, body)) = self.order.as_mut().and_then(Order::next_due) {
            if !self.write(&h, &[IoSlice::new(&body)])? {
                self.order.as_mut().expect("ordered").put_back(h, body);
                return Ok(false);
            }
            self.order.as_mut().expect("ordered").sent(h.seq);
        }
        Ok(self.notify.as_ref().is_none_or(Notify::paid))
    }

    /// Room for a message of `len` payload bytes, with nothing held back
    /// ahead of it.
    pub(crate) fn room_for(&mut self, len: usize) -> Result<bool, TrySendError> {
        if self.ring.truncated() {
            return Err(TrySendError::Violation(corrupt(
                self.peer,
                self.channel,
                QbCorruption::Truncated,
            )));
        }
        let held = self.order.as_ref().is_some_and(|o| !o.is_empty());
        Ok(!held && self.ring.has_room(self.header.len() + len))
    }

    /// Bytes written and not yet read, and responses held back.
    pub(crate) fn queued(&self) -> usize {
        self.ring.queued() as usize + self.order.as_ref().map_or(0, Order::bytes)
    }

    /// Whether something waits to go (held responses, owed bytes).
    pub(crate) fn has_tail(&self) -> bool {
        self.order.as_ref().is_some_and(|o| !o.is_empty())
            || self.notify.as_ref().is_some_and(|n| !n.paid())
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
