//! `ring-bench`: the ring against a Unix `SOCK_SEQPACKET` socket between
//! two processes, and against the latency and bandwidth floors of the
//! machine. Prints one table on stdout.
//!
//! ```text
//! cargo run --release -p ringlink-benches --bin ring-bench [-- OPTIONS]
//! ```
//!
//! Run with `--help` for the options. `ring-bench --peer` is the peer
//! process the command starts itself; it is not meant to be run by hand.

use std::io;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ringlink_benches::driver::{Peer, PeerOptions};
use ringlink_benches::stats::{parse_size, si, si_range, size_label, summarize, Summary};
use ringlink_benches::{bare, capacity_for, cpu, memcpy, DEFAULT_CAPACITY};
use ringlink_ringbuf::DEFAULT_SPIN;

const USAGE: &str = "\
usage: ring-bench [OPTIONS]

Compares the ringlink ring with a Unix SOCK_SEQPACKET socket pair between
two processes (this one and a peer it spawns), and with the machine's
floors: bare shared-memory streams (fixed slots, no validation, no
wake-ups; one publishing a write counter, one publishing each slot's
header word), a bare spin ping-pong, a single-core memcpy.

options:
  --sizes LIST      message sizes, comma-separated, with optional K/M
                    suffixes (binary), 1 B to 512K [default: 8,64,1K,64K]
  --duration SECS   timed time per transport and size, after warm-up and
                    calibration, split into 5 rounds that interleave the
                    transports (one-way: median of the 5 runs shown)
                    [default: 0.5]
  --count N         fixed count instead: N messages per one-way run, N
                    round trips per latency run (5 rounds each), after
                    a warm-up of N/10
  --quick           tiny counts, for a smoke test (a couple of seconds)
  --no-pin          let the scheduler place the two processes (default:
                    pin them to two different CPUs when there are two;
                    unpinned, a Unix-socket wake-up often puts the peer
                    on the driver's CPU, and spinning results collapse)
  --pin             pin (the default; fails if there are fewer than two
                    CPUs)
  --capacity BYTES  capacity of each ring [default: 1M, raised to fit the
                    largest size]
  -h, --help        this text
";

#[derive(Debug)]
struct Config {
    sizes: Vec<usize>,
    duration: Duration,
    count: Option<u64>,
    /// `None`: pin if possible; `Some(true)`: pin or fail; `Some(false)`:
    /// do not pin.
    pin: Option<bool>,
    capacity: usize,
}

fn parse_args(args: &[String]) -> Result<Option<Config>, String> {
    let mut cfg = Config {
        sizes: vec![8, 64, 1 << 10, 64 << 10],
        duration: Duration::from_millis(500),
        count: None,
        pin: None,
        capacity: DEFAULT_CAPACITY,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--quick" => cfg.count = Some(1000),
            "--pin" => cfg.pin = Some(true),
            "--no-pin" => cfg.pin = Some(false),
            "--sizes" => {
                let v = value("--sizes")?;
                cfg.sizes = v
                    .split(',')
                    .map(|s| parse_size(s).ok_or_else(|| format!("bad size {s:?}")))
                    .collect::<Result<_, _>>()?;
                if let Some(bad) = cfg
                    .sizes
                    .iter()
                    .find(|&&s| s == 0 || s > bare::STREAM_BYTES / 2)
                {
                    return Err(format!(
                        "size {bad} out of range: 1 B to {} (half a bare stream)",
                        size_label(bare::STREAM_BYTES / 2)
                    ));
                }
            }
            "--duration" => {
                let v = value("--duration")?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0 && *s < 3600.0)
                    .ok_or_else(|| format!("bad duration {v:?}"))?;
                cfg.duration = Duration::from_secs_f64(secs);
            }
            "--count" => {
                let v = value("--count")?;
                let n: u64 = v
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("bad count {v:?}"))?;
                cfg.count = Some(n);
            }
            "--capacity" => {
                let v = value("--capacity")?;
                cfg.capacity = parse_size(&v)
                    .filter(|c| c.is_power_of_two())
                    .ok_or_else(|| format!("bad capacity {v:?} (a power of two)"))?;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Some(cfg))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--peer") {
        return ringlink_benches::peer::main(&args[1..]);
    }
    let cfg = match parse_args(&args) {
        Ok(Some(cfg)) => cfg,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("ring-bench: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ring-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Rounds per measurement. Each round runs every transport once, one
/// after the other, so that the ratios compare runs made at the same
/// time (on a virtual machine, the speed of cross-core transfers drifts
/// by tens of percent within seconds).
const ROUNDS: usize = 5;

/// One-way transports.
#[derive(Clone, Copy, Debug)]
enum OneWay {
    Ring,
    RingEach,
    Socket,
    Bare,
    Headed,
}

/// Round-trip transports.
#[derive(Clone, Copy, Debug)]
enum RoundTrip {
    RingSpin,
    RingNoSpin,
    Socket,
    Bare,
    Headed,
    Floor,
}

fn one_way(peer: &mut Peer, kind: OneWay, size: usize, n: u64) -> io::Result<Duration> {
    match kind {
        OneWay::Ring => peer.ring_one_way(size, n),
        OneWay::RingEach => peer.ring_one_way_batched(size, n, 0),
        OneWay::Socket => peer.socket_one_way(size, n),
        OneWay::Bare => peer.bare_one_way(size, n),
        OneWay::Headed => peer.headed_one_way(size, n),
    }
}

fn round_trip(
    peer: &mut Peer,
    kind: RoundTrip,
    size: usize,
    n: u64,
    samples: Option<&mut Vec<u64>>,
) -> io::Result<Duration> {
    match kind {
        RoundTrip::RingSpin => peer.ring_round_trips(size, n, DEFAULT_SPIN, samples),
        RoundTrip::RingNoSpin => peer.ring_round_trips(size, n, Duration::ZERO, samples),
        RoundTrip::Socket => peer.socket_round_trips(size, n, samples),
        RoundTrip::Bare => peer.bare_round_trips(size, n, samples),
        RoundTrip::Headed => peer.headed_round_trips(size, n, samples),
        RoundTrip::Floor => peer.floor_round_trips(n, samples),
    }
}

/// Runs `f` as warm-up and calibration; returns the count of one timed
/// run. `f(count)` performs `count` operations and returns their time.
/// With `--count N`, warms up with `N / 10` and returns `N`; otherwise
/// grows the count until a run takes a tenth of `time`, then scales it to
/// `time`.
fn calibrate(
    cfg: &Config,
    time: Duration,
    mut f: impl FnMut(u64) -> io::Result<Duration>,
) -> io::Result<u64> {
    if let Some(n) = cfg.count {
        f((n / 10).max(1))?;
        return Ok(n);
    }
    let target = time.as_secs_f64();
    let mut n = 64u64;
    loop {
        let t = f(n)?.as_secs_f64().max(1e-9);
        if t >= target / 10.0 || n >= 1 << 34 {
            return Ok(((n as f64 * target / t).ceil() as u64).max(1));
        }
        n *= 4;
    }
}

/// A one-way rate: the median of the [`ROUNDS`] timed runs, and their
/// range.
#[derive(Debug, Clone, Copy)]
struct Rate {
    msgs: f64,
    bytes: f64,
    min_msgs: f64,
    max_msgs: f64,
}

impl Rate {
    fn of(size: usize, mut rates: Vec<f64>) -> Rate {
        rates.sort_by(f64::total_cmp);
        let msgs = rates[rates.len() / 2];
        Rate {
            msgs,
            bytes: msgs * size as f64,
            min_msgs: rates[0],
            max_msgs: rates[rates.len() - 1],
        }
    }
}

/// One-way throughput of `size`-byte messages over each transport:
/// warm-up and calibration of each, then [`ROUNDS`] rounds of one timed
/// run per transport (each transport's runs together `--duration`).
fn throughputs(
    cfg: &Config,
    peer: &mut Peer,
    size: usize,
    kinds: &[OneWay],
) -> io::Result<Vec<Rate>> {
    let mut counts = Vec::new();
    for &k in kinds {
        let per_run = cfg.duration / ROUNDS as u32;
        counts.push(calibrate(cfg, per_run, |n| one_way(peer, k, size, n))?);
    }
    let mut rates = vec![Vec::with_capacity(ROUNDS); kinds.len()];
    for _ in 0..ROUNDS {
        for (i, &k) in kinds.iter().enumerate() {
            let secs = one_way(peer, k, size, counts[i])?.as_secs_f64().max(1e-12);
            rates[i].push(counts[i] as f64 / secs);
        }
    }
    Ok(rates.into_iter().map(|r| Rate::of(size, r)).collect())
}

/// Round-trip latencies of `size`-byte messages over each transport:
/// warm-up and calibration of each, then [`ROUNDS`] rounds of one timed
/// run per transport; every round trip of the timed runs is a sample.
fn latencies(
    cfg: &Config,
    peer: &mut Peer,
    size: usize,
    kinds: &[RoundTrip],
) -> io::Result<Vec<Summary>> {
    let mut counts = Vec::new();
    for &k in kinds {
        let n = calibrate(cfg, cfg.duration, |n| round_trip(peer, k, size, n, None))?;
        counts.push(match cfg.count {
            Some(n) => n,
            None => n.div_ceil(ROUNDS as u64),
        });
    }
    let mut samples: Vec<Vec<u64>> = counts
        .iter()
        .map(|&n| Vec::with_capacity((n as usize).saturating_mul(ROUNDS).min(1 << 26)))
        .collect();
    for _ in 0..ROUNDS {
        for (i, &k) in kinds.iter().enumerate() {
            round_trip(peer, k, size, counts[i], Some(&mut samples[i]))?;
        }
    }
    Ok(samples.iter_mut().map(|s| summarize(s)).collect())
}

#[derive(Debug)]
struct Row {
    size: usize,
    ring: Rate,
    ring_each: Rate,
    socket: Rate,
    bare: Rate,
    headed: Rate,
    rt_spin: Summary,
    rt_nospin: Summary,
    rt_socket: Summary,
    rt_bare: Summary,
    rt_headed: Summary,
    floor: Summary,
    memcpy: f64,
}

fn run(cfg: &Config) -> io::Result<()> {
    let started = Instant::now();
    let exe = std::env::current_exe()?;
    let largest = cfg.sizes.iter().copied().max().unwrap_or(0);
    let capacity = capacity_for(largest, cfg.capacity);
    let cpus = match cfg.pin {
        Some(false) => None,
        Some(true) => Some(
            cpu::pair()?.ok_or_else(|| io::Error::other("--pin: fewer than two CPUs available"))?,
        ),
        None => cpu::pair()?,
    };
    if cpus.is_none() && cfg.pin.is_none() {
        eprintln!("ring-bench: not pinned: fewer than two CPUs available");
    }
    let mut peer = Peer::spawn(
        &exe,
        &PeerOptions {
            capacity,
            cpu: cpus.map(|c| c.1),
        },
    )?;
    if let Some((mine, _)) = cpus {
        cpu::pin(mine)?;
    }
    let memcpy_time = match cfg.count {
        Some(_) => Duration::from_millis(20),
        None => cfg.duration / 2,
    };

    let mut rows = Vec::new();
    for &size in &cfg.sizes {
        let rates = throughputs(
            cfg,
            &mut peer,
            size,
            &[
                OneWay::Ring,
                OneWay::RingEach,
                OneWay::Socket,
                OneWay::Bare,
                OneWay::Headed,
            ],
        )?;
        let rts = latencies(
            cfg,
            &mut peer,
            size,
            &[
                RoundTrip::RingSpin,
                RoundTrip::RingNoSpin,
                RoundTrip::Socket,
                RoundTrip::Bare,
                RoundTrip::Headed,
                RoundTrip::Floor,
            ],
        )?;
        let memcpy = memcpy::rate(size, memcpy_time);
        rows.push(Row {
            size,
            ring: rates[0],
            ring_each: rates[1],
            socket: rates[2],
            bare: rates[3],
            headed: rates[4],
            rt_spin: rts[0],
            rt_nospin: rts[1],
            rt_socket: rts[2],
            rt_bare: rts[3],
            rt_headed: rts[4],
            floor: rts[5],
            memcpy,
        });
    }
    let peer_pid = peer.pid();
    let sharing = peer.cpu_sharing();
    peer.close()?;

    print_report(
        cfg,
        capacity,
        cpus,
        peer_pid,
        sharing,
        &rows,
        started.elapsed(),
    );
    Ok(())
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        f64::NAN
    }
}

fn print_report(
    cfg: &Config,
    capacity: usize,
    cpus: Option<(usize, usize)>,
    peer_pid: u32,
    (shared_cpu, runs): (u64, u64),
    rows: &[Row],
    took: Duration,
) {
    let pinning = match cpus {
        Some((a, b)) => format!("driver on CPU {a}, peer on CPU {b}"),
        None => "not pinned".to_string(),
    };
    let timing = match cfg.count {
        Some(n) => format!("{n} per run after a warm-up of {}", (n / 10).max(1)),
        None => format!(
            "{:.2} s per measurement after warm-up",
            cfg.duration.as_secs_f64()
        ),
    };
    println!(
        "ring-bench: 2 processes (driver {}, peer {peer_pid}), {pinning}; ring capacity {}; \
         default spin {} us; {timing}",
        std::process::id(),
        size_label(capacity),
        DEFAULT_SPIN.as_micros(),
    );
    println!();
    println!(
        "One-way throughput, median of {ROUNDS} interleaved runs (peer sends, driver receives; payload written by \
         the sender, checked and read by the receiver; bare shm: fixed slots, two counters, no \
         validation, no wake-ups; bare hdr: the same, the reader polling each slot's header \
         word instead of a counter; ring: the reader publishes its releases every eighth of the \
         ring, each rel.: at every release)"
    );
    println!(
        "{:>8} | {:>13} {:>9} {:>17} | {:>16} {:>9} | {:>16} {:>14} | {:>11} | {:>15} {:>9} | {:>15} {:>9}",
        "size",
        "ring msgs/s",
        "ring GB/s",
        "ring runs min-max",
        "each rel. msgs/s",
        "ring/each",
        "seqpacket msgs/s",
        "seqpacket GB/s",
        "ring/socket",
        "bare shm msgs/s",
        "ring/bare",
        "bare hdr msgs/s",
        "ring/hdr"
    );
    for r in rows {
        println!(
            "{:>8} | {:>13} {:>9.3} {:>17} | {:>16} {:>8.2}x | {:>16} {:>14.3} | {:>10.1}x | {:>15} {:>8.2}x | {:>15} {:>8.2}x",
            size_label(r.size),
            si(r.ring.msgs),
            r.ring.bytes / 1e9,
            si_range(r.ring.min_msgs, r.ring.max_msgs, r.ring.msgs),
            si(r.ring_each.msgs),
            ratio(r.ring.msgs, r.ring_each.msgs),
            si(r.socket.msgs),
            r.socket.bytes / 1e9,
            ratio(r.ring.msgs, r.socket.msgs),
            si(r.bare.msgs),
            ratio(r.ring.msgs, r.bare.msgs),
            si(r.headed.msgs),
            ratio(r.ring.msgs, r.headed.msgs),
        );
    }
    println!();
    println!(
        "Round-trip latency, us, median / p99 over {ROUNDS} interleaved runs (request and echoed \
         response of the same size; bare shm: two bare counter streams; bare hdr: two bare header \
         streams; spin floor: bare ping-pong of one counter each way)"
    );
    println!(
        "{:>8} | {:>15} | {:>15} | {:>15} | {:>15} | {:>15} | {:>15} | {:>11} {:>10} {:>9} {:>8} {:>13}",
        "size",
        "ring spin",
        "ring no-spin",
        "seqpacket",
        "bare shm",
        "bare hdr",
        "spin floor",
        "spin/socket",
        "spin/floor",
        "spin/bare",
        "spin/hdr",
        "nospin/socket"
    );
    for r in rows {
        let cell = |s: &Summary| format!("{:.2} / {:.2}", us(s.median), us(s.p99));
        let med = |s: &Summary| s.median as f64;
        println!(
            "{:>8} | {:>15} | {:>15} | {:>15} | {:>15} | {:>15} | {:>15} | {:>10.2}x {:>9.2}x {:>8.2}x {:>7.2}x {:>12.2}x",
            size_label(r.size),
            cell(&r.rt_spin),
            cell(&r.rt_nospin),
            cell(&r.rt_socket),
            cell(&r.rt_bare),
            cell(&r.rt_headed),
            cell(&r.floor),
            ratio(med(&r.rt_spin), med(&r.rt_socket)),
            ratio(med(&r.rt_spin), med(&r.floor)),
            ratio(med(&r.rt_spin), med(&r.rt_bare)),
            ratio(med(&r.rt_spin), med(&r.rt_headed)),
            ratio(med(&r.rt_nospin), med(&r.rt_socket)),
        );
    }
    println!();
    println!("memcpy (one core, both buffers in cache) vs one-way ring and bare stream");
    println!(
        "{:>8} | {:>11} | {:>9} | {:>16} | {:>13} | {:>16}",
        "size", "memcpy GB/s", "ring GB/s", "ring % of memcpy", "bare shm GB/s", "bare % of memcpy"
    );
    for r in rows.iter().filter(|r| r.size >= 1024) {
        println!(
            "{:>8} | {:>11.2} | {:>9.2} | {:>15.0}% | {:>13.2} | {:>15.0}%",
            size_label(r.size),
            r.memcpy / 1e9,
            r.ring.bytes / 1e9,
            100.0 * ratio(r.ring.bytes, r.memcpy),
            r.bare.bytes / 1e9,
            100.0 * ratio(r.bare.bytes, r.memcpy),
        );
    }
    println!();
    println!("Targets");
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    if let Some(r) = rows.iter().find(|r| r.size == 64) {
        let x = ratio(r.ring.msgs, r.socket.msgs);
        println!(
            "  64 B one-way, ring >= 10x socket msgs/s:      {x:>6.1}x  {}",
            verdict(x >= 10.0)
        );
    }
    if let Some(r) = rows.iter().find(|r| r.size == 64) {
        let x = ratio(r.ring.msgs, r.bare.msgs);
        println!(
            "  64 B one-way, ring >= 0.9x bare shm stream:  {x:>6.2}x  {} (bare hdr: {:.2}x; \
             releases published each: {:.2}x)",
            verdict(x >= 0.9),
            ratio(r.ring.msgs, r.headed.msgs),
            ratio(r.ring_each.msgs, r.bare.msgs)
        );
    }
    if let Some(r) = rows.iter().find(|r| r.size == 64 << 10) {
        let p = 100.0 * ratio(r.ring.bytes, r.memcpy);
        println!(
            "  64 KiB one-way, ring >= 70% of memcpy:       {p:>6.0}%  {}",
            verdict(p >= 70.0)
        );
    }
    if let Some(r) = rows.iter().find(|r| r.size == 64) {
        let x = ratio(r.rt_spin.median as f64, r.floor.median as f64);
        println!(
            "  64 B round trip, ring spin <= 1.5x floor:    {x:>6.2}x  {}",
            verdict(x <= 1.5)
        );
    }
    println!();
    println!(
        "runs that ended with both processes on one CPU: {shared_cpu} of {runs}{}",
        if shared_cpu > 0 {
            " (WARNING: spinning results of those runs are meaningless; do not use --no-pin)"
        } else {
            ""
        }
    );
    println!("done in {:.1} s", took.as_secs_f64());
}
