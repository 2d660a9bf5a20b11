//! The error type of the server and client APIs.

use std::fmt;
use std::io;

use crate::violation::{FdKind, Violation};
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
    /// A response to a one-way request (sequence number 0), which the
    /// client does not wait for; nothing was sent.
    OneWay,
    /// The server dropped this many events here, its queue for this
    /// client being full (`ServiceOptions::event_queue`); the next
    /// `event_recv` returns the event after them. Not fatal.
    Lagged(u64),
    /// The waiting call was interrupted (the client's `Interrupter`,
    /// from a signal handler or another thread). Not fatal: nothing was
    /// lost, the call may be made again.
    Interrupted,
    /// The message's fds are more than the peer accepts on one message
    /// (`max`, 0 when it accepts none; its `FdTerms`, announced in the
    /// handshake), or the message is of a kind that carries none; nothing
    /// was sent.
    FdsNotAccepted {
        /// Fds offered.
        count: usize,
        /// The most the peer accepts on one message.
        max: usize,
    },
    /// Fd number `index` of the message is of a kind the peer refuses
    /// (a directory, an `O_PATH` fd); nothing was sent.
    FdRefused {
        /// Its place among the message's fds.
        index: usize,
        /// What it is.
        kind: FdKind,
    },
}

impl Error {
    /// The errno libqb's API returns (negated) for the same condition,
    /// for code moving from libqb, or answering a libqb peer in its
    /// terms: `EAGAIN` (would block, or flow control holds the send),
    /// `EMSGSIZE` (too large), `ENOTCONN` (disconnected), `ETIMEDOUT`,
    /// `ENOBUFS` (the buffer is too small; unlike libqb's client, which
    /// then marks itself disconnected, ringlink keeps the message and the
    /// connection), `EINVAL` (a response to a one-way request),
    /// `EOVERFLOW` (events were dropped),
    /// `ECONNREFUSED` (no server), a refusal's
    /// [`Status::errno`], `EBADMSG` (a protocol violation), and an I/O
    /// error's own errno (`EIO` if it has none).
    pub fn errno(&self) -> i32 {
        match self {
            Error::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
            Error::NoServer => libc::ECONNREFUSED,
            Error::Rejected(s) => s.errno(),
            Error::Protocol(_) => libc::EBADMSG,
            Error::Disconnected => libc::ENOTCONN,
            Error::TimedOut => libc::ETIMEDOUT,
            Error::WouldBlock => libc::EAGAIN,
            Error::MessageTooLarge { .. } => libc::EMSGSIZE,
            Error::BufferTooSmall { .. } => libc::ENOBUFS,
            Error::OneWay => libc::EINVAL,
            Error::Lagged(_) => libc::EOVERFLOW,
            Error::Interrupted => libc::EINTR,
            Error::FdsNotAccepted { .. } | Error::FdRefused { .. } => libc::EINVAL,
        }
    }

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
            Error::MessageTooLarge { len, max } => write!(
                f,
                "message of {len} bytes exceeds the connection's maximum of {max} \
                 (a client asks for more with ConnectOptions::max_message, up to the \
                 server's ServiceOptions::max_message)"
            ),
            Error::BufferTooSmall { needed } => {
                write!(f, "buffer too small: the message is {needed} bytes")
            }
            Error::OneWay => f.write_str("the request was one-way: it takes no response"),
            Error::Lagged(n) => write!(f, "{n} events were dropped here by the server"),
            Error::Interrupted => f.write_str("interrupted"),
            Error::FdsNotAccepted { count, max: 0 } => write!(
                f,
                "{count} fds offered: the peer accepts none here (it asks for them with \
                 `accept_fds` in its options; calls, replies and lagged notices carry none)"
            ),
            Error::FdsNotAccepted { count, max } => {
                write!(
                    f,
                    "{count} fds offered: the peer accepts at most {max} per message"
                )
            }
            Error::FdRefused { index, kind } => {
                write!(
                    f,
                    "fd {index} of the message is {kind}, which the peer refuses"
                )
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
            Error::MessageTooLarge { .. }
            | Error::BufferTooSmall { .. }
            | Error::OneWay
            | Error::FdsNotAccepted { .. }
            | Error::FdRefused { .. } => io::ErrorKind::InvalidInput,
            Error::Lagged(_) => io::ErrorKind::Other,
            Error::Interrupted => io::ErrorKind::Interrupted,
        };
        match e {
            Error::Io(e) => e,
            other => io::Error::new(kind, other),
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_are_libqbs_for_the_same_condition() {
        let io = |n| Error::Io(io::Error::from_raw_os_error(n));
        let cases = [
            (Error::WouldBlock, libc::EAGAIN),
            (Error::MessageTooLarge { len: 9, max: 8 }, libc::EMSGSIZE),
            (Error::Disconnected, libc::ENOTCONN),
            (Error::TimedOut, libc::ETIMEDOUT),
            (Error::BufferTooSmall { needed: 9 }, libc::ENOBUFS),
            (Error::Rejected(Status::PermissionDenied), libc::EACCES),
            (Error::Rejected(Status::TooManyClients), libc::EAGAIN),
            (Error::Rejected(Status::ProcessQuota), libc::EDQUOT),
            (Error::Rejected(Status::Resources), libc::ENOMEM),
            (Error::NoServer, libc::ECONNREFUSED),
            (Error::OneWay, libc::EINVAL),
            (Error::Lagged(3), libc::EOVERFLOW),
            (Error::Interrupted, libc::EINTR),
            (Error::FdsNotAccepted { count: 1, max: 0 }, libc::EINVAL),
            (io(libc::EPIPE), libc::EPIPE),
            (Error::Io(io::Error::other("no errno")), libc::EIO),
        ];
        for (e, errno) in cases {
            assert_eq!(e.errno(), errno, "{e}");
        }
        assert_eq!(Status::Ok.errno(), 0);
    }
}
