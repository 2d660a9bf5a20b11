//! What a connection costs the server, and the limits that keep one
//! local user from taking the service: the fds held per connection
//! (measured from `/proc`), a thousand clients under a soft fd limit of
//! 1,024 (the service raises its own), and the per-process and per-user
//! connection quotas, with other clients getting in meanwhile.

use std::time::Duration;

use ringlink_ipcc::Client;
use ringlink_tests::attack::{self, HANG};
use ringlink_tests::ipc::Kv;
use ringlink_tests::procs::{can_switch_user, connect, unique_addr, Helper, ServerProc};
use ringlink_tests::tmp::TempDir;

const SERVER: &str = env!("CARGO_BIN_EXE_test_server");
const CLIENT: &str = env!("CARGO_BIN_EXE_test_client");

/// `nobody`, for clients of another user (tests run as root).
const NOBODY: u32 = 65534;

/// Deadline for a helper holding many connections to report.
const MANY: Duration = Duration::from_secs(240);

/// Connects `n` clients, and checks the server's fd count grows by
/// exactly `per` for each, and comes back when they leave.
fn fds_per_connection(server: &mut ServerProc, n: u64, per: u64) {
    // One connection made and gone first, so that nothing the first
    // connection makes once (and keeps) is counted.
    attack::newcomer(server.addr());
    let base = server.wait_stats("the newcomer's end", HANG, |s| s.u("destroyed") == 1);
    let clients: Vec<Client> = (0..n).map(|_| connect(server.addr(), 0)).collect();
    let with = server.wait_stats("every client created", HANG, |s| s.u("live") == n);
    let grew = with.u("fds") - base.u("fds");
    eprintln!(
        "{} connections over {}: server fds {} -> {} ({} each)",
        n,
        ringlink_tests::transport::name(ringlink_tests::transport::current()),
        base.u("fds"),
        with.u("fds"),
        grew as f64 / n as f64
    );
    assert_eq!(grew, n * per, "fds per connection: {base} / {with}");
    drop(clients);
    let after = server.wait_stats("every client gone", HANG, |s| s.u("destroyed") == n + 1);
    assert_eq!(after.u("fds"), base.u("fds"), "fds left after: {after}");
}

ringlink_tests::transport_test! {
/// One fd per connection over shared memory (its socket: the memfds are
/// closed once sent, the wake-ups travel on the socket); three over the
/// socket transport (the stream socket and the two socket pairs' server
/// ends).
fn a_connection_costs_one_fd_over_rings_and_three_over_sockets() {
    let mut server = ServerProc::spawn(SERVER, &unique_addr("fds"), &[]);
    let per = match ringlink_tests::transport::current() {
        ringlink_common::Transport::Socket => 3,
        _ => 1,
    };
    fds_per_connection(&mut server, 64, per);
}
}

#[test]
fn a_named_ring_connection_costs_one_fd() {
    let dir = TempDir::new("fd-rings");
    let d = dir.path().to_str().expect("utf-8 path").to_owned();
    let mut server = ServerProc::spawn(SERVER, &unique_addr("fds-named"), &["--ring-dir", &d]);
    fds_per_connection(&mut server, 64, 1);
}

ringlink_tests::transport_test! {
/// The figure: a server started with a soft limit of 1,024 open
/// files (and a higher hard limit) raises its own soft limit, and a
/// thousand clients connect, over either transport (3,000 fds over
/// sockets would not fit under 1,024).
fn a_thousand_clients_connect_to_a_server_started_under_a_soft_fd_limit_of_1024() {
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    if hard < 8192 {
        eprintln!("skipped: the hard RLIMIT_NOFILE here is {hard}; 1,000 clients need more");
        return;
    }
    // With the option off, the soft limit stays where it was set.
    let kept = ServerProc::spawn(
        SERVER,
        &unique_addr("nofile-kept"),
        &["--fd-limit", "1024", "--keep-fd-limit"],
    );
    assert_eq!(kept.ready().u("nofile"), 1024, "{}", kept.ready());
    drop(kept);

    let mut server = ServerProc::spawn(SERVER, &unique_addr("nofile"), &["--fd-limit", "1024"]);
    assert_eq!(server.ready().u("nofile"), hard, "{}", server.ready());
    let mut args = vec!["hold".to_owned(), "1000".to_owned()];
    args.extend(ringlink_tests::procs::addr_args(server.addr()));
    let mut holder = Helper::spawn(CLIENT, &args);
    let held = holder.expect("held", MANY);
    assert_eq!(held, "1000 refused=-");
    let s = server.wait_stats("a thousand connections", HANG, |s| s.u("live") == 1000);
    eprintln!("a thousand connections: server fds {}", s.u("fds"));
    attack::newcomer(server.addr());
    drop(holder.kill());
    server.wait_stats("every holder's connection closed", HANG, |s| {
        s.u("live") == 0
    });
}
}

