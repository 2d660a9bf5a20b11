//! The reading end of a ring.
#![allow(unsafe_code)] // Only to view a published record in the mapping.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Corruption, PopError};
use crate::layout::{
    max_payload, record_size, CLOSED_BY_CONSUMER, KIND_DATA, KIND_PAD, RECORD_HEADER, SYNC_CONSUMER,
};
use crate::mem::Shared;
use crate::producer::check_positions;
use crate::signals::Direction;
use crate::sync::Ordering;
use crate::wake::{handshake, Deadline, Fenced, SleepPrep, DEFAULT_SPIN};

/// The reading end of a ring: one per ring, in one thread at a time
/// (`Send`, not `Sync`).
///
/// Records are read in place ([`try_peek`](Self::try_peek) and friends
/// return a [`ReadGrant`] viewing the shared memory; release it to free
/// the space) or copied out ([`try_pop_into`](Self::try_pop_into)). Each
/// operation comes in three waiting styles: `try_*` never waits,
/// `*_timeout` waits at most the given time, and the plain form waits
/// until a record arrives or the ring is closed.
///
/// The consumer finds records by polling the record word at its own
/// position, never by reading the producer's: a record is there once its
/// word is non-zero. Every record word read from the shared memory is
/// read once and validated before use; a producer that breaks the
/// protocol gets [`PopError::Corrupt`] reported (or, writing nothing
/// valid, only stalls its own stream), never a panic or an out-of-bounds
/// access.
///
/// Dropping the consumer closes the ring: the producer's next operation
/// returns [`PushError::Closed`](crate::PushError::Closed).
pub struct Consumer {
    shared: Arc<Shared>,
    /// Our position: the authoritative copy, never re-read from the
    /// header (a peer may overwrite the shared one).
    head: u64,
    /// The position last stored in the header for the producer: `head`,
    /// or behind it by less than `release_batch` bytes.
    published: u64,
    /// Releases kept from the producer until this many bytes have
    /// gathered (0: each is published at once). See
    /// [`set_release_batch`](Self::set_release_batch).
    release_batch: u64,
    capacity: usize,
    max_payload: usize,
    spin: Duration,
    /// The sleep batch this consumer's flag was last raised in (0: none).
    batch: u64,
    /// The last look found the ring empty: the next record is one the
    /// producer wrote while we waited (see `prefetch_rest`).
    caught_up: bool,
    _not_sync: PhantomData<Cell<()>>,
}

/// A validated record: payload at `off + RECORD_HEADER`, `len` bytes.
#[derive(Clone, Copy, Debug)]
struct Record {
    off: usize,
    len: usize,
}

impl Consumer {
    pub(crate) fn new(shared: Arc<Shared>) -> Result<Consumer, Corruption> {
        let h = shared.header();
        // Acquire: pairs with the producer's Release store of `tail`.
        // Only checked here (a ring handed over in an impossible state is
        // refused); records are found by their words, not by `tail`.
        let tail = h.tail.0.load(Ordering::Acquire);
        let head = h.head.0.load(Ordering::Acquire);
        check_positions(head, tail, shared.capacity)?;
        // Our sync bit stays clear: an older peer that reads it before
        // waking us then uses the full fence (see `wake`).
        h.control
            .0
            .sync
            .fetch_and(!SYNC_CONSUMER, Ordering::Relaxed);
        Ok(Consumer {
            capacity: shared.capacity,
            max_payload: max_payload(shared.capacity),
            shared,
            head,
            published: head,
            release_batch: 0,
            spin: DEFAULT_SPIN,
            batch: 0,
            caught_up: false,
            _not_sync: PhantomData,
        })
    }

