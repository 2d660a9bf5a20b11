//! A mutex biased to the thread that keeps taking it: that thread locks
//! and unlocks with plain loads and stores, no locked instruction.
//!
//! # Why
//!
//! On x86 every atomic read-modify-write (a mutex's compare-exchange or
//! its unlocking swap) waits until the thread's earlier stores have left
//! its store buffer. Right after a thread has written a record into a
//! ring that the peer is polling, those stores wait for the lines to come
//! back from the peer's core: a cross-core round trip, about 150 ns on the
//! project's machine, per lock. A thread that takes no lock lets the
//! stores drain while it goes on, and overlaps them. The async client
//! shares its state between tasks behind a lock; with a plain mutex its
//! one-way sends ran at a quarter of the blocking client's rate, nearly
//! all of the time on the unlock's swap.
//!
//! # How
//!
//! The lock is either *biased* to one thread (the owner) or not. Only
//! the owner takes the fast path: it raises its own busy flag (a plain
//! store), orders it before its next load with a compiler fence only,
//! and checks that no revocation is under way and that it still owns the
//! bias. Every other thread, and the owner when the check fails, takes
//! the slow path: an ordinary mutex, and, if the lock is biased to
//! another thread, a *revocation*:
//!
//! ```text
//! owner (fast path)                     revoker (holds the slow mutex)
//! O1 busy[me] = 1                       R1 revoking = 1
//! O2 compiler fence                     R2 membarrier (every thread of
//! O3 read revoking, owner                  the process runs a full fence)
//! O4 if 0 and still mine: enter         R3 wait until busy[owner] == 0
//!                                       R4 owner = none, revoking = 0
//! ```
//!
//! This is an asymmetric Dekker handshake, with the membarrier on the
//! rare side. A private expedited membarrier reaches every CPU running
//! one of the process's threads (the kernel looks at the thread each CPU
//! runs); the rings' wake-up, between processes, cannot use the global
//! kind, which misses some (see [`wake`](crate::wake)). If the owner's O3 ran before the barrier reached its CPU, its O1
//! was drained by that barrier and R3 sees it (and waits for the owner
//! to leave); if after, O3 sees R1 and the owner goes the slow way. The
//! final `revoking = 0` is a Release store read with Acquire in O3, so an
//! owner that reads it sees `owner = none` too.
//!
//! Each thread that was ever granted the bias has a *slot*, its own busy
//! flag on its own cache line, kept for the lock's life: a thread that
//! read an old owner value and was preempted can only ever write its own
//! flag, never the flag of the thread that owns the bias now. Slots are
//! few ([`SLOTS`]); once they are all given, no new thread is granted
//! the bias and the lock is a plain mutex for those threads.
//!
//! # When the bias is granted and lost
//!
//! A thread that has taken the slow path `grant_after` times in a row
//! (no other thread in between) is granted the bias when it unlocks.
//! Each revocation (another thread wanted the lock) doubles
//! `grant_after`, up to [`MAX_GRANT_AFTER`]: a lock shared by busy
//! threads soon stops biasing and costs one plain mutex each time, a
//! revocation's membarrier (microseconds) being paid ever more rarely.
//!
//! Without `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` (old kernels,
//! seccomp) the lock never biases. Under loom, the owner and the revoker
//! both use SeqCst fences (the symmetric handshake), which loom checks.

#![allow(unsafe_code)]

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

use crate::layout::Line;
use crate::sync::{fence, AtomicU32, AtomicU64, Ordering};

#[cfg(loom)]
use loom::{cell::UnsafeCell, sync::Mutex, sync::MutexGuard};
#[cfg(not(loom))]
use std::sync::{Mutex, MutexGuard};

/// How many threads one lock can ever bias to.
pub const SLOTS: usize = 4;

/// Slow acquisitions in a row by one thread before it is granted the
/// bias, at first.
pub const GRANT_AFTER: u32 = 64;

/// The most `grant_after` grows to after revocations, by default.
pub const MAX_GRANT_AFTER: u32 = 1 << 16;

