//! The throughput floors: bare shared-memory streams between two
//! processes, the least a ring can be.
//!
//! Two kinds, each with two streams (driver → peer and peer → driver) in
//! one shared memfd, for one-way runs and round trips. Neither validates
//! the peer, has a wake-up handshake (so no SeqCst fence) or sleeps; both
//! spin plainly and pack fixed-size slots, 8-byte aligned.
//!
//! - **Counters** ([`Bare::send_n`] and friends): a write counter and a
//!   read counter on their own 128-byte lines, each side caching the
//!   other's, Release stores and Acquire loads. The reader learns of a
//!   message from the write counter, then reads the slot: two cache lines
//!   move per message, as in any ring that publishes a position.
//! - **Headers** ([`Bare::send_n_headed`] and friends): each slot starts
//!   with an 8-byte header word, stored last with Release; the reader
//!   polls the header of its next slot (Acquire) and never reads a write
//!   counter, so a small message moves one line (its slot) to the reader.
//!   Before publishing a slot the writer zeroes the next slot's header, so
//!   the header under the reader is always 0 or one published for that
//!   slot, never an old one. The read counter is still stored per message,
//!   on a line the writer reads only when its cached copy says the stream
//!   is full. This is the publication `ringbuf` uses since layout
//!   version 2, without its validation and wake-ups.
//!
//! Between them and the [`floor`](crate::floor) ping-pong: the floor moves
//! one cache line per hop and carries no data.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::memfd::{memfd_create, MFdFlags};

use crate::payload::{check, pattern, stamp};

/// Data bytes of each stream.
pub const STREAM_BYTES: usize = 1 << 20;
/// Data bytes of each header stream: a page more than a counter stream,
/// so that the largest message (half a stream) still gets two slots with
/// their headers.
const HEADED_BYTES: usize = STREAM_BYTES + 4096;
const HEADER: usize = 4096;
/// Two counter streams, then two header streams.
const LEN: usize = HEADER + 2 * STREAM_BYTES + 2 * HEADED_BYTES;
/// A header stream's slot header: the payload length and a tag, never 0.
const TAG: u64 = 0x5244_0001 << 32;

/// Which of the two streams (of either kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Driver → peer (requests).
    ToPeer = 0,
    /// Peer → driver (one-way data, responses).
    ToDriver = 1,
}

/// The shared mapping of the streams.
#[derive(Debug)]
pub struct Bare {
    map: memmap2::MmapRaw,
    fd: OwnedFd,
}

/// One side of one counter stream: its own count and the peer's, cached.
#[derive(Debug, Clone, Copy, Default)]
struct Ends {
    mine: u64,
    cached: u64,
}

/// One side of one stream, of either kind: what the loops below need.
trait Side {
    /// Writes one message of `src.len()` bytes, waiting for room.
    fn send(&mut self, bare: &Bare, src: &[u8]) -> io::Result<()>;
    /// Waits for the next message of `size` bytes and reads it in place.
    fn recv<R>(&mut self, bare: &Bare, size: usize, read: impl FnOnce(&[u8]) -> R)
        -> io::Result<R>;
}

/// A counter stream's side.
#[derive(Debug, Clone, Copy)]
struct Counted {
    dir: Dir,
    ends: Ends,
}

/// A header stream's side: its own count, and (writer) the reader's
/// count as last read.
#[derive(Debug, Clone, Copy)]
struct Headed {
    dir: Dir,
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

    /// The 8-byte word at `off` of the mapping.
    fn word(&self, off: usize) -> &AtomicU64 {
        assert!(off % 8 == 0 && off + 8 <= LEN);
        // SAFETY: `off + 8 <= LEN == map.len()`, 8-aligned in a
        // page-aligned mapping that lives as long as `self`; both
        // processes use the word only through atomics (header words, and
        // counters), and every bit pattern is a valid `AtomicU64`.
        unsafe { &*self.map.as_mut_ptr().add(off).cast::<AtomicU64>() }
    }

    /// The write (`0`) or read (`1`) counter of counter stream `dir`.
    fn counter(&self, dir: Dir, which: usize) -> &AtomicU64 {
        self.word((dir as usize * 2 + which) * 128)
    }

    /// The read counter of header stream `dir`.
    fn read_count(&self, dir: Dir) -> &AtomicU64 {
        self.word((4 + dir as usize) * 128)
    }

    /// Where the data of a stream starts: counter streams first, then
    /// header streams.
    fn base(dir: Dir, headed: bool) -> usize {
        if headed {
            HEADER + 2 * STREAM_BYTES + dir as usize * HEADED_BYTES
        } else {
            HEADER + dir as usize * STREAM_BYTES
        }
    }

