//! A hostile peer across processes. The test shares a ring with a
//! `ring_peer` helper that plays one side honestly, and through its own
//! mapping of the same memfd ([`RawRing`]) writes garbage into the words
//! the other side owns: positions, record words, waiting flags, claim
//! words, closed bits, the meta fields. The helper must report
//! `Corrupt(..)` for what it cannot trust, keep working where the garbage
//! is harmless, and in every case exit cleanly: never crash, never loop.
//!
//! Since ring layout 2 the consumer finds records by the word at its own
//! position and never reads the producer's position after its claim: a
//! lie there is harmless, and a lie in a record word is judged by the
//! word alone (a well-formed word for data that is not there is a record
//! like any other, which the layer above checks).
//!
//! The helper reports its last result as an `outcome ...` line; a ring
//! call that does not return (an endless loop) makes it report `outcome
//! hung` and exit with status 2, which fails the test.
//!
//! Also here: what a receiver accepts from the peer that hands it a ring
//! (only a sealed memfd, only eventfds as wake fds), and that the peer
//! cannot resize the sealed memfd it was handed.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::time::Duration;

use ringlink_ringbuf::layout::{max_payload, HEADER_SIZE, KIND_DATA, KIND_PAD, MAGIC};
use ringlink_ringbuf::{Producer, Ring, WakeMode, LAYOUT_VERSION};
use ringlink_tests::payload::fill;
use ringlink_tests::peer::{Finished, Peer};
use ringlink_tests::raw::{self, off, RawRing, CLOSED_BY_CONSUMER};
use ringlink_tests::stream::{self, Api};
use ringlink_tests::tmp::TempDir;

const PEER: &str = env!("CARGO_BIN_EXE_ring_peer");
/// Stream of the valid records the honest side checks.
const SEED: u64 = 0xBAD_5EED;
/// Ring size of these tests.
const CAP: usize = 4096;
/// Size of one 8-byte-payload record.
const REC: u64 = 16;
/// Deadline of every wait on the helper (generous: only catches hangs).
const WAIT: Duration = Duration::from_secs(60);
/// The helper gives up after this long without a record (or room): far
/// more than any test takes to corrupt the ring once the helper is idle.
const IDLE_MS: &str = "60000";

// --- a consumer helper; the test is its producer ------------------------

/// A `hostile-consume` helper, with the test holding the producer role
/// (for valid records) and a raw mapping (for garbage).
struct AgainstConsumer {
    ring: Ring,
    raw: RawRing,
    tx: Producer,
    peer: Peer,
    sent: u64,
}

impl AgainstConsumer {
    fn start(idle_ms: &str) -> AgainstConsumer {
        AgainstConsumer::start_with(idle_ms, |_| {})
    }

    /// `before` runs on the raw mapping before the helper gets the ring.
    fn start_with(idle_ms: &str, before: impl FnOnce(&RawRing)) -> AgainstConsumer {
        let ring = Ring::create(CAP).expect("Ring::create");
        let raw = RawRing::map(&ring).expect("map");
        let tx = ring.producer().expect("claim producer");
        before(&raw);
        let peer = Peer::spawn(PEER, &["hostile-consume", &SEED.to_string(), idle_ms]);
        peer.send_ring(&ring).expect("send ring");
        AgainstConsumer {
            ring,
            raw,
            tx,
            peer,
            sent: 0,
        }
    }

    fn wait_claimed(&mut self) {
        let pid = self.peer.pid();
        let raw = &self.raw;
        self.peer.wait_until("the consumer claim", WAIT, || {
            raw.load32(off::CONSUMER_OWNER) == pid
        });
    }

    /// Sends `n` valid records and waits until the helper has read them.
    fn feed(&mut self, n: u64) {
        let mut rec = [0u8; 8];
        for _ in 0..n {
            fill(SEED, self.sent, &mut rec);
            if let Err(e) = self.tx.push_timeout(&rec, WAIT) {
                self.peer
                    .fail(&format!("push of valid record {}: {e:?}", self.sent));
            }
            self.sent += 1;
        }
        let raw = &self.raw;
        self.peer
            .wait_until("the consumer to read every record", WAIT, || {
                raw.head() == raw.tail()
            });
    }

    /// Wakes the helper if it sleeps (as a producer's commit would).
    fn kick(&self) {
        raw::kick(self.ring.data_ready_fd().expect("eventfd ring")).expect("kick");
    }

