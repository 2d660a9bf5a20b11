//! Writing and checking the record stream of [`payload`](crate::payload)
//! through a real `Producer` / `Consumer`, with either API.
//!
//! Every wait that could last forever if the peer died goes through a
//! `*_timeout` call of [`POLL`] and then the caller's watchdog, which
//! decides whether to go on (peer alive, deadline not passed) or fail.
//! [`produce`] can also use the blocking calls (no watchdog), for a
//! helper process that has its own.

use std::io::IoSlice;
use std::str::FromStr;
use std::time::Duration;

use ringlink_ringbuf::{Consumer, PopError, Producer, PushError};

use crate::payload::{check_record, fill, mix, record_len};

/// How long one wait lasts before the watchdog is consulted.
pub const POLL: Duration = Duration::from_millis(100);

/// Called when a wait timed out; returns `Err` to give up.
pub type Watchdog<'a> = &'a mut dyn FnMut() -> Result<(), String>;

/// Which API moves the records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// `reserve` / `commit` (sometimes `commit_len`), `peek` / `release`
    /// (sometimes a dropped grant and a second peek).
    ZeroCopy,
    /// `push` / `push_vectored`, `pop_into` (sometimes into a buffer one
    /// byte too small first).
    Copy,
    /// Each record picks one of the two at random.
    Mixed,
}

impl Api {
    /// The name [`FromStr`] takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::ZeroCopy => "zero-copy",
            Api::Copy => "copy",
            Api::Mixed => "mixed",
        }
    }

    fn zero_copy(self, seed: u64, seq: u64) -> bool {
        match self {
            Api::ZeroCopy => true,
            Api::Copy => false,
            Api::Mixed => mix(seed ^ seq ^ 0xA11) & 1 == 0,
        }
    }
}

impl FromStr for Api {
    type Err = String;
    fn from_str(s: &str) -> Result<Api, String> {
        match s {
            "zero-copy" => Ok(Api::ZeroCopy),
            "copy" => Ok(Api::Copy),
            "mixed" => Ok(Api::Mixed),
            _ => Err(format!("unknown api {s:?}")),
        }
    }
}

/// How the producer waits for room.
pub enum Wait<'a> {
    /// The blocking calls (`reserve`, `push`, `push_vectored`): only for
    /// a process with its own watchdog.
    Block,
    /// The `*_timeout` calls, consulting the watchdog after each timeout.
    Poll(Watchdog<'a>),
}

impl std::fmt::Debug for Wait<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Wait::Block => "Block",
            Wait::Poll(_) => "Poll(..)",
        })
    }
}

/// Writes records `0..count` of stream `seed`, then returns (the caller
/// drops or closes the producer).
///
/// # Errors
///
/// The first error of the ring, or of the watchdog.
pub fn produce(
    tx: &mut Producer,
    count: u64,
    seed: u64,
    api: Api,
    mut wait: Wait<'_>,
) -> Result<(), String> {
    let max = tx.max_payload();
    let mut scratch = vec![0u8; max];
    for seq in 0..count {
        let len = record_len(seed, seq, max);
        let fail = |e: PushError| format!("producer, record {seq} ({len} bytes): {e:?}");
        if api.zero_copy(seed, seq) {
            // Now and then reserve more than needed and commit only the
            // record's length.
            let h = mix(seed ^ seq ^ 0xC0);
            let extra = if h % 13 == 5 {
                (h >> 8) as usize % (max - len + 1)
            } else {
                0
            };
            let mut grant = match &mut wait {
                Wait::Block => tx.reserve(len + extra).map_err(fail)?,
                Wait::Poll(watchdog) => loop {
                    match tx.reserve_timeout(len + extra, POLL) {
                        Ok(g) => break g,
                        Err(PushError::TimedOut) => watchdog()?,
                        Err(e) => return Err(fail(e)),
                    }
                },
            };
            fill(seed, seq, &mut grant[..len]);
            if extra > 0 {
                grant.commit_len(len);
            } else {
                grant.commit();
            }
        } else {
            let data = &mut scratch[..len];
            fill(seed, seq, data);
            let data = &*data;
            let h = mix(seed ^ seq ^ 0x1F);
            if h % 3 == 0 {
                // One record from three slices, any of them possibly
                // empty.
                let a = (h >> 8) as usize % (len + 1);
                let b = a + (h >> 32) as usize % (len - a + 1);
                let parts = [
                    IoSlice::new(&data[..a]),
                    IoSlice::new(&data[a..b]),
                    IoSlice::new(&data[b..]),
                ];
                match &mut wait {
                    Wait::Block => tx.push_vectored(&parts).map_err(fail)?,
                    Wait::Poll(watchdog) => loop {
                        match tx.push_vectored_timeout(&parts, POLL) {
                            Ok(()) => break,
                            Err(PushError::TimedOut) => watchdog()?,
                            Err(e) => return Err(fail(e)),
                        }
                    },
                }
            } else {
                match &mut wait {
                    Wait::Block => tx.push(data).map_err(fail)?,
                    Wait::Poll(watchdog) => loop {
                        match tx.push_timeout(data, POLL) {
                            Ok(()) => break,
                            Err(PushError::TimedOut) => watchdog()?,
                            Err(e) => return Err(fail(e)),
                        }
                    },
                }
            }
        }
    }
    Ok(())
}

/// What [`consume`] saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Consumed {
    /// Records read and checked.
    pub records: u64,
    /// Payload bytes read and checked.
    pub bytes: u64,
    /// Waits that timed out (each consulted the watchdog).
    pub timeouts: u64,
}

