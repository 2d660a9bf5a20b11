//! What a client is given (how to connect) and gives back (a message's
//! header fields).

use std::time::Duration;

use ringlink_common::wire::{FdTerms, Transport};

/// How to connect. Built with chaining setters (or by setting the
/// fields):
///
/// ```
/// use ringlink_ipcc::ConnectOptions;
/// use std::time::Duration;
///
/// let opts = ConnectOptions::new("echo")
///     .wait_for_server(true)
///     .server_wait(Duration::MAX)
///     .max_message(1 << 20);
/// assert!(opts.wait_for_server);
/// assert_eq!((opts.server_wait, opts.max_message), (Duration::MAX, 1 << 20));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// Application protocol id; must match the server's.
    pub protocol: String,
    /// Largest message payload wanted. The connection's maximum, the same
    /// both ways, is this raised to the server's `min_message` (default
    /// 64 KiB) and capped at its `max_message` (default 1 MiB): with the
    /// default 0 a client gets the server's minimum, **64 KiB**, not 1 MiB.
    /// Ask for what the largest message needs; the rings are sized for it.
    /// [`Client::max_message`](crate::Client::max_message) says what was
    /// granted.
    pub max_message: u32,
    /// Time allowed for the handshake, from the moment the server's
    /// socket took the connection (without
    /// [`wait_for_server`](Self::wait_for_server), also for reaching it).
    /// Default 5 s; `Duration::MAX` waits as long as it takes.
    pub timeout: Duration,
    /// Keep retrying while no server listens at the address, for up to
    /// [`server_wait`](Self::server_wait), so that start-up order does
    /// not matter. Default false.
    pub wait_for_server: bool,
    /// How long [`wait_for_server`](Self::wait_for_server) waits for a
    /// server to appear (or, with its backlog full, to take the
    /// connection), apart from the handshake's `timeout`. Default 5 s;
    /// `Duration::MAX` waits as long as it takes (Legato's
    /// `le_msg_OpenSessionSync`). After it, [`Error::NoServer`]
    /// (nobody listened) or [`Error::TimedOut`] (a full backlog).
    ///
    /// [`Error::NoServer`]: ringlink_common::Error::NoServer
    /// [`Error::TimedOut`]: ringlink_common::Error::TimedOut
    pub server_wait: Duration,
    /// How long a waiting call polls the rings before it sleeps. Default
    /// [`ringlink_ringbuf::DEFAULT_SPIN`].
    pub spin: Duration,
    /// Flow-control threshold (libqb's `fc_enable_max`): sends behave as
    /// if the request ring were full (`WouldBlock`, or waiting) while the
    /// server's flow-control level is above 0 and at most this, libqb's
    /// rule. The levels are 0 (requests read), 1
    /// ([`RateLimit::Off`](crate::RateLimit::Off)) and 2
    /// ([`RateLimit::Off2`](crate::RateLimit::Off2)). 0 ignores
    /// flow control (sends go on until the ring is full). Default 1:
    /// held by `Off`, not by `Off2`; 2: held by both.
    pub fc_enable_max: u32,
    /// Transport of the messages: shared-memory rings (the default) or
    /// `SOCK_SEQPACKET` sockets. Must match the server's
    /// (`Rejected(TransportMismatch)` otherwise). Not used by
    /// [`Client::connect_libqb`](crate::Client::connect_libqb): a libqb
    /// server chooses.
    pub transport: Transport,
    /// Where a libqb server's rings must be
    /// ([`Client::connect_libqb`](crate::Client::connect_libqb)): the
    /// names its answer gives are refused anywhere else. Default
    /// `/dev/shm`, libqb's.
    pub libqb_dir: std::path::PathBuf,
    /// The user the server must run as, checked from the kernel
    /// (`SO_PEERCRED`) before anything is sent: an abstract name can be
    /// taken by any local user who starts first, and a client that talks
    /// to a daemon of a known user should say so. A server of another
    /// user is `PermissionDenied` (an [`Error::Io`](crate::Error::Io)).
    /// Default `None`: any.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringlink_ipcc::{Client, ConnectOptions, Credentials, Error};
    ///
    /// # fn main() -> ringlink_ipcc::Result<()> {
    /// # use ringlink_ipcs::{Dispatch, Service, ServiceOptions};
    /// # let addr = ringlink_ipcc::ServiceAddr::named(&format!("ringlink-doc-{}", std::process::id()));
    /// # let table = Dispatch::new().on(1, |c, r| { let _ = c.respond(r.seq(), 1, r.payload()); });
    /// # let mut service = Service::bind(addr.clone(), "echo", ServiceOptions::default(), table)?;
    /// # let control = service.control_handle();
    /// # let server = std::thread::spawn(move || service.run());
    /// // The daemon runs as our own user here (a system daemon: as root, Some(0)).
    /// let me = Credentials::current().uid;
    /// let client = Client::connect(&addr, &ConnectOptions::new("echo").server_uid(Some(me)))?;
    /// # drop(client);
    ///
    /// // Whoever holds the name as another user is refused before anything is sent.
    /// match Client::connect(&addr, &ConnectOptions::new("echo").server_uid(Some(me + 1))) {
    ///     Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied),
    ///     other => panic!("{other:?}"),
    /// }
    /// # control.shutdown();
    /// # server.join().expect("server thread")?;
    /// # Ok(())
    /// # }
    /// ```
    pub server_uid: Option<u32>,
    /// The fds this client accepts in responses and events (Legato's
    /// `le_msg_GetFd`), announced to the server in the handshake: e.g.
    /// [`FdTerms::per_message(4)`](FdTerms::per_message). The server never
    /// sends more; one that does, or sends a directory or `O_PATH` fd
    /// unless [`FdTerms::directories`] allows them, breaks the protocol
    /// and the connection ends. Take them with
    /// [`Client::take_fds`](crate::Client::take_fds). Default
    /// [`FdTerms::NONE`]. What the server accepts in requests is its own
    /// choice ([`Client::server_fd_terms`](crate::Client::server_fd_terms)).
    pub accept_fds: FdTerms,
}

