//! Where a service listens, and how big its rings are.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::SocketAddr;
use std::path::PathBuf;

use crate::wire::MSG_HEADER_LEN;

/// A service's listening address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ServiceAddr {
    /// A name in Linux's abstract socket namespace (`@name`): no file,
    /// nothing to clean up. Reachable by any process in the same network
    /// namespace; the accept handler decides who gets in.
    Abstract(String),
    /// A socket file at this path.
    Path(PathBuf),
}

impl ServiceAddr {
    /// The abstract address `@name`.
    pub fn named(name: &str) -> ServiceAddr {
        ServiceAddr::Abstract(name.to_owned())
    }

    /// The socket address to bind or connect to.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if the name is too long for a socket address.
    pub fn socket_addr(&self) -> io::Result<SocketAddr> {
        match self {
            ServiceAddr::Abstract(name) => SocketAddr::from_abstract_name(name.as_bytes()),
            ServiceAddr::Path(p) => SocketAddr::from_pathname(p),
        }
    }
}

impl std::fmt::Display for ServiceAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServiceAddr::Abstract(n) => write!(f, "@{n}"),
            ServiceAddr::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Smallest ring a connection gets, whatever its message size.
pub const MIN_RING_CAPACITY: usize = 32 * 1024;

/// The ring capacity that carries messages of up to `max_message` payload
/// bytes: the ring's largest record (`capacity / 2 - 8`) must hold the
/// message header and payload.
pub fn ring_capacity_for(max_message: usize) -> usize {
    let record = MSG_HEADER_LEN + max_message + 8;
    (2 * record).next_power_of_two().max(MIN_RING_CAPACITY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_holds_the_largest_message() {
        for m in [0usize, 1, 100, 4096, 65536, 1 << 20, (1 << 20) + 1] {
            let cap = ring_capacity_for(m);
            assert!(cap.is_power_of_two());
            assert!(cap / 2 - 8 >= MSG_HEADER_LEN + m, "{m} -> {cap}");
        }
        assert_eq!(ring_capacity_for(64), MIN_RING_CAPACITY);
    }
}
