//! Calls from the server to its clients (lwmsg's peers call each other;
//! miniRPC's server issues calls), with the server in a process of its
//! own: a client serves them with its call handler from its own
//! receiving calls (a response wait, an event wait), and the server gets
//! the reply matched by number; a client without a handler answers
//! "unknown id"; one that does not receive makes the call time out, and
//! its late reply is dropped; one that leaves makes it `Disconnected`;
//! a reply to a call never made is a violation; a reply that waits for
//! room in the request channel leaves its client's receive asleep, and
//! goes once the server reads on, and a second call made meanwhile waits
//! behind it and is answered after it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringlink_common::wire::{MsgHeader, FLAG_REPLY};
use ringlink_ipcc::{Client, Error, Message};
use ringlink_tests::attack::RawClient;
use ringlink_tests::ipc::{id, Kv};
use ringlink_tests::procfs;
use ringlink_tests::procs::{connect, unique_addr, ServerProc};

const SERVER: &str = env!("CARGO_BIN_EXE_test_server");

/// Only catches hangs.
const PROMPT: Duration = Duration::from_secs(60);

/// A client receiving in a thread of its own (responses, or events)
/// until stopped, serving calls meanwhile.
struct Receiving {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<(Client, u64)>>,
}

impl Receiving {
    fn start(c: Client, events: bool) -> Receiving {
        Receiving::taking(c, events, None)
    }

    /// As [`start`](Self::start), and taking the responses of message id
    /// `take` (between event waits too: a call behind an unread response
    /// waits for that response's reader).
    fn taking(mut c: Client, events: bool, take: Option<i32>) -> Receiving {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let tid = procfs::gettid();
            let ticks = || procfs::thread_cpu_ticks(procfs::Proc::Current, tid).expect("own stat");
            let start = ticks();
            let mut buf = [0u8; 256];
            let taken = |r: &Result<Message, Error>| matches!(r, Ok(m) if Some(m.id) == take);
            while !s.load(Ordering::Relaxed) {
                if events && take.is_some() {
                    loop {
                        let r = c.recv(&mut buf, Some(Duration::ZERO));
                        if matches!(r, Err(Error::TimedOut)) {
                            break;
                        }
                        assert!(taken(&r), "the receiving client got {r:?}");
                    }
                }
                let r = if events {
                    c.event_recv(&mut buf, Some(Duration::from_millis(20)))
                } else {
                    c.recv(&mut buf, Some(Duration::from_millis(20)))
                };
                assert!(
                    matches!(r, Err(Error::TimedOut)) || taken(&r),
                    "the receiving client got {r:?}"
                );
            }
            (c, ticks() - start)
        });
        Receiving {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(self) -> Client {
        self.stop_counting().0
    }

    /// Stops it: the client, and the receiving thread's CPU time, in
    /// ticks of 10 ms.
    fn stop_counting(mut self) -> (Client, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("thread")
            .join()
            .expect("receiver")
    }
}

/// A client the server has made the connection of (`connect` returns
/// before it has): one round trip.
fn ready(addr: &ringlink_ipcs::ServiceAddr) -> Client {
    let mut c = connect(addr, 0);
    let mut buf = [0u8; 8];
    c.send_recv(id::ECHO, b"up", &mut buf, Some(PROMPT))
        .expect("echo");
    c
}

