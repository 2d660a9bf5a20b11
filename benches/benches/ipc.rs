//! Criterion benches of ringlink's server and client (`ipcs`/`ipcc`):
//! round-trip latency (`send_recv`) and one-way throughput, over shared
//! memory (`shm`) and over the socket transport (`socket`), 64 B to
//! 64 KiB.
//!
//! The server is a separate process, the `ipc-bench` binary in its
//! server role (`ipc-bench --serve`, one per transport, started at the
//! beginning): its handler checks every request and stamps every
//! response. This process is the client, running the loops of
//! [`ringlink_benches::ipc::session`]: stamped requests, checked
//! responses; one-way requests ask for an acknowledgement every
//! [`ACK_EVERY`] and at the last, and a one-way sample ends when the last
//! is acknowledged. The two processes are pinned to two different CPUs
//! when there are two; `RINGLINK_BENCH_PIN=0` turns that off. A transport
//! whose server or connection fails is skipped with a message.
//!
//! `ipc-bench` itself compares more (the bare socket baseline, the
//! floors, many clients) in one table; these benches put the two
//! transports under criterion's statistics.

use std::io;
use std::path::Path;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use ringlink_benches::cpu;
use ringlink_benches::ipc::control::ServerConfig;
use ringlink_benches::ipc::coord::ServerProc;
use ringlink_benches::ipc::link::RingLink;
use ringlink_benches::ipc::session::{Session, Until};
use ringlink_benches::ipc::Transport;
use ringlink_benches::stats::size_label;
use ringlink_ringbuf::DEFAULT_SPIN;

const SIZES: [usize; 3] = [64, 1 << 10, 64 << 10];
const LARGEST: usize = 64 << 10;
const TRANSPORTS: [Transport; 2] = [Transport::Shm, Transport::Socket];

/// One-way requests between two acknowledgements.
const ACK_EVERY: u64 = 256;

/// Where to pin: (this process, the servers); see `benches/ring.rs`.
fn cpus() -> Option<(usize, usize)> {
    if std::env::var_os("RINGLINK_BENCH_PIN").is_some_and(|v| v == "0") {
        return None;
    }
    let pair = cpu::pair().expect("sched_getaffinity");
    if pair.is_none() {
        eprintln!("not pinned: fewer than two CPUs");
    }
    pair
}

/// Fails the bench loudly: a benchmark that errs measures nothing.
fn ok<T>(r: io::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("benchmark failed: {e}"))
}

/// A server process and this process's connection to it.
struct Target {
    transport: Transport,
    link: RingLink,
    /// The stamp of the connection's next request.
    next: u64,
    server: ServerProc,
}

/// Starts the server of `transport` and connects to it; `None`, with a
/// message, if either fails.
fn start(transport: Transport, server_cpu: Option<usize>) -> Option<Target> {
    let exe = Path::new(env!("CARGO_BIN_EXE_ipc-bench"));
    let name = format!(
        "ringlink-ipc-criterion-{}-{}",
        std::process::id(),
        transport
    );
    let cfg = ServerConfig {
        transport,
        name: name.clone(),
        spin_ns: DEFAULT_SPIN.as_nanos() as u64,
        max_message: LARGEST,
        min_message: LARGEST,
        clients: 1,
        cpu: server_cpu,
    };
    let started = ServerProc::spawn(exe, &cfg).and_then(|server| {
        let link = RingLink::connect(
            transport,
            &name,
            LARGEST,
            DEFAULT_SPIN,
            Duration::from_secs(5),
        )?;
        Ok((server, link))
    });
    match started {
        Ok((server, link)) => Some(Target {
            transport,
            link,
            next: 0,
            server,
        }),
        Err(e) => {
            eprintln!("skipping transport {transport}: {e}");
            None
        }
    }
}

fn throughput(size: usize) -> Throughput {
    Throughput::ElementsAndBytes {
        elements: 1,
        bytes: size as u64,
    }
}

/// Round trips: `send_recv` of a stamped request, the stamped response
/// checked. Criterion's warm-up is the only one.
fn round_trip(c: &mut Criterion, targets: &mut [Target]) {
    let mut g = c.benchmark_group("ipc_round_trip");
    for size in SIZES {
        g.throughput(throughput(size));
        for t in targets.iter_mut() {
            let mut s = Session::new(size, t.next, ACK_EVERY);
            g.bench_function(
                BenchmarkId::new(t.transport.name(), size_label(size)),
                |b| {
                    b.iter_custom(|iters| {
                        let n =
                            ok(s.run_rtt(&mut t.link, Until::Count(0), Until::Count(iters), None));
                        n.elapsed()
                    })
                },
            );
            t.next = s.next_stamp();
        }
    }
    g.finish();
}

/// One-way throughput: `iters` requests as fast as the connection takes
/// them, from the first send to the acknowledgement of the last.
fn one_way(c: &mut Criterion, targets: &mut [Target]) {
    let mut g = c.benchmark_group("ipc_one_way");
    for size in SIZES {
        g.throughput(throughput(size));
        for t in targets.iter_mut() {
            let mut s = Session::new(size, t.next, ACK_EVERY);
            g.bench_function(
                BenchmarkId::new(t.transport.name(), size_label(size)),
                |b| {
                    b.iter_custom(|iters| {
                        let n = ok(s.run_oneway(&mut t.link, Until::Count(0), Until::Count(iters)));
                        n.elapsed()
                    })
                },
            );
            t.next = s.next_stamp();
        }
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30)
        .configure_from_args();
    let cpus = cpus();
    if let Some((mine, _)) = cpus {
        ok(cpu::pin(mine));
    }
    let mut targets: Vec<Target> = TRANSPORTS
        .into_iter()
        .filter_map(|t| start(t, cpus.map(|c| c.1)))
        .collect();
    round_trip(&mut c, &mut targets);
    one_way(&mut c, &mut targets);
    for t in targets {
        drop(t.link);
        ok(t.server.stop());
    }
    c.final_summary();
}
