//! ringlink's server serving unmodified libqb clients: a C program linked
//! with the system's libqb (`tests/c/qb_client.c`, driven line by line)
//! against `test_server --libqb NAME`, through libqb's own acceptance
//! scenarios (its `tests/check_ipc.c`): requests of every size, blocking
//! and with timeouts; a reply sent only as an event; flow control at
//! `Off` and `Off2`; async connect; the server's credentials; the server
//! leaving and dying; bulk events and thirty thousand of them; five
//! thousand connections; an event from `connection_created`; a
//! disconnect from the message handler; the enforced buffer size; the
//! files' owner and mode. Then hostile libqb clients: size lies,
//! truncated ring files, a stalled handshake, links planted in a
//! connection's directory, a directory filled with a million names, a
//! stranger's datagrams, each beside a bystander that must go on being
//! served.
//!
//! Needs Debian's `libqb-dev` (see `ringlink_tests::qbc`).

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use ringlink_tests::ipc::{self, Burst};
use ringlink_tests::procs::{unique_addr, Helper, ServerProc};
use ringlink_tests::qbc;

const SERVER: &str = env!("CARGO_BIN_EXE_test_server");

/// A line's deadline: only catches hangs.
const T: Duration = Duration::from_secs(60);

/// A libqb client process.
fn qb_client() -> Helper {
    let bin = qbc::build("qb_client", env!("CARGO_TARGET_TMPDIR"));
    let mut c = Helper::spawn::<&str>(bin.to_str().expect("utf-8 path"), &[]);
    c.expect("ready", T);
    c
}

/// Sends `cmd` and returns the answer line.
fn ask(c: &mut Helper, cmd: &str) -> String {
    c.send(cmd);
    c.line(T)
}

/// Sends `cmd`, which must succeed; returns what follows `ok`.
fn ok(c: &mut Helper, cmd: &str) -> String {
    let l = ask(c, cmd);
    match l.strip_prefix("ok") {
        Some(rest) => rest.trim().to_owned(),
        None => c.fail(&format!("`{cmd}` answered `{l}`")),
    }
}

/// Sends `cmd`, which must fail with `errno` (negative).
fn err(c: &mut Helper, cmd: &str, errno: i32) {
    let l = ask(c, cmd);
    let want = format!("err {errno} ");
    if !l.starts_with(&want) {
        c.fail(&format!("`{cmd}` answered `{l}`, expected errno {errno}"));
    }
}

/// A server with a libqb name over libqb transport `t` (`shm` or
/// `socket`), and the name.
fn start(t: &str, tag: &str, extra: &[&str]) -> (ServerProc, String) {
    let name = format!("rl-qb-{tag}-{t}-{}-{}", std::process::id(), unique_n());
    let mut args = vec!["--libqb", name.as_str(), "--libqb-transport", t];
    args.extend_from_slice(extra);
    (ServerProc::spawn(SERVER, &unique_addr(tag), &args), name)
}

fn unique_n() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The negotiated buffer size from a `connect` answer.
fn buffer(answer: &str) -> usize {
    answer
        .strip_prefix("buffer=")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no buffer size in `{answer}`"))
}

/// libqb's connection directories of server `pid` in `/dev/shm`.
fn dirs_of(pid: u32) -> Vec<std::path::PathBuf> {
    let prefix = format!("qb-{pid}-");
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `cond`, or fails with `what`.
/// A libqb client connected to `name` (and served once), and the
/// connection directory the server made for it.
fn connected_with_dir(server: &ServerProc, name: &str) -> (Helper, std::path::PathBuf) {
    let before = dirs_of(server.pid());
    let mut c = qb_client();
    ok(&mut c, &format!("connect {name} 0"));
    ok(&mut c, &format!("echo {} 10 5000", ipc::id::ECHO));
    let dir = dirs_of(server.pid())
        .into_iter()
        .find(|d| !before.contains(d))
        .expect("the client's directory");
    (c, dir)
}

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + T;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// FNV-1a 64 of each event's id (4 bytes LE) then payload, as the C
/// client computes it.
fn burst_hash(b: &Burst, max: usize) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &x in bytes {
            h ^= u64::from(x);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    };
    let mut buf = vec![0u8; max];
    for i in 0..b.count {
        let len = b.fill_event(i, max, &mut buf);
        eat(&ipc::id::BURST_EVENT.to_le_bytes());
        eat(&buf[..len]);
    }
    format!("{h:016x}")
}

