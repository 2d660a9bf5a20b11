//! The byte layout of a ring file: a fixed header page followed by a
//! power-of-two data region of variable-length records.
//!
//! ```text
//! offset  size  field                     written by
//! 0       8     magic (published last)    creator
//! 8       4     layout version            creator
//! 12      4     header size (4096)        creator
//! 16      8     capacity (bytes of data)  creator
//! 24      4     wake mode (1 eventfd, 2 futex)
//! 28      4     user word (application-defined)  creator
//! 128     8     tail: producer position   producer
//! 256     8     head: consumer position   consumer
//! 384     4     consumer-waiting flag     consumer (producer clears)
//! 512     4     producer-waiting flag     producer (consumer clears)
//! 640     4     producer owner (pid)      producer claim
//! 644     4     consumer owner (pid)      consumer claim
//! 648     4     closed bits               either side
//! 652     4     sync bits (cleared)       each side at claim
//! 4096    cap   data region
//! ```
//!
//! All integers are native-endian (both sides share one machine).
//! Positions are monotonically increasing byte counters; `pos % capacity`
//! is the offset in the data region. Each record starts with an 8-byte
//! word, `len | kind << 32`, followed by `len` payload bytes, padded to a
//! multiple of 8. A record never wraps: a [`KIND_PAD`] record fills the
//! tail of the region and the next record starts at offset 0.
//!
//! Layout version 2: the record word publishes the record. The producer
//! stores it last, with Release, after clearing the word where the next
//! record will start; the consumer polls the word at its own position
//! (0: nothing yet) and never reads `tail` to find records. Records
//! therefore take at most `capacity - 8` bytes: the word after the last
//! one must be free for the producer to clear.

use crate::sync::{AtomicU32, AtomicU64};

/// Magic number at offset 0 of every ring file ("RLRING" + layout tag).
pub const MAGIC: u64 = u64::from_le_bytes(*b"RLRING\x00\x01");
/// Version of this layout. A different version is refused on open.
///
/// Version 2 (this one): records are published by their own word
/// (Release, polled by the consumer with Acquire), the word after each
/// record is cleared before it is published, and `tail` is off the
/// consumer's path. Version 1 published records by `tail`; a version-1
/// side would misread a version-2 ring, and the reverse.
pub const LAYOUT_VERSION: u32 = 2;
/// Size of the header page; the data region starts here.
pub const HEADER_SIZE: usize = 4096;
/// Smallest data region accepted.
pub const MIN_CAPACITY: usize = 64;
/// Largest data region accepted (record lengths are 32-bit).
pub const MAX_CAPACITY: usize = 1 << 32;
/// Size of the word that starts every record.
pub const RECORD_HEADER: usize = 8;
/// Records start at multiples of this.
pub const RECORD_ALIGN: usize = 8;
/// Record kind: a message.
pub const KIND_DATA: u32 = 0x5244_0001;
/// Record kind: padding up to the end of the data region.
pub const KIND_PAD: u32 = 0x5244_0002;

/// Closed bit set by the producer.
pub(crate) const CLOSED_BY_PRODUCER: u32 = 1;
/// Closed bit set by the consumer.
pub(crate) const CLOSED_BY_CONSUMER: u32 = 2;
/// Sync bit of the producer (older versions: "sleeps behind a
/// `membarrier`"); this version clears it at claim.
pub(crate) const SYNC_PRODUCER: u32 = 1;
/// Sync bit of the consumer; cleared at claim, as [`SYNC_PRODUCER`].
pub(crate) const SYNC_CONSUMER: u32 = 2;

/// Size a record of `len` payload bytes occupies, header and padding
/// included.
#[inline]
pub const fn record_size(len: usize) -> usize {
    RECORD_HEADER + ((len + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1))
}

