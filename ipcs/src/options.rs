//! What a service is built with.

use std::path::PathBuf;
use std::time::Duration;

use ringlink_common::wire::{FdTerms, Transport};

/// Where and how a service listens, and the limits it enforces. Built
/// with chaining setters (or by setting the fields):
///
/// ```
/// use ringlink_ipcs::{EventQueue, QueuePolicy, ServiceOptions};
/// use std::time::Duration;
///
/// let opts = ServiceOptions::default()
///     .max_clients(64)
///     .idle_timeout(Some(Duration::from_secs(30)))
///     .event_queue(Some(EventQueue { capacity: 256, policy: QueuePolicy::DropOldest }));
/// assert_eq!(opts.max_clients, 64);
/// assert_eq!(opts.idle_timeout, Some(Duration::from_secs(30)));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServiceOptions {
    /// Largest message payload the server allows: a ceiling, not what a
    /// client gets. A connection's maximum is what its client asks for
    /// (`ConnectOptions::max_message`), raised to
    /// [`min_message`](Self::min_message) and capped here; a client that
    /// asks for nothing gets `min_message` (default 64 KiB). Bounds what
    /// one client can make the server allocate. Default 1 MiB; at most
    /// [`MAX_MESSAGE`](ringlink_common::wire::MAX_MESSAGE) (256 MiB).
    pub max_message: usize,
    /// Smallest message payload every connection supports, whatever the
    /// client asks (libqb's enforced buffer size). Default 64 KiB.
    pub min_message: usize,
    /// Most live connections; further clients get `TooManyClients` (or
    /// wait for a slot, with [`queue_when_full`](Self::queue_when_full)).
    /// Default 1024. Each costs the server one fd over shared memory
    /// (three over the socket transport) and its rings' memory: see
    /// `docs/SERVER.md`, "What a connection costs".
    pub max_clients: usize,
    /// Most connections one user (the client's effective uid, from
    /// `SO_PEERCRED`) may hold; further ones get `UserQuota`. Counts
    /// live connections and handshakes waiting for their confirmation,
    /// as `max_clients` does. Default `None`: no limit but
    /// `max_clients`. Set it where local users must not be able to take
    /// every slot.
    pub max_clients_per_uid: Option<usize>,
    /// Most connections one process (the client's pid) may hold; further
    /// ones get `ProcessQuota`. Default `None`.
    pub max_clients_per_pid: Option<usize>,
    /// Raise this process's soft limit on open files (`RLIMIT_NOFILE`)
    /// to its hard limit when the service is made, as daemons do: the
    /// common soft limit of 1,024 would otherwise cap the service well
    /// below `max_clients` over the socket transport, and below it with
    /// the fds the application holds. Process-wide, and never lowers
    /// anything. Default `true`; set `false` to manage the limit
    /// yourself.
    pub raise_fd_limit: bool,
    /// Most handshakes in progress at once; past it the oldest is dropped
    /// to make room, so stalled clients cannot lock others out. Default
    /// 1024.
    pub max_handshakes: usize,
    /// Listen backlog. Default 128.
    pub backlog: i32,
    /// Permissions of a filesystem socket (ignored for abstract names).
    /// Default 0o600.
    pub socket_mode: u32,
    /// Time a client has to complete the handshake. Default 5 s
    /// (`Duration::MAX`: no limit).
    pub handshake_timeout: Duration,
    /// Disconnects a client that has sent no request for this long
    /// (lwmsg's `LWMSG_TIMEOUT_IDLE`), with
    /// [`CloseReason::Idle`](crate::CloseReason::Idle). Counted in
    /// quarters: a connection goes between this and 1.25 times this after
    /// its last request. Busy connections pay nothing for it (no clock is
    /// read per message; a timer looks at a counter each quarter, while
    /// there are connections). A client that only receives events sends
    /// nothing: give such clients a longer timeout, or have them send.
    /// Clients whose requests wait for the server (for room for an
    /// answer, or held by `Handler::ready`) are not idle. Default `None`
    /// (as is `Some(Duration::ZERO)`).
    pub idle_timeout: Option<Duration>,
    /// A per-connection queue for the events a client's ring has no room
    /// for (LibIPC's `MESSAGE_TX` queue), flushed as the client makes
    /// room, with what to do when it is full too. Default `None`:
    /// `send_event` returns `WouldBlock` when the ring is full, and the
    /// sender decides.
    pub event_queue: Option<EventQueue>,
    /// Clients beyond `max_clients` wait for a slot instead of being
    /// refused (lwmsg's listen queue): their handshake is answered, in
    /// the order they came, when a connection ends; one still waiting at
    /// its handshake deadline gets `TooManyClients`. Bounded by
    /// `max_handshakes` and `handshake_timeout`. Per-user and per-process
    /// quotas still refuse at once. Default false.
    pub queue_when_full: bool,
    /// How long the loop keeps polling the rings after its last piece of
    /// work before it sleeps in epoll. Default
    /// [`ringlink_ringbuf::DEFAULT_SPIN`].
    pub spin: Duration,
    /// Transport offered to clients.
    pub transport: Transport,
    /// Named rings (shared-memory transport): create each connection's
    /// rings as files in this directory (e.g. `/dev/shm`), owned and
    /// permitted as [`Handler::ring_auth`](crate::Handler::ring_auth)
    /// says, which the client opens by path; instead of sealed memfds
    /// passed as fds. The files exist only during the handshake: they
    /// are removed once the client has opened them, when the handshake
    /// fails, and, for files left by a server that was killed, by the
    /// next service that binds with the same directory. Default `None`
    /// (memfds).
    ///
    /// A named file cannot be sealed: a client with write access to it
    /// can truncate it and crash the server with `SIGBUS` on its next
    /// access. Use named rings only where clients are trusted not to;
    /// the default memfds exclude it.
    pub ring_dir: Option<PathBuf>,
    /// Where libqb connections' directories are made (libqb's clients
    /// look nowhere else by default). Default `/dev/shm`.
    pub libqb_dir: PathBuf,
    /// The fds the service accepts in requests (Legato's `le_msg_GetFd`,
    /// lwmsg's fd fields), announced to every client in the handshake:
    /// e.g. [`FdTerms::per_message(4)`](FdTerms::per_message). A client
    /// that sends more on one message, more in flight on its request
    /// channel, or a directory or `O_PATH` fd (unless
    /// [`FdTerms::directories`] allows them: they can reach outside a
    /// chroot) breaks the protocol and is disconnected, its fds closed on
    /// a thread of their own. Handlers take them with
    /// `Request::take_fds`. Default [`FdTerms::NONE`]: the kernel refuses
    /// a client's fds outright where it can (`SO_PASSRIGHTS`, Linux 6.16).
    /// What a client accepts in responses and events is its own choice
    /// (`Connection::client_fd_terms`). libqb connections carry no fds.
    pub accept_fds: FdTerms,
}

