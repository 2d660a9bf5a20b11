//! libqb's shared-memory ring (libqb 2.x `ringbuffer.c`), for talking to
//! libqb peers: a header file and a data file, the data mapped twice back
//! to back; chunks `[u32 size][u32 magic][payload, padded to 4]`
//! addressed in 32-bit words; a process-shared glibc semaphore in the
//! header counting the chunks not yet read (`docs/LIBQB.md`).
//!
//! Unlike [`Ring`](crate::Ring), a libqb ring cannot be sealed: both files
//! stay writable, and resizable, by the peer. Both are mapped through
//! [`GuardedMap`], so a peer that truncates them marks the ring
//! [`truncated`](QbRing::truncated) instead of killing this process; and
//! every value read from them (positions, sizes, magics, the semaphore)
//! is bounded before use. This side keeps its own copy of the position
//! it owns (the producer's write position, the consumer's read
//! position) and only publishes it.

use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::guard::{page_size, GuardedMap};

/// Header layout (`struct qb_ringbuffer_shared_s`).
pub mod layout {
    /// Write position, in words.
    pub const WRITE_PT: usize = 0;
    /// Read position, in words.
    pub const READ_PT: usize = 4;
    /// Data size, in words.
    pub const WORD_SIZE: usize = 8;
    /// The header file's absolute path (4096 bytes).
    pub const HDR_PATH: usize = 12;
    /// The data file's absolute path (4096 bytes).
    pub const DATA_PATH: usize = 4108;
    /// Processes that opened the ring: 1 once made, 2 once the client
    /// opened it (a libqb client sends only while it reads 2).
    pub const REF_COUNT: usize = 8204;
    /// The glibc `sem_t` (32 bytes): `u64` value (low half) and waiter
    /// count (high half), then the `private` word.
    pub const SEM: usize = 8208;
    /// The semaphore's `private` word: 128 for a process-shared one.
    pub const SEM_PRIVATE: usize = 8216;
    /// The flow-control level (request ring).
    pub const FC: usize = 8240;
    /// Size of the header as mapped: what every libqb version's client
    /// leaves the file at (it shrinks the response and event headers to
    /// this; the request header file is 4 bytes longer).
    pub const MAPPED: usize = 8248;
    /// Size of a header file as a libqb server makes it.
    pub const FILE: usize = 8252;
    /// Size of each path field.
    pub const PATH: usize = 4096;
}

/// A committed chunk.
pub const MAGIC: u32 = 0xA1A1_A1A1;
/// A chunk being written.
pub const MAGIC_ALLOC: u32 = 0xA110_CED0;
/// A chunk read.
pub const MAGIC_DEAD: u32 = 0xD0D0_D0D0;
/// Room a write needs beyond its payload (two header words and one of
/// alignment).
pub const MARGIN: usize = 12;
/// glibc's `private` word of a process-shared semaphore.
const SEM_SHARED: u32 = 128;

/// Most attempts of a compare-and-swap on a word the peer also writes:
/// a peer that stores to it without pause must not hold this side in the
/// loop (on hardware where one side can keep failing the other's). The
/// strong compare-and-swap fails only when the word changed, so an
/// honest peer's reads never use up the attempts.
const CAS_TRIES: u32 = 1024;

pub use ringlink_common::QbCorruption;

/// Why a libqb ring was not opened.
#[derive(Debug)]
#[non_exhaustive]
pub enum QbOpenError {
    /// A file is not what the connection said: its size, or the header's
    /// data size, disagrees with the negotiated message size.
    Size,
    /// The ring's `ref_count` is not 1: it is not a fresh ring waiting
    /// for its client (another process holds it, or none made it).
    InUse(i32),
    /// A system call failed.
    Io(io::Error),
}

impl std::fmt::Display for QbOpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QbOpenError::Size => f.write_str("libqb ring size disagrees with the handshake"),
            QbOpenError::InUse(n) => write!(
                f,
                "libqb ring's ref_count is {n}, not 1: not a fresh ring for this client"
            ),
            QbOpenError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for QbOpenError {}

impl From<io::Error> for QbOpenError {
    fn from(e: io::Error) -> QbOpenError {
        QbOpenError::Io(e)
    }
}

