//! Unit tests of the ring: index arithmetic, wrap-around and padding,
//! exact fits, full and empty, closing, timeouts, and a hostile peer
//! writing garbage into the shared state.

use std::io::{IoSlice, Write};
use std::os::fd::AsFd;
use std::thread;
use std::time::Duration;

use crate::layout::{record_word, KIND_DATA, KIND_PAD};
use crate::sync::Ordering;
use crate::*;

fn pair(cap: usize) -> (Ring, Producer, Consumer) {
    let ring = Ring::create(cap).unwrap();
    let tx = ring.producer().unwrap();
    let rx = ring.consumer().unwrap();
    (ring, tx, rx)
}

fn tail(ring: &Ring) -> u64 {
    ring.shared.header().tail.0.load(Ordering::SeqCst)
}

fn head(ring: &Ring) -> u64 {
    ring.shared.header().head.0.load(Ordering::SeqCst)
}

fn pop(rx: &mut Consumer) -> Result<Vec<u8>, PopError> {
    let mut buf = vec![0u8; rx.capacity()];
    let n = rx.try_pop_into(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

#[test]
fn empty_ring_reports_empty() {
    let (_ring, _tx, mut rx) = pair(64);
    assert_eq!(rx.try_peek().unwrap_err(), PopError::Empty);
    assert_eq!(rx.try_pop_into(&mut [0; 8]), Err(PopError::Empty));
    assert_eq!(rx.pending_bytes(), 0);
}

#[test]
fn record_positions_are_eight_aligned() {
    let (ring, mut tx, mut rx) = pair(4096);
    for len in [0usize, 1, 7, 8, 9, 15, 16, 17] {
        let before = tail(&ring);
        tx.try_push(&vec![len as u8; len]).unwrap();
        assert_eq!(tail(&ring) - before, layout::record_size(len) as u64);
        assert_eq!(tail(&ring) % 8, 0);
        assert_eq!(pop(&mut rx).unwrap(), vec![len as u8; len]);
    }
    assert_eq!(head(&ring), tail(&ring));
}

#[test]
fn fill_up_to_one_word_short_then_full() {
    // 64-byte ring: max payload 24, record 32. Records take at most
    // capacity - 8 bytes: the word after the last one is cleared when it
    // is published, and must be free space.
    let (ring, mut tx, mut rx) = pair(64);
    assert_eq!(tx.max_payload(), 24);
    tx.try_push(&[1; 24]).unwrap(); // [0, 32)
    tx.try_push(&[2; 16]).unwrap(); // [32, 56), clears [56, 64)
    assert_eq!(tail(&ring), 56);
    assert_eq!(tx.try_push(&[]).unwrap_err(), PushError::Full);
    assert!(!tx.has_room(0).unwrap());
    assert_eq!(rx.pending_bytes(), 56);
    assert_eq!(pop(&mut rx).unwrap(), [1; 24]);
    // Head 32: padding 8, the record at [0, 24), its next word at 24.
    assert_eq!(tx.try_push(&[3; 24]).unwrap_err(), PushError::Full);
    tx.try_push(&[3; 16]).unwrap();
    assert_eq!(tail(&ring), 56 + 8 + 24);
    assert_eq!(pop(&mut rx).unwrap(), [2; 16]);
    assert_eq!(pop(&mut rx).unwrap(), [3; 16]);
    assert_eq!(rx.try_peek().unwrap_err(), PopError::Empty);
}

#[test]
fn too_large_is_refused_and_writes_nothing() {
    let (ring, mut tx, mut rx) = pair(64);
    let max = tx.max_payload();
    assert_eq!(
        tx.try_push(&vec![0; max + 1]).unwrap_err(),
        PushError::TooLarge { len: max + 1, max }
    );
    assert!(matches!(
        tx.try_reserve(usize::MAX),
        Err(PushError::TooLarge { .. })
    ));
    assert_eq!(tail(&ring), 0);
    tx.try_push(&vec![9; max]).unwrap();
    assert_eq!(pop(&mut rx).unwrap(), vec![9; max]);
}

#[test]
fn record_that_does_not_fit_before_the_end_is_padded() {
    let (ring, mut tx, mut rx) = pair(64);
    tx.try_push(&[1; 8]).unwrap(); // [0, 16)
    tx.try_push(&[2; 24]).unwrap(); // [16, 48)
    pop(&mut rx).unwrap();
    pop(&mut rx).unwrap();
    assert_eq!(head(&ring), 48);
    // 32 bytes needed, 16 left before the end: pad 16, record at 0.
    tx.try_push(&[3; 24]).unwrap();
    assert_eq!(tail(&ring), 48 + 16 + 32);
    assert_eq!(pop(&mut rx).unwrap(), [3; 24]);
    assert_eq!(head(&ring), 96);
}

#[test]
fn record_that_ends_exactly_at_the_end_needs_no_padding() {
    let (ring, mut tx, mut rx) = pair(64);
    tx.try_push(&[1; 24]).unwrap(); // [0, 32)
    tx.try_push(&[2; 8]).unwrap(); // [32, 48)
                                   // [48, 64) would clear the word at 0, still the first record's.
    assert_eq!(tx.try_push(&[3; 8]).unwrap_err(), PushError::Full);
    assert_eq!(pop(&mut rx).unwrap(), [1; 24]);
    tx.try_push(&[3; 8]).unwrap(); // [48, 64): exact fit at the end
    assert_eq!(tail(&ring), 64);
    for want in [[2u8; 8].as_slice(), &[3; 8]] {
        assert_eq!(pop(&mut rx).unwrap(), want);
    }
    tx.try_push(&[4; 8]).unwrap(); // starts at offset 0 again
    assert_eq!(tail(&ring), 80);
    assert_eq!(pop(&mut rx).unwrap(), [4; 8]);
}

#[test]
fn padding_and_the_next_word_count_against_free_space() {
    let (ring, mut tx, mut rx) = pair(64);
    tx.try_push(&[1; 24]).unwrap(); // [0, 32)
    tx.try_push(&[2; 8]).unwrap(); // [32, 48)
    pop(&mut rx).unwrap(); // head 32: free = 48, 16 at the end + 32 at 0
                           // A 32-byte record: pad 16 + 32 + the next word 8 = 56 > 48.
    assert_eq!(tx.try_push(&[3; 24]).unwrap_err(), PushError::Full);
    // A 24-byte one: pad 16 + 24 + 8 = 48 = free: fits.
    tx.try_push(&[3; 16]).unwrap();
    assert_eq!(tail(&ring), 48 + 16 + 24);
    assert_eq!(tx.try_push(&[]).unwrap_err(), PushError::Full);
    assert_eq!(pop(&mut rx).unwrap(), [2; 8]);
    assert_eq!(pop(&mut rx).unwrap(), [3; 16]);
}

#[test]
fn wrapped_record_waits_for_space_at_the_start() {
    let (_ring, mut tx, mut rx) = pair(64);
    tx.try_push(&[1; 16]).unwrap(); // [0, 24)
    tx.try_push(&[2; 16]).unwrap(); // [24, 48)
    pop(&mut rx).unwrap(); // head 24
                           // 24-byte payload needs pad 16 + 32 + 8 at the start, only 24 there.
    assert_eq!(tx.try_push(&[3; 24]).unwrap_err(), PushError::Full);
    // A small one still fits at the end.
    tx.try_push(&[4; 8]).unwrap(); // [48, 64)
    pop(&mut rx).unwrap();
    tx.try_push(&[3; 24]).unwrap(); // [64, 96): offset 0, no padding
    assert_eq!(pop(&mut rx).unwrap(), [4; 8]);
    assert_eq!(pop(&mut rx).unwrap(), [3; 24]);
}

#[test]
fn dropped_grants_publish_nothing() {
    let (ring, mut tx, mut rx) = pair(64);
    {
        let mut g = tx.try_reserve(16).unwrap();
        g.fill(7);
    }
    assert_eq!(tail(&ring), 0);
    assert_eq!(rx.try_peek().unwrap_err(), PopError::Empty);
    tx.try_push(b"abc").unwrap();
    {
        let rec = rx.try_peek().unwrap();
        assert_eq!(&*rec, b"abc");
    } // not released: still there
    assert_eq!(&*rx.try_peek().unwrap(), b"abc");
    assert_eq!(pop(&mut rx).unwrap(), b"abc");
}

#[test]
fn commit_len_publishes_a_prefix() {
    let (_ring, mut tx, mut rx) = pair(64);
    let mut g = tx.try_reserve(20).unwrap();
    g[..5].copy_from_slice(b"hello");
    g.commit_len(5);
    assert_eq!(pop(&mut rx).unwrap(), b"hello");
}

#[test]
#[should_panic(expected = "beyond reservation")]
fn commit_len_beyond_reservation_panics() {
    let (_ring, mut tx, _rx) = pair(64);
    tx.try_reserve(4).unwrap().commit_len(5);
}

#[test]
fn vectored_push_is_one_record() {
    let (_ring, mut tx, mut rx) = pair(256);
    tx.try_push_vectored(&[IoSlice::new(b"ab"), IoSlice::new(b""), IoSlice::new(b"cde")])
        .unwrap();
    assert_eq!(pop(&mut rx).unwrap(), b"abcde");
    let n = tx
        .write_vectored(&[IoSlice::new(b"x"), IoSlice::new(b"yz")])
        .unwrap();
    assert_eq!(n, 3);
    assert_eq!(pop(&mut rx).unwrap(), b"xyz");
}

#[test]
fn small_buffer_keeps_the_record() {
    let (_ring, mut tx, mut rx) = pair(64);
    tx.try_push(b"0123456789").unwrap();
    let mut small = [0u8; 4];
    assert_eq!(
        rx.try_pop_into(&mut small),
        Err(PopError::BufferTooSmall { needed: 10 })
    );
    let mut big = [0u8; 10];
    assert_eq!(rx.try_pop_into(&mut big), Ok(10));
    assert_eq!(&big, b"0123456789");
}

#[test]
fn io_write_maps_full_to_would_block() {
    let (_ring, mut tx, _rx) = pair(64);
    tx.write_all(&[0; 24]).unwrap();
    tx.write_all(&[0; 16]).unwrap();
    assert_eq!(
        tx.write(&[0; 1]).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );
    assert_eq!(
        tx.write(&[0; 25]).unwrap_err().kind(),
        std::io::ErrorKind::InvalidInput
    );
}

#[test]
fn roles_are_claimed_once() {
    let ring = Ring::create(64).unwrap();
    let _tx = ring.producer().unwrap();
    let _rx = ring.consumer().unwrap();
    let me = std::process::id();
    assert_eq!(
        ring.producer().unwrap_err(),
        ClaimError::Taken {
            role: Role::Producer,
            owner: me
        }
    );
    assert!(matches!(
        ring.clone().consumer(),
        Err(ClaimError::Taken {
            role: Role::Consumer,
            ..
        })
    ));
}

#[test]
fn invalid_capacities_are_refused() {
    for cap in [0, 32, 100, MAX_CAPACITY * 2] {
        assert!(matches!(Ring::create(cap), Err(OpenError::InvalidCapacity(c)) if c == cap));
        assert!(matches!(
            Ring::heap(cap),
            Err(OpenError::InvalidCapacity(_))
        ));
    }
}

#[test]
fn producer_close_lets_consumer_drain_then_closed() {
    let (ring, mut tx, mut rx) = pair(256);
    tx.try_push(b"one").unwrap();
    tx.try_push(b"two").unwrap();
    drop(tx);
    assert!(ring.is_closed());
    assert_eq!(pop(&mut rx).unwrap(), b"one");
    assert_eq!(pop(&mut rx).unwrap(), b"two");
    assert_eq!(pop(&mut rx).unwrap_err(), PopError::Closed);
    assert_eq!(
        rx.peek_timeout(Duration::from_secs(5)).unwrap_err(),
        PopError::Closed
    );
}

#[test]
fn consumer_close_fails_the_producer() {
    let (_ring, mut tx, rx) = pair(256);
    drop(rx);
    assert_eq!(tx.try_push(b"x").unwrap_err(), PushError::Closed);
    assert_eq!(tx.push(b"x").unwrap_err(), PushError::Closed);
}

#[test]
fn timeouts_expire() {
    let (_ring, mut tx, mut rx) = pair(64);
    rx.set_spin(Duration::ZERO);
    assert_eq!(
        rx.peek_timeout(Duration::from_millis(20)).unwrap_err(),
        PopError::TimedOut
    );
    assert_eq!(
        rx.peek_timeout(Duration::ZERO).unwrap_err(),
        PopError::TimedOut
    );
    tx.try_push(&[0; 24]).unwrap();
    assert_eq!(
        tx.push_timeout(&[0; 24], Duration::from_millis(20)),
        Err(PushError::TimedOut)
    );
    let mut buf = [0u8; 24];
    assert_eq!(
        rx.pop_into_timeout(&mut buf, Duration::from_millis(20)),
        Ok(24)
    );
}

#[test]
fn blocked_consumer_wakes_on_close_with_zero_spin() {
    for mode in [WakeMode::EventFd, WakeMode::Futex] {
        let ring = Ring::create_memfd("close-test", 64, mode).unwrap();
        let mut rx = ring.consumer().unwrap();
        rx.set_spin(Duration::ZERO);
        let tx = ring.producer().unwrap();
        let waiter = thread::spawn(move || rx.peek().map(|_| ()).unwrap_err());
        thread::sleep(Duration::from_millis(30));
        drop(tx);
        assert_eq!(waiter.join().unwrap(), PopError::Closed, "{mode:?}");
    }
}

#[test]
fn blocked_producer_wakes_on_close_with_zero_spin() {
    for mode in [WakeMode::EventFd, WakeMode::Futex] {
        let ring = Ring::create_memfd("close-test", 64, mode).unwrap();
        let mut tx = ring.producer().unwrap();
        tx.set_spin(Duration::ZERO);
        let rx = ring.consumer().unwrap();
        tx.try_push(&[0; 24]).unwrap();
        let waiter = thread::spawn(move || tx.push(&[0; 24]).unwrap_err());
        thread::sleep(Duration::from_millis(30));
        drop(rx);
        assert_eq!(waiter.join().unwrap(), PushError::Closed, "{mode:?}");
    }
}

#[test]
fn blocking_stream_between_threads_in_both_wake_modes() {
    for (mode, spin) in [
        (WakeMode::EventFd, Duration::ZERO),
        (WakeMode::Futex, Duration::ZERO),
        (WakeMode::EventFd, DEFAULT_SPIN),
    ] {
        let ring = Ring::create_memfd("stream", 256, mode).unwrap();
        let mut tx = ring.producer().unwrap();
        let mut rx = ring.consumer().unwrap();
        tx.set_spin(spin);
        rx.set_spin(spin);
        const N: u32 = 20_000;
        let t = thread::spawn(move || {
            for i in 0..N {
                let len = (i % 100) as usize;
                let mut g = tx.reserve(len + 4).unwrap();
                g[..4].copy_from_slice(&i.to_le_bytes());
                g[4..].fill(i as u8);
                g.commit();
            }
        });
        for i in 0..N {
            let rec = rx.peek().unwrap();
            assert_eq!(rec.len(), (i % 100) as usize + 4);
            assert_eq!(&rec[..4], &i.to_le_bytes());
            assert!(rec[4..].iter().all(|&b| b == i as u8));
            rec.release();
        }
        t.join().unwrap();
        assert_eq!(rx.peek().unwrap_err(), PopError::Closed);
    }
}

#[test]
fn arm_wake_signals_the_eventfd() {
    let (ring, mut tx, mut rx) = pair(256);
    let fd = ring.data_ready_fd().unwrap();
    assert!(rx.arm_wake());
    assert!(!crate::sys::poll_readable(fd, Some(Duration::ZERO)).unwrap());
    tx.try_push(b"x").unwrap();
    assert!(crate::sys::poll_readable(fd, Some(Duration::ZERO)).unwrap());
    // Data waiting: no need to sleep.
    assert!(!rx.arm_wake());
    pop(&mut rx).unwrap();
    assert!(rx.arm_wake());
    // Full ring: the producer arms and is woken by a release.
    let sfd = ring.space_ready_fd().unwrap();
    while tx.try_push(&[0; 100]).is_ok() {}
    assert!(tx.arm_wake());
    assert!(!crate::sys::poll_readable(sfd, Some(Duration::ZERO)).unwrap());
    pop(&mut rx).unwrap();
    assert!(crate::sys::poll_readable(sfd, Some(Duration::ZERO)).unwrap());
}

// ---- the memory file ----

#[test]
fn sealed_memfd_cannot_be_resized() {
    let ring = Ring::create(4096).unwrap();
    let file = std::fs::File::from(ring.memory_fd().unwrap().try_clone_to_owned().unwrap());
    let size = file.metadata().unwrap().len();
    for len in [0, size - 1, size + 4096] {
        let e = file.set_len(len).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "set_len({len})");
    }
    assert_eq!(file.metadata().unwrap().len(), size);
}

fn reopen(ring: &Ring) -> Result<Ring, OpenError> {
    let mem = ring.memory_fd().unwrap().try_clone_to_owned().unwrap();
    let wake = ring.data_ready_fd().map(|d| WakeFds {
        data_ready: d.try_clone_to_owned().unwrap(),
        space_ready: ring.space_ready_fd().unwrap().try_clone_to_owned().unwrap(),
    });
    Ring::from_fds(mem, wake)
}

#[test]
fn from_fds_shares_the_ring() {
    let ring = Ring::create(4096).unwrap();
    let other = reopen(&ring).unwrap();
    assert_eq!(other.capacity(), 4096);
    let mut tx = ring.producer().unwrap();
    let mut rx = other.consumer().unwrap();
    assert!(matches!(other.producer(), Err(ClaimError::Taken { .. })));
    tx.try_push(b"across mappings").unwrap();
    assert_eq!(pop(&mut rx).unwrap(), b"across mappings");
}

#[test]
fn from_fds_checks_wake_mode() {
    let ring = Ring::create(4096).unwrap();
    let mem = ring.memory_fd().unwrap().try_clone_to_owned().unwrap();
    assert!(matches!(
        Ring::from_fds(mem, None),
        Err(OpenError::WakeMismatch)
    ));
    let futex = Ring::create_memfd("f", 4096, WakeMode::Futex).unwrap();
    let mem = futex.memory_fd().unwrap().try_clone_to_owned().unwrap();
    let wake = WakeFds {
        data_ready: ring.data_ready_fd().unwrap().try_clone_to_owned().unwrap(),
        space_ready: ring.space_ready_fd().unwrap().try_clone_to_owned().unwrap(),
    };
    assert!(matches!(
        Ring::from_fds(mem, Some(wake)),
        Err(OpenError::WakeMismatch)
    ));
}

#[test]
fn from_fds_refuses_unsealed_memfd_and_bad_headers() {
    use std::io::{Seek, SeekFrom};
    let memfd =
        |name: &std::ffi::CStr| std::fs::File::from(crate::sys::memfd_create(name).unwrap());
    // Unsealed memfd of the right size.
    let f = memfd(c"unsealed");
    f.set_len(4096 + 4096).unwrap();
    assert!(matches!(
        Ring::from_fds(f.into(), None),
        Err(OpenError::NotSealed)
    ));

    let sealed = |bytes: &[u8], len: u64| {
        let mut f = memfd(c"bad");
        f.set_len(len).unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.write_all(bytes).unwrap();
        crate::sys::add_seals(f.as_fd(), crate::sys::RING_SEALS).unwrap();
        Ring::from_fds(f.into(), None)
    };
    let header = |magic: u64, version: u32, hsize: u32, cap: u64, wake: u32| {
        let mut h = Vec::new();
        h.extend_from_slice(&magic.to_ne_bytes());
        h.extend_from_slice(&version.to_ne_bytes());
        h.extend_from_slice(&hsize.to_ne_bytes());
        h.extend_from_slice(&cap.to_ne_bytes());
        h.extend_from_slice(&wake.to_ne_bytes());
        h
    };
    let m = layout::MAGIC;
    let ok = header(m, LAYOUT_VERSION, 4096, 4096, 2);
    assert!(sealed(&ok, 8192).is_ok());
    assert!(matches!(sealed(&[], 8192), Err(OpenError::NotReady)));
    assert!(matches!(sealed(&[], 0), Err(OpenError::NotReady)));
    assert!(matches!(
        sealed(&header(!m, 1, 4096, 4096, 2), 8192),
        Err(OpenError::BadMagic)
    ));
    assert!(matches!(
        sealed(&header(m, 9, 4096, 4096, 2), 8192),
        Err(OpenError::VersionMismatch { found: 9 })
    ));
    // Layout 1 (the consumer read the producer's position, and records
    // were not followed by a cleared word): a peer of that layout would
    // misread this one, and this one would take its stale words for
    // records.
    assert_eq!(LAYOUT_VERSION, 2);
    assert!(matches!(
        sealed(&header(m, 1, 4096, 4096, 2), 8192),
        Err(OpenError::VersionMismatch { found: 1 })
    ));
    let v = LAYOUT_VERSION;
    assert!(matches!(
        sealed(&header(m, v, 512, 4096, 2), 8192),
        Err(OpenError::Incompatible(_))
    ));
    assert!(matches!(
        sealed(&header(m, v, 4096, 8192, 2), 8192),
        Err(OpenError::Incompatible(_))
    ));
    assert!(matches!(
        sealed(&header(m, v, 4096, 4096, 7), 8192),
        Err(OpenError::Incompatible(_))
    ));
    assert!(matches!(
        sealed(&ok, 4096 + 100),
        Err(OpenError::Incompatible(_))
    ));
    assert!(matches!(sealed(&ok, 100), Err(OpenError::Incompatible(_))));
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("ringlink-unit-{tag}-{}-{n}", std::process::id()));
    std::fs::create_dir(&d).unwrap();
    d
}

