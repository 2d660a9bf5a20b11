//! The server process of the IPC integration tests: a real
//! `ringlink_ipcs::Service` speaking the test protocol
//! (`ringlink_tests::ipc`), driven and observed by its test through the
//! socket it inherits (`ringlink_tests::peer`).
//!
//! ```text
//! test_server (--name NAME | --path PATH) [--mode OCTAL]
//!             [--max-message N] [--min-message N] [--max-clients N]
//!             [--reject-uid UID] [--event-on-create] [--probe-closed-send]
//!             [--spin-us N] [--handshake-timeout-ms N] [--idle-timeout-ms N]
//!             [--max-handshakes N] [--event-queue N:POLICY] [--activated]
//!             [--log-faults] [--max-per-uid N] [--max-per-pid N]
//!             [--fd-limit N] [--keep-fd-limit]
//!             [--ring-dir DIR [--ring-to-client] [--ring-mode OCTAL]]
//!             [--as-uid UID --as-gid GID] [--libqb NAME]
//! ```
//!
//! `--libqb NAME` also serves libqb's clients on libqb service name NAME
//! (`Service::listen_libqb`), with the same handler, over libqb's shared
//! memory or, with `--libqb-transport socket`, its sockets.
//!
//! `--queue-when-full` sets `ServiceOptions::queue_when_full`.
//!
//! `--event-queue N:refuse|drop-oldest|drop-newest` sets
//! `ServiceOptions::event_queue`.
//!
//! `--activated` takes its listening socket from the service manager
//! (`Service::listen_activated`; the tests' `activate` plays systemd)
//! instead of binding ADDR.
//!
//! `--log-faults` installs an error hook (`Service::set_error_hook`) that
//! prints `fault conn=ID what` on stdout for every protocol violation the
//! service reports, and keeps them for the `faults` command.
//!
//! `--max-per-uid` and `--max-per-pid` set the per-user and per-process
//! connection quotas. `--fd-limit N` lowers this process's soft
//! `RLIMIT_NOFILE` to N before the service is made (the hard limit stays);
//! the service raises it again unless `--keep-fd-limit` (its
//! `raise_fd_limit = false`). The `ready` line reports the soft limit
//! after the service was made (`nofile=`).
//!
//! `--ring-dir` makes named rings in DIR; `ring_auth` gives them to the
//! client's user with `--ring-to-client`, and the mode `--ring-mode`.
//!
//! On start it writes `ready pid=.. uid=.. gid=..` (its own view of
//! itself) on the socket, or `bind-error kind=KIND ...` and exits 1. Then
//! it answers one line per command:
//!
//! - `stats`: `stats key=value...`: handler calls (`accepts`, `rejects`,
//!   `created`, `messages`, `closed`, `destroyed`), `violations` of the
//!   documented handler order, `live` connections, the outcome of event
//!   bursts, and the process's `fds`, `maps` and `rss_kib` from `/proc`;
//! - `violations`: `violations` followed by their descriptions, `|`
//!   separated;
//! - `faults`: `faults N` followed by ` | conn=ID what` for each fault the
//!   error hook saw (`--log-faults`; `conn=-` when it names no
//!   connection);
//! - `closes`: `closes N` followed by ` | ID REASON` for each closed
//!   connection, with the `Connection::close_reason` its
//!   `connection_closed` saw (`left`, `disconnected`, `idle`,
//!   `shutdown`, `violation`, `socket-error`);
//! - `disconnect-all`: disconnects every live connection from this (not
//!   the loop's) thread; answers `ok N`;
//! - `farewell-all`: for every live connection, from this thread:
//!   answers its held (`DEFER`) requests, sends a `FAREWELL` event, then
//!   disconnects it; answers `ok N`;
//! - `call CONN ID PAYLOAD MS`: `Connection::call` of connection CONN
//!   with message id ID and PAYLOAD, waiting up to MS milliseconds, from
//!   this thread; answers `reply id=I error=E payload=P` or `error KIND`;
//! - `call-start CONN ID PAYLOAD MS`: the same call, made from a thread of
//!   its own, so that several can wait at once; answers `ok N` at once
//!   (N numbers the calls started, from 1), or `error ...` if there is no
//!   such connection;
//! - `call-wait N`: waits for call N (started by `call-start`) to return,
//!   and answers as `call` would have (`error no-such-call` for a call
//!   never started or already waited for);
//! - `gate open|close`: opens or closes the gate `id::SLOW` requests
//!   wait at on the worker pool; answers `ok`;
//! - `rate off|off2|normal|fast|slow`: `ControlHandle::set_rate_limit` from
//!   this thread; answers `ok`;
//! - `sstats [clear]`: `sstats key=value...`: `Service::stats` (`active`,
//!   `closed` and each rejection reason);
//! - `cstats ID [clear]`: `cstats found=1 key=value...`: the
//!   `Connection::stats` of connection ID (`found=0` if it is not live);
//! - `stop-listening` / `resume-listening`: run on the loop thread
//!   (woken through a socket it watches with `add_fd`); answers `ok`
//!   once applied;
//! - `adopt`: answers `send-fd`, then receives one fd (a socket, sent
//!   with `Peer::send_fds`) and hands it to `Service::adopt` on the loop
//!   thread, for a client that runs `Client::connect_stream` on the
//!   other end; answers `ok` once adopted (`error ...` otherwise);
//! - `shutdown`: stops the service; answers `ok`. The process then prints
//!   `final key=value...` (the statistics after every connection was
//!   closed), `closed ID REASON` for each closed connection (as
//!   `closes`) and each violation on stdout, and exits 0.
//!
//! End of stream on the socket (the test died) also shuts it down.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use ringlink_ipcs::{
    CloseReason, Connection, ControlHandle, Credentials, Error, Handler, Interest, RateLimit,
    Reject, Request, RingAuth, Service, ServiceAddr, ServiceOptions,
};
use ringlink_tests::ipc::{self, id, Burst, Defer};
use ringlink_tests::lines::Lines;
use ringlink_tests::peer::{inherited_socket, start_watchdog};
use ringlink_tests::procfs::{self, Proc};
use ringlink_tests::procs::switch_user;

