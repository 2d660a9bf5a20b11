//! The client's send/receive engine, shared by [`Client`](crate::Client)
//! and the async client: one attempt to send or to receive, the checks of
//! what the server sends, and the preparing of a wait (spin, drain the
//! stream socket, raise a ring's flag, or pick the socket to poll). The
//! blocking client loops over it with `poll(2)`; the async client with
//! tokio's reactor.

use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::PollFd;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use ringlink_channel::set::ClientSide;
use ringlink_channel::wait::{self, READABLE, WRITABLE};
use ringlink_channel::{frame, Plain, Reserved, TrySendError};
use ringlink_common::fdpass::PeerFds;
use ringlink_common::wire::{FdTerms, MsgHeader, FLAG_ONE_WAY, FLAG_REPLY};
use ringlink_common::{ClientStats, Error, Result, Transport, Violation};

use crate::connect::Connected;
use crate::flow::{self, Flow};
use crate::stream::Stream;
use crate::Message;

/// What an async wait sleeps on, once [`Engine::arm`]ed.
#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
pub(crate) struct Armed {
    /// Nothing came since the last look: the wait may sleep.
    pub(crate) sleep: bool,
    /// Room in the request channel ends it too (over sockets, awaited as
    /// the request socket's writability; over shared memory, a wake-up
    /// like any other).
    pub(crate) space: bool,
}

/// What a wait is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    Response,
    Event,
    Space,
}

impl Wait {
    fn event(self) -> bool {
        self == Wait::Event
    }
}

/// How often a wait for room in a libqb server's request ring (or for its
/// flow control to lift) looks again: a libqb server says nothing when
/// it makes room.
const QUIET_POLL: Duration = Duration::from_millis(2);

/// The first of those looks: a libqb server takes requests as fast as a
/// client writes them, and a full ring is often a matter of microseconds.
const QUIET_FIRST: Duration = Duration::from_micros(50);

/// How long a wait for a libqb server's response sleeps on its ring's
/// semaphore before it looks at the server's liveness.
const LIVENESS_SLICE: Duration = ringlink_ringbuf::qb::LIVENESS_SLICE;

/// A drop's flush of a request's tail (socket transport) stops waiting
/// once the server has made no room for this long (the kernel reports
/// room once three quarters of the send buffer, at most 8 MiB, are
/// free): it is busy or stuck, and a drop does not wait for it. A server
/// whose loop is free reads 6 MiB in a few milliseconds.
const CLOSE_STALL: Duration = Duration::from_millis(200);

/// ... and never waits longer than this in all, for a server that reads
/// but slowly.
const CLOSE_MAX: Duration = Duration::from_secs(1);

/// Epoll tokens of the client's fd (the app's eventfd is `stream`'s).
const RESPONSES: u64 = 0;
const EVENTS: u64 = 1;
const STREAM: u64 = 2;

/// A connection's channels and their state, as its client drives them.
pub(crate) struct Engine {
    /// The handshake's stream socket: kept open to see the server's
    /// death; it carries the rings' wake-ups (a byte each, both ways) or,
    /// with the socket transport, the server's flow-control level.
    stream: Stream,
    side: ClientSide,
    transport: Transport,
    max_message: usize,
    next_seq: u64,
    /// Responses received: never more than the requests sent, so that
    /// what a server sends cannot grow a client's tables beyond what the
    /// application asked for.
    answered: u64,
    spin: Duration,
    flow: Flow,
    /// The epoll set watches the request socket for writability (a
    /// request's tail waits to be sent).
    watching_tail: bool,
    /// The client's fd: readable when a response or an event may be
    /// waiting or the server hung up.
    epoll: Epoll,
    /// How long a wait for room in a libqb server's ring sleeps before it
    /// looks again: from [`QUIET_FIRST`], doubling to [`QUIET_POLL`]
    /// while the ring stays full, back to the start once a send goes.
    quiet: Duration,
    /// Payload length of the last request that found no room: what a
    /// wait for room waits for room for (0 after a send went).
    space_for: usize,
    /// The counters `Client::stats` reads.
    stats: ClientStats,
    /// The application's trace hook.
    trace: Option<Box<TraceHook>>,
    /// The application's handler of the server's calls.
    calls: Option<Box<CallHandler>>,
    /// Replies to calls waiting for room in the request channel: id, the
    /// call's number, error, payload.
    replies: std::collections::VecDeque<(i32, u64, i32, Vec<u8>)>,
    /// What makes a waiting call return `Interrupted`.
    interrupt: std::sync::Arc<Interrupt>,
    /// What the server accepts of fds in requests.
    server_fds: FdTerms,
    /// The fds of the last message received, until taken (or the next
    /// message comes: then reaped).
    last_fds: PeerFds,
    /// The fds of the send waiting for room: it waits for the server to
    /// release messages until they fit its in-flight limit too.
    space_fds: usize,
    /// The request whose tail waits to be sent (socket transport), as
    /// noted by the client that sent it ([`note_tail`](Self::note_tail));
    /// meaningful only while [`has_tail`](Self::has_tail).
    tail_request: Option<u64>,
    /// Whether dropping the engine may wait (bounded) for a tail to go:
    /// not under the async client, whose last clone may drop on a
    /// runtime thread that the service itself needs to read the tail.
    close_waits: bool,
}

/// An interruption asked for: an eventfd of this process alone (never
/// shared with a peer) that wakes a wait, and a flag.
#[derive(Debug)]
pub(crate) struct Interrupt {
    fd: nix::sys::eventfd::EventFd,
    asked: std::sync::atomic::AtomicBool,
}

