//! Blocking routes shared fairly (`Dispatch::on_blocking`): a client
//! that keeps many requests in flight on a small pool does not starve
//! another client's blocking requests, nor, behind them, its loop-route
//! requests. A review found that it did: when a worker took a job, every
//! held connection was resumed and the first one the loop looked at (the
//! hog, which had waited first) took the freed place every time. In-process
//! services, both transports.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringlink_ipcc::{Client, Error};
use ringlink_ipcs::{Dispatch, Handler, Service, ServiceOptions};
use ringlink_tests::ipc::PROTOCOL;
use ringlink_tests::procs::{client_options, unique_addr};

/// Only catches hangs.
const PROMPT: Option<Duration> = Some(Duration::from_secs(60));

/// A blocking route (on the worker pool) and a loop route.
const SLOW: i32 = 1;
const ECHO: i32 = 2;

/// A service on its own thread; dropped, it shuts down.
struct Running(
    Option<ringlink_ipcs::ControlHandle>,
    Option<std::thread::JoinHandle<()>>,
);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.shutdown();
        }
        if let Some(t) = self.1.take() {
            let _ = t.join();
        }
    }
}

fn serve<H: Handler>(tag: &str, h: H) -> (ringlink_common::ServiceAddr, Running) {
    let addr = unique_addr(tag);
    let opts = ServiceOptions::default().transport(ringlink_tests::transport::current());
    let mut s = Service::bind(addr.clone(), PROTOCOL, opts, h).expect("bind");
    let control = s.control_handle();
    let t = std::thread::spawn(move || {
        let _ = s.run();
    });
    (addr, Running(Some(control), Some(t)))
}

fn connect(addr: &ringlink_common::ServiceAddr) -> Client {
    Client::connect(addr, &client_options(0)).expect("connect")
}

/// `c` keeping up to `in_flight` blocking requests in flight (as
/// many as its channel takes) until `stop`; counts its answers in
/// `answers`.
fn hog(
    mut c: Client,
    in_flight: usize,
    stop: Arc<AtomicBool>,
    answers: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let mut out = 0usize;
        while !stop.load(Ordering::Relaxed) {
            // Never waiting for room: a client that sends without reading
            // its answers would wait for ever over sockets.
            while out < in_flight {
                match c.send(SLOW, b"hog") {
                    Ok(_) => out += 1,
                    Err(Error::WouldBlock | Error::TimedOut) => break,
                    Err(e) => panic!("hog send: {e:?}"),
                }
            }
            let m = c.recv(&mut buf, PROMPT).expect("hog answered");
            assert_eq!((m.error, &buf[..m.len]), (0, &b"hog"[..]));
            out -= 1;
            answers.fetch_add(1, Ordering::Relaxed);
        }
    })
}

