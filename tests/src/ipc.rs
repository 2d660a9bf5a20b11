//! The protocol the test server (`test_server`) speaks, shared by it, the
//! test client (`test_client`) and the tests: message ids, the layout of
//! the requests that carry parameters, and the contents of every payload,
//! so that each side can check what it receives byte for byte.
//!
//! Every request is answered by the server's handler according to its
//! [`id`]; see each constant for what the server does.

use std::collections::BTreeMap;
use std::fmt;

use crate::payload;

/// The protocol id the test server accepts.
pub const PROTOCOL: &str = "ringlink-test";

/// Message ids of the test protocol.
pub mod id {
    /// Answered at once with the request's own payload.
    pub const ECHO: i32 = 1;
    /// Not answered; the payload comes back as an event with this id.
    pub const EVENT_ONLY: i32 = 2;
    /// A [`Burst`](super::Burst): answered at once with an empty payload,
    /// then a server thread sends the events (id
    /// [`BURST_EVENT`]), waiting for room when the event ring is full.
    pub const BURST: i32 = 3;
    /// Payload: the event length, a little-endian `u64`. The handler
    /// sends events of that length (id [`FILL_EVENT`], contents
    /// [`fill_event`](super::fill_event)) with the non-waiting
    /// `send_event` until it returns `WouldBlock`, then answers with the
    /// number sent (`u64`).
    pub const FILL: i32 = 4;
    /// Not answered: the handler disconnects the client.
    pub const DISCONNECT: i32 = 5;
    /// A [`Defer`](super::Defer) request: held until `batch` of them
    /// arrived, then answered (with its own payload) from another thread,
    /// in an order shuffled by `order_seed` (0: reverse order).
    pub const DEFER: i32 = 6;
    /// Answered with the client's credentials as the server sees them,
    /// the connection id and its maximum message, as `key=value` text
    /// (see [`Kv`](super::Kv)).
    pub const WHOAMI: i32 = 7;
    /// A [`checked`](super::checked_request) request: the server checks
    /// its per-connection counter and its contents, answers with the
    /// payload and error 0, or error [`CHECK_FAILED`](super::CHECK_FAILED).
    pub const CHECKED: i32 = 8;
    /// A blocking route (`Dispatch::on_blocking`, on the server's pool of
    /// 2 workers and a queue of 2): waits until the server's gate is open
    /// (command `gate open`; it starts open), then echoes the payload.
    pub const SLOW: i32 = 9;
    /// Payload: a u32 count N, then optionally a u32 batch B. The server
    /// sends N events of this id at once from the handler, each with its
    /// index (u32), one `send_event` each, or with B, in
    /// `Connection::send_events` calls of B events (the rest of a batch
    /// that stops short counted as refused), then answers `sent=S
    /// refused=R` (R: the events that met `WouldBlock`).
    pub const FLOOD: i32 = 10;
    /// A blocking route (on the same pool as [`SLOW`]) that calls the
    /// client back (`Connection::call`, this id, the request's payload,
    /// 60 s) and answers with the reply's payload, or error -1 with
    /// nothing if the call failed.
    pub const CALLBACK: i32 = 11;
    /// The handler itself (on the loop thread) calls the client back, a
    /// mistake `Connection::call` refuses at once: answers with the
    /// error's `io::ErrorKind`, as text.
    pub const CALL_INLINE: i32 = 12;
    /// Fds in messages (`--accept-fds`). The first payload byte says what
    /// to do with the request's fds: `r` read up to 64 bytes of each from
    /// its start, answered as `n=N` then `|contents` per fd, in order;
    /// `e` the same, the fds sent back on the response; `v` the same, the
    /// fds sent back on an event of this id (before the response); `k`
    /// none taken (left to the library to close). Each fd received
    /// without close-on-exec is a violation.
    pub const FDS: i32 = 13;
    /// Zero-copy: the handler sends an event of this id whose payload,
    /// written in place (`Connection::send_event_in_place`), is the
    /// request's, then answers with the payload reversed, written in
    /// place too (`respond_in_place`).
    pub const IN_PLACE: i32 = 14;
    /// The handler panics, on the loop thread, without answering: the
    /// service must close this connection and serve everyone else.
    pub const PANIC: i32 = 15;
    /// Zero-copy through slots (`Connection::reserve_event`,
    /// `reserve_response`): as [`IN_PLACE`], except that a payload
    /// starting with `!` makes the handler first reserve a response, fill
    /// it with `X`s and drop it uncommitted, then answer `given up`
    /// through a second slot (and send no event): what a dropped slot
    /// held must never reach the client.
    pub const RESERVED: i32 = 16;
    /// The event the server's `farewell-all` command sends (payload
    /// `bye`) before it disconnects each client.
    pub const FAREWELL: i32 = 103;
    /// The event the server sends from `connection_created` when started
    /// with `--event-on-create`: payload `hello <connection id>`.
    pub const HELLO: i32 = 100;
    /// Events of a [`BURST`].
    pub const BURST_EVENT: i32 = 101;
    /// Events of a [`FILL`].
    pub const FILL_EVENT: i32 = 102;
}

