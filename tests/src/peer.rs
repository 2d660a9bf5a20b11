//! The helper process (`ring_peer`): spawning it with its socket, passing
//! it rings, and making sure it never outlives its test.
//!
//! Parent side: [`Peer`] spawns the helper and owns it; dropping a `Peer`
//! kills and reaps the process, so a failing assertion or a panic never
//! leaves a helper running. Every wait on the helper has a deadline
//! ([`Peer::wait`], [`Peer::wait_until`]): a hung helper fails the test
//! with its output instead of stalling CI. The helper also arms
//! `PR_SET_PDEATHSIG` (it is killed if the spawning thread dies) and runs
//! its own watchdog ([`WATCHDOG_ENV`]).
//!
//! Child side: [`inherited_socket`] takes the socket end named by
//! [`SOCK_ENV`] and [`recv_ring`] rebuilds the ring sent over it.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringlink_common::fdpass::{recv_fds, send_fds};
use ringlink_ringbuf::{Ring, WakeFds};

/// Environment variable carrying the number of the helper's socket fd.
pub const SOCK_ENV: &str = "RING_PEER_SOCK_FD";
/// Environment variable: seconds after which the helper gives up and
/// exits with status 3 (its own watchdog, in case its parent hangs too).
pub const WATCHDOG_ENV: &str = "RING_PEER_WATCHDOG_SECS";
/// Watchdog given to helpers unless a test says otherwise: under the
/// 300 s after which nextest kills a test.
pub const DEFAULT_WATCHDOG: Duration = Duration::from_secs(240);

/// A running helper process. Killed and reaped on drop.
#[derive(Debug)]
pub struct Peer {
    child: Child,
    /// Our end of the socketpair.
    sock: UnixStream,
    what: String,
    status: Option<ExitStatus>,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
}

/// What a helper left behind when it ended.
#[derive(Debug)]
pub struct Finished {
    /// How it ended.
    pub status: ExitStatus,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// Everything it printed on stderr.
    pub stderr: String,
}

impl Finished {
    /// The rest of the first stdout line starting with `key` and a space.
    pub fn line(&self, key: &str) -> Option<&str> {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
    }

    /// The helper's `outcome ...` line (without `outcome `), or a panic
    /// naming everything the helper said.
    pub fn outcome(&self) -> &str {
        self.line("outcome")
            .unwrap_or_else(|| panic!("helper reported no outcome:\n{self}"))
    }

    /// Panics unless the helper exited with status 0.
    pub fn assert_success(&self) {
        assert!(self.status.success(), "helper failed:\n{self}");
    }
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status: {}\n--- stdout ---\n{}--- stderr ---\n{}",
            describe(self.status),
            self.stdout,
            self.stderr
        )
    }
}

/// "exit 0", "signal 9", ...
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => format!("{status}"),
    }
}

/// The file name of a program path, for messages.
fn program_name(bin: &str) -> &str {
    std::path::Path::new(bin)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(bin)
}

/// In a helper: exits with status 3 after the number of seconds in
/// [`WATCHDOG_ENV`] (default [`DEFAULT_WATCHDOG`]), whatever the main
/// thread is doing, so that a helper never outlives a test that hung.
pub fn start_watchdog(program: &'static str) {
    let secs = std::env::var(WATCHDOG_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_WATCHDOG.as_secs());
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(secs));
        eprintln!("{program}: watchdog fired after {secs} s");
        println!("outcome watchdog");
        std::process::exit(3);
    });
}

