//! The service: listening socket, handshakes, connections, and the epoll
//! loop that drives them all from one thread.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{self, AddressFamily, Backlog, MsgFlags, SockFlag, SockType, UnixAddr};
use ringlink_common::fdpass::{self, send_fds};
use ringlink_common::seqpacket::{self, RecvError, SockRx, SockTx};
use ringlink_common::wire::{
    Confirm, ConnectRequest, ConnectResponse, MsgHeader, Status, WireError, CONFIRM_LEN,
    MAX_RING_PATH, MSG_HEADER_LEN, NAMED_SHM_FDS, REQUEST_LEN, RESPONSE_LEN, SHM_FDS, SOCKET_FDS,
};
use ringlink_common::{
    Credentials, Error, RateLimit, Result, ServiceAddr, ServiceStats, Transport,
};
use ringlink_ringbuf::{Consumer, PopError, Ring};

use crate::census::Census;
use crate::rings::{self, RingDir};

#[cfg(feature = "tokio")]
mod tokio_loop;

use crate::connection::{lock, ConnInner, Counters, Tx, Wakeups};
use crate::control::{Control, ShutdownHandle};
use crate::slab::Slab;
use crate::sources::{FdId, Foreign, Interest, Readiness, Timer, TimerId};
use crate::{Connection, Handler, Request, ServiceOptions};

// Epoll tokens: kind in the top byte, slot below.
const LISTENER: u64 = 1 << 56;
const WAKER: u64 = 2 << 56;
const HANDSHAKE: u64 = 3 << 56;
const CONN_SOCK: u64 = 4 << 56;
const CONN_REQ: u64 = 5 << 56;
const CONN_SPACE: u64 = 6 << 56;
const TIMER: u64 = 7 << 56;
const FOREIGN: u64 = 8 << 56;
const KIND: u64 = 0xff << 56;

/// Send buffer of a connection's socket (the kernel's minimum applies if
/// larger): the answer, wake-up bytes and flow-control levels fit many
/// times over.
const SOCKET_SNDBUF: usize = 16 << 10;

/// How often a busy loop (one that never sleeps) still looks at epoll:
/// new clients, timers, application fds and idle connections that became
/// active are heard within this, at the cost of one `epoll_wait` system
/// call per period.
const POLL_EVERY: Duration = Duration::from_micros(20);

/// A handshake in progress.
struct Handshake {
    /// Shared with the rings, which send their wake-ups on it.
    sock: Arc<UnixStream>,
    started: Instant,
    deadline: Instant,
    buf: [u8; REQUEST_LEN],
    got: usize,
    /// Set once the response and the fds are sent: waiting for `Confirm`.
    pending: Option<Box<Pending>>,
}

/// A connection made but not confirmed by the client yet.
struct Pending {
    id: u64,
    credentials: Credentials,
    max_message: usize,
    link: Made,
    /// The flow-control level the client was told (socket transport).
    level: u32,
    buf: [u8; CONFIRM_LEN],
    got: usize,
}

/// A connection's channels, as made during the handshake.
enum Made {
    Shm(Box<rings::Made>),
    Sock {
        /// Server ends of the request/response and event socket pairs.
        rr: OwnedFd,
        ev: OwnedFd,
    },
}

/// A live connection, as the loop holds it.
struct Conn {
    handle: Connection,
    /// The handshake's socket: liveness both ways, and the rings'
    /// wake-ups (a byte each) over shared memory.
    sock: Arc<UnixStream>,
    link: Link,
    /// Waiting for room for a response before taking more requests.
    parked: bool,
    /// In the service's `hot` list: may have requests, so the sweep
    /// looks at it. A cold connection has its wake-up armed and comes
    /// back through epoll.
    hot: bool,
}

/// How a live connection's requests arrive.
enum Link {
    Shm {
        request: Consumer,
        /// Request, response and event rings.
        rings: [Ring; 3],
    },
    Sock {
        rx: SockRx,
        /// Epoll said the socket is readable and it has not been read
        /// dry since (edge-triggered).
        readable: bool,
        /// The event socket (its sending half is in the `Connection`),
        /// registered for writability.
        ev: Arc<OwnedFd>,
    },
}

/// What to do with a handshake after reading from it.
enum Step {
    Wait,
    Drop,
    Evaluate,
    Promote,
}

/// A ringlink service: listens for clients, runs the handshake, and
/// dispatches their requests to a [`Handler`], all from one thread's epoll
/// loop ([`run`](Self::run) or [`dispatch`](Self::dispatch)).
///
/// # Examples
///
/// ```no_run
/// use ringlink_ipcs::{Connection, Handler, Request, Service, ServiceOptions};
/// use ringlink_common::ServiceAddr;
///
/// struct Echo;
/// impl Handler for Echo {
///     fn message(&self, conn: &Connection, req: &Request<'_>) {
///         let _ = conn.respond(req.seq(), req.id(), req.payload());
///     }
/// }
///
/// # fn main() -> ringlink_common::Result<()> {
/// let mut service = Service::bind(ServiceAddr::named("echo"), "echo", ServiceOptions::default(), Echo)?;
/// service.run()?;
/// # Ok(())
/// # }
/// ```
pub struct Service<H: Handler> {
    handler: Arc<H>,
    protocol: String,
    /// `None` for a service made with [`unbound`](Self::unbound).
    addr: Option<ServiceAddr>,
    opts: ServiceOptions,
    listener: Option<UnixListener>,
    /// A socket file this service created, removed on drop.
    socket_file: Option<PathBuf>,
    epoll: Epoll,
    control: Arc<Control>,
    /// Whether the listener is in the epoll set (it leaves it while the
    /// process is out of fds).
    listening: bool,
    /// Cleared by [`stop_listening`](Self::stop_listening): new clients wait
    /// in the kernel's backlog until `resume_listening`.
    advertised: bool,
    handshakes: Slab<Handshake>,
    conns: Slab<Conn>,
    next_id: u64,
    last_work: Instant,
    events: Vec<EpollEvent>,
    /// Scratch list of connections to close after a sweep, with the
    /// protocol violation that condemned them (`None`: a normal close).
    dead: Vec<(usize, Option<String>)>,
    trace: Option<Box<TraceHook>>,
    on_error: Option<Box<ErrorHook>>,
    timers: Slab<Timer>,
    foreign: Slab<Foreign>,
    /// Source of the serial numbers that keep stale timer and fd ids from
    /// removing a newer source in a reused slot.
    serial: u64,
    /// The rate limit the loop currently applies (the requested one is in
    /// `control`).
    rate: RateLimit,
    /// Where named rings are made (`ServiceOptions::ring_dir`).
    ring_dir: Option<RingDir>,
    /// When epoll was last looked at.
    last_poll: Instant,
    /// The waker fired (a command, a shutdown) during this turn: the
    /// turn ends without sleeping, so that the caller sees it.
    woken: bool,
    /// Slots of the connections the sweep reads: those active since the
    /// loop last slept, and those epoll reported since. Idle connections
    /// cost the sweep nothing, so its cost follows the active ones.
    hot: Vec<usize>,
    /// Client slots held, in total, per user and per process.
    census: Census,
}