    fn slot_ptr(&self, dir: Dir, count: u64, size: usize) -> *mut u8 {
        let (slot, slots) = geometry(size);
        let off = Bare::base(dir, false) + (count % slots) as usize * slot;
        debug_assert!(off + size <= LEN);
        // SAFETY: `slot * slots <= STREAM_BYTES` (see `geometry`), so the
        // slot lies inside the stream, inside the mapping.
        unsafe { self.map.as_mut_ptr().add(off) }
    }

    fn writer(&self, dir: Dir) -> Counted {
        // Relaxed: our own counter, last written by this process.
        let mine = self.counter(dir, 0).load(Ordering::Relaxed);
        Counted {
            dir,
            ends: Ends {
                mine,
                cached: self.counter(dir, 1).load(Ordering::Acquire),
            },
        }
    }

    fn reader(&self, dir: Dir) -> Counted {
        let mine = self.counter(dir, 1).load(Ordering::Relaxed);
        Counted {
            dir,
            ends: Ends {
                mine,
                cached: self.counter(dir, 0).load(Ordering::Acquire),
            },
        }
    }

    /// Zeroes both header streams and their read counters, so that the
    /// next run starts at slot 0 of a clean stream (slot sizes change
    /// between runs, and a header must never find an old payload where
    /// it looks). Call only while the peer runs no command: the driver
    /// does, before it sends one.
    pub fn reset_headed(&self) {
        let start = Bare::base(Dir::ToPeer, true);
        // SAFETY: the span `[start, start + 2 * HEADED_BYTES)` ends at
        // `LEN`, inside the mapping. The peer touches these bytes only
        // while it runs a header-stream command, which it reads from the
        // control socket after this returns; nothing else in this process
        // holds a reference into them.
        unsafe { std::ptr::write_bytes(self.map.as_mut_ptr().add(start), 0, 2 * HEADED_BYTES) };
        for dir in [Dir::ToPeer, Dir::ToDriver] {
            self.read_count(dir).store(0, Ordering::Release);
        }
    }

    /// Writer side of a one-way run: `count` messages of `size` bytes,
    /// stamped `0..count`.
    ///
    /// # Errors
    ///
    /// `TimedOut` if the reader stalls for [`STALL`](crate::STALL).
    pub fn send_n(&self, dir: Dir, size: usize, count: u64) -> io::Result<()> {
        fits(size)?;
        send_loop(self, &mut self.writer(dir), size, count)
    }

    /// Reader side of a one-way run, as [`ops::receive`](crate::ops::receive).
    ///
    /// # Errors
    ///
    /// A stall, or `InvalidData` for a wrong message.
    pub fn receive(&self, dir: Dir, size: usize, count: u64) -> io::Result<(Duration, u64)> {
        fits(size)?;
        receive_loop(self, &mut self.reader(dir), size, count)
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
        echo_loop(self, &mut rx, &mut tx, size, count)
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
        samples: Option<&mut Vec<u64>>,
    ) -> io::Result<(Duration, u64)> {
        fits(size)?;
        let mut tx = self.writer(Dir::ToPeer);
        let mut rx = self.reader(Dir::ToDriver);
        round_trip_loop(self, &mut tx, &mut rx, size, count, samples)
    }

    /// [`send_n`](Self::send_n) over the header stream `dir`, from its
    /// start ([`reset_headed`](Self::reset_headed) first).
    ///
    /// # Errors
    ///
    /// As `send_n`.
    pub fn send_n_headed(&self, dir: Dir, size: usize, count: u64) -> io::Result<()> {
        fits(size)?;
        send_loop(self, &mut Headed::new(dir), size, count)
    }

    /// [`receive`](Self::receive) over the header stream `dir`.
    ///
    /// # Errors
    ///
    /// As `receive`, and `InvalidData` for a wrong header.
    pub fn receive_headed(&self, dir: Dir, size: usize, count: u64) -> io::Result<(Duration, u64)> {
        fits(size)?;
        receive_loop(self, &mut Headed::new(dir), size, count)
    }

    /// [`echo`](Self::echo) over the header streams.
    ///
    /// # Errors
    ///
    /// As `echo`.
    pub fn echo_headed(&self, size: usize, count: u64) -> io::Result<()> {
        fits(size)?;
        let mut rx = Headed::new(Dir::ToPeer);
        let mut tx = Headed::new(Dir::ToDriver);
        echo_loop(self, &mut rx, &mut tx, size, count)
    }

