//! What the application plugs into a service.

use std::os::fd::OwnedFd;

use parking_lot::Mutex;

use ringlink_common::fdpass::PeerFds;
use ringlink_common::wire::{MsgHeader, Status};
use ringlink_common::Credentials;

pub use ringlink_channel::named::RingAuth;

use crate::Connection;

/// Why the accept handler refuses a client. The client gets the matching
/// error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reject {
    /// These credentials may not use the service.
    PermissionDenied,
    /// The service is full.
    TooManyClients,
    /// The service lacks resources for another client.
    Resources,
}

impl From<Reject> for Status {
    fn from(r: Reject) -> Status {
        match r {
            Reject::PermissionDenied => Status::PermissionDenied,
            Reject::TooManyClients => Status::TooManyClients,
            Reject::Resources => Status::Resources,
        }
    }
}

/// A request, viewed in place in the connection's request ring for the
/// duration of [`Handler::message`], with the fds it carried.
///
/// # Examples
///
/// A log service: one-way requests (nobody waits for an answer) carry
/// lines, and a request that needs a response asks how many came.
///
/// ```
/// use ringlink_ipcs::{Connection, Handler, Request, Service, ServiceAddr, ServiceOptions};
/// use std::sync::Mutex;
/// use std::time::Duration;
///
/// const LOG: i32 = 1;
/// const COUNT: i32 = 2;
///
/// struct Log(Mutex<Vec<String>>);
///
/// impl Handler for Log {
///     fn message(&self, conn: &Connection, req: &Request<'_>) {
///         match (req.id(), req.needs_response()) {
///             (LOG, false) => {
///                 // Memory the client shares: copy it, and check it as any input.
///                 let line = String::from_utf8_lossy(req.payload()).into_owned();
///                 self.0.lock().unwrap().push(line);
///             }
///             (COUNT, true) => {
///                 let n = self.0.lock().unwrap().len() as u32;
///                 let _ = conn.respond(req.seq(), COUNT, &n.to_le_bytes());
///             }
///             // Anything else: an error code the client reads in `Message::error`
///             // (refused with `Error::OneWay` for a one-way request, which gets nothing).
///             (id, _) => {
///                 let _ = conn.respond_error(req.seq(), id, ringlink_ipcs::ERROR_UNKNOWN_ID, b"");
///             }
///         }
///     }
/// }
///
/// # fn main() -> ringlink_ipcs::Result<()> {
/// # let addr = ServiceAddr::named(&format!("ringlink-doc-{}", std::process::id()));
/// let log = Log(Mutex::new(Vec::new()));
/// let mut service = Service::bind(addr.clone(), "log", ServiceOptions::default(), log)?;
/// # let control = service.control_handle();
/// # let server = std::thread::spawn(move || service.run());
///
/// use ringlink_ipcc::{Client, ConnectOptions};
/// let mut client = Client::connect(&addr, &ConnectOptions::new("log"))?;
/// client.send_oneway(LOG, b"started", None)?;
/// client.send_oneway(LOG, b"working", None)?;
/// let mut buf = [0u8; 4];
/// client.send_recv(COUNT, b"", &mut buf, Some(Duration::from_secs(5)))?;
/// assert_eq!(u32::from_le_bytes(buf), 2); // requests are taken in order
/// # control.shutdown();
/// # server.join().expect("server thread")?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Request<'a> {
    pub(crate) header: MsgHeader,
    pub(crate) payload: &'a [u8],
    /// Until taken; those left when the request is dropped are reaped.
    /// `None` when it came with none (most requests): nothing to build.
    fds: Option<Mutex<PeerFds>>,
}

/// A request copied out of the client's ring ([`Request::to_owned`]):
/// the same accessors, owned, with the fds the request still held.
#[derive(Debug)]
pub struct OwnedRequest {
    header: MsgHeader,
    payload: Vec<u8>,
    /// Until taken (a blocking route has the request by reference).
    fds: Mutex<PeerFds>,
}

impl OwnedRequest {
    /// How many fds the request carried.
    pub fn fd_count(&self) -> usize {
        usize::from(self.header.fds())
    }

    /// The fds the request carried and that went with this copy, in
    /// their order, taken (see [`Request::take_fds`]); a blocking route
    /// takes them through its `&OwnedRequest`.
    pub fn take_fds(&self) -> Vec<OwnedFd> {
        std::mem::take(&mut *self.fds.lock()).take()
    }

    /// The application's message id.
    pub fn id(&self) -> i32 {
        self.header.id
    }

    /// The sequence number to answer with; 0 for a one-way request.
    pub fn seq(&self) -> u64 {
        self.header.seq
    }

    /// Whether the client waits for a response ([`Request::needs_response`]).
    pub fn needs_response(&self) -> bool {
        !self.header.is_one_way()
    }

    /// The payload, copied.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }
}

