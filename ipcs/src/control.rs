//! The public [`ControlHandle`]: what other threads (and signal
//! handlers) use to reach a running service, and the registry of live
//! connections it lists.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;
use ringlink_common::{RateLimit, ServiceStats};

use crate::remote::Remote;
use crate::Connection;

/// The live connections by id, for listing from any thread.
pub(crate) type Registry = Mutex<BTreeMap<u64, Connection>>;

/// Controls a running service from another thread or a signal handler:
/// stops it, sets its rate limit, reads its statistics and lists its
/// connections. Cheap to clone.
///
/// # Examples
///
/// ```
/// use ringlink_ipcs::{Dispatch, RateLimit, Service, ServiceAddr, ServiceOptions};
/// use std::time::Duration;
///
/// # fn main() -> ringlink_ipcs::Result<()> {
/// let addr = ServiceAddr::named(&format!("ringlink-doc-{}", std::process::id()));
/// let table = Dispatch::new().on(1, |conn, req| {
///     let _ = conn.respond(req.seq(), 1, b"ok");
/// });
/// let mut service = Service::bind(addr.clone(), "kv", ServiceOptions::default(), table)?;
/// let control = service.control_handle();
/// let server = std::thread::spawn(move || service.run());
///
/// use ringlink_ipcc::{Client, ConnectOptions};
/// let mut client = Client::connect(&addr, &ConnectOptions::new("kv"))?;
/// let mut buf = [0u8; 16];
/// client.send_recv(1, b"", &mut buf, Some(Duration::from_secs(5)))?;
///
/// // From any thread: the service's figures and its connections.
/// assert_eq!(control.stats(false).active_connections, 1);
/// for conn in control.connections() {
///     let stats = conn.stats(false);
///     assert_eq!((stats.client_pid, stats.requests), (std::process::id() as i32, 1));
/// }
/// // Stop taking requests for a while (clients see flow control; nothing is lost).
/// control.set_rate_limit(RateLimit::Off);
/// assert_eq!(control.rate_limit(), RateLimit::Off);
///
/// control.shutdown(); // every connection closes; run returns
/// server.join().expect("server thread")?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ControlHandle {
    pub(crate) remote: Arc<Remote>,
    pub(crate) registry: Arc<Registry>,
}

/// The old name of [`ControlHandle`], when it did nothing but stop the
/// service.
#[deprecated(
    since = "0.1.0",
    note = "renamed ControlHandle: it does more than shut down"
)]
pub type ShutdownHandle = ControlHandle;

impl ControlHandle {
    /// Asks the loop to stop: [`Service::run`](crate::Service::run)
    /// closes every connection and returns. Async-signal-safe (an atomic
    /// store and one `write(2)`), so it may be called from a signal
    /// handler.
    pub fn shutdown(&self) {
        self.remote.shut_down();
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shutdown(&self) -> bool {
        self.remote.is_shutdown()
    }

    /// Changes how many requests the service takes per connection and
    /// loop turn; [`RateLimit::Off`] stops taking them (clients see flow
    /// control, then full rings; nothing is lost). Applied on the loop's
    /// next turn.
    pub fn set_rate_limit(&self, rate: RateLimit) {
        self.remote.set_rate(rate);
    }

    /// The rate limit asked for last.
    pub fn rate_limit(&self) -> RateLimit {
        self.remote.rate()
    }

    /// The service's statistics; with `clear`, the counters restart from
    /// zero.
    pub fn stats(&self, clear: bool) -> ServiceStats {
        self.remote.stats(clear, self.registry.lock().len())
    }

    /// The live connections, a snapshot.
    pub fn connections(&self) -> Vec<Connection> {
        self.registry.lock().values().cloned().collect()
    }
}

impl fmt::Debug for ControlHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlHandle")
            .field("shutdown", &self.remote.is_shutdown())
            .finish()
    }
}
