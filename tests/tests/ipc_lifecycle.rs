//! How connections end, with real processes on both sides: a server that
//! shuts down, is SIGKILLed, or disconnects its clients wakes every client
//! call already blocked (in a thread of the test or in a client process)
//! with `Disconnected`; a client SIGKILLed mid-stream gets exactly one
//! `connection_closed` and one `connection_destroyed` and leaves no fd
//! behind in the server; a server thread blocked sending to a client
//! that dies is woken; a busy server still accepts and notices deaths;
//! a waiting client sleeps.
//!
//! Also what the documentation promises around an ending: messages
//! published before a disconnect are delivered, a killed server is seen
//! by calls that do not wait (an application's own event loop), sends
//! from `connection_closed` fail, and a restarted server is found.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use ringlink_ipcc::{Client, Error, Message};
use ringlink_tests::ipc::{id, Defer, Kv, DEFER_HEADER};
use ringlink_tests::peer::describe;
use ringlink_tests::procfs::{self, gettid, Proc};
use ringlink_tests::procs::{
    addr_args, connect, readable, unique_addr, Helper, ServerProc, LINE_DEADLINE,
};

const SERVER: &str = env!("CARGO_BIN_EXE_test_server");
const CLIENT: &str = env!("CARGO_BIN_EXE_test_client");

/// Deadline for anything that should happen promptly: only catches
/// hangs, never asserts speed.
const PROMPT: Duration = Duration::from_secs(60);

/// How the server goes away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// `ControlHandle::shutdown`: the loop closes every connection.
    Shutdown,
    /// SIGKILL: nothing runs in the server.
    Kill,
    /// The server stays, and disconnects every client from a thread of
    /// its own (not the loop's).
    DisconnectAll,
}

/// Which call is blocked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Recv,
    Event,
}

impl Call {
    fn arg(self) -> &'static str {
        match self {
            Call::Recv => "recv",
            Call::Event => "event",
        }
    }
}

/// Waits until thread `tid` of `p` is really blocked in the kernel.
fn wait_asleep(p: Proc, tid: i32) {
    procfs::wait_asleep(p, tid, PROMPT);
}

fn end_server(server: ServerProc, end: End) -> Option<ServerProc> {
    match end {
        End::Shutdown => {
            let (fin, out) = server.shutdown();
            assert_eq!(
                (fin.u("closed"), fin.u("destroyed"), fin.u("violations")),
                (1, 1, 0),
                "{out}"
            );
            None
        }
        End::Kill => {
            let fin = server.kill();
            assert_eq!(describe(fin.status), "signal 9");
            None
        }
        End::DisconnectAll => {
            let mut server = server;
            assert_eq!(server.command("disconnect-all"), "ok 1");
            Some(server)
        }
    }
}

/// A request the server holds (it waits for a batch of 1000), so that a
/// `recv` waits for a response that is due.
fn held_request(c: &mut Client) {
    let mut req = [0u8; DEFER_HEADER];
    Defer {
        batch: 1000,
        order_seed: 0,
    }
    .encode_into(&mut req);
    c.send(id::DEFER, &req).expect("send a held request");
}

fn expect_disconnected_after(c: &mut Client) {
    assert!(!c.is_connected(), "is_connected() after Disconnected");
    let mut buf = [0u8; 8];
    for (what, r) in [
        ("send", c.send(id::ECHO, b"x").map(drop)),
        ("recv", c.recv(&mut buf, None).map(drop)),
        ("event_recv", c.event_recv(&mut buf, None).map(drop)),
    ] {
        assert!(
            matches!(r, Err(Error::Disconnected)),
            "{what} after Disconnected: {r:?}"
        );
    }
}

type Outcome = (Result<Message, Error>, Client);

