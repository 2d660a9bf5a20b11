//! ringlink's client calling an unmodified libqb server: a C program
//! built on the system's libqb (`tests/c/qb_server.c`), through the
//! scenarios of libqb's own acceptance tests from the client's side:
//! requests of every size, a reply sent only as an event, events in bulk
//! and thirty thousand of them, flow control at `Off` and `Off2`, several
//! responses to one request, the enforced buffer size, a disconnect from
//! the server's handler, the server leaving and dying (a call waiting
//! with no timeout returns: libqb's own client hangs there). Then hostile
//! "libqb servers" written here, whose answers name rings where they must
//! not be.
//!
//! Needs Debian's `libqb-dev` (see `ringlink_tests::qbc`).

use std::time::{Duration, Instant};

use ringlink_ipcc::{Client, ConnectOptions, Error};
use ringlink_tests::ipc;
use ringlink_tests::procs::Helper;
use ringlink_tests::qbc;

const T: Duration = Duration::from_secs(60);

const CALL: Option<Duration> = Some(Duration::from_secs(30));

/// A libqb server process serving `name` over libqb transport `t`
/// (`shm` or `socket`).
fn qb_server(t: &str, name: &str, extra: &[&str]) -> Helper {
    let bin = qbc::build("qb_server", env!("CARGO_TARGET_TMPDIR"));
    let mut args = vec![name, t];
    args.extend_from_slice(extra);
    let mut s = Helper::spawn(bin.to_str().expect("utf-8 path"), &args);
    s.expect("ready", T);
    s
}

fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "rl-qbc-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn connect(name: &str) -> Client {
    Client::connect_libqb(name, &opts()).unwrap_or_else(|e| panic!("connect to {name}: {e}"))
}

fn opts() -> ConnectOptions {
    let mut o = ConnectOptions::new("");
    o.wait_for_server = true;
    o.timeout = Duration::from_secs(10);
    o.server_wait = o.timeout;
    o
}

fn command(s: &mut Helper, cmd: &str) -> String {
    s.send(cmd);
    let l = s.line(T);
    match l.strip_prefix("ok") {
        Some(rest) => rest.trim().to_owned(),
        None => s.fail(&format!("`{cmd}` answered `{l}`")),
    }
}

/// libqb's connection directories of server `pid`.
fn dirs_of(pid: u32) -> usize {
    let prefix = format!("qb-{pid}-");
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .count()
        })
        .unwrap_or(0)
}

fn pattern(size: usize) -> Vec<u8> {
    (0..size).map(|k| (k * 7 + size) as u8).collect()
}

ringlink_tests::libqb_test!(requests_of_every_size_and_a_reply_sent_only_as_an_event);
fn requests_of_every_size_and_a_reply_sent_only_as_an_event(t: &str) {
    if !qbc::require("requests_of_every_size_and_a_reply_sent_only_as_an_event") {
        return;
    }
    let name = unique("sizes");
    let mut s = qb_server(t, &name, &[]);
    let mut c = connect(&name);
    assert_eq!(c.server_credentials().pid, s.pid() as i32);
    let max = c.max_message();
    let mut buf = vec![0u8; max];
    let mut size = 32;
    let mut sizes = Vec::new();
    while size < max {
        sizes.push(size);
        size *= 2;
    }
    sizes.push(max);
    for &n in &sizes {
        let p = pattern(n);
        let m = c
            .send_recv(ipc::id::ECHO, &p, &mut buf, CALL)
            .unwrap_or_else(|e| panic!("{n} bytes: {e}"));
        assert_eq!((m.id, m.len, m.error), (ipc::id::ECHO, n, 0));
        assert!(buf[..n] == p[..], "{n} bytes differ");
        // And blocking, without a timeout. The send waits for room: a
        // libqb server frees a request's chunk after it has answered, so
        // the answer can come before the room.
        c.send_timeout(ipc::id::ECHO, &p, CALL).expect("send");
        let m = c.recv(&mut buf, None).expect("recv");
        assert_eq!(m.len, n);
    }
    // Sent only as an event: send_recv times out, the event comes.
    match c.send_recv(
        ipc::id::EVENT_ONLY,
        b"only",
        &mut buf,
        Some(Duration::from_millis(200)),
    ) {
        Err(Error::TimedOut) => {}
        other => panic!("an event-only reply: {other:?}"),
    }
    let e = c.event_recv(&mut buf, CALL).expect("the event");
    assert_eq!((e.id, &buf[..e.len]), (ipc::id::EVENT_ONLY, &b"only"[..]));
    // Three responses to one request, taken one by one.
    c.send(9, b"x").expect("send");
    for id in [91, 92, 93] {
        assert_eq!(c.recv(&mut buf, CALL).expect("recv").id, id);
    }
    assert_eq!(
        command(&mut s, "stats"),
        format!("conns=1 msgs={}", 2 * sizes.len() + 2)
    );
    drop(c);
    command(&mut s, "exit");
}

