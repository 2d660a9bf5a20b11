//! What the loop shares with its connections and its control handles:
//! the waker (an eventfd only this process holds), the commands other
//! threads leave for the loop's next turn (shut down, a rate limit,
//! connections to close), and the service-wide counters.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

use nix::sys::eventfd::{EfdFlags, EventFd};
use parking_lot::Mutex;
use ringlink_common::wire::Status;
use ringlink_common::{RateLimit, Rejections, ServiceStats};

/// A connection to close on the loop's next turn: its id, its slot, and
/// the fault that condemned it (a violation, a handler's panic; none for
/// a plain `disconnect`).
pub(crate) type Condemned = (u64, usize, Option<crate::FaultKind>);

/// What other threads leave for the loop: a list under a lock, and a flag
/// the loop reads on every turn without taking the lock (a lock and an
/// unlock per turn were two locked instructions on a busy loop's path).
struct Mailbox<T> {
    items: Mutex<Vec<T>>,
    /// Something was posted since the loop last took.
    posted: AtomicBool,
}

impl<T> Default for Mailbox<T> {
    fn default() -> Mailbox<T> {
        Mailbox {
            items: Mutex::new(Vec::new()),
            posted: AtomicBool::new(false),
        }
    }
}

impl<T> Mailbox<T> {
    fn post(&self, item: T) {
        self.items.lock().push(item);
        // Release, after the unlock: a loop that sees the flag finds the
        // item under the lock (or took it already, with an earlier flag).
        self.posted.store(true, Ordering::Release);
    }

    /// What was posted (nothing, without the lock, if the flag is down).
    fn take(&self) -> Vec<T> {
        if !self.posted.load(Ordering::Acquire) {
            return Vec::new();
        }
        // Lowered before the lock (a swap: rare, and plainly ordered): an
        // item posted after this take, its lock after ours, raises the
        // flag again for the next turn.
        self.posted.swap(false, Ordering::AcqRel);
        std::mem::take(&mut *self.items.lock())
    }
}

/// Shared between the loop, its connections and its handles.
pub(crate) struct Remote {
    /// Written to wake the loop from epoll; never shared with a client.
    waker: EventFd,
    shutdown: AtomicBool,
    /// The requested [`RateLimit`], as `u8`; the loop applies it.
    rate: AtomicU8,
    /// Connections to close on the loop's next turn.
    disconnects: Mailbox<Condemned>,
    /// Connections (id, slot) whose requests the loop looks at again
    /// (`Connection::resume`).
    resumes: Mailbox<(u64, usize)>,
    /// The trace hook, for responses sent from any thread; `tracing`
    /// says whether there is one without taking the lock.
    trace: parking_lot::RwLock<Option<std::sync::Arc<crate::hooks::TraceHook>>>,
    tracing: AtomicBool,
    /// The thread that last ran a turn of the loop ([`thread_mark`]; 0:
    /// none yet).
    loop_thread: AtomicU64,
    closed: AtomicU64,
    /// Refused handshakes by status code (1..=9); index 0: abandoned.
    rejected: [AtomicU64; 10],
}

impl Remote {
    pub(crate) fn new() -> std::io::Result<Remote> {
        Ok(Remote {
            waker: EventFd::from_value_and_flags(
                0,
                EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
            )?,
            shutdown: AtomicBool::new(false),
            rate: AtomicU8::new(RateLimit::default() as u8),
            disconnects: Mailbox::default(),
            resumes: Mailbox::default(),
            trace: parking_lot::RwLock::new(None),
            tracing: AtomicBool::new(false),
            loop_thread: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            rejected: Default::default(),
        })
    }

    pub(crate) fn waker_fd(&self) -> BorrowedFd<'_> {
        self.waker.as_fd()
    }

    /// Wakes the loop. Async-signal-safe: one `write(2)` on an eventfd
    /// only this process holds.
    pub(crate) fn wake(&self) {
        // A full counter (EAGAIN) already means "readable".
        let _ = self.waker.write(1);
    }

    pub(crate) fn drain(&self) {
        let _ = self.waker.read();
    }

    pub(crate) fn request_disconnect(&self, id: u64, slot: usize, fault: Option<crate::FaultKind>) {
        self.disconnects.post((id, slot, fault));
        self.wake();
    }

    pub(crate) fn take_disconnects(&self) -> Vec<Condemned> {
        self.disconnects.take()
    }

    /// The calling thread drives the loop.
    pub(crate) fn mark_loop_thread(&self) {
        // Written only when it changes: other threads read the line.
        let mark = thread_mark();
        if self.loop_thread.load(Ordering::Relaxed) != mark {
            self.loop_thread.store(mark, Ordering::Relaxed);
        }
    }

    /// Whether the calling thread drives the loop (it is the one that
    /// reads what the clients send).
    pub(crate) fn on_loop_thread(&self) -> bool {
        self.loop_thread.load(Ordering::Relaxed) == thread_mark()
    }

    pub(crate) fn set_trace(&self, hook: Option<std::sync::Arc<crate::hooks::TraceHook>>) {
        self.tracing.store(hook.is_some(), Ordering::Release);
        *self.trace.write() = hook;
    }

    /// Calls the trace hook, if there is one.
    pub(crate) fn trace(&self, t: &crate::Trace<'_>) {
        if self.tracing.load(Ordering::Acquire) {
            if let Some(hook) = self.trace.read().as_ref() {
                hook(t);
            }
        }
    }

    pub(crate) fn request_resume(&self, id: u64, slot: usize) {
        self.resumes.post((id, slot));
        self.wake();
    }

    pub(crate) fn take_resumes(&self) -> Vec<(u64, usize)> {
        self.resumes.take()
    }

    pub(crate) fn set_rate(&self, rate: RateLimit) {
        self.rate.store(rate as u8, Ordering::Release);
        self.wake();
    }

    pub(crate) fn rate(&self) -> RateLimit {
        RateLimit::from_u8(self.rate.load(Ordering::Acquire)).unwrap_or_default()
    }

    pub(crate) fn shut_down(&self) {
        self.shutdown.store(true, Ordering::Release);
        self.wake();
    }

    pub(crate) fn is_shutdown(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }

    pub(crate) fn count_closed(&self) {
        self.closed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_rejected(&self, status: Status) {
        let i = (status as usize).min(self.rejected.len() - 1);
        self.rejected[i].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_abandoned(&self) {
        self.rejected[0].fetch_add(1, Ordering::Relaxed);
    }

    /// The statistics, with `active` live connections.
    pub(crate) fn stats(&self, clear: bool, active: usize) -> ServiceStats {
        let read = |c: &AtomicU64| {
            if clear {
                c.swap(0, Ordering::Relaxed)
            } else {
                c.load(Ordering::Relaxed)
            }
        };
        let r = |s: Status| read(&self.rejected[s as usize]);
        ServiceStats {
            active_connections: active as u64,
            closed_connections: read(&self.closed),
            rejected: Rejections {
                permission_denied: r(Status::PermissionDenied),
                unknown_protocol: r(Status::UnknownProtocol),
                version_mismatch: r(Status::VersionMismatch),
                too_many_clients: r(Status::TooManyClients),
                resources: r(Status::Resources),
                bad_request: r(Status::BadRequest),
                transport_mismatch: r(Status::TransportMismatch),
                user_quota: r(Status::UserQuota),
                process_quota: r(Status::ProcessQuota),
                abandoned: read(&self.rejected[0]),
            },
        }
    }
}

/// A number for the calling thread, unique in the process (never 0).
fn thread_mark() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static MARK: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    MARK.with(|m| *m)
}
