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
//! ```
//! use ringlink_ipcc::{Client, ConnectOptions};
//! use ringlink_ipcc::ServiceAddr;
//! use std::time::Duration;
//!
//! # fn main() -> ringlink_ipcc::Result<()> {
//! # use ringlink_ipcs::{Dispatch, Service, ServiceOptions};
//! # let addr = ringlink_ipcc::ServiceAddr::named(&format!("ringlink-doc-{}", std::process::id()));
//! # let table = Dispatch::new().on(1, |c, r| { let _ = c.respond(r.seq(), 1, r.payload()); });
//! # let mut service = Service::bind(addr.clone(), "echo", ServiceOptions::default(), table)?;
//! # let control = service.control_handle();
//! # let server = std::thread::spawn(move || service.run());
//! # /*
//! let addr = ServiceAddr::named("echo");
//! # */
//! let mut client = Client::connect(&addr, &ConnectOptions::new("echo"))?;
//! let mut buf = vec![0u8; client.max_message()];
//! let reply = client.send_recv(1, b"hello", &mut buf, Some(Duration::from_secs(1)))?;
//! assert_eq!(&buf[..reply.len], b"hello");
//! # control.shutdown();
//! # server.join().expect("server thread")?;
//! # Ok(())
//! # }
//! ```
//!
//! Every type in this crate's signatures is reachable from it, so a
//! client needs no other ringlink crate:
//!
//! ```
//! use ringlink_ipcc::{ClientStats, Error, RateLimit, Status, Violation, WireError};
//!
//! fn refused(e: &Error) -> Option<Status> {
//!     match e {
//!         Error::Rejected(status) => Some(*status),
//!         _ => None,
//!     }
//! }
//! let _ = (refused, RateLimit::Off);
//! let _: Option<(ClientStats, Violation, WireError)> = None;
//! ```
#![deny(unsafe_code)]
// On docs.rs (nightly), mark what a feature enables.
#![cfg_attr(docsrs, feature(doc_cfg))]

/// A `tracing` event at `$level` (target `ringlink::client`) with the
/// `tracing` feature; nothing, its arguments unevaluated, without it.
macro_rules! event {
    ($level:ident, $($arg:tt)+) => {{
        #[cfg(feature = "tracing")]
        tracing::$level!(target: "ringlink::client", $($arg)+);
    }};
}

#[cfg(feature = "tokio")]
mod asynchronous;
mod client;
mod connect;
mod engine;
mod flow;
mod options;
mod stream;

#[cfg(feature = "tokio")]
pub use asynchronous::{AsyncClient, Events};
pub use client::{Client, EventIter, RequestSlot};
pub use engine::{Call, ClientTrace, Interrupter};
pub use options::{ConnectOptions, Message, Reply};
// Every type in this crate's public signatures, reachable from here: a
// user depends on this crate alone.
pub use ringlink_common::wire::{Status, WireError, ERROR_UNKNOWN_ID};
pub use ringlink_common::{
    Channel, ClientStats, Corruption, Credentials, Error, FdFault, FdKind, FdTerms, Framing, Peer,
    QbCorruption, RateLimit, Result, RingRefusal, ServiceAddr, Transport, Violation,
};
