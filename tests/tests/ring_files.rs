//! Rings in named files: `Ring::create_file` never follows or reuses what
//! is already at the name (a planted symlink, dangling or not, or a
//! regular file), creates the file with the mode asked for, and removes
//! it with its last handle; `Ring::open_path` refuses a symlink and
//! anything that is not a regular file.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use ringlink_ringbuf::layout::HEADER_SIZE;
use ringlink_ringbuf::{OpenError, Ring};
use ringlink_tests::tmp::TempDir;

const CAP: usize = 4096;

fn io_kind(r: Result<Ring, OpenError>) -> ErrorKind {
    match r {
        Err(OpenError::Io(e)) => e.kind(),
        Err(e) => panic!("expected an I/O error, got {e:?}"),
        Ok(_) => panic!("expected an error, got a ring"),
    }
}

fn os_error(r: Result<Ring, OpenError>) -> Option<i32> {
    match r {
        Err(OpenError::Io(e)) => e.raw_os_error(),
        Err(e) => panic!("expected an I/O error, got {e:?}"),
        Ok(_) => panic!("expected an error, got a ring"),
    }
}

/// What a file looks like from outside: contents, mode, size.
fn snapshot(p: &Path) -> (Vec<u8>, u32, u64) {
    let m = fs::metadata(p).expect("metadata");
    (fs::read(p).expect("read"), m.mode(), m.len())
}

#[test]
fn create_file_does_not_follow_a_symlink_to_an_existing_file() {
    let dir = TempDir::new("files");
    let elsewhere = TempDir::new("elsewhere");
    let target = elsewhere.path().join("precious");
    fs::write(&target, b"precious data").expect("write");
    fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).expect("chmod");
    let before = snapshot(&target);
    symlink(&target, dir.path().join("ring")).expect("symlink");

    let r = Ring::create_file(dir.path(), "ring", CAP, 0o600);
    assert_eq!(io_kind(r), ErrorKind::AlreadyExists);

    assert_eq!(snapshot(&target), before, "the symlink's target changed");
    let link = fs::symlink_metadata(dir.path().join("ring")).expect("lstat");
    assert!(link.file_type().is_symlink(), "the symlink was replaced");
}

#[test]
fn create_file_does_not_follow_a_dangling_symlink() {
    let dir = TempDir::new("files");
    let elsewhere = TempDir::new("elsewhere");
    let target = elsewhere.path().join("not-there");
    symlink(&target, dir.path().join("ring")).expect("symlink");

    let r = Ring::create_file(dir.path(), "ring", CAP, 0o600);
    assert_eq!(io_kind(r), ErrorKind::AlreadyExists);

    assert!(
        fs::symlink_metadata(&target).is_err(),
        "the ring was created through the symlink"
    );
    assert_eq!(
        fs::read_dir(elsewhere.path()).expect("readdir").count(),
        0,
        "something appeared where the symlink points"
    );
}

#[test]
fn create_file_does_not_reuse_an_existing_file() {
    let dir = TempDir::new("files");
    let path = dir.path().join("ring");
    fs::write(&path, b"someone else's").expect("write");
    let before = snapshot(&path);

    let r = Ring::create_file(dir.path(), "ring", CAP, 0o600);
    assert_eq!(io_kind(r), ErrorKind::AlreadyExists);
    assert_eq!(snapshot(&path), before, "the existing file changed");
}

#[test]
fn create_file_makes_a_0600_file_and_removes_it_on_drop() {
    let dir = TempDir::new("files");
    let path = dir.path().join("ring");
    let ring = Ring::create_file(dir.path(), "ring", CAP, 0o600).expect("create_file");
    let m = fs::symlink_metadata(&path).expect("lstat");
    assert!(m.file_type().is_file());
    assert_eq!(m.mode() & 0o7777, 0o600, "mode {:o}", m.mode());
    assert_eq!(m.len(), (HEADER_SIZE + CAP) as u64);
    // SAFETY: geteuid has no preconditions and cannot fail.
    assert_eq!(m.uid(), unsafe { libc::geteuid() });

    // A second handle by path works, and does not remove the file.
    let opened = Ring::open_path(&path).expect("open_path");
    assert_eq!(opened.capacity(), CAP);
    drop(opened);
    assert!(path.exists());

    drop(ring);
    assert!(!path.exists(), "the creator's drop left the file");
}

#[test]
fn create_file_refuses_names_that_are_not_one_component() {
    let dir = TempDir::new("files");
    for name in ["", ".", "..", "a/b", "../ring"] {
        let r = Ring::create_file(dir.path(), name, CAP, 0o600);
        assert_eq!(io_kind(r), ErrorKind::InvalidInput, "name {name:?}");
    }
    assert_eq!(fs::read_dir(dir.path()).expect("readdir").count(), 0);
}

#[test]
fn open_path_refuses_a_symlink() {
    let dir = TempDir::new("files");
    let ring = Ring::create_file(dir.path(), "ring", CAP, 0o600).expect("create_file");
    let link = dir.path().join("link");
    symlink(dir.path().join("ring"), &link).expect("symlink");

    assert_eq!(os_error(Ring::open_path(&link)), Some(libc::ELOOP));
    // Not retried as "not ready" either.
    assert_eq!(
        os_error(Ring::open_path_timeout(&link, Duration::from_secs(30))),
        Some(libc::ELOOP)
    );
    // The real file opens.
    Ring::open_path(&dir.path().join("ring")).expect("open_path of the file itself");
    drop(ring);
}

#[test]
fn open_path_refuses_a_fifo() {
    let dir = TempDir::new("files");
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().expect("utf-8")).expect("no NUL");
    // SAFETY: `c` is a valid NUL-terminated path for the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    match Ring::open_path(&fifo) {
        Err(OpenError::Incompatible(_)) => {}
        other => panic!("open_path of a FIFO: {other:?}"),
    }
}

#[test]
fn open_path_refuses_a_file_that_is_not_a_ring() {
    let dir = TempDir::new("files");
    let path = dir.path().join("junk");
    fs::write(&path, vec![0xA5u8; HEADER_SIZE + CAP]).expect("write");
    match Ring::open_path(&path) {
        Err(OpenError::BadMagic) => {}
        other => panic!("open_path of junk: {other:?}"),
    }
    // An empty file: one whose creator has not sized it yet.
    let empty = dir.path().join("empty");
    fs::write(&empty, b"").expect("write");
    match Ring::open_path(&empty) {
        Err(OpenError::NotReady) => {}
        other => panic!("open_path of an empty file: {other:?}"),
    }
}
