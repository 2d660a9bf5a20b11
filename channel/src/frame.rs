//! A message's framing, written once for both transports and both roles:
//! the 24-byte header read from a ring record or a reassembled datagram
//! stream and checked against the negotiated maximum.

use ringlink_common::wire::{MsgHeader, WireError, MSG_HEADER_LEN};
use ringlink_common::{Channel, Peer, Violation};

/// The header of a whole message (`header + payload`) that `by` sent on
/// `channel`, checked: it must decode (its `size` is the payload present,
/// its reserved field zero) and its payload must be at most `max`, the
/// negotiated maximum (a ring holds records of about twice that; the
/// protocol does not).
///
/// # Errors
///
/// [`Violation::BadHeader`] or [`Violation::OverMaximum`].
#[inline]
pub fn read_header(
    record: &[u8],
    max: usize,
    by: Peer,
    channel: Channel,
) -> Result<MsgHeader, Violation> {
    let h = MsgHeader::decode(record).map_err(|error: WireError| Violation::BadHeader {
        by,
        channel,
        error,
    })?;
    check_flags(&h, by, channel)?;
    if h.size as usize > max {
        return Err(Violation::OverMaximum {
            by,
            channel,
            len: u64::from(h.size),
            max: max as u64,
        });
    }
    Ok(h)
}

/// Each flag belongs to one channel: one-way and reply to requests,
/// lagged to events (with an 8-byte count), call to responses; a message
/// has at most one, and one with another channel's is a violation
/// (`MsgHeader::decode` has refused unknown flags already).
///
/// # Errors
///
/// [`Violation::BadHeader`] with [`WireError::Reserved`], or
/// [`WireError::Size`] for a lagged notice that is not 8 bytes.
#[inline]
pub fn check_flags(h: &MsgHeader, by: Peer, channel: Channel) -> Result<(), Violation> {
    use ringlink_common::wire::{FLAG_CALL, FLAG_LAGGED, FLAG_ONE_WAY, FLAG_REPLY};
    let allowed = match channel {
        Channel::Request => FLAG_ONE_WAY | FLAG_REPLY,
        Channel::Event => FLAG_LAGGED,
        Channel::Response => FLAG_CALL,
    };
    // At most one flag: a one-way reply is no message.
    if h.kinds() & !allowed != 0 || h.kinds().count_ones() > 1 {
        return Err(Violation::BadHeader {
            by,
            channel,
            error: WireError::Reserved,
        });
    }
    if h.fds() > 0 && !crate::fds::may_carry(h) {
        return Err(Violation::Fds {
            by,
            channel,
            fault: ringlink_common::FdFault::NotAccepted,
        });
    }
    if h.is_lagged() && h.size != 8 {
        return Err(Violation::BadHeader {
            by,
            channel,
            error: WireError::Size,
        });
    }
    Ok(())
}

/// The payload of a whole message whose header was read.
#[inline]
pub fn payload(record: &[u8]) -> &[u8] {
    &record[MSG_HEADER_LEN..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_the_header_and_the_maximum() {
        let mut rec = vec![0u8; MSG_HEADER_LEN + 10];
        MsgHeader {
            id: 1,
            size: 10,
            error: 0,
            flags: 0,
            seq: 3,
        }
        .encode_into(&mut rec);
        assert_eq!(
            read_header(&rec, 10, Peer::Client, Channel::Request)
                .unwrap()
                .seq,
            3
        );
        assert_eq!(
            read_header(&rec, 9, Peer::Client, Channel::Request),
            Err(Violation::OverMaximum {
                by: Peer::Client,
                channel: Channel::Request,
                len: 10,
                max: 9
            })
        );
        assert!(matches!(
            read_header(&rec[..30], 100, Peer::Server, Channel::Event),
            Err(Violation::BadHeader { .. })
        ));
        assert_eq!(payload(&rec).len(), 10);
    }

    #[test]
    fn a_lagged_notice_is_an_event_of_eight_bytes() {
        let lagged = |size: usize| {
            let mut rec = vec![0u8; MSG_HEADER_LEN + size];
            MsgHeader {
                id: 0,
                size: size as u32,
                error: 0,
                flags: ringlink_common::wire::FLAG_LAGGED,
                seq: 0,
            }
            .encode_into(&mut rec);
            rec
        };
        assert!(
            read_header(&lagged(8), 64, Peer::Server, Channel::Event).is_ok_and(|h| h.is_lagged())
        );
        for size in [0, 7, 9] {
            assert!(matches!(
                read_header(&lagged(size), 64, Peer::Server, Channel::Event),
                Err(Violation::BadHeader {
                    error: WireError::Size,
                    ..
                })
            ));
        }
        for channel in [Channel::Request, Channel::Response] {
            assert!(matches!(
                read_header(&lagged(8), 64, Peer::Server, channel),
                Err(Violation::BadHeader {
                    error: WireError::Reserved,
                    ..
                })
            ));
        }
    }

    #[test]
    fn only_requests_carry_flags() {
        let mut rec = vec![0u8; MSG_HEADER_LEN];
        MsgHeader {
            id: 1,
            size: 0,
            error: 0,
            flags: ringlink_common::wire::FLAG_ONE_WAY,
            seq: 0,
        }
        .encode_into(&mut rec);
        assert!(read_header(&rec, 10, Peer::Client, Channel::Request).is_ok_and(|h| h.is_one_way()));
        for channel in [Channel::Response, Channel::Event] {
            assert_eq!(
                read_header(&rec, 10, Peer::Server, channel),
                Err(Violation::BadHeader {
                    by: Peer::Server,
                    channel,
                    error: WireError::Reserved
                })
            );
        }
    }
}
