//! The shared-memory flavour: a channel is one ring, a message one
//! record (`docs/RING.md`), its wake-ups bytes on the connection's socket.

use std::io::IoSlice;
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use ringlink_common::fdpass::PeerFds;
use ringlink_common::wire::{MsgHeader, MSG_HEADER_LEN};
use ringlink_common::{Channel, FdFault, Peer, Violation};
use ringlink_ringbuf::{Consumer, PopError, Producer, PushError, ReadGrant, Reservation};

use crate::error::{TryRecvError, TrySendError};
use crate::fds::{self, FdInbox, FdOutbox};
use crate::{frame, stream};

/// The writing end of a ring channel.
#[derive(Debug)]
pub struct RingSender {
    producer: Producer,
    channel: Channel,
    /// The other side, which reads: what corrupts the ring's shared
    /// state (its position) is its doing.
    peer: Peer,
    /// Where fds go, if the peer accepts any.
    fds: Option<FdOutbox>,
}

impl RingSender {
    pub(crate) fn new(
        producer: Producer,
        channel: Channel,
        peer: Peer,
        fds: Option<FdOutbox>,
    ) -> RingSender {
        RingSender {
            producer,
            channel,
            peer,
            fds,
        }
    }

    fn corrupt(&self, e: PushError) -> TrySendError {
        match e {
            PushError::Full | PushError::TimedOut => TrySendError::Full,
            PushError::Closed => TrySendError::Closed,
            PushError::Corrupt(corruption) => TrySendError::Violation(Violation::CorruptRing {
                by: self.peer,
                channel: self.channel,
                corruption,
            }),
            PushError::TooLarge { len, max } => TrySendError::TooLarge { len, max },
            _ => TrySendError::Closed,
        }
    }

