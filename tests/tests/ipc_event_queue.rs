//! Events are never lost silently (LibIPC's lesson: thousands of events
//! vanished while a subscriber was stopped, and nobody was told). With
//! the server in a process of its own, a handler sends many events at
//! once to a client that is not reading (50,000); the client's ring fills, then
//! the connection's event queue (`ServiceOptions::event_queue`), and then
//! the policy decides: the client reads every event that was kept, in
//! order, and one `Error::Lagged(n)` where `n` were dropped (the server
//! counts them too); or the sender is refused and knows.

use std::time::Duration;

use ringlink_ipcc::{Client, Error};
use ringlink_tests::ipc::{id, Kv};
use ringlink_tests::procs::{connect, unique_addr, ServerProc};

const SERVER: &str = env!("CARGO_BIN_EXE_test_server");

/// Only catches hangs.
const PROMPT: Duration = Duration::from_secs(60);

const FLOOD: u32 = 50_000;

/// What the client read: each event's index, and where a notice said how
/// many were dropped (its place in the list, the count).
struct Read {
    indexes: Vec<u32>,
    notices: Vec<(usize, u64)>,
}

/// Floods the client, then reads until every event is accounted for:
/// read, said dropped, or (refused) never sent.
fn flood_and_read(server: &mut ServerProc, c: &mut Client) -> (Read, Kv) {
    flood_in_batches(server, c, 0)
}

/// [`flood_and_read`], the server sending `batch` events per
/// `Connection::send_events` (0: one `send_event` each).
fn flood_in_batches(server: &mut ServerProc, c: &mut Client, batch: u32) -> (Read, Kv) {
    let mut buf = [0u8; 64];
    let mut req = FLOOD.to_le_bytes().to_vec();
    req.extend_from_slice(&batch.to_le_bytes());
    let m = c
        .send_recv(id::FLOOD, &req, &mut buf, Some(PROMPT))
        .expect("flood");
    let answer = Kv::parse(std::str::from_utf8(&buf[..m.len]).expect("text"));
    let sent = answer.u("sent") as usize;
    let mut read = Read {
        indexes: Vec::new(),
        notices: Vec::new(),
    };
    let mut dropped = 0u64;
    while read.indexes.len() + (dropped as usize) < sent {
        match c.event_recv(&mut buf, Some(PROMPT)) {
            Ok(m) => {
                assert_eq!((m.id, m.len), (id::FLOOD, 4));
                read.indexes
                    .push(u32::from_le_bytes(buf[..4].try_into().expect("4")));
            }
            Err(Error::Lagged(n)) => {
                read.notices.push((read.indexes.len(), n));
                dropped += n;
            }
            Err(e) => panic!("after {} events: {e}", read.indexes.len()),
        }
    }
    // Nothing more comes.
    assert!(matches!(
        c.event_recv(&mut buf, Some(Duration::ZERO)),
        Err(Error::WouldBlock | Error::TimedOut)
    ));
    let stats = server.command(&format!("cstats {} clear", c.id()));
    let stats = Kv::parse(stats.strip_prefix("cstats ").expect("cstats"));
    assert_eq!(stats.u("events_dropped"), dropped, "{stats}");
    assert_eq!(stats.u("events_backlogged"), 0, "{stats}");
    (read, answer)
}

fn in_order(r: &Read) {
    assert!(r.indexes.windows(2).all(|w| w[0] < w[1]), "out of order");
}

