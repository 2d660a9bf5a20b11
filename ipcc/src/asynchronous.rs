//! The async client, for tokio (feature `tokio`).
//!
//! An [`AsyncClient`] is a [`Client`] behind a lock, shared by every task
//! that clones it. The lock is biased to the thread that keeps calling
//! ([`BiasedMutex`]): a task that has the connection to itself takes it
//! with plain loads and stores, and another thread taking it revokes the
//! bias (a membarrier, rarer with each revocation).
//!
//! No call blocks a thread: a call tries the rings (or sockets) first,
//! without a system call when there is something to take or room to
//! write, and only when it must wait does it arm the ring's wake-up and
//! await the fd under tokio's reactor (`AsyncFd`).
//!
//! [`try_send`](AsyncClient::try_send) and
//! [`try_send_oneway`](AsyncClient::try_send_oneway) send at once or say
//! `WouldBlock`, without a future: a stream of requests that calls them
//! first goes faster than one that awaits every send.
//!
//! Many requests may be in flight from many tasks on one connection:
//! whichever task finds responses in the ring files them by sequence
//! number, and wakes the others.
//!
//! # Cancellation
//!
//! Every future here is cancellation-safe in the sense that dropping it
//! loses no message and leaves the connection usable:
//!
//! - [`send`](AsyncClient::send) and the other sends: a request dropped
//!   before it went is not sent at all; once it went it goes whole. Over
//!   the socket transport a request larger than the socket takes at once
//!   goes as the server reads it, and the future completes only once it
//!   all left: dropped meanwhile, the request is committed and its tail
//!   goes with the client's next calls, or [`flush`](AsyncClient::flush)
//!   ([`unsent_request`](AsyncClient::unsent_request) says which one
//!   waits; a drop of the last clone sends what the socket takes at
//!   that moment and never waits, since it may run on a runtime thread
//!   the service itself needs: `flush().await` first to be sure).
//! - [`send_recv`](AsyncClient::send_recv): if dropped after the request
//!   went, its response, when it comes, is delivered to
//!   [`recv`](AsyncClient::recv) instead.
//! - [`recv`](AsyncClient::recv), [`event_recv`](AsyncClient::event_recv)
//!   and [`Events`]: a message is taken only in the poll that returns it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::io::IoSlice;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_core::Stream;
use ringlink_common::{Credentials, Error, Result, ServiceAddr, Transport};
use ringlink_ringbuf::bias::{BiasedGuard, BiasedMutex};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::Notify;

use crate::engine::{Engine, Wait};
use crate::{Client, ConnectOptions, Reply};

/// What the tasks share, behind the lock.
struct State {
    engine: Engine,
    /// Receive buffer of the connection's largest message.
    scratch: Vec<u8>,
    /// Sequence numbers a `send_recv` in flight waits for.
    claimed: HashSet<u64>,
    /// Their responses, once read from the ring.
    arrived: HashMap<u64, Reply>,
    /// Responses nobody claims, in arrival order, for `recv`.
    unclaimed: VecDeque<Reply>,
}

impl Drop for State {
    /// Replies filed and never taken: their fds are the server's choice of
    /// file, closed away from this thread (`fdpass::reap`).
    fn drop(&mut self) {
        let filed = self
            .arrived
            .drain()
            .map(|(_, r)| r)
            .chain(self.unclaimed.drain(..));
        ringlink_common::fdpass::reap(filed.flat_map(|r| r.fds));
    }
}

impl State {
    /// Reads responses until the one numbered `seq` (claimed) comes,
    /// which refills `reply` in place; the others are filed.
    fn pump_for(&mut self, seq: u64, reply: &mut Reply) -> Result<Option<()>> {
        while let Some(m) = self.engine.try_recv(false, &mut self.scratch)? {
            if m.seq == seq {
                reply.refill(m, &self.scratch, &mut self.engine);
                return Ok(Some(()));
            }
            let r = Reply::take(m, &self.scratch, &mut self.engine);
            if self.claimed.contains(&r.seq) {
                self.arrived.insert(r.seq, r);
            } else {
                self.unclaimed.push_back(r);
            }
        }
        Ok(None)
    }

    /// Files every response the ring holds. Stops at the first error,
    /// after the responses before it.
    fn pump(&mut self) -> Result<bool> {
        let mut moved = false;
        while let Some(m) = self.engine.try_recv(false, &mut self.scratch)? {
            let r = Reply::take(m, &self.scratch, &mut self.engine);
            if self.claimed.contains(&r.seq) {
                self.arrived.insert(r.seq, r);
            } else {
                self.unclaimed.push_back(r);
            }
            moved = true;
        }
        Ok(moved)
    }
}

/// Looks between two readings of the clock while a call spins.
const LOOKS_PER_CLOCK: u32 = 8;

