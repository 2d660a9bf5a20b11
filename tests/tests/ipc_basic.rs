//! Requests and responses between a real server process (`test_server`)
//! and clients: every payload size up to the negotiated maximum, the
//! refusal of oversize messages, credentials both ways, the accept
//! handler's rejections, responses completed later and out of order, and
//! a server that disconnects a client from its `message` handler.

use std::time::Duration;

use ringlink_common::wire::Status;
use ringlink_ipcc::{Client, ConnectOptions, Error, Message, ServiceAddr};
use ringlink_tests::ipc::{self, id, Defer, Kv, DEFER_HEADER};
use ringlink_tests::payload;
use ringlink_tests::procfs::{self, Proc};
use ringlink_tests::procs::{
    can_switch_user, client_options, connect, unique_addr, Helper, ServerProc, LINE_DEADLINE,
};
use ringlink_tests::tmp::TempDir;

const SERVER: &str = env!("CARGO_BIN_EXE_test_server");
const CLIENT: &str = env!("CARGO_BIN_EXE_test_client");

/// Deadline of a call that should complete: only catches hangs.
const CALL: Option<Duration> = Some(Duration::from_secs(60));

/// The uid and gid of `nobody`, for the tests that run a helper as
/// another user (when the tests run as root).
const NOBODY: u32 = 65534;

/// Echoes `payload` and checks the answer.
fn echo(c: &mut Client, payload: &[u8], timeout: Option<Duration>) -> Message {
    let mut buf = vec![0u8; c.max_message()];
    let m = c
        .send_recv(id::ECHO, payload, &mut buf, timeout)
        .unwrap_or_else(|e| panic!("echo of {} bytes: {e}", payload.len()));
    assert_eq!((m.id, m.error, m.len), (id::ECHO, 0, payload.len()));
    assert!(buf[..m.len] == *payload, "echo of {} bytes differs", m.len);
    m
}

fn whoami(c: &mut Client) -> Kv {
    let mut buf = vec![0u8; c.max_message()];
    let m = c
        .send_recv(id::WHOAMI, b"", &mut buf, CALL)
        .expect("whoami");
    Kv::parse(&String::from_utf8_lossy(&buf[..m.len]))
}

ringlink_tests::transport_test! {
fn every_payload_size_round_trips() {
    let mut server =
        ServerProc::spawn(SERVER, &unique_addr("sizes"), &["--max-message", "1048576"]);
    let addr = server.addr().clone();
    let mut sent = 0;
    // (asked for, negotiated): the server's minimum (64 KiB) and maximum
    // (1 MiB) bound the client's wish.
    for (asked, max) in [
        (0u32, 64usize << 10),
        (1000, 64 << 10),
        (1 << 20, 1 << 20),
        (4 << 20, 1 << 20),
    ] {
        let mut c = connect(&addr, asked);
        assert_eq!(c.max_message(), max, "asked for {asked}");
        assert_eq!(c.buffer_size(), max);
        assert_eq!(whoami(&mut c).u("max"), max as u64, "server's view");
        sent += 1;
        if asked == 1000 || asked == 4 << 20 {
            continue;
        }
        let mut req = vec![0u8; max];
        let mut size = 32;
        let mut seq = 1; // the whoami was 1
        while size <= max {
            for timeout in [None, CALL] {
                seq += 1;
                payload::fill(size as u64, seq, &mut req[..size]);
                let m = echo(&mut c, &req[..size], timeout);
                assert_eq!(m.seq, seq, "sequence numbers count from 1, one per request");
                sent += 1;
            }
            size *= 2;
        }
        assert_eq!(size / 2, max, "the last size tried is the maximum");
    }
    let s = server.stats();
    assert_eq!(s.u("messages"), sent, "{s}");
    let (fin, _) = server.shutdown();
    assert_eq!(fin.u("violations"), 0, "{fin}");
    assert_eq!(fin.u("respond_failed"), 0, "{fin}");
}
}

