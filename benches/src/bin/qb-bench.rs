//! `qb-bench`: ringlink against libqb itself, speaking libqb's protocol,
//! in one run on the same machine: libqb's C client against libqb's C
//! server (the reference), against ringlink's libqb-mode server, and
//! ringlink's libqb-mode client against libqb's server and against
//! ringlink's; round-trip latency (p50, p99) and one-way throughput, for
//! each size, over libqb's shared memory and its sockets. Server and
//! client are separate processes, pinned to two CPUs.
//!
//! ```text
//! cargo run --release -p ringlink-benches --bin qb-bench [-- OPTIONS]
//! ```
//!
//! libqb's side is `benches/c/qb_bench.c`, built here with gcc against
//! the system's libqb (Debian's `libqb-dev`; `scripts/install-test-deps`
//! installs it). `qb-bench --serve` and `--client` are the ringlink
//! processes it starts itself.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use ringlink_benches::cpu;
use ringlink_benches::stats::parse_size;
use ringlink_common::qb::QbTransport;
use ringlink_ipcc::{Client, ConnectOptions};
use ringlink_ipcs::{Connection, Handler, Request, Service, ServiceOptions};

/// ringlink and libqb, both speaking libqb's protocol: round trips and
/// one-way throughput, C client and server against ringlink's.
#[derive(Debug, Parser)]
#[command(name = "qb-bench", version)]
struct Args {
    /// Message sizes, comma-separated, with optional K/M suffixes
    #[arg(long, value_delimiter = ',', value_parser = size_arg, default_value = "64,1K,64K")]
    sizes: Vec<usize>,

    /// libqb transports: shm, socket
    #[arg(long, value_delimiter = ',', default_value = "shm,socket")]
    transports: Vec<String>,

    /// Round trips per measurement at 64 bytes (one-way messages: ten
    /// times as many); larger sizes do fewer, in proportion to their cost
    #[arg(long, default_value = "20000")]
    count: u64,

    /// Rounds of every measurement; the median is reported
    #[arg(long, default_value = "3")]
    rounds: usize,

    /// (internal) serve as ringlink's libqb-mode server: NAME TRANSPORT
    #[arg(long, num_args = 2, hide = true)]
    serve: Option<Vec<String>>,

    /// (internal) run ringlink's libqb-mode client: MODE NAME SIZE COUNT
    #[arg(long, num_args = 4, hide = true)]
    client: Option<Vec<String>>,
}

fn size_arg(s: &str) -> Result<usize, String> {
    parse_size(s).ok_or_else(|| format!("not a size: {s}"))
}

/// Who serves and who calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Libqb,
    Ringlink,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Libqb => "libqb",
            Side::Ringlink => "ringlink",
        }
    }
}

/// The four pairs, client then server.
const PAIRS: [(Side, Side); 4] = [
    (Side::Libqb, Side::Libqb),
    (Side::Libqb, Side::Ringlink),
    (Side::Ringlink, Side::Libqb),
    (Side::Ringlink, Side::Ringlink),
];

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(s) = &args.serve {
        return serve(&s[0], &s[1]);
    }
    if let Some(c) = &args.client {
        return client(&c[0], &c[1], &c[2], &c[3]);
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qb-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Builds `benches/c/qb_bench.c` next to this program, if it is stale.
fn build_c() -> Result<PathBuf, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("c/qb_bench.c");
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = exe
        .parent()
        .ok_or("no directory for the C program")?
        .join("qb_bench_c");
    let time = |p: &Path| p.metadata().and_then(|m| m.modified()).ok();
    if let (Some(b), Some(s)) = (time(&out), time(&src)) {
        if b >= s {
            return Ok(out);
        }
    }
    let built = Command::new("gcc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&out)
        .arg(&src)
        .arg("-lqb")
        .output()
        .map_err(|e| format!("gcc: {e}"))?;
    if !built.status.success() {
        return Err(format!(
            "cannot build {} against libqb (is libqb-dev installed? scripts/install-test-deps): {}",
            src.display(),
            String::from_utf8_lossy(&built.stderr)
        ));
    }
    Ok(out)
}

/// A process pinned to `cpu`, killed and reaped on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pinned(mut cmd: Command, cpu: Option<usize>) -> Command {
    if let Some(cpu) = cpu {
        let mut wrapped = Command::new("taskset");
        wrapped
            .arg("-c")
            .arg(cpu.to_string())
            .arg(cmd.get_program());
        wrapped.args(cmd.get_args());
        cmd = wrapped;
    }
    cmd
}

