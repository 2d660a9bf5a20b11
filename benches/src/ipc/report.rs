//! The results as a table (standard output, for people) or as JSON lines
//! (for tools).
//!
//! JSON: one object per line, for every transport, mode and size:
//! `transport` (`shm`, `shm-zc`, `shm-typed`, `shm-async`, `shm-nospin`,
//! `socket`, `uds-baseline`, `iceoryx2`, `iceoryx2-event`; `shm-typed`
//! has round trips of 64 B only, the iceoryx2 ones round trips only),
//! `mode`
//! (`rtt`, `oneway` or `events`), `size` (bytes), `clients`, `p50_ns`, `p99_ns`,
//! `p999_ns` and `samples` (round trips; `null` for one-way),
//! `msgs_per_s` (one-way messages, events, or round trips, per second, all
//! clients together), `mb_per_s` (payload, one way, 10^6 bytes per
//! second), `server_cpu_ns_per_msg`, `server_cpu_busy` (server CPU time
//! over wall time), `round_msgs_per_s` (each round's rate), `error`
//! (`null`, or why the transport was skipped; the figures are `null`
//! then). Then the floors, as `transport` `floor-spin` and
//! `floor-eventfd` (mode `rtt`, size 0: over the whole run), `floor-spin`
//! again for each size whose rounds measured round trips (mode `rtt`,
//! that size: the spin ping-pong runs made in that size's rounds, beside
//! the transports), `floor-header` for each size up to 64 bytes whose
//! rounds measured round trips (mode `rtt`: the bare header ping-pong,
//! the payload and a polled word, run in those rounds),
//! `floor-stream` (mode `oneway`, per size) and
//! `memcpy` (mode `copy`, with `mb_per_s` only).

use std::fmt::Write as _;
use std::io::{self, Write};

use serde::Serialize;

use super::coord::{Cell, Latency, Results, Timing, HEADER_FLOOR_MAX, SKIPPED_AFTER_FAILURE};
use super::{Mode, Transport};
use crate::stats::{si, size_label};

/// One JSON line.
#[derive(Debug, Default, Serialize)]
struct JsonRow<'a> {
    transport: &'a str,
    mode: &'a str,
    size: usize,
    clients: usize,
    p50_ns: Option<u64>,
    p99_ns: Option<u64>,
    p999_ns: Option<u64>,
    samples: Option<u64>,
    msgs_per_s: Option<f64>,
    mb_per_s: Option<f64>,
    server_cpu_ns_per_msg: Option<f64>,
    server_cpu_busy: Option<f64>,
    round_msgs_per_s: Option<&'a [f64]>,
    error: Option<&'a str>,
}

impl JsonRow<'_> {
    fn latency(mut self, l: Option<Latency>) -> Self {
        if let Some(l) = l {
            self.p50_ns = Some(l.p50);
            self.p99_ns = Some(l.p99);
            self.p999_ns = Some(l.p999);
            self.samples = Some(l.samples);
        }
        self
    }
}