ringlink_tests::libqb_test!(requests_of_every_size_blocking_and_with_timeouts);
fn requests_of_every_size_blocking_and_with_timeouts(t: &str) {
    if !qbc::require("requests_of_every_size_blocking_and_with_timeouts") {
        return;
    }
    let (server, name) = start(t, "sizes", &[]);
    let mut c = qb_client();
    let max = buffer(&ok(&mut c, &format!("connect {name} 0"))) - 24;
    let mut size = 32;
    let mut sizes = Vec::new();
    while size <= max {
        sizes.push(size);
        size *= 2;
    }
    sizes.push(max);
    for &s in &sizes {
        ok(&mut c, &format!("echo {} {s} -1", ipc::id::ECHO));
        ok(&mut c, &format!("echo {} {s} 5000", ipc::id::ECHO));
    }
    eprintln!("echoed {sizes:?} (buffer {})", max + 24);
    ok(&mut c, "disconnect");
    let dirs = dirs_of(server.pid());
    wait_for("the connection's files to go", || {
        dirs_of(server.pid()).is_empty()
    });
    drop(dirs);
    server.shutdown();
}

ringlink_tests::libqb_test!(a_reply_sent_only_as_an_event_times_out_sendv_recv);
fn a_reply_sent_only_as_an_event_times_out_sendv_recv(t: &str) {
    if !qbc::require("a_reply_sent_only_as_an_event_times_out_sendv_recv") {
        return;
    }
    let (server, name) = start(t, "evonly", &[]);
    let mut c = qb_client();
    ok(&mut c, &format!("connect {name} 0"));
    err(
        &mut c,
        &format!("sendv_recv {} 16 200", ipc::id::EVENT_ONLY),
        -110,
    );
    let ev = ok(&mut c, "event 2000");
    let fields: Vec<&str> = ev.split(' ').collect();
    assert_eq!(fields[1], ipc::id::EVENT_ONLY.to_string(), "{ev}");
    assert_eq!(fields[0], (24 + 16).to_string(), "{ev}");
    // The unanswered request holds no later response back.
    ok(&mut c, &format!("echo {} 32 5000", ipc::id::ECHO));
    ok(&mut c, "disconnect");
    server.shutdown();
}

