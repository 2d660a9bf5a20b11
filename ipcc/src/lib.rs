//! The ringlink client (`ipcc`): connects to a ringlink service, then
//! sends requests and receives responses and events through three
//! shared-memory rings the server created and passed over the handshake
//! socket.
//!
//! Every blocking call also watches the socket, so when the server dies
//! or disconnects, every call (including one already waiting) returns
//! [`Error::Disconnected`] promptly. Timeouts: `None` waits forever, zero
//! does not wait.
//!
//! # Examples
//!
//! ```no_run
//! use ringlink_ipcc::{Client, ConnectOptions};
//! use ringlink_common::ServiceAddr;
//! use std::time::Duration;
//!
//! # fn main() -> ringlink_common::Result<()> {
//! let mut client = Client::connect(&ServiceAddr::named("echo"), &ConnectOptions::new("echo"))?;
//! let mut buf = vec![0u8; client.max_message()];
//! let reply = client.send_recv(1, b"hello", &mut buf, Some(Duration::from_secs(1)))?;
//! assert_eq!(&buf[..reply.len], b"hello");
//! # Ok(())
//! # }
//! ```
#![deny(unsafe_code)]

#[cfg(feature = "tokio")]
mod asynchronous;
mod client;
mod connect;
mod engine;
mod flow;
mod options;
mod stream;

#[cfg(feature = "tokio")]
pub use asynchronous::{AsyncClient, Events, Reply};
pub use client::Client;
pub use engine::{Call, ClientTrace};
pub use options::{ConnectOptions, Message};
pub use ringlink_common::ClientStats;
pub use ringlink_common::{Credentials, Error, Result, ServiceAddr, Transport, Violation};
