//! Shared mappings of files a peer may shrink under us.
//!
//! A file that cannot be sealed (a named ring, a libqb ring in
//! `/dev/shm`) can be truncated by any process that may write it. An
//! access to a page of a mapping past the file's new end raises `SIGBUS`,
//! whose default action kills the process: one hostile client would take
//! a server and all its other clients down.
//!
//! A [`GuardedMap`] survives it. While one exists, the process has a
//! `SIGBUS` handler (installed once, on first use): a fault inside a
//! guarded mapping replaces the faulting page, in this process only, by a
//! private zero page (`mmap(MAP_FIXED | MAP_ANONYMOUS)`), marks the
//! mapping [`truncated`](GuardedMap::truncated), and returns, so the
//! access completes on the zero page. The owner sees the mark (and reads
//! zeros, which no valid ring state is made of) and drops the peer. A
//! fault anywhere else goes to the handler that was there before ours, or,
//! if there was none, kills the process as it would have.
//!
//! The handler only reads a lock-free registry of address ranges (atomics
//! in chunks that are never freed) and makes one `mmap` system call:
//! nothing that allocates, locks or may fail halfway.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Registry slots per chunk.
const SLOTS: usize = 64;

/// One guarded range, or a free slot (`start == 0`).
struct Slot {
    /// Taken by a live `GuardedMap` (set before `start`, cleared after).
    taken: AtomicBool,
    start: AtomicUsize,
    len: AtomicUsize,
    /// A fault was rescued in the range.
    hit: AtomicBool,
}

/// A block of slots; chunks are linked from [`HEAD`] and never freed, so
/// the handler may walk them at any time.
struct Chunk {
    slots: [Slot; SLOTS],
    next: AtomicPtr<Chunk>,
}

static HEAD: AtomicPtr<Chunk> = AtomicPtr::new(ptr::null_mut());

/// What installing the handler gave: the page size and the action it
/// replaced, or why it could not be installed.
static INSTALLED: OnceLock<Result<Installed, i32>> = OnceLock::new();

#[derive(Clone, Copy)]
struct Installed {
    page: usize,
    previous: libc::sigaction,
}

fn install() -> io::Result<&'static Installed> {
    let r = INSTALLED.get_or_init(|| {
        let page = page_size();
        // SAFETY: zeroed is a valid `sigaction`; the calls read and write
        // only the structs passed; `on_sigbus` has the `SA_SIGINFO`
        // signature.
        unsafe {
            let mut previous: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, ptr::null(), &mut previous) != 0 {
                return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
            }
            let mut ours: libc::sigaction = std::mem::zeroed();
            ours.sa_sigaction = on_sigbus as *const () as usize;
            ours.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
            libc::sigemptyset(&mut ours.sa_mask);
            // `previous` is recorded before ours can run: `get_or_init`
            // publishes it only after this closure, so a fault in between
            // (not ours: nothing is registered yet) finds no record and
            // gets the default action, as without us.
            if libc::sigaction(libc::SIGBUS, &ours, ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
            }
            Ok(Installed { page, previous })
        }
    });
    r.as_ref().map_err(|&e| io::Error::from_raw_os_error(e))
}

/// The `SIGBUS` handler.
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid `siginfo_t` to an `SA_SIGINFO`
    // handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    let installed = match INSTALLED.get() {
        Some(Ok(i)) => *i,
        _ => return default_action(),
    };
    if rescue(addr, installed.page) {
        return;
    }
    let previous = installed.previous;
    if previous.sa_sigaction == libc::SIG_DFL || previous.sa_sigaction == libc::SIG_IGN {
        // A synchronous SIGBUS cannot be ignored: the default it is.
        return default_action();
    }
    // SAFETY: `previous` was a handler the process installed; it is called
    // as it was registered to be called.
    unsafe {
        if previous.sa_flags & libc::SA_SIGINFO != 0 {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                std::mem::transmute(previous.sa_sigaction);
            f(sig, info, ctx);
        } else {
            let f: extern "C" fn(libc::c_int) = std::mem::transmute(previous.sa_sigaction);
            f(sig);
        }
    }
}

/// Restores the default action; the faulting access repeats on return and
/// the process ends as it would have without us.
fn default_action() {
    // SAFETY: zeroed is a valid `sigaction` (SIG_DFL, no flags).
    unsafe {
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(libc::SIGBUS, &dfl, ptr::null_mut());
    }
}