    /// Waits for the helper's exit (the test's producer stays open until
    /// then, so a `Closed` outcome comes from the garbage alone).
    fn finish(self) -> Finished {
        let AgainstConsumer { peer, tx, .. } = self;
        let out = peer.wait(WAIT);
        drop(tx);
        out.assert_success();
        out
    }

    /// Closes the test's producer, then waits for the helper's exit.
    fn close_and_finish(self) -> Finished {
        let AgainstConsumer { peer, tx, .. } = self;
        drop(tx);
        let out = peer.wait(WAIT);
        out.assert_success();
        out
    }
}

/// Feeds `pre` valid records, lets `corrupt` write garbage (given the
/// consumer's position), and expects the helper to report
/// `corrupt EXPECT after PRE`.
fn consumer_sees(pre: u64, corrupt: impl FnOnce(&RawRing, u64), expect: &str) {
    let mut t = AgainstConsumer::start(IDLE_MS);
    t.wait_claimed();
    t.feed(pre);
    let head = t.raw.head();
    assert_eq!(head, pre * REC);
    corrupt(&t.raw, head);
    t.kick();
    let out = t.finish();
    assert_eq!(
        out.outcome(),
        format!("corrupt {expect} after {pre}"),
        "{out}"
    );
}

/// Feeds `pre` valid records, lets `lie` rewrite the producer position
/// (given the consumer's), then feeds 20 more: the consumer, which
/// never reads that position after its claim, reads them all and sees
/// the close.
fn consumer_ignores_tail(pre: u64, lie: impl FnOnce(&RawRing, u64)) {
    let mut t = AgainstConsumer::start(IDLE_MS);
    t.wait_claimed();
    t.feed(pre);
    let head = t.raw.head();
    assert_eq!(head, pre * REC);
    lie(&t.raw, head);
    t.kick();
    // The honest producer keeps its own position (and stores it again at
    // each commit): `feed` waits until the two agree again.
    t.feed(20);
    let out = t.close_and_finish();
    assert_eq!(out.outcome(), format!("closed after {}", pre + 20), "{out}");
}

#[test]
fn tail_past_the_end_is_harmless() {
    consumer_ignores_tail(3, |r, h| r.set_tail(h + CAP as u64 + 8));
}

#[test]
fn tail_misaligned_is_harmless() {
    consumer_ignores_tail(3, |r, h| r.set_tail(h + 3));
}

#[test]
fn tail_behind_the_consumer_is_harmless() {
    consumer_ignores_tail(3, |r, h| r.set_tail(h - REC));
}

#[test]
fn tail_moved_over_unwritten_memory_publishes_nothing() {
    // Ring layout 1 read a zeroed record word here (kind 0) and reported
    // it; now a zero word is "nothing yet": the consumer waits, and reads
    // on once real records come.
    consumer_ignores_tail(0, |r, h| r.set_tail(h + 64));
}

#[test]
fn a_well_formed_word_for_data_never_written_is_a_record_the_reader_checks() {
    // The producer owns its record words: one claiming 100 bytes where it
    // wrote 8 is a record of 100 bytes as far as the ring can tell. The
    // helper's own check of the content refuses it (in ringlink, the
    // message header check does), and nothing reads beyond the record.
    let mut t = AgainstConsumer::start(IDLE_MS);
    t.wait_claimed();
    t.feed(3);
    let head = t.raw.head();
    t.raw.set_record_word(head, 100, KIND_DATA);
    t.kick();
    let out = t.finish();
    assert!(
        out.outcome().starts_with("bad-record"),
        "expected the helper to refuse the record's content:\n{out}"
    );
}

#[test]
fn record_length_beyond_max_payload() {
    // Fits the region; only the payload limit is broken.
    consumer_sees(
        0,
        |r, h| {
            r.set_record_word(h, max_payload(CAP) as u32 + 1, KIND_DATA);
        },
        "RecordLength",
    );
}

#[test]
fn record_length_u32_max() {
    consumer_sees(
        5,
        |r, h| {
            r.set_record_word(h, u32::MAX, KIND_DATA);
        },
        "RecordLength",
    );
}

#[test]
fn record_running_past_the_region_end() {
    // Consumer 64 bytes before the end; a 200-byte record would wrap.
    let pre = (CAP as u64 - 64) / REC;
    consumer_sees(
        pre,
        |r, h| {
            r.set_record_word(h, 200, KIND_DATA);
        },
        "RecordLength",
    );
}

