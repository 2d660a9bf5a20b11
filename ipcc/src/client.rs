//! Connecting, and the calls of a connected client.

use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSlice, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};
use ringlink_common::fdpass::{self, recv_fds, PeerFds};
use ringlink_common::seqpacket::{self, SockRx, SockTx};
use ringlink_common::wire::{
    self, Confirm, ConnectRequest, ConnectResponse, MsgHeader, Status, Transport, WireError,
    MAX_MESSAGE, MSG_HEADER_LEN, NAMED_SHM_FDS, PROTOCOL_VERSION, RESPONSE_LEN, SHM_FDS,
    SOCKET_FDS,
};
use ringlink_common::{Credentials, Error, Result, ServiceAddr};
use ringlink_ringbuf::{Ring, Wake};

use crate::link::{Link, Refused, ShmLink, SockLink, Wait};
use crate::stream::Stream;

/// How to connect.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// Application protocol id; must match the server's.
    pub protocol: String,
    /// Largest message payload wanted (the server may raise it to its
    /// minimum or cap it at its maximum; see [`Client::max_message`]).
    /// 0: the server's minimum.
    pub max_message: u32,
    /// Time allowed for connecting and the whole handshake. Default 5 s.
    pub timeout: Duration,
    /// Keep retrying, until `timeout`, while no server listens at the
    /// address, so that start-up order does not matter. Default false.
    pub wait_for_server: bool,
    /// How long a waiting call polls the rings before it sleeps. Default
    /// [`ringlink_ringbuf::DEFAULT_SPIN`].
    pub spin: Duration,
    /// Flow-control threshold (libqb's `fc_enable_max`): sends behave as
    /// if the request ring were full (`WouldBlock`, or waiting) while the
    /// server's flow-control level is at or above it. 0 ignores flow
    /// control (sends go on until the ring is full). Default 1: respect
    /// the server's [`RateLimit::Off`](ringlink_common::RateLimit::Off).
    /// (libqb blocks when `0 < level <= fc_enable_max`; ringlink's
    /// levels are 0 and 1, where both rules agree.)
    pub fc_enable_max: u32,
    /// Transport of the messages: shared-memory rings (the default) or
    /// `SOCK_SEQPACKET` sockets. Must match the server's
    /// (`Rejected(TransportMismatch)` otherwise).
    pub transport: Transport,
}

impl ConnectOptions {
    /// Default options for `protocol`.
    pub fn new(protocol: &str) -> ConnectOptions {
        ConnectOptions {
            protocol: protocol.to_owned(),
            max_message: 0,
            timeout: Duration::from_secs(5),
            wait_for_server: false,
            spin: ringlink_ringbuf::DEFAULT_SPIN,
            fc_enable_max: 1,
            transport: Transport::Shm,
        }
    }
}

/// A message received: its header fields and payload length (the payload
/// is in the caller's buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message {
    /// Application message id.
    pub id: i32,
    /// For a response, the sequence number of its request; 0 for events.
    pub seq: u64,
    /// Error code the server set (responses; 0 otherwise).
    pub error: i32,
    /// Payload length, at the start of the caller's buffer.
    pub len: usize,
}

/// A connection to a ringlink service. `Send`, not `Sync`: one thread
/// drives it at a time.
pub struct Client {
    /// The handshake's stream socket: kept open to see the server's death;
    /// it carries the rings' wake-ups (a byte each, both ways) or, with
    /// the socket transport, the server's flow-control level.
    stream: Stream,
    link: Link,
    id: u64,
    max_message: usize,
    server: Credentials,
    next_seq: u64,
    /// Responses received: never more than the requests sent, so that
    /// what a server sends cannot grow `stash` (or the async client's
    /// tables) beyond what the application asked for.
    answered: u64,
    /// Responses read while `send_recv` looked for another sequence.
    stash: VecDeque<(Message, Vec<u8>)>,
    spin: Duration,
    fc_enable_max: u32,
    /// The epoll set watches the request socket for writability (a
    /// request's tail waits to be sent).
    watching_tail: Cell<bool>,
    epoll: Epoll,
}