/// A client of the test blocked in `call` in one of its threads.
fn blocked_in_a_thread(end: End, call: Call) {
    let shm_before = procfs::shm_leftovers();
    let server = ServerProc::spawn(SERVER, &unique_addr("blocked-thread"), &[]);
    let mut c = connect(server.addr(), 0);
    if call == Call::Recv {
        held_request(&mut c);
    }
    let (tx, rx) = mpsc::channel::<Result<Outcome, i32>>();
    std::thread::spawn(move || {
        let _ = tx.send(Err(gettid()));
        let mut buf = vec![0u8; c.max_message()];
        let r = match call {
            Call::Recv => c.recv(&mut buf, None),
            Call::Event => c.event_recv(&mut buf, None),
        };
        let _ = tx.send(Ok((r, c)));
    });
    let Ok(Err(tid)) = rx.recv_timeout(PROMPT) else {
        panic!("the waiting thread did not start");
    };
    wait_asleep(Proc::Current, tid);
    let server = end_server(server, end);
    let (r, mut c) = match rx.recv_timeout(PROMPT) {
        Ok(Ok(outcome)) => outcome,
        _ => panic!("{call:?} blocked in a thread did not return after {end:?}"),
    };
    assert!(
        matches!(r, Err(Error::Disconnected)),
        "{call:?} blocked in a thread, after {end:?}: {r:?}"
    );
    expect_disconnected_after(&mut c);
    if let Some(mut server) = server {
        let s = server.wait_stats("the connection's end", PROMPT, |s| s.u("destroyed") == 1);
        assert_eq!((s.u("closed"), s.u("violations")), (1, 0), "{s}");
    }
    assert_eq!(procfs::shm_leftovers(), shm_before, "left in /dev/shm");
}

/// A client process blocked in `call`.
fn blocked_in_a_process(end: End, call: Call) {
    let addr = unique_addr("blocked-proc");
    // The client starts first: it waits for the server.
    let mut args = vec!["block".to_owned()];
    args.extend(addr_args(&addr));
    args.push(call.arg().into());
    let mut client = Helper::spawn(CLIENT, &args);
    let server = ServerProc::spawn(SERVER, &addr, &[]);
    client.expect("connected", LINE_DEADLINE);
    let tid: i32 = Kv::parse(&client.expect("blocking", LINE_DEADLINE)).num("tid") as i32;
    wait_asleep(Proc::Pid(client.pid()), tid);
    let server = end_server(server, end);
    assert_eq!(
        client.expect("result", PROMPT),
        "Disconnected connected=false after=Disconnected",
        "{call:?} blocked in a client process, after {end:?}"
    );
    client.wait(PROMPT).assert_success();
    if let Some(mut server) = server {
        let s = server.wait_stats("the connection's end", PROMPT, |s| s.u("destroyed") == 1);
        assert_eq!((s.u("closed"), s.u("violations")), (1, 0), "{s}");
    }
}

ringlink_tests::transport_test! {
fn server_shutdown_wakes_blocked_calls() {
    for call in [Call::Recv, Call::Event] {
        blocked_in_a_thread(End::Shutdown, call);
        blocked_in_a_process(End::Shutdown, call);
    }
}
}

ringlink_tests::transport_test! {
fn server_killed_wakes_blocked_calls() {
    for call in [Call::Recv, Call::Event] {
        blocked_in_a_thread(End::Kill, call);
        blocked_in_a_process(End::Kill, call);
    }
}
}

ringlink_tests::transport_test! {
fn server_disconnecting_from_another_thread_wakes_blocked_calls() {
    for call in [Call::Recv, Call::Event] {
        blocked_in_a_thread(End::DisconnectAll, call);
        blocked_in_a_process(End::DisconnectAll, call);
    }
}
}

ringlink_tests::transport_test! {
fn a_killed_server_is_seen_by_calls_that_do_not_wait() {
    // An application in its own event loop polls the client's fd, which
    // turns readable when the server goes away, then calls with a zero
    // timeout (or the non-waiting `send`). A killed server closes no
    // ring; only the socket tells. Each call is tried on a fresh
    // connection, as the first call after the death.
    let mut outcomes = Vec::new();
    for call in ["recv", "event_recv", "send"] {
        let server = ServerProc::spawn(SERVER, &unique_addr("killed-nowait"), &[]);
        let mut c = connect(server.addr(), 0);
        let mut buf = [0u8; 64];
        c.send_recv(id::ECHO, b"hi", &mut buf, Some(PROMPT))
            .expect("echo");
        assert!(c.prepare_poll());
        server.kill();
        assert!(readable(&c, 60_000), "the fd did not turn readable");
        let r = match call {
            "recv" => c.recv(&mut buf, Some(Duration::ZERO)).map(drop),
            "event_recv" => c.event_recv(&mut buf, Some(Duration::ZERO)).map(drop),
            _ => {
                // Sends into the dead server's ring succeed until it is
                // full; what then?
                let mut r = Ok(());
                for _ in 0..100_000 {
                    r = c.send(id::ECHO, &[0u8; 1000]).map(drop);
                    if r.is_err() {
                        break;
                    }
                }
                r
            }
        };
        outcomes.push(format!(
            "{call}: {}",
            r.map_or_else(|e| ringlink_tests::ipc::error_kind(&e), |()| "Ok".into())
        ));
        assert!(!c.is_connected());
    }
    assert_eq!(
        outcomes,
        [
            "recv: Disconnected",
            "event_recv: Disconnected",
            "send: Disconnected"
        ],
        "the first non-waiting call after the server was killed (its fd readable)"
    );
}
}