    /// Sets how long a waiting call spins before it sleeps (zero: sleep
    /// at once). Default [`DEFAULT_SPIN`].
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }

    /// Lets releases gather before the producer is told of them: a
    /// release then stores this consumer's position in the header only
    /// once `bytes` (at most half the capacity) have been released since
    /// the last store, or when it sees the producer waiting for room. 0,
    /// the default, publishes every release.
    ///
    /// The position is the one line the consumer writes per record, and
    /// a producer short of room reads it: publishing it less often stops
    /// the line going back and forth in a stream (two and a half to four
    /// times the 64-byte throughput in `ring-bench`, docs/RING.md). Whatever was released
    /// is still published whenever a read finds the ring empty or
    /// closed, before this consumer arms its wake-up or sleeps, when it
    /// closes, and by [`publish_released`](Self::publish_released). A
    /// caller that stops reading while records are left (a rate limit, a
    /// handler that answers elsewhere) must call `publish_released`, or a
    /// producer waiting for room it has freed waits until it reads again.
    pub fn set_release_batch(&mut self, bytes: usize) {
        self.release_batch = bytes.min(self.capacity / 2) as u64;
        if self.release_batch == 0 {
            self.publish_released();
        }
    }

    /// Stores this consumer's position in the header if releases are
    /// waiting to be published (see
    /// [`set_release_batch`](Self::set_release_batch)), and wakes the
    /// producer if it waits for room.
    pub fn publish_released(&mut self) {
        if self.published != self.head {
            self.publish();
        }
    }

    /// Size of the data region in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Largest payload one record may carry.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Whether either side has closed the ring. Records published before
    /// a producer's close can still be read.
    pub fn is_closed(&self) -> bool {
        self.shared.closed_bits(Ordering::Relaxed) != 0
    }

    /// Bytes published and not yet released (records, headers and
    /// padding), capped at the capacity, from the position the producer
    /// stores in the header after each commit. A snapshot, for
    /// statistics: reading it pulls the producer's cache line, and the
    /// producer could write anything there; use
    /// [`has_record`](Self::has_record) to ask whether to read.
    pub fn pending_bytes(&self) -> usize {
        // Relaxed: a statistic; nothing is read on the strength of it.
        let tail = self.shared.header().tail.0.load(Ordering::Relaxed);
        (tail.wrapping_sub(self.head)).min(self.capacity as u64) as usize
    }

    /// Whether something is published at this consumer's position: the
    /// record word there is non-zero. A hint for polling loops (one load
    /// of the line the next record arrives in, which is the line the read
    /// needs anyway); the next [`try_peek`](Self::try_peek) says what it
    /// is (a record, padding then perhaps nothing yet, or corruption).
    pub fn has_record(&self) -> bool {
        // Relaxed: a hint; the read that follows loads the word again
        // with Acquire before it uses anything.
        self.shared.load_word(self.offset(), Ordering::Relaxed) != 0
    }

    /// The next record, viewed in place, without waiting. The record stays
    /// in the ring until the grant is [`release`](ReadGrant::release)d;
    /// dropping the grant keeps it for the next call.
    ///
    /// # Errors
    ///
    /// [`PopError::Empty`]; [`Closed`](PopError::Closed) once the ring is
    /// closed and drained; [`Corrupt`](PopError::Corrupt).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let ring = ringlink_ringbuf::Ring::create(4096)?;
    /// let (mut tx, mut rx) = (ring.producer()?, ring.consumer()?);
    /// tx.try_push(b"pong")?;
    /// let rec = rx.try_peek()?;
    /// assert_eq!(&*rec, b"pong");
    /// rec.release();
    /// # Ok(())
    /// # }
    /// ```
    pub fn try_peek(&mut self) -> Result<ReadGrant<'_>, PopError> {
        self.peek_until(Deadline::Now)
    }

    /// [`try_peek`](Self::try_peek), waiting up to `timeout`.
    ///
    /// # Errors
    ///
    /// As `try_peek`, with [`TimedOut`](PopError::TimedOut) instead of
    /// `Empty`.
    pub fn peek_timeout(&mut self, timeout: Duration) -> Result<ReadGrant<'_>, PopError> {
        self.peek_until(Deadline::after(timeout))
    }

    /// [`try_peek`](Self::try_peek), waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// As `try_peek`, without `Empty`.
    pub fn peek(&mut self) -> Result<ReadGrant<'_>, PopError> {
        self.peek_until(Deadline::Never)
    }

    /// Copies the next record into `buf` and releases it, without
    /// waiting. Returns the record's length.
    ///
    /// # Errors
    ///
    /// As [`try_peek`](Self::try_peek), and
    /// [`BufferTooSmall`](PopError::BufferTooSmall) (the record is kept).
    pub fn try_pop_into(&mut self, buf: &mut [u8]) -> Result<usize, PopError> {
        self.pop_until(buf, Deadline::Now)
    }

    /// [`try_pop_into`](Self::try_pop_into), waiting up to `timeout`.
    ///
    /// # Errors
    ///
    /// As [`peek_timeout`](Self::peek_timeout), and `BufferTooSmall`.
    pub fn pop_into_timeout(
        &mut self,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, PopError> {
        self.pop_until(buf, Deadline::after(timeout))
    }

    /// [`try_pop_into`](Self::try_pop_into), waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// As [`peek`](Self::peek), and `BufferTooSmall`.
    pub fn pop_into(&mut self, buf: &mut [u8]) -> Result<usize, PopError> {
        self.pop_until(buf, Deadline::Never)
    }

    /// Marks the ring closed by the consumer and wakes a waiting producer,
    /// whose operations then return `Closed`. Idempotent; also done on
    /// drop.
    pub fn close(&mut self) {
        self.publish_released();
        let h = self.shared.header();
        // Release: pairs with the producer's load of `closed` (a flag
        // only; no data rides on it in this direction).
        h.control
            .0
            .closed
            .fetch_or(CLOSED_BY_CONSUMER, Ordering::Release);
        // The waker's half of the handshake, with a full fence.
        handshake::wake(&self.shared, Direction::Space);
    }

    /// Prepares to sleep on the ring's wake-up object, draining it first
    /// (for a caller polling it level-triggered): raises the waiting flag
    /// so that the producer signals on its next commit. Returns `false`
    /// if there is no need to sleep (records are waiting, or the ring is
    /// closed); then read instead of polling.
    ///
    /// The fd may become readable spuriously; after it does, read until
    /// `Empty`, then call `arm_wake` again before polling.
    pub fn arm_wake(&mut self) -> bool {
        self.publish_released();
        handshake::prepare(&self.shared, Direction::Data, false, || self.data_changed())
    }

    /// [`arm_wake`](Self::arm_wake) without draining first, the
    /// sleeper's half of the wake-up handshake in one call (raise the
    /// flag, fence, look again): no system call but the fence. For a
    /// wake-up object registered edge-triggered, or drained by its owner
    /// (a socket several rings share). Returns whether the caller may
    /// sleep; on waking, [`lower_wake_flag`](Self::lower_wake_flag).
    pub fn prepare_sleep(&mut self) -> bool {
        self.publish_released();
        handshake::prepare(&self.shared, Direction::Data, true, || self.data_changed())
    }

    /// Raises the waiting flag as part of a batch
    /// ([`wake::prepare_sleep`](crate::wake::prepare_sleep)): one fence
    /// for many rings, then [`confirm_wake`](Self::confirm_wake) on each.
    pub fn raise_wake_flag(&mut self, batch: &mut SleepPrep) {
        self.publish_released();
        handshake::raise(&self.shared, Direction::Data);
        self.batch = batch.raised();
    }

    /// After the batch's fence: `true` if the caller may sleep, `false`
    /// (flag lowered) if records arrived or the ring closed, or if this
    /// consumer's flag was not raised in that batch (look again rather
    /// than sleep on a flag that may be down).
    pub fn confirm_wake(&mut self, fenced: &Fenced) -> bool {
        if std::mem::take(&mut self.batch) != fenced.batch() {
            return false;
        }
        handshake::confirm(&self.shared, Direction::Data, self.data_changed())
    }

    /// Lowers the waiting flag, once the caller is awake again (woken,
    /// timed out, or done waiting): the producer then sends no wake-up
    /// nobody waits for.
    pub fn lower_wake_flag(&mut self) {
        handshake::lower(&self.shared, Direction::Data);
    }

    /// Publishes a value in the ring header's user word (offset 28; see
    /// [`Ring::set_user_word`](crate::Ring::set_user_word)) and wakes the
    /// producer if it waits: a producer that raised its flag and then read
    /// the old value is woken, one that reads after this sees the new one
    /// (ringlink's server publishes its flow-control level this way).
    /// Only the producer's flag is touched: this consumer's own stays as
    /// it is.
    pub fn publish_user_word(&mut self, value: u32) {
        let h = self.shared.header();
        // Release: pairs with the Acquire in `Ring::user_word`.
        h.meta.0.user_word.store(value, Ordering::Release);
        handshake::wake(&self.shared, Direction::Space);
    }

    /// W3 of the handshake: whether a record word appeared at our
    /// position, or the ring closed, since we found it empty.
    fn data_changed(&self) -> bool {
        // Relaxed: only a hint to retry, ordered after the flag by the
        // sleeper's fence; the retry's Acquire load of the word (in
        // `try_record`) is what orders the data.
        self.has_record() || self.shared.closed_bits(Ordering::Relaxed) != 0
    }

    /// Our position's offset in the data region.
    #[inline]
    fn offset(&self) -> usize {
        (self.head as usize) & (self.capacity - 1)
    }

    fn pop_until(&mut self, buf: &mut [u8], deadline: Deadline) -> Result<usize, PopError> {
        let rec = self.peek_until(deadline)?;
        let n = rec.len();
        let dst = buf
            .get_mut(..n)
            .ok_or(PopError::BufferTooSmall { needed: n })?;
        dst.copy_from_slice(&rec);
        rec.release();
        Ok(n)
    }

    fn peek_until(&mut self, deadline: Deadline) -> Result<ReadGrant<'_>, PopError> {
        loop {
            match self.try_record() {
                Ok(record) => {
                    return Ok(ReadGrant {
                        consumer: self,
                        record,
                    })
                }
                Err(PopError::Empty) if !matches!(deadline, Deadline::Now) => {
                    // Checked on every round, not only when a wait times
                    // out: a peer that keeps rewriting its position would
                    // otherwise keep a timed call from ever returning.
                    if deadline.passed() {
                        return Err(PopError::TimedOut);
                    }
                    self.wait_data(deadline)?
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Finds and validates the next data record, skipping (and releasing)
    /// at most one padding record.
    #[inline]
    fn try_record(&mut self) -> Result<Record, PopError> {
        // Two rounds at most: a padding record runs to the end of the
        // region and may not stand at offset 0, so after one the next
        // record is data, nothing yet, or corruption.
        loop {
            let off = self.offset();
            let to_end = self.capacity - off;
            // One read of the record word; everything below uses the copy.
            // Acquire: pairs with the producer's Release store of this
            // word in `commit`: the payload it wrote, and the cleared word
            // after the record, are visible to the reads that follow.
            let mut word = self.shared.load_word(off, Ordering::Acquire);
            if word == 0 {
                word = self.empty_or_closed(off)?;
            }
            let len = (word as u32) as usize;
            match (word >> 32) as u32 {
                KIND_DATA => {
                    if len > self.max_payload || record_size(len) > to_end {
                        return Err(PopError::Corrupt(Corruption::RecordLength));
                    }
                    if std::mem::take(&mut self.caught_up) {
                        self.prefetch_rest(off, record_size(len));
                    }
                    return Ok(Record { off, len });
                }
                KIND_PAD => {
                    if off == 0 || len + RECORD_HEADER != to_end {
                        return Err(PopError::Corrupt(Corruption::Padding));
                    }
                    // Give the padding back at once: the producer may be
                    // waiting for exactly this space while we wait for
                    // data.
                    self.advance(to_end);
                }
                _ => return Err(PopError::Corrupt(Corruption::RecordKind)),
            }
        }
    }

    /// Starts bringing the lines of the record at `off` (`size` bytes,
    /// inside the region) after its word's line into this core, at most
    /// `PREFETCH_BYTES` of it: a record found right after an empty look
    /// was just written by the producer, and its lines are still in the
    /// producer's core. Read on demand, each line would be a transfer of
    /// its own after the word's; started now, they overlap the caller's
    /// work on the header. A record found without waiting is
    /// left alone: in a stream, the hardware's prefetcher already follows
    /// the reader, and reaching further ahead pulls lines the producer is
    /// still filling (`docs/RING.md`, Measurements).
    #[inline]
    fn prefetch_rest(&self, off: usize, size: usize) {
        self.shared.prefetch_record(off, size, false);
    }

    /// The word at our position (offset `off`) was 0: `Empty` or
    /// `Closed`, or the word if one was published while we checked.
    /// Either way the reader has caught up: releases it kept back are
    /// published (see `set_release_batch`).
    #[cold]
    fn empty_or_closed(&mut self, off: usize) -> Result<u64, PopError> {
        self.caught_up = true;
        self.publish_released();
        // Acquire: pairs with the Release in `Producer::close`: if the
        // producer's bit is set, the words it stored before closing are
        // visible to the re-read below.
        let closed = self.shared.closed_bits(Ordering::Acquire);
        if closed == 0 {
            return Err(PopError::Empty);
        }
        // Any closed bit ends the stream once it is drained, including
        // bits no version defines (only a peer breaking the protocol
        // writes those): the producer treats every bit as closed too, and
        // calling such a word "open" would make `data_changed` report a
        // change forever and the waiting calls spin.
        // Acquire: as in `try_record`.
        match self.shared.load_word(off, Ordering::Acquire) {
            0 => Err(PopError::Closed),
            word => Ok(word),
        }
    }

    /// Releases `n` bytes to the producer and wakes it if it waits; with
    /// a release batch, only once the batch is full or the producer is
    /// seen waiting.
    #[inline]
    fn advance(&mut self, n: usize) {
        self.head = self.head.wrapping_add(n as u64);
        // Relaxed: a hint; a waiting producer missed here is woken at the
        // batch's end or at the latest when this reader catches up, whose
        // publication runs the full handshake below.
        if self.head.wrapping_sub(self.published) < self.release_batch
            && self
                .shared
                .header()
                .producer_waiting
                .0
                .load(Ordering::Relaxed)
                == 0
        {
            return;
        }
        self.publish();
    }

    /// Stores our position for the producer and wakes it if it waits.
    #[inline]
    fn publish(&mut self) {
        self.published = self.head;
        let h = self.shared.header();
        // Release: our reads of the released bytes happen before the
        // producer may overwrite them; pairs with its Acquire load of
        // `head` in `refresh_head`.
        h.head.0.store(self.head, Ordering::Release);
        // The waker's half of the handshake.
        handshake::wake(&self.shared, Direction::Space);
    }

    /// Spins, then sleeps until the producer publishes, the ring closes,
    /// or the deadline passes.
    #[cold]
    fn wait_data(&mut self, deadline: Deadline) -> Result<(), PopError> {
        handshake::sleep(&self.shared, Direction::Data, self.spin, deadline, || {
            self.data_changed()
        })
        .map_err(|()| PopError::TimedOut)
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.close();
    }
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("capacity", &self.capacity)
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

/// A record viewed in place in the shared memory, from
/// [`Consumer::try_peek`] and friends. Dereferences to the payload.
/// [`release`](Self::release) frees its space; dropping the grant without
/// releasing keeps the record for the next peek.
///
/// The producer cannot legitimately touch the bytes until they are
/// released; a producer that breaks the protocol may change them under
/// the reader, so validate payload contents as you would any input.
pub struct ReadGrant<'a> {
    consumer: &'a mut Consumer,
    record: Record,
}

impl ReadGrant<'_> {
    /// Frees the record's space for the producer.
    pub fn release(self) {
        let size = record_size(self.record.len);
        self.consumer.advance(size);
    }
}

impl Deref for ReadGrant<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `try_record` checked `off + record_size(len) <=
        // capacity`, and acquired the record's word: the record is
        // published, and the producer does not write it again until we
        // release it (`head` moves past it); no `&mut` to it exists in
        // this process.
        unsafe {
            self.consumer
                .shared
                .bytes(self.record.off + RECORD_HEADER, self.record.len)
        }
    }
}

impl fmt::Debug for ReadGrant<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadGrant")
            .field("len", &self.record.len)
            .finish_non_exhaustive()
    }
}
