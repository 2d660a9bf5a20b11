//! Connect and stall: 500 clients connect to a live server and then say
//! nothing, or half a request, and keep their sockets open. A good client
//! connects meanwhile, within its own timeout, while every stalled
//! handshake is still held; a bystander is served throughout; once the
//! handshake deadline passes, every stalled slot is reclaimed (counted as
//! abandoned, its socket closed, the server back to its fd count). With
//! `max_handshakes` below the number of stalls, the oldest are dropped to
//! make room and the good client still gets in.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use ringlink_ipcc::Client;
use ringlink_tests::attack::{self, dial, read_to_end, Bystander, HANG};
use ringlink_tests::ipc::id;
use ringlink_tests::procs::{client_options, unique_addr, ServerProc};

const SERVER: &str = env!("CARGO_BIN_EXE_test_server");

/// Stalled handshakes.
const STALLS: usize = 500;

/// The good client's connect timeout: what "not locked out" means.
const GOOD_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens [`STALLS`] connections: every other one sends 40 bytes of a
/// valid request, the rest nothing.
fn stall(server: &ServerProc) -> Vec<UnixStream> {
    let half = attack::request(ringlink_tests::transport::current(), 0);
    (0..STALLS)
        .map(|i| {
            let s = dial(server.addr());
            if i % 2 == 1 {
                (&s).write_all(&half[..40]).expect("half a request");
            }
            s
        })
        .collect()
}

/// Connects a good client with [`GOOD_TIMEOUT`] and gets an echo;
/// returns how long connecting took.
fn good_client(server: &ServerProc) -> Duration {
    let mut o = client_options(0);
    o.wait_for_server = false;
    o.timeout = GOOD_TIMEOUT;
    let t = Instant::now();
    let mut c = Client::connect(server.addr(), &o)
        .unwrap_or_else(|e| panic!("the good client, among {STALLS} stalled handshakes: {e}"));
    let took = t.elapsed();
    let mut buf = [0u8; 8];
    c.send_recv(id::ECHO, b"good", &mut buf, Some(HANG))
        .expect("the good client's echo");
    took
}

ringlink_tests::transport_test! {
fn stalled_handshakes_do_not_lock_out_a_good_client_and_are_reclaimed() {
    // Long enough that the good client connects while every stall is
    // held, however slow the machine; short enough to wait for.
    let deadline = Duration::from_secs(15);
    let mut server = ServerProc::spawn(
        SERVER,
        &unique_addr("stall"),
        &["--handshake-timeout-ms", &deadline.as_millis().to_string()],
    );
    attack::newcomer(server.addr());
    let mut good = Bystander::start(server.addr());
    good.served(10);
    let base = server.wait_stats("the newcomer's end", HANG, |s| s.u("destroyed") == 1);
    let started = Instant::now();
    let stalls = stall(&server);
    let held = server.wait_stats("every stall accepted", HANG, |s| {
        s.u("fds") >= base.u("fds") + STALLS as u64
    });
    good.served(10);
    let took = good_client(&server);
    let ss = server.sstats(false);
    assert_eq!(
        ss.u("abandoned"),
        0,
        "the good client got in only after stalls were dropped: {ss}"
    );
    // Every stall is still held (a socket the server closed reads EOF).
    for s in &stalls {
        s.set_read_timeout(Some(Duration::from_millis(1))).expect("timeout");
        assert!(read_to_end(s).is_err(), "a stall was dropped before its deadline");
        s.set_read_timeout(None).expect("timeout");
    }
    // The stalls' deadline passes: every slot is reclaimed.
    let reclaimed = Instant::now();
    let s = server.wait_stats("the stalled slots reclaimed", HANG, |s| {
        s.u("fds") == base.u("fds") && s.u("destroyed") == 2
    });
    let ss = server.sstats(false);
    assert_eq!(ss.u("abandoned"), STALLS as u64, "{ss}");
    eprintln!(
        "{STALLS} stalled handshakes held ({} server fds, {} before); a good client \
         connected among them in {took:?}; all reclaimed {:?} after they started \
         (deadline {deadline:?}), waited {:?}; server fds back to {}",
        held.u("fds"),
        base.u("fds"),
        started.elapsed(),
        reclaimed.elapsed(),
        s.u("fds")
    );
    for (i, s) in stalls.iter().enumerate() {
        read_to_end(s).unwrap_or_else(|e| panic!("stalled socket {i} still open: {e}"));
    }
    good.served(10);
    let report = good.finish();
    eprintln!("the bystander did {} checked round trips meanwhile", report.requests);
    let (fin, _) = server.shutdown();
    assert_eq!(fin.u("violations"), 0, "{fin}");
}
}

ringlink_tests::transport_test! {
fn more_stalls_than_handshake_slots_evict_the_oldest() {
    let mut server = ServerProc::spawn(
        SERVER,
        &unique_addr("stall-evict"),
        &["--max-handshakes", "64", "--handshake-timeout-ms", "60000"],
    );
    let mut good = Bystander::start(server.addr());
    let stalls = stall(&server);
    // Past 64 in progress, each new one evicts the oldest.
    let evicted = (STALLS - 64) as u64;
    let deadline = Instant::now() + HANG;
    while server.sstats(false).u("abandoned") < evicted {
        assert!(Instant::now() < deadline, "stalls were not evicted");
        std::thread::sleep(Duration::from_millis(5));
    }
    good.served(10);
    let took = good_client(&server);
    // The good client's arrival evicted one more stall.
    let ss = server.sstats(false);
    assert_eq!(ss.u("abandoned"), evicted + 1, "{ss}");
    eprintln!(
        "{STALLS} stalls against 64 handshake slots: {} evicted; a good client connected in {took:?}",
        ss.u("abandoned")
    );
    // The evicted ones were closed; the newest 63 are still held.
    let closed = stalls[..STALLS - 63]
        .iter()
        .filter(|s| {
            s.set_read_timeout(Some(Duration::from_millis(1))).expect("timeout");
            read_to_end(s).is_ok()
        })
        .count();
    assert_eq!(closed, STALLS - 63, "evicted sockets closed");
    for (i, s) in stalls[STALLS - 63..].iter().enumerate() {
        s.set_read_timeout(Some(Duration::from_millis(1))).expect("timeout");
        assert!(read_to_end(s).is_err(), "stall {i} of the newest 63 was dropped");
    }
    drop(stalls);
    good.served(10);
    good.finish();
    server.shutdown();
}
}
