//! A connection's set of three channels (request, response, event),
//! defined once: their sizes, the order their fds travel in, their
//! names; made by the server ([`offer`]) and opened by the client
//! ([`open`]) from the same definitions (`docs/PROTOCOL.md` §2.2).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use ringlink_common::fdpass::{self, PeerFds};
use ringlink_common::wire::{
    ConnectResponse, Status, Transport, MSG_HEADER_LEN, NAMED_SHM_FDS, SHM_FDS, SOCKET_FDS,
};
use ringlink_common::{Channel, Credentials, Error, Peer, RingRefusal, Violation};
use ringlink_ringbuf::{ClaimError, Ring, Wake};

use crate::fds::{FdAgreement, FdInbox, FdOutbox};
use crate::named::{self, OpenDir, RingAuth, RingDir};
use crate::ring::{RingReceiver, RingSender};
use crate::socket::{self, SockRx, SockTx, SocketReceiver, SocketSender};
use crate::{stream, Receiver, Sender};

/// Smallest ring a connection gets, whatever its message size.
pub const MIN_RING_CAPACITY: usize = 32 * 1024;

/// The ring capacity that carries messages of up to `max_message` payload
/// bytes: the ring's largest record (`capacity / 2 - 8`) must hold the
/// message header and payload.
pub fn ring_capacity_for(max_message: usize) -> usize {
    let record = MSG_HEADER_LEN + max_message + 8;
    (2 * record).next_power_of_two().max(MIN_RING_CAPACITY)
}

/// Whether a ring of `capacity` bytes holds a message of `max_message`
/// payload bytes.
pub fn holds(capacity: usize, max_message: usize) -> bool {
    ringlink_ringbuf::layout::max_payload(capacity) >= MSG_HEADER_LEN + max_message
}

/// The fds an accepted answer carries: three memfds (none with named
/// rings) or two sockets.
pub fn fd_count(transport: Transport, named: bool) -> usize {
    match (transport, named) {
        (Transport::Socket, _) => SOCKET_FDS,
        (_, true) => NAMED_SHM_FDS,
        (_, false) => SHM_FDS,
    }
}

pub use ringlink_common::handshake::trailer_len;

/// What a server made for a connection and offers its client: the
/// channels, and what the answer carries (fds, trailer, sizes).
#[derive(Debug)]
pub struct Offer {
    transport: Transport,
    max_message: usize,
    request: Receiver,
    response: Sender,
    event: Sender,
    /// The rings (shared memory): to close, to publish the level in, and
    /// their memory fds until the answer is sent.
    rings: Option<[Ring; 3]>,
    /// The named rings' path prefix.
    prefix: Option<Vec<u8>>,
    /// The client's ends of the socket pairs, until the answer is sent.
    client_ends: Vec<OwnedFd>,
    /// The server's ends (socket transport), for closing.
    sockets: Vec<Arc<OwnedFd>>,
    level: u32,
    /// Both sides' fd terms.
    fds: FdAgreement,
    /// Where the client's fds are filed (rings, when the server takes any).
    inbox: Option<Arc<FdInbox>>,
}

