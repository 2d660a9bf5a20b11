//! The tokio API against real processes, under the multi-thread runtime:
//! `AsyncClient` (requests and responses, events as a stream, a thousand
//! requests in flight from many tasks on one connection, flow control
//! awaited without a blocked thread, cancellation, and every pending
//! future resolving to `Disconnected` when the server is killed), and
//! `Service::run_until` (a service as a task, answering from spawned
//! tasks, shut down by a future, keeping its handshake deadlines while
//! nothing else happens).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Context;
use std::time::{Duration, Instant};

use futures_core::Stream;
use ringlink_ipcc::{AsyncClient, Error};
use ringlink_ipcs::{Connection, Handler, Request, Service};
use ringlink_tests::deadlines;
use ringlink_tests::ipc::{id, Defer, DEFER_HEADER};
use ringlink_tests::procs::{client_options, unique_addr, Helper, ServerProc, LINE_DEADLINE};

const SERVER: &str = env!("CARGO_BIN_EXE_test_server");
const CLIENT: &str = env!("CARGO_BIN_EXE_test_client");

/// Deadline of anything that should complete: only catches hangs.
const HANG: Duration = Duration::from_secs(60);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn connect(server: &ServerProc) -> AsyncClient {
    AsyncClient::connect(server.addr(), &client_options(0))
        .await
        .expect("connect")
}

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(HANG, f)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
}

/// A request the test server holds until `batch` of them came, then
/// answers all (in reverse order).
fn deferred(batch: u32) -> [u8; DEFER_HEADER] {
    let mut req = [0u8; DEFER_HEADER];
    Defer {
        batch,
        order_seed: 0,
    }
    .encode_into(&mut req);
    req
}

/// The next item of a stream.
async fn next<S: Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx: &mut Context<'_>| Pin::new(&mut *s).poll_next(cx)).await
}

ringlink_tests::transport_test! {
fn requests_responses_and_events() {
    let server = ServerProc::spawn(SERVER, &unique_addr("async"), &[]);
    runtime().block_on(async {
        let c = connect(&server).await;
        assert_eq!(c.transport(), ringlink_tests::transport::current());
        for len in [0usize, 1, 1000, c.max_message()] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 13) as u8).collect();
            let r = within("echo", c.send_recv(id::ECHO, &payload)).await.expect("echo");
            assert_eq!((r.id, r.error), (id::ECHO, 0));
            assert!(r.payload == payload, "echo of {len} bytes differs");
        }
        // Events: one awaited directly, then three from the stream.
        c.send(id::EVENT_ONLY, b"first").await.expect("send");
        let e = within("event", c.event_recv()).await.expect("event");
        assert_eq!((e.id, e.payload.as_slice()), (id::EVENT_ONLY, &b"first"[..]));
        let mut events = c.events();
        for i in 0..3u8 {
            c.send(id::EVENT_ONLY, &[i]).await.expect("send");
        }
        for i in 0..3u8 {
            let e = within("stream", next(&mut events)).await.expect("an item").expect("event");
            assert_eq!(e.payload, [i]);
        }
    });
    server.shutdown();
}
}

ringlink_tests::transport_test! {
fn fds_go_and_come_back_with_async_requests_and_events() {
    use std::io::Write;
    use std::os::fd::AsFd;
    let server = ServerProc::spawn(SERVER, &unique_addr("async-fds"), &["--accept-fds", "2"]);
    runtime().block_on(async {
        let opts = client_options(0).accept_fds(ringlink_ipcc::FdTerms::per_message(2));
        let c = AsyncClient::connect(server.addr(), &opts).await.expect("connect");
        let mut f = tempfile_with("async");
        f.flush().expect("flush");
        let r = within("fds", c.send_recv_with_fds(id::FDS, b"e", &[f.as_fd()]))
            .await
            .expect("a response");
        assert_eq!(r.payload, b"n=1|async");
        assert_eq!(r.fds.len(), 1, "the fd came back with the response");
        let mut back = [0u8; 8];
        let n = nix::sys::uio::pread(&r.fds[0], &mut back, 0).expect("pread");
        assert_eq!(&back[..n], b"async");
        let seq = c.send_with_fds(id::FDS, b"v", &[f.as_fd()]).await.expect("send");
        let e = within("event", c.event_recv()).await.expect("event");
        assert_eq!((e.id, e.fds.len()), (id::FDS, 1));
        let r = within("recv", c.recv()).await.expect("its response");
        assert_eq!((r.seq, r.fds.len()), (seq, 0));
    });
    server.shutdown();
}
}

