//! Reaching a service: the socket connect (with its backoff), and the
//! handshake driven over blocking reads with a deadline
//! (`ringlink_common::handshake::ClientHandshake`), ending in the
//! connection's channels opened (`ringlink_channel::set::open`).

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};
use ringlink_channel::fds::FdAgreement;
use ringlink_channel::set::{self, ClientSide};
use ringlink_common::fdpass::{self, PeerFds};
use ringlink_common::handshake::{ClientEvent, ClientHandshake};
use ringlink_common::wire::{ConnectRequest, FdTerms, PROTOCOL_VERSION};
use ringlink_common::{Credentials, Error, Result, ServiceAddr};

use crate::ConnectOptions;

/// Longest pause between two connection attempts while the server is
/// not there yet (or its backlog is full).
const MAX_BACKOFF: Duration = Duration::from_millis(50);

/// A connection whose handshake completed.
#[derive(Debug)]
pub(crate) struct Connected {
    /// The stream socket, non-blocking: wake-ups, levels, liveness.
    pub(crate) sock: Arc<UnixStream>,
    /// The channels.
    pub(crate) side: ClientSide,
    /// The socket transport's initial flow-control level.
    pub(crate) level: u32,
    /// What the server accepts of fds in requests.
    pub(crate) server_fds: FdTerms,
    /// The server-assigned connection id.
    pub(crate) id: u64,
    /// The negotiated largest payload.
    pub(crate) max_message: usize,
    /// The server's credentials, from the kernel.
    pub(crate) server: Credentials,
}

/// Connects without blocking past `deadline`: a full backlog (`EAGAIN`)
/// is retried, and with `wait`, so is a missing server, each time after
/// a pause that doubles up to [`MAX_BACKOFF`].
///
/// (`crossbeam_utils::Backoff` is for spinning on shared memory, a few
/// microseconds; this waits for another process to start listening, a
/// sleep in milliseconds.)
/// Refuses a server of another user than `opts.server_uid` (if set),
/// before anything is sent to it.
pub(crate) fn check_server_uid(sock: &UnixStream, opts: &ConnectOptions) -> Result<()> {
    let Some(want) = opts.server_uid else {
        return Ok(());
    };
    let server = Credentials::of_peer(sock)?;
    if server.uid == want {
        return Ok(());
    }
    Err(Error::Io(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "the server runs as uid {} (pid {}), not uid {want} as required",
            server.uid, server.pid
        ),
    )))
}

/// Until when connecting may retry: `server_wait` while waiting for a
/// server, `timeout` otherwise (a full backlog is retried either way).
pub(crate) fn wait_deadline(opts: &ConnectOptions) -> Instant {
    ringlink_common::time::deadline_in(if opts.wait_for_server {
        opts.server_wait
    } else {
        opts.timeout
    })
}

pub(crate) fn connect_socket(
    addr: &ServiceAddr,
    wait: bool,
    deadline: Instant,
) -> Result<UnixStream> {
    let uaddr = match addr {
        ServiceAddr::Abstract(name) => UnixAddr::new_abstract(name.as_bytes()),
        ServiceAddr::Path(p) => UnixAddr::new(p.as_path()),
    }
    .map_err(io::Error::from)?;
    connect_addr(&uaddr, wait, deadline)
}