ringlink_tests::transport_test! {
    /// One worker, a queue of 2, a job of 5 ms, a hog keeping 200 requests
    /// in flight: each of the victim's blocking requests, with a loop-route
    /// request pipelined behind it, is answered within half a second (a
    /// fair share: a few jobs' time), and the hog goes on being served.
    /// Before the fix every one of the victim's requests timed out.
    fn a_client_with_many_blocking_requests_in_flight_does_not_starve_another() {
        /// Far above a fair wait (a few jobs of 5 ms), far below a starved one.
        const BOUND: Duration = Duration::from_millis(500);
        /// How long the victim waits for an answer before calling it starved.
        const GIVE_UP: Duration = Duration::from_secs(2);
        const ROUNDS: usize = 5;

        let table = Dispatch::new()
            .workers(1, 2)
            .on_blocking(SLOW, |conn, req| {
                std::thread::sleep(Duration::from_millis(5));
                let _ = conn.respond(req.seq(), SLOW, req.payload());
            })
            .on(ECHO, |conn, req| {
                let _ = conn.respond(req.seq(), ECHO, req.payload());
            });
        let (addr, _running) = serve("fair", table);
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(AtomicU64::new(0));
        let hog = hog(connect(&addr), 200, stop.clone(), answers.clone());
        // The hog holds the pool (and waited first) before the victim comes.
        let deadline = Instant::now() + Duration::from_secs(60);
        while answers.load(Ordering::Relaxed) < 20 {
            assert!(Instant::now() < deadline, "the hog is not served");
            std::thread::sleep(Duration::from_millis(5));
        }

        let mut victim = connect(&addr);
        let mut buf = [0u8; 64];
        let mut slow_took = Vec::new();
        let mut echo_took = Vec::new();
        let mut starved = None;
        'rounds: for round in 0..ROUNDS {
            let t = Instant::now();
            let slow = victim.send_timeout(SLOW, b"victim", PROMPT).expect("send");
            let echo = victim.send_timeout(ECHO, b"echo", PROMPT).expect("send");
            for _ in 0..2 {
                match victim.recv(&mut buf, Some(GIVE_UP)) {
                    Ok(m) if m.seq == slow => {
                        assert_eq!((m.error, &buf[..m.len]), (0, &b"victim"[..]));
                        slow_took.push(t.elapsed());
                    }
                    Ok(m) => {
                        assert_eq!(m.seq, echo);
                        assert_eq!((m.error, &buf[..m.len]), (0, &b"echo"[..]));
                        echo_took.push(t.elapsed());
                    }
                    Err(e) => {
                        starved = Some(format!("round {round}: no answer in {GIVE_UP:?} ({e:?})"));
                        break 'rounds;
                    }
                }
            }
            // A loop-route round trip on its own, between the rounds.
            let t = Instant::now();
            let m = victim
                .send_recv(ECHO, b"alone", &mut buf, Some(GIVE_UP))
                .unwrap_or_else(|e| panic!("round {round}: echo alone: {e:?}"));
            assert_eq!(&buf[..m.len], b"alone");
            echo_took.push(t.elapsed());
        }
        let before = answers.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(50));
        let hog_went_on = answers.load(Ordering::Relaxed) > before;
        stop.store(true, Ordering::Relaxed);
        hog.join().expect("hog thread");
        eprintln!(
            "victim's blocking requests took {slow_took:?}, its echoes {echo_took:?}; \
             the hog got {} answers",
            answers.load(Ordering::Relaxed)
        );
        if let Some(why) = starved {
            panic!(
                "the victim was starved: {why}; answered before: blocking {slow_took:?}, \
                 echo {echo_took:?}; the hog got {} answers",
                answers.load(Ordering::Relaxed)
            );
        }
        assert!(
            slow_took.iter().chain(&echo_took).all(|d| *d < BOUND),
            "over {BOUND:?}: blocking {slow_took:?}, echo {echo_took:?}"
        );
        assert!(hog_went_on, "the hog was not served any more");
    }
}

/// A gate the blocking route waits at until it opens.
#[derive(Default)]
struct Gate {
    open: std::sync::Mutex<bool>,
    changed: std::sync::Condvar,
    started: AtomicU64,
}

impl Gate {
    fn pass(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        while !*open {
            open = self.changed.wait(open).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.changed.notify_all();
    }
}

/// Opens the gate when dropped: a failing test's service, shut down, does
/// not wait for ever for its worker.
struct OpenOnDrop(Arc<Gate>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}

ringlink_tests::transport_test! {
    /// `Dispatch::per_connection`: a client at its share is held, so it
    /// never fills the queue; another client's blocking request is queued
    /// at once, and its loop-route request behind it is answered while the
    /// only worker is still blocked.
    fn a_client_at_its_share_leaves_the_queue_to_others() {
        let gate = Arc::new(Gate::default());
        let table = {
            let gate = gate.clone();
            Dispatch::new()
                .workers(1, 2)
                .per_connection(1)
                .on_blocking(SLOW, move |conn, req| {
                    gate.pass();
                    let _ = conn.respond(req.seq(), SLOW, req.payload());
                })
                .on(ECHO, |conn, req| {
                    let _ = conn.respond(req.seq(), ECHO, req.payload());
                })
        };
        let (addr, _running) = serve("share", table);
        let _open = OpenOnDrop(gate.clone());
        let mut hog = connect(&addr);
        for _ in 0..10 {
            hog.send_timeout(SLOW, b"hog", PROMPT).expect("send");
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while gate.started.load(Ordering::Relaxed) < 1 {
            assert!(Instant::now() < deadline, "the worker did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Time for the loop to read the hog's requests: without a share,
        // two of them would fill the queue.
        std::thread::sleep(Duration::from_millis(100));
        let mut victim = connect(&addr);
        let mut buf = [0u8; 64];
        let slow = victim.send_timeout(SLOW, b"victim", PROMPT).expect("send");
        let m = victim
            .send_recv(ECHO, b"behind", &mut buf, PROMPT)
            .expect("the echo behind the blocking request is answered");
        assert_eq!(&buf[..m.len], b"behind");
        // The worker is still at the gate, with the hog's first request.
        assert_eq!(gate.started.load(Ordering::Relaxed), 1);
        gate.open();
        let m = victim.recv(&mut buf, PROMPT).expect("answered");
        assert_eq!((m.seq, &buf[..m.len]), (slow, &b"victim"[..]));
        for seq in 1..=10 {
            let m = hog.recv(&mut buf, PROMPT).expect("answered");
            assert_eq!((m.seq, &buf[..m.len]), (seq, &b"hog"[..]));
        }
    }
}