ringlink_tests::transport_test! {
fn oversize_messages_are_refused_and_nothing_is_sent() {
    let mut server = ServerProc::spawn(SERVER, &unique_addr("oversize"), &[]);
    let mut c = connect(server.addr(), 0);
    let max = c.max_message();
    let first = echo(&mut c, b"before", CALL);
    let before = server.stats().u("messages");
    let big = vec![7u8; max + 1];
    let mut buf = vec![0u8; max];
    let too_large = |r: Result<u64, Error>| match r {
        Err(Error::MessageTooLarge { len, max: m }) => assert_eq!((len, m), (max + 1, max)),
        other => panic!("oversize send: {other:?}"),
    };
    too_large(c.send(id::ECHO, &big));
    too_large(c.send_timeout(id::ECHO, &big, None));
    too_large(c.send_timeout(id::ECHO, &big, CALL));
    let halves = [
        std::io::IoSlice::new(&big[..max / 2]),
        std::io::IoSlice::new(&big[max / 2..]),
    ];
    too_large(c.send_vectored(id::ECHO, &halves, CALL));
    match c.send_recv(id::ECHO, &big, &mut buf, CALL) {
        Err(Error::MessageTooLarge { len, .. }) => assert_eq!(len, max + 1),
        other => panic!("oversize send_recv: {other:?}"),
    }
    // Nothing went out: the next request is the next sequence number,
    // answered normally, and the server saw exactly one more request.
    assert!(c.is_connected());
    let m = echo(&mut c, &big[..max], CALL);
    assert_eq!(m.seq, first.seq + 1);
    match c.recv(&mut buf, Some(Duration::ZERO)) {
        Err(Error::TimedOut) => {}
        other => panic!("a stray response: {other:?}"),
    }
    assert_eq!(server.stats().u("messages"), before + 1);
    drop(c);
    let (fin, _) = server.shutdown();
    assert_eq!(fin.u("violations"), 0, "{fin}");
}
}

ringlink_tests::transport_test! {
fn a_small_buffer_keeps_the_message() {
    let server = ServerProc::spawn(SERVER, &unique_addr("small-buf"), &[]);
    let mut c = connect(server.addr(), 0);
    let seq = c.send(id::ECHO, &[9u8; 100]).expect("send");
    let mut small = [0u8; 99];
    match c.recv(&mut small, CALL) {
        Err(Error::BufferTooSmall { needed: 100 }) => {}
        other => panic!("recv into 99 bytes: {other:?}"),
    }
    let mut buf = [0u8; 100];
    let m = c.recv(&mut buf, CALL).expect("recv after BufferTooSmall");
    assert_eq!((m.seq, m.len, buf), (seq, 100, [9u8; 100]));
}
}

ringlink_tests::transport_test! {
fn credentials_are_the_kernels() {
    let server = ServerProc::spawn(SERVER, &unique_addr("creds"), &[]);
    let (uid, gid) = procfs::effective_ids(Proc::Pid(server.pid())).expect("server status");
    let ready = server.ready().clone();
    assert_eq!(
        (ready.u("pid"), ready.u("uid"), ready.u("gid")),
        (u64::from(server.pid()), u64::from(uid), u64::from(gid))
    );
    let mut c = connect(server.addr(), 0);
    let s = c.server_credentials();
    assert_eq!(
        (s.pid, s.uid, s.gid),
        (server.pid() as i32, uid, gid),
        "client's view of the server"
    );
    let me = ringlink_common::Credentials::current();
    let seen = whoami(&mut c);
    assert_eq!(
        (seen.num("pid"), seen.u("uid"), seen.u("gid"), seen.u("id")),
        (
            i64::from(me.pid),
            u64::from(me.uid),
            u64::from(me.gid),
            c.id()
        ),
        "server's view of this client"
    );
    // A client process: the server sees its pid, not ours.
    let mut child = Helper::spawn(CLIENT, &whoami_args(server.addr(), None));
    let seen = Kv::parse(&child.expect("whoami", LINE_DEADLINE));
    let server_seen = Kv::parse(&child.expect("server", LINE_DEADLINE));
    assert_eq!(seen.u("pid"), u64::from(child.pid()));
    assert_eq!(server_seen.u("pid"), u64::from(server.pid()));
    child.wait(Duration::from_secs(30)).assert_success();

    if !can_switch_user() {
        eprintln!("not root: the tests with another uid are skipped");
        return;
    }
    // A client running as nobody: the server sees nobody.
    let mut child = Helper::spawn(CLIENT, &whoami_args(server.addr(), Some(NOBODY)));
    let seen = Kv::parse(&child.expect("whoami", LINE_DEADLINE));
    assert_eq!(
        (seen.u("pid"), seen.u("uid"), seen.u("gid")),
        (u64::from(child.pid()), u64::from(NOBODY), u64::from(NOBODY))
    );
    let server_seen = Kv::parse(&child.expect("server", LINE_DEADLINE));
    assert_eq!(
        (server_seen.u("uid"), server_seen.u("gid")),
        (u64::from(uid), u64::from(gid))
    );
    child.wait(Duration::from_secs(30)).assert_success();
    drop(c);
    server.shutdown();

    // A server running as nobody: the client sees nobody.
    let n = NOBODY.to_string();
    let server = ServerProc::spawn(
        SERVER,
        &unique_addr("creds-nobody"),
        &["--as-uid", &n, "--as-gid", &n],
    );
    let c = connect(server.addr(), 0);
    let s = c.server_credentials();
    assert_eq!((s.pid, s.uid, s.gid), (server.pid() as i32, NOBODY, NOBODY));
}
}

