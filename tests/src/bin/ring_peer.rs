//! The helper process of the ringlink integration tests.
//!
//! Spawned by a test through `ringlink_tests::peer::Peer`, it receives a
//! ring over its inherited socket (or opens one by path), plays one side
//! of it, and reports on stdout, one `key value...` line per fact; the
//! last line of a hostile-peer scenario is `outcome ...`.
//!
//! Modes:
//!
//! - `produce COUNT SEED API SPIN_US`: the producer of the record stream,
//!   using the blocking calls; prints `produced COUNT`.
//! - `consume-path PATH COUNT SEED API SPIN_US`: opens a named ring
//!   (futex wake-ups) and checks the stream; prints `consumed COUNT`.
//! - `hostile-consume SEED IDLE_MS`: the consumer of a ring whose producer
//!   (the test) corrupts it. Reads 8-byte records of stream SEED until an
//!   error, or until nothing arrived for IDLE_MS. A ring `from_fds`
//!   refuses is reported as `outcome open-error ...`.
//! - `hostile-produce SEED IDLE_MS`: the producer of a ring whose consumer
//!   (the test) corrupts it. Writes 8-byte records until an error, or
//!   until no room appeared for IDLE_MS.
//! - `claim [--hold] ROLE...`: claims each role (`producer`, `consumer`)
//!   in turn and prints the result; with `--hold`, then writes `claimed`
//!   on the socket and keeps the roles until the socket closes.
//! - `truncate COUNT SEED`: tries to resize and reseal the received memfd,
//!   prints each errno, then produces COUNT records of the stream.
//!
//! Exit status: 0 when the scenario ran to its end (whatever the ring
//! reported), 1 on a setup or stream error, 2 when a single ring call did
//! not return within [`HANG_LIMIT`] (an endless loop in the ring), 3 when
//! the whole-process watchdog fired.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ringlink_ringbuf::{ClaimError, PopError, PushError, Ring};
use ringlink_tests::payload::{check, fill};
use ringlink_tests::peer::{
    inherited_socket, recv_ring, recv_ring_fds, start_watchdog, DEFAULT_WATCHDOG,
};
use ringlink_tests::stream::{self, Api, Wait};

/// Longest a single `*_timeout(100 ms)` ring call may take before the
/// hang monitor declares an endless loop. Generous: it only catches
/// calls that never return.
const HANG_LIMIT: Duration = Duration::from_secs(15);

/// Each wait of the hostile scenarios.
const HOSTILE_POLL: Duration = Duration::from_millis(100);

fn main() {
    start_watchdog("ring_peer");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match run(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ring_peer {}: {e}", args.join(" "));
            println!("error {e}");
            1
        }
    };
    // Every ring handle was dropped (and so closed) inside `run`.
    std::process::exit(code);
}

fn run(args: &[String]) -> Result<(), String> {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["produce", count, seed, api, spin_us] => {
            produce(num(count)?, num(seed)?, api.parse()?, num(spin_us)?)
        }
        ["consume-path", path, count, seed, api, spin_us] => consume_path(
            Path::new(path),
            num(count)?,
            num(seed)?,
            api.parse()?,
            num(spin_us)?,
        ),
        ["hostile-consume", seed, idle_ms] => hostile_consume(num(seed)?, num(idle_ms)?),
        ["hostile-produce", seed, idle_ms] => hostile_produce(num(seed)?, num(idle_ms)?),
        ["claim", "--hold", roles @ ..] => claim(roles, true),
        ["claim", roles @ ..] => claim(roles, false),
        ["truncate", count, seed] => truncate(num(count)?, num(seed)?),
        _ => Err(format!("bad arguments {args:?}")),
    }
}

fn num(s: &str) -> Result<u64, String> {
    s.parse().map_err(|e| format!("{s:?}: {e}"))
}

fn micros(us: u64) -> Duration {
    Duration::from_micros(us)
}

fn socket_ring() -> Result<(std::os::unix::net::UnixStream, Ring), String> {
    let sock = inherited_socket().map_err(|e| format!("socket: {e}"))?;
    let ring = recv_ring(&sock)?;
    Ok((sock, ring))
}

fn produce(count: u64, seed: u64, api: Api, spin_us: u64) -> Result<(), String> {
    let (_sock, ring) = socket_ring()?;
    let mut tx = ring.producer().map_err(|e| format!("claim: {e:?}"))?;
    tx.set_spin(micros(spin_us));
    stream::produce(&mut tx, count, seed, api, Wait::Block)?;
    println!("produced {count}");
    println!("voluntary-switches {}", stream::voluntary_switches());
    Ok(())
}

