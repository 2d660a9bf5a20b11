//! Rings as files in a directory, which the client opens by path, so
//! that the filesystem's owner and mode decide who may map them (libqb's
//! `connection_auth_set`): made by the server in a [`RingDir`], opened by
//! the client through an [`OpenDir`] relative to the directory it holds.
//!
//! Named files cannot be sealed: whoever can write one can truncate it
//! under the other side's mapping (`SIGBUS`). They are for processes that
//! trust each other not to; the default memfds exclude it.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ringlink_common::wire::MAX_RING_PATH;
use ringlink_common::{Channel, Credentials, Error, RingRefusal, Violation};
use ringlink_ringbuf::{OpenError, Ring, Wake};

/// Ownership and permissions of a connection's named ring files (the
/// server's `Handler::ring_auth`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingAuth {
    /// Owner of the files; `None`: the server's user. Giving them to
    /// another user needs `CAP_CHOWN`.
    pub uid: Option<u32>,
    /// Group of the files; `None`: the server's group.
    pub gid: Option<u32>,
    /// Permission bits (the umask does not apply).
    pub mode: u32,
}

impl Default for RingAuth {
    fn default() -> RingAuth {
        RingAuth {
            uid: None,
            gid: None,
            mode: 0o600,
        }
    }
}

impl RingAuth {
    /// Files owned by the client's user and group, mode 0600.
    pub fn owned_by(credentials: &Credentials) -> RingAuth {
        RingAuth {
            uid: Some(credentials.uid),
            gid: Some(credentials.gid),
            mode: 0o600,
        }
    }
}

/// The start of every ring file name a service makes:
/// `ringlink-<pid>-<service>-<connection>-<ring>`.
const PREFIX: &str = "ringlink-";

/// Where a service with named rings makes them.
#[derive(Debug)]
pub struct RingDir {
    dir: PathBuf,
    /// `ringlink-<pid>-<service serial>`: unique among the services of
    /// this process, and it names the process for the stale-file sweep.
    tag: String,
}

impl RingDir {
    /// Checks the directory and removes files left there by services
    /// whose process is gone (killed before it could remove them).
    ///
    /// # Errors
    ///
    /// `InvalidInput` if `dir` is relative, not a directory, or too long
    /// for the ring paths to fit the protocol's limit.
    pub fn new(dir: PathBuf) -> io::Result<RingDir> {
        static SERIAL: AtomicU64 = AtomicU64::new(0);
        if !dir.is_absolute() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "ring_dir must be an absolute path (clients open the files by it)",
            ));
        }
        if !std::fs::metadata(&dir)?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "ring_dir is not a directory",
            ));
        }
        let tag = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        );
        // The longest prefix a connection will announce: connection ids
        // are u64 (20 digits), then 16 hex digits of random.
        let longest =
            dir.as_os_str().len() + 1 + tag.len() + 1 + 20 + 1 + 16 + 1 + "response".len();
        if longest > MAX_RING_PATH {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("ring_dir is too long: ring paths must fit in {MAX_RING_PATH} bytes"),
            ));
        }
        remove_stale(&dir);
        Ok(RingDir { dir, tag })
    }

    /// The path prefix of connection `id`'s ring files (the ring name
    /// follows it), with a random part: a local user who could predict
    /// the names could take them first in a shared directory and make
    /// every handshake fail (`O_EXCL`).
    pub(crate) fn prefix(&self, id: u64) -> String {
        use std::hash::{BuildHasher, Hasher};
        // Randomly keyed per process (std's hash seed), fresh per call.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(id);
        format!("{}-{id}-{:016x}-", self.tag, h.finish())
    }
}

impl RingDir {
    /// Makes a connection's three ring files of `capacity` bytes, owned
    /// and permitted as `auth` says, waking the client through `wake()`;
    /// returns them and the path prefix the client opens them by.
    pub(crate) fn make(
        &self,
        id: u64,
        capacity: usize,
        auth: RingAuth,
        wake: impl Fn() -> Wake,
    ) -> io::Result<([Ring; 3], Vec<u8>)> {
        let prefix = self.prefix(id);
        let one = |channel: Channel| -> io::Result<Ring> {
            // Owner-only until it has its owner: a group mode set before
            // the `fchown` would open it to the server's group.
            let ring = Ring::create_file_waking(
                &self.dir,
                &format!("{prefix}{channel}"),
                capacity,
                0o600,
                wake(),
            )
            .map_err(io::Error::other)?;
            // Dropping `ring` on an error removes the file.
            let fd = ring.memory_fd().ok_or(io::ErrorKind::Other)?;
            if auth.uid.is_some() || auth.gid.is_some() {
                nix::unistd::fchown(
                    fd.as_fd(),
                    auth.uid.map(nix::unistd::Uid::from_raw),
                    auth.gid.map(nix::unistd::Gid::from_raw),
                )?;
            }
            // The umask applied at creation; the mode asked for wins.
            nix::sys::stat::fchmod(
                fd.as_fd(),
                nix::sys::stat::Mode::from_bits_truncate(auth.mode & 0o7777),
            )?;
            Ok(ring)
        };
        let rings = [
            one(Channel::Request)?,
            one(Channel::Response)?,
            one(Channel::Event)?,
        ];
        let mut full = self.dir.as_os_str().as_bytes().to_vec();
        full.push(b'/');
        full.extend_from_slice(prefix.as_bytes());
        Ok((rings, full))
    }
}