/// How long a burst thread waits for room for one event before it gives
/// up (only a hang; the client reads them all).
const EVENT_WAIT: Duration = Duration::from_secs(60);

/// Command-line options.
#[derive(Debug, Default)]
struct Args {
    addr: Option<ServiceAddr>,
    mode: Option<u32>,
    max_message: Option<usize>,
    min_message: Option<usize>,
    max_clients: Option<usize>,
    reject_uid: Option<u32>,
    event_on_create: bool,
    probe_closed_send: bool,
    spin_us: Option<u64>,
    handshake_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    max_handshakes: Option<usize>,
    log_faults: bool,
    activated: bool,
    queue_when_full: bool,
    as_uid: Option<u32>,
    as_gid: Option<u32>,
    ring_dir: Option<String>,
    ring_to_client: bool,
    ring_mode: Option<u32>,
    max_per_uid: Option<usize>,
    max_per_pid: Option<usize>,
    fd_limit: Option<u64>,
    keep_fd_limit: bool,
    libqb: Option<String>,
    libqb_socket: bool,
    event_queue: Option<ringlink_ipcs::EventQueue>,
    accept_fds: Option<u16>,
    fd_in_flight: Option<u32>,
    fd_dirs: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--event-on-create" {
            a.event_on_create = true;
            continue;
        }
        if flag == "--probe-closed-send" {
            a.probe_closed_send = true;
            continue;
        }
        if flag == "--ring-to-client" {
            a.ring_to_client = true;
            continue;
        }
        if flag == "--queue-when-full" {
            a.queue_when_full = true;
            continue;
        }
        if flag == "--activated" {
            a.activated = true;
            continue;
        }
        if flag == "--log-faults" {
            a.log_faults = true;
            continue;
        }
        if flag == "--keep-fd-limit" {
            a.keep_fd_limit = true;
            continue;
        }
        if flag == "--fd-dirs" {
            a.fd_dirs = true;
            continue;
        }
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let n = || v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--name" => a.addr = Some(ServiceAddr::named(&v)),
            "--path" => a.addr = Some(ServiceAddr::Path(v.clone().into())),
            "--mode" => {
                a.mode = Some(
                    u32::from_str_radix(v.trim_start_matches("0o"), 8)
                        .map_err(|e| format!("--mode {v}: {e}"))?,
                )
            }
            "--ring-dir" => a.ring_dir = Some(v.clone()),
            "--libqb" => a.libqb = Some(v.clone()),
            "--event-queue" => {
                let (n, policy) = v.split_once(':').ok_or("--event-queue N:POLICY")?;
                a.event_queue = Some(ringlink_ipcs::EventQueue {
                    capacity: n.parse().map_err(|e| format!("--event-queue {v}: {e}"))?,
                    policy: match policy {
                        "refuse" => ringlink_ipcs::QueuePolicy::Refuse,
                        "drop-oldest" => ringlink_ipcs::QueuePolicy::DropOldest,
                        "drop-newest" => ringlink_ipcs::QueuePolicy::DropNewest,
                        _ => return Err(format!("--event-queue {v}: unknown policy")),
                    },
                })
            }
            "--libqb-transport" => a.libqb_socket = v == "socket",
            "--ring-mode" => {
                a.ring_mode = Some(
                    u32::from_str_radix(v.trim_start_matches("0o"), 8)
                        .map_err(|e| format!("--ring-mode {v}: {e}"))?,
                )
            }
            "--max-message" => a.max_message = Some(n()? as usize),
            "--min-message" => a.min_message = Some(n()? as usize),
            "--max-clients" => a.max_clients = Some(n()? as usize),
            "--reject-uid" => a.reject_uid = Some(n()? as u32),
            "--spin-us" => a.spin_us = Some(n()?),
            "--handshake-timeout-ms" => a.handshake_timeout_ms = Some(n()?),
            "--idle-timeout-ms" => a.idle_timeout_ms = Some(n()?),
            "--max-handshakes" => a.max_handshakes = Some(n()? as usize),
            "--max-per-uid" => a.max_per_uid = Some(n()? as usize),
            "--max-per-pid" => a.max_per_pid = Some(n()? as usize),
            "--fd-limit" => a.fd_limit = Some(n()?),
            "--accept-fds" => a.accept_fds = Some(n()? as u16),
            "--fd-in-flight" => a.fd_in_flight = Some(n()? as u32),
            "--as-uid" => a.as_uid = Some(n()? as u32),
            "--as-gid" => a.as_gid = Some(n()? as u32),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(a)
}

/// How many close reasons the server keeps (the last ones).
const CLOSES_KEPT: usize = 256;

/// Where a connection is in its documented life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Created,
    Closed,
}

/// Counters and checks shared by the handler, its threads and the
/// control thread.
#[derive(Default)]
struct State {
    reject_uid: Option<u32>,
    /// Named rings: give them to the client's user, with this mode.
    ring_to_client: bool,
    ring_mode: Option<u32>,
    event_on_create: bool,
    probe_closed_send: bool,
    accepts: AtomicU64,
    rejects: AtomicU64,
    created: AtomicU64,
    messages: AtomicU64,
    closed: AtomicU64,
    destroyed: AtomicU64,
    respond_failed: AtomicU64,
    /// One-way requests seen, and responses to them refused
    /// (`Error::OneWay`).
    oneway: AtomicU64,
    oneway_refused: AtomicU64,
    /// `id::SLOW` requests a worker started on.
    slow_started: AtomicU64,
    /// Responses refused with `Disconnected`: the client died after its
    /// request was read (over sockets a send to a dead peer fails at
    /// once; a ring takes it). What the library promises, not a fault.
    respond_to_gone: AtomicU64,
    hello_failed: AtomicU64,
    burst_started: AtomicU64,
    burst_done: AtomicU64,
    burst_disconnected: AtomicU64,
    burst_timedout: AtomicU64,
    burst_other: AtomicU64,
    event_wouldblock: AtomicU64,
    deferred_answered: AtomicU64,
    check_failures: AtomicU64,
    /// `send_event` calls from `connection_closed` that succeeded.
    closed_send_ok: AtomicU64,
    /// Live (created, not yet destroyed) connections by id.
    phases: Mutex<HashMap<u64, Phase>>,
    violations: Mutex<Vec<String>>,
    /// What the error hook reported (`--log-faults`): connection id and
    /// reason.
    faults: Mutex<Vec<(Option<u64>, String)>>,
    /// The last [`CLOSES_KEPT`] closed connections' ids and
    /// `Connection::close_reason`s, as `connection_closed` saw them (room
    /// made at the start: the tests count the server's mappings).
    closes: Mutex<std::collections::VecDeque<(u64, &'static str)>>,
}

/// Per-connection context.
#[derive(Default)]
struct ConnCtx {
    deferred: Mutex<Vec<(u64, i32, Vec<u8>)>>,
    next_checked: AtomicU64,
    disconnecting: AtomicBool,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl State {
    fn violation(&self, what: String) {
        self.violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(what);
    }

    fn phase(&self, conn: u64) -> Option<Phase> {
        self.phases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&conn)
            .copied()
    }