impl<H: Handler> Service<H> {
    /// Creates a service listening at `addr` for clients of `protocol`.
    ///
    /// A filesystem socket is created with `opts.socket_mode`. A stale
    /// socket file left by a dead server is replaced; one a live server
    /// listens on, or anything that is not a socket, is not touched
    /// (`AddrInUse`).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the address is taken or a system call fails;
    /// `InvalidInput` if `protocol` is empty or longer than 64 bytes.
    pub fn bind(
        addr: ServiceAddr,
        protocol: &str,
        opts: ServiceOptions,
        handler: H,
    ) -> Result<Service<H>> {
        ringlink_common::wire::check_protocol_id(protocol)?;
        let (listener, socket_file) = listen(&addr, &opts)?;
        Service::new(
            Some(addr),
            Some(listener),
            socket_file,
            protocol,
            opts,
            handler,
        )
    }

    /// Creates a service with no listening socket, for clients handed a
    /// connected socket (one end of a `socketpair`) and brought in with
    /// [`adopt`](Self::adopt) (miniRPC's `bind_fd`, lwmsg's `accept_fd`).
    ///
    /// # Errors
    ///
    /// As [`bind`](Self::bind), less the address errors.
    pub fn unbound(protocol: &str, opts: ServiceOptions, handler: H) -> Result<Service<H>> {
        ringlink_common::wire::check_protocol_id(protocol)?;
        Service::new(None, None, None, protocol, opts, handler)
    }

