//! The server's side of typed messages: routes on a [`Dispatch`] by a
//! request type's id, typed answers and events on a [`Connection`].

use std::io::IoSlice;
use std::time::Duration;

use super::codec::{decode, decode_copied, with_encoded, CodecError};
use super::error::{AppError, TypedError, ERROR_DECODE, ERROR_ENCODE, MAX_REASON};
use super::{Event, Request};
use crate::server::{Connection, Dispatch, OwnedRequest};
use crate::Error;

/// Typed routes on a [`Dispatch`]: each registered by its request type's
/// id, its payload decoded into that type, its answer encoded.
///
/// A request that does not decode is answered with [`ERROR_DECODE`] and
/// a short reason, never silence (the client sees
/// [`TypedError::Rejected`]); the route does not run. The route's
/// `Ok(response)` is answered with error code 0, its `Err(AppError)` with
/// the error's code and detail. A response that cannot be encoded, or is
/// larger than the connection allows, is answered with [`ERROR_ENCODE`]
/// and the reason. A one-way request (`Client::send_oneway`) runs its
/// route, and nothing is answered.
///
/// # Examples
///
/// ```
/// use ringlink::server::Dispatch;
/// use ringlink::typed::{AppError, Request, TypedDispatch};
/// # use ringlink::typed::serde::{Deserialize, Serialize};
///
/// # #[derive(Serialize, Deserialize)]
/// # #[serde(crate = "ringlink::typed::serde")]
/// struct Get { key: String }
/// impl Request for Get {
///     const ID: i32 = 1;
///     type Response = u64;
/// }
///
/// const NOT_FOUND: i32 = 1;
/// let table = Dispatch::new().route(|_conn, req: Get| match req.key.as_str() {
///     "answer" => Ok(42),
///     _ => Err(AppError::with_detail(NOT_FOUND, &req.key)),
/// });
/// assert!(table.handles(Get::ID));
/// ```
pub trait TypedDispatch: Sized {
    /// Registers `route` for requests of type `R` (message id `R::ID`),
    /// run on the service's loop thread, as [`Dispatch::on`].
    ///
    /// # Panics
    ///
    /// If the table already has a route for `R::ID`: two request types
    /// with one id is a mistake that would otherwise show only as
    /// requests rejected at run time.
    fn route<R: Request>(
        self,
        route: impl Fn(&Connection, R) -> Result<R::Response, AppError> + Send + Sync + 'static,
    ) -> Self;

    /// Registers `route` for requests of type `R`, run on the table's
    /// worker pool, as [`Dispatch::on_blocking`] (the request is decoded
    /// on the worker).
    ///
    /// # Panics
    ///
    /// As [`route`](Self::route).
    fn route_blocking<R: Request>(
        self,
        route: impl Fn(&Connection, R) -> Result<R::Response, AppError> + Send + Sync + 'static,
    ) -> Self;
}

impl TypedDispatch for Dispatch {
    fn route<R: Request>(
        self,
        route: impl Fn(&Connection, R) -> Result<R::Response, AppError> + Send + Sync + 'static,
    ) -> Dispatch {
        check_free::<R>(&self);
        self.on(R::ID, move |conn, req| {
            // The payload lies in the client's ring, which the client
            // can write while it is decoded: from a copy.
            serve::<R>(
                conn,
                req.seq(),
                req.needs_response(),
                req.payload(),
                true,
                &route,
            );
        })
    }

    fn route_blocking<R: Request>(
        self,
        route: impl Fn(&Connection, R) -> Result<R::Response, AppError> + Send + Sync + 'static,
    ) -> Dispatch {
        check_free::<R>(&self);
        self.on_blocking(R::ID, move |conn, req: &OwnedRequest| {
            // A copy already, the worker's own.
            serve::<R>(
                conn,
                req.seq(),
                req.needs_response(),
                req.payload(),
                false,
                &route,
            );
        })
    }
}

fn check_free<R: Request>(table: &Dispatch) {
    assert!(
        !table.handles(R::ID),
        "message id {} ({}) already has a route",
        R::ID,
        std::any::type_name::<R>()
    );
}

/// Decodes a request (from a copy first if the peer can still write
/// `payload`: `shared`), runs its route, answers (unless it is one-way).
fn serve<R: Request>(
    conn: &Connection,
    seq: u64,
    needs_response: bool,
    payload: &[u8],
    shared: bool,
    route: &impl Fn(&Connection, R) -> Result<R::Response, AppError>,
) {
    let decoded = if shared {
        decode_copied::<R>(payload)
    } else {
        decode::<R>(payload)
    };
    let answer = match decoded {
        Ok(req) => route(conn, req),
        Err(e) => {
            if needs_response {
                let _ = conn.reject_typed::<R>(seq, &e);
            }
            return;
        }
    };
    if needs_response {
        // As Dispatch does with its own answers: a client that left, or
        // does not read, is its own problem.
        let _ = conn.respond_typed::<R>(seq, &answer);
    }
}

/// Answers request `seq` with a reserved code and a short reason.
fn answer_reason(conn: &Connection, seq: u64, id: i32, code: i32, why: &str) -> Result<(), Error> {
    let mut end = why.len().min(MAX_REASON);
    while !why.is_char_boundary(end) {
        end -= 1;
    }
    conn.respond_vectored(seq, id, code, &[IoSlice::new(&why.as_bytes()[..end])])
}

