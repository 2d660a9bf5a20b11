//! The coordinator: starts one server per transport and the client
//! processes, runs every measurement on all clients at once, reads the
//! servers' CPU time around each, and gathers the figures, together with
//! the floors (bare spin and eventfd ping-pongs between two processes,
//! through [`Peer`]) and the single-core memcpy rate.
//!
//! Measurements are interleaved to make the comparison fair on a noisy
//! machine: for each size, every round runs each transport once, so
//! that all transports see the same moments of the machine; one-way
//! rates are the median of the rounds' rates, latencies come from the
//! round trips of all rounds and all clients. iceoryx2's transports
//! (`--iceoryx2`) take their turn in the same rounds, with processes of
//! their own started for each ([`iceoryx2`]).

use std::io::{self, BufRead, BufReader};
use std::path::Path;
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::control::{
    self, Budget, ClientConfig, Command as ClientCommand, Reply, RunReport, RunSpec, ServerConfig,
};
use super::iceoryx2;
use super::{mono_ns, Mode, Transport};
use crate::driver::{ChildGuard, Peer, PeerOptions};
use crate::hist::Histogram;
use crate::stats::size_label;
use crate::{cpu, memcpy};

/// The reason given for the other modes of a transport and size after
/// a run of one of them failed (the connection is gone).
pub const SKIPPED_AFTER_FAILURE: &str = "skipped after a failed run";

/// How long each measurement lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timing {
    /// Each round of each measurement: a warm-up, then a measured time.
    Time {
        /// Warm-up of every round.
        warm: Duration,
        /// Measured time of every round.
        measure: Duration,
    },
    /// Each round: a warm-up of `warm` messages (or round trips) per
    /// client, then `count` measured ones.
    Count {
        /// Warm-up messages.
        warm: u64,
        /// Measured messages.
        count: u64,
    },
}

/// Whether to pin the processes to CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pinning {
    /// Pin when there are at least two CPUs.
    Auto,
    /// Pin; fail with fewer than two CPUs.
    On,
    /// Let the scheduler place them.
    Off,
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Message sizes.
    pub sizes: Vec<usize>,
    /// Transports, in report order.
    pub transports: Vec<Transport>,
    /// Round trips, one-way, or both.
    pub modes: Vec<Mode>,
    /// Number of client processes (one connection each per transport).
    pub clients: usize,
    /// Rounds per measurement.
    pub rounds: usize,
    /// Length of every round.
    pub timing: Timing,
    /// Spin budget of `shm` and `socket`, server and clients.
    pub spin: Duration,
    /// CPU placement.
    pub pin: Pinning,
    /// One-way: every this many requests asks for an acknowledgement.
    pub ack_every: u64,
    /// ringlink servers' `min_message`.
    pub min_message: usize,
    /// Whether to measure the floors and memcpy.
    pub floors: bool,
    /// Whether to draw a progress bar on standard error (if it is a
    /// terminal).
    pub progress: bool,
}

/// Latency percentiles, nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Number of samples.
    pub samples: u64,
}

impl Latency {
    /// The percentiles of a histogram (`None` if it is empty).
    pub fn of(h: &Histogram) -> Option<Latency> {
        Some(Latency {
            p50: h.percentile(50.0)?,
            p99: h.percentile(99.0)?,
            p999: h.percentile(99.9)?,
            samples: h.len(),
        })
    }
}

/// The figures of one transport, size and mode.
#[derive(Clone, Debug)]
pub struct Figures {
    /// Round trips: latency over all clients' round trips of all rounds.
    pub latency: Option<Latency>,
    /// Messages (one-way) or round trips per second, all clients
    /// together: the median of the rounds.
    pub msgs_per_s: f64,
    /// Payload bytes per second, one way: `msgs_per_s * size`.
    pub bytes_per_s: f64,
    /// Every round's rate, in order.
    pub round_rates: Vec<f64>,
    /// Server CPU time per request handled (warm-up included), in
    /// nanoseconds; `None` if the server's CPU time could not be read or
    /// stayed below one clock tick (very short runs).
    pub server_ns_per_msg: Option<f64>,
    /// Server CPU time over the wall time from the go signals to the
    /// last clients' answers (1.0: one CPU).
    pub server_busy: Option<f64>,
}

/// One transport, size and mode: its figures, or why there are none.
#[derive(Clone, Debug)]
pub struct Cell {
    /// Transport.
    pub transport: Transport,
    /// Message size.
    pub size: usize,
    /// Mode.
    pub mode: Mode,
    /// The figures, or the reason the transport was skipped.
    pub result: Result<Figures, String>,
}

/// The largest message size whose rounds also run the bare header
/// ping-pong ([`Floors::header_by_size`]), and the largest the spin
/// floor (one line each way, no data) is shown as the floor of.
pub const HEADER_FLOOR_MAX: usize = 64;

