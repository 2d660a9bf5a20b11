//! Named rings (`ServiceOptions::ring_dir`): the rings are files the
//! client opens by path, owned and permitted as the accept side's
//! `ring_auth` says, and removed on every way out of a handshake: the
//! client confirms, the client is killed half-way, the server is killed
//! half-way (the next server on the directory removes them).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ringlink_tests::ipc::{id, Kv};
use ringlink_tests::procs::{
    can_switch_user, connect, unique_addr, Helper, ServerProc, LINE_DEADLINE,
};
use ringlink_tests::tmp::TempDir;

const SERVER: &str = env!("CARGO_BIN_EXE_test_server");
const CLIENT: &str = env!("CARGO_BIN_EXE_test_client");

/// `nobody`, for the clients of another user (tests run as root).
const NOBODY: u32 = 65534;

/// The files in `dir`, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read the ring dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    v.sort();
    v
}

/// Waits until `dir` is empty; panics with what is left after 10 s.
fn wait_empty(dir: &Path, why: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !files(dir).is_empty() {
        assert!(
            Instant::now() < deadline,
            "{why}: ring files left behind: {:?}",
            files(dir)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A ring directory anyone may use (like `/dev/shm`: sticky, 1777).
fn ring_dir(tag: &str) -> TempDir {
    let dir = TempDir::new(tag);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777))
        .expect("chmod the ring dir");
    dir
}

/// Starts a `half` client (stops before confirming) and returns it with
/// the three ring paths the server announced.
fn half_client(
    addr: &ringlink_common::ServiceAddr,
    as_user: Option<u32>,
) -> (Helper, Vec<PathBuf>) {
    let mut args = vec!["half".to_owned()];
    args.extend(ringlink_tests::procs::addr_args(addr));
    if let Some(u) = as_user {
        args.extend([
            "--as-uid".into(),
            u.to_string(),
            "--as-gid".into(),
            u.to_string(),
        ]);
    }
    let mut c = Helper::spawn(CLIENT, &args);
    let kv = Kv::parse(&c.expect("half", LINE_DEADLINE));
    assert_eq!(kv.get("status"), "0", "handshake refused: {kv:?}");
    assert_eq!(
        kv.get("fds"),
        "0",
        "named rings pass no fds (wake-ups go on the socket)"
    );
    let prefix = kv.get("prefix").to_owned();
    assert_ne!(prefix, "-", "the server announced no ring path");
    let paths = ["request", "response", "event"]
        .iter()
        .map(|n| PathBuf::from(format!("{prefix}{n}")))
        .collect();
    (c, paths)
}

#[test]
fn named_rings_carry_messages_and_leave_no_file_behind() {
    let dir = ring_dir("rings");
    let d = dir.path().to_str().expect("utf-8 path").to_owned();
    let mut server = ServerProc::spawn(SERVER, &unique_addr("named"), &["--ring-dir", &d]);
    let addr = server.addr().clone();
    let mut c = connect(&addr, 0);
    // The client has opened and mapped them: the names are gone already.
    wait_empty(dir.path(), "after the handshake");
    let mut buf = vec![0u8; c.max_message()];
    for len in [0usize, 1, 1000, c.max_message()] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        let m = c
            .send_recv(id::ECHO, &payload, &mut buf, Some(Duration::from_secs(60)))
            .expect("echo over named rings");
        assert_eq!(m.len, len);
        assert!(buf[..len] == payload[..]);
    }
    drop(c);
    server.wait_stats("the connection closed", LINE_DEADLINE, |s| {
        s.get("destroyed") == "1"
    });
    let (fin, _) = server.shutdown();
    assert_eq!(fin.get("violations"), "0");
    assert!(files(dir.path()).is_empty());
}

#[test]
fn client_killed_mid_handshake_takes_its_ring_files_with_it() {
    let dir = ring_dir("rings");
    let d = dir.path().to_str().expect("utf-8 path").to_owned();
    let mut server = ServerProc::spawn(SERVER, &unique_addr("named-kill"), &["--ring-dir", &d]);
    let (half, paths) = half_client(server.addr(), None);
    // Mid-handshake the files exist, as the server made them: the
    // server's user, mode 0600 (the default `ring_auth`).
    for p in &paths {
        let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(m.is_file());
        assert_eq!(
            m.uid(),
            server.ready().get("uid").parse::<u32>().expect("uid")
        );
        assert_eq!(m.mode() & 0o7777, 0o600, "{}", p.display());
    }
    assert_eq!(files(dir.path()), {
        let mut p = paths.clone();
        p.sort();
        p
    });
    half.kill();
    wait_empty(dir.path(), "after SIGKILL of the client mid-handshake");
    let s = server.stats();
    assert_eq!(s.get("created"), "0");
    server.shutdown();
}

