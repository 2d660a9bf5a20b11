//! The socket transport's long requests: a request larger than the
//! request socket takes at once (its send buffer, at most 8 MiB) goes in
//! fragments, and when the socket fills midway the part sent is
//! committed and its tail waits in the client. Here the server's loop is
//! held busy (a handler that blocks on it until the test opens a gate),
//! so the socket fills, and each test checks that the request reaches
//! the server whole:
//!
//! - a send that waits (a timeout other than zero) returns only once the
//!   whole request left, and the server gets it with the client idle;
//!   one that times out meanwhile says `TimedOut`, and its request
//!   ([`Client::unsent_request`]) still goes with the client's next call;
//! - a send that does not wait may leave a tail: `flush` sends it;
//! - a drop sends it too, while the server reads (bounded), and gives up
//!   on a server that does not read (the request is then lost whole:
//!   the server never gets a partial one);
//! - the async client's sends complete only once the tail went, and its
//!   `flush` sends what a `try_send` left.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ringlink_common::Transport;
use ringlink_ipcc::{AsyncClient, Client, Error};
use ringlink_ipcs::{Connection, ControlHandle, Handler, Request, Service, ServiceOptions};
use ringlink_tests::ipc::PROTOCOL;
use ringlink_tests::procs::{client_options, unique_addr};

/// One-way: its handler holds the server's loop until the gate opens.
const HOLD: i32 = 1;
/// The long request: the handler records whether it came whole, and
/// answers one that needs an answer with its length.
const BIG: i32 = 2;

/// Larger than any send buffer the socket transport gets (it asks for
/// 4 MiB, which the kernel doubles at most), so the socket always fills.
const SIZE: usize = 32 << 20;

/// How long a test holds the server's loop before opening the gate.
const HELD: Duration = Duration::from_millis(500);

/// Deadline of what must happen: only catches a hang or a loss.
const DUE: Duration = Duration::from_secs(20);

fn pattern() -> Vec<u8> {
    (0..SIZE).map(|i| (i ^ (i >> 11)) as u8).collect()
}

#[derive(Default)]
struct State {
    /// Open (true) or closed; starts open.
    gate: Mutex<bool>,
    gate_cv: Condvar,
    /// HOLD requests whose handler started.
    held: AtomicU64,
    /// Each BIG request taken: whether it came whole and right.
    got: Mutex<Vec<bool>>,
    got_cv: Condvar,
    expected: Vec<u8>,
}

struct Holder(Arc<State>);

impl Handler for Holder {
    fn message(&self, conn: &Connection, req: &Request<'_>) {
        let st = &self.0;
        match req.id() {
            HOLD => {
                st.held.fetch_add(1, Ordering::SeqCst);
                let mut open = st.gate.lock().expect("gate");
                while !*open {
                    open = st.gate_cv.wait(open).expect("gate");
                }
            }
            BIG => {
                let whole = req.payload() == &st.expected[..];
                st.got.lock().expect("got").push(whole);
                st.got_cv.notify_all();
                if req.needs_response() {
                    let _ =
                        conn.respond(req.seq(), BIG, &(req.payload().len() as u64).to_le_bytes());
                }
            }
            _ => {}
        }
    }
}

/// An in-process service over the socket transport, its loop on a
/// thread of its own.
struct Server {
    addr: ringlink_ipcc::ServiceAddr,
    st: Arc<State>,
    control: ControlHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(tag: &str) -> Server {
        let addr = unique_addr(tag);
        let st = Arc::new(State {
            gate: Mutex::new(true),
            expected: pattern(),
            ..State::default()
        });
        let mut opts = ServiceOptions::default();
        opts.transport = Transport::Socket;
        opts.max_message = SIZE;
        let mut service =
            Service::bind(addr.clone(), PROTOCOL, opts, Holder(st.clone())).expect("bind");
        let control = service.control_handle();
        let thread = std::thread::spawn(move || service.run().expect("the service's loop"));
        Server {
            addr,
            st,
            control,
            thread: Some(thread),
        }
    }

    fn options(&self) -> ringlink_ipcc::ConnectOptions {
        let mut o = client_options(SIZE as u32);
        o.transport = Transport::Socket;
        o
    }

    fn connect(&self) -> Client {
        let c = Client::connect(&self.addr, &self.options()).expect("connect");
        assert_eq!(c.transport(), Transport::Socket);
        assert_eq!(c.max_message(), SIZE);
        c
    }

    fn close_gate(&self) {
        *self.st.gate.lock().expect("gate") = false;
    }

    fn open_gate(&self) {
        *self.st.gate.lock().expect("gate") = true;
        self.st.gate_cv.notify_all();
    }

