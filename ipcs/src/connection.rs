//! A live client connection, as the application sees it: a handle any
//! thread may send responses and events through.

use std::any::Any;
use std::fmt;
use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_utils::CachePadded;
use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};
use ringlink_channel::wait::{self, WRITABLE};
use ringlink_channel::{Sender, TrySendError};
use ringlink_common::fdpass::PeerFds;
use ringlink_common::qb::QbTransport;
use ringlink_common::wire::{MsgHeader, FLAG_CALL, FLAG_LAGGED};
use ringlink_common::{ConnectionStats, Credentials, Error, Result, Transport, Violation};

use crate::hooks::CloseReason;
use crate::options::{EventQueue, QueuePolicy};
use crate::remote::Remote;

/// A client connection: cheap to clone, `Send + Sync`. Responses and
/// events can be sent from any thread, at any time until the connection
/// closes (after which they fail with [`Error::Disconnected`]).
#[derive(Clone)]
pub struct Connection {
    inner: Arc<ConnInner>,
}

struct ConnInner {
    id: u64,
    slot: usize,
    credentials: Credentials,
    max_message: usize,
    transport: Transport,
    connected_at: SystemTime,
    /// Server → client channels. `None` once the connection is
    /// destroyed, so that clones held by the application keep no mapping
    /// or fd alive.
    response: Outlet,
    event: Outlet,
    alive: AtomicBool,
    /// The client left: calls to it fail with `Disconnected` (the
    /// connection stays open while what it sent is served; a reply it
    /// sent before leaving is dropped, as when the connection closed at
    /// its hang-up).
    client_left: AtomicBool,
    context: Context,
    remote: Arc<Remote>,
    counters: Counters,
    /// Wake-ups from the client, for threads other than the loop waiting
    /// for room in its rings (`send_event_timeout`): the loop alone reads
    /// the connection's socket, and tells them here.
    wakeups: Wakeups,
    libqb: Option<QbTransport>,
    /// Why it closed, once it has.
    close_reason: Mutex<Option<CloseReason>>,
    /// Events waiting for room in the client's ring, with the service's
    /// queue settings (`ServiceOptions::event_queue`); taken before the
    /// event channel's lock.
    backlog: Option<(EventQueue, Mutex<Backlog>)>,
    /// The backlog holds something: the loop flushes it when the client
    /// makes room (read without the lock).
    backlogged: AtomicBool,
    /// Calls to the client waiting for their replies.
    calls: Mutex<Calls>,
    /// A reply came, or the connection closed.
    call_done: Condvar,
}

/// The server's calls to a client ([`Connection::call`]).
#[derive(Debug, Default)]
struct Calls {
    /// The last call's number (calls are numbered from 1).
    last: u64,
    /// Calls waiting, and the replies that came for them.
    waiting: std::collections::HashMap<u64, Option<CallReply>>,
}

/// A client's reply to a call ([`Connection::call`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallReply {
    /// The message id the client replied with.
    pub id: i32,
    /// The client's error code: 0, or, from a client with no call
    /// handler, `ERROR_UNKNOWN_ID`.
    pub error: i32,
    /// The reply's payload.
    pub payload: Vec<u8>,
}

/// Events kept for a client whose ring is full, and the gaps where some
/// were dropped.
#[derive(Debug, Default)]
struct Backlog {
    items: std::collections::VecDeque<Queued>,
    /// How many of `items` are events.
    events: usize,
}

#[derive(Debug)]
enum Queued {
    /// Id, payload, and copies of its fds (reaped if it is dropped).
    Event(i32, Vec<u8>, PeerFds),
    /// This many events were dropped here.
    Lagged(u64),
}

/// What a new connection is.
#[derive(Clone, Copy, Debug)]
pub(crate) struct About {
    pub(crate) id: u64,
    pub(crate) credentials: Credentials,
    /// The largest payload either way.
    pub(crate) max_message: usize,
    pub(crate) transport: Transport,
    /// A libqb client's connection, over this libqb transport.
    pub(crate) libqb: Option<QbTransport>,
    /// The service's event queue settings.
    pub(crate) event_queue: Option<EventQueue>,
}

/// The application's per-connection state. Most set it once, when the
/// connection is created, and read it on every request: the first state
/// set is kept where it can be read with two loads and no lock until the
/// connection is dropped; one set later replaces it behind a lock.
#[derive(Default)]
struct Context {
    first: OnceLock<Arc<dyn Any + Send + Sync>>,
    /// A later state replaced the first: `later` holds the current one.
    replaced: AtomicBool,
    later: RwLock<Option<Arc<dyn Any + Send + Sync>>>,
}

impl Context {
    fn set(&self, value: Arc<dyn Any + Send + Sync>) {
        // Setters take turns under the write lock.
        let mut later = self.later.write();
        let value = if self.replaced.load(Ordering::Relaxed) {
            value
        } else {
            match self.first.set(value) {
                Ok(()) => return,
                Err(value) => value,
            }
        };
        *later = Some(value);
        // Release: a reader that sees the flag sees `later` (through the
        // lock too).
        self.replaced.store(true, Ordering::Release);
    }

    fn get(&self) -> Option<Arc<dyn Any + Send + Sync>> {
        if self.replaced.load(Ordering::Acquire) {
            self.later.read_recursive().clone()
        } else {
            self.first.get().cloned()
        }
    }

    /// Runs `f` on the current state (a reader racing a replacement sees
    /// the state before it, as if it had read first).
    fn with<R>(&self, f: impl FnOnce(Option<&(dyn Any + Send + Sync)>) -> R) -> R {
        if self.replaced.load(Ordering::Acquire) {
            f(self.later.read_recursive().as_deref())
        } else {
            f(self.first.get().map(|a| &**a))
        }
    }
}

/// A server → client channel: its sender under a lock, and what the last
/// holder of the lock knew of its room, for the loop to read without the
/// lock.
struct Outlet {
    tx: Mutex<Option<Sender>>,
    /// A message of `max` bytes certainly fits (`Sender::surely_fits`),
    /// as of the last unlock. Room only grows behind the holder's back
    /// (the client releases), so a `true` stays true until someone sends.
    fits: AtomicBool,
    max: usize,
    /// The sender writes messages in place (`Sender::writes_in_place`):
    /// known when the connection starts and never changed, so that a
    /// send in place asks without taking the lock twice.
    in_place: bool,
}

impl Outlet {
    fn new(tx: Sender, max: usize) -> Outlet {
        Outlet {
            in_place: tx.writes_in_place(),
            tx: Mutex::new(Some(tx)),
            fits: AtomicBool::new(false),
            max,
        }
    }

    /// The sender, locked; the hint is updated as the lock is let go.
    fn lock(&self) -> OutletGuard<'_> {
        OutletGuard {
            outlet: self,
            tx: self.tx.lock(),
        }
    }

    /// Whether a full-size message certainly fits, without the lock (a
    /// hint: another thread may be sending now, as it may right after a
    /// check under the lock).
    fn surely_fits(&self) -> bool {
        // Relaxed: a hint; whoever then sends takes the lock.
        self.fits.load(Ordering::Relaxed)
    }
}

/// An [`Outlet`]'s sender under its lock.
struct OutletGuard<'a> {
    outlet: &'a Outlet,
    tx: MutexGuard<'a, Option<Sender>>,
}

impl std::ops::Deref for OutletGuard<'_> {
    type Target = Option<Sender>;
    fn deref(&self) -> &Option<Sender> {
        &self.tx
    }
}

impl std::ops::DerefMut for OutletGuard<'_> {
    fn deref_mut(&mut self) -> &mut Option<Sender> {
        &mut self.tx
    }
}

impl Drop for OutletGuard<'_> {
    fn drop(&mut self) {
        // A plain store, before the unlock: nothing here waits for the
        // ring's stores to reach the client.
        let fits = self
            .tx
            .as_ref()
            .is_some_and(|tx| tx.surely_fits(self.outlet.max));
        self.outlet.fits.store(fits, Ordering::Relaxed);
    }
}

/// A count of the wake-ups the loop read from a connection's socket (and
/// its closing), that threads waiting for room in a ring sleep on. The
/// socket itself is read by the loop alone: a second reader would take
/// wake-ups meant for it, and the other way round.
#[derive(Debug, Default)]
struct Wakeups {
    seen: Mutex<u64>,
    changed: Condvar,
}

impl Wakeups {
    /// The count now: read before raising a waiting flag, then handed to
    /// [`wait`](Self::wait), so that a wake-up that comes in between is
    /// not missed.
    fn count(&self) -> u64 {
        *self.seen.lock()
    }

    /// A wake-up came (or the connection closed): wakes every waiter.
    fn notify(&self) {
        *self.seen.lock() += 1;
        self.changed.notify_all();
    }

    /// Sleeps until the count moves past `seen`, or `deadline`.
    fn wait(&self, seen: u64, deadline: Instant) {
        let mut now = self.seen.lock();
        while *now == seen {
            if self.changed.wait_until(&mut now, deadline).timed_out() {
                return;
            }
        }
    }
}

