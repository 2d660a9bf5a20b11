//! A second mapping of a ring's memory, independent of the ring crate,
//! through which a test plays the hostile peer: it writes any value into
//! any header word or record word, behind the back of the `Producer` or
//! `Consumer` in the other process.
//!
//! Offsets follow the layout documented in `ringlink_ringbuf::layout`
//! (and pinned there by `const` asserts); they are repeated here because
//! the header struct is private to the ring crate, which is the point: a
//! hostile peer does not use the crate either.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use ringlink_ringbuf::layout::HEADER_SIZE;
use ringlink_ringbuf::Ring;

/// Byte offsets of the header words.
pub mod off {
    /// Magic number (u64).
    pub const MAGIC: usize = 0;
    /// Capacity (u64).
    pub const CAPACITY: usize = 16;
    /// User word (u32; the server publishes flow control in it).
    pub const USER_WORD: usize = 28;
    /// Producer position, `tail` (u64).
    pub const TAIL: usize = 128;
    /// Consumer position, `head` (u64).
    pub const HEAD: usize = 256;
    /// Consumer-waiting flag (u32).
    pub const CONSUMER_WAITING: usize = 384;
    /// Producer-waiting flag (u32).
    pub const PRODUCER_WAITING: usize = 512;
    /// Producer claim word (u32, the claimant's pid).
    pub const PRODUCER_OWNER: usize = 640;
    /// Consumer claim word (u32, the claimant's pid).
    pub const CONSUMER_OWNER: usize = 644;
    /// Closed bits (u32).
    pub const CLOSED: usize = 648;
}

/// Closed bit the producer sets.
pub const CLOSED_BY_PRODUCER: u32 = 1;
/// Closed bit the consumer sets.
pub const CLOSED_BY_CONSUMER: u32 = 2;

/// Our own `MAP_SHARED` mapping of a ring file. Every access is atomic
/// (Relaxed loads, Release stores), like the ring's own accesses to the
/// words it shares.
#[derive(Debug)]
pub struct RawRing {
    map: memmap2::MmapRaw,
    capacity: usize,
}

impl RawRing {
    /// Maps the memory of `ring` a second time (through a duplicate of its
    /// memory fd).
    ///
    /// # Errors
    ///
    /// If the ring has no memory fd (heap ring) or `dup`/`mmap` fail.
    pub fn map(ring: &Ring) -> io::Result<RawRing> {
        let fd = ring
            .memory_fd()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "heap ring"))?
            .try_clone_to_owned()?;
        let file = File::from(fd);
        let capacity = ring.capacity();
        let map = memmap2::MmapOptions::new()
            .len(HEADER_SIZE + capacity)
            .map_raw(&file)?;
        Ok(RawRing { map, capacity })
    }

    /// Size of the data region.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn u64_at(&self, off: usize) -> &AtomicU64 {
        assert!(off % 8 == 0 && off + 8 <= self.map.len(), "offset {off}");
        // SAFETY: `off + 8` is within the mapping, which lives as long as
        // `&self`; the mapping is page-aligned and `off` a multiple of 8,
        // so the place is aligned for `AtomicU64`. Bytes of a shared file
        // mapping are always initialised and any bit pattern is a valid
        // `AtomicU64`; every access to these words, in either process, is
        // atomic, so the shared reference is sound while the peer writes.
        unsafe { &*self.map.as_mut_ptr().add(off).cast::<AtomicU64>() }
    }

    fn u32_at(&self, off: usize) -> &AtomicU32 {
        assert!(off % 4 == 0 && off + 4 <= self.map.len(), "offset {off}");
        // SAFETY: as in `u64_at`, with 4-byte alignment.
        unsafe { &*self.map.as_mut_ptr().add(off).cast::<AtomicU32>() }
    }

    /// Loads the u64 header word at `off`.
    pub fn load64(&self, off: usize) -> u64 {
        self.u64_at(off).load(Ordering::Acquire)
    }

    /// Stores `v` into the u64 header word at `off`.
    pub fn store64(&self, off: usize, v: u64) {
        self.u64_at(off).store(v, Ordering::Release);
    }

    /// Loads the u32 header word at `off`.
    pub fn load32(&self, off: usize) -> u32 {
        self.u32_at(off).load(Ordering::Acquire)
    }

    /// Stores `v` into the u32 header word at `off`.
    pub fn store32(&self, off: usize, v: u32) {
        self.u32_at(off).store(v, Ordering::Release);
    }

    /// The producer position.
    pub fn tail(&self) -> u64 {
        self.load64(off::TAIL)
    }

    /// Overwrites the producer position: a lie the consumer must not act
    /// on (since ring layout 2 it reads the position only when it claims
    /// its role, and finds records by their words).
    pub fn set_tail(&self, v: u64) {
        self.store64(off::TAIL, v);
    }

    /// The consumer position.
    pub fn head(&self) -> u64 {
        self.load64(off::HEAD)
    }

    /// Overwrites the consumer position.
    pub fn set_head(&self, v: u64) {
        self.store64(off::HEAD, v);
    }

    /// Copies `len` bytes of the data region from offset `off` (byte by
    /// byte, atomically: the peer may be writing them).
    ///
    /// # Panics
    ///
    /// If the span runs past the data region.
    pub fn data_bytes(&self, off: usize, len: usize) -> Vec<u8> {
        assert!(off + len <= self.capacity, "bytes {off}+{len}");
        (HEADER_SIZE + off..HEADER_SIZE + off + len)
            .map(|at| {
                // SAFETY: `at` is within the mapping, which lives as long
                // as `&self`, and any byte is a valid, aligned `AtomicU8`.
                // Other processes write these bytes with plain copies; a
                // load racing one of them reads some byte value, which is
                // all this reader wants (its callers compare the result
                // and accept any value while a writer may be active).
                let b = unsafe { &*self.map.as_mut_ptr().add(at).cast::<AtomicU8>() };
                b.load(Ordering::Relaxed)
            })
            .collect()
    }

    /// Writes a record word (`len | kind << 32`) at the data-region
    /// offset of position `pos`.
    pub fn set_record_word(&self, pos: u64, len: u32, kind: u32) {
        let data_off = (pos as usize) & (self.capacity - 1);
        assert!(data_off % 8 == 0, "record words are 8-aligned");
        self.store64(
            HEADER_SIZE + data_off,
            u64::from(len) | u64::from(kind) << 32,
        );
    }
}