fn consume_path(path: &Path, count: u64, seed: u64, api: Api, spin_us: u64) -> Result<(), String> {
    let ring = Ring::open_path_timeout(path, Duration::from_secs(30))
        .map_err(|e| format!("open_path {}: {e}", path.display()))?;
    let mut rx = ring.consumer().map_err(|e| format!("claim: {e:?}"))?;
    rx.set_spin(micros(spin_us));
    let deadline = Instant::now() + DEFAULT_WATCHDOG;
    let seen = stream::consume(&mut rx, count, seed, api, &mut || {
        if Instant::now() > deadline {
            Err("consumer deadline passed".into())
        } else {
            Ok(())
        }
    })?;
    println!("consumed {}", seen.records);
    Ok(())
}

// --- hang monitor -------------------------------------------------------

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// When the ring call in progress started (ms since `epoch`, plus one),
/// or 0 between calls.
static CALL_STARTED: AtomicU64 = AtomicU64::new(0);

/// Runs `f`, a ring call that must return (it has a timeout), under the
/// hang monitor.
fn watched<T>(f: impl FnOnce() -> T) -> T {
    CALL_STARTED.store(epoch().elapsed().as_millis() as u64 + 1, Ordering::SeqCst);
    let r = f();
    CALL_STARTED.store(0, Ordering::SeqCst);
    r
}

/// Reports `outcome hung` and exits with status 2 if one watched call
/// lasts longer than [`HANG_LIMIT`]: the ring looped instead of returning.
fn start_hang_monitor(what: &'static str) {
    epoch();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(50));
        let started = CALL_STARTED.load(Ordering::SeqCst);
        if started == 0 {
            continue;
        }
        let now = epoch().elapsed().as_millis() as u64 + 1;
        if now.saturating_sub(started) > HANG_LIMIT.as_millis() as u64 {
            println!(
                "outcome hung: {what}({HOSTILE_POLL:?}) had not returned after {:?}",
                HANG_LIMIT
            );
            let _ = std::io::stdout().flush();
            std::process::exit(2);
        }
    });
}

// --- hostile scenarios ------------------------------------------------------

fn hostile_consume(seed: u64, idle_ms: u64) -> Result<(), String> {
    start_hang_monitor("peek_timeout");
    let sock = inherited_socket().map_err(|e| format!("socket: {e}"))?;
    let (memory, wake) = recv_ring_fds(&sock)?;
    let ring = match Ring::from_fds(memory, wake) {
        Ok(ring) => ring,
        Err(e) => {
            println!("outcome open-error {e:?}");
            return Ok(());
        }
    };
    let mut rx = match ring.consumer() {
        Ok(rx) => rx,
        Err(e) => {
            println!("outcome claim-error {e:?}");
            return Ok(());
        }
    };
    let idle = Duration::from_millis(idle_ms);
    let mut last = Instant::now();
    let mut k: u64 = 0;
    loop {
        let r = watched(|| match rx.peek_timeout(HOSTILE_POLL) {
            Ok(g) => {
                let checked = check(seed, k, &g);
                g.release();
                checked.map_err(PopErrorOr::Bad)
            }
            Err(e) => Err(PopErrorOr::Pop(e)),
        });
        match r {
            Ok(()) => {
                k += 1;
                last = Instant::now();
            }
            Err(PopErrorOr::Pop(PopError::TimedOut)) if last.elapsed() < idle => {}
            Err(PopErrorOr::Pop(PopError::TimedOut)) => {
                println!("outcome idle after {k}");
                return Ok(());
            }
            Err(PopErrorOr::Pop(PopError::Corrupt(c))) => {
                println!("outcome corrupt {c:?} after {k}");
                return Ok(());
            }
            Err(PopErrorOr::Pop(PopError::Closed)) => {
                println!("outcome closed after {k}");
                return Ok(());
            }
            Err(PopErrorOr::Pop(e)) => {
                println!("outcome other {e:?} after {k}");
                return Ok(());
            }
            Err(PopErrorOr::Bad(e)) => {
                println!("outcome bad-record {e}");
                return Ok(());
            }
        }
    }
}

enum PopErrorOr {
    Pop(PopError),
    Bad(String),
}

