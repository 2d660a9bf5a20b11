//! The ringlink client (`ipcc`).
//!
//! Not built yet: connecting, sending, receiving and events are
//! the next piece of work (see the project's issue tracker). This crate
//! exists so that the workspace has its final shape; it exports nothing
//! that pretends to work. The ring it will talk over is
//! [`ringlink_ringbuf`].
#![deny(unsafe_code)]

pub use ringlink_common::Credentials;