#[test]
fn client_killed_when_connected_leaves_no_ring_file() {
    let dir = ring_dir("rings");
    let d = dir.path().to_str().expect("utf-8 path").to_owned();
    let mut server = ServerProc::spawn(SERVER, &unique_addr("named-kill2"), &["--ring-dir", &d]);
    let mut args = vec!["stream".to_owned()];
    args.extend(ringlink_tests::procs::addr_args(server.addr()));
    let mut c = Helper::spawn(CLIENT, &args);
    c.expect("connected", LINE_DEADLINE);
    wait_empty(dir.path(), "while connected");
    c.kill();
    server.wait_stats(
        "the killed client's connection closed",
        LINE_DEADLINE,
        |s| s.get("destroyed") == "1",
    );
    assert!(files(dir.path()).is_empty());
    server.shutdown();
}

#[test]
fn server_killed_mid_handshake_its_files_are_removed_by_the_next_server() {
    let dir = ring_dir("rings");
    let d = dir.path().to_str().expect("utf-8 path").to_owned();
    let server = ServerProc::spawn(SERVER, &unique_addr("named-srv"), &["--ring-dir", &d]);
    let (half, paths) = half_client(server.addr(), None);
    server.kill();
    // Nobody was left to remove them: the files outlive the server...
    for p in &paths {
        assert!(
            p.exists(),
            "{} vanished with no one to remove it",
            p.display()
        );
    }
    half.kill();
    // ...until the next service binds on the directory and sweeps the
    // files of dead servers.
    let next = ServerProc::spawn(SERVER, &unique_addr("named-srv2"), &["--ring-dir", &d]);
    assert!(
        files(dir.path()).is_empty(),
        "the next server left the dead one's files: {:?}",
        files(dir.path())
    );
    next.shutdown();
}

#[test]
fn ring_auth_sets_owner_group_and_mode_for_another_user() {
    if !can_switch_user() {
        eprintln!("skipped: needs root to chown ring files to another user");
        return;
    }
    let dir = ring_dir("rings");
    let d = dir.path().to_str().expect("utf-8 path").to_owned();
    let server = ServerProc::spawn(
        SERVER,
        &unique_addr("named-auth"),
        &["--ring-dir", &d, "--ring-to-client", "--ring-mode", "0640"],
    );
    let (half, paths) = half_client(server.addr(), Some(NOBODY));
    for p in &paths {
        let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!((m.uid(), m.gid()), (NOBODY, NOBODY), "{}", p.display());
        assert_eq!(m.mode() & 0o7777, 0o640, "{}", p.display());
    }
    half.kill();
    wait_empty(dir.path(), "after SIGKILL of the other user's client");

    // A full client of that user opens the files it was given and works.
    let mut args = vec!["whoami".to_owned()];
    args.extend(ringlink_tests::procs::addr_args(server.addr()));
    args.extend([
        "--as-uid".into(),
        NOBODY.to_string(),
        "--as-gid".into(),
        NOBODY.to_string(),
    ]);
    let mut c = Helper::spawn(CLIENT, &args);
    let who = Kv::parse(&c.expect("whoami", LINE_DEADLINE));
    assert_eq!(who.get("uid"), NOBODY.to_string());
    c.wait(LINE_DEADLINE);
    wait_empty(dir.path(), "after the other user's client left");
    server.shutdown();
}

#[test]
fn default_ring_auth_keeps_another_user_out() {
    if !can_switch_user() {
        eprintln!("skipped: needs root to run a client as another user");
        return;
    }
    let dir = ring_dir("rings");
    let d = dir.path().to_str().expect("utf-8 path").to_owned();
    let mut server = ServerProc::spawn(SERVER, &unique_addr("named-deny"), &["--ring-dir", &d]);
    // Root-owned 0600 files: `nobody` cannot open them, so its handshake
    // fails on its side with a clear error; nothing is left behind.
    let mut args = vec!["whoami".to_owned()];
    args.extend(ringlink_tests::procs::addr_args(server.addr()));
    args.extend([
        "--as-uid".into(),
        NOBODY.to_string(),
        "--as-gid".into(),
        NOBODY.to_string(),
    ]);
    let mut c = Helper::spawn(CLIENT, &args);
    let err = c.expect("error", LINE_DEADLINE);
    assert!(
        err.contains("Permission denied"),
        "expected a permission error opening the ring, got `{err}`"
    );
    c.wait(LINE_DEADLINE);
    wait_empty(dir.path(), "after the refused client left");
    assert_eq!(server.stats().get("created"), "0");
    server.shutdown();
}
