//! Making a connection's three rings: sealed memfds (the default) or
//! named files the client opens by path.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ringlink_common::ring_capacity_for;
use ringlink_common::wire::MAX_RING_PATH;
use ringlink_ringbuf::{Consumer, Producer, Ring, Wake};

use crate::RingAuth;

/// The start of every ring file name a service makes:
/// `ringlink-<pid>-<service>-<connection>-<ring>`.
const PREFIX: &str = "ringlink-";

/// Names of the three rings, appended to a connection's path prefix.
pub(crate) const RING_NAMES: [&str; 3] = ["request", "response", "event"];

/// Where a service with named rings makes them.
#[derive(Debug)]
pub(crate) struct RingDir {
    dir: PathBuf,
    /// `ringlink-<pid>-<service serial>`: unique among the services of
    /// this process, and it names the process for the stale-file sweep.
    tag: String,
}

impl RingDir {
    /// Checks the directory and removes files left there by services
    /// whose process is gone (killed before it could remove them).
    pub(crate) fn new(dir: PathBuf) -> io::Result<RingDir> {
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
    fn prefix(&self, id: u64) -> String {
        use std::hash::{BuildHasher, Hasher};
        // Randomly keyed per process (std's hash seed), fresh per call.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(id);
        format!("{}-{id}-{:016x}-", self.tag, h.finish())
    }
}

/// A connection's rings with the server's roles claimed.
pub(crate) struct Made {
    /// Request, response and event rings.
    pub(crate) rings: [Ring; 3],
    pub(crate) request: Consumer,
    pub(crate) response: Producer,
    pub(crate) event: Producer,
    /// For named rings, the path prefix the client opens them by.
    pub(crate) path_prefix: Option<Vec<u8>>,
}

impl Made {
    /// The fds the client receives: for memfd rings each ring's memory
    /// fd, in ring order; for named rings none (the client opens them by
    /// path). Wake-ups need no fd: they travel on the connection's
    /// socket.
    pub(crate) fn fds(&self) -> Vec<BorrowedFd<'_>> {
        if self.path_prefix.is_some() {
            return Vec::new();
        }
        self.rings.iter().filter_map(Ring::memory_fd).collect()
    }

    /// Closes the rings' memory fds: once the client has them (or the
    /// files are named), the mappings are all the server needs.
    pub(crate) fn forget_memory_fds(&mut self) {
        for r in &mut self.rings {
            r.forget_memory_fd();
        }
    }

    /// Marks all three rings closed by both sides: for a handshake that
    /// ends without a connection, so that a client that mapped them sees
    /// them closed whichever side it looks from.
    pub(crate) fn close(&self) {
        for r in &self.rings {
            r.close();
        }
    }
}

/// Makes connection `id`'s rings for payloads of `max_message` bytes: in
/// `named` (with `auth`) if given, else as sealed memfds. Their wake-ups
/// travel on `sock`, the connection's socket.
pub(crate) fn make(
    id: u64,
    max_message: usize,
    named: Option<(&RingDir, RingAuth)>,
    sock: &Arc<UnixStream>,
) -> io::Result<Made> {
    let cap = ring_capacity_for(max_message);
    let wake = || Wake::Socket(sock.clone());
    let (rings, path_prefix) = match named {
        None => {
            let one =
                || Ring::create_memfd_waking("ringlink", cap, wake()).map_err(io::Error::other);
            ([one()?, one()?, one()?], None)
        }
        Some((place, auth)) => {
            let prefix = place.prefix(id);
            let one = |name: &str| -> io::Result<Ring> {
                // Owner-only until it has its owner: a group mode set
                // before the `fchown` would open it to the server's group.
                let ring = Ring::create_file_waking(
                    &place.dir,
                    &format!("{prefix}{name}"),
                    cap,
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
                one(RING_NAMES[0])?,
                one(RING_NAMES[1])?,
                one(RING_NAMES[2])?,
            ];
            let mut full = place.dir.as_os_str().as_bytes().to_vec();
            full.push(b'/');
            full.extend_from_slice(prefix.as_bytes());
            (rings, Some(full))
        }
    };
    let claim = |e| io::Error::other(format!("claiming a fresh ring: {e}"));
    let request = rings[0].consumer().map_err(claim)?;
    let response = rings[1].producer().map_err(claim)?;
    let event = rings[2].producer().map_err(claim)?;
    Ok(Made {
        rings,
        request,
        response,
        event,
        path_prefix,
    })
}

/// Removes the ring files in `dir` that a dead process of this user left
/// behind. A file is taken for stale only if its name has our prefix, its
/// creator's pid no longer runs, it is a regular file and it belongs to
/// this user; anything else is left alone.
fn remove_stale(dir: &Path) {
    // Without /proc every pid would look dead: sweep nothing.
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let me = nix::unistd::geteuid().as_raw();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        if meta.is_file() && meta.uid() == me {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