/// If `addr` is in a guarded range: a private zero page over the faulting
/// page, the range marked. Async-signal-safe: atomics and one `mmap`.
fn rescue(addr: usize, page: usize) -> bool {
    let mut chunk = HEAD.load(Ordering::Acquire);
    while !chunk.is_null() {
        // SAFETY: chunks are leaked boxes, never freed.
        let c = unsafe { &*chunk };
        for slot in &c.slots {
            let start = slot.start.load(Ordering::Acquire);
            if start == 0 || addr < start || addr - start >= slot.len.load(Ordering::Acquire) {
                continue;
            }
            let at = addr & !(page - 1);
            // SAFETY: `at` is a page inside a live mapping of ours (the
            // range is registered while mapped); replacing it changes no
            // memory any Rust object owns but this mapping.
            let r = unsafe {
                libc::mmap(
                    at as *mut libc::c_void,
                    page,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if r == libc::MAP_FAILED {
                return false;
            }
            slot.hit.store(true, Ordering::Release);
            return true;
        }
        chunk = c.next.load(Ordering::Acquire);
    }
    false
}

/// A registered range; unregistered on drop.
struct Registration {
    slot: &'static Slot,
}

impl Registration {
    fn new(start: usize, len: usize) -> Registration {
        loop {
            let mut chunk = HEAD.load(Ordering::Acquire);
            while !chunk.is_null() {
                // SAFETY: chunks are leaked boxes, never freed.
                let c: &'static Chunk = unsafe { &*chunk };
                for slot in &c.slots {
                    if slot
                        .taken
                        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                    {
                        slot.hit.store(false, Ordering::Relaxed);
                        slot.len.store(len, Ordering::Relaxed);
                        // Release: the handler that sees `start` sees `len`.
                        slot.start.store(start, Ordering::Release);
                        return Registration { slot };
                    }
                }
                chunk = c.next.load(Ordering::Acquire);
            }
            // All taken: one more chunk at the head.
            let fresh: &'static mut Chunk = Box::leak(Box::new(Chunk {
                slots: std::array::from_fn(|_| Slot {
                    taken: AtomicBool::new(false),
                    start: AtomicUsize::new(0),
                    len: AtomicUsize::new(0),
                    hit: AtomicBool::new(false),
                }),
                next: AtomicPtr::new(ptr::null_mut()),
            }));
            let head = HEAD.load(Ordering::Acquire);
            fresh.next.store(head, Ordering::Relaxed);
            let fresh: *mut Chunk = fresh;
            if HEAD
                .compare_exchange(head, fresh, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                // Another thread added one: ours stays unused but linked
                // nowhere; leak it (a few KiB, once in a race).
            }
        }
    }

    fn hit(&self) -> bool {
        self.slot.hit.load(Ordering::Acquire)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.slot.start.store(0, Ordering::Release);
        self.slot.taken.store(false, Ordering::Release);
    }
}

/// A `MAP_SHARED` read-write mapping of a file a peer may truncate (see
/// the module's documentation). Accessed through its methods only, each
/// bounds-checked.
pub struct GuardedMap {
    base: *mut u8,
    /// Bytes accessible (twice the file's size for a circular mapping).
    len: usize,
    /// Bytes mapped (rounded up to pages), for `munmap`.
    mapped: usize,
    registration: Registration,
}

// SAFETY: the mapping is process memory owned by this value alone; every
// access goes through atomics or volatile-free byte copies whose
// concurrent writers are other processes (as with any shared memory).
unsafe impl Send for GuardedMap {}
// SAFETY: as above; `&GuardedMap` allows only atomic operations and
// copies, which other threads may make at once.
unsafe impl Sync for GuardedMap {}

impl std::fmt::Debug for GuardedMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedMap")
            .field("len", &self.len)
            .field("truncated", &self.truncated())
            .finish_non_exhaustive()
    }
}