fn hostile_produce(seed: u64, idle_ms: u64) -> Result<(), String> {
    start_hang_monitor("push_timeout");
    let (_sock, ring) = socket_ring()?;
    let mut tx = match ring.producer() {
        Ok(tx) => tx,
        Err(e) => {
            println!("outcome claim-error {e:?}");
            return Ok(());
        }
    };
    let idle = Duration::from_millis(idle_ms);
    let mut last = Instant::now();
    let mut k: u64 = 0;
    let mut rec = [0u8; 8];
    loop {
        fill(seed, k, &mut rec);
        match watched(|| tx.push_timeout(&rec, HOSTILE_POLL)) {
            Ok(()) => {
                k += 1;
                last = Instant::now();
            }
            Err(PushError::TimedOut) if last.elapsed() < idle => {}
            Err(PushError::TimedOut) => {
                println!("outcome idle after {k}");
                return Ok(());
            }
            Err(PushError::Corrupt(c)) => {
                println!("outcome corrupt {c:?} after {k}");
                return Ok(());
            }
            Err(PushError::Closed) => {
                println!("outcome closed after {k}");
                return Ok(());
            }
            Err(e) => {
                println!("outcome other {e:?} after {k}");
                return Ok(());
            }
        }
    }
}

// --- claims -------------------------------------------------------------------

fn claim(roles: &[&str], hold: bool) -> Result<(), String> {
    let (mut sock, ring) = socket_ring()?;
    let mut producers = Vec::new();
    let mut consumers = Vec::new();
    for &role in roles {
        let r = match role {
            "producer" => ring.producer().map(|p| producers.push(p)),
            "consumer" => ring.consumer().map(|c| consumers.push(c)),
            _ => return Err(format!("unknown role {role:?}")),
        };
        match r {
            Ok(()) => println!("claim {role} ok"),
            Err(ClaimError::Taken { role: r, owner }) => {
                println!("claim {role} taken {r} owner={owner}")
            }
            Err(e) => println!("claim {role} error {e:?}"),
        }
    }
    if hold {
        sock.write_all(b"claimed\n")
            .map_err(|e| format!("socket: {e}"))?;
        // Keep the roles until the test closes its end.
        let mut rest = Vec::new();
        sock.read_to_end(&mut rest)
            .map_err(|e| format!("socket: {e}"))?;
    }
    drop((producers, consumers));
    Ok(())
}

// --- sealed memfd ---------------------------------------------------------

/// Runs one system call and prints `truncate WHAT ok` or
/// `truncate WHAT errno=N`, reading errno right after the call.
fn attempt(what: &str, call: impl FnOnce() -> libc::c_int) {
    let ret = call();
    if ret < 0 {
        let e = std::io::Error::last_os_error();
        println!("truncate {what} errno={}", e.raw_os_error().unwrap_or(0));
    } else {
        println!("truncate {what} ok");
    }
}

fn file_size(fd: libc::c_int) -> Result<i64, String> {
    // SAFETY: `st` is a live local the kernel fills; `fd` is a live fd
    // borrowed from the ring for the duration of the call.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) < 0 {
            return Err(format!("fstat: {}", std::io::Error::last_os_error()));
        }
        Ok(st.st_size)
    }
}

fn truncate(count: u64, seed: u64) -> Result<(), String> {
    let (_sock, ring) = socket_ring()?;
    let fd = ring
        .memory_fd()
        .ok_or("received ring has no memory fd")?
        .as_raw_fd();
    let size = file_size(fd)?;
    println!("size-before {size}");
    // Each call is a plain syscall on `fd`, which `ring` keeps open until
    // the end of this function; none passes memory. A success would be
    // the failure under test (and could make our own later accesses
    // fault, which the test sees as a crash).
    // SAFETY: as above.
    attempt("shrink-to-zero", || unsafe { libc::ftruncate(fd, 0) });
    // SAFETY: as above.
    attempt("shrink", || unsafe { libc::ftruncate(fd, size - 4096) });
    // SAFETY: as above.
    attempt("grow", || unsafe { libc::ftruncate(fd, size * 2) });
    // SAFETY: as above.
    attempt("fallocate-grow", || unsafe {
        libc::fallocate(fd, 0, size, 4096)
    });
    // SAFETY: as above.
    attempt("add-seal-write", || unsafe {
        libc::fcntl(fd, libc::F_ADD_SEALS, libc::F_SEAL_WRITE)
    });
    println!("size-after {}", file_size(fd)?);
    // The ring still works: the stream goes through.
    let mut tx = ring.producer().map_err(|e| format!("claim: {e:?}"))?;
    stream::produce(&mut tx, count, seed, Api::Copy, Wait::Block)?;
    println!("produced {count}");
    Ok(())
}
