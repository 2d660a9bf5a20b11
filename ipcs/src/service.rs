//! The service: its public API, and the one loop turn that routes what
//! epoll reports to the owners of the state (`docs/ARCHITECTURE.md`):
//! the [`Listener`], the [`Handshakes`], the [`Connections`], the
//! [`Flow`] of requests, the [`Sources`] (timers, the application's fds)
//! and the [`Hooks`]. The owners return what happened; the service
//! decides (who is admitted, what closes) and calls the handler.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use ringlink_channel::fds::FdAgreement;
use ringlink_channel::named::RingDir;
use ringlink_channel::qb::{self, set::QbClient};
use ringlink_channel::set::{self, ServerSide, Watch};
use ringlink_channel::Sender;
use ringlink_common::qb::QbTransport;
use ringlink_common::wire::{ConnectRequest, Status};
use ringlink_common::{
    Credentials, Error, RateLimit, Result, ServiceAddr, ServiceStats, Transport,
};

use crate::census::{self, Census};
use crate::connection::{About, QUIET_POLL};
use crate::connections::{Connections, CONN_REQ, CONN_SOCK, CONN_SPACE};
use crate::control::{ControlHandle, Registry};
use crate::flow::Flow;
use crate::handshakes::{Ended, Handshakes, Pending, Progress};
use crate::hooks::{self, Closing, Fault, FaultKind, Hooks, Trace};
use crate::listener::{Dialect, Listener};
use crate::remote::Remote;
use crate::sources::{FdId, Interest, Readiness, Sources, TimerId};
use crate::{Connection, Handler, RingAuth, ServiceOptions};

#[cfg(feature = "tokio")]
mod tokio_loop;

// Epoll tokens: kind in the top byte, slot below (the connections' kinds
// are in `connections`).
const LISTENER: u64 = 1 << 56;
const WAKER: u64 = 2 << 56;
const HANDSHAKE: u64 = 3 << 56;
const TIMER: u64 = 7 << 56;
const FOREIGN: u64 = 8 << 56;
const TICK: u64 = 9 << 56;
const IDLE: u64 = 10 << 56;
const DEADLINE: u64 = 11 << 56;
const KIND: u64 = 0xff << 56;

/// How often a busy loop (one that never sleeps) still looks at epoll:
/// new clients, timers, application fds and idle connections that became
/// active are heard within this, at the cost of one `epoll_wait` system
/// call per period.
const POLL_EVERY: Duration = Duration::from_micros(20);

/// While the loop spins idle, it reads the clock for [`POLL_EVERY`] once
/// it has looked at this many rings (an idle look at one ring takes some
/// nanoseconds: the clock is read well within the period).
const IDLE_LOOKS_PER_CLOCK: usize = 16;

/// While the loop spins idle, a full sweep comes once in this many looks;
/// the looks between read one word per hot ring (`Connections::any_pending`)
/// and sweep only when one shows something. A sweep also serves what no
/// ring word shows (requests held back until the handler is ready), so
/// it still comes every few looks.
const SWEEP_EVERY: u32 = 8;

/// A ringlink service: listens for clients, runs the handshake, and
/// dispatches their requests to a [`Handler`], all from one thread's epoll
/// loop ([`run`](Self::run) or [`dispatch`](Self::dispatch)).
///
/// # Examples
///
/// An echo service on a thread of its own, a client of it (from
/// `ringlink-ipcc`), and a clean shutdown:
///
/// ```
/// use ringlink_ipcs::{Connection, Handler, Request, Service, ServiceAddr, ServiceOptions};
/// use std::time::Duration;
///
/// struct Echo;
/// impl Handler for Echo {
///     fn message(&self, conn: &Connection, req: &Request<'_>) {
///         let _ = conn.respond(req.seq(), req.id(), req.payload());
///     }
/// }
///
/// # fn main() -> ringlink_ipcs::Result<()> {
/// // An abstract socket name: no file, gone when the service is.
/// let addr = ServiceAddr::named(&format!("ringlink-doc-{}", std::process::id()));
/// let mut service = Service::bind(addr.clone(), "echo", ServiceOptions::default(), Echo)?;
/// let control = service.control_handle();
/// let server = std::thread::spawn(move || service.run());
///
/// use ringlink_ipcc::{Client, ConnectOptions};
/// let mut client = Client::connect(&addr, &ConnectOptions::new("echo"))?;
/// let mut buf = vec![0u8; client.max_message()];
/// let reply = client.send_recv(1, b"hello", &mut buf, Some(Duration::from_secs(5)))?;
/// assert_eq!(&buf[..reply.len], b"hello");
///
/// control.shutdown(); // from any thread, or a signal handler
/// server.join().expect("server thread")?;
/// # Ok(())
/// # }
/// ```
pub struct Service<H: Handler> {
    handler: Arc<H>,
    protocol: String,
    /// `None` for a service made with [`unbound`](Self::unbound).
    addr: Option<ServiceAddr>,
    opts: ServiceOptions,
    epoll: Epoll,
    events: Vec<EpollEvent>,
    remote: Arc<Remote>,
    /// The live connections, for [`ControlHandle::connections`].
    registry: Arc<Registry>,
    /// The listening sockets: ringlink's address (`bind`), libqb's names
    /// ([`listen_libqb`](Self::listen_libqb)); the token's slot is the index.
    listeners: Vec<Listener>,
    handshakes: Handshakes,
    conns: Connections,
    /// Handshakes waiting for a free slot (`ServiceOptions::queue_when_full`),
    /// oldest first: their slot, request and credentials.
    waiting_for_slot: std::collections::VecDeque<(usize, Instant, ConnectRequest, Credentials)>,
    flow: Flow,
    sources: Sources,
    hooks: Hooks,
    /// Client slots held, in total, per user and per process.
    census: Census,
    /// Where named rings are made (`ServiceOptions::ring_dir`).
    ring_dir: Option<RingDir>,
    next_id: u64,
    /// When a request was last dispatched (the spin budget runs from it).
    last_work: Instant,
    /// When epoll was last looked at.
    last_poll: Instant,
    /// The waker fired (a command, a shutdown) during this turn: the
    /// turn ends without sleeping, so that the caller sees it.
    woken: bool,
    /// Scratch list of connections to close after a sweep, and why.
    dead: Vec<(usize, Closing)>,
    /// Fires every [`QUIET_POLL`] while a connection whose client makes
    /// room without a word (libqb's) waits for room: in the epoll set, so
    /// that a service driven from another loop is woken too.
    tick: Tick,
    /// With an idle timeout: fires every quarter of it while there are
    /// connections (`ServiceOptions::idle_timeout`).
    idle: Option<Tick>,
    /// Fires at the earliest handshake deadline (those of the clients
    /// waiting for a slot are their handshakes'): in the epoll set, so
    /// that a service driven from another loop (`run_until`, the
    /// application's) keeps its deadlines too.
    alarm: Alarm,
}

