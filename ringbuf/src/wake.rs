//! How a side that found nothing to do goes to sleep, and how the other
//! side wakes it: spin, then a "waiting" flag in the header, then a kernel
//! wait (eventfd or futex) that the peer signals only when the flag is set.
//!
//! # The flag/position handshake (no lost wake-up)
//!
//! Take the consumer waiting for data (the producer waiting for space is
//! the mirror image, with `head` and `producer_waiting`).
//!
//! ```text
//! consumer (waiter)                     producer (waker)
//! W1 consumer_waiting = 1               P1 tail = new        (Release)
//! W2 fence(SeqCst)                      P2 fence(SeqCst)
//! W3 read tail, closed                  P3 read consumer_waiting
//! W4 if nothing new: sleep              P4 if set: clear it, signal
//! ```
//!
//! The two SeqCst fences are totally ordered. If the consumer's fence
//! comes first, W1 is visible to P3, so the producer signals; the
//! kernel object (eventfd counter, or the futex word that the waker
//! changed before waking) remembers the signal even if it lands before
//! the consumer reaches W4, so W4 returns at once. If the producer's fence
//! comes first, P1 is visible to W3, so the consumer does not sleep.
//! Either way a record published while the consumer decides to sleep is
//! never left unseen. Closing follows the same pattern (closed bit, fence,
//! read flag). The loom model in `tests/loom.rs` checks this exhaustively.
//!
//! The flag is one word on its own cache line. While both sides are busy
//! the waker only reads it (the line stays shared in both caches).
//!
//! # Both fences are full
//!
//! Both sides run a SeqCst fence (`lock or` on x86). The waker's costs
//! a 64 B round trip 1.5 to 3% and nothing measurable of a one-way
//! stream through the server (`docs/RING.md`, "Both fences are full").
//!
//! Earlier versions made the pair asymmetric, as liburcu and folly do:
//! the sleeper ran `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)` and the
//! waker only a compiler fence. That is unsound on Linux as it stands.
//! The kernel sends the barrier only to CPUs whose run queue records a
//! registered process, and a CPU that was idle on the registering
//! process's address space (lazily, as the idle thread keeps the last
//! one) when it registered, and then runs that process's threads again,
//! keeps the old record until it switches to another process. Measured
//! here (Linux 6.18): a registered thread spinning on such a CPU took 0
//! of 10,000 global expedited barriers (and all of 10,000 private ones);
//! an application's poll loop then slept through a request about once in
//! ten million round trips. So a side no longer sets its bit in the
//! header's sync word (it clears it at claim, so that an older peer,
//! which reads it to choose its fence, uses the full one), and a waker
//! never trusts an older peer's bit.

use std::time::{Duration, Instant};

use crate::sync::{fence, Ordering};

/// The sleeper's fence (W2), between raising its flag and re-reading the
/// ring. Callers outside go through [`prepare_sleep`] (many rings, one
/// fence) or a role's `prepare_sleep`, which keep the order.
pub(crate) fn sleeper_fence() {
    fence(Ordering::SeqCst);
}

/// Preparing several roles to sleep at once, paying the sleeper's fence
/// once (an event loop arming all its rings before one `epoll_wait`):
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ringlink_ringbuf::{wake, Ring};
/// let (a, b) = (Ring::create(4096)?, Ring::create(4096)?);
/// let (mut ra, mut rb) = (a.consumer()?, b.consumer()?);
/// let mut prep = wake::prepare_sleep();
/// ra.raise_wake_flag(&mut prep);
/// rb.raise_wake_flag(&mut prep);
/// let fenced = prep.fence();
/// // Sleep only if neither ring has anything: each must be confirmed.
/// let sleep = ra.confirm_wake(&fenced) & rb.confirm_wake(&fenced);
/// assert!(sleep);
/// # Ok(())
/// # }
/// ```
///
/// The order (raise every flag, one fence, then look at every ring) is
/// the sleeper's half of the handshake above; the types keep it: a role
/// can be confirmed only with the [`Fenced`] token of the batch its flag
/// was raised in, and one confirmed without having been raised in it is
/// told not to sleep. For one role, `prepare_sleep` on the role does the
/// three steps.
pub fn prepare_sleep() -> SleepPrep {
    static BATCH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    SleepPrep {
        batch: BATCH.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        raised: false,
    }
}

/// A batch of waiting flags being raised ([`prepare_sleep`]).
#[derive(Debug)]
#[must_use = "the flags are raised: fence, then confirm each role"]
pub struct SleepPrep {
    batch: u64,
    raised: bool,
}