/// Writes the results as JSON lines.
///
/// # Errors
///
/// Any error of `out`.
pub fn write_json(r: &Results, mut out: impl Write) -> io::Result<()> {
    let clients = r.plan.clients;
    let mut line = |row: &JsonRow<'_>| -> io::Result<()> {
        serde_json::to_writer(&mut out, row).map_err(io::Error::other)?;
        out.write_all(b"\n")
    };
    for c in &r.cells {
        let base = JsonRow {
            transport: c.transport.name(),
            mode: c.mode.name(),
            size: c.size,
            clients,
            ..JsonRow::default()
        };
        let row = match &c.result {
            Ok(f) => JsonRow {
                msgs_per_s: Some(f.msgs_per_s),
                mb_per_s: Some(f.bytes_per_s / 1e6),
                server_cpu_ns_per_msg: f.server_ns_per_msg,
                server_cpu_busy: f.server_busy,
                round_msgs_per_s: Some(&f.round_rates),
                ..base
            }
            .latency(f.latency),
            Err(e) => JsonRow {
                error: Some(e),
                ..base
            },
        };
        line(&row)?;
    }
    if let Some(f) = &r.floors {
        for (name, l) in [("floor-spin", f.spin), ("floor-eventfd", f.wake)] {
            let row = JsonRow {
                transport: name,
                mode: "rtt",
                error: if l.is_none() {
                    f.error.as_deref()
                } else {
                    None
                },
                ..JsonRow::default()
            };
            line(&row.latency(l))?;
        }
        let by_size = [
            ("floor-spin", &f.spin_by_size),
            ("floor-header", &f.header_by_size),
        ];
        for (name, rows) in by_size {
            for &(size, l) in rows {
                let row = JsonRow {
                    transport: name,
                    mode: "rtt",
                    size,
                    ..JsonRow::default()
                };
                line(&row.latency(Some(l)))?;
            }
        }
        for &(size, rate) in &f.memcpy {
            line(&JsonRow {
                transport: "memcpy",
                mode: "copy",
                size,
                mb_per_s: Some(rate / 1e6),
                ..JsonRow::default()
            })?;
        }
        for &(size, rate) in &f.stream {
            line(&JsonRow {
                transport: "floor-stream",
                mode: "oneway",
                size,
                msgs_per_s: Some(rate),
                mb_per_s: Some(rate * size as f64 / 1e6),
                ..JsonRow::default()
            })?;
        }
    }
    out.flush()
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (a > 0.0 && b > 0.0).then(|| a / b)
}