impl GuardedMap {
    /// Maps `len` bytes of `fd` from offset 0.
    ///
    /// # Errors
    ///
    /// The handler cannot be installed, `len` is zero, or `mmap` fails.
    pub fn map(fd: BorrowedFd<'_>, len: usize) -> io::Result<GuardedMap> {
        let installed = install()?;
        if len == 0 {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        let mapped = len.div_ceil(installed.page) * installed.page;
        // SAFETY: a fresh mapping at an address the kernel chooses.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                mapped,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(GuardedMap {
            base: base.cast(),
            len,
            mapped,
            registration: Registration::new(base as usize, mapped),
        })
    }

    /// Maps the first `len` bytes of `fd` twice, back to back, so that a
    /// record running past the end continues at the start (libqb's data
    /// region). `len` must be a multiple of the page size.
    ///
    /// # Errors
    ///
    /// As [`map`](Self::map); `InvalidInput` if `len` is not a multiple
    /// of the page size.
    pub fn map_circular(fd: BorrowedFd<'_>, len: usize) -> io::Result<GuardedMap> {
        let installed = install()?;
        if len == 0 || len % installed.page != 0 {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        let mapped = 2 * len;
        // SAFETY: reserves address space nobody uses; the two file
        // mappings then replace it with `MAP_FIXED` inside that reserve.
        unsafe {
            let base = libc::mmap(
                ptr::null_mut(),
                mapped,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if base == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            for half in [0, len] {
                let at = base.cast::<u8>().add(half).cast::<libc::c_void>();
                let r = libc::mmap(
                    at,
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_FIXED,
                    fd.as_raw_fd(),
                    0,
                );
                if r == libc::MAP_FAILED {
                    let e = io::Error::last_os_error();
                    libc::munmap(base, mapped);
                    return Err(e);
                }
            }
            Ok(GuardedMap {
                base: base.cast(),
                len: mapped,
                mapped,
                registration: Registration::new(base as usize, mapped),
            })
        }
    }

    /// Bytes accessible.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is mapped (never: a mapping has a length).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether an access found the file shorter than the mapping: what
    /// was read since may be zeros, what was written is lost. The peer
    /// that shrank the file broke the protocol.
    pub fn truncated(&self) -> bool {
        self.registration.hit()
    }

    fn at(&self, offset: usize, size: usize, align: usize) -> *mut u8 {
        assert!(
            offset % align == 0 && offset.checked_add(size).is_some_and(|e| e <= self.len),
            "access of {size} bytes at {offset} outside a mapping of {}",
            self.len
        );
        // SAFETY: in bounds, checked above.
        unsafe { self.base.add(offset) }
    }

    /// The 32-bit word at `offset` (4-aligned), as an atomic.
    ///
    /// # Panics
    ///
    /// If the word is not inside the mapping or not aligned.
    pub fn u32(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: aligned, in bounds, and alive as long as `self`; an
        // atomic's interior mutability makes a shared reference sound
        // while others write it.
        unsafe { &*self.at(offset, 4, 4).cast::<AtomicU32>() }
    }

    /// The 64-bit word at `offset` (8-aligned), as an atomic.
    ///
    /// # Panics
    ///
    /// As [`u32`](Self::u32).
    pub fn u64(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: as in `u32`.
        unsafe { &*self.at(offset, 8, 8).cast::<AtomicU64>() }
    }

    /// The address of the byte at `offset`, for a futex call on a word
    /// there (an address past the file's end makes the call fail with
    /// `EFAULT`, not fault).
    ///
    /// # Panics
    ///
    /// If `offset` is outside the mapping.
    pub fn addr(&self, offset: usize) -> *const u8 {
        self.at(offset, 1, 1)
    }

    /// Copies bytes out of the mapping.
    ///
    /// # Panics
    ///
    /// If the span is outside the mapping.
    pub fn read(&self, offset: usize, out: &mut [u8]) {
        let src = self.at(offset, out.len(), 1);
        // SAFETY: in bounds; the destination is a distinct local buffer.
        // Another process may write the source meanwhile: the bytes read
        // are then whatever was there, validated by the caller.
        unsafe { ptr::copy_nonoverlapping(src, out.as_mut_ptr(), out.len()) }
    }

    /// Copies bytes into the mapping.
    ///
    /// # Panics
    ///
    /// If the span is outside the mapping.
    pub fn write(&self, offset: usize, bytes: &[u8]) {
        let dst = self.at(offset, bytes.len(), 1);
        // SAFETY: in bounds; the source is a distinct buffer.
        unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len()) }
    }
}

