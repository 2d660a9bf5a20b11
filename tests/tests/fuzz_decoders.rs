//! The fuzz targets' bodies (`ringlink_tests::fuzzing`, also run by
//! `fuzz/` under cargo-fuzz), run as property tests on every CI run: a
//! fixed seed and a bounded number of cases, so that the run is short
//! and the same each time. Inputs are arbitrary bytes and, to reach past
//! the first check, valid encodings with a few bytes changed, cut or
//! added; the ring reader gets valid records followed by arbitrary
//! writes into its shared memory between reads.
//!
//! Each case must end in a typed error or a value that re-encodes to its
//! bytes (the readers: exactly what the reference reassembly / reader
//! delivers); no panic, no hang.
//!
//! `PROPTEST_CASES=N` runs N cases of each instead, `PROPTEST_RNG_SEED`
//! another seed. `tests/fuzz-regressions/<target>/` keeps inputs that
//! `fuzz_regressions_replay` runs every time: a sample of the fuzzers'
//! corpora (`seed-*`), and any input a fuzzer found crashing, once fixed.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

use ringlink_common::wire::{
    ConnectRequest, ConnectResponse, FdTerms, MsgHeader, Status, Transport, MSG_HEADER_LEN,
    PROTOCOL_VERSION,
};
use ringlink_tests::fuzzing::{self, RingCase, RingOp, StreamEnd};

/// Cases per property unless `PROPTEST_CASES` says otherwise, and the
/// fixed seed unless `PROPTEST_RNG_SEED` does.
fn config(cases: u32) -> Config {
    let mut c = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        c.rng_seed = RngSeed::Fixed(0x5EED_F022);
    }
    c
}

/// A change to a valid encoding: set a byte, cut, or append.
#[derive(Clone, Debug)]
enum Mutation {
    Set(usize, u8),
    Cut(usize),
    Append(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        6 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        1 => any::<usize>().prop_map(Mutation::Cut),
        1 => proptest::collection::vec(any::<u8>(), 1..4).prop_map(Mutation::Append),
    ]
}

fn mutate(mut bytes: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
    for m in ms {
        match m {
            Mutation::Set(i, b) if !bytes.is_empty() => {
                let n = bytes.len();
                bytes[i % n] = *b;
            }
            Mutation::Cut(i) => bytes.truncate(i % (bytes.len() + 1)),
            Mutation::Append(more) => bytes.extend_from_slice(more),
            Mutation::Set(..) => {}
        }
    }
    bytes
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    proptest::collection::vec(mutation(), 0..4)
}

fn request() -> impl Strategy<Value = Vec<u8>> {
    (any::<bool>(), any::<u32>(), "[a-z0-9-]{1,64}", mutations()).prop_map(
        |(sock, max_message, protocol, ms)| {
            let transport = if sock {
                Transport::Socket
            } else {
                Transport::Shm
            };
            let valid = ConnectRequest {
                version: PROTOCOL_VERSION,
                transport,
                max_message,
                protocol,
                fds: FdTerms::per_message((max_message % 8) as u16),
            };
            mutate(valid.encode().to_vec(), &ms)
        },
    )
}

fn response() -> impl Strategy<Value = Vec<u8>> {
    (
        0u16..9,
        any::<u64>(),
        any::<u32>(),
        0u16..12,
        0u16..300,
        any::<[u64; 3]>(),
        mutations(),
    )
        .prop_map(|(status, id, max, fds, path, caps, ms)| {
            let mut valid = ConnectResponse::reject(Status::Ok);
            valid.connection_id = id;
            valid.max_message = max;
            valid.fd_count = fds;
            valid.path_len = path.min(256);
            valid.request_capacity = caps[0];
            valid.response_capacity = caps[1];
            valid.event_capacity = caps[2];
            let mut b = valid.encode().to_vec();
            b[6..8].copy_from_slice(&status.to_le_bytes());
            mutate(b, &ms)
        })
}

