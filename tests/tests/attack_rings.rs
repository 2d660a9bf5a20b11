//! Attacks on a live connection's rings, against a real server process
//! (run with `--log-faults`, so that its error hook prints and keeps the
//! reason of every disconnection): a raw client (`ringlink_tests::attack`)
//! completes the handshake, then writes through its own mapping of the
//! rings what no honest client would: consumer positions past the end,
//! misaligned or going backwards, record lengths beyond the ring, garbage
//! kinds, malformed padding, record words for data that is not there,
//! message headers that lie, values flipped at random while the server
//! reads, garbage in the words the server need not trust (its request
//! rings' producer position among them: since ring layout 2 the server
//! finds requests by their record words). Each time the server drops
//! that connection with a logged reason (or, for harmless garbage, keeps
//! serving it), and a bystander client is served throughout: no panic,
//! no hang.
//!
//! Then the sealed memfds: the attacker tries to shrink, grow, extend,
//! write-seal, punch holes in and map past the end of its rings; the
//! seals refuse every size change, so the server never takes SIGBUS.
//!
//! Shared memory only: the socket transport's counterpart (datagrams that
//! break the framing) is `ipc_control::error_hook_sees_broken_socket_framing`
//! and the reassembly property tests in `fuzz_decoders`. The ring-level
//! versions of these attacks, between two ring processes, are in
//! `ring_hostile`.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use ringlink_common::wire::{MsgHeader, Transport, MSG_HEADER_LEN};
use ringlink_ringbuf::layout::{HEADER_SIZE, KIND_DATA, KIND_PAD};
use ringlink_tests::attack::{Bystander, RawClient, HANG};
use ringlink_tests::ipc::id;
use ringlink_tests::payload::Dice;
use ringlink_tests::procs::{unique_addr, ServerProc};
use ringlink_tests::raw::{off, RawRing};

const SERVER: &str = env!("CARGO_BIN_EXE_test_server");

/// Request, response and event ring indices.
const REQ: usize = 0;
const RESP: usize = 1;
const EVENT: usize = 2;

/// A server with its error log, a bystander, and the attacks so far.
struct Arena {
    server: ServerProc,
    good: Bystander,
    attacks: u64,
}

impl Arena {
    fn start(tag: &str) -> Arena {
        let server = ServerProc::spawn(SERVER, &unique_addr(tag), &["--log-faults"]);
        let mut good = Bystander::start(server.addr());
        good.served(10);
        Arena {
            server,
            good,
            attacks: 0,
        }
    }

    /// A connected raw client that has done `echoes` round trips.
    fn attacker(&mut self, echoes: usize) -> RawClient {
        let mut c = RawClient::connect(self.server.addr(), Transport::Shm);
        for i in 0..echoes {
            c.echo(&[i as u8; 40]).expect("echo before the attack");
        }
        c
    }

    /// Waits for the server to drop `c` and checks the reason it logged
    /// (`None`: dropped without a fault, as a client that closed).
    fn dropped(&mut self, c: &RawClient, what: &str, reason: Option<&str>) {
        assert!(
            c.server_closed(HANG),
            "{what}: the server did not drop the connection"
        );
        self.attacks += 1;
        let faults = self.server.faults();
        let logged: Vec<&String> = faults
            .iter()
            .filter(|(conn, _)| *conn == Some(c.id))
            .map(|(_, w)| w)
            .collect();
        match reason {
            Some(r) => assert!(
                logged.len() == 1 && logged[0].starts_with(r),
                "{what}: expected one fault starting `{r}`, logged {logged:?}"
            ),
            None => assert!(logged.is_empty(), "{what}: unexpected faults {logged:?}"),
        }
        eprintln!("{what}: dropped; logged {logged:?}");
        self.good.served(5);
    }

    fn finish(mut self) {
        let report = self.good.finish();
        eprintln!(
            "{} attacks; the bystander did {} checked round trips meanwhile (max {:?})",
            self.attacks, report.requests, report.max
        );
        let (fin, out) = self.server.shutdown();
        assert_eq!(
            (fin.u("violations"), fin.u("check_failures"), fin.u("live")),
            (0, 0, 0),
            "{out}"
        );
    }
}

const REQUEST_RING: &str = "client corrupted its request ring: ";
// (Before violations were typed this one read "...response ring: ring is
// corrupt: ...", the ring crate's wording doubled.)
const RESPONSE_RING: &str = "client corrupted its response ring: ";
const BAD_HEADER: &str = "bad request header: ";

