//! Handshake attacks on a live server process, by a raw client written
//! in this file from `docs/PROTOCOL.md` (`ringlink_tests::attack`): wrong
//! magic, wrong versions, unknown protocol id, wrong transport, nonzero
//! reserved bytes, protocol ids of absurd lengths or not UTF-8, absurd
//! message sizes (0, odd, 2^31, 2^32 - 1), a truncated request (closed,
//! or stalled past the deadline), a request and a confirmation split into
//! one-byte writes, extra trailing bytes, a second request after the
//! first, bytes after the confirmation, 64 KiB of garbage.
//!
//! Each gets what the protocol promises (a clear rejection, a closed
//! socket, or, for what is valid, a working connection), the server
//! counts each refusal under its reason, and a well-behaved client
//! (`attack::Bystander`) does checked round trips throughout, served
//! after every attack; a newcomer connects after every attack too.
//!
//! Related, elsewhere: `ipc_control::service_statistics_count_rejections_by_reason`
//! (the counters, on a quiet server) and
//! `ipc_control::error_hook_sees_data_on_the_socket_after_the_handshake`
//! (in-process).

use std::io::Write;
use std::time::Duration;

use ringlink_channel::set::ring_capacity_for;
use ringlink_common::wire::{Confirm, Status, Transport, MAX_PROTOCOL_ID, REQUEST_LEN};
use ringlink_common::ServiceAddr;
use ringlink_ipcs::ServiceOptions;
use ringlink_tests::attack::{
    self, dial, read_answer, read_to_end, write_split, Answer, Bystander, RawClient, HANG,
};
use ringlink_tests::ipc::Kv;
use ringlink_tests::procs::{unique_addr, ServerProc};

const SERVER: &str = env!("CARGO_BIN_EXE_test_server");

/// The handshake deadline the server runs with here: far more than any
/// honest handshake of the test needs on a loaded machine (the split one
/// makes about 90 writes), and only the one stall case waits for it.
const DEADLINE_MS: u64 = 5_000;

/// What the server must do with an attack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// A rejection with this status, then the end of the stream.
    Refused(Status),
    /// The end of the stream, no answer.
    Closed,
    /// An acceptance (with the documented fds), then the end of the
    /// stream: what followed the request was not a confirmation.
    AcceptedThenClosed,
}

/// One attack: bytes written at once, then (if `shut`) the write side
/// shut down.
struct Attack {
    name: String,
    bytes: Vec<u8>,
    shut: bool,
    expect: Expect,
}

impl Attack {
    fn new(name: &str, bytes: Vec<u8>, expect: Expect) -> Attack {
        Attack {
            name: name.to_owned(),
            bytes,
            shut: false,
            expect,
        }
    }
}

/// The service statistics' name of a refusal.
fn counter(s: Status) -> &'static str {
    match s {
        Status::VersionMismatch => "version_mismatch",
        Status::UnknownProtocol => "unknown_protocol",
        Status::TransportMismatch => "transport_mismatch",
        Status::BadRequest => "bad_request",
        other => panic!("no attack expects {other:?}"),
    }
}

/// A valid request changed by `f`.
fn bent(transport: Transport, f: impl FnOnce(&mut [u8; REQUEST_LEN])) -> Vec<u8> {
    let mut b = attack::request(transport, 0);
    f(&mut b);
    b.to_vec()
}