#[test]
fn named_ring_round_trip_and_cleanup() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("named");
    let ring = Ring::create_file(&dir, "r", 4096, 0o600).unwrap();
    let path = dir.join("r");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(ring.wake_mode(), WakeMode::Futex);
    let other = Ring::open_path_timeout(&path, Duration::from_secs(1)).unwrap();
    let mut tx = ring.producer().unwrap();
    let mut rx = other.consumer().unwrap();
    rx.set_spin(Duration::ZERO);
    let t = thread::spawn(move || {
        for i in 0..2000u32 {
            tx.push(&i.to_le_bytes()).unwrap();
        }
    });
    for i in 0..2000u32 {
        let mut b = [0u8; 4];
        assert_eq!(rx.pop_into(&mut b), Ok(4));
        assert_eq!(u32::from_le_bytes(b), i);
    }
    t.join().unwrap();
    // Name taken: refused, never reused.
    let e = Ring::create_file(&dir, "r", 4096, 0o600).unwrap_err();
    assert!(matches!(e, OpenError::Io(ref e) if e.kind() == std::io::ErrorKind::AlreadyExists));
    drop((ring, other, rx));
    assert!(!path.exists(), "creator removes its file");
    std::fs::remove_dir(&dir).unwrap();
}

#[test]
fn named_ring_refuses_symlinks_and_bad_names() {
    let dir = temp_dir("symlink");
    let victim = dir.join("victim");
    std::fs::write(&victim, b"keep me").unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("link")).unwrap();
    assert!(Ring::create_file(&dir, "link", 4096, 0o600).is_err());
    assert!(Ring::open_path(&dir.join("link")).is_err());
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
    for bad in ["", ".", "..", "a/b"] {
        assert!(
            Ring::create_file(&dir, bad, 4096, 0o600).is_err(),
            "{bad:?}"
        );
    }
    let default_mode = Ring::create_file(&dir, "default", 4096, None).unwrap();
    let meta = std::fs::metadata(dir.join("default")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, DEFAULT_FILE_MODE);
    drop(default_mode);
    let persisted = Ring::create_file(&dir, "kept", 4096, 0o640).unwrap();
    persisted.persist();
    drop(persisted);
    assert!(Ring::open_path(&dir.join("kept")).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---- a hostile peer ----

/// Publishes `word` as a record word at data offset `off`, as a
/// misbehaving producer would (a Release store, as the real one does).
fn forge(ring: &Ring, off: usize, word: u64) {
    ring.shared.store_word(off, word, Ordering::Release);
}

#[test]
fn lies_about_the_producer_position_are_harmless_to_the_consumer() {
    // The consumer finds records by their words, never by `tail`: a tail
    // that is misaligned, too far ahead or going back publishes nothing
    // and hides nothing.
    for bad_tail in [4, 64 + 8, u64::MAX - 7, 16] {
        let (ring, mut tx, mut rx) = pair(64);
        rx.set_spin(Duration::ZERO);
        ring.shared
            .header()
            .tail
            .0
            .store(bad_tail, Ordering::Release);
        assert_eq!(rx.try_peek().unwrap_err(), PopError::Empty, "{bad_tail}");
        assert!(!rx.has_record());
        assert_eq!(
            rx.peek_timeout(Duration::from_millis(10)).unwrap_err(),
            PopError::TimedOut
        );
        // Statistics only: capped, never trusted.
        assert!(rx.pending_bytes() <= 64);
        // The producer keeps its own position; the stream goes on.
        for i in 0..20u8 {
            tx.try_push(&[i; 8]).unwrap();
            ring.shared
                .header()
                .tail
                .0
                .store(bad_tail, Ordering::Release);
            assert_eq!(pop(&mut rx).unwrap(), [i; 8], "{bad_tail}");
        }
    }
}

#[test]
fn corrupt_records_are_reported() {
    let cases: [(usize, u64, PopError); 7] = [
        // Length past the end of the region.
        (
            48,
            record_word(24, KIND_DATA),
            PopError::Corrupt(Corruption::RecordLength),
        ),
        // Length beyond the largest payload.
        (
            0,
            record_word(u32::MAX, KIND_DATA),
            PopError::Corrupt(Corruption::RecordLength),
        ),
        (
            0,
            record_word(25, KIND_DATA),
            PopError::Corrupt(Corruption::RecordLength),
        ),
        // Unknown kind.
        (
            0,
            record_word(0, 0xdead_beef),
            PopError::Corrupt(Corruption::RecordKind),
        ),
        (0, 8, PopError::Corrupt(Corruption::RecordKind)),
        // Padding at offset 0 (never legitimate).
        (
            0,
            record_word(56, KIND_PAD),
            PopError::Corrupt(Corruption::Padding),
        ),
        // Padding not reaching the end.
        (
            32,
            record_word(8, KIND_PAD),
            PopError::Corrupt(Corruption::Padding),
        ),
    ];
    for (off, word, want) in cases {
        let ring = Ring::create(64).unwrap();
        let mut rx = ring.consumer().unwrap();
        if off > 0 {
            // Move both positions to `off` through the legitimate path.
            let mut tx = ring.producer().unwrap();
            let mut at = 0;
            while at < off {
                let len = (off - at).min(32) - 8;
                tx.try_push(&vec![0; len]).unwrap();
                pop(&mut rx).unwrap();
                at += layout::record_size(len);
            }
            std::mem::forget(tx); // keep the ring open, no close bit
        }
        forge(&ring, off, word);
        assert!(rx.has_record(), "a word is there");
        assert_eq!(rx.try_peek().unwrap_err(), want, "word {word:#x} at {off}");
        // The error is sticky while the state stays bad, and never panics.
        assert_eq!(rx.try_pop_into(&mut [0; 64]).unwrap_err(), want);
        assert_eq!(
            rx.peek_timeout(Duration::from_millis(10)).unwrap_err(),
            want
        );
    }
}

#[test]
fn a_zero_word_is_nothing_yet_whatever_else_the_producer_wrote() {
    // A producer that moves its position over memory it never published
    // (or clears a word) only stalls its own stream: 0 is "not yet".
    let (ring, mut tx, mut rx) = pair(64);
    rx.set_spin(Duration::ZERO);
    tx.try_push(&[7; 16]).unwrap();
    forge(&ring, 0, 0);
    ring.shared.header().tail.0.store(64, Ordering::Release);
    assert!(!rx.has_record());
    assert_eq!(rx.try_peek().unwrap_err(), PopError::Empty);
    assert_eq!(
        rx.peek_timeout(Duration::from_millis(10)).unwrap_err(),
        PopError::TimedOut
    );
    // Closed and nothing at the position: the end of the stream.
    drop(tx);
    assert_eq!(rx.try_peek().unwrap_err(), PopError::Closed);
}

#[test]
fn padding_published_alone_is_skipped_and_the_record_read_once_published() {
    // This producer publishes the record at 0 before the padding; a
    // consumer must still accept padding published first, once the word
    // at 0 is cleared (the rule for any producer: never publish padding
    // before the word at 0 is cleared or written).
    let (ring, mut tx, mut rx) = pair(64);
    tx.try_push(&[1; 24]).unwrap(); // [0, 32)
    assert_eq!(pop(&mut rx).unwrap(), [1; 24]);
    forge(&ring, 0, 0);
    forge(&ring, 32, record_word(32 - 8, KIND_PAD));
    assert!(rx.has_record());
    assert_eq!(rx.try_peek().unwrap_err(), PopError::Empty);
    // The padding was released at once, and the consumer looks at 0.
    assert_eq!(head(&ring), 64);
    assert!(!rx.has_record());
    forge(&ring, 8, 0);
    forge(&ring, 0, record_word(0, KIND_DATA));
    assert_eq!(pop(&mut rx).unwrap(), b"");
    assert_eq!(head(&ring), 72);
}

#[test]
fn old_payload_never_passes_for_a_record_word() {
    // An honest producer may carry payloads a third party chose: fill
    // every payload with valid-looking record words, and vary the sizes
    // so that later records' words fall where earlier payloads were. The
    // consumer, reading in step, sees each record once and then nothing:
    // never a record the producer did not publish.
    let (_ring, mut tx, mut rx) = pair(256);
    let forged = record_word(8, KIND_DATA).to_ne_bytes();
    let mut lens = [24usize, 8, 40, 0, 16, 56, 8, 32, 120].iter().cycle();
    for n in 0..500u32 {
        let len = *lens.next().unwrap();
        let mut payload: Vec<u8> = forged.iter().copied().cycle().take(len).collect();
        if len >= 4 {
            payload[..4].copy_from_slice(&n.to_le_bytes());
        }
        tx.try_push(&payload).unwrap();
        assert!(rx.has_record());
        assert_eq!(pop(&mut rx).unwrap(), payload, "record {n}");
        assert!(!rx.has_record(), "after record {n}");
        assert_eq!(rx.try_peek().unwrap_err(), PopError::Empty, "after {n}");
        // Also with a record left in the ring: two at a time.
        if n % 3 == 0 && len <= 40 {
            tx.try_push(&payload).unwrap();
            tx.try_push(&payload).unwrap();
            assert_eq!(pop(&mut rx).unwrap(), payload);
            assert_eq!(pop(&mut rx).unwrap(), payload);
            assert_eq!(rx.try_peek().unwrap_err(), PopError::Empty);
        }
    }
}

#[test]
fn has_record_follows_the_word_at_the_consumer_position() {
    let (_ring, mut tx, mut rx) = pair(64);
    assert!(!rx.has_record());
    tx.try_push(b"a").unwrap();
    assert!(rx.has_record());
    {
        let g = rx.try_peek().unwrap();
        assert_eq!(&*g, b"a");
    } // kept
    assert!(rx.has_record());
    pop(&mut rx).unwrap();
    assert!(!rx.has_record());
}

#[test]
fn corrupt_consumer_position_is_reported_to_the_producer() {
    for (bad_head, want) in [
        (3, Corruption::MisalignedPosition),
        (64, Corruption::PositionTooFarAhead), // consumer ahead of producer
        (u64::MAX - 7, Corruption::PositionBehind),
    ] {
        let ring = Ring::create(64).unwrap();
        let mut tx = ring.producer().unwrap();
        tx.try_push(&[0; 24]).unwrap();
        tx.try_push(&[0; 16]).unwrap(); // tail 56: the next push must re-read head
        ring.shared
            .header()
            .head
            .0
            .store(bad_head, Ordering::Release);
        assert_eq!(
            tx.try_push(&[0; 16]).unwrap_err(),
            PushError::Corrupt(want),
            "head {bad_head}"
        );
    }
}

#[test]
fn garbage_in_waiting_flags_and_owner_words_is_harmless() {
    let (ring, mut tx, mut rx) = pair(256);
    let h = ring.shared.header();
    h.consumer_waiting.0.store(0xffff_ffff, Ordering::SeqCst);
    h.producer_waiting.0.store(7, Ordering::SeqCst);
    h.control.0.producer_owner.store(0, Ordering::SeqCst);
    h.control.0.consumer_owner.store(12345, Ordering::SeqCst);
    for i in 0..100u8 {
        tx.try_push(&[i; 10]).unwrap();
        assert_eq!(pop(&mut rx).unwrap(), [i; 10]);
    }
    // A freed claim word lets a second producer in: the claim protects
    // against accidents, not against a peer that writes the header. Its
    // writes are validated like any other.
    let mut intruder = ring.producer().unwrap();
    intruder.try_push(b"x").unwrap_or(());
}

#[test]
fn garbage_initial_positions_fail_the_claim() {
    let ring = Ring::create(64).unwrap();
    ring.shared.header().tail.0.store(5, Ordering::SeqCst);
    assert_eq!(
        ring.consumer().unwrap_err(),
        ClaimError::Corrupt(Corruption::MisalignedPosition)
    );
    let ring = Ring::create(64).unwrap();
    ring.shared.header().tail.0.store(1 << 20, Ordering::SeqCst);
    assert_eq!(
        ring.producer().unwrap_err(),
        ClaimError::Corrupt(Corruption::PositionTooFarAhead)
    );
}

#[test]
fn flipping_values_while_reading_never_panics() {
    // A thread keeps scribbling random words over the header positions and
    // the data region while a consumer reads: every outcome is a record,
    // Empty or Corrupt, never a panic or a hang.
    let ring = Ring::create(256).unwrap();
    let mut rx = ring.consumer().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let attacker = {
        let ring = ring.clone();
        let stop = stop.clone();
        let writes = writes.clone();
        thread::spawn(move || {
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let off = (x as usize >> 8) % 32 * 8;
                ring.shared.store_word(
                    off,
                    if x & 1 == 0 {
                        x
                    } else {
                        record_word((x >> 40) as u32 % 300, KIND_DATA)
                    },
                    Ordering::Release,
                );
                ring.shared
                    .header()
                    .tail
                    .0
                    .store(x % 512, Ordering::Release);
            }
        })
    };
    let mut outcomes = [0usize; 3];
    // Count only reads made while the attack is under way (on a loaded
    // machine the attacker may start late), and go on until garbage was
    // seen and enough reads raced with it, with a cap so it cannot spin
    // forever.
    let mut attacked_reads = 0u64;
    let mut total = 0u64;
    while (outcomes[2] == 0 || attacked_reads < 200_000) && total < 100_000_000 {
        total += 1;
        if writes.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            attacked_reads += 1;
        }
        match rx.try_peek() {
            Ok(rec) => {
                assert!(rec.len() <= rx_max(256));
                outcomes[0] += 1;
            }
            Err(PopError::Empty) => outcomes[1] += 1,
            Err(PopError::Corrupt(_)) => outcomes[2] += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    attacker.join().unwrap();
    assert!(outcomes[2] > 0, "garbage was never detected: {outcomes:?}");
}

fn rx_max(cap: usize) -> usize {
    layout::max_payload(cap)
}

#[test]
fn ring_close_wakes_both_sides_and_keeps_published_records() {
    let (ring, mut tx, mut rx) = pair(64);
    tx.try_push(b"kept").unwrap();
    assert!(tx.has_room(8).unwrap());
    tx.try_push(&[0; 16]).unwrap();
    assert!(!tx.has_room(24).unwrap());
    tx.set_spin(Duration::ZERO);
    let waiter = thread::spawn(move || tx.push(&[0; 24]).unwrap_err());
    thread::sleep(Duration::from_millis(20));
    ring.close();
    assert_eq!(waiter.join().unwrap(), PushError::Closed);
    assert_eq!(pop(&mut rx).unwrap(), b"kept");
    assert_eq!(pop(&mut rx).unwrap(), [0; 16]);
    assert_eq!(pop(&mut rx).unwrap_err(), PopError::Closed);
}

#[test]
fn unknown_closed_bits_close_the_stream_instead_of_spinning() {
    let (ring, mut tx, mut rx) = pair(256);
    tx.try_push(b"before").unwrap();
    ring.shared
        .header()
        .control
        .0
        .closed
        .store(0x100, Ordering::SeqCst);
    assert_eq!(pop(&mut rx).unwrap(), b"before");
    assert_eq!(
        rx.peek_timeout(Duration::from_secs(5)).unwrap_err(),
        PopError::Closed
    );
    assert!(!rx.arm_wake());
    assert_eq!(tx.try_push(b"x").unwrap_err(), PushError::Closed);
}

#[test]
fn timed_calls_return_while_a_peer_keeps_rewriting_the_record_word() {
    // A hostile producer that keeps publishing and withdrawing the word
    // at the consumer's position makes every wait see "changed" and
    // every read find nothing; the deadline must still end the call.
    let (ring, _tx, mut rx) = pair(256);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let ring = ring.clone();
        let stop = stop.clone();
        thread::spawn(move || {
            let mut flip = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Alternate between garbage and 0: published then
                // withdrawn (and the position, which nobody reads).
                flip ^= 0xdead_0000_0008;
                ring.shared.store_word(0, flip, Ordering::Release);
                ring.shared
                    .header()
                    .tail
                    .0
                    .store(flip & 8, Ordering::Release);
            }
        })
    };
    let got = rx
        .peek_timeout(Duration::from_millis(50))
        .map(|_| ())
        .unwrap_err();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert!(
        matches!(got, PopError::TimedOut | PopError::Corrupt(_)),
        "{got:?}"
    );
}

