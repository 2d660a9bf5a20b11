//! The server processes (`ipc-bench --serve CONFIG`): a ringlink
//! [`Service`] for `shm`, `shm-nospin` and `socket`, the same with a
//! typed route ([`TypedBench`](super::typed::TypedBench)) for
//! `shm-typed`, the bare server of [`uds`](super::uds) for
//! `uds-baseline`.
//!
//! The ringlink handler does what the baseline server does: checks every
//! request (its length, from the message id, and its stamps, against the
//! connection's own sequence; one word of every cache line read) and
//! answers an echo request with a response of the same size that it
//! stamps, an acknowledgement request with the stamp. A request that
//! fails the check closes its connection, and the client reports the
//! failure.

use std::io::{self, IoSlice, Read, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::prctl::set_pdeathsig;
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::signal::Signal;
use ringlink_ipcs::{
    Connection, EventQueue, Handler, QueuePolicy, Request, Service, ServiceAddr, ServiceOptions,
};

use super::control::ServerConfig;
use super::{burst_len, decode_id, message_id, Kind, Transport, ACK_LEN, MAX_BURST, PROTOCOL};
use crate::payload::{check, pattern, stamp};

/// Entry point of `ipc-bench --serve CONFIG` (`CONFIG`: a
/// [`ServerConfig`] in JSON).
pub fn main(config: &str) -> ExitCode {
    let run = || -> io::Result<()> {
        let cfg: ServerConfig = serde_json::from_str(config)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // Die with the coordinator, even if it is killed outright.
        set_pdeathsig(Signal::SIGKILL)?;
        raise_fd_limit()?;
        if let Some(cpu) = cfg.cpu {
            crate::cpu::pin(cpu)?;
        }
        match cfg.transport {
            Transport::UdsBaseline => super::uds::serve(&cfg),
            _ => serve_ringlink(&cfg),
        }
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ipc-bench server (pid {}): {e}", std::process::id());
            ExitCode::FAILURE
        }
    }
}

/// Raises the soft limit on open files to the hard limit: every
/// shared-memory connection holds about ten fds in the server (the socket
/// and, per ring, its memory and two eventfds), and a thousand clients
/// need more than the usual soft limit of 1024.
///
/// # Errors
///
/// If the limits cannot be read or set.
pub fn raise_fd_limit() -> io::Result<()> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(())
}

/// Tells the coordinator the server listens: one line, `ready`.
///
/// # Errors
///
/// If standard output is closed.
pub fn announce_ready() -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(b"ready\n")?;
    out.flush()
}

/// The stamp the next request of a connection must carry, and the
/// number of its next event.
#[derive(Debug, Default)]
struct Expected {
    request: AtomicU64,
    event: AtomicU64,
}

/// Takes `n` numbers from `counter`, returning the first. Only the loop
/// thread touches the counters: a load and a store (Relaxed).
fn take(counter: &AtomicU64, n: u64) -> u64 {
    let first = counter.load(Ordering::Relaxed);
    counter.store(first.wrapping_add(n), Ordering::Relaxed);
    first
}

/// The bench's handler.
#[derive(Debug)]
struct Bench {
    /// The responses' payload pattern, never written: a response is the
    /// pattern with its stamps, sent as slices (no lock on the way to the
    /// response, where a locked instruction would wait for the loop's
    /// earlier stores).
    pattern: Vec<u8>,
}

impl Handler for Bench {
    fn connection_created(&self, conn: &Connection) {
        conn.set_context(Expected::default());
    }

