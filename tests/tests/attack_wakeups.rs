//! No peer can block the other side through an fd both hold.
//!
//! A file descriptor passed with `SCM_RIGHTS` shares its open file
//! description, and so its `O_NONBLOCK` flag, with the process that
//! sent it. A hostile client (the `freeze` mode of `test_client`,
//! written from the protocol documents) takes every fd its connection
//! brought in, drains and saturates it if it is an eventfd, and clears
//! `O_NONBLOCK` on it; then it raises every waiting flag a client may
//! raise and sends requests whose answers it never reads, so that the
//! server signals it again and again. Protocol version 1 passed the
//! rings' eventfds this way, and the server's next `write(2)` of 1 on
//! one blocked its only thread for good. Here a bystander must complete
//! every round trip within a second while the attacker is armed,
//! through a rate change (whose broadcast signals every waiting
//! client), and after the attacker is killed.

use std::time::Duration;

use ringlink_tests::attack::{self, Bystander, HANG};
use ringlink_tests::procs::{unique_addr, Helper, ServerProc};

const SERVER: &str = env!("CARGO_BIN_EXE_test_server");
const CLIENT: &str = env!("CARGO_BIN_EXE_test_client");

/// The bystander's deadline for each round trip.
const CALL: Duration = Duration::from_secs(1);

/// Runs the `freeze` attacker against a server started with `extra`,
/// with a strict bystander before, during and after it.
fn freeze_attack(tag: &str, extra: &[&str]) {
    let mut server = ServerProc::spawn(SERVER, &unique_addr(tag), extra);
    let mut bystander = Bystander::start_with(server.addr(), CALL);
    bystander.served(100);
    let mut args = vec!["freeze".to_owned()];
    args.extend(ringlink_tests::procs::addr_args(server.addr()));
    let mut attacker = Helper::spawn(CLIENT, &args);
    let armed = attacker.expect("armed", HANG);
    eprintln!("attacker: {armed}");
    // Armed: every signal the server sends it goes to a poisoned fd, or
    // fills a socket it never reads.
    bystander.served(2000);
    // A rate change broadcasts a wake-up to every waiting client.
    assert_eq!(server.command("rate off"), "ok");
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(server.command("rate normal"), "ok");
    bystander.served(2000);
    // The attacker gone: its connection is closed (the closing path
    // signals it too), and the service goes on.
    drop(attacker.kill());
    server.wait_stats("the attacker's end", HANG, |s| s.u("closed") >= 1);
    bystander.served(2000);
    attack::newcomer(server.addr());
    let report = bystander.finish();
    eprintln!(
        "bystander: {} round trips, median {:?}, max {:?}",
        report.requests, report.median, report.max
    );
}

ringlink_tests::transport_test! {
fn a_client_cannot_freeze_the_server_through_shared_fds() {
    freeze_attack("freeze", &[]);
}
}

/// Named rings (protocol version 1 passed their eventfds too): the same.
#[test]
fn a_client_cannot_freeze_a_named_ring_server() {
    let dir = ringlink_tests::tmp::TempDir::new("freeze-rings");
    let d = dir.path().to_str().expect("utf-8 path").to_owned();
    freeze_attack("freeze-named", &["--ring-dir", &d]);
}

/// A client that writes wake-up bytes as fast as its socket takes them
/// costs the server a bounded drain per loop turn: everyone else is
/// served, and so is the flooder (its own round trips go on).
#[test]
fn a_client_flooding_wake_ups_is_served_and_so_is_everyone_else() {
    let mut server = ServerProc::spawn(SERVER, &unique_addr("flood-wakes"), &[]);
    let mut bystander = Bystander::start_with(server.addr(), CALL);
    bystander.served(100);
    let mut args = vec!["flood-wakes".to_owned()];
    args.extend(ringlink_tests::procs::addr_args(server.addr()));
    let mut flooder = Helper::spawn(CLIENT, &args);
    flooder.expect("flooding", HANG);
    bystander.served(5000);
    let s = server.stats();
    assert_eq!(s.u("closed"), 0, "the flooder was dropped: {s}");
    drop(flooder.kill());
    bystander.served(1000);
    let report = bystander.finish();
    eprintln!(
        "bystander beside a wake-up flood: {} round trips, median {:?}, max {:?}",
        report.requests, report.median, report.max
    );
}