/// A periodic timerfd in the loop's epoll set, armed while needed.
struct Tick {
    fd: TimerFd,
    period: Duration,
    armed: bool,
}

/// A one-shot timerfd in the loop's epoll set, armed for a point in time
/// (absolute, on `CLOCK_MONOTONIC`, the clock of `Instant`) while there is
/// one to wait for.
struct Alarm {
    fd: TimerFd,
    /// When it is armed for (`None`: disarmed, or it fired).
    at: Option<Instant>,
}

impl Alarm {
    fn new(epoll: &Epoll, token: u64) -> io::Result<Alarm> {
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        epoll.add(fd.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, token))?;
        Ok(Alarm { fd, at: None })
    }

    /// Armed for `at`, or disarmed (`None`); no system call if it is so
    /// already. A time past fires at once.
    fn set(&mut self, at: Option<Instant>) {
        if at == self.at {
            return;
        }
        let done = match at {
            None => self.fd.unset(),
            Some(at) => monotonic(at).and_then(|ts| {
                self.fd.set(
                    Expiration::OneShot(ts),
                    TimerSetTimeFlags::TFD_TIMER_ABSTIME,
                )
            }),
        };
        // Failed, the timer is as it was (the loop's own wait still ends
        // at the deadline: `Service::turn`).
        if done.is_ok() {
            self.at = at;
        }
    }

    /// Armed for `at` at the latest.
    fn cover(&mut self, at: Instant) {
        if self.at.is_none_or(|armed| at < armed) {
            self.set(Some(at));
        }
    }

    /// It fired: drained, and disarmed (one-shot).
    fn fired(&mut self) {
        let _ = self.fd.wait();
        self.at = None;
    }
}

/// `at` as a time on `CLOCK_MONOTONIC`, never before it.
fn monotonic(at: Instant) -> nix::Result<TimeSpec> {
    // The instant read first: the clock, read after it, adds what passed
    // between the two reads, so the time is late by that, never early.
    let left = at.saturating_duration_since(Instant::now());
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)?;
    let now = Duration::new(
        u64::try_from(now.tv_sec()).unwrap_or(0),
        u32::try_from(now.tv_nsec()).unwrap_or(0),
    );
    Ok(TimeSpec::from_duration(now.saturating_add(left)))
}

/// How many looks of the idle timer without a request make a connection
/// idle: the timer fires every `idle_timeout / IDLE_LOOKS`.
const IDLE_LOOKS: u32 = 4;

