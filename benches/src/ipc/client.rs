//! The client processes (`ipc-bench --client CONFIG`): hold connections
//! and run measurements on them as the coordinator's commands
//! ([`control::Command`]) say, one JSON line in, one JSON line out.

use std::io::{self, BufRead};
use std::process::ExitCode;
use std::time::Duration;

use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::Signal;

use super::control::{self, Budget, ClientConfig, Command, Reply, RunReport, RunSpec};
use super::link::AnyLink;
use super::session::{Counts, Session, Until};
use super::{instant_at, mono_ns, Mode};
use crate::hist::Histogram;

/// One connection, the stamp its next request carries, and the number of
/// its next event.
#[derive(Debug)]
struct Slot {
    link: AnyLink,
    next: u64,
    event: u64,
}

/// Entry point of `ipc-bench --client CONFIG` (`CONFIG`: a
/// [`ClientConfig`] in JSON).
pub fn main(config: &str) -> ExitCode {
    let run = || -> io::Result<()> {
        let cfg: ClientConfig = serde_json::from_str(config)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // Die with the coordinator, even if it is killed outright.
        set_pdeathsig(Signal::SIGKILL)?;
        if let Some(cpu) = cfg.cpu {
            crate::cpu::pin(cpu)?;
        }
        serve_commands(io::stdin().lock(), io::stdout().lock())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ipc-bench client (pid {}): {e}", std::process::id());
            ExitCode::FAILURE
        }
    }
}

/// Runs commands from `input` until it ends, answering each on `output`.
///
/// # Errors
///
/// If a command cannot be read or an answer written (a failing command
/// is answered with [`Reply::Failed`], not an error).
pub fn serve_commands(mut input: impl BufRead, mut output: impl io::Write) -> io::Result<()> {
    let mut slots: Vec<Option<Slot>> = Vec::new();
    while let Some(cmd) = control::receive::<Command>(&mut input)? {
        let reply = match cmd {
            Command::Connect {
                slot,
                transport,
                name,
                max_message,
                spin_ns,
                timeout_ms,
            } => {
                if slots.len() <= slot {
                    slots.resize_with(slot + 1, || None);
                }
                let spin = Duration::from_nanos(spin_ns);
                let timeout = Duration::from_millis(timeout_ms);
                match AnyLink::connect(transport, &name, max_message, spin, timeout) {
                    Ok(link) => {
                        slots[slot] = Some(Slot {
                            link,
                            next: 0,
                            event: 0,
                        });
                        Reply::Ok
                    }
                    Err(e) => Reply::Failed(format!("cannot connect: {e}")),
                }
            }
            Command::Run(spec) => match slots.get_mut(spec.slot).and_then(Option::as_mut) {
                Some(slot) => match run(slot, &spec) {
                    Ok(report) => Reply::Done(report),
                    Err(e) => {
                        // The connection's stream is out of step now.
                        slots[spec.slot] = None;
                        Reply::Failed(e.to_string())
                    }
                },
                None => Reply::Failed(format!("no connection {}", spec.slot)),
            },
            Command::Close { slot } => {
                if let Some(s) = slots.get_mut(slot) {
                    *s = None;
                }
                Reply::Ok
            }
        };
        control::send(&mut output, &reply)?;
    }
    Ok(())
}

fn until(b: Budget) -> Until {
    match b {
        Budget::UntilNs(ns) => Until::Time(instant_at(ns)),
        Budget::Count(n) => Until::Count(n),
    }
}

/// Waits for the go signal, then runs one measurement.
fn run(slot: &mut Slot, spec: &RunSpec) -> io::Result<RunReport> {
    let mut session =
        Session::new(spec.size, slot.next, spec.ack_every).with_next_event(slot.event);
    let (warm, measure) = (until(spec.warm), until(spec.measure));
    let now = mono_ns();
    if now < spec.start_ns {
        std::thread::sleep(Duration::from_nanos(spec.start_ns - now));
    }
    let late_ns = mono_ns().saturating_sub(spec.start_ns);
    if let Budget::UntilNs(end) = spec.measure {
        if mono_ns() >= end {
            // Started after the measured time: nothing to measure (the
            // client did not get a CPU in time; more spinning clients than
            // CPUs).
            return Ok(RunReport {
                late_ns,
                ..RunReport::default()
            });
        }
    }
    let mut hist = Histogram::new();
    let result = match (&mut slot.link, spec.mode) {
        (AnyLink::Ring(l), Mode::Rtt) => session.run_rtt(l, warm, measure, Some(&mut hist)),
        (AnyLink::Uds(l), Mode::Rtt) => session.run_rtt(l, warm, measure, Some(&mut hist)),
        (AnyLink::Ring(l), Mode::OneWay) => session.run_oneway(l, warm, measure),
        (AnyLink::Uds(l), Mode::OneWay) => session.run_oneway(l, warm, measure),
        (AnyLink::Async(l), Mode::Rtt) => session.run_rtt(l, warm, measure, Some(&mut hist)),
        (AnyLink::Async(l), Mode::OneWay) => session.run_oneway(l, warm, measure),
        (AnyLink::Typed(l), Mode::Rtt) => session.run_rtt_typed(l, warm, measure, Some(&mut hist)),
        (AnyLink::ZeroCopy(l), Mode::Rtt) => {
            session.run_rtt_zero_copy(l, warm, measure, Some(&mut hist))
        }
        (AnyLink::ZeroCopy(l), Mode::OneWay) => session.run_oneway(l, warm, measure),
        (AnyLink::Ring(l), Mode::Events) => session.run_events(l, warm, measure),
        (AnyLink::Uds(l), Mode::Events) => session.run_events(l, warm, measure),
        (AnyLink::Async(l), Mode::Events) => session.run_events(l, warm, measure),
        (AnyLink::ZeroCopy(l), Mode::Events) => session.run_events(l, warm, measure),
        (AnyLink::Typed(_), Mode::OneWay | Mode::Events) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "shm-typed measures round trips only",
        )),
    };
    slot.next = session.next_stamp();
    slot.event = session.next_event();
    let counts: Counts = result?;
    // Instants back to CLOCK_MONOTONIC: the coordinator compares the
    // windows of all clients.
    let (anchor, anchor_ns) = (std::time::Instant::now(), mono_ns());
    let ns_of = |t: std::time::Instant| {
        anchor_ns.saturating_sub(anchor.saturating_duration_since(t).as_nanos() as u64)
    };
    Ok(RunReport {
        measured: counts.measured,
        total: counts.total,
        start_ns: ns_of(counts.start),
        end_ns: ns_of(counts.end),
        late_ns,
        hist: hist.to_sparse(),
    })
}
