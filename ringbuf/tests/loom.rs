//! Exhaustive interleaving checks (loom) of the ring's publication and of
//! its sleep/wake handshake: no record lost or reordered, no lost
//! wake-up (a lost wake-up shows as a deadlock, which loom reports), and
//! closing always wakes a sleeper.
//!
//! Under loom the record words are loom atomics (the payload bytes are
//! not modelled): the consumer's Acquire load of the word at its
//! position, the producer's Release store of it, and the clearing of the
//! next record's word before that store are what these models check. A
//! consumer that could see an old record word where the next record goes
//! (the clearing missing, or ordered after the publication) delivers a
//! record twice or out of order, and the models fail.
//!
//! Run with:
//! `RUSTFLAGS="--cfg loom" cargo test -p ringlink-ringbuf --test loom --release`
#![cfg(loom)]

use std::time::Duration;

use loom::thread;
use ringlink_ringbuf::{Consumer, PopError, Producer, PushError, Ring};

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    b.check(f);
}

/// A 64-byte ring's two roles, neither spinning: a side with nothing to
/// do sleeps at once, so every model goes through the handshake.
fn no_spin_pair() -> (Ring, Producer, Consumer) {
    let ring = Ring::heap(64).unwrap();
    let mut tx = ring.producer().unwrap();
    let mut rx = ring.consumer().unwrap();
    tx.set_spin(Duration::ZERO);
    rx.set_spin(Duration::ZERO);
    (ring, tx, rx)
}

/// Three max-size records through a ring that holds two: the producer must
/// sleep for space and the consumer for data, in every interleaving.
#[test]
fn publish_consume_with_both_sides_sleeping() {
    model(|| {
        let (_ring, mut tx, mut rx) = no_spin_pair();
        let t = thread::spawn(move || {
            for i in 0..3u8 {
                tx.push(&[i; 24]).unwrap();
            }
        });
        for i in 0..3u8 {
            let mut b = [0u8; 24];
            assert_eq!(rx.pop_into(&mut b), Ok(24));
            assert_eq!(b, [i; 24]);
        }
        t.join().unwrap();
        assert_eq!(rx.pop_into(&mut [0u8; 24]), Err(PopError::Closed));
    });
}

/// A record published and the producer closed while the consumer decides
/// to sleep: it gets the record, then `Closed`, never a hang.
#[test]
fn close_wakes_a_sleeping_consumer() {
    model(|| {
        let ring = Ring::heap(64).unwrap();
        let mut tx = ring.producer().unwrap();
        let mut rx = ring.consumer().unwrap();
        rx.set_spin(Duration::ZERO);
        let t = thread::spawn(move || {
            tx.push(b"x").unwrap();
            drop(tx);
        });
        let mut b = [0u8; 8];
        assert_eq!(rx.pop_into(&mut b), Ok(1));
        assert_eq!(rx.pop_into(&mut b), Err(PopError::Closed));
        t.join().unwrap();
    });
}

/// A producer asleep on a full ring is woken by the consumer closing.
#[test]
fn close_wakes_a_sleeping_producer() {
    model(|| {
        let ring = Ring::heap(64).unwrap();
        let mut tx = ring.producer().unwrap();
        let rx = ring.consumer().unwrap();
        tx.set_spin(Duration::ZERO);
        // One 32-byte record and its next word: no room for another.
        tx.push(&[0; 24]).unwrap();
        let t = thread::spawn(move || drop(rx));
        assert_eq!(tx.push(&[0; 24]), Err(PushError::Closed));
        t.join().unwrap();
    });
}

/// Records of changing sizes over more than one lap, with padding: a
/// record's next word lands where an earlier lap had another record's
/// word (a valid one, which must never be taken for a new record), and
/// the record after the padding is published at offset 0 before the
/// padding. The consumer reads concurrently, each side sleeping when it
/// must: it gets exactly the records pushed, in order, then `Closed`.
#[test]
fn laps_of_changing_sizes_never_show_an_old_record_word() {
    // 16-byte records at 0, 16, 32; then a 32-byte one that does not fit
    // before the end (padding 16, record at 0, its next word at 32, where
    // the third one's word was); then an 8-byte one at 32.
    laps(&[8, 8, 8, 24, 0]);
}

/// The same without padding: the second lap's first record (at 0) has
/// its next word where the first lap's second record's word was, and
/// only that record's own word publishes the clearing.
#[test]
fn a_lap_without_padding_never_shows_an_old_record_word() {
    // [0, 16), [16, 32), [32, 56), [56, 64); then [0, 16) again, whose
    // next word, at 16, held a record word; then [16, 24).
    laps(&[8, 8, 16, 0, 8, 0]);
}