impl Tick {
    fn new(epoll: &Epoll, token: u64, period: Duration) -> io::Result<Tick> {
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        epoll.add(fd.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, token))?;
        Ok(Tick {
            fd,
            period: period.max(Duration::from_micros(1)),
            armed: false,
        })
    }

    /// Armed (periodic) or not.
    fn set(&mut self, on: bool) {
        if on == self.armed {
            return;
        }
        let done = if on {
            self.fd.set(
                Expiration::Interval(TimeSpec::from_duration(self.period)),
                TimerSetTimeFlags::empty(),
            )
        } else {
            self.fd.unset()
        };
        if done.is_ok() {
            self.armed = on;
        }
    }
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
    ///
    /// # Examples
    ///
    /// An abstract name belongs to the first process that binds it, of
    /// any user; the next is refused with `AddrInUse`, which says who
    /// holds the name:
    ///
    /// ```
    /// use ringlink_ipcs::{Dispatch, Error, Service, ServiceAddr, ServiceOptions};
    ///
    /// # fn main() -> ringlink_ipcs::Result<()> {
    /// let addr = ServiceAddr::named(&format!("ringlink-doc-{}", std::process::id()));
    /// let service = Service::bind(addr.clone(), "kv", ServiceOptions::default(), Dispatch::new())?;
    /// assert_eq!(service.addr(), Some(&addr));
    ///
    /// match Service::bind(addr, "kv", ServiceOptions::default(), Dispatch::new()) {
    ///     Err(Error::Io(e)) => {
    ///         assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    ///         // "@ringlink-doc-...: a server runs there already (pid ..., uid ...)"
    ///         println!("{e}");
    ///     }
    ///     other => panic!("the name was free: {other:?}"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// A filesystem socket instead: its directory's permissions and
    /// [`ServiceOptions::socket_mode`] say who may connect. The file is
    /// removed when the service is dropped.
    ///
    /// ```
    /// use ringlink_ipcs::{Dispatch, Service, ServiceAddr, ServiceOptions};
    /// use std::os::unix::fs::PermissionsExt;
    ///
    /// # fn main() -> ringlink_ipcs::Result<()> {
    /// let path = std::env::temp_dir().join(format!("ringlink-doc-{}.sock", std::process::id()));
    /// let opts = ServiceOptions::default().socket_mode(0o660); // owner and group
    /// let service = Service::bind(ServiceAddr::Path(path.clone()), "kv", opts, Dispatch::new())?;
    /// assert_eq!(std::fs::metadata(&path)?.permissions().mode() & 0o777, 0o660);
    /// drop(service);
    /// assert!(!path.exists());
    /// # Ok(())
    /// # }
    /// ```
    pub fn bind(
        addr: ServiceAddr,
        protocol: &str,
        opts: ServiceOptions,
        handler: H,
    ) -> Result<Service<H>> {
        ringlink_common::wire::check_protocol_id(protocol)?;
        let mut service = Service::new(protocol, opts, handler)?;
        service.listeners.push(Listener::bind(
            &addr,
            &service.opts,
            &service.epoll,
            LISTENER,
        )?);
        event!(info, %addr, protocol, "service listening");
        service.addr = Some(addr);
        Ok(service)
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
        Service::new(protocol, opts, handler)
    }

    fn new(protocol: &str, opts: ServiceOptions, handler: H) -> Result<Service<H>> {
        opts.accept_fds.check()?;
        if opts.raise_fd_limit {
            census::raise_fd_limit();
        }
        let ring_dir = opts.ring_dir.clone().map(RingDir::new).transpose()?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(io::Error::from)?;
        let remote = Arc::new(Remote::new()?);
        let tick = Tick::new(&epoll, TICK, QUIET_POLL)?;
        let alarm = Alarm::new(&epoll, DEADLINE)?;
        // A zero timeout is none (it would close every client at once).
        let idle = opts
            .idle_timeout
            .filter(|t| !t.is_zero())
            .map(|t| {
                Tick::new(
                    &epoll,
                    IDLE,
                    (t / IDLE_LOOKS).min(Duration::from_secs(1 << 30)),
                )
            })
            .transpose()?;
        epoll
            .add(
                remote.waker_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, WAKER),
            )
            .map_err(io::Error::from)?;
        Ok(Service {
            handler: Arc::new(handler),
            protocol: protocol.to_owned(),
            addr: None,
            handshakes: Handshakes::new(HANDSHAKE, opts.handshake_timeout),
            opts,
            epoll,
            events: vec![EpollEvent::empty(); 256],
            remote,
            registry: Arc::default(),
            listeners: Vec::new(),
            conns: Connections::default(),
            waiting_for_slot: std::collections::VecDeque::new(),
            flow: Flow::default(),
            sources: Sources::new(TIMER, FOREIGN),
            hooks: Hooks::default(),
            census: Census::default(),
            ring_dir,
            next_id: 1,
            last_work: Instant::now(),
            last_poll: Instant::now(),
            woken: false,
            dead: Vec::new(),
            tick,
            idle,
            alarm,
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

    /// A handle to control the service from another thread or a signal
    /// handler: stop it, set its rate limit, read its statistics, list
    /// its connections.
    ///
    /// # Examples
    ///
    /// Taken before the service moves to the thread that runs it (more in
    /// [`ControlHandle`]'s example):
    ///
    /// ```
    /// use ringlink_ipcs::{Dispatch, Service, ServiceAddr, ServiceOptions};
    ///
    /// # fn main() -> ringlink_ipcs::Result<()> {
    /// # let addr = ServiceAddr::named(&format!("ringlink-doc-{}", std::process::id()));
    /// let mut service = Service::bind(addr, "kv", ServiceOptions::default(), Dispatch::new())?;
    /// let control = service.control_handle();
    /// let server = std::thread::spawn(move || service.run());
    ///
    /// assert_eq!(control.stats(false).active_connections, 0);
    /// control.shutdown();
    /// server.join().expect("server thread")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn control_handle(&self) -> ControlHandle {
        ControlHandle {
            remote: self.remote.clone(),
            registry: self.registry.clone(),
        }
    }

    /// The old name of [`control_handle`](Self::control_handle).
    #[deprecated(since = "0.1.0", note = "renamed control_handle")]
    pub fn shutdown_handle(&self) -> ControlHandle {
        self.control_handle()
    }

    /// Changes how many requests the service takes per connection and
    /// loop turn (see [`RateLimit`]). Callable from any thread through
    /// [`ControlHandle::set_rate_limit`]; applied on the next turn.
    pub fn set_rate_limit(&self, rate: RateLimit) {
        self.remote.set_rate(rate);
    }

    /// Calls `hook` at the start and at the end of every dispatched
    /// request (lwmsg's trace functions): message id, connection,
    /// duration, and whether the handler answered before returning; and
    /// when its response goes ([`TraceStage::Responded`](crate::TraceStage::Responded), with its error
    /// code), from whichever thread answered: the hook is `Sync`.
    pub fn set_trace_hook(&mut self, hook: impl Fn(&Trace<'_>) + Send + Sync + 'static) {
        let hook: std::sync::Arc<crate::hooks::TraceHook> = std::sync::Arc::new(hook);
        self.remote.set_trace(Some(hook.clone()));
        self.hooks.trace = Some(hook);
    }

    /// Calls `hook` for failures the loop handles on its own (lwmsg's
    /// exception function): a client that broke the protocol (and was
    /// disconnected; [`Fault::violation`] says how), a failed socket, or
    /// an `accept` failure.
    pub fn set_error_hook(&mut self, hook: impl Fn(&Fault<'_>) + Send + 'static) {
        self.hooks.error = Some(Box::new(hook));
    }

    /// Runs `callback` on the loop thread every `period` (the first time
    /// one period from now). If the loop falls behind, missed periods
    /// collapse into one call.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the timerfd cannot be made or registered.
    ///
    /// # Examples
    ///
    /// Housekeeping on the loop thread, beside the clients: here a
    /// heartbeat event to every connection, each 10 ms.
    ///
    /// ```
    /// use ringlink_ipcs::{Dispatch, Service, ServiceAddr, ServiceOptions};
    /// use std::time::Duration;
    ///
    /// const BEAT: i32 = 100;
    ///
    /// # fn main() -> ringlink_ipcs::Result<()> {
    /// # let addr = ServiceAddr::named(&format!("ringlink-doc-{}", std::process::id()));
    /// let mut service = Service::bind(addr.clone(), "beat", ServiceOptions::default(), Dispatch::new())?;
    /// let control = service.control_handle();
    /// let each = control.clone();
    /// service.add_timer(Duration::from_millis(10), move || {
    ///     for conn in each.connections() {
    ///         let _ = conn.send_event(BEAT, b"");
    ///     }
    /// })?;
    /// let server = std::thread::spawn(move || service.run());
    ///
    /// use ringlink_ipcc::{Client, ConnectOptions};
    /// let mut client = Client::connect(&addr, &ConnectOptions::new("beat"))?;
    /// let mut buf = [0u8; 8];
    /// let m = client.event_recv(&mut buf, Some(Duration::from_secs(5)))?;
    /// assert_eq!(m.id, BEAT);
    /// # control.shutdown();
    /// # server.join().expect("server thread")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn add_timer(
        &mut self,
        period: Duration,
        callback: impl FnMut() + Send + 'static,
    ) -> Result<TimerId> {
        Ok(self
            .sources
            .add_timer(&self.epoll, period, Box::new(callback))?)
    }

    /// Stops a timer. Returns whether it was still there.
    pub fn remove_timer(&mut self, id: TimerId) -> bool {
        self.sources.remove_timer(&self.epoll, id)
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
        Ok(self
            .sources
            .add_fd(&self.epoll, fd, interest, Box::new(callback))?)
    }

    /// Stops watching an fd and gives it back (`None` if the id is stale).
    pub fn remove_fd(&mut self, id: FdId) -> Option<OwnedFd> {
        self.sources.remove_fd(&self.epoll, id)
    }

    /// Stops taking new clients (Legato's "hide", lwmsg's `stop_listen`):
    /// live connections and handshakes in progress go on; clients that
    /// connect meanwhile wait in the listen backlog (and time out on
    /// their own deadline) until [`resume_listening`](Self::resume_listening).
    pub fn stop_listening(&mut self) {
        for l in &mut self.listeners {
            l.advertise(false, &self.epoll);
        }
    }

    /// Takes new clients again after [`stop_listening`](Self::stop_listening);
    /// those waiting in the backlog are served at once.
    pub fn resume_listening(&mut self) {
        for l in &mut self.listeners {
            l.advertise(true, &self.epoll);
        }
    }

    /// Creates a service that takes its clients from `listener`, a
    /// listening Unix stream socket someone else bound (lwmsg's
    /// `lwmsg_peer_add_listen_fd`; a parent process, a supervisor). See
    /// [`add_listener`](Self::add_listener).
    ///
    /// # Errors
    ///
    /// As [`add_listener`](Self::add_listener), and as
    /// [`unbound`](Self::unbound).
    pub fn from_listener(
        listener: UnixListener,
        protocol: &str,
        opts: ServiceOptions,
        handler: H,
    ) -> Result<Service<H>> {
        let mut service = Service::unbound(protocol, opts, handler)?;
        service.add_listener(listener)?;
        Ok(service)
    }

    /// Also takes ringlink's clients from `listener`, a listening Unix
    /// stream socket someone else bound, beside the service's other
    /// listeners. It is made non-blocking and close-on-exec; a socket
    /// file it is bound to stays (it is not this service's to remove).
    ///
    /// # Errors
    ///
    /// `InvalidInput` if it is not a listening Unix stream socket;
    /// [`Error::Io`] if it cannot be registered.
    pub fn add_listener(&mut self, listener: UnixListener) -> Result<()> {
        let listener = ringlink_common::activation::unix_listener(listener.into())?;
        self.push_adopted(listener)
    }

    /// A checked listening socket, in the loop from now on.
    fn push_adopted(&mut self, listener: UnixListener) -> Result<()> {
        let token = LISTENER | self.listeners.len() as u64;
        let l = Listener::adopt(listener, &self.epoll, token)?;
        self.listeners.push(l);
        Ok(())
    }

    /// Takes the listening sockets the service manager passed to this
    /// process (systemd's socket activation: `LISTEN_PID`, `LISTEN_FDS`,
    /// fds from 3 on, `sd_listen_fds(3)`), as
    /// [`add_listener`](Self::add_listener) would, so that the service
    /// can be started on demand. Returns how many; 0 if the process was
    /// not socket-activated, or the fds were already taken in this
    /// process. Every fd is checked before any is used.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if one of them is not a listening Unix stream
    /// socket (all of them are then closed); `InvalidData` for a corrupt
    /// `LISTEN_FDS`.
    pub fn listen_activated(&mut self) -> Result<usize> {
        let Some(fds) = ringlink_common::activation::take_listen_fds()? else {
            return Ok(0);
        };
        let listeners = fds
            .into_iter()
            .map(|f| ringlink_common::activation::unix_listener(f.fd))
            .collect::<io::Result<Vec<_>>>()?;
        let n = listeners.len();
        for l in listeners {
            self.push_adopted(l)?;
        }
        Ok(n)
    }

    /// Also serves libqb clients (programs linked with libqb, calling
    /// `qb_ipcc_connect(service, ...)`): listens on libqb's address for
    /// service name `service` and speaks libqb's protocol over
    /// `transport` (`docs/LIBQB.md`), with the same [`Handler`] and
    /// [`Connection`]s as ringlink's clients, beside this service's own
    /// address if it has one (a service made with
    /// [`unbound`](Self::unbound) may serve libqb clients alone). As
    /// libqb does, the service name lives in the abstract namespace; the
    /// rings' directories are made under
    /// [`ServiceOptions::libqb_dir`], where those of servers that died
    /// are removed now.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a name libqb cannot use (empty, over 106 bytes,
    /// or with a NUL); `AddrInUse` if a server has the name.
    pub fn listen_libqb(&mut self, service: &str, transport: QbTransport) -> Result<()> {
        qb::dir::remove_stale(&self.opts.libqb_dir);
        let token = LISTENER | self.listeners.len() as u64;
        let l = Listener::bind_libqb(service, transport, &self.opts, &self.epoll, token)?;
        self.listeners.push(l);
        Ok(())
    }

    /// The service's statistics; with `clear`, the counters restart from
    /// zero. Per-connection figures: [`Connection::stats`].
    pub fn stats(&self, clear: bool) -> ServiceStats {
        self.remote.stats(clear, self.conns.len())
    }

    /// The rate limit in force.
    pub fn rate_limit(&self) -> RateLimit {
        self.remote.rate()
    }

    /// The live connections.
    pub fn connections(&self) -> impl Iterator<Item = &Connection> {
        self.conns.handles()
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
    ///
    /// # Examples
    ///
    /// A parent serving the child it starts, over a socket pair, with no
    /// name anyone else could connect to (here the "child" is a thread):
    ///
    /// ```
    /// use ringlink_ipcs::{Dispatch, Service, ServiceOptions};
    /// use std::os::unix::net::UnixStream;
    /// use std::time::Duration;
    ///
    /// # fn main() -> ringlink_ipcs::Result<()> {
    /// let table = Dispatch::new().on(1, |conn, req| {
    ///     let _ = conn.respond(req.seq(), 1, req.payload());
    /// });
    /// let mut service = Service::unbound("echo", ServiceOptions::default(), table)?;
    /// let (ours, theirs) = UnixStream::pair()?;
    /// service.adopt(ours)?;
    /// let control = service.control_handle();
    /// let server = std::thread::spawn(move || service.run());
    ///
    /// // In the child (given `theirs`, e.g. as an inherited fd):
    /// use ringlink_ipcc::{Client, ConnectOptions};
    /// let mut client = Client::connect_stream(theirs, &ConnectOptions::new("echo"))?;
    /// let mut buf = [0u8; 8];
    /// let m = client.send_recv(1, b"hi", &mut buf, Some(Duration::from_secs(5)))?;
    /// assert_eq!(&buf[..m.len], b"hi");
    /// # control.shutdown();
    /// # server.join().expect("server thread")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn adopt(&mut self, sock: UnixStream) -> Result<()> {
        self.start_handshake(sock, None, false).map_err(Error::Io)
    }

    /// Runs the loop until [`ControlHandle::shutdown`] is called, then
    /// closes every connection (running their `connection_closed` and
    /// `connection_destroyed` handlers).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if `epoll_wait` fails.
    ///
    /// # Examples
    ///
    /// A daemon's `main`: the service runs on the main thread until
    /// Ctrl-C or SIGTERM. The signals are caught from the start by
    /// signal-hook's `Signals` (a dependency of your own), and the thread
    /// that waits for them stops the service (`shutdown` is also safe to
    /// call from a signal handler itself):
    ///
    /// ```
    /// use ringlink_ipcs::{Dispatch, Service, ServiceAddr, ServiceOptions};
    /// use signal_hook::consts::{SIGINT, SIGTERM};
    ///
    /// fn main() -> Result<(), Box<dyn std::error::Error>> {
    ///     let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    /// #   let addr = ServiceAddr::named(&format!("ringlink-doc-{}", std::process::id()));
    /// #   /*
    ///     let addr = ServiceAddr::named("my-daemon");
    /// #   */
    ///     let table = Dispatch::new().on(1, |conn, req| {
    ///         let _ = conn.respond(req.seq(), 1, req.payload());
    ///     });
    ///     let mut service = Service::bind(addr, "my-daemon", ServiceOptions::default(), table)?;
    ///     let control = service.control_handle();
    ///     std::thread::spawn(move || {
    ///         if signals.forever().next().is_some() {
    ///             control.shutdown();
    ///         }
    ///     });
    /// #   signal_hook::low_level::raise(SIGINT)?; // as if Ctrl-C were pressed
    ///     service.run()?; // until Ctrl-C; every connection is closed on the way out
    ///     eprintln!("shut down: {:?}", service.stats(false));
    ///     Ok(())
    /// }
    /// ```
    pub fn run(&mut self) -> Result<()> {
        while !self.remote.is_shutdown() {
            // Busy or idle, the next turn decides: it sleeps only once
            // everything is armed.
            let _ = self.turn(true, None)?;
        }
        event!(info, "service shutting down");
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
    /// becomes readable when anything needs the service (a client, a
    /// request, a timer, a handshake's deadline). As with mio's
    /// readiness, the fd may also be readable spuriously (a turn then
    /// returns `Idle` having done nothing). This is libqb's
    /// `qb_ipcs_poll_handlers_set` way of running a server inside
    /// Pacemaker's or Corosync's main loop.
    ///
    /// ```
    /// use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    /// use ringlink_ipcs::{Dispatch, Service, ServiceAddr, ServiceOptions};
    /// use std::os::fd::AsFd;
    /// use std::time::Duration;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let addr = ServiceAddr::named(&format!("ringlink-doc-{}", std::process::id()));
    /// let table = Dispatch::new().on(1, |conn, req| {
    ///     let _ = conn.respond(req.seq(), 1, req.payload());
    /// });
    /// let mut service = Service::bind(addr.clone(), "echo", ServiceOptions::default(), table)?;
    ///
    /// // A client on another thread (it could be any process).
    /// let client = std::thread::spawn(move || -> ringlink_ipcs::Result<()> {
    ///     use ringlink_ipcc::{Client, ConnectOptions};
    ///     let mut c = Client::connect(&addr, &ConnectOptions::new("echo"))?;
    ///     let mut buf = [0u8; 16];
    ///     c.send_recv(1, b"ping", &mut buf, Some(Duration::from_secs(5)))?;
    ///     Ok(())
    /// });
    ///
    /// // The application's loop; its own fds would sit beside the service's.
    /// while !client.is_finished() {
    ///     // Serve until the service has nothing left that its fd would not announce.
    ///     while service.dispatch(Some(Duration::ZERO))?.is_busy() {}
    ///     let mut fds = [PollFd::new(service.as_fd(), PollFlags::POLLIN)];
    ///     poll(&mut fds, PollTimeout::from(100u16))?; // readable: dispatch again
    /// }
    /// client.join().expect("client thread")?;
    /// # Ok(())
    /// # }
    /// ```
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
        self.remote.mark_loop_thread();
        self.woken = false;
        self.handle_commands();
        if self.sweep() {
            let now = Instant::now();
            self.last_work = now;
            // Busy: still hear the listener, timers, and connections that
            // went cold, every so often.
            self.poll_if_due(now)?;
            return Ok(Activity::Busy);
        }
        // Sockets are watched by epoll alone: polling them would cost a
        // system call per connection and turn.
        if spin && self.opts.transport == ringlink_common::Transport::Shm {
            let budget =
                (self.last_work + self.opts.spin).saturating_duration_since(Instant::now());
            // The clock is read for `poll_if_due` once every few idle
            // looks at a ring, not after each sweep: an idle look costs
            // less than the clock, and a request landing meanwhile waits.
            let mut looks = 0usize;
            let mut light = 0u32;
            let work = ringlink_ringbuf::wake::spin_until(budget, || {
                if light + 1 < SWEEP_EVERY && !self.conns.any_pending() {
                    light += 1;
                } else {
                    light = 0;
                    if self.sweep() {
                        return true;
                    }
                }
                looks += self.conns.hot_count().max(1);
                if looks < IDLE_LOOKS_PER_CLOCK {
                    return false;
                }
                looks = 0;
                // An epoll failure shows again in the wait below.
                self.poll_if_due(Instant::now()).unwrap_or(false) && (self.woken || self.sweep())
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
        if self.woken || self.remote.is_shutdown() {
            return Ok(self.activity());
        }
        // Not reading requests: clients publish without signalling us, so
        // that flow control costs the loop nothing.
        let mut wait = wait;
        // Wake-ups read before any flag goes up (PROTOCOL.md W0): one read
        // after would take the byte of a request published since.
        self.read_streams();
        if self.flow.reading() && !self.conns.arm_all() {
            wait = Some(Duration::ZERO);
        }
        // Clients that make room without a word (libqb's): looked at on
        // the tick while one waits for it.
        let quiet = self.conns.poll_quiet(false);
        self.tick.set(quiet);
        // The alarm wakes whoever waits on the epoll fd (this wait, tokio's
        // reactor, the application's loop) at the earliest deadline; none
        // is armed without one. The wait ends there too, should arming
        // have failed.
        let next = self.handshakes.next_deadline();
        self.alarm.set(next);
        if let Some(deadline) = next {
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
        if self.remote.is_shutdown() || !self.flow.reading() || self.conns.all_armed() {
            Activity::Idle
        } else {
            Activity::Busy
        }
    }

    /// [`poll_events`](Self::poll_events) without waiting, if the last
    /// look is [`POLL_EVERY`] old. Returns whether it looked.
    fn poll_if_due(&mut self, now: Instant) -> Result<bool> {
        if now.saturating_duration_since(self.last_poll) < POLL_EVERY {
            return Ok(false);
        }
        self.poll_events(Some(Duration::ZERO))?;
        Ok(true)
    }

    /// Waits in epoll for at most `wait` and hands what it reports to the
    /// owner of each fd.
    fn poll_events(&mut self, wait: Option<Duration>) -> Result<()> {
        // Every caller reads them first (`turn`, before the flags go up;
        // a sweep after each busy poll). Should one be left, it is read
        // and the poll does not wait: its flags may be up, and the read
        // may have taken a wake-up for a request not looked at yet.
        let mut wait = wait;
        if self.conns.has_unread() {
            self.read_streams();
            wait = Some(Duration::ZERO);
        }
        let n = match self.epoll.wait(&mut self.events, epoll_timeout(wait)) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => 0,
            Err(e) => return Err(Error::Io(e.into())),
        };
        self.last_poll = Instant::now();
        let mut alarm = false;
        for i in 0..n {
            let ev = self.events[i];
            let flags = ev.events();
            let slot = (ev.data() & !KIND) as usize;
            match ev.data() & KIND {
                LISTENER => self.accept_all(slot),
                WAKER => {
                    self.woken = true;
                    self.remote.drain();
                    self.handle_commands();
                }
                HANDSHAKE => self.on_handshake(slot),
                TIMER => self.sources.fire_timer(slot),
                TICK => {
                    let _ = self.tick.fd.wait();
                    let quiet = self.conns.poll_quiet(true);
                    self.tick.set(quiet);
                }
                IDLE => self.look_for_idle(),
                DEADLINE => {
                    self.alarm.fired();
                    alarm = true;
                }
                FOREIGN => self.sources.fire_fd(slot, flags, &self.epoll),
                CONN_SOCK => {
                    let hung_up = flags.intersects(
                        EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR | EpollFlags::EPOLLRDHUP,
                    );
                    if let Some(closing) = self.conns.on_stream(slot, hung_up, &self.epoll) {
                        self.close_conn(slot, closing);
                    }
                }
                kind @ (CONN_REQ | CONN_SPACE) => {
                    let watch = if kind == CONN_REQ {
                        Watch::Requests
                    } else {
                        Watch::Events
                    };
                    let readable = flags.intersects(
                        EpollFlags::EPOLLIN | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR,
                    );
                    let writable = flags.contains(EpollFlags::EPOLLOUT);
                    self.conns.on_socket(slot, watch, readable, writable);
                }
                _ => {}
            }
        }
        if !self.waiting_for_slot.is_empty() {
            self.refuse_late_waiters(Instant::now());
        }
        for ended in self.handshakes.expire(Instant::now(), &self.epoll) {
            self.remote.count_abandoned();
            self.end_handshake(ended);
        }
        if alarm {
            // For the next deadline: a turn may end without arming it
            // (busy, or woken), and the fd must still announce it.
            self.alarm.set(self.handshakes.next_deadline());
        }
        Ok(())
    }

    /// Reads every hot connection's waiting requests and hands them to
    /// the handler. Returns whether any was dispatched.
    fn sweep(&mut self) -> bool {
        let per_turn = self.flow.rate().per_turn();
        if per_turn == 0 {
            self.read_streams();
            return false;
        }
        let handler = self.handler.as_ref();
        let trace = self.hooks.trace.as_deref();
        let did = self.conns.sweep(
            per_turn,
            &mut self.dead,
            |conn, id| handler.ready(conn, id),
            |conn, header, payload, fds| {
                hooks::deliver(handler, trace, conn, header, payload, fds);
            },
        );
        while let Some((slot, closing)) = self.dead.pop() {
            self.close_conn(slot, closing);
        }
        // The wake-ups epoll reported, now that their requests were served.
        self.read_streams();
        did
    }

    /// Reads the stream sockets epoll reported (`Connections::on_stream`
    /// leaves a ring client's for after the sweep) and closes those whose
    /// client left or broke the protocol there.
    fn read_streams(&mut self) {
        // (Called after every sweep: nothing to do, nothing done.)
        if !self.conns.has_unread() {
            return;
        }
        self.conns.read_streams(&mut self.dead, &self.epoll);
        while let Some((slot, closing)) = self.dead.pop() {
            self.close_conn(slot, closing);
        }
    }

    /// What other threads asked for: a new rate limit, connections to
    /// close.
    fn handle_commands(&mut self) {
        if let Some(change) = self.flow.apply(self.remote.rate()) {
            if change.resumed {
                self.conns.make_all_hot();
            }
            if change.changed {
                event!(
                    debug,
                    level = change.level,
                    rate = ?self.remote.rate(),
                    "flow-control level changed"
                );
            }
            self.conns.publish_level(change.level, change.changed);
        }
        for (id, slot) in self.remote.take_resumes() {
            if self.conns.holds(slot, id) {
                self.conns.resume(slot);
            }
        }
        for (id, slot, violation) in self.remote.take_disconnects() {
            if self.conns.holds(slot, id) {
                self.close_conn(slot, violation.map_or(Closing::Disconnected, Closing::from));
            }
        }
    }

    fn accept_all(&mut self, index: usize) {
        let Some(listener) = self.listeners.get_mut(index) else {
            return;
        };
        let libqb = matches!(listener.dialect(), Dialect::Libqb { .. });
        let accepted = listener.accept(&self.epoll);
        if let Some(kind) = accepted.failed {
            self.hooks.fault(None, FaultKind::AcceptFailed(kind));
        }
        for sock in accepted.clients {
            // A socket that cannot be registered is dropped (closed): the
            // client sees the connection end.
            let _ = self.start_handshake(sock, Some(index), libqb);
        }
    }

    fn start_handshake(
        &mut self,
        sock: UnixStream,
        listener: Option<usize>,
        libqb: bool,
    ) -> io::Result<()> {
        if self.handshakes.len() >= self.opts.max_handshakes {
            if let Some(ended) = self.handshakes.evict_oldest(&self.epoll) {
                self.remote.count_abandoned();
                self.end_handshake(ended);
            }
        }
        let deadline = self.handshakes.start(sock, &self.epoll, listener, libqb)?;
        // Every deadline starts here (a queued client's is its
        // handshake's), from within a turn or not (`adopt`): the fd
        // announces it however the service is driven.
        self.alarm.cover(deadline);
        Ok(())
    }

    /// Reads what a handshake's socket has and acts on it, until it waits
    /// for more or ends.
    fn on_handshake(&mut self, slot: usize) {
        loop {
            match self.handshakes.advance(slot, &self.epoll) {
                Progress::Wait => return,
                Progress::Ended(ended) => {
                    self.remote.count_abandoned();
                    return self.end_handshake(ended);
                }
                Progress::Malformed(status) => return self.refuse(slot, status),
                // Answered: the confirmation may be there already.
                Progress::Request(request, credentials) => {
                    if !self.decide(slot, &request, credentials) {
                        return;
                    }
                }
                Progress::Confirmed(sock, pending) => return self.start_connection(sock, *pending),
                Progress::LibqbRequest {
                    request,
                    credentials,
                    listener,
                } => return self.decide_libqb(slot, request, credentials, listener),
                Progress::LibqbMalformed(ended) => {
                    // libqb's server closes such a connection unanswered.
                    self.remote.count_rejected(Status::BadRequest);
                    return self.end_handshake(ended);
                }
            }
        }
    }

    /// Refuses a request, or makes the connection's channels and sends
    /// them. Returns whether it answered (the handshake goes on).
    fn decide(&mut self, slot: usize, req: &ConnectRequest, credentials: Credentials) -> bool {
        let refusal = if req.transport != self.opts.transport {
            Some(Status::TransportMismatch)
        } else if req.protocol != self.protocol {
            Some(Status::UnknownProtocol)
        } else if let Err(status) = self.census.check(&credentials, &self.opts) {
            if status == Status::TooManyClients && self.opts.queue_when_full {
                // Answered when a slot frees, or refused at its deadline.
                if let Some((started, _)) = self.handshakes.unanswered(slot) {
                    self.waiting_for_slot
                        .push_back((slot, started, req.clone(), credentials));
                    return false;
                }
            }
            Some(status)
        } else if let Err(r) = self.handler.accept(&credentials) {
            Some(r.into())
        } else {
            None
        };
        if let Some(status) = refusal {
            self.refuse(slot, status);
            return false;
        }
        let max_message = self.opts.negotiate(req.max_message);
        let id = self.next_id;
        self.next_id += 1;
        let named = self
            .ring_dir
            .as_ref()
            .map(|d| (d, self.handler.ring_auth(&credentials)));
        let Some(stream) = self.handshakes.stream(slot) else {
            return false;
        };
        let offer = match set::offer(
            self.opts.transport,
            id,
            max_message,
            named,
            stream,
            self.flow.level(),
            FdAgreement {
                ours: self.opts.accept_fds,
                theirs: req.fds,
            },
        ) {
            Ok(offer) => offer,
            Err(e) => {
                self.hooks.fault(None, FaultKind::ChannelsFailed(e.kind()));
                self.refuse(slot, Status::Resources);
                return false;
            }
        };
        match self
            .handshakes
            .answer(slot, id, credentials, offer, &self.epoll)
        {
            Ok(()) => {
                self.census.admit(&credentials);
                true
            }
            Err(ended) => {
                if let Some(ended) = ended {
                    self.remote.count_abandoned();
                    self.end_handshake(ended);
                }
                false
            }
        }
    }

    fn refuse(&mut self, slot: usize, status: Status) {
        event!(info, ?status, "connection refused");
        self.remote.count_rejected(status);
        if let Some(ended) = self.handshakes.refuse(slot, status, &self.epoll) {
            self.end_handshake(ended);
        }
    }

    /// Releases what an ended handshake held: its census slot, its
    /// channels, its socket; a client waiting in the backlog may come in.
    fn end_handshake(&mut self, ended: Ended) {
        if let Some(credentials) = ended.release() {
            self.census.release(&credentials);
        }
        self.resume_listener();
        self.admit_waiting();
    }

    /// Answers the handshakes waiting for a slot while there are slots;
    /// forgets those that ended.
    fn admit_waiting(&mut self) {
        while let Some((slot, started, req, credentials)) = self.waiting_for_slot.pop_front() {
            if self.handshakes.unanswered(slot).map(|(s, _)| s) != Some(started) {
                continue; // ended meanwhile
            }
            if self.census.check(&credentials, &self.opts) == Err(Status::TooManyClients) {
                self.waiting_for_slot
                    .push_front((slot, started, req, credentials));
                return;
            }
            self.decide(slot, &req, credentials);
        }
    }

    /// Refuses the handshakes that waited for a slot until their deadline.
    fn refuse_late_waiters(&mut self, now: Instant) {
        let handshakes = &self.handshakes;
        let current = |slot: usize, started: Instant| {
            handshakes
                .unanswered(slot)
                .filter(|(s, _)| *s == started)
                .map(|(_, deadline)| deadline)
        };
        let (late, waiting): (Vec<_>, Vec<_>) = self
            .waiting_for_slot
            .drain(..)
            .partition(|(slot, started, ..)| current(*slot, *started).is_none_or(|d| d <= now));
        self.waiting_for_slot = waiting.into();
        for (slot, started, ..) in late {
            if self.handshakes.unanswered(slot).map(|(s, _)| s) == Some(started) {
                self.refuse(slot, Status::TooManyClients);
            }
        }
    }

    /// The client confirmed: the connection is created.
    fn start_connection(&mut self, sock: Arc<UnixStream>, pending: Pending) {
        let Pending {
            id,
            credentials,
            offer,
        } = pending;
        // The level may have changed since the client was told: published
        // again, and a client already waiting on it is woken.
        let level = self.flow.level();
        let max_message = offer.max_message();
        let (side, response, event) = offer.accept(level, &sock);
        let made = About {
            id,
            credentials,
            max_message,
            transport: self.opts.transport,
            libqb: None,
            event_queue: self.opts.event_queue,
        };
        self.admit(sock, made, side, (response, event));
    }

    /// A connection whose channels are made and whose client was told:
    /// its handle, in the table and the registry, and the application
    /// told (`connection_created`).
    fn admit(
        &mut self,
        sock: Arc<UnixStream>,
        made: About,
        side: ServerSide,
        senders: (Sender, Sender),
    ) {
        let level = self.flow.level();
        let handle = Connection::new(made, self.conns.next_slot(), senders, self.remote.clone());
        handle.set_flow_control(level > 0, false);
        if let Err(conn) = self.conns.insert(handle.clone(), sock, side, &self.epoll) {
            let conn = *conn;
            conn.close();
            conn.release();
            self.census.release(&made.credentials);
            self.remote.count_abandoned();
            return self.resume_listener();
        }
        self.registry.lock().insert(made.id, handle.clone());
        if let Some(idle) = &mut self.idle {
            idle.set(true);
        }
        event!(
            info,
            conn = made.id,
            pid = made.credentials.pid,
            uid = made.credentials.uid,
            transport = ?handle.transport(),
            "connection created"
        );
        self.handler.connection_created(&handle);
        self.resume_listener();
    }

    /// The idle timer fired: connections that sent nothing for the idle
    /// timeout are closed; with none left, the timer stops.
    fn look_for_idle(&mut self) {
        let Some(idle) = &mut self.idle else {
            return;
        };
        let _ = idle.fd.wait();
        self.conns.look_for_idle(IDLE_LOOKS, &mut self.dead);
        while let Some((slot, closing)) = self.dead.pop() {
            self.close_conn(slot, closing);
        }
    }

    /// A libqb client's request: refused (with libqb's errno), or its
    /// rings made, the answer sent, and the connection started at once
    /// (libqb confirms nothing).
    fn decide_libqb(
        &mut self,
        slot: usize,
        request: ringlink_common::qb::ConnRequest,
        credentials: Credentials,
        listener: usize,
    ) {
        let Some(Dialect::Libqb { service, transport }) =
            self.listeners.get(listener).map(|l| l.dialect().clone())
        else {
            return;
        };
        let refusal = match self.census.check(&credentials, &self.opts) {
            Err(status) => Some(status),
            Ok(()) => self.handler.accept(&credentials).err().map(Status::from),
        };
        if let Some(status) = refusal {
            self.remote.count_rejected(status);
            if let Some(ended) = self
                .handshakes
                .refuse_libqb(slot, status.errno(), &self.epoll)
            {
                self.end_handshake(ended);
            }
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        let max_msg_size = libqb_size(&self.opts, request.max_msg_size);
        let auth = match self.handler.ring_auth(&credentials) {
            // libqb's default: the files are the client's.
            a if a == RingAuth::default() => RingAuth::owned_by(&credentials),
            a => a,
        };
        let client = QbClient {
            pid: credentials.pid,
            auth,
        };
        let Some(stream) = self.handshakes.stream(slot).cloned() else {
            return;
        };
        let offer = match transport {
            QbTransport::Shm => qb::set::offer_shm(
                &self.opts.libqb_dir,
                &service,
                client,
                id,
                id,
                max_msg_size,
                &stream,
                self.flow.level(),
            ),
            QbTransport::Socket => qb::set::offer_socket(
                &self.opts.libqb_dir,
                &service,
                client,
                id,
                id,
                max_msg_size,
                self.flow.level(),
            ),
        };
        let offer = match offer {
            Ok(offer) => offer,
            Err(e) => {
                self.hooks.fault(None, FaultKind::ChannelsFailed(e.kind()));
                self.remote.count_rejected(Status::Resources);
                let errno = e.raw_os_error().unwrap_or(nix::errno::Errno::ENOMEM as i32);
                if let Some(ended) = self.handshakes.refuse_libqb(slot, errno, &self.epoll) {
                    self.end_handshake(ended);
                }
                return;
            }
        };
        match self
            .handshakes
            .answer_libqb(slot, offer.answer(), &self.epoll)
        {
            Ok(sock) => {
                self.census.admit(&credentials);
                let made = About {
                    id,
                    credentials,
                    max_message: offer.max_message(),
                    transport: match transport {
                        QbTransport::Shm => Transport::Shm,
                        QbTransport::Socket => Transport::Socket,
                    },
                    libqb: Some(transport),
                    event_queue: self.opts.event_queue,
                };
                let (side, response, event) = offer.accept();
                self.admit(sock, made, side, (response, event));
            }
            Err(ended) => {
                // The offer's rings and files go with it.
                drop(offer);
                if let Some(ended) = ended {
                    self.remote.count_abandoned();
                    self.end_handshake(ended);
                }
            }
        }
    }

    /// Closes a connection: handlers `connection_closed`, then release of
    /// everything, then `connection_destroyed`. A fault (the client broke
    /// the protocol, its socket failed) goes to the error hook first.
    fn close_conn(&mut self, slot: usize, closing: Closing) {
        let Some(conn) = self.conns.remove(slot, &self.epoll) else {
            return;
        };
        if let Closing::Fault(kind) = closing {
            self.hooks.fault(Some(&conn.handle), kind);
        }
        self.census.release(&conn.handle.credentials());
        // The channels closed before anyone hears of it: from here every
        // send fails with `Disconnected` (as `connection_closed`
        // promises), and a thread blocked sending wakes.
        conn.close();
        let handle = conn.handle.clone();
        handle.set_close_reason(closing.reason());
        event!(
            info,
            conn = handle.id(),
            reason = %closing.reason(),
            "connection closed"
        );
        self.registry.lock().remove(&handle.id());
        self.handler.connection_closed(&handle);
        conn.release();
        self.remote.count_closed();
        self.handler.connection_destroyed(&handle);
        self.admit_waiting();
        if self.conns.len() == 0 {
            if let Some(idle) = &mut self.idle {
                idle.set(false);
            }
        }
        self.resume_listener();
    }

    fn resume_listener(&mut self) {
        for l in &mut self.listeners {
            l.resume(&self.epoll);
        }
    }

    pub(crate) fn close_all(&mut self) {
        for slot in 0..self.conns.slots() {
            self.close_conn(slot, Closing::Shutdown);
        }
        for slot in 0..self.handshakes.slots() {
            if let Some(ended) = self.handshakes.end(slot, &self.epoll) {
                self.end_handshake(ended);
            }
        }
    }

    #[cfg(feature = "tokio")]
    pub(crate) fn is_shutdown(&self) -> bool {
        self.remote.is_shutdown()
    }
}

/// The message size (libqb's, headers included) a libqb client that
/// asked for `wanted` gets: libqb's rule (the larger of the wish and the
/// server's enforced size: here `min_message`), capped where ringlink
/// caps payloads (`max_message`), headers added.
fn libqb_size(opts: &ServiceOptions, wanted: u32) -> u32 {
    let header = ringlink_common::qb::RESPONSE_HEADER_LEN;
    let floor = opts.min_message + header;
    let ceiling = opts.max_message.max(opts.min_message) + header;
    (wanted as usize)
        .max(floor)
        .min(ceiling)
        .min(u32::MAX as usize) as u32
}

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

fn epoll_timeout(wait: Option<Duration>) -> EpollTimeout {
    match wait {
        None => EpollTimeout::NONE,
        Some(d) => EpollTimeout::try_from(ringlink_channel::wait::millis_ceil(d))
            .unwrap_or(EpollTimeout::NONE),
    }
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