/// The directory of a named-ring connection's files, held open by the
/// client, and the start of their names (the path prefix the server
/// sent). Files are opened and removed relative to the directory, so
/// what is removed is an entry of that directory whatever happens to the
/// path meanwhile.
#[derive(Debug)]
pub struct OpenDir {
    dir: OwnedFd,
    stem: Vec<u8>,
}

impl OpenDir {
    /// The directory of `prefix` (absolute, no NUL), opened.
    ///
    /// # Errors
    ///
    /// [`Violation::RingPath`] if the prefix is not an absolute path; a
    /// refusal if the directory cannot be opened.
    pub fn open(prefix: &[u8]) -> Result<OpenDir, Violation> {
        if prefix.first() != Some(&b'/') || prefix.contains(&0) {
            return Err(Violation::RingPath);
        }
        let cut = prefix.iter().rposition(|&b| b == b'/').unwrap_or(0);
        let dir = if cut == 0 { &b"/"[..] } else { &prefix[..cut] };
        let fd = nix::fcntl::open(
            std::ffi::OsStr::from_bytes(dir),
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| Violation::RingRefused {
            channel: Channel::Request,
            named: true,
            refusal: RingRefusal::Open(e as i32),
        })?;
        Ok(OpenDir {
            dir: fd,
            stem: prefix[cut + 1..].to_vec(),
        })
    }

    fn name(&self, channel: Channel) -> std::ffi::OsString {
        let mut n = self.stem.clone();
        n.extend_from_slice(channel.name().as_bytes());
        std::ffi::OsStr::from_bytes(&n).to_owned()
    }

    /// Opens a ring file, relative to the directory, without following a
    /// symlink and without waiting (`O_NONBLOCK`: a FIFO or a device
    /// planted there cannot hold the open); only a regular file owned by
    /// the server's user or by ours (whoever else planted a file there is
    /// not the server).
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] with [`Violation::RingRefused`];
    /// [`Error::Io`] if the file's metadata cannot be read.
    pub fn open_ring(
        &self,
        channel: Channel,
        wake: Wake,
        server: Credentials,
    ) -> Result<Ring, Error> {
        use nix::fcntl::OFlag;
        let refused = |refusal| {
            Error::Protocol(Violation::RingRefused {
                channel,
                named: true,
                refusal,
            })
        };
        let fd = nix::fcntl::openat(
            &self.dir,
            self.name(channel).as_os_str(),
            OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| refused(RingRefusal::Open(e as i32)))?;
        let file = std::fs::File::from(fd);
        let owner = file.metadata()?.uid();
        if owner != server.uid && owner != Credentials::current().uid {
            return Err(refused(RingRefusal::Owner { uid: owner }));
        }
        Ring::from_file(file, wake).map_err(|e| match refusal(e) {
            Ok(r) => refused(r),
            Err(io) => Error::Io(io),
        })
    }

    /// Removes a ring file's name from the directory (best effort).
    pub fn remove(&self, channel: Channel) {
        let _ = nix::unistd::unlinkat(
            &self.dir,
            self.name(channel).as_os_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    }
}

/// Why the ring crate refused a ring, as a protocol violation's
/// [`RingRefusal`] (the one place that maps them); an I/O error stays
/// one.
pub(crate) fn refusal(e: OpenError) -> Result<RingRefusal, io::Error> {
    Ok(match e {
        OpenError::Io(e) => return Err(e),
        OpenError::NotSealed => RingRefusal::NotSealed,
        OpenError::NotReady => RingRefusal::NotReady,
        OpenError::BadMagic => RingRefusal::BadMagic,
        OpenError::VersionMismatch { found } => RingRefusal::Version { found },
        OpenError::Incompatible(why) => RingRefusal::Incompatible(why),
        OpenError::WakeMismatch => RingRefusal::WakeMode,
        OpenError::InvalidCapacity(_) => RingRefusal::Size,
        _ => RingRefusal::Incompatible("refused"),
    })
}

/// Removes the ring files in `dir` that a dead process of this user left
/// behind. A file is taken for stale only if its name has our prefix, its
/// creator's pid no longer runs, it is a regular file and it belongs to
/// this user; anything else is left alone.
fn remove_stale(dir: &Path) {
    for (path, meta) in left_by_the_dead(dir, PREFIX) {
        if meta.is_file() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The entries directly in `dir` named `<prefix><pid>-…` whose pid no
/// longer runs and that belong to this user (not followed if links), with
/// their metadata: what a process killed before it could clean up left.
/// None without `/proc`, where every pid would look dead.
pub(crate) fn left_by_the_dead(dir: &Path, prefix: &str) -> Vec<(PathBuf, std::fs::Metadata)> {
    if !Path::new("/proc/self").exists() {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let me = nix::unistd::geteuid().as_raw();
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let rest = name.to_str()?.strip_prefix(prefix)?;
            let pid = rest.split('-').next()?.parse::<u32>().ok()?;
            if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
                return None;
            }
            let meta = entry.path().symlink_metadata().ok()?;
            (meta.uid() == me).then(|| (entry.path(), meta))
        })
        .collect()
}