    /// [`round_trips`](Self::round_trips) over the header streams.
    ///
    /// # Errors
    ///
    /// As `round_trips`.
    pub fn round_trips_headed(
        &self,
        size: usize,
        count: u64,
        samples: Option<&mut Vec<u64>>,
    ) -> io::Result<(Duration, u64)> {
        fits(size)?;
        let mut tx = Headed::new(Dir::ToPeer);
        let mut rx = Headed::new(Dir::ToDriver);
        round_trip_loop(self, &mut tx, &mut rx, size, count, samples)
    }
}

impl Side for Counted {
    #[inline]
    fn send(&mut self, bare: &Bare, src: &[u8]) -> io::Result<()> {
        let (dir, e) = (self.dir, &mut self.ends);
        let slots = geometry(src.len()).1;
        if e.mine - e.cached >= slots {
            // Acquire: pairs with the reader's Release store of its count:
            // it is done with the slot we are about to overwrite.
            let rd = bare.counter(dir, 1);
            spin(|| {
                e.cached = rd.load(Ordering::Acquire);
                e.mine - e.cached < slots
            })?;
        }
        let dst = bare.slot_ptr(dir, e.mine, src.len());
        // SAFETY: the slot is inside the mapping (see `slot_ptr`) and,
        // by the counters, free: the reader has released it and will not
        // read it until our Release store below. `src` is our own memory.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
        e.mine += 1;
        // Release: publishes the slot's bytes; pairs with the reader's
        // Acquire load of the count.
        bare.counter(dir, 0).store(e.mine, Ordering::Release);
        Ok(())
    }

    #[inline]
    fn recv<R>(
        &mut self,
        bare: &Bare,
        size: usize,
        read: impl FnOnce(&[u8]) -> R,
    ) -> io::Result<R> {
        let (dir, e) = (self.dir, &mut self.ends);
        if e.mine == e.cached {
            let wr = bare.counter(dir, 0);
            spin(|| {
                // Acquire: pairs with the writer's Release store.
                e.cached = wr.load(Ordering::Acquire);
                e.mine != e.cached
            })?;
        }
        let src = bare.slot_ptr(dir, e.mine, size);
        // SAFETY: the slot is inside the mapping and published (count
        // below the writer's, read with Acquire); the writer does not
        // touch it until our Release store below; no `&mut` to it exists
        // in this process. Both ends are this crate's code.
        let r = read(unsafe { std::slice::from_raw_parts(src, size) });
        e.mine += 1;
        // Release: our reads of the slot happen before the writer reuses it.
        bare.counter(dir, 1).store(e.mine, Ordering::Release);
        Ok(r)
    }
}

impl Headed {
    /// A side at the start of a freshly reset stream.
    fn new(dir: Dir) -> Headed {
        Headed {
            dir,
            mine: 0,
            cached: 0,
        }
    }

    /// The header word of slot `count`, and its payload's place.
    fn slot(bare: &Bare, dir: Dir, count: u64, size: usize) -> (&AtomicU64, *mut u8) {
        let (slot, slots) = headed_geometry(size);
        let off = Bare::base(dir, true) + (count % slots) as usize * slot;
        debug_assert!(off + 8 + size <= LEN);
        // SAFETY: `slot * slots <= HEADED_BYTES` (see `headed_geometry`),
        // so the slot, header and payload, lies inside the stream.
        let payload = unsafe { bare.map.as_mut_ptr().add(off + 8) };
        (bare.word(off), payload)
    }
}

impl Side for Headed {
    #[inline]
    fn send(&mut self, bare: &Bare, src: &[u8]) -> io::Result<()> {
        let dir = self.dir;
        let slots = headed_geometry(src.len()).1;
        // Our slot and the next one's header must be free: the reader is
        // done with both.
        if self.mine - self.cached >= slots - 1 {
            let rd = bare.read_count(dir);
            let (mine, cached) = (self.mine, &mut self.cached);
            spin(|| {
                // Acquire: pairs with the reader's Release store of its
                // count: it is done with the slots we are about to write.
                *cached = rd.load(Ordering::Acquire);
                mine - *cached < slots - 1
            })?;
        }
        let (header, dst) = Headed::slot(bare, dir, self.mine, src.len());
        // SAFETY: the payload lies inside the mapping (see `slot`) and is
        // free by the read count; the reader does not read it before it
        // sees the header stored below. `src` is our own memory.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
        let (next, _) = Headed::slot(bare, dir, self.mine + 1, src.len());
        // Relaxed: ordered before the reader's look at it by the Release
        // below (the reader reads it after it acquired our header).
        next.store(0, Ordering::Relaxed);
        // Release: publishes the payload and the zeroed next header;
        // pairs with the reader's Acquire load of this header.
        header.store(TAG | src.len() as u64, Ordering::Release);
        self.mine += 1;
        Ok(())
    }