ringlink_tests::libqb_test!(ten_events_and_thirty_thousand_with_some_at_the_maximum);
fn ten_events_and_thirty_thousand_with_some_at_the_maximum(t: &str) {
    if !qbc::require("ten_events_and_thirty_thousand_with_some_at_the_maximum") {
        return;
    }
    let name = unique("events");
    let mut s = qb_server(t, &name, &[]);
    let mut c = connect(&name);
    let max = c.max_message();
    let mut buf = vec![0u8; max];
    for (count, big_every) in [(10u64, 0u64), (30_000, 1000)] {
        let mut p = Vec::new();
        p.extend_from_slice(&count.to_le_bytes());
        p.extend_from_slice(&big_every.to_le_bytes());
        c.send_recv(ipc::id::BURST, &p, &mut buf, CALL)
            .expect("burst");
        for i in 0..count {
            let e = c
                .event_recv(&mut buf, CALL)
                .unwrap_or_else(|e| panic!("event {i} of {count}: {e}"));
            let want = if big_every != 0 && (i + 1) % big_every == 0 {
                max
            } else {
                (8 + (i * 37) % 2041) as usize
            };
            assert_eq!((e.id, e.len), (ipc::id::BURST_EVENT, want), "event {i}");
            assert_eq!(&buf[..8], &i.to_le_bytes(), "event {i}");
            assert!(
                (8..e.len).all(|k| buf[k] == ((i as usize * 31 + k * 7) & 0xff) as u8),
                "event {i} contents"
            );
        }
    }
    drop(c);
    command(&mut s, "exit");
}

ringlink_tests::libqb_test!(flow_control_at_off_and_off2);
fn flow_control_at_off_and_off2(t: &str) {
    if !qbc::require("flow_control_at_off_and_off2") {
        return;
    }
    let name = unique("fc");
    let mut s = qb_server(t, &name, &[]);
    let mut c = connect(&name);
    let mut buf = vec![0u8; 64];
    command(&mut s, "rate off");
    match c.send(ipc::id::ECHO, b"held") {
        Err(Error::WouldBlock) => {}
        other => panic!("a send at Off: {other:?}"),
    }
    // A send that waits goes once the server reads again.
    let lift = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        command(&mut s, "rate normal");
        s
    });
    let t0 = Instant::now();
    c.send_timeout(ipc::id::ECHO, b"waited", CALL)
        .expect("a waiting send");
    let mut s = lift.join().expect("join");
    assert!(
        t0.elapsed() >= Duration::from_millis(100),
        "it did not wait"
    );
    assert_eq!(c.recv(&mut buf, CALL).expect("recv").len, 6);
    // Off2 holds only clients whose threshold is 2.
    command(&mut s, "rate off2");
    c.send(ipc::id::ECHO, b"threshold 1")
        .expect("a send at Off2, threshold 1");
    let mut o = opts();
    o.fc_enable_max = 2;
    let mut c2 = Client::connect_libqb(&name, &o).expect("connect");
    // Connections made later start at level 0 in libqb: set it again.
    command(&mut s, "rate normal");
    command(&mut s, "rate off2");
    match c2.send(ipc::id::ECHO, b"held") {
        Err(Error::WouldBlock) => {}
        other => panic!("a send at Off2, threshold 2: {other:?}"),
    }
    command(&mut s, "rate normal");
    assert_eq!(c.recv(&mut buf, CALL).expect("recv").len, 11);
    c2.send_recv(ipc::id::ECHO, b"ok", &mut buf, CALL)
        .expect("after Off2");
    drop((c, c2));
    command(&mut s, "exit");
}

