//! The benchmark loops over a ring, shared by the two-process driver,
//! the peer and the two-thread criterion benches.
//!
//! Waiting goes through the ring's own spin-then-sleep logic; a `try_*`
//! call comes first so that the hot path does not read the clock to
//! compute a deadline, and the `*_timeout` form (bounded by [`STALL`])
//! only runs when the ring is full or empty.

use std::io;
use std::time::{Duration, Instant};

use ringlink_ringbuf::{Consumer, PopError, Producer, PushError};

use crate::payload::{check, stamp};
use crate::STALL;

/// Pushes `data` as one record, waiting for room if needed.
///
/// # Errors
///
/// A ring error, or `TimedOut` after [`STALL`].
#[inline]
pub fn push(tx: &mut Producer, data: &[u8]) -> io::Result<()> {
    match tx.try_push(data) {
        Err(PushError::Full) => tx.push_timeout(data, STALL).map_err(Into::into),
        r => r.map_err(Into::into),
    }
}

/// Reserves a record of `len` bytes, lets `fill` write it in place, and
/// commits it, waiting for room if needed.
///
/// # Errors
///
/// As [`push`].
#[inline]
pub fn write_with(tx: &mut Producer, len: usize, fill: impl FnOnce(&mut [u8])) -> io::Result<()> {
    match tx.try_reserve(len) {
        Ok(mut g) => {
            fill(&mut g);
            g.commit();
            return Ok(());
        }
        Err(PushError::Full) => {}
        Err(e) => return Err(e.into()),
    }
    let mut g = tx.reserve_timeout(len, STALL)?;
    fill(&mut g);
    g.commit();
    Ok(())
}

/// Waits for the next record, hands it to `read` in place, then releases
/// it.
///
/// # Errors
///
/// A ring error, or `TimedOut` after [`STALL`].
#[inline]
pub fn read_with<R>(rx: &mut Consumer, read: impl FnOnce(&[u8]) -> R) -> io::Result<R> {
    match rx.try_peek() {
        Ok(g) => {
            let r = read(&g);
            g.release();
            return Ok(r);
        }
        Err(PopError::Empty) => {}
        Err(e) => return Err(e.into()),
    }
    let g = rx.peek_timeout(STALL)?;
    let r = read(&g);
    g.release();
    Ok(r)
}

/// Sends `count` records of `size` bytes, stamped `0..count`.
///
/// # Errors
///
/// As [`push`].
pub fn send(tx: &mut Producer, size: usize, count: u64) -> io::Result<()> {
    let mut src = crate::payload::pattern(size);
    for seq in 0..count {
        stamp(&mut src, seq);
        push(tx, &src)?;
    }
    Ok(())
}

/// Receives `count + 1` records of `size` bytes stamped `0..=count`,
/// checking each, and returns the time from the first one's arrival to
/// the last one's (the time of `count` records in steady flow) and a
/// checksum.
///
/// # Errors
///
/// As [`read_with`], and `InvalidData` for a wrong record.
pub fn receive(rx: &mut Consumer, size: usize, count: u64) -> io::Result<(Duration, u64)> {
    let mut acc = read_with(rx, |m| check(m, size, 0))??;
    let start = Instant::now();
    for seq in 1..=count {
        acc ^= read_with(rx, |m| check(m, size, seq))??;
    }
    Ok((start.elapsed(), acc))
}

/// Answers `count` requests: each record read from `rx` is copied into a
/// record of the same size on `tx`.
///
/// # Errors
///
/// As [`read_with`] and [`write_with`].
pub fn echo(rx: &mut Consumer, tx: &mut Producer, count: u64) -> io::Result<()> {
    for _ in 0..count {
        read_with(rx, |req| {
            write_with(tx, req.len(), |out| out.copy_from_slice(req))
        })??;
    }
    Ok(())
}

/// Makes `count` round trips: a request of `size` bytes on `tx`, its echo
/// read back from `rx` and checked. Returns the total time; with
/// `samples`, also appends each round trip's time in nanoseconds (one
/// clock read per round trip).
///
/// # Errors
///
/// As [`push`] and [`read_with`], and `InvalidData` for a wrong answer.
pub fn round_trips(
    tx: &mut Producer,
    rx: &mut Consumer,
    size: usize,
    count: u64,
    mut samples: Option<&mut Vec<u64>>,
) -> io::Result<(Duration, u64)> {
    let mut src = crate::payload::pattern(size);
    let mut acc = 0;
    let start = Instant::now();
    let mut last = start;
    for seq in 0..count {
        stamp(&mut src, seq);
        push(tx, &src)?;
        acc ^= read_with(rx, |m| check(m, size, seq))??;
        if let Some(s) = samples.as_deref_mut() {
            let now = Instant::now();
            s.push(now.duration_since(last).as_nanos() as u64);
            last = now;
        }
    }
    Ok((start.elapsed(), acc))
}
