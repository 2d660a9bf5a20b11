//! `ringlink-iceoryx2-peer`: one side of an iceoryx2 request-response
//! round trip, the peer that `ipc-bench --iceoryx2` measures ringlink
//! against (README.md beside this crate says what is measured, how, and
//! why the comparison is fair).
//!
//! ```text
//! ringlink-iceoryx2-peer server  --domain TAG --service NAME --wait busy|event --size BYTES [--cpu N]
//! ringlink-iceoryx2-peer client  --domain TAG --service NAME --wait busy|event --size BYTES [--cpu N]
//! ringlink-iceoryx2-peer cleanup --domain TAG
//! ```
//!
//! - `server` creates the services, prints `ready` and answers every
//!   request with a response of the same size until its standard input
//!   closes.
//! - `client` opens them, prints `ready` once the server is there, then
//!   runs one measurement per line of its standard input,
//!   `run START_NS WARM MEASURE` (`START_NS`: the go signal on
//!   `CLOCK_MONOTONIC`; `WARM` and `MEASURE`: `tNS`, until that moment,
//!   or `nCOUNT`, that many round trips), and answers each with one JSON
//!   line: `measured`, `total`, `start_ns`, `end_ns`, `late_ns` and
//!   `hist` (the round trips' latency histogram, sparse), the fields of
//!   ipc-bench's own clients' reports.
//! - `cleanup` removes what the domain holds once its peers are gone:
//!   the stale resources of its dead nodes (peers that were killed), then,
//!   if no node of it is alive, its global management segment and its
//!   directories; it prints `{"cleaned":N,"failed":M,"alive":A,"left":[..]}`
//!   (`left`: what could not be removed).
//!
//! Both sides use iceoryx2's built-in configuration (`Config::default()`:
//! no configuration file is read), in a domain of their own: the files
//! of domain `TAG` are named `iox2rlb<TAG>_...` in /dev/shm and live
//! under `/tmp/iceoryx2-ringlink-bench-<TAG>/` (iceoryx2's defaults:
//! `iox2_` and `/tmp/iceoryx2/`, shared by every iceoryx2 application of
//! the machine), so that a run removes all it made and nothing else.
//! Both die with their parent process.

use std::error::Error;
use std::hint::{black_box, spin_loop};
use std::io::{self, BufRead, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iceoryx2::port::client::Client;
use iceoryx2::port::listener::Listener;
use iceoryx2::port::notifier::Notifier;
use iceoryx2::port::server::Server;
use iceoryx2::prelude::*;

// The very code ipc-bench's own transports use: the payload's pattern,
// stamps and checks, and the latency histogram (its buckets travel in
// the JSON report and merge with the coordinator's).
#[allow(dead_code)]
#[path = "../../src/hist.rs"]
mod hist;
#[allow(dead_code)]
#[path = "../../src/payload.rs"]
mod payload;

/// What the histogram's tests compare with (ipc-bench's `stats`).
#[cfg(test)]
mod stats {
    pub(crate) fn percentile(sorted: &[u64], p: f64) -> u64 {
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }
}

use hist::Histogram;
use payload::{check, pattern, stamp};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// Longest any wait may take before the peer gives up (ipc-bench's
/// `STALL`).
const STALL: Duration = Duration::from_secs(10);

/// How often an idle event-mode server looks at its standard input.
const IDLE_WAKE: Duration = Duration::from_millis(20);

/// How each side waits for the other's message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    /// Poll in a spin loop, never sleeping.
    Busy,
    /// Block on an iceoryx2 event service (a `Listener`), woken by the
    /// other side's `Notifier` after each message.
    Event,
}

#[derive(Debug)]
struct Options {
    domain: String,
    service: String,
    wait: Wait,
    size: usize,
    cpu: Option<usize>,
}

fn usage() -> String {
    "usage: ringlink-iceoryx2-peer server|client --domain TAG --service NAME --wait busy|event \
     --size BYTES [--cpu N]\n       ringlink-iceoryx2-peer cleanup --domain TAG"
        .into()
}

