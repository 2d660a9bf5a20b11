//! The client's end of a connection, whatever the transport: ringlink's
//! [`Client`] or the bare socket of [`uds`](super::uds).

use std::io;
use std::time::Duration;

use ringlink_ipcc::{AsyncClient, Client, ConnectOptions, Error, Reply, ServiceAddr};

use super::typed::Sample;
use super::uds::UdsLink;
use super::{Transport, PROTOCOL};
use crate::STALL;

/// What the measurement loops need of a connection. Every call waits at
/// most [`STALL`] and fails with an error rather than hang.
pub trait Link {
    /// Sends a request, waiting for room if the ring or socket is full.
    ///
    /// # Errors
    ///
    /// A transport error, or a stall.
    fn send(&mut self, id: i32, payload: &[u8]) -> io::Result<()>;

    /// Receives the next response into `buf`; returns its message id and
    /// length.
    ///
    /// # Errors
    ///
    /// A transport error, a stall, or an error status from the server.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<(i32, usize)>;

    /// Sends a request and receives its response.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send) and [`recv`](Self::recv).
    fn round_trip(&mut self, id: i32, payload: &[u8], buf: &mut [u8]) -> io::Result<(i32, usize)>;

    /// Receives the next event into `buf`; returns its message id and
    /// length.
    ///
    /// # Errors
    ///
    /// A transport error or a stall.
    fn event_recv(&mut self, buf: &mut [u8]) -> io::Result<(i32, usize)>;
}

/// A ringlink client connection (`shm`, `shm-nospin`, `socket`, or
/// `shm-async`).
#[derive(Debug)]
pub struct RingLink {
    client: Client,
}

/// The tokio client (`shm-async`): every call awaited on a runtime of
/// its own (current-thread, the client's only task), so that what is
/// measured is the async path: futures, wake-ups through the reactor. A
/// send first tries `AsyncClient::try_send`, which never waits, and
/// awaits `send` only when that says the ring is full, as `RingLink`
/// tries the blocking client's non-waiting send first.
#[derive(Debug)]
pub struct AsyncLink {
    rt: tokio::runtime::Runtime,
    client: AsyncClient,
    /// The last round trip's reply, refilled by the next.
    last: Reply,
    /// The last event, refilled by the next.
    event: Reply,
}

impl AsyncLink {
    /// Connects as [`RingLink::connect`] does, then hands the connection
    /// to an [`AsyncClient`].
    ///
    /// # Errors
    ///
    /// As [`RingLink::connect`], or if the runtime cannot be built.
    pub fn connect(
        name: &str,
        max_message: usize,
        spin: Duration,
        timeout: Duration,
    ) -> io::Result<AsyncLink> {
        let ring = RingLink::connect(Transport::Shm, name, max_message, spin, timeout)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = {
            let _in_rt = rt.enter();
            AsyncClient::from_client(ring.client).map_err(io_err)?
        };
        Ok(AsyncLink {
            rt,
            client,
            last: Reply::default(),
            event: Reply::default(),
        })
    }

    fn reply(&self, r: Reply, buf: &mut [u8]) -> io::Result<(i32, usize)> {
        status(r.error)?;
        let n = r.payload.len();
        buf.get_mut(..n)
            .ok_or_else(|| io::Error::other("a reply longer than the buffer"))?
            .copy_from_slice(&r.payload);
        Ok((r.id, n))
    }

