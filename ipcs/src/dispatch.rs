//! A dispatch table: one handler per message id (lwmsg's dispatch spec),
//! each run on the loop, or on a bounded pool of worker threads
//! (lwmsg's `LWMSG_DISPATCH_BLOCK`).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use ringlink_common::wire::ERROR_UNKNOWN_ID;

use crate::{Connection, Handler, OwnedRequest, Request};

type Route<S> = Box<dyn Fn(&S, &Connection, &Request<'_>) + Send + Sync>;
type BlockingRoute<S> = Arc<dyn Fn(&S, &Connection, &OwnedRequest) + Send + Sync>;

/// Worker threads and queue length of the pool made by the first
/// [`Dispatch::on_blocking`] unless [`Dispatch::workers`] said otherwise.
const DEFAULT_WORKERS: usize = 4;
const DEFAULT_QUEUE: usize = 64;

/// Routes each request to the function registered for its message id; a
/// request with an id nobody registered gets an empty response with error
/// code [`ERROR_UNKNOWN_ID`], never silence.
///
/// Use it as the service's [`Handler`] directly, or call
/// [`dispatch`](Self::dispatch) from your own handler's `message` to keep
/// the other callbacks. A route may answer at once or keep a clone of the
/// connection and answer later from another thread.
///
/// # Examples
///
/// ```
/// use ringlink_ipcs::Dispatch;
///
/// const PING: i32 = 1;
/// let table = Dispatch::new().on(PING, |conn, req| {
///     let _ = conn.respond(req.seq(), PING, b"pong");
/// });
/// assert!(table.handles(PING));
/// ```
///
/// State every route shares (a counter, a database handle) lives in the
/// table, and each `_shared` route gets it, without an `Arc` cloned into
/// each closure:
///
/// ```
/// use ringlink_ipcs::Dispatch;
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// const INCR: i32 = 1;
/// const GET: i32 = 2;
/// let table = Dispatch::with_state(AtomicU64::new(0))
///     .on_shared(INCR, |n, conn, req| {
///         let v = n.fetch_add(1, Ordering::Relaxed) + 1;
///         let _ = conn.respond(req.seq(), INCR, &v.to_le_bytes());
///     })
///     .on_shared(GET, |n, conn, req| {
///         let _ = conn.respond(req.seq(), GET, &n.load(Ordering::Relaxed).to_le_bytes());
///     });
/// assert_eq!(table.state().load(Ordering::Relaxed), 0);
/// ```
pub struct Dispatch<S = ()> {
    state: Arc<S>,
    routes: HashMap<i32, Route<S>>,
    blocking: HashMap<i32, BlockingRoute<S>>,
    /// Made by the first blocking route, with `sizes`.
    pool: Option<Pool>,
    sizes: Option<(usize, usize)>,
    /// [`per_connection`](Dispatch::per_connection)'s limit.
    share: Option<usize>,
}

impl Default for Dispatch {
    fn default() -> Dispatch {
        Dispatch::with_state(())
    }
}

impl Dispatch {
    /// An empty table: every request gets `ERROR_UNKNOWN_ID`.
    ///
    /// # Examples
    ///
    /// A table inside a handler of your own, which keeps the other
    /// callbacks (here `accept`) and forwards `message` and `ready` to
    /// the table:
    ///
    /// ```
    /// use ringlink_ipcs::{Connection, Credentials, Dispatch, Handler, Reject, Request};
    ///
    /// struct Daemon {
    ///     table: Dispatch,
    /// }
    ///
    /// impl Handler for Daemon {
    ///     fn accept(&self, client: &Credentials) -> Result<(), Reject> {
    ///         if client.uid == Credentials::current().uid {
    ///             Ok(())
    ///         } else {
    ///             Err(Reject::PermissionDenied)
    ///         }
    ///     }
    ///     fn message(&self, conn: &Connection, req: &Request<'_>) {
    ///         self.table.dispatch(conn, req);
    ///     }
    ///     fn ready(&self, conn: &Connection, id: i32) -> bool {
    ///         self.table.ready(conn, id) // for its blocking routes, if any
    ///     }
    ///     fn connection_closed(&self, conn: &Connection) {
    ///         self.table.connection_closed(conn) // its place in line
    ///     }
    /// }
    ///
    /// let daemon = Daemon {
    ///     table: Dispatch::new().on(1, |conn, req| {
    ///         let _ = conn.respond(req.seq(), 1, b"pong");
    ///     }),
    /// };
    /// assert!(daemon.table.handles(1) && !daemon.table.handles(2));
    /// ```
    pub fn new() -> Dispatch {
        Dispatch::default()
    }
}

impl<S: Send + Sync + 'static> Dispatch<S> {
    /// An empty table whose routes share `state` (the `_shared` routes
    /// get it by reference; [`state`](Self::state) reads it).
    pub fn with_state(state: S) -> Dispatch<S> {
        Dispatch {
            state: Arc::new(state),
            routes: HashMap::new(),
            blocking: HashMap::new(),
            pool: None,
            sizes: None,
            share: None,
        }
    }

    /// The routes' shared state.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// The worker pool that [`on_blocking`](Self::on_blocking) routes run
    /// on: `threads` workers (at least 1), and at most `queue` requests
    /// waiting for one (at least 1), shared fairly between clients (see
    /// `on_blocking`). Default 4 and 64. Call before the first
    /// `on_blocking`.
    pub fn workers(mut self, threads: usize, queue: usize) -> Dispatch<S> {
        self.sizes = Some((threads.max(1), queue.max(1)));
        self
    }

    /// At most `jobs` requests of one connection queued or running on the
    /// worker pool at once (at least 1): a connection that has that many
    /// is held ([`Handler::ready`]) until one of them ends. Default: no
    /// limit but the pool's (one client alone may fill the queue; others
    /// then wait for room, in turn). With a limit below the queue's
    /// length, one client never fills the queue: another client's blocking
    /// request is queued at once, and its requests behind it (to loop
    /// routes too) are not held while the workers are busy.
    ///
    /// # Examples
    ///
    /// ```
    /// use ringlink_ipcs::Dispatch;
    ///
    /// const REPORT: i32 = 1;
    /// let table = Dispatch::new()
    ///     .workers(4, 64)
    ///     .per_connection(8) // each client: at most 8 queued or running
    ///     .on_blocking(REPORT, |conn, req| {
    ///         let _ = conn.respond(req.seq(), REPORT, req.payload());
    ///     });
    /// assert!(table.handles(REPORT));
    /// ```
    pub fn per_connection(mut self, jobs: usize) -> Dispatch<S> {
        let jobs = jobs.max(1);
        self.share = Some(jobs);
        if let Some(pool) = &self.pool {
            pool.set_share(jobs);
        }
        self
    }

    /// Registers `route` for message id `id`, run on a worker thread with
    /// a copy of the request (lwmsg's `LWMSG_DISPATCH_BLOCK`): a route
    /// that blocks (a disk, a database, another service) holds one worker,
    /// not the loop, and every other client goes on being served. The
    /// route answers through the `Connection` as any other. When every
    /// worker is busy and the queue is full, the loop leaves the
    /// connection's requests in its ring, in order, until a worker is
    /// free ([`Handler::ready`]): nothing is lost, and the client's sends
    /// wait for room as they would for a slow server. This needs the
    /// service's handler to answer `ready` as the table does: use the
    /// table as the handler, or forward both `message` and `ready` to it
    /// (and `connection_closed`, see [`ready`](Self::ready)).
    ///
    /// Clients share the pool fairly: room in the queue goes to the held
    /// connections in the order they were held (a connection that asks
    /// while others wait for room is held behind them), and the workers
    /// take the queued requests one connection at a time, in turn (each
    /// connection's in order). A client that keeps many requests in flight
    /// delays another's by a few jobs, not for ever.
    /// [`per_connection`](Self::per_connection) also bounds what one
    /// client may have queued or running.
    ///
    /// # Examples
    ///
    /// A route that waits (here a sleep stands for a disk or a database)
    /// on a pool of 2 workers with room for 16 requests waiting, beside a
    /// quick route that the loop answers meanwhile:
    ///
    /// ```
    /// use ringlink_ipcs::{Dispatch, Service, ServiceAddr, ServiceOptions};
    /// use std::time::Duration;
    ///
    /// const SLOW: i32 = 1;
    /// const PING: i32 = 2;
    ///
    /// # fn main() -> ringlink_ipcs::Result<()> {
    /// let table = Dispatch::new()
    ///     .workers(2, 16)
    ///     .on_blocking(SLOW, |conn, req| {
    ///         std::thread::sleep(Duration::from_millis(50));
    ///         let _ = conn.respond(req.seq(), SLOW, req.payload());
    ///     })
    ///     .on(PING, |conn, req| {
    ///         let _ = conn.respond(req.seq(), PING, b"pong");
    ///     });
    /// # let addr = ServiceAddr::named(&format!("ringlink-doc-{}", std::process::id()));
    /// let mut service = Service::bind(addr.clone(), "slow", ServiceOptions::default(), table)?;
    /// # let control = service.control_handle();
    /// # let server = std::thread::spawn(move || service.run());
    ///
    /// use ringlink_ipcc::{Client, ConnectOptions};
    /// let mut client = Client::connect(&addr, &ConnectOptions::new("slow"))?;
    /// let mut buf = vec![0u8; client.max_message()];
    /// let slow = client.send(SLOW, b"report")?; // its answer comes later
    /// let m = client.send_recv(PING, b"", &mut buf, Some(Duration::from_secs(5)))?;
    /// assert_eq!(&buf[..m.len], b"pong"); // not held up by the slow request
    /// let m = client.recv(&mut buf, Some(Duration::from_secs(5)))?;
    /// assert_eq!((m.seq, &buf[..m.len]), (slow, &b"report"[..]));
    /// # control.shutdown();
    /// # server.join().expect("server thread")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn on_blocking(
        self,
        id: i32,
        route: impl Fn(&Connection, &OwnedRequest) + Send + Sync + 'static,
    ) -> Dispatch<S> {
        self.on_blocking_shared(id, move |_, conn, req| route(conn, req))
    }

    /// [`on_blocking`](Self::on_blocking), the route getting the table's
    /// shared state.
    pub fn on_blocking_shared(
        mut self,
        id: i32,
        route: impl Fn(&S, &Connection, &OwnedRequest) + Send + Sync + 'static,
    ) -> Dispatch<S> {
        if self.pool.is_none() {
            let (threads, queue) = self.sizes.unwrap_or((DEFAULT_WORKERS, DEFAULT_QUEUE));
            self.pool = Some(Pool::new(threads, queue, self.share));
        }
        self.routes.remove(&id);
        self.blocking.insert(id, Arc::new(route));
        self
    }

    /// Whether a request of message id `id` can be taken now: `false` for
    /// a blocking route when the pool has no room for `conn` (the queue is
    /// full, or connections held before it wait for the room) or `conn`
    /// has its [`per_connection`](Self::per_connection) share queued or
    /// running. Then `conn` is resumed ([`Connection::resume`]) when its
    /// turn comes: a worker took a job and it is first in line, or one of
    /// its own jobs ended. A handler that forwards `ready` to the table
    /// should forward [`Handler::connection_closed`] too, so that a held
    /// connection that closes gives its place in line at once (otherwise
    /// the pool notices later: at its next job, or, idle, within 50 ms).
    pub fn ready(&self, conn: &Connection, id: i32) -> bool {
        match (&self.pool, self.blocking.contains_key(&id)) {
            (Some(pool), true) => pool.room_or_wait(conn),
            _ => true,
        }
    }

    /// Registers `route` for message id `id`, replacing any earlier one.
    ///
    /// # Examples
    ///
    /// Routes run on the service's loop thread: keep them short (or use
    /// [`on_blocking`](Self::on_blocking)). An id without a route is
    /// answered with [`ERROR_UNKNOWN_ID`], which the client reads in
    /// `Message::error`:
    ///
    /// ```
    /// use ringlink_ipcs::{Dispatch, Service, ServiceAddr, ServiceOptions, ERROR_UNKNOWN_ID};
    /// use std::time::Duration;
    ///
    /// const UPPER: i32 = 1;
    /// const LEN: i32 = 2;
    ///
    /// # fn main() -> ringlink_ipcs::Result<()> {
    /// let table = Dispatch::new()
    ///     .on(UPPER, |conn, req| {
    ///         let _ = conn.respond(req.seq(), UPPER, &req.payload().to_ascii_uppercase());
    ///     })
    ///     .on(LEN, |conn, req| {
    ///         let _ = conn.respond(req.seq(), LEN, &(req.payload().len() as u32).to_le_bytes());
    ///     });
    /// # let addr = ServiceAddr::named(&format!("ringlink-doc-{}", std::process::id()));
    /// let mut service = Service::bind(addr.clone(), "text", ServiceOptions::default(), table)?;
    /// # let control = service.control_handle();
    /// # let server = std::thread::spawn(move || service.run());
    ///
    /// use ringlink_ipcc::{Client, ConnectOptions};
    /// let mut client = Client::connect(&addr, &ConnectOptions::new("text"))?;
    /// let mut buf = vec![0u8; client.max_message()];
    /// let timeout = Some(Duration::from_secs(5));
    /// let m = client.send_recv(UPPER, b"shout", &mut buf, timeout)?;
    /// assert_eq!(&buf[..m.len], b"SHOUT");
    /// let m = client.send_recv(3, b"?", &mut buf, timeout)?;
    /// assert_eq!((m.error, m.len), (ERROR_UNKNOWN_ID, 0));
    /// # control.shutdown();
    /// # server.join().expect("server thread")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn on(
        self,
        id: i32,
        route: impl Fn(&Connection, &Request<'_>) + Send + Sync + 'static,
    ) -> Dispatch<S> {
        self.on_shared(id, move |_, conn, req| route(conn, req))
    }

    /// [`on`](Self::on), the route getting the table's shared state.
    pub fn on_shared(
        mut self,
        id: i32,
        route: impl Fn(&S, &Connection, &Request<'_>) + Send + Sync + 'static,
    ) -> Dispatch<S> {
        self.blocking.remove(&id);
        self.routes.insert(id, Box::new(route));
        self
    }

    /// Whether a route is registered for `id`.
    pub fn handles(&self, id: i32) -> bool {
        self.routes.contains_key(&id) || self.blocking.contains_key(&id)
    }

    /// Runs the route for the request's id (a blocking one: queues it for
    /// a worker), or answers with `ERROR_UNKNOWN_ID`. Returns whether a
    /// route ran or was queued. A blocking request that finds the queue
    /// full (its handler did not ask [`ready`](Self::ready) first) waits
    /// here for room, holding the loop, and is queued whatever its
    /// connection's turn or share.
    pub fn dispatch(&self, conn: &Connection, request: &Request<'_>) -> bool {
        if let (Some(route), Some(pool)) = (self.blocking.get(&request.id()), &self.pool) {
            let (route, conn2, owned) = (route.clone(), conn.clone(), request.to_owned());
            let state = self.state.clone();
            pool.submit(conn.id(), Box::new(move || route(&state, &conn2, &owned)));
            return true;
        }
        match self.routes.get(&request.id()) {
            Some(route) => {
                route(&self.state, conn, request);
                true
            }
            None => {
                // The client learns its mistake; a full response ring is
                // its own problem, and a closed one means it is gone.
                let _ = conn.respond_vectored(request.seq(), request.id(), ERROR_UNKNOWN_ID, &[]);
                false
            }
        }
    }
}

