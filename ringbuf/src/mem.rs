//! The memory a ring lives in (a shared mapping, or the heap for tests,
//! Miri and loom) and the raw accesses to it. Every pointer into the data
//! region is formed here, from offsets the callers have validated.
#![allow(unsafe_code)]

use std::path::PathBuf;
use std::ptr::NonNull;

use crate::layout::{Header, CACHE_LINE, HEADER_SIZE, PREFETCH_BYTES};
use crate::signals::Signals;
// Record words publish the records (layout version 2), so loom must see
// them: under loom they live in an array of loom atomics beside the
// payload bytes (`Shared::loom_words`); otherwise they are the data
// region's own 8-byte words, accessed as std atomics.
use crate::sync::{AtomicU64, Ordering};

/// What owns the bytes.
#[derive(Debug)]
enum Backing {
    /// A `MAP_SHARED` mapping of the ring file (header page + data),
    /// held for its `Drop` (munmap).
    #[cfg(not(loom))]
    Mapped { _map: memmap2::MmapRaw },
    /// Heap memory: `header` from `Box<Header>`, `data` from `Box<[u64]>`
    /// of `words` elements.
    Heap {
        header: *mut Header,
        data: *mut u64,
        words: usize,
    },
}

/// One ring's memory, kernel objects and bookkeeping; shared by the
/// [`Ring`](crate::Ring) handle and its claimed roles.
#[derive(Debug)]
pub(crate) struct Shared {
    header: NonNull<Header>,
    data: NonNull<u8>,
    /// Size of the data region, validated when the ring was opened. Never
    /// re-read from the header.
    pub(crate) capacity: usize,
    pub(crate) signals: Signals,
    /// A named file this handle created and removes when dropped.
    pub(crate) unlink_on_drop: std::sync::Mutex<Option<PathBuf>>,
    backing: Backing,
    /// Under loom, the record words, one per 8 data bytes: loom cannot
    /// model atomics over raw memory. Payload bytes stay in the heap
    /// buffer (loom does not model them; the words carry the ordering).
    #[cfg(loom)]
    loom_words: Box<[AtomicU64]>,
}

// SAFETY: the header is only accessed through atomics. The data region is
// only accessed by the one `Producer` (the free span between tail and
// head + capacity) and the one `Consumer` (the published span between head
// and tail) — roles claimed once per ring and `!Sync` — so no two threads
// of this process touch the same data bytes at once. The heap pointers are
// owned and freed only in `Drop`.
unsafe impl Send for Shared {}
// SAFETY: as above: `&Shared` gives access only to atomics and to
// role-partitioned data.
unsafe impl Sync for Shared {}

impl Shared {
    /// Wraps a mapping whose size was checked to be
    /// `HEADER_SIZE + capacity`.
    #[cfg(not(loom))]
    pub(crate) fn mapped(map: memmap2::MmapRaw, capacity: usize, signals: Signals) -> Shared {
        assert_eq!(
            map.len(),
            HEADER_SIZE + capacity,
            "mapping size checked by caller"
        );
        let base = map.as_mut_ptr();
        // The mapping is page-aligned and non-null, so the header (align
        // 128) is aligned, and data starts a page later (align 4096).
        let header = NonNull::new(base.cast::<Header>()).expect("mmap returned null");
        // SAFETY: HEADER_SIZE < map.len(), so the result stays inside the
        // same mapping.
        let data = NonNull::new(unsafe { base.add(HEADER_SIZE) }).expect("in-bounds pointer");
        Shared {
            header,
            data,
            capacity,
            signals,
            unlink_on_drop: std::sync::Mutex::new(None),
            backing: Backing::Mapped { _map: map },
        }
    }

    /// A ring on the heap, already initialised, for tests, Miri and loom.
    pub(crate) fn heap(capacity: usize, wake_mode: u32, signals: Signals) -> Shared {
        let words = capacity / 8;
        let header = Box::into_raw(Box::new(Header::new_heap(capacity, wake_mode)));
        let data = Box::into_raw(vec![0u64; words].into_boxed_slice()).cast::<u64>();
        Shared {
            header: NonNull::new(header).expect("Box is non-null"),
            data: NonNull::new(data.cast::<u8>()).expect("Box is non-null"),
            capacity,
            signals,
            unlink_on_drop: std::sync::Mutex::new(None),
            backing: Backing::Heap {
                header,
                data,
                words,
            },
            #[cfg(loom)]
            loom_words: (0..words).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The shared header.
    #[inline]
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: `header` points to a live, aligned `Header` for as long
        // as `self` (and so the backing) lives. `Header` holds only
        // atomics, whose interior mutability makes a shared reference
        // sound while other threads or processes write them. A mapping of
        // a fresh file reads as zeroes, a valid value for every atomic.
        unsafe { self.header.as_ref() }
    }

    /// Marks the ring closed for both sides (both closed bits), as
    /// [`Ring::close`](crate::Ring::close) does, without waking anyone:
    /// for a side that learned its peer is gone.
    pub(crate) fn mark_closed(&self) {
        use crate::layout::{CLOSED_BY_CONSUMER, CLOSED_BY_PRODUCER};
        // Release: as in `Ring::close`.
        self.header().control.0.closed.fetch_or(
            CLOSED_BY_PRODUCER | CLOSED_BY_CONSUMER,
            crate::sync::Ordering::Release,
        );
    }

    /// The closed bits (either side's, and any a peer wrote), loaded with
    /// `order`: Relaxed for a check, Acquire where the words stored
    /// before a close must be visible after it.
    #[inline]
    pub(crate) fn closed_bits(&self, order: crate::sync::Ordering) -> u32 {
        self.header().control.0.closed.load(order)
    }

    /// The record word at data offset `off`, as an atomic.
    ///
    /// The caller guarantees `off` is a multiple of 8 and `off + 8 <=
    /// capacity` (checked in debug builds): every caller masks a position
    /// it keeps 8-aligned (its own, validated at claim) with
    /// `capacity - 1`.
    #[inline]
    fn word(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off % 8 == 0 && off + 8 <= self.capacity);
        #[cfg(loom)]
        return &self.loom_words[off / 8];
        #[cfg(not(loom))]
        // SAFETY: in bounds (the contract above) and 8-aligned (the data region
        // is page- or u64-aligned, `off` is a multiple of 8), so the place
        // is a valid `AtomicU64` for as long as `self` (and the backing)
        // lives; every bit pattern is a valid value, and atomics may be
        // read and written while the peer does the same.
        unsafe {
            &*self.data.as_ptr().add(off).cast::<AtomicU64>()
        }
    }