/// Error code of a [`id::CHECKED`] response whose request was wrong.
pub const CHECK_FAILED: i32 = 1;
/// Error code of a response to an unknown message id.
pub const UNKNOWN_ID: i32 = -1;

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Parameters of an [`id::BURST`] request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Burst {
    /// Events to send.
    pub count: u64,
    /// Every `big_every`-th event (indices `big_every - 1`, `2 *
    /// big_every - 1`, ...) has the connection's maximum size; 0: none.
    pub big_every: u64,
    /// Seed of the contents.
    pub seed: u64,
}

impl Burst {
    /// The request payload.
    pub fn encode(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(&self.count.to_le_bytes());
        b[8..16].copy_from_slice(&self.big_every.to_le_bytes());
        b[16..].copy_from_slice(&self.seed.to_le_bytes());
        b
    }

    /// Parses a request payload.
    pub fn decode(b: &[u8]) -> Option<Burst> {
        if b.len() != 24 {
            return None;
        }
        Some(Burst {
            count: u64_at(b, 0)?,
            big_every: u64_at(b, 8)?,
            seed: u64_at(b, 16)?,
        })
    }

    /// Payload length of event `i` on a connection whose maximum is
    /// `max`: at least 8 bytes (the index), at most 2 KiB, except the
    /// maximum-size ones.
    pub fn event_len(&self, i: u64, max: usize) -> usize {
        if self.big_every != 0 && i % self.big_every == self.big_every - 1 {
            max
        } else {
            payload::record_len(self.seed, i, 2048).max(8).min(max)
        }
    }

    /// Writes event `i` into `buf`, returning its length.
    pub fn fill_event(&self, i: u64, max: usize, buf: &mut [u8]) -> usize {
        let len = self.event_len(i, max);
        payload::fill(self.seed, i, &mut buf[..len]);
        len
    }

    /// Checks received event `i`.
    ///
    /// # Errors
    ///
    /// What is wrong with it.
    pub fn check_event(&self, i: u64, max: usize, data: &[u8]) -> Result<(), String> {
        let want = self.event_len(i, max);
        if data.len() != want {
            return Err(format!(
                "event {i}: {} bytes, expected {want}{}",
                data.len(),
                carried_index(data)
            ));
        }
        payload::check(self.seed, i, data)
    }
}

fn carried_index(data: &[u8]) -> String {
    match u64_at(data, 0) {
        Some(n) => format!(" (it carries index {n})"),
        None => String::new(),
    }
}

/// Seed of the contents of [`id::FILL`] events.
pub const FILL_SEED: u64 = 0xF111;

/// Writes [`id::FILL`] event `i` (its whole length) into `buf`.
pub fn fill_event(i: u64, buf: &mut [u8]) {
    payload::fill(FILL_SEED, i, buf);
}

/// Parameters of an [`id::DEFER`] request; the rest of the payload is
/// the client's, echoed back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Defer {
    /// Requests to hold before answering them all.
    pub batch: u32,
    /// Seed of the answering order; 0: reverse order.
    pub order_seed: u64,
}

/// Length of the [`Defer`] header at the start of the payload.
pub const DEFER_HEADER: usize = 16;

impl Defer {
    /// The whole payload of a request the server holds for good (it
    /// waits for a batch of 1000 that never comes): a response that is
    /// due and never arrives.
    pub fn held() -> [u8; DEFER_HEADER] {
        let mut b = [0u8; DEFER_HEADER];
        Defer {
            batch: 1000,
            order_seed: 0,
        }
        .encode_into(&mut b);
        b
    }

    /// Writes the header into the first [`DEFER_HEADER`] bytes of `buf`.
    pub fn encode_into(&self, buf: &mut [u8]) {
        buf[..4].copy_from_slice(&self.batch.to_le_bytes());
        buf[4..8].fill(0);
        buf[8..16].copy_from_slice(&self.order_seed.to_le_bytes());
    }

    /// Parses the header of a request payload.
    pub fn decode(b: &[u8]) -> Option<Defer> {
        Some(Defer {
            batch: u32::from_le_bytes(b.get(..4)?.try_into().ok()?),
            order_seed: u64_at(b, 8)?,
        })
    }

