//! The writing end of a ring.
#![allow(unsafe_code)] // Only to view a granted span of the mapping.

use std::cell::Cell;
use std::fmt;
use std::io::{self, IoSlice};
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Corruption, PushError};
use crate::layout::{
    max_payload, record_size, record_word, CLOSED_BY_PRODUCER, KIND_DATA, KIND_PAD, RECORD_HEADER,
    SYNC_PRODUCER,
};
use crate::mem::Shared;
use crate::signals::Direction;
use crate::sync::Ordering;
use crate::wake::{handshake, Deadline, Fenced, SleepPrep, DEFAULT_SPIN};

/// The writing end of a ring: one per ring, in one thread at a time
/// (`Send`, not `Sync`).
///
/// Records are written either in place ([`try_reserve`](Self::try_reserve)
/// and friends return a [`WriteGrant`] into the shared memory) or copied
/// from slices ([`try_push`](Self::try_push), [`try_push_vectored`](Self::try_push_vectored)).
/// Each operation comes in three waiting styles: `try_*` never waits,
/// `*_timeout` waits at most the given time, and the plain form waits
/// until it succeeds or the ring is closed.
///
/// Dropping the producer closes the ring: the consumer reads what was
/// published and then gets [`PopError::Closed`](crate::PopError::Closed).
pub struct Producer {
    shared: Arc<Shared>,
    /// Our position: the authoritative copy, never re-read from the
    /// header (a peer may overwrite the shared one).
    tail: u64,
    /// The last consumer position we read and validated.
    cached_head: u64,
    capacity: usize,
    max_payload: usize,
    spin: Duration,
    /// The sleep batch this producer's flag was last raised in (0: none).
    batch: u64,
    /// In a batch ([`begin_batch`](Producer::begin_batch)): commits
    /// leave the wake-up check to its end.
    batching: bool,
    /// A commit in the batch has not checked the consumer's flag yet.
    owed: bool,
    /// This producer among all of the process's, for the
    /// [`Reservation`]s it hands out.
    id: u64,
    _not_sync: PhantomData<Cell<()>>,
}

/// Numbers the process's producers, so that a [`Reservation`] is only
/// ever taken back by the producer that made it.
static NEXT_PRODUCER_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Where a reserved record goes.
#[derive(Clone, Copy, Debug)]
struct Slot {
    /// Data offset of the record's header word.
    start: usize,
    /// Bytes of padding written before it (0, or up to the region's end).
    pad: usize,
    /// Payload bytes reserved.
    len: usize,
}

impl Producer {
    pub(crate) fn new(shared: Arc<Shared>) -> Result<Producer, Corruption> {
        let h = shared.header();
        // Acquire: pairs with the Release stores of a previous holder of
        // the positions (none in a fresh ring: both are zero).
        let tail = h.tail.0.load(Ordering::Acquire);
        let head = h.head.0.load(Ordering::Acquire);
        check_positions(head, tail, shared.capacity)?;
        // Our sync bit stays clear: an older peer that reads it before
        // waking us then uses the full fence (see `wake`).
        h.control
            .0
            .sync
            .fetch_and(!SYNC_PRODUCER, Ordering::Relaxed);
        Ok(Producer {
            capacity: shared.capacity,
            max_payload: max_payload(shared.capacity),
            shared,
            tail,
            cached_head: head,
            spin: DEFAULT_SPIN,
            batch: 0,
            batching: false,
            owed: false,
            id: NEXT_PRODUCER_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            _not_sync: PhantomData,
        })
    }