    /// Loads the record word at data offset `off` with `order`: Acquire
    /// where the word publishes a record (the consumer), Relaxed for a
    /// hint or a test.
    #[inline]
    pub(crate) fn load_word(&self, off: usize, order: Ordering) -> u64 {
        self.word(off).load(order)
    }

    /// Stores the record word at data offset `off` with `order`: Release
    /// to publish a record (the producer's commit), Relaxed to clear the
    /// next record's place before that Release.
    #[inline]
    pub(crate) fn store_word(&self, off: usize, word: u64, order: Ordering) {
        self.word(off).store(word, order);
    }

    /// Starts bringing the lines of the record at data offset `off` that
    /// follow its word's line, up to `off + size` and at most
    /// [`PREFETCH_BYTES`] past `off`, into this core's cache: for reading,
    /// or with `write` for writing (`prefetchw`). The word's own line is
    /// left alone (the peer polls or writes it). A hint: it changes no
    /// byte, reads nothing into the program, cannot fault, and does
    /// nothing off x86-64.
    #[inline]
    pub(crate) fn prefetch_record(&self, off: usize, size: usize, write: bool) {
        let end = off + size.min(PREFETCH_BYTES);
        let mut line = (off / CACHE_LINE + 1) * CACHE_LINE;
        while line < end {
            self.prefetch_line(line, write);
            line += CACHE_LINE;
        }
    }

    /// [`prefetch_record`](Self::prefetch_record)'s hint for the line
    /// holding data byte `off` (modulo the capacity).
    #[inline]
    fn prefetch_line(&self, off: usize, write: bool) {
        #[cfg(all(target_arch = "x86_64", not(loom)))]
        {
            // SAFETY: the offset is masked into the data region (its
            // capacity is a power of two), so the address is in the
            // mapping; either prefetch reads nothing into the program,
            // writes nothing, and cannot fault in any case.
            unsafe {
                let at = self.data.as_ptr().add(off & (self.capacity - 1));
                if write {
                    std::arch::asm!(
                        "prefetchw [{0}]",
                        in(reg) at,
                        options(nostack, preserves_flags, readonly)
                    );
                } else {
                    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                    _mm_prefetch::<_MM_HINT_T0>(at.cast::<i8>());
                }
            }
        }
        #[cfg(not(all(target_arch = "x86_64", not(loom))))]
        let _ = (off, write);
    }

    /// The payload bytes `[off, off + len)` of the data region, for
    /// reading.
    ///
    /// # Safety
    ///
    /// `off + len <= capacity`, and the span is one the protocol grants
    /// the caller (the consumer's published record), with no `&mut` to it
    /// alive in this process for the returned lifetime.
    #[inline]
    pub(crate) unsafe fn bytes(&self, off: usize, len: usize) -> &[u8] {
        debug_assert!(off + len <= self.capacity);
        // SAFETY: in bounds per the contract; bytes in the mapping are
        // always initialised, and every bit pattern is a valid `u8`, so a
        // peer that breaks the protocol and writes the span concurrently
        // can change the values seen but not make them invalid; the ring
        // takes no decision from payload bytes.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr().add(off), len) }
    }

    /// The payload bytes `[off, off + len)`, for writing.
    ///
    /// # Safety
    ///
    /// `off + len <= capacity`, and the span is free space granted to the
    /// caller (the producer's reservation), with no other reference to it
    /// alive in this process for the returned lifetime.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn bytes_mut(&self, off: usize, len: usize) -> &mut [u8] {
        debug_assert!(off + len <= self.capacity);
        // SAFETY: in bounds and exclusive within this process per the
        // contract; see `bytes` for why a misbehaving peer cannot make
        // this unsound in practice.
        unsafe { std::slice::from_raw_parts_mut(self.data.as_ptr().add(off), len) }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        match self.backing {
            #[cfg(not(loom))]
            Backing::Mapped { .. } => {} // MmapRaw unmaps itself.
            Backing::Heap {
                header,
                data,
                words,
            } => {
                // SAFETY: both pointers came from `Box::into_raw` in `heap`
                // with these exact types and length, and are freed once,
                // here, after every role handle (which holds an `Arc` to
                // `self`) has gone.
                unsafe {
                    drop(Box::from_raw(header));
                    drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                        data, words,
                    )));
                }
            }
        }
        if let Some(path) = self
            .unlink_on_drop
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = std::fs::remove_file(path);
        }
    }
}