/// Largest payload a ring of `capacity` bytes accepts.
///
/// Half the region less the record header: a record of that size always
/// fits once the ring is empty, whatever the current offset `o`, with the
/// word after it (which the producer clears) and any padding. For `o <=
/// capacity / 2` the record (`capacity / 2` bytes) fits before the end
/// and its next word within the other half; for `o > capacity / 2` (so
/// `o >= capacity / 2 + 8`) padding runs to the end, the record takes
/// `[0, capacity / 2)` and its next word `[capacity / 2, capacity / 2 +
/// 8)`, short of `o`.
#[inline]
pub const fn max_payload(capacity: usize) -> usize {
    capacity / 2 - RECORD_HEADER
}

/// Whether `capacity` is an acceptable data-region size.
#[inline]
pub const fn valid_capacity(capacity: usize) -> bool {
    capacity.is_power_of_two() && capacity >= MIN_CAPACITY && capacity <= MAX_CAPACITY
}

/// Packs a record header word.
#[inline]
pub(crate) const fn record_word(len: u32, kind: u32) -> u64 {
    len as u64 | (kind as u64) << 32
}

/// The cache line the rings' prefetches assume (x86-64; most ARM cores):
/// the producer takes a record's other lines for writing as it reserves
/// it, a consumer that waited fetches them as it finds the word.
pub(crate) const CACHE_LINE: usize = 64;

/// How far past a record's word the rings prefetch its lines (the
/// consumer for reading after a wait, the producer for writing): the
/// small messages whose latency that shortens; larger ones are streamed
/// by the hardware's prefetcher.
pub(crate) const PREFETCH_BYTES: usize = 256;

/// One cache-line pair (128 bytes: adjacent-line prefetch on x86 pulls
/// lines in pairs), so fields written by different sides never share one.
#[repr(C, align(128))]
#[derive(Debug)]
pub(crate) struct Line<T>(pub(crate) T);

/// Fields written once by the creator, before `magic` is published.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Meta {
    pub(crate) magic: AtomicU64,
    pub(crate) version: AtomicU32,
    pub(crate) header_size: AtomicU32,
    pub(crate) capacity: AtomicU64,
    pub(crate) wake_mode: AtomicU32,
    /// A value the creator publishes to the ring's users; the ring
    /// itself ignores it (see [`Ring::set_user_word`](crate::Ring::set_user_word)).
    pub(crate) user_word: AtomicU32,
}

/// Role claims and the closed bits.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Control {
    pub(crate) producer_owner: AtomicU32,
    pub(crate) consumer_owner: AtomicU32,
    pub(crate) closed: AtomicU32,
    /// Bit [`SYNC_PRODUCER`] / [`SYNC_CONSUMER`]: older versions set
    /// theirs to say that they sleep behind a global expedited
    /// `membarrier`, and woke a peer whose bit was set with a
    /// compiler-only fence. This version clears its own at claim (so an
    /// older peer fences fully) and never reads the peer's (see `wake`).
    pub(crate) sync: AtomicU32,
}

/// The shared header. Only atomics: either process may write any of it at
/// any time (a hostile peer included), so nothing here is ever read
/// through a plain reference to a non-atomic type.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Header {
    pub(crate) meta: Line<Meta>,
    /// Producer position: bytes ever committed.
    pub(crate) tail: Line<AtomicU64>,
    /// Consumer position: bytes ever released.
    pub(crate) head: Line<AtomicU64>,
    /// Non-zero while the consumer is (about to be) asleep waiting for data.
    pub(crate) consumer_waiting: Line<AtomicU32>,
    /// Non-zero while the producer is (about to be) asleep waiting for space.
    pub(crate) producer_waiting: Line<AtomicU32>,
    pub(crate) control: Line<Control>,
}