fn whoami_args(addr: &ServiceAddr, as_user: Option<u32>) -> Vec<String> {
    let mut v: Vec<String> = vec!["whoami".into()];
    v.extend(ringlink_tests::procs::addr_args(addr));
    if let Some(u) = as_user {
        v.extend([
            "--as-uid".into(),
            u.to_string(),
            "--as-gid".into(),
            u.to_string(),
        ]);
    }
    v
}

ringlink_tests::transport_test! {
fn rejections_and_missing_servers() {
    let me = ringlink_common::Credentials::current();
    let uid = me.uid.to_string();
    let mut server = ServerProc::spawn(SERVER, &unique_addr("reject"), &["--reject-uid", &uid]);
    match Client::connect(server.addr(), &client_options(0)) {
        Err(Error::Rejected(Status::PermissionDenied)) => {}
        other => panic!("a rejected uid: {other:?}"),
    }
    // Wrong protocol: refused before the accept handler runs.
    let mut other = ConnectOptions::new("ringlink-test-other");
    other.timeout = Duration::from_secs(60);
    other.transport = ringlink_tests::transport::current();
    match Client::connect(server.addr(), &other) {
        Err(Error::Rejected(Status::UnknownProtocol)) => {}
        other => panic!("an unknown protocol: {other:?}"),
    }
    let s = server.stats();
    assert_eq!(
        (s.u("accepts"), s.u("rejects"), s.u("created")),
        (1, 1, 0),
        "{s}"
    );
    server.shutdown();

    if can_switch_user() {
        // Only nobody is refused: we get in, a nobody process does not.
        let n = NOBODY.to_string();
        let mut server =
            ServerProc::spawn(SERVER, &unique_addr("reject-nobody"), &["--reject-uid", &n]);
        let mut child = Helper::spawn(CLIENT, &whoami_args(server.addr(), Some(NOBODY)));
        assert_eq!(
            child.expect("rejected", LINE_DEADLINE),
            "Rejected(PermissionDenied)"
        );
        child.wait(Duration::from_secs(30)).assert_success();
        let mut c = connect(server.addr(), 0);
        echo(&mut c, b"in", CALL);
        let s = server.stats();
        assert_eq!((s.u("rejects"), s.u("created")), (1, 1), "{s}");
    }

    // Too many clients.
    let mut server = ServerProc::spawn(SERVER, &unique_addr("full"), &["--max-clients", "2"]);
    let a = connect(server.addr(), 0);
    let mut b = connect(server.addr(), 0);
    match Client::connect(server.addr(), &client_options(0)) {
        Err(Error::Rejected(Status::TooManyClients)) => {}
        other => panic!("a third client of two: {other:?}"),
    }
    drop(a);
    server.wait_stats("the first client's end", LINE_DEADLINE, |s| {
        s.u("destroyed") == 1
    });
    let mut c = connect(server.addr(), 0);
    echo(&mut b, b"b", CALL);
    echo(&mut c, b"c", CALL);

    // Nobody listening: an abstract name, a missing path, a socket file
    // no server listens on.
    let nobody_there = unique_addr("nobody-there");
    let mut quick = client_options(0);
    quick.wait_for_server = false;
    match Client::connect(&nobody_there, &quick) {
        Err(Error::NoServer) => {}
        other => panic!("no server, not waiting: {other:?}"),
    }
    let mut short = client_options(0);
    short.server_wait = Duration::from_millis(200);
    match Client::connect(&nobody_there, &short) {
        Err(Error::NoServer) => {}
        other => panic!("no server, waiting 200 ms: {other:?}"),
    }
    let dir = TempDir::new("no-server");
    let missing = ServiceAddr::Path(dir.path().join("missing.sock"));
    match Client::connect(&missing, &quick) {
        Err(Error::NoServer) => {}
        other => panic!("no socket file: {other:?}"),
    }
    let stale_path = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale_path).expect("bind"));
    match Client::connect(&ServiceAddr::Path(stale_path), &quick) {
        Err(Error::NoServer) => {}
        other => panic!("a stale socket file: {other:?}"),
    }
}
}