/// A mutex biased to the thread that keeps taking it (see the module).
///
/// No poisoning: a panic while the lock is held releases it, and the
/// value is as the panicking code left it.
pub struct BiasedMutex<T> {
    /// Read by the owner on each fast acquisition; written only by the
    /// holder of `slow`.
    hot: Line<Hot>,
    /// Each slot's busy flag, written only by the slot's thread.
    busy: [Line<AtomicU32>; SLOTS],
    slow: Mutex<Policy>,
    /// Revocations so far (written under `slow`, read without it).
    revocations: AtomicU64,
    /// Whether this lock may bias at all (membarrier available).
    biasing: bool,
    value: Cell<T>,
}

struct Hot {
    /// 1 + the slot of the thread the lock is biased to; 0: none.
    owner: AtomicU32,
    /// A revocation is under way (1).
    revoking: AtomicU32,
    /// The thread (its [`token`]) each slot belongs to; 0: free. A slot,
    /// once given, stays its thread's for the lock's life.
    tids: [AtomicU64; SLOTS],
}

/// Bookkeeping of the slow path, under `slow`.
#[derive(Debug)]
struct Policy {
    /// The thread that last took the slow path, and how many times in a
    /// row.
    last: u64,
    streak: u32,
    grant_after: u32,
    max_grant_after: u32,
}

// SAFETY: the value is reached only through a guard, and guards exclude
// one another (the module's handshake), so sharing the lock hands `T`
// from thread to thread, which `T: Send` allows.
unsafe impl<T: Send> Sync for BiasedMutex<T> {}

impl<T> BiasedMutex<T> {
    /// A lock around `value`, not biased to anyone yet.
    pub fn new(value: T) -> BiasedMutex<T> {
        Self::with_grant_after(value, GRANT_AFTER, MAX_GRANT_AFTER)
    }

    /// As [`new`](Self::new), granting the bias after `grant_after`
    /// slow acquisitions in a row (at least 1), a number that each
    /// revocation doubles up to `max` (at least `grant_after`).
    pub fn with_grant_after(value: T, grant_after: u32, max: u32) -> BiasedMutex<T> {
        let grant_after = grant_after.max(1);
        BiasedMutex {
            hot: Line(Hot {
                owner: AtomicU32::new(0),
                revoking: AtomicU32::new(0),
                tids: std::array::from_fn(|_| AtomicU64::new(0)),
            }),
            busy: std::array::from_fn(|_| Line(AtomicU32::new(0))),
            slow: Mutex::new(Policy {
                last: 0,
                streak: 0,
                grant_after,
                max_grant_after: max.max(grant_after),
            }),
            revocations: AtomicU64::new(0),
            biasing: can_bias(),
            value: Cell::new(value),
        }
    }