ringlink_tests::transport_test! {
    fn dropping_the_oldest_tells_the_client_where_and_how_many() {
        let addr = unique_addr("eq-oldest");
        let mut server = ServerProc::spawn(SERVER, &addr, &["--event-queue", "16:drop-oldest"]);
        let mut c = connect(&addr, 0);
        let (r, answer) = flood_and_read(&mut server, &mut c);
        assert_eq!(answer.u("sent"), u64::from(FLOOD));
        in_order(&r);
        // What the ring held, then one notice, then the newest sixteen.
        assert_eq!(r.notices.len(), 1, "{:?}", r.notices);
        let (at, n) = r.notices[0];
        assert_eq!(r.indexes.len() - at, 16);
        assert!(n > 0);
        assert_eq!(r.indexes[..at], (0..at as u32).collect::<Vec<_>>()[..]);
        assert_eq!(r.indexes[at], at as u32 + n as u32, "the gap is where the notice is");
        assert_eq!(*r.indexes.last().expect("some"), FLOOD - 1);
        // The queue works again afterwards, with nothing left over.
        let (r, _) = flood_and_read(&mut server, &mut c);
        assert_eq!(r.notices.len(), 1);
        server.shutdown();
    }
}

ringlink_tests::transport_test! {
    fn dropping_the_newest_keeps_a_prefix_then_tells() {
        let addr = unique_addr("eq-newest");
        let mut server = ServerProc::spawn(SERVER, &addr, &["--event-queue", "16:drop-newest"]);
        let mut c = connect(&addr, 0);
        let (r, _) = flood_and_read(&mut server, &mut c);
        in_order(&r);
        assert_eq!(r.notices.len(), 1, "{:?}", r.notices);
        let (at, n) = r.notices[0];
        assert_eq!(at, r.indexes.len(), "the notice comes last");
        assert_eq!(r.indexes, (0..at as u32).collect::<Vec<_>>());
        assert_eq!(at as u64 + n, u64::from(FLOOD));
        server.shutdown();
    }
}

ringlink_tests::transport_test! {
    fn refusing_loses_nothing_the_sender_does_not_know_of() {
        let addr = unique_addr("eq-refuse");
        let mut server = ServerProc::spawn(SERVER, &addr, &["--event-queue", "16:refuse"]);
        let mut c = connect(&addr, 0);
        let (r, answer) = flood_and_read(&mut server, &mut c);
        in_order(&r);
        assert!(r.notices.is_empty());
        assert!(answer.u("refused") > 0, "{answer}");
        assert_eq!(
            r.indexes,
            (0..answer.u("sent") as u32).collect::<Vec<_>>(),
            "every event sent arrives: the ring's, then the queue's sixteen"
        );
        assert_eq!(answer.u("sent") + answer.u("refused"), u64::from(FLOOD));
        server.shutdown();
    }
}

ringlink_tests::transport_test! {
    /// `Connection::send_events`, batches of 100 of the flood: with a
    /// queue that refuses, what the ring and the queue took arrives in
    /// order and the rest is counted refused, as event by event; with a
    /// queue that drops the oldest, a batch is always taken whole and the
    /// client hears of the gap; with no queue, a batch stops where the
    /// ring is full, and the client reads exactly what went.
    fn batches_of_events_keep_every_promise_of_single_ones() {
        let addr = unique_addr("eq-batch-refuse");
        let mut server = ServerProc::spawn(SERVER, &addr, &["--event-queue", "16:refuse"]);
        let mut c = connect(&addr, 0);
        let (r, answer) = flood_in_batches(&mut server, &mut c, 100);
        in_order(&r);
        assert!(r.notices.is_empty());
        assert!(answer.u("refused") > 0, "{answer}");
        assert_eq!(r.indexes, (0..answer.u("sent") as u32).collect::<Vec<_>>());
        assert_eq!(answer.u("sent") + answer.u("refused"), u64::from(FLOOD));
        // A flood after it finds the queue empty again (its ring holds
        // about as many: where the records wrap moves).
        let (r2, answer2) = flood_in_batches(&mut server, &mut c, 100);
        assert!(answer2.u("sent") > 16 && answer2.u("refused") > 0, "{answer2}");
        assert_eq!(r2.indexes, (0..answer2.u("sent") as u32).collect::<Vec<_>>());
        server.shutdown();

        let addr = unique_addr("eq-batch-oldest");
        let mut server =
            ServerProc::spawn(SERVER, &addr, &["--event-queue", "16:drop-oldest"]);
        let mut c = connect(&addr, 0);
        let (r, answer) = flood_in_batches(&mut server, &mut c, 100);
        assert_eq!(answer.u("sent"), u64::from(FLOOD));
        in_order(&r);
        assert_eq!(r.notices.len(), 1, "{:?}", r.notices);
        let (at, n) = r.notices[0];
        assert_eq!(r.indexes.len() - at, 16);
        assert_eq!(r.indexes[at], at as u32 + n as u32, "the gap is where the notice is");
        assert_eq!(*r.indexes.last().expect("some"), FLOOD - 1);
        server.shutdown();

        let addr = unique_addr("eq-batch-none");
        let mut server = ServerProc::spawn(SERVER, &addr, &[]);
        let mut c = connect(&addr, 0);
        let (r, answer) = flood_in_batches(&mut server, &mut c, 100);
        in_order(&r);
        assert!(r.notices.is_empty());
        assert!(answer.u("sent") > 0 && answer.u("refused") > 0, "{answer}");
        assert_eq!(r.indexes, (0..answer.u("sent") as u32).collect::<Vec<_>>());
        server.shutdown();
    }
}

