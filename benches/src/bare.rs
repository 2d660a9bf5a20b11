//! The throughput floor: a bare shared-memory stream between two
//! processes, the least a ring can be.
//!
//! Fixed-size slots (packed, 8-byte aligned) in a shared memfd, a write counter and a read
//! counter on their own 128-byte lines, each side caching the other's
//! counter, Release stores and Acquire loads, plain spinning. No record
//! headers, no validation of the peer, no wake-up handshake (so no
//! SeqCst fence), no sleeping. Two streams (driver → peer and peer →
//! driver) share one mapping, for one-way runs and round trips.
//!
//! Between it and the [`floor`](crate::floor) ping-pong: the floor moves
//! one cache line per hop; a stream, like any ring that publishes a
//! position, moves at least two (the counter, then the data).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::memfd::{memfd_create, MFdFlags};

use crate::payload::{check, pattern, stamp};

/// Data bytes of each stream.
pub const STREAM_BYTES: usize = 1 << 20;
const HEADER: usize = 4096;
const LEN: usize = HEADER + 2 * STREAM_BYTES;

/// Which of the two streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Driver → peer (requests).
    ToPeer = 0,
    /// Peer → driver (one-way data, responses).
    ToDriver = 1,
}

/// The shared mapping of the two streams.
#[derive(Debug)]
pub struct Bare {
    map: memmap2::MmapRaw,
    fd: OwnedFd,
}

/// One side of one stream: its own count and the peer's, cached.
#[derive(Debug, Clone, Copy, Default)]
struct Ends {
    mine: u64,
    cached: u64,
}

impl Bare {
    /// Makes fresh zeroed streams in a memfd.
    ///
    /// # Errors
    ///
    /// If the memfd cannot be made, sized or mapped.
    pub fn create() -> io::Result<Bare> {
        let fd = memfd_create(c"ringlink-bare", MFdFlags::MFD_CLOEXEC)?;
        File::from(fd.try_clone()?).set_len(LEN as u64)?;
        Bare::from_fd(fd)
    }