    fn new(
        addr: Option<ServiceAddr>,
        listener: Option<UnixListener>,
        socket_file: Option<PathBuf>,
        protocol: &str,
        opts: ServiceOptions,
        handler: H,
    ) -> Result<Service<H>> {
        if opts.raise_fd_limit {
            raise_fd_limit();
        }
        let ring_dir = opts.ring_dir.clone().map(RingDir::new).transpose()?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(io::Error::from)?;
        let control = Arc::new(Control::new()?);
        if let Some(l) = &listener {
            epoll
                .add(l, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))
                .map_err(io::Error::from)?;
        }
        epoll
            .add(
                control.waker_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, WAKER),
            )
            .map_err(io::Error::from)?;
        Ok(Service {
            handler: Arc::new(handler),
            protocol: protocol.to_owned(),
            addr,
            opts,
            listening: listener.is_some(),
            listener,
            socket_file,
            epoll,
            control,
            advertised: true,
            handshakes: Slab::new(),
            conns: Slab::new(),
            next_id: 1,
            last_work: Instant::now(),
            events: vec![EpollEvent::empty(); 256],
            dead: Vec::new(),
            trace: None,
            on_error: None,
            timers: Slab::new(),
            foreign: Slab::new(),
            serial: 0,
            rate: RateLimit::default(),
            ring_dir,
            hot: Vec::new(),
            last_poll: Instant::now(),
            woken: false,
            census: Census::default(),
        })
    }

    /// The address the service listens on (`None` if [`unbound`](Self::unbound)).
    pub fn addr(&self) -> Option<&ServiceAddr> {
        self.addr.as_ref()
    }

    /// The application's handler (also the service-wide context).
    pub fn handler(&self) -> &Arc<H> {
        &self.handler
    }

    /// A handle to stop the loop from another thread or a signal handler,
    /// and to list connections from anywhere.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            control: self.control.clone(),
        }
    }

    /// Changes how many requests the service takes per connection and
    /// loop turn (see [`RateLimit`]). Callable from any thread through
    /// [`ShutdownHandle::set_rate_limit`]; applied on the next turn.
    pub fn set_rate_limit(&self, rate: RateLimit) {
        self.control.set_rate(rate);
    }

    /// Calls `hook` at the start and at the end of every dispatched
    /// request (lwmsg's trace functions): message id, connection,
    /// duration, and whether the handler answered before returning.
    pub fn set_trace_hook(&mut self, hook: impl Fn(&Trace<'_>) + Send + 'static) {
        self.trace = Some(Box::new(hook));
    }

    /// Calls `hook` for failures the loop handles on its own (lwmsg's
    /// exception function): a client that broke the protocol (and was
    /// disconnected), or an `accept` failure.
    pub fn set_error_hook(&mut self, hook: impl Fn(&Fault<'_>) + Send + 'static) {
        self.on_error = Some(Box::new(hook));
    }

    /// Runs `callback` on the loop thread every `period` (the first time
    /// one period from now). If the loop falls behind, missed periods
    /// collapse into one call.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the timerfd cannot be made or registered.
    pub fn add_timer(
        &mut self,
        period: Duration,
        callback: impl FnMut() + Send + 'static,
    ) -> Result<TimerId> {
        self.serial += 1;
        let timer = Timer::new(self.serial, period, Box::new(callback)).map_err(io::Error::from)?;
        let slot = self.timers.next_slot();
        self.epoll
            .add(
                timer.fd.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, TIMER | slot as u64),
            )
            .map_err(io::Error::from)?;
        self.timers.insert(timer);
        Ok(TimerId {
            slot,
            serial: self.serial,
        })
    }

    /// Stops a timer. Returns whether it was still there.
    pub fn remove_timer(&mut self, id: TimerId) -> bool {
        if self
            .timers
            .get(id.slot)
            .is_none_or(|t| t.serial != id.serial)
        {
            return false;
        }
        if let Some(t) = self.timers.remove(id.slot) {
            let _ = self.epoll.delete(t.fd.as_fd());
        }
        true
    }

    /// Watches one of the application's fds in the loop: `callback` runs
    /// on the loop thread whenever it is ready for `interest`
    /// (level-triggered: read or write until it would block, or it fires
    /// again). The service owns the fd until [`remove_fd`](Self::remove_fd)
    /// hands it back. After a hang-up or error (`Readiness::hangup`) the
    /// callback runs once more and the fd leaves the loop (it would be
    /// ready forever); take it back with `remove_fd`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if epoll refuses the fd (e.g. a regular file).
    pub fn add_fd(
        &mut self,
        fd: OwnedFd,
        interest: Interest,
        callback: impl FnMut(BorrowedFd<'_>, Readiness) + Send + 'static,
    ) -> Result<FdId> {
        self.serial += 1;
        let slot = self.foreign.next_slot();
        self.epoll
            .add(
                &fd,
                EpollEvent::new(interest.flags(), FOREIGN | slot as u64),
            )
            .map_err(io::Error::from)?;
        self.foreign.insert(Foreign {
            serial: self.serial,
            fd,
            callback: Box::new(callback),
            watched: true,
        });
        Ok(FdId {
            slot,
            serial: self.serial,
        })
    }

    /// Stops watching an fd and gives it back (`None` if the id is stale).
    pub fn remove_fd(&mut self, id: FdId) -> Option<OwnedFd> {
        if self
            .foreign
            .get(id.slot)
            .is_none_or(|f| f.serial != id.serial)
        {
            return None;
        }
        let f = self.foreign.remove(id.slot)?;
        if f.watched {
            let _ = self.epoll.delete(&f.fd);
        }
        Some(f.fd)
    }

    /// Stops taking new clients (Legato's "hide", lwmsg's `stop_listen`):
    /// live connections and handshakes in progress go on; clients that
    /// connect meanwhile wait in the listen backlog (and time out on
    /// their own deadline) until [`resume_listening`](Self::resume_listening).
    pub fn stop_listening(&mut self) {
        self.advertised = false;
        self.pause_listener();
    }

    /// Takes new clients again after [`stop_listening`](Self::stop_listening);
    /// those waiting in the backlog are served at once.
    pub fn resume_listening(&mut self) {
        self.advertised = true;
        self.resume_listener();
    }

    /// The service's statistics; with `clear`, the counters restart from
    /// zero. Per-connection figures: [`Connection::stats`].
    pub fn stats(&self, clear: bool) -> ServiceStats {
        self.control.stats(clear)
    }

    /// The rate limit in force.
    pub fn rate_limit(&self) -> RateLimit {
        self.control.rate()
    }

    /// The live connections.
    pub fn connections(&self) -> impl Iterator<Item = &Connection> {
        self.conns.iter().map(|(_, c)| &c.handle)
    }

    /// Runs the loop until [`ShutdownHandle::shutdown`] is called, then
    /// closes every connection (running their `connection_closed` and
    /// `connection_destroyed` handlers).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if `epoll_wait` fails.
    pub fn run(&mut self) -> Result<()> {
        while !self.control.is_shutdown() {
            // Busy or idle, the next turn decides: it sleeps only once
            // everything is armed.
            let _ = self.turn(true, None)?;
        }
        self.close_all();
        Ok(())
    }

    /// Runs one turn of the loop: dispatches waiting requests, or, if
    /// there are none, polls the rings for the spin budget (not with a
    /// zero `timeout`), then arms every connection's wake-up and sleeps in
    /// epoll for at most `timeout` (`None`: until something happens), and
    /// handles what woke it.
    ///
    /// # Driving the service from your own loop
    ///
    /// Put the service's fd ([`AsFd`]) in your loop, for readability, and
    /// whenever it is readable (or your loop turns for reasons of its
    /// own), call `dispatch(Some(Duration::ZERO))` until it returns
    /// [`Activity::Idle`]; only then wait on the fd again. `Busy` means
    /// the turn did work or left some (requests taken, a connection whose
    /// wake-up is not armed yet): the fd would not tell you about what is
    /// left. `Idle` means every connection's wake-up is armed and the fd
    /// becomes readable when anything needs the service. As with mio's
    /// readiness, the fd may also be readable spuriously (a turn then
    /// returns `Idle` having done nothing). This is libqb's
    /// `qb_ipcs_poll_handlers_set` way of running a server inside
    /// Pacemaker's or Corosync's main loop.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if `epoll_wait` fails.
    pub fn dispatch(&mut self, timeout: Option<Duration>) -> Result<Activity> {
        self.turn(timeout != Some(Duration::ZERO), timeout)
    }

    /// The loop's one turn, for [`run`](Self::run), [`dispatch`](Self::dispatch)
    /// and the tokio task: sweep; if nothing, spin for the budget when
    /// `spin`; if still nothing, arm every hot connection and wait in
    /// epoll for at most `wait`; sweep what it brought.
    pub(crate) fn turn(&mut self, spin: bool, wait: Option<Duration>) -> Result<Activity> {
        self.woken = false;
        self.handle_commands();
        if self.sweep() {
            self.last_work = Instant::now();
            // Busy: still hear the listener, timers, and connections that
            // went cold, every so often.
            self.poll_if_due()?;
            return Ok(Activity::Busy);
        }
        // Sockets are watched by epoll alone: polling them would cost a
        // system call per connection and turn.
        if spin && self.opts.transport == Transport::Shm {
            let budget =
                (self.last_work + self.opts.spin).saturating_duration_since(Instant::now());
            let work = ringlink_ringbuf::wake::spin_until(budget, || {
                // An epoll failure shows again in the wait below.
                self.sweep()
                    || (self.poll_if_due().unwrap_or(false) && (self.woken || self.sweep()))
            });
            if work {
                if !self.woken {
                    self.last_work = Instant::now();
                }
                return Ok(self.activity());
            }
        }
        // A wake-up read while spinning (a shutdown, say) must end this
        // turn: the eventfd is drained, and epoll would not report it again.
        if self.woken || self.control.is_shutdown() {
            return Ok(self.activity());
        }
        let mut wait = wait;
        if !self.arm_all() {
            wait = Some(Duration::ZERO);
        }
        if let Some(deadline) = self.next_deadline() {
            let left = deadline.saturating_duration_since(Instant::now());
            wait = Some(wait.map_or(left, |w| w.min(left)));
        }
        self.poll_events(wait)?;
        if self.sweep() {
            self.last_work = Instant::now();
            return Ok(Activity::Busy);
        }
        Ok(self.activity())
    }

    /// After a turn: `Idle` if every connection the loop reads is armed
    /// (none is hot, or requests are not read at all), so that the epoll
    /// fd says when there is more; `Busy` otherwise.
    fn activity(&self) -> Activity {
        if self.control.is_shutdown() || self.rate == RateLimit::Off || self.hot.is_empty() {
            Activity::Idle
        } else {
            Activity::Busy
        }
    }

    /// [`poll_events`](Self::poll_events) without waiting, if the last
    /// look is [`POLL_EVERY`] old. Returns whether it looked.
    fn poll_if_due(&mut self) -> Result<bool> {
        if self.last_poll.elapsed() < POLL_EVERY {
            return Ok(false);
        }
        self.poll_events(Some(Duration::ZERO))?;
        Ok(true)
    }

    /// Waits in epoll for at most `wait` and handles what it reports.
    fn poll_events(&mut self, wait: Option<Duration>) -> Result<usize> {
        let n = match self.epoll.wait(&mut self.events, epoll_timeout(wait)) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => 0,
            Err(e) => return Err(Error::Io(e.into())),
        };
        self.last_poll = Instant::now();
        for i in 0..n {
            let ev = self.events[i];
            let token = ev.data();
            let slot = (token & !KIND) as usize;
            match token & KIND {
                LISTENER => self.accept_all(),
                WAKER => {
                    self.woken = true;
                    self.control.drain();
                    self.handle_commands();
                }
                HANDSHAKE => self.advance(slot),
                TIMER => {
                    if let Some(t) = self.timers.get_mut(slot) {
                        t.fire();
                    }
                }
                FOREIGN => {
                    if let Some(f) = self.foreign.get_mut(slot) {
                        if f.watched && f.fire(ev.events()) {
                            f.watched = false;
                            let _ = self.epoll.delete(&f.fd);
                        }
                    }
                }
                CONN_SOCK => self.check_socket(slot, ev.events()),
                kind @ (CONN_REQ | CONN_SPACE) => self.conn_ready(slot, kind, ev.events()),
                _ => {}
            }
        }
        self.expire_handshakes();
        Ok(n)
    }

    /// Reads every connection's waiting requests (a bounded number each,
    /// so that one busy client cannot starve the others) and hands them to
    /// the handler. Returns whether any was dispatched.
    fn sweep(&mut self) -> bool {
        let mut did = false;
        let per_turn = self.rate.per_turn();
        if per_turn == 0 {
            return false;
        }
        let handler = &self.handler;
        let trace = self.trace.as_deref();
        for i in 0..self.hot.len() {
            let slot = self.hot[i];
            let Some(conn) = self.conns.get_mut(slot) else {
                continue;
            };
            if conn.parked || !conn.handle.is_connected() {
                continue;
            }
            let dispatch = |conn: &Connection, header, payload: &[u8]| {
                let request = Request { header, payload };
                let c = &conn.inner.counters;
                Counters::add(&c.requests, 1);
                Counters::add(&c.bytes_received, payload.len() as u64);
                match trace {
                    None => handler.message(conn, &request),
                    Some(hook) => traced(hook, handler.as_ref(), conn, &request),
                }
            };
            for _ in 0..per_turn {
                // Take a request only if its answer will fit; otherwise
                // leave it queued and park until the client reads.
                let fault = match &mut conn.link {
                    Link::Shm { request, .. } => match request.try_peek() {
                        Ok(record) => match response_room(&conn.handle, &mut conn.parked) {
                            Ok(true) => match MsgHeader::decode(&record) {
                                // The ring holds records larger than the
                                // negotiated maximum; the protocol does not.
                                Ok(header) if header.size as usize > conn.handle.max_message() => {
                                    Some(Some(format!(
                                        "request of {} bytes over the negotiated maximum of {}",
                                        header.size,
                                        conn.handle.max_message()
                                    )))
                                }
                                Ok(header) => {
                                    dispatch(&conn.handle, header, &record[MSG_HEADER_LEN..]);
                                    record.release();
                                    did = true;
                                    None
                                }
                                Err(e) => Some(Some(format!("bad request header: {e}"))),
                            },
                            Ok(false) => break,
                            Err(fault) => Some(fault),
                        },
                        Err(PopError::Empty) => break,
                        Err(PopError::Corrupt(c)) => {
                            Some(Some(format!("client corrupted its request ring: {c}")))
                        }
                        Err(_) => Some(None), // the client closed its ring
                    },
                    Link::Sock { rx, readable, .. } => {
                        if !*readable {
                            break;
                        }
                        match rx.fill() {
                            Ok(()) => match response_room(&conn.handle, &mut conn.parked) {
                                Ok(true) => {
                                    let (header, payload) = rx.message().expect("filled");
                                    dispatch(&conn.handle, header, payload);
                                    rx.consume();
                                    did = true;
                                    None
                                }
                                Ok(false) => break,
                                Err(fault) => Some(fault),
                            },
                            Err(RecvError::Empty) => {
                                *readable = false;
                                break;
                            }
                            Err(RecvError::Closed) => Some(None),
                            Err(RecvError::Protocol(why)) => {
                                Some(Some(format!("client broke the socket framing: {why}")))
                            }
                            Err(RecvError::Io(e)) => {
                                Some(Some(format!("error on the request socket: {e}")))
                            }
                        }
                    }
                };
                if let Some(fault) = fault {
                    self.dead.push((slot, fault));
                    break;
                }
                if !conn.handle.is_connected() {
                    break; // disconnected by the handler
                }
            }
        }
        while let Some((slot, fault)) = self.dead.pop() {
            self.close_conn(slot, fault.as_deref());
        }
        did
    }

    /// Arms the wake-ups of the hot connections before the loop sleeps,
    /// turning them cold. Returns `false` if some still has requests (do
    /// not sleep).
    fn arm_all(&mut self) -> bool {
        if self.rate == RateLimit::Off {
            // Not reading requests: let clients publish without signalling
            // us, so that flow control costs the loop nothing.
            return true;
        }
        // Arm the hot connections' wake-ups: raise every flag, pay the
        // sleeper's fence (a membarrier) once, then check every ring (the
        // handshake for all connections at the price of one). Those still
        // empty turn cold, armed, until epoll brings them back; cold ones
        // are armed already. Socket connections need no arming (epoll
        // watches them), but one left readable by the rate limit has work.
        let live = |c: &Conn| !c.parked && c.handle.is_connected();
        let mut prep = ringlink_ringbuf::wake::prepare_sleep();
        for &slot in &self.hot {
            if let Some(c) = self.conns.get_mut(slot).filter(|c| live(c)) {
                if let Link::Shm { request, .. } = &mut c.link {
                    request.raise_wake_flag(&mut prep);
                }
            }
        }
        let fenced = prep.fence();
        let mut sleep = true;
        let conns = &mut self.conns;
        self.hot.retain(|&slot| {
            let Some(c) = conns.get_mut(slot) else {
                return false;
            };
            let busy = live(c)
                && match &mut c.link {
                    Link::Shm { request, .. } => !request.confirm_wake(&fenced),
                    Link::Sock { readable, .. } => *readable,
                };
            // A parked connection comes back with room (CONN_SPACE).
            c.hot = busy;
            sleep &= !busy;
            busy
        });
        sleep
    }

    fn handle_commands(&mut self) {
        let rate = self.control.rate();
        if rate != self.rate {
            self.apply_rate(rate);
        }
        for (id, slot, fault) in self.control.take_disconnects() {
            if self.conns.get(slot).is_some_and(|c| c.handle.id() == id) {
                self.close_conn(slot, fault.as_deref());
            }
        }
    }

    /// Publishes a new flow-control level to every client, waking those
    /// that wait for it to drop.
    fn apply_rate(&mut self, rate: RateLimit) {
        let level = rate.flow_control_level();
        let changed = level != self.rate.flow_control_level();
        let resumed = self.rate == RateLimit::Off && rate != RateLimit::Off;
        self.rate = rate;
        if resumed {
            // Requests queued while Off signalled no one: look at all.
            for slot in 0..self.conns.slots() {
                self.make_hot(slot);
            }
        }
        for slot in 0..self.conns.slots() {
            let Some(c) = self.conns.get_mut(slot) else {
                continue;
            };
            if changed {
                let counters = &c.handle.inner.counters;
                counters.flow_control.store(level > 0, Ordering::Relaxed);
                Counters::add(&counters.flow_control_changes, 1);
            }
            match &mut c.link {
                // In the request ring's user word, waking a client whose
                // send waits for the level to drop (its producer flag is
                // up); the server's own flag on that ring is left alone.
                Link::Shm { request, .. } => request.publish_user_word(level),
                // One byte on the connection's stream socket, which the
                // client reads before its sends and polls while it waits.
                // A client that never reads fills its socket buffer and
                // misses changes: its problem alone.
                Link::Sock { .. } if changed => send_byte(&c.sock, level as u8),
                Link::Sock { .. } => {}
            }
        }
    }

    /// Runs the handshake over an already-connected socket (one end of a
    /// `socketpair`; the client calls `Client::connect_stream` on the
    /// other), exactly as for a client that connected to the listener:
    /// same deadline, checks and credentials (`SO_PEERCRED` of a
    /// socketpair names the process that created it).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the socket cannot be made non-blocking or
    /// registered.
    pub fn adopt(&mut self, sock: UnixStream) -> Result<()> {
        self.start_handshake(sock).map_err(Error::Io)
    }

    fn start_handshake(&mut self, sock: UnixStream) -> io::Result<()> {
        sock.set_nonblocking(true)?;
        // A client passes us no fds, ever: refused by the kernel where it
        // can (Linux 6.16), reaped where it cannot (every read below goes
        // through `fdpass::recv_nowait`).
        fdpass::refuse_fds(sock.as_fd());
        // The server writes little on this socket (the answer, wake-ups,
        // levels): a client that never reads pins no more than this of
        // the server's socket memory.
        let _ = socket::setsockopt(&sock, socket::sockopt::SndBuf, &SOCKET_SNDBUF);
        if self.handshakes.len() >= self.opts.max_handshakes {
            self.evict_oldest_handshake();
        }
        let now = Instant::now();
        let slot = self.handshakes.next_slot();
        let ev = EpollEvent::new(
            EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP,
            HANDSHAKE | slot as u64,
        );
        self.epoll.add(&sock, ev)?;
        self.handshakes.insert(Handshake {
            sock: Arc::new(sock),
            started: now,
            deadline: now + self.opts.handshake_timeout,
            buf: [0; REQUEST_LEN],
            got: 0,
            pending: None,
        });
        Ok(())
    }

    fn accept_all(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((sock, _)) => {
                    // A socket that cannot be registered is dropped
                    // (closed): the client sees the connection end.
                    let _ = self.start_handshake(sock);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc_errno::ECONNABORTED | libc_errno::EINTR)
                    ) => {}
                Err(e) => {
                    // Out of fds or memory: stop listening until a
                    // connection or handshake ends, rather than spin on a
                    // listener that stays readable.
                    if let Some(hook) = &self.on_error {
                        hook(&Fault {
                            connection: None,
                            what: &format!("accept failed, listening paused: {e}"),
                        });
                    }
                    self.pause_listener();
                    return;
                }
            }
        }
    }

    fn pause_listener(&mut self) {
        if let Some(l) = &self.listener {
            if self.listening && self.epoll.delete(l).is_ok() {
                self.listening = false;
            }
        }
    }

    fn resume_listener(&mut self) {
        let Some(l) = &self.listener else { return };
        if self.advertised
            && !self.listening
            && self
                .epoll
                .add(l, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))
                .is_ok()
        {
            self.listening = true;
        }
    }

    fn evict_oldest_handshake(&mut self) {
        let oldest = self
            .handshakes
            .iter()
            .min_by_key(|(_, h)| h.started)
            .map(|(i, _)| i);
        if let Some(slot) = oldest {
            self.control.count_abandoned();
            self.drop_handshake(slot);
        }
    }

    fn drop_handshake(&mut self, slot: usize) {
        if let Some(h) = self.handshakes.remove(slot) {
            let _ = self.epoll.delete(&*h.sock);
            if let Some(p) = h.pending {
                self.abandon_pending(&p);
                match p.link {
                    Made::Sock { rr, ev } => {
                        fdpass::close_refusing(rr);
                        fdpass::close_refusing(ev);
                    }
                    // The rings unmapped, their handles on the socket gone.
                    Made::Shm(m) => drop(m),
                }
            }
            release_stream(h.sock);
        }
        self.resume_listener();
    }

    /// A handshake whose rings were sent ends without a connection:
    /// its slot is given back, and its rings are marked closed by both
    /// sides (`docs/PROTOCOL.md` §2.3).
    fn abandon_pending(&mut self, p: &Pending) {
        self.census.release(&p.credentials);
        if let Made::Shm(m) = &p.link {
            m.close();
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.handshakes.iter().map(|(_, h)| h.deadline).min()
    }

    fn expire_handshakes(&mut self) {
        let now = Instant::now();
        let expired: Vec<usize> = self
            .handshakes
            .iter()
            .filter(|(_, h)| h.deadline <= now)
            .map(|(i, _)| i)
            .collect();
        for slot in expired {
            self.control.count_abandoned();
            self.drop_handshake(slot);
        }
    }

    /// Reads what a handshake socket has and moves the handshake on.
    fn advance(&mut self, slot: usize) {
        let Some(h) = self.handshakes.get_mut(slot) else {
            return;
        };
        let step = match h.pending.as_mut() {
            None => read_some(&h.sock, &mut h.buf, &mut h.got, Step::Evaluate),
            Some(p) => read_some(&h.sock, &mut p.buf, &mut p.got, Step::Promote),
        };
        match step {
            Step::Wait => {}
            Step::Drop => {
                self.control.count_abandoned();
                self.drop_handshake(slot);
            }
            Step::Evaluate => {
                if let Step::Drop = self.evaluate(slot) {
                    self.drop_handshake(slot);
                } else {
                    // The client may already have sent its confirmation.
                    self.advance(slot);
                }
            }
            Step::Promote => self.promote(slot),
        }
    }

    /// Checks a complete request; rejects it, or makes the rings and sends
    /// them.
    fn evaluate(&mut self, slot: usize) -> Step {
        let Some(h) = self.handshakes.get_mut(slot) else {
            return Step::Drop;
        };
        let req = match ConnectRequest::decode(&h.buf) {
            Ok(r) => r,
            Err(WireError::Version(_)) => return reject(&self.control, h, Status::VersionMismatch),
            Err(_) => return reject(&self.control, h, Status::BadRequest),
        };
        if req.transport != self.opts.transport {
            return reject(&self.control, h, Status::TransportMismatch);
        }
        if req.protocol != self.protocol {
            return reject(&self.control, h, Status::UnknownProtocol);
        }
        let Ok(credentials) = Credentials::of_peer(&h.sock) else {
            return Step::Drop;
        };
        if let Err(status) = self.census.check(&credentials, &self.opts) {
            return reject(&self.control, h, status);
        }
        if let Err(r) = self.handler.accept(&credentials) {
            return reject(&self.control, h, r.into());
        }
        let max_message = self.opts.negotiate(req.max_message);
        let id = self.next_id;
        self.next_id += 1;
        let level = self.rate.flow_control_level();
        let made = match self.opts.transport {
            Transport::Shm => {
                let named = self
                    .ring_dir
                    .as_ref()
                    .map(|d| (d, self.handler.ring_auth(&credentials)));
                rings::make(id, max_message, named, &h.sock)
                    .map(|made| (Made::Shm(Box::new(made)), None))
            }
            Transport::Socket => (|| {
                let (rr, rr_client) = seqpacket::pair()?;
                let (ev, ev_client) = seqpacket::pair()?;
                // The client passes no fds on these either.
                fdpass::refuse_fds(rr.as_fd());
                fdpass::refuse_fds(ev.as_fd());
                Ok((Made::Sock { rr, ev }, Some([rr_client, ev_client])))
            })(),
        };
        let (made, client_ends) = match made {
            Ok(made) => made,
            Err(e) => {
                if let Some(hook) = &self.on_error {
                    hook(&Fault {
                        connection: None,
                        what: &format!("cannot make a connection's channels: {e}"),
                    });
                }
                return reject(&self.control, h, Status::Resources);
            }
        };
        let mut answer = ConnectResponse {
            status: Status::Ok,
            connection_id: id,
            max_message: max_message as u32,
            fd_count: 0,
            path_len: 0,
            request_capacity: 0,
            response_capacity: 0,
            event_capacity: 0,
        };
        let mut bytes = Vec::with_capacity(RESPONSE_LEN + MAX_RING_PATH + 1);
        let sent = match (&made, &client_ends) {
            (Made::Shm(m), _) => {
                // The flow-control level is in the ring before the client
                // can see it, so a client connecting during `Off` is held
                // back from its first send (`promote` writes it again, in
                // case the rate changes before the confirmation).
                m.rings[0].set_user_word(level);
                let prefix = m.path_prefix.as_deref().unwrap_or_default();
                let fds = m.fds();
                let expected = if m.path_prefix.is_some() {
                    NAMED_SHM_FDS
                } else {
                    SHM_FDS
                };
                if fds.len() != expected {
                    return reject(&self.control, h, Status::Resources);
                }
                let cap = |r: &Ring| r.capacity() as u64;
                answer.fd_count = fds.len() as u16;
                answer.path_len = prefix.len() as u16;
                answer.request_capacity = cap(&m.rings[0]);
                answer.response_capacity = cap(&m.rings[1]);
                answer.event_capacity = cap(&m.rings[2]);
                bytes.extend_from_slice(&answer.encode());
                bytes.extend_from_slice(prefix);
                send_fds(&h.sock, &bytes, &fds)
            }
            (Made::Sock { .. }, Some([rr, ev])) => {
                answer.fd_count = SOCKET_FDS as u16;
                bytes.extend_from_slice(&answer.encode());
                // The initial flow-control level, one byte (later changes
                // follow on the same stream).
                bytes.push(level as u8);
                send_fds(&h.sock, &bytes, &[rr.as_fd(), ev.as_fd()])
            }
            (Made::Sock { .. }, None) => return Step::Drop,
        };
        match sent {
            Ok(n) if n == bytes.len() => {}
            _ => return Step::Drop,
        }
        // Sent: the client has its own copies (or opens the files by
        // path); the server keeps only the mappings.
        drop(client_ends);
        let mut made = made;
        if let Made::Shm(m) = &mut made {
            m.forget_memory_fds();
        }
        self.census.admit(&credentials);
        h.pending = Some(Box::new(Pending {
            id,
            credentials,
            max_message,
            link: made,
            level,
            buf: [0; CONFIRM_LEN],
            got: 0,
        }));
        Step::Wait
    }

    /// The client confirmed: the connection is created.
    fn promote(&mut self, slot: usize) {
        let Some(h) = self.handshakes.remove(slot) else {
            return;
        };
        let _ = self.epoll.delete(&*h.sock);
        let Some(p) = h.pending else { return };
        if let Made::Shm(m) = &p.link {
            // Named ring files have served their purpose: the client
            // opened them before confirming (or will never use them).
            for r in &m.rings {
                let _ = r.unlink();
            }
        }
        let abandon = |this: &mut Self, p: &Pending| {
            this.abandon_pending(p);
            this.control.count_abandoned();
            this.resume_listener();
        };
        if Confirm::decode(&p.buf).is_err() {
            return abandon(self, &p);
        }
        let level = self.rate.flow_control_level();
        let credentials = p.credentials;
        let (response, event, link) = match p.link {
            Made::Shm(m) => {
                let mut m = *m;
                // The level may have changed since the client was told:
                // published again, and a client already waiting on it is
                // woken.
                m.request.publish_user_word(level);
                let link = Link::Shm {
                    request: m.request,
                    rings: m.rings,
                };
                (Tx::Ring(m.response), Tx::Ring(m.event), link)
            }
            Made::Sock { rr, ev } => {
                // One fd per socket, shared by its halves and the loop.
                let (rr, ev) = (Arc::new(rr), Arc::new(ev));
                let halves = (|| -> io::Result<_> {
                    let rx = SockRx::new(rr.clone(), p.max_message);
                    let response = SockTx::new(rr)?;
                    let event = SockTx::new(ev.clone())?;
                    Ok((rx, response, event))
                })();
                let Ok((rx, response, event)) = halves else {
                    self.census.release(&credentials);
                    self.control.count_abandoned();
                    self.resume_listener();
                    return;
                };
                if level != p.level {
                    send_byte(&h.sock, level as u8);
                }
                let link = Link::Sock {
                    rx,
                    readable: true,
                    ev,
                };
                (Tx::Sock(response), Tx::Sock(event), link)
            }
        };
        let cslot = self.conns.next_slot();
        let handle = Connection {
            inner: Arc::new(ConnInner {
                id: p.id,
                slot: cslot,
                credentials,
                max_message: p.max_message,
                transport: self.opts.transport,
                connected_at: SystemTime::now(),
                response: Mutex::new(Some(response)),
                event: Mutex::new(Some(event)),
                alive: true.into(),
                context: RwLock::new(None),
                control: self.control.clone(),
                counters: Counters::default(),
                wakeups: Wakeups::default(),
            }),
        };
        let conn = Conn {
            handle: handle.clone(),
            sock: h.sock,
            link,
            parked: false,
            hot: false,
        };
        let registered = (|| -> io::Result<()> {
            let ev = |flags, kind: u64| EpollEvent::new(flags, kind | cslot as u64);
            // Level-triggered: the loop drains what a readiness reports
            // (wake-up bytes, bounded per turn), or the client hung up.
            self.epoll.add(
                &*conn.sock,
                ev(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP, CONN_SOCK),
            )?;
            for (fd, flags, kind) in conn.watched() {
                self.epoll.add(fd, ev(EpollFlags::EPOLLET | flags, kind))?;
            }
            Ok(())
        })();
        if registered.is_err() {
            let _ = self.epoll.delete(&*conn.sock);
            for (fd, _, _) in conn.watched() {
                let _ = self.epoll.delete(fd);
            }
            self.census.release(&credentials);
            self.control.count_abandoned();
            self.resume_listener();
            return;
        }
        handle
            .inner
            .counters
            .flow_control
            .store(level > 0, Ordering::Relaxed);
        let at = self.conns.insert(conn);
        debug_assert_eq!(at, cslot);
        // Requests may wait already: the client sends once it confirmed.
        self.make_hot(at);
        self.control.registry().insert(p.id, handle.clone());
        self.handler.connection_created(&handle);
        self.resume_listener();
    }

    /// Puts a connection in the sweep's list.
    fn make_hot(&mut self, slot: usize) {
        if let Some(c) = self.conns.get_mut(slot) {
            if !c.hot {
                c.hot = true;
                self.hot.push(slot);
            }
        }
    }

    /// A connection's request or space fd fired (`CONN_REQ`,
    /// `CONN_SPACE`).
    fn conn_ready(&mut self, slot: usize, kind: u64, flags: EpollFlags) {
        let Some(c) = self.conns.get_mut(slot) else {
            return;
        };
        let hot = match (&mut c.link, kind) {
            // Ring connections are woken through their socket
            // (`check_socket`); nothing else of theirs is registered.
            (Link::Shm { .. }, _) => false,
            (Link::Sock { readable, .. }, CONN_REQ) => {
                if flags
                    .intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR)
                {
                    *readable = true;
                }
                if flags.contains(EpollFlags::EPOLLOUT) && flush(&c.handle.inner.response) {
                    c.parked = false;
                }
                *readable && !c.parked
            }
            (Link::Sock { .. }, _) => {
                flush(&c.handle.inner.event);
                false
            }
        };
        if hot {
            self.make_hot(slot);
        }
    }

    /// A connection's socket is readable or hung up: wake-up bytes from
    /// a ring client (it published a request, or freed room for a
    /// response, while our flag was up), or the client left, died, or
    /// broke the protocol by writing on it over the socket transport.
    fn check_socket(&mut self, slot: usize, flags: EpollFlags) {
        let Some(c) = self.conns.get_mut(slot) else {
            return;
        };
        let fault = match drain(&c.sock) {
            Drained::Gone => None, // the client closed the connection
            Drained::Bytes => match c.link {
                Link::Shm { .. } => {
                    // A wake-up: look at its rings again, both ways, and
                    // tell the threads waiting for room in them.
                    c.parked = false;
                    c.handle.inner.wakeups.notify();
                    self.make_hot(slot);
                    return;
                }
                Link::Sock { .. } => Some("client sent data on the socket after the handshake"),
            },
            Drained::Nothing => {
                if flags.intersects(
                    EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR | EpollFlags::EPOLLRDHUP,
                ) {
                    None // the client hung up
                } else {
                    return;
                }
            }
            Drained::Failed => Some("error on the client socket"),
        };
        self.close_conn(slot, fault);
    }

    /// Closes a connection: handlers `connection_closed`, then release of
    /// everything, then `connection_destroyed`. A `fault` (the client broke
    /// the protocol) goes to the error hook first.
    fn close_conn(&mut self, slot: usize, fault: Option<&str>) {
        let Some(conn) = self.conns.remove(slot) else {
            return;
        };
        if conn.hot {
            self.hot.retain(|&s| s != slot);
        }
        if let (Some(what), Some(hook)) = (fault, &self.on_error) {
            hook(&Fault {
                connection: Some(&conn.handle),
                what,
            });
        }
        self.census.release(&conn.handle.inner.credentials);
        let Conn {
            handle, sock, link, ..
        } = conn;
        handle.inner.alive.store(false, Ordering::Release);
        self.control.registry().remove(&handle.id());
        // Close the channels before anyone hears of it: from here every
        // send fails with `Disconnected` (as `connection_closed`
        // promises), and a thread blocked sending wakes and releases its
        // lock. The client still reads what was published before.
        match &link {
            Link::Shm { rings, .. } => {
                for r in rings {
                    r.close();
                }
            }
            Link::Sock { rx, ev, .. } => {
                for fd in [rx.fd(), ev.as_fd()] {
                    let _ = socket::shutdown(fd.as_raw_fd(), socket::Shutdown::Both);
                }
            }
        }
        self.handler.connection_closed(&handle);
        let _ = self.epoll.delete(&*sock);
        for (fd, _, _) in watched(&link) {
            let _ = self.epoll.delete(fd);
        }
        let _ = sock.shutdown(std::net::Shutdown::Both);
        let senders = [
            lock(&handle.inner.response).take(),
            lock(&handle.inner.event).take(),
        ];
        // A thread waiting for room (without the lock) looks again, and
        // finds the connection gone.
        handle.inner.wakeups.notify();
        // Every socket the client could write to, closed where its
        // closing cannot hold the loop (`release_sockets`); the rings
        // first, which hold the stream socket for their wake-ups.
        let mut sockets = Vec::new();
        for tx in senders.into_iter().flatten() {
            if let Tx::Sock(s) = tx {
                sockets.push(s.into_fd());
            }
        }
        if let Link::Sock { rx, ev, .. } = link {
            sockets.push(rx.into_fd());
            sockets.push(ev);
        } else {
            drop(link);
        }
        release_sockets(sockets);
        release_stream(sock);
        self.control.count_closed();
        self.handler.connection_destroyed(&handle);
        self.resume_listener();
    }

    fn close_all(&mut self) {
        for slot in 0..self.conns.slots() {
            self.close_conn(slot, None);
        }
        for slot in 0..self.handshakes.slots() {
            self.drop_handshake(slot);
        }
    }
}

