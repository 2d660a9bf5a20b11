//! The server and client helper processes of the IPC tests
//! (`test_server`, `test_client`), as the tests drive them, on top of
//! [`Peer`]: each is spawned with its end of a socketpair, on which it
//! reports [`Lines`] and the test sends commands. Dropping a
//! [`Helper`] or [`ServerProc`] kills and reaps the process.
//!
//! Also the child side's [`switch_user`].

use std::io;
use std::time::{Duration, Instant};

use ringlink_common::ServiceAddr;
use ringlink_ipcc::{Client, ConnectOptions};

use crate::ipc::Kv;
use crate::lines::Lines;
use crate::peer::{Finished, Peer};

/// Deadline of a single line a test waits for: generous, it only turns
/// a hang into a failure.
pub const LINE_DEADLINE: Duration = Duration::from_secs(60);

/// Deadline for a helper to exit once told to.
pub const EXIT_DEADLINE: Duration = Duration::from_secs(30);

/// Options of the tests' own clients: the test protocol, maximum
/// message `max_message` (0: the server's minimum), waiting for the
/// server, and a deadline (60 s) that only catches hangs.
pub fn client_options(max_message: u32) -> ConnectOptions {
    let mut o = ConnectOptions::new(crate::ipc::PROTOCOL);
    o.wait_for_server = true;
    o.timeout = Duration::from_secs(60);
    o.server_wait = o.timeout;
    o.max_message = max_message;
    o.transport = crate::transport::current();
    o
}