/// Makes a connection's channels, as its server: three rings waking the
/// client through `stream` (sealed memfds, or files in `named` owned as
/// its `RingAuth` says), or two socket pairs; `level` is the flow-control
/// level to publish at once; `fds` the two sides' fd terms (the stream,
/// or the request socket, accepts fds only if the server takes any).
///
/// # Errors
///
/// What a system call said (out of fds or memory).
pub fn offer(
    transport: Transport,
    id: u64,
    max_message: usize,
    named: Option<(&RingDir, RingAuth)>,
    stream: &Arc<UnixStream>,
    level: u32,
    fds: FdAgreement,
) -> io::Result<Offer> {
    let mut offer = match transport {
        Transport::Socket => {
            let (rr, rr_client) = socket::pair()?;
            let (ev, ev_client) = socket::pair()?;
            // The client passes no fds on the event socket, ever, and on
            // the request socket only to a server that takes them.
            if !fds.ours.accepts_any() {
                fdpass::refuse_fds(rr.as_fd());
            }
            fdpass::refuse_fds(ev.as_fd());
            let (rr, ev) = (Arc::new(rr), Arc::new(ev));
            let rx = SockRx::new(rr.clone(), max_message).accept_fds(fds.ours);
            let mut request =
                Receiver::Socket(SocketReceiver::new(rx, Channel::Request, Peer::Client));
            // The server's loop reads a socket after epoll said so.
            request.mark_readable();
            Offer {
                transport,
                max_message,
                request,
                response: Sender::Socket(SocketSender::new(SockTx::new(rr.clone())?, fds.theirs)),
                event: Sender::Socket(SocketSender::new(SockTx::new(ev.clone())?, fds.theirs)),
                rings: None,
                prefix: None,
                client_ends: vec![rr_client, ev_client],
                sockets: vec![rr, ev],
                level,
                fds,
                inbox: None,
            }
        }
        _ => {
            let cap = ring_capacity_for(max_message);
            let wake = || Wake::Socket(stream.clone());
            let (rings, prefix) = match named {
                None => {
                    let one = || {
                        Ring::create_memfd_waking("ringlink", cap, wake()).map_err(io::Error::other)
                    };
                    ([one()?, one()?, one()?], None)
                }
                Some((dir, auth)) => {
                    let (rings, prefix) = dir.make(id, cap, auth, wake)?;
                    (rings, Some(prefix))
                }
            };
            let claim = |e: ClaimError| io::Error::other(format!("claiming a fresh ring: {e}"));
            let request = rings[0].consumer().map_err(claim)?;
            let response = rings[1].producer().map_err(claim)?;
            let event = rings[2].producer().map_err(claim)?;
            let inbox = fds
                .ours
                .accepts_any()
                .then(|| FdInbox::new(fds.ours, Peer::Client));
            let outbox = |channel| {
                fds.theirs
                    .accepts_any()
                    .then(|| FdOutbox::new(stream.clone(), fds.theirs, channel))
            };
            Offer {
                transport,
                max_message,
                request: Receiver::Ring(RingReceiver::new(
                    request,
                    Channel::Request,
                    Peer::Client,
                    max_message,
                    inbox.clone().map(|i| (i, stream.clone())),
                )),
                response: Sender::Ring(RingSender::new(
                    response,
                    Channel::Response,
                    Peer::Client,
                    outbox(Channel::Response),
                )),
                event: Sender::Ring(RingSender::new(
                    event,
                    Channel::Event,
                    Peer::Client,
                    outbox(Channel::Event),
                )),
                rings: Some(rings),
                prefix,
                client_ends: Vec::new(),
                sockets: Vec::new(),
                level,
                fds,
                inbox,
            }
        }
    };
    // The flow-control level is in the ring before the client can see
    // it, so a client connecting while requests are not read is held back
    // from its first send.
    offer.request.publish_user_word(level);
    if offer.inbox.is_some() {
        // The client's fds come on the stream: let them.
        fdpass::accept_fds(stream.as_fd());
    }
    Ok(offer)
}

impl Offer {
    /// The server's fd terms, announced in the answer's trailer.
    pub fn fd_terms(&self) -> ringlink_common::wire::FdTerms {
        self.fds.ours
    }

    /// The negotiated largest payload of the connection's messages.
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    /// The accepting answer for connection `id`.
    pub fn answer(&self, id: u64) -> ConnectResponse {
        let cap = |i: usize| self.rings.as_ref().map_or(0, |r| r[i].capacity() as u64);
        ConnectResponse {
            status: Status::Ok,
            connection_id: id,
            max_message: self.max_message as u32,
            fd_count: fd_count(self.transport, self.prefix.is_some()) as u16,
            path_len: self.prefix.as_ref().map_or(0, |p| p.len() as u16),
            request_capacity: cap(0),
            response_capacity: cap(1),
            event_capacity: cap(2),
        }
    }

