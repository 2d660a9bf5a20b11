//! The record stream between two processes: a `ring_peer` producer and a
//! consumer in the test, through a sealed memfd ring with eventfd
//! wake-ups, and through a named file with futex wake-ups. Every record
//! is checked, byte for byte, for loss, duplication, reordering and
//! tearing, and the end of the stream must be `PopError::Closed`.
//!
//! The heavy tests take a process-wide lock so that `cargo test` (one
//! process, tests on threads) does not run two multi-million-record
//! streams at once on a 2-core machine; under nextest each test is its
//! own process anyway. `RINGLINK_STREAM_RECORDS` overrides the record
//! counts (e.g. for a quick local run); run times go to stderr.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use ringlink_ringbuf::Ring;
use ringlink_tests::peer::{describe, Peer};
use ringlink_tests::stream::{self, Api, Wait};
use ringlink_tests::tmp::TempDir;

const PEER: &str = env!("CARGO_BIN_EXE_ring_peer");

/// Past this, a stream is declared hung (nextest kills a test at 300 s).
const STREAM_DEADLINE: Duration = Duration::from_secs(240);

static HEAVY: Mutex<()> = Mutex::new(());

fn records(default: u64) -> u64 {
    std::env::var("RINGLINK_STREAM_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// One producer-in-a-helper stream.
struct Case {
    name: &'static str,
    capacity: usize,
    count: u64,
    seed: u64,
    producer_api: Api,
    producer_spin: Duration,
    consumer_api: Api,
    /// `None`: the default.
    consumer_spin: Option<Duration>,
}

/// Spawns a producer helper for `count` records of stream `seed` on a new
/// ring of `capacity` bytes, consumes and checks them here, and checks
/// the helper's exit.
fn memfd_stream(case: Case) {
    let Case {
        name,
        capacity,
        count,
        seed,
        producer_api,
        producer_spin,
        consumer_api,
        consumer_spin,
    } = case;
    let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let ring = Ring::create(capacity).expect("Ring::create");
    let mut rx = ring.consumer().expect("claim consumer");
    if let Some(spin) = consumer_spin {
        rx.set_spin(spin);
    }
    let mut peer = Peer::spawn(
        PEER,
        &[
            "produce",
            &count.to_string(),
            &seed.to_string(),
            producer_api.as_str(),
            &producer_spin.as_micros().to_string(),
        ],
    );
    peer.send_ring(&ring).expect("send ring");
    let start = Instant::now();
    let switches = stream::voluntary_switches();
    let seen = stream::consume_from_peer(
        &mut peer,
        &mut rx,
        count,
        seed,
        consumer_api,
        STREAM_DEADLINE,
    );
    let elapsed = start.elapsed();
    let switches = stream::voluntary_switches() - switches;
    let out = peer.wait(Duration::from_secs(60));
    out.assert_success();
    assert_eq!(out.line("produced"), Some(&*count.to_string()), "{out}");
    eprintln!(
        "{name}: {} records, {} payload bytes, capacity {capacity}, in {elapsed:.2?} \
         ({:.0} ns/record); consumer slept {switches} times, producer {} times",
        seen.records,
        seen.bytes,
        elapsed.as_nanos() as f64 / seen.records.max(1) as f64,
        out.line("voluntary-switches").unwrap_or("?"),
    );
}

#[test]
fn ten_million_records_zero_copy() {
    memfd_stream(Case {
        name: "zero-copy",
        capacity: 64 * 1024,
        count: records(10_000_000),
        seed: 0x5EED_0001,
        producer_api: Api::ZeroCopy,
        producer_spin: ringlink_ringbuf::DEFAULT_SPIN,
        consumer_api: Api::ZeroCopy,
        consumer_spin: None,
    });
}

#[test]
fn ten_million_records_copying() {
    memfd_stream(Case {
        name: "copying",
        capacity: 64 * 1024,
        count: records(10_000_000),
        seed: 0x5EED_0002,
        producer_api: Api::Copy,
        producer_spin: ringlink_ringbuf::DEFAULT_SPIN,
        consumer_api: Api::Copy,
        consumer_spin: None,
    });
}

/// A 4 KiB ring and no spinning on either side: both block on their
/// eventfd whenever the ring is empty or full, which is most of the time.
#[test]
fn ten_million_records_small_ring_no_spin() {
    memfd_stream(Case {
        name: "small-ring-no-spin",
        capacity: 4096,
        count: records(10_000_000),
        seed: 0x5EED_0003,
        producer_api: Api::Mixed,
        producer_spin: Duration::ZERO,
        consumer_api: Api::Mixed,
        consumer_spin: Some(Duration::ZERO),
    });
}

/// A ring in a named file (futex wake-ups), opened by path in the helper,
/// which consumes; the test produces, with the timeout calls.
#[test]
fn named_file_ring_across_processes() {
    let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("stream");
    let ring = Ring::create_file(dir.path(), "ring", 16 * 1024, 0o600).expect("create_file");
    let path = dir.path().join("ring");
    let count = records(1_000_000);
    let seed = 0x5EED_0004;
    let mut tx = ring.producer().expect("claim producer");
    tx.set_spin(Duration::ZERO);
    let mut peer = Peer::spawn(
        PEER,
        &[
            "consume-path",
            path.to_str().expect("utf-8 temp path"),
            &count.to_string(),
            &seed.to_string(),
            Api::Mixed.as_str(),
            "0",
        ],
    );
    let start = Instant::now();
    let deadline = start + STREAM_DEADLINE;
    let r = stream::produce(
        &mut tx,
        count,
        seed,
        Api::Mixed,
        Wait::Poll(&mut || {
            if Instant::now() > deadline {
                return Err(format!("no room after {STREAM_DEADLINE:?}"));
            }
            match peer.exited() {
                Some(st) => Err(format!(
                    "the consumer exited ({}) before the end of the stream",
                    describe(st)
                )),
                None => Ok(()),
            }
        }),
    );
    if let Err(e) = r {
        peer.fail(&e);
    }
    drop(tx); // closes: the helper sees Closed after the last record
    let out = peer.wait(STREAM_DEADLINE);
    out.assert_success();
    assert_eq!(out.line("consumed"), Some(&*count.to_string()), "{out}");
    eprintln!(
        "named-file futex: {count} records in {:.2?}",
        start.elapsed()
    );
    drop(ring);
    assert!(
        !path.exists(),
        "the ring file outlived its creator's handle"
    );
}
