//! The listening socket: binding it (and the filesystem hygiene of a
//! path), taking new clients from it, and pausing it (while the process
//! is out of fds, or the application stopped listening).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};
use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
use ringlink_common::ServiceAddr;

use crate::ServiceOptions;

/// Whose clients a listener takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// ringlink's own (`docs/PROTOCOL.md`).
    Ringlink,
    /// libqb's, on service name `service`, over `transport`
    /// (`docs/LIBQB.md`).
    Libqb {
        service: String,
        transport: ringlink_common::qb::QbTransport,
    },
}

/// A service's listening socket and its state in the loop's epoll set.
#[derive(Debug)]
pub(crate) struct Listener {
    sock: UnixListener,
    dialect: Dialect,
    /// A socket file this service created, removed on drop.
    file: Option<PathBuf>,
    token: u64,
    /// In the epoll set (it leaves it while the process is out of fds).
    listening: bool,
    /// Cleared by `stop_listening`: new clients wait in the kernel's
    /// backlog until `resume_listening`.
    advertised: bool,
}

/// What one round of accepting brought.
#[derive(Debug, Default)]
pub(crate) struct Accepted {
    /// New clients, their sockets non-blocking.
    pub(crate) clients: Vec<UnixStream>,
    /// Accepting failed (out of fds or memory): listening is paused until
    /// [`Listener::resume`].
    pub(crate) failed: Option<io::ErrorKind>,
}

impl Listener {
    /// Binds `addr` and listens (see `Service::bind`), registered in
    /// `epoll` with `token`.
    pub(crate) fn bind(
        addr: &ServiceAddr,
        opts: &ServiceOptions,
        epoll: &Epoll,
        token: u64,
    ) -> io::Result<Listener> {
        let (sock, file) = listen(addr, opts)?;
        Listener::registered(sock, Dialect::Ringlink, file, epoll, token)
    }

    /// A listening socket in `epoll` with `token`. Made before it is
    /// registered, so that a failure removes its socket file (`file`).
    fn registered(
        sock: UnixListener,
        dialect: Dialect,
        file: Option<PathBuf>,
        epoll: &Epoll,
        token: u64,
    ) -> io::Result<Listener> {
        let mut l = Listener {
            sock,
            dialect,
            file,
            token,
            listening: false,
            advertised: true,
        };
        epoll.add(&l.sock, EpollEvent::new(EpollFlags::EPOLLIN, token))?;
        l.listening = true;
        Ok(l)
    }

    /// Listens on libqb service name `service` (the abstract name libqb
    /// binds, `docs/LIBQB.md`), registered in `epoll` with `token`.
    pub(crate) fn bind_libqb(
        service: &str,
        transport: ringlink_common::qb::QbTransport,
        opts: &ServiceOptions,
        epoll: &Epoll,
        token: u64,
    ) -> io::Result<Listener> {
        let name = ringlink_common::qb::abstract_name(service.as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        // The whole of `sun_path`: libqb's clients connect with it.
        socket::bind(fd.as_raw_fd(), &UnixAddr::new_abstract(&name)?)?;
        socket::listen(&fd, Backlog::new(opts.backlog)?)?;
        let dialect = Dialect::Libqb {
            service: service.to_owned(),
            transport,
        };
        Listener::registered(UnixListener::from(fd), dialect, None, epoll, token)
    }

    /// Serves ringlink's clients on `sock`, a listening socket someone
    /// else made (checked by the caller), registered in `epoll` with
    /// `token`. Its file, if it has one, is not ours to remove.
    pub(crate) fn adopt(sock: UnixListener, epoll: &Epoll, token: u64) -> io::Result<Listener> {
        sock.set_nonblocking(true)?;
        Listener::registered(sock, Dialect::Ringlink, None, epoll, token)
    }

    /// Whose clients it takes.
    pub(crate) fn dialect(&self) -> &Dialect {
        &self.dialect
    }

    /// Takes every client waiting in the backlog.
    pub(crate) fn accept(&mut self, epoll: &Epoll) -> Accepted {
        let mut out = Accepted::default();
        loop {
            match self.sock.accept() {
                Ok((sock, _)) => out.clients.push(sock),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return out,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    // Out of fds or memory: stop listening until a
                    // connection or handshake ends, rather than spin on a
                    // listener that stays readable.
                    out.failed = Some(e.kind());
                    self.pause(epoll);
                    return out;
                }
            }
        }
    }

    /// Leaves the epoll set (clients wait in the backlog).
    pub(crate) fn pause(&mut self, epoll: &Epoll) {
        if self.listening && epoll.delete(&self.sock).is_ok() {
            self.listening = false;
        }
    }

    /// Back in the epoll set, unless the application stopped listening.
    pub(crate) fn resume(&mut self, epoll: &Epoll) {
        if self.advertised
            && !self.listening
            && epoll
                .add(&self.sock, EpollEvent::new(EpollFlags::EPOLLIN, self.token))
                .is_ok()
        {
            self.listening = true;
        }
    }

    /// `stop_listening` (`false`) or `resume_listening` (`true`).
    pub(crate) fn advertise(&mut self, on: bool, epoll: &Epoll) {
        self.advertised = on;
        if on {
            self.resume(epoll);
        } else {
            self.pause(epoll);
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(path) = self.file.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Binds and listens, replacing a stale socket file safely.
pub(crate) fn listen(
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
            let uaddr = UnixAddr::new_abstract(name.as_bytes())?;
            match socket::bind(fd.as_raw_fd(), &uaddr) {
                Ok(()) => None,
                Err(nix::errno::Errno::EADDRINUSE) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("@{name}: {}", who_listens(&uaddr)),
                    ))
                }
                Err(e) => return Err(e.into()),
            }
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

/// Who holds an abstract name another bind found taken, in words: the
/// process listening there, from the kernel (`SO_PEERCRED` of a
/// connection made and dropped at once), if it can tell.
fn who_listens(addr: &UnixAddr) -> String {
    let peer = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .ok()
    .filter(|fd| socket::connect(fd.as_raw_fd(), addr).is_ok())
    .and_then(|fd| socket::getsockopt(&fd, socket::sockopt::PeerCredentials).ok());
    match peer {
        Some(c) => format!(
            "a server runs there already (pid {}, uid {})",
            c.pid(),
            c.uid()
        ),
        None => "the name is taken (probably by a server that runs there already)".to_owned(),
    }
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