    /// Opens the gate after `after`, from a thread of its own.
    fn open_gate_in(&self, after: Duration) -> std::thread::JoinHandle<()> {
        let st = self.st.clone();
        std::thread::spawn(move || {
            std::thread::sleep(after);
            *st.gate.lock().expect("gate") = true;
            st.gate_cv.notify_all();
        })
    }

    /// Waits until the loop is in the HOLD handler (the `n`th).
    fn wait_held(&self, n: u64) {
        let end = Instant::now() + DUE;
        while self.st.held.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < end, "the server never took HOLD");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The BIG requests taken (whether each came whole), once there are
    /// `n` of them or `within` passed.
    fn got(&self, n: usize, within: Duration) -> Vec<bool> {
        let end = Instant::now() + within;
        let mut got = self.st.got.lock().expect("got");
        while got.len() < n {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            got = self.st.got_cv.wait_timeout(got, left).expect("got").0;
        }
        got.clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.open_gate();
        self.control.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Holds the server's loop: a HOLD request, taken.
fn hold(srv: &Server, c: &mut Client, n: u64) {
    srv.close_gate();
    c.send_oneway(HOLD, b"", Some(DUE)).expect("HOLD");
    srv.wait_held(n);
}

/// Holds the loop and sends a one-way request too large for the socket
/// without waiting: committed, its tail left in the client.
fn one_way_with_a_tail(srv: &Server, c: &mut Client) {
    let big = pattern();
    hold(srv, c, 1);
    c.send_oneway(BIG, &big, Some(Duration::ZERO))
        .expect("committed");
    assert_eq!(
        c.unsent_request(),
        Some(0),
        "no tail: the test shows nothing"
    );
}

#[test]
fn a_waiting_send_returns_once_the_whole_request_left() {
    let srv = Server::start("tail-wait");
    let mut c = srv.connect();
    let big = pattern();
    hold(&srv, &mut c, 1);
    let opener = srv.open_gate_in(HELD);
    let t0 = Instant::now();
    c.send_oneway(BIG, &big, Some(DUE))
        .expect("the long request");
    let took = t0.elapsed();
    opener.join().expect("opener");
    // The client stays idle: the server must get it all the same.
    assert_eq!(
        srv.got(1, DUE),
        [true],
        "the request did not reach the server whole (the send returned after {took:?})"
    );
    assert!(
        took >= HELD - Duration::from_millis(50),
        "returned after {took:?}, while the server's loop was held for {HELD:?}: \
         the tail could not have gone"
    );
    drop(c);
}

#[test]
fn a_waiting_send_that_times_out_leaves_its_request_committed() {
    let srv = Server::start("tail-timeout");
    let mut c = srv.connect();
    let big = pattern();
    hold(&srv, &mut c, 1);
    assert_eq!(c.unsent_request(), None);
    let t0 = Instant::now();
    let timeout = Duration::from_millis(200);
    match c.send_timeout(BIG, &big, Some(timeout)) {
        Err(Error::TimedOut) => {}
        other => panic!("a send whose tail cannot go in time gave {other:?}"),
    }
    let took = t0.elapsed();
    assert!(took >= timeout && took < DUE, "timed out after {took:?}");
    // Committed, with the first number: it will still go, and its answer
    // comes to `recv`.
    assert_eq!(c.unsent_request(), Some(1));
    srv.open_gate();
    let mut buf = [0u8; 8];
    let m = c
        .recv(&mut buf, Some(DUE))
        .expect("the answer to the request that timed out");
    assert_eq!((m.seq, u64::from_le_bytes(buf)), (1, SIZE as u64));
    assert_eq!(c.unsent_request(), None);
    assert_eq!(srv.got(1, DUE), [true]);
}

#[test]
fn a_send_that_does_not_wait_then_flush() {
    let srv = Server::start("tail-flush");
    let mut c = srv.connect();
    let big = pattern();
    // Nothing waits: a flush returns at once.
    c.flush(Some(Duration::ZERO)).expect("nothing to flush");
    hold(&srv, &mut c, 1);
    let seq = c.send(BIG, &big).expect("committed");
    assert_eq!(c.unsent_request(), Some(seq));
    // The next request waits behind the tail: never interleaved.
    assert!(matches!(c.send(BIG, &big), Err(Error::WouldBlock)));
    assert!(matches!(
        c.flush(Some(Duration::ZERO)),
        Err(Error::WouldBlock)
    ));
    assert!(matches!(
        c.flush(Some(Duration::from_millis(100))),
        Err(Error::TimedOut)
    ));
    assert_eq!(c.unsent_request(), Some(seq));
    let opener = srv.open_gate_in(HELD);
    c.flush(Some(DUE)).expect("flush");
    opener.join().expect("opener");
    assert_eq!(c.unsent_request(), None);
    // The client idle: the server gets it whole.
    assert_eq!(srv.got(1, DUE), [true]);
    let mut buf = [0u8; 8];
    let m = c.recv(&mut buf, Some(DUE)).expect("its answer");
    assert_eq!((m.seq, u64::from_le_bytes(buf)), (seq, SIZE as u64));
}

/// A drop sends the tail while the server reads, within its bound, and
/// the server takes the request whole: it reads what the request socket
/// holds before it takes the client's hang-up for the end. A drop that
/// gave up (200 ms without progress, on a loaded machine) loses the
/// request whole; it must never deliver a part of one.
#[test]
fn a_drop_sends_the_tail_while_the_server_reads() {
    let srv = Server::start("tail-drop");
    let mut c = srv.connect();
    one_way_with_a_tail(&srv, &mut c);
    // The loop freed just before the drop: it reads while the drop waits.
    srv.open_gate();
    let t0 = Instant::now();
    drop(c);
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(2), "the drop took {took:?}");
    let got = srv.got(1, DUE);
    if took < Duration::from_millis(200) {
        // Too soon to have given up: the tail went.
        assert_eq!(got, [true], "the drop took {took:?}");
    } else {
        assert!(!got.contains(&false), "a broken request was taken: {got:?}");
    }
}

#[test]
fn a_drop_gives_up_on_a_server_that_does_not_read() {
    let srv = Server::start("tail-drop-held");
    let mut c = srv.connect();
    one_way_with_a_tail(&srv, &mut c);
    let t0 = Instant::now();
    drop(c);
    let took = t0.elapsed();
    // Bounded: no progress for a while, and it stops waiting.
    assert!(took < Duration::from_secs(2), "the drop took {took:?}");
    srv.open_gate();
    // Lost whole: the server never gets a partial request.
    assert!(srv.got(1, Duration::from_secs(1)).is_empty());
    // And it still serves others.
    let mut d = srv.connect();
    d.send_oneway(BIG, &pattern(), Some(DUE))
        .expect("another client");
    assert_eq!(srv.got(1, DUE), [true]);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

#[test]
fn an_async_send_completes_once_the_whole_request_left() {
    let srv = Server::start("tail-async");
    let mut c = srv.connect();
    let rt = runtime();
    let opts = srv.options();
    let addr = srv.addr.clone();
    rt.block_on(async {
        let client = AsyncClient::connect(&addr, &opts).await.expect("connect");
        tokio::task::block_in_place(|| hold(&srv, &mut c, 1));
        let big = pattern();
        let opener = srv.open_gate_in(HELD);
        let t0 = Instant::now();
        tokio::time::timeout(DUE, client.send_oneway(BIG, &big))
            .await
            .expect("the send hung")
            .expect("the long request");
        let took = t0.elapsed();
        opener.join().expect("opener");
        // The client idle (and alive): the server gets it whole.
        let got = tokio::task::block_in_place(|| srv.got(1, DUE));
        assert_eq!(got, [true], "not whole (the send completed after {took:?})");
        assert!(
            took >= HELD - Duration::from_millis(50),
            "completed after {took:?}, while the server's loop was held for {HELD:?}"
        );
        drop(client);
    });
    drop(c);
}

#[test]
fn an_async_try_send_then_flush() {
    let srv = Server::start("tail-async-flush");
    let mut c = srv.connect();
    let rt = runtime();
    let opts = srv.options();
    let addr = srv.addr.clone();
    rt.block_on(async {
        let client = AsyncClient::connect(&addr, &opts).await.expect("connect");
        client.flush().await.expect("nothing to flush");
        tokio::task::block_in_place(|| hold(&srv, &mut c, 1));
        let big = pattern();
        let seq = client.try_send(BIG, &big).expect("committed");
        assert_eq!(client.unsent_request(), Some(seq));
        // Cancelled while the tail waits: it still waits, and goes later.
        assert!(
            tokio::time::timeout(Duration::from_millis(100), client.flush())
                .await
                .is_err(),
            "flushed while the server's loop was held"
        );
        let opener = srv.open_gate_in(HELD);
        tokio::time::timeout(DUE, client.flush())
            .await
            .expect("the flush hung")
            .expect("flush");
        opener.join().expect("opener");
        assert_eq!(client.unsent_request(), None);
        let got = tokio::task::block_in_place(|| srv.got(1, DUE));
        assert_eq!(got, [true]);
        let reply = tokio::time::timeout(DUE, client.recv())
            .await
            .expect("recv hung")
            .expect("its answer");
        assert_eq!(
            (reply.seq, &reply.payload[..]),
            (seq, &(SIZE as u64).to_le_bytes()[..])
        );
    });
    drop(c);
}
