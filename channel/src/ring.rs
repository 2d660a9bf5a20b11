//! The shared-memory flavour: a channel is one ring, a message one
//! record (`docs/RING.md`), its wake-ups bytes on the connection's socket.

use std::io::IoSlice;

use ringlink_common::wire::{MsgHeader, MSG_HEADER_LEN};
use ringlink_common::{Channel, Peer, Violation};
use ringlink_ringbuf::{Consumer, PopError, Producer, PushError, ReadGrant};

use crate::error::{TryRecvError, TrySendError};
use crate::frame;

/// The writing end of a ring channel.
#[derive(Debug)]
pub struct RingSender {
    producer: Producer,
    channel: Channel,
    /// The other side, which reads: what corrupts the ring's shared
    /// state (its position) is its doing.
    peer: Peer,
}

impl RingSender {
    pub(crate) fn new(producer: Producer, channel: Channel, peer: Peer) -> RingSender {
        RingSender {
            producer,
            channel,
            peer,
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
    /// the parts.
    pub(crate) fn try_send(
        &mut self,
        header: &MsgHeader,
        parts: &[IoSlice<'_>],
    ) -> Result<(), TrySendError> {
        let total = MSG_HEADER_LEN + header.size as usize;
        match self.producer.try_reserve(total) {
            Ok(mut grant) => {
                header.encode_record(&mut grant, parts);
                grant.commit();
                Ok(())
            }
            Err(e) => Err(self.corrupt(e)),
        }
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
}

impl RingReceiver {
    pub(crate) fn new(
        consumer: Consumer,
        channel: Channel,
        peer: Peer,
        max: usize,
    ) -> RingReceiver {
        RingReceiver {
            consumer,
            channel,
            peer,
            max,
        }
    }

    /// The next message, viewed in place, checked.
    pub(crate) fn try_recv(&mut self) -> Result<Option<(MsgHeader, ReadGrant<'_>)>, TryRecvError> {
        let (channel, peer, max) = (self.channel, self.peer, self.max);
        match self.consumer.try_peek() {
            Ok(record) => {
                let header = frame::read_header(&record, max, peer, channel)?;
                Ok(Some((header, record)))
            }
            Err(PopError::Empty) => Ok(None),
            Err(PopError::Corrupt(corruption)) => {
                Err(TryRecvError::Violation(Violation::CorruptRing {
                    by: peer,
                    channel,
                    corruption,
                }))
            }
            Err(_) => Err(TryRecvError::Closed),
        }
    }

    pub(crate) fn consumer(&mut self) -> &mut Consumer {
        &mut self.consumer
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.consumer.is_closed()
    }

    pub(crate) fn pending(&self) -> bool {
        self.consumer.pending_bytes() > 0
    }

    pub(crate) fn close(&mut self) {
        self.consumer.close();
    }
}