#[test]
fn corrupt_request_rings_are_dropped_with_a_reason() {
    let mut a = Arena::start("ring-req");
    // Every connection here has the server's minimum message size.
    let cap = ringlink_channel::set::ring_capacity_for(
        ringlink_ipcs::ServiceOptions::default().min_message,
    );
    // A record word (length, kind) where the next record goes, and the
    // reason logged.
    let cases = [
        (
            "record length beyond the ring",
            2,
            (1 << 30, KIND_DATA),
            format!("{REQUEST_RING}record length"),
        ),
        (
            "record length u32::MAX",
            0,
            (u32::MAX, KIND_DATA),
            format!("{REQUEST_RING}record length"),
        ),
        (
            "garbage record kind",
            1,
            (8, 0xdead_beef),
            format!("{REQUEST_RING}record kind"),
        ),
        (
            "padding at offset 0",
            0,
            (cap as u32 - 8, KIND_PAD),
            format!("{REQUEST_RING}padding record"),
        ),
        (
            "padding short of the region's end",
            1,
            (8, KIND_PAD),
            format!("{REQUEST_RING}padding record"),
        ),
        // A well-formed word for 64 bytes the attacker never wrote (the
        // ring cannot tell it from a record): the message layer reads
        // zeros where the header should be, and refuses it.
        (
            "a record word for data never written",
            0,
            (64, KIND_DATA),
            format!("{BAD_HEADER}message size"),
        ),
    ];
    for (what, echoes, (len, kind), reason) in cases {
        let mut c = a.attacker(echoes);
        // Where the next record goes: our own producer's position (the
        // server has read everything before it, or is about to).
        let h = c.shm().request.position();
        let raw = &c.shm().raw[REQ];
        assert_eq!(raw.capacity(), cap);
        raw.set_record_word(h, len, kind);
        c.kick();
        a.dropped(&c, what, Some(&reason));
    }
    a.finish();
}

#[test]
fn lies_about_the_request_rings_producer_position_cost_nothing() {
    // The server reads requests by their record words and never reads
    // the producer position of a request ring after its claim: whatever
    // the client writes there, the connection goes on.
    let mut a = Arena::start("ring-tail");
    let cap = ringlink_channel::set::ring_capacity_for(
        ringlink_ipcs::ServiceOptions::default().min_message,
    ) as u64;
    type Lie = fn(u64, u64) -> u64;
    let lies: [(&str, Lie); 5] = [
        ("past the end", |h, cap| h + cap + 8),
        ("at u64::MAX - 7", |_, _| u64::MAX - 7),
        ("misaligned", |h, _| h + 4),
        ("behind the consumer", |h, _| h.wrapping_sub(16)),
        ("over unwritten memory", |h, _| h + 64),
    ];
    for (what, lie) in lies {
        let mut c = a.attacker(2);
        let h = c.shm().request.position();
        c.shm().raw[REQ].set_tail(lie(h, cap));
        c.kick();
        for i in 0..20u8 {
            // Each commit stores the true position again: lie anew.
            c.echo(&[i; 100])
                .unwrap_or_else(|e| panic!("tail {what}: echo {i}: {e}"));
            let h = c.shm().request.position();
            c.shm().raw[REQ].set_tail(lie(h, cap));
        }
        assert!(
            !c.server_closed(Duration::from_millis(1)),
            "tail {what}: dropped"
        );
        assert!(
            a.server.faults().iter().all(|(id, _)| *id != Some(c.id)),
            "tail {what}: a fault was logged"
        );
        a.good.served(5);
        eprintln!("tail {what}: 20 round trips after the lie");
    }
    a.finish();
}

/// A record of `len` bytes whose message header is `header` (written
/// as it is, lies included).
fn lying_record(c: &mut RawClient, len: usize, header: impl FnOnce(&mut [u8])) {
    let s = c.shm();
    let mut g = s.request.try_reserve(len).expect("reserve");
    g.fill(0);
    header(&mut g);
    g.commit();
}