impl Header {
    /// A header for heap-backed rings (tests, Miri, loom). Magic is
    /// already published.
    pub(crate) fn new_heap(capacity: usize, wake_mode: u32) -> Header {
        Header {
            meta: Line(Meta {
                magic: AtomicU64::new(MAGIC),
                version: AtomicU32::new(LAYOUT_VERSION),
                header_size: AtomicU32::new(HEADER_SIZE as u32),
                capacity: AtomicU64::new(capacity as u64),
                wake_mode: AtomicU32::new(wake_mode),
                user_word: AtomicU32::new(0),
            }),
            tail: Line(AtomicU64::new(0)),
            head: Line(AtomicU64::new(0)),
            consumer_waiting: Line(AtomicU32::new(0)),
            producer_waiting: Line(AtomicU32::new(0)),
            control: Line(Control {
                producer_owner: AtomicU32::new(0),
                consumer_owner: AtomicU32::new(0),
                closed: AtomicU32::new(0),
                sync: AtomicU32::new(0),
            }),
        }
    }
}

// The layout is a contract between processes (and other languages, see
// docs/RING.md): pin it.
#[cfg(not(loom))]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(offset_of!(Header, meta) == 0);
    assert!(offset_of!(Meta, magic) == 0);
    assert!(offset_of!(Meta, version) == 8);
    assert!(offset_of!(Meta, header_size) == 12);
    assert!(offset_of!(Meta, capacity) == 16);
    assert!(offset_of!(Meta, wake_mode) == 24);
    assert!(offset_of!(Meta, user_word) == 28);
    assert!(offset_of!(Header, tail) == 128);
    assert!(offset_of!(Header, head) == 256);
    assert!(offset_of!(Header, consumer_waiting) == 384);
    assert!(offset_of!(Header, producer_waiting) == 512);
    assert!(offset_of!(Header, control) == 640);
    assert!(offset_of!(Control, producer_owner) == 0);
    assert!(offset_of!(Control, consumer_owner) == 4);
    assert!(offset_of!(Control, closed) == 8);
    assert!(offset_of!(Control, sync) == 12);
    assert!(size_of::<Header>() == 768);
    assert!(size_of::<Header>() <= HEADER_SIZE);
    assert!(align_of::<Header>() == 128);
    assert!(HEADER_SIZE % 4096 == 0);
    assert!(max_payload(MAX_CAPACITY) < u32::MAX as usize);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_sizes_round_up_to_eight() {
        assert_eq!(record_size(0), 8);
        assert_eq!(record_size(1), 16);
        assert_eq!(record_size(7), 16);
        assert_eq!(record_size(8), 16);
        assert_eq!(record_size(9), 24);
        assert_eq!(record_size(4096), 4104);
    }

    #[test]
    fn max_payload_is_half_less_header() {
        assert_eq!(max_payload(64), 24);
        assert_eq!(max_payload(4096), 2040);
        assert_eq!(record_size(max_payload(64)), 32);
    }

    #[test]
    fn the_largest_record_fits_an_empty_ring_at_every_offset() {
        // The producer's room check for an empty ring (head == tail):
        // padding to the end if the record does not fit before it, the
        // record, and the word after it.
        for capacity in [64usize, 128, 4096, 1 << 20] {
            let size = record_size(max_payload(capacity));
            for off in (0..capacity).step_by(RECORD_ALIGN) {
                let to_end = capacity - off;
                let pad = if size <= to_end { 0 } else { to_end };
                assert!(
                    pad + size + RECORD_HEADER <= capacity,
                    "capacity {capacity}, offset {off}"
                );
            }
            // And one byte more would not fit at the worst offset.
            let worst = capacity / 2 + RECORD_ALIGN;
            let bigger = record_size(max_payload(capacity) + 1);
            assert!(capacity - worst + bigger + RECORD_HEADER > capacity);
        }
    }

    #[test]
    fn capacities() {
        assert!(!valid_capacity(0));
        assert!(!valid_capacity(32));
        assert!(valid_capacity(64));
        assert!(!valid_capacity(96));
        assert!(valid_capacity(1 << 20));
        assert!(valid_capacity(MAX_CAPACITY));
        assert!(!valid_capacity(MAX_CAPACITY * 2));
    }

    #[test]
    fn record_word_packs_len_low_kind_high() {
        let w = record_word(0x1234, KIND_DATA);
        assert_eq!(w as u32, 0x1234);
        assert_eq!((w >> 32) as u32, KIND_DATA);
    }
}