impl<S: Send + Sync + 'static> Handler for Dispatch<S> {
    fn message(&self, conn: &Connection, request: &Request<'_>) {
        self.dispatch(conn, request);
    }

    fn ready(&self, conn: &Connection, id: i32) -> bool {
        Dispatch::ready(self, conn, id)
    }

    fn connection_closed(&self, conn: &Connection) {
        if let Some(pool) = &self.pool {
            pool.forget(conn);
        }
    }
}

impl<S> fmt::Debug for Dispatch<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<_> = self.routes.keys().collect();
        ids.sort();
        let mut blocking: Vec<_> = self.blocking.keys().collect();
        blocking.sort();
        f.debug_struct("Dispatch")
            .field("ids", &ids)
            .field("blocking", &blocking)
            .finish()
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// How long an idle worker waits before looking again for held
/// connections that closed in front of others: only while more
/// connections wait than the queue has room for (see [`PoolShared::work`]).
const RECHECK: Duration = Duration::from_millis(50);

/// Worker threads taking jobs from a bounded queue, shared fairly between
/// connections: room in the queue goes to the connections held for it in
/// the order they asked (a connection that asks while others wait for
/// room is held behind them), workers take the queued jobs one connection
/// at a time in turn (each connection's in order), and a connection may
/// have at most `share` jobs queued or running (if set).
///
/// A held connection is resumed when its turn comes: when a worker takes
/// a job and it is among the first waiting for room, or one of its own
/// jobs ends if it was held at its share.
struct Pool {
    shared: Arc<PoolShared>,
    threads: Vec<JoinHandle<()>>,
}

