//! The client's public API: connecting, and the blocking calls of a
//! connected client, as loops over the engine's attempts and waits
//! (`engine.rs`).

use std::collections::VecDeque;
use std::fmt;
use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use ringlink_common::fdpass::PeerFds;
use ringlink_common::time::deadline_in;
use ringlink_common::wire::Transport;
use ringlink_common::{Credentials, Error, Result, ServiceAddr};

use crate::connect;
use crate::engine::{Engine, Wait};
use crate::{ConnectOptions, Message};

/// A connection to a ringlink service. `Send`, not `Sync`: one thread
/// drives it at a time.
///
/// # Examples
///
/// A client of an echo service (here on a thread of this program):
///
/// ```
/// use ringlink_ipcc::{Client, ConnectOptions, ServiceAddr};
/// use std::time::Duration;
///
/// # fn main() -> ringlink_ipcc::Result<()> {
/// # use ringlink_ipcs::{Dispatch, Service, ServiceOptions};
/// # let addr = ringlink_ipcc::ServiceAddr::named(&format!("ringlink-doc-{}", std::process::id()));
/// # let table = Dispatch::new().on(1, |c, r| { let _ = c.respond(r.seq(), 1, r.payload()); });
/// # let mut service = Service::bind(addr.clone(), "echo", ServiceOptions::default(), table)?;
/// # let control = service.control_handle();
/// # let server = std::thread::spawn(move || service.run());
/// # /*
/// let addr = ServiceAddr::named("ringlink-echo");
/// # */
/// let opts = ConnectOptions::new("echo").wait_for_server(true); // start-up order does not matter
/// let mut client = Client::connect(&addr, &opts)?;
/// let mut buf = vec![0u8; client.max_message()];
/// let reply = client.send_recv(1, b"hello", &mut buf, Some(Duration::from_secs(5)))?;
/// assert_eq!(&buf[..reply.len], b"hello");
/// # control.shutdown();
/// # server.join().expect("server thread")?;
/// # Ok(())
/// # }
/// ```
pub struct Client {
    engine: Engine,
    id: u64,
    server: Credentials,
    /// Responses read while `send_recv` looked for another sequence
    /// (never more than the requests sent: the engine checks).
    stash: VecDeque<(Message, Vec<u8>, PeerFds)>,
}

/// A call's timeout, which reads the clock only once the call has to
/// wait: a send that finds room and a receive that finds its message read
/// no clock (a clock read costs as much as a small message). The timeout
/// runs from that first wait.
#[derive(Clone, Copy, Debug)]
struct Due {
    timeout: Option<Duration>,
    /// Fixed at the first wait (`None` also for no timeout, or one too
    /// far to name: forever).
    deadline: Option<Instant>,
}

impl Due {
    fn new(timeout: Option<Duration>) -> Due {
        Due {
            timeout,
            deadline: None,
        }
    }

    /// `Some(ZERO)`: the call never waits.
    fn is_now(&self) -> bool {
        self.timeout == Some(Duration::ZERO)
    }

    /// Whether the time is up, fixing the deadline at the first look
    /// (which is never too late, unless the timeout is zero).
    fn expired(&mut self) -> bool {
        match (self.timeout, self.deadline) {
            (Some(Duration::ZERO), _) => true,
            (None, _) => false,
            (Some(_), Some(d)) => Instant::now() >= d,
            (Some(t), None) => {
                self.deadline = Instant::now().checked_add(t);
                false
            }
        }
    }

    /// The deadline to wait until (`None`: forever); fixed by
    /// [`expired`](Self::expired), which comes first.
    fn deadline(&mut self) -> Option<Instant> {
        if self.deadline.is_none() {
            self.expired();
        }
        self.deadline
    }
}