    fn set_phase(&self, conn: u64, p: Option<Phase>) {
        let mut m = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        match p {
            Some(p) => m.insert(conn, p),
            None => m.remove(&conn),
        };
    }

    fn stats(&self, live: usize) -> String {
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let me = Proc::Current;
        let violations = self
            .violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        format!(
            "accepts={} rejects={} created={} messages={} closed={} destroyed={} \
             violations={violations} live={live} respond_failed={} respond_to_gone={} \
             hello_failed={} \
             burst_started={} burst_done={} burst_disconnected={} burst_timedout={} \
             burst_other={} event_wouldblock={} deferred_answered={} check_failures={} \
             closed_send_ok={} oneway={} oneway_refused={} slow_started={} fds={} maps={} \
             rss_kib={}",
            c(&self.accepts),
            c(&self.rejects),
            c(&self.created),
            c(&self.messages),
            c(&self.closed),
            c(&self.destroyed),
            c(&self.respond_failed),
            c(&self.respond_to_gone),
            c(&self.hello_failed),
            c(&self.burst_started),
            c(&self.burst_done),
            c(&self.burst_disconnected),
            c(&self.burst_timedout),
            c(&self.burst_other),
            c(&self.event_wouldblock),
            c(&self.deferred_answered),
            c(&self.check_failures),
            c(&self.closed_send_ok),
            c(&self.oneway),
            c(&self.oneway_refused),
            c(&self.slow_started),
            procfs::fd_count(me).map_or(-1, |n| n as i64),
            procfs::map_count(me).map_or(-1, |n| n as i64),
            procfs::rss_kib(me).map_or(-1, |n| n as i64),
        )
    }
}

struct TestHandler {
    st: Arc<State>,
    /// The blocking route (`id::SLOW`) on a worker pool.
    pool: ringlink_ipcs::Dispatch,
}

/// What `id::SLOW` waits on: open (true) or closed.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    changed: std::sync::Condvar,
}

impl Gate {
    fn set(&self, open: bool) {
        *self.open.lock().unwrap_or_else(|e| e.into_inner()) = open;
        self.changed.notify_all();
    }

    fn pass(&self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        while !*open {
            open = self.changed.wait(open).unwrap_or_else(|e| e.into_inner());
        }
    }
}

fn ctx(conn: &Connection) -> Arc<ConnCtx> {
    conn.context::<ConnCtx>().unwrap_or_default()
}

impl TestHandler {
    fn respond(&self, conn: &Connection, seq: u64, id: i32, payload: &[u8]) {
        if let Err(e) = conn.respond(seq, id, payload) {
            if matches!(e, ringlink_ipcs::Error::Disconnected) {
                bump(&self.st.respond_to_gone);
                return;
            }
            bump(&self.st.respond_failed);
            self.st.violation(format!(
                "conn {}: respond to {seq} failed: {}",
                conn.id(),
                ipc::error_kind(&e)
            ));
        }
    }

    /// `id::FDS`: reads what the request's fds hold, and answers.
    fn fds(&self, conn: &Connection, req: &Request<'_>) {
        let mode = req.payload().first().copied().unwrap_or(b'r');
        if mode == b'k' {
            return self.respond(
                conn,
                req.seq(),
                req.id(),
                format!("n={}", req.fd_count()).as_bytes(),
            );
        }
        let fds = req.take_fds();
        let mut text = format!("n={}", fds.len());
        for fd in &fds {
            // SAFETY: F_GETFD on an fd we own.
            let flags = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(fd), libc::F_GETFD) };
            if flags & libc::FD_CLOEXEC == 0 {
                self.st
                    .violation(format!("conn {}: an fd without close-on-exec", conn.id()));
            }
            let mut buf = [0u8; 64];
            let n = nix::sys::uio::pread(fd, &mut buf, 0).unwrap_or(0);
            text.push('|');
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        let borrowed: Vec<_> = fds.iter().map(std::os::fd::AsFd::as_fd).collect();
        let sent = match mode {
            b'e' => conn.respond_with_fds(req.seq(), req.id(), text.as_bytes(), &borrowed),
            b'v' => conn
                .send_event_with_fds(req.id(), text.as_bytes(), &borrowed)
                .and_then(|()| conn.respond(req.seq(), req.id(), text.as_bytes())),
            _ => conn.respond(req.seq(), req.id(), text.as_bytes()),
        };
        if let Err(e) = sent {
            // Refused before anything went: say why, in the response.
            let why = format!("refused {e}");
            self.respond(conn, req.seq(), req.id(), why.as_bytes());
        }
    }

    /// A burst, from its own thread.
    fn burst(st: &State, conn: &Connection, b: Burst) {
        let max = conn.max_message();
        let mut buf = vec![0u8; max];
        for i in 0..b.count {
            let len = b.fill_event(i, max, &mut buf);
            let mut r = conn.send_event(id::BURST_EVENT, &buf[..len]);
            if matches!(r, Err(Error::WouldBlock)) {
                bump(&st.event_wouldblock);
                r = conn.send_event_timeout(id::BURST_EVENT, &buf[..len], EVENT_WAIT);
            }
            match r {
                Ok(()) => {}
                Err(Error::Disconnected) => return bump(&st.burst_disconnected),
                Err(Error::TimedOut) => return bump(&st.burst_timedout),
                Err(e) => {
                    st.violation(format!(
                        "conn {}: burst event {i} failed: {}",
                        conn.id(),
                        ipc::error_kind(&e)
                    ));
                    return bump(&st.burst_other);
                }
            }
        }
        bump(&st.burst_done);
    }

    /// Answers held requests in the chosen order, from its own thread.
    fn answer_deferred(
        st: &State,
        conn: &Connection,
        order: Vec<usize>,
        held: Vec<(u64, i32, Vec<u8>)>,
    ) {
        for i in order {
            let (seq, id, payload) = &held[i];
            loop {
                match conn.respond(*seq, *id, payload) {
                    Ok(()) => {
                        bump(&st.deferred_answered);
                        break;
                    }
                    // The client reads its responses; pace until it has.
                    Err(Error::WouldBlock) => std::thread::sleep(Duration::from_millis(1)),
                    Err(e) => {
                        bump(&st.respond_failed);
                        st.violation(format!(
                            "conn {}: deferred respond to {seq} failed: {}",
                            conn.id(),
                            ipc::error_kind(&e)
                        ));
                        return;
                    }
                }
            }
        }
    }
}

