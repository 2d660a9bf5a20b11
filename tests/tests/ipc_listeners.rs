//! Listening on sockets someone else opened: a service started by socket
//! activation (the tests' `activate` binary plays systemd: the socket at
//! fd 3, `LISTEN_PID`, `LISTEN_FDS`) serves on it, in a process of its
//! own; an fd that is not a listening Unix stream socket is refused; and
//! `Service::from_listener` / `add_listener` take a listener made by the
//! application.

use std::os::unix::net::{UnixDatagram, UnixListener};
use std::time::Duration;

use ringlink_ipcc::{Client, Error};
use ringlink_ipcs::{Connection, Handler, Request, Service, ServiceAddr, ServiceOptions};
use ringlink_tests::ipc::id;
use ringlink_tests::procs::{client_options, connect, unique_addr, ServerProc};

const SERVER: &str = env!("CARGO_BIN_EXE_test_server");
const ACTIVATE: &str = env!("CARGO_BIN_EXE_activate");

/// Only catches hangs.
const PROMPT: Duration = Duration::from_secs(60);

fn echo(c: &mut Client, what: &[u8]) {
    let mut buf = [0u8; 64];
    let m = c
        .send_recv(id::ECHO, what, &mut buf, Some(PROMPT))
        .expect("echo");
    assert_eq!(&buf[..m.len], what);
}

ringlink_tests::transport_test! {
    fn a_socket_activated_service_serves_on_the_socket_it_was_handed() {
        let addr = unique_addr("activated");
        let server = ServerProc::spawn(ACTIVATE, &addr, &["--", SERVER, "--activated"]);
        let mut clients: Vec<Client> = (0..3).map(|_| connect(&addr, 0)).collect();
        for c in &mut clients {
            // The pid that bound the socket is the one that serves it.
            assert_eq!(c.server_credentials().pid, server.pid() as i32);
            echo(c, b"activated");
        }
        drop(clients);
        server.shutdown();
    }
}

#[test]
fn a_handed_fd_that_cannot_listen_is_refused() {
    for kind in ["--datagram", "--not-listening"] {
        let addr = unique_addr("not-listening");
        let refused = ServerProc::try_spawn(ACTIVATE, &addr, &[kind, "--", SERVER, "--activated"]);
        match refused {
            Err(f) => assert!(
                f.line.contains("not a listening Unix stream socket"),
                "{kind}: {}",
                f.line
            ),
            Ok(_) => panic!("{kind}: the service started"),
        }
    }
}

struct Echo;

impl Handler for Echo {
    fn message(&self, conn: &Connection, req: &Request<'_>) {
        let _ = conn.respond(req.seq(), req.id(), req.payload());
    }
}

#[test]
fn a_service_takes_clients_from_listeners_it_was_given() {
    let dir = ringlink_tests::tmp::TempDir::new("listeners");
    let first = dir.path().join("first.sock");
    let second = dir.path().join("second.sock");
    let mut service = Service::from_listener(
        UnixListener::bind(&first).expect("bind"),
        ringlink_tests::ipc::PROTOCOL,
        ServiceOptions::default(),
        Echo,
    )
    .expect("service");
    service
        .add_listener(UnixListener::bind(&second).expect("bind"))
        .expect("a second listener");
    // Not a listener: refused, the service unchanged.
    let (a, _b) = UnixDatagram::pair().expect("pair");
    let not = UnixListener::from(std::os::fd::OwnedFd::from(a));
    match service.add_listener(not) {
        Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}"),
        other => panic!("a datagram socket was taken: {other:?}"),
    }
    let handle = service.control_handle();
    let loop_thread = std::thread::spawn(move || service.run());
    let mut opts = client_options(0);
    opts.transport = ringlink_common::Transport::Shm;
    for path in [&first, &second] {
        let mut c = Client::connect(&ServiceAddr::Path(path.clone()), &opts).expect("connect");
        echo(&mut c, b"given");
    }
    handle.shutdown();
    loop_thread.join().expect("loop").expect("run");
    // The files were the application's: they stay.
    assert!(first.exists() && second.exists());
}