#[test]
fn from_fds_refuses_plain_files_and_non_eventfd_wake_fds() {
    let dir = temp_dir("plain");
    let ring = Ring::create_file(&dir, "r", 4096, 0o600).unwrap();
    let plain = std::fs::File::open(dir.join("r")).unwrap();
    assert!(matches!(
        Ring::from_fds(plain.into(), None),
        Err(OpenError::NotSealed)
    ));
    drop(ring);
    std::fs::remove_dir(&dir).unwrap();

    let ring = Ring::create(4096).unwrap();
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let wake = WakeFds {
        data_ready: a.into(),
        space_ready: b.into(),
    };
    let mem = ring.memory_fd().unwrap().try_clone_to_owned().unwrap();
    assert!(matches!(
        Ring::from_fds(mem, Some(wake)),
        Err(OpenError::WakeMismatch)
    ));
}

#[test]
fn user_word_is_shared_between_mappings() {
    let ring = Ring::create(4096).unwrap();
    let other = reopen(&ring).unwrap();
    assert_eq!(other.user_word(), 0);
    ring.set_user_word(3);
    assert_eq!(other.user_word(), 3);
}

#[test]
fn producer_arm_settles_after_reporting_a_change() {
    let (_ring, mut tx, mut rx) = pair(256);
    tx.try_push(b"a").unwrap();
    pop(&mut rx).unwrap(); // head moved; the producer has not looked
    assert!(!tx.arm_wake(), "first arm reports the freed space");
    assert!(tx.arm_wake(), "second arm, with nothing new, may sleep");
}