/// Sizes a fresh file made for a peer to map (a ring's header or data
/// file, the socket transport's control file) to `len` bytes, every
/// block allocated now, as libqb's own `qb_sys_mmap_file_open` does with
/// `posix_fallocate`. Left sparse, each page would get its memory at its
/// first touch; with `/dev/shm` full (which any local user can do, a
/// client its own ring files included), that touch raises `SIGBUS`, and
/// the connection of whichever client's ring it was fails, blamed for a
/// truncation it did not make.
///
/// # Errors
///
/// `ENOSPC` when the file system has no room for it, or another failed
/// system call.
pub fn allocate(file: &File, len: u64) -> io::Result<()> {
    crate::sys::allocate(file.as_fd(), len)
}

/// The data file's size for messages of up to `max_msg_size` bytes.
pub fn data_size(max_msg_size: u32) -> usize {
    ringlink_common::qb::ring_data_size(max_msg_size, page_size())
}

/// A libqb ring, mapped; either side of it.
#[derive(Debug)]
pub struct QbRing {
    header: GuardedMap,
    data: GuardedMap,
    /// Data words, validated at open and never re-read.
    words: u32,
    /// This side's own position (the write position for a producer, the
    /// read position for a consumer), published to the peer.
    own: std::cell::Cell<u32>,
}