impl<'a> Request<'a> {
    pub(crate) fn new(header: MsgHeader, payload: &'a [u8], fds: PeerFds) -> Request<'a> {
        Request {
            header,
            payload,
            fds: (!fds.is_empty()).then(|| Mutex::new(fds)),
        }
    }

    /// How many fds the request carried (`Client::send_with_fds`; none
    /// unless [`ServiceOptions::accept_fds`](crate::ServiceOptions::accept_fds)
    /// lets clients send them).
    pub fn fd_count(&self) -> usize {
        usize::from(self.header.fds())
    }

    /// The fds the request carried, in the order the client gave them,
    /// taken: close-on-exec, checked against the service's
    /// [`accept_fds`](crate::ServiceOptions::accept_fds) terms (no
    /// directory or `O_PATH` fd unless allowed). Yours to keep beyond the
    /// handler; a second call returns none. Those not taken when the
    /// request is done are closed, on a thread of their own (the last
    /// close of some files waits, and a client chooses the files).
    ///
    /// # Examples
    ///
    /// The client hands the service one end of a socket pair, and the
    /// service writes into it:
    ///
    /// ```
    /// use ringlink_ipcs::{Dispatch, FdTerms, Service, ServiceAddr, ServiceOptions};
    /// use std::io::{Read, Write};
    /// use std::os::fd::AsFd;
    /// use std::os::unix::net::UnixStream;
    /// use std::time::Duration;
    ///
    /// const OPEN: i32 = 1;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let table = Dispatch::new().on(OPEN, |conn, req| {
    ///     let answer: &[u8] = match req.take_fds().pop() {
    ///         Some(fd) => {
    ///             let mut stream = UnixStream::from(fd);
    ///             let _ = stream.write_all(b"hello through your fd");
    ///             b"ok"
    ///         }
    ///         None => b"no fd",
    ///     };
    ///     let _ = conn.respond(req.seq(), OPEN, answer);
    /// });
    /// // Nothing is accepted unless the service says so: at most 1 per request here.
    /// let opts = ServiceOptions::default().accept_fds(FdTerms::per_message(1));
    /// # let addr = ServiceAddr::named(&format!("ringlink-doc-{}", std::process::id()));
    /// let mut service = Service::bind(addr.clone(), "fds", opts, table)?;
    /// # let control = service.control_handle();
    /// # let server = std::thread::spawn(move || service.run());
    ///
    /// use ringlink_ipcc::{Client, ConnectOptions};
    /// let mut client = Client::connect(&addr, &ConnectOptions::new("fds"))?;
    /// let (mut ours, theirs) = UnixStream::pair()?;
    /// client.send_with_fds(OPEN, b"", &[theirs.as_fd()], None)?;
    /// drop(theirs); // the service has its own copy now
    /// let mut buf = [0u8; 8];
    /// let m = client.recv(&mut buf, Some(Duration::from_secs(5)))?;
    /// assert_eq!(&buf[..m.len], b"ok");
    /// let mut text = String::new();
    /// ours.read_to_string(&mut text)?; // until the service's copy is closed
    /// assert_eq!(text, "hello through your fd");
    /// # control.shutdown();
    /// # server.join().expect("server thread")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn take_fds(&self) -> Vec<OwnedFd> {
        self.fds
            .as_ref()
            .map_or_else(Vec::new, |fds| std::mem::take(&mut *fds.lock()).take())
    }

    /// The application's message id.
    pub fn id(&self) -> i32 {
        self.header.id
    }

    /// The sequence number to answer with ([`Connection::respond`]); 0
    /// for a one-way request.
    pub fn seq(&self) -> u64 {
        self.header.seq
    }

    /// Whether the client waits for a response: `false` for a one-way
    /// request (`Client::send_oneway`, Legato's `le_msg_Send` against
    /// `le_msg_NeedsResponse`), which a response would only fill a ring
    /// with (`respond` refuses it with `Error::OneWay`). Always `true`
    /// from libqb clients, whose protocol has no such mark (see
    /// `Connection::skip_response`).
    pub fn needs_response(&self) -> bool {
        !self.header.is_one_way()
    }

    /// A copy, for work done after the handler returns (on another
    /// thread: [`Dispatch::on_blocking`](crate::Dispatch::on_blocking)).
    /// The fds not yet taken go with it (a later copy has none).
    pub fn to_owned(&self) -> OwnedRequest {
        OwnedRequest {
            header: self.header,
            payload: self.payload.to_vec(),
            fds: Mutex::new(PeerFds::new(self.take_fds())),
        }
    }

    /// The payload. It lives in memory the client shares: copy what you
    /// keep, and validate it as any input.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
}

