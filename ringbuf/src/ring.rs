//! Creating, opening and sharing a ring; claiming its two roles.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{ClaimError, OpenError, Role};
use crate::layout::{valid_capacity, HEADER_SIZE, LAYOUT_VERSION, MAGIC};
use crate::layout::{CLOSED_BY_CONSUMER, CLOSED_BY_PRODUCER};
use crate::mem::Shared;
use crate::signals::{Direction, Signals};
use crate::sync::Ordering;
use crate::wake::handshake;
use crate::{Consumer, Producer};

/// Permissions of a ring file when [`Ring::create_file`] is given none.
pub const DEFAULT_FILE_MODE: u32 = 0o600;

/// How the two sides of a ring sleep and wake each other, as recorded
/// in the ring header (offset 24): both sides must use the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum WakeMode {
    /// Two eventfds, pollable with epoll, passed to the peer with the
    /// memory fd. The default of [`Ring::create`]. Both processes then
    /// share the eventfds' open file descriptions: see [`Wake::EventFd`]
    /// for what that allows a peer to do.
    EventFd = 1,
    /// Futexes on words inside the mapping: nothing to pass besides the
    /// file, so a ring opened by path can use it. Not pollable.
    Futex = 2,
    /// One byte on a connected Unix socket, each process holding its own
    /// end: pollable, and safe with a peer that does not follow the
    /// rules (see [`Wake::Socket`]).
    Socket = 3,
}

impl WakeMode {
    fn from_word(w: u32) -> Option<WakeMode> {
        match w {
            1 => Some(WakeMode::EventFd),
            2 => Some(WakeMode::Futex),
            3 => Some(WakeMode::Socket),
            _ => None,
        }
    }
}

/// What this process sleeps on, and signals its peer through, for one
/// ring: given when the ring is created or opened, and matching the
/// ring's [`WakeMode`].
///
/// A signal is sent only when the peer has raised its waiting flag, so
/// none of these costs anything while both sides are busy.
#[derive(Debug)]
pub enum Wake {
    /// A pair of eventfds. Passed with `SCM_RIGHTS`, an eventfd is one
    /// open file description in both processes, with one `O_NONBLOCK`
    /// flag: the peer can clear it and then saturate the counter, so
    /// that this process's next signal (`write(2)`) waits forever, or
    /// drain it, so that a drain (`read(2)`) does. The ring sets
    /// `O_NONBLOCK` when it opens the fds, but cannot keep the peer from
    /// clearing it again. Use eventfds only within one process or
    /// between processes that trust each other; use
    /// [`Socket`](Wake::Socket) otherwise.
    EventFd(WakeFds),
    /// Futexes on the waiting flags themselves: nothing to pass, and no
    /// call a peer can make wait (`FUTEX_WAKE` never blocks; a waiter's
    /// `FUTEX_WAIT` ends at its own timeout). Not pollable.
    Futex,
    /// One byte, sent with `MSG_DONTWAIT | MSG_NOSIGNAL`, on this
    /// process's end of a connected Unix stream socket whose other end
    /// the peer holds; a sleeper polls its end for input and drains it
    /// with `MSG_DONTWAIT` reads. The two ends are distinct open file
    /// descriptions, so nothing the peer does to its end's flags reaches
    /// ours, and the per-call flags would hold even if it could: a peer
    /// that never reads only makes our sends fail with `EAGAIN` (its end
    /// already has bytes to wake it), one that floods us costs a bounded
    /// drain per wait. When the peer's end closes (it exited), the ring
    /// is marked closed at the next drain, so a waiting call returns
    /// `Closed` instead of waiting for its timeout.
    ///
    /// Several rings may share one socket (ringlink's connections use
    /// the one that introduced the two processes). A drain then takes
    /// the wake-ups of all of them: a process waiting on several at once
    /// drains once, then raises their flags (see
    /// [`Consumer::raise_wake_flag`](crate::Consumer::raise_wake_flag)),
    /// so that no wake-up is taken from a ring already waiting; and only
    /// one thread may drain a socket and wait on it (the blocking calls
    /// of a ring do both), or one would take the other's wake-ups. A
    /// process with several waiting threads has one of them read the
    /// socket and tell the others (ringlink's server: its loop reads each
    /// connection's socket and wakes the threads waiting for room in its
    /// rings).
    Socket(Arc<UnixStream>),
}