    /// The fds the answer carries, in their order.
    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        match &self.rings {
            Some(_) if self.prefix.is_some() => Vec::new(),
            Some(rings) => rings.iter().filter_map(Ring::memory_fd).collect(),
            None => self.client_ends.iter().map(AsFd::as_fd).collect(),
        }
    }

    /// The bytes that follow the answer: the path prefix (named rings) or
    /// the flow-control level (socket transport).
    pub fn trailer(&self) -> Vec<u8> {
        match (&self.prefix, self.transport) {
            (Some(p), _) => p.clone(),
            (None, Transport::Socket) => vec![self.level as u8],
            _ => Vec::new(),
        }
    }

    /// The answer went: the client has its copies (or opens the files by
    /// path), and the server keeps only the mappings and its own ends.
    pub fn sent(&mut self) {
        if let Some(rings) = &mut self.rings {
            for r in rings {
                r.forget_memory_fd();
            }
        }
        self.client_ends.clear();
    }

    /// The handshake ended without a connection: all three rings are
    /// marked closed by both sides (so a client that mapped them sees
    /// them closed from either side), named files are removed, and the
    /// server's sockets closed where their closing cannot hold the
    /// caller.
    pub fn abandon(self) {
        if let Some(rings) = &self.rings {
            for r in rings {
                r.close();
            }
        }
        let Offer {
            request,
            response,
            event,
            rings,
            sockets,
            ..
        } = self;
        drop((request, response, event, rings));
        close_sockets(sockets);
    }

    /// The client confirmed: the channels, split between the loop
    /// (`ServerSide`) and the connection's senders. `level` is the
    /// flow-control level now: published again (a client already waiting
    /// on it is woken), or sent on `stream` if it changed (sockets).
    pub fn accept(self, level: u32, stream: &UnixStream) -> (ServerSide, Sender, Sender) {
        if let Some(rings) = &self.rings {
            // Named files have served their purpose: the client opened
            // them before confirming (or will never use them).
            for r in rings {
                let _ = r.unlink();
            }
        }
        let holds = match self.rings {
            Some(rings) => Holds::Rings(rings),
            None => Holds::Sockets(self.sockets),
        };
        let mut side = ServerSide {
            request: self.request,
            holds,
            inbox: self.inbox,
            fds: self.fds.ours,
        };
        side.publish_level(level, level != self.level, stream);
        (side, self.response, self.event)
    }
}

/// What the server's loop holds of a live connection's channels: its
/// requests, and what it closes and publishes the flow-control level
/// through. The response and event senders live in the connection's
/// handle, for any thread.
#[derive(Debug)]
pub struct ServerSide {
    /// The requests.
    pub request: Receiver,
    holds: Holds,
    /// Where the client's fds are filed as the stream brings them
    /// (rings, when the server takes any).
    inbox: Option<Arc<FdInbox>>,
    /// What the server accepts of the client's fds.
    fds: ringlink_common::wire::FdTerms,
}

/// What else a server side holds, by transport.
#[derive(Debug)]
enum Holds {
    /// ringlink's rings: closed, and unmapped last.
    Rings([Ring; 3]),
    /// ringlink's sockets: shut down, and closed where their closing
    /// cannot hold the loop.
    Sockets(Vec<Arc<OwnedFd>>),
    /// libqb's rings: their directory and files, removed at the end.
    QbShm(crate::qb::dir::ConnDir),
    /// libqb's sockets: the directory, the control file (the level's
    /// word), the request and event sockets.
    QbSocket {
        dir: crate::qb::dir::ConnDir,
        ctl: Arc<ringlink_ringbuf::guard::GuardedMap>,
        fds: [Arc<OwnedFd>; 2],
    },
}

impl ServerSide {
    /// A libqb socket connection's server side (`crate::qb::set`).
    pub(crate) fn qb_socket(
        request: Receiver,
        dir: crate::qb::dir::ConnDir,
        ctl: Arc<ringlink_ringbuf::guard::GuardedMap>,
        fds: [Arc<OwnedFd>; 2],
    ) -> ServerSide {
        ServerSide {
            request,
            holds: Holds::QbSocket { dir, ctl, fds },
            inbox: None,
            fds: ringlink_common::wire::FdTerms::NONE,
        }
    }

    /// A libqb connection's server side (`crate::qb::set`).
    pub(crate) fn qb_shm(request: Receiver, dir: crate::qb::dir::ConnDir) -> ServerSide {
        ServerSide {
            request,
            holds: Holds::QbShm(dir),
            inbox: None,
            fds: ringlink_common::wire::FdTerms::NONE,
        }
    }
}

/// Which of a connection's socket-transport fds the server's loop polls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watch {
    /// The request socket: readable (requests), writable (a response's
    /// tail may go on).
    Requests,
    /// The event socket: writable (an event's tail may go on).
    Events,
}

