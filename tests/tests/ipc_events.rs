//! Events (unsolicited server → client messages) from a real server
//! process: a reply sent only as an event, bursts of 10 and of 30,000
//! (every 1,000th of the maximum size) through a ring that fills, an
//! event sent from `connection_created`, and the non-waiting
//! `send_event` on a full ring.

use std::time::{Duration, Instant};

use ringlink_ipcc::{Client, Error};
use ringlink_tests::ipc::{self, id, Burst};
use ringlink_tests::payload;
use ringlink_tests::procs::{connect, readable, unique_addr, ServerProc};

const SERVER: &str = env!("CARGO_BIN_EXE_test_server");

/// Deadline of a call that should complete: only catches hangs.
const CALL: Option<Duration> = Some(Duration::from_secs(60));

fn no_event_waiting(c: &mut Client) {
    let mut buf = vec![0u8; c.max_message()];
    match c.event_recv(&mut buf, Some(Duration::ZERO)) {
        Err(Error::TimedOut) => {}
        other => panic!("an event too many: {other:?}"),
    }
}

ringlink_tests::transport_test! {
fn a_reply_sent_only_as_an_event() {
    let server = ServerProc::spawn(SERVER, &unique_addr("event-only"), &[]);
    let mut c = connect(server.addr(), 0);
    let mut buf = vec![0u8; c.max_message()];
    let mut req = vec![0u8; 3000];
    payload::fill(2, 3, &mut req);
    match c.send_recv(
        id::EVENT_ONLY,
        &req,
        &mut buf,
        Some(Duration::from_millis(200)),
    ) {
        Err(Error::TimedOut) => {}
        other => panic!("send_recv of a request answered by an event: {other:?}"),
    }
    assert!(c.is_connected());
    let m = c.event_recv(&mut buf, CALL).expect("event_recv");
    assert_eq!(
        (m.id, m.seq, m.error, m.len),
        (id::EVENT_ONLY, 0, 0, req.len())
    );
    assert!(buf[..m.len] == req[..], "the event carries the request");
    // No response was sent, and the connection works on.
    match c.recv(&mut buf, Some(Duration::ZERO)) {
        Err(Error::TimedOut) => {}
        other => panic!("a response to an event-only request: {other:?}"),
    }
    let m = c.send_recv(id::ECHO, b"on", &mut buf, CALL).expect("echo");
    assert_eq!(&buf[..m.len], b"on");
    no_event_waiting(&mut c);
}
}

/// Asks for `b` and receives and checks every event.
fn burst(c: &mut Client, b: Burst) {
    let max = c.max_message();
    let mut buf = vec![0u8; max];
    let m = c
        .send_recv(id::BURST, &b.encode(), &mut buf, CALL)
        .expect("burst request");
    assert_eq!((m.error, m.len), (0, 0));
    for i in 0..b.count {
        let m = c
            .event_recv(&mut buf, CALL)
            .unwrap_or_else(|e| panic!("event {i} of {}: {e}", b.count));
        assert_eq!((m.id, m.seq, m.error), (id::BURST_EVENT, 0, 0), "event {i}");
        if let Err(why) = b.check_event(i, max, &buf[..m.len]) {
            panic!("event {i} of {}: {why}", b.count);
        }
    }
    no_event_waiting(c);
}

ringlink_tests::transport_test! {
fn a_burst_of_ten_events() {
    let mut server = ServerProc::spawn(SERVER, &unique_addr("burst10"), &[]);
    let mut c = connect(server.addr(), 0);
    burst(
        &mut c,
        Burst {
            count: 10,
            big_every: 0,
            seed: 10,
        },
    );
    let s = server.wait_stats("the burst's end", CALL.unwrap(), |s| s.u("burst_done") == 1);
    assert_eq!(s.u("violations"), 0, "{s}");
}
}

/// 30,000 events, every 1,000th of the connection's maximum size, on a
/// connection asking for `max_message`: the event ring fills many times
/// over, and the server's sender waits for room each time.
fn thirty_thousand(max_message: u32) {
    let mut server = ServerProc::spawn(
        SERVER,
        &unique_addr("burst30k"),
        &["--max-message", "1048576"],
    );
    let mut c = connect(server.addr(), max_message);
    let start = Instant::now();
    burst(
        &mut c,
        Burst {
            count: 30_000,
            big_every: 1000,
            seed: 30,
        },
    );
    let s = server.wait_stats("the burst's end", CALL.unwrap(), |s| s.u("burst_done") == 1);
    eprintln!(
        "30,000 events (max {} bytes) in {:?}; the server found the ring full {} times",
        c.max_message(),
        start.elapsed(),
        s.u("event_wouldblock")
    );
    assert_eq!(
        (
            s.u("burst_timedout"),
            s.u("burst_disconnected"),
            s.u("violations")
        ),
        (0, 0, 0),
        "{s}"
    );
}

