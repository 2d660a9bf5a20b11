//! The `ipc-bench` comparison: ringlink's server and client (`ipcs`,
//! `ipcc`) over shared memory and over its socket transport, against a
//! bare Unix-socket server, between separate processes.
//!
//! # Processes
//!
//! `ipc-bench` (the *coordinator*, [`coord`]) starts itself again in
//! three hidden roles:
//!
//! - `ipc-bench --serve CONFIG`: one server per transport ([`server`]):
//!   a ringlink [`Service`](ringlink_ipcs::Service) whose handler checks
//!   every request and stamps every response, or, for `uds-baseline`, a
//!   bare `SOCK_SEQPACKET` epoll server written on `nix` ([`uds`]).
//! - `ipc-bench --client CONFIG`: one process per client connection
//!   ([`client`]), driven by JSON commands on its standard input
//!   ([`control`]): connect, run a measurement, close. All the timing is
//!   taken here.
//! - with `--iceoryx2`, `ringlink-iceoryx2-peer server` and `client`,
//!   one of each per round of an iceoryx2 transport ([`iceoryx2`]): the
//!   peer that measures iceoryx2's request-response, built from the
//!   crate `benches/iceoryx2` outside the workspace.
//! - `ipc-bench --peer`: the peer of `ring-bench`
//!   ([`driver::Peer`](crate::driver::Peer)), for the floors (a bare
//!   shared-memory spin ping-pong and a bare eventfd sleep/wake
//!   ping-pong), kept for the whole run: where round trips are measured,
//!   the spin ping-pong runs in every round beside the transports, so
//!   that `shm/floor` compares figures of the same moments (this
//!   machine's floor moves by a fifth within minutes), and so does, for
//!   messages of up to 64 bytes, the bare header ping-pong (`shm/hdr`:
//!   the payload and a word to poll, what any ring moves); the eventfd
//!   ping-pong and the bare streams run once, after the rounds.
//!
//! # What a measurement is
//!
//! Every client runs the same measurement at the same time: the
//! coordinator sends each a start moment on `CLOCK_MONOTONIC` (one clock
//! for all processes: the go signal), a warm-up and a measured phase
//! (both a time or both a count). The coordinator reads the server's CPU
//! time (`/proc/PID/stat`) before and after, and divides it by the
//! requests the server handled.
//!
//! - **Round trip** (`rtt`): `send_recv` of a request of the size, which
//!   the server checks and answers with a response of the same size that
//!   it stamps; the client checks the response. One clock read per round
//!   trip; every round trip of the measured phase is a sample. Over
//!   `shm-typed` (`--typed`), the round trip is a typed call
//!   (`ringlink::typed`) of a 64-byte struct ([`typed::Sample`]) that the
//!   server decodes, checks and answers with another it encodes, the
//!   client decoding and checking that: 64 B round trips only.
//! - **One way** (`oneway`): the client sends requests as fast as it can
//!   (waiting only when its request ring or socket is full); the server
//!   checks each and answers nothing, except every `ack_every`-th request
//!   and the last of each phase, which ask for an 8-byte
//!   acknowledgement. At most two acknowledgements are outstanding, so
//!   the pipe never drains while the client sends. The measured phase
//!   starts when every warm-up request has been acknowledged and ends
//!   when its last request has been: every message counted was sent,
//!   received and checked inside the measured time.
//! - **Events** (`events`, opt-in: `--modes rtt,oneway,events`): the
//!   other direction, a server pushing events to its client (a daemon
//!   broadcasting state changes). The client asks for bursts of events
//!   of the size ([`burst_len`] of them, about 16 KiB, with a one-way
//!   [`Kind::Burst`] request) and keeps two bursts asked for, asking for
//!   the next as soon as it has read one, so the server always has a
//!   burst to send while the client reads. The ringlink server sends
//!   each event with `Connection::send_event` (an event queue behind the
//!   ring, refusing rather than dropping, holds what does not fit), the
//!   baseline server with one blocking `sendmsg`; the client reads each
//!   (`Client::event_recv`, `AsyncClient::event_recv`, `recvmsg`) and
//!   checks its stamp, a per-connection event number. The measured phase
//!   starts when the warm-up's last burst has been read and ends when
//!   its own last one has.
//!
//! - **iceoryx2** (`--iceoryx2`, round trips only): a request of the
//!   size over iceoryx2's request-response (`[u8]` slices), written in
//!   iceoryx2's memory by the client and checked where it lies by the
//!   server, which answers with a response of the same size written in
//!   its memory, which the client checks where it lies: what `shm-zc`
//!   does, with the same pattern, stamps and checks
//!   ([`payload`](crate::payload)). Transport `iceoryx2`: both sides
//!   poll in a spin loop; `iceoryx2-event`: both block on iceoryx2 event
//!   services between messages. Timed as the clients above time theirs.
//!
//! Message ids ([`message_id`]) carry the kind of request and its size,
//! so that the server checks each payload's length; payloads carry a
//! per-connection sequence number at both ends ([`payload::stamp`](crate::payload::stamp)),
//! checked on every message by both sides.