/// What the clones of an `AsyncClient` share: the engine's state under
/// a lock, the fds the tasks await, and what does not change.
struct Core {
    /// Biased to the thread that keeps calling: a task that has the
    /// connection to itself locks and unlocks with plain stores. A plain
    /// mutex's atomic swap waited on every call for the request just
    /// written to reach the server's core (see `ringbuf::bias`).
    state: BiasedMutex<State>,
    /// The client's epoll fd: readable when a wake-up came on the stream
    /// socket (shared memory: a response, an event or room in the
    /// request ring, whichever flags were up), a response or an event
    /// came on a socket (socket transport), or the server hung up or
    /// wrote a flow-control level.
    ready: AsyncFd<OwnedFd>,
    /// What a sender waiting for room awaits besides `ready`: the
    /// request socket (writable) of the socket transport; `None` over
    /// shared memory, where room is a wake-up like any other.
    space: Option<AsyncFd<OwnedFd>>,
    /// Wakes tasks whose message another task read, and everyone when
    /// the connection is gone.
    moved: Notify,
    id: u64,
    max_message: usize,
    server: Credentials,
    transport: Transport,
    /// How long a waiting call polls before it arms and sleeps.
    spin: Duration,
    /// The server is a libqb one (see [`LIBQB_POLL`]).
    libqb: bool,
}

/// How often a task waiting on a libqb server looks again: such a server
/// signals its responses only through its ring's semaphore, which no
/// reactor can wait on.
const LIBQB_POLL: Duration = Duration::from_millis(1);

/// A connection to a ringlink service for async code (tokio). Cheap to
/// clone: clones share the connection, and any number of tasks may use
/// it at once.
///
/// Must be created and used inside a tokio runtime with I/O enabled.
#[derive(Clone)]
pub struct AsyncClient {
    shared: Arc<Core>,
}

impl AsyncClient {
    /// Connects and runs the handshake (on tokio's blocking pool: the
    /// handshake is a few short socket exchanges).
    ///
    /// # Errors
    ///
    /// As [`Client::connect`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ringlink_ipcc::{AsyncClient, ConnectOptions};
    ///
    /// #[tokio::main]
    /// async fn main() -> ringlink_ipcc::Result<()> {
    /// #   use ringlink_ipcs::{Dispatch, Service, ServiceOptions};
    /// #   let addr = ringlink_ipcc::ServiceAddr::named(&format!("ringlink-doc-{}", std::process::id()));
    /// #   let table = Dispatch::new().on(1, |c, r| { let _ = c.respond(r.seq(), 1, r.payload()); });
    /// #   let mut service = Service::bind(addr.clone(), "echo", ServiceOptions::default(), table)?;
    /// #   let control = service.control_handle();
    /// #   let server = std::thread::spawn(move || service.run());
    ///     let opts = ConnectOptions::new("echo").wait_for_server(true);
    ///     let client = AsyncClient::connect(&addr, &opts).await?;
    ///     let reply = client.send_recv(1, b"hello").await?;
    ///     assert_eq!(reply.payload, b"hello");
    /// #   control.shutdown();
    /// #   server.join().expect("server thread")?;
    ///     Ok(())
    /// }
    /// ```
    pub async fn connect(addr: &ServiceAddr, opts: &ConnectOptions) -> Result<AsyncClient> {
        let (addr, opts) = (addr.clone(), opts.clone());
        let client = tokio::task::spawn_blocking(move || Client::connect(&addr, &opts))
            .await
            .map_err(|e| Error::Io(std::io::Error::other(e)))??;
        AsyncClient::from_client(client)
    }

    /// Wraps a connected [`Client`].
    ///
    /// # Errors
    ///
    /// [`Error::Io`] outside a tokio runtime with I/O enabled, or if an
    /// fd cannot be duplicated.
    pub fn from_client(client: Client) -> Result<AsyncClient> {
        let (mut engine, id, server) = client.into_parts();
        // Its last clone may drop on a runtime thread: never wait there.
        engine.close_without_waiting();
        let ready = register(engine.fd().try_clone_to_owned()?, Interest::READABLE)?;
        let space = match engine.space_fd() {
            Some(fd) => Some(register(fd.try_clone_to_owned()?, Interest::WRITABLE)?),
            None => None,
        };
        let shared = Core {
            id,
            max_message: engine.max_message(),
            server,
            transport: engine.transport(),
            spin: engine.spin_budget(),
            libqb: engine.is_libqb(),
            state: BiasedMutex::new(State {
                scratch: vec![0; engine.max_message()],
                engine,
                claimed: HashSet::new(),
                arrived: HashMap::new(),
                unclaimed: VecDeque::new(),
            }),
            ready,
            space,
            moved: Notify::new(),
        };
        Ok(AsyncClient {
            shared: Arc::new(shared),
        })
    }

    /// The server-assigned connection id.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// Largest message payload, either way.
    pub fn max_message(&self) -> usize {
        self.shared.max_message
    }

    /// The server process's kernel-verified credentials.
    pub fn server_credentials(&self) -> Credentials {
        self.shared.server
    }

    /// The transport the messages travel over.
    pub fn transport(&self) -> Transport {
        self.shared.transport
    }