ringlink_tests::transport_test! {
fn a_restarted_server_takes_new_connections() {
    let addr = unique_addr("restart");
    let first = ServerProc::spawn(SERVER, &addr, &[]);
    let mut old = connect(&addr, 0);
    let first_pid = first.pid();
    first.kill();
    // The abstract name died with the process; a new server takes it,
    // and a client waiting for a server finds it.
    let second = ServerProc::spawn(SERVER, &addr, &[]);
    let mut c = connect(&addr, 0);
    assert_eq!(c.server_credentials().pid, second.pid() as i32);
    assert_ne!(second.pid(), first_pid);
    let mut buf = [0u8; 8];
    let m = c
        .send_recv(id::ECHO, b"again", &mut buf, Some(PROMPT))
        .expect("echo");
    assert_eq!(&buf[..m.len], b"again");
    match old.recv(&mut buf, None) {
        Err(Error::Disconnected) => {}
        other => panic!("the first server's client: {other:?}"),
    }
}
}

ringlink_tests::transport_test! {
/// A shutdown asked while the loop spins on the rings after some work
/// ends the loop at once. (The wake-up was once read by the spin's look
/// at epoll and forgotten: the loop spun out its budget, then slept
/// in epoll for good.)
fn a_shutdown_during_the_spin_ends_the_loop() {
    // A spin far longer than the shutdown's deadline: only a loop that
    // hears the wake-up mid-spin exits in time.
    let spin = ["--spin-us", "120000000"];
    let mut server = ServerProc::spawn(SERVER, &unique_addr("spin-stop"), &spin);
    let mut c = connect(server.addr(), 0);
    let mut buf = [0u8; 8];
    c.send_recv(id::ECHO, b"work", &mut buf, Some(PROMPT)).expect("echo");
    // From the echo on, the loop spins for 120 s (over shared memory):
    // the shutdown below comes during the spin. The stats command is
    // answered by another thread and does not touch the loop.
    let before = server.stats();
    assert_eq!(before.u("live"), 1, "{before}");
    let (fin, _) = server.shutdown();
    assert_eq!(fin.u("live"), 0, "{fin}");
    assert!(matches!(c.recv(&mut buf, Some(PROMPT)), Err(Error::Disconnected)));
}
}