impl Interrupt {
    fn new() -> Result<Interrupt> {
        Ok(Interrupt {
            fd: nix::sys::eventfd::EventFd::from_value_and_flags(
                0,
                nix::sys::eventfd::EfdFlags::EFD_CLOEXEC
                    | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
            )
            .map_err(io)?,
            asked: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Asks: async-signal-safe (an atomic store and a `write(2)`).
    pub(crate) fn ask(&self) {
        self.asked.store(true, std::sync::atomic::Ordering::Release);
        let _ = self.fd.write(1);
    }

    /// Whether one was asked for since the last look; clears it.
    ///
    /// Looked at with a plain load first: a swap is a locked instruction,
    /// which waits for this thread's stores to leave the CPU, and this
    /// runs on every wait, right after a request went and right after its
    /// answer came.
    fn take(&self) -> bool {
        if !self.asked.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
        if self.asked.swap(false, std::sync::atomic::Ordering::AcqRel) {
            let _ = self.fd.read();
            true
        } else {
            false
        }
    }
}

/// Makes the client's waiting call, if any (or its next one), return
/// [`Error::Interrupted`]: from another thread, or from a signal handler
/// (it only stores a flag and writes to an eventfd of this process, both
/// async-signal-safe). Cloneable; see `Client::interrupter`.
#[derive(Clone, Debug)]
pub struct Interrupter(pub(crate) std::sync::Arc<Interrupt>);

impl Interrupter {
    /// Interrupts the client's waiting call, or its next one.
    pub fn interrupt(&self) {
        self.0.ask();
    }
}

/// Serves a call from the server: returns the reply's error code (0:
/// none) and payload.
pub(crate) type CallHandler = dyn FnMut(&Call<'_>) -> (i32, Vec<u8>) + Send;

/// A call from the server (its `Connection::call`), as the client's call
/// handler sees it.
#[derive(Clone, Copy, Debug)]
pub struct Call<'a> {
    /// The call's message id.
    pub id: i32,
    /// Its number (the reply carries it back).
    pub seq: u64,
    /// Its payload.
    pub payload: &'a [u8],
}

/// The client's trace hook (lwmsg traces both directions).
pub(crate) type TraceHook = dyn FnMut(&ClientTrace) + Send;

/// What a client's trace hook sees: a message sent or received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientTrace {
    /// A request went: its id, sequence number (0: one-way) and payload
    /// length.
    Sent {
        /// Message id.
        id: i32,
        /// Sequence number; 0 for a one-way request.
        seq: u64,
        /// Payload bytes.
        len: usize,
    },
    /// A response (or, with `event`, an event) was taken.
    Received {
        /// Message id.
        id: i32,
        /// The request it answers; 0 for events.
        seq: u64,
        /// The server's error code.
        error: i32,
        /// Payload bytes.
        len: usize,
        /// An event, not a response.
        event: bool,
    },
    /// The server said it dropped this many events here.
    Lagged(u64),
}

impl Engine {
    /// The engine of a connection just made.
    pub(crate) fn new(
        c: Connected,
        transport: Transport,
        spin: Duration,
        fc_enable_max: u32,
    ) -> Result<Engine> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(io)?;
        for (rx, token) in [(&c.side.response, RESPONSES), (&c.side.event, EVENTS)] {
            if let Some(fd) = rx.poll_fd() {
                epoll
                    .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token))
                    .map_err(io)?;
            }
        }
        epoll
            .add(
                &*c.sock,
                EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP, STREAM),
            )
            .map_err(io)?;
        Ok(Engine {
            stream: Stream::new(
                c.sock,
                transport == Transport::Socket,
                c.level,
                c.side.fd_inbox().cloned(),
            ),
            server_fds: c.server_fds,
            last_fds: PeerFds::default(),
            space_fds: 0,
            tail_request: None,
            close_waits: true,
            side: c.side,
            transport,
            max_message: c.max_message,
            next_seq: 1,
            answered: 0,
            spin,
            flow: Flow::new(fc_enable_max),
            watching_tail: false,
            epoll,
            quiet: QUIET_FIRST,
            space_for: 0,
            stats: ClientStats::default(),
            trace: None,
            calls: None,
            replies: std::collections::VecDeque::new(),
            interrupt: std::sync::Arc::new(Interrupt::new()?),
        })
    }

    /// Whether the server is a libqb one.
    pub(crate) fn is_libqb(&self) -> bool {
        self.side.is_libqb()
    }

    pub(crate) fn transport(&self) -> Transport {
        self.transport
    }

    pub(crate) fn max_message(&self) -> usize {
        self.max_message
    }

    /// Whether the server was still there at the last look.
    pub(crate) fn connected(&self) -> bool {
        self.stream.connected()
    }

    /// Whether the connection is still up: reads the stream socket for a
    /// hang-up and the rings for a close, without waiting.
    pub(crate) fn is_connected(&self) -> bool {
        self.stream.read();
        if self.stream.connected() && self.side.closed() {
            self.stream.fail();
        }
        self.stream.connected()
    }

    /// Takes what the server wrote on the stream socket (wake-ups, a new
    /// level, its leaving), before raising a ring's waiting flag: one
    /// drain, then the flags, so that no wake-up meant for a ring already
    /// waiting is taken (PROTOCOL.md §4).
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn drain_wakes(&self) {
        self.stream.read();
    }

    /// Whether any call read the stream socket since the last time this
    /// was asked: wake-ups meant for other waiters may have been taken.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn take_drained(&self) -> bool {
        self.stream.take_drained()
    }

    fn check(&self) -> Result<()> {
        if self.stream.connected() {
            Ok(())
        } else if let Some(v) = self.stream.fault() {
            Err(Error::Protocol(v))
        } else {
            Err(Error::Disconnected)
        }
    }

    /// `e`, after failing the connection if `e` leaves it unusable.
    pub(crate) fn fail(&mut self, e: Error) -> Error {
        #[cfg(feature = "tracing")]
        if e.is_fatal() && self.stream.connected() {
            match &e {
                Error::Protocol(v) => {
                    event!(warn, violation = %v, "protocol violation by the server")
                }
                _ => event!(debug, error = %e, "disconnected"),
            }
        }
        if e.is_fatal() {
            self.stream.fail();
        }
        e
    }

    fn held(&self) -> bool {
        self.flow.holds(flow::level(&self.side, &self.stream))
    }

    /// One attempt to send a request: `Ok(None)` if the channel is full
    /// or flow control holds sends back (wait with [`wait`](Self::wait),
    /// or arm with [`arm`](Self::arm)), `Ok(Some(seq))` once
    /// sent, with the sequence number its response will carry.
    ///
    /// A `one_way` request carries [`FLAG_ONE_WAY`] and sequence number 0,
    /// and takes no number (its `Some` is 0); a libqb server has no such
    /// mark, and gets a plain request.
    pub(crate) fn try_send(
        &mut self,
        id: i32,
        parts: &[IoSlice<'_>],
        one_way: bool,
        fds: &[BorrowedFd<'_>],
    ) -> Result<Option<u64>> {
        let len = ringlink_common::payload_len(parts, self.max_message)?;
        let max = self.max_message;
        let sent = self.try_send_by(id, len, one_way, |tx, header| {
            tx.try_send_with_fds(header, parts, max, fds)
        });
        if let Ok(None) = sent {
            self.space_fds = fds.len();
        }
        sent
    }

    /// Whether a message sent on the request socket (socket transport)
    /// is committed and its tail still waits to be sent: the socket took
    /// part of it and then filled. Shared memory never has one (a ring
    /// write is whole): there this is one comparison.
    #[inline]
    pub(crate) fn has_tail(&self) -> bool {
        self.transport == Transport::Socket && self.side.request.has_tail()
    }

    /// Notes that request `seq` (0: one-way) left a tail
    /// ([`unsent_request`](Self::unsent_request)).
    #[cold]
    pub(crate) fn note_tail(&mut self, seq: u64) {
        self.tail_request = Some(seq);
    }

    /// The request whose tail waits to be sent, if one does.
    pub(crate) fn unsent_request(&self) -> Option<u64> {
        if self.has_tail() {
            self.tail_request
        } else {
            None
        }
    }

    /// One attempt to send what waits of the last message's tail, without
    /// waiting: whether nothing waits (always, over shared memory).
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] (or the fault that ended the connection)
    /// while a tail waits; the socket's failure.
    pub(crate) fn try_flush(&mut self) -> Result<bool> {
        if !self.has_tail() {
            return Ok(true);
        }
        self.check()?;
        match self.side.request.flush() {
            Ok(done) => Ok(done),
            Err(TrySendError::Full) => Ok(false),
            Err(e) => Err(self.fail(e.into())),
        }
    }

    /// Waits until the request socket may take more of a tail
    /// (writable), or `deadline`; the stream socket and the interrupter
    /// end the wait too. Flow control does not hold a tail back: its
    /// message is already committed.
    ///
    /// # Errors
    ///
    /// [`Error::Interrupted`]; [`Error::Disconnected`] once the server is
    /// gone; a failed poll.
    pub(crate) fn wait_tail(&mut self, deadline: Option<Instant>) -> Result<()> {
        if self.interrupt.take() {
            return Err(Error::Interrupted);
        }
        let Some(request) = self.side.request.poll_fd() else {
            return Ok(());
        };
        let mut fds = [
            PollFd::new(request, WRITABLE),
            PollFd::new(self.interrupt.fd.as_fd(), READABLE),
            PollFd::new(self.stream.as_fd(), READABLE),
        ];
        let polled = wait::poll_until(&mut fds, deadline);
        let fired = fds[2].revents().is_some_and(|r| !r.is_empty());
        if let Err(e) = polled {
            return Err(self.fail(Error::Io(e)));
        }
        if self.interrupt.take() {
            return Err(Error::Interrupted);
        }
        // The stream socket spoke: a flow-control level (read here, so it
        // does not fire again) or the server's leaving.
        if fired && !self.is_connected() {
            return Err(self.fail(Error::Disconnected));
        }
        Ok(())
    }

    /// Before the connection closes: sends what waits of a tail while the
    /// server reads it, for at most [`CLOSE_MAX`], giving up once the
    /// server has made no room for [`CLOSE_STALL`] (it is busy, stuck or
    /// gone: a drop never waits for it). Best effort: a tail not sent by
    /// then is lost with its message (the server discards the part it
    /// has, as it does for any message cut by a closing connection).
    fn flush_for_close(&mut self) {
        if !self.has_tail() || !self.stream.connected() {
            return;
        }
        if !self.close_waits {
            // What the socket takes now (one flush sends until it is
            // full), and no wait.
            let _ = self.side.request.flush();
            return;
        }
        let end = Instant::now() + CLOSE_MAX;
        loop {
            match self.side.request.flush() {
                Ok(false) | Err(TrySendError::Full) => {}
                Ok(true) | Err(_) => return,
            }
            let now = Instant::now();
            if now >= end {
                return;
            }
            let Some(request) = self.side.request.poll_fd() else {
                return;
            };
            let mut fds = [PollFd::new(request, WRITABLE)];
            let stalled = match wait::poll_until(&mut fds, Some((now + CLOSE_STALL).min(end))) {
                Ok(()) => fds[0].revents().is_none_or(|r| r.is_empty()),
                Err(_) => true,
            };
            if stalled {
                return;
            }
        }
    }

    /// Makes the drop's flush of a tail one that never waits (see
    /// `close_waits`).
    #[cfg(feature = "tokio")]
    pub(crate) fn close_without_waiting(&mut self) {
        self.close_waits = false;
    }

    /// Whether requests are written in place in the ring
    /// ([`try_reserve`](Self::try_reserve)).
    pub(crate) fn writes_in_place(&self) -> bool {
        self.side.request.writes_in_place()
    }

    /// One attempt to send a request of `len` payload bytes written in
    /// place by `fill` (called only if it goes), as
    /// [`try_send`](Self::try_send). Only where
    /// [`writes_in_place`](Self::writes_in_place).
    pub(crate) fn try_send_in_place(
        &mut self,
        id: i32,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<Option<u64>> {
        if len > self.max_message {
            return Err(Error::MessageTooLarge {
                len,
                max: self.max_message,
            });
        }
        let max = self.max_message;
        self.try_send_by(id, len, false, |tx, header| {
            tx.try_send_in_place(header, len, max, fill)
        })
    }

    /// One attempt to reserve room for a request of `len` payload bytes
    /// to be written in place ([`Client::reserve`](crate::Client::reserve)),
    /// as [`try_send`](Self::try_send) would send it: `None` when there
    /// is no room or flow control holds requests back. The request
    /// is numbered and counted at [`commit_reserved`](Self::commit_reserved).
    pub(crate) fn try_reserve(&mut self, id: i32, len: usize) -> Result<Option<Reserved>> {
        let max = self.max_message;
        if len > max {
            return Err(Error::MessageTooLarge { len, max });
        }
        let Some(header) = self.next_header(id, false)? else {
            return Ok(None);
        };
        match self.side.request.try_reserve(header, len, max) {
            Ok(reserved) => Ok(Some(reserved)),
            Err(e) => self.not_sent(e, len).map(|_| None),
        }
    }

    /// The payload bytes of a reservation (to read them back).
    #[inline]
    pub(crate) fn reserved(&self, r: &Reserved) -> &[u8] {
        self.side.request.reserved(r)
    }

    /// The payload bytes of a reservation, to write.
    #[inline]
    pub(crate) fn reserved_mut(&mut self, r: &Reserved) -> &mut [u8] {
        self.side.request.reserved_mut(r)
    }

    /// Sends a reserved request; returns its sequence number. Nothing
    /// goes on a connection that failed since the reserve. By reference,
    /// like every step after the payload is written: a move of the
    /// reservation there would copy it with loads that wait for the
    /// payload's stores to reach the server's core.
    #[inline]
    pub(crate) fn commit_reserved(&mut self, r: &Reserved) -> Result<u64> {
        self.check()?;
        self.side.request.commit_reserved(r);
        Ok(self.sent(*r.header(), r.len()))
    }

    /// What both kinds of send share: flow control, numbering, counting,
    /// the trace hook; `send` does the sending.
    fn try_send_by(
        &mut self,
        id: i32,
        len: usize,
        one_way: bool,
        send: impl FnOnce(&mut ringlink_channel::Sender, MsgHeader) -> Result<(), TrySendError>,
    ) -> Result<Option<u64>> {
        let Some(header) = self.next_header(id, one_way)? else {
            return Ok(None);
        };
        match send(&mut self.side.request, header) {
            Ok(()) => Ok(Some(self.sent(header, len))),
            Err(e) => self.not_sent(e, len),
        }
    }

    /// Before a request goes: the connection's state and flow control
    /// (`None`: held back, counted as a retry), then the request's header
    /// with its number (0 for a one-way request).
    fn next_header(&mut self, id: i32, one_way: bool) -> Result<Option<MsgHeader>> {
        // A new attempt: the fds a wait for room waits for are its own
        // (`try_send` sets them when it finds no room), never an earlier
        // send's that was given up.
        self.space_fds = 0;
        if self.flow.enabled() && self.transport == Transport::Socket && !self.side.is_libqb() {
            // Levels arrive on the stream socket: read them first (a
            // libqb server's are in its control file).
            self.stream.read();
        }
        self.check()?;
        if self.held() {
            self.stats.send_retries += 1;
            return Ok(None);
        }
        let one_way = one_way && !self.side.is_libqb();
        Ok(Some(MsgHeader {
            id,
            size: 0,
            error: 0,
            flags: if one_way { FLAG_ONE_WAY } else { 0 },
            seq: if one_way { 0 } else { self.next_seq },
        }))
    }

    /// A request went: numbered, counted, traced. Returns its number.
    fn sent(&mut self, header: MsgHeader, len: usize) -> u64 {
        let one_way = header.flags & FLAG_ONE_WAY != 0;
        if !one_way {
            self.next_seq += 1;
        }
        self.stats.requests += 1;
        self.stats.one_way += u64::from(one_way);
        self.stats.bytes_sent += len as u64;
        let (id, seq) = (header.id, header.seq);
        if let Some(hook) = &mut self.trace {
            hook(&ClientTrace::Sent { id, seq, len });
        }
        self.quiet = QUIET_FIRST;
        self.space_for = 0;
        seq
    }

    /// A request did not go: `None` for no room (counted, and the wait
    /// for room set to this request's size), else the error (the
    /// connection failed, unless nothing went for a reason of the
    /// request's own).
    fn not_sent(&mut self, e: TrySendError, len: usize) -> Result<Option<u64>> {
        match e {
            TrySendError::Full => {
                self.stats.send_retries += 1;
                // Wait for room for this request, not for any: a ring
                // with room for a small message and not for this one
                // would end every wait at once, and the send spin.
                self.space_for = len;
                Ok(None)
            }
            // Refused before anything went: the connection is fine.
            e @ (TrySendError::FdsNotAccepted { .. } | TrySendError::FdRefused { .. }) => {
                Err(e.into())
            }
            // This user has more fds in flight than its fd limit: nothing
            // went, the connection is fine.
            TrySendError::Io(e)
                if e.raw_os_error() == Some(nix::errno::Errno::ETOOMANYREFS as i32) =>
            {
                Err(Error::Io(e))
            }
            e => Err(self.fail(e.into())),
        }
    }

    /// What the server accepts of fds in requests.
    pub(crate) fn server_fds(&self) -> FdTerms {
        self.server_fds
    }

    /// The fds of the last message received, taken.
    pub(crate) fn take_fds(&mut self) -> Vec<OwnedFd> {
        std::mem::take(&mut self.last_fds).take()
    }

    /// Holds `fds` as the last message's (those held before are reaped).
    pub(crate) fn hold_fds(&mut self, fds: PeerFds) {
        self.last_fds = fds;
    }

    /// Serves the server's calls at the head of the response channel:
    /// runs the call handler (or answers `ERROR_UNKNOWN_ID` without one)
    /// and sends the reply; replies the request channel has no room for
    /// wait, in order, and go first next time. Returns how many calls were
    /// served.
    pub(crate) fn serve_calls(&mut self) -> Result<usize> {
        if self.side.is_libqb() {
            return Ok(0);
        }
        let mut served = 0;
        loop {
            self.send_replies()?;
            if !self.replies.is_empty() {
                // No room for the replies: the calls wait in the ring.
                return Ok(served);
            }
            let call = match self.side.response.try_recv() {
                Ok(Some(incoming)) if incoming.header().is_call() => {
                    let h = incoming.header();
                    let payload = incoming.payload().to_vec();
                    incoming.release();
                    (h, payload)
                }
                // A response (or nothing): the caller's.
                Ok(_) => return Ok(served),
                // The server left: no more calls; what is left to read is
                // the caller's business.
                Err(ringlink_channel::TryRecvError::Closed) => return Ok(served),
                Err(e) => return Err(self.fail(e.into())),
            };
            let (h, payload) = call;
            let (error, reply) = match &mut self.calls {
                Some(handler) => handler(&Call {
                    id: h.id,
                    seq: h.seq,
                    payload: &payload,
                }),
                None => (ringlink_common::wire::ERROR_UNKNOWN_ID, Vec::new()),
            };
            let mut reply = reply;
            reply.truncate(self.max_message);
            self.replies.push_back((h.id, h.seq, error, reply));
            self.stats.calls += 1;
            served += 1;
        }
    }

    /// Whether a call from the server waits at the front of the response
    /// channel behind replies that wait for room in the request channel.
    fn calls_wait_for_room(&mut self) -> bool {
        !self.replies.is_empty() && !self.side.is_libqb() && call_at_front(&mut self.side)
    }

    /// Makes a wait for room wait for the first reply's.
    fn room_for_replies(&mut self) {
        self.space_for = self.replies.front().map_or(0, |r| r.3.len());
        self.space_fds = 0;
    }

    /// Sends the replies waiting, in order, while there is room.
    fn send_replies(&mut self) -> Result<()> {
        while let Some((id, seq, error, body)) = self.replies.front() {
            let header = MsgHeader {
                id: *id,
                size: 0,
                error: *error,
                flags: FLAG_REPLY,
                seq: *seq,
            };
            match self
                .side
                .request
                .try_send(header, &[IoSlice::new(body)], self.max_message)
            {
                Ok(()) => {
                    self.replies.pop_front();
                    if self.has_tail() {
                        // The tail is a reply's now, not a request's.
                        self.tail_request = None;
                    }
                }
                // The connection is over (the server closed the ring, or
                // it hung up, or the connection failed, with the ring
                // full: nobody will make room): nobody to reply to. What
                // the server sent before, the calls (their handler still
                // runs, its replies dropped the same way) and what they
                // held back, is still read.
                Err(TrySendError::Closed) => {
                    self.replies.clear();
                    return Ok(());
                }
                Err(TrySendError::Full) if !self.stream.connected() => {
                    self.replies.clear();
                    return Ok(());
                }
                Err(TrySendError::Full) => return Ok(()),
                Err(e) => return Err(self.fail(e.into())),
            }
        }
        Ok(())
    }

    /// Sets (or, with `None`, removes) the call handler.
    pub(crate) fn set_call_handler(&mut self, handler: Option<Box<CallHandler>>) {
        self.calls = handler;
    }

    /// A handle that interrupts this engine's waits.
    pub(crate) fn interrupter(&self) -> Interrupter {
        Interrupter(self.interrupt.clone())
    }

    /// The counters; with `clear`, they restart from zero.
    pub(crate) fn stats(&mut self, clear: bool) -> ClientStats {
        let s = self.stats;
        if clear {
            self.stats = ClientStats::default();
        }
        s
    }

    /// Sets (or, with `None`, removes) the trace hook.
    pub(crate) fn set_trace(&mut self, hook: Option<Box<TraceHook>>) {
        self.trace = hook;
    }

    /// One attempt to receive a response (`event`: an event) into `buf`:
    /// `Ok(None)` when there is none and the server is still there. A
    /// message is delivered even after the server left, until none is
    /// left; one too large for `buf` is kept.
    pub(crate) fn try_recv(&mut self, event: bool, buf: &mut [u8]) -> Result<Option<Message>> {
        self.try_recv_with(event, &mut |m, payload| {
            buf.get_mut(..m.len)
                // Kept, fds and all, for a larger buffer.
                .ok_or(Error::BufferTooSmall { needed: m.len })?
                .copy_from_slice(payload);
            Ok(())
        })
    }

    /// One attempt to take a response (`event`: an event), handed to
    /// `deliver` in place (in the ring, or the socket's reassembly
    /// buffer) before its room is given back: `Ok(None)` if none is
    /// there. An error from `deliver` keeps the message, fds and all.
    pub(crate) fn try_recv_with(
        &mut self,
        event: bool,
        deliver: &mut dyn FnMut(&Message, &[u8]) -> Result<()>,
    ) -> Result<Option<Message>> {
        // The round trip's path: a message without fds in a ring, in one
        // pass, when no call waits to be served first (as the general
        // path below serves them); anything else takes that path.
        if self.replies.is_empty() && !(event && self.side.response.pending()) {
            match self.side.receiver(event).try_recv_plain() {
                Ok(Plain::Message(h, record)) if !h.is_call() && !h.is_lagged() => {
                    let payload = frame::payload(&record);
                    let msg = Message {
                        id: h.id,
                        seq: h.seq,
                        error: h.error,
                        len: payload.len(),
                        fds: 0,
                    };
                    // (A ring of our own transport: never libqb's.)
                    let msg = match numbered(event, false, self.next_seq, self.answered, msg) {
                        Ok(msg) => msg,
                        // (The record is left where it is: the
                        // connection is done.)
                        Err(v) => return Err(self.fail(Error::Protocol(v))),
                    };
                    // An error keeps the message.
                    deliver(&msg, payload)?;
                    record.release();
                    // Those of the message before, not taken, are reaped.
                    if !self.last_fds.is_empty() {
                        self.last_fds = PeerFds::default();
                    }
                    return Ok(Some(self.received(event, msg)));
                }
                Ok(Plain::Empty) if self.stream.connected() => return Ok(None),
                Err(e) => return Err(self.fail(e.into())),
                _ => {}
            }
        }
        // The tail of our last request must go before its answer can come
        // (errors show on the next send).
        let _ = self.side.request.flush();
        // Calls from the server are served before the caller's message:
        // replies that waited for room go first; an event look serves the
        // calls the response channel holds (a look at its position, no
        // system call); a response look meets them on its way.
        if !self.replies.is_empty() || (event && self.side.response.pending()) {
            self.serve_calls()?;
        }
        let libqb = self.side.is_libqb();
        let got = match self.side.receiver(event).try_recv() {
            Ok(Some(incoming)) if incoming.header().is_call() => {
                let _ = incoming;
                self.serve_calls()?;
                // (With replies waiting for room, the call waits too.)
                return if self.replies.is_empty() {
                    self.try_recv_with(event, deliver)
                } else {
                    Ok(None)
                };
            }
            Ok(Some(incoming)) if incoming.header().is_lagged() => {
                // The server dropped events here (its queue was full): said
                // in order, once, as the next event's place (the channel
                // layer checked the notice is 8 bytes, on events only).
                let n = incoming
                    .payload()
                    .try_into()
                    .map(u64::from_le_bytes)
                    .unwrap_or(0);
                incoming.release();
                self.stats.events_lagged += n;
                if let Some(hook) = &mut self.trace {
                    hook(&ClientTrace::Lagged(n));
                }
                return Err(Error::Lagged(n));
            }
            Ok(Some(mut incoming)) => {
                let h = incoming.header();
                let msg = Message {
                    id: h.id,
                    seq: h.seq,
                    error: h.error,
                    len: incoming.payload().len(),
                    fds: usize::from(h.fds()),
                };
                // Checked before the application sees it.
                let msg = match numbered(event, libqb, self.next_seq, self.answered, msg) {
                    Ok(msg) => msg,
                    Err(v) => return Err(self.fail(Error::Protocol(v))),
                };
                deliver(&msg, incoming.payload())?;
                // Those of the message before, not taken, are reaped.
                self.last_fds = incoming.take_fds();
                incoming.release();
                msg
            }
            Ok(None) if self.stream.connected() => return Ok(None),
            Ok(None) => return Err(self.check().err().unwrap_or(Error::Disconnected)),
            Err(e) => return Err(self.fail(e.into())),
        };
        Ok(Some(self.received(event, got)))
    }

    /// What every message received counts and tells the trace hook.
    #[inline]
    fn received(&mut self, event: bool, got: Message) -> Message {
        if event {
            self.stats.events += 1;
        } else {
            self.answered += 1;
            self.stats.responses += 1;
        }
        self.stats.bytes_received += got.len as u64;
        if let Some(hook) = &mut self.trace {
            hook(&ClientTrace::Received {
                id: got.id,
                seq: got.seq,
                error: got.error,
                len: got.len,
                event,
            });
        }
        got
    }

    /// Waits until `which` may have progressed, or `deadline`: polls the
    /// rings for the spin budget, then sleeps on the stream socket, which
    /// carries the rings' wake-ups and hears a dead server (over the
    /// socket transport, on the channel's socket and the stream socket
    /// together, so a dead server or a flow-control change wakes us).
    ///
    /// # Errors
    ///
    /// A failed poll; for a sender, [`Error::Disconnected`] once the
    /// server is gone (a reader goes back to read what it published
    /// before it left).
    pub(crate) fn wait(&mut self, which: Wait, deadline: Option<Instant>) -> Result<()> {
        if self.interrupt.take() {
            return Err(Error::Interrupted);
        }
        // Replies to the server's calls that wait for room hold back the
        // call at the front of the response channel, and every response
        // behind it: only room for them moves a receive of responses on.
        // Waited for as room (a look at the responses would find the call
        // at once, and spin without ever seeing the server leave), which
        // flow control does not hold back (replies are not requests).
        // Still a reader's wait when the server leaves (below). Events
        // are not held: an event wait waits for an event or that room
        // (`sleep`).
        let sender = which == Wait::Space;
        let held_calls = which == Wait::Response && self.calls_wait_for_room();
        let which = if held_calls {
            self.room_for_replies();
            Wait::Space
        } else {
            which
        };
        let held = !held_calls && self.held();
        let fired = match self.sleep(which, deadline, held) {
            Ok(fired) => fired,
            Err(e) => return Err(self.fail(e)),
        };
        if self.interrupt.take() {
            return Err(Error::Interrupted);
        }
        // The stream socket fired: a wake-up, or the server's leaving. A
        // response that came with it is taken first; the byte stays for
        // the drain of this client's next sleep (PROTOCOL.md W0), in a
        // round trip after its next request went, off its path. A server
        // that left just after answering is seen there (the drain reads
        // the end of the stream, or the poll fires at once), one wait
        // later than before.
        let answered = which == Wait::Response
            && self.transport != Transport::Socket
            && !self.side.is_libqb()
            && self.side.response.pending();
        if fired && !answered && !self.is_connected() {
            let e = self.fail(Error::Disconnected);
            return if sender { Err(e) } else { Ok(()) };
        }
        Ok(())
    }

    /// [`wait`](Self::wait)'s sleep; `held`: flow control held sends back
    /// before it (then only the level can release a `Space` wait; a wait
    /// for room for replies is never held). Returns whether the stream
    /// socket fired.
    fn sleep(&mut self, which: Wait, deadline: Option<Instant>, held: bool) -> Result<bool> {
        if self.side.is_libqb() {
            return self.sleep_libqb(which, deadline);
        }
        // Replies to the server's calls waiting for room: room ends this
        // wait too (the server may want a reply before it sends more).
        // Meanwhile a call at the front of the response channel cannot be
        // served: nothing to wake an event wait for.
        let replies_wait = which != Wait::Space && !self.replies.is_empty();
        if replies_wait {
            self.room_for_replies();
        }
        let Engine {
            stream,
            side,
            flow,
            spin,
            transport,
            interrupt,
            space_for,
            space_fds,
            ..
        } = self;
        let space_for = *space_for;
        let rings = *transport != Transport::Socket;
        // Filled only on the way to sleep: a wait that ends in the spin
        // allocates nothing.
        let mut fds: Vec<PollFd<'_>> = Vec::new();
        if rings {
            // The spin ends at the deadline if that comes first (a timeout
            // of a microsecond is not a spin of twenty).
            let spin = match deadline {
                Some(d) => (*spin).min(d.saturating_duration_since(Instant::now())),
                None => *spin,
            };
            let ready = match which {
                // (A wait for room for replies, never held, still spins
                // until the level allows sends: it then looks again when
                // its flag is up, or is woken. Written otherwise, with
                // `held` in this closure, the response wait's spin below
                // lost 12% of the 64 B round trip to the code's layout.)
                Wait::Space => ringlink_ringbuf::wake::spin_until(spin, || {
                    !flow.holds(flow::level(side, stream))
                        && side.request.room_for(space_for).unwrap_or(true)
                        && side.request.fd_room_for(*space_fds)
                }),
                Wait::Event | Wait::Response => {
                    // A call from the server at the front of the response
                    // channel must be served: no sleeping.
                    if which == Wait::Event && !replies_wait && call_at_front(side) {
                        return Ok(false);
                    }
                    let rx = if which == Wait::Event {
                        &side.event
                    } else {
                        &side.response
                    };
                    let tx = &mut side.request;
                    ringlink_ringbuf::wake::spin_until(spin, || {
                        rx.pending()
                            || rx.is_closed()
                            || (replies_wait && tx.room_for(space_for).unwrap_or(true))
                    })
                }
            };
            if ready {
                return Ok(false);
            }
            // Drain, then raise the flag: a wake-up sent after the flag
            // went up stays on the socket until the poll below. Not if
            // the socket was read out since a flag last went up (after
            // the last wake-up, say): nothing can have come since, and
            // the read would be a system call that finds nothing.
            if stream.needs_drain() {
                stream.read();
            }
            stream.flags_up();
            let armed = raise_flags(side, which, replies_wait);
            // The level is read after raising the flag: the server lowers
            // it, then wakes flagged waiters, so either we see the new
            // level here or we are woken.
            let released = which == Wait::Space && held && !flow.holds(flow::level(side, stream));
            // A look at the front of the response channel (for calls) that
            // fetched fds from the stream took wake-ups with them: look
            // again rather than sleep on what they announced.
            let fetched = stream.fetched();
            if !armed || released || fetched {
                // Not sleeping: no wake-up is wanted for what went up.
                lower_flags(side, which, replies_wait);
                return Ok(false);
            }
        } else {
            // The tail of our last request must go before its response
            // can come.
            let tail = match side.request.flush() {
                Ok(done) => !done,
                Err(TrySendError::Full) => true,
                Err(e) => return Err(e.into()),
            };
            // Calls from the server come on the response socket: watched
            // in an event wait while nothing else waits there (a call
            // behind an unread response waits for that response's reader).
            let watch_calls = which == Wait::Event && !replies_wait && {
                if call_at_front(side) {
                    return Ok(false);
                }
                !side.response.pending()
            };
            let request = side.request.poll_fd();
            if watch_calls {
                fds.extend(side.response.poll_fd().map(|fd| PollFd::new(fd, READABLE)));
            }
            let watch = match which {
                Wait::Response => side.response.poll_fd().map(|fd| (fd, READABLE)),
                Wait::Event => side.event.poll_fd().map(|fd| (fd, READABLE)),
                // Held by flow control, only the level (on the stream
                // socket) can release us: writability would spin.
                Wait::Space if held => None,
                Wait::Space => request.map(|fd| (fd, WRITABLE)),
            };
            fds.extend(watch.map(|(fd, flags)| PollFd::new(fd, flags)));
            if (tail || replies_wait) && which != Wait::Space {
                fds.extend(request.map(|fd| PollFd::new(fd, WRITABLE)));
            }
        }
        fds.push(PollFd::new(interrupt.fd.as_fd(), READABLE));
        fds.push(PollFd::new(stream.as_fd(), READABLE));
        let polled = wait::poll_until(&mut fds, deadline);
        let fired = fds
            .last()
            .and_then(PollFd::revents)
            .is_some_and(|r| !r.is_empty());
        drop(fds);
        // Awake: the flag comes down (the server swapped it already if it
        // woke us), so that no wake-up is sent that nobody waits for.
        lower_flags(side, which, replies_wait);
        polled?;
        Ok(fired)
    }

    /// [`sleep`](Self::sleep) with a libqb server, which signals only
    /// events (a byte on the stream socket, after the event) and its
    /// leaving: a response only through its ring's semaphore, room and a
    /// new flow-control level not at all. So a wait for a response sleeps
    /// on the semaphore in slices of [`LIVENESS_SLICE`], looking at the
    /// stream socket between them (libqb's own client waits on the
    /// semaphore alone, and hangs when the server dies: libqb issue #27);
    /// a wait for room looks again every [`QUIET_POLL`]. Returns whether
    /// the stream socket fired.
    fn sleep_libqb(&mut self, which: Wait, deadline: Option<Instant>) -> Result<bool> {
        let Engine {
            stream,
            side,
            flow,
            spin,
            quiet,
            interrupt,
            space_for,
            ..
        } = self;
        let space_for = *space_for;
        let ready = match which {
            Wait::Space => ringlink_ringbuf::wake::spin_until(*spin, || {
                !flow.holds(flow::level(side, stream))
                    && side.request.room_for(space_for).unwrap_or(true)
            }),
            _ => {
                let rx = side.receiver(which.event());
                ringlink_ringbuf::wake::spin_until(*spin, || rx.pending() || rx.is_closed())
            }
        };
        if ready {
            return Ok(false);
        }
        // Bytes first: an event's byte comes after its chunk is counted,
        // so once it is read the event is seen below.
        stream.read();
        let slice = |d: Duration| {
            let end = Instant::now() + d;
            Some(deadline.map_or(end, |dl| dl.min(end)))
        };
        // libqb's sockets: a message makes its socket readable, room makes
        // it writable (a new flow-control level is not signalled: a send
        // held by it looks again every so often, below).
        let held = which == Wait::Space && flow.holds(flow::level(side, stream));
        let watch = match which {
            Wait::Response => side.response.poll_fd().map(|fd| (fd, READABLE)),
            Wait::Event => side.event.poll_fd().map(|fd| (fd, READABLE)),
            Wait::Space if held => None,
            Wait::Space => side.request.poll_fd().map(|fd| (fd, WRITABLE)),
        };
        if let Some((fd, flags)) = watch {
            // Writability comes late on a datagram socket (once three
            // quarters of its buffer are free), while a send would go
            // sooner: a sender tries again after a short look.
            let until = if which == Wait::Space {
                let d = *quiet;
                *quiet = (d * 2).min(QUIET_POLL);
                slice(d)
            } else {
                deadline
            };
            let mut fds = [
                PollFd::new(fd, flags),
                PollFd::new(interrupt.fd.as_fd(), READABLE),
                PollFd::new(stream.as_fd(), READABLE),
            ];
            wait::poll_until(&mut fds, until)?;
            return Ok(fds[2].revents().is_some_and(|r| !r.is_empty()));
        }
        let until = match which {
            Wait::Response => {
                if side.response.wait_counted(slice(LIVENESS_SLICE)) {
                    return Ok(false);
                }
                // Between slices: has the server gone (or sent an event)?
                Some(Instant::now())
            }
            Wait::Event if side.event.pending() => return Ok(false),
            Wait::Event => deadline,
            Wait::Space => {
                let d = *quiet;
                *quiet = (d * 2).min(QUIET_POLL);
                slice(d)
            }
        };
        let mut fds = [
            PollFd::new(interrupt.fd.as_fd(), READABLE),
            PollFd::new(stream.as_fd(), READABLE),
        ];
        wait::poll_until(&mut fds, until)?;
        Ok(fds[1].revents().is_some_and(|r| !r.is_empty()))
    }

    /// Prepares to wait on the client's fd in the application's own
    /// loop: `false` if a response or event is already waiting.
    pub(crate) fn prepare_poll(&mut self) -> bool {
        // Over sockets, the tail of a long request must go before its
        // answer can come: while one waits, the fd also polls for the
        // request socket's writability (the response socket is the same).
        let tail = !self.side.request.flush().unwrap_or(true);
        if tail != self.watching_tail {
            if let Some(fd) = self.side.response.poll_fd() {
                let mut flags = EpollFlags::EPOLLIN;
                if tail {
                    flags |= EpollFlags::EPOLLOUT;
                }
                let mut ev = EpollEvent::new(flags, RESPONSES);
                if self.epoll.modify(fd, &mut ev).is_ok() {
                    self.watching_tail = tail;
                }
            }
        }
        // Drained first, then, from here, a wake-up that one of our own
        // calls reads makes the fd readable again, so that the
        // application never waits for one that was taken from it
        // (`Stream::arm_app`, which also forgets what earlier reads
        // signalled).
        self.stream.read();
        if self.stream.arm_app(&self.epoll).is_err() {
            // Without it, better a poll that returns at once than one
            // that may miss a wake-up.
            return false;
        }
        // Both flags up, one fence, then both channels looked at: each
        // ring's flag is up before the other is checked, so no wake-up is
        // lost between them.
        self.stream.flags_up();
        let mut prep = ringlink_ringbuf::wake::prepare_sleep();
        let (response, event) = (&mut self.side.response, &mut self.side.event);
        response.raise_wake_flag(&mut prep);
        event.raise_wake_flag(&mut prep);
        let fenced = prep.fence();
        let a = response.confirm_wake(&fenced);
        let b = event.confirm_wake(&fenced);
        a && b
    }

    /// Before an async wait for `which` sleeps (the stream socket drained
    /// by the caller, [`drain_wakes`](Self::drain_wakes)): raises the
    /// flags of what can end it, chosen as [`wait`](Self::wait) and
    /// [`sleep`](Self::sleep) choose them for the blocking client (the
    /// flags stay up until the server wakes the waiter or the next wait).
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn arm(&mut self, which: Wait) -> Armed {
        // The tail of our last request must go before its answer can come.
        let tail = self.side.request.has_tail();
        self.stream.flags_up();
        // A receive of responses held behind a call whose reply waits for
        // room: a wait for that room alone (a look at the responses would
        // find the call at once, and spin), which flow control does not
        // hold back.
        if which == Wait::Response && self.calls_wait_for_room() {
            return Armed {
                sleep: raise_flags(&mut self.side, Wait::Space, false),
                space: true,
            };
        }
        // Replies waiting for room: room ends the wait too (as in `sleep`).
        let replies_wait = which != Wait::Space && !self.replies.is_empty();
        let sleep = match which {
            Wait::Space => self.arm_space(),
            _ => raise_flags(&mut self.side, which, replies_wait),
        };
        Armed {
            sleep,
            space: which == Wait::Space || replies_wait || tail,
        }
    }

    /// [`arm`](Self::arm) for a send: raises the request ring's waiting
    /// flag. `false` if there is no need to sleep (room appeared, or flow
    /// control lifted).
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    fn arm_space(&mut self) -> bool {
        if !self.side.request.prepare_sleep() {
            return false;
        }
        // The level is read after the flag is up: the server lowers it,
        // then wakes flagged waiters.
        let fds = self.space_fds;
        let tail = self.has_tail();
        let sleep = self.held()
            || !self.side.request.room_for(self.space_for).unwrap_or(true)
            || !self.side.request.fd_room_for(fds);
        // A tail that went in that look (`room_for` sends it): a sender
        // waiting for its tail is done, whatever room is left; look again.
        let tail_went = tail && !self.has_tail();
        sleep && !tail_went
    }

    /// How long a waiting call polls before it sleeps (zero over sockets:
    /// polling a socket is a system call).
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn spin_budget(&self) -> Duration {
        match self.transport {
            Transport::Socket => Duration::ZERO,
            _ => self.spin,
        }
    }

    /// What a sender waiting for room sleeps on besides the client's fd
    /// (which hears the rings' wake-ups): the request socket (writable)
    /// over the socket transport, nothing over shared memory.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn space_fd(&self) -> Option<BorrowedFd<'_>> {
        self.side.request.poll_fd()
    }

    /// The client's fd.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // A request's tail (socket transport) goes first, while the
        // server reads, bounded: its message is committed.
        self.flush_for_close();
        // The rings marked closed from our side first (PROTOCOL.md §5),
        // then the socket shut down: the server hears of it at once.
        self.side.close();
        self.stream.fail();
        // What the server queued and we never read goes with the last
        // close, fds included, whose last close may wait (a lingering
        // socket, a file on a FUSE mount): read out now, the fds reaped
        // away from this thread. Shut down, nothing more can come.
        self.stream.read_out_for_close();
        self.side.read_out_for_close();
    }
}

