//! A libqb connection's private directory, as libqb's server makes it:
//! `<base>/qb-<server pid>-<client pid>-<n>-<6 random>` (mode 0770, given
//! to the client's user), its files made `O_CREAT | O_EXCL | O_NOFOLLOW`
//! relative to the directory's fd, and everything removed when the
//! connection ends. The client side opens files under a directory it
//! checked the same way, never following a link.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fchmod, fstat, Mode};
use nix::unistd::{fchown, unlinkat, Gid, Uid, UnlinkatFlags};

use crate::named::RingAuth;

/// Where libqb puts its connection directories.
pub const DEFAULT_BASE: &str = "/dev/shm";

/// The name every libqb connection directory starts with.
const PREFIX: &str = "qb-";

/// Six characters from `[A-Za-z0-9]`, from the OS's randomness (std's
/// per-process random hash keys, fresh per call).
fn random6() -> String {
    use std::hash::{BuildHasher, Hasher};
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    let mut v = h.finish();
    (0..6)
        .map(|_| {
            let c = ALPHABET[(v % ALPHABET.len() as u64) as usize];
            v /= ALPHABET.len() as u64;
            c as char
        })
        .collect()
}

/// A connection's directory, made by the server and removed with every
/// file it made in it when dropped.
#[derive(Debug)]
pub struct ConnDir {
    path: PathBuf,
    fd: OwnedFd,
    made: Vec<OsString>,
}

