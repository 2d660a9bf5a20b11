//! Clients beyond `max_clients` wait for a slot instead of being refused
//! (`ServiceOptions::queue_when_full`, lwmsg's listen queue), with the
//! server in a process of its own: a waiting client connects when a
//! connection ends; one still waiting at its handshake deadline gets
//! `TooManyClients`.

use std::sync::mpsc;
use std::time::Duration;

use ringlink_common::wire::Status;
use ringlink_ipcc::{Client, Error};
use ringlink_tests::ipc::id;
use ringlink_tests::procs::{client_options, connect, unique_addr, ServerProc};

const SERVER: &str = env!("CARGO_BIN_EXE_test_server");

/// Only catches hangs.
const PROMPT: Duration = Duration::from_secs(60);

fn echo(c: &mut Client) {
    let mut buf = [0u8; 16];
    let m = c
        .send_recv(id::ECHO, b"in", &mut buf, Some(PROMPT))
        .expect("echo");
    assert_eq!(&buf[..m.len], b"in");
}

ringlink_tests::transport_test! {
    fn a_client_beyond_the_limit_waits_for_a_slot() {
        let addr = unique_addr("queue-full");
        let server = ServerProc::spawn(SERVER, &addr, &["--max-clients", "2", "--queue-when-full"]);
        let mut a = connect(&addr, 0);
        let mut b = connect(&addr, 0);
        echo(&mut a);
        echo(&mut b);
        let (tx, rx) = mpsc::channel();
        let waiting = {
            // Made here: the transport under test is this thread's.
            let (addr, opts) = (addr.clone(), client_options(0));
            std::thread::spawn(move || {
                let _ = tx.send(Client::connect(&addr, &opts));
            })
        };
        // Refused, it would be back at once.
        std::thread::sleep(Duration::from_millis(300));
        if let Ok(r) = rx.try_recv() {
            panic!("the third client did not wait: {:?}", r.map(|c| c.id()));
        }
        drop(a);
        let mut c = rx
            .recv_timeout(PROMPT)
            .expect("the third client returns")
            .expect("it connects once a slot frees");
        waiting.join().expect("client thread");
        echo(&mut c);
        echo(&mut b);
        drop((b, c));
        server.shutdown();
    }
}

ringlink_tests::transport_test! {
    fn a_client_still_waiting_at_its_deadline_is_refused() {
        let addr = unique_addr("queue-late");
        let server = ServerProc::spawn(
            SERVER,
            &addr,
            &["--max-clients", "1", "--queue-when-full", "--handshake-timeout-ms", "300"],
        );
        let mut a = connect(&addr, 0);
        echo(&mut a);
        match Client::connect(&addr, &client_options(0)) {
            Err(Error::Rejected(Status::TooManyClients)) => {}
            other => panic!("expected TooManyClients, got {:?}", other.map(|c| c.id())),
        }
        echo(&mut a);
        server.shutdown();
    }
}
