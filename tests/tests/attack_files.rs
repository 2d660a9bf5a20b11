//! File hygiene of a live server with named rings (`--ring-dir`), against
//! an attacker who can write to the ring directory (it is shared, like
//! `/dev/shm`) and learns the names of its own connections' rings: it
//! plants symlinks (to a file of the victim's), hard links and files of
//! its own at its best guesses of the next connections' ring names. The
//! names carry a random part, so the guesses miss: the next clients are
//! served, nothing is written through the planted names (and were a
//! name hit, `O_EXCL | O_NOFOLLOW` would refuse it: `ring_files`). A
//! server that binds on the directory sweeps only regular files of its
//! own user whose server is dead: a planted symlink and another user's
//! file are left alone, and nothing is followed.
//!
//! The rest of the hygiene is proven elsewhere, cited in
//! `docs/RELIABILITY.md`: the listening socket is not created through a
//! planted symlink and gets the configured mode (`ipc_socket_path`),
//! named ring files are 0600 and removed on every way out of a
//! handshake (`ipc_named_rings`), and `Ring::create_file` refuses
//! existing names and symlinks (`ring_files`).

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ringlink_common::wire::{Status, Transport};
use ringlink_ipcc::Client;
use ringlink_tests::attack::{self, dial, read_answer, Answer, Bystander};
use ringlink_tests::procs::{can_switch_user, client_options, unique_addr, ServerProc};
use ringlink_tests::tmp::TempDir;

const SERVER: &str = env!("CARGO_BIN_EXE_test_server");

/// `nobody`, the owner of the other user's file (tests run as root).
const NOBODY: u32 = 65534;

/// A ring directory anyone may write to (sticky, 1777).
fn shared_dir(tag: &str) -> TempDir {
    let dir = TempDir::new(tag);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777))
        .expect("chmod the ring dir");
    dir
}

/// The victim's precious file (outside the ring directory), and what it
/// holds.
fn precious(dir: &Path) -> PathBuf {
    let p = dir.join("precious");
    std::fs::write(&p, b"do not touch").expect("write");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    p
}