/// Holds `c`'s connection and fills its request channel: with the gate
/// closed, two `id::SLOW` requests run and wait at it, two wait in the
/// pool's queue, and the fifth holds the connection (`slow_started`: how
/// many the server started before, counted on); then one-way requests,
/// smaller and smaller (they get no response), fill the channel to the
/// last byte, past the server's stash. The gate stays closed.
fn hold_and_fill(server: &mut ServerProc, c: &mut Client, slow_started: &mut u64) {
    assert_eq!(server.command("gate close"), "ok");
    for i in 0..5u32 {
        c.send_timeout(id::SLOW, &i.to_le_bytes(), Some(PROMPT))
            .expect("slow request");
    }
    *slow_started += 2;
    let deadline = Instant::now() + PROMPT;
    while server.stats().u("slow_started") < *slow_started {
        assert!(Instant::now() < deadline, "the workers did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut filled = 0;
    for size in [4096usize, 1024, 64, 0] {
        let body = vec![0u8; size];
        let mut send = || match c.send_oneway(id::ECHO, &body, Some(Duration::ZERO)) {
            Ok(()) => true,
            Err(Error::TimedOut | Error::WouldBlock) => false,
            Err(e) => panic!("filling: {e:?}"),
        };
        let deadline = Instant::now() + PROMPT;
        loop {
            assert!(Instant::now() < deadline, "never full");
            if send() {
                filled += 1;
                continue;
            }
            // The server may still be taking the first ones into its
            // stash: full once it stays so.
            std::thread::sleep(Duration::from_millis(20));
            if !send() {
                break;
            }
            filled += 1;
        }
    }
    assert!(filled > 64, "only {filled} requests fit");
}

/// The number of the call a `call-start` command started.
fn started(server: &mut ServerProc, cmd: &str) -> u64 {
    let answer = server.command(cmd);
    match answer.strip_prefix("ok ").map(str::parse) {
        Some(Ok(n)) => n,
        _ => server.fail(&format!("`{cmd}` answered `{answer}`")),
    }
}

/// The bytes the server sent connection `cid` (calls included).
fn bytes_sent(server: &mut ServerProc, cid: u64) -> u64 {
    let l = server.command(&format!("cstats {cid}"));
    let kv = Kv::parse(l.strip_prefix("cstats ").unwrap_or_default());
    assert_eq!(kv.u("found"), 1, "{l}");
    kv.u("bytes_sent")
}

/// Polls `cond` every 5 ms until it holds (a hang: [`PROMPT`]).
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PROMPT;
    while !cond() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn reversing(c: &mut Client) {
    c.set_call_handler(|call| {
        let mut p = call.payload.to_vec();
        p.reverse();
        (0, p)
    });
}

ringlink_tests::transport_test! {
    fn the_server_calls_its_clients() {
        let addr = unique_addr("calls");
        let mut server = ServerProc::spawn(SERVER, &addr, &["--log-faults"]);
        // Served from a response wait, and from an event wait.
        for events in [false, true] {
            let mut c = ready(&addr);
            reversing(&mut c);
            let cid = c.id();
            let r = Receiving::start(c, events);
            for i in 0..20 {
                let word = format!("word{i}");
                let want: String = word.chars().rev().collect();
                assert_eq!(
                    server.command(&format!("call {cid} 42 {word} 60000")),
                    format!("reply id=42 error=0 payload={want}"),
                    "events={events}"
                );
            }
            let c = r.stop();
            let mut c = c;
            assert_eq!(c.stats(false).calls, 20);
        }
        // No handler: "unknown id", never silence.
        let plain = ready(&addr);
        let pid = plain.id();
        let r = Receiving::start(plain, false);
        assert_eq!(
            server.command(&format!("call {pid} 7 hi 60000")),
            format!("reply id=7 error={} payload=", ringlink_ipcs::ERROR_UNKNOWN_ID)
        );
        drop(r.stop());
        // Not receiving: the call times out; the late reply is dropped,
        // and the next call, once it receives, is answered.
        let mut idle = ready(&addr);
        reversing(&mut idle);
        let iid = idle.id();
        assert_eq!(server.command(&format!("call {iid} 1 late 200")), "error TimedOut");
        let r = Receiving::start(idle, false);
        assert_eq!(
            server.command(&format!("call {iid} 2 again 60000")),
            "reply id=2 error=0 payload=niaga"
        );
        drop(r.stop());
        // Gone before replying: Disconnected.
        let gone = ready(&addr);
        let gid = gone.id();
        let dropper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(gone);
        });
        assert_eq!(
            server.command(&format!("call {gid} 1 x 60000")),
            "error Disconnected"
        );
        dropper.join().expect("dropper");
        // Gone while its handler holds its connection (its requests,
        // served once the handler resumes, keep it open): Disconnected at
        // once all the same, not at the call's deadline.
        let mut held = ready(&addr);
        let hid = held.id();
        let mut slow_started = server.stats().u("slow_started");
        hold_and_fill(&mut server, &mut held, &mut slow_started);
        let dropper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(held);
        });
        let t0 = Instant::now();
        assert_eq!(
            server.command(&format!("call {hid} 1 x 60000")),
            "error Disconnected"
        );
        assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
        dropper.join().expect("dropper");
        assert_eq!(server.command("gate open"), "ok");
        assert!(server.faults().is_empty());
        // A reply to a call never made: a violation.
        let mut liar = RawClient::connect(&addr, ringlink_tests::transport::current());
        let h = MsgHeader {
            id: 1,
            size: 0,
            error: 0,
            flags: FLAG_REPLY,
            seq: 99,
        };
        liar.send_header(h, b"unasked").expect("sent");
        liar.kick();
        assert!(liar.server_closed(PROMPT), "the liar was not dropped");
        let faults = server.faults();
        assert_eq!(faults.len(), 1, "{faults:?}");
        server.shutdown();
    }
}