impl Wake {
    /// A fresh pair of non-blocking eventfds.
    ///
    /// # Errors
    ///
    /// If `eventfd(2)` fails.
    pub fn eventfds() -> std::io::Result<Wake> {
        Ok(Wake::EventFd(WakeFds {
            data_ready: crate::sys::eventfd()?,
            space_ready: crate::sys::eventfd()?,
        }))
    }

    /// The wake mode this is.
    pub fn mode(&self) -> WakeMode {
        match self {
            Wake::EventFd(_) => WakeMode::EventFd,
            Wake::Futex => WakeMode::Futex,
            Wake::Socket(_) => WakeMode::Socket,
        }
    }

    fn into_signals(self) -> Signals {
        match self {
            Wake::EventFd(w) => Signals::EventFd {
                data_ready: w.data_ready,
                space_ready: w.space_ready,
            },
            Wake::Futex => Signals::Futex,
            Wake::Socket(s) => Signals::Socket(s),
        }
    }
}

/// The wake-up fds of an [`EventFd`](WakeMode::EventFd) ring, for
/// [`Ring::from_fds`].
#[derive(Debug)]
pub struct WakeFds {
    /// Signalled by the producer for a consumer waiting for data.
    pub data_ready: OwnedFd,
    /// Signalled by the consumer for a producer waiting for space.
    pub space_ready: OwnedFd,
}

/// A shared ring: the mapping of its file, its wake-up objects, and the
/// right to claim its [`Producer`] and [`Consumer`] roles (each once, in
/// any process).
///
/// Cloning a `Ring` is cheap (it is reference-counted); the mapping is
/// released when the last clone and the last role handle are gone.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ringlink_ringbuf::Ring;
///
/// let ring = Ring::create(4096)?;
/// let mut tx = ring.producer()?;
/// let mut rx = ring.consumer()?;
/// tx.try_push(b"hello")?;
/// let mut buf = [0u8; 16];
/// let n = rx.try_pop_into(&mut buf)?;
/// assert_eq!(&buf[..n], b"hello");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Ring {
    pub(crate) shared: Arc<Shared>,
    /// The ring file's fd, while this handle keeps it (to hand it to a
    /// peer); see [`forget_memory_fd`](Ring::forget_memory_fd).
    memory: Option<Arc<OwnedFd>>,
}

impl Ring {
    /// Creates a ring of `capacity` data bytes in a sealed memfd with
    /// eventfd wake-ups. Nothing is left in the filesystem, whatever
    /// happens to the process.
    ///
    /// # Errors
    ///
    /// [`OpenError::InvalidCapacity`] unless `capacity` is a power of two
    /// within [`MIN_CAPACITY`](crate::MIN_CAPACITY)..=[`MAX_CAPACITY`](crate::MAX_CAPACITY);
    /// [`OpenError::Io`] if a system call fails.
    pub fn create(capacity: usize) -> Result<Ring, OpenError> {
        Ring::create_memfd("ringlink", capacity, WakeMode::EventFd)
    }

    /// Like [`create`](Self::create), with a memfd name (shown in
    /// `/proc/PID/fd`, for debugging) and a wake mode.
    ///
    /// # Errors
    ///
    /// As [`create`](Self::create); [`OpenError::WakeMismatch`] for
    /// [`WakeMode::Socket`], which needs the socket
    /// ([`create_memfd_waking`](Self::create_memfd_waking)).
    pub fn create_memfd(name: &str, capacity: usize, wake: WakeMode) -> Result<Ring, OpenError> {
        let wake = match wake {
            WakeMode::EventFd => Wake::eventfds()?,
            WakeMode::Futex => Wake::Futex,
            // There is no socket to make: the caller has one.
            WakeMode::Socket => return Err(OpenError::WakeMismatch),
        };
        Ring::create_memfd_waking(name, capacity, wake)
    }