    /// Runs `f` on the runtime, giving up after [`STALL`]. A future that
    /// completes at its first poll (the answer came within the client's
    /// spin) costs no timer and no entering of the runtime: what is
    /// measured is the client, as a task inside a running runtime would
    /// see it, not tokio's timer wheel. (That first poll needs no runtime
    /// context: `AsyncClient` touches tokio only to sleep, and the only
    /// timer it sleeps on is for a libqb server, which this link never
    /// reaches.)
    fn block<T>(
        &self,
        f: impl std::future::Future<Output = ringlink_ipcc::Result<T>>,
    ) -> io::Result<T> {
        let mut f = std::pin::pin!(f);
        {
            let waker = noop_waker();
            let mut cx = std::task::Context::from_waker(&waker);
            if let std::task::Poll::Ready(r) = f.as_mut().poll(&mut cx) {
                return r.map_err(io_err);
            }
        }
        self.rt.block_on(async {
            match tokio::time::timeout(STALL, f).await {
                Ok(r) => r.map_err(io_err),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "ringlink: timed out",
                )),
            }
        })
    }
}

impl Link for AsyncLink {
    fn send(&mut self, id: i32, payload: &[u8]) -> io::Result<()> {
        // As `RingLink::send`: the call that does not wait first
        // (`AsyncClient::try_send`), the awaiting one only when the ring
        // is full or flow control holds.
        match self.client.try_send(id, payload) {
            Ok(_) => Ok(()),
            Err(Error::WouldBlock) => self.block(self.client.send(id, payload)).map(drop),
            Err(e) => Err(io_err(e)),
        }
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<(i32, usize)> {
        let r = self.block(self.client.recv())?;
        self.reply(r, buf)
    }

    fn round_trip(&mut self, id: i32, payload: &[u8], buf: &mut [u8]) -> io::Result<(i32, usize)> {
        // Into a reply kept from one round trip to the next: no
        // allocation per reply (`AsyncClient::send_recv_into`).
        let mut last = std::mem::take(&mut self.last);
        let sent = self.block(self.client.send_recv_into(id, payload, &mut last));
        let answer = sent.and_then(|()| {
            status(last.error)?;
            let n = last.payload.len();
            buf.get_mut(..n)
                .ok_or_else(|| io::Error::other("a reply longer than the buffer"))?
                .copy_from_slice(&last.payload);
            Ok((last.id, n))
        });
        self.last = last;
        answer
    }

    fn event_recv(&mut self, buf: &mut [u8]) -> io::Result<(i32, usize)> {
        // Into an event kept from one to the next, as round trips'
        // replies are (`AsyncClient::event_recv_into`).
        let mut event = std::mem::take(&mut self.event);
        let got = self.block(self.client.event_recv_into(&mut event));
        let answer = got.and_then(|()| {
            let n = event.payload.len();
            buf.get_mut(..n)
                .ok_or_else(|| io::Error::other("an event longer than the buffer"))?
                .copy_from_slice(&event.payload);
            Ok((event.id, n))
        });
        self.event = event;
        answer
    }
}

/// A ringlink error as an `io::Error` (keeping the kind of an I/O error).
fn io_err(e: Error) -> io::Error {
    match e {
        Error::Io(e) => e,
        Error::TimedOut => io::Error::new(io::ErrorKind::TimedOut, "ringlink: timed out"),
        e => io::Error::other(e),
    }
}

/// Refuses a response that carries an error status.
fn status(error: i32) -> io::Result<()> {
    if error != 0 {
        return Err(io::Error::other(format!(
            "the server answered with error {error}"
        )));
    }
    Ok(())
}

impl RingLink {
    /// Connects to the bench's ringlink server at abstract `name`, asking
    /// for messages of up to `max_message` bytes, with `spin` as the
    /// client's spin budget. Waits up to `timeout` for the server.
    ///
    /// Checks that the transport really is the one asked for: a
    /// shared-memory connection must have mapped rings, a socket one must
    /// not (a build of ringlink without the socket transport would
    /// otherwise measure shared memory under the socket's name).
    ///
    /// # Errors
    ///
    /// If the connection fails, or the check does.
    pub fn connect(
        transport: Transport,
        name: &str,
        max_message: usize,
        spin: Duration,
        timeout: Duration,
    ) -> io::Result<RingLink> {
        let mut opts = ConnectOptions::new(PROTOCOL);
        opts.transport = match transport {
            Transport::Shm
            | Transport::ShmNoSpin
            | Transport::ShmAsync
            | Transport::ShmTyped
            | Transport::ShmZeroCopy => ringlink_ipcc::Transport::Shm,
            Transport::Socket => ringlink_ipcc::Transport::Socket,
            t @ (Transport::UdsBaseline | Transport::Iceoryx2 | Transport::Iceoryx2Event) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{t} is not a ringlink transport"),
                ))
            }
        };
        opts.spin = spin;
        opts.max_message = u32::try_from(max_message)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message size too large"))?;
        opts.timeout = timeout;
        opts.server_wait = opts.timeout;
        opts.wait_for_server = true;
        let client = Client::connect(&ServiceAddr::named(name), &opts).map_err(io_err)?;
        if client.transport() != opts.transport {
            return Err(io::Error::other(format!(
                "asked for {:?}, connected over {:?}",
                opts.transport,
                client.transport()
            )));
        }
        if client.max_message() < max_message {
            return Err(io::Error::other(format!(
                "the server allows messages of {} bytes, not {max_message}",
                client.max_message()
            )));
        }
        Ok(RingLink { client })
    }
}