/// The floors: bare two-process ping-pongs and memcpy.
#[derive(Clone, Debug, Default)]
pub struct Floors {
    /// Shared-memory spin ping-pong (one cache line each way): over every
    /// round of every size, where round trips are measured (one run
    /// beside the transports in each round, so that both see the same
    /// moments of a noisy machine); otherwise once, after them.
    pub spin: Option<Latency>,
    /// The same ping-pong, by message size: the runs made in that size's
    /// rounds, the floor for that size's round trips.
    pub spin_by_size: Vec<(usize, Latency)>,
    /// The bare header ping-pong (`bare.rs`'s two header streams: the
    /// payload, then an 8-byte header word stored last and polled; fixed
    /// slots, no checks, no wake-ups), by message size up to
    /// [`HEADER_FLOOR_MAX`]: what any ring that carries the payload with
    /// a word to poll pays, run in the same rounds as the spin floor.
    pub header_by_size: Vec<(usize, Latency)>,
    /// eventfd sleep/wake ping-pong (no spinning).
    pub wake: Option<Latency>,
    /// Single-core memcpy rate, bytes per second, per size (information:
    /// a payload that must cross cores cannot reach it).
    pub memcpy: Vec<(usize, f64)>,
    /// The bare cross-core shared-memory stream (`bare.rs`: fixed slots,
    /// two counters, no validation, no wake-ups), messages per second,
    /// per size: the one-way floor a ring can approach.
    pub stream: Vec<(usize, f64)>,
    /// Why the ping-pongs are missing, if they failed.
    pub error: Option<String>,
}

/// Everything a run of the bench found.
#[derive(Clone, Debug)]
pub struct Results {
    /// The plan it ran.
    pub plan: Plan,
    /// One per transport, size and mode, in plan order (sizes outermost).
    pub cells: Vec<Cell>,
    /// The floors (`None` if not measured).
    pub floors: Option<Floors>,
    /// Where the processes ran, in words.
    pub placement: String,
    /// Largest lateness of a client's start after the go signal.
    pub max_late: Duration,
    /// Client runs that started after their measured time had passed
    /// (they measured nothing), and all client runs.
    pub missed_runs: (u64, u64),
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// What else the reader should know (the iceoryx2 domain's cleanup).
    pub notes: Vec<String>,
}

impl Results {
    /// The cell of `transport`, `size` and `mode`.
    pub fn cell(&self, transport: Transport, size: usize, mode: Mode) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|c| c.transport == transport && c.size == size && c.mode == mode)
    }
}

/// A running server process.
#[derive(Debug)]
pub struct ServerProc {
    pid: u32,
    // Closing it tells the server to stop; dropped before `child`.
    stdin: Option<ChildStdin>,
    child: ChildGuard,
}

impl ServerProc {
    /// Starts `exe --serve CONFIG` and waits until it listens.
    ///
    /// # Errors
    ///
    /// If the process cannot start, or exits before it is ready (its
    /// error message is on standard error).
    pub fn spawn(exe: &Path, cfg: &ServerConfig) -> io::Result<ServerProc> {
        let json = serde_json::to_string(cfg).map_err(io::Error::other)?;
        let mut child = Command::new(exe)
            .arg("--serve")
            .arg(json)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
        let child = ChildGuard(child);
        let mut line = String::new();
        if let Some(out) = stdout {
            BufReader::new(out).read_line(&mut line)?;
        }
        if line.trim() != "ready" {
            return Err(io::Error::other(format!(
                "the {} server did not start",
                cfg.transport
            )));
        }
        Ok(ServerProc {
            pid: child.0.id(),
            stdin,
            child,
        })
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Stops the server and waits for it.
    ///
    /// # Errors
    ///
    /// If it exits unsuccessfully or has to be killed.
    pub fn stop(mut self) -> io::Result<()> {
        drop(self.stdin.take());
        match self.child.reap(Duration::from_secs(5))? {
            Some(s) if s.success() => Ok(()),
            Some(s) => Err(io::Error::other(format!("server exited with {s}"))),
            None => Err(io::Error::other("server did not exit; killed")),
        }
    }
}

/// A running client process.
#[derive(Debug)]
struct ClientProc {
    // Closing it ends the client; dropped before `child`.
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    child: ChildGuard,
}

impl ClientProc {
    fn spawn(exe: &Path, cfg: &ClientConfig) -> io::Result<ClientProc> {
        let json = serde_json::to_string(cfg).map_err(io::Error::other)?;
        let mut child = Command::new(exe)
            .arg("--client")
            .arg(json)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("no stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout"))?;
        Ok(ClientProc {
            stdin: Some(stdin),
            stdout: BufReader::new(stdout),
            child: ChildGuard(child),
        })
    }

    fn command(&mut self, cmd: &ClientCommand) -> io::Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| io::Error::other("client closed"))?;
        control::send(stdin, cmd)
    }

    fn reply(&mut self) -> io::Result<Reply> {
        control::receive(&mut self.stdout)?.ok_or_else(|| {
            io::Error::other(format!(
                "client process {} exited (its message is above)",
                self.child.0.id()
            ))
        })
    }
}