#[test]
fn record_kind_garbage() {
    consumer_sees(
        3,
        |r, h| {
            r.set_record_word(h, 8, 0xDEAD_BEEF);
        },
        "RecordKind",
    );
}

#[test]
fn padding_at_offset_zero_fresh_ring() {
    consumer_sees(
        0,
        |r, h| {
            r.set_record_word(h, CAP as u32 - 8, KIND_PAD);
        },
        "Padding",
    );
}

#[test]
fn padding_at_offset_zero_after_a_lap() {
    // 256 records of 16 bytes: the consumer is back at offset 0.
    consumer_sees(
        CAP as u64 / REC,
        |r, h| {
            r.set_record_word(h, CAP as u32 - 8, KIND_PAD);
        },
        "Padding",
    );
}

#[test]
fn padding_short_of_the_region_end() {
    consumer_sees(
        3,
        |r, h| {
            r.set_record_word(h, 8, KIND_PAD);
        },
        "Padding",
    );
}

#[test]
fn padding_published_alone_only_stalls_the_stream() {
    // Well-formed padding with nothing published after it (the word at 0
    // cleared, as any producer must before publishing padding): the
    // consumer skips to offset 0 and waits there, while the test's
    // producer goes on writing where it was. The liar stalled its own
    // stream; the consumer neither reports nor reads anything.
    let mut t = AgainstConsumer::start("1000");
    t.wait_claimed();
    t.feed(3);
    let h = t.raw.head();
    let to_end = CAP as u64 - h;
    t.raw.store64(HEADER_SIZE, 0);
    t.raw.set_record_word(h, (to_end - 8) as u32, KIND_PAD);
    t.kick();
    let out = t.finish();
    assert_eq!(out.outcome(), "idle after 3", "{out}");
}

#[test]
fn consumer_claim_refuses_misaligned_positions() {
    let t = AgainstConsumer::start_with(IDLE_MS, |r| r.set_tail(3));
    let out = t.finish();
    assert_eq!(
        out.outcome(),
        "claim-error Corrupt(MisalignedPosition)",
        "{out}"
    );
}

#[test]
fn consumer_claim_refuses_tail_too_far_ahead() {
    let t = AgainstConsumer::start_with(IDLE_MS, |r| r.set_tail(CAP as u64 + 8));
    let out = t.finish();
    assert_eq!(
        out.outcome(),
        "claim-error Corrupt(PositionTooFarAhead)",
        "{out}"
    );
}

#[test]
fn consumer_claim_word_taken_by_garbage() {
    // The peer can deny the role (it could as well never hand the ring
    // over); the claimant is told so, with the garbage as owner.
    let t = AgainstConsumer::start_with(IDLE_MS, |r| r.store32(off::CONSUMER_OWNER, 0xDEAD_BEEF));
    let out = t.finish();
    assert_eq!(
        out.outcome(),
        format!(
            "claim-error Taken {{ role: Consumer, owner: {} }}",
            0xDEAD_BEEF_u32
        ),
        "{out}"
    );
}

#[test]
fn consumer_ignores_garbage_in_words_it_does_not_trust() {
    // Waiting flags, claim words, and the meta fields read only at open:
    // garbage there changes nothing for a consumer already running.
    let mut t = AgainstConsumer::start(IDLE_MS);
    t.wait_claimed();
    t.feed(5);
    t.raw.store32(off::CONSUMER_WAITING, u32::MAX);
    t.raw.store32(off::PRODUCER_WAITING, 0x1234_5678);
    t.raw.store32(off::PRODUCER_OWNER, 0);
    t.raw.store32(off::CONSUMER_OWNER, u32::MAX);
    t.raw.store64(off::MAGIC, 0x0BAD_0BAD_0BAD_0BAD);
    t.raw.store64(off::CAPACITY, 1 << 40);
    t.kick();
    t.feed(20);
    // Once more while the consumer may be asleep.
    t.raw.store32(off::CONSUMER_WAITING, 0);
    t.feed(20);
    let out = t.close_and_finish();
    assert_eq!(out.outcome(), "closed after 45", "{out}");
}

#[test]
fn consumer_treats_all_closed_bits_as_closed() {
    let mut t = AgainstConsumer::start(IDLE_MS);
    t.wait_claimed();
    t.feed(2);
    t.raw.store32(off::CLOSED, u32::MAX);
    t.kick();
    let out = t.finish();
    assert_eq!(out.outcome(), "closed after 2", "{out}");
}

