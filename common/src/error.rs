//! The error type of the server and client APIs.

use std::fmt;
use std::io;

use crate::violation::Violation;
use crate::wire::Status;

/// What went wrong in a ringlink call.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A system call failed.
    Io(io::Error),
    /// Nobody is listening at that service name (and the caller did not
    /// ask to wait for one, or stopped waiting).
    NoServer,
    /// The server refused the connection, for this reason.
    Rejected(Status),
    /// The peer broke the protocol (malformed handshake, corrupted ring):
    /// what it did, as a value to match on.
    Protocol(Violation),
    /// The connection is gone: the peer closed it, died, or this side
    /// disconnected.
    Disconnected,
    /// The timeout passed first.
    TimedOut,
    /// The operation would have to wait (non-blocking call, full ring).
    WouldBlock,
    /// The message exceeds the connection's negotiated maximum; nothing
    /// was sent.
    MessageTooLarge {
        /// Payload length offered.
        len: usize,
        /// Negotiated maximum payload.
        max: usize,
    },
    /// The caller's buffer is smaller than the message waiting; the
    /// message is kept.
    BufferTooSmall {
        /// Payload length of the message waiting.
        needed: usize,
    },
}

impl Error {
    /// Whether the connection is unusable after this error.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Error::Disconnected | Error::Protocol(_) | Error::Io(_)
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::NoServer => f.write_str("no server is listening at that name"),
            Error::Rejected(s) => write!(f, "connection refused by the server: {s}"),
            Error::Protocol(v) => write!(f, "protocol violation: {v}"),
            Error::Disconnected => f.write_str("disconnected"),
            Error::TimedOut => f.write_str("timed out"),
            Error::WouldBlock => f.write_str("operation would block"),
            Error::MessageTooLarge { len, max } => {
                write!(f, "message of {len} bytes exceeds the maximum of {max}")
            }
            Error::BufferTooSmall { needed } => {
                write!(f, "buffer too small: the message is {needed} bytes")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Protocol(v) => Some(v),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

impl From<Violation> for Error {
    fn from(v: Violation) -> Error {
        Error::Protocol(v)
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match &e {
            Error::Io(e) => e.kind(),
            Error::NoServer => io::ErrorKind::ConnectionRefused,
            Error::Rejected(Status::PermissionDenied) => io::ErrorKind::PermissionDenied,
            Error::Rejected(_) => io::ErrorKind::ConnectionRefused,
            Error::Protocol(_) => io::ErrorKind::InvalidData,
            Error::Disconnected => io::ErrorKind::BrokenPipe,
            Error::TimedOut => io::ErrorKind::TimedOut,
            Error::WouldBlock => io::ErrorKind::WouldBlock,
            Error::MessageTooLarge { .. } | Error::BufferTooSmall { .. } => {
                io::ErrorKind::InvalidInput
            }
        };
        match e {
            Error::Io(e) => e,
            other => io::Error::new(kind, other),
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