/// Reads records `0..count` of stream `seed` and checks every byte of
/// each, then checks that the ring reports `Closed` (twice: it stays
/// closed) and nothing more.
///
/// # Errors
///
/// The first missing, extra, misplaced or damaged record, any error of
/// the ring, or the watchdog's error.
pub fn consume(
    rx: &mut Consumer,
    count: u64,
    seed: u64,
    api: Api,
    watchdog: Watchdog<'_>,
) -> Result<Consumed, String> {
    let max = rx.max_payload();
    let mut buf = vec![0u8; max];
    let mut seen = Consumed::default();
    for seq in 0..count {
        let want = record_len(seed, seq, max);
        let fail = |e: PopError| match e {
            PopError::Closed => {
                format!("ring closed after {seq} of {count} records: records were lost")
            }
            e => format!("consumer, record {seq}: {e:?}"),
        };
        if api.zero_copy(seed, seq) {
            let grant = loop {
                match rx.try_peek() {
                    Ok(g) => break g,
                    Err(PopError::Empty) => {}
                    Err(e) => return Err(fail(e)),
                }
                match rx.peek_timeout(POLL) {
                    Ok(g) => break g,
                    Err(PopError::TimedOut) => {
                        seen.timeouts += 1;
                        watchdog()?;
                    }
                    Err(e) => return Err(fail(e)),
                }
            };
            check_record(seed, seq, max, &grant)?;
            if mix(seed ^ seq ^ 0xD0) % 1009 == 7 {
                // A grant dropped without release keeps the record. (It
                // has no `Drop`: going out of scope ends the borrow.)
                {
                    let _unreleased = grant;
                }
                let again = rx
                    .try_peek()
                    .map_err(|e| format!("record {seq} gone after a dropped grant: {e:?}"))?;
                check_record(seed, seq, max, &again)
                    .map_err(|e| format!("after a dropped grant: {e}"))?;
                again.release();
            } else {
                grant.release();
            }
        } else {
            if want > 0 && mix(seed ^ seq ^ 0xB5) % 997 == 3 {
                // A buffer one byte short is refused and the record kept.
                loop {
                    match rx.pop_into_timeout(&mut buf[..want - 1], POLL) {
                        Err(PopError::BufferTooSmall { needed }) if needed == want => break,
                        Err(PopError::BufferTooSmall { needed }) => {
                            return Err(format!(
                                "record {seq}: BufferTooSmall says {needed} bytes, expected {want}"
                            ))
                        }
                        Ok(n) => {
                            return Err(format!(
                                "record {seq}: {n} bytes fitted a buffer of {} (expected a record of {want})",
                                want - 1
                            ))
                        }
                        Err(PopError::TimedOut) => {
                            seen.timeouts += 1;
                            watchdog()?;
                        }
                        Err(e) => return Err(fail(e)),
                    }
                }
            }
            let n = loop {
                match rx.try_pop_into(&mut buf) {
                    Ok(n) => break n,
                    Err(PopError::Empty) => {}
                    Err(e) => return Err(fail(e)),
                }
                match rx.pop_into_timeout(&mut buf, POLL) {
                    Ok(n) => break n,
                    Err(PopError::TimedOut) => {
                        seen.timeouts += 1;
                        watchdog()?;
                    }
                    Err(e) => return Err(fail(e)),
                }
            };
            check_record(seed, seq, max, &buf[..n])?;
        }
        seen.records += 1;
        seen.bytes += want as u64;
    }
    // The end: Closed, and nothing after the last record.
    loop {
        match rx.peek_timeout(POLL) {
            Err(PopError::Closed) => break,
            Ok(g) => {
                return Err(format!(
                    "an extra record ({} bytes) after the last one ({count} expected)",
                    g.len()
                ))
            }
            Err(PopError::TimedOut) => {
                seen.timeouts += 1;
                watchdog()?;
            }
            Err(e) => return Err(format!("consumer, after the last record: {e:?}")),
        }
    }
    match rx.try_peek() {
        Err(PopError::Closed) => Ok(seen),
        other => Err(format!(
            "a second read after Closed gave {:?}",
            other.map(|g| g.len())
        )),
    }
}

/// Voluntary context switches of the calling thread so far: how many
/// times it blocked in the kernel (here, mostly sleeping on an eventfd
/// or futex of the ring). For reports only; never asserted.
pub fn voluntary_switches() -> u64 {
    // SAFETY: `ru` is a live local the kernel fills; RUSAGE_THREAD is a
    // valid selector on Linux.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_THREAD, &mut ru) == 0 {
            ru.ru_nvcsw as u64
        } else {
            0
        }
    }
}

/// [`consume`] of a stream whose producer is the helper `peer`, with a
/// watchdog that fails (killing the helper, with its output in the panic)
/// when `deadline` passes, or when the helper has exited and the ring
/// still has nothing more and is not closed (it died without closing, or
/// records were lost).
///
/// # Panics
///
/// On any failure of [`consume`].
pub fn consume_from_peer(
    peer: &mut crate::peer::Peer,
    rx: &mut Consumer,
    count: u64,
    seed: u64,
    api: Api,
    deadline: Duration,
) -> Consumed {
    let until = std::time::Instant::now() + deadline;
    let mut gone = None;
    let r = consume(rx, count, seed, api, &mut || {
        if std::time::Instant::now() > until {
            return Err(format!("no end of stream after {deadline:?}"));
        }
        if let Some(st) = gone {
            // It had already exited at the previous timeout, so whatever
            // it published was there to read by now.
            return Err(format!(
                "producer exited ({}) and the ring has nothing more and is not closed",
                crate::peer::describe(st)
            ));
        }
        gone = peer.exited();
        Ok(())
    });
    r.unwrap_or_else(|e| peer.fail(&e))
}