/// Waits until thread `tid` of `p` is stopped (state `T`).
fn wait_stopped(p: Proc, tid: i32) {
    let deadline = Instant::now() + PROMPT;
    while procfs::thread_state(p, tid).expect("thread state") != 'T' {
        assert!(
            Instant::now() < deadline,
            "thread {tid} of {p:?} never stopped"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

ringlink_tests::transport_test! {
fn messages_published_before_a_disconnect_are_delivered() {
    // The server answers a request the client is waiting for, sends an
    // event, then disconnects the client: everything was published on a
    // live connection, and the rings keep published records after a
    // close. The client must get the response and the event, then
    // `Disconnected`. First with the client awake as it happens; then
    // with the client stopped (SIGSTOP) while it happens, so that when it
    // runs again the response, the event and the hang-up are all
    // waiting at once.
    for stopped in [true, false] {
        let mut server = ServerProc::spawn(SERVER, &unique_addr("farewell"), &[]);
        let mut args = vec!["farewell".to_owned()];
        args.extend(addr_args(server.addr()));
        let mut client = Helper::spawn(CLIENT, &args);
        client.expect("connected", LINE_DEADLINE);
        let tid = Kv::parse(&client.expect("blocking", LINE_DEADLINE)).num("tid") as i32;
        let p = Proc::Pid(client.pid());
        wait_asleep(p, tid);
        if stopped {
            client.signal(libc::SIGSTOP);
            wait_stopped(p, tid);
        }
        assert_eq!(server.command("farewell-all"), "ok 1");
        server.wait_stats("the connection's end", PROMPT, |s| s.u("destroyed") == 1);
        if stopped {
            client.signal(libc::SIGCONT);
        }
        let result = client.expect("result", PROMPT);
        assert_eq!(
            result,
            "resp=Ok event=Ok after=Disconnected",
            "a client {} while the server answered, sent an event and disconnected it",
            if stopped { "stopped" } else { "waiting" }
        );
        client.wait(PROMPT).assert_success();
    }
}
}

/// Connects, echoes once, disconnects, and waits for the server to
/// destroy the connection: the first connection's one-time allocations
/// happen before a baseline is taken.
fn warm_up(server: &mut ServerProc) {
    let before = server.stats().u("destroyed");
    let mut c = connect(server.addr(), 0);
    let mut buf = [0u8; 8];
    c.send_recv(id::ECHO, b"warm", &mut buf, Some(PROMPT))
        .expect("warm-up echo");
    drop(c);
    server.wait_stats("the warm-up connection's end", PROMPT, |s| {
        s.u("destroyed") == before + 1
    });
}

ringlink_tests::transport_test! {
fn client_killed_mid_stream_is_closed_once_and_leaves_nothing() {
    let shm_before = procfs::shm_leftovers();
    let mut server = ServerProc::spawn(SERVER, &unique_addr("client-killed"), &[]);
    warm_up(&mut server);
    let base = server.stats();
    let mut args = vec!["stream".to_owned()];
    args.extend(addr_args(server.addr()));
    for round in 1..=3u64 {
        let mut client = Helper::spawn(CLIENT, &args);
        client.expect("connected", LINE_DEADLINE);
        let m0 = server.stats().u("messages");
        server.wait_stats("traffic from the client", PROMPT, |s| {
            s.u("messages") >= m0 + 2000
        });
        let fin = client.kill();
        assert_eq!(describe(fin.status), "signal 9", "{fin}");
        let s = server.wait_stats("the killed client's end", PROMPT, |s| {
            s.u("destroyed") == base.u("destroyed") + round
        });
        assert_eq!(
            (
                s.u("created"),
                s.u("closed"),
                s.u("live"),
                s.u("violations")
            ),
            (1 + round, 1 + round, 0, 0),
            "{s}\n{}",
            server.command("violations")
        );
        assert_eq!(
            s.u("fds"),
            base.u("fds"),
            "server fds after round {round}: {s}"
        );
        assert_eq!(
            s.u("maps"),
            base.u("maps"),
            "server mappings after round {round}: {s}"
        );
    }
    // Still serving.
    warm_up(&mut server);
    let (fin, out) = server.shutdown();
    assert_eq!((fin.u("closed"), fin.u("destroyed")), (5, 5), "{out}");
    assert_eq!(procfs::shm_leftovers(), shm_before, "left in /dev/shm");
}
}

ringlink_tests::transport_test! {
fn client_killed_wakes_a_server_thread_blocked_sending_to_it() {
    let mut server = ServerProc::spawn(SERVER, &unique_addr("sender-woken"), &[]);
    warm_up(&mut server);
    let base = server.stats();
    let mut args = vec!["burst-hold".to_owned()];
    args.extend(addr_args(server.addr()));
    args.push("100000".into());
    let mut client = Helper::spawn(CLIENT, &args);
    client.expect("connected", LINE_DEADLINE);
    client.expect("requested", LINE_DEADLINE);
    // The burst fills the event ring the client never reads; its thread
    // then waits (up to 60 s) for room.
    server.wait_stats("a full event ring", PROMPT, |s| {
        s.u("event_wouldblock") >= 1
    });
    std::thread::sleep(Duration::from_millis(50));
    client.kill();
    // Well before the sender's own 60 s timeout: it was woken by the
    // close, with `Disconnected`.
    let s = server.wait_stats("the sender's end", Duration::from_secs(30), |s| {
        s.u("burst_disconnected") + s.u("burst_timedout") + s.u("burst_other") == 1
    });
    assert_eq!(s.u("burst_disconnected"), 1, "{s}");
    let s = server.wait_stats("the connection's end", PROMPT, |s| {
        s.u("destroyed") == base.u("destroyed") + 1
    });
    assert_eq!((s.u("violations"), s.u("fds")), (0, base.u("fds")), "{s}");
}
}

/// Requests the busy client keeps in flight.
const BUSY_DEPTH: usize = 256;

/// A client that keeps [`BUSY_DEPTH`] requests in flight without pause
/// (a legitimate pipelining client), in a thread, until told to stop;
/// returns how many it completed.
fn keep_busy(server: &ServerProc, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let mut c = connect(server.addr(), 0);
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let mut done = 0u64;
        for _ in 0..BUSY_DEPTH {
            c.send(id::ECHO, b"busy").expect("send");
        }
        while !stop.load(Ordering::Relaxed) {
            let ok = c.recv(&mut buf, Some(PROMPT)).is_ok()
                && c.send_timeout(id::ECHO, b"busy", Some(PROMPT)).is_ok();
            if !ok {
                return done; // the server was killed by a failing test
            }
            done += 1;
        }
        for _ in 0..BUSY_DEPTH {
            if c.recv(&mut buf, Some(PROMPT)).is_err() {
                break; // the server was killed by a failing test
            }
        }
        done
    })
}

ringlink_tests::transport_test! {
fn a_busy_server_still_accepts_and_notices_deaths() {
    let mut server = ServerProc::spawn(SERVER, &unique_addr("busy"), &[]);
    warm_up(&mut server);
    let stop = Arc::new(AtomicBool::new(false));
    let busy = keep_busy(&server, stop.clone());
    server.wait_stats("the busy client's traffic", PROMPT, |s| {
        s.u("messages") >= 20_000
    });
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // A new client gets in while the other keeps the loop busy.
        let destroyed = server.stats().u("destroyed");
        let mut o = ringlink_tests::procs::client_options(0);
        o.wait_for_server = false;
        o.timeout = Duration::from_secs(20);
        let start = Instant::now();
        let mut c = match Client::connect(server.addr(), &o) {
            Ok(c) => c,
            Err(e) => panic!(
                "connecting to a busy server: {e} after {:?}; server: {}",
                start.elapsed(),
                server.stats()
            ),
        };
        eprintln!("connected to the busy server in {:?}", start.elapsed());
        let mut buf = [0u8; 8];
        c.send_recv(id::ECHO, b"me too", &mut buf, Some(Duration::from_secs(20)))
            .expect("echo on a busy server");
        drop(c);
        // A client that dies while the loop is busy is noticed.
        let mut args = vec!["stream".to_owned()];
        args.extend(addr_args(server.addr()));
        let mut client = Helper::spawn(CLIENT, &args);
        client.expect("connected", LINE_DEADLINE);
        client.kill();
        let killed = Instant::now();
        server.wait_stats(
            "the deaths noticed while busy",
            Duration::from_secs(20),
            |s| s.u("destroyed") == destroyed + 2,
        );
        eprintln!(
            "a death noticed by the busy server in {:?}",
            killed.elapsed()
        );
    }));
    stop.store(true, Ordering::Relaxed);
    let done = busy.join().expect("the busy client");
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
    eprintln!("the busy client completed {done} requests meanwhile");
}
}