/// Bits of the closed word that the protocol does not define must not
/// make the consumer loop: either they count as closed (as the producer
/// treats them) or they are ignored and `peek_timeout` times out. (It
/// once looped at 100 % CPU: the helper's hang monitor reports `hung`.)
#[test]
fn consumer_does_not_loop_on_unknown_closed_bits() {
    let mut t = AgainstConsumer::start("1000");
    t.wait_claimed();
    t.feed(2);
    t.raw.store32(off::CLOSED, 0x100);
    t.kick();
    let out = t.finish();
    let outcome = out.outcome();
    assert!(
        outcome == "closed after 2" || outcome == "idle after 2",
        "expected `closed after 2` or `idle after 2`:\n{out}"
    );
}

// --- a producer helper; the test is its consumer ------------------------

/// A `hostile-produce` helper writing 16-byte records; the test plays the
/// consumer through the raw mapping only.
struct AgainstProducer {
    ring: Ring,
    raw: RawRing,
    peer: Peer,
}

impl AgainstProducer {
    fn start() -> AgainstProducer {
        let ring = Ring::create(CAP).expect("Ring::create");
        let raw = RawRing::map(&ring).expect("map");
        let mut peer = Peer::spawn(PEER, &["hostile-produce", &SEED.to_string(), IDLE_MS]);
        peer.send_ring(&ring).expect("send ring");
        let pid = peer.pid();
        peer.wait_until("the producer claim", WAIT, || {
            raw.load32(off::PRODUCER_OWNER) == pid
        });
        AgainstProducer { ring, raw, peer }
    }

    /// Waits until the producer has filled the ring: up to one record
    /// short of `head + CAP` (the word after the last record must be
    /// free for the producer to clear, so the last 16 bytes stay empty).
    fn wait_full(&mut self) {
        let raw = &self.raw;
        self.peer
            .wait_until("the producer to fill the ring", WAIT, || {
                raw.tail() == raw.head() + CAP as u64 - REC
            });
    }

    fn kick(&self) {
        raw::kick(self.ring.space_ready_fd().expect("eventfd ring")).expect("kick");
    }

    fn finish(self) -> Finished {
        let out = self.peer.wait(WAIT);
        out.assert_success();
        out
    }
}

/// Records of 16 bytes a full ring holds.
const FULL: u64 = CAP as u64 / REC - 1;

/// Lets the producer fill the ring, writes `head`, and expects the
/// producer to report `corrupt EXPECT after 255`.
fn producer_sees(head: impl FnOnce(u64) -> u64, expect: &str) {
    let mut t = AgainstProducer::start();
    t.wait_full();
    let tail = t.raw.tail();
    t.raw.set_head(head(tail));
    t.kick();
    let out = t.finish();
    assert_eq!(
        out.outcome(),
        format!("corrupt {expect} after {FULL}"),
        "{out}"
    );
}

#[test]
fn head_misaligned() {
    producer_sees(|_| 3, "MisalignedPosition");
}

#[test]
fn head_ahead_of_the_producer() {
    producer_sees(|tail| tail + 64, "PositionTooFarAhead");
}

#[test]
fn head_garbage() {
    producer_sees(|_| 0xFFFF_FFFF_FFFF_FFF8, "PositionBehind");
}

#[test]
fn head_moving_backwards() {
    let mut t = AgainstProducer::start();
    t.wait_full();
    // A valid release of 64 records (the test never read them: harmless
    // to the producer), which it fills again...
    t.raw.set_head(1024);
    t.kick();
    t.wait_full();
    // ...then the consumer position goes back one record.
    t.raw.set_head(1024 - REC);
    t.kick();
    let out = t.finish();
    assert_eq!(
        out.outcome(),
        format!("corrupt PositionBehind after {}", 1024 / REC + FULL),
        "{out}"
    );
}

#[test]
fn producer_ignores_garbage_in_words_it_does_not_trust() {
    let mut t = AgainstProducer::start();
    t.wait_full();
    t.raw.store32(off::PRODUCER_WAITING, u32::MAX);
    t.raw.store32(off::CONSUMER_WAITING, 0x1234_5678);
    t.raw.store32(off::PRODUCER_OWNER, 0);
    t.raw.store32(off::CONSUMER_OWNER, u32::MAX);
    t.raw.store64(off::MAGIC, 0);
    t.raw.store64(off::CAPACITY, 64);
    // Release everything: the producer fills the ring once more.
    let tail = t.raw.tail();
    t.raw.set_head(tail);
    t.kick();
    t.wait_full();
    t.raw.store32(off::CLOSED, CLOSED_BY_CONSUMER);
    t.kick();
    let out = t.finish();
    assert_eq!(out.outcome(), format!("closed after {}", 2 * FULL), "{out}");
}