/// Two handles on one memfd ring, each with its end of a socketpair for
/// wake-ups: what two processes connected by a socket have.
fn socket_pair_ring(cap: usize) -> (Ring, Ring, std::os::unix::net::UnixStream) {
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let ours = Ring::create_memfd_waking("t", cap, Wake::Socket(std::sync::Arc::new(a))).unwrap();
    let dup = ours.memory_fd().unwrap().try_clone_to_owned().unwrap();
    let b2 = b.try_clone().unwrap();
    let theirs = Ring::from_memfd(dup, Wake::Socket(std::sync::Arc::new(b))).unwrap();
    (ours, theirs, b2)
}

#[test]
fn socket_wake_ups_cross_between_the_two_ends() {
    let (ours, theirs, _b) = socket_pair_ring(4096);
    assert_eq!(ours.wake_mode(), WakeMode::Socket);
    assert!(ours.data_ready_fd().is_none());
    let mut tx = ours.producer().unwrap();
    let mut rx = theirs.consumer().unwrap();
    rx.set_spin(Duration::ZERO);
    tx.set_spin(Duration::ZERO);
    let reader = thread::spawn(move || {
        let mut got = Vec::new();
        for _ in 0..1000 {
            let rec = rx.peek_timeout(Duration::from_secs(30)).unwrap();
            got.push(rec.to_vec());
            rec.release();
        }
        got
    });
    for i in 0u32..1000 {
        tx.push_timeout(&i.to_le_bytes(), Duration::from_secs(30))
            .unwrap();
        if i % 100 == 0 {
            thread::sleep(Duration::from_millis(2)); // let the reader sleep
        }
    }
    let got = reader.join().unwrap();
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, r)| r[..] == (i as u32).to_le_bytes()));
}

