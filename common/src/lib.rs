//! Types and helpers shared by the ringlink server (`ringlink-ipcs`) and
//! client (`ringlink-ipcc`).
//!
//! For now: process credentials and fd passing over Unix sockets; the
//! handshake wire types and the message header join them with the server
//! and client.
#![deny(unsafe_code)]

pub mod fdpass;

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