/// Connects a client of the test protocol to `addr`.
///
/// # Panics
///
/// If it cannot connect.
pub fn connect(addr: &ServiceAddr, max_message: u32) -> Client {
    Client::connect(addr, &client_options(max_message))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// Whether the client's pollable fd (its `AsFd`) polls readable within
/// `ms` milliseconds.
///
/// # Panics
///
/// If `poll(2)` fails.
pub fn readable(c: &Client, ms: i32) -> bool {
    use std::os::fd::{AsFd, AsRawFd};
    let mut p = libc::pollfd {
        fd: c.as_fd().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the duration of the call.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    assert!(n >= 0, "poll: {}", io::Error::last_os_error());
    n == 1
}

/// A fresh abstract address no other test uses.
pub fn unique_addr(tag: &str) -> ServiceAddr {
    ServiceAddr::named(&crate::tmp::unique_name(tag))
}

/// A helper process with its line channel. Killed and reaped on drop.
#[derive(Debug)]
pub struct Helper {
    peer: Peer,
    lines: Lines,
}

impl Helper {
    /// Spawns `bin` with `args` (see [`Peer::spawn`]).
    ///
    /// # Panics
    ///
    /// If it cannot be spawned.
    pub fn spawn<S: AsRef<str>>(bin: &str, args: &[S]) -> Helper {
        Helper::spawn_with_watchdog(bin, args, crate::peer::DEFAULT_WATCHDOG)
    }

    /// [`spawn`](Self::spawn) with the helper's own watchdog set to
    /// `watchdog` (for runs longer than the default's).
    ///
    /// # Panics
    ///
    /// If it cannot be spawned.
    pub fn spawn_with_watchdog<S: AsRef<str>>(bin: &str, args: &[S], watchdog: Duration) -> Helper {
        let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        let peer = Peer::spawn_with_watchdog(bin, &args, watchdog);
        let lines = Lines::new(peer.socket()).expect("clone the helper socket");
        Helper { peer, lines }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.peer.pid()
    }

    /// The underlying [`Peer`].
    pub fn peer_mut(&mut self) -> &mut Peer {
        &mut self.peer
    }

    /// The next line the helper wrote, waiting up to `timeout`.
    ///
    /// # Panics
    ///
    /// If none comes in time or the helper closed its socket: the helper
    /// is killed and the panic carries its output.
    pub fn line(&mut self, timeout: Duration) -> String {
        match self.lines.recv(Some(timeout)) {
            Ok(Some(l)) => l,
            Ok(None) => self.peer.fail("closed its socket while a line was awaited"),
            Err(e) => self.peer.fail(&format!("no line: {e}")),
        }
    }

    /// Like [`line`](Self::line), but the line must start with `key`
    /// (and a space, or end there); returns the rest.
    ///
    /// # Panics
    ///
    /// As [`line`](Self::line), or if another line came.
    pub fn expect(&mut self, key: &str, timeout: Duration) -> String {
        let l = self.line(timeout);
        match l.strip_prefix(key) {
            Some("") => String::new(),
            Some(rest) if rest.starts_with(' ') => rest[1..].to_owned(),
            _ => self
                .peer
                .fail(&format!("expected a line `{key} ...`, got `{l}`")),
        }
    }

    /// Sends a command line.
    ///
    /// # Panics
    ///
    /// If the helper's socket is gone.
    pub fn send(&mut self, line: &str) {
        if let Err(e) = self.lines.send(line) {
            self.peer.fail(&format!("cannot send `{line}`: {e}"));
        }
    }

    /// Sends `signal` to the helper.
    ///
    /// # Panics
    ///
    /// If `kill(2)` fails.
    pub fn signal(&mut self, signal: i32) {
        if let Err(e) = self.peer.signal(signal) {
            self.peer.fail(&format!("cannot send signal {signal}: {e}"));
        }
    }

    /// SIGKILLs the helper and reaps it.
    pub fn kill(mut self) -> Finished {
        self.signal(libc::SIGKILL);
        self.peer.wait(EXIT_DEADLINE)
    }

    /// Waits for the helper to exit (see [`Peer::wait`]).
    pub fn wait(self, timeout: Duration) -> Finished {
        self.peer.wait(timeout)
    }

    /// Kills the helper and panics with `why` and its output.
    pub fn fail(&mut self, why: &str) -> ! {
        self.peer.fail(why)
    }
}

/// Why a server did not start.
#[derive(Debug)]
pub struct BindFailure {
    /// The `io::ErrorKind` of the bind error (`AddrInUse`, ...), as the
    /// server printed it.
    pub kind: String,
    /// The whole `bind-error` line.
    pub line: String,
    /// The exited process.
    pub finished: Finished,
}

/// A running `test_server`.
#[derive(Debug)]
pub struct ServerProc {
    helper: Helper,
    addr: ServiceAddr,
    ready: Kv,
}

/// The helper arguments naming `addr`: `--name NAME` or `--path PATH`.
pub fn addr_args(addr: &ServiceAddr) -> Vec<String> {
    match addr {
        ServiceAddr::Abstract(n) => vec!["--name".into(), n.clone()],
        ServiceAddr::Path(p) => vec!["--path".into(), p.display().to_string()],
    }
}

impl ServerProc {
    /// Spawns the server binary `bin` listening at `addr`, with more
    /// options in `extra`, and waits until it listens.
    ///
    /// # Panics
    ///
    /// If it does not start.
    pub fn spawn(bin: &str, addr: &ServiceAddr, extra: &[&str]) -> ServerProc {
        ServerProc::spawn_with_watchdog(bin, addr, extra, crate::peer::DEFAULT_WATCHDOG)
    }

    /// As [`spawn`](Self::spawn), but a bind failure is returned.
    ///
    /// # Errors
    ///
    /// The server's bind failure.
    ///
    /// # Panics
    ///
    /// If it neither starts nor reports a bind failure.
    pub fn try_spawn(
        bin: &str,
        addr: &ServiceAddr,
        extra: &[&str],
    ) -> Result<ServerProc, BindFailure> {
        ServerProc::try_spawn_with_watchdog(bin, addr, extra, crate::peer::DEFAULT_WATCHDOG)
    }

    /// [`spawn`](Self::spawn) with the server's own watchdog set to
    /// `watchdog` (for runs longer than the default's).
    ///
    /// # Panics
    ///
    /// If it does not start.
    pub fn spawn_with_watchdog(
        bin: &str,
        addr: &ServiceAddr,
        extra: &[&str],
        watchdog: Duration,
    ) -> ServerProc {
        match ServerProc::try_spawn_with_watchdog(bin, addr, extra, watchdog) {
            Ok(s) => s,
            Err(f) => panic!("server did not start: {}\n{}", f.line, f.finished),
        }
    }

    fn try_spawn_with_watchdog(
        bin: &str,
        addr: &ServiceAddr,
        extra: &[&str],
        watchdog: Duration,
    ) -> Result<ServerProc, BindFailure> {
        let mut args = addr_args(addr);
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut helper = Helper::spawn_with_watchdog(bin, &args, watchdog);
        let line = helper.line(LINE_DEADLINE);
        if let Some(rest) = line.strip_prefix("ready ") {
            return Ok(ServerProc {
                helper,
                addr: addr.clone(),
                ready: Kv::parse(rest),
            });
        }
        if line.starts_with("bind-error ") {
            let kind = Kv::parse(&line).0.get("kind").cloned().unwrap_or_default();
            let finished = helper.wait(EXIT_DEADLINE);
            return Err(BindFailure {
                kind,
                line,
                finished,
            });
        }
        helper.fail(&format!("unexpected first line `{line}`"))
    }

    /// Where it listens.
    pub fn addr(&self) -> &ServiceAddr {
        &self.addr
    }

    /// Its pid (as the test spawned it).
    pub fn pid(&self) -> u32 {
        self.helper.pid()
    }

    /// What it reported when it started: `pid`, `uid`, `gid` (its own
    /// view of itself).
    pub fn ready(&self) -> &Kv {
        &self.ready
    }

    /// The underlying helper.
    pub fn helper(&mut self) -> &mut Helper {
        &mut self.helper
    }

    /// Sends a command and returns the answer line.
    pub fn command(&mut self, cmd: &str) -> String {
        self.helper.send(cmd);
        self.helper.line(LINE_DEADLINE)
    }

    /// The server's counters and resource use (see `test_server`).
    pub fn stats(&mut self) -> Kv {
        let l = self.command("stats");
        match l.strip_prefix("stats ") {
            Some(rest) => Kv::parse(rest),
            None => self.helper.fail(&format!("bad stats line `{l}`")),
        }
    }

    /// The service's own statistics (`Service::stats`: handshakes refused
    /// by reason, abandoned, connections closed); `clear` resets them.
    pub fn sstats(&mut self, clear: bool) -> Kv {
        let l = self.command(if clear { "sstats clear" } else { "sstats" });
        match l.strip_prefix("sstats ") {
            Some(rest) => Kv::parse(rest),
            None => self.helper.fail(&format!("bad sstats line `{l}`")),
        }
    }

    /// Each closed connection's id and close reason, as its
    /// `connection_closed` saw it (`left`, `disconnected`, `idle`,
    /// `shutdown`, `violation`, `socket-error`), oldest first.
    pub fn closes(&mut self) -> Vec<(u64, String)> {
        let l = self.command("closes");
        let Some(rest) = l.strip_prefix("closes ") else {
            self.helper.fail(&format!("bad closes line `{l}`"));
        };
        rest.split(" | ")
            .skip(1)
            .filter_map(|c| {
                let (id, why) = c.split_once(' ')?;
                Some((id.parse().ok()?, why.to_owned()))
            })
            .collect()
    }

    /// What the server's error hook reported (it runs with
    /// `--log-faults`): `(connection id, reason)` per fault, oldest
    /// first.
    pub fn faults(&mut self) -> Vec<(Option<u64>, String)> {
        let l = self.command("faults");
        let Some(rest) = l.strip_prefix("faults ") else {
            self.helper.fail(&format!("bad faults line `{l}`"));
        };
        let mut parts = rest.split(" | ");
        let count: usize = parts
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(usize::MAX);
        let faults: Vec<_> = parts
            .map(|f| {
                let f = f.strip_prefix("conn=").unwrap_or(f);
                let (conn, what) = f.split_once(' ').unwrap_or((f, ""));
                (conn.parse().ok(), what.to_owned())
            })
            .collect();
        if faults.len() != count {
            // A reason holding the separator would shift every one after.
            self.helper.fail(&format!(
                "faults line of {count} read as {}: `{l}`",
                faults.len()
            ));
        }
        faults
    }

    /// Polls [`stats`](Self::stats) every 5 ms until `cond` holds.
    ///
    /// # Panics
    ///
    /// If `timeout` passes first (the server is killed, the panic says
    /// what was awaited and the last statistics).
    pub fn wait_stats(&mut self, what: &str, timeout: Duration, cond: impl Fn(&Kv) -> bool) -> Kv {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.stats();
            if cond(&s) {
                return s;
            }
            if Instant::now() >= deadline {
                self.helper.fail(&format!(
                    "timed out after {timeout:?} waiting for {what}; last: {s}"
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Asks the service to shut down and waits for the process to exit
    /// successfully; returns its `final` statistics and output.
    ///
    /// # Panics
    ///
    /// If it does not exit cleanly or report its statistics.
    pub fn shutdown(mut self) -> (Kv, Finished) {
        let ok = self.command("shutdown");
        if ok != "ok" {
            self.helper.fail(&format!("shutdown answered `{ok}`"));
        }
        let fin = self.helper.wait(EXIT_DEADLINE);
        fin.assert_success();
        let Some(line) = fin.line("final") else {
            panic!("server printed no final statistics:\n{fin}");
        };
        (Kv::parse(line), fin)
    }

    /// SIGKILLs the server and reaps it.
    pub fn kill(self) -> Finished {
        self.helper.kill()
    }

    /// Kills the server and panics with `why` and its output.
    pub fn fail(&mut self, why: &str) -> ! {
        self.helper.fail(why)
    }
}

/// In a helper: becomes user `uid`, group `gid` (no supplementary
/// groups), then re-arms `PR_SET_PDEATHSIG`, which the change of
/// credentials cleared.
///
/// # Errors
///
/// The failing system call (e.g. `EPERM` when not root).
pub fn switch_user(uid: u32, gid: u32) -> io::Result<()> {
    let check = |r: libc::c_int| {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    // SAFETY: plain system calls on ids; setgroups with a count of 0
    // reads no memory.
    unsafe {
        check(libc::setgroups(0, std::ptr::null()))?;
        check(libc::setgid(gid))?;
        check(libc::setuid(uid))?;
        check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))?;
    }
    Ok(())
}

/// Whether this process may become another user (effective uid 0).
pub fn can_switch_user() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