    /// Sets how long a waiting call spins before it sleeps (zero: sleep
    /// at once). Default [`DEFAULT_SPIN`].
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }

    /// Size of the data region in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Largest payload one record may carry (`capacity / 2 - 8`). A
    /// record of that size always fits once the consumer has caught up.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Bytes published and not yet released by the consumer (records,
    /// headers and padding), capped at the capacity. A snapshot, for
    /// statistics.
    pub fn pending_bytes(&self) -> usize {
        // Relaxed: a statistic; nothing is written on the strength of it.
        let head = self.shared.header().head.0.load(Ordering::Relaxed);
        self.tail.wrapping_sub(head).min(self.capacity as u64) as usize
    }

    /// Where the next record goes: the bytes published so far (records,
    /// headers and padding), as a position that only grows (wrapping at
    /// 2^64).
    pub fn position(&self) -> u64 {
        self.tail
    }

    /// The consumer's position as it last published it: every record
    /// that ends at or before it was released. The consumer's word, so
    /// the peer's to write: use it only for what a lie would cost the
    /// liar (its own limits), never for memory safety.
    pub fn released(&self) -> u64 {
        self.shared.header().head.0.load(Ordering::Acquire)
    }

    /// Whether either side has closed the ring.
    pub fn is_closed(&self) -> bool {
        self.shared.closed_bits(Ordering::Relaxed) != 0
    }

    /// Whether a record of `len` payload bytes fits now, re-reading the
    /// consumer's position if the cached one says no. For flow control: a
    /// server can take a request only when the answer will fit.
    ///
    /// # Errors
    ///
    /// As [`try_reserve`](Self::try_reserve), with `Full` reported as
    /// `Ok(false)`.
    pub fn has_room(&mut self, len: usize) -> Result<bool, PushError> {
        match self.try_slot(len) {
            Ok(_) => Ok(true),
            Err(PushError::Full) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reserves room for a record of `len` bytes, without waiting.
    ///
    /// Write the payload through the returned grant, then
    /// [`commit`](WriteGrant::commit) it. Dropping the grant publishes
    /// nothing.
    ///
    /// # Errors
    ///
    /// [`PushError::TooLarge`] if `len > max_payload()`;
    /// [`Full`](PushError::Full); [`Closed`](PushError::Closed);
    /// [`Corrupt`](PushError::Corrupt) if the consumer's position is
    /// invalid.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let ring = ringlink_ringbuf::Ring::create(4096)?;
    /// let mut tx = ring.producer()?;
    /// let mut grant = tx.try_reserve(4)?;
    /// grant.copy_from_slice(b"ping");
    /// grant.commit();
    /// # Ok(())
    /// # }
    /// ```
    pub fn try_reserve(&mut self, len: usize) -> Result<WriteGrant<'_>, PushError> {
        self.reserve_until(len, Deadline::Now)
    }

    /// [`try_reserve`](Self::try_reserve), waiting up to `timeout` for
    /// room.
    ///
    /// # Errors
    ///
    /// As `try_reserve`, with [`TimedOut`](PushError::TimedOut) instead of
    /// `Full`.
    pub fn reserve_timeout(
        &mut self,
        len: usize,
        timeout: Duration,
    ) -> Result<WriteGrant<'_>, PushError> {
        self.reserve_until(len, Deadline::after(timeout))
    }

    /// [`try_reserve`](Self::try_reserve), waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// As `try_reserve`, without `Full`.
    pub fn reserve(&mut self, len: usize) -> Result<WriteGrant<'_>, PushError> {
        self.reserve_until(len, Deadline::Never)
    }

    /// Copies `data` into the ring as one record, without waiting.
    ///
    /// # Errors
    ///
    /// As [`try_reserve`](Self::try_reserve).
    pub fn try_push(&mut self, data: &[u8]) -> Result<(), PushError> {
        self.push_until(&[IoSlice::new(data)], Deadline::Now)
    }

    /// [`try_push`](Self::try_push), waiting up to `timeout`.
    ///
    /// # Errors
    ///
    /// As [`reserve_timeout`](Self::reserve_timeout).
    pub fn push_timeout(&mut self, data: &[u8], timeout: Duration) -> Result<(), PushError> {
        self.push_until(&[IoSlice::new(data)], Deadline::after(timeout))
    }

    /// [`try_push`](Self::try_push), waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// As [`reserve`](Self::reserve).
    pub fn push(&mut self, data: &[u8]) -> Result<(), PushError> {
        self.push_until(&[IoSlice::new(data)], Deadline::Never)
    }

    /// Copies several slices into the ring as one record (their
    /// concatenation), without waiting.
    ///
    /// # Errors
    ///
    /// As [`try_reserve`](Self::try_reserve), for the total length.
    pub fn try_push_vectored(&mut self, parts: &[IoSlice<'_>]) -> Result<(), PushError> {
        self.push_until(parts, Deadline::Now)
    }

    /// [`try_push_vectored`](Self::try_push_vectored), waiting up to
    /// `timeout`.
    ///
    /// # Errors
    ///
    /// As [`reserve_timeout`](Self::reserve_timeout).
    pub fn push_vectored_timeout(
        &mut self,
        parts: &[IoSlice<'_>],
        timeout: Duration,
    ) -> Result<(), PushError> {
        self.push_until(parts, Deadline::after(timeout))
    }

    /// [`try_push_vectored`](Self::try_push_vectored), waiting as long as
    /// it takes.
    ///
    /// # Errors
    ///
    /// As [`reserve`](Self::reserve).
    pub fn push_vectored(&mut self, parts: &[IoSlice<'_>]) -> Result<(), PushError> {
        self.push_until(parts, Deadline::Never)
    }

    /// Marks the ring closed by the producer and wakes a waiting consumer.
    /// Records already committed stay readable. Idempotent; also done on
    /// drop.
    pub fn close(&mut self) {
        let h = self.shared.header();
        // Release: pairs with the consumer's Acquire load of `closed`, so
        // a consumer that sees the bit also sees every record committed
        // before it (their word stores precede this in our order).
        h.control
            .0
            .closed
            .fetch_or(CLOSED_BY_PRODUCER, Ordering::Release);
        // The waker's half of the handshake, with a full fence: either the
        // consumer sees the bit before sleeping or we see its flag.
        handshake::wake(&self.shared, Direction::Data);
    }

    /// Prepares to sleep on the ring's wake-up object, draining it first
    /// (for a caller polling it level-triggered): raises the waiting flag
    /// so that the consumer signals when it frees space. Returns `false`
    /// if there is no need to sleep (space was freed since the last
    /// attempt, or the ring is closed); then call the operation again
    /// instead of polling.
    ///
    /// The fd may also become readable spuriously; after it does, retry
    /// the operation and call `arm_wake` again if it still would block.
    pub fn arm_wake(&mut self) -> bool {
        self.prepare(false)
    }

    /// [`arm_wake`](Self::arm_wake) without draining first, the sleeper's
    /// half of the wake-up handshake in one call (see
    /// [`Consumer::prepare_sleep`](crate::Consumer::prepare_sleep)).
    pub fn prepare_sleep(&mut self) -> bool {
        self.prepare(true)
    }

    /// Raises the waiting flag as part of a batch (see
    /// [`Consumer::raise_wake_flag`](crate::Consumer::raise_wake_flag)).
    pub fn raise_wake_flag(&mut self, batch: &mut SleepPrep) {
        // About to sleep for room: the consumer must know of our records.
        self.pay_owed_wake();
        handshake::raise(&self.shared, Direction::Space);
        self.batch = batch.raised();
    }

    /// After the batch's fence: `true` if the caller may sleep (see
    /// [`Consumer::confirm_wake`](crate::Consumer::confirm_wake)).
    pub fn confirm_wake(&mut self, fenced: &Fenced) -> bool {
        if std::mem::take(&mut self.batch) != fenced.batch() {
            return false;
        }
        let may = handshake::confirm(&self.shared, Direction::Space, self.space_changed());
        if !may {
            // See `prepare`.
            let _ = self.refresh_head();
        }
        may
    }

    /// Lowers the waiting flag, once the caller is awake again (see
    /// [`Consumer::lower_wake_flag`](crate::Consumer::lower_wake_flag)).
    pub fn lower_wake_flag(&mut self) {
        handshake::lower(&self.shared, Direction::Space);
    }

    /// Takes back a record reserved and [detached](WriteGrant::detach)
    /// earlier, as a grant again: to write more of it, or to commit it.
    ///
    /// # Panics
    ///
    /// If `reservation` is not this producer's, or is stale: the producer
    /// committed or pushed a record since it was made. (Both are bugs of
    /// the caller's; the check also keeps the grant from ever covering
    /// bytes the consumer may be reading.)
    #[inline]
    pub fn attach(&mut self, reservation: &Reservation) -> WriteGrant<'_> {
        self.check_reservation(reservation);
        WriteGrant {
            slot: reservation.slot,
            producer: self,
        }
    }

    /// The bytes of a record reserved and [detached](WriteGrant::detach)
    /// earlier, to read back what was written there.
    ///
    /// # Panics
    ///
    /// As [`attach`](Self::attach).
    #[inline]
    pub fn reserved(&self, reservation: &Reservation) -> &[u8] {
        self.check_reservation(reservation);
        // SAFETY: as in `WriteGrant::deref`: the check above says the
        // slot is the one `try_slot` placed at our current position, in
        // space the consumer released, and nothing was committed since.
        unsafe {
            self.shared
                .bytes(reservation.slot.start + RECORD_HEADER, reservation.slot.len)
        }
    }

    #[inline]
    fn check_reservation(&self, r: &Reservation) {
        assert!(
            r.producer == self.id,
            "a reservation taken back by another producer than its own"
        );
        assert!(
            r.tail == self.tail,
            "a stale reservation: its producer wrote a later record since"
        );
    }

    fn prepare(&mut self, edge: bool) -> bool {
        // About to sleep for room: the consumer must know of our records.
        self.pay_owed_wake();
        let may = handshake::prepare(&self.shared, Direction::Space, edge, || {
            self.space_changed()
        });
        if !may {
            // Take the new position in, so that the next call compares
            // against it: a caller waiting for something other than space
            // (flow control) would otherwise be told "changed" forever. A
            // corrupt position is reported by the next push.
            let _ = self.refresh_head();
        }
        may
    }

    fn space_changed(&self) -> bool {
        let h = self.shared.header();
        // Relaxed: only a hint to retry; the retry's Acquire load (in
        // `refresh_head`) is what orders the data.
        h.head.0.load(Ordering::Relaxed) != self.cached_head
            || h.control.0.closed.load(Ordering::Relaxed) != 0
    }

    fn push_until(&mut self, parts: &[IoSlice<'_>], deadline: Deadline) -> Result<(), PushError> {
        let len = parts
            .iter()
            .map(|p| p.len())
            .fold(0usize, usize::saturating_add);
        let mut grant = self.reserve_until(len, deadline)?;
        let mut at = 0;
        for p in parts {
            grant[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        grant.commit();
        Ok(())
    }

    fn reserve_until(
        &mut self,
        len: usize,
        deadline: Deadline,
    ) -> Result<WriteGrant<'_>, PushError> {
        loop {
            match self.try_slot(len) {
                Ok(slot) => {
                    self.prefetch_rest(slot, len);
                    return Ok(WriteGrant {
                        producer: self,
                        slot,
                    });
                }
                Err(PushError::Full) if !matches!(deadline, Deadline::Now) => {
                    // Checked on every round (see `Consumer::peek_until`).
                    if deadline.passed() {
                        return Err(PushError::TimedOut);
                    }
                    self.wait_space(deadline)?
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Starts taking the lines of the record at `slot` after its word's
    /// line for writing (at most `PREFETCH_BYTES` of them, the next
    /// record's word included): their transfers overlap
    /// each other and the word line's, so that the stores that follow,
    /// whatever their order, find their lines here, and the word's line,
    /// which a waiting consumer polls, is not left half-written while
    /// another line comes.
    #[inline]
    fn prefetch_rest(&self, slot: Slot, len: usize) {
        self.shared
            .prefetch_record(slot.start, record_size(len) + RECORD_HEADER, true);
    }

    /// Finds room for `len` payload bytes, re-reading the consumer's
    /// position only when the cached one shows too little room.
    #[inline]
    fn try_slot(&mut self, len: usize) -> Result<Slot, PushError> {
        if len > self.max_payload {
            return Err(PushError::TooLarge {
                len,
                max: self.max_payload,
            });
        }
        // Relaxed: a flag check; the close's data ordering is the
        // consumer's concern, and a stale 0 only delays Closed by one call.
        if self.shared.closed_bits(Ordering::Relaxed) != 0 {
            return Err(PushError::Closed);
        }
        let (slot, need) = self.place(len);
        if !self.known_room(need) {
            self.refresh_head()?;
            if !self.known_room(need) {
                return Err(PushError::Full);
            }
        }
        Ok(slot)
    }

    /// Where a record of `len` payload bytes (at most `max_payload`) would
    /// go, and the space it needs: the record, the padding before it, and
    /// the next record's word, which `commit` clears. All must be space
    /// the consumer released.
    #[inline]
    fn place(&self, len: usize) -> (Slot, u64) {
        let size = record_size(len);
        let off = (self.tail as usize) & (self.capacity - 1);
        let to_end = self.capacity - off;
        let (start, pad) = if size <= to_end {
            (off, 0)
        } else {
            (0, to_end)
        };
        (
            Slot { start, pad, len },
            (pad + size + RECORD_HEADER) as u64,
        )
    }

    /// Whether `need` bytes are free by the consumer's position last read.
    #[inline]
    fn known_room(&self, need: u64) -> bool {
        self.tail.wrapping_sub(self.cached_head) + need <= self.capacity as u64
    }

    /// Whether a record of `len` payload bytes certainly fits now, by what
    /// this producer already knows: its own position and the consumer's
    /// position it last read. Reads nothing shared, so it can be kept as a
    /// hint by whoever sends under a lock, and read without it. `false`
    /// means only "ask [`has_room`](Self::has_room)", which re-reads the
    /// consumer's position (and checks it).
    #[inline]
    pub fn surely_fits(&self, len: usize) -> bool {
        len <= self.max_payload && self.known_room(self.place(len).1)
    }

    /// Re-reads and validates the consumer's position.
    fn refresh_head(&mut self) -> Result<(), PushError> {
        // Acquire: pairs with the consumer's Release store of `head` in
        // `release`: it has finished reading the bytes it gives back
        // before we overwrite them.
        let head = self.shared.header().head.0.load(Ordering::Acquire);
        if head % 8 != 0 {
            return Err(PushError::Corrupt(Corruption::MisalignedPosition));
        }
        let advance = head.wrapping_sub(self.cached_head);
        if advance > self.tail.wrapping_sub(self.cached_head) {
            return Err(PushError::Corrupt(if advance > u64::MAX / 2 {
                Corruption::PositionBehind
            } else {
                Corruption::PositionTooFarAhead
            }));
        }
        self.cached_head = head;
        Ok(())
    }

    /// Publishes a reserved record of `len <= slot.len` bytes.
    ///
    /// The consumer polls the word at its position, so the record word
    /// is stored last, with Release, and the word where the next record
    /// will start is cleared before it: the word under the consumer is
    /// then always 0 or one published for that place, never an old word
    /// or payload bytes of an earlier lap that would pass for one (see
    /// docs/RING.md, "Publication and orderings").
    #[inline]
    fn commit(&mut self, slot: Slot, len: usize) {
        debug_assert!(len <= slot.len);
        let size = record_size(len);
        let mask = self.capacity - 1;
        // Relaxed: the Release store of this record's word (below) orders
        // it before the consumer's Acquire load of that word, after which
        // the consumer looks here. `try_slot` counted these 8 bytes as
        // released space, so the consumer is not reading them now.
        self.shared
            .store_word((slot.start + size) & mask, 0, Ordering::Relaxed);
        // Release: publishes the payload written through the grant and the
        // cleared next word; pairs with the consumer's Acquire load of
        // this word in `Consumer::try_record`.
        self.shared.store_word(
            slot.start,
            record_word(len as u32, KIND_DATA),
            Ordering::Release,
        );
        if slot.pad > 0 {
            // Stored after the data word at offset 0 (Release, in this
            // order): a consumer that acquires the padding and moves to 0
            // finds the record published, never stale bytes there.
            let pad_off = (self.tail as usize) & mask;
            self.shared.store_word(
                pad_off,
                record_word((slot.pad - RECORD_HEADER) as u32, KIND_PAD),
                Ordering::Release,
            );
        }
        self.tail = self.tail.wrapping_add((slot.pad + size) as u64);
        let h = self.shared.header();
        // Release: off the consumer's path (it never reads `tail` to find
        // records), but a reader of the header (a claim, a statistic, a
        // debugger) that sees the new position also sees the records
        // before it.
        h.tail.0.store(self.tail, Ordering::Release);
        // The waker's half of the handshake (P1 was the record word's
        // store), or, in a batch, at its end for all its records.
        if self.batching {
            self.owed = true;
        } else {
            handshake::wake(&self.shared, Direction::Data);
        }
    }

    /// Starts a batch: the records committed until
    /// [`end_batch`](Self::end_batch) check the consumer's waiting flag
    /// once, at the end, instead of each after its own commit. The check
    /// costs a full fence, which waits for the record's stores to leave
    /// the store buffer; a burst pays it once. Records are readable as
    /// soon as they are committed; only the signal to a consumer asleep
    /// is deferred, to `end_batch` or to anything that may make the
    /// producer wait first (a push waiting for room, `arm_wake`,
    /// `prepare_sleep`, `raise_wake_flag`, `close`).
    ///
    /// Every `begin_batch` must be followed by `end_batch`, on every path
    /// (errors included): until then a consumer asleep is not woken. Inside
    /// a batch, wait for room only through this producer's own waits (a
    /// blocking push, or `arm_wake`/`prepare_sleep`): a wait by polling
    /// `has_room` or on a timer would wait for a consumer that was never
    /// told. Batches do not nest: a second `begin_batch` changes nothing,
    /// and the first `end_batch` ends the batch.
    pub fn begin_batch(&mut self) {
        self.batching = true;
    }

    /// Ends a batch ([`begin_batch`](Self::begin_batch)): wakes the
    /// consumer if it waits, once, for all the records the batch
    /// committed.
    pub fn end_batch(&mut self) {
        self.batching = false;
        self.pay_owed_wake();
    }

    /// The wake-up check a batch's commits left for later, if any.
    fn pay_owed_wake(&mut self) {
        if std::mem::take(&mut self.owed) {
            handshake::wake(&self.shared, Direction::Data);
        }
    }

    /// Spins, then sleeps until the consumer frees space, the ring closes,
    /// or the deadline passes.
    #[cold]
    fn wait_space(&mut self, deadline: Deadline) -> Result<(), PushError> {
        // A consumer asleep on records this batch committed would never
        // make the room.
        self.pay_owed_wake();
        let r = handshake::sleep(&self.shared, Direction::Space, self.spin, deadline, || {
            self.space_changed()
        });
        r.map_err(|()| PushError::TimedOut)
    }
}

/// Checks positions read at claim time: aligned, and head at most a
/// capacity behind tail.
pub(crate) fn check_positions(head: u64, tail: u64, capacity: usize) -> Result<(), Corruption> {
    if head % 8 != 0 || tail % 8 != 0 {
        return Err(Corruption::MisalignedPosition);
    }
    if tail.wrapping_sub(head) > capacity as u64 {
        return Err(Corruption::PositionTooFarAhead);
    }
    Ok(())
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.close();
    }
}

impl fmt::Debug for Producer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("capacity", &self.capacity)
            .field("tail", &self.tail)
            .field("cached_head", &self.cached_head)
            .finish_non_exhaustive()
    }
}

/// Each `write` is one record; a full ring is `WouldBlock`, so this suits
/// non-blocking writers. A buffer larger than
/// [`max_payload`](Producer::max_payload) is `InvalidInput`.
impl io::Write for Producer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.try_push(buf)?;
        Ok(buf.len())
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.try_push_vectored(bufs)?;
        Ok(bufs.iter().map(|b| b.len()).sum())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Room for one record in the shared memory, from
/// [`Producer::try_reserve`] and friends. Dereferences to the payload
/// bytes (their prior contents are unspecified). Nothing is visible to
/// the consumer until [`commit`](Self::commit); dropping the grant
/// publishes nothing.
///
/// Only one grant can be alive at a time:
///
/// ```compile_fail
/// # let ring = ringlink_ringbuf::Ring::create(4096).unwrap();
/// let mut tx = ring.producer().unwrap();
/// let a = tx.try_reserve(8).unwrap();
/// let b = tx.try_reserve(8).unwrap(); // second mutable borrow
/// a.commit();
/// ```
pub struct WriteGrant<'a> {
    producer: &'a mut Producer,
    slot: Slot,
}

/// A record reserved and not yet committed, held apart from its
/// producer ([`WriteGrant::detach`]): for a caller that keeps the
/// producer behind a lock and hands out the reservation in a guard of its
/// own. [`Producer::attach`] gives the grant back; dropping it publishes
/// nothing. It stays valid until the producer commits or pushes another
/// record.
#[derive(Debug)]
pub struct Reservation {
    producer: u64,
    tail: u64,
    slot: Slot,
}

impl Reservation {
    /// Payload bytes reserved.
    pub fn len(&self) -> usize {
        self.slot.len
    }

    /// Whether no payload bytes are reserved (a record may be empty).
    pub fn is_empty(&self) -> bool {
        self.slot.len == 0
    }
}

impl WriteGrant<'_> {
    /// Lets go of the producer and keeps the reservation, to be taken back
    /// with [`Producer::attach`]. Nothing is published.
    #[inline]
    pub fn detach(self) -> Reservation {
        Reservation {
            producer: self.producer.id,
            tail: self.producer.tail,
            slot: self.slot,
        }
    }

    /// Publishes the whole reserved record.
    pub fn commit(self) {
        let len = self.slot.len;
        self.producer.commit(self.slot, len);
    }

    /// Publishes only the first `len` bytes as the record.
    ///
    /// # Panics
    ///
    /// If `len` exceeds the reserved length.
    pub fn commit_len(self, len: usize) {
        assert!(
            len <= self.slot.len,
            "commit_len({len}) beyond reservation of {}",
            self.slot.len
        );
        self.producer.commit(self.slot, len);
    }
}

impl<'a> WriteGrant<'a> {
    /// The reserved bytes for as long as the producer stays borrowed,
    /// the grant given up: nothing is published, and a reservation
    /// [detached](Self::detach) before can be attached again later.
    #[inline]
    pub fn into_bytes(self) -> &'a mut [u8] {
        let WriteGrant { producer, slot } = self;
        let producer: &'a Producer = producer;
        // SAFETY: as in `deref_mut`; the producer stays borrowed
        // mutably for `'a` (our caller's `&'a mut` was moved here), so no
        // other reference to the span can be made in this process while
        // the bytes live.
        unsafe {
            producer
                .shared
                .bytes_mut(slot.start + RECORD_HEADER, slot.len)
        }
    }
}

impl Deref for WriteGrant<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `try_slot` placed the record at `start` with
        // `start + RECORD_HEADER + len <= capacity` and inside the free
        // span the consumer has released, which belongs to the producer
        // alone until committed; `&self` borrows the only producer.
        unsafe {
            self.producer
                .shared
                .bytes(self.slot.start + RECORD_HEADER, self.slot.len)
        }
    }
}

impl DerefMut for WriteGrant<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; `&mut self` makes this the only
        // reference to the span in this process.
        unsafe {
            self.producer
                .shared
                .bytes_mut(self.slot.start + RECORD_HEADER, self.slot.len)
        }
    }
}

impl fmt::Debug for WriteGrant<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteGrant")
            .field("len", &self.slot.len)
            .finish_non_exhaustive()
    }
}