    /// Serves the server's calls with `handler` (see
    /// [`Client::set_call_handler`](crate::Client::set_call_handler)):
    /// from whichever task receives.
    pub fn set_call_handler(
        &self,
        handler: impl FnMut(&crate::Call<'_>) -> (i32, Vec<u8>) + Send + 'static,
    ) {
        self.lock().engine.set_call_handler(Some(Box::new(handler)));
    }

    /// The connection's counters (see [`Client::stats`](crate::Client::stats)).
    pub fn stats(&self, clear: bool) -> crate::ClientStats {
        self.lock().engine.stats(clear)
    }

    /// Sets the trace hook (see
    /// [`Client::set_trace_hook`](crate::Client::set_trace_hook)); it runs
    /// on whichever task's call sent or took the message.
    pub fn set_trace_hook(&self, hook: impl FnMut(&crate::ClientTrace) + Send + 'static) {
        self.lock().engine.set_trace(Some(Box::new(hook)));
    }

    /// Whether the connection is still up.
    pub fn is_connected(&self) -> bool {
        let st = self.lock();
        let up = st.engine.is_connected();
        self.told(&st);
        up
    }

    /// Tells every waiting task to look again if a call under the lock
    /// read the stream socket: the wake-ups it took may have been meant
    /// for any of them.
    fn told(&self, st: &State) {
        if st.engine.take_drained() {
            self.shared.moved.notify_waiters();
        }
    }

    fn lock(&self) -> BiasedGuard<'_, State> {
        // Nothing in the state is left half-updated by a panic (the lock
        // has no poisoning).
        self.shared.state.lock()
    }

    /// How many times the state lock's bias was taken from a thread by
    /// another (see [`BiasedMutex`]); for tests.
    #[doc(hidden)]
    pub fn lock_revocations(&self) -> u64 {
        self.shared.state.revocations()
    }

    /// Whether the state lock can bias at all here (it cannot where
    /// `membarrier` is refused); for tests.
    #[doc(hidden)]
    pub fn lock_can_bias(&self) -> bool {
        self.shared.state.can_bias()
    }