/// Microseconds with three significant digits or more.
fn us3(ns: u64) -> String {
    let v = us(ns);
    if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

fn latency_cell(l: &Latency) -> String {
    format!("{} / {} / {}", us3(l.p50), us3(l.p99), us3(l.p999))
}

/// A CPU time per request: nanoseconds, or microseconds from 10 us.
fn cpu_time(ns: f64) -> String {
    if ns < 10_000.0 {
        format!("{ns:.0} ns")
    } else {
        format!("{:.0} us", ns / 1e3)
    }
}

/// `x` for a ratio, `-` where there is none.
fn times(r: Option<f64>, decimals: usize) -> String {
    r.map_or_else(|| "-".to_string(), |r| format!("{r:.decimals$}x"))
}

/// The table.
pub fn table(r: &Results) -> String {
    let p = &r.plan;
    let mut s = String::new();
    let ts = &p.transports;
    let timing = match p.timing {
        Timing::Time { warm, measure } => format!(
            "{} rounds of {:.2} s per figure, each after a {:.2} s warm-up",
            p.rounds,
            measure.as_secs_f64(),
            warm.as_secs_f64()
        ),
        Timing::Count { warm, count } => format!(
            "{} rounds of {count} per client per figure, each after a warm-up of {warm}",
            p.rounds
        ),
    };
    let ice = ts.iter().any(|t| t.iceoryx2().is_some());
    let _ = writeln!(
        s,
        "ipc-bench: ringlink (ipcs/ipcc) against Unix sockets{}, server and clients in separate \
         processes",
        if ice { " and iceoryx2" } else { "" }
    );
    let _ = writeln!(
        s,
        "  {} client process{} (one connection each per transport); {}; {timing}; spin {} us \
         (shm, socket, server and clients); ringlink rings sized for messages of at least {}; \
         one-way: acknowledgement every {} requests",
        p.clients,
        if p.clients == 1 { "" } else { "es" },
        r.placement,
        p.spin.as_micros(),
        size_label(p.min_message),
        p.ack_every,
    );
    if ice {
        let _ = writeln!(
            s,
            "  iceoryx2 {}: request-response of [u8] slices, built-in configuration, a server \
             and a client process per round, pinned as above; payload written (copied in, \
             stamped) and read (stamps, a word of every cache line) on both sides, as shm-zc \
             does; iceoryx2: both sides busy-poll; iceoryx2-event: both block on event services",
            super::iceoryx2::ICEORYX2_VERSION
        );
    }
    let per_conn = if p.clients > 1 {
        format!("; all round trips of all {} connections", p.clients)
    } else {
        String::new()
    };

    // Round trips.
    if p.modes.contains(&Mode::Rtt) {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "Round-trip latency, us: p50 / p99 / p99.9 (send_recv of a stamped request that \
             the server checks and answers with a stamped response of the same size{per_conn}); \
             ratios: p50 over p50, below 1 where shared memory is faster (x/ice: where \
             ringlink is faster than iceoryx2)"
        );
        let mut head = format!("{:>8} |", "size");
        for t in ts {
            let _ = write!(head, " {:>22} |", t.name());
        }
        // Ringlink against the spin floor measured in the same rounds.
        let by_size = r.floors.as_ref().map_or(&[][..], |f| &f.spin_by_size[..]);
        let headers = r.floors.as_ref().map_or(&[][..], |f| &f.header_by_size[..]);
        let floor_column = ts.contains(&Transport::Shm) && !by_size.is_empty();
        // After the ratio columns, if any.
        let sep = if ratio_pairs(ts, Mode::Rtt).is_empty() {
            ""
        } else {
            " | "
        };
        let floor_head = if floor_column {
            format!("{sep}shm/floor   shm/hdr")
        } else {
            String::new()
        };
        let _ = writeln!(s, "{head} {}{floor_head}", ratio_heads(ts, Mode::Rtt));
        for &size in &p.sizes {
            let mut line = format!("{:>8} |", size_label(size));
            let p50 = |t| {
                lookup(r, t, size, Mode::Rtt)
                    .and_then(|f| f.latency)
                    .map(|l| l.p50 as f64)
            };
            let floor_cell = if floor_column {
                // A floor that moves one line and no data is one for
                // small messages only.
                let floor = by_size
                    .iter()
                    .find(|(s, _)| *s == size && size <= HEADER_FLOOR_MAX)
                    .map(|(_, l)| l.p50 as f64);
                let against = |floor: Option<f64>| {
                    p50(Transport::Shm)
                        .zip(floor)
                        .and_then(|(a, b)| ratio(a, b))
                };
                // The header ping-pong moves what a ring must: the
                // payload and a word to poll.
                let header = headers
                    .iter()
                    .find(|(s, _)| *s == size)
                    .map(|(_, l)| l.p50 as f64);
                format!(
                    "{sep}{:>9} {:>9}",
                    times(against(floor), 2),
                    times(against(header), 2)
                )
            } else {
                String::new()
            };
            for &t in ts {
                let cell = match r.cell(t, size, Mode::Rtt).map(|c| &c.result) {
                    Some(Ok(f)) => f.latency.as_ref().map_or("-".into(), latency_cell),
                    Some(Err(_)) => "skipped".into(),
                    None => "-".into(),
                };
                let _ = write!(line, " {cell:>22} |");
            }
            let _ = writeln!(
                s,
                "{line} {}{floor_cell}",
                ratio_cells(ts, Mode::Rtt, p50, 2)
            );
        }
        if let Some(f) = &r.floors {
            let floor = |l: &Option<Latency>| l.as_ref().map_or("failed".into(), latency_cell);
            let _ = writeln!(
                s,
                "  floors: bare spin ping-pong over shared memory (one cache line each way{}) {}; \
                 bare eventfd sleep/wake ping-pong (no spinning) {}",
                if f.spin_by_size.is_empty() {
                    ""
                } else {
                    "; a run in every round, beside the transports; shm/floor: against the runs \
                     of that size's rounds, for messages of up to 64 bytes"
                },
                floor(&f.spin),
                floor(&f.wake)
            );
            if !f.header_by_size.is_empty() {
                let runs: Vec<String> = f
                    .header_by_size
                    .iter()
                    .map(|(size, l)| format!("{} {}", size_label(*size), latency_cell(l)))
                    .collect();
                let _ = writeln!(
                    s,
                    "  bare header ping-pong (the payload and an 8-byte word stored last and \
                     polled, as a ring moves them: two lines each way at 64 bytes; fixed slots, \
                     no checks; a run in every round of sizes up to 64 bytes, beside the \
                     transports; shm/hdr: against it) {}",
                    runs.join("; ")
                );
            }
        }
    }

    // One way.
    if p.modes.contains(&Mode::OneWay) {
        throughput_table(
            &mut s,
            r,
            ts,
            Mode::OneWay,
            "One-way throughput, messages/s (MB/s), all clients together, median of the rounds \
             (every message stamped by the client, checked by the server); ratios: messages/s \
             over messages/s, above 1 where shared memory is faster; bare stream: the \
             cross-core floor (fixed slots, two counters, no checks, no wake-ups), shm/stream \
             its share reached; memcpy: one core, both buffers in cache (information: a \
             payload that crosses cores cannot reach it)",
        );
    }

    // Events.
    if p.modes.contains(&Mode::Events) {
        throughput_table(
            &mut s,
            r,
            ts,
            Mode::Events,
            "Event throughput, server to client, events/s (MB/s), all clients together, median \
             of the rounds (bursts of about 16 KiB of events that each client asks for, two \
             ahead; every event stamped by the server, checked by the client); ratios: events/s \
             over events/s, above 1 where shared memory is faster",
        );
    }

    // Server cost.
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Server: requests/s handled (rtt: round trips/s; events: events/s sent), CPU time \
         per request (events: per event), and CPU use (% of one CPU); from /proc/PID/stat, in 10 ms ticks, warm-up and a spinning \
         server's polling included; - where under 50 ms of CPU or 300 ms of runs were \
         counted (too few ticks)"
    );
    let mut head = format!("{:>8} {:>6} |", "size", "mode");
    for t in ts {
        let _ = write!(head, " {:>24} |", t.name());
    }
    let _ = writeln!(s, "{head}");
    for &size in &p.sizes {
        for &mode in &p.modes {
            let mut line = format!("{:>8} {:>6} |", size_label(size), mode.name());
            for &t in ts {
                let cell = match r.cell(t, size, mode).map(|c| &c.result) {
                    Some(Ok(f)) => format!(
                        "{}/s {} {}",
                        si(f.msgs_per_s).trim_end(),
                        f.server_ns_per_msg.map_or("-".into(), cpu_time),
                        f.server_busy
                            .map_or("-".into(), |b| format!("{:.0}%", 100.0 * b)),
                    ),
                    Some(Err(_)) => "skipped".into(),
                    None => "-".into(),
                };
                let _ = write!(line, " {cell:>24} |");
            }
            let _ = writeln!(s, "{line}");
        }
    }

    // Notes.
    let mut notes: Vec<String> = Vec::new();
    for c in &r.cells {
        match &c.result {
            Err(e) if e != SKIPPED_AFTER_FAILURE => {
                let note = format!("{} {}: skipped: {e}", c.transport, size_label(c.size));
                if !notes.contains(&note) {
                    notes.push(note);
                }
            }
            _ => {}
        }
    }
    if let Some(Some(e)) = r.floors.as_ref().map(|f| &f.error) {
        notes.push(format!("floors: {e}"));
    }
    notes.extend(r.notes.iter().cloned());
    if r.max_late > std::time::Duration::from_millis(5) {
        notes.push(format!(
            "some clients started up to {:.1} ms after the go signal (more busy processes than \
             CPUs: they waited for one){}",
            r.max_late.as_secs_f64() * 1e3,
            match r.missed_runs {
                (0, _) => String::new(),
                (m, n) => format!(
                    "; {m} of {n} client runs started after the measured time and are not counted"
                ),
            }
        ));
    }
    if !notes.is_empty() {
        let _ = writeln!(s);
        for n in notes {
            let _ = writeln!(s, "note: {n}");
        }
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "done in {:.1} s", r.elapsed.as_secs_f64());
    s
}

