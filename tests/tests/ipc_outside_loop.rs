//! A service driven from the application's own event loop (libqb's
//! `qb_ipcs_poll_handlers_set`, the way Pacemaker and Corosync run their
//! IPC servers): the application polls the service's fd (`AsFd`) with
//! `poll(2)` in a loop of its own, and calls `dispatch` as the
//! documentation says. Clients must be served under sustained load,
//! after idle gaps, and with requests pipelined, over both transports,
//! with and without the service's spinning.

use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ringlink_ipcs::{Connection, Handler, Request, Service};
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

/// Runs the service on a thread of its own, in a `poll(2)` loop over its
/// fd with no timeout (a stall is a hang, not a delay), calling
/// `dispatch` without waiting when the fd is readable, until it is shut
/// down.
fn outside_loop(spin: Duration) {
    let addr = unique_addr("outside");
    let mut opts = ringlink_tests::transport::service_options();
    opts.spin = spin;
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = {
        let (addr, stop) = (addr.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut s = Service::bind(addr, PROTOCOL, opts, Echo).expect("bind");
            ready_tx.send(s.control_handle()).expect("ready");
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
    let handle = ready_rx.recv().expect("the service is listening");
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
    stop.store(true, Ordering::Relaxed);
    handle.shutdown(); // makes the fd readable
    drop((c, d));
    server.join().expect("the service thread");
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