/// Pushes records of `lens` (at most 24 bytes each) through a 64-byte
/// ring from a second thread, both sides sleeping when they must, and
/// checks that the consumer gets exactly them, in order, then `Closed`.
fn laps(lens: &'static [usize]) {
    model(move || {
        let (_ring, mut tx, mut rx) = no_spin_pair();
        let t = thread::spawn(move || {
            for (i, &len) in lens.iter().enumerate() {
                tx.push(&vec![i as u8; len]).unwrap();
            }
        });
        for (i, &len) in lens.iter().enumerate() {
            let mut b = [0u8; 24];
            assert_eq!(rx.pop_into(&mut b), Ok(len), "record {i}");
            assert!(b[..len].iter().all(|&x| x == i as u8), "record {i}");
        }
        t.join().unwrap();
        assert_eq!(rx.pop_into(&mut [0u8; 24]), Err(PopError::Closed));
    });
}

/// A consumer that publishes its releases in batches (here half the
/// ring) still wakes a producer waiting for room: the releases it keeps
/// back are published when it sees the producer's flag, when its batch
/// is full, and at the latest when it finds the ring empty (before it
/// sleeps itself).
#[test]
fn batched_releases_never_strand_a_waiting_producer() {
    model(|| {
        let (_ring, mut tx, mut rx) = no_spin_pair();
        rx.set_release_batch(32);
        // [0, 32) fills a batch; [32, 40), [40, 48), [48, 56) leave 24
        // bytes kept back once read; the last record needs padding 8, 32
        // bytes at 0 and the word after: room only with those 24 bytes.
        const LENS: [usize; 5] = [24, 0, 0, 0, 24];
        let t = thread::spawn(move || {
            for (i, len) in LENS.into_iter().enumerate() {
                tx.push(&vec![i as u8; len]).unwrap();
            }
        });
        for (i, len) in LENS.into_iter().enumerate() {
            let mut b = [0u8; 24];
            assert_eq!(rx.pop_into(&mut b), Ok(len), "record {i}");
            assert!(b[..len].iter().all(|&x| x == i as u8), "record {i}");
        }
        t.join().unwrap();
        assert_eq!(rx.pop_into(&mut [0u8; 24]), Err(PopError::Closed));
    });
}

/// A batch (`begin_batch`/`end_batch`) of two records, then a third that
/// needs room the consumer must make: the batch's records check the
/// consumer's flag once, at its end, and the push waiting for room pays
/// that check first. No interleaving loses a wake-up (a deadlock) or a
/// record.
#[test]
fn a_batch_wakes_the_consumer_once_and_never_strands_it() {
    model(|| {
        let (_ring, mut tx, mut rx) = no_spin_pair();
        let t = thread::spawn(move || {
            tx.begin_batch();
            tx.push(&[0; 24]).unwrap();
            tx.push(&[1; 8]).unwrap();
            // 32 + 16 bytes in: the third needs 16 of padding, 32 at 0
            // and the word after, so both records read and released.
            tx.push(&[2; 24]).unwrap();
            tx.end_batch();
            // Kept open: its close would wake the consumer and hide an
            // `end_batch` that did not.
            tx
        });
        for (i, len) in [24usize, 8, 24].into_iter().enumerate() {
            let mut b = [0u8; 24];
            assert_eq!(rx.pop_into(&mut b), Ok(len), "record {i}");
            assert!(b[..len].iter().all(|&x| x == i as u8), "record {i}");
        }
        let tx = t.join().unwrap();
        drop(tx);
        assert_eq!(rx.pop_into(&mut [0u8; 24]), Err(PopError::Closed));
    });
}

/// The biased mutex (`bias`), in its symmetric form (SeqCst fences on
/// both sides where the real one uses a compiler fence and a
/// membarrier): the main thread is granted the bias, then takes the
/// lock on its fast path twice while another thread revokes the bias and
/// takes it. loom's cell reports any two guards that overlap, and the
/// count checks that no update is lost.
#[test]
fn biased_mutex_excludes_while_the_bias_is_revoked() {
    use loom::sync::Arc;
    use ringlink_ringbuf::bias::BiasedMutex;
    model(|| {
        let m = Arc::new(BiasedMutex::with_grant_after(0u32, 1, 1));
        *m.lock() += 1;
        assert!(m.is_biased_to_me());
        let m2 = Arc::clone(&m);
        let t = thread::spawn(move || {
            *m2.lock() += 1;
        });
        *m.lock() += 1;
        *m.lock() += 1;
        t.join().unwrap();
        assert_eq!(*m.lock(), 4);
    });
}

/// Two threads that each earn the bias take it from each other.
#[test]
fn biased_mutex_passes_between_two_threads() {
    use loom::sync::Arc;
    use ringlink_ringbuf::bias::BiasedMutex;
    model(|| {
        let m = Arc::new(BiasedMutex::with_grant_after(0u32, 1, 1));
        let m2 = Arc::clone(&m);
        let t = thread::spawn(move || {
            *m2.lock() += 1;
            *m2.lock() += 1;
        });
        *m.lock() += 1;
        *m.lock() += 1;
        t.join().unwrap();
        assert_eq!(*m.lock(), 4);
    });
}
