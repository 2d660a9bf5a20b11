//! The server's control surface: rate limiting and flow control (and
//! what it costs the server), fairness under a flooding client,
//! statistics, `stop_listening` / `resume_listening`, `max_clients`
//! (against a real `test_server` process); the `Dispatch` table, the
//! trace and error hooks, timers and foreign fds, and `Service::unbound`
//! with `adopt` / `Client::connect_stream` (a `Service` run in a thread
//! of the test, and a `test_server` process handed a socketpair end).
//!
//! `a_client_connecting_while_off_is_flow_controlled_at_once` guards a
//! race fixed in `ringlink-ipcs`: the flow-control level used to be
//! written into a new connection's request ring only when the
//! connection was created, after the client could already send; it is
//! now in the ring before the client gets the ring's fd.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use ringlink_common::fdpass::PeerFds;
use ringlink_common::handshake::{ClientEvent, ClientHandshake};
use ringlink_common::wire::{ConnectRequest, Status, Transport};
use ringlink_ipcc::{Client, ConnectOptions, Error, Message, ServiceAddr};
use ringlink_ipcs::{
    Connection, Dispatch, Handler, Interest, Request, Service, ServiceOptions, TraceStage,
    ERROR_UNKNOWN_ID,
};
use ringlink_tests::attack::RawClient;
use ringlink_tests::ipc::{self, id, Kv};
use ringlink_tests::payload;
use ringlink_tests::procfs::{self, Proc};
use ringlink_tests::procs::{client_options, connect, unique_addr, ServerProc};

const SERVER: &str = env!("CARGO_BIN_EXE_test_server");

/// Deadline of a call that should complete: only catches hangs.
const CALL: Option<Duration> = Some(Duration::from_secs(60));
const HANG: Duration = Duration::from_secs(60);

/// Sends a command the server answers with `ok`.
fn ok(server: &mut ServerProc, cmd: &str) {
    let a = server.command(cmd);
    if a != "ok" {
        server.fail(&format!("`{cmd}` answered `{a}`"));
    }
}