struct PoolShared {
    state: Mutex<PoolState>,
    /// Jobs arrived (workers wait on it) or room was made (a submitter
    /// waits on it).
    changed: Condvar,
}

struct PoolState {
    /// Most jobs queued (not running), all connections together.
    capacity: usize,
    /// Jobs queued: `queued` of them, per connection (by id), each
    /// connection's in the order they came; `turns` holds the connections
    /// with jobs queued, in the order workers take from them (one job,
    /// then the connection goes to the back).
    jobs: HashMap<u64, VecDeque<Job>>,
    turns: VecDeque<u64>,
    queued: usize,
    /// Jobs queued or running, per connection (none: no entry).
    load: HashMap<u64, usize>,
    /// Most jobs one connection may have queued or running (`None`: no
    /// limit but the pool's).
    share: Option<usize>,
    /// Connections held because the queue had no room for them (or others
    /// were waiting for it first), in the order they asked.
    waiting: VecDeque<Waiter>,
    /// Connections held at their share, resumed when one of their jobs
    /// ends.
    capped: HashMap<u64, Connection>,
    stop: bool,
}

/// A connection waiting for room in the queue.
struct Waiter {
    conn: Connection,
    /// Resumed since it was last refused: it will ask again.
    resumed: bool,
}

impl Pool {
    fn new(threads: usize, capacity: usize, share: Option<usize>) -> Pool {
        let shared = Arc::new(PoolShared {
            state: Mutex::new(PoolState {
                capacity,
                jobs: HashMap::new(),
                turns: VecDeque::new(),
                queued: 0,
                load: HashMap::new(),
                share,
                waiting: VecDeque::new(),
                capped: HashMap::new(),
                stop: false,
            }),
            changed: Condvar::new(),
        });
        let threads = (0..threads)
            .map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("ringlink-worker-{i}"))
                    .spawn(move || shared.work())
                    .expect("spawn a worker thread")
            })
            .collect();
        Pool { shared, threads }
    }

    fn set_share(&self, share: usize) {
        self.shared.state.lock().share = Some(share);
    }

    /// Whether `conn` may queue a job now: it is under its share, and
    /// there is room for it once every connection that asked before it
    /// and still waits has had its own. If not, it waits for its turn
    /// (and is resumed then).
    fn room_or_wait(&self, conn: &Connection) -> bool {
        let mut st = self.shared.state.lock();
        let id = conn.id();
        let load = st.load.get(&id).copied().unwrap_or(0);
        if st.share.is_some_and(|share| load >= share) {
            st.capped.entry(id).or_insert_with(|| conn.clone());
            return false;
        }
        // The room goes to the first ones waiting (closed ones are not).
        st.waiting.retain(|w| w.conn.is_connected());
        let room = st.capacity - st.queued;
        let at = st.waiting.iter().position(|w| w.conn.id() == id);
        let admitted = at.unwrap_or(st.waiting.len()) < room;
        match at {
            Some(i) if admitted => drop(st.waiting.remove(i)),
            Some(i) => st.waiting[i].resumed = false,
            None if admitted => {}
            None => st.waiting.push_back(Waiter {
                conn: conn.clone(),
                resumed: false,
            }),
        }
        // Admitted, it leaves a place among the first ones to the next
        // (it is told, in case this one does not take the room after all:
        // its answer might not fit, it might close).
        let wake = st.due();
        drop(st);
        resume(wake);
        admitted
    }

    /// Queues a job of connection `conn`, waiting for room if there is
    /// none.
    fn submit(&self, conn: u64, job: Job) {
        let mut st = self.shared.state.lock();
        while st.queued >= st.capacity {
            self.shared.changed.wait(&mut st);
        }
        let q = st.jobs.entry(conn).or_default();
        q.push_back(job);
        if q.len() == 1 {
            st.turns.push_back(conn);
        }
        st.queued += 1;
        *st.load.entry(conn).or_default() += 1;
        drop(st);
        self.shared.changed.notify_all();
    }

    /// `conn` closed: it waits for nothing any more, and those behind it
    /// move up.
    fn forget(&self, conn: &Connection) {
        let mut st = self.shared.state.lock();
        st.waiting.retain(|w| w.conn.id() != conn.id());
        st.capped.remove(&conn.id());
        let wake = st.due();
        drop(st);
        resume(wake);
    }
}