/// An unlinked file holding `text`.
fn tempfile_with(text: &str) -> std::fs::File {
    use std::io::Write;
    let fd = nix::sys::memfd::memfd_create(c"async-fds", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .expect("memfd");
    let mut f = std::fs::File::from(fd);
    f.write_all(text.as_bytes()).expect("write");
    f
}

ringlink_tests::transport_test! {
fn send_recv_into_reuses_the_callers_reply() {
    let server = ServerProc::spawn(SERVER, &unique_addr("async-into"), &[]);
    runtime().block_on(async {
        let c = connect(&server).await;
        let mut reply = ringlink_ipcc::Reply::default();
        reply.payload.reserve(64);
        let buffer = reply.payload.as_ptr();
        for i in 0..1000u32 {
            let p = format!("{i:>8}");
            within("echo", c.send_recv_into(id::ECHO, p.as_bytes(), &mut reply))
                .await
                .expect("echo");
            assert_eq!((reply.id, reply.error, reply.payload.as_slice()), (id::ECHO, 0, p.as_bytes()));
            assert!(reply.seq > 0 && reply.fds.is_empty());
            // The same allocation, refilled: nothing allocated per reply.
            assert_eq!(reply.payload.as_ptr(), buffer, "round trip {i} reallocated");
        }
        // Another task's response filed while we waited is still ours to
        // read: two tasks, each into its own reply.
        let (a, b) = (c.clone(), c.clone());
        let ta = tokio::spawn(async move {
            let mut r = ringlink_ipcc::Reply::default();
            for _ in 0..500 {
                a.send_recv_into(id::ECHO, b"a", &mut r).await.expect("a");
                assert_eq!(r.payload, b"a");
            }
        });
        let tb = tokio::spawn(async move {
            let mut r = ringlink_ipcc::Reply::default();
            for _ in 0..500 {
                b.send_recv_into(id::ECHO, b"bb", &mut r).await.expect("b");
                assert_eq!(r.payload, b"bb");
            }
        });
        within("two tasks", async { ta.await.expect("task a"); tb.await.expect("task b") }).await;
    });
    server.shutdown();
}
}

ringlink_tests::transport_test! {
fn event_recv_into_reuses_the_callers_event() {
    let server = ServerProc::spawn(SERVER, &unique_addr("async-event-into"), &[]);
    runtime().block_on(async move {
        let c = connect(&server).await;
        let mut event = ringlink_ipcc::Reply::default();
        event.payload.reserve(64);
        let buffer = event.payload.as_ptr();
        for i in 0..500u32 {
            let p = format!("{i:>8}");
            c.send(id::EVENT_ONLY, p.as_bytes()).await.expect("send");
            within("event", c.event_recv_into(&mut event)).await.expect("event");
            assert_eq!((event.id, event.error, event.payload.as_slice()), (id::EVENT_ONLY, 0, p.as_bytes()));
            assert!(event.fds.is_empty());
            // The same allocation, refilled: nothing allocated per event.
            assert_eq!(event.payload.as_ptr(), buffer, "event {i} reallocated");
        }
        // A longer one grows it; the error ends the call and leaves the
        // event as it was.
        let long = vec![7u8; 1000];
        c.send(id::EVENT_ONLY, &long).await.expect("send");
        within("long event", c.event_recv_into(&mut event)).await.expect("event");
        assert_eq!(event.payload, long);
        let _ = server.kill();
        let gone = within("after the server", c.event_recv_into(&mut event)).await;
        assert!(matches!(gone, Err(Error::Disconnected)), "{gone:?}");
        assert_eq!(event.payload, long, "a failed call changed the event");
    });
}
}

ringlink_tests::transport_test! {
/// The client's state lock is biased to the thread that keeps calling
/// (`ringbuf::bias`). One thread, with a runtime of its own, calls
/// without pause and earns the bias; tasks on four other threads then
/// take the connection from it while it goes on calling (each taking of
/// the bias from it is a revocation while it may be inside). Every
/// answer must be its own request's: a lock that let two threads in at
/// once would corrupt the engine's numbering or the filed replies.
fn a_biased_connection_taken_by_four_threads_while_its_owner_calls() {
    let server = ServerProc::spawn(SERVER, &unique_addr("async-bias"), &[]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let c = rt.block_on(connect(&server));
    async fn calls(c: &AsyncClient, tag: u32, i: u32) {
        let p = format!("{tag}:{i}").into_bytes();
        c.send_oneway(id::ECHO, &p).await.expect("one-way");
        let reply = c.send_recv(id::ECHO, &p).await.expect("echo");
        assert_eq!(reply.payload, p, "task {tag} got another's answer");
    }
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let owner = {
        let (c, done, stop) = (c.clone(), Arc::clone(&done), Arc::clone(&stop));
        std::thread::spawn(move || {
            let own = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("owner's runtime");
            own.block_on(async {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    within("the owner's calls", calls(&c, 0, i)).await;
                    i += 1;
                    done.store(u64::from(i), Ordering::Relaxed);
                }
            });
        })
    };
    let start = Instant::now();
    while done.load(Ordering::Relaxed) < 1000 {
        assert!(start.elapsed() < HANG, "the owner's calls hung");
        std::thread::sleep(Duration::from_millis(1));
    }
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for t in 1..=8u32 {
            let c = c.clone();
            tasks.spawn(async move {
                for i in 0..300 {
                    calls(&c, t, i).await;
                }
            });
        }
        within("eight tasks on four threads", async {
            while let Some(r) = tasks.join_next().await {
                r.expect("task");
            }
        })
        .await;
    });
    stop.store(true, Ordering::Relaxed);
    owner.join().expect("the owner's thread");
    if c.lock_can_bias() {
        assert!(c.lock_revocations() > 0, "the bias was never taken from the owner");
    } else {
        assert!(
            std::env::var_os("RINGLINK_REQUIRE_MEMBARRIER").is_none(),
            "membarrier(PRIVATE_EXPEDITED) refused, and RINGLINK_REQUIRE_MEMBARRIER is set"
        );
        eprintln!("revocations not checked: membarrier refused here, the lock never biases");
    }
    server.shutdown();
}
}