#[test]
fn lying_message_headers_are_dropped_with_a_reason() {
    let mut a = Arena::start("ring-hdr");
    // Record length, the size its header announces, its flags' low byte.
    let cases = [
        (
            "header announcing 999 bytes in a record of 5",
            MSG_HEADER_LEN + 5,
            999,
            0,
            "message size",
        ),
        (
            "header announcing 4 bytes in a record of 5",
            MSG_HEADER_LEN + 5,
            4,
            0,
            "message size",
        ),
        (
            "a flag this version does not define",
            MSG_HEADER_LEN,
            0,
            4,
            "reserved field or unknown flag",
        ),
        (
            "an event's flag (lagged) on a request",
            MSG_HEADER_LEN,
            0,
            2,
            "reserved field or unknown flag",
        ),
        (
            "one-way flag on a numbered request",
            MSG_HEADER_LEN,
            0,
            1,
            "one-way message with a sequence number",
        ),
        (
            "record shorter than a message header",
            5,
            0,
            0,
            "wrong message length",
        ),
    ];
    for (i, (what, len, size, reserved, reason)) in cases.into_iter().enumerate() {
        let mut c = a.attacker(i % 3);
        lying_record(&mut c, len, |b| {
            if b.len() >= MSG_HEADER_LEN {
                MsgHeader {
                    id: id::ECHO,
                    size,
                    error: 0,
                    flags: 0,
                    seq: 1,
                }
                .encode_into(b);
                b[12] = reserved;
            }
        });
        a.dropped(&c, what, Some(&format!("{BAD_HEADER}{reason}")));
    }
    a.finish();
}

