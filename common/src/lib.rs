//! Types and helpers shared by the ringlink server (`ringlink-ipcs`) and
//! client (`ringlink-ipcc`): the handshake and message-header wire
//! format, the error type, credentials, service addresses, and fd passing
//! over Unix sockets.
#![deny(unsafe_code)]

pub mod activation;
mod addr;
mod error;
pub mod fdpass;
pub mod handshake;
pub mod qb;
mod rate;
mod stats;
pub mod time;
mod violation;
pub mod wire;

pub use addr::ServiceAddr;
pub use error::{Error, Result};
pub use rate::RateLimit;
pub use stats::{ClientStats, ConnectionStats, Rejections, ServiceStats};
pub use violation::{
    Channel, Corruption, FdFault, FdKind, Framing, Peer, QbCorruption, RingRefusal, Violation,
};
pub use wire::{FdTerms, Transport};

use std::io;
use std::os::unix::net::UnixStream;

/// Kernel-verified identity of a peer process (from `SO_PEERCRED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Credentials {
    /// Process id.
    pub pid: i32,
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
}

impl Credentials {
    /// The credentials of the process at the other end of `sock`, as the
    /// kernel recorded them when the connection was made.
    ///
    /// # Errors
    ///
    /// The `getsockopt` failure.
    pub fn of_peer(sock: &UnixStream) -> io::Result<Credentials> {
        let c = nix::sys::socket::getsockopt(sock, nix::sys::socket::sockopt::PeerCredentials)
            .map_err(io::Error::from)?;
        Ok(Credentials {
            pid: c.pid(),
            uid: c.uid(),
            gid: c.gid(),
        })
    }

    /// The credentials of this process.
    pub fn current() -> Credentials {
        Credentials {
            pid: std::process::id() as i32,
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
        }
    }
}

/// The payload length of a message made of `parts`, checked against
/// the negotiated maximum `max` before anything is written.
///
/// # Errors
///
/// [`Error::MessageTooLarge`] if it is
/// over `max`.
#[inline]
pub fn payload_len(parts: &[std::io::IoSlice<'_>], max: usize) -> Result<usize> {
    let len = parts
        .iter()
        .map(|p| p.len())
        .fold(0usize, usize::saturating_add);
    if len > max {
        return Err(Error::MessageTooLarge { len, max });
    }
    Ok(len)
}