impl ServerSide {
    /// Where the client's fds are filed: hand it to
    /// [`stream::read_out`] when draining the stream.
    pub fn fd_inbox(&self) -> Option<&Arc<FdInbox>> {
        self.inbox.as_ref()
    }

    /// What the server accepts of the client's fds (its terms).
    pub fn fd_terms(&self) -> ringlink_common::wire::FdTerms {
        self.fds
    }

    /// The fds the loop polls besides the stream socket (edge-triggered),
    /// and for what: none for rings (their wake-ups come on the stream).
    pub fn watched(&self) -> Vec<(BorrowedFd<'_>, Watch)> {
        match &self.holds {
            Holds::Sockets(s) => match s.as_slice() {
                [rr, ev] => vec![(rr.as_fd(), Watch::Requests), (ev.as_fd(), Watch::Events)],
                _ => Vec::new(),
            },
            Holds::QbSocket { fds: [rr, ev], .. } => {
                vec![(rr.as_fd(), Watch::Requests), (ev.as_fd(), Watch::Events)]
            }
            _ => Vec::new(),
        }
    }

    /// Whether the client's bytes on the stream socket are wake-ups
    /// (ringlink's rings) or announce requests (libqb's rings; over
    /// libqb's sockets they mean nothing, and are read and thrown away
    /// as libqb's server does); over ringlink's socket transport it may
    /// send none.
    pub fn wakes_on_stream(&self) -> bool {
        !matches!(self.holds, Holds::Sockets(_))
    }

    /// Whether the client is told of room in its channels by nothing but
    /// its reading them (libqb): a server waiting for room must look
    /// again on its own, every so often.
    pub fn polled(&self) -> bool {
        matches!(self.holds, Holds::QbShm(_) | Holds::QbSocket { .. })
    }

    /// Publishes the flow-control level: in the request ring's user word,
    /// waking a client whose send waits on it (libqb: its flow-control
    /// word), or as a byte on `stream` (socket transport; `changed`: only
    /// when it differs from the last).
    pub fn publish_level(&mut self, level: u32, changed: bool, stream: &UnixStream) {
        match &self.holds {
            Holds::Sockets(_) if changed => stream::send_byte(stream, level as u8),
            Holds::Sockets(_) => {}
            Holds::QbSocket { ctl, .. } => ctl
                .u32(ringlink_common::qb::control::FLOW_CONTROL)
                .store(level, std::sync::atomic::Ordering::Release),
            _ => self.request.publish_user_word(level),
        }
    }

    /// Closes the channels before anyone hears of it: both closed bits of
    /// every ring (a thread blocked on one wakes; the client still reads
    /// what was published), the sockets shut down, or (libqb) the request
    /// ring's count of users cleared, which a libqb client reads as the
    /// server gone.
    pub fn close(&self) {
        match &self.holds {
            Holds::Rings(rings) => {
                for r in rings {
                    r.close();
                }
            }
            Holds::Sockets(sockets) => {
                for s in sockets {
                    let _ = nix::sys::socket::shutdown(
                        std::os::fd::AsRawFd::as_raw_fd(&**s),
                        nix::sys::socket::Shutdown::Both,
                    );
                }
            }
            Holds::QbShm(_) => {
                if let Receiver::QbShm(r) = &self.request {
                    r.ring().set_ref_count(0);
                }
            }
            Holds::QbSocket { fds, .. } => {
                for s in fds {
                    let _ = nix::sys::socket::shutdown(
                        std::os::fd::AsRawFd::as_raw_fd(&**s),
                        nix::sys::socket::Shutdown::Both,
                    );
                }
            }
        }
    }

    /// Releases everything: the rings unmapped, the sockets (with the
    /// senders' handles on them, `senders`) closed where their closing
    /// cannot hold the caller, libqb's files removed.
    pub fn release(self, senders: impl IntoIterator<Item = Sender>) {
        let ServerSide { request, holds, .. } = self;
        let mut sockets = Vec::new();
        for s in senders {
            sockets.extend(s.into_socket());
        }
        sockets.extend(request.into_socket());
        match holds {
            Holds::Rings(rings) => drop(rings),
            Holds::Sockets(s) => sockets.extend(s),
            // The rings are unmapped (dropped above); the files go now.
            Holds::QbShm(dir) => drop(dir),
            Holds::QbSocket { dir, ctl, fds } => {
                sockets.extend(fds);
                drop((ctl, dir));
            }
        }
        close_sockets(sockets);
    }
}