impl Conn {
    /// The fds the loop watches besides the stream socket, with the
    /// events wanted (edge-triggered): see [`watched`].
    fn watched(&self) -> Vec<(BorrowedFd<'_>, EpollFlags, u64)> {
        watched(&self.link)
    }
}

/// The fds the loop watches besides a connection's stream socket, with
/// the events wanted (edge-triggered) and their token kind: none for
/// rings (their wake-ups come on the stream socket); for the socket
/// transport the request socket (reading, and writing for a response's
/// tail) and the event socket (writing).
fn watched(link: &Link) -> Vec<(BorrowedFd<'_>, EpollFlags, u64)> {
    match link {
        Link::Shm { .. } => Vec::new(),
        Link::Sock { rx, ev, .. } => vec![
            (
                rx.fd(),
                EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT,
                CONN_REQ,
            ),
            (ev.as_fd(), EpollFlags::EPOLLOUT, CONN_SPACE),
        ],
    }
}

/// What [`drain`] found on a connection's stream socket.
enum Drained {
    /// Nothing to read.
    Nothing,
    /// Bytes, read and discarded.
    Bytes,
    /// End of stream, or the connection was reset: the client is gone.
    Gone,
    /// Any other error.
    Failed,
}

/// Reads and discards what the client wrote on its stream socket,
/// never waiting (`MSG_DONTWAIT`, whatever the socket's flags), and at
/// most 64 KiB per call: a client that floods its socket costs the loop
/// a bounded read per turn, its own share.
fn drain(sock: &UnixStream) -> Drained {
    let mut buf = [0u8; 4096];
    let mut got = false;
    for _ in 0..16 {
        match fdpass::recv_nowait(sock.as_fd(), &mut buf, MsgFlags::empty()) {
            Ok(0) => return Drained::Gone,
            Ok(n) => {
                got = true;
                if n < buf.len() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Drained::Gone,
            Err(_) => return Drained::Failed,
        }
    }
    if got {
        Drained::Bytes
    } else {
        Drained::Nothing
    }
}

/// Closes sockets a client could write to without letting a close hold
/// the loop: where the kernel could not refuse the client's fds (before
/// Linux 6.16), fds it queued and we never read are closed with their
/// socket, and some closes wait; so the last handle of each goes to
/// `fdpass::reap`. Handles that are shared (the two halves of a socket
/// transport's request socket) are dropped until the last one.
fn release_sockets(sockets: Vec<Arc<OwnedFd>>) {
    for s in sockets {
        if let Ok(fd) = Arc::try_unwrap(s) {
            fdpass::close_refusing(fd);
        }
    }
}

/// [`release_sockets`] for a connection's stream socket, once the rings
/// that send wake-ups on it are gone (a handle still held elsewhere is
/// closed by its holder).
fn release_stream(sock: Arc<UnixStream>) {
    if let Ok(sock) = Arc::try_unwrap(sock) {
        fdpass::close_refusing(OwnedFd::from(sock));
    }
}

/// Sends one byte on a connection's stream socket without waiting
/// (`MSG_DONTWAIT`): a client that does not read its socket fills its
/// own buffer and misses what is sent then, alone.
fn send_byte(sock: &UnixStream, byte: u8) {
    let _ = socket::send(
        sock.as_raw_fd(),
        &[byte],
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
    );
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit (see
/// [`ServiceOptions::raise_fd_limit`]). Best effort: a failure leaves the
/// limit as it was.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// Sends what is left of a socket connection's last message in one
/// direction. Returns whether nothing is left.
fn flush(tx: &Mutex<Option<Tx>>) -> bool {
    match lock(tx).as_mut() {
        Some(Tx::Sock(s)) => s.flush().unwrap_or(true),
        _ => true,
    }
}

type TraceHook = dyn Fn(&Trace<'_>) + Send;
type ErrorHook = dyn Fn(&Fault<'_>) + Send;

/// What a turn of the loop ([`Service::dispatch`]) left: whether to call
/// it again before waiting on the service's fd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a driver of the service must call dispatch again while Busy"]
pub enum Activity {
    /// Work was done or is left: call `dispatch` again (without waiting)
    /// before waiting on the fd.
    Busy,
    /// Everything is armed: the fd becomes readable when the service has
    /// something to do.
    Idle,
}

impl Activity {
    /// Whether to call `dispatch` again before waiting.
    pub fn is_busy(self) -> bool {
        self == Activity::Busy
    }
}

/// What the trace hook sees of a dispatched request.
#[derive(Debug)]
pub struct Trace<'a> {
    /// The connection the request came on.
    pub connection: &'a Connection,
    /// The request's message id.
    pub id: i32,
    /// The request's sequence number.
    pub seq: u64,
    /// Start or end of the handler call.
    pub stage: TraceStage,
}

/// The two moments the trace hook is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceStage {
    /// Before the handler runs.
    Start,
    /// After it returned.
    End {
        /// Time spent in the handler.
        duration: Duration,
        /// Whether a response was sent on the connection while the
        /// handler ran (synchronous completion).
        responded: bool,
        /// Whether the handler disconnected the client.
        disconnected: bool,
    },
}

/// What the error hook sees.
#[derive(Debug)]
pub struct Fault<'a> {
    /// The connection concerned (it has been disconnected), if any.
    pub connection: Option<&'a Connection>,
    /// What went wrong.
    pub what: &'a str,
}

/// Runs the handler between the trace hook's two calls.
fn traced<H: Handler>(hook: &TraceHook, handler: &H, conn: &Connection, request: &Request<'_>) {
    let mut trace = Trace {
        connection: conn,
        id: request.id(),
        seq: request.seq(),
        stage: TraceStage::Start,
    };
    hook(&trace);
    let responses = conn.inner.counters.responses.load(Ordering::Relaxed);
    let start = Instant::now();
    handler.message(conn, request);
    trace.stage = TraceStage::End {
        duration: start.elapsed(),
        responded: conn.inner.counters.responses.load(Ordering::Relaxed) != responses,
        disconnected: !conn.is_connected(),
    };
    hook(&trace);
}

/// Whether the connection's response ring has room for a full-size
/// answer; if not, parks the connection (it sleeps until the client
/// frees space). `Err` if the client corrupted the ring.
/// `Err(None)` if the client closed the ring (it is leaving: no fault).
fn response_room(
    handle: &Connection,
    parked: &mut bool,
) -> std::result::Result<bool, Option<String>> {
    let need = MSG_HEADER_LEN + handle.max_message();
    let mut guard = lock(&handle.inner.response);
    let tx = match guard.as_mut() {
        None => return Ok(false),
        Some(Tx::Sock(tx)) => {
            // A socket takes a message while the last one's tail is gone
            // and the kernel takes the next datagram; writability
            // (EPOLLOUT on the request socket) unparks.
            if !tx.flush().unwrap_or(true) || !tx.can_send() {
                *parked = true;
                Counters::add(&handle.inner.counters.recv_retries, 1);
                return Ok(false);
            }
            return Ok(true);
        }
        Some(Tx::Ring(tx)) => tx,
    };
    let corrupt = |e| match e {
        ringlink_ringbuf::PushError::Closed => None,
        e => Some(format!("client corrupted its response ring: {e}")),
    };
    // Until there is room or the wake-up is armed: a failed arm lowered
    // the flag again (the client freed space meanwhile), and a parked
    // connection must not go cold without its wake-up.
    loop {
        if tx.has_room(need).map_err(corrupt)? {
            return Ok(true);
        }
        // Edge-triggered registration: no need to drain the eventfd.
        if tx.prepare_sleep() {
            *parked = true;
            Counters::add(&handle.inner.counters.recv_retries, 1);
            return Ok(false);
        }
    }
}

/// Reads into `buf[*got..]` without waiting (and reaping any fds the
/// client attached); `done` once full.
fn read_some(sock: &UnixStream, buf: &mut [u8], got: &mut usize, done: Step) -> Step {
    loop {
        if *got == buf.len() {
            return done;
        }
        match fdpass::recv_nowait(sock.as_fd(), &mut buf[*got..], MsgFlags::empty()) {
            Ok(0) => return Step::Drop,
            Ok(n) => *got += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Step::Drop,
        }
    }
}

/// Sends a rejection (best effort and without waiting: the socket buffer
/// is empty, so 48 bytes fit) and drops the handshake.
fn reject(control: &Control, h: &mut Handshake, status: Status) -> Step {
    control.count_rejected(status);
    let _ = socket::send(
        h.sock.as_raw_fd(),
        &ConnectResponse::reject(status).encode(),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
    );
    Step::Drop
}

fn epoll_timeout(wait: Option<Duration>) -> EpollTimeout {
    match wait {
        None => EpollTimeout::NONE,
        Some(d) => {
            // Round up to whole milliseconds: rounding down would wake
            // early and spin until a deadline.
            let ms = d.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as u32;
            EpollTimeout::try_from(Duration::from_millis(ms.into())).unwrap_or(EpollTimeout::NONE)
        }
    }
}

/// Binds and listens, replacing a stale socket file safely.
fn listen(
    addr: &ServiceAddr,
    opts: &ServiceOptions,
) -> io::Result<(UnixListener, Option<PathBuf>)> {
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    let file = match addr {
        ServiceAddr::Abstract(name) => {
            socket::bind(fd.as_raw_fd(), &UnixAddr::new_abstract(name.as_bytes())?)?;
            None
        }
        ServiceAddr::Path(path) => {
            remove_stale_socket(path)?;
            bind_path(&fd, path, opts.socket_mode)?;
            Some(path.clone())
        }
    };
    let listening = Backlog::new(opts.backlog)
        .map_err(io::Error::from)
        .and_then(|b| socket::listen(&fd, b).map_err(io::Error::from));
    if let Err(e) = listening {
        if let Some(path) = &file {
            let _ = std::fs::remove_file(path);
        }
        return Err(e);
    }
    Ok((UnixListener::from(fd), file))
}

/// Binds `fd` at `path` with permissions `mode`, without ever following
/// something planted at `path` and without a window where the socket has
/// other permissions: binds inside a fresh private (0700) directory next
/// to `path`, sets the mode there, then moves the socket into place with
/// `renameat2(RENAME_NOREPLACE)`, which fails rather than replace anything
/// that appeared at `path` meanwhile.
fn bind_path(fd: &OwnedFd, path: &std::path::Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let n = SERIAL.fetch_add(1, Ordering::Relaxed);
    let private = dir.join(format!(".ringlink-bind-{}-{n}", std::process::id()));
    let tmp = private.join("s");
    if tmp.as_os_str().len() >= 108 {
        // No room in `sun_path` for the detour: bind in place (the mode is
        // then set through the path, after the bind).
        socket::bind(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
        let chmod = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
        if chmod.is_err() {
            let _ = std::fs::remove_file(path);
        }
        return chmod;
    }
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let result = (|| -> io::Result<()> {
        socket::bind(fd.as_raw_fd(), &UnixAddr::new(tmp.as_path())?)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            tmp.as_path(),
            nix::fcntl::AT_FDCWD,
            path,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        )
        .map_err(|e| {
            if e == nix::errno::Errno::EEXIST {
                io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{}: appeared while binding", path.display()),
                )
            } else {
                e.into()
            }
        })
    })();
    let _ = std::fs::remove_file(&tmp); // left there only if the rename failed
    let _ = std::fs::remove_dir(&private);
    result
}

/// Removes a socket file no server listens on. Anything else at the path
/// (a live socket, a regular file, a symlink) is left alone and reported
/// as `AddrInUse`.
fn remove_stale_socket(path: &std::path::Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        other => other?,
    };
    let in_use = |why: &str| {
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{}: {why}", path.display()),
        ))
    };
    if !meta.file_type().is_socket() {
        return in_use("exists and is not a socket");
    }
    match UnixStream::connect(path) {
        Ok(_) => in_use("a live server listens there"),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path),
        Err(e) => Err(e),
    }
}

mod libc_errno {
    pub(super) const EINTR: i32 = nix::errno::Errno::EINTR as i32;
    pub(super) const ECONNABORTED: i32 = nix::errno::Errno::ECONNABORTED as i32;
}

impl<H: Handler> AsFd for Service<H> {
    /// The epoll fd: readable when the service has something to do. Call
    /// [`Service::dispatch`] with a zero timeout when it is.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }
}

impl<H: Handler> Drop for Service<H> {
    fn drop(&mut self) {
        self.close_all();
        if let Some(path) = self.socket_file.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl<H: Handler> fmt::Debug for Service<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service")
            .field("addr", &self.addr)
            .field("protocol", &self.protocol)
            .field("connections", &self.conns.len())
            .field("handshakes", &self.handshakes.len())
            .finish_non_exhaustive()
    }
}