fn deadline_after(timeout: Option<Duration>) -> Option<Instant> {
    match timeout {
        // No clock read on the non-waiting path (`expired` checks zero).
        Some(Duration::ZERO) => None,
        t => t.and_then(|t| Instant::now().checked_add(t)),
    }
}

fn expired(deadline: Option<Instant>, timeout: Option<Duration>) -> bool {
    timeout == Some(Duration::ZERO) || deadline.is_some_and(|d| Instant::now() >= d)
}

/// Whether the server's flow-control level holds sends back at this
/// threshold.
fn flow_controlled(level: u32, threshold: u32) -> bool {
    threshold != 0 && level >= threshold
}

fn io_err(e: nix::errno::Errno) -> Error {
    Error::Io(e.into())
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
    /// [`Error::NoServer`] if nobody listens (after `timeout`, with
    /// `wait_for_server`); [`Error::Rejected`] with the server's reason;
    /// [`Error::TimedOut`]; [`Error::Protocol`] if the server's answer or
    /// its rings are malformed; [`Error::Io`].
    pub fn connect(addr: &ServiceAddr, opts: &ConnectOptions) -> Result<Client> {
        let deadline = Instant::now() + opts.timeout;
        let sock = connect_socket(addr, opts.wait_for_server, deadline)?;
        Client::handshake(sock, opts, deadline)
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
        Client::handshake(sock, opts, Instant::now() + opts.timeout)
    }

    fn handshake(sock: UnixStream, opts: &ConnectOptions, deadline: Instant) -> Result<Client> {
        let sock = Arc::new(sock);
        let left = || {
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        };
        let timed = |e: io::Error| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::TimedOut,
            io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::UnexpectedEof => Error::Disconnected,
            _ => Error::Io(e),
        };
        ringlink_common::wire::check_protocol_id(&opts.protocol)?;
        let request = ConnectRequest {
            version: PROTOCOL_VERSION,
            transport: opts.transport,
            max_message: opts.max_message,
            protocol: opts.protocol.clone(),
        };
        sock.set_write_timeout(Some(left()))?;
        (&*sock).write_all(&request.encode()).map_err(timed)?;

        // The answer, with its fds on the first bytes. Until checked and
        // taken, they are the server's choice of file: whatever is left
        // on any way out is reaped (`fdpass::PeerFds`).
        let mut buf = [0u8; RESPONSE_LEN];
        let mut got = 0;
        let mut fds = PeerFds::default();
        while got < RESPONSE_LEN {
            sock.set_read_timeout(Some(left()))?;
            let (n, more) = recv_fds(&sock, &mut buf[got..]).map_err(timed)?;
            fds.extend(more);
            if n == 0 {
                return Err(Error::Disconnected);
            }
            got += n;
        }
        // No more fds from the server, ever (where the kernel can refuse
        // them; elsewhere every read reaps them).
        fdpass::refuse_fds(sock.as_fd());
        let answer = match ConnectResponse::decode(&buf) {
            Ok(a) => a,
            // A server of another protocol version: what it sends after
            // its version field cannot be read, but the reason can.
            Err(WireError::Version(_)) => return Err(Error::Rejected(Status::VersionMismatch)),
            Err(e) => return Err(Error::protocol("connect response", e)),
        };
        if answer.status != Status::Ok {
            return Err(Error::Rejected(answer.status));
        }
        let server = Credentials::of_peer(&sock)?;
        let max_message = answer.max_message as usize;
        if max_message > MAX_MESSAGE {
            return Err(Error::Protocol(format!(
                "server announced messages of {max_message} bytes, above ringlink's {MAX_MESSAGE}"
            )));
        }
        let (link, level) = match opts.transport {
            Transport::Socket => {
                if answer.path_len != 0
                    || fds.len() != SOCKET_FDS
                    || answer.fd_count as usize != SOCKET_FDS
                {
                    return Err(Error::Protocol(format!(
                        "expected {SOCKET_FDS} sockets, got {} fds",
                        fds.len()
                    )));
                }
                // The initial flow-control level follows the response.
                let mut level = [0u8; 1];
                fdpass::recv_exact(sock.as_fd(), &mut level, deadline).map_err(timed)?;
                for fd in fds.iter() {
                    seqpacket::check(fd).map_err(|e| Error::protocol("socket from server", e))?;
                    // Ours now: no fds on them from the server either.
                    fdpass::refuse_fds(fd);
                }
                let mut fds = fds.take().into_iter();
                let (Some(rr), Some(ev)) = (fds.next(), fds.next()) else {
                    return Err(Error::Protocol("missing sockets".into()));
                };
                let rr = Arc::new(rr);
                let link = Link::Sock(SockLink {
                    tx: SockTx::new(rr.clone())?,
                    rx: SockRx::new(rr, max_message),
                    ev: SockRx::new(ev, max_message),
                });
                (link, u32::from(level[0]))
            }
            Transport::Shm => {
                let shm = shm_link(&sock, fds, &answer, server, opts, deadline, timed)?;
                (Link::Shm(shm), 0)
            }
        };

        sock.set_write_timeout(Some(left()))?;
        (&*sock).write_all(&Confirm.encode()).map_err(timed)?;
        sock.set_read_timeout(None)?;
        sock.set_write_timeout(None)?;
        sock.set_nonblocking(true)?;

        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(io_err)?;
        for (i, fd) in link.readable_fds().into_iter().enumerate() {
            epoll
                .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, i as u64))
                .map_err(io_err)?;
        }
        epoll
            .add(
                &*sock,
                EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP, 2),
            )
            .map_err(io_err)?;

        let levels = matches!(link, Link::Sock(_));
        Ok(Client {
            stream: Stream::new(sock, levels, level),
            link,
            id: answer.connection_id,
            max_message,
            server,
            next_seq: 1,
            answered: 0,
            stash: VecDeque::new(),
            spin: opts.spin,
            fc_enable_max: opts.fc_enable_max,
            watching_tail: Cell::new(false),
            epoll,
        })
    }

    /// The server-assigned connection id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The transport the messages travel over.
    pub fn transport(&self) -> Transport {
        match self.link {
            Link::Shm(_) => Transport::Shm,
            Link::Sock(_) => Transport::Socket,
        }
    }

    /// Largest message payload, either way (the negotiated buffer size).
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    /// The negotiated buffer size: the same as
    /// [`max_message`](Self::max_message) (libqb's name for it).
    pub fn buffer_size(&self) -> usize {
        self.max_message
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
        self.poll_control();
        if self.stream.connected() && self.link.closed() {
            self.stream.fail();
        }
        self.stream.connected()
    }

    /// Reads what the server wrote on the stream socket since the
    /// handshake: wake-ups over shared memory (a byte each, discarded),
    /// flow-control levels with the socket transport (the last byte is
    /// the level); end of stream means the server is gone. Never waits
    /// (`MSG_DONTWAIT`), and reads at most 64 KiB a call, so a server
    /// that floods the socket cannot keep a call here. Returns whether
    /// anything was read (or the end found): wake-ups meant for any ring
    /// may have been taken.
    fn poll_control(&self) -> bool {
        self.stream.read()
    }

    /// The server's flow-control level, as last seen.
    fn level(&self) -> u32 {
        match &self.link {
            Link::Shm(l) => l.rings[0].user_word(),
            Link::Sock(_) => self.stream.level(),
        }
    }

    fn check(&self) -> Result<()> {
        if self.stream.connected() {
            Ok(())
        } else {
            Err(Error::Disconnected)
        }
    }

    fn fail(&mut self, e: Error) -> Error {
        if e.is_fatal() {
            self.stream.fail();
        }
        e
    }

    /// Takes the wake-ups waiting on the stream socket (and notes a
    /// server that left, or a new flow-control level), before raising a
    /// ring's waiting flag: one drain, then the flags, so that no
    /// wake-up meant for a ring already waiting is taken (PROTOCOL.md
    /// §4).
    #[cfg(feature = "tokio")]
    pub(crate) fn drain_wakes(&self) {
        self.poll_control();
    }

    /// Whether any call read the stream socket since the last time this
    /// was asked: wake-ups meant for other waiters may have been taken
    /// (the async client then tells its other tasks to look again).
    #[cfg(feature = "tokio")]
    pub(crate) fn take_drained(&self) -> bool {
        self.stream.take_drained()
    }

    /// Sends a request without waiting; returns its sequence number, which
    /// the response will carry.
    ///
    /// # Errors
    ///
    /// [`Error::MessageTooLarge`] (nothing sent); [`Error::WouldBlock`] if
    /// the request ring is full; [`Error::Disconnected`].
    pub fn send(&mut self, id: i32, payload: &[u8]) -> Result<u64> {
        self.send_vectored(id, &[IoSlice::new(payload)], Some(Duration::ZERO))
    }

    /// Sends a request, waiting up to `timeout` (`None`: forever) for room.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send), with [`Error::TimedOut`] instead of
    /// `WouldBlock` for a non-zero timeout.
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
        let len = wire::payload_len(parts, self.max_message)?;
        self.check()?;
        let deadline = deadline_after(timeout);
        let seq = self.next_seq;
        let header = MsgHeader {
            id,
            size: len as u32,
            error: 0,
            seq,
        };
        loop {
            if self.fc_enable_max != 0 && matches!(self.link, Link::Sock(_)) {
                // Levels arrive on the stream socket: read them first.
                self.poll_control();
                self.check()?;
            }
            let attempt = if flow_controlled(self.level(), self.fc_enable_max) {
                Err(Refused::Full)
            } else {
                self.link.try_send(header, parts, self.max_message)
            };
            match attempt {
                Ok(()) => {
                    self.next_seq += 1;
                    return Ok(seq);
                }
                Err(Refused::Full) => {
                    if timeout == Some(Duration::ZERO) || expired(deadline, timeout) {
                        if !self.is_connected() {
                            return Err(self.fail(Error::Disconnected));
                        }
                        return Err(if timeout == Some(Duration::ZERO) {
                            Error::WouldBlock
                        } else {
                            Error::TimedOut
                        });
                    }
                    self.wait(Wait::Space, deadline)?;
                }
                Err(Refused::Fatal(e)) => return Err(self.fail(e)),
            }
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
        if let Some((msg, _)) = self.stash.front() {
            if msg.len > buf.len() {
                return Err(Error::BufferTooSmall { needed: msg.len });
            }
            let (msg, data) = self.stash.pop_front().expect("front exists");
            buf[..msg.len].copy_from_slice(&data);
            return Ok(msg);
        }
        self.read(Wait::Response, buf, timeout)
    }

    /// Sends a request and waits for its response (matched by sequence
    /// number; responses to other requests in flight are kept for
    /// [`recv`](Self::recv)). `timeout` covers both.
    ///
    /// # Errors
    ///
    /// As [`send_timeout`](Self::send_timeout) and [`recv`](Self::recv).
    pub fn send_recv(
        &mut self,
        id: i32,
        request: &[u8],
        buf: &mut [u8],
        timeout: Option<Duration>,
    ) -> Result<Message> {
        let deadline = deadline_after(timeout);
        let seq = self.send_vectored(id, &[IoSlice::new(request)], timeout)?;
        loop {
            let left = match timeout {
                Some(Duration::ZERO) => timeout,
                _ => deadline.map(|d| d.saturating_duration_since(Instant::now())),
            };
            let msg = self.read(Wait::Response, buf, left)?;
            if msg.seq == seq {
                return Ok(msg);
            }
            self.stash.push_back((msg, buf[..msg.len].to_vec()));
        }
    }

    /// Receives the next event into `buf`, waiting up to `timeout`.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    pub fn event_recv(&mut self, buf: &mut [u8], timeout: Option<Duration>) -> Result<Message> {
        self.read(Wait::Event, buf, timeout)
    }

    /// Checks a message just taken from the server: a response must
    /// answer a request this client sent (`seq` from 1 to the last one
    /// sent), and there are never more responses than requests
    /// (PROTOCOL.md §3). A server that breaks this is a protocol
    /// violation, and the connection fails.
    fn received(&mut self, which: Wait, msg: Message) -> Result<Message> {
        if which == Wait::Response {
            let sent = self.next_seq - 1;
            if msg.seq == 0 || msg.seq > sent || self.answered >= sent {
                let e = Error::Protocol(format!(
                    "response to request {} from the server, which has answered {} of the {sent} \
                     requests sent",
                    msg.seq, self.answered
                ));
                return Err(self.fail(e));
            }
            self.answered += 1;
        }
        Ok(msg)
    }

    fn read(&mut self, which: Wait, buf: &mut [u8], timeout: Option<Duration>) -> Result<Message> {
        let deadline = deadline_after(timeout);
        loop {
            // No connection check here: messages the server sent before
            // it went away are still delivered.
            match self.link.try_read(which, buf) {
                Some(Ok(msg)) => return self.received(which, msg),
                Some(Err(e)) => return Err(self.fail(e)),
                None => {
                    // Empty: only now does a dead server matter.
                    if !self.stream.connected() {
                        return Err(Error::Disconnected);
                    }
                    if expired(deadline, timeout) {
                        // A killed server closes no ring; its socket tells.
                        // Checked only here, off the hot path.
                        if !self.is_connected() {
                            return Err(self.fail(Error::Disconnected));
                        }
                        return Err(Error::TimedOut);
                    }
                    self.wait(which, deadline)?;
                }
            }
        }
    }

    /// Waits until `which` may have progressed (see [`Link::wait`]); a
    /// dead server wakes us.
    fn wait(&mut self, which: Wait, deadline: Option<Instant>) -> Result<()> {
        let held = flow_controlled(self.level(), self.fc_enable_max);
        let fc = (self.fc_enable_max, held);
        // Wake-ups that came before this wait, taken before the flag
        // goes up (the one waiting call of this thread owns the socket).
        let stream = &self.stream;
        let drain = || stream.read();
        let fired = match self
            .link
            .wait(which, stream.sock(), deadline, self.spin, fc, drain)
        {
            Ok(fired) => fired,
            Err(e) => return Err(self.fail(e)),
        };
        if fired && !self.is_connected() {
            let e = self.fail(Error::Disconnected);
            // A reader goes back to drain what the server published before
            // it left (then gets `Disconnected`); a sender stops here.
            return if which == Wait::Space { Err(e) } else { Ok(()) };
        }
        Ok(())
    }

    /// Prepares to wait on this client's fd ([`AsFd`]) in the
    /// application's own loop: returns `false` if a response or event is
    /// already waiting (read it instead of polling). The fd becomes
    /// readable when a response or event arrives or the server goes away;
    /// it may also wake spuriously.
    pub fn prepare_poll(&mut self) -> bool {
        // Over sockets, the tail of a long request must go before its
        // answer can come: while one waits, the fd also polls for the
        // request socket's writability.
        let tail = match &mut self.link {
            Link::Sock(l) => !l.tx.flush().unwrap_or(true),
            Link::Shm(_) => false,
        };
        if tail != self.watching_tail.get() {
            if let Link::Sock(l) = &self.link {
                let mut flags = EpollFlags::EPOLLIN;
                if tail {
                    flags |= EpollFlags::EPOLLOUT;
                }
                let mut ev = EpollEvent::new(flags, 0);
                if self.epoll.modify(l.rx.fd(), &mut ev).is_ok() {
                    self.watching_tail.set(tail);
                }
            }
        }
        // Drained first, then, from here, a wake-up that one of our own
        // calls reads makes the fd readable again, so that the
        // application never waits for one that was taken from it
        // (`Stream::arm_app`, which also forgets what earlier reads
        // signalled).
        self.poll_control();
        if self.stream.arm_app(&self.epoll).is_err() {
            // Without it, better a poll that returns at once than one
            // that may miss a wake-up.
            return false;
        }
        self.link.prepare_poll()
    }

    /// One attempt to send, for the async client: `Ok(None)` when the
    /// request ring is full or flow control holds sends back (arm with
    /// [`arm_space`](Self::arm_space), then wait), `Ok(Some(seq))` once
    /// sent.
    #[cfg(feature = "tokio")]
    pub(crate) fn try_send_once(&mut self, id: i32, parts: &[IoSlice<'_>]) -> Result<Option<u64>> {
        let len = wire::payload_len(parts, self.max_message)?;
        if matches!(self.link, Link::Sock(_)) && self.fc_enable_max != 0 {
            self.poll_control();
        }
        self.check()?;
        if flow_controlled(self.level(), self.fc_enable_max) {
            return Ok(None);
        }
        let seq = self.next_seq;
        let header = MsgHeader {
            id,
            size: len as u32,
            error: 0,
            seq,
        };
        match self.link.try_send(header, parts, self.max_message) {
            Ok(()) => {
                self.next_seq += 1;
                Ok(Some(seq))
            }
            Err(Refused::Full) => Ok(None),
            Err(Refused::Fatal(e)) => Err(self.fail(e)),
        }
    }

    /// Before sleeping until a send may go: raises the request ring's
    /// waiting flag (after draining its space eventfd). `false` if there
    /// is no need to sleep (room appeared, or flow control lifted).
    #[cfg(feature = "tokio")]
    pub(crate) fn arm_space(&mut self) -> bool {
        if let Link::Shm(l) = &mut self.link {
            // The socket was drained by the caller (`drain_wakes`).
            if !l.request.prepare_sleep() {
                return false;
            }
        }
        // The level is read after the flag is up: the server lowers it,
        // then wakes flagged waiters.
        flow_controlled(self.level(), self.fc_enable_max) || !self.request_has_room()
    }

    /// Before sleeping until a response (`event`: an event) may have
    /// come: arms that ring's wake-up. `false` if one is already there.
    #[cfg(feature = "tokio")]
    pub(crate) fn arm_recv(&mut self, event: bool) -> bool {
        // The socket was drained by the caller (`drain_wakes`).
        match &mut self.link {
            Link::Shm(l) if event => l.event.prepare_sleep(),
            Link::Shm(l) => l.response.prepare_sleep(),
            Link::Sock(_) => true,
        }
    }

    /// How long a waiting call polls the rings before it sleeps (zero
    /// over sockets: polling a socket is a system call).
    #[cfg(feature = "tokio")]
    pub(crate) fn spin_budget(&self) -> Duration {
        match self.link {
            Link::Shm(_) => self.spin,
            Link::Sock(_) => Duration::ZERO,
        }
    }

    /// Whether the tail of a long request waits for room in the socket
    /// (its answer cannot come before it goes).
    #[cfg(feature = "tokio")]
    pub(crate) fn has_tail(&self) -> bool {
        matches!(&self.link, Link::Sock(l) if l.tx.has_pending())
    }

    #[cfg(feature = "tokio")]
    fn request_has_room(&mut self) -> bool {
        match &mut self.link {
            Link::Shm(l) => l.request.has_room(MSG_HEADER_LEN).unwrap_or(true),
            Link::Sock(l) => l.tx.can_send(),
        }
    }

    /// What a sender waiting for room sleeps on besides the client's fd
    /// ([`AsFd`], which hears the rings' wake-ups): the request socket
    /// (writable) over the socket transport, nothing over shared memory.
    #[cfg(feature = "tokio")]
    pub(crate) fn space_fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.link {
            Link::Shm(_) => None,
            Link::Sock(l) => Some(l.tx.fd()),
        }
    }

    /// One attempt to receive a response (`event`: an event), for the
    /// async client: `Ok(None)` when there is none and the server is
    /// still there.
    #[cfg(feature = "tokio")]
    pub(crate) fn try_recv_once(&mut self, event: bool, buf: &mut [u8]) -> Result<Option<Message>> {
        let which = if event { Wait::Event } else { Wait::Response };
        if let Link::Sock(l) = &mut self.link {
            // The tail of a long request must go before its answer comes.
            let _ = l.tx.flush();
        }
        match self.link.try_read(which, buf) {
            Some(Ok(msg)) => self.received(which, msg).map(Some),
            Some(Err(e)) => Err(self.fail(e)),
            None if self.stream.connected() => Ok(None),
            None => Err(Error::Disconnected),
        }
    }

    /// Whether the server is still there, reading what it wrote on the
    /// stream socket (flow-control levels); for the async client, when its
    /// fd woke it.
    #[cfg(feature = "tokio")]
    pub(crate) fn refresh(&self) -> bool {
        self.is_connected()
    }

    /// Closes the connection. Dropping the client does the same.
    pub fn disconnect(self) {}
}