fn start_server(
    side: Side,
    c_bin: &Path,
    name: &str,
    t: &str,
    cpu: Option<usize>,
) -> Result<Proc, String> {
    let cmd = match side {
        Side::Libqb => {
            let mut c = Command::new(c_bin);
            c.args(["server", name, t]);
            c
        }
        Side::Ringlink => {
            let mut c = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
            c.arg("--serve").args([name, t]);
            c
        }
    };
    let mut child = pinned(cmd, cpu)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("start the {} server: {e}", side.name()))?;
    // Ready when it says so.
    let mut out = child.stdout.take().ok_or("server stdout")?;
    let mut line = [0u8; 6];
    std::io::Read::read_exact(&mut out, &mut line).map_err(|e| format!("server: {e}"))?;
    Ok(Proc(child))
}

fn run_client(
    side: Side,
    c_bin: &Path,
    mode: &str,
    name: &str,
    size: usize,
    count: u64,
    cpu: Option<usize>,
) -> Result<f64, String> {
    let cmd = match side {
        Side::Libqb => {
            let mut c = Command::new(c_bin);
            c.args([mode, name, &size.to_string(), &count.to_string()]);
            c
        }
        Side::Ringlink => {
            let mut c = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
            c.arg("--client")
                .args([mode, name, &size.to_string(), &count.to_string()]);
            c
        }
    };
    let out = pinned(cmd, cpu)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("run the {} client: {e}", side.name()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<&str> = text.split_whitespace().collect();
    match (f.first().copied(), f.get(1)) {
        (Some("rtt"), Some(p50)) => p50
            .parse::<f64>()
            .map(|ns| ns / 1000.0)
            .map_err(|e| e.to_string()),
        (Some("oneway"), Some(rate)) => rate
            .parse()
            .map_err(|e: std::num::ParseFloatError| e.to_string()),
        _ => Err(format!("{} client ({mode} {size}): {text}", side.name())),
    }
}

fn run(args: &Args) -> Result<(), String> {
    let c_bin = build_c()?;
    let cpus = cpu::pair().ok().flatten();
    let (server_cpu, client_cpu) = match cpus {
        Some((a, b)) => (Some(a), Some(b)),
        None => (None, None),
    };
    println!(
        "qb-bench: ringlink and libqb {} speaking libqb's protocol; server and client in separate processes{}; median of {} rounds",
        libqb_version(),
        match cpus {
            Some((a, b)) => format!(", server on CPU {a}, client on CPU {b}"),
            None => String::new(),
        },
        args.rounds
    );
    for t in &args.transports {
        for mode in ["rtt", "oneway"] {
            println!();
            match mode {
                "rtt" => println!("libqb {t}: round trip p50, us (client -> server); ratio: over libqb -> libqb, below 1 where faster"),
                _ => println!("libqb {t}: one-way messages/s (client -> server); ratio: over libqb -> libqb, above 1 where faster"),
            }
            let mut header = format!("{:>8} |", "size");
            for (c, s) in PAIRS {
                header.push_str(&format!(
                    " {:>18} |",
                    format!("{} -> {}", c.name(), s.name())
                ));
            }
            header.push_str(&format!(" {:>9} {:>9} {:>9}", "C->R", "R->C", "R->R"));
            println!("{header}");
            for &size in &args.sizes {
                // One-way messages cost a sixtieth of a round trip: ten
                // times as many keep a measurement long enough to settle.
                let per_mode = if mode == "oneway" { 10 } else { 1 };
                let count = (args.count as f64 * (64.0 / size.max(64) as f64).sqrt()).max(200.0)
                    as u64
                    * per_mode;
                // Rounds interleaved across the pairs, so that the
                // machine's drift falls on every pair alike.
                let mut rounds: Vec<Vec<f64>> = vec![Vec::new(); PAIRS.len()];
                for _ in 0..args.rounds {
                    for (i, (c, s)) in PAIRS.into_iter().enumerate() {
                        let name = format!("qbbench-{}-{}", std::process::id(), unique());
                        let _server = start_server(s, &c_bin, &name, t, server_cpu)?;
                        rounds[i]
                            .push(run_client(c, &c_bin, mode, &name, size, count, client_cpu)?);
                    }
                }
                let figures: Vec<f64> = rounds
                    .into_iter()
                    .map(|mut r| {
                        r.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
                        r[r.len() / 2]
                    })
                    .collect();
                let mut line = format!("{:>8} |", label(size));
                for f in &figures {
                    line.push_str(&format!(" {:>18} |", show(mode, *f)));
                }
                for f in &figures[1..] {
                    line.push_str(&format!(" {:>8.2}x", f / figures[0]));
                }
                println!("{line}");
            }
        }
    }
    Ok(())
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn label(size: usize) -> String {
    match size {
        s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 && s % (1 << 10) == 0 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

fn show(mode: &str, f: f64) -> String {
    match mode {
        "rtt" => format!("{f:.2}"),
        _ if f >= 1e6 => format!("{:.2} M", f / 1e6),
        _ => format!("{:.1} k", f / 1e3),
    }
}

fn libqb_version() -> String {
    Command::new("pkg-config")
        .args(["--modversion", "libqb"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "(version unknown)".into())
}

/// ringlink's libqb-mode server, as the C one: id 1 echoed, id 2 not
/// answered, id 3 answered empty.
struct Bench;

impl Handler for Bench {
    fn message(&self, conn: &Connection, req: &Request<'_>) {
        match req.id() {
            1 => {
                let _ = conn.respond(req.seq(), 1, req.payload());
            }
            3 => {
                let _ = conn.respond(req.seq(), 3, &[]);
            }
            _ => {
                let _ = conn.skip_response(req.seq());
            }
        }
    }
}

fn serve(name: &str, t: &str) -> ExitCode {
    let transport = if t == "socket" {
        QbTransport::Socket
    } else {
        QbTransport::Shm
    };
    let mut service = match Service::unbound("qb-bench", ServiceOptions::default(), Bench) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("qb-bench server: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = service.listen_libqb(name, transport) {
        eprintln!("qb-bench server: {e}");
        return ExitCode::FAILURE;
    }
    println!("ready");
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let _ = service.run();
    ExitCode::SUCCESS
}

fn client(mode: &str, name: &str, size: &str, count: &str) -> ExitCode {
    let (Ok(size), Ok(count)) = (size.parse::<usize>(), count.parse::<u64>()) else {
        return ExitCode::from(2);
    };
    let mut o = ConnectOptions::new("");
    o.max_message = (size as u32).max(65_536);
    o.wait_for_server = true;
    o.timeout = Duration::from_secs(10);
    o.server_wait = o.timeout;
    let mut c = match Client::connect_libqb(name, &o) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("qb-bench client: {e}");
            return ExitCode::FAILURE;
        }
    };
    let payload = vec![0x5au8; size];
    let mut buf = vec![0u8; c.max_message()];
    let timeout = Some(Duration::from_secs(10));
    let warm = count / 10 + 1;
    if mode == "rtt" {
        let mut t = Vec::with_capacity(count as usize);
        for i in 0..warm + count {
            let t0 = Instant::now();
            if let Err(e) = c.send_recv(1, &payload, &mut buf, timeout) {
                eprintln!("round trip {i}: {e}");
                return ExitCode::FAILURE;
            }
            if i >= warm {
                t.push(t0.elapsed().as_nanos() as u64);
            }
        }
        t.sort_unstable();
        println!("rtt {} {}", t[t.len() / 2], t[t.len() * 99 / 100]);
    } else {
        let mut t0 = Instant::now();
        for i in 0..warm + count {
            if i == warm {
                t0 = Instant::now();
            }
            if let Err(e) = c.send_timeout(2, &payload, timeout) {
                eprintln!("send {i}: {e}");
                return ExitCode::FAILURE;
            }
            if i % 256 == 255 && c.send_recv(3, &[], &mut buf, timeout).is_err() {
                return ExitCode::FAILURE;
            }
        }
        if c.send_recv(3, &[], &mut buf, timeout).is_err() {
            return ExitCode::FAILURE;
        }
        println!("oneway {:.0}", count as f64 / t0.elapsed().as_secs_f64());
    }
    ExitCode::SUCCESS
}