/// Adds one to an eventfd's counter, waking whoever polls it (the ring
/// treats any wake-up as a hint to re-check, so a spurious one is
/// harmless).
///
/// # Errors
///
/// Any error of `write`.
pub fn kick(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    use std::io::Write;
    let mut f = File::from(fd.try_clone_to_owned()?);
    f.write_all(&1u64.to_ne_bytes())
}

/// Sends `bytes` as one datagram on the `SOCK_SEQPACKET` socket `fd`,
/// with `flags` (`MSG_NOSIGNAL` is always added): what a raw peer writes
/// where the library would frame its messages. Returns the bytes sent.
///
/// # Errors
///
/// The `send(2)` error (`EAGAIN` if the socket is full and `flags` holds
/// `MSG_DONTWAIT`).
pub fn send_datagram(fd: BorrowedFd<'_>, bytes: &[u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: sends `bytes.len()` bytes from a live slice on an open
    // socket; the kernel reads no other memory.
    let n = unsafe {
        libc::send(
            fd.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            flags | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// The fds this process has open now (from `/proc/self/fd`), without
/// the one used to list them.
///
/// # Panics
///
/// If `/proc/self/fd` cannot be read.
pub fn open_fds() -> std::collections::BTreeSet<i32> {
    let dir = std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd");
    let mut fds: std::collections::BTreeSet<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    // The listing's own fd is closed by now: keep only those still open.
    fds.retain(|&fd| {
        // SAFETY: F_GETFD on any number only reads the fd table.
        unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
    });
    fds
}

/// What `/proc/self/fd/FD` says the fd is (`anon_inode:[eventfd]`,
/// `socket:[..]`, `/memfd:..`, a path), `None` if it is not open.
pub fn fd_kind(fd: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// What a hostile process does to an fd it shares with its peer, in the
/// order that works whatever state the fd is in: an eventfd is drained
/// and then saturated (counter at its maximum, `0xffff_ffff_ffff_fffe`),
/// so that a blocking `write(2)` of 1 by the peer would wait forever;
/// then `O_NONBLOCK` is cleared on the open file description, which the
/// peer shares if the fd came (or went) over `SCM_RIGHTS`. Returns what
/// was done, for the test's report.
///
/// # Errors
///
/// If `fcntl` fails (the fd is not open).
pub fn poison_fd(fd: i32) -> io::Result<String> {
    let kind = fd_kind(fd).unwrap_or_default();
    let mut did = String::new();
    if kind == "anon_inode:[eventfd]" {
        let mut buf = 0u64;
        // SAFETY: reads at most 8 bytes into a live local; the fd is
        // still non-blocking here (if it was), so this cannot wait.
        unsafe { libc::read(fd, (&mut buf as *mut u64).cast(), 8) };
        let max: u64 = 0xffff_ffff_ffff_fffe;
        // SAFETY: writes 8 bytes from a live local.
        let n = unsafe { libc::write(fd, (&max as *const u64).cast(), 8) };
        did.push_str(if n == 8 { "saturated " } else { "unsaturated " });
    }
    // SAFETY: plain fcntl calls on a number; failures are reported.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    did.push_str("blocking ");
    did.push_str(&kind);
    Ok(did)
}

/// A TCP socket on loopback whose last close would wait for `linger`:
/// connected to a listener that never accepts it, its buffers full, and
/// `SO_LINGER` set. What a hostile peer attaches to a byte with
/// `SCM_RIGHTS`, so that the reader's kernel closes it in the reader's
/// thread. Keep the listener alive as long as the close should wait (its
/// closing resets the connection).
///
/// # Panics
///
/// If loopback networking fails.
pub fn lingering_socket(
    linger: std::time::Duration,
) -> (std::net::TcpListener, std::os::fd::OwnedFd) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind on loopback");
    let fd = lingering_socket_on(&listener, linger);
    (listener, fd)
}

/// [`lingering_socket`], connected to `listener` (which never accepts).
///
/// # Panics
///
/// As [`lingering_socket`].
pub fn lingering_socket_on(
    listener: &std::net::TcpListener,
    linger: std::time::Duration,
) -> std::os::fd::OwnedFd {
    use std::io::Write;
    let mut s =
        std::net::TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
    s.set_nonblocking(true).expect("non-blocking");
    let junk = vec![0x5Au8; 1 << 16];
    loop {
        match s.write(&junk) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("filling the socket: {e}"),
        }
    }
    let l = libc::linger {
        l_onoff: 1,
        l_linger: linger.as_secs() as libc::c_int,
    };
    // SAFETY: setsockopt reads a live local `linger`; the fd is open.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_LINGER: {}", io::Error::last_os_error());
    s.into()
}

/// Closes a socket at once whatever its `SO_LINGER` said (an abortive
/// close: linger on, zero seconds): for a [`lingering_socket`] that was
/// not sent after all, whose last close would otherwise wait.
pub fn close_at_once(fd: std::os::fd::OwnedFd) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads a live local `linger`; the fd is open.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    drop(fd);
}

/// Attaches a fresh [`lingering_socket_on`] `listener` to `bytes` sent on
/// `fd` ([`send_with_fd`]), and closes this process's copy: at once if
/// the send failed (then it was the last), else leaving the receiver's
/// copy the last one.
///
/// # Errors
///
/// As [`send_with_fd`].
pub fn send_lingering(
    fd: BorrowedFd<'_>,
    bytes: &[u8],
    listener: &std::net::TcpListener,
) -> io::Result<usize> {
    use std::os::fd::AsFd;
    let tcp = lingering_socket_on(listener, std::time::Duration::from_secs(120));
    let r = send_with_fd(fd, bytes, tcp.as_fd());
    if r.is_err() {
        close_at_once(tcp);
    }
    r
}

/// Sends `bytes` on the socket `fd` with `attach` attached
/// (`SCM_RIGHTS`), without waiting. Returns what `sendmsg` said: `Err`
/// with `PermissionDenied` where the receiving socket refuses fds
/// (`SO_PASSRIGHTS` off, Linux 6.16).
///
/// # Errors
///
/// The `sendmsg` error.
pub fn send_with_fd(fd: BorrowedFd<'_>, bytes: &[u8], attach: BorrowedFd<'_>) -> io::Result<usize> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let fds = [attach.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [io::IoSlice::new(bytes)];
    sendmsg::<()>(
        fd.as_raw_fd(),
        &iov,
        &cmsg,
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(io::Error::from)
}