impl AsFd for Client {
    /// An epoll fd that is readable when a response or an event may be
    /// waiting or the server hung up (see
    /// [`prepare_poll`](Client::prepare_poll)).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // The rings marked closed from our side first (PROTOCOL.md §5),
        // then the socket shut down: the server hears of it at once.
        self.link.close();
        self.stream.fail();
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("max_message", &self.max_message)
            .field("server", &self.server)
            .field("connected", &self.stream.connected())
            .finish_non_exhaustive()
    }
}

/// Whether `fd` is a memfd sealed against shrinking and growing (the
/// only ring memory a client maps; `docs/PROTOCOL.md` §2.2).
fn is_sealed_memfd(fd: BorrowedFd<'_>) -> bool {
    let needed = nix::libc::F_SEAL_SHRINK | nix::libc::F_SEAL_GROW;
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GET_SEALS).is_ok_and(|s| s & needed == needed)
}

/// Maps the three rings the server sent (memfds, or named files opened by
/// the path prefix that follows the response) and claims the client's
/// roles.
fn shm_link(
    sock: &Arc<UnixStream>,
    fds: PeerFds,
    answer: &ConnectResponse,
    server: Credentials,
    opts: &ConnectOptions,
    deadline: Instant,
    timed: impl Fn(io::Error) -> Error,
) -> Result<ShmLink> {
    // Named rings: the path prefix of the ring files follows.
    let mut prefix = vec![0u8; answer.path_len as usize];
    fdpass::recv_exact(sock.as_fd(), &mut prefix, deadline).map_err(timed)?;
    let named = !prefix.is_empty();
    let expected = if named { NAMED_SHM_FDS } else { SHM_FDS };
    if fds.len() != expected || answer.fd_count as usize != expected {
        return Err(Error::Protocol(format!(
            "expected {expected} fds: the answer announced {}, {} came",
            answer.fd_count,
            fds.len()
        )));
    }
    // Sealed memfds only reach the ring crate (which closes what it
    // refuses); anything else is reaped.
    if !fds.iter().all(is_sealed_memfd) {
        return Err(Error::Protocol(
            "ring from server: ring memfd is not sealed against resizing".into(),
        ));
    }
    let fds = fds.take();
    let dir = if named {
        Some(RingDir::open(&prefix)?)
    } else {
        None
    };
    let max_message = answer.max_message as usize;
    let mut fds = fds.into_iter();
    let mut index = 0;
    let mut next_ring = |capacity: u64| -> Result<Ring> {
        // Wake-ups both ways travel on the connection's socket.
        let wake = Wake::Socket(sock.clone());
        let mut ring = match (&dir, fds.next()) {
            (Some(dir), _) => dir.open_ring(RING_NAMES[index], wake, server)?,
            (None, Some(memory)) => Ring::from_memfd(memory, wake)
                .map_err(|e| Error::protocol("ring from server", e))?,
            (None, None) => return Err(Error::Protocol("missing ring fds".into())),
        };
        // Mapped: the fd (shared with the server) is not needed again.
        ring.forget_memory_fd();
        index += 1;
        if ring.capacity() as u64 != capacity || ring.max_payload() < MSG_HEADER_LEN + max_message {
            return Err(Error::Protocol(
                "ring size disagrees with the handshake".into(),
            ));
        }
        Ok(ring)
    };
    let rings = [
        next_ring(answer.request_capacity)?,
        next_ring(answer.response_capacity)?,
        next_ring(answer.event_capacity)?,
    ];
    let claim = |e| Error::protocol("ring role", e);
    let mut request = rings[0].producer().map_err(claim)?;
    let mut response = rings[1].consumer().map_err(claim)?;
    let mut event = rings[2].consumer().map_err(claim)?;
    for spin in [&mut response, &mut event] {
        spin.set_spin(opts.spin);
    }
    request.set_spin(opts.spin);
    if let Some(dir) = &dir {
        // Mapped: the names are no longer needed. The server removes
        // them too; whoever is first wins (we may lack the right to,
        // in a sticky directory, if the files are not ours).
        for name in RING_NAMES {
            dir.remove(name);
        }
    }
    Ok(ShmLink {
        rings,
        request,
        response,
        event,
        max_message: answer.max_message as usize,
    })
}