/// `Connection::stats` of connection `id` on the server, once `ready`
/// holds of them (or after [`HANG`], to fail on them): the client may see
/// a response before the server's sending thread has counted it, and may
/// send before the server has created its connection.
fn cstats_when(server: &mut ServerProc, id: u64, ready: impl Fn(&Kv) -> bool) -> Kv {
    let deadline = Instant::now() + HANG;
    loop {
        let l = server.command(&format!("cstats {id}"));
        let kv = Kv::parse(l.strip_prefix("cstats ").unwrap_or_default());
        if (kv.0.get("found").map(String::as_str) == Some("1") && ready(&kv))
            || Instant::now() > deadline
        {
            return cstats(server, id, false);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `Connection::stats` of connection `id` on the server.
fn cstats(server: &mut ServerProc, id: u64, clear: bool) -> Kv {
    let cmd = format!("cstats {id}{}", if clear { " clear" } else { "" });
    let l = server.command(&cmd);
    let Some(rest) = l.strip_prefix("cstats ") else {
        server.fail(&format!("bad cstats line `{l}`"));
    };
    let kv = Kv::parse(rest);
    assert_eq!(kv.u("found"), 1, "connection {id} not live: {l}");
    kv
}

/// Polls `cond` every 5 ms until it holds; panics after `HANG`.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + HANG;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until the server applied `rate` (every connection listed shows
/// the flow-control state `fc`).
fn wait_flow_control(server: &mut ServerProc, ids: &[u64], fc: u64) {
    let deadline = Instant::now() + HANG;
    for &id in ids {
        // Not live yet (a handshake the server has not finished) counts
        // as not there yet.
        while {
            let l = server.command(&format!("cstats {id}"));
            let kv = Kv::parse(l.strip_prefix("cstats ").unwrap_or(""));
            kv.0.get("found").map(String::as_str) != Some("1") || kv.u("flow_control") != fc
        } {
            assert!(Instant::now() < deadline, "flow control never became {fc}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn opts_fc(fc_enable_max: u32) -> ConnectOptions {
    let mut o = client_options(0);
    o.fc_enable_max = fc_enable_max;
    o
}

/// Receives the response to `seq`, an echo of `payload`.
fn expect_echo(c: &mut Client, seq: u64, payload: &[u8]) {
    let mut buf = vec![0u8; c.max_message()];
    let m = c
        .recv(&mut buf, CALL)
        .unwrap_or_else(|e| panic!("response to {seq}: {e}"));
    assert_eq!(
        (m.id, m.seq, m.error, m.len),
        (id::ECHO, seq, 0, payload.len()),
        "response out of order or wrong"
    );
    assert!(buf[..m.len] == *payload, "response {seq} differs");
}

fn nothing_waiting(c: &mut Client) -> bool {
    let mut buf = vec![0u8; c.max_message()];
    matches!(
        c.recv(&mut buf, Some(Duration::from_millis(200))),
        Err(Error::TimedOut | Error::WouldBlock)
    )
}

fn record(seq: u64) -> Vec<u8> {
    let mut p = vec![0u8; payload::record_len(7, seq, 1500).max(1)];
    payload::fill(7, seq, &mut p);
    p
}

ringlink_tests::transport_test! {
fn rate_off_flow_controls_clients_and_loses_nothing() {
    let mut server = ServerProc::spawn(SERVER, &unique_addr("rateoff"), &[]);
    let addr = server.addr().clone();
    let mut polite = Client::connect(&addr, &opts_fc(1)).expect("connect fc=1");
    let mut greedy = Client::connect(&addr, &opts_fc(0)).expect("connect fc=0");
    let mut blocked = Client::connect(&addr, &opts_fc(1)).expect("connect blocked");
    let ids = [polite.id(), greedy.id(), blocked.id()];
    // Works under Normal.
    let s = polite.send(id::ECHO, b"before").expect("send before");
    expect_echo(&mut polite, s, b"before");

    ok(&mut server, "rate off");
    wait_flow_control(&mut server, &ids, 1);

    // fc_enable_max = 1: flow-controlled at once.
    assert!(
        matches!(polite.send(id::ECHO, b"x"), Err(Error::WouldBlock)),
        "a client with fc_enable_max=1 could send while the rate limit is Off"
    );

    // A client blocked in send_timeout(None) for the whole Off period.
    let done = Arc::new(AtomicBool::new(false));
    let waiter = {
        let done = done.clone();
        std::thread::spawn(move || {
            let r = blocked.send_timeout(id::ECHO, b"blocked", None);
            done.store(true, Ordering::SeqCst);
            let seq = r.expect("blocked send_timeout");
            expect_echo(&mut blocked, seq, b"blocked");
            blocked
        })
    };

    // fc_enable_max = 0: sends until the ring is full; nothing answered.
    let mut sent = Vec::new();
    loop {
        let p = record(sent.len() as u64);
        match greedy.send(id::ECHO, &p) {
            Ok(seq) => sent.push((seq, p)),
            Err(Error::WouldBlock) => break,
            Err(e) => panic!("greedy send {}: {e}", sent.len()),
        }
        assert!(sent.len() < 1_000_000, "the request ring never filled");
    }
    assert!(
        !sent.is_empty(),
        "the fc_enable_max=0 client could not send"
    );
    assert!(
        nothing_waiting(&mut greedy),
        "a request was answered while the rate limit was Off"
    );
    let st = cstats_when(&mut server, greedy.id(), |_| true);
    eprintln!(
        "rate off: fc_enable_max=0 client sent {} requests before WouldBlock",
        sent.len()
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !done.load(Ordering::SeqCst),
        "send_timeout(None) returned while the rate limit was Off"
    );
    assert_eq!(st.u("requests"), 0, "server read requests while Off: {st}");

    ok(&mut server, "rate normal");
    // Every request answered, in order, none lost.
    for (seq, p) in &sent {
        expect_echo(&mut greedy, *seq, p);
    }
    assert!(nothing_waiting(&mut greedy), "extra response");
    let _blocked = waiter.join().expect("blocked sender thread");
    let s = polite.send(id::ECHO, b"after").expect("send after Normal");
    expect_echo(&mut polite, s, b"after");
    let st = cstats(&mut server, greedy.id(), false);
    assert_eq!(st.u("requests"), sent.len() as u64, "{st}");
    assert_eq!(st.u("flow_control_changes"), 2, "{st}");
    let (fin, _) = server.shutdown();
    assert_eq!(fin.u("violations"), 0, "{fin}");
}
}

ringlink_tests::transport_test! {
/// Documented: the flow-control level is published to every client; a
/// client with `fc_enable_max = 1` gets `WouldBlock` while it is 1. A
/// client that connects while the rate limit is Off must be flow
/// controlled from its first send.
fn a_client_connecting_while_off_is_flow_controlled_at_once() {
    let mut server = ServerProc::spawn(SERVER, &unique_addr("offlate"), &[]);
    let addr = server.addr().clone();
    let first = Client::connect(&addr, &opts_fc(1)).expect("connect");
    ok(&mut server, "rate off");
    wait_flow_control(&mut server, &[first.id()], 1);
    let mut refused = 0;
    let mut sent = Vec::new();
    for i in 0..20u64 {
        let mut late = Client::connect(&addr, &opts_fc(1)).expect("connect while Off");
        match late.send(id::ECHO, &i.to_le_bytes()) {
            Err(Error::WouldBlock) => refused += 1,
            Ok(seq) => {
                // Once the server has created the connection, the level
                // is there: the diagnosis is the window before.
                wait_flow_control(&mut server, &[late.id()], 1);
                assert!(
                    matches!(late.send(id::ECHO, b"again"), Err(Error::WouldBlock)),
                    "flow control missing even after the connection was created"
                );
                sent.push((late, seq, i));
            }
            Err(e) => panic!("send: {e}"),
        }
    }
    eprintln!(
        "clients connecting while Off: {refused} of 20 flow controlled at once, {} could send",
        sent.len()
    );
    // Nothing is lost either way.
    ok(&mut server, "rate normal");
    for (mut c, seq, i) in sent.drain(..) {
        expect_echo(&mut c, seq, &i.to_le_bytes());
    }
    assert_eq!(
        refused, 20,
        "a client that connected while the rate limit was Off could send: \
         the level must be in its request ring before the client can map it"
    );
    server.shutdown();
}
}

ringlink_tests::transport_test! {
fn rate_off_costs_the_server_no_cpu() {
    let mut server = ServerProc::spawn(SERVER, &unique_addr("offcpu"), &[]);
    let addr = server.addr().clone();
    let spinner = Client::connect(&addr, &opts_fc(0)).expect("connect spinner");
    let mut sleeper = Client::connect(&addr, &opts_fc(1)).expect("connect sleeper");
    let fc_spinner = Client::connect(&addr, &opts_fc(1)).expect("connect fc spinner");
    let ids = [spinner.id(), sleeper.id(), fc_spinner.id()];
    ok(&mut server, "rate off");
    wait_flow_control(&mut server, &ids, 1);

    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicU64::new(0));
    let spin = |mut c: Client, stop: Arc<AtomicBool>, attempts: Arc<AtomicU64>| {
        std::thread::spawn(move || {
            let p = [5u8; 512];
            let mut seqs = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match c.send(id::ECHO, &p) {
                    Ok(s) => seqs.push(s),
                    Err(Error::WouldBlock) => {
                        attempts.fetch_add(1, Ordering::Relaxed);
                        std::thread::yield_now();
                    }
                    Err(e) => panic!("spinning send: {e}"),
                }
            }
            (c, seqs)
        })
    };
    let t1 = spin(spinner, stop.clone(), attempts.clone());
    let t2 = spin(fc_spinner, stop.clone(), attempts.clone());
    let t3 = std::thread::spawn(move || {
        let s = sleeper
            .send_timeout(id::ECHO, b"zzz", None)
            .expect("blocked send");
        (sleeper, vec![s])
    });
    // Let the spinner fill its ring.
    std::thread::sleep(Duration::from_millis(300));
    let pid = Proc::Pid(server.pid());
    let before = procfs::process_cpu_ticks(pid).expect("server stat");
    std::thread::sleep(Duration::from_secs(1));
    let after = procfs::process_cpu_ticks(pid).expect("server stat");
    let ticks = after - before;
    let tried = attempts.load(Ordering::Relaxed);
    eprintln!(
        "rate off: server used {ticks} clock ticks in 1 s while clients made {tried} refused sends"
    );
    stop.store(true, Ordering::Relaxed);
    assert!(tried > 0, "the clients never hit flow control");
    assert!(
        ticks < 10,
        "the server used {ticks} ticks of CPU in one second while Off"
    );

    ok(&mut server, "rate normal");
    for t in [t1, t2, t3] {
        let (mut c, seqs) = t.join().expect("client thread");
        let mut buf = vec![0u8; c.max_message()];
        for s in seqs {
            let m = c.recv(&mut buf, CALL).expect("response after Normal");
            assert_eq!(m.seq, s, "responses out of order");
        }
    }
    server.shutdown();
}
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn polite_round(c: &mut Client, n: usize) -> Vec<Duration> {
    let mut buf = vec![0u8; c.max_message()];
    (0..n)
        .map(|i| {
            let p = (i as u64).to_le_bytes();
            let t = Instant::now();
            let m = c
                .send_recv(id::ECHO, &p, &mut buf, CALL)
                .unwrap_or_else(|e| panic!("polite request {i}: {e}"));
            let d = t.elapsed();
            assert_eq!((m.error, m.len), (0, 8));
            assert_eq!(buf[..8], p);
            d
        })
        .collect()
}

ringlink_tests::transport_test! {
fn a_flooding_client_does_not_starve_a_polite_one_at_normal() {
    fairness("normal");
}
}

ringlink_tests::transport_test! {
fn a_flooding_client_does_not_starve_a_polite_one_at_fast() {
    fairness("fast");
}
}

ringlink_tests::transport_test! {
fn a_flooding_client_does_not_starve_a_polite_one_at_slow() {
    fairness("slow");
}
}

/// One client keeps its request ring full while another does request /
/// response at `rate`: the polite one completes everything and the flooder
/// is served meanwhile.
fn fairness(rate: &str) {
    const N: usize = 2000;
    let mut server = ServerProc::spawn(SERVER, &unique_addr("fair"), &[]);
    ok(&mut server, &format!("rate {rate}"));
    let addr = server.addr().clone();
    let mut polite = connect(&addr, 0);
    let unloaded = median(&mut polite_round(&mut polite, N));

    let mut flood = Client::connect(&addr, &opts_fc(0)).expect("connect flooder");
    let stop = Arc::new(AtomicBool::new(false));
    let flooded = Arc::new(AtomicU64::new(0));
    let t = {
        let (stop, flooded) = (stop.clone(), flooded.clone());
        std::thread::spawn(move || {
            let p = vec![9u8; 4096];
            let mut buf = vec![0u8; flood.max_message()];
            let mut outstanding = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Fill the request ring...
                loop {
                    match flood.send(id::ECHO, &p) {
                        Ok(_) => outstanding += 1,
                        Err(Error::WouldBlock) => break,
                        Err(e) => panic!("flood send: {e}"),
                    }
                }
                // ...and take what was answered, without waiting.
                while let Ok(m) = flood.recv(&mut buf, Some(Duration::ZERO)) {
                    assert_eq!(m.len, p.len());
                    outstanding -= 1;
                    flooded.fetch_add(1, Ordering::Relaxed);
                }
            }
            while outstanding > 0 {
                flood.recv(&mut buf, CALL).expect("flood drain");
                outstanding -= 1;
            }
        })
    };
    wait_for("the flood to start", || {
        flooded.load(Ordering::Relaxed) > 100
    });
    let before = flooded.load(Ordering::Relaxed);
    let mut lat = polite_round(&mut polite, N);
    // A client arriving during the flood is accepted and served: a loop
    // that always has work still looks at its listener.
    let arrival = Instant::now();
    let mut late = connect(&addr, 0);
    let seq = late.send(id::ECHO, b"late").expect("late send");
    expect_echo(&mut late, seq, b"late");
    let late_served = arrival.elapsed();
    // The flooder shares a CPU with us: give it the time to collect what
    // the server answered while we ran (a starved flooder gets nothing).
    wait_for("the flooder to be served", || {
        flooded.load(Ordering::Relaxed) > before
    });
    let during = flooded.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    t.join().expect("flooder");
    let loaded = median(&mut lat);
    let p99 = lat[lat.len() * 99 / 100];
    eprintln!(
        "fairness at {rate}: polite median latency unloaded {unloaded:?}, loaded {loaded:?} \
         (p99 {p99:?}); flooder got {during} responses meanwhile; a client arriving \
         during the flood was served in {late_served:?}"
    );
    assert!(during > 0, "the flooder was not served meanwhile");
    let (fin, _) = server.shutdown();
    assert_eq!(fin.u("violations"), 0, "{fin}");
}

ringlink_tests::transport_test! {
fn connection_statistics_are_exact_and_clear() {
    let mut server = ServerProc::spawn(SERVER, &unique_addr("cstats"), &[]);
    let addr = server.addr().clone();
    let mut c = connect(&addr, 0);
    let sizes = [0usize, 1, 100, 4096, 65536];
    let events = [3usize, 0, 777];
    let mut buf = vec![0u8; c.max_message()];
    for &n in &sizes {
        let p = vec![1u8; n];
        let m = c.send_recv(id::ECHO, &p, &mut buf, CALL).expect("echo");
        assert_eq!(m.len, n);
    }
    for &n in &events {
        let p = vec![2u8; n];
        c.send(id::EVENT_ONLY, &p).expect("event-only");
        let m = c.event_recv(&mut buf, CALL).expect("event");
        assert_eq!((m.id, m.len), (id::EVENT_ONLY, n));
    }
    let req_bytes: usize = sizes.iter().sum::<usize>() + events.iter().sum::<usize>();
    let sent_bytes: usize = sizes.iter().sum::<usize>() + events.iter().sum::<usize>();
    let s = cstats_when(&mut server, c.id(), |s| {
        s.u("responses") == sizes.len() as u64 && s.u("events") == events.len() as u64
    });
    eprintln!("connection stats: {s}");
    assert_eq!(s.u("requests"), (sizes.len() + events.len()) as u64, "{s}");
    assert_eq!(s.u("responses"), sizes.len() as u64, "{s}");
    assert_eq!(s.u("events"), events.len() as u64, "{s}");
    assert_eq!(s.u("bytes_received"), req_bytes as u64, "{s}");
    assert_eq!(s.u("bytes_sent"), sent_bytes as u64, "{s}");
    assert_eq!(s.u("client_pid"), u64::from(std::process::id()), "{s}");
    assert_eq!(s.u("flow_control_changes"), 0, "{s}");

    // Two switches: Off, then Normal.
    ok(&mut server, "rate off");
    wait_flow_control(&mut server, &[c.id()], 1);
    ok(&mut server, "rate normal");
    wait_flow_control(&mut server, &[c.id()], 0);
    let s = cstats(&mut server, c.id(), true);
    assert_eq!(s.u("flow_control_changes"), 2, "{s}");
    assert_eq!(s.u("requests"), (sizes.len() + events.len()) as u64, "{s}");

    let z = cstats(&mut server, c.id(), false);
    for k in [
        "requests",
        "responses",
        "events",
        "bytes_received",
        "bytes_sent",
        "send_retries",
        "recv_retries",
        "flow_control_changes",
    ] {
        assert_eq!(z.u(k), 0, "{k} not cleared: {z}");
    }
    // Counting goes on after a clear.
    c.send_recv(id::ECHO, b"abc", &mut buf, CALL).expect("echo");
    let s = cstats_when(&mut server, c.id(), |s| s.u("responses") == 1);
    assert_eq!(
        (s.u("requests"), s.u("responses"), s.u("bytes_received")),
        (1, 1, 3),
        "{s}"
    );

    let ss = server.sstats(false);
    assert_eq!((ss.u("active"), ss.u("closed")), (1, 0), "{ss}");
    drop(c);
    wait_for("the connection to close", || {
        server.sstats(false).u("closed") == 1
    });
    let ss = server.sstats(true);
    assert_eq!((ss.u("active"), ss.u("closed")), (0, 1), "{ss}");
    let ss = server.sstats(false);
    assert_eq!(ss.u("closed"), 0, "service counters not cleared: {ss}");
    server.shutdown();
}
}

/// Sends raw request bytes on a fresh socket; returns the answer's
/// status, read by the client's own handshake machine
/// (`ringlink_common::handshake`), `None` if none came or it does not
/// decode.
fn raw_handshake(addr: &ServiceAddr, request: &[u8]) -> Option<Status> {
    let mut s = UnixStream::connect_addr(&addr.socket_addr().expect("addr")).expect("connect");
    s.set_read_timeout(Some(HANG)).expect("timeout");
    s.write_all(request).expect("write request");
    let any = ConnectRequest {
        version: ringlink_common::wire::PROTOCOL_VERSION,
        transport: Transport::Shm,
        max_message: 0,
        protocol: ipc::PROTOCOL.into(),
        fds: ringlink_common::wire::FdTerms::NONE,
    };
    let (mut machine, _) = ClientHandshake::new(&any);
    loop {
        let n = std::io::Read::read(&mut s, machine.buffer()).ok()?;
        match machine.received(n, PeerFds::default()) {
            Ok(ClientEvent::NeedMore) => {}
            Ok(ClientEvent::Accepted { .. }) => return Some(Status::Ok),
            Err(Error::Rejected(status)) => return Some(status),
            Err(_) => return None,
        }
    }
}

ringlink_tests::transport_test! {
fn service_statistics_count_rejections_by_reason() {
    // SAFETY: getuid(2) cannot fail.
    let uid = unsafe { libc::getuid() };
    let mut server = ServerProc::spawn(
        SERVER,
        &unique_addr("sstats"),
        &["--reject-uid", &uid.to_string()],
    );
    let addr = server.addr().clone();
    // Wrong protocol (checked before the accept handler).
    let mut o = client_options(0);
    o.protocol = "no-such-protocol".into();
    match Client::connect(&addr, &o) {
        Err(Error::Rejected(Status::UnknownProtocol)) => {}
        other => panic!("wrong protocol: {:?}", other.map(|c| c.id())),
    }
    // Our uid is rejected.
    for _ in 0..2 {
        match Client::connect(&addr, &client_options(0)) {
            Err(Error::Rejected(Status::PermissionDenied)) => {}
            other => panic!("rejected uid: {:?}", other.map(|c| c.id())),
        }
    }
    // Garbage request bytes on a raw socket.
    let answer = raw_handshake(&addr, &[0xa5u8; ringlink_common::wire::REQUEST_LEN]);
    assert_eq!(answer, Some(Status::BadRequest), "garbage request");
    // A well-formed request for the wrong transport.
    let req = ConnectRequest {
        version: ringlink_common::wire::PROTOCOL_VERSION,
        transport: match ringlink_tests::transport::current() {
            Transport::Shm => Transport::Socket,
            _ => Transport::Shm,
        },
        max_message: 0,
        protocol: ipc::PROTOCOL.into(),
        fds: ringlink_common::wire::FdTerms::NONE,
    };
    let answer = raw_handshake(&addr, &req.encode());
    eprintln!("wrong transport answered {answer:?}");
    // Connects and closes without a request.
    drop(UnixStream::connect_addr(&addr.socket_addr().expect("addr")).expect("connect"));
    // Connects, sends half a request, closes.
    {
        let mut s = UnixStream::connect_addr(&addr.socket_addr().expect("addr")).expect("connect");
        s.write_all(&[0u8; 10]).expect("write");
    }
    let deadline = Instant::now() + HANG;
    let ss = loop {
        let ss = server.sstats(false);
        if ss.u("abandoned") >= 2 || Instant::now() > deadline {
            break ss;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    eprintln!("service stats: {ss}");
    assert_eq!(ss.u("unknown_protocol"), 1, "{ss}");
    assert_eq!(ss.u("permission_denied"), 2, "{ss}");
    assert_eq!(ss.u("bad_request"), 1, "{ss}");
    assert_eq!(ss.u("transport_mismatch"), 1, "{ss}");
    assert_eq!(ss.u("abandoned"), 2, "{ss}");
    assert_eq!(ss.u("too_many_clients"), 0, "{ss}");
    assert_eq!((ss.u("active"), ss.u("closed")), (0, 0), "{ss}");
    let st = server.stats();
    assert_eq!((st.u("accepts"), st.u("rejects")), (2, 2), "{st}");
    server.shutdown();
}
}

ringlink_tests::transport_test! {
fn stop_listening_keeps_connections_and_holds_new_clients() {
    let mut server = ServerProc::spawn(SERVER, &unique_addr("listen"), &[]);
    let addr = server.addr().clone();
    let mut old = connect(&addr, 0);
    ok(&mut server, "stop-listening");
    let mut buf = vec![0u8; old.max_message()];
    for i in 0..10u64 {
        let m = old
            .send_recv(id::ECHO, &i.to_le_bytes(), &mut buf, CALL)
            .expect("echo while not listening");
        assert_eq!(m.len, 8);
    }
    let mut o = client_options(0);
    o.wait_for_server = false;
    o.timeout = Duration::from_millis(300);
    match Client::connect(&addr, &o) {
        Err(Error::TimedOut) => {}
        Err(e) => panic!("connect while not listening: {e} (expected TimedOut)"),
        Ok(c) => panic!("connected (id {}) while not listening", c.id()),
    }
    // A patient client waits...
    let done = Arc::new(AtomicBool::new(false));
    let t = {
        let (addr, done) = (addr.clone(), done.clone());
        // Made here: the test's transport is this thread's.
        let o = client_options(0);
        std::thread::spawn(move || {
            let r = Client::connect(&addr, &o);
            done.store(true, Ordering::SeqCst);
            r
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !done.load(Ordering::SeqCst),
        "a client connected while not listening"
    );
    assert_eq!(server.stats().u("created"), 1);
    // ...and gets in after resume.
    ok(&mut server, "resume-listening");
    let mut c = t.join().expect("thread").expect("connect after resume");
    let m = c
        .send_recv(id::ECHO, b"hi", &mut buf, CALL)
        .expect("echo after resume");
    assert_eq!(m.len, 2);
    let mut later = connect(&addr, 0);
    later
        .send_recv(id::ECHO, b"hi", &mut buf, CALL)
        .expect("echo of a later client");
    let (fin, _) = server.shutdown();
    assert_eq!(fin.u("created"), 3, "{fin}");
    assert_eq!(fin.u("violations"), 0, "{fin}");
}
}

ringlink_tests::transport_test! {
fn max_clients_rejects_the_third_until_one_leaves() {
    let mut server = ServerProc::spawn(SERVER, &unique_addr("maxcl"), &["--max-clients", "2"]);
    let addr = server.addr().clone();
    let a = connect(&addr, 0);
    let mut b = connect(&addr, 0);
    match Client::connect(&addr, &client_options(0)) {
        Err(Error::Rejected(Status::TooManyClients)) => {}
        Err(e) => panic!("third client: {e} (expected Rejected(TooManyClients))"),
        Ok(c) => panic!("third client accepted (id {})", c.id()),
    }
    assert_eq!(server.sstats(false).u("too_many_clients"), 1);
    drop(a);
    server.wait_stats("the first client to leave", HANG, |s| s.u("live") == 1);
    let mut c = connect(&addr, 0);
    let mut buf = vec![0u8; c.max_message()];
    c.send_recv(id::ECHO, b"x", &mut buf, CALL)
        .expect("new client");
    b.send_recv(id::ECHO, b"y", &mut buf, CALL)
        .expect("old client");
    server.shutdown();
}
}

// ---- In-process services --------------------------------------------

type Cmd<H> = Box<dyn FnOnce(&mut Service<H>) + Send>;

/// A `Service` run in a thread of the test (turns of at most 2 ms),
/// which runs closures on its loop thread between turns. Stopped and
/// joined on drop.
struct InProc<H: Handler> {
    tx: Option<mpsc::Sender<Cmd<H>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<H: Handler> InProc<H> {
    fn start(make: impl FnOnce() -> Service<H> + Send + 'static) -> InProc<H> {
        let (tx, rx) = mpsc::channel::<Cmd<H>>();
        // The loop thread runs over this test's transport.
        let transport = ringlink_tests::transport::current();
        let thread = std::thread::spawn(move || {
            let _transport = ringlink_tests::transport::enter(transport);
            let mut s = make();
            loop {
                match rx.try_recv() {
                    Ok(cmd) => cmd(&mut s),
                    Err(mpsc::TryRecvError::Empty) => {
                        let _ = s
                            .dispatch(Some(Duration::from_millis(2)))
                            .expect("dispatch");
                    }
                    Err(mpsc::TryRecvError::Disconnected) => break,
                }
            }
        });
        InProc {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    /// Runs `f` on the loop thread and returns its result.
    fn exec<R: Send + 'static>(&self, f: impl FnOnce(&mut Service<H>) -> R + Send + 'static) -> R {
        let (rtx, rrx) = mpsc::channel();
        self.tx
            .as_ref()
            .expect("running")
            .send(Box::new(move |s| {
                let _ = rtx.send(f(s));
            }))
            .expect("loop thread gone");
        rrx.recv_timeout(HANG).expect("loop thread did not answer")
    }
}

impl<H: Handler> Drop for InProc<H> {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let r = t.join();
            if r.is_err() && !std::thread::panicking() {
                panic!("service thread panicked");
            }
        }
    }
}

fn small_opts() -> ServiceOptions {
    let mut o = ringlink_tests::transport::service_options();
    o.min_message = 4096;
    o.max_message = 4096;
    o
}

fn table() -> Dispatch {
    Dispatch::new()
        .on(10, |conn: &Connection, r: &Request<'_>| {
            let mut p = r.payload().to_vec();
            p.reverse();
            let _ = conn.respond(r.seq(), r.id(), &p);
        })
        .on(11, |conn: &Connection, r: &Request<'_>| {
            let _ = conn.respond_error(r.seq(), r.id(), 7, &[]);
        })
        .on(12, |_: &Connection, _: &Request<'_>| {}) // never answered
        .on(14, |conn: &Connection, r: &Request<'_>| {
            // Answered later, from another thread, with error 5.
            let (conn, seq) = (conn.clone(), r.seq());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(10));
                let _ = conn.respond_vectored(seq, 14, 5, &[]);
            });
        })
}

ringlink_tests::transport_test! {
fn dispatch_routes_known_ids_and_answers_unknown_ones() {
    let addr = unique_addr("dispatch");
    let a2 = addr.clone();
    let svc = InProc::start(move || {
        let t = table();
        assert!(t.handles(10) && t.handles(11) && !t.handles(13));
        Service::bind(a2, ipc::PROTOCOL, small_opts(), t).expect("bind")
    });
    let mut c = connect(&addr, 0);
    let mut buf = vec![0u8; c.max_message()];
    let m = c.send_recv(10, b"abc", &mut buf, CALL).expect("route 10");
    assert_eq!((m.id, m.error, &buf[..m.len]), (10, 0, &b"cba"[..]));
    let m = c.send_recv(11, b"", &mut buf, CALL).expect("route 11");
    assert_eq!((m.id, m.error, m.len), (11, 7, 0));
    for unknown in [13, 0, -1, i32::MAX] {
        let m: Message = c
            .send_recv(unknown, b"payload", &mut buf, CALL)
            .expect("unknown id answered");
        assert_eq!(
            (m.id, m.error, m.len),
            (unknown, ERROR_UNKNOWN_ID, 0),
            "unknown id {unknown}"
        );
    }
    assert_eq!(ERROR_UNKNOWN_ID, -38);
    drop(c);
    drop(svc);
}
}

type TraceLog = Arc<Mutex<Vec<(i32, u64, u64, String)>>>;
/// The `Responded` calls: id, seq, connection, error.
type RespondedLog = Arc<Mutex<Vec<(i32, u64, u64, i32)>>>;
type FaultLog = Arc<Mutex<Vec<(Option<u64>, String)>>>;

/// An unbound service with the trace and error hooks logging.
fn hooked(traces: &TraceLog, faults: &FaultLog) -> InProc<Dispatch> {
    hooked_with(traces, &RespondedLog::default(), faults)
}

/// [`hooked`], with the `Responded` calls logged apart.
fn hooked_with(traces: &TraceLog, responded: &RespondedLog, faults: &FaultLog) -> InProc<Dispatch> {
    let (tr, re, fa) = (traces.clone(), responded.clone(), faults.clone());
    InProc::start(move || {
        let mut s = Service::unbound(ipc::PROTOCOL, small_opts(), table()).expect("unbound");
        s.set_trace_hook(move |t| {
            let stage = match t.stage {
                TraceStage::Start => "start".to_owned(),
                TraceStage::End {
                    responded,
                    disconnected,
                    ..
                } => format!("end responded={responded} disconnected={disconnected}"),
                TraceStage::Responded { error } => {
                    re.lock()
                        .unwrap()
                        .push((t.id, t.seq, t.connection.id(), error));
                    return;
                }
            };
            tr.lock()
                .unwrap()
                .push((t.id, t.seq, t.connection.id(), stage));
        });
        s.set_error_hook(move |f| {
            fa.lock()
                .unwrap()
                .push((f.connection.map(|c| c.id()), f.to_string()));
        });
        s
    })
}

/// Connects a client to `svc` over a socketpair (`adopt` +
/// `connect_stream`); returns it and a second handle on its socket.
fn pair_client<H: Handler>(svc: &InProc<H>) -> (Client, UnixStream) {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let spare = ours.try_clone().expect("dup");
    svc.exec(move |s| s.adopt(theirs)).expect("adopt");
    let c = Client::connect_stream(ours, &client_options(0)).expect("connect_stream");
    (c, spare)
}

ringlink_tests::transport_test! {
fn trace_hook_brackets_each_request() {
    let traces: TraceLog = Arc::default();
    let faults: FaultLog = Arc::default();
    let svc = hooked(&traces, &faults);
    let (mut c, _spare) = pair_client(&svc);
    let mut buf = vec![0u8; c.max_message()];
    let mut expected = Vec::new();
    for i in 0..5u64 {
        let m = c
            .send_recv(10, &i.to_le_bytes(), &mut buf, CALL)
            .expect("echo");
        expected.push((10, m.seq, "end responded=true disconnected=false"));
    }
    let s12 = c.send(12, b"silent").expect("send 12");
    expected.push((12, s12, "end responded=false disconnected=false"));
    let m = c.send_recv(99, b"", &mut buf, CALL).expect("unknown");
    assert_eq!(m.error, ERROR_UNKNOWN_ID);
    expected.push((99, m.seq, "end responded=true disconnected=false"));
    // The End call follows the handler's response: wait for the last.
    wait_for("the last trace call", || {
        traces.lock().unwrap().len() >= expected.len() * 2
    });
    std::thread::sleep(Duration::from_millis(20));
    let log = traces.lock().unwrap().clone();
    assert_eq!(log.len(), expected.len() * 2, "trace calls: {log:?}");
    for (k, (id, seq, end)) in expected.iter().enumerate() {
        let start = &log[2 * k];
        let stop = &log[2 * k + 1];
        assert_eq!(
            (start.0, start.1, start.2, start.3.as_str()),
            (*id, *seq, c.id(), "start"),
            "trace {k}: {log:?}"
        );
        assert_eq!(
            (stop.0, stop.1, stop.2, stop.3.as_str()),
            (*id, *seq, c.id(), *end),
            "trace {k}: {log:?}"
        );
    }
    assert!(faults.lock().unwrap().is_empty());
    drop(c);
    drop(svc);
}
}

ringlink_tests::transport_test! {
/// The trace hook's `Responded` fires when the response goes, with its
/// error code, also when another thread answers after the handler
/// returned; never for a request left unanswered.
fn trace_hook_sees_each_response_go() {
    let traces: TraceLog = Arc::default();
    let responded: RespondedLog = Arc::default();
    let faults: FaultLog = Arc::default();
    let svc = hooked_with(&traces, &responded, &faults);
    let (mut c, _spare) = pair_client(&svc);
    let mut buf = vec![0u8; c.max_message()];
    let a = c.send_recv(10, b"x", &mut buf, CALL).expect("echo");
    let silent = c.send(12, b"").expect("send 12");
    let later = c.send_recv(14, b"", &mut buf, CALL).expect("answered later");
    assert_eq!(later.error, 5);
    // The hook runs just after the response went: the client may have it
    // first.
    wait_for("the second Responded call", || responded.lock().unwrap().len() >= 2);
    let log = responded.lock().unwrap().clone();
    assert_eq!(
        log,
        vec![(10, a.seq, c.id(), 0), (14, later.seq, c.id(), 5)],
        "nothing for request {silent}"
    );
    // The handler of 14 returned before its answer went.
    let ends = traces.lock().unwrap().clone();
    assert!(
        ends.iter()
            .any(|e| e.0 == 14 && e.3 == "end responded=false disconnected=false"),
        "{ends:?}"
    );
    drop(c);
    drop(svc);
}
}

ringlink_tests::transport_test! {
/// Over the socket transport, any byte a client writes on its stream
/// socket after the handshake is a violation; over shared memory, a
/// wake-up.
fn error_hook_sees_data_on_the_socket_after_the_handshake() {
    let traces: TraceLog = Arc::default();
    let faults: FaultLog = Arc::default();
    let svc = hooked(&traces, &faults);
    let (mut c, mut spare) = pair_client(&svc);
    let (mut good, _good_spare) = pair_client(&svc);
    let mut buf = vec![0u8; 4096];
    c.send_recv(10, b"ok", &mut buf, CALL).expect("echo");
    if ringlink_tests::transport::current() == Transport::Shm {
        // Over shared memory a byte from the client is a wake-up
        // (protocol version 2, PROTOCOL.md §4), whatever its value and
        // however many: no violation, the connection goes on.
        spare.write_all(b"!").expect("write on the socket");
        // A flood, as much as the socket takes (it is non-blocking).
        for _ in 0..64 {
            let _ = spare.write(&[0xA5; 4096]);
        }
        c.send_recv(10, b"again", &mut buf, CALL)
            .expect("a client that wrote wake-ups");
        good.send_recv(10, b"fine", &mut buf, CALL)
            .expect("other client");
        assert!(faults.lock().unwrap().is_empty(), "{:?}", faults.lock().unwrap());
        drop(svc);
        return;
    }
    spare.write_all(b"!").expect("write on the socket");
    wait_for("the error hook", || !faults.lock().unwrap().is_empty());
    let f = faults.lock().unwrap().clone();
    assert_eq!(
        f,
        vec![(
            Some(c.id()),
            "client sent data on the socket after the handshake".to_owned()
        )]
    );
    // That client is disconnected; the other is not.
    match c.send_recv(10, b"again", &mut buf, CALL) {
        Err(Error::Disconnected) => {}
        other => panic!("offending client after the violation: {other:?}"),
    }
    good.send_recv(10, b"fine", &mut buf, CALL)
        .expect("other client");
    // A client that just leaves is no violation.
    drop(good);
    let n = svc.exec(|s| s.stats(false).closed_connections);
    assert!(n >= 1);
    wait_for("both connections closed", || {
        svc.exec(|s| s.stats(false).active_connections) == 0
    });
    assert_eq!(
        faults.lock().unwrap().len(),
        1,
        "{:?}",
        faults.lock().unwrap()
    );
    drop(svc);
}
}

ringlink_tests::transport_test! {
fn timers_fire_until_removed_and_foreign_fds_fire_and_come_back() {
    let svc =
        InProc::start(|| Service::unbound(ipc::PROTOCOL, small_opts(), table()).expect("unbound"));
    let ticks = Arc::new(AtomicU64::new(0));
    let t2 = ticks.clone();
    let timer = svc
        .exec(move |s| {
            s.add_timer(Duration::from_millis(5), move || {
                t2.fetch_add(1, Ordering::SeqCst);
            })
        })
        .expect("add_timer");
    wait_for("three timer ticks", || ticks.load(Ordering::SeqCst) >= 3);
    assert!(svc.exec(move |s| s.remove_timer(timer)), "remove_timer");
    let after = ticks.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        ticks.load(Ordering::SeqCst),
        after,
        "the timer fired after remove_timer"
    );
    assert!(
        !svc.exec(move |s| s.remove_timer(timer)),
        "a stale timer id removed something"
    );

    let (mut ours, theirs) = UnixStream::pair().expect("socketpair");
    let got = Arc::new(Mutex::new(Vec::new()));
    let g2 = got.clone();
    let fd_id = svc
        .exec(move |s| {
            s.add_fd(OwnedFd::from(theirs), Interest::Readable, move |fd, r| {
                let mut b = [0u8; 64];
                let f = fd.try_clone_to_owned().expect("dup");
                let mut sock = UnixStream::from(f);
                sock.set_nonblocking(true).unwrap();
                if let Ok(n) = std::io::Read::read(&mut sock, &mut b) {
                    g2.lock().unwrap().push((b[..n].to_vec(), r.readable));
                }
            })
        })
        .expect("add_fd");
    std::thread::sleep(Duration::from_millis(50));
    assert!(got.lock().unwrap().is_empty(), "fired with nothing to read");
    ours.write_all(b"ping").expect("write");
    wait_for("the fd callback", || !got.lock().unwrap().is_empty());
    assert_eq!(got.lock().unwrap()[0], (b"ping".to_vec(), true));
    let back = svc.exec(move |s| s.remove_fd(fd_id)).expect("remove_fd");
    ours.write_all(b"pong").expect("write");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(got.lock().unwrap().len(), 1, "fired after remove_fd");
    // The fd given back is the same socket, still open.
    let mut back = UnixStream::from(back);
    let mut b = [0u8; 4];
    back.set_read_timeout(Some(HANG)).unwrap();
    std::io::Read::read_exact(&mut back, &mut b).expect("read from the returned fd");
    assert_eq!(&b, b"pong");
    assert!(
        svc.exec(move |s| s.remove_fd(fd_id)).is_none(),
        "stale fd id"
    );
    drop(svc);
}
}

ringlink_tests::transport_test! {
/// A watched fd whose other end goes away is reported once with `hangup`
/// and leaves the loop, instead of being reported ready forever (it once
/// ran its callback a million times a second); `remove_fd` still gives it
/// back.
fn a_hung_up_foreign_fd_leaves_the_loop() {
    let svc =
        InProc::start(|| Service::unbound(ipc::PROTOCOL, small_opts(), table()).expect("unbound"));
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let calls = Arc::new(AtomicU64::new(0));
    let hangups = Arc::new(AtomicU64::new(0));
    let (c2, h2) = (calls.clone(), hangups.clone());
    let fd_id = svc
        .exec(move |s| {
            s.add_fd(OwnedFd::from(theirs), Interest::Readable, move |_, r| {
                c2.fetch_add(1, Ordering::SeqCst);
                if r.hangup {
                    h2.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .expect("add_fd");
    drop(ours);
    wait_for("the hang-up", || hangups.load(Ordering::SeqCst) >= 1);
    std::thread::sleep(Duration::from_millis(200));
    let n = calls.load(Ordering::SeqCst);
    assert!(n <= 2, "callback ran {n} times after the hang-up");
    assert!(
        svc.exec(move |s| s.remove_fd(fd_id)).is_some(),
        "remove_fd after hang-up"
    );
    drop(svc);
}
}

ringlink_tests::transport_test! {
fn unbound_service_adopts_a_socketpair_client() {
    let svc =
        InProc::start(|| Service::unbound(ipc::PROTOCOL, small_opts(), table()).expect("unbound"));
    assert!(svc.exec(|s| s.addr().is_none()));
    let (mut c, _spare) = pair_client(&svc);
    let mut buf = vec![0u8; c.max_message()];
    for i in 0..100u32 {
        let p = i.to_le_bytes();
        let m = c.send_recv(10, &p, &mut buf, CALL).expect("request");
        let mut r = p;
        r.reverse();
        assert_eq!((m.error, &buf[..m.len]), (0, &r[..]));
    }
    let cr = c.server_credentials();
    assert_eq!(cr.pid, std::process::id() as i32);
    let live = svc.exec(|s| {
        s.connections()
            .map(|c| c.credentials().pid)
            .collect::<Vec<_>>()
    });
    assert_eq!(live, vec![std::process::id() as i32]);
    drop(c);
    wait_for("the connection to close", || {
        svc.exec(|s| s.stats(false).closed_connections) == 1
    });
    drop(svc);
}
}

ringlink_tests::transport_test! {
fn a_server_process_adopts_a_socketpair_end_passed_to_it() {
    use std::os::fd::AsFd;
    let mut server = ServerProc::spawn(SERVER, &unique_addr("adopt"), &[]);
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let a = server.command("adopt");
    if a != "send-fd" {
        server.fail(&format!("adopt answered `{a}`"));
    }
    if let Err(e) = server.helper().peer_mut().send_fds(&[theirs.as_fd()]) {
        server.fail(&format!("send_fds: {e}"));
    }
    drop(theirs);
    // The server runs the handshake while we run ours.
    let o = client_options(0);
    let t = std::thread::spawn(move || Client::connect_stream(ours, &o));
    let a = server.helper().line(ringlink_tests::procs::LINE_DEADLINE);
    assert_eq!(a, "ok", "adopt");
    let mut c = t.join().expect("thread").expect("connect_stream");
    // SO_PEERCRED of a socketpair names the process that created it (us),
    // on both ends: `server_credentials` is ours here, not the server's.
    assert_eq!(c.server_credentials().pid, std::process::id() as i32);
    let mut buf = vec![0u8; c.max_message()];
    for i in 0..50u64 {
        let p = record(i);
        let s = c.send(id::ECHO, &p).expect("send");
        expect_echo(&mut c, s, &p);
    }
    let m = c
        .send_recv(id::WHOAMI, b"", &mut buf, CALL)
        .expect("whoami");
    let who = Kv::parse(&String::from_utf8_lossy(&buf[..m.len]));
    assert_eq!(who.u("pid"), u64::from(std::process::id()), "{who}");
    drop(c);
    server.wait_stats("the adopted client to leave", HANG, |s| {
        s.u("destroyed") == 1
    });
    let (fin, _) = server.shutdown();
    assert_eq!((fin.u("created"), fin.u("violations")), (1, 0), "{fin}");
}
}

/// A client that runs the handshake by hand (`docs/PROTOCOL.md`,
/// `ringlink_tests::attack`) over a socket the service adopted, and holds
/// its channels directly, to break the protocol in ways the `Client` API
/// cannot.
fn raw_client(sock: UnixStream, transport: Transport) -> RawClient {
    RawClient::connect_stream(sock, transport)
}

/// Adopts one end of a new socketpair into `svc`; returns the other.
fn adopted<H: Handler>(svc: &InProc<H>) -> UnixStream {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    svc.exec(move |s| s.adopt(theirs)).expect("adopt");
    ours
}

// Shared memory only: the rings are what is corrupted. The socket
// transport's counterpart is `error_hook_sees_broken_socket_framing`.
#[test]
fn error_hook_sees_corrupt_request_rings() {
    use ringlink_common::wire::MsgHeader;
    use ringlink_tests::raw::RawRing;
    let traces: TraceLog = Arc::default();
    let faults: FaultLog = Arc::default();
    let svc = hooked(&traces, &faults);
    let (mut good, _spare) = pair_client(&svc);

    // A record whose header announces 999 payload bytes; it has 5.
    let mut liar = raw_client(adopted(&svc), Transport::Shm);
    let mut grant = liar
        .shm()
        .request
        .try_reserve(ringlink_common::wire::MSG_HEADER_LEN + 5)
        .expect("reserve");
    MsgHeader {
        id: 10,
        size: 999,
        error: 0,
        flags: 0,
        seq: 1,
    }
    .encode_into(&mut grant);
    grant.commit();
    wait_for("the error hook (header)", || {
        !faults.lock().unwrap().is_empty()
    });

    // A record word of no known kind where the next request goes.
    let mut vandal = raw_client(adopted(&svc), Transport::Shm);
    let raw = RawRing::map(&vandal.shm().rings[0]).expect("map");
    raw.set_record_word(raw.head(), 1 << 30, 0);
    vandal.kick();
    wait_for("the error hook (ring)", || {
        faults.lock().unwrap().len() >= 2
    });

    let f = faults.lock().unwrap().clone();
    assert_eq!(f.len(), 2, "{f:?}");
    assert_eq!(f[0].0, Some(liar.id), "{f:?}");
    assert!(f[0].1.starts_with("bad request header"), "{f:?}");
    assert_eq!(f[1].0, Some(vandal.id), "{f:?}");
    assert!(
        f[1].1.starts_with("client corrupted its request ring"),
        "{f:?}"
    );
    // Neither bad request reached the handler.
    assert!(
        traces
            .lock()
            .unwrap()
            .iter()
            .all(|t| t.2 != liar.id && t.2 != vandal.id),
        "a corrupt request was dispatched"
    );
    // Both are gone, the good client is served.
    wait_for("the offenders to be closed", || {
        svc.exec(|s| s.stats(false).closed_connections) == 2
    });
    let mut buf = vec![0u8; good.max_message()];
    good.send_recv(10, b"still here", &mut buf, CALL)
        .expect("good client");
    assert_eq!(svc.exec(|s| s.stats(false).active_connections), 1);
    drop(good);
    drop(svc);
}

#[test]
fn error_hook_sees_broken_socket_framing() {
    use ringlink_common::wire::{MsgHeader, MSG_HEADER_LEN};
    let _socket = ringlink_tests::transport::enter(Transport::Socket);
    let traces: TraceLog = Arc::default();
    let faults: FaultLog = Arc::default();
    let svc = hooked(&traces, &faults);
    let (mut good, _spare) = pair_client(&svc);

    // A datagram shorter than a message header.
    let short = raw_client(adopted(&svc), Transport::Socket);
    let short_id = short.id;
    short.send_datagram(b"abc");
    wait_for("the error hook (short)", || {
        !faults.lock().unwrap().is_empty()
    });
    // A header announcing 999 bytes, then a continuation of 2000.
    let long = raw_client(adopted(&svc), Transport::Socket);
    let long_id = long.id;
    let mut first = vec![0u8; MSG_HEADER_LEN + 5];
    MsgHeader {
        id: 10,
        size: 999,
        error: 0,
        flags: 0,
        seq: 1,
    }
    .encode_into(&mut first);
    long.send_datagram(&first);
    long.send_datagram(&[7u8; 2000]);
    wait_for("the error hook (overrun)", || {
        faults.lock().unwrap().len() >= 2
    });

    let f = faults.lock().unwrap().clone();
    assert_eq!(f.len(), 2, "{f:?}");
    assert_eq!(f[0].0, Some(short_id), "{f:?}");
    assert!(
        f[0].1.starts_with("client broke the socket framing"),
        "{f:?}"
    );
    assert_eq!(f[1].0, Some(long_id), "{f:?}");
    assert!(f[1].1.contains("overruns"), "{f:?}");
    assert!(
        traces
            .lock()
            .unwrap()
            .iter()
            .all(|t| t.2 != short_id && t.2 != long_id),
        "a broken request was dispatched"
    );
    wait_for("the offenders to be closed", || {
        svc.exec(|s| s.stats(false).closed_connections) == 2
    });
    let mut buf = vec![0u8; good.max_message()];
    good.send_recv(10, b"still here", &mut buf, CALL)
        .expect("good client");
    drop(good);
    drop(svc);
}

ringlink_tests::transport_test! {
fn connection_statistics_count_retries_and_queued_events() {
    let mut server = ServerProc::spawn(SERVER, &unique_addr("retries"), &[]);
    let addr = server.addr().clone();
    let mut c = connect(&addr, 0);
    let mut buf = vec![0u8; c.max_message()];
    // The server sends 1000-byte events until the ring is full (one
    // refused send), then answers with how many it sent.
    let m = c
        .send_recv(id::FILL, &1000u64.to_le_bytes(), &mut buf, CALL)
        .expect("fill");
    let n = u64::from_le_bytes(buf[..8].try_into().unwrap());
    assert_eq!(m.len, 8);
    let s = cstats_when(&mut server, c.id(), |s| s.u("responses") == 1);
    eprintln!("after FILL of {n} events: {s}");
    assert!(n > 0);
    assert_eq!(s.u("events"), n, "{s}");
    assert_eq!(s.u("send_retries"), 1, "{s}");
    assert_eq!(s.u("bytes_sent"), n * 1000 + 8, "{s}");
    let queued = s.u("event_queue_bytes");
    assert!(
        queued >= n * 1000,
        "event_queue_bytes {queued} < {n} events of 1000 bytes: {s}"
    );
    for i in 0..n {
        let m = c.event_recv(&mut buf, CALL).expect("event");
        assert_eq!((m.id, m.len), (id::FILL_EVENT, 1000), "event {i}");
    }
    let s = cstats(&mut server, c.id(), false);
    assert_eq!(s.u("event_queue_bytes"), 0, "{s}");

    // Requests sent without reading the answers: the server leaves them
    // in the ring when the response ring has no room for a full answer.
    let mut greedy = Client::connect(&addr, &opts_fc(0)).expect("connect");
    let p = vec![3u8; 8192];
    let mut seqs = Vec::new();
    let deadline = Instant::now() + HANG;
    loop {
        match greedy.send(id::ECHO, &p) {
            Ok(s) => seqs.push(s),
            Err(Error::WouldBlock) => {
                let s = cstats_when(&mut server, greedy.id(), |_| true);
                if s.u("recv_retries") > 0 {
                    break;
                }
                assert!(Instant::now() < deadline, "never parked: {s}");
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("send: {e}"),
        }
    }
    let s = cstats(&mut server, greedy.id(), false);
    eprintln!("greedy client after {} requests: {s}", seqs.len());
    assert!(s.u("requests") < seqs.len() as u64, "{s}");
    for seq in seqs {
        expect_echo(&mut greedy, seq, &p);
    }
    server.shutdown();
}
}