ringlink_tests::transport_test! {
/// A client that attaches, with `SCM_RIGHTS`, an fd whose last close
/// waits (a TCP socket lingering for two minutes) to every byte it
/// sends: a read that took the byte without room for the fd would have
/// the kernel close it in the server's loop thread. The server's sockets
/// refuse fds (`SO_PASSRIGHTS` off, Linux 6.16) and its reads reap them
/// where the kernel cannot refuse: the bystander is served throughout.
fn a_client_attaching_fds_whose_close_waits_cannot_hold_the_server() {
    let server = ServerProc::spawn(SERVER, &unique_addr("attach"), &[]);
    let mut bystander = Bystander::start_with(server.addr(), CALL);
    bystander.served(100);
    let mut args = vec!["attach-fds".to_owned()];
    args.extend(ringlink_tests::procs::addr_args(server.addr()));
    let mut attacker = Helper::spawn(CLIENT, &args);
    let said = attacker.expect("attached", HANG);
    eprintln!("attacker: {said}");
    bystander.served(2000);
    drop(attacker.kill());
    bystander.served(1000);
    attack::newcomer(server.addr());
    bystander.finish();
}
}

mod hostile_server {
    //! The mirror image: a server written from the protocol documents
    //! that, once a client is connected, poisons every fd it holds (its
    //! copies of the rings' memory, its own socket, and, over the socket
    //! transport, copies it kept of the client's ends of the socket
    //! pairs, whose open file descriptions the client shares), floods
    //! the client's stream socket with bytes, and never reads anything.
    //! Every client call must still return by its own deadline.