/// Where every process runs.
#[derive(Clone, Debug)]
struct Placement {
    server: Option<usize>,
    clients: Vec<Option<usize>>,
    floor: Option<(usize, usize)>,
    words: String,
}

fn place(pin: Pinning, clients: usize) -> io::Result<Placement> {
    let cpus = cpu::available()?;
    let pinned = match pin {
        Pinning::Off => false,
        Pinning::Auto => cpus.len() >= 2,
        Pinning::On if cpus.len() >= 2 => true,
        Pinning::On => return Err(io::Error::other("--pin: fewer than two CPUs available")),
    };
    if !pinned {
        return Ok(Placement {
            server: None,
            clients: vec![None; clients],
            floor: None,
            words: "not pinned".into(),
        });
    }
    let others = &cpus[1..];
    let client_cpus: Vec<Option<usize>> = (0..clients)
        .map(|i| Some(others[i % others.len()]))
        .collect();
    let list = |c: &[usize]| c.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
    Ok(Placement {
        server: Some(cpus[0]),
        clients: client_cpus,
        floor: Some((cpus[0], cpus[1])),
        words: format!(
            "servers on CPU {}, clients on CPU {}",
            cpus[0],
            list(&others[..others.len().min(clients)])
        ),
    })
}

/// The sums of one cell over its rounds.
#[derive(Debug, Default)]
struct Tally {
    hist: Histogram,
    rates: Vec<f64>,
    server_cpu: Duration,
    handled: u64,
    wall: Duration,
    cpu_known: bool,
    error: Option<String>,
}

/// The coordinator's processes.
struct Bench<'p> {
    plan: &'p Plan,
    /// Per transport: its server, none for iceoryx2 (whose processes
    /// are started for every round), or why it has none.
    servers: Vec<Result<Option<ServerProc>, String>>,
    clients: Vec<ClientProc>,
    /// iceoryx2's peer, if an iceoryx2 transport is in the plan.
    ice: Option<iceoryx2::Peer>,
    placement: Placement,
    max_late: Duration,
    missed: u64,
    client_runs: u64,
}