/// Sends 8 KiB echo requests without reading the answers until the
/// server drops the connection.
fn fill_responses(c: &mut RawClient, what: &str) {
    let deadline = Instant::now() + HANG;
    let mut rec = vec![0u8; MSG_HEADER_LEN + 8192];
    for seq in 1u64.. {
        MsgHeader {
            id: id::ECHO,
            size: 8192,
            error: 0,
            flags: 0,
            seq,
        }
        .encode_into(&mut rec);
        while c.shm().request.try_push(&rec).is_err() {
            if c.server_closed(Duration::from_millis(1)) {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: never dropped");
        }
    }
}

#[test]
fn a_request_larger_than_the_negotiated_maximum_is_dropped_with_a_reason() {
    let mut a = Arena::start("ring-oversize");
    let mut c = a.attacker(1);
    // The ring holds records up to about twice the negotiated maximum;
    // the protocol allows `max_message` bytes of payload.
    let len = MSG_HEADER_LEN + c.max_message + 1;
    lying_record(&mut c, len, |b| {
        MsgHeader {
            id: id::ECHO,
            size: (len - MSG_HEADER_LEN) as u32,
            error: 0,
            flags: 0,
            seq: 2,
        }
        .encode_into(b)
    });
    let what = format!(
        "{} payload bytes over a maximum of {}",
        len - MSG_HEADER_LEN,
        c.max_message
    );
    a.dropped(&c, &what, Some("request of "));
    a.finish();
}

#[test]
fn corrupt_response_rings_are_dropped_with_a_reason() {
    let mut a = Arena::start("ring-resp");
    // The server re-reads our position only when the one it cached says
    // there is no room for a full answer; by then it has written more.
    // A lie is caught if it is still impossible then: a plausible one
    // (somewhere it has written) only stalls the liar.
    type Corrupt = fn(&RawRing);
    let cases: [(&str, Corrupt, &str); 4] = [
        (
            "consumer more than a lap ahead of the producer",
            |r| r.set_head(r.tail() + 2 * r.capacity() as u64),
            "peer position is more than a capacity ahead",
        ),
        (
            "head misaligned",
            |r| r.set_head(r.head() + 4),
            "peer position is not 8-byte aligned",
        ),
        (
            "head moved back before the start",
            |r| r.set_head(0u64.wrapping_sub(64)),
            "peer position is behind ours",
        ),
        (
            "head far away",
            |r| r.set_head(r.head() ^ (1 << 62)),
            "peer position is",
        ),
    ];
    for (what, corrupt, reason) in cases {
        let mut c = a.attacker(3);
        corrupt(&c.shm().raw[RESP]);
        fill_responses(&mut c, what);
        a.dropped(&c, what, Some(&format!("{RESPONSE_RING}{reason}")));
    }
    a.finish();
}

#[test]
fn a_corrupt_event_ring_is_dropped_with_a_reason() {
    let mut a = Arena::start("ring-event");
    let mut c = a.attacker(1);
    let raw = &c.shm().raw[EVENT];
    // The consumer more than a lap ahead of the producer: impossible
    // whatever the server writes before it looks.
    raw.set_head(raw.tail() + 2 * raw.capacity() as u64);
    // The server sends 1000-byte events until the ring is full (FILL):
    // its producer re-reads our position and sees the lie. (The test
    // server reports the failed send as a violation of its own.)
    c.send(id::FILL, &1000u64.to_le_bytes()).expect("send");
    let closed = c.server_closed(HANG);
    let violations = a.server.command("violations");
    assert!(
        closed,
        "the server kept a client whose event ring is corrupt; the test server says: {violations}"
    );
    let faults = a.server.faults();
    assert!(
        faults
            .iter()
            .any(|(conn, what)| *conn == Some(c.id) && what.contains("event ring")),
        "dropped without a reason naming the event ring: {faults:?}"
    );
    a.good.finish();
    a.server.shutdown();
}

#[test]
fn garbage_in_words_the_server_need_not_trust_costs_nothing() {
    let mut a = Arena::start("ring-harmless");
    let mut c = a.attacker(2);
    for r in &c.shm().raw {
        r.store32(off::CONSUMER_WAITING, u32::MAX);
        r.store32(off::PRODUCER_WAITING, u32::MAX);
        r.store32(off::PRODUCER_OWNER, 0xdead);
        r.store32(off::CONSUMER_OWNER, 0xbeef);
        // The user word, where the server publishes flow control.
        r.store32(off::USER_WORD, 0x5a5a);
    }
    // The request ring's head is the server's to write: a lie there is
    // not read back by the server (it keeps its own).
    c.shm().raw[REQ].set_head(12345);
    c.kick();
    for i in 0..50u8 {
        c.echo(&[i; 300]).expect("echo after harmless garbage");
    }
    a.good.served(5);
    // And the closed bits, any of them, close the connection quietly.
    c.shm().raw[REQ].store32(off::CLOSED, 0xf0);
    c.kick();
    a.dropped(&c, "undefined closed bits", None);
    a.finish();
}

#[test]
fn values_flipped_while_the_server_reads_get_the_connection_dropped() {
    let mut a = Arena::start("ring-flip");
    let mut dropped = 0;
    let mut sent = 0u64;
    let started = Instant::now();
    for round in 0..20u64 {
        let mut c = a.attacker(1);
        let raw = RawRing::map(&c.shm().rings[REQ]).expect("a mapping for the flipper");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flipper = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                // The same flips on every run.
                let mut dice = Dice::new(round);
                let cap = raw.capacity() as u64;
                let mut flips = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let v = dice.roll();
                    // The producer position (harmless since ring layout
                    // 2, and it misleads the third kind of flip until
                    // the next commit stores it again); any data word;
                    // a word where the next records go.
                    match v % 4 {
                        0 => raw.set_tail(raw.tail().wrapping_add((v >> 8) % 64 * 8)),
                        1 => raw
                            .store64(HEADER_SIZE + (((v >> 16) % cap) & !7) as usize, dice.roll()),
                        _ => {
                            let at = raw.tail().wrapping_add((v >> 8) % 4 * 8);
                            raw.store64(HEADER_SIZE + (at % cap) as usize, dice.roll());
                        }
                    }
                    flips += 1;
                    if flips % 64 == 0 {
                        std::thread::yield_now();
                    }
                }
                flips
            })
        };
        // Valid requests meanwhile (their answers read and dropped), until
        // the server gives up on us.
        let deadline = Instant::now() + HANG;
        while !c.server_closed(Duration::from_micros(100)) {
            assert!(Instant::now() < deadline, "round {round}: never dropped");
            let s = c.shm();
            if s.request.try_push(&[0u8; MSG_HEADER_LEN]).is_ok() {
                sent += 1;
            }
            while let Ok(g) = s.response.try_peek() {
                g.release();
            }
            c.kick();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let flips = flipper.join().expect("flipper");
        let faults = a.server.faults();
        let logged: Vec<_> = faults.iter().filter(|(id, _)| *id == Some(c.id)).collect();
        assert_eq!(logged.len(), 1, "round {round}: {logged:?}");
        dropped += 1;
        a.attacks += 1;
        eprintln!("flip round {round}: {flips} flips; {logged:?}");
        a.good.served(5);
    }
    eprintln!(
        "20 connections flipped at random while read: {dropped} dropped with a logged reason; \
         {sent} requests pushed meanwhile, in {:?}",
        started.elapsed()
    );
    a.finish();
}