fn resume(conns: Vec<Connection>) {
    for c in conns {
        c.resume();
    }
}

impl PoolState {
    /// Drops the waiting connections that closed, and returns those that
    /// the room now admits and that were not told since they were last
    /// refused (marked told).
    fn due(&mut self) -> Vec<Connection> {
        self.waiting.retain(|w| w.conn.is_connected());
        let room = self.capacity - self.queued;
        let mut wake = Vec::new();
        for w in self.waiting.iter_mut().take(room) {
            if !std::mem::replace(&mut w.resumed, true) {
                wake.push(w.conn.clone());
            }
        }
        wake
    }

    /// The next job: the first of the connection whose turn it is.
    fn take(&mut self) -> Option<(u64, Job)> {
        let conn = self.turns.pop_front()?;
        let q = self.jobs.get_mut(&conn)?;
        let job = q.pop_front()?;
        if q.is_empty() {
            self.jobs.remove(&conn);
        } else {
            self.turns.push_back(conn);
        }
        self.queued -= 1;
        Some((conn, job))
    }

    /// A job of `conn` ended: resumes it if it was held at its share.
    fn ended(&mut self, conn: u64) -> Option<Connection> {
        if let Some(n) = self.load.get_mut(&conn) {
            *n -= 1;
            if *n == 0 {
                self.load.remove(&conn);
            }
        }
        self.capped.remove(&conn)
    }
}