impl GuardedMap {
    /// `FUTEX_WAIT` (shared) on the 32-bit word at `offset` while it
    /// holds `expected`, for at most `timeout`. Returns whether the wait
    /// timed out; every other outcome (woken, value changed, interrupted,
    /// `EFAULT` past a truncated file) sends the caller back to look.
    ///
    /// # Panics
    ///
    /// If the word is outside the mapping or not 4-aligned.
    pub fn futex_wait(
        &self,
        offset: usize,
        expected: u32,
        timeout: Option<std::time::Duration>,
    ) -> bool {
        let word = self.at(offset, 4, 4);
        let ts = timeout.map(|d| libc::timespec {
            tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        });
        let ts_ptr = ts
            .as_ref()
            .map_or(ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `word` is an aligned address inside our mapping; `ts`
        // outlives the call. The kernel only reads the word.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word,
                libc::FUTEX_WAIT,
                expected,
                ts_ptr,
                ptr::null::<u32>(),
                0u32,
            )
        };
        r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT)
    }

    /// `FUTEX_WAKE` (shared) of up to `n` waiters on the word at `offset`.
    ///
    /// # Panics
    ///
    /// As [`futex_wait`](Self::futex_wait).
    pub fn futex_wake(&self, offset: usize, n: i32) {
        let word = self.at(offset, 4, 4);
        // SAFETY: FUTEX_WAKE only uses the address as a key.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word,
                libc::FUTEX_WAKE,
                n,
                ptr::null::<libc::timespec>(),
                ptr::null::<u32>(),
                0u32,
            )
        };
    }
}

/// The system's page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(page).unwrap_or(4096)
}

impl Drop for GuardedMap {
    fn drop(&mut self) {
        // Unregistered first (the registration is a field, dropped after
        // this body, so do it by hand): no rescue of an address about to
        // be reused.
        self.registration.slot.start.store(0, Ordering::Release);
        // SAFETY: the range was mapped by us and nothing refers to it.
        unsafe {
            libc::munmap(self.base.cast(), self.mapped);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn file(len: usize) -> std::fs::File {
        let f = tempfile_in_shm();
        f.set_len(len as u64).expect("size");
        f
    }

    fn tempfile_in_shm() -> std::fs::File {
        let fd = crate::sys::memfd_create(c"guard-test").expect("memfd");
        std::fs::File::from(fd)
    }

    #[test]
    fn a_truncated_file_reads_zeros_and_is_marked() {
        let f = file(3 * 4096);
        let m = GuardedMap::map(f.as_fd(), 3 * 4096).expect("map");
        m.u32(8192).store(7, Ordering::Relaxed);
        assert_eq!(m.u32(8192).load(Ordering::Relaxed), 7);
        assert!(!m.truncated());
        f.set_len(4096).expect("shrink");
        // Would be SIGBUS.
        assert_eq!(m.u32(8192).load(Ordering::Relaxed), 0);
        assert!(m.truncated());
        m.u32(8196).store(9, Ordering::Relaxed);
        let mut b = [1u8; 16];
        m.read(2 * 4096 + 100, &mut b);
        assert_eq!(b, [0; 16]);
        // The first page is still the file's.
        m.u32(0).store(5, Ordering::Relaxed);
        let again = GuardedMap::map(f.as_fd(), 4096).expect("map");
        assert_eq!(again.u32(0).load(Ordering::Relaxed), 5);
        assert!(!again.truncated());
    }

    #[test]
    fn a_circular_mapping_wraps() {
        let f = file(4096);
        let m = GuardedMap::map_circular(f.as_fd(), 4096).expect("map");
        assert_eq!(m.len(), 8192);
        m.write(4096 - 2, b"abcd");
        let mut b = [0u8; 2];
        m.read(0, &mut b);
        assert_eq!(&b, b"cd");
        f.set_len(0).expect("shrink");
        assert_eq!(m.u32(4096).load(Ordering::Relaxed), 0);
        assert!(m.truncated());
    }

    #[test]
    fn many_mappings_reuse_slots() {
        let f = file(4096);
        let maps: Vec<_> = (0..200)
            .map(|_| GuardedMap::map(f.as_fd(), 4096).expect("map"))
            .collect();
        drop(maps);
        for _ in 0..200 {
            let _ = GuardedMap::map(f.as_fd(), 4096).expect("map");
        }
    }
}
