//! The client's side of typed messages: a typed call on [`Client`] and
//! [`AsyncClient`](crate::client::AsyncClient), typed events.

use std::time::Duration;

use super::codec::{with_encoded, with_received};
use super::error::{interpret, TypedError};
use super::{decode_event, Event, Request};
use crate::client::Client;

/// Typed calls and events on a [`Client`].
///
/// The receiving buffer is this thread's, reused from call to call and
/// as large as the largest connection that used it
/// ([`Client::max_message`]); the request is encoded into a buffer of
/// this thread reused the same way. A typed call costs no allocation
/// once they have grown, unless a type's own decoding allocates (a
/// `String`, a `Vec`).
pub trait TypedClient {
    /// Sends `request` (message id `R::ID`) and waits up to `timeout`
    /// (`None`: forever) for its response, decoded as `R::Response`; as
    /// [`Client::send_recv`].
    ///
    /// # Errors
    ///
    /// [`TypedError::Ipc`] with what `send_recv` met (nothing came back:
    /// a timeout, a disconnection, a request larger than the connection
    /// allows); [`TypedError::Encode`] (nothing sent); for the answer,
    /// [`TypedError::App`] (the route's failure),
    /// [`TypedError::Rejected`] (the server could not decode the
    /// request), [`TypedError::UnknownId`], [`TypedError::ServerEncode`],
    /// [`TypedError::Decode`] (the response is not an `R::Response`),
    /// [`TypedError::UnexpectedId`] or [`TypedError::OtherCode`] (an
    /// untyped route answered).
    fn call<R: Request>(
        &mut self,
        request: &R,
        timeout: Option<Duration>,
    ) -> Result<R::Response, TypedError>;

    /// Receives the next event, waiting up to `timeout`, and decodes it
    /// as an `E`: for a connection whose events are all of one type.
    /// With several, receive with [`Client::event_recv`] and decode by id
    /// with [`decode_event`].
    ///
    /// # Errors
    ///
    /// [`TypedError::Ipc`] with what `event_recv` met (including
    /// `Lagged`, not fatal); [`TypedError::UnexpectedId`] for an event of
    /// another id, [`TypedError::Decode`] for one that is not an `E` (the
    /// event is consumed either way).
    fn event_recv_typed<E: Event>(&mut self, timeout: Option<Duration>) -> Result<E, TypedError>;
}

impl TypedClient for Client {
    fn call<R: Request>(
        &mut self,
        request: &R,
        timeout: Option<Duration>,
    ) -> Result<R::Response, TypedError> {
        let max = self.max_message();
        with_encoded(request, |payload| {
            with_received(max, |buf| {
                let m = self.send_recv(R::ID, payload, buf, timeout)?;
                interpret::<R::Response>(R::ID, m.id, m.error, &buf[..m.len])
            })
        })
        .map_err(TypedError::Encode)?
    }

    fn event_recv_typed<E: Event>(&mut self, timeout: Option<Duration>) -> Result<E, TypedError> {
        let max = self.max_message();
        with_received(max, |buf| {
            let m = self.event_recv(buf, timeout)?;
            decode_event::<E>(m.id, &buf[..m.len])
        })
    }
}

#[cfg(feature = "tokio")]
pub use self::asynchronous::TypedAsyncClient;

#[cfg(feature = "tokio")]
mod asynchronous {
    use std::future::Future;

    use super::super::codec::encode;
    use super::{decode_event, interpret, Event, Request, TypedError};
    use crate::client::AsyncClient;

    /// Typed calls and events on an [`AsyncClient`].
    ///
    /// Each call encodes its request into a new buffer (it must live
    /// across the awaits, which may move the task to another thread),
    /// and decodes from the [`Reply`](crate::client::Reply) the async
    /// client hands over, which has its own.
    pub trait TypedAsyncClient {
        /// Sends `request` (message id `R::ID`) and awaits its response,
        /// decoded as `R::Response`; as [`AsyncClient::send_recv`]
        /// (cancellation-safe as it is). The request is encoded before
        /// the future is first polled: the future does not hold it.
        ///
        /// # Errors
        ///
        /// As [`TypedClient::call`](super::TypedClient::call).
        fn call<R: Request>(
            &self,
            request: &R,
        ) -> impl Future<Output = Result<R::Response, TypedError>> + Send;

        /// Awaits the next event and decodes it as an `E` (see
        /// [`TypedClient::event_recv_typed`](super::TypedClient::event_recv_typed)).
        ///
        /// # Errors
        ///
        /// As [`TypedClient::event_recv_typed`](super::TypedClient::event_recv_typed).
        fn event_recv_typed<E: Event>(&self) -> impl Future<Output = Result<E, TypedError>> + Send;
    }

    impl TypedAsyncClient for AsyncClient {
        fn call<R: Request>(
            &self,
            request: &R,
        ) -> impl Future<Output = Result<R::Response, TypedError>> + Send {
            let mut payload = Vec::new();
            let encoded = encode(request, &mut payload);
            let client = self.clone();
            async move {
                encoded.map_err(TypedError::Encode)?;
                let reply = client.send_recv(R::ID, &payload).await?;
                interpret::<R::Response>(R::ID, reply.id, reply.error, &reply.payload)
            }
        }

        fn event_recv_typed<E: Event>(&self) -> impl Future<Output = Result<E, TypedError>> + Send {
            let client = self.clone();
            async move {
                let event = client.event_recv().await?;
                decode_event::<E>(event.id, &event.payload)
            }
        }
    }
}