    /// Takes the lock, waiting for it. Like `std`'s mutex, taking it
    /// again on a thread that holds it is a bug: this panics when the
    /// thread holds the bias, and deadlocks otherwise.
    ///
    /// # Panics
    ///
    /// If this thread holds the lock through its bias already.
    #[inline]
    pub fn lock(&self) -> BiasedGuard<'_, T> {
        let me = token();
        let hot = &self.hot.0;
        let owner = hot.owner.load(Ordering::Relaxed);
        if owner != 0 {
            let slot = (owner - 1) as usize;
            if hot.tids[slot].load(Ordering::Relaxed) == me {
                let busy = &self.busy[slot].0;
                assert!(
                    busy.load(Ordering::Relaxed) == 0,
                    "BiasedMutex locked twice by one thread"
                );
                // O1, O2, O3 of the handshake.
                busy.store(1, Ordering::Relaxed);
                owner_fence();
                if hot.revoking.load(Ordering::Acquire) == 0
                    && hot.owner.load(Ordering::Relaxed) == owner
                {
                    return self.guard(Held::Fast(slot));
                }
                // Release: what we did under the lock before is
                // published with the flag that a revoker waits on.
                busy.store(0, Ordering::Release);
            }
        }
        self.lock_slow(me)
    }

    #[cold]
    fn lock_slow(&self, me: u64) -> BiasedGuard<'_, T> {
        let mut policy = self.slow.lock().unwrap_or_else(|e| e.into_inner());
        let hot = &self.hot.0;
        let owner = hot.owner.load(Ordering::Relaxed);
        if owner != 0 {
            let slot = (owner - 1) as usize;
            // Our own bias (we came here because a revocation was under
            // way, now over) needs no revoking: our flag is down.
            if hot.tids[slot].load(Ordering::Relaxed) != me {
                self.revoke(slot);
                let n = self.revocations.load(Ordering::Relaxed);
                self.revocations.store(n + 1, Ordering::Relaxed);
                policy.grant_after = policy
                    .grant_after
                    .saturating_mul(2)
                    .min(policy.max_grant_after);
            }
        }
        if policy.last == me {
            policy.streak = policy.streak.saturating_add(1);
        } else {
            policy.last = me;
            policy.streak = 1;
        }
        self.guard(Held::Slow(policy))
    }

    /// R1–R4: takes the bias away from `slot`'s thread, waiting for it
    /// to leave the lock if it holds it. Under `slow`.
    fn revoke(&self, slot: usize) {
        let hot = &self.hot.0;
        hot.revoking.store(1, Ordering::Relaxed);
        revoker_fence();
        let busy = &self.busy[slot].0;
        let mut spins = 0u32;
        // Acquire: pairs with the owner's Release clearing of its flag,
        // so what it wrote under the lock is ours to read.
        while busy.load(Ordering::Acquire) != 0 {
            backoff(&mut spins);
        }
        hot.owner.store(0, Ordering::Relaxed);
        // Release: an owner that reads this 0 (Acquire) sees owner = 0.
        hot.revoking.store(0, Ordering::Release);
    }

    fn guard<'a>(&'a self, held: Held<'a>) -> BiasedGuard<'a, T> {
        BiasedGuard {
            lock: self,
            value: self.value.get_mut(),
            held: Some(held),
            _not_send: PhantomData,
        }
    }

    /// At a slow unlock: grants the bias to this thread if it has earned
    /// it and a slot is (or already was) its own.
    fn maybe_grant(&self, policy: &mut Policy) {
        let hot = &self.hot.0;
        if !self.biasing
            || policy.streak < policy.grant_after
            || hot.owner.load(Ordering::Relaxed) != 0
        {
            return;
        }
        let me = policy.last;
        let mut free = None;
        for (i, tid) in hot.tids.iter().enumerate() {
            match tid.load(Ordering::Relaxed) {
                t if t == me => {
                    free = Some(i);
                    break;
                }
                0 if free.is_none() => free = Some(i),
                _ => {}
            }
        }
        let Some(slot) = free else {
            return;
        };
        hot.tids[slot].store(me, Ordering::Relaxed);
        // Read back by this thread only (program order); any other thread
        // that reads it fails the slot's thread check and goes slow.
        hot.owner.store(slot as u32 + 1, Ordering::Relaxed);
    }

    /// Whether the lock is biased to the calling thread now (for tests
    /// and statistics; the answer may change at once).
    pub fn is_biased_to_me(&self) -> bool {
        let hot = &self.hot.0;
        let owner = hot.owner.load(Ordering::Relaxed);
        owner != 0 && hot.tids[(owner - 1) as usize].load(Ordering::Relaxed) == token()
    }

    /// How many times the bias was revoked.
    pub fn revocations(&self) -> u64 {
        self.revocations.load(Ordering::Relaxed)
    }

    /// Whether this lock can bias at all on this system.
    pub fn can_bias(&self) -> bool {
        self.biasing
    }
}

impl<T: Default> Default for BiasedMutex<T> {
    fn default() -> Self {
        BiasedMutex::new(T::default())
    }
}

impl<T> fmt::Debug for BiasedMutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BiasedMutex")
            .field("owner", &self.hot.0.owner.load(Ordering::Relaxed))
            .field("biasing", &self.biasing)
            .finish_non_exhaustive()
    }
}

/// How a guard holds the lock.
enum Held<'a> {
    /// As the biased owner, through this slot's flag.
    Fast(usize),
    /// Through the slow mutex.
    Slow(MutexGuard<'a, Policy>),
}