    /// Sends a request, waiting (without blocking a thread) for room in
    /// the request ring or for flow control to lift; returns its sequence
    /// number. Completes once the whole request left: over the socket
    /// transport, a request larger than the socket takes at once goes as
    /// the server reads it (see [`flush`](Self::flush)). Cancellation-safe:
    /// dropped before the request went, nothing is sent; after, it still
    /// goes whole (its tail with the client's next calls, or `flush`).
    ///
    /// # Errors
    ///
    /// [`Error::MessageTooLarge`]; [`Error::Disconnected`].
    pub fn send<'a>(
        &'a self,
        id: i32,
        payload: &'a [u8],
    ) -> impl Future<Output = Result<u64>> + Send + Sync + 'a {
        self.call(
            Wait::Space,
            whole(move |st| st.engine.try_send(id, &[IoSlice::new(payload)], false, &[])),
        )
    }

    /// [`send`](Self::send) of a payload made of several slices.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub fn send_vectored<'a>(
        &'a self,
        id: i32,
        parts: &'a [IoSlice<'a>],
    ) -> impl Future<Output = Result<u64>> + Send + Sync + 'a {
        self.call(
            Wait::Space,
            whole(move |st| st.engine.try_send(id, parts, false, &[])),
        )
    }

    /// Sends a one-way request, awaiting room: see
    /// [`Client::send_oneway`](crate::Client::send_oneway). Completes
    /// once the whole request left, and is cancellation-safe, as
    /// [`send`](Self::send).
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub fn send_oneway<'a>(
        &'a self,
        id: i32,
        payload: &'a [u8],
    ) -> impl Future<Output = Result<()>> + Send + Sync + 'a {
        let mut send = whole(move |st| st.engine.try_send(id, &[IoSlice::new(payload)], true, &[]));
        self.call(Wait::Space, move |st| Ok(send(st)?.map(drop)))
    }

    /// Sends a request now if it can go without waiting (room in the
    /// request ring, flow control open); returns its sequence number. It
    /// never waits and never awaits, as the blocking client's
    /// non-waiting [`Client::send`](crate::Client::send): it says
    /// [`Error::WouldBlock`] when the request would have to wait, and
    /// [`Error::Disconnected`] when the server is gone.
    ///
    /// For a stream of requests, calling this first and the awaiting
    /// [`send`](Self::send) only on `WouldBlock` is faster than awaiting
    /// every send: a send through a future (its state written and read
    /// back once per message) made the CPU wait for the request just
    /// written to reach the server's core, which held a 64 B one-way
    /// stream to about 6 M msgs/s; with this call first it ran at
    /// 10–15 M, 0.64–0.86x the blocking client (median 0.72x over
    /// fourteen runs; `docs/RING.md`, Measurements).
    ///
    /// ```
    /// # async fn stream(client: &ringlink_ipcc::AsyncClient) -> ringlink_ipcc::Result<()> {
    /// use ringlink_ipcc::Error;
    /// for i in 0..1000u32 {
    ///     let p = i.to_le_bytes();
    ///     match client.try_send_oneway(1, &p) {
    ///         Err(Error::WouldBlock) => client.send_oneway(1, &p).await?,
    ///         r => r?,
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Over the socket transport, a request larger than the socket takes
    /// at once may be committed with its tail still in the client: it
    /// goes whole with the client's next calls, and
    /// [`flush`](Self::flush) makes sure of it.
    ///
    /// # Errors
    ///
    /// [`Error::WouldBlock`] if it would have to wait (nothing was sent);
    /// otherwise as [`send`](Self::send).
    pub fn try_send(&self, id: i32, payload: &[u8]) -> Result<u64> {
        self.try_now(|st| {
            let sent = st.engine.try_send(id, &[IoSlice::new(payload)], false, &[]);
            noted(st, sent)
        })
    }

    /// [`try_send`](Self::try_send) of a one-way request (see
    /// [`send_oneway`](Self::send_oneway)).
    ///
    /// # Errors
    ///
    /// As [`try_send`](Self::try_send).
    pub fn try_send_oneway(&self, id: i32, payload: &[u8]) -> Result<()> {
        self.try_now(|st| {
            let sent = st.engine.try_send(id, &[IoSlice::new(payload)], true, &[]);
            noted(st, sent)
        })
        .map(drop)
    }

    /// Sends what waits of the last request's tail, awaiting (without
    /// blocking a thread) the request socket's room as the server reads:
    /// completes once nothing the client sent waits in it, at once when
    /// nothing does (always, over shared memory). See
    /// [`Client::flush`](crate::Client::flush): over the socket
    /// transport, [`try_send`](Self::try_send) and
    /// [`try_send_oneway`](Self::try_send_oneway) may leave such a tail,
    /// and so may a send future dropped before it completed. No timeout
    /// of its own: wrap it in `tokio::time::timeout`; dropped, the tail
    /// still waits, and still goes later.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] if the server is gone before it all went
    /// (the request is lost).
    pub async fn flush(&self) -> Result<()> {
        self.wait_for(Wait::Space, |st| Ok(st.engine.try_flush()?.then_some(())))
            .await
    }

    /// The request whose tail still waits to be sent, by its sequence
    /// number (0 for a one-way request), if one does: see
    /// [`Client::unsent_request`](crate::Client::unsent_request).
    pub fn unsent_request(&self) -> Option<u64> {
        self.lock().engine.unsent_request()
    }

    /// One look under the lock; `WouldBlock` if it found no room, or
    /// `Disconnected` if the server is gone (which a look at the rings
    /// alone does not see: the stream socket says it, as the blocking
    /// client asks it before waiting).
    fn try_now<T>(&self, mut attempt: impl FnMut(&mut State) -> Result<Option<T>>) -> Result<T> {
        // A send files no reply: only the wake-ups a look may drain are
        // news for the other tasks.
        let mut st = self.lock();
        let got = match attempt(&mut st) {
            Ok(None) if !st.engine.is_connected() => Err(st.engine.fail(Error::Disconnected)),
            got => got,
        };
        self.told(&st);
        if got.is_err() {
            self.shared.moved.notify_waiters();
        }
        got?.ok_or(Error::WouldBlock)
    }

    /// Sends a request carrying `fds`, awaiting room: see
    /// [`Client::send_with_fds`](crate::Client::send_with_fds); the
    /// response's fds come in [`Reply::fds`]. Cancellation-safe as
    /// [`send`](Self::send).
    ///
    /// # Errors
    ///
    /// As [`Client::send_with_fds`](crate::Client::send_with_fds).
    pub async fn send_with_fds(
        &self,
        id: i32,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> Result<u64> {
        self.send_claiming_fds(id, &[IoSlice::new(payload)], false, fds)
            .await
    }

    /// [`send_with_fds`](Self::send_with_fds), then waits for its
    /// response, as [`send_recv`](Self::send_recv).
    ///
    /// # Errors
    ///
    /// As [`send_with_fds`](Self::send_with_fds).
    pub async fn send_recv_with_fds(
        &self,
        id: i32,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> Result<Reply> {
        let seq = self
            .send_claiming_fds(id, &[IoSlice::new(payload)], true, fds)
            .await?;
        self.response_to(seq).await
    }

    async fn send_claiming(&self, id: i32, parts: &[IoSlice<'_>], claim: bool) -> Result<u64> {
        self.send_claiming_fds(id, parts, claim, &[]).await
    }

    async fn send_claiming_fds(
        &self,
        id: i32,
        parts: &[IoSlice<'_>],
        claim: bool,
        fds: &[BorrowedFd<'_>],
    ) -> Result<u64> {
        let attempt = |st: &mut State| {
            let seq = st.engine.try_send(id, parts, false, fds)?;
            if let (Some(seq), true) = (seq, claim) {
                // Claimed under the same lock as the send: its response
                // cannot be filed as unclaimed before.
                st.claimed.insert(seq);
            }
            Ok(seq)
        };
        if claim {
            // Its response's wait sends the tail, if any (no response can
            // come before the whole request went), under the claim's
            // guard: a future dropped meanwhile hands it to `recv`.
            self.wait_for(Wait::Space, move |st| {
                let sent = attempt(st);
                noted(st, sent)
            })
            .await
        } else {
            self.wait_for(Wait::Space, whole(attempt)).await
        }
    }

    /// Sends a request and waits for its response. Many may be in flight
    /// at once, from any number of tasks. Cancellation-safe: dropped
    /// after the request went, its response goes to [`recv`](Self::recv).
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    ///
    /// # Examples
    ///
    /// Requests from many tasks in flight at once on one connection, each task
    /// getting its own answer:
    ///
    /// ```
    /// use ringlink_ipcc::{AsyncClient, ConnectOptions};
    ///
    /// #[tokio::main]
    /// async fn main() -> ringlink_ipcc::Result<()> {
    /// #   use ringlink_ipcs::{Dispatch, Service, ServiceOptions};
    /// #   let addr = ringlink_ipcc::ServiceAddr::named(&format!("ringlink-doc-{}", std::process::id()));
    /// #   let table = Dispatch::new().on(1, |c, r| { let _ = c.respond(r.seq(), 1, r.payload()); });
    /// #   let mut service = Service::bind(addr.clone(), "echo", ServiceOptions::default(), table)?;
    /// #   let control = service.control_handle();
    /// #   let server = std::thread::spawn(move || service.run());
    ///     let client = AsyncClient::connect(&addr, &ConnectOptions::new("echo")).await?;
    ///     let tasks: Vec<_> = (0..16u8)
    ///         .map(|i| {
    ///             let client = client.clone(); // shares the connection
    ///             tokio::spawn(async move { client.send_recv(1, &[i]).await })
    ///         })
    ///         .collect();
    ///     for (i, task) in tasks.into_iter().enumerate() {
    ///         let reply = task.await.expect("task")?;
    ///         assert_eq!(reply.payload, [i as u8]);
    ///     }
    /// #   control.shutdown();
    /// #   server.join().expect("server thread")?;
    ///     Ok(())
    /// }
    /// ```
    pub async fn send_recv(&self, id: i32, payload: &[u8]) -> Result<Reply> {
        let seq = self
            .send_claiming(id, &[IoSlice::new(payload)], true)
            .await?;
        self.response_to(seq).await
    }

    /// [`send_recv`](Self::send_recv) into a reply the caller keeps and
    /// reuses: its payload's allocation (and the fds vector's) is
    /// reused, so a loop of round trips allocates nothing once the
    /// buffer has grown to the largest response. Cancellation-safe as
    /// `send_recv`.
    ///
    /// # Errors
    ///
    /// As [`send_recv`](Self::send_recv).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use ringlink_ipcc::{AsyncClient, ConnectOptions, Reply, ServiceAddr};
    ///
    /// # async fn run() -> ringlink_ipcc::Result<()> {
    /// let client = AsyncClient::connect(&ServiceAddr::named("echo"), &ConnectOptions::new("echo")).await?;
    /// let mut reply = Reply::default();
    /// for i in 0..1000u32 {
    ///     client.send_recv_into(1, &i.to_le_bytes(), &mut reply).await?;
    ///     assert_eq!(reply.payload, i.to_le_bytes());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn send_recv_into(&self, id: i32, payload: &[u8], reply: &mut Reply) -> Result<()> {
        let seq = self
            .send_claiming(id, &[IoSlice::new(payload)], true)
            .await?;
        let _claim = Claim { client: self, seq };
        self.wait_for(Wait::Response, |st| {
            if let Some(r) = st.arrived.remove(&seq) {
                *reply = r;
                return Ok(Some(()));
            }
            st.pump_for(seq, reply)
        })
        .await
    }

    /// Waits for the response to `seq`, claimed when it was sent.
    async fn response_to(&self, seq: u64) -> Result<Reply> {
        let _claim = Claim { client: self, seq };
        self.wait_for(Wait::Response, |st| {
            if let Some(r) = st.arrived.remove(&seq) {
                return Ok(Some(r));
            }
            // Ours, if it came before an error (the server's leaving).
            let pumped = st.pump();
            st.arrived
                .remove(&seq)
                .map_or(pumped.map(|_| None), |r| Ok(Some(r)))
        })
        .await
    }

    /// Receives the next response that no [`send_recv`](Self::send_recv)
    /// waits for.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] once the server is gone and every response
    /// it sent was read; [`Error::Protocol`] if it corrupted the ring.
    pub async fn recv(&self) -> Result<Reply> {
        self.wait_for(Wait::Response, |st| {
            if let Some(r) = st.unclaimed.pop_front() {
                return Ok(Some(r));
            }
            // What came before an error (the server's leaving) first.
            let pumped = st.pump();
            st.unclaimed
                .pop_front()
                .map_or(pumped.map(|_| None), |r| Ok(Some(r)))
        })
        .await
    }

    /// Receives the next event.
    ///
    /// # Errors
    ///
    /// [`Error::Lagged`] where the service's event queue dropped events
    /// (the next call has the event after the gap); as
    /// [`recv`](Self::recv) otherwise.
    pub async fn event_recv(&self) -> Result<Reply> {
        self.wait_for(Wait::Event, |st| {
            let m = st.engine.try_recv(true, &mut st.scratch)?;
            Ok(m.map(|m| Reply::take(m, &st.scratch, &mut st.engine)))
        })
        .await
    }

    /// Receives the next event into `event`, reusing its payload's
    /// allocation: once it has grown to the largest event, no allocation
    /// per event (as [`send_recv_into`](Self::send_recv_into) for
    /// responses). Its fds (none if it carries none) replace those
    /// `event` held. Cancellation-safe: an event is taken only by a call
    /// that returns it.
    ///
    /// # Errors
    ///
    /// As [`event_recv`](Self::event_recv): [`Error::Lagged`] where a
    /// queue dropped events, then the next call has the event after the
    /// gap; as [`recv`](Self::recv) otherwise. `event` is then left as it
    /// was.
    pub async fn event_recv_into(&self, event: &mut Reply) -> Result<()> {
        self.wait_for(Wait::Event, |st| {
            let m = st.engine.try_recv(true, &mut st.scratch)?;
            Ok(m.map(|m| event.refill(m, &st.scratch, &mut st.engine)))
        })
        .await
    }

    /// The events, as a stream that ends when the connection does.
    ///
    /// # Examples
    ///
    /// With a `StreamExt` (futures-util's, here), the stream's `next`:
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use ringlink_ipcc::{AsyncClient, ConnectOptions, Error};
    ///
    /// const SUBSCRIBE: i32 = 1;
    /// const PRICE: i32 = 100;
    ///
    /// #[tokio::main]
    /// async fn main() -> ringlink_ipcc::Result<()> {
    /// #   use ringlink_ipcs::{Dispatch, Service, ServiceOptions};
    /// #   let addr = ringlink_ipcc::ServiceAddr::named(&format!("ringlink-doc-{}", std::process::id()));
    /// #   let table = Dispatch::new().on(SUBSCRIBE, |c, r| {
    /// #       for p in [10u32, 11, 12] { let _ = c.send_event(PRICE, &p.to_le_bytes()); }
    /// #       let _ = c.respond(r.seq(), SUBSCRIBE, b"");
    /// #   });
    /// #   let mut service = Service::bind(addr.clone(), "prices", ServiceOptions::default(), table)?;
    /// #   let control = service.control_handle();
    /// #   let server = std::thread::spawn(move || service.run());
    ///     let client = AsyncClient::connect(&addr, &ConnectOptions::new("prices")).await?;
    ///     let mut events = client.events();
    ///     client.send_recv(SUBSCRIBE, b"").await?;
    ///     let mut prices = Vec::new();
    ///     while let Some(event) = events.next().await {
    ///         match event {
    ///             Ok(e) if e.id == PRICE => prices.push(u32::from_le_bytes(e.payload[..4].try_into().unwrap())),
    ///             Ok(_) => {}
    ///             Err(Error::Lagged(n)) => eprintln!("{n} events missed"), // and the stream goes on
    ///             Err(e) => return Err(e), // the last item: the connection is gone
    ///         }
    ///         if prices.len() == 3 {
    ///             break;
    ///         }
    ///     }
    ///     assert_eq!(prices, [10, 11, 12]);
    /// #   control.shutdown();
    /// #   server.join().expect("server thread")?;
    ///     Ok(())
    /// }
    /// ```
    pub fn events(&self) -> Events {
        Events {
            client: self.clone(),
            next: None,
            done: false,
        }
    }

    /// Runs `attempt` under the lock until it yields a value, sleeping in
    /// between on what `sleep` needs.
    async fn wait_for<T>(
        &self,
        sleep: Wait,
        mut attempt: impl FnMut(&mut State) -> Result<Option<T>>,
    ) -> Result<T> {
        // The uncontended path: one look under the lock, with nothing
        // registered to be woken (no waiter pushed on `moved`, whose list
        // has a lock of its own) and no system call. What it misses, the
        // loop's registered look below sees.
        if let Some(v) = self.look(&mut attempt)? {
            return Ok(v);
        }
        self.wait_after_look(sleep, attempt).await
    }

    /// [`wait_for`](Self::wait_for) as a small future: its first poll
    /// makes the uncontended look, and only a call that must wait builds
    /// (and boxes) the waiting state machine, several hundred bytes that
    /// the `async fn` form wrote on every call. On one core that saved a
    /// few nanoseconds per send; across cores a stream through it still
    /// runs near 6 M msgs/s (see [`try_send`](Self::try_send)).
    fn call<'a, T: Send + 'a>(
        &'a self,
        sleep: Wait,
        attempt: impl FnMut(&mut State) -> Result<Option<T>> + Send + Sync + 'a,
    ) -> impl Future<Output = Result<T>> + Send + Sync + 'a {
        let mut attempt = Some(attempt);
        let mut waiting: Option<Pin<Box<dyn Future<Output = Result<T>> + Send + Sync + 'a>>> = None;
        std::future::poll_fn(move |cx| {
            if let Some(w) = waiting.as_mut() {
                return w.as_mut().poll(cx);
            }
            let mut a = attempt
                .take()
                .expect("a call's future polled after it completed");
            match self.look(&mut a) {
                Ok(Some(v)) => Poll::Ready(Ok(v)),
                Err(e) => Poll::Ready(Err(e)),
                Ok(None) => waiting
                    .insert(Box::pin(self.wait_after_look(sleep, a)))
                    .as_mut()
                    .poll(cx),
            }
        })
    }

    /// The rest of [`wait_for`](Self::wait_for), after a first look that
    /// found nothing.
    async fn wait_after_look<T>(
        &self,
        sleep: Wait,
        mut attempt: impl FnMut(&mut State) -> Result<Option<T>>,
    ) -> Result<T> {
        let mut woken = false;
        loop {
            if !woken && !self.shared.spin.is_zero() {
                // Poll the rings for the spin budget first, as the
                // blocking client does: an answer that is on its way then
                // costs no system call and no wake-up. It holds this
                // worker thread for at most the budget
                // (`ConnectOptions::spin`; zero never spins). Before
                // registering on `moved`: registering and unregistering
                // take its lock, locked instructions that wait for this
                // thread's stores, the request's, to reach the server's
                // core, and a wait that ends in the spin needs neither
                // (each look is the full `look`, which hears what other
                // tasks filed).
                if let Some(v) = self.spin(&mut attempt)? {
                    return Ok(v);
                }
            }
            // Registered before looking, so that a task filing our message
            // after we looked still wakes us.
            let moved = self.shared.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            let space = {
                let mut st = self.lock();
                if woken {
                    // Take the wake-ups on the stream socket (and notice
                    // a server that left) before looking: they may be
                    // meant for any task's ring, so whoever takes some
                    // tells every other task to look again (`told`, after
                    // every call that may read the socket). A first look
                    // reads the rings alone, as the blocking client does:
                    // no system call when the answer is there.
                    st.engine.drain_wakes();
                    if !st.engine.is_connected() {
                        // Gone: what was sent before is still delivered
                        // (`attempt` drains), then `Disconnected`.
                        self.shared.moved.notify_waiters();
                    }
                }
                let before = (st.arrived.len(), st.unclaimed.len());
                let got = attempt(&mut st);
                self.told(&st);
                if (st.arrived.len(), st.unclaimed.len()) != before {
                    self.shared.moved.notify_waiters();
                }
                match got {
                    Ok(Some(v)) => return Ok(v),
                    Ok(None) => {}
                    Err(e) => {
                        self.shared.moved.notify_waiters();
                        return Err(e);
                    }
                }
                // Before raising a flag, the socket is drained (PROTOCOL.md
                // §4, W0): a byte that comes after it ends the sleep.
                st.engine.drain_wakes();
                // Arm, then look once more: what came in between signals
                // no one.
                let armed = st.engine.arm(sleep);
                self.told(&st);
                if !armed.sleep {
                    woken = false;
                    continue;
                }
                armed.space
            };
            self.sleep(space, moved).await?;
            woken = true;
        }
    }

    /// One look under the lock: `attempt`, then telling the other tasks
    /// what it filed or drained.
    #[inline(always)]
    fn look<T>(
        &self,
        attempt: &mut impl FnMut(&mut State) -> Result<Option<T>>,
    ) -> Result<Option<T>> {
        let mut st = self.lock();
        let before = (st.arrived.len(), st.unclaimed.len());
        let got = attempt(&mut st);
        self.told(&st);
        if got.is_err() || (st.arrived.len(), st.unclaimed.len()) != before {
            self.shared.moved.notify_waiters();
        }
        got
    }

    /// Retries `attempt` for the spin budget.
    fn spin<T>(
        &self,
        attempt: &mut impl FnMut(&mut State) -> Result<Option<T>>,
    ) -> Result<Option<T>> {
        // A look every `LOOK_EVERY` or so (32 pauses between looks, as
        // this once had, came to a quarter of a microsecond late on a
        // response where a pause takes 8.6 ns); the clock once every few
        // looks.
        let pauses = ringlink_ringbuf::wake::pauses_per_look();
        let start = Instant::now();
        loop {
            for _ in 0..LOOKS_PER_CLOCK {
                for _ in 0..pauses {
                    std::hint::spin_loop();
                }
                if let Some(v) = self.look(attempt)? {
                    return Ok(Some(v));
                }
            }
            if start.elapsed() >= self.shared.spin {
                return Ok(None);
            }
        }
    }

    /// Sleeps until the client's fd is ready (a wake-up for what the
    /// wait armed, or the stream socket speaks: hang-up, flow-control
    /// level), the request socket is writable (`want_space`, over
    /// sockets), or another task filed a message.
    async fn sleep(
        &self,
        want_space: bool,
        moved: Pin<&mut tokio::sync::futures::Notified<'_>>,
    ) -> Result<()> {
        let sh = &self.shared;
        let space = async {
            match &sh.space {
                Some(space) if want_space => space.writable().await.map(|mut g| g.clear_ready()),
                _ => std::future::pending().await,
            }
        };
        // A libqb server signals a response through its ring's semaphore
        // alone, and room or a new flow-control level not at all: looked
        // at again every so often.
        let quiet = async {
            if sh.libqb {
                tokio::time::sleep(LIBQB_POLL).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            g = sh.ready.readable() => g?.clear_ready(),
            r = space => r?,
            () = moved => {}
            () = quiet => {}
        }
        Ok(())
    }
}

/// Notes a request `sent` with a tail (socket transport: its socket
/// filled midway), for `unsent_request`.
fn noted(st: &mut State, sent: Result<Option<u64>>) -> Result<Option<u64>> {
    if let Ok(Some(seq)) = sent {
        if st.engine.has_tail() {
            st.engine.note_tail(seq);
        }
    }
    sent
}

/// A send's `attempt`, made to yield only once the request is whole in
/// the socket: a request that left a tail (socket transport) is sent, and
/// then each look sends more of the tail, until none is left (the wait
/// between looks is a wait for room, which over sockets is the request
/// socket's writability). Over shared memory, one comparison more.
fn whole(
    mut attempt: impl FnMut(&mut State) -> Result<Option<u64>>,
) -> impl FnMut(&mut State) -> Result<Option<u64>> {
    let mut sent = None;
    move |st| {
        let seq = match sent {
            Some(seq) => seq,
            None => match attempt(st)? {
                Some(seq) if st.engine.has_tail() => {
                    st.engine.note_tail(seq);
                    seq
                }
                other => return Ok(other),
            },
        };
        if st.engine.try_flush()? {
            return Ok(Some(seq));
        }
        sent = Some(seq);
        Ok(None)
    }
}

/// Registers an fd of ours with tokio's reactor.
///
/// Tokio 1.53 deprecates `with_interest` for `unsafe
/// register_with_interest`, whose contract (the fd stays open and the
/// same while registered) an `OwnedFd` we own and never replace meets;
/// the safe constructor keeps this crate free of `unsafe` and working
/// with earlier tokio 1.x.
#[allow(deprecated)]
fn register(fd: OwnedFd, interest: Interest) -> std::io::Result<AsyncFd<OwnedFd>> {
    AsyncFd::with_interest(fd, interest)
}

/// Returns an abandoned `send_recv`'s response to `recv`.
struct Claim<'a> {
    client: &'a AsyncClient,
    seq: u64,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut st = self.client.lock();
        st.claimed.remove(&self.seq);
        if let Some(r) = st.arrived.remove(&self.seq) {
            st.unclaimed.push_back(r);
            drop(st);
            self.client.shared.moved.notify_waiters();
        }
    }
}

/// The events of an [`AsyncClient`], as a [`Stream`]: each item is an
/// event, or the error that ended the stream (after which it yields
/// nothing). Dropping it loses no event.
///
/// It is a `futures_core::Stream`, so the combinators of
/// `futures::StreamExt` (or `futures_util::StreamExt`) and of
/// `tokio_stream::StreamExt` apply: `next`, `filter`, `map`, `take`,
/// `timeout`, `collect`...
///
/// # Examples
///
/// ```no_run
/// use futures_util::StreamExt;
/// use ringlink_ipcc::{AsyncClient, ConnectOptions, ServiceAddr};
///
/// # async fn watch() -> ringlink_ipcc::Result<()> {
/// let client = AsyncClient::connect(&ServiceAddr::named("counter"), &ConnectOptions::new("counter")).await?;
/// // The first ten events of id 7, their payloads.
/// let payloads: Vec<Vec<u8>> = client
///     .events()
///     .filter_map(|e| async move { e.ok().filter(|e| e.id == 7) })
///     .map(|e| e.payload)
///     .take(10)
///     .collect()
///     .await;
/// # let _ = payloads;
/// # Ok(())
/// # }
/// ```
pub struct Events {
    client: AsyncClient,
    next: Option<Pin<Box<dyn Future<Output = Result<Reply>> + Send>>>,
    done: bool,
}

impl Stream for Events {
    type Item = Result<Reply>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let client = self.client.clone();
        let next = self
            .next
            .get_or_insert_with(|| Box::pin(async move { client.event_recv().await }));
        match next.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => {
                self.next = None;
                // A lag notice is an item of the stream, not its end.
                if r.as_ref().is_err_and(|e| !matches!(e, Error::Lagged(_))) {
                    self.done = true;
                }
                Poll::Ready(Some(r))
            }
        }
    }
}

impl fmt::Debug for AsyncClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncClient")
            .field("id", &self.shared.id)
            .field("max_message", &self.shared.max_message)
            .field("transport", &self.shared.transport)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("client", &self.client)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}