/// Sends `n` deferred requests the server answers from another thread in
/// the order `order_seed` picks; the last one with `send_recv` if
/// `last_with_send_recv`. Every response must come back once, with its
/// own request's payload.
fn deferred_round(c: &mut Client, n: u32, order_seed: u64, last_with_send_recv: bool) {
    let d = Defer {
        batch: n,
        order_seed,
    };
    let mut sent = Vec::new();
    let mut buf = vec![0u8; c.max_message()];
    let mut got: Vec<(u64, Vec<u8>)> = Vec::new();
    for i in 0..n {
        let len = DEFER_HEADER + payload::record_len(order_seed, u64::from(i), 4000);
        let mut req = vec![0u8; len];
        d.encode_into(&mut req);
        payload::fill(order_seed, u64::from(i), &mut req[DEFER_HEADER..]);
        if last_with_send_recv && i == n - 1 {
            let m = c
                .send_recv(id::DEFER, &req, &mut buf, CALL)
                .expect("send_recv of the last deferred request");
            got.push((m.seq, buf[..m.len].to_vec()));
            sent.push((m.seq, req));
        } else {
            let seq = c.send(id::DEFER, &req).expect("send");
            sent.push((seq, req));
        }
    }
    while got.len() < n as usize {
        let m = c.recv(&mut buf, CALL).expect("recv a deferred response");
        assert_eq!((m.id, m.error), (id::DEFER, 0));
        got.push((m.seq, buf[..m.len].to_vec()));
    }
    match c.recv(&mut buf, Some(Duration::ZERO)) {
        Err(Error::TimedOut) => {}
        other => panic!("more responses than requests: {other:?}"),
    }
    // The answers came in the server's order ...
    let order: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
    if !last_with_send_recv {
        let first = sent[0].0;
        let want: Vec<u64> = d
            .order(n as usize)
            .iter()
            .map(|&i| first + i as u64)
            .collect();
        assert_eq!(order, want, "responses in the server's order");
    }
    // ... and each matches its request by sequence number.
    got.sort_by_key(|(s, _)| *s);
    assert_eq!(got.len(), sent.len());
    for ((gs, gp), (ss, sp)) in got.iter().zip(&sent) {
        assert_eq!(gs, ss, "a response per request");
        assert!(gp == sp, "response {gs} carries its request's payload");
    }
}

ringlink_tests::transport_test! {
fn responses_completed_later_out_of_order() {
    let mut server = ServerProc::spawn(SERVER, &unique_addr("defer"), &[]);
    let mut c = connect(server.addr(), 0);
    deferred_round(&mut c, 50, 0, false); // reverse order
    deferred_round(&mut c, 64, 0x5eed, false); // shuffled
    deferred_round(&mut c, 64, 0xfeed, true); // send_recv stashes the others
    deferred_round(&mut c, 1, 1, true);
    echo(&mut c, b"still in step", CALL);
    // (Counted by the answering threads after each send.)
    server.wait_stats("the answering threads' counts", LINE_DEADLINE, |s| {
        s.u("deferred_answered") == 50 + 64 + 64 + 1
    });
    drop(c);
    let (fin, _) = server.shutdown();
    assert_eq!(fin.u("violations"), 0, "{fin}");
}
}