ringlink_tests::transport_test! {
    /// Blocking routes that call the client back, more of them than the
    /// pool takes at once: the connection is held, and the replies to the
    /// calls come behind requests the handler cannot take yet. The server
    /// reads them all the same (it keeps the requests in order aside), so
    /// every call is answered and every request too.
    fn calls_from_blocking_routes_under_back_pressure_are_answered() {
        let addr = unique_addr("callback");
        let server = ServerProc::spawn(SERVER, &addr, &[]);
        let mut c = ready(&addr);
        reversing(&mut c);
        let n = 12u32;
        for i in 0..n {
            c.send_timeout(id::CALLBACK, format!("cb{i}").as_bytes(), Some(PROMPT))
                .expect("send");
        }
        let mut buf = [0u8; 64];
        let mut answers: Vec<String> = (0..n)
            .map(|_| {
                let m = c.recv(&mut buf, Some(PROMPT)).expect("answered");
                assert_eq!(m.error, 0, "a call from a route failed");
                String::from_utf8_lossy(&buf[..m.len]).into_owned()
            })
            .collect();
        answers.sort();
        let mut want: Vec<String> = (0..n)
            .map(|i| format!("cb{i}").chars().rev().collect())
            .collect();
        want.sort();
        assert_eq!(answers, want);
        assert_eq!(c.stats(false).calls, u64::from(n));
        // From a handler, on the loop thread (which reads replies): refused
        // at once, not a wait of the whole timeout.
        let m = c
            .send_recv(id::CALL_INLINE, b"x", &mut buf, Some(PROMPT))
            .expect("answered");
        assert_eq!(&buf[..m.len], b"Deadlock");
        server.shutdown();
    }
}

ringlink_tests::transport_test! {
    /// A call whose reply waits for room in the request channel, over
    /// each transport: the server holds the client's requests (its two
    /// workers wait at the gate and the pool's queue is full, so the
    /// connection is held and the server stops reading it once its stash
    /// is full), the client fills its request channel, and the server
    /// calls it with a short timeout. The client serves the call; its
    /// reply waits, and its receive (of responses, then of events) sleeps
    /// meanwhile, on the request channel's room too, instead of spinning.
    /// Once the gate opens and the server reads on, the late reply goes
    /// (the server drops it: its call timed out), and the next call is
    /// answered, its reply sent after the first one.
    fn a_reply_that_waits_for_room_sleeps_then_goes() {
        const HOLD: Duration = Duration::from_millis(1500);
        let addr = unique_addr("reply-room");
        let mut server = ServerProc::spawn(SERVER, &addr, &["--log-faults"]);
        let mut slow_started = 0;
        for events in [false, true] {
            let mut c = ready(&addr);
            reversing(&mut c);
            let cid = c.id();
            hold_and_fill(&mut server, &mut c, &mut slow_started);
            // The slow requests' responses, once the gate opens, are taken.
            let r = Receiving::taking(c, events, Some(id::SLOW));
            // The reply cannot go: the call times out.
            assert_eq!(
                server.command(&format!("call {cid} 42 first {}", HOLD.as_millis())),
                "error TimedOut",
                "events={events}"
            );
            assert_eq!(server.command("gate open"), "ok");
            // The late reply goes once the server reads on, then this one.
            assert_eq!(
                server.command(&format!("call {cid} 43 second 60000")),
                "reply id=43 error=0 payload=dnoces",
                "events={events}"
            );
            let (mut c, ticks) = r.stop_counting();
            assert_eq!(c.stats(false).calls, 2, "events={events}");
            // A receive that spun would take the whole hold: 150 ticks of
            // 10 ms.
            assert!(
                ticks < 40,
                "events={events}: the receive spun: {ticks} ticks of CPU over {HOLD:?}"
            );
        }
        server.shutdown();
    }
}

