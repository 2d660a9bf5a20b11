//! Protocol violations as values: what a peer did wrong, in a
//! `Copy + Eq` type a program can match on ([`Violation`]), carried by
//! [`Error::Protocol`](crate::Error::Protocol) on the client and by the
//! server's error hook.

use std::fmt;
use std::io;

use crate::wire::{WireError, MAX_MESSAGE};

/// What was wrong in a ring a peer corrupted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Corruption {
    /// The peer's position is not 8-byte aligned.
    MisalignedPosition,
    /// The peer's position is behind ours (the consumer is ahead of the
    /// producer), or moved backwards.
    PositionBehind,
    /// The peer's position is more than a capacity ahead of ours.
    PositionTooFarAhead,
    /// A record's length runs past the region's end or exceeds the ring's
    /// largest payload.
    RecordLength,
    /// A record's kind word is neither data nor padding.
    RecordKind,
    /// A padding record does not end exactly at the end of the region, or
    /// stands where no padding can be.
    Padding,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Corruption::MisalignedPosition => "peer position is not 8-byte aligned",
            Corruption::PositionBehind => "peer position is behind ours or moved backwards",
            Corruption::PositionTooFarAhead => "peer position is more than a capacity ahead",
            Corruption::RecordLength => {
                "record length exceeds the largest payload or runs past the region's end"
            }
            Corruption::RecordKind => "record kind is invalid",
            Corruption::Padding => "padding record is malformed",
        })
    }
}

impl std::error::Error for Corruption {}

/// Which side of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    /// The client.
    Client,
    /// The server.
    Server,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Peer::Client => "client",
            Peer::Server => "server",
        })
    }
}

/// Which of a connection's three channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Requests, client to server.
    Request,
    /// Responses, server to client.
    Response,
    /// Events, server to client.
    Event,
}

impl Channel {
    /// The three, in the order of the handshake (`docs/PROTOCOL.md`).
    pub const ALL: [Channel; 3] = [Channel::Request, Channel::Response, Channel::Event];

    /// The channel's name, as in ring file names.
    pub fn name(self) -> &'static str {
        match self {
            Channel::Request => "request",
            Channel::Response => "response",
            Channel::Event => "event",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a peer broke the socket transport's framing (`docs/PROTOCOL.md`
/// §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Framing {
    /// A message's first datagram is shorter than a message header.
    ShortDatagram,
    /// A datagram runs past the end its message's header announced.
    Overrun,
    /// A message header announces more than the negotiated maximum.
    TooLarge,
    /// A message header is malformed.
    Header(WireError),
}

impl fmt::Display for Framing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Framing::ShortDatagram => f.write_str("a message shorter than its header"),
            Framing::Overrun => f.write_str("a datagram overruns its message"),
            Framing::TooLarge => f.write_str("a message larger than the negotiated maximum"),
            Framing::Header(e) => write!(f, "bad message header: {e}"),
        }
    }
}

impl std::error::Error for Framing {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Framing::Header(e) => Some(e),
            _ => None,
        }
    }
}

/// Why a ring a peer handed over (a memfd, or a named file to open) was
/// refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RingRefusal {
    /// A memfd without the seals that keep its size fixed (or another
    /// kind of file in its place).
    NotSealed,
    /// The file is not an initialised ring yet.
    NotReady,
    /// The file does not start with the ring magic number.
    BadMagic,
    /// A ring of another layout version.
    Version {
        /// The version found.
        found: u32,
    },
    /// The file's size, header size or capacity are inconsistent, or it
    /// is not a regular file.
    Incompatible(&'static str),
    /// The ring's wake mode is not the one the protocol uses.
    WakeMode,
    /// A named ring file could not be opened (the `errno`).
    Open(i32),
    /// A named ring file belongs to another user than the server's or
    /// ours.
    Owner {
        /// Its owner.
        uid: u32,
    },
    /// The role the protocol gives us was claimed already.
    RoleTaken {
        /// The claim word found (the claimant's pid, as it wrote it).
        owner: u32,
    },
    /// Its capacity is not the one the handshake announced, or cannot
    /// hold a message of the negotiated maximum.
    Size,
}

impl fmt::Display for RingRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingRefusal::NotSealed => f.write_str("ring memfd is not sealed against resizing"),
            RingRefusal::NotReady => f.write_str("ring file is not initialised yet"),
            RingRefusal::BadMagic => f.write_str("not a ring file (bad magic)"),
            RingRefusal::Version { found } => write!(f, "ring layout version {found}"),
            RingRefusal::Incompatible(why) => write!(f, "incompatible ring file: {why}"),
            RingRefusal::WakeMode => f.write_str("ring of another wake mode"),
            RingRefusal::Open(errno) => write!(f, "{}", io::Error::from_raw_os_error(*errno)),
            RingRefusal::Owner { uid } => {
                write!(f, "belongs to uid {uid}, neither the server's nor ours")
            }
            RingRefusal::RoleTaken { owner } => {
                write!(f, "ring role already claimed (owner {owner})")
            }
            RingRefusal::Size => f.write_str("ring size disagrees with the handshake"),
        }
    }
}