impl ConnDir {
    /// Makes a fresh directory under `base` for a connection of client
    /// `client_pid` (`n` makes it unique among this server's), mode 0770,
    /// owned as `auth` says (a failure to give it away, as a server that
    /// is not root, is not an error: libqb's is not either).
    ///
    /// # Errors
    ///
    /// What `mkdir` or `open` said after a few tries with other random
    /// names.
    pub fn make(base: &Path, client_pid: i32, n: u64, auth: RingAuth) -> io::Result<ConnDir> {
        let mut last = io::Error::from(io::ErrorKind::AlreadyExists);
        for _ in 0..16 {
            let name = format!(
                "{PREFIX}{}-{client_pid}-{n}-{}",
                std::process::id(),
                random6()
            );
            let path = base.join(&name);
            match nix::unistd::mkdir(&path, Mode::from_bits_truncate(0o700)) {
                Ok(()) => {}
                Err(nix::errno::Errno::EEXIST) => continue,
                Err(e) => {
                    last = e.into();
                    break;
                }
            }
            let fd = match nix::fcntl::open(
                &path,
                OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(e) => {
                    let _ = std::fs::remove_dir(&path);
                    return Err(e.into());
                }
            };
            let dir = ConnDir {
                path,
                fd,
                made: Vec::new(),
            };
            give(dir.fd.as_fd(), auth, 0o770);
            return Ok(dir);
        }
        Err(last)
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The absolute path of `name` in the directory.
    pub fn file_path(&self, name: &str) -> Vec<u8> {
        self.path.join(name).as_os_str().as_bytes().to_vec()
    }

    /// Makes a new, empty file `name` in the directory (never following
    /// or reusing anything), owned and permitted as `auth` says; it is
    /// removed when the directory is.
    ///
    /// # Errors
    ///
    /// What `openat` said.
    pub fn create(&mut self, name: &str, auth: RingAuth) -> io::Result<File> {
        let fd = openat(
            &self.fd,
            name,
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )?;
        self.made.push(name.into());
        give(fd.as_fd(), auth, auth.mode);
        Ok(File::from(fd))
    }
}

impl Drop for ConnDir {
    fn drop(&mut self) {
        // On the service's loop: a few names, then one `rmdir`.
        for name in &self.made {
            // Gone already if the client removed it (libqb's does, over
            // the socket transport): fine.
            let _ = unlinkat(&self.fd, name.as_os_str(), UnlinkatFlags::NoRemoveDir);
        }
        if remove_if_empty(&self.path, &self.fd) {
            return;
        }
        // The client's user may write in the directory, and may have put
        // a million names there: removing them takes the kernel seconds,
        // which every other client would wait. The directory goes to a
        // thread of its own, emptied there through the fd held since it
        // was made (a directory swapped in at the path is never touched;
        // a link is removed, never followed).
        let fd = match self.fd.try_clone() {
            Ok(fd) => fd,
            Err(_) => return, // out of fds: left, the client's own quota
        };
        reaper::hand(Leftover {
            path: std::mem::take(&mut self.path),
            fd,
        });
    }
}

/// Removes the directory of `fd` if it is empty and `path` still names
/// it; `true` if it is gone (removed, or by someone else: a removed
/// directory holds nothing, and nothing can be made in it).
fn remove_if_empty(path: &Path, fd: &OwnedFd) -> bool {
    if names(path, fd) && std::fs::remove_dir(path).is_ok() {
        return true;
    }
    fstat(fd).is_ok_and(|st| st.st_nlink == 0)
}

/// Whether `path` names the directory of `fd` (not a link to it, nor
/// another put in its place).
fn names(path: &Path, fd: &OwnedFd) -> bool {
    match (std::fs::symlink_metadata(path), fstat(fd)) {
        (Ok(m), Ok(st)) => m.dev() == st.st_dev && m.ino() == st.st_ino,
        _ => false,
    }
}

/// Gives an fd's file to `auth`'s owner and mode; failures (not root)
/// leave it the server's, as libqb's server leaves it.
fn give(fd: std::os::fd::BorrowedFd<'_>, auth: RingAuth, mode: u32) {
    let _ = fchown(fd, auth.uid.map(Uid::from_raw), auth.gid.map(Gid::from_raw));
    let _ = fchmod(fd, Mode::from_bits_truncate(mode));
}

/// The client's view of a server's connection directory: checked to be
/// a directory directly under the expected base, named as libqb names
/// them, owned by the server's user or ours, and held open, so that the
/// files are opened in it whatever happens to the path.
#[derive(Debug)]
pub struct OpenedDir {
    fd: OwnedFd,
}

impl OpenedDir {
    /// Opens the directory of `name` (an absolute path the server sent):
    /// it must be `<base>/qb-…/<file prefix>`, with nothing else between.
    ///
    /// # Errors
    ///
    /// `InvalidData` for a path anywhere else or a directory that is not
    /// the server's or ours; what `open` said.
    pub fn open(base: &Path, name: &[u8], server_uid: u32) -> io::Result<(OpenedDir, OsString)> {
        let bad = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "libqb ring path outside its directory",
            )
        };
        let path = Path::new(OsStr::from_bytes(name));
        let (Some(parent), Some(file)) = (path.parent(), path.file_name()) else {
            return Err(bad());
        };
        let dir_name = parent.file_name().ok_or_else(bad)?;
        if parent.parent() != Some(base)
            || !dir_name.as_bytes().starts_with(PREFIX.as_bytes())
            || name.contains(&0)
        {
            return Err(bad());
        }
        let fd = nix::fcntl::open(
            parent,
            OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
            Mode::empty(),
        )?;
        let st = fstat(&fd)?;
        if st.st_uid != server_uid && st.st_uid != nix::unistd::geteuid().as_raw() {
            return Err(bad());
        }
        Ok((OpenedDir { fd }, file.to_owned()))
    }

    /// Opens file `name` of the directory read-write, never following a
    /// link nor waiting (a FIFO or a device planted there cannot hold the
    /// open); only a regular file owned by the server's user or ours.
    ///
    /// # Errors
    ///
    /// `InvalidData` for anything else; what `openat` said.
    pub fn open_file(&self, name: &OsStr, server_uid: u32) -> io::Result<File> {
        let fd = openat(
            &self.fd,
            name,
            OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let file = File::from(fd);
        let meta = file.metadata()?;
        let me = nix::unistd::geteuid().as_raw();
        if !meta.is_file() || (meta.uid() != server_uid && meta.uid() != me) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "libqb ring file is not a regular file of the server's",
            ));
        }
        Ok(file)
    }
}