pub mod client;
pub mod control;
pub mod coord;
pub mod iceoryx2;
pub mod link;
pub mod plot;
pub mod report;
pub mod server;
pub mod session;
pub mod typed;
pub mod uds;

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The protocol id of the bench's ringlink services.
pub const PROTOCOL: &str = "ringlink-ipc-bench";

/// Largest message size the bench accepts (the size travels in the low
/// 24 bits of the message id).
pub const MAX_SIZE: usize = (1 << 24) - 1;

/// Size of the acknowledgement of a one-way run: the stamp of the
/// request it acknowledges.
pub const ACK_LEN: usize = 8;

/// The transports compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Transport {
    /// ringlink over shared memory, default spin budget.
    #[serde(rename = "shm")]
    Shm,
    /// ringlink over shared memory, spin budget zero on both sides: every
    /// wait sleeps in the kernel.
    #[serde(rename = "shm-nospin")]
    ShmNoSpin,
    /// ringlink's `Transport::Socket`: the same API over
    /// `SOCK_SEQPACKET`.
    #[serde(rename = "socket")]
    Socket,
    /// A bare `SOCK_SEQPACKET` server and client, no ringlink code.
    #[serde(rename = "uds-baseline")]
    UdsBaseline,
    /// ringlink over shared memory through the tokio client
    /// (`AsyncClient`), each call awaited on a current-thread runtime
    /// (a send tries `try_send` first, as `shm` tries its non-waiting
    /// send first); the server as for `shm` (`--async`).
    #[serde(rename = "shm-async")]
    ShmAsync,
    /// ringlink over shared memory with typed messages
    /// (`ringlink::typed`, postcard): round trips of a 64-byte struct
    /// ([`typed::Sample`]), decoded and checked on both sides; size 64
    /// and round trips only (`--typed`).
    #[serde(rename = "shm-typed")]
    ShmTyped,
    /// ringlink over shared memory, zero-copy (`--zero-copy`): the client
    /// writes each request in the ring (`Client::send_in_place`) and
    /// checks each response where it lies (`recv_in_place`); the server
    /// checks requests in place (as for `shm`) and writes its responses
    /// in the ring (`Connection::respond_in_place`).
    #[serde(rename = "shm-zc")]
    ShmZeroCopy,
    /// iceoryx2's request-response (`--iceoryx2`; [`iceoryx2`]), both
    /// sides busy-polling: the request written in iceoryx2's memory, the
    /// response too, each checked where it lies. Round trips only.
    #[serde(rename = "iceoryx2")]
    Iceoryx2,
    /// As `iceoryx2`, both sides blocking on iceoryx2 event services
    /// (a `Listener`, woken by the other side's `Notifier`) between
    /// messages.
    #[serde(rename = "iceoryx2-event")]
    Iceoryx2Event,
}