/// Connects to libqb service `service`: its abstract name, NUL-padded to
/// the whole of `sun_path` as libqb binds it (see [`connect_socket`]).
pub(crate) fn connect_libqb_socket(
    service: &str,
    wait: bool,
    deadline: Instant,
) -> Result<UnixStream> {
    let name = ringlink_common::qb::abstract_name(service.as_bytes())
        .map_err(|e| Error::Io(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    let uaddr = UnixAddr::new_abstract(&name).map_err(io::Error::from)?;
    connect_addr(&uaddr, wait, deadline)
}

fn connect_addr(uaddr: &UnixAddr, wait: bool, deadline: Instant) -> Result<UnixStream> {
    let mut backoff = Duration::from_millis(1);
    loop {
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(io::Error::from)?;
        let retry = match socket::connect(fd.as_raw_fd(), uaddr) {
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
            Err(e) => return Err(Error::Io(e.into())),
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
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Runs the handshake on a connected, blocking socket, all of it before
/// `deadline`: sends the request, reads the answer with its fds and what
/// follows it, opens the channels, confirms. The socket is left
/// non-blocking.
pub(crate) fn handshake(
    sock: UnixStream,
    opts: &ConnectOptions,
    deadline: Instant,
) -> Result<Connected> {
    ringlink_common::wire::check_protocol_id(&opts.protocol)?;
    opts.accept_fds.check()?;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let request = ConnectRequest {
        version: PROTOCOL_VERSION,
        transport: opts.transport,
        max_message: opts.max_message,
        protocol: opts.protocol.clone(),
        fds: opts.accept_fds,
    };
    let (mut machine, hello) = ClientHandshake::new(&request);
    sock.set_write_timeout(Some(left()))?;
    (&sock).write_all(&hello).map_err(timed)?;

    // The answer, with its fds on its first bytes; then what follows it.
    // Until checked and taken, the fds are the server's choice of file:
    // whatever is left on any way out is reaped (`fdpass::PeerFds`).
    let (answer, fds, terms, trailer) = loop {
        let event = if machine.expects_fds() {
            sock.set_read_timeout(Some(left()))?;
            let (n, fds) = fdpass::recv_fds(&sock, machine.buffer()).map_err(timed)?;
            let event = machine.received(n, PeerFds::new(fds))?;
            if !machine.expects_fds() {
                // No more fds from the server, ever (where the kernel can
                // refuse them; elsewhere every read reaps them).
                fdpass::refuse_fds(sock.as_fd());
            }
            event
        } else {
            let buf = machine.buffer();
            let n = buf.len();
            fdpass::recv_exact(sock.as_fd(), buf, deadline).map_err(timed)?;
            machine.received(n, PeerFds::default())?
        };
        if let ClientEvent::Accepted {
            answer,
            fds,
            terms,
            trailer,
        } = event
        {
            break (answer, fds, terms, trailer);
        }
    };
    let server = Credentials::of_peer(&sock)?;
    let sock = Arc::new(sock);
    let (side, level) = set::open(
        opts.transport,
        set::Accepted {
            answer,
            fds,
            trailer,
            terms: FdAgreement {
                ours: opts.accept_fds,
                theirs: terms,
            },
        },
        &sock,
        server,
        opts.spin,
    )?;
    sock.set_write_timeout(Some(left()))?;
    (&*sock)
        .write_all(&ClientHandshake::confirm())
        .map_err(timed)?;
    sock.set_read_timeout(None)?;
    sock.set_write_timeout(None)?;
    sock.set_nonblocking(true)?;
    Ok(Connected {
        sock,
        side,
        level,
        server_fds: terms,
        id: answer.connection_id,
        max_message: answer.max_message as usize,
        server,
    })
}

/// A handshake read or write that failed: past the deadline, or the
/// server gone.
fn timed(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::TimedOut,
        io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::UnexpectedEof => Error::Disconnected,
        _ => Error::Io(e),
    }
}

/// Runs libqb's handshake on a connected, blocking socket, all of it
/// before `deadline`: sends the connection request, reads the whole
/// response, opens the rings it names under `base` (`docs/LIBQB.md`). A
/// libqb server confirms nothing more: the connection is up. The socket
/// is left non-blocking.
pub(crate) fn handshake_libqb(
    sock: UnixStream,
    opts: &ConnectOptions,
    base: &std::path::Path,
    deadline: Instant,
) -> Result<Connected> {
    use ringlink_common::qb::{
        ConnRequest, ConnResponse, QbTransport, CONN_RESPONSE_LEN, RESPONSE_HEADER_LEN,
    };
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    // libqb's sizes count the 24-byte header; a libqb client never asks
    // for less than the connection response.
    let want = (opts.max_message as usize + RESPONSE_HEADER_LEN)
        .max(CONN_RESPONSE_LEN)
        .min(u32::MAX as usize) as u32;
    sock.set_write_timeout(Some(left()))?;
    (&sock)
        .write_all(&ConnRequest { max_msg_size: want }.encode())
        .map_err(timed)?;
    let mut answer = vec![0u8; CONN_RESPONSE_LEN];
    fdpass::recv_exact(sock.as_fd(), &mut answer, deadline).map_err(timed)?;
    // No fds come from a libqb server, ever.
    fdpass::refuse_fds(sock.as_fd());
    let answer = ConnResponse::decode(&answer)
        .map_err(|e| Error::Protocol(ringlink_common::Violation::BadAnswer(e)))?;
    if answer.error != 0 {
        return Err(libqb_refusal(answer.error.saturating_neg()));
    }
    if answer.max_msg_size as usize > ringlink_common::wire::MAX_MESSAGE + RESPONSE_HEADER_LEN
        || (answer.max_msg_size as usize) < RESPONSE_HEADER_LEN
    {
        return Err(Error::Protocol(
            ringlink_common::Violation::MaxAboveCeiling {
                announced: u64::from(answer.max_msg_size),
            },
        ));
    }
    let server = Credentials::of_peer(&sock)?;
    let sock = Arc::new(sock);
    let side = match answer.transport {
        QbTransport::Shm => ringlink_channel::qb::set::open_shm(&answer, base, server, &sock)?,
        QbTransport::Socket => ringlink_channel::qb::set::open_socket(&answer, base, server)?,
    };
    sock.set_read_timeout(None)?;
    sock.set_write_timeout(None)?;
    sock.set_nonblocking(true)?;
    Ok(Connected {
        sock,
        side,
        level: 0,
        server_fds: FdTerms::NONE,
        id: answer.cookie,
        max_message: (answer.max_msg_size as usize).saturating_sub(RESPONSE_HEADER_LEN),
        server,
    })
}

/// What a libqb server's refusal (`errno`) means to a ringlink client:
/// the refusal whose [`Status::errno`](ringlink_common::wire::Status::errno)
/// it is (and `EPERM` as `EACCES`, `ENOBUFS` as `ENOMEM`), else the errno
/// itself.
fn libqb_refusal(errno: i32) -> Error {
    use ringlink_common::wire::Status;
    let errno = match errno {
        nix::libc::EPERM => nix::libc::EACCES,
        nix::libc::ENOBUFS => nix::libc::ENOMEM,
        e => e,
    };
    [
        Status::PermissionDenied,
        Status::TooManyClients,
        Status::UserQuota,
        Status::Resources,
    ]
    .into_iter()
    .find(|s| s.errno() == errno)
    .map_or_else(
        || Error::Io(io::Error::from_raw_os_error(errno)),
        Error::Rejected,
    )
}
