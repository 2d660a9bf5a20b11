//! A service on a filesystem path: the socket gets the requested mode,
//! a stale socket file (a listener dropped without unlinking, or the
//! leftover of a SIGKILLed server) is replaced, a live server's socket is
//! not stolen, and whatever else is planted at the path (a regular file,
//! a directory, symlinks to a file, to nowhere, to a stale socket) is
//! neither removed nor followed; a bind that fails after making the
//! socket file removes it.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use ringlink_ipcc::ServiceAddr;
use ringlink_ipcs::{Connection, Error, Handler, Request, Service, ServiceOptions};
use ringlink_tests::ipc::PROTOCOL;
use ringlink_tests::procs::{connect, ServerProc};
use ringlink_tests::tmp::TempDir;

const SERVER: &str = env!("CARGO_BIN_EXE_test_server");

fn path_addr(p: &Path) -> ServiceAddr {
    ServiceAddr::Path(p.to_path_buf())
}

/// Connects and checks that the server at `addr` is process `pid`.
fn served_by(addr: &ServiceAddr, pid: u32) {
    let c = connect(addr, 0);
    assert_eq!(
        c.server_credentials().pid,
        pid as i32,
        "the server answering at {addr}"
    );
}

fn is_socket(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

ringlink_tests::transport_test! {
fn the_socket_gets_the_requested_mode() {
    let dir = TempDir::new("sock-mode");
    for mode in [None, Some(0o600), Some(0o660), Some(0o666), Some(0o700)] {
        let path = dir.path().join(format!("m{:o}.sock", mode.unwrap_or(0)));
        let addr = path_addr(&path);
        let arg = mode.map(|m| format!("{m:o}"));
        let extra: Vec<&str> = match &arg {
            Some(a) => vec!["--mode", a],
            None => vec![],
        };
        let server = ServerProc::spawn(SERVER, &addr, &extra);
        let meta = std::fs::symlink_metadata(&path).expect("socket file");
        assert!(meta.file_type().is_socket());
        let want = mode.unwrap_or(0o600); // the documented default
        assert_eq!(
            meta.permissions().mode() & 0o7777,
            want,
            "mode of the socket, {mode:?} asked"
        );
        served_by(&addr, server.pid());
        server.shutdown();
        assert!(
            std::fs::symlink_metadata(&path).is_err(),
            "the socket file outlived its server"
        );
    }
}
}

ringlink_tests::transport_test! {
fn a_stale_socket_is_replaced() {
    let dir = TempDir::new("sock-stale");
    let path = dir.path().join("svc.sock");
    let addr = path_addr(&path);
    // A listener dropped without unlinking its file.
    drop(UnixListener::bind(&path).expect("bind"));
    assert!(is_socket(&path));
    let server = ServerProc::spawn(SERVER, &addr, &[]);
    served_by(&addr, server.pid());
    server.shutdown();
    // The leftover of a server killed with SIGKILL.
    let first = ServerProc::spawn(SERVER, &addr, &[]);
    served_by(&addr, first.pid());
    first.kill();
    assert!(is_socket(&path), "a killed server cannot remove its socket");
    let second = ServerProc::spawn(SERVER, &addr, &[]);
    served_by(&addr, second.pid());
}
}

/// A handler that is never called: for binding in the test process.
struct Idle;

impl Handler for Idle {
    fn message(&self, _conn: &Connection, _req: &Request<'_>) {}
}

/// Binding in this process must fail with `AddrInUse`.
fn bind_here_fails(addr: &ServiceAddr) {
    match Service::bind(addr.clone(), PROTOCOL, ServiceOptions::default(), Idle) {
        Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::AddrInUse => {}
        Err(e) => panic!("bind at {addr}: {e}, not AddrInUse"),
        Ok(_) => panic!("bind at {addr} succeeded"),
    }
}

/// Starting a server process must fail with `AddrInUse`.
fn server_fails(addr: &ServiceAddr) {
    match ServerProc::try_spawn(SERVER, addr, &[]) {
        Err(f) => assert_eq!(f.kind, "AddrInUse", "{}", f.line),
        Ok(s) => panic!("a second server started at {addr} (pid {})", s.pid()),
    }
}

ringlink_tests::transport_test! {
fn a_live_servers_socket_is_not_stolen() {
    let dir = TempDir::new("sock-live");
    let path = dir.path().join("svc.sock");
    let addr = path_addr(&path);
    let mut server = ServerProc::spawn(SERVER, &addr, &[]);
    let ino = std::fs::symlink_metadata(&path).expect("socket").ino();
    server_fails(&addr);
    bind_here_fails(&addr);
    assert_eq!(
        std::fs::symlink_metadata(&path).expect("socket").ino(),
        ino,
        "the live server's socket file was replaced"
    );
    served_by(&addr, server.pid());
    // The failed binds' probes of the live socket never reached the
    // accept handler; our one client did.
    let s = server.wait_stats(
        "the client's end",
        ringlink_tests::procs::LINE_DEADLINE,
        |s| s.u("destroyed") == 1,
    );
    assert_eq!((s.u("accepts"), s.u("created")), (1, 1), "{s}");
}
}

/// What is at a path, to compare before and after.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    ino: u64,
    kind: String,
    link: Option<PathBuf>,
}

fn snapshot(p: &Path) -> Snapshot {
    let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    Snapshot {
        ino: m.ino(),
        kind: format!("{:?}", m.file_type()),
        link: std::fs::read_link(p).ok(),
    }
}

ringlink_tests::transport_test! {
fn planted_files_are_neither_removed_nor_followed() {
    let dir = TempDir::new("sock-planted");
    let d = dir.path();
    let target = d.join("precious.txt");
    std::fs::write(&target, b"precious").expect("write");
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let stale = d.join("stale.sock");
    drop(UnixListener::bind(&stale).expect("bind"));
    let nowhere = d.join("nowhere");

    let regular = d.join("regular.sock");
    std::fs::write(&regular, b"not a socket").expect("write");
    let directory = d.join("directory.sock");
    std::fs::create_dir(&directory).expect("mkdir");
    let to_file = d.join("to-file.sock");
    std::os::unix::fs::symlink(&target, &to_file).expect("symlink");
    let to_nowhere = d.join("to-nowhere.sock");
    std::os::unix::fs::symlink(&nowhere, &to_nowhere).expect("symlink");
    let to_stale = d.join("to-stale.sock");
    std::os::unix::fs::symlink(&stale, &to_stale).expect("symlink");

    for planted in [&regular, &directory, &to_file, &to_nowhere, &to_stale] {
        let before = snapshot(planted);
        let addr = path_addr(planted);
        server_fails(&addr);
        bind_here_fails(&addr);
        assert_eq!(
            snapshot(planted),
            before,
            "{} was changed",
            planted.display()
        );
    }
    assert_eq!(std::fs::read(&regular).expect("read"), b"not a socket");
    assert_eq!(std::fs::read(&target).expect("read"), b"precious");
    assert_eq!(
        std::fs::metadata(&target)
            .expect("stat")
            .permissions()
            .mode()
            & 0o7777,
        0o640,
        "the symlink's target was chmodded"
    );
    assert!(
        std::fs::symlink_metadata(&nowhere).is_err(),
        "something was created through the dangling symlink"
    );
    assert!(
        is_socket(&stale),
        "the stale socket behind a symlink was removed"
    );
}
}

ringlink_tests::transport_test! {
fn a_failed_bind_leaves_no_socket_file() {
    // `listen(2)` fails after the socket file was made (a backlog no
    // kernel takes): the file must not stay behind.
    let dir = TempDir::new("sock-failed");
    let path = dir.path().join("svc.sock");
    let mut opts = ServiceOptions::default();
    opts.backlog = i32::MAX;
    match Service::bind(path_addr(&path), PROTOCOL, opts, Idle) {
        Err(_) => {}
        Ok(_) => panic!("a backlog of i32::MAX was accepted"),
    }
    assert!(
        std::fs::symlink_metadata(&path).is_err(),
        "a failed bind left {} behind",
        path.display()
    );
}
}