#[test]
fn a_closed_wake_socket_closes_the_ring_for_a_waiter() {
    let (ours, theirs, b) = socket_pair_ring(4096);
    drop(b);
    let mut rx = theirs.consumer().unwrap();
    rx.set_spin(Duration::ZERO);
    // The peer "dies": its handle goes without closing the ring (no
    // producer was ever claimed), and its socket end closes.
    let t = std::time::Instant::now();
    let killer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        drop(ours);
    });
    assert_eq!(
        rx.peek_timeout(Duration::from_secs(30)).unwrap_err(),
        PopError::Closed
    );
    assert!(t.elapsed() < Duration::from_secs(30));
    killer.join().unwrap();
}

#[test]
fn socket_signals_never_wait_even_on_a_blocking_description() {
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    a.set_nonblocking(false).unwrap();
    // The peer never reads: the socket fills, and every further signal
    // must return at once (EAGAIN), whatever O_NONBLOCK says.
    for _ in 0..1_000_000 {
        crate::sys::socket_signal(a.as_fd());
    }
    // Draining a blocking description with nothing in it returns too.
    let (c, _d) = std::os::unix::net::UnixStream::pair().unwrap();
    c.set_nonblocking(false).unwrap();
    assert!(crate::sys::socket_drain(c.as_fd()));
}

