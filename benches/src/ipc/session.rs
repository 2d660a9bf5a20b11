//! The client's measurement loops over a [`Link`]: round trips and
//! one-way runs, with stamped requests and checked responses. Shared by
//! the client processes of `ipc-bench` and by the criterion benches.

use std::collections::VecDeque;
use std::hint::black_box;
use std::io;
use std::time::{Duration, Instant};

use super::link::{Link, TypedLink, ZeroCopyLink};
use super::typed::Sample;
use super::{burst_len, message_id, Kind, ACK_LEN};
use crate::hist::Histogram;
use crate::payload::{check, pattern, stamp};

/// Most acknowledgements a one-way sender has outstanding: with two, the
/// server always has requests to read while the client waits for the
/// older one.
pub const ACKS_IN_FLIGHT: usize = 2;

/// One-way runs check the clock once every this many messages.
const CLOCK_EVERY: u64 = 16;

/// How long a phase of a run lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    /// Until this moment (at least one message).
    Time(Instant),
    /// This many messages or round trips.
    Count(u64),
}

/// What a run did: the messages of its measured phase and when that
/// phase started and ended, and every request sent.
#[derive(Clone, Copy, Debug)]
pub struct Counts {
    /// Messages (one-way) or round trips of the measured phase.
    pub measured: u64,
    /// Requests sent, warm-up included.
    pub total: u64,
    /// Start of the measured phase.
    pub start: Instant,
    /// End of the measured phase.
    pub end: Instant,
}

impl Counts {
    /// Length of the measured phase.
    pub fn elapsed(&self) -> Duration {
        self.end.duration_since(self.start)
    }
}

/// The state of the bench's traffic on one connection: the request and
/// response buffers, the next stamp (the server expects every request of
/// the connection to carry the next number), the number of the next
/// event (the server numbers a connection's events from 0), the
/// acknowledgements awaited.
#[derive(Debug)]
pub struct Session {
    size: usize,
    req: Vec<u8>,
    buf: Vec<u8>,
    next: u64,
    event: u64,
    acks: VecDeque<u64>,
    ack_every: u64,
    since_ack: u64,
}

impl Session {
    /// A session for `size`-byte requests on a connection whose next
    /// request is number `next` (0 for a fresh connection). One-way
    /// requests ask for an acknowledgement every `ack_every`.
    pub fn new(size: usize, next: u64, ack_every: u64) -> Session {
        Session {
            size,
            req: pattern(size),
            // Room for a longer answer than expected, so that one shows
            // as a wrong length rather than a transport error.
            buf: vec![0; size.max(ACK_LEN) + 64],
            next,
            event: 0,
            acks: VecDeque::with_capacity(ACKS_IN_FLIGHT + 1),
            ack_every: ack_every.max(1),
            since_ack: 0,
        }
    }

    /// The number the next request will carry (to continue on the same
    /// connection with another session).
    pub fn next_stamp(&self) -> u64 {
        self.next
    }

    /// This session, on a connection whose next event is number `next`
    /// (it has had events before).
    pub fn with_next_event(mut self, next: u64) -> Session {
        self.event = next;
        self
    }

    /// The number the connection's next event will carry.
    pub fn next_event(&self) -> u64 {
        self.event
    }

    /// One round trip: a stamped echo request, its response checked.
    ///
    /// # Errors
    ///
    /// A link error, or `InvalidData` for a wrong response.
    #[inline]
    pub fn round_trip(&mut self, link: &mut impl Link) -> io::Result<u64> {
        let seq = self.next;
        let id = message_id(Kind::Echo, self.size);
        stamp(&mut self.req, seq);
        self.next += 1;
        let (got, len) = link
            .round_trip(id, &self.req, &mut self.buf)
            .map_err(|e| context(e, || format!("round trip of request {seq}")))?;
        expect_id(got, id)?;
        check(&self.buf[..len], self.size, seq)
    }

    /// One zero-copy round trip (`shm-zc`): the stamped request written
    /// in the ring, the response (written in place by the server) checked
    /// where it lies.
    ///
    /// # Errors
    ///
    /// A link error, or `InvalidData` for a wrong answer.
    #[inline]
    pub fn zero_copy_round_trip(&mut self, link: &mut ZeroCopyLink) -> io::Result<u64> {
        let seq = self.next;
        let id = message_id(Kind::EchoInPlace, self.size);
        stamp(&mut self.req, seq);
        self.next += 1;
        let size = self.size;
        link.round_trip_in_place(id, &self.req, |got, payload| {
            expect_id(got, id)?;
            check(payload, size, seq)
        })
        .map_err(|e| context(e, || format!("zero-copy round trip of request {seq}")))
    }

    /// [`run_rtt`](Self::run_rtt) of zero-copy round trips.
    ///
    /// # Errors
    ///
    /// As [`zero_copy_round_trip`](Self::zero_copy_round_trip).
    pub fn run_rtt_zero_copy(
        &mut self,
        link: &mut ZeroCopyLink,
        warm: Until,
        measure: Until,
        hist: Option<&mut Histogram>,
    ) -> io::Result<Counts> {
        self.run_rtt_with(warm, measure, hist, |s| s.zero_copy_round_trip(link))
    }