impl Link for RingLink {
    #[inline]
    fn send(&mut self, id: i32, payload: &[u8]) -> io::Result<()> {
        // Without waiting first: the timed call reads the clock.
        match self.client.send(id, payload) {
            Ok(_) => Ok(()),
            Err(Error::WouldBlock) => self
                .client
                .send_timeout(id, payload, Some(STALL))
                .map(drop)
                .map_err(io_err),
            Err(e) => Err(io_err(e)),
        }
    }

    #[inline]
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<(i32, usize)> {
        let msg = self.client.recv(buf, Some(STALL)).map_err(io_err)?;
        status(msg.error)?;
        Ok((msg.id, msg.len))
    }

    #[inline]
    fn round_trip(&mut self, id: i32, payload: &[u8], buf: &mut [u8]) -> io::Result<(i32, usize)> {
        let msg = self
            .client
            .send_recv(id, payload, buf, Some(STALL))
            .map_err(io_err)?;
        status(msg.error)?;
        Ok((msg.id, msg.len))
    }

    #[inline]
    fn event_recv(&mut self, buf: &mut [u8]) -> io::Result<(i32, usize)> {
        let msg = self.client.event_recv(buf, Some(STALL)).map_err(io_err)?;
        Ok((msg.id, msg.len))
    }
}

/// A ringlink client connection writing its requests in the ring and
/// reading responses where they lie (`shm-zc`).
#[derive(Debug)]
pub struct ZeroCopyLink(RingLink);

impl ZeroCopyLink {
    /// Sends `payload` written in place (copied from the caller's
    /// stamped pattern into the ring: the write a producer does anyway).
    fn send_in_place(&mut self, id: i32, payload: &[u8]) -> io::Result<u64> {
        self.0
            .client
            .send_in_place(id, payload.len(), Some(STALL), |b| {
                b.copy_from_slice(payload)
            })
            .map_err(io_err)
    }

    /// A round trip: the request written in place, the response checked
    /// where it lies by `check` (its id and payload), returning what
    /// `check` returns.
    ///
    /// # Errors
    ///
    /// A link error, or what `check` says.
    pub fn round_trip_in_place(
        &mut self,
        id: i32,
        payload: &[u8],
        check: impl FnOnce(i32, &[u8]) -> io::Result<u64>,
    ) -> io::Result<u64> {
        self.send_in_place(id, payload)?;
        let (error, checked) = self
            .0
            .client
            .recv_in_place(Some(STALL), |m, p| (m.error, check(m.id, p)))
            .map_err(io_err)?;
        status(error)?;
        checked
    }
}