impl std::error::Error for RingRefusal {}

/// What was wrong with a libqb ring's shared state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum QbCorruption {
    /// The peer's position is outside the data region.
    Position,
    /// A chunk with a token in the semaphore is not committed.
    Magic,
    /// A chunk's size runs past the data region.
    Size,
    /// The files were shrunk under the mapping.
    Truncated,
    /// The semaphore overflowed.
    Semaphore,
}

impl std::fmt::Display for QbCorruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            QbCorruption::Position => "ring position outside the data region",
            QbCorruption::Magic => "counted chunk is not committed",
            QbCorruption::Size => "chunk size runs past the data region",
            QbCorruption::Truncated => "ring file truncated",
            QbCorruption::Semaphore => "ring semaphore overflowed",
        })
    }
}

impl std::error::Error for QbCorruption {}

/// A protocol violation: what a peer sent or wrote in shared memory that
/// the protocol (`docs/PROTOCOL.md`) does not allow. The connection it
/// happened on is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Violation {
    /// A ring's shared state was invalid when read.
    CorruptRing {
        /// Who wrote it (the other side).
        by: Peer,
        /// Which ring.
        channel: Channel,
        /// What was wrong.
        corruption: Corruption,
    },
    /// A libqb ring's shared state was invalid, or its file shrunk.
    CorruptQbRing {
        /// Who wrote it (the other side).
        by: Peer,
        /// Which ring.
        channel: Channel,
        /// What was wrong.
        corruption: QbCorruption,
    },
    /// A message header was malformed.
    BadHeader {
        /// Who sent it.
        by: Peer,
        /// On which channel.
        channel: Channel,
        /// What was wrong.
        error: WireError,
    },
    /// A message over the negotiated maximum.
    OverMaximum {
        /// Who sent it.
        by: Peer,
        /// On which channel.
        channel: Channel,
        /// Its payload length.
        len: u64,
        /// The negotiated maximum.
        max: u64,
    },
    /// The socket transport's framing was broken.
    Framing {
        /// Who sent it.
        by: Peer,
        /// On which channel.
        channel: Channel,
        /// How.
        error: Framing,
    },
    /// A client wrote on its stream socket after the handshake, where the
    /// socket transport allows nothing.
    DataOnStream,
    /// A response to a request the client never sent, or more responses
    /// than requests.
    UnaskedResponse {
        /// The response's sequence number.
        seq: u64,
        /// Responses received before it.
        answered: u64,
        /// Requests sent.
        sent: u64,
    },
    /// A reply from the client to a call the server never made.
    UnaskedReply {
        /// The reply's call number.
        seq: u64,
        /// The last call the server made.
        last_call: u64,
    },
    /// The handshake answer did not decode.
    BadAnswer(WireError),
    /// The handshake answer announced messages larger than ringlink
    /// carries.
    MaxAboveCeiling {
        /// What it announced.
        announced: u64,
    },
    /// The handshake answer came with the wrong number of fds, or
    /// announced another number than came.
    FdCount {
        /// What the protocol expects.
        expected: u16,
        /// What the answer announced.
        announced: u16,
        /// What came.
        received: u16,
    },
    /// An fd of the socket transport's answer is not a `SOCK_SEQPACKET`
    /// socket.
    NotSeqpacket,
    /// A ring of the answer was refused.
    RingRefused {
        /// Which ring.
        channel: Channel,
        /// A named ring (opened by path) rather than a memfd.
        named: bool,
        /// Why.
        refusal: RingRefusal,
    },
    /// A named-ring answer's path is not where the protocol allows: not
    /// absolute (ringlink's prefix), or not a file prefix in a `qb-…`
    /// directory directly under the expected base (libqb's names).
    RingPath,
    /// A message's fds broke the receiver's terms (`FdTerms`); they are
    /// closed, unused, away from the reading thread.
    Fds {
        /// Who sent them.
        by: Peer,
        /// On which channel.
        channel: Channel,
        /// How.
        fault: FdFault,
    },
}

/// How a peer's fds broke the terms the receiver announced
/// ([`Violation::Fds`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FdFault {
    /// Fds where none are accepted: the receiver accepts none, or the
    /// message is of a kind that carries none (a call, a reply, a lagged
    /// notice).
    NotAccepted,
    /// More fds on one message than the receiver accepts.
    PerMessage {
        /// How many came.
        count: u16,
        /// The most accepted.
        max: u16,
    },
    /// More fds sent and not yet taken with their messages than the
    /// receiver accepts on one channel.
    InFlight {
        /// The most accepted.
        max: u32,
    },
    /// A message announced fds that were not sent before it.
    Missing {
        /// What its header announced.
        announced: u16,
        /// What had come.
        present: u16,
    },
    /// An fd of a kind the receiver refuses.
    Kind(FdKind),
    /// Fds where no message can claim them: on the stream socket with a
    /// byte that names no channel the peer sends on, or on a datagram
    /// other than a message's first.
    Stray,
}