impl PoolShared {
    fn work(&self) {
        let mut st = self.state.lock();
        loop {
            let (conn, job) = loop {
                if let Some(next) = st.take() {
                    break next;
                }
                if st.stop {
                    return; // stopped, and nothing left
                }
                // More connections wait for room than there is: one in
                // front that closed would hold the others back for ever if
                // no job came to have it noticed; look now and then.
                if st.waiting.len() > st.capacity - st.queued {
                    if self.changed.wait_for(&mut st, RECHECK).timed_out() {
                        let wake = st.due();
                        if !wake.is_empty() {
                            drop(st);
                            resume(wake);
                            st = self.state.lock();
                        }
                    }
                } else {
                    self.changed.wait(&mut st);
                }
            };
            // Room was made: a submitter waiting for it, and the next
            // held connection in line, go on.
            let wake = st.due();
            drop(st);
            self.changed.notify_all();
            resume(wake);
            // A route that panics loses its own request, not the worker.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            st = self.state.lock();
            let capped = st.ended(conn);
            let wake = st.due();
            if capped.is_some() || !wake.is_empty() {
                drop(st);
                resume(capped.into_iter().chain(wake).collect());
                st = self.state.lock();
            }
        }
    }
}

impl Drop for Pool {
    /// Runs the jobs already queued, then stops the workers.
    fn drop(&mut self) {
        self.shared.state.lock().stop = true;
        self.shared.changed.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