fn reader(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

impl Peer {
    /// Spawns the helper binary `bin` (pass `env!("CARGO_BIN_EXE_ring_peer")`)
    /// with `args`, its end of a fresh socketpair, and the default
    /// watchdog.
    ///
    /// # Panics
    ///
    /// If the socketpair cannot be made or the process cannot start.
    pub fn spawn(bin: &str, args: &[&str]) -> Peer {
        Peer::spawn_with_watchdog(bin, args, DEFAULT_WATCHDOG)
    }

    /// [`spawn`](Self::spawn) with the helper's own watchdog set to
    /// `watchdog`.
    ///
    /// # Panics
    ///
    /// As [`spawn`](Self::spawn).
    pub fn spawn_with_watchdog(bin: &str, args: &[&str], watchdog: Duration) -> Peer {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        let fd: RawFd = theirs.as_raw_fd();
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env(SOCK_ENV, fd.to_string())
            .env(WATCHDOG_ENV, watchdog.as_secs().max(1).to_string())
            .env(
                crate::transport::ENV,
                crate::transport::name(crate::transport::current()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: the closure runs in the forked child between fork and
        // exec, and only makes async-signal-safe system calls (fcntl,
        // prctl) without allocating. `fd` is the child's copy of our
        // `theirs` socket, open at fork time because `theirs` lives until
        // after `spawn` returns.
        unsafe {
            cmd.pre_exec(move || {
                // Keep the socket across exec, in this child only.
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                // Die with the thread that spawned us: a test that dies
                // without running destructors leaves no helper behind.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {bin}: {e}"));
        // Our copy of the child's end: closed, so that the child's exit
        // is an end-of-stream on `ours`.
        drop(theirs);
        let stdout = child.stdout.take().map(reader);
        let stderr = child.stderr.take().map(reader);
        Peer {
            child,
            sock: ours,
            what: format!("{} {}", program_name(bin), args.join(" ")),
            status: None,
            stdout,
            stderr,
        }
    }

    /// The helper's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Our end of the socketpair.
    pub fn socket(&self) -> &UnixStream {
        &self.sock
    }

    /// Sends `signal` to the helper (if it has not been reaped yet),
    /// without waiting for it to end: [`wait`](Self::wait) or
    /// [`exited`](Self::exited) reaps it.
    ///
    /// # Errors
    ///
    /// The `kill(2)` failure.
    pub fn signal(&mut self, signal: i32) -> io::Result<()> {
        if self.exited().is_some() {
            return Ok(());
        }
        let pid = libc::pid_t::try_from(self.child.id())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
        // SAFETY: plain kill(2) on our own unreaped child: the pid cannot
        // have been reused by another process.
        if unsafe { libc::kill(pid, signal) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sends `ring` to the helper: its memory fd and, for an eventfd ring,
    /// its data-ready and space-ready eventfds, in one message.
    ///
    /// # Errors
    ///
    /// Any error of `sendmsg`.
    pub fn send_ring(&self, ring: &Ring) -> io::Result<()> {
        let mut fds: Vec<BorrowedFd<'_>> = vec![ring.memory_fd().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "heap rings cannot be shared")
        })?];
        if let (Some(d), Some(s)) = (ring.data_ready_fd(), ring.space_ready_fd()) {
            fds.push(d);
            fds.push(s);
        }
        self.send_fds(&fds)
    }

    /// Sends any fds as a ring message (memory fd first, then optionally
    /// data-ready and space-ready), for tests that hand over something
    /// other than what `Ring` would.
    ///
    /// # Errors
    ///
    /// Any error of `sendmsg`.
    pub fn send_fds(&self, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        send_fds(&self.sock, b"R", fds).map(drop)
    }

    /// The exit status if the helper has ended (reaping it), else `None`.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits up to `timeout` for the helper to end and returns its status
    /// and output.
    ///
    /// # Panics
    ///
    /// If it is still running after `timeout`: it is killed, and the
    /// panic message carries its output.
    pub fn wait(mut self, timeout: Duration) -> Finished {
        let deadline = Instant::now() + timeout;
        while self.exited().is_none() {
            if Instant::now() >= deadline {
                self.fail(&format!("did not exit within {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.collect()
    }

    /// Polls `cond` every millisecond until it holds.
    ///
    /// # Panics
    ///
    /// If `timeout` passes first, or the helper exits first: the helper
    /// is killed and the panic message says what was awaited and carries
    /// the helper's output.
    pub fn wait_until(&mut self, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if cond() {
                return;
            }
            if let Some(st) = self.exited() {
                if cond() {
                    return;
                }
                self.fail(&format!(
                    "exited ({}) while waiting for: {what}",
                    describe(st)
                ));
            }
            if Instant::now() >= deadline {
                self.fail(&format!("timed out after {timeout:?} waiting for: {what}"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Kills the helper (if still running), and panics with `why` and
    /// everything it printed.
    ///
    /// # Panics
    ///
    /// Always.
    pub fn fail(&mut self, why: &str) -> ! {
        self.kill();
        let what = self.what.clone();
        let out = self.collect_mut();
        panic!("{what}: {why}\n{out}");
    }

    fn kill(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            if let Ok(st) = self.child.wait() {
                self.status = Some(st);
            }
        }
    }

    fn collect(mut self) -> Finished {
        self.collect_mut()
    }

    fn collect_mut(&mut self) -> Finished {
        let join =
            |h: Option<JoinHandle<String>>| h.and_then(|h| h.join().ok()).unwrap_or_default();
        Finished {
            status: self.status.expect("collect after the helper ended"),
            stdout: join(self.stdout.take()),
            stderr: join(self.stderr.take()),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // Never leave a helper behind, whatever the test did. The output
        // readers end by themselves once the process is gone.
        self.kill();
    }
}

static SOCKET_TAKEN: AtomicBool = AtomicBool::new(false);

/// In the helper: the socket end the parent left open for us (see the
/// crate docs). Marks it close-on-exec again. Can be called once.
///
/// # Errors
///
/// If [`SOCK_ENV`] is missing or not a number, the fd is not a socket,
/// or this is the second call.
pub fn inherited_socket() -> io::Result<UnixStream> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{SOCK_ENV}: {why}"));
    let fd: RawFd = std::env::var(SOCK_ENV)
        .map_err(|_| bad("not set"))?
        .parse()
        .map_err(|_| bad("not a number"))?;
    if fd < 3 {
        return Err(bad("not above stdio"));
    }
    if SOCKET_TAKEN.swap(true, Ordering::SeqCst) {
        return Err(bad("already taken"));
    }
    // SAFETY: `st` is a live local `stat` the kernel fills; fstat only
    // inspects `fd`, whatever it is.
    let is_socket = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFSOCK
    };
    if !is_socket {
        return Err(bad("not an open socket"));
    }
    // SAFETY: `fd` is the socket our parent left open for us across exec
    // (checked above); nothing else in this process owns it, and the
    // `SOCKET_TAKEN` flag makes sure it is wrapped once.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: plain fcntl on a live fd we own.
    if unsafe { libc::fcntl(owned.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UnixStream::from(owned))
}

/// In the helper: receives the fds of one ring sent by
/// [`Peer::send_ring`] (or [`Peer::send_fds`]): the memory fd and, if
/// three fds came, the wake fds.
///
/// # Errors
///
/// A description of what went wrong (socket closed, wrong number of fds).
pub fn recv_ring_fds(sock: &UnixStream) -> Result<(OwnedFd, Option<WakeFds>), String> {
    let mut tag = [0u8; 1];
    let (n, fds) = recv_fds(sock, &mut tag).map_err(|e| format!("recv_fds: {e}"))?;
    if n != 1 || tag != *b"R" {
        return Err(format!("expected a ring message, got {n} bytes {tag:?}"));
    }
    let mut fds = fds.into_iter();
    match (fds.next(), fds.next(), fds.next(), fds.next()) {
        (Some(m), None, None, None) => Ok((m, None)),
        (Some(m), Some(data_ready), Some(space_ready), None) => Ok((
            m,
            Some(WakeFds {
                data_ready,
                space_ready,
            }),
        )),
        _ => Err("expected 1 or 3 fds with the ring".into()),
    }
}

/// In the helper: receives one ring sent by [`Peer::send_ring`] and
/// rebuilds it with `Ring::from_fds`.
///
/// # Errors
///
/// As [`recv_ring_fds`], or `from_fds` refusing the fds.
pub fn recv_ring(sock: &UnixStream) -> Result<Ring, String> {
    let (memory, wake) = recv_ring_fds(sock)?;
    Ring::from_fds(memory, wake).map_err(|e| format!("Ring::from_fds: {e}"))
}