ringlink_tests::transport_test! {
fn server_disconnects_from_its_message_handler() {
    let mut server = ServerProc::spawn(SERVER, &unique_addr("kick"), &[]);
    let mut c = connect(server.addr(), 0);
    echo(&mut c, b"hello", CALL);
    let mut buf = vec![0u8; 64];
    match c.send_recv(id::DISCONNECT, b"", &mut buf, CALL) {
        Err(Error::Disconnected) => {}
        other => panic!("send_recv of a request whose handler disconnects: {other:?}"),
    }
    assert!(!c.is_connected());
    match c.send(id::ECHO, b"after") {
        Err(Error::Disconnected) => {}
        other => panic!("send after the disconnect: {other:?}"),
    }
    match c.event_recv(&mut buf, None) {
        Err(Error::Disconnected) => {}
        other => panic!("event_recv after the disconnect: {other:?}"),
    }
    let s = server.wait_stats("the connection's end", LINE_DEADLINE, |s| {
        s.u("destroyed") == 1
    });
    assert_eq!(
        (s.u("closed"), s.u("live"), s.u("violations")),
        (1, 0, 0),
        "{s}"
    );

    // Requests queued behind the disconnecting one are never dispatched
    // (the server counts a message after `disconnect()` as a violation).
    let mut c = connect(server.addr(), 0);
    c.send(id::DISCONNECT, b"").expect("send");
    let mut refused = 0;
    for i in 0..20u8 {
        match c.send(id::ECHO, &[i; 100]) {
            Ok(_) => {}
            Err(Error::Disconnected) => refused += 1,
            Err(e) => panic!("send behind the disconnect: {e}"),
        }
    }
    match c.recv(&mut buf, CALL) {
        Err(Error::Disconnected) => {}
        other => panic!("recv behind the disconnect: {other:?} ({refused} sends refused)"),
    }
    let s = server.wait_stats("the second connection's end", LINE_DEADLINE, |s| {
        s.u("destroyed") == 2
    });
    assert_eq!(s.u("violations"), 0, "{}", server.command("violations"));
    assert_eq!(s.u("messages"), 3, "{s}");
    let (fin, _) = server.shutdown();
    assert_eq!((fin.u("closed"), fin.u("destroyed")), (2, 2), "{fin}");
}
}

ringlink_tests::transport_test! {
fn unknown_ids_get_an_error_code() {
    let server = ServerProc::spawn(SERVER, &unique_addr("unknown"), &[]);
    let mut c = connect(server.addr(), 0);
    let mut buf = [0u8; 16];
    let m = c.send_recv(9999, b"?", &mut buf, CALL).expect("send_recv");
    assert_eq!((m.id, m.error, m.len), (9999, ipc::UNKNOWN_ID, 0));
}
}

ringlink_tests::transport_test! {
fn a_client_that_does_not_read_feels_back_pressure_and_loses_nothing() {
    let mut server = ServerProc::spawn(SERVER, &unique_addr("back-pressure"), &[]);
    let mut c = connect(server.addr(), 0);
    let mut req = vec![0u8; 1000];
    let mut sent = Vec::new();
    loop {
        let i = sent.len() as u64;
        payload::fill(4, i, &mut req);
        match c.send(id::ECHO, &req) {
            Ok(seq) => sent.push(seq),
            Err(Error::WouldBlock) => break,
            Err(e) => panic!("send {i}: {e}"),
        }
        assert!(sent.len() < 100_000, "the request ring never filled");
    }
    // The server stopped taking requests once the response ring could
    // not hold a full-size answer; the rest waits in the request ring.
    let taken = server.stats().u("messages");
    assert!(
        taken < sent.len() as u64,
        "{taken} of {} requests taken while no response was read",
        sent.len()
    );
    let mut buf = vec![0u8; c.max_message()];
    for (i, seq) in sent.iter().enumerate() {
        let m = c
            .recv(&mut buf, CALL)
            .unwrap_or_else(|e| panic!("response {i}: {e}"));
        assert_eq!((m.seq, m.len), (*seq, req.len()), "response {i}");
        payload::fill(4, i as u64, &mut req);
        assert!(buf[..m.len] == req[..], "response {i} differs");
    }
    match c.recv(&mut buf, Some(Duration::ZERO)) {
        Err(Error::TimedOut) => {}
        other => panic!("a response too many: {other:?}"),
    }
    eprintln!(
        "{} requests sent before WouldBlock, {taken} taken meanwhile",
        sent.len()
    );
    assert_eq!(server.stats().u("messages"), sent.len() as u64);
}
}