/// The table of a throughput mode (`oneway`, `events`) under `title`:
/// messages/s (MB/s) by transport and size, the ratios, and for `oneway`
/// the floors (bare stream, memcpy).
fn throughput_table(s: &mut String, r: &Results, ts: &[Transport], mode: Mode, title: &str) {
    let p = &r.plan;
    let _ = writeln!(s);
    let _ = writeln!(s, "{title}");
    let mut head = format!("{:>8} |", "size");
    for t in ts {
        let _ = write!(head, " {:>20} |", t.name());
    }
    let memcpy_head = if r.floors.is_some() && mode == Mode::OneWay {
        " | bare stream  shm/stream | memcpy GB/s  shm % of memcpy"
    } else {
        ""
    };
    let _ = writeln!(s, "{head} {}{memcpy_head}", ratio_heads(ts, mode));
    for &size in &p.sizes {
        let mut line = format!("{:>8} |", size_label(size));
        let rate = |t| lookup(r, t, size, mode).map(|f| f.msgs_per_s);
        for &t in ts {
            let cell = match r.cell(t, size, mode).map(|c| &c.result) {
                Some(Ok(f)) => {
                    format!(
                        "{} ({:.0})",
                        si(f.msgs_per_s).trim_end(),
                        f.bytes_per_s / 1e6
                    )
                }
                Some(Err(_)) => "skipped".into(),
                None => "-".into(),
            };
            let _ = write!(line, " {cell:>20} |");
        }
        let _ = write!(line, " {}", ratio_cells(ts, mode, rate, 1));
        if let Some(f) = r.floors.as_ref().filter(|_| mode == Mode::OneWay) {
            let stream = f.stream.iter().find(|(sz, _)| *sz == size).map(|m| m.1);
            let shm_rate = lookup(r, Transport::Shm, size, mode).map(|f| f.msgs_per_s);
            match stream {
                Some(st) => {
                    let x = shm_rate
                        .and_then(|m| ratio(m, st))
                        .map_or("-".into(), |x| format!("{x:.2}x"));
                    let _ = write!(line, " | {:>11}  {x:>10}", si(st).trim_end());
                }
                None => {
                    let _ = write!(line, " | {:>11}  {:>10}", "-", "-");
                }
            }
            let copy = f.memcpy.iter().find(|(sz, _)| *sz == size).map(|m| m.1);
            let shm = lookup(r, Transport::Shm, size, mode).map(|f| f.bytes_per_s);
            match copy {
                Some(c) if size >= 64 << 10 => {
                    let pct = shm
                        .and_then(|b| ratio(b, c))
                        .map_or("-".into(), |x| format!("{:.0}%", 100.0 * x));
                    let _ = write!(line, " | {:>11.2}  {pct:>15}", c / 1e9);
                }
                _ => {
                    let _ = write!(line, " | {:>11}  {:>15}", "-", "-");
                }
            }
        }
        let _ = writeln!(s, "{line}");
    }
}