/// The ring names that follow a named-ring connection's path prefix.
const RING_NAMES: [&str; 3] = ["request", "response", "event"];

/// Where a named-ring connection's files are: the directory of the path
/// prefix the server sent, held open, and the start of the files' names.
/// Files are opened and removed relative to the directory, so what is
/// removed is an entry of that directory whatever happens to the path
/// meanwhile.
struct RingDir {
    dir: std::os::fd::OwnedFd,
    stem: Vec<u8>,
    shown: String,
}

impl RingDir {
    /// The directory of `prefix` (absolute, no NUL), opened.
    fn open(prefix: &[u8]) -> Result<RingDir> {
        use std::os::unix::ffi::OsStrExt;
        if prefix.first() != Some(&b'/') || prefix.contains(&0) {
            return Err(Error::Protocol(
                "ring path prefix is not an absolute path".into(),
            ));
        }
        let cut = prefix.iter().rposition(|&b| b == b'/').unwrap_or(0);
        let dir = if cut == 0 { &b"/"[..] } else { &prefix[..cut] };
        let fd = nix::fcntl::open(
            std::ffi::OsStr::from_bytes(dir),
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| {
            Error::Protocol(format!(
                "ring directory {}: {e}",
                String::from_utf8_lossy(dir)
            ))
        })?;
        Ok(RingDir {
            dir: fd,
            stem: prefix[cut + 1..].to_vec(),
            shown: String::from_utf8_lossy(prefix).into_owned(),
        })
    }