ringlink_tests::transport_test! {
fn a_thousand_requests_in_flight_from_many_tasks() {
    let server = ServerProc::spawn(SERVER, &unique_addr("async-many"), &[]);
    runtime().block_on(async {
        let c = connect(&server).await;
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..1000u32 {
            let c = c.clone();
            tasks.spawn(async move {
                for r in 0..5u32 {
                    let p = format!("{t}.{r}").into_bytes();
                    let reply = c.send_recv(id::ECHO, &p).await.expect("echo");
                    assert_eq!(reply.payload, p, "task {t} got another task's answer");
                }
            });
        }
        within("a thousand tasks", async {
            while let Some(r) = tasks.join_next().await {
                r.expect("task");
            }
        })
        .await;
    });
    server.shutdown();
}
}

ringlink_tests::transport_test! {
/// A dropped `send_recv` loses nothing: its response goes to `recv`, and
/// the connection goes on.
fn a_cancelled_send_recv_loses_no_message() {
    let server = ServerProc::spawn(SERVER, &unique_addr("async-cancel"), &[]);
    runtime().block_on(async {
        let c = connect(&server).await;
        let held = deferred(2);
        // Held by the server (batch of 2): the wait is cancelled.
        let first = tokio::time::timeout(Duration::from_millis(100), c.send_recv(id::DEFER, &held));
        assert!(first.await.is_err(), "a held request was answered");
        // The second of the batch releases both.
        let second = within("second", c.send_recv(id::DEFER, &held)).await.expect("second");
        let orphan = within("the cancelled one's answer", c.recv()).await.expect("recv");
        assert_eq!(orphan.seq + 1, second.seq, "the cancelled request's answer");
        let r = within("echo after", c.send_recv(id::ECHO, b"after")).await.expect("echo");
        assert_eq!(r.payload, b"after");
    });
    server.shutdown();
}
}