/// The figures of a cell that has some.
fn lookup(r: &Results, t: Transport, size: usize, mode: Mode) -> Option<&super::coord::Figures> {
    r.cell(t, size, mode)
        .and_then(|c: &Cell| c.result.as_ref().ok())
}

/// The ratios shown: each shared-memory transport against each socket
/// one, among those run; for round trips, also typed messages against
/// raw bytes over shared memory (`typed/shm`: the typed layer's cost),
/// and ringlink against iceoryx2: `shm/ice` and `zc/ice` (busy-polling
/// iceoryx2), `nospin/ice-event` (iceoryx2 blocking on events).
fn ratio_pairs(ts: &[Transport], mode: Mode) -> Vec<(Transport, Transport)> {
    let mut pairs = Vec::new();
    let mut ice = Vec::new();
    for (a, b) in [
        (Transport::Shm, Transport::Iceoryx2),
        (Transport::ShmZeroCopy, Transport::Iceoryx2),
        (Transport::ShmNoSpin, Transport::Iceoryx2Event),
    ] {
        if mode == Mode::Rtt && ts.contains(&a) && ts.contains(&b) {
            ice.push((a, b));
        }
    }
    if mode == Mode::Rtt && ts.contains(&Transport::ShmTyped) && ts.contains(&Transport::Shm) {
        pairs.push((Transport::ShmTyped, Transport::Shm));
    }
    if mode != Mode::Events && ts.contains(&Transport::ShmZeroCopy) && ts.contains(&Transport::Shm)
    {
        pairs.push((Transport::ShmZeroCopy, Transport::Shm));
    }
    for a in [Transport::Shm, Transport::ShmAsync, Transport::ShmNoSpin] {
        for b in [Transport::Socket, Transport::UdsBaseline] {
            if ts.contains(&a) && ts.contains(&b) {
                pairs.push((a, b));
            }
        }
    }
    pairs.extend(ice);
    pairs
}

