//! The ringlink server (`ipcs`).
//!
//! Not built yet: the handshake, connection lifecycle and event loop are
//! the next piece of work (see the project's issue tracker). This crate
//! exists so that the workspace has its final shape; it exports nothing
//! that pretends to work. The ring it will serve over is
//! [`ringlink_ringbuf`].
#![deny(unsafe_code)]

pub use ringlink_common::Credentials;