    /// The order in which `n` held requests (indices in arrival order)
    /// are answered.
    pub fn order(&self, n: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        if self.order_seed == 0 {
            v.reverse();
            return v;
        }
        // Fisher-Yates with the payload module's mixer.
        for i in (1..n).rev() {
            let j =
                (payload::mix(self.order_seed ^ payload::mix(i as u64)) % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
        v
    }
}

/// Bytes before the checked data: counter and seed.
pub const CHECKED_HEADER: usize = 16;

/// Builds [`id::CHECKED`] request number `counter` (0, 1, ... on each
/// connection) of stream `seed` into `buf`: the counter, the seed, then
/// `payload::record_len(seed, counter, max_data)` bytes of
/// `payload::fill(seed, counter, ..)`.
pub fn checked_request(seed: u64, counter: u64, max_data: usize, buf: &mut Vec<u8>) {
    let len = payload::record_len(seed, counter, max_data);
    buf.clear();
    buf.extend_from_slice(&counter.to_le_bytes());
    buf.extend_from_slice(&seed.to_le_bytes());
    buf.resize(CHECKED_HEADER + len, 0);
    payload::fill(seed, counter, &mut buf[CHECKED_HEADER..]);
}

/// Checks an [`id::CHECKED`] request that should be number `expected`
/// of its connection (whatever its seed and length).
///
/// # Errors
///
/// What is wrong with it.
pub fn verify_checked(request: &[u8], expected: u64) -> Result<(), String> {
    let (Some(counter), Some(seed)) = (u64_at(request, 0), u64_at(request, 8)) else {
        return Err(format!("checked request of {} bytes", request.len()));
    };
    if counter != expected {
        return Err(format!(
            "checked request {counter} arrived where {expected} was due"
        ));
    }
    payload::check(seed, counter, &request[CHECKED_HEADER..])
}

/// Lines of `key=value` words (server statistics, `WHOAMI` answers).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kv(pub BTreeMap<String, String>);

impl Kv {
    /// Parses the `key=value` words of `line`; other words are ignored.
    pub fn parse(line: &str) -> Kv {
        Kv(line
            .split_whitespace()
            .filter_map(|w| {
                let (k, v) = w.split_once('=')?;
                Some((k.to_owned(), v.to_owned()))
            })
            .collect())
    }

    /// The value of `key`.
    ///
    /// # Panics
    ///
    /// If the key is missing.
    pub fn get(&self, key: &str) -> &str {
        self.0
            .get(key)
            .unwrap_or_else(|| panic!("no {key:?} in {self}"))
    }

    /// The value of `key` as a number.
    ///
    /// # Panics
    ///
    /// If the key is missing or its value is not a number.
    pub fn num(&self, key: &str) -> i64 {
        self.0
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no number {key:?} in {self}"))
    }

    /// The value of `key` as an unsigned number.
    ///
    /// # Panics
    ///
    /// As [`num`](Self::num), or if it is negative.
    pub fn u(&self, key: &str) -> u64 {
        u64::try_from(self.num(key)).unwrap_or_else(|_| panic!("negative {key:?} in {self}"))
    }
}

impl fmt::Display for Kv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (k, v) in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

/// A short name for an error's variant (`Disconnected`, `TimedOut`,
/// `Rejected(PermissionDenied)`, ...), as the helpers report them.
pub fn error_kind(e: &ringlink_common::Error) -> String {
    use ringlink_common::Error;
    match e {
        Error::Io(io) => format!("Io({:?})", io.kind()),
        Error::NoServer => "NoServer".into(),
        Error::Rejected(s) => format!("Rejected({s:?})"),
        Error::Protocol(_) => "Protocol".into(),
        Error::Disconnected => "Disconnected".into(),
        Error::TimedOut => "TimedOut".into(),
        Error::WouldBlock => "WouldBlock".into(),
        Error::MessageTooLarge { .. } => "MessageTooLarge".into(),
        Error::BufferTooSmall { .. } => "BufferTooSmall".into(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_round_trips_and_sizes() {
        let b = Burst {
            count: 30_000,
            big_every: 1000,
            seed: 9,
        };
        assert_eq!(Burst::decode(&b.encode()), Some(b));
        assert_eq!(b.event_len(999, 65536), 65536);
        assert_eq!(b.event_len(1999, 65536), 65536);
        assert!(b.event_len(1000, 65536) <= 2048);
        assert!(b.event_len(0, 65536) >= 8);
        let mut buf = vec![0u8; 65536];
        let n = b.fill_event(5, 65536, &mut buf);
        b.check_event(5, 65536, &buf[..n]).unwrap();
        assert!(b.check_event(6, 65536, &buf[..n]).is_err());
    }

    #[test]
    fn defer_order_is_a_permutation() {
        for seed in [0, 1, 77] {
            let d = Defer {
                batch: 50,
                order_seed: seed,
            };
            let mut o = d.order(50);
            assert_ne!(o, (0..50).collect::<Vec<_>>());
            o.sort_unstable();
            assert_eq!(o, (0..50).collect::<Vec<_>>());
        }
    }

    #[test]
    fn checked_requests_verify() {
        let mut buf = Vec::new();
        checked_request(3, 7, 500, &mut buf);
        verify_checked(&buf, 7).unwrap();
        assert!(verify_checked(&buf, 8).is_err());
        let last = buf.len() - 1;
        if last >= CHECKED_HEADER {
            buf[last] ^= 1;
            assert!(verify_checked(&buf, 7).is_err());
        }
    }

    #[test]
    fn kv_parses() {
        let kv = Kv::parse("stats a=1 b=-2 c=x");
        assert_eq!(kv.num("a"), 1);
        assert_eq!(kv.num("b"), -2);
        assert_eq!(kv.to_string(), "a=1 b=-2 c=x");
    }
}