    #[inline]
    fn recv<R>(
        &mut self,
        bare: &Bare,
        size: usize,
        read: impl FnOnce(&[u8]) -> R,
    ) -> io::Result<R> {
        let (header, src) = Headed::slot(bare, self.dir, self.mine, size);
        let mut word = 0;
        // Acquire: pairs with the writer's Release store of the header.
        spin(|| {
            word = header.load(Ordering::Acquire);
            word != 0
        })?;
        if word != TAG | size as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("header stream: header {word:#x} for a {size}-byte message"),
            ));
        }
        // SAFETY: the payload is inside the mapping and published (its
        // header read with Acquire); the writer does not touch it until
        // our Release store below; no `&mut` to it exists in this
        // process. Both ends are this crate's code.
        let r = read(unsafe { std::slice::from_raw_parts(src, size) });
        self.mine += 1;
        // Release: our reads of the slot happen before the writer reuses
        // it. Stored per message: the line stays in our cache until the
        // writer, finding its cached copy too low, reads it.
        bare.read_count(self.dir)
            .store(self.mine, Ordering::Release);
        Ok(r)
    }
}

fn send_loop(bare: &Bare, tx: &mut impl Side, size: usize, count: u64) -> io::Result<()> {
    let mut src = pattern(size);
    for seq in 0..count {
        stamp(&mut src, seq);
        tx.send(bare, &src)?;
    }
    Ok(())
}

fn receive_loop(
    bare: &Bare,
    rx: &mut impl Side,
    size: usize,
    count: u64,
) -> io::Result<(Duration, u64)> {
    let mut acc = rx.recv(bare, size, |m| check(m, size, 0))??;
    let start = Instant::now();
    for seq in 1..=count {
        acc ^= rx.recv(bare, size, |m| check(m, size, seq))??;
    }
    Ok((start.elapsed(), acc))
}

fn echo_loop(
    bare: &Bare,
    rx: &mut impl Side,
    tx: &mut impl Side,
    size: usize,
    count: u64,
) -> io::Result<()> {
    for _ in 0..count {
        rx.recv(bare, size, |m| tx.send(bare, m))??;
    }
    Ok(())
}

fn round_trip_loop(
    bare: &Bare,
    tx: &mut impl Side,
    rx: &mut impl Side,
    size: usize,
    count: u64,
    mut samples: Option<&mut Vec<u64>>,
) -> io::Result<(Duration, u64)> {
    let mut src = pattern(size);
    let mut acc = 0;
    let start = Instant::now();
    let mut last = start;
    for seq in 0..count {
        stamp(&mut src, seq);
        tx.send(bare, &src)?;
        acc ^= rx.recv(bare, size, |m| check(m, size, seq))??;
        if let Some(s) = samples.as_deref_mut() {
            let now = Instant::now();
            s.push(now.duration_since(last).as_nanos() as u64);
            last = now;
        }
    }
    Ok((start.elapsed(), acc))
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
/// like a ring's records, less their headers) and slot count of a counter
/// stream carrying `size`-byte messages.
fn geometry(size: usize) -> (usize, u64) {
    let slot = size.div_ceil(8).max(1) * 8;
    let slot = slot.min(STREAM_BYTES / 2);
    (slot, (STREAM_BYTES / slot) as u64)
}

/// Slot size (an 8-byte header, then `size` rounded up to a multiple of
/// 8: a ring's record) and slot count of a header stream (at least two
/// for any size [`fits`] lets through).
fn headed_geometry(size: usize) -> (usize, u64) {
    let slot = 8 + size.div_ceil(8) * 8;
    (slot, (HEADED_BYTES / slot) as u64)
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
            let (slot, slots) = headed_geometry(size);
            assert!(slot >= size + 8 && slot % 8 == 0);
            // The writer keeps one slot's header ahead: two are needed.
            assert!(slot as u64 * slots <= HEADED_BYTES as u64 && slots >= 2);
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

    #[test]
    fn header_streams_carry_messages_between_threads_across_sizes() {
        let bare = Bare::create().unwrap();
        // Several laps of the stream each, sizes changing between runs
        // as ring-bench's do: the reset keeps old payloads from passing
        // for headers.
        for size in [100, 8, 4096, 0, 64] {
            bare.reset_headed();
            std::thread::scope(|s| {
                s.spawn(|| bare.echo_headed(size, 3000).unwrap());
                let (_, _) = bare.round_trips_headed(size, 3000, None).unwrap();
            });
            bare.reset_headed();
            let n = 3 * headed_geometry(size).1;
            std::thread::scope(|s| {
                s.spawn(|| bare.send_n_headed(Dir::ToDriver, size, n + 1).unwrap());
                bare.receive_headed(Dir::ToDriver, size, n).unwrap();
            });
        }
    }
}