impl Default for ServiceOptions {
    fn default() -> ServiceOptions {
        ServiceOptions {
            max_message: 1 << 20,
            min_message: 64 << 10,
            max_clients: 1024,
            max_clients_per_uid: None,
            max_clients_per_pid: None,
            raise_fd_limit: true,
            max_handshakes: 1024,
            backlog: 128,
            socket_mode: 0o600,
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: None,
            event_queue: None,
            queue_when_full: false,
            spin: ringlink_ringbuf::DEFAULT_SPIN,
            transport: Transport::Shm,
            ring_dir: None,
            libqb_dir: PathBuf::from(ringlink_channel::qb::dir::DEFAULT_BASE),
            accept_fds: FdTerms::NONE,
        }
    }
}

/// Chaining setters, one per field, for the options' builder style
/// (`ServiceOptions::default().max_clients(64).idle_timeout(Some(t))`):
/// the struct is `#[non_exhaustive]`, so struct-update syntax is not
/// available outside this crate.
macro_rules! setters {
    ($($field:ident: $ty:ty,)*) => {
        impl ServiceOptions {
            $(
                #[doc = concat!("Sets the `", stringify!($field), "` field.")]
                #[must_use]
                pub fn $field(mut self, value: $ty) -> ServiceOptions {
                    self.$field = value;
                    self
                }
            )*
        }
    };
}

setters! {
    max_message: usize,
    min_message: usize,
    max_clients: usize,
    max_clients_per_uid: Option<usize>,
    max_clients_per_pid: Option<usize>,
    raise_fd_limit: bool,
    max_handshakes: usize,
    backlog: i32,
    socket_mode: u32,
    handshake_timeout: Duration,
    idle_timeout: Option<Duration>,
    event_queue: Option<EventQueue>,
    queue_when_full: bool,
    spin: Duration,
    transport: Transport,
    ring_dir: Option<PathBuf>,
    libqb_dir: PathBuf,
    accept_fds: FdTerms,
}

impl ServiceOptions {
    /// The payload size a connection gets when its client asks for
    /// `wanted` bytes: at least `min_message`, at most `max_message`.
    ///
    /// # Examples
    ///
    /// Each connection's three rings hold a message of this size with
    /// room for another, so `max_message` bounds what one client can make
    /// the service allocate (`docs/SERVER.md`, "What a connection costs"):
    ///
    /// ```
    /// use ringlink_ipcs::ServiceOptions;
    ///
    /// let opts = ServiceOptions::default()
    ///     .min_message(4 << 10) // what a client that asks for nothing gets
    ///     .max_message(256 << 10) // the most any client may ask for
    ///     .max_clients(200);
    /// assert_eq!(opts.negotiate(0), 4 << 10);
    /// assert_eq!(opts.negotiate(100 << 10), 100 << 10);
    /// assert_eq!(opts.negotiate(16 << 20), 256 << 10);
    /// ```
    pub fn negotiate(&self, wanted: u32) -> usize {
        (wanted as usize)
            .max(self.min_message)
            .min(self.max_message)
            .min(ringlink_common::wire::MAX_MESSAGE)
    }
}

/// A per-connection queue of events waiting for room in the client's ring
/// ([`ServiceOptions::event_queue`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventQueue {
    /// Most events kept per connection (at least 1); their bytes are
    /// copied, up to the negotiated maximum each.
    pub capacity: usize,
    /// What a send does when the queue is full.
    pub policy: QueuePolicy,
}

/// What `Connection::send_event` does when a client's ring and its
/// [`EventQueue`] are both full. Whatever is dropped is never silent: the
/// client's next `event_recv` returns `Error::Lagged(n)`, in order, where
/// the events are missing (tokio's broadcast reports `Lagged(n)` the same
/// way), and `ConnectionStats::events_dropped` counts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueuePolicy {
    /// The send returns `Error::WouldBlock`: nothing is dropped, the
    /// sender waits or gives up knowingly.
    Refuse,
    /// The oldest queued event is dropped to make room for the new one:
    /// a subscriber that falls behind gets the latest.
    DropOldest,
    /// The new event is dropped: a subscriber gets a prefix, then the
    /// notice.
    DropNewest,
}
