//! Error types of the ring. Small `Copy + Eq` enums, one per direction of
//! travel, so that callers can match on them cheaply in hot loops.

use std::fmt;
use std::io;

pub use ringlink_common::Corruption;

/// Error of a producer operation (`reserve`, `push`, `push_vectored`).
///
/// `try_*` calls return [`Full`](PushError::Full) where they would wait,
/// `*_timeout` calls return [`TimedOut`](PushError::TimedOut) when the time
/// runs out, and blocking calls return neither.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PushError {
    /// No room for the record now (non-blocking calls only).
    Full,
    /// No room appeared before the timeout.
    TimedOut,
    /// The record is larger than the ring's largest payload; nothing was
    /// written.
    TooLarge {
        /// Requested payload length.
        len: usize,
        /// Largest payload this ring accepts.
        max: usize,
    },
    /// The ring was closed (by either side); nothing was written.
    Closed,
    /// The consumer corrupted the shared state.
    Corrupt(Corruption),
}

/// Error of a consumer operation (`peek`, `pop_into`).
///
/// `try_*` calls return [`Empty`](PopError::Empty) where they would wait,
/// `*_timeout` calls return [`TimedOut`](PopError::TimedOut) when the time
/// runs out, and blocking calls return neither.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PopError {
    /// Nothing to read now (non-blocking calls only).
    Empty,
    /// Nothing arrived before the timeout.
    TimedOut,
    /// The caller's buffer is smaller than the next record; the record is
    /// kept and will be returned by the next call.
    BufferTooSmall {
        /// Length of the record waiting.
        needed: usize,
    },
    /// The ring is closed and every record published before the close has
    /// been read.
    Closed,
    /// The producer corrupted the shared state.
    Corrupt(Corruption),
}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PushError::Full => f.write_str("ring is full"),
            PushError::TimedOut => f.write_str("timed out waiting for ring space"),
            PushError::TooLarge { len, max } => {
                write!(
                    f,
                    "record of {len} bytes exceeds the ring's maximum of {max}"
                )
            }
            PushError::Closed => f.write_str("ring is closed"),
            PushError::Corrupt(c) => write!(f, "ring is corrupt: {c}"),
        }
    }
}

impl fmt::Display for PopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PopError::Empty => f.write_str("ring is empty"),
            PopError::TimedOut => f.write_str("timed out waiting for a record"),
            PopError::BufferTooSmall { needed } => {
                write!(f, "buffer too small: next record is {needed} bytes")
            }
            PopError::Closed => f.write_str("ring is closed"),
            PopError::Corrupt(c) => write!(f, "ring is corrupt: {c}"),
        }
    }
}

impl std::error::Error for PushError {}
impl std::error::Error for PopError {}

impl From<PushError> for io::Error {
    fn from(e: PushError) -> io::Error {
        let kind = match e {
            PushError::Full => io::ErrorKind::WouldBlock,
            PushError::TimedOut => io::ErrorKind::TimedOut,
            PushError::TooLarge { .. } => io::ErrorKind::InvalidInput,
            PushError::Closed => io::ErrorKind::BrokenPipe,
            PushError::Corrupt(_) => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

impl From<PopError> for io::Error {
    fn from(e: PopError) -> io::Error {
        let kind = match e {
            PopError::Empty => io::ErrorKind::WouldBlock,
            PopError::TimedOut => io::ErrorKind::TimedOut,
            PopError::BufferTooSmall { .. } => io::ErrorKind::InvalidInput,
            PopError::Closed => io::ErrorKind::UnexpectedEof,
            PopError::Corrupt(_) => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

/// Which end of a ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The writing end.
    Producer,
    /// The reading end.
    Consumer,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Producer => "producer",
            Role::Consumer => "consumer",
        })
    }
}

/// Error claiming a role on a ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClaimError {
    /// The role was already claimed (by this or another process).
    Taken {
        /// The role asked for.
        role: Role,
        /// The value in the claim word: the claimant's pid as it wrote
        /// it (informational only; a hostile peer may write anything).
        owner: u32,
    },
    /// The positions in the header are inconsistent.
    Corrupt(Corruption),
}

impl fmt::Display for ClaimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClaimError::Taken { role, owner } => {
                write!(f, "{role} role already claimed (owner {owner})")
            }
            ClaimError::Corrupt(c) => write!(f, "ring is corrupt: {c}"),
        }
    }
}

impl std::error::Error for ClaimError {}

/// Error creating or opening a ring.
#[derive(Debug)]
#[non_exhaustive]
pub enum OpenError {
    /// A system call failed.
    Io(io::Error),
    /// The requested capacity is not a power of two within
    /// [`MIN_CAPACITY`](crate::MIN_CAPACITY)..=[`MAX_CAPACITY`](crate::MAX_CAPACITY).
    InvalidCapacity(usize),
    /// The file is not (yet) an initialised ring: its creator has not
    /// published the header. Retry, or use [`Ring::open_path_timeout`](crate::Ring::open_path_timeout).
    NotReady,
    /// The file does not start with the ring magic number.
    BadMagic,
    /// The file holds a ring of another layout version.
    VersionMismatch {
        /// Version found in the file.
        found: u32,
    },
    /// The file's size, header size or capacity are inconsistent, or the
    /// file is not a regular file.
    Incompatible(&'static str),
    /// The ring's wake mode does not match the wake fds supplied.
    WakeMismatch,
    /// A memfd was handed over without the seals that keep its size fixed
    /// (a peer could truncate it and crash us with SIGBUS).
    NotSealed,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Io(e) => write!(f, "ring I/O error: {e}"),
            OpenError::InvalidCapacity(c) => write!(
                f,
                "invalid ring capacity {c}: must be a power of two in {}..={}",
                crate::MIN_CAPACITY,
                crate::MAX_CAPACITY
            ),
            OpenError::NotReady => f.write_str("ring file is not initialised yet"),
            OpenError::BadMagic => f.write_str("not a ring file (bad magic)"),
            OpenError::VersionMismatch { found } => write!(
                f,
                "ring layout version {found}, expected {}",
                crate::LAYOUT_VERSION
            ),
            OpenError::Incompatible(why) => write!(f, "incompatible ring file: {why}"),
            OpenError::WakeMismatch => f.write_str("wake fds do not match the ring's wake mode"),
            OpenError::NotSealed => f.write_str("ring memfd is not sealed against resizing"),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for OpenError {
    fn from(e: io::Error) -> OpenError {
        OpenError::Io(e)
    }
}