/// The lock held; dereferences to the value. Released when dropped. Not
/// `Send`: the fast path's flag is its thread's.
pub struct BiasedGuard<'a, T> {
    lock: &'a BiasedMutex<T>,
    value: CellRef<T>,
    held: Option<Held<'a>>,
    _not_send: PhantomData<*const ()>,
}

impl<T> Deref for BiasedGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock: no other guard exists.
        unsafe { self.value.get() }
    }
}

impl<T> DerefMut for BiasedGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` excludes other borrows
        // through this guard.
        unsafe { self.value.get_mut() }
    }
}

impl<T> Drop for BiasedGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        match self.held.take() {
            Some(Held::Fast(slot)) => {
                // Release: our writes under the lock happen before a
                // revoker's Acquire load of the flag.
                self.lock.busy[slot].0.store(0, Ordering::Release);
            }
            Some(Held::Slow(mut policy)) => {
                self.lock.maybe_grant(&mut policy);
                drop(policy);
            }
            None => {}
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for BiasedGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// The calling thread's token: the address of one of its thread-locals,
/// distinct among live threads and never 0. A thread that ends may leave
/// its address to a new thread, which then inherits its slot, and the
/// bias if it had it: harmless, as the two never live at once.
#[inline]
fn token() -> u64 {
    #[cfg(not(loom))]
    std::thread_local!(static ME: u8 = const { 0 });
    #[cfg(loom)]
    loom::thread_local!(static ME: u8 = 0);
    ME.with(|m| std::ptr::from_ref(m) as usize as u64)
}

/// O2: compiler-only where the revoker runs a membarrier.
#[inline]
fn owner_fence() {
    #[cfg(not(loom))]
    std::sync::atomic::compiler_fence(Ordering::SeqCst);
    #[cfg(loom)]
    fence(Ordering::SeqCst);
}

/// R2: a full barrier on every running thread of the process.
fn revoker_fence() {
    fence(Ordering::SeqCst);
    #[cfg(not(loom))]
    while let Err(e) = crate::sys::membarrier_private() {
        // Registered (`can_bias`), the kernel may still refuse for want
        // of memory (ENOMEM, a CPU mask it could not allocate): try
        // again, `revoking` keeps the owner out meanwhile. Any other
        // refusal (a seccomp filter installed since) leaves no safe way
        // to know the owner is out: the lock cannot go on.
        match e.raw_os_error() {
            Some(libc::ENOMEM | libc::EAGAIN | libc::EINTR) => std::thread::yield_now(),
            _ => {
                panic!("BiasedMutex: membarrier(PRIVATE_EXPEDITED) refused after registering: {e}")
            }
        }
    }
    fence(Ordering::SeqCst);
}

/// Whether this process can use membarriers to bias (registered once).
fn can_bias() -> bool {
    #[cfg(loom)]
    return true;
    #[cfg(not(loom))]
    {
        static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *REGISTERED.get_or_init(crate::sys::membarrier_register_private)
    }
}

/// Waiting for an owner to leave the lock: spin a little, then yield.
fn backoff(spins: &mut u32) {
    *spins += 1;
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    if *spins < 64 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// The value's cell: loom's, which checks that guards never overlap, or
/// a plain `UnsafeCell`.
#[cfg(not(loom))]
struct Cell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> Cell<T> {
    fn new(value: T) -> Self {
        Cell(std::cell::UnsafeCell::new(value))
    }
    fn get_mut(&self) -> CellRef<T> {
        CellRef(self.0.get())
    }
}

#[cfg(not(loom))]
struct CellRef<T>(*mut T);

#[cfg(not(loom))]
impl<T> CellRef<T> {
    /// # Safety
    ///
    /// The lock is held by the caller's guard.
    unsafe fn get(&self) -> &T {
        // SAFETY: the caller holds the lock; the pointer is the cell's.
        unsafe { &*self.0 }
    }

    /// # Safety
    ///
    /// As [`get`](Self::get), and no reference from it is alive.
    unsafe fn get_mut(&mut self) -> &mut T {
        // SAFETY: as in `get`; `&mut self` excludes other borrows.
        unsafe { &mut *self.0 }
    }
}

#[cfg(loom)]
struct Cell<T>(UnsafeCell<T>);

#[cfg(loom)]
impl<T> Cell<T> {
    fn new(value: T) -> Self {
        Cell(UnsafeCell::new(value))
    }
    fn get_mut(&self) -> CellRef<T> {
        CellRef(self.0.get_mut())
    }
}

#[cfg(loom)]
struct CellRef<T>(loom::cell::MutPtr<T>);

#[cfg(loom)]
impl<T> CellRef<T> {
    unsafe fn get(&self) -> &T {
        // SAFETY: the caller holds the lock.
        unsafe { self.0.deref() }
    }

    unsafe fn get_mut(&mut self) -> &mut T {
        // SAFETY: the caller holds the lock.
        unsafe { self.0.deref() }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Whether the lock can bias here. Where membarrier is refused (an
    /// old kernel, a seccomp filter) the test says so and skips, unless
    /// `RINGLINK_REQUIRE_MEMBARRIER` is set (CI sets it): then it fails.
    fn biasing<T>(m: &BiasedMutex<T>) -> bool {
        if m.can_bias() {
            return true;
        }
        assert!(
            std::env::var_os("RINGLINK_REQUIRE_MEMBARRIER").is_none(),
            "membarrier(PRIVATE_EXPEDITED) refused, and RINGLINK_REQUIRE_MEMBARRIER is set"
        );
        eprintln!("skipped: membarrier(PRIVATE_EXPEDITED) refused here, the lock never biases");
        false
    }

    #[test]
    fn one_thread_is_granted_the_bias_and_keeps_it() {
        let m = BiasedMutex::with_grant_after(0u64, 4, 4);
        for _ in 0..10 {
            *m.lock() += 1;
        }
        assert_eq!(*m.lock(), 10);
        assert_eq!(m.is_biased_to_me(), biasing(&m));
        assert_eq!(m.revocations(), 0);
    }

    #[test]
    #[should_panic(expected = "locked twice")]
    fn locking_twice_on_the_fast_path_panics() {
        let m = BiasedMutex::with_grant_after((), 1, MAX_GRANT_AFTER);
        drop(m.lock());
        if !biasing(&m) {
            // The slow path would deadlock, not panic.
            panic!("locked twice: not tried, see above");
        }
        let _a = m.lock();
        let _b = m.lock();
    }

    /// Threads taking turns as the owner: each run, one thread earns the
    /// bias while the others wait, then keeps locking while the others
    /// take the lock from it, so every run revokes a bias whose owner is
    /// busy. No increment is lost, though each is a load and a store
    /// apart with the thread sometimes descheduled in between. The turns
    /// make the revocations certain rather than left to the scheduler
    /// (an earlier form counted on threads overlapping by chance, and a
    /// loaded CI machine ran them one after another).
    #[test]
    fn revocations_keep_mutual_exclusion() {
        use std::sync::atomic::AtomicUsize;
        const THREADS: usize = 3;
        const RUNS: usize = 150;
        const RUN: u64 = 40;
        let m = Arc::new(BiasedMutex::with_grant_after(0u64, 4, 4));
        let can = biasing(&*m);
        let barrier = Arc::new(std::sync::Barrier::new(THREADS));
        // The run whose owner holds the bias, and the run whose owner is
        // done; `usize::MAX` before the first.
        let biased = Arc::new(AtomicUsize::new(usize::MAX));
        let done = Arc::new(AtomicUsize::new(usize::MAX));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (m, barrier) = (Arc::clone(&m), Arc::clone(&barrier));
                let (biased, done) = (Arc::clone(&biased), Arc::clone(&done));
                std::thread::spawn(move || {
                    let mut mine = 0u64;
                    let increment = |i: u64| {
                        let mut g = m.lock();
                        let v = *g;
                        if i % 16 == 0 {
                            std::thread::yield_now();
                        } else {
                            for _ in 0..(i % 8) {
                                std::hint::spin_loop();
                            }
                        }
                        *g = v + 1;
                    };
                    for run in 0..RUNS {
                        if run % THREADS == t {
                            // The others wait, so four slow locks in a
                            // row earn the bias.
                            let mut tries = 0;
                            while can && !m.is_biased_to_me() {
                                increment(1);
                                mine += 1;
                                tries += 1;
                                assert!(tries <= 4, "not biased after {tries} locks alone");
                            }
                            biased.store(run, Ordering::Release);
                            for i in 0..RUN {
                                increment(i);
                                mine += 1;
                            }
                            done.store(run, Ordering::Release);
                        } else {
                            while biased.load(Ordering::Acquire) != run {
                                std::thread::yield_now();
                            }
                            let mut i = t as u64;
                            loop {
                                increment(i);
                                mine += 1;
                                i += 1;
                                if done.load(Ordering::Acquire) == run {
                                    break;
                                }
                                std::thread::yield_now();
                            }
                        }
                        barrier.wait();
                    }
                    mine
                })
            })
            .collect();
        let taken: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(*m.lock(), taken);
        if can {
            // The first lock by another thread in each run revokes.
            assert!(
                m.revocations() >= RUNS as u64,
                "{} revocations in {RUNS} runs",
                m.revocations()
            );
        }
    }

    /// A busy owner is waited for: the revoker cannot enter while the
    /// owner is inside.
    #[test]
    fn a_revoker_waits_for_the_owner_to_leave() {
        let m = Arc::new(BiasedMutex::with_grant_after(
            Vec::<u32>::new(),
            1,
            MAX_GRANT_AFTER,
        ));
        drop(m.lock());
        let g = m.lock();
        if !biasing(&m) {
            return;
        }
        assert!(m.is_biased_to_me());
        let other = {
            let m = Arc::clone(&m);
            std::thread::spawn(move || m.lock().push(2))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut g = g;
        g.push(1);
        drop(g);
        other.join().unwrap();
        assert_eq!(*m.lock(), [1, 2]);
        assert_eq!(m.revocations(), 1);
    }

    /// Locks taken in a row until this thread is biased.
    fn locks_until_biased(m: &BiasedMutex<()>) -> u32 {
        (1..=MAX_GRANT_AFTER)
            .find(|_| {
                drop(m.lock());
                m.is_biased_to_me()
            })
            .expect("never biased")
    }

    #[test]
    fn grant_after_doubles_with_each_revocation() {
        let m = Arc::new(BiasedMutex::with_grant_after((), 1, MAX_GRANT_AFTER));
        if !biasing(&m) {
            return;
        }
        let mut needed = Vec::new();
        for _ in 0..4 {
            needed.push(locks_until_biased(&m));
            let m2 = Arc::clone(&m);
            std::thread::spawn(move || drop(m2.lock())).join().unwrap();
            assert!(!m.is_biased_to_me());
        }
        assert_eq!(needed, [1, 2, 4, 8]);
        assert_eq!(m.revocations(), 4);
    }

    /// Threads alive at once, each taking the lock until biased: the
    /// first `SLOTS` get a slot, the others never do, and the lock still
    /// excludes.
    #[test]
    fn slots_run_out_and_the_lock_stays_a_mutex() {
        let m = Arc::new(BiasedMutex::with_grant_after(0u32, 1, MAX_GRANT_AFTER));
        if !biasing(&m) {
            return;
        }
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let done_rx = Arc::new(std::sync::Mutex::new(done_rx));
        let mut biased = Vec::new();
        let mut threads = Vec::new();
        for _ in 0..SLOTS + 2 {
            let (m2, rx) = (Arc::clone(&m), Arc::clone(&done_rx));
            let (tx, got) = std::sync::mpsc::channel();
            threads.push(std::thread::spawn(move || {
                let mut was = false;
                for _ in 0..200 {
                    *m2.lock() += 1;
                    was |= m2.is_biased_to_me();
                }
                tx.send(was).unwrap();
                // Alive until every thread has had its turn.
                let _ = rx.lock().unwrap().recv();
            }));
            biased.push(got.recv().unwrap());
        }
        drop(done_tx);
        for t in threads {
            t.join().unwrap();
        }
        let mut want = vec![true; SLOTS];
        want.extend([false, false]);
        assert_eq!(biased, want);
        assert_eq!(*m.lock(), 200 * (SLOTS as u32 + 2));
    }
}