/// CPU time this thread has used.
fn thread_cpu() -> Duration {
    // SAFETY: `getrusage` writes a `rusage` it is given the address of;
    // zeroed is a valid `rusage`.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_THREAD is valid on Linux.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut r) };
    assert_eq!(rc, 0, "getrusage");
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(r.ru_utime) + tv(r.ru_stime)
}

ringlink_tests::transport_test! {
/// A send that waits for room sleeps (after its spin budget) until the
/// server frees some: it does not poll the ring in a loop. (A wait for
/// room not held by flow control used to return at once, and the send
/// spun for its whole timeout.) CPU time, not wall time, is measured: a
/// busy machine makes it smaller, never larger.
fn a_send_waiting_for_room_sleeps() {
    let server = ServerProc::spawn(SERVER, &unique_addr("room-sleeps"), &[]);
    let mut c = connect(server.addr(), 0);
    let req = vec![7u8; 1000];
    let mut sent = 0u64;
    // Full, and staying full: the server takes requests until the
    // response ring cannot hold another answer, then waits for us.
    loop {
        let before = sent;
        loop {
            match c.send(id::ECHO, &req) {
                Ok(_) => sent += 1,
                Err(Error::WouldBlock) => break,
                Err(e) => panic!("send {sent}: {e}"),
            }
            assert!(sent < 100_000, "the request ring never filled");
        }
        if sent == before {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let wait = Duration::from_millis(500);
    let before = thread_cpu();
    match c.send_timeout(id::ECHO, &req, Some(wait)) {
        Err(Error::TimedOut) => {}
        other => panic!("a send into a full ring: {other:?}"),
    }
    let used = thread_cpu() - before;
    eprintln!("waited {wait:?} for room, using {used:?} of CPU");
    assert!(
        used < wait / 4,
        "a send waiting {wait:?} for room used {used:?} of CPU: it spun"
    );
    // Everything sent still comes back.
    let mut buf = vec![0u8; c.max_message()];
    for i in 0..sent {
        c.recv(&mut buf, CALL)
            .unwrap_or_else(|e| panic!("response {i}: {e}"));
    }
    server.shutdown();
}
}

ringlink_tests::transport_test! {
/// A zero timeout never waits: `send_recv` of a request the server holds
/// returns `TimedOut` at once (and the answer, when it comes, is still
/// delivered to `recv`).
fn send_recv_with_a_zero_timeout_does_not_wait() {
    let server = ServerProc::spawn(SERVER, &unique_addr("zero"), &[]);
    let mut c = connect(server.addr(), 0);
    let mut req = [0u8; DEFER_HEADER];
    Defer {
        batch: 2,
        order_seed: 0,
    }
    .encode_into(&mut req);
    let mut buf = vec![0u8; c.max_message()];
    let started = std::time::Instant::now();
    match c.send_recv(id::DEFER, &req, &mut buf, Some(Duration::ZERO)) {
        Err(Error::TimedOut) => {}
        other => panic!("send_recv with a zero timeout: {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5), "it waited");
    // The second of the batch releases both answers.
    let second = c.send(id::DEFER, &req).expect("second");
    let mut seqs = vec![
        c.recv(&mut buf, CALL).expect("first answer").seq,
        c.recv(&mut buf, CALL).expect("second answer").seq,
    ];
    seqs.sort_unstable();
    assert_eq!(seqs, vec![second - 1, second]);
    server.shutdown();
}
}

/// The test server and a client whose rings take 200 KiB messages (over
/// the transport `transport_test!` selects), and the tests' timeout.
fn in_place_server(
    name: &str,
) -> (
    ringlink_tests::procs::ServerProc,
    ringlink_ipcc::Client,
    Option<std::time::Duration>,
) {
    let addr = ringlink_tests::procs::unique_addr(name);
    let server =
        ringlink_tests::procs::ServerProc::spawn(env!("CARGO_BIN_EXE_test_server"), &addr, &[]);
    let c = ringlink_tests::procs::connect(&addr, 256 << 10);
    (server, c, Some(std::time::Duration::from_secs(60)))
}

ringlink_tests::transport_test! {
fn a_zero_copy_round_trip_takes_its_own_answer_and_keeps_the_others() {
    use ringlink_tests::ipc::id;
    let (mut server, mut c, timeout) = in_place_server("in-place-rtt");
    for len in [0usize, 1, 63, 4096, 200 << 10] {
        let pattern = |i: usize| (i * 5 + len) as u8;
        // Two requests in flight before it: their answers come first.
        let first = c.send(id::ECHO, b"first").expect("first");
        let second = c.send(id::ECHO, b"second").expect("second");
        let (seq, ok) = c
            .send_recv_in_place(
                id::IN_PLACE,
                len,
                timeout,
                |buf| {
                    assert_eq!(buf.len(), len);
                    for (i, b) in buf.iter_mut().enumerate() {
                        *b = pattern(i);
                    }
                },
                |m, payload| {
                    let ok = m.id == id::IN_PLACE
                        && payload.len() == len
                        && payload.iter().rev().enumerate().all(|(i, &b)| b == pattern(i));
                    (m.seq, ok)
                },
            )
            .expect("zero-copy round trip");
        assert!(seq > second, "answered by {seq}, not its own");
        assert!(ok, "response of {len} bytes differs");
        // The answers it passed over were kept, in order.
        let mut buf = [0u8; 16];
        let m = c.recv(&mut buf, timeout).expect("first answer");
        assert_eq!((m.seq, &buf[..m.len]), (first, &b"first"[..]));
        let m = c.recv(&mut buf, timeout).expect("second answer");
        assert_eq!((m.seq, &buf[..m.len]), (second, &b"second"[..]));
        // The event the server sent beside it.
        let ok = c
            .event_recv_in_place(timeout, |m, payload| {
                m.id == id::IN_PLACE && payload.len() == len
            })
            .expect("event");
        assert!(ok);
    }
    // Too large: refused before anything is written.
    let max = c.max_message();
    match c.send_recv_in_place(id::IN_PLACE, max + 1, timeout, |_| panic!("filled"), |_, _| ()) {
        Err(ringlink_ipcc::Error::MessageTooLarge { .. }) => {}
        other => panic!("{other:?}"),
    }
    let st = server.stats();
    assert_eq!(st.u("violations"), 0, "{st}");
    server.shutdown();
}
}

ringlink_tests::transport_test! {
fn zero_copy_requests_responses_and_events() {
    use ringlink_tests::ipc::id;
    let (mut server, mut c, timeout) = in_place_server("in-place");
    for len in [0usize, 1, 63, 4096, 200 << 10] {
        let pattern = |i: usize| (i * 7 + len) as u8;
        // Written in place into the request ring (a buffer over sockets).
        let seq = c
            .send_in_place(id::IN_PLACE, len, timeout, |buf| {
                assert_eq!(buf.len(), len);
                for (i, b) in buf.iter_mut().enumerate() {
                    *b = pattern(i);
                }
            })
            .expect("send in place");
        // The event, then the answer, read where they lie.
        let ok = c
            .event_recv_in_place(timeout, |m, payload| {
                m.id == id::IN_PLACE
                    && payload.len() == len
                    && payload.iter().enumerate().all(|(i, &b)| b == pattern(i))
            })
            .expect("event in place");
        assert!(ok, "event of {len} bytes differs");
        let (rseq, ok) = c
            .recv_in_place(timeout, |m, payload| {
                let ok = payload.len() == len
                    && payload.iter().rev().enumerate().all(|(i, &b)| b == pattern(i));
                (m.seq, ok)
            })
            .expect("response in place");
        assert_eq!(rseq, seq);
        assert!(ok, "response of {len} bytes differs");
    }
    // Too large: refused before anything is written.
    let max = c.max_message();
    match c.send_in_place(id::IN_PLACE, max + 1, timeout, |_| panic!("filled")) {
        Err(ringlink_ipcc::Error::MessageTooLarge { .. }) => {}
        other => panic!("{other:?}"),
    }
    let st = server.stats();
    assert_eq!(st.u("violations"), 0, "{st}");
    server.shutdown();
}
}

ringlink_tests::transport_test! {
/// `Client::reserve` and the server's `reserve_event`/`reserve_response`:
/// messages written through slots arrive whole; a slot dropped on either
/// side sends nothing and takes no sequence number.
fn requests_responses_and_events_written_through_slots() {
    use ringlink_ipcc::Error;
    use ringlink_tests::ipc::id;
    let (mut server, mut c, timeout) = in_place_server("slots");
    let mut last = 0;
    for len in [0usize, 1, 63, 4096, 200 << 10] {
        let pattern = |i: usize| (i * 11 + len) as u8;
        let mut slot = c.reserve(id::RESERVED, len, timeout).expect("reserve");
        assert_eq!(slot.len(), len);
        for (i, b) in slot.iter_mut().enumerate() {
            *b = pattern(i);
        }
        // What was written reads back before it goes.
        assert!(slot.iter().enumerate().all(|(i, &b)| b == pattern(i)));
        let seq = slot.commit().expect("commit");
        assert!(seq > last);
        last = seq;
        let ok = c
            .event_recv_in_place(timeout, |m, payload| {
                m.id == id::RESERVED
                    && payload.len() == len
                    && payload.iter().enumerate().all(|(i, &b)| b == pattern(i))
            })
            .expect("event");
        assert!(ok, "event of {len} bytes differs");
        let (rseq, ok) = c
            .recv_in_place(timeout, |m, payload| {
                let ok = m.id == id::RESERVED
                    && payload.len() == len
                    && payload.iter().rev().enumerate().all(|(i, &b)| b == pattern(i));
                (m.seq, ok)
            })
            .expect("response");
        assert_eq!(rseq, seq);
        assert!(ok, "response of {len} bytes differs");
    }
    // A slot given up on the client: nothing goes, and the next request
    // takes the number it would have had.
    {
        let mut slot = c.reserve(id::ECHO, 5, timeout).expect("reserve");
        slot.copy_from_slice(b"never");
    }
    let seq = c.send(id::ECHO, b"after").expect("send");
    assert_eq!(seq, last + 1);
    let mut buf = [0u8; 16];
    let m = c.recv(&mut buf, timeout).expect("echo");
    assert_eq!((m.seq, &buf[..m.len]), (seq, &b"after"[..]));
    // A response given up on the server: only the one sent after it comes.
    let mut slot = c.reserve(id::RESERVED, 3, timeout).expect("reserve");
    slot.copy_from_slice(b"!ab");
    let seq = slot.commit().expect("commit");
    let m = c.recv(&mut buf, timeout).expect("answer");
    assert_eq!((m.seq, &buf[..m.len]), (seq, &b"given up"[..]));
    match c.recv(&mut buf, Some(std::time::Duration::from_millis(100))) {
        Err(Error::TimedOut) => {}
        other => panic!("nothing more was sent, got {other:?}"),
    }
    // Too large: refused before anything is reserved.
    let max = c.max_message();
    match c.reserve(id::RESERVED, max + 1, timeout) {
        Err(Error::MessageTooLarge { .. }) => {}
        other => panic!("{other:?}"),
    }
    // The server counted what went, and not what it gave up: five
    // answers and five events through slots, the echo, `given up`.
    let cs = server.command(&format!("cstats {}", c.id()));
    let cs = ringlink_tests::ipc::Kv::parse(cs.strip_prefix("cstats ").expect("cstats"));
    assert_eq!((cs.u("responses"), cs.u("events")), (7, 5), "{cs}");
    let st = server.stats();
    assert_eq!(st.u("violations"), 0, "{st}");
    server.shutdown();
}
}

ringlink_tests::transport_test! {
/// A handler that panics on one client's request, on the service's loop
/// thread, loses that connection, not the service: its client sees
/// `Disconnected`, the error hook hears `HandlerPanicked`, a bystander's
/// connection goes on, and a new client connects, however many times it
/// happens.
fn a_panicking_handler_loses_its_connection_not_the_service() {
    let addr = unique_addr("panic");
    let mut server = ServerProc::spawn(SERVER, &addr, &["--log-faults"]);
    let mut bystander = connect(&addr, 0);
    echo(&mut bystander, b"before", CALL);
    for round in 0..3 {
        let mut c = connect(&addr, 0);
        let cid = c.id();
        let mut buf = [0u8; 8];
        match c.send_recv(id::PANIC, b"", &mut buf, CALL) {
            Err(Error::Disconnected) => {}
            other => panic!("round {round}: {other:?}"),
        }
        echo(&mut bystander, format!("after {round}").as_bytes(), CALL);
        let faults = server.faults();
        assert!(
            faults
                .iter()
                .any(|(conn, why)| *conn == Some(cid) && why.contains("panicked")),
            "round {round}: {faults:?}"
        );
    }
    let mut newcomer = connect(&addr, 0);
    echo(&mut newcomer, b"new", CALL);
    server.shutdown();
}
}