/// Chunks for `fuzzing::qb_handshake`'s overlay of a libqb connection
/// response: mostly at its header (the error field, whose extremes once
/// panicked a negation) and at its transport, size and names.
fn qb_response() -> impl Strategy<Value = Vec<u8>> {
    let field = prop_oneof![
        Just(16u16),
        Just(24),
        Just(28),
        Just(40),
        Just(40 + 4096 - 8),
        Just(40 + 4096),
        Just(40 + 2 * 4096),
        any::<u16>(),
    ];
    let value = prop_oneof![
        Just(i32::MIN.to_le_bytes().to_vec()),
        Just((-4096i32).to_le_bytes().to_vec()),
        Just(4096i32.to_le_bytes().to_vec()),
        Just(vec![b'a'; 8]),
        Just(vec![0u8; 8]),
        proptest::collection::vec(any::<u8>(), 1..9),
    ];
    proptest::collection::vec((field, value), 1..6).prop_map(|chunks| {
        let mut b = Vec::new();
        for (at, v) in chunks {
            b.extend_from_slice(&at.to_le_bytes());
            let mut v = v;
            v.resize(8, 0);
            b.extend_from_slice(&v);
        }
        b
    })
}

fn header_record() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<i32>(),
        any::<i32>(),
        any::<u64>(),
        0usize..64,
        mutations(),
    )
        .prop_map(|(id, error, seq, len, ms)| {
            let mut rec = vec![0x5au8; MSG_HEADER_LEN + len];
            MsgHeader {
                id,
                size: len as u32,
                error,
                flags: 0,
                seq,
            }
            .encode_into(&mut rec);
            mutate(rec, &ms)
        })
}

proptest! {
    #![proptest_config(config(10_000))]

    #[test]
    fn handshake_decoders_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
        fuzzing::handshake(&bytes);
    }

    #[test]
    fn handshake_decoders_on_damaged_requests(bytes in request()) {
        fuzzing::handshake(&bytes);
    }

    #[test]
    fn handshake_decoders_on_damaged_responses(bytes in response()) {
        fuzzing::handshake(&bytes);
    }

    #[test]
    fn qb_handshake_decoders_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
        fuzzing::qb_handshake(&bytes);
    }

    #[test]
    fn qb_handshake_decoders_on_damaged_responses(bytes in qb_response()) {
        fuzzing::qb_handshake(&bytes);
    }

    #[test]
    fn handshake_machines_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = fuzzing::handshake_machines(&bytes);
    }

    #[test]
    fn handshake_machines_on_damaged_exchanges(flags in any::<[u8; 2]>(), req in request(), resp in response(), tail in proptest::collection::vec(any::<u8>(), 0..40)) {
        // What the server reads (a request, then the confirmation) and
        // what the client reads (an answer, then what follows it), each
        // damaged, in one stream: each machine takes what it awaits.
        let mut server_side = flags.to_vec();
        server_side.extend_from_slice(&req);
        server_side.extend_from_slice(&ringlink_common::handshake::ClientHandshake::confirm());
        let _ = fuzzing::handshake_machines(&server_side);
        let mut client_side = flags.to_vec();
        client_side.extend_from_slice(&resp);
        client_side.extend_from_slice(&tail);
        let _ = fuzzing::handshake_machines(&client_side);
    }

    #[test]
    fn message_header_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = fuzzing::msg_header(&bytes);
    }

    #[test]
    fn message_header_on_damaged_records(rec in header_record()) {
        let _ = fuzzing::msg_header(&rec);
    }
}

// --- the socket transport's reassembly ---------------------------------------