impl Bench<'_> {
    /// Sends `cmd` to every client and collects the answers.
    fn broadcast(&mut self, cmd: &ClientCommand) -> io::Result<Vec<Reply>> {
        for c in &mut self.clients {
            c.command(cmd)?;
        }
        self.clients.iter_mut().map(ClientProc::reply).collect()
    }

    /// Connects every client to the server of transport number `slot`.
    /// `Err` with the reason if any client could not connect (those that
    /// did are disconnected again).
    fn connect(&mut self, slot: usize, size: usize) -> io::Result<Result<(), String>> {
        let transport = self.plan.transports[slot];
        match &self.servers[slot] {
            Err(e) => return Ok(Err(e.clone())),
            // iceoryx2: the round's processes connect.
            Ok(None) => return Ok(Ok(())),
            Ok(Some(_)) => {}
        }
        let timeout =
            Duration::from_secs(5).max(Duration::from_millis(20) * self.clients.len() as u32);
        let replies = self.broadcast(&ClientCommand::Connect {
            slot,
            transport,
            name: server_name(transport),
            max_message: size,
            spin_ns: transport.spin(self.plan.spin).as_nanos() as u64,
            timeout_ms: timeout.as_millis() as u64,
        })?;
        let failed: Vec<&String> = replies
            .iter()
            .filter_map(|r| match r {
                Reply::Failed(why) => Some(why),
                _ => None,
            })
            .collect();
        if let Some(first) = failed.first() {
            let why = if self.clients.len() > 1 {
                format!(
                    "{first} ({} of {} clients)",
                    failed.len(),
                    self.clients.len()
                )
            } else {
                first.to_string()
            };
            self.broadcast(&ClientCommand::Close { slot })?;
            return Ok(Err(why));
        }
        Ok(Ok(()))
    }

    /// One round of one measurement on every client at once.
    fn run_once(
        &mut self,
        slot: usize,
        size: usize,
        mode: Mode,
        tally: &mut Tally,
    ) -> io::Result<()> {
        if self.plan.transports[slot].iceoryx2().is_some() {
            self.run_iceoryx2(slot, size, mode, tally);
            return Ok(());
        }
        let server_pid = match &self.servers[slot] {
            Ok(Some(s)) => s.pid(),
            Ok(None) => {
                tally.error = Some("no server".into());
                return Ok(());
            }
            Err(e) => {
                tally.error = Some(e.clone());
                return Ok(());
            }
        };
        // The server is idle between runs: its CPU time from now to the
        // last answer is the run's.
        let cpu0 = cpu::process_time(server_pid).ok();
        let (start_ns, warm, measure) = self.go_signal();
        let spec = RunSpec {
            slot,
            mode,
            size,
            start_ns,
            warm,
            measure,
            ack_every: self.plan.ack_every,
        };
        let replies = self.broadcast(&ClientCommand::Run(spec))?;
        let cpu1 = cpu::process_time(server_pid).ok();
        // From the go signal: the server's busy share while clients ran.
        let wall = Duration::from_nanos(mono_ns().saturating_sub(start_ns));
        let mut reports: Vec<RunReport> = Vec::with_capacity(replies.len());
        for r in replies {
            match r {
                Reply::Done(rep) => reports.push(rep),
                Reply::Failed(why) => {
                    tally.error.get_or_insert(why);
                }
                Reply::Ok => {
                    tally
                        .error
                        .get_or_insert("unexpected answer to a run".into());
                }
            }
        }
        if tally.error.is_some() {
            return Ok(());
        }
        self.count(&reports, (cpu0, cpu1), wall, tally);
        Ok(())
    }

    /// The go signal of a run, a margin from now (time for every client
    /// to get its command), and its warm-up and measured phases.
    fn go_signal(&self) -> (u64, Budget, Budget) {
        let n = self.clients.len() as u64;
        let margin = Duration::from_millis(10) + Duration::from_micros(250) * n as u32;
        let start_ns = mono_ns() + margin.as_nanos() as u64;
        let (warm, measure) = match self.plan.timing {
            Timing::Time { warm, measure } => {
                let w = start_ns + warm.as_nanos() as u64;
                (
                    Budget::UntilNs(w),
                    Budget::UntilNs(w + measure.as_nanos() as u64),
                )
            }
            Timing::Count { warm, count } => (Budget::Count(warm), Budget::Count(count)),
        };
        (start_ns, warm, measure)
    }

    /// One round of an iceoryx2 transport: its server and client
    /// processes started, pinned as ipc-bench's server and first client
    /// are, the run, both ended. Failures go to the tally.
    fn run_iceoryx2(&mut self, slot: usize, size: usize, mode: Mode, tally: &mut Tally) {
        let transport = self.plan.transports[slot];
        if let Err(e) = &self.servers[slot] {
            tally.error = Some(e.clone());
            return;
        }
        let (Some(wait), Some(peer)) = (transport.iceoryx2(), self.ice.as_mut()) else {
            tally.error = Some("the iceoryx2 peer was not built".into());
            return;
        };
        if mode != Mode::Rtt {
            tally.error = Some("the iceoryx2 peer measures round trips only".into());
            return;
        }
        let client_cpu = self.placement.clients.first().copied().flatten();
        let mut round = match peer.start(wait, size, self.placement.server, client_cpu) {
            Ok(r) => r,
            Err(e) => {
                tally.error = Some(e);
                return;
            }
        };
        let server_pid = round.server_pid();
        let cpu0 = cpu::process_time(server_pid).ok();
        let (start_ns, warm, measure) = self.go_signal();
        let report = round.run(start_ns, warm, measure);
        let cpu1 = cpu::process_time(server_pid).ok();
        let wall = Duration::from_nanos(mono_ns().saturating_sub(start_ns));
        let finished = round.finish();
        match report.and_then(|r| finished.map(|()| r)) {
            Ok(report) => self.count(&[report], (cpu0, cpu1), wall, tally),
            Err(e) => tally.error = Some(e),
        }
    }

    /// Adds the clients' reports of one run to `tally`, with the
    /// server's CPU time before and after (`cpu`) and the wall time from
    /// the go signal.
    fn count(
        &mut self,
        reports: &[RunReport],
        cpu: (Option<Duration>, Option<Duration>),
        wall: Duration,
        tally: &mut Tally,
    ) {
        let ran = || reports.iter().filter(|r| r.measured > 0);
        let start = ran().map(|r| r.start_ns).min().unwrap_or(0);
        let end = ran().map(|r| r.end_ns).max().unwrap_or(0);
        let measured: u64 = ran().map(|r| r.measured).sum();
        let span = end.saturating_sub(start).max(1) as f64 / 1e9;
        tally.rates.push(measured as f64 / span);
        self.missed += reports.len() as u64 - ran().count() as u64;
        self.client_runs += reports.len() as u64;
        for r in reports {
            if let Err(e) = tally.hist.merge_sparse(&r.hist) {
                tally.error = Some(e);
            }
            self.max_late = self.max_late.max(Duration::from_nanos(r.late_ns));
        }
        tally.handled += reports.iter().map(|r| r.total).sum::<u64>();
        tally.wall += wall;
        if let (Some(a), Some(b)) = cpu {
            tally.server_cpu += b.saturating_sub(a);
            tally.cpu_known = true;
        }
    }
}

/// The abstract socket name of this run's server of `transport`.
pub fn server_name(transport: Transport) -> String {
    format!("ringlink-ipc-bench-{}-{}", std::process::id(), transport)
}