    /// Like [`create_memfd`](Self::create_memfd), with the wake-up
    /// objects this process will use (for [`Wake::Socket`], its end of
    /// the socket to the peer).
    ///
    /// # Errors
    ///
    /// As [`create`](Self::create).
    pub fn create_memfd_waking(name: &str, capacity: usize, wake: Wake) -> Result<Ring, OpenError> {
        if !valid_capacity(capacity) {
            return Err(OpenError::InvalidCapacity(capacity));
        }
        let cname = CString::new(name.replace('\0', "?")).expect("NULs replaced");
        let fd = crate::sys::memfd_create(&cname)?;
        let file = File::from(fd);
        file.set_len((HEADER_SIZE + capacity) as u64)?;
        // Seal before mapping or sharing: from here on nobody, us
        // included, can shrink or grow the file, so no peer can make an
        // access to the mapping fault with SIGBUS.
        crate::sys::add_seals(file.as_fd(), crate::sys::RING_SEALS)?;
        Ring::init_file(file, capacity, wake)
    }

    /// Creates a ring in a new file `dir/name` with permissions `mode`
    /// (`None`: [`DEFAULT_FILE_MODE`], owner read/write only) and futex
    /// wake-ups, so that another process can open it with
    /// [`open_path`](Self::open_path). The process umask still applies.
    ///
    /// The file is created with `O_CREAT | O_EXCL | O_NOFOLLOW`: an
    /// existing file or a planted symlink makes this fail rather than be
    /// followed or reused. It is removed when this handle (and every clone
    /// and role from it) is dropped, unless [`persist`](Self::persist) was
    /// called.
    ///
    /// A named file has no seals: another process with write access could
    /// truncate it and make this process fault on access (SIGBUS). Prefer
    /// [`create`](Self::create) between processes that do not trust each
    /// other.
    ///
    /// # Errors
    ///
    /// [`OpenError::InvalidCapacity`] as for [`create`](Self::create);
    /// [`OpenError::Io`] with `AlreadyExists` if the name is taken, or
    /// `InvalidInput` if `name` contains `/` or is `.`/`..`.
    pub fn create_file(
        dir: &Path,
        name: &str,
        capacity: usize,
        mode: impl Into<Option<u32>>,
    ) -> Result<Ring, OpenError> {
        Ring::create_file_waking(dir, name, capacity, mode, Wake::Futex)
    }