ringlink_tests::transport_test! {
fn thirty_thousand_events_with_maximum_size_ones() {
    thirty_thousand(0);
}
}

ringlink_tests::transport_test! {
fn thirty_thousand_events_with_one_mib_ones() {
    thirty_thousand(1 << 20);
}
}

ringlink_tests::transport_test! {
fn an_event_from_connection_created() {
    let mut server = ServerProc::spawn(SERVER, &unique_addr("hello"), &["--event-on-create"]);
    for _ in 0..3 {
        let mut c = connect(server.addr(), 0);
        let mut buf = vec![0u8; 256];
        let m = c.event_recv(&mut buf, CALL).expect("the hello event");
        assert_eq!((m.id, m.seq), (id::HELLO, 0));
        assert_eq!(
            String::from_utf8_lossy(&buf[..m.len]),
            format!("hello {}", c.id())
        );
        no_event_waiting(&mut c);
    }
    assert_eq!(server.stats().u("hello_failed"), 0);
}
}

ringlink_tests::transport_test! {
fn send_event_on_a_full_ring_would_block_and_loses_nothing() {
    let server = ServerProc::spawn(SERVER, &unique_addr("fill"), &[]);
    let mut c = connect(server.addr(), 0);
    let max = c.max_message();
    let mut buf = vec![0u8; max];
    for len in [0usize, 1, 100, 4096, max] {
        // The handler sends with `send_event` until `WouldBlock`, and
        // says how many went in.
        let m = c
            .send_recv(id::FILL, &(len as u64).to_le_bytes(), &mut buf, CALL)
            .expect("fill request");
        let sent = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
        assert_eq!(m.len, 8);
        assert!(sent >= 1, "not even one {len}-byte event fitted");
        let mut want = vec![0u8; len];
        for i in 0..sent {
            let m = c.event_recv(&mut buf, CALL).expect("event_recv");
            assert_eq!((m.id, m.len), (id::FILL_EVENT, len), "event {i} of {sent}");
            ipc::fill_event(i, &mut want);
            assert!(buf[..len] == want[..], "event {i} of {sent} ({len} bytes)");
        }
        no_event_waiting(&mut c);
    }
}
}

ringlink_tests::transport_test! {
/// The wake-up for the application's poll is taken by one of the
/// client's own calls (here `is_connected`, which reads the socket the
/// wake-ups come on) between `prepare_poll` and the poll: the client's
/// fd must still turn readable, or the application would wait for ever
/// with an event in the ring.
fn a_wake_up_read_by_the_clients_own_call_still_wakes_the_event_loop() {
    let server = ServerProc::spawn(SERVER, &unique_addr("pollable-taken"), &[]);
    let mut c = connect(server.addr(), 0);
    let mut buf = [0u8; 64];
    assert!(c.prepare_poll(), "nothing is waiting yet");
    c.send(id::EVENT_ONLY, b"ping").expect("send");
    // Let the event and its wake-up arrive, then take the wake-up.
    std::thread::sleep(Duration::from_millis(100));
    assert!(c.is_connected());
    assert!(readable(&c, 60_000), "an event came and the fd is not readable");
    let m = c
        .event_recv(&mut buf, Some(Duration::ZERO))
        .expect("the event");
    assert_eq!(&buf[..m.len], b"ping");
    drop(server);
}
}

ringlink_tests::transport_test! {
fn the_client_fd_wakes_an_event_loop() {
    let server = ServerProc::spawn(SERVER, &unique_addr("pollable"), &[]);
    let mut c = connect(server.addr(), 0);
    let mut buf = [0u8; 64];
    assert!(c.prepare_poll(), "nothing is waiting yet");
    assert!(!readable(&c, 0), "readable with nothing waiting");
    // An event (the answer to an event-only request).
    c.send(id::EVENT_ONLY, b"ping").expect("send");
    assert!(readable(&c, 60_000), "not readable when an event came");
    let m = c
        .event_recv(&mut buf, Some(Duration::ZERO))
        .expect("the event");
    assert_eq!(&buf[..m.len], b"ping");
    // A response.
    assert!(c.prepare_poll());
    c.send(id::ECHO, b"pong").expect("send");
    assert!(readable(&c, 60_000), "not readable when a response came");
    let m = c
        .recv(&mut buf, Some(Duration::ZERO))
        .expect("the response");
    assert_eq!(&buf[..m.len], b"pong");
    // The server leaving.
    assert!(c.prepare_poll());
    server.shutdown();
    assert!(readable(&c, 60_000), "not readable when the server left");
    match c.recv(&mut buf, Some(Duration::ZERO)) {
        Err(Error::Disconnected) => {}
        other => panic!("recv after the server left: {other:?}"),
    }
    assert!(!c.is_connected());
}
}

