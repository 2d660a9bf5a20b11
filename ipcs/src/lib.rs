//! The ringlink server (`ipcs`): accepts client processes on a Unix
//! socket, gives each connection three shared-memory rings (requests,
//! responses, events), and dispatches requests to the application's
//! [`Handler`] from one epoll loop.
//!
//! The socket carries only the handshake (`docs/PROTOCOL.md`); afterwards
//! it stays open so that each side sees the other's death at once. The
//! server trusts nothing the client writes: credentials come from the
//! kernel (`SO_PEERCRED`), ring sizes are capped by the server, every
//! handshake read has a deadline and a size limit, and a client that
//! corrupts its rings is disconnected without affecting the others.
//!
//! Every type in this crate's signatures is reachable from it, so a
//! service needs no other ringlink crate:
//!
//! ```
//! use ringlink_ipcs::{
//!     Channel, ConnectionStats, Error, QbTransport, RateLimit, Rejections, ServiceAddr,
//!     ServiceStats, Status, Violation, WireError,
//! };
//!
//! fn refused(e: &Error) -> Option<Status> {
//!     match e {
//!         Error::Rejected(status) => Some(*status),
//!         _ => None,
//!     }
//! }
//! let _ = (refused, ServiceAddr::named("x"), RateLimit::Off2, QbTransport::Shm, Channel::Request);
//! let _: Option<(ServiceStats, Rejections, ConnectionStats, Violation, WireError)> = None;
//! ```
#![deny(unsafe_code)]
// On docs.rs (nightly), mark what a feature enables.
#![cfg_attr(docsrs, feature(doc_cfg))]

/// A `tracing` event at `$level` (target `ringlink::server`) with the
/// `tracing` feature; nothing, its arguments unevaluated, without it.
macro_rules! event {
    ($level:ident, $($arg:tt)+) => {{
        #[cfg(feature = "tracing")]
        tracing::$level!(target: "ringlink::server", $($arg)+);
    }};
}

mod census;
mod connection;
mod connections;
mod control;
mod dispatch;
mod flow;
mod handler;
mod handshakes;
mod hooks;
mod listener;
mod options;
mod remote;
mod service;
mod slab;
mod sources;

pub use connection::{CallReply, Connection, MessageSlot};
#[allow(deprecated)]
pub use control::{ControlHandle, ShutdownHandle};
pub use dispatch::Dispatch;
pub use handler::{Handler, OwnedRequest, Reject, Request, RingAuth};
pub use hooks::{CloseReason, Fault, FaultKind, Trace, TraceStage};
pub use options::{EventQueue, QueuePolicy, ServiceOptions};
// Every type in this crate's public signatures, reachable from here: a
// user depends on this crate alone.
pub use ringlink_common::qb::QbTransport;
pub use ringlink_common::wire::{Status, WireError, ERROR_UNKNOWN_ID};
pub use ringlink_common::{
    Channel, ConnectionStats, Corruption, Credentials, Error, FdFault, FdKind, FdTerms, Framing,
    Peer, QbCorruption, RateLimit, Rejections, Result, RingRefusal, ServiceAddr, ServiceStats,
    Transport, Violation,
};
pub use service::{Activity, Service};
pub use sources::{FdId, Interest, Readiness, TimerId};