ringlink_tests::transport_test! {
/// With the server's rate limit Off, `send` awaits flow control (without
/// holding a thread: the runtime's two workers go on running a ticker),
/// then completes when the rate is back.
fn send_awaits_flow_control_without_blocking_a_thread() {
    let mut server = ServerProc::spawn(SERVER, &unique_addr("async-fc"), &[]);
    assert_eq!(server.command("rate off"), "ok");
    let rt = runtime();
    let c = rt.block_on(async { connect(&server).await });
    let ticks = Arc::new(AtomicU64::new(0));
    let ticker = {
        let ticks = ticks.clone();
        rt.spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(1)).await;
                ticks.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let pending = {
        let c = c.clone();
        rt.spawn(async move { c.send(id::ECHO, b"held back").await })
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(!pending.is_finished(), "send went through while flow control was on");
    let t0 = ticks.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(100));
    assert!(ticks.load(Ordering::Relaxed) > t0, "the runtime's threads are blocked");
    assert_eq!(server.command("rate normal"), "ok");
    rt.block_on(async {
        let seq = within("the held send", pending).await.expect("task").expect("send");
        let r = within("its answer", c.recv()).await.expect("recv");
        assert_eq!((r.seq, r.payload.as_slice()), (seq, &b"held back"[..]));
    });
    ticker.abort();
    drop(c);
    server.shutdown();
}
}

ringlink_tests::transport_test! {
/// `try_send` and `try_send_oneway` send at once when they can, and say
/// `WouldBlock` without sending (and without waiting) while flow control
/// holds; the awaiting `send` then takes over.
fn try_send_goes_now_or_says_would_block() {
    let mut server = ServerProc::spawn(SERVER, &unique_addr("async-try"), &[]);
    let rt = runtime();
    let c = rt.block_on(async { connect(&server).await });
    rt.block_on(async {
        let seq = c.try_send(id::ECHO, b"now").expect("room now");
        let r = within("its answer", c.recv()).await.expect("recv");
        assert_eq!((r.seq, r.payload.as_slice()), (seq, &b"now"[..]));
        c.try_send_oneway(id::ECHO, b"one way").expect("room now");
    });
    assert_eq!(server.command("rate off"), "ok");
    // The level reaches the client through shared memory: probe until
    // it holds (each probe that still went is answered later).
    let mut probes = 0;
    let held = (0..5000).any(|_| match c.try_send(id::ECHO, b"probe") {
        Err(Error::WouldBlock) => true,
        Ok(_) => {
            probes += 1;
            std::thread::sleep(Duration::from_millis(1));
            false
        }
        Err(e) => panic!("try_send: {e}"),
    });
    assert!(held, "flow control never held try_send");
    let sent = c.stats(false).requests;
    assert!(matches!(c.try_send(id::ECHO, b"held"), Err(Error::WouldBlock)));
    assert!(matches!(c.try_send_oneway(id::ECHO, b"held"), Err(Error::WouldBlock)));
    assert_eq!(c.stats(false).requests, sent, "a refused try_send sent");
    let pending = {
        let c = c.clone();
        rt.spawn(async move { c.send(id::ECHO, b"awaited").await })
    };
    std::thread::sleep(Duration::from_millis(100));
    assert!(!pending.is_finished(), "the awaiting send went while flow control held");
    assert_eq!(server.command("rate normal"), "ok");
    rt.block_on(async {
        for _ in 0..probes {
            let r = within("a probe's answer", c.recv()).await.expect("recv");
            assert_eq!(r.payload, b"probe");
        }
        let seq = within("the awaited send", pending).await.expect("task").expect("send");
        let r = within("its answer", c.recv()).await.expect("recv");
        // Nothing refused was sent: the next answer is the awaited one.
        assert_eq!((r.seq, r.payload.as_slice()), (seq, &b"awaited"[..]));
    });
    drop(c);
    server.shutdown();
}
}