#[test]
fn producer_treats_unknown_closed_bits_as_closed() {
    let mut t = AgainstProducer::start();
    t.wait_full();
    t.raw.store32(off::CLOSED, 0x100);
    t.kick();
    let out = t.finish();
    assert_eq!(out.outcome(), format!("closed after {FULL}"), "{out}");
}

// --- what the peer hands over ----------------------------------------------

/// A memfd holding a valid eventfd-ring header for [`CAP`], with `seals`
/// added (none: 0).
fn crafted_memfd(seals: libc::c_int) -> File {
    let name = CString::new("ringlink-test-crafted").expect("no NUL");
    // SAFETY: `name` is a valid NUL-terminated string for the call; the
    // flags are valid.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: the kernel just returned `fd`; nothing else owns it.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.set_len((HEADER_SIZE + CAP) as u64).expect("set_len");
    // The header fields a ring's creator writes (layout docs: native
    // endian), magic included.
    let mut head = [0u8; 32];
    head[0..8].copy_from_slice(&MAGIC.to_ne_bytes());
    head[8..12].copy_from_slice(&LAYOUT_VERSION.to_ne_bytes());
    head[12..16].copy_from_slice(&(HEADER_SIZE as u32).to_ne_bytes());
    head[16..24].copy_from_slice(&(CAP as u64).to_ne_bytes());
    head[24..28].copy_from_slice(&(WakeMode::EventFd as u32).to_ne_bytes());
    file.write_all_at(&head, 0).expect("write header");
    if seals != 0 {
        // SAFETY: plain fcntl on a live fd; no memory is passed.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) };
        assert_eq!(r, 0, "F_ADD_SEALS: {}", std::io::Error::last_os_error());
    }
    file
}

/// Hands the helper a crafted memfd with the eventfds of a real ring.
fn open_crafted(seals: libc::c_int) -> Finished {
    let real = Ring::create(CAP).expect("Ring::create");
    let memfd = crafted_memfd(seals);
    let peer = Peer::spawn(PEER, &["hostile-consume", &SEED.to_string(), "300"]);
    peer.send_fds(&[
        memfd.as_fd(),
        real.data_ready_fd().expect("eventfd"),
        real.space_ready_fd().expect("eventfd"),
    ])
    .expect("send fds");
    let out = peer.wait(WAIT);
    out.assert_success();
    out
}

#[test]
fn receiver_accepts_a_properly_sealed_crafted_memfd() {
    // The control for the two tests below: the crafted header is valid.
    let out = open_crafted(libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL);
    assert_eq!(out.outcome(), "idle after 0", "{out}");
}

#[test]
fn receiver_refuses_an_unsealed_memfd() {
    let out = open_crafted(0);
    assert_eq!(out.outcome(), "open-error NotSealed", "{out}");
}

#[test]
fn receiver_refuses_a_memfd_sealed_only_against_shrinking() {
    let out = open_crafted(libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL);
    assert_eq!(out.outcome(), "open-error NotSealed", "{out}");
}