/// Removes the connection directories a dead server process of this user
/// left under `base` (killed before it could remove them; libqb's client
/// leaves the empty directory behind): only `qb-<pid>-…` directories
/// whose pid is gone, that belong to this user, with the files in them.
pub fn remove_stale(base: &Path) {
    // Only this user's directories: under /dev/shm's sticky bit nobody
    // else can rename them, and unlinking never follows a link.
    for (dir, meta) in crate::named::left_by_the_dead(base, PREFIX) {
        if !meta.is_dir() {
            continue;
        }
        if let Ok(files) = std::fs::read_dir(&dir) {
            for f in files.flatten() {
                if f.path().symlink_metadata().is_ok_and(|m| m.is_file()) {
                    let _ = std::fs::remove_file(f.path());
                }
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
}

/// A connection's directory the client left names in, emptied off the
/// loop.
#[derive(Debug)]
struct Leftover {
    path: PathBuf,
    fd: OwnedFd,
}

/// At most this many rounds of listing per directory: a client that
/// keeps adding names while they are removed holds the reaper no longer.
const ROUNDS: usize = 4;

/// At most this many names removed per directory, whatever the rounds:
/// a kernel whose directory listing shows names added during it (tmpfs
/// did, in some releases) would otherwise let a live client hold the
/// reaper for as long as it keeps adding. A million is what the tests
/// plant; more is left where the client put it (its own quota).
const MAX_REMOVED: usize = 4 << 20;

impl Leftover {
    /// Unlinks every name in the directory through its fd (an empty
    /// directory planted there is removed, one with something in it is
    /// not entered), then removes the directory if its path still names
    /// it.
    fn empty(self) {
        let mut total = 0usize;
        for _ in 0..ROUNDS {
            let Ok(mut listing) = Dir::openat(
                &self.fd,
                ".",
                OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
                Mode::empty(),
            ) else {
                return;
            };
            let mut removed = 0usize;
            for entry in listing.iter().flatten() {
                if total + removed >= MAX_REMOVED {
                    return;
                }
                let name = entry.file_name();
                if name.to_bytes() == b"." || name.to_bytes() == b".." {
                    continue;
                }
                if unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir).is_ok()
                    || unlinkat(&self.fd, name, UnlinkatFlags::RemoveDir).is_ok()
                {
                    removed += 1;
                }
            }
            drop(listing);
            total += removed;
            if remove_if_empty(&self.path, &self.fd) || removed == 0 || !names(&self.path, &self.fd)
            {
                // Gone; or nothing more can go (a directory with
                // something in it was planted), or it was moved away
                // (emptied, it stays where the client put it).
                return;
            }
        }
    }
}

/// The thread that empties [`Leftover`] directories: started when one
/// is handed to it, ended once none waits (no thread stays behind an
/// idle service). At most `QUEUED` wait; more are left as the client
/// left them (under `/dev/shm`, its own quota).
mod reaper {
    use super::Leftover;
    use std::collections::VecDeque;
    use std::sync::{Mutex, PoisonError};

    /// Most directories waiting for the reaper (each holds an fd).
    pub(super) const QUEUED: usize = 64;

    struct Reaper {
        waiting: VecDeque<Leftover>,
        running: bool,
    }

    static REAPER: Mutex<Reaper> = Mutex::new(Reaper {
        waiting: VecDeque::new(),
        running: false,
    });

    fn lock() -> std::sync::MutexGuard<'static, Reaper> {
        REAPER.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `dir` for emptying (never waits for it).
    pub(super) fn hand(dir: Leftover) {
        let mut r = lock();
        if r.waiting.len() >= QUEUED {
            return;
        }
        r.waiting.push_back(dir);
        if !r.running {
            let started = std::thread::Builder::new()
                .name("ringlink-qbdir".into())
                .spawn(run);
            match started {
                Ok(_) => r.running = true,
                // No thread: the directory is left.
                Err(_) => r.waiting.clear(),
            }
        }
    }

    fn run() {
        loop {
            let next = {
                let mut r = lock();
                match r.waiting.pop_front() {
                    Some(dir) => dir,
                    None => {
                        r.running = false;
                        return;
                    }
                }
            };
            next.empty();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A fresh base directory for one test, removed when dropped.
    struct Base(PathBuf);

    impl Base {
        fn new(tag: &str) -> Base {
            let p =
                std::env::temp_dir().join(format!("ringlink-qbdir-{}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir(&p).expect("base");
            Base(p)
        }
    }

    impl Drop for Base {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn me() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    #[test]
    fn a_name_planted_before_the_server_creates_it_is_refused_and_its_target_untouched() {
        let base = Base::new("planted");
        let victim = base.0.join("victim");
        std::fs::write(&victim, b"precious").expect("victim");
        let mut dir = ConnDir::make(&base.0, 1, 0, RingAuth::default()).expect("dir");
        // The client's user can write in the directory: it plants the
        // next ring file's name as a link to a file of the server's.
        std::os::unix::fs::symlink(&victim, dir.path().join("request-header")).expect("plant");
        std::fs::write(dir.path().join("stray"), b"x").expect("stray");
        let err = dir
            .create("request-header", RingAuth::default())
            .expect_err("a planted name must not be reused");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
        let made = dir
            .create("request-data", RingAuth::default())
            .expect("fresh name");
        assert!(made.metadata().expect("meta").is_file());
        let path = dir.path().to_owned();
        drop(made);
        drop(dir);
        gone(&path, "the directory and what was planted in it");
        assert_eq!(std::fs::read(&victim).expect("victim"), b"precious");
    }

    /// Waits for `path` to go (what a client planted goes off the
    /// caller's thread).
    fn gone(path: &Path, what: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while path.exists() {
            assert!(std::time::Instant::now() < deadline, "{what} never went");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    #[test]
    fn an_empty_directory_goes_at_once_and_a_filled_one_soon_after() {
        let base = Base::new("filled");
        let mut dir = ConnDir::make(&base.0, 1, 0, RingAuth::default()).expect("dir");
        dir.create("request-header", RingAuth::default())
            .expect("file");
        let path = dir.path().to_owned();
        drop(dir);
        assert!(!path.exists(), "an empty directory goes at once");

        // Many names, a link to a directory, an empty directory: dropping
        // lists none of them, and they all go.
        let mut dir = ConnDir::make(&base.0, 1, 1, RingAuth::default()).expect("dir");
        dir.create("request-header", RingAuth::default())
            .expect("file");
        let path = dir.path().to_owned();
        let outside = base.0.join("outside");
        std::fs::create_dir(&outside).expect("outside");
        std::fs::write(outside.join("keep"), b"k").expect("keep");
        std::fs::write(path.join("seed"), b"").expect("seed");
        for i in 0..5000 {
            std::fs::hard_link(path.join("seed"), path.join(format!("planted-{i}"))).expect("link");
        }
        std::os::unix::fs::symlink(&outside, path.join("dir-link")).expect("link");
        std::fs::create_dir(path.join("subdir")).expect("subdir");
        drop(dir);
        gone(&path, "the filled directory");
        assert!(outside.join("keep").exists(), "a link was followed");
    }

    #[test]
    fn a_filled_directory_moved_away_is_emptied_through_its_fd_only() {
        let base = Base::new("moved");
        let dir = ConnDir::make(&base.0, 1, 0, RingAuth::default()).expect("dir");
        let path = dir.path().to_owned();
        std::fs::write(path.join("planted"), b"p").expect("planted");
        // The client moves it away and puts another, with a file of
        // someone's, at its path.
        let moved = base.0.join("moved");
        std::fs::rename(&path, &moved).expect("rename");
        std::fs::create_dir(&path).expect("impostor");
        std::fs::write(path.join("keep"), b"k").expect("keep");
        drop(dir);
        gone(&moved.join("planted"), "the planted file");
        assert!(path.join("keep").exists(), "the impostor's file stays");
        // Emptied where the client put it (its path is not ours to
        // remove by).
        assert!(moved.exists());
    }

    #[test]
    fn a_directory_swapped_in_at_the_path_is_not_emptied() {
        let base = Base::new("swapped");
        let mut dir = ConnDir::make(&base.0, 1, 0, RingAuth::default()).expect("dir");
        dir.create("event-header", RingAuth::default())
            .expect("file");
        // The directory is renamed away and another, holding a file of
        // someone's, put at its path: dropping removes only what is in
        // the directory made, through its fd.
        let moved = base.0.join("moved");
        std::fs::rename(dir.path(), &moved).expect("rename");
        std::fs::create_dir(dir.path()).expect("impostor");
        std::fs::write(dir.path().join("keep"), b"k").expect("keep");
        let impostor = dir.path().to_owned();
        drop(dir);
        assert!(impostor.join("keep").exists(), "the impostor's file stays");
        assert!(!moved.join("event-header").exists(), "our file goes");
    }

    #[test]
    fn the_client_opens_only_regular_files_directly_in_a_qb_directory() {
        let base = Base::new("client");
        let mut dir = ConnDir::make(&base.0, 1, 0, RingAuth::default()).expect("dir");
        let mut f = dir
            .create("response-header", RingAuth::default())
            .expect("file");
        f.write_all(b"hdr").expect("write");
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).expect("link");
        nix::unistd::mkfifo(&dir.path().join("fifo"), Mode::from_bits_truncate(0o600))
            .expect("fifo");

        let name = dir.file_path("response-header");
        let (opened, file) = OpenedDir::open(&base.0, &name, me()).expect("open");
        assert_eq!(file, "response-header");
        let mut s = String::new();
        opened
            .open_file(&file, me())
            .expect("regular file")
            .read_to_string(&mut s)
            .expect("read");
        assert_eq!(s, "hdr");
        // A link is not followed, a FIFO does not hold the open.
        assert!(opened.open_file(OsStr::new("link"), me()).is_err());
        let fifo = opened
            .open_file(OsStr::new("fifo"), me())
            .expect_err("fifo");
        assert_eq!(fifo.kind(), io::ErrorKind::InvalidData, "{fifo}");
        // Paths anywhere but `<base>/qb-…/<file>` are refused.
        let outside = [
            b"/etc/passwd".to_vec(),
            base.0
                .join("qb-x/../../etc/passwd")
                .as_os_str()
                .as_bytes()
                .to_vec(),
            base.0.join("notqb/ring").as_os_str().as_bytes().to_vec(),
            base.0.join("qb-a/b/c").as_os_str().as_bytes().to_vec(),
            [&name[..], b"\0x"].concat(),
        ];
        for p in outside {
            let err = OpenedDir::open(&base.0, &p, me()).expect_err("outside");
            assert_eq!(
                err.kind(),
                io::ErrorKind::InvalidData,
                "{:?}",
                String::from_utf8_lossy(&p)
            );
        }
        // A link put in the directory's place is not followed.
        let real = base.0.join("qb-real");
        std::fs::create_dir(&real).expect("real");
        std::os::unix::fs::symlink(&real, base.0.join("qb-link")).expect("dirlink");
        let via_link = base.0.join("qb-link/ring");
        assert!(OpenedDir::open(&base.0, via_link.as_os_str().as_bytes(), me()).is_err());
        // A directory owned by someone else is refused (as root only can
        // a test make one).
        if me() == 0 {
            let theirs = base.0.join("qb-theirs");
            std::fs::create_dir(&theirs).expect("theirs");
            fchown_path(&theirs, 65534);
            let p = theirs.join("ring");
            let err = OpenedDir::open(&base.0, p.as_os_str().as_bytes(), 0).expect_err("owner");
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        }
    }

    fn fchown_path(p: &Path, uid: u32) {
        std::os::unix::fs::chown(p, Some(uid), None).expect("chown");
    }

    #[test]
    fn stale_directories_of_dead_servers_go_and_live_ones_stay() {
        let base = Base::new("stale");
        // A pid that cannot be running: above the kernel's maximum.
        let dead = base.0.join("qb-4194305-1-0-abcdef");
        std::fs::create_dir(&dead).expect("dead");
        std::fs::write(dead.join("request-header"), b"h").expect("file");
        let live = base.0.join(format!("qb-{}-1-0-abcdef", std::process::id()));
        std::fs::create_dir(&live).expect("live");
        let other = base.0.join("qb-nopid");
        std::fs::create_dir(&other).expect("other");
        remove_stale(&base.0);
        assert!(!dead.exists());
        assert!(live.exists());
        assert!(other.exists());
    }
}
