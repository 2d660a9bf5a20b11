//! Fds inside messages (Legato's `le_msg_SetFd`/`le_msg_GetFd`, lwmsg's
//! fd fields), with the server in a process of its own, over both
//! transports: a request's fds reach the handler in order and
//! close-on-exec, a response's and an event's reach the client; each side
//! refuses before sending what its peer's terms do not take; and a
//! hostile client that breaks the server's terms (too many, too many in
//! flight, announced and not sent, sent for no message, a directory) is
//! dropped with the reason, its fds closed, nothing leaked, while a
//! bystander is served.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use ringlink_common::wire::{FdTerms, MsgHeader};
use ringlink_ipcc::{Client, Error, FdKind};
use ringlink_tests::attack::RawClient;
use ringlink_tests::ipc::id;
use ringlink_tests::procs::{client_options, connect, unique_addr, ServerProc};
use ringlink_tests::transport;

const SERVER: &str = env!("CARGO_BIN_EXE_test_server");

/// Only catches hangs.
const PROMPT: Duration = Duration::from_secs(60);

/// A memfd holding `text`.
fn memfd(text: &str) -> OwnedFd {
    let fd =
        nix::sys::memfd::memfd_create(c"ringlink-fds-test", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .expect("memfd");
    let mut f = std::fs::File::from(fd);
    f.write_all(text.as_bytes()).expect("write");
    f.into()
}

/// What the fd holds from its start (up to 64 bytes).
fn contents(fd: &OwnedFd) -> String {
    let mut buf = [0u8; 64];
    let n = nix::sys::uio::pread(fd, &mut buf, 0).expect("pread");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn cloexec(fd: &OwnedFd) -> bool {
    // SAFETY: F_GETFD on an fd we own.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
    flags >= 0 && flags & libc::FD_CLOEXEC != 0
}

fn client_taking(addr: &ringlink_common::ServiceAddr, per_message: u16) -> Client {
    let opts = client_options(0).accept_fds(FdTerms::per_message(per_message));
    Client::connect(addr, &opts).unwrap_or_else(|e| panic!("connect: {e}"))
}

fn ask(c: &mut Client, mode: &[u8], fds: &[BorrowedFd<'_>]) -> String {
    let seq = c
        .send_with_fds(id::FDS, mode, fds, Some(PROMPT))
        .expect("send with fds");
    let mut buf = [0u8; 1024];
    let m = c.recv(&mut buf, Some(PROMPT)).expect("the answer");
    assert_eq!(m.seq, seq);
    String::from_utf8_lossy(&buf[..m.len]).into_owned()
}

/// The server's open fds, once they settle at or below `at_most` (fds
/// are closed on a reaper thread, a moment after their connection).
fn settle_fds(server: &mut ServerProc, at_most: u64) -> u64 {
    let deadline = Instant::now() + PROMPT;
    loop {
        let n = server.stats().u("fds");
        if n <= at_most || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

ringlink_tests::transport_test! {
    fn fds_travel_with_requests_responses_and_events_in_order() {
        let addr = unique_addr("fds");
        let mut server = ServerProc::spawn(SERVER, &addr, &["--accept-fds", "4"]);
        let mut c = client_taking(&addr, 4);
        assert_eq!(c.server_fd_terms(), FdTerms::per_message(4));
        let files = [memfd("alpha"), memfd("beta"), memfd("gamma")];
        let fds: Vec<_> = files.iter().map(AsFd::as_fd).collect();

        // Requests: the handler reads them, in order.
        assert_eq!(ask(&mut c, b"r", &fds), "n=3|alpha|beta|gamma");
        assert_eq!(ask(&mut c, b"r", &fds[2..]), "n=1|gamma");
        assert_eq!(ask(&mut c, b"r", &[]), "n=0");

        // A response carrying them back: the client's own copies, in
        // order, close-on-exec; a second take has none.
        assert_eq!(ask(&mut c, b"e", &fds[..2]), "n=2|alpha|beta");
        let back = c.take_fds();
        assert_eq!(back.iter().map(contents).collect::<Vec<_>>(), ["alpha", "beta"]);
        assert!(back.iter().all(cloexec), "received fds are close-on-exec");
        assert!(c.take_fds().is_empty());

        // An event carrying them, before the response.
        assert_eq!(ask(&mut c, b"v", &fds[1..]), "n=2|beta|gamma");
        let mut buf = [0u8; 256];
        let ev = c.event_recv(&mut buf, Some(PROMPT)).expect("the event");
        assert_eq!((ev.id, ev.fds), (id::FDS, 2));
        let got = c.take_fds();
        assert_eq!(got.iter().map(contents).collect::<Vec<_>>(), ["beta", "gamma"]);

        // Fds the client does not take are closed by it (at its next
        // receive): the write end of a pipe, sent and sent back, is
        // closed everywhere once ours is, and the read end sees the end.
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        assert_eq!(ask(&mut c, b"e", &[w.as_fd()]), "n=1|");
        drop(w);
        assert_eq!(ask(&mut c, b"r", &[]), "n=0");
        let mut p = [nix::poll::PollFd::new(r.as_fd(), nix::poll::PollFlags::POLLIN)];
        let ready = nix::poll::poll(&mut p, nix::poll::PollTimeout::from(60_000u16)).expect("poll");
        assert_eq!(ready, 1, "the fd the client did not take is still open");
        let mut byte = [0u8; 1];
        assert_eq!(nix::unistd::read(&r, &mut byte).expect("read"), 0, "end of the pipe");
        let st = server.stats();
        assert_eq!(st.u("violations"), 0, "{st}");
        server.shutdown();
    }
}

ringlink_tests::transport_test! {
    fn fds_a_peer_does_not_take_are_refused_before_anything_is_sent() {
        let addr = unique_addr("fds-none");
        let server = ServerProc::spawn(SERVER, &addr, &[]);
        let mut c = connect(&addr, 0);
        let f = memfd("x");
        assert_eq!(c.server_fd_terms(), FdTerms::NONE);
        match c.send_with_fds(id::FDS, b"r", &[f.as_fd()], Some(PROMPT)) {
            Err(Error::FdsNotAccepted { count: 1, max: 0 }) => {}
            other => panic!("fds to a server that takes none: {other:?}"),
        }
        // Nothing went: the connection goes on, numbered from 1.
        let mut buf = [0u8; 16];
        let m = c.send_recv(id::ECHO, b"on", &mut buf, Some(PROMPT)).expect("echo");
        assert_eq!(m.seq, 1);
        server.shutdown();

        // A server that takes 2: 3 are refused; a client that takes none
        // gets its answer without them (refused on the server, said in
        // the response).
        let addr = unique_addr("fds-two");
        let server = ServerProc::spawn(SERVER, &addr, &["--accept-fds", "2"]);
        let mut c = connect(&addr, 0);
        let fds = [f.as_fd(), f.as_fd(), f.as_fd()];
        match c.send_with_fds(id::FDS, b"r", &fds, Some(PROMPT)) {
            Err(Error::FdsNotAccepted { count: 3, max: 2 }) => {}
            other => panic!("3 fds to a server that takes 2: {other:?}"),
        }
        let answer = ask(&mut c, b"e", &fds[..1]);
        assert!(answer.starts_with("refused") && answer.contains("accepts none"), "{answer}");
        server.shutdown();
    }
}

ringlink_tests::transport_test! {
    fn directories_and_path_fds_are_refused_unless_allowed() {
        let dir = std::fs::File::open("/").expect("open /");
        let path: OwnedFd = nix::fcntl::open(
            "/",
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .expect("O_PATH");
        let addr = unique_addr("fds-dirs");
        let server = ServerProc::spawn(SERVER, &addr, &["--accept-fds", "2"]);
        let mut c = client_taking(&addr, 2);
        let f = memfd("file");
        match c.send_with_fds(id::FDS, b"r", &[f.as_fd(), dir.as_fd()], Some(PROMPT)) {
            Err(Error::FdRefused { index: 1, kind: FdKind::Directory }) => {}
            other => panic!("a directory: {other:?}"),
        }
        match c.send_with_fds(id::FDS, b"r", &[path.as_fd()], Some(PROMPT)) {
            Err(Error::FdRefused { index: 0, kind: FdKind::Path }) => {}
            other => panic!("an O_PATH fd: {other:?}"),
        }
        assert_eq!(ask(&mut c, b"r", &[f.as_fd()]), "n=1|file");
        server.shutdown();

        // Allowed: a directory goes (read gives nothing, but it came).
        let addr = unique_addr("fds-dirs-ok");
        let mut server =
            ServerProc::spawn(SERVER, &addr, &["--accept-fds", "2", "--fd-dirs"]);
        let mut c = connect(&addr, 0);
        assert!(c.server_fd_terms().directories);
        assert_eq!(ask(&mut c, b"r", &[dir.as_fd()]), "n=1|");
        let st = server.stats();
        assert_eq!(st.u("violations"), 0, "{st}");
        server.shutdown();
    }
}

ringlink_tests::transport_test! {
    fn a_client_that_breaks_the_fd_terms_is_dropped_and_nothing_leaks() {
        let addr = unique_addr("fds-hostile");
        let mut server = ServerProc::spawn(
            SERVER,
            &addr,
            &["--accept-fds", "2", "--fd-in-flight", "4", "--log-faults"],
        );
        let mut bystander = connect(&addr, 0);
        let mut buf = [0u8; 16];
        let mut served = |n: usize| {
            for _ in 0..n {
                bystander
                    .send_recv(id::ECHO, b"by", &mut buf, Some(PROMPT))
                    .expect("the bystander is served");
            }
        };
        served(3);
        let baseline = server.stats().u("fds");
        let f = memfd("x");
        let dir = std::fs::File::open("/").expect("open /");
        let shm = transport::current() == ringlink_common::Transport::Shm;
        let header = |fds: u16| {
            MsgHeader {
                id: id::FDS,
                size: 0,
                error: 0,
                flags: 0,
                seq: 1,
            }
            .with_fds(fds)
        };
        type Lie<'a> = (&'a str, MsgHeader, Vec<BorrowedFd<'a>>, &'a str);
        let mut lies: Vec<Lie<'_>> = vec![
            ("three fds on one message", header(3), vec![f.as_fd(); 3], "3 fds on one message"),
            ("a directory", header(1), vec![dir.as_fd()], "a directory"),
            ("two announced, none sent", header(2), vec![], "announced 2"),
        ];
        if !shm {
            lies.push(("one sent, none announced", header(0), vec![f.as_fd()], "belong to no message"));
        }
        for (what, h, fds, says) in &lies {
            let mut liar = RawClient::connect(&addr, transport::current());
            // Over shared memory the fds go first: the server may refuse
            // them, and close the rings, before the record is pushed.
            if let Err(e) = liar.send_with_fds(*h, b"r", fds, 0x80) {
                assert!(shm && e.contains("closed"), "{what}: {e}");
            }
            liar.kick();
            assert!(liar.server_closed(PROMPT), "{what}: the liar was not dropped");
            served(3);
            let faults = server.faults();
            let last = &faults.last().expect("a fault").1;
            assert!(last.contains(says), "{what}: {faults:?}");
        }
        if shm {
            // Over shared memory, fds travel ahead of their messages on
            // the stream: more than the server keeps in flight, fds for
            // a channel the client does not send on, are refused there.
            let liar = RawClient::connect(&addr, transport::current());
            for _ in 0..3 {
                liar.send_stream_fds(0x80, &[f.as_fd(), f.as_fd()]).expect("sent");
            }
            assert!(liar.server_closed(PROMPT), "in flight: the liar was not dropped");
            let faults = server.faults();
            assert!(faults.last().expect("a fault").1.contains("in flight"), "{faults:?}");
            let liar = RawClient::connect(&addr, transport::current());
            liar.send_stream_fds(0x81, &[f.as_fd()]).expect("sent");
            assert!(liar.server_closed(PROMPT), "stray: the liar was not dropped");
            let faults = server.faults();
            assert!(faults.last().expect("a fault").1.contains("no message"), "{faults:?}");
            // Fds sent ahead of a message never published, then the
            // client gone: closed with its connection.
            let liar = RawClient::connect(&addr, transport::current());
            liar.send_stream_fds(0x80, &[f.as_fd(), f.as_fd()]).expect("sent");
            liar.kick();
            served(1);
            drop(liar);
        }
        // A request whose fds the handler never takes: closed for it.
        let mut c = client_taking(&addr, 2);
        for _ in 0..100 {
            assert_eq!(ask(&mut c, b"k", &[f.as_fd(), f.as_fd()]), "n=2");
        }
        drop(c);
        served(3);
        let now = settle_fds(&mut server, baseline);
        assert!(now <= baseline, "the server holds {now} fds, {baseline} before");
        let st = server.stats();
        assert_eq!(st.u("violations"), 0, "{st}");
        server.shutdown();
    }
}