impl QbRing {
    /// Makes a new ring in two fresh, empty files (the server's side):
    /// sizes them for messages of `max_msg_size`, their memory allocated
    /// ([`allocate`]), and writes the header as
    /// libqb's server does (`hdr_path` and `data_path`: the files'
    /// absolute paths, which a libqb client opens the data file by).
    ///
    /// # Errors
    ///
    /// A path longer than 4095 bytes, or a failed system call.
    pub fn create(
        header: &File,
        data: &File,
        hdr_path: &[u8],
        data_path: &[u8],
        max_msg_size: u32,
    ) -> io::Result<QbRing> {
        if hdr_path.len() >= layout::PATH || data_path.len() >= layout::PATH {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        let size = data_size(max_msg_size);
        allocate(header, layout::FILE as u64)?;
        allocate(data, size as u64)?;
        let hmap = GuardedMap::map(header.as_fd(), layout::MAPPED)?;
        let dmap = GuardedMap::map_circular(data.as_fd(), size)?;
        let words = (size / 4) as u32;
        hmap.u32(layout::WORD_SIZE).store(words, Ordering::Relaxed);
        hmap.write(layout::HDR_PATH, hdr_path);
        hmap.write(layout::DATA_PATH, data_path);
        hmap.u64(layout::SEM).store(0, Ordering::Relaxed);
        hmap.u32(layout::SEM_PRIVATE)
            .store(SEM_SHARED, Ordering::Relaxed);
        // Last: the ring exists.
        hmap.u32(layout::REF_COUNT).store(1, Ordering::Release);
        Ok(QbRing {
            header: hmap,
            data: dmap,
            words,
            own: std::cell::Cell::new(0),
        })
    }

    /// Opens a ring a libqb server made (the client's side): checks that
    /// the files are as large as `max_msg_size` makes them and that the
    /// header agrees, maps them (never resizing them, as libqb's client
    /// does), and counts this process in `ref_count`, which must be 1, as
    /// the server left it (libqb's client adds one whatever it finds; a
    /// ring another client holds, of this user's connection to another
    /// server, would have let a hostile server point this client at it,
    /// and at 3 its rightful client's sends fail). The caller opened
    /// the files, by names it checked (libqb's client opens the data file
    /// by the path written in the header; ringlink does not).
    ///
    /// # Errors
    ///
    /// [`QbOpenError::Size`], [`QbOpenError::InUse`], [`QbOpenError::Io`].
    pub fn open(header: &File, data: &File, max_msg_size: u32) -> Result<QbRing, QbOpenError> {
        let size = data_size(max_msg_size);
        if header.metadata()?.len() < layout::MAPPED as u64 || data.metadata()?.len() != size as u64
        {
            return Err(QbOpenError::Size);
        }
        let hmap = GuardedMap::map(header.as_fd(), layout::MAPPED)?;
        let dmap = GuardedMap::map_circular(data.as_fd(), size)?;
        let words = (size / 4) as u32;
        if hmap.u32(layout::WORD_SIZE).load(Ordering::Acquire) != words || hmap.truncated() {
            return Err(QbOpenError::Size);
        }
        if let Err(n) =
            hmap.u32(layout::REF_COUNT)
                .compare_exchange(1, 2, Ordering::AcqRel, Ordering::Acquire)
        {
            return Err(QbOpenError::InUse(n as i32));
        }
        Ok(QbRing {
            header: hmap,
            data: dmap,
            words,
            own: std::cell::Cell::new(0),
        })
    }

    /// Whether a file was shrunk under the mapping: what was read since
    /// may be zeros. The peer broke the protocol.
    pub fn truncated(&self) -> bool {
        self.header.truncated() || self.data.truncated()
    }

    /// The largest payload a chunk can have (the data region less the
    /// margin).
    pub fn max_chunk(&self) -> usize {
        self.words as usize * 4 - MARGIN
    }

    /// The flow-control level (request ring: written by the server, read
    /// by the client).
    pub fn fc(&self) -> i32 {
        self.header.u32(layout::FC).load(Ordering::Acquire) as i32
    }

    /// Publishes the flow-control level.
    pub fn set_fc(&self, level: i32) {
        self.header
            .u32(layout::FC)
            .store(level as u32, Ordering::Release);
    }

    /// The processes that opened the ring (a libqb client sends only
    /// while the request ring's is 2).
    pub fn ref_count(&self) -> i32 {
        self.header.u32(layout::REF_COUNT).load(Ordering::Acquire) as i32
    }

    /// Stores `ref_count` (a server tearing down sets it to 0, so that a
    /// libqb client sees the connection end at its next send).
    pub fn set_ref_count(&self, n: i32) {
        self.header
            .u32(layout::REF_COUNT)
            .store(n as u32, Ordering::Release);
    }

    /// Leaves the ring: one less in `ref_count`.
    pub fn leave(&self) {
        self.header
            .u32(layout::REF_COUNT)
            .fetch_sub(1, Ordering::AcqRel);
    }

    /// The semaphore's value: chunks committed and not yet read (or not
    /// yet counted).
    pub fn queued(&self) -> u32 {
        self.header.u64(layout::SEM).load(Ordering::Acquire) as u32
    }

    fn word(&self, index: u32) -> &AtomicU32 {
        self.data.u32(index as usize * 4)
    }

    /// The word after `w` chunks of `size` bytes: `w + 2 + ceil(size/4)`,
    /// wrapped.
    fn step(&self, w: u32, size: usize) -> u32 {
        ((w as usize + 2 + size.div_ceil(4)) % self.words as usize) as u32
    }

    /// Posts the semaphore: one more chunk (glibc's `sem_post`).
    ///
    /// # Errors
    ///
    /// [`QbCorruption::Semaphore`] if it would overflow, or if the word
    /// changed under every one of [`CAS_TRIES`] attempts (a peer storing
    /// to it without pause: an honest one's own posts and waits are
    /// single atomic operations, over long before then).
    fn post(&self) -> Result<(), QbCorruption> {
        let sem = self.header.u64(layout::SEM);
        let mut d = sem.load(Ordering::Relaxed);
        let mut tries = 0;
        loop {
            if d as u32 >= i32::MAX as u32 || tries == CAS_TRIES {
                return Err(QbCorruption::Semaphore);
            }
            tries += 1;
            match sem.compare_exchange(d, d + 1, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => d = now,
            }
        }
        if d >> 32 > 0 {
            // Waiters registered: wake one (on the value's word).
            self.header.futex_wake(layout::SEM, 1);
        }
        Ok(())
    }

    /// Takes a token from the semaphore if there is one (glibc's
    /// `sem_trywait`). A word that changed under each of [`CAS_TRIES`]
    /// attempts is taken as no token now: the caller looks again later,
    /// never spins here.
    fn try_take(&self) -> bool {
        let sem = self.header.u64(layout::SEM);
        let mut d = sem.load(Ordering::Relaxed);
        for _ in 0..CAS_TRIES {
            if d as u32 == 0 {
                return false;
            }
            match sem.compare_exchange(d, d - 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => d = now,
            }
        }
        false
    }

    /// Waits until a chunk is counted or `deadline` passes, registered
    /// as a waiter so that the producer's post wakes this process
    /// (glibc's `sem_timedwait`, without taking the token). Returns
    /// whether one is counted.
    pub fn wait_queued(&self, deadline: Option<Instant>) -> bool {
        if self.queued() > 0 {
            return true;
        }
        let sem = self.header.u64(layout::SEM);
        sem.fetch_add(1 << 32, Ordering::AcqRel);
        let counted = loop {
            if self.queued() > 0 || self.truncated() {
                break self.queued() > 0;
            }
            let left = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => break false,
                },
            };
            // Woken, timed out or interrupted: looked at again.
            self.header.futex_wait(layout::SEM, 0, left);
        };
        sem.fetch_sub(1 << 32, Ordering::AcqRel);
        counted
    }

    /// Bytes in use (chunks written and not yet read, with their
    /// headers), by libqb's reckoning; 0 if a position is out of bounds.
    pub fn used(&self) -> usize {
        self.free_bytes()
            .map_or(0, |free| (self.words as i64 * 4 - free).max(0) as usize)
    }

    /// Whether a chunk of `len` bytes would fit now.
    ///
    /// # Errors
    ///
    /// [`QbCorruption::Position`] if the consumer's position is out of
    /// bounds: it never will (a wait for room would wait for ever).
    pub fn has_room(&self, len: usize) -> Result<bool, QbCorruption> {
        let free = self.free_bytes().ok_or(QbCorruption::Position)?;
        Ok(free >= (len + MARGIN) as i64)
    }

    /// Free bytes, by libqb's reckoning; `None` if the consumer's
    /// position is out of bounds.
    fn free_bytes(&self) -> Option<i64> {
        let w = self.own.get();
        let r = self.header.u32(layout::READ_PT).load(Ordering::Acquire);
        if r >= self.words {
            return None;
        }
        let ws = self.words as i64;
        let words = match (w as i64).cmp(&(r as i64)) {
            std::cmp::Ordering::Greater => r as i64 - w as i64 + ws - 1,
            std::cmp::Ordering::Less => r as i64 - w as i64 - 1,
            std::cmp::Ordering::Equal if self.queued() > 0 => 0,
            std::cmp::Ordering::Equal => ws,
        };
        Some(words * 4)
    }

    /// Writes one chunk made of `parts` (a whole libqb message, header
    /// included) and posts it. `Ok(false)` if there is no room.
    ///
    /// # Errors
    ///
    /// A corrupt ring: the consumer's position is out of bounds, or the
    /// semaphore overflowed.
    pub fn try_write(&self, parts: &[IoSlice<'_>]) -> Result<bool, QbCorruption> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > self.max_chunk() {
            return Ok(false);
        }
        let free = self.free_bytes().ok_or(QbCorruption::Position)?;
        if free < (len + MARGIN) as i64 {
            return Ok(false);
        }
        let w = self.own.get();
        let magic = (w + 1) % self.words;
        self.word(w).store(0, Ordering::Relaxed);
        self.word(magic).store(MAGIC_ALLOC, Ordering::Release);
        // The payload is contiguous thanks to the double mapping.
        let mut at = ((w + 2) % self.words) as usize * 4;
        for p in parts {
            self.data.write(at, p);
            at += p.len();
        }
        self.word(w).store(len as u32, Ordering::Relaxed);
        let next = self.step(w, len);
        self.own.set(next);
        self.header
            .u32(layout::WRITE_PT)
            .store(next, Ordering::Release);
        self.word(magic).store(MAGIC, Ordering::Release);
        self.post()?;
        if self.truncated() {
            return Err(QbCorruption::Truncated);
        }
        Ok(true)
    }

    /// The next chunk, viewed in place, if one is counted: its token is
    /// taken (and given back if the view is dropped unreleased).
    ///
    /// # Errors
    ///
    /// A corrupt ring: a counted chunk not committed, or a size running
    /// past the data region.
    pub fn try_read(&self) -> Result<Option<QbChunk<'_>>, QbCorruption> {
        if self.truncated() {
            return Err(QbCorruption::Truncated);
        }
        if !self.try_take() {
            return Ok(None);
        }
        let r = self.own.get();
        let fail = |c| {
            // The token back: the count stays what is queued.
            let _ = self.post();
            // Zeros where the file was: say why.
            Err(if self.truncated() {
                QbCorruption::Truncated
            } else {
                c
            })
        };
        if self.word((r + 1) % self.words).load(Ordering::Acquire) != MAGIC {
            return fail(QbCorruption::Magic);
        }
        let size = self.word(r).load(Ordering::Relaxed) as usize;
        if size > self.max_chunk() {
            return fail(QbCorruption::Size);
        }
        Ok(Some(QbChunk {
            ring: self,
            at: r,
            len: size,
            done: false,
        }))
    }

    /// Whether a chunk is counted (without taking it).
    pub fn pending(&self) -> bool {
        self.queued() > 0
    }
}