impl Transport {
    /// Every transport, in the order of the report.
    pub const ALL: [Transport; 9] = [
        Transport::Shm,
        Transport::ShmZeroCopy,
        Transport::ShmTyped,
        Transport::ShmAsync,
        Transport::ShmNoSpin,
        Transport::Socket,
        Transport::UdsBaseline,
        Transport::Iceoryx2,
        Transport::Iceoryx2Event,
    ];

    /// The name used on the command line, in JSON and in the table.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Shm => "shm",
            Transport::ShmNoSpin => "shm-nospin",
            Transport::Socket => "socket",
            Transport::UdsBaseline => "uds-baseline",
            Transport::ShmAsync => "shm-async",
            Transport::ShmTyped => "shm-typed",
            Transport::ShmZeroCopy => "shm-zc",
            Transport::Iceoryx2 => "iceoryx2",
            Transport::Iceoryx2Event => "iceoryx2-event",
        }
    }

    /// How the sides of an iceoryx2 transport wait; `None` for the
    /// others.
    pub fn iceoryx2(self) -> Option<iceoryx2::Wait> {
        match self {
            Transport::Iceoryx2 => Some(iceoryx2::Wait::Busy),
            Transport::Iceoryx2Event => Some(iceoryx2::Wait::Event),
            _ => None,
        }
    }

    /// Whether this is ringlink over shared memory.
    pub fn is_shm(self) -> bool {
        matches!(
            self,
            Transport::Shm
                | Transport::ShmNoSpin
                | Transport::ShmAsync
                | Transport::ShmTyped
                | Transport::ShmZeroCopy
        )
    }

    /// Whether this transport measures `mode` at `size`: every one does,
    /// but `shm-typed`, whose message is a 64-byte struct, only round
    /// trips of [`typed::TYPED_SIZE`], the iceoryx2 ones only round
    /// trips (their peer has no one-way run), and `shm-zc` no events (its
    /// client would read them as `shm` does: the row would repeat `shm`'s).
    pub fn measures(self, size: usize, mode: Mode) -> bool {
        match self {
            Transport::ShmTyped => size == typed::TYPED_SIZE && mode == Mode::Rtt,
            Transport::Iceoryx2 | Transport::Iceoryx2Event => mode == Mode::Rtt,
            Transport::ShmZeroCopy => mode != Mode::Events,
            _ => true,
        }
    }

    /// The spin budget both sides of this transport use, given the one
    /// asked for (`--spin`): zero for `shm-nospin`, not applicable (zero)
    /// for the bare baseline and for iceoryx2 (its peers busy-poll or
    /// block, by transport).
    pub fn spin(self, asked: Duration) -> Duration {
        match self {
            Transport::Shm
            | Transport::Socket
            | Transport::ShmAsync
            | Transport::ShmTyped
            | Transport::ShmZeroCopy => asked,
            Transport::ShmNoSpin
            | Transport::UdsBaseline
            | Transport::Iceoryx2
            | Transport::Iceoryx2Event => Duration::ZERO,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Transport {
    type Err = String;

    fn from_str(s: &str) -> Result<Transport, String> {
        Transport::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown transport {s:?} (shm, shm-zc, shm-typed, shm-async, shm-nospin, \
                     socket, uds-baseline, iceoryx2, iceoryx2-event)"
                )
            })
    }
}

/// What is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mode {
    /// Round-trip latency (and the rate of round trips).
    #[serde(rename = "rtt")]
    Rtt,
    /// One-way throughput.
    #[serde(rename = "oneway")]
    OneWay,
    /// Event throughput, server to client: bursts of events the client
    /// asks for.
    #[serde(rename = "events")]
    Events,
}

impl Mode {
    /// Every mode, in the order of the report.
    pub const ALL: [Mode; 3] = [Mode::Rtt, Mode::OneWay, Mode::Events];

    /// The name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Rtt => "rtt",
            Mode::OneWay => "oneway",
            Mode::Events => "events",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Mode, String> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown mode {s:?} (rtt, oneway, events)"))
    }
}

