//! What other threads (and signal handlers) use to reach the loop.

use std::collections::BTreeMap;
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use nix::sys::eventfd::{EfdFlags, EventFd};
use ringlink_common::wire::Status;
use ringlink_common::{RateLimit, Rejections, ServiceStats};

use crate::Connection;

/// Shared between the loop, its connections and its handles.
pub(crate) struct Control {
    /// Written to wake the loop from epoll.
    waker: EventFd,
    shutdown: AtomicBool,
    /// The requested [`RateLimit`], as `u8`; the loop applies it.
    rate: AtomicU8,
    /// Connections to close on the loop's next turn: id, slot, and the
    /// fault that condemned it (none for a plain `disconnect`).
    disconnects: Mutex<Vec<(u64, usize, Option<String>)>>,
    /// Live connections, for iteration from any thread.
    pub(crate) registry: Mutex<BTreeMap<u64, Connection>>,
    closed: AtomicU64,
    /// Refused handshakes by status code (1..=9); index 0: abandoned.
    rejected: [AtomicU64; 10],
}

impl Control {
    pub(crate) fn new() -> std::io::Result<Control> {
        Ok(Control {
            waker: EventFd::from_value_and_flags(
                0,
                EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
            )?,
            shutdown: AtomicBool::new(false),
            rate: AtomicU8::new(RateLimit::default() as u8),
            disconnects: Mutex::new(Vec::new()),
            registry: Mutex::new(BTreeMap::new()),
            closed: AtomicU64::new(0),
            rejected: Default::default(),
        })
    }

    pub(crate) fn waker_fd(&self) -> BorrowedFd<'_> {
        self.waker.as_fd()
    }

    /// Wakes the loop. Async-signal-safe: one `write(2)`.
    pub(crate) fn wake(&self) {
        // A full counter (EAGAIN) already means "readable".
        let _ = self.waker.write(1);
    }

    pub(crate) fn drain(&self) {
        let _ = self.waker.read();
    }

    pub(crate) fn request_disconnect(&self, id: u64, slot: usize, fault: Option<String>) {
        self.disconnects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id, slot, fault));
        self.wake();
    }

    pub(crate) fn take_disconnects(&self) -> Vec<(u64, usize, Option<String>)> {
        std::mem::take(&mut *self.disconnects.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn set_rate(&self, rate: RateLimit) {
        self.rate.store(rate as u8, Ordering::Release);
        self.wake();
    }

    pub(crate) fn rate(&self) -> RateLimit {
        RateLimit::from_u8(self.rate.load(Ordering::Acquire)).unwrap_or_default()
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

    pub(crate) fn stats(&self, clear: bool) -> ServiceStats {
        let read = |c: &AtomicU64| {
            if clear {
                c.swap(0, Ordering::Relaxed)
            } else {
                c.load(Ordering::Relaxed)
            }
        };
        let r = |s: Status| read(&self.rejected[s as usize]);
        ServiceStats {
            active_connections: self.registry().len() as u64,
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

    pub(crate) fn is_shutdown(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }

    pub(crate) fn registry(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Connection>> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Stops a running service from another thread or a signal handler.
#[derive(Clone)]
pub struct ShutdownHandle {
    pub(crate) control: Arc<Control>,
}

impl ShutdownHandle {
    /// Asks the loop to stop: [`Service::run`](crate::Service::run)
    /// closes every connection and returns. Async-signal-safe (an atomic
    /// store and one `write(2)`), so it may be called from a signal
    /// handler.
    pub fn shutdown(&self) {
        self.control.shutdown.store(true, Ordering::Release);
        self.control.wake();
    }

    /// Changes how many requests the service takes per connection and
    /// loop turn; [`RateLimit::Off`] stops taking them (clients see flow
    /// control, then full rings; nothing is lost). Applied on the loop's
    /// next turn.
    pub fn set_rate_limit(&self, rate: RateLimit) {
        self.control.set_rate(rate);
    }

    /// The service's statistics; with `clear`, the counters restart from
    /// zero.
    pub fn stats(&self, clear: bool) -> ServiceStats {
        self.control.stats(clear)
    }

    /// The live connections, a snapshot.
    pub fn connections(&self) -> Vec<Connection> {
        self.control.registry().values().cloned().collect()
    }
}

impl fmt::Debug for ShutdownHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownHandle")
            .field("shutdown", &self.control.is_shutdown())
            .finish()
    }
}