ringlink_tests::transport_test! {
/// A `try_send` that cannot go because flow control holds says
/// `Disconnected`, not `WouldBlock` forever, once the server is gone (as
/// the blocking client's non-waiting send does).
fn try_send_says_disconnected_when_the_server_is_gone() {
    let mut server = ServerProc::spawn(SERVER, &unique_addr("async-try-gone"), &[]);
    let rt = runtime();
    let c = rt.block_on(async { connect(&server).await });
    assert_eq!(server.command("rate off"), "ok");
    let start = Instant::now();
    while !matches!(c.try_send_oneway(id::ECHO, b"probe"), Err(Error::WouldBlock)) {
        assert!(start.elapsed() < HANG, "flow control never held try_send");
        std::thread::sleep(Duration::from_millis(1));
    }
    server.kill();
    let gone = loop {
        match c.try_send(id::ECHO, b"after") {
            Err(Error::WouldBlock) => {
                assert!(start.elapsed() < HANG, "try_send never saw the server leave");
                std::thread::sleep(Duration::from_millis(1));
            }
            other => break other,
        }
    };
    assert!(matches!(gone, Err(Error::Disconnected)), "{gone:?}");
}
}

ringlink_tests::transport_test! {
/// Killing the server resolves every pending future (`send_recv`,
/// `recv`, `event_recv`, the event stream) to `Disconnected`.
fn every_pending_future_resolves_when_the_server_dies() {
    let server = ServerProc::spawn(SERVER, &unique_addr("async-kill"), &[]);
    let rt = runtime();
    let c = rt.block_on(async { connect(&server).await });
    let held = deferred(1000);
    let mut waiters = Vec::new();
    for _ in 0..16 {
        let c = c.clone();
        waiters.push(rt.spawn(async move { c.send_recv(id::DEFER, &held).await.map(drop) }));
    }
    for _ in 0..8 {
        let c = c.clone();
        waiters.push(rt.spawn(async move { c.recv().await.map(drop) }));
    }
    for _ in 0..8 {
        let c = c.clone();
        waiters.push(rt.spawn(async move { c.event_recv().await.map(drop) }));
    }
    let stream = {
        let c = c.clone();
        rt.spawn(async move {
            let mut events = c.events();
            next(&mut events).await.expect("an item").map(drop)
        })
    };
    waiters.push(stream);
    std::thread::sleep(Duration::from_millis(200));
    assert!(waiters.iter().all(|w| !w.is_finished()), "a future resolved early");
    let killed = Instant::now();
    server.kill();
    rt.block_on(async {
        for w in waiters {
            match within("a pending future", w).await.expect("task") {
                Err(Error::Disconnected) => {}
                other => panic!("pending future after the server died: {other:?}"),
            }
        }
    });
    eprintln!("32 pending futures resolved {:?} after SIGKILL", killed.elapsed());
    assert!(!c.is_connected());
}
}

/// Echoes every request from a task of its own, and counts them.
struct SpawnedEcho {
    answered: Arc<AtomicU64>,
}

impl Handler for SpawnedEcho {
    fn message(&self, conn: &Connection, req: &Request<'_>) {
        let (conn, seq, id, payload) = (conn.clone(), req.seq(), req.id(), req.payload().to_vec());
        let answered = self.answered.clone();
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            conn.respond(seq, id, &payload).expect("respond");
            answered.fetch_add(1, Ordering::Relaxed);
        });
    }
}