// --- the seals ------------------------------------------------------------------

/// `Err(errno)` of a system call's result.
fn errno(r: libc::c_int) -> Result<(), i32> {
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(())
    }
}

fn size_of(fd: BorrowedFd<'_>) -> i64 {
    let f = std::fs::File::from(fd.try_clone_to_owned().expect("dup"));
    f.metadata().expect("fstat").len() as i64
}

#[test]
fn resizing_a_live_servers_rings_is_refused_by_the_seals() {
    let mut a = Arena::start("ring-seals");
    let mut c = a.attacker(5);
    let eperm = Err(libc::EPERM);
    let mut refused = 0;
    for (i, ring) in c.shm().rings.iter().enumerate() {
        let fd = ring.memory_fd().expect("memfd");
        let raw_fd = fd.as_raw_fd();
        let size = size_of(fd);
        let attempts: [(&str, Result<(), i32>); 6] =
        // SAFETY: plain system calls on an open fd; no memory is passed
        // except the one-byte buffer, live for the call.
        unsafe {
            [
                ("ftruncate to 0", errno(libc::ftruncate(raw_fd, 0))),
                (
                    "ftruncate to half",
                    errno(libc::ftruncate(raw_fd, size / 2)),
                ),
                (
                    "ftruncate to double",
                    errno(libc::ftruncate(raw_fd, size * 2)),
                ),
                (
                    "fallocate past the end",
                    errno(libc::fallocate(raw_fd, 0, size, 4096)),
                ),
                (
                    "pwrite past the end",
                    errno(libc::pwrite(raw_fd, b"x".as_ptr().cast(), 1, size) as libc::c_int),
                ),
                (
                    "add F_SEAL_WRITE",
                    errno(libc::fcntl(raw_fd, libc::F_ADD_SEALS, libc::F_SEAL_WRITE)),
                ),
            ]
        };
        for (what, r) in attempts {
            assert_eq!(r, eperm, "ring {i}: {what}");
            refused += 1;
        }
        assert_eq!(size_of(fd), size, "ring {i}: size changed");
        // Mapping past the end is the attacker's own business: its
        // mapping, its SIGBUS if it touches the excess. The file does
        // not change.
        // SAFETY: a fresh shared mapping of an open fd, unmapped at once,
        // never touched.
        unsafe {
            let len = (size * 2) as usize;
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                raw_fd,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED, "ring {i}: map past the end");
            libc::munmap(p, len);
        }
        assert_eq!(size_of(fd), size, "ring {i}: size changed by a mapping");
    }
    // Still whole, still served.
    for i in 0..20u8 {
        c.echo(&[i; 1000]).expect("echo after the refused resizes");
    }
    a.good.served(5);
    eprintln!("{refused} resize attempts on a live connection's memfds refused (EPERM)");

    // What the seals allow: punching holes, which zero the pages (the
    // header included) without changing the size: no SIGBUS. Every
    // position the server keeps is its own; it reads the zeroed words
    // through the same checks as any other lie, and may drop us or not.
    // Either way the server stays up, the bystander is served, and the
    // connection is gone once we leave.
    for ring in &c.shm().rings {
        let fd = ring.memory_fd().expect("memfd").as_raw_fd();
        let size = size_of(ring.memory_fd().expect("memfd"));
        // SAFETY: plain system call on an open fd; no memory is passed.
        let r = unsafe {
            libc::fallocate(
                fd,
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                0,
                size,
            )
        };
        assert_eq!(r, 0, "punch a hole: {}", std::io::Error::last_os_error());
    }
    // Our own side reads the zeroed words too (and may find its own
    // rings corrupt): whatever it gets is its own business, and an answer
    // that does not come is not waited for long (the request may have
    // gone where the server no longer reads).
    let after = c.send(id::ECHO, b"after the holes").and_then(|seq| {
        c.recv(Duration::from_secs(2))
            .map(|(h, p)| (seq, h.seq, p.len()))
            .map_err(|e| format!("{e:?}"))
    });
    a.good.served(5);
    let id = c.id;
    drop(c);
    a.server
        .wait_stats("the attacker's end", HANG, |s| s.u("live") == 1);
    eprintln!("after punching holes in every ring: the attacker's echo gave {after:?}; connection {id} closed, the server alive");
    a.finish();
}