/// A plain file cannot be sealed, so the process that handed it over
/// could truncate it and kill the receiver with SIGBUS: `Ring::from_fds`
/// refuses it (named files are opened with `open_path` instead).
#[test]
fn receiver_survives_truncation_of_a_file_it_was_handed() {
    let dir = TempDir::new("sigbus");
    let ring = Ring::create_file(dir.path(), "ring", CAP, 0o600).expect("create_file");
    let raw = RawRing::map(&ring).expect("map");
    let mut tx = ring.producer().expect("claim producer");
    let mut peer = Peer::spawn(PEER, &["hostile-consume", &SEED.to_string(), IDLE_MS]);
    peer.send_ring(&ring).expect("send ring"); // the file's fd only
    let pid = peer.pid();
    let deadline = std::time::Instant::now() + WAIT;
    while raw.load32(off::CONSUMER_OWNER) != pid && peer.exited().is_none() {
        assert!(std::time::Instant::now() < deadline, "no claim, no exit");
        std::thread::sleep(Duration::from_millis(1));
    }
    if peer.exited().is_none() {
        let mut rec = [0u8; 8];
        for k in 0..3 {
            fill(SEED, k, &mut rec);
            tx.push_timeout(&rec, WAIT).expect("push");
        }
        peer.wait_until("the records to be read", WAIT, || raw.head() == raw.tail());
        // The attack: shrink the file under the receiver's mapping. We do
        // not touch our own mapping until the size is back.
        let file = ring.memory_fd().expect("file ring");
        // SAFETY: plain syscall on a live fd; no memory is passed.
        let r = unsafe { libc::ftruncate(file.as_raw_fd(), 0) };
        assert_eq!(r, 0);
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while peer.exited().is_none() && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Restore the size, so that our own mapping is whole again before
        // anything here touches it.
        let len = (HEADER_SIZE + CAP) as libc::off_t;
        // SAFETY: plain syscall on a live fd; no memory is passed.
        let r = unsafe { libc::ftruncate(file.as_raw_fd(), len) };
        assert_eq!(r, 0);
        raw.store32(off::CLOSED, CLOSED_BY_CONSUMER);
    }
    let out = peer.wait(WAIT);
    drop(tx);
    assert!(
        out.status.success() && out.outcome().starts_with("open-error"),
        "expected the receiver to refuse an unsealable file:\n{out}"
    );
}

/// Handed a blocking pipe as `data_ready`, a consumer about to sleep
/// would drain it with a `read` that blocks forever: `Ring::from_fds`
/// checks that wake fds are eventfds and makes them non-blocking.
#[test]
fn receiver_does_not_hang_on_a_blocking_wake_fd() {
    let ring = Ring::create(CAP).expect("Ring::create");
    let _tx = ring.producer().expect("claim producer");
    let mut ends = [0 as libc::c_int; 2];
    // SAFETY: `ends` is a live array of two ints for the kernel to fill.
    let r = unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both fds were just returned by the kernel; nothing else
    // owns them.
    let (read_end, _write_end) =
        unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) };
    let peer = Peer::spawn(PEER, &["hostile-consume", &SEED.to_string(), "1000"]);
    peer.send_fds(&[
        ring.memory_fd().expect("memfd"),
        read_end.as_fd(),
        ring.space_ready_fd().expect("eventfd"),
    ])
    .expect("send fds");
    let out = peer.wait(WAIT);
    let outcome = out.outcome();
    assert!(
        out.status.success() && (outcome == "idle after 0" || outcome.starts_with("open-error")),
        "{out}"
    );
}

// --- the sealed memfd -----------------------------------------------------

fn ftruncate_errno(ring: &Ring, len: i64) -> Option<i32> {
    let fd = ring.memory_fd().expect("memfd ring").as_raw_fd();
    // SAFETY: plain syscall on a live fd `ring` keeps open; no memory is
    // passed.
    let r = unsafe { libc::ftruncate(fd, len) };
    (r < 0).then(|| std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

#[test]
fn peer_cannot_resize_the_sealed_memfd() {
    let count = 200_000;
    let ring = Ring::create(64 * 1024).expect("Ring::create");
    // Not even the creator can.
    assert_eq!(ftruncate_errno(&ring, 0), Some(libc::EPERM));
    assert_eq!(ftruncate_errno(&ring, 1 << 20), Some(libc::EPERM));
    let mut rx = ring.consumer().expect("claim consumer");
    let mut peer = Peer::spawn(PEER, &["truncate", &count.to_string(), &SEED.to_string()]);
    peer.send_ring(&ring).expect("send ring");
    // The helper tries first, then produces: reading the stream through
    // our mapping afterwards is the proof that it is still whole.
    let seen = stream::consume_from_peer(&mut peer, &mut rx, count, SEED, Api::Copy, WAIT);
    assert_eq!(seen.records, count);
    let out = peer.wait(WAIT);
    out.assert_success();
    let eperm = format!("errno={}", libc::EPERM);
    for what in [
        "shrink-to-zero",
        "shrink",
        "grow",
        "fallocate-grow",
        "add-seal-write",
    ] {
        assert_eq!(
            out.line(&format!("truncate {what}")),
            Some(&*eperm),
            "{what}:\n{out}"
        );
    }
    let size = (4096 + 64 * 1024).to_string();
    assert_eq!(out.line("size-before"), Some(&*size), "{out}");
    assert_eq!(out.line("size-after"), Some(&*size), "{out}");
    assert_eq!(out.line("produced"), Some(&*count.to_string()), "{out}");
}
