//! Why connections end, and the idle timeout, with the server in a
//! process of its own: `connection_closed` learns the reason from
//! `Connection::close_reason` (the client left, the server disconnected
//! it, a protocol violation, idle, shutdown), and a client that sends
//! nothing for `ServiceOptions::idle_timeout` is disconnected while a
//! busy one is not.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringlink_common::Transport;
use ringlink_ipcc::Error;
use ringlink_tests::attack::RawClient;
use ringlink_tests::ipc::id;
use ringlink_tests::procs::{connect, unique_addr, ServerProc};

const SERVER: &str = env!("CARGO_BIN_EXE_test_server");

/// Only catches hangs.
const PROMPT: Duration = Duration::from_secs(60);

/// Waits until the server has seen `n` connections close, and returns
/// their reasons.
fn closes(server: &mut ServerProc, n: usize) -> Vec<(u64, String)> {
    let deadline = Instant::now() + PROMPT;
    loop {
        let c = server.closes();
        if c.len() >= n {
            return c;
        }
        assert!(Instant::now() < deadline, "only {} closes: {c:?}", c.len());
        std::thread::sleep(Duration::from_millis(5));
    }
}

ringlink_tests::transport_test! {
    fn connection_closed_learns_why() {
        let addr = unique_addr("why");
        let mut server = ServerProc::spawn(SERVER, &addr, &["--log-faults"]);
        // The client leaves.
        let left = connect(&addr, 0);
        let left_id = left.id();
        drop(left);
        // The server disconnects it.
        let mut kicked = connect(&addr, 0);
        let mut buf = [0u8; 8];
        // Answered: the server has made the connection (`connect`
        // returns before it has).
        kicked
            .send_recv(id::ECHO, b"here", &mut buf, Some(PROMPT))
            .expect("echo");
        closes(&mut server, 1);
        assert!(server.command("disconnect-all").starts_with("ok"));
        assert!(matches!(kicked.recv(&mut buf, Some(PROMPT)), Err(Error::Disconnected)));
        // It breaks the protocol: a request over the negotiated maximum
        // (shared memory: the ring holds it), or a datagram shorter than
        // a header (sockets).
        let mut liar = RawClient::connect(&addr, ringlink_tests::transport::current());
        match ringlink_tests::transport::current() {
            Transport::Shm => {
                let big = vec![0u8; liar.max_message + 1];
                liar.send(id::ECHO, &big).expect("the ring takes it");
                liar.kick();
            }
            _ => liar.send_datagram(&[1, 2, 3]),
        }
        assert!(liar.server_closed(PROMPT), "the liar was not dropped");
        let seen = closes(&mut server, 3);
        assert_eq!(seen[0], (left_id, "left".to_owned()), "{seen:?}");
        assert_eq!(seen[1], (kicked.id(), "disconnected".to_owned()), "{seen:?}");
        assert_eq!(seen[2].1, "violation", "{seen:?}");
        // The service shuts down under a live client.
        let live = connect(&addr, 0);
        let (_, finished) = server.shutdown();
        let line = format!("closed {} shutdown", live.id());
        assert!(
            finished.stdout.lines().any(|l| l == line),
            "no `{line}` in {}",
            finished.stdout
        );
    }
}

ringlink_tests::transport_test! {
    fn an_idle_client_is_disconnected_and_a_busy_one_is_not() {
        let addr = unique_addr("idle");
        let mut server = ServerProc::spawn(SERVER, &addr, &["--idle-timeout-ms", "1000"]);
        let mut idle = connect(&addr, 0);
        let busy = connect(&addr, 0);
        let busy_id = busy.id();
        let stop = Arc::new(AtomicBool::new(false));
        // Round trips back to back until told to stop: never a second
        // without a request.
        let worker = {
            let stop = stop.clone();
            let mut busy = busy;
            std::thread::spawn(move || {
                let mut buf = [0u8; 8];
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    busy.send_recv(id::ECHO, b"busy", &mut buf, Some(PROMPT))
                        .expect("the busy client is served");
                    n += 1;
                }
                (busy, n)
            })
        };
        // The idle client hears of its end without asking for anything.
        let mut buf = [0u8; 8];
        match idle.recv(&mut buf, Some(PROMPT)) {
            Err(Error::Disconnected) => {}
            other => panic!("the idle client was not disconnected: {other:?}"),
        }
        stop.store(true, Ordering::Relaxed);
        let (mut busy, n) = worker.join().expect("busy client");
        assert!(n > 0);
        let m = busy
            .send_recv(id::ECHO, b"still", &mut buf, Some(PROMPT))
            .expect("the busy client is still connected");
        assert_eq!(&buf[..m.len], b"still");
        let seen = server.closes();
        assert_eq!(seen, vec![(idle.id(), "idle".to_owned())], "busy is {busy_id}");
        // A new client gets the whole timeout again: the timer runs only
        // while there are connections, and stops when they are gone.
        drop(busy);
        closes(&mut server, 2);
        let mut again = connect(&addr, 0);
        let m = again
            .send_recv(id::ECHO, b"again", &mut buf, Some(PROMPT))
            .expect("a new client is served");
        assert_eq!(&buf[..m.len], b"again");
        server.shutdown();
    }
}