impl Client {
    /// Connects to the service at `addr` and runs the handshake.
    ///
    /// Returns as soon as the client has sent its confirmation: the
    /// server's `connection_created` may run after the client's first
    /// sends (requests sent meanwhile wait in the ring, and are taken in
    /// order once it has run).
    ///
    /// # Errors
    ///
    /// [`Error::NoServer`] if nobody listens (after `server_wait`, with
    /// `wait_for_server`); [`Error::Rejected`] with the server's reason;
    /// [`Error::TimedOut`]; [`Error::Protocol`] if the server's answer or
    /// its rings are malformed; [`Error::Io`] (`PermissionDenied` when
    /// the server is not of [`ConnectOptions::server_uid`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringlink_ipcc::{Client, ConnectOptions, Error, ServiceAddr, Status};
    /// use std::time::Duration;
    ///
    /// # fn main() -> ringlink_ipcc::Result<()> {
    /// # use ringlink_ipcs::{Dispatch, Service, ServiceOptions};
    /// # let addr = ringlink_ipcc::ServiceAddr::named(&format!("ringlink-doc-{}", std::process::id()));
    /// # let table = Dispatch::new().on(1, |c, r| { let _ = c.respond(r.seq(), 1, r.payload()); });
    /// # let mut service = Service::bind(addr.clone(), "echo", ServiceOptions::default(), table)?;
    /// # let control = service.control_handle();
    /// # let server = std::thread::spawn(move || service.run());
    /// // Nobody listens there: NoServer at once (after `server_wait` with `wait_for_server`).
    /// let nobody = ServiceAddr::named(&format!("ringlink-doc-nobody-{}", std::process::id()));
    /// assert!(matches!(Client::connect(&nobody, &ConnectOptions::new("echo")), Err(Error::NoServer)));
    ///
    /// // A server of another protocol refuses the handshake, and says why.
    /// match Client::connect(&addr, &ConnectOptions::new("not-echo")) {
    ///     Err(Error::Rejected(status)) => assert_eq!(status, Status::UnknownProtocol),
    ///     other => panic!("{other:?}"),
    /// }
    ///
    /// let opts = ConnectOptions::new("echo")
    ///     .wait_for_server(true)
    ///     .server_wait(Duration::from_secs(2))
    ///     .max_message(1 << 20); // the largest message this client needs
    /// let client = Client::connect(&addr, &opts)?;
    /// println!("connection {}: up to {} bytes", client.id(), client.max_message());
    /// # drop(client);
    /// # control.shutdown();
    /// # server.join().expect("server thread")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn connect(addr: &ServiceAddr, opts: &ConnectOptions) -> Result<Client> {
        let sock =
            connect::connect_socket(addr, opts.wait_for_server, connect::wait_deadline(opts))?;
        connect::check_server_uid(&sock, opts)?;
        Client::handshake(sock, opts, deadline_in(opts.timeout))
    }

    /// Connects to a libqb service by its name: a server built on libqb
    /// (`qb_ipcs_create(service, ...)`) such as Corosync's or Pacemaker's
    /// daemons, or a ringlink service that listens with
    /// `Service::listen_libqb`, over the transport the server chooses
    /// (`docs/LIBQB.md`). `opts.protocol` and `opts.transport` are not
    /// used; `opts.max_message` is the largest payload wanted.
    ///
    /// The calls are the same, with libqb's semantics where they differ:
    /// a libqb server's responses carry no sequence number, so
    /// [`recv`](Self::recv) and [`send_recv`](Self::send_recv) return the
    /// next response in the channel (as `qb_ipcc_recv` and
    /// `qb_ipcc_sendv_recv` do), numbered in the order they came. A libqb
    /// server signals a response only through its ring's semaphore: a
    /// waiting call sleeps on it, looking at the server's liveness every
    /// 100 ms (libqb's own client would wait forever for a dead server),
    /// and the client's fd ([`AsFd`]) becomes readable for events and
    /// the server's leaving, not for responses.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect); a refusal's errno becomes
    /// [`Error::Rejected`] (`EACCES`: `PermissionDenied`, ...) or
    /// [`Error::Io`].
    pub fn connect_libqb(service: &str, opts: &ConnectOptions) -> Result<Client> {
        let sock = connect::connect_libqb_socket(
            service,
            opts.wait_for_server,
            connect::wait_deadline(opts),
        )?;
        connect::check_server_uid(&sock, opts)?;
        let deadline = deadline_in(opts.timeout);
        let connected = connect::handshake_libqb(sock, opts, &opts.libqb_dir, deadline)
            .inspect_err(|_e| event!(info, service, error = %_e, "libqb connection failed"))?;
        let (id, server) = (connected.id, connected.server);
        event!(
            debug,
            conn = id,
            server_pid = server.pid,
            service,
            "connected to a libqb server"
        );
        Ok(Client {
            engine: Engine::new(connected, Transport::Shm, opts.spin, opts.fc_enable_max)?,
            id,
            server,
            stash: VecDeque::new(),
        })
    }

    /// Runs the handshake over an already-connected socket: the other end
    /// of a `socketpair` whose first end the server took with
    /// `Service::adopt` (no listening name involved). `opts.timeout`
    /// bounds the handshake.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect), less [`Error::NoServer`].
    pub fn connect_stream(sock: UnixStream, opts: &ConnectOptions) -> Result<Client> {
        sock.set_nonblocking(false)?;
        connect::check_server_uid(&sock, opts)?;
        Client::handshake(sock, opts, deadline_in(opts.timeout))
    }

    fn handshake(sock: UnixStream, opts: &ConnectOptions, deadline: Instant) -> Result<Client> {
        let connected = connect::handshake(sock, opts, deadline).inspect_err(|_e| {
            event!(info, protocol = %opts.protocol, error = %_e, "connection failed");
        })?;
        let (id, server) = (connected.id, connected.server);
        event!(
            debug,
            conn = id,
            server_pid = server.pid,
            transport = ?opts.transport,
            max_message = connected.max_message,
            "connected"
        );
        Ok(Client {
            engine: Engine::new(connected, opts.transport, opts.spin, opts.fc_enable_max)?,
            id,
            server,
            stash: VecDeque::new(),
        })
    }

    /// The server-assigned connection id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The transport the messages travel over.
    pub fn transport(&self) -> Transport {
        self.engine.transport()
    }

    /// Largest message payload, either way (the negotiated buffer size).
    pub fn max_message(&self) -> usize {
        self.engine.max_message()
    }

    /// The negotiated buffer size: the same as
    /// [`max_message`](Self::max_message) (libqb's name for it).
    pub fn buffer_size(&self) -> usize {
        self.engine.max_message()
    }

    /// The server process's kernel-verified credentials. Over
    /// [`connect_stream`](Self::connect_stream) these are the credentials
    /// the kernel recorded for the socketpair: those of the process that
    /// created it.
    pub fn server_credentials(&self) -> Credentials {
        self.server
    }

    /// Whether the connection is still up: checks the socket for a
    /// hang-up and the rings for a close, without waiting.
    pub fn is_connected(&self) -> bool {
        self.engine.is_connected()
    }

    /// Serves the server's calls (its `Connection::call`) with `handler`,
    /// which returns the reply's error code (0: none) and payload (cut to
    /// the negotiated maximum). Calls are served from this client's own
    /// receiving: `recv`, `send_recv`, `event_recv` (each serves the calls
    /// waiting before it looks for its message, and wakes for them while it
    /// waits) and [`serve_calls`](Self::serve_calls), for an application
    /// that polls the client's fd. Without a handler, a call is answered
    /// with `ERROR_UNKNOWN_ID`, never left unanswered. Replaces any earlier
    /// handler.
    pub fn set_call_handler(
        &mut self,
        handler: impl FnMut(&crate::Call<'_>) -> (i32, Vec<u8>) + Send + 'static,
    ) {
        self.engine.set_call_handler(Some(Box::new(handler)));
    }

    /// Serves the server's calls waiting now, without waiting; returns
    /// how many.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`]; [`Error::Protocol`].
    pub fn serve_calls(&mut self) -> Result<usize> {
        self.engine.serve_calls()
    }

    /// A handle that makes this client's waiting call (`recv`,
    /// `send_recv`, `event_recv`, a send waiting for room), or its next
    /// one, return [`Error::Interrupted`], with nothing lost: for Ctrl-C
    /// in a program that blocks in the client. Safe to use from a signal
    /// handler (it stores a flag and writes to an eventfd of this process)
    /// and from any thread:
    ///
    /// ```
    /// use ringlink_ipcc::{Client, ConnectOptions, Error};
    /// use signal_hook::consts::{SIGINT, SIGTERM};
    ///
    /// fn main() -> Result<(), Box<dyn std::error::Error>> {
    ///     // Caught from the start: a Ctrl-C while connecting is kept.
    ///     let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    /// #   use ringlink_ipcs::{Dispatch, Service, ServiceOptions};
    /// #   let addr = ringlink_ipcc::ServiceAddr::named(&format!("ringlink-doc-{}", std::process::id()));
    /// #   let table = Dispatch::new().on(1, |c, r| { let _ = c.respond(r.seq(), 1, r.payload()); });
    /// #   let mut service = Service::bind(addr.clone(), "echo", ServiceOptions::default(), table)?;
    /// #   let control = service.control_handle();
    /// #   let server = std::thread::spawn(move || service.run());
    ///     let mut client = Client::connect(&addr, &ConnectOptions::new("echo"))?;
    ///     let stop = client.interrupter();
    ///     std::thread::spawn(move || {
    ///         if signals.forever().next().is_some() {
    ///             stop.interrupt();
    ///         }
    ///     });
    /// #   signal_hook::low_level::raise(SIGINT)?; // as if Ctrl-C were pressed
    ///     let mut buf = vec![0u8; client.max_message()];
    ///     loop {
    ///         match client.event_recv(&mut buf, None) {
    ///             Ok(m) => println!("event {}", m.id),
    ///             Err(Error::Interrupted) => break, // nothing lost: the client is usable
    ///             Err(e) => return Err(e.into()),
    ///         }
    ///     }
    ///     let m = client.send_recv(1, b"still here", &mut buf, None)?;
    ///     assert_eq!(&buf[..m.len], b"still here");
    /// #   control.shutdown();
    /// #   server.join().expect("server thread")?;
    ///     Ok(())
    /// }
    /// ```
    pub fn interrupter(&self) -> crate::Interrupter {
        self.engine.interrupter()
    }

    /// The connection's counters as this client sees them (the mirror of
    /// the server's `Connection::stats`); with `clear`, they restart from
    /// zero.
    pub fn stats(&mut self, clear: bool) -> crate::ClientStats {
        self.engine.stats(clear)
    }

    /// Calls `hook` for every request sent and every response or event
    /// taken (lwmsg traces both directions), on the calling thread,
    /// inside the call that sent or took it: keep it short. Replaces any
    /// earlier hook.
    pub fn set_trace_hook(&mut self, hook: impl FnMut(&crate::ClientTrace) + Send + 'static) {
        self.engine.set_trace(Some(Box::new(hook)));
    }

    /// Sends a request without waiting; returns its sequence number, which
    /// the response will carry.
    ///
    /// Over the socket transport, a request larger than the socket takes
    /// at once may be committed with its tail still in the client (see
    /// [`flush`](Self::flush)): it goes whole with this client's next
    /// calls, and `flush` makes sure of it.
    ///
    /// # Errors
    ///
    /// [`Error::MessageTooLarge`] (nothing sent); [`Error::WouldBlock`] if
    /// the request ring is full (nothing sent); [`Error::Disconnected`].
    ///
    /// # Examples
    ///
    /// Several requests in flight, then their answers, matched by sequence
    /// number:
    ///
    /// ```
    /// use ringlink_ipcc::{Client, ConnectOptions};
    /// use std::time::Duration;
    ///
    /// # fn main() -> ringlink_ipcc::Result<()> {
    /// # use ringlink_ipcs::{Dispatch, Service, ServiceOptions};
    /// # let addr = ringlink_ipcc::ServiceAddr::named(&format!("ringlink-doc-{}", std::process::id()));
    /// # let table = Dispatch::new().on(1, |c, r| { let _ = c.respond(r.seq(), 1, r.payload()); });
    /// # let mut service = Service::bind(addr.clone(), "echo", ServiceOptions::default(), table)?;
    /// # let control = service.control_handle();
    /// # let server = std::thread::spawn(move || service.run());
    /// let mut client = Client::connect(&addr, &ConnectOptions::new("echo"))?;
    /// let seqs = [client.send(1, b"a")?, client.send(1, b"b")?, client.send(1, b"c")?];
    ///
    /// let mut buf = vec![0u8; client.max_message()];
    /// for (seq, expected) in seqs.into_iter().zip([b"a", b"b", b"c"]) {
    ///     let m = client.recv(&mut buf, Some(Duration::from_secs(5)))?;
    ///     assert_eq!((m.seq, &buf[..m.len]), (seq, &expected[..]));
    /// }
    /// # control.shutdown();
    /// # server.join().expect("server thread")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn send(&mut self, id: i32, payload: &[u8]) -> Result<u64> {
        self.send_vectored(id, &[IoSlice::new(payload)], Some(Duration::ZERO))
    }

    /// Sends a request, waiting up to `timeout` (`None`: forever) for room.
    /// With a timeout other than zero it returns only once the whole
    /// request left (over the socket transport, a request larger than the
    /// socket takes at once goes as the server reads it: see
    /// [`flush`](Self::flush)); every send that waits, `send_recv` and the
    /// `send_oneway` family included, does the same.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send), with [`Error::TimedOut`] instead of
    /// `WouldBlock` for a non-zero timeout. `TimedOut` (or
    /// [`Error::Interrupted`]) most often means that nothing was sent;
    /// over the socket transport it may instead come once the request was
    /// committed, with its tail not yet gone: the request still goes
    /// whole, with this client's next calls or [`flush`](Self::flush),
    /// and must not be sent again. [`unsent_request`](Self::unsent_request),
    /// asked right after, says which.
    pub fn send_timeout(
        &mut self,
        id: i32,
        payload: &[u8],
        timeout: Option<Duration>,
    ) -> Result<u64> {
        self.send_vectored(id, &[IoSlice::new(payload)], timeout)
    }

    /// Sends a request whose payload is the concatenation of `parts`.
    ///
    /// # Errors
    ///
    /// As [`send_timeout`](Self::send_timeout).
    pub fn send_vectored(
        &mut self,
        id: i32,
        parts: &[IoSlice<'_>],
        timeout: Option<Duration>,
    ) -> Result<u64> {
        self.send_with(id, parts, &mut Due::new(timeout), false, &[])
    }

    /// Sends a one-way request (Legato's `le_msg_Send`): the server's
    /// handler sees `Request::needs_response` false, and a response to it is
    /// refused on the server (`Error::OneWay`), so nothing comes back to
    /// read. It takes no sequence number. Waits up to `timeout` (`None`:
    /// forever) for room, as [`send_timeout`](Self::send_timeout). Over a
    /// libqb server, whose protocol has no such mark, it is a plain
    /// request: the server decides whether to answer it.
    ///
    /// # Errors
    ///
    /// As [`send_timeout`](Self::send_timeout).
    ///
    /// # Examples
    ///
    /// Fire and forget: nothing comes back to read, and requests are taken in
    /// order, so a request that needs an answer after them is answered after
    /// they were handled.
    ///
    /// ```
    /// use ringlink_ipcc::{Client, ConnectOptions};
    /// use std::time::Duration;
    ///
    /// const LOG: i32 = 2;
    /// const FLUSH: i32 = 3;
    ///
    /// # fn main() -> ringlink_ipcc::Result<()> {
    /// # use ringlink_ipcs::{Dispatch, Service, ServiceOptions};
    /// # use std::sync::atomic::{AtomicU32, Ordering};
    /// # let addr = ringlink_ipcc::ServiceAddr::named(&format!("ringlink-doc-{}", std::process::id()));
    /// # let lines = std::sync::Arc::new(AtomicU32::new(0));
    /// # let seen = lines.clone();
    /// # let table = Dispatch::new()
    /// #     .on(LOG, move |_, r| { assert!(!r.needs_response()); lines.fetch_add(1, Ordering::Relaxed); })
    /// #     .on(FLUSH, move |c, r| { let _ = c.respond(r.seq(), FLUSH, &seen.load(Ordering::Relaxed).to_le_bytes()); });
    /// # let mut service = Service::bind(addr.clone(), "log", ServiceOptions::default(), table)?;
    /// # let control = service.control_handle();
    /// # let server = std::thread::spawn(move || service.run());
    /// let mut client = Client::connect(&addr, &ConnectOptions::new("log"))?;
    /// for line in ["started", "working", "done"] {
    ///     client.send_oneway(LOG, line.as_bytes(), None)?; // waits for room, if need be
    /// }
    /// let mut buf = [0u8; 4];
    /// client.send_recv(FLUSH, b"", &mut buf, Some(Duration::from_secs(5)))?;
    /// assert_eq!(u32::from_le_bytes(buf), 3); // the server had them all
    /// # control.shutdown();
    /// # server.join().expect("server thread")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn send_oneway(
        &mut self,
        id: i32,
        payload: &[u8],
        timeout: Option<Duration>,
    ) -> Result<()> {
        self.send_oneway_vectored(id, &[IoSlice::new(payload)], timeout)
    }

    /// [`send_oneway`](Self::send_oneway) of a payload made of several
    /// slices.
    ///
    /// # Errors
    ///
    /// As [`send_timeout`](Self::send_timeout).
    pub fn send_oneway_vectored(
        &mut self,
        id: i32,
        parts: &[IoSlice<'_>],
        timeout: Option<Duration>,
    ) -> Result<()> {
        self.send_with(id, parts, &mut Due::new(timeout), true, &[])
            .map(drop)
    }

    /// Sends a request carrying `fds` (Legato's `le_msg_SetFd`, lwmsg's
    /// fd fields), waiting up to `timeout` (`None`: forever) for room:
    /// the server's handler takes them with `Request::take_fds`, in the
    /// order given. The kernel passes them (`SCM_RIGHTS`): the server gets
    /// its own copies, and this client keeps its own. The server must
    /// accept them: at most [`server_fd_terms`](Self::server_fd_terms)'
    /// `per_message`, and no directory or `O_PATH` fd unless its terms
    /// say so (a libqb server takes none). Over shared memory they travel
    /// on the connection's socket ahead of the message, and the server's
    /// limit on fds in flight holds the send back as a full ring would.
    ///
    /// # Errors
    ///
    /// As [`send_timeout`](Self::send_timeout); [`Error::FdsNotAccepted`]
    /// or [`Error::FdRefused`] when the server's terms do not take them
    /// (nothing sent).
    ///
    /// # Examples
    ///
    /// A file handed to a log service, which writes into it (the service
    /// takes up to one fd per request: `ServiceOptions::accept_fds`):
    ///
    /// ```
    /// use ringlink_ipcc::{Client, ConnectOptions, Error, FdTerms};
    /// use std::io::{Read, Seek};
    /// use std::os::fd::AsFd;
    /// use std::time::Duration;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use ringlink_ipcs::{Dispatch, Service, ServiceOptions};
    /// # use std::io::Write;
    /// # let addr = ringlink_ipcc::ServiceAddr::named(&format!("ringlink-doc-{}", std::process::id()));
    /// # let table = Dispatch::new().on(1, |c, r| {
    /// #     if let Some(fd) = r.take_fds().pop() { let _ = std::fs::File::from(fd).write_all(b"logged\n"); }
    /// #     let _ = c.respond(r.seq(), 1, b"");
    /// # });
    /// # let opts = ServiceOptions::default().accept_fds(FdTerms::per_message(1));
    /// # let mut service = Service::bind(addr.clone(), "logd", opts, table)?;
    /// # let control = service.control_handle();
    /// # let server = std::thread::spawn(move || service.run());
    /// let mut client = Client::connect(&addr, &ConnectOptions::new("logd"))?;
    /// assert_eq!(client.server_fd_terms().per_message, 1);
    ///
    /// let path = std::env::temp_dir().join(format!("app-{}.log", std::process::id()));
    /// let mut log = std::fs::File::options().read(true).write(true).create(true).open(&path)?;
    /// std::fs::remove_file(&path)?; // the open file lives on
    /// client.send_with_fds(1, b"log here", &[log.as_fd()], None)?;
    /// let mut buf = [0u8; 16];
    /// client.recv(&mut buf, Some(Duration::from_secs(5)))?; // written by now
    ///
    /// let mut text = String::new();
    /// log.rewind()?; // the service's copy shares the file's offset
    /// log.read_to_string(&mut text)?;
    /// assert_eq!(text, "logged\n");
    ///
    /// // Two are more than the service takes: refused, nothing sent.
    /// let two = [log.as_fd(), log.as_fd()];
    /// assert!(matches!(
    ///     client.send_with_fds(1, b"", &two, None),
    ///     Err(Error::FdsNotAccepted { count: 2, max: 1 })
    /// ));
    /// # control.shutdown();
    /// # server.join().expect("server thread")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn send_with_fds(
        &mut self,
        id: i32,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
        timeout: Option<Duration>,
    ) -> Result<u64> {
        self.send_with(
            id,
            &[IoSlice::new(payload)],
            &mut Due::new(timeout),
            false,
            fds,
        )
    }

    /// [`send_oneway`](Self::send_oneway) with `fds`, as
    /// [`send_with_fds`](Self::send_with_fds).
    ///
    /// # Errors
    ///
    /// As [`send_with_fds`](Self::send_with_fds).
    pub fn send_oneway_with_fds(
        &mut self,
        id: i32,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
        timeout: Option<Duration>,
    ) -> Result<()> {
        self.send_with(
            id,
            &[IoSlice::new(payload)],
            &mut Due::new(timeout),
            true,
            fds,
        )
        .map(drop)
    }

    /// Reserves room for a request of `len` payload bytes, to be written
    /// in place and sent with [`RequestSlot::commit`] (Legato's model:
    /// the message is built in the messaging buffer): the slot
    /// dereferences to the payload's bytes in the request ring (whatever
    /// they held before: write them all). Dropping the slot uncommitted
    /// sends nothing, so that a request whose building fails can be given
    /// up. Waits up to `timeout` (`None`: forever) for room, as
    /// [`send_timeout`](Self::send_timeout). The slot borrows the client:
    /// nothing else is sent meanwhile.
    ///
    /// Over sockets and to a libqb server the slot is a buffer of the
    /// client's: the reserve does not wait, and the commit sends the
    /// buffer, waiting up to `timeout` for room.
    ///
    /// The bytes live in memory the server can read as they are written;
    /// it sees them only once the request is committed.
    ///
    /// # Errors
    ///
    /// As [`send_timeout`](Self::send_timeout).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use ringlink_ipcc::{Client, ConnectOptions, ServiceAddr};
    /// # fn main() -> ringlink_ipcc::Result<()> {
    /// # let mut client = Client::connect(&ServiceAddr::named("store"), &ConnectOptions::new("store"))?;
    /// # let record = [0u8; 16];
    /// # fn encode(r: &[u8], out: &mut [u8]) -> Result<(), ()> { out.copy_from_slice(r); Ok(()) }
    /// let mut slot = client.reserve(1, record.len(), None)?;
    /// if encode(&record, &mut slot).is_ok() {
    ///     let seq = slot.commit()?; // sent; its response carries `seq`
    /// #   let _ = seq;
    /// } // else dropped: nothing was sent
    /// # Ok(())
    /// # }
    /// ```
    pub fn reserve(
        &mut self,
        id: i32,
        len: usize,
        timeout: Option<Duration>,
    ) -> Result<RequestSlot<'_>> {
        if !self.engine.writes_in_place() {
            let buf = self.buffer(len)?;
            return Ok(RequestSlot {
                client: self,
                room: Room::Buffer { id, buf, timeout },
            });
        }
        let mut due = Due::new(timeout);
        loop {
            if let Some(r) = self.engine.try_reserve(id, len)? {
                return Ok(RequestSlot {
                    client: self,
                    room: Room::Ring(r),
                });
            }
            if due.expired() {
                return Err(self.out_of_time(&due));
            }
            self.engine.wait(Wait::Space, due.deadline())?;
        }
    }

    /// Sends a request of `len` payload bytes written in place: `fill` is
    /// called once, on the payload's bytes in the request ring (whatever
    /// they held before: write them all), once there is room, and the
    /// request goes (Legato's model: the message is built in the
    /// messaging buffer). No copy of the payload is made over shared
    /// memory; over sockets and to a libqb server `fill` writes into a
    /// buffer that is then sent. Waits up to `timeout` (`None`: forever)
    /// for room; returns the request's sequence number.
    ///
    /// The bytes live in memory the server can read as they are written;
    /// it sees them only once the request is published.
    ///
    /// # Errors
    ///
    /// As [`send_timeout`](Self::send_timeout) (`fill` is not called when
    /// nothing is sent).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use ringlink_ipcc::{Client, ConnectOptions, ServiceAddr};
    /// # fn main() -> ringlink_ipcc::Result<()> {
    /// # let mut client = Client::connect(&ServiceAddr::named("store"), &ConnectOptions::new("store"))?;
    /// // A 64 KiB block, generated straight into the ring.
    /// client.send_in_place(1, 64 << 10, None, |buf| {
    ///     for (i, b) in buf.iter_mut().enumerate() {
    ///         *b = i as u8;
    ///     }
    /// })?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn send_in_place(
        &mut self,
        id: i32,
        len: usize,
        timeout: Option<Duration>,
        mut fill: impl FnMut(&mut [u8]),
    ) -> Result<u64> {
        if !self.engine.writes_in_place() {
            let buf = self.filled(len, &mut fill)?;
            return self.send_vectored(id, &[IoSlice::new(&buf)], timeout);
        }
        self.until_sent(timeout, |engine| {
            engine.try_send_in_place(id, len, &mut fill)
        })
    }

    /// Receives the next response in place: `read` gets its header fields
    /// and its payload where it lies (the response ring, or over sockets
    /// the reassembly buffer), and its room goes back to the server when
    /// `read` returns; no copy is made. Waits up to `timeout`. Responses
    /// that [`send_recv`](Self::send_recv) set aside for others come first
    /// (from where they were kept). The fds, if any, are taken with
    /// [`take_fds`](Self::take_fds) afterwards.
    ///
    /// The payload lives in memory the server can write: a server
    /// breaking the protocol could change it while `read` looks, so
    /// validate it as any input and read each value once.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv), without `BufferTooSmall`.
    pub fn recv_in_place<R>(
        &mut self,
        timeout: Option<Duration>,
        read: impl FnOnce(&Message, &[u8]) -> R,
    ) -> Result<R> {
        self.recv_in_place_by(&mut Due::new(timeout), read)
    }

    /// [`recv_in_place`](Self::recv_in_place) by `due`: a response kept
    /// aside first, then the channel.
    fn recv_in_place_by<R>(
        &mut self,
        due: &mut Due,
        read: impl FnOnce(&Message, &[u8]) -> R,
    ) -> Result<R> {
        if let Some((msg, data, fds)) = self.stash.pop_front() {
            self.engine.hold_fds(fds);
            return Ok(read(&msg, &data));
        }
        self.read_in_place_by(Wait::Response, due, read)
    }

    /// [`recv_in_place`](Self::recv_in_place) for the next event.
    ///
    /// # Errors
    ///
    /// As [`event_recv`](Self::event_recv), without `BufferTooSmall`.
    pub fn event_recv_in_place<R>(
        &mut self,
        timeout: Option<Duration>,
        read: impl FnOnce(&Message, &[u8]) -> R,
    ) -> Result<R> {
        self.read_in_place(Wait::Event, timeout, read)
    }

    /// Sends a request of `len` payload bytes written in place by `fill`
    /// (as [`send_in_place`](Self::send_in_place)) and reads its
    /// response in place with `read` (as
    /// [`recv_in_place`](Self::recv_in_place)): the zero-copy
    /// [`send_recv`](Self::send_recv). The response is matched by
    /// sequence number; responses to other requests in flight are kept
    /// for [`recv`](Self::recv) (copied out of the ring, fds and all).
    /// `timeout` covers both halves.
    ///
    /// # Errors
    ///
    /// As [`send_in_place`](Self::send_in_place) and
    /// [`recv_in_place`](Self::recv_in_place).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringlink_ipcc::{Client, ConnectOptions};
    /// use std::time::Duration;
    ///
    /// # fn main() -> ringlink_ipcc::Result<()> {
    /// # use ringlink_ipcs::{Dispatch, Service, ServiceOptions};
    /// # let addr = ringlink_ipcc::ServiceAddr::named(&format!("ringlink-doc-{}", std::process::id()));
    /// # let table = Dispatch::new().on(1, |c, r| { let _ = c.respond(r.seq(), 1, r.payload()); });
    /// # let mut service = Service::bind(addr.clone(), "echo", ServiceOptions::default(), table)?;
    /// # let control = service.control_handle();
    /// # let server = std::thread::spawn(move || service.run());
    /// let mut client = Client::connect(&addr, &ConnectOptions::new("echo"))?;
    /// let timeout = Some(Duration::from_secs(5));
    /// // An earlier request whose answer is read later: it does not get in the way.
    /// let first = client.send(1, b"first")?;
    /// let sum = client.send_recv_in_place(
    ///     1,
    ///     4,
    ///     timeout,
    ///     |buf| buf.copy_from_slice(&[1, 2, 3, 4]), // written in the request ring
    ///     |m, payload| (m.id, payload.iter().map(|&b| u32::from(b)).sum::<u32>()),
    /// )?;
    /// assert_eq!(sum, (1, 10));
    /// let mut buf = [0u8; 16];
    /// let m = client.recv(&mut buf, timeout)?; // kept for this
    /// assert_eq!((m.seq, &buf[..m.len]), (first, &b"first"[..]));
    /// # control.shutdown();
    /// # server.join().expect("server thread")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn send_recv_in_place<R>(
        &mut self,
        id: i32,
        len: usize,
        timeout: Option<Duration>,
        mut fill: impl FnMut(&mut [u8]),
        read: impl FnOnce(&Message, &[u8]) -> R,
    ) -> Result<R> {
        let mut due = Due::new(timeout);
        let seq = if self.engine.writes_in_place() {
            self.until_sent_by(&mut due, |engine| {
                engine.try_send_in_place(id, len, &mut fill)
            })?
        } else {
            let buf = self.filled(len, &mut fill)?;
            let parts = [IoSlice::new(&buf)];
            self.until_sent_by(&mut due, |engine| engine.try_send(id, &parts, false, &[]))?
        };
        if self.engine.is_libqb() {
            // libqb's `sendv_recv`: the next response, whatever it is.
            return self.recv_in_place_by(&mut due, read);
        }
        let mut read = Some(read);
        loop {
            let mut out = None;
            let mut other = None;
            let got = self.engine.try_recv_with(false, &mut |m, payload| {
                match read.take_if(|_| m.seq == seq) {
                    Some(read) => out = Some(read(m, payload)),
                    None => other = Some(payload.to_vec()),
                }
                Ok(())
            })?;
            if let Some(msg) = got {
                if let Some(out) = out {
                    return Ok(out);
                }
                // Another request's answer: kept, with its fds, for `recv`.
                let data = other.take().unwrap_or_default();
                let fds = PeerFds::new(self.engine.take_fds());
                self.stash.push_back((msg, data, fds));
                continue;
            }
            self.wait_for_more(Wait::Response, &mut due)?;
        }
    }

    /// Where the channel does not write in place: a buffer of `len`
    /// bytes that `fill` wrote, for a plain send (refused, `fill` not
    /// called, above the negotiated maximum).
    fn filled(&self, len: usize, fill: &mut impl FnMut(&mut [u8])) -> Result<Vec<u8>> {
        let mut buf = self.buffer(len)?;
        fill(&mut buf);
        Ok(buf)
    }

    /// A zeroed buffer for a request of `len` payload bytes written where
    /// the channel does not write in place (refused above the negotiated
    /// maximum).
    fn buffer(&self, len: usize) -> Result<Vec<u8>> {
        let max = self.engine.max_message();
        if len > max {
            return Err(Error::MessageTooLarge { len, max });
        }
        Ok(vec![0u8; len])
    }

    /// Between two looks for `which` that found nothing: `TimedOut` once
    /// `due` has passed (`Disconnected` if the server is gone: a killed
    /// server closes no ring, its socket tells, looked at only here, off
    /// the hot path), else a wait until something may have come.
    fn wait_for_more(&mut self, which: Wait, due: &mut Due) -> Result<()> {
        if due.expired() {
            if !self.engine.is_connected() {
                return Err(self.engine.fail(Error::Disconnected));
            }
            return Err(Error::TimedOut);
        }
        self.engine.wait(which, due.deadline())
    }

    fn read_in_place<R>(
        &mut self,
        which: Wait,
        timeout: Option<Duration>,
        read: impl FnOnce(&Message, &[u8]) -> R,
    ) -> Result<R> {
        self.read_in_place_by(which, &mut Due::new(timeout), read)
    }

    /// [`read_in_place`](Self::read_in_place) by `due`, which a send
    /// before it may have started.
    fn read_in_place_by<R>(
        &mut self,
        which: Wait,
        due: &mut Due,
        read: impl FnOnce(&Message, &[u8]) -> R,
    ) -> Result<R> {
        let mut read = Some(read);
        let mut out = None;
        loop {
            let got = self
                .engine
                .try_recv_with(which == Wait::Event, &mut |m, payload| {
                    if let Some(read) = read.take() {
                        out = Some(read(m, payload));
                    }
                    Ok(())
                })?;
            if got.is_some() {
                return Ok(out.take().expect("read ran"));
            }
            self.wait_for_more(which, due)?;
        }
    }

    /// The fds the last response or event received carried
    /// ([`Message::fds`] of them), in their order, owned: close-on-exec,
    /// checked against this client's
    /// [`accept_fds`](crate::ConnectOptions::accept_fds) terms. Those not
    /// taken before the next receive are closed (on a thread of their
    /// own: the last close of some files waits).
    pub fn take_fds(&mut self) -> Vec<OwnedFd> {
        self.engine.take_fds()
    }

    /// What the server accepts of fds in requests, as it announced in the
    /// handshake ([`FdTerms::NONE`](crate::FdTerms::NONE) from a server
    /// that takes none, and from a libqb server).
    pub fn server_fd_terms(&self) -> crate::FdTerms {
        self.engine.server_fds()
    }

    fn send_with(
        &mut self,
        id: i32,
        parts: &[IoSlice<'_>],
        due: &mut Due,
        one_way: bool,
        fds: &[BorrowedFd<'_>],
    ) -> Result<u64> {
        // Each attempt checks the length and the connection first.
        self.until_sent_by(due, |engine| engine.try_send(id, parts, one_way, fds))
    }

    /// Makes `attempt` until it sends, waiting for room in between, up to
    /// `timeout` (`Some(ZERO)`: `WouldBlock` at once; `None`: forever).
    fn until_sent(
        &mut self,
        timeout: Option<Duration>,
        attempt: impl FnMut(&mut Engine) -> Result<Option<u64>>,
    ) -> Result<u64> {
        self.until_sent_by(&mut Due::new(timeout), attempt)
    }

    /// Makes `attempt` until it sends, waiting for room in between, by
    /// `due` (`Some(ZERO)`: `WouldBlock` at once; `None`: forever), which
    /// a receive after it may share.
    fn until_sent_by(
        &mut self,
        due: &mut Due,
        mut attempt: impl FnMut(&mut Engine) -> Result<Option<u64>>,
    ) -> Result<u64> {
        loop {
            if let Some(seq) = attempt(&mut self.engine)? {
                if self.engine.has_tail() {
                    return self.sent_with_tail(seq, due);
                }
                return Ok(seq);
            }
            if due.expired() {
                return Err(self.out_of_time(due));
            }
            self.engine.wait(Wait::Space, due.deadline())?;
        }
    }

    /// A request `seq` went in part (socket transport: the socket filled
    /// midway): committed, its tail waits. A send that waits (a timeout
    /// other than zero) waits, by `due`, for the tail to go too; one that
    /// does not leaves it for [`flush`](Self::flush) or the next call.
    #[cold]
    #[inline(never)]
    fn sent_with_tail(&mut self, seq: u64, due: &mut Due) -> Result<u64> {
        self.engine.note_tail(seq);
        if !due.is_now() {
            self.flush_by(due)?;
        }
        Ok(seq)
    }

    /// Sends what waits of the last request's tail, waiting up to
    /// `timeout` (`None`: forever; `Some(ZERO)`: one attempt, no wait) for
    /// the server to read. Returns once nothing the client sent waits in
    /// it: every request it committed is whole in the socket, where the
    /// server reads it whenever it takes requests, even after this client
    /// is gone. At once, without a system call, when nothing waits
    /// (always, over shared memory: a ring write is whole).
    ///
    /// Only over the socket transport does anything wait: a request
    /// larger than the socket takes at once (its send buffer, up to
    /// 8 MiB) goes in fragments, and when the socket fills midway, its
    /// part sent is committed and the rest, its tail, waits in the
    /// client; no other message goes before it. A send that waits (a
    /// timeout other than zero) returns only once its tail went; a send
    /// that does not ([`send`](Self::send), a timeout of zero) may leave
    /// one, and so may a waiting send that timed out or was interrupted
    /// ([`unsent_request`](Self::unsent_request) says). Every later call
    /// of this client sends more of it as the socket takes it, and a drop
    /// tries too (bounded, best effort: see [`disconnect`](Self::disconnect));
    /// this is how to be sure.
    ///
    /// The wait reads nothing: a client that has left the server's
    /// responses unread until the server stopped reading it (it reads a
    /// connection only while its answers fit) waits here, and in a
    /// waiting send's wait for its tail, until the timeout; read them
    /// first (`recv` with a zero timeout until `WouldBlock`).
    ///
    /// # Errors
    ///
    /// [`Error::WouldBlock`] (timeout zero) or [`Error::TimedOut`]: the
    /// tail still waits, and still goes later; [`Error::Interrupted`]
    /// (the same); [`Error::Disconnected`] if the server is gone before it
    /// all went (the request is lost).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use ringlink_ipcc::{Client, ConnectOptions, ServiceAddr};
    /// # use std::time::Duration;
    /// # fn main() -> ringlink_ipcc::Result<()> {
    /// # let mut client = Client::connect(&ServiceAddr::named("store"), &ConnectOptions::new("store"))?;
    /// # let blocks: Vec<Vec<u8>> = Vec::new();
    /// // Requests sent without waiting, then made sure of before going on.
    /// for block in &blocks {
    ///     client.send_oneway(1, block, Some(Duration::ZERO))?;
    /// }
    /// client.flush(Some(Duration::from_secs(5)))?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn flush(&mut self, timeout: Option<Duration>) -> Result<()> {
        self.flush_by(&mut Due::new(timeout))
    }

    /// The request whose tail still waits to be sent (socket transport;
    /// see [`flush`](Self::flush)), by its sequence number (0 for a
    /// one-way request), if one does: that request is committed and goes
    /// whole with this client's next calls. `None` when nothing waits, or
    /// what waits is a reply to one of the server's calls.
    ///
    /// Asked right after a send that waits failed with
    /// [`Error::TimedOut`] or [`Error::Interrupted`], `Some` means that
    /// this send's request was committed (do not send it again; its
    /// response, if any, comes to [`recv`](Self::recv)), unless an
    /// earlier send that did not wait left a tail that had not gone yet
    /// (a send waits for it before its own request starts; the numbers
    /// tell them apart, but for one-way requests: [`flush`](Self::flush)
    /// first). `None` means nothing of it was sent.
    pub fn unsent_request(&self) -> Option<u64> {
        self.engine.unsent_request()
    }

    /// What a wait that ran out of `due` returns: `Disconnected` if the
    /// server is gone, else `WouldBlock` (a zero timeout) or `TimedOut`.
    #[cold]
    fn out_of_time(&mut self, due: &Due) -> Error {
        if !self.engine.is_connected() {
            return self.engine.fail(Error::Disconnected);
        }
        if due.is_now() {
            Error::WouldBlock
        } else {
            Error::TimedOut
        }
    }

    /// [`flush`](Self::flush) by `due`, which a send before it may have
    /// started.
    fn flush_by(&mut self, due: &mut Due) -> Result<()> {
        loop {
            if self.engine.try_flush()? {
                return Ok(());
            }
            if due.expired() {
                return Err(self.out_of_time(due));
            }
            self.engine.wait_tail(due.deadline())?;
        }
    }

    /// Receives the next response into `buf`, waiting up to `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::TimedOut`]; [`Error::BufferTooSmall`] (the response is
    /// kept); [`Error::Disconnected`]; [`Error::Protocol`] if the server
    /// corrupted the ring.
    pub fn recv(&mut self, buf: &mut [u8], timeout: Option<Duration>) -> Result<Message> {
        self.recv_by(buf, &mut Due::new(timeout))
    }

    /// [`recv`](Self::recv) by `due`: a response `send_recv` stashed
    /// first, then the channel.
    fn recv_by(&mut self, buf: &mut [u8], due: &mut Due) -> Result<Message> {
        if let Some((msg, _, _)) = self.stash.front() {
            if msg.len > buf.len() {
                return Err(Error::BufferTooSmall { needed: msg.len });
            }
            let (msg, data, fds) = self.stash.pop_front().expect("front exists");
            buf[..msg.len].copy_from_slice(&data);
            self.engine.hold_fds(fds);
            return Ok(msg);
        }
        self.read_by(Wait::Response, buf, due)
    }

    /// Sends a request and waits for its response (matched by sequence
    /// number; responses to other requests in flight are kept for
    /// [`recv`](Self::recv)). `timeout` covers both.
    ///
    /// # Errors
    ///
    /// As [`send_timeout`](Self::send_timeout) and [`recv`](Self::recv).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringlink_ipcc::{Client, ConnectOptions, Error, ERROR_UNKNOWN_ID};
    /// use std::time::Duration;
    ///
    /// # fn main() -> ringlink_ipcc::Result<()> {
    /// # use ringlink_ipcs::{Dispatch, Service, ServiceOptions};
    /// # let addr = ringlink_ipcc::ServiceAddr::named(&format!("ringlink-doc-{}", std::process::id()));
    /// # let table = Dispatch::new().on(1, |c, r| { let _ = c.respond(r.seq(), 1, r.payload()); });
    /// # let mut service = Service::bind(addr.clone(), "echo", ServiceOptions::default(), table)?;
    /// # let control = service.control_handle();
    /// # let server = std::thread::spawn(move || service.run());
    /// let mut client = Client::connect(&addr, &ConnectOptions::new("echo"))?;
    /// // One buffer, as large as the largest answer the connection allows.
    /// let mut buf = vec![0u8; client.max_message()];
    /// let timeout = Some(Duration::from_secs(5));
    ///
    /// let m = client.send_recv(1, b"ping", &mut buf, timeout)?;
    /// assert_eq!((m.id, m.error, &buf[..m.len]), (1, 0, &b"ping"[..]));
    ///
    /// // The server's error code travels in the answer, not as an Err.
    /// let m = client.send_recv(99, b"", &mut buf, timeout)?;
    /// assert_eq!(m.error, ERROR_UNKNOWN_ID);
    ///
    /// // Larger than the connection allows: refused, nothing sent.
    /// let big = vec![0u8; client.max_message() + 1];
    /// assert!(matches!(
    ///     client.send_recv(1, &big, &mut buf, timeout),
    ///     Err(Error::MessageTooLarge { .. })
    /// ));
    /// # control.shutdown();
    /// # server.join().expect("server thread")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn send_recv(
        &mut self,
        id: i32,
        request: &[u8],
        buf: &mut [u8],
        timeout: Option<Duration>,
    ) -> Result<Message> {
        // One timeout for both halves, its clock read only if one waits.
        let mut due = Due::new(timeout);
        let parts = [IoSlice::new(request)];
        let seq = self.until_sent_by(&mut due, |engine| engine.try_send(id, &parts, false, &[]))?;
        if self.engine.is_libqb() {
            // libqb's `sendv_recv`: the next response, whatever it is.
            return self.recv_by(buf, &mut due);
        }
        loop {
            let msg = self.read_by(Wait::Response, buf, &mut due)?;
            if msg.seq == seq {
                return Ok(msg);
            }
            let fds = PeerFds::new(self.engine.take_fds());
            self.stash.push_back((msg, buf[..msg.len].to_vec(), fds));
        }
    }

    /// Receives the next event into `buf`, waiting up to `timeout`.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    ///
    /// # Examples
    ///
    /// ```
    /// use ringlink_ipcc::{Client, ConnectOptions, Error};
    /// use std::time::Duration;
    ///
    /// const TICK: i32 = 100;
    ///
    /// # fn main() -> ringlink_ipcc::Result<()> {
    /// # use ringlink_ipcs::{Connection, Handler, Request, Service, ServiceOptions};
    /// # struct Ticker;
    /// # impl Handler for Ticker {
    /// #     fn connection_created(&self, c: &Connection) { let _ = c.send_event(TICK, b"1"); }
    /// #     fn message(&self, _: &Connection, _: &Request<'_>) {}
    /// # }
    /// # let addr = ringlink_ipcc::ServiceAddr::named(&format!("ringlink-doc-{}", std::process::id()));
    /// # let mut service = Service::bind(addr.clone(), "ticker", ServiceOptions::default(), Ticker)?;
    /// # let control = service.control_handle();
    /// # let server = std::thread::spawn(move || service.run());
    /// let mut client = Client::connect(&addr, &ConnectOptions::new("ticker"))?;
    /// let mut buf = vec![0u8; client.max_message()];
    /// loop {
    ///     match client.event_recv(&mut buf, Some(Duration::from_millis(200))) {
    ///         Ok(m) => {
    ///             assert_eq!((m.id, &buf[..m.len]), (TICK, &b"1"[..]));
    ///         }
    ///         Err(Error::TimedOut) => break, // quiet for a while
    ///         // Events the server's queue dropped for this client (`ServiceOptions::event_queue`).
    ///         Err(Error::Lagged(n)) => eprintln!("{n} events missed"),
    ///         Err(e) => return Err(e), // Disconnected: the server is gone
    ///     }
    /// }
    /// # control.shutdown();
    /// # server.join().expect("server thread")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn event_recv(&mut self, buf: &mut [u8], timeout: Option<Duration>) -> Result<Message> {
        self.read(Wait::Event, buf, timeout)
    }

    /// The events, as a blocking iterator: each item waits for the next
    /// event and owns it ([`Reply`](crate::Reply): id, payload, fds).
    /// Errors are items too: [`Error::Lagged`] (events dropped here by the
    /// server) and [`Error::Interrupted`] (the client's
    /// [`Interrupter`](crate::Interrupter), e.g. on Ctrl-C) leave the
    /// iteration going, the caller decides; after a fatal error
    /// ([`Error::is_fatal`], the server gone) the iteration ends.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use ringlink_ipcc::{Client, ConnectOptions, Error, ServiceAddr};
    ///
    /// # fn main() -> ringlink_ipcc::Result<()> {
    /// let mut client = Client::connect(&ServiceAddr::named("counter"), &ConnectOptions::new("counter"))?;
    /// for event in client.events() {
    ///     match event {
    ///         Ok(e) => println!("event {}: {} bytes", e.id, e.payload.len()),
    ///         Err(Error::Lagged(n)) => println!("{n} events missed"),
    ///         Err(Error::Interrupted) => break,
    ///         Err(e) => return Err(e),
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn events(&mut self) -> EventIter<'_> {
        let buf = vec![0u8; self.engine.max_message()];
        EventIter {
            client: self,
            buf,
            done: false,
        }
    }

    /// The fds of the last message, owned, for an owned copy of it.
    fn reply(&mut self, m: Message, buf: &[u8]) -> crate::Reply {
        crate::Reply::take(m, buf, &mut self.engine)
    }

    fn read(&mut self, which: Wait, buf: &mut [u8], timeout: Option<Duration>) -> Result<Message> {
        self.read_by(which, buf, &mut Due::new(timeout))
    }

    /// [`read`](Self::read) by `due`, which a send before it may have
    /// started.
    fn read_by(&mut self, which: Wait, buf: &mut [u8], due: &mut Due) -> Result<Message> {
        loop {
            // Messages the server sent before it went away are still
            // delivered; `Disconnected` once none is left.
            if let Some(msg) = self.engine.try_recv(which == Wait::Event, buf)? {
                return Ok(msg);
            }
            self.wait_for_more(which, due)?;
        }
    }

    /// Prepares to wait on this client's fd ([`AsFd`]) in the
    /// application's own loop: returns `false` if a response or event is
    /// already waiting (read it instead of polling). The fd becomes
    /// readable when a response or event arrives or the server goes away;
    /// it may also wake spuriously.
    ///
    /// # Examples
    ///
    /// A client in a `poll(2)` loop of the application's own (here with nix's
    /// `poll`; the client's fd sits beside the application's other fds):
    ///
    /// ```
    /// use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    /// use ringlink_ipcc::{Client, ConnectOptions, Error};
    /// use std::os::fd::AsFd;
    /// use std::time::Duration;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use ringlink_ipcs::{Dispatch, Service, ServiceOptions};
    /// # let addr = ringlink_ipcc::ServiceAddr::named(&format!("ringlink-doc-{}", std::process::id()));
    /// # let table = Dispatch::new().on(1, |c, r| { let _ = c.respond(r.seq(), 1, r.payload()); });
    /// # let mut service = Service::bind(addr.clone(), "echo", ServiceOptions::default(), table)?;
    /// # let control = service.control_handle();
    /// # let server = std::thread::spawn(move || service.run());
    /// let mut client = Client::connect(&addr, &ConnectOptions::new("echo"))?;
    /// let seq = client.send(1, b"ping")?;
    /// let mut buf = vec![0u8; client.max_message()];
    /// let m = loop {
    ///     // Take what is there without waiting...
    ///     match client.recv(&mut buf, Some(Duration::ZERO)) {
    ///         Ok(m) => break m,
    ///         Err(Error::TimedOut) => {}
    ///         Err(e) => return Err(e.into()),
    ///     }
    ///     // ...and sleep on the fd only when nothing is waiting.
    ///     if client.prepare_poll() {
    ///         let mut fds = [PollFd::new(client.as_fd(), PollFlags::POLLIN)];
    ///         poll(&mut fds, PollTimeout::NONE)?;
    ///     }
    /// };
    /// assert_eq!((m.seq, &buf[..m.len]), (seq, &b"ping"[..]));
    /// # control.shutdown();
    /// # server.join().expect("server thread")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn prepare_poll(&mut self) -> bool {
        self.engine.prepare_poll()
    }

    /// The engine, for the async client.
    #[cfg(feature = "tokio")]
    pub(crate) fn into_parts(self) -> (Engine, u64, Credentials) {
        (self.engine, self.id, self.server)
    }

    /// Closes the connection. Dropping the client does the same.
    ///
    /// Every request a call returned `Ok` for is whole in the socket, and
    /// the server takes it, unless it was sent without waiting (or its
    /// waiting send timed out or was interrupted) over the socket
    /// transport and its tail had not gone yet ([`flush`](Self::flush)).
    /// Such a tail is sent here while the server reads it, but a drop
    /// waits for no server: it stops after 200 ms in which the server
    /// made no room (the kernel says so once three quarters of the
    /// socket's buffer are free), and after 1 s in all. A tail not sent by then is lost with
    /// its request (the server never takes a part of one). To be sure,
    /// [`flush`](Self::flush) with a timeout of your choice first.
    pub fn disconnect(self) {}
}