ringlink_tests::transport_test! {
    /// An event written through a slot (`Connection::reserve_event`)
    /// while others wait in the queue is queued behind them at the
    /// commit: it never overtakes them.
    fn an_event_reserved_behind_queued_ones_comes_after_them() {
        let addr = unique_addr("eq-slot");
        let mut server =
            ServerProc::spawn(SERVER, &addr, &["--event-queue", "1000000:refuse"]);
        let mut c = connect(&addr, 0);
        let mut buf = [0u8; 64];
        // More than the ring holds: the rest wait in the queue.
        let n: u32 = 20_000;
        let mut req = n.to_le_bytes().to_vec();
        req.extend_from_slice(&0u32.to_le_bytes());
        let m = c.send_recv(id::FLOOD, &req, &mut buf, Some(PROMPT)).expect("flood");
        let answer = Kv::parse(std::str::from_utf8(&buf[..m.len]).expect("text"));
        assert_eq!(answer.u("sent"), u64::from(n), "{answer}");
        let stats = server.command(&format!("cstats {}", c.id()));
        let stats = Kv::parse(stats.strip_prefix("cstats ").expect("cstats"));
        assert!(stats.u("events_backlogged") > 0, "nothing queued: {stats}");
        // The handler reserves an event and a response (test server's
        // `id::RESERVED`); the response comes at once.
        let m = c.send_recv(id::RESERVED, b"abc", &mut buf, Some(PROMPT)).expect("reserved");
        assert_eq!(&buf[..m.len], b"cba");
        for i in 0..n {
            let m = c.event_recv(&mut buf, Some(PROMPT)).expect("flood event");
            assert_eq!((m.id, &buf[..4]), (id::FLOOD, &i.to_le_bytes()[..]));
        }
        let m = c.event_recv(&mut buf, Some(PROMPT)).expect("the reserved event");
        assert_eq!((m.id, &buf[..m.len]), (id::RESERVED, &b"abc"[..]));
        // The queue empty and the ring with room: the slot is in the
        // ring, with the queue's lock held until its commit.
        let m = c.send_recv(id::RESERVED, b"xyz", &mut buf, Some(PROMPT)).expect("reserved");
        assert_eq!(&buf[..m.len], b"zyx");
        let m = c.event_recv(&mut buf, Some(PROMPT)).expect("the second reserved event");
        assert_eq!((m.id, &buf[..m.len]), (id::RESERVED, &b"xyz"[..]));
        let stats = server.command(&format!("cstats {}", c.id()));
        let stats = Kv::parse(stats.strip_prefix("cstats ").expect("cstats"));
        assert_eq!(stats.u("events"), u64::from(n) + 2, "{stats}");
        assert_eq!(stats.u("events_backlogged"), 0, "{stats}");
        server.shutdown();
    }
}
