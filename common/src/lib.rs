//! Types shared by the ringlink server (`ringlink-ipcs`) and client
//! (`ringlink-ipcc`).
//!
//! For now this holds the process credentials both sides exchange; the
//! handshake wire types and the message header join it with the server
//! and client.

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