ringlink_tests::transport_test! {
fn connection_closed_handler_sees_sends_fail() {
    // The documented contract of `Handler::connection_closed`: "sends on
    // it fail with `Disconnected`". The test server tries a
    // `send_event` there; each way a connection ends is tried in turn.
    let mut server = ServerProc::spawn(
        SERVER,
        &unique_addr("closed-send"),
        &["--probe-closed-send"],
    );
    let mut ok_after = Vec::new();
    let mut check = |server: &mut ServerProc, how: &str, n: u64| {
        let s = server.wait_stats("the connection's end", PROMPT, |s| s.u("destroyed") == n);
        assert_eq!(s.u("violations"), 0, "{}", server.command("violations"));
        ok_after.push(format!("{how}: {}", s.u("closed_send_ok")));
    };
    // The client disconnects (its rings are closed by its side first).
    drop(connect(server.addr(), 0));
    check(&mut server, "client disconnected", 1);
    // The client dies (nobody closes its rings).
    let mut args = vec!["stream".to_owned()];
    args.extend(addr_args(server.addr()));
    let mut client = Helper::spawn(CLIENT, &args);
    client.expect("connected", LINE_DEADLINE);
    client.kill();
    check(&mut server, "client killed", 2);
    // The server disconnects it.
    let mut c = connect(server.addr(), 0);
    let mut buf = [0u8; 8];
    let r = c.send_recv(id::DISCONNECT, b"", &mut buf, Some(PROMPT));
    assert!(matches!(r, Err(Error::Disconnected)), "{r:?}");
    check(&mut server, "server disconnected it", 3);
    // The server shuts down.
    let _c = connect(server.addr(), 0);
    let (fin, _) = server.shutdown();
    ok_after.push(format!("server shut down: {}", fin.u("closed_send_ok")));
    let total = fin.u("closed_send_ok");
    assert_eq!(
        total, 0,
        "send_event from connection_closed succeeded instead of failing with Disconnected \
         (cumulative successes after each way of ending: {ok_after:?})"
    );
}
}