/// Kinds of fd a receiver may refuse ([`FdFault::Kind`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FdKind {
    /// A directory: with `openat` and `..` it reaches outside a chroot.
    Directory,
    /// An `O_PATH` fd: a handle on a place in a file system, which can
    /// name one for `openat` the same way.
    Path,
}

impl fmt::Display for FdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FdKind::Directory => "a directory",
            FdKind::Path => "an O_PATH fd",
        })
    }
}

impl fmt::Display for FdFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FdFault::NotAccepted => f.write_str("fds where none are accepted"),
            FdFault::PerMessage { count, max } => {
                write!(f, "{count} fds on one message, at most {max} accepted")
            }
            FdFault::InFlight { max } => {
                write!(f, "more than {max} fds in flight on one channel")
            }
            FdFault::Missing { announced, present } => write!(
                f,
                "message announced {announced} fds, {present} were sent before it"
            ),
            FdFault::Kind(kind) => write!(f, "{kind}, which is refused"),
            FdFault::Stray => f.write_str("fds that belong to no message"),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::CorruptRing {
                by,
                channel,
                corruption,
            } => write!(f, "{by} corrupted its {channel} ring: {corruption}"),
            Violation::CorruptQbRing {
                by,
                channel,
                corruption,
            } => write!(f, "{by} corrupted its libqb {channel} ring: {corruption}"),
            Violation::BadHeader {
                by: Peer::Client,
                channel: Channel::Request,
                error,
            } => write!(f, "bad request header: {error}"),
            Violation::BadHeader { by, channel, error } => {
                write!(f, "bad {channel} header from the {by}: {error}")
            }
            Violation::OverMaximum {
                by: Peer::Client,
                channel: Channel::Request,
                len,
                max,
            } => write!(
                f,
                "request of {len} bytes over the negotiated maximum of {max}"
            ),
            Violation::OverMaximum {
                by,
                channel,
                len,
                max,
            } => write!(
                f,
                "{channel} from the {by} over the negotiated maximum: {len} bytes, maximum {max}"
            ),
            Violation::Framing { by, channel, error } => {
                write!(f, "{by} broke the socket framing ({channel}): {error}")
            }
            Violation::DataOnStream => {
                f.write_str("client sent data on the socket after the handshake")
            }
            Violation::UnaskedResponse {
                seq,
                answered,
                sent,
            } => write!(
                f,
                "response to request {seq} from the server, which has answered {answered} of \
                 the {sent} requests sent"
            ),
            Violation::UnaskedReply { seq, last_call } => write!(
                f,
                "reply to call {seq} from the client, which was never made (last call: {last_call})"
            ),
            Violation::BadAnswer(e) => write!(f, "connect response: {e}"),
            Violation::MaxAboveCeiling { announced } => write!(
                f,
                "server announced messages of {announced} bytes, above ringlink's {MAX_MESSAGE}"
            ),
            Violation::FdCount {
                expected,
                announced,
                received,
            } => write!(
                f,
                "expected {expected} fds: the answer announced {announced}, {received} came"
            ),
            Violation::NotSeqpacket => {
                f.write_str("socket from server: not a SOCK_SEQPACKET socket")
            }
            Violation::RingRefused {
                channel,
                named: false,
                refusal,
            } => write!(f, "ring from server ({channel}): {refusal}"),
            Violation::RingRefused {
                channel,
                named: true,
                refusal,
            } => write!(f, "named ring {channel}: {refusal}"),
            Violation::RingPath => f.write_str("ring path is not where the protocol allows"),
            Violation::Fds { by, channel, fault } => {
                write!(f, "fds from the {by} ({channel}): {fault}")
            }
        }
    }
}

impl std::error::Error for Violation {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Violation::CorruptRing { corruption, .. } => Some(corruption),
            Violation::CorruptQbRing { corruption, .. } => Some(corruption),
            Violation::BadHeader { error, .. } | Violation::BadAnswer(error) => Some(error),
            Violation::Framing { error, .. } => Some(error),
            Violation::RingRefused { refusal, .. } => Some(refusal),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_who_and_where() {
        let v = Violation::CorruptRing {
            by: Peer::Client,
            channel: Channel::Request,
            corruption: Corruption::RecordKind,
        };
        assert_eq!(
            v.to_string(),
            "client corrupted its request ring: record kind is invalid"
        );
        let v = Violation::BadHeader {
            by: Peer::Server,
            channel: Channel::Response,
            error: WireError::Reserved,
        };
        assert_eq!(
            v.to_string(),
            "bad response header from the server: reserved field or unknown flag is not zero"
        );
        use std::error::Error as _;
        assert!(v.source().is_some());
    }
}
