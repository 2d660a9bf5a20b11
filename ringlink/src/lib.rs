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
//! typed error), `tracing` (`tracing` events from both roles: connections
//! made and closed with why, refusals, faults and protocol violations,
//! flow-control changes; targets `ringlink::server` and
//! `ringlink::client`). The types both roles share are at the crate's
//! root.
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
// On docs.rs (nightly), mark what a feature enables.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use ringlink_common::wire::{Status, WireError, ERROR_UNKNOWN_ID};
pub use ringlink_common::{
    Channel, ClientStats, ConnectionStats, Corruption, Credentials, Error, FdFault, FdKind,
    FdTerms, Framing, Peer, QbCorruption, RateLimit, Rejections, Result, RingRefusal, ServiceAddr,
    ServiceStats, Transport, Violation,
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

/// `docs/COOKBOOK.md`: every recipe compiled and run as a doc test. They
/// use every feature (CI's all-features step runs them).
#[cfg(all(
    doctest,
    feature = "server",
    feature = "client",
    feature = "typed",
    feature = "tokio"
))]
#[doc = include_str!("../../docs/COOKBOOK.md")]
struct CookbookDoctests;

#[cfg(test)]
mod tests {
    /// The lines of the first Rust code block of `text`, trimmed, the
    /// blank ones left out; `prefix` is what each line of the text starts
    /// with (`//!` in a crate doc), and a doc test's hidden `# ` lines
    /// count as shown.
    fn example(text: &str, prefix: &str) -> Vec<String> {
        let mut lines = text
            .lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .map(str::trim);
        let start = lines.by_ref().position(|l| l == "```" || l == "```rust");
        assert!(start.is_some(), "no code block");
        lines
            .take_while(|l| *l != "```")
            .map(|l| l.strip_prefix("# ").unwrap_or(l).trim().to_string())
            .filter(|l| !l.is_empty() && l != "#")
            .collect()
    }

    /// The crate page (README.md, what crates.io shows) runs the example
    /// of the crate's doc, which is compiled and run as a doc test.
    #[test]
    fn readme_shows_the_crate_doc_example() {
        let doc = example(include_str!("lib.rs"), "//!");
        let readme = example(include_str!("../README.md"), "");
        assert!(doc.len() > 10, "{doc:?}");
        assert_eq!(readme, doc);
    }
}
