//! `ipc-bench`: ringlink's server and client (`ipcs`/`ipcc`) over shared
//! memory and over its socket transport, against a bare Unix-socket
//! server, with the server and every client in separate processes.
//! With `--iceoryx2`, iceoryx2's request-response too, in the same
//! rounds (its peer is built from `benches/iceoryx2`, a crate outside the
//! workspace, the first time). Prints one table on stdout (or JSON lines
//! with `--json`), draws an SVG with `--plot PATH`, shows progress on
//! stderr.
//!
//! ```text
//! cargo run --release -p ringlink-benches --bin ipc-bench [-- OPTIONS]
//! ```
//!
//! Run with `--help` for the options. How it measures: the
//! [`ringlink_benches::ipc`] module. `ipc-bench --serve`,
//! `--client` and `--peer` are the processes it starts itself; they are
//! not meant to be run by hand.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ringlink_benches::ipc::coord::{self, Pinning, Plan, Timing};
use ringlink_benches::ipc::{self, Mode, Transport, MAX_SIZE};
use ringlink_benches::stats::parse_size;
use ringlink_ringbuf::DEFAULT_SPIN;

/// Compares ringlink over shared memory (`shm`, and `shm-nospin`: no
/// spinning, every wait sleeps) and over its socket transport (`socket`)
/// with a bare SOCK_SEQPACKET server written on nix (`uds-baseline`):
/// round-trip latency (p50/p99/p99.9) and one-way throughput, between a
/// server process and client processes, next to the machine's floors
/// (bare spin and eventfd ping-pongs between two processes, single-core
/// memcpy); with --iceoryx2, iceoryx2's request-response in the same
/// rounds.
#[derive(Debug, Parser)]
#[command(name = "ipc-bench", version)]
struct Args {
    /// Message sizes, comma-separated, with optional K/M suffixes (binary)
    #[arg(long, value_delimiter = ',', value_parser = size_arg, default_value = "64,1K,64K,1M")]
    sizes: Vec<usize>,

    /// Transports to compare: shm, shm-nospin, socket, uds-baseline
    /// (and shm-typed, shm-async, shm-zc, iceoryx2, iceoryx2-event: see
    /// --typed, --async, --zero-copy, --iceoryx2)
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "shm,shm-nospin,socket,uds-baseline"
    )]
    transports: Vec<Transport>,

    /// What to measure: rtt (round trips), oneway (throughput), events
    /// (server-to-client event throughput; not by default)
    #[arg(long, value_delimiter = ',', default_value = "rtt,oneway")]
    modes: Vec<Mode>,

    /// Measured seconds per transport, size and mode, split over the
    /// rounds
    #[arg(long, value_name = "SECS", value_parser = seconds_arg, default_value = "0.6")]
    duration: f64,

    /// Instead of a duration: messages (or round trips) per client and
    /// round, after a warm-up of a tenth of that
    #[arg(long, value_name = "N", conflicts_with = "duration", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,

    /// Warm-up seconds before every round (with --duration)
    #[arg(long, value_name = "SECS", value_parser = seconds_arg, default_value = "0.05")]
    warmup: f64,

    /// Rounds per figure; each round runs every transport once, in turn,
    /// so that all see the same moments of a noisy machine
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100))]
    rounds: u64,

    /// Client processes (one connection each per transport); throughput
    /// is their sum, latency over all their round trips
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    clients: u64,

    /// Spin budget of shm and socket, server and clients, in
    /// microseconds (shm-nospin always uses 0)
    #[arg(long, value_name = "MICROS", default_value_t = DEFAULT_SPIN.as_micros() as u64)]
    spin: u64,

    /// Pin the server to one CPU and the clients to the others (the
    /// default when there are two CPUs or more; fails with fewer)
    #[arg(long, conflicts_with = "no_pin")]
    pin: bool,

    /// Let the scheduler place the processes (spinning results suffer
    /// when a server and a client share a CPU)
    #[arg(long)]
    no_pin: bool,

    /// One-way: every this many requests asks the server for an
    /// acknowledgement (at most two are outstanding)
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    ack_every: u64,

    /// ringlink servers' min_message: rings are sized for at least this
    /// [default: 64K (ringlink's default) up to 64 clients, else 0, so
    /// that a thousand connections keep small rings]
    #[arg(long, value_name = "BYTES", value_parser = parse_any_size)]
    min_message: Option<usize>,

    /// Skip the floors (spin and eventfd ping-pongs, memcpy)
    #[arg(long)]
    no_floors: bool,

    /// Also measure the tokio client (`AsyncClient`) over shared memory,
    /// as transport `shm-async`, beside the blocking one
    #[arg(long = "async")]
    with_async: bool,

    /// Also measure zero-copy over shared memory, as transport `shm-zc`:
    /// requests written in the ring, responses read where they lie and
    /// written in the ring by the server (ratio `zc/shm`)
    #[arg(long)]
    zero_copy: bool,

    /// Also measure typed messages (`ringlink::typed`) over shared
    /// memory, as transport `shm-typed`: round trips of a 64-byte struct,
    /// encoded and decoded on both sides, in the 64 B row beside the raw
    /// ones (ratio `typed/shm`)
    #[arg(long)]
    typed: bool,

    /// Also measure iceoryx2 0.10's request-response (round trips), as
    /// transports `iceoryx2` (both sides busy-poll) and `iceoryx2-event`
    /// (both block on iceoryx2 event services), payload written and read
    /// on both sides as shm-zc does (ratios `shm/ice`, `zc/ice`,
    /// `nospin/ice-event`). Its peer is built with cargo from
    /// benches/iceoryx2 (outside the workspace: Rust 1.89 or newer) the
    /// first time; one client only
    #[arg(long)]
    iceoryx2: bool,

    /// Print JSON lines (one object per transport, mode and size, then
    /// the floors) instead of the table
    #[arg(long)]
    json: bool,

    /// Also draw latency and throughput against message size as an SVG
    /// at PATH
    #[arg(long, value_name = "PATH")]
    plot: Option<PathBuf>,

    /// Tiny counts (--count 200 --rounds 1), for a smoke test
    #[arg(long, conflicts_with_all = ["count", "duration"])]
    quick: bool,
}