    fn name(&self, ring: &str) -> std::ffi::OsString {
        use std::os::unix::ffi::OsStrExt;
        let mut n = self.stem.clone();
        n.extend_from_slice(ring.as_bytes());
        std::ffi::OsStr::from_bytes(&n).to_owned()
    }

    /// Opens a ring file, relative to the directory, without following a
    /// symlink and without waiting (`O_NONBLOCK`: a FIFO or a device
    /// planted there cannot hold the open); only a regular file owned by
    /// the server's user or by ours (whoever else planted a file there is
    /// not the server).
    fn open_ring(&self, ring: &str, wake: Wake, server: Credentials) -> Result<Ring> {
        use nix::fcntl::OFlag;
        use std::os::unix::fs::MetadataExt;
        let shown = || format!("{}{ring}", self.shown);
        let fd = nix::fcntl::openat(
            &self.dir,
            self.name(ring).as_os_str(),
            OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| Error::Protocol(format!("named ring {}: {e}", shown())))?;
        let file = std::fs::File::from(fd);
        let owner = file.metadata()?.uid();
        if owner != server.uid && owner != Credentials::current().uid {
            return Err(Error::Protocol(format!(
                "named ring {} belongs to uid {owner}, neither the server's nor ours",
                shown()
            )));
        }
        Ring::from_file(file, wake)
            .map_err(|e| Error::Protocol(format!("named ring {}: {e}", shown())))
    }