/// Valid messages of up to `max + 8` bytes, cut into datagrams at random
/// points, then damaged: a byte changed, a datagram dropped, duplicated,
/// emptied or inserted.
fn datagrams() -> impl Strategy<Value = (usize, Vec<Vec<u8>>)> {
    let max = prop_oneof![Just(0usize), Just(1), Just(100), Just(4096)];
    max.prop_flat_map(|max| {
        let msg = (
            any::<i32>(),
            any::<u64>(),
            0..=max + 8,
            any::<u8>(),
            proptest::collection::vec(1usize..600, 0..6),
        );
        (
            Just(max),
            proptest::collection::vec(msg, 0..6),
            proptest::collection::vec((0u8..5, any::<usize>(), any::<u8>()), 0..3),
        )
    })
    .prop_map(|(max, msgs, damage)| {
        let mut dgrams: Vec<Vec<u8>> = Vec::new();
        for (id, seq, len, fill, cuts) in msgs {
            let mut m = vec![fill; MSG_HEADER_LEN + len];
            MsgHeader {
                id,
                size: len as u32,
                error: 0,
                flags: 0,
                seq,
            }
            .encode_into(&mut m);
            // The first datagram holds at least the header.
            let mut at = 0;
            let mut first = true;
            for c in cuts {
                let end = (at + c).max(if first { MSG_HEADER_LEN } else { 0 });
                if end >= m.len() {
                    break;
                }
                dgrams.push(m[at..end].to_vec());
                at = end;
                first = false;
            }
            dgrams.push(m[at..].to_vec());
        }
        for (what, i, b) in damage {
            if dgrams.is_empty() {
                dgrams.push(vec![b; i % 40]);
                continue;
            }
            let k = i % dgrams.len();
            match what {
                0 if !dgrams[k].is_empty() => {
                    let n = dgrams[k].len();
                    dgrams[k][(i / 7) % n] = b;
                }
                1 => {
                    dgrams.remove(k);
                }
                2 => {
                    let d = dgrams[k].clone();
                    dgrams.insert(k, d);
                }
                3 => dgrams[k].clear(),
                _ => dgrams.insert(k, vec![b; (i / 3) % 48]),
            }
        }
        (max, dgrams)
    })
}

proptest! {
    #![proptest_config(config(4000))]

    #[test]
    fn socket_reassembly_matches_the_reference((max, dgrams) in datagrams()) {
        fuzzing::sock_rx(max, &dgrams);
    }

    #[test]
    fn socket_reassembly_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        fuzzing::sock_rx_bytes(&bytes);
    }
}

#[test]
fn socket_reassembly_delivers_whole_messages_and_drops_a_torn_one() {
    let mut m = vec![7u8; MSG_HEADER_LEN + 10];
    MsgHeader {
        id: 1,
        size: 10,
        error: 0,
        flags: 0,
        seq: 1,
    }
    .encode_into(&mut m);
    let (got, end) = fuzzing::sock_rx(100, &[m[..30].to_vec(), m[30..].to_vec(), m[..30].to_vec()]);
    assert_eq!(got.len(), 1, "the whole message");
    assert_eq!(got[0].1, vec![7u8; 10]);
    assert_eq!(
        end,
        StreamEnd::Closed,
        "the torn second one is dropped at the end"
    );
}

// --- the ring reader ----------------------------------------------------------

fn ring_op() -> impl Strategy<Value = RingOp> {
    prop_oneof![
        6 => any::<bool>().prop_map(|release| RingOp::Peek { release }),
        2 => prop_oneof![0u16..64, any::<u16>()].prop_map(|buf| RingOp::Pop { buf }),
        1 => Just(RingOp::PeekTimeout),
        1 => prop_oneof![any::<u64>(), (0u64..1 << 14).prop_map(|v| v * 8)].prop_map(RingOp::SetTail),
        3 => (-8i16..64).prop_map(RingOp::MoveTail),
        2 => (0u16..512, any::<u64>()).prop_map(|(index, value)| RingOp::SetWord { index, value }),
        3 => (0u16..512, prop_oneof![0u32..300, 0u32..4100, any::<u32>()], any::<bool>())
            .prop_map(|(index, len, pad)| RingOp::SetRecord { index, len, pad }),
        1 => prop_oneof![Just(0u32), Just(1), Just(2), any::<u32>()].prop_map(RingOp::SetClosed),
        1 => any::<u64>().prop_map(RingOp::SetHead),
    ]
}

fn ring_case() -> impl Strategy<Value = RingCase> {
    (
        6u8..=12,
        prop_oneof![
            Just(0u64),
            (0u64..1 << 20).prop_map(|v| v * 8),
            (0u64..4096).prop_map(|v| u64::MAX - v * 8 - 7),
            any::<u64>(),
        ],
        proptest::collection::vec(prop_oneof![0u16..40, any::<u16>()], 0..24),
        proptest::collection::vec(ring_op(), 0..3),
        proptest::collection::vec(ring_op(), 0..64),
    )
        .prop_map(
            |(capacity_log2, start, records, before_claim, ops)| RingCase {
                capacity_log2,
                start,
                records,
                before_claim,
                ops,
            },
        )
}