impl Handler for TestHandler {
    fn ready(&self, conn: &Connection, id: i32) -> bool {
        self.pool.ready(conn, id)
    }

    fn accept(&self, credentials: &Credentials) -> Result<(), Reject> {
        bump(&self.st.accepts);
        if self.st.reject_uid == Some(credentials.uid) {
            bump(&self.st.rejects);
            return Err(Reject::PermissionDenied);
        }
        Ok(())
    }

    fn ring_auth(&self, credentials: &Credentials) -> RingAuth {
        let mut auth = if self.st.ring_to_client {
            RingAuth::owned_by(credentials)
        } else {
            RingAuth::default()
        };
        if let Some(mode) = self.st.ring_mode {
            auth.mode = mode;
        }
        auth
    }

    fn connection_created(&self, conn: &Connection) {
        if self.st.phase(conn.id()).is_some() {
            self.st
                .violation(format!("conn {}: created twice", conn.id()));
        }
        self.st.set_phase(conn.id(), Some(Phase::Created));
        conn.set_context(ConnCtx::default());
        if !conn.is_connected() {
            self.st
                .violation(format!("conn {}: not connected when created", conn.id()));
        }
        if self.st.event_on_create {
            let hello = format!("hello {}", conn.id());
            if conn.send_event(id::HELLO, hello.as_bytes()).is_err() {
                bump(&self.st.hello_failed);
            }
        }
        // Counted last: a test that sees the count sees the hello event
        // published too (ipc_examples' watcher is interrupted once it is).
        bump(&self.st.created);
    }