fn size_arg(s: &str) -> Result<usize, String> {
    match parse_size(s) {
        Some(n) if (1..=MAX_SIZE).contains(&n) => Ok(n),
        Some(_) => Err(format!("out of range: 1 B to {} B", MAX_SIZE)),
        None => Err("not a size (e.g. 64, 1K, 1M)".into()),
    }
}

fn parse_any_size(s: &str) -> Result<usize, String> {
    parse_size(s).ok_or_else(|| "not a size (e.g. 0, 4K, 64K)".into())
}

fn seconds_arg(s: &str) -> Result<f64, String> {
    s.parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0 && *v < 3600.0)
        .ok_or_else(|| "not a number of seconds (0 to 3600)".into())
}

/// `list` without repetitions, in its order.
fn unique<T: PartialEq + Copy>(list: &[T]) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(list.len());
    for &x in list {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

impl Args {
    fn plan(&self) -> Plan {
        let rounds = if self.quick { 1 } else { self.rounds as usize };
        let timing = match (self.quick, self.count) {
            (true, _) => Timing::Count {
                warm: 20,
                count: 200,
            },
            (false, Some(n)) => Timing::Count {
                warm: (n / 10).max(1),
                count: n,
            },
            (false, None) => Timing::Time {
                warm: Duration::from_secs_f64(self.warmup),
                measure: Duration::from_secs_f64(self.duration / rounds as f64),
            },
        };
        let clients = self.clients as usize;
        Plan {
            sizes: unique(&self.sizes),
            transports: {
                let mut ts = self.transports.clone();
                if self.with_async {
                    ts.insert(1, Transport::ShmAsync);
                }
                if self.zero_copy {
                    ts.insert(ts.len().min(1), Transport::ShmZeroCopy);
                }
                if self.typed {
                    ts.insert(ts.len().min(1), Transport::ShmTyped);
                }
                if self.iceoryx2 {
                    ts.extend([Transport::Iceoryx2, Transport::Iceoryx2Event]);
                }
                unique(&ts)
            },
            modes: unique(&self.modes),
            clients,
            rounds,
            timing,
            spin: Duration::from_micros(self.spin),
            pin: match (self.pin, self.no_pin) {
                (true, _) => Pinning::On,
                (_, true) => Pinning::Off,
                _ => Pinning::Auto,
            },
            ack_every: self.ack_every,
            min_message: self.min_message.unwrap_or(if clients <= 64 {
                ringlink_ipcs::ServiceOptions::default().min_message
            } else {
                0
            }),
            floors: !self.no_floors,
            progress: true,
        }
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    // The processes ipc-bench starts itself.
    match (argv.get(1).map(String::as_str), argv.get(2)) {
        (Some("--peer"), _) => return ringlink_benches::peer::main(&argv[2..]),
        (Some("--serve"), Some(cfg)) => return ipc::server::main(cfg),
        (Some("--client"), Some(cfg)) => return ipc::client::main(cfg),
        _ => {}
    }
    let args = Args::parse();
    let plan = args.plan();
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("ipc-bench: cannot find its own executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    let results = match coord::run(&plan, &exe) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ipc-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        for note in &results.notes {
            eprintln!("ipc-bench: {note}");
        }
        if let Err(e) = ipc::report::write_json(&results, std::io::stdout().lock()) {
            eprintln!("ipc-bench: {e}");
            return ExitCode::FAILURE;
        }
    } else {
        print!("{}", ipc::report::table(&results));
    }
    if let Some(path) = &args.plot {
        if let Err(e) = ipc::plot::write(&results, path) {
            eprintln!(
                "ipc-bench: cannot write the plot to {}: {e}",
                path.display()
            );
            return ExitCode::FAILURE;
        }
        if !args.json {
            println!("plot: {}", path.display());
        }
    }
    ExitCode::SUCCESS
}