fn figures(size: usize, mode: Mode, t: Tally) -> Result<Figures, String> {
    if let Some(e) = t.error {
        return Err(e);
    }
    let mut rates = t.rates.clone();
    rates.sort_by(f64::total_cmp);
    let msgs = rates.get(rates.len() / 2).copied().unwrap_or(0.0);
    let cpu_ns = t.server_cpu.as_nanos() as f64;
    let measured_cpu = cpu_measured(&t);
    Ok(Figures {
        latency: if mode == Mode::Rtt {
            Latency::of(&t.hist)
        } else {
            None
        },
        msgs_per_s: msgs,
        bytes_per_s: msgs * size as f64,
        round_rates: t.rates,
        server_ns_per_msg: (measured_cpu && t.handled > 0).then(|| cpu_ns / t.handled as f64),
        server_busy: (measured_cpu && !t.wall.is_zero()).then(|| cpu_ns / t.wall.as_nanos() as f64),
    })
}

/// Least server CPU time for a CPU figure: the kernel counts it in 10 ms
/// ticks, read before and after every round (each reading a tick off at
/// most), so five ticks keep a three-round cell within a few tens of
/// percent, and one tick (a quick run) is no measurement at all (a
/// `--quick` run once showed a server at 1597 % of a CPU).
const MIN_SERVER_CPU: Duration = Duration::from_millis(50);

/// Least wall time of a cell's runs for a CPU figure: as above, for the
/// share of a CPU.
const MIN_CPU_WALL: Duration = Duration::from_millis(300);

/// Whether a cell's server CPU time is enough of a measurement to show.
fn cpu_measured(t: &Tally) -> bool {
    t.cpu_known && t.server_cpu >= MIN_SERVER_CPU && t.wall >= MIN_CPU_WALL
}