/// Typed answers and events on a [`Connection`].
///
/// # Examples
///
/// A route answering later, from another thread: it keeps the request's
/// sequence number and answers with [`respond_typed`](Self::respond_typed).
///
/// ```
/// use ringlink::server::Dispatch;
/// use ringlink::typed::{decode_copied, Request, TypedConnection};
/// # use ringlink::typed::serde::{Deserialize, Serialize};
///
/// # #[derive(Serialize, Deserialize)]
/// # #[serde(crate = "ringlink::typed::serde")]
/// struct Slow { n: u32 }
/// impl Request for Slow {
///     const ID: i32 = 9;
///     type Response = u32;
/// }
///
/// let table = Dispatch::new().on(Slow::ID, |conn, req| {
///     let (conn, seq) = (conn.clone(), req.seq());
///     // From a copy: the payload lies in the client's ring.
///     let parsed = decode_copied::<Slow>(req.payload());
///     std::thread::spawn(move || {
///         let _ = match parsed {
///             Ok(slow) => conn.respond_typed::<Slow>(seq, &Ok(slow.n * 2)),
///             Err(e) => conn.reject_typed::<Slow>(seq, &e),
///         };
///     });
/// });
/// # drop(table);
/// ```
pub trait TypedConnection {
    /// Answers request `seq` (of type `R`) with `answer`: a response, or
    /// the application's failure. A response that cannot be encoded, or
    /// is larger than the connection allows, is answered with
    /// [`ERROR_ENCODE`] and the reason instead (and that is the error
    /// returned).
    ///
    /// # Errors
    ///
    /// [`TypedError::Encode`] (then [`ERROR_ENCODE`] was answered);
    /// [`TypedError::Ipc`] with what [`Connection::respond`] met.
    fn respond_typed<R: Request>(
        &self,
        seq: u64,
        answer: &Result<R::Response, AppError>,
    ) -> Result<(), TypedError>;

    /// Answers request `seq` (of type `R`), whose payload did not decode
    /// (`why`, from [`decode`](super::decode)), with [`ERROR_DECODE`] and
    /// the reason, as typed routes do.
    ///
    /// # Errors
    ///
    /// [`TypedError::Ipc`] with what [`Connection::respond`] met.
    fn reject_typed<R: Request>(&self, seq: u64, why: &CodecError) -> Result<(), TypedError>;

    /// Sends `event` (message id `E::ID`), without waiting, as
    /// [`Connection::send_event`].
    ///
    /// # Errors
    ///
    /// [`TypedError::Encode`] (nothing sent); [`TypedError::Ipc`] with
    /// what `send_event` met (a full ring: `WouldBlock`).
    fn send_typed_event<E: Event>(&self, event: &E) -> Result<(), TypedError>;

    /// Sends `event`, waiting up to `timeout` for room, as
    /// [`Connection::send_event_timeout`] (not from a handler: see
    /// there).
    ///
    /// # Errors
    ///
    /// As [`send_typed_event`](Self::send_typed_event), with
    /// `TimedOut` instead of `WouldBlock`.
    fn send_typed_event_timeout<E: Event>(
        &self,
        event: &E,
        timeout: Duration,
    ) -> Result<(), TypedError>;
}

impl TypedConnection for Connection {
    fn respond_typed<R: Request>(
        &self,
        seq: u64,
        answer: &Result<R::Response, AppError>,
    ) -> Result<(), TypedError> {
        let sent = match answer {
            Ok(response) => with_encoded(response, |bytes| self.respond(seq, R::ID, bytes)),
            Err(app) => match app.unencodable() {
                None => Ok(self.respond_error(seq, R::ID, app.code(), app.detail_bytes())),
                Some(e) => Err(e.clone()),
            },
        };
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(Error::MessageTooLarge { len, max })) => {
                let why = format!(
                    "the response to message id {} is {len} bytes, above the connection's \
                     maximum of {max}",
                    R::ID
                );
                answer_reason(self, seq, R::ID, ERROR_ENCODE, &why)?;
                Err(TypedError::Ipc(Error::MessageTooLarge { len, max }))
            }
            Ok(Err(e)) => Err(TypedError::Ipc(e)),
            Err(e) => {
                let why = format!("the answer to message id {} did not encode: {e}", R::ID);
                answer_reason(self, seq, R::ID, ERROR_ENCODE, &why)?;
                Err(TypedError::Encode(e))
            }
        }
    }

    fn reject_typed<R: Request>(&self, seq: u64, why: &CodecError) -> Result<(), TypedError> {
        let why = format!("request of message id {} did not decode: {why}", R::ID);
        answer_reason(self, seq, R::ID, ERROR_DECODE, &why).map_err(TypedError::Ipc)
    }

    fn send_typed_event<E: Event>(&self, event: &E) -> Result<(), TypedError> {
        with_encoded(event, |bytes| self.send_event(E::ID, bytes))
            .map_err(TypedError::Encode)?
            .map_err(TypedError::Ipc)
    }

    fn send_typed_event_timeout<E: Event>(
        &self,
        event: &E,
        timeout: Duration,
    ) -> Result<(), TypedError> {
        with_encoded(event, |bytes| {
            self.send_event_timeout(E::ID, bytes, timeout)
        })
        .map_err(TypedError::Encode)?
        .map_err(TypedError::Ipc)
    }
}
