//! Typed messages (feature `typed`): requests, responses and events as
//! serde types, encoded with postcard, over the same connections as
//! raw ones.
//!
//! - A request type declares its message id and its response type once
//!   ([`Request`]); an event type its id ([`Event`]).
//! - The server registers typed routes on a [`Dispatch`](crate::server::Dispatch)
//!   by the type's id ([`TypedDispatch::route`]); a route gets the
//!   decoded request and returns `Result<Response, AppError>`. Answers
//!   and events can also be sent from any thread ([`TypedConnection`]).
//! - The client calls with [`TypedClient::call`] (blocking) or
//!   `TypedAsyncClient::call` (tokio, with the `tokio` feature): the
//!   id, the request type and the response type come from one type, and
//!   cannot be mixed up.
//! - Every failure is a [`TypedError`]: the application's own
//!   ([`AppError`]: a positive code in the response's error field and an
//!   optional serde detail as its payload), and the typed layer's,
//!   answered with reserved codes and a short reason, never with
//!   silence: a request that does not decode as the route's type gets
//!   [`ERROR_DECODE`] (the client sees [`TypedError::Rejected`]), a
//!   response the server cannot encode [`ERROR_ENCODE`]
//!   ([`TypedError::ServerEncode`]), an id with no route
//!   [`ERROR_UNKNOWN_ID`](crate::ERROR_UNKNOWN_ID)
//!   ([`TypedError::UnknownId`]).
//!
//! On the wire a typed message is an ordinary one: its id is the type's
//! `ID`, its payload the value in postcard's format (its specification is
//! stable since postcard 1.0), so an untyped peer in any language can
//! speak to a typed one. `docs/TYPED.md` has the details, and the
//! measurements behind the codec and the cost against raw bytes.
//!
//! Types derive `Serialize` and `Deserialize` from serde; without a
//! dependency on serde of your own, use its re-export here
//! (`ringlink::typed::serde`) with `#[serde(crate =
//! "ringlink::typed::serde")]`, as the example does.
//!
//! # Examples
//!
//! A typed service and a client in one program (they would normally be
//! two):
//!
//! ```
//! use ringlink::client::{Client, ConnectOptions};
//! use ringlink::server::{Dispatch, Service, ServiceOptions};
//! use ringlink::typed::serde::{Deserialize, Serialize};
//! use ringlink::typed::{AppError, Request, TypedClient, TypedDispatch, TypedError};
//! use ringlink::ServiceAddr;
//! use std::sync::atomic::{AtomicI64, Ordering};
//! use std::time::Duration;
//!
//! /// Adds `by` to the counter; answers its new value.
//! #[derive(Debug, Serialize, Deserialize)]
//! #[serde(crate = "ringlink::typed::serde")]
//! struct Incr {
//!     by: i64,
//! }
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! #[serde(crate = "ringlink::typed::serde")]
//! struct Counter {
//!     value: i64,
//! }
//!
//! impl Request for Incr {
//!     const ID: i32 = 1;
//!     type Response = Counter;
//! }
//!
//! /// The application's error code for an increment that would overflow.
//! const OVERFLOW: i32 = 1;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let counter = AtomicI64::new(0);
//! let table = Dispatch::new().route(move |_conn, req: Incr| {
//!     let old = counter.load(Ordering::Relaxed);
//!     let value = old
//!         .checked_add(req.by)
//!         .ok_or_else(|| AppError::with_detail(OVERFLOW, &old))?;
//!     counter.store(value, Ordering::Relaxed);
//!     Ok(Counter { value })
//! });
//!
//! let addr = ServiceAddr::named(&format!("ringlink-typed-doc-{}", std::process::id()));
//! let mut service = Service::bind(addr.clone(), "counter", ServiceOptions::default(), table)?;
//! let control = service.control_handle();
//! let server = std::thread::spawn(move || service.run());
//!
//! let mut client = Client::connect(&addr, &ConnectOptions::new("counter").wait_for_server(true))?;
//! let timeout = Some(Duration::from_secs(5));
//! assert_eq!(client.call(&Incr { by: 2 }, timeout)?, Counter { value: 2 });
//! match client.call(&Incr { by: i64::MAX }, timeout) {
//!     Err(TypedError::App(e)) if e.code() == OVERFLOW => assert_eq!(e.detail::<i64>()?, 2),
//!     other => panic!("expected an overflow, got {other:?}"),
//! }
//!
//! drop(client);
//! control.shutdown();
//! server.join().expect("server thread")?;
//! # Ok(())
//! # }
//! ```

mod codec;
mod error;

#[cfg(feature = "client")]
mod client;
#[cfg(feature = "server")]
mod server;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use serde;

#[cfg(all(feature = "client", feature = "tokio"))]
pub use self::client::TypedAsyncClient;
#[cfg(feature = "client")]
pub use self::client::TypedClient;
pub use self::codec::{decode, decode_copied, encode, CodecError};
pub use self::error::{AppError, TypedError, ERROR_DECODE, ERROR_ENCODE, MAX_REASON};
#[cfg(feature = "server")]
pub use self::server::{TypedConnection, TypedDispatch};

/// A typed request: its message id and the type of its response.
///
/// # Examples
///
/// ```
/// use ringlink::typed::Request;
/// # use ringlink::typed::serde::{Deserialize, Serialize};
///
/// # #[derive(Serialize, Deserialize)]
/// # #[serde(crate = "ringlink::typed::serde")]
/// struct Lookup { key: String }
///
/// impl Request for Lookup {
///     const ID: i32 = 3;
///     type Response = Option<Vec<u8>>;
/// }
/// ```
pub trait Request: Serialize + DeserializeOwned {
    /// The message id requests of this type travel with (and their
    /// responses answer with). One id per request type on a service.
    const ID: i32;
    /// What the server answers, when it does not fail.
    type Response: Serialize + DeserializeOwned;
}

/// A typed event: its message id.
pub trait Event: Serialize + DeserializeOwned {
    /// The message id events of this type travel with.
    const ID: i32;
}

/// Decodes an event of message id `id` as an `E`: for a client that
/// receives events of several types, and matches on the id first.
///
/// # Errors
///
/// [`TypedError::UnexpectedId`] if `id` is not `E::ID`;
/// [`TypedError::Decode`] if the payload is not an `E`.
///
/// # Examples
///
/// ```
/// use ringlink::typed::{decode_event, encode, Event, TypedError};
/// # use ringlink::typed::serde::{Deserialize, Serialize};
///
/// #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// # #[serde(crate = "ringlink::typed::serde")]
/// struct Tick(u64);
/// impl Event for Tick {
///     const ID: i32 = 100;
/// }
///
/// let mut payload = Vec::new();
/// encode(&Tick(5), &mut payload)?;
/// assert_eq!(decode_event::<Tick>(100, &payload)?, Tick(5));
/// assert!(matches!(
///     decode_event::<Tick>(101, &payload),
///     Err(TypedError::UnexpectedId { expected: 100, got: 101 })
/// ));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn decode_event<E: Event>(id: i32, payload: &[u8]) -> Result<E, TypedError> {
    if id != E::ID {
        return Err(TypedError::UnexpectedId {
            expected: E::ID,
            got: id,
        });
    }
    decode(payload).map_err(TypedError::Decode)
}