/// The loom model `laps_of_changing_sizes_never_show_an_old_record_word`
/// with real threads, many times: records of changing sizes over several
/// laps, with padding, both sides sleeping when they must.
#[test]
fn laps_of_changing_sizes_between_threads() {
    for _ in 0..2000 {
        let ring = Ring::heap(64).unwrap();
        let mut tx = ring.producer().unwrap();
        let mut rx = ring.consumer().unwrap();
        tx.set_spin(Duration::ZERO);
        rx.set_spin(Duration::ZERO);
        const LENS: [usize; 5] = [8, 8, 8, 24, 0];
        let t = thread::spawn(move || {
            for (i, len) in LENS.into_iter().enumerate() {
                tx.push_timeout(&vec![i as u8; len], Duration::from_secs(2))
                    .unwrap();
            }
        });
        for (i, len) in LENS.into_iter().enumerate() {
            let mut b = [0u8; 24];
            assert_eq!(
                rx.pop_into_timeout(&mut b, Duration::from_secs(2)),
                Ok(len),
                "record {i}"
            );
        }
        t.join().unwrap();
        assert_eq!(rx.pop_into(&mut [0u8; 24]), Err(PopError::Closed));
    }
}

#[test]
fn batched_releases_reach_the_producer_at_the_batch_or_when_the_reader_catches_up() {
    let (ring, mut tx, mut rx) = pair(256);
    rx.set_release_batch(64);
    for i in 0..6u8 {
        tx.try_push(&[i; 8]).unwrap(); // 16 bytes each
    }
    assert_eq!(pop(&mut rx).unwrap(), [0; 8]);
    assert_eq!(pop(&mut rx).unwrap(), [1; 8]);
    assert_eq!(head(&ring), 0, "32 bytes released, batch of 64: kept");
    assert_eq!(pop(&mut rx).unwrap(), [2; 8]);
    assert_eq!(pop(&mut rx).unwrap(), [3; 8]);
    assert_eq!(head(&ring), 64, "the batch is full: published");
    assert_eq!(pop(&mut rx).unwrap(), [4; 8]);
    assert_eq!(head(&ring), 64);
    rx.publish_released();
    assert_eq!(head(&ring), 80, "published on demand");
    assert_eq!(pop(&mut rx).unwrap(), [5; 8]);
    assert_eq!(head(&ring), 80);
    assert_eq!(rx.try_peek().unwrap_err(), PopError::Empty);
    assert_eq!(head(&ring), 96, "the reader caught up: published");
    // A producer seen waiting for room gets it at the next release.
    rx.set_release_batch(1 << 20); // capped at half the capacity
    while tx.try_push(&[9; 8]).is_ok() {}
    assert!(tx.arm_wake(), "full, nothing released: may sleep");
    assert_eq!(pop(&mut rx).unwrap(), [9; 8]);
    assert_eq!(head(&ring), 112, "the producer waits: published at once");
    assert!(tx.has_room(8).unwrap());
    // Arming the reader's wake-up, closing: published first.
    assert_eq!(pop(&mut rx).unwrap(), [9; 8]);
    assert_eq!(head(&ring), 112);
    rx.arm_wake();
    assert_eq!(head(&ring), 128);
    assert_eq!(pop(&mut rx).unwrap(), [9; 8]);
    drop(rx);
    assert_eq!(head(&ring), 144);
}