/// Closes the last handle of each socket a peer can write to with
/// `fdpass::close_refusing` (shared handles are dropped until the last).
fn close_sockets(sockets: Vec<Arc<OwnedFd>>) {
    for s in sockets {
        if let Ok(fd) = Arc::try_unwrap(s) {
            fdpass::close_refusing(fd);
        }
    }
}

/// A connection's channels as its client holds them.
#[derive(Debug)]
pub struct ClientSide {
    /// Requests out.
    pub request: Sender,
    /// Responses in.
    pub response: Receiver,
    /// Events in.
    pub event: Receiver,
    kind: ClientKind,
    /// Where the server's fds are filed as the stream brings them
    /// (rings, when the client takes any).
    inbox: Option<Arc<FdInbox>>,
}

/// What else a client side holds, by transport.
#[derive(Debug)]
enum ClientKind {
    /// ringlink's rings (the level is in the request ring's header).
    Rings([Ring; 3]),
    /// ringlink's sockets (the level comes on the stream).
    Sockets,
    /// libqb's rings (the level is the request ring's flow-control word).
    QbShm,
    /// libqb's sockets (the level is in the control file).
    QbSocket(Arc<ringlink_ringbuf::guard::GuardedMap>),
}

impl ClientSide {
    /// A libqb connection's client side (`crate::qb::set`).
    pub(crate) fn qb_shm(request: Sender, response: Receiver, event: Receiver) -> ClientSide {
        ClientSide {
            request,
            response,
            event,
            kind: ClientKind::QbShm,
            inbox: None,
        }
    }

    /// A libqb socket connection's client side (`crate::qb::set`).
    pub(crate) fn qb_socket(
        request: Sender,
        response: Receiver,
        event: Receiver,
        ctl: Arc<ringlink_ringbuf::guard::GuardedMap>,
    ) -> ClientSide {
        ClientSide {
            request,
            response,
            event,
            kind: ClientKind::QbSocket(ctl),
            inbox: None,
        }
    }

    /// Where the server's fds are filed: hand it to
    /// [`stream::read_out`] when draining the stream.
    pub fn fd_inbox(&self) -> Option<&Arc<FdInbox>> {
        self.inbox.as_ref()
    }

    /// Whether the server is a libqb one: over its rings it signals
    /// responses only through their semaphore; either way it says nothing
    /// when it makes room or changes its flow-control level.
    pub fn is_libqb(&self) -> bool {
        matches!(self.kind, ClientKind::QbShm | ClientKind::QbSocket(_))
    }

    /// The server's flow-control level from the request ring's user word
    /// (shared memory; libqb: its flow-control word); `None` over
    /// sockets, where it comes on the stream.
    pub fn level(&self) -> Option<u32> {
        match &self.kind {
            ClientKind::Rings(r) => Some(r[0].user_word()),
            ClientKind::QbShm => match &self.request {
                Sender::QbShm(q) => Some(q.ring().fc().max(0) as u32),
                _ => None,
            },
            ClientKind::QbSocket(ctl) => Some(
                (ctl.u32(ringlink_common::qb::control::FLOW_CONTROL)
                    .load(std::sync::atomic::Ordering::Acquire) as i32)
                    .max(0) as u32,
            ),
            ClientKind::Sockets => None,
        }
    }

    /// Whether the server closed a ring (rings; a socket's closing shows
    /// when it is read; a libqb server clears the request ring's count of
    /// users).
    pub fn closed(&self) -> bool {
        let libqb_gone = match (&self.kind, &self.request) {
            (ClientKind::QbShm, Sender::QbShm(q)) => q.ring().ref_count() != 2,
            _ => false,
        };
        libqb_gone
            || self.request.is_closed()
            || self.response.is_closed()
            || self.event.is_closed()
    }

    /// Before the client lets go of its sockets (socket transport): shuts
    /// them down and reads out what the server queued, fds reaped, so that
    /// their last close (in the caller's thread) closes no fd of the
    /// server's choosing. No effect on rings.
    pub fn read_out_for_close(&self) {
        for rx in [&self.response, &self.event] {
            if let Receiver::Socket(_) = rx {
                if let Some(fd) = rx.poll_fd() {
                    let _ = nix::sys::socket::shutdown(
                        std::os::fd::AsRawFd::as_raw_fd(&fd),
                        nix::sys::socket::Shutdown::Both,
                    );
                    stream::read_out_shut(fd);
                }
            }
        }
    }