    use std::os::fd::{AsFd, AsRawFd, OwnedFd};
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc};
    use std::time::{Duration, Instant};

    use ringlink_channel::socket as seqpacket;
    use ringlink_common::fdpass::send_fds;
    use ringlink_common::wire::{ConnectResponse, Status, CONFIRM_LEN, SOCKET_FDS};
    use ringlink_common::Transport;
    use ringlink_ipcc::{Client, ConnectOptions, Error};
    use ringlink_tests::hostile;
    use ringlink_tests::ipc::PROTOCOL;

    const MAX: usize = 4096;

    /// The deadline of each client call.
    const CALL: Duration = Duration::from_millis(200);

    /// What the hostile server holds once the client is connected.
    struct Held {
        _rings: Option<[ringlink_ringbuf::Ring; 3]>,
        _fds: Vec<OwnedFd>,
    }

    /// The socket-transport handshake, honest, but keeping a copy of the
    /// client's ends of both socket pairs.
    fn socket_handshake(sock: &Arc<UnixStream>) -> Vec<OwnedFd> {
        use std::io::{Read, Write};
        hostile::read_request(sock);
        let (rr, rr_client) = seqpacket::pair().expect("pair");
        let (ev, ev_client) = seqpacket::pair().expect("pair");
        let answer = ConnectResponse {
            status: Status::Ok,
            connection_id: 7,
            max_message: MAX as u32,
            fd_count: SOCKET_FDS as u16,
            path_len: 0,
            request_capacity: 0,
            response_capacity: 0,
            event_capacity: 0,
        };
        let mut bytes = hostile::accepting(&answer);
        bytes.push(0); // flow-control level
        send_fds(sock, &bytes, &[rr_client.as_fd(), ev_client.as_fd()]).expect("answer");
        let mut c = [0u8; CONFIRM_LEN];
        (&**sock).read_exact(&mut c).expect("confirm");
        let _ = (&**sock).flush();
        vec![rr, ev, rr_client, ev_client]
    }

    fn mirror(transport: Transport) {
        let stop = Arc::new(AtomicBool::new(false));
        let (armed_tx, armed_rx) = mpsc::channel();
        let halt = stop.clone();
        let (addr, server) = hostile::listen("mirror", move |sock| {
            let held = match transport {
                Transport::Socket => Held {
                    _rings: None,
                    _fds: socket_handshake(&sock),
                },
                _ => Held {
                    _rings: Some(hostile::handshake(&sock, MAX)),
                    _fds: Vec::new(),
                },
            };
            // Every fd this thread's connection holds: poisoned.
            let mut did = Vec::new();
            let mine: Vec<i32> = match &held._rings {
                Some(r) => r
                    .iter()
                    .filter_map(|r| r.memory_fd())
                    .map(|f| f.as_raw_fd())
                    .collect(),
                None => held._fds.iter().map(|f| f.as_raw_fd()).collect(),
            };
            for fd in mine.into_iter().chain([sock.as_raw_fd()]) {
                did.push(ringlink_tests::raw::poison_fd(fd).expect("poison"));
            }
            armed_tx.send(did).expect("armed");
            // Flood the client's socket (levels over sockets, wake-ups
            // over rings), never reading: our socket is blocking now, so
            // send without waiting.
            let junk = [0u8; 4096];
            while !halt.load(Ordering::Relaxed) {
                let _ = ringlink_tests::raw::send_datagram(sock.as_fd(), &junk, libc::MSG_DONTWAIT);
                std::thread::sleep(Duration::from_micros(100));
            }
            drop(held);
        });
        let mut o = ConnectOptions::new(PROTOCOL);
        o.max_message = MAX as u32;
        o.transport = transport;
        o.timeout = Duration::from_secs(60);
        let mut client = Client::connect(&addr, &o).expect("connect");
        let did = armed_rx.recv().expect("armed");
        eprintln!("hostile server: {did:?}");
        let (done_tx, done_rx) = mpsc::channel();
        let (gone_tx, gone_rx) = mpsc::channel::<()>();
        let caller = std::thread::spawn(move || {
            let mut buf = vec![0u8; MAX];
            let report = |what: &str, r: String, t: Instant| {
                done_tx
                    .send((what.to_owned(), r, t.elapsed()))
                    .expect("report");
            };
            let t = Instant::now();
            let r = client.recv(&mut buf, Some(CALL));
            report("recv", format!("{r:?}"), t);
            let t = Instant::now();
            let r = client.event_recv(&mut buf, Some(CALL));
            report("event_recv", format!("{r:?}"), t);
            // Requests the server never reads, until there is no room.
            let t = Instant::now();
            let payload = vec![7u8; 1000];
            let r = loop {
                match client.send_timeout(1, &payload, Some(CALL)) {
                    Ok(_) if t.elapsed() < Duration::from_secs(30) => {}
                    other => break other,
                }
            };
            report("send_timeout", format!("{r:?}"), t);
            let t = Instant::now();
            let r = client.is_connected();
            report("is_connected", format!("{r:?}"), t);
            // Once the hostile server has gone, every call says so at
            // once (a wait with no deadline included).
            gone_rx.recv().expect("the server is gone");
            let t = Instant::now();
            let r = client.recv(&mut buf, None);
            report("recv after", format!("{r:?}"), t);
            drop(client);
        });
        for what in ["recv", "event_recv", "send_timeout", "is_connected"] {
            let (name, r, took) = done_rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("{what}: a call with a {CALL:?} timeout hung"));
            eprintln!("{name}: {r} after {took:?}");
            assert_eq!(name, what);
            match what {
                "is_connected" => assert_eq!(r, "true"),
                _ => assert!(r.contains("TimedOut"), "{what}: {r}"),
            }
        }
        stop.store(true, Ordering::Relaxed);
        server.join().expect("server");
        gone_tx.send(()).expect("tell the caller");
        let (name, r, took) = done_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("a recv with no deadline hung after the server left");
        eprintln!("{name}: {r} after {took:?}");
        assert!(r.contains("Disconnected"), "{name}: {r}");
        caller.join().expect("caller");
        let _ = Error::TimedOut;
    }

    /// A server that passes, in place of a ring's memfd, an fd whose
    /// last close waits (a TCP socket lingering for two minutes), and
    /// another that attaches one to its wake-up bytes: the client refuses
    /// the first at once (the fd is reaped, not closed in the caller's
    /// thread), and its socket refuses the second or reaps it.
    #[test]
    fn a_server_passing_fds_whose_close_waits_cannot_hold_the_client() {
        use std::io::Write;
        // In place of the request ring's memfd.
        let (addr, server) = hostile::listen("linger-memfd", |sock| {
            hostile::read_request(&sock);
            let (listener, tcp) = ringlink_tests::raw::lingering_socket(Duration::from_secs(120));
            let rings = hostile::rings(MAX, &sock);
            let mut fds = hostile::fds(&rings);
            fds[0] = tcp.as_fd();
            send_fds(
                &sock,
                &hostile::accepting(&hostile::answer_for(&rings, MAX)),
                &fds,
            )
            .expect("answer");
            // Our copy closed: the client's is the last.
            drop(fds);
            drop(tcp);
            hostile::hold(&sock);
            drop(listener);
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut o = ConnectOptions::new(PROTOCOL);
            o.max_message = MAX as u32;
            let t = Instant::now();
            let r = Client::connect(&addr, &o).map(drop);
            let _ = tx.send((r, t.elapsed()));
        });
        let (r, took) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("connect hung on the server's lingering fd");
        let r = r.map_err(|e| e.to_string());
        eprintln!("a lingering socket as ring memory: {r:?} after {took:?}");
        let r = format!("{r:?}");
        assert!(r.contains("not sealed"), "{r}");
        server.join().expect("server");

        // Attached to wake-up bytes after an honest handshake.
        let (armed_tx, armed_rx) = mpsc::channel();
        let (addr, server) = hostile::listen("linger-wake", move |sock| {
            let rings = hostile::handshake(&sock, MAX);
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
            let mut said = Vec::new();
            for _ in 0..10 {
                // A fresh one each time, our copy closed at once: the
                // client's would be the last.
                let r = ringlink_tests::raw::send_lingering(sock.as_fd(), &[1], &listener);
                said.push(format!("{:?}", r.map_err(|e| e.kind())));
                if r_failed(&said) {
                    let _ = (&*sock).write_all(&[1]);
                }
            }
            armed_tx.send(said).expect("armed");
            hostile::hold(&sock);
            drop((listener, rings));
        });
        let mut o = ConnectOptions::new(PROTOCOL);
        o.max_message = MAX as u32;
        let mut client = Client::connect(&addr, &o).expect("connect");
        let said = armed_rx.recv().expect("armed");
        eprintln!("wake-ups with a lingering fd attached: {said:?}");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; MAX];
            let t = Instant::now();
            let r = client.recv(&mut buf, Some(CALL));
            let _ = tx.send((format!("{r:?}"), t.elapsed()));
            drop(client);
        });
        let (r, took) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("recv hung on the server's lingering fds");
        eprintln!("recv: {r} after {took:?}");
        assert!(r.contains("TimedOut"), "{r}");
        server.join().expect("server");
    }

    /// Whether the last attempt to attach an fd failed (the client's
    /// socket refuses them).
    fn r_failed(said: &[String]) -> bool {
        said.last().is_some_and(|s| s.starts_with("Err"))
    }

    #[test]
    fn a_server_cannot_freeze_the_client_through_shared_fds_shm() {
        mirror(Transport::Shm);
    }

    #[test]
    fn a_server_cannot_freeze_the_client_through_shared_fds_socket() {
        mirror(Transport::Socket);
    }
}