#[test]
fn a_blocked_producer_is_woken_by_a_batching_reader_that_drains() {
    for spin in [Duration::ZERO, DEFAULT_SPIN] {
        let ring = Ring::create(256).unwrap();
        let mut tx = ring.producer().unwrap();
        let mut rx = ring.consumer().unwrap();
        rx.set_release_batch(128);
        tx.set_spin(spin);
        rx.set_spin(spin);
        const N: u32 = 20_000;
        let t = thread::spawn(move || {
            for i in 0..N {
                let len = (i % 50) as usize + 4;
                let mut g = tx.reserve_timeout(len, Duration::from_secs(30)).unwrap();
                g[..4].copy_from_slice(&i.to_le_bytes());
                g.commit();
            }
        });
        for i in 0..N {
            let rec = rx.peek_timeout(Duration::from_secs(30)).unwrap();
            assert_eq!(&rec[..4], &i.to_le_bytes());
            rec.release();
        }
        t.join().unwrap();
        assert_eq!(rx.peek().unwrap_err(), PopError::Closed);
    }
}

#[test]
fn surely_fits_knows_only_what_the_producer_read() {
    let (_ring, mut tx, mut rx) = pair(4096);
    assert!(tx.surely_fits(100));
    while tx.try_push(&[7u8; 100]).is_ok() {}
    assert!(!tx.surely_fits(100));
    // The consumer frees room: the producer does not know it yet.
    while pop(&mut rx).is_ok() {}
    assert!(!tx.surely_fits(100));
    // A look at the consumer's position teaches it.
    assert!(tx.has_room(100).unwrap());
    assert!(tx.surely_fits(100));
    assert!(!tx.surely_fits(tx.max_payload() + 1));
}