ringlink_tests::transport_test! {
fn events_as_a_blocking_iterator_end_when_the_server_goes() {
    let server = ServerProc::spawn(SERVER, &unique_addr("event-iter"), &[]);
    let mut c = connect(server.addr(), 0);
    for i in 0..3u8 {
        c.send_timeout(id::EVENT_ONLY, &[i; 5], CALL).expect("send");
    }
    let got: Vec<_> = c
        .events()
        .take(3)
        .map(|e| e.expect("an event"))
        .map(|e| (e.id, e.payload, e.fds.len()))
        .collect();
    assert_eq!(
        got,
        (0..3u8).map(|i| (id::EVENT_ONLY, vec![i; 5], 0)).collect::<Vec<_>>()
    );
    // The server gone: the last item says so, and the iteration ends.
    server.kill();
    let rest: Vec<_> = c.events().collect();
    assert!(
        matches!(rest.as_slice(), [Err(Error::Disconnected)]),
        "{rest:?}"
    );
}
}

ringlink_tests::transport_test! {
/// `Connection::send_events` from outside the loop, as a short `write`:
/// nothing for nothing; what goes before an event too large, and that
/// event's error on the next call; a batch that stops where the ring is
/// full, the client reading exactly what went, in order; slices joined;
/// `Disconnected` once the client has left.
fn send_events_is_a_short_write() {
    use ringlink_ipcs::{Connection, Handler, Request, Service};
    struct Quiet;
    impl Handler for Quiet {
        fn message(&self, _: &Connection, _: &Request<'_>) {}
    }
    let addr = unique_addr("send-events");
    let opts = ringlink_tests::transport::service_options();
    let (tx, rx) = std::sync::mpsc::channel();
    let server = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            let mut s = Service::bind(addr, ipc::PROTOCOL, opts, Quiet).expect("bind");
            tx.send(s.control_handle()).expect("handle");
            s.run().expect("run");
        })
    };
    let control = rx.recv().expect("the service listens");
    let mut c = connect(&addr, 0);
    let conn = {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(conn) = control.connections().pop() {
                break conn;
            }
            assert!(Instant::now() < deadline, "no connection");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    let max = c.max_message();
    let mut buf = vec![0u8; max];
    assert_eq!(conn.send_events(&[]).expect("nothing"), 0);
    // An event too large stops the batch; the next call says why.
    let big = vec![7u8; max + 1];
    let events: [(i32, &[u8]); 3] = [(1, b"one"), (2, &big), (3, b"three")];
    assert_eq!(conn.send_events(&events).expect("the first goes"), 1);
    assert!(matches!(
        conn.send_events(&events[1..]),
        Err(ringlink_ipcs::Error::MessageTooLarge { .. })
    ));
    let m = c.event_recv(&mut buf, CALL).expect("event");
    assert_eq!((m.id, &buf[..m.len]), (1, &b"one"[..]));
    // Slices joined.
    let parts = [std::io::IoSlice::new(b"ab"), std::io::IoSlice::new(b"cd")];
    let vectored: [(i32, &[std::io::IoSlice<'_>]); 2] = [(4, &parts), (5, &parts[1..])];
    assert_eq!(conn.send_events_vectored(&vectored).expect("vectored"), 2);
    for (id, want) in [(4, &b"abcd"[..]), (5, b"cd")] {
        let m = c.event_recv(&mut buf, CALL).expect("event");
        assert_eq!((m.id, &buf[..m.len]), (id, want));
    }
    // A batch larger than the ring holds stops where it is full.
    let indexes: Vec<[u8; 8]> = (0..200_000u64).map(u64::to_le_bytes).collect();
    let events: Vec<(i32, &[u8])> = indexes.iter().map(|i| (6, &i[..])).collect();
    let went = conn.send_events(&events).expect("some go");
    assert!(went > 0 && went < events.len(), "{went}");
    assert!(matches!(
        conn.send_events(&events[went..]),
        Err(ringlink_ipcs::Error::WouldBlock)
    ));
    for i in 0..went as u64 {
        let m = c.event_recv(&mut buf, CALL).expect("event");
        assert_eq!((m.id, &buf[..m.len]), (6, &i.to_le_bytes()[..]));
    }
    no_event_waiting(&mut c);
    assert_eq!(conn.stats(false).events, went as u64 + 3);
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(60);
    while conn.is_connected() {
        assert!(Instant::now() < deadline, "the connection never ended");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(matches!(
        conn.send_events(&events[..1]),
        Err(ringlink_ipcs::Error::Disconnected)
    ));
    control.shutdown();
    server.join().expect("server thread");
}
}