ringlink_tests::libqb_test!(the_enforced_buffer_size_and_a_disconnect_from_the_handler);
fn the_enforced_buffer_size_and_a_disconnect_from_the_handler(t: &str) {
    if !qbc::require("the_enforced_buffer_size_and_a_disconnect_from_the_handler") {
        return;
    }
    let name = unique("enforce");
    let mut s = qb_server(t, &name, &["200000"]);
    let mut c = connect(&name);
    assert_eq!(c.max_message(), 200_000 - 24);
    let mut buf = vec![0u8; c.max_message()];
    let p = pattern(c.max_message());
    c.send_recv(ipc::id::ECHO, &p, &mut buf, CALL)
        .expect("the largest");
    c.send(ipc::id::DISCONNECT, b"").expect("send");
    match c.recv(&mut buf, CALL) {
        Err(Error::Disconnected) => {}
        other => panic!("after the server disconnected us: {other:?}"),
    }
    assert!(!c.is_connected());
    drop(c);
    command(&mut s, "exit");
}

ringlink_tests::libqb_test!(a_server_that_leaves_or_dies_is_seen_even_by_a_call_without_timeout);
fn a_server_that_leaves_or_dies_is_seen_even_by_a_call_without_timeout(t: &str) {
    if !qbc::require("a_server_that_leaves_or_dies_is_seen_even_by_a_call_without_timeout") {
        return;
    }
    for how in ["exit", "crash"] {
        let name = unique(&format!("{how}-{t}"));
        let mut s = qb_server(t, &name, &[]);
        let pid = s.pid();
        let mut c = connect(&name);
        let mut buf = vec![0u8; 64];
        c.send_recv(ipc::id::ECHO, b"up", &mut buf, CALL)
            .expect("echo");
        // A request that gets no response, then a wait with no timeout.
        c.send(ipc::id::EVENT_ONLY, b"none").expect("send");
        let waiting = std::thread::spawn(move || {
            let r = c.recv(&mut buf, None);
            (r.map(|m| m.len), c)
        });
        std::thread::sleep(Duration::from_millis(100));
        s.send(how);
        let deadline = Instant::now() + T;
        while !waiting.is_finished() {
            assert!(
                Instant::now() < deadline,
                "{how}: recv(None) never returned"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let (r, c) = waiting.join().expect("join");
        assert!(matches!(r, Err(Error::Disconnected)), "{how}: {r:?}");
        assert!(!c.is_connected(), "{how}");
        drop(c);
        let _ = s.wait(T);
        if how == "exit" {
            assert_eq!(dirs_of(pid), 0, "the server's files");
        }
        // After a crash libqb leaves its directory (ringlink's own server
        // removes such leftovers when it starts listening): the test
        // removes the dead server's itself.
        remove_dirs_of(pid);
        assert_eq!(dirs_of(pid), 0, "{how}: the dead server's files");
    }
}

/// Removes libqb's connection directories of server `pid`, which is
/// dead, with the files in them.
fn remove_dirs_of(pid: u32) {
    let prefix = format!("qb-{pid}-");
    let Ok(dirs) = std::fs::read_dir("/dev/shm") else {
        return;
    };
    for dir in dirs.flatten() {
        if !dir.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        for file in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = std::fs::remove_file(file.path());
        }
        let _ = std::fs::remove_dir(dir.path());
    }
}

/// A hostile "libqb server" on `name`: accepts one client, reads its
/// request and answers with `answer`.
fn fake_server(
    name: &str,
    answer: ringlink_common::qb::ConnResponse,
) -> std::thread::JoinHandle<()> {
    use std::io::{Read, Write};
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(
        ringlink_common::qb::abstract_name(name.as_bytes()).expect("name"),
    )
    .expect("addr");
    let l = std::os::unix::net::UnixListener::bind_addr(&addr).expect("bind");
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        let mut req = [0u8; 24];
        s.read_exact(&mut req).expect("request");
        s.write_all(&answer.encode()).expect("answer");
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    })
}