    fn message(&self, conn: &Connection, req: &Request<'_>) {
        bump(&self.st.messages);
        let c = ctx(conn);
        if self.st.phase(conn.id()) != Some(Phase::Created) {
            self.st.violation(format!(
                "conn {}: message {} while {:?}",
                conn.id(),
                req.seq(),
                self.st.phase(conn.id())
            ));
        }
        if c.disconnecting.load(Ordering::Relaxed) {
            self.st.violation(format!(
                "conn {}: message {} dispatched after disconnect()",
                conn.id(),
                req.seq()
            ));
        }
        let p = req.payload();
        match req.id() {
            id::ECHO if !req.needs_response() => {
                // One-way: the echo it would get is refused, and nothing
                // reaches the client.
                bump(&self.st.oneway);
                match conn.respond(req.seq(), req.id(), p) {
                    Err(Error::OneWay) => bump(&self.st.oneway_refused),
                    other => self.st.violation(format!(
                        "conn {}: a response to a one-way request gave {other:?}",
                        conn.id()
                    )),
                }
            }
            id::ECHO => self.respond(conn, req.seq(), req.id(), p),
            id::SLOW | id::CALLBACK => {
                self.pool.dispatch(conn, req);
            }
            id::FDS => self.fds(conn, req),
            id::PANIC => panic!("id::PANIC: a handler's bug, on the loop thread"),
            id::IN_PLACE => {
                let sent = conn
                    .send_event_in_place(id::IN_PLACE, p.len(), |buf| buf.copy_from_slice(p))
                    .and_then(|()| {
                        conn.respond_in_place(req.seq(), id::IN_PLACE, p.len(), |buf| {
                            for (d, s) in buf.iter_mut().zip(p.iter().rev()) {
                                *d = *s;
                            }
                        })
                    });
                if let Err(e) = sent {
                    self.st
                        .violation(format!("conn {}: in place: {e}", conn.id()));
                }
            }
            id::RESERVED => {
                if let Err(e) = reserved(conn, req.seq(), p) {
                    self.st
                        .violation(format!("conn {}: reserved slots: {e}", conn.id()));
                }
            }
            id::CALL_INLINE => {
                let answer = match conn.call(id::CALL_INLINE, p, Duration::from_secs(60)) {
                    Err(Error::Io(e)) => format!("{:?}", e.kind()),
                    other => format!("{other:?}"),
                };
                self.respond(conn, req.seq(), req.id(), answer.as_bytes());
            }
            id::FLOOD => {
                // N events at once, from the handler, each its index.
                let n = p
                    .get(..4)
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, u32::from_le_bytes);
                let batch = p
                    .get(4..8)
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, u32::from_le_bytes);
                let (mut sent, mut refused) = (0u32, 0u32);
                if batch == 0 {
                    for i in 0..n {
                        match conn.send_event(id::FLOOD, &i.to_le_bytes()) {
                            Ok(()) => sent += 1,
                            Err(Error::WouldBlock) => refused += 1,
                            Err(e) => {
                                self.st.violation(format!("conn {}: flood: {e}", conn.id()));
                                break;
                            }
                        }
                    }
                } else {
                    let indexes: Vec<[u8; 4]> = (0..n).map(u32::to_le_bytes).collect();
                    for chunk in indexes.chunks(batch as usize) {
                        let events: Vec<(i32, &[u8])> =
                            chunk.iter().map(|i| (id::FLOOD, &i[..])).collect();
                        let went = match conn.send_events(&events) {
                            Ok(k) => k,
                            Err(Error::WouldBlock) => 0,
                            Err(e) => {
                                self.st.violation(format!("conn {}: flood: {e}", conn.id()));
                                break;
                            }
                        };
                        sent += went as u32;
                        refused += (chunk.len() - went) as u32;
                    }
                }
                let answer = format!("sent={sent} refused={refused}");
                self.respond(conn, req.seq(), req.id(), answer.as_bytes());
            }
            id::EVENT_ONLY => {
                // Never answered: a libqb client's later responses must
                // not wait for it.
                let _ = conn.skip_response(req.seq());
                if let Err(e) = conn.send_event(id::EVENT_ONLY, p) {
                    self.st.violation(format!(
                        "conn {}: event-only send failed: {}",
                        conn.id(),
                        ipc::error_kind(&e)
                    ));
                }
            }
            id::BURST => {
                let Some(b) = Burst::decode(p) else {
                    return self.respond_unknown(conn, req);
                };
                self.respond(conn, req.seq(), req.id(), &[]);
                bump(&self.st.burst_started);
                let (st, conn) = (self.st.clone(), conn.clone());
                std::thread::spawn(move || TestHandler::burst(&st, &conn, b));
            }
            id::FILL => {
                let Some(len) = p
                    .get(..8)
                    .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
                else {
                    return self.respond_unknown(conn, req);
                };
                let mut buf = vec![0u8; len as usize];
                let mut sent = 0u64;
                loop {
                    ipc::fill_event(sent, &mut buf);
                    match conn.send_event(id::FILL_EVENT, &buf) {
                        Ok(()) => sent += 1,
                        Err(Error::WouldBlock) => break,
                        Err(e) => {
                            self.st.violation(format!(
                                "conn {}: fill event {sent} failed: {}",
                                conn.id(),
                                ipc::error_kind(&e)
                            ));
                            break;
                        }
                    }
                }
                bump(&self.st.event_wouldblock);
                self.respond(conn, req.seq(), req.id(), &sent.to_le_bytes());
            }
            id::DISCONNECT => {
                c.disconnecting.store(true, Ordering::Relaxed);
                conn.disconnect();
            }
            id::DEFER => {
                let Some(d) = Defer::decode(p) else {
                    return self.respond_unknown(conn, req);
                };
                let mut held = c.deferred.lock().unwrap_or_else(|e| e.into_inner());
                held.push((req.seq(), req.id(), p.to_vec()));
                if held.len() >= d.batch as usize {
                    let held = std::mem::take(&mut *held);
                    let order = d.order(held.len());
                    let (st, conn) = (self.st.clone(), conn.clone());
                    std::thread::spawn(move || {
                        TestHandler::answer_deferred(&st, &conn, order, held)
                    });
                }
            }
            id::WHOAMI => {
                let cr = conn.credentials();
                let text = format!(
                    "pid={} uid={} gid={} id={} max={}",
                    cr.pid,
                    cr.uid,
                    cr.gid,
                    conn.id(),
                    conn.max_message()
                );
                self.respond(conn, req.seq(), req.id(), text.as_bytes());
            }
            id::CHECKED => {
                let n = c.next_checked.fetch_add(1, Ordering::Relaxed);
                let error = match ipc::verify_checked(p, n) {
                    Ok(()) => 0,
                    Err(why) => {
                        bump(&self.st.check_failures);
                        self.st.violation(format!("conn {}: {why}", conn.id()));
                        ipc::CHECK_FAILED
                    }
                };
                if let Err(e) =
                    conn.respond_vectored(req.seq(), req.id(), error, &[std::io::IoSlice::new(p)])
                {
                    bump(&self.st.respond_failed);
                    self.st.violation(format!(
                        "conn {}: respond failed: {}",
                        conn.id(),
                        ipc::error_kind(&e)
                    ));
                }
            }
            _ => self.respond_unknown(conn, req),
        }
    }

    fn connection_closed(&self, conn: &Connection) {
        bump(&self.st.closed);
        let reason = match conn.close_reason() {
            Some(CloseReason::ClientLeft) => "left",
            Some(CloseReason::Disconnected) => "disconnected",
            Some(CloseReason::Idle) => "idle",
            Some(CloseReason::Shutdown) => "shutdown",
            Some(CloseReason::Violation(_)) => "violation",
            Some(CloseReason::SocketError(_)) => "socket-error",
            Some(_) => "other",
            None => {
                self.st.violation(format!(
                    "conn {}: no close reason in connection_closed",
                    conn.id()
                ));
                "none"
            }
        };
        let mut closes = self.st.closes.lock().unwrap_or_else(|e| e.into_inner());
        if closes.len() == CLOSES_KEPT {
            closes.pop_front();
        }
        closes.push_back((conn.id(), reason));
        drop(closes);
        match self.st.phase(conn.id()) {
            Some(Phase::Created) => self.st.set_phase(conn.id(), Some(Phase::Closed)),
            other => self
                .st
                .violation(format!("conn {}: closed while {other:?}", conn.id())),
        }
        if conn.is_connected() {
            self.st.violation(format!(
                "conn {}: connected in connection_closed",
                conn.id()
            ));
        }
        // Documented: "sends on it fail with `Disconnected`". Counted
        // apart from the violations, so that one test checks it (only
        // when asked: a send that succeeds delivers a stray event).
        if !self.st.probe_closed_send {
            return;
        }
        match conn.send_event(id::HELLO, b"late") {
            Err(Error::Disconnected) => {}
            Ok(()) => bump(&self.st.closed_send_ok),
            Err(e) => self.st.violation(format!(
                "conn {}: send_event in connection_closed: {}",
                conn.id(),
                ipc::error_kind(&e)
            )),
        }
    }

    fn connection_destroyed(&self, conn: &Connection) {
        bump(&self.st.destroyed);
        match self.st.phase(conn.id()) {
            Some(Phase::Closed) => self.st.set_phase(conn.id(), None),
            other => self
                .st
                .violation(format!("conn {}: destroyed while {other:?}", conn.id())),
        }
        if !matches!(conn.respond(1, id::ECHO, b"late"), Err(Error::Disconnected)) {
            self.st.violation(format!(
                "conn {}: respond in connection_destroyed did not fail with Disconnected",
                conn.id()
            ));
        }
    }
}