impl SleepPrep {
    /// Records that a role raised its flag in this batch; returns the
    /// batch's id, which the role keeps for its confirmation.
    pub(crate) fn raised(&mut self) -> u64 {
        self.raised = true;
        self.batch
    }

    /// The sleeper's fence, once for the whole batch (none is needed if
    /// no flag was raised).
    pub fn fence(self) -> Fenced {
        if self.raised {
            sleeper_fence();
        }
        Fenced { batch: self.batch }
    }
}

/// The proof that a batch's flags were raised and fenced: what a role's
/// `confirm_wake` takes.
#[derive(Debug)]
pub struct Fenced {
    batch: u64,
}

impl Fenced {
    pub(crate) fn batch(&self) -> u64 {
        self.batch
    }
}

/// The wake-up handshake, written once for both roles: `dir` is the
/// direction a role waits in (a consumer for data, a producer for room),
/// and the peer wakes it by that direction's flag.
pub(crate) mod handshake {
    use super::Deadline;
    use crate::mem::Shared;
    use crate::signals::Direction;
    use crate::sync::{AtomicU32, Ordering};
    use std::time::Duration;

    /// The flag of a role waiting in `dir`.
    pub(crate) fn flag(shared: &Shared, dir: Direction) -> &AtomicU32 {
        let h = shared.header();
        match dir {
            Direction::Data => &h.consumer_waiting.0,
            Direction::Space => &h.producer_waiting.0,
        }
    }

    /// W1: raise the flag (a plain store; the fence that follows orders
    /// it).
    pub(crate) fn raise(shared: &Shared, dir: Direction) {
        // Relaxed: ordered before the re-read by the sleeper's fence.
        flag(shared, dir).store(1, Ordering::Relaxed);
    }

    /// After waking or finding work: lower the flag (a plain store; the
    /// waker may have cleared it already).
    pub(crate) fn lower(shared: &Shared, dir: Direction) {
        flag(shared, dir).store(0, Ordering::Relaxed);
    }

    /// W3, after the fence: `changed` says whether the ring moved (or
    /// closed) since the role last looked. Returns whether it may sleep;
    /// if not, the flag is lowered.
    pub(crate) fn confirm(shared: &Shared, dir: Direction, changed: bool) -> bool {
        if changed {
            lower(shared, dir);
            return false;
        }
        true
    }

    /// W0 to W3 for one role: drain the wake-up object (unless `edge`:
    /// the caller drains on its own), raise, fence, confirm. A peer that
    /// can no longer wake us (its socket end closed) closes the ring, so
    /// that `changed` sees it.
    pub(crate) fn prepare(
        shared: &Shared,
        dir: Direction,
        edge: bool,
        changed: impl FnOnce() -> bool,
    ) -> bool {
        if !edge && !shared.signals.reset(dir) {
            shared.mark_closed();
        }
        raise(shared, dir);
        // The sleeper's fence of the handshake; partner of the waker's
        // fence in `wake`.
        super::sleeper_fence();
        confirm(shared, dir, changed())
    }

    /// P2 to P4: after the waker published its position (P1), wake the
    /// role waiting in `dir` if its flag is up.
    #[inline]
    pub(crate) fn wake(shared: &Shared, dir: Direction) {
        // P2: the waker's fence, between publishing a position and
        // reading the flag.
        crate::sync::fence(Ordering::SeqCst);
        let flag = flag(shared, dir);
        // Relaxed: ordered after the publication by the fence above. The
        // plain load keeps the line shared while the peer is busy; the
        // exchange from the value seen sends one wake-up per sleep. (A
        // compare-exchange rather than a swap: the same on x86, `lock
        // cmpxchg` for `xchg`, and loom judges it right, where it reports
        // lost wake-ups no C++ execution has when a swap races the
        // sleeper's stores, tokio-rs/loom#254. It fails only if the flag
        // changed since the load: lowered by a sleeper that is awake, or
        // rewritten by a peer that only loses its own wake-ups.)
        let seen = flag.load(Ordering::Relaxed);
        if seen != 0
            && flag
                .compare_exchange(seen, 0, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            shared.signals.wake(dir, flag);
        }
    }