    /// One typed round trip (`shm-typed`): a [`Sample`] numbered with
    /// the stamp, its answer checked.
    ///
    /// # Errors
    ///
    /// A link error, or `InvalidData` for a wrong answer.
    #[inline]
    pub fn typed_round_trip(&mut self, link: &mut TypedLink) -> io::Result<u64> {
        let seq = self.next;
        self.next += 1;
        let answer = link
            .call(&Sample::new(seq, false))
            .map_err(|e| context(e, || format!("typed round trip of request {seq}")))?;
        answer.check(seq, true)
    }

    /// Sends one one-way request; every `ack_every`-th, or this one if
    /// `ack`, asks for an acknowledgement. Waits for the oldest
    /// acknowledgement when [`ACKS_IN_FLIGHT`] are outstanding.
    ///
    /// # Errors
    ///
    /// A link error, or `InvalidData` for a wrong acknowledgement.
    #[inline]
    pub fn send(&mut self, link: &mut impl Link, ack: bool) -> io::Result<()> {
        let seq = self.next;
        self.since_ack += 1;
        let ack = ack || self.since_ack >= self.ack_every;
        let kind = if ack { Kind::Ack } else { Kind::OneWay };
        stamp(&mut self.req, seq);
        self.next += 1;
        link.send(message_id(kind, self.size), &self.req)
            .map_err(|e| context(e, || format!("sending one-way request {seq}")))?;
        if ack {
            self.since_ack = 0;
            self.acks.push_back(seq);
            if self.acks.len() >= ACKS_IN_FLIGHT {
                self.await_ack(link)?;
            }
        }
        Ok(())
    }

