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
    /// and awaits; handshake deadlines (`handshake_timeout`, the clients
    /// waiting under `queue_when_full`) make the fd readable too, and are
    /// kept as under [`run`](Self::run). Handlers run on this task: they
    /// may spawn tasks (`tokio::spawn`) that answer later through a clone
    /// of the [`Connection`](crate::Connection).
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) outside a runtime with I/O enabled,
    /// or if epoll fails.
    ///
    /// # Examples
    ///
    /// The service as a task; a route that answers from a task of its
    /// own; a (blocking) client on tokio's blocking pool. In a program,
    /// the shutdown future would be `tokio::signal::ctrl_c()`:
    ///
    /// ```
    /// use ringlink_ipcs::{Dispatch, Service, ServiceAddr, ServiceOptions};
    /// use std::time::Duration;
    ///
    /// #[tokio::main(flavor = "current_thread")]
    /// async fn main() -> ringlink_ipcs::Result<()> {
    ///     let addr = ServiceAddr::named(&format!("ringlink-doc-{}", std::process::id()));
    ///     let table = Dispatch::new().on(1, |conn, req| {
    ///         let (conn, seq, payload) = (conn.clone(), req.seq(), req.payload().to_vec());
    ///         tokio::spawn(async move {
    ///             tokio::time::sleep(Duration::from_millis(10)).await; // the work
    ///             let _ = conn.respond(seq, 1, &payload);
    ///         });
    ///     });
    ///     let mut service = Service::bind(addr.clone(), "echo", ServiceOptions::default(), table)?;
    ///
    ///     let client = tokio::task::spawn_blocking(move || -> ringlink_ipcs::Result<Vec<u8>> {
    ///         use ringlink_ipcc::{Client, ConnectOptions};
    ///         let mut c = Client::connect(&addr, &ConnectOptions::new("echo"))?;
    ///         let mut buf = vec![0u8; c.max_message()];
    ///         let m = c.send_recv(1, b"hello", &mut buf, Some(Duration::from_secs(5)))?;
    ///         Ok(buf[..m.len].to_vec())
    ///     });
    ///     let mut answer = None;
    ///     // Serves until the client is done (a program: until Ctrl-C).
    ///     service.run_until(async { answer = Some(client.await) }).await?;
    ///     assert_eq!(answer.expect("done").expect("client task")?, b"hello");
    ///     Ok(())
    /// }
    /// ```
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