/// Runs the whole plan; `exe` is the `ipc-bench` binary, started again
/// as servers, clients and the floors' peer.
///
/// # Errors
///
/// If a process cannot be started or the coordinator loses contact with
/// a client. A transport that fails (its server does not start, its
/// clients cannot connect, a run fails) is not an error: its cells carry
/// the reason.
pub fn run(plan: &Plan, exe: &Path) -> io::Result<Results> {
    let started = Instant::now();
    let mut notes = Vec::new();
    // Built before anything starts, cargo's progress on standard error.
    let ice = if plan.transports.iter().any(|t| t.iceoryx2().is_some()) {
        let peer = iceoryx2::build().map_err(io::Error::other)?;
        for (domain, found) in iceoryx2::clean_stale_domains(&peer) {
            notes.push(match found {
                Ok(c) if c.complete() => format!(
                    "iceoryx2: removed the domain of an earlier run that did not end (pid \
                     {domain}; {} node(s) of killed peers)",
                    c.cleaned
                ),
                Ok(c) => format!("iceoryx2: the domain of an earlier run (pid {domain}): {c:?}"),
                Err(e) => format!("iceoryx2: the domain of an earlier run (pid {domain}): {e}"),
            });
        }
        Some(iceoryx2::Peer::new(peer))
    } else {
        None
    };
    // Two pipes per client process.
    super::server::raise_fd_limit()?;
    let placement = place(plan.pin, plan.clients)?;
    let largest = plan.sizes.iter().copied().max().unwrap_or(1);

    let steps = plan.sizes.len() * plan.rounds * plan.transports.len() * plan.modes.len();
    let bar = if plan.progress {
        ProgressBar::with_draw_target(Some(steps as u64), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len} {msg}")
            .map_err(io::Error::other)?
            .progress_chars("=> "),
    );
    bar.set_message("starting servers and clients");

    let servers = plan
        .transports
        .iter()
        .map(|&transport| {
            if transport.iceoryx2().is_some() {
                return if plan.clients == 1 {
                    Ok(None)
                } else {
                    Err("the iceoryx2 peer runs one client (--clients 1)".into())
                };
            }
            let cfg = ServerConfig {
                transport,
                name: server_name(transport),
                spin_ns: transport.spin(plan.spin).as_nanos() as u64,
                max_message: largest,
                min_message: plan.min_message,
                clients: plan.clients,
                cpu: placement.server,
            };
            ServerProc::spawn(exe, &cfg)
                .map(Some)
                .map_err(|e| e.to_string())
        })
        .collect();
    let mut clients = Vec::with_capacity(plan.clients);
    for cpu in &placement.clients {
        clients.push(ClientProc::spawn(exe, &ClientConfig { cpu: *cpu })?);
    }
    let mut bench = Bench {
        plan,
        servers,
        clients,
        ice,
        placement: placement.clone(),
        max_late: Duration::ZERO,
        missed: 0,
        client_runs: 0,
    };

    let floor_worker = plan
        .floors
        .then(|| FloorWorker::start(plan, exe, placement.floor));
    let rtt_floors = plan.modes.contains(&Mode::Rtt);
    let mut spin_all = Histogram::new();
    let mut spin_by_size = Vec::new();
    let mut header_by_size = Vec::new();
    let mut spin_error: Option<String> = None;

    let mut cells = Vec::new();
    for &size in &plan.sizes {
        let mut spin_here = Histogram::new();
        let mut header_here = Histogram::new();
        let mut tallies: Vec<Vec<Tally>> = plan
            .transports
            .iter()
            .map(|_| plan.modes.iter().map(|_| Tally::default()).collect())
            .collect();
        let mut live = vec![false; plan.transports.len()];
        for (slot, &transport) in plan.transports.iter().enumerate() {
            if !plan.modes.iter().any(|&m| transport.measures(size, m)) {
                continue;
            }
            bar.set_message(format!("{transport} {}: connecting", size_label(size)));
            match bench.connect(slot, size)? {
                Ok(()) => live[slot] = true,
                Err(why) => {
                    for t in &mut tallies[slot] {
                        t.error = Some(why.clone());
                    }
                }
            }
        }
        for round in 0..plan.rounds {
            for (slot, &transport) in plan.transports.iter().enumerate() {
                for (m, &mode) in plan.modes.iter().enumerate() {
                    bar.set_message(format!(
                        "{transport} {} {mode} round {}/{}",
                        size_label(size),
                        round + 1,
                        plan.rounds
                    ));
                    if live[slot] && transport.measures(size, mode) {
                        bench.run_once(slot, size, mode, &mut tallies[slot][m])?;
                        if tallies[slot][m].error.is_some() {
                            // A failed run leaves the connection unusable.
                            live[slot] = false;
                            for t in &mut tallies[slot] {
                                if t.error.is_none() {
                                    t.error = Some(SKIPPED_AFTER_FAILURE.into());
                                }
                            }
                        }
                    }
                    bar.inc(1);
                }
            }
            // The spin floor beside the transports, in every round.
            if let (Some(w), true, None) = (&floor_worker, rtt_floors, &spin_error) {
                bar.set_message(format!(
                    "floor {} round {}/{}",
                    size_label(size),
                    round + 1,
                    plan.rounds
                ));
                match w.round(size) {
                    Ok(samples) => {
                        for ns in samples.spin {
                            spin_all.record(ns);
                            spin_here.record(ns);
                        }
                        for ns in samples.header {
                            header_here.record(ns);
                        }
                    }
                    Err(e) => spin_error = Some(e.to_string()),
                }
            }
        }
        if let Some(l) = Latency::of(&spin_here) {
            spin_by_size.push((size, l));
        }
        if let Some(l) = Latency::of(&header_here) {
            header_by_size.push((size, l));
        }
        for (slot, &transport) in plan.transports.iter().enumerate() {
            if matches!(bench.servers[slot], Ok(Some(_))) {
                bench.broadcast(&ClientCommand::Close { slot })?;
            }
            for (m, &mode) in plan.modes.iter().enumerate() {
                if !transport.measures(size, mode) {
                    continue; // no cell: the table shows "-"
                }
                let t = std::mem::take(&mut tallies[slot][m]);
                cells.push(Cell {
                    transport,
                    size,
                    mode,
                    result: figures(size, mode, t),
                });
            }
        }
    }

    let floors = floor_worker.map(|w| {
        bar.set_message("floors: eventfd ping-pong, bare stream, memcpy");
        let measured = Latency::of(&spin_all);
        let mut floors = w.finish(measured.is_none() && spin_error.is_none());
        if measured.is_some() {
            floors.spin = measured;
            floors.spin_by_size = spin_by_size;
            floors.header_by_size = header_by_size;
        }
        if let Some(e) = spin_error {
            floors.error.get_or_insert(e);
        }
        floors
    });
    bar.finish_and_clear();

    // Clients first (each exits when its input closes), then servers.
    let Bench {
        servers,
        clients,
        ice,
        max_late,
        missed,
        client_runs,
        ..
    } = bench;
    let mut clients = clients;
    for c in &mut clients {
        drop(c.stdin.take()); // all at once: they exit in parallel
    }
    drop(clients);
    for s in servers.into_iter().flatten().flatten() {
        s.stop()?;
    }
    if let Some(peer) = ice {
        // Every peer has exited: the domain goes, with whatever a killed
        // one left.
        match peer.cleanup() {
            Ok(c) if c.complete() && c.cleaned == 0 => {}
            Ok(c) if c.complete() => notes.push(format!(
                "iceoryx2: removed what {} killed peer node(s) left",
                c.cleaned
            )),
            Ok(c) => notes.push(format!(
                "iceoryx2: its domain was not removed entirely: {c:?}"
            )),
            Err(e) => notes.push(format!("iceoryx2: cleanup: {e}")),
        }
    }
    Ok(Results {
        plan: plan.clone(),
        cells,
        floors,
        placement: placement.words,
        max_late,
        missed_runs: (missed, client_runs),
        elapsed: started.elapsed(),
        notes,
    })
}

/// What the floors' thread is asked for.
enum FloorAsk {
    /// One round's ping-pongs for messages of this size: their samples,
    /// nanoseconds each.
    Round(usize),
    /// The rest of the floors (the spin ping-pong too, with `true`),
    /// then the thread ends.
    Rest(bool),
}

