//! Running a service inside a tokio runtime (feature `tokio`).

use std::future::Future;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::Service;
use crate::{Handler, Result};

impl<H: Handler> Service<H> {
    /// Runs the service as a task of the current tokio runtime until
    /// `shutdown` completes (e.g. `tokio::signal::ctrl_c()`) or
    /// [`ControlHandle::shutdown`](crate::ControlHandle::shutdown) is
    /// called, then closes every connection as [`run`](Self::run) does.
    ///
    /// The loop never blocks a thread in the kernel: it waits on the
    /// service's epoll fd through tokio's reactor (`AsyncFd`). While
    /// requests keep coming it takes them from the rings without system
    /// calls; after the last one it polls the rings for the spin budget
    /// (`ServiceOptions::spin`, which occupies the worker thread that
    /// long; set it to zero to yield at once), then arms their wake-ups
    /// and awaits. Handlers run on this task: they may spawn tasks
    /// (`tokio::spawn`) that answer later through a clone of the
    /// [`Connection`](crate::Connection).
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) outside a runtime with I/O enabled,
    /// or if epoll fails.
    pub async fn run_until(&mut self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let ready = register(self.as_fd().try_clone_to_owned()?)?;
        tokio::pin!(shutdown);
        while !self.is_shutdown() {
            let mut turns = 0u32;
            while self.turn_now()? {
                turns += 1;
                if turns % 64 == 0 {
                    // Busy for a while: let the runtime's other tasks in.
                    tokio::task::yield_now().await;
                }
                if self.is_shutdown() {
                    break;
                }
            }
            if self.is_shutdown() {
                break;
            }
            tokio::select! {
                g = ready.readable() => g?.clear_ready(),
                () = &mut shutdown => break,
            }
        }
        self.close_all();
        Ok(())
    }

    /// One turn that never waits (the loop's own, spinning for the
    /// budget but never sleeping in epoll). Returns whether to turn again
    /// before awaiting the epoll fd.
    fn turn_now(&mut self) -> Result<bool> {
        Ok(self.turn(true, Some(Duration::ZERO))?.is_busy())
    }
}

/// Registers our own dup of the epoll fd with tokio's reactor (see the
/// client's `register`: the safe constructor, deprecated in tokio 1.53,
/// whose contract an `OwnedFd` we own meets).
#[allow(deprecated)]
fn register(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    AsyncFd::with_interest(fd, Interest::READABLE)
}