    /// Marks the rings closed from the client's side (its roles' bits).
    pub fn close(&mut self) {
        self.request.close();
        self.response.close();
        self.event.close();
    }

    /// The receiver of responses (`event`: of events).
    pub fn receiver(&mut self, event: bool) -> &mut Receiver {
        if event {
            &mut self.event
        } else {
            &mut self.response
        }
    }
}

/// What a client's handshake read of an accepting answer
/// (`ClientEvent::Accepted`, with the client's own fd terms).
#[derive(Debug)]
pub struct Accepted {
    /// The decoded answer.
    pub answer: ConnectResponse,
    /// The fds that came with it (reaped if refused).
    pub fds: PeerFds,
    /// What followed the answer and the server's fd terms: the level
    /// byte, or the path prefix.
    pub trailer: Vec<u8>,
    /// The two sides' fd terms.
    pub terms: FdAgreement,
}

/// Opens the channels of an accepted answer, as its client: checks the
/// fds that came and what followed the answer, maps the rings with
/// `stream` for their wake-ups (or takes the sockets), claims the
/// client's roles, under the two sides' fd terms. The socket transport's
/// initial flow-control level is returned too.
///
/// # Errors
///
/// [`Error::Protocol`] for anything the protocol does not allow;
/// [`Error::Io`].
pub fn open(
    transport: Transport,
    accepted: Accepted,
    stream: &Arc<UnixStream>,
    server: Credentials,
    spin: Duration,
) -> Result<(ClientSide, u32), Error> {
    let Accepted {
        answer,
        fds,
        trailer,
        terms,
    } = accepted;
    let trailer = &trailer[..];
    let max_message = answer.max_message as usize;
    let named = transport != Transport::Socket && answer.path_len != 0;
    let expected = fd_count(transport, named);
    if fds.len() != expected
        || answer.fd_count as usize != expected
        || (transport == Transport::Socket && answer.path_len != 0)
    {
        return Err(Error::Protocol(Violation::FdCount {
            expected: expected as u16,
            announced: answer.fd_count,
            received: fds.len() as u16,
        }));
    }
    if transport == Transport::Socket {
        return open_sockets(fds, trailer, max_message, terms);
    }
    let refused = |channel, refusal| {
        Error::Protocol(Violation::RingRefused {
            channel,
            named,
            refusal,
        })
    };
    // Sealed memfds only reach the ring crate (which closes what it
    // refuses); anything else is reaped.
    if !fds.iter().all(is_sealed_memfd) {
        return Err(refused(Channel::Request, RingRefusal::NotSealed));
    }
    let mut fds = fds.take().into_iter();
    let dir = if named {
        Some(OpenDir::open(trailer)?)
    } else {
        None
    };
    let capacities = [
        answer.request_capacity,
        answer.response_capacity,
        answer.event_capacity,
    ];
    let mut rings = Vec::with_capacity(3);
    for (channel, capacity) in Channel::ALL.into_iter().zip(capacities) {
        // Wake-ups both ways travel on the connection's socket.
        let wake = Wake::Socket(stream.clone());
        let mut ring = match (&dir, fds.next()) {
            (Some(dir), _) => dir.open_ring(channel, wake, server)?,
            (None, Some(memory)) => {
                Ring::from_memfd(memory, wake).map_err(|e| match named::refusal(e) {
                    Ok(r) => refused(channel, r),
                    Err(io) => Error::Io(io),
                })?
            }
            (None, None) => unreachable!("the fd count was checked"),
        };
        // Mapped: the fd (shared with the server) is not needed again.
        ring.forget_memory_fd();
        if ring.capacity() as u64 != capacity || !holds(ring.capacity(), max_message) {
            return Err(refused(channel, RingRefusal::Size));
        }
        rings.push(ring);
    }
    let rings: [Ring; 3] = rings.try_into().expect("three rings");
    let claim = |channel, e: ClaimError| match e {
        ClaimError::Taken { owner, .. } => refused(channel, RingRefusal::RoleTaken { owner }),
        ClaimError::Corrupt(corruption) => Error::Protocol(Violation::CorruptRing {
            by: Peer::Server,
            channel,
            corruption,
        }),
        _ => refused(channel, RingRefusal::Incompatible("claim")),
    };
    let mut request = rings[0]
        .producer()
        .map_err(|e| claim(Channel::Request, e))?;
    let mut response = rings[1]
        .consumer()
        .map_err(|e| claim(Channel::Response, e))?;
    let mut event = rings[2].consumer().map_err(|e| claim(Channel::Event, e))?;
    request.set_spin(spin);
    response.set_spin(spin);
    event.set_spin(spin);
    if let Some(dir) = &dir {
        // Mapped: the names are no longer needed. The server removes them
        // too; whoever is first wins (we may lack the right to, in a
        // sticky directory, if the files are not ours).
        for channel in Channel::ALL {
            dir.remove(channel);
        }
    }
    let inbox = terms
        .ours
        .accepts_any()
        .then(|| FdInbox::new(terms.ours, Peer::Server));
    if inbox.is_some() {
        // The server's fds come on the stream: let them (before the
        // confirmation, after which it may send some).
        fdpass::accept_fds(stream.as_fd());
    }
    let filed = || inbox.clone().map(|i| (i, stream.clone()));
    let outbox = terms
        .theirs
        .accepts_any()
        .then(|| FdOutbox::new(stream.clone(), terms.theirs, Channel::Request));
    let side = ClientSide {
        request: Sender::Ring(RingSender::new(
            request,
            Channel::Request,
            Peer::Server,
            outbox,
        )),
        response: Receiver::Ring(RingReceiver::new(
            response,
            Channel::Response,
            Peer::Server,
            max_message,
            filed(),
        )),
        event: Receiver::Ring(RingReceiver::new(
            event,
            Channel::Event,
            Peer::Server,
            max_message,
            filed(),
        )),
        kind: ClientKind::Rings(rings),
        inbox,
    };
    Ok((side, 0))
}