    /// Waits for every outstanding acknowledgement.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub fn drain(&mut self, link: &mut impl Link) -> io::Result<()> {
        while !self.acks.is_empty() {
            self.await_ack(link)?;
        }
        Ok(())
    }

    fn await_ack(&mut self, link: &mut impl Link) -> io::Result<()> {
        let Some(seq) = self.acks.pop_front() else {
            return Ok(());
        };
        let (id, len) = link.recv(&mut self.buf).map_err(|e| {
            context(e, || {
                format!("waiting for the acknowledgement of request {seq}")
            })
        })?;
        expect_id(id, message_id(Kind::Ack, self.size))?;
        black_box(check(&self.buf[..len], ACK_LEN, seq)?);
        Ok(())
    }

    /// A round-trip run: round trips until `warm` ends, then round trips
    /// until `measure` ends, each of these timed into `hist`.
    ///
    /// # Errors
    ///
    /// As [`round_trip`](Self::round_trip).
    pub fn run_rtt(
        &mut self,
        link: &mut impl Link,
        warm: Until,
        measure: Until,
        hist: Option<&mut Histogram>,
    ) -> io::Result<Counts> {
        self.run_rtt_with(warm, measure, hist, |s| s.round_trip(link))
    }

    /// [`run_rtt`](Self::run_rtt) of typed round trips
    /// ([`typed_round_trip`](Self::typed_round_trip)).
    ///
    /// # Errors
    ///
    /// As [`typed_round_trip`](Self::typed_round_trip).
    pub fn run_rtt_typed(
        &mut self,
        link: &mut TypedLink,
        warm: Until,
        measure: Until,
        hist: Option<&mut Histogram>,
    ) -> io::Result<Counts> {
        self.run_rtt_with(warm, measure, hist, |s| s.typed_round_trip(link))
    }

    /// A round-trip run of `one` round trip after another.
    fn run_rtt_with(
        &mut self,
        warm: Until,
        measure: Until,
        mut hist: Option<&mut Histogram>,
        mut one: impl FnMut(&mut Session) -> io::Result<u64>,
    ) -> io::Result<Counts> {
        let mut acc = 0;
        let mut total = 0;
        let mut n = 0u64;
        while !warmed(warm, n) {
            acc ^= one(self)?;
            n += 1;
        }
        total += n;
        let start = Instant::now();
        let mut last = start;
        let mut n = 0u64;
        loop {
            acc ^= one(self)?;
            let now = Instant::now();
            if let Some(h) = hist.as_deref_mut() {
                h.record(now.duration_since(last).as_nanos() as u64);
            }
            last = now;
            n += 1;
            if done(measure, n, || now) {
                break;
            }
        }
        black_box(acc);
        Ok(Counts {
            measured: n,
            total: total + n,
            start,
            end: last,
        })
    }

    /// A one-way run: requests until `warm` ends, the last of them
    /// acknowledged, then, from that acknowledgement on, requests until
    /// `measure` ends, the last acknowledged too; the measured phase
    /// ends with that acknowledgement.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub fn run_oneway(
        &mut self,
        link: &mut impl Link,
        warm: Until,
        measure: Until,
    ) -> io::Result<Counts> {
        self.run_phases(warm, measure, |s, until, warming| {
            s.oneway_phase(link, until, warming)
        })
    }

    /// An events run: bursts of events until `warm` ends, the last read,
    /// then bursts until `measure` ends; the measured phase ends when
    /// its last burst has been read. Two bursts are asked for ahead: the
    /// next is asked for as soon as one has been read, so that the server
    /// has one to send while the client reads the other.
    ///
    /// # Errors
    ///
    /// A link error, or `InvalidData` for a wrong event.
    pub fn run_events(
        &mut self,
        link: &mut impl Link,
        warm: Until,
        measure: Until,
    ) -> io::Result<Counts> {
        self.run_phases(warm, measure, |s, until, warming| {
            s.events_phase(link, until, warming)
        })
    }

    /// A run of a warm-up `phase` (which may be skipped: `true`), then a
    /// measured one, timed from the first's end to the second's; `phase`
    /// returns the messages it moved.
    fn run_phases(
        &mut self,
        warm: Until,
        measure: Until,
        mut phase: impl FnMut(&mut Session, Until, bool) -> io::Result<u64>,
    ) -> io::Result<Counts> {
        let warm_moved = phase(self, warm, true)?;
        let start = Instant::now();
        let measured = phase(self, measure, false)?;
        Ok(Counts {
            measured,
            total: warm_moved + measured,
            start,
            end: Instant::now(),
        })
    }

    /// Asks for bursts until `until` (at least one, unless a warm-up,
    /// `may_skip`, whose time has passed) and reads every event asked
    /// for. Returns the number read.
    fn events_phase(
        &mut self,
        link: &mut impl Link,
        until: Until,
        may_skip: bool,
    ) -> io::Result<u64> {
        if may_skip && warmed(until, 0) {
            return Ok(0);
        }
        let per = burst_len(self.size) as u64;
        let (mut asked, mut read) = (0u64, 0u64);
        let mut over = false;
        loop {
            while !over && asked - read < 2 {
                self.ask_burst(link)?;
                asked += 1;
                over = match until {
                    Until::Count(c) => asked * per >= c,
                    Until::Time(t) => Instant::now() >= t,
                };
            }
            if read == asked {
                return Ok(read * per);
            }
            for _ in 0..per {
                self.event_recv(link)?;
            }
            read += 1;
        }
    }

    /// Asks for a burst of events of the session's size: a one-way
    /// request of an [`ACK_LEN`]-byte stamp.
    fn ask_burst(&mut self, link: &mut impl Link) -> io::Result<()> {
        let seq = self.next;
        self.next += 1;
        let mut req = [0u8; ACK_LEN];
        stamp(&mut req, seq);
        link.send(message_id(Kind::Burst, self.size), &req)
            .map_err(|e| context(e, || format!("asking for a burst (request {seq})")))
    }

    /// Receives the next event and checks it.
    #[inline]
    fn event_recv(&mut self, link: &mut impl Link) -> io::Result<()> {
        let n = self.event;
        let (id, len) = link
            .event_recv(&mut self.buf)
            .map_err(|e| context(e, || format!("waiting for event {n}")))?;
        expect_id(id, message_id(Kind::Event, self.size))?;
        black_box(check(&self.buf[..len], self.size, n)?);
        self.event += 1;
        Ok(())
    }

    /// Sends until `until`, the last request acknowledged, and waits for
    /// every acknowledgement. A warm-up (`may_skip`) of zero messages, or
    /// whose time has passed, sends nothing. Returns the number sent.
    fn oneway_phase(
        &mut self,
        link: &mut impl Link,
        until: Until,
        may_skip: bool,
    ) -> io::Result<u64> {
        if may_skip && warmed(until, 0) {
            return Ok(0);
        }
        let mut n = 0u64;
        loop {
            n += 1;
            let last = match until {
                Until::Count(c) => n >= c,
                Until::Time(t) => n % CLOCK_EVERY == 0 && Instant::now() >= t,
            };
            self.send(link, last)?;
            if last {
                break;
            }
        }
        self.drain(link)?;
        Ok(n)
    }
}

/// Whether a warm-up that has done `n` operations is over (possibly
/// before the first, if its time has passed).
#[inline]
fn warmed(until: Until, n: u64) -> bool {
    match until {
        Until::Count(c) => n >= c,
        Until::Time(t) => Instant::now() >= t,
    }
}

/// Whether a measured phase that has done `n` operations is over (never
/// before the first).
#[inline]
fn done(until: Until, n: u64, now: impl FnOnce() -> Instant) -> bool {
    match until {
        Until::Count(c) => n >= c,
        Until::Time(t) => n > 0 && now() >= t,
    }
}

/// `e`, saying what was being done.
fn context(e: io::Error, what: impl FnOnce() -> String) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", what()))
}

fn expect_id(got: i32, want: i32) -> io::Result<()> {
    if got != want {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("response with message id {got:#x}, expected {want:#x}"),
        ));
    }
    Ok(())
}