/// A connection's statistics (relaxed atomics: they count, they order
/// nothing). Those the loop writes and those senders on other threads
/// write sit on cache lines of their own, so that neither slows the
/// other (`CachePadded`). Counters only grow: clearing them
/// ([`Connection::stats`]) moves the baseline they are read from, so that
/// the loop's own counters, with one writer, are bumped with a plain load
/// and store, never a read-modify-write on the per-request path.
#[derive(Debug, Default)]
struct Counters {
    /// Written by the loop.
    intake: CachePadded<Intake>,
    /// Written by whoever sends.
    output: CachePadded<Output>,
    /// The values at the last clearing.
    cleared: Mutex<Cleared>,
}

/// The counters the loop writes, and the loop alone (one writer:
/// [`bump`]).
#[derive(Debug, Default)]
struct Intake {
    requests: AtomicU64,
    bytes_received: AtomicU64,
    recv_retries: AtomicU64,
    flow_control: AtomicBool,
    flow_control_changes: AtomicU64,
}

/// The counters senders write.
#[derive(Debug, Default)]
struct Output {
    responses: AtomicU64,
    events: AtomicU64,
    bytes_sent: AtomicU64,
    send_retries: AtomicU64,
    events_dropped: AtomicU64,
}

/// What every counter read at the last clearing.
#[derive(Debug, Default)]
struct Cleared {
    requests: u64,
    bytes_received: u64,
    recv_retries: u64,
    flow_control_changes: u64,
    responses: u64,
    events: u64,
    bytes_sent: u64,
    send_retries: u64,
    events_dropped: u64,
}

