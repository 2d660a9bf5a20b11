//! ringlink: local inter-process communication over shared memory, in one
//! dependency. A server ([`server`]) accepts many client processes
//! ([`client`]); each connection carries its requests, responses and
//! events through lock-free rings in sealed memfds, introduced by a Unix
//! socket that also passes kernel-verified credentials. Both roles also
//! speak libqb's protocol.
//!
//! Features: `server` and `client` (both on by default), `tokio` (the
//! service as a task, `AsyncClient`), `serde` (statistics snapshots),
//! `typed` (`ringlink::typed`: requests, responses and events as
//! serde types, typed routes and calls, decode failures answered with a
//! typed error). The types both roles share are at the crate's root.
//!
//! # Examples
//!
//! A service and a client in one program (they would normally be two):
//!
//! ```
//! use ringlink::client::{Client, ConnectOptions};
//! use ringlink::server::{Connection, Handler, Request, Service, ServiceOptions};
//! use ringlink::ServiceAddr;
//! use std::time::Duration;
//!
//! struct Echo;
//! impl Handler for Echo {
//!     fn message(&self, conn: &Connection, req: &Request<'_>) {
//!         let _ = conn.respond(req.seq(), req.id(), req.payload());
//!     }
//! }
//!
//! # fn main() -> ringlink::Result<()> {
//! let addr = ServiceAddr::named(&format!("ringlink-doc-{}", std::process::id()));
//! let mut service = Service::bind(addr.clone(), "echo", ServiceOptions::default(), Echo)?;
//! let control = service.control_handle();
//! let server = std::thread::spawn(move || service.run());
//!
//! let mut client = Client::connect(&addr, &ConnectOptions::new("echo").wait_for_server(true))?;
//! let mut buf = vec![0u8; client.max_message()];
//! let reply = client.send_recv(1, b"hello", &mut buf, Some(Duration::from_secs(5)))?;
//! assert_eq!(&buf[..reply.len], b"hello");
//!
//! drop(client);
//! control.shutdown();
//! server.join().expect("server thread")?;
//! # Ok(())
//! # }
//! ```
#![deny(unsafe_code)]

pub use ringlink_common::wire::{Status, WireError, ERROR_UNKNOWN_ID};
pub use ringlink_common::{
    Channel, ClientStats, ConnectionStats, Corruption, Credentials, Error, Framing, Peer,
    QbCorruption, RateLimit, Rejections, Result, RingRefusal, ServiceAddr, ServiceStats, Transport,
    Violation,
};

/// The server: a [`Service`](server::Service) and what plugs into it
/// (`ringlink-ipcs`).
#[cfg(feature = "server")]
pub mod server {
    pub use ringlink_ipcs::*;
}

/// The client: [`Client`](client::Client), and `AsyncClient` with the
/// `tokio` feature (`ringlink-ipcc`).
#[cfg(feature = "client")]
pub mod client {
    pub use ringlink_ipcc::*;
}

#[cfg(feature = "typed")]
pub mod typed;