/// The kind of a request, in the high bits of its message id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Answer with a stamped response of the same size.
    Echo = 1,
    /// Answer nothing.
    OneWay = 2,
    /// Answer with an [`ACK_LEN`]-byte acknowledgement.
    Ack = 3,
    /// As `Echo`, the response written in place
    /// (`Connection::respond_in_place`).
    EchoInPlace = 4,
    /// Answer nothing, but send [`burst_len`] events of the size the id
    /// carries (the request itself is an [`ACK_LEN`]-byte stamp).
    Burst = 5,
    /// An event of a burst (server to client only).
    Event = 6,
}

/// Bytes of events a burst carries, about: two bursts in flight fill
/// half the smallest rings the bench's servers give (32 KiB; a tenth of
/// the default 256 KiB), so that the server seldom finds the client's
/// event ring full, and a burst is long enough that asking for it (a
/// request, and for `shm-nospin` a wake-up each way) is a small share
/// of its cost.
const BURST_BYTES: usize = 16 << 10;

/// Most events in a burst.
pub const MAX_BURST: usize = 256;

/// The events a burst of `size`-byte events carries: about 16 KiB of
/// records (payload and 32 bytes of framing each), at least one, at most
/// [`MAX_BURST`].
pub fn burst_len(size: usize) -> usize {
    (BURST_BYTES / (size + 32)).clamp(1, MAX_BURST)
}

/// The message id of a request of `kind` and `size` bytes.
///
/// # Panics
///
/// If `size` exceeds [`MAX_SIZE`] (the command line refuses such sizes).
pub fn message_id(kind: Kind, size: usize) -> i32 {
    assert!(size <= MAX_SIZE, "message size {size} above {MAX_SIZE}");
    ((kind as i32) << 24) | size as i32
}

/// The kind and size a message id carries, if it is one of the bench's.
pub fn decode_id(id: i32) -> Option<(Kind, usize)> {
    let kind = match id >> 24 {
        1 => Kind::Echo,
        2 => Kind::OneWay,
        3 => Kind::Ack,
        4 => Kind::EchoInPlace,
        5 => Kind::Burst,
        6 => Kind::Event,
        _ => return None,
    };
    Some((kind, (id & 0xff_ffff) as usize))
}

/// Now on `CLOCK_MONOTONIC`, in nanoseconds: the clock every process of
/// the bench shares (and the one `Instant` reads on Linux).
pub fn mono_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always readable");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// The `Instant` of the `CLOCK_MONOTONIC` moment `ns` (now, if it has
/// passed).
pub fn instant_at(ns: u64) -> Instant {
    let (now, mono) = (Instant::now(), mono_ns());
    now + Duration::from_nanos(ns.saturating_sub(mono))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_kind_and_size() {
        for kind in [
            Kind::Echo,
            Kind::OneWay,
            Kind::Ack,
            Kind::EchoInPlace,
            Kind::Burst,
            Kind::Event,
        ] {
            for size in [0, 1, 64, 1 << 20, MAX_SIZE] {
                assert_eq!(decode_id(message_id(kind, size)), Some((kind, size)));
            }
        }
        assert_eq!(decode_id(0), None);
        assert_eq!(decode_id(-1), None);
    }

    #[test]
    fn bursts_are_bounded() {
        assert_eq!(burst_len(64), 170);
        assert_eq!(burst_len(0), MAX_BURST);
        assert_eq!(burst_len(1 << 20), 1);
        assert_eq!(burst_len(MAX_SIZE), 1);
    }

    #[test]
    fn names_parse_back() {
        for t in Transport::ALL {
            assert_eq!(t.name().parse::<Transport>(), Ok(t));
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.name()));
        }
        for m in Mode::ALL {
            assert_eq!(m.name().parse::<Mode>(), Ok(m));
        }
        assert!("tcp".parse::<Transport>().is_err());
    }

    #[test]
    fn monotonic_clock_matches_instant() {
        let target = mono_ns() + 5_000_000;
        let at = instant_at(target);
        // Never later than asked (how much earlier depends on the load).
        assert!(at.saturating_duration_since(Instant::now()) <= Duration::from_millis(5));
        assert!(instant_at(0) <= Instant::now());
    }
}