/// One-way runs: requests written in place; acknowledgements as `shm`.
impl Link for ZeroCopyLink {
    fn send(&mut self, id: i32, payload: &[u8]) -> io::Result<()> {
        self.send_in_place(id, payload).map(drop)
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<(i32, usize)> {
        self.0.recv(buf)
    }

    fn round_trip(&mut self, id: i32, payload: &[u8], buf: &mut [u8]) -> io::Result<(i32, usize)> {
        self.0.round_trip(id, payload, buf)
    }

    fn event_recv(&mut self, buf: &mut [u8]) -> io::Result<(i32, usize)> {
        self.0.event_recv(buf)
    }
}

/// A ringlink client connection making typed calls (`shm-typed`).
#[derive(Debug)]
pub struct TypedLink {
    client: Client,
}

impl TypedLink {
    /// Connects as [`RingLink::connect`] does, over shared memory.
    ///
    /// # Errors
    ///
    /// As [`RingLink::connect`].
    pub fn connect(
        name: &str,
        max_message: usize,
        spin: Duration,
        timeout: Duration,
    ) -> io::Result<TypedLink> {
        let ring = RingLink::connect(Transport::ShmTyped, name, max_message, spin, timeout)?;
        Ok(TypedLink {
            client: ring.client,
        })
    }

    /// A typed call of `sample`, waiting at most [`STALL`]; its answer.
    ///
    /// # Errors
    ///
    /// A transport error, a stall, or the server's (typed) refusal.
    #[inline]
    pub fn call(&mut self, sample: &Sample) -> io::Result<Sample> {
        use ringlink::typed::{TypedClient, TypedError};
        self.client.call(sample, Some(STALL)).map_err(|e| match e {
            TypedError::Ipc(e) => io_err(e),
            e => io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
        })
    }
}

/// A connection of any of the transports.
#[derive(Debug)]
// One per connection, held in place for its life: the size difference
// costs nothing, a box would cost a pointer chase per message.
#[allow(clippy::large_enum_variant)]
pub enum AnyLink {
    /// `shm`, `shm-nospin`, `socket`.
    Ring(RingLink),
    /// `uds-baseline`.
    Uds(UdsLink),
    /// `shm-async`.
    Async(AsyncLink),
    /// `shm-typed`.
    Typed(TypedLink),
    /// `shm-zc`.
    ZeroCopy(ZeroCopyLink),
}

impl AnyLink {
    /// Connects to the bench's server of `transport` at abstract `name`.
    ///
    /// # Errors
    ///
    /// As [`RingLink::connect`] and [`UdsLink::connect`].
    pub fn connect(
        transport: Transport,
        name: &str,
        max_message: usize,
        spin: Duration,
        timeout: Duration,
    ) -> io::Result<AnyLink> {
        Ok(match transport {
            Transport::UdsBaseline => AnyLink::Uds(UdsLink::connect(name, max_message, timeout)?),
            Transport::ShmAsync => {
                AnyLink::Async(AsyncLink::connect(name, max_message, spin, timeout)?)
            }
            Transport::ShmTyped => {
                AnyLink::Typed(TypedLink::connect(name, max_message, spin, timeout)?)
            }
            Transport::ShmZeroCopy => AnyLink::ZeroCopy(ZeroCopyLink(RingLink::connect(
                Transport::ShmZeroCopy,
                name,
                max_message,
                spin,
                timeout,
            )?)),
            t => AnyLink::Ring(RingLink::connect(t, name, max_message, spin, timeout)?),
        })
    }
}

/// A waker that does nothing, for a first poll whose result is taken at
/// once (`std::task::Waker::noop` is newer than the workspace's MSRV).
pub fn noop_waker() -> std::task::Waker {
    use std::task::{RawWaker, RawWakerVTable, Waker};
    fn clone(_: *const ()) -> RawWaker {
        RawWaker::new(std::ptr::null(), &VTABLE)
    }
    fn noop(_: *const ()) {}
    static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, noop, noop, noop);
    // SAFETY: every function of the vtable ignores the data pointer, which
    // is null, and does nothing: the RawWaker contract holds trivially.
    unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) }
}