fn assert_untouched(p: &Path) {
    let m = std::fs::metadata(p).expect("the precious file");
    assert_eq!(std::fs::read(p).expect("read"), b"do not touch", "contents");
    assert_eq!((m.len(), m.mode() & 0o7777), (12, 0o640), "size or mode");
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Learns a connection's ring path prefix: a raw handshake up to the
/// response, whose named-ring prefix (`DIR/ringlink-PID-N-ID-RANDOM-`)
/// follows it on the stream. Returns the part before the id, the id, and
/// the part after it.
fn learn_prefix(server: &ServerProc) -> (String, u64, String) {
    let sock = dial(server.addr());
    (&sock)
        .write_all(&attack::request(Transport::Shm, 0))
        .expect("request");
    let Answer::Response { response, .. } = read_answer(&sock).expect("answer") else {
        panic!("no answer");
    };
    assert_eq!(response.status, Status::Ok);
    let mut prefix = vec![0u8; response.path_len as usize];
    std::io::Read::read_exact(&mut &sock, &mut prefix).expect("the ring path prefix");
    let prefix = String::from_utf8(prefix).expect("utf-8");
    let id = response.connection_id;
    let (stem, rest) = prefix
        .rsplit_once(&format!("-{id}-"))
        .unwrap_or_else(|| panic!("prefix {prefix:?} does not hold the id {id}"));
    (format!("{stem}-"), id, rest.to_owned())
}

#[test]
fn ring_names_cannot_be_taken_in_advance() {
    let rings = shared_dir("plant-rings");
    let elsewhere = TempDir::new("plant-victim");
    let target = precious(elsewhere.path());
    let d = rings.path().to_str().expect("utf-8").to_owned();
    let server = ServerProc::spawn(SERVER, &unique_addr("plant"), &["--ring-dir", &d]);
    let mut good = Bystander::start(server.addr());
    // Two half handshakes show what a local attacker can learn of the
    // names: the part after the connection id differs every time.
    let (stem, id, random) = learn_prefix(&server);
    let (stem2, id2, random2) = learn_prefix(&server);
    assert_eq!((stem2.as_str(), id2), (stem.as_str(), id + 1));
    assert_ne!(random, random2, "the ring names are predictable");
    // Our half handshakes' files go when we do.
    let deadline = std::time::Instant::now() + attack::HANG;
    while !names(rings.path()).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            names(rings.path())
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // The attacker's best guesses for the next connections' names: no
    // random part, or the last one seen; as a symlink to the victim's
    // file, a hard link to it, a file of its own.
    let mut planted = Vec::new();
    for next in id2 + 1..id2 + 4 {
        for guess in ["", random.as_str(), random2.as_str()] {
            for (ring, how) in [
                ("request", "symlink"),
                ("response", "hard link"),
                ("event", "file"),
            ] {
                let path = if guess.is_empty() {
                    format!("{stem}{next}-{ring}")
                } else {
                    format!("{stem}{next}-{guess}-{ring}")
                };
                match how {
                    "symlink" => std::os::unix::fs::symlink(&target, &path).expect("symlink"),
                    "hard link" => std::fs::hard_link(&target, &path).expect("hard link"),
                    _ => std::fs::write(&path, b"attacker").expect("write"),
                }
                planted.push(path);
            }
        }
    }
    let mut o = client_options(0);
    o.wait_for_server = false;
    for _ in 0..3 {
        let mut c = Client::connect(server.addr(), &o)
            .unwrap_or_else(|e| panic!("a client after the names were planted: {e}"));
        let mut buf = [0u8; 8];
        c.send_recv(
            ringlink_tests::ipc::id::ECHO,
            b"x",
            &mut buf,
            Some(attack::HANG),
        )
        .expect("echo");
        good.served(5);
    }
    assert_untouched(&target);
    for p in planted.iter().filter(|p| p.ends_with("-event")) {
        assert_eq!(std::fs::read(p).expect("read"), b"attacker");
    }
    // Nothing but the planted names is left.
    let mut want: Vec<String> = planted
        .iter()
        .map(|p| {
            Path::new(p)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    want.sort();
    assert_eq!(names(rings.path()), want);
    let report = good.finish();
    eprintln!(
        "{} guessed ring names planted (symlinks, hard links, files): the next 3 clients \
         served, the victim's file untouched; bystander {} round trips",
        planted.len(),
        report.requests
    );
    let (fin, _) = server.shutdown();
    assert_eq!(fin.u("violations"), 0, "{fin}");
}

/// A pid no process has.
fn dead_pid() -> u32 {
    (2..32768u32)
        .rev()
        .find(|p| !Path::new(&format!("/proc/{p}")).exists())
        .expect("a free pid")
}

#[test]
fn the_stale_sweep_follows_nothing_and_takes_only_its_own() {
    let rings = shared_dir("sweep-rings");
    let elsewhere = TempDir::new("sweep-victim");
    let target = precious(elsewhere.path());
    let dead = dead_pid();
    let name = |n: u32, ring: &str| rings.path().join(format!("ringlink-{dead}-0-{n}-{ring}"));
    // What a killed server of ours left (swept), a symlink planted to
    // look like one (left, not followed), another user's file (left).
    std::fs::write(name(1, "request"), b"stale").expect("write");
    std::os::unix::fs::symlink(&target, name(2, "request")).expect("symlink");
    let others = can_switch_user().then(|| {
        let p = name(3, "request");
        std::fs::write(&p, b"someone else's").expect("write");
        std::os::unix::fs::chown(&p, Some(NOBODY), Some(NOBODY)).expect("chown");
        p
    });
    if others.is_none() {
        eprintln!("(not root: the other user's file is not tried)");
    }
    let d = rings.path().to_str().expect("utf-8").to_owned();
    let server = ServerProc::spawn(SERVER, &unique_addr("sweep"), &["--ring-dir", &d]);
    assert!(
        !name(1, "request").exists(),
        "our dead server's file was not swept"
    );
    assert!(
        std::fs::symlink_metadata(name(2, "request")).is_ok_and(|m| m.file_type().is_symlink()),
        "the planted symlink was removed"
    );
    assert_untouched(&target);
    if let Some(p) = others {
        assert_eq!(std::fs::read(&p).expect("read"), b"someone else's");
    }
    attack::newcomer(server.addr());
    server.shutdown();
}