impl AsFd for Client {
    /// An epoll fd that is readable when a response or an event may be
    /// waiting or the server hung up (see
    /// [`prepare_poll`](Client::prepare_poll)).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.engine.fd()
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("max_message", &self.engine.max_message())
            .field("server", &self.server)
            .field("connected", &self.engine.connected())
            .finish_non_exhaustive()
    }
}

/// The events of a [`Client`], waited for one by one
/// ([`Client::events`]).
#[derive(Debug)]
pub struct EventIter<'a> {
    client: &'a mut Client,
    buf: Vec<u8>,
    done: bool,
}

impl Iterator for EventIter<'_> {
    type Item = Result<crate::Reply>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.client.event_recv(&mut self.buf, None) {
            Ok(m) => Some(Ok(self.client.reply(m, &self.buf))),
            Err(e) => {
                self.done = e.is_fatal();
                Some(Err(e))
            }
        }
    }
}

/// A request reserved by [`Client::reserve`]: dereferences to its payload
/// bytes, written in place (over shared memory, in the request ring);
/// [`commit`](Self::commit) sends it, and dropping it sends nothing.
#[must_use = "the request is sent only when committed"]
pub struct RequestSlot<'a> {
    client: &'a mut Client,
    room: Room,
}

/// Where a reserved request is written.
enum Room {
    /// In the request ring.
    Ring(ringlink_channel::Reserved),
    /// In a buffer sent at the commit (sockets, libqb), with what the
    /// send needs then.
    Buffer {
        id: i32,
        buf: Vec<u8>,
        timeout: Option<Duration>,
    },
}