impl TestHandler {
    fn respond_unknown(&self, conn: &Connection, req: &Request<'_>) {
        if conn
            .respond_vectored(req.seq(), req.id(), ipc::UNKNOWN_ID, &[])
            .is_err()
        {
            bump(&self.st.respond_failed);
        }
    }
}

/// Answers a connection's held requests, sends it a `FAREWELL` event,
/// then disconnects it: everything published before the disconnect.
fn farewell(st: &State, conn: &Connection) {
    let held = std::mem::take(&mut *ctx(conn).deferred.lock().unwrap_or_else(|e| e.into_inner()));
    let order = (0..held.len()).collect();
    TestHandler::answer_deferred(st, conn, order, held);
    if let Err(e) = conn.send_event(id::FAREWELL, b"bye") {
        st.violation(format!(
            "conn {}: farewell event failed: {}",
            conn.id(),
            ipc::error_kind(&e)
        ));
    }
    conn.disconnect();
}

/// A command only the loop thread can run (it needs `&mut Service`).
#[derive(Debug)]
enum LoopCmd {
    StopListening,
    ResumeListening,
    Adopt(UnixStream),
}

/// Where the loop thread reports a command's outcome.
type Done = mpsc::Sender<Result<(), String>>;

/// How the control thread reaches the loop thread.
struct LoopLink {
    stop: AtomicBool,
    cmds: Mutex<Vec<(LoopCmd, Done)>>,
    /// Written to wake the loop (the other end is in its epoll set).
    kick: UnixStream,
}

impl LoopLink {
    fn shutdown(&self, handle: &ControlHandle) {
        self.stop.store(true, Ordering::Release);
        handle.shutdown();
    }

    /// Runs `cmd` on the loop thread and waits until it has.
    fn run(&self, cmd: LoopCmd) -> String {
        let what = format!("{cmd:?}");
        let (tx, rx) = mpsc::channel();
        self.cmds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((cmd, tx));
        let _ = std::io::Write::write(&mut &self.kick, &[1]);
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(())) => "ok".to_owned(),
            Ok(Err(e)) => format!("error {what}: {e}"),
            Err(e) => format!("error {what} not applied: {e}"),
        }
    }
}

fn service_stats(handle: &ControlHandle, clear: bool) -> String {
    let s = handle.stats(clear);
    let r = s.rejected;
    format!(
        "sstats active={} closed={} permission_denied={} unknown_protocol={} \
         version_mismatch={} too_many_clients={} resources={} bad_request={} \
         transport_mismatch={} user_quota={} process_quota={} abandoned={}",
        s.active_connections,
        s.closed_connections,
        r.permission_denied,
        r.unknown_protocol,
        r.version_mismatch,
        r.too_many_clients,
        r.resources,
        r.bad_request,
        r.transport_mismatch,
        r.user_quota,
        r.process_quota,
        r.abandoned
    )
}

fn conn_stats(handle: &ControlHandle, id: u64, clear: bool) -> String {
    let Some(c) = handle.connections().into_iter().find(|c| c.id() == id) else {
        return "cstats found=0".to_owned();
    };
    let s = c.stats(clear);
    format!(
        "cstats found=1 id={} client_pid={} requests={} responses={} events={} \
         bytes_received={} bytes_sent={} send_retries={} recv_retries={} \
         flow_control={} flow_control_changes={} event_queue_bytes={} events_queued={} \
         events_dropped={} events_backlogged={}",
        s.id,
        s.client_pid,
        s.requests,
        s.responses,
        s.events,
        s.bytes_received,
        s.bytes_sent,
        s.send_retries,
        s.recv_retries,
        u8::from(s.flow_control),
        s.flow_control_changes,
        s.event_queue_bytes,
        s.events_queued.map_or("-".to_owned(), |n| n.to_string()),
        s.events_dropped,
        s.events_backlogged
    )
}

/// The connection, message id and timeout of a `call` or `call-start`
/// command, or its answer (`error ...`).
fn call_of(
    handle: &ControlHandle,
    conn: &str,
    id: &str,
    ms: &str,
) -> Result<(Connection, i32, Duration), String> {
    match (conn.parse::<u64>(), id.parse::<i32>(), ms.parse::<u64>()) {
        (Ok(conn), Ok(id), Ok(ms)) => {
            match handle.connections().into_iter().find(|c| c.id() == conn) {
                None => Err("error no-such-connection".to_owned()),
                Some(c) => Ok((c, id, Duration::from_millis(ms))),
            }
        }
        _ => Err(format!("error bad call {conn} {id} {ms}")),
    }
}

/// `Connection::call`, answered as the `call` command answers.
fn call(c: &Connection, id: i32, payload: &[u8], timeout: Duration) -> String {
    match c.call(id, payload, timeout) {
        Ok(r) => format!(
            "reply id={} error={} payload={}",
            r.id,
            r.error,
            String::from_utf8_lossy(&r.payload)
        ),
        Err(e) => format!("error {}", ipc::error_kind(&e)),
    }
}

