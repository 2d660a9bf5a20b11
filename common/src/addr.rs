//! Where a service listens.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::SocketAddr;
use std::path::PathBuf;

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