proptest! {
    #![proptest_config(config(4000))]

    #[test]
    fn ring_reader_matches_the_reference(case in ring_case()) {
        fuzzing::ring_consumer(&case);
    }

    #[test]
    fn ring_reader_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        fuzzing::ring_consumer(&RingCase::from_bytes(&bytes));
    }
}

#[test]
fn ring_reader_reference_agrees_on_a_clean_stream() {
    // The control: valid records only, read to the end, then closed.
    let case = RingCase {
        capacity_log2: 8,
        start: u64::MAX - 63,
        records: vec![0, 1, 7, 8, 9, 40, 100, 3],
        before_claim: vec![],
        ops: [RingOp::Peek { release: true }; 12]
            .into_iter()
            .chain([RingOp::SetClosed(1), RingOp::Peek { release: true }])
            .collect(),
    };
    let out = fuzzing::ring_consumer(&case);
    assert!(
        out.pushed >= 3 && out.delivered == out.pushed && out.corrupt == 0 && out.closed == 1,
        "{out:?}"
    );
}

/// Replays every input kept under `tests/fuzz-regressions/<target>/`
/// through the target's body (a crash a fuzzer found, once fixed, stays
/// fixed).
#[test]
fn fuzz_regressions_replay() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz-regressions");
    let mut replayed = 0;
    for (target, body) in [
        ("handshake", (|b: &[u8]| fuzzing::handshake(b)) as fn(&[u8])),
        ("qb_handshake", |b| fuzzing::qb_handshake(b)),
        ("handshake_machines", |b| {
            let _ = fuzzing::handshake_machines(b);
        }),
        ("msg_header", |b| {
            let _ = fuzzing::msg_header(b);
        }),
        ("sock_rx", |b| {
            fuzzing::sock_rx_bytes(b);
        }),
        ("ring_consumer", |b| {
            fuzzing::ring_consumer(&RingCase::from_bytes(b));
        }),
    ] {
        let dir = std::fs::read_dir(root.join(target))
            .unwrap_or_else(|e| panic!("the kept inputs of {target}: {e}"));
        for entry in dir {
            let path = entry.expect("dir entry").path();
            let bytes = std::fs::read(&path).expect("read a regression input");
            body(&bytes);
            replayed += 1;
        }
    }
    eprintln!("replayed {replayed} kept fuzz inputs");
    // Each target keeps a sample of its corpus: none read means the
    // directory moved and this test checks nothing.
    assert!(replayed >= 4, "only {replayed} kept inputs under {root:?}");
}

/// The machines' fuzz body reaches the end of an honest exchange, both
/// sides, however the bytes are cut: it checks more than refusals.
#[test]
fn handshake_machines_complete_an_honest_exchange() {
    let request = ConnectRequest {
        version: PROTOCOL_VERSION,
        transport: Transport::Socket,
        max_message: 4096,
        protocol: "fuzz".into(),
        fds: FdTerms::per_message(2),
    };
    let mut answer = ConnectResponse::reject(Status::Ok);
    answer.max_message = 4096;
    answer.fd_count = 2;
    for cut in [0u8, 1, 7, 60, 255] {
        // Bit 0: socket transport (a level byte follows the answer);
        // bit 1: the server accepts.
        let mut server_side = vec![3, cut];
        server_side.extend_from_slice(&request.encode());
        server_side.extend_from_slice(&ringlink_common::handshake::ClientHandshake::confirm());
        assert!(fuzzing::handshake_machines(&server_side).0, "cut {cut}");
        let mut client_side = vec![3, cut];
        client_side.extend_from_slice(&answer.encode());
        client_side.extend_from_slice(&FdTerms::per_message(3).encode());
        client_side.push(0);
        assert!(fuzzing::handshake_machines(&client_side).1, "cut {cut}");
    }
}