/// One round's ping-pong samples, nanoseconds each.
struct RoundSamples {
    /// The spin floor's.
    spin: Vec<u64>,
    /// The header ping-pong's (none above [`HEADER_FLOOR_MAX`]).
    header: Vec<u64>,
}

/// What the floors' thread answers.
enum FloorAnswer {
    Round(io::Result<RoundSamples>),
    Rest(Floors),
}

/// The floors' thread, pinned like a server (its peer process like a
/// client), kept for the whole run so that the spin ping-pong can run in
/// every round beside the transports.
struct FloorWorker {
    ask: mpsc::Sender<FloorAsk>,
    answers: mpsc::Receiver<FloorAnswer>,
    thread: std::thread::JoinHandle<()>,
}

impl FloorWorker {
    fn start(plan: &Plan, exe: &Path, cpus: Option<(usize, usize)>) -> FloorWorker {
        let (ask, asked) = mpsc::channel();
        let (answer, answers) = mpsc::channel();
        let (plan, exe) = (plan.clone(), exe.to_path_buf());
        let thread = std::thread::spawn(move || floor_thread(&plan, &exe, cpus, &asked, &answer));
        FloorWorker {
            ask,
            answers,
            thread,
        }
    }

    /// One round's ping-pongs for messages of `size` bytes.
    fn round(&self, size: usize) -> io::Result<RoundSamples> {
        let gone = || io::Error::other("the floors' thread ended");
        self.ask.send(FloorAsk::Round(size)).map_err(|_| gone())?;
        match self.answers.recv() {
            Ok(FloorAnswer::Round(r)) => r,
            _ => Err(gone()),
        }
    }

    /// The rest of the floors (`spin`: the spin ping-pong too).
    fn finish(self, spin: bool) -> Floors {
        let answer = self
            .ask
            .send(FloorAsk::Rest(spin))
            .ok()
            .and_then(|()| self.answers.recv().ok());
        let panicked = self.thread.join().is_err();
        match answer {
            Some(FloorAnswer::Rest(f)) => f,
            _ => Floors {
                error: Some(if panicked {
                    "the floors' thread panicked".into()
                } else {
                    "the floors' thread ended".into()
                }),
                ..Floors::default()
            },
        }
    }
}

fn floor_thread(
    plan: &Plan,
    exe: &Path,
    cpus: Option<(usize, usize)>,
    asked: &mpsc::Receiver<FloorAsk>,
    answer: &mpsc::Sender<FloorAnswer>,
) {
    let mut peer = (|| {
        if let Some((mine, _)) = cpus {
            cpu::pin(mine)?;
        }
        Peer::spawn(
            exe,
            &PeerOptions {
                capacity: ringlink_ringbuf::MIN_CAPACITY,
                cpu: cpus.map(|c| c.1),
            },
        )
    })();
    // Round trips per round, estimated at the first round's warm-up.
    let mut per_round = None;
    while let Ok(ask) = asked.recv() {
        match ask {
            FloorAsk::Round(size) => {
                let r = match &mut peer {
                    Ok(peer) => floor_round(plan, peer, size, &mut per_round),
                    Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                };
                if answer.send(FloorAnswer::Round(r)).is_err() {
                    return;
                }
            }
            FloorAsk::Rest(spin) => {
                let mut floors = Floors::default();
                match peer {
                    Ok(mut peer) => {
                        let r = ping_pongs(plan, &mut peer, spin, &mut floors)
                            .and_then(|()| peer.close());
                        if let Err(e) = r {
                            floors.error = Some(e.to_string());
                        }
                    }
                    Err(e) => floors.error = Some(e.to_string()),
                }
                let time = match plan.timing {
                    Timing::Time { measure, .. } => measure,
                    Timing::Count { .. } => Duration::from_millis(20),
                };
                floors.memcpy = plan
                    .sizes
                    .iter()
                    .map(|&size| (size, memcpy::rate(size, time)))
                    .collect();
                let _ = answer.send(FloorAnswer::Rest(floors));
                return;
            }
        }
    }
}

/// One round's spin ping-pongs: as many round trips as a transport's
/// round measures (by time: estimated once, after a warm-up as long as
/// the transports'), with each one's nanoseconds.
fn spin_round(plan: &Plan, peer: &mut Peer, per_round: &mut Option<u64>) -> io::Result<Vec<u64>> {
    let n = match (*per_round, plan.timing) {
        (Some(n), _) => n,
        (None, Timing::Count { warm, count }) => {
            peer.floor_round_trips(warm.max(1), None)?;
            count
        }
        (None, Timing::Time { warm, measure }) => {
            let mut n = 64;
            let mut took = peer.floor_round_trips(n, None)?;
            while took < warm {
                n *= 2;
                took = peer.floor_round_trips(n, None)?;
            }
            let per = took.as_secs_f64() / n as f64;
            ((measure.as_secs_f64() / per.max(1e-9)) as u64).clamp(1, 2_000_000)
        }
    };
    *per_round = Some(n);
    let mut samples = Vec::with_capacity(n as usize);
    peer.floor_round_trips(n, Some(&mut samples))?;
    Ok(samples)
}