/// A chunk in a libqb ring, viewed in place until
/// [`release`](QbChunk::release).
#[derive(Debug)]
pub struct QbChunk<'a> {
    ring: &'a QbRing,
    at: u32,
    len: usize,
    done: bool,
}

impl QbChunk<'_> {
    /// Copies the chunk's bytes out (the peer can write them while they
    /// are read: validate the copy).
    pub fn copy_to(&self, out: &mut Vec<u8>) {
        out.resize(self.len, 0);
        let at = ((self.at + 2) % self.ring.words) as usize * 4;
        self.ring.data.read(at, out);
    }

    /// The chunk's length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the chunk is empty (a libqb client's way of leaving).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Done with it: the chunk is marked read and its room given back.
    pub fn release(mut self) {
        let r = self.ring;
        r.word(self.at).store(0, Ordering::Relaxed);
        r.word((self.at + 1) % r.words)
            .store(MAGIC_DEAD, Ordering::Release);
        let next = r.step(self.at, self.len);
        r.own.set(next);
        r.header.u32(layout::READ_PT).store(next, Ordering::Release);
        self.done = true;
    }
}

impl Drop for QbChunk<'_> {
    fn drop(&mut self) {
        if !self.done {
            // Not consumed: its token goes back.
            let _ = self.ring.post();
        }
    }
}