impl RequestSlot<'_> {
    /// Sends the request as its bytes stand; returns its sequence number
    /// (the one its response carries).
    ///
    /// # Errors
    ///
    /// Over shared memory only `Disconnected` (or `Protocol`): the
    /// connection failed since the reserve, and nothing is sent; the room
    /// was taken at the reserve, and a request goes whole. Over sockets
    /// and to a libqb server, as [`Client::send_timeout`] (the buffer is
    /// sent here); the slot is spent either way, so a request that must
    /// go is built again.
    pub fn commit(self) -> Result<u64> {
        // By reference until the request is out: a move of the
        // reservation after the payload's stores would copy it with loads
        // that wait for those stores to reach the server's core.
        match &self.room {
            Room::Ring(r) => self.client.engine.commit_reserved(r),
            Room::Buffer { id, buf, timeout } => {
                self.client
                    .send_vectored(*id, &[IoSlice::new(buf)], *timeout)
            }
        }
    }
}

impl std::ops::Deref for RequestSlot<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        match &self.room {
            Room::Ring(r) => self.client.engine.reserved(r),
            Room::Buffer { buf, .. } => buf,
        }
    }
}

impl std::ops::DerefMut for RequestSlot<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.room {
            Room::Ring(r) => self.client.engine.reserved_mut(r),
            Room::Buffer { buf, .. } => buf,
        }
    }
}

impl fmt::Debug for RequestSlot<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestSlot")
            .field("len", &self.len())
            .field("in_ring", &matches!(self.room, Room::Ring(_)))
            .finish_non_exhaustive()
    }
}