fn io(e: nix::errno::Errno) -> Error {
    Error::Io(e.into())
}

/// Raises the rings' waiting flags of a wait for `which` (`replies_wait`:
/// the request ring's too, for room for the replies waiting; a call at
/// the front of the response channel, which cannot be served meanwhile,
/// does not stop an event wait then): whether it may sleep, nothing
/// having come since the last look. [`lower_flags`] undoes it.
fn raise_flags(side: &mut ClientSide, which: Wait, replies_wait: bool) -> bool {
    let armed = match which {
        Wait::Space => side.request.prepare_sleep(),
        Wait::Event => side.event.prepare_sleep() && (replies_wait || arm_for_calls(side)),
        Wait::Response => side.response.prepare_sleep(),
    };
    armed && (!replies_wait || side.request.prepare_sleep())
}

/// Lowers the waiting flags a sleep for `which` raised (`replies_wait`:
/// the request channel's too), once it is over.
fn lower_flags(side: &mut ClientSide, which: Wait, replies_wait: bool) {
    match which {
        Wait::Space => side.request.lower_wake_flag(),
        Wait::Event => {
            side.event.lower_wake_flag();
            side.response.lower_wake_flag();
        }
        Wait::Response => side.response.lower_wake_flag(),
    }
    if replies_wait {
        side.request.lower_wake_flag();
    }
}