/// One round's floors for messages of `size` bytes: the spin ping-pong
/// ([`spin_round`]), then, up to [`HEADER_FLOOR_MAX`], as many round
/// trips of the bare header ping-pong, after a warm-up of a tenth of
/// them (its streams start from their beginning each time).
fn floor_round(
    plan: &Plan,
    peer: &mut Peer,
    size: usize,
    per_round: &mut Option<u64>,
) -> io::Result<RoundSamples> {
    let spin = spin_round(plan, peer, per_round)?;
    let mut header = Vec::new();
    if size <= HEADER_FLOOR_MAX {
        let n = spin.len() as u64;
        peer.headed_round_trips(size, (n / 10).max(1), None)?;
        header.reserve(spin.len());
        peer.headed_round_trips(size, n, Some(&mut header))?;
    }
    Ok(RoundSamples { spin, header })
}

/// The floors measured once, after the rounds: the eventfd ping-pong
/// (the spin one too, with `spin`: when no round measured it) and the
/// bare stream per size.
fn ping_pongs(plan: &Plan, peer: &mut Peer, spin: bool, floors: &mut Floors) -> io::Result<()> {
    let mut measure = |wake: bool| -> io::Result<Option<Latency>> {
        let mut go = |n: u64, samples: Option<&mut Vec<u64>>| {
            if wake {
                peer.wake_round_trips(n, samples)
            } else {
                peer.floor_round_trips(n, samples)
            }
        };
        let count = match plan.timing {
            Timing::Count { warm, count } => {
                go(warm.max(1), None)?;
                count * plan.rounds as u64
            }
            Timing::Time { warm, measure } => {
                // Warm up for the warm-up time, and estimate the rate.
                let mut n = 64;
                let mut took = go(n, None)?;
                while took < warm {
                    n *= 2;
                    took = go(n, None)?;
                }
                let per = took.as_secs_f64() / n as f64;
                let total = measure.as_secs_f64() * plan.rounds as f64;
                ((total / per.max(1e-9)) as u64).clamp(1, 5_000_000)
            }
        };
        let mut samples = Vec::with_capacity(count as usize);
        go(count, Some(&mut samples))?;
        let mut hist = Histogram::new();
        for s in samples {
            hist.record(s);
        }
        Ok(Latency::of(&hist))
    };
    if spin {
        floors.spin = measure(false)?;
    }
    floors.wake = measure(true)?;
    // The bare stream, peer to driver, one rate per size, over the same
    // measured time as a transport's one-way figure.
    let time = match plan.timing {
        Timing::Time { measure, .. } => measure.mul_f64(plan.rounds as f64),
        Timing::Count { .. } => Duration::from_millis(20),
    };
    for &size in &plan.sizes {
        if size > crate::bare::STREAM_BYTES / 2 {
            continue;
        }
        let mut n = 256u64;
        let mut took = peer.bare_one_way(size, n)?;
        while took < time / 8 && n < 1 << 30 {
            n *= 2;
            took = peer.bare_one_way(size, n)?;
        }
        let n = ((n as f64) * time.as_secs_f64() / took.as_secs_f64().max(1e-9)) as u64;
        let took = peer.bare_one_way(size, n.max(1))?;
        floors
            .stream
            .push((size, n.max(1) as f64 / took.as_secs_f64().max(1e-9)));
    }
    Ok(())
}

#[cfg(test)]
mod cpu_tests {
    use super::*;

    fn tally(cpu_ms: u64, wall_ms: u64) -> Tally {
        Tally {
            server_cpu: Duration::from_millis(cpu_ms),
            wall: Duration::from_millis(wall_ms),
            handled: 1000,
            cpu_known: true,
            ..Tally::default()
        }
    }

    #[test]
    fn a_few_ticks_are_no_cpu_figure() {
        // A quick run: one tick of CPU in 6 ms of wall time.
        let f = figures(64, Mode::OneWay, tally(10, 6)).unwrap();
        assert_eq!((f.server_ns_per_msg, f.server_busy), (None, None));
        // Enough wall time, too little CPU for a figure per message.
        let f = figures(64, Mode::OneWay, tally(20, 600)).unwrap();
        assert_eq!(f.server_busy, None);
        // A measurement.
        let f = figures(64, Mode::OneWay, tally(300, 600)).unwrap();
        assert_eq!(f.server_ns_per_msg, Some(300_000.0));
        assert_eq!(f.server_busy, Some(0.5));
        // Not read at all.
        let mut t = tally(300, 600);
        t.cpu_known = false;
        assert_eq!(figures(64, Mode::OneWay, t).unwrap().server_busy, None);
    }
}
