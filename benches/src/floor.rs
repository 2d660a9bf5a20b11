//! The latency floor: a bare spin ping-pong between two processes over
//! shared memory, with nothing of the ring in it.
//!
//! Two `AtomicU64` counters on separate 128-byte lines of a shared memfd
//! page: the driver stores `n` into `ping` and spins until `pong` reads
//! `n`; the peer spins until `ping` reads `n` and stores it into `pong`.
//! One round trip is two cache-line transfers between the cores and
//! nothing else: no ring can do better.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::memfd::{memfd_create, MFdFlags};

use crate::STALL;

const PING: usize = 0;
const PONG: usize = 128;
const LEN: usize = 4096;

/// The shared page and its fd.
#[derive(Debug)]
pub struct Floor {
    map: memmap2::MmapRaw,
    fd: OwnedFd,
}

impl Floor {
    /// Makes a fresh zeroed page in a memfd (nothing in the filesystem).
    ///
    /// # Errors
    ///
    /// If the memfd cannot be made, sized or mapped.
    pub fn create() -> io::Result<Floor> {
        let fd = memfd_create(c"ringlink-floor", MFdFlags::MFD_CLOEXEC)?;
        File::from(fd.try_clone()?).set_len(LEN as u64)?;
        Floor::from_fd(fd)
    }

    /// Maps a page received from the driver.
    ///
    /// # Errors
    ///
    /// If the file is smaller than a page or cannot be mapped.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Floor> {
        let file = File::from(fd);
        if file.metadata()?.len() < LEN as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "floor page too small",
            ));
        }
        let map = memmap2::MmapOptions::new().len(LEN).map_raw(&file)?;
        Ok(Floor {
            map,
            fd: file.into(),
        })
    }

    /// The memfd, to pass to the peer.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn word(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off + 8 <= LEN && off % 8 == 0);
        // SAFETY: `off + 8 <= LEN == map.len()` and the mapping is
        // page-aligned, so the place is in bounds and 8-aligned; it lives
        // as long as `self.map`, which outlives the returned reference.
        // Both processes touch it only through atomics, and every bit
        // pattern is a valid `AtomicU64`.
        unsafe { &*self.map.as_mut_ptr().add(off).cast::<AtomicU64>() }
    }

    /// Driver side: `count` round trips. Returns the total time; with
    /// `samples`, also appends each round trip's nanoseconds (one clock
    /// read per round trip, as in the ring and socket loops).
    ///
    /// # Errors
    ///
    /// `TimedOut` if the peer does not answer within [`STALL`].
    pub fn drive(&self, count: u64, mut samples: Option<&mut Vec<u64>>) -> io::Result<Duration> {
        let (ping, pong) = (self.word(PING), self.word(PONG));
        // Relaxed: our own last store.
        let mut n = ping.load(Ordering::Relaxed);
        let start = Instant::now();
        let mut last = start;
        for _ in 0..count {
            n += 1;
            // Release/Acquire pair with the peer's loads and stores, as a
            // ring's position hand-over would.
            ping.store(n, Ordering::Release);
            wait_for(pong, n)?;
            if let Some(s) = samples.as_deref_mut() {
                let now = Instant::now();
                s.push(now.duration_since(last).as_nanos() as u64);
                last = now;
            }
        }
        Ok(start.elapsed())
    }

    /// Peer side: answers `count` round trips.
    ///
    /// # Errors
    ///
    /// `TimedOut` if the driver does not ping within [`STALL`].
    pub fn answer(&self, count: u64) -> io::Result<()> {
        let (ping, pong) = (self.word(PING), self.word(PONG));
        let mut n = pong.load(Ordering::Relaxed);
        for _ in 0..count {
            n += 1;
            wait_for(ping, n)?;
            pong.store(n, Ordering::Release);
        }
        Ok(())
    }
}

/// Spins until `word == n`.
#[inline]
fn wait_for(word: &AtomicU64, n: u64) -> io::Result<()> {
    // Acquire: pairs with the other side's Release store of `n`.
    spin_until(|| word.load(Ordering::Acquire) == n)
}

/// Spins until `ready`, with a `spin_loop` hint between checks. A wait
/// that lasts beyond 50 µs (far beyond any answer from a peer running on
/// another CPU) yields the CPU between checks, so that two spinning
/// processes that find themselves on one CPU still progress at the pace
/// of context switches, not of scheduler ticks; after [`STALL`] it gives
/// up. The clock is read only every 256 checks, never on a quick answer.
///
/// # Errors
///
/// `TimedOut` after [`STALL`].
#[inline]
pub fn spin_until(mut ready: impl FnMut() -> bool) -> io::Result<()> {
    let mut rounds = 0u32;
    let mut since: Option<Instant> = None;
    while !ready() {
        std::hint::spin_loop();
        rounds = rounds.wrapping_add(1);
        if rounds % 256 == 0 {
            let waited = since.get_or_insert_with(Instant::now).elapsed();
            if waited > STALL {
                return Err(io::ErrorKind::TimedOut.into());
            }
            if waited > Duration::from_micros(50) {
                std::thread::yield_now();
            }
        }
    }
    Ok(())
}