/// The application's side of a service: called on the service's loop
/// thread. The handler is also the service-wide context: keep shared
/// state in it (it is `Sync`).
///
/// Every connection that passes `accept` and completes the handshake gets
/// exactly one `connection_created`, then `message` for each request, then
/// exactly one `connection_closed` and one `connection_destroyed`, in that
/// order, whether the client left, died, or the server disconnected it.
///
/// # Examples
///
/// A service for its own user only, that greets each client with an
/// event and counts what it serves (the handler is the service-wide
/// state, reachable as [`Service::handler`](crate::Service::handler)):
///
/// ```
/// use ringlink_ipcs::{Connection, Credentials, Handler, Reject, Request};
/// use ringlink_ipcs::{Service, ServiceAddr, ServiceOptions};
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::time::Duration;
///
/// const HELLO: i32 = 100;
///
/// struct Greeter {
///     uid: u32,
///     served: AtomicU64,
/// }
///
/// impl Handler for Greeter {
///     // From the kernel (SO_PEERCRED), never from what the client says.
///     fn accept(&self, client: &Credentials) -> Result<(), Reject> {
///         if client.uid == self.uid {
///             Ok(())
///         } else {
///             Err(Reject::PermissionDenied) // the client gets Error::Rejected
///         }
///     }
///
///     fn connection_created(&self, conn: &Connection) {
///         let _ = conn.send_event(HELLO, b"welcome");
///     }
///
///     fn message(&self, conn: &Connection, req: &Request<'_>) {
///         self.served.fetch_add(1, Ordering::Relaxed);
///         let _ = conn.respond(req.seq(), req.id(), req.payload());
///     }
///
///     fn connection_closed(&self, conn: &Connection) {
///         eprintln!("client {} closed: {:?}", conn.id(), conn.close_reason());
///     }
/// }
///
/// # fn main() -> ringlink_ipcs::Result<()> {
/// # let addr = ServiceAddr::named(&format!("ringlink-doc-{}", std::process::id()));
/// let greeter = Greeter { uid: Credentials::current().uid, served: AtomicU64::new(0) };
/// let mut service = Service::bind(addr.clone(), "greeter", ServiceOptions::default(), greeter)?;
/// let control = service.control_handle();
/// // The thread hands the service back when it stops.
/// let server = std::thread::spawn(move || service.run().map(|()| service));
///
/// use ringlink_ipcc::{Client, ConnectOptions};
/// let mut client = Client::connect(&addr, &ConnectOptions::new("greeter"))?;
/// let mut buf = vec![0u8; client.max_message()];
/// let m = client.event_recv(&mut buf, Some(Duration::from_secs(5)))?;
/// assert_eq!((m.id, &buf[..m.len]), (HELLO, &b"welcome"[..]));
/// client.send_recv(1, b"hi", &mut buf, Some(Duration::from_secs(5)))?;
///
/// drop(client);
/// control.shutdown();
/// let service = server.join().expect("server thread")?;
/// assert_eq!(service.handler().served.load(Ordering::Relaxed), 1);
/// # Ok(())
/// # }
/// ```
pub trait Handler: Send + Sync + 'static {
    /// Decides whether a client may connect, from its kernel-verified
    /// credentials. Default: everyone.
    ///
    /// # Errors
    ///
    /// The [`Reject`] reason the client will see.
    fn accept(&self, credentials: &Credentials) -> Result<(), Reject> {
        let _ = credentials;
        Ok(())
    }

    /// Owner, group and mode of a new connection's ring files, when the
    /// service uses named rings ([`ServiceOptions::ring_dir`](crate::ServiceOptions::ring_dir)):
    /// libqb's `qb_ipcs_connection_auth_set`. Called right after
    /// [`accept`](Self::accept) admitted the client. The client opens the
    /// files by path, so they must let it read and write them. Default:
    /// [`RingAuth::default`] (the server's user and group, mode 0600),
    /// right for clients running as the server's user; a root server
    /// serving other users typically returns
    /// [`RingAuth::owned_by`]`(credentials)`.
    fn ring_auth(&self, credentials: &Credentials) -> RingAuth {
        let _ = credentials;
        RingAuth::default()
    }

    /// A connection is ready; events may be sent on it from here on.
    fn connection_created(&self, conn: &Connection) {
        let _ = conn;
    }

    /// A request arrived. Answer with [`Connection::respond`] now or
    /// later, from any thread.
    fn message(&self, conn: &Connection, request: &Request<'_>);

    /// Whether the handler takes a request with message id `id` from
    /// `conn` now. `false` leaves it, and every later request of that
    /// connection, in order in the client's ring (or socket), and the
    /// loop stops looking at the connection until
    /// [`Connection::resume`] is called: back-pressure without losing
    /// anything, and without stopping other connections
    /// ([`Dispatch`](crate::Dispatch)'s worker pool uses it). Default:
    /// always.
    fn ready(&self, conn: &Connection, id: i32) -> bool {
        let _ = (conn, id);
        true
    }

    /// The connection is closing: no more requests will come, and sends
    /// on it fail with `Disconnected`.
    fn connection_closed(&self, conn: &Connection) {
        let _ = conn;
    }

    /// The connection's rings, fds and memory have been released.
    fn connection_destroyed(&self, conn: &Connection) {
        let _ = conn;
    }
}