fn attacks(transport: Transport) -> Vec<Attack> {
    use Expect::*;
    let other = match transport {
        Transport::Shm => Transport::Socket,
        _ => Transport::Shm,
    };
    let valid = attack::request(transport, 0).to_vec();
    // A valid request with a field changed, and the answer it must get.
    type Bend = fn(&mut [u8; REQUEST_LEN]);
    let bends: [(&str, Bend, Status); 6] = [
        ("wrong magic", |b| b[0] ^= 0xff, Status::BadRequest),
        (
            "unknown protocol id",
            |b| b[16] = b'X',
            Status::UnknownProtocol,
        ),
        ("unknown transport code", |b| b[6] = 9, Status::BadRequest),
        ("reserved field nonzero", |b| b[14] = 1, Status::BadRequest),
        (
            "protocol id padding nonzero",
            |b| b[79] = 1,
            Status::BadRequest,
        ),
        (
            "protocol id not UTF-8",
            |b| b[16] = 0xff,
            Status::BadRequest,
        ),
    ];
    let mut list: Vec<Attack> = bends
        .into_iter()
        .map(|(name, f, status)| Attack::new(name, bent(transport, f), Refused(status)))
        .collect();
    let garbage = (0..65536u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8);
    let mut bad_confirm = Confirm.encode().to_vec();
    bad_confirm[7] = 1;
    let others = [
        (
            "88 bytes of 0xa5",
            vec![0xa5; REQUEST_LEN],
            Refused(Status::BadRequest),
        ),
        (
            "88 zero bytes",
            vec![0; REQUEST_LEN],
            Refused(Status::BadRequest),
        ),
        (
            "64 KiB of garbage",
            garbage.collect(),
            Refused(Status::BadRequest),
        ),
        (
            "the other transport",
            attack::request(other, 0).to_vec(),
            Refused(Status::TransportMismatch),
        ),
        ("connect and close", vec![], Closed),
        (
            "valid request, then 8 bytes that are no confirmation",
            [valid.clone(), vec![0xee; 8]].concat(),
            AcceptedThenClosed,
        ),
        (
            "a second request after the first",
            [valid.clone(), valid.clone()].concat(),
            AcceptedThenClosed,
        ),
        (
            "confirmation with a nonzero reserved word",
            [valid.clone(), bad_confirm].concat(),
            AcceptedThenClosed,
        ),
    ];
    list.extend(
        others
            .into_iter()
            .map(|(name, bytes, expect)| Attack::new(name, bytes, expect)),
    );
    // Version 1 is the protocol before wake-ups moved to the socket, 2
    // the one before one-way requests, 3 the one before fds in messages,
    // 4 the one before records published by their own word (ring layout
    // 2): an old client gets a clear refusal, as every other version
    // does.
    for v in [0u16, 1, 2, 3, 4, 6, u16::MAX] {
        list.push(Attack::new(
            &format!("version {v}"),
            bent(transport, |b| b[4..6].copy_from_slice(&v.to_le_bytes())),
            Refused(Status::VersionMismatch),
        ));
    }
    // A version-3 client's request is 80 bytes, with no fd terms after
    // it, and it waits for the answer: it gets one.
    list.push(Attack::new(
        "a version-3 request of 80 bytes, then waiting",
        bent(transport, |b| b[4..6].copy_from_slice(&3u16.to_le_bytes()))
            [..ringlink_common::wire::REQUEST_HEAD_LEN]
            .to_vec(),
        Refused(Status::VersionMismatch),
    ));
    for (what, at, byte) in [
        ("254 fds per message", 80, 254u8),
        ("an unknown fd option", 82, 2),
        ("fds in flight without fds per message", 84, 1),
    ] {
        list.push(Attack::new(
            &format!("fd terms with {what}"),
            bent(transport, |b| b[at] = byte),
            Refused(Status::BadRequest),
        ));
    }
    for len in [0u16, MAX_PROTOCOL_ID as u16 + 1, u16::MAX] {
        list.push(Attack::new(
            &format!("protocol id length {len}"),
            bent(transport, |b| b[12..14].copy_from_slice(&len.to_le_bytes())),
            Refused(Status::BadRequest),
        ));
    }
    for cut in [1, 40, REQUEST_LEN - 1] {
        let mut a = Attack::new(
            &format!("request truncated to {cut} bytes, then shut"),
            valid[..cut].to_vec(),
            Closed,
        );
        a.shut = true;
        list.push(a);
    }
    list.push(Attack::new(
        "request truncated to 40 bytes, then stalled past the deadline",
        valid[..40].to_vec(),
        Closed,
    ));
    list
}

/// Runs one attack on a fresh socket and checks the outcome.
fn run(addr: &ServiceAddr, a: &Attack) {
    let sock = dial(addr);
    if !a.bytes.is_empty() {
        // The server may close before reading everything (64 KiB of
        // garbage): a failed write is fine, the answer is what counts.
        let _ = (&sock).write_all(&a.bytes);
    }
    if a.shut || a.bytes.is_empty() {
        sock.shutdown(std::net::Shutdown::Write).expect("shutdown");
    }
    let answer =
        read_answer(&sock).unwrap_or_else(|e| panic!("{}: reading the answer: {e}", a.name));
    match (a.expect, &answer) {
        (Expect::Closed, Answer::Closed { got: 0 }) => return,
        (Expect::Refused(want), Answer::Response { response, fds }) => {
            assert_eq!(response.status, want, "{}", a.name);
            assert_eq!(
                (response.connection_id, response.fd_count, fds.len()),
                (0, 0, 0),
                "{}: a rejection carries nothing",
                a.name
            );
        }
        (Expect::AcceptedThenClosed, Answer::Response { response, fds }) => {
            assert_eq!(response.status, Status::Ok, "{}", a.name);
            assert_eq!(fds.len(), response.fd_count as usize, "{}", a.name);
        }
        (want, got) => panic!("{}: expected {want:?}, got {got:?}", a.name),
    }
    match read_to_end(&sock) {
        Ok(_) => {}
        Err(e) => panic!("{}: the server kept the socket open: {e}", a.name),
    }
}

/// What the server grants a client asking for `wish`, and the ring sizes
/// that follow (`docs/PROTOCOL.md` §2.2).
fn absurd_size(addr: &ServiceAddr, transport: Transport, wish: u32) {
    let sock = dial(addr);
    (&sock)
        .write_all(&attack::request(transport, wish))
        .expect("request");
    let Answer::Response { response, fds } = read_answer(&sock).expect("answer") else {
        panic!("max_message {wish}: closed without an answer");
    };
    assert_eq!(response.status, Status::Ok, "max_message {wish}");
    let o = ServiceOptions::default();
    let granted = response.max_message as usize;
    assert_eq!(granted, o.negotiate(wish), "max_message {wish}: granted");
    assert!((o.min_message..=o.max_message).contains(&granted));
    if transport == Transport::Shm {
        let cap = ring_capacity_for(granted) as u64;
        assert_eq!(
            [
                response.request_capacity,
                response.response_capacity,
                response.event_capacity
            ],
            [cap; 3],
            "max_message {wish}: ring capacities"
        );
    }
    assert_eq!(fds.len(), response.fd_count as usize);
    // Never confirmed: the server drops it when we go.
}