    /// One record: the header (whose `size` is the parts' length), then
    /// the parts. Fds go first, on the stream socket, once the record and
    /// the fds both have room (so that none is sent for a message that
    /// then does not go).
    pub(crate) fn try_send(
        &mut self,
        header: &MsgHeader,
        parts: &[IoSlice<'_>],
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), TrySendError> {
        let total = MSG_HEADER_LEN + header.size as usize;
        if fds.is_empty() {
            return match self.producer.try_reserve(total) {
                Ok(mut grant) => {
                    header.encode_record(&mut grant, parts);
                    grant.commit();
                    Ok(())
                }
                Err(e) => Err(self.corrupt(e)),
            };
        }
        let Some(out) = self.fds.as_mut() else {
            return Err(TrySendError::FdsNotAccepted {
                count: fds.len(),
                max: 0,
            });
        };
        fds::check_sending(header, fds, out.terms())?;
        match self.producer.has_room(total) {
            Ok(true) => {}
            Ok(false) => return Err(TrySendError::Full),
            Err(e) => return Err(self.corrupt(e)),
        }
        let producer = &self.producer;
        if !out.room_for(fds.len(), || producer.released()) {
            return Err(TrySendError::Full);
        }
        out.send(fds)?;
        let header = header.with_fds(fds.len() as u16);
        match self.producer.try_reserve(total) {
            Ok(mut grant) => {
                header.encode_record(&mut grant, parts);
                grant.commit();
                let end = self.producer.position();
                if let Some(out) = self.fds.as_mut() {
                    out.published(end, fds.len());
                }
                Ok(())
            }
            // Room was there a moment ago and only this side takes it:
            // the ring was closed or corrupted meanwhile, and the fds sent
            // die with the connection.
            Err(e) => Err(self.corrupt(e)),
        }
    }

    /// One record written in place: `fill` gets the payload's bytes once
    /// the ring has room for them.
    pub(crate) fn try_send_in_place(
        &mut self,
        header: &MsgHeader,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<(), TrySendError> {
        let total = MSG_HEADER_LEN + header.size as usize;
        match self.producer.try_reserve(total) {
            Ok(mut grant) => {
                header.encode_into(&mut grant);
                fill(&mut grant[MSG_HEADER_LEN..]);
                grant.commit();
                Ok(())
            }
            Err(e) => Err(self.corrupt(e)),
        }
    }

    /// Room for one record of a message of `size` payload bytes, held
    /// apart from the producer until [`commit_reserved`](Self::commit_reserved).
    /// Nothing is written to the ring here: the reservation is then moved
    /// about by value, and a wide load of it waiting behind stores to the
    /// ring (which wait for lines the reader holds) stalls for a
    /// cross-core transfer (`docs/RING.md`, Measurements).
    #[inline]
    pub(crate) fn try_reserve(&mut self, size: u32) -> Result<Reservation, TrySendError> {
        match self.producer.try_reserve(MSG_HEADER_LEN + size as usize) {
            Ok(grant) => Ok(grant.detach()),
            Err(e) => Err(self.corrupt(e)),
        }
    }

    /// The payload bytes of a reservation.
    #[inline]
    pub(crate) fn reserved(&self, r: &Reservation) -> &[u8] {
        &self.producer.reserved(r)[MSG_HEADER_LEN..]
    }

    /// The payload bytes of a reservation, to write.
    #[inline]
    pub(crate) fn reserved_mut(&mut self, r: &Reservation) -> &mut [u8] {
        &mut self.producer.attach(r).into_bytes()[MSG_HEADER_LEN..]
    }

    /// Publishes a reservation, `header` written first.
    #[inline]
    pub(crate) fn commit_reserved(&mut self, r: &Reservation, header: &MsgHeader) {
        let mut grant = self.producer.attach(r);
        header.encode_into(&mut grant);
        grant.commit();
    }

    pub(crate) fn fd_room_for(&mut self, n: usize) -> bool {
        let producer = &self.producer;
        self.fds
            .as_mut()
            .is_none_or(|o| o.room_for(n, || producer.released()))
    }

    pub(crate) fn fd_terms(&self) -> ringlink_common::wire::FdTerms {
        self.fds
            .as_ref()
            .map_or(ringlink_common::wire::FdTerms::NONE, |o| *o.terms())
    }

    /// Whether a message of `len` payload bytes certainly fits, by what
    /// the producer knows (see `Producer::surely_fits`); never to a peer
    /// that takes fds, whose in-flight limit must be counted.
    #[inline]
    pub(crate) fn surely_fits(&self, len: usize) -> bool {
        self.fds.is_none() && self.producer.surely_fits(MSG_HEADER_LEN + len)
    }

    pub(crate) fn room_for(&mut self, len: usize) -> Result<bool, TrySendError> {
        self.producer
            .has_room(MSG_HEADER_LEN + len)
            .map_err(|e| self.corrupt(e))
    }

    pub(crate) fn queued(&self) -> usize {
        self.producer.pending_bytes()
    }

    pub(crate) fn producer(&mut self) -> &mut Producer {
        &mut self.producer
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.producer.is_closed()
    }

    pub(crate) fn close(&mut self) {
        self.producer.close();
    }
}

/// The reading end of a ring channel.
#[derive(Debug)]
pub struct RingReceiver {
    consumer: Consumer,
    channel: Channel,
    /// The other side, which writes.
    peer: Peer,
    /// The negotiated maximum: the ring holds larger records, the
    /// protocol does not.
    max: usize,
    /// Where the peer's fds are filed as the stream brings them, and the
    /// stream, if this side accepts any.
    inbox: Option<(Arc<FdInbox>, Arc<UnixStream>)>,
    /// The fds of the message at the head, once claimed from the inbox
    /// (kept until the message is released: one looked at and left is
    /// read again, fds and all).
    claimed: PeerFds,
}

impl RingReceiver {
    pub(crate) fn new(
        consumer: Consumer,
        channel: Channel,
        peer: Peer,
        max: usize,
        inbox: Option<(Arc<FdInbox>, Arc<UnixStream>)>,
    ) -> RingReceiver {
        RingReceiver {
            consumer,
            channel,
            peer,
            max,
            inbox,
            claimed: PeerFds::default(),
        }
    }

    /// The next message, viewed in place, checked, with the slot its fds
    /// are in.
    #[allow(clippy::type_complexity)]
    pub(crate) fn try_recv(
        &mut self,
    ) -> Result<Option<(MsgHeader, ReadGrant<'_>, &mut PeerFds)>, TryRecvError> {
        let (peer, channel) = (self.peer, self.channel);
        let Some((header, record)) = peek(&mut self.consumer, self.max, peer, channel)? else {
            return Ok(None);
        };
        let n = usize::from(header.fds());
        if n > 0 && self.claimed.is_empty() {
            self.claimed = claim(self.inbox.as_ref(), n, peer, channel)?;
        }
        Ok(Some((header, record, &mut self.claimed)))
    }

    /// The next message, viewed in place and checked, if it carries no
    /// fds (see [`Receiver::try_recv_plain`](crate::Receiver::try_recv_plain)).
    #[inline]
    pub(crate) fn try_recv_plain(&mut self) -> Result<crate::Plain<'_>, TryRecvError> {
        Ok(
            match peek(&mut self.consumer, self.max, self.peer, self.channel)? {
                None => crate::Plain::Empty,
                Some((header, _)) if header.fds() > 0 => crate::Plain::Other,
                Some((header, record)) => crate::Plain::Message(header, record),
            },
        )
    }

    pub(crate) fn consumer(&mut self) -> &mut Consumer {
        &mut self.consumer
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.consumer.is_closed()
    }

    /// Whether a record (or something that claims to be one) is
    /// published at the consumer's position: one load of the line the
    /// next record arrives in, not of the producer's position.
    pub(crate) fn pending(&self) -> bool {
        self.consumer.has_record()
    }

    pub(crate) fn close(&mut self) {
        self.consumer.close();
    }
}

/// The record at `consumer`'s position with its message header, checked
/// against the protocol and `max` (what `by` sent on `channel`):
/// `Ok(None)` if nothing is there yet.
#[inline]
fn peek(
    consumer: &mut Consumer,
    max: usize,
    by: Peer,
    channel: Channel,
) -> Result<Option<(MsgHeader, ReadGrant<'_>)>, TryRecvError> {
    match consumer.try_peek() {
        Ok(record) => Ok(Some((
            frame::read_header(&record, max, by, channel)?,
            record,
        ))),
        Err(PopError::Empty) => Ok(None),
        Err(PopError::Corrupt(corruption)) => {
            Err(TryRecvError::Violation(Violation::CorruptRing {
                by,
                channel,
                corruption,
            }))
        }
        Err(_) => Err(TryRecvError::Closed),
    }
}

/// The `n` fds of a message the peer published on `channel`: from the
/// front of the channel's queue in the inbox, reading the stream socket
/// for them if they are not filed yet (the peer sent them before it
/// published the message, so they are there).
fn claim(
    inbox: Option<&(Arc<FdInbox>, Arc<UnixStream>)>,
    n: usize,
    by: Peer,
    channel: Channel,
) -> Result<PeerFds, Violation> {
    let fault = |fault| Violation::Fds { by, channel, fault };
    let Some((inbox, sock)) = inbox else {
        return Err(fault(FdFault::NotAccepted));
    };
    let max = inbox.terms().per_message;
    if n > usize::from(max) {
        return Err(fault(FdFault::PerMessage {
            count: n as u16,
            max,
        }));
    }
    if let Some(fds) = inbox.take(channel, n) {
        return Ok(fds);
    }
    match stream::read_out(sock, Some(inbox)) {
        stream::Drained::Fault(v) => return Err(v),
        // Wake-ups were taken with the fds (and a hang-up, if any, is
        // seen again by the owner's own read): the owner must know.
        stream::Drained::Bytes(_) | stream::Drained::Gone | stream::Drained::Failed => {
            inbox.mark_took()
        }
        stream::Drained::Nothing => {}
    }
    inbox.take(channel, n).ok_or_else(|| {
        fault(FdFault::Missing {
            announced: n as u16,
            present: inbox.filed(channel) as u16,
        })
    })
}