impl ConnectOptions {
    /// Default options for `protocol`.
    pub fn new(protocol: &str) -> ConnectOptions {
        ConnectOptions {
            protocol: protocol.to_owned(),
            max_message: 0,
            timeout: Duration::from_secs(5),
            wait_for_server: false,
            server_wait: Duration::from_secs(5),
            spin: ringlink_ringbuf::DEFAULT_SPIN,
            fc_enable_max: 1,
            transport: Transport::Shm,
            libqb_dir: std::path::PathBuf::from("/dev/shm"),
            server_uid: None,
            accept_fds: FdTerms::NONE,
        }
    }
}

/// Chaining setters, one per field, for the options' builder style
/// (`ConnectOptions::new("echo").wait_for_server(true).max_message(1 << 20)`):
/// the struct is `#[non_exhaustive]`, so struct-update syntax is not
/// available outside this crate.
macro_rules! setters {
    ($($(#[$doc:meta])* $field:ident: $ty:ty,)*) => {
        impl ConnectOptions {
            $(
                $(#[$doc])*
                #[must_use]
                pub fn $field(mut self, value: $ty) -> ConnectOptions {
                    self.$field = value;
                    self
                }
            )*
        }
    };
}

setters! {
    /// Sets [`max_message`](Self::max_message) (field).
    max_message: u32,
    /// Sets [`timeout`](Self::timeout) (field).
    timeout: Duration,
    /// Sets [`wait_for_server`](Self::wait_for_server) (field).
    wait_for_server: bool,
    /// Sets [`server_wait`](Self::server_wait) (field).
    server_wait: Duration,
    /// Sets [`spin`](Self::spin) (field).
    spin: Duration,
    /// Sets [`fc_enable_max`](Self::fc_enable_max) (field).
    fc_enable_max: u32,
    /// Sets [`transport`](Self::transport) (field).
    transport: Transport,
    /// Sets [`libqb_dir`](Self::libqb_dir) (field).
    libqb_dir: std::path::PathBuf,
    /// Sets [`server_uid`](Self::server_uid) (field).
    server_uid: Option<u32>,
    /// Sets [`accept_fds`](Self::accept_fds) (field).
    accept_fds: FdTerms,
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
    /// Fds the message carried, held by the client until the next
    /// receive: take them with [`Client::take_fds`](crate::Client::take_fds)
    /// (those not taken are closed).
    pub fds: usize,
}

/// A response or an event, owned: its header fields, payload and the fds
/// it carried (`AsyncClient`'s answers, [`Client::events`](crate::Client::events)'
/// items). [`Default`] is an empty one, to be filled again and again
/// without allocating ([`AsyncClient::send_recv_into`](crate::AsyncClient::send_recv_into)).
#[derive(Debug, Default)]
pub struct Reply {
    /// Application message id.
    pub id: i32,
    /// For a response, the sequence number of its request; 0 for events.
    pub seq: u64,
    /// Error code the server set (responses; 0 otherwise).
    pub error: i32,
    /// The payload.
    pub payload: Vec<u8>,
    /// The fds it carried (`ConnectOptions::accept_fds`), in order,
    /// close-on-exec: yours (closed when dropped).
    pub fds: Vec<std::os::fd::OwnedFd>,
}

impl Reply {
    /// Refills this reply with a message just received into `buf` (its
    /// fds taken from the engine), reusing the payload's allocation.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn refill(&mut self, m: Message, buf: &[u8], engine: &mut crate::engine::Engine) {
        self.id = m.id;
        self.seq = m.seq;
        self.error = m.error;
        self.payload.clear();
        self.payload.extend_from_slice(&buf[..m.len]);
        self.fds.clear();
        if m.fds > 0 {
            self.fds = engine.take_fds();
        }
    }

    /// Made of a message just received into `buf`: its fds are taken from
    /// the engine.
    pub(crate) fn take(m: Message, buf: &[u8], engine: &mut crate::engine::Engine) -> Reply {
        Reply {
            id: m.id,
            seq: m.seq,
            error: m.error,
            payload: buf[..m.len].to_vec(),
            fds: if m.fds > 0 {
                engine.take_fds()
            } else {
                Vec::new()
            },
        }
    }
}
