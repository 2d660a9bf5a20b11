//! What the coordinator tells its servers and clients, and what the
//! clients answer: one JSON document per line, on the child's standard
//! input and output. Nothing here carries benchmark data.

use std::io::{self, BufRead, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Mode, Transport};

/// How a server process is set up (`ipc-bench --serve CONFIG`). It prints
/// one line, `ready`, once it listens, and serves until its standard
/// input closes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerConfig {
    /// What it serves.
    pub transport: Transport,
    /// Abstract socket name it listens on.
    pub name: String,
    /// Spin budget of the ringlink service loop, in nanoseconds.
    pub spin_ns: u64,
    /// Largest message payload.
    pub max_message: usize,
    /// ringlink's `min_message` (rings are sized for at least this).
    pub min_message: usize,
    /// Number of client processes that will connect (sizes the backlog
    /// and the connection limits).
    pub clients: usize,
    /// CPU to pin the server to.
    pub cpu: Option<usize>,
}

/// How a client process is set up (`ipc-bench --client CONFIG`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientConfig {
    /// CPU to pin the client to.
    pub cpu: Option<usize>,
}

/// How long a phase of a run lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Budget {
    /// Until this moment on `CLOCK_MONOTONIC` (nanoseconds).
    UntilNs(u64),
    /// This many messages (one-way) or round trips.
    Count(u64),
}

/// One measurement on one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// The connection (see [`Command::Connect`]).
    pub slot: usize,
    /// Round trips or one-way.
    pub mode: Mode,
    /// Payload bytes of every request (and echoed response).
    pub size: usize,
    /// When to start, on `CLOCK_MONOTONIC` (nanoseconds): the go signal
    /// shared by every client.
    pub start_ns: u64,
    /// Warm-up, not measured.
    pub warm: Budget,
    /// The measured phase.
    pub measure: Budget,
    /// One-way: every this many requests asks for an acknowledgement.
    pub ack_every: u64,
}

/// A command to a client process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Open connection `slot` to the server of `transport` at `name`.
    Connect {
        /// Index the later commands use for it.
        slot: usize,
        /// Which kind of server.
        transport: Transport,
        /// Its abstract socket name.
        name: String,
        /// Largest message the connection must carry.
        max_message: usize,
        /// Spin budget of the client's waits, in nanoseconds (ringlink).
        spin_ns: u64,
        /// Time allowed for the connection, in milliseconds.
        timeout_ms: u64,
    },
    /// Run a measurement; the answer is [`Reply::Done`].
    Run(RunSpec),
    /// Close connection `slot`.
    Close {
        /// The connection.
        slot: usize,
    },
}

/// What a client measured in one run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunReport {
    /// Messages (one-way) or round trips of the measured phase; 0 if the
    /// client started after the measured time had passed.
    pub measured: u64,
    /// Requests sent in the whole run, warm-up included: what the server
    /// handled.
    pub total: u64,
    /// Start and end of the measured phase, on `CLOCK_MONOTONIC`.
    pub start_ns: u64,
    /// See `start_ns`.
    pub end_ns: u64,
    /// How late after the go signal the client started (it got the
    /// command late).
    pub late_ns: u64,
    /// Round trips: the latency histogram of the measured phase, sparse
    /// (see [`Histogram::to_sparse`](crate::hist::Histogram::to_sparse)).
    pub hist: Vec<(u32, u64)>,
}

/// A client's answer to a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Connected or closed.
    Ok,
    /// A run's figures.
    Done(RunReport),
    /// The command failed; why.
    Failed(String),
}

/// Writes `value` as one JSON line and flushes.
///
/// # Errors
///
/// Any error of `w`.
pub fn send<T: Serialize>(mut w: impl Write, value: &T) -> io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line)?;
    w.flush()
}

/// Reads one JSON line; `Ok(None)` at the end of the stream.
///
/// # Errors
///
/// Any error of `r`; `InvalidData` for a line that does not parse.
pub fn receive<T: DeserializeOwned>(mut r: impl BufRead) -> io::Result<Option<T>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    serde_json::from_str(&line)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e}: {line:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_replies_round_trip() {
        let cmd = Command::Run(RunSpec {
            slot: 2,
            mode: Mode::OneWay,
            size: 65536,
            start_ns: 123,
            warm: Budget::Count(10),
            measure: Budget::UntilNs(456),
            ack_every: 64,
        });
        let reply = Reply::Done(RunReport {
            measured: 5,
            total: 7,
            hist: vec![(3, 4)],
            ..RunReport::default()
        });
        let mut buf = Vec::new();
        send(&mut buf, &cmd).unwrap();
        send(&mut buf, &reply).unwrap();
        let mut r = &buf[..];
        assert_eq!(receive::<Command>(&mut r).unwrap(), Some(cmd));
        assert_eq!(receive::<Reply>(&mut r).unwrap(), Some(reply));
        assert_eq!(receive::<Reply>(&mut r).unwrap(), None);
        assert!(receive::<Reply>(&b"{nope\n"[..]).is_err());
    }
}