ringlink_tests::transport_test! {
    /// Two calls held at once, over each transport: the connection held
    /// and the request channel full (as in the test above), the server
    /// makes a call from a thread of its own, and the client serves it; its
    /// reply waits for room. A second call, from another thread, then waits
    /// at the front of the response channel: the client cannot serve it
    /// before the first reply has gone, and its receive (of responses, then
    /// of events) sleeps meanwhile. Once the gate opens and the server
    /// reads on, the first reply goes and its call returns it, then the
    /// second call is served and answered.
    fn two_calls_held_at_once_are_answered_in_order() {
        const HOLD: Duration = Duration::from_millis(1500);
        let addr = unique_addr("calls-held");
        let mut server = ServerProc::spawn(SERVER, &addr, &["--log-faults"]);
        let mut slow_started = 0;
        for events in [false, true] {
            let mut c = ready(&addr);
            // Reversing, and saying what it served, in order.
            let served = Arc::new(Mutex::new(Vec::<String>::new()));
            let log = served.clone();
            c.set_call_handler(move |call| {
                let mut p = call.payload.to_vec();
                log.lock()
                    .expect("log")
                    .push(String::from_utf8_lossy(&p).into_owned());
                p.reverse();
                (0, p)
            });
            let served = move || served.lock().expect("log").clone();
            let cid = c.id();
            hold_and_fill(&mut server, &mut c, &mut slow_started);
            // The slow requests' responses, once the gate opens, are taken.
            let r = Receiving::taking(c, events, Some(id::SLOW));
            // Long timeouts: both calls wait out the hold.
            let first = started(&mut server, &format!("call-start {cid} 42 first 60000"));
            wait_until("the first call served", || served() == ["first"]);
            // The first call's reply waits for room: the second call stays
            // in the response channel (it went: the server sent its bytes).
            let before = bytes_sent(&mut server, cid);
            let second = started(&mut server, &format!("call-start {cid} 43 second 60000"));
            wait_until("the second call sent", || bytes_sent(&mut server, cid) > before);
            std::thread::sleep(HOLD);
            assert_eq!(served(), ["first"], "events={events}: served behind a waiting reply");
            assert_eq!(server.command("gate open"), "ok");
            assert_eq!(
                server.command(&format!("call-wait {first}")),
                "reply id=42 error=0 payload=tsrif",
                "events={events}"
            );
            assert_eq!(
                server.command(&format!("call-wait {second}")),
                "reply id=43 error=0 payload=dnoces",
                "events={events}"
            );
            assert_eq!(served(), ["first", "second"], "events={events}");
            let (mut c, ticks) = r.stop_counting();
            assert_eq!(c.stats(false).calls, 2, "events={events}");
            // A receive that spun would take the whole hold: 150 ticks of
            // 10 ms.
            assert!(
                ticks < 40,
                "events={events}: the receive spun: {ticks} ticks of CPU over {HOLD:?}"
            );
            // The connection goes on: a call answered at once (the slow
            // responses not yet taken still are).
            let r = Receiving::taking(c, events, Some(id::SLOW));
            assert_eq!(
                server.command(&format!("call {cid} 44 third 60000")),
                "reply id=44 error=0 payload=driht",
                "events={events}"
            );
            let mut c = r.stop();
            assert_eq!(c.stats(false).calls, 3, "events={events}");
        }
        assert!(server.faults().is_empty());
        server.shutdown();
    }
}