    /// Maps streams received from the driver.
    ///
    /// # Errors
    ///
    /// If the file is too small or cannot be mapped.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Bare> {
        let file = File::from(fd);
        if file.metadata()?.len() < LEN as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bare streams too small",
            ));
        }
        let map = memmap2::MmapOptions::new().len(LEN).map_raw(&file)?;
        Ok(Bare {
            map,
            fd: file.into(),
        })
    }

    /// The memfd, to pass to the peer.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The write (`0`) or read (`1`) counter of stream `dir`.
    fn counter(&self, dir: Dir, which: usize) -> &AtomicU64 {
        let off = (dir as usize * 2 + which) * 128;
        // SAFETY: `off + 8 <= HEADER <= map.len()`, 8-aligned in a
        // page-aligned mapping that lives as long as `self`; both
        // processes use the word only through atomics, and every bit
        // pattern is a valid `AtomicU64`.
        unsafe { &*self.map.as_mut_ptr().add(off).cast::<AtomicU64>() }
    }

    fn slot_ptr(&self, dir: Dir, count: u64, size: usize) -> *mut u8 {
        let (slot, slots) = geometry(size);
        let off = HEADER + dir as usize * STREAM_BYTES + (count % slots) as usize * slot;
        debug_assert!(off + size <= LEN);
        // SAFETY: `slot * slots <= STREAM_BYTES` (see `geometry`), so the
        // slot lies inside the stream, inside the mapping.
        unsafe { self.map.as_mut_ptr().add(off) }
    }

    fn writer(&self, dir: Dir) -> Ends {
        // Relaxed: our own counter, last written by this process.
        let mine = self.counter(dir, 0).load(Ordering::Relaxed);
        Ends {
            mine,
            cached: self.counter(dir, 1).load(Ordering::Acquire),
        }
    }

    fn reader(&self, dir: Dir) -> Ends {
        let mine = self.counter(dir, 1).load(Ordering::Relaxed);
        Ends {
            mine,
            cached: self.counter(dir, 0).load(Ordering::Acquire),
        }
    }

    /// Writes one message of `src.len()` bytes, waiting for a free slot.
    #[inline]
    fn send(&self, dir: Dir, e: &mut Ends, src: &[u8]) -> io::Result<()> {
        let slots = geometry(src.len()).1;
        if e.mine - e.cached >= slots {
            // Acquire: pairs with the reader's Release store of its count:
            // it is done with the slot we are about to overwrite.
            let rd = self.counter(dir, 1);
            spin(|| {
                e.cached = rd.load(Ordering::Acquire);
                e.mine - e.cached < slots
            })?;
        }
        let dst = self.slot_ptr(dir, e.mine, src.len());
        // SAFETY: the slot is inside the mapping (see `slot_ptr`) and,
        // by the counters, free: the reader has released it and will not
        // read it until our Release store below. `src` is our own memory.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
        e.mine += 1;
        // Release: publishes the slot's bytes; pairs with the reader's
        // Acquire load of the count.
        self.counter(dir, 0).store(e.mine, Ordering::Release);
        Ok(())
    }

    /// Reads the next message of `size` bytes in place.
    #[inline]
    fn recv<R>(
        &self,
        dir: Dir,
        e: &mut Ends,
        size: usize,
        read: impl FnOnce(&[u8]) -> R,
    ) -> io::Result<R> {
        if e.mine == e.cached {
            let wr = self.counter(dir, 0);
            spin(|| {
                // Acquire: pairs with the writer's Release store.
                e.cached = wr.load(Ordering::Acquire);
                e.mine != e.cached
            })?;
        }
        let src = self.slot_ptr(dir, e.mine, size);
        // SAFETY: the slot is inside the mapping and published (count
        // below the writer's, read with Acquire); the writer does not
        // touch it until our Release store below; no `&mut` to it exists
        // in this process. Both ends are this crate's code.
        let r = read(unsafe { std::slice::from_raw_parts(src, size) });
        e.mine += 1;
        // Release: our reads of the slot happen before the writer reuses it.
        self.counter(dir, 1).store(e.mine, Ordering::Release);
        Ok(r)
    }

    /// Writer side of a one-way run: `count` messages of `size` bytes,
    /// stamped `0..count`.
    ///
    /// # Errors
    ///
    /// `TimedOut` if the reader stalls for [`STALL`](crate::STALL).
    pub fn send_n(&self, dir: Dir, size: usize, count: u64) -> io::Result<()> {
        fits(size)?;
        let mut e = self.writer(dir);
        let mut src = pattern(size);
        for seq in 0..count {
            stamp(&mut src, seq);
            self.send(dir, &mut e, &src)?;
        }
        Ok(())
    }

    /// Reader side of a one-way run, as [`ops::receive`](crate::ops::receive).
    ///
    /// # Errors
    ///
    /// A stall, or `InvalidData` for a wrong message.
    pub fn receive(&self, dir: Dir, size: usize, count: u64) -> io::Result<(Duration, u64)> {
        fits(size)?;
        let mut e = self.reader(dir);
        let mut acc = self.recv(dir, &mut e, size, |m| check(m, size, 0))??;
        let start = Instant::now();
        for seq in 1..=count {
            acc ^= self.recv(dir, &mut e, size, |m| check(m, size, seq))??;
        }
        Ok((start.elapsed(), acc))
    }

    /// Peer side of round trips: copies `count` messages of `size` bytes
    /// from the driver's stream back on the other.
    ///
    /// # Errors
    ///
    /// A stall.
    pub fn echo(&self, size: usize, count: u64) -> io::Result<()> {
        fits(size)?;
        let mut rx = self.reader(Dir::ToPeer);
        let mut tx = self.writer(Dir::ToDriver);
        for _ in 0..count {
            self.recv(Dir::ToPeer, &mut rx, size, |m| {
                self.send(Dir::ToDriver, &mut tx, m)
            })??;
        }
        Ok(())
    }

    /// Driver side of round trips, as [`ops::round_trips`](crate::ops::round_trips).
    ///
    /// # Errors
    ///
    /// A stall, or `InvalidData` for a wrong answer.
    pub fn round_trips(
        &self,
        size: usize,
        count: u64,
        mut samples: Option<&mut Vec<u64>>,
    ) -> io::Result<(Duration, u64)> {
        fits(size)?;
        let mut tx = self.writer(Dir::ToPeer);
        let mut rx = self.reader(Dir::ToDriver);
        let mut src = pattern(size);
        let mut acc = 0;
        let start = Instant::now();
        let mut last = start;
        for seq in 0..count {
            stamp(&mut src, seq);
            self.send(Dir::ToPeer, &mut tx, &src)?;
            acc ^= self.recv(Dir::ToDriver, &mut rx, size, |m| check(m, size, seq))??;
            if let Some(s) = samples.as_deref_mut() {
                let now = Instant::now();
                s.push(now.duration_since(last).as_nanos() as u64);
                last = now;
            }
        }
        Ok((start.elapsed(), acc))
    }
}

/// Refuses messages larger than half a stream.
fn fits(size: usize) -> io::Result<()> {
    if size > STREAM_BYTES / 2 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "message larger than half a bare stream",
        ));
    }
    Ok(())
}

/// Slot size (`size` rounded up to a multiple of 8, at least 8: packed
/// like a ring's records, less their headers) and slot count of a stream
/// carrying `size`-byte messages.
fn geometry(size: usize) -> (usize, u64) {
    let slot = size.div_ceil(8).max(1) * 8;
    let slot = slot.min(STREAM_BYTES / 2);
    (slot, (STREAM_BYTES / slot) as u64)
}

/// Spins until `ready`. See [`floor::spin_until`](crate::floor::spin_until).
#[inline]
fn spin(ready: impl FnMut() -> bool) -> io::Result<()> {
    crate::floor::spin_until(ready)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_fits_the_stream() {
        for size in [0, 1, 8, 64, 65, 1024, 65536, STREAM_BYTES / 2] {
            let (slot, slots) = geometry(size);
            assert!(slot >= size && slot % 8 == 0);
            assert!(slot as u64 * slots <= STREAM_BYTES as u64 && slots >= 2);
        }
    }

    #[test]
    fn streams_carry_messages_between_threads() {
        let bare = Bare::create().unwrap();
        std::thread::scope(|s| {
            s.spawn(|| bare.echo(100, 1000).unwrap());
            let (_, _) = bare.round_trips(100, 1000, None).unwrap();
        });
        std::thread::scope(|s| {
            s.spawn(|| bare.send_n(Dir::ToDriver, 4096, 1001).unwrap());
            bare.receive(Dir::ToDriver, 4096, 1000).unwrap();
        });
    }
}