/// Answers the test's commands until `shutdown` or end of stream.
fn control(
    mut lines: Lines,
    sock: UnixStream,
    st: Arc<State>,
    handle: ControlHandle,
    link: Arc<LoopLink>,
    gate: Arc<Gate>,
) {
    // The calls `call-start` started, by number, until `call-wait`.
    let mut calls: HashMap<u64, std::thread::JoinHandle<String>> = HashMap::new();
    let mut next_call = 0u64;
    loop {
        let cmd = match lines.recv(None) {
            Ok(Some(c)) => c,
            Ok(None) | Err(_) => {
                link.shutdown(&handle);
                return;
            }
        };
        let words: Vec<&str> = cmd.split_whitespace().collect();
        let answer = match (cmd.as_str(), words.as_slice()) {
            (_, ["call", conn, id, payload, ms]) => match call_of(&handle, conn, id, ms) {
                Ok((c, id, ms)) => call(&c, id, payload.as_bytes(), ms),
                Err(e) => e,
            },
            (_, ["call-start", conn, id, payload, ms]) => match call_of(&handle, conn, id, ms) {
                Ok((c, id, ms)) => {
                    let payload = payload.as_bytes().to_vec();
                    next_call += 1;
                    calls.insert(
                        next_call,
                        std::thread::spawn(move || call(&c, id, &payload, ms)),
                    );
                    format!("ok {next_call}")
                }
                Err(e) => e,
            },
            (_, ["call-wait", n]) => match n.parse::<u64>().ok().and_then(|n| calls.remove(&n)) {
                Some(t) => t
                    .join()
                    .unwrap_or_else(|_| "error the call's thread panicked".to_owned()),
                None => "error no-such-call".to_owned(),
            },
            (_, ["gate", state @ ("open" | "close")]) => {
                gate.set(*state == "open");
                "ok".to_owned()
            }
            (_, ["rate", level]) => {
                let rate = match *level {
                    "off" => Some(RateLimit::Off),
                    "off2" => Some(RateLimit::Off2),
                    "normal" => Some(RateLimit::Normal),
                    "fast" => Some(RateLimit::Fast),
                    "slow" => Some(RateLimit::Slow),
                    _ => None,
                };
                match rate {
                    Some(r) => {
                        handle.set_rate_limit(r);
                        "ok".to_owned()
                    }
                    None => format!("error unknown rate {level:?}"),
                }
            }
            (_, ["sstats", rest @ ..]) => service_stats(&handle, rest == ["clear"]),
            (_, ["cstats", id, rest @ ..]) => match id.parse() {
                Ok(id) => conn_stats(&handle, id, rest == ["clear"]),
                Err(e) => format!("error bad id {id:?}: {e}"),
            },
            ("stop-listening", _) => link.run(LoopCmd::StopListening),
            ("resume-listening", _) => link.run(LoopCmd::ResumeListening),
            ("adopt", _) => {
                // Nothing follows the command until we ask: the line
                // reader holds no byte of the fd message.
                if lines.send("send-fd").is_err() {
                    link.shutdown(&handle);
                    return;
                }
                let mut tag = [0u8; 1];
                match ringlink_common::fdpass::recv_fds(&sock, &mut tag) {
                    Ok((1, fds)) if fds.len() == 1 => {
                        let fd = fds.into_iter().next().expect("one fd");
                        link.run(LoopCmd::Adopt(UnixStream::from(fd)))
                    }
                    Ok((n, fds)) => format!("error got {n} bytes and {} fds", fds.len()),
                    Err(e) => format!("error recv_fds: {e}"),
                }
            }
            _ => match cmd.as_str() {
                "stats" => format!("stats {}", st.stats(handle.connections().len())),
                "violations" => {
                    let v = st.violations.lock().unwrap_or_else(|e| e.into_inner());
                    format!("violations {}", v.join(" | "))
                }
                "closes" => {
                    let c = st.closes.lock().unwrap_or_else(|e| e.into_inner());
                    let mut answer = format!("closes {}", c.len());
                    for (id, why) in c.iter() {
                        answer.push_str(&format!(" | {id} {why}"));
                    }
                    answer
                }
                "faults" => {
                    let f = st.faults.lock().unwrap_or_else(|e| e.into_inner());
                    let mut answer = format!("faults {}", f.len());
                    for (conn, what) in f.iter() {
                        let conn = conn.map_or("-".to_owned(), |c| c.to_string());
                        answer.push_str(&format!(" | conn={conn} {what}"));
                    }
                    answer
                }
                "disconnect-all" => {
                    let conns = handle.connections();
                    for c in &conns {
                        c.disconnect();
                    }
                    format!("ok {}", conns.len())
                }
                "farewell-all" => {
                    let conns = handle.connections();
                    for c in &conns {
                        farewell(&st, c);
                    }
                    format!("ok {}", conns.len())
                }
                "shutdown" => {
                    // Answer first: the process may exit as soon as the loop
                    // stops.
                    let _ = lines.send("ok");
                    link.shutdown(&handle);
                    return;
                }
                other => format!("error unknown command {other:?}"),
            },
        };
        if lines.send(&answer).is_err() {
            link.shutdown(&handle);
            return;
        }
    }
}