ringlink_tests::libqb_test!(flow_control_at_off_and_off2);
fn flow_control_at_off_and_off2(t: &str) {
    if !qbc::require("flow_control_at_off_and_off2") {
        return;
    }
    let (mut server, name) = start(t, "fc", &[]);
    let mut c = qb_client();
    ok(&mut c, &format!("connect {name} 0"));
    // Sends until flow control holds them; returns how many went (the
    // server stops reading when it raises the level: those wait for it
    // to read again).
    let held = |c: &mut Helper| -> usize {
        let deadline = Instant::now() + T;
        let mut went = 0;
        loop {
            let l = ask(c, &format!("send {} 8", ipc::id::ECHO));
            if l.starts_with("err -11 ") {
                return went;
            }
            assert!(l.starts_with("ok"), "{l}");
            went += 1;
            assert!(
                Instant::now() < deadline,
                "flow control never held the sends"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let answered = |c: &mut Helper, n: usize| {
        for _ in 0..n {
            ok(c, "recv 5000");
        }
    };
    let flows = |c: &mut Helper| {
        let deadline = Instant::now() + T;
        loop {
            let l = ask(c, &format!("send {} 8", ipc::id::ECHO));
            if l.starts_with("ok") {
                ok(c, "recv 5000");
                return;
            }
            assert!(l.starts_with("err -11 "), "{l}");
            assert!(Instant::now() < deadline, "flow control never lifted");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    assert_eq!(server.command("rate off"), "ok");
    let n = held(&mut c);
    assert_eq!(server.command("rate normal"), "ok");
    answered(&mut c, n);
    flows(&mut c);
    // Off2: level 2 holds only clients whose threshold is 2.
    assert_eq!(server.command("rate off2"), "ok");
    ok(&mut c, "fc_max 2");
    let mut n = held(&mut c);
    ok(&mut c, "fc_max 1");
    let l = ask(&mut c, &format!("send {} 8", ipc::id::ECHO));
    assert!(l.starts_with("ok"), "threshold 1 at level 2: {l}");
    n += 1;
    assert_eq!(server.command("rate normal"), "ok");
    answered(&mut c, n);
    flows(&mut c);
    ok(&mut c, "disconnect");
    server.shutdown();
}

ringlink_tests::libqb_test!(async_connect_and_the_servers_credentials);
fn async_connect_and_the_servers_credentials(t: &str) {
    if !qbc::require("async_connect_and_the_servers_credentials") {
        return;
    }
    let (server, name) = start(t, "async", &[]);
    let mut c = qb_client();
    ok(&mut c, &format!("connect_async {name} 0"));
    let auth = ok(&mut c, "auth");
    let ready = server.ready().clone();
    assert_eq!(
        auth,
        format!("{} {} {}", server.pid(), ready.get("uid"), ready.get("gid")),
        "qb_ipcc_auth_get"
    );
    ok(&mut c, &format!("echo {} 100 5000", ipc::id::ECHO));
    ok(&mut c, "disconnect");
    server.shutdown();
}

ringlink_tests::libqb_test!(a_server_that_leaves_or_dies_is_seen_and_its_files_go);
fn a_server_that_leaves_or_dies_is_seen_and_its_files_go(t: &str) {
    if !qbc::require("a_server_that_leaves_or_dies_is_seen_and_its_files_go") {
        return;
    }
    // It leaves.
    let (server, name) = start(t, "exit", &[]);
    let pid = server.pid();
    let mut c = qb_client();
    ok(&mut c, &format!("connect {name} 0"));
    assert_eq!(dirs_of(pid).len(), 1);
    server.shutdown();
    err(&mut c, "recv 1000", -107);
    assert_eq!(ok(&mut c, "is_connected"), "0");
    ok(&mut c, "disconnect");
    assert!(dirs_of(pid).is_empty(), "{:?}", dirs_of(pid));

    // It dies.
    let (server, name) = start(t, "death", &[]);
    let pid = server.pid();
    ok(&mut c, &format!("connect {name} 0"));
    ok(&mut c, &format!("echo {} 10 5000", ipc::id::ECHO));
    server.kill();
    err(&mut c, "recv 1000", -107);
    assert_eq!(ok(&mut c, "is_connected"), "0");
    // libqb's client removes the files of a dead server, and leaves its
    // directory: the next service to listen removes that.
    ok(&mut c, "disconnect");
    let (next, _) = server_sweeping(t, "sweep");
    assert!(dirs_of(pid).is_empty(), "left: {:?}", dirs_of(pid));
    next.shutdown();
}

/// A server whose `listen_libqb` sweeps the directories dead servers
/// left.
fn server_sweeping(t: &str, tag: &str) -> (ServerProc, String) {
    start(t, tag, &[])
}

ringlink_tests::libqb_test!(ten_bulk_events_and_thirty_thousand_with_some_at_the_maximum);
fn ten_bulk_events_and_thirty_thousand_with_some_at_the_maximum(t: &str) {
    if !qbc::require("ten_bulk_events_and_thirty_thousand_with_some_at_the_maximum") {
        return;
    }
    let (mut server, name) = start(t, "events", &[]);
    let mut c = qb_client();
    let max = buffer(&ok(&mut c, &format!("connect {name} 0"))) - 24;
    for b in [
        Burst {
            count: 10,
            big_every: 0,
            seed: 7,
        },
        Burst {
            count: 30_000,
            big_every: 1000,
            seed: 8,
        },
    ] {
        ok(
            &mut c,
            &format!("burst {} {} {}", b.count, b.big_every, b.seed),
        );
        if b.count == 10 {
            // libqb's event_q_length: the ten wait in the channel, counted.
            let deadline = Instant::now() + T;
            loop {
                let st = server.command("cstats 1");
                if st.contains("events_queued=10") {
                    break;
                }
                assert!(Instant::now() < deadline, "never ten queued: {st}");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let got = ok(&mut c, &format!("events {} 10000", b.count));
        if b.count == 10 {
            let st = server.command("cstats 1");
            assert!(st.contains("events_queued=0"), "{st}");
        }
        assert_eq!(got, format!("{} {}", b.count, burst_hash(&b, max)), "{b:?}");
    }
    ok(&mut c, "disconnect");
    let (st, _) = server.shutdown();
    assert_eq!(st.u("burst_done"), 2, "{st}");
}

ringlink_tests::libqb_test!(five_thousand_connections_leak_nothing);
fn five_thousand_connections_leak_nothing(t: &str) {
    if !qbc::require("five_thousand_connections_leak_nothing") {
        return;
    }
    let (mut server, name) = start(t, "cycles", &[]);
    let mut c = qb_client();
    // Warmed up first: what the first connections make once (allocator
    // arenas, the fault handler's registry) is not a leak.
    ok(&mut c, &format!("cycles {name} 100"));
    let before_client: u64 = ok(&mut c, "fds").parse().expect("fds");
    let before = server.wait_stats("the warm-up closed", T, |s| s.u("destroyed") == 100);
    ok(&mut c, &format!("cycles {name} 5000"));
    let after_client: u64 = ok(&mut c, "fds").parse().expect("fds");
    assert_eq!(before_client, after_client, "the client's fds");
    let st = server.wait_stats("every connection closed", T, |s| {
        s.u("destroyed") == before.u("destroyed") + 5000 && s.u("live") == 0
    });
    assert_eq!(st.u("fds"), before.u("fds"), "the server's fds: {st}");
    assert_eq!(
        st.u("maps"),
        before.u("maps"),
        "the server's mappings: {st}"
    );
    wait_for("every connection's files to go", || {
        dirs_of(server.pid()).is_empty()
    });
    server.shutdown();
}

ringlink_tests::libqb_test!(an_event_from_connection_created);
fn an_event_from_connection_created(t: &str) {
    if !qbc::require("an_event_from_connection_created") {
        return;
    }
    let (server, name) = start(t, "hello", &["--event-on-create"]);
    let mut c = qb_client();
    ok(&mut c, &format!("connect {name} 0"));
    let ev = ok(&mut c, "event 5000");
    let f: Vec<&str> = ev.split(' ').collect();
    assert_eq!(f[1], ipc::id::HELLO.to_string(), "{ev}");
    let text = hex_text(f.get(2).copied().unwrap_or(""));
    assert!(text.starts_with("hello "), "{ev}");
    ok(&mut c, "disconnect");
    server.shutdown();
}

fn hex_text(hex: &str) -> String {
    (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(b'?') as char)
        .collect()
}

ringlink_tests::libqb_test!(a_disconnect_from_the_message_handler);
fn a_disconnect_from_the_message_handler(t: &str) {
    if !qbc::require("a_disconnect_from_the_message_handler") {
        return;
    }
    let (server, name) = start(t, "hdisc", &[]);
    let mut c = qb_client();
    ok(&mut c, &format!("connect {name} 0"));
    ok(&mut c, &format!("send {} 0", ipc::id::DISCONNECT));
    err(&mut c, "recv 2000", -107);
    assert_eq!(ok(&mut c, "is_connected"), "0");
    ok(&mut c, "disconnect");
    wait_for("the files to go", || dirs_of(server.pid()).is_empty());
    server.shutdown();
}

ringlink_tests::libqb_test!(the_enforced_buffer_size);
fn the_enforced_buffer_size(t: &str) {
    if !qbc::require("the_enforced_buffer_size") {
        return;
    }
    let (server, name) = start(t, "enforce", &["--min-message", "200000"]);
    let mut c = qb_client();
    assert_eq!(buffer(&ok(&mut c, &format!("connect {name} 0"))), 200_024);
    ok(&mut c, &format!("echo {} 200000 5000", ipc::id::ECHO));
    ok(&mut c, "disconnect");
    // A larger wish is granted, up to the maximum.
    assert_eq!(
        buffer(&ok(&mut c, &format!("connect {name} 300000"))),
        300_000
    );
    ok(&mut c, "disconnect");
    assert_eq!(
        buffer(&ok(&mut c, &format!("connect {name} 99000000"))),
        (1 << 20) + 24
    );
    ok(&mut c, "disconnect");
    server.shutdown();
}

ringlink_tests::libqb_test!(the_files_owner_and_mode_from_ring_auth);
fn the_files_owner_and_mode_from_ring_auth(t: &str) {
    if !qbc::require("the_files_owner_and_mode_from_ring_auth") {
        return;
    }
    if !ringlink_tests::procs::can_switch_user() {
        eprintln!("SKIPPED the_files_owner_and_mode_from_ring_auth: needs root");
        return;
    }
    const NOBODY: u32 = 65534;
    let (server, name) = start(t, "auth", &["--ring-to-client", "--ring-mode", "0640"]);
    let mut c = qb_client();
    ok(&mut c, &format!("setid {NOBODY} {NOBODY}"));
    ok(&mut c, &format!("connect {name} 0"));
    ok(&mut c, &format!("echo {} 64 5000", ipc::id::ECHO));
    let dirs = dirs_of(server.pid());
    assert_eq!(dirs.len(), 1);
    let dir = &dirs[0];
    let m = dir.metadata().expect("dir");
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o777),
        (NOBODY, NOBODY, 0o770)
    );
    let mut files = 0;
    for f in std::fs::read_dir(dir).expect("files").flatten() {
        let m = f.metadata().expect("file");
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o777),
            (NOBODY, NOBODY, 0o640),
            "{}",
            f.path().display()
        );
        files += 1;
    }
    // Six ring files, or the socket transport's control file.
    assert_eq!(files, if t == "shm" { 6 } else { 1 });
    ok(&mut c, "disconnect");
    server.shutdown();
}

/// A client that keeps echoing, checked between each step of an attack.
struct Bystander {
    c: Helper,
}

impl Bystander {
    fn new(name: &str) -> Bystander {
        let mut c = qb_client();
        ok(&mut c, &format!("connect {name} 0"));
        Bystander { c }
    }

    fn served(&mut self, n: usize) {
        for i in 0..n {
            ok(
                &mut self.c,
                &format!("echo {} {} 5000", ipc::id::ECHO, 16 + i),
            );
        }
    }

    /// One echo, however long the server takes to answer (up to `T`):
    /// how long it took.
    fn echo_time(&mut self) -> Duration {
        let start = Instant::now();
        ok(&mut self.c, &format!("echo {} 16 60000", ipc::id::ECHO));
        start.elapsed()
    }
}

/// The longest a bystander's echo may take while another client attacks
/// (a loop that stalls for every client takes seconds; a loaded two-core
/// machine may take some hundreds of milliseconds).
const PROMPT: Duration = Duration::from_secs(1);

ringlink_tests::libqb_test!(size_lies_are_violations_and_a_bystander_goes_on);
fn size_lies_are_violations_and_a_bystander_goes_on(t: &str) {
    if !qbc::require("size_lies_are_violations_and_a_bystander_goes_on") {
        return;
    }
    let (mut server, name) = start(t, "lies", &["--log-faults"]);
    let mut by = Bystander::new(&name);
    by.served(5);
    for claim in [9999i64, 4, -1, 0x7fff_ffff] {
        let mut c = qb_client();
        ok(&mut c, &format!("connect {name} 0"));
        ok(&mut c, &format!("lie {} 10 {claim}", ipc::id::ECHO));
        err(&mut c, "recv 2000", -107);
        by.served(5);
    }
    let faults = server.faults();
    assert_eq!(faults.len(), 4, "{faults:?}");
    assert!(
        faults.iter().all(|(_, f)| f.contains("header")),
        "{faults:?}"
    );
    by.served(5);
    server.shutdown();
}

#[test]
fn truncated_ring_files_cannot_take_the_server_down() {
    let t = "shm";
    if !qbc::require("truncated_ring_files_cannot_take_the_server_down") {
        return;
    }
    let (mut server, name) = start(t, "trunc", &["--log-faults"]);
    let mut by = Bystander::new(&name);
    by.served(5);
    // The ring the server touches next, shrunk under it: its answer (or
    // event) goes through it.
    for (file, size, id) in [
        ("response-data", 0, ipc::id::ECHO),
        ("response-header", 0, ipc::id::ECHO),
        ("request-header", 100, ipc::id::ECHO),
        ("event-data", 0, ipc::id::EVENT_ONLY),
    ] {
        let mut c = qb_client();
        ok(&mut c, &format!("connect {name} 0"));
        ok(&mut c, &format!("echo {} 10 5000", ipc::id::ECHO));
        ok(&mut c, &format!("truncate {file} {size}"));
        let before = server.faults().len();
        // The client's own libqb may die of it: it is the attacker.
        c.send(&format!("send {id} 10"));
        by.served(5);
        // Give the server its turn with the attacker's message before the
        // attacker goes (its leaving would end the connection first).
        let deadline = Instant::now() + Duration::from_secs(2);
        while server.faults().len() == before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(c);
        by.served(5);
    }
    let st = server.stats();
    assert!(st.u("live") >= 1, "{st}");
    let faults = server.faults();
    eprintln!("faults: {faults:?}");
    assert!(
        faults.iter().any(|(_, f)| f.contains("truncated")),
        "{faults:?}"
    );
    by.served(5);
    server.shutdown();
}

ringlink_tests::libqb_test!(a_stalled_handshake_expires_and_a_bystander_goes_on);
fn a_stalled_handshake_expires_and_a_bystander_goes_on(t: &str) {
    if !qbc::require("a_stalled_handshake_expires_and_a_bystander_goes_on") {
        return;
    }
    let (server, name) = start(t, "stall", &["--handshake-timeout-ms", "300"]);
    let mut by = Bystander::new(&name);
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(
        ringlink_common::qb::abstract_name(name.as_bytes()).expect("name"),
    )
    .expect("address");
    let stalled: Vec<_> = (0..20)
        .map(|_| std::os::unix::net::UnixStream::connect_addr(&addr).expect("connect"))
        .collect();
    by.served(20);
    for mut s in stalled {
        s.set_read_timeout(Some(T)).expect("timeout");
        let mut b = [0u8; 1];
        let n = std::io::Read::read(&mut s, &mut b).unwrap_or(0);
        assert_eq!(n, 0, "a stalled handshake was answered");
    }
    by.served(5);
    server.shutdown();
}

#[test]
fn a_stranger_cannot_send_requests_in_a_clients_name() {
    // libqb's socket transport: until the server's request socket is
    // connected to its client's, any local process can send it a
    // datagram, and libqb's server takes it for the client's request.
    if !qbc::require("a_stranger_cannot_send_requests_in_a_clients_name") {
        return;
    }
    use std::os::linux::net::SocketAddrExt;
    let t = "socket";
    let (mut server, name) = start(t, "stranger", &["--log-faults"]);
    let mut c = qb_client();
    ok(&mut c, &format!("connect {name} 0"));
    let dirs = dirs_of(server.pid());
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let target = format!("{}/qb-{name}-request", dirs[0].display());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(ringlink_common::qb::dgram_name(
        target.as_bytes(),
    ))
    .expect("address");
    let stranger = std::os::unix::net::UnixDatagram::unbound().expect("socket");
    let mut forged = ringlink_common::qb::RequestHeader {
        id: ipc::id::ECHO,
        size: 16 + 6,
    }
    .encode()
    .to_vec();
    forged.extend_from_slice(b"forged");
    for _ in 0..3 {
        stranger
            .send_to_addr(&forged, &addr)
            .expect("send the forged request");
    }
    // No response comes for what the stranger sent.
    std::thread::sleep(Duration::from_millis(100));
    let faults = server.faults();
    assert!(faults.is_empty(), "{faults:?}");
    err(&mut c, "recv 300", -110);
    // The client's own requests are served, and only they.
    ok(&mut c, &format!("echo {} 64 5000", ipc::id::ECHO));
    err(&mut c, "recv 300", -110);
    // Now the socket is connected to the client's: the kernel refuses
    // the stranger.
    assert!(
        stranger.send_to_addr(&forged, &addr).is_err(),
        "a stranger still gets through"
    );
    ok(&mut c, "disconnect");
    server.shutdown();
}

#[test]
fn a_strangers_flood_cannot_hold_the_loop() {
    // libqb's socket transport: until the server's request socket takes
    // a datagram from its client's name, it is open to any local
    // process. A hostile client connects and never sends (nor binds its
    // own socket) while its accomplices flood that socket from several
    // threads: each datagram is dropped as a stranger's, and the loop
    // must not keep reading them for as long as they come. A bystander
    // is served promptly throughout.
    //
    // The kernel queues at most `net.unix.max_dgram_qlen` (10) of
    // strangers' datagrams: the loop is held only while the senders
    // outpace its reads, which takes more cores than the loop's and one
    // more (on two, a loop without the bound was held up to 0.2 s at a
    // time, every echo slowed). The bound itself is checked by
    // `a_flood_of_strangers_is_dropped_a_bounded_number_at_a_time` in
    // `channel/src/qb/socket.rs`.
    if !qbc::require("a_strangers_flood_cannot_hold_the_loop") {
        return;
    }
    use std::os::linux::net::SocketAddrExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    const FLOOD: Duration = Duration::from_secs(2);
    let t = "socket";
    let (mut server, name) = start(t, "flood", &["--log-faults"]);
    let mut by = Bystander::new(&name);
    by.served(3);
    // The hostile client, by hand: the handshake, then silence.
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(
        ringlink_common::qb::abstract_name(name.as_bytes()).expect("name"),
    )
    .expect("address");
    let mut hostile = std::os::unix::net::UnixStream::connect_addr(&addr).expect("connect");
    std::io::Write::write_all(
        &mut hostile,
        &ringlink_common::qb::ConnRequest {
            max_msg_size: 1 << 16,
        }
        .encode(),
    )
    .expect("connection request");
    hostile.set_read_timeout(Some(T)).expect("timeout");
    let mut answer = vec![0u8; ringlink_common::qb::CONN_RESPONSE_LEN];
    std::io::Read::read_exact(&mut hostile, &mut answer).expect("connection response");
    let answer = ringlink_common::qb::ConnResponse::decode(&answer).expect("response");
    assert_eq!(answer.error, 0, "{answer:?}");
    let mut target = answer.response.clone();
    target.extend_from_slice(b"-request");
    let target = std::os::unix::net::SocketAddr::from_abstract_name(
        ringlink_common::qb::dgram_name(&target),
    )
    .expect("address");
    let mut forged = ringlink_common::qb::RequestHeader {
        id: ipc::id::ECHO,
        size: 16 + 6,
    }
    .encode()
    .to_vec();
    forged.extend_from_slice(b"forged");
    let (target, forged) = (Arc::new(target), Arc::new(forged));
    let stop = Arc::new(AtomicBool::new(false));
    let flood_until = Instant::now() + FLOOD;
    let floods: Vec<_> = (0..4)
        .map(|_| {
            let (target, forged, stop) = (target.clone(), forged.clone(), stop.clone());
            std::thread::spawn(move || {
                // Connected (no name to look up per datagram) and never
                // waiting: as fast as a sender goes.
                let s = std::os::unix::net::UnixDatagram::unbound().expect("socket");
                s.connect_addr(&target)
                    .expect("connect to the request socket");
                s.set_nonblocking(true).expect("non-blocking");
                let mut sent = 0u64;
                while Instant::now() < flood_until && !stop.load(Ordering::Relaxed) {
                    for _ in 0..256 {
                        if s.send(&forged).is_ok() {
                            sent += 1;
                        }
                    }
                }
                sent
            })
        })
        .collect();
    let (mut echoes, mut worst) = (0, Duration::ZERO);
    while Instant::now() < flood_until {
        worst = worst.max(by.echo_time());
        echoes += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let sent: u64 = floods.into_iter().map(|f| f.join().expect("flood")).sum();
    eprintln!("{sent} datagrams from strangers; {echoes} echoes meanwhile, the slowest {worst:?}");
    assert!(
        worst < PROMPT,
        "the bystander waited {worst:?} for an echo while strangers flooded another connection"
    );
    by.served(5);
    let faults = server.faults();
    assert!(faults.is_empty(), "{faults:?}");
    drop(hostile);
    server.shutdown();
}

ringlink_tests::libqb_test!(links_planted_in_a_connections_directory_are_removed_not_followed);
fn links_planted_in_a_connections_directory_are_removed_not_followed(t: &str) {
    // libqb's history (CVE-2019-12779): its server made ring files by
    // predictable names in /dev/shm, so a local user could plant links
    // there and have the server write through them. ringlink makes its
    // files `O_EXCL | O_NOFOLLOW` in a private directory, but the
    // client's user may write in that directory: after connecting, the
    // client swaps every file in it for a link to a victim file and
    // plants more; when it leaves, the server removes the links without
    // following them, the victim keeps its contents, and a bystander
    // is served throughout.
    if !qbc::require("links_planted_in_a_connections_directory_are_removed_not_followed") {
        return;
    }
    let (server, name) = start(t, "plant", &[]);
    let mut by = Bystander::new(&name);
    by.served(3);
    let (c, dir) = connected_with_dir(&server, &name);
    let victims = ringlink_tests::tmp::TempDir::new("plant-victim");
    let victim = victims.path().join("victim");
    std::fs::write(&victim, b"precious").expect("victim");
    let mut planted = 0;
    for entry in std::fs::read_dir(&dir).expect("directory").flatten() {
        std::fs::remove_file(entry.path()).expect("remove a ring file");
        std::os::unix::fs::symlink(&victim, entry.path()).expect("plant a link");
        planted += 1;
    }
    for extra in ["extra-link", "qb-request-header"] {
        std::os::unix::fs::symlink(&victim, dir.join(extra)).expect("plant a link");
    }
    std::os::unix::fs::symlink(victims.path(), dir.join("dir-link")).expect("plant a link");
    by.served(3);
    drop(c);
    wait_for("the client's directory to go", || !dir.exists());
    assert_eq!(
        std::fs::read(&victim).expect("the victim is still there"),
        b"precious",
        "a planted link was followed ({planted} ring files swapped)"
    );
    assert!(
        std::fs::symlink_metadata(&victim).is_ok_and(|m| m.is_file()),
        "the victim is no longer a regular file"
    );
    by.served(5);
    server.shutdown();
}

/// Removes a directory the test filled, should the server not have.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_client_filling_its_directory_cannot_stall_the_loop() {
    // A libqb client's user owns its connection's directory (the server
    // gives it away, as libqb's does): the client can fill it with a
    // million names, then leave, and again with its next connection.
    // Removing them takes the kernel seconds: not the loop's. The names
    // here are hard links to one empty file (as fast as a client could
    // make them), long ones (the slower to remove); a bystander is
    // served promptly throughout, and the directory still goes.
    let t = "shm";
    if !qbc::require("a_client_filling_its_directory_cannot_stall_the_loop") {
        return;
    }
    // Each link takes one of tmpfs's inodes (a twentieth of a megabyte
    // of memory each by default): at most a third of those free.
    let planted = free_inodes("/dev/shm").map_or(1_000_000, |n| (n / 3).min(1_000_000));
    let (server, name) = start(t, "fill", &[]);
    let mut by = Bystander::new(&name);
    by.served(3);
    let (c, dir) = connected_with_dir(&server, &name);
    let _cleanup = RemoveOnDrop(dir.clone());
    let seed = dir.join("planted");
    std::fs::write(&seed, b"").expect("plant a file");
    let long = "x".repeat(200);
    let planting = Instant::now();
    for i in 0..planted {
        std::fs::hard_link(&seed, dir.join(format!("{i}-{long}"))).expect("plant a link");
    }
    eprintln!("planted {planted} links in {:?}", planting.elapsed());
    by.served(3);
    drop(c);
    let left = Instant::now();
    let (mut echoes, mut worst) = (0, Duration::ZERO);
    while dir.exists() {
        assert!(left.elapsed() < T, "the client's directory never went");
        worst = worst.max(by.echo_time());
        echoes += 1;
    }
    eprintln!(
        "the directory went {:?} after the client; {echoes} echoes meanwhile, the slowest {worst:?}",
        left.elapsed()
    );
    assert!(
        worst < PROMPT,
        "the bystander waited {worst:?} for an echo while the server removed what the client planted"
    );
    by.served(5);
    server.shutdown();
}

/// The inodes free for an unprivileged user in the file system of `path`.
fn free_inodes(path: &str) -> Option<u64> {
    let path = std::ffi::CString::new(path).ok()?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `st` a live local the kernel
    // writes.
    let r = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
    (r == 0).then_some(st.f_favail)
}
