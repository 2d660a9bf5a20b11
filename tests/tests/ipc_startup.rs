//! Start-up order, with the server in a process of its own: a client
//! that waits for its server may wait as long as it takes (Legato's
//! `le_msg_OpenSessionSync`), apart from the handshake's own limit; a
//! wait with a limit ends with `NoServer`; and "forever"
//! (`Duration::MAX`) is a valid timeout on both sides, never a panic.

use std::sync::mpsc;
use std::time::Duration;

use ringlink_ipcc::{Client, Error};
use ringlink_tests::ipc::id;
use ringlink_tests::procs::{client_options, unique_addr, ServerProc};

const SERVER: &str = env!("CARGO_BIN_EXE_test_server");

/// Only catches hangs.
const PROMPT: Duration = Duration::from_secs(60);

ringlink_tests::transport_test! {
    fn a_client_waiting_forever_finds_a_server_started_later() {
        let addr = unique_addr("later");
        let mut opts = client_options(0);
        opts.server_wait = Duration::MAX;
        opts.timeout = Duration::MAX;
        let (tx, rx) = mpsc::channel();
        let waiting = {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let _ = tx.send(Client::connect(&addr, &opts));
            })
        };
        // Long enough that the client has retried against no server
        // several times (its backoff starts at 1 ms).
        std::thread::sleep(Duration::from_millis(300));
        assert!(rx.try_recv().is_err(), "connected with no server there");
        let server = ServerProc::spawn(SERVER, &addr, &[]);
        let mut c = rx
            .recv_timeout(PROMPT)
            .expect("the waiting client returns")
            .expect("connects once the server is up");
        waiting.join().expect("client thread");
        assert_eq!(c.server_credentials().pid, server.pid() as i32);
        let mut buf = [0u8; 16];
        let m = c
            .send_recv(id::ECHO, b"late", &mut buf, Some(Duration::MAX))
            .expect("echo");
        assert_eq!(&buf[..m.len], b"late");
        drop(c);
        server.shutdown();
    }
}

ringlink_tests::transport_test! {
    fn a_limited_wait_ends_with_no_server_whatever_the_handshake_timeout() {
        let addr = unique_addr("never");
        let mut opts = client_options(0);
        opts.server_wait = Duration::from_millis(200);
        opts.timeout = Duration::MAX;
        match Client::connect(&addr, &opts) {
            Err(Error::NoServer) => {}
            other => panic!("expected NoServer, got {:?}", other.map(|c| c.id())),
        }
        // Without waiting, at once, whatever the timeout.
        opts.wait_for_server = false;
        assert!(matches!(Client::connect(&addr, &opts), Err(Error::NoServer)));
    }
}

ringlink_tests::transport_test! {
    fn a_server_with_no_handshake_deadline_serves() {
        let addr = unique_addr("forever");
        let server = ServerProc::spawn(
            SERVER,
            &addr,
            &["--handshake-timeout-ms", &u64::MAX.to_string()],
        );
        let mut opts = client_options(0);
        opts.timeout = Duration::MAX;
        for _ in 0..3 {
            let mut c = Client::connect(&addr, &opts).expect("connect");
            let mut buf = [0u8; 16];
            let m = c
                .send_recv(id::ECHO, b"ok", &mut buf, Some(PROMPT))
                .expect("echo");
            assert_eq!(&buf[..m.len], b"ok");
        }
        server.shutdown();
    }
}

ringlink_tests::transport_test! {
    fn a_client_can_require_its_servers_user_and_a_taken_name_says_whose() {
        let addr = unique_addr("whose");
        let server = ServerProc::spawn(SERVER, &addr, &[]);
        let me = nix::unistd::geteuid().as_raw();
        let mut c = Client::connect(&addr, &client_options(0).server_uid(Some(me)))
            .expect("the server runs as our user");
        let mut buf = [0u8; 16];
        c.send_recv(id::ECHO, b"mine", &mut buf, Some(PROMPT)).expect("echo");
        match Client::connect(&addr, &client_options(0).server_uid(Some(me + 1))) {
            Err(Error::Io(e)) => {
                assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
                assert!(e.to_string().contains(&format!("uid {me}")), "{e}");
            }
            other => panic!("a server of another user was accepted: {:?}", other.map(|c| c.id())),
        }
        // A second server on the same abstract name is told whose it is.
        if let ringlink_common::ServiceAddr::Abstract(_) = addr {
            match ServerProc::try_spawn(SERVER, &addr, &[]) {
                Err(f) => assert!(
                    f.line.contains(&format!("a server runs there already (pid {}", server.pid())),
                    "{}",
                    f.line
                ),
                Ok(_) => panic!("a second server took the name"),
            }
        }
        drop(c);
        server.shutdown();
    }
}
