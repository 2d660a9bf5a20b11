//! A service driven from the application's own event loop (libqb's
//! `qb_ipcs_poll_handlers_set`, the way Pacemaker and Corosync run their
//! IPC servers): the application polls the service's fd (`AsFd`) with
//! `poll(2)` in a loop of its own, and calls `dispatch` as the
//! documentation says. Clients must be served under sustained load,
//! after idle gaps, and with requests pipelined, over both transports,
//! with and without the service's spinning; and its deadlines kept
//! while nothing else happens (the fd is readable when one is due).

use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ringlink_ipcs::{
    Connection, ControlHandle, Dispatch, Handler, Request, Service, ServiceAddr, ServiceOptions,
};
use ringlink_tests::deadlines;
use ringlink_tests::ipc::PROTOCOL;
use ringlink_tests::procs::{connect, unique_addr};

/// A round trip that takes this long is a stall.
const STALL: Option<Duration> = Some(Duration::from_secs(10));

struct Echo;

impl Handler for Echo {
    fn message(&self, conn: &Connection, req: &Request<'_>) {
        let _ = conn.respond(req.seq(), req.id(), req.payload());
    }
}

/// A service on a thread of its own, in a `poll(2)` loop over its fd
/// with no timeout (a stall is a hang, not a delay), calling `dispatch`
/// without waiting when the fd is readable, until [`finish`](Self::finish).
struct PollLoop {
    stop: Arc<AtomicBool>,
    control: ControlHandle,
    thread: std::thread::JoinHandle<()>,
}

impl PollLoop {
    /// Binds `addr` with `opts` and `handler`; listening on return.
    fn start<H: Handler>(addr: &ServiceAddr, opts: ServiceOptions, handler: H) -> PollLoop {
        PollLoop::drive(Service::bind(addr.clone(), PROTOCOL, opts, handler).expect("bind"))
    }

    /// Drives `s`, which waits for its fd before its first turn.
    fn drive<H: Handler>(mut s: Service<H>) -> PollLoop {
        let control = s.control_handle();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let fd = s.as_fd().as_raw_fd();
                while !stop.load(Ordering::Relaxed) {
                    let mut p = libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd for the duration of the call.
                    let n = unsafe { libc::poll(&mut p, 1, -1) };
                    assert!(n >= 0, "poll: {}", std::io::Error::last_os_error());
                    // The documented contract: after the fd polled readable
                    // (or the application's loop turned for its own reasons),
                    // dispatch without waiting until the service says it is
                    // idle; only then wait on the fd again.
                    while s
                        .dispatch(Some(Duration::ZERO))
                        .expect("dispatch")
                        .is_busy()
                    {}
                }
            })
        };
        PollLoop {
            stop,
            control,
            thread,
        }
    }

    /// Stops the loop and joins its thread.
    fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.control.shutdown(); // makes the fd readable
        self.thread.join().expect("the service thread");
    }
}

/// Serves clients from an application's poll loop under sustained load,
/// after idle gaps, and pipelined.
fn outside_loop(spin: Duration) {
    let addr = unique_addr("outside");
    let mut opts = ringlink_tests::transport::service_options();
    opts.spin = spin;
    let service = PollLoop::start(&addr, opts, Echo);
    let mut c = connect(&addr, 0);
    let mut buf = vec![0u8; c.max_message()];
    let round_trip = |c: &mut ringlink_ipcc::Client, n: u64| {
        let mut buf = [0u8; 8];
        let m = c
            .send_recv(1, &n.to_le_bytes(), &mut buf, STALL)
            .unwrap_or_else(|e| panic!("round trip {n}: {e}"));
        assert_eq!(m.len, 8, "round trip {n}");
    };
    // Sustained load.
    for n in 0..2000 {
        round_trip(&mut c, n);
    }
    // Idle gaps, long enough for the service to arm and sleep.
    for n in 0..10 {
        std::thread::sleep(Duration::from_millis(30));
        for k in 0..5 {
            round_trip(&mut c, n * 10 + k);
        }
    }
    // Pipelined requests, then their responses.
    let seqs: Vec<u64> = (0..100u64)
        .map(|n| c.send_timeout(2, &n.to_le_bytes(), STALL).expect("send"))
        .collect();
    for seq in seqs {
        let m = c.recv(&mut buf, STALL).expect("a pipelined response");
        assert_eq!(m.seq, seq);
    }
    // A second client, after an idle gap.
    std::thread::sleep(Duration::from_millis(30));
    let mut d = connect(&addr, 0);
    round_trip(&mut d, 7);
    round_trip(&mut c, 8);
    drop((c, d));
    service.finish();
}