#[test]
fn a_hostile_server_cannot_point_the_client_anywhere() {
    use ringlink_common::qb::{ConnResponse, QbTransport};
    if !qbc::require("a_hostile_server_cannot_point_the_client_anywhere") {
        return;
    }
    let tmp = ringlink_tests::tmp::TempDir::new("qb-hostile");
    // A directory that looks like libqb's, with a symlink for a file.
    let dir = std::path::PathBuf::from(format!("/dev/shm/qb-{}-0-0-hostil", std::process::id()));
    std::fs::create_dir(&dir).expect("dir");
    let _cleanup = RemoveDir(dir.clone());
    std::os::unix::fs::symlink(tmp.path().join("victim"), dir.join("qb-request-x-header"))
        .expect("symlink");
    std::fs::write(tmp.path().join("victim"), b"precious").expect("victim");
    let path = |p: &std::path::Path| p.as_os_str().as_encoded_bytes().to_vec();
    let cases: [(&str, Vec<u8>); 4] = [
        ("outside /dev/shm", path(&tmp.path().join("qb-request-x"))),
        ("a relative name", b"qb-request-x".to_vec()),
        (
            "a parent directory",
            b"/dev/shm/qb-1/../../etc/qb-request-x".to_vec(),
        ),
        ("a symlink", path(&dir.join("qb-request-x"))),
    ];
    for (what, name_field) in cases {
        let name = unique("hostile");
        let answer = ConnResponse {
            error: 0,
            transport: QbTransport::Shm,
            max_msg_size: 65_560,
            cookie: 0,
            request: name_field.clone(),
            response: name_field.clone(),
            event: name_field,
        };
        let server = fake_server(&name, answer);
        match Client::connect_libqb(&name, &opts()) {
            Err(Error::Protocol(v)) => eprintln!("{what}: refused: {v}"),
            other => panic!("{what}: {:?}", other.map(|c| c.id())),
        }
        server.join().expect("server");
    }
    // The socket transport: the control file where it must not be, or
    // sockets named outside its directory.
    std::fs::write(dir.join("qb-control-x"), [0u8; 24]).expect("control file");
    let control = path(&dir.join("qb-control-x"));
    let socket_cases: [(&str, Vec<u8>, Vec<u8>); 3] = [
        (
            "a control file outside /dev/shm",
            path(&tmp.path().join("qb-control-x")),
            path(&dir.join("qb-x")),
        ),
        (
            "a symlinked control file",
            path(&dir.join("qb-request-x-header")),
            path(&dir.join("qb-x")),
        ),
        (
            "sockets named elsewhere",
            control,
            b"/run/some-other-service".to_vec(),
        ),
    ];
    for (what, request, response) in socket_cases {
        let name = unique("hostile-socket");
        let answer = ConnResponse {
            error: 0,
            transport: QbTransport::Socket,
            max_msg_size: 65_560,
            cookie: 0,
            request,
            response,
            event: Vec::new(),
        };
        let server = fake_server(&name, answer);
        match Client::connect_libqb(&name, &opts()) {
            Err(Error::Protocol(v)) => eprintln!("{what}: refused: {v}"),
            other => panic!("{what}: {:?}", other.map(|c| c.id())),
        }
        server.join().expect("server");
    }
    assert_eq!(
        std::fs::read(tmp.path().join("victim")).expect("victim"),
        b"precious",
        "the symlink's target was touched"
    );
}