/// Whether a call from the server is at the front of the response
/// channel (looked at, not taken).
fn call_at_front(side: &mut ClientSide) -> bool {
    matches!(side.response.try_recv(), Ok(Some(m)) if m.header().is_call())
}

/// For an event wait: arms the response channel's wake-up too, so that a
/// call from the server wakes it, when the channel is empty (a call behind
/// an unread response waits for that response's reader: waking for the
/// response would spin). `false` only if a call is at the front now.
fn arm_for_calls(side: &mut ClientSide) -> bool {
    if side.response.pending() {
        return !call_at_front(side);
    }
    side.response.prepare_sleep() || !call_at_front(side)
}

/// A message just taken from the server, checked: a response must answer
/// a request this client sent (`seq` from 1 to the last one sent, and
/// never more responses than requests: PROTOCOL.md §3); a libqb server's
/// responses carry no number and are numbered as they come (it may send
/// several per request, or none). `answered`: responses taken before.
fn numbered(
    event: bool,
    libqb: bool,
    next_seq: u64,
    answered: u64,
    mut msg: Message,
) -> std::result::Result<Message, Violation> {
    if event {
        return Ok(msg);
    }
    if libqb {
        msg.seq = answered + 1;
        return Ok(msg);
    }
    let sent = next_seq - 1;
    if msg.seq == 0 || msg.seq > sent || answered >= sent {
        return Err(Violation::UnaskedResponse {
            seq: msg.seq,
            answered,
            sent,
        });
    }
    Ok(msg)
}
