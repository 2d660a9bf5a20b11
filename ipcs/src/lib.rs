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
#![deny(unsafe_code)]

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

pub use connection::{CallReply, Connection};
#[allow(deprecated)]
pub use control::{ControlHandle, ShutdownHandle};
pub use dispatch::Dispatch;
pub use handler::{Handler, OwnedRequest, Reject, Request, RingAuth};
pub use hooks::{CloseReason, Fault, FaultKind, Trace, TraceStage};
pub use options::{EventQueue, QueuePolicy, ServiceOptions};
pub use ringlink_common::wire::ERROR_UNKNOWN_ID;
pub use ringlink_common::{
    Channel, Corruption, Credentials, Error, Peer, RateLimit, Result, ServiceAddr, Transport,
    Violation,
};
pub use service::{Activity, Service};
pub use sources::{FdId, Interest, Readiness, TimerId};