fn parse_options(args: &[String]) -> Result<Options> {
    let (mut domain, mut service, mut wait, mut size, mut cpu) = (None, None, None, None, None);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{}", usage()))?;
        match flag.as_str() {
            "--service" => service = Some(value.clone()),
            "--domain" => domain = Some(value.clone()),
            "--wait" => {
                wait = Some(match value.as_str() {
                    "busy" => Wait::Busy,
                    "event" => Wait::Event,
                    _ => return Err(format!("--wait busy or event, not {value:?}").into()),
                })
            }
            "--size" => size = Some(value.parse::<usize>()?),
            "--cpu" => cpu = Some(value.parse::<usize>()?),
            _ => return Err(format!("unknown option {flag}\n{}", usage()).into()),
        }
    }
    let need = |what: &str| format!("{what} is required\n{}", usage());
    let size = size.ok_or_else(|| need("--size"))?;
    if size == 0 {
        return Err("--size must be at least 1".into());
    }
    Ok(Options {
        service: service.ok_or_else(|| need("--service"))?,
        domain: domain.ok_or_else(|| need("--domain"))?,
        wait: wait.ok_or_else(|| need("--wait"))?,
        size,
        cpu,
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("server") => parse_options(&args[1..]).and_then(|o| serve(&o)),
        Some("client") => parse_options(&args[1..]).and_then(|o| client(&o)),
        Some("cleanup") => match args.get(1..) {
            Some([flag, domain]) if flag == "--domain" => cleanup(domain),
            _ => Err(usage().into()),
        },
        _ => Err(usage().into()),
    };
    if let Err(e) = result {
        eprintln!("ringlink-iceoryx2-peer (pid {}): {e}", std::process::id());
        std::process::exit(1);
    }
}

/// Dies with the parent (ipc-bench), even if it is killed outright, and
/// runs on `cpu` if given.
fn set_up_process(cpu: Option<usize>) -> Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and touches
    // no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
        return Err(io::Error::last_os_error().into());
    }
    if let Some(cpu) = cpu {
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(format!("no CPU {cpu}").into());
        }
        // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes
        // inside it (cpu is below CPU_SETSIZE); sched_setaffinity reads
        // it for the calling thread.
        let ok = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
        };
        if ok != 0 {
            return Err(format!("cannot pin to CPU {cpu}: {}", io::Error::last_os_error()).into());
        }
    }
    Ok(())
}

/// The prefix of the files of domain `tag` (in /dev/shm and in its
/// directory).
fn domain_prefix(tag: &str) -> String {
    format!("iox2rlb{tag}_")
}

/// The directory of domain `tag`.
fn domain_root(tag: &str) -> String {
    format!("/tmp/iceoryx2-ringlink-bench-{tag}/")
}

/// iceoryx2's built-in defaults (no configuration file is read, so that
/// a file on the machine cannot change what is measured), in domain
/// `tag`: its own file prefix and root directory, nothing else changed.
fn config(tag: &str) -> Result<Config> {
    if tag.is_empty() || !tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(format!("a domain tag is letters, digits and '-', not {tag:?}").into());
    }
    let mut config = Config::default();
    config.global.prefix = FileName::new(domain_prefix(tag).as_bytes())?;
    config
        .global
        .set_root_path(&Path::new(domain_root(tag).as_bytes())?);
    Ok(config)
}

fn node(opts: &Options, role: &str) -> Result<Node<ipc::Service>> {
    Ok(NodeBuilder::new()
        .name(&NodeName::new(role)?)
        .config(&config(&opts.domain)?)
        // SIGINT and SIGTERM end the process as usual.
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<ipc::Service>()?)
}

type BenchService = iceoryx2::service::port_factory::request_response::PortFactory<
    ipc::Service,
    [u8],
    (),
    [u8],
    (),
>;

/// The request-response service of `opts`, with iceoryx2's default
/// settings.
fn request_response(node: &Node<ipc::Service>, opts: &Options) -> Result<BenchService> {
    let name: ServiceName = format!("{}/rr", opts.service).as_str().try_into()?;
    Ok(node
        .service_builder(&name)
        .request_response::<[u8], [u8]>()
        .open_or_create()?)
}

/// The event service that wakes the `to` side (`server` or `client`).
fn event(
    node: &Node<ipc::Service>,
    opts: &Options,
    to: &str,
) -> Result<iceoryx2::service::port_factory::event::PortFactory<ipc::Service>> {
    let name: ServiceName = format!("{}/wake-{to}", opts.service).as_str().try_into()?;
    Ok(node.service_builder(&name).event().open_or_create()?)
}

/// The event ports of one side in event mode: its listener, and the
/// notifier that wakes the other side.
struct Events {
    listener: Listener<ipc::Service>,
    notifier: Notifier<ipc::Service>,
}

