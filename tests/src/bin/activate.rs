//! Socket activation as a service manager does it (systemd's
//! `systemd-socket-activate`, written here so that the tests need no
//! systemd): binds a socket, puts it at fd 3, sets `LISTEN_PID` (this
//! process, which the program keeps across `exec`), `LISTEN_FDS=1` and
//! `LISTEN_FDNAMES`, and executes the program.
//!
//! ```text
//! activate (--name NAME | --path PATH) [--datagram | --not-listening]
//!          -- PROGRAM ARGS...
//! ```
//!
//! The program gets ARGS followed by the same `--name NAME` or `--path
//! PATH`. `--datagram` hands it a datagram socket instead, and
//! `--not-listening` a stream socket that was bound but never listened:
//! what a service must refuse. A helper socket of the test at fd 3
//! (`RING_PEER_SOCK_FD`) is moved out of the way first.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::process::CommandExt;
use std::process::ExitCode;

use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
use ringlink_tests::peer::SOCK_ENV;

/// Where the service manager puts the first fd.
const FIRST_FD: i32 = 3;

fn main() -> ExitCode {
    match run() {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("activate: {e}");
            ExitCode::FAILURE
        }
    }
}

enum Never {}

fn run() -> Result<Never, String> {
    let mut args = std::env::args_os().skip(1);
    let mut addr: Vec<OsString> = Vec::new();
    let mut ty = SockType::Stream;
    let mut listen = true;
    loop {
        let a = args.next().ok_or("no `--` before the program")?;
        match a.to_str() {
            Some("--") => break,
            Some("--datagram") => ty = SockType::Datagram,
            Some("--not-listening") => listen = false,
            Some("--name" | "--path") => {
                let v = args.next().ok_or("an address flag without its value")?;
                addr = vec![a, v];
            }
            _ => return Err(format!("unknown argument {a:?}")),
        }
    }
    let program = args.next().ok_or("no program")?;
    let rest: Vec<OsString> = args.collect();
    let uaddr = match (addr.first().and_then(|f| f.to_str()), addr.get(1)) {
        (Some("--name"), Some(n)) => UnixAddr::new_abstract(n.as_encoded_bytes()),
        (Some("--path"), Some(p)) => UnixAddr::new(std::path::Path::new(p)),
        _ => return Err("no --name or --path".into()),
    }
    .map_err(|e| format!("address: {e}"))?;
    // The test's helper socket must not be where the listener goes.
    if let Some(fd) = std::env::var(SOCK_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    {
        if fd == FIRST_FD {
            // SAFETY: F_DUPFD on an fd number only duplicates it (or
            // fails); no memory is involved.
            let moved = unsafe { libc::fcntl(fd, libc::F_DUPFD, FIRST_FD + 1) };
            if moved < 0 {
                return Err(format!(
                    "move the helper socket: {}",
                    std::io::Error::last_os_error()
                ));
            }
            std::env::set_var(SOCK_ENV, moved.to_string());
        }
    }
    let sock = socket::socket(AddressFamily::Unix, ty, SockFlag::empty(), None)
        .map_err(|e| format!("socket: {e}"))?;
    socket::bind(sock.as_raw_fd(), &uaddr).map_err(|e| format!("bind: {e}"))?;
    if listen && ty == SockType::Stream {
        socket::listen(&sock, Backlog::new(128).map_err(|e| e.to_string())?)
            .map_err(|e| format!("listen: {e}"))?;
    }
    let raw = sock.into_raw_fd();
    if raw != FIRST_FD {
        // SAFETY: dup2 and close on fd numbers: `raw` is the socket just
        // made and given up by its owner; fd 3 is replaced, as a
        // service manager does.
        unsafe {
            if libc::dup2(raw, FIRST_FD) < 0 {
                return Err(format!("dup2: {}", std::io::Error::last_os_error()));
            }
            libc::close(raw);
        }
    }
    std::env::set_var("LISTEN_PID", std::process::id().to_string());
    std::env::set_var("LISTEN_FDS", "1");
    std::env::set_var("LISTEN_FDNAMES", "ringlink");
    let e = std::process::Command::new(program)
        .args(rest)
        .args(addr)
        .exec();
    Err(format!("exec: {e}"))
}