/// Request and confirmation one byte at a time, each in a write of its
/// own: a valid handshake, however it is cut.
fn split_handshake(addr: &ServiceAddr, transport: Transport) {
    let sock = dial(addr);
    write_split(
        &sock,
        &attack::request(transport, 0),
        1,
        Duration::from_millis(1),
    )
    .expect("request, byte by byte");
    let Answer::Response { response, fds } = read_answer(&sock).expect("answer") else {
        panic!("a split request: closed without an answer");
    };
    assert_eq!(response.status, Status::Ok, "a split request");
    let mut c = RawClient::from_response(sock, transport, &response, fds)
        .unwrap_or_else(|e| panic!("a split request's channels: {e}"));
    write_split(&c.sock, &Confirm.encode(), 1, Duration::from_millis(1))
        .expect("confirmation, byte by byte");
    for i in 0..10u8 {
        c.echo(&[i; 100])
            .expect("echo on the split-handshake connection");
    }
}

ringlink_tests::transport_test! {
fn handshake_attacks_are_refused_and_others_are_served() {
    let transport = ringlink_tests::transport::current();
    let ms = DEADLINE_MS.to_string();
    let mut server = ServerProc::spawn(
        SERVER,
        &unique_addr("hs-attack"),
        &["--handshake-timeout-ms", &ms, "--log-faults"],
    );
    let addr = server.addr().clone();
    let mut good = Bystander::start(&addr);
    good.served(10);
    let list = attacks(transport);
    let mut refused = Kv::default();
    let mut abandoned = 0u64;
    for a in &list {
        run(&addr, a);
        match a.expect {
            Expect::Refused(s) => {
                let n = refused.0.entry(counter(s).to_owned()).or_insert("0".into());
                *n = (n.parse::<u64>().unwrap() + 1).to_string();
            }
            Expect::Closed | Expect::AcceptedThenClosed => abandoned += 1,
        }
        good.served(5);
        attack::newcomer(&addr);
    }
    let wishes = [0u32, 1, 12_345, 1 << 31, u32::MAX];
    for wish in wishes {
        absurd_size(&addr, transport, wish);
        abandoned += 1;
        good.served(5);
    }
    split_handshake(&addr, transport);
    good.served(5);

    // Bytes after the confirmation: over sockets, created, then closed
    // with a reason; over shared memory they are wake-ups (PROTOCOL.md
    // §4), and the connection goes on.
    let mut late = RawClient::connect(&addr, transport);
    late.echo(b"before").expect("echo");
    (&*late.sock).write_all(b"!").expect("a byte after the handshake");
    if transport == Transport::Shm {
        late.echo(b"after").expect("a wake-up byte is no violation");
    } else {
        assert!(late.server_closed(HANG), "the server kept a client that wrote after the handshake");
    }
    good.served(5);
    attack::newcomer(&addr);

    let report = good.finish();
    // Every refusal counted under its reason, every dropped handshake
    // counted as abandoned (the stalled one by the deadline).
    let deadline = std::time::Instant::now() + HANG;
    let ss = loop {
        let ss = server.sstats(false);
        if ss.u("abandoned") >= abandoned || std::time::Instant::now() > deadline {
            break ss;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    for (k, v) in &refused.0 {
        assert_eq!(ss.get(k), v, "{k}: {ss}");
    }
    assert_eq!(ss.u("abandoned"), abandoned, "{ss}");
    let faults = server.faults();
    if transport == Transport::Shm {
        assert!(faults.is_empty(), "{faults:?}");
    } else {
        assert_eq!(faults.len(), 1, "{faults:?}");
        assert_eq!(faults[0].0, Some(late.id), "{faults:?}");
        assert_eq!(faults[0].1, "client sent data on the socket after the handshake");
    }
    // Created: the bystander, a newcomer per attack and at the end, the
    // split handshake, the late writer.
    let s = server.stats();
    assert_eq!(s.u("created"), 1 + list.len() as u64 + 1 + 1 + 1, "{s}");
    eprintln!(
        "{} handshake attacks and {} absurd sizes over {}: refused {refused}, {abandoned} \
         dropped; a bystander did {} checked round trips meanwhile (median {:?}, max {:?})",
        list.len(),
        wishes.len(),
        ringlink_tests::transport::name(transport),
        report.requests,
        report.median,
        report.max
    );
    let (fin, _) = server.shutdown();
    assert_eq!((fin.u("violations"), fin.u("check_failures")), (0, 0), "{fin}");
}
}