impl Events {
    fn open(node: &Node<ipc::Service>, opts: &Options, me: &str, other: &str) -> Result<Events> {
        let mine = event(node, opts, me)?;
        let theirs = event(node, opts, other)?;
        Ok(Events {
            listener: mine.listener_builder().create()?,
            notifier: theirs.notifier_builder().create()?,
        })
    }
}

fn say_ready() -> Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(b"ready\n")?;
    out.flush()?;
    Ok(())
}

// ---------------------------------------------------------------- server

/// Serves until standard input closes: every request checked where it
/// lies (its length, its stamps against the expected sequence number,
/// one word of every cache line read), then answered with a response of
/// the same size, written in iceoryx2's memory (the pattern copied in,
/// then stamped).
fn serve(opts: &Options) -> Result<()> {
    set_up_process(opts.cpu)?;
    let node = node(opts, "server")?;
    let service = request_response(&node, opts)?;
    let server: Server<ipc::Service, [u8], (), [u8], ()> = service
        .server_builder()
        .initial_max_slice_len(opts.size)
        .create()?;
    let events = match opts.wait {
        Wait::Busy => None,
        Wait::Event => Some(Events::open(&node, opts, "server", "client")?),
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("stdin-watch".into())
            .spawn(move || {
                // ipc-bench never writes: the read ends when it closes
                // the pipe (or dies).
                let mut sink = Vec::new();
                let _ = io::stdin().lock().read_to_end(&mut sink);
                stop.store(true, Ordering::Relaxed);
            })?;
    }
    let response = pattern(opts.size);
    let mut seq = 0u64;
    let mut acc = 0u64;
    say_ready()?;
    while !stop.load(Ordering::Relaxed) {
        let mut handled = false;
        while let Some(request) = server.receive()? {
            acc ^= check(request.payload(), opts.size, seq)
                .map_err(|e| format!("request {seq}: {e}"))?;
            let mut answer = request
                .loan_slice_uninit(opts.size)?
                .write_from_slice(&response);
            stamp(answer.payload_mut(), seq);
            answer.send()?;
            // Done with the request: its client sees it completed.
            drop(request);
            if let Some(ev) = &events {
                ev.notifier.notify()?;
            }
            seq += 1;
            handled = true;
        }
        if !handled {
            match &events {
                None => spin_loop(),
                Some(ev) => {
                    ev.listener.timed_wait(|_| {}, IDLE_WAKE)?;
                }
            }
        }
    }
    black_box(acc);
    Ok(())
}

// ---------------------------------------------------------------- client

/// How long a phase of a run lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Until {
    Time(Instant),
    Count(u64),
}

/// Now on `CLOCK_MONOTONIC`, in nanoseconds (the clock ipc-bench's go
/// signals are on).
fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The `Instant` of the `CLOCK_MONOTONIC` moment `ns`.
fn instant_at(ns: u64) -> Instant {
    let (now, mono) = (Instant::now(), mono_ns());
    now + Duration::from_nanos(ns.saturating_sub(mono))
}

/// One `run` command.
#[derive(Debug, PartialEq, Eq)]
struct RunCommand {
    start_ns: u64,
    warm: Budget,
    measure: Budget,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Budget {
    UntilNs(u64),
    Count(u64),
}

fn parse_budget(s: &str) -> Result<Budget> {
    match s.split_at_checked(1) {
        Some(("t", ns)) => Ok(Budget::UntilNs(ns.parse()?)),
        Some(("n", n)) => Ok(Budget::Count(n.parse()?)),
        _ => Err(format!("not a budget (tNS or nCOUNT): {s:?}").into()),
    }
}

fn parse_run(line: &str) -> Result<RunCommand> {
    match line.split_ascii_whitespace().collect::<Vec<_>>().as_slice() {
        ["run", start, warm, measure] => Ok(RunCommand {
            start_ns: start.parse()?,
            warm: parse_budget(warm)?,
            measure: parse_budget(measure)?,
        }),
        _ => Err(format!("not a command (run START_NS WARM MEASURE): {line:?}").into()),
    }
}

fn until(b: Budget) -> Until {
    match b {
        Budget::UntilNs(ns) => Until::Time(instant_at(ns)),
        Budget::Count(n) => Until::Count(n),
    }
}

/// The client's side of the round trips.
struct Caller {
    client: Client<ipc::Service, [u8], (), [u8], ()>,
    events: Option<Events>,
    size: usize,
    /// The request's payload, stamped before each request.
    req: Vec<u8>,
    next: u64,
}

impl Caller {
    /// One round trip: the stamped request written in iceoryx2's memory
    /// (the pattern copied in), sent; the response checked where it lies
    /// (length, stamps, one word of every cache line).
    #[inline]
    fn round_trip(&mut self) -> Result<u64> {
        let seq = self.next;
        self.next += 1;
        stamp(&mut self.req, seq);
        let request = self
            .client
            .loan_slice_uninit(self.size)?
            .write_from_slice(&self.req);
        let pending = request.send()?;
        if let Some(ev) = &self.events {
            ev.notifier.notify()?;
        }
        let since = Instant::now();
        let mut spins = 0u32;
        loop {
            if let Some(response) = pending.receive()? {
                return check(response.payload(), self.size, seq)
                    .map_err(|e| format!("response {seq}: {e}").into());
            }
            match &self.events {
                None => {
                    spin_loop();
                    spins = spins.wrapping_add(1);
                    if spins.is_multiple_of(4096) && since.elapsed() > STALL {
                        return Err(format!("no response to request {seq} in {STALL:?}").into());
                    }
                }
                Some(ev) => {
                    ev.listener.timed_wait(|_| {}, STALL)?;
                    if since.elapsed() > STALL {
                        return Err(format!("no response to request {seq} in {STALL:?}").into());
                    }
                }
            }
        }
    }