    /// Removes a ring file's name from the directory (best effort).
    fn remove(&self, ring: &str) {
        let _ = nix::unistd::unlinkat(
            &self.dir,
            self.name(ring).as_os_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    }
}

/// Connects without blocking past `deadline`: a full backlog (`EAGAIN`)
/// is retried, and with `wait`, so is a missing server.
fn connect_socket(addr: &ServiceAddr, wait: bool, deadline: Instant) -> Result<UnixStream> {
    let uaddr = match addr {
        ServiceAddr::Abstract(name) => UnixAddr::new_abstract(name.as_bytes()),
        ServiceAddr::Path(p) => UnixAddr::new(p.as_path()),
    }
    .map_err(io_err)?;
    let mut backoff = Duration::from_millis(1);
    loop {
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(io_err)?;
        let retry = match socket::connect(fd.as_raw_fd(), &uaddr) {
            Ok(()) => {
                let s = UnixStream::from(fd);
                s.set_nonblocking(false)?;
                return Ok(s);
            }
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => true,
            Err(nix::errno::Errno::ENOENT) | Err(nix::errno::Errno::ECONNREFUSED) => {
                if !wait {
                    return Err(Error::NoServer);
                }
                false
            }
            Err(e) => return Err(io_err(e)),
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(if retry {
                Error::TimedOut
            } else {
                Error::NoServer
            });
        }
        std::thread::sleep(backoff.min(deadline - now));
        backoff = (backoff * 2).min(Duration::from_millis(50));
    }
}