    fn message(&self, conn: &Connection, req: &Request<'_>) {
        let Some(seq) = conn.with_context(|e: &Expected| take(&e.request, 1)) else {
            return fail(conn, "no context".into());
        };
        let Some((kind, size)) = decode_id(req.id()) else {
            return fail(conn, format!("unknown message id {:#x}", req.id()));
        };
        // A burst's request is a stamp; the size is its events'.
        let len = if kind == Kind::Burst { ACK_LEN } else { size };
        match check(req.payload(), len, seq) {
            Ok(acc) => {
                std::hint::black_box(acc);
            }
            Err(e) => return fail(conn, e.to_string()),
        }
        let sent = match kind {
            Kind::OneWay => return,
            Kind::Echo => {
                let Some(pattern) = self.pattern.get(..size) else {
                    return fail(conn, format!("request of {size} bytes above the maximum"));
                };
                stamped(pattern, seq, |parts| {
                    conn.respond_vectored(req.seq(), req.id(), 0, parts)
                })
            }
            Kind::EchoInPlace => {
                let Some(pattern) = self.pattern.get(..size) else {
                    return fail(conn, format!("request of {size} bytes above the maximum"));
                };
                conn.respond_in_place(req.seq(), req.id(), size, |resp| {
                    resp.copy_from_slice(pattern);
                    stamp(resp, seq);
                })
            }
            Kind::Ack => conn.respond(req.seq(), req.id(), &seq.to_le_bytes()),
            Kind::Burst => {
                let Some(pattern) = self.pattern.get(..size) else {
                    return fail(conn, format!("events of {size} bytes above the maximum"));
                };
                send_burst(conn, pattern)
            }
            Kind::Event => return fail(conn, "an event sent as a request".into()),
        };
        if let Err(e) = sent {
            fail(conn, format!("cannot respond: {e}"));
        }
    }
}