/// A hostile "libqb server" that names the rings of another live
/// connection of this user's (a real libqb server's, which chowns its
/// rings to its client, so they pass the owner checks): the client must
/// refuse them (`ref_count` 2, not a fresh ring), take nothing from them
/// and leave the other connection working; and names in more than one
/// directory are refused as such.
#[test]
fn a_hostile_server_cannot_hand_over_another_connections_rings() {
    use ringlink_common::qb::{ConnResponse, QbTransport, RESPONSE_HEADER_LEN};
    if !qbc::require("a_hostile_server_cannot_hand_over_another_connections_rings") {
        return;
    }
    let name = unique("victim");
    let mut s = qb_server("shm", &name, &[]);
    let mut victim = connect(&name);
    let prefix = format!("qb-{}-{}-", s.pid(), std::process::id());
    let dir = std::fs::read_dir("/dev/shm")
        .expect("/dev/shm")
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .expect("the victim's connection directory")
        .path();
    let ring = |kind: &str| {
        dir.join(format!("qb-{kind}-{name}"))
            .as_os_str()
            .as_encoded_bytes()
            .to_vec()
    };
    let header = |kind: &str| {
        let mut h = ring(kind);
        h.extend_from_slice(b"-header");
        std::fs::read(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&h))
            .expect("header")
    };
    let max_msg_size = (victim.max_message() + RESPONSE_HEADER_LEN) as u32;
    let elsewhere = b"/dev/shm/qb-1-1-1-elsewh/qb-event-x".to_vec();
    let cases = [
        (
            "the victim's rings",
            ring("request"),
            ring("response"),
            ring("event"),
        ),
        (
            "names in two directories",
            ring("request"),
            ring("response"),
            elsewhere,
        ),
    ];
    for (what, request, response, event) in cases {
        let hostile = unique("hostile-rings");
        let answer = ConnResponse {
            error: 0,
            transport: QbTransport::Shm,
            max_msg_size,
            cookie: 0,
            request,
            response,
            event,
        };
        let server = fake_server(&hostile, answer);
        match Client::connect_libqb(&hostile, &opts()) {
            Err(Error::Protocol(v)) => eprintln!("{what}: refused: {v}"),
            other => panic!("{what}: {:?}", other.map(|c| c.id())),
        }
        server.join().expect("server");
    }
    // Nothing counted in the victim's rings (`ref_count` at byte 8204 of
    // each header: the server's and its client's), and it goes on.
    for kind in ["request", "response", "event"] {
        let h = header(kind);
        let count = i32::from_ne_bytes(h[8204..8208].try_into().expect("4 bytes"));
        assert_eq!(count, 2, "{kind} ring's ref_count");
    }
    let mut buf = vec![0u8; 64];
    let m = victim
        .send_recv(ipc::id::ECHO, b"still mine", &mut buf, CALL)
        .expect("the victim's echo");
    assert_eq!(&buf[..m.len], b"still mine");
    drop(victim);
    command(&mut s, "exit");
}

/// Removes a directory and what is in it when dropped.
struct RemoveDir(std::path::PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

ringlink_tests::libqb_test!(the_async_client_over_libqb);
fn the_async_client_over_libqb(t: &str) {
    if !qbc::require("the_async_client_over_libqb") {
        return;
    }
    let name = unique("async");
    let mut s = qb_server(t, &name, &[]);
    let c = connect(&name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let c = ringlink_ipcc::AsyncClient::from_client(c).expect("async client");
        // One task at a time: a libqb server's answers come in the order
        // of the requests, and an async client files them by that order.
        for i in 0..200u32 {
            let r = c
                .send_recv(ipc::id::ECHO, &i.to_le_bytes())
                .await
                .expect("echo");
            assert_eq!(r.payload, i.to_le_bytes());
        }
        let mut p = Vec::new();
        p.extend_from_slice(&50u64.to_le_bytes());
        p.extend_from_slice(&0u64.to_le_bytes());
        c.send_recv(ipc::id::BURST, &p).await.expect("burst");
        for i in 0..50u64 {
            let e = c.event_recv().await.expect("event");
            assert_eq!(&e.payload[..8], &i.to_le_bytes());
        }
    });
    command(&mut s, "exit");
}