ringlink_tests::transport_test! {
fn a_service_in_the_applications_poll_loop_serves_and_never_stalls() {
    outside_loop(ringlink_ringbuf::DEFAULT_SPIN);
}
}

ringlink_tests::transport_test! {
fn a_service_in_the_applications_poll_loop_without_spinning() {
    outside_loop(Duration::ZERO);
}
}

ringlink_tests::transport_test! {
/// Round trips one at a time against a service in an application's poll
/// loop, which arms and sleeps after every request: each one tests the
/// wake-up handshake (flag, fence, look again) on both sides. A lost
/// wake-up is a stall, found here once in about ten million while a
/// sleeper's fence relied on a global membarrier (`docs/RING.md`, "Both
/// fences are full"): 20,000 in CI, 30 million with
/// `RINGLINK_SOAK_SCALE=1`.
fn a_service_that_sleeps_after_every_request_sleeps_through_none() {
    let addr = unique_addr("outside-sleepy");
    let mut opts = ringlink_tests::transport::service_options();
    opts.spin = Duration::ZERO;
    let service = PollLoop::start(&addr, opts, Echo);
    let mut c = connect(&addr, 0);
    let mut buf = [0u8; 8];
    for n in 0..ringlink_tests::scale::count(20_000, 30_000_000) {
        let m = c
            .send_recv(1, &n.to_le_bytes(), &mut buf, STALL)
            .unwrap_or_else(|e| panic!("round trip {n}: {e}"));
        assert_eq!(buf[..m.len], n.to_le_bytes(), "round trip {n}");
    }
    drop(c);
    service.finish();
}
}

#[test]
/// A connection that never sends its request is closed at its handshake
/// deadline though nothing else happens in the service: the deadline
/// makes the service's fd readable.
fn a_silent_connection_is_closed_at_its_deadline_from_the_applications_poll_loop() {
    let addr = unique_addr("outside-deadline");
    let opts = ringlink_tests::transport::service_options().handshake_timeout(deadlines::HANDSHAKE);
    let service = PollLoop::start(&addr, opts, Dispatch::new());
    deadlines::assert_silent_connections_closed(&addr);
    service.finish();
}

ringlink_tests::transport_test! {
/// A client waiting for a slot (`queue_when_full`) is refused by the
/// server at its handshake deadline, with `TooManyClients`, rather than
/// left to time out on its own.
fn a_queued_client_is_refused_at_its_deadline_from_the_applications_poll_loop() {
    let addr = unique_addr("outside-queue-late");
    let opts = ringlink_tests::transport::service_options()
        .max_clients(1)
        .queue_when_full(true)
        .handshake_timeout(deadlines::HANDSHAKE);
    let service = PollLoop::start(&addr, opts, Dispatch::new());
    deadlines::assert_queued_client_refused(&addr);
    service.finish();
}
}

#[test]
/// A socket adopted before the application's loop first waits on the
/// service's fd, whose client never sends its request: closed at its
/// handshake deadline, though no turn of the service ran in between.
fn an_adopted_silent_socket_is_closed_at_its_deadline_from_the_applications_poll_loop() {
    use std::io::Read;
    let opts = ringlink_tests::transport::service_options().handshake_timeout(deadlines::HANDSHAKE);
    let mut s = Service::unbound(PROTOCOL, opts, Dispatch::new()).expect("service");
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let start = std::time::Instant::now();
    s.adopt(ours).expect("adopt");
    let service = PollLoop::drive(s);
    theirs
        .set_read_timeout(Some(deadlines::LONG_ENOUGH))
        .expect("read timeout");
    let closed = match (&theirs).read(&mut [0u8; 64]) {
        Ok(0) => Some(start.elapsed()),
        Ok(n) => panic!("the server sent {n} bytes to a client that said nothing"),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
        Err(e) => panic!("read: {e}"),
    };
    deadlines::assert_kept("adopted socket", closed);
    service.finish();
}