    /// A measurement, timed as ipc-bench's own clients time theirs:
    /// round trips until `warm` ends, then round trips until `measure`
    /// ends, each of these timed (one clock read per round trip).
    fn run(&mut self, cmd: &RunCommand) -> Result<String> {
        let (warm, measure) = (until(cmd.warm), until(cmd.measure));
        let now = mono_ns();
        if now < cmd.start_ns {
            std::thread::sleep(Duration::from_nanos(cmd.start_ns - now));
        }
        let late_ns = mono_ns().saturating_sub(cmd.start_ns);
        let mut hist = Histogram::new();
        if let Budget::UntilNs(end) = cmd.measure {
            if mono_ns() >= end {
                // Started after the measured time: nothing to measure.
                return Ok(report(0, 0, 0, 0, late_ns, &hist));
            }
        }
        let mut acc = 0;
        let mut n = 0u64;
        while !match warm {
            Until::Count(c) => n >= c,
            Until::Time(t) => Instant::now() >= t,
        } {
            acc ^= self.round_trip()?;
            n += 1;
        }
        let warmed = n;
        let start = Instant::now();
        let mut last = start;
        let mut n = 0u64;
        loop {
            acc ^= self.round_trip()?;
            let now = Instant::now();
            hist.record(now.duration_since(last).as_nanos() as u64);
            last = now;
            n += 1;
            let done = match measure {
                Until::Count(c) => n >= c,
                Until::Time(t) => now >= t,
            };
            if done {
                break;
            }
        }
        black_box(acc);
        // Instants back to CLOCK_MONOTONIC.
        let (anchor, anchor_ns) = (Instant::now(), mono_ns());
        let ns_of = |t: Instant| {
            anchor_ns.saturating_sub(anchor.saturating_duration_since(t).as_nanos() as u64)
        };
        Ok(report(
            n,
            warmed + n,
            ns_of(start),
            ns_of(last),
            late_ns,
            &hist,
        ))
    }
}

/// The JSON line of a run (the fields of ipc-bench's `RunReport`).
fn report(
    measured: u64,
    total: u64,
    start_ns: u64,
    end_ns: u64,
    late_ns: u64,
    h: &Histogram,
) -> String {
    let hist: Vec<String> = h
        .to_sparse()
        .iter()
        .map(|(i, c)| format!("[{i},{c}]"))
        .collect();
    format!(
        "{{\"measured\":{measured},\"total\":{total},\"start_ns\":{start_ns},\"end_ns\":{end_ns},\
         \"late_ns\":{late_ns},\"hist\":[{}]}}",
        hist.join(",")
    )
}

/// Opens the service, waits for the server, says `ready`, then runs the
/// commands of standard input until it ends.
fn client(opts: &Options) -> Result<()> {
    set_up_process(opts.cpu)?;
    let node = node(opts, "client")?;
    let service = request_response(&node, opts)?;
    let client = service
        .client_builder()
        .initial_max_slice_len(opts.size)
        .create()?;
    let events = match opts.wait {
        Wait::Busy => None,
        Wait::Event => Some(Events::open(&node, opts, "client", "server")?),
    };
    let since = Instant::now();
    while service.dynamic_config().number_of_servers() == 0 {
        if since.elapsed() > STALL {
            return Err("no server".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut caller = Caller {
        client,
        events,
        size: opts.size,
        req: pattern(opts.size),
        next: 0,
    };
    say_ready()?;
    let mut out = io::stdout().lock();
    for line in io::stdin().lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let json = caller.run(&parse_run(&line)?)?;
        writeln!(out, "{json}")?;
        out.flush()?;
    }
    Ok(())
}

// --------------------------------------------------------------- cleanup

/// Removes what domain `tag` holds: first, through iceoryx2, the stale
/// resources of its dead nodes (peers that were killed before they could
/// drop their ports and services); then, if none of its nodes is alive,
/// the domain's global management segment (which iceoryx2 keeps for the
/// life of a domain) and its directories, if empty. Reports what is left.
fn cleanup(tag: &str) -> Result<()> {
    let config = config(tag)?;
    let mut dead = Vec::new();
    let mut alive = 0;
    let root = domain_root(tag);
    if std::fs::metadata(&root).is_ok() {
        Node::<ipc::Service>::list(&config, |state| {
            match state {
                NodeState::Dead(view) => dead.push(view),
                NodeState::Alive(_) => alive += 1,
                NodeState::Inaccessible(_) | NodeState::Undefined(_) => alive += 1,
            }
            CallbackProgression::Continue
        })?;
    }
    let (mut cleaned, mut failed) = (0, 0);
    for view in dead {
        match view.blocking_remove_stale_resources(Duration::from_secs(1)) {
            Ok(()) => cleaned += 1,
            Err(e) => {
                eprintln!("ringlink-iceoryx2-peer cleanup: a dead node: {e:?}");
                failed += 1;
            }
        }
    }
    if alive == 0 {
        // SAFETY: no process uses the domain: its name is this run's own,
        // and it has no live node.
        if let Err(e) =
            unsafe { iceoryx2::testing::remove_global_mgmt_segment::<ipc::Service>(&config) }
        {
            eprintln!("ringlink-iceoryx2-peer cleanup: the global management segment: {e:?}");
        }
        let root = std::path::Path::new(&root);
        let node_dir = root.join(config.global.node.directory.as_str());
        let service_dir = root.join(config.global.service.directory.as_str());
        for dir in [node_dir.as_path(), service_dir.as_path(), root] {
            // Only if empty: what is left is reported below.
            let _ = std::fs::remove_dir(dir);
        }
    }
    let mut left: Vec<String> = Vec::new();
    let prefix = domain_prefix(tag);
    for dir in ["/dev/shm", root.as_str()] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let path = e.path();
                if dir != "/dev/shm" || e.file_name().to_string_lossy().starts_with(&prefix) {
                    left.push(format!("{:?}", path.display().to_string()));
                }
            }
        }
    }
    println!(
        "{{\"cleaned\":{cleaned},\"failed\":{failed},\"alive\":{alive},\"left\":[{}]}}",
        left.join(",")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_commands_parse() {
        assert_eq!(
            parse_run("run 5 t10 n300\n").unwrap(),
            RunCommand {
                start_ns: 5,
                warm: Budget::UntilNs(10),
                measure: Budget::Count(300)
            }
        );
        for bad in [
            "",
            "run",
            "run 1 2 3",
            "run 1 t2",
            "go 1 t2 t3",
            "run x t1 t2",
        ] {
            assert!(parse_run(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reports_are_json_of_the_sparse_histogram() {
        let mut h = Histogram::new();
        h.record(3);
        h.record(1000);
        h.record(1000);
        let line = report(3, 5, 10, 20, 1, &h);
        let sparse: Vec<String> = h
            .to_sparse()
            .iter()
            .map(|(i, c)| format!("[{i},{c}]"))
            .collect();
        assert_eq!(
            line,
            format!(
                "{{\"measured\":3,\"total\":5,\"start_ns\":10,\"end_ns\":20,\"late_ns\":1,\
                 \"hist\":[{}]}}",
                sparse.join(",")
            )
        );
        assert!(line.contains("[3,1]"));
    }

    #[test]
    fn options_parse() {
        let args: Vec<String> = [
            "--service",
            "a/b",
            "--domain",
            "7",
            "--wait",
            "event",
            "--size",
            "64",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let o = parse_options(&args).unwrap();
        assert_eq!((o.wait, o.size, o.cpu), (Wait::Event, 64, None));
        assert!(parse_options(&args[..6]).is_err());
    }
}