    /// Like [`create_file`](Self::create_file), with this process's
    /// wake-up objects. The peer opens the file by path and supplies its
    /// own (see [`open_path_waking`](Self::open_path_waking)): for
    /// [`Wake::Socket`], its end of the socket, which is how a server
    /// with named rings keeps them in its epoll set.
    ///
    /// # Errors
    ///
    /// As [`create_file`](Self::create_file).
    pub fn create_file_waking(
        dir: &Path,
        name: &str,
        capacity: usize,
        mode: impl Into<Option<u32>>,
        wake: Wake,
    ) -> Result<Ring, OpenError> {
        let mode = mode.into().unwrap_or(DEFAULT_FILE_MODE);
        if !valid_capacity(capacity) {
            return Err(OpenError::InvalidCapacity(capacity));
        }
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(OpenError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "ring file name must be a single path component",
            )));
        }
        let path = dir.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true) // O_CREAT | O_EXCL: never reuse, never follow.
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)?;
        let made = (|| {
            file.set_len((HEADER_SIZE + capacity) as u64)?;
            Ring::init_file(file, capacity, wake)
        })();
        match made {
            Ok(ring) => {
                *ring
                    .shared
                    .unlink_on_drop
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(path);
                Ok(ring)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Maps a freshly sized file, writes its header and publishes it.
    #[cfg(not(loom))]
    fn init_file(file: File, capacity: usize, wake: Wake) -> Result<Ring, OpenError> {
        let map = memmap2::MmapOptions::new()
            .len(HEADER_SIZE + capacity)
            .map_raw(&file)?;
        let mode = wake.mode();
        let shared = Shared::mapped(map, capacity, wake.into_signals());
        let meta = &shared.header().meta.0;
        meta.version.store(LAYOUT_VERSION, Ordering::Relaxed);
        meta.header_size
            .store(HEADER_SIZE as u32, Ordering::Relaxed);
        meta.capacity.store(capacity as u64, Ordering::Relaxed);
        meta.wake_mode.store(mode as u32, Ordering::Relaxed);
        // Release: publishes the fields above; pairs with the Acquire load
        // of `magic` in `open_file`.
        meta.magic.store(MAGIC, Ordering::Release);
        Ok(Ring {
            shared: Arc::new(shared),
            memory: Some(Arc::new(OwnedFd::from(file))),
        })
    }

    #[cfg(loom)]
    fn init_file(_: File, _: usize, _: Wake) -> Result<Ring, OpenError> {
        unreachable!("file-backed rings are not built under loom")
    }

    /// Opens a ring received as fds (typically over `SCM_RIGHTS`): the
    /// memory fd and, for an [`EventFd`](WakeMode::EventFd) ring, its two
    /// eventfds.
    ///
    /// Everything is checked before use: the memory fd must be a memfd
    /// sealed against resizing (`F_SEAL_SHRINK | F_SEAL_GROW`) of exactly
    /// header + capacity bytes, carrying the magic, this layout version
    /// and a valid capacity; the wake fds must be eventfds (they are made
    /// non-blocking). Named files are opened with
    /// [`open_path`](Self::open_path) instead.
    ///
    /// # Errors
    ///
    /// [`OpenError::NotReady`], [`BadMagic`](OpenError::BadMagic),
    /// [`VersionMismatch`](OpenError::VersionMismatch),
    /// [`Incompatible`](OpenError::Incompatible),
    /// [`NotSealed`](OpenError::NotSealed),
    /// [`WakeMismatch`](OpenError::WakeMismatch) (eventfds given for a futex
    /// ring, missing for an eventfd ring, or not eventfds), [`Io`](OpenError::Io).
    pub fn from_fds(memory: OwnedFd, wake: Option<WakeFds>) -> Result<Ring, OpenError> {
        Ring::from_memfd(memory, wake.map_or(Wake::Futex, Wake::EventFd))
    }

    /// Opens a ring received as a memory fd, with this process's wake-up
    /// objects (for [`Wake::Socket`], its end of the socket to the peer;
    /// for [`Wake::EventFd`], the eventfds received with the memory fd).
    /// The checks are those of [`from_fds`](Self::from_fds), and the
    /// wake mode must be the one the ring header records.
    ///
    /// # Errors
    ///
    /// As [`from_fds`](Self::from_fds).
    pub fn from_memfd(memory: OwnedFd, wake: Wake) -> Result<Ring, OpenError> {
        // Only a sealed memfd: a plain file (which cannot be sealed) or a
        // memfd without the size seals could be truncated by the sender,
        // killing us with SIGBUS on the next access.
        let seals = crate::sys::get_seals(memory.as_fd())?.ok_or(OpenError::NotSealed)?;
        let needed = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
        if seals & needed != needed {
            return Err(OpenError::NotSealed);
        }
        if let Wake::EventFd(w) = &wake {
            check_wake_fds(w)?;
        }
        Ring::map_file(File::from(memory), wake)
    }

    /// Opens a ring file by path (one made by
    /// [`create_file`](Self::create_file)). The path is opened with
    /// `O_NOFOLLOW`, so a symlink in its last component is refused.
    ///
    /// # Errors
    ///
    /// As [`from_fds`](Self::from_fds); [`OpenError::NotReady`] while the
    /// creator has not finished initialising the file.
    pub fn open_path(path: &Path) -> Result<Ring, OpenError> {
        Ring::open_path_waking(path, Wake::Futex)
    }

    /// Opens a ring file by path, with the eventfds of an
    /// [`EventFd`](WakeMode::EventFd) ring (received separately, e.g. over
    /// `SCM_RIGHTS`). The eventfds are checked and made non-blocking as in
    /// [`from_fds`](Self::from_fds).
    ///
    /// # Errors
    ///
    /// As [`open_path`](Self::open_path).
    pub fn open_path_with(path: &Path, wake: Option<WakeFds>) -> Result<Ring, OpenError> {
        Ring::open_path_waking(path, wake.map_or(Wake::Futex, Wake::EventFd))
    }

    /// Opens a ring file by path, with this process's wake-up objects
    /// (see [`from_memfd`](Self::from_memfd)). The path is opened with
    /// `O_NOFOLLOW` and `O_NONBLOCK`, so neither a symlink nor a FIFO or
    /// device planted at the path can make the open wait; anything but a
    /// regular file is then refused.
    ///
    /// # Errors
    ///
    /// As [`open_path`](Self::open_path).
    pub fn open_path_waking(path: &Path, wake: Wake) -> Result<Ring, OpenError> {
        if let Wake::EventFd(w) = &wake {
            check_wake_fds(w)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path)?;
        Ring::map_file(file, wake)
    }

    /// Opens a ring file the caller has opened itself (say with `openat`
    /// relative to a directory it holds, `O_NOFOLLOW | O_NONBLOCK`), with
    /// this process's wake-up objects: the checks of
    /// [`open_path`](Self::open_path) (a regular file of a ring's size,
    /// a valid header, the wake mode) and no seal check, as for any named
    /// file.
    ///
    /// # Errors
    ///
    /// As [`open_path`](Self::open_path).
    pub fn from_file(file: File, wake: Wake) -> Result<Ring, OpenError> {
        if let Wake::EventFd(w) = &wake {
            check_wake_fds(w)?;
        }
        Ring::map_file(file, wake)
    }

    /// [`open_path`](Self::open_path), retrying while the file is missing
    /// or [`NotReady`](OpenError::NotReady), for up to `timeout`.
    ///
    /// # Errors
    ///
    /// The last error once `timeout` has passed, or at once any error
    /// other than a missing or unready file.
    pub fn open_path_timeout(path: &Path, timeout: Duration) -> Result<Ring, OpenError> {
        let deadline = ringlink_common::time::deadline_in(timeout);
        loop {
            match Ring::open_path(path) {
                Err(OpenError::NotReady) if Instant::now() < deadline => {}
                Err(OpenError::Io(e))
                    if e.kind() == std::io::ErrorKind::NotFound && Instant::now() < deadline => {}
                other => return other,
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[cfg(not(loom))]
    fn map_file(file: File, wake: Wake) -> Result<Ring, OpenError> {
        let meta = file.metadata()?;
        if !meta.file_type().is_file() {
            // memfds report as regular files; anything else (a FIFO, a
            // device, a socket) is refused before it is mapped.
            return Err(OpenError::Incompatible("not a regular file"));
        }
        let size = meta.len();
        if size <= HEADER_SIZE as u64 {
            // An empty file is one its creator has not sized yet.
            return Err(if size == 0 {
                OpenError::NotReady
            } else {
                OpenError::Incompatible("file smaller than a ring")
            });
        }
        let capacity = usize::try_from(size - HEADER_SIZE as u64)
            .map_err(|_| OpenError::Incompatible("file too large"))?;
        if !valid_capacity(capacity) {
            return Err(OpenError::Incompatible(
                "file size is not header + power-of-two capacity",
            ));
        }
        let map = memmap2::MmapOptions::new()
            .len(HEADER_SIZE + capacity)
            .map_raw(&file)?;
        // Validate the header before handing out anything built on it;
        // each field is read once. Signals are set once the wake mode is
        // known.
        let shared = Shared::mapped(map, capacity, Signals::Futex);
        let m = &shared.header().meta.0;
        // Acquire: pairs with the creator's Release store of `magic`, so
        // the fields read below are the ones it wrote.
        match m.magic.load(Ordering::Acquire) {
            MAGIC => {}
            0 => return Err(OpenError::NotReady),
            _ => return Err(OpenError::BadMagic),
        }
        let version = m.version.load(Ordering::Relaxed);
        if version != LAYOUT_VERSION {
            return Err(OpenError::VersionMismatch { found: version });
        }
        if m.header_size.load(Ordering::Relaxed) != HEADER_SIZE as u32 {
            return Err(OpenError::Incompatible("header size"));
        }
        if m.capacity.load(Ordering::Relaxed) != capacity as u64 {
            return Err(OpenError::Incompatible("capacity does not match file size"));
        }
        let mode = WakeMode::from_word(m.wake_mode.load(Ordering::Relaxed))
            .ok_or(OpenError::Incompatible("unknown wake mode"))?;
        if mode != wake.mode() {
            return Err(OpenError::WakeMismatch);
        }
        let mut shared = shared;
        shared.signals = wake.into_signals();
        Ok(Ring {
            shared: Arc::new(shared),
            memory: Some(Arc::new(OwnedFd::from(file))),
        })
    }

    #[cfg(loom)]
    fn map_file(_: File, _: Wake) -> Result<Ring, OpenError> {
        unreachable!("file-backed rings are not built under loom")
    }

    /// A ring on the heap, for tests and model checking in one process
    /// (eventfd wake-ups; under loom, a modelled eventfd).
    ///
    /// # Errors
    ///
    /// [`OpenError::InvalidCapacity`]; [`OpenError::Io`] if an eventfd
    /// cannot be made.
    pub fn heap(capacity: usize) -> Result<Ring, OpenError> {
        if !valid_capacity(capacity) {
            return Err(OpenError::InvalidCapacity(capacity));
        }
        #[cfg(not(loom))]
        let signals = Signals::EventFd {
            data_ready: crate::sys::eventfd()?,
            space_ready: crate::sys::eventfd()?,
        };
        #[cfg(loom)]
        let signals = Signals::Loom(std::sync::Arc::new(Default::default()));
        Ok(Ring {
            shared: Arc::new(Shared::heap(capacity, WakeMode::EventFd as u32, signals)),
            memory: None,
        })
    }

    /// Claims the producer role.
    ///
    /// # Errors
    ///
    /// [`ClaimError::Taken`] if any process has claimed it before;
    /// [`ClaimError::Corrupt`] if the positions in the header are invalid.
    pub fn producer(&self) -> Result<Producer, ClaimError> {
        self.claim(Role::Producer)?;
        Producer::new(self.shared.clone()).map_err(ClaimError::Corrupt)
    }

    /// Claims the consumer role.
    ///
    /// # Errors
    ///
    /// [`ClaimError::Taken`] if any process has claimed it before;
    /// [`ClaimError::Corrupt`] if the positions in the header are invalid.
    pub fn consumer(&self) -> Result<Consumer, ClaimError> {
        self.claim(Role::Consumer)?;
        Consumer::new(self.shared.clone()).map_err(ClaimError::Corrupt)
    }

    fn claim(&self, role: Role) -> Result<(), ClaimError> {
        let c = &self.shared.header().control.0;
        let word = match role {
            Role::Producer => &c.producer_owner,
            Role::Consumer => &c.consumer_owner,
        };
        let me = std::process::id().max(1);
        // AcqRel on success: orders this claim with any earlier claim or
        // release of the word (there is none to pair with in the
        // protocol; the CAS itself is what makes the claim exclusive).
        word.compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire)
            .map(drop)
            .map_err(|owner| ClaimError::Taken { role, owner })
    }

    /// Size of the data region in bytes.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// Largest record payload this ring accepts: `capacity / 2 - 8`.
    pub fn max_payload(&self) -> usize {
        crate::layout::max_payload(self.shared.capacity)
    }

    /// The ring's wake mode.
    pub fn wake_mode(&self) -> WakeMode {
        match self.shared.signals {
            Signals::EventFd { .. } => WakeMode::EventFd,
            Signals::Socket(_) => WakeMode::Socket,
            _ => WakeMode::Futex,
        }
    }

    /// The memory fd, to hand to a peer (`None` for heap rings, and once
    /// [`forget_memory_fd`](Self::forget_memory_fd) was called).
    pub fn memory_fd(&self) -> Option<BorrowedFd<'_>> {
        self.memory.as_deref().map(|f| f.as_fd())
    }

    /// Drops this handle's memory fd: the mapping stays, and so does the
    /// ring, but the fd it was made from is closed once no clone made
    /// earlier holds it either. A process serving many rings keeps one fd
    /// less per ring once each has been handed to its peer.
    pub fn forget_memory_fd(&mut self) {
        self.memory = None;
    }

    /// The eventfd signalled when data is published to a waiting
    /// consumer (`None` for futex and socket rings).
    pub fn data_ready_fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.shared.signals {
            Signals::EventFd { data_ready, .. } => Some(data_ready.as_fd()),
            _ => None,
        }
    }

    /// The eventfd signalled when space is released to a waiting
    /// producer (`None` for futex and socket rings).
    pub fn space_ready_fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.shared.signals {
            Signals::EventFd { space_ready, .. } => Some(space_ready.as_fd()),
            _ => None,
        }
    }

    /// Keeps a file made by [`create_file`](Self::create_file) after this
    /// handle is dropped. Has no effect on memfd rings.
    pub fn persist(&self) {
        *self
            .shared
            .unlink_on_drop
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The path of a file this handle made with
    /// [`create_file`](Self::create_file) and will remove when dropped
    /// (`None` for memfd rings, opened files, and after
    /// [`persist`](Self::persist) or [`unlink`](Self::unlink)).
    pub fn path(&self) -> Option<PathBuf> {
        self.shared
            .unlink_on_drop
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Removes the file of a ring made with
    /// [`create_file`](Self::create_file) now, rather than on drop: the
    /// ring stays mapped and usable by everyone who has it open. Does
    /// nothing for other rings.
    ///
    /// # Errors
    ///
    /// The `unlink` error (the file is then no longer removed on drop).
    pub fn unlink(&self) -> std::io::Result<()> {
        let path = self
            .shared
            .unlink_on_drop
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match path {
            Some(p) => std::fs::remove_file(p),
            None => Ok(()),
        }
    }

    /// Closes the ring for both sides, from outside either role (a server
    /// tearing down a connection whose role handles other threads hold):
    /// waiting calls on either side return `Closed`, and a consumer still
    /// reads what was published before.
    pub fn close(&self) {
        let h = self.shared.header();
        // Release: as in `Producer::close`, pairs with the consumer's
        // Acquire load of `closed`.
        h.control
            .0
            .closed
            .fetch_or(CLOSED_BY_PRODUCER | CLOSED_BY_CONSUMER, Ordering::Release);
        self.wake_waiters();
    }

    /// Wakes whichever side is asleep on the ring (or about to be), so it
    /// re-checks what it waits for. Use after changing something the
    /// sleeper checks besides the positions, such as the
    /// [`user_word`](Self::user_word): a waiter that raised its flag, then
    /// read the old value, is woken; one that reads after this call sees
    /// the new value.
    pub fn wake_waiters(&self) {
        // The waker's half of the handshake (module `wake`), for each side,
        // each with a full fence after the caller's earlier store.
        handshake::wake(&self.shared, Direction::Data);
        handshake::wake(&self.shared, Direction::Space);
    }

    /// Publishes an application-defined value in the ring header (offset
    /// 28), for every process mapping the ring to read with
    /// [`user_word`](Self::user_word). The ring itself ignores it; ringlink's
    /// server uses it to tell a client its flow-control level. Any process
    /// mapping the ring can write it, so treat what you read as advisory.
    pub fn set_user_word(&self, value: u32) {
        // Release: pairs with the Acquire in `user_word`, so a reader that
        // sees the value also sees what the writer did before setting it.
        self.shared
            .header()
            .meta
            .0
            .user_word
            .store(value, Ordering::Release);
    }

    /// The value last published with [`set_user_word`](Self::set_user_word).
    pub fn user_word(&self) -> u32 {
        // Acquire: pairs with the Release in `set_user_word`.
        self.shared
            .header()
            .meta
            .0
            .user_word
            .load(Ordering::Acquire)
    }

    /// Whether either side has closed the ring.
    pub fn is_closed(&self) -> bool {
        self.shared.closed_bits(Ordering::Acquire) != 0
    }
}

/// Checks that the wake fds are eventfds and makes them non-blocking:
/// never block in a wake-up read or write, whatever mode the sender left
/// the fd in.
fn check_wake_fds(w: &WakeFds) -> Result<(), OpenError> {
    for fd in [w.data_ready.as_fd(), w.space_ready.as_fd()] {
        if crate::sys::is_eventfd(fd) == Some(false) {
            return Err(OpenError::WakeMismatch);
        }
        crate::sys::set_nonblocking(fd)?;
    }
    Ok(())
}