/// Adds `n` to a counter that several threads write.
fn count(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Adds `n` to a counter that one thread writes: a load and a store, no
/// locked instruction (which would wait for the ring stores before it to
/// reach the other core).
#[inline]
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// A counter's value since the last clearing (`base`), and with `clear`
/// a new clearing.
fn read(counter: &AtomicU64, base: &mut u64, clear: bool) -> u64 {
    let now = counter.load(Ordering::Relaxed);
    let since = now.wrapping_sub(*base);
    if clear {
        *base = now;
    }
    since
}

/// Which server → client channel.
#[derive(Clone, Copy)]
enum Out {
    Response,
    Event,
    /// A call to the client: on the response channel, not counted as a
    /// response nor traced as one.
    Call,
}

impl Connection {
    /// The handle of a connection just made, at `slot` of the loop's
    /// table, sending responses and events through `senders`.
    pub(crate) fn new(
        about: About,
        slot: usize,
        (response, event): (Sender, Sender),
        remote: Arc<Remote>,
    ) -> Connection {
        Connection {
            inner: Arc::new(ConnInner {
                id: about.id,
                slot,
                credentials: about.credentials,
                max_message: about.max_message,
                transport: about.transport,
                libqb: about.libqb,
                connected_at: SystemTime::now(),
                response: Outlet::new(response, about.max_message),
                event: Outlet::new(event, about.max_message),
                alive: AtomicBool::new(true),
                client_left: AtomicBool::new(false),
                context: Context::default(),
                remote,
                counters: Counters::default(),
                wakeups: Wakeups::default(),
                close_reason: Mutex::new(None),
                backlog: about.event_queue.map(|q| {
                    let q = EventQueue {
                        capacity: q.capacity.max(1),
                        ..q
                    };
                    (q, Mutex::new(Backlog::default()))
                }),
                backlogged: AtomicBool::new(false),
                calls: Mutex::new(Calls::default()),
                call_done: Condvar::new(),
            }),
        }
    }

    /// The server-assigned connection id (unique for the service's life).
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The transport the connection's messages travel over (for a libqb
    /// client: `Shm` for libqb's rings, `Socket` for its sockets).
    pub fn transport(&self) -> Transport {
        self.inner.transport
    }

    /// For a libqb client's connection, the libqb transport it uses
    /// (`None`: a ringlink client). A libqb client takes responses in the
    /// order of its requests: the response to a request waits until every
    /// earlier one is answered, or declared unanswered with
    /// [`skip_response`](Self::skip_response).
    pub fn libqb(&self) -> Option<QbTransport> {
        self.inner.libqb
    }

    /// The client's kernel-verified credentials.
    pub fn credentials(&self) -> Credentials {
        self.inner.credentials
    }

    /// Largest payload of a message on this connection, either way.
    pub fn max_message(&self) -> usize {
        self.inner.max_message
    }

    /// When the handshake completed.
    pub fn connected_at(&self) -> SystemTime {
        self.inner.connected_at
    }

    /// Whether the connection is still open.
    pub fn is_connected(&self) -> bool {
        self.inner.alive.load(Ordering::Acquire)
    }

    /// The connection's statistics; with `clear`, the counters restart
    /// from zero (the flow-control state and queue length are not
    /// counters and are not cleared).
    pub fn stats(&self, clear: bool) -> ConnectionStats {
        let (i, o) = (&self.inner.counters.intake, &self.inner.counters.output);
        let mut c = self.inner.counters.cleared.lock();
        let (event_queue_bytes, events_queued) = self
            .inner
            .event
            .lock()
            .as_ref()
            .map_or((0, None), |s| (s.queued() as u64, s.queued_messages()));
        ConnectionStats {
            id: self.inner.id,
            client_pid: self.inner.credentials.pid,
            requests: read(&i.requests, &mut c.requests, clear),
            responses: read(&o.responses, &mut c.responses, clear),
            events: read(&o.events, &mut c.events, clear),
            bytes_received: read(&i.bytes_received, &mut c.bytes_received, clear),
            bytes_sent: read(&o.bytes_sent, &mut c.bytes_sent, clear),
            send_retries: read(&o.send_retries, &mut c.send_retries, clear),
            events_dropped: read(&o.events_dropped, &mut c.events_dropped, clear),
            events_backlogged: self
                .inner
                .backlog
                .as_ref()
                .map_or(0, |(_, b)| b.lock().events as u64),
            recv_retries: read(&i.recv_retries, &mut c.recv_retries, clear),
            flow_control: i.flow_control.load(Ordering::Relaxed),
            flow_control_changes: read(&i.flow_control_changes, &mut c.flow_control_changes, clear),
            event_queue_bytes,
            events_queued,
            connected_at: self.inner.connected_at,
        }
    }

    /// Attaches the application's per-connection state, replacing any.
    /// The first state set is read without a lock for the connection's
    /// life ([`with_context`](Self::with_context)); one that replaces it
    /// takes a shared lock per read. The first state, replaced, is
    /// dropped with the connection, later ones as they are replaced.
    pub fn set_context<T: Any + Send + Sync>(&self, value: T) {
        self.inner.context.set(Arc::new(value));
    }

    /// The per-connection state, if one of type `T` was set.
    pub fn context<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.inner.context.get()?.downcast::<T>().ok()
    }

    /// Runs `f` on the per-connection state, if one of type `T` was set,
    /// and returns what it returns: the way to reach the state on every
    /// request. Until the state is replaced this takes no lock and counts
    /// no reference ([`context`](Self::context) counts one, and gives it
    /// back). `f` must not call [`set_context`](Self::set_context) on the
    /// same connection once the state was replaced: it would wait for `f`
    /// to end.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use ringlink_ipcs::{Connection, Handler, Request};
    ///
    /// #[derive(Default)]
    /// struct Seen(AtomicU64);
    ///
    /// struct Counting;
    ///
    /// impl Handler for Counting {
    ///     fn connection_created(&self, conn: &Connection) {
    ///         conn.set_context(Seen::default());
    ///     }
    ///
    ///     fn message(&self, conn: &Connection, req: &Request<'_>) {
    ///         let n = conn.with_context(|seen: &Seen| seen.0.fetch_add(1, Ordering::Relaxed));
    ///         let n = n.unwrap_or(0) + 1;
    ///         let _ = conn.respond(req.seq(), req.id(), &n.to_le_bytes());
    ///     }
    /// }
    /// ```
    pub fn with_context<T: Any + Send + Sync, R>(&self, f: impl FnOnce(&T) -> R) -> Option<R> {
        self.inner
            .context
            .with(|ctx| Some(f(ctx?.downcast_ref::<T>()?)))
    }

    /// Sends the response to request `seq` (see
    /// [`Request::seq`](crate::Request::seq)), without waiting.
    ///
    /// # Errors
    ///
    /// [`Error::MessageTooLarge`] (nothing sent); [`Error::WouldBlock`] if
    /// the client's response ring is full; [`Error::Disconnected`];
    /// [`Error::OneWay`] for a one-way request (sequence number 0,
    /// [`Request::needs_response`](crate::Request::needs_response) false):
    /// nothing is sent.
    ///
    /// # Examples
    ///
    /// Answered later, from another thread: the handler keeps a clone of
    /// the connection and the request's sequence number, and returns at
    /// once, so the loop goes on serving everyone else.
    ///
    /// ```
    /// use ringlink_ipcs::{Dispatch, Service, ServiceAddr, ServiceOptions};
    /// use std::time::Duration;
    ///
    /// const HASH: i32 = 1;
    ///
    /// # fn main() -> ringlink_ipcs::Result<()> {
    /// let table = Dispatch::new().on(HASH, |conn, req| {
    ///     // The payload lives in the client's ring: copy what you keep.
    ///     let (conn, seq, data) = (conn.clone(), req.seq(), req.payload().to_vec());
    ///     std::thread::spawn(move || {
    ///         let sum = data.iter().map(|&b| u64::from(b)).sum::<u64>(); // the slow work
    ///         if let Err(e) = conn.respond(seq, HASH, &sum.to_le_bytes()) {
    ///             eprintln!("client {} gone before its answer: {e}", conn.id());
    ///         }
    ///     });
    /// });
    /// # let addr = ServiceAddr::named(&format!("ringlink-doc-{}", std::process::id()));
    /// let mut service = Service::bind(addr.clone(), "hash", ServiceOptions::default(), table)?;
    /// # let control = service.control_handle();
    /// # let server = std::thread::spawn(move || service.run());
    ///
    /// # use ringlink_ipcc::{Client, ConnectOptions};
    /// # let mut client = Client::connect(&addr, &ConnectOptions::new("hash"))?;
    /// # let mut buf = [0u8; 8];
    /// // The client waits for it as for any other answer.
    /// let m = client.send_recv(HASH, &[1, 2, 3], &mut buf, Some(Duration::from_secs(5)))?;
    /// assert_eq!(u64::from_le_bytes(buf), 6);
    /// # assert_eq!(m.len, 8);
    /// # control.shutdown();
    /// # server.join().expect("server thread")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn respond(&self, seq: u64, id: i32, payload: &[u8]) -> Result<()> {
        self.respond_vectored(seq, id, 0, &[IoSlice::new(payload)])
    }

    /// Sends a response with an error code (the client reads it in
    /// `Message::error`), without waiting.
    ///
    /// # Errors
    ///
    /// As [`respond`](Self::respond).
    pub fn respond_error(&self, seq: u64, id: i32, error: i32, payload: &[u8]) -> Result<()> {
        self.respond_vectored(seq, id, error, &[IoSlice::new(payload)])
    }

    /// Sends a response with an error code and a payload made of several
    /// slices, without waiting.
    ///
    /// # Errors
    ///
    /// As [`respond`](Self::respond).
    pub fn respond_vectored(
        &self,
        seq: u64,
        id: i32,
        error: i32,
        parts: &[IoSlice<'_>],
    ) -> Result<()> {
        self.respond_carrying(seq, id, error, parts, &[])
    }

    /// Sends a response carrying `fds` (Legato's `le_msg_SetFd`), without
    /// waiting: the client takes them with `Client::take_fds`, in the
    /// order given; the kernel gives it its own copies. The client must
    /// accept them: at most [`client_fd_terms`](Self::client_fd_terms)'
    /// `per_message`, and no directory or `O_PATH` fd unless its terms say
    /// so (a libqb client takes none). Over shared memory they travel on
    /// the connection's socket ahead of the message, and the client's
    /// limit on fds in flight holds the send back as a full ring does
    /// (`WouldBlock`).
    ///
    /// # Errors
    ///
    /// As [`respond`](Self::respond); [`Error::FdsNotAccepted`] or
    /// [`Error::FdRefused`] when the client's terms do not take them
    /// (nothing sent).
    pub fn respond_with_fds(
        &self,
        seq: u64,
        id: i32,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> Result<()> {
        self.respond_carrying(seq, id, 0, &[IoSlice::new(payload)], fds)
    }

    fn respond_carrying(
        &self,
        seq: u64,
        id: i32,
        error: i32,
        parts: &[IoSlice<'_>],
        fds: &[BorrowedFd<'_>],
    ) -> Result<()> {
        self.send(
            Out::Response,
            response_header(seq, id, error)?,
            parts,
            fds,
            None,
        )
    }

    /// Sends a response of `len` payload bytes written in place: `fill` is
    /// called once on the payload's bytes in the client's response ring
    /// (whatever they held: write them all), and the response goes,
    /// without waiting and without a copy (over sockets and to libqb
    /// clients, `fill` writes into a buffer that is then sent). The bytes
    /// are in memory the client can read as they are written; it sees
    /// them only once the response is published.
    ///
    /// # Errors
    ///
    /// As [`respond`](Self::respond) (`fill` is not called when nothing
    /// is sent).
    pub fn respond_in_place(
        &self,
        seq: u64,
        id: i32,
        len: usize,
        mut fill: impl FnMut(&mut [u8]),
    ) -> Result<()> {
        self.send_in_place(Out::Response, response_header(seq, id, 0)?, len, &mut fill)
    }

    /// Sends an event of `len` payload bytes written in place, as
    /// [`respond_in_place`](Self::respond_in_place). With an event queue
    /// (`ServiceOptions::event_queue`) holding events, or no room in the
    /// ring, `fill` writes into a buffer queued as
    /// [`send_event`](Self::send_event) would.
    ///
    /// # Errors
    ///
    /// As [`send_event`](Self::send_event).
    pub fn send_event_in_place(
        &self,
        id: i32,
        len: usize,
        mut fill: impl FnMut(&mut [u8]),
    ) -> Result<()> {
        let h = event_header(id);
        let sent = self.ring_unless_queued(len, |_queue| {
            self.send_in_place(Out::Event, h, len, &mut fill)
        })?;
        if sent.is_some() {
            return Ok(());
        }
        // Behind events already queued, or no room: queued as any event.
        let mut buf = vec![0u8; len];
        fill(&mut buf);
        self.send_event(id, &buf)
    }

    /// Reserves room for a response of `len` payload bytes to request
    /// `seq`, to be written in place and sent with
    /// [`MessageSlot::commit`]: the slot dereferences to the payload's
    /// bytes in the client's response ring (whatever they held: write
    /// them all), and dropping it uncommitted sends nothing, so that a
    /// response whose building fails can be given up (and another sent
    /// instead). Does not wait: `WouldBlock` when the ring has no room.
    /// Over sockets and to libqb clients the slot is a buffer, sent at
    /// the commit as [`respond`](Self::respond) sends.
    ///
    /// The bytes are in memory the client can read as they are written;
    /// it sees them only once the response is committed.
    ///
    /// # Deadlocks
    ///
    /// Over shared memory the slot holds the connection's response
    /// channel (its lock) until it is committed or dropped, as
    /// `respond_in_place` does while its closure runs. Whatever takes
    /// that lock meanwhile waits for it: another thread's response or
    /// call on this connection, and the service's loop when it looks at
    /// this connection's room; from the thread holding the slot, a
    /// response, a call, another slot, [`stats`](Self::stats) or
    /// [`client_fd_terms`](Self::client_fd_terms) on this connection
    /// never returns (over sockets they would, as the slot is a buffer
    /// there: do not rely on it). Fill a slot and commit it at once, and
    /// hold one slot of a connection at a time.
    ///
    /// # Errors
    ///
    /// As [`respond`](Self::respond).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringlink_ipcs::{Connection, Handler, Request};
    ///
    /// struct Upper;
    ///
    /// impl Handler for Upper {
    ///     fn message(&self, conn: &Connection, req: &Request<'_>) {
    ///         let text = req.payload();
    ///         if let Ok(mut slot) = conn.reserve_response(req.seq(), req.id(), text.len()) {
    ///             if text.is_ascii() {
    ///                 slot.copy_from_slice(text);
    ///                 slot.make_ascii_uppercase();
    ///                 let _ = slot.commit();
    ///             } else {
    ///                 drop(slot); // nothing sent: answer with an error instead
    ///                 let _ = conn.respond_error(req.seq(), req.id(), 22, b"not ASCII");
    ///             }
    ///         }
    ///     }
    /// }
    /// ```
    pub fn reserve_response(&self, seq: u64, id: i32, len: usize) -> Result<MessageSlot<'_>> {
        self.reserve_on(Out::Response, response_header(seq, id, 0)?, len, None)
    }

    /// Reserves room for an event of `len` payload bytes, to be written in
    /// place and sent with [`MessageSlot::commit`], as
    /// [`reserve_response`](Self::reserve_response). With an event queue
    /// (`ServiceOptions::event_queue`) holding events, or no room in the
    /// ring, the slot is a buffer that the commit sends as
    /// [`send_event`](Self::send_event) does: behind the events queued
    /// then, into the ring if they have all gone; without a queue, no
    /// room is `WouldBlock`.
    ///
    /// # Deadlocks
    ///
    /// As [`reserve_response`](Self::reserve_response), for the event
    /// channel, and with an event queue for the queue too: every other
    /// event sent on this connection waits for the slot.
    ///
    /// # Errors
    ///
    /// As [`send_event`](Self::send_event).
    pub fn reserve_event(&self, id: i32, len: usize) -> Result<MessageSlot<'_>> {
        let h = event_header(id);
        // The queue's lock goes with the slot: no event overtakes those
        // queued while it lives.
        if let Some(slot) =
            self.ring_unless_queued(len, |queue| self.reserve_on(Out::Event, h, len, queue))?
        {
            return Ok(slot);
        }
        // Behind events already queued, or no room: queued at the commit.
        Ok(self.buffered(Out::Event, h, len))
    }

    /// What the client accepts of fds in responses and events, as it
    /// announced in the handshake (`ConnectOptions::accept_fds`;
    /// [`FdTerms::NONE`](crate::FdTerms::NONE) from a client that takes
    /// none, from a libqb client, and once the connection is gone).
    pub fn client_fd_terms(&self) -> crate::FdTerms {
        self.inner
            .response
            .lock()
            .as_ref()
            .map_or(crate::FdTerms::NONE, Sender::fd_terms)
    }

    /// Declares that request `seq` gets no response. A libqb client takes
    /// responses in the order of its requests, so on a libqb connection
    /// the response to a request waits until every earlier one is
    /// answered, or declared unanswered here (libqb servers commonly
    /// leave some requests unanswered). No effect on ringlink's clients,
    /// whose responses carry their request's number.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`]; what sending the responses that waited
    /// met.
    pub fn skip_response(&self, seq: u64) -> Result<()> {
        let mut guard = self.inner.response.lock();
        let tx = guard.as_mut().ok_or(Error::Disconnected)?;
        tx.skip(seq).map_err(Error::from)
    }

    /// Calls the client and waits up to `timeout` for its reply (lwmsg's
    /// peers call each other; miniRPC's server issues calls): the
    /// client's call handler runs from its own receiving calls
    /// (`Client::set_call_handler`; `recv`, `send_recv`, `event_recv`,
    /// `serve_calls`, and the async client's), and a client without one
    /// replies `ERROR_UNKNOWN_ID`, never silence. Replies are matched by
    /// the call's number. Waits for room for the call too. Call it from a
    /// thread other than the service's loop, which is the one that reads
    /// the reply (from a handler, use a worker: `Dispatch::on_blocking`).
    /// A libqb client cannot be called.
    ///
    /// # Errors
    ///
    /// [`Error::TimedOut`] (the client did not reply in time; a late reply
    /// is dropped); [`Error::Disconnected`] (it left, or died, before
    /// replying); [`Error::MessageTooLarge`]; `Unsupported` for a libqb
    /// client; an `EDEADLK` error (kind `Deadlock`) on the thread that
    /// runs the service's loop (a handler), at once.
    ///
    /// # Examples
    ///
    /// The service asks its client a question; the client answers from
    /// its call handler while it waits for an event:
    ///
    /// ```
    /// use ringlink_ipcs::{Dispatch, Service, ServiceAddr, ServiceOptions};
    /// use std::time::Duration;
    ///
    /// const WHO: i32 = 1;
    /// const DONE: i32 = 100;
    ///
    /// # fn main() -> ringlink_ipcs::Result<()> {
    /// # let addr = ServiceAddr::named(&format!("ringlink-doc-{}", std::process::id()));
    /// let mut service = Service::bind(addr.clone(), "ask", ServiceOptions::default(), Dispatch::new())?;
    /// let control = service.control_handle();
    /// let server = std::thread::spawn(move || service.run());
    ///
    /// use ringlink_ipcc::{Client, ConnectOptions};
    /// let client = std::thread::spawn(move || -> ringlink_ipcs::Result<()> {
    ///     let mut client = Client::connect(&addr, &ConnectOptions::new("ask"))?;
    ///     client.set_call_handler(|call| match call.id {
    ///         WHO => (0, b"alice".to_vec()),
    ///         _ => (ringlink_ipcc::ERROR_UNKNOWN_ID, Vec::new()),
    ///     });
    ///     let mut buf = [0u8; 8];
    ///     let m = client.event_recv(&mut buf, Some(Duration::from_secs(5)))?; // serves calls meanwhile
    ///     assert_eq!(m.id, DONE);
    ///     Ok(())
    /// });
    ///
    /// // From a thread other than the loop's (here the main one).
    /// let conn = loop {
    ///     match control.connections().pop() {
    ///         Some(conn) => break conn,
    ///         None => std::thread::sleep(Duration::from_millis(1)),
    ///     }
    /// };
    /// let reply = conn.call(WHO, b"", Duration::from_secs(5))?;
    /// assert_eq!((reply.error, &reply.payload[..]), (0, &b"alice"[..]));
    /// conn.send_event(DONE, b"")?;
    /// client.join().expect("client thread")?;
    /// # control.shutdown();
    /// # server.join().expect("server thread")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn call(&self, id: i32, payload: &[u8], timeout: Duration) -> Result<CallReply> {
        if self.inner.libqb.is_some() {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "libqb's protocol has no calls to the client",
            )));
        }
        if self.inner.remote.on_loop_thread() {
            // The loop reads the reply: waiting here would wait out the
            // whole timeout, every other client unserved.
            let deadlock = std::io::Error::from(nix::errno::Errno::EDEADLK).kind();
            return Err(Error::Io(std::io::Error::new(
                deadlock,
                "Connection::call from the service's loop thread (a handler): call from another thread",
            )));
        }
        let deadline = ringlink_common::time::deadline_in(timeout);
        let seq = {
            let mut calls = self.inner.calls.lock();
            calls.last += 1;
            let seq = calls.last;
            calls.waiting.insert(seq, None);
            seq
        };
        let h = MsgHeader {
            id,
            size: 0,
            error: 0,
            flags: FLAG_CALL,
            seq,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let sent = self.send(Out::Call, h, &[IoSlice::new(payload)], &[], Some(left));
        let mut calls = self.inner.calls.lock();
        if let Err(e) = sent {
            calls.waiting.remove(&seq);
            return Err(e);
        }
        loop {
            if let Some(Some(_)) = calls.waiting.get(&seq) {
                let reply = calls.waiting.remove(&seq).flatten().expect("a reply");
                return Ok(reply);
            }
            if !self.is_connected() || self.inner.client_left.load(Ordering::Acquire) {
                calls.waiting.remove(&seq);
                return Err(Error::Disconnected);
            }
            if self
                .inner
                .call_done
                .wait_until(&mut calls, deadline)
                .timed_out()
                && !matches!(calls.waiting.get(&seq), Some(Some(_)))
            {
                calls.waiting.remove(&seq);
                return Err(Error::TimedOut);
            }
        }
    }

    /// A reply from the client, handed over by the loop: to its call's
    /// waiter, or dropped if that gave up. A reply to a call never made is
    /// a violation.
    pub(crate) fn deliver_reply(&self, h: &MsgHeader, payload: &[u8]) -> Result<(), Violation> {
        let mut calls = self.inner.calls.lock();
        if h.seq > calls.last {
            return Err(Violation::UnaskedReply {
                seq: h.seq,
                last_call: calls.last,
            });
        }
        if let Some(slot @ None) = calls.waiting.get_mut(&h.seq) {
            *slot = Some(CallReply {
                id: h.id,
                error: h.error,
                payload: payload.to_vec(),
            });
            drop(calls);
            self.inner.call_done.notify_all();
        }
        Ok(())
    }

    /// Sends an event (an unsolicited message) to the client, without
    /// waiting.
    ///
    /// # Errors
    ///
    /// As [`respond`](Self::respond).
    ///
    /// # Examples
    ///
    /// Publishing to every client, from any thread, through the
    /// service's [`ControlHandle`](crate::ControlHandle). A client that
    /// does not read its events fills its ring: the send then returns
    /// `WouldBlock`, unless the service keeps a queue for such clients
    /// ([`ServiceOptions::event_queue`](crate::ServiceOptions::event_queue),
    /// which drops by its policy and tells the client, `Error::Lagged`).
    ///
    /// ```
    /// use ringlink_ipcs::{Dispatch, Error, Service, ServiceAddr, ServiceOptions};
    /// use std::time::Duration;
    ///
    /// const NEWS: i32 = 100;
    ///
    /// # fn main() -> ringlink_ipcs::Result<()> {
    /// # let addr = ServiceAddr::named(&format!("ringlink-doc-{}", std::process::id()));
    /// let mut service = Service::bind(addr.clone(), "news", ServiceOptions::default(), Dispatch::new())?;
    /// let control = service.control_handle();
    /// let server = std::thread::spawn(move || service.run());
    ///
    /// use ringlink_ipcc::{Client, ConnectOptions};
    /// let mut client = Client::connect(&addr, &ConnectOptions::new("news"))?;
    /// // The connection exists once the loop has taken the client's confirmation.
    /// while control.connections().is_empty() {
    ///     std::thread::sleep(Duration::from_millis(1));
    /// }
    ///
    /// for conn in control.connections() {
    ///     match conn.send_event(NEWS, b"extra!") {
    ///         Ok(()) => {}
    ///         Err(Error::WouldBlock) => eprintln!("client {} is behind", conn.id()),
    ///         Err(e) => eprintln!("client {}: {e}", conn.id()),
    ///     }
    /// }
    ///
    /// let mut buf = vec![0u8; client.max_message()];
    /// let m = client.event_recv(&mut buf, Some(Duration::from_secs(5)))?;
    /// assert_eq!((m.id, &buf[..m.len]), (NEWS, &b"extra!"[..]));
    /// # control.shutdown();
    /// # server.join().expect("server thread")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn send_event(&self, id: i32, payload: &[u8]) -> Result<()> {
        self.send_event_vectored(id, &[IoSlice::new(payload)])
    }

    /// Sends an event made of several slices, without waiting.
    ///
    /// # Errors
    ///
    /// As [`respond`](Self::respond).
    pub fn send_event_vectored(&self, id: i32, parts: &[IoSlice<'_>]) -> Result<()> {
        self.send_event_carrying(id, parts, &[])
    }

    /// Sends an event carrying `fds`, without waiting, as
    /// [`respond_with_fds`](Self::respond_with_fds) sends a response.
    /// With an event queue (`ServiceOptions::event_queue`), an event that
    /// waits in the queue holds copies of its fds (`F_DUPFD_CLOEXEC`),
    /// closed if the queue's policy drops it.
    ///
    /// # Errors
    ///
    /// As [`respond_with_fds`](Self::respond_with_fds).
    pub fn send_event_with_fds(
        &self,
        id: i32,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> Result<()> {
        self.send_event_carrying(id, &[IoSlice::new(payload)], fds)
    }

    /// Sends several events, in order, each as
    /// [`send_event`](Self::send_event) would, those that go straight
    /// into the client's ring under one taking of the event channel's
    /// lock, their counters added once. A daemon that publishes a burst
    /// pays its locked instructions once, not per event: when the client
    /// reads close behind, each of them waits for the event before it to
    /// reach the client's core (`docs/RING.md`, Measurements), and a
    /// burst sent event by event runs at a fraction of the rate. Events
    /// that find the ring full go to the event queue
    /// (`ServiceOptions::event_queue`), each as `send_event` would put it
    /// there (a full queue first gets what room the client made).
    ///
    /// Returns how many went (into the ring, or taken by the event queue
    /// as its policy says), from the first: all of them, or fewer when
    /// the next would block (the ring full, and the queue full with
    /// [`QueuePolicy::Refuse`] or no queue) or fails. Like a short
    /// `write`, a call with the rest then says why.
    ///
    /// With an event queue, its lock is held for the whole call, and the
    /// service's loop takes it when the client makes room: keep batches
    /// to what a burst is (hundreds of small events), not a backlog of
    /// megabytes.
    ///
    /// # Errors
    ///
    /// When not even the first event went: as
    /// [`send_event`](Self::send_event).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn publish(conn: &ringlink_ipcs::Connection) -> ringlink_ipcs::Result<()> {
    /// const PRICE: i32 = 100;
    /// let prices = [10u32.to_le_bytes(), 11u32.to_le_bytes(), 12u32.to_le_bytes()];
    /// let events: Vec<(i32, &[u8])> = prices.iter().map(|p| (PRICE, &p[..])).collect();
    /// let mut sent = 0;
    /// while sent < events.len() {
    ///     // WouldBlock: the client's ring and the queue are full; try
    ///     // again later (or drop, as the service's policy says).
    ///     sent += conn.send_events(&events[sent..])?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn send_events(&self, events: &[(i32, &[u8])]) -> Result<usize> {
        self.send_events_of(events)
    }

    /// [`send_events`](Self::send_events) of events each made of several
    /// slices.
    ///
    /// # Errors
    ///
    /// As [`send_events`](Self::send_events).
    pub fn send_events_vectored(&self, events: &[(i32, &[IoSlice<'_>])]) -> Result<usize> {
        self.send_events_of(events)
    }

    fn send_event_carrying(
        &self,
        id: i32,
        parts: &[IoSlice<'_>],
        fds: &[BorrowedFd<'_>],
    ) -> Result<()> {
        let h = event_header(id);
        match &self.inner.backlog {
            Some((q, backlog)) => self.send_event_queued(*q, backlog, h, parts, fds),
            None => self.send(Out::Event, h, parts, fds, None),
        }
    }

    /// An event through the backlog: sent if the backlog is empty and the
    /// ring has room, queued otherwise, or, the queue being full, dealt
    /// with as the policy says.
    fn send_event_queued(
        &self,
        q: EventQueue,
        backlog: &Mutex<Backlog>,
        h: MsgHeader,
        parts: &[IoSlice<'_>],
        fds: &[BorrowedFd<'_>],
    ) -> Result<()> {
        ringlink_common::payload_len(parts, self.inner.max_message)?;
        if !self.is_connected() {
            return Err(Error::Disconnected);
        }
        if !fds.is_empty() {
            // Refused now rather than queued and refused later.
            let terms = self.client_fd_terms();
            let probe = h.with_fds(0);
            ringlink_channel::fds::check_sending(&probe, fds, &terms).map_err(Error::from)?;
        }
        let mut b = backlog.lock();
        self.flush_backlog(&mut b)?;
        if b.items.is_empty() {
            match self.send(Out::Event, h, parts, fds, None) {
                Err(Error::WouldBlock) => {}
                other => return other,
            }
        }
        if !self.enqueue(q, &mut b, h, parts, fds)? {
            return Err(Error::WouldBlock);
        }
        self.arm_backlog(&mut b)
    }

    /// Puts an event in the backlog as the queue's policy says: queued,
    /// or, the queue being full, the policy's drop (with its notice);
    /// `Ok(false)` if the policy refuses it.
    fn enqueue(
        &self,
        q: EventQueue,
        b: &mut Backlog,
        h: MsgHeader,
        parts: &[IoSlice<'_>],
        fds: &[BorrowedFd<'_>],
    ) -> Result<bool> {
        let dropped = if b.events < q.capacity {
            None
        } else {
            match q.policy {
                QueuePolicy::Refuse => return Ok(false),
                QueuePolicy::DropNewest => {
                    match b.items.back_mut() {
                        Some(Queued::Lagged(n)) => *n += 1,
                        _ => b.items.push_back(Queued::Lagged(1)),
                    }
                    Some(())
                }
                // The gap is where the oldest was, at the front: the
                // notice goes first.
                _ => {
                    let at = b.items.iter().position(|i| matches!(i, Queued::Event(..)));
                    if let Some(at) = at {
                        b.items.remove(at);
                        b.events -= 1;
                    }
                    match b.items.front_mut() {
                        Some(Queued::Lagged(n)) => *n += 1,
                        _ => b.items.push_front(Queued::Lagged(1)),
                    }
                    Some(())
                }
            }
        };
        if dropped.is_some() {
            count(&self.inner.counters.output.events_dropped, 1);
        }
        if dropped.is_none() || q.policy == QueuePolicy::DropOldest {
            let body = parts.iter().flat_map(|p| p.iter().copied()).collect();
            let copies = fds
                .iter()
                .map(|fd| fd.try_clone_to_owned())
                .collect::<std::io::Result<Vec<_>>>()?;
            b.items
                .push_back(Queued::Event(h.id, body, PeerFds::new(copies)));
            b.events += 1;
        }
        self.inner.backlogged.store(true, Ordering::Release);
        Ok(true)
    }

    /// After events went to the backlog: sends what fits now, and has the
    /// client wake the loop when it makes room for the rest.
    fn arm_backlog(&self, b: &mut Backlog) -> Result<()> {
        // Room may have come (and the loop looked, and found nothing
        // flagged) between the failed send and the flag: look again now
        // that the loop will see the flag.
        self.flush_backlog(b)?;
        if b.items.is_empty() {
            return Ok(());
        }
        // Tell the client to wake the loop when it makes room; if room
        // appeared meanwhile, send what fits now. A peer that says
        // nothing (libqb's) is looked at on the loop's tick, which the
        // loop arms on its next turn: wake it.
        loop {
            let (armed, told) = self
                .inner
                .event
                .lock()
                .as_mut()
                .map_or((true, true), |s| (s.prepare_sleep(), s.woken_by_peer()));
            if armed {
                if !told {
                    self.inner.remote.wake();
                }
                return Ok(());
            }
            self.flush_backlog(b)?;
            if b.items.is_empty() {
                return Ok(());
            }
        }
    }

    /// [`send_events`](Self::send_events) of events of any shape.
    fn send_events_of<E: EventParts>(&self, events: &[E]) -> Result<usize> {
        if events.is_empty() {
            return Ok(0);
        }
        if !self.is_connected() {
            return Err(Error::Disconnected);
        }
        let (n, stop, retries) = match &self.inner.backlog {
            None => {
                let (n, stop) = self.send_events_direct(events);
                // The event that found the ring full, as `send_event`
                // counts it.
                let retries = u64::from(matches!(stop, Some(Error::WouldBlock)));
                (n, stop, retries)
            }
            Some((q, backlog)) => self.send_events_queued(*q, backlog, events),
        };
        if retries > 0 {
            count(&self.inner.counters.output.send_retries, retries);
        }
        match stop {
            Some(e) if n == 0 => Err(e),
            _ => Ok(n),
        }
    }

    /// [`send_events_of`](Self::send_events_of) with an event queue: each
    /// event straight into the ring while the queue is empty and the ring
    /// has room, else into the queue as `send_event` would put it there.
    /// How many went, what stopped the rest, and how many found the ring
    /// full (`send_retries`, as `send_event` counts them).
    fn send_events_queued<E: EventParts>(
        &self,
        q: EventQueue,
        backlog: &Mutex<Backlog>,
        events: &[E],
    ) -> (usize, Option<Error>, u64) {
        let mut b = backlog.lock();
        if let Err(e) = self.flush_backlog(&mut b) {
            return (0, Some(e), 0);
        }
        let (mut n, mut stop, mut retries, mut queued) = (0usize, None, 0u64, false);
        while n < events.len() {
            // Whether event `n` found the ring full.
            let mut tried = false;
            if b.items.is_empty() {
                let (k, s) = self.send_events_direct(&events[n..]);
                n += k;
                match s {
                    None => break,
                    Some(Error::WouldBlock) => tried = true,
                    Some(e) => {
                        stop = Some(e);
                        break;
                    }
                }
            }
            // A full queue first gets what room the client made since,
            // as `send_event` looks before each event; an empty one lets
            // the rest go straight again.
            if b.events >= q.capacity {
                if let Err(e) = self.flush_backlog(&mut b) {
                    stop = Some(e);
                    break;
                }
                if b.items.is_empty() {
                    continue;
                }
            }
            retries += u64::from(tried);
            let e = &events[n];
            let taken = e.with_parts(|parts| {
                ringlink_common::payload_len(parts, self.inner.max_message)?;
                self.enqueue(q, &mut b, event_header(e.id()), parts, &[])
            });
            match taken {
                Ok(true) => {
                    n += 1;
                    queued = true;
                }
                Ok(false) => {
                    stop = Some(Error::WouldBlock);
                    break;
                }
                Err(e) => {
                    stop = Some(e);
                    break;
                }
            }
        }
        if queued {
            // What went is said; an error here is the next call's.
            if let Err(e) = self.arm_backlog(&mut b) {
                stop.get_or_insert(e);
            }
        }
        (n, stop, retries)
    }

    /// Sends events straight into the client's ring under one taking of
    /// the channel's lock, in order, until one does not fit or fails:
    /// how many went, and what stopped the rest (`WouldBlock` for a full
    /// ring). The counters are added once.
    fn send_events_direct<E: EventParts>(&self, events: &[E]) -> (usize, Option<Error>) {
        let max = self.inner.max_message;
        let (mut n, mut bytes) = (0usize, 0u64);
        let stop = {
            let mut guard = self.inner.event.lock();
            match guard.as_mut() {
                None => Some(Error::Disconnected),
                Some(tx) => {
                    // One look at the client's waiting flag for the burst
                    // (a full fence each, else), when `tx` is dropped.
                    let mut tx = tx.batch();
                    loop {
                        let Some(e) = events.get(n) else {
                            break None;
                        };
                        let sent = e.with_parts(|parts| {
                            let len = ringlink_common::payload_len(parts, max)?;
                            match tx.try_send_with_fds(event_header(e.id()), parts, max, &[]) {
                                Ok(()) => Ok(len),
                                Err(TrySendError::Full) => Err(Error::WouldBlock),
                                Err(e) => Err(Error::from(e)),
                            }
                        });
                        match sent {
                            Ok(len) => {
                                n += 1;
                                bytes += len as u64;
                            }
                            Err(e) => break Some(e),
                        }
                    }
                }
            }
        };
        if n > 0 {
            let o = &self.inner.counters.output;
            count(&o.events, n as u64);
            count(&o.bytes_sent, bytes);
        }
        if let Some(Error::Protocol(v)) = &stop {
            // The client broke its ring (PROTOCOL.md, section 5).
            self.condemn(Some(*v));
        }
        (n, stop)
    }

    /// Sends what the backlog holds, in order, while there is room.
    fn flush_backlog(&self, b: &mut Backlog) -> Result<()> {
        while let Some(item) = b.items.front() {
            let sent = match item {
                Queued::Event(id, body, fds) => {
                    let h = event_header(*id);
                    let fds: Vec<BorrowedFd<'_>> = fds.iter().collect();
                    self.try_event(h, body, &fds)
                }
                // libqb's protocol cannot say it: the gap is only counted.
                Queued::Lagged(_) if self.inner.libqb.is_some() => Ok(true),
                Queued::Lagged(n) => {
                    let h = MsgHeader {
                        id: 0,
                        size: 0,
                        error: 0,
                        flags: FLAG_LAGGED,
                        seq: 0,
                    };
                    self.try_event(h, &n.to_le_bytes(), &[])
                }
            }?;
            if !sent {
                return Ok(());
            }
            if let Some(Queued::Event(..)) = b.items.pop_front() {
                b.events -= 1;
            }
        }
        self.inner.backlogged.store(false, Ordering::Release);
        Ok(())
    }

    /// One event if it fits now: `false` if not (not counted as a retry:
    /// the backlog keeps it).
    fn try_event(&self, h: MsgHeader, body: &[u8], fds: &[BorrowedFd<'_>]) -> Result<bool> {
        let o = &self.inner.counters.output;
        match send_waiting(
            &self.inner.event,
            &self.inner.wakeups,
            self.inner.max_message,
            h,
            &[IoSlice::new(body)],
            fds,
            None,
        ) {
            Ok(len) => {
                count(&o.events, 1);
                count(&o.bytes_sent, len as u64);
                Ok(true)
            }
            Err(Error::WouldBlock) => Ok(false),
            Err(e) => {
                if let Error::Protocol(v) = &e {
                    self.condemn(Some(*v));
                }
                Err(e)
            }
        }
    }

    /// Sends an event, waiting up to `timeout` for room in the client's
    /// event ring. The wait ends when the loop reads a wake-up from the
    /// client (it frees room), so the service's loop must be running on
    /// another thread: do not call this from a handler, where the loop
    /// would stop serving everyone and the wait would last its whole
    /// timeout.
    ///
    /// With an event queue (`ServiceOptions::event_queue`), the queue is
    /// the wait: this is [`send_event`](Self::send_event), in order with
    /// the events queued before it.
    ///
    /// # Errors
    ///
    /// As [`respond`](Self::respond), with [`Error::TimedOut`] instead of
    /// `WouldBlock`.
    pub fn send_event_timeout(&self, id: i32, payload: &[u8], timeout: Duration) -> Result<()> {
        if self.inner.backlog.is_some() {
            return self.send_event(id, payload);
        }
        let h = event_header(id);
        self.send(Out::Event, h, &[IoSlice::new(payload)], &[], Some(timeout))
    }

    /// Why the connection closed: `None` while it is open; set before
    /// `Handler::connection_closed` runs.
    pub fn close_reason(&self) -> Option<CloseReason> {
        *self.inner.close_reason.lock()
    }

    pub(crate) fn set_close_reason(&self, reason: CloseReason) {
        self.inner.close_reason.lock().get_or_insert(reason);
    }

    /// Has the loop look at this connection's requests again, after
    /// [`Handler::ready`](crate::Handler::ready) said it could not take
    /// one: from any thread; takes effect on the loop's next turn. No
    /// effect on a connection that was not held, or is gone.
    pub fn resume(&self) {
        if self.is_connected() {
            self.inner
                .remote
                .request_resume(self.inner.id, self.inner.slot);
        }
    }

    /// Closes the connection from the server side. Takes effect on the
    /// loop's next turn (at once if called from a handler, before the next
    /// request is dispatched); the client sees `Disconnected`.
    pub fn disconnect(&self) {
        self.condemn(None);
    }

    /// Closes the connection on the loop's next turn, reporting `fault`
    /// (a protocol violation by the client) to the error hook if given.
    pub(crate) fn condemn(&self, fault: Option<Violation>) {
        self.condemn_for(fault.map(crate::FaultKind::Violation));
    }

    /// [`condemn`](Self::condemn), for any fault.
    pub(crate) fn condemn_for(&self, fault: Option<crate::FaultKind>) {
        if self.inner.alive.swap(false, Ordering::AcqRel) {
            self.inner
                .remote
                .request_disconnect(self.inner.id, self.inner.slot, fault);
        }
    }

    /// Sends one message and counts it (or its refusal).
    fn send(
        &self,
        out: Out,
        header: MsgHeader,
        parts: &[IoSlice<'_>],
        fds: &[BorrowedFd<'_>],
        timeout: Option<Duration>,
    ) -> Result<()> {
        let max = self.inner.max_message;
        let wakeups = &self.inner.wakeups;
        self.send_by(out, header, |channel| {
            send_waiting(channel, wakeups, max, header, parts, fds, timeout)
        })
    }

    /// Where an event of `len` payload bytes goes: `attempt` on the ring
    /// (its error, `WouldBlock` included, returned) without an event
    /// queue; with one, `attempt` only if nothing waits in the queue,
    /// given the queue's lock so that no event overtakes those queued
    /// meanwhile, and `None` (the event is to be queued) when something
    /// waits there or the ring has no room.
    fn ring_unless_queued<'a, T>(
        &'a self,
        len: usize,
        attempt: impl FnOnce(Option<MutexGuard<'a, Backlog>>) -> Result<T>,
    ) -> Result<Option<T>> {
        let Some((_, backlog)) = &self.inner.backlog else {
            return attempt(None).map(Some);
        };
        let queue = backlog.lock();
        if queue.items.is_empty() {
            match attempt(Some(queue)) {
                Err(Error::WouldBlock) => {}
                other => return other.map(Some),
            }
        }
        let max = self.inner.max_message;
        if len > max {
            return Err(Error::MessageTooLarge { len, max });
        }
        Ok(None)
    }

    /// Room for a message of `len` payload bytes on `out`'s channel: in
    /// its ring, the channel locked (and `backlog`, if given, held) until
    /// the slot goes; elsewhere a buffer.
    fn reserve_on<'a>(
        &'a self,
        out: Out,
        header: MsgHeader,
        len: usize,
        backlog: Option<MutexGuard<'a, Backlog>>,
    ) -> Result<MessageSlot<'a>> {
        let max = self.inner.max_message;
        if len > max {
            return Err(Error::MessageTooLarge { len, max });
        }
        let channel = self.outlet(out);
        if !channel.in_place {
            return Ok(self.buffered(out, header, len));
        }
        if !self.is_connected() {
            return Err(Error::Disconnected);
        }
        let mut tx = channel.lock();
        let sender = tx.as_mut().ok_or(Error::Disconnected)?;
        match sender.try_reserve(header, len, max) {
            Ok(reserved) => Ok(MessageSlot {
                conn: self,
                out,
                header,
                room: SlotRoom::Ring {
                    reserved,
                    tx,
                    _backlog: backlog,
                },
            }),
            Err(e) => {
                drop(tx);
                Err(self.count_refused(match e {
                    TrySendError::Full => Error::WouldBlock,
                    e => e.into(),
                }))
            }
        }
    }

    /// A slot that is a buffer of `len` bytes, sent at its commit.
    fn buffered(&self, out: Out, header: MsgHeader, len: usize) -> MessageSlot<'_> {
        MessageSlot {
            conn: self,
            out,
            header,
            room: SlotRoom::Buffer(vec![0u8; len]),
        }
    }

    /// The channel a kind of message goes on.
    fn outlet(&self, out: Out) -> &Outlet {
        match out {
            Out::Event => &self.inner.event,
            Out::Response | Out::Call => &self.inner.response,
        }
    }

    /// Sends a message of `len` payload bytes written in place by `fill`
    /// where the channel allows (ringlink's rings), without waiting;
    /// otherwise `fill` writes into a buffer that is sent as any message.
    fn send_in_place(
        &self,
        out: Out,
        header: MsgHeader,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<()> {
        let max = self.inner.max_message;
        let channel = self.outlet(out);
        if !channel.in_place {
            if len > max {
                return Err(Error::MessageTooLarge { len, max });
            }
            let mut buf = vec![0u8; len];
            fill(&mut buf);
            return self.send(out, header, &[IoSlice::new(&buf)], &[], None);
        }
        self.send_by(out, header, |channel| {
            let mut guard = channel.lock();
            let tx = guard.as_mut().ok_or(Error::Disconnected)?;
            match tx.try_send_in_place(header, len, max, fill) {
                Ok(()) => Ok(len),
                Err(TrySendError::Full) => Err(Error::WouldBlock),
                Err(e) => Err(e.into()),
            }
        })
    }

    /// What every send shares: the connection's state, then `send` on the
    /// channel, then the counters and the trace hook (or the refusal's
    /// count, and a client that broke its ring condemned).
    fn send_by(
        &self,
        out: Out,
        header: MsgHeader,
        send: impl FnOnce(&Outlet) -> Result<usize>,
    ) -> Result<()> {
        if !self.is_connected() {
            return Err(Error::Disconnected);
        }
        let sent = send(self.outlet(out));
        self.account(out, header, sent)
    }

    /// After a send: the counters and the trace hook (or the refusal's
    /// count, and a client that broke its ring condemned).
    fn account(&self, out: Out, header: MsgHeader, sent: Result<usize>) -> Result<()> {
        match sent {
            Ok(len) => {
                self.count_sent(out, header, len);
                Ok(())
            }
            Err(e) => Err(self.count_refused(e)),
        }
    }

    /// A message of `len` payload bytes went: counted, and a response
    /// traced.
    fn count_sent(&self, out: Out, header: MsgHeader, len: usize) {
        let o = &self.inner.counters.output;
        match out {
            Out::Response => count(&o.responses, 1),
            Out::Event => count(&o.events, 1),
            Out::Call => {}
        }
        count(&o.bytes_sent, len as u64);
        if matches!(out, Out::Response) {
            self.inner.remote.trace(&crate::Trace {
                connection: self,
                id: header.id,
                seq: header.seq,
                stage: crate::TraceStage::Responded {
                    error: header.error,
                },
            });
        }
    }

    /// A message did not go: a refusal for room counted, a client that
    /// broke its ring condemned. Returns the error.
    fn count_refused(&self, e: Error) -> Error {
        match &e {
            Error::WouldBlock | Error::TimedOut => {
                count(&self.inner.counters.output.send_retries, 1);
            }
            // The client broke its ring: it is dropped like one that
            // broke its requests (PROTOCOL.md, section 5).
            Error::Protocol(v) => self.condemn(Some(*v)),
            _ => {}
        }
        e
    }
}

/// What the loop does to a connection, through these calls only (its
/// fields stay this file's).
impl Connection {
    /// Runs `f` on the response sender under its lock (`None` once the
    /// connection is destroyed).
    pub(crate) fn with_response<R>(&self, f: impl FnOnce(Option<&mut Sender>) -> R) -> R {
        f(self.inner.response.lock().as_mut())
    }

    /// Whether a full-size response certainly fits in the client's
    /// channel, by what the last sender learnt, without the lock that
    /// [`with_response`](Self::with_response) takes (see `Outlet`).
    pub(crate) fn answer_surely_fits(&self) -> bool {
        self.inner.response.surely_fits()
    }

    /// Sends what is left of the last response (`event`: event) over a
    /// socket: whether nothing is left.
    pub(crate) fn flush(&self, event: bool) -> bool {
        let channel = if event {
            &self.inner.event
        } else {
            &self.inner.response
        };
        let tail_out = channel
            .lock()
            .as_mut()
            .is_none_or(|s| s.flush().unwrap_or(true));
        if !event || !tail_out {
            return tail_out;
        }
        self.flush_events()
    }

    /// Sends what the event backlog holds while the client has room, and
    /// arms its wake-up for the rest: whether nothing is left.
    pub(crate) fn flush_events(&self) -> bool {
        let Some((_, backlog)) = &self.inner.backlog else {
            return true;
        };
        if !self.inner.backlogged.load(Ordering::Acquire) {
            return true;
        }
        let mut b = backlog.lock();
        loop {
            if self.flush_backlog(&mut b).is_err() {
                return true; // closed, or condemned: nothing to wait for
            }
            if b.items.is_empty() {
                return true;
            }
            if self
                .inner
                .event
                .lock()
                .as_mut()
                .is_none_or(Sender::prepare_sleep)
            {
                return false;
            }
        }
    }

    /// A wake-up came from the client (or the connection closed): threads
    /// waiting for room in its rings look again.
    pub(crate) fn woken(&self) {
        self.inner.wakeups.notify();
    }

    /// Counts a request handed to the handler.
    #[inline]
    pub(crate) fn count_request(&self, len: usize) {
        let intake = &self.inner.counters.intake;
        bump(&intake.requests, 1);
        bump(&intake.bytes_received, len as u64);
    }

    /// Counts a request left waiting for room for its answer.
    pub(crate) fn count_recv_retry(&self) {
        bump(&self.inner.counters.intake.recv_retries, 1);
    }

    /// Responses sent so far (the trace hook compares before and after a
    /// handler).
    pub(crate) fn responses_sent(&self) -> u64 {
        self.inner.counters.output.responses.load(Ordering::Relaxed)
    }

    /// Records the flow-control state the client sees (`changed`: a
    /// change, counted).
    pub(crate) fn set_flow_control(&self, on: bool, changed: bool) {
        let intake = &self.inner.counters.intake;
        intake.flow_control.store(on, Ordering::Relaxed);
        if changed {
            bump(&intake.flow_control_changes, 1);
        }
    }

    /// The client left: calls waiting for a reply, and calls made from
    /// here, fail with `Disconnected`.
    pub(crate) fn client_left(&self) {
        if !self.inner.client_left.swap(true, Ordering::AcqRel) {
            drop(self.inner.calls.lock());
            self.inner.call_done.notify_all();
        }
    }

    /// Marks the connection closed: from here every send fails with
    /// `Disconnected`.
    pub(crate) fn mark_closed(&self) {
        self.inner.alive.store(false, Ordering::Release);
        drop(self.inner.calls.lock());
        self.inner.call_done.notify_all();
    }

    /// Takes the senders out, so that clones held by the application keep
    /// no mapping or fd alive, and wakes the threads waiting for room
    /// (they find the connection gone).
    pub(crate) fn take_senders(&self) -> [Option<Sender>; 2] {
        let senders = [
            self.inner.response.lock().take(),
            self.inner.event.lock().take(),
        ];
        self.inner.wakeups.notify();
        // Calls waiting for a reply find the connection gone.
        drop(self.inner.calls.lock());
        self.inner.call_done.notify_all();
        senders
    }
}

/// An event of [`Connection::send_events`] or
/// [`Connection::send_events_vectored`]: its id and its parts.
trait EventParts {
    fn id(&self) -> i32;
    fn with_parts<R>(&self, f: impl FnOnce(&[IoSlice<'_>]) -> R) -> R;
}

impl EventParts for (i32, &[u8]) {
    fn id(&self) -> i32 {
        self.0
    }
    fn with_parts<R>(&self, f: impl FnOnce(&[IoSlice<'_>]) -> R) -> R {
        f(&[IoSlice::new(self.1)])
    }
}

impl EventParts for (i32, &[IoSlice<'_>]) {
    fn id(&self) -> i32 {
        self.0
    }
    fn with_parts<R>(&self, f: impl FnOnce(&[IoSlice<'_>]) -> R) -> R {
        f(self.1)
    }
}

/// The header of an event with message id `id`.
fn event_header(id: i32) -> MsgHeader {
    MsgHeader {
        id,
        size: 0,
        error: 0,
        flags: 0,
        seq: 0,
    }
}

/// The header of the response to request `seq`. Requests are numbered
/// from 1; 0 is a one-way request's (or no request's): its client reads
/// no response, so `Error::OneWay`.
fn response_header(seq: u64, id: i32, error: i32) -> Result<MsgHeader> {
    if seq == 0 {
        return Err(Error::OneWay);
    }
    Ok(MsgHeader {
        id,
        size: 0,
        error,
        flags: 0,
        seq,
    })
}

/// How often a wait for room in a channel whose peer says nothing when it
/// makes room (libqb's) looks again.
pub(crate) const QUIET_POLL: Duration = Duration::from_millis(2);

/// Sends one message on `channel`, waiting up to `timeout` for room
/// (`None`: not at all), without holding the lock while it waits: the
/// loop takes it. Returns the payload length.
fn send_waiting(
    channel: &Outlet,
    wakeups: &Wakeups,
    max: usize,
    header: MsgHeader,
    parts: &[IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
    timeout: Option<Duration>,
) -> Result<usize> {
    let len = ringlink_common::payload_len(parts, max)?;
    let deadline = timeout.map(ringlink_common::time::deadline_in);
    loop {
        let mut guard = channel.lock();
        let tx = guard.as_mut().ok_or(Error::Disconnected)?;
        match tx.try_send_with_fds(header, parts, max, fds) {
            Ok(()) => return Ok(len),
            Err(TrySendError::Full) => {}
            Err(e) => return Err(e.into()),
        }
        let Some(deadline) = deadline else {
            return Err(Error::WouldBlock);
        };
        if Instant::now() >= deadline {
            return Err(Error::TimedOut);
        }
        match tx.poll_fd().map(|fd| fd.try_clone_to_owned()) {
            // A socket: wait for it to become writable.
            Some(fd) => {
                let fd = fd?;
                drop(guard);
                let mut fds = [nix::poll::PollFd::new(fd.as_fd(), WRITABLE)];
                wait::poll_until(&mut fds, Some(deadline))?;
            }
            // A ring: raise its waiting flag, so that the client sends a
            // wake-up when it frees room, and sleep until the loop
            // reports one. The count is read before the flag goes up (and
            // only here, off the path of a send that succeeds): a wake-up
            // the flag brings is counted past it.
            None => {
                let seen = wakeups.count();
                if tx.prepare_sleep() {
                    // A peer that says nothing when it makes room (libqb's)
                    // is looked at again every so often.
                    let until = if tx.woken_by_peer() {
                        deadline
                    } else {
                        deadline.min(Instant::now() + QUIET_POLL)
                    };
                    drop(guard);
                    wakeups.wait(seen, until);
                } else {
                    // Room appeared, and the failed arm lowered the flag,
                    // which another thread waiting here may have raised:
                    // it looks again too.
                    wakeups.notify();
                }
            }
        }
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.inner.id)
            .field("credentials", &self.inner.credentials)
            .field("max_message", &self.inner.max_message)
            .field("alive", &self.is_connected())
            .finish_non_exhaustive()
    }
}

/// A response or event reserved by [`Connection::reserve_response`] or
/// [`Connection::reserve_event`]: dereferences to its payload bytes,
/// written in place (over shared memory, in the client's ring);
/// [`commit`](Self::commit) sends it, and dropping it sends nothing.
/// Over shared memory it holds the channel's lock while it lives.
#[must_use = "the message is sent only when committed"]
pub struct MessageSlot<'a> {
    conn: &'a Connection,
    out: Out,
    header: MsgHeader,
    room: SlotRoom<'a>,
}

/// Where a reserved message is written.
enum SlotRoom<'a> {
    /// In the client's ring, its channel locked (and the event queue,
    /// for an event with one) until the slot goes.
    Ring {
        reserved: ringlink_channel::Reserved,
        // Dropped before the queue's guard: locks go in the reverse of
        // their order.
        tx: OutletGuard<'a>,
        _backlog: Option<MutexGuard<'a, Backlog>>,
    },
    /// In a buffer, sent (or queued) at the commit.
    Buffer(Vec<u8>),
}

impl MessageSlot<'_> {
    /// Sends the message as its bytes stand.
    ///
    /// # Errors
    ///
    /// Over shared memory only `Disconnected`: the connection was closed
    /// or condemned since the reserve, and nothing is sent (the room was
    /// taken at the reserve). A buffer is sent as [`Connection::respond`]
    /// or [`Connection::send_event`] sends, with their errors.
    #[inline]
    pub fn commit(mut self) -> Result<()> {
        // By reference until the message is out: moving the slot would
        // copy it with loads that wait for the payload's stores to reach
        // the client's core (see `ipcc`'s `Engine::commit_reserved`).
        let (conn, out, header) = (self.conn, self.out, self.header);
        let len = match &mut self.room {
            // Condemned or closed since the reserve: nothing goes, as
            // nothing would through `send_by`.
            SlotRoom::Ring { .. } if !conn.is_connected() => return Err(Error::Disconnected),
            SlotRoom::Ring { reserved, tx, .. } => {
                tx.as_mut()
                    .expect("the sender stays while its lock is held")
                    .commit_reserved(reserved);
                reserved.len()
            }
            SlotRoom::Buffer(buf) => {
                return match out {
                    Out::Event => conn.send_event(header.id, buf),
                    Out::Response | Out::Call => {
                        conn.send(out, header, &[IoSlice::new(buf)], &[], None)
                    }
                };
            }
        };
        // The channel unlocked (then the event queue) before counting.
        drop(self);
        conn.count_sent(out, header, len);
        Ok(())
    }
}

impl std::ops::Deref for MessageSlot<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        match &self.room {
            SlotRoom::Ring { reserved, tx, .. } => tx
                .as_ref()
                .expect("the sender stays while its lock is held")
                .reserved(reserved),
            SlotRoom::Buffer(buf) => buf,
        }
    }
}

impl std::ops::DerefMut for MessageSlot<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.room {
            SlotRoom::Ring { reserved, tx, .. } => tx
                .as_mut()
                .expect("the sender stays while its lock is held")
                .reserved_mut(reserved),
            SlotRoom::Buffer(buf) => buf,
        }
    }
}

impl fmt::Debug for MessageSlot<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageSlot")
            .field("len", &self.len())
            .field("in_ring", &matches!(self.room, SlotRoom::Ring { .. }))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct A(u32);

    #[test]
    fn the_first_state_and_those_that_replace_it() {
        let ctx = Context::default();
        assert!(ctx.get().is_none());
        assert!(ctx.with(|c| c.is_none()));
        ctx.set(Arc::new(A(1)));
        assert_eq!(
            ctx.with(|c| c.and_then(|c| c.downcast_ref::<A>()).map(|a| a.0)),
            Some(1)
        );
        assert!(ctx.with(|c| c.and_then(|c| c.downcast_ref::<u8>()).is_none()));
        // Replaced: the new state is read, whatever type it is.
        ctx.set(Arc::new(7u8));
        assert_eq!(
            ctx.get().and_then(|c| c.downcast::<u8>().ok()).as_deref(),
            Some(&7)
        );
        assert!(ctx.with(|c| c.and_then(|c| c.downcast_ref::<A>()).is_none()));
        ctx.set(Arc::new(A(3)));
        assert_eq!(
            ctx.with(|c| c.and_then(|c| c.downcast_ref::<A>()).map(|a| a.0)),
            Some(3)
        );
    }

    #[test]
    fn a_state_borrowed_stays_valid_while_it_is_replaced() {
        let ctx = Arc::new(Context::default());
        ctx.set(Arc::new(A(1)));
        std::thread::scope(|s| {
            let reader = ctx.clone();
            let r = s.spawn(move || {
                for _ in 0..10_000 {
                    let v = reader.with(|c| c.and_then(|c| c.downcast_ref::<A>()).map(|a| a.0));
                    assert!(matches!(v, Some(1..=1000)), "{v:?}");
                }
            });
            for i in 2..=1000 {
                ctx.set(Arc::new(A(i)));
            }
            r.join().unwrap();
        });
    }

    #[test]
    fn counters_cleared_count_again_from_zero() {
        let c = AtomicU64::new(0);
        let mut base = 0;
        bump(&c, 5);
        assert_eq!(read(&c, &mut base, false), 5);
        assert_eq!(read(&c, &mut base, true), 5);
        assert_eq!(read(&c, &mut base, false), 0);
        bump(&c, 2);
        count(&c, 1);
        assert_eq!(read(&c, &mut base, true), 3);
        assert_eq!(read(&c, &mut base, false), 0);
    }
}
