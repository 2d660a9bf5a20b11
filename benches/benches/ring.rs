//! Criterion benches of the ring: one-way throughput between two threads
//! and between two processes, round-trip latency between two processes
//! (spinning and pure eventfd sleep/wake), each beside the same
//! measurement over a Unix `SOCK_SEQPACKET` socket pair and (between
//! processes) over the bare shared-memory streams (fixed slots, two
//! counters, or headers the reader polls: the least a ring can be); the
//! bare spin ping-pong latency
//! floor; the single-core memcpy rate.
//!
//! The two-process benches drive a peer process (`ring-bench --peer`),
//! spawned once, on first use. The bench and its peer (or its second
//! thread) are pinned to two different CPUs when there are two;
//! `RINGLINK_BENCH_PIN=0` turns that off.

use std::hint::black_box;
use std::io;
use std::path::Path;
use std::sync::Barrier;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use ringlink_benches::driver::{Peer, PeerOptions};
use ringlink_benches::stats::size_label;
use ringlink_benches::{capacity_for, cpu, memcpy, ops, seqpacket, DEFAULT_CAPACITY};
use ringlink_ringbuf::{Ring, DEFAULT_SPIN};

const SIZES: [usize; 4] = [8, 64, 1 << 10, 64 << 10];

/// Where to pin: (this thread, the other side). Pinned apart by
/// default when there are two CPUs, because a process woken through a
/// Unix socket (the peer's control socket) is often placed on its
/// waker's CPU, where two spinning sides starve each other.
/// `RINGLINK_BENCH_PIN=0` leaves placement to the scheduler.
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

fn throughput(size: usize) -> Throughput {
    Throughput::ElementsAndBytes {
        elements: 1,
        bytes: size as u64,
    }
}

/// Fails the bench loudly: a benchmark that errs measures nothing.
fn ok<T>(r: io::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("benchmark failed: {e}"))
}

/// The two-process peer, started on first use.
struct LazyPeer {
    peer: Option<Peer>,
    cpus: Option<(usize, usize)>,
}

impl LazyPeer {
    fn get(&mut self) -> &mut Peer {
        let cpus = self.cpus;
        self.peer.get_or_insert_with(|| {
            let exe = Path::new(env!("CARGO_BIN_EXE_ring-bench"));
            let opts = PeerOptions {
                capacity: capacity_for(SIZES[SIZES.len() - 1], DEFAULT_CAPACITY),
                cpu: cpus.map(|c| c.1),
            };
            ok(Peer::spawn(exe, &opts))
        })
    }
}

/// Keeps a role handle on cache lines of its own. Each handle's
/// positions change on every message, in different threads; side by side
/// on the stack the two would share a line and measure false sharing.
#[repr(align(128))]
struct Padded<T>(T);

/// One-way throughput between two threads of this process: the bench
/// thread sends `iters + 1` messages, the other receives them; the time
/// is the receiver's, from the first message to the last.
fn one_way_threads(c: &mut Criterion, cpus: Option<(usize, usize)>) {
    let mut g = c.benchmark_group("one_way_threads");
    for size in SIZES {
        g.throughput(throughput(size));
        let ring = ok(Ring::create(capacity_for(size, DEFAULT_CAPACITY)).map_err(io::Error::other));
        let mut tx = Padded(ok(ring.producer().map_err(io::Error::other)));
        let mut rx = Padded(ok(ring.consumer().map_err(io::Error::other)));
        g.bench_function(BenchmarkId::new("ring", size_label(size)), |b| {
            b.iter_custom(|iters| {
                two_threads(
                    cpus,
                    || ops::send(&mut tx.0, size, iters + 1),
                    || ops::receive(&mut rx.0, size, iters),
                )
            })
        });
        let (a, z) = ok(seqpacket::pair());
        g.bench_function(BenchmarkId::new("seqpacket", size_label(size)), |b| {
            b.iter_custom(|iters| {
                two_threads(
                    cpus,
                    || seqpacket::send(&a, size, iters + 1),
                    || seqpacket::receive(&z, size, iters),
                )
            })
        });
    }
    g.finish();
}