/// Spawns a `hold COUNT` client (as `uid`, if given) and returns its
/// report, `(held, refused)`, and the helper (which keeps them).
fn hold(server: &ServerProc, count: usize, uid: Option<u32>) -> ((u64, String), Helper) {
    let mut args = vec!["hold".to_owned(), count.to_string()];
    args.extend(ringlink_tests::procs::addr_args(server.addr()));
    if let Some(u) = uid {
        args.extend([
            "--as-uid".into(),
            u.to_string(),
            "--as-gid".into(),
            u.to_string(),
        ]);
    }
    let mut h = Helper::spawn(CLIENT, &args);
    let line = h.expect("held", MANY);
    let kv = Kv::parse(&line);
    let n = line
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("held N");
    ((n, kv.get("refused").to_owned()), h)
}

ringlink_tests::transport_test! {
/// One process takes its quota and no more; other processes (of the
/// same user) still get in; its slots come back when it goes.
fn a_process_past_its_quota_is_refused_while_others_get_in() {
    let mut server = ServerProc::spawn(SERVER, &unique_addr("pid-quota"), &["--max-per-pid", "3"]);
    let (got, flood) = hold(&server, 10, None);
    assert_eq!(got, (3, "Rejected(ProcessQuota)".to_owned()));
    // Another process: this one.
    let ours: Vec<Client> = (0..3).map(|_| connect(server.addr(), 0)).collect();
    server.wait_stats("six connections", HANG, |s| s.u("live") == 6);
    let ss = server.sstats(false);
    assert_eq!(ss.u("process_quota"), 1, "{ss}");
    assert_eq!(ss.u("user_quota"), 0, "{ss}");
    drop(flood.kill());
    server.wait_stats("the flood's connections closed", HANG, |s| s.u("live") == 3);
    let (again, _h) = hold(&server, 10, None);
    assert_eq!(again, (3, "Rejected(ProcessQuota)".to_owned()));
    drop(ours);
}
}

ringlink_tests::transport_test! {
/// One user (`nobody`, over two processes) takes its quota and no more,
/// while another user (root, the test) still gets in.
fn a_user_past_its_quota_is_refused_while_other_users_get_in() {
    if !can_switch_user() {
        eprintln!("skipped: needs root to run clients as another user");
        return;
    }
    let mut server = ServerProc::spawn(SERVER, &unique_addr("uid-quota"), &["--max-per-uid", "4"]);
    let (first, _a) = hold(&server, 3, Some(NOBODY));
    assert_eq!(first, (3, "-".to_owned()));
    let (second, _b) = hold(&server, 10, Some(NOBODY));
    assert_eq!(second, (1, "Rejected(UserQuota)".to_owned()));
    // Root is another user, with a quota of its own: its clients get
    // in while nobody's are refused.
    let ours: Vec<Client> = (0..4).map(|_| connect(server.addr(), 0)).collect();
    let s = server.wait_stats("eight connections", HANG, |s| s.u("live") == 8);
    let ss = server.sstats(false);
    assert_eq!(ss.u("user_quota"), 1, "{ss}");
    assert_eq!(ss.u("active"), 8, "{ss} / {s}");
    drop(ours);
}
}