    /// A blocking call's wait: spin for `spin` while nothing changes, then
    /// prepare (draining first) and sleep until signalled or `deadline`;
    /// the flag comes down on waking. `Err(())` if the deadline is now.
    pub(crate) fn sleep(
        shared: &Shared,
        dir: Direction,
        spin: Duration,
        deadline: Deadline,
        changed: impl Fn() -> bool,
    ) -> Result<(), ()> {
        if super::spin_until(spin, &changed) {
            return Ok(());
        }
        if !prepare(shared, dir, false, &changed) {
            return Ok(());
        }
        let remaining = deadline.remaining();
        if remaining == Some(Duration::ZERO) {
            lower(shared, dir);
            return Err(());
        }
        shared.signals.wait(dir, flag(shared, dir), remaining);
        lower(shared, dir);
        Ok(())
    }
}

/// Default time a side spins re-checking the ring before it sleeps.
///
/// A cross-core wake-up through the kernel costs several microseconds on
/// a virtual machine; a peer that answers within the budget is caught
/// without one. See `docs/RING.md` for the measurement behind the value.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(20);

/// When a waiting call gives up.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Deadline {
    /// Do not wait at all.
    Now,
    /// Wait until this instant.
    At(Instant),
    /// Wait forever.
    Never,
}

impl Deadline {
    pub(crate) fn after(timeout: Duration) -> Deadline {
        match Instant::now().checked_add(timeout) {
            Some(at) => Deadline::At(at),
            None => Deadline::Never,
        }
    }

    /// Whether a timed deadline has passed (never for `Now`/`Never`).
    pub(crate) fn passed(self) -> bool {
        matches!(self, Deadline::At(at) if Instant::now() >= at)
    }

    /// Time left, `Some(ZERO)` once passed, `None` for no limit.
    pub(crate) fn remaining(self) -> Option<Duration> {
        match self {
            Deadline::Now => Some(Duration::ZERO),
            Deadline::At(at) => Some(at.saturating_duration_since(Instant::now())),
            Deadline::Never => None,
        }
    }
}

/// How long a spinning waiter pauses between two looks at what it waits
/// for. Looking back to back is not faster: each look pulls the line the
/// other side is writing back into this core, and the writer must take it
/// again (measured at 64 B round trips: one pause between looks, 8.6 ns
/// on the CI machine, was 10 % slower than two to four).
pub const LOOK_EVERY: Duration = Duration::from_nanos(30);

/// `spin_loop` hints that last about [`LOOK_EVERY`] on this CPU (a pause
/// takes from a few nanoseconds to some tens, by CPU), measured once.
pub fn pauses_per_look() -> u32 {
    calibration().pauses
}

/// What one measurement of `spin_loop` found, once per process.
struct Calibration {
    /// Pauses between two looks ([`pauses_per_look`]).
    pauses: u32,
    /// What those pauses take, at most [`LOOK_EVERY`]: a look's least
    /// time (a measurement a preemption made long counts no more).
    look: Duration,
}

fn calibration() -> &'static Calibration {
    static CALIBRATION: std::sync::OnceLock<Calibration> = std::sync::OnceLock::new();
    CALIBRATION.get_or_init(|| {
        const N: u32 = 2000;
        let start = Instant::now();
        for _ in 0..N {
            std::hint::spin_loop();
        }
        let each = start.elapsed().as_secs_f64() / f64::from(N);
        let n = (LOOK_EVERY.as_secs_f64() / each.max(1e-10)).round();
        let pauses = (n as u32).clamp(1, 16);
        let look = Duration::from_secs_f64(each * f64::from(pauses)).min(LOOK_EVERY);
        Calibration { pauses, look }
    })
}

/// Looks between two readings of the clock in [`spin_until`].
const LOOKS_PER_BURST: u32 = 32;

/// Spins for at most `budget`, calling `ready` every [`LOOK_EVERY`] or
/// so. Returns whether `ready` said yes. Makes no system call: the clock
/// is read through the vDSO, once per burst of 32 looks, and not before
/// the first burst ends (most waits end in it, and a clock read costs
/// about as much as a small message). The first burst counts as the
/// least time its pauses take, so that a budget shorter than a burst
/// ends with the first.
#[inline]
pub fn spin_until(budget: Duration, mut ready: impl FnMut() -> bool) -> bool {
    if budget.is_zero() {
        return false;
    }
    let calibration = calibration();
    let pauses = calibration.pauses;
    let mut start = None;
    loop {
        for _ in 0..LOOKS_PER_BURST {
            if ready() {
                return true;
            }
            for _ in 0..pauses {
                std::hint::spin_loop();
            }
        }
        let now = Instant::now();
        let since = *start.get_or_insert_with(|| {
            now.checked_sub(calibration.look * LOOKS_PER_BURST)
                .unwrap_or(now)
        });
        if now.saturating_duration_since(since) >= budget {
            return false;
        }
    }
}
