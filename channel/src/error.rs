//! Why a send or a receive did not happen, and the one mapping of each
//! to the roles' [`Error`].

use std::io;

use ringlink_common::{Error, Violation};

/// Why a message was not sent.
#[derive(Debug)]
#[non_exhaustive]
pub enum TrySendError {
    /// No room now (a full ring, a full socket, or the tail of the last
    /// message still waiting): nothing was sent.
    Full,
    /// The channel is closed (the peer left, or the connection ended).
    Closed,
    /// Larger than the channel carries; nothing was sent.
    TooLarge {
        /// The payload's length.
        len: usize,
        /// The largest it may be.
        max: usize,
    },
    /// More fds than the peer accepts on this message (`max`: its terms'
    /// per-message count, 0 for a kind that carries none); nothing was
    /// sent.
    FdsNotAccepted {
        /// Fds offered.
        count: usize,
        /// The most accepted.
        max: usize,
    },
    /// An fd of a kind the peer refuses; nothing was sent.
    FdRefused {
        /// Its place among the message's fds.
        index: usize,
        /// What it is.
        kind: ringlink_common::FdKind,
    },
    /// The peer broke the protocol (a corrupt ring).
    Violation(Violation),
    /// A system call failed.
    Io(io::Error),
}

impl From<TrySendError> for Error {
    /// The one mapping of a send's failure to the roles' error: `Full`
    /// is [`Error::WouldBlock`].
    fn from(e: TrySendError) -> Error {
        match e {
            TrySendError::Full => Error::WouldBlock,
            TrySendError::Closed => Error::Disconnected,
            TrySendError::TooLarge { len, max } => Error::MessageTooLarge { len, max },
            TrySendError::FdsNotAccepted { count, max } => Error::FdsNotAccepted { count, max },
            TrySendError::FdRefused { index, kind } => Error::FdRefused { index, kind },
            TrySendError::Violation(v) => Error::Protocol(v),
            TrySendError::Io(e) => Error::Io(e),
        }
    }
}

/// Why no message was received.
#[derive(Debug)]
#[non_exhaustive]
pub enum TryRecvError {
    /// The channel is closed and everything sent before was read.
    Closed,
    /// The peer broke the protocol (the message is not delivered).
    Violation(Violation),
    /// A system call failed.
    Io(io::Error),
}

impl From<Violation> for TryRecvError {
    fn from(v: Violation) -> TryRecvError {
        TryRecvError::Violation(v)
    }
}

impl From<TryRecvError> for Error {
    /// The one mapping of a receive's failure to the roles' error.
    fn from(e: TryRecvError) -> Error {
        match e {
            TryRecvError::Closed => Error::Disconnected,
            TryRecvError::Violation(v) => Error::Protocol(v),
            TryRecvError::Io(e) => Error::Io(e),
        }
    }
}