fn main() -> ExitCode {
    start_watchdog("test_server");
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("test_server: {e}");
            println!("error {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let sock = inherited_socket().map_err(|e| format!("socket: {e}"))?;
    let mut lines = Lines::new(&sock).map_err(|e| format!("socket: {e}"))?;
    if let (Some(uid), Some(gid)) = (args.as_uid, args.as_gid) {
        switch_user(uid, gid).map_err(|e| format!("switch to {uid}:{gid}: {e}"))?;
    }
    let addr = args.addr.clone().ok_or("--name or --path is required")?;
    let mut opts = ServiceOptions::default();
    opts.transport = ringlink_tests::transport::from_env();
    if let Some(m) = args.mode {
        opts.socket_mode = m;
    }
    if let Some(m) = args.max_message {
        opts.max_message = m;
    }
    if let Some(m) = args.min_message {
        opts.min_message = m;
    }
    if let Some(m) = args.max_clients {
        opts.max_clients = m;
    }
    if let Some(us) = args.spin_us {
        opts.spin = Duration::from_micros(us);
    }
    if let Some(ms) = args.handshake_timeout_ms {
        opts.handshake_timeout = Duration::from_millis(ms);
    }
    if let Some(ms) = args.idle_timeout_ms {
        opts.idle_timeout = Some(Duration::from_millis(ms));
    }
    if let Some(n) = args.accept_fds {
        let mut terms = ringlink_ipcs::FdTerms::per_message(n).directories(args.fd_dirs);
        if let Some(m) = args.fd_in_flight {
            terms = terms.in_flight(m);
        }
        opts.accept_fds = terms;
    }
    opts.event_queue = args.event_queue;
    opts.queue_when_full = args.queue_when_full;
    if let Some(n) = args.max_handshakes {
        opts.max_handshakes = n;
    }
    opts.ring_dir = args.ring_dir.as_ref().map(Into::into);
    opts.max_clients_per_uid = args.max_per_uid;
    opts.max_clients_per_pid = args.max_per_pid;
    opts.raise_fd_limit = !args.keep_fd_limit;
    if let Some(n) = args.fd_limit {
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        let (_, hard) =
            getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| format!("getrlimit: {e}"))?;
        setrlimit(Resource::RLIMIT_NOFILE, n.min(hard), hard)
            .map_err(|e| format!("setrlimit: {e}"))?;
    }
    let st = Arc::new(State {
        reject_uid: args.reject_uid,
        ring_to_client: args.ring_to_client,
        ring_mode: args.ring_mode,
        event_on_create: args.event_on_create,
        probe_closed_send: args.probe_closed_send,
        closes: Mutex::new(std::collections::VecDeque::with_capacity(CLOSES_KEPT)),
        ..State::default()
    });
    let gate = Arc::new(Gate::default());
    gate.set(true);
    let handler = TestHandler {
        st: st.clone(),
        pool: {
            let gate = gate.clone();
            let st = st.clone();
            ringlink_ipcs::Dispatch::new()
                .workers(2, 2)
                .on_blocking(id::CALLBACK, |conn, req| {
                    let answered =
                        match conn.call(id::CALLBACK, req.payload(), Duration::from_secs(60)) {
                            Ok(reply) => conn.respond(req.seq(), req.id(), &reply.payload),
                            Err(_) => conn.respond_vectored(req.seq(), req.id(), -1, &[]),
                        };
                    let _ = answered;
                })
                .on_blocking(id::SLOW, move |conn, req| {
                    bump(&st.slow_started);
                    gate.pass();
                    if let Err(e) = conn.respond(req.seq(), req.id(), req.payload()) {
                        if !matches!(e, Error::Disconnected) {
                            st.violation(format!("conn {}: slow respond: {e}", conn.id()));
                        }
                    }
                })
        },
    };
    let made = if args.activated {
        // Socket-activated (`activate`): the socket at ADDR is fd 3.
        Service::unbound(ipc::PROTOCOL, opts, handler).and_then(|mut s| {
            match s.listen_activated()? {
                0 => Err(Error::Io(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "not socket-activated",
                ))),
                _ => Ok(s),
            }
        })
    } else {
        Service::bind(addr.clone(), ipc::PROTOCOL, opts, handler)
    };
    let mut service = match made {
        Ok(s) => s,
        Err(e) => {
            let kind = match &e {
                Error::Io(io) => format!("{:?}", io.kind()),
                other => ipc::error_kind(other),
            };
            let line = format!("bind-error kind={kind} {e}");
            println!("{line}");
            let _ = lines.send(&line);
            return Err(format!("cannot listen on {addr}: {e}"));
        }
    };
    if let ServiceAddr::Path(p) = &addr {
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.file_type().is_socket() => {}
            other => {
                return Err(format!(
                    "{} is not a socket after bind: {other:?}",
                    p.display()
                ))
            }
        }
    }
    if let Some(name) = &args.libqb {
        let t = if args.libqb_socket {
            ringlink_common::qb::QbTransport::Socket
        } else {
            ringlink_common::qb::QbTransport::Shm
        };
        if let Err(e) = service.listen_libqb(name, t) {
            let line = format!("bind-error kind=libqb {e}");
            let _ = lines.send(&line);
            return Err(format!("cannot listen on libqb name {name}: {e}"));
        }
    }
    if args.log_faults {
        let st = st.clone();
        service.set_error_hook(move |f| {
            let conn = f.connection.map(|c| c.id());
            println!(
                "fault conn={} {}",
                conn.map_or("-".to_owned(), |c| c.to_string()),
                f
            );
            st.faults
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((conn, f.to_string()));
        });
    }
    let handle = service.control_handle();
    let me = Credentials::current();
    let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(0, |(soft, _)| soft);
    lines
        .send(&format!(
            "ready pid={} uid={} gid={} nofile={nofile}",
            me.pid, me.uid, me.gid
        ))
        .map_err(|e| format!("socket: {e}"))?;
    let (kick, kicked) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let link = Arc::new(LoopLink {
        stop: AtomicBool::new(false),
        cmds: Mutex::new(Vec::new()),
        kick,
    });
    service
        .add_fd(OwnedFd::from(kicked), Interest::Readable, |fd, _| {
            let mut buf = [0u8; 64];
            // SAFETY: reads into a local buffer of that length from a
            // live fd.
            let _ = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        })
        .map_err(|e| format!("add_fd: {e}"))?;
    {
        let (st, handle, link) = (st.clone(), handle.clone(), link.clone());
        let sock = sock.try_clone().map_err(|e| format!("socket: {e}"))?;
        let gate = gate.clone();
        std::thread::spawn(move || control(lines, sock, st, handle, link, gate));
    }
    // `Service::run`, with the loop-thread commands between turns.
    while !link.stop.load(Ordering::Acquire) {
        let _ = service.dispatch(None).map_err(|e| format!("run: {e}"))?;
        let cmds = std::mem::take(&mut *link.cmds.lock().unwrap_or_else(|e| e.into_inner()));
        for (cmd, done) in cmds {
            let r = match cmd {
                LoopCmd::StopListening => {
                    service.stop_listening();
                    Ok(())
                }
                LoopCmd::ResumeListening => {
                    service.resume_listening();
                    Ok(())
                }
                LoopCmd::Adopt(s) => service.adopt(s).map_err(|e| e.to_string()),
            };
            let _ = done.send(r);
        }
    }
    drop(service);
    println!("final {}", st.stats(handle.connections().len()));
    for (id, why) in st.closes.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        println!("closed {id} {why}");
    }
    for v in st
        .violations
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        println!("violation {v}");
    }
    Ok(())
}

/// `id::RESERVED`'s handler: the event and the response written through
/// slots, or a response given up and another sent in its place.
fn reserved(conn: &Connection, seq: u64, p: &[u8]) -> ringlink_ipcs::Result<()> {
    if p.first() == Some(&b'!') {
        let mut slot = conn.reserve_response(seq, id::RESERVED, p.len())?;
        slot.fill(b'X');
        drop(slot);
        let mut slot = conn.reserve_response(seq, id::RESERVED, b"given up".len())?;
        slot.copy_from_slice(b"given up");
        return slot.commit();
    }
    let mut event = conn.reserve_event(id::RESERVED, p.len())?;
    event.copy_from_slice(p);
    event.commit()?;
    let mut slot = conn.reserve_response(seq, id::RESERVED, p.len())?;
    for (d, s) in slot.iter_mut().zip(p.iter().rev()) {
        *d = *s;
    }
    slot.commit()
}