/// How long [`QbRing::wait_queued`]'s callers should wait at most before
/// looking at the peer's liveness: a libqb server wakes a waiting client
/// only through the semaphore, and a dead one never will.
pub const LIVENESS_SLICE: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> (File, File) {
        let h = File::from(crate::sys::memfd_create(c"qb-h").expect("memfd"));
        let d = File::from(crate::sys::memfd_create(c"qb-d").expect("memfd"));
        (h, d)
    }

    /// Rings are made with their memory allocated: no page of theirs can
    /// fault for want of room in a full tmpfs.
    #[test]
    fn rings_are_made_with_their_memory_allocated() {
        use std::os::unix::fs::MetadataExt;
        let (h, d) = files();
        let _ring = QbRing::create(&h, &d, b"/x-header", b"/x-data", 1 << 20).expect("create");
        for (f, len) in [(&h, layout::FILE), (&d, data_size(1 << 20))] {
            let m = f.metadata().expect("metadata");
            assert_eq!(m.len(), len as u64);
            assert!(
                m.blocks() * 512 >= len as u64,
                "{} of {len} bytes allocated",
                m.blocks() * 512
            );
        }
    }

    /// A client takes only a fresh ring (`ref_count` 1), and only once.
    #[test]
    fn a_ring_already_held_is_refused() {
        let (h, d) = files();
        let server = QbRing::create(&h, &d, b"/x-header", b"/x-data", 12_328).expect("create");
        let client = QbRing::open(&h, &d, 12_328).expect("open");
        assert!(matches!(
            QbRing::open(&h, &d, 12_328),
            Err(QbOpenError::InUse(2))
        ));
        assert_eq!(server.ref_count(), 2, "the refused open counted nothing");
        drop(client);
        server.set_ref_count(0);
        assert!(matches!(
            QbRing::open(&h, &d, 12_328),
            Err(QbOpenError::InUse(0))
        ));
    }

    #[test]
    fn chunks_go_round_many_times_and_the_count_follows() {
        let (h, d) = files();
        let server = QbRing::create(&h, &d, b"/x-header", b"/x-data", 12_328).expect("create");
        let client = QbRing::open(&h, &d, 12_328).expect("open");
        assert_eq!(server.ref_count(), 2);
        assert_eq!(server.max_chunk(), 16_384 - 12);
        let mut buf = Vec::new();
        for i in 0..5_000usize {
            let msg: Vec<u8> = (0..(i * 37) % 9_000).map(|j| (i + j) as u8).collect();
            assert!(client
                .try_write(&[
                    IoSlice::new(&msg[..msg.len() / 2]),
                    IoSlice::new(&msg[msg.len() / 2..])
                ])
                .expect("write"));
            assert_eq!(server.queued(), 1);
            let c = server.try_read().expect("read").expect("a chunk");
            c.copy_to(&mut buf);
            assert_eq!(buf, msg, "chunk {i}");
            c.release();
            assert_eq!(server.queued(), 0);
            assert!(server.try_read().expect("read").is_none());
        }
    }

    #[test]
    fn a_full_ring_refuses_and_a_dropped_view_keeps_its_chunk() {
        let (h, d) = files();
        let server = QbRing::create(&h, &d, b"/x-header", b"/x-data", 12_328).expect("create");
        let client = QbRing::open(&h, &d, 12_328).expect("open");
        let msg = [7u8; 4000];
        let mut n = 0;
        while client.try_write(&[IoSlice::new(&msg)]).expect("write") {
            n += 1;
        }
        assert_eq!(n, 4);
        assert_eq!(server.queued(), 4);
        drop(server.try_read().expect("read").expect("chunk"));
        assert_eq!(server.queued(), 4);
        server.try_read().expect("read").expect("chunk").release();
        assert!(client.try_write(&[IoSlice::new(&msg)]).expect("write"));
    }

    #[test]
    fn lies_are_errors_not_crashes() {
        let (h, d) = files();
        let server = QbRing::create(&h, &d, b"/x-header", b"/x-data", 12_328).expect("create");
        let client = QbRing::open(&h, &d, 12_328).expect("open");
        assert!(client.try_write(&[IoSlice::new(b"abc")]).expect("write"));
        // A size past the region.
        client.word(0).store(u32::MAX, Ordering::Relaxed);
        assert_eq!(server.try_read().unwrap_err(), QbCorruption::Size);
        assert_eq!(server.queued(), 1, "the token is back");
        client.word(1).store(0, Ordering::Relaxed);
        assert_eq!(server.try_read().unwrap_err(), QbCorruption::Magic);
        // A read position out of bounds, for the writer.
        client
            .header
            .u32(layout::READ_PT)
            .store(1 << 30, Ordering::Relaxed);
        assert_eq!(
            client.try_write(&[IoSlice::new(b"x")]).unwrap_err(),
            QbCorruption::Position
        );
        // And asking for room: an error, not "none yet" (a wait for room
        // would wait for ever).
        assert_eq!(client.has_room(1), Err(QbCorruption::Position));
        // Shrunk under us.
        d.set_len(0).expect("truncate");
        assert_eq!(server.try_read().unwrap_err(), QbCorruption::Truncated);
        assert!(server.truncated());
    }

    #[test]
    fn a_waiter_is_woken_by_a_post() {
        let (h, d) = files();
        let server = QbRing::create(&h, &d, b"/x-header", b"/x-data", 12_328).expect("create");
        let client = QbRing::open(&h, &d, 12_328).expect("open");
        let t = std::thread::spawn(move || {
            let t0 = Instant::now();
            let got = client.wait_queued(Some(Instant::now() + Duration::from_secs(30)));
            let took = t0.elapsed();
            client.try_read().expect("read").expect("chunk").release();
            let again = client.wait_queued(Some(Instant::now() + Duration::from_millis(5)));
            (got, took, again)
        });
        std::thread::sleep(Duration::from_millis(50));
        // Each side owns one role: the server writes, the client reads.
        assert!(server.try_write(&[IoSlice::new(b"hello")]).expect("write"));
        let (got, took, again) = t.join().expect("join");
        assert!(got);
        assert!(
            took < Duration::from_secs(20),
            "woken, not timed out: {took:?}"
        );
        assert!(!again, "nothing more is counted");
    }
}