fn short(t: Transport) -> &'static str {
    match t {
        Transport::Shm => "shm",
        Transport::ShmNoSpin => "nospin",
        Transport::Socket => "socket",
        Transport::UdsBaseline => "uds",
        Transport::ShmAsync => "async",
        Transport::ShmTyped => "typed",
        Transport::ShmZeroCopy => "zc",
        Transport::Iceoryx2 => "ice",
        Transport::Iceoryx2Event => "ice-event",
    }
}

/// The heading of a ratio's column, and the column's width.
fn ratio_head(a: Transport, b: Transport) -> (String, usize) {
    let head = format!("{}/{}", short(a), short(b));
    let width = head.len().max(13);
    (head, width)
}

fn ratio_heads(ts: &[Transport], mode: Mode) -> String {
    ratio_pairs(ts, mode)
        .iter()
        .map(|&(a, b)| {
            let (head, width) = ratio_head(a, b);
            format!("{head:>width$}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn ratio_cells(
    ts: &[Transport],
    mode: Mode,
    value: impl Fn(Transport) -> Option<f64>,
    decimals: usize,
) -> String {
    ratio_pairs(ts, mode)
        .iter()
        .map(|&(a, b)| {
            let r = match (value(a), value(b)) {
                (Some(x), Some(y)) => ratio(x, y),
                _ => None,
            };
            let width = ratio_head(a, b).1;
            format!("{:>width$}", times(r, decimals))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ringlink_against_iceoryx2_in_round_trips_only() {
        let ts = [
            Transport::Shm,
            Transport::ShmZeroCopy,
            Transport::ShmNoSpin,
            Transport::Iceoryx2,
            Transport::Iceoryx2Event,
        ];
        let rtt = ratio_pairs(&ts, Mode::Rtt);
        for pair in [
            (Transport::Shm, Transport::Iceoryx2),
            (Transport::ShmZeroCopy, Transport::Iceoryx2),
            (Transport::ShmNoSpin, Transport::Iceoryx2Event),
        ] {
            assert!(rtt.contains(&pair), "{pair:?}");
        }
        assert!(!ratio_pairs(&ts, Mode::OneWay)
            .iter()
            .any(|(_, b)| b.iceoryx2().is_some()));
        // Without the ringlink side, no ratio.
        assert!(ratio_pairs(&[Transport::ShmNoSpin, Transport::Iceoryx2], Mode::Rtt).is_empty());
    }

    #[test]
    fn ratio_columns_line_up_with_their_heads() {
        let ts = [
            Transport::ShmNoSpin,
            Transport::Iceoryx2Event,
            Transport::Shm,
            Transport::Iceoryx2,
        ];
        let heads = ratio_heads(&ts, Mode::Rtt);
        let cells = ratio_cells(&ts, Mode::Rtt, |_| Some(2.0), 2);
        assert_eq!(heads.len(), cells.len(), "{heads:?} / {cells:?}");
        assert!(heads.contains("nospin/ice-event") && heads.contains("shm/ice"));
        assert_eq!(cells.matches("1.00x").count(), 2, "{cells:?}");
    }
}