/// Sends `pattern` stamped with `seq` as [`stamp`] would stamp it in
/// place, through `send`: the stamps and the pattern between them, as
/// slices (a copy for messages under 16 bytes).
fn stamped(
    pattern: &[u8],
    seq: u64,
    send: impl FnOnce(&[IoSlice<'_>]) -> ringlink_ipcs::Result<()>,
) -> ringlink_ipcs::Result<()> {
    let len = pattern.len();
    if len < 16 {
        let mut small = [0u8; 16];
        let msg = &mut small[..len];
        msg.copy_from_slice(pattern);
        stamp(msg, seq);
        return send(&[IoSlice::new(msg)]);
    }
    let b = seq.to_le_bytes();
    send(&[
        IoSlice::new(&b),
        IoSlice::new(&pattern[8..len - 8]),
        IoSlice::new(&b),
    ])
}

/// Sends a burst of [`burst_len`] events, `pattern` stamped with the
/// connection's next event numbers, in one `Connection::send_events_vectored`
/// (each event its stamps and the pattern between them, as slices; events
/// under 16 bytes copied): one taking of the event channel's lock for the
/// burst, as a daemon publishing a burst would. The event queue
/// ([`service_options`]) holds what the client's ring has no room for.
fn send_burst(conn: &Connection, pattern: &[u8]) -> ringlink_ipcs::Result<()> {
    let size = pattern.len();
    let n = burst_len(size);
    let Some(first) = conn.with_context(|e: &Expected| take(&e.event, n as u64)) else {
        fail(conn, "no context".into());
        return Ok(());
    };
    let id = message_id(Kind::Event, size);
    let stamps: Vec<[u8; 8]> = (first..first + n as u64).map(u64::to_le_bytes).collect();
    let small: Vec<Vec<u8>> = if size < 16 {
        stamps
            .iter()
            .map(|b| {
                let mut e = pattern.to_vec();
                stamp(&mut e, u64::from_le_bytes(*b));
                e
            })
            .collect()
    } else {
        Vec::new()
    };
    let parts: Vec<[IoSlice<'_>; 3]> = if size < 16 {
        small
            .iter()
            .map(|e| [IoSlice::new(e), IoSlice::new(&[]), IoSlice::new(&[])])
            .collect()
    } else {
        stamps
            .iter()
            .map(|b| {
                [
                    IoSlice::new(b),
                    IoSlice::new(&pattern[8..size - 8]),
                    IoSlice::new(b),
                ]
            })
            .collect()
    };
    let events: Vec<(i32, &[IoSlice<'_>])> = parts.iter().map(|p| (id, &p[..])).collect();
    let mut sent = 0;
    while sent < events.len() {
        // Refused (the queue full) only if the bench asked for more than
        // its two bursts: an error, as any.
        sent += conn.send_events_vectored(&events[sent..])?;
    }
    Ok(())
}

/// Reports a failed check and closes the connection (its client then
/// fails, and says so).
fn fail(conn: &Connection, why: String) {
    eprintln!(
        "ipc-bench server: connection {} (client pid {}): {why}",
        conn.id(),
        conn.credentials().pid
    );
    conn.disconnect();
}

/// The service options of a ringlink server as `cfg` says.
fn service_options(cfg: &ServerConfig) -> ServiceOptions {
    let mut opts = ServiceOptions::default();
    opts.transport = match cfg.transport {
        Transport::Socket => ringlink_ipcs::Transport::Socket,
        _ => ringlink_ipcs::Transport::Shm,
    };
    opts.spin = Duration::from_nanos(cfg.spin_ns);
    // Every connection gets at least `min_message`, and its rings are
    // sized for it, whatever the sizes measured: the ceiling is raised to
    // it rather than it lowered to the ceiling. Lowered, a run of small
    // sizes only measured 32 KiB rings, not the 256 KiB a server with
    // ringlink's defaults gives, and a 64 B stream is a third slower on
    // those (`docs/RING.md`, Measurements).
    opts.min_message = cfg.min_message;
    opts.max_message = cfg.max_message.max(cfg.min_message);
    // Events a client has asked for and not read: two bursts at most
    // (`--modes events`), queued where the client's ring has no room for
    // them (large events), as a daemon that broadcasts would; refused,
    // never dropped, if the bench asked for more.
    opts.event_queue = Some(EventQueue {
        capacity: 2 * MAX_BURST + 16,
        policy: QueuePolicy::Refuse,
    });
    let room = cfg.clients + 16;
    opts.max_clients = opts.max_clients.max(room);
    opts.max_handshakes = opts.max_handshakes.max(room);
    opts.backlog = opts
        .backlog
        .max(i32::try_from(cfg.clients).unwrap_or(i32::MAX));
    // A thousand clients connecting at once on two CPUs take a while.
    opts.handshake_timeout = Duration::from_secs(30);
    opts
}

/// Runs a ringlink service as `cfg` says until standard input closes.
fn serve_ringlink(cfg: &ServerConfig) -> io::Result<()> {
    let opts = service_options(cfg);
    match cfg.transport {
        Transport::ShmTyped => run_service(cfg, opts, super::typed::TypedBench::new()),
        _ => {
            let handler = Bench {
                pattern: pattern(cfg.max_message.max(ACK_LEN)),
            };
            run_service(cfg, opts, handler)
        }
    }
}

/// Binds the service and runs it until standard input closes.
fn run_service(cfg: &ServerConfig, opts: ServiceOptions, handler: impl Handler) -> io::Result<()> {
    let mut service = Service::bind(ServiceAddr::named(&cfg.name), PROTOCOL, opts, handler)
        .map_err(io::Error::other)?;
    let stop = service.control_handle();
    std::thread::Builder::new()
        .name("stdin-watch".into())
        .spawn(move || {
            // The coordinator never writes: the read ends when it closes
            // the pipe (or dies).
            let mut sink = Vec::new();
            let _ = io::stdin().lock().read_to_end(&mut sink);
            stop.shutdown();
        })?;
    announce_ready()?;
    service.run().map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_message: usize, min_message: usize) -> ServerConfig {
        ServerConfig {
            transport: Transport::Shm,
            name: "test".into(),
            spin_ns: 0,
            max_message,
            min_message,
            clients: 1,
            cpu: None,
        }
    }

    /// A run of small sizes gets the rings a server with ringlink's
    /// defaults gives, as the report's header line says; with no
    /// `min_message` (a thousand clients), rings follow the largest size.
    #[test]
    fn connections_get_at_least_min_message_whatever_the_sizes() {
        let opts = service_options(&config(64, 64 << 10));
        assert_eq!(opts.negotiate(64), 64 << 10);
        let opts = service_options(&config(1 << 20, 64 << 10));
        assert_eq!(opts.negotiate(1 << 20), 1 << 20);
        assert_eq!(opts.negotiate(64), 64 << 10);
        let opts = service_options(&config(64, 0));
        assert_eq!(opts.negotiate(64), 64);
    }
}