/// The socket transport's half of [`open`]: two `SOCK_SEQPACKET`
/// sockets, and the level byte.
fn open_sockets(
    fds: PeerFds,
    trailer: &[u8],
    max_message: usize,
    terms: FdAgreement,
) -> Result<(ClientSide, u32), Error> {
    for fd in fds.iter() {
        if socket::check(fd).is_err() {
            return Err(Error::Protocol(Violation::NotSeqpacket));
        }
        // Ours now: no fds on them from the server, unless taken.
        if !terms.ours.accepts_any() {
            fdpass::refuse_fds(fd);
        }
    }
    let mut fds = fds.take().into_iter();
    let (Some(rr), Some(ev)) = (fds.next(), fds.next()) else {
        unreachable!("the fd count was checked");
    };
    let rr = Arc::new(rr);
    let side = ClientSide {
        request: Sender::Socket(SocketSender::new(SockTx::new(rr.clone())?, terms.theirs)),
        response: Receiver::Socket(SocketReceiver::new(
            SockRx::new(rr, max_message).accept_fds(terms.ours),
            Channel::Response,
            Peer::Server,
        )),
        event: Receiver::Socket(SocketReceiver::new(
            SockRx::new(ev, max_message).accept_fds(terms.ours),
            Channel::Event,
            Peer::Server,
        )),
        kind: ClientKind::Sockets,
        inbox: None,
    };
    Ok((side, u32::from(trailer.first().copied().unwrap_or(0))))
}

/// Whether `fd` is a memfd sealed against shrinking and growing (the only
/// ring memory a client maps; `docs/PROTOCOL.md` §2.2).
fn is_sealed_memfd(fd: BorrowedFd<'_>) -> bool {
    let needed = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GET_SEALS).is_ok_and(|s| s & needed == needed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_holds_the_largest_message() {
        for m in [0usize, 1, 100, 4096, 65536, 1 << 20, (1 << 20) + 1] {
            let cap = ring_capacity_for(m);
            assert!(cap.is_power_of_two());
            assert!(holds(cap, m), "{m} -> {cap}");
        }
        assert_eq!(ring_capacity_for(64), MIN_RING_CAPACITY);
        assert_eq!(ring_capacity_for(64 << 10), 256 << 10);
    }
}