/// Runs `send` here and `receive` on a scoped thread, started together
/// at a barrier; returns the receiver's time.
fn two_threads(
    cpus: Option<(usize, usize)>,
    send: impl FnOnce() -> io::Result<()>,
    receive: impl FnOnce() -> io::Result<(Duration, u64)> + Send,
) -> Duration {
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        let rx = s.spawn(|| {
            if let Some((_, other)) = cpus {
                ok(cpu::pin(other));
            }
            barrier.wait();
            receive()
        });
        barrier.wait();
        ok(send());
        let (took, acc) = ok(rx.join().expect("receiver thread panicked"));
        black_box(acc);
        took
    })
}

/// One-way throughput between this process and the peer (peer sends).
fn one_way_processes(c: &mut Criterion, peer: &mut LazyPeer) {
    let mut g = c.benchmark_group("one_way_processes");
    for size in SIZES {
        g.throughput(throughput(size));
        g.bench_function(BenchmarkId::new("ring", size_label(size)), |b| {
            b.iter_custom(|iters| ok(peer.get().ring_one_way(size, iters)))
        });
        g.bench_function(BenchmarkId::new("seqpacket", size_label(size)), |b| {
            b.iter_custom(|iters| ok(peer.get().socket_one_way(size, iters)))
        });
        g.bench_function(BenchmarkId::new("bare_shm", size_label(size)), |b| {
            b.iter_custom(|iters| ok(peer.get().bare_one_way(size, iters)))
        });
        g.bench_function(BenchmarkId::new("bare_hdr", size_label(size)), |b| {
            b.iter_custom(|iters| ok(peer.get().headed_one_way(size, iters)))
        });
    }
    g.finish();
}

/// Round trips between this process and the peer: ring with the default
/// spin, ring with no spin (every wait sleeps on the eventfd), seqpacket,
/// the bare streams and the bare spin ping-pong.
fn round_trip(c: &mut Criterion, peer: &mut LazyPeer) {
    let mut g = c.benchmark_group("round_trip");
    for size in SIZES {
        g.throughput(throughput(size));
        bench_rt(&mut g, "ring_spin", size, |n| {
            peer.get().ring_round_trips(size, n, DEFAULT_SPIN, None)
        });
        bench_rt(&mut g, "ring_nospin", size, |n| {
            peer.get().ring_round_trips(size, n, Duration::ZERO, None)
        });
        bench_rt(&mut g, "seqpacket", size, |n| {
            peer.get().socket_round_trips(size, n, None)
        });
        bench_rt(&mut g, "bare_shm", size, |n| {
            peer.get().bare_round_trips(size, n, None)
        });
        bench_rt(&mut g, "bare_hdr", size, |n| {
            peer.get().headed_round_trips(size, n, None)
        });
    }
    g.throughput(Throughput::Elements(1));
    g.bench_function("spin_floor", |b| {
        b.iter_custom(|iters| ok(peer.get().floor_round_trips(iters, None)))
    });
    g.finish();
}

fn bench_rt(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    size: usize,
    mut f: impl FnMut(u64) -> io::Result<Duration>,
) {
    g.bench_function(BenchmarkId::new(name, size_label(size)), |b| {
        b.iter_custom(|iters| ok(f(iters)))
    });
}

/// The single-core memcpy rate at 64 KiB, the ceiling of one-way
/// bandwidth for a transport that copies once.
fn memcpy_rate(c: &mut Criterion) {
    let mut g = c.benchmark_group("memcpy");
    let size = 64 << 10;
    g.throughput(Throughput::Bytes(size as u64));
    let src = vec![7u8; size];
    let mut dst = vec![0u8; size];
    g.bench_function(size_label(size), |b| {
        b.iter(|| memcpy::copy_n(&mut dst, &src, 1))
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let cpus = cpus();
    if let Some((mine, _)) = cpus {
        ok(cpu::pin(mine));
    }
    let mut peer = LazyPeer { peer: None, cpus };
    one_way_threads(&mut c, cpus);
    one_way_processes(&mut c, &mut peer);
    round_trip(&mut c, &mut peer);
    memcpy_rate(&mut c);
    if let Some(p) = peer.peer.take() {
        let (shared, runs) = p.cpu_sharing();
        if shared > 0 {
            eprintln!(
                "WARNING: {shared} of {runs} two-process runs ended with both processes \
                 on one CPU; their spinning results are meaningless"
            );
        }
        ok(p.close());
    }
    c.final_summary();
}