/// CPU time a thread of ours uses while blocked in `event_recv` with
/// `timeout`, over about two seconds of wall time; then the server shuts
/// down and the call must return `Disconnected`.
fn cpu_while_waiting(timeout: Option<Duration>) -> u64 {
    cpu_while_waiting_for_events(timeout, false)
}

/// [`cpu_while_waiting`]; with `unread`, a response waits unread in the
/// client's response channel meanwhile (it must not wake an event wait).
fn cpu_while_waiting_for_events(timeout: Option<Duration>, unread: bool) -> u64 {
    let server = ServerProc::spawn(SERVER, &unique_addr("idle"), &[]);
    let mut c = connect(server.addr(), 0);
    if unread {
        c.send(id::ECHO, b"unread").expect("send");
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(Err(gettid()));
        let mut buf = [0u8; 64];
        let r = c.event_recv(&mut buf, timeout);
        let _ = tx.send(Ok(r.map(drop)));
    });
    let Ok(Err(tid)) = rx.recv_timeout(PROMPT) else {
        panic!("the waiting thread did not start");
    };
    std::thread::sleep(Duration::from_millis(100));
    let t0 = procfs::thread_cpu_ticks(Proc::Current, tid).expect("thread stat");
    std::thread::sleep(Duration::from_secs(2));
    let used = procfs::thread_cpu_ticks(Proc::Current, tid).expect("thread stat") - t0;
    server.shutdown();
    match rx.recv_timeout(PROMPT) {
        Ok(Ok(Err(Error::Disconnected))) => {}
        other => panic!("event_recv({timeout:?}) after the server left: {other:?}"),
    }
    used
}

/// Clock ticks (usually 10 ms) a waiting thread may use in two seconds:
/// a sleeping one uses none; a spinning one, even on a loaded machine,
/// far more.
const IDLE_TICKS: u64 = 20;

ringlink_tests::transport_test! {
fn a_client_waiting_forever_sleeps() {
    for timeout in [None, Some(Duration::from_secs(3600))] {
        let used = cpu_while_waiting(timeout);
        assert!(
            used <= IDLE_TICKS,
            "event_recv({timeout:?}) used {used} ticks of CPU in 2 s of waiting"
        );
    }
}
}

ringlink_tests::transport_test! {
/// An event wait is woken by a call from the server (on the response
/// channel), but not by a response waiting unread there.
fn a_client_waiting_for_events_beside_an_unread_response_sleeps() {
    let used = cpu_while_waiting_for_events(None, true);
    assert!(
        used <= IDLE_TICKS,
        "event_recv(None) beside an unread response used {used} ticks of CPU in 2 s: it spins"
    );
}
}

ringlink_tests::transport_test! {
fn a_client_waiting_with_duration_max_sleeps() {
    let used = cpu_while_waiting(Some(Duration::MAX));
    assert!(
        used <= IDLE_TICKS,
        "event_recv(Some(Duration::MAX)) used {used} ticks of CPU in 2 s of waiting: it spins"
    );
}
}

ringlink_tests::transport_test! {
/// A server whose clients are connected but quiet sleeps: its process uses
/// (almost) no CPU over a second, after traffic that left its loop
/// spinning and every connection hot.
fn an_idle_server_with_idle_clients_sleeps() {
    let server = ServerProc::spawn(SERVER, &unique_addr("idle-server"), &[]);
    let mut clients: Vec<Client> = (0..3).map(|_| connect(server.addr(), 0)).collect();
    let mut buf = vec![0u8; 64 << 10];
    for c in &mut clients {
        for _ in 0..100 {
            c.send_recv(id::ECHO, b"warm", &mut buf, Some(PROMPT))
                .expect("echo");
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    let pid = Proc::Pid(server.pid());
    let before = procfs::process_cpu_ticks(pid).expect("server stat");
    std::thread::sleep(Duration::from_secs(1));
    let used = procfs::process_cpu_ticks(pid).expect("server stat") - before;
    eprintln!("idle server with {} idle clients: {used} ticks in 1 s", clients.len());
    assert!(
        used <= IDLE_TICKS / 2,
        "an idle server used {used} ticks of CPU in 1 s"
    );
    drop(clients);
    server.shutdown();
}
}
