//! A blocking call can be interrupted (for Ctrl-C in a program that
//! blocks in the client): `Client::interrupter` makes the waiting call
//! return `Interrupted`, from another thread (or a signal handler: it
//! only stores a flag and writes to an eventfd), with nothing lost and
//! the client usable afterwards. The server is a process of its own.

use std::sync::mpsc;
use std::time::Duration;

use ringlink_ipcc::Error;
use ringlink_tests::ipc::id;
use ringlink_tests::procs::{connect, unique_addr, ServerProc};

const SERVER: &str = env!("CARGO_BIN_EXE_test_server");

/// Only catches hangs.
const PROMPT: Duration = Duration::from_secs(60);

ringlink_tests::transport_test! {
    fn a_waiting_call_is_interrupted_and_the_client_goes_on() {
        let addr = unique_addr("interrupt");
        let server = ServerProc::spawn(SERVER, &addr, &[]);
        let mut c = connect(&addr, 0);
        let stop = c.interrupter();
        let (tx, rx) = mpsc::channel();
        let waiting = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let r = c.event_recv(&mut buf, None).map(|m| m.id);
            let _ = tx.send(r);
            c
        });
        // Waiting, with nothing to come: only the interruption ends it.
        std::thread::sleep(Duration::from_millis(100));
        assert!(rx.try_recv().is_err(), "event_recv returned with nothing to return");
        stop.interrupt();
        match rx.recv_timeout(PROMPT) {
            Ok(Err(Error::Interrupted)) => {}
            other => panic!("expected Interrupted, got {other:?}"),
        }
        let mut c = waiting.join().expect("client thread");
        // Usable afterwards; the interruption was used up.
        let mut buf = [0u8; 16];
        let m = c
            .send_recv(id::ECHO, b"still", &mut buf, Some(PROMPT))
            .expect("echo after the interruption");
        assert_eq!(&buf[..m.len], b"still");
        assert!(matches!(
            c.event_recv(&mut buf, Some(Duration::from_millis(50))),
            Err(Error::TimedOut)
        ));
        // Asked before a call: that call returns at once, waiting for
        // nothing, and a response waiting is not lost.
        c.send(id::ECHO, b"kept").expect("send");
        stop.interrupt();
        match c.event_recv(&mut buf, None) {
            Err(Error::Interrupted) => {}
            other => panic!("expected Interrupted, got {other:?}"),
        }
        let m = c.recv(&mut buf, Some(PROMPT)).expect("the response is still there");
        assert_eq!(&buf[..m.len], b"kept");
        drop(c);
        server.shutdown();
    }
}