#[test]
fn a_budget_shorter_than_one_burst_of_looks_ends_with_that_burst() {
    // The clock is first read once 32 looks found nothing: that burst is
    // spent budget, and a budget it outlasts is over with it (it was
    // once measured from the burst's end, spinning a second burst).
    let mut looks = 0;
    assert!(!wake::spin_until(Duration::from_nanos(1), || {
        looks += 1;
        false
    }));
    assert_eq!(looks, 32);
    // A zero budget looks not at all.
    assert!(!wake::spin_until(Duration::ZERO, || panic!("looked")));
}

#[test]
/// A side clears its own sync bit when it claims its role, whatever the
/// word held (an older peer's bit, or a hostile one's): an older peer
/// reads it to choose its fence, and must then choose the full one
/// (`wake`, "Both fences are full"). The peer's bit is left alone.
fn a_claim_clears_its_own_sync_bit_and_only_its_own() {
    use crate::layout::{SYNC_CONSUMER, SYNC_PRODUCER};
    let ring = Ring::create(4096).unwrap();
    let sync = || &ring.shared.header().control.0.sync;
    sync().store(SYNC_PRODUCER | SYNC_CONSUMER | 4, Ordering::SeqCst);
    let tx = ring.producer().unwrap();
    assert_eq!(sync().load(Ordering::SeqCst), SYNC_CONSUMER | 4);
    let rx = ring.consumer().unwrap();
    assert_eq!(sync().load(Ordering::SeqCst), 4);
    drop((tx, rx));
}

/// The consumer's waiting flag: up while it sleeps (or is about to), and
/// taken down by the producer that wakes it.
fn consumer_flag(ring: &Ring) -> u32 {
    ring.shared
        .header()
        .consumer_waiting
        .0
        .load(Ordering::SeqCst)
}

#[test]
/// A batch's records wake a sleeping consumer once, at its end, and not
/// before: the flag of a consumer prepared to sleep stays up through the
/// batch's commits (each would have taken it down and signalled), and
/// comes down at `end_batch`.
fn a_batch_wakes_a_sleeping_consumer_at_its_end() {
    let (ring, mut tx, mut rx) = pair(4096);
    assert!(rx.prepare_sleep(), "an empty ring: the consumer may sleep");
    assert_eq!(consumer_flag(&ring), 1);
    tx.begin_batch();
    for i in 0u8..3 {
        tx.try_push(&[i]).unwrap();
    }
    assert_eq!(consumer_flag(&ring), 1, "woken inside the batch");
    tx.end_batch();
    assert_eq!(consumer_flag(&ring), 0, "not woken at the batch's end");
    for i in 0u8..3 {
        assert_eq!(pop(&mut rx).unwrap(), [i]);
    }
    // Out of the batch, each commit checks again.
    assert!(rx.prepare_sleep());
    tx.try_push(&[9]).unwrap();
    assert_eq!(consumer_flag(&ring), 0);
}

#[test]
/// A push that waits for room inside a batch first wakes the consumer
/// for the records the batch committed: else a consumer asleep on them
/// would never make the room, and both would wait for ever. (Here nobody
/// makes room: the push times out, having woken the consumer first.)
fn a_push_waiting_for_room_in_a_batch_wakes_the_consumer_first() {
    let (ring, mut tx, mut rx) = pair(4096);
    tx.set_spin(Duration::ZERO);
    assert!(rx.prepare_sleep());
    tx.begin_batch();
    while tx.try_push(&[7u8; 1000]).is_ok() {}
    assert_eq!(consumer_flag(&ring), 1, "woken inside the batch");
    assert!(matches!(
        tx.push_timeout(&[7u8; 1000], Duration::from_millis(20)),
        Err(PushError::TimedOut)
    ));
    assert_eq!(consumer_flag(&ring), 0, "the wait for room did not wake it");
    tx.end_batch();
}

#[test]
fn a_detached_reservation_is_written_and_committed_through_attach() {
    let (_ring, mut tx, mut rx) = pair(4096);
    let mut grant = tx.try_reserve(5).unwrap();
    grant[..2].copy_from_slice(b"he");
    let r = grant.detach();
    assert_eq!(r.len(), 5);
    // Nothing is published while the reservation is held apart.
    assert!(matches!(
        rx.try_pop_into(&mut [0u8; 8]),
        Err(PopError::Empty)
    ));
    assert_eq!(&tx.reserved(&r)[..2], b"he");
    tx.attach(&r)[2..].copy_from_slice(b"llo");
    tx.attach(&r).commit();
    assert_eq!(pop(&mut rx).unwrap(), b"hello");
}

#[test]
fn a_dropped_reservation_publishes_nothing_and_its_room_is_reserved_again() {
    let (_ring, mut tx, mut rx) = pair(4096);
    let mut grant = tx.try_reserve(3).unwrap();
    grant.copy_from_slice(b"bad");
    let _given_up = grant.detach();
    assert!(matches!(
        rx.try_pop_into(&mut [0u8; 8]),
        Err(PopError::Empty)
    ));
    tx.try_push(b"good").unwrap();
    assert_eq!(pop(&mut rx).unwrap(), b"good");
}

#[test]
#[should_panic(expected = "a stale reservation")]
fn a_reservation_is_stale_once_another_record_is_committed() {
    let (_ring, mut tx, _rx) = pair(4096);
    let r = tx.try_reserve(8).unwrap().detach();
    tx.try_push(b"other").unwrap();
    // The slot now holds the committed record: it must not be handed out.
    let _ = tx.attach(&r);
}

#[test]
#[should_panic(expected = "another producer than its own")]
fn a_reservation_is_taken_back_only_by_its_own_producer() {
    let (_a, mut tx_a, _rx_a) = pair(4096);
    let (_b, tx_b, _rx_b) = pair(4096);
    // Both producers stand at position 0: only the identity tells them apart.
    let r = tx_a.try_reserve(8).unwrap().detach();
    let _ = tx_b.reserved(&r);
}

#[test]
fn a_detached_reservation_that_wraps_is_padded_and_read_at_the_start() {
    let (ring, mut tx, mut rx) = pair(4096);
    for _ in 0..3 {
        tx.try_push(&[7u8; 1000]).unwrap();
        assert_eq!(pop(&mut rx).unwrap(), vec![7u8; 1000]);
    }
    // 1,072 bytes are left before the end: 1,500 do not fit there.
    let r = tx.try_reserve(1500).unwrap().detach();
    tx.attach(&r).fill(9);
    assert!(matches!(
        rx.try_pop_into(&mut [0u8; 2048]),
        Err(PopError::Empty)
    ));
    tx.attach(&r).commit();
    assert_eq!(pop(&mut rx).unwrap(), vec![9u8; 1500]);
    // The padding to the end, then the record (8 + 1,500 bytes, rounded
    // up to 8) at offset 0.
    assert_eq!(tail(&ring) % 4096, 1512);
}