ringlink_tests::transport_test! {
/// A service run as a tokio task serves a client process with answers
/// completed by spawned tasks, and a shutdown future ends it: the loop
/// returns, the client sees the connection end.
fn a_service_runs_as_a_task_and_shuts_down_on_a_future() {
    let addr = unique_addr("async-server");
    let answered = Arc::new(AtomicU64::new(0));
    let rt = runtime();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = {
        let (addr, answered) = (addr.clone(), answered.clone());
        // Made here: the test's transport is this thread's, not the
        // runtime's workers'.
        let opts = ringlink_tests::transport::service_options();
        rt.spawn(async move {
            let mut s = Service::bind(addr, ringlink_tests::ipc::PROTOCOL, opts, SpawnedEcho { answered })
                .expect("bind");
            s.run_until(async {
                let _ = stopped.await;
            })
            .await
        })
    };
    let mut args = vec!["stream".to_owned()];
    args.extend(ringlink_tests::procs::addr_args(&addr));
    let mut client = Helper::spawn(CLIENT, &args);
    client.expect("connected", LINE_DEADLINE);
    let deadline = Instant::now() + HANG;
    while answered.load(Ordering::Relaxed) < 1000 {
        assert!(Instant::now() < deadline, "the async service answered too little");
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = stop.send(());
    rt.block_on(async { within("run_until", service).await })
        .expect("task")
        .expect("run_until");
    // The client's next call fails: the service closed its connection.
    let line = client.line(LINE_DEADLINE);
    assert!(line.starts_with("error") && line.contains("disconnected"), "client: {line}");
    client.wait(LINE_DEADLINE);
    eprintln!("async service answered {} requests", answered.load(Ordering::Relaxed));
}
}

/// A service with `opts` as a tokio task (`run_until`, its address bound
/// when this returns), until the sender is used or dropped.
fn serve_as_task(
    rt: &tokio::runtime::Runtime,
    addr: &ringlink_ipcs::ServiceAddr,
    opts: ringlink_ipcs::ServiceOptions,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<ringlink_ipcs::Result<()>>,
) {
    let table = ringlink_ipcs::Dispatch::new();
    let mut s =
        Service::bind(addr.clone(), ringlink_tests::ipc::PROTOCOL, opts, table).expect("bind");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = rt.spawn(async move {
        s.run_until(async {
            let _ = stopped.await;
        })
        .await
    });
    (stop, task)
}

#[test]
/// Under `run_until`, a connection that never sends its request is
/// closed at its handshake deadline though nothing else happens in the
/// service: the deadline makes the service's fd readable.
fn run_until_closes_a_silent_connection_at_its_handshake_deadline() {
    let addr = unique_addr("async-deadline");
    let rt = runtime();
    let opts = ringlink_tests::transport::service_options().handshake_timeout(deadlines::HANDSHAKE);
    let (stop, task) = serve_as_task(&rt, &addr, opts);
    deadlines::assert_silent_connections_closed(&addr);
    let _ = stop.send(());
    rt.block_on(async { within("run_until", task).await })
        .expect("task")
        .expect("run_until");
}

ringlink_tests::transport_test! {
/// Under `run_until`, a client waiting for a slot (`queue_when_full`)
/// is refused by the server at its handshake deadline, with
/// `TooManyClients`, rather than left to time out on its own.
fn run_until_refuses_a_queued_client_at_its_handshake_deadline() {
    let addr = unique_addr("async-queue-late");
    let rt = runtime();
    let opts = ringlink_tests::transport::service_options()
        .max_clients(1)
        .queue_when_full(true)
        .handshake_timeout(deadlines::HANDSHAKE);
    let (stop, task) = serve_as_task(&rt, &addr, opts);
    deadlines::assert_queued_client_refused(&addr);
    let _ = stop.send(());
    rt.block_on(async { within("run_until", task).await })
        .expect("task")
        .expect("run_until");
}
}
